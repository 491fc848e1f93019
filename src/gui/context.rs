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
