//! MobileNet V1 (timm `mobilenetv1_100`), Xception (timm `legacy_xception`) and Inception V3
//! (torchvision `inception_v3`, timm's names alike) against timm 1.0 / torchvision 0.29 and
//! pytorch-grad-cam 1.5.7 on seeded random weights (`tests/fixtures/<net>_zoo.safetensors`,
//! written by `tests/fixtures/make/fx_zoo_a.py`): the weights are drawn from the fixture's seed
//! (`common::seeded`), written as an fp16 safetensors checkpoint under the library's own names, and
//! opened the way `convlens info --model FILE` opens a bare weights file (detection from names
//! and shapes, audit, build). Then every tap on a bundled photo, the top-5 of every bundled
//! PNG, Grad-CAM at the default layer, the key/shape audit against the full-size state
//! dicts (`tests/fixtures/zoo_a_shapes.json`) and a short fine-tuning run.
use crate::common;
use crate::common::seeded::{Seeded, window};

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use common::{convlens, ranking, rel_to_max, repo, small_dataset, text};
use convlens::cancel::CancelToken;
use convlens::data::augment::Augment;
use convlens::train::{Mode, TrainConfig, train};
use convlens::viz::cam::{self, CamMethod, CamOptions};
use convlens::zoo::{self, Model};

/// tests/fixtures/README.md's tolerance: `max|a - b| <= TOL * max|reference|`.
const TOL: f32 = 1e-4;

/// The fixture's seeded weights as an fp16 checkpoint `<stem>.safetensors` in `dir` (the
/// library's names, no manifest), the tensors `keep` accepts.
fn fp16_checkpoint(fx: &Seeded, dir: &Path, stem: &str, keep: fn(&str) -> bool) -> PathBuf {
    let half: std::collections::HashMap<String, Tensor> = fx
        .weights()
        .into_iter()
        .filter(|(k, _)| keep(k))
        .map(|(k, t)| (k, t.to_dtype(DType::F16).unwrap()))
        .collect();
    let path = dir.join(format!("{stem}.safetensors"));
    candle_core::safetensors::save(&half, &path).unwrap();
    path
}

fn load(path: &Path) -> Model {
    zoo::resolve(path.to_str().unwrap())
        .and_then(|spec| spec.load(&Device::Cpu))
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// `convlens info --model FILE` names `id` for a bare weights file, detected from its tensor
/// names and shapes; the file then loads as `id` with 1000 classes.
fn detected(path: &Path, id: &str) -> Model {
    let info = convlens(&["info", "--model", path.to_str().unwrap()]);
    let said = text(&info.stdout);
    assert!(info.status.success(), "{}", text(&info.stderr));
    assert!(
        said.contains(&format!("({id}), 1000 classes")) && said.contains("detected from"),
        "{said}"
    );
    load(path)
}

/// The spatial mean of every channel, accumulated in f64 as the reference's: `[b, c]`.
fn channel_means(t: &Tensor) -> Tensor {
    t.to_dtype(DType::F64)
        .and_then(|t| t.mean((2, 3)))
        .and_then(|t| t.to_dtype(DType::F32))
        .unwrap()
}

/// The first `n` indices of the scores, best first.
fn top(logits: &Tensor, n: usize) -> Vec<usize> {
    let v: Vec<f32> = logits.flatten_all().unwrap().to_vec1().unwrap();
    ranking(&v)[..n].to_vec()
}

/// Detection (library and `convlens info`), preprocessing, every tap, the top-5 of every
/// bundled photo and Grad-CAM of fixture `name` against PyTorch; returns the layer ids.
fn check(name: &str) -> Vec<String> {
    let fx = Seeded::open(name);
    let id = fx.meta["architecture"].clone();
    let dir = tempfile::tempdir().unwrap();
    let path = fp16_checkpoint(&fx, dir.path(), &format!("{id}_seeded_fp16"), |_| true);
    let model = detected(&path, &id);
    let m = &model.spec.manifest;
    let size: u32 = fx.meta["size"].parse().unwrap();
    let resize: u32 = fx.meta["resize"].parse().unwrap();
    let mean: [f32; 3] = fx.json("mean");
    let std: [f32; 3] = fx.json("std");
    assert_eq!(
        (m.architecture.as_str(), m.num_classes, m.input_size),
        (id.as_str(), 1000, size)
    );
    assert_eq!((m.resize_shorter, m.mean, m.std), (resize, mean, std));
    assert_eq!(m.default_cam_layer, fx.meta["cam_layer"]);

    // The photo as convlens prepares it is the one PyTorch saw (PIL's resize and crop).
    let input = |image: &str| {
        model
            .spec
            .preprocess
            .load(&repo(&format!("assets/images/{image}")), &model.device)
            .unwrap()
    };
    let x = input("chelsea.png");
    let t = &fx.tensors;
    // Every comparison is made and reported; the test fails at the end if any is off.
    let mut report = Vec::new();
    let mut failed = Vec::new();
    let mut compare = |what: String, err: f32, tol: f32| {
        report.push(format!("{what} {err:.1e}"));
        if err > tol {
            failed.push(format!("{what}: {err:.2e} > {tol:e}"));
        }
    };
    let input_err = rel_to_max(&window(&x, &t["input.window"]), &t["input.window"])
        .max(rel_to_max(&channel_means(&x), &t["input.mean"]));
    compare("input".into(), input_err, 1e-6);

    let taps: Vec<String> = fx.json("taps");
    let tap_refs: Vec<&str> = taps.iter().map(String::as_str).collect();
    let outputs = model.network.forward_with_taps(&x, &tap_refs).unwrap();
    for (tap, out) in taps.iter().zip(&outputs) {
        let shape: Vec<i64> = t[&format!("shape.{tap}")].to_vec1().unwrap();
        let shape: Vec<usize> = shape.into_iter().map(|d| d as usize).collect();
        assert_eq!(out.dims(), shape.as_slice(), "{name} {tap}: shape");
        let reference = &t[&format!("tap.{tap}")];
        let mut err = rel_to_max(&window(out, reference), reference);
        if let Some(means) = t.get(&format!("mean.{tap}")) {
            err = err.max(rel_to_max(&channel_means(out), means));
        }
        compare(tap.clone(), err, TOL);
    }

    let images: Vec<String> = fx.json("images");
    let mut tops = Vec::new();
    for image in &images {
        let reference = &t[&format!("logits.{image}")];
        let logits = model.network.forward(&input(image)).unwrap();
        compare(
            format!("logits of {image}"),
            rel_to_max(&logits, reference),
            TOL,
        );
        tops.push((image, top(&logits, 5), top(reference, 5)));
    }

    let layer = m.default_cam_layer.clone();
    let out = cam::compute(
        &model.network,
        &x,
        &CamOptions::new(CamMethod::GradCam, &layer),
    )
    .unwrap();
    let lib: Vec<f32> = t["gradcam.map"].flatten_all().unwrap().to_vec1().unwrap();
    assert_eq!(out.map.len(), lib.len());
    let err = out
        .map
        .iter()
        .zip(&lib)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0, f32::max);
    compare(format!("Grad-CAM at {layer} (max abs)"), err, 1e-4);
    eprintln!("{name}: {}", report.join(", "));
    assert!(failed.is_empty(), "{name}: {failed:?}");
    for (image, ours, theirs) in tops {
        assert_eq!(ours, theirs, "{name} {image}: top-5");
    }
    let class: Vec<i64> = t["gradcam.class"].to_vec1().unwrap();
    assert_eq!(out.class as i64, class[0], "{name}: Grad-CAM's top-1 class");
    model.network.layer_ids().map(str::to_string).collect()
}

#[test]
fn mobilenet_v1_matches_timm() {
    let ids = check("mobilenetv1_100_zoo");
    assert_eq!(
        ids,
        [
            "conv_stem",
            "blocks.0",
            "blocks.1",
            "blocks.2",
            "blocks.3",
            "blocks.4",
            "pooled",
            "logits"
        ]
    );
}

#[test]
fn xception_matches_timm() {
    let ids = check("legacy_xception_zoo");
    let mut expected = vec!["conv1".to_string(), "conv2".into()];
    expected.extend((1..=12).map(|i| format!("block{i}")));
    expected.extend(["conv3", "conv4", "pooled", "logits"].map(String::from));
    assert_eq!(ids, expected);
}

/// torchvision's naming, `AuxLogits.*` included (ignored); the reference is torchvision's model
/// with `transform_input=True` on an ImageNet-normalised photo, which convlens reproduces by
/// normalising with mean and std 0.5 (the fixture's `input.window` is the transformed input).
#[test]
fn inception_v3_matches_torchvision_with_transform_input() {
    let ids = check("inception_v3_zoo");
    assert_eq!(ids.len(), 18 + 2, "{ids:?}");
    assert_eq!(
        ids[..4],
        [
            "Conv2d_1a_3x3",
            "Conv2d_2a_3x3",
            "Conv2d_2b_3x3",
            "maxpool1"
        ]
    );
    assert_eq!(ids[17..], ["Mixed_7c", "pooled", "logits"]);
}

/// timm's `inception_v3` has the same names without `AuxLogits`: detected alike, the same
/// logits.
#[test]
fn inception_v3_in_timm_naming_is_the_same_network() {
    let fx = Seeded::open("inception_v3_zoo");
    let dir = tempfile::tempdir().unwrap();
    let keep = |k: &str| !k.starts_with("AuxLogits.");
    let path = fp16_checkpoint(&fx, dir.path(), "inception_v3_timm_fp16", keep);
    let model = detected(&path, "inception_v3");
    let x = model
        .spec
        .preprocess
        .load(&repo("assets/images/chelsea.png"), &model.device)
        .unwrap();
    let logits = model.network.forward(&x).unwrap();
    let reference = &fx.tensors["logits.chelsea.png"];
    assert!(rel_to_max(&logits, reference) <= TOL);
    assert_eq!(top(&logits, 5), top(reference, 5));
}

/// `expected_tensors(id, 1000)` against the full-size models' `state_dict()` shapes as timm
/// and torchvision record them (`num_batches_tracked` dropped; what convlens's reader drops,
/// Inception's `AuxLogits.*`, dropped here too).
#[test]
fn expected_tensors_are_the_libraries_state_dicts() {
    #[derive(serde::Deserialize)]
    struct Recorded {
        architecture: String,
        model: String,
        shapes: Vec<(String, Vec<usize>)>,
    }
    let path = repo("tests/fixtures/zoo_a_shapes.json");
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    let models: Vec<Recorded> = serde_json::from_value(json["models"].clone()).unwrap();
    let ids: Vec<&str> = models.iter().map(|m| m.architecture.as_str()).collect();
    assert_eq!(
        ids,
        [
            "mobilenetv1_100",
            "mobilenetv1_125",
            "legacy_xception",
            "inception_v3",
            "inception_v3"
        ]
    );
    for m in models {
        let theirs: BTreeMap<String, Vec<usize>> = m
            .shapes
            .into_iter()
            .filter(|(k, _)| !zoo::checkpoint::is_bookkeeping(k))
            .collect();
        let ours: BTreeMap<String, Vec<usize>> = zoo::expected_tensors(&m.architecture, 1000)
            .unwrap_or_else(|| panic!("no architecture `{}`", m.architecture))
            .into_iter()
            .collect();
        assert_eq!(ours, theirs, "{} ({})", m.architecture, m.model);
    }
}

/// A manifest for `weights` with a small input, so fine-tuning takes seconds.
pub(crate) fn small_manifest(dir: &Path, weights: &Path, id: &str, size: u32) -> PathBuf {
    let labels: String = (0..1000).map(|i| format!("c{i}\n")).collect();
    std::fs::write(dir.join("labels.txt"), labels).unwrap();
    let manifest = serde_json::json!({
        "name": format!("{id}_small"),
        "architecture": id,
        "weights": weights,
        "num_classes": 1000,
        "input_size": size,
        "resize_shorter": size,
        "mean": [0.5, 0.5, 0.5],
        "std": [0.5, 0.5, 0.5],
        "labels": "labels.txt",
        "default_cam_layer": zoo::detect::default_cam_layer(id).unwrap(),
    });
    let path = dir.join(format!("{id}_small.json"));
    std::fs::write(&path, manifest.to_string()).unwrap();
    path
}

/// `train --mode finetune` with the top two stages unfrozen on 16 fashion-mini images at a
/// small input size: the head phase, then the fine-tuning phase, then a model that loads.
fn finetune_smoke(name: &str, size: u32, unfrozen: [&str; 2]) {
    let fx = Seeded::open(name);
    let id = fx.meta["architecture"].clone();
    let work = tempfile::tempdir().unwrap();
    let weights = fp16_checkpoint(&fx, work.path(), &id, |_| true);
    let base = load(&small_manifest(work.path(), &weights, &id, size));
    let ids: Vec<&str> = base.network.layer_ids().collect();
    let pooled = ids.iter().position(|&l| l == "pooled").unwrap();
    assert_eq!(
        ids[pooled - 2..pooled],
        unfrozen,
        "the stages --unfreeze 2 opens"
    );
    let data = small_dataset(&work.path().join("data"), 4, 2);
    let cfg = TrainConfig {
        mode: Mode::Finetune,
        epochs: 1,
        batch_size: 8,
        finetune_epochs: 1,
        unfreeze: 2,
        finetune_lr: 1e-4,
        augment: Augment::none(),
        patience: None,
        cache_dir: Some(work.path().join("cache")),
        ..TrainConfig::default()
    };
    let out = work.path().join("finetuned");
    let report = train(&base, &data, &cfg, &out, &mut |_| {}, &CancelToken::new())
        .unwrap_or_else(|e| panic!("{name}: {e}"));
    let phases: Vec<&str> = report.history.iter().map(|e| e.phase.as_str()).collect();
    assert!(phases.contains(&"finetune"), "{phases:?}");
    assert!(report.best_val_loss.is_finite());
    let tuned = load(&out);
    assert_eq!(tuned.spec.manifest.architecture, id);
    let x = Tensor::zeros(
        (2, 3, size as usize, size as usize),
        DType::F32,
        &Device::Cpu,
    )
    .unwrap();
    let logits = tuned.network.forward(&x).unwrap();
    assert_eq!(logits.dims(), [2, 4]);
}

#[test]
fn mobilenet_v1_finetunes_its_top_stages() {
    finetune_smoke("mobilenetv1_100_zoo", 64, ["blocks.3", "blocks.4"]);
}

#[test]
fn inception_v3_finetunes_its_top_stages() {
    // 80 px: Mixed_7c is 1x1.
    finetune_smoke("inception_v3_zoo", 80, ["Mixed_7b", "Mixed_7c"]);
}

#[test]
fn xception_finetunes_its_top_stages() {
    finetune_smoke("legacy_xception_zoo", 96, ["conv3", "conv4"]);
}
