//! A weights file (safetensors or a PyTorch zip checkpoint) opened for building a network,
//! with the key/shape audit.

use std::collections::HashMap;
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

/// Whether a state-dict key is bookkeeping rather than a weight: BatchNorm's
/// `num_batches_tracked` counter, dropped at load.
pub fn is_bookkeeping(key: &str) -> bool {
    key.ends_with("num_batches_tracked")
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
    /// or unreadable file is an error naming it.
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
                let t = t.to_dtype(DType::F32)?.to_device(device)?;
                Ok((unwrapped(k, strip), t))
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
    pub fn shapes(&self) -> std::collections::BTreeMap<String, Vec<usize>> {
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
        let mut problems: Vec<(String, String, String)> = Vec::new();
        for (name, shape) in expected {
            match self.tensors.get(name) {
                None => problems.push((name.clone(), fmt_shape(shape), "no such tensor".into())),
                Some(t) if t.dims() != shape.as_slice() => {
                    problems.push((name.clone(), fmt_shape(shape), fmt_shape(t.dims())))
                }
                Some(_) => {}
            }
        }
        let known: std::collections::HashSet<&str> =
            expected.iter().map(|(n, _)| n.as_str()).collect();
        for key in self.keys() {
            if !known.contains(key) {
                problems.push((
                    key.to_string(),
                    format!("no such tensor in {architecture}"),
                    fmt_shape(self.tensors[key].dims()),
                ));
            }
        }
        match problems.first() {
            None => Ok(()),
            Some((tensor, expected, found)) => Err(Error::Weights {
                path: self.path.clone(),
                tensor: tensor.clone(),
                expected: expected.clone(),
                found: found.clone(),
                more: problems.len() - 1,
            }),
        }
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
