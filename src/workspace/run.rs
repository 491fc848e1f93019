//! One training run's folder: its record (`run.json`: when it started, the mode, the dataset,
//! a display name), the model bundle (`model.json`, `weights.safetensors`) and its evaluation
//! (`evaluation.json`). Reading a run never fails: what cannot be read becomes the run's
//! problem, so one damaged folder cannot hide the others.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::evaluation::{EVALUATION, SavedEvaluation};
use super::stamp::Stamp;
use crate::train::bundle::{MANIFEST, TrainedManifest, WEIGHTS};
use crate::train::{EpochMetrics, Mode};
use crate::{Error, Result};

/// The record's file name inside a run folder (its presence makes a folder a run).
pub const RECORD: &str = "run.json";
/// The record's `format` value.
pub const FORMAT: &str = "convlens-run/1";
/// The files convlens writes into a run folder (besides hidden temporary and lock files).
pub const KNOWN_FILES: [&str; 4] = [RECORD, MANIFEST, WEIGHTS, EVALUATION];

/// `run.json`: what a run is, written when its folder is made.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RunRecord {
    pub format: String,
    /// When the run started (RFC 3339, UTC).
    pub created: String,
    pub mode: Mode,
    /// The dataset folder's name.
    pub dataset: String,
    /// The dataset folder.
    pub data_dir: PathBuf,
    /// A name to show instead of the folder's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub display_name: Option<String>,
}

impl RunRecord {
    /// The record of a run of `mode` on the folder `data_dir`, started at `created`.
    pub fn new(created: &Stamp, mode: Mode, data_dir: &Path) -> Self {
        let data_dir = std::path::absolute(data_dir).unwrap_or_else(|_| data_dir.to_path_buf());
        let dataset = std::fs::canonicalize(&data_dir)
            .unwrap_or_else(|_| data_dir.clone())
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        RunRecord {
            format: FORMAT.into(),
            created: created.rfc3339(),
            mode,
            dataset,
            data_dir,
            display_name: None,
        }
    }

    /// Reads `dir/run.json`.
    pub fn read(dir: &Path) -> Result<Self> {
        let path = dir.join(RECORD);
        let text = std::fs::read_to_string(&path).map_err(|e| Error::io(&path, e))?;
        let record: RunRecord = serde_json::from_str(&text).map_err(|source| Error::Json {
            path: path.clone(),
            source,
        })?;
        if record.format != FORMAT {
            return Err(Error::Workspace(format!(
                "{}: format `{}` is not `{FORMAT}`",
                path.display(),
                record.format
            )));
        }
        Ok(record)
    }

    /// Writes `dir/run.json` atomically.
    pub fn write(&self, dir: &Path) -> Result<()> {
        crate::fsutil::write_json_atomic(&dir.join(RECORD), self)
    }
}

/// A run as the list shows it.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct RunSummary {
    /// The folder's name: what `--model`, `runs show`, `runs rename` and `runs delete` take.
    pub name: String,
    /// The name to show, when one was set.
    pub display_name: Option<String>,
    pub path: PathBuf,
    /// When the run started (RFC 3339, UTC); for a folder without a readable record, when the
    /// folder last changed.
    pub created: String,
    pub mode: Option<Mode>,
    pub dataset: Option<String>,
    /// Validation accuracy of the kept model.
    pub best_val_accuracy: Option<f32>,
    /// Finished epochs, over all phases.
    pub epochs: usize,
    /// Why the run cannot be used as it is (`None`: it can).
    pub problem: Option<String>,
}

/// One phase's epochs: `epochs[start..end]` of the [`History`].
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct PhaseSpan {
    /// `head`, `finetune` or `scratch`.
    pub name: String,
    pub start: usize,
    pub end: usize,
}

/// A run's epochs, with its phases and the epoch whose weights were kept.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct History {
    pub epochs: Vec<EpochMetrics>,
    /// Consecutive epochs of one phase, in order (a phase change lies between two spans).
    pub phases: Vec<PhaseSpan>,
    /// Index into `epochs` of the epoch whose weights the model holds: the last one that
    /// lowered the best validation loss (the trainer checkpoints exactly those). `None` when
    /// no epoch improved on the initial weights, or none finished.
    pub kept: Option<usize>,
}

impl History {
    /// The phases and the kept epoch of a manifest's per-epoch metrics.
    pub fn new(epochs: Vec<EpochMetrics>) -> Self {
        let mut phases: Vec<PhaseSpan> = Vec::new();
        for (i, e) in epochs.iter().enumerate() {
            match phases.last_mut() {
                Some(p) if p.name == e.phase => p.end = i + 1,
                _ => phases.push(PhaseSpan {
                    name: e.phase.clone(),
                    start: i,
                    end: i + 1,
                }),
            }
        }
        let kept = epochs.iter().rposition(|e| e.best);
        History {
            epochs,
            phases,
            kept,
        }
    }

    /// The kept epoch's metrics.
    pub fn kept_epoch(&self) -> Option<&EpochMetrics> {
        self.kept.map(|i| &self.epochs[i])
    }
}

/// A run read in full: what `runs show` prints and the app draws.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct RunDetails {
    pub summary: RunSummary,
    pub record: Option<RunRecord>,
    /// The trained model's manifest (classes, configuration, best loss and accuracy).
    pub manifest: Option<TrainedManifest>,
    pub history: History,
    /// The kept model on the validation split, once training has ended.
    pub evaluation: Option<SavedEvaluation>,
}

/// Reads the run in `dir`, collecting what cannot be read as its problem.
pub fn read(dir: &Path) -> RunDetails {
    let mut problems = Vec::new();
    let record = RunRecord::read(dir)
        .map_err(|e| problems.push(not_a_record(dir, e)))
        .ok();
    let manifest = match TrainedManifest::read(dir) {
        Ok(m) => Some(m),
        Err(Error::Io { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => {
            problems.push(format!(
                "no {MANIFEST}: no model saved yet (training is running, or stopped before \
                 its first checkpoint)"
            ));
            None
        }
        Err(e) => {
            problems.push(e.to_string());
            None
        }
    };
    if manifest.is_some() && !dir.join(WEIGHTS).is_file() {
        problems.push(format!("{}: missing", dir.join(WEIGHTS).display()));
    }
    let evaluation = SavedEvaluation::read(dir)
        .map_err(|e| problems.push(e.to_string()))
        .ok()
        .flatten();
    let history = History::new(
        manifest
            .as_ref()
            .map(|m| m.history.clone())
            .unwrap_or_default(),
    );
    let created = match &record {
        Some(r) => r.created.clone(),
        None => std::fs::metadata(dir)
            .and_then(|m| m.modified())
            .map(|t| Stamp::from_system_time(t).rfc3339())
            .unwrap_or_default(),
    };
    let summary = RunSummary {
        name: dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default(),
        display_name: record.as_ref().and_then(|r| r.display_name.clone()),
        path: dir.to_path_buf(),
        created,
        mode: record
            .as_ref()
            .map(|r| r.mode)
            .or(manifest.as_ref().map(|m| m.mode)),
        dataset: record.as_ref().map(|r| r.dataset.clone()),
        best_val_accuracy: manifest
            .as_ref()
            .filter(|m| !m.history.is_empty())
            .map(|m| m.best_val_accuracy),
        epochs: history.epochs.len(),
        problem: (!problems.is_empty()).then(|| problems.join("; ")),
    };
    RunDetails {
        summary,
        record,
        manifest,
        history,
        evaluation,
    }
}

fn not_a_record(dir: &Path, e: Error) -> String {
    match e {
        Error::Io { source, .. } if source.kind() == std::io::ErrorKind::NotFound => {
            format!("{}: no {RECORD}, so not a run convlens made", dir.display())
        }
        other => other.to_string(),
    }
}

/// Checks that `dir` is a run folder convlens may rename or delete: a real folder (not a
/// link) holding a `run.json` and nothing but the files convlens writes there.
pub fn check_is_run(dir: &Path) -> Result<()> {
    let meta = std::fs::symlink_metadata(dir).map_err(|e| Error::io(dir, e))?;
    if !meta.is_dir() {
        return Err(Error::Workspace(format!(
            "{}: not a run folder (a link or a file); left alone",
            dir.display()
        )));
    }
    if !dir.join(RECORD).is_file() {
        return Err(Error::Workspace(format!(
            "{}: not a run (no {RECORD}); left alone",
            dir.display()
        )));
    }
    let mut foreign = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(|e| Error::io(dir, e))? {
        let entry = entry.map_err(|e| Error::io(dir, e))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        let is_file = entry.file_type().map(|t| t.is_file()).unwrap_or(false);
        let ours = KNOWN_FILES.contains(&name.as_str()) || name.starts_with('.');
        if !(is_file && ours) {
            foreign.push(name);
        }
    }
    if !foreign.is_empty() {
        foreign.sort();
        return Err(Error::Workspace(format!(
            "{}: holds files convlens did not write ({}); left alone",
            dir.display(),
            foreign.join(", ")
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn epoch(phase: &str, epoch: usize, val_acc: f32, best: bool) -> EpochMetrics {
        EpochMetrics {
            phase: phase.into(),
            epoch,
            train_loss: 0.5,
            train_accuracy: 0.8,
            val_loss: 1.0 - val_acc,
            val_accuracy: val_acc,
            secs: 0.1,
            best,
        }
    }

    #[test]
    fn phases_and_the_kept_epoch_come_from_the_history() {
        // Fine-tuning that lowered validation accuracy: the head's third epoch is kept.
        let h = History::new(vec![
            epoch("head", 1, 0.80, true),
            epoch("head", 2, 0.90, true),
            epoch("head", 3, 0.95, true),
            epoch("finetune", 1, 0.89, false),
            epoch("finetune", 2, 0.91, false),
        ]);
        assert_eq!(
            h.phases,
            vec![
                PhaseSpan {
                    name: "head".into(),
                    start: 0,
                    end: 3
                },
                PhaseSpan {
                    name: "finetune".into(),
                    start: 3,
                    end: 5
                },
            ]
        );
        assert_eq!(h.kept, Some(2));
        assert_eq!(h.kept_epoch().unwrap().val_accuracy, 0.95);
        let none = History::new(vec![epoch("scratch", 1, 0.2, false)]);
        assert_eq!(none.kept, None);
        assert_eq!(History::new(Vec::new()), History::default());
    }

    #[test]
    fn the_record_round_trips_and_names_the_dataset() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("My Photos");
        std::fs::create_dir(&data).unwrap();
        let mut record = RunRecord::new(&Stamp::from_unix(0), Mode::Finetune, &data);
        assert_eq!(record.dataset, "My Photos");
        assert_eq!(record.created, "1970-01-01T00:00:00Z");
        record.display_name = Some("first try".into());
        record.write(dir.path()).unwrap();
        assert_eq!(RunRecord::read(dir.path()).unwrap(), record);
    }
}
