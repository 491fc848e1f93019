//! Pixel attributions: how much each input pixel counts for a class, as Captum 0.9 computes
//! them. Vanilla gradient saliency and SmoothGrad (here), Integrated Gradients
//! ([`integrated`]), occlusion ([`occlusion`]), guided backpropagation and Guided Grad-CAM
//! ([`guided`]). FullGrad ([`fullgrad`]) sums scaled gradient maps of every layer instead.
//! Each of the others gives an attribution per colour channel
//! (`[3, H, W]`, [`crate::viz::cam::Cam::attribution`]) and a map at the input's resolution.

pub mod fullgrad;
pub mod guided;
pub mod integrated;
pub mod occlusion;

use std::fmt;
use std::str::FromStr;

use candle_core::{Device, Tensor, Var};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::graph::Network;
use crate::viz::cam::{Cam, CamMethod, CamOptions, CamScore, resolve_class, score_target};
use crate::viz::check_range;
use crate::{Error, Result};

/// The image Integrated Gradients starts from.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Baseline {
    /// Every pixel black (0 before normalisation).
    #[default]
    Black,
    /// The image under a Gaussian blur ([`AttributionOptions::blur_sigma`]).
    Blurred,
    /// Uniform random pixels in `[0, 1]` before normalisation ([`AttributionOptions::seed`]).
    Uniform,
}

impl Baseline {
    /// Every baseline, in the order the GUI lists them.
    pub const ALL: [Baseline; 3] = [Baseline::Black, Baseline::Blurred, Baseline::Uniform];

    /// The command-line name.
    pub fn name(self) -> &'static str {
        match self {
            Baseline::Black => "black",
            Baseline::Blurred => "blurred",
            Baseline::Uniform => "uniform",
        }
    }
}

impl fmt::Display for Baseline {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Baseline {
    type Err = String;

    fn from_str(s: &str) -> std::result::Result<Self, String> {
        Baseline::ALL
            .into_iter()
            .find(|b| b.name() == s.trim().to_ascii_lowercase())
            .ok_or_else(|| format!("unknown baseline `{s}`; use black, blurred or uniform"))
    }
}

/// The parameters of the pixel methods (and AblationCAM's batch).
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct AttributionOptions {
    /// SmoothGrad: noisy copies averaged (1-256).
    pub samples: usize,
    /// SmoothGrad: the noise's standard deviation as a fraction of the input's range
    /// (max - min), as Smilkov et al. define the noise level (0-1).
    pub noise: f32,
    /// Integrated Gradients: Gauss-Legendre points on the path (Captum's default method;
    /// 1-512).
    pub steps: usize,
    pub baseline: Baseline,
    /// The blurred baseline's Gaussian standard deviation in pixels (0.5-64).
    pub blur_sigma: f32,
    /// Occlusion: the square window's side in pixels (1-512).
    pub window: usize,
    /// Occlusion: how far the window moves each step, in pixels (1-512).
    pub stride: usize,
    /// Images per forward for AblationCAM, SmoothGrad, Integrated Gradients and occlusion
    /// (1-256).
    pub batch: usize,
    /// The seed of SmoothGrad's noise and of the uniform baseline.
    pub seed: u64,
    /// The input's normalisation `(mean, std)` per channel, to make black and uniform
    /// baselines (set from the model's preprocessing; not saved in sidecars).
    #[serde(skip)]
    pub normalization: Option<([f32; 3], [f32; 3])>,
}

impl Default for AttributionOptions {
    fn default() -> Self {
        AttributionOptions {
            samples: 16,
            noise: 0.15,
            steps: 50,
            baseline: Baseline::Black,
            blur_sigma: 8.0,
            window: 16,
            stride: 8,
            batch: 16,
            seed: 0,
            normalization: None,
        }
    }
}

impl AttributionOptions {
    /// Errors, naming the option and its range, unless every parameter is within it.
    pub fn validate(&self) -> Result<()> {
        check_range("--samples", self.samples, 1..=256)?;
        check_range("--noise", self.noise, 0.0..=1.0)?;
        check_range("--steps", self.steps, 1..=512)?;
        check_range("--blur-sigma", self.blur_sigma, 0.5..=64.0)?;
        check_range("--window", self.window, 1..=512)?;
        check_range("--stride", self.stride, 1..=512)?;
        check_range("--batch", self.batch, 1..=256)
    }

    /// Whether every saved parameter is at its default (sidecars leave them out then).
    pub fn is_default(&self) -> bool {
        AttributionOptions {
            normalization: None,
            ..self.clone()
        } == AttributionOptions::default()
    }
}

/// Integrated Gradients' completeness check: the attributions should sum to the class score's
/// difference between the image and the baseline.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Completeness {
    /// `F(image) - F(baseline)`.
    pub score_difference: f32,
    /// The attributions' sum minus that difference (Captum's convergence delta).
    pub error: f32,
}

/// Computes a pixel method's map of `input` (`[1, 3, H, W]`).
pub(crate) fn compute(
    net: &Network,
    input: &Tensor,
    opts: &CamOptions,
    progress: &mut dyn FnMut(usize, usize) -> bool,
) -> Result<Cam> {
    if opts.method == CamMethod::FullGrad {
        return fullgrad::full_grad(net, input, opts);
    }
    let (_, channels, h, w) = input.dims4()?;
    let (class, prob) = resolve_class(&net.forward(input)?, opts.class)?;
    let a = &opts.attribution;
    let mut completeness = None;
    let attribution = match opts.method {
        CamMethod::Saliency => input_gradients(net, input, class, opts.score)?.abs()?,
        CamMethod::SmoothGrad => {
            let noise = gaussian_noise(input, a.samples, a.noise, a.seed)?;
            smoothgrad(net, input, &noise, class, opts.score, a.batch, progress)?
        }
        CamMethod::IntegratedGradients => {
            let baseline = integrated::baseline(input, a)?;
            let (attr, c) = integrated::integrated_gradients(
                net, input, &baseline, class, opts.score, a.steps, a.batch, progress,
            )?;
            completeness = Some(c);
            attr
        }
        CamMethod::Occlusion => occlusion::occlusion(
            net, input, class, opts.score, a.window, a.stride, a.batch, progress,
        )?,
        CamMethod::GuidedBackprop => guided::guided_backprop(net, input, class, opts.score)?,
        CamMethod::GuidedGradCam => guided::guided_grad_cam(net, input, opts, class)?,
        other => {
            return Err(Error::Model(format!(
                "`{other}` is a layer CAM, not a pixel method"
            )));
        }
    };
    let attribution = attribution
        .to_device(&Device::Cpu)?
        .flatten_all()?
        .to_vec1::<f32>()?;
    if let Some(bad) = attribution.iter().find(|v| !v.is_finite()) {
        return Err(Error::NonFinite {
            what: format!("the {} attribution of class {class}", opts.method),
            value: *bad,
        });
    }
    let plane = h * w;
    let reduced: Vec<f32> = (0..plane)
        .map(|p| {
            let at = |c: usize| attribution[c * plane + p];
            match opts.method {
                CamMethod::IntegratedGradients
                | CamMethod::GuidedBackprop
                | CamMethod::GuidedGradCam => (0..channels).map(at).sum(),
                CamMethod::Occlusion => (0..channels).map(at).sum::<f32>() / channels as f32,
                _ => (0..channels).map(at).fold(0.0, f32::max),
            }
        })
        .collect();
    let scale = reduced.iter().fold(0f32, |m, v| m.max(v.abs()));
    let map = reduced
        .iter()
        .map(|v| if scale > 0.0 { v / scale } else { 0.0 })
        .collect();
    Ok(Cam {
        method: opts.method,
        layer: "input".to_string(),
        class,
        prob,
        lowres: reduced,
        lowres_size: (h, w),
        map,
        size: (h, w),
        signed: opts.method.signed(),
        attribution: Some(attribution),
        completeness,
    })
}

/// The gradient of the class score with respect to each image of `x` (`[B, 3, H, W]` ->
/// the same shape; images do not mix).
pub fn input_gradients(net: &Network, x: &Tensor, class: usize, score: CamScore) -> Result<Tensor> {
    let var = Var::from_tensor(x)?;
    let logits = net.forward(var.as_tensor())?;
    let grads = score_target(&logits, class, score)?.backward()?;
    grads
        .get(var.as_tensor())
        .cloned()
        .ok_or_else(|| Error::Model("no gradient reached the input".into()))
}

/// `n` noise images `[n, 3, H, W]` of standard deviation `level * (max - min)` of `input`,
/// from a normal distribution (Box-Muller on a ChaCha8 stream seeded by `seed`).
pub fn gaussian_noise(input: &Tensor, n: usize, level: f32, seed: u64) -> Result<Tensor> {
    let (_, c, h, w) = input.dims4()?;
    let v = input
        .flatten_all()?
        .to_device(&Device::Cpu)?
        .to_vec1::<f32>()?;
    let (min, max) = v
        .iter()
        .fold((f32::INFINITY, f32::NEG_INFINITY), |(lo, hi), &x| {
            (lo.min(x), hi.max(x))
        });
    let stdev = f64::from(level * (max - min));
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let count = n * c * h * w;
    let mut noise = Vec::with_capacity(count + 1);
    while noise.len() < count {
        let u1: f64 = 1.0 - rng.random::<f64>();
        let u2: f64 = rng.random::<f64>();
        let r = (-2.0 * u1.ln()).sqrt() * stdev;
        let t = std::f64::consts::TAU * u2;
        noise.push((r * t.cos()) as f32);
        noise.push((r * t.sin()) as f32);
    }
    noise.truncate(count);
    Ok(Tensor::from_vec(noise, (n, c, h, w), &Device::Cpu)?.to_device(input.device())?)
}

/// SmoothGrad (Captum's `NoiseTunnel(Saliency)`, `smoothgrad`): the mean over the noise images
/// `noise` (`[n, 3, H, W]`) of `|d score / d (input + noise_i)|`, `batch` images per pass.
pub fn smoothgrad(
    net: &Network,
    input: &Tensor,
    noise: &Tensor,
    class: usize,
    score: CamScore,
    batch: usize,
    progress: &mut dyn FnMut(usize, usize) -> bool,
) -> Result<Tensor> {
    let n = noise.dim(0)?;
    let mut sum: Option<Tensor> = None;
    for start in (0..n).step_by(batch.max(1)) {
        if !progress(start, n) {
            return Err(Error::Cancelled);
        }
        let len = batch.max(1).min(n - start);
        let noisy = noise.narrow(0, start, len)?.broadcast_add(input)?;
        let g = input_gradients(net, &noisy, class, score)?
            .abs()?
            .sum_keepdim(0)?;
        sum = Some(match sum {
            Some(s) => (s + g)?,
            None => g,
        });
    }
    progress(n, n);
    let sum = sum.ok_or_else(|| Error::Model("SmoothGrad needs at least one sample".into()))?;
    Ok((sum / n as f64)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn noise_has_the_asked_spread_and_repeats_with_its_seed() {
        let x = Tensor::from_vec(vec![0f32, 2.0, 1.0, 1.0], (1, 1, 2, 2), &Device::Cpu).unwrap();
        let a = gaussian_noise(&x, 2000, 0.25, 7).unwrap();
        let b = gaussian_noise(&x, 2000, 0.25, 7).unwrap();
        let v = a.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        assert_eq!(v, b.flatten_all().unwrap().to_vec1::<f32>().unwrap());
        let mean = v.iter().sum::<f32>() / v.len() as f32;
        let sd = (v.iter().map(|x| (x - mean).powi(2)).sum::<f32>() / v.len() as f32).sqrt();
        // 0.25 x range 2 = 0.5; 8000 draws: the sample sd is within 3% of it.
        assert!(
            mean.abs() < 0.03 && (sd - 0.5).abs() < 0.015,
            "mean {mean}, sd {sd}"
        );
    }

    #[test]
    fn options_out_of_range_name_the_option() {
        let mut o = AttributionOptions::default();
        assert!(o.validate().is_ok() && o.is_default());
        o.steps = 0;
        assert!(o.validate().unwrap_err().to_string().contains("--steps"));
    }
}
