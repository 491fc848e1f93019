//! Pooling with gradients for every geometry the zoo needs:
//!
//! - [`max_pool2d`]: max pooling with any kernel, stride and padding (ResNet's 3x3/s2/p1 stem),
//!   `[B,C,H,W]` -> `[B,C,OH,OW]`. candle's own `max_pool2d` has no padding and refuses the
//!   backward pass when kernel != stride; this one is a custom op whose backward routes each
//!   output's gradient to the *first* maximum of its window in row-major order (PyTorch's CPU
//!   convention; a NaN counts as a maximum), summing where windows overlap.
//! - [`adaptive_avg_pool2d`]: PyTorch's `adaptive_avg_pool2d` (cell `i` of `n` averages input
//!   rows `floor(i*H/n) .. ceil((i+1)*H/n)`), as two matrix products, so candle differentiates
//!   it (VGG's 7x7 `avgpool`).

use candle_core::{CpuStorage, CustomOp1, CustomOp2, DType, Device, Layout, Result, Shape, Tensor};
use candle_core::{D, bail};
use rayon::prelude::*;

use super::phases::split_phases;
use super::{f32_data, min_planes_per_task};

/// The geometry of one plane of a max pooling.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct PoolGeom {
    h: usize,
    w: usize,
    k: usize,
    s: usize,
    p: usize,
    oh: usize,
    ow: usize,
}

impl PoolGeom {
    /// Checks the geometry like PyTorch does (padding at most half the kernel, so every window
    /// holds at least one input element) and computes the output size (floor mode).
    fn new(h: usize, w: usize, k: usize, s: usize, p: usize) -> Result<Self> {
        if k == 0 || s == 0 {
            bail!("max_pool2d: kernel ({k}) and stride ({s}) must be >= 1");
        }
        if 2 * p > k {
            bail!("max_pool2d: padding {p} is more than half the kernel {k}");
        }
        if h + 2 * p < k || w + 2 * p < k {
            bail!("max_pool2d: kernel {k}x{k} does not fit a {h}x{w} plane padded by {p}");
        }
        Ok(PoolGeom {
            h,
            w,
            k,
            s,
            p,
            oh: (h + 2 * p - k) / s + 1,
            ow: (w + 2 * p - k) / s + 1,
        })
    }

    fn in_plane(&self) -> usize {
        self.h * self.w
    }

    fn out_plane(&self) -> usize {
        self.oh * self.ow
    }

    /// The input range `start..end` covered by output `o` along an axis of length `n`.
    #[inline]
    fn window(&self, o: usize, n: usize) -> (usize, usize) {
        let start = (o * self.s).saturating_sub(self.p);
        let end = (o * self.s + self.k).saturating_sub(self.p).min(n);
        (start, end)
    }

    /// Values per phase of a padded input row in [`PoolGeom::max_plane`]: window element `kx`
    /// of output `o` is element `o + kx / s` of phase `kx % s`.
    fn phase_len(&self) -> usize {
        self.ow - 1 + self.k.div_ceil(self.s)
    }

    /// The scratch [`PoolGeom::max_plane`] needs: `H x OW` window maxima and one padded row.
    fn scratch_len(&self) -> usize {
        self.h * self.ow + self.row_scratch_len()
    }

    /// The scratch of one padded row and its phases ([`PoolGeom::split_row`]).
    fn row_scratch_len(&self) -> usize {
        2 * self.s * self.phase_len()
    }

    /// Splits input row `xr` (`W` values) into the stride's phases of the row padded with
    /// `-inf`: `phases[q * span + j] = padded[j*s + q]` with `padded[pos] = xr[pos - p]`, so that
    /// window element `kx` of every output of the row is the run `phase_run(phases, kx)`.
    /// `scratch`: [`PoolGeom::row_scratch_len`], its first half (the padded row) filled with
    /// `-inf` before the first call (only the middle is overwritten).
    #[inline]
    fn split_row<'a>(&self, xr: &[f32], scratch: &'a mut [f32]) -> &'a [f32] {
        let (s, span) = (self.s, self.phase_len());
        let (line, phases) = scratch[..2 * s * span].split_at_mut(s * span);
        if s == 2 {
            // Straight from the row, in pairs (VGG's and ResNet's pooling).
            let (even, odd) = phases.split_at_mut(span);
            split_phases(xr, self.p, f32::NEG_INFINITY, [even, odd]);
            return phases;
        }
        let (j0, j1) = (self.p.min(line.len()), (self.p + self.w).min(line.len()));
        line[j0..j1].copy_from_slice(&xr[..j1 - j0]);
        if s == 1 {
            phases.copy_from_slice(line);
            return phases;
        }
        for (j, c) in line.chunks_exact(s).enumerate() {
            for (q, &v) in c.iter().enumerate() {
                phases[q * span + j] = v;
            }
        }
        phases
    }

    /// Window element `kx` of every output of a row split by [`PoolGeom::split_row`].
    #[inline]
    fn phase_run<'a>(&self, phases: &'a [f32], kx: usize) -> &'a [f32] {
        &phases[(kx % self.s) * self.phase_len() + kx / self.s..][..self.ow]
    }

    /// The pooled plane `out` (`OH x OW`) of `x` (`H x W`), separably: first the maximum over
    /// each output column's window in every input row (`H x OW`), then over each output row's
    /// window of those. Both are element-wise maxima of whole rows, which vectorise: each input
    /// row is padded with `-inf` and split into its `s` phases ([`PoolGeom::split_row`]), so
    /// that the `kx`-th element of every output's window is one contiguous run.
    /// Same values as [`PoolGeom::argmax_row`] picks (a NaN in a window gives NaN; equal values
    /// keep the first, as the window is read in order). `scratch`: [`PoolGeom::scratch_len`].
    #[inline]
    fn max_plane(&self, x: &[f32], scratch: &mut [f32], out: &mut [f32]) {
        let (rows, line) = scratch.split_at_mut(self.h * self.ow);
        line.fill(f32::NEG_INFINITY);
        for (xr, rr) in x.chunks_exact(self.w).zip(rows.chunks_exact_mut(self.ow)) {
            let phases = self.split_row(xr, line);
            rr.copy_from_slice(self.phase_run(phases, 0));
            for kx in 1..self.k {
                for (r, &v) in rr.iter_mut().zip(self.phase_run(phases, kx)) {
                    *r = nan_max(*r, v);
                }
            }
        }
        for (oy, o) in out.chunks_exact_mut(self.ow).enumerate() {
            let (y0, y1) = self.window(oy, self.h);
            o.copy_from_slice(&rows[y0 * self.ow..][..self.ow]);
            for r in rows[(y0 + 1) * self.ow..y1 * self.ow].chunks_exact(self.ow) {
                for (o, &r) in o.iter_mut().zip(r) {
                    *o = nan_max(*o, r);
                }
            }
        }
    }

    /// The scratch of [`PoolGeom::argmax_row`]: one padded row and `OW` running maxima.
    fn argmax_scratch_len(&self) -> usize {
        self.row_scratch_len() + self.ow
    }

    /// `args[ox]` = the index in the plane `x` (`H x W`) of the maximum of output `(oy, ox)`'s
    /// window: the window read in row-major order, a value taken when it is greater than the
    /// best so far or NaN (PyTorch's CPU rule: ties go to the first maximum; with NaNs, the
    /// last NaN); a window of `-inf` only gives its first element. Vectorised across the row's
    /// outputs: window element `(iy, kx)` of every output is one run of the split input row
    /// `iy`. `scratch`: [`PoolGeom::argmax_scratch_len`], its padded row filled with `-inf`
    /// (see [`PoolGeom::split_row`]); `args`: `OW` values. Plane indices must fit in `u32`.
    #[inline]
    fn argmax_row(&self, x: &[f32], oy: usize, scratch: &mut [f32], args: &mut [u32]) {
        let (line, best) = scratch.split_at_mut(self.row_scratch_len());
        let (y0, y1) = self.window(oy, self.h);
        best.fill(f32::NEG_INFINITY);
        for (ox, a) in args.iter_mut().enumerate() {
            *a = (y0 * self.w + self.window(ox, self.w).0) as u32;
        }
        for iy in y0..y1 {
            let phases = self.split_row(&x[iy * self.w..][..self.w], line);
            for kx in 0..self.k {
                // The index of element kx of output ox's window: (iy*W + ox*s + kx) - p,
                // wrapping below zero only in the padding, whose -inf is never taken.
                let base = (iy * self.w + kx) as u32;
                let (s, p) = (self.s as u32, self.p as u32);
                let run = self.phase_run(phases, kx);
                for (ox, ((b, a), &v)) in best.iter_mut().zip(args.iter_mut()).zip(run).enumerate()
                {
                    let take = (v > *b) | v.is_nan();
                    let idx = (base + ox as u32 * s).wrapping_sub(p);
                    *b = if take { v } else { *b };
                    *a = if take { idx } else { *a };
                }
            }
        }
    }
}

impl PoolGeom {
    /// Whether windows are 2x2 at stride 2 without padding (VGG's pooling): they do not
    /// overlap, so [`PoolGeom::grad_plane_2x2`] applies.
    fn is_2x2(&self) -> bool {
        (self.k, self.s, self.p) == (2, 2, 0)
    }

    /// The input gradient of one plane (`gx`, `H x W`, zero on entry) from the output's
    /// (`grad`, `OH x OW`), each output's gradient added (to zero) at its window's maximum as
    /// [`PoolGeom::argmax_row`] picks it: any geometry. `scratch`, `args`: as `argmax_row`'s.
    fn grad_plane(
        &self,
        x: &[f32],
        grad: &[f32],
        gx: &mut [f32],
        scratch: &mut [f32],
        args: &mut [u32],
    ) {
        scratch[..self.row_scratch_len()].fill(f32::NEG_INFINITY);
        for (oy, grad) in grad.chunks_exact(self.ow).enumerate() {
            self.argmax_row(x, oy, scratch, args);
            for (&a, &d) in args.iter().zip(grad) {
                gx[a as usize] += d;
            }
        }
    }

    /// [`PoolGeom::grad_plane`] for [`PoolGeom::is_2x2`] windows, the same bits: each pair of
    /// input rows split into even and odd columns, the window's four values compared in
    /// row-major order across the whole row of outputs (the same rule: greater, or NaN), and
    /// the four gradients written back interleaved (`0 + d` at the maximum, as the general
    /// path's sum into zero gives, so `-0.0` becomes `0.0` there too). `scratch`: `4 * OW`.
    fn grad_plane_2x2(&self, x: &[f32], grad: &[f32], gx: &mut [f32], scratch: &mut [f32]) {
        let (w, ow) = (self.w, self.ow);
        let (e0, rest) = scratch[..4 * ow].split_at_mut(ow);
        let (o0, rest) = rest.split_at_mut(ow);
        let (e1, o1) = rest.split_at_mut(ow);
        for (oy, g) in grad.chunks_exact(ow).enumerate() {
            let (r0, r1) = (2 * oy * w, (2 * oy + 1) * w);
            split_phases(&x[r0..][..2 * ow], 0, 0.0, [&mut *e0, &mut *o0]);
            split_phases(&x[r1..][..2 * ow], 0, 0.0, [&mut *e1, &mut *o1]);
            let (top, bottom) = gx[r0..][..2 * w].split_at_mut(w);
            let quads = e0
                .iter()
                .zip(o0.iter())
                .zip(e1.iter())
                .zip(o1.iter())
                .zip(g);
            let outs = top[..2 * ow]
                .chunks_exact_mut(2)
                .zip(bottom[..2 * ow].chunks_exact_mut(2));
            for ((t, b), ((((&a0, &a1), &a2), &a3), &d)) in outs.zip(quads) {
                let mut best = a0;
                let mut sel = 0u8;
                for (j, v) in [(1u8, a1), (2, a2), (3, a3)] {
                    let take = (v > best) | v.is_nan();
                    best = if take { v } else { best };
                    sel = if take { j } else { sel };
                }
                let d = 0.0 + d;
                t[0] = if sel == 0 { d } else { 0.0 };
                t[1] = if sel == 1 { d } else { 0.0 };
                b[0] = if sel == 2 { d } else { 0.0 };
                b[1] = if sel == 3 { d } else { 0.0 };
            }
        }
    }
}

/// `max(a, b)` where a NaN in either wins (PyTorch's max pooling propagates NaN).
#[inline(always)]
fn nan_max(a: f32, b: f32) -> f32 {
    if b > a || b.is_nan() { b } else { a }
}

/// Checks `x [B,C,H,W]`; returns `(B, C, geometry)`.
fn check(dims: &[usize], k: usize, s: usize, p: usize) -> Result<(usize, usize, PoolGeom)> {
    let &[b, c, h, w] = dims else {
        bail!("max_pool2d: x must be [B,C,H,W], got {dims:?}");
    };
    Ok((b, c, PoolGeom::new(h, w, k, s, p)?))
}

/// The forward op: `x [B,C,H,W]` -> `[B,C,OH,OW]`.
struct MaxPool {
    kernel: usize,
    stride: usize,
    padding: usize,
}

impl CustomOp1 for MaxPool {
    fn name(&self) -> &'static str {
        "convlens-max-pool2d"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        let (b, c, g) = check(layout.dims(), self.kernel, self.stride, self.padding)?;
        let x = f32_data(storage, layout, self.name())?;
        let mut out = vec![0f32; b * c * g.out_plane()];
        out.par_chunks_mut(g.out_plane())
            .with_min_len(min_planes_per_task(g.in_plane()))
            .enumerate()
            .for_each_init(
                || vec![0f32; g.scratch_len()],
                |rows, (i, o)| {
                    let x = &x[i * g.in_plane()..][..g.in_plane()];
                    g.max_plane(x, rows, o);
                },
            );
        Ok((CpuStorage::F32(out), Shape::from((b, c, g.oh, g.ow))))
    }

    fn bwd(&self, arg: &Tensor, _res: &Tensor, grad_res: &Tensor) -> Result<Option<Tensor>> {
        let op = MaxPoolGrad {
            kernel: self.kernel,
            stride: self.stride,
            padding: self.padding,
        };
        Ok(Some(arg.apply_op2_no_bwd(grad_res, &op)?))
    }
}

/// `(x [B,C,H,W], grad [B,C,OH,OW])` -> grad x `[B,C,H,W]`: each output's gradient added at
/// its window's first maximum.
struct MaxPoolGrad {
    kernel: usize,
    stride: usize,
    padding: usize,
}

impl CustomOp2 for MaxPoolGrad {
    fn name(&self) -> &'static str {
        "convlens-max-pool2d-grad"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (b, c, g) = check(l1.dims(), self.kernel, self.stride, self.padding)?;
        if l2.dims() != [b, c, g.oh, g.ow] {
            bail!(
                "{}: grad {:?} is not the output of x {:?}",
                self.name(),
                l2.dims(),
                l1.dims()
            );
        }
        if u32::try_from(g.in_plane() + g.w + g.k).is_err() {
            bail!("{}: a {}x{} plane is too large", self.name(), g.h, g.w);
        }
        let x = f32_data(s1, l1, self.name())?;
        let grad = f32_data(s2, l2, self.name())?;
        let mut gx = vec![0f32; b * c * g.in_plane()];
        gx.par_chunks_mut(g.in_plane())
            .with_min_len(min_planes_per_task(g.in_plane()))
            .enumerate()
            .for_each_init(
                || {
                    (
                        vec![0f32; g.argmax_scratch_len().max(4 * g.ow)],
                        vec![0u32; g.ow],
                    )
                },
                |(scratch, args), (i, gx)| {
                    let x = &x[i * g.in_plane()..][..g.in_plane()];
                    let grad = &grad[i * g.out_plane()..][..g.out_plane()];
                    if g.is_2x2() {
                        g.grad_plane_2x2(x, grad, gx, scratch);
                    } else {
                        g.grad_plane(x, grad, gx, scratch, args);
                    }
                },
            );
        Ok((CpuStorage::F32(gx), l1.shape().clone()))
    }
}

/// Max pooling over `kernel x kernel` windows at `stride`, with implicit `-inf` padding of
/// `padding` on every side (PyTorch's `max_pool2d(x, kernel, stride, padding)`, floor mode).
///
/// `x`: `[B,C,H,W]` -> `[B,C,OH,OW]` with `OH = (H + 2*padding - kernel) / stride + 1` (same
/// for `OW`); `padding` may be at most `kernel / 2`.
///
/// Differentiable w.r.t. `x`: the gradient of each output goes to the first maximum of its
/// window (row-major), as in PyTorch. Runs on the CPU in f32; tensors on other devices or of
/// other float types are converted there and back (both conversions are differentiable).
pub fn max_pool2d(x: &Tensor, kernel: usize, stride: usize, padding: usize) -> Result<Tensor> {
    check(x.dims(), kernel, stride, padding)?;
    let op = MaxPool {
        kernel,
        stride,
        padding,
    };
    if x.device().is_cpu() && x.dtype() == DType::F32 {
        return x.apply_op1(op);
    }
    x.to_device(&Device::Cpu)?
        .to_dtype(DType::F32)?
        .apply_op1(op)?
        .to_dtype(x.dtype())?
        .to_device(x.device())
}

/// The `[out, n]` averaging matrix of adaptive average pooling along one axis: row `i` is
/// `1 / len` on `floor(i*n/out) .. ceil((i+1)*n/out)`.
pub fn adaptive_matrix(n: usize, out: usize, device: &Device) -> Result<Tensor> {
    let mut m = vec![0f32; out * n];
    for i in 0..out {
        let (start, end) = (i * n / out, ((i + 1) * n).div_ceil(out));
        let v = 1.0 / (end - start) as f32;
        m[i * n + start..i * n + end].fill(v);
    }
    Tensor::from_vec(m, (out, n), device)
}

/// Adaptive average pooling (PyTorch's `adaptive_avg_pool2d`): `[B,C,H,W]` -> `[B,C,OH,OW]`
/// where output cell `(i, j)` averages input rows `floor(i*H/OH) .. ceil((i+1)*H/OH)` and the
/// same columns for `j`. Works for any sizes, also when the output is larger than the input.
/// Differentiable (built from candle matmuls); `(H,W) == (OH,OW)` returns `x` unchanged.
pub fn adaptive_avg_pool2d(x: &Tensor, out: (usize, usize)) -> Result<Tensor> {
    let (b, c, h, w) = x.dims4()?;
    let (oh, ow) = out;
    if oh == 0 || ow == 0 || h == 0 || w == 0 {
        bail!("adaptive_avg_pool2d: cannot pool {h}x{w} to {oh}x{ow}");
    }
    if (h, w) == (oh, ow) {
        return Ok(x.clone());
    }
    if (oh, ow) == (1, 1) {
        return x.mean_keepdim(D::Minus1)?.mean_keepdim(D::Minus2);
    }
    let dt = x.dtype();
    let pw = adaptive_matrix(w, ow, x.device())?.to_dtype(dt)?;
    let ph = adaptive_matrix(h, oh, x.device())?.to_dtype(dt)?;
    // Columns: [B*C*H, W] x [W, OW]; then rows: [B*C*OW, H] x [H, OH].
    let y = x
        .contiguous()?
        .reshape((b * c * h, w))?
        .matmul(&pw.t()?)?
        .reshape((b, c, h, ow))?
        .transpose(2, 3)?
        .contiguous()?
        .reshape((b * c * ow, h))?
        .matmul(&ph.t()?)?
        .reshape((b, c, ow, oh))?
        .transpose(2, 3)?;
    y.contiguous()
}

#[cfg(test)]
mod tests {
    use candle_core::{IndexOp, Var};

    use super::super::test_util::{central_differences, lcg, max_abs_diff, tensor, to_f64};
    use super::*;

    /// `(B, C, H, W, kernel, stride, padding)`.
    type Case = (usize, usize, usize, usize, usize, usize, usize);

    const CASES: &[Case] = &[
        // ResNet's stem geometry, even and odd planes.
        (2, 3, 8, 8, 3, 2, 1),
        (1, 2, 9, 7, 3, 2, 1),
        // kernel == stride (VGG), with and without a remainder.
        (2, 3, 8, 8, 2, 2, 0),
        (1, 2, 7, 9, 2, 2, 0),
        (1, 2, 9, 6, 3, 3, 0),
        // Overlapping windows, stride 1, larger kernels and paddings.
        (1, 2, 6, 6, 3, 1, 1),
        (1, 2, 7, 6, 5, 2, 2),
        (2, 1, 5, 5, 4, 3, 2),
        (1, 1, 3, 3, 3, 1, 0),
        // Rows long enough for the vectorised passes, odd widths.
        (1, 2, 5, 37, 3, 2, 1),
        (1, 1, 4, 35, 2, 2, 0),
    ];

    /// The 2x2 stride-2 backward against the general one, bit for bit: planes even and odd
    /// in each axis, values from a small set with ties, `±0`, `-inf` and NaN, gradients with
    /// `-0.0` and NaN.
    #[test]
    fn the_2x2_backward_is_the_general_one() {
        let pick = |seed: u64, n: usize, set: &[f32]| -> Vec<f32> {
            lcg(n, seed, 1.0)
                .iter()
                .map(|v| set[((v.abs() * 1e4) as usize) % set.len()])
                .collect()
        };
        let values = [f32::NEG_INFINITY, -1.0, -0.0, 0.0, 1.0, 1.0, 2.0, f32::NAN];
        let grads = [-0.0, 0.0, 0.5, -2.0, f32::NAN, 3.0];
        for (i, (h, w)) in [(2, 2), (4, 6), (5, 7), (7, 4), (6, 37), (3, 35)]
            .into_iter()
            .enumerate()
        {
            let g = PoolGeom::new(h, w, 2, 2, 0).expect("a valid geometry");
            assert!(g.is_2x2());
            let x = pick(10 + i as u64, h * w, &values);
            let grad = pick(20 + i as u64, g.out_plane(), &grads);
            let mut scratch = vec![0f32; g.argmax_scratch_len().max(4 * g.ow)];
            let mut args = vec![0u32; g.ow];
            let (mut want, mut got) = (vec![0f32; h * w], vec![0f32; h * w]);
            g.grad_plane(&x, &grad, &mut want, &mut scratch, &mut args);
            g.grad_plane_2x2(&x, &grad, &mut got, &mut scratch);
            let bits = |v: &[f32]| v.iter().map(|v| v.to_bits()).collect::<Vec<_>>();
            assert_eq!(bits(&got), bits(&want), "{h}x{w}: x {x:?}, grad {grad:?}");
        }
    }

    /// Inputs without ties: a seeded permutation of distinct values.
    fn distinct(case: Case, seed: u64) -> Result<Tensor> {
        let (b, c, h, w, ..) = case;
        let n = b * c * h * w;
        let keys = lcg(n, seed, 1.0);
        let mut order: Vec<usize> = (0..n).collect();
        order.sort_by(|&i, &j| keys[i].total_cmp(&keys[j]));
        let mut v = vec![0f32; n];
        for (rank, &i) in order.iter().enumerate() {
            v[i] = rank as f32 / n as f32 * 4.0 - 2.0;
        }
        Tensor::from_vec(v, (b, c, h, w), &Device::Cpu)
    }

    /// Naive max pooling in f64 over an explicitly padded plane.
    fn reference(x: &[f64], case: Case) -> Vec<f64> {
        let (b, c, h, w, k, s, p) = case;
        let (oh, ow) = ((h + 2 * p - k) / s + 1, (w + 2 * p - k) / s + 1);
        let mut out = Vec::with_capacity(b * c * oh * ow);
        for plane in 0..b * c {
            for oy in 0..oh {
                for ox in 0..ow {
                    let mut m = f64::NEG_INFINITY;
                    for ky in 0..k {
                        for kx in 0..k {
                            let (iy, ix) = (
                                (oy * s + ky) as isize - p as isize,
                                (ox * s + kx) as isize - p as isize,
                            );
                            if iy >= 0 && ix >= 0 && (iy as usize) < h && (ix as usize) < w {
                                m = m.max(x[plane * h * w + iy as usize * w + ix as usize]);
                            }
                        }
                    }
                    out.push(m);
                }
            }
        }
        out
    }

    /// `sum(max_pool(x) * r)` in f64 for the finite differences.
    fn loss_f64(x: &[f64], r: &[f64], case: Case) -> f64 {
        reference(x, case).iter().zip(r).map(|(a, b)| a * b).sum()
    }

    #[test]
    fn forward_matches_naive_reference() -> Result<()> {
        for (n, &case) in CASES.iter().enumerate() {
            let (_, _, _, _, k, s, p) = case;
            let x = tensor(&[case.0, case.1, case.2, case.3], n as u64, 3.0)?;
            let y = max_pool2d(&x, k, s, p)?;
            let want = reference(&to_f64(&x)?, case);
            let got = to_f64(&y)?;
            assert_eq!(got, want, "case {case:?}");
            // A non-contiguous view gives the same result.
            let xt = x.transpose(2, 3)?.contiguous()?.transpose(2, 3)?;
            assert!(!xt.is_contiguous());
            assert_eq!(to_f64(&max_pool2d(&xt, k, s, p)?)?, want, "case {case:?}");
        }
        Ok(())
    }

    #[test]
    fn backward_matches_finite_differences() -> Result<()> {
        for (n, &case) in CASES.iter().enumerate() {
            let (b, c, h, w, k, s, p) = case;
            let x = distinct(case, 10 + n as u64)?;
            let (oh, ow) = ((h + 2 * p - k) / s + 1, (w + 2 * p - k) / s + 1);
            let r = tensor(&[b, c, oh, ow], 20 + n as u64, 1.0)?;
            let var = Var::from_tensor(&x)?;
            let loss = (max_pool2d(var.as_tensor(), k, s, p)? * &r)?.sum_all()?;
            let grads = loss.backward()?;
            let got = to_f64(grads.get(var.as_tensor()).expect("gradient"))?;
            let (xv, rv) = (to_f64(&x)?, to_f64(&r)?);
            // The values are at least 4/n apart, so a step of 1e-3 of that keeps every argmax.
            let eps = 1e-3 * 4.0 / xv.len() as f64;
            let fds = central_differences(&mut [xv], 0, eps, |p| loss_f64(&p[0], &rv, case));
            for (i, fd) in fds.into_iter().enumerate() {
                assert!(
                    (got[i] - fd).abs() < 1e-4,
                    "case {case:?} element {i}: autograd {} vs finite differences {fd}",
                    got[i]
                );
            }
        }
        Ok(())
    }

    #[test]
    fn backward_matches_candle_when_kernel_equals_stride() -> Result<()> {
        // Where candle's backward works (kernel == stride dividing the plane, no padding) the
        // gradients agree up to candle's constant factor, i.e. the same elements receive it.
        for (n, &case) in CASES.iter().enumerate() {
            let (b, c, h, w, k, s, p) = case;
            // candle's backward upsamples the pooled gradient to the input size by nearest
            // neighbour, which misplaces it when the kernel does not divide the plane.
            if k != s || p != 0 || h % k != 0 || w % k != 0 {
                continue;
            }
            let x = distinct(case, 30 + n as u64)?;
            let r = tensor(&[b, c, h / k, w / k], 40 + n as u64, 1.0)?;
            let grad_of = |ours: bool| -> Result<Tensor> {
                let var = Var::from_tensor(&x)?;
                let y = if ours {
                    max_pool2d(var.as_tensor(), k, s, p)?
                } else {
                    var.as_tensor().max_pool2d(k)?
                };
                let grads = (y * &r)?.sum_all()?.backward()?;
                Ok(grads.get(var.as_tensor()).expect("gradient").clone())
            };
            let (ours, candle) = (grad_of(true)?, grad_of(false)?);
            // candle 0.11.1 scales the gradient by `count of maxima / k^2` instead of dividing
            // by the count (`[[1,2],[3,4]]` pooled and summed gives 0.25 at the 4, not 1; the
            // finite-difference test above confirms 1). Without ties that is a factor 1/k^2.
            let candle = (candle * (k * k) as f64)?;
            let err = max_abs_diff(&ours, &candle)?;
            assert!(err < 1e-6, "case {case:?}: {err}");
        }
        Ok(())
    }

    /// The window's first maximum by reading it element by element in row-major order,
    /// taking a value greater than the best so far or NaN (PyTorch's CPU loop).
    fn scalar_argmax(g: &PoolGeom, x: &[f32], oy: usize, ox: usize) -> u32 {
        let ((y0, y1), (x0, x1)) = (g.window(oy, g.h), g.window(ox, g.w));
        let (mut best, mut arg) = (f32::NEG_INFINITY, y0 * g.w + x0);
        for iy in y0..y1 {
            for ix in x0..x1 {
                let v = x[iy * g.w + ix];
                if v > best || v.is_nan() {
                    (best, arg) = (v, iy * g.w + ix);
                }
            }
        }
        arg as u32
    }

    #[test]
    fn vectorised_argmax_is_the_scalar_walk() -> Result<()> {
        // Few distinct values (many ties), some NaN and -inf, and planes of -inf only.
        for (n, &(_, _, h, w, k, s, p)) in CASES.iter().enumerate() {
            let g = PoolGeom::new(h, w, k, s, p)?;
            for fill in 0..4 {
                let x: Vec<f32> = lcg(h * w, 50 + n as u64 * 4 + fill, 1.0)
                    .into_iter()
                    .map(|v| match (fill, (v * 8.0).round() as i32) {
                        (3, _) => f32::NEG_INFINITY,
                        (2, 4) => f32::NAN,
                        (1 | 2, -4) => f32::NEG_INFINITY,
                        (_, q) => q as f32,
                    })
                    .collect();
                let mut scratch = vec![f32::NEG_INFINITY; g.argmax_scratch_len()];
                let mut args = vec![0u32; g.ow];
                for oy in 0..g.oh {
                    g.argmax_row(&x, oy, &mut scratch, &mut args);
                    for (ox, &a) in args.iter().enumerate() {
                        let want = scalar_argmax(&g, &x, oy, ox);
                        assert_eq!(
                            a, want,
                            "{h}x{w} k{k} s{s} p{p} fill {fill} at ({oy}, {ox})"
                        );
                    }
                }
            }
        }
        Ok(())
    }

    #[test]
    fn ties_go_to_the_first_maximum() -> Result<()> {
        // One 2x2 window of equal values, one output: PyTorch gives the gradient to (0, 0).
        let x = Var::from_tensor(&Tensor::ones((1, 1, 2, 2), DType::F32, &Device::Cpu)?)?;
        let grads = max_pool2d(x.as_tensor(), 2, 2, 0)?.sum_all()?.backward()?;
        let g = grads.get(x.as_tensor()).expect("gradient");
        assert_eq!(g.flatten_all()?.to_vec1::<f32>()?, [1.0, 0.0, 0.0, 0.0]);
        // Overlapping windows that share their maximum add up there.
        let x = Tensor::from_vec(vec![0f32, 5.0, 1.0, 2.0], (1, 1, 1, 4), &Device::Cpu)?;
        let x = Var::from_tensor(&x.broadcast_as((1, 1, 3, 4))?.contiguous()?)?;
        let grads = max_pool2d(x.as_tensor(), 3, 1, 1)?.sum_all()?.backward()?;
        let g = grads.get(x.as_tensor()).expect("gradient").i((0, 0))?;
        // 3x4 outputs: the windows of output rows 0-1 start at input row 0, those of row 2 at
        // row 1; every window holds column 1 except those centred on column 3.
        assert_eq!(
            g.to_vec2::<f32>()?,
            [[0.0, 6.0, 0.0, 2.0], [0.0, 3.0, 0.0, 1.0], [0.0; 4]]
        );
        Ok(())
    }

    #[test]
    fn nan_propagates_like_pytorch() -> Result<()> {
        let v = vec![1f32, f32::NAN, 3.0, 2.0, 0.0, 5.0];
        let x = Var::from_tensor(&Tensor::from_vec(v, (1, 1, 2, 3), &Device::Cpu)?)?;
        let y = max_pool2d(x.as_tensor(), 2, 1, 0)?;
        let out = y.flatten_all()?.to_vec1::<f32>()?;
        assert!(out[0].is_nan() && out[1].is_nan(), "{out:?}");
        let grads = y.sum_all()?.backward()?;
        let g = grads.get(x.as_tensor()).expect("gradient");
        assert_eq!(
            g.flatten_all()?.to_vec1::<f32>()?,
            [0.0, 2.0, 0.0, 0.0, 0.0, 0.0]
        );
        Ok(())
    }

    #[test]
    fn bad_geometry_is_an_error() -> Result<()> {
        let x = tensor(&[1, 1, 4, 4], 1, 1.0)?;
        assert!(max_pool2d(&x, 3, 2, 2).is_err());
        assert!(max_pool2d(&x, 0, 1, 0).is_err());
        assert!(max_pool2d(&x, 5, 1, 0).is_err());
        assert!(max_pool2d(&x.flatten_all()?, 2, 2, 0).is_err());
        Ok(())
    }

    #[test]
    fn adaptive_average_matches_the_definition() -> Result<()> {
        for &(h, w, oh, ow) in &[
            (7, 7, 7, 7),
            (14, 10, 7, 7),
            (2, 3, 7, 7),
            (5, 9, 3, 4),
            (6, 6, 1, 1),
        ] {
            let x = tensor(&[2, 3, h, w], (h * w) as u64, 1.0)?;
            let got = to_f64(&adaptive_avg_pool2d(&x, (oh, ow))?)?;
            let xv = to_f64(&x)?;
            let mut want = Vec::new();
            for plane in 0..6 {
                for i in 0..oh {
                    for j in 0..ow {
                        let (y0, y1) = (i * h / oh, ((i + 1) * h).div_ceil(oh));
                        let (x0, x1) = (j * w / ow, ((j + 1) * w).div_ceil(ow));
                        let mut sum = 0.0;
                        for y in y0..y1 {
                            for x in x0..x1 {
                                sum += xv[plane * h * w + y * w + x];
                            }
                        }
                        want.push(sum / ((y1 - y0) * (x1 - x0)) as f64);
                    }
                }
            }
            let err = got
                .iter()
                .zip(&want)
                .map(|(a, b)| (a - b).abs())
                .fold(0.0, f64::max);
            assert!(err < 1e-6, "{h}x{w} -> {oh}x{ow}: {err}");
        }
        // Differentiable: d sum / dx is the number of cells covering x over their sizes.
        let x = Var::from_tensor(&tensor(&[1, 1, 2, 2], 3, 1.0)?)?;
        let grads = adaptive_avg_pool2d(x.as_tensor(), (3, 3))?
            .sum_all()?
            .backward()?;
        let g = grads.get(x.as_tensor()).expect("gradient");
        assert!(max_abs_diff(g, &Tensor::full(2.25f32, (1, 1, 2, 2), &Device::Cpu)?)? < 1e-6);
        Ok(())
    }
}
