//! `convlens evaluate MODEL_DIR DATA_DIR [--split test|validation] [--json]`.

use std::path::PathBuf;
use std::process::ExitCode;

use super::progress_bar;
use crate::cancel::CancelToken;
use crate::data::folder::{FolderOptions, ImageFolder, Split};
use crate::device::DeviceChoice;
use crate::train::evaluate::{Evaluation, evaluate};
use crate::{Error, Result};

/// Arguments of `convlens evaluate`.
#[derive(clap::Args, Debug)]
pub struct EvaluateArgs {
    /// A trained model folder or run name (or any model whose classes match the folder's).
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
    let bar = progress_bar(samples.len() as u64, "evaluate");
    let eval = evaluate(
        &model,
        samples,
        args.batch_size,
        &mut |done, _| bar.set_position(done as u64),
        &CancelToken::new(),
    )?;
    bar.finish_and_clear();
    for (path, reason) in &eval.skipped {
        eprintln!("skipped {}: {reason}", path.display());
    }
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&eval).expect("serialisable")
        );
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "accuracy {:.4} on {} images ({})",
        eval.accuracy,
        samples.len(),
        args.split
    );
    print_evaluation(&eval);
    Ok(ExitCode::SUCCESS)
}

/// Prints an evaluation's per-class precision and recall, confusion matrix and misclassified
/// images (after its accuracy line).
pub(super) fn print_evaluation(eval: &Evaluation) {
    println!(
        "\n{:<16} {:>9} {:>9} {:>8}",
        "class", "precision", "recall", "support"
    );
    for c in &eval.per_class {
        println!(
            "{:<16} {:>9.3} {:>9.3} {:>8}",
            c.class, c.precision, c.recall, c.support
        );
    }
    println!("\nconfusion (rows: true, columns: predicted)");
    for (name, row) in eval.classes.iter().zip(&eval.confusion) {
        let cells: Vec<String> = row.iter().map(|n| format!("{n:>5}")).collect();
        println!("{name:<16} {}", cells.join(""));
    }
    if !eval.misclassified.is_empty() {
        println!("\nmisclassified");
        for m in &eval.misclassified {
            println!(
                "  {}: {} ({:.3}) predicted as {} ({:.3})",
                m.path.display(),
                m.true_class,
                m.true_prob,
                m.predicted_class,
                m.predicted_prob
            );
        }
    }
}
