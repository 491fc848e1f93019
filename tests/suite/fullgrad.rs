//! FullGrad against pytorch-grad-cam 1.5.7 (tests/fixtures/explain_fullgrad.safetensors, made
//! by tests/fixtures/make/fx_fullgrad.py) on Lite0, ResNet-18, MobileNetV2 and VGG-16, and
//! (explain_fullgrad_zoo.safetensors, fx_fullgrad_zoo.py) on ConvNeXt, DenseNet, Xception,
//! EfficientNet-B and MobileNetV3: the number of layers probed, the probed forward's logits
//! and the map within 1e-4 relative to its max; the refusal naming a stage that cannot probe;
//! `cam --method fullgrad --json`.
use std::collections::HashMap;

use crate::common;

use candle_core::{DType, Device, Tensor};
use common::{convlens, fixture, fixture_metadata, lite0, rel_to_max, repo, seeded, text};
use convlens::graph::{Network, Stage};
use convlens::viz::cam::{self, CamMethod, CamOptions, min_max};
use convlens::zoo::Model;

/// A model from a weights file of tests/fixtures, on the CPU.
pub(crate) fn fixture_model(file: &str) -> Model {
    convlens::zoo::resolve(repo(&format!("tests/fixtures/{file}")).to_str().unwrap())
        .and_then(|spec| spec.load(&Device::Cpu))
        .unwrap_or_else(|e| panic!("{file}: {e}"))
}

/// The `side x side` window at (`at`, `at`) of `x` `[1, 3, H, W]`.
fn window(x: &Tensor, at: usize, side: usize) -> Tensor {
    x.narrow(2, at, side).unwrap().narrow(3, at, side).unwrap()
}

fn scalar(fx: &std::collections::HashMap<String, Tensor>, key: &str) -> usize {
    fx[key].to_vec1::<f32>().unwrap()[0] as usize
}

/// FullGrad of `input` for the class of `net` in `fx` (a fixture of fx_fullgrad.py or
/// fx_fullgrad_zoo.py): checks the count of probed layers and that the probed forward gives
/// the plain forward's logits, and returns the map's error relative to the reference's max.
fn check_in(fx: &HashMap<String, Tensor>, net: &str, network: &Network, input: &Tensor) -> f32 {
    let (logits, probes) = network.forward_probed(input).unwrap();
    let plain = network.forward(input).unwrap();
    let drift = rel_to_max(&logits, &plain);
    assert!(
        drift <= 1e-5,
        "{net}: the probed forward's logits are off by {drift:e}"
    );
    assert_eq!(
        probes.len(),
        scalar(fx, &format!("{net}.layers")),
        "{net}: layers with a bias"
    );
    // The layer is not used.
    let mut opts = CamOptions::new(CamMethod::FullGrad, network.output_layer());
    opts.class = Some(scalar(fx, &format!("{net}.class")));
    let out = cam::compute(network, input, &opts).unwrap();
    let (h, w) = out.size;
    assert_eq!(out.lowres_size, (h, w));
    assert!(!out.signed && out.layer == "input");
    let map = Tensor::from_vec(out.map, (h, w), &Device::Cpu).unwrap();
    let err = rel_to_max(&map, &fx[&format!("{net}.map")]);
    println!(
        "{net}: FullGrad rel-to-max {err:.2e} ({} layers)",
        probes.len()
    );
    err
}

/// [`check_in`] on explain_fullgrad.
fn check(net: &str, network: &Network, input: &Tensor) -> f32 {
    check_in(&fixture("explain_fullgrad"), net, network, input)
}

/// [`check_in`] on explain_fullgrad_zoo, on the fixture's seeded input of `net`.
fn check_zoo(net: &str, network: &Network) -> f32 {
    let fx = fixture("explain_fullgrad_zoo");
    let size: usize = fixture_metadata("explain_fullgrad_zoo")["size"]
        .parse()
        .unwrap();
    let x = seeded::input(scalar(&fx, &format!("{net}.seed")) as u64, size);
    check_in(&fx, net, network, &x)
}

#[test]
fn fullgrad_matches_pytorch_grad_cam_on_lite0_and_resnet18() {
    let x = fixture("lite0_chelsea")["input"].clone();
    let lite0_err = check("lite0", &lite0().network, &x);
    let x = fixture("resnet18_ref")["input"].clone();
    let resnet_err = check(
        "resnet18",
        &fixture_model("resnet18_random_fp16.safetensors").network,
        &x,
    );
    assert!(
        lite0_err <= 1e-4 && resnet_err <= 1e-4,
        "Lite0 {lite0_err:e}, ResNet-18 {resnet_err:e}"
    );
}

#[test]
fn fullgrad_matches_pytorch_grad_cam_on_mobilenet_v2_and_vgg16() {
    let x = window(&fixture("mobilenet_v2_ref")["input"], 56, 112);
    let model = fixture_model("mobilenet_v2_random_fp16.safetensors");
    let mobilenet_err = check("mobilenet_v2", &model.network, &x);
    drop(model);
    // VGG-16 from the seed of vgg16_seeded (its PRNG is checked by parity_models).
    let meta = fixture_metadata("vgg16_seeded");
    let shapes: Vec<(String, Vec<usize>)> = serde_json::from_str(&meta["tensors"]).unwrap();
    let weights = seeded::state(16, &shapes, 6.0);
    let ckpt = convlens::zoo::checkpoint::Checkpoint::from_tensors(
        "vgg16 (seeded)",
        weights,
        &Device::Cpu,
    )
    .unwrap();
    let network = convlens::zoo::build_network("vgg16", &ckpt, 1000).unwrap();
    drop(ckpt);
    let x = window(&seeded::input(16, 160), 48, 64);
    let vgg_err = check("vgg16", &network, &x);
    assert!(mobilenet_err <= 1e-4, "MobileNetV2 {mobilenet_err:e}");
    // Measured 5.8e-4, a max-pool tie: in one 2x2 window of `features.4` the two largest
    // inputs are 7e-7 apart (1.1546550, 1.1546557 in PyTorch) and the convolutions' rounding
    // makes the other one the maximum, so a gradient of channel 4 of `features.2` lands one
    // pixel over (2 of 262,144 values), which that channel's min-max scaling amplifies. Every
    // other layer's gradient agrees within 1.5e-6 of its max (measured by dumping them).
    assert!(vgg_err <= 1e-3, "VGG-16 {vgg_err:e}");
}

/// ConvNeXt (torchvision's and timm's naming): the stem, depthwise and downsample convs.
#[test]
fn fullgrad_matches_pytorch_grad_cam_on_convnext() {
    for id in ["convnext_tiny", "convnext_tiny_timm"] {
        let model = fixture_model(&format!("{id}_random_fp16.safetensors"));
        let err = check_zoo(id, &model.network);
        assert!(err <= 1e-4, "{id}: {err:e}");
    }
}

/// DenseNet-121 (growth 4): every BatchNorm, the pre-activation ones included.
#[test]
fn fullgrad_matches_pytorch_grad_cam_on_densenet121() {
    let model = fixture_model("densenet121_random_fp16.safetensors");
    let err = check_zoo("densenet121", &model.network);
    assert!(err <= 1e-4, "DenseNet-121: {err:e}");
}

/// Xception: the reference is pytorch-grad-cam's formula with one probe per layer, as the
/// library itself fails on it (fx_fullgrad_zoo.py). The input is seed 7104's: on the
/// checkpoint's own seed (7100) the map was 9.1e-4 off, a max-pool window (60,000 of them at
/// 64 px) whose two largest inputs are closer than the convolutions' rounding, as VGG-16's
/// below; with every window's gap over 1e-6 of its tensor's max it is 1.6e-6.
#[test]
fn fullgrad_matches_pytorch_grad_cams_formula_on_xception() {
    let (model, _dir) = crate::zoo_visuals::seeded_model("legacy_xception_zoo");
    let err = check_zoo("legacy_xception", &model.network);
    assert!(err <= 1e-4, "Xception: {err:e}");
}

/// EfficientNet-B0 in torchvision's naming and timm's TensorFlow port (its BatchNormAct2d
/// split into BatchNorm2d + activation for the library): BatchNorms and the SE convs.
#[test]
fn fullgrad_matches_pytorch_grad_cam_on_efficientnet_b0() {
    for id in ["efficientnet_b0", "tf_efficientnet_b0"] {
        let (model, _dir) = crate::zoo_visuals::seeded_model(&format!("zoo_b_{id}"));
        let err = check_zoo(id, &model.network);
        assert!(err <= 1e-4, "{id}: {err:e}");
    }
}

/// MobileNetV3 Large and Small (torchvision): BatchNorms and the SE convs.
#[test]
fn fullgrad_matches_pytorch_grad_cam_on_mobilenet_v3() {
    for id in ["mobilenet_v3_large", "mobilenet_v3_small"] {
        let (model, _dir) = crate::zoo_visuals::seeded_model(&format!("zoo_b_{id}"));
        let err = check_zoo(id, &model.network);
        assert!(err <= 1e-4, "{id}: {err:e}");
    }
}

/// A stage that cannot probe its layers (the default of [`Stage::bias_probing`]) makes
/// FullGrad refuse, naming the stage.
#[test]
fn fullgrad_refuses_a_stage_that_cannot_probe_naming_it() {
    struct Opaque;
    impl Stage for Opaque {
        fn forward(&self, x: &Tensor, _train: bool) -> convlens::Result<Tensor> {
            Ok(x.clone())
        }
        fn output_shape(&self, input: &[usize]) -> Vec<usize> {
            input.to_vec()
        }
        fn macs(&self, _input: &[usize]) -> u64 {
            0
        }
        fn param_count(&self) -> usize {
            0
        }
        fn tensors_mut(&mut self) -> Vec<(String, &mut Tensor)> {
            Vec::new()
        }
    }
    let mut network = fixture_model("resnet18_random_fp16.safetensors").network;
    network.push("opaque", Box::new(Opaque));
    let x = Tensor::zeros((1, 3, 32, 32), DType::F32, &Device::Cpu).unwrap();
    let opts = CamOptions::new(CamMethod::FullGrad, "layer4");
    let err = cam::compute(&network, &x, &opts).unwrap_err().to_string();
    assert!(
        err.contains("FullGrad cannot explain this model: stage `opaque` (Opaque)")
            && err.contains("cannot expose the gradients"),
        "{err}"
    );
}

/// The CLI's map is the library's at the input's resolution: scaled, it is pytorch-grad-cam's
/// (the fixture's input is chelsea.png preprocessed by PIL, bit for bit).
#[test]
fn cam_fullgrad_json_prints_the_map_at_the_input_resolution() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("cat.png");
    let run = convlens(&[
        "cam",
        "assets/images/chelsea.png",
        "--method",
        "fullgrad",
        "--json",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(run.status.success(), "{}", text(&run.stderr));
    let v: serde_json::Value = serde_json::from_slice(&run.stdout).expect("JSON on stdout");
    assert_eq!(v["method"], "fullgrad");
    assert_eq!(v["kind"], "pixel");
    assert_eq!(v["lowres_size"], serde_json::json!([224, 224]));
    assert_eq!(v["signed"], false);
    let fx = fixture("explain_fullgrad");
    assert_eq!(v["class"], scalar(&fx, "lite0.class"));
    let printed = crate::cli_viz::lowres_of(&v);
    let map = Tensor::from_vec(min_max(&printed), (224, 224), &Device::Cpu).unwrap();
    let err = rel_to_max(&map, &fx["lite0.map"]);
    assert!(err <= 1e-4, "the printed map is off by {err:e}");
    assert!(out.is_file(), "figure");
    let sidecar: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.path().join("cat.json")).unwrap()).unwrap();
    assert!(
        sidecar.to_string().contains("fullgrad"),
        "the sidecar names the method: {sidecar}"
    );
}
