//! Transfer learning end to end on the bundled fashion-mini dataset.
use crate::common;

use std::path::Path;
use std::process::Command;

use candle_core::{Device, Tensor};
use common::{fashion_mini as dataset, fashion_mini_features, lite0, load_lite0, repo};
use common::{small_dataset, tensors};
use convlens::cancel::CancelToken;
use convlens::data::augment::Augment;
use convlens::data::folder::{ImageFolder, Split};
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

    // 3. The saved model reloads with the user's classes, and is the checkpoint of the epoch
    //    with the lowest validation loss: on the validation split it scores the recorded
    //    best_val_accuracy exactly and best_val_loss (log-softmax in training, the log of the
    //    softmax in evaluate: 1e-5 relative).
    let model = load(&out);
    assert_eq!(model.spec.labels, common::FASHION_CLASSES);
    let manifest = convlens::train::bundle::TrainedManifest::read(&out).unwrap();
    assert_best_is_lowest_loss(&manifest);
    let val = evaluate(
        &model,
        dataset().split(Split::Validation),
        32,
        &mut |_, _| {},
        &CancelToken::new(),
    )
    .unwrap();
    assert_eq!(val.accuracy, first.best_val_accuracy);
    assert_eq!(manifest.best_val_accuracy, first.best_val_accuracy);
    let loss = val.loss.unwrap();
    assert!(
        (loss - first.best_val_loss).abs() <= 1e-5 * first.best_val_loss.max(1.0),
        "reloaded validation loss {loss} vs recorded {}",
        first.best_val_loss
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
    let mut tuned = load(&ft_dir);
    let mut pretrained = load_lite0();
    let before = tensors(&mut pretrained);
    let after = tensors(&mut tuned);
    let m = convlens::train::bundle::TrainedManifest::read(&ft_dir).unwrap();
    assert_best_is_lowest_loss(&m);
    // Whichever phase's epoch had the lowest validation loss is the one kept: a fine-tuned
    // epoch brings its unfrozen stages, a head epoch none (not a float trajectory: a property).
    let kept = &m.history[lowest_val_loss(&m.history).0];
    let unfrozen: &[&str] = if kept.phase == "finetune" {
        assert_eq!(m.finetuned_layers, ["blocks.15", "head"]);
        &["blocks.15.", "head."]
    } else {
        assert!(m.finetuned_layers.is_empty(), "{:?}", m.finetuned_layers);
        &[]
    };
    println!("fine-tuning: kept {} epoch {}", kept.phase, kept.epoch);
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

fn convlens(args: &[&std::ffi::OsStr]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_convlens"))
        .args(args)
        .current_dir(repo(""))
        .output()
        .unwrap()
}

/// The epoch whose checkpoint a run keeps: the one with the lowest validation loss in its
/// history (the first of equals), and its loss.
fn lowest_val_loss(history: &[convlens::train::EpochMetrics]) -> (usize, f32) {
    history
        .iter()
        .enumerate()
        .map(|(i, e)| (i, e.val_loss))
        .fold(
            (0, f32::INFINITY),
            |best, (i, l)| {
                if l < best.1 { (i, l) } else { best }
            },
        )
}

/// Checks a saved manifest against its own history: the kept checkpoint is the epoch with the
/// lowest validation loss, and the last epoch marked `best` is that one.
fn assert_best_is_lowest_loss(m: &convlens::train::bundle::TrainedManifest) {
    let (i, loss) = lowest_val_loss(&m.history);
    assert_eq!(m.best_val_loss, loss, "{:#?}", m.history);
    assert_eq!(m.best_val_accuracy, m.history[i].val_accuracy);
    let last_best = m.history.iter().rposition(|e| e.best);
    assert_eq!(last_best, Some(i), "{:#?}", m.history);
}

/// Trained with a non-default seed and validation fraction on a folder without split folders,
/// `evaluate --split validation --json` draws the same validation split: it reproduces the
/// recorded `best_val_accuracy` exactly and `best_val_loss` (log-softmax in training, the log of
/// the softmax here: 1e-5 relative); its numbers agree with `predict` on the same files; a
/// changed folder, or a manifest without the record, is refused with a message naming it.
#[test]
fn cli_evaluate_reproduces_the_recorded_validation_split() {
    let work = tempfile::tempdir().unwrap();
    let data = work.path().join("unsplit");
    common::unsplit_dataset(&data, 12);
    let out = work.path().join("model");
    let os = |s: &str| std::ffi::OsString::from(s);
    let trained = convlens(&[
        "train".as_ref(),
        data.as_os_str(),
        "--epochs".as_ref(),
        "8".as_ref(),
        "--lr".as_ref(),
        "0.05".as_ref(),
        "--head".as_ref(),
        "linear".as_ref(),
        "--seed".as_ref(),
        "7".as_ref(),
        "--validation-split".as_ref(),
        "0.3".as_ref(),
        "--patience".as_ref(),
        "0".as_ref(),
        "--out".as_ref(),
        out.as_os_str(),
        "--cache".as_ref(),
        work.path().join("cache").as_os_str(),
    ]);
    let stderr = String::from_utf8_lossy(&trained.stderr);
    assert!(trained.status.success(), "{stderr}");
    // round(0.3 * 12) = 4 of each class's 12 images.
    assert!(
        stderr.contains("32 training, 16 validation images"),
        "{stderr}"
    );
    let m = convlens::train::bundle::TrainedManifest::read(&out).unwrap();
    let record = m.split.clone().expect("the manifest records the split");
    assert_eq!((record.seed, record.validation_fraction), (7, 0.3));
    assert!(record.validation_drawn && record.split_folders.is_empty());
    assert_eq!(record.pool.class_files, [12; 4]);
    assert_best_is_lowest_loss(&m);
    // A high learning rate makes the validation loss wander, so the kept epoch is usually not
    // the last: keeping the last instead of the best would then show below.
    let (kept, _) = lowest_val_loss(&m.history);
    println!("kept epoch {} of {}", kept + 1, m.history.len());

    let evaluate = |extra: &[&str]| {
        let mut args = vec![os("evaluate"), out.clone().into(), data.clone().into()];
        args.extend(["--split", "validation", "--json"].map(os));
        args.extend(extra.iter().map(|s| os(s)));
        let refs: Vec<&std::ffi::OsStr> = args.iter().map(|a| a.as_os_str()).collect();
        convlens(&refs)
    };
    let run = evaluate(&[]);
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&run.stdout).unwrap();
    let accuracy = v["accuracy"].as_f64().unwrap() as f32;
    let loss = v["loss"].as_f64().unwrap() as f32;
    println!(
        "evaluate: accuracy {accuracy} loss {loss}; recorded {} {}",
        m.best_val_accuracy, m.best_val_loss
    );
    assert_eq!(
        accuracy, m.best_val_accuracy,
        "the recorded split, evaluated again"
    );
    assert!(
        (loss - m.best_val_loss).abs() <= 1e-5 * m.best_val_loss.max(1.0),
        "loss {loss} vs recorded {}",
        m.best_val_loss
    );
    // The evaluation saved after training (the desktop app's too) used the same split.
    let saved = convlens::workspace::SavedEvaluation::read(&out)
        .unwrap()
        .unwrap();
    assert_eq!(saved.evaluation.accuracy, m.best_val_accuracy);
    assert_eq!(saved.evaluation.loss, Some(loss));

    // The same numbers from `predict` on the validation files, counted here.
    let split = ImageFolder::scan(&data, &record.folder_options()).unwrap();
    let files = split.split(Split::Validation);
    assert_eq!(files.len(), 16);
    let mut args = vec![os("predict"), os("--model"), out.clone().into()];
    args.extend(["--top", "4", "--json"].map(os));
    args.extend(files.iter().map(|s| s.path.clone().into()));
    let refs: Vec<&std::ffi::OsStr> = args.iter().map(|a| a.as_os_str()).collect();
    let predicted = convlens(&refs);
    assert!(predicted.status.success());
    let predictions: serde_json::Value = serde_json::from_slice(&predicted.stdout).unwrap();
    let mut confusion = vec![vec![0u64; 4]; 4];
    let mut nll = 0f64;
    for (sample, p) in files.iter().zip(predictions.as_array().unwrap()) {
        assert_eq!(p["image"], sample.path.to_str().unwrap());
        let top = p["top"].as_array().unwrap();
        let predicted = top[0]["index"].as_u64().unwrap() as usize;
        confusion[sample.label][predicted] += 1;
        let truth = top.iter().find(|c| c["index"] == sample.label).unwrap();
        nll -= truth["prob"].as_f64().unwrap().ln();
    }
    let correct: u64 = (0..4).map(|i| confusion[i][i]).sum();
    assert_eq!(accuracy, correct as f32 / 16.0);
    assert!(
        (f64::from(loss) - nll / 16.0).abs() <= 1e-5,
        "{loss} vs {}",
        nll / 16.0
    );
    let theirs: Vec<Vec<u64>> = serde_json::from_value(v["confusion"].clone()).unwrap();
    assert_eq!(theirs, confusion);
    for row in &theirs {
        assert_eq!(row.iter().sum::<u64>(), 4, "4 validation images per class");
    }
    assert_eq!(v["classes"], serde_json::json!(common::FASHION_CLASSES));
    let misclassified = v["misclassified"].as_array().unwrap();
    assert_eq!(misclassified.len() as u64, 16 - correct);

    // One image more: refused, naming the folder and what changed; evaluated on request.
    let extra = data.join("bag/extra.png");
    std::fs::copy(&files[0].path, &extra).unwrap();
    let run = evaluate(&[]);
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(!run.status.success(), "{stderr}");
    assert!(
        stderr.contains(data.to_str().unwrap())
            && stderr.contains("48 images then, 49 now (bag 12 -> 13)")
            && stderr.contains("cannot be reproduced")
            && stderr.contains("--different-split"),
        "{stderr}"
    );
    let run = evaluate(&["--different-split"]);
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(run.status.success(), "{stderr}");
    assert!(stderr.contains("a different split"), "{stderr}");
    // One image fewer.
    std::fs::remove_file(&extra).unwrap();
    std::fs::remove_file(&files[0].path).unwrap();
    let stderr = String::from_utf8_lossy(&evaluate(&[]).stderr).into_owned();
    assert!(stderr.contains("(ankle_boot 12 -> 11)"), "{stderr}");

    // A manifest written before the record: it loads, and the split cannot be reproduced.
    let mut old: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("model.json")).unwrap()).unwrap();
    old.as_object_mut().unwrap().remove("split");
    std::fs::write(out.join("model.json"), old.to_string()).unwrap();
    assert_eq!(
        convlens::train::bundle::TrainedManifest::read(&out)
            .unwrap()
            .split,
        None
    );
    let stderr = String::from_utf8_lossy(&evaluate(&[]).stderr).into_owned();
    assert!(
        stderr.contains("records no split") && stderr.contains("cannot be reproduced"),
        "{stderr}"
    );
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
    assert_best_is_lowest_loss(&m);
    // The kept epoch is the lowest validation loss; when it is a fine-tuned one (the usual
    // case), its stage's BatchNorm moved; when it is the head's, nothing of the base did.
    let fine_tuned = m.history[lowest_val_loss(&m.history).0].phase == "finetune";
    let expected: &[&str] = if fine_tuned { &["head"] } else { &[] };
    assert_eq!(m.finetuned_layers, expected);
    let mut tuned = load(&out);
    let before = tensors(&mut load_lite0());
    for (name, values) in tensors(&mut tuned) {
        if name.starts_with("logits.") {
            continue;
        }
        if fine_tuned && name.starts_with("head.") {
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
    let mut extracting = Vec::new();
    let mut note_extraction = |e: convlens::train::TrainEvent| {
        if let convlens::train::TrainEvent::Progress { what, total, .. } = e
            && what.ends_with(" images")
            && extracting.last() != Some(&(what.clone(), total))
        {
            extracting.push((what, total));
        }
    };
    train(
        &base,
        &data,
        &two,
        &complete_dir,
        &mut note_extraction,
        &CancelToken::new(),
    )
    .unwrap();
    // The extraction's progress says which split it is on (the bar starts again for each).
    let splits: Vec<&str> = extracting.iter().map(|(w, _)| w.as_str()).collect();
    assert_eq!(
        splits,
        ["validation images", "train images"],
        "{extracting:?}"
    );
    assert_eq!(extracting[0].1, data.split(Split::Validation).len());
    assert_eq!(extracting[1].1, data.split(Split::Train).len());
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
