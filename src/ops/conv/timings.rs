//! Where ResNet-50's dense convolutions spend their time: each of its non-pointwise shapes
//! (the stem, the 3x3s of every stage, the stride-2 3x3s) and the pointwise ones of every stage,
//! timed at batch 32 forward and at batch 16 through the fine-tuning step's gradients, printed
//! with their GMAC/s (best of 3). `cargo test --release --lib conv::timings -- --ignored
//! --nocapture`; `CONVLENS_TIMINGS=layer4` times only the 7x7 and 14x14 shapes,
//! `CONVLENS_TIMINGS=pointwise` only the 1x1 ones (Lite0's among them), any other value only
//! the shapes whose names start with it (`conv1`, `layer2.0`).

use std::time::Instant;

use candle_core::{Result, Tensor};

use super::super::test_util::tensor;
use super::tests::{Case, out_hw, sq};
use super::*;

/// One way to run a forward, giving its output.
type Kernel<'a> = Box<dyn Fn() -> Vec<f32> + 'a>;

/// The forward's kernels side by side, alternated over 5 rounds (best of each), in GMAC/s:
/// one product per image, the images side by side in tiles of 256, 512 and all columns (row
/// tiles then), and for a pointwise shape `gemm` over the batch (`matmul::batched_matmul`, the
/// path above `MAX_BATCH_PIXELS`) and the direct kernel.
#[allow(clippy::too_many_arguments)]
fn variants(
    b: usize,
    cin: usize,
    cout: usize,
    x: &Tensor,
    w: &Tensor,
    bias: &Tensor,
    spec: ConvSpec,
    gmac: f64,
) -> Result<String> {
    let g = Geom::new(x.dims(), w.dims(), spec)?.1;
    let (xs, ws) = (x.flatten_all()?.to_vec1()?, w.flatten_all()?.to_vec1()?);
    let bs = bias.to_vec1::<f32>()?;
    let epi = Epilogue {
        bias: Some(&bs),
        act: Activation::Relu,
        ..Epilogue::NONE
    };
    let n = g.out_plane();
    let (xs, ws, g) = (&xs, &ws, &g);
    let lhs = MatRef::row_major(ws, 0, g.kdim());
    let group = side_by_side::group_images(g);
    let mut kernels: Vec<(&str, Kernel<'_>)> = vec![
        ("per image", Box::new(move || unfolded(b, g, xs, ws, epi))),
        (
            "wide 256",
            Box::new(move || side_by_side::forward_in_groups(b, g, xs, ws, epi, (group, 256))),
        ),
        (
            "wide 512",
            Box::new(move || side_by_side::forward_in_groups(b, g, xs, ws, epi, (group, 512))),
        ),
        (
            "wide all",
            Box::new(move || side_by_side::forward_in_groups(b, g, xs, ws, epi, (group, 1 << 20))),
        ),
    ];
    if g.is_pointwise() {
        kernels.push((
            "gemm batched",
            Box::new(move || super::super::matmul::batched_matmul(lhs, cout, cin, xs, b, n, epi)),
        ));
        kernels.push((
            "direct",
            Box::new(move || {
                super::super::pointwise_direct::forward_matmul(lhs, cout, cin, xs, b, n, epi)
            }),
        ));
    }
    let mut times = vec![f64::INFINITY; kernels.len()];
    for _ in 0..5 {
        for (t, (_, f)) in times.iter_mut().zip(&kernels) {
            let start = Instant::now();
            std::hint::black_box(f());
            *t = t.min(start.elapsed().as_secs_f64());
        }
    }
    let parts: Vec<String> = kernels
        .iter()
        .zip(&times)
        .map(|((name, _), t)| format!("{name} {:.1}", gmac / t))
        .collect();
    Ok(format!(" ({})", parts.join(", ")))
}

/// Best of 3 wall times of `f`, in seconds.
fn best(f: &dyn Fn() -> Result<Tensor>) -> Result<f64> {
    let mut best = f64::INFINITY;
    for _ in 0..3 {
        let t = Instant::now();
        std::hint::black_box(f()?);
        best = best.min(t.elapsed().as_secs_f64());
    }
    Ok(best)
}

fn macs(c: Case) -> f64 {
    let (oh, ow) = out_hw(c);
    (c.b * c.cout * c.cin * c.k.0 * c.k.1 * oh * ow) as f64
}

#[test]
#[ignore = "a measurement, minutes of CPU"]
fn timings() -> Result<()> {
    crate::ops::test_util::keep_freed_memory();
    // (name, cin, cout, size, k, stride, padding)
    let layers = [
        ("conv1", 3, 64, 224, 7, 2, 3),
        ("layer1 3x3", 64, 64, 56, 3, 1, 1),
        ("layer2.0 3x3 s2", 128, 128, 56, 3, 2, 1),
        ("layer2 3x3", 128, 128, 28, 3, 1, 1),
        ("layer3.0 3x3 s2", 256, 256, 28, 3, 2, 1),
        ("layer3 3x3", 256, 256, 14, 3, 1, 1),
        ("layer4.0 3x3 s2", 512, 512, 14, 3, 2, 1),
        ("layer4 3x3", 512, 512, 7, 3, 1, 1),
        ("layer2.0 down s2", 256, 512, 56, 1, 2, 0),
        ("layer3.0 down s2", 512, 1024, 28, 1, 2, 0),
        ("layer4.0 down s2", 1024, 2048, 14, 1, 2, 0),
        ("layer4 1x1 in", 2048, 512, 7, 1, 1, 0),
        ("layer4 1x1 out", 512, 2048, 7, 1, 1, 0),
        ("layer3 1x1 in", 1024, 256, 14, 1, 1, 0),
        ("layer4.0 1x1 in", 1024, 512, 14, 1, 1, 0),
        ("layer3 1x1 out", 256, 1024, 14, 1, 1, 0),
        ("layer2 1x1 in", 512, 128, 28, 1, 1, 0),
        ("layer2 1x1 out", 128, 512, 28, 1, 1, 0),
        ("layer1 1x1 in", 256, 64, 56, 1, 1, 0),
        ("layer1 1x1 out", 64, 256, 56, 1, 1, 0),
        ("lite0 head", 320, 1280, 7, 1, 1, 0),
        ("lite0 7x7 in", 192, 1152, 7, 1, 1, 0),
        ("lite0 7x7 out", 1152, 320, 7, 1, 1, 0),
        ("lite0 14x14 in", 112, 672, 14, 1, 1, 0),
        ("lite0 14x14 out", 672, 192, 14, 1, 1, 0),
        ("lite0 28x28 in", 40, 240, 28, 1, 1, 0),
    ];
    let only = std::env::var("CONVLENS_TIMINGS").unwrap_or_default();
    let (only_layer4, only_pointwise) = (only == "layer4", only == "pointwise");
    for (name, cin, cout, hw, k, s, p) in layers {
        let named = only_layer4 || only_pointwise || only.is_empty() || name.starts_with(&only);
        if (only_layer4 && hw > 14) || (only_pointwise && k != 1) || !named {
            continue;
        }
        for (b, grads) in [(32, false), (16, true)] {
            let c = sq(b, cin, cout, (hw, hw), k, s, p);
            let x = tensor(&[b, cin, hw, hw], 1, 1.0)?;
            let w = tensor(&[cout, cin, k, k], 2, 0.05)?;
            let bias = tensor(&[cout], 3, 0.1)?;
            let spec = c.spec;
            let fwd = best(&|| conv2d_fused(&x, &w, &bias, spec, Activation::Relu))?;
            let gmac = macs(c) / 1e9;
            let mut line = format!(
                "b{b:<2} {name:<17} fwd {:7.2} ms {:6.1} GMAC/s",
                fwd * 1e3,
                gmac / fwd
            );
            if hw <= 28 || k == 1 {
                line += &variants(b, cin, cout, &x, &w, &bias, spec, gmac)?;
            }
            if grads {
                let (oh, ow) = out_hw(c);
                let gp = tensor(&[b, cout, oh, ow], 4, 1.0)?;
                let gi = GradInput {
                    spec,
                    h: hw,
                    w: hw,
                    kept: None,
                };
                let gx = best(&|| gp.apply_op2_no_bwd(&w, &gi))?;
                let gw = GradWeight { spec, kh: k, kw: k };
                let gwt = best(&|| x.apply_op2_no_bwd(&gp, &gw))?;
                line += &format!(
                    ", grad x {:7.2} ms {:6.1}, grad w {:7.2} ms {:6.1}",
                    gx * 1e3,
                    gmac / gx,
                    gwt * 1e3,
                    gmac / gwt
                );
            }
            eprintln!("{line}");
        }
    }
    Ok(())
}
