//! Model export (`convlens export`, `convlens::interchange`): ONNX files evaluated by
//! `candle-onnx` give the network's logits; PyTorch state dicts load into torchvision/timm and
//! give them too (when a Python with torch is found, see [`python`]); outputs are never
//! overwritten and a failed or interrupted export leaves nothing behind.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{Device, Tensor};
use convlens::cancel::CancelToken;
use convlens::interchange::onnx::{BatchSize, OnnxOptions};
use convlens::interchange::{ExportFormat, ExportReport, ExportRequest, export};
use convlens::train::{Mode, TrainConfig, train};
use convlens::zoo::{Model, Preprocess};

use crate::common::{
    fashion_mini, fashion_mini_features, lite0, load_lite0, rel_to_max, repo, seeded,
    small_dataset, text,
};

/// The most an export's output may differ from convlens's, relative to the largest value.
const TOLERANCE: f32 = 1e-4;

fn request(format: ExportFormat, out: &Path, onnx: OnnxOptions) -> ExportRequest {
    ExportRequest {
        format,
        out: out.to_path_buf(),
        overwrite: false,
        onnx,
    }
}

fn run_export(model: &Model, req: &ExportRequest) -> ExportReport {
    export(model, req, &|_, _, _| {}, &CancelToken::new()).unwrap()
}

/// `n` seeded images `[n, 3, size, size]` (not the bundled photos the export checked itself on).
fn seeded_batch(n: usize, size: usize) -> Tensor {
    let images: Vec<Tensor> = (0..n)
        .map(|i| seeded::input(100 + i as u64, size))
        .collect();
    Tensor::cat(&images, 0).unwrap()
}

/// Runs an ONNX file with candle-onnx: the output `output` for `input` fed as `input_name`.
fn run_onnx(
    path: &Path,
    input_name: &str,
    input: &Tensor,
    output: &str,
) -> candle_core::Result<Tensor> {
    let proto = candle_onnx::read_file(path)?;
    let inputs = HashMap::from([(input_name.to_string(), input.clone())]);
    let mut out = candle_onnx::simple_eval(&proto, inputs)?;
    Ok(out.remove(output).expect("the graph's output"))
}

/// Exports `model` to ONNX with a dynamic batch and checks the file at batch 1 and 7 against
/// the network's logits.
fn check_onnx_dynamic(model: &Model, name: &str) {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join(format!("{name}.onnx"));
    let report = run_export(
        model,
        &request(ExportFormat::Onnx, &out, OnnxOptions::default()),
    );
    assert!(
        report.verification.passed(),
        "{}",
        report.verification.summary()
    );
    let size = model.spec.preprocess.input_size() as usize;
    for n in [1, 7] {
        let x = seeded_batch(n, size);
        let expected = model.network.forward(&x).unwrap();
        let found = run_onnx(&out, "input", &x, "logits").unwrap();
        let rel = rel_to_max(&found, &expected);
        println!("{name}: ONNX at batch {n}: {rel:.2e} relative to max");
        assert!(rel < TOLERANCE, "{name} batch {n}: {rel}");
    }
}

fn resnet18() -> Model {
    convlens::zoo::resolve(
        repo("tests/fixtures/resnet18_random_fp16.safetensors")
            .to_str()
            .unwrap(),
    )
    .and_then(|spec| spec.load(&Device::Cpu))
    .unwrap()
}

#[test]
fn onnx_lite0_gives_the_networks_logits_at_batch_1_and_7() {
    check_onnx_dynamic(&lite0(), "lite0");
}

#[test]
fn onnx_resnet18_gives_the_networks_logits_at_batch_1_and_7() {
    check_onnx_dynamic(&resnet18(), "resnet18");
}

/// A zoo fixture as a model with its input shrunk to `size` pixels (so the checks stay quick):
/// `tests/fixtures/<fixture>.safetensors` when it is a (reduced-width) checkpoint, else the
/// seeded weights of a `_zoo` or `zoo_b_<id>` fixture, written to `dir` (the latter as
/// `<id>.safetensors`: the name tells timm's `tf_` ports apart) and opened as a bare weights
/// file.
fn zoo_model(dir: &Path, fixture: &str, size: u32) -> Model {
    let path = fixture_weights(dir, fixture);
    let mut model = convlens::zoo::resolve(path.to_str().unwrap())
        .and_then(|spec| spec.load(&Device::Cpu))
        .unwrap_or_else(|e| panic!("{fixture}: {e}"));
    match &mut model.spec.preprocess {
        Preprocess::CenterCrop(t) => {
            t.resize_shorter = size * t.resize_shorter / t.crop;
            t.crop = size;
        }
        Preprocess::Resize(t) => t.size = size,
    }
    model
}

/// The weights file of a zoo fixture (see [`zoo_model`]).
fn fixture_weights(dir: &Path, fixture: &str) -> PathBuf {
    if fixture.ends_with("_zoo") || fixture.starts_with("zoo_b_") {
        let name = fixture.strip_prefix("zoo_b_").unwrap_or(fixture);
        let path = dir.join(format!("{name}.safetensors"));
        let weights = crate::common::seeded::Seeded::open(fixture).weights();
        candle_core::safetensors::save(&weights, &path).unwrap();
        path
    } else {
        repo(&format!("tests/fixtures/{fixture}.safetensors"))
    }
}

/// The families merged after the first exports, as `(fixture, input size)`: MobileNet V1,
/// Xception (separable convs), Inception V3 (Concat/Sequential stages, 1x7/7x1 kernels, 3x3
/// average pools), ConvNeXt in both namings (LayerNorm, GELU, layer scale), DenseNet-121.
const FAMILIES: [(&str, u32); 6] = [
    ("mobilenetv1_100_zoo", 96),
    ("legacy_xception_zoo", 96),
    ("inception_v3_zoo", 139),
    ("convnext_tiny_random_fp16", 96),
    ("convnext_tiny_timm_random_fp16", 96),
    ("densenet121_random_fp16", 96),
];

#[test]
fn onnx_of_every_zoo_family_gives_the_networks_logits_at_batch_1_and_7() {
    let dir = tempfile::tempdir().unwrap();
    for (fixture, size) in FAMILIES {
        check_onnx_dynamic(&zoo_model(dir.path(), fixture, size), fixture);
    }
}

/// The families of #14's second part (seeded full-size checkpoints, `zoo_b_<id>` fixtures):
/// SiLU, hard-swish, hard-sigmoid and squeeze-excitation, and timm's `tf_` ports with
/// TensorFlow "same" padding, uneven at 100 pixels (100 -> 50 -> 25 -> 13 -> 7 -> 4: stride 2
/// pads one pixel after on an even side, one on each side of an odd one). EfficientNet B0..B4
/// in torchvision's, timm's and timm's TensorFlow port's naming:
const EFFICIENTNET_B: [&str; 15] = convlens::zoo::efficientnet::ARCHITECTURES;
/// MobileNetV3 Large and Small, torchvision's and timm's:
const MOBILENET_V3: [&str; 4] = convlens::zoo::mobilenet_v3::ARCHITECTURES;
/// timm's TensorFlow ports of EfficientNet-Lite0..4:
const TF_LITE: [&str; 5] = [
    "tf_efficientnet_lite0",
    "tf_efficientnet_lite1",
    "tf_efficientnet_lite2",
    "tf_efficientnet_lite3",
    "tf_efficientnet_lite4",
];
/// The input side the `zoo_b` families are checked at.
const ZOO_B_SIZE: u32 = 100;

/// [`check_onnx_dynamic`] on each `zoo_b` id at [`ZOO_B_SIZE`] pixels.
fn check_zoo_b(ids: &[&str]) {
    let dir = tempfile::tempdir().unwrap();
    for id in ids {
        let model = zoo_model(dir.path(), &format!("zoo_b_{id}"), ZOO_B_SIZE);
        assert_eq!(model.spec.manifest.architecture, *id);
        check_onnx_dynamic(&model, id);
    }
}

/// B0 in each naming and the largest TensorFlow port (the sweep of every size is below).
#[test]
fn onnx_of_efficientnet_b_in_all_three_namings_gives_the_logits() {
    check_zoo_b(&[
        "efficientnet_b0",
        "efficientnet_b0_timm",
        "tf_efficientnet_b0",
        "tf_efficientnet_b4",
    ]);
}

#[test]
fn onnx_of_mobilenet_v3_torchvision_and_timm_gives_the_logits() {
    check_zoo_b(&MOBILENET_V3);
}

#[test]
fn onnx_of_timms_tf_efficientnet_lite_gives_the_logits() {
    check_zoo_b(&["tf_efficientnet_lite0", "tf_efficientnet_lite4"]);
}

/// Every size of every naming: B0..B4 three times over and Lite0..4 (14 minutes at a load
/// of 10 on 2 cores: candle runs a grouped Conv group by group, a depthwise one channel by
/// channel).
#[test]
#[ignore = "minutes: run with --ignored"]
fn onnx_of_every_efficientnet_size_and_naming_gives_the_logits() {
    check_zoo_b(&EFFICIENTNET_B);
    check_zoo_b(&TF_LITE);
}

/// A Lite0 head trained one epoch on the bundled dataset (features from the shared cache), as
/// a model folder in `dir`.
fn trained_lite0(dir: &Path) -> Model {
    let cfg = TrainConfig {
        epochs: 1,
        cache_dir: Some(fashion_mini_features().to_path_buf()),
        ..TrainConfig::default()
    };
    train(
        &lite0(),
        &fashion_mini(),
        &cfg,
        dir,
        &mut |_| {},
        &CancelToken::new(),
    )
    .unwrap();
    convlens::zoo::resolve(dir.to_str().unwrap())
        .and_then(|spec| spec.load(&Device::Cpu))
        .unwrap()
}

#[test]
fn onnx_of_a_trained_model_normalises_and_gives_probabilities() {
    let dir = tempfile::tempdir().unwrap();
    let model = trained_lite0(&dir.path().join("run"));
    check_onnx_dynamic(&model, "fashion-mini");
    // With the preprocessing and softmax in the graph: `[0, 1]` RGB in, probabilities out.
    let out = dir.path().join("with_preprocess.onnx");
    let opts = OnnxOptions {
        include_preprocess: true,
        softmax: true,
        ..OnnxOptions::default()
    };
    run_export(&model, &request(ExportFormat::Onnx, &out, opts));
    let x = seeded_batch(3, 224);
    let rgb = ((&x * 0.502).unwrap() + 0.498).unwrap(); // the input the normalisation gives x
    let expected = candle_nn::ops::softmax(&model.network.forward(&x).unwrap(), 1).unwrap();
    let found = run_onnx(&out, "image", &rgb, "probabilities").unwrap();
    let rel = rel_to_max(&found, &expected);
    println!("fashion-mini: ONNX with preprocessing and softmax: {rel:.2e}");
    assert!(rel < TOLERANCE, "{rel}");
    // The metadata says how to prepare an image and names the classes.
    let meta: HashMap<String, String> =
        convlens::interchange::onnx::metadata(&candle_onnx::read_file(&out).unwrap())
            .into_iter()
            .collect();
    assert_eq!(meta["input_size"], "224");
    assert_eq!(
        meta["class_names"],
        serde_json::to_string(&model.spec.labels).unwrap()
    );
    assert_eq!(model.spec.labels.len(), 4);
    assert_eq!(meta["mean"], "[0.498,0.498,0.498]");
    assert_eq!(meta["std"], "[0.502,0.502,0.502]");
    assert!(meta["resize"].contains("224x224"), "{}", meta["resize"]);
    assert!(
        meta["normalization"].contains("in the graph"),
        "{}",
        meta["normalization"]
    );
}

#[test]
fn onnx_of_the_scratch_convnet_gives_its_logits() {
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("scratch");
    let cfg = TrainConfig {
        mode: Mode::Scratch,
        scratch_size: 80,
        epochs: 1,
        ..TrainConfig::default()
    };
    train(
        &lite0(),
        &fashion_mini(),
        &cfg,
        &run,
        &mut |_| {},
        &CancelToken::new(),
    )
    .unwrap();
    let model = convlens::zoo::resolve(run.to_str().unwrap())
        .and_then(|s| s.load(&Device::Cpu))
        .unwrap();
    check_onnx_dynamic(&model, "scratch");
}

#[test]
fn a_fixed_batch_is_written_into_the_input_shape() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("fixed.onnx");
    let model = resnet18();
    let opts = OnnxOptions {
        batch: BatchSize::Fixed(2),
        opset: 13,
        ..OnnxOptions::default()
    };
    let report = run_export(&model, &request(ExportFormat::Onnx, &out, opts));
    assert!(
        report.verification.what.contains("batch 2"),
        "{}",
        report.verification.what
    );
    let x = seeded_batch(2, 224);
    let found = run_onnx(&out, "input", &x, "logits").unwrap();
    assert!(rel_to_max(&found, &model.network.forward(&x).unwrap()) < TOLERANCE);
    let err = run_onnx(&out, "input", &seeded_batch(3, 224), "logits").unwrap_err();
    assert!(err.to_string().contains("unexpected dim 0"), "{err}");
    let proto = candle_onnx::read_file(&out).unwrap();
    assert_eq!(proto.opset_import[0].version, 13);
}

#[test]
fn a_cancelled_export_leaves_no_file() {
    let dir = tempfile::tempdir().unwrap();
    let cancel = CancelToken::new();
    cancel.cancel();
    let req = request(
        ExportFormat::Onnx,
        &dir.path().join("m.onnx"),
        OnnxOptions::default(),
    );
    let err = export(&resnet18(), &req, &|_, _, _| {}, &cancel)
        .err()
        .unwrap();
    assert!(matches!(err, convlens::Error::Cancelled), "{err}");
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
}

/// The PyTorch export: files, key names, and the check convlens made.
fn pytorch_export(model: &Model, out: &Path) -> ExportReport {
    let report = run_export(
        model,
        &request(ExportFormat::Pytorch, out, OnnxOptions::default()),
    );
    assert!(
        report.verification.passed(),
        "{}",
        report.verification.summary()
    );
    // Each file gets the mode a file created there gets (the umask's, not a temporary file's
    // 0600).
    #[cfg(unix)]
    for file in &report.files {
        use std::os::unix::fs::PermissionsExt;
        let plain = file.with_extension("mode-probe");
        std::fs::write(&plain, b"").unwrap();
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(file), mode(&plain), "{}", file.display());
        std::fs::remove_file(&plain).unwrap();
    }
    report
}

/// A run of `base` fine-tuned into its stages `layers`, as fine-tuning leaves it: a head trained
/// one epoch on 16 fashion-mini images, then the stages' tensors as convlens saves them
/// (BatchNorm folded, named by the stage) moved (x1.1 + 0.01) into its weights file and listed
/// in its manifest. (Which epoch a real fine-tuning keeps depends on its validation loss, so a
/// short run may keep a head-only one.)
fn finetuned(base: &Model, dir: &Path, layers: &[&str]) -> Model {
    use convlens::train::bundle::{self, TrainedManifest};
    let data = small_dataset(&dir.join("data"), 4, 2);
    let cfg = TrainConfig {
        epochs: 1,
        batch_size: 8,
        augment: convlens::data::augment::Augment::none(),
        patience: None,
        cache_dir: Some(dir.join("cache")),
        ..TrainConfig::default()
    };
    let out = dir.join("run");
    train(base, &data, &cfg, &out, &mut |_| {}, &CancelToken::new()).unwrap();
    let mut tensors = bundle::load_tensors(&out, &Device::Cpu).unwrap();
    let mut net = base.spec.load(&Device::Cpu).unwrap().network;
    for (name, t) in net.tensors_mut_from(layers[0]).unwrap() {
        if layers.iter().any(|l| name.starts_with(&format!("{l}."))) {
            tensors.insert(name, t.affine(1.1, 0.01).unwrap());
        }
    }
    let mut manifest = TrainedManifest::read(&out).unwrap();
    manifest.finetuned_layers = layers.iter().map(|l| l.to_string()).collect();
    let tensors: Vec<(String, Tensor)> = tensors.into_iter().collect();
    bundle::save(&out, &manifest, &tensors).unwrap();
    convlens::zoo::resolve(out.to_str().unwrap())
        .and_then(|spec| spec.load(&Device::Cpu))
        .unwrap()
}

/// ResNet-18 (random weights) at 64 pixels, a bare weights file with a manifest in `dir`.
fn small_resnet18(dir: &Path) -> Model {
    let weights = repo("tests/fixtures/resnet18_random_fp16.safetensors");
    let manifest = crate::zoo_a::small_manifest(dir, &weights, "resnet18", 64);
    convlens::zoo::resolve(manifest.to_str().unwrap())
        .and_then(|spec| spec.load(&Device::Cpu))
        .unwrap()
}

/// A run fine-tuned into its base layers exports them: in timm's names (Lite0, BatchNorm
/// epsilon 1e-3) and torchvision's (ResNet-18, a downsample among them), each fine-tuned
/// convolution with BatchNorm folded in and an identity BatchNorm. convlens reads the file
/// back and gets the run's logits (the export's own check, which fails on a misplaced tensor);
/// the tensors are the run's, not the base's.
#[test]
fn pytorch_export_of_a_finetuned_run_carries_its_base_layers() {
    let dir = tempfile::tempdir().unwrap();
    let resnet18 = small_resnet18(dir.path());
    let lite0 = lite0();
    // (name, base, stages fine-tuned, [a fine-tuned conv as saved, exported, its BatchNorm]).
    let cases: [(&str, &Model, &[&str], [&str; 3]); 2] = [
        (
            "lite0",
            &lite0,
            &["blocks.15", "head"],
            [
                "blocks.15.project.weight",
                "blocks.6.0.conv_pwl.weight",
                "blocks.6.0.bn3.weight",
            ],
        ),
        (
            "resnet18",
            &resnet18,
            &["layer4"],
            [
                "layer4.0.downsample.weight",
                "layer4.0.downsample.0.weight",
                "layer4.0.downsample.1.weight",
            ],
        ),
    ];
    for (name, base, layers, [saved_key, torch_key, bn]) in cases {
        let model = finetuned(base, &dir.path().join(name), layers);
        let report = pytorch_export(&model, &dir.path().join(format!("{name}_export")));
        println!("{name} fine-tuned: {}", report.verification.summary());
        let exported = candle_core::safetensors::load(&report.files[0], &Device::Cpu).unwrap();
        let (run, manifest) = model.spec.trained.as_ref().unwrap();
        let run_tensors = convlens::train::bundle::load_tensors(run, &Device::Cpu).unwrap();
        let saved = &run_tensors[saved_key];
        let written = exported[torch_key].reshape(saved.dims()).unwrap();
        assert_eq!(rel_to_max(&written, saved), 0.0, "{name}: {torch_key}");
        // The run's logits are not the base's with its head: ignoring the fine-tuned stages
        // would fail the export's check.
        let x = seeded_batch(2, base.spec.preprocess.input_size() as usize);
        let mut plain = base.spec.load(&Device::Cpu).unwrap().network;
        plain.truncate_after("pooled").unwrap();
        let kind = manifest.head.unwrap_or_default();
        let head = convlens::train::head::Head::from_tensors(kind, &run_tensors).unwrap();
        plain.push("logits", Box::new(head));
        let apart = rel_to_max(
            &plain.forward(&x).unwrap(),
            &model.network.forward(&x).unwrap(),
        );
        assert!(
            apart > 1e-2,
            "{name}: the fine-tuning moved the logits by {apart}"
        );
        let scale: Vec<f32> = exported[bn].to_vec1().unwrap();
        assert!(scale.iter().all(|&v| v == 1.0), "{name}: {bn} {scale:?}");
    }
}

#[test]
fn pytorch_state_dicts_use_torchvision_and_timm_names() {
    let dir = tempfile::tempdir().unwrap();
    let report = pytorch_export(&lite0(), dir.path());
    let [weights, script] = &report.files[..] else {
        panic!("{:?}", report.files)
    };
    assert_eq!(
        weights.file_name().unwrap(),
        "efficientnet_lite0.safetensors"
    );
    assert_eq!(script.file_name().unwrap(), "efficientnet_lite0_load.py");
    let tensors = candle_core::safetensors::load(weights, &Device::Cpu).unwrap();
    // timm's efficientnet_lite0 names, BatchNorm unfolded with its running statistics.
    for key in [
        "conv_stem.weight",
        "bn1.running_var",
        "blocks.6.0.conv_pwl.weight",
        "classifier.bias",
    ] {
        assert!(tensors.contains_key(key), "{key}");
    }
    assert!(
        std::fs::read_to_string(script)
            .unwrap()
            .contains("timm.create_model(\"efficientnet_lite0\"")
    );
    let report = pytorch_export(&resnet18(), &dir.path().join("r18.safetensors"));
    let tensors = candle_core::safetensors::load(&report.files[0], &Device::Cpu).unwrap();
    assert!(tensors.contains_key("layer4.1.bn2.running_mean") && tensors.contains_key("fc.weight"));
    assert!(report.files[1].ends_with("r18_load.py"));
}

/// A Python with torch, torchvision, timm, safetensors and onnxruntime: `$CONVLENS_TEST_PYTHON`
/// (e.g. `/tmp/venv-cam/bin/python`), else `python3`; `None` (and a line saying the test is
/// skipped) when it cannot import them.
fn python() -> Option<PathBuf> {
    let python = std::env::var_os("CONVLENS_TEST_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("python3"));
    let ok = std::process::Command::new(&python)
        .args([
            "-c",
            "import torch, torchvision, timm, safetensors, onnxruntime",
        ])
        .output()
        .is_ok_and(|o| o.status.success());
    if !ok {
        println!(
            "skipped: {} cannot import torch, torchvision, timm, safetensors and onnxruntime \
             (set CONVLENS_TEST_PYTHON to such a Python, e.g. /tmp/venv-cam/bin/python)",
            python.display()
        );
    }
    ok.then_some(python)
}

/// Runs the written loading script's `load_model()` and, when given, the ONNX file with ONNX
/// Runtime, on `x`; returns `(torch logits, onnxruntime logits)`.
fn run_in_python(
    python: &Path,
    script: Option<&Path>,
    onnx: Option<&Path>,
    x: &Tensor,
) -> (Option<Tensor>, Option<Tensor>) {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("input.safetensors");
    let output = dir.path().join("output.safetensors");
    candle_core::safetensors::save(&HashMap::from([("x".to_string(), x.clone())]), &input).unwrap();
    let code = r#"
import runpy, sys, torch
from safetensors.torch import load_file, save_file
script, onnx, inp, out = sys.argv[1:]
x = load_file(inp)["x"]
result = {}
if script:
    model = runpy.run_path(script)["load_model"]()
    with torch.no_grad():
        result["torch"] = model(x).contiguous()
if onnx:
    import onnxruntime
    session = onnxruntime.InferenceSession(onnx, providers=["CPUExecutionProvider"])
    result["onnxruntime"] = torch.from_numpy(session.run(["logits"], {"input": x.numpy()})[0])
save_file(result, out)
"#;
    let arg = |p: Option<&Path>| {
        p.map(|p| p.to_str().unwrap().to_string())
            .unwrap_or_default()
    };
    let o = std::process::Command::new(python)
        .args(["-c", code, &arg(script), &arg(onnx)])
        .arg(&input)
        .arg(&output)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o.stderr));
    let mut result = candle_core::safetensors::load(&output, &Device::Cpu).unwrap();
    (result.remove("torch"), result.remove("onnxruntime"))
}

#[test]
fn exports_load_in_pytorch_and_onnx_runtime() {
    let Some(python) = python() else { return };
    let dir = tempfile::tempdir().unwrap();
    let trained = trained_lite0(&dir.path().join("run"));
    let tuned = finetuned(&lite0(), &dir.path().join("tuned"), &["blocks.15", "head"]);
    for (name, model) in [
        ("lite0", load_lite0()),
        ("resnet18", resnet18()),
        ("trained", trained),
        ("finetuned", tuned),
    ] {
        check_in_python(&python, dir.path(), name, &model);
    }
}

/// Exports `model` to PyTorch and ONNX in `dir`, runs the loading script and ONNX Runtime on
/// three seeded images and compares both with convlens's logits.
fn check_in_python(python: &Path, dir: &Path, name: &str, model: &Model) {
    let out = dir.join(name);
    let files = pytorch_export(model, &out).files;
    let onnx = dir.join(format!("{name}.onnx"));
    run_export(
        model,
        &request(ExportFormat::Onnx, &onnx, OnnxOptions::default()),
    );
    let x = seeded_batch(3, model.spec.preprocess.input_size() as usize);
    let expected = model.network.forward(&x).unwrap();
    let (torch, ort) = run_in_python(python, Some(&files[1]), Some(&onnx), &x);
    let (rel_torch, rel_ort) = (
        rel_to_max(&torch.unwrap(), &expected),
        rel_to_max(&ort.unwrap(), &expected),
    );
    println!("{name}: PyTorch {rel_torch:.2e}, ONNX Runtime {rel_ort:.2e} relative to max");
    assert!(
        rel_torch < TOLERANCE && rel_ort < TOLERANCE,
        "{name}: {rel_torch} {rel_ort}"
    );
}

/// A `zoo_b` id (seeded weights) at [`ZOO_B_SIZE`] pixels, from a manifest in `dir` that names
/// the architecture (so a run trained on it finds its base and size again).
fn zoo_b_small(dir: &Path, id: &str) -> Model {
    let model = small_model(dir, &format!("zoo_b_{id}"), ZOO_B_SIZE);
    assert_eq!(model.spec.manifest.architecture, id);
    model
}

/// A zoo fixture (see [`zoo_model`]) at `size` pixels, from a manifest in `dir` that names the
/// architecture the weights are detected as.
fn small_model(dir: &Path, fixture: &str, size: u32) -> Model {
    let weights = fixture_weights(dir, fixture);
    let id = convlens::zoo::resolve(weights.to_str().unwrap())
        .unwrap()
        .manifest
        .architecture;
    let manifest = crate::zoo_a::small_manifest(dir, &weights, &id, size);
    convlens::zoo::resolve(manifest.to_str().unwrap())
        .and_then(|spec| spec.load(&Device::Cpu))
        .unwrap()
}

/// How [`FAMILIES`] (in that order) are rebuilt in PyTorch: `(the line of the loading script
/// that builds the module, the classifier's key)`. ConvNeXt and DenseNet at the fixtures'
/// reduced widths, Inception V3 without its auxiliary classifier.
const FAMILIES_PYTORCH: [(&str, &str); 6] = [
    (
        "timm.create_model(\"mobilenetv1_100\", pretrained=False, num_classes=1000)",
        "classifier",
    ),
    (
        "timm.create_model(\"legacy_xception\", pretrained=False, num_classes=1000)",
        "fc",
    ),
    (
        "torchvision.models.inception_v3(weights=None, num_classes=1000, aux_logits=False, \
         init_weights=False)",
        "fc",
    ),
    (
        "torchvision.models.convnext.ConvNeXt([torchvision.models.convnext.CNBlockConfig(8, 16, \
         3), torchvision.models.convnext.CNBlockConfig(16, 32, 3), \
         torchvision.models.convnext.CNBlockConfig(32, 64, 9), \
         torchvision.models.convnext.CNBlockConfig(64, None, 3)], num_classes=1000)",
        "classifier.2",
    ),
    (
        "timm.create_model(\"convnext_tiny\", pretrained=False, num_classes=1000, \
         dims=(8, 16, 32, 64))",
        "head.fc",
    ),
    (
        "torchvision.models.DenseNet(growth_rate=4, block_config=(6, 12, 24, 16), \
         num_init_features=8, bn_size=2, num_classes=1000)",
        "classifier",
    ),
];

/// A [`FAMILIES`] fixture as a small base model in `dir`, and a run on it with a trained head
/// and its two top stages fine-tuned (see [`finetuned`]).
fn family_and_run(dir: &Path, fixture: &str, size: u32) -> (Model, Model) {
    let base = small_model(dir, fixture, size);
    let ids: Vec<&str> = base.network.layer_ids().collect();
    let pooled = ids.iter().position(|&l| l == "pooled").unwrap();
    let top = &ids[pooled - 2..pooled];
    let run = finetuned(&base, &dir.join(format!("{fixture}_run")), top);
    (base, run)
}

/// Every family's PyTorch export, of the base and of a run with a trained head and fine-tuned
/// stages: the script builds the family's module, the state dict holds the checkpoint's
/// names (the base's classifier replaced by the head's two layers, the last with a bias per
/// class), the fine-tuned tensors differ from the base's, and convlens's check passed.
#[test]
fn pytorch_export_of_every_zoo_family_and_a_finetuned_run_on_it() {
    let dir = tempfile::tempdir().unwrap();
    for ((fixture, size), (build, slot)) in FAMILIES.into_iter().zip(FAMILIES_PYTORCH) {
        let (base, run) = family_and_run(dir.path(), fixture, size);
        let id = base.spec.manifest.architecture.clone();
        let files = pytorch_export(&base, &dir.path().join(format!("{fixture}_base"))).files;
        let script = std::fs::read_to_string(&files[1]).unwrap();
        assert!(script.contains(build), "{fixture}: {script}");
        let exported = candle_core::safetensors::load(&files[0], &Device::Cpu).unwrap();
        let ours = convlens::zoo::expected_tensors(&id, 1000).unwrap();
        assert_eq!(exported.len(), ours.len(), "{fixture}");
        assert!(
            ours.iter().all(|(k, _)| exported.contains_key(k)),
            "{fixture}"
        );

        let report = pytorch_export(&run, &dir.path().join(format!("{fixture}_tuned")));
        println!("{fixture} fine-tuned: {}", report.verification.summary());
        let script = std::fs::read_to_string(&report.files[1]).unwrap();
        let replaced = format!("model.{} = nn.Sequential(nn.Linear(", slot_attribute(slot));
        assert!(
            script.contains(build) && script.contains(&replaced),
            "{fixture}: {script}"
        );
        let tuned = candle_core::safetensors::load(&report.files[0], &Device::Cpu).unwrap();
        let head: Vec<&String> = tuned
            .keys()
            .filter(|k| k.starts_with(&format!("{slot}.")))
            .collect();
        let (run_dir, _) = run.spec.trained.as_ref().unwrap();
        let run_tensors = convlens::train::bundle::load_tensors(run_dir, &Device::Cpu).unwrap();
        let head_tensors = run_tensors.keys().filter(|k| k.starts_with("head."));
        assert_eq!(head.len(), head_tensors.count(), "{fixture}: {head:?}");
        let last_bias = head.iter().filter(|k| k.ends_with(".bias")).max().unwrap();
        assert_eq!(tuned[*last_bias].dims(), [4], "{fixture}: {last_bias}");
        let changed = exported
            .iter()
            .filter(|(k, t)| {
                !k.starts_with(&format!("{slot}.")) && rel_to_max(&tuned[*k], t) > 1e-3
            })
            .count();
        println!("{fixture}: {changed} tensors fine-tuned");
        assert!(changed > 0, "{fixture}: no fine-tuned tensor was exported");
    }
}

/// `classifier.2` as the Python attribute `classifier[2]`.
fn slot_attribute(slot: &str) -> String {
    match slot.rsplit_once('.') {
        Some((a, i)) if i.parse::<usize>().is_ok() => format!("{a}[{i}]"),
        _ => slot.to_string(),
    }
}

/// The same exports rebuilt by torchvision/timm from the written script give convlens's
/// logits (and their ONNX files in ONNX Runtime too).
#[test]
fn every_zoo_familys_pytorch_export_loads_in_torchvision_and_timm() {
    let Some(python) = python() else { return };
    let dir = tempfile::tempdir().unwrap();
    for (fixture, size) in FAMILIES {
        let (base, run) = family_and_run(dir.path(), fixture, size);
        check_in_python(&python, dir.path(), &format!("{fixture}_base"), &base);
        check_in_python(&python, dir.path(), &format!("{fixture}_tuned"), &run);
    }
}

/// EfficientNet-B, MobileNetV3, timm's Lite and MobileNetV2 ports, as `(id, the line of the
/// loading script that builds the module)`.
const ZOO_B_PYTORCH: [(&str, &str); 9] = [
    (
        "efficientnet_b0",
        "torchvision.models.efficientnet_b0(weights=None, num_classes=1000)",
    ),
    (
        "efficientnet_b0_timm",
        "timm.create_model(\"efficientnet_b0\", pretrained=False, num_classes=1000)",
    ),
    (
        "tf_efficientnet_b0",
        "timm.create_model(\"tf_efficientnet_b0\", pretrained=False, num_classes=1000)",
    ),
    (
        "mobilenet_v3_large",
        "torchvision.models.mobilenet_v3_large(weights=None, num_classes=1000)",
    ),
    (
        "mobilenet_v3_small",
        "torchvision.models.mobilenet_v3_small(weights=None, num_classes=1000)",
    ),
    (
        "mobilenetv3_large_100",
        "timm.create_model(\"mobilenetv3_large_100\", pretrained=False, num_classes=1000)",
    ),
    (
        "mobilenetv3_small_100",
        "timm.create_model(\"mobilenetv3_small_100\", pretrained=False, num_classes=1000)",
    ),
    (
        "tf_efficientnet_lite0",
        "timm.create_model(\"tf_efficientnet_lite0\", pretrained=False, num_classes=1000)",
    ),
    (
        "mobilenetv2_100",
        "timm.create_model(\"mobilenetv2_100\", pretrained=False, num_classes=1000)",
    ),
];

/// Runs of a `zoo_b` base fine-tuned into its top stages: `(id, stages)`, timm's TensorFlow
/// port (BatchNorm epsilon 1e-3, "same" padding) and torchvision's MobileNetV3 (epsilon 1e-3).
const ZOO_B_FINETUNED: [(&str, [&str; 2]); 2] = [
    ("tf_efficientnet_b0", ["blocks.6.0", "conv_head"]),
    ("mobilenet_v3_small", ["features.11", "features.12"]),
];

/// The PyTorch export of each naming: the state dict in the checkpoint's own names (they are
/// torchvision's and timm's), a script that builds the right module, and convlens's check
/// (read back, rebuilt, the logits compared) passed; runs fine-tuned into their base layers
/// too.
#[test]
fn pytorch_export_of_efficientnet_b_and_mobilenet_v3_in_every_naming() {
    let dir = tempfile::tempdir().unwrap();
    for (id, build) in ZOO_B_PYTORCH {
        let model = zoo_b_small(dir.path(), id);
        let report = pytorch_export(&model, &dir.path().join(format!("{id}_export")));
        println!("{id}: {}", report.verification.summary());
        let script = std::fs::read_to_string(&report.files[1]).unwrap();
        assert!(script.contains(build), "{id}: {script}");
        let exported = candle_core::safetensors::load(&report.files[0], &Device::Cpu).unwrap();
        let ours = convlens::zoo::expected_tensors(id, 1000).unwrap();
        assert_eq!(exported.len(), ours.len(), "{id}");
        assert!(ours.iter().all(|(k, _)| exported.contains_key(k)), "{id}");
    }
    for (id, layers) in ZOO_B_FINETUNED {
        let base = zoo_b_small(dir.path(), id);
        let model = finetuned(&base, &dir.path().join(format!("{id}_tuned")), &layers);
        let report = pytorch_export(&model, &dir.path().join(format!("{id}_tuned_export")));
        println!("{id} fine-tuned: {}", report.verification.summary());
    }
}

/// The same exports rebuilt by torchvision/timm from the written script, and their ONNX files
/// in ONNX Runtime, give convlens's logits.
#[test]
fn zoo_b_exports_load_in_pytorch_and_onnx_runtime() {
    let Some(python) = python() else { return };
    let dir = tempfile::tempdir().unwrap();
    for (id, _) in ZOO_B_PYTORCH {
        check_in_python(&python, dir.path(), id, &zoo_b_small(dir.path(), id));
    }
    for (id, layers) in ZOO_B_FINETUNED {
        let base = zoo_b_small(dir.path(), id);
        let model = finetuned(&base, &dir.path().join(format!("{id}_tuned")), &layers);
        check_in_python(&python, dir.path(), &format!("{id}_tuned"), &model);
    }
}

/// Every family's ONNX file run by ONNX Runtime gives convlens's logits (of the `zoo_b`
/// families B0 in each naming, B3's TensorFlow port, both MobileNetV3s in both namings and
/// timm's Lite0 port).
#[test]
fn every_zoo_familys_onnx_runs_in_onnx_runtime() {
    let Some(python) = python() else { return };
    let dir = tempfile::tempdir().unwrap();
    let zoo_b = [
        "efficientnet_b0",
        "efficientnet_b0_timm",
        "tf_efficientnet_b0",
        "tf_efficientnet_b3",
        "tf_efficientnet_lite0",
    ]
    .into_iter()
    .chain(MOBILENET_V3)
    .map(|id| (format!("zoo_b_{id}"), ZOO_B_SIZE));
    let families = FAMILIES.map(|(f, size)| (f.to_string(), size));
    for (fixture, size) in families.into_iter().chain(zoo_b) {
        let fixture = fixture.as_str();
        let model = zoo_model(dir.path(), fixture, size);
        let onnx = dir.path().join(format!("{fixture}.onnx"));
        run_export(
            &model,
            &request(ExportFormat::Onnx, &onnx, OnnxOptions::default()),
        );
        let x = seeded_batch(3, size as usize);
        let expected = model.network.forward(&x).unwrap();
        let ort = run_in_python(&python, None, Some(&onnx), &x).1.unwrap();
        let rel = rel_to_max(&ort, &expected);
        println!("{fixture}: ONNX Runtime {rel:.2e} relative to max");
        assert!(rel < TOLERANCE, "{fixture}: {rel}");
    }
}
