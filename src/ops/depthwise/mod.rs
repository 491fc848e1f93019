//! Depthwise 2-D convolution with bias and activation fused: `[B,C,H,W]` -> `[B,C,OH,OW]`.
//!
//! Every kernel works one `(b, c)` plane at a time (rayon-parallel over planes, or over
//! channels for the weight gradient) and first copies the input plane into a *polyphase padded*
//! scratch buffer: the zero-padded plane split into `s x s` sub-planes by
//! `(row % s, col % s)` (`s` the stride), each `RL x PL` with `RL = OH + E`, `PL = OW + E` and
//! `E = (k-1)/s`. In that layout tap `(ky, kx)` reads, for output `(oy, ox)`, sub-plane
//! `(ky % s, kx % s)` at `(oy + ky/s, ox + kx/s)`. So with the output laid out at a row pitch
//! of `PL` too (columns `OW..PL` being junk), output `i` of a tile needs `src[off_t + i]` for
//! each tap `t`: a 1-D correlation over one contiguous slice, for any stride and kernel size.
//! `correlate` runs it 32 outputs at a time with the accumulators in registers (one load and
//! one FMA per tap, one store per output), starting from the bias. Tiles of output rows stay
//! in L1 and get the activation while they are copied into the output tensor.
//!
//! The input gradient is, per polyphase sub-plane, the same kind of correlation of the output
//! gradient (at pitch `PL` after `E` zero rows and columns) with the sub-plane's taps flipped;
//! the result is copied back out of the polyphase layout. The weight gradient is, per tap, a
//! dot product between the output gradient (pitch `PL`, zeros in the junk columns) and the
//! tap's slice of the polyphase input, summed over the batch.
//!
//! The scratch buffers are zeroed once per rayon task: every plane of an op has the same
//! geometry, so their padding cells are never written afterwards.

use std::mem::MaybeUninit;

use candle_core::{CpuStorage, CustomOp2, CustomOp3, DType, Layout, Result, Shape, Tensor, bail};
use rayon::prelude::*;

use super::matmul::SyncPtr;
use super::phases::split_phases;
use super::{Activation, Unfilled, act_grad, channel_sum, f32_data, min_planes_per_task};

/// Elements of output (at pitch `PL`) per tile: 8 KiB, so a finished tile is still in L1 when it
/// is copied out.
const TILE: usize = 2048;

/// The geometry of one plane of a depthwise convolution, and its tap offsets.
#[derive(Clone, Debug)]
struct Geom {
    h: usize,
    w: usize,
    k: usize,
    s: usize,
    p: usize,
    oh: usize,
    ow: usize,
    /// Rows of each polyphase sub-plane.
    rl: usize,
    /// Columns of each polyphase sub-plane; also the row pitch of the extended output.
    pl: usize,
    /// `(k - 1) / s`: the extra rows (columns) of a sub-plane, `RL - OH` (`PL - OW`).
    e: usize,
    /// Offset in the polyphase input of tap `ky * k + kx` for output `(0, 0)`.
    tap_offsets: Vec<usize>,
    /// For each polyphase sub-plane `r * s + q` of the input gradient, its taps as
    /// `(offset in the padded output gradient, tap index)`.
    phase_taps: Vec<Vec<(usize, usize)>>,
    /// Output elements (at pitch `PL`) per tile: `TILE` except in tests.
    tile: usize,
}

impl Geom {
    fn new(h: usize, w: usize, k: usize, s: usize, p: usize) -> Result<Self> {
        if s == 0 {
            bail!("depthwise_conv2d: stride must be >= 1");
        }
        if h == 0 || w == 0 {
            bail!("depthwise_conv2d: empty {h}x{w} planes");
        }
        if k == 0 || h + 2 * p < k || w + 2 * p < k {
            bail!("depthwise_conv2d: kernel {k}x{k} does not fit a {h}x{w} plane padded by {p}");
        }
        let (oh, ow) = ((h + 2 * p - k) / s + 1, (w + 2 * p - k) / s + 1);
        let e = (k - 1) / s;
        let (rl, pl) = (oh + e, ow + e);
        let sub_len = rl * pl;
        let tap_offsets = (0..k * k)
            .map(|t| {
                let (ky, kx) = (t / k, t % k);
                ((ky % s) * s + kx % s) * sub_len + (ky / s) * pl + kx / s
            })
            .collect();
        let phase_taps = (0..s * s)
            .map(|phase| {
                let (r, q) = (phase / s, phase % s);
                let mut taps = Vec::new();
                for ky in (r..k).step_by(s) {
                    for kx in (q..k).step_by(s) {
                        taps.push(((e - ky / s) * pl + (e - kx / s), ky * k + kx));
                    }
                }
                taps
            })
            .collect();
        Ok(Self {
            h,
            w,
            k,
            s,
            p,
            oh,
            ow,
            rl,
            pl,
            e,
            tap_offsets,
            phase_taps,
            tile: TILE,
        })
    }

    fn in_plane(&self) -> usize {
        self.h * self.w
    }

    fn out_plane(&self) -> usize {
        self.oh * self.ow
    }

    fn sub_len(&self) -> usize {
        self.rl * self.pl
    }

    fn poly_len(&self) -> usize {
        self.s * self.s * self.sub_len()
    }

    fn rows_per_tile(&self) -> usize {
        (self.tile / self.pl).clamp(1, self.oh)
    }

    /// Scratch of the forward and weight-gradient kernels: the polyphase input plus one tile
    /// of output at pitch `PL`.
    fn fwd_scratch_len(&self) -> usize {
        self.poly_len() + self.rows_per_tile() * self.pl
    }

    /// Scratch of the input-gradient kernel: the polyphase gradient plus the output gradient
    /// at pitch `PL` after `E` zero rows and columns (and slack for the last taps' reads).
    fn grad_input_scratch_len(&self) -> usize {
        self.poly_len() + (self.rl + self.e + 1) * self.pl
    }

    /// Tiles of output rows as `(first row, rows, start, len)`, where `start..start + len` is
    /// the tile's span at pitch `PL` (ending at the last real column of its last row).
    fn tiles(&self) -> impl Iterator<Item = (usize, usize, usize, usize)> + use<> {
        let (oh, ow, pl, rpt) = (self.oh, self.ow, self.pl, self.rows_per_tile());
        (0..oh).step_by(rpt).map(move |oy0| {
            let rows = rpt.min(oh - oy0);
            (oy0, rows, oy0 * pl, (rows - 1) * pl + ow)
        })
    }

    /// The columns `j` of sub-plane phase `q` that hold input pixels (the rest is padding).
    fn valid_cols(&self, q: usize) -> (usize, usize) {
        let (s, p) = (self.s, self.p);
        let hi = (p + self.w).saturating_sub(q).div_ceil(s).min(self.pl);
        let lo = if q >= p { 0 } else { (p - q).div_ceil(s) };
        (lo.min(hi), hi)
    }

    /// The input row of polyphase row `a` of phase `r`, if it is not padding.
    fn input_row(&self, a: usize, r: usize) -> Option<usize> {
        let py = a * self.s + r;
        (py >= self.p && py - self.p < self.h).then(|| py - self.p)
    }
}

/// Copies an input plane (`H*W`) into the polyphase padded layout (`poly_len`). Only the cells
/// that hold input pixels are written: the padding cells must already be zero.
#[inline(always)]
fn fill_poly(g: &Geom, x: &[f32], poly: &mut [f32]) {
    let (s, p, pl, w) = (g.s, g.p, g.pl, g.w);
    if s == 2 {
        // Both column phases of a row in one pass, in pairs, which vectorises (the general
        // path below gathers with a stride); the row's padding cells are written as zero.
        let sub_len = g.sub_len();
        for r in 0..2 {
            let (sub0, sub1) = poly[2 * r * sub_len..][..2 * sub_len].split_at_mut(sub_len);
            let rows = sub0.chunks_exact_mut(pl).zip(sub1.chunks_exact_mut(pl));
            for (a, (row0, row1)) in rows.enumerate() {
                if let Some(y) = g.input_row(a, r) {
                    split_phases(&x[y * w..][..w], p, 0.0, [row0, row1]);
                }
            }
        }
        return;
    }
    for r in 0..s {
        for q in 0..s {
            let sub = &mut poly[(r * s + q) * g.sub_len()..][..g.sub_len()];
            let (lo, hi) = g.valid_cols(q);
            for (a, row) in sub.chunks_exact_mut(pl).enumerate() {
                let Some(y) = g.input_row(a, r) else {
                    continue;
                };
                let src = &x[y * w..][..w];
                if s == 1 {
                    row[lo..hi].copy_from_slice(&src[lo - p..hi - p]);
                } else {
                    for (j, v) in (lo..hi).zip(&mut row[lo..hi]) {
                        *v = src[j * s + q - p];
                    }
                }
            }
        }
    }
}

/// Copies the cells of the polyphase layout that hold input pixels into an input-shaped plane
/// (`H*W`); pixels that no output reads are left as they are (zero).
fn unfill_poly(g: &Geom, poly: &[f32], x: &mut [f32]) {
    let (s, p, pl, w) = (g.s, g.p, g.pl, g.w);
    if s == 2 {
        // Both column phases of a row in one pass: an interleave, which vectorises (the
        // general path below scatters with a stride).
        let sub_len = g.sub_len();
        let (cols0, cols1) = (g.valid_cols(0), g.valid_cols(1));
        for r in 0..2 {
            let (sub0, sub1) = poly[2 * r * sub_len..][..2 * sub_len].split_at(sub_len);
            let rows = sub0.chunks_exact(pl).zip(sub1.chunks_exact(pl));
            for (a, (row0, row1)) in rows.enumerate() {
                if let Some(y) = g.input_row(a, r) {
                    interleave((row0, cols0), (row1, cols1), p, &mut x[y * w..][..w]);
                }
            }
        }
        return;
    }
    for r in 0..s {
        for q in 0..s {
            let sub = &poly[(r * s + q) * g.sub_len()..][..g.sub_len()];
            let (lo, hi) = g.valid_cols(q);
            for (a, row) in sub.chunks_exact(pl).enumerate() {
                let Some(y) = g.input_row(a, r) else {
                    continue;
                };
                let dst = &mut x[y * w..][..w];
                if s == 1 {
                    dst[lo - p..hi - p].copy_from_slice(&row[lo..hi]);
                } else {
                    for (j, v) in (lo..hi).zip(&row[lo..hi]) {
                        dst[j * s + q - p] = *v;
                    }
                }
            }
        }
    }
}

/// The inverse of [`split_phases`] at stride 2: `dst[2j + q - p] = row_q[j]` for `j` in each
/// phase's valid columns `lo_q..hi_q`.
#[inline(always)]
fn interleave(
    (row0, (lo0, hi0)): (&[f32], (usize, usize)),
    (row1, (lo1, hi1)): (&[f32], (usize, usize)),
    p: usize,
    dst: &mut [f32],
) {
    // Columns where both phases hold pixels: a run of consecutive pairs of dst.
    let (lo, hi) = (lo0.max(lo1), hi0.min(hi1));
    if lo >= hi {
        (lo0..hi0).for_each(|j| dst[2 * j - p] = row0[j]);
        (lo1..hi1).for_each(|j| dst[2 * j + 1 - p] = row1[j]);
        return;
    }
    (lo0..lo).for_each(|j| dst[2 * j - p] = row0[j]);
    (lo1..lo).for_each(|j| dst[2 * j + 1 - p] = row1[j]);
    let pairs = dst[2 * lo - p..][..2 * (hi - lo)].chunks_exact_mut(2);
    for ((a, b), pair) in row0[lo..hi].iter().zip(&row1[lo..hi]).zip(pairs) {
        pair[0] = *a;
        pair[1] = *b;
    }
    (hi..hi0).for_each(|j| dst[2 * j - p] = row0[j]);
    (hi..hi1).for_each(|j| dst[2 * j + 1 - p] = row1[j]);
}

/// Per-task scratch. Every plane of an op has the same geometry, so the padding cells of the
/// buffers are zeroed once here and the kernels never write them afterwards.
pub(super) struct Scratch {
    buf: Vec<f32>,
    /// The current plane's taps: `(offset, weight)`.
    taps: Vec<(usize, f32)>,
    /// Weight gradient: per tap, partial sums in f32 lanes and totals in f64.
    lanes: Vec<[f32; 16]>,
    totals: Vec<f64>,
}

impl Scratch {
    fn new(len: usize) -> Self {
        Self {
            buf: vec![0.0; len],
            taps: Vec::new(),
            lanes: Vec::new(),
            totals: Vec::new(),
        }
    }
}

/// `dst[base + i] = init + sum over taps (off, w) of w * src[base + off + i]` for `i < N`, with
/// the `N` accumulators kept in registers across all taps and stored once.
#[inline(always)]
#[allow(
    clippy::expect_used,
    reason = "a slice of exactly N values converts to [f32; N]"
)]
fn block<const FMA: bool, const N: usize>(
    dst: &mut [f32],
    init: f32,
    src: &[f32],
    base: usize,
    taps: &[(usize, f32)],
) {
    let mut acc = [init; N];
    for &(off, w) in taps {
        let s: &[f32; N] = src[base + off..][..N].try_into().expect("N values");
        for i in 0..N {
            acc[i] = if FMA {
                s[i].mul_add(w, acc[i])
            } else {
                acc[i] + w * s[i]
            };
        }
    }
    dst[base..base + N].copy_from_slice(&acc);
}

/// `dst[i] = init + sum over taps (off, w) of w * src[off + i]` for every `i` of `dst`: a
/// correlation at pitch `PL`, 32 outputs at a time (then 8, then 1).
#[inline(always)]
fn correlate<const FMA: bool>(dst: &mut [f32], init: f32, src: &[f32], taps: &[(usize, f32)]) {
    let n = dst.len();
    let mut i = 0;
    while i + 32 <= n {
        block::<FMA, 32>(dst, init, src, i, taps);
        i += 32;
    }
    while i + 8 <= n {
        block::<FMA, 8>(dst, init, src, i, taps);
        i += 8;
    }
    while i < n {
        block::<FMA, 1>(dst, init, src, i, taps);
        i += 1;
    }
}

/// Forward of one plane: `out (OH*OW) = act(bias + conv(x (H*W), w (k*k)))`.
/// Scratch: `fwd_scratch_len`.
#[inline(always)]
fn fwd_plane<const FMA: bool>(
    g: &Geom,
    x: &[f32],
    w: &[f32],
    bias: f32,
    act: Activation,
    out: &mut [f32],
    scratch: &mut Scratch,
) {
    let (poly, ext) = scratch.buf.split_at_mut(g.poly_len());
    let taps = &mut scratch.taps;
    taps.clear();
    taps.extend(g.tap_offsets.iter().copied().zip(w.iter().copied()));
    fill_poly(g, x, poly);
    for (oy0, rows, start, len) in g.tiles() {
        let ext = &mut ext[..len];
        correlate::<FMA>(ext, bias, &poly[start..], taps);
        for r in 0..rows {
            let o = &mut out[(oy0 + r) * g.ow..][..g.ow];
            act.copy(o, &ext[r * g.pl..][..g.ow]);
        }
    }
}

/// Input gradient of one plane: `gx (H*W) = conv_transpose(gp (OH*OW), w (k*k))`.
///
/// Each polyphase sub-plane `(r, q)` of the gradient is a correlation of the output gradient
/// (placed at pitch `PL` after `E = (k-1)/s` zero rows and columns) with the taps
/// `ky % s == r, kx % s == q`, flipped. Scratch: `grad_input_scratch_len`.
#[inline(always)]
fn grad_input_plane<const FMA: bool>(
    g: &Geom,
    gp: &[f32],
    w: &[f32],
    gx: &mut [f32],
    scratch: &mut Scratch,
) {
    grad_input_plane_masked::<FMA>(g, gp, w, gx, scratch, Masks::default());
}

/// The activations' gradients fused into [`grad_input_plane`]: `pre` masks the output
/// gradient by `act.passes(out)` as it is copied in (`out`: the plane's forward output), `post`
/// the input gradient by `act.passes(input)` once it is written: the values of
/// [`act_grad`] before and after (without guided backpropagation).
#[derive(Clone, Copy, Default)]
struct Masks<'a> {
    pre: Option<(&'a [f32], Activation)>,
    post: Option<(&'a [f32], Activation)>,
}

/// `dst[i] = if act.passes(by[i]) { src[i] } else { 0 }`, one loop per activation so that each
/// vectorises (as [`act_grad`]'s).
#[inline(always)]
fn mask_copy(dst: &mut [f32], src: &[f32], by: &[f32], act: Activation) {
    let rows = dst.iter_mut().zip(src).zip(by);
    match act {
        Activation::Relu => rows.for_each(|((d, &g), &o)| *d = if o > 0.0 { g } else { 0.0 }),
        Activation::Relu6 => {
            rows.for_each(|((d, &g), &o)| *d = if (o > 0.0) & (o < 6.0) { g } else { 0.0 })
        }
        _ => rows.for_each(|((d, &g), &o)| *d = if act.passes(o) { g } else { 0.0 }),
    }
}

#[inline(always)]
fn grad_input_plane_masked<const FMA: bool>(
    g: &Geom,
    gp: &[f32],
    w: &[f32],
    gx: &mut [f32],
    scratch: &mut Scratch,
    masks: Masks<'_>,
) {
    let (e, pl) = (g.e, g.pl);
    let (poly, gp_pad) = scratch.buf.split_at_mut(g.poly_len());
    for oy in 0..g.oh {
        let dst = &mut gp_pad[(oy + e) * pl + e..][..g.ow];
        let src = &gp[oy * g.ow..][..g.ow];
        match masks.pre {
            None => dst.copy_from_slice(src),
            Some((out, act)) => mask_copy(dst, src, &out[oy * g.ow..][..g.ow], act),
        }
    }
    let taps = &mut scratch.taps;
    for (phase, sub) in poly.chunks_exact_mut(g.sub_len()).enumerate() {
        taps.clear();
        taps.extend(g.phase_taps[phase].iter().map(|&(off, t)| (off, w[t])));
        correlate::<FMA>(sub, 0.0, gp_pad, taps);
    }
    unfill_poly(g, poly, gx);
    if let Some((input, act)) = masks.post {
        gx.iter_mut().zip(input).for_each(|(v, &i)| {
            if !act.passes(i) {
                *v = 0.0;
            }
        });
    }
}

/// `lanes[i % 16] += a[i] * b[i]`: a dot product whose 16 partial sums are left in `lanes`,
/// so the horizontal sum can wait.
#[inline(always)]
fn dot_lanes<const FMA: bool>(lanes: &mut [f32; 16], a: &[f32], b: &[f32]) {
    debug_assert_eq!(a.len(), b.len());
    let mut acc = *lanes;
    let (ac, bc) = (a.chunks_exact(16), b.chunks_exact(16));
    let (ar, br) = (ac.remainder(), bc.remainder());
    for (ca, cb) in ac.zip(bc) {
        for i in 0..16 {
            acc[i] = if FMA {
                ca[i].mul_add(cb[i], acc[i])
            } else {
                acc[i] + ca[i] * cb[i]
            };
        }
    }
    for (i, (x, y)) in ar.iter().zip(br).enumerate() {
        acc[i] += x * y;
    }
    *lanes = acc;
}

/// Products summed in f32 lanes before they are flushed into the f64 totals.
const FLUSH_EVERY: usize = 8192;

/// Weight gradient of one channel: `gw (k*k) = sum_b corr(x[b] (H*W), gp[b] (OH*OW))`, where
/// the channel's planes are `first_plane, first_plane + plane_step, ...` of `x` and `gp`.
/// Scratch: `fwd_scratch_len`.
#[inline(always)]
fn grad_weight_channel<const FMA: bool>(
    g: &Geom,
    x: &[f32],
    gp: &[f32],
    first_plane: usize,
    plane_step: usize,
    gw: &mut [f32],
    scratch: &mut Scratch,
) {
    let (poly, ext) = scratch.buf.split_at_mut(g.poly_len());
    let kk = g.k * g.k;
    let (lanes, totals) = (&mut scratch.lanes, &mut scratch.totals);
    lanes.clear();
    lanes.resize(kk, [0.0; 16]);
    totals.clear();
    totals.resize(kk, 0.0);
    let flush = |lanes: &mut [[f32; 16]], totals: &mut [f64]| {
        for (l, t) in lanes.iter_mut().zip(totals) {
            *t += l.iter().map(|&v| v as f64).sum::<f64>();
            *l = [0.0; 16];
        }
    };
    let mut pending = 0;
    let planes = x.len() / g.in_plane();
    for plane in (first_plane..planes).step_by(plane_step) {
        fill_poly(g, &x[plane * g.in_plane()..][..g.in_plane()], poly);
        let gp = &gp[plane * g.out_plane()..][..g.out_plane()];
        for (oy0, rows, start, len) in g.tiles() {
            // The output gradient at pitch PL; the junk columns stay zero.
            let ext = &mut ext[..len];
            for r in 0..rows {
                ext[r * g.pl..][..g.ow].copy_from_slice(&gp[(oy0 + r) * g.ow..][..g.ow]);
            }
            for (l, &off) in lanes.iter_mut().zip(&g.tap_offsets) {
                dot_lanes::<FMA>(l, ext, &poly[off + start..][..len]);
            }
            pending += len;
            if pending >= FLUSH_EVERY {
                flush(lanes, totals);
                pending = 0;
            }
        }
    }
    flush(lanes, totals);
    for (o, t) in gw.iter_mut().zip(totals.iter()) {
        *o = *t as f32;
    }
}

/// One plane of a depthwise convolution, for kernels that produce their input planes
/// themselves (the fused expand + depthwise op).
pub(super) struct PlaneConv {
    g: Geom,
}

impl PlaneConv {
    pub(super) fn new(h: usize, w: usize, k: usize, stride: usize, padding: usize) -> Result<Self> {
        Ok(Self {
            g: Geom::new(h, w, k, stride, padding)?,
        })
    }

    /// `(OH, OW)`.
    pub(super) fn out_hw(&self) -> (usize, usize) {
        (self.g.oh, self.g.ow)
    }

    /// A scratch buffer for [`PlaneConv::forward`] (one per task).
    pub(super) fn scratch(&self) -> Scratch {
        Scratch::new(self.g.fwd_scratch_len())
    }

    /// `out (OH*OW) = act(bias + conv(x (H*W), w (k*k)))`.
    pub(super) fn forward(
        &self,
        x: &[f32],
        w: &[f32],
        bias: f32,
        act: Activation,
        out: &mut [f32],
        scratch: &mut Scratch,
    ) {
        let g = &self.g;
        dispatch_fma!(fwd_plane(g, x, w, bias, act, out, scratch));
    }
}

/// The input gradient of a depthwise convolution of `h x w` planes: `(grad_pre [B,C,OH,OW],
/// w [C,1,k,k])` -> `[B,C,H,W]`.
pub(super) fn grad_input(
    gp: &Tensor,
    w: &Tensor,
    stride: usize,
    padding: usize,
    (h, wd): (usize, usize),
) -> Result<Tensor> {
    let op = DepthwiseGradInput {
        stride,
        padding,
        h,
        w: wd,
    };
    gp.apply_op2_no_bwd(w, &op)
}

/// The input gradient of a depthwise convolution between two activations, their gradients
/// fused in: `act_grad(grad_input(act_grad(grad, out, acts.0), w), input, acts.1)` for `grad`
/// and `out` `[B,C,OH,OW]` (the convolution's activated output), `input` `[B,C,H,W]` (its
/// activated input), `w` `[C,1,k,k]`; the same values, without the two masked copies of the
/// whole gradient. Both activations must be piecewise linear ([`Activation::is_smooth`] false)
/// and guided backpropagation off; [`grad_input_fused_acts`] falls back otherwise.
pub(super) fn grad_input_fused_acts(
    (grad, out): (&Tensor, &Tensor),
    w: &Tensor,
    input: &Tensor,
    acts: (Activation, Activation),
    (stride, padding): (usize, usize),
) -> Result<Tensor> {
    let (_, _, h, wd) = input.dims4()?;
    let plain = acts.0.is_smooth() || acts.1.is_smooth() || super::guided();
    if plain || !grad.device().is_cpu() || grad.dtype() != DType::F32 {
        let gpd = act_grad(grad, out, acts.0)?;
        return act_grad(
            &grad_input(&gpd, w, stride, padding, (h, wd))?,
            input,
            acts.1,
        );
    }
    let op = DepthwiseGradInputActs {
        stride,
        padding,
        w: w.flatten_all()?.to_dtype(DType::F32)?.to_vec1::<f32>()?,
        acts,
    };
    grad.apply_op3_no_bwd(out, input, &op)
}

/// `(grad [B,C,OH,OW], out [B,C,OH,OW], input [B,C,H,W])` -> grad input `[B,C,H,W]`, see
/// [`grad_input_fused_acts`].
struct DepthwiseGradInputActs {
    stride: usize,
    padding: usize,
    /// `[C, k*k]`.
    w: Vec<f32>,
    acts: (Activation, Activation),
}

impl CustomOp3 for DepthwiseGradInputActs {
    fn name(&self) -> &'static str {
        "convlens-depthwise-grad-input-acts"
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
        let &[b, c, h, w] = l3.dims() else {
            bail!(
                "{}: input must be [B,C,H,W], got {:?}",
                self.name(),
                l3.dims()
            );
        };
        let kk = self.w.len() / c.max(1);
        let k = (kk as f64).sqrt().round() as usize;
        if k * k * c != self.w.len() {
            bail!("{}: {} weights for {c} channels", self.name(), self.w.len());
        }
        let g = Geom::new(h, w, k, self.stride, self.padding)?;
        if l1.dims() != [b, c, g.oh, g.ow] || l2.dims() != l1.dims() {
            bail!(
                "{}: grad {:?} and output {:?} are not the output {:?} of {:?}",
                self.name(),
                l1.dims(),
                l2.dims(),
                [b, c, g.oh, g.ow],
                l3.dims()
            );
        }
        let gp = f32_data(s1, l1, self.name())?;
        let out = f32_data(s2, l2, self.name())?;
        let input = f32_data(s3, l3, self.name())?;
        let (ip, op) = (g.in_plane(), g.out_plane());
        let mut gx = Unfilled::new(b * c * ip);
        // As `DepthwiseGradInput`, with the masks applied while each plane is in cache.
        gx.slots()
            .par_chunks_mut(ip)
            .with_min_len(min_planes_per_task(ip))
            .enumerate()
            .for_each_init(
                || Scratch::new(g.grad_input_scratch_len()),
                |scratch, (i, gx)| {
                    gx.iter_mut().for_each(|v| {
                        v.write(0.0);
                    });
                    // SAFETY: every slot of the plane was just written.
                    let gx = unsafe { &mut *(gx as *mut [MaybeUninit<f32>] as *mut [f32]) };
                    let masks = Masks {
                        pre: Some((&out[i * op..][..op], self.acts.0)),
                        post: Some((&input[i * ip..][..ip], self.acts.1)),
                    };
                    let (gp, w) = (&gp[i * op..][..op], &self.w[(i % c) * kk..][..kk]);
                    dispatch_fma!(grad_input_plane_masked(&g, gp, w, gx, scratch, masks));
                },
            );
        // SAFETY: the planes cover the buffer and each was written in full above.
        let gx = unsafe { gx.assume_filled() };
        Ok((CpuStorage::F32(gx), Shape::from((b, c, h, w))))
    }
}

/// The weight gradient of a depthwise convolution: `(x [B,C,H,W], grad_pre [B,C,OH,OW])` ->
/// `[C,1,k,k]`.
pub(super) fn grad_weight(
    x: &Tensor,
    gp: &Tensor,
    stride: usize,
    padding: usize,
    k: usize,
) -> Result<Tensor> {
    x.apply_op2_no_bwd(gp, &DepthwiseGradWeight { stride, padding, k })
}

/// Checks `x [B,C,H,W]`, `w [C,1,k,k]` and `bias [C]`; returns `(B, C, geometry)`.
fn check(
    x: &[usize],
    w: &[usize],
    bias: &[usize],
    stride: usize,
    padding: usize,
) -> Result<(usize, usize, Geom)> {
    let &[b, c, h, wd] = x else {
        bail!("depthwise_conv2d: x must be [B,C,H,W], got {x:?}");
    };
    let &[wc, 1, k, k2] = w else {
        bail!("depthwise_conv2d: w must be [C,1,k,k], got {w:?}");
    };
    if wc != c || k != k2 {
        bail!("depthwise_conv2d: w must be [C,1,k,k] with C = {c}, got {w:?}");
    }
    if bias != [c] {
        bail!("depthwise_conv2d: bias must be [C] with C = {c}, got {bias:?}");
    }
    Ok((b, c, Geom::new(h, wd, k, stride, padding)?))
}

/// The forward op: `(x, w, bias)` -> `act(conv(x, w) + bias)`.
struct DepthwiseConv {
    stride: usize,
    padding: usize,
    act: Activation,
}

impl CustomOp3 for DepthwiseConv {
    fn name(&self) -> &'static str {
        "convlens-depthwise-conv2d"
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
        let (b, c, g) = check(l1.dims(), l2.dims(), l3.dims(), self.stride, self.padding)?;
        let x = f32_data(s1, l1, self.name())?;
        let w = f32_data(s2, l2, self.name())?;
        let bias = f32_data(s3, l3, self.name())?;
        let (kk, act, op) = (g.k * g.k, self.act, g.out_plane());
        // Each plane is zeroed by its task just before it is written (in cache, on every
        // thread) rather than the whole output up front on the calling thread.
        let mut out = Unfilled::new(b * c * op);
        let dst = SyncPtr(out.ptr());
        (0..b * c)
            .into_par_iter()
            .with_min_len(min_planes_per_task(op))
            .for_each_init(
                || Scratch::new(g.fwd_scratch_len()),
                |scratch, i| {
                    // SAFETY: plane i lies inside `out` (`b * c` planes of `op` values) and
                    // only this task touches it; it is initialised before the slice is made.
                    let o = unsafe {
                        let at = dst.get().add(i * op);
                        at.write_bytes(0, op);
                        std::slice::from_raw_parts_mut(at, op)
                    };
                    let ch = i % c;
                    let x = &x[i * g.in_plane()..][..g.in_plane()];
                    let w = &w[ch * kk..][..kk];
                    dispatch_fma!(fwd_plane(&g, x, w, bias[ch], act, o, scratch));
                },
            );
        // SAFETY: the tasks zeroed (then wrote) every plane.
        let out = unsafe { out.assume_filled() };
        Ok((CpuStorage::F32(out), Shape::from((b, c, g.oh, g.ow))))
    }

    /// Gradients are only computed for the arguments that the graph tracks (a frozen input
    /// costs nothing).
    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        bias: &Tensor,
        res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let (_, _, h, wd) = x.dims4()?;
        let (stride, padding) = (self.stride, self.padding);
        let gp = act_grad(grad, res, self.act)?;
        let gx = x
            .track_op()
            .then(|| grad_input(&gp, w, stride, padding, (h, wd)))
            .transpose()?;
        let gw = w
            .track_op()
            .then(|| grad_weight(x, &gp, stride, padding, w.dim(2)?))
            .transpose()?;
        let gb = bias.track_op().then(|| channel_sum(&gp)).transpose()?;
        Ok((gx, gw, gb))
    }
}

/// `(grad_pre [B,C,OH,OW], w [C,1,k,k])` -> grad x `[B,C,H,W]`.
struct DepthwiseGradInput {
    stride: usize,
    padding: usize,
    h: usize,
    w: usize,
}

impl CustomOp2 for DepthwiseGradInput {
    fn name(&self) -> &'static str {
        "convlens-depthwise-grad-input"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let &[b, c, oh, ow] = l1.dims() else {
            bail!(
                "{}: grad must be [B,C,OH,OW], got {:?}",
                self.name(),
                l1.dims()
            );
        };
        let (_, _, g) = check(
            &[b, c, self.h, self.w],
            l2.dims(),
            &[c],
            self.stride,
            self.padding,
        )?;
        if (oh, ow) != (g.oh, g.ow) {
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
        let kk = g.k * g.k;
        // Each plane is zeroed by its task just before the kernel fills it (`unfill_poly` skips
        // pixels no output reads), while it is in cache: a zeroed allocation would stream the
        // whole gradient through memory once more.
        let mut gx = Unfilled::new(b * c * g.in_plane());
        gx.slots()
            .par_chunks_mut(g.in_plane())
            .with_min_len(min_planes_per_task(g.in_plane()))
            .enumerate()
            .for_each_init(
                || Scratch::new(g.grad_input_scratch_len()),
                |scratch, (i, gx)| {
                    gx.iter_mut().for_each(|v| {
                        v.write(0.0);
                    });
                    // SAFETY: every slot of the plane was just written.
                    let gx = unsafe { &mut *(gx as *mut [MaybeUninit<f32>] as *mut [f32]) };
                    let gp = &gp[i * g.out_plane()..][..g.out_plane()];
                    let w = &w[(i % c) * kk..][..kk];
                    dispatch_fma!(grad_input_plane(&g, gp, w, gx, scratch));
                },
            );
        // SAFETY: the planes cover the buffer and each was written in full above.
        let gx = unsafe { gx.assume_filled() };
        Ok((CpuStorage::F32(gx), Shape::from((b, c, g.h, g.w))))
    }
}

/// `(x [B,C,H,W], grad_pre [B,C,OH,OW])` -> grad w `[C,1,k,k]`.
struct DepthwiseGradWeight {
    stride: usize,
    padding: usize,
    k: usize,
}

impl CustomOp2 for DepthwiseGradWeight {
    fn name(&self) -> &'static str {
        "convlens-depthwise-grad-weight"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let k = self.k;
        let c = l1.dims().get(1).copied().unwrap_or(0);
        let (b, c, g) = check(l1.dims(), &[c, 1, k, k], &[c], self.stride, self.padding)?;
        if l2.dims() != [b, c, g.oh, g.ow] {
            bail!(
                "{}: grad {:?} is not the output of x {:?}",
                self.name(),
                l2.dims(),
                l1.dims()
            );
        }
        let x = f32_data(s1, l1, self.name())?;
        let gp = f32_data(s2, l2, self.name())?;
        let mut gw = vec![0f32; c * k * k];
        gw.par_chunks_mut(k * k).enumerate().for_each_init(
            || Scratch::new(g.fwd_scratch_len()),
            |scratch, (ch, gw)| {
                dispatch_fma!(grad_weight_channel(&g, &x, &gp, ch, c, gw, scratch));
            },
        );
        Ok((CpuStorage::F32(gw), Shape::from((c, 1, k, k))))
    }
}

/// Depthwise 2-D convolution with bias and activation fused: `act(conv(x, w) + bias)`.
///
/// - `x`: `[B,C,H,W]`; `w`: `[C,1,k,k]` (any `k`); `bias`: `[C]`.
/// - Zero padding of `padding` on every side, square `stride`.
/// - Returns `[B,C,OH,OW]` with `OH = (H + 2*padding - k) / stride + 1` (same for `OW`).
///
/// Differentiable w.r.t. `x`, `w` and `bias`. On the CPU everything must be f32 (any layout);
/// other devices fall back to candle's `conv2d(groups = C)` + `broadcast_add` + activation.
pub fn depthwise_conv2d(
    x: &Tensor,
    w: &Tensor,
    bias: &Tensor,
    stride: usize,
    padding: usize,
    act: Activation,
) -> Result<Tensor> {
    let (_, c, _) = check(x.dims(), w.dims(), bias.dims(), stride, padding)?;
    if act.is_smooth() {
        let y = depthwise_conv2d(x, w, bias, stride, padding, Activation::Identity)?;
        return super::smooth_act(&y, act);
    }
    if !x.device().is_cpu() {
        let y = x
            .conv2d(w, padding, stride, 1, c)?
            .broadcast_add(&bias.reshape((1, c, 1, 1))?)?;
        return act.apply_tensor(&y);
    }
    for (name, t) in [("x", x), ("w", w), ("bias", bias)] {
        if t.dtype() != DType::F32 {
            bail!(
                "depthwise_conv2d: {name} must be f32 on the CPU, got {:?}",
                t.dtype()
            );
        }
    }
    x.apply_op3(
        w,
        bias,
        DepthwiseConv {
            stride,
            padding,
            act,
        },
    )
}

#[cfg(test)]
#[allow(
    clippy::disallowed_macros,
    reason = "timing tests print what they measured"
)]
mod tests;
