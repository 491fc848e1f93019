//! Crafted models, manifests, caches and options: class-count mismatches, implausible or
//! non-finite weights, out-of-range manifests, a changed feature cache, training options that
//! cannot work, and a diverging run.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use candle_core::{DType, Device, Tensor};
use convlens::zoo::file_sha256;

use crate::common::{manifest_for, repo, small_dataset};

/// Runs the binary with a private feature cache.
fn convlens(args: &[&str], cache: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_convlens"))
        .args(args)
        .env("CONVLENS_CACHE", cache)
        .output()
        .expect("the binary runs")
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Asserts exit code 1 and an error holding every one of `words`.
fn refused(out: &Output, words: &[&str]) -> String {
    let err = stderr(out);
    assert_eq!(out.status.code(), Some(1), "exit code; stderr: {err}");
    for w in words {
        assert!(err.contains(w), "stderr lacks `{w}`: {err}");
    }
    err
}

fn path(p: &Path) -> &str {
    p.to_str().expect("a UTF-8 temp path")
}

const IMAGE: &str = "assets/images/chelsea.png";

/// Trains a 4-class Lite0 head (feature extraction, 2 epochs) on a copy of 3 + 2 images per
/// class into `dir/model`, caching features in `dir/cache`; returns the model folder and the
/// run's output.
fn train_small(dir: &Path, extra: &[&str]) -> (PathBuf, Output) {
    let data = dir.join("data");
    if !data.exists() {
        small_dataset(&data, 3, 2);
    }
    let out_dir = dir.join("model");
    let _ = std::fs::remove_dir_all(&out_dir);
    let mut args = vec![
        "train",
        path(&data),
        "--out",
        path(&out_dir),
        "--epochs",
        "3",
        "--seed",
        "7",
    ];
    args.extend_from_slice(extra);
    let out = convlens(&args, &dir.join("cache"));
    (out_dir, out)
}

/// Rewrites a safetensors file with `change` applied to its tensors.
fn rewrite(file: &Path, to: &Path, change: impl FnOnce(&mut HashMap<String, Tensor>)) {
    let mut tensors = candle_core::safetensors::load(file, &Device::Cpu).unwrap();
    change(&mut tensors);
    candle_core::safetensors::save(&tensors, to).unwrap();
}

#[test]
fn a_head_with_another_class_count_is_refused_by_predict_and_evaluate() {
    let dir = tempfile::tempdir().unwrap();
    let (model, out) = train_small(dir.path(), &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    let weights = model.join("weights.safetensors");
    rewrite(&weights.clone(), &weights, |t| {
        for name in ["head.out.weight", "head.out.bias"] {
            let two = t[name].narrow(0, 0, 2).unwrap();
            t.insert(name.into(), two);
        }
    });
    let before = file_sha256(&weights).unwrap();
    let cache = dir.path().join("cache");
    let out = convlens(
        &[
            "predict",
            "--model",
            path(&model),
            &repo(IMAGE).display().to_string(),
        ],
        &cache,
    );
    refused(&out, &["weights.safetensors", "2 outputs", "4", "classes"]);
    let data = dir.path().join("data");
    let out = convlens(
        &[
            "evaluate",
            path(&model),
            path(&data),
            "--split",
            "validation",
        ],
        &cache,
    );
    let err = refused(&out, &["weights.safetensors", "2 outputs", "4"]);
    assert!(!err.contains("panicked"), "{err}");
    assert_eq!(
        file_sha256(&weights).unwrap(),
        before,
        "the weights were not touched"
    );
}

#[test]
fn nan_weights_are_named_at_load() {
    let dir = tempfile::tempdir().unwrap();
    let weights = dir.path().join("nan.safetensors");
    rewrite(
        &repo("tests/fixtures/mobilenet_v2_random_fp16.safetensors"),
        &weights,
        |t| {
            let w = &t["features.0.0.weight"];
            let mut v = w
                .to_dtype(DType::F32)
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_vec1::<f32>()
                .unwrap();
            v[5] = f32::NAN;
            let nan = Tensor::from_vec(v, w.dims(), &Device::Cpu)
                .unwrap()
                .to_dtype(DType::F16)
                .unwrap();
            t.insert("features.0.0.weight".into(), nan);
        },
    );
    let out = convlens(
        &[
            "predict",
            "--model",
            path(&weights),
            &repo(IMAGE).display().to_string(),
        ],
        &dir.path().join("cache"),
    );
    refused(
        &out,
        &["nan.safetensors", "features.0.0.weight", "NaN", "finite"],
    );
}

/// A manifest for the bundled Lite0 with one field changed (absolute weights and labels).
fn lite0_manifest(dir: &Path, field: &str, value: serde_json::Value) -> PathBuf {
    let text = std::fs::read_to_string(repo("models/efficientnet_lite0.json")).unwrap();
    let mut m: serde_json::Value = serde_json::from_str(&text).unwrap();
    for key in ["weights", "labels"] {
        let name = m[key].as_str().unwrap().to_string();
        m[key] = repo(&format!("models/{name}")).display().to_string().into();
    }
    m[field] = value;
    let path = dir.join(format!("lite0_{field}.json"));
    std::fs::write(&path, m.to_string()).unwrap();
    path
}

#[test]
fn manifests_with_impossible_normalisation_or_sizes_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache");
    let image = repo(IMAGE).display().to_string();
    for (field, value, words) in [
        (
            "std",
            serde_json::json!([0.0, 0.0, 0.0]),
            vec!["`std`", "0.001..=10"],
        ),
        (
            "mean",
            serde_json::json!([-1.0, 0.5, 0.5]),
            vec!["`mean`", "-1"],
        ),
        (
            "input_size",
            serde_json::json!(0),
            vec!["`input_size` is 0", "32..=1024"],
        ),
        (
            "input_size",
            serde_json::json!(100_000),
            vec!["`input_size` is 100000", "32..=1024"],
        ),
    ] {
        let manifest = lite0_manifest(dir.path(), field, value);
        let out = convlens(&["predict", "--model", path(&manifest), &image], &cache);
        let mut words = words;
        words.push(manifest.file_name().unwrap().to_str().unwrap());
        refused(&out, &words);
    }
}

/// Writes a safetensors file whose header claims `shapes` (f16), sized as the header says
/// but sparse (no data written), so crafting a multi-gigabyte file costs nothing.
fn sparse_safetensors(to: &Path, shapes: &[(String, Vec<usize>)], pad_to: Option<u64>) {
    let mut header = serde_json::Map::new();
    let mut offset = 0u64;
    for (name, shape) in shapes {
        let bytes = shape.iter().product::<usize>() as u64 * 2;
        header.insert(
            name.clone(),
            serde_json::json!({"dtype": "F16", "shape": shape, "data_offsets": [offset, offset + bytes]}),
        );
        offset += bytes;
    }
    let header = serde_json::Value::Object(header).to_string();
    let mut bytes = (header.len() as u64).to_le_bytes().to_vec();
    bytes.extend_from_slice(header.as_bytes());
    std::fs::write(to, &bytes).unwrap();
    let file = std::fs::OpenOptions::new().write(true).open(to).unwrap();
    file.set_len(pad_to.unwrap_or(bytes.len() as u64 + offset))
        .unwrap();
}

#[test]
fn implausible_weights_are_refused_before_loading() {
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache");
    let resnet = repo("tests/fixtures/resnet18_random_fp16.safetensors");
    let shapes: Vec<(String, Vec<usize>)> = convlens::zoo::detect::read_shapes(&resnet)
        .unwrap()
        .into_iter()
        .collect();
    // A classifier for 1.2 million classes: 1.2 GB of f16 in the header's eyes.
    let wide: Vec<(String, Vec<usize>)> = shapes
        .iter()
        .map(|(n, s)| match n.as_str() {
            "fc.weight" => (n.clone(), vec![1_200_000, 512]),
            "fc.bias" => (n.clone(), vec![1_200_000]),
            _ => (n.clone(), s.clone()),
        })
        .collect();
    let crafted = dir.path().join("wide.safetensors");
    sparse_safetensors(&crafted, &wide, None);
    let out = convlens(&["info", "--model", path(&crafted)], &cache);
    refused(&out, &["wide.safetensors", "1200000 classes", "50000"]);
    // The right tensors, but a 3 GB file: refused from its size, not read.
    let padded = dir.path().join("padded.safetensors");
    sparse_safetensors(&padded, &shapes, Some(3 << 30));
    let manifest = manifest_for(dir.path(), &padded, "resnet18");
    let out = convlens(&["info", "--model", path(&manifest)], &cache);
    refused(&out, &["padded.safetensors", "implausible", "resnet18"]);
}

/// Every `.f32` entry of a feature cache.
fn cache_entries(cache: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut dirs = vec![cache.to_path_buf()];
    while let Some(d) = dirs.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() {
                dirs.push(p);
            } else if p.extension().is_some_and(|x| x == "f32") {
                found.push(p);
            }
        }
    }
    found
}

/// The per-epoch losses and accuracies of a trained model (not the timings) and its best
/// validation accuracy.
fn history(model: &Path) -> serde_json::Value {
    let text = std::fs::read_to_string(model.join("model.json")).unwrap();
    let mut m: serde_json::Value = serde_json::from_str(&text).unwrap();
    for epoch in m["history"].as_array_mut().unwrap() {
        epoch.as_object_mut().unwrap().remove("secs");
    }
    serde_json::json!([m["history"], m["best_val_accuracy"]])
}

#[test]
fn a_changed_cache_entry_of_the_same_length_is_computed_anew() {
    let dir = tempfile::tempdir().unwrap();
    let (model, first) = train_small(dir.path(), &[]);
    assert!(first.status.success(), "{}", stderr(&first));
    let reference = history(&model);
    let entries = cache_entries(&dir.path().join("cache"));
    assert_eq!(entries.len(), 20, "one entry per image");
    for entry in &entries {
        let mut bytes = std::fs::read(entry).unwrap();
        let len = bytes.len();
        for b in &mut bytes[len - 400..] {
            *b ^= 0x5a;
        }
        std::fs::write(entry, &bytes).unwrap();
    }
    let (model, second) = train_small(dir.path(), &[]);
    assert!(second.status.success(), "{}", stderr(&second));
    let err = stderr(&second);
    let noticed: usize = err
        .lines()
        .filter(|l| l.contains("did not match their checksum") && l.contains("computed anew"))
        .filter_map(|l| {
            l.strip_prefix("warning: ")?
                .split(' ')
                .next()?
                .parse::<usize>()
                .ok()
        })
        .sum();
    assert_eq!(noticed, 20, "every changed entry is noticed: {err}");
    assert_eq!(
        history(&model),
        reference,
        "the same features, the same run"
    );
    // The entries were rewritten: a third run finds nothing to complain about.
    let (_, third) = train_small(dir.path(), &[]);
    assert!(third.status.success(), "{}", stderr(&third));
    assert!(
        !stderr(&third).contains("computed anew"),
        "{}",
        stderr(&third)
    );
}

#[test]
fn training_options_that_cannot_work_are_refused_before_extraction() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    small_dataset(&data, 3, 2);
    let cache = dir.path().join("cache");
    let out_dir = dir.path().join("model");
    let base = ["train", path(&data), "--out", path(&out_dir)];
    for (extra, words) in [
        (vec!["--lr", "nan"], vec!["--lr NaN", "finite"]),
        (vec!["--lr", "inf"], vec!["--lr inf"]),
        (vec!["--lr=-1"], vec!["--lr -1"]),
        (vec!["--epochs", "0"], vec!["--epochs 0"]),
        (vec!["--batch-size", "0"], vec!["--batch-size 0"]),
        (
            vec!["--batch-size", "100000"],
            vec!["--batch-size 100000", "1024"],
        ),
        (
            vec!["--mode", "scratch", "--size", "100000"],
            vec!["--size 100000", "1024"],
        ),
        (
            vec!["--mode", "finetune", "--unfreeze", "99"],
            vec!["--unfreeze 99", "stages"],
        ),
    ] {
        let mut args = base.to_vec();
        args.extend_from_slice(&extra);
        let out = convlens(&args, &cache);
        refused(&out, &words);
        assert!(
            !cache.join("features").exists(),
            "{extra:?}: no feature was extracted"
        );
        assert!(
            !out_dir.join("model.json").exists(),
            "{extra:?}: nothing was saved"
        );
    }
    let image = repo(IMAGE).display().to_string();
    refused(
        &convlens(&["predict", "--top", "0", &image], &cache),
        &["--top 0"],
    );
    let out = convlens(
        &[
            "evaluate",
            "efficientnet_lite0",
            path(&data),
            "--split",
            "validation",
            "--batch-size",
            "10000",
        ],
        &cache,
    );
    refused(&out, &["--batch-size 10000"]);
}

#[test]
fn a_diverging_run_leaves_a_model_that_loads_or_says_nothing_was_saved() {
    let dir = tempfile::tempdir().unwrap();
    let (model, out) = train_small(dir.path(), &["--lr", "1e9"]);
    let err = stderr(&out);
    if !out.status.success() {
        assert!(err.contains("training stopped"), "{err}");
        if err.contains("Nothing was saved") {
            assert!(!model.join("model.json").exists(), "{err}");
            return;
        }
        assert!(
            err.contains("is kept in") || err.contains("untrained"),
            "{err}"
        );
    }
    let image = repo(IMAGE).display().to_string();
    let predicted = convlens(
        &["predict", "--model", path(&model), &image],
        &dir.path().join("cache"),
    );
    assert!(predicted.status.success(), "{err}\n{}", stderr(&predicted));
}
