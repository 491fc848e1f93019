//! The dataset map: every image's pooled features projected to 2-D (PCA or t-SNE), with its
//! path, label and the model's prediction; rendered as a scatter figure and written with a JSON
//! file holding every point.

use std::path::{Path, PathBuf};

use candle_core::Tensor;
use image::{Rgb, RgbImage};
use serde::{Deserialize, Serialize};

use super::dataset::{DatasetFeatures, relative};
use super::pca::Pca;
use super::tsne::{TsneOptions, tsne};
use crate::cancel::CancelToken;
use crate::export::canvas::{Align, Canvas, INK, MUTED};
use crate::export::{figure_bytes, naming::unused_path, sidecar_path};
use crate::fsutil::{write_atomic, write_json_atomic};
use crate::{Error, Result};

/// How the features are projected to 2-D.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Method {
    /// The first two principal components (linear, exact, instant).
    #[default]
    Pca,
    /// Barnes-Hut t-SNE (non-linear: keeps neighbourhoods, so clusters separate).
    Tsne,
}

impl Method {
    /// Every method, in menu order.
    pub const ALL: [Method; 2] = [Method::Pca, Method::Tsne];

    /// The name used on the command line and in files.
    pub fn name(self) -> &'static str {
        match self {
            Method::Pca => "pca",
            Method::Tsne => "tsne",
        }
    }
}

/// How the features are projected: the method and, for t-SNE, its settings.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Projection {
    pub method: Method,
    /// Used when `method` is [`Method::Tsne`].
    pub tsne: TsneOptions,
}

impl Projection {
    /// Progress steps of a projection of `n` images (PCA: one; t-SNE: the neighbour search of
    /// every image, then the iterations).
    pub fn steps(&self, n: usize) -> usize {
        match self.method {
            Method::Pca => 1,
            Method::Tsne => n + self.tsne.epochs,
        }
    }
}

/// What colours the points.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum ColorBy {
    /// The folder's label.
    #[default]
    Class,
    /// The model's top class.
    Prediction,
    /// Whether the prediction is the label (a model trained on the folder's classes).
    Correct,
}

impl ColorBy {
    /// Every choice, in menu order.
    pub const ALL: [ColorBy; 3] = [ColorBy::Class, ColorBy::Prediction, ColorBy::Correct];

    /// The name shown in menus and written to files.
    pub fn name(self) -> &'static str {
        match self {
            ColorBy::Class => "class",
            ColorBy::Prediction => "prediction",
            ColorBy::Correct => "correct",
        }
    }
}

/// One image on the map.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MapPoint {
    /// The image, relative to the dataset folder.
    pub path: PathBuf,
    /// Its label: an index into [`DatasetMap::classes`], and the name.
    pub label: usize,
    pub class: String,
    /// The model's top class and its probability (absent for a feature-only model).
    pub prediction: Option<String>,
    pub probability: Option<f32>,
    /// Whether the prediction is the label (only when the model has the folder's classes).
    pub correct: Option<bool>,
    /// Map coordinates.
    pub x: f32,
    pub y: f32,
}

/// A projected dataset: what the figure shows and the JSON holds.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DatasetMap {
    pub convlens_version: String,
    /// The dataset folder as given.
    pub dataset: PathBuf,
    /// The model's name and the SHA-256 of its weights.
    pub model: String,
    pub weights_sha256: String,
    pub method: Method,
    /// The t-SNE settings (t-SNE maps only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tsne: Option<TsneOptions>,
    /// The folder's classes (sorted subfolder names).
    pub classes: Vec<String>,
    /// For PCA, the share of the variance each axis carries.
    pub explained_variance_ratio: Option<[f32; 2]>,
    /// Every image that was read, in the folder's order (class, then path).
    pub points: Vec<MapPoint>,
}

impl DatasetMap {
    /// The colour group of each point under `by`, with the group names (at most
    /// [`PALETTE`]`.len()` groups: the rarest predicted classes are pooled into "other").
    /// Colouring by correctness needs predictions in the folder's classes.
    pub fn groups(&self, by: ColorBy) -> Result<(Vec<usize>, Vec<String>)> {
        match by {
            ColorBy::Class => Ok((
                self.points.iter().map(|p| p.label).collect(),
                self.classes.clone(),
            )),
            ColorBy::Correct => {
                if self.points.iter().any(|p| p.correct.is_none()) {
                    return Err(Error::InvalidOption(format!(
                        "colour by correct needs a model trained on {}'s classes ({}); \
                         model `{}` predicts other classes",
                        self.dataset.display(),
                        self.classes.join(", "),
                        self.model
                    )));
                }
                Ok((
                    self.points
                        .iter()
                        .map(|p| usize::from(p.correct != Some(true)))
                        .collect(),
                    vec!["correct".into(), "wrong".into()],
                ))
            }
            ColorBy::Prediction => {
                let names: Vec<String> = self
                    .points
                    .iter()
                    .map(|p| p.prediction.clone().unwrap_or_else(|| "none".into()))
                    .collect();
                let mut counts: Vec<(String, usize)> = Vec::new();
                for n in &names {
                    match counts.iter_mut().find(|(c, _)| c == n) {
                        Some((_, k)) => *k += 1,
                        None => counts.push((n.clone(), 1)),
                    }
                }
                counts.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
                let keep = if counts.len() > PALETTE.len() {
                    PALETTE.len() - 1
                } else {
                    counts.len()
                };
                let mut groups: Vec<String> = counts[..keep].iter().map(|c| c.0.clone()).collect();
                if counts.len() > keep {
                    groups.push("other".into());
                }
                let index = names
                    .iter()
                    .map(|n| groups.iter().position(|g| g == n).unwrap_or(keep))
                    .collect();
                Ok((index, groups))
            }
        }
    }
}

/// Projects the features of `ds` as `projection` says: `[n, 2]`, with PCA's explained
/// variance.
pub fn project(
    ds: &DatasetFeatures,
    projection: Projection,
    progress: &mut dyn FnMut(usize, usize),
    cancel: &CancelToken,
) -> Result<(Tensor, Option<[f32; 2]>)> {
    let x = &ds.features.x;
    match projection.method {
        Method::Pca => {
            let pca = Pca::fit(x, 2)?;
            let ratio = [
                pca.explained_variance_ratio[0],
                pca.explained_variance_ratio[1],
            ];
            Ok((pca.transform(x)?, Some(ratio)))
        }
        Method::Tsne => Ok((tsne(x, projection.tsne, progress, cancel)?, None)),
    }
}

/// The map of `ds` projected as `projection` says (see [`project`]); `dataset` is the folder
/// as given.
pub fn build_map(
    ds: &DatasetFeatures,
    dataset: &Path,
    model: (&str, &str),
    projection: Projection,
    progress: &mut dyn FnMut(usize, usize),
    cancel: &CancelToken,
) -> Result<DatasetMap> {
    let (xy, explained) = project(ds, projection, progress, cancel)?;
    let xy = xy.to_vec2::<f32>()?;
    let same = ds.same_classes();
    let points = xy
        .iter()
        .enumerate()
        .map(|(i, p)| {
            let label = ds.features.labels[i] as usize;
            let pred = ds.predictions.get(i);
            MapPoint {
                path: relative(&ds.features.paths[i], dataset),
                label,
                class: ds.classes.get(label).cloned().unwrap_or_default(),
                prediction: ds.predicted_class(i).map(str::to_string),
                probability: pred.map(|p| p.1),
                correct: pred.filter(|_| same).map(|p| p.0 == label),
                x: p[0],
                y: p[1],
            }
        })
        .collect();
    Ok(DatasetMap {
        convlens_version: crate::export::VERSION.to_string(),
        dataset: dataset.to_path_buf(),
        model: model.0.to_string(),
        weights_sha256: model.1.to_string(),
        method: projection.method,
        tsne: (projection.method == Method::Tsne).then_some(projection.tsne),
        classes: ds.classes.clone(),
        explained_variance_ratio: explained,
        points,
    })
}

/// Colours of the groups (matplotlib's tab10).
pub const PALETTE: [[u8; 3]; 10] = [
    [31, 119, 180],
    [255, 127, 14],
    [44, 160, 44],
    [214, 39, 40],
    [148, 103, 189],
    [140, 86, 75],
    [227, 119, 194],
    [127, 127, 127],
    [188, 189, 34],
    [23, 190, 207],
];

/// The colour of group `g` (green and red for correct and wrong).
pub fn group_color(by: ColorBy, g: usize) -> [u8; 3] {
    match (by, g) {
        (ColorBy::Correct, 0) => PALETTE[2],
        (ColorBy::Correct, _) => PALETTE[3],
        _ => PALETTE[g % PALETTE.len()],
    }
}

/// Side of the square plot area of the figure, in pixels at scale 1.
const PLOT: u32 = 640;

/// The map as a scatter figure: title, the points (a 5-pixel disc each) in a square plot
/// with a frame, and a legend of the groups on the right.
pub fn render_map(map: &DatasetMap, by: ColorBy) -> Result<RgbImage> {
    let (groups, names) = map.groups(by)?;
    let (margin, legend_w, title_h) = (24u32, 220u32, 70u32);
    let mut c = Canvas::new(margin * 2 + PLOT + legend_w, title_h + PLOT + margin * 2);
    let title = format!(
        "{} of {} ({} images) by {}, coloured by {}",
        map.method.name().to_uppercase(),
        map.dataset.display(),
        map.points.len(),
        map.model,
        by.name()
    );
    c.text(&title, margin as f32, 30.0, 16.0, INK, Align::Left);
    if let Some([a, b]) = map.explained_variance_ratio {
        let sub = format!(
            "axes: PC1 {:.1} %, PC2 {:.1} % of the variance",
            a * 100.0,
            b * 100.0
        );
        c.text(&sub, margin as f32, 50.0, 12.0, MUTED, Align::Left);
    }
    let (x0, y0) = (i64::from(margin), i64::from(title_h));
    c.outline(x0 - 1, y0 - 1, PLOT + 2, PLOT + 2, 1, Rgb(MUTED.0));
    let (mut lo, mut hi) = ([f32::INFINITY; 2], [f32::NEG_INFINITY; 2]);
    for p in &map.points {
        for (k, v) in [p.x, p.y].into_iter().enumerate() {
            lo[k] = lo[k].min(v);
            hi[k] = hi[k].max(v);
        }
    }
    let span = |k: usize| (hi[k] - lo[k]).max(1e-12);
    let inner = (PLOT - 16) as f32;
    for (p, &g) in map.points.iter().zip(&groups) {
        let px = x0 + 8 + ((p.x - lo[0]) / span(0) * inner).round() as i64;
        let py = y0 + 8 + ((hi[1] - p.y) / span(1) * inner).round() as i64;
        let color = Rgb(group_color(by, g));
        for (dx, dy, w, h) in [(-1, -2, 3, 5), (-2, -1, 5, 3)] {
            c.fill(px + dx, py + dy, w, h, color);
        }
    }
    let lx = x0 + i64::from(PLOT) + 20;
    for (g, name) in names.iter().enumerate() {
        let y = y0 + 10 + 22 * g as i64;
        c.fill(lx, y, 12, 12, Rgb(group_color(by, g)));
        let count = groups.iter().filter(|&&k| k == g).count();
        c.text(
            &format!("{name} ({count})"),
            (lx + 18) as f32,
            y as f32,
            13.0,
            INK,
            Align::Left,
        );
    }
    Ok(c.img)
}

/// Writes the figure to `out` (or, when `out` or its JSON is taken, the first free
/// `STEM_2.png`, ...) and the map's JSON beside it (`STEM.json`). Returns both paths.
pub fn write_map(map: &DatasetMap, image: &RgbImage, out: &Path) -> Result<(PathBuf, PathBuf)> {
    let png = unused_path(out);
    let json = sidecar_path(&png);
    let bytes = figure_bytes(image, &png)?;
    write_atomic(&png, &bytes)?;
    write_json_atomic(&json, map)?;
    Ok((png, json))
}
