//! `convlens export` against hostile outputs: an existing file, a file where a folder must be,
//! the model's own weights as the output, bad options, Ctrl-C mid-export. Nothing is left half
//! written and nothing of the user's is replaced.

use std::io::BufRead;
use std::process::{Command, Stdio};

use crate::common::{convlens, repo, text};

const WEIGHTS: &str = "tests/fixtures/resnet18_random_fp16.safetensors";

/// The names in a folder, sorted.
fn names(dir: &std::path::Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

#[test]
fn cli_export_refuses_an_existing_file_and_keeps_it() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("taken.onnx");
    std::fs::write(&out, b"mine").unwrap();
    let weights = WEIGHTS;
    let o = convlens(&["export", weights, "--out", out.to_str().unwrap()]);
    assert!(!o.status.success());
    let err = text(&o.stderr);
    assert!(
        err.contains("already exists") && err.contains("--overwrite"),
        "{err}"
    );
    assert_eq!(std::fs::read(&out).unwrap(), b"mine");
    // With --overwrite it is replaced by a verified export, and nothing else is left.
    let o = convlens(&[
        "export",
        weights,
        "--out",
        out.to_str().unwrap(),
        "--overwrite",
    ]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    let stdout = text(&o.stdout);
    assert!(
        stdout.contains("verified: logits") && stdout.contains("agree"),
        "{stdout}"
    );
    assert!(candle_onnx::read_file(&out).is_ok());
    assert_eq!(names(dir.path()), ["taken.onnx"]);
}

#[test]
fn cli_export_refuses_an_unwritable_folder_and_bad_options() {
    let dir = tempfile::tempdir().unwrap();
    let blocker = dir.path().join("file");
    std::fs::write(&blocker, b"x").unwrap();
    let out = blocker.join("model.onnx");
    let weights = WEIGHTS;
    let o = convlens(&["export", weights, "--out", out.to_str().unwrap()]);
    assert!(!o.status.success());
    assert!(
        text(&o.stderr).contains("is a file, but a folder is needed"),
        "{}",
        text(&o.stderr)
    );
    let o = convlens(&["export", weights, "--out", "x.onnx", "--opset", "9"]);
    assert!(text(&o.stderr).contains("--opset 9"), "{}", text(&o.stderr));
    let o = convlens(&["export", weights, "--out", "x.onnx", "--batch", "0"]);
    assert!(
        text(&o.stderr).contains("not a batch size"),
        "{}",
        text(&o.stderr)
    );
    assert!(!repo("x.onnx").exists());
}

#[test]
fn cli_export_never_writes_onto_the_models_own_weights() {
    let dir = tempfile::tempdir().unwrap();
    let weights = dir.path().join("r18.safetensors");
    std::fs::copy(repo(WEIGHTS), &weights).unwrap();
    let before = std::fs::read(&weights).unwrap();
    let w = weights.to_str().unwrap();
    let o = convlens(&[
        "export",
        w,
        "--format",
        "pytorch",
        "--out",
        w,
        "--overwrite",
    ]);
    assert!(!o.status.success());
    assert!(
        text(&o.stderr).contains("it is the input"),
        "{}",
        text(&o.stderr)
    );
    assert_eq!(std::fs::read(&weights).unwrap(), before);
    assert_eq!(names(dir.path()), ["r18.safetensors"]);
}

#[test]
fn ctrl_c_mid_export_leaves_no_file() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("lite0.onnx");
    let mut child = Command::new(env!("CARGO_BIN_EXE_convlens"))
        .args([
            "export",
            "efficientnet_lite0",
            "--out",
            out.to_str().unwrap(),
        ])
        .current_dir(repo(""))
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let mut reader = std::io::BufReader::new(child.stderr.take().unwrap());
    let mut log = String::new();
    let mut line = String::new();
    while reader.read_line(&mut line).unwrap() > 0 {
        log.push_str(&line);
        // The file is written beside the destination and being checked: interrupt now.
        if line.contains("running it with candle-onnx") {
            assert_eq!(names(dir.path()).len(), 1, "the file beside: {log}");
            unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
        }
        line.clear();
    }
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(130), "{log}");
    assert!(log.contains("interrupted: nothing was written"), "{log}");
    assert!(names(dir.path()).is_empty(), "{:?}", names(dir.path()));
}
