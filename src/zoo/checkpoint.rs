//! A weights file (safetensors or a PyTorch zip checkpoint) opened for building a network,
//! with the key/shape audit.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};

use super::pth::PthFile;
use crate::ops::BatchNormParams;
use crate::{Error, Result};

/// The tensors an architecture needs: checkpoint key -> shape, in the architecture's order.
pub type ExpectedTensors = Vec<(String, Vec<usize>)>;

/// How a weights file stores its tensors, told from its first bytes (not its extension).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WeightsFormat {
    /// A safetensors file (8-byte header length, JSON header, data).
    Safetensors,
    /// A PyTorch `torch.save` zip archive (`.pth`, `.pt`, `.bin`), read by candle.
    PytorchZip,
}

/// The format of a weights file; a legacy (pre-1.6, not zipped) PyTorch pickle is refused
/// with a message saying how to re-save it. Errors name the file.
pub fn weights_format(path: &Path) -> Result<WeightsFormat> {
    use std::io::Read;
    let mut magic = [0u8; 4];
    let mut file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    let n = file.read(&mut magic).map_err(|e| Error::io(path, e))?;
    match &magic[..n] {
        [b'P', b'K', 3, 4] => Ok(WeightsFormat::PytorchZip),
        // Pickle protocol 2, then the LONG1 magic number that legacy `torch.save` writes first
        // (a safetensors header length with these bytes would be ~176 MB).
        [0x80, 0x02, 0x8a, 0x0a] => Err(Error::Model(format!(
            "{}: a legacy (not zipped) PyTorch pickle; re-save it with a current PyTorch \
             (`torch.save(torch.load(f), f2)`) or convert it to safetensors",
            path.display()
        ))),
        _ => Ok(WeightsFormat::Safetensors),
    }
}

/// Whether a state-dict key is bookkeeping rather than a weight of the network convlens
/// builds: BatchNorm's `num_batches_tracked` counter, and Inception V3's auxiliary classifier
/// (`AuxLogits.*`, used only in training); dropped at load.
pub fn is_bookkeeping(key: &str) -> bool {
    key.ends_with("num_batches_tracked") || key.starts_with("AuxLogits.")
}

/// The key without the `module.` prefix that `torch.nn.DataParallel` adds, when every key has
/// it (`strip` true).
fn unwrapped(key: String, strip: bool) -> String {
    match key.strip_prefix("module.") {
        Some(rest) if strip => rest.to_string(),
        _ => key,
    }
}

/// Whether every key carries DataParallel's `module.` prefix.
fn all_wrapped<'a>(mut keys: impl Iterator<Item = &'a str>) -> bool {
    let mut any = false;
    let all = keys.all(|k| {
        any = true;
        k.starts_with("module.")
    });
    any && all
}

/// The weight tensors' names and shapes of a weights file in either format, without reading
/// tensor data (bookkeeping keys dropped, a DataParallel `module.` prefix removed).
pub fn read_shapes(path: &Path) -> Result<Vec<(String, Vec<usize>)>> {
    let shapes = match weights_format(path)? {
        WeightsFormat::PytorchZip => PthFile::open(path)?.shapes(),
        WeightsFormat::Safetensors => super::detect::read_safetensors_shapes(path)?
            .into_iter()
            .collect(),
    };
    let strip = all_wrapped(shapes.iter().map(|(k, _)| k.as_str()));
    Ok(shapes
        .into_iter()
        .filter(|(k, _)| !is_bookkeeping(k))
        .map(|(k, s)| (unwrapped(k, strip), s))
        .collect())
}

/// The tensors of a weights file, converted to f32 (from f16, bf16 or f64) and moved to the
/// device.
pub struct Checkpoint {
    path: PathBuf,
    tensors: HashMap<String, Tensor>,
}

impl Checkpoint {
    /// Reads every tensor of a safetensors file or a PyTorch zip checkpoint (its state dict at
    /// the top level or under `state_dict` / `model` ..., see [`super::pth`]); BatchNorm's
    /// `num_batches_tracked` is dropped and a DataParallel `module.` prefix removed. A missing
    /// or unreadable file, or a tensor holding NaN or an infinity, is an error naming it (the
    /// tensor too). Check the header first ([`audit_file`]) where the expected tensors are
    /// known: this reads the whole file.
    pub fn open(path: &Path, device: &Device) -> Result<Self> {
        if !path.is_file() {
            return Err(Error::Model(format!(
                "{}: weights file not found",
                path.display()
            )));
        }
        let raw: Vec<(String, Tensor)> = match weights_format(path)? {
            WeightsFormat::PytorchZip => PthFile::open(path)?.load(path)?,
            WeightsFormat::Safetensors => candle_core::safetensors::load(path, &Device::Cpu)
                .map_err(|e| {
                    Error::Model(format!(
                        "{}: not a readable safetensors weights file ({e})",
                        path.display()
                    ))
                })?
                .into_iter()
                .collect(),
        };
        let strip = all_wrapped(raw.iter().map(|(k, _)| k.as_str()));
        let tensors = raw
            .into_iter()
            .filter(|(k, _)| !is_bookkeeping(k))
            .map(|(k, t)| {
                let t = t.to_dtype(DType::F32)?;
                ensure_finite(path, &k, &t)?;
                Ok((unwrapped(k, strip), t.to_device(device)?))
            })
            .collect::<Result<HashMap<_, _>>>()?;
        Ok(Checkpoint {
            path: path.to_path_buf(),
            tensors,
        })
    }

    /// A checkpoint from tensors already in memory (tests, weights built in code); `path` only
    /// names it in error messages. Tensors are converted to f32 and moved to `device`.
    pub fn from_tensors(
        path: impl Into<PathBuf>,
        tensors: HashMap<String, Tensor>,
        device: &Device,
    ) -> Result<Self> {
        let tensors = tensors
            .into_iter()
            .map(|(k, t)| Ok((k, t.to_dtype(DType::F32)?.to_device(device)?)))
            .collect::<Result<HashMap<_, _>>>()?;
        Ok(Checkpoint {
            path: path.into(),
            tensors,
        })
    }

    /// Every tensor's key and shape, sorted by key (what architecture detection reads).
    pub fn shapes(&self) -> BTreeMap<String, Vec<usize>> {
        self.tensors
            .iter()
            .map(|(k, t)| (k.clone(), t.dims().to_vec()))
            .collect()
    }

    /// Whether the checkpoint holds a tensor named `name`.
    pub fn contains(&self, name: &str) -> bool {
        self.tensors.contains_key(name)
    }

    /// The file the tensors came from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The checkpoint's keys, sorted.
    pub fn keys(&self) -> Vec<&str> {
        let mut keys: Vec<&str> = self.tensors.keys().map(String::as_str).collect();
        keys.sort_unstable();
        keys
    }

    /// Checks that the file holds exactly the `expected` tensors with the expected shapes.
    /// The first problem becomes an [`Error::Weights`] naming the tensor, both shapes and the
    /// file; the count of further problems rides along.
    pub fn audit(&self, architecture: &str, expected: &ExpectedTensors) -> Result<()> {
        audit_shapes(&self.path, architecture, &self.shapes(), expected)
    }

    /// A tensor by key (call after [`Checkpoint::audit`]; a missing key is still an error).
    pub fn get(&self, name: &str) -> Result<Tensor> {
        self.tensors
            .get(name)
            .cloned()
            .ok_or_else(|| Error::Weights {
                path: self.path.clone(),
                tensor: name.to_string(),
                expected: "a tensor".into(),
                found: "no such tensor".into(),
                more: 0,
            })
    }

    /// The four tensors of the BatchNorm layer at `prefix` (`prefix.weight`, `.bias`,
    /// `.running_mean`, `.running_var`).
    pub fn batchnorm(&self, prefix: &str, eps: f64) -> Result<BatchNormParams> {
        Ok(BatchNormParams {
            weight: self.get(&format!("{prefix}.weight"))?,
            bias: self.get(&format!("{prefix}.bias"))?,
            running_mean: self.get(&format!("{prefix}.running_mean"))?,
            running_var: self.get(&format!("{prefix}.running_var"))?,
            eps,
        })
    }
}

/// Checks tensor names and shapes (`shapes`, from a file or a header) against `expected`:
/// exactly those tensors, with those shapes. The first problem becomes an [`Error::Weights`]
/// naming the tensor, both shapes and `path`; the count of further problems rides along.
pub fn audit_shapes(
    path: &Path,
    architecture: &str,
    shapes: &BTreeMap<String, Vec<usize>>,
    expected: &ExpectedTensors,
) -> Result<()> {
    let mut problems: Vec<(String, String, String)> = Vec::new();
    for (name, shape) in expected {
        match shapes.get(name) {
            None => problems.push((name.clone(), fmt_shape(shape), "no such tensor".into())),
            Some(found) if found != shape => {
                problems.push((name.clone(), fmt_shape(shape), fmt_shape(found)))
            }
            Some(_) => {}
        }
    }
    let known: HashSet<&str> = expected.iter().map(|(n, _)| n.as_str()).collect();
    for (key, found) in shapes {
        if !known.contains(key.as_str()) {
            problems.push((
                key.clone(),
                format!("no such tensor in {architecture}"),
                fmt_shape(found),
            ));
        }
    }
    match problems.first() {
        None => Ok(()),
        Some((tensor, expected, found)) => Err(Error::Weights {
            path: path.to_path_buf(),
            tensor: tensor.clone(),
            expected: expected.clone(),
            found: found.clone(),
            more: problems.len() - 1,
        }),
    }
}

/// Bytes a weights file may take beyond its tensors' data: the safetensors header (whose
/// reader caps it at 100 MiB) and its length field.
const HEADER_ALLOWANCE: u64 = (100 << 20) + 8;

/// Checks a weights file against the tensors it must hold before any tensor data is read:
/// names and shapes from the header ([`read_shapes`], see [`audit_shapes`]), and, for a
/// safetensors file, a size no larger than those tensors take in the widest dtype (f64) plus
/// a header. A crafted file that claims huge tensors, or is padded with gigabytes, is refused
/// without allocating for it.
pub fn audit_file(path: &Path, architecture: &str, expected: &ExpectedTensors) -> Result<()> {
    let shapes: BTreeMap<String, Vec<usize>> = read_shapes(path)?.into_iter().collect();
    audit_shapes(path, architecture, &shapes, expected)?;
    if weights_format(path)? == WeightsFormat::Safetensors {
        let elements: u64 = expected
            .iter()
            .map(|(_, s)| s.iter().product::<usize>() as u64)
            .sum();
        let most = elements * 8 + HEADER_ALLOWANCE;
        let size = std::fs::metadata(path)
            .map_err(|e| Error::io(path, e))?
            .len();
        if size > most {
            return Err(Error::Model(format!(
                "{}: {size} bytes is implausible for {architecture}: its {elements} weights \
                 take at most {most} bytes",
                path.display()
            )));
        }
    }
    Ok(())
}

/// An error naming `tensor` of `path` when it holds NaN or an infinity (a diverged or
/// corrupted checkpoint would otherwise give NaN outputs without a word).
pub fn ensure_finite(path: &Path, tensor: &str, t: &Tensor) -> Result<()> {
    // 0 * x is 0 for every finite x and NaN otherwise; a sum of zeros cannot overflow.
    let t = t.to_dtype(DType::F32)?;
    let zero_or_nan = t.affine(0.0, 0.0)?.sum_all()?.to_scalar::<f32>()?;
    if zero_or_nan.is_finite() {
        return Ok(());
    }
    let values = t.flatten_all()?.to_vec1::<f32>()?;
    let (index, value) = values
        .iter()
        .enumerate()
        .find(|(_, v)| !v.is_finite())
        .map(|(i, v)| (i, *v))
        .unwrap_or((0, f32::NAN));
    Err(Error::Weights {
        path: path.to_path_buf(),
        tensor: tensor.to_string(),
        expected: "finite values".into(),
        found: format!("{value} at element {index}"),
        more: 0,
    })
}

/// The four BatchNorm tensors of `prefix`, each `[channels]`, for an expected-tensor list.
pub fn expected_batchnorm(prefix: &str, channels: usize) -> ExpectedTensors {
    ["weight", "bias", "running_mean", "running_var"]
        .iter()
        .map(|s| (format!("{prefix}.{s}"), vec![channels]))
        .collect()
}

/// `[32, 3, 3, 3]`.
pub fn fmt_shape(dims: &[usize]) -> String {
    format!("{dims:?}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn save(path: &Path, tensors: &[(&str, Tensor)]) {
        let map: HashMap<String, Tensor> = tensors
            .iter()
            .map(|(n, t)| (n.to_string(), t.clone()))
            .collect();
        candle_core::safetensors::save(&map, path).unwrap();
    }

    #[test]
    fn non_finite_values_are_named_with_their_tensor() -> Result<()> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("w.safetensors");
        let good = Tensor::new(&[1.0f32, -2.0, 3.0], &Device::Cpu)?;
        for bad in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY] {
            let t = Tensor::new(&[1.0f32, bad, 3.0], &Device::Cpu)?.to_dtype(DType::F16)?;
            save(&path, &[("a.weight", good.clone()), ("b.bias", t)]);
            let err = Checkpoint::open(&path, &Device::Cpu)
                .err()
                .unwrap()
                .to_string();
            assert!(
                err.contains("w.safetensors") && err.contains("`b.bias`"),
                "{err}"
            );
            assert!(err.contains("finite") && err.contains("element 1"), "{err}");
        }
        save(&path, &[("a.weight", good)]);
        assert!(Checkpoint::open(&path, &Device::Cpu).is_ok());
        Ok(())
    }

    #[test]
    fn the_header_is_audited_and_the_size_bounded_before_reading() -> Result<()> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("w.safetensors");
        let t = Tensor::zeros((4, 3), DType::F32, &Device::Cpu)?;
        save(&path, &[("fc.weight", t)]);
        let expected: ExpectedTensors = vec![("fc.weight".into(), vec![4, 3])];
        audit_file(&path, "toy", &expected)?;
        let other: ExpectedTensors = vec![("fc.weight".into(), vec![2, 3])];
        let err = audit_file(&path, "toy", &other).unwrap_err().to_string();
        assert!(err.contains("[2, 3]") && err.contains("[4, 3]"), "{err}");
        // Padded far beyond what 12 weights and a header can take.
        let file = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
        file.set_len(HEADER_ALLOWANCE + 1000).unwrap();
        let err = audit_file(&path, "toy", &expected).unwrap_err().to_string();
        assert!(err.contains("implausible for toy"), "{err}");
        Ok(())
    }
}
