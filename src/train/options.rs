//! Training options checked before any work: one [`TrainConfig::validate`] used by the command
//! line, the desktop app and [`super::train`] itself, so a run never starts on a value that
//! would waste the feature extraction, train nothing, or save a manifest that does not load.

use super::{Mode, TrainConfig};
use crate::graph::Network;
use crate::zoo::{limits, small_convnet};
use crate::{Error, Result};

/// Most images in one batch (training, extraction and evaluation alike): a larger batch of
/// 224-pixel images takes gigabytes of activations.
pub const MAX_BATCH_SIZE: usize = 1024;

/// Most epochs of one phase.
pub const MAX_EPOCHS: usize = 100_000;

/// Checks a batch size: 1 to [`MAX_BATCH_SIZE`].
pub fn check_batch_size(batch_size: usize) -> Result<()> {
    if (1..=MAX_BATCH_SIZE).contains(&batch_size) {
        return Ok(());
    }
    Err(Error::InvalidOption(format!(
        "--batch-size {batch_size}: use 1..={MAX_BATCH_SIZE} images per batch"
    )))
}

fn check_epochs(flag: &str, epochs: usize) -> Result<()> {
    if (1..=MAX_EPOCHS).contains(&epochs) {
        return Ok(());
    }
    Err(Error::InvalidOption(format!(
        "{flag} {epochs}: use 1..={MAX_EPOCHS} epochs"
    )))
}

fn check_lr(flag: &str, lr: f64) -> Result<()> {
    if lr.is_finite() && lr > 0.0 {
        return Ok(());
    }
    Err(Error::InvalidOption(format!(
        "{flag} {lr}: a learning rate must be a finite number above 0 (e.g. 0.001)"
    )))
}

impl TrainConfig {
    /// Checks every option that does not depend on the base model: epochs, batch size and
    /// learning rates of the phases the mode runs, the validation fraction, and the scratch
    /// convnet's input size. Errors ([`Error::InvalidOption`]) name the option and its value.
    pub fn validate(&self) -> Result<()> {
        check_epochs("--epochs", self.epochs)?;
        check_batch_size(self.batch_size)?;
        check_lr("--lr", self.lr)?;
        let f = self.validation_fraction;
        if !(f > 0.0 && f < 1.0) {
            return Err(Error::InvalidOption(format!(
                "--validation-split {f}: use a fraction between 0 and 1 (exclusive)"
            )));
        }
        if self.patience == Some(0) {
            return Err(Error::InvalidOption(
                "patience 0: use at least 1 epoch, or no early stopping".into(),
            ));
        }
        match self.mode {
            Mode::Finetune => {
                check_epochs("--finetune-epochs", self.finetune_epochs)?;
                check_lr("--finetune-lr", self.finetune_lr)?;
                if self.unfreeze == 0 {
                    return Err(Error::InvalidOption(
                        "--unfreeze 0: fine-tuning unfreezes at least 1 stage".into(),
                    ));
                }
            }
            Mode::Scratch => {
                let size = self.scratch_size;
                let range = limits::INPUT_SIZE;
                if !range.contains(&size) || small_convnet::flat_features(size as usize).is_err() {
                    return Err(Error::InvalidOption(format!(
                        "--size {size}: the scratch convnet takes 78..={} pixels",
                        range.end()
                    )));
                }
            }
            Mode::Extract | Mode::ExtractAugment => {}
        }
        Ok(())
    }

    /// Checks the options that depend on the base network: `--unfreeze` (fine-tuning) must
    /// leave at least one stage frozen before `feature_layer`. Called before extraction, so a
    /// bad value costs nothing.
    pub fn validate_for(&self, base: &Network, feature_layer: &str) -> Result<()> {
        if self.mode != Mode::Finetune {
            return Ok(());
        }
        let stages = base.index_of(feature_layer)?;
        if self.unfreeze >= stages {
            return Err(Error::InvalidOption(format!(
                "--unfreeze {}: the base has {stages} stages before `{feature_layer}`; unfreeze \
                 1..={}",
                self.unfreeze,
                stages.saturating_sub(1)
            )));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused(cfg: TrainConfig, words: &[&str]) {
        let err = cfg.validate().unwrap_err().to_string();
        for w in words {
            assert!(err.contains(w), "`{err}` lacks `{w}`");
        }
    }

    #[test]
    fn the_defaults_pass() {
        for mode in Mode::ALL {
            let cfg = TrainConfig {
                mode,
                ..TrainConfig::default()
            };
            cfg.validate().unwrap();
        }
    }

    #[test]
    fn bad_values_are_named() {
        let d = TrainConfig::default;
        for lr in [f64::NAN, f64::INFINITY, -1.0, 0.0] {
            refused(TrainConfig { lr, ..d() }, &["--lr", &lr.to_string()]);
        }
        refused(TrainConfig { epochs: 0, ..d() }, &["--epochs 0"]);
        refused(
            TrainConfig {
                batch_size: 0,
                ..d()
            },
            &["--batch-size 0"],
        );
        refused(
            TrainConfig {
                batch_size: 10_000,
                ..d()
            },
            &["--batch-size 10000", "1024"],
        );
        let scratch = |scratch_size| TrainConfig {
            mode: Mode::Scratch,
            scratch_size,
            ..d()
        };
        refused(scratch(100_000), &["--size 100000", "78..=1024"]);
        refused(scratch(40), &["--size 40"]);
        let finetune = TrainConfig {
            mode: Mode::Finetune,
            ..d()
        };
        refused(
            TrainConfig {
                finetune_lr: f64::NAN,
                ..finetune.clone()
            },
            &["--finetune-lr NaN"],
        );
        refused(
            TrainConfig {
                unfreeze: 0,
                ..finetune
            },
            &["--unfreeze 0"],
        );
        refused(
            TrainConfig {
                validation_fraction: 1.0,
                ..d()
            },
            &["--validation-split 1"],
        );
    }

    #[test]
    fn unfreeze_is_checked_against_the_base() -> Result<()> {
        let tensors = small_convnet::init_tensors(80, 2, 0, &candle_core::Device::Cpu)?;
        let net = small_convnet::build(&tensors, 80, 2)?;
        let cfg = TrainConfig {
            mode: Mode::Finetune,
            unfreeze: 99,
            ..TrainConfig::default()
        };
        let err = cfg.validate_for(&net, "flatten").unwrap_err().to_string();
        assert!(
            err.contains("--unfreeze 99") && err.contains("5 stages"),
            "{err}"
        );
        let ok = TrainConfig { unfreeze: 2, ..cfg };
        ok.validate_for(&net, "flatten")
    }
}
