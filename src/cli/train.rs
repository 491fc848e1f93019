//! `convlens train DATA_DIR [--out MODEL_DIR] [--mode ...] ...`: transfer learning from the
//! command line, with progress bars and a line per epoch; the model goes into a new run folder
//! of the workspace unless `--out` names a folder, and its evaluation on the validation split
//! is saved beside it.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use super::output::{errln, outln};
use super::{ModelArgs, Progress};
use crate::cancel::CancelToken;
use crate::data::augment::Augment;
use crate::data::folder::{ImageFolder, Split};
use crate::train::{
    HeadKind, Mode, OptimizerKind, TrainConfig, TrainEvent, TrainReport, bundle, train,
};
use crate::workspace::{Destination, evaluate_saved};
use crate::{Error, Result};

/// Arguments of `convlens train`.
#[derive(clap::Args, Debug)]
pub struct TrainArgs {
    /// A folder with one subfolder per class (or train/ validation/ [test/] split folders).
    pub data: PathBuf,
    /// Where the trained model (a folder) is written (default: a new run folder of the
    /// workspace, see `convlens runs`); a folder that exists and is not empty is refused unless
    /// --overwrite.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Replace an existing --out folder as a whole (the new run is written beside it and
    /// renamed into place; the old one stays untouched until then).
    #[arg(long, requires = "out")]
    pub overwrite: bool,
    /// extract, extract-augment, finetune or scratch.
    #[arg(long, default_value = "extract")]
    pub mode: Mode,
    /// Epochs of the main phase.
    #[arg(long, default_value_t = 20)]
    pub epochs: usize,
    #[arg(long, default_value_t = 32)]
    pub batch_size: usize,
    /// Learning rate of the main phase.
    #[arg(long, default_value_t = 1e-3)]
    pub lr: f64,
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// Stages before the pooling unfrozen by `finetune`.
    #[arg(long, default_value_t = 2)]
    pub unfreeze: usize,
    /// Learning rate of the fine-tuning phase.
    #[arg(long, default_value_t = 1e-5)]
    pub finetune_lr: f64,
    /// Epochs of the fine-tuning phase.
    #[arg(long, default_value_t = 5)]
    pub finetune_epochs: usize,
    /// Fine-tuning: train the unfrozen stages' BatchNorm (batch statistics, running statistics
    /// updated) instead of keeping the pretrained statistics.
    #[arg(long)]
    pub train_batchnorm: bool,
    /// dense (Dense 256 + dropout + Dense) or linear.
    #[arg(long, default_value = "dense")]
    pub head: HeadKind,
    /// adamw or sgd (with momentum 0.9).
    #[arg(long, default_value = "adamw")]
    pub optimizer: String,
    /// Augmentations for extract-augment, finetune and scratch, e.g. `flip,rotate,zoom`
    /// (`none` for none).
    #[arg(long, default_value = "flip,rotate,zoom,translate,contrast")]
    pub augment: String,
    /// Stop after this many epochs without a better validation loss (0: never).
    #[arg(long, default_value_t = 5)]
    pub patience: usize,
    /// Input size of the scratch convnet.
    #[arg(long, default_value_t = 180)]
    pub size: u32,
    /// Validation fraction when the folder has no split folders.
    #[arg(long, default_value_t = 0.2)]
    pub validation_split: f32,
    /// Feature cache folder (default: ~/.cache/convlens).
    #[arg(long)]
    pub cache: Option<PathBuf>,
    #[command(flatten)]
    pub model: ModelArgs,
}

impl TrainArgs {
    /// The training configuration these arguments describe.
    pub fn config(&self) -> Result<TrainConfig> {
        let optimizer = match self.optimizer.to_ascii_lowercase().as_str() {
            "adamw" | "adam" => OptimizerKind::default(),
            "sgd" => OptimizerKind::Sgd { momentum: 0.9 },
            other => {
                return Err(crate::Error::Training(format!(
                    "unknown optimizer `{other}`; use adamw or sgd"
                )));
            }
        };
        Ok(TrainConfig {
            mode: self.mode,
            epochs: self.epochs,
            batch_size: self.batch_size,
            lr: self.lr,
            seed: self.seed,
            patience: (self.patience > 0).then_some(self.patience),
            head: self.head,
            optimizer,
            unfreeze: self.unfreeze,
            finetune_lr: self.finetune_lr,
            finetune_epochs: self.finetune_epochs,
            train_batchnorm: self.train_batchnorm,
            augment: Augment::from_list(&self.augment)?,
            scratch_size: self.size,
            validation_fraction: self.validation_split,
            cache_dir: self.cache.clone(),
        })
    }
}

/// What a run needs after training: the data and the device, to evaluate the kept model.
struct Trained {
    data: ImageFolder,
    device: candle_core::Device,
    result: Result<TrainReport>,
}

/// Checks the options and the destination, scans the data, trains, saves the kept model's
/// evaluation beside it, and prints where the model went.
pub fn run(args: &TrainArgs) -> Result<ExitCode> {
    let cfg = args.config()?;
    cfg.validate()?;
    // Before any work: a bad or busy --out is reported at once.
    let dest = Destination::open(args.out.as_deref(), args.overwrite, cfg.mode, &args.data)?;
    // Ctrl-C stops between batches (the best checkpoint and the finished epochs stay on disk);
    // a second Ctrl-C stops the evaluation that follows.
    let (cancel, cancel_evaluation) = (CancelToken::new(), CancelToken::new());
    let (on_interrupt, evaluation_interrupt) = (cancel.clone(), cancel_evaluation.clone());
    let interrupted = move || {
        if on_interrupt.is_cancelled() {
            evaluation_interrupt.cancel();
        } else {
            on_interrupt.cancel();
        }
    };
    if let Err(e) = ctrlc::set_handler(interrupted) {
        errln!("warning: Ctrl-C will not stop training cleanly ({e})");
    }
    let (result, evaluate_on) = match scan_and_train(args, &cfg, dest.work(), &cancel) {
        Ok(t) => (t.result, Some((t.data, t.device))),
        Err(e) => (Err(e), None),
    };
    let evaluate = |dir: &Path| {
        if let Some((data, device)) = &evaluate_on {
            save_evaluation(dir, data, &cfg, device, &cancel_evaluation);
        }
    };
    let saved = bundle::is_trained_model(dest.work());
    match result {
        Ok(report) => {
            let dir = dest.keep()?;
            evaluate(dir);
            outln!(
                "saved {} (best validation loss {:.4}, accuracy {:.3}; {} images through the \
                 base, {} from the cache)",
                dir.display(),
                report.best_val_loss,
                report.best_val_accuracy,
                report.extract.computed,
                report.extract.cached
            );
            Ok(ExitCode::SUCCESS)
        }
        Err(e) if !saved => {
            let unchanged = dest.discard();
            if matches!(e, Error::Cancelled) {
                errln!("interrupted before the first checkpoint: nothing was saved{unchanged}");
                return Ok(ExitCode::from(130));
            }
            Err(e)
        }
        Err(e) => {
            // What loads replaces the old folder (as a whole), as the user asked.
            let dir = dest.keep()?;
            if matches!(e, Error::Cancelled) {
                let epochs = bundle::TrainedManifest::read(dir).map_or(0, |m| m.history.len());
                errln!(
                    "interrupted: the best checkpoint so far ({epochs} finished epochs) is kept in {}",
                    dir.display()
                );
                evaluate(dir);
                return Ok(ExitCode::from(130));
            }
            Err(renamed(e, dest.work(), dir))
        }
    }
}

/// An error whose message names the work folder, restated with the folder it became.
fn renamed(e: Error, from: &Path, to: &Path) -> Error {
    if from == to {
        return e;
    }
    let text = e.to_string();
    let from = from.display().to_string();
    if text.contains(&from) {
        Error::Training(text.replace(&from, &to.display().to_string()))
    } else {
        e
    }
}

/// Scans the data folder, loads the base model and trains into `work` (`cancel` stops it).
/// An error here means nothing was trained.
fn scan_and_train(
    args: &TrainArgs,
    cfg: &TrainConfig,
    work: &Path,
    cancel: &CancelToken,
) -> Result<Trained> {
    let data = ImageFolder::scan(&args.data, &cfg.folder_options())?;
    for s in &data.skipped {
        errln!("skipped {}: {}", s.path.display(), s.reason);
    }
    errln!(
        "{} classes ({}); {} training, {} validation images",
        data.classes.len(),
        data.classes.join(", "),
        data.split(Split::Train).len(),
        data.split(Split::Validation).len()
    );
    let base = args.model.load()?;
    let mut bar: Option<Progress> = None;
    let mut on_event = |event: TrainEvent| match event {
        TrainEvent::Phase { name, .. } => {
            if let Some(b) = bar.take() {
                b.finish();
            }
            errln!("== {name}");
        }
        TrainEvent::Progress { what, done, total } => {
            let b = bar.get_or_insert_with(|| Progress::new(total as u64, &what));
            if b.length() != total as u64 || b.what() != what {
                b.restart(total as u64, &what);
            }
            b.set_position(done as u64);
        }
        TrainEvent::Epoch(m) => {
            if let Some(b) = bar.take() {
                b.finish();
            }
            errln!(
                "{} epoch {:>3}: loss {:.4} acc {:.3} | val loss {:.4} acc {:.3} | {:.1}s{}",
                m.phase,
                m.epoch,
                m.train_loss,
                m.train_accuracy,
                m.val_loss,
                m.val_accuracy,
                m.secs,
                if m.best { "  *best" } else { "" }
            );
        }
        TrainEvent::Warning(w) => {
            let print = || errln!("warning: {w}");
            match &bar {
                Some(b) => b.suspend(print),
                None => print(),
            }
        }
    };
    let result = train(&base, &data, cfg, work, &mut on_event, cancel);
    Ok(Trained {
        data,
        device: base.device.clone(),
        result,
    })
}

/// Evaluates the saved model on the validation split and writes `evaluation.json` beside it;
/// a failure is a warning (the model itself is saved).
fn save_evaluation(
    out: &Path,
    data: &ImageFolder,
    cfg: &TrainConfig,
    device: &candle_core::Device,
    cancel: &CancelToken,
) {
    let total = data.split(Split::Validation).len() as u64;
    let mut bar = Progress::new(total, "evaluate");
    let evaluated = evaluate_saved(
        out,
        data,
        cfg.batch_size,
        device,
        &mut |done, _| bar.set_position(done as u64),
        cancel,
    );
    bar.finish();
    match evaluated {
        Ok(Some(e)) => errln!(
            "validation accuracy {:.3} ({} misclassified): {}",
            e.accuracy,
            e.misclassified.len(),
            out.join(crate::workspace::evaluation::EVALUATION).display()
        ),
        Ok(None) => {}
        Err(e) => errln!("warning: the evaluation was not saved: {e}"),
    }
}
