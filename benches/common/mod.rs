//! What the benchmarks share: zoo networks built from seeded random weights.

use candle_core::{Device, Tensor};

/// A zoo network of `architecture` (1000 classes) with seeded random weights of the right
/// shapes (uniform, scaled by the fan-in; BatchNorm variances and 1-D tensors around 1): the
/// arithmetic of a forward does not depend on the values.
pub fn random_network(architecture: &str) -> convlens::graph::Network {
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

/// `[batch, 3, size, size]` of `sin(0.618 i)`, the input every benchmark (and `perf.py`) uses.
pub fn input(batch: usize, size: usize) -> Tensor {
    let n = batch * 3 * size * size;
    let data: Vec<f32> = (0..n).map(|i| ((i as f32) * 0.618).sin()).collect();
    Tensor::from_vec(data, (batch, 3, size, size), &Device::Cpu).unwrap()
}

/// Runs `run` `runs` times recording every convolution call ([`convlens::ops::op_times`]),
/// then prints per op and shapes its median call, calls per run, GMAC/s at the median and its
/// share of the time the ops took.
pub fn print_op_times(runs: usize, mut run: impl FnMut()) {
    convlens::ops::op_times::start();
    for _ in 0..runs {
        run();
    }
    let ops = convlens::ops::op_times::stop();
    let total: f64 = ops.iter().map(|t| t.seconds.iter().sum::<f64>()).sum();
    println!(
        "convolution ops over {runs} runs, {:.1} ms a run in all (median call, calls a run, \
         GMAC/s, share):",
        total * 1e3 / runs.max(1) as f64
    );
    for t in &ops {
        let (median, sum) = (t.median(), t.seconds.iter().sum::<f64>());
        println!(
            "  {:7.2} ms x{:<3} {:6.1} {:5.1} %  {} {}",
            median * 1e3,
            t.seconds.len().div_ceil(runs.max(1)),
            t.macs as f64 / median.max(1e-12) / 1e9,
            100.0 * sum / total.max(1e-12),
            t.op.trim_start_matches("convlens-"),
            t.shapes
        );
    }
}
