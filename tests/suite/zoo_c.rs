//! ConvNeXt Tiny/Small (torchvision and timm names) and DenseNet-121 against PyTorch: seeded
//! random-weight checkpoints of reduced width (`tests/fixtures/<id>_random_fp16.safetensors`)
//! and their references (`<id>_ref.safetensors`), both written by
//! `tests/fixtures/make/fx_zoo_c.py`; the full-size key/shape audit in `zoo_c_audit.json`.
use crate::common;

use std::collections::BTreeMap;

use candle_core::{Device, Tensor};
use common::{convlens, fixture, fixture_metadata, rel_to_max, repo, small_dataset, text};
use convlens::cancel::CancelToken;
use convlens::data::augment::Augment;
use convlens::train::{Mode, TrainConfig, train};
use convlens::viz::cam::{self, CamMethod, CamOptions};
use convlens::zoo::{self, Model};

/// The ids with fixtures, and the default CAM layer of each.
const IDS: [(&str, &str); 5] = [
    ("convnext_tiny", "features.7"),
    ("convnext_small", "features.7"),
    ("convnext_tiny_timm", "stages.3"),
    ("convnext_small_timm", "stages.3"),
    ("densenet121", "features.norm5"),
];

/// tests/fixtures/README.md's tolerance: `max|a - b| <= TOL * max|reference|`.
const TOL: f32 = 1e-4;

fn weights(id: &str) -> String {
    format!("tests/fixtures/{id}_random_fp16.safetensors")
}

fn load(id: &str) -> Model {
    zoo::resolve(repo(&weights(id)).to_str().unwrap())
        .and_then(|spec| spec.load(&Device::Cpu))
        .unwrap_or_else(|e| panic!("{id}: {e}"))
}

fn image(model: &Model, name: &str) -> Tensor {
    let path = repo(&format!("assets/images/{name}"));
    model.spec.preprocess.load(&path, &model.device).unwrap()
}

/// `t` cut to `like`'s leading extent in every dimension (the stored window of a tap).
fn window(t: &Tensor, like: &Tensor) -> Tensor {
    like.dims()
        .iter()
        .enumerate()
        .fold(t.clone(), |t, (d, &n)| t.narrow(d, 0, n).unwrap())
}

#[test]
fn each_checkpoint_is_detected_from_names_and_shapes() {
    for (id, cam_layer) in IDS {
        let model = load(id);
        let m = &model.spec.manifest;
        assert_eq!((m.architecture.as_str(), m.num_classes), (id, 1000));
        assert_eq!(m.default_cam_layer, cam_layer, "{id}");
        // The same through the command line, with the file as an argument and as --model.
        let file = weights(id);
        for args in [
            vec!["info", file.as_str()],
            vec!["info", "--model", file.as_str()],
        ] {
            let out = convlens(&args);
            let stdout = text(&out.stdout);
            assert!(out.status.success(), "{args:?}: {}", text(&out.stderr));
            assert!(
                stdout.contains(&format!("({id}), 1000 classes")),
                "{stdout}"
            );
            assert!(
                stdout.contains("detected from the tensor names"),
                "{stdout}"
            );
            assert!(stdout.contains(cam_layer), "{stdout}");
        }
    }
}

#[test]
fn info_takes_the_model_once_positionally_or_as_a_flag() {
    let a = weights("densenet121");
    let b = weights("convnext_tiny");
    let out = convlens(&["info", &a, "--model", &a, "--json"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["architecture"], "densenet121");
    let out = convlens(&["info", &a, "--model", &b]);
    assert!(!out.status.success());
    let err = text(&out.stderr);
    assert!(
        err.contains("two models given") && err.contains(&a) && err.contains(&b),
        "{err}"
    );
}

#[test]
fn every_tap_matches_pytorch() {
    for (id, _) in IDS {
        let model = load(id);
        let fx = fixture(&format!("{id}_ref"));
        let taps: Vec<String> =
            serde_json::from_str(&fixture_metadata(&format!("{id}_ref"))["taps"]).unwrap();
        let x = image(&model, "chelsea.png");
        let err = rel_to_max(&window(&x, &fx["input.window"]), &fx["input.window"]);
        assert!(
            err <= 1e-6,
            "{id}: the preprocessed input is off by {err:e}"
        );
        let refs: Vec<&str> = taps.iter().map(String::as_str).collect();
        let layer_ids: Vec<&str> = model.network.layer_ids().collect();
        assert_eq!(layer_ids, refs, "{id}: a tap at every stage");
        let outputs = model.network.forward_with_taps(&x, &refs).unwrap();
        let mut report = Vec::new();
        for (tap, out) in taps.iter().zip(&outputs) {
            let shape: Vec<i64> = fx[&format!("shape.{tap}")].to_vec1().unwrap();
            let shape: Vec<usize> = shape.into_iter().map(|d| d as usize).collect();
            assert_eq!(out.dims(), shape.as_slice(), "{id} {tap}: shape");
            let reference = &fx[&format!("tap.{tap}")];
            let err = rel_to_max(&window(out, reference), reference);
            report.push(format!("{tap} {err:.1e}"));
            assert!(err <= TOL, "{id} {tap}: rel-to-max {err:.2e} ({report:?})");
        }
        eprintln!("{id}: {}", report.join(", "));
    }
}

#[test]
fn top5_on_the_bundled_images_is_pytorchs() {
    for (id, _) in IDS {
        let model = load(id);
        let fx = fixture(&format!("{id}_ref"));
        let images: Vec<String> =
            serde_json::from_str(&fixture_metadata(&format!("{id}_ref"))["images"]).unwrap();
        let top5: Vec<Vec<i64>> = fx["top5"].to_vec2().unwrap();
        for (i, name) in images.iter().enumerate() {
            let logits = model.network.forward(&image(&model, name)).unwrap();
            let scores: Vec<f32> = logits.flatten_all().unwrap().to_vec1().unwrap();
            let ours: Vec<i64> = common::ranking(&scores)[..5]
                .iter()
                .map(|&c| c as i64)
                .collect();
            assert_eq!(ours, top5[i], "{id} {name}: top-5");
            // The logits too, for the PNGs: the JPEG's pixels come from another decoder here
            // (the image crate; PIL uses libjpeg), which moves rocket.jpg's logits by up to
            // 8e-4 relative to max.
            if name.ends_with(".png") {
                let reference = fx["logits"].narrow(0, i, 1).unwrap();
                let err = rel_to_max(&logits, &reference);
                assert!(err <= TOL, "{id} {name}: logits off by {err:e}");
            }
        }
    }
}

#[test]
fn grad_cam_at_the_default_layer_matches_pytorch_grad_cam() {
    for (id, layer) in IDS {
        let model = load(id);
        let fx = fixture(&format!("{id}_ref"));
        let x = image(&model, "chelsea.png");
        let cam = cam::compute(
            &model.network,
            &x,
            &CamOptions::new(CamMethod::GradCam, layer),
        )
        .unwrap();
        let class = fx["gradcam.class"].to_vec1::<f32>().unwrap()[0] as usize;
        assert_eq!(cam.class, class, "{id}: the top-1 class");
        assert_eq!(cam.lowres_size, (7, 7), "{id}");
        let lowres = Tensor::from_vec(cam.lowres.clone(), (7, 7), &Device::Cpu).unwrap();
        let err = rel_to_max(&lowres, &fx["gradcam.lowres"]);
        assert!(
            err <= TOL,
            "{id}: Grad-CAM at {layer} off by {err:e} relative to max"
        );
    }
}

#[test]
fn expected_tensors_are_the_full_size_state_dicts() {
    let path = repo("tests/fixtures/zoo_c_audit.json");
    let audit: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    for (id, _) in IDS {
        let theirs: BTreeMap<String, Vec<usize>> =
            serde_json::from_value(audit["state_dicts"][id].clone()).unwrap();
        let ours: BTreeMap<String, Vec<usize>> = zoo::expected_tensors(id, 1000)
            .unwrap()
            .into_iter()
            .collect();
        assert_eq!(ours, theirs, "{id}");
    }
}

/// Fine-tuning of the last stage (plus the head) on a small subset of fashion-mini: it runs,
/// and only the unfrozen stage and the head change.
#[test]
fn finetune_smoke_runs() {
    let work = tempfile::tempdir().unwrap();
    let data = small_dataset(&work.path().join("data"), 2, 1);
    for (id, last) in [
        ("convnext_tiny_timm", "stages.3"),
        ("densenet121", "features.norm5"),
    ] {
        let base = load(id);
        let out = work.path().join(id);
        let cfg = TrainConfig {
            mode: Mode::Finetune,
            epochs: 1,
            batch_size: 4,
            lr: 1e-3,
            finetune_epochs: 1,
            unfreeze: 1,
            finetune_lr: 1e-3,
            augment: Augment::none(),
            patience: None,
            cache_dir: Some(work.path().join(format!("cache-{id}"))),
            ..TrainConfig::default()
        };
        let report = train(&base, &data, &cfg, &out, &mut |_| {}, &CancelToken::new())
            .unwrap_or_else(|e| panic!("{id}: {e}"));
        let tuned = report.history.iter().find(|e| e.phase == "finetune");
        assert!(tuned.is_some(), "{id}: {:?}", report.history);
        assert!(
            report.history.iter().all(|e| e.train_loss.is_finite()),
            "{id}"
        );
        let m = convlens::train::bundle::TrainedManifest::read(&out).unwrap();
        assert_eq!(
            m.finetuned_layers.len(),
            usize::from(!m.finetuned_layers.is_empty())
        );
        if let Some(layer) = m.finetuned_layers.first() {
            assert_eq!(layer, last, "{id}");
        }
        let model = zoo::resolve(out.to_str().unwrap())
            .and_then(|s| s.load(&Device::Cpu))
            .unwrap();
        assert_eq!(model.spec.manifest.architecture, id);
    }
}

/// The rows of the README's zoo table (`## Model zoo`).
fn readme_zoo_rows() -> Vec<String> {
    let readme = std::fs::read_to_string(repo("README.md")).unwrap();
    let section = readme.split("## Model zoo").nth(1).unwrap();
    let section = section.split("\n## ").next().unwrap();
    section
        .lines()
        .filter(|l| l.starts_with("| ") && !l.starts_with("| ---") && !l.starts_with("| family"))
        .map(str::to_string)
        .collect()
}

#[test]
fn the_readme_zoo_table_lists_every_registry_family_id_and_cam_layer() {
    let rows = readme_zoo_rows();
    for family in zoo::registry::FAMILIES {
        for id in family.ids() {
            let row = rows
                .iter()
                .find(|r| r.contains(&format!("`{id}`")))
                .unwrap_or_else(|| panic!("the README's zoo table lacks `{id}`"));
            assert!(
                row.starts_with(&format!("| {} |", family.family())),
                "{id}: {row}"
            );
            let cam = family.default_cam_layer(id);
            assert!(
                row.contains(&format!("**`{cam}`**")),
                "{id}: CAM layer {cam}: {row}"
            );
        }
    }
    // `convlens info --zoo` prints the registry's facts.
    let out = convlens(&["info", "--zoo"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let listing = text(&out.stdout);
    for id in zoo::registry::all_ids() {
        assert!(listing.contains(&format!("`{id}`")), "{listing}");
    }
    assert!(
        listing.contains("| DenseNet | `densenet121` |"),
        "{listing}"
    );
}
