//! Convolution with a rectangular kernel and its own padding per axis (Inception V3's 1x7 /
//! 7x1 and 1x3 / 3x1 convolutions), stride 1: the dense kernel of `ops::conv` (checked here
//! against a direct convolution and by finite differences).

use candle_core::{Result, Tensor, bail};

use super::conv::{ConvSpec, conv2d};

/// `conv(x, w)` at stride 1 with zero padding `padding_h` above and below and `padding_w`
/// left and right.
///
/// - `x`: `[B,Cin,H,W]`; `w`: `[Cout,Cin,kh,kw]` (any `kh`, `kw`).
/// - Returns `[B,Cout,H + 2*padding_h - kh + 1, W + 2*padding_w - kw + 1]`.
///
/// Differentiable w.r.t. `x` and `w`.
pub fn conv2d_rect(x: &Tensor, w: &Tensor, padding_h: usize, padding_w: usize) -> Result<Tensor> {
    let (_, cin, h, wd) = x.dims4()?;
    let (_, wcin, kh, kw) = w.dims4()?;
    if wcin != cin || h + 2 * padding_h < kh || wd + 2 * padding_w < kw {
        bail!(
            "conv2d_rect: x {:?} with weight {:?} and padding ({padding_h}, {padding_w})",
            x.dims(),
            w.dims()
        );
    }
    conv2d(x, w, ConvSpec::padded(padding_h, padding_w))
}

#[cfg(test)]
mod tests {
    use super::super::test_util::{central_differences, grads_all, tensor, to_f64};
    use super::*;
    use candle_core::{DType, Device};

    /// Direct f64 convolution: `[b, cout, oh, ow]` flattened.
    fn direct(
        x: &[f64],
        w: &[f64],
        (b, cin, h, wd): (usize, usize, usize, usize),
        (cout, kh, kw): (usize, usize, usize),
        (ph, pw): (usize, usize),
    ) -> Vec<f64> {
        let (oh, ow) = (h + 2 * ph - kh + 1, wd + 2 * pw - kw + 1);
        let mut out = vec![0.0; b * cout * oh * ow];
        for n in 0..b {
            for o in 0..cout {
                for y in 0..oh {
                    for xo in 0..ow {
                        let mut acc = 0.0;
                        for c in 0..cin {
                            for i in 0..kh {
                                for j in 0..kw {
                                    let (yy, xx) = (y + i, xo + j);
                                    if yy < ph || xx < pw || yy - ph >= h || xx - pw >= wd {
                                        continue;
                                    }
                                    acc += x[((n * cin + c) * h + yy - ph) * wd + xx - pw]
                                        * w[((o * cin + c) * kh + i) * kw + j];
                                }
                            }
                        }
                        out[((n * cout + o) * oh + y) * ow + xo] = acc;
                    }
                }
            }
        }
        out
    }

    /// `(x dims, (cout, kh, kw), (ph, pw))`.
    type Case = (
        (usize, usize, usize, usize),
        (usize, usize, usize),
        (usize, usize),
    );

    /// Inception's 1x7 / 7x1 / 1x3 / 3x1 and a plain 3x3.
    const CASES: [Case; 5] = [
        ((2, 3, 5, 9), (4, 1, 7), (0, 3)),
        ((1, 2, 9, 4), (3, 7, 1), (3, 0)),
        ((2, 2, 4, 5), (2, 1, 3), (0, 1)),
        ((1, 3, 6, 3), (2, 3, 1), (1, 0)),
        ((1, 2, 5, 5), (3, 3, 3), (1, 1)),
    ];

    #[test]
    fn forward_matches_a_direct_convolution() -> Result<()> {
        for (i, &(xd, (cout, kh, kw), pad)) in CASES.iter().enumerate() {
            let x = tensor(&[xd.0, xd.1, xd.2, xd.3], i as u64, 2.0)?;
            let w = tensor(&[cout, xd.1, kh, kw], 10 + i as u64, 1.0)?;
            let got = to_f64(&conv2d_rect(&x, &w, pad.0, pad.1)?)?;
            let want = direct(&to_f64(&x)?, &to_f64(&w)?, xd, (cout, kh, kw), pad);
            assert_eq!(got.len(), want.len());
            let err = got
                .iter()
                .zip(&want)
                .map(|(a, b)| (a - b).abs())
                .fold(0.0, f64::max);
            assert!(err < 1e-5, "case {i}: {err}");
        }
        Ok(())
    }

    #[test]
    fn backward_matches_finite_differences() -> Result<()> {
        for (i, &(xd, (cout, kh, kw), pad)) in CASES.iter().enumerate() {
            let x = tensor(&[xd.0, xd.1, xd.2, xd.3], 20 + i as u64, 2.0)?;
            let w = tensor(&[cout, xd.1, kh, kw], 30 + i as u64, 1.0)?;
            let out = conv2d_rect(&x, &w, pad.0, pad.1)?;
            let r = tensor(out.dims(), 40 + i as u64, 1.0)?;
            let grads = grads_all(|t| conv2d_rect(t[0], t[1], pad.0, pad.1), &[&x, &w], &r)?;
            let rv = to_f64(&r)?;
            let mut params = vec![to_f64(&x)?, to_f64(&w)?];
            for (which, g) in grads.iter().enumerate() {
                let fd = central_differences(&mut params, which, 1e-3, |p| {
                    direct(&p[0], &p[1], xd, (cout, kh, kw), pad)
                        .iter()
                        .zip(&rv)
                        .map(|(a, b)| a * b)
                        .sum()
                });
                let ours = to_f64(g)?;
                let scale = fd.iter().fold(1e-6f64, |m, v| m.max(v.abs()));
                let err = ours
                    .iter()
                    .zip(&fd)
                    .map(|(a, b)| (a - b).abs())
                    .fold(0.0, f64::max);
                assert!(
                    err / scale < 1e-4,
                    "case {i}, argument {which}: {err} of {scale}"
                );
            }
        }
        Ok(())
    }

    #[test]
    fn mismatched_shapes_are_errors() -> Result<()> {
        let x = Tensor::zeros((1, 2, 3, 3), DType::F32, &Device::Cpu)?;
        let w = Tensor::zeros((1, 3, 1, 7), DType::F32, &Device::Cpu)?;
        assert!(conv2d_rect(&x, &w, 0, 3).is_err());
        let w = Tensor::zeros((1, 2, 1, 7), DType::F32, &Device::Cpu)?;
        assert!(conv2d_rect(&x, &w, 0, 1).is_err());
        assert_eq!(conv2d_rect(&x, &w, 0, 3)?.dims(), [1, 1, 3, 3]);
        Ok(())
    }
}
