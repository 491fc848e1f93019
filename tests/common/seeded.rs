//! The counter-based PRNG of the seeded-weights fixtures, bit for bit as
//! `tests/fixtures/make/seeded.py` specifies it: SplitMix64 keyed by `seed ^ fnv1a64(name)`,
//! so a test rebuilds ResNet-50 or VGG-16 weights from a seed instead of the repository
//! holding them.

use std::collections::{HashMap, HashSet};

use candle_core::{Device, Tensor};

use super::{fixture, fixture_metadata};

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

/// A seeded-weights fixture: its metadata and tensors.
pub struct Seeded {
    pub meta: HashMap<String, String>,
    pub tensors: HashMap<String, Tensor>,
    pub seed: u64,
}

impl Seeded {
    pub fn open(name: &str) -> Self {
        let meta = fixture_metadata(name);
        let seed = meta["seed"].parse().unwrap();
        Seeded {
            tensors: fixture(name),
            meta,
            seed,
        }
    }

    pub fn json<T: serde::de::DeserializeOwned>(&self, key: &str) -> T {
        serde_json::from_str(&self.meta[key]).unwrap_or_else(|e| panic!("meta {key}: {e}"))
    }

    pub fn floats(&self, key: &str) -> Vec<f32> {
        self.tensors[key].flatten_all().unwrap().to_vec1().unwrap()
    }

    /// The weights drawn from the seed, after checking the PRNG port against the values
    /// Python stored (raw, input, first weight) and every tensor's sum.
    pub fn weights(&self) -> HashMap<String, Tensor> {
        let stored: Vec<i64> = self.tensors["prng.raw"].to_vec1().unwrap();
        let ours: Vec<i64> = (0..8).map(|i| raw(self.seed, "input", i) as i64).collect();
        assert_eq!(
            ours, stored,
            "the PRNG's raw values differ from seeded.py's"
        );
        let shapes: Vec<(String, Vec<usize>)> = self.json("tensors");
        let gain: f64 = self.meta["gain"].parse().unwrap();
        let weights = state(self.seed, &shapes, gain);
        let first = &weights[&self.meta["first_weight"]];
        let first: Vec<f32> = first.flatten_all().unwrap().to_vec1().unwrap();
        assert_eq!(
            first[..8],
            self.floats("prng.weight"),
            "first weight values"
        );
        let sums: Vec<Vec<f64>> = self.tensors["weights.sums"].to_vec2().unwrap();
        for ((name, _), sum) in shapes.iter().zip(&sums) {
            let v: Vec<f32> = weights[name].flatten_all().unwrap().to_vec1().unwrap();
            let ours: f64 = v.iter().map(|&x| f64::from(x)).sum();
            assert!(
                (ours - sum[0]).abs() <= 1e-9 * sum[1],
                "{name}: sum {ours} vs {} from seeded.py",
                sum[0]
            );
        }
        weights
    }

    pub fn input(&self) -> Tensor {
        let shape: Vec<usize> = self.meta["input_shape"]
            .split(',')
            .map(|d| d.parse().unwrap())
            .collect();
        assert_eq!(shape[..2], [1, 3]);
        let x = input(self.seed, shape[2]);
        let first: Vec<f32> = x
            .flatten_all()
            .unwrap()
            .narrow(0, 0, 8)
            .unwrap()
            .to_vec1()
            .unwrap();
        assert_eq!(first, self.floats("prng.input"), "first input values");
        x
    }
}

/// `t` cut to `like`'s leading extent in every dimension (the stored window of a tap).
pub fn window(t: &Tensor, like: &Tensor) -> Tensor {
    like.dims()
        .iter()
        .enumerate()
        .fold(t.clone(), |t, (d, &n)| t.narrow(d, 0, n).unwrap())
}
