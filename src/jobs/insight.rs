//! The dataset map and suspect labels on the worker: features from the cache (extracted where
//! missing), then the projection or the k-fold heads, with progress and Cancel throughout.

use std::path::{Path, PathBuf};

use super::{Engine, JobContext};
use crate::Result;
use crate::data::folder::{FolderOptions, ImageFolder};
use crate::insight::dataset::{DatasetFeatures, dataset_features};
use crate::insight::map::{DatasetMap, Projection, build_map};
use crate::insight::suspects::{SuspectOptions, SuspectReport, out_of_fold_probabilities, rank};
use crate::train::features::default_cache_root;

/// Suspect labels of a folder, for the GUI.
#[derive(Clone, Debug)]
pub struct SuspectsView {
    /// The folder; the report's paths are relative to it.
    pub dataset: PathBuf,
    /// The model's name.
    pub model: String,
    /// The model's key (the chooser's) it was asked with.
    pub key: String,
    /// Whether the model predicts the folder's classes (so Heatmap can explain a suggestion).
    pub same_classes: bool,
    pub report: SuspectReport,
}

/// Reports progress at most every `step` units (and at the end), so a 1,000-iteration t-SNE
/// does not send 1,000 events.
fn throttled<'a>(ctx: &'a JobContext, stage: &'a str) -> impl FnMut(usize, usize) + 'a {
    move |done, total| {
        let step = (total / 100).max(1);
        if done % step == 0 || done == total {
            ctx.progress(stage, done, total);
        }
    }
}

fn features(
    engine: &mut Engine,
    ctx: &JobContext,
    key: &str,
    dir: &Path,
) -> Result<(DatasetFeatures, String, String)> {
    let model = engine.model(key)?;
    let data = ImageFolder::scan(dir, &FolderOptions::default())?;
    let ds = dataset_features(
        &model,
        &data,
        &default_cache_root(),
        &mut throttled(ctx, "features of the images"),
        &ctx.cancel,
    )?;
    Ok((
        ds,
        model.spec.manifest.name.clone(),
        model.weights_hash.clone(),
    ))
}

/// The map of the folder `dir` through model `key`.
pub(super) fn map(
    engine: &mut Engine,
    ctx: &JobContext,
    key: &str,
    dir: &Path,
    projection: Projection,
) -> Result<DatasetMap> {
    projection.tsne.check()?;
    let (ds, name, hash) = features(engine, ctx, key, dir)?;
    let stage = format!("{}: neighbours, then iterations", projection.method.name());
    build_map(
        &ds,
        dir,
        (&name, &hash),
        projection,
        &mut throttled(ctx, &stage),
        &ctx.cancel,
    )
}

/// The suspect labels of the folder `dir`, with `folds` folds, through model `key`'s features.
pub(super) fn suspects(
    engine: &mut Engine,
    ctx: &JobContext,
    key: &str,
    dir: &Path,
    folds: usize,
) -> Result<SuspectsView> {
    let (ds, name, _) = features(engine, ctx, key, dir)?;
    let probs = out_of_fold_probabilities(
        &ds.features,
        ds.classes.len(),
        SuspectOptions {
            folds,
            ..SuspectOptions::default()
        },
        &mut throttled(ctx, "fold heads: epochs"),
        &ctx.cancel,
    )?;
    let report = rank(
        &probs,
        &ds.features.labels,
        &ds.features.paths,
        &ds.classes,
        dir,
    );
    Ok(SuspectsView {
        dataset: dir.to_path_buf(),
        model: name,
        key: key.to_string(),
        same_classes: ds.same_classes(),
        report,
    })
}
