//! A trained model's evaluation on its validation split, kept beside it as `evaluation.json`
//! (accuracy, confusion matrix, per-class precision and recall, misclassified images), so the
//! results of a run can be looked at again without recomputing them.

use std::path::{Path, PathBuf};

use candle_core::Device;
use serde::{Deserialize, Serialize};

use crate::cancel::CancelToken;
use crate::data::folder::{ImageFolder, Split};
use crate::train::bundle::TrainedManifest;
use crate::train::evaluate::{Evaluation, evaluate};
use crate::zoo::ModelSpec;
use crate::{Error, Result};

/// The evaluation's file name inside a model folder.
pub const EVALUATION: &str = "evaluation.json";
/// The file's `format` value.
pub const FORMAT: &str = "convlens-evaluation/1";

/// `evaluation.json`: which split was evaluated, and the evaluation.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SavedEvaluation {
    pub format: String,
    /// `validation`.
    pub split: String,
    #[serde(flatten)]
    pub evaluation: Evaluation,
}

impl SavedEvaluation {
    /// Reads `dir/evaluation.json`; `Ok(None)` when there is none.
    pub fn read(dir: &Path) -> Result<Option<Self>> {
        let path = dir.join(EVALUATION);
        let text = match std::fs::read_to_string(&path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(Error::io(&path, e)),
        };
        let saved: SavedEvaluation = serde_json::from_str(&text).map_err(|source| Error::Json {
            path: path.clone(),
            source,
        })?;
        if saved.format != FORMAT {
            return Err(Error::Workspace(format!(
                "{}: format `{}` is not `{FORMAT}`",
                path.display(),
                saved.format
            )));
        }
        Ok(Some(saved))
    }

    /// Writes `dir/evaluation.json` atomically.
    pub fn write(&self, dir: &Path) -> Result<()> {
        crate::fsutil::write_json_atomic(&dir.join(EVALUATION), self)
    }
}

/// Evaluates the model saved in `model_dir` on the validation split of `data` (the folder it
/// was trained on, scanned with [`crate::train::TrainConfig::folder_options`]: a split other
/// than the one the manifest records is an error) and writes `evaluation.json` beside it, its image paths absolute. Writes
/// nothing and returns `Ok(None)` when the model records no finished epoch (a run stopped
/// before its first epoch ended holds only its initial weights). `progress(done, total)` after each batch.
pub fn evaluate_saved(
    model_dir: &Path,
    data: &ImageFolder,
    batch_size: usize,
    device: &Device,
    progress: &mut dyn FnMut(usize, usize),
    cancel: &CancelToken,
) -> Result<Option<Evaluation>> {
    let manifest = TrainedManifest::read(model_dir)?;
    if manifest.history.is_empty() {
        return Ok(None);
    }
    // The split evaluated is the one the model recorded (the same check as `convlens evaluate`).
    if let Some(record) = &manifest.split {
        record.check(data)?;
    }
    let model = ModelSpec::from_trained(model_dir)?.load(device)?;
    if data.classes != model.spec.labels {
        return Err(Error::Dataset(format!(
            "{}: classes [{}] differ from those of the model in {} [{}]",
            data.root.display(),
            data.classes.join(", "),
            model_dir.display(),
            model.spec.labels.join(", ")
        )));
    }
    let mut evaluation = evaluate(
        &model,
        data.split(Split::Validation),
        batch_size,
        progress,
        cancel,
    )?;
    // The file outlives the working folder: its image paths must not depend on it.
    let absolute = |p: &mut PathBuf| {
        if let Ok(a) = std::path::absolute(&*p) {
            *p = a;
        }
    };
    evaluation
        .misclassified
        .iter_mut()
        .for_each(|m| absolute(&mut m.path));
    evaluation.skipped.iter_mut().for_each(|(p, _)| absolute(p));
    evaluation
        .predictions
        .iter_mut()
        .for_each(|(p, ..)| absolute(p));
    SavedEvaluation {
        format: FORMAT.into(),
        split: "validation".into(),
        evaluation: evaluation.clone(),
    }
    .write(model_dir)?;
    Ok(Some(evaluation))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::train::metrics::ConfusionMatrix;

    #[test]
    fn round_trips_and_names_a_bad_file() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(SavedEvaluation::read(dir.path()).unwrap(), None);
        let classes = vec!["a".to_string(), "b".to_string()];
        let mut cm = ConfusionMatrix::new(2);
        cm.add(0, 0);
        cm.add(1, 0);
        let saved = SavedEvaluation {
            format: FORMAT.into(),
            split: "validation".into(),
            evaluation: Evaluation {
                accuracy: cm.accuracy(),
                loss: None,
                per_class: cm.per_class(&classes),
                confusion: cm.counts,
                classes,
                misclassified: vec![crate::train::evaluate::Misclassified {
                    path: "b/1.png".into(),
                    true_class: "b".into(),
                    predicted_class: "a".into(),
                    true_prob: 0.25,
                    predicted_prob: 0.75,
                }],
                skipped: vec![("b/2.png".into(), "truncated".into())],
                predictions: Vec::new(),
            },
        };
        saved.write(dir.path()).unwrap();
        assert_eq!(SavedEvaluation::read(dir.path()).unwrap(), Some(saved));
        std::fs::write(dir.path().join(EVALUATION), "{\"format\": 3").unwrap();
        let err = SavedEvaluation::read(dir.path()).unwrap_err().to_string();
        assert!(err.contains(EVALUATION), "{err}");
    }
}
