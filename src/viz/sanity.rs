//! The model-randomisation sanity check (Adebayo et al. 2018, "Sanity Checks for Saliency
//! Maps"): the weights are re-randomised stage by stage from the top (logits first, down to the
//! stem), keeping the input and the class, and the map is recomputed after each stage. A map
//! that explains the model must change; one that stays alike (Spearman rank correlation and
//! SSIM to the original near 1) shows the image, not the model, and is flagged.
//!
//! A stage's tensors are redrawn from a normal distribution with each tensor's own mean and
//! standard deviation (seeded, stream `sanity/<tensor name>` of
//! [`super::faithfulness::noise::normal`]), so activations keep their scale.

use candle_core::Tensor;

use super::faithfulness::noise;
use crate::graph::Network;
use crate::{Error, Result};

/// A map whose Spearman rank correlation with the original stays at or above this while the
/// top half of the stages is randomised is flagged as not depending on the model (see
/// [`is_flagged`]).
pub const FLAG_SPEARMAN: f32 = 0.5;

/// The map after one more stage was randomised.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct SanityStep {
    /// The stage randomised at this step (every stage above it already is).
    pub stage: String,
    /// Spearman rank correlation with the original map (NaN when either map is constant or the
    /// model's output stopped being a number).
    pub spearman: f32,
    /// SSIM with the original map (NaN as above).
    pub ssim: f32,
    /// The map (`[h * w]`), empty when it could not be computed.
    #[serde(skip)]
    pub map: Vec<f32>,
}

/// The whole cascade.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Sanity {
    /// The original map (`[h * w]`).
    #[serde(skip)]
    pub original: Vec<f32>,
    /// `(h, w)` of the maps.
    pub size: (usize, usize),
    /// One entry per randomised stage, top first.
    pub steps: Vec<SanityStep>,
    /// Whether the map did not change enough ([`is_flagged`]).
    pub flagged: bool,
}

/// The stages with weights, from the output down (the cascade's order).
pub fn cascade_stages(net: &mut Network) -> Vec<String> {
    let ids: Vec<String> = net.layer_ids().map(str::to_string).collect();
    ids.into_iter()
        .rev()
        .filter(|id| {
            net.tensors_mut_from(id)
                .map(|t| {
                    t.iter()
                        .any(|(name, _)| name.starts_with(&format!("{id}.")))
                })
                .unwrap_or(false)
        })
        .collect()
}

/// Replaces every tensor of stage `id` by seeded normal values with the tensor's mean and
/// standard deviation.
pub fn randomise_stage(net: &mut Network, id: &str, seed: u64) -> Result<()> {
    let prefix = format!("{id}.");
    for (name, t) in net.tensors_mut_from(id)? {
        if !name.starts_with(&prefix) {
            continue;
        }
        let values = t
            .flatten_all()?
            .to_dtype(candle_core::DType::F32)?
            .to_vec1::<f32>()?;
        let n = values.len().max(1) as f64;
        let mean = values.iter().map(|&v| f64::from(v)).sum::<f64>() / n;
        let var = values
            .iter()
            .map(|&v| (f64::from(v) - mean).powi(2))
            .sum::<f64>()
            / n;
        let std = var.sqrt();
        let fresh: Vec<f32> = noise::normal(seed, &format!("sanity/{name}"), values.len())
            .into_iter()
            .map(|g| (mean + std * f64::from(g)) as f32)
            .collect();
        *t = Tensor::from_vec(fresh, t.dims(), t.device())?.to_dtype(t.dtype())?;
    }
    Ok(())
}

/// Runs the cascade on `net` (its weights are changed: pass a copy). `map_of(net)` computes the
/// map (`[h * w]`) of the fixed input and class; `progress(done, total)` counts maps and
/// cancels by returning `false`.
pub fn cascade(
    net: &mut Network,
    size: (usize, usize),
    seed: u64,
    map_of: &mut dyn FnMut(&Network) -> Result<Vec<f32>>,
    progress: &mut dyn FnMut(usize, usize) -> bool,
) -> Result<Sanity> {
    let stages = cascade_stages(net);
    let total = stages.len() + 1;
    let original = map_of(net)?;
    if original.len() != size.0 * size.1 {
        return Err(Error::Model(format!(
            "the map has {} values, not {}x{}",
            original.len(),
            size.0,
            size.1
        )));
    }
    if !progress(1, total) {
        return Err(Error::Cancelled);
    }
    let mut steps = Vec::with_capacity(stages.len());
    for (i, stage) in stages.iter().enumerate() {
        randomise_stage(net, stage, seed)?;
        let step = match map_of(net) {
            Ok(map) => SanityStep {
                stage: stage.clone(),
                spearman: spearman(&original, &map),
                ssim: ssim(&original, &map, size),
                map,
            },
            // A randomised network may overflow: the step has no map, the cascade goes on.
            Err(Error::NonFinite { .. }) => SanityStep {
                stage: stage.clone(),
                spearman: f32::NAN,
                ssim: f32::NAN,
                map: Vec::new(),
            },
            Err(e) => return Err(e),
        };
        steps.push(step);
        if !progress(i + 2, total) {
            return Err(Error::Cancelled);
        }
    }
    let flagged = is_flagged(&steps);
    Ok(Sanity {
        original,
        size,
        steps,
        flagged,
    })
}

/// Whether a cascade (top stage first) shows a map that ignores the model: its Spearman to the
/// original stays at or above [`FLAG_SPEARMAN`] at every step of the top half, where the
/// stages that decide the class are randomised. Randomising the stem at the end changes any
/// map built from the image's gradients, so the bottom half cannot clear a method (guided
/// backpropagation on Lite0 stays above 0.89 down to `blocks.8` and falls only at the stem:
/// Adebayo et al.'s finding).
pub fn is_flagged(steps: &[SanityStep]) -> bool {
    let top = &steps[..steps.len().div_ceil(2)];
    top.iter().any(|s| s.spearman.is_finite())
        && top
            .iter()
            .filter(|s| s.spearman.is_finite())
            .all(|s| s.spearman >= FLAG_SPEARMAN)
}

/// Ranks from 1, ties given their average rank (as `scipy.stats.rankdata`).
fn ranks(x: &[f32]) -> Vec<f64> {
    let mut order: Vec<usize> = (0..x.len()).collect();
    order.sort_by(|&a, &b| x[a].total_cmp(&x[b]));
    let mut r = vec![0f64; x.len()];
    let mut i = 0;
    while i < order.len() {
        let mut j = i;
        while j + 1 < order.len() && x[order[j + 1]] == x[order[i]] {
            j += 1;
        }
        let avg = (i + j) as f64 / 2.0 + 1.0;
        for &k in &order[i..=j] {
            r[k] = avg;
        }
        i = j + 1;
    }
    r
}

/// Spearman's rank correlation of two equally long samples (`scipy.stats.spearmanr`); NaN
/// when either is constant or the lengths differ.
pub fn spearman(a: &[f32], b: &[f32]) -> f32 {
    if a.len() != b.len() || a.is_empty() {
        return f32::NAN;
    }
    let (ra, rb) = (ranks(a), ranks(b));
    let n = ra.len() as f64;
    let (ma, mb) = (ra.iter().sum::<f64>() / n, rb.iter().sum::<f64>() / n);
    let (mut sab, mut saa, mut sbb) = (0.0, 0.0, 0.0);
    for (x, y) in ra.iter().zip(&rb) {
        sab += (x - ma) * (y - mb);
        saa += (x - ma) * (x - ma);
        sbb += (y - mb) * (y - mb);
    }
    if saa == 0.0 || sbb == 0.0 {
        return f32::NAN;
    }
    (sab / (saa * sbb).sqrt()) as f32
}

/// The mean structural similarity of two maps `[h * w]` with values in `[0, 1]`, as
/// scikit-image's `structural_similarity(a, b, data_range=1)` computes it: 7 x 7 uniform
/// windows, sample covariances, K1 = 0.01, K2 = 0.03, averaged over the windows that fit
/// inside the image (float64). NaN when the maps are smaller than a window.
pub fn ssim(a: &[f32], b: &[f32], (h, w): (usize, usize)) -> f32 {
    const WIN: usize = 7;
    if a.len() != h * w || b.len() != h * w || h < WIN || w < WIN {
        return f32::NAN;
    }
    let np = (WIN * WIN) as f64;
    let cov_norm = np / (np - 1.0);
    let (c1, c2) = (0.01f64.powi(2), 0.03f64.powi(2));
    let r = WIN / 2;
    let (mut total, mut count) = (0.0, 0usize);
    for y in r..h - r {
        for x in r..w - r {
            let (mut sa, mut sb, mut saa, mut sbb, mut sab) = (0.0, 0.0, 0.0, 0.0, 0.0);
            for yy in y - r..=y + r {
                for xx in x - r..=x + r {
                    let (va, vb) = (f64::from(a[yy * w + xx]), f64::from(b[yy * w + xx]));
                    sa += va;
                    sb += vb;
                    saa += va * va;
                    sbb += vb * vb;
                    sab += va * vb;
                }
            }
            let (ux, uy) = (sa / np, sb / np);
            let vx = cov_norm * (saa / np - ux * ux);
            let vy = cov_norm * (sbb / np - uy * uy);
            let vxy = cov_norm * (sab / np - ux * uy);
            let s = ((2.0 * ux * uy + c1) * (2.0 * vxy + c2))
                / ((ux * ux + uy * uy + c1) * (vx + vy + c2));
            total += s;
            count += 1;
        }
    }
    (total / count as f64) as f32
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cascade(spearman: &[f32]) -> Vec<SanityStep> {
        spearman
            .iter()
            .enumerate()
            .map(|(i, &r)| SanityStep {
                stage: format!("stage{i}"),
                spearman: r,
                ssim: r,
                map: Vec::new(),
            })
            .collect()
    }

    #[test]
    fn a_map_unchanged_by_the_top_half_is_flagged_even_if_the_stem_changes_it() {
        // Lite0's measured cascades (logits, head, blocks.15, ... ; shortened).
        let guided_backprop = [
            0.999, 0.9997, 0.9985, 0.99, 0.96, 0.89, 0.73, 0.36, -0.03, -0.06,
        ];
        let grad_cam = [-0.06, 0.81, 0.33, 0.007, 0.61, 0.52, 0.18, 0.12, 0.5, 0.61];
        assert!(is_flagged(&cascade(&guided_backprop)));
        assert!(!is_flagged(&cascade(&grad_cam)));
        assert!(is_flagged(&cascade(&[0.9, 0.8, f32::NAN, 0.1])));
        assert!(
            !is_flagged(&cascade(&[f32::NAN, f32::NAN, 0.9])),
            "nothing measured on top"
        );
        assert!(!is_flagged(&[]));
    }

    #[test]
    fn spearman_of_monotone_and_reversed_samples() {
        let a = [0.1f32, 0.5, 0.2, 0.9];
        let b = [1.0f32, 7.0, 3.0, 8.0];
        assert!((spearman(&a, &b) - 1.0).abs() < 1e-6);
        let rev: Vec<f32> = b.iter().map(|v| -v).collect();
        assert!((spearman(&a, &rev) + 1.0).abs() < 1e-6);
        // scipy.stats.spearmanr([1, 2, 2, 3], [1, 3, 2, 4]).statistic = 0.9486832980505138
        assert!(
            (spearman(&[1.0, 2.0, 2.0, 3.0], &[1.0, 3.0, 2.0, 4.0]) - 0.948_683_3).abs() < 1e-6
        );
        assert!(spearman(&[1.0, 1.0], &[1.0, 2.0]).is_nan());
    }

    #[test]
    fn ssim_of_a_map_with_itself_is_one() {
        let (h, w) = (12, 10);
        let a: Vec<f32> = (0..h * w).map(|i| ((i * 7) % 13) as f32 / 13.0).collect();
        assert!((ssim(&a, &a, (h, w)) - 1.0).abs() < 1e-6);
        let b: Vec<f32> = a.iter().map(|v| 1.0 - v).collect();
        assert!(ssim(&a, &b, (h, w)) < 0.0);
    }
}
