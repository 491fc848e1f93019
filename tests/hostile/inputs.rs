//! Hostile inputs: crafted image headers, truncated JPEGs, FIFOs, symbolic links and loops,
//! folders without split folders, crafted sidecars. The binary must answer with a clear error
//! or skip (naming the file and the cause), within bounded memory and time, and change nothing.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use image::{ImageEncoder, Rgb, RgbImage};
use sha2::{Digest, Sha256};

use crate::common::repo;

/// How long a command may run before the test calls it hung.
const TIMEOUT: Duration = Duration::from_secs(180);

/// Peak memory allowed to a `predict` on crafted images of at most 1 MB.
const MAX_RSS_MB: f64 = 500.0;

/// A finished run of the binary.
pub(crate) struct Run {
    /// The exit code (128 + signal when killed by a signal).
    pub(crate) code: i32,
    pub(crate) stdout: String,
    pub(crate) stderr: String,
    /// The child's peak resident memory.
    pub(crate) max_rss_mb: f64,
}

/// Runs `convlens args` in `cwd` with no stdin; panics if it runs past [`TIMEOUT`] (a hang).
/// The child is reaped with `wait4`, which gives its own peak memory.
pub(crate) fn convlens<S: AsRef<OsStr>>(cwd: &Path, args: &[S]) -> Run {
    convlens_env(cwd, args, &[])
}

/// [`convlens`] with environment variables set (a cache folder of the test's own).
#[allow(
    clippy::zombie_processes,
    reason = "the child is reaped by wait4 (which also gives its rusage), not Child::wait"
)]
pub(crate) fn convlens_env<S: AsRef<OsStr>>(cwd: &Path, args: &[S], env: &[(&str, &Path)]) -> Run {
    let logs = tempfile::tempdir().unwrap();
    let (out_path, err_path) = (logs.path().join("stdout"), logs.path().join("stderr"));
    let args: Vec<&OsStr> = args.iter().map(AsRef::as_ref).collect();
    let child = Command::new(env!("CARGO_BIN_EXE_convlens"))
        .args(&args)
        .current_dir(cwd)
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&out_path).unwrap())
        .stderr(std::fs::File::create(&err_path).unwrap())
        .spawn()
        .expect("the binary starts");
    let pid = child.id() as libc::pid_t;
    let deadline = Instant::now() + TIMEOUT;
    let (status, usage) = loop {
        let mut status = 0;
        // SAFETY: plain syscall on our own child; both out-pointers are valid locals.
        let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
        let r = unsafe { libc::wait4(pid, &mut status, libc::WNOHANG, &mut usage) };
        if r == pid {
            break (status, usage);
        }
        assert_eq!(r, 0, "wait4 failed: {}", std::io::Error::last_os_error());
        if Instant::now() > deadline {
            // SAFETY: signalling and reaping our own child.
            unsafe {
                libc::kill(pid, libc::SIGKILL);
                libc::waitpid(pid, &mut status, 0);
            }
            panic!("convlens {args:?} still running after {TIMEOUT:?}: it hangs");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let code = if libc::WIFEXITED(status) {
        libc::WEXITSTATUS(status)
    } else {
        128 + libc::WTERMSIG(status)
    };
    Run {
        code,
        stdout: std::fs::read_to_string(&out_path).unwrap(),
        stderr: std::fs::read_to_string(&err_path).unwrap(),
        max_rss_mb: usage.ru_maxrss as f64 / 1024.0,
    }
}

/// SHA-256 of a file's bytes.
fn hash(path: &Path) -> Vec<u8> {
    Sha256::digest(std::fs::read(path).unwrap()).to_vec()
}

/// The hashes of every regular file under `dir` (links followed, FIFOs left alone).
pub(crate) fn hashes(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        let meta = std::fs::symlink_metadata(&path).unwrap();
        if meta.is_dir() {
            out.extend(hashes(&path));
        } else if meta.is_file() {
            out.push((path.clone(), hash(&path)));
        }
    }
    out.sort();
    out
}

/// A `w` x `h` RGB PNG with a pattern that depends on `shade`.
pub(crate) fn png(path: &Path, w: u32, h: u32, shade: u8) {
    RgbImage::from_fn(w, h, |x, y| {
        Rgb([shade, (x * 13 + y * 7) as u8, shade.wrapping_mul(3)])
    })
    .save(path)
    .unwrap();
}

/// CRC-32 (IEEE) as PNG chunks use it.
fn crc32(bytes: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in bytes {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0xEDB8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

/// A small PNG whose header (with a correct CRC) claims `w` x `h` pixels.
pub(crate) fn png_claiming(path: &Path, w: u32, h: u32) {
    let mut bytes = Vec::new();
    image::codecs::png::PngEncoder::new(&mut bytes)
        .write_image(&[0; 3], 1, 1, image::ExtendedColorType::Rgb8)
        .unwrap();
    assert_eq!(&bytes[12..16], b"IHDR");
    bytes[16..20].copy_from_slice(&w.to_be_bytes());
    bytes[20..24].copy_from_slice(&h.to_be_bytes());
    let crc = crc32(&bytes[12..29]);
    bytes[29..33].copy_from_slice(&crc.to_be_bytes());
    std::fs::write(path, bytes).unwrap();
}

/// A 256 x 256 noisy JPEG's bytes (large enough to cut to 2,000 bytes).
fn jpeg_bytes() -> Vec<u8> {
    let img = RgbImage::from_fn(256, 256, |x, y| {
        let n = (x.wrapping_mul(2_654_435_761) ^ y.wrapping_mul(40_503)) as u8;
        Rgb([n, (x + y) as u8, n / 2])
    });
    let mut out = Vec::new();
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, 95)
        .encode_image(&img)
        .unwrap();
    assert!(out.len() > 4000, "{}", out.len());
    out
}

/// A named pipe at `path`.
fn mkfifo(path: &Path) {
    let c = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).unwrap();
    // SAFETY: a valid NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0, "mkfifo");
}

/// A class folder `root/name` with `n` small PNGs.
pub(crate) fn class_folder(root: &Path, name: &str, n: usize, shade: u8) -> PathBuf {
    let dir = root.join(name);
    std::fs::create_dir_all(&dir).unwrap();
    for i in 0..n {
        png(
            &dir.join(format!("{i}.png")),
            24,
            24,
            shade.wrapping_add(i as u8),
        );
    }
    dir
}

#[test]
fn crafted_png_headers_are_refused_or_bounded_and_the_other_images_answered() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    png_claiming(&d.join("huge.png"), 100_000, 100_000);
    png(&d.join("tall.png"), 1, 20_000, 40);
    png(&d.join("wide.png"), 65_000, 2, 90);
    std::fs::copy(repo("assets/images/chelsea.png"), d.join("cat.png")).unwrap();
    for name in ["huge.png", "tall.png", "wide.png"] {
        let len = std::fs::metadata(d.join(name)).unwrap().len();
        assert!(len <= 1_000_000, "{name} is {len} bytes");
    }
    let before = hashes(d);
    let run = convlens(
        d,
        &["predict", "huge.png", "tall.png", "wide.png", "cat.png"],
    );
    assert_eq!(run.code, 1, "{}", run.stderr);
    assert!(
        run.stderr.contains("huge.png")
            && run.stderr.contains("100000x100000")
            && run.stderr.contains("--max-pixels"),
        "{}",
        run.stderr
    );
    for answered in ["tall.png", "wide.png", "cat.png"] {
        assert!(run.stdout.contains(answered), "{answered}: {}", run.stdout);
    }
    assert!(run.stdout.contains("Egyptian cat"), "{}", run.stdout);
    assert!(
        run.max_rss_mb < MAX_RSS_MB,
        "predict peaked at {:.0} MB",
        run.max_rss_mb
    );
    assert_eq!(hashes(d), before, "an input changed");

    // The budget is the option's: a small one refuses the photo too.
    let run = convlens(d, &["predict", "cat.png", "--max-pixels", "1000"]);
    assert_eq!(run.code, 1, "{}", run.stderr);
    assert!(
        run.stderr.contains("cat.png") && run.stderr.contains("451x300"),
        "{}",
        run.stderr
    );
    let run = convlens(d, &["predict", "cat.png", "--max-pixels", "0"]);
    assert_eq!(run.code, 1);
    assert!(run.stderr.contains("--max-pixels"), "{}", run.stderr);
}

#[test]
fn truncated_jpegs_are_errors_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let bytes = jpeg_bytes();
    std::fs::write(d.join("whole.jpg"), &bytes).unwrap();
    std::fs::write(d.join("half.jpg"), &bytes[..bytes.len() / 2]).unwrap();
    std::fs::write(d.join("stub.jpg"), &bytes[..2000]).unwrap();
    let before = hashes(d);
    let run = convlens(d, &["predict", "whole.jpg", "half.jpg", "stub.jpg"]);
    assert_eq!(run.code, 1, "{}", run.stderr);
    for cut in ["half.jpg", "stub.jpg"] {
        assert!(
            run.stderr
                .lines()
                .any(|l| l.contains(cut) && l.contains("truncated JPEG")),
            "{cut}: {}",
            run.stderr
        );
        assert!(!run.stdout.contains(cut), "{}", run.stdout);
    }
    assert!(run.stdout.contains("whole.jpg"), "{}", run.stdout);

    let run = convlens(d, &["cam", "half.jpg", "--out", "cam.png"]);
    assert_eq!(run.code, 1, "{}", run.stderr);
    assert!(
        run.stderr.contains("half.jpg") && run.stderr.contains("truncated JPEG"),
        "{}",
        run.stderr
    );
    assert!(!d.join("cam.png").exists());
    assert_eq!(hashes(d), before, "an input changed");
}

#[test]
fn a_fifo_given_as_an_image_is_refused_without_hanging() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    mkfifo(&d.join("pipe.png"));
    for args in [
        vec!["predict", "pipe.png"],
        vec!["cam", "pipe.png", "--out", "cam.png"],
    ] {
        let run = convlens(d, &args);
        assert_eq!(run.code, 1, "{args:?}: {}", run.stderr);
        assert!(
            run.stderr.contains("pipe.png") && run.stderr.contains("named pipe (FIFO)"),
            "{args:?}: {}",
            run.stderr
        );
    }
}

/// A model trained (extract mode, one epoch) on a folder of classes `a` and `b` that also holds
/// a PNG claiming 100000 x 100000 pixels, a truncated JPEG and a FIFO; with the training run's
/// stderr. Trained once for every test that needs it.
fn trained() -> &'static (PathBuf, String) {
    static TRAINED: OnceLock<(PathBuf, String)> = OnceLock::new();
    TRAINED.get_or_init(|| {
        let work = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("hostile-inputs-model");
        let _ = std::fs::remove_dir_all(&work);
        let data = work.join("data");
        let a = class_folder(&data, "a", 4, 10);
        let b = class_folder(&data, "b", 4, 200);
        png_claiming(&a.join("huge.png"), 100_000, 100_000);
        std::fs::write(b.join("cut.jpg"), &jpeg_bytes()[..2000]).unwrap();
        mkfifo(&a.join("pipe.png"));
        let before = hashes(&data);
        let model = work.join("model");
        let run = convlens(
            &work,
            &[
                OsStr::new("train"),
                data.as_os_str(),
                OsStr::new("--epochs"),
                OsStr::new("1"),
                OsStr::new("--head"),
                OsStr::new("linear"),
                OsStr::new("--out"),
                model.as_os_str(),
                OsStr::new("--cache"),
                work.join("cache").as_os_str(),
            ],
        );
        assert_eq!(run.code, 0, "{}", run.stderr);
        assert_eq!(hashes(&data), before, "an input changed");
        (model, run.stderr)
    })
}

#[test]
fn crafted_files_in_a_class_folder_are_skipped_and_training_goes_on() {
    let (model, stderr) = trained();
    assert!(model.join("model.json").is_file(), "{stderr}");
    let skipped = |name: &str, cause: &str| {
        stderr
            .lines()
            .any(|l| l.starts_with("skipped") && l.contains(name) && l.contains(cause))
    };
    assert!(skipped("huge.png", "100000x100000"), "{stderr}");
    assert!(skipped("cut.jpg", "truncated JPEG"), "{stderr}");
    assert!(skipped("pipe.png", "named pipe (FIFO)"), "{stderr}");
    assert!(stderr.contains("2 classes (a, b)"), "{stderr}");
}

/// `evaluate MODEL folder` in `cwd`, with extra arguments.
fn evaluate(cwd: &Path, folder: &Path, extra: &[&str]) -> Run {
    let (model, _) = trained();
    let mut args = vec![
        OsStr::new("evaluate"),
        model.as_os_str(),
        folder.as_os_str(),
    ];
    args.extend(extra.iter().map(OsStr::new));
    convlens(cwd, &args)
}

#[test]
fn evaluate_scores_every_image_of_an_unsplit_folder_through_links() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let data = d.join("data");
    class_folder(&data, "a", 3, 10);
    // Class b lives elsewhere and is linked in; a link inside a loops back to the dataset.
    let elsewhere = class_folder(d, "b-photos", 2, 200);
    std::os::unix::fs::symlink(&elsewhere, data.join("b")).unwrap();
    std::os::unix::fs::symlink(&data, data.join("a").join("loop")).unwrap();
    std::fs::write(data.join("a").join("cut.jpg"), &jpeg_bytes()[..3000]).unwrap();
    let before = hashes(d);
    let run = evaluate(d, &data, &[]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(
        run.stdout
            .contains("on 5 images (every image of the folder)"),
        "{}",
        run.stdout
    );
    assert!(run.stdout.contains("2 skipped"), "{}", run.stdout);
    assert!(
        run.stderr.contains("loop") && run.stderr.contains("symbolic link loop"),
        "{}",
        run.stderr
    );
    assert!(run.stderr.contains("cut.jpg"), "{}", run.stderr);

    // --split needs split folders.
    let run = evaluate(d, &data, &["--split", "test"]);
    assert_eq!(run.code, 1, "{}", run.stderr);
    assert!(
        run.stderr.contains("no split folders") && run.stderr.contains("--split"),
        "{}",
        run.stderr
    );
    assert_eq!(hashes(d), before, "an input changed");
}

#[test]
fn evaluate_reads_a_folder_with_only_test_as_a_split() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    class_folder(&data.join("test"), "a", 2, 10);
    class_folder(&data.join("test"), "b", 3, 200);
    let run = evaluate(dir.path(), &data, &[]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(
        run.stdout.contains("on 5 images (test split)"),
        "{}",
        run.stdout
    );
    let run = evaluate(dir.path(), &data, &["--split", "train"]);
    assert_eq!(run.code, 1, "{}", run.stderr);
    assert!(
        run.stderr.contains("train split has no images") && run.stderr.contains("test/"),
        "{}",
        run.stderr
    );
}

#[test]
fn evaluate_with_the_wrong_classes_gives_a_short_message() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    for (i, class) in ["w", "x", "y", "z"].into_iter().enumerate() {
        class_folder(&data, class, 2, 50 * i as u8);
    }
    let manifest = repo("models/efficientnet_lite0.json");
    let run = convlens(
        dir.path(),
        &[
            OsStr::new("evaluate"),
            manifest.as_os_str(),
            data.as_os_str(),
        ],
    );
    assert_eq!(run.code, 1, "{}", run.stderr);
    assert!(
        run.stderr.len() < 600,
        "{} bytes: {}",
        run.stderr.len(),
        run.stderr
    );
    assert!(
        run.stderr.contains("4 classes (w, x, y, z)") && run.stderr.contains("and 992 more"),
        "{}",
        run.stderr
    );
}

/// A copy of a bundled sidecar in `dir` with `edit` applied to its JSON.
fn edited_sidecar(dir: &Path, name: &str, edit: impl FnOnce(&mut serde_json::Value)) -> PathBuf {
    let text = std::fs::read_to_string(repo(&format!("assets/figures/{name}"))).unwrap();
    let mut json: serde_json::Value = serde_json::from_str(&text).unwrap();
    edit(&mut json);
    let path = dir.join(name);
    std::fs::write(&path, json.to_string()).unwrap();
    path
}

#[test]
fn out_of_range_visualisation_options_are_refused_by_cli_and_reproduce() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let run = convlens(d, &["filters", "--layer", "blocks.4", "--size", "100000"]);
    assert_eq!(run.code, 1, "{}", run.stderr);
    assert!(
        run.stderr.contains("--size 100000 is out of range"),
        "{}",
        run.stderr
    );
    let cases: [(&str, &str, serde_json::Value, &str); 4] = [
        (
            "filters_blocks4.json",
            "size",
            100_000.into(),
            "--size 100000",
        ),
        (
            "filters_blocks4.json",
            "steps",
            1_000_000_000.into(),
            "--steps 1000000000",
        ),
        (
            "activations_chelsea_stem.json",
            "gutter",
            100_000.into(),
            "gutter 100000",
        ),
        (
            "activations_chelsea_stem.json",
            "cols",
            0.into(),
            "--cols 0",
        ),
    ];
    for (name, key, value, message) in cases {
        let sidecar = edited_sidecar(d, name, |j| j[key] = value.clone());
        let run = convlens(
            d,
            &[
                OsStr::new("reproduce"),
                sidecar.as_os_str(),
                OsStr::new("--out"),
                d.join("again.png").as_os_str(),
            ],
        );
        assert_eq!(run.code, 1, "{key}: {}", run.stderr);
        assert!(
            run.stderr.contains(message) && run.stderr.contains(name),
            "{key}: {}",
            run.stderr
        );
        assert!(!d.join("again.png").exists());
    }
}

/// The sidecar of a figure `reproduce` does not render (a sanity check's), and JSON that is no
/// figure's sidecar, are refused by what they are, not by a field serde missed.
#[test]
fn reproduce_names_a_sidecar_it_cannot_render() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let sanity = edited_sidecar(d, "cam_chelsea_gradcam.json", |j| {
        j["kind"] = "sanity".into();
        j.as_object_mut().unwrap().remove("result");
    });
    let other = d.join("other.json");
    std::fs::write(&other, br#"{"model": "x", "scale": 1}"#).unwrap();
    for (sidecar, message) in [
        (&sanity, "the sidecar of a `sanity` figure"),
        (&other, "not the sidecar of a convlens figure"),
    ] {
        let run = convlens(
            d,
            &[
                OsStr::new("reproduce"),
                sidecar.as_os_str(),
                OsStr::new("--out"),
                d.join("again.png").as_os_str(),
            ],
        );
        assert_eq!(run.code, 1, "{}", run.stderr);
        assert!(
            run.stderr.contains(message)
                && run
                    .stderr
                    .contains(sidecar.file_name().unwrap().to_str().unwrap()),
            "{}",
            run.stderr
        );
        assert!(!d.join("again.png").exists());
    }
}

#[test]
fn reproduce_works_from_another_working_directory() {
    let dir = tempfile::tempdir().unwrap();
    let work = dir.path().join("work");
    std::fs::create_dir_all(work.join("figs")).unwrap();
    png(&work.join("img.png"), 64, 48, 120);
    // The sidecar records `img.png`, relative to `work`, not to its own folder `work/figs`.
    let run = convlens(
        &work,
        &[
            "activations",
            "img.png",
            "--layer",
            "stem",
            "--out",
            "figs/fig.png",
        ],
    );
    assert_eq!(run.code, 0, "{}", run.stderr);
    let elsewhere = dir.path().join("elsewhere");
    std::fs::create_dir_all(&elsewhere).unwrap();
    let again = dir.path().join("again.png");
    let run = convlens(
        &elsewhere,
        &[
            OsStr::new("reproduce"),
            work.join("figs/fig.json").as_os_str(),
            OsStr::new("--out"),
            again.as_os_str(),
        ],
    );
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(run.stdout.contains("identical"), "{}", run.stdout);

    // Gone from every place it could be: an error naming the image.
    std::fs::rename(work.join("img.png"), work.join("moved.png")).unwrap();
    let run = convlens(
        &elsewhere,
        &[
            OsStr::new("reproduce"),
            work.join("figs/fig.json").as_os_str(),
            OsStr::new("--out"),
            again.as_os_str(),
        ],
    );
    assert_eq!(run.code, 1, "{}", run.stderr);
    assert!(
        run.stderr.contains("img.png") && run.stderr.contains("was not found"),
        "{}",
        run.stderr
    );
}
