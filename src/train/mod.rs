//! Transfer learning: four recipes (fast feature extraction, feature extraction with
//! augmentation, fine-tuning, a small convnet from scratch), a training loop that reports
//! [`TrainEvent`]s and keeps the best checkpoint, evaluation, and trained models on disk.

pub mod bundle;
pub mod evaluate;
pub mod features;
pub mod head;
pub mod metrics;
pub mod optim;
pub mod options;
pub mod trainer;

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::data::augment::Augment;
use crate::data::folder::FolderOptions;
pub use head::HeadKind;
pub use optim::OptimizerKind;
pub use options::{MAX_BATCH_SIZE, check_batch_size};
pub use trainer::{TrainReport, train};

/// The four classic recipes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum Mode {
    /// Frozen base run once per image, features cached on disk, head trained on the cache.
    #[default]
    Extract,
    /// Frozen base on freshly augmented images every epoch (no cache).
    ExtractAugment,
    /// The head first (as `Extract`), then the top stages unfrozen at a low learning rate,
    /// with augmentation.
    Finetune,
    /// A small convnet from random initialisation.
    Scratch,
}

impl Mode {
    /// Every mode, in the order the GUI lists them.
    pub const ALL: [Mode; 4] = [
        Mode::Extract,
        Mode::ExtractAugment,
        Mode::Finetune,
        Mode::Scratch,
    ];

    /// The mode's command-line name.
    pub fn name(self) -> &'static str {
        match self {
            Mode::Extract => "extract",
            Mode::ExtractAugment => "extract-augment",
            Mode::Finetune => "finetune",
            Mode::Scratch => "scratch",
        }
    }
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Mode {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        Mode::ALL
            .into_iter()
            .find(|m| m.name() == s.to_ascii_lowercase())
            .ok_or_else(|| {
                format!(
                    "unknown mode `{s}`; use one of {}",
                    Mode::ALL.map(|m| m.name()).join(", ")
                )
            })
    }
}

/// Everything a training run depends on (saved with the model, so a run can be repeated).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct TrainConfig {
    pub mode: Mode,
    /// Epochs of the main phase (the head, or the whole convnet from scratch).
    pub epochs: usize,
    pub batch_size: usize,
    /// Learning rate of the main phase.
    pub lr: f64,
    pub seed: u64,
    /// Stop after this many epochs without a better validation loss (`None`: never).
    pub patience: Option<usize>,
    pub head: HeadKind,
    pub optimizer: OptimizerKind,
    /// Fine-tuning: how many stages before the pooling are unfrozen, counted back from it
    /// (default 2: Lite0's last block `blocks.15` and `head` conv; a ResNet's `layer3` and
    /// `layer4`).
    pub unfreeze: usize,
    /// Fine-tuning: learning rate of the unfrozen phase.
    pub finetune_lr: f64,
    /// Fine-tuning: epochs of the unfrozen phase.
    pub finetune_epochs: usize,
    /// Fine-tuning: the unfrozen stages' BatchNorm normalises with batch statistics, updates its
    /// running statistics and trains its scale and shift (off: it keeps the pretrained
    /// statistics, folded into the convolutions, as Keras' recipe advises).
    pub train_batchnorm: bool,
    /// Augmentation for `extract-augment`, `finetune` and `scratch`.
    pub augment: Augment,
    /// Scratch: input size in pixels.
    pub scratch_size: u32,
    /// Validation fraction when the folder has no split folders.
    pub validation_fraction: f32,
    /// Feature cache root (`None`: [`features::default_cache_root`]).
    pub cache_dir: Option<PathBuf>,
}

impl Default for TrainConfig {
    fn default() -> Self {
        TrainConfig {
            mode: Mode::Extract,
            epochs: 20,
            batch_size: 32,
            lr: 1e-3,
            seed: 42,
            patience: Some(5),
            head: HeadKind::Dense,
            optimizer: OptimizerKind::default(),
            unfreeze: 2,
            finetune_lr: 1e-5,
            finetune_epochs: 5,
            train_batchnorm: false,
            augment: Augment::default(),
            scratch_size: 180,
            validation_fraction: 0.2,
            cache_dir: None,
        }
    }
}

impl TrainConfig {
    /// How a training folder is scanned and split for this configuration (its seed and
    /// validation fraction): the one place the command line and the desktop app take it from.
    pub fn folder_options(&self) -> FolderOptions {
        FolderOptions {
            validation_fraction: self.validation_fraction,
            seed: self.seed,
            check_decodable: true,
        }
    }
}

/// One epoch's numbers.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EpochMetrics {
    /// `head`, `finetune` or `scratch`.
    pub phase: String,
    /// 1-based within the phase.
    pub epoch: usize,
    pub train_loss: f32,
    pub train_accuracy: f32,
    pub val_loss: f32,
    pub val_accuracy: f32,
    pub secs: f32,
    /// Whether this epoch is the best so far (and was checkpointed).
    pub best: bool,
}

/// What a training run reports while it runs.
#[derive(Clone, Debug, PartialEq)]
pub enum TrainEvent {
    /// A new phase starts (`extracting features`, `training the head`, `fine-tuning` ...).
    Phase { name: String, epochs: usize },
    /// Progress within the current step (feature extraction or an epoch's batches).
    Progress {
        what: String,
        done: usize,
        total: usize,
    },
    /// An epoch finished.
    Epoch(EpochMetrics),
    /// Something the user should know that does not stop the run.
    Warning(String),
}
