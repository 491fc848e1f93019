//! What a tab sees and what it may ask for: a read-only [`AppContext`] borrowed from the app
//! for one frame, and the [`Command`]s a tab returns for the app to apply after it.

use std::path::{Path, PathBuf};

use super::board::JobBoard;
use super::settings::Tab;
use super::thumbs::Thumbnails;
use crate::data::folder::ImageFolder;
use crate::jobs::views::ModelInfo;
use crate::jobs::{JobKind, Request};
use crate::workspace::{RunSummary, Workspace};

/// The shared state a tab reads while it draws.
pub struct AppContext<'a> {
    /// The loaded model (the previous one stays while another loads or after a failed load).
    pub model: Option<&'a ModelInfo>,
    /// The scanned dataset (kept the same way).
    pub data: Option<&'a ImageFolder>,
    /// The image the Activations and Heatmap tabs look at.
    pub image: &'a Path,
    /// The layer picked in the layer table.
    pub layer: Option<&'a str>,
    /// The folder of the model trained in this session, once there is one.
    pub trained_model: Option<&'a str>,
    /// The jobs submitted and not finished.
    pub jobs: &'a JobBoard,
    /// Decoded thumbnails.
    pub thumbs: &'a Thumbnails,
    /// The workspace of training runs (`None`: there is no data folder to keep runs in).
    pub workspace: Option<&'a Workspace>,
    /// The runs of the workspace as last listed, newest first.
    pub runs: &'a [RunSummary],
}

impl AppContext<'_> {
    /// Whether a job of `kind` is queued or running.
    pub fn running(&self, kind: JobKind) -> bool {
        self.jobs.running(kind)
    }
}

/// Something a tab asks the app to do.
#[must_use = "a command does nothing until the app applies it"]
#[derive(Debug)]
#[allow(
    clippy::large_enum_variant,
    reason = "a few commands per frame, each moved once: boxing buys nothing"
)]
pub enum Command {
    /// Queue work on the worker; a queued or running job of the same kind that only produces
    /// a view (activations, heatmap, predictions) is cancelled first.
    Submit(Request),
    /// Stop every job of a kind (queued or running).
    Cancel(JobKind),
    /// Load the model named in the settings (`Some`: this one).
    LoadModel(Option<String>),
    /// Scan the data folder named in the settings (`Some`: this one).
    ScanData(Option<String>),
    /// Make a layer the one the visual tabs show.
    SelectLayer(String),
    /// Make an image the one the visual tabs show.
    SetImage(PathBuf),
    /// Switch tabs.
    OpenTab(Tab),
    /// Open an image in the Heatmap tab set up to explain a trained model's answer on it.
    Explain(PathBuf, super::tabs::heatmap::Explain),
    /// Decode these thumbnails (those not already asked for).
    Thumbnails(Vec<PathBuf>),
    /// Recompute the heatmaps (their options changed).
    RefreshCam,
    /// Recompute the activation grid (its options changed).
    RefreshActivations,
    /// A message for the log.
    Note(String),
}

/// The commands a tab returns from one frame.
#[must_use = "the app must apply the commands a tab returns"]
#[derive(Debug, Default)]
pub struct Commands(pub Vec<Command>);

impl Commands {
    /// Adds a command.
    pub fn push(&mut self, command: Command) {
        self.0.push(command);
    }

    /// Adds another frame's commands.
    pub fn extend(&mut self, other: Commands) {
        self.0.extend(other.0);
    }
}

/// One model a tab can look through: how the chooser names it and the key the worker loads.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ModelChoice {
    pub label: String,
    pub key: String,
}

impl AppContext<'_> {
    /// The models the tabs can choose from: the loaded one, the one trained in this session
    /// (when it is not the loaded one), then the workspace's sound runs, newest first (each by
    /// its folder, which the worker loads and keeps beside the loaded model).
    pub fn model_choices(&self) -> Vec<ModelChoice> {
        let mut out = Vec::new();
        if let Some(m) = self.model {
            out.push(ModelChoice {
                label: model_label(m),
                key: m.key.clone(),
            });
        }
        if let Some(t) = self.trained_model
            && self.model.is_none_or(|m| m.key != t)
        {
            let name = Path::new(t)
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_else(|| t.to_string());
            out.push(ModelChoice {
                label: format!("trained: {name} (this session)"),
                key: t.to_string(),
            });
        }
        for run in self.runs.iter().filter(|r| r.problem.is_none()) {
            let key = run_key(run);
            let loaded = |k: &str| k == key || k == run.name;
            if self.model.is_some_and(|m| loaded(&m.key)) || self.trained_model.is_some_and(loaded)
            {
                continue;
            }
            out.push(ModelChoice {
                label: run_label(run),
                key,
            });
        }
        out
    }

    /// The key of `chosen` while it is still offered; otherwise the loaded model's.
    pub fn model_key(&self, chosen: Option<&str>) -> Option<String> {
        let choices = self.model_choices();
        chosen
            .filter(|k| choices.iter().any(|c| c.key == *k))
            .map(str::to_string)
            .or_else(|| self.model.map(|m| m.key.clone()))
    }

    /// How the chooser and the row titles name the model with `key`.
    pub fn model_name(&self, key: &str) -> String {
        self.model_choices()
            .into_iter()
            .find(|c| c.key == key)
            .map(|c| c.label)
            .unwrap_or_else(|| key.to_string())
    }

    /// Whether `key` names a run of the workspace that the last listing no longer has (deleted,
    /// moved away, or damaged since): a chooser holding it falls back to the loaded model.
    pub fn run_vanished(&self, key: &str) -> bool {
        let in_workspace = self
            .workspace
            .is_some_and(|w| Path::new(key).parent() == Some(w.runs_dir()));
        in_workspace
            && !self
                .runs
                .iter()
                .any(|r| r.problem.is_none() && run_key(r) == key)
    }
}

/// The model key of a saved run: its folder.
pub fn run_key(run: &RunSummary) -> String {
    run.path.to_string_lossy().into_owned()
}

/// How the choosers name a saved run: its name, mode and best validation accuracy.
pub fn run_label(run: &RunSummary) -> String {
    let name = run.display_name.as_deref().unwrap_or(&run.name);
    let mode = run.mode.map_or("?", |m| m.name());
    match run.best_val_accuracy {
        Some(acc) => format!("run: {name} ({mode}, val. acc. {acc:.3})"),
        None => format!("run: {name} ({mode})"),
    }
}

/// A loaded model's name by its kind and the last part of the name or path it was loaded by:
/// "base" for a pretrained model, "trained" for one trained by convlens (a run or a saved
/// trained-model folder, whatever its history).
pub fn model_label(m: &ModelInfo) -> String {
    let kind = if !m.trained { "base" } else { "trained" };
    let name = Path::new(&m.key)
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| m.key.clone());
    format!("{kind}: {name}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::train::Mode;

    fn info(key: &str, trained: bool) -> ModelInfo {
        ModelInfo {
            key: key.into(),
            title: String::new(),
            source: String::new(),
            layers: Vec::new(),
            spatial: Vec::new(),
            labels: Vec::new(),
            default_cam_layer: String::new(),
            input_size: 224,
            history: Vec::new(),
            trained,
        }
    }

    fn run(ws: &Workspace, name: &str, acc: Option<f32>, problem: Option<&str>) -> RunSummary {
        RunSummary {
            name: name.into(),
            display_name: None,
            path: ws.runs_dir().join(name),
            created: "2026-11-29T22:10:05Z".into(),
            mode: Some(Mode::Extract),
            dataset: Some("fashion-mini".into()),
            best_val_accuracy: acc,
            epochs: 1,
            problem: problem.map(str::to_string),
        }
    }

    #[test]
    fn runs_come_after_the_loaded_and_session_models_and_vanish_when_gone() {
        let ws = Workspace::at("/data/runs");
        let runs = [
            run(&ws, "new", Some(0.875), None),
            run(&ws, "broken", None, Some("no model.json")),
            run(&ws, "old", Some(0.5), None),
            run(&ws, "loaded", Some(0.9), None),
        ];
        let model = info("/data/runs/loaded", true);
        let (board, thumbs) = (JobBoard::default(), Thumbnails::default());
        let ctx = AppContext {
            model: Some(&model),
            data: None,
            image: Path::new("x.png"),
            layer: None,
            trained_model: Some("/tmp/session-model"),
            jobs: &board,
            thumbs: &thumbs,
            workspace: Some(&ws),
            runs: &runs,
        };
        let labels: Vec<String> = ctx.model_choices().into_iter().map(|c| c.label).collect();
        assert_eq!(
            labels,
            [
                "trained: loaded",
                "trained: session-model (this session)",
                "run: new (extract, val. acc. 0.875)",
                "run: old (extract, val. acc. 0.500)",
            ]
        );
        let key = |k| ctx.model_key(Some(k));
        assert_eq!(key("/data/runs/old").as_deref(), Some("/data/runs/old"));
        assert_eq!(
            key("/data/runs/broken").as_deref(),
            Some("/data/runs/loaded")
        );
        assert!(ctx.run_vanished("/data/runs/gone"));
        assert!(ctx.run_vanished("/data/runs/broken"), "damaged since");
        assert!(!ctx.run_vanished("/data/runs/old"));
        assert!(!ctx.run_vanished("efficientnet_lite0"), "not a run");
        assert_eq!(
            model_label(&info("efficientnet_lite0", false)),
            "base: efficientnet_lite0"
        );
    }
}
