use candle_core::{Device, Var};

use super::super::test_util::{
    ACTS, act_f64, central_differences, conv_grads, grads_all, rel_to_max, tensor, to_f64,
};
use super::*;

/// One convolution to test: input `[b, cin, h, w]`, weight `[cout, cin, kh, kw]`, `spec`.
#[derive(Clone, Copy, Debug)]
pub(super) struct Case {
    pub b: usize,
    pub cin: usize,
    pub cout: usize,
    pub hw: (usize, usize),
    pub k: (usize, usize),
    pub spec: ConvSpec,
}

/// A case with a square kernel, stride and padding, no dilation.
pub(super) const fn sq(
    b: usize,
    cin: usize,
    cout: usize,
    hw: (usize, usize),
    k: usize,
    s: usize,
    p: usize,
) -> Case {
    Case {
        b,
        cin,
        cout,
        hw,
        k: (k, k),
        spec: ConvSpec::square(s, p),
    }
}

/// Small cases for the f64 references (finite differences among them).
const CASES: &[Case] = &[
    // The stem's geometry, small.
    sq(1, 3, 4, (8, 8), 3, 2, 1),
    sq(3, 3, 5, (9, 7), 3, 2, 1),
    sq(1, 2, 3, (6, 6), 3, 1, 1),
    sq(3, 2, 2, (7, 5), 5, 2, 2),
    // 1x1: stride 1 (the plain product) and stride 2 (ResNet's downsample).
    sq(1, 4, 3, (5, 6), 1, 1, 0),
    sq(3, 5, 3, (7, 5), 1, 2, 0),
    sq(3, 1, 2, (6, 5), 2, 2, 0),
    // Padding beyond k - 1, and a 1x1 output.
    sq(1, 2, 2, (4, 4), 3, 1, 3),
    sq(3, 2, 3, (3, 3), 3, 1, 0),
    // ResNet's 7x7 stride-2 stem, channels not a multiple of 8.
    sq(1, 3, 5, (11, 9), 7, 2, 3),
    // Inception's 1x7 and 7x1 with their own padding per axis.
    Case {
        b: 3,
        cin: 3,
        cout: 2,
        hw: (5, 9),
        k: (1, 7),
        spec: ConvSpec::padded(0, 3),
    },
    Case {
        b: 1,
        cin: 2,
        cout: 3,
        hw: (9, 4),
        k: (7, 1),
        spec: ConvSpec::padded(3, 0),
    },
    // Dilation 2, at stride 1 and 2.
    Case {
        b: 1,
        cin: 3,
        cout: 5,
        hw: (9, 8),
        k: (3, 3),
        spec: ConvSpec::square(1, 2).dilated(2),
    },
    Case {
        b: 3,
        cin: 2,
        cout: 3,
        hw: (11, 10),
        k: (3, 3),
        spec: ConvSpec::square(2, 1).dilated(2),
    },
    // Stride 3, and a column stride without a row stride (the phases of `unfold_strided`).
    sq(2, 2, 3, (11, 10), 4, 3, 1),
    Case {
        b: 2,
        cin: 3,
        cout: 2,
        hw: (5, 13),
        k: (3, 5),
        spec: ConvSpec {
            stride: (1, 2),
            padding: (1, 2),
            dilation: (1, 1),
        },
    },
    // Everything different per axis.
    Case {
        b: 1,
        cin: 2,
        cout: 3,
        hw: (9, 8),
        k: (3, 2),
        spec: ConvSpec {
            stride: (2, 1),
            padding: (1, 0),
            dilation: (1, 2),
        },
    },
];

/// Larger cases: several bands per image, row tiles at batch 1, odd channel counts.
const BANDED: &[Case] = &[
    // ResNet's layer4.0.conv2 (3x3 stride 2 to a 7x7 plane), fewer channels: the input
    // gradient of images side by side, a last chunk of channels not full.
    sq(3, 40, 24, (14, 13), 3, 2, 1),
    sq(1, 3, 32, (224, 224), 3, 2, 1),
    sq(2, 19, 21, (30, 28), 3, 1, 1),
    sq(1, 10, 40, (33, 20), 5, 2, 2),
    Case {
        b: 2,
        cin: 7,
        cout: 9,
        hw: (40, 24),
        k: (3, 3),
        spec: ConvSpec::square(1, 2).dilated(2),
    },
    Case {
        b: 1,
        cin: 6,
        cout: 5,
        hw: (24, 30),
        k: (1, 7),
        spec: ConvSpec::padded(0, 3),
    },
];

pub(super) fn inputs(c: Case, seed: u64) -> Result<(Tensor, Tensor, Tensor)> {
    Ok((
        tensor(&[c.b, c.cin, c.hw.0, c.hw.1], seed, 2.0)?,
        tensor(&[c.cout, c.cin, c.k.0, c.k.1], seed + 1, 1.0)?,
        tensor(&[c.cout], seed + 2, 1.0)?,
    ))
}

pub(super) fn out_hw(c: Case) -> (usize, usize) {
    let out =
        |n: usize, k: usize, s: usize, p: usize, d: usize| (n + 2 * p - d * (k - 1) - 1) / s + 1;
    let ConvSpec {
        stride: (sy, sx),
        padding: (py, px),
        dilation: (dy, dx),
    } = c.spec;
    (
        out(c.hw.0, c.k.0, sy, py, dy),
        out(c.hw.1, c.k.1, sx, px, dx),
    )
}

/// Whether candle computes the case: one stride and dilation for both axes.
fn candle_forward_ok(c: Case) -> bool {
    c.spec.stride.0 == c.spec.stride.1 && c.spec.dilation.0 == c.spec.dilation.1
}

/// Whether candle's conv2d backward handles the case too: it derives the transposed
/// convolution's output padding from the height alone, and needs `padding < k`.
fn candle_backward_ok(c: Case) -> bool {
    let (oh, ow) = out_hw(c);
    let ConvSpec {
        stride: (s, _),
        padding: (py, px),
        dilation: (d, _),
    } = c.spec;
    let pad = |n: usize, o: usize, k: usize, p: usize| {
        n as isize - ((o - 1) * s + d * (k - 1) + 1) as isize + 2 * p as isize
    };
    candle_forward_ok(c)
        && pad(c.hw.0, oh, c.k.0, py) == pad(c.hw.1, ow, c.k.1, px)
        && py == px
        && py < c.k.0
        && px < c.k.1
}

/// `conv(x, w) + bias` in f64 by the definition, `[b, cout, oh, ow]` flattened.
pub(super) fn direct_f64(c: Case, x: &[f64], w: &[f64], bias: &[f64]) -> Vec<f64> {
    let (oh, ow) = out_hw(c);
    let ((h, wd), (kh, kw)) = (c.hw, c.k);
    let ConvSpec {
        stride: (sy, sx),
        padding: (py, px),
        dilation: (dy, dx),
    } = c.spec;
    let mut out = Vec::with_capacity(c.b * c.cout * oh * ow);
    for img in 0..c.b {
        for o in 0..c.cout {
            for oy in 0..oh {
                for ox in 0..ow {
                    let mut v = bias[o];
                    for ch in 0..c.cin {
                        for ky in 0..kh {
                            for kx in 0..kw {
                                let iy = (oy * sy + ky * dy) as isize - py as isize;
                                let ix = (ox * sx + kx * dx) as isize - px as isize;
                                if iy >= 0 && ix >= 0 && (iy as usize) < h && (ix as usize) < wd {
                                    v += w[((o * c.cin + ch) * kh + ky) * kw + kx]
                                        * x[((img * c.cin + ch) * h + iy as usize) * wd
                                            + ix as usize];
                                }
                            }
                        }
                    }
                    out.push(v);
                }
            }
        }
    }
    out
}

#[test]
fn forward_matches_the_definition_and_candle() -> Result<()> {
    for (i, &case) in CASES.iter().chain(BANDED).enumerate() {
        let (x, w, bias) = inputs(case, 10 * i as u64)?;
        let pre = direct_f64(case, &to_f64(&x)?, &to_f64(&w)?, &to_f64(&bias)?);
        let (oh, ow) = out_hw(case);
        for act in ACTS {
            let got = conv2d_fused(&x, &w, &bias, case.spec, act)?;
            assert_eq!(got.dims(), [case.b, case.cout, oh, ow], "{case:?}");
            let want: Vec<f32> = pre.iter().map(|&v| act_f64(act, v) as f32).collect();
            let want = Tensor::from_vec(want, got.dims(), &Device::Cpu)?;
            let e = rel_to_max(&got, &want)?;
            assert!(e <= 1e-5, "{case:?} {act:?} vs f64: {e}");
            if candle_forward_ok(case) {
                let want = with_candle(&x, &w, &bias, case.spec, act)?;
                let e = rel_to_max(&got, &want)?;
                assert!(e <= 1e-5, "{case:?} {act:?} vs candle: {e}");
            }
        }
    }
    Ok(())
}

#[test]
fn forward_non_contiguous_inputs() -> Result<()> {
    let spec = ConvSpec::square(2, 1);
    let x = tensor(&[3, 3, 9, 8], 1, 2.0)?.transpose(2, 3)?;
    let w = tensor(&[3, 4, 3, 3], 2, 1.0)?.transpose(0, 1)?;
    let bias = tensor(&[4, 2], 3, 1.0)?.narrow(1, 1, 1)?.squeeze(1)?;
    for t in [&x, &w, &bias] {
        assert!(!t.is_contiguous());
    }
    for act in ACTS {
        let got = conv2d_fused(&x, &w, &bias, spec, act)?;
        let want = with_candle(&x.contiguous()?, &w.contiguous()?, &bias, spec, act)?;
        assert!(rel_to_max(&got, &want)? <= 1e-5, "{act:?}");
    }
    Ok(())
}

#[test]
fn bad_inputs_are_errors() -> Result<()> {
    let (x, w, bias) = inputs(sq(1, 3, 4, (8, 8), 3, 2, 1), 0)?;
    let act = Activation::Identity;
    assert!(conv2d_bias_act(&x, &w, &bias, 0, 1, act).is_err());
    assert!(conv2d_bias_act(&x.narrow(1, 0, 2)?, &w, &bias, 1, 1, act).is_err());
    assert!(conv2d_bias_act(&x, &w, &bias.narrow(0, 0, 2)?, 1, 1, act).is_err());
    assert!(conv2d_bias_act(&x.narrow(2, 0, 1)?, &w, &bias, 1, 0, act).is_err());
    let dilated = ConvSpec::square(1, 0).dilated(4);
    let err = conv2d_fused(&x, &w, &bias, dilated, act).unwrap_err();
    assert!(err.to_string().contains("dilation 4"), "{err}");
    let err = conv2d_fused(&x, &w, &bias, ConvSpec::square(1, 1).dilated(0), act).unwrap_err();
    assert!(err.to_string().contains("dilation must be >= 1"), "{err}");
    let err = conv2d_bias_act(&x.to_dtype(DType::F64)?, &w, &bias, 1, 1, act).unwrap_err();
    assert!(err.to_string().contains("f32"), "{err}");
    Ok(())
}

#[test]
fn backward_matches_candle() -> Result<()> {
    let cases = CASES
        .iter()
        .chain(BANDED)
        .filter(|c| candle_backward_ok(**c));
    for (i, &case) in cases.enumerate() {
        let (x, w, bias) = inputs(case, 100 + 10 * i as u64)?;
        let (oh, ow) = out_hw(case);
        let r = tensor(&[case.b, case.cout, oh, ow], 7 + i as u64, 1.0)?;
        let spec = case.spec;
        for act in ACTS {
            let ours = conv_grads(
                |x, w, b| conv2d_fused(x, w, b, spec, act),
                &x,
                &w,
                &bias,
                &r,
            )?;
            let theirs = conv_grads(|x, w, b| with_candle(x, w, b, spec, act), &x, &w, &bias, &r)?;
            for which in 0..3 {
                let e = rel_to_max(&ours[which], &theirs[which])?;
                assert!(e < 1e-5, "{case:?} {act:?} grad {which}: rel error {e}");
            }
        }
    }
    Ok(())
}

#[test]
fn backward_matches_finite_differences() -> Result<()> {
    let eps = 1e-6;
    for (i, &case) in CASES.iter().enumerate() {
        let (x, w, bias) = inputs(case, 200 + 10 * i as u64)?;
        let (oh, ow) = out_hw(case);
        let r = tensor(&[case.b, case.cout, oh, ow], 9 + i as u64, 1.0)?;
        let rf = to_f64(&r)?;
        for act in ACTS {
            let analytic = conv_grads(
                |x, w, b| conv2d_fused(x, w, b, case.spec, act),
                &x,
                &w,
                &bias,
                &r,
            )?;
            let mut params = [to_f64(&x)?, to_f64(&w)?, to_f64(&bias)?];
            let loss = |p: &[Vec<f64>; 3]| {
                direct_f64(case, &p[0], &p[1], &p[2])
                    .iter()
                    .zip(&rf)
                    .map(|(&v, r)| act_f64(act, v) * r)
                    .sum()
            };
            for (which, analytic) in analytic.iter().enumerate() {
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
fn backward_through_non_contiguous_inputs() -> Result<()> {
    let spec = ConvSpec::square(2, 1);
    let x = tensor(&[3, 3, 10, 8], 21, 2.0)?;
    let w = tensor(&[3, 4, 3, 3], 22, 1.0)?;
    let bias = tensor(&[4, 2], 23, 1.0)?;
    let r = tensor(&[3, 4, 4, 5], 24, 1.0)?;
    let views = |ours: bool| {
        move |x: &Tensor, w: &Tensor, b: &Tensor| {
            let (x, w, b) = (
                x.transpose(2, 3)?,
                w.transpose(0, 1)?,
                b.narrow(1, 1, 1)?.squeeze(1)?,
            );
            let act = Activation::Relu6;
            if ours {
                conv2d_fused(&x, &w, &b, spec, act)
            } else {
                with_candle(&x.contiguous()?, &w.contiguous()?, &b, spec, act)
            }
        }
    };
    let ours = conv_grads(views(true), &x, &w, &bias, &r)?;
    let theirs = conv_grads(views(false), &x, &w, &bias, &r)?;
    for which in 0..3 {
        let e = rel_to_max(&ours[which], &theirs[which])?;
        assert!(e < 1e-5, "grad {which}: rel error {e}");
    }
    Ok(())
}

#[test]
fn backward_skips_untracked_arguments() -> Result<()> {
    let (x, w, bias) = inputs(sq(2, 3, 4, (8, 8), 3, 2, 1), 300)?;
    let spec = ConvSpec::square(2, 1);
    let r = tensor(&[2, 4, 4, 4], 301, 1.0)?;
    let want = conv_grads(
        |x, w, b| with_candle(x, w, b, spec, Activation::Relu),
        &x,
        &w,
        &bias,
        &r,
    )?;
    // Only x is a variable (gradient ascent on the input of a frozen network).
    let xv = Var::from_tensor(&x)?;
    let y = conv2d_fused(xv.as_tensor(), &w, &bias, spec, Activation::Relu)?;
    let g = y.mul(&r)?.sum_all()?.backward()?;
    assert!(g.get(&w).is_none() && g.get(&bias).is_none());
    let gx = g.get(xv.as_tensor()).expect("an input gradient");
    assert!(rel_to_max(gx, &want[0])? < 1e-5);
    Ok(())
}

#[test]
fn conv2d_without_bias_is_the_convolution() -> Result<()> {
    let case = CASES[10];
    let (x, w, _) = inputs(case, 400)?;
    let zero = vec![0.0; case.cout];
    let want = direct_f64(case, &to_f64(&x)?, &to_f64(&w)?, &zero);
    let got = to_f64(&conv2d(&x, &w, case.spec)?)?;
    let e = got
        .iter()
        .zip(&want)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0, f64::max);
    assert!(e < 1e-5, "{e}");
    Ok(())
}

/// The residual variant against candle's convolution, add and activation: forward and the
/// gradients of `x`, `w` and the residual (the bias a constant); with a tracked bias (the
/// unfused path) the bias gradient too.
#[test]
fn add_act_matches_candle() -> Result<()> {
    let cases = CASES
        .iter()
        .chain(BANDED)
        .filter(|c| candle_backward_ok(**c));
    for (i, &case) in cases.enumerate() {
        let (x, w, bias) = inputs(case, 500 + 10 * i as u64)?;
        let (oh, ow) = out_hw(case);
        let res = tensor(&[case.b, case.cout, oh, ow], 501 + i as u64, 2.0)?;
        let r = tensor(&[case.b, case.cout, oh, ow], 502 + i as u64, 1.0)?;
        let spec = case.spec;
        for act in ACTS {
            let theirs = |t: &[&Tensor]| {
                let y = (with_candle(t[0], t[1], &bias, spec, Activation::Identity)? + t[2])?;
                act.apply_tensor(&y)
            };
            let ours = |t: &[&Tensor]| conv2d_add_act(t[0], t[1], &bias, t[2], spec, act);
            let args = [&x, &w, &res];
            let (a, b) = (ours(&args)?, theirs(&args)?);
            assert!(rel_to_max(&a, &b)? <= 1e-5, "{case:?} {act:?} forward");
            let ga = grads_all(ours, &args, &r)?;
            let gb = grads_all(theirs, &args, &r)?;
            for which in 0..3 {
                let e = rel_to_max(&ga[which], &gb[which])?;
                assert!(e < 1e-5, "{case:?} {act:?} grad {which}: rel error {e}");
            }
            let tracked = conv_grads(
                |x, w, b| conv2d_add_act(x, w, b, &res, spec, act),
                &x,
                &w,
                &bias,
                &r,
            )?;
            let reference = conv_grads(
                |x, w, b| {
                    act.apply_tensor(&(with_candle(x, w, b, spec, Activation::Identity)? + &res)?)
                },
                &x,
                &w,
                &bias,
                &r,
            )?;
            let e = rel_to_max(&tracked[2], &reference[2])?;
            assert!(e < 1e-5, "{case:?} {act:?} bias grad: rel error {e}");
        }
    }
    Ok(())
}

/// The side-by-side forward in groups of images and column tiles that end inside an image,
/// against the definition in f64, with the bias, ReLU and a pre-activation residual applied.
#[test]
fn side_by_side_forward_matches_the_definition() -> Result<()> {
    let cases = [
        // ResNet's downsample to a 7x7 plane, fewer channels.
        sq(7, 5, 19, (13, 14), 1, 2, 0),
        sq(5, 3, 4, (9, 9), 3, 1, 1),
        sq(1, 6, 3, (11, 9), 1, 2, 0),
        sq(4, 2, 33, (8, 5), 3, 2, 1),
        Case {
            b: 3,
            cin: 2,
            cout: 3,
            hw: (11, 10),
            k: (3, 3),
            spec: ConvSpec::square(2, 1).dilated(2),
        },
    ];
    for (i, case) in cases.into_iter().enumerate() {
        let (x, w, bias) = inputs(case, 900 + 10 * i as u64)?;
        let (oh, ow) = out_hw(case);
        let res = tensor(&[case.b, case.cout, oh, ow], 901 + i as u64, 2.0)?;
        let (xs, ws) = (to_f64(&x)?, to_f64(&w)?);
        let pre = direct_f64(case, &xs, &ws, &to_f64(&bias)?);
        let want: Vec<f32> = pre
            .iter()
            .zip(to_f64(&res)?)
            .map(|(v, r)| (v + r).max(0.0) as f32)
            .collect();
        let want = Tensor::from_vec(want, (case.b, case.cout, oh, ow), &Device::Cpu)?;
        let g = Geom::new(x.dims(), w.dims(), case.spec)?.1;
        let flat = |t: &Tensor| t.flatten_all()?.to_vec1::<f32>();
        let (xf, wf, bf, rf) = (flat(&x)?, flat(&w)?, flat(&bias)?, flat(&res)?);
        let epi = Epilogue {
            bias: Some(&bf),
            act: Activation::Relu,
            pre_residual: Some(&rf),
            ..Epilogue::NONE
        };
        for group in [1, 3, case.b] {
            for nt in [1, 16, 50, 1 << 20] {
                let got = side_by_side::forward_in_groups(case.b, &g, &xf, &wf, epi, (group, nt));
                let got = Tensor::from_vec(got, want.dims(), &Device::Cpu)?;
                let e = rel_to_max(&got, &want)?;
                assert!(e <= 1e-5, "{case:?} group {group} tile {nt}: {e}");
            }
        }
    }
    Ok(())
}

/// A ResNet block's end at 56x56 and batch 16, where [`unfolded`] tiles whole planes
/// ([`whole_plane_rows`]; 200 output channels: a last tile of 72 rows), against candle's
/// convolution, add and ReLU.
#[test]
fn whole_plane_block_end_matches_candle() -> Result<()> {
    let case = sq(16, 4, 200, (56, 56), 1, 1, 0);
    let (x, w, bias) = inputs(case, 900)?;
    let res = tensor(&[16, 200, 56, 56], 901, 2.0)?;
    let (_, g) = Geom::new(x.dims(), w.dims(), case.spec)?;
    let epi = Epilogue {
        pre_residual: Some(&[]),
        ..Epilogue::NONE
    };
    assert_eq!(whole_plane_rows(16, &g, &epi), Some(128));
    assert_eq!(
        whole_plane_rows(8, &g, &epi),
        None,
        "too few tiles at batch 8"
    );
    let ours = conv2d_add_act(&x, &w, &bias, &res, case.spec, Activation::Relu)?;
    let theirs = Activation::Relu
        .apply_tensor(&(with_candle(&x, &w, &bias, case.spec, Activation::Identity)? + &res)?)?;
    let e = rel_to_max(&ours, &theirs)?;
    assert!(e <= 1e-5, "rel error {e}");
    Ok(())
}
