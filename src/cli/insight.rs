//! `convlens embed FOLDER --method pca|tsne --out map.png` (the dataset map: figure + JSON
//! with every image's coordinates) and `convlens suspects FOLDER --out suspects.csv` (images
//! ranked by the out-of-fold probability of their label).

use std::path::PathBuf;
use std::process::ExitCode;

use super::figure_io::{check_figure_out, check_outside};
use super::interrupt::{cancel_on_ctrl_c, or_interrupted};
use super::output::{errln, outln};
use super::{ModelArgs, Progress};
use crate::cancel::CancelToken;
use crate::data::folder::{FolderOptions, ImageFolder};
use crate::insight::dataset::{DatasetFeatures, dataset_features};
use crate::insight::map::{ColorBy, Method, Projection, build_map, render_map, write_map};
use crate::insight::suspects::{SuspectOptions, out_of_fold_probabilities, rank, to_csv};
use crate::insight::tsne::TsneOptions;
use crate::train::features::default_cache_root;
use crate::{Error, Result};

/// Arguments of `convlens embed`.
#[derive(clap::Args, Debug)]
pub struct EmbedArgs {
    /// A labelled folder (one subfolder per class, or train/ validation/ test/ of them).
    pub data: PathBuf,
    /// pca (linear, instant) or tsne (Barnes-Hut t-SNE: neighbourhoods kept).
    #[arg(long, value_enum, default_value_t = Method::Pca)]
    pub method: Method,
    /// t-SNE's perplexity, about how many neighbours each image keeps close (1-100; 5-50 is
    /// usual).
    #[arg(long, default_value_t = TsneOptions::default().perplexity)]
    pub perplexity: f32,
    /// t-SNE's iterations (the first 250 with early exaggeration).
    #[arg(long, default_value_t = TsneOptions::default().epochs)]
    pub iterations: usize,
    /// The figure (.png or .jpg); the JSON with every point goes beside it (map.json). A
    /// taken name gets a number (map_2.png), nothing is overwritten.
    #[arg(long, default_value = "map.png")]
    pub out: PathBuf,
    /// Also print the map (every image's coordinates, path, label, prediction) as JSON.
    #[arg(long)]
    pub json: bool,
    /// What colours the points: class, prediction or correct (needs a model trained on the
    /// folder's classes).
    #[arg(long, value_enum, default_value_t = ColorBy::Class)]
    pub color: ColorBy,
    #[command(flatten)]
    pub model: ModelArgs,
}

/// Arguments of `convlens suspects`.
#[derive(clap::Args, Debug)]
pub struct SuspectsArgs {
    /// A labelled folder (one subfolder per class, or train/ validation/ test/ of them).
    pub data: PathBuf,
    /// The CSV (path, given_label, suggested_label, p_given, rank, flagged), least
    /// self-confident first. A taken name gets a number; nothing is overwritten.
    #[arg(long, default_value = "suspects.csv")]
    pub out: PathBuf,
    /// Folds of the out-of-fold head training (2-20).
    #[arg(long, default_value_t = 5)]
    pub folds: usize,
    /// Rows printed (the most suspect first; every image is in the CSV).
    #[arg(long, default_value_t = 10)]
    pub top: usize,
    #[command(flatten)]
    pub model: ModelArgs,
}

/// What an interrupted `embed` or `suspects` keeps.
const KEPT: &str = "the features extracted so far are cached, a rerun starts from there";

/// Loads the model and the folder and extracts (or reads cached) pooled features; with
/// `same_classes`, first refuses a model that does not predict the folder's classes.
fn features(
    data: &std::path::Path,
    model: &ModelArgs,
    same_classes: bool,
    cancel: &CancelToken,
) -> Result<(DatasetFeatures, String, String)> {
    let model = model.load()?;
    let folder = ImageFolder::scan(data, &FolderOptions::default())?;
    if same_classes && model.spec.labels != folder.classes {
        return Err(Error::InvalidOption(format!(
            "--color correct needs a model trained on {}'s classes ({}); model `{}` predicts \
             other classes",
            data.display(),
            folder.classes.join(", "),
            model.spec.manifest.name
        )));
    }
    let total = folder.all_samples().len() as u64;
    let mut bar = Progress::new(total, "features");
    let ds = dataset_features(
        &model,
        &folder,
        &default_cache_root(),
        &mut |done, _| bar.set_position(done as u64),
        cancel,
    )?;
    bar.finish();
    for s in &ds.skipped {
        errln!("skipped {}: {}", s.path.display(), s.reason);
    }
    Ok((
        ds,
        model.spec.manifest.name.clone(),
        model.weights_hash.clone(),
    ))
}

/// Runs `embed` (Ctrl-C stops it; see [`super::interrupt`]).
pub fn run_embed(args: &EmbedArgs) -> Result<ExitCode> {
    check_figure_out(&args.out, &[&args.data])?;
    let cancel = cancel_on_ctrl_c();
    or_interrupted(embed(args, &cancel), Some(KEPT))
}

fn embed(args: &EmbedArgs, cancel: &CancelToken) -> Result<ExitCode> {
    let projection = Projection {
        method: args.method,
        tsne: TsneOptions {
            perplexity: args.perplexity,
            epochs: args.iterations,
            ..TsneOptions::default()
        },
    };
    projection.tsne.check()?;
    let same_classes = args.color == ColorBy::Correct;
    let (ds, name, hash) = features(&args.data, &args.model, same_classes, cancel)?;
    let steps = projection.steps(ds.features.labels.len());
    let mut bar = Progress::new(steps as u64, args.method.name());
    let map = build_map(
        &ds,
        &args.data,
        (&name, &hash),
        projection,
        &mut |done, _| bar.set_position(done as u64),
        cancel,
    )?;
    bar.finish();
    let image = render_map(&map, args.color)?;
    let (png, json) = write_map(&map, &image, &args.out)?;
    if args.json {
        super::output::print_json(&map);
    }
    errln!(
        "wrote {} and {} ({} images)",
        png.display(),
        json.display(),
        map.points.len()
    );
    Ok(exit_code(&ds))
}

/// Runs `suspects` (Ctrl-C stops it; see [`super::interrupt`]).
pub fn run_suspects(args: &SuspectsArgs) -> Result<ExitCode> {
    if !(2..=crate::insight::suspects::MAX_FOLDS).contains(&args.folds) {
        return Err(Error::InvalidOption(format!(
            "--folds {}: use 2 to {}",
            args.folds,
            crate::insight::suspects::MAX_FOLDS
        )));
    }
    if args.top == 0 {
        return Err(Error::InvalidOption(
            "--top 0: print at least 1 row (every image is in the CSV)".into(),
        ));
    }
    // The output is checked before any work: outside the folder, in a writable folder.
    check_outside(&args.out, &args.data)?;
    crate::fsutil::ensure_writable_file(&args.out)?;
    let cancel = cancel_on_ctrl_c();
    or_interrupted(suspects(args, &cancel), Some(KEPT))
}

fn suspects(args: &SuspectsArgs, cancel: &CancelToken) -> Result<ExitCode> {
    let options = SuspectOptions {
        folds: args.folds,
        ..SuspectOptions::default()
    };
    let (ds, _, _) = features(&args.data, &args.model, false, cancel)?;
    let mut bar = Progress::new((options.folds * options.epochs) as u64, "folds");
    let probs = out_of_fold_probabilities(
        &ds.features,
        ds.classes.len(),
        options,
        &mut |done, _| bar.set_position(done as u64),
        cancel,
    )?;
    bar.finish();
    let report = rank(
        &probs,
        &ds.features.labels,
        &ds.features.paths,
        &ds.classes,
        &args.data,
    );
    let out = crate::export::naming::unused_path(&args.out);
    crate::fsutil::write_atomic(&out, to_csv(&report).as_bytes())?;
    outln!("rank  p(given)  given -> suggested  path");
    for s in report.suspects.iter().take(args.top) {
        outln!(
            "{:>4}  {:>8.4}  {} -> {}{}  {}",
            s.rank,
            s.p_given,
            report.classes[s.given],
            report.classes[s.suggested],
            if s.flagged { " (flagged)" } else { "" },
            s.path.display()
        );
    }
    let flagged = report.suspects.iter().filter(|s| s.flagged).count();
    errln!(
        "wrote {} ({} images ranked, {flagged} flagged by confident learning)",
        out.display(),
        report.suspects.len()
    );
    Ok(exit_code(&ds))
}

/// 1 when files were skipped (listed on stderr), as other commands do.
fn exit_code(ds: &DatasetFeatures) -> ExitCode {
    if ds.skipped.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
