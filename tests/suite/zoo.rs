//! The model zoo: parity of ResNet-18 and MobileNetV2 with torchvision (fixtures computed in
//! f32 from fp16 weights), shapes and gradients of VGG and ResNet-50 with seeded random
//! weights, the key audit, architecture detection, and gradients through the max-pool stem.
use crate::common;

use std::collections::HashMap;

use candle_core::{Device, Tensor, Var};
use common::{fixture, manifest_for, rel_to_max, repo};
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

const MOBILENET_V2_PTH: &str = "tests/fixtures/mobilenet_v2_random_fp16.pth";

#[test]
fn a_pytorch_checkpoint_nested_under_state_dict_matches_the_safetensors_file() {
    // The same fp16 tensors as MOBILENET_V2, saved by torch.save under `state_dict` beside an
    // `epoch`, with BatchNorm's `num_batches_tracked` (see tests/fixtures/make/make_pth_fixture.py).
    let shapes = zoo::detect::read_shapes(&repo(MOBILENET_V2_PTH)).unwrap();
    assert!(!shapes.keys().any(|k| k.contains("num_batches_tracked")));
    assert_eq!(shapes.len(), 262);
    let model = open_bare(MOBILENET_V2_PTH);
    let m = &model.spec.manifest;
    assert_eq!(
        (m.architecture.as_str(), m.num_classes),
        ("mobilenet_v2", 1000)
    );
    assert!(
        m.provenance.source.contains("PyTorch") && m.provenance.source.contains("state_dict"),
        "{}",
        m.provenance.source
    );
    let taps = [
        "features.0",
        "features.7",
        "features.18",
        "pooled",
        "logits",
    ];
    check_parity(&model.network, &fixture("mobilenet_v2_ref"), &taps);
    // Bit-identical to the network built from the safetensors file.
    let x = random_input(64, 3);
    let a = model.network.forward(&x).unwrap();
    let b = open_bare(MOBILENET_V2).network.forward(&x).unwrap();
    assert_eq!(rel_to_max(&a, &b), 0.0);
}

#[test]
fn f16_and_bf16_tensors_become_f32_in_both_formats() {
    let expected: Vec<f32> = (-6..6).map(|i| i as f32 / 4.0).collect();
    let check = |ckpt: &Checkpoint, names: &[&str]| {
        for name in names {
            let t = ckpt.get(name).unwrap();
            assert_eq!(t.dtype(), candle_core::DType::F32, "{name}");
            assert_eq!(t.dims(), [3, 4], "{name}");
            let v = t.flatten_all().unwrap().to_vec1::<f32>().unwrap();
            assert_eq!(v, expected, "{name}");
        }
    };
    // torch.save'd state dict: float32, float16, bfloat16.
    let pth = Checkpoint::open(&repo("tests/fixtures/dtypes.pth"), &Device::Cpu).unwrap();
    assert_eq!(pth.keys(), ["w.bf16", "w.f16", "w.f32"]);
    check(&pth, &["w.f32", "w.f16", "w.bf16"]);
    // safetensors with the same three dtypes.
    let base = Tensor::from_vec(expected.clone(), (3, 4), &Device::Cpu).unwrap();
    let tensors: HashMap<String, Tensor> = [
        ("w.f32", candle_core::DType::F32),
        ("w.f16", candle_core::DType::F16),
        ("w.bf16", candle_core::DType::BF16),
    ]
    .into_iter()
    .map(|(n, d)| (n.to_string(), base.to_dtype(d).unwrap()))
    .collect();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("dtypes.safetensors");
    candle_core::safetensors::save(&tensors, &path).unwrap();
    check(
        &Checkpoint::open(&path, &Device::Cpu).unwrap(),
        &["w.f32", "w.f16", "w.bf16"],
    );
}

#[test]
fn unreadable_pytorch_files_are_refused_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    // A legacy (pre-1.6) torch.save file starts with a bare pickle, not a zip archive.
    let legacy = dir.path().join("legacy.pth");
    std::fs::write(&legacy, b"\x80\x02\x8a\x0alz\xfc\x9cF\xf9 j\xa8P\x19.").unwrap();
    let msg = Checkpoint::open(&legacy, &Device::Cpu)
        .err()
        .expect("refused")
        .to_string();
    assert!(
        msg.contains("legacy.pth") && msg.contains("legacy"),
        "{msg}"
    );
    // A zip archive that is not a PyTorch checkpoint.
    let zip = dir.path().join("notes.pt");
    std::fs::write(&zip, b"PK\x03\x04 truncated").unwrap();
    let msg = zoo::resolve(zip.to_str().unwrap())
        .expect_err("refused")
        .to_string();
    assert!(
        msg.contains("notes.pt") && msg.contains("PyTorch checkpoint"),
        "{msg}"
    );
}

#[test]
fn vgg16_timm_random_weights_shapes_and_gradients() {
    let expected = vgg::expected_tensors("vgg16_timm", 10).unwrap();
    let shapes: zoo::detect::Shapes = expected.iter().cloned().collect();
    let found = zoo::detect::detect(&shapes).unwrap();
    assert_eq!(
        (found.architecture.as_str(), found.num_classes),
        ("vgg16_timm", 10)
    );
    assert!(found.why.contains("pre_logits.fc1"), "{}", found.why);
    let ckpt = random_checkpoint(&expected, 161);
    let net = zoo::build_network("vgg16_timm", &ckpt, 10).unwrap();
    let ids: Vec<&str> = net.layer_ids().collect();
    assert_eq!(
        &ids[16..],
        [
            "features.28",
            "features.30",
            "pre_logits.fc1",
            "pre_logits.fc2",
            "pooled",
            "logits"
        ]
    );
    let table = net.layers(224);
    assert_eq!(table[18].output_shape, [4096, 1, 1]);
    assert_eq!(table[20].output_shape, [4096]);
    // The same parameters as torchvision's vgg16, reshaped into convs.
    let params: usize = table.iter().map(|l| l.params).sum();
    assert_eq!(params, 138_357_544 - 990 * 4097);
    // A larger input leaves a map after the 7x7 conv, pooled by the head.
    assert_eq!(net.layers(288)[18].output_shape, [4096, 3, 3]);
    // At 32x32 the last pool is 1x1 and is spread over 7x7 before `pre_logits.fc1`.
    check_shapes_and_gradients(&net, 32, &[10]);
    // A wrong file for the timm layout names what it is.
    let msg = build_error("vgg16_timm", fixture_weights(RESNET18));
    assert!(msg.contains("looks like resnet18"), "{msg}");
}

#[test]
fn efficientnet_lite1_to_4_build_detect_and_run() {
    use convlens::zoo::efficientnet_lite::{self, LiteConfig};
    for (arch, blocks, head_side) in [
        ("efficientnet_lite1", 21, 8),
        ("efficientnet_lite2", 21, 9),
        ("efficientnet_lite3", 24, 9),
        ("efficientnet_lite4", 30, 10),
    ] {
        let expected = efficientnet_lite::expected_tensors(arch, 10).unwrap();
        let found = zoo::detect::detect(&expected.iter().cloned().collect()).unwrap();
        assert_eq!(
            (found.architecture.as_str(), found.num_classes),
            (arch, 10),
            "{}",
            found.why
        );
        let ckpt = random_checkpoint(&expected, blocks as u64);
        let net = zoo::build_network(arch, &ckpt, 10).unwrap();
        assert_eq!(net.layer_ids().count(), blocks + 4, "{arch}");
        let resolution = LiteConfig::of(arch).unwrap().resolution as usize;
        let table = net.layers(resolution);
        let head = &table[blocks + 1];
        assert_eq!(
            (head.id.as_str(), head.output_shape.as_slice()),
            ("head", &[1280, head_side, head_side][..]),
            "{arch}"
        );
        let y = net.forward(&random_input(64, 5)).unwrap();
        assert_eq!(y.dims(), [1, 10]);
        let v = y.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        assert!(v.iter().all(|x| x.is_finite()), "{arch}");
        // Opened as the wrong variant, the message names the right one.
        let wrong = if arch == "efficientnet_lite4" {
            "efficientnet_lite3"
        } else {
            "efficientnet_lite4"
        };
        let msg = match zoo::build_network(wrong, &ckpt, 10) {
            Ok(_) => panic!("{arch} built as {wrong}"),
            Err(e) => e.to_string(),
        };
        assert!(msg.contains(&format!("looks like {arch}")), "{msg}");
    }
    // Gradients reach every stage and the input of the deepest variant.
    let expected = efficientnet_lite::expected_tensors("efficientnet_lite4", 0).unwrap();
    let net =
        zoo::build_network("efficientnet_lite4", &random_checkpoint(&expected, 4), 0).unwrap();
    assert_eq!(net.output_layer(), "pooled");
    check_shapes_and_gradients(&net, 64, &[1280]);
}

#[test]
fn a_data_parallel_module_prefix_is_removed() {
    // torch.nn.DataParallel saves every key as `module.<name>`.
    let tensors: HashMap<String, Tensor> = fixture_weights(MOBILENET_V2)
        .into_iter()
        .map(|(k, t)| (format!("module.{k}"), t))
        .collect();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("wrapped.safetensors");
    candle_core::safetensors::save(&tensors, &path).unwrap();
    let model = zoo::resolve(path.to_str().unwrap())
        .and_then(|spec| spec.load(&Device::Cpu))
        .unwrap();
    assert_eq!(model.spec.manifest.architecture, "mobilenet_v2");
    let x = random_input(32, 8);
    let a = model.network.forward(&x).unwrap();
    let b = open_bare(MOBILENET_V2).network.forward(&x).unwrap();
    assert_eq!(rel_to_max(&a, &b), 0.0);
}
