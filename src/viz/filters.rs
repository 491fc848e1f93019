//! Filter patterns by gradient ascent in input space: the image that excites one filter most.
//!
//! The `chollet` preset is the algorithm of *Deep Learning with Python* (5.4.2), exactly as
//! `tests/fixtures/README.md` (`filters_lite0.safetensors`) describes it: a uniform
//! `[0.4, 0.6]` start in pixel space, normalised with the model's mean and std; loss = mean of
//! the filter's activation without a 2-pixel border; the gradient is L2-normalised over the
//! whole image and 30 steps of 10 are taken; the result is standardised, `x64 + 128`, clipped
//! and its border cropped.
//!
//! The `lucid` preset (Fourier parameterisation, decorrelated colours, random transforms, Adam)
//! lives in [`super::lucid`]; this module runs either over a grid of filters.
//!
//! Several filters are ascended at once, one image per filter in a batch: the batch loss is the
//! sum of each image's own filter loss, so each image gets exactly its own gradient (eval mode
//! has no cross-image coupling).

use std::fmt;
use std::str::FromStr;

use candle_core::{DType, Device, Tensor, Var};
use image::{Rgb, RgbImage};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::activations::{GridLayout, not_spatial};
use super::check_range;
use super::lucid::{self, LucidOptions};
use crate::graph::Network;
use crate::zoo::Model;
use crate::{Error, Result};

/// How filter patterns are found.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FilterMethod {
    /// Plain gradient ascent on the pixels (Chollet).
    #[default]
    Chollet,
    /// Fourier, colour-decorrelated parameterisation with random transforms and Adam (lucid).
    Lucid,
}

impl FilterMethod {
    /// The method's command-line name.
    pub fn name(self) -> &'static str {
        match self {
            FilterMethod::Chollet => "chollet",
            FilterMethod::Lucid => "lucid",
        }
    }

    /// The method's default number of steps (30 for chollet, 256 for lucid).
    pub fn default_steps(self) -> usize {
        match self {
            FilterMethod::Chollet => 30,
            FilterMethod::Lucid => 256,
        }
    }
}

impl fmt::Display for FilterMethod {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for FilterMethod {
    type Err = String;

    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s.trim().to_ascii_lowercase().as_str() {
            "chollet" => Ok(FilterMethod::Chollet),
            "lucid" => Ok(FilterMethod::Lucid),
            _ => Err(format!("unknown filter method `{s}`; use chollet or lucid")),
        }
    }
}

/// The ascent itself (`steps` for both methods, the rest for `chollet` only).
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct AscentOptions {
    /// Gradient steps (30).
    pub steps: usize,
    /// Length of each step in normalised input space (10).
    pub step_size: f32,
    /// Activation pixels left out of the loss on each side (2).
    pub border: usize,
}

impl Default for AscentOptions {
    fn default() -> Self {
        AscentOptions {
            steps: 30,
            step_size: 10.0,
            border: 2,
        }
    }
}

/// Everything that decides a filter picture besides the model and layer.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct FilterOptions {
    pub method: FilterMethod,
    #[serde(flatten)]
    pub ascent: AscentOptions,
    /// Side of the square input image, pixels (128).
    pub size: usize,
    /// Pixels cropped from each side of the result (`size / 8`: 16 at 128, Chollet's 25 at 200).
    pub crop: usize,
    /// Seeds the start images; filter `f` uses stream `f` of `ChaCha8Rng::seed_from_u64(seed)`,
    /// so its start does not depend on which other filters are computed.
    pub seed: u64,
    /// Filters ascended together in one forward/backward (8). The kernels compute each batch
    /// element alone, so a filter's picture does not depend on it (the tests check this bit for
    /// bit); it only trades memory for speed.
    pub batch: usize,
    /// The `lucid` preset's parameters (`None`: its defaults); absent from chollet sidecars.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lucid: Option<LucidOptions>,
}

impl Default for FilterOptions {
    fn default() -> Self {
        FilterOptions::with_size(128)
    }
}

impl FilterOptions {
    /// The defaults for a `size` x `size` input (crop `size / 8`).
    pub fn with_size(size: usize) -> Self {
        FilterOptions {
            method: FilterMethod::Chollet,
            ascent: AscentOptions::default(),
            size,
            crop: size / 8,
            seed: 0,
            batch: 8,
            lucid: None,
        }
    }

    /// The `lucid` defaults for a `size` x `size` image: 256 steps, no crop, lucid's
    /// parameters.
    pub fn lucid(size: usize) -> Self {
        FilterOptions {
            method: FilterMethod::Lucid,
            ascent: AscentOptions {
                steps: FilterMethod::Lucid.default_steps(),
                ..AscentOptions::default()
            },
            crop: 0,
            lucid: Some(LucidOptions::default()),
            ..FilterOptions::with_size(size)
        }
    }

    /// The defaults of `method` for a `size` x `size` image.
    pub fn for_method(method: FilterMethod, size: usize) -> Self {
        match method {
            FilterMethod::Chollet => FilterOptions::with_size(size),
            FilterMethod::Lucid => FilterOptions::lucid(size),
        }
    }

    /// Errors, naming the option and its allowed range, unless every value is within bounds
    /// that keep a run's memory and time reasonable: `size` 16 to [`MAX_SIZE`] pixels, `steps`
    /// 1 to [`MAX_STEPS`], `batch` 1 to [`MAX_BATCH`] and at most [`MAX_BATCH_PIXELS`] input
    /// pixels per pass, a finite positive step size, a border and crop that leave a picture,
    /// and (lucid) finite parameters within their ranges. The CLI, the desktop app and
    /// `reproduce` all call it, and [`filter_patterns_with`] refuses what it refuses.
    pub fn validate(&self) -> Result<()> {
        check_range("--size", self.size, 16..=MAX_SIZE)?;
        check_range("--steps", self.ascent.steps, 1..=MAX_STEPS)?;
        check_range("--batch", self.batch, 1..=MAX_BATCH)?;
        let pass = self.batch * self.size * self.size;
        if pass > MAX_BATCH_PIXELS {
            return Err(Error::Model(format!(
                "--batch {} at --size {} is {pass} input pixels per pass, more than the \
                 {MAX_BATCH_PIXELS} allowed: lower --batch to {}",
                self.batch,
                self.size,
                (MAX_BATCH_PIXELS / (self.size * self.size)).max(1)
            )));
        }
        check_range("step_size", self.ascent.step_size, f32::MIN_POSITIVE..=1e6)?;
        check_range("border", self.ascent.border, 0..=self.size / 4)?;
        check_range("crop", self.crop, 0..=(self.size - 1) / 2)?;
        if let Some(l) = &self.lucid {
            check_range("learning_rate", l.learning_rate, f64::MIN_POSITIVE..=10.0)?;
            check_range("init_sd", l.init_sd, 0.0..=10.0)?;
            check_range("decay_power", l.decay_power, 0.0..=10.0)?;
            check_range("pad", l.pad, 0..=self.size)?;
            check_range("pad_value", l.pad_value, -10.0..=10.0)?;
            check_range("jitter", l.jitter, 0..=self.size)?;
            check_range("jitter_after", l.jitter_after, 0..=self.size)?;
            check_range("number of scales", l.scales.len(), 1..=256)?;
            check_range("number of angles", l.angles.len(), 1..=256)?;
            for &scale in &l.scales {
                check_range("scale", scale, 0.01..=10.0)?;
            }
            for &angle in &l.angles {
                check_range("angle", angle, -360.0..=360.0)?;
            }
            l.check(self.size)?;
        }
        Ok(())
    }
}

/// The largest filter-pattern input, pixels per side.
pub const MAX_SIZE: usize = 512;
/// The most gradient steps per filter.
pub const MAX_STEPS: usize = 10_000;
/// The most filters ascended together.
pub const MAX_BATCH: usize = 64;
/// The most input pixels in one forward/backward pass (`batch x size x size`): 8 at 512 px.
pub const MAX_BATCH_PIXELS: usize = 8 * 512 * 512;

/// The result of [`ascend`] on a batch.
#[derive(Clone, Debug)]
pub struct Ascent {
    /// The final images `[n, 3, size, size]`, normalised input space, not clipped.
    pub images: Tensor,
    /// `losses[i][s]`: image `i`'s loss at the start of step `s` (before its update).
    pub losses: Vec<Vec<f32>>,
    /// Each image's loss after the last update.
    pub final_losses: Vec<f32>,
}

/// One finished filter picture.
#[derive(Clone, Debug)]
pub struct FilterPattern {
    /// The filter (channel) index in the layer.
    pub filter: usize,
    /// The deprocessed picture, `(size - 2 crop)` square.
    pub image: RgbImage,
    /// The loss (the filter's mean activation) at each step: before the step's update
    /// (chollet), or on the step's randomly transformed image (lucid).
    pub losses: Vec<f32>,
    /// The loss of the final image (lucid: untransformed, the whole map).
    pub final_loss: f32,
}

/// A differentiable function from input images `[n, 3, s, s]` to a layer's output
/// `[n, C, h, w]`: usually [`layer_tap`], or a reference implementation in tests.
pub type TapFn<'a> = dyn Fn(&Tensor) -> Result<Tensor> + 'a;

/// The network run from its input to `layer` (inference mode), as a [`TapFn`]. A layer without
/// a spatial output is an error naming the layers that have one.
pub fn layer_tap<'a>(net: &'a Network, layer: &'a str) -> impl Fn(&Tensor) -> Result<Tensor> + 'a {
    move |x: &Tensor| {
        let act = net.forward_range(None, layer, x, false)?;
        if act.rank() != 4 {
            return Err(not_spatial(net, x, layer, act.dims()));
        }
        Ok(act)
    }
}

/// Per-image losses of `images` `[n, 3, s, s]`: image `i`'s `loss_i` is the mean of channel
/// `filters[i]` of `layer`'s output without `border` pixels on each side. Returns the losses and
/// the graph's summed loss tensor (for `backward`).
pub(super) fn losses(
    tap: &TapFn,
    layer: &str,
    filters: &[usize],
    images: &Tensor,
    border: usize,
) -> Result<(Vec<f32>, Tensor)> {
    let act = tap(images)?;
    if act.rank() != 4 {
        return Err(Error::Model(format!(
            "layer `{layer}` has no spatial output (shape {:?})",
            act.dims()
        )));
    }
    let (n, channels, h, w) = act.dims4()?;
    if n != filters.len() {
        return Err(Error::Model(format!(
            "{n} images for {} filters: give one image per filter",
            filters.len()
        )));
    }
    if let Some(&bad) = filters.iter().find(|&&f| f >= channels) {
        return Err(Error::Model(format!(
            "layer `{layer}` has {channels} filters (0..{channels}); there is no filter {bad}"
        )));
    }
    if h <= 2 * border || w <= 2 * border {
        let size = images.dim(3)?;
        let min = size * (2 * border + 1).div_ceil(h.min(w).max(1));
        return Err(Error::Model(format!(
            "layer `{layer}` is only {h}x{w} at {size} px: nothing is left inside its \
             {border}-px border; use an input of at least {min} px"
        )));
    }
    let inner = act
        .narrow(2, border, h - 2 * border)?
        .narrow(3, border, w - 2 * border)?;
    let mut onehot = vec![0f32; n * channels];
    for (i, &f) in filters.iter().enumerate() {
        onehot[i * channels + f] = 1.0;
    }
    let mask = Tensor::from_vec(onehot, (n, channels, 1, 1), act.device())?;
    let per_image = inner
        .broadcast_mul(&mask)?
        .sum((1, 2, 3))?
        .affine(1.0 / ((h - 2 * border) * (w - 2 * border)) as f64, 0.0)?;
    let values = per_image.to_device(&Device::Cpu)?.to_vec1::<f32>()?;
    Ok((values, per_image.sum_all()?))
}

/// Each image's loss (as [`ascend`] defines it) and its L2-normalised gradient
/// `g / (sqrt(sum g^2) + 1e-8)`, normalised per image: `[n, 3, s, s]` for `images` of that shape.
pub fn loss_and_gradient(
    net: &Network,
    layer: &str,
    filters: &[usize],
    images: &Tensor,
    border: usize,
) -> Result<(Vec<f32>, Tensor)> {
    loss_and_gradient_with(&layer_tap(net, layer), layer, filters, images, border)
}

/// As [`loss_and_gradient`] through any differentiable `tap` (`layer` names it in errors).
pub fn loss_and_gradient_with(
    tap: &TapFn,
    layer: &str,
    filters: &[usize],
    images: &Tensor,
    border: usize,
) -> Result<(Vec<f32>, Tensor)> {
    let var = Var::from_tensor(images)?;
    let (values, total) = losses(tap, layer, filters, var.as_tensor(), border)?;
    let grads = total.backward()?;
    let g = grads.get(var.as_tensor()).ok_or_else(|| {
        Error::Model(format!(
            "no gradient reaches the input from layer `{layer}`"
        ))
    })?;
    let norm = g.sqr()?.sum_keepdim((1, 2, 3))?.sqrt()?.affine(1.0, 1e-8)?;
    Ok((values, g.broadcast_div(&norm)?))
}

/// Gradient ascent from `init` `[n, 3, s, s]` (normalised input space), image `i` towards
/// filter `filters[i]` of `layer`. `progress(step)` is called before each step and cancels
/// ([`Error::Cancelled`]) when it returns `false`.
pub fn ascend(
    net: &Network,
    layer: &str,
    filters: &[usize],
    init: &Tensor,
    opts: &AscentOptions,
    progress: &mut dyn FnMut(usize) -> bool,
) -> Result<Ascent> {
    ascend_with(&layer_tap(net, layer), layer, filters, init, opts, progress)
}

/// As [`ascend`] through any differentiable `tap` (`layer` names it in errors).
pub fn ascend_with(
    tap: &TapFn,
    layer: &str,
    filters: &[usize],
    init: &Tensor,
    opts: &AscentOptions,
    progress: &mut dyn FnMut(usize) -> bool,
) -> Result<Ascent> {
    let n = filters.len();
    let mut images = init.detach();
    let mut losses_per_image = vec![Vec::with_capacity(opts.steps); n];
    // Every step runs the same frozen network: its Winograd kernels are transformed once.
    let _kept = crate::ops::KeptKernels::scope();
    for step in 0..opts.steps {
        if !progress(step) {
            return Err(Error::Cancelled);
        }
        let (values, g) = loss_and_gradient_with(tap, layer, filters, &images, opts.border)?;
        for (l, v) in losses_per_image.iter_mut().zip(values) {
            l.push(v);
        }
        images = (images + g.affine(f64::from(opts.step_size), 0.0)?)?.detach();
    }
    let (final_losses, _) = losses(tap, layer, filters, &images, opts.border)?;
    Ok(Ascent {
        images,
        losses: losses_per_image,
        final_losses,
    })
}

/// The seeded start image of one filter, `[3, size, size]` in normalised input space:
/// `u ~ U[0.4, 0.6]` from stream `filter` of `ChaCha8Rng::seed_from_u64(seed)` (channel-major),
/// then `(u - mean[c]) / std[c]`.
pub fn init_image(
    seed: u64,
    filter: usize,
    size: usize,
    mean: [f32; 3],
    std: [f32; 3],
    device: &Device,
) -> Result<Tensor> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    rng.set_stream(filter as u64);
    let plane = size * size;
    let data: Vec<f32> = (0..3 * plane)
        .map(|i| {
            let c = i / plane;
            let u = rng.random::<f32>() * 0.2 + 0.4;
            (u - mean[c]) / std[c]
        })
        .collect();
    Ok(Tensor::from_vec(data, (3, size, size), device)?)
}

/// Deprocesses one image `[3, s, s]` (normalised input space) into a picture: back to pixel
/// space (`x * std + mean`), standardised over the whole image, `x64 + 128`, clipped to
/// `[0, 255]`, truncated, and `crop` pixels cut from each side.
pub fn deprocess(image: &Tensor, mean: [f32; 3], std: [f32; 3], crop: usize) -> Result<RgbImage> {
    let (c, h, w) = image.dims3()?;
    if c != 3 || h <= 2 * crop || w <= 2 * crop {
        return Err(Error::Model(format!(
            "cannot deprocess a {c}x{h}x{w} image cropping {crop} px per side"
        )));
    }
    let data = image
        .to_device(&Device::Cpu)?
        .to_dtype(DType::F32)?
        .flatten_all()?
        .to_vec1::<f32>()?;
    let plane = h * w;
    let pixels: Vec<f32> = data
        .iter()
        .enumerate()
        .map(|(i, &v)| v * std[i / plane] + mean[i / plane])
        .collect();
    let stats = super::activations::ChannelStats::of(&pixels);
    let levels = super::activations::standardise(&pixels, stats.mean, stats.std);
    let (ow, oh) = ((w - 2 * crop) as u32, (h - 2 * crop) as u32);
    Ok(RgbImage::from_fn(ow, oh, |x, y| {
        let i = (y as usize + crop) * w + x as usize + crop;
        Rgb([levels[i], levels[plane + i], levels[2 * plane + i]])
    }))
}

/// The pattern of one filter from an explicit start `init` (`[1, 3, s, s]` or `[3, s, s]`,
/// normalised input space).
pub fn filter_pattern_from(
    model: &Model,
    layer: &str,
    filter: usize,
    init: &Tensor,
    opts: &FilterOptions,
) -> Result<FilterPattern> {
    let init = if init.rank() == 3 {
        init.unsqueeze(0)?
    } else {
        init.clone()
    };
    let ascent = ascend(
        &model.network,
        layer,
        &[filter],
        &init,
        &opts.ascent,
        &mut |_| true,
    )?;
    let m = &model.spec.manifest;
    Ok(FilterPattern {
        filter,
        image: deprocess(&ascent.images.squeeze(0)?, m.mean, m.std, opts.crop)?,
        losses: ascent.losses.into_iter().next().unwrap_or_default(),
        final_loss: ascent.final_losses[0],
    })
}

/// The pattern of one filter from its seeded start ([`init_image`]).
pub fn filter_pattern(
    model: &Model,
    layer: &str,
    filter: usize,
    opts: &FilterOptions,
) -> Result<FilterPattern> {
    let m = &model.spec.manifest;
    let init = init_image(opts.seed, filter, opts.size, m.mean, m.std, &model.device)?;
    filter_pattern_from(model, layer, filter, &init, opts)
}

/// The number of filters (output channels) of a spatial layer.
pub fn filter_count(model: &Model, layer: &str) -> Result<usize> {
    let size = model.spec.manifest.input_size as usize;
    let i = model.network.index_of(layer)?;
    let info = &model.network.layers(size)[i];
    if info.output_shape.len() != 3 {
        let probe = Tensor::zeros((1, 3, size, size), DType::F32, &Device::Cpu)?;
        return Err(not_spatial(
            &model.network,
            &probe,
            layer,
            &info.output_shape,
        ));
    }
    Ok(info.output_shape[0])
}

/// What [`filter_patterns_with`] reports while it works.
#[derive(Clone, Copy, Debug)]
pub enum FilterProgress<'a> {
    /// Before ascent step `step` (of `steps`) of the batch whose first tile is `first`.
    Step {
        first: usize,
        step: usize,
        steps: usize,
    },
    /// A finished tile: its index in the filter list and its picture.
    Tile { index: usize, image: &'a RgbImage },
}

/// The patterns of `filters` of `layer`, computed `opts.batch` at a time from their seeded
/// starts. `on_tile(i, &picture)` is called as each finishes (`i` indexes `filters`) and
/// cancels the rest ([`Error::Cancelled`]) when it returns `false`. Same options, same pictures.
pub fn filter_patterns(
    model: &Model,
    layer: &str,
    filters: &[usize],
    opts: &FilterOptions,
    on_tile: &mut dyn FnMut(usize, &RgbImage) -> bool,
) -> Result<Vec<FilterPattern>> {
    filter_patterns_with(model, layer, filters, opts, &mut |p| match p {
        FilterProgress::Tile { index, image } => on_tile(index, image),
        FilterProgress::Step { .. } => true,
    })
}

/// As [`filter_patterns`], reporting every ascent step as well as every tile: `on_progress`
/// returning `false` cancels ([`Error::Cancelled`]) before the next step.
///
/// A batch runs `min(opts.batch, remaining)` filters through one forward and backward pass per
/// step. Each filter's start (and, for `lucid`, its random transforms) comes from its own seeded
/// stream, so its picture does not depend on which filters share its batch.
pub fn filter_patterns_with(
    model: &Model,
    layer: &str,
    filters: &[usize],
    opts: &FilterOptions,
    on_progress: &mut dyn FnMut(FilterProgress) -> bool,
) -> Result<Vec<FilterPattern>> {
    opts.validate()?;
    let count = filter_count(model, layer)?;
    if let Some(&bad) = filters.iter().find(|&&f| f >= count) {
        return Err(Error::Model(format!(
            "layer `{layer}` has {count} filters (0..{count}); there is no filter {bad}"
        )));
    }
    let m = &model.spec.manifest;
    let steps = opts.ascent.steps;
    let mut out = Vec::with_capacity(filters.len());
    for chunk in filters.chunks(opts.batch.max(1)) {
        let first = out.len();
        let mut progress = |step| on_progress(FilterProgress::Step { first, step, steps });
        // Per filter of the chunk: its picture, its losses per step and its final loss.
        let (images, losses, final_losses) = match opts.method {
            FilterMethod::Chollet => {
                let inits = chunk
                    .iter()
                    .map(|&f| init_image(opts.seed, f, opts.size, m.mean, m.std, &model.device))
                    .collect::<Result<Vec<_>>>()?;
                let init = Tensor::stack(&inits, 0)?;
                let a = ascend(
                    &model.network,
                    layer,
                    chunk,
                    &init,
                    &opts.ascent,
                    &mut progress,
                )?;
                let images = (0..chunk.len())
                    .map(|k| deprocess(&a.images.get(k)?, m.mean, m.std, opts.crop))
                    .collect::<Result<Vec<_>>>()?;
                (images, a.losses, a.final_losses)
            }
            FilterMethod::Lucid => {
                let lo = opts.lucid.clone().unwrap_or_default();
                let mut rngs: Vec<_> = chunk
                    .iter()
                    .map(|&f| lucid::filter_rng(opts.seed, f))
                    .collect();
                let inits = rngs
                    .iter_mut()
                    .map(|rng| lucid::init_spectrum(rng, opts.size, &lo, &model.device))
                    .collect::<Result<Vec<_>>>()?;
                let a = lucid::ascend(
                    &layer_tap(&model.network, layer),
                    layer,
                    chunk,
                    &Tensor::stack(&inits, 0)?,
                    &mut rngs,
                    steps,
                    &lo,
                    (m.mean, m.std),
                    &mut progress,
                )?;
                let images = (0..chunk.len())
                    .map(|k| lucid::to_picture(&a.images.get(k)?, opts.crop))
                    .collect::<Result<Vec<_>>>()?;
                (images, a.objectives, a.final_objectives)
            }
        };
        let batch = chunk
            .iter()
            .zip(images)
            .zip(losses.into_iter().zip(final_losses));
        for ((&filter, image), (losses, final_loss)) in batch {
            let pattern = FilterPattern {
                filter,
                image,
                losses,
                final_loss,
            };
            let index = out.len();
            let keep_going = on_progress(FilterProgress::Tile {
                index,
                image: &pattern.image,
            });
            out.push(pattern);
            if !keep_going {
                return Err(Error::Cancelled);
            }
        }
    }
    Ok(out)
}

/// Pictures side by side, `cols` per row, `gutter` white pixels between them (all pictures the
/// same size).
pub fn tile_grid(tiles: &[RgbImage], cols: usize, gutter: u32) -> RgbImage {
    let tile = tiles.first().map_or((0, 0), |t| t.dimensions());
    let layout = GridLayout::new(tiles.len(), cols, tile, gutter);
    let (w, h) = layout.size();
    let mut img = RgbImage::from_pixel(w, h, Rgb([255, 255, 255]));
    for (i, t) in tiles.iter().enumerate() {
        let (x, y) = layout.origin(i);
        image::imageops::replace(&mut img, t, i64::from(x), i64::from(y));
    }
    img
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn method_names() {
        assert_eq!("Chollet".parse::<FilterMethod>(), Ok(FilterMethod::Chollet));
        assert_eq!(" lucid".parse::<FilterMethod>(), Ok(FilterMethod::Lucid));
        assert_eq!(FilterMethod::Lucid.to_string(), "lucid");
        assert!(
            "deepdream"
                .parse::<FilterMethod>()
                .unwrap_err()
                .contains("chollet or lucid")
        );
    }

    #[test]
    fn seeded_starts_are_uniform_and_per_filter() -> Result<()> {
        let (mean, std) = ([0.5; 3], [0.5; 3]);
        let a = init_image(7, 3, 16, mean, std, &Device::Cpu)?;
        let b = init_image(7, 3, 16, mean, std, &Device::Cpu)?;
        let c = init_image(7, 4, 16, mean, std, &Device::Cpu)?;
        let a = a.flatten_all()?.to_vec1::<f32>()?;
        assert_eq!(a, b.flatten_all()?.to_vec1::<f32>()?);
        assert_ne!(a, c.flatten_all()?.to_vec1::<f32>()?);
        // U[0.4, 0.6] normalised with mean 0.5, std 0.5 lies in [-0.2, 0.2].
        assert!(a.iter().all(|v| (-0.2..=0.2).contains(v)));
        Ok(())
    }

    #[test]
    fn deprocessing_standardises_and_crops() -> Result<()> {
        let data: Vec<f32> = (0..3 * 8 * 8).map(|i| (i % 7) as f32).collect();
        let t = Tensor::from_vec(data, (3, 8, 8), &Device::Cpu)?;
        let img = deprocess(&t, [0.0; 3], [1.0; 3], 2)?;
        assert_eq!(img.dimensions(), (4, 4));
        let levels: Vec<u8> = img.as_raw().clone();
        assert!(levels.iter().any(|&v| v < 128) && levels.iter().any(|&v| v > 128));
        assert!(deprocess(&t, [0.0; 3], [1.0; 3], 4).is_err());
        Ok(())
    }

    #[test]
    fn tile_grid_places_tiles() {
        let tiles: Vec<RgbImage> = (0..3u8)
            .map(|i| RgbImage::from_pixel(2, 2, Rgb([i, i, i])))
            .collect();
        let g = tile_grid(&tiles, 2, 1);
        assert_eq!(g.dimensions(), (5, 5));
        assert_eq!(g.get_pixel(3, 0).0, [1, 1, 1]);
        assert_eq!(g.get_pixel(0, 3).0, [2, 2, 2]);
        assert_eq!(g.get_pixel(3, 3).0, [255, 255, 255]);
    }
}
