//! Lite0 forward on the CPU: latency at batch 1 and throughput at batch 32.
//!
//! `cargo bench --bench forward` (add `-- --quick` for fewer repetitions). Prints medians; the
//! machine is shared, so compare against PyTorch/ONNX Runtime run side by side, not against a
//! number from another day.
//!
//! `-- --arch NAME[,NAME...]` (or `--arch all`): throughput at batch 32 of other zoo
//! architectures, built from seeded random weights of the right shapes (the arithmetic does
//! not depend on the values), at the architecture's own input size; with `--stages`, the time
//! of each stage too (one stage's input and output alive at a time); with `--batch N`, at
//! batch `N` instead of 32 (the fine-tuning step's frozen part runs at 16); with `--ops`, the
//! median time of every convolution call of 3 more forwards, by layer shape, with its GMAC/s
//! (`convlens::ops::op_times`).
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
use common::{input, random_network};

mod common;

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

/// Throughput at `batch` of each architecture in `list` (`all`: the whole zoo); with `stages`,
/// the time of each stage too; with `ops`, of each convolution call.
fn architectures(list: &str, batch: usize, quick: bool, stages: bool, ops: bool) {
    let names: Vec<&str> = if list == "all" {
        convlens::zoo::registry::all_ids()
    } else {
        list.split(',').collect()
    };
    for arch in names {
        let size = convlens::zoo::detect::default_preprocess(arch).input_size as usize;
        let net = random_network(arch);
        let x = input(batch, size);
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
            "{arch} forward batch {batch} at {size}x{size}: median {:.0} ms per batch, {:.1} img/s",
            s * 1e3,
            batch as f64 / s
        );
        if stages {
            println!(
                "{arch} stages at batch {batch} (median of {}):",
                if quick { 1 } else { 3 }
            );
            stage_profile(&net, &x, if quick { 1 } else { 3 });
        }
        if ops {
            common::print_op_times(3, || {
                std::hint::black_box(net.forward(&x).expect("forward"));
            });
        }
    }
}

fn main() {
    // SAFETY: first thing in `main`, before any thread is started.
    unsafe { convlens::ops::configure_cpu_threads() };
    let quick = std::env::args().any(|a| a == "--quick");
    let args: Vec<String> = std::env::args().collect();
    if let Some(i) = args.iter().position(|a| a == "--arch") {
        let stages = args.iter().any(|a| a == "--stages");
        let ops = args.iter().any(|a| a == "--ops");
        let batch = match args.iter().position(|a| a == "--batch") {
            Some(j) => match args.get(j + 1).and_then(|v| v.parse::<usize>().ok()) {
                Some(b) if b > 0 => b,
                _ => {
                    eprintln!("--batch needs a positive whole number");
                    std::process::exit(2);
                }
            },
            None => 32,
        };
        let list = args.get(i + 1).map_or("all", String::as_str);
        architectures(list, batch, quick, stages, ops);
        return;
    }
    let device = Device::Cpu;
    let model = convlens::zoo::resolve(convlens::zoo::DEFAULT_MODEL)
        .and_then(|spec| spec.load(&device))
        .expect("the bundled model loads");
    let b1 = time_forward(&model, &input(1, 224), if quick { 10 } else { 31 });
    let b32 = time_forward(&model, &input(32, 224), if quick { 3 } else { 7 });
    let ms1 = median(b1) * 1e3;
    let s32 = median(b32);
    println!("lite0 forward batch 1: median {ms1:.2} ms");
    println!(
        "lite0 forward batch 32: median {:.1} ms per batch, {:.1} img/s",
        s32 * 1e3,
        32.0 / s32
    );
    if std::env::args().any(|a| a == "--stages") {
        for (batch, runs) in [(1, 21), (32, 5)] {
            println!("stages at batch {batch} (median of {runs}):");
            stage_profile(&model.network, &input(batch, 224), runs);
        }
    }
}

/// Median time of each stage of `net` over `runs` (`-- --stages`): where the forward spends
/// its time. Only one stage's input and output are alive at a time.
fn stage_profile(net: &convlens::graph::Network, x: &Tensor, runs: usize) {
    let ids: Vec<String> = net.layer_ids().map(str::to_string).collect();
    let mut total = 0.0;
    let mut input = x.clone();
    for (i, id) in ids.iter().enumerate() {
        let from = i.checked_sub(1).map(|p| ids[p].as_str());
        let mut out = None;
        let times: Vec<f64> = (0..runs)
            .map(|_| {
                out = None;
                let t = Instant::now();
                out = Some(net.forward_range(from, id, &input, false).unwrap());
                t.elapsed().as_secs_f64()
            })
            .collect();
        let ms = median(times) * 1e3;
        total += ms;
        println!("  {id:>14}: {ms:8.3} ms");
        input = out.expect("one run");
    }
    println!("  {:>14}: {total:8.3} ms", "sum");
}
