//! `convlens evaluate MODEL_DIR DATA_DIR [--split test|validation|train] [--json]`.
//!
//! A labelled folder without split folders is evaluated on every image; `--split` picks one split
//! of a folder that has split folders (`train/`, `validation/` or `val/`, `test/`). A validation
//! (or train) split that training drew from a pool of images (no validation folder) is drawn
//! again exactly as the trained model's manifest records it; a folder whose images changed since
//! is refused, naming what changed, unless `--different-split` asks for a new draw.

use std::path::PathBuf;
use std::process::ExitCode;

use super::Progress;
use super::output::{errln, outln, print_json};
use crate::cancel::CancelToken;
use crate::data::folder::{FolderOptions, ImageFolder, Sample, Split};
use crate::data::split_record::SplitRecord;
use crate::device::DeviceChoice;
use crate::train::bundle::TrainedManifest;
use crate::train::evaluate::{Evaluation, evaluate};
use crate::{Error, Result};

/// Arguments of `convlens evaluate`.
#[derive(clap::Args, Debug)]
pub struct EvaluateArgs {
    /// A trained model folder or run name (or any model whose classes match the folder's).
    pub model: String,
    /// The labelled image folder.
    pub data: PathBuf,
    /// test, validation or train (default: test/ if there is one, else validation, else
    /// train). Without split folders every image is evaluated, unless a trained model's
    /// validation or train split is asked for: it is drawn again as training drew it.
    #[arg(long)]
    pub split: Option<String>,
    /// Print JSON: accuracy, loss, classes, confusion, per_class, misclassified.
    #[arg(long)]
    pub json: bool,
    /// When the trained model's validation split cannot be drawn again (the folder's images
    /// changed, or the model records no split), evaluate a split drawn anew with its seed and
    /// fraction instead of refusing: a different split, which may hold training images.
    #[arg(long)]
    pub different_split: bool,
    #[arg(long, default_value_t = 32)]
    pub batch_size: usize,
    /// cpu, cuda[:N], metal[:N] or auto.
    #[arg(long, default_value = "cpu")]
    pub device: DeviceChoice,
}

/// Class names shown in a message before the rest are only counted.
const SHOWN_CLASSES: usize = 8;

/// Evaluates and prints the report.
pub fn run(args: &EvaluateArgs) -> Result<ExitCode> {
    let requested = args.split.as_deref().map(parse_split).transpose()?;
    crate::train::check_batch_size(args.batch_size)?;
    let model = crate::zoo::resolve(&args.model)?.load(&args.device.open()?)?;
    let trained = model.spec.trained.as_ref();
    // A trained model's folder is split as it was for training (its record, or for a manifest
    // without one its configuration's seed and fraction).
    let options = match trained {
        Some((_, m)) => m
            .split
            .as_ref()
            .map_or_else(|| m.config.folder_options(), SplitRecord::folder_options),
        None => FolderOptions::default(),
    };
    let data = ImageFolder::scan(&args.data, &options)?;
    if data.classes != model.spec.labels {
        return Err(Error::Dataset(format!(
            "{}: its {} classes ({}) differ from the model's {} classes ({})",
            args.data.display(),
            data.classes.len(),
            name_list(&data.classes),
            model.spec.labels.len(),
            name_list(&model.spec.labels)
        )));
    }
    for s in &data.skipped {
        errln!("skipped {}: {}", s.path.display(), s.reason);
    }
    let (samples, what) = chosen_samples(&data, requested, trained, args.different_split)?;
    let samples = samples.as_slice();
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
        errln!("skipped {}: {reason}", path.display());
    }
    if args.json {
        print_json(&eval);
        return Ok(ExitCode::SUCCESS);
    }
    let scored: usize = eval.confusion.iter().flatten().sum();
    let unreadable = data.skipped.len() + eval.skipped.len();
    outln!(
        "accuracy {:.4}, loss {} on {scored} images ({what}){}",
        eval.accuracy,
        eval.loss.map_or_else(|| "-".into(), |l| format!("{l:.4}")),
        match unreadable {
            0 => String::new(),
            n => format!("; {n} skipped (listed above)"),
        }
    );
    print_evaluation(&eval);
    Ok(ExitCode::SUCCESS)
}

/// Prints an evaluation's per-class precision and recall, confusion matrix and misclassified
/// images (after its accuracy line).
pub(super) fn print_evaluation(eval: &Evaluation) {
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
}

/// The split named on the command line.
fn parse_split(name: &str) -> Result<Split> {
    match name {
        "test" => Ok(Split::Test),
        "validation" | "val" => Ok(Split::Validation),
        "train" => Ok(Split::Train),
        other => Err(Error::Dataset(format!(
            "unknown split `{other}`; use test, validation or train"
        ))),
    }
}

/// The samples to evaluate and how to name them: every image of a folder without split folders,
/// else the `requested` split (by default test/, else validation, else train). A train or
/// validation split without a validation folder is drawn: for a `trained` model, as its
/// manifest records (see [`drawn_split`]).
fn chosen_samples(
    data: &ImageFolder,
    requested: Option<Split>,
    trained: Option<&(PathBuf, TrainedManifest)>,
    different_split: bool,
) -> Result<(Vec<Sample>, String)> {
    if data.split_folders.is_empty() {
        return match (requested, trained) {
            (None, _) => Ok((data.all_samples(), "every image of the folder".into())),
            (Some(split @ (Split::Train | Split::Validation)), Some(trained)) => {
                drawn_split(data, split, trained, different_split)
            }
            (Some(split), _) => Err(Error::Dataset(format!(
                "{} has no split folders (train/, validation/ or val/, test/), so there is no \
                 {split} split{}; leave out --split to evaluate every image in it",
                data.root.display(),
                match split {
                    Split::Test => "",
                    _ => " of a model that was not trained on it",
                }
            ))),
        };
    }
    let split = requested.unwrap_or_else(|| {
        [Split::Test, Split::Validation, Split::Train]
            .into_iter()
            .find(|s| !data.split(*s).is_empty())
            .unwrap_or(Split::Test)
    });
    // train/ without a validation folder: both splits were drawn from train/.
    let drawn = data.split_folders.contains(&Split::Train)
        && !data.split_folders.contains(&Split::Validation);
    if let (Split::Train | Split::Validation, true, Some(trained)) = (split, drawn, trained) {
        return drawn_split(data, split, trained, different_split);
    }
    let samples = data.split(split).to_vec();
    if samples.is_empty() {
        let folders: Vec<String> = data
            .split_folders
            .iter()
            .map(|s| format!("{}/", s.name()))
            .collect();
        return Err(Error::Dataset(format!(
            "{}: the {split} split has no images (its split folders: {})",
            data.root.display(),
            folders.join(", ")
        )));
    }
    Ok((samples, format!("{split} split")))
}

/// The drawn `split` of `data` (scanned with the trained model's split options): the one the
/// model was trained and validated with when its manifest's record matches the folder. A folder
/// that changed, or a manifest without a record, is an error saying so, unless
/// `different_split` (then a warning, and the split drawn from what is there).
fn drawn_split(
    data: &ImageFolder,
    split: Split,
    (dir, manifest): &(PathBuf, TrainedManifest),
    different_split: bool,
) -> Result<(Vec<Sample>, String)> {
    let problem = match &manifest.split {
        Some(record) => record.check(data).err().map(|e| e.to_string()),
        None => Some(format!(
            "{}: the manifest records no split (written by an older convlens), so the {split} \
             split the model was trained with cannot be reproduced",
            dir.join(crate::train::bundle::MANIFEST).display()
        )),
    };
    let options = &data.options;
    let anew = format!(
        "a {split} split drawn anew from {} (seed {}, fraction {})",
        data.root.display(),
        options.seed,
        options.validation_fraction
    );
    match problem {
        None => Ok((
            data.split(split).to_vec(),
            format!("{split} split, drawn as for training"),
        )),
        Some(problem) if different_split => {
            errln!(
                "warning: {problem}; evaluating {anew}: a different split, which may hold \
                 images the model was trained on"
            );
            Ok((
                data.split(split).to_vec(),
                format!("a different {split} split, drawn anew"),
            ))
        }
        Some(problem) => Err(Error::Dataset(format!(
            "{problem}. Pass --different-split to evaluate {anew} (it may hold images the \
             model was trained on)"
        ))),
    }
}

/// At most [`SHOWN_CLASSES`] names, then how many more.
fn name_list(names: &[String]) -> String {
    let shown = names[..names.len().min(SHOWN_CLASSES)].join(", ");
    match names.len().saturating_sub(SHOWN_CLASSES) {
        0 => shown,
        more => format!("{shown}, ... and {more} more"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_class_lists_are_capped() {
        let names: Vec<String> = (0..1000).map(|i| format!("c{i}")).collect();
        let text = name_list(&names);
        assert!(
            text.starts_with("c0, c1,") && text.ends_with("... and 992 more"),
            "{text}"
        );
        assert!(text.len() < 80, "{text}");
        assert_eq!(name_list(&names[..2]), "c0, c1");
    }
}
