//! Classifying images with a loaded model: batches in, ranked classes out.

use std::path::{Path, PathBuf};

use candle_core::{Device, Tensor};
use rayon::prelude::*;

use crate::zoo::Model;
use crate::{Error, Result};

/// Image files decoded and preprocessed together.
#[derive(Default)]
pub struct LoadedBatch {
    /// `[paths.len(), 3, size, size]`, or `None` when no file could be read.
    pub batch: Option<Tensor>,
    /// The files in the batch, in order.
    pub paths: Vec<PathBuf>,
    /// The files that could not be read, with the reason.
    pub failures: Vec<(PathBuf, crate::Error)>,
}

/// One class of a ranking.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct ClassScore {
    /// Index into the model's classes.
    pub index: usize,
    /// The class name.
    pub class: String,
    /// Softmax probability.
    pub prob: f32,
}

/// Most classes a ranking may show (`--top`).
pub const MAX_TOP: usize = 1000;

/// Checks a `--top` value: 1 to [`MAX_TOP`].
pub fn check_top(k: usize) -> Result<()> {
    if (1..=MAX_TOP).contains(&k) {
        return Ok(());
    }
    Err(Error::InvalidOption(format!(
        "--top {k}: show 1..={MAX_TOP} classes per image"
    )))
}

/// The `k` most probable classes of one probability vector, best first.
pub fn top_k(probs: &[f32], k: usize, labels: &[String]) -> Vec<ClassScore> {
    let mut order: Vec<usize> = (0..probs.len()).collect();
    order.sort_by(|&a, &b| probs[b].total_cmp(&probs[a]).then(a.cmp(&b)));
    order
        .into_iter()
        .take(k)
        .map(|index| ClassScore {
            index,
            class: labels
                .get(index)
                .cloned()
                .unwrap_or_else(|| format!("class {index}")),
            prob: probs[index],
        })
        .collect()
}

impl Model {
    /// Softmax probabilities for a preprocessed batch `[batch, 3, size, size]`:
    /// one `Vec` of `num_classes` per image. A row that is not finite, or a row length other
    /// than the model's class count, is an error naming the model and the row (prefer
    /// [`Model::batch_probabilities`], whose errors name the image file).
    pub fn probabilities(&self, batch: &Tensor) -> Result<Vec<Vec<f32>>> {
        self.checked_probabilities(batch, &|row| format!("image {row} of the batch"))
    }

    /// Softmax probabilities of a loaded batch, one row per file of `loaded.paths`; a
    /// non-finite output is an error naming the file and the model.
    pub fn batch_probabilities(&self, loaded: &LoadedBatch) -> Result<Vec<Vec<f32>>> {
        match &loaded.batch {
            Some(batch) => self.checked_probabilities(batch, &|row| {
                loaded
                    .paths
                    .get(row)
                    .map_or_else(|| format!("image {row}"), |p| p.display().to_string())
            }),
            None => Ok(Vec::new()),
        }
    }

    /// Names this model's output for `image` in errors: "`image`: the output of model NAME
    /// (manifest path)".
    pub fn output_name(&self, image: &str) -> String {
        format!(
            "{image}: the output of model `{}` ({})",
            self.spec.manifest.name,
            self.spec.manifest_path.display()
        )
    }

    fn checked_probabilities(
        &self,
        batch: &Tensor,
        image: &dyn Fn(usize) -> String,
    ) -> Result<Vec<Vec<f32>>> {
        let logits = self.network.forward(&batch.to_device(&self.device)?)?;
        #[allow(
            clippy::disallowed_methods,
            reason = "forward only: nothing differentiates"
        )]
        let probs = candle_nn::ops::softmax_last_dim(&logits)?;
        let rows = probs.to_device(&Device::Cpu)?.to_vec2::<f32>()?;
        let classes = self.spec.labels.len();
        for (row, p) in rows.iter().enumerate() {
            if p.len() != classes {
                return Err(Error::Model(format!(
                    "{}: the model gives {} outputs but has {classes} classes",
                    self.spec.weights_path.display(),
                    p.len()
                )));
            }
            if let Some(&value) = p.iter().find(|v| !v.is_finite()) {
                return Err(Error::NonFinite {
                    what: self.output_name(&image(row)),
                    value,
                });
            }
        }
        Ok(rows)
    }

    /// Decodes and preprocesses image files in parallel (rayon) into one batch; a file that
    /// cannot be read is set aside with its error and the others go on.
    pub fn load_batch(&self, paths: &[PathBuf]) -> Result<LoadedBatch> {
        let transform = &self.spec.preprocess;
        let decoded: Vec<Result<Tensor>> = paths
            .par_iter()
            .map(|p| transform.load(p, &Device::Cpu))
            .collect();
        let mut tensors = Vec::new();
        let mut loaded = LoadedBatch::default();
        for (path, result) in paths.iter().zip(decoded) {
            match result {
                Ok(t) => {
                    tensors.push(t);
                    loaded.paths.push(path.clone());
                }
                Err(e) => loaded.failures.push((path.clone(), e)),
            }
        }
        if !tensors.is_empty() {
            loaded.batch = Some(Tensor::cat(&tensors, 0)?);
        }
        Ok(loaded)
    }

    /// The top-`k` classes of one image file.
    pub fn classify_file(&self, path: &Path, k: usize) -> Result<Vec<ClassScore>> {
        let x = self.spec.preprocess.load(path, &self.device)?;
        let probs = self.checked_probabilities(&x, &|_| path.display().to_string())?;
        Ok(top_k(&probs[0], k, &self.spec.labels))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn top_k_ranks_and_names() {
        let labels: Vec<String> = ["a", "b", "c"].iter().map(|s| s.to_string()).collect();
        let top = top_k(&[0.2, 0.5, 0.3], 2, &labels);
        assert_eq!(top[0].class, "b");
        assert_eq!(top[1].index, 2);
        assert_eq!(top.len(), 2);
    }

    #[test]
    fn top_zero_is_refused() {
        assert!(check_top(1).is_ok() && check_top(MAX_TOP).is_ok());
        let err = check_top(0).unwrap_err().to_string();
        assert!(err.contains("--top 0"), "{err}");
    }
}
