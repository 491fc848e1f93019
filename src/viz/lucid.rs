//! The `lucid` filter preset: feature visualisation as in tensorflow/lucid (Olah et al.,
//! *Feature Visualization*, Distill 2017) and its PyTorch port lucent.
//!
//! Each image is parameterised by a half spectrum `[3, S, S/2+1, 2]` (lucid's
//! `image(S, fft=True, decorrelate=True)`): the spectrum, initialised `N(0, sd^2)`, is scaled by
//! `1 / max(f, 1/S)^decay` (`f` the frequency magnitude, so that every frequency band starts
//! with similar energy), transformed back by [`irfft2`](crate::ops::irfft2) (`norm="ortho"`),
//! divided by 4, its colours mixed by the square root of ImageNet's colour correlation
//! (`color_correlation_svd_sqrt`, normalised by its largest column norm) and squashed by a
//! sigmoid into `[0, 1]`.
//!
//! Each Adam step (`lr 0.05`) applies lucid's `standard_transforms` with fresh random draws: pad
//! 12 px with 0.5, jitter up to 8 px, scale by one of `0.90, 0.92 .. 1.10`, rotate by one of
//! `-10 .. 10` degrees (0 five times more often), jitter up to 4 px. They are composed into one
//! bilinear warp of the padded image to `S + 12` px (lucid resamples after the scale and again
//! after the rotation, and its scale changes the image size; here the scale zooms about the
//! centre at a fixed size, which keeps a batch rectangular). The model's normalisation follows
//! (padding, warp and normalisation run as one op, [`framed_warp`]); the objective is the mean
//! activation of the image's filter over the whole map.
//!
//! Filter `f`'s spectrum and its transforms come from stream `f` of
//! `ChaCha8Rng::seed_from_u64(seed)`, and every operation acts on each batch element alone, so
//! a filter's picture does not depend on the other filters computed with it.

use std::f64::consts::PI;

use candle_core::{DType, Device, Tensor, Var};
use image::{Rgb, RgbImage};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::filters::{TapFn, losses};
use crate::ops::{Affine, Frame, Irfft2, fourier, framed_warp};
use crate::train::optim::{Optimizer, OptimizerKind};
use crate::{Error, Result};

/// lucid's `color_correlation_svd_sqrt`: row `c` mixes the decorrelated channels into RGB
/// channel `c`.
pub const COLOR_CORRELATION_SVD_SQRT: [[f64; 3]; 3] =
    [[0.26, 0.09, 0.02], [0.27, 0.00, -0.05], [0.27, -0.09, 0.03]];

/// lucid's division of the Fourier image before the colour mixing ("magic" 4).
const MAGIC: f64 = 4.0;

/// The parameters of the `lucid` preset (lucid's defaults).
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct LucidOptions {
    /// Adam's learning rate (0.05; betas 0.9, 0.999, eps 1e-8).
    pub learning_rate: f64,
    /// Standard deviation of the initial spectrum (0.01).
    pub init_sd: f64,
    /// The spectrum's scale falls as `1 / f^decay_power` (1).
    pub decay_power: f64,
    /// Padding before the transforms, pixels (12).
    pub pad: usize,
    /// The padding's value (0.5, mid-grey).
    pub pad_value: f32,
    /// Largest random shift before the scale and rotation, pixels (8).
    pub jitter: usize,
    /// Largest random shift after them, pixels (4).
    pub jitter_after: usize,
    /// The scales drawn from (`1 + (i - 5) / 50` for `i` in `0..11`).
    pub scales: Vec<f64>,
    /// The rotations drawn from, degrees (`-10..=10` and five more zeros).
    pub angles: Vec<f64>,
}

impl Default for LucidOptions {
    fn default() -> Self {
        LucidOptions {
            learning_rate: 0.05,
            init_sd: 0.01,
            decay_power: 1.0,
            pad: 12,
            pad_value: 0.5,
            jitter: 8,
            jitter_after: 4,
            scales: (0..11).map(|i| 1.0 + (i as f64 - 5.0) / 50.0).collect(),
            angles: (-10..=10).chain([0; 5]).map(f64::from).collect(),
        }
    }
}

impl LucidOptions {
    /// Checks that the options make a usable transform for `size`-pixel images.
    pub fn check(&self, size: usize) -> Result<()> {
        if self.scales.is_empty() || self.angles.is_empty() {
            return Err(Error::Model(
                "lucid: the lists of scales and angles must not be empty".into(),
            ));
        }
        if let Some(s) = self.scales.iter().find(|s| !(**s > 0.0 && s.is_finite())) {
            return Err(Error::Model(format!("lucid: scale {s} is not positive")));
        }
        if size + 2 * self.pad <= self.jitter + self.jitter_after {
            return Err(Error::Model(format!(
                "lucid: jitters of {} and {} px leave nothing of a {size}-px image padded by {}",
                self.jitter, self.jitter_after, self.pad
            )));
        }
        Ok(())
    }

    /// The side of the transformed images the network sees: `size + 2 pad - jitter -
    /// jitter_after`.
    pub fn transformed_size(&self, size: usize) -> usize {
        size + 2 * self.pad - self.jitter - self.jitter_after
    }

    /// One random draw of the transforms for a `size`-pixel image: the map from a pixel of the
    /// transformed image to the padded image it samples (see the module doc). Draws, in order:
    /// the first jitter (x, y), the scale, the angle, the second jitter (x, y).
    pub fn random_transform(&self, size: usize, rng: &mut ChaCha8Rng) -> Affine {
        let a1 = (
            rng.random_range(0..=self.jitter) as f64,
            rng.random_range(0..=self.jitter) as f64,
        );
        let scale = self.scales[rng.random_range(0..self.scales.len())];
        let degrees = self.angles[rng.random_range(0..self.angles.len())];
        let a2 = (
            rng.random_range(0..=self.jitter_after) as f64,
            rng.random_range(0..=self.jitter_after) as f64,
        );
        // Centre of the image after the first jitter (`padded - jitter` pixels).
        let c = (size + 2 * self.pad - self.jitter) as f64 / 2.0 - 0.5;
        Affine::translate(a1.0, a1.1).after(&Affine::scale_about(1.0 / scale, c, c).after(
            &Affine::rotate_about(degrees * PI / 180.0, c, c).after(&Affine::translate(a2.0, a2.1)),
        ))
    }
}

/// `N(0, sd^2)` samples by Box-Muller from `rng`'s uniforms (deterministic per stream).
fn normals(rng: &mut ChaCha8Rng, n: usize, sd: f64) -> Vec<f32> {
    let mut out = Vec::with_capacity(n + 1);
    while out.len() < n {
        let u1 = 1.0 - rng.random::<f64>(); // (0, 1]
        let u2 = rng.random::<f64>();
        let r = (-2.0 * u1.ln()).sqrt() * sd;
        let (s, c) = (2.0 * PI * u2).sin_cos();
        out.push((r * c) as f32);
        out.push((r * s) as f32);
    }
    out.truncate(n);
    out
}

/// Filter `filter`'s random stream: its initial spectrum comes first, then its transforms.
pub fn filter_rng(seed: u64, filter: usize) -> ChaCha8Rng {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    rng.set_stream(filter as u64);
    rng
}

/// The initial half spectrum of one image, `[3, size, size/2+1, 2]`, drawn from `rng`.
pub fn init_spectrum(
    rng: &mut ChaCha8Rng,
    size: usize,
    opts: &LucidOptions,
    device: &Device,
) -> Result<Tensor> {
    let k = fourier::half_width(size);
    let v = normals(rng, 3 * size * k * 2, opts.init_sd);
    Ok(Tensor::from_vec(v, (3, size, k, 2), device)?)
}

/// The Fourier, colour-decorrelated image parameterisation for `size`-pixel images.
#[derive(Clone, Debug)]
pub struct FourierImage {
    size: usize,
    /// The transform with the spectrum's scale `1 / max(f, 1/size)^decay / 4` inside.
    irfft: Irfft2,
    /// `[3, 3]`: the colour mixing, normalised by its largest column norm.
    color: Tensor,
}

impl FourierImage {
    /// The parameterisation of `size x size` images.
    pub fn new(size: usize, opts: &LucidOptions, device: &Device) -> Result<Self> {
        let floor = 1.0 / size as f64;
        let scale: Vec<f32> = fourier::rfft2_frequencies(size, size)
            .iter()
            .map(|&f| (1.0 / f.max(floor).powf(opts.decay_power) / MAGIC) as f32)
            .collect();
        let m = COLOR_CORRELATION_SVD_SQRT;
        let max_norm = (0..3)
            .map(|col| (0..3).map(|r| m[r][col] * m[r][col]).sum::<f64>().sqrt())
            .fold(0.0, f64::max);
        let color: Vec<f32> = m.iter().flatten().map(|v| (v / max_norm) as f32).collect();
        Ok(FourierImage {
            size,
            irfft: Irfft2::new(size, size, DType::F32, device)?.with_scale(scale, device)?,
            color: Tensor::from_vec(color, (3, 3), device)?,
        })
    }

    /// `spectrum [B, 3, size, size/2+1, 2]` -> images `[B, 3, size, size]` in `(0, 1)`,
    /// differentiable w.r.t. the spectrum.
    pub fn render(&self, spectrum: &Tensor) -> Result<Tensor> {
        let b = spectrum.dim(0)?;
        let s = self.size;
        let img = self.irfft.apply(spectrum)?;
        let mixed = self
            .color
            .broadcast_matmul(&img.reshape((b, 3, s * s))?)?
            .reshape((b, 3, s, s))?;
        Ok(candle_nn::ops::sigmoid(&mixed)?)
    }
}

/// The result of [`ascend`] on a batch.
#[derive(Clone, Debug)]
pub struct LucidAscent {
    /// The final images `[n, 3, size, size]` in `(0, 1)` (not transformed).
    pub images: Tensor,
    /// `objectives[i][s]`: image `i`'s objective (its filter's mean activation) at step `s`,
    /// on that step's transformed image.
    pub objectives: Vec<Vec<f32>>,
    /// Each final image's objective, untransformed.
    pub final_objectives: Vec<f32>,
}

/// Adam ascent of one batch: image `i` maximises the mean activation of filter `filters[i]` of
/// the `tap`'s layer, starting from spectrum `init` `[n, 3, size, size/2+1, 2]` and drawing its
/// transforms from `rngs[i]`. `mean`, `std`: the model's input normalisation. `progress(step)`
/// is called before each step and cancels ([`Error::Cancelled`]) when it returns `false`.
#[allow(clippy::too_many_arguments)]
pub fn ascend(
    tap: &TapFn,
    layer: &str,
    filters: &[usize],
    init: &Tensor,
    rngs: &mut [ChaCha8Rng],
    steps: usize,
    opts: &LucidOptions,
    (mean, std): ([f32; 3], [f32; 3]),
    progress: &mut dyn FnMut(usize) -> bool,
) -> Result<LucidAscent> {
    let (n, _, size, _, _) = init.dims5()?;
    if rngs.len() != n || filters.len() != n {
        return Err(Error::Model(format!(
            "lucid: {n} spectra, {} filters and {} random streams: give one of each per image",
            filters.len(),
            rngs.len()
        )));
    }
    opts.check(size)?;
    // Every step runs the same frozen network: its Winograd kernels are transformed once.
    let _kept = crate::ops::KeptKernels::scope();
    let device = init.device();
    let param = FourierImage::new(size, opts, device)?;
    let out = opts.transformed_size(size);
    let mean_t = Tensor::from_vec(mean.to_vec(), (1, 3, 1, 1), device)?;
    let std_t = Tensor::from_vec(std.to_vec(), (1, 3, 1, 1), device)?;
    let normalise =
        |x: &Tensor| -> Result<Tensor> { Ok(x.broadcast_sub(&mean_t)?.broadcast_div(&std_t)?) };
    let frame = Frame {
        pad: opts.pad,
        pad_value: opts.pad_value,
        mean: mean.to_vec(),
        std: std.to_vec(),
    };
    let var = Var::from_tensor(&init.to_dtype(DType::F32)?)?;
    let mut adam = Optimizer::new(
        OptimizerKind::AdamW { weight_decay: 0.0 },
        vec![var.clone()],
        opts.learning_rate,
    )?;
    let mut objectives = vec![Vec::with_capacity(steps); n];
    for step in 0..steps {
        if !progress(step) {
            return Err(Error::Cancelled);
        }
        let image = param.render(var.as_tensor())?;
        let maps: Vec<Affine> = rngs
            .iter_mut()
            .map(|rng| opts.random_transform(size, rng))
            .collect();
        // Padding, warp and normalisation in one op (the same values as those three steps).
        let warped = framed_warp(&image, &maps, (out, out), &frame)?;
        let (values, total) = losses(tap, layer, filters, &warped, 0)?;
        for (o, v) in objectives.iter_mut().zip(values) {
            o.push(v);
        }
        adam.backward_step(&total.neg()?)?;
    }
    let images = param.render(var.as_tensor())?.detach();
    let (final_objectives, _) = losses(tap, layer, filters, &normalise(&images)?, 0)?;
    Ok(LucidAscent {
        images,
        objectives,
        final_objectives,
    })
}

/// One image `[3, s, s]` in `[0, 1]` as a picture: `round(255 v)`, `crop` pixels cut from each
/// side.
pub fn to_picture(image: &Tensor, crop: usize) -> Result<RgbImage> {
    let (c, h, w) = image.dims3()?;
    if c != 3 || h <= 2 * crop || w <= 2 * crop {
        return Err(Error::Model(format!(
            "cannot make a picture of a {c}x{h}x{w} image cropping {crop} px per side"
        )));
    }
    let v = image
        .to_device(&Device::Cpu)?
        .to_dtype(DType::F32)?
        .flatten_all()?
        .to_vec1::<f32>()?;
    let plane = h * w;
    let level = |x: f32| (x * 255.0).round().clamp(0.0, 255.0) as u8;
    let (ow, oh) = ((w - 2 * crop) as u32, (h - 2 * crop) as u32);
    Ok(RgbImage::from_fn(ow, oh, |x, y| {
        let i = (y as usize + crop) * w + x as usize + crop;
        Rgb([level(v[i]), level(v[plane + i]), level(v[2 * plane + i])])
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_lucids() {
        let o = LucidOptions::default();
        assert_eq!(o.scales.len(), 11);
        assert!((o.scales[0] - 0.9).abs() < 1e-12 && (o.scales[10] - 1.1).abs() < 1e-12);
        assert_eq!(o.angles.len(), 26);
        assert_eq!(o.angles.iter().filter(|a| **a == 0.0).count(), 6);
        assert_eq!(o.transformed_size(128), 140);
        assert!(o.check(128).is_ok());
        let bad = LucidOptions {
            jitter: 40,
            ..LucidOptions::default()
        };
        assert!(bad.check(16).unwrap_err().to_string().contains("16-px"));
    }

    #[test]
    fn transforms_stay_inside_the_padded_image_and_are_seeded() {
        let o = LucidOptions::default();
        let (size, padded) = (32, 56.0);
        let out = o.transformed_size(size) as f64;
        let mut a = filter_rng(3, 1);
        let mut b = filter_rng(3, 1);
        let mut c = filter_rng(3, 2);
        let mut differs = false;
        for _ in 0..50 {
            let (ma, mb, mc) = (
                o.random_transform(size, &mut a),
                o.random_transform(size, &mut b),
                o.random_transform(size, &mut c),
            );
            assert_eq!(ma, mb);
            differs |= ma != mc;
            // The corners of the output land within a few pixels of the padded image (the
            // worst case scales by 1/0.9 and rotates by 10 degrees).
            for (x, y) in [
                (0.0, 0.0),
                (out - 1.0, 0.0),
                (0.0, out - 1.0),
                (out - 1.0, out - 1.0),
            ] {
                let (sx, sy) = ma.apply(x, y);
                assert!(sx > -10.0 && sy > -10.0 && sx < padded + 10.0 && sy < padded + 10.0);
            }
        }
        assert!(differs);
        // Without randomness (one scale, one angle, no jitter) the map is a pure crop by the
        // padding difference.
        let plain = LucidOptions {
            jitter: 0,
            jitter_after: 0,
            scales: vec![1.0],
            angles: vec![0.0],
            ..o
        };
        let m = plain.random_transform(size, &mut a);
        let (x, y) = m.apply(5.0, 7.0);
        assert!((x - 5.0).abs() < 1e-12 && (y - 7.0).abs() < 1e-12);
    }

    #[test]
    fn the_parameterisation_is_lucids() -> Result<()> {
        let dev = Device::Cpu;
        let o = LucidOptions::default();
        let size = 8;
        let p = FourierImage::new(size, &o, &dev)?;
        // A zero spectrum is a mid-grey image.
        let zero = Tensor::zeros((1, 3, size, 5, 2), DType::F32, &dev)?;
        let grey = p.render(&zero)?.flatten_all()?.to_vec1::<f32>()?;
        assert!(grey.iter().all(|v| (v - 0.5).abs() < 1e-7));
        // A DC coefficient d in decorrelated channel 0 gives RGB sigmoid(M[c][0] / max_norm *
        // d * scale(0) / sqrt(64)) everywhere: scale(0) = size / 4.
        let mut v = vec![0f32; 3 * size * 5 * 2];
        v[0] = 1.0;
        let dc = Tensor::from_vec(v, (1, 3, size, 5, 2), &dev)?;
        let img = p.render(&dc)?.flatten_all()?.to_vec1::<f32>()?;
        let m = COLOR_CORRELATION_SVD_SQRT;
        let max_norm = (0.26f64 * 0.26 + 0.27 * 0.27 + 0.27 * 0.27).sqrt();
        for c in 0..3 {
            let t = m[c][0] / max_norm * (size as f64 / 4.0) / 8.0;
            let want = 1.0 / (1.0 + (-t).exp());
            let got = img[c * 64 + 17];
            assert!(
                (f64::from(got) - want).abs() < 1e-6,
                "channel {c}: {got} vs {want}"
            );
        }
        Ok(())
    }

    #[test]
    fn seeded_spectra_are_per_filter() -> Result<()> {
        let o = LucidOptions::default();
        let a = init_spectrum(&mut filter_rng(1, 4), 16, &o, &Device::Cpu)?;
        let b = init_spectrum(&mut filter_rng(1, 4), 16, &o, &Device::Cpu)?;
        let c = init_spectrum(&mut filter_rng(1, 5), 16, &o, &Device::Cpu)?;
        assert_eq!(a.dims(), [3, 16, 9, 2]);
        let a = a.flatten_all()?.to_vec1::<f32>()?;
        assert_eq!(a, b.flatten_all()?.to_vec1::<f32>()?);
        assert_ne!(a, c.flatten_all()?.to_vec1::<f32>()?);
        let n = a.len() as f32;
        let mean = a.iter().sum::<f32>() / n;
        let sd = (a.iter().map(|v| (v - mean) * (v - mean)).sum::<f32>() / n).sqrt();
        assert!(mean.abs() < 2e-3 && (sd - 0.01).abs() < 1e-3, "{mean} {sd}");
        Ok(())
    }

    #[test]
    fn pictures_round_and_crop() -> Result<()> {
        let v: Vec<f32> = (0..3 * 4 * 4).map(|i| i as f32 / 47.0).collect();
        let t = Tensor::from_vec(v, (3, 4, 4), &Device::Cpu)?;
        let p = to_picture(&t, 1)?;
        assert_eq!(p.dimensions(), (2, 2));
        // Pixel (0, 0) is (1, 1) of the image: index 5 of each plane.
        let want = |i: usize| (i as f32 / 47.0 * 255.0).round() as u8;
        assert_eq!(p.get_pixel(0, 0).0, [want(5), want(21), want(37)]);
        assert!(to_picture(&t, 2).is_err());
        Ok(())
    }
}
