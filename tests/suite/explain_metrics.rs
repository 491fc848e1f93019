//! The faithfulness metrics (src/viz/faithfulness) against pytorch-grad-cam 1.5.7's ROAD and
//! confidence-change classes and RISE's deletion / insertion (tests/fixtures/make/
//! fx_explain_metrics.py), the sanity check (src/viz/sanity.rs) on Lite0, and the
//! `faithfulness` and `sanity` commands.
use crate::common;

use candle_core::{Device, Tensor};
use common::{convlens, fixture, lite0, load_lite0, repo, text};
use convlens::cancel::CancelToken;
use convlens::viz::cam::{self, CamMethod, CamOptions, CamScore};
use convlens::viz::faithfulness::{self, FaithOptions, Metric, Scores, random_map};
use convlens::viz::sanity;

/// `max|a - b| <= 1e-4 * max|ref|` (plus 1e-7 absolute for all-zero references).
fn close(name: &str, actual: &[f32], reference: &Tensor) {
    close_at_scale(name, actual, reference, 0.0);
}

/// [`close`] with the scale `max(max|ref|, scale)`: for a value computed as a difference of
/// larger terms, whose rounding error is relative to those terms, not to the difference.
fn close_at_scale(name: &str, actual: &[f32], reference: &Tensor, scale: f32) {
    let r = reference.flatten_all().unwrap().to_vec1::<f32>().unwrap();
    assert_eq!(actual.len(), r.len(), "{name}: length");
    let max_ref = r.iter().fold(scale, |m, v| m.max(v.abs()));
    let diff = actual
        .iter()
        .zip(&r)
        .fold(0f32, |m, (a, b)| m.max((a - b).abs()));
    println!("{name}: max diff {diff:.2e} (max |ref| {max_ref:.3e})");
    assert!(
        diff <= 1e-4 * max_ref + 1e-7,
        "{name}: {actual:?} vs {r:?} (diff {diff:e})"
    );
}

/// Every stored metric of `prefix` (`map` or `random`) against `s`.
fn check_scores(
    fx: &std::collections::HashMap<String, Tensor>,
    who: &str,
    prefix: &str,
    s: &Scores,
) {
    let get = |k: &str| &fx[&format!("{prefix}.{k}")];
    let one = |m: Metric| vec![s.metric(m)];
    close(
        &format!("{who} {prefix} road_morf"),
        &s.road_morf,
        get("road_morf"),
    );
    close(
        &format!("{who} {prefix} road_lerf"),
        &s.road_lerf,
        get("road_lerf"),
    );
    close(
        &format!("{who} {prefix} road_morf_avg"),
        &one(Metric::RoadMorf),
        get("road_morf_avg"),
    );
    close(
        &format!("{who} {prefix} road_lerf_avg"),
        &one(Metric::RoadLerf),
        get("road_lerf_avg"),
    );
    // ROAD's combined score is half the difference of the LeRF and MoRF averages (-0.447 and
    // -0.459 for the random ResNet-18's map, giving 5.9e-3): its error is that of the terms.
    let term = |k: &str| get(k).to_vec1::<f32>().unwrap()[0].abs();
    close_at_scale(
        &format!("{who} {prefix} road_combined"),
        &one(Metric::RoadCombined),
        get("road_combined"),
        term("road_morf_avg").max(term("road_lerf_avg")),
    );
    close(
        &format!("{who} {prefix} confidence_change"),
        &[s.confidence_change],
        get("confidence_change"),
    );
    close(
        &format!("{who} {prefix} drop"),
        &one(Metric::DropInConfidence),
        get("drop"),
    );
    close(
        &format!("{who} {prefix} increase"),
        &one(Metric::IncreaseInConfidence),
        get("increase"),
    );
    close(
        &format!("{who} {prefix} deletion"),
        &s.deletion,
        get("deletion"),
    );
    close(
        &format!("{who} {prefix} insertion"),
        &s.insertion,
        get("insertion"),
    );
    close(
        &format!("{who} {prefix} deletion_auc"),
        &one(Metric::DeletionAuc),
        get("deletion_auc"),
    );
    close(
        &format!("{who} {prefix} insertion_auc"),
        &one(Metric::InsertionAuc),
        get("insertion_auc"),
    );
}

/// The metrics of the fixture's map and of the random baseline, against the references.
fn parity(
    who: &str,
    net: &convlens::graph::Network,
    input: &Tensor,
    fixture_name: &str,
    score: CamScore,
) {
    let fx = fixture(fixture_name);
    let map = fx["map"].flatten_all().unwrap().to_vec1::<f32>().unwrap();
    let class = fx["class"].to_vec1::<f32>().unwrap()[0] as usize;
    let opts = FaithOptions {
        score,
        ..FaithOptions::default()
    };
    let out = faithfulness::evaluate_with_baseline(
        net,
        input,
        &map,
        class,
        &opts,
        &CancelToken::new(),
        &mut |_, _| {},
    )
    .unwrap();
    close(&format!("{who} score"), &[out.score], &fx["score"]);
    check_scores(&fx, who, "map", &out.map);
    check_scores(&fx, who, "random", &out.random);
    // The map beats the random one where a faithful map must (Grad-CAM of a trained model).
    if who == "lite0" {
        assert!(out.map.metric(Metric::RoadMorf) < out.random.metric(Metric::RoadMorf));
        assert!(out.map.metric(Metric::InsertionAuc) > out.random.metric(Metric::InsertionAuc));
    }
}

#[test]
fn lite0_metrics_match_pytorch_grad_cam() {
    let model = lite0();
    let input = &fixture("lite0_chelsea")["input"];
    parity(
        "lite0",
        &model.network,
        input,
        "explain_metrics_lite0",
        CamScore::Probability,
    );
}

#[test]
fn resnet18_metrics_match_pytorch_grad_cam() {
    let spec = convlens::zoo::resolve(
        repo("tests/fixtures/resnet18_random_fp16.safetensors")
            .to_str()
            .unwrap(),
    )
    .unwrap();
    let model = spec.load(&Device::Cpu).unwrap();
    let input = &fixture("resnet18_ref")["input"];
    parity(
        "resnet18",
        &model.network,
        input,
        "explain_metrics_resnet18",
        CamScore::Logit,
    );
}

#[test]
fn spearman_and_ssim_match_scipy_and_scikit_image() {
    let fx = fixture("explain_metrics_lite0");
    let map = fx["map"].flatten_all().unwrap().to_vec1::<f32>().unwrap();
    let (h, w) = (224, 224);
    let rnd = random_map(0, (h, w));
    let coarse: Vec<f32> = map
        .iter()
        .map(|v| (v * 10.0).round_ties_even() / 10.0)
        .collect();
    let spearman = [
        sanity::spearman(&map, &rnd),
        sanity::spearman(&map, &coarse),
    ];
    let ssim = [
        sanity::ssim(&map, &rnd, (h, w)),
        sanity::ssim(&map, &coarse, (h, w)),
    ];
    close("spearman", &spearman, &fx["sanity.spearman"]);
    close("ssim", &ssim, &fx["sanity.ssim"]);
}

/// Adebayo et al.'s finding for Grad-CAM: randomising the top of the network changes the map.
#[test]
fn grad_cam_changes_when_lite0_is_randomised() {
    let mut model = load_lite0();
    let input = fixture("lite0_chelsea")["input"].clone();
    let opts = CamOptions {
        class: Some(285),
        ..CamOptions::new(CamMethod::GradCam, "head")
    };
    let stages = sanity::cascade_stages(&mut model.network);
    assert_eq!(stages.first().map(String::as_str), Some("logits"));
    assert_eq!(stages.last().map(String::as_str), Some("stem"));
    let result = sanity::cascade(
        &mut model.network,
        (224, 224),
        0,
        &mut |net| Ok(cam::compute(net, &input, &opts)?.map),
        &mut |_, _| true,
    )
    .unwrap();
    for s in &result.steps {
        println!(
            "{:<10} spearman {:>8.4} ssim {:>8.4}",
            s.stage, s.spearman, s.ssim
        );
    }
    assert_eq!(result.steps.len(), stages.len());
    // Randomising the classifier and the head already moves the map (measured 0.81), and the
    // top of the network down to blocks.4 leaves little of it (measured 0.12 at blocks.4).
    let top = &result.steps[1];
    assert_eq!(top.stage, "head");
    assert!(
        top.spearman < 0.9,
        "Spearman after logits and head: {}",
        top.spearman
    );
    let upper = result
        .steps
        .iter()
        .take_while(|s| s.stage != "blocks.3")
        .map(|s| s.spearman)
        .fold(f32::INFINITY, f32::min);
    assert!(upper < 0.5, "lowest Spearman down to blocks.4: {upper}");
    assert!(!result.flagged);
}

/// Cancel reaches the random-map baseline's ROAD imputations while its one batch is being
/// made (every perturbed image of the map fits `batch` 256): at 448 px the call ends within
/// 5 s of a cancel given after 1 s, no image scored, where the batch (18 conjugate-gradient
/// solves over up to 180,000 pixels, then 84 forwards) runs far longer (a 224-pixel map's
/// perturbed images take ~9 CPU-seconds, the solves growing faster than the pixel count).
#[test]
fn cancel_stops_the_random_map_baseline_inside_its_road_solves() {
    let model = lite0();
    let input = &fixture("lite0_chelsea")["input"]
        .upsample_nearest2d(448, 448)
        .unwrap();
    let opts = FaithOptions {
        batch: 256,
        ..FaithOptions::default()
    };
    let cancel = CancelToken::new();
    let mut scored = 0;
    let (result, after_cancel) = std::thread::scope(|s| {
        let stopper = cancel.clone();
        let cancelled_at = s.spawn(move || {
            std::thread::sleep(std::time::Duration::from_secs(1));
            stopper.cancel();
            std::time::Instant::now()
        });
        let result =
            faithfulness::baseline(&model.network, input, 0, &opts, &cancel, &mut |d, _| {
                scored = d
            });
        let ended = std::time::Instant::now();
        (result, ended - cancelled_at.join().unwrap())
    });
    assert!(
        matches!(result, Err(convlens::Error::Cancelled)),
        "{:?}",
        result.map(|s| s.road_morf)
    );
    assert_eq!(scored, 0, "no batch was scored");
    assert!(
        after_cancel < std::time::Duration::from_secs(5),
        "the baseline ran on for {after_cancel:?} after Cancel"
    );
}

#[test]
fn a_map_of_the_wrong_size_is_refused() {
    let model = lite0();
    let input = &fixture("lite0_chelsea")["input"];
    let err = faithfulness::evaluate(
        &model.network,
        input,
        &[0.5; 10],
        0,
        &FaithOptions::default(),
        &CancelToken::new(),
        &mut |_, _| {},
    )
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("10 values") && err.contains("224x224"),
        "{err}"
    );
}

/// Integrated Gradients' default baseline is a black image in the model's input normalisation:
/// the faithfulness command must hand the model's normalisation to the map (it did not, and
/// every run with the default methods failed with "the black baseline needs the model's input
/// normalisation").
#[test]
fn faithfulness_of_integrated_gradients_makes_its_black_baseline() {
    let run = convlens(&[
        "faithfulness",
        repo("assets/images/chelsea.png").to_str().unwrap(),
        "--methods",
        "integrated-gradients",
        "--percentiles",
        "50",
        "--steps",
        "4",
        "--json",
    ]);
    let (stdout, stderr) = (text(&run.stdout), text(&run.stderr));
    assert!(run.status.success(), "{stdout}\n{stderr}");
    let rows: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    let row = &rows[0];
    assert_eq!(row["method"], "integrated-gradients", "{stdout}");
    let map = row["map"].as_object().expect("the map's scores");
    assert!(!map.is_empty(), "{stdout}");
    for (name, v) in map {
        if let Some(x) = v.as_f64() {
            assert!(x.is_finite(), "{name} = {x}");
        }
    }
}

#[test]
fn faithfulness_report_of_a_folder() {
    let tmp = tempfile::tempdir().unwrap();
    // A labelled folder without split folders: every image, each for its predicted class
    // (Lite0 does not know the classes bag and sneaker).
    let data = tmp.path().join("data");
    for class in ["bag", "sneaker"] {
        let to = data.join(class);
        std::fs::create_dir_all(&to).unwrap();
        let from = repo(&format!("assets/datasets/fashion-mini/test/{class}"));
        let mut files: Vec<_> = std::fs::read_dir(&from)
            .unwrap()
            .flatten()
            .map(|e| e.path())
            .collect();
        files.sort();
        for f in &files[..3] {
            std::fs::copy(f, to.join(f.file_name().unwrap())).unwrap();
        }
    }
    let out = tmp.path().join("report");
    let args = [
        "faithfulness",
        data.to_str().unwrap(),
        "--methods",
        "gradcam,eigencam",
        "--percentiles",
        "50",
        "--steps",
        "4",
        "--out",
        out.to_str().unwrap(),
    ];
    let run = convlens(&args);
    let (stdout, stderr) = (text(&run.stdout), text(&run.stderr));
    assert!(run.status.success(), "{stdout}\n{stderr}");
    assert!(stderr.contains("predicted class"), "{stderr}");
    let csv = std::fs::read_to_string(out.join("faithfulness.csv")).unwrap();
    let lines: Vec<&str> = csv.lines().collect();
    assert_eq!(lines.len(), 1 + 6 * 2, "{csv}");
    assert!(
        lines[0].starts_with("image,method,class") && lines[0].contains("random_insertion_auc")
    );
    assert!(lines[1].contains(",gradcam,") && lines[2].contains(",eigencam,"));
    for f in ["summary.png", "summary.json", "faithfulness.json"] {
        assert!(out.join(f).is_file(), "{f}");
    }
    let sidecar: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("summary.json")).unwrap()).unwrap();
    assert_eq!(sidecar["kind"], "faithfulness-summary");
    assert_eq!(sidecar["images"], 6);
    // Never over an earlier report.
    let again = convlens(&args);
    assert!(!again.status.success());
    assert!(
        text(&again.stderr).contains("not empty"),
        "{}",
        text(&again.stderr)
    );
}

#[test]
fn sanity_command_writes_a_flag_free_figure_for_grad_cam() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("sanity.png");
    let run = convlens(&[
        "sanity",
        repo("assets/images/chelsea.png").to_str().unwrap(),
        "--method",
        "gradcam",
        "--out",
        out.to_str().unwrap(),
    ]);
    let stdout = text(&run.stdout);
    assert!(run.status.success(), "{stdout}\n{}", text(&run.stderr));
    assert!(
        stdout.contains("logits") && stdout.contains("changes"),
        "{stdout}"
    );
    let sidecar: serde_json::Value =
        serde_json::from_slice(&std::fs::read(tmp.path().join("sanity.json")).unwrap()).unwrap();
    assert_eq!(sidecar["kind"], "sanity");
    assert_eq!(sidecar["flagged"], false);
    assert!(sidecar["steps"][0]["spearman"].as_f64().unwrap() < 1.0);
    assert!(
        image::ImageReader::open(&out)
            .unwrap()
            .decode()
            .unwrap()
            .width()
            > 600
    );
}
