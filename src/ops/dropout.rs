//! Dropout with a seeded mask, so that the same seed gives the same training run
//! (candle's own dropout draws from an unseeded generator).

use std::sync::atomic::{AtomicU64, Ordering};

use candle_core::{Result, Tensor};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// Zeroes each element with probability `p` and scales the rest by `1 / (1 - p)`; the mask
/// comes from `seed` alone. Differentiable in `x` (the mask is a constant).
pub fn seeded_dropout(x: &Tensor, p: f32, seed: u64) -> Result<Tensor> {
    if p <= 0.0 {
        return Ok(x.clone());
    }
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let keep = 1.0 - p;
    let mask: Vec<f32> = (0..x.elem_count())
        .map(|_| {
            if rng.random::<f32>() < keep {
                1.0 / keep
            } else {
                0.0
            }
        })
        .collect();
    let mask = Tensor::from_vec(mask, x.shape(), &candle_core::Device::Cpu)?
        .to_device(x.device())?
        .to_dtype(x.dtype())?;
    x.mul(&mask)
}

/// A dropout layer's source of seeds: each training forward gets the next mask, so a run is
/// reproducible from its seed.
#[derive(Debug, Default)]
pub struct DropoutSeeds {
    seed: AtomicU64,
    calls: AtomicU64,
}

impl DropoutSeeds {
    /// Starts the sequence at `seed`.
    pub fn new(seed: u64) -> Self {
        DropoutSeeds {
            seed: AtomicU64::new(seed),
            calls: AtomicU64::new(0),
        }
    }

    /// Restarts the sequence at `seed`.
    pub fn reseed(&self, seed: u64) {
        self.seed.store(seed, Ordering::Relaxed);
        self.calls.store(0, Ordering::Relaxed);
    }

    /// The seed of the next mask.
    pub fn next(&self) -> u64 {
        let n = self.calls.fetch_add(1, Ordering::Relaxed);
        self.seed
            .load(Ordering::Relaxed)
            .wrapping_mul(0x9E37_79B9_7F4A_7C15)
            .wrapping_add(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn same_seed_same_mask_and_expectation_kept() -> Result<()> {
        let x = Tensor::ones((64, 64), candle_core::DType::F32, &Device::Cpu)?;
        let a = seeded_dropout(&x, 0.5, 7)?;
        let b = seeded_dropout(&x, 0.5, 7)?;
        let c = seeded_dropout(&x, 0.5, 8)?;
        let (va, vb, vc) = (
            a.flatten_all()?.to_vec1::<f32>()?,
            b.flatten_all()?.to_vec1::<f32>()?,
            c.flatten_all()?.to_vec1::<f32>()?,
        );
        assert_eq!(va, vb);
        assert_ne!(va, vc);
        let mean = va.iter().sum::<f32>() / va.len() as f32;
        assert!((mean - 1.0).abs() < 0.1, "mean {mean}");
        assert!(va.iter().all(|&v| v == 0.0 || v == 2.0));
        Ok(())
    }
}
