//! End-to-end runs of `convlens activations | filters | cam | reproduce`.
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
use std::process::{Command, Output};

use common::repo;

fn convlens(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_convlens"))
        .args(args)
        .current_dir(repo(""))
        .output()
        .expect("the binary runs")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

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
    let lowres = v["lowres"].as_array().unwrap();
    assert_eq!(lowres.len(), 7);
    assert_eq!(lowres[0].as_array().unwrap().len(), 7);
    let prob = v["prob"].as_f64().unwrap();
    assert!(prob > 0.0 && prob < 1.0);
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
    let run = convlens(&["cam", "assets/images/chelsea.png", "--class", "cat"]);
    assert!(
        text(&run.stderr).contains("Egyptian cat"),
        "{}",
        text(&run.stderr)
    );
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
