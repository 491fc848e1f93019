//! End-to-end runs of `convlens activations | filters | cam | reproduce`.
use crate::common;

use std::path::Path;

use candle_core::{Device, Tensor};
use common::{convlens, fixture, lite0, rel_to_max, repo, text};
use convlens::viz::cam::{self, CamMethod, CamOptions};

fn path(p: &Path) -> &str {
    p.to_str().unwrap()
}

#[test]
fn cam_json_names_the_class_and_the_figure_and_reproduces() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("cat.png");
    let run = convlens(&[
        "cam",
        "assets/images/chelsea.png",
        "--class",
        "TABBY",
        "--method",
        "gradcam++",
        "--json",
        "--out",
        path(&out),
    ]);
    assert!(run.status.success(), "{}", text(&run.stderr));
    let v: serde_json::Value = serde_json::from_slice(&run.stdout).expect("JSON on stdout");
    assert_eq!(v["class"], 281);
    assert_eq!(v["class_name"], "tabby");
    assert_eq!(v["method"], "gradcam++");
    assert_eq!(v["layer"], "head");
    // The map printed is the library's for the same image, class and method.
    let model = lite0();
    let input = model
        .spec
        .preprocess
        .load(&repo("assets/images/chelsea.png"), &model.device)
        .unwrap();
    let mut opts = CamOptions::new(CamMethod::GradCamPlusPlus, "head");
    opts.class = Some(281);
    let library = cam::compute(&model.network, &input, &opts).unwrap();
    let printed = lowres_of(&v);
    assert_eq!(printed.len(), 49);
    let diff = printed
        .iter()
        .zip(&library.lowres)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0, f32::max);
    assert!(
        diff <= 1e-6,
        "the printed map is off the library's by {diff}"
    );
    assert!((v["prob"].as_f64().unwrap() as f32 - library.prob).abs() <= 1e-6);
    assert_eq!(v["figure"], path(&out));
    assert!(out.is_file() && dir.path().join("cat.json").is_file());

    let again = dir.path().join("again.png");
    let run = convlens(&[
        "reproduce",
        path(&dir.path().join("cat.json")),
        "--out",
        path(&again),
    ]);
    assert!(run.status.success(), "{}", text(&run.stderr));
    assert!(text(&run.stdout).contains("identical"));
    assert_eq!(std::fs::read(&again).unwrap(), std::fs::read(&out).unwrap());
}

/// The `lowres` rows of `cam --json`, flattened.
pub(crate) fn lowres_of(v: &serde_json::Value) -> Vec<f32> {
    v["lowres"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|row| row.as_array().unwrap().iter())
        .map(|x| x.as_f64().unwrap() as f32)
        .collect()
}

/// `cam` from the image file with the defaults (Grad-CAM of the top-1 class at `head`) gives
/// pytorch-grad-cam's low-resolution map of the fixture (1e-4 relative to max, the fixture
/// README's tolerance) and the reference probability (1e-4: the preprocessing is PIL's, bit
/// for bit).
#[test]
fn cam_from_the_file_matches_the_reference() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("cat.png");
    let run = convlens(&[
        "cam",
        "assets/images/chelsea.png",
        "--json",
        "--out",
        path(&out),
    ]);
    assert!(run.status.success(), "{}", text(&run.stderr));
    let v: serde_json::Value = serde_json::from_slice(&run.stdout).unwrap();
    let fx = fixture("lite0_chelsea");
    assert_eq!(v["class"], 285);
    let lowres = Tensor::from_vec(lowres_of(&v), (7, 7), &Device::Cpu).unwrap();
    let err = rel_to_max(&lowres, &fx["lib.gradcam.lowres"]);
    assert!(
        err <= 1e-4,
        "lowres off the reference by {err:e} relative to max"
    );
    let reference = candle_nn::ops::softmax_last_dim(&fx["logits"])
        .unwrap()
        .squeeze(0)
        .unwrap()
        .to_vec1::<f32>()
        .unwrap()[285];
    let prob = v["prob"].as_f64().unwrap() as f32;
    assert!((prob - reference).abs() <= 1e-4, "{prob} vs {reference}");
}

#[test]
fn bad_layers_and_classes_list_the_valid_ones() {
    let run = convlens(&["cam", "assets/images/chelsea.png", "--layer", "blocks.99"]);
    let stderr = text(&run.stderr);
    assert!(!run.status.success());
    assert!(
        stderr.contains("blocks.99") && stderr.contains("blocks.15, head"),
        "{stderr}"
    );
    let run = convlens(&["cam", "assets/images/chelsea.png", "--class", "sphinx cat"]);
    let stderr = text(&run.stderr);
    assert!(!run.status.success());
    assert!(stderr.contains("unknown class `sphinx cat`"), "{stderr}");
    // Not a class name: refused (exit code 1), listing the labels that contain it, in the
    // labels file's order.
    let run = convlens(&["cam", "assets/images/chelsea.png", "--class", "cat"]);
    assert_eq!(run.status.code(), Some(1), "{}", text(&run.stderr));
    let labels = std::fs::read_to_string(repo("models/imagenet_classes.txt")).unwrap();
    let close: Vec<&str> = labels
        .lines()
        .filter(|l| l.to_lowercase().contains("cat"))
        .take(10)
        .collect();
    assert!(close.contains(&"Egyptian cat"));
    let expected = format!(
        "error: unknown class `cat`; did you mean: {}?",
        close.join(", ")
    );
    let stderr = text(&run.stderr);
    assert!(stderr.lines().any(|l| l == expected), "{stderr}");
    let run = convlens(&[
        "activations",
        "assets/images/chelsea.png",
        "--layer",
        "conv9",
    ]);
    let stderr = text(&run.stderr);
    assert!(
        !run.status.success() && stderr.contains("stem, blocks.0"),
        "{stderr}"
    );
    let run = convlens(&["filters", "--layer", "blocks.2", "--filters", "20..30"]);
    let stderr = text(&run.stderr);
    assert!(
        !run.status.success() && stderr.contains("24 filters"),
        "{stderr}"
    );
    let run = convlens(&["filters", "--layer", "blocks.2", "--method", "deepdream"]);
    assert!(!run.status.success() && text(&run.stderr).contains("chollet or lucid"));
}

#[test]
fn activations_and_filters_write_figures_at_scale() {
    let dir = tempfile::tempdir().unwrap();
    let act = dir.path().join("act.png");
    let run = convlens(&[
        "activations",
        "assets/images/coffee.png",
        "--layer",
        "blocks.1",
        "--colormap",
        "magma",
        "--shared-scale",
        "--scale",
        "2",
        "--out",
        path(&act),
    ]);
    assert!(run.status.success(), "{}", text(&run.stderr));
    assert!(
        text(&run.stdout).contains("24 channels of 56x56"),
        "{}",
        text(&run.stdout)
    );
    let img = image::open(&act).unwrap();
    assert_eq!(img.width() % 2, 0);
    let sidecar: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.path().join("act.json")).unwrap()).unwrap();
    assert_eq!(sidecar["colormap"], "magma");
    assert_eq!(sidecar["shared_scale"], true);
    assert_eq!(sidecar["scale"], 2);

    let filt = dir.path().join("filt.png");
    let run = convlens(&[
        "filters",
        "--layer",
        "blocks.2",
        "--filters",
        "0..3",
        "--steps",
        "3",
        "--size",
        "64",
        "--seed",
        "5",
        "--out",
        path(&filt),
    ]);
    assert!(run.status.success(), "{}", text(&run.stderr));
    assert!(filt.is_file());
    let sidecar: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.path().join("filt.json")).unwrap()).unwrap();
    assert_eq!(sidecar["filters"], serde_json::json!([0, 1, 2]));
    assert_eq!(sidecar["steps"], 3);
    assert_eq!(sidecar["seed"], 5);
}

#[test]
fn lucid_filters_reproduce_byte_for_byte() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("lucid.png");
    let run = convlens(&[
        "filters",
        "--layer",
        "blocks.4",
        "--method",
        "lucid",
        "--filters",
        "0..4",
        "--steps",
        "8",
        "--size",
        "64",
        "--seed",
        "3",
        "--batch",
        "3",
        "--out",
        path(&out),
    ]);
    assert!(run.status.success(), "{}", text(&run.stderr));
    let sidecar: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.path().join("lucid.json")).unwrap()).unwrap();
    assert_eq!(sidecar["method"], "lucid");
    assert_eq!(sidecar["steps"], 8);
    assert_eq!(sidecar["size"], 64);
    assert_eq!(sidecar["seed"], 3);
    assert_eq!(sidecar["batch"], 3);
    assert_eq!(sidecar["crop"], 0);
    assert_eq!(sidecar["lucid"]["pad"], 12);
    let again = dir.path().join("again.png");
    let run = convlens(&[
        "reproduce",
        path(&dir.path().join("lucid.json")),
        "--out",
        path(&again),
    ]);
    assert!(run.status.success(), "{}", text(&run.stderr));
    assert!(text(&run.stdout).contains("identical"));
    assert_eq!(std::fs::read(&again).unwrap(), std::fs::read(&out).unwrap());
}

#[test]
fn a_folder_of_images_gets_an_index() {
    let dir = tempfile::tempdir().unwrap();
    let images = dir.path().join("images");
    std::fs::create_dir(&images).unwrap();
    for name in ["chelsea.png", "coffee.png"] {
        std::fs::copy(repo(&format!("assets/images/{name}")), images.join(name)).unwrap();
    }
    std::fs::write(images.join("notes.txt"), "not an image").unwrap();
    let out = dir.path().join("figs");
    let run = convlens(&["cam", path(&images), "--out", path(&out)]);
    assert!(run.status.success(), "{}", text(&run.stderr));
    let csv = std::fs::read_to_string(out.join("index.csv")).unwrap();
    let lines: Vec<&str> = csv.lines().collect();
    assert_eq!(lines.len(), 3, "{csv}");
    assert!(lines[0].starts_with("image,figure,class,class_name,prob"));
    assert!(csv.contains("espresso"), "{csv}");
    let index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("index.json")).unwrap()).unwrap();
    assert_eq!(index.as_array().unwrap().len(), 2);
    assert!(out.join("chelsea.png").is_file() && out.join("coffee.json").is_file());
}
