//! Outputs never clobber inputs or earlier work; stdout that goes away or fills up never
//! panics; progress shows off a terminal.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use crate::common::{repo, small_dataset};

pub(crate) fn convlens() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_convlens"));
    cmd.current_dir(repo(""));
    cmd
}

pub(crate) fn run(args: &[&str]) -> Output {
    convlens().args(args).output().expect("the binary runs")
}

pub(crate) fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

pub(crate) fn path(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// Asserts a failed run (exit 1, no panic) whose message contains every one of `needles`.
pub(crate) fn assert_refused(out: &Output, needles: &[&str]) {
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    for n in needles {
        assert!(stderr.contains(n), "`{n}` not in: {stderr}");
    }
}

/// A copy of a bundled image in `dir`.
pub(crate) fn photo(dir: &Path, from: &str, name: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::copy(repo(&format!("assets/images/{from}")), &p).unwrap();
    p
}

#[test]
fn a_figure_never_replaces_its_input() {
    let dir = tempfile::tempdir().unwrap();
    let input = photo(dir.path(), "chelsea.png", "photo.png");
    let before = std::fs::read(&input).unwrap();
    let link = dir.path().join("link.png");
    #[cfg(unix)]
    std::os::unix::fs::symlink(&input, &link).unwrap();
    #[cfg(not(unix))]
    std::fs::hard_link(&input, &link).unwrap();
    for out in [&input, &link] {
        for args in [
            vec!["cam", path(&input)],
            vec!["activations", path(&input), "--layer", "blocks.1"],
        ] {
            let started = Instant::now();
            let run = convlens()
                .args(&args)
                .arg("--out")
                .arg(out)
                .output()
                .unwrap();
            assert_refused(&run, &[path(out), path(&input), "the same file"]);
            assert!(
                started.elapsed() < Duration::from_secs(20),
                "refused before any work"
            );
            assert_eq!(
                std::fs::read(&input).unwrap(),
                before,
                "{args:?} changed the input"
            );
        }
    }
    // The sidecar beside the figure would replace an input too.
    let json_input = dir.path().join("fig.json");
    std::fs::write(&json_input, b"{}").unwrap();
    let fig = dir.path().join("fig.png");
    let run = convlens()
        .args(["activations", "--layer", "blocks.1"])
        .arg(&json_input)
        .arg("--out")
        .arg(&fig)
        .output()
        .unwrap();
    assert_refused(&run, &["fig.json"]);
    assert_eq!(std::fs::read(&json_input).unwrap(), b"{}");
    assert!(!fig.exists());
}

#[test]
fn the_format_follows_the_extension() {
    let dir = tempfile::tempdir().unwrap();
    let input = photo(dir.path(), "coffee.png", "coffee.png");
    let gif = dir.path().join("fig.gif");
    let run = convlens()
        .args(["activations", "--layer", "blocks.1"])
        .arg(&input)
        .arg("--out")
        .arg(&gif)
        .output()
        .unwrap();
    assert_refused(&run, &["fig.gif", ".png, .jpg, .jpeg"]);
    assert!(!gif.exists());
    let jpg = dir.path().join("fig.jpg");
    let run = convlens()
        .args(["activations", "--layer", "blocks.1"])
        .arg(&input)
        .arg("--out")
        .arg(&jpg)
        .output()
        .unwrap();
    assert!(run.status.success(), "{}", text(&run.stderr));
    let bytes = std::fs::read(&jpg).unwrap();
    assert_eq!(&bytes[..3], &[0xFF, 0xD8, 0xFF], "JPEG bytes in a .jpg");
    assert_eq!(
        image::guess_format(&bytes).unwrap(),
        image::ImageFormat::Jpeg
    );
    assert!(
        dir.path().join("fig.json").is_file(),
        "the sidecar beside it"
    );
}

#[test]
fn a_folder_with_shared_stems_gets_one_figure_per_image() {
    let dir = tempfile::tempdir().unwrap();
    let images = dir.path().join("images");
    std::fs::create_dir(&images).unwrap();
    photo(&images, "rocket.jpg", "x.jpg");
    photo(&images, "chelsea.png", "x.png");
    let out = dir.path().join("figs");
    let run = run(&[
        "activations",
        path(&images),
        "--layer",
        "blocks.1",
        "--out",
        path(&out),
    ]);
    assert!(run.status.success(), "{}", text(&run.stderr));
    let (a, b) = (out.join("x_jpg.png"), out.join("x_png.png"));
    assert_ne!(std::fs::read(&a).unwrap(), std::fs::read(&b).unwrap());
    assert!(out.join("x_jpg.json").is_file() && out.join("x_png.json").is_file());
    let csv = std::fs::read_to_string(out.join("index.csv")).unwrap();
    assert!(csv.contains(path(&a)) && csv.contains(path(&b)), "{csv}");
    // Figures are never written into the folder of images itself.
    let again = run_in_place(&images);
    assert_refused(&again, &["input folder", path(&images)]);
    assert_eq!(std::fs::read_dir(&images).unwrap().count(), 2);
}

fn run_in_place(images: &Path) -> Output {
    run(&[
        "activations",
        path(images),
        "--layer",
        "blocks.1",
        "--out",
        path(images),
    ])
}

/// `convlens train` on a 4-class folder of 12 images into `out`: one short epoch unless
/// `extra` says `--epochs`.
fn train(work: &Path, out: &Path, extra: &[&str]) -> Command {
    let data = work.join("data");
    if !data.exists() {
        small_dataset(&data, 2, 1);
    }
    let mut cmd = convlens();
    cmd.arg("train").arg(&data);
    if !extra.contains(&"--epochs") {
        cmd.args(["--epochs", "1"]);
    }
    cmd.args(["--head", "linear", "--batch-size", "4"])
        .arg("--out")
        .arg(out)
        .arg("--cache")
        .arg(work.join("cache"))
        .args(extra);
    cmd
}

#[test]
fn train_replaces_an_existing_folder_only_when_asked_and_as_a_whole() {
    let work = tempfile::tempdir().unwrap();
    let out = work.path().join("model");
    std::fs::create_dir(&out).unwrap();
    std::fs::write(out.join("old.txt"), b"earlier work").unwrap();
    let refused = train(work.path(), &out, &[]).output().unwrap();
    assert_refused(&refused, &[path(&out), "not empty", "--overwrite"]);
    assert_eq!(std::fs::read(out.join("old.txt")).unwrap(), b"earlier work");
    assert!(
        !work.path().join("cache").exists(),
        "refused before extraction"
    );

    let replaced = train(work.path(), &out, &["--overwrite"]).output().unwrap();
    assert!(replaced.status.success(), "{}", text(&replaced.stderr));
    assert!(
        !out.join("old.txt").exists(),
        "no file of the old run remains"
    );
    assert!(convlens::train::bundle::is_trained_model(&out));
    let leftovers: Vec<_> = std::fs::read_dir(work.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains("convlens"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

/// Waits until the child's stderr has a line (it holds the output folder's lock by then).
fn first_line(child: &mut Child) -> String {
    use std::io::BufRead;
    let mut line = String::new();
    let mut reader = std::io::BufReader::new(child.stderr.take().unwrap());
    reader.read_line(&mut line).unwrap();
    // Keep draining so the child never blocks on a full pipe.
    std::thread::spawn(move || std::io::copy(&mut reader, &mut std::io::sink()));
    line
}

#[test]
fn two_runs_never_write_one_folder() {
    let work = tempfile::tempdir().unwrap();
    let out = work.path().join("model");
    let mut first = train(work.path(), &out, &["--epochs", "500", "--patience", "0"])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let line = first_line(&mut first);
    assert!(line.contains("classes"), "the first run started: {line}");
    let second = train(work.path(), &out, &["--overwrite"]).output().unwrap();
    first.kill().unwrap();
    first.wait().unwrap();
    assert_refused(&second, &[path(&out), "another convlens run"]);
}

#[test]
fn a_bad_out_is_refused_before_any_work() {
    let work = tempfile::tempdir().unwrap();
    let file = work.path().join("file");
    std::fs::write(&file, b"not a folder").unwrap();
    let run = train(work.path(), &file, &[]).output().unwrap();
    assert_refused(&run, &[path(&file), "is a file"]);
    let under_file = file.join("model");
    let run = train(work.path(), &under_file, &[]).output().unwrap();
    assert_refused(&run, &[path(&under_file), "cannot create"]);
    let fig = file.join("fig.png");
    let run = convlens()
        .args([
            "activations",
            "assets/images/coffee.png",
            "--layer",
            "blocks.1",
        ])
        .arg("--out")
        .arg(&fig)
        .output()
        .unwrap();
    assert_refused(&run, &[path(&file), "is a file"]);
    #[cfg(unix)]
    if unsafe { libc::geteuid() } != 0 {
        // A read-only folder (root writes anywhere, so only checked as another user).
        use std::os::unix::fs::PermissionsExt;
        let locked = work.path().join("locked");
        std::fs::create_dir(&locked).unwrap();
        std::fs::set_permissions(&locked, std::fs::Permissions::from_mode(0o555)).unwrap();
        let run = train(work.path(), &locked.join("model"), &[])
            .output()
            .unwrap();
        assert_refused(&run, &["locked", "cannot"]);
    }
    assert_eq!(std::fs::read(&file).unwrap(), b"not a folder");
    assert!(
        !work.path().join("cache").exists(),
        "refused before extraction"
    );
}

#[test]
fn a_closed_pipe_ends_quietly() {
    for args in [
        vec!["info", "--json"],
        vec![
            "predict",
            "assets/images/chelsea.png",
            "assets/images/coffee.png",
            "--json",
        ],
        vec!["info"],
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
}

#[cfg(target_os = "linux")]
#[test]
fn a_full_disk_on_stdout_is_an_error() {
    let full = std::fs::OpenOptions::new()
        .write(true)
        .open("/dev/full")
        .unwrap();
    let out = convlens()
        .args(["info", "--json"])
        .stdout(full)
        .output()
        .unwrap();
    assert_refused(&out, &["standard output", "No space left"]);
}

#[test]
fn progress_shows_off_a_terminal() {
    let work = tempfile::tempdir().unwrap();
    let out = work.path().join("model");
    let run = train(work.path(), &out, &[])
        .env("CONVLENS_PROGRESS_SECS", "0")
        .output()
        .unwrap();
    let stderr = text(&run.stderr);
    assert!(run.status.success(), "{stderr}");
    // The validation images (4), then the training images (8), then the epoch's batches.
    for needle in [
        "validation images: 4/4 (100%)",
        "train images: 8/8 (100%)",
        "/s, ",
        " elapsed",
        "head epoch 1: ",
    ] {
        assert!(stderr.contains(needle), "`{needle}` not in: {stderr}");
    }
}

/// Starts a long training run and SIGKILLs it once its second epoch is under way (the first
/// epoch's checkpoint has been written by then).
fn kill_during_training(work: &Path, out: &Path, extra: &[&str]) {
    use std::io::BufRead;
    let mut child = train(
        work,
        out,
        &[&["--epochs", "500", "--patience", "0"], extra].concat(),
    )
    .stderr(Stdio::piped())
    .spawn()
    .unwrap();
    let mut reader = std::io::BufReader::new(child.stderr.take().unwrap());
    let mut log = String::new();
    let mut line = String::new();
    while reader.read_line(&mut line).unwrap() > 0 {
        log.push_str(&line);
        if line.contains("epoch   1") {
            unsafe { libc::kill(child.id() as i32, libc::SIGKILL) };
            break;
        }
        line.clear();
    }
    let status = child.wait().unwrap();
    assert_eq!(
        std::os::unix::process::ExitStatusExt::signal(&status),
        Some(libc::SIGKILL),
        "killed mid-run: {log}"
    );
}

#[test]
fn kill_9_mid_run_leaves_a_loadable_model_or_the_old_folder() {
    let work = tempfile::tempdir().unwrap();
    // A new folder: the checkpoint written before the kill loads and answers.
    let out = work.path().join("model");
    kill_during_training(work.path(), &out, &[]);
    assert!(convlens::train::bundle::is_trained_model(&out));
    let image = repo("assets/images/chelsea.png");
    let predicted = run(&["predict", "--model", path(&out), path(&image)]);
    assert!(predicted.status.success(), "{}", text(&predicted.stderr));

    // A folder being replaced: untouched until the new run is renamed into place.
    let old = work.path().join("old");
    std::fs::create_dir(&old).unwrap();
    std::fs::write(old.join("notes.txt"), b"earlier work").unwrap();
    kill_during_training(work.path(), &old, &["--overwrite"]);
    assert_eq!(
        std::fs::read(old.join("notes.txt")).unwrap(),
        b"earlier work"
    );
    let entries: Vec<_> = std::fs::read_dir(&old).unwrap().collect();
    assert_eq!(
        entries.len(),
        1,
        "nothing of the killed run inside the old folder"
    );
}

/// Runs `cmd` with stdout discarded and stderr into a pipe whose reader is gone before the
/// first byte (`2>&1 | head -c0` on stderr alone): every diagnostic write fails with EPIPE.
fn with_stderr_closed(cmd: &mut Command) -> Output {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stderr.take());
    child.wait_with_output().unwrap()
}

#[test]
fn a_closed_stderr_ends_no_older_command_early() {
    // `train` writes its summary and progress to stderr: the model is still saved.
    let work = tempfile::tempdir().unwrap();
    let out = work.path().join("model");
    let trained =
        with_stderr_closed(train(work.path(), &out, &[]).env("CONVLENS_PROGRESS_SECS", "0"));
    assert_eq!(trained.status.code(), Some(0), "train on a closed stderr");
    assert!(convlens::train::bundle::is_trained_model(&out));
    // `cam` over a folder with a broken image says so on stderr and maps the others (exit 1:
    // one image failed, not 101: a panic).
    let images = work.path().join("images");
    std::fs::create_dir(&images).unwrap();
    photo(&images, "coffee.png", "coffee.png");
    std::fs::write(images.join("broken.png"), b"not a png").unwrap();
    let figs = work.path().join("figs");
    let cam = with_stderr_closed(convlens().arg("cam").arg(&images).arg("--out").arg(&figs));
    assert_eq!(cam.status.code(), Some(1), "cam on a closed stderr");
    assert!(
        figs.join("coffee.png").is_file(),
        "the readable image is mapped"
    );
    assert!(figs.join("index.csv").is_file());
}
