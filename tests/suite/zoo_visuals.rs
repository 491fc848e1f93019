//! Every visualisation on every family added for issue #14, on the seeded parity checkpoints:
//! the activations of the default CAM layer, filter patterns there by gradient ascent, and the
//! gradient and pixel explanations (the batched ones, Score-CAM, AblationCAM, SmoothGrad,
//! Integrated Gradients and occlusion, run the same forwards and backwards many times and are
//! left to the parity suites). FullGrad maps on every one.
use crate::common;

use candle_core::Device;
use common::repo;
use common::seeded::Seeded;
use convlens::viz::activations::layer_activations;
use convlens::viz::cam::{self, CamMethod, CamOptions};
use convlens::viz::filters::{AscentOptions, FilterOptions, filter_patterns};
use convlens::zoo::{self, Model};

/// The checkpoint of a seeded fixture (`zoo_b_*`, `*_zoo`) written as `<id>.safetensors` (the
/// name tells timm's TensorFlow ports apart) and loaded as `convlens --model FILE` does.
pub(crate) fn seeded_model(fixture: &str) -> (Model, tempfile::TempDir) {
    let fx = Seeded::open(fixture);
    let id = fx.meta["architecture"].clone();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(format!("{id}.safetensors"));
    candle_core::safetensors::save(&fx.weights(), &path).unwrap();
    let model = zoo::resolve(path.to_str().unwrap())
        .and_then(|spec| spec.load(&Device::Cpu))
        .unwrap_or_else(|e| panic!("{fixture}: {e}"));
    assert_eq!(model.spec.manifest.architecture, id);
    (model, dir)
}

/// A committed reduced-width checkpoint (`tests/fixtures/<id>_random_fp16.safetensors`).
fn committed_model(id: &str) -> Model {
    let path = repo(&format!("tests/fixtures/{id}_random_fp16.safetensors"));
    zoo::resolve(path.to_str().unwrap())
        .and_then(|spec| spec.load(&Device::Cpu))
        .unwrap_or_else(|e| panic!("{id}: {e}"))
}

/// The activations, two filter patterns and the gradient/pixel explanations of `model` at its
/// default CAM layer, each finite and of the expected size.
fn visualise(model: &Model) {
    let id = &model.spec.manifest.architecture;
    let layer = model.spec.manifest.default_cam_layer.clone();
    let x = model
        .spec
        .preprocess
        .load(&repo("assets/images/chelsea.png"), &model.device)
        .unwrap();
    let act = layer_activations(&model.network, &x, &layer).unwrap();
    assert!(act.channels > 0 && act.height > 0 && act.width > 0, "{id}");
    assert_eq!(act.data.len(), act.channels * act.height * act.width);
    assert!(act.data.iter().all(|v| v.is_finite()), "{id}: activations");

    let opts = FilterOptions {
        ascent: AscentOptions {
            steps: 2,
            ..AscentOptions::default()
        },
        // Inception V3's unpadded convolutions leave Mixed_7c 4x4 at 192 px, too small for
        // the border the ascent crops; 384 px leaves it 10x10.
        ..FilterOptions::with_size(if id == "inception_v3" { 384 } else { 192 })
    };
    let side = (opts.size - 2 * opts.crop) as u32;
    let patterns = filter_patterns(model, &layer, &[0, 1], &opts, &mut |_, _| true)
        .unwrap_or_else(|e| panic!("{id}: filters at {layer}: {e}"));
    assert_eq!(patterns.len(), 2);
    for p in &patterns {
        assert_eq!(p.image.dimensions(), (side, side), "{id}");
        assert!(p.final_loss.is_finite() && p.losses.iter().all(|l| l.is_finite()));
    }

    let size = model.spec.manifest.input_size as usize;
    for method in [
        CamMethod::GradCam,
        CamMethod::GradCamPlusPlus,
        CamMethod::LayerCam,
        CamMethod::EigenCam,
        CamMethod::HiResCam,
        CamMethod::XGradCam,
        CamMethod::Saliency,
        CamMethod::GuidedBackprop,
        CamMethod::GuidedGradCam,
        CamMethod::FullGrad,
    ] {
        let out = cam::compute(&model.network, &x, &CamOptions::new(method, &layer))
            .unwrap_or_else(|e| panic!("{id}: {method:?} at {layer}: {e}"));
        assert_eq!(out.size, (size, size), "{id} {method:?}");
        assert_eq!(out.map.len(), size * size);
        assert!(
            out.map.iter().all(|v| v.is_finite()) && out.lowres.iter().all(|v| v.is_finite()),
            "{id} {method:?}: a value that is not finite"
        );
    }
}

/// One test per checkpoint, named after it.
macro_rules! visual_tests {
    ($($test:ident => $load:expr),* $(,)?) => {
        $(
            #[test]
            fn $test() {
                let held = $load;
                visualise(&held.0);
            }
        )*
    };
}

visual_tests! {
    mobilenetv1_100_visualises => seeded_model("mobilenetv1_100_zoo"),
    legacy_xception_visualises => seeded_model("legacy_xception_zoo"),
    inception_v3_visualises => seeded_model("inception_v3_zoo"),
    efficientnet_b0_visualises => seeded_model("zoo_b_efficientnet_b0"),
    tf_efficientnet_b0_visualises => seeded_model("zoo_b_tf_efficientnet_b0"),
    mobilenet_v3_large_visualises => seeded_model("zoo_b_mobilenet_v3_large"),
    mobilenetv3_small_100_visualises => seeded_model("zoo_b_mobilenetv3_small_100"),
    tf_efficientnet_lite0_visualises => seeded_model("zoo_b_tf_efficientnet_lite0"),
    mobilenetv2_100_visualises => seeded_model("zoo_b_mobilenetv2_100"),
    convnext_tiny_visualises => (committed_model("convnext_tiny"), ()),
    convnext_tiny_timm_visualises => (committed_model("convnext_tiny_timm"), ()),
    densenet121_visualises => (committed_model("densenet121"), ()),
}
