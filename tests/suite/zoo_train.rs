//! Training and the visualisations with an architecture other than the bundled Lite0: the
//! ResNet-18 fixture (random fp16 weights, no manifest) on a small subset of fashion-mini.
use crate::common;

use candle_core::Device;
use common::{repo, small_dataset, tensors};
use convlens::cancel::CancelToken;
use convlens::data::augment::Augment;
use convlens::data::folder::Split;
use convlens::train::{Mode, TrainConfig, train};
use convlens::viz::activations::layer_activations;
use convlens::viz::cam::{self, CamMethod, CamOptions};
use convlens::viz::filters::{AscentOptions, FilterOptions, filter_patterns};
use convlens::zoo::{self, Model};

const RESNET18: &str = "tests/fixtures/resnet18_random_fp16.safetensors";

fn resnet18() -> Model {
    zoo::resolve(repo(RESNET18).to_str().unwrap())
        .and_then(|spec| spec.load(&Device::Cpu))
        .expect("the ResNet-18 fixture loads")
}

#[test]
fn resnet18_grad_cam_at_its_default_layer() {
    let model = resnet18();
    let layer = model.spec.manifest.default_cam_layer.clone();
    assert_eq!(layer, "layer4");
    let input = model
        .spec
        .preprocess
        .load(&repo("assets/images/chelsea.png"), &model.device)
        .unwrap();
    let cam = cam::compute(
        &model.network,
        &input,
        &CamOptions::new(CamMethod::GradCam, &layer),
    )
    .unwrap();
    assert_eq!(cam.size, (224, 224));
    assert_eq!(cam.lowres_size, (7, 7));
    assert_eq!(cam.map.len(), 224 * 224);
    // From the image file: the reference input (PIL's resize and crop, reproduced bit for bit
    // up to float rounding), then pytorch-grad-cam's Grad-CAM of the top-1 class with the logit
    // target at `layer4` (cam_prob_resnet18.safetensors, 1e-4 relative to max as its README
    // says).
    assert!(common::rel_to_max(&input, &common::fixture("resnet18_ref")["input"]) <= 1e-6);
    let fx = common::fixture("cam_prob_resnet18");
    let class = fx["class"].to_vec1::<f32>().unwrap()[0] as usize;
    assert_eq!(cam.class, class, "the top-1 class");
    let lowres = candle_core::Tensor::from_vec(cam.lowres.clone(), (7, 7), &Device::Cpu).unwrap();
    let err = common::rel_to_max(&lowres, &fx["gradcam_logit.lowres"]);
    assert!(
        err <= 1e-4,
        "Grad-CAM at layer4 off by {err:e} relative to max"
    );
    // Activations of the max-pool stem for the same image.
    let act = layer_activations(&model.network, &input, "maxpool").unwrap();
    assert_eq!((act.channels, act.height, act.width), (64, 56, 56));
}

#[test]
fn resnet18_filter_patterns_ascend_through_the_max_pool() {
    let model = resnet18();
    let opts = FilterOptions {
        ascent: AscentOptions {
            steps: 2,
            ..AscentOptions::default()
        },
        ..FilterOptions::with_size(64)
    };
    let filters: Vec<usize> = (0..8).collect();
    let patterns = filter_patterns(&model, "layer1", &filters, &opts, &mut |_, _| true).unwrap();
    assert_eq!(patterns.len(), 8);
    let mut live = 0;
    for p in &patterns {
        assert_eq!(p.image.dimensions(), (48, 48));
        if p.losses[0] == 0.0 && p.final_loss == 0.0 {
            continue; // a channel the ReLU keeps at zero for this start: no gradient
        }
        live += 1;
        assert!(
            p.final_loss > p.losses[1] && p.losses[1] > p.losses[0],
            "filter {}: {:?} -> {}",
            p.filter,
            p.losses,
            p.final_loss
        );
    }
    assert!(live >= 4, "only {live} of 8 filters respond");
}

/// Feature extraction, reload, then fine-tuning of `layer4` with a ResNet-18 base.
#[test]
fn resnet18_extract_then_finetune_on_a_small_subset() {
    let base = resnet18();
    let work = tempfile::tempdir().unwrap();
    let data = small_dataset(&work.path().join("data"), 4, 2);
    assert_eq!(data.split(Split::Train).len(), 16);
    let cfg = TrainConfig {
        epochs: 3,
        batch_size: 8,
        cache_dir: Some(work.path().join("cache")),
        ..TrainConfig::default()
    };
    let out = work.path().join("extract");
    let report = train(&base, &data, &cfg, &out, &mut |_| {}, &CancelToken::new()).unwrap();
    assert_eq!(
        report.extract.computed, 24,
        "16 train + 8 validation images"
    );
    assert_eq!(report.history.len(), 3);
    let model = zoo::resolve(out.to_str().unwrap())
        .and_then(|s| s.load(&Device::Cpu))
        .unwrap();
    assert_eq!(model.spec.manifest.architecture, "resnet18");
    assert_eq!(model.spec.manifest.default_cam_layer, "layer4");
    assert_eq!(
        model.spec.labels,
        ["ankle_boot", "bag", "sandal", "sneaker"]
    );
    let paths: Vec<_> = data
        .split(Split::Validation)
        .iter()
        .map(|s| s.path.clone())
        .collect();
    let batch = model.load_batch(&paths).unwrap().batch.unwrap();
    let probs = model.probabilities(&batch).unwrap();
    assert_eq!((probs.len(), probs[0].len()), (8, 4));
    assert!(probs.iter().flatten().all(|p| p.is_finite()));

    // Fine-tuning with `layer4` unfrozen: only it (and the new head) change.
    let ft_dir = work.path().join("finetune");
    let ft_cfg = TrainConfig {
        mode: Mode::Finetune,
        epochs: 1,
        lr: 1e-4,
        finetune_epochs: 2,
        unfreeze: 1,
        finetune_lr: 1e-4,
        augment: Augment::none(),
        patience: None,
        ..cfg
    };
    let report = train(
        &base,
        &data,
        &ft_cfg,
        &ft_dir,
        &mut |_| {},
        &CancelToken::new(),
    )
    .unwrap();
    assert!(report.history.iter().any(|e| e.phase == "finetune"));
    let m = convlens::train::bundle::TrainedManifest::read(&ft_dir).unwrap();
    // (With these seeds the second fine-tuning epoch has the best validation loss, 1.42
    // against the head phase's 1.61, so the checkpoint holds the tuned `layer4`.)
    assert_eq!(
        m.finetuned_layers,
        ["layer4"],
        "the fine-tuned epoch was best: {:?}",
        report.history
    );
    let mut tuned = zoo::resolve(ft_dir.to_str().unwrap())
        .and_then(|s| s.load(&Device::Cpu))
        .unwrap();
    let before = tensors(&mut resnet18());
    let after = tensors(&mut tuned);
    let mut changed = 0;
    for (name, values) in &after {
        if name.starts_with("logits.") {
            continue;
        }
        if name.starts_with("layer4.") {
            changed += usize::from(values != &before[name]);
        } else {
            assert_eq!(values, &before[name], "{name} must stay bit-identical");
        }
    }
    assert!(changed > 0, "layer4 was fine-tuned");
}
