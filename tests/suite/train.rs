//! Transfer learning end to end on the bundled fashion-mini dataset.
// Tests and benchmarks may panic on failure, print, and call the APIs the library bans
// (reference softmax, image::open on figures, threads for concurrent runs).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::disallowed_macros,
    clippy::disallowed_methods
)]

use crate::common;

use std::path::Path;
use std::process::Command;

use candle_core::{Device, Tensor};
use common::{fashion_mini as dataset, fashion_mini_features, lite0, load_lite0, repo};
use common::{small_dataset, tensors};
use convlens::cancel::CancelToken;
use convlens::data::augment::Augment;
use convlens::data::folder::Split;
use convlens::train::evaluate::evaluate;
use convlens::train::{Mode, TrainConfig, TrainReport, train};
use convlens::zoo::Model;

fn run(base: &Model, cfg: &TrainConfig, out: &Path) -> convlens::Result<TrainReport> {
    train(base, &dataset(), cfg, out, &mut |_| {}, &CancelToken::new())
}

fn load(dir: &Path) -> Model {
    convlens::zoo::resolve(dir.to_str().unwrap())
        .and_then(|s| s.load(&Device::Cpu))
        .unwrap()
}

fn probabilities(model: &Model, split: Split) -> Vec<Vec<f32>> {
    let paths: Vec<_> = dataset()
        .split(split)
        .iter()
        .map(|s| s.path.clone())
        .collect();
    let batch = model.load_batch(&paths).unwrap().batch.unwrap();
    model.probabilities(&batch).unwrap()
}

/// extract (cache filled, then hit), evaluate, reload, a diverging run, fine-tuning.
#[test]
fn transfer_learning_end_to_end() {
    let base = lite0();
    let work = tempfile::tempdir().unwrap();
    let cfg = TrainConfig {
        epochs: 15,
        cache_dir: Some(work.path().join("cache")),
        ..TrainConfig::default()
    };

    // 1. Fast feature extraction: the base runs once per image.
    let out = work.path().join("extract");
    let first = run(&base, &cfg, &out).unwrap();
    println!("extract: best val acc {:.3}", first.best_val_accuracy);
    assert_eq!(
        first.extract.computed, 320,
        "240 train + 80 validation images"
    );
    assert!(
        first.best_val_accuracy >= 0.93,
        "{}",
        first.best_val_accuracy
    );
    assert!(first.history.iter().any(|e| e.best));

    // 2. Second run: every feature from the cache, no base forward; same seed, same metrics.
    let second = run(&base, &cfg, &work.path().join("extract2")).unwrap();
    assert_eq!(second.extract.computed, 0, "the cache is hit");
    assert_eq!(second.extract.cached, 320);
    assert_eq!(second.history, {
        let mut h = first.history.clone();
        for (a, b) in h.iter_mut().zip(&second.history) {
            a.secs = b.secs;
        }
        h
    });

    // 3. The saved model reloads, uses the user's classes and predicts identically.
    let model = load(&out);
    assert_eq!(
        model.spec.labels,
        ["ankle_boot", "bag", "sandal", "sneaker"]
    );
    let again = load(&out);
    assert_eq!(
        probabilities(&model, Split::Test),
        probabilities(&again, Split::Test)
    );
    let eval = evaluate(
        &model,
        dataset().split(Split::Test),
        32,
        &mut |_, _| {},
        &CancelToken::new(),
    )
    .unwrap();
    let total: usize = eval.confusion.iter().flatten().sum();
    assert_eq!(total, 80);
    assert!(eval.accuracy >= 0.85, "test accuracy {}", eval.accuracy);
    assert_eq!(
        eval.misclassified.len(),
        80 - (0..4).map(|i| eval.confusion[i][i]).sum::<usize>()
    );

    // 4. A diverging run stops with a clear message; its checkpoint still loads.
    let nan_dir = work.path().join("nan");
    let nan_cfg = TrainConfig {
        lr: 1e6,
        ..cfg.clone()
    };
    let err = run(&base, &nan_cfg, &nan_dir).unwrap_err().to_string();
    assert!(
        err.contains("loss became") && err.contains("learning rate"),
        "{err}"
    );
    let survivor = load(&nan_dir);
    assert!(
        probabilities(&survivor, Split::Validation)
            .iter()
            .flatten()
            .all(|p| p.is_finite())
    );

    // 5. Fine-tuning changes only the unfrozen stages (and the head). A short head phase
    //    leaves room for fine-tuning to improve the validation loss, so its weights are the
    //    ones checkpointed.
    let ft_dir = work.path().join("finetune");
    let ft_cfg = TrainConfig {
        mode: Mode::Finetune,
        epochs: 3,
        finetune_epochs: 1,
        augment: Augment::none(),
        patience: None,
        ..cfg.clone()
    };
    let report = run(&base, &ft_cfg, &ft_dir).unwrap();
    assert_eq!(
        report.extract.computed, 0,
        "the head phase reuses the cache"
    );
    assert!(report.history.iter().any(|e| e.phase == "finetune"));
    let head_phase_best = report
        .history
        .iter()
        .filter(|e| e.phase == "head")
        .map(|e| e.val_accuracy)
        .fold(0.0, f32::max);
    assert!(
        report.best_val_accuracy >= head_phase_best - 0.02,
        "{} vs {head_phase_best}",
        report.best_val_accuracy
    );
    let mut tuned = load(&ft_dir);
    let mut pretrained = load_lite0();
    let before = tensors(&mut pretrained);
    let after = tensors(&mut tuned);
    let unfrozen = ["blocks.15.", "head."];
    let m = convlens::train::bundle::TrainedManifest::read(&ft_dir).unwrap();
    assert_eq!(
        m.finetuned_layers,
        ["blocks.15", "head"],
        "the fine-tuned epoch was best"
    );
    for (name, values) in &after {
        if name.starts_with("logits.") {
            continue; // the new head
        }
        let original = &before[name];
        if unfrozen.iter().any(|p| name.starts_with(p)) {
            assert_ne!(values, original, "{name} should have been fine-tuned");
        } else {
            assert_eq!(values, original, "{name} must stay bit-identical");
        }
    }
}

#[test]
fn scratch_convnet_beats_chance() {
    let base = lite0();
    let work = tempfile::tempdir().unwrap();
    let cfg = TrainConfig {
        mode: Mode::Scratch,
        scratch_size: 80,
        epochs: 3,
        augment: Augment::none(),
        ..TrainConfig::default()
    };
    let report = run(&base, &cfg, work.path()).unwrap();
    println!("scratch: best val acc {:.3}", report.best_val_accuracy);
    assert!(
        report.best_val_accuracy > 0.5,
        "{}",
        report.best_val_accuracy
    );
    let model = load(work.path());
    assert_eq!(model.spec.manifest.architecture, "small_convnet");
    let x = Tensor::zeros((1, 3, 80, 80), candle_core::DType::F32, &Device::Cpu).unwrap();
    assert_eq!(model.network.forward(&x).unwrap().dims(), &[1, 4]);
}

#[test]
fn cli_train_then_evaluate_json() {
    let work = tempfile::tempdir().unwrap();
    let out = work.path().join("model");
    let status = Command::new(env!("CARGO_BIN_EXE_convlens"))
        .args([
            "train",
            "assets/datasets/fashion-mini",
            "--epochs",
            "3",
            "--head",
            "linear",
        ])
        .arg("--out")
        .arg(&out)
        .arg("--cache")
        .arg(fashion_mini_features())
        .current_dir(repo(""))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&status.stderr);
    assert!(status.status.success(), "{stderr}");
    assert!(stderr.contains("head epoch   3"), "{stderr}");
    let eval = Command::new(env!("CARGO_BIN_EXE_convlens"))
        .arg("evaluate")
        .arg(&out)
        .args([
            "assets/datasets/fashion-mini",
            "--split",
            "validation",
            "--json",
        ])
        .current_dir(repo(""))
        .output()
        .unwrap();
    assert!(
        eval.status.success(),
        "{}",
        String::from_utf8_lossy(&eval.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&eval.stdout).unwrap();
    for key in [
        "accuracy",
        "classes",
        "confusion",
        "per_class",
        "misclassified",
    ] {
        assert!(v.get(key).is_some(), "missing {key}");
    }
    let total: u64 = v["confusion"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|r| r.as_array().unwrap().iter().map(|n| n.as_u64().unwrap()))
        .sum();
    assert_eq!(total, 80);
}

/// Fine-tuning with BatchNorm trained: the unfrozen stage's running statistics, scale and
/// shift move, the saved model folds them in, and the stages before it stay bit-identical.
#[test]
fn finetuning_can_train_batchnorm() {
    let base = lite0();
    let work = tempfile::tempdir().unwrap();
    let data = small_dataset(&work.path().join("data"), 8, 4);
    let cfg = TrainConfig {
        mode: Mode::Finetune,
        epochs: 1,
        finetune_epochs: 2,
        finetune_lr: 1e-3,
        unfreeze: 1,
        train_batchnorm: true,
        batch_size: 16,
        augment: Augment::none(),
        patience: None,
        cache_dir: Some(work.path().join("cache")),
        ..TrainConfig::default()
    };
    let out = work.path().join("model");
    let report = train(&base, &data, &cfg, &out, &mut |_| {}, &CancelToken::new()).unwrap();
    assert!(report.history.iter().any(|e| e.phase == "finetune"));
    let m = convlens::train::bundle::TrainedManifest::read(&out).unwrap();
    assert!(m.config.train_batchnorm);
    assert_eq!(m.finetuned_layers, ["head"], "a fine-tuned epoch was best");
    let mut tuned = load(&out);
    let before = tensors(&mut load_lite0());
    for (name, values) in tensors(&mut tuned) {
        if name.starts_with("logits.") {
            continue;
        }
        if name.starts_with("head.") {
            assert_ne!(values, before[&name], "{name} should have moved");
        } else {
            assert_eq!(values, before[&name], "{name} must stay bit-identical");
        }
    }
    assert!(
        probabilities(&tuned, Split::Test)
            .iter()
            .flatten()
            .all(|p| p.is_finite())
    );
}

/// Cancelling between batches stops the run with `Cancelled` and leaves the best checkpoint
/// of the finished epochs on disk, exactly as a run of that many epochs writes it.
#[test]
fn cancelling_keeps_the_best_checkpoint() {
    let base = lite0();
    let work = tempfile::tempdir().unwrap();
    let data = small_dataset(&work.path().join("data"), 16, 8);
    let cfg = TrainConfig {
        epochs: 10,
        batch_size: 8,
        patience: None,
        cache_dir: Some(work.path().join("cache")),
        ..TrainConfig::default()
    };
    let cancel = CancelToken::new();
    let mut epochs_done = 0;
    let mut on_event = |e: convlens::train::TrainEvent| match e {
        convlens::train::TrainEvent::Epoch(_) => epochs_done += 1,
        convlens::train::TrainEvent::Progress { done, .. } if epochs_done == 2 && done >= 1 => {
            cancel.cancel()
        }
        _ => {}
    };
    let cancelled_dir = work.path().join("cancelled");
    let err = train(&base, &data, &cfg, &cancelled_dir, &mut on_event, &cancel).unwrap_err();
    assert!(matches!(err, convlens::Error::Cancelled), "{err}");
    let saved = convlens::train::bundle::TrainedManifest::read(&cancelled_dir).unwrap();
    assert_eq!(saved.history.len(), 2, "two finished epochs on record");

    let two = TrainConfig {
        epochs: 2,
        ..cfg.clone()
    };
    let complete_dir = work.path().join("two-epochs");
    train(
        &base,
        &data,
        &two,
        &complete_dir,
        &mut |_| {},
        &CancelToken::new(),
    )
    .unwrap();
    let weights = |dir: &Path| std::fs::read(dir.join(convlens::train::bundle::WEIGHTS)).unwrap();
    assert_eq!(weights(&cancelled_dir), weights(&complete_dir));
    let model = load(&cancelled_dir);
    assert!(
        probabilities(&model, Split::Validation)
            .iter()
            .flatten()
            .all(|p| p.is_finite())
    );
}

/// Ctrl-C during `convlens train` stops between batches: exit code 130, a message, and a
/// model folder that loads with the finished epochs on record.
#[cfg(unix)]
#[test]
fn cli_train_interrupted_keeps_the_checkpoint() {
    use std::io::{BufRead, BufReader};
    use std::process::Stdio;
    let work = tempfile::tempdir().unwrap();
    let out = work.path().join("model");
    let mut child = Command::new(env!("CARGO_BIN_EXE_convlens"))
        .args(["train", "assets/datasets/fashion-mini", "--epochs", "500"])
        .args(["--patience", "0", "--batch-size", "4"])
        .arg("--out")
        .arg(&out)
        .arg("--cache")
        .arg(fashion_mini_features())
        .current_dir(repo(""))
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = BufReader::new(child.stderr.take().unwrap());
    let mut log = String::new();
    let mut line = String::new();
    while stderr.read_line(&mut line).unwrap() > 0 {
        log.push_str(&line);
        if line.contains("head epoch   2") {
            unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
            break;
        }
        line.clear();
    }
    std::io::Read::read_to_string(&mut stderr, &mut log).unwrap();
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(130), "{log}");
    assert!(log.contains("interrupted"), "{log}");
    let m = convlens::train::bundle::TrainedManifest::read(&out).unwrap();
    assert!(
        m.history.len() >= 2 && m.history.len() < 500,
        "{}",
        m.history.len()
    );
    load(&out);
}
