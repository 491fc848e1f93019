//! Publication figures: every view rendered to PNG at a scale factor (1-4) with a title,
//! labels and a colorbar wherever a colormap is used, text in the bundled DejaVu Sans; written
//! atomically, with a JSON sidecar beside it that holds everything needed to render it again
//! ([`reproduce`] gives the same PNG, byte for byte, on the same build and device).

pub mod canvas;
pub mod evidence;
pub mod examples_figure;
pub mod figures;
pub mod folder_figure;
pub mod naming;
pub mod plots;
pub mod probe_figure;

use std::path::{Path, PathBuf};

use image::RgbImage;
use serde::{Deserialize, Serialize};

use crate::fsutil::{check_not_input, relative_path, write_atomic};
use crate::viz::activations::{self, GridOptions, LayerSparsity};
use crate::viz::attribution::AttributionOptions;
use crate::viz::cam::{self, Cam, CamMethod, CamOptions, CamScore, Smooth};
use crate::viz::check_range;
use crate::viz::colormap::Colormap;
use crate::viz::filters::{self, FilterMethod, FilterOptions, FilterProgress};
use crate::viz::overlay::CropPlacement;
use crate::zoo::{Model, file_sha256};
use crate::{Error, Result};

/// The version written into every sidecar.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// A class-activation-map figure.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CamRequest {
    /// The image file.
    pub image: PathBuf,
    /// The layer the map is computed at.
    pub layer: String,
    #[serde(with = "method_name")]
    pub method: CamMethod,
    /// The class; `None` takes the top-1 prediction.
    pub class: Option<usize>,
    #[serde(default)]
    pub score: CamScore,
    pub colormap: Colormap,
    /// Weight of the heatmap in the overlay.
    pub alpha: f32,
    /// Smoothing of a layer CAM (left out of the sidecar when none).
    #[serde(default, skip_serializing_if = "is_no_smoothing")]
    pub smooth: Smooth,
    /// The pixel methods' parameters (left out of the sidecar when all are defaults).
    #[serde(default, skip_serializing_if = "AttributionOptions::is_default")]
    pub attribution: AttributionOptions,
}

fn is_no_smoothing(s: &Smooth) -> bool {
    *s == Smooth::None
}

impl CamRequest {
    /// The map's options (the Score-CAM batch at its default).
    pub fn options(&self) -> CamOptions {
        let mut opts = CamOptions::new(self.method, &self.layer);
        opts.class = self.class;
        opts.score = self.score;
        opts.smooth = self.smooth;
        opts.attribution = self.attribution.clone();
        opts
    }
}

/// The most filters in one figure.
pub const MAX_FIGURE_FILTERS: usize = 4096;
/// The most pixels of filter tiles in one figure (before the title and margins).
pub const MAX_FIGURE_PIXELS: u64 = 64_000_000;

/// An activation-grid figure.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ActivationsRequest {
    pub image: PathBuf,
    pub layer: String,
    #[serde(flatten)]
    pub grid: GridOptions,
}

/// A filter-pattern figure.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FiltersRequest {
    pub layer: String,
    /// The filter indices, in figure order.
    pub filters: Vec<usize>,
    /// Tiles per row.
    pub cols: usize,
    #[serde(flatten)]
    pub options: FilterOptions,
}

/// What a figure shows: everything besides the model and the scale that decides its pixels.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum FigureRequest {
    Cam(CamRequest),
    Activations(ActivationsRequest),
    Filters(FiltersRequest),
}

impl FigureRequest {
    /// Why the figure cannot be made for `net` on `device` (its method cannot explain the
    /// model there, [`CamMethod::refusal`]), or `None`.
    pub fn refusal(
        &self,
        net: &crate::graph::Network,
        device: &candle_core::Device,
    ) -> Option<String> {
        match self {
            FigureRequest::Cam(r) => r.method.refusal(net, device),
            _ => None,
        }
    }

    /// The input image, if the figure has one.
    pub fn image(&self) -> Option<&Path> {
        match self {
            FigureRequest::Cam(r) => Some(&r.image),
            FigureRequest::Activations(r) => Some(&r.image),
            FigureRequest::Filters(_) => None,
        }
    }

    /// Errors, naming the option and its allowed range, unless every option is within bounds
    /// ([`FilterOptions::validate`], [`GridOptions::validate`], [`CamOptions::validate`], the
    /// overlay's alpha 0 to 1, 1 to [`MAX_FIGURE_FILTERS`] filters, 1 to 256 columns, at most
    /// [`MAX_FIGURE_PIXELS`] pixels of filter tiles) and `scale` is 1 to 4. [`render`] calls it,
    /// so the CLI, the desktop app and `reproduce` accept the same figures.
    pub fn validate(&self, scale: u32) -> Result<()> {
        check_scale(scale)?;
        match self {
            FigureRequest::Cam(r) => {
                r.options().validate()?;
                check_range("--alpha", r.alpha, 0.0..=1.0)
            }
            FigureRequest::Activations(r) => r.grid.validate(),
            FigureRequest::Filters(r) => {
                r.options.validate()?;
                check_range("number of filters", r.filters.len(), 1..=MAX_FIGURE_FILTERS)?;
                check_range("--cols", r.cols, 1..=256)?;
                let tile = (r.options.size - 2 * r.options.crop) as u64 * u64::from(scale);
                let pixels = r.filters.len() as u64 * tile * tile;
                if pixels > MAX_FIGURE_PIXELS {
                    return Err(Error::Model(format!(
                        "{} filter tiles of {tile}x{tile} pixels make a figure of {pixels} \
                         pixels, more than the {MAX_FIGURE_PIXELS} allowed: choose fewer \
                         filters, a smaller --size or --scale",
                        r.filters.len()
                    )));
                }
                Ok(())
            }
        }
    }

    fn image_mut(&mut self) -> Option<&mut PathBuf> {
        match self {
            FigureRequest::Cam(r) => Some(&mut r.image),
            FigureRequest::Activations(r) => Some(&mut r.image),
            FigureRequest::Filters(_) => None,
        }
    }
}

mod method_name {
    use super::CamMethod;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(m: &CamMethod, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(m.name())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<CamMethod, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// The model a figure was made with.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ModelRef {
    /// The manifest's name.
    pub name: String,
    /// What `--model` was given (a name, a manifest, weights or a folder).
    pub source: String,
    /// SHA-256 of the weights file.
    pub weights_sha256: String,
}

/// The JSON written beside a figure (`F.png` -> `F.json`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Sidecar {
    pub convlens_version: String,
    pub model: ModelRef,
    /// The device the numbers were computed on (`cpu`, `cuda:0` ...).
    pub device: String,
    /// For a figure computed on the CPU, the instruction set of its kernels
    /// ([`crate::ops::cpu_kernels`], e.g. `x86_64 avx512f`): another one rounds differently,
    /// so the figure made again there may differ in a few pixels.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu_kernels: Option<String>,
    #[serde(flatten)]
    pub figure: FigureRequest,
    /// SHA-256 of the input image file, if any.
    pub image_sha256: Option<String>,
    /// The input image's path relative to the sidecar's folder (`../images/chelsea.png`; the
    /// recorded `image` is as given, relative to the working directory of the time). Relative,
    /// not absolute, so the sidecar is the same bytes in every clone of a tree.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_from_sidecar: Option<PathBuf>,
    /// The input image's absolute path, as sidecars of convlens before `image_from_sidecar`
    /// recorded it (read, never written: it differs from one machine to the next).
    #[serde(default, skip_serializing)]
    pub image_absolute: Option<PathBuf>,
    /// The figure's scale factor (1-4).
    pub scale: u32,
    /// The figure's file name (beside the sidecar; PNG, or JPEG for `.jpg`/`.jpeg`).
    pub png: String,
    /// SHA-256 of the figure's bytes.
    pub png_sha256: String,
    /// What was found (class, probability, sparsity, losses ...); not read back.
    pub result: serde_json::Value,
}

/// A rendered figure and what was computed for it.
pub struct Rendered {
    pub image: RgbImage,
    /// The CAM, for a CAM figure.
    pub cam: Option<Cam>,
    /// A summary for the sidecar's `result` and `--json` output.
    pub result: serde_json::Value,
}

/// A figure written to disk.
#[derive(Clone, Debug)]
pub struct Exported {
    pub png: PathBuf,
    pub sidecar: PathBuf,
    pub result: serde_json::Value,
    /// The CAM, for a CAM figure.
    pub cam: Option<Cam>,
}

/// Checks the scale factor (1-4).
pub fn check_scale(scale: u32) -> Result<()> {
    if (1..=4).contains(&scale) {
        Ok(())
    } else {
        Err(Error::Model(format!(
            "scale {scale} is out of range: use 1, 2, 3 or 4"
        )))
    }
}

/// A class by index or by name (case-insensitive, exact), against the model's labels; an
/// unknown class lists the valid ones (or their range, for many).
pub fn resolve_class(labels: &[String], class: &str) -> Result<usize> {
    let class = class.trim();
    if let Ok(i) = class.parse::<usize>() {
        if i < labels.len() {
            return Ok(i);
        }
        return Err(Error::Model(format!(
            "class {i} is out of range: the model has {} classes (0..{})",
            labels.len(),
            labels.len().saturating_sub(1)
        )));
    }
    let key = class.to_lowercase();
    if let Some(i) = labels.iter().position(|l| l.to_lowercase() == key) {
        return Ok(i);
    }
    let close: Vec<&str> = labels
        .iter()
        .filter(|l| l.to_lowercase().contains(&key))
        .map(String::as_str)
        .take(10)
        .collect();
    let hint = if !close.is_empty() {
        format!("did you mean: {}?", close.join(", "))
    } else if labels.len() <= 50 {
        format!("the classes are: {}", labels.join(", "))
    } else {
        format!(
            "give a name from the model's labels or an index 0..{}",
            labels.len() - 1
        )
    };
    Err(Error::Model(format!("unknown class `{class}`; {hint}")))
}

fn file_label(path: &Path) -> String {
    path.file_name().map_or_else(
        || path.display().to_string(),
        |n| n.to_string_lossy().into_owned(),
    )
}

/// Computes and renders a figure at `scale`. `progress(done, total)` reports long work
/// (Score-CAM batches, filter tiles) and cancels it ([`Error::Cancelled`]) by returning `false`.
pub fn render(
    model: &Model,
    request: &FigureRequest,
    scale: u32,
    progress: &mut dyn FnMut(usize, usize) -> bool,
) -> Result<Rendered> {
    request.validate(scale)?;
    let m = &model.spec.manifest;
    match request {
        FigureRequest::Cam(r) => {
            let original = crate::data::preprocess::load_rgb(&r.image)?;
            let pre = &model.spec.preprocess;
            let input = pre.to_tensor(&pre.apply(&original), &model.device)?;
            let opts = r.options().for_model(model);
            let cam = cam::compute_with_progress(&model.network, &input, &opts, progress).map_err(
                |e| match e {
                    crate::Error::NonFinite { what, value } => crate::Error::NonFinite {
                        what: format!("{}, {what}", model.output_name(&r.image.to_string_lossy())),
                        value,
                    },
                    other => other,
                },
            )?;
            let class_name = model
                .spec
                .labels
                .get(cam.class)
                .cloned()
                .unwrap_or_else(|| format!("class {}", cam.class));
            let fig = figures::CamFigure {
                original: &original,
                placement: CropPlacement::new(original.width(), original.height(), pre),
                cam: &cam,
                title: format!("{class_name}  (p = {:.3})", cam.prob),
                subtitle: format!(
                    "{} · layer {} · class {} · {} · {}",
                    method_title(cam.method),
                    cam.layer,
                    cam.class,
                    m.name,
                    file_label(&r.image)
                ),
                colormap: r.colormap,
                alpha: r.alpha,
            };
            let image = figures::cam_figure(&fig, scale);
            let result = serde_json::json!({
                "class": cam.class,
                "class_name": class_name,
                "prob": cam.prob,
                "layer": cam.layer,
                "method": cam.method.name(),
                "lowres_size": [cam.lowres_size.0, cam.lowres_size.1],
            });
            let mut result = result;
            if let Some(c) = &cam.completeness {
                result["completeness"] = serde_json::json!(c);
            }
            Ok(Rendered {
                image,
                cam: Some(cam),
                result,
            })
        }
        FigureRequest::Activations(r) => {
            let input = model.spec.preprocess.load(&r.image, &model.device)?;
            let acts = activations::layer_activations(&model.network, &input, &r.layer)?;
            let sparsity: LayerSparsity = acts.sparsity();
            let title = format!("{} activations · {}", r.layer, file_label(&r.image));
            let subtitle = format!(
                "{} · {} channels of {}×{} · blank {:.1}% · mean {:.3} · {} scale · {}",
                m.name,
                acts.channels,
                acts.height,
                acts.width,
                100.0 * sparsity.blank_fraction,
                sparsity.mean,
                if r.grid.shared_scale {
                    "shared"
                } else {
                    "per-channel"
                },
                r.grid.colormap
            );
            let image = figures::activations_figure(&acts, &r.grid, &title, &subtitle, scale);
            let result = serde_json::json!({
                "channels": acts.channels,
                "height": acts.height,
                "width": acts.width,
                "blank_fraction": sparsity.blank_fraction,
                "mean": sparsity.mean,
                "active_fraction": sparsity.active_fraction,
            });
            Ok(Rendered {
                image,
                cam: None,
                result,
            })
        }
        FigureRequest::Filters(r) => {
            let total = r.filters.len();
            let patterns =
                filters::filter_patterns_with(model, &r.layer, &r.filters, &r.options, &mut |p| {
                    match p {
                        FilterProgress::Step { first, .. } => progress(first, total),
                        FilterProgress::Tile { index, .. } => progress(index + 1, total),
                    }
                })?;
            let o = &r.options;
            let title = format!("{} filter patterns · {}", r.layer, filter_span(&r.filters));
            let subtitle = match o.method {
                FilterMethod::Chollet => format!(
                    "{} · {}: gradient ascent, {} steps of {} at {} px, seed {}",
                    m.name,
                    o.method,
                    o.ascent.steps,
                    trim(o.ascent.step_size),
                    o.size,
                    o.seed
                ),
                FilterMethod::Lucid => format!(
                    "{} · lucid: Fourier image, decorrelated colour, jitter/scale/rotate, \
                     {} Adam steps of lr {} at {} px, seed {}",
                    m.name,
                    o.ascent.steps,
                    trim(o.lucid.clone().unwrap_or_default().learning_rate as f32),
                    o.size,
                    o.seed
                ),
            };
            let image = figures::filters_figure(&patterns, r.cols, &title, &subtitle, scale);
            let result = serde_json::json!({
                "final_loss": patterns.iter().map(|p| p.final_loss).collect::<Vec<_>>(),
            });
            Ok(Rendered {
                image,
                cam: None,
                result,
            })
        }
    }
}

fn trim(v: f32) -> String {
    let t = format!("{v:.4}");
    t.trim_end_matches('0').trim_end_matches('.').to_string()
}

/// `0..64` style description of a filter list (or a count when it is not a range).
fn filter_span(filters: &[usize]) -> String {
    match (filters.first(), filters.last()) {
        (Some(&a), Some(&b)) if filters.windows(2).all(|w| w[1] == w[0] + 1) => {
            format!("filters {a}–{b}")
        }
        _ => format!("{} filters", filters.len()),
    }
}

/// The display name of a CAM method.
pub fn method_title(m: CamMethod) -> &'static str {
    m.title()
}

/// A figure's PNG bytes (deterministic: same pixels, same bytes).
pub fn png_bytes(img: &RgbImage) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    image::codecs::png::PngEncoder::new(&mut out)
        .write_image(
            img.as_raw(),
            img.width(),
            img.height(),
            image::ExtendedColorType::Rgb8,
        )
        .map_err(|e| Error::Model(format!("PNG encoding failed: {e}")))?;
    Ok(out)
}

use image::ImageEncoder;

/// The file extensions a figure can be written as.
pub const FIGURE_EXTENSIONS: [&str; 3] = ["png", "jpg", "jpeg"];

/// The image format a figure path asks for by its extension, or an error listing the
/// supported ones.
fn figure_format(path: &Path) -> Result<image::ImageFormat> {
    let ext = path
        .extension()
        .map(|e| e.to_string_lossy().to_ascii_lowercase())
        .unwrap_or_default();
    match ext.as_str() {
        "png" => Ok(image::ImageFormat::Png),
        "jpg" | "jpeg" => Ok(image::ImageFormat::Jpeg),
        _ => Err(Error::Model(format!(
            "{}: a figure is written as {} (by the file's extension); `.{ext}` is not one",
            path.display(),
            FIGURE_EXTENSIONS.map(|e| format!(".{e}")).join(", ")
        ))),
    }
}

/// Checks that a figure can be written at `path` (a supported extension).
pub fn check_figure_path(path: &Path) -> Result<()> {
    figure_format(path).map(|_| ())
}

/// A figure's bytes in the format its path's extension names (PNG, or JPEG at quality 95).
pub fn figure_bytes(img: &RgbImage, path: &Path) -> Result<Vec<u8>> {
    match figure_format(path)? {
        image::ImageFormat::Jpeg => {
            let mut out = Vec::new();
            image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, 95)
                .write_image(
                    img.as_raw(),
                    img.width(),
                    img.height(),
                    image::ExtendedColorType::Rgb8,
                )
                .map_err(|e| Error::Model(format!("JPEG encoding failed: {e}")))?;
            Ok(out)
        }
        _ => png_bytes(img),
    }
}

/// The sidecar path of a figure: `F.png` -> `F.json`.
pub fn sidecar_path(png: &Path) -> PathBuf {
    png.with_extension("json")
}

/// Renders a figure and writes it to `out` (PNG or JPEG, by its extension) with its sidecar
/// beside it. `model_source` is what `--model` was given (recorded for [`reproduce`]). An
/// `out` (or sidecar) that is the input image is refused before any work.
pub fn export(
    model: &Model,
    model_source: &str,
    request: &FigureRequest,
    scale: u32,
    out: &Path,
    progress: &mut dyn FnMut(usize, usize) -> bool,
) -> Result<Exported> {
    check_figure_path(out)?;
    let sidecar_file = sidecar_path(out);
    let inputs: Vec<&Path> = request.image().into_iter().collect();
    check_not_input(out, &inputs)?;
    check_not_input(&sidecar_file, &inputs)?;
    let rendered = render(model, request, scale, progress)?;
    let bytes = figure_bytes(&rendered.image, out)?;
    write_atomic(out, &bytes)?;
    let sidecar = Sidecar {
        convlens_version: VERSION.to_string(),
        model: ModelRef {
            name: model.spec.manifest.name.clone(),
            source: model_source.to_string(),
            weights_sha256: model.weights_hash.clone(),
        },
        device: device_name(&model.device),
        cpu_kernels: model.device.is_cpu().then(crate::ops::cpu_kernels),
        figure: request.clone(),
        image_sha256: request.image().map(file_sha256).transpose()?,
        image_from_sidecar: request
            .image()
            .and_then(|image| relative_path(parent_or_here(&sidecar_file), image)),
        image_absolute: None,
        scale,
        png: file_label(out),
        png_sha256: sha256_hex(&bytes),
        result: rendered.result.clone(),
    };
    crate::fsutil::write_json_atomic(&sidecar_file, &sidecar)?;
    Ok(Exported {
        png: out.to_path_buf(),
        sidecar: sidecar_file,
        result: rendered.result,
        cam: rendered.cam,
    })
}

/// `cpu`, `cuda:N` or `metal:N`.
pub fn device_name(device: &candle_core::Device) -> String {
    match device.location() {
        candle_core::DeviceLocation::Cpu => "cpu".into(),
        candle_core::DeviceLocation::Cuda { gpu_id } => format!("cuda:{gpu_id}"),
        candle_core::DeviceLocation::Metal { gpu_id } => format!("metal:{gpu_id}"),
    }
}

pub(crate) fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::{Digest, Sha256};
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The kinds of figure whose pixels follow from their sidecar, so `reproduce` renders them.
const REPRODUCIBLE: [&str; 3] = ["cam", "activations", "filters"];

/// Reads a figure's sidecar. The sidecar of another kind of figure (`sanity`,
/// `faithfulness-summary` ...: numbers computed once, kept in the sidecar) or a JSON file
/// without a `kind` is refused by name, not by the first field serde misses.
pub fn read_sidecar(path: &Path) -> Result<Sidecar> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    let json = |e| Error::Json {
        path: path.to_path_buf(),
        source: e,
    };
    let value: serde_json::Value = serde_json::from_str(&text).map_err(json)?;
    match value.get("kind").and_then(|k| k.as_str()) {
        Some(kind) if REPRODUCIBLE.contains(&kind) => {}
        Some(kind) => {
            return Err(Error::Model(format!(
                "{}: the sidecar of a `{kind}` figure: reproduce renders {} figures again from \
                 their sidecars; a `{kind}` figure's numbers are in its sidecar, and its \
                 command makes it again",
                path.display(),
                REPRODUCIBLE.join(", ")
            )));
        }
        None => {
            return Err(Error::Model(format!(
                "{}: not the sidecar of a convlens figure (no `kind` field)",
                path.display()
            )));
        }
    }
    serde_json::from_str(&text).map_err(json)
}

/// The folder of a file (`.` for a bare file name).
fn parent_or_here(file: &Path) -> &Path {
    match file.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

/// Where a sidecar's image is now: `recorded` as it is (relative to the working directory),
/// else at `from_sidecar` (relative to the sidecar's folder `dir`), else relative to `dir` or
/// one of the folders above it (the working directory the figure was made from usually holds
/// the figure), else at the `absolute` path older sidecars recorded; an error naming the
/// places tried if none exists. The caller checks the image's hash, so a wrong file found this
/// way is refused.
fn find_image(
    recorded: &Path,
    dir: &Path,
    (from_sidecar, absolute): (Option<&Path>, Option<&Path>),
    sidecar: &Path,
) -> Result<PathBuf> {
    let dir = std::fs::canonicalize(dir).unwrap_or_else(|_| dir.to_path_buf());
    let candidates: Vec<PathBuf> = std::iter::once(recorded.to_path_buf())
        .chain(from_sidecar.map(|r| dir.join(r)))
        .chain(dir.ancestors().map(|d| d.join(recorded)))
        .chain(absolute.map(Path::to_path_buf))
        .collect();
    if let Some(found) = candidates.iter().find(|p| p.is_file()) {
        return Ok(found.clone());
    }
    Err(Error::Model(format!(
        "{}: the figure's image {} was not found relative to the working directory, to the \
         sidecar's folder {} or the folders above it{}",
        sidecar.display(),
        recorded.display(),
        dir.display(),
        from_sidecar
            .map(|r| dir.join(r))
            .as_deref()
            .or(absolute)
            .map_or_else(String::new, |a| format!(", nor at {}", a.display()))
    )))
}

/// The outcome of [`reproduce`].
#[derive(Clone, Debug)]
pub struct Reproduced {
    pub png: PathBuf,
    /// Whether the new figure's bytes (in the recorded format) hash to the sidecar's
    /// `png_sha256`.
    pub identical: bool,
    /// The convlens version that made the figure, when it is not this one.
    pub made_by_other_version: Option<String>,
    /// The recorded CPU kernels' instruction set, when this run's differs from it.
    pub made_with_other_cpu_kernels: Option<String>,
    /// How the new figure differs from the recorded file beside the sidecar, when it is not
    /// identical and that file decodes to the same size.
    pub difference: Option<PixelDifference>,
}

/// How two figures of the same size differ, pixel by pixel.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PixelDifference {
    /// Pixels with any channel different.
    pub pixels: usize,
    /// All pixels of the figure.
    pub of: usize,
    /// The largest difference of one channel (0-255).
    pub max: u8,
}

impl PixelDifference {
    /// `a` against `b`; `None` when their sizes differ.
    pub fn between(a: &RgbImage, b: &RgbImage) -> Option<Self> {
        if a.dimensions() != b.dimensions() {
            return None;
        }
        let (mut pixels, mut max) = (0, 0u8);
        for (p, q) in a.pixels().zip(b.pixels()) {
            let d =
                p.0.iter()
                    .zip(q.0)
                    .map(|(x, y)| x.abs_diff(y))
                    .max()
                    .unwrap_or(0);
            pixels += usize::from(d > 0);
            max = max.max(d);
        }
        Some(Self {
            pixels,
            of: a.pixels().len(),
            max,
        })
    }
}

/// Renders the figure a sidecar describes again and writes it to `out` (default: beside the
/// sidecar, `<stem>.reproduced.png`, or `.jpg` for a JPEG figure); an `out` that is the
/// sidecar, the recorded figure or the image is refused. The model is resolved from the
/// recorded source and must have the recorded weights hash; the image is looked for as
/// recorded, then relative to the sidecar's folder, then at its recorded absolute path
/// ([`find_image`]), and must have the recorded hash. The options are checked
/// ([`FigureRequest::validate`]) before anything is loaded. `device` overrides the recorded one.
pub fn reproduce(
    sidecar_file: &Path,
    out: Option<&Path>,
    device: Option<candle_core::Device>,
    progress: &mut dyn FnMut(usize, usize) -> bool,
) -> Result<Reproduced> {
    let sc = read_sidecar(sidecar_file)?;
    sc.figure
        .validate(sc.scale)
        .map_err(|e| Error::Model(format!("{}: {e}", sidecar_file.display())))?;
    let dir = parent_or_here(sidecar_file);
    let out = out.map_or_else(
        || {
            let stem = sidecar_file
                .file_stem()
                .map_or_else(|| "figure".into(), |s| s.to_string_lossy().into_owned());
            let ext = Path::new(&sc.png)
                .extension()
                .map_or_else(|| "png".into(), |e| e.to_string_lossy().into_owned());
            dir.join(format!("{stem}.reproduced.{ext}"))
        },
        Path::to_path_buf,
    );
    check_figure_path(&out)?;
    let mut request = sc.figure.clone();
    if let Some(image) = request.image_mut() {
        let places = (
            sc.image_from_sidecar.as_deref(),
            sc.image_absolute.as_deref(),
        );
        *image = find_image(image, dir, places, sidecar_file)?;
        let found = file_sha256(image)?;
        if Some(&found) != sc.image_sha256.as_ref() {
            return Err(Error::Model(format!(
                "{}: the image differs from the one the figure was made from (sha256 {found}, \
                 recorded {})",
                image.display(),
                sc.image_sha256.as_deref().unwrap_or("none")
            )));
        }
    }
    // Neither the sidecar, nor the figure it records, nor the image may be replaced.
    let recorded_figure = dir.join(&sc.png);
    let inputs: Vec<&Path> = [sidecar_file, &recorded_figure]
        .into_iter()
        .chain(request.image())
        .collect();
    check_not_input(&out, &inputs)?;
    let spec =
        crate::zoo::resolve(&sc.model.source).or_else(|_| crate::zoo::resolve(&sc.model.name))?;
    let device = match device {
        Some(d) => d,
        None => sc
            .device
            .parse::<crate::device::DeviceChoice>()
            .map_err(Error::Device)?
            .open()?,
    };
    let model = spec.load(&device)?;
    if model.weights_hash != sc.model.weights_sha256 {
        return Err(Error::Model(format!(
            "{}: weights sha256 {} differ from the recorded {}",
            model.spec.weights_path.display(),
            model.weights_hash,
            sc.model.weights_sha256
        )));
    }
    let rendered = render(&model, &request, sc.scale, progress)?;
    let bytes = figure_bytes(&rendered.image, &out)?;
    write_atomic(&out, &bytes)?;
    // Compared in the recorded figure's format, whatever format `out` asks for.
    let recorded = Path::new(&sc.png);
    let identical = if figure_format(recorded).ok() == figure_format(&out).ok() {
        sha256_hex(&bytes) == sc.png_sha256
    } else {
        sha256_hex(&figure_bytes(&rendered.image, recorded)?) == sc.png_sha256
    };
    let here = device.is_cpu().then(crate::ops::cpu_kernels);
    let difference = if identical {
        None
    } else {
        crate::data::decode::load_rgb(&recorded_figure)
            .ok()
            .and_then(|before| PixelDifference::between(&rendered.image, &before))
    };
    Ok(Reproduced {
        png: out,
        identical,
        made_by_other_version: (sc.convlens_version != VERSION).then_some(sc.convlens_version),
        made_with_other_cpu_kernels: sc.cpu_kernels.filter(|k| here.as_ref() != Some(k)),
        difference,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pixel_difference_counts_pixels_and_the_largest_channel_step() {
        let a = RgbImage::from_pixel(4, 3, image::Rgb([10, 20, 30]));
        let mut b = a.clone();
        assert_eq!(
            PixelDifference::between(&a, &b),
            Some(PixelDifference {
                pixels: 0,
                of: 12,
                max: 0
            })
        );
        b.get_pixel_mut(0, 0).0 = [13, 20, 30];
        b.get_pixel_mut(3, 2).0 = [10, 0, 35];
        assert_eq!(
            PixelDifference::between(&a, &b),
            Some(PixelDifference {
                pixels: 2,
                of: 12,
                max: 20
            })
        );
        assert_eq!(PixelDifference::between(&a, &RgbImage::new(3, 4)), None);
    }

    #[test]
    fn classes_resolve_by_index_and_name() {
        let labels: Vec<String> = ["tabby", "Egyptian cat", "espresso"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        assert_eq!(resolve_class(&labels, "2").unwrap(), 2);
        assert_eq!(resolve_class(&labels, "egyptian CAT").unwrap(), 1);
        let err = resolve_class(&labels, "cat").unwrap_err().to_string();
        assert!(
            err.contains("did you mean") && err.contains("Egyptian cat"),
            "{err}"
        );
        let err = resolve_class(&labels, "zebra").unwrap_err().to_string();
        assert!(err.contains("tabby, Egyptian cat, espresso"), "{err}");
        assert!(
            resolve_class(&labels, "3")
                .unwrap_err()
                .to_string()
                .contains("0..2")
        );
    }

    #[test]
    fn requests_round_trip_through_json() {
        let r = FigureRequest::Cam(CamRequest {
            image: "x.png".into(),
            layer: "head".into(),
            method: CamMethod::GradCamPlusPlus,
            class: Some(3),
            score: CamScore::Logit,
            colormap: Colormap::Jet,
            alpha: 0.4,
            smooth: Default::default(),
            attribution: Default::default(),
        });
        let v = serde_json::to_value(&r).unwrap();
        assert_eq!(v["kind"], "cam");
        assert_eq!(v["method"], "gradcam++");
        assert_eq!(v["colormap"], "jet");
        assert_eq!(serde_json::from_value::<FigureRequest>(v).unwrap(), r);
        let f = FigureRequest::Filters(FiltersRequest {
            layer: "blocks.4".into(),
            filters: vec![0, 1],
            cols: 8,
            options: FilterOptions::default(),
        });
        let v = serde_json::to_value(&f).unwrap();
        assert_eq!(v["seed"], 0);
        assert_eq!(v["method"], "chollet");
        assert_eq!(serde_json::from_value::<FigureRequest>(v).unwrap(), f);
    }
}
