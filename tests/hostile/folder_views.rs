//! `convlens embed`, `suspects`, `examples` and `probe` (the commands that read a whole folder)
//! against hostile folders, outputs, numbers, pipes and Ctrl-C. Each refusal exits non-zero
//! and names the value or file; a crafted image is skipped by name (exit 1), never a panic or
//! a hang; no output replaces a file or lands among the images; an interrupted run writes
//! nothing (not even the --out's missing folders) and keeps the features it extracted.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::repo;
use crate::inputs::{Run, class_folder, convlens_env, hashes, png, png_claiming};

/// The four commands, each with the arguments it needs besides the folder.
const COMMANDS: [(&str, &[&str]); 4] = [
    ("embed", &[]),
    ("suspects", &[]),
    ("examples", &["--layer", "blocks.4"]),
    ("probe", &[]),
];

/// A work folder with a cache of its own (the user's is never touched).
struct Work {
    dir: tempfile::TempDir,
}

impl Work {
    fn new() -> Work {
        Work {
            dir: tempfile::tempdir().unwrap(),
        }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// `convlens args` run in the work folder.
    fn run(&self, args: &[&str]) -> Run {
        let cache = self.path("cache");
        convlens_env(self.dir.path(), args, &[("CONVLENS_CACHE", &cache)])
    }

    /// `convlens COMMAND FOLDER [its own args] extra`.
    fn command(&self, command: (&str, &[&str]), folder: &str, extra: &[&str]) -> Run {
        let mut args = vec![command.0, folder];
        args.extend(command.1);
        args.extend(extra);
        self.run(&args)
    }

    /// A labelled folder `name` of two classes of `n` small PNGs each.
    fn two_classes(&self, name: &str, n: usize) -> PathBuf {
        let root = self.path(name);
        class_folder(&root, "a", n, 10);
        class_folder(&root, "b", n, 200);
        root
    }
}

/// Asserts a refusal: a non-zero exit without a panic, stderr naming every one of `needles`.
fn assert_refused(run: &Run, needles: &[&str]) {
    assert!(
        run.code != 0 && run.code != 101,
        "exit {}: {}",
        run.code,
        run.stderr
    );
    assert!(!run.stderr.contains("panicked"), "{}", run.stderr);
    for n in needles {
        assert!(run.stderr.contains(n), "`{n}` not in: {}", run.stderr);
    }
}

/// The files directly in `dir`, sorted.
fn names(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

#[test]
fn missing_empty_and_one_class_folders_are_named() {
    let w = Work::new();
    std::fs::create_dir(w.path("empty")).unwrap();
    class_folder(&w.path("one"), "cat", 4, 50);
    for command in COMMANDS {
        let run = w.command(command, "no-such-folder", &[]);
        assert_refused(&run, &["no-such-folder", "does not exist"]);
        let run = w.command(command, "empty", &[]);
        assert_refused(&run, &["empty", "no class folders"]);
        if command.0 == "examples" {
            continue;
        }
        let run = w.command(command, "one", &[]);
        assert_refused(&run, &["one", "only one class folder (`cat`)"]);
    }
}

#[test]
fn examples_needs_no_labels_one_class_or_a_flat_folder_is_ranked() {
    let w = Work::new();
    class_folder(&w.path("one"), "cat", 4, 50);
    let flat = class_folder(w.dir.path(), "flat", 3, 90);
    let examples = COMMANDS[2];
    for (folder, images) in [("one", 4), ("flat", 3)] {
        let out = format!("{folder}.png");
        let run = w.command(examples, folder, &["--out", &out, "--json"]);
        assert_eq!(run.code, 0, "{folder}: {}", run.stderr);
        assert!(w.path(&out).is_file(), "{folder}: no figure");
        let json: serde_json::Value = serde_json::from_str(&run.stdout).unwrap();
        assert_eq!(json["scanned"], images, "{folder}: {}", run.stdout);
    }
    assert_eq!(
        std::fs::read_dir(&flat).unwrap().count(),
        3,
        "no file added"
    );
}

#[test]
fn crafted_images_are_skipped_by_name_and_the_rest_answered() {
    let w = Work::new();
    let data = w.two_classes("data", 5);
    png_claiming(&data.join("a/huge.png"), 100_000, 100_000);
    std::fs::write(data.join("b/text.jpg"), b"this is not a JPEG").unwrap();
    png(&data.join("a/whole.png"), 128, 128, 3);
    let bytes = std::fs::read(data.join("a/whole.png")).unwrap();
    std::fs::write(data.join("a/cut.png"), &bytes[..bytes.len() / 2]).unwrap();
    std::fs::remove_file(data.join("a/whole.png")).unwrap();
    let before = hashes(&data);
    for command in COMMANDS {
        let out = format!("out/{}.png", command.0);
        let run = w.command(command, "data", &["--out", &out]);
        assert_eq!(run.code, 1, "{}: {}", command.0, run.stderr);
        for bad in ["huge.png", "text.jpg", "cut.png"] {
            assert!(
                run.stderr
                    .lines()
                    .any(|l| l.starts_with("skipped") && l.contains(bad)),
                "{}: {bad} not listed as skipped: {}",
                command.0,
                run.stderr
            );
        }
        assert!(run.stderr.contains("100000x100000"), "{}", run.stderr);
        assert!(
            w.path(&out).exists(),
            "{}: no {out}: {}",
            command.0,
            run.stderr
        );
        assert!(
            run.max_rss_mb < 1500.0,
            "{} peaked at {:.0} MB",
            command.0,
            run.max_rss_mb
        );
    }
    assert_eq!(hashes(&data), before, "an input changed");
}

#[test]
fn outputs_never_replace_a_file_nor_land_among_the_images() {
    let w = Work::new();
    let data = w.two_classes("data", 5);
    let before = hashes(&data);
    for (command, taken) in COMMANDS
        .into_iter()
        .zip(["m.png", "s.csv", "e.png", "p.png"])
    {
        std::fs::write(w.path(taken), b"mine").unwrap();
        let run = w.command(command, "data", &["--out", taken]);
        assert_eq!(run.code, 0, "{}: {}", command.0, run.stderr);
        assert_eq!(
            std::fs::read(w.path(taken)).unwrap(),
            b"mine",
            "{} replaced {taken}",
            command.0
        );
        let stem = taken.split('.').next().unwrap();
        let ext = taken.split('.').nth(1).unwrap();
        assert!(
            w.path(&format!("{stem}_2.{ext}")).exists(),
            "{}: {:?}",
            command.0,
            names(w.dir.path())
        );
        // An existing image of the folder, or a new file (in a new folder) inside it: refused
        // before any work.
        for inside in ["data/a/0.png", "data/b/new/x.png"] {
            let out = if command.0 == "suspects" {
                inside.replace(".png", ".csv")
            } else {
                inside.into()
            };
            let run = w.command(command, "data", &["--out", &out]);
            assert_refused(&run, &[out.as_str(), "inside the image folder data"]);
        }
        // A missing folder is created.
        let out = format!("new/{}/{taken}", command.0);
        let run = w.command(command, "data", &["--out", &out]);
        assert_eq!(run.code, 0, "{}: {}", command.0, run.stderr);
        assert!(w.path(&out).exists(), "{}: no {out}", command.0);
    }
    assert_eq!(hashes(&data), before, "an input changed");
    assert_eq!(names(&data), ["a", "b"]);
    assert!(!data.join("b/new").exists());
}

#[test]
fn absurd_numbers_are_refused_by_name_before_any_work() {
    let w = Work::new();
    w.two_classes("data", 5);
    let cases: [(&[&str], &[&str]); 16] = [
        (
            &["examples", "data", "--layer", "blocks.4", "--top", "0"],
            &["--top 0"],
        ),
        (
            &[
                "examples", "data", "--layer", "blocks.4", "--top", "1000000",
            ],
            &["--top 1000000", "1 to 64"],
        ),
        (
            &[
                "examples",
                "data",
                "--layer",
                "blocks.4",
                "--channels",
                "5..2",
            ],
            &["`5..2` selects no channel"],
        ),
        (
            &[
                "examples",
                "data",
                "--layer",
                "blocks.4",
                "--channels",
                "0..99999",
            ],
            &["40 channels", "99998"],
        ),
        // A range far beyond memory is refused, not allocated.
        (
            &[
                "examples",
                "data",
                "--layer",
                "blocks.4",
                "--channels",
                "0..=18446744073709551615",
            ],
            &["40 channels"],
        ),
        (
            &["examples", "data", "--layer", "blocks.4", "--batch", "0"],
            &["--batch 0"],
        ),
        (
            &[
                "examples", "data", "--layer", "blocks.4", "--batch", "1000000",
            ],
            &["--batch 1000000"],
        ),
        (&["suspects", "data", "--top", "0"], &["--top 0"]),
        (&["suspects", "data", "--folds", "0"], &["--folds 0"]),
        (&["probe", "data", "--max-images", "0"], &["--max-images 0"]),
        (
            &["probe", "data", "--batch", "1000000"],
            &["--batch 1000000", "1 to 128"],
        ),
        (&["embed", "data", "--method", "umap"], &["umap"]),
        (&["embed", "data", "--out", "map.gif"], &["map.gif", ".gif"]),
        (
            &["embed", "data", "--method", "tsne", "--perplexity", "0"],
            &["perplexity 0", "1 to 100"],
        ),
        (
            &["embed", "data", "--method", "tsne", "--perplexity", "nan"],
            &["perplexity NaN"],
        ),
        (
            &["embed", "data", "--method", "tsne", "--iterations", "0"],
            &["iterations 0", "1 to 100000"],
        ),
    ];
    for (args, needles) in cases {
        let started = Instant::now();
        let run = w.run(args);
        assert_refused(&run, needles);
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "{args:?} took {:?}",
            started.elapsed()
        );
    }
    // Colouring by correctness with a model of other classes: refused before the features.
    let run = w.run(&["embed", "data", "--color", "correct"]);
    assert_refused(&run, &["--color correct", "data", "a, b"]);
    assert!(!run.stderr.contains("features"), "{}", run.stderr);
    // A bad model to compare with fails before the first model is probed.
    let run = w.run(&["probe", "data", "--compare", "no-such-model"]);
    assert_refused(&run, &["no-such-model"]);
    assert!(!run.stderr.contains("probed in"), "{}", run.stderr);
    // `--top` larger than the folder prints every image.
    let run = w.run(&["suspects", "data", "--top", "1000000"]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_eq!(
        run.stdout.lines().filter(|l| l.contains(".png")).count(),
        10,
        "{}",
        run.stdout
    );
    assert_eq!(names(w.dir.path()), ["cache", "data", "suspects.csv"]);
}

/// Runs `convlens args` in `dir` with stdout and stderr into one pipe whose reader goes away
/// after the first byte (`2>&1 | head -c1`); returns the exit code.
fn with_closed_pipe(dir: &Path, cache: &Path, args: &[&str]) -> i32 {
    let (reader, writer) = std::io::pipe().unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_convlens"))
        .args(args)
        .current_dir(dir)
        .env("CONVLENS_CACHE", cache)
        .env("CONVLENS_PROGRESS_SECS", "0")
        .stdin(Stdio::null())
        .stdout(writer.try_clone().unwrap())
        .stderr(writer)
        .spawn()
        .unwrap();
    let mut first = [0u8; 1];
    let mut reader = reader;
    reader.read_exact(&mut first).unwrap();
    drop(reader);
    child.wait().unwrap().code().unwrap_or(-1)
}

#[test]
fn a_closed_pipe_ends_no_run_early_and_loses_no_file() {
    let w = Work::new();
    w.two_classes("data", 6);
    let cache = w.path("cache");
    for (command, out) in COMMANDS
        .into_iter()
        .zip(["m.png", "s.csv", "e.png", "p.png"])
    {
        let mut args = vec![command.0, "data", "--out", out];
        args.extend(command.1);
        if command.0 != "suspects" {
            args.push("--json");
        }
        let code = with_closed_pipe(w.dir.path(), &cache, &args);
        assert!(code == 0 || code == 1, "{}: exit {code}", command.0);
        assert!(w.path(out).exists(), "{}: {out} was not written", command.0);
    }
}

#[test]
fn ctrl_c_writes_nothing_and_keeps_the_features() {
    let w = Work::new();
    let data = repo("assets/datasets/fashion-mini");
    let cache = w.path("cache");
    let mut child = Command::new(env!("CARGO_BIN_EXE_convlens"))
        .args([
            "embed",
            data.to_str().unwrap(),
            "--out",
            "figures/new/map.png",
        ])
        .current_dir(w.dir.path())
        .env("CONVLENS_CACHE", &cache)
        .env("CONVLENS_PROGRESS_SECS", "0")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Interrupted once the first images are done (a progress line says so).
    let mut stderr = child.stderr.take().unwrap();
    let mut log = String::new();
    let mut byte = [0u8; 1];
    while !log.contains("features: ") || !log.ends_with('\n') {
        assert_eq!(stderr.read(&mut byte).unwrap(), 1, "{log}");
        log.push(byte[0] as char);
    }
    // SAFETY: signalling our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let started = Instant::now();
    stderr.read_to_string(&mut log).unwrap();
    let status = child.wait().unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "took {:?} to stop",
        started.elapsed()
    );
    assert_eq!(status.code(), Some(130), "{log}");
    assert!(
        log.contains("interrupted: nothing was written") && log.contains("cached"),
        "{log}"
    );
    // Not even the --out's missing folders.
    assert_eq!(names(w.dir.path()), ["cache"], "{log}");
    let kept = walk(&cache);
    assert!(!kept.is_empty(), "no features kept: {log}");
    // Whole feature files only, no file half written beside one.
    assert!(
        kept.iter()
            .all(|p| p.extension().is_some_and(|e| e == "f32")),
        "{kept:?}"
    );
}

/// Every file under `dir`.
fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}
