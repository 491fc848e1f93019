//! "Information distillation", measured (Chollet, *Deep Learning with Python*, 5.4.1: deeper
//! layers carry "less and less information about the specific input being seen, and more and
//! more information about the target"): for every spatial layer from the stem to the head,
//!
//! - **class probe**: a softmax classifier ([`HeadKind::Linear`]) trained on the globally
//!   average-pooled activations of the folder's train split (standardised with the train
//!   statistics; full batch, AdamW) and scored on the held-out images (validation and test);
//! - **instance retrieval**: each image's mildly altered view ([`instance_augment`], seeded per
//!   image) is looked up among the plain views of all probed images by cosine similarity of
//!   the layer's activations pooled to a [`INSTANCE_GRID`] x [`INSTANCE_GRID`] grid
//!   ([`grid_pool`]), each feature centred on the plain views' mean and divided by its
//!   channel's standard deviation; top-1 accuracy = how often it finds its own image (chance:
//!   one over the images probed);
//! - **input reconstruction**: the held-out R^2 of a linear decoder from each cell of the
//!   layer to the block of the image it covers ([`super::reconstruct`], where its design is
//!   argued): how much of the input itself the layer still holds;
//! - **sparsity**: the fraction of the layer's channels that are all zero for an image
//!   (as [`super::activations::LayerSparsity::blank_fraction`]), averaged over the images.
//!
//! ## Why the instance measure looks like this (decided before looking at its answer)
//!
//! The claim is about information on *the specific input*, and in an early layer that
//! information is mostly *where* things are: an edge map keeps the layout of the photo, and its
//! global average keeps only a histogram of edge kinds, which many images share. Retrieving on
//! globally pooled activations would therefore measure how distinctive a layer's channel
//! histogram is, not how much of the input it keeps, and it handicaps exactly the layers the
//! claim says know the most. So every layer is described at the **same spatial resolution**:
//! its activation `[c, h, w]` average-pooled to a fixed 4 x 4 grid (PyTorch's
//! `adaptive_avg_pool2d` bins), `c x 16` features. The grid is the same for every tap, so the
//! layers differ only in what their channels say per region, not in how finely they are
//! sampled; 4 x 4 is no finer than the 7 x 7 map of the last layers of a 224-input convnet (no
//! layer is upsampled), and a cell (a quarter of the side) is several times the largest shift
//! of the augmentation below, so a shifted view lands mostly in the same cells at every depth.
//!
//! What counts as "its own view" is set by the augmentation: a strong one (a mirror image,
//! +-36 degrees, +-20 % zoom, as used for training) makes a *different* photo of the same thing,
//! and finding it again needs class-like, invariant features: that tests invariance, which
//! deep layers have by construction. The question here is whether the layer still tells this
//! photo from the others, so the view is one a person would call **the same photo**: no
//! mirror, no rotation, zoom within +-5 %, a shift within +-4 % of the side, brightness and
//! contrast within +-10 % ([`instance_augment`]).
//!
//! The features are scaled per **channel**, not per feature: a channel's units are arbitrary
//! (they come from its weights and batch norm), so each channel is put on the scale of its own
//! spread over the gallery; but a cell of a channel that hardly varies over the images (a
//! plain background in an early layer) keeps its small spread instead of being blown up to
//! the weight of the cells that tell the images apart, where the altered view's brightness
//! change would decide the match.
//!
//! One pass over the images (the plain and the altered view of a batch together) keeps only
//! the pooled activations: per image `sum(c)` floats (global pool, plain view) and
//! `2 x 16 x sum(c)` half-precision floats (the grids of both views), so at most
//! [`ProbeOptions::max_images`] images are probed (a seeded draw from each split in proportion;
//! 2,000 images of EfficientNet-Lite0, `sum(c)` = 3,120, keep 400 MB of grids); a larger folder
//! is subsampled. The retrieval compares [`QUERY_ROWS`] queries at a time. The reconstruction
//! adds its sums in the same pass and is solved before the retrieval, so its memory (fixed
//! by the layers' widths, about 150 MB for Lite0) is freed before the retrieval's peak.
//!
//! ## Two instance measures
//!
//! Retrieval asks whether a layer can still tell this photo from the others; reconstruction
//! asks how much of the photo's pixels it can give back. A layer can do the first with very
//! little of the second (a few distinctive numbers per image suffice), so the two can move in
//! opposite directions with depth; the book's "less and less information about the specific
//! input" is the second.

use candle_core::{D, Device, Tensor};
use rand::SeedableRng;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use super::reconstruct::{Part, ReconChoice, Reconstruction};
use crate::cancel::CancelToken;
use crate::data::augment::{Augment, augment_seed};
use crate::data::decode::load_rgb;
use crate::data::folder::{ImageFolder, Sample};
use crate::train::head::{Head, HeadKind};
use crate::train::optim::{Optimizer, OptimizerKind};
use crate::zoo::Model;
use crate::{Error, Result};

/// How the probe runs.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ProbeOptions {
    /// The most images probed (train and held-out together).
    pub max_images: usize,
    /// Images per forward pass (each with its augmented view).
    pub batch: usize,
    /// Seed of the subsample, the augmentations and the probes' initialisation.
    pub seed: u64,
    /// Full-batch AdamW steps of each class probe.
    pub steps: usize,
    /// The class probes' learning rate.
    pub learning_rate: f64,
}

impl Default for ProbeOptions {
    fn default() -> Self {
        ProbeOptions {
            max_images: 2000,
            batch: 16,
            seed: 42,
            steps: 300,
            learning_rate: 1e-2,
        }
    }
}

/// The three measures at one layer.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TapProbe {
    /// The stage id.
    pub layer: String,
    /// Its channels.
    pub channels: usize,
    /// Held-out accuracy of the class probe, 0 to 1.
    pub class_accuracy: f32,
    /// Top-1 accuracy of finding an image from its mildly altered view among all probed
    /// images, by its activations pooled to a 4 x 4 grid (`channels x 16` features), 0 to 1.
    pub instance_top1: f32,
    /// Held-out R^2 of the input reconstruction ([`super::reconstruct`]): the fraction of the
    /// image's pixel variance a linear decoder recovers from the layer, at most 1 (below 0:
    /// worse than predicting the mean); `None` where the map is too coarse or a part of the
    /// images (fit, validation, held out) is empty.
    #[serde(default)]
    pub reconstruction_r2: Option<f32>,
    /// The reconstruction decoder's ridge strength and block shift.
    #[serde(default)]
    pub reconstruction_choice: Option<ReconChoice>,
    /// Mean fraction of all-zero channels, 0 to 1.
    pub sparsity: f32,
}

/// The probe's result for one model over one folder.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ProbeReport {
    /// Per spatial layer, stem first.
    pub taps: Vec<TapProbe>,
    /// The classes.
    pub classes: Vec<String>,
    /// Images the class probes trained on and were scored on.
    pub train_images: usize,
    pub held_out_images: usize,
    /// The class accuracy of always answering the most frequent held-out class.
    pub majority_baseline: f32,
    /// Images that could not be read, as `path: reason`.
    pub skipped: Vec<String>,
}

/// Up to `n` of `samples`, a seeded draw kept in the original order.
fn draw(samples: &[Sample], n: usize, seed: u64) -> Vec<Sample> {
    if samples.len() <= n {
        return samples.to_vec();
    }
    let mut idx: Vec<usize> = (0..samples.len()).collect();
    idx.shuffle(&mut ChaCha8Rng::seed_from_u64(seed));
    idx.truncate(n);
    idx.sort_unstable();
    idx.into_iter().map(|i| samples[i].clone()).collect()
}

/// Standardises the columns of `x` `[n, c]` with the mean and std of the rows `fit`.
fn standardise(x: &Tensor, fit: &Tensor) -> Result<Tensor> {
    let mean = fit.mean_keepdim(0)?;
    let std = (fit.broadcast_sub(&mean)?.sqr()?.mean_keepdim(0)? + 1e-6)?.sqrt()?;
    Ok(x.broadcast_sub(&mean)?.broadcast_div(&std)?)
}

/// Held-out accuracy of a softmax classifier trained on `(x, y)`.
fn class_probe(
    train: (&Tensor, &[u32]),
    held_out: (&Tensor, &[u32]),
    classes: usize,
    opts: &ProbeOptions,
) -> Result<f32> {
    let (xt, xh) = (
        standardise(train.0, train.0)?,
        standardise(held_out.0, train.0)?,
    );
    let mut head = Head::init(
        HeadKind::Linear,
        xt.dim(1)?,
        classes,
        opts.seed,
        &Device::Cpu,
    )?;
    let vars = head.make_trainable()?;
    let mut opt = Optimizer::new(
        OptimizerKind::AdamW { weight_decay: 1e-2 },
        vars,
        opts.learning_rate,
    )?;
    let yt = Tensor::new(train.1, &Device::Cpu)?;
    for _ in 0..opts.steps {
        let loss = candle_nn::loss::cross_entropy(&head.logits(&xt, true)?, &yt)?;
        opt.backward_step(&loss)?;
    }
    let predicted = head
        .logits(&xh, false)?
        .argmax(D::Minus1)?
        .to_vec1::<u32>()?;
    let right = predicted
        .iter()
        .zip(held_out.1)
        .filter(|(p, y)| p == y)
        .count();
    Ok(right as f32 / held_out.1.len().max(1) as f32)
}

/// The side of the grid every tap is average-pooled to for the instance retrieval.
pub const INSTANCE_GRID: usize = 4;

/// The view of an image the instance retrieval looks for: one a person would call the same
/// photo (no mirror, no rotation; zoom +-5 %, shift +-4 % of the side, brightness and
/// contrast +-10 %). See the [module docs](self) for why.
pub fn instance_augment() -> Augment {
    Augment {
        flip: false,
        rotation: None,
        zoom: Some(0.05),
        translation: Some(0.04),
        contrast: Some(0.1),
    }
}

/// `[out, len]` averaging matrix of PyTorch's `adaptive_avg_pool` bins: row `i` averages
/// `floor(i * len / out) .. ceil((i + 1) * len / out)`.
fn bin_matrix(len: usize, out: usize, device: &Device) -> Result<Tensor> {
    let mut m = vec![0f32; out * len];
    for i in 0..out {
        let (a, b) = ((i * len) / out, ((i + 1) * len).div_ceil(out));
        for j in a..b {
            m[i * len + j] = 1.0 / (b - a) as f32;
        }
    }
    Ok(Tensor::from_vec(m, (out, len), device)?)
}

/// `x` `[n, c, h, w]` average-pooled to a `g` x `g` grid (as PyTorch's
/// `adaptive_avg_pool2d(x, g)`), flattened to `[n, c * g * g]` (channel-major, then rows).
pub fn grid_pool(x: &Tensor, g: usize) -> Result<Tensor> {
    let (n, c, h, w) = x.dims4()?;
    let rows = bin_matrix(h, g, x.device())?.t()?; // [h, g]
    let cols = bin_matrix(w, g, x.device())?.t()?; // [w, g]
    // [n*c, h, w] x [w, g] -> [n*c, h, g]; transposed, x [h, g] -> [n*c, g(cols), g(rows)].
    let x = x
        .to_dtype(candle_core::DType::F32)?
        .reshape((n * c, h, w))?;
    let by_cols = x.broadcast_matmul(&cols)?.transpose(1, 2)?.contiguous()?;
    let both = by_cols.broadcast_matmul(&rows)?.transpose(1, 2)?;
    Ok(both.contiguous()?.reshape((n, c * g * g))?)
}

/// Query rows per similarity product in [`instance_top1`]: a `[1024, n]` block (82 MB at
/// n = 20,000) instead of the whole `[n, n]` matrix (1.6 GB).
const QUERY_ROWS: usize = 1024;

/// A channel's variance is floored at this fraction of the layer's mean channel variance, so
/// a channel that (almost) never varies over the gallery is not blown up to unit scale.
const VARIANCE_FLOOR: f64 = 1e-4;

/// Top-1 accuracy of finding row `i` of `gallery` from row `i` of `queries` (both `[n, d]`,
/// any float dtype, `d` = channels x `per_channel` features, channel-major), by cosine
/// similarity after centring each feature on the gallery's mean and dividing it by its
/// channel's standard deviation over the gallery (all the channel's features together, the
/// variance floored at [`VARIANCE_FLOOR`] of the mean channel's): every channel on its own
/// scale, and a cell that never changes (a plain background) is not amplified to the weight
/// of one that does.
fn instance_top1(queries: &Tensor, gallery: &Tensor, per_channel: usize) -> Result<f32> {
    instance_top1_in_blocks(queries, gallery, per_channel, QUERY_ROWS)
}

/// [`instance_top1`] with the similarities computed `rows` queries at a time.
fn instance_top1_in_blocks(
    queries: &Tensor,
    gallery: &Tensor,
    per_channel: usize,
    rows: usize,
) -> Result<f32> {
    let f32 = candle_core::DType::F32;
    let gallery = gallery.to_dtype(f32)?;
    let d = gallery.dim(1)?;
    if per_channel == 0 || d % per_channel != 0 {
        return Err(Error::Model(format!(
            "instance retrieval: {d} features are not whole channels of {per_channel}"
        )));
    }
    let mean = gallery.mean_keepdim(0)?;
    // [1, d] per-feature variances -> [channels] per-channel, floored, back to [1, d].
    let var = gallery
        .broadcast_sub(&mean)?
        .sqr()?
        .mean(0)?
        .reshape((d / per_channel, per_channel))?
        .mean_keepdim(1)?;
    let floor = var.mean_all()?.to_scalar::<f32>()? as f64 * VARIANCE_FLOOR + 1e-12;
    let std = var
        .maximum(floor)?
        .sqrt()?
        .broadcast_as((d / per_channel, per_channel))?
        .reshape((1, d))?;
    // Centred and scaled with the gallery's statistics, then unit length per row.
    let unit = |t: &Tensor| -> Result<Tensor> {
        let t = t.to_dtype(f32)?.broadcast_sub(&mean)?.broadcast_div(&std)?;
        let norm = (t.sqr()?.sum_keepdim(1)?.sqrt()? + 1e-12)?;
        Ok(t.broadcast_div(&norm)?)
    };
    let g_t = unit(&gallery)?.t()?.contiguous()?;
    drop(gallery);
    let n = queries.dim(0)?;
    let mut nearest = Vec::with_capacity(n);
    for start in (0..n).step_by(rows.max(1)) {
        let block = unit(&queries.narrow(0, start, rows.min(n - start))?)?;
        nearest.extend(block.matmul(&g_t)?.argmax(D::Minus1)?.to_vec1::<u32>()?);
    }
    let right = nearest
        .iter()
        .enumerate()
        .filter(|&(i, &j)| i == j as usize)
        .count();
    Ok(right as f32 / nearest.len().max(1) as f32)
}

/// One batch of images through every tap: the rows read, then per tap the globally pooled
/// plain views `[n, c]`, the grid-pooled views `[2n, c * 16]` in f16 (plain, then altered)
/// and each image's blank-channel fraction. The plain views' reconstruction sums go to
/// `recon` (image `i` to the rows of `parts[i]`).
struct BatchOut {
    ok: Vec<usize>,
    pooled: Vec<Tensor>,
    grids: Vec<Tensor>,
    blank: Vec<Vec<f32>>,
}

fn run_batch(
    model: &Model,
    taps: &[&str],
    samples: &[(usize, &Sample)],
    augment: &Augment,
    seed: u64,
    skipped: &mut Vec<String>,
    (recon, parts): (&mut Reconstruction, &[Part]),
) -> Result<Option<BatchOut>> {
    let pre = &model.spec.preprocess;
    let loaded: Vec<(usize, Result<(Tensor, Tensor)>)> = samples
        .par_iter()
        .map(|&(i, s)| {
            let views = load_rgb(&s.path).and_then(|img| {
                let plain = pre.apply(&img);
                let moved = augment.apply(&plain, augment_seed(seed, 0, i as u64));
                Ok((
                    pre.to_tensor(&plain, &Device::Cpu)?,
                    pre.to_tensor(&moved, &Device::Cpu)?,
                ))
            });
            (i, views)
        })
        .collect();
    let (mut ok, mut plain, mut moved) = (Vec::new(), Vec::new(), Vec::new());
    for ((i, v), (_, s)) in loaded.into_iter().zip(samples) {
        match v {
            Ok((a, b)) => {
                ok.push(i);
                plain.push(a);
                moved.push(b);
            }
            Err(e) => skipped.push(format!("{}: {e}", s.path.display())),
        }
    }
    if ok.is_empty() {
        return Ok(None);
    }
    let n = ok.len();
    let x = Tensor::cat(&[Tensor::cat(&plain, 0)?, Tensor::cat(&moved, 0)?], 0)?
        .to_device(&model.device)?;
    let outs = model.network.forward_with_taps(&x, taps)?;
    let target = Reconstruction::target(&x.narrow(0, 0, n)?)?;
    let ok_parts: Vec<Part> = ok.iter().map(|&i| parts[i]).collect();
    let mut pooled = Vec::with_capacity(taps.len());
    let mut grids = Vec::with_capacity(taps.len());
    let mut blank = Vec::with_capacity(taps.len());
    for (t, out) in outs.into_iter().enumerate() {
        let plain_out = out.narrow(0, 0, n)?;
        recon.add(t, &plain_out, &target, &ok_parts)?;
        pooled.push(plain_out.mean((2, 3))?.to_device(&Device::Cpu)?);
        grids.push(
            grid_pool(&out, INSTANCE_GRID)?
                .to_dtype(candle_core::DType::F16)?
                .to_device(&Device::Cpu)?,
        );
        let hi = plain_out.max(3)?.max(2)?;
        let lo = plain_out.min(3)?.min(2)?;
        let zero = hi
            .eq(0f32)?
            .mul(&lo.eq(0f32)?)?
            .to_dtype(candle_core::DType::F32)?;
        blank.push(zero.mean(1)?.to_device(&Device::Cpu)?.to_vec1::<f32>()?);
    }
    Ok(Some(BatchOut {
        ok,
        pooled,
        grids,
        blank,
    }))
}

/// Probes every spatial layer of `model` on `folder` (see the [module docs](self)).
/// `progress(done, total)` after each batch; `cancel` stops between batches.
pub fn probe(
    model: &Model,
    folder: &ImageFolder,
    opts: &ProbeOptions,
    progress: &mut dyn FnMut(usize, usize),
    cancel: &CancelToken,
) -> Result<ProbeReport> {
    super::check_range("--max-images", opts.max_images, 4..=1_000_000)?;
    let train_all = folder.split(crate::data::folder::Split::Train);
    let held_all: Vec<Sample> = [
        crate::data::folder::Split::Validation,
        crate::data::folder::Split::Test,
    ]
    .into_iter()
    .flat_map(|s| folder.split(s).iter().cloned())
    .collect();
    if train_all.is_empty() || held_all.is_empty() {
        return Err(Error::Dataset(format!(
            "{}: the probe needs train images and held-out (validation or test) images",
            folder.root.display()
        )));
    }
    let total = train_all.len() + held_all.len();
    let n_train = (opts.max_images * train_all.len()).div_ceil(total).max(1);
    let n_held = opts.max_images.saturating_sub(n_train).max(1);
    let train = draw(train_all, n_train, opts.seed);
    let held = draw(&held_all, n_held, opts.seed ^ 1);
    let samples: Vec<&Sample> = train.iter().chain(&held).collect();
    let size = model.spec.preprocess.input_size() as usize;
    let (layers, shapes): (Vec<String>, Vec<[usize; 3]>) = model
        .network
        .layers(size)
        .into_iter()
        .filter_map(|l| match l.output_shape[..] {
            [c, h, w] => Some((l.id, [c, h, w])),
            _ => None,
        })
        .unzip();
    let taps: Vec<&str> = layers.iter().map(String::as_str).collect();
    let mut recon = Reconstruction::new(&shapes, size)?;
    let parts: Vec<Part> = (0..samples.len())
        .map(|i| Part::of_image(i, train.len()))
        .collect();
    let augment = instance_augment();
    let mut skipped = Vec::new();
    let mut rows: Vec<usize> = Vec::new();
    // Per tap, batch by batch: the pooled plain views, the grids of the plain and the altered
    // views; each image's blank fraction.
    let mut plain: Vec<Vec<Tensor>> = vec![Vec::new(); taps.len()];
    let mut grid_plain: Vec<Vec<Tensor>> = vec![Vec::new(); taps.len()];
    let mut grid_moved: Vec<Vec<Tensor>> = vec![Vec::new(); taps.len()];
    let mut blank: Vec<Vec<f32>> = vec![Vec::new(); taps.len()];
    let indexed: Vec<(usize, &Sample)> = samples.iter().copied().enumerate().collect();
    for (b, chunk) in indexed.chunks(opts.batch.max(1)).enumerate() {
        cancel.check()?;
        let batch = run_batch(
            model,
            &taps,
            chunk,
            &augment,
            opts.seed,
            &mut skipped,
            (&mut recon, &parts),
        )?;
        if let Some(out) = batch {
            let n = out.ok.len();
            for (t, (p, g)) in out.pooled.into_iter().zip(&out.grids).enumerate() {
                plain[t].push(p);
                grid_plain[t].push(g.narrow(0, 0, n)?);
                grid_moved[t].push(g.narrow(0, n, n)?);
            }
            for (t, v) in out.blank.into_iter().enumerate() {
                blank[t].extend(v);
            }
            rows.extend(out.ok);
        }
        progress(
            ((b + 1) * opts.batch.max(1)).min(samples.len()),
            samples.len(),
        );
    }
    let is_train: Vec<bool> = rows.iter().map(|&i| i < train.len()).collect();
    let labels: Vec<u32> = rows.iter().map(|&i| samples[i].label as u32).collect();
    let pick = |want: bool| -> Vec<u32> {
        (0..rows.len())
            .filter(|&r| is_train[r] == want)
            .map(|r| r as u32)
            .collect()
    };
    let (tr, ho) = (pick(true), pick(false));
    if tr.is_empty() || ho.is_empty() {
        return Err(Error::Dataset(
            "no readable train or held-out image to probe".into(),
        ));
    }
    let (tr_idx, ho_idx) = (
        Tensor::new(tr.as_slice(), &Device::Cpu)?,
        Tensor::new(ho.as_slice(), &Device::Cpu)?,
    );
    let y_tr: Vec<u32> = tr.iter().map(|&r| labels[r as usize]).collect();
    let y_ho: Vec<u32> = ho.iter().map(|&r| labels[r as usize]).collect();
    let mut counts = vec![0usize; folder.classes.len()];
    for &y in &y_ho {
        counts[y as usize] += 1;
    }
    let majority = *counts.iter().max().unwrap_or(&0) as f32 / y_ho.len() as f32;
    cancel.check()?;
    let mut recon = recon.finish()?;
    let mut out = Vec::with_capacity(taps.len());
    for (t, layer) in taps.iter().enumerate() {
        cancel.check()?;
        let x = Tensor::cat(&std::mem::take(&mut plain[t]), 0)?;
        let class_accuracy = class_probe(
            (&x.index_select(&tr_idx, 0)?, &y_tr),
            (&x.index_select(&ho_idx, 0)?, &y_ho),
            folder.classes.len(),
            opts,
        )?;
        let (reconstruction_r2, reconstruction_choice) = recon[t].take().unzip();
        out.push(TapProbe {
            layer: layer.to_string(),
            channels: x.dim(1)?,
            class_accuracy,
            instance_top1: instance_top1(
                &Tensor::cat(&std::mem::take(&mut grid_moved[t]), 0)?,
                &Tensor::cat(&std::mem::take(&mut grid_plain[t]), 0)?,
                INSTANCE_GRID * INSTANCE_GRID,
            )?,
            reconstruction_r2,
            reconstruction_choice,
            sparsity: blank[t].iter().sum::<f32>() / blank[t].len().max(1) as f32,
        });
    }
    Ok(ProbeReport {
        taps: out,
        classes: folder.classes.clone(),
        train_images: tr.len(),
        held_out_images: ho.len(),
        majority_baseline: majority,
        skipped,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retrieval_finds_each_row_among_near_copies() -> Result<()> {
        let g = Tensor::new(
            &[
                [1f32, 0.0, 0.0],
                [0.0, 1.0, 0.0],
                [0.0, 0.0, 1.0],
                [1.0, 1.0, 0.0],
            ],
            &Device::Cpu,
        )?;
        let noise = Tensor::new(
            &[
                [0.1f32, 0.0, 0.0],
                [0.0, 0.0, 0.1],
                [0.0, 0.1, 0.0],
                [0.0, 0.0, 0.05],
            ],
            &Device::Cpu,
        )?;
        assert_eq!(instance_top1(&(&g + &noise)?, &g, 1)?, 1.0);
        // Every query the same row: only that row's own query finds it.
        let same = Tensor::new(&[[0f32, 0.0, 1.0]; 4], &Device::Cpu)?;
        assert_eq!(instance_top1(&same, &g, 1)?, 0.25);
        // In blocks of 1, 3 (a ragged last block) and more rows than there are: the same.
        for rows in [1, 3, 8] {
            assert_eq!(instance_top1_in_blocks(&(&g + &noise)?, &g, 1, rows)?, 1.0);
            assert_eq!(instance_top1_in_blocks(&same, &g, 1, rows)?, 0.25);
        }
        Ok(())
    }

    #[test]
    fn a_cell_that_barely_varies_does_not_decide_the_match() -> Result<()> {
        // One channel of three cells: cells 0 and 1 tell the four images apart, cell 2 is a
        // background that barely varies (+-0.02) and that each query shifts by 0.04
        // (brightness).
        let g = Tensor::new(
            &[
                [1f32, 4.0, 0.5],
                [2.0, 1.0, 0.52],
                [3.0, 3.0, 0.48],
                [4.0, 2.0, 0.5],
            ],
            &Device::Cpu,
        )?;
        let q = Tensor::new(
            &[
                [1.1f32, 3.9, 0.46],
                [2.1, 1.1, 0.46],
                [2.9, 3.1, 0.54],
                [4.1, 1.9, 0.54],
            ],
            &Device::Cpu,
        )?;
        assert_eq!(instance_top1(&q, &g, 3)?, 1.0);
        // Scaled feature by feature (one channel per cell), the background's shift becomes
        // the largest standardised value and sends every query astray (numpy: [2, 2, 1, 1]).
        assert_eq!(instance_top1(&q, &g, 1)?, 0.0);
        // Features that are not whole channels are refused.
        assert!(instance_top1(&q, &g, 2).is_err());
        Ok(())
    }

    #[test]
    fn grid_pooling_matches_pytorch_adaptive_avg_pool2d() -> Result<()> {
        // torch.nn.functional.adaptive_avg_pool2d(x, 4) for x[i] = (37 i) mod 11, shape
        // [1, 2, 7, 9] (uneven, overlapping bins both ways).
        let want = [
            3.66667f32, 4.33333, 5.0, 5.66667, 5.11111, 4.55556, 4.0, 4.66667, 5.0, 5.66667,
            5.11111, 4.55556, 4.0, 4.66667, 5.33333, 6.0, 6.33333, 5.16667, 4.0, 4.66667, 5.33333,
            6.0, 5.44444, 4.88889, 4.0, 4.66667, 5.33333, 6.0, 4.83333, 3.66667, 4.33333, 5.0,
        ];
        let x: Vec<f32> = (0..2 * 7 * 9).map(|i| ((i * 37) % 11) as f32).collect();
        let x = Tensor::from_vec(x, (1, 2, 7, 9), &Device::Cpu)?;
        let got = grid_pool(&x, 4)?;
        assert_eq!(got.dims(), [1, 32]);
        for (g, w) in got.flatten_all()?.to_vec1::<f32>()?.iter().zip(want) {
            assert!((g - w).abs() < 1e-4, "{g} vs {w}");
        }
        // Two images stay apart: the second's grid is its own.
        let two = Tensor::cat(&[&x, &(&x + 1.0)?], 0)?;
        let rows = grid_pool(&two, 4)?.to_vec2::<f32>()?;
        assert!((rows[1][0] - want[0] - 1.0).abs() < 1e-4);
        Ok(())
    }

    #[test]
    fn a_probe_separates_separable_classes_and_not_noise() -> Result<()> {
        // Class = sign of feature 0; feature 1 noise.
        let xs: Vec<[f32; 2]> = (0..40)
            .map(|i| {
                [
                    if i % 2 == 0 { 1.0 } else { -1.0 } * (1.0 + i as f32 / 40.0),
                    ((i * 7919) % 13) as f32 / 13.0,
                ]
            })
            .collect();
        let ys: Vec<u32> = (0..40).map(|i| (i % 2) as u32).collect();
        let flat: Vec<f32> = xs.iter().flatten().copied().collect();
        let x = Tensor::from_vec(flat, (40, 2), &Device::Cpu)?;
        let (xt, xh) = (x.narrow(0, 0, 30)?, x.narrow(0, 30, 10)?);
        let opts = ProbeOptions {
            steps: 100,
            ..ProbeOptions::default()
        };
        assert_eq!(
            class_probe((&xt, &ys[..30]), (&xh, &ys[30..]), 2, &opts)?,
            1.0
        );
        Ok(())
    }

    #[test]
    fn a_draw_keeps_order_and_size() {
        let s: Vec<Sample> = (0..10)
            .map(|i| Sample {
                path: format!("{i}").into(),
                label: 0,
            })
            .collect();
        let d = draw(&s, 4, 1);
        let order: Vec<usize> = d
            .iter()
            .map(|x| x.path.to_string_lossy().parse().unwrap())
            .collect();
        assert_eq!(order.len(), 4);
        assert!(order.windows(2).all(|w| w[0] < w[1]), "{order:?}");
        assert_eq!(draw(&s, 20, 1), s);
    }
}
