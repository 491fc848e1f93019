//! The benchmark suite of the app's workloads on the CPU, printed as JSON.
//!
//! `cargo bench --bench suite [-- --quick] [--only a,b] [--folder DIR] [--images N] [--lucid-batch N]`
//!
//! Workloads (names shared with `benches/reference/perf.py`, which runs the same ones in
//! PyTorch and ONNX Runtime so that every number can be quoted as a ratio measured in one run;
//! `benches/reference/compare.py` runs both alternately and prints the ratio table):
//!
//! | name | what | unit |
//! | --- | --- | --- |
//! | `fwd_b1` | Lite0 forward, batch 1 | ms |
//! | `fwd_b32` | Lite0 forward, batch 32 | img/s |
//! | `extract_folder` | pooled features of a folder of JPEGs (decode + resize + forward, batch 32, no cache) | img/s |
//! | `finetune_top_b16` | one step, batch 16: blocks.15 + head conv + a dense head unfrozen (forward, backward, AdamW) | ms |
//! | `finetune_all_b16` | the same with every layer unfrozen | ms |
//! | `head_epoch` | one epoch of the dense head on 1,600 cached 1280-d features, batch 32, AdamW | ms |
//! | `gradcam` | Grad-CAM of chelsea.png at `head` (the whole map, 224x224) | ms |
//! | `ascent_128_b10` | one gradient-ascent step, 10 images of 128 px, filters 0..10 of blocks.10 | ms |
//! | `scorecam` | Score-CAM of chelsea.png at `head` (one forward per distinct masked input: 535 of the 1,280 channels; batches of 16) | ms |
//! | `lucid_step_grid16` | the `lucid` grid of filters 0..16 of blocks.4 at 128 px (the app's defaults), time per step: a run of 16 steps divided by 16 (the 256-step grid takes 256 times this) | ms |
//! | `vgg16_b32`, `resnet50_b32`, `resnet18_b32` | forward of the dense network (seeded random weights), batch 32, 224 px | img/s |
//! | `resnet50_finetune_layer4_b16` | one fine-tuning step of ResNet-50 (seeded random weights), batch 16 at 224 px: `layer4` + a dense head unfrozen (forward, backward, AdamW), as `finetune_top_b16` | ms |
//! | `vgg16_ascent_128` | one gradient-ascent step of VGG-16 (seeded random weights), 8 images of 128 px, filters 0..8 of `features.28` (the last convolution), as `ascent_128_b10` | ms |
//!
//! Each result carries the median, all runs and the peak resident memory of the workload
//! (`VmHWM`, reset before each workload through `/proc/self/clear_refs`). The folder of
//! `--images` (1,000) synthetic 500x375 JPEGs is made once in `--folder`
//! (`$TMPDIR/convlens-bench-folder`). No timing is asserted anywhere: the machine is shared;
//! compare ratios measured side by side, not numbers from different days. With
//! `CONVLENS_BENCH_SPLIT=1` the fine-tuning steps print each step's phases to stderr (frozen
//! forward, trainable forward with the loss, backward, optimiser); with `CONVLENS_BENCH_OPS=1`
//! the ResNet-50 fine-tuning and VGG-16 ascent workloads run 3 more steps recording every
//! convolution call and print them by layer shape (`convlens::ops::op_times`).
// Tests and benchmarks may panic on failure, print, and call the APIs the library bans
// (reference softmax, image::open on figures, threads for concurrent runs).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::disallowed_macros,
    clippy::disallowed_methods
)]

use std::path::{Path, PathBuf};
use std::time::Instant;

use candle_core::{DType, Device, Tensor, Var};
use convlens::data::folder::Sample;
use convlens::data::train_transform::TrainTransform;
use convlens::graph::Network;
use convlens::train::HeadKind;
use convlens::train::features::extract_features;
use convlens::train::head::Head;
use convlens::train::optim::{Optimizer, OptimizerKind};
use convlens::viz::cam::{self, CamMethod, CamOptions};
use serde_json::{Value, json};

mod common;

struct Opts {
    quick: bool,
    only: Option<Vec<String>>,
    folder: PathBuf,
    images: usize,
    /// `lucid_step_grid16`'s filters per batch (the app's default when absent).
    lucid_batch: Option<usize>,
}

fn parse_args() -> Opts {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let value = |flag: &str| {
        args.iter()
            .position(|a| a == flag)
            .and_then(|i| args.get(i + 1).cloned())
    };
    Opts {
        quick: args.iter().any(|a| a == "--quick"),
        only: value("--only").map(|s| s.split(',').map(str::to_string).collect()),
        folder: value("--folder")
            .map(PathBuf::from)
            .unwrap_or_else(|| std::env::temp_dir().join("convlens-bench-folder")),
        images: value("--images").map_or(1000, |s| s.parse().expect("--images N")),
        lucid_batch: value("--lucid-batch").map(|s| s.parse().expect("--lucid-batch N")),
    }
}

fn median(v: &[f64]) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Peak resident set size since the last reset, in MB (Linux; 0 elsewhere).
fn peak_rss_mb() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
        })
        .map_or(0.0, |kb| kb / 1024.0)
}

/// Resets the peak RSS to the current RSS (Linux >= 4.0).
fn reset_peak_rss() {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

fn load_avg() -> f64 {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .unwrap_or(0.0)
}

/// Untimed steps before the dense backward workloads are timed: as many as the reference's
/// `DENSE_BACKWARD_WARM` (`benches/reference/perf.py`), whose first steps are slow (PyTorch's
/// allocator and oneDNN warming up); convlens' own settle too (the fine-tuning step 666, 588,
/// 559, 528, 553 ms in its first five after one).
const DENSE_BACKWARD_WARM: usize = 3;

/// Runs `f` `warm` times untimed, then `runs` times timed; seconds per run.
fn time(warm: usize, runs: usize, mut f: impl FnMut()) -> Vec<f64> {
    for _ in 0..warm {
        f();
    }
    (0..runs)
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed().as_secs_f64()
        })
        .collect()
}

/// A result in `unit` from per-run seconds: `ms` per run or `img/s` for `items` per run.
fn result(secs: &[f64], unit: &str, items: usize, peak_mb: f64, load: f64) -> Value {
    let conv = |s: f64| match unit {
        "ms" => s * 1e3,
        _ => items as f64 / s,
    };
    let runs: Vec<f64> = secs.iter().map(|&s| conv(s)).collect();
    json!({
        "median": conv(median(secs)),
        "unit": unit,
        "runs": runs,
        "peak_rss_mb": peak_mb,
        "load1": load,
    })
}

/// Makes `n` deterministic 500x375 JPEGs (two class folders) unless the folder has them.
fn make_folder(dir: &Path, n: usize) -> Vec<Sample> {
    let path = |i: usize| dir.join(format!("c{}", i % 2)).join(format!("{i:05}.jpg"));
    for c in 0..2 {
        std::fs::create_dir_all(dir.join(format!("c{c}"))).expect("folder");
    }
    let missing: Vec<usize> = (0..n).filter(|&i| !path(i).exists()).collect();
    if !missing.is_empty() {
        eprintln!("making {} JPEGs in {}", missing.len(), dir.display());
        use rayon::prelude::*;
        missing.par_iter().for_each(|&i| {
            let f = i as f32 * 0.37;
            let img = image::RgbImage::from_fn(500, 375, |x, y| {
                let (x, y) = (x as f32, y as f32);
                let v = |a: f32, b: f32| {
                    (127.5 + 120.0 * ((x * a + y * b) * 0.02 + f).sin()).clamp(0.0, 255.0) as u8
                };
                image::Rgb([v(1.0, 0.3), v(-0.4, 1.1), v(0.7, -0.8)])
            });
            let tmp = path(i).with_extension("tmp");
            let file = std::fs::File::create(&tmp).expect("create");
            let mut enc = image::codecs::jpeg::JpegEncoder::new_with_quality(
                std::io::BufWriter::new(file),
                90,
            );
            enc.encode_image(&img).expect("encode");
            drop(enc);
            std::fs::rename(&tmp, path(i)).expect("rename");
        });
    }
    (0..n)
        .map(|i| Sample {
            path: path(i),
            label: i % 2,
        })
        .collect()
}

/// One fine-tuning step as the app's trainer runs it: the frozen part without a graph, the
/// stages from `first_trainable` on and a fresh dense head trained with AdamW (lr 1e-5, weight
/// decay 0.01), batch `x` with labels `i % 10`.
struct Finetune {
    /// The network up to `pooled`, its stages from `first_trainable` holding `Var`s.
    net: Network,
    head: Head,
    /// The stage before `first_trainable` (`None`: everything trains).
    last_frozen: Option<String>,
    opt: Optimizer,
    x: Tensor,
    labels: Tensor,
}

impl Finetune {
    /// `net` cut after `pooled` (`features` wide there), trainable from `first_trainable`,
    /// `batch` images of 224 px, 10 classes.
    fn new(mut net: Network, features: usize, first_trainable: &str, batch: usize) -> Self {
        let device = Device::Cpu;
        net.truncate_after("pooled").expect("pooled");
        let last_frozen = {
            let ids: Vec<&str> = net.layer_ids().collect();
            let i = ids
                .iter()
                .position(|&id| id == first_trainable)
                .expect("stage");
            (i > 0).then(|| ids[i - 1].to_string())
        };
        let mut vars: Vec<Var> = net
            .tensors_mut_from(first_trainable)
            .expect("stage")
            .into_iter()
            .map(|(_, t)| {
                let var = Var::from_tensor(t).expect("var");
                *t = var.as_tensor().clone();
                var
            })
            .collect();
        let mut head = Head::init(HeadKind::Dense, features, 10, 0, &device).expect("head");
        vars.extend(head.make_trainable().expect("head vars"));
        let opt = Optimizer::new(OptimizerKind::AdamW { weight_decay: 0.01 }, vars, 1e-5)
            .expect("optimizer");
        let labels = (0..batch as u32).map(|i| i % 10).collect();
        Finetune {
            net,
            head,
            last_frozen,
            opt,
            x: common::input(batch, 224),
            labels: Tensor::from_vec(labels, batch, &device).expect("labels"),
        }
    }

    /// Forward, backward and the optimiser's update. With `CONVLENS_BENCH_SPLIT` set, prints
    /// the time of each phase (frozen forward, trainable forward, backward, optimiser) to
    /// stderr.
    fn step(&mut self) {
        let (net, x) = (&self.net, &self.x);
        let mut phases = Phases::new();
        let features = match &self.last_frozen {
            Some(lf) => {
                let frozen = net.forward_range(None, lf, x, false).unwrap().detach();
                phases.mark("frozen");
                net.forward_range(Some(lf), "pooled", &frozen, true)
                    .unwrap()
            }
            None => net.forward_range(None, "pooled", x, true).unwrap(),
        };
        let logits = self.head.logits(&features, true).unwrap();
        let loss = candle_nn::loss::cross_entropy(&logits, &self.labels).unwrap();
        phases.mark("trainable");
        let grads = loss.backward().unwrap();
        phases.mark("backward");
        self.opt.step(&grads).unwrap();
        drop(grads);
        phases.mark("optimiser");
        std::hint::black_box(loss.to_scalar::<f32>().unwrap());
        phases.report();
    }
}

/// The phases of one step and their times, printed when `CONVLENS_BENCH_SPLIT` is set.
struct Phases {
    on: bool,
    last: Instant,
    times: Vec<(&'static str, f64)>,
}

impl Phases {
    fn new() -> Self {
        Phases {
            on: std::env::var_os("CONVLENS_BENCH_SPLIT").is_some(),
            last: Instant::now(),
            times: Vec::new(),
        }
    }

    /// Ends the phase `name`.
    fn mark(&mut self, name: &'static str) {
        let now = Instant::now();
        self.times
            .push((name, (now - self.last).as_secs_f64() * 1e3));
        self.last = now;
    }

    fn report(&self) {
        if self.on {
            let parts: Vec<String> = self
                .times
                .iter()
                .map(|(n, ms)| format!("{n} {ms:.0} ms"))
                .collect();
            eprintln!("  step: {}", parts.join(", "));
        }
    }
}

/// One step of the filters' gradient ascent (`viz::filters`, the `chollet` preset): image `i`
/// of `images` towards filter `filters[i]` of `layer`, border 2, step 10. (The caller holds
/// the [`convlens::ops::KeptKernels`] scope that `ascend` holds around its steps.)
fn ascent_step(net: &Network, layer: &str, filters: &[usize], images: &Tensor) {
    let (values, g) =
        convlens::viz::filters::loss_and_gradient(net, layer, filters, images, 2).expect("ascent");
    let next = (images + g.affine(10.0, 0.0).unwrap()).unwrap();
    std::hint::black_box((values, next.to_dtype(DType::F32).unwrap()));
}

/// With `CONVLENS_BENCH_OPS` set, runs `step` 3 more times recording every convolution call
/// and prints them by layer shape ([`common::print_op_times`]).
fn print_op_times_if_asked(step: impl FnMut()) {
    if std::env::var_os("CONVLENS_BENCH_OPS").is_some() {
        common::print_op_times(3, step);
    }
}

fn main() {
    // SAFETY: first thing in `main`, before any thread is started.
    unsafe { convlens::ops::configure_cpu_threads() };
    let opts = parse_args();
    let want = |name: &str| {
        opts.only
            .as_ref()
            .is_none_or(|o| o.iter().any(|n| n == name))
    };
    let q = |full: usize, quick: usize| if opts.quick { quick } else { full };
    let device = Device::Cpu;
    let model = convlens::zoo::resolve(convlens::zoo::DEFAULT_MODEL)
        .and_then(|spec| spec.load(&device))
        .expect("the bundled model loads");
    let net = &model.network;
    let mut results = serde_json::Map::new();
    let mut record = |name: &str, v: Value| {
        eprintln!(
            "{name}: {:.2} {}",
            v["median"].as_f64().unwrap_or(0.0),
            v["unit"].as_str().unwrap_or("")
        );
        results.insert(name.to_string(), v);
    };

    if want("fwd_b1") {
        let x = common::input(1, 224);
        reset_peak_rss();
        let load = load_avg();
        let t = time(3, q(31, 10), || {
            std::hint::black_box(net.forward(&x).expect("forward"));
        });
        record("fwd_b1", result(&t, "ms", 1, peak_rss_mb(), load));
    }
    if want("fwd_b32") {
        let x = common::input(32, 224);
        reset_peak_rss();
        let load = load_avg();
        let t = time(1, q(7, 3), || {
            std::hint::black_box(net.forward(&x).expect("forward"));
        });
        record("fwd_b32", result(&t, "img/s", 32, peak_rss_mb(), load));
    }
    if want("extract_folder") {
        let samples = make_folder(&opts.folder, opts.images);
        let transform = TrainTransform::new(224, [0.498; 3], [0.502; 3]);
        let cancel = convlens::cancel::CancelToken::new();
        reset_peak_rss();
        let load = load_avg();
        let t = time(0, q(3, 1), || {
            let (f, skipped, _) = extract_features(
                net,
                "pooled",
                &samples,
                &transform,
                None,
                32,
                &device,
                &mut |_, _| {},
                &cancel,
            )
            .expect("extract");
            assert!(skipped.is_empty());
            std::hint::black_box(f);
        });
        record(
            "extract_folder",
            result(&t, "img/s", samples.len(), peak_rss_mb(), load),
        );
    }
    for (name, first) in [
        ("finetune_top_b16", "blocks.15"),
        ("finetune_all_b16", "stem"),
    ] {
        if !want(name) {
            continue;
        }
        let mut ft = Finetune::new(
            model.spec.load(&device).expect("load").network,
            1280,
            first,
            16,
        );
        reset_peak_rss();
        let load = load_avg();
        let t = time(1, q(7, 3), || ft.step());
        record(name, result(&t, "ms", 1, peak_rss_mb(), load));
    }
    if want("head_epoch") {
        let n = 1600;
        let data: Vec<f32> = (0..n * 1280)
            .map(|i| 2.0 * (((i as f32) * 0.377).sin() + 1.0))
            .collect();
        let x = Tensor::from_vec(data, (n, 1280), &device).unwrap();
        let labels: Vec<u32> = (0..n as u32).map(|i| i % 10).collect();
        let mut head = Head::init(HeadKind::Dense, 1280, 10, 0, &device).unwrap();
        let vars = head.make_trainable().unwrap();
        let mut opt =
            Optimizer::new(OptimizerKind::AdamW { weight_decay: 0.01 }, vars, 1e-3).unwrap();
        reset_peak_rss();
        let load = load_avg();
        let t = time(1, q(5, 2), || {
            for start in (0..n).step_by(32) {
                let idx: Vec<u32> = ((start as u32)..(start as u32 + 32)).collect();
                let index = Tensor::from_vec(idx.clone(), 32, &device).unwrap();
                let xb = x.index_select(&index, 0).unwrap();
                let yb = Tensor::from_vec(labels[start..start + 32].to_vec(), 32, &device).unwrap();
                let logits = head.logits(&xb, true).unwrap();
                let loss = candle_nn::loss::cross_entropy(&logits, &yb).unwrap();
                opt.backward_step(&loss).unwrap();
                std::hint::black_box(loss.to_scalar::<f32>().unwrap());
            }
        });
        record("head_epoch", result(&t, "ms", 1, peak_rss_mb(), load));
    }
    let chelsea = || {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("assets/images/chelsea.png");
        model.spec.preprocess.load(&path, &device).expect("chelsea")
    };
    if want("gradcam") {
        let x = chelsea();
        let opts = CamOptions::new(CamMethod::GradCam, "head");
        reset_peak_rss();
        let load = load_avg();
        let t = time(3, q(15, 5), || {
            std::hint::black_box(cam::compute(net, &x, &opts).expect("cam"));
        });
        record("gradcam", result(&t, "ms", 1, peak_rss_mb(), load));
    }
    if want("ascent_128_b10") {
        let images = common::input(10, 128).affine(0.2, 0.0).unwrap();
        let filters: Vec<usize> = (0..10).collect();
        reset_peak_rss();
        let load = load_avg();
        let t = time(2, q(15, 5), || {
            ascent_step(net, "blocks.10", &filters, &images)
        });
        record("ascent_128_b10", result(&t, "ms", 1, peak_rss_mb(), load));
    }
    if want("scorecam") {
        let x = chelsea();
        let opts = CamOptions::new(CamMethod::ScoreCam, "head");
        reset_peak_rss();
        let load = load_avg();
        let t = time(0, q(2, 1), || {
            std::hint::black_box(cam::compute(net, &x, &opts).expect("cam"));
        });
        record("scorecam", result(&t, "ms", 1, peak_rss_mb(), load));
    }
    if want("lucid_step_grid16") {
        use convlens::viz::filters::{FilterOptions, filter_patterns_with};
        let mut fo = FilterOptions::lucid(128);
        let steps = 16;
        fo.ascent.steps = steps;
        fo.batch = opts.lucid_batch.unwrap_or(fo.batch);
        let filters: Vec<usize> = (0..16).collect();
        reset_peak_rss();
        let load = load_avg();
        let t = time(0, q(3, 1), || {
            let p = filter_patterns_with(&model, "blocks.4", &filters, &fo, &mut |_| true);
            std::hint::black_box(p.expect("lucid grid"));
        });
        let per_step: Vec<f64> = t.iter().map(|s| s / steps as f64).collect();
        record(
            "lucid_step_grid16",
            result(&per_step, "ms", 1, peak_rss_mb(), load),
        );
    }
    // The dense networks (issue #15): forward at batch 32, the peak RSS the whole forward's.
    for (name, arch) in [
        ("vgg16_b32", "vgg16"),
        ("resnet50_b32", "resnet50"),
        ("resnet18_b32", "resnet18"),
    ] {
        if !want(name) {
            continue;
        }
        let dense = common::random_network(arch);
        let x = common::input(32, 224);
        reset_peak_rss();
        let load = load_avg();
        let t = time(1, q(3, 1), || {
            std::hint::black_box(dense.forward(&x).expect("forward"));
        });
        record(name, result(&t, "img/s", 32, peak_rss_mb(), load));
    }
    // The backward of the dense path (issue #15): a ResNet-50 fine-tuning step and a VGG-16
    // filters ascent step, seeded random weights, each timed after `DENSE_BACKWARD_WARM` steps.
    if want("resnet50_finetune_layer4_b16") {
        let mut ft = Finetune::new(common::random_network("resnet50"), 2048, "layer4", 16);
        reset_peak_rss();
        let load = load_avg();
        let t = time(DENSE_BACKWARD_WARM, q(5, 2), || ft.step());
        record(
            "resnet50_finetune_layer4_b16",
            result(&t, "ms", 1, peak_rss_mb(), load),
        );
        print_op_times_if_asked(|| ft.step());
    }
    if want("vgg16_ascent_128") {
        let vgg = common::random_network("vgg16");
        let images = common::input(8, 128).affine(0.2, 0.0).unwrap();
        let filters: Vec<usize> = (0..8).collect();
        // As `viz::filters::ascend` runs its steps: in one scope that keeps the frozen
        // network's Winograd kernels (from their second use: the warm-up steps).
        let _kept = convlens::ops::KeptKernels::scope();
        reset_peak_rss();
        let load = load_avg();
        let t = time(DENSE_BACKWARD_WARM, q(5, 2), || {
            ascent_step(&vgg, "features.28", &filters, &images)
        });
        record("vgg16_ascent_128", result(&t, "ms", 1, peak_rss_mb(), load));
        print_op_times_if_asked(|| {
            ascent_step(&vgg, "features.28", &filters, &images);
        });
    }
    let out = json!({
        "impl": "convlens",
        "threads": rayon::current_num_threads(),
        "load1_end": load_avg(),
        "results": Value::Object(results),
    });
    println!("{}", serde_json::to_string_pretty(&out).expect("json"));
}
