//! t-SNE of feature rows to 2-D through the `bhtsne` crate (Barnes-Hut, theta 0.5), set up as
//! scikit-learn's `TSNE` is by default: perplexity 30, 1,000 iterations, early exaggeration 12
//! for the first 250, PCA initialisation scaled to a standard deviation of 1e-4. As
//! openTSNE and scikit-learn's guide advise, wide features are first reduced to 50 dimensions
//! by PCA; the exact nearest neighbours (3 x perplexity of them) come from
//! [`super::neighbours::nearest`] (matrix products), not the crate's vantage-point tree.

use std::panic::{AssertUnwindSafe, catch_unwind, resume_unwind};

use bhtsne::{Neighbor, tSNE};
use candle_core::{Device, Tensor};
use serde::{Deserialize, Serialize};

use super::neighbours::nearest;
use super::pca::Pca;
use crate::cancel::CancelToken;
use crate::{Error, Result};

/// Dimensions the features are reduced to by PCA before t-SNE.
pub const PCA_DIMS: usize = 50;
/// Fewest points t-SNE is run on.
pub const MIN_POINTS: usize = 5;

/// Largest perplexity accepted (scikit-learn's guide: 5-50 is typical).
pub const MAX_PERPLEXITY: f32 = 100.0;
/// Most iterations accepted (400 images take about 0.7 ms per iteration).
pub const MAX_EPOCHS: usize = 100_000;

/// The settings of a t-SNE run.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct TsneOptions {
    /// Perplexity (the effective number of neighbours); lowered to `(n - 1) / 3` for small `n`.
    pub perplexity: f32,
    /// Gradient-descent iterations (the first 250 with early exaggeration).
    #[serde(rename = "iterations")]
    pub epochs: usize,
    /// Barnes-Hut accuracy (0.5 as scikit-learn; smaller is slower and more exact).
    pub theta: f32,
}

impl TsneOptions {
    /// Refuses a perplexity outside 1..=[`MAX_PERPLEXITY`], iterations outside
    /// 1..=[`MAX_EPOCHS`] and a theta outside 0..=1 (the error names the value).
    pub fn check(&self) -> Result<()> {
        if !(1.0..=MAX_PERPLEXITY).contains(&self.perplexity) {
            return Err(Error::InvalidOption(format!(
                "t-SNE perplexity {}: must be 1 to {MAX_PERPLEXITY}",
                self.perplexity
            )));
        }
        if !(1..=MAX_EPOCHS).contains(&self.epochs) {
            return Err(Error::InvalidOption(format!(
                "t-SNE iterations {}: must be 1 to {MAX_EPOCHS}",
                self.epochs
            )));
        }
        if !(0.0..=1.0).contains(&self.theta) {
            return Err(Error::InvalidOption(format!(
                "t-SNE theta {}: must be 0 to 1",
                self.theta
            )));
        }
        Ok(())
    }
}

impl Default for TsneOptions {
    fn default() -> Self {
        TsneOptions {
            perplexity: 30.0,
            epochs: 1000,
            theta: 0.5,
        }
    }
}

/// Raised inside the crate's epoch callback to leave its loop when the job is cancelled.
struct CancelledFit;

/// Embeds the rows of `x` (`[n, d]`) in 2-D: `[n, 2]` on the CPU. `progress(done, total)`
/// counts the neighbour search and then the iterations; cancelling stops within one chunk of
/// the search or one iteration.
/// Deterministic for a given input (the start is the PCA projection, not random).
pub fn tsne(
    x: &Tensor,
    options: TsneOptions,
    progress: &mut dyn FnMut(usize, usize),
    cancel: &CancelToken,
) -> Result<Tensor> {
    options.check()?;
    let (n, d) = x.dims2()?;
    if n < MIN_POINTS {
        return Err(Error::InvalidOption(format!(
            "t-SNE of {n} images: needs at least {MIN_POINTS}"
        )));
    }
    let perplexity = options.perplexity.min((n - 1) as f32 / 3.0).max(1.0);
    let k = ((3.0 * perplexity) as usize).clamp(1, n - 1);
    let total = n + options.epochs;
    let reduced = if d > PCA_DIMS && n > PCA_DIMS {
        Pca::fit(x, PCA_DIMS)?.transform(x)?
    } else {
        x.to_device(&Device::Cpu)?
    };
    cancel.check()?;
    let neighbours: Vec<Vec<Neighbor<f32>>> = nearest(&reduced, k, &mut |done, _| {
        progress(done, total);
        cancel.check()
    })?
    .into_iter()
    .map(|row| {
        row.into_iter()
            .map(|(index, distance)| Neighbor { index, distance })
            .collect()
    })
    .collect();
    cancel.check()?;
    // PCA of the 50-D reduction spans the same first two components as PCA of x, cheaply.
    let init = scaled_start(&reduced)?;
    let rows: Vec<usize> = (0..n).collect();
    let fit = catch_unwind(AssertUnwindSafe(|| {
        let mut t: tSNE<f32, usize> = tSNE::new(&rows);
        t.perplexity(perplexity)
            .epochs(options.epochs)
            .initial_embedding(init)
            .epoch_callback(|epoch, _| {
                if cancel.is_cancelled() {
                    // Leaves the crate's loop; caught just below (no panic message: the hook
                    // does not run for resume_unwind).
                    resume_unwind(Box::new(CancelledFit));
                }
                progress(n + epoch + 1, total);
            });
        t.barnes_hut_with_neighbors(options.theta, &neighbours);
        t.embedding()
    }));
    match fit {
        Ok(y) => Ok(Tensor::from_vec(y, (n, 2), &Device::Cpu)?),
        Err(payload) if payload.is::<CancelledFit>() => Err(Error::Cancelled),
        Err(payload) => resume_unwind(payload),
    }
}

/// scikit-learn's `init="pca"`: the first two principal components, scaled so the first has
/// standard deviation 1e-4. `[n * 2]`, row-major.
fn scaled_start(x: &Tensor) -> Result<Vec<f32>> {
    let y = Pca::fit(x, 2)?.transform(x)?;
    let first = y.narrow(1, 0, 1)?;
    let std = first
        .broadcast_sub(&first.mean_all()?)?
        .sqr()?
        .mean_all()?
        .sqrt()?
        .to_scalar::<f32>()?;
    let scale = if std > 0.0 { 1e-4 / std } else { 1.0 };
    Ok((y * f64::from(scale))?.flatten_all()?.to_vec1::<f32>()?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::insight::neighbours::knn_agreement;

    /// Three well separated Gaussian blobs in 10-D.
    fn blobs(per: usize) -> (Tensor, Vec<u32>) {
        use rand::{Rng, SeedableRng};
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
        let mut rows = Vec::new();
        let mut labels = Vec::new();
        for c in 0..3u32 {
            for _ in 0..per {
                for j in 0..10 {
                    let centre = if j == c as usize { 20.0 } else { 0.0 };
                    rows.push(centre + rng.random_range(-1.0f32..1.0));
                }
                labels.push(c);
            }
        }
        (
            Tensor::from_vec(rows, (3 * per, 10), &Device::Cpu).unwrap(),
            labels,
        )
    }

    #[test]
    fn separated_blobs_stay_separated_and_progress_reaches_the_end() {
        let (x, labels) = blobs(30);
        let mut last = (0, 0);
        let y = tsne(
            &x,
            TsneOptions {
                epochs: 300,
                ..Default::default()
            },
            &mut |d, t| last = (d, t),
            &CancelToken::new(),
        )
        .unwrap();
        assert_eq!(y.dims(), &[90, 2]);
        assert_eq!(last, (90 + 300, 90 + 300));
        assert_eq!(knn_agreement(&y, &labels, 5).unwrap(), 1.0);
    }

    #[test]
    fn settings_out_of_range_are_refused_naming_the_value() {
        let (x, _) = blobs(10);
        let bad = [
            (
                TsneOptions {
                    perplexity: 0.5,
                    ..TsneOptions::default()
                },
                "perplexity 0.5",
            ),
            (
                TsneOptions {
                    perplexity: f32::NAN,
                    ..TsneOptions::default()
                },
                "perplexity NaN",
            ),
            (
                TsneOptions {
                    epochs: 0,
                    ..TsneOptions::default()
                },
                "iterations 0",
            ),
            (
                TsneOptions {
                    epochs: MAX_EPOCHS + 1,
                    ..TsneOptions::default()
                },
                "iterations 100001",
            ),
            (
                TsneOptions {
                    theta: -0.1,
                    ..TsneOptions::default()
                },
                "theta -0.1",
            ),
        ];
        for (options, needle) in bad {
            let err = tsne(&x, options, &mut |_, _| {}, &CancelToken::new()).unwrap_err();
            assert!(err.to_string().contains(needle), "{err} lacks {needle}");
        }
        assert!(TsneOptions::default().check().is_ok());
    }

    #[test]
    fn a_cancelled_run_stops_with_cancelled() {
        let (x, _) = blobs(10);
        let cancel = CancelToken::new();
        let mut calls = 0;
        let result = tsne(
            &x,
            TsneOptions::default(),
            &mut |done, _| {
                calls += 1;
                if done > 40 {
                    cancel.cancel();
                }
            },
            &cancel,
        );
        assert!(matches!(result, Err(Error::Cancelled)), "{result:?}");
        assert!(calls < 100, "{calls} progress calls after cancelling");
    }

    #[test]
    fn a_cancel_during_the_neighbour_search_stops_it_after_the_chunk() {
        // 600 points: two chunks of rows (512 + 88) in the neighbour search.
        let (x, _) = blobs(200);
        let cancel = CancelToken::new();
        let mut seen = Vec::new();
        let result = tsne(
            &x,
            TsneOptions::default(),
            &mut |done, _| {
                seen.push(done);
                cancel.cancel();
            },
            &cancel,
        );
        assert!(matches!(result, Err(Error::Cancelled)), "{result:?}");
        assert_eq!(seen, vec![512]);
    }

    #[test]
    fn too_few_points_are_refused() {
        let x = Tensor::zeros((3, 4), candle_core::DType::F32, &Device::Cpu).unwrap();
        assert!(
            tsne(
                &x,
                TsneOptions::default(),
                &mut |_, _| {},
                &CancelToken::new()
            )
            .is_err()
        );
    }
}
