//! The committed figures of assets/figures, made again by the commands of
//! `assets/figures/regenerate.sh` and re-rendered by `convlens reproduce` from their sidecars,
//! byte for byte on a machine whose CPU kernels have the instruction set the sidecars record
//! (the one the figures were made on), within a few levels elsewhere; and reproduce's refusals
//! when the image or the weights changed.
// Tests may panic on failure, print, and call the APIs the library bans.
use crate::common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::repo;
use convlens::export::PixelDifference;

/// A finished run of the binary.
struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

/// Runs `convlens args` in `cwd`.
fn convlens(cwd: &Path, args: &[&str]) -> Run {
    convlens_with(cwd, args, &[])
}

/// Runs `convlens args` in `cwd` with the environment variables `env` set.
fn convlens_with(cwd: &Path, args: &[&str], env: &[(&str, &str)]) -> Run {
    let out = Command::new(env!("CARGO_BIN_EXE_convlens"))
        .args(args)
        .current_dir(cwd)
        .envs(env.iter().copied())
        .output()
        .expect("the binary runs");
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// The `convlens ...` lines of the regeneration script, as argument lists (no quoting there).
fn script_commands() -> Vec<Vec<String>> {
    let script = std::fs::read_to_string(repo("assets/figures/regenerate.sh")).unwrap();
    script
        .lines()
        .filter_map(|l| l.strip_prefix("convlens "))
        .map(|l| l.split_whitespace().map(String::from).collect())
        .collect()
}

/// The figure a command writes (its `--out`, relative to the repository root).
fn figure_of(command: &[String]) -> PathBuf {
    let i = command.iter().position(|a| a == "--out").expect("--out");
    PathBuf::from(&command[i + 1])
}

/// Whether a figure takes at most about a minute on 2 cores: all but the Lucid filter
/// patterns (~6 minutes of gradient ascent, checked with `--ignored`).
fn quick(command: &[String]) -> bool {
    !(command[0] == "filters" && command.iter().any(|a| a == "lucid"))
}

/// Whether this machine's CPU kernels are those the committed figure of `sidecar` (a path
/// relative to the repository root) was made with: then it must come out byte for byte. Other
/// instruction sets round differently (AVX-512 products sum in another order than AVX2's).
fn same_kernels(sidecar: &Path) -> bool {
    let text = std::fs::read_to_string(repo(s(sidecar))).unwrap();
    let json: serde_json::Value = serde_json::from_str(&text).unwrap();
    let recorded = json["cpu_kernels"]
        .as_str()
        .expect("the sidecar records cpu_kernels");
    let here = convlens::ops::cpu_kernels();
    if recorded != here {
        println!(
            "{}: made with {recorded} CPU kernels, this machine's are {here}: compared within \
             the tolerance of other kernels",
            sidecar.display()
        );
    }
    recorded == here
}

/// Figures made with other CPU kernels than the committed ones: at most this share of the
/// pixels may differ ...
const OTHER_KERNELS_PIXELS: f64 = 0.01;
/// ... by at most this many levels of 255 in a channel. Measured between the AVX2 and AVX-512
/// builds: Grad-CAM's figure differed in 2 pixels by 4 levels (a colormap step at a rounding
/// boundary).
const OTHER_KERNELS_LEVELS: u8 = 8;

/// Asserts that `made` is within the tolerance of other kernels of the committed `figure`.
fn close_figure(made: &Path, figure: &Path) {
    let load = |p: &Path| convlens::data::decode::load_rgb(p).unwrap();
    let d = PixelDifference::between(&load(made), &load(&repo(s(figure)))).expect("same size");
    println!(
        "{}: {} of {} pixels differ, by at most {}",
        figure.display(),
        d.pixels,
        d.of,
        d.max
    );
    assert!(
        (d.pixels as f64) <= OTHER_KERNELS_PIXELS * d.of as f64 && d.max <= OTHER_KERNELS_LEVELS,
        "{} ({}) differs from the committed one in {} of {} pixels, by at most {}; {HOW}",
        figure.display(),
        made.display(),
        d.pixels,
        d.of,
        d.max
    );
}

/// A sidecar as JSON without what depends on the CPU kernels (the figure's hash, the kernels).
fn without_kernels(bytes: &[u8]) -> serde_json::Value {
    let mut json: serde_json::Value = serde_json::from_slice(bytes).unwrap();
    let map = json.as_object_mut().unwrap();
    map.remove("png_sha256");
    map.remove("cpu_kernels");
    json
}

/// Whether two JSON values are equal but for numbers, which may differ by 1e-4 relative (the
/// results a sidecar records, e.g. a probability, computed with other CPU kernels).
fn json_close(a: &serde_json::Value, b: &serde_json::Value) -> bool {
    use serde_json::Value;
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => {
            let (x, y) = (x.as_f64().unwrap(), y.as_f64().unwrap());
            (x - y).abs() <= 1e-4 * x.abs().max(y.abs())
        }
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(x, y)| json_close(x, y))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len()
                && x.iter()
                    .all(|(k, v)| y.get(k).is_some_and(|w| json_close(v, w)))
        }
        _ => a == b,
    }
}

const HOW: &str = "if the rendering changed on purpose, make the figures again with \
                   `sh assets/figures/regenerate.sh`, look at them and commit them";

/// Runs `command` in a scratch copy of the paths it reads (from the same relative places, so
/// the sidecar records the same paths) and compares the figure and its sidecar with the
/// committed files, byte for byte.
fn make_again(command: &[String]) {
    let dir = tempfile::tempdir().unwrap();
    let figure = figure_of(command);
    for arg in command {
        let input = repo(arg);
        if Path::new(arg).is_relative() && input.is_file() && Path::new(arg) != figure {
            let copy = dir.path().join(arg);
            std::fs::create_dir_all(copy.parent().unwrap()).unwrap();
            std::fs::copy(&input, &copy).unwrap();
        }
    }
    let args: Vec<&str> = command.iter().map(String::as_str).collect();
    let run = convlens(dir.path(), &args);
    assert_eq!(run.code, 0, "convlens {args:?}: {}", run.stderr);
    let sidecar = figure.with_extension("json");
    if !same_kernels(&sidecar) {
        close_figure(&dir.path().join(&figure), &figure);
        let made = std::fs::read(dir.path().join(&sidecar)).unwrap();
        let committed = std::fs::read(repo(s(&sidecar))).unwrap();
        let (made, committed) = (without_kernels(&made), without_kernels(&committed));
        assert!(
            json_close(&made, &committed),
            "{made} vs {committed}; {HOW}"
        );
        return;
    }
    for file in [&figure, &sidecar] {
        let made = std::fs::read(dir.path().join(file)).unwrap();
        let committed = std::fs::read(repo(s(file))).unwrap();
        if made != committed {
            let kept = std::env::temp_dir().join(file.file_name().unwrap());
            std::fs::write(&kept, &made).unwrap();
            panic!(
                "convlens {args:?} made a {} that differs from the committed one (kept in {}); \
                 {HOW}",
                file.display(),
                kept.display()
            );
        }
    }
}

/// `convlens reproduce` on the committed sidecar of `command`'s figure gives its exact bytes.
fn reproduce(command: &[String]) {
    let dir = tempfile::tempdir().unwrap();
    let figure = figure_of(command);
    let out = dir.path().join(figure.file_name().unwrap());
    let sidecar = figure.with_extension("json");
    let run = convlens(&repo(""), &["reproduce", s(&sidecar), "--out", s(&out)]);
    if !same_kernels(&sidecar) {
        assert!(
            run.code == 0 || run.stderr.contains("CPU kernels"),
            "{}",
            run.stderr
        );
        close_figure(&out, &figure);
        return;
    }
    assert_eq!(
        run.code,
        0,
        "reproduce {}: {}",
        sidecar.display(),
        run.stderr
    );
    assert!(run.stdout.contains("identical"), "{}", run.stdout);
    assert!(
        std::fs::read(&out).unwrap() == std::fs::read(repo(s(&figure))).unwrap(),
        "reproduce {} differs from {}; {HOW}",
        sidecar.display(),
        figure.display()
    );
}

#[test]
fn every_committed_figure_is_made_by_the_script() {
    let mut sidecars: Vec<PathBuf> = std::fs::read_dir(repo("assets/figures"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .map(|p| Path::new("assets/figures").join(p.file_name().unwrap()))
        .collect();
    sidecars.sort();
    let mut made: Vec<PathBuf> = script_commands()
        .iter()
        .map(|c| figure_of(c).with_extension("json"))
        .collect();
    made.sort();
    assert_eq!(made, sidecars);
    assert!(script_commands().iter().any(|c| quick(c)));
}

#[test]
fn the_quick_committed_figures_come_out_byte_for_byte() {
    for command in script_commands().iter().filter(|c| quick(c)) {
        make_again(command);
        reproduce(command);
    }
}

#[test]
#[ignore = "~6 minutes on 2 cores (Lucid gradient ascent): cargo test --release --test suite cli_reproduce -- --ignored"]
fn the_committed_lucid_filter_figure_comes_out_byte_for_byte() {
    for command in script_commands().iter().filter(|c| !quick(c)) {
        reproduce(command);
        make_again(command);
    }
}

#[test]
fn reproduce_refuses_an_image_that_changed_and_names_it() {
    let dir = tempfile::tempdir().unwrap();
    let image = dir.path().join("photo.png");
    std::fs::copy(repo("assets/images/chelsea.png"), &image).unwrap();
    let run = convlens(
        dir.path(),
        &["cam", "photo.png", "--out", "figs/photo-cam.png"],
    );
    assert_eq!(run.code, 0, "{}", run.stderr);
    let sidecar = dir.path().join("figs/photo-cam.json");
    // From another working directory: the image is found beside the sidecar's folder.
    let again = dir.path().join("again.png");
    let run = convlens(&repo(""), &["reproduce", s(&sidecar), "--out", s(&again)]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_eq!(
        std::fs::read(&again).unwrap(),
        std::fs::read(dir.path().join("figs/photo-cam.png")).unwrap()
    );
    std::fs::remove_file(&again).unwrap();

    std::fs::copy(repo("assets/images/coffee.png"), &image).unwrap();
    let run = convlens(&repo(""), &["reproduce", s(&sidecar), "--out", s(&again)]);
    assert_eq!(run.code, 1, "{}", run.stderr);
    assert!(
        run.stderr.contains("photo.png")
            && run
                .stderr
                .contains("differs from the one the figure was made from"),
        "{}",
        run.stderr
    );
    assert!(!again.exists(), "nothing is written after a refusal");
}

#[test]
fn reproduce_refuses_weights_that_changed_and_names_them() {
    let dir = tempfile::tempdir().unwrap();
    let models = dir.path().join("models");
    std::fs::create_dir(&models).unwrap();
    for name in [
        "efficientnet_lite0.json",
        "efficientnet_lite0.safetensors",
        "imagenet_classes.txt",
    ] {
        std::fs::copy(repo(&format!("models/{name}")), models.join(name)).unwrap();
    }
    let manifest = models.join("efficientnet_lite0.json");
    let figure = dir.path().join("stem.png");
    let run = convlens(
        &repo(""),
        &[
            "activations",
            "assets/images/chelsea.png",
            "--layer",
            "stem",
            "--model",
            s(&manifest),
            "--out",
            s(&figure),
        ],
    );
    assert_eq!(run.code, 0, "{}", run.stderr);
    let sidecar = dir.path().join("stem.json");
    let again = dir.path().join("again.png");
    let run = convlens(&repo(""), &["reproduce", s(&sidecar), "--out", s(&again)]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_eq!(
        std::fs::read(&again).unwrap(),
        std::fs::read(&figure).unwrap()
    );
    std::fs::remove_file(&again).unwrap();

    // One bit of the last weight (its lowest mantissa bit): the model still loads, but it is
    // not the model the figure was made with.
    let weights = models.join("efficientnet_lite0.safetensors");
    let mut bytes = std::fs::read(&weights).unwrap();
    let n = bytes.len();
    bytes[n - 4] ^= 1;
    std::fs::write(&weights, bytes).unwrap();
    let run = convlens(&repo(""), &["reproduce", s(&sidecar), "--out", s(&again)]);
    assert_eq!(run.code, 1, "{}", run.stderr);
    assert!(
        run.stderr.contains(s(&weights)) && run.stderr.contains("differ from the recorded"),
        "{}",
        run.stderr
    );
    assert!(!again.exists(), "nothing is written after a refusal");
}

#[test]
fn the_numbers_do_not_depend_on_the_thread_count() {
    // The tiles of the products are cut the same way whatever the thread count, so a batch
    // of two images and a CAM figure come out as the same bits on 1, 2 or 5 threads.
    let dir = tempfile::tempdir().unwrap();
    let runs: Vec<(String, Vec<u8>)> = ["1", "2", "5"]
        .iter()
        .map(|threads| {
            let env = [("RAYON_NUM_THREADS", *threads)];
            let predict = convlens_with(
                &repo(""),
                &[
                    "predict",
                    "assets/images/chelsea.png",
                    "assets/images/coffee.png",
                    "--json",
                ],
                &env,
            );
            assert_eq!(predict.code, 0, "{}", predict.stderr);
            let figure = dir.path().join(format!("cam-{threads}.png"));
            let cam = convlens_with(
                &repo(""),
                &["cam", "assets/images/chelsea.png", "--out", s(&figure)],
                &env,
            );
            assert_eq!(cam.code, 0, "{}", cam.stderr);
            (predict.stdout, std::fs::read(&figure).unwrap())
        })
        .collect();
    for (threads, run) in ["2", "5"].iter().zip(&runs[1..]) {
        assert!(
            run.0 == runs[0].0,
            "predict on {threads} threads differs from 1"
        );
        assert!(
            run.1 == runs[0].1,
            "the CAM figure on {threads} threads differs from 1"
        );
    }
}

#[test]
fn reproduce_says_how_many_pixels_differ_and_names_other_cpu_kernels() {
    let dir = tempfile::tempdir().unwrap();
    let figures = dir.path().join("figures");
    std::fs::create_dir_all(&figures).unwrap();
    let image = dir.path().join("images/chelsea.png");
    std::fs::create_dir_all(image.parent().unwrap()).unwrap();
    std::fs::copy(repo("assets/images/chelsea.png"), &image).unwrap();
    // The committed Grad-CAM figure with one pixel changed, recorded as made elsewhere.
    let mut png =
        convlens::data::decode::load_rgb(&repo("assets/figures/cam_chelsea_gradcam.png")).unwrap();
    png.get_pixel_mut(10, 20).0[1] ^= 0x40;
    png.save(figures.join("cam_chelsea_gradcam.png")).unwrap();
    let text = std::fs::read_to_string(repo("assets/figures/cam_chelsea_gradcam.json")).unwrap();
    let mut json: serde_json::Value = serde_json::from_str(&text).unwrap();
    json["cpu_kernels"] = "x86_64 imaginary-512".into();
    json["png_sha256"] = "0".repeat(64).into();
    let sidecar = figures.join("cam_chelsea_gradcam.json");
    std::fs::write(&sidecar, serde_json::to_string_pretty(&json).unwrap()).unwrap();

    let out = dir.path().join("again.png");
    let run = convlens(dir.path(), &["reproduce", s(&sidecar), "--out", s(&out)]);
    assert_eq!(run.code, 1, "{}", run.stderr);
    let (w, h) = png.dimensions();
    let expected = if same_kernels(Path::new("assets/figures/cam_chelsea_gradcam.json")) {
        format!("in 1 of {} pixels, by at most 64/255", w * h)
    } else {
        format!("of {} pixels", w * h)
    };
    assert!(run.stderr.contains(&expected), "{}", run.stderr);
    assert!(
        run.stderr.contains(&format!(
            "computed with x86_64 imaginary-512 CPU kernels, this machine's are {}",
            convlens::ops::cpu_kernels()
        )),
        "{}",
        run.stderr
    );

    // The recorded pixels under another hash: only the encoding differs.
    if same_kernels(Path::new("assets/figures/cam_chelsea_gradcam.json")) {
        std::fs::copy(
            repo("assets/figures/cam_chelsea_gradcam.png"),
            figures.join("cam_chelsea_gradcam.png"),
        )
        .unwrap();
        let run = convlens(dir.path(), &["reproduce", s(&sidecar), "--out", s(&out)]);
        assert_eq!(run.code, 1, "{}", run.stderr);
        assert!(
            run.stderr
                .contains("the recorded one's pixels but other bytes"),
            "{}",
            run.stderr
        );
    }
}
