//! `convlens evaluate MODEL_DIR DATA_DIR [--split test|validation] [--json]`.

use std::path::PathBuf;
use std::process::ExitCode;

use super::Progress;
use super::output::{outln, print_json};
use crate::cancel::CancelToken;
use crate::data::folder::{FolderOptions, ImageFolder, Split};
use crate::device::DeviceChoice;
use crate::train::evaluate::evaluate;
use crate::{Error, Result};

/// Arguments of `convlens evaluate`.
#[derive(clap::Args, Debug)]
pub struct EvaluateArgs {
    /// A trained model folder (or any model whose classes match the folder's).
    pub model: String,
    /// The labelled image folder.
    pub data: PathBuf,
    /// test, validation or train.
    #[arg(long, default_value = "test")]
    pub split: String,
    /// Print JSON: accuracy, classes, confusion, per_class, misclassified.
    #[arg(long)]
    pub json: bool,
    #[arg(long, default_value_t = 32)]
    pub batch_size: usize,
    /// cpu, cuda[:N], metal[:N] or auto.
    #[arg(long, default_value = "cpu")]
    pub device: DeviceChoice,
}

/// Evaluates and prints the report.
pub fn run(args: &EvaluateArgs) -> Result<ExitCode> {
    let split = match args.split.as_str() {
        "test" => Split::Test,
        "validation" | "val" => Split::Validation,
        "train" => Split::Train,
        other => {
            return Err(Error::Dataset(format!(
                "unknown split `{other}`; use test, validation or train"
            )));
        }
    };
    crate::train::check_batch_size(args.batch_size)?;
    let model = crate::zoo::resolve(&args.model)?.load(&args.device.open()?)?;
    let data = ImageFolder::scan(&args.data, &FolderOptions::default())?;
    if data.classes != model.spec.labels {
        return Err(Error::Dataset(format!(
            "{}: classes [{}] differ from the model's [{}]",
            args.data.display(),
            data.classes.join(", "),
            model.spec.labels.join(", ")
        )));
    }
    let samples = data.split(split);
    if samples.is_empty() {
        return Err(Error::Dataset(format!(
            "{}: the {} split has no images",
            args.data.display(),
            args.split
        )));
    }
    let mut bar = Progress::new(samples.len() as u64, "evaluate");
    let eval = evaluate(
        &model,
        samples,
        args.batch_size,
        &mut |done, _| bar.set_position(done as u64),
        &CancelToken::new(),
    )?;
    bar.finish();
    for (path, reason) in &eval.skipped {
        eprintln!("skipped {}: {reason}", path.display());
    }
    if args.json {
        print_json(&eval);
        return Ok(ExitCode::SUCCESS);
    }
    outln!(
        "accuracy {:.4} on {} images ({})",
        eval.accuracy,
        samples.len(),
        args.split
    );
    outln!(
        "\n{:<16} {:>9} {:>9} {:>8}",
        "class",
        "precision",
        "recall",
        "support"
    );
    for c in &eval.per_class {
        outln!(
            "{:<16} {:>9.3} {:>9.3} {:>8}",
            c.class,
            c.precision,
            c.recall,
            c.support
        );
    }
    outln!("\nconfusion (rows: true, columns: predicted)");
    for (name, row) in eval.classes.iter().zip(&eval.confusion) {
        let cells: Vec<String> = row.iter().map(|n| format!("{n:>5}")).collect();
        outln!("{name:<16} {}", cells.join(""));
    }
    if !eval.misclassified.is_empty() {
        outln!("\nmisclassified");
        for m in &eval.misclassified {
            outln!(
                "  {}: {} ({:.3}) predicted as {} ({:.3})",
                m.path.display(),
                m.true_class,
                m.true_prob,
                m.predicted_class,
                m.predicted_prob
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}
