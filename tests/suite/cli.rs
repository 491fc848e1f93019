//! End-to-end runs of the built `convlens` binary on the bundled images.
use crate::common;

use common::{convlens, manifest_for, repo, text};

#[test]
fn predict_names_the_classes() {
    let out = convlens(&[
        "predict",
        "assets/images/chelsea.png",
        "assets/images/coffee.png",
        "--top",
        "3",
    ]);
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(stdout.contains("assets/images/chelsea.png"), "{stdout}");
    assert!(stdout.contains("Egyptian cat"), "{stdout}");
    assert!(stdout.contains("espresso"), "{stdout}");
}

#[test]
fn predict_json_has_the_promised_shape() {
    let out = convlens(&[
        "predict",
        "assets/images/coffee.png",
        "--top",
        "2",
        "--json",
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("valid JSON");
    let first = &v.as_array().expect("an array")[0];
    assert_eq!(first["image"], "assets/images/coffee.png");
    let top = first["top"].as_array().unwrap();
    assert_eq!(top.len(), 2);
    assert_eq!(top[0]["index"], 967);
    assert_eq!(top[0]["class"], "espresso");
    // The reference probability (softmax of the fixture's logits), within the fixture
    // README's 1e-4: the image is preprocessed as PIL does, bit for bit.
    let reference = candle_nn::ops::softmax_last_dim(&common::fixture("lite0_coffee")["logits"])
        .unwrap()
        .squeeze(0)
        .unwrap()
        .to_vec1::<f32>()
        .unwrap();
    let prob = top[0]["prob"].as_f64().unwrap() as f32;
    assert!(
        (prob - reference[967]).abs() <= 1e-4,
        "{prob} vs {}",
        reference[967]
    );
    let second = top[1]["prob"].as_f64().unwrap() as f32;
    let index = top[1]["index"].as_u64().unwrap() as usize;
    assert_eq!(index, common::ranking(&reference)[1]);
    assert!((second - reference[index]).abs() <= 1e-4, "{second}");
}

#[test]
fn bad_files_are_reported_and_the_rest_still_predicted() {
    let dir = tempfile::tempdir().unwrap();
    let corrupt = dir.path().join("corrupt.jpg");
    std::fs::write(&corrupt, b"\xff\xd8\xff\xe0 not really a jpeg").unwrap();
    let missing = dir.path().join("missing.png");
    let out = convlens(&[
        "predict",
        corrupt.to_str().unwrap(),
        "assets/images/chelsea.png",
        missing.to_str().unwrap(),
        "assets/images/rocket.jpg",
    ]);
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stdout.contains("Egyptian cat"), "{stdout}");
    assert!(stdout.contains("assets/images/rocket.jpg"), "{stdout}");
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 2, "one line per bad file: {stderr}");
    assert!(lines.iter().any(|l| l.contains("corrupt.jpg")), "{stderr}");
    assert!(lines.iter().any(|l| l.contains("missing.png")), "{stderr}");
}

#[test]
fn info_prints_the_layer_table() {
    let out = convlens(&["info"]);
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{}", text(&out.stderr));
    for needle in [
        "stem",
        "blocks.15",
        "head",
        "pooled",
        "logits",
        "1280x7x7",
        "4,652,008",
    ] {
        assert!(stdout.contains(needle), "missing {needle}: {stdout}");
    }
}

#[test]
fn an_unknown_model_is_a_clear_error() {
    let out = convlens(&["info", "--model", "no_such_model"]);
    let stderr = text(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("no_such_model") && stderr.contains("efficientnet_lite0"),
        "{stderr}"
    );
}

#[test]
fn a_device_not_compiled_in_says_so() {
    if cfg!(feature = "cuda") {
        return;
    }
    let out = convlens(&["predict", "assets/images/chelsea.png", "--device", "cuda"]);
    let stderr = text(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("without CUDA"), "{stderr}");
}

#[test]
fn info_says_what_the_weights_are_and_why() {
    // The bundled manifest names Lite0; the tensors are checked against it.
    let out = convlens(&["info"]);
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        stdout.contains("detected: the tensors agree with the manifest")
            && stdout.contains("efficientnet_lite0"),
        "{stdout}"
    );
    // A bare PyTorch checkpoint: format, where the state dict was, architecture and evidence.
    let out = convlens(&[
        "info",
        "--model",
        "tests/fixtures/mobilenet_v2_random_fp16.pth",
    ]);
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{}", text(&out.stderr));
    for needle in [
        "(mobilenet_v2)",
        "PyTorch checkpoint",
        "under `state_dict`",
        "17 inverted residual blocks",
        "1000 classes",
        "features.18",
    ] {
        assert!(stdout.contains(needle), "missing {needle}: {stdout}");
    }
}

#[test]
fn info_refuses_a_manifest_that_names_the_wrong_architecture() {
    let dir = tempfile::tempdir().unwrap();
    let weights = repo("tests/fixtures/resnet18_random_fp16.safetensors");
    let path = manifest_for(dir.path(), &weights, "resnet50");
    let out = convlens(&["info", "--model", path.to_str().unwrap()]);
    let stderr = text(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("do not fit resnet50")
            && stderr.contains("looks like resnet18")
            && stderr.contains("2-2-2-2 BasicBlock"),
        "{stderr}"
    );
}
