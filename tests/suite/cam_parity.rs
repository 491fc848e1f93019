//! The CAM family against pytorch-grad-cam 1.5.7 (tests/fixtures, see its README).
use crate::common;

use candle_core::{Device, Tensor};
use common::{fixture, lite0, rel_to_max, repo};
use convlens::viz::cam::{self, CamMethod, CamOptions, CamScore};

fn tensor(v: &[f32], dims: &[usize]) -> Tensor {
    Tensor::from_vec(v.to_vec(), dims, &Device::Cpu).unwrap()
}

fn max_abs_diff(a: &[f32], b: &Tensor) -> f32 {
    let b = b.flatten_all().unwrap().to_vec1::<f32>().unwrap();
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(&b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

fn check(name: &str, method: CamMethod, lib_key: &str) {
    let model = lite0();
    let fx = fixture(name);
    let out = cam::compute(
        &model.network,
        &fx["input"],
        &CamOptions::new(method, "head"),
    )
    .unwrap();
    let lowres_err = rel_to_max(
        &tensor(&out.lowres, &[7, 7]),
        &fx[&format!("{lib_key}.lowres")],
    );
    let map_err = max_abs_diff(&out.map, &fx[lib_key]);
    println!("{name} {method}: lowres rel-to-max {lowres_err:.2e}, map max abs {map_err:.2e}");
    assert!(
        lowres_err <= 1e-4,
        "{name} {method}: lowres off by {lowres_err:e}"
    );
    assert!(
        map_err <= 1e-4,
        "{name} {method}: 224x224 map off by {map_err:e}"
    );
    assert_eq!(out.size, (224, 224));
}

#[test]
fn grad_cam_intermediates_match() {
    let model = lite0();
    for name in ["lite0_chelsea", "lite0_coffee"] {
        let fx = fixture(name);
        let out = cam::compute(
            &model.network,
            &fx["input"],
            &CamOptions::new(CamMethod::GradCam, "head"),
        )
        .unwrap();
        let top1: usize = if name == "lite0_chelsea" { 285 } else { 967 };
        assert_eq!(out.class, top1);
        assert_eq!(out.layer, "head");
        let raw = tensor(&out.lowres, &[7, 7]);
        assert!(rel_to_max(&raw, &fx["gradcam.raw"]) <= 1e-4);
        let max = out.lowres.iter().copied().fold(0.0, f32::max);
        let norm: Vec<f32> = out.lowres.iter().map(|v| v / max).collect();
        assert!(max_abs_diff(&norm, &fx["gradcam.norm"]) <= 1e-4);
    }
}

#[test]
fn gradients_at_the_head_match_pytorch() {
    // The gradient flows through frozen weights: d logit[top1] / d head.
    let model = lite0();
    let fx = fixture("lite0_chelsea");
    let head = model
        .network
        .forward_range(None, "head", &fx["input"], false)
        .unwrap();
    let var = candle_core::Var::from_tensor(&head).unwrap();
    let logits = model
        .network
        .forward_range(Some("head"), "logits", &var, false)
        .unwrap();
    let grads = logits.get(0).unwrap().get(285).unwrap().backward().unwrap();
    let g = grads.get(&var).unwrap();
    assert!(rel_to_max(g, &fx["gradcam.grads"]) <= 1e-4);
    let weights = g.mean((2, 3)).unwrap().squeeze(0).unwrap();
    assert!(rel_to_max(&weights, &fx["gradcam.weights"]) <= 1e-4);
}

#[test]
fn grad_cam_matches_the_library() {
    check("lite0_chelsea", CamMethod::GradCam, "lib.gradcam");
    check("lite0_coffee", CamMethod::GradCam, "lib.gradcam");
}

#[test]
fn grad_cam_plus_plus_matches_the_library() {
    check("lite0_chelsea", CamMethod::GradCamPlusPlus, "lib.gradcampp");
    check("lite0_coffee", CamMethod::GradCamPlusPlus, "lib.gradcampp");
}

#[test]
fn layer_cam_matches_the_library() {
    check("lite0_chelsea", CamMethod::LayerCam, "lib.layercam");
    check("lite0_coffee", CamMethod::LayerCam, "lib.layercam");
}

#[test]
fn eigen_cam_matches_the_library() {
    check("lite0_chelsea", CamMethod::EigenCam, "lib.eigencam");
    check("lite0_coffee", CamMethod::EigenCam, "lib.eigencam");
    let model = lite0();
    let fx = fixture("lite0_chelsea");
    let out = cam::compute(
        &model.network,
        &fx["input"],
        &CamOptions::new(CamMethod::EigenCam, "head"),
    )
    .unwrap();
    // lowres is after ReLU; the signed projection's positive part must agree.
    let projection = fx["eigencam.projection"].relu().unwrap();
    assert!(rel_to_max(&tensor(&out.lowres, &[7, 7]), &projection) <= 1e-4);
}

/// 535 masked forwards of Lite0 (one per distinct mask of the 1,280 channels, batches of 16):
/// the slowest test, one image only.
#[test]
fn score_cam_matches_the_library() {
    check("lite0_chelsea", CamMethod::ScoreCam, "lib.scorecam");
}

/// Score-CAM runs one forward per distinct masked input (constant channels share the all-zero
/// mask): its map must be the plain method's, one masked forward per channel. At 64 px Lite0's
/// `head` is 2x2 and most of its channels are constant, so both are quick.
#[test]
fn score_cam_sharing_forwards_is_the_plain_method() {
    use convlens::viz::resize::{Corners, bilinear};
    let model = lite0();
    let net = &model.network;
    let x = fixture("lite0_chelsea")["input"]
        .interpolate2d(64, 64)
        .unwrap();
    let out = cam::compute(net, &x, &CamOptions::new(CamMethod::ScoreCam, "head")).unwrap();
    let act = net.forward_range(None, "head", &x, false).unwrap();
    let maps = act
        .squeeze(0)
        .unwrap()
        .flatten_from(1)
        .unwrap()
        .to_vec2::<f32>()
        .unwrap();
    let constant = maps.iter().filter(|m| m.iter().all(|&v| v == m[0])).count();
    assert!(
        constant > 100,
        "only {constant} constant channels: the test needs them"
    );
    let input = x.flatten_all().unwrap().to_vec1::<f32>().unwrap();
    let mut scores = Vec::new();
    for chunk in maps.chunks(16) {
        let mut masked = Vec::new();
        for map in chunk {
            let up = bilinear(map, (2, 2), (64, 64), Corners::Aligned);
            let min = up.iter().copied().fold(f32::INFINITY, f32::min);
            let max = up.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            let mask: Vec<f32> = up.iter().map(|v| (v - min) / (max - min + 1e-8)).collect();
            for plane in input.chunks(64 * 64) {
                masked.extend(plane.iter().zip(&mask).map(|(x, m)| m * x));
            }
        }
        let batch = Tensor::from_vec(masked, (chunk.len(), 3, 64, 64), &Device::Cpu).unwrap();
        let logits = net.forward(&batch).unwrap().to_vec2::<f32>().unwrap();
        scores.extend(logits.iter().map(|l| l[out.class]));
    }
    let top = scores.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let exp: Vec<f32> = scores.iter().map(|s| (s - top).exp()).collect();
    let total: f32 = exp.iter().sum();
    let lowres: Vec<f32> = (0..4)
        .map(|p| {
            let v: f32 = maps.iter().zip(&exp).map(|(m, e)| e / total * m[p]).sum();
            v.max(0.0)
        })
        .collect();
    let err = rel_to_max(&tensor(&out.lowres, &[2, 2]), &tensor(&lowres, &[2, 2]));
    assert!(
        err <= 1e-5,
        "shared forwards off by {err:e}: {:?} vs {lowres:?}",
        out.lowres
    );
}

#[test]
fn bad_requests_are_clear_errors() {
    let model = lite0();
    let fx = fixture("lite0_chelsea");
    let mut opts = CamOptions::new(CamMethod::GradCam, "blocks.99");
    let err = cam::compute(&model.network, &fx["input"], &opts)
        .unwrap_err()
        .to_string();
    assert!(err.contains("blocks.99"), "{err}");
    opts.layer = "pooled".into();
    let err = cam::compute(&model.network, &fx["input"], &opts)
        .unwrap_err()
        .to_string();
    assert!(err.contains("pooled") && err.contains("spatial"), "{err}");
    opts.layer = "head".into();
    opts.class = Some(1000);
    let err = cam::compute(&model.network, &fx["input"], &opts)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("1000") && err.contains("out of range"),
        "{err}"
    );
}

/// Grad-CAM of a class other than the top-1 (281, tabby) at `head`, against the reference the
/// formula gives from the fixture: `head` feeds the classifier through a global average pool,
/// so d logit[c] / d head[k, y, x] = fc.weight[c, k] / 49 everywhere, the channel weights are
/// `fc.weight[c] / 49`, and the CAM is `relu(sum_k w_k head[k])` (checked first on the top-1
/// class, whose weights the fixture stores). Asking for the top-1 class by number gives the
/// library's map.
#[test]
fn any_class_can_be_asked_for() {
    let model = lite0();
    let fx = fixture("lite0_chelsea");
    let weights =
        candle_core::safetensors::load(repo("models/efficientnet_lite0.safetensors"), &Device::Cpu)
            .unwrap();
    let fc = &weights["_fc.weight"]; // [1000, 1280]
    let head = fx["head"].squeeze(0).unwrap().reshape((1280, 49)).unwrap();
    let channel_weights = |class: usize| (fc.get(class).unwrap() / 49.0).unwrap();
    assert!(rel_to_max(&channel_weights(285), &fx["gradcam.weights"]) <= 1e-4);
    let reference = |class: usize| {
        channel_weights(class)
            .unsqueeze(0)
            .unwrap()
            .matmul(&head)
            .unwrap()
            .relu()
            .unwrap()
            .reshape((7, 7))
            .unwrap()
    };
    let run = |class: usize| {
        let mut opts = CamOptions::new(CamMethod::GradCam, "head");
        opts.class = Some(class);
        cam::compute(&model.network, &fx["input"], &opts).unwrap()
    };
    let tabby = run(281);
    assert_eq!(tabby.class, 281);
    assert_eq!(tabby.lowres_size, (7, 7));
    let err = rel_to_max(&tensor(&tabby.lowres, &[7, 7]), &reference(281));
    println!("Grad-CAM of class 281: lowres rel-to-max {err:.2e}");
    assert!(err <= 1e-4, "lowres of class 281 off by {err:e}");
    let top1 = run(285);
    assert!(rel_to_max(&tensor(&top1.lowres, &[7, 7]), &reference(285)) <= 1e-4);
    assert!(max_abs_diff(&top1.map, &fx["lib.gradcam"]) <= 1e-4);
    // The two classes' maps differ: the class asked for is the class used.
    assert!(max_abs_diff(&tabby.map, &fx["lib.gradcam"]) > 0.1);
}

/// Grad-CAM, Grad-CAM++ and Layer-CAM of the random ResNet-18 with a probability target
/// (`--prob-score`) against pytorch-grad-cam's `ClassifierOutputSoftmaxTarget`
/// (tests/fixtures/make/make_cam_prob_fixture.py). The gradient of a softmax differs from the
/// logit's, so a softmax without a backward (no gradient at all) or the logit target fails.
#[test]
fn probability_targets_match_the_library() {
    let spec = convlens::zoo::resolve(
        repo("tests/fixtures/resnet18_random_fp16.safetensors")
            .to_str()
            .unwrap(),
    )
    .unwrap();
    let model = spec.load(&Device::Cpu).unwrap();
    let input = &fixture("resnet18_ref")["input"];
    let fx = fixture("cam_prob_resnet18");
    let class = fx["class"].to_vec1::<f32>().unwrap()[0] as usize;
    let prob = fx["prob"].to_vec1::<f32>().unwrap()[0];
    let run = |method, score| {
        let mut opts = CamOptions::new(method, "layer4");
        opts.score = score;
        cam::compute(&model.network, input, &opts).unwrap()
    };
    for (method, key) in [
        (CamMethod::GradCam, "gradcam"),
        (CamMethod::GradCamPlusPlus, "gradcampp"),
        (CamMethod::LayerCam, "layercam"),
    ] {
        let out = run(method, CamScore::Probability);
        assert_eq!(out.class, class, "{method}: top-1 class");
        assert!((out.prob - prob).abs() <= 1e-5, "{method}: p {}", out.prob);
        let err = rel_to_max(&tensor(&out.lowres, &[7, 7]), &fx[&format!("{key}.lowres")]);
        println!("{method} with a probability target: lowres rel-to-max {err:.2e}");
        assert!(err <= 1e-4, "{method}: lowres off by {err:e}");
    }
    let out = run(CamMethod::GradCam, CamScore::Probability);
    assert!(max_abs_diff(&out.map, &fx["gradcam.map"]) <= 1e-4);
    // The logit target gives another map: the check above can tell the two apart.
    let logit = run(CamMethod::GradCam, CamScore::Logit);
    let logit_lowres = tensor(&logit.lowres, &[7, 7]);
    assert!(rel_to_max(&logit_lowres, &fx["gradcam_logit.lowres"]) <= 1e-4);
    assert!(rel_to_max(&logit_lowres, &fx["gradcam.lowres"]) > 1.0);
}
