//! Channel examples: the images of a folder that excite each channel of a layer most (the
//! Deep Visualization Toolbox's and OpenAI Microscope's "dataset examples"), with where in the
//! image the channel fires and the input patch its receptive field sees there.
//!
//! One streaming pass over the folder in batches: each image's map of every channel is reduced
//! to its maximum (with the position of the first maximum) and its mean, and only a top-k heap
//! per channel and ranking is kept, so memory does not grow with the folder (k x channels
//! entries, plus two batches of inputs and one batch of the layer's output). Ties rank the
//! earlier image of the listing first. Results are cached per (model weights, layer,
//! preprocessing, folder content) by [`super::examples_cache`].

use std::cmp::{Ordering, Reverse};
use std::collections::BinaryHeap;

use candle_core::{Device, Tensor};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use super::receptive::{ReceptiveField, receptive_field};
use crate::cancel::CancelToken;
use crate::data::listing::Listing;
use crate::zoo::Model;
use crate::{Error, Result};

/// The most examples kept per channel.
pub const MAX_TOP: usize = 64;

/// The most images per forward pass (`--batch`): a larger batch only costs memory.
pub const MAX_BATCH: usize = 256;

/// How the images of a channel are ranked.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Rank {
    /// By the channel's largest activation anywhere in the image.
    #[default]
    Max,
    /// By the channel's mean activation over the image.
    Mean,
}

impl std::str::FromStr for Rank {
    type Err = String;

    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s.to_ascii_lowercase().as_str() {
            "max" => Ok(Rank::Max),
            "mean" => Ok(Rank::Mean),
            _ => Err(format!("unknown ranking `{s}`; use max or mean")),
        }
    }
}

impl Rank {
    /// `"max"` or `"mean"`.
    pub fn name(self) -> &'static str {
        match self {
            Rank::Max => "max",
            Rank::Mean => "mean",
        }
    }
}

/// One image that excites a channel.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Hit {
    /// The image's path relative to the folder.
    pub image: String,
    /// Its class, for a labelled folder.
    pub class: Option<String>,
    /// The channel's largest activation in the image.
    pub max: f32,
    /// The channel's mean activation over the image.
    pub mean: f32,
    /// Map position `[y, x]` of the (first) largest activation.
    pub at: [usize; 2],
    /// The receptive field there, `[x0, y0, x1, y1]` in network-input pixels (cut at the
    /// border; the input is the model's preprocessed view of the image).
    pub patch: [u32; 4],
}

impl Hit {
    /// The value the ranking `rank` sorts by.
    pub fn score(&self, rank: Rank) -> f32 {
        match rank {
            Rank::Max => self.max,
            Rank::Mean => self.mean,
        }
    }
}

/// A channel's best images, best first, by each ranking.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ChannelTop {
    pub by_max: Vec<Hit>,
    pub by_mean: Vec<Hit>,
}

impl ChannelTop {
    /// The list for `rank`.
    pub fn ranked(&self, rank: Rank) -> &[Hit] {
        match rank {
            Rank::Max => &self.by_max,
            Rank::Mean => &self.by_mean,
        }
    }
}

/// Every channel's examples for one layer over one folder.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LayerExamples {
    /// The stage id, e.g. `blocks.4`.
    pub layer: String,
    /// Map size `[height, width]` of the layer for the model's input.
    pub map: [usize; 2],
    /// Side of the (square) network input, pixels.
    pub input_size: u32,
    /// The receptive field of the layer's units.
    pub field: ReceptiveField,
    /// Examples kept per channel and ranking.
    pub top: usize,
    /// Images that went through the network.
    pub scanned: usize,
    /// Images that could not be read, as `path: reason`.
    pub skipped: Vec<String>,
    /// Per channel, in channel order.
    pub channels: Vec<ChannelTop>,
}

/// A heap entry: ordered by score, then the earlier image first.
#[derive(Clone, Copy, Debug)]
struct Entry {
    score: f32,
    image: usize,
    max: f32,
    mean: f32,
    at: (usize, usize),
}

impl Ord for Entry {
    fn cmp(&self, other: &Self) -> Ordering {
        self.score
            .total_cmp(&other.score)
            .then_with(|| other.image.cmp(&self.image))
    }
}
impl PartialOrd for Entry {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl PartialEq for Entry {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}
impl Eq for Entry {}

/// The `k` best entries seen (a min-heap of the kept ones).
struct TopK {
    k: usize,
    heap: BinaryHeap<Reverse<Entry>>,
}

impl TopK {
    fn new(k: usize) -> Self {
        TopK {
            k,
            heap: BinaryHeap::with_capacity(k + 1),
        }
    }

    fn push(&mut self, e: Entry) {
        if !e.score.is_finite() {
            return;
        }
        if self.heap.len() < self.k {
            self.heap.push(Reverse(e));
        } else if self.heap.peek().is_some_and(|Reverse(worst)| e > *worst) {
            self.heap.pop();
            self.heap.push(Reverse(e));
        }
    }

    /// Best first.
    fn into_sorted(self) -> Vec<Entry> {
        let mut v: Vec<Entry> = self.heap.into_iter().map(|Reverse(e)| e).collect();
        v.sort_by(|a, b| b.cmp(a));
        v
    }
}

/// A channel's maximum, mean and the position `(y, x)` of its first maximum in one image.
type Reduced = (f32, f32, (usize, usize));

/// Max (first position of it, row-major) and mean of one channel's map.
fn reduce(map: &[f32], width: usize) -> Reduced {
    let (mut best, mut at, mut sum) = (f32::NEG_INFINITY, 0, 0f64);
    for (i, &v) in map.iter().enumerate() {
        if v > best {
            best = v;
            at = i;
        }
        sum += f64::from(v);
    }
    let mean = (sum / map.len().max(1) as f64) as f32;
    (best, mean, (at / width.max(1), at % width.max(1)))
}

/// Decoded inputs of one batch (on the CPU), by position in the listing.
type Decoded = Vec<(usize, Result<Tensor>)>;

fn decode(model: &Model, listing: &Listing, range: std::ops::Range<usize>) -> Decoded {
    range
        .into_par_iter()
        .map(|i| {
            (
                i,
                model
                    .spec
                    .preprocess
                    .load(&listing.images[i].0, &Device::Cpu),
            )
        })
        .collect()
}

/// Runs every image of `listing` through `model` up to `layer` (a spatial layer) in batches of
/// `batch` and keeps each channel's `top` images by maximum and by mean activation.
/// `progress(done, total)` after each batch; `cancel` stops between batches.
pub fn compute(
    model: &Model,
    layer: &str,
    listing: &Listing,
    top: usize,
    batch: usize,
    progress: &mut dyn FnMut(usize, usize),
    cancel: &CancelToken,
) -> Result<LayerExamples> {
    super::check_range("--top", top, 1..=MAX_TOP)?;
    let size = model.spec.preprocess.input_size();
    let info = model
        .network
        .layers(size as usize)
        .into_iter()
        .find(|l| l.id == layer);
    let shape = match info {
        Some(l) if l.output_shape.len() == 3 => l.output_shape,
        Some(l) => {
            return Err(Error::Model(format!(
                "layer `{layer}` has no spatial output (shape {:?}); layers with one: {}",
                l.output_shape,
                super::activations::spatial_layers(&model.network, size as usize).join(", ")
            )));
        }
        None => {
            return Err(model
                .network
                .index_of(layer)
                .err()
                .unwrap_or_else(|| Error::Model(format!("unknown layer `{layer}`"))));
        }
    };
    let (channels, h, w) = (shape[0], shape[1], shape[2]);
    let field = receptive_field(&model.network, layer, size as usize, &model.device)?;
    let mut by_max: Vec<TopK> = (0..channels).map(|_| TopK::new(top)).collect();
    let mut by_mean: Vec<TopK> = (0..channels).map(|_| TopK::new(top)).collect();
    let n = listing.images.len();
    let batch = batch.max(1);
    let mut skipped = Vec::new();
    let mut scanned = 0;
    let mut next = Some(decode(model, listing, 0..batch.min(n)));
    let mut start = 0;
    while start < n {
        cancel.check()?;
        let end = (start + batch).min(n);
        let decoded = next.take().unwrap_or_default();
        let run = || -> Result<Option<(Vec<usize>, Vec<f32>)>> {
            let (ok, inputs): (Vec<usize>, Vec<Tensor>) = decoded
                .iter()
                .filter_map(|(i, d)| d.as_ref().ok().map(|t| (*i, t.clone())))
                .unzip();
            if ok.is_empty() {
                return Ok(None);
            }
            let x = Tensor::cat(&inputs, 0)?.to_device(&model.device)?;
            let out = model.network.forward_range(None, layer, &x, false)?;
            let values = out
                .to_device(&Device::Cpu)?
                .flatten_all()?
                .to_vec1::<f32>()?;
            Ok(Some((ok, values)))
        };
        let (result, prefetched) = if end < n {
            let (r, p) = rayon::join(run, || decode(model, listing, end..(end + batch).min(n)));
            (r?, Some(p))
        } else {
            (run()?, None)
        };
        next = prefetched;
        for (i, d) in &decoded {
            if let Err(e) = d {
                skipped.push(format!("{}: {e}", listing.images[*i].0.display()));
            }
        }
        if let Some((ok, values)) = result {
            let per_image = channels * h * w;
            let stats: Vec<Vec<Reduced>> = values
                .par_chunks(per_image)
                .map(|img| img.chunks(h * w).map(|m| reduce(m, w)).collect())
                .collect();
            for (&image, s) in ok.iter().zip(&stats) {
                for (c, &(max, mean, at)) in s.iter().enumerate() {
                    let e = Entry {
                        score: max,
                        image,
                        max,
                        mean,
                        at,
                    };
                    by_max[c].push(e);
                    by_mean[c].push(Entry { score: mean, ..e });
                }
            }
            scanned += ok.len();
        }
        start = end;
        progress(end, n);
    }
    let hit = |e: &Entry| Hit {
        image: listing.relative(e.image).to_string_lossy().into_owned(),
        class: listing.class_of(e.image).map(str::to_string),
        max: e.max,
        mean: e.mean,
        at: [e.at.0, e.at.1],
        patch: field.patch(e.at.0, e.at.1, size),
    };
    let channels = by_max
        .into_iter()
        .zip(by_mean)
        .map(|(a, b)| ChannelTop {
            by_max: a.into_sorted().iter().map(hit).collect(),
            by_mean: b.into_sorted().iter().map(hit).collect(),
        })
        .collect();
    Ok(LayerExamples {
        layer: layer.to_string(),
        map: [h, w],
        input_size: size,
        field,
        top,
        scanned,
        skipped,
        channels,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(score: f32, image: usize) -> Entry {
        Entry {
            score,
            image,
            max: score,
            mean: 0.0,
            at: (0, 0),
        }
    }

    #[test]
    fn a_heap_keeps_the_k_best_earlier_image_first_on_ties() {
        let mut top = TopK::new(3);
        for (i, s) in [1.0, 5.0, 3.0, 5.0, f32::NAN, 2.0, 4.0, 0.5]
            .into_iter()
            .enumerate()
        {
            top.push(entry(s, i));
        }
        let kept: Vec<(f32, usize)> = top
            .into_sorted()
            .iter()
            .map(|e| (e.score, e.image))
            .collect();
        assert_eq!(kept, vec![(5.0, 1), (5.0, 3), (4.0, 6)]);
    }

    #[test]
    fn reduce_finds_the_first_maximum_and_the_mean() {
        let map = [0.0, 2.0, 1.0, 2.0, -1.0, 2.0];
        assert_eq!(reduce(&map, 3), (2.0, 1.0, (0, 1)));
    }
}
