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

/// A folder without a model (a run that saved none, any other folder) is named, with what to
/// pass instead; nothing is written.
#[test]
fn cli_export_of_a_folder_without_a_model_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("run");
    std::fs::create_dir(&run).unwrap();
    std::fs::write(run.join("run.json"), b"{}").unwrap();
    let empty = dir.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    let out = dir.path().join("m.onnx");
    for (folder, what) in [
        (&run, "is a training run that holds no trained model"),
        (&empty, "holds no model"),
    ] {
        let o = convlens(&[
            "export",
            folder.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
        ]);
        assert!(!o.status.success());
        let err = text(&o.stderr);
        let named = format!("{}: {what}", folder.display());
        assert!(
            err.contains(&named) && err.contains("pass a trained model's folder"),
            "{err}"
        );
        assert!(!err.contains("No such file"), "{err}");
    }
    assert_eq!(names(dir.path()), ["empty", "run"]);
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

/// Runs `convlens export WEIGHTS --out OUT` with stderr (the progress lines) a pipe nobody
/// reads and stdout piped, or a dead pipe too (`convlens export ... 2>&1 | true`).
fn export_into_dead_pipes(out: &std::path::Path, stdout_too: bool) -> std::process::Output {
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_convlens"));
    cmd.args(["export", WEIGHTS, "--out", out.to_str().unwrap()])
        .current_dir(repo(""))
        .stdin(Stdio::null())
        .stderr(writer.try_clone().unwrap());
    if stdout_too {
        cmd.stdout(writer);
    } else {
        cmd.stdout(Stdio::piped());
    }
    cmd.output().unwrap()
}

/// Nobody reading stderr, or stdout either, does not stop the export: it is verified and put
/// in place, and the exit code is 0 (it panicked with 101 on the first progress line).
#[test]
fn a_closed_stderr_or_stdout_still_exports() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("m.onnx");
    let o = export_into_dead_pipes(&out, false);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stdout));
    assert!(text(&o.stdout).contains("verified: logits"));
    assert!(candle_onnx::read_file(&out).is_ok());
    let out = dir.path().join("m2.onnx");
    let o = export_into_dead_pipes(&out, true);
    assert_eq!(o.status.code(), Some(0));
    assert!(candle_onnx::read_file(&out).is_ok());
    assert_eq!(names(dir.path()), ["m.onnx", "m2.onnx"]);
}

/// A pipe (or a device: `--out /dev/null --overwrite` would have renamed a file over it) is
/// never replaced, even with `--overwrite`; a folder as the ONNX file is refused naming it.
#[test]
fn cli_export_never_replaces_a_pipe_or_writes_into_a_folder_as_a_file() {
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("pipe.onnx");
    let made = Command::new("mkfifo").arg(&fifo).status();
    if !made.is_ok_and(|s| s.success()) {
        println!("skipped the pipe: no mkfifo");
    } else {
        for overwrite in [false, true] {
            let mut args = vec!["export", WEIGHTS, "--out", fifo.to_str().unwrap()];
            if overwrite {
                args.push("--overwrite");
            }
            let o = convlens(&args);
            assert_eq!(o.status.code(), Some(1), "{}", text(&o.stdout));
            let err = text(&o.stderr);
            assert!(err.contains("pipe.onnx: is not a regular file"), "{err}");
            use std::os::unix::fs::FileTypeExt;
            assert!(std::fs::metadata(&fifo).unwrap().file_type().is_fifo());
        }
    }
    let folder = dir.path().join("models");
    std::fs::create_dir(&folder).unwrap();
    let o = convlens(&["export", WEIGHTS, "--out", folder.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        text(&o.stderr).contains("models: is a folder, but a file is needed here"),
        "{}",
        text(&o.stderr)
    );
    assert!(names(&folder).is_empty());
}
