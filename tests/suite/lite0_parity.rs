//! EfficientNet-Lite0 against the PyTorch references in tests/fixtures (see its README).
use crate::common;

use candle_core::Device;
use common::{fixture, lite0, ranking, rel_to_max, repo};

const TAPS: [&str; 12] = [
    "stem",
    "blocks.0",
    "blocks.2",
    "blocks.4",
    "blocks.7",
    "blocks.10",
    "blocks.14",
    "blocks.15",
    "head",
    "pooled",
    "logits",
    "blocks.15", // asked twice on purpose: taps come back in the order asked
];

fn check_taps(name: &str) {
    let model = lite0();
    let fx = fixture(name);
    let outputs = model
        .network
        .forward_with_taps(&fx["input"], &TAPS)
        .unwrap();
    for (tap, out) in TAPS.iter().zip(&outputs) {
        let err = rel_to_max(out, &fx[*tap]);
        println!("{name} {tap:>10}: rel-to-max {err:.2e}");
        assert!(err <= 1e-4, "{name}: tap {tap} off by {err:e} (rel-to-max)");
    }
    let logits = outputs[10].squeeze(0).unwrap().to_vec1::<f32>().unwrap();
    let reference = fx["logits"].squeeze(0).unwrap().to_vec1::<f32>().unwrap();
    assert_eq!(
        ranking(&logits)[..5],
        ranking(&reference)[..5],
        "{name}: top-5 differs"
    );
}

#[test]
fn chelsea_taps_and_logits_match_pytorch() {
    check_taps("lite0_chelsea");
}

#[test]
fn coffee_taps_and_logits_match_pytorch() {
    check_taps("lite0_coffee");
}

/// From the image file itself (our decode, resize and crop), the top-3 classes are the
/// reference's and their probabilities are within 1e-4 (the fixture README's tolerance for
/// softmax probabilities: the preprocessing reproduces PIL's bit for bit, so only the
/// network's float rounding is left).
#[test]
fn predictions_from_image_files_match_the_reference() {
    let model = lite0();
    for (image, fx_name) in [
        ("chelsea.png", "lite0_chelsea"),
        ("coffee.png", "lite0_coffee"),
    ] {
        let fx = fixture(fx_name);
        let reference = candle_nn::ops::softmax_last_dim(&fx["logits"])
            .unwrap()
            .squeeze(0)
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        let top = model
            .classify_file(&repo(&format!("assets/images/{image}")), 3)
            .unwrap();
        let expected = &ranking(&reference)[..3];
        for (got, &want) in top.iter().zip(expected) {
            println!(
                "{image}: {} {:.4} (reference {:.4})",
                got.class, got.prob, reference[want]
            );
            assert_eq!(got.index, want, "{image}: top-3 order differs");
            assert!(
                (got.prob - reference[want]).abs() <= 1e-4,
                "{image}: {got:?}"
            );
        }
    }
}

/// The fixtures' named top-1 classes, read through the bundled labels.
#[test]
fn labels_name_the_reference_classes() {
    let model = lite0();
    assert_eq!(model.spec.labels[285], "Egyptian cat");
    assert_eq!(model.spec.labels[967], "espresso");
    assert_eq!(model.device.location(), Device::Cpu.location());
}

/// The layer table: fixture shapes at 224 px and PyTorch's parameter count.
#[test]
fn layer_table_matches_the_architecture() {
    let model = lite0();
    let table = model.network.layers(224);
    let ids: Vec<&str> = table.iter().map(|l| l.id.as_str()).collect();
    assert_eq!(ids.len(), 20);
    assert_eq!(ids[0], "stem");
    assert_eq!(ids[16], "blocks.15");
    assert_eq!(&ids[17..], ["head", "pooled", "logits"]);
    let fx = fixture("lite0_chelsea");
    for l in &table {
        if let Some(t) = fx.get(&l.id) {
            assert_eq!(&t.dims()[1..], l.output_shape.as_slice(), "{}", l.id);
        }
    }
    let params: usize = table.iter().map(|l| l.params).sum();
    assert_eq!(params, 4_652_008, "PyTorch counts 4,652,008 parameters");
    let macs: u64 = table.iter().map(|l| l.flops / 2).sum();
    assert_eq!(macs, 385_187_552, "analytic MACs per image");
}

/// Gradient ascent and Grad-CAM split the network: the range pieces compose to the whole,
/// and the gradient reaches the input through every stage.
#[test]
fn forward_range_composes_and_is_differentiable() {
    let model = lite0();
    let fx = fixture("lite0_chelsea");
    let net = &model.network;
    let head = net
        .forward_range(None, "head", &fx["input"], false)
        .unwrap();
    let logits = net
        .forward_range(Some("head"), "logits", &head, false)
        .unwrap();
    assert!(rel_to_max(&logits, &fx["logits"]) <= 1e-4);

    let x = candle_core::Var::from_tensor(&fx["input"]).unwrap();
    let act = net.forward_range(None, "blocks.4", &x, false).unwrap();
    let loss = act.narrow(1, 0, 1).unwrap().mean_all().unwrap();
    let grads = loss.backward().unwrap();
    let g = grads.get(&x).expect("gradient reaches the input");
    let norm = g
        .sqr()
        .unwrap()
        .sum_all()
        .unwrap()
        .to_scalar::<f32>()
        .unwrap();
    assert!(norm.is_finite() && norm > 0.0, "gradient norm {norm}");
}
