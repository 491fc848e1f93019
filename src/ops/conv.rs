//! Dense 2-D convolution (groups = 1) with bias and activation fused:
//! `act(conv(x, w) + bias)`, `[B,Cin,H,W]` -> `[B,Cout,OH,OW]`. Made for stems like
//! EfficientNet's 3x3 stride-2 convolution of the 3 colour channels, where candle's `conv2d`
//! (a full-size im2col, then a product) is slow.
//!
//! The forward works on rayon tasks of `(image, band of output rows)`: it unfolds the band's
//! receptive fields into a small per-task im2col buffer (`[Cin*k*k, rows*OW]`, in L2), runs one
//! single-threaded `gemm` into the output, and applies bias and activation to the tile while it
//! is in cache (see `ops::matmul`).
//!
//! The backward: `gp = grad * act'(out)`; `gw = Σ gp_band · cols_bandᵀ` over the same bands
//! (recomputing each im2col buffer, reduced in a fixed order); `gx` per `(image, band of input
//! rows)`: `wᵀ · gp` over the output rows that touch the band, folded back (col2im) into the
//! band's own rows only, so tasks never write the same element.

use candle_core::{CpuStorage, CustomOp2, CustomOp3, DType, Layout, Result, Shape, Tensor, bail};
use rayon::prelude::*;

use super::matmul::{Epilogue, MatRef, SyncPtr, gemm_into, reduce_pieces, row_tile, tiled_matmul};
use super::{Activation, act_grad, channel_sum, f32_data, zeroed};

/// The geometry of one image of a convolution.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Geom {
    cin: usize,
    h: usize,
    w: usize,
    cout: usize,
    k: usize,
    s: usize,
    p: usize,
    oh: usize,
    ow: usize,
}

impl Geom {
    fn new(x: &[usize], w: &[usize], stride: usize, padding: usize) -> Result<(usize, Self)> {
        let &[b, cin, h, wd] = x else {
            bail!("conv2d_bias_act: x must be [B,Cin,H,W], got {x:?}");
        };
        let &[cout, wcin, k, k2] = w else {
            bail!("conv2d_bias_act: w must be [Cout,Cin,k,k], got {w:?}");
        };
        if wcin != cin || k != k2 {
            bail!("conv2d_bias_act: w must be [Cout,Cin,k,k] with Cin = {cin}, got {w:?}");
        }
        if stride == 0 {
            bail!("conv2d_bias_act: stride must be >= 1");
        }
        if h == 0 || wd == 0 {
            bail!("conv2d_bias_act: empty {h}x{wd} planes");
        }
        if k == 0 || h + 2 * padding < k || wd + 2 * padding < k {
            bail!("conv2d_bias_act: kernel {k}x{k} does not fit {h}x{wd} padded by {padding}");
        }
        let out = |n: usize| (n + 2 * padding - k) / stride + 1;
        let g = Geom {
            cin,
            h,
            w: wd,
            cout,
            k,
            s: stride,
            p: padding,
            oh: out(h),
            ow: out(wd),
        };
        Ok((b, g))
    }

    /// Rows of the unfolded matrix: `Cin*k*k`.
    fn kdim(&self) -> usize {
        self.cin * self.k * self.k
    }

    fn in_plane(&self) -> usize {
        self.h * self.w
    }

    fn out_plane(&self) -> usize {
        self.oh * self.ow
    }

    /// Output rows per band: the band's im2col buffer and output tile stay within ~128 KiB,
    /// but a band has at least 256 columns (or the whole image) so that the products are not
    /// too thin for the microkernels when `Cin*k*k` is large (ResNet's 3x3 convolutions of
    /// 512 channels: a 4608 x 49 buffer).
    fn band_rows(&self) -> usize {
        let cols = (32_768 / self.kdim().max(self.cout).max(1)).max(256);
        cols.div_ceil(self.ow.max(1)).clamp(1, self.oh)
    }

    /// The output columns `ox` whose tap `kx` reads an input column (not padding):
    /// `0 <= ox*s + kx - p < W`.
    fn valid_ox(&self, kx: usize) -> (usize, usize) {
        let (s, p) = (self.s, self.p);
        let lo = if kx >= p { 0 } else { (p - kx).div_ceil(s) };
        let hi = if self.w + p > kx {
            ((self.w + p - kx - 1) / s + 1).min(self.ow)
        } else {
            0
        };
        (lo.min(hi), hi)
    }

    /// The input row read by output row `oy` through tap `ky`, if it is not padding.
    fn input_row(&self, oy: usize, ky: usize) -> Option<usize> {
        let iy = (oy * self.s + ky).checked_sub(self.p)?;
        (iy < self.h).then_some(iy)
    }
}

/// Unfolds output rows `oy0..oy0 + rows` of one image `x` (`Cin*H*W`) into `cols`
/// (`[Cin*k*k, rows*OW]`, row-major): `cols[(c*k + ky)*k + kx][r*OW + ox] =
/// x[c][(oy0+r)*s + ky - p][ox*s + kx - p]`, zero in the padding.
fn im2col(g: &Geom, x: &[f32], oy0: usize, rows: usize, cols: &mut Vec<f32>) {
    let (k, s, ow) = (g.k, g.s, g.ow);
    let t = rows * ow;
    cols.clear();
    cols.resize(g.kdim() * t, 0.0);
    for c in 0..g.cin {
        let plane = &x[c * g.in_plane()..][..g.in_plane()];
        for ky in 0..k {
            for kx in 0..k {
                let dst = &mut cols[((c * k + ky) * k + kx) * t..][..t];
                let (lo, hi) = g.valid_ox(kx);
                for r in 0..rows {
                    let Some(iy) = g.input_row(oy0 + r, ky) else {
                        continue;
                    };
                    let src = &plane[iy * g.w..][..g.w];
                    if lo >= hi {
                        continue;
                    }
                    let d = &mut dst[r * ow..][..ow];
                    let ix0 = lo * s + kx - g.p;
                    if s == 1 {
                        d[lo..hi].copy_from_slice(&src[ix0..ix0 + hi - lo]);
                    } else {
                        for (v, ix) in d[lo..hi].iter_mut().zip((ix0..).step_by(s)) {
                            *v = src[ix];
                        }
                    }
                }
            }
        }
    }
}

/// The forward op: `(x, w, bias)` -> `act(conv(x, w) + bias)`.
struct Conv {
    stride: usize,
    padding: usize,
    act: Activation,
}

impl CustomOp3 for Conv {
    fn name(&self) -> &'static str {
        "convlens-conv2d-bias-act"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (b, g) = Geom::new(l1.dims(), l2.dims(), self.stride, self.padding)?;
        if l3.dims() != [g.cout] {
            bail!(
                "{}: bias must be [{}], got {:?}",
                self.name(),
                g.cout,
                l3.dims()
            );
        }
        let x = f32_data(s1, l1, self.name())?;
        let w = f32_data(s2, l2, self.name())?;
        let bias = f32_data(s3, l3, self.name())?;
        let epi = Epilogue {
            bias: Some(&bias),
            act: self.act,
            residual: None,
        };
        let (kdim, n) = (g.kdim(), g.out_plane());
        let nt = g.band_rows() * g.ow;
        let mt = row_tile(g.cout, b * n.div_ceil(nt));
        let lhs = MatRef::row_major(&w, 0, kdim);
        let out = tiled_matmul(
            lhs,
            g.cout,
            kdim,
            b,
            n,
            (nt, mt),
            epi,
            |img, c0, len, buf| {
                let x = &x[img * g.cin * g.in_plane()..][..g.cin * g.in_plane()];
                im2col(&g, x, c0 / g.ow, len / g.ow, buf);
                MatRef::row_major(buf, 0, len)
            },
        );
        Ok((CpuStorage::F32(out), Shape::from((b, g.cout, g.oh, g.ow))))
    }

    /// Gradients only for the arguments that the graph tracks.
    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        bias: &Tensor,
        res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let (stride, padding) = (self.stride, self.padding);
        let gp = act_grad(grad, res, self.act)?;
        let gx = x
            .track_op()
            .then(|| {
                let (h, w_) = (x.dim(2)?, x.dim(3)?);
                let op = GradInput {
                    stride,
                    padding,
                    h,
                    w: w_,
                };
                gp.apply_op2_no_bwd(w, &op)
            })
            .transpose()?;
        let gw = w
            .track_op()
            .then(|| {
                let k = w.dim(2)?;
                x.apply_op2_no_bwd(&gp, &GradWeight { stride, padding, k })
            })
            .transpose()?;
        let gb = bias.track_op().then(|| channel_sum(&gp)).transpose()?;
        Ok((gx, gw, gb))
    }
}

/// `(x [B,Cin,H,W], gp [B,Cout,OH,OW])` -> `gw [Cout,Cin,k,k]`.
struct GradWeight {
    stride: usize,
    padding: usize,
    k: usize,
}

impl CustomOp2 for GradWeight {
    fn name(&self) -> &'static str {
        "convlens-conv2d-grad-weight"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (cin, cout, k) = (
            l1.dims().get(1).copied().unwrap_or(0),
            l2.dims().get(1).copied().unwrap_or(0),
            self.k,
        );
        let (b, g) = Geom::new(l1.dims(), &[cout, cin, k, k], self.stride, self.padding)?;
        if l2.dims() != [b, g.cout, g.oh, g.ow] {
            bail!(
                "{}: grad {:?} is not the output of x {:?}",
                self.name(),
                l2.dims(),
                l1.dims()
            );
        }
        let x = f32_data(s1, l1, self.name())?;
        let gp = f32_data(s2, l2, self.name())?;
        let (kdim, n, rows) = (g.kdim(), g.out_plane(), g.band_rows());
        let bands = g.oh.div_ceil(rows);
        let gw = reduce_pieces(b * bands, g.cout * kdim, |piece, acc, first| {
            let (img, band) = (piece / bands, piece % bands);
            let oy0 = band * rows;
            let rows = rows.min(g.oh - oy0);
            let t = rows * g.ow;
            let mut cols = Vec::new();
            let x = &x[img * g.cin * g.in_plane()..][..g.cin * g.in_plane()];
            im2col(&g, x, oy0, rows, &mut cols);
            // SAFETY: acc is `cout x kdim`; lhs is the band's `cout x t` slice of gp (row
            // stride n), rhs the transpose of the `kdim x t` im2col buffer.
            unsafe {
                gemm_into(
                    g.cout,
                    kdim,
                    t,
                    acc.as_mut_ptr(),
                    kdim,
                    !first,
                    MatRef::row_major(&gp, img * g.cout * n + oy0 * g.ow, n),
                    MatRef::transposed(&cols, 0, t),
                );
            }
        });
        Ok((CpuStorage::F32(gw), Shape::from((g.cout, g.cin, k, k))))
    }
}

/// `(gp [B,Cout,OH,OW], w [Cout,Cin,k,k])` -> `gx [B,Cin,H,W]`.
struct GradInput {
    stride: usize,
    padding: usize,
    h: usize,
    w: usize,
}

impl CustomOp2 for GradInput {
    fn name(&self) -> &'static str {
        "convlens-conv2d-grad-input"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (b, cin) = (
            l1.dims().first().copied().unwrap_or(0),
            l2.dims().get(1).copied().unwrap_or(0),
        );
        let (_, g) = Geom::new(
            &[b, cin, self.h, self.w],
            l2.dims(),
            self.stride,
            self.padding,
        )?;
        if l1.dims() != [b, g.cout, g.oh, g.ow] {
            bail!(
                "{}: grad {:?} is not the output of a {}x{} input",
                self.name(),
                l1.dims(),
                self.h,
                self.w
            );
        }
        let gp = f32_data(s1, l1, self.name())?;
        let w = f32_data(s2, l2, self.name())?;
        let mut gx = zeroed(b * g.cin * g.in_plane());
        let (kdim, n, k, s, p) = (g.kdim(), g.out_plane(), g.k, g.s, g.p);
        // Bands of input rows, about as many rows as the forward's output bands cover.
        let band = (g.band_rows() * s).clamp(1, g.h);
        let bands = g.h.div_ceil(band);
        let dst = SyncPtr(gx.as_mut_ptr());
        (0..b * bands)
            .into_par_iter()
            .for_each_init(Vec::new, |colgrad: &mut Vec<f32>, task| {
                let (img, r0) = (task / bands, (task % bands) * band);
                let r1 = (r0 + band).min(g.h);
                // Output rows with a tap on input rows r0..r1: r0 <= oy*s + ky - p < r1.
                let oy_a = (r0 + p).saturating_sub(k - 1).div_ceil(s);
                let oy_b = ((r1 - 1 + p) / s).min(g.oh - 1);
                if oy_a > oy_b {
                    return;
                }
                let t = (oy_b - oy_a + 1) * g.ow;
                colgrad.clear();
                colgrad.resize(kdim * t, 0.0);
                // SAFETY: colgrad is `kdim x t`; lhs is wᵀ (`kdim x cout`), rhs the `cout x t`
                // slice of gp for output rows oy_a..=oy_b.
                unsafe {
                    gemm_into(
                        kdim,
                        t,
                        g.cout,
                        colgrad.as_mut_ptr(),
                        t,
                        false,
                        MatRef::transposed(&w, 0, kdim),
                        MatRef::row_major(&gp, img * g.cout * n + oy_a * g.ow, n),
                    );
                }
                // col2im into the band's own rows.
                for c in 0..g.cin {
                    for iy in r0..r1 {
                        // SAFETY: row iy of channel c of image img lies in gx, and only this task
                        // (the owner of rows r0..r1 of image img) writes it.
                        let row = unsafe {
                            std::slice::from_raw_parts_mut(
                                dst.get().add((img * g.cin + c) * g.in_plane() + iy * g.w),
                                g.w,
                            )
                        };
                        for ky in 0..k {
                            // oy*s + ky - p == iy
                            let Some(v) = (iy + p).checked_sub(ky) else {
                                continue;
                            };
                            if v % s != 0 || v / s < oy_a || v / s > oy_b {
                                continue;
                            }
                            let oy = v / s;
                            for kx in 0..k {
                                let src = &colgrad
                                    [((c * k + ky) * k + kx) * t + (oy - oy_a) * g.ow..][..g.ow];
                                let (lo, hi) = g.valid_ox(kx);
                                if lo >= hi {
                                    continue;
                                }
                                let ix0 = lo * s + kx - p;
                                if s == 1 {
                                    row[ix0..ix0 + hi - lo]
                                        .iter_mut()
                                        .zip(&src[lo..hi])
                                        .for_each(|(d, v)| *d += v);
                                } else {
                                    for (v, ix) in src[lo..hi].iter().zip((ix0..).step_by(s)) {
                                        row[ix] += v;
                                    }
                                }
                            }
                        }
                    }
                }
            });
        Ok((CpuStorage::F32(gx), Shape::from((b, g.cin, g.h, g.w))))
    }
}

/// candle's own ops (the non-CPU fallback, test reference).
fn with_candle(
    x: &Tensor,
    w: &Tensor,
    bias: &Tensor,
    stride: usize,
    padding: usize,
    act: Activation,
) -> Result<Tensor> {
    let cout = w.dim(0)?;
    let y = x
        .conv2d(w, padding, stride, 1, 1)?
        .broadcast_add(&bias.reshape((1, cout, 1, 1))?)?;
    act.apply_tensor(&y)
}

/// Dense 2-D convolution with bias and activation fused: `act(conv(x, w) + bias)`.
///
/// - `x`: `[B,Cin,H,W]`; `w`: `[Cout,Cin,k,k]`; `bias`: `[Cout]`.
/// - Zero padding of `padding` on every side, square `stride`, no dilation, one group.
/// - Returns `[B,Cout,OH,OW]` with `OH = (H + 2*padding - k) / stride + 1` (same for `OW`).
///
/// Differentiable w.r.t. `x`, `w` and `bias`. On the CPU everything must be f32 (any layout);
/// other devices fall back to candle's `conv2d` + `broadcast_add` + activation.
pub fn conv2d_bias_act(
    x: &Tensor,
    w: &Tensor,
    bias: &Tensor,
    stride: usize,
    padding: usize,
    act: Activation,
) -> Result<Tensor> {
    let (_, g) = Geom::new(x.dims(), w.dims(), stride, padding)?;
    if bias.dims() != [g.cout] {
        bail!(
            "conv2d_bias_act: bias must be [{}], got {:?}",
            g.cout,
            bias.dims()
        );
    }
    if act.is_smooth() {
        let y = conv2d_bias_act(x, w, bias, stride, padding, Activation::Identity)?;
        return super::smooth_act(&y, act);
    }
    if !x.device().is_cpu() {
        return with_candle(x, w, bias, stride, padding, act);
    }
    for (name, t) in [("x", x), ("w", w), ("bias", bias)] {
        if t.dtype() != DType::F32 {
            bail!(
                "conv2d_bias_act: {name} must be f32 on the CPU, got {:?}",
                t.dtype()
            );
        }
    }
    x.apply_op3(
        w,
        bias,
        Conv {
            stride,
            padding,
            act,
        },
    )
}

#[cfg(test)]
mod tests {
    use candle_core::{Device, Var};

    use super::super::test_util::{
        ACTS, act_f64, central_differences, conv_grads, rel_to_max, tensor, to_f64,
    };
    use super::*;

    /// `(B, Cin, Cout, H, W, k, stride, padding)`.
    type Case = (usize, usize, usize, usize, usize, usize, usize, usize);

    const CASES: &[Case] = &[
        // The stem's geometry, small.
        (1, 3, 4, 8, 8, 3, 2, 1),
        (3, 3, 5, 9, 7, 3, 2, 1),
        (1, 2, 3, 6, 6, 3, 1, 1),
        (3, 2, 2, 7, 5, 5, 2, 2),
        (1, 4, 3, 5, 6, 1, 1, 0),
        (3, 1, 2, 6, 5, 2, 2, 0),
        // Padding beyond k - 1, and a 1x1 output.
        (1, 2, 2, 4, 4, 3, 1, 3),
        (3, 2, 3, 3, 3, 3, 1, 0),
    ];

    fn inputs(case: Case, seed: u64) -> Result<(Tensor, Tensor, Tensor)> {
        let (b, cin, cout, h, w, k, _, _) = case;
        Ok((
            tensor(&[b, cin, h, w], seed, 2.0)?,
            tensor(&[cout, cin, k, k], seed + 1, 1.0)?,
            tensor(&[cout], seed + 2, 1.0)?,
        ))
    }

    fn out_hw(case: Case) -> (usize, usize) {
        let (_, _, _, h, w, k, s, p) = case;
        ((h + 2 * p - k) / s + 1, (w + 2 * p - k) / s + 1)
    }

    /// Whether candle's conv2d backward handles the case: it derives the transposed
    /// convolution's output padding from the height alone, and needs `padding < k`.
    fn candle_backward_ok(case: Case) -> bool {
        let (_, _, _, h, w, k, s, p) = case;
        let (oh, ow) = out_hw(case);
        let pad = |n: usize, o: usize| n as isize - ((o - 1) * s + k) as isize + 2 * p as isize;
        pad(h, oh) == pad(w, ow) && p < k
    }

    #[test]
    fn forward_matches_candle() -> Result<()> {
        // The small cases, and the stem itself at batch 1 and 2 (several bands).
        let more: &[Case] = &[(1, 3, 32, 224, 224, 3, 2, 1), (2, 3, 32, 64, 48, 3, 2, 1)];
        for (i, &case) in CASES.iter().chain(more).enumerate() {
            let (x, w, bias) = inputs(case, 10 * i as u64)?;
            let (s, p) = (case.6, case.7);
            for act in ACTS {
                let got = conv2d_bias_act(&x, &w, &bias, s, p, act)?;
                let want = with_candle(&x, &w, &bias, s, p, act)?;
                assert_eq!(got.dims(), want.dims(), "{case:?}");
                let e = rel_to_max(&got, &want)?;
                assert!(e <= 1e-5, "{case:?} {act:?}: {e}");
            }
        }
        Ok(())
    }

    #[test]
    fn forward_non_contiguous_inputs() -> Result<()> {
        let (s, p) = (2, 1);
        let x = tensor(&[3, 3, 9, 8], 1, 2.0)?.transpose(2, 3)?;
        let w = tensor(&[3, 4, 3, 3], 2, 1.0)?.transpose(0, 1)?;
        let bias = tensor(&[4, 2], 3, 1.0)?.narrow(1, 1, 1)?.squeeze(1)?;
        for t in [&x, &w, &bias] {
            assert!(!t.is_contiguous());
        }
        for act in ACTS {
            let got = conv2d_bias_act(&x, &w, &bias, s, p, act)?;
            let want = with_candle(&x.contiguous()?, &w.contiguous()?, &bias, s, p, act)?;
            assert!(rel_to_max(&got, &want)? <= 1e-5, "{act:?}");
        }
        Ok(())
    }

    #[test]
    fn bad_inputs_are_errors() -> Result<()> {
        let (x, w, bias) = inputs((1, 3, 4, 8, 8, 3, 2, 1), 0)?;
        let act = Activation::Identity;
        assert!(conv2d_bias_act(&x, &w, &bias, 0, 1, act).is_err());
        assert!(conv2d_bias_act(&x.narrow(1, 0, 2)?, &w, &bias, 1, 1, act).is_err());
        assert!(conv2d_bias_act(&x, &w, &bias.narrow(0, 0, 2)?, 1, 1, act).is_err());
        assert!(conv2d_bias_act(&x, &w.narrow(3, 0, 2)?, &bias, 1, 1, act).is_err());
        assert!(conv2d_bias_act(&x.narrow(2, 0, 1)?, &w, &bias, 1, 0, act).is_err());
        let err = conv2d_bias_act(&x.to_dtype(DType::F64)?, &w, &bias, 1, 1, act).unwrap_err();
        assert!(err.to_string().contains("f32"), "{err}");
        Ok(())
    }

    #[test]
    fn backward_matches_candle() -> Result<()> {
        let more: &[Case] = &[(2, 3, 32, 64, 48, 3, 2, 1), (1, 3, 8, 40, 40, 3, 2, 1)];
        let cases = CASES.iter().chain(more).filter(|c| candle_backward_ok(**c));
        for (i, &case) in cases.enumerate() {
            let (x, w, bias) = inputs(case, 100 + 10 * i as u64)?;
            let (b, _, cout, _, _, _, s, p) = case;
            let (oh, ow) = out_hw(case);
            let r = tensor(&[b, cout, oh, ow], 7 + i as u64, 1.0)?;
            for act in ACTS {
                let ours = conv_grads(
                    |x, w, b| conv2d_bias_act(x, w, b, s, p, act),
                    &x,
                    &w,
                    &bias,
                    &r,
                )?;
                let theirs =
                    conv_grads(|x, w, b| with_candle(x, w, b, s, p, act), &x, &w, &bias, &r)?;
                for which in 0..3 {
                    let e = rel_to_max(&ours[which], &theirs[which])?;
                    assert!(e < 1e-5, "{case:?} {act:?} grad {which}: rel error {e}");
                }
            }
        }
        Ok(())
    }

    /// `sum(act(conv(x, w) + bias) * r)` in f64, by the definition.
    fn loss_f64(case: Case, act: Activation, p: &[Vec<f64>; 3], r: &[f64]) -> f64 {
        let (b, cin, cout, h, wd, k, s, pad) = case;
        let (oh, ow) = out_hw(case);
        let [x, w, bias] = p;
        let mut loss = 0.0;
        for img in 0..b {
            for o in 0..cout {
                for oy in 0..oh {
                    for ox in 0..ow {
                        let mut v = bias[o];
                        for c in 0..cin {
                            for ky in 0..k {
                                for kx in 0..k {
                                    let iy = (oy * s + ky) as isize - pad as isize;
                                    let ix = (ox * s + kx) as isize - pad as isize;
                                    if iy >= 0 && ix >= 0 && (iy as usize) < h && (ix as usize) < wd
                                    {
                                        v += w[((o * cin + c) * k + ky) * k + kx]
                                            * x[((img * cin + c) * h + iy as usize) * wd
                                                + ix as usize];
                                    }
                                }
                            }
                        }
                        loss += act_f64(act, v) * r[((img * cout + o) * oh + oy) * ow + ox];
                    }
                }
            }
        }
        loss
    }

    #[test]
    fn backward_matches_finite_differences() -> Result<()> {
        let eps = 1e-6;
        for (i, &case) in CASES.iter().enumerate() {
            let (x, w, bias) = inputs(case, 200 + 10 * i as u64)?;
            let (b, _, cout, _, _, _, s, p) = case;
            let (oh, ow) = out_hw(case);
            let r = tensor(&[b, cout, oh, ow], 9 + i as u64, 1.0)?;
            let rf = to_f64(&r)?;
            for act in ACTS {
                let analytic = conv_grads(
                    |x, w, b| conv2d_bias_act(x, w, b, s, p, act),
                    &x,
                    &w,
                    &bias,
                    &r,
                )?;
                let mut params = [to_f64(&x)?, to_f64(&w)?, to_f64(&bias)?];
                for (which, analytic) in analytic.iter().enumerate().take(3) {
                    let loss = |p: &[Vec<f64>; 3]| loss_f64(case, act, p, &rf);
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
        let (s, p) = (2, 1);
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
                if ours {
                    conv2d_bias_act(&x, &w, &b, s, p, Activation::Relu6)
                } else {
                    with_candle(
                        &x.contiguous()?,
                        &w.contiguous()?,
                        &b,
                        s,
                        p,
                        Activation::Relu6,
                    )
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
        let case = (2, 3, 4, 8, 8, 3, 2, 1);
        let (x, w, bias) = inputs(case, 300)?;
        let r = tensor(&[2, 4, 4, 4], 301, 1.0)?;
        let want = conv_grads(
            |x, w, b| with_candle(x, w, b, 2, 1, Activation::Relu),
            &x,
            &w,
            &bias,
            &r,
        )?;
        // Only x is a variable (gradient ascent on the input of a frozen network).
        let xv = Var::from_tensor(&x)?;
        let y = conv2d_bias_act(xv.as_tensor(), &w, &bias, 2, 1, Activation::Relu)?;
        let g = y.mul(&r)?.sum_all()?.backward()?;
        assert!(g.get(&w).is_none() && g.get(&bias).is_none());
        let gx = g.get(xv.as_tensor()).expect("an input gradient");
        assert!(rel_to_max(gx, &want[0])? < 1e-5);
        Ok(())
    }
}
