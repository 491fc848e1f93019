//! Parity of ResNet-50, VGG-16 (torchvision and timm layouts) and EfficientNet-Lite1..4 with
//! PyTorch (torchvision 0.29 / timm 1.0) on seeded random weights. The fixtures
//! (`tests/fixtures/<net>_seeded.safetensors`, written by `tests/fixtures/make/fx_seeded_nets.py`)
//! hold the seed, the weight names and shapes, and the reference taps; the weights themselves
//! are drawn here by the same PRNG (`common::seeded`), written to a temporary safetensors file
//! and opened the way the CLI opens a bare weights file (detection, audit, build).
// Tests may panic on failure and print.
use crate::common;

use std::collections::{BTreeMap, HashMap};

use candle_core::{D, Device, Tensor};
use common::{fixture, fixture_metadata, rel_to_max, seeded};
use convlens::zoo;

/// The suggested tolerance of tests/fixtures/README.md: `max|a - b| <= TOL * max|reference|`.
const TOL: f32 = 1e-4;

/// A seeded-weights fixture: its metadata and tensors.
pub(crate) struct Seeded {
    pub(crate) meta: HashMap<String, String>,
    pub(crate) tensors: HashMap<String, Tensor>,
    seed: u64,
}

impl Seeded {
    pub(crate) fn open(name: &str) -> Self {
        let meta = fixture_metadata(name);
        let seed = meta["seed"].parse().unwrap();
        Seeded {
            tensors: fixture(name),
            meta,
            seed,
        }
    }

    pub(crate) fn json<T: serde::de::DeserializeOwned>(&self, key: &str) -> T {
        serde_json::from_str(&self.meta[key]).unwrap_or_else(|e| panic!("meta {key}: {e}"))
    }

    fn floats(&self, key: &str) -> Vec<f32> {
        self.tensors[key].flatten_all().unwrap().to_vec1().unwrap()
    }

    /// The weights drawn from the seed, after checking the PRNG port against the values
    /// Python stored (raw, input, first weight) and every tensor's sum.
    pub(crate) fn weights(&self) -> HashMap<String, Tensor> {
        let raw: Vec<i64> = self.tensors["prng.raw"].to_vec1().unwrap();
        let ours: Vec<i64> = (0..8)
            .map(|i| seeded::raw(self.seed, "input", i) as i64)
            .collect();
        assert_eq!(ours, raw, "the PRNG's raw values differ from seeded.py's");
        let shapes: Vec<(String, Vec<usize>)> = self.json("tensors");
        let gain: f64 = self.meta["gain"].parse().unwrap();
        let weights = seeded::state(self.seed, &shapes, gain);
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

    fn input(&self) -> Tensor {
        let shape: Vec<usize> = self.meta["input_shape"]
            .split(',')
            .map(|d| d.parse().unwrap())
            .collect();
        assert_eq!(shape[..2], [1, 3]);
        let x = seeded::input(self.seed, shape[2]);
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
pub(crate) fn window(t: &Tensor, like: &Tensor) -> Tensor {
    like.dims()
        .iter()
        .enumerate()
        .fold(t.clone(), |t, (d, &n)| t.narrow(d, 0, n).unwrap())
}

/// Builds the fixture's network from its seed through the normal loading path and compares
/// every tap with PyTorch's; returns the layer ids of the network.
fn check(name: &str) -> Vec<String> {
    let fx = Seeded::open(name);
    let architecture = fx.meta["architecture"].as_str();
    let weights = fx.weights();
    // The names and shapes PyTorch's state dict has are the ones convlens expects.
    let theirs: BTreeMap<String, Vec<usize>> = weights
        .iter()
        .map(|(k, t)| (k.clone(), t.dims().to_vec()))
        .collect();
    let ours: BTreeMap<String, Vec<usize>> = zoo::expected_tensors(architecture, 1000)
        .unwrap()
        .into_iter()
        .collect();
    assert_eq!(ours, theirs, "{architecture}: expected tensors");
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(format!("{name}.safetensors"));
    candle_core::safetensors::save(&weights, &path).unwrap();
    drop(weights);
    let model = zoo::resolve(path.to_str().unwrap())
        .and_then(|spec| spec.load(&Device::Cpu))
        .unwrap_or_else(|e| panic!("{name}: {e}"));
    let m = &model.spec.manifest;
    assert_eq!(
        (m.architecture.as_str(), m.num_classes),
        (architecture, 1000)
    );
    let taps: Vec<String> = fx.json("taps");
    let tap_refs: Vec<&str> = taps.iter().map(String::as_str).collect();
    let outputs = model
        .network
        .forward_with_taps(&fx.input(), &tap_refs)
        .unwrap();
    let mut report = Vec::new();
    for (tap, out) in taps.iter().zip(&outputs) {
        let shape: Vec<i64> = fx.tensors[&format!("shape.{tap}")].to_vec1().unwrap();
        let shape: Vec<usize> = shape.into_iter().map(|d| d as usize).collect();
        assert_eq!(out.dims(), shape.as_slice(), "{name} {tap}: shape");
        let reference = &fx.tensors[&format!("tap.{tap}")];
        let err = rel_to_max(&window(out, reference), reference);
        report.push(format!("{tap} {err:.1e}"));
        assert!(
            err <= TOL,
            "{name} {tap}: rel-to-max {err:.2e} ({report:?})"
        );
    }
    eprintln!("{name}: {}", report.join(", "));
    // The logits are not degenerate: the reference's top-5 order is reproduced.
    let top5 = |t: &Tensor| -> Vec<u32> {
        let order = t.arg_sort_last_dim(false).unwrap();
        order
            .narrow(D::Minus1, 0, 5)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap()
    };
    assert_eq!(
        top5(outputs.last().unwrap()),
        top5(&fx.tensors["tap.logits"]),
        "{name}: top-5"
    );
    model.network.layer_ids().map(str::to_string).collect()
}

#[test]
fn the_prng_matches_splitmix64_and_fnv1a_reference_values() {
    // SplitMix64 from state 0 (Vigna's splitmix64.c); FNV-1a of "" and "a".
    assert_eq!(seeded::splitmix64(0, 0), 0xe220_a839_7b1d_cdaf);
    assert_eq!(seeded::splitmix64(0, 1), 0x6e78_9e6a_a1b9_65f4);
    assert_eq!(seeded::fnv1a64(""), 0xcbf2_9ce4_8422_2325);
    assert_eq!(seeded::fnv1a64("a"), 0xaf63_dc4c_8601_ec8c);
}

#[test]
fn resnet50_matches_torchvision() {
    let ids = check("resnet50_seeded");
    assert_eq!(
        ids,
        [
            "conv1", "maxpool", "layer1", "layer2", "layer3", "layer4", "pooled", "logits"
        ]
    );
}

#[test]
fn vgg16_matches_torchvision() {
    // 160 px: the 5x5 last pool is spread over 7x7 by the adaptive pool (overlapping bins).
    check("vgg16_seeded");
}

#[test]
fn vgg16_timm_layout_matches_timm() {
    // 256 px: `pre_logits.fc1` (7x7 conv) leaves 2x2, averaged before `head.fc`.
    check("vgg16_timm_seeded");
}

/// Lite1..4 at their native resolutions (240, 260, 280, 300): 21, 21, 24, 30 blocks.
fn check_lite(n: usize, blocks: usize) {
    let ids = check(&format!("efficientnet_lite{n}_seeded"));
    assert_eq!(ids.len(), blocks + 4, "stem, blocks, head, pooled, logits");
}

#[test]
fn efficientnet_lite1_matches_timm() {
    check_lite(1, 21);
}

#[test]
fn efficientnet_lite2_matches_timm() {
    check_lite(2, 21);
}

#[test]
fn efficientnet_lite3_matches_timm() {
    check_lite(3, 24);
}

#[test]
fn efficientnet_lite4_matches_timm() {
    check_lite(4, 30);
}
