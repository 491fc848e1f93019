//! What a tab sees and what it may ask for: a read-only [`AppContext`] borrowed from the app
//! for one frame, and the [`Command`]s a tab returns for the app to apply after it.

use std::path::{Path, PathBuf};

use super::board::JobBoard;
use super::settings::Tab;
use super::thumbs::Thumbnails;
use crate::data::folder::ImageFolder;
use crate::jobs::views::ModelInfo;
use crate::jobs::{JobKind, Request};
use crate::workspace::Workspace;

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
    /// The models the tabs can choose from: the loaded one, then the one trained in this
    /// session (when it is not the loaded one). Runs of the workspace belong at the end.
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
}

/// A loaded model's name by its kind and the last part of the name or path it was loaded by:
/// "base" for a pretrained model, "trained" for one trained by convlens (it has a history).
pub fn model_label(m: &ModelInfo) -> String {
    let kind = if m.history.is_empty() {
        "base"
    } else {
        "trained"
    };
    let name = Path::new(&m.key)
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| m.key.clone());
    format!("{kind}: {name}")
}
