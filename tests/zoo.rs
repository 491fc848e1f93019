//! The model zoo: parity of ResNet-18 and MobileNetV2 with torchvision (fixtures computed in
//! f32 from fp16 weights), shapes and gradients of VGG and ResNet-50 with seeded random
//! weights, the key audit, architecture detection, and gradients through the max-pool stem.

mod common;

use std::collections::HashMap;
use std::path::Path;

use candle_core::{Device, Tensor, Var};
use common::{fixture, rel_to_max, repo};
use convlens::graph::Network;
use convlens::zoo::checkpoint::{Checkpoint, ExpectedTensors};
use convlens::zoo::{self, mobilenet_v2, resnet, vgg};
use rand::{Rng, SeedableRng};

const RESNET18: &str = "tests/fixtures/resnet18_random_fp16.safetensors";
const MOBILENET_V2: &str = "tests/fixtures/mobilenet_v2_random_fp16.safetensors";

/// Opens a bare fixture weights file the way the CLI does (no manifest: detection).
fn open_bare(rel: &str) -> zoo::Model {
    zoo::resolve(repo(rel).to_str().unwrap())
        .and_then(|spec| spec.load(&Device::Cpu))
        .unwrap_or_else(|e| panic!("{rel}: {e}"))
}

/// Runs `net` on the fixture's `input` and compares every tap with the reference.
fn check_parity(net: &Network, reference: &HashMap<String, Tensor>, taps: &[&str]) {
    let outputs = net.forward_with_taps(&reference["input"], taps).unwrap();
    let mut report = Vec::new();
    for (tap, out) in taps.iter().zip(&outputs) {
        let err = rel_to_max(out, &reference[*tap]);
        report.push(format!("{tap} {err:.1e}"));
        assert!(err <= 1e-4, "{tap}: rel-to-max {err:.2e} ({report:?})");
    }
    eprintln!("parity: {}", report.join(", "));
}

#[test]
fn resnet18_matches_torchvision() {
    let model = open_bare(RESNET18);
    let m = &model.spec.manifest;
    assert_eq!((m.architecture.as_str(), m.num_classes), ("resnet18", 1000));
    assert_eq!(m.default_cam_layer, "layer4");
    assert!(
        m.provenance.notes.contains("2-2-2-2"),
        "{}",
        m.provenance.notes
    );
    let taps = [
        "conv1", "maxpool", "layer1", "layer2", "layer3", "layer4", "pooled", "logits",
    ];
    let ids: Vec<&str> = model.network.layer_ids().collect();
    assert_eq!(ids, taps);
    check_parity(&model.network, &fixture("resnet18_ref"), &taps);
}

#[test]
fn mobilenet_v2_matches_torchvision() {
    let model = open_bare(MOBILENET_V2);
    let m = &model.spec.manifest;
    assert_eq!(
        (m.architecture.as_str(), m.num_classes),
        ("mobilenet_v2", 1000)
    );
    assert_eq!(m.default_cam_layer, "features.18");
    let taps = [
        "features.0",
        "features.3",
        "features.7",
        "features.14",
        "features.18",
        "pooled",
        "logits",
    ];
    check_parity(&model.network, &fixture("mobilenet_v2_ref"), &taps);
}

/// Seeded random weights for every expected tensor: BatchNorm scale and variance in
/// [0.5, 1.5], shifts and means in [-0.1, 0.1], conv/linear weights uniform with variance
/// 1/fan_in, biases in [-0.1, 0.1].
fn random_checkpoint(expected: &ExpectedTensors, seed: u64) -> Checkpoint {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let tensors = expected
        .iter()
        .map(|(name, shape)| {
            let n: usize = shape.iter().product();
            let (lo, hi) = if name.ends_with("running_var")
                || (name.ends_with(".weight") && shape.len() == 1)
            {
                (0.5, 1.5)
            } else if shape.len() == 1 {
                (-0.1, 0.1)
            } else {
                let fan_in: usize = shape[1..].iter().product();
                let a = (3.0 / fan_in as f32).sqrt();
                (-a, a)
            };
            let v: Vec<f32> = (0..n).map(|_| rng.random_range(lo..hi)).collect();
            let t = Tensor::from_vec(v, shape.as_slice(), &Device::Cpu).unwrap();
            (name.clone(), t)
        })
        .collect();
    Checkpoint::from_tensors("random.safetensors", tensors, &Device::Cpu).unwrap()
}

/// A seeded tensor of values in [-2, 2).
fn random_tensor(dims: &[usize], seed: u64) -> Tensor {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let n: usize = dims.iter().product();
    let v: Vec<f32> = (0..n).map(|_| rng.random_range(-2.0..2.0)).collect();
    Tensor::from_vec(v, dims, &Device::Cpu).unwrap()
}

/// A seeded `[1, 3, size, size]` input.
fn random_input(size: usize, seed: u64) -> Tensor {
    random_tensor(&[1, 3, size, size], seed)
}

/// Whether a gradient is finite everywhere and not all zero.
fn assert_live(grad: &Tensor, what: &str) {
    let v = grad.flatten_all().unwrap().to_vec1::<f32>().unwrap();
    assert!(
        v.iter().all(|x| x.is_finite()),
        "{what}: non-finite gradient"
    );
    assert!(v.iter().any(|&x| x != 0.0), "{what}: all-zero gradient");
}

/// Checks the layer table's shapes against the real ones, and that the gradient of the
/// network's output reaches every tap and the input. The gradient is carried back stage by
/// stage: each stage is rerun from its input made a `Var` (`forward_range` over that one
/// stage) and differentiated against the gradient arriving at its output, which by the chain
/// rule gives the gradient of the final loss at every tap in one backward sweep.
fn check_shapes_and_gradients(net: &Network, size: usize, output: &[usize]) {
    let ids: Vec<String> = net.layer_ids().map(str::to_string).collect();
    let id_refs: Vec<&str> = ids.iter().map(String::as_str).collect();
    let x = random_input(size, 7);
    let outs = net.forward_with_taps(&x, &id_refs).unwrap();
    for (info, out) in net.layers(size).iter().zip(&outs) {
        assert_eq!(
            &out.dims()[1..],
            info.output_shape.as_slice(),
            "{}",
            info.id
        );
        let v = out.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        assert!(
            v.iter().all(|x| x.is_finite()),
            "{}: non-finite output",
            info.id
        );
    }
    let last = outs.last().unwrap();
    assert_eq!(&last.dims()[1..], output);
    // The loss: a fixed random projection of the output (no cancellation as with a sum).
    let mut grad = random_tensor(last.dims(), 9);
    for i in (0..ids.len()).rev() {
        let (from, input, name) = match i {
            0 => (None, &x, "input"),
            _ => (Some(ids[i - 1].as_str()), &outs[i - 1], ids[i - 1].as_str()),
        };
        let v = Var::from_tensor(input).unwrap();
        let y = net
            .forward_range(from, &ids[i], v.as_tensor(), false)
            .unwrap();
        let grads = (y * &grad).unwrap().sum_all().unwrap().backward().unwrap();
        grad = grads.get(v.as_tensor()).expect("a gradient").clone();
        assert_live(&grad, name);
    }
}

#[test]
fn resnet50_random_weights_shapes_and_gradients() {
    let cfg = resnet::ResNetConfig::of("resnet50").unwrap();
    let ckpt = random_checkpoint(&resnet::expected_tensors(&cfg, 10), 50);
    let net = zoo::build_network("resnet50", &ckpt, 10).unwrap();
    let table = net.layers(64);
    let shapes: Vec<(&str, &[usize])> = table
        .iter()
        .map(|l| (l.id.as_str(), l.output_shape.as_slice()))
        .collect();
    assert_eq!(
        shapes,
        [
            ("conv1", &[64, 32, 32][..]),
            ("maxpool", &[64, 16, 16]),
            ("layer1", &[256, 16, 16]),
            ("layer2", &[512, 8, 8]),
            ("layer3", &[1024, 4, 4]),
            ("layer4", &[2048, 2, 2]),
            ("pooled", &[2048]),
            ("logits", &[10]),
        ]
    );
    // torchvision's resnet50 has 25,557,032 parameters for 1000 classes; here 10 classes.
    let params: usize = table.iter().map(|l| l.params).sum();
    assert_eq!(params, 25_557_032 - 990 * 2049);
    check_shapes_and_gradients(&net, 64, &[10]);
}

#[test]
fn vgg16_random_weights_shapes_and_gradients() {
    let expected = vgg::expected_tensors("vgg16", 10).unwrap();
    let ckpt = random_checkpoint(&expected, 16);
    let net = zoo::build_network("vgg16", &ckpt, 10).unwrap();
    let ids: Vec<&str> = net.layer_ids().collect();
    assert_eq!(ids.len(), 13 + 5 + 4);
    assert_eq!(
        &ids[..5],
        [
            "features.0",
            "features.2",
            "features.4",
            "features.5",
            "features.7"
        ]
    );
    assert_eq!(
        &ids[16..],
        [
            "features.28",
            "features.30",
            "avgpool",
            "classifier.0",
            "pooled",
            "logits"
        ]
    );
    let table = net.layers(224);
    assert_eq!(table[17].output_shape, [512, 7, 7]);
    assert_eq!(table[18].output_shape, [25088]);
    // torchvision's vgg16: 138,357,544 parameters for 1000 classes.
    let params: usize = table.iter().map(|l| l.params).sum();
    assert_eq!(params, 138_357_544 - 990 * 4097);
    // At 64x64 the last pool is 2x2 and the adaptive pool spreads it over 7x7.
    check_shapes_and_gradients(&net, 64, &[10]);
}

#[test]
fn vgg19_feature_only_random_weights_shapes_and_gradients() {
    let expected = vgg::expected_tensors("vgg19", 0).unwrap();
    assert!(!expected.iter().any(|(n, _)| n.starts_with("classifier.")));
    let ckpt = random_checkpoint(&expected, 19);
    let net = zoo::build_network("vgg19", &ckpt, 0).unwrap();
    assert_eq!(net.output_layer(), "pooled");
    assert_eq!(
        vgg::default_cam_layer("vgg19").as_deref(),
        Some("features.34")
    );
    net.index_of("features.34").unwrap();
    check_shapes_and_gradients(&net, 32, &[512]);
}

#[test]
fn feature_only_resnet_and_mobilenet_end_at_pooled() {
    let cfg = resnet::ResNetConfig::of("resnet18").unwrap();
    let ckpt = random_checkpoint(&resnet::expected_tensors(&cfg, 0), 18);
    let net = zoo::build_network("resnet18", &ckpt, 0).unwrap();
    assert_eq!(net.output_layer(), "pooled");
    let ckpt = random_checkpoint(&mobilenet_v2::expected_tensors(0), 2);
    let net = zoo::build_network("mobilenet_v2", &ckpt, 0).unwrap();
    assert_eq!(net.output_layer(), "pooled");
    let y = net.forward(&random_input(32, 1)).unwrap();
    assert_eq!(y.dims(), [1, 1280]);
}

/// The fixture's tensors (fp16 as stored).
fn fixture_weights(rel: &str) -> HashMap<String, Tensor> {
    candle_core::safetensors::load(repo(rel), &Device::Cpu).unwrap()
}

fn build_error(architecture: &str, tensors: HashMap<String, Tensor>) -> String {
    let ckpt = Checkpoint::from_tensors("wrong.safetensors", tensors, &Device::Cpu).unwrap();
    match zoo::build_network(architecture, &ckpt, 1000) {
        Ok(_) => panic!("{architecture}: a wrong file was accepted"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn the_audit_names_the_missing_or_misshaped_tensor() {
    let mut t = fixture_weights(RESNET18);
    t.remove("layer3.1.conv2.weight").unwrap();
    let msg = build_error("resnet18", t);
    assert!(
        msg.contains("layer3.1.conv2.weight")
            && msg.contains("[256, 256, 3, 3]")
            && msg.contains("no such tensor")
            && msg.contains("wrong.safetensors"),
        "{msg}"
    );

    let mut t = fixture_weights(RESNET18);
    let w = t["layer2.0.downsample.0.weight"].narrow(0, 0, 64).unwrap();
    t.insert("layer2.0.downsample.0.weight".into(), w);
    let msg = build_error("resnet18", t);
    assert!(
        msg.contains("layer2.0.downsample.0.weight")
            && msg.contains("[128, 64, 1, 1]")
            && msg.contains("[64, 64, 1, 1]"),
        "{msg}"
    );

    let mut t = fixture_weights(MOBILENET_V2);
    t.remove("features.7.conv.1.0.weight").unwrap();
    let msg = build_error("mobilenet_v2", t);
    assert!(
        msg.contains("features.7.conv.1.0.weight") && msg.contains("[192, 1, 3, 3]"),
        "{msg}"
    );

    let mut t = fixture_weights(MOBILENET_V2);
    let w = t["classifier.1.weight"].narrow(1, 0, 1000).unwrap();
    t.insert("classifier.1.weight".into(), w);
    let msg = build_error("mobilenet_v2", t);
    assert!(
        msg.contains("classifier.1.weight")
            && msg.contains("[1000, 1280]")
            && msg.contains("[1000, 1000]"),
        "{msg}"
    );
}

/// Writes a manifest naming `architecture` for `weights` into `dir` (1000 dummy labels).
fn manifest_for(dir: &Path, weights: &Path, architecture: &str) -> std::path::PathBuf {
    let labels: String = (0..1000).map(|i| format!("c{i}\n")).collect();
    std::fs::write(dir.join("labels.txt"), labels).unwrap();
    let manifest = serde_json::json!({
        "name": "wrong",
        "architecture": architecture,
        "weights": weights,
        "num_classes": 1000,
        "input_size": 224,
        "resize_shorter": 256,
        "mean": [0.485, 0.456, 0.406],
        "std": [0.229, 0.224, 0.225],
        "labels": "labels.txt",
        "default_cam_layer": "features.28",
    });
    let path = dir.join("wrong.json");
    std::fs::write(&path, manifest.to_string()).unwrap();
    path
}

#[test]
fn a_resnet18_file_opened_as_vgg_is_refused_naming_what_it_looks_like() {
    let dir = tempfile::tempdir().unwrap();
    let manifest = manifest_for(dir.path(), &repo(RESNET18), "vgg16");
    let spec = zoo::resolve(manifest.to_str().unwrap()).unwrap();
    let msg = match spec.load(&Device::Cpu) {
        Ok(_) => panic!("a ResNet-18 file was built as VGG-16"),
        Err(e) => e.to_string(),
    };
    assert!(
        msg.contains("vgg16") && msg.contains("looks like resnet18") && msg.contains("2-2-2-2"),
        "{msg}"
    );
    // The audit's first problem rides along.
    assert!(msg.contains("features.0.weight"), "{msg}");

    // And the other way round: a MobileNetV2 file named as ResNet-50.
    let manifest = manifest_for(dir.path(), &repo(MOBILENET_V2), "resnet50");
    let msg = match zoo::resolve(manifest.to_str().unwrap())
        .unwrap()
        .load(&Device::Cpu)
    {
        Ok(_) => panic!("a MobileNetV2 file was built as ResNet-50"),
        Err(e) => e.to_string(),
    };
    assert!(msg.contains("looks like mobilenet_v2"), "{msg}");
}

#[test]
fn a_manifest_overrides_detection() {
    // The manifest is trusted when the file fits it: resnet18 named as resnet18.
    let dir = tempfile::tempdir().unwrap();
    let manifest = manifest_for(dir.path(), &repo(RESNET18), "resnet18");
    let model = zoo::resolve(manifest.to_str().unwrap())
        .unwrap()
        .load(&Device::Cpu)
        .unwrap();
    assert_eq!(model.spec.manifest.name, "wrong");
    assert_eq!(model.spec.labels[3], "c3");
}

#[test]
fn gradient_ascent_runs_through_the_max_pool_stem() {
    let model = open_bare(RESNET18);
    let net = &model.network;
    let reference = fixture("resnet18_ref");
    // Start from a 96x96 crop of the stored input, to keep the test fast.
    let mut image = reference["input"]
        .narrow(2, 64, 96)
        .unwrap()
        .narrow(3, 64, 96)
        .unwrap()
        .contiguous()
        .unwrap();
    let loss_of = |x: &Tensor| -> Tensor {
        let act = net.forward_range(None, "layer1", x, false).unwrap();
        act.narrow(1, 5, 1).unwrap().mean_all().unwrap()
    };
    let mut losses = Vec::new();
    for _ in 0..4 {
        let x = Var::from_tensor(&image).unwrap();
        let loss = loss_of(x.as_tensor());
        losses.push(loss.to_scalar::<f32>().unwrap());
        let grads = loss.backward().unwrap();
        let g = grads.get(x.as_tensor()).expect("input gradient");
        assert_live(g, "input through maxpool");
        let norm = g.sqr().unwrap().sum_all().unwrap().sqrt().unwrap();
        let step = (g.broadcast_div(&(norm + 1e-8).unwrap()).unwrap() * 5.0).unwrap();
        image = (image + step).unwrap();
    }
    assert!(
        losses.windows(2).all(|w| w[1] > w[0]),
        "the loss does not rise: {losses:?}"
    );
}

#[test]
fn info_prints_what_it_detected_and_why() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_convlens"))
        .args(["info", "--model", repo(RESNET18).to_str().unwrap()])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("(resnet18)"), "{stdout}");
    assert!(stdout.contains("2-2-2-2 BasicBlock"), "{stdout}");
    assert!(
        stdout.contains("layer4") && stdout.contains("maxpool"),
        "{stdout}"
    );
    // 11,689,512 parameters (torchvision's count).
    assert!(stdout.contains("11,689,512"), "{stdout}");
}

#[test]
fn detection_reads_only_the_header_of_each_file() {
    for (rel, arch, classes) in [
        (RESNET18, "resnet18", 1000),
        (MOBILENET_V2, "mobilenet_v2", 1000),
        (
            "models/efficientnet_lite0.safetensors",
            "efficientnet_lite0",
            1000,
        ),
    ] {
        let shapes = zoo::detect::read_shapes(&repo(rel)).unwrap();
        let found = zoo::detect::detect(&shapes).unwrap();
        assert_eq!(
            (found.architecture.as_str(), found.num_classes),
            (arch, classes),
            "{rel}: {}",
            found.why
        );
    }
    // Not safetensors: the error names the file.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("notes.safetensors");
    std::fs::write(&path, b"these are not weights").unwrap();
    let msg = zoo::resolve(path.to_str().unwrap())
        .err()
        .unwrap()
        .to_string();
    assert!(msg.contains("notes.safetensors"), "{msg}");
}
