//! Lite0 forward on the CPU: latency at batch 1 and throughput at batch 32.
//!
//! `cargo bench --bench forward` (add `-- --quick` for fewer repetitions). Prints medians; the
//! machine is shared, so compare against PyTorch/ONNX Runtime run side by side, not against a
//! number from another day.
//!
//! `-- --arch NAME[,NAME...]` (or `--arch all`): throughput at batch 32 of other zoo
//! architectures, built from seeded random weights of the right shapes (the arithmetic does
//! not depend on the values), at the architecture's own input size.
// Tests and benchmarks may panic on failure, print, and call the APIs the library bans
// (reference softmax, image::open on figures, threads for concurrent runs).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::disallowed_macros,
    clippy::disallowed_methods
)]

use std::time::Instant;

use candle_core::{Device, Tensor};

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn time_forward(model: &convlens::zoo::Model, x: &Tensor, runs: usize) -> Vec<f64> {
    model.network.forward(x).expect("warm-up");
    (0..runs)
        .map(|_| {
            let t = Instant::now();
            let y = model.network.forward(x).expect("forward");
            std::hint::black_box(y);
            t.elapsed().as_secs_f64()
        })
        .collect()
}

/// A zoo network of `architecture` (1000 classes) with seeded random weights.
fn random_network(architecture: &str) -> convlens::graph::Network {
    use rand::{Rng, SeedableRng};
    let expected = convlens::zoo::expected_tensors(architecture, 1000)
        .unwrap_or_else(|| panic!("unknown architecture {architecture}"));
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(0);
    let tensors = expected
        .iter()
        .map(|(name, shape)| {
            let n: usize = shape.iter().product();
            let positive = name.ends_with("running_var") || shape.len() == 1;
            let scale = if positive {
                1.0
            } else {
                (3.0 / shape[1..].iter().product::<usize>() as f32).sqrt()
            };
            let v: Vec<f32> = (0..n)
                .map(|_| {
                    let u: f32 = rng.random_range(-1.0..1.0);
                    if positive { 1.0 + 0.5 * u } else { scale * u }
                })
                .collect();
            let t = Tensor::from_vec(v, shape.as_slice(), &Device::Cpu).unwrap();
            (name.clone(), t)
        })
        .collect();
    let ckpt = convlens::zoo::checkpoint::Checkpoint::from_tensors("random", tensors, &Device::Cpu)
        .unwrap();
    convlens::zoo::build_network(architecture, &ckpt, 1000).unwrap()
}

/// Batch-32 throughput of each architecture in `list` (`all`: the whole zoo).
fn architectures(list: &str, quick: bool) {
    let names: Vec<&str> = if list == "all" {
        convlens::zoo::registry::all_ids()
    } else {
        list.split(',').collect()
    };
    for arch in names {
        let size = convlens::zoo::detect::default_preprocess(arch).input_size as usize;
        let net = random_network(arch);
        let n = 32 * 3 * size * size;
        let data: Vec<f32> = (0..n).map(|i| ((i as f32) * 0.618).sin()).collect();
        let x = Tensor::from_vec(data, (32, 3, size, size), &Device::Cpu).unwrap();
        net.forward(&x).expect("warm-up");
        let times: Vec<f64> = (0..if quick { 1 } else { 3 })
            .map(|_| {
                let t = Instant::now();
                std::hint::black_box(net.forward(&x).expect("forward"));
                t.elapsed().as_secs_f64()
            })
            .collect();
        let s = median(times);
        println!(
            "{arch} forward batch 32 at {size}x{size}: median {:.0} ms per batch, {:.1} img/s",
            s * 1e3,
            32.0 / s
        );
    }
}

fn main() {
    // SAFETY: first thing in `main`, before any thread is started.
    unsafe { convlens::ops::configure_cpu_threads() };
    let quick = std::env::args().any(|a| a == "--quick");
    let args: Vec<String> = std::env::args().collect();
    if let Some(i) = args.iter().position(|a| a == "--arch") {
        architectures(args.get(i + 1).map_or("all", String::as_str), quick);
        return;
    }
    let device = Device::Cpu;
    let model = convlens::zoo::resolve(convlens::zoo::DEFAULT_MODEL)
        .and_then(|spec| spec.load(&device))
        .expect("the bundled model loads");
    let input = |batch: usize| {
        let n = batch * 3 * 224 * 224;
        let data: Vec<f32> = (0..n).map(|i| ((i as f32) * 0.618).sin()).collect();
        Tensor::from_vec(data, (batch, 3, 224, 224), &device).unwrap()
    };
    let b1 = time_forward(&model, &input(1), if quick { 10 } else { 31 });
    let b32 = time_forward(&model, &input(32), if quick { 3 } else { 7 });
    let ms1 = median(b1) * 1e3;
    let s32 = median(b32);
    println!("lite0 forward batch 1: median {ms1:.2} ms");
    println!(
        "lite0 forward batch 32: median {:.1} ms per batch, {:.1} img/s",
        s32 * 1e3,
        32.0 / s32
    );
    if std::env::args().any(|a| a == "--stages") {
        for batch in [1, 32] {
            println!("stages at batch {batch} (median of 5):");
            stage_profile(&model, &input(batch));
        }
    }
}

/// Median time of each stage (`-- --stages`, at batch 1 and 32): where the forward spends its
/// time.
fn stage_profile(model: &convlens::zoo::Model, x: &Tensor) {
    let ids: Vec<String> = model.network.layer_ids().map(str::to_string).collect();
    let inputs = model
        .network
        .forward_with_taps(x, &ids.iter().map(String::as_str).collect::<Vec<_>>())
        .expect("taps");
    let mut total = 0.0;
    for (i, id) in ids.iter().enumerate() {
        let from = if i == 0 {
            None
        } else {
            Some(ids[i - 1].as_str())
        };
        let input = if i == 0 { x } else { &inputs[i - 1] };
        let times: Vec<f64> = (0..if x.dim(0).unwrap() == 1 { 21 } else { 5 })
            .map(|_| {
                let t = Instant::now();
                let y = model.network.forward_range(from, id, input, false).unwrap();
                std::hint::black_box(y);
                t.elapsed().as_secs_f64()
            })
            .collect();
        let ms = median(times) * 1e3;
        total += ms;
        println!("  {id:>10}: {ms:8.1} ms");
    }
    println!("  {:>10}: {total:8.1} ms", "sum");
}
