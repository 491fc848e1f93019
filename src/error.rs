//! The one error type of convlens: every failure names the file, tensor, layer or value at fault.

use std::path::PathBuf;

/// Everything that can go wrong in convlens, with enough context to act on.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A weights file does not fit the architecture: a tensor is missing, unexpected or mis-shaped.
    #[error("{path}: tensor `{tensor}`: expected {expected}, found {found}{}", more_problems(*.more))]
    Weights {
        path: PathBuf,
        tensor: String,
        expected: String,
        found: String,
        /// How many further problems the audit found in the same file.
        more: usize,
    },
    /// An image that cannot be read or decoded.
    #[error("{path}: {reason}")]
    Image { path: PathBuf, reason: String },
    /// A model manifest or model directory that cannot be used.
    #[error("{0}")]
    Model(String),
    /// A layer id the network does not have.
    #[error("unknown layer `{id}`; this model's layers are: {known}")]
    UnknownLayer { id: String, known: String },
    /// A dataset folder that cannot be used (empty, one class, mismatched splits ...).
    #[error("{0}")]
    Dataset(String),
    /// A device that is not compiled in or not present.
    #[error("{0}")]
    Device(String),
    /// A training run that cannot go on (diverged, bad configuration).
    #[error("{0}")]
    Training(String),
    /// An option (command line, GUI or saved configuration) outside its allowed range.
    #[error("{0}")]
    InvalidOption(String),
    /// A model output that is NaN or infinite (`what` names the output, and the image and
    /// model where the caller knows them).
    #[error("{what} is {value}, not a number: the model's weights or normalisation are broken")]
    NonFinite { what: String, value: f32 },
    /// A training run's folder, or the workspace of runs, that cannot be used.
    #[error("{0}")]
    Workspace(String),
    /// The user cancelled the job.
    #[error("cancelled")]
    Cancelled,
    /// A file-system error on a named path.
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    /// A JSON file that does not parse, or a value that cannot be written as JSON.
    #[error("{path}: {source}")]
    Json {
        path: PathBuf,
        source: serde_json::Error,
    },
    /// An error from candle (tensor shape, dtype, backend).
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
}

fn more_problems(more: usize) -> String {
    match more {
        0 => String::new(),
        1 => " (and 1 more problem)".to_string(),
        n => format!(" (and {n} more problems)"),
    }
}

impl Error {
    /// An I/O error on `path`.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }

    /// An image error on `path`.
    pub fn image(path: impl Into<PathBuf>, reason: impl std::fmt::Display) -> Self {
        Error::Image {
            path: path.into(),
            reason: reason.to_string(),
        }
    }
}

/// Result with the convlens [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
