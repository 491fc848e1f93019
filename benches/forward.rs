//! Lite0 forward on the CPU: latency at batch 1 and throughput at batch 32.
//!
//! `cargo bench --bench forward` (add `-- --quick` for fewer repetitions). Prints medians; the
//! machine is shared, so compare against PyTorch/ONNX Runtime run side by side, not against a
//! number from another day.

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

fn main() {
    convlens::ops::configure_cpu_threads();
    let quick = std::env::args().any(|a| a == "--quick");
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
        stage_profile(&model, &input(32));
    }
}

/// Median time of each stage at batch 32 (`-- --stages`): where the forward spends its time.
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
        let times: Vec<f64> = (0..5)
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
