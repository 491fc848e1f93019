//! EfficientNet-B0 (timm, timm's TensorFlow port, torchvision), MobileNetV3 Large and Small
//! (torchvision, timm) and timm's naming of EfficientNet-Lite0 and MobileNetV2 against PyTorch
//! on seeded random weights, and the key/shape audit of B0..B4, MobileNetV3, timm's Lite0..4
//! and MobileNetV2 against the libraries' full-size state dicts. The fixtures
//! (`tests/fixtures/zoo_b_*.safetensors`, `zoo_b_audit.json`) are written by
//! `tests/fixtures/make/fx_zoo_b.py` (torch 2.15, timm 1.0.31, torchvision 0.29,
//! pytorch-grad-cam 1.5.7); the weights are drawn here from the fixture's seed
//! (`common::seeded`), saved as a bare safetensors file named after the architecture and opened
//! as the CLI opens one (detection from names and shapes, audit, build).
use crate::common;

use std::collections::BTreeMap;
use std::path::PathBuf;

use candle_core::{D, Device, Tensor};
use common::seeded::{Seeded, window};
use common::{rel_to_max, repo, small_dataset};
use convlens::cancel::CancelToken;
use convlens::data::augment::Augment;
use convlens::train::{Mode, TrainConfig, train};
use convlens::viz::cam::{self, CamMethod, CamOptions};
use convlens::zoo::{self, Model};

/// tests/fixtures/README.md's tolerance: `max|a - b| <= TOL * max|reference|`.
const TOL: f32 = 1e-4;

/// The fixture of `id`, its seeded weights written to `<tmp>/<id>.safetensors` (the name a
/// user's file would carry: it tells timm's TensorFlow port apart), and the model loaded
/// from that bare file.
fn open(id: &str) -> (Seeded, Model, tempfile::TempDir, PathBuf) {
    let fx = Seeded::open(&format!("zoo_b_{id}"));
    assert_eq!(fx.meta["architecture"], id);
    let weights = fx.weights();
    let theirs: BTreeMap<String, Vec<usize>> = weights
        .iter()
        .map(|(k, t)| (k.clone(), t.dims().to_vec()))
        .collect();
    let ours: BTreeMap<String, Vec<usize>> = zoo::expected_tensors(id, 1000)
        .unwrap()
        .into_iter()
        .collect();
    assert_eq!(ours, theirs, "{id}: expected tensors");
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(format!("{id}.safetensors"));
    candle_core::safetensors::save(&weights, &path).unwrap();
    let model = zoo::resolve(path.to_str().unwrap())
        .and_then(|spec| spec.load(&Device::Cpu))
        .unwrap_or_else(|e| panic!("{id}: {e}"));
    let m = &model.spec.manifest;
    assert_eq!((m.architecture.as_str(), m.num_classes), (id, 1000));
    (fx, model, dir, path)
}

fn top5(t: &Tensor) -> Vec<u32> {
    let order = t.arg_sort_last_dim(false).unwrap();
    order
        .narrow(D::Minus1, 0, 5)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1()
        .unwrap()
}

/// Every tap, the logits and top-5 of the bundled images, Grad-CAM at the default layer, the
/// preprocessing and `convlens info`'s detection of `id` against the fixture.
fn check(id: &str) {
    let (fx, model, _dir, path) = open(id);
    let taps: Vec<String> = fx.json("taps");
    // Every stage is tapped, in the checkpoint's own naming.
    let ids: Vec<&str> = model.network.layer_ids().collect();
    assert_eq!(ids, taps, "{id}: layer ids");
    let tap_refs: Vec<&str> = taps.iter().map(String::as_str).collect();
    let outputs = model
        .network
        .forward_with_taps(&fx.input(), &tap_refs)
        .unwrap();
    let mut worst = (0f32, String::new());
    for (tap, out) in taps.iter().zip(&outputs) {
        let shape: Vec<i64> = fx.tensors[&format!("shape.{tap}")].to_vec1().unwrap();
        let shape: Vec<usize> = shape.into_iter().map(|d| d as usize).collect();
        assert_eq!(out.dims(), shape.as_slice(), "{id} {tap}: shape");
        let reference = &fx.tensors[&format!("tap.{tap}")];
        let mut err = rel_to_max(&window(out, reference), reference);
        if let Some(means) = fx.tensors.get(&format!("mean.{tap}")) {
            err = err.max(rel_to_max(&out.mean((2, 3)).unwrap(), means));
        }
        assert!(err <= TOL, "{id} {tap}: rel-to-max {err:.2e}");
        if err > worst.0 {
            worst = (err, tap.clone());
        }
    }
    eprintln!("{id}: worst tap {} {:.1e}", worst.1, worst.0);
    // The source's preprocessing, then the logits and top-5 of each bundled image.
    let pre: serde_json::Value = fx.json("preprocess");
    let m = &model.spec.manifest;
    assert_eq!(
        (u64::from(m.input_size), u64::from(m.resize_shorter)),
        (
            pre["input_size"].as_u64().unwrap(),
            pre["resize_shorter"].as_u64().unwrap()
        ),
        "{id}: preprocessing"
    );
    let mean: Vec<f32> = serde_json::from_value(pre["mean"].clone()).unwrap();
    assert!(mean.iter().zip(m.mean).all(|(a, b)| (a - b).abs() < 1e-6));
    let images: Vec<String> = fx.json("images");
    for image in &images {
        let stem = image.rsplit_once('.').unwrap().0;
        let x = model
            .spec
            .preprocess
            .load(&repo(&format!("assets/images/{image}")), &model.device)
            .unwrap();
        let logits = model.network.forward(&x).unwrap();
        let reference = &fx.tensors[&format!("logits.{stem}")];
        let err = rel_to_max(&logits, reference);
        assert!(err <= TOL, "{id} {image}: logits rel-to-max {err:.2e}");
        let want: Vec<i64> = fx.tensors[&format!("top5.{stem}")].to_vec1().unwrap();
        let want: Vec<u32> = want.into_iter().map(|i| i as u32).collect();
        assert_eq!(top5(&logits), want, "{id} {image}: top-5");
    }
    // Grad-CAM of the top-1 class at the default layer, as pytorch-grad-cam computes it.
    let layer = &m.default_cam_layer;
    assert_eq!(layer, &fx.meta["cam_layer"], "{id}: default CAM layer");
    let x = model
        .spec
        .preprocess
        .load(&repo("assets/images/chelsea.png"), &model.device)
        .unwrap();
    let out = cam::compute(
        &model.network,
        &x,
        &CamOptions::new(CamMethod::GradCam, layer),
    )
    .unwrap();
    let low = &fx.tensors["cam.lowres"];
    let (h, w) = low.dims2().unwrap();
    assert_eq!(out.lowres_size, (h, w));
    let ours = Tensor::from_vec(out.lowres.clone(), (h, w), &Device::Cpu).unwrap();
    let err = rel_to_max(&ours, low);
    assert!(err <= TOL, "{id}: Grad-CAM low-res rel-to-max {err:.2e}");
    let every8 = &fx.tensors["cam.map_every8"];
    let (sh, sw) = out.size;
    let sampled: Vec<f32> = (0..sh)
        .step_by(8)
        .flat_map(|y| (0..sw).step_by(8).map(move |x| (y, x)))
        .map(|(y, x)| out.map[y * sw + x])
        .collect();
    let sampled = Tensor::from_vec(sampled, every8.dims(), &Device::Cpu).unwrap();
    let err = (sampled - every8)
        .unwrap()
        .abs()
        .unwrap()
        .max_all()
        .unwrap();
    let err: f32 = err.to_scalar().unwrap();
    assert!(err <= TOL, "{id}: Grad-CAM map max abs {err:.2e}");
    // `convlens info --model FILE` names the architecture and says why.
    let info = common::convlens(&["info", "--model", path.to_str().unwrap()]);
    let stdout = common::text(&info.stdout);
    assert!(info.status.success(), "{}", common::text(&info.stderr));
    assert!(
        stdout.contains(&format!("({id})")) && stdout.contains("detected from the tensor names"),
        "{stdout}"
    );
}

#[test]
fn efficientnet_b0_torchvision_matches_pytorch() {
    check("efficientnet_b0");
}

#[test]
fn efficientnet_b0_timm_matches_timm() {
    check("efficientnet_b0_timm");
}

#[test]
fn tf_efficientnet_b0_with_tensorflow_padding_matches_timm() {
    check("tf_efficientnet_b0");
}

#[test]
fn mobilenet_v3_large_torchvision_matches_pytorch() {
    check("mobilenet_v3_large");
}

#[test]
fn mobilenet_v3_small_torchvision_matches_pytorch() {
    check("mobilenet_v3_small");
}

#[test]
fn mobilenetv3_large_100_matches_timm() {
    check("mobilenetv3_large_100");
}

#[test]
fn mobilenetv3_small_100_matches_timm() {
    check("mobilenetv3_small_100");
}

#[test]
fn tf_efficientnet_lite0_timm_naming_matches_timm() {
    check("tf_efficientnet_lite0");
}

#[test]
fn mobilenetv2_100_timm_naming_matches_timm() {
    check("mobilenetv2_100");
}

/// One parity test per id (`check`), named after it.
macro_rules! parity_tests {
    ($($test:ident => $id:literal),* $(,)?) => {
        $(
            #[test]
            fn $test() {
                check($id);
            }
        )*
    };
}

// The full-size B1..B4 and Lite1..4 (the fixtures hold no weights: they are drawn here).
parity_tests! {
    efficientnet_b1_torchvision_matches_pytorch => "efficientnet_b1",
    efficientnet_b2_torchvision_matches_pytorch => "efficientnet_b2",
    efficientnet_b3_torchvision_matches_pytorch => "efficientnet_b3",
    efficientnet_b4_torchvision_matches_pytorch => "efficientnet_b4",
    efficientnet_b1_timm_matches_timm => "efficientnet_b1_timm",
    efficientnet_b2_timm_matches_timm => "efficientnet_b2_timm",
    efficientnet_b3_timm_matches_timm => "efficientnet_b3_timm",
    efficientnet_b4_timm_matches_timm => "efficientnet_b4_timm",
    tf_efficientnet_b1_matches_timm => "tf_efficientnet_b1",
    tf_efficientnet_b2_matches_timm => "tf_efficientnet_b2",
    tf_efficientnet_b3_matches_timm => "tf_efficientnet_b3",
    tf_efficientnet_b4_matches_timm => "tf_efficientnet_b4",
    tf_efficientnet_lite1_timm_naming_matches_timm => "tf_efficientnet_lite1",
    tf_efficientnet_lite2_timm_naming_matches_timm => "tf_efficientnet_lite2",
    tf_efficientnet_lite3_timm_naming_matches_timm => "tf_efficientnet_lite3",
    tf_efficientnet_lite4_timm_naming_matches_timm => "tf_efficientnet_lite4",
}

#[test]
fn expected_tensors_match_the_full_size_state_dicts() {
    let text = std::fs::read_to_string(repo("tests/fixtures/zoo_b_audit.json")).unwrap();
    let audit: serde_json::Value = serde_json::from_str(&text).unwrap();
    let dicts = audit["state_dicts"].as_object().unwrap();
    // B0..B4 in each naming, both MobileNetV3s in each, timm's Lite0..4 and MobileNetV2.
    assert_eq!(dicts.len(), 25);
    for (id, tensors) in dicts {
        // timm's TensorFlow ports are stored as the PyTorch variant they equal.
        let tensors = match tensors["same_as"].as_str() {
            Some(other) => &dicts[other],
            None => tensors,
        };
        let pairs: Vec<(String, Vec<usize>)> = serde_json::from_value(tensors.clone()).unwrap();
        let theirs: BTreeMap<String, Vec<usize>> = pairs.into_iter().collect();
        let ours: BTreeMap<String, Vec<usize>> = zoo::expected_tensors(id, 1000)
            .unwrap_or_else(|| panic!("{id}: not an architecture"))
            .into_iter()
            .collect();
        assert_eq!(ours.len(), theirs.len(), "{id}: tensor count");
        assert_eq!(ours, theirs, "{id}");
        // Detected from its own names and shapes (the path names timm's TensorFlow port).
        let path = PathBuf::from(format!("{id}.safetensors"));
        let shapes: zoo::detect::Shapes = theirs.into_iter().collect();
        let found = zoo::detect::detect_path(&shapes, &path).unwrap();
        assert_eq!(
            (found.architecture.as_str(), found.num_classes),
            (id.as_str(), 1000)
        );
    }
}

/// Head training then fine-tuning of the top stages (`--mode finetune`, 2 unfrozen) on a
/// small subset of fashion-mini; the saved model reloads and classifies.
fn finetune_smoke(id: &str, top: &str) {
    let (_fx, base, _dir, _path) = open(id);
    let work = tempfile::tempdir().unwrap();
    let data = small_dataset(&work.path().join("data"), 2, 1);
    let cfg = TrainConfig {
        mode: Mode::Finetune,
        epochs: 1,
        batch_size: 8,
        lr: 1e-3,
        finetune_epochs: 1,
        unfreeze: 2,
        finetune_lr: 1e-4,
        augment: Augment::none(),
        patience: None,
        cache_dir: Some(work.path().join("cache")),
        ..TrainConfig::default()
    };
    let out = work.path().join("finetune");
    let report = train(&base, &data, &cfg, &out, &mut |_| {}, &CancelToken::new()).unwrap();
    assert!(report.history.iter().any(|e| e.phase == "finetune"));
    assert!(report.history.iter().all(|e| e.train_loss.is_finite()));
    let m = convlens::train::bundle::TrainedManifest::read(&out).unwrap();
    let tuned = zoo::resolve(out.to_str().unwrap())
        .and_then(|s| s.load(&Device::Cpu))
        .unwrap();
    assert_eq!(tuned.spec.manifest.architecture, id);
    if !m.finetuned_layers.is_empty() {
        assert_eq!(m.finetuned_layers.last().map(String::as_str), Some(top));
    }
    let x = tuned
        .spec
        .preprocess
        .load(&repo("assets/images/coffee.png"), &tuned.device)
        .unwrap();
    let probs = tuned.probabilities(&x).unwrap();
    assert_eq!(probs[0].len(), 4);
    assert!(probs[0].iter().all(|p| p.is_finite()));
}

#[test]
fn efficientnet_b0_finetunes_its_top_stages() {
    finetune_smoke("efficientnet_b0", "features.8");
}

#[test]
fn mobilenetv3_small_100_finetunes_its_top_stages() {
    finetune_smoke("mobilenetv3_small_100", "global_pool");
}

/// One fine-tuning smoke test per architecture and naming, with the last fine-tuned stage.
macro_rules! finetune_tests {
    ($($test:ident => ($id:literal, $top:literal)),* $(,)?) => {
        $(
            #[test]
            fn $test() {
                finetune_smoke($id, $top);
            }
        )*
    };
}

finetune_tests! {
    efficientnet_b0_timm_finetunes_its_top_stages => ("efficientnet_b0_timm", "conv_head"),
    tf_efficientnet_b0_finetunes_its_top_stages => ("tf_efficientnet_b0", "conv_head"),
    mobilenet_v3_large_finetunes_its_top_stages => ("mobilenet_v3_large", "avgpool"),
    mobilenet_v3_small_finetunes_its_top_stages => ("mobilenet_v3_small", "avgpool"),
    mobilenetv3_large_100_finetunes_its_top_stages => ("mobilenetv3_large_100", "global_pool"),
    tf_efficientnet_lite0_finetunes_its_top_stages => ("tf_efficientnet_lite0", "conv_head"),
    mobilenetv2_100_finetunes_its_top_stages => ("mobilenetv2_100", "conv_head"),
    efficientnet_b1_finetunes_its_top_stages => ("efficientnet_b1", "features.8"),
    efficientnet_b1_timm_finetunes_its_top_stages => ("efficientnet_b1_timm", "conv_head"),
    tf_efficientnet_b1_finetunes_its_top_stages => ("tf_efficientnet_b1", "conv_head"),
    efficientnet_b2_finetunes_its_top_stages => ("efficientnet_b2", "features.8"),
    efficientnet_b2_timm_finetunes_its_top_stages => ("efficientnet_b2_timm", "conv_head"),
    tf_efficientnet_b2_finetunes_its_top_stages => ("tf_efficientnet_b2", "conv_head"),
    efficientnet_b3_finetunes_its_top_stages => ("efficientnet_b3", "features.8"),
    efficientnet_b3_timm_finetunes_its_top_stages => ("efficientnet_b3_timm", "conv_head"),
    tf_efficientnet_b3_finetunes_its_top_stages => ("tf_efficientnet_b3", "conv_head"),
    efficientnet_b4_finetunes_its_top_stages => ("efficientnet_b4", "features.8"),
    efficientnet_b4_timm_finetunes_its_top_stages => ("efficientnet_b4_timm", "conv_head"),
    tf_efficientnet_b4_finetunes_its_top_stages => ("tf_efficientnet_b4", "conv_head"),
    tf_efficientnet_lite1_finetunes_its_top_stages => ("tf_efficientnet_lite1", "conv_head"),
    tf_efficientnet_lite2_finetunes_its_top_stages => ("tf_efficientnet_lite2", "conv_head"),
    tf_efficientnet_lite3_finetunes_its_top_stages => ("tf_efficientnet_lite3", "conv_head"),
    tf_efficientnet_lite4_finetunes_its_top_stages => ("tf_efficientnet_lite4", "conv_head"),
}
