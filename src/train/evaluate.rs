//! Evaluating a model on a labelled split: accuracy, per-class precision and recall, the
//! confusion matrix and the misclassified files.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::metrics::{ClassMetrics, ConfusionMatrix, argmax_rows};
use crate::cancel::CancelToken;
use crate::data::folder::Sample;
use crate::zoo::Model;
use crate::{Error, Result};

/// One misclassified image.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Misclassified {
    pub path: PathBuf,
    pub true_class: String,
    pub predicted_class: String,
    /// Probability of the true class.
    pub true_prob: f32,
    /// Probability of the predicted class.
    pub predicted_prob: f32,
}

/// The result of an evaluation.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Evaluation {
    pub accuracy: f32,
    /// Mean cross-entropy `-ln p(true class)` over the classified images, as training reports
    /// its validation loss (`None` in evaluations saved before it was recorded).
    #[serde(default)]
    pub loss: Option<f32>,
    pub classes: Vec<String>,
    /// `confusion[true][predicted]`.
    pub confusion: Vec<Vec<usize>>,
    pub per_class: Vec<ClassMetrics>,
    pub misclassified: Vec<Misclassified>,
    /// Files that could not be read, with the reason.
    pub skipped: Vec<(PathBuf, String)>,
    /// Every classified image: (path, true class, predicted class, predicted probability), so
    /// that any confusion cell can list its images.
    #[serde(skip)]
    pub predictions: Vec<(PathBuf, usize, usize, f32)>,
}

/// Classifies every sample (labels index the model's classes) in batches of `batch_size`
/// (checked first, see [`super::check_batch_size`]). `progress(done, total)` after each
/// batch. A model output that is not finite is an error naming the image.
pub fn evaluate(
    model: &Model,
    samples: &[Sample],
    batch_size: usize,
    progress: &mut dyn FnMut(usize, usize),
    cancel: &CancelToken,
) -> Result<Evaluation> {
    super::check_batch_size(batch_size)?;
    let classes = model.spec.labels.clone();
    if let Some(s) = samples.iter().find(|s| s.label >= classes.len()) {
        return Err(Error::Dataset(format!(
            "{}: label {} but the model has {} classes",
            s.path.display(),
            s.label,
            classes.len()
        )));
    }
    let mut cm = ConfusionMatrix::new(classes.len());
    let mut misclassified = Vec::new();
    let mut skipped = Vec::new();
    let mut predictions = Vec::new();
    let mut loss_sum = 0f64;
    let mut done = 0;
    for chunk in samples.chunks(batch_size) {
        cancel.check()?;
        let paths: Vec<PathBuf> = chunk.iter().map(|s| s.path.clone()).collect();
        let mut loaded = model.load_batch(&paths)?;
        skipped.extend(
            std::mem::take(&mut loaded.failures)
                .into_iter()
                .map(|(p, e)| (p, e.to_string())),
        );
        // One row per class of the model, finite, or an error naming the image.
        let probs = model.batch_probabilities(&loaded)?;
        let predicted = argmax_rows(&probs);
        for ((path, p), pred) in loaded.paths.iter().zip(&probs).zip(predicted) {
            let Some(truth) = chunk.iter().find(|s| &s.path == path).map(|s| s.label) else {
                continue;
            };
            // In range: labels were checked against the classes, and every row has one
            // probability per class.
            cm.add(truth, pred);
            loss_sum -= f64::from(p[truth].max(f32::MIN_POSITIVE)).ln();
            predictions.push((path.clone(), truth, pred, p[pred]));
            if pred != truth {
                misclassified.push(Misclassified {
                    path: path.clone(),
                    true_class: classes[truth].clone(),
                    predicted_class: classes[pred].clone(),
                    true_prob: p[truth],
                    predicted_prob: p[pred],
                });
            }
        }
        done += chunk.len();
        progress(done, samples.len());
    }
    let scored = predictions.len();
    Ok(Evaluation {
        accuracy: cm.accuracy(),
        loss: (scored > 0).then(|| (loss_sum / scored as f64) as f32),
        per_class: cm.per_class(&classes),
        confusion: cm.counts,
        classes,
        misclassified,
        skipped,
        predictions,
    })
}
