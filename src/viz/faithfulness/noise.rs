//! Seeded, counter-based random numbers that a Python reference can draw identically
//! (`tests/fixtures/make/fx_explain_metrics.py` reuses `seeded.py`): the ROAD imputation's
//! noise, the random-map baseline and the sanity check's random weights.
//!
//! The `i`-th raw value of stream `name` is SplitMix64's `i`-th output from the state
//! `seed ^ fnv1a64(name)` (as `tests/fixtures/make/seeded.py` specifies), so every value depends
//! only on (seed, name, i).

const GAMMA: u64 = 0x9E37_79B9_7F4A_7C15;

/// FNV-1a (64-bit) of `name`'s UTF-8 bytes.
fn fnv1a64(name: &str) -> u64 {
    name.bytes().fold(0xCBF2_9CE4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01B3)
    })
}

/// The `i`-th raw value (from 0) of stream `name` under `seed`.
pub fn raw(seed: u64, name: &str, i: u64) -> u64 {
    let mut z = (seed ^ fnv1a64(name)).wrapping_add(i.wrapping_add(1).wrapping_mul(GAMMA));
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// `n` uniform values in `[0, 1)`: `f32(raw >> 40) * 2^-24` (exact in f32).
pub fn uniform(seed: u64, name: &str, n: usize) -> Vec<f32> {
    (0..n as u64)
        .map(|i| (raw(seed, name, i) >> 40) as f32 * (1.0 / 16_777_216.0))
        .collect()
}

/// `n` standard normal values by Box-Muller on consecutive raw pairs: with
/// `u1 = ((raw(2i) >> 11) + 1) * 2^-53` in (0, 1] and `u2 = (raw(2i + 1) >> 11) * 2^-53`,
/// value `i` is `f32(sqrt(-2 ln u1) * cos(2 pi u2))` (float64 arithmetic).
pub fn normal(seed: u64, name: &str, n: usize) -> Vec<f32> {
    const SCALE: f64 = 1.0 / 9_007_199_254_740_992.0; // 2^-53
    (0..n as u64)
        .map(|i| {
            let u1 = ((raw(seed, name, 2 * i) >> 11) + 1) as f64 * SCALE;
            let u2 = (raw(seed, name, 2 * i + 1) >> 11) as f64 * SCALE;
            ((-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()) as f32
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_the_seeded_fixture_generator() {
        // tests/fixtures/make/seeded.py: fnv1a64("input"), raw(0, "input", 0, 2) and
        // u01(3, "map", 0, 3).
        assert_eq!(fnv1a64("input"), 0x1ebb_ae8f_5810_b65b);
        assert_eq!(raw(0, "input", 0), 0x190a_9f76_a9bd_8bf6);
        assert_eq!(raw(0, "input", 1), 0xa701_17d0_9cb2_bc5b);
        assert_eq!(uniform(3, "map", 3), [0.6220901, 0.61901426, 0.8002001]);
    }

    #[test]
    fn normal_values_have_unit_variance() {
        let v = normal(7, "road", 20_000);
        let mean = v.iter().map(|&x| f64::from(x)).sum::<f64>() / v.len() as f64;
        let var = v
            .iter()
            .map(|&x| (f64::from(x) - mean).powi(2))
            .sum::<f64>()
            / v.len() as f64;
        assert!(mean.abs() < 0.03, "mean {mean}");
        assert!((var - 1.0).abs() < 0.05, "variance {var}");
        let u = uniform(7, "map", 1000);
        assert!(u.iter().all(|&x| (0.0..1.0).contains(&x)));
    }
}
