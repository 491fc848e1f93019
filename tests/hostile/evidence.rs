//! `convlens faithfulness` and `convlens sanity` under hostile input: missing and unreadable
//! paths, a crafted non-image in the folder, an `--out` that is a file or one of the inputs
//! (never written), a reader that goes away, unknown method names. Each gets a clear error
//! naming the value (or, for a bad image among good ones, an error row naming it), never a
//! panic, and no input changes.

use std::io::BufRead;
use std::path::Path;
use std::process::{Output, Stdio};

use crate::outputs::{assert_refused, convlens, path, photo, run, text};

/// The cheapest faithfulness options: one percentile, 4 curve steps, one method.
const QUICK: [&str; 6] = [
    "--percentiles",
    "50",
    "--steps",
    "4",
    "--methods",
    "gradcam",
];

fn faithfulness(input: &Path, extra: &[&str]) -> Output {
    let mut args = vec!["faithfulness", path(input)];
    args.extend_from_slice(&QUICK);
    args.extend_from_slice(extra);
    run(&args)
}

/// A file that claims to be a PNG and is not one.
fn crafted(dir: &Path) -> std::path::PathBuf {
    let p = dir.join("fake.png");
    std::fs::write(&p, b"\x89PNG\r\n\x1a\n this is not an image").unwrap();
    p
}

/// A usage error (clap's exit 2) or a refusal (exit 1) naming every one of `needles`.
fn assert_named(out: &Output, needles: &[&str]) {
    let stderr = text(&out.stderr);
    assert!(
        matches!(out.status.code(), Some(1 | 2)),
        "exit {:?}: {stderr}",
        out.status.code()
    );
    assert!(!stderr.contains("panicked"), "{stderr}");
    for n in needles {
        assert!(stderr.contains(n), "`{n}` not in: {stderr}");
    }
}

#[test]
fn missing_and_unreadable_inputs_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("no-such.png");
    let fake = crafted(dir.path());
    let mut inputs = vec![missing, fake];
    #[cfg(unix)]
    {
        let dangling = dir.path().join("dangling.png");
        std::os::unix::fs::symlink(dir.path().join("gone.png"), &dangling).unwrap();
        inputs.push(dangling);
    }
    for input in &inputs {
        assert_refused(&faithfulness(input, &[]), &[path(input)]);
        assert_refused(&run(&["sanity", path(input)]), &[path(input)]);
    }
    // A folder where the command wants one image.
    assert_refused(&run(&["sanity", path(dir.path())]), &[path(dir.path())]);
}

#[test]
fn a_crafted_file_in_the_folder_is_an_error_row_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let images = dir.path().join("images");
    std::fs::create_dir(&images).unwrap();
    photo(&images, "chelsea.png", "cat.png");
    let fake = crafted(&images);
    let out = dir.path().join("report");
    let before = std::fs::read(&fake).unwrap();
    let run = faithfulness(&images, &["--out", path(&out)]);
    // The good image is reported, the bad one named with its cause; the exit says so.
    assert_refused(&run, &[path(&fake)]);
    let csv = std::fs::read_to_string(out.join("faithfulness.csv")).unwrap();
    let lines: Vec<&str> = csv.lines().collect();
    assert_eq!(lines.len(), 3, "{csv}");
    assert!(lines[1].contains("cat.png") && lines[1].contains(",gradcam,"));
    assert!(lines[2].contains("fake.png"), "{csv}");
    assert_eq!(std::fs::read(&fake).unwrap(), before);
}

#[test]
fn an_out_that_is_a_file_or_an_input_is_never_written() {
    let dir = tempfile::tempdir().unwrap();
    let images = dir.path().join("images");
    std::fs::create_dir(&images).unwrap();
    let cat = photo(&images, "chelsea.png", "cat.png");
    let before = std::fs::read(&cat).unwrap();
    let file = dir.path().join("notes.txt");
    std::fs::write(&file, "keep me").unwrap();

    // The report folder: an existing file, one of the images, the input folder, a folder
    // inside it.
    assert_refused(
        &faithfulness(&images, &["--out", path(&file)]),
        &[path(&file), "is a file"],
    );
    assert_refused(
        &faithfulness(&images, &["--out", path(&cat)]),
        &[path(&cat), "is a file"],
    );
    assert_refused(
        &faithfulness(&images, &["--out", path(&images)]),
        &[path(&images), "not empty"],
    );
    let inside = images.join("report");
    assert_refused(
        &faithfulness(&images, &["--out", path(&inside)]),
        &[path(&inside), "inside the input folder"],
    );
    assert!(!inside.exists());
    // One image takes no --out.
    assert_refused(
        &faithfulness(&cat, &["--out", path(&file)]),
        &["--out is for a folder report"],
    );
    // The sanity figure onto its own input.
    assert_refused(
        &run(&["sanity", path(&cat), "--out", path(&cat)]),
        &[path(&cat), "the same file"],
    );
    assert_eq!(std::fs::read(&cat).unwrap(), before);
    assert_eq!(std::fs::read_to_string(&file).unwrap(), "keep me");
    let names: Vec<_> = std::fs::read_dir(&images).unwrap().flatten().collect();
    assert_eq!(names.len(), 1, "nothing new in the input folder");
}

#[test]
fn a_refused_folder_leaves_no_report_folder_behind() {
    let dir = tempfile::tempdir().unwrap();
    let empty = dir.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    let images = dir.path().join("images");
    std::fs::create_dir(&images).unwrap();
    photo(&images, "chelsea.png", "cat.png");
    for (folder, extra, needles) in [
        (&empty, &[][..], &[path(&empty)][..]),
        (&images, &["--split", "test"][..], &[path(&images)][..]),
        (
            &images,
            &["--layer", "no-such-layer"][..],
            &["no-such-layer"][..],
        ),
    ] {
        let report = dir.path().join("report");
        let mut args = vec!["--out", path(&report)];
        args.extend_from_slice(extra);
        assert_refused(&faithfulness(folder, &args), needles);
        assert!(
            !report.exists(),
            "{extra:?}: an empty report folder was left behind"
        );
    }
}

#[test]
fn unknown_method_names_are_named() {
    let cat = crate::common::repo("assets/images/chelsea.png");
    let out = run(&[
        "faithfulness",
        path(&cat),
        "--methods",
        "gradcam,no-such-cam",
    ]);
    assert_named(&out, &["no-such-cam", "hirescam"]);
    let out = run(&["faithfulness", path(&cat), "--methods", ""]);
    assert_named(&out, &["--methods"]);
    let out = run(&["sanity", path(&cat), "--method", "gradcam++x"]);
    assert_named(&out, &["gradcam++x"]);
    let out = run(&["faithfulness", path(&cat), "--percentiles", "0"]);
    assert_named(&out, &["percentile 0"]);
}

#[test]
fn a_closed_pipe_ends_quietly() {
    let cat = crate::common::repo("assets/images/chelsea.png");
    let dir = tempfile::tempdir().unwrap();
    let figure = dir.path().join("sanity.png");
    let mut quick = vec!["faithfulness", path(&cat)];
    quick.extend_from_slice(&QUICK);
    for args in [
        quick.clone(),
        [quick.as_slice(), &["--json"]].concat(),
        vec!["sanity", path(&cat), "--out", path(&figure)],
    ] {
        let mut child = convlens()
            .args(&args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        // The reader goes away before the first byte is written.
        drop(child.stdout.take());
        let out = child.wait_with_output().unwrap();
        let stderr = text(&out.stderr);
        assert_eq!(out.status.code(), Some(0), "{args:?}: {stderr}");
        assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
    }
    assert!(figure.is_file());
}

#[test]
fn ctrl_c_keeps_the_finished_rows() {
    let dir = tempfile::tempdir().unwrap();
    let images = dir.path().join("images");
    std::fs::create_dir(&images).unwrap();
    for (i, from) in ["chelsea.png", "coffee.png", "chelsea.png"]
        .iter()
        .enumerate()
    {
        photo(&images, from, &format!("{i}.png"));
    }
    let out = dir.path().join("report");
    let mut child = convlens()
        .args(["faithfulness", path(&images), "--out", path(&out)])
        .args(QUICK)
        .env("CONVLENS_PROGRESS_SECS", "0")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut reader = std::io::BufReader::new(child.stderr.take().unwrap());
    let (mut log, mut line) = (String::new(), String::new());
    while reader.read_line(&mut line).unwrap() > 0 {
        log.push_str(&line);
        // The first image is done: interrupt during the second.
        if line.starts_with("faithfulness (images): 1/3") {
            // SAFETY: a plain syscall on our own child.
            unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
        }
        line.clear();
    }
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(130), "{log}");
    assert!(
        log.contains("cancelled:") && !log.contains("panicked"),
        "{log}"
    );
    let csv = std::fs::read_to_string(out.join("faithfulness.csv")).unwrap();
    let rows = csv.lines().count() - 1;
    assert!((1..3).contains(&rows), "{csv}");
    assert!(csv.lines().nth(1).unwrap().contains("0.png"), "{csv}");
    assert!(out.join("summary.png").is_file());
}
