//! What the worker computes for the window: the typed results of [`super::Request`]s and the
//! functions that compute them on the [`Engine`]. None of this depends on egui.

use std::path::{Path, PathBuf};

use image::RgbImage;

use crate::Result;
use crate::data::augment::Augment;
use crate::data::preprocess::load_rgb;
use crate::graph::LayerInfo;
use crate::jobs::Engine;
use crate::predict::{ClassScore, top_k};
use crate::train::TrainReport;
use crate::train::evaluate::Evaluation;
use crate::viz::activations::{
    ChannelStats, GridLayout, GridOptions, LayerSparsity, layer_activations, sparsity_profile,
    spatial_layers,
};
use crate::viz::attribution::Completeness;
use crate::viz::cam::{self, CamOptions};
use crate::viz::colormap::Colormap;
use crate::viz::overlay::{CamImages, CropPlacement, cam_images};

/// What the window learns about a loaded model.
#[derive(Clone, Debug)]
pub struct ModelInfo {
    /// The name or path it was loaded by.
    pub key: String,
    pub title: String,
    pub source: String,
    pub layers: Vec<LayerInfo>,
    /// Layers with a spatial output (for activations, filters and CAMs).
    pub spatial: Vec<String>,
    pub labels: Vec<String>,
    pub default_cam_layer: String,
    pub input_size: usize,
    /// For a model trained by convlens: its training history (for the Train tab's curves).
    pub history: Vec<crate::train::EpochMetrics>,
    /// Whether convlens trained it (a trained-model bundle: a run or a saved folder).
    pub trained: bool,
}

/// An activation grid ready to show.
#[derive(Clone, Debug)]
pub struct ActivationView {
    /// The key of the model it was computed with.
    pub model: String,
    pub image: PathBuf,
    /// The image as the model sees it: resized and centre-cropped to its input size.
    pub input: RgbImage,
    pub layer: String,
    pub grid: RgbImage,
    pub layout: GridLayout,
    pub stats: Vec<ChannelStats>,
    /// Each channel alone, enlarged on click: `channels` maps of `height` x `width` levels.
    pub channels: Vec<RgbImage>,
    pub options: GridOptions,
}

/// A class-activation map ready to show.
#[derive(Clone, Debug)]
pub struct CamView {
    pub model: String,
    pub image: PathBuf,
    pub images: CamImages,
    pub class: usize,
    pub class_name: String,
    pub prob: f32,
    pub top5: Vec<ClassScore>,
    pub options: CamOptions,
    /// The resolution the map was computed at (the layer's, or the input's for a pixel
    /// method).
    pub map_size: (usize, usize),
    /// Integrated Gradients' completeness check.
    pub completeness: Option<Completeness>,
}

/// A finished training run and its validation evaluation.
#[derive(Clone, Debug)]
pub struct TrainOutcome {
    pub report: TrainReport,
    pub evaluation: Evaluation,
}

/// One image's top classes, or why it could not be classified.
pub type PredictionRow = (PathBuf, Result<Vec<ClassScore>, String>);

/// Loads a model and describes it.
pub fn load_model(engine: &mut Engine, key: &str) -> Result<ModelInfo> {
    let model = engine.model(key)?;
    let m = &model.spec.manifest;
    let input_size = m.input_size as usize;
    Ok(ModelInfo {
        key: key.to_string(),
        title: format!(
            "{} — {} classes, input {}×{}",
            m.name, m.num_classes, m.input_size, m.input_size
        ),
        source: if m.provenance.license.is_empty() {
            m.provenance.source.clone()
        } else {
            format!("{} ({})", m.provenance.source, m.provenance.license)
        },
        layers: model.network.layers(input_size),
        spatial: spatial_layers(&model.network, input_size),
        labels: model.spec.labels.clone(),
        default_cam_layer: m.default_cam_layer.clone(),
        input_size,
        history: model
            .spec
            .trained
            .as_ref()
            .map(|(_, t)| t.history.clone())
            .unwrap_or_default(),
        trained: model.spec.trained.is_some(),
    })
}

/// Activation grid of one layer for one image.
pub fn activations(
    engine: &mut Engine,
    key: &str,
    image: &Path,
    layer: &str,
    options: &GridOptions,
) -> Result<ActivationView> {
    options.validate()?;
    let model = engine.model(key)?;
    let seen = model.spec.preprocess.apply(&load_rgb(image)?);
    let input = model.spec.preprocess.to_tensor(&seen, &model.device)?;
    let acts = layer_activations(&model.network, &input, layer)?;
    let single = GridOptions {
        cols: 1,
        gutter: 0,
        ..options.clone()
    };
    let shared = options.shared_scale.then(|| acts.layer_stats());
    let channels = (0..acts.channels)
        .map(|c| {
            let levels = acts.levels(c, shared.as_ref());
            let mut img = RgbImage::new(acts.width as u32, acts.height as u32);
            for (p, &l) in img.pixels_mut().zip(&levels) {
                *p = image::Rgb(if acts.stats[c].is_blank() {
                    [255, 255, 255]
                } else {
                    single.colormap.rgb(l as f32 / 255.0)
                });
            }
            img
        })
        .collect();
    Ok(ActivationView {
        model: key.to_string(),
        image: image.to_path_buf(),
        input: seen,
        layer: layer.to_string(),
        grid: acts.grid(options),
        layout: acts.layout(options),
        stats: acts.stats.clone(),
        channels,
        options: options.clone(),
    })
}

/// Sparsity by depth for one image.
pub fn sparsity(engine: &mut Engine, key: &str, image: &Path) -> Result<Vec<LayerSparsity>> {
    let model = engine.model(key)?;
    let input = model.spec.preprocess.load(image, &model.device)?;
    sparsity_profile(&model.network, &input)
}

/// A class-activation map over the original image.
pub fn cam_view(
    engine: &mut Engine,
    key: &str,
    image: &Path,
    options: &CamOptions,
    colormap: Colormap,
    alpha: f32,
    progress: &mut dyn FnMut(usize, usize) -> bool,
) -> Result<CamView> {
    options.validate()?;
    let model = engine.model(key)?;
    let original = load_rgb(image)?;
    let input = model
        .spec
        .preprocess
        .to_tensor(&model.spec.preprocess.apply(&original), &model.device)?;
    let probs = model.probabilities(&input)?;
    let top5 = top_k(&probs[0], 5, &model.spec.labels);
    let options = options.clone().for_model(&model);
    let cam = cam::compute_with_progress(&model.network, &input, &options, progress)?;
    let (w, h) = original.dimensions();
    let placement = CropPlacement::new(w, h, &model.spec.preprocess);
    let colormap = colormap.for_map(cam.signed);
    let images = cam_images(
        &original,
        &cam.display_map(),
        cam.size,
        &placement,
        colormap,
        alpha,
    );
    Ok(CamView {
        model: key.to_string(),
        image: image.to_path_buf(),
        images,
        class: cam.class,
        class_name: model.spec.labels[cam.class].clone(),
        prob: cam.prob,
        top5,
        options,
        map_size: cam.lowres_size,
        completeness: cam.completeness,
    })
}

/// Top-k classes of each image.
pub fn predictions(
    engine: &mut Engine,
    key: &str,
    paths: &[PathBuf],
    k: usize,
) -> Result<Vec<PredictionRow>> {
    let model = engine.model(key)?;
    let loaded = model.load_batch(paths)?;
    let mut out: Vec<PredictionRow> = loaded
        .failures
        .into_iter()
        .map(|(p, e)| (p, Err(e.to_string())))
        .collect();
    if let Some(batch) = &loaded.batch {
        for (p, probs) in loaded.paths.iter().zip(model.probabilities(batch)?) {
            out.push((p.clone(), Ok(top_k(&probs, k, &model.spec.labels))));
        }
    }
    // In the order the files were listed (a file listed twice keeps its first place).
    out.sort_by_key(|(p, _)| paths.iter().position(|q| q == p).unwrap_or(usize::MAX));
    Ok(out)
}

/// Augmented previews of one image at the model's training size.
pub fn augment_previews(
    image: &Path,
    augment: &Augment,
    size: u32,
    n: usize,
) -> Result<Vec<RgbImage>> {
    let img = load_rgb(image)?;
    let resized = crate::data::preprocess::resize_bilinear(&img, size, size);
    Ok(augment.previews(&resized, n, 0))
}

/// A small thumbnail of an image file (`None` if it cannot be read).
pub fn thumbnail(path: &Path, size: u32) -> Option<RgbImage> {
    let img = load_rgb(path).ok()?;
    let (w, h) = img.dimensions();
    let scale = size as f32 / w.max(h) as f32;
    let (tw, th) = (
        ((w as f32 * scale).round() as u32).max(1),
        ((h as f32 * scale).round() as u32).max(1),
    );
    Some(image::imageops::thumbnail(&img, tw, th))
}
