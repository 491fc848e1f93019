use candle_core::{Device, Var};

use super::super::test_util::{
    ACTS, act_f64, central_differences, conv_grads, max_abs_diff, rel_to_max, tensor, to_f64,
};
use super::*;

/// `(B, C, H, W, k, stride, padding)`.
type Case = (usize, usize, usize, usize, usize, usize, usize);

const CASES: &[Case] = &[
    (1, 3, 8, 8, 3, 1, 1),
    (4, 4, 9, 7, 3, 2, 1),
    (1, 3, 10, 10, 5, 1, 2),
    (4, 3, 9, 7, 5, 2, 2),
    (2, 3, 8, 8, 3, 2, 1),
    (2, 3, 8, 8, 5, 2, 2),
    (1, 2, 7, 7, 3, 1, 0),
    // Even kernels, and padding beyond k - 1.
    (2, 3, 7, 6, 4, 1, 1),
    (1, 2, 6, 5, 2, 2, 0),
    (1, 2, 5, 5, 3, 1, 3),
    // A 1x1 output, and a 1x1 kernel.
    (2, 2, 3, 3, 3, 1, 0),
    (1, 3, 5, 4, 1, 2, 0),
];

fn inputs(case: Case, seed: u64) -> Result<(Tensor, Tensor, Tensor)> {
    let (b, c, h, w, k, _, _) = case;
    Ok((
        tensor(&[b, c, h, w], seed, 2.0)?,
        tensor(&[c, 1, k, k], seed + 1, 1.0)?,
        tensor(&[c], seed + 2, 1.0)?,
    ))
}

/// candle's own ops.
fn reference(
    x: &Tensor,
    w: &Tensor,
    bias: &Tensor,
    s: usize,
    p: usize,
    act: Activation,
) -> Result<Tensor> {
    let c = x.dim(1)?;
    let y = x
        .conv2d(w, p, s, 1, c)?
        .broadcast_add(&bias.reshape((1, c, 1, 1))?)?;
    act.apply_tensor(&y)
}

/// Whether candle's conv2d backward handles the case: it derives the transposed
/// convolution's output padding from the height alone.
fn candle_backward_ok(case: Case) -> bool {
    let (_, _, h, w, k, s, p) = case;
    let g = Geom::new(h, w, k, s, p).unwrap();
    let out_pad = |n: usize, o: usize| n as isize - ((o - 1) * s + k) as isize + 2 * p as isize;
    out_pad(h, g.oh) == out_pad(w, g.ow) && p < k
}

#[test]
fn forward_matches_candle() -> Result<()> {
    for (i, &case) in CASES.iter().enumerate() {
        let (x, w, bias) = inputs(case, 10 * i as u64)?;
        for act in ACTS {
            let got = depthwise_conv2d(&x, &w, &bias, case.5, case.6, act)?;
            let want = reference(&x, &w, &bias, case.5, case.6, act)?;
            assert_eq!(got.dims(), want.dims(), "{case:?}");
            let d = max_abs_diff(&got, &want)?;
            assert!(d <= 1e-5, "{case:?} {act:?}: max abs diff {d}");
        }
    }
    Ok(())
}

/// Planes large enough to span several tiles (forward and weight gradient).
#[test]
fn large_planes_match_candle() -> Result<()> {
    for (i, case) in [(1, 2, 70, 70, 3, 1, 1), (2, 2, 130, 130, 5, 2, 2)]
        .into_iter()
        .enumerate()
    {
        let (b, c, h, w, k, s, p) = case;
        let g = Geom::new(h, w, k, s, p)?;
        assert!(g.rows_per_tile() < g.oh, "{case:?} fits one tile");
        assert!(candle_backward_ok(case));
        let (x, w, bias) = inputs(case, 500 + 10 * i as u64)?;
        let r = tensor(&[b, c, g.oh, g.ow], 501, 1.0)?;
        let act = Activation::Relu6;
        let got = depthwise_conv2d(&x, &w, &bias, s, p, act)?;
        let want = reference(&x, &w, &bias, s, p, act)?;
        assert!(max_abs_diff(&got, &want)? <= 1e-5, "{case:?}");
        let ours = conv_grads(
            |x, w, b| depthwise_conv2d(x, w, b, s, p, act),
            &x,
            &w,
            &bias,
            &r,
        )?;
        let theirs = conv_grads(|x, w, b| reference(x, w, b, s, p, act), &x, &w, &bias, &r)?;
        for which in 0..3 {
            let e = rel_to_max(&ours[which], &theirs[which])?;
            assert!(e < 1e-4, "{case:?} grad {which}: rel error {e}");
        }
    }
    Ok(())
}

#[test]
fn forward_non_contiguous_inputs() -> Result<()> {
    let (b, c, h, w, k, s, p) = (2, 3, 9, 7, 3, 2, 1);
    // x: transposed from [B,C,W,H]; w: a narrowed view; bias: a strided view.
    let xt = tensor(&[b, c, w, h], 1, 2.0)?.transpose(2, 3)?;
    let wt = tensor(&[c, 1, k, k + 2], 2, 1.0)?.narrow(3, 1, k)?;
    let bt = tensor(&[c, 2], 3, 1.0)?.narrow(1, 1, 1)?.squeeze(1)?;
    assert!(!xt.is_contiguous() && !wt.is_contiguous() && !bt.is_contiguous());
    for act in ACTS {
        let got = depthwise_conv2d(&xt, &wt, &bt, s, p, act)?;
        let want = reference(
            &xt.contiguous()?,
            &wt.contiguous()?,
            &bt.contiguous()?,
            s,
            p,
            act,
        )?;
        assert!(max_abs_diff(&got, &want)? <= 1e-5, "{act:?}");
    }
    // A narrowed batch with an offset into its storage.
    let xn = tensor(&[4, c, h, w], 4, 2.0)?.narrow(0, 1, 2)?;
    let (_, wt, bt) = inputs((b, c, h, w, k, s, p), 5)?;
    let got = depthwise_conv2d(&xn, &wt, &bt, s, p, Activation::Relu6)?;
    let want = reference(&xn, &wt, &bt, s, p, Activation::Relu6)?;
    assert!(max_abs_diff(&got, &want)? <= 1e-5);
    Ok(())
}

#[test]
fn bad_inputs_are_errors() -> Result<()> {
    let (x, w, bias) = inputs((1, 3, 8, 8, 3, 1, 1), 0)?;
    let act = Activation::Identity;
    assert!(depthwise_conv2d(&x, &w, &bias, 0, 1, act).is_err());
    assert!(depthwise_conv2d(&x.narrow(1, 0, 2)?, &w, &bias, 1, 1, act).is_err());
    assert!(depthwise_conv2d(&x, &w, &bias.narrow(0, 0, 2)?, 1, 1, act).is_err());
    assert!(depthwise_conv2d(&x.narrow(2, 0, 1)?, &w, &bias, 1, 0, act).is_err());
    let err = depthwise_conv2d(&x.to_dtype(DType::F64)?, &w, &bias, 1, 1, act).unwrap_err();
    assert!(err.to_string().contains("f32"), "{err}");
    Ok(())
}

/// `sum(act(conv(x, w) + bias) * r)` in f64, by the definition.
fn loss_f64(case: Case, act: Activation, x: &[f64], w: &[f64], bias: &[f64], r: &[f64]) -> f64 {
    let (b, c, h, wd, k, s, p) = case;
    let g = Geom::new(h, wd, k, s, p).unwrap();
    let mut loss = 0.0;
    for bc in 0..b * c {
        let ch = bc % c;
        for oy in 0..g.oh {
            for ox in 0..g.ow {
                let mut v = bias[ch];
                for ky in 0..k {
                    for kx in 0..k {
                        let (iy, ix) = (
                            (oy * s + ky) as isize - p as isize,
                            (ox * s + kx) as isize - p as isize,
                        );
                        if iy >= 0 && ix >= 0 && (iy as usize) < h && (ix as usize) < wd {
                            v += w[ch * k * k + ky * k + kx]
                                * x[bc * h * wd + iy as usize * wd + ix as usize];
                        }
                    }
                }
                loss += act_f64(act, v) * r[(bc * g.oh + oy) * g.ow + ox];
            }
        }
    }
    loss
}

#[test]
fn backward_matches_finite_differences() -> Result<()> {
    let eps = 1e-6;
    for (i, &case) in CASES.iter().enumerate() {
        let (b, c, _, _, _, s, p) = case;
        let (x, w, bias) = inputs(case, 100 + 10 * i as u64)?;
        let g = Geom::new(case.2, case.3, case.4, s, p)?;
        let r = tensor(&[b, c, g.oh, g.ow], 7 + i as u64, 1.0)?;
        for act in [Activation::Identity, Activation::Relu6] {
            let analytic = conv_grads(
                |x, w, b| depthwise_conv2d(x, w, b, s, p, act),
                &x,
                &w,
                &bias,
                &r,
            )?;
            let mut params = [to_f64(&x)?, to_f64(&w)?, to_f64(&bias)?];
            let rf = to_f64(&r)?;
            for (which, analytic) in analytic.iter().enumerate().take(3) {
                let loss = |p: &[Vec<f64>; 3]| loss_f64(case, act, &p[0], &p[1], &p[2], &rf);
                let fd: Vec<f32> = central_differences(&mut params, which, eps, loss)
                    .into_iter()
                    .map(|v| v as f32)
                    .collect();
                let fd = Tensor::from_vec(fd, analytic.dims(), &Device::Cpu)?;
                let e = rel_to_max(analytic, &fd)?;
                assert!(e < 1e-4, "{case:?} {act:?} grad {which}: rel error {e}");
            }
        }
    }
    Ok(())
}

#[test]
fn backward_matches_candle() -> Result<()> {
    for (i, &case) in CASES
        .iter()
        .enumerate()
        .filter(|(_, c)| candle_backward_ok(**c))
    {
        let (b, c, _, _, _, s, p) = case;
        let (x, w, bias) = inputs(case, 200 + 10 * i as u64)?;
        let g = Geom::new(case.2, case.3, case.4, s, p)?;
        let r = tensor(&[b, c, g.oh, g.ow], 9 + i as u64, 1.0)?;
        for act in ACTS {
            let ours = conv_grads(
                |x, w, b| depthwise_conv2d(x, w, b, s, p, act),
                &x,
                &w,
                &bias,
                &r,
            )?;
            let theirs = conv_grads(|x, w, b| reference(x, w, b, s, p, act), &x, &w, &bias, &r)?;
            for which in 0..3 {
                let e = rel_to_max(&ours[which], &theirs[which])?;
                assert!(e < 1e-4, "{case:?} {act:?} grad {which}: rel error {e}");
            }
        }
    }
    Ok(())
}

#[test]
fn backward_skips_untracked_arguments() -> Result<()> {
    let case = (2, 3, 9, 7, 3, 2, 1);
    let (x, w, bias) = inputs(case, 300)?;
    let g = Geom::new(case.2, case.3, case.4, case.5, case.6)?;
    let r = tensor(&[2, 3, g.oh, g.ow], 301, 1.0)?;
    let want = conv_grads(
        |x, w, b| reference(x, w, b, 2, 1, Activation::Relu),
        &x,
        &w,
        &bias,
        &r,
    )?;
    // x is a plain tensor (a frozen input), only w is a variable.
    let wv = Var::from_tensor(&w)?;
    let y = depthwise_conv2d(&x, wv.as_tensor(), &bias, 2, 1, Activation::Relu)?;
    let g = y.mul(&r)?.sum_all()?.backward()?;
    assert!(g.get(&x).is_none() && g.get(&bias).is_none());
    let gw = g.get(wv.as_tensor()).expect("a weight gradient");
    assert!(rel_to_max(gw, &want[1])? < 1e-4);
    Ok(())
}

/// The kernels without FMA, and with one output row per tile, give the same results as
/// the default path (the other tests' planes fit one tile).
#[test]
fn kernels_agree_across_fma_and_tiling() -> Result<()> {
    use super::super::test_util::lcg;
    let close = |a: &[f32], b: &[f32]| a.iter().zip(b).all(|(a, b)| (a - b).abs() <= 1e-5);
    for &case in CASES {
        let (b, c, h, wd, k, s, p) = case;
        let g = Geom::new(h, wd, k, s, p)?;
        let mut g_rows = g.clone();
        g_rows.tile = 1;
        let x = lcg(b * c * h * wd, 400, 2.0);
        let gp = lcg(b * c * g.out_plane(), 401, 1.0);
        let w = lcg(k * k, 402, 1.0);
        let (xp, gpp) = (&x[..g.in_plane()], &gp[..g.out_plane()]);

        let fwd = |g: &Geom, fma: bool| {
            let mut out = vec![0.0; g.out_plane()];
            let mut sc = Scratch::new(g.fwd_scratch_len());
            let act = Activation::Relu6;
            if fma {
                fwd_plane::<true>(g, xp, &w, 0.5, act, &mut out, &mut sc);
            } else {
                fwd_plane::<false>(g, xp, &w, 0.5, act, &mut out, &mut sc);
            }
            out
        };
        let want = fwd(&g, true);
        assert!(close(&fwd(&g, false), &want), "{case:?} forward");
        assert!(
            close(&fwd(&g_rows, true), &want),
            "{case:?} forward, row tiles"
        );

        let gin = |g: &Geom, fma: bool| {
            let mut gx = vec![0.0; g.in_plane()];
            let mut sc = Scratch::new(g.grad_input_scratch_len());
            if fma {
                grad_input_plane::<true>(g, gpp, &w, &mut gx, &mut sc);
            } else {
                grad_input_plane::<false>(g, gpp, &w, &mut gx, &mut sc);
            }
            gx
        };
        assert!(
            close(&gin(&g, false), &gin(&g, true)),
            "{case:?} grad input"
        );

        let gw = |g: &Geom, fma: bool| {
            let mut gw = vec![0.0; k * k];
            let mut sc = Scratch::new(g.fwd_scratch_len());
            if fma {
                grad_weight_channel::<true>(g, &x, &gp, 0, c, &mut gw, &mut sc);
            } else {
                grad_weight_channel::<false>(g, &x, &gp, 0, c, &mut gw, &mut sc);
            }
            gw
        };
        let want = gw(&g, true);
        assert!(close(&gw(&g, false), &want), "{case:?} grad weight");
        assert!(
            close(&gw(&g_rows, true), &want),
            "{case:?} grad weight, row tiles"
        );
    }
    Ok(())
}

#[test]
fn backward_through_non_contiguous_input() -> Result<()> {
    let (b, c, h, w, k, s, p) = (2, 3, 7, 7, 5, 2, 2);
    let xt = tensor(&[b, c, w, h], 11, 2.0)?;
    let (_, wt, bt) = inputs((b, c, h, w, k, s, p), 12)?;
    let g = Geom::new(h, w, k, s, p)?;
    let r = tensor(&[b, c, g.oh, g.ow], 13, 1.0)?;
    let f_ours = |x: &Tensor, w: &Tensor, b: &Tensor| {
        depthwise_conv2d(&x.transpose(2, 3)?, w, b, s, p, Activation::Relu6)
    };
    let f_ref = |x: &Tensor, w: &Tensor, b: &Tensor| {
        reference(
            &x.transpose(2, 3)?.contiguous()?,
            w,
            b,
            s,
            p,
            Activation::Relu6,
        )
    };
    let ours = conv_grads(f_ours, &xt, &wt, &bt, &r)?;
    let theirs = conv_grads(f_ref, &xt, &wt, &bt, &r)?;
    for which in 0..3 {
        let e = rel_to_max(&ours[which], &theirs[which])?;
        assert!(e < 1e-4, "grad {which}: rel error {e}");
    }
    Ok(())
}

#[test]
fn fused_activation_gradients_match_the_three_ops() -> Result<()> {
    // Outputs and inputs as activations give them (values below 0, inside (0, 6), above 6),
    // gradients of both signs; every case's geometry, strided ones with unread pixels.
    let acts = [
        (Activation::Relu6, Activation::Relu6),
        (Activation::Relu, Activation::Identity),
        (Activation::Identity, Activation::Relu),
    ];
    for (n, &case) in CASES.iter().enumerate() {
        let (b, c, h, w, k, s, p) = case;
        let g = Geom::new(h, w, k, s, p)?;
        let seed = 40 + n as u64;
        let input = tensor(&[b, c, h, w], seed, 8.0)?;
        let out = tensor(&[b, c, g.oh, g.ow], seed + 1, 8.0)?;
        let grad = tensor(&[b, c, g.oh, g.ow], seed + 2, 1.0)?;
        let wt = tensor(&[c, 1, k, k], seed + 3, 1.0)?;
        for (pre, post) in acts {
            let fused = grad_input_fused_acts((&grad, &out), &wt, &input, (pre, post), (s, p))?;
            let gpd = act_grad(&grad, &out, pre)?;
            let three = act_grad(&grad_input(&gpd, &wt, s, p, (h, w))?, &input, post)?;
            let (a, b) = (to_f64(&fused)?, to_f64(&three)?);
            assert!(b.iter().any(|v| *v != 0.0), "case {case:?}");
            assert_eq!(a, b, "case {case:?}, {pre:?} then {post:?}");
        }
    }
    Ok(())
}

/// Throwaway timing (best of several runs):
/// `cargo test --release --lib ops::depthwise -- --ignored --nocapture`; set `TIMING_CASE`
/// to an index to run one case only.
#[test]
#[ignore]
fn timing() -> Result<()> {
    crate::ops::test_util::keep_freed_memory();
    let cases = [
        (32, 96, 112, 3, 1),
        (32, 672, 14, 5, 1),
        (32, 144, 112, 3, 2),
        (32, 1152, 7, 5, 1),
    ];
    let only = std::env::var("TIMING_CASE")
        .ok()
        .and_then(|v| v.parse().ok());
    // Process CPU time in ms (utime + stime, 100 Hz ticks), robust to other load.
    let cpu_ms = || -> f64 {
        let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
        let after = stat.rsplit(')').next().unwrap_or("");
        let f: Vec<f64> = after
            .split_whitespace()
            .filter_map(|v| v.parse().ok())
            .collect();
        f.get(10..12).map_or(f64::NAN, |t| (t[0] + t[1]) * 10.0)
    };
    // (best wall-clock ms, mean CPU ms) per call.
    let time = |f: &dyn Fn() -> Result<Tensor>, n: usize| -> Result<String> {
        f()?;
        let (mut best, cpu0) = (f64::INFINITY, cpu_ms());
        for _ in 0..n {
            let t = std::time::Instant::now();
            f()?;
            best = best.min(t.elapsed().as_secs_f64() * 1e3);
        }
        Ok(format!(
            "{best:.1} ms (cpu {:.1} ms)",
            (cpu_ms() - cpu0) / n as f64
        ))
    };
    for (i, (b, c, hw, k, s)) in cases.into_iter().enumerate() {
        if only.is_some_and(|o: usize| o != i) {
            continue;
        }
        let p = k / 2;
        let (x, w, bias) = inputs((b, c, hw, hw, k, s, p), 1)?;
        let n = (20_000_000 / x.elem_count()).clamp(10, 100);
        let fwd = time(
            &|| depthwise_conv2d(&x, &w, &bias, s, p, Activation::Relu6),
            n,
        )?;
        let copy = time(&|| x.affine(1.0, 0.5), n)?;
        let gp = depthwise_conv2d(&x, &w, &bias, s, p, Activation::Relu6)?.ones_like()?;
        let (h, wd) = (hw, hw);
        let gi = DepthwiseGradInput {
            stride: s,
            padding: p,
            h,
            w: wd,
        };
        let gin = time(&|| gp.apply_op2_no_bwd(&w, &gi), n)?;
        let gw = DepthwiseGradWeight {
            stride: s,
            padding: p,
            k,
        };
        let gwt = time(&|| x.apply_op2_no_bwd(&gp, &gw), n)?;
        println!(
            "B={b} C={c} {hw}x{hw} k={k} s={s}: forward {fwd}, grad input {gin}, \
             grad weight {gwt}; x.affine {copy}"
        );
    }
    Ok(())
}

/// The stride-2 interleave of `unfill_poly` writes every pixel that the polyphase layout holds
/// to where the plain scatter does (odd and even widths, paddings beyond the kernel, a 1x1
/// kernel), and only those.
#[test]
fn unfill_poly_at_stride_2_is_the_plain_scatter() -> Result<()> {
    for (h, w, k, p) in [
        (9, 7, 3, 1),
        (8, 8, 5, 2),
        (6, 5, 2, 0),
        (5, 4, 1, 0),
        (7, 6, 3, 3),
    ] {
        let g = Geom::new(h, w, k, 2, p)?;
        let poly: Vec<f32> = (0..g.poly_len()).map(|i| i as f32 + 1.0).collect();
        let mut got = vec![0f32; h * w];
        unfill_poly(&g, &poly, &mut got);
        let mut want = vec![0f32; h * w];
        for r in 0..2 {
            for q in 0..2 {
                let sub = &poly[(r * 2 + q) * g.sub_len()..][..g.sub_len()];
                let (lo, hi) = g.valid_cols(q);
                for (a, row) in sub.chunks_exact(g.pl).enumerate() {
                    if let Some(y) = g.input_row(a, r) {
                        (lo..hi).for_each(|j| want[y * w + j * 2 + q - p] = row[j]);
                    }
                }
            }
        }
        assert_eq!(got, want, "{h}x{w} k {k} padding {p}");
    }
    Ok(())
}
