//! The counter-based PRNG of the seeded-weights fixtures, bit for bit as
//! `tests/fixtures/make/seeded.py` specifies it: SplitMix64 keyed by `seed ^ fnv1a64(name)`,
//! so a test rebuilds ResNet-50 or VGG-16 weights from a seed instead of the repository
//! holding them.

use std::collections::{HashMap, HashSet};

use candle_core::{Device, Tensor};

const GAMMA: u64 = 0x9E37_79B9_7F4A_7C15;

/// FNV-1a (64-bit) of a tensor name's UTF-8 bytes.
pub fn fnv1a64(name: &str) -> u64 {
    name.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// SplitMix64's `i`-th output (from 0) from state `key`.
pub fn splitmix64(key: u64, i: u64) -> u64 {
    let mut z = key.wrapping_add(i.wrapping_add(1).wrapping_mul(GAMMA));
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// The `i`-th raw value of tensor `name`.
pub fn raw(seed: u64, name: &str, i: u64) -> u64 {
    splitmix64(seed ^ fnv1a64(name), i)
}

/// How a tensor's values are drawn from `u01` in [0, 1) and `u11 = 2 u01 - 1`.
#[derive(Clone, Copy, Debug)]
pub enum Kind {
    /// Conv / linear weight: `u11 * scale`, `scale = f32(sqrt(gain / fan_in))`.
    He(f32),
    /// BatchNorm scale or running variance: `0.5 + u01`.
    Positive,
    /// Bias, BatchNorm shift or running mean: `u11 * 0.1`.
    Small,
    /// The network input: `u11 * 2`.
    Input,
}

impl Kind {
    /// The kind of tensor `name` with `shape` among `names` (a rank-1 `<p>.weight` is a
    /// BatchNorm scale when `<p>.running_var` exists).
    pub fn of(name: &str, shape: &[usize], names: &HashSet<&str>, gain: f64) -> Kind {
        if name == "input" {
            Kind::Input
        } else if shape.len() >= 2 {
            let fan_in: usize = shape[1..].iter().product();
            Kind::He((gain / fan_in as f64).sqrt() as f32)
        } else if name.ends_with("running_var")
            || name.strip_suffix("weight").is_some_and(|p| {
                p.ends_with('.') && names.contains(format!("{p}running_var").as_str())
            })
        {
            Kind::Positive
        } else {
            Kind::Small
        }
    }
}

/// The `n` values of tensor `name` (C order).
pub fn values(seed: u64, name: &str, n: usize, kind: Kind) -> Vec<f32> {
    let key = seed ^ fnv1a64(name);
    (0..n as u64)
        .map(|i| {
            let u01 = (splitmix64(key, i) >> 40) as f32 * (1.0 / 16_777_216.0);
            let u11 = 2.0 * u01 - 1.0;
            match kind {
                Kind::He(scale) => u11 * scale,
                Kind::Positive => 0.5 + u01,
                Kind::Small => u11 * 0.1,
                Kind::Input => u11 * 2.0,
            }
        })
        .collect()
}

/// Every tensor of `shapes` (name, shape) drawn from `seed` with conv/linear `gain`.
pub fn state(seed: u64, shapes: &[(String, Vec<usize>)], gain: f64) -> HashMap<String, Tensor> {
    let names: HashSet<&str> = shapes.iter().map(|(n, _)| n.as_str()).collect();
    shapes
        .iter()
        .map(|(name, shape)| {
            let kind = Kind::of(name, shape, &names, gain);
            let v = values(seed, name, shape.iter().product(), kind);
            let t = Tensor::from_vec(v, shape.as_slice(), &Device::Cpu).unwrap();
            (name.clone(), t)
        })
        .collect()
}

/// The seeded network input `[1, 3, size, size]`.
pub fn input(seed: u64, size: usize) -> Tensor {
    let v = values(seed, "input", 3 * size * size, Kind::Input);
    Tensor::from_vec(v, (1, 3, size, size), &Device::Cpu).unwrap()
}
