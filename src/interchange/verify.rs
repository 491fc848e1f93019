//! Checks an export against the network it came from: the ONNX file run by `candle-onnx`'s
//! evaluator on the bundled photos, the PyTorch state dict read back tensor by tensor.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{Device, Tensor};

use super::onnx::{BatchSize, OnnxOptions};
use crate::cancel::CancelToken;
use crate::zoo::{Model, Preprocess};
use crate::{Error, Result};

/// Largest difference an export may show, relative to the largest reference value.
pub const TOLERANCE: f32 = 1e-4;

/// What a verification compared and found.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Verification {
    /// What was compared (e.g. `logits of 4 bundled photos at batch 1 and 4`).
    pub what: String,
    /// Largest absolute difference.
    pub max_abs_diff: f32,
    /// Largest absolute reference value (the scale the difference is judged against).
    pub max_abs: f32,
    /// `max_abs_diff / max_abs`.
    pub relative: f32,
    /// The tolerance `relative` had to stay within.
    pub tolerance: f32,
}

impl Verification {
    /// Whether the export passed.
    pub fn passed(&self) -> bool {
        self.relative <= self.tolerance
    }

    /// One line for the user: `verified: logits of ... agree: largest difference 3.1e-6
    /// (1.2e-7 of the largest value 25.3)`.
    pub fn summary(&self) -> String {
        // Logits of untrained weights can be tiny: three decimals would print 0.000.
        let largest = if self.max_abs >= 0.01 {
            format!("{:.3}", self.max_abs)
        } else {
            format!("{:.3e}", self.max_abs)
        };
        format!(
            "{} {}: largest difference {:.2e} ({:.2e} relative to the largest value {largest}; \
             tolerance {:.0e})",
            self.what,
            if self.passed() { "agree" } else { "DISAGREE" },
            self.max_abs_diff,
            self.relative,
            self.tolerance
        )
    }
}

/// A running maximum of differences and of reference magnitudes.
#[derive(Default)]
struct Diff {
    max_abs_diff: f32,
    max_abs: f32,
}

impl Diff {
    /// Adds the comparison of `found` with `expected` (same shape); a shape mismatch or a
    /// non-finite value is an error naming `what`.
    fn add(&mut self, what: &str, expected: &Tensor, found: &Tensor) -> Result<()> {
        if expected.dims() != found.dims() {
            return Err(Error::Model(format!(
                "{what}: the export gives shape {:?}, the network {:?}",
                found.dims(),
                expected.dims()
            )));
        }
        let e = expected
            .to_dtype(candle_core::DType::F32)?
            .flatten_all()?
            .to_vec1::<f32>()?;
        let f = found
            .to_dtype(candle_core::DType::F32)?
            .flatten_all()?
            .to_vec1::<f32>()?;
        for (a, b) in e.iter().zip(&f) {
            let d = (a - b).abs();
            if !d.is_finite() {
                return Err(Error::Model(format!(
                    "{what}: the export gives {b} where the network gives {a}"
                )));
            }
            self.max_abs_diff = self.max_abs_diff.max(d);
            self.max_abs = self.max_abs.max(a.abs());
        }
        Ok(())
    }

    fn finish(self, what: String) -> Verification {
        Verification {
            what,
            max_abs_diff: self.max_abs_diff,
            max_abs: self.max_abs,
            relative: self.max_abs_diff / self.max_abs.max(f32::MIN_POSITIVE),
            tolerance: TOLERANCE,
        }
    }
}

/// Compares `found` with `expected` (same shape), described as `what`.
pub fn compare(what: &str, expected: &Tensor, found: &Tensor) -> Result<Verification> {
    let mut diff = Diff::default();
    diff.add(what, expected, found)?;
    Ok(diff.finish(what.to_string()))
}

/// The bundled photos (`assets/images`), sorted; an error when there are none.
pub fn sample_images() -> Result<Vec<PathBuf>> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("assets/images");
    let mut paths: Vec<PathBuf> = std::fs::read_dir(&dir)
        .map_err(|e| Error::io(&dir, e))?
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.extension()
                .is_some_and(|e| e.eq_ignore_ascii_case("png") || e.eq_ignore_ascii_case("jpg"))
        })
        .collect();
    paths.sort();
    if paths.is_empty() {
        return Err(Error::Model(format!(
            "{}: no bundled photos to verify the export on",
            dir.display()
        )));
    }
    Ok(paths)
}

/// The bundled photos preprocessed for `model`, on the CPU: `[n, 3, size, size]`.
pub fn sample_batch(model: &Model) -> Result<Tensor> {
    let images = sample_images()?
        .iter()
        .map(|p| model.spec.preprocess.load(p, &Device::Cpu))
        .collect::<Result<Vec<_>>>()?;
    Ok(Tensor::cat(&images, 0)?)
}

/// A normalised batch back in `[0, 1]` RGB (the input of a graph that normalises itself).
fn denormalise(preprocess: &Preprocess, x: &Tensor) -> Result<Tensor> {
    let (mean, std) = match preprocess {
        Preprocess::CenterCrop(t) => (t.mean, t.std),
        Preprocess::Resize(t) => (t.mean, t.std),
    };
    let shape = (1, 3, 1, 1);
    let mean = Tensor::from_slice(&mean, shape, x.device())?;
    let std = Tensor::from_slice(&std, shape, x.device())?;
    Ok(x.broadcast_mul(&std)?.broadcast_add(&mean)?)
}

/// The network's output for a normalised batch `x`, as the export should give it
/// (softmax applied with `opts.softmax`), on the CPU.
fn reference(model: &Model, opts: &OnnxOptions, x: &Tensor) -> Result<Tensor> {
    let logits = model.network.forward(&x.to_device(&model.device)?)?;
    let out = if opts.softmax {
        candle_nn::ops::softmax(&logits, 1)?
    } else {
        logits
    };
    Ok(out.to_device(&Device::Cpu)?)
}

/// The batches an export is checked at: 1 and every photo for a dynamic batch, else the fixed
/// size (the photos repeated as needed). Each is `[n, 3, size, size]`, normalised.
fn batches(samples: &Tensor, batch: BatchSize) -> Result<Vec<Tensor>> {
    let n = samples.dim(0)?;
    Ok(match batch {
        BatchSize::Dynamic => vec![samples.narrow(0, 0, 1)?, samples.clone()],
        BatchSize::Fixed(size) => {
            let index: Vec<u32> = (0..size).map(|i| (i % n) as u32).collect();
            let index = Tensor::from_vec(index, size, samples.device())?;
            vec![samples.index_select(&index, 0)?]
        }
    })
}

/// Runs the ONNX file at `path` with `candle_onnx::simple_eval` on the bundled photos and
/// compares its output with the network's.
pub fn verify_onnx(
    path: &Path,
    model: &Model,
    opts: &OnnxOptions,
    cancel: &CancelToken,
) -> Result<Verification> {
    let proto = candle_onnx::read_file(path).map_err(|e| {
        Error::Model(format!(
            "{}: the ONNX file does not read back ({e})",
            path.display()
        ))
    })?;
    let samples = sample_batch(model)?;
    let mut diff = Diff::default();
    let mut sizes = Vec::new();
    for x in batches(&samples, opts.batch)? {
        cancel.check()?;
        let expected = reference(model, opts, &x)?;
        let input = if opts.include_preprocess {
            denormalise(&model.spec.preprocess, &x)?
        } else {
            x.clone()
        };
        let inputs = HashMap::from([(opts.input_name().to_string(), input)]);
        let mut outputs = candle_onnx::simple_eval(&proto, inputs).map_err(|e| {
            Error::Model(format!(
                "{}: candle-onnx cannot run the exported graph ({e})",
                path.display()
            ))
        })?;
        let found = outputs.remove(opts.output_name()).ok_or_else(|| {
            Error::Model(format!(
                "{}: the graph has no output `{}`",
                path.display(),
                opts.output_name()
            ))
        })?;
        let n = x.dim(0)?;
        diff.add(&format!("batch of {n}"), &expected, &found)?;
        sizes.push(n.to_string());
    }
    let photos = samples.dim(0)?;
    Ok(diff.finish(format!(
        "{} of the {photos} bundled photos (candle-onnx, batch {})",
        opts.output_name(),
        sizes.join(" and ")
    )))
}

/// Compares the tensors of a written state dict (`path`, safetensors) with `expected`, name
/// by name: every expected tensor present with its shape and values, nothing else.
pub fn verify_tensors(path: &Path, expected: &[(String, Tensor)]) -> Result<Verification> {
    let found = candle_core::safetensors::load(path, &Device::Cpu).map_err(|e| {
        Error::Model(format!(
            "{}: the state dict does not read back ({e})",
            path.display()
        ))
    })?;
    if found.len() != expected.len() {
        let extra: Vec<&String> = found
            .keys()
            .filter(|k| !expected.iter().any(|(n, _)| n == *k))
            .collect();
        return Err(Error::Model(format!(
            "{}: {} tensors written, {} expected (unexpected: {extra:?})",
            path.display(),
            found.len(),
            expected.len()
        )));
    }
    let mut diff = Diff::default();
    for (name, t) in expected {
        let back = found.get(name).ok_or_else(|| {
            Error::Model(format!("{}: tensor `{name}` is missing", path.display()))
        })?;
        diff.add(
            &format!("tensor `{name}`"),
            &t.to_device(&Device::Cpu)?,
            back,
        )?;
    }
    Ok(diff.finish(format!(
        "the {} tensors of the state dict read back",
        expected.len()
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_summary_prints_tiny_logits_in_scientific_notation() {
        let check = |max_abs: f32| Verification {
            what: "logits".into(),
            max_abs_diff: max_abs * 1e-6,
            max_abs,
            relative: 1e-6,
            tolerance: TOLERANCE,
        };
        let tiny = check(1.417e-5).summary();
        assert!(tiny.contains("largest value 1.417e-5;"), "{tiny}");
        let usual = check(10.833).summary();
        assert!(
            usual.contains("largest value 10.833;") && usual.contains("agree"),
            "{usual}"
        );
    }
}
