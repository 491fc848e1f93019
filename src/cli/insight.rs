//! `convlens embed FOLDER --method pca|tsne --out map.png` (the dataset map: figure + JSON
//! with every image's coordinates) and `convlens suspects FOLDER --out suspects.csv` (images
//! ranked by the out-of-fold probability of their label).

use std::path::PathBuf;
use std::process::ExitCode;

use super::output::outln;
use super::{ModelArgs, Progress};
use crate::cancel::CancelToken;
use crate::data::folder::{FolderOptions, ImageFolder};
use crate::insight::dataset::{DatasetFeatures, dataset_features};
use crate::insight::map::{ColorBy, Method, build_map, render_map, write_map};
use crate::insight::suspects::{SuspectOptions, out_of_fold_probabilities, rank, to_csv};
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
    /// Rows printed (the most suspect first).
    #[arg(long, default_value_t = 10)]
    pub top: usize,
    #[command(flatten)]
    pub model: ModelArgs,
}

/// Loads the model and the folder and extracts (or reads cached) pooled features.
fn features(
    data: &std::path::Path,
    model: &ModelArgs,
) -> Result<(DatasetFeatures, String, String)> {
    let model = model.load()?;
    let folder = ImageFolder::scan(data, &FolderOptions::default())?;
    let total = folder.all_samples().len() as u64;
    let mut bar = Progress::new(total, "features");
    let ds = dataset_features(
        &model,
        &folder,
        &default_cache_root(),
        &mut |done, _| bar.set_position(done as u64),
        &CancelToken::new(),
    )?;
    bar.finish();
    for s in &ds.skipped {
        eprintln!("skipped {}: {}", s.path.display(), s.reason);
    }
    Ok((
        ds,
        model.spec.manifest.name.clone(),
        model.weights_hash.clone(),
    ))
}

/// Runs `embed`.
pub fn run_embed(args: &EmbedArgs) -> Result<ExitCode> {
    crate::export::check_figure_path(&args.out)?;
    let (ds, name, hash) = features(&args.data, &args.model)?;
    let steps = match args.method {
        Method::Pca => 1,
        Method::Tsne => {
            ds.features.labels.len() + crate::insight::tsne::TsneOptions::default().epochs
        }
    };
    let mut bar = Progress::new(steps as u64, args.method.name());
    let map = build_map(
        &ds,
        &args.data,
        (&name, &hash),
        args.method,
        &mut |done, _| bar.set_position(done as u64),
        &CancelToken::new(),
    )?;
    bar.finish();
    let image = render_map(&map, args.color)?;
    let (png, json) = write_map(&map, &image, &args.out)?;
    if args.json {
        super::output::print_json(&map);
    }
    eprintln!(
        "wrote {} and {} ({} images)",
        png.display(),
        json.display(),
        map.points.len()
    );
    Ok(exit_code(&ds))
}

/// Runs `suspects`.
pub fn run_suspects(args: &SuspectsArgs) -> Result<ExitCode> {
    let options = SuspectOptions {
        folds: args.folds,
        ..SuspectOptions::default()
    };
    if !(2..=crate::insight::suspects::MAX_FOLDS).contains(&args.folds) {
        return Err(Error::InvalidOption(format!(
            "--folds {}: use 2 to {}",
            args.folds,
            crate::insight::suspects::MAX_FOLDS
        )));
    }
    let (ds, _, _) = features(&args.data, &args.model)?;
    let mut bar = Progress::new((options.folds * options.epochs) as u64, "folds");
    let probs = out_of_fold_probabilities(
        &ds.features,
        ds.classes.len(),
        options,
        &mut |done, _| bar.set_position(done as u64),
        &CancelToken::new(),
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
    eprintln!(
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
