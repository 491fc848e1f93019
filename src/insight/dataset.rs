//! The pooled features (from the feature cache) and the model's prediction of every image of a
//! labelled folder: what the map and suspect labels start from.

use std::path::{Path, PathBuf};

use candle_core::{Device, Tensor};

use crate::cancel::CancelToken;
use crate::data::folder::{ImageFolder, SkippedFile};
use crate::data::train_transform::TrainTransform;
use crate::train::bundle::TrainedManifest;
use crate::train::features::{ExtractStats, FeatureCache, Features, extract_features};
use crate::train::metrics::argmax_rows;
use crate::train::trainer::FEATURE_LAYER;
use crate::zoo::Model;
use crate::{Error, Result};

/// Images per forward batch.
pub const BATCH: usize = 32;

/// A folder seen through a model.
pub struct DatasetFeatures {
    /// `[n, features]` pooled features (CPU), with each row's label (an index into `classes`)
    /// and image path.
    pub features: Features,
    /// The folder's class names (sorted subfolder names).
    pub classes: Vec<String>,
    /// The model's class names (ImageNet's for a pretrained base).
    pub model_classes: Vec<String>,
    /// Per row, the model's top class (an index into `model_classes`) and its probability;
    /// empty for a feature-only model.
    pub predictions: Vec<(usize, f32)>,
    /// Files that could not be read, with the reason.
    pub skipped: Vec<SkippedFile>,
    /// How many features were computed and how many came from the cache.
    pub stats: ExtractStats,
}

impl DatasetFeatures {
    /// Whether the model's classes are the folder's (so "correct" has a meaning).
    pub fn same_classes(&self) -> bool {
        self.model_classes == self.classes
    }

    /// The model's top class name of row `i`, if it has a classifier.
    pub fn predicted_class(&self, i: usize) -> Option<&str> {
        let (c, _) = self.predictions.get(i)?;
        self.model_classes.get(*c).map(String::as_str)
    }
}

/// The input transform whose pooled features the cache holds for `model`: a trained model's
/// own, or the base's input size and normalisation with the whole image resized (as training
/// extracts them).
pub fn feature_transform(model: &Model) -> TrainTransform {
    match &model.spec.trained {
        Some((_, m)) => m.preprocess.clone(),
        None => TrainTransform::new(
            model.spec.preprocess.input_size(),
            model.spec.manifest.mean,
            model.spec.manifest.std,
        ),
    }
}

/// The SHA-256 of the weights that compute `model`'s pooled features, which keys their cache:
/// a head trained on a frozen base (no stage fine-tuned) sees its base's features, so it shares
/// the features its training extracted; a fine-tuned, scratch or pretrained model computes its
/// own.
pub fn feature_weights_hash(model: &Model) -> &str {
    model
        .spec
        .trained
        .as_ref()
        .and_then(|(_, m)| frozen_base_hash(m))
        .unwrap_or(&model.weights_hash)
}

/// The base's weights hash when a trained model's features are its base's unchanged.
fn frozen_base_hash(m: &TrainedManifest) -> Option<&str> {
    m.base
        .as_ref()
        .filter(|b| m.finetuned_layers.is_empty() && b.feature_layer == FEATURE_LAYER)
        .map(|b| b.weights_hash.as_str())
}

/// Extracts (or reads from the cache under `cache_root`) the pooled features of every image of
/// `data` (all splits, sorted by class and path), then runs the rest of the network on them
/// for the model's prediction. `progress(done, total)` per batch of images.
pub fn dataset_features(
    model: &Model,
    data: &ImageFolder,
    cache_root: &Path,
    progress: &mut dyn FnMut(usize, usize),
    cancel: &CancelToken,
) -> Result<DatasetFeatures> {
    let samples = data.all_samples();
    if samples.is_empty() {
        return Err(Error::Dataset(format!(
            "{}: no images to map",
            data.root.display()
        )));
    }
    let transform = feature_transform(model);
    let cache = FeatureCache::open(
        cache_root,
        feature_weights_hash(model),
        FEATURE_LAYER,
        &transform,
    )?;
    let (features, mut skipped, stats) = extract_features(
        &model.network,
        FEATURE_LAYER,
        &samples,
        &transform,
        Some(&cache),
        BATCH,
        &model.device,
        progress,
        cancel,
    )?;
    skipped.splice(0..0, data.skipped.iter().cloned());
    let predictions = predict_from_features(model, &features.x)?;
    Ok(DatasetFeatures {
        features,
        classes: data.classes.clone(),
        model_classes: model.spec.labels.clone(),
        predictions,
        skipped,
        stats,
    })
}

/// The top class and its softmax probability for each row of pooled features `x`
/// (`[n, features]`), through the layers after `pooled`; empty when the network ends there.
fn predict_from_features(model: &Model, x: &Tensor) -> Result<Vec<(usize, f32)>> {
    let Some(last) = model.network.layer_ids().last().map(str::to_string) else {
        return Ok(Vec::new());
    };
    if last == FEATURE_LAYER {
        return Ok(Vec::new());
    }
    let n = x.dim(0)?;
    let mut out = Vec::with_capacity(n);
    for start in (0..n).step_by(256) {
        let len = (n - start).min(256);
        let rows = x.narrow(0, start, len)?.to_device(&model.device)?;
        let logits = model
            .network
            .forward_range(Some(FEATURE_LAYER), &last, &rows, false)?;
        let probs = candle_nn::ops::softmax(&logits, 1)?
            .to_device(&Device::Cpu)?
            .to_vec2::<f32>()?;
        for (row, top) in probs.iter().zip(argmax_rows(&probs)) {
            out.push((top, row.get(top).copied().unwrap_or(0.0)));
        }
    }
    Ok(out)
}

/// A path as shown in outputs: relative to `root` when under it.
pub fn relative(path: &Path, root: &Path) -> PathBuf {
    path.strip_prefix(root)
        .map_or_else(|_| path.to_path_buf(), Path::to_path_buf)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::train::TrainConfig;
    use crate::train::bundle::BaseModelRef;

    /// A trained model's manifest on a base whose weights hash is `base`, with `finetuned`
    /// stages.
    fn manifest(finetuned: &[&str]) -> TrainedManifest {
        let base = BaseModelRef {
            name: "efficientnet_lite0".into(),
            manifest: "models/efficientnet_lite0.json".into(),
            architecture: "efficientnet_lite0".into(),
            weights_hash: "base".into(),
            feature_layer: FEATURE_LAYER.into(),
        };
        TrainedManifest::new(
            &TrainConfig::default(),
            &["a".to_string(), "b".to_string()],
            TrainTransform::new(224, [0.5; 3], [0.25; 3]),
            Some(base),
            None,
            finetuned.iter().map(|s| s.to_string()).collect(),
            "blocks.6",
        )
    }

    #[test]
    fn a_head_on_a_frozen_base_shares_its_features_a_fine_tuned_one_has_its_own() {
        assert_eq!(frozen_base_hash(&manifest(&[])), Some("base"));
        assert_eq!(frozen_base_hash(&manifest(&["blocks.6"])), None);
        let mut scratch = manifest(&[]);
        scratch.base = None;
        assert_eq!(frozen_base_hash(&scratch), None);
    }
}
