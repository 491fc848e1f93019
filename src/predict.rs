//! Classifying images with a loaded model: batches in, ranked classes out.

use std::path::{Path, PathBuf};

use candle_core::{Device, Tensor};
use rayon::prelude::*;

use crate::Result;
use crate::zoo::Model;

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
    /// one `Vec` of `num_classes` per image.
    pub fn probabilities(&self, batch: &Tensor) -> Result<Vec<Vec<f32>>> {
        let logits = self.network.forward(&batch.to_device(&self.device)?)?;
        let probs = candle_nn::ops::softmax_last_dim(&logits)?;
        Ok(probs.to_device(&Device::Cpu)?.to_vec2::<f32>()?)
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
        let probs = self.probabilities(&x)?;
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
}
