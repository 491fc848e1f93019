//! `convlens train DATA_DIR [--out MODEL_DIR] [--mode ...] ...`: transfer learning from the
//! command line, with progress bars and a line per epoch; the model goes into a new run folder
//! of the workspace unless `--out` names a folder, and its evaluation on the validation split
//! is saved beside it.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use super::{ModelArgs, progress_bar};
use crate::Result;
use crate::cancel::CancelToken;
use crate::data::augment::Augment;
use crate::data::folder::{FolderOptions, ImageFolder, Split};
use crate::train::{HeadKind, Mode, OptimizerKind, TrainConfig, TrainEvent, train};
use crate::workspace::{Workspace, evaluate_saved};

/// Arguments of `convlens train`.
#[derive(clap::Args, Debug)]
pub struct TrainArgs {
    /// A folder with one subfolder per class (or train/ validation/ [test/] split folders).
    pub data: PathBuf,
    /// Where the trained model (a folder) is written (default: a new run folder of the
    /// workspace, see `convlens runs`).
    #[arg(long)]
    pub out: Option<PathBuf>,
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

/// Scans the folder, trains, and prints where the model went.
pub fn run(args: &TrainArgs) -> Result<ExitCode> {
    let cfg = args.config()?;
    let data = ImageFolder::scan(
        &args.data,
        &FolderOptions {
            validation_fraction: cfg.validation_fraction,
            seed: cfg.seed,
            check_decodable: true,
        },
    )?;
    for s in &data.skipped {
        eprintln!("skipped {}: {}", s.path.display(), s.reason);
    }
    eprintln!(
        "{} classes ({}); {} training, {} validation images",
        data.classes.len(),
        data.classes.join(", "),
        data.split(Split::Train).len(),
        data.split(Split::Validation).len()
    );
    let base = args.model.load()?;
    let (out, workspace) = match &args.out {
        Some(dir) => (dir.clone(), None),
        None => {
            let workspace = Workspace::open_default()?;
            (workspace.create_run(cfg.mode, &args.data)?, Some(workspace))
        }
    };
    let mut bar: Option<indicatif::ProgressBar> = None;
    let mut on_event = |event: TrainEvent| match event {
        TrainEvent::Phase { name, .. } => {
            if let Some(b) = bar.take() {
                b.finish_and_clear();
            }
            eprintln!("== {name}");
        }
        TrainEvent::Progress { what, done, total } => {
            let b = bar.get_or_insert_with(|| progress_bar(total as u64, &what));
            if b.length() != Some(total as u64) || b.prefix() != what {
                b.set_length(total as u64);
                b.set_prefix(what);
                b.reset();
            }
            b.set_position(done as u64);
        }
        TrainEvent::Epoch(m) => {
            if let Some(b) = bar.take() {
                b.finish_and_clear();
            }
            eprintln!(
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
            let print = || eprintln!("warning: {w}");
            match &bar {
                Some(b) => b.suspend(print),
                None => print(),
            }
        }
    };
    // Ctrl-C stops between batches; the best checkpoint and the finished epochs stay on disk.
    // A second Ctrl-C stops the evaluation that follows.
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
        eprintln!("warning: Ctrl-C will not stop training cleanly ({e})");
    }
    let trained = train(&base, &data, &cfg, &out, &mut on_event, &cancel);
    // A run that saved nothing leaves no folder behind.
    let discarded = match (&trained, &workspace) {
        (Err(_), Some(workspace)) => workspace.discard_unsaved(&out).unwrap_or(false),
        _ => false,
    };
    let report = match trained {
        Err(crate::Error::Cancelled) if discarded => {
            eprintln!("interrupted before the first checkpoint: nothing was saved");
            return Ok(ExitCode::from(130));
        }
        Err(crate::Error::Cancelled) => {
            eprintln!(
                "interrupted: the best checkpoint so far is kept in {}",
                out.display()
            );
            save_evaluation(&out, &data, &cfg, &base.device, &cancel_evaluation);
            return Ok(ExitCode::from(130));
        }
        other => other?,
    };
    save_evaluation(&out, &data, &cfg, &base.device, &cancel_evaluation);
    println!(
        "saved {} (best validation loss {:.4}, accuracy {:.3}; {} images through the base, {} from the cache)",
        report.out_dir.display(),
        report.best_val_loss,
        report.best_val_accuracy,
        report.extract.computed,
        report.extract.cached
    );
    Ok(ExitCode::SUCCESS)
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
    let bar = progress_bar(total, "evaluate");
    let evaluated = evaluate_saved(
        out,
        data,
        cfg.batch_size,
        device,
        &mut |done, _| bar.set_position(done as u64),
        cancel,
    );
    bar.finish_and_clear();
    match evaluated {
        Ok(Some(e)) => eprintln!(
            "validation accuracy {:.3} ({} misclassified): {}",
            e.accuracy,
            e.misclassified.len(),
            out.join(crate::workspace::evaluation::EVALUATION).display()
        ),
        Ok(None) => {}
        Err(e) => eprintln!("warning: the evaluation was not saved: {e}"),
    }
}
