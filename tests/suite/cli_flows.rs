//! The command line's training, `info --json`, activation and CAM flags, driven through the
//! built binary and checked against the library, the fixtures or the architecture's definition.
// Tests may panic on failure, print, and call the APIs the library bans (image::open on figures).
use crate::common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use candle_core::Device;
use common::{fixture, lite0, rel_to_max, repo, small_dataset};
use convlens::export::{self, ActivationsRequest, FigureRequest};
use convlens::viz::activations::{self, GridOptions};
use convlens::viz::cam::{self, CamMethod, CamOptions};
use convlens::viz::colormap::Colormap;
use serde_json::Value;

/// A finished run of the binary.
struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

/// Runs `convlens args` from the repository root with its workspace, cache and settings in
/// `home` (never the user's).
fn convlens(home: &Path, args: &[&str]) -> Run {
    let out: Output = Command::new(env!("CARGO_BIN_EXE_convlens"))
        .args(args)
        .current_dir(repo(""))
        .env("CONVLENS_DATA", home.join("data"))
        .env("CONVLENS_CACHE", home.join("cache"))
        .env("CONVLENS_CONFIG", home.join("config"))
        .output()
        .expect("the binary runs");
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// Like [`convlens`], but the run must succeed.
fn ok(home: &Path, args: &[&str]) -> Run {
    let run = convlens(home, args);
    assert_eq!(run.code, 0, "convlens {args:?}:\n{}", run.stderr);
    run
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn json_file(path: &Path) -> Value {
    serde_json::from_slice(&std::fs::read(path).unwrap())
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The files of a folder and all folders below it.
fn count_files(dir: &Path) -> usize {
    std::fs::read_dir(dir).map_or(0, |entries| {
        entries
            .map(|e| e.unwrap().path())
            .map(|p| if p.is_dir() { count_files(&p) } else { 1 })
            .sum()
    })
}

/// `(train, validation)` image counts from `train`'s summary line on stderr.
fn split_sizes(stderr: &str) -> (usize, usize) {
    let line = stderr
        .lines()
        .find(|l| l.contains(" training, "))
        .unwrap_or_else(|| panic!("no split line: {stderr}"));
    let numbers: Vec<usize> = line
        .split(|c: char| !c.is_ascii_digit())
        .filter_map(|w| w.parse().ok())
        .collect();
    // "4 classes (...); N training, M validation images"
    let n = numbers.len();
    (numbers[n - 2], numbers[n - 1])
}

/// The history of a trained model folder: `(val_loss, best)` per epoch.
fn history(model: &Path) -> (Value, Vec<(f64, bool)>) {
    let m = json_file(&model.join("model.json"));
    let h = m["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["val_loss"].as_f64().unwrap(),
                e["best"].as_bool().unwrap(),
            )
        })
        .collect();
    (m, h)
}

#[test]
fn extract_augment_caches_only_the_validation_features() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    small_dataset(&data, 3, 2);
    let cache = dir.path().join("features");
    let model = dir.path().join("aug");
    let run = ok(
        dir.path(),
        &[
            "train",
            s(&data),
            "--out",
            s(&model),
            "--mode",
            "extract-augment",
            "--augment",
            "flip",
            "--epochs",
            "2",
            "--cache",
            s(&cache),
        ],
    );
    // The base runs on the 8 validation images once (cached); the 12 training images go
    // through it augmented every epoch and are never cached.
    assert!(
        run.stdout
            .contains("8 images through the base, 0 from the cache"),
        "{}",
        run.stdout
    );
    assert_eq!(count_files(&cache), 8);
    let (m, h) = history(&model);
    assert_eq!(m["mode"], "ExtractAugment");
    assert_eq!(m["config"]["augment"]["flip"], true);
    assert_eq!(m["config"]["augment"]["rotation"], Value::Null);
    assert_eq!(h.len(), 2);
    // Plain extraction on the same cache: the validation features come from it, the training
    // ones are computed (extract-augment had not stored them).
    let run = ok(
        dir.path(),
        &[
            "train",
            s(&data),
            "--out",
            s(&dir.path().join("plain")),
            "--epochs",
            "1",
            "--cache",
            s(&cache),
        ],
    );
    assert!(
        run.stdout
            .contains("12 images through the base, 8 from the cache"),
        "{}",
        run.stdout
    );
    assert_eq!(count_files(&cache), 20);
}

#[test]
fn sgd_is_the_optimizer_that_trains() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    small_dataset(&data, 4, 3);
    let train = |name: &str, optimizer: &str| {
        let out = dir.path().join(name);
        ok(
            dir.path(),
            &[
                "train",
                s(&data),
                "--out",
                s(&out),
                "--optimizer",
                optimizer,
                "--lr",
                "0.02",
                "--epochs",
                "4",
                "--batch-size",
                "4",
            ],
        );
        history(&out)
    };
    let (sgd, sgd_history) = train("sgd", "SGD");
    assert_eq!(
        sgd["config"]["optimizer"],
        serde_json::json!({"Sgd": {"momentum": 0.9}})
    );
    assert_eq!(sgd_history.len(), 4);
    // It learns: the last epoch's validation loss is below the first's.
    assert!(
        sgd_history[3].0 < sgd_history[0].0,
        "validation loss did not fall: {sgd_history:?}"
    );
    // Same data, seed and learning rate with AdamW: another trajectory.
    let (adamw, adamw_history) = train("adamw", "adamw");
    assert_eq!(
        adamw["config"]["optimizer"],
        serde_json::json!({"AdamW": {"weight_decay": 0.01}})
    );
    assert_ne!(sgd_history[0].0, adamw_history[0].0);

    let run = convlens(dir.path(), &["train", s(&data), "--optimizer", "rmsprop"]);
    assert_eq!(run.code, 1);
    assert!(
        run.stderr
            .contains("unknown optimizer `rmsprop`; use adamw or sgd"),
        "{}",
        run.stderr
    );
}

#[test]
fn early_stopping_keeps_the_epoch_with_the_lowest_validation_loss() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    small_dataset(&data, 6, 6);
    let model = dir.path().join("model");
    // A high learning rate on 24 images overfits within a few epochs.
    let (limit, patience) = (40, 2);
    let run = ok(
        dir.path(),
        &[
            "train",
            s(&data),
            "--out",
            s(&model),
            "--epochs",
            &limit.to_string(),
            "--patience",
            &patience.to_string(),
            "--lr",
            "0.01",
        ],
    );
    let (m, h) = history(&model);
    assert!(h.len() < limit, "no early stop in {} epochs", h.len());
    assert!(
        run.stderr
            .contains("early stop: no better validation loss in 2 epochs"),
        "{}",
        run.stderr
    );
    let kept = h.iter().rposition(|&(_, best)| best).expect("a kept epoch");
    // It stopped exactly `patience` epochs after the kept one, none of them better.
    assert_eq!(h.len(), kept + 1 + patience, "{h:?}");
    let lowest = h.iter().map(|e| e.0).fold(f64::INFINITY, f64::min);
    assert_eq!(h[kept].0, lowest, "{h:?}");
    assert!(h[kept + 1..].iter().all(|e| e.0 > lowest && !e.1), "{h:?}");
    assert_eq!(m["best_val_loss"].as_f64().unwrap(), lowest);
}

#[test]
fn an_unsplit_folder_is_split_by_the_validation_fraction_per_class() {
    let dir = tempfile::tempdir().unwrap();
    let source = repo("assets/datasets/fashion-mini/train");
    let data = dir.path().join("flat");
    // Classes of 10, 7, 5 and 4 images: round(0.3 n) = 3, 2, 2 (1.5 rounds up), 1.
    let sizes = [
        ("ankle_boot", 10),
        ("bag", 7),
        ("sandal", 5),
        ("sneaker", 4),
    ];
    for (class, n) in sizes {
        let to = data.join(class);
        std::fs::create_dir_all(&to).unwrap();
        let mut files: Vec<PathBuf> = std::fs::read_dir(source.join(class))
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        files.sort();
        for f in &files[..n] {
            std::fs::copy(f, to.join(f.file_name().unwrap())).unwrap();
        }
    }
    let model = dir.path().join("model");
    let run = ok(
        dir.path(),
        &[
            "train",
            s(&data),
            "--out",
            s(&model),
            "--epochs",
            "1",
            "--validation-split",
            "0.3",
        ],
    );
    assert_eq!(split_sizes(&run.stderr), (18, 8), "{}", run.stderr);
    let m = json_file(&model.join("model.json"));
    assert!((m["config"]["validation_fraction"].as_f64().unwrap() - 0.3).abs() < 1e-6);
    let evaluation = json_file(&model.join("evaluation.json"));
    let support: Vec<u64> = evaluation["per_class"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["support"].as_u64().unwrap())
        .collect();
    assert_eq!(support, [3, 2, 2, 1]);

    // The default fraction 0.2: round(2.0, 1.4, 1.0, 0.8) = 2, 1, 1, 1.
    let run = ok(
        dir.path(),
        &[
            "train",
            s(&data),
            "--out",
            s(&dir.path().join("default")),
            "--epochs",
            "1",
        ],
    );
    assert_eq!(split_sizes(&run.stderr), (21, 5), "{}", run.stderr);
    let run = convlens(
        dir.path(),
        &["train", s(&data), "--validation-split", "1.5"],
    );
    assert_eq!(run.code, 1);
    assert!(run.stderr.contains("1.5"), "{}", run.stderr);
}

#[test]
fn info_json_describes_lite0_as_the_architecture_defines_it() {
    let dir = tempfile::tempdir().unwrap();
    let run = ok(dir.path(), &["info", "--json"]);
    let v: Value = serde_json::from_str(&run.stdout).expect("JSON on stdout");
    assert_eq!(v["name"], "efficientnet_lite0");
    assert_eq!(v["architecture"], "efficientnet_lite0");
    assert_eq!(v["num_classes"], 1000);
    assert_eq!(v["input_size"], 224);
    assert_eq!(v["default_cam_layer"], "head");
    let layers = v["layers"].as_array().unwrap();
    let ids: Vec<&str> = layers.iter().map(|l| l["id"].as_str().unwrap()).collect();
    let mut expected = vec!["stem".to_string()];
    expected.extend((0..16).map(|i| format!("blocks.{i}")));
    expected.extend(["head", "pooled", "logits"].map(String::from));
    assert_eq!(ids, expected);
    // EfficientNet-B0's (and Lite0's) stages: channels 16, 24, 40, 80, 112, 192, 320 repeated
    // 1, 2, 2, 3, 3, 4, 1 times, at strides 2 (stem), 1, 2, 2, 2, 1, 2, 1.
    let shape = |i: usize| -> Vec<u64> {
        layers[i]["output_shape"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| d.as_u64().unwrap())
            .collect()
    };
    assert_eq!(shape(0), [32, 112, 112]);
    let blocks: [(u64, u64); 16] = [
        (16, 112),
        (24, 56),
        (24, 56),
        (40, 28),
        (40, 28),
        (80, 14),
        (80, 14),
        (80, 14),
        (112, 14),
        (112, 14),
        (112, 14),
        (192, 7),
        (192, 7),
        (192, 7),
        (192, 7),
        (320, 7),
    ];
    for (i, (c, hw)) in blocks.iter().enumerate() {
        assert_eq!(shape(i + 1), [*c, *hw, *hw], "blocks.{i}");
    }
    assert_eq!(shape(17), [1280, 7, 7]);
    assert_eq!(shape(18), [1280]);
    assert_eq!(shape(19), [1000]);
    let params: u64 = layers.iter().map(|l| l["params"].as_u64().unwrap()).sum();
    assert_eq!(params, 4_652_008, "Lite0's published parameter count");
    // Exactly the library's table.
    let model = lite0();
    assert_eq!(
        v["layers"],
        serde_json::to_value(model.network.layers(224)).unwrap()
    );
}

/// Parses the `--profile` table: `(layer, blank %, mean, active %)` per line.
fn profile_rows(stdout: &str) -> Vec<(String, f64, f64, f64)> {
    let start = stdout
        .lines()
        .position(|l| l.starts_with("layer ") && l.contains("blank"))
        .unwrap_or_else(|| panic!("no profile table: {stdout}"));
    stdout
        .lines()
        .skip(start + 1)
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            let num = |t: &str| t.trim_end_matches('%').parse::<f64>().unwrap();
            (f[0].to_string(), num(f[1]), num(f[2]), num(f[3]))
        })
        .collect()
}

#[test]
fn activations_profile_and_cols_match_the_library() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("act.png");
    let run = ok(
        dir.path(),
        &[
            "activations",
            "assets/images/coffee.png",
            "--layer",
            "blocks.0",
            "--cols",
            "4",
            "--profile",
            "--out",
            s(&out),
        ],
    );
    let model = lite0();
    let image = repo("assets/images/coffee.png");
    let input = model.spec.preprocess.load(&image, &Device::Cpu).unwrap();
    let expected = activations::sparsity_profile(&model.network, &input).unwrap();
    let rows = profile_rows(&run.stdout);
    assert_eq!(rows.len(), expected.len(), "{}", run.stdout);
    assert_eq!(rows[0].0, "stem");
    for (row, e) in rows.iter().zip(&expected) {
        assert_eq!(row.0, e.layer);
        assert!(
            (row.1 - 100.0 * f64::from(e.blank_fraction)).abs() <= 0.051,
            "{row:?}"
        );
        assert!((row.2 - f64::from(e.mean)).abs() <= 5e-5, "{row:?}");
        assert!(
            (row.3 - 100.0 * f64::from(e.active_fraction)).abs() <= 0.051,
            "{row:?}"
        );
    }
    // --cols 4: the sidecar says so, and the PNG is the library's figure of 4 columns, pixel
    // for pixel (16 channels: 4 rows of 4, taller than wide).
    let sidecar = json_file(&dir.path().join("act.json"));
    assert_eq!(sidecar["cols"], 4);
    let request = FigureRequest::Activations(ActivationsRequest {
        image: image.clone(),
        layer: "blocks.0".into(),
        grid: GridOptions {
            cols: 4,
            gutter: 1,
            colormap: Colormap::Viridis,
            shared_scale: false,
        },
    });
    let rendered = export::render(&model, &request, 1, &mut |_, _| true).unwrap();
    assert_eq!(
        std::fs::read(&out).unwrap(),
        export::png_bytes(&rendered.image).unwrap()
    );
    let wide = dir.path().join("wide.png");
    ok(
        dir.path(),
        &[
            "activations",
            "assets/images/coffee.png",
            "--layer",
            "blocks.0",
            "--cols",
            "16",
            "--out",
            s(&wide),
        ],
    );
    let (narrow, wide) = (image::open(&out).unwrap(), image::open(&wide).unwrap());
    assert!(narrow.height() > wide.height() && narrow.width() < wide.width());
}

#[test]
fn activations_of_a_folder_give_one_figure_per_image_and_an_index() {
    let dir = tempfile::tempdir().unwrap();
    let images = dir.path().join("images");
    std::fs::create_dir(&images).unwrap();
    for (from, to) in [
        ("chelsea.png", "b.png"),
        ("coffee.png", "a.png"),
        ("rocket.jpg", "a.jpg"),
    ] {
        std::fs::copy(repo(&format!("assets/images/{from}")), images.join(to)).unwrap();
    }
    std::fs::write(images.join("readme.txt"), "not an image").unwrap();
    let out = dir.path().join("figs");
    ok(
        dir.path(),
        &[
            "activations",
            s(&images),
            "--layer",
            "stem",
            "--out",
            s(&out),
        ],
    );
    // Sorted by name; `a.jpg` and `a.png` share a stem and keep their extensions apart.
    let index = json_file(&out.join("index.json"));
    let rows = index.as_array().unwrap();
    let names: Vec<(&str, &str)> = rows
        .iter()
        .map(|r| {
            (
                Path::new(r["image"].as_str().unwrap())
                    .file_name()
                    .unwrap()
                    .to_str()
                    .unwrap(),
                Path::new(r["figure"].as_str().unwrap())
                    .file_name()
                    .unwrap()
                    .to_str()
                    .unwrap(),
            )
        })
        .collect();
    assert_eq!(
        names,
        [
            ("a.jpg", "a_jpg.png"),
            ("a.png", "a_png.png"),
            ("b.png", "b.png")
        ]
    );
    // Each figure is the one `activations IMAGE` makes, and the index holds its numbers.
    let model = lite0();
    for row in rows {
        let image = PathBuf::from(row["image"].as_str().unwrap());
        let acts = activations::layer_activations(
            &model.network,
            &model.spec.preprocess.load(&image, &Device::Cpu).unwrap(),
            "stem",
        )
        .unwrap();
        let sparsity = acts.sparsity();
        assert_eq!(row["result"]["channels"], 32);
        assert_eq!(row["result"]["height"], 112);
        assert_eq!(
            row["result"]["mean"].as_f64(),
            Some(f64::from(sparsity.mean))
        );
        let sidecar = json_file(Path::new(row["sidecar"].as_str().unwrap()));
        assert_eq!(sidecar["image"], row["image"]);
        assert_eq!(sidecar["layer"], "stem");
        assert!(Path::new(row["figure"].as_str().unwrap()).is_file());
    }
    let csv = std::fs::read_to_string(out.join("index.csv")).unwrap();
    let lines: Vec<&str> = csv.lines().collect();
    assert_eq!(
        lines[0],
        "image,figure,channels,blank_fraction,mean,active_fraction,error"
    );
    assert_eq!(lines.len(), 4, "{csv}");
    assert!(
        lines[1].contains("a.jpg") && lines[1].contains(",32,"),
        "{csv}"
    );
}

/// `cam IMAGE --method M --json`'s low-resolution map, row-major.
fn cli_lowres(home: &Path, image: &str, method: &str, layer: &str) -> (Value, Vec<f32>) {
    let out = home.join(format!("{method}.png"));
    let run = ok(
        home,
        &[
            "cam",
            image,
            "--method",
            method,
            "--layer",
            layer,
            "--json",
            "--out",
            s(&out),
        ],
    );
    let v: Value = serde_json::from_str(&run.stdout).expect("JSON on stdout");
    let lowres = lowres_of(&v);
    (v, lowres)
}

/// The `lowres` rows of `cam --json`, row-major.
fn lowres_of(v: &Value) -> Vec<f32> {
    v["lowres"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|row| row.as_array().unwrap().clone())
        .map(|x| x.as_f64().unwrap() as f32)
        .collect()
}

#[test]
fn layer_cam_and_eigen_cam_from_the_cli_match_pytorch_grad_cam() {
    let dir = tempfile::tempdir().unwrap();
    for (name, image, class) in [
        ("lite0_chelsea", "assets/images/chelsea.png", 285),
        ("lite0_coffee", "assets/images/coffee.png", 967),
    ] {
        let fx = fixture(name);
        for (method, key) in [("layercam", "lib.layercam"), ("eigencam", "lib.eigencam")] {
            let (v, lowres) = cli_lowres(dir.path(), image, method, "head");
            assert_eq!(v["method"], method);
            assert_eq!(v["class"], class);
            let ours = candle_core::Tensor::from_vec(lowres, (7, 7), &Device::Cpu).unwrap();
            let err = rel_to_max(&ours, &fx[&format!("{key}.lowres")]);
            assert!(err <= 1e-4, "{name} {method}: lowres off by {err:e}");
        }
    }
}

#[test]
fn score_cam_from_the_cli_is_the_librarys() {
    // At blocks.0 (16 channels: 16 masked forwards); the library's Score-CAM is checked
    // against pytorch-grad-cam at the head in tests/cam_parity.rs.
    let dir = tempfile::tempdir().unwrap();
    let (v, lowres) = cli_lowres(
        dir.path(),
        "assets/images/coffee.png",
        "scorecam",
        "blocks.0",
    );
    assert_eq!(v["method"], "scorecam");
    assert_eq!(v["layer"], "blocks.0");
    let model = lite0();
    let input = model
        .spec
        .preprocess
        .load(&repo("assets/images/coffee.png"), &Device::Cpu)
        .unwrap();
    let expected = cam::compute(
        &model.network,
        &input,
        &CamOptions::new(CamMethod::ScoreCam, "blocks.0"),
    )
    .unwrap();
    assert_eq!(v["class"], expected.class);
    assert_eq!(expected.lowres_size, (112, 112));
    assert_eq!(lowres, expected.lowres);
    assert!(lowres.iter().any(|&x| x > 0.0));
}

#[test]
fn prob_score_from_the_cli_matches_pytorch_grad_cam() {
    // The random ResNet-18 on chelsea.png (the input of resnet18_ref), a softmax target.
    let dir = tempfile::tempdir().unwrap();
    let fx = fixture("cam_prob_resnet18");
    let model = "tests/fixtures/resnet18_random_fp16.safetensors";
    for (flag, key) in [(true, "gradcam.lowres"), (false, "gradcam_logit.lowres")] {
        let out = dir.path().join(format!("prob-{flag}.png"));
        let mut args = vec![
            "cam",
            "assets/images/chelsea.png",
            "--model",
            model,
            "--layer",
            "layer4",
            "--json",
            "--out",
            s(&out),
        ];
        if flag {
            args.push("--prob-score");
        }
        let run = ok(dir.path(), &args);
        let v: Value = serde_json::from_str(&run.stdout).expect("JSON on stdout");
        let class = fx["class"].to_vec1::<f32>().unwrap()[0];
        assert_eq!(v["class"].as_f64(), Some(f64::from(class)));
        let prob = fx["prob"].to_vec1::<f32>().unwrap()[0];
        assert!((v["prob"].as_f64().unwrap() - f64::from(prob)).abs() <= 1e-5);
        let ours = candle_core::Tensor::from_vec(lowres_of(&v), (7, 7), &Device::Cpu).unwrap();
        let err = rel_to_max(&ours, &fx[key]);
        assert!(err <= 1e-4, "--prob-score {flag}: lowres off by {err:e}");
        let sidecar = json_file(&out.with_extension("json"));
        assert_eq!(sidecar["score"], if flag { "Probability" } else { "Logit" });
    }
}
