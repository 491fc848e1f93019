//! Integrated Gradients (Sundararajan et al. 2017) as Captum 0.9's default: the gradients at
//! `baseline + alpha (x - baseline)` for the Gauss-Legendre points `alpha` on `[0, 1]`,
//! weighted by the quadrature weights, summed, times `x - baseline`; and the baselines.

use candle_core::{Device, Tensor};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::{AttributionOptions, Baseline, Completeness, input_gradients};
use crate::graph::Network;
use crate::viz::cam::{CamScore, class_scores};
use crate::{Error, Result};

/// Gauss-Legendre quadrature on `[-1, 1]` with `n` points, ascending (numpy's `leggauss`):
/// `(nodes, weights)`, by Newton's method on the Legendre polynomial in f64.
pub fn leggauss(n: usize) -> (Vec<f64>, Vec<f64>) {
    let mut nodes = vec![0.0; n];
    let mut weights = vec![0.0; n];
    for i in 0..n {
        // Descending initial guesses; the result is reversed below.
        let mut x = (std::f64::consts::PI * (i as f64 + 0.75) / (n as f64 + 0.5)).cos();
        let mut dp = 1.0;
        for _ in 0..100 {
            let (p, d) = legendre(n, x);
            dp = d;
            let dx = p / d;
            x -= dx;
            if dx.abs() < 1e-16 {
                break;
            }
        }
        let (_, d) = legendre(n, x);
        if d.is_finite() {
            dp = d;
        }
        nodes[n - 1 - i] = x;
        weights[n - 1 - i] = 2.0 / ((1.0 - x * x) * dp * dp);
    }
    (nodes, weights)
}

/// `P_n(x)` and `P_n'(x)` by the three-term recurrence.
fn legendre(n: usize, x: f64) -> (f64, f64) {
    let (mut p0, mut p1) = (1.0, x);
    if n == 0 {
        return (1.0, 0.0);
    }
    for k in 2..=n {
        let k = k as f64;
        let p2 = ((2.0 * k - 1.0) * x * p1 - (k - 1.0) * p0) / k;
        p0 = p1;
        p1 = p2;
    }
    let d = n as f64 * (x * p1 - p0) / (x * x - 1.0);
    (p1, d)
}

/// The baseline image for `input` (`[1, 3, H, W]`, normalised) that `opts.baseline` names.
pub fn baseline(input: &Tensor, opts: &AttributionOptions) -> Result<Tensor> {
    let (_, c, h, w) = input.dims4()?;
    let norm = || {
        opts.normalization.ok_or_else(|| {
            Error::Model(format!(
                "the {} baseline needs the model's input normalisation",
                opts.baseline
            ))
        })
    };
    let pixels: Vec<f32> = match opts.baseline {
        Baseline::Blurred => return blur(input, opts.blur_sigma),
        Baseline::Black => vec![0.0; c * h * w],
        Baseline::Uniform => {
            let mut rng = ChaCha8Rng::seed_from_u64(opts.seed);
            (0..c * h * w).map(|_| rng.random::<f32>()).collect()
        }
    };
    let (mean, std) = norm()?;
    let plane = h * w;
    let v: Vec<f32> = pixels
        .iter()
        .enumerate()
        .map(|(i, p)| {
            let ch = (i / plane).min(2);
            (p - mean[ch]) / std[ch]
        })
        .collect();
    Ok(Tensor::from_vec(v, (1, c, h, w), &Device::Cpu)?.to_device(input.device())?)
}

/// A Gaussian blur of each channel as `scipy.ndimage.gaussian_filter(x, sigma, mode="nearest",
/// truncate=3)` over the two spatial axes: rows first, then columns; radius
/// `int(3 sigma + 0.5)`, edges repeated, weights and sums in f64.
pub fn blur(input: &Tensor, sigma: f32) -> Result<Tensor> {
    let (b, c, h, w) = input.dims4()?;
    let v = input
        .to_device(&Device::Cpu)?
        .flatten_all()?
        .to_vec1::<f32>()?;
    let sigma = f64::from(sigma);
    let radius = (3.0 * sigma + 0.5) as i64;
    let mut kernel: Vec<f64> = (-radius..=radius)
        .map(|x| (-0.5 / (sigma * sigma) * (x * x) as f64).exp())
        .collect();
    let total: f64 = kernel.iter().sum();
    for k in &mut kernel {
        *k /= total;
    }
    let pass = |src: &[f32], len: usize, step: usize, count: usize, inner: usize| {
        // `count` lines of `len` values `step` apart, starting at `o * len * step + i`.
        let mut out = vec![0f32; src.len()];
        for o in 0..count {
            for i in 0..inner {
                let base = o * len * step + i;
                for p in 0..len {
                    let acc: f64 = kernel
                        .iter()
                        .enumerate()
                        .map(|(k, &wk)| {
                            let q = (p as i64 + k as i64 - radius).clamp(0, len as i64 - 1);
                            wk * f64::from(src[base + q as usize * step])
                        })
                        .sum();
                    out[base + p * step] = acc as f32;
                }
            }
        }
        out
    };
    // Along the rows' axis (H): lines of h values w apart; then along W: lines of w values.
    let once = pass(&v, h, w, b * c, w);
    let twice = pass(&once, w, 1, b * c * h, 1);
    Ok(Tensor::from_vec(twice, (b, c, h, w), &Device::Cpu)?.to_device(input.device())?)
}

/// Integrated Gradients of `input` (`[1, 3, H, W]`) from `baseline` (same shape) with `steps`
/// Gauss-Legendre points, `batch` path images per pass: the attributions `[1, 3, H, W]` and
/// the completeness check.
#[allow(clippy::too_many_arguments)]
pub fn integrated_gradients(
    net: &Network,
    input: &Tensor,
    baseline: &Tensor,
    class: usize,
    score: CamScore,
    steps: usize,
    batch: usize,
    progress: &mut dyn FnMut(usize, usize) -> bool,
) -> Result<(Tensor, Completeness)> {
    let (nodes, weights) = leggauss(steps);
    let alphas: Vec<f64> = nodes.iter().map(|x| 0.5 * (1.0 + x)).collect();
    let step_sizes: Vec<f64> = weights.iter().map(|w| 0.5 * w).collect();
    let delta = (input - baseline)?;
    let mut total: Option<Tensor> = None;
    let batch = batch.max(1);
    for start in (0..steps).step_by(batch) {
        if !progress(start, steps) {
            return Err(Error::Cancelled);
        }
        let end = (start + batch).min(steps);
        let path = (start..end)
            .map(|i| Ok(((&delta * alphas[i])? + baseline)?))
            .collect::<Result<Vec<_>>>()?;
        let g = input_gradients(net, &Tensor::cat(&path, 0)?, class, score)?;
        let sizes = Tensor::from_vec(
            step_sizes[start..end]
                .iter()
                .map(|&s| s as f32)
                .collect::<Vec<_>>(),
            (end - start, 1, 1, 1),
            &Device::Cpu,
        )?
        .to_device(input.device())?;
        let scaled = g.broadcast_mul(&sizes)?.sum_keepdim(0)?;
        total = Some(match total {
            Some(t) => (t + scaled)?,
            None => scaled,
        });
    }
    progress(steps, steps);
    let total = total.ok_or_else(|| Error::Model("Integrated Gradients needs a step".into()))?;
    let attribution = (total * &delta)?;
    let ends = class_scores(
        &net.forward(&Tensor::cat(&[input, baseline], 0)?)?,
        class,
        score,
    )?;
    let score_difference = ends[0] - ends[1];
    let sum = attribution
        .sum_all()?
        .to_device(&Device::Cpu)?
        .to_scalar::<f32>()?;
    Ok((
        attribution,
        Completeness {
            score_difference,
            error: sum - score_difference,
        },
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn leggauss_matches_numpy() {
        // numpy.polynomial.legendre.leggauss(3): nodes -sqrt(3/5), 0, sqrt(3/5), weights
        // 5/9, 8/9, 5/9.
        let (x, w) = leggauss(3);
        let r = (0.6f64).sqrt();
        for (a, b) in x.iter().zip([-r, 0.0, r]) {
            assert!((a - b).abs() < 1e-14, "{x:?}");
        }
        for (a, b) in w.iter().zip([5.0 / 9.0, 8.0 / 9.0, 5.0 / 9.0]) {
            assert!((a - b).abs() < 1e-14, "{w:?}");
        }
        // 50 points integrate x^10 on [-1, 1] (2/11) exactly.
        let (x, w) = leggauss(50);
        let integral: f64 = x.iter().zip(&w).map(|(x, w)| w * x.powi(10)).sum();
        assert!((integral - 2.0 / 11.0).abs() < 1e-13, "{integral}");
    }

    #[test]
    fn blur_of_a_constant_is_the_constant_and_spreads_a_spike_symmetrically() {
        let mut v = vec![1f32; 9 * 9];
        let t = Tensor::from_vec(v.clone(), (1, 1, 9, 9), &Device::Cpu).unwrap();
        let out = blur(&t, 1.0)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        assert!(out.iter().all(|x| (x - 1.0).abs() < 1e-6));
        v.iter_mut().for_each(|x| *x = 0.0);
        v[4 * 9 + 4] = 1.0;
        let t = Tensor::from_vec(v, (1, 1, 9, 9), &Device::Cpu).unwrap();
        let out = blur(&t, 1.0)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        assert!((out[4 * 9 + 3] - out[4 * 9 + 5]).abs() < 1e-7);
        assert!((out[3 * 9 + 4] - out[4 * 9 + 3]).abs() < 1e-7);
        assert!((out.iter().sum::<f32>() - 1.0).abs() < 1e-5);
    }
}
