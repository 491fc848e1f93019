//! Dense 2-D convolution (groups = 1) with bias and activation fused:
//! `act(conv(x, w) + bias)`, `[B,Cin,H,W]` -> `[B,Cout,OH,OW]`, for any kernel `kh x kw`, stride,
//! zero padding and dilation (each per axis). The path of every dense convolution of the zoo
//! (VGG, ResNet, stems, Inception's 1x7 / 7x1), where candle's `conv2d` unfolds the whole batch
//! (im2col: 3.7 GB for VGG16 at batch 32) before one product.
//!
//! The forward works on rayon tasks of `(image, band of output rows)`: it unfolds the band's
//! receptive fields into a per-task im2col buffer (`[Cin*kh*kw, rows*OW]`, a few hundred KB to
//! a few MB, reused by the task's thread), runs one single-threaded `gemm` into the output, and
//! applies bias and activation (and a residual, [`conv2d_add_act`]) to the tile while it is in
//! cache (see `ops::matmul`). A 1x1
//! convolution at stride 1 without padding is a plain product (`pointwise_conv2d`, no im2col).
//!
//! The backward: `gp = grad * act'(out)`; `gw = Σ gp_band · cols_bandᵀ` over bands of output
//! rows, the batch's bands side by side in products of depth up to a few thousand
//! (`ops::weight_grad`, unfolding the input again); `gx` at stride 1 is the forward
//! convolution of `gp` with the kernel flipped and its channels swapped (padded by
//! `d*(k-1) - p`; [`Geom::transposed`]); otherwise per `(image, band of input rows)`: `wᵀ · gp`
//! over the output rows that touch the band, folded back (col2im) into the band's own rows
//! only, so tasks never write the same element.
//!
//! 3x3 convolutions at stride 1 (forward and input gradient) with enough channels go through
//! Winograd F(2x2, 3x3) or, on images of 48 px and more, F(4x4, 3x3) instead of im2col
//! (`winograd`, where each measured faster).

use std::borrow::Cow;

use candle_core::{CpuStorage, CustomOp2, CustomOp3, DType, Layout, Result, Shape, Tensor, bail};
use rayon::prelude::*;
use winograd::kept::{self, Direction};

use super::bias_act::activate;
use super::matmul::{
    Epilogue, MatRef, SyncPtr, WANTED_TASKS, gemm_into, row_tile, tiled_matmul, transpose,
};
use super::op_times::Timed;
use super::pointwise_direct::{Kernel, direct_kernel};
use super::weight_grad::{self, Rows};
use super::{Activation, Unfilled, act_grad, channel_sum, f32_data, pointwise_conv2d, zeroed};

/// Stride, zero padding and dilation of a convolution, each `(height, width)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ConvSpec {
    /// Step between output positions, in input pixels.
    pub stride: (usize, usize),
    /// Zeros added above and below (`.0`), left and right (`.1`).
    pub padding: (usize, usize),
    /// Step between kernel taps, in input pixels (1: a plain convolution).
    pub dilation: (usize, usize),
}

impl ConvSpec {
    /// The same stride and padding on both axes, no dilation.
    pub const fn square(stride: usize, padding: usize) -> Self {
        ConvSpec {
            stride: (stride, stride),
            padding: (padding, padding),
            dilation: (1, 1),
        }
    }

    /// Stride 1, padding `padding_h` above and below and `padding_w` left and right.
    pub const fn padded(padding_h: usize, padding_w: usize) -> Self {
        ConvSpec {
            stride: (1, 1),
            padding: (padding_h, padding_w),
            dilation: (1, 1),
        }
    }

    /// The same spec with dilation `dilation` on both axes.
    pub const fn dilated(self, dilation: usize) -> Self {
        ConvSpec {
            dilation: (dilation, dilation),
            ..self
        }
    }
}

/// One spatial axis of a convolution: input length `n`, `k` taps, stride `s`, padding `p`,
/// dilation `d`, output length `o`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Axis {
    n: usize,
    k: usize,
    s: usize,
    p: usize,
    d: usize,
    o: usize,
}

impl Axis {
    fn new(n: usize, k: usize, s: usize, p: usize, d: usize, name: &str) -> Result<Self> {
        if s == 0 || d == 0 {
            bail!("conv2d: the {name} stride and dilation must be >= 1, got {s} and {d}");
        }
        if n == 0 {
            bail!("conv2d: the input is empty along its {name}");
        }
        let span = d * k.saturating_sub(1) + 1;
        if k == 0 || n + 2 * p < span {
            bail!(
                "conv2d: a kernel of {k} taps (dilation {d}) does not fit a {name} of {n} \
                 padded by {p}"
            );
        }
        Ok(Axis {
            n,
            k,
            s,
            p,
            d,
            o: (n + 2 * p - span) / s + 1,
        })
    }

    /// The outputs `lo..hi` whose tap `t` reads an input (not padding):
    /// `0 <= o*s + t*d - p < n`.
    fn valid(&self, t: usize) -> (usize, usize) {
        let off = t * self.d;
        let lo = if off >= self.p {
            0
        } else {
            (self.p - off).div_ceil(self.s)
        };
        let hi = if self.n + self.p > off {
            ((self.n + self.p - off - 1) / self.s + 1).min(self.o)
        } else {
            0
        };
        (lo.min(hi), hi)
    }

    /// The input read by output `o` through tap `t`, if it is not padding.
    fn input(&self, o: usize, t: usize) -> Option<usize> {
        let i = (o * self.s + t * self.d).checked_sub(self.p)?;
        (i < self.n).then_some(i)
    }
}

/// The geometry of one image of a convolution.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Geom {
    cin: usize,
    cout: usize,
    /// Rows.
    y: Axis,
    /// Columns.
    x: Axis,
}

impl Geom {
    fn new(x: &[usize], w: &[usize], spec: ConvSpec) -> Result<(usize, Self)> {
        let &[b, cin, h, wd] = x else {
            bail!("conv2d: x must be [B,Cin,H,W], got {x:?}");
        };
        let &[cout, wcin, kh, kw] = w else {
            bail!("conv2d: w must be [Cout,Cin,kh,kw], got {w:?}");
        };
        if wcin != cin {
            bail!("conv2d: w must be [Cout,Cin,kh,kw] with Cin = {cin}, got {w:?}");
        }
        let ConvSpec {
            stride: (sy, sx),
            padding: (py, px),
            dilation: (dy, dx),
        } = spec;
        let g = Geom {
            cin,
            cout,
            y: Axis::new(h, kh, sy, py, dy, "height")?,
            x: Axis::new(wd, kw, sx, px, dx, "width")?,
        };
        Ok((b, g))
    }

    /// Rows of the unfolded matrix: `Cin*kh*kw`.
    fn kdim(&self) -> usize {
        self.cin * self.y.k * self.x.k
    }

    fn in_plane(&self) -> usize {
        self.y.n * self.x.n
    }

    fn out_plane(&self) -> usize {
        self.y.o * self.x.o
    }

    /// A 1x1 convolution at stride 1 without padding: a plain product, nothing to unfold.
    fn is_pointwise(&self) -> bool {
        let one = |a: &Axis| a.k == 1 && a.s == 1 && a.p == 0;
        one(&self.y) && one(&self.x)
    }

    /// Output rows per band: the band's im2col buffer and output tile stay within ~128 KiB,
    /// but a band has at least 256 columns (or the whole image) so that the products are not
    /// too thin for the microkernels when `Cin*kh*kw` is large (ResNet's 3x3 convolutions of
    /// 512 channels: a 4608 x 256 buffer, 4.5 MiB, the largest scratch of the zoo).
    fn band_rows(&self) -> usize {
        let cols = (32_768 / self.kdim().max(self.cout).max(1)).max(256);
        cols.div_ceil(self.x.o.max(1)).clamp(1, self.y.o)
    }
}

impl Geom {
    /// At stride 1, the gradient of the input is itself a convolution: of the output's
    /// gradient (`Cout` channels) with the kernel flipped and its channels swapped
    /// ([`flipped`]), padded by `d*(k-1) - p`, which gives back the input's size. Its geometry,
    /// when the padding is not negative on either axis (`p <= d*(k-1)`).
    fn transposed(&self) -> Option<Geom> {
        let axis = |a: &Axis| {
            let span = a.d * (a.k - 1);
            (a.s == 1 && a.p <= span).then(|| Axis {
                n: a.o,
                p: span - a.p,
                o: a.n,
                ..*a
            })
        };
        Some(Geom {
            cin: self.cout,
            cout: self.cin,
            y: axis(&self.y)?,
            x: axis(&self.x)?,
        })
    }
}

/// `w` `[Cout,Cin,kh,kw]` -> `[Cin,Cout,kh,kw]` flipped in both spatial axes: the kernel of
/// [`Geom::transposed`]. The new output channels in parallel, each written once (never zeroed
/// first).
fn flipped(g: &Geom, w: &[f32]) -> Vec<f32> {
    let taps = g.y.k * g.x.k;
    let mut out = Unfilled::new(g.cin * g.cout * taps);
    if taps > 0 && g.cout > 0 {
        out.slots()
            .par_chunks_mut(g.cout * taps)
            .enumerate()
            .for_each(|(c, dst)| {
                for (o, d) in dst.chunks_exact_mut(taps).enumerate() {
                    let src = &w[(o * g.cin + c) * taps..][..taps];
                    for (d, &v) in d.iter_mut().zip(src.iter().rev()) {
                        d.write(v);
                    }
                }
            });
    }
    // SAFETY: the chunks cover all `cin * cout * taps` slots and each was written above.
    unsafe { out.assume_filled() }
}

/// Unfolds output rows `oy0..oy0 + rows` of one image `x` (`Cin*H*W`) into `cols`
/// (`[Cin*kh*kw, rows*OW]`, row-major): `cols[(c*kh + ky)*kw + kx][r*OW + ox] =
/// x[c][(oy0+r)*sy + ky*dy - py][ox*sx + kx*dx - px]`, zero in the padding.
fn im2col(g: &Geom, x: &[f32], oy0: usize, rows: usize, cols: &mut Vec<f32>) {
    let t = rows * g.x.o;
    cols.clear();
    cols.resize(g.kdim() * t, 0.0);
    unfold(g, x, oy0, rows, &mut Rows::of(cols, g.kdim(), t));
}

/// [`im2col`] into `out`'s `Cin*kh*kw` rows of `rows*OW` values, which must be zero where the
/// padding is read.
fn unfold(g: &Geom, x: &[f32], oy0: usize, rows: usize, out: &mut Rows<'_>) {
    let (kh, kw, ow, sx) = (g.y.k, g.x.k, g.x.o, g.x.s);
    for c in 0..g.cin {
        let plane = &x[c * g.in_plane()..][..g.in_plane()];
        for ky in 0..kh {
            for kx in 0..kw {
                let dst = out.row((c * kh + ky) * kw + kx);
                let (lo, hi) = g.x.valid(kx);
                if lo >= hi {
                    continue;
                }
                let ix0 = lo * sx + kx * g.x.d - g.x.p;
                for r in 0..rows {
                    let Some(iy) = g.y.input(oy0 + r, ky) else {
                        continue;
                    };
                    let src = &plane[iy * g.x.n..][..g.x.n];
                    let d = &mut dst[r * ow..][..ow];
                    if sx == 1 {
                        d[lo..hi].copy_from_slice(&src[ix0..ix0 + hi - lo]);
                    } else if sx == 2 {
                        // Pairs of columns, the even one taken: vectorises as shuffles. The
                        // last value's pair may end past the row, so it is read alone.
                        let (body, last) = d[lo..hi].split_at_mut(hi - lo - 1);
                        for (v, pair) in body.iter_mut().zip(src[ix0..].chunks_exact(2)) {
                            *v = pair[0];
                        }
                        last[0] = src[ix0 + 2 * (hi - lo - 1)];
                    } else {
                        for (v, ix) in d[lo..hi].iter_mut().zip((ix0..).step_by(sx)) {
                            *v = src[ix];
                        }
                    }
                }
            }
        }
    }
}

/// The forward op: `(x, w, bias)` -> `act(conv(x, w) + bias)`; `kept`: the weight's key
/// where its Winograd transform is kept between calls ([`KeptKernels`]).
struct Conv {
    spec: ConvSpec,
    act: Activation,
    kept: Option<kept::Key>,
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
        let (b, g) = Geom::new(l1.dims(), l2.dims(), self.spec)?;
        if l3.dims() != [g.cout] {
            bail!(
                "{}: bias must be [{}], got {:?}",
                self.name(),
                g.cout,
                l3.dims()
            );
        }
        let _timed = timed(self.name(), b, &g, self.spec, [l1.dims(), l2.dims()]);
        let x = f32_data(s1, l1, self.name())?;
        let w = f32_data(s2, l2, self.name())?;
        let bias = f32_data(s3, l3, self.name())?;
        let epi = Epilogue {
            bias: Some(&bias),
            act: self.act,
            ..Epilogue::NONE
        };
        let out = forward(b, &g, &x, &w, self.kept, epi);
        Ok((CpuStorage::F32(out), Shape::from((b, g.cout, g.y.o, g.x.o))))
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
        let gp = act_grad(grad, res, self.act)?;
        let (gx, gw) = input_weight_grads(self.spec, x, w, &gp)?;
        let gb = bias.track_op().then(|| channel_sum(&gp)).transpose()?;
        Ok((gx, gw, gb))
    }
}

/// `epi(conv(x, w))` for `b` images of geometry `g` (`x` `[B,Cin,H,W]`, `w` `[Cout,Cin,kh,kw]`,
/// row-major): `[B,Cout,OH,OW]`. `kept`: `w`'s key where a Winograd transform is kept.
fn forward(
    b: usize,
    g: &Geom,
    x: &[f32],
    w: &[f32],
    kept: Option<kept::Key>,
    epi: Epilogue<'_>,
) -> Vec<f32> {
    if winograd::pays(b, g) {
        let kept = kept.map(|k| k.stamped(w));
        return winograd::forward(b, g, x, || Cow::Borrowed(w), kept, epi);
    }
    if b > 1 && side_by_side::pays(g) {
        return side_by_side::forward(b, g, x, w, epi);
    }
    unfolded(b, g, x, w, epi)
}

/// Times an op's call on `b` images of geometry `g` (operands shaped `dims`) when
/// [`super::op_times`] records.
fn timed(op: &'static str, b: usize, g: &Geom, spec: ConvSpec, dims: [&[usize]; 2]) -> Timed {
    let shapes = || {
        let (s, p) = (spec.stride, spec.padding);
        format!("{:?} {:?} stride {s:?} padding {p:?}", dims[0], dims[1])
    };
    Timed::start(op, shapes, b * g.cout * g.kdim() * g.out_plane())
}

/// [`forward`] through im2col and one product per band, for every geometry.
fn unfolded(b: usize, g: &Geom, x: &[f32], w: &[f32], epi: Epilogue<'_>) -> Vec<f32> {
    let (kdim, n) = (g.kdim(), g.out_plane());
    let (nt, mt) = match whole_plane_rows(b, g, &epi) {
        Some(rows) => (n, rows),
        None => {
            let nt = g.band_rows() * g.x.o;
            let tasks = b * n.div_ceil(nt);
            let rows = if tasks >= WHOLE_COLUMN_TASKS {
                g.cout
            } else {
                row_tile(g.cout, tasks)
            };
            (nt, rows)
        }
    };
    let lhs = MatRef::row_major(w, 0, kdim);
    let image = g.cin * g.in_plane();
    tiled_matmul(
        lhs,
        g.cout,
        kdim,
        b,
        n,
        (nt, mt),
        epi,
        small_k_kernel(b, n, kdim),
        |img, c0, len, buf| {
            let x = &x[img * image..][..image];
            if g.is_pointwise() {
                return MatRef::row_major(x, c0, n);
            }
            im2col(g, x, c0 / g.x.o, len / g.x.o, buf);
            MatRef::row_major(buf, 0, len)
        },
    )
}

/// From this many bands on, [`unfolded`] gives each band all the output channels rather than
/// cutting them into [`row_tile`]s, which unfold the band's input once per tile: ResNet-50's
/// stride-2 layers at batch 16 (one band an image, 16 tasks) took 90.3 ms a forward against
/// 95.6 cut in two (medians of 3 alternated rounds, an Intel Xeon, `--ops`). A constant, so
/// that the tiles (and the sums' order) do not depend on the thread count.
const WHOLE_COLUMN_TASKS: usize = WANTED_TASKS / 2;

/// Rows per tile when [`unfolded`]'s tiles should span whole output planes: a 1x1 layer that
/// adds a residual before its activation (a ResNet block's end) on planes of
/// [`WHOLE_PLANE_PIXELS`], when that still makes [`WANTED_TASKS`] tiles. Its epilogue reads the
/// residual and rewrites the output, both far larger than the caches there (51 MB at 56x56,
/// batch 16); in bands of 5 rows (280 values a channel) that is 256 short runs a tile. In
/// ResNet-50's forward (`op_times`, Zen 5 EPYC, three rounds alternated with the bands) its
/// 56-px block ends took 7.28 ms (6.24-7.43) at batch 16 against 7.85 (7.50-8.15), and 12.64
/// (12.22-14.05) at batch 32 against 17.85 (17.73-17.95). Tiles of 64 or 256 rows over half
/// or a quarter of the plane came out between the two; the 28-px block ends (784 pixels) ran
/// the same either way, the 14- and 7-px ones slower.
fn whole_plane_rows(b: usize, g: &Geom, epi: &Epilogue<'_>) -> Option<usize> {
    const ROWS: usize = 128;
    let wide = g.is_pointwise()
        && epi.pre_residual.is_some()
        && WHOLE_PLANE_PIXELS.contains(&g.out_plane());
    (wide && b * g.cout.div_ceil(ROWS) >= WANTED_TASKS).then(|| ROWS.min(g.cout))
}

/// The output planes [`whole_plane_rows`] takes whole: from 56x56, where it was measured, to
/// 64x64. A tile of 128 rows holds 1.5 MiB at 56x56 and 2 MiB (a core's L2 here) at 64x64,
/// where its epilogue would start reading it back from farther away: larger planes keep the
/// bands.
const WHOLE_PLANE_PIXELS: std::ops::RangeInclusive<usize> = 3136..=4096;

/// The direct 1x1 kernel for the unfolded products with few inputs (a stem's 3 channels x
/// 3x3 taps: 27) where it pays ([`direct_kernel`]): `gemm` packed the unfolded band on every
/// call for a product of 27 inputs, and its epilogue was a second pass over the output.
fn small_k_kernel(b: usize, n: usize, kdim: usize) -> Option<Kernel> {
    direct_kernel(b, n).filter(|_| kdim <= SMALL_K)
}

/// The most inputs (`Cin * kh * kw`) of an unfolded product that [`small_k_kernel`] takes.
const SMALL_K: usize = 32;

/// The gradients of `x` and `w` (of those the graph tracks) from `gp`, the gradient of the
/// convolution's output (before bias and activation).
fn input_weight_grads(
    spec: ConvSpec,
    x: &Tensor,
    w: &Tensor,
    gp: &Tensor,
) -> Result<(Option<Tensor>, Option<Tensor>)> {
    let gx = x
        .track_op()
        .then(|| {
            let (h, w_) = (x.dim(2)?, x.dim(3)?);
            let kept = kept::key(w, Direction::InputGradient);
            gp.apply_op2_no_bwd(
                w,
                &GradInput {
                    spec,
                    h,
                    w: w_,
                    kept,
                },
            )
        })
        .transpose()?;
    let gw = w
        .track_op()
        .then(|| {
            let (kh, kw) = (w.dim(2)?, w.dim(3)?);
            x.apply_op2_no_bwd(gp, &GradWeight { spec, kh, kw })
        })
        .transpose()?;
    Ok((gx, gw))
}

/// The forward op with a residual added before the activation: `(x, w, residual)` ->
/// `act(conv(x, w) + bias + residual)`, the bias a constant (not tracked).
struct ConvAddAct {
    spec: ConvSpec,
    act: Activation,
    bias: Vec<f32>,
    kept: Option<kept::Key>,
}

impl CustomOp3 for ConvAddAct {
    fn name(&self) -> &'static str {
        "convlens-conv2d-add-act"
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
        let (b, g) = Geom::new(l1.dims(), l2.dims(), self.spec)?;
        let out_dims = [b, g.cout, g.y.o, g.x.o];
        if l3.dims() != out_dims || self.bias.len() != g.cout {
            bail!(
                "{}: residual {:?} and {} biases for an output {out_dims:?}",
                self.name(),
                l3.dims(),
                self.bias.len()
            );
        }
        let _timed = timed(self.name(), b, &g, self.spec, [l1.dims(), l2.dims()]);
        let x = f32_data(s1, l1, self.name())?;
        let w = f32_data(s2, l2, self.name())?;
        let residual = f32_data(s3, l3, self.name())?;
        let epi = Epilogue {
            bias: Some(&self.bias),
            act: self.act,
            pre_residual: Some(&residual),
            ..Epilogue::NONE
        };
        let out = forward(b, &g, &x, &w, self.kept, epi);
        Ok((CpuStorage::F32(out), Shape::from(out_dims.to_vec())))
    }

    /// Gradients only for the arguments that the graph tracks; the residual's is the
    /// convolution output's.
    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        residual: &Tensor,
        res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let gp = act_grad(grad, res, self.act)?;
        let (gx, gw) = input_weight_grads(self.spec, x, w, &gp)?;
        let gr = residual.track_op().then_some(gp);
        Ok((gx, gw, gr))
    }
}

/// `(x [B,Cin,H,W], gp [B,Cout,OH,OW])` -> `gw [Cout,Cin,kh,kw]`.
struct GradWeight {
    spec: ConvSpec,
    kh: usize,
    kw: usize,
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
        let (cin, cout) = (
            l1.dims().get(1).copied().unwrap_or(0),
            l2.dims().get(1).copied().unwrap_or(0),
        );
        let (b, g) = Geom::new(l1.dims(), &[cout, cin, self.kh, self.kw], self.spec)?;
        if l2.dims() != [b, g.cout, g.y.o, g.x.o] {
            bail!(
                "{}: grad {:?} is not the output of x {:?}",
                self.name(),
                l2.dims(),
                l1.dims()
            );
        }
        let _timed = timed(self.name(), b, &g, self.spec, [l1.dims(), l2.dims()]);
        let x = f32_data(s1, l1, self.name())?;
        let gp = f32_data(s2, l2, self.name())?;
        let (kdim, n, ow) = (g.kdim(), g.out_plane(), g.x.o);
        // Segments: bands of output rows of each image, as many rows as a chunk holds.
        let rows = (weight_grad::max_cols(g.cout, kdim) / ow.max(1)).clamp(1, g.y.o);
        let bands = g.y.o.div_ceil(rows);
        let lens: Vec<usize> = (0..b * bands)
            .map(|s| (rows.min(g.y.o - (s % bands) * rows)) * ow)
            .collect();
        let (image, padded) = (g.cin * g.in_plane(), g.y.p > 0 || g.x.p > 0);
        let gw = weight_grad::sum_over_segments(g.cout, kdim, &lens, |s, a, cols| {
            let (img, oy0) = (s / bands, (s % bands) * rows);
            let t = lens[s];
            for o in 0..g.cout {
                a.row(o)
                    .copy_from_slice(&gp[(img * g.cout + o) * n + oy0 * ow..][..t]);
            }
            if padded {
                cols.zero();
            }
            unfold(&g, &x[img * image..][..image], oy0, t / ow, cols);
        });
        Ok((
            CpuStorage::F32(gw),
            Shape::from((g.cout, g.cin, self.kh, self.kw)),
        ))
    }
}

/// `(gp [B,Cout,OH,OW], w [Cout,Cin,kh,kw])` -> `gx [B,Cin,H,W]`; `kept` as [`Conv`]'s.
struct GradInput {
    spec: ConvSpec,
    h: usize,
    w: usize,
    kept: Option<kept::Key>,
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
        let (_, g) = Geom::new(&[b, cin, self.h, self.w], l2.dims(), self.spec)?;
        if l1.dims() != [b, g.cout, g.y.o, g.x.o] {
            bail!(
                "{}: grad {:?} is not the output of a {}x{} input",
                self.name(),
                l1.dims(),
                self.h,
                self.w
            );
        }
        let _timed = timed(self.name(), b, &g, self.spec, [l1.dims(), l2.dims()]);
        let gp = f32_data(s1, l1, self.name())?;
        let w = f32_data(s2, l2, self.name())?;
        // At stride 1 the transposed convolution, unless it would unfold `gp` (`Cout*kh*kw`
        // rows a pixel) to give fewer channels than it has: then `wᵀ · gp` (`Cin*kh*kw`
        // rows) folded back below writes far less (VGG's first layer: 27 rows a pixel
        // instead of 576).
        let transposed = match g.transposed() {
            Some(gt) if winograd::pays(b, &gt) => {
                let kept = self.kept.map(|k| k.stamped(&w));
                let w = || Cow::Owned(flipped(&g, &w));
                Some(winograd::forward(b, &gt, &gp, w, kept, Epilogue::NONE))
            }
            Some(gt) if g.cin >= g.cout => {
                Some(forward(b, &gt, &gp, &flipped(&g, &w), None, Epilogue::NONE))
            }
            _ => None,
        };
        if let Some(gx) = transposed {
            return Ok((CpuStorage::F32(gx), Shape::from((b, g.cin, g.y.n, g.x.n))));
        }
        if g.out_plane() < side_by_side::SMALL_PLANE {
            let gx = side_by_side::grad_input(b, &g, &gp, &w);
            return Ok((CpuStorage::F32(gx), Shape::from((b, g.cin, g.y.n, g.x.n))));
        }
        let (kdim, n, ow) = (g.kdim(), g.out_plane(), g.x.o);
        let wt = transpose(&w, g.cout, kdim);
        let mut gx = zeroed(b * g.cin * g.in_plane());
        let (ya, xa) = (g.y, g.x);
        // Bands of input rows, about as many rows as the forward's output bands cover.
        let band = (g.band_rows() * ya.s).clamp(1, ya.n);
        let bands = ya.n.div_ceil(band);
        let dst = SyncPtr(gx.as_mut_ptr());
        (0..b * bands)
            .into_par_iter()
            .for_each_init(Vec::new, |colgrad: &mut Vec<f32>, task| {
                let (img, r0) = (task / bands, (task % bands) * band);
                let r1 = (r0 + band).min(ya.n);
                // Output rows with a tap on input rows r0..r1: r0 <= oy*s + ky*d - p < r1.
                let oy_a = (r0 + ya.p).saturating_sub((ya.k - 1) * ya.d).div_ceil(ya.s);
                let oy_b = ((r1 - 1 + ya.p) / ya.s).min(ya.o - 1);
                if oy_a > oy_b {
                    return;
                }
                let t = (oy_b - oy_a + 1) * ow;
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
                        MatRef::row_major(&wt, 0, g.cout),
                        MatRef::row_major(&gp, img * g.cout * n + oy_a * ow, n),
                    );
                }
                // col2im into the band's own rows.
                for c in 0..g.cin {
                    for iy in r0..r1 {
                        // SAFETY: row iy of channel c of image img lies in gx, and only this task
                        // (the owner of rows r0..r1 of image img) writes it.
                        let row = unsafe {
                            std::slice::from_raw_parts_mut(
                                dst.get().add((img * g.cin + c) * g.in_plane() + iy * xa.n),
                                xa.n,
                            )
                        };
                        for ky in 0..ya.k {
                            // oy*s + ky*d - p == iy
                            let Some(v) = (iy + ya.p).checked_sub(ky * ya.d) else {
                                continue;
                            };
                            if v % ya.s != 0 || v / ya.s < oy_a || v / ya.s > oy_b {
                                continue;
                            }
                            let oy = v / ya.s;
                            for kx in 0..xa.k {
                                let src = &colgrad
                                    [((c * ya.k + ky) * xa.k + kx) * t + (oy - oy_a) * ow..][..ow];
                                let (lo, hi) = xa.valid(kx);
                                if lo >= hi {
                                    continue;
                                }
                                let ix0 = lo * xa.s + kx * xa.d - xa.p;
                                if xa.s == 1 {
                                    row[ix0..ix0 + hi - lo]
                                        .iter_mut()
                                        .zip(&src[lo..hi])
                                        .for_each(|(d, v)| *d += v);
                                } else {
                                    for (v, ix) in src[lo..hi].iter().zip((ix0..).step_by(xa.s)) {
                                        row[ix] += v;
                                    }
                                }
                            }
                        }
                    }
                }
            });
        Ok((CpuStorage::F32(gx), Shape::from((b, g.cin, ya.n, xa.n))))
    }
}

/// candle's own ops (the non-CPU fallback, test reference): uneven padding is added
/// explicitly; candle takes one stride and one dilation for both axes.
fn with_candle(
    x: &Tensor,
    w: &Tensor,
    bias: &Tensor,
    spec: ConvSpec,
    act: Activation,
) -> Result<Tensor> {
    let ConvSpec {
        stride: (sy, sx),
        padding: (py, px),
        dilation: (dy, dx),
    } = spec;
    if sy != sx || dy != dx {
        bail!("conv2d: a stride or dilation that differs per axis ({spec:?}) runs on the CPU only");
    }
    let y = if py == px {
        x.conv2d(w, py, sy, dy, 1)?
    } else {
        x.pad_with_zeros(2, py, py)?
            .pad_with_zeros(3, px, px)?
            .conv2d(w, 0, sy, dy, 1)?
    };
    let cout = w.dim(0)?;
    act.apply_tensor(&y.broadcast_add(&bias.reshape((1, cout, 1, 1))?)?)
}

/// Dense 2-D convolution with bias and activation fused: `act(conv(x, w) + bias)`.
///
/// - `x`: `[B,Cin,H,W]`; `w`: `[Cout,Cin,kh,kw]`; `bias`: `[Cout]`.
/// - `spec`: stride, zero padding and dilation per axis; one group.
/// - Returns `[B,Cout,OH,OW]` with `OH = (H + 2*py - dy*(kh-1) - 1) / sy + 1` (same for `OW`).
///
/// Differentiable w.r.t. `x`, `w` and `bias`. On the CPU everything must be f32 (any layout);
/// other devices fall back to candle's `conv2d` + `broadcast_add` + activation (one stride and
/// one dilation for both axes there).
pub fn conv2d_fused(
    x: &Tensor,
    w: &Tensor,
    bias: &Tensor,
    spec: ConvSpec,
    act: Activation,
) -> Result<Tensor> {
    let (_, g) = Geom::new(x.dims(), w.dims(), spec)?;
    if bias.dims() != [g.cout] {
        bail!("conv2d: bias must be [{}], got {:?}", g.cout, bias.dims());
    }
    if !x.device().is_cpu() {
        return with_candle(x, w, bias, spec, act);
    }
    if g.is_pointwise() {
        return pointwise_conv2d(x, &w.reshape((g.cout, g.cin))?, bias, act, None);
    }
    if act.is_smooth() {
        let y = conv2d_fused(x, w, bias, spec, Activation::Identity)?;
        return super::smooth_act(&y, act);
    }
    for (name, t) in [("x", x), ("w", w), ("bias", bias)] {
        if t.dtype() != DType::F32 {
            bail!("conv2d: {name} must be f32 on the CPU, got {:?}", t.dtype());
        }
    }
    let kept = kept::key(w, Direction::Forward);
    x.apply_op3(w, bias, Conv { spec, act, kept })
}

/// [`conv2d_fused`] with the same stride and padding on both axes, no dilation.
pub fn conv2d_bias_act(
    x: &Tensor,
    w: &Tensor,
    bias: &Tensor,
    stride: usize,
    padding: usize,
    act: Activation,
) -> Result<Tensor> {
    conv2d_fused(x, w, bias, ConvSpec::square(stride, padding), act)
}

/// [`conv2d_fused`] with `residual` added before the activation:
/// `act(conv(x, w) + bias + residual)` (the end of a ResNet block), in one pass.
///
/// - `residual`: shaped like the output, `[B,Cout,OH,OW]`; the rest as [`conv2d_fused`].
///
/// Differentiable w.r.t. `x`, `w`, `bias` and `residual`. Fused on the CPU when `bias` is not
/// tracked (inference, gradients of the input); otherwise, and on other devices, the
/// convolution, an add and the activation.
pub fn conv2d_add_act(
    x: &Tensor,
    w: &Tensor,
    bias: &Tensor,
    residual: &Tensor,
    spec: ConvSpec,
    act: Activation,
) -> Result<Tensor> {
    let (b, g) = Geom::new(x.dims(), w.dims(), spec)?;
    let out_dims = [b, g.cout, g.y.o, g.x.o];
    if residual.dims() != out_dims {
        bail!(
            "conv2d: residual must be {out_dims:?}, got {:?}",
            residual.dims()
        );
    }
    let fusable = x.device().is_cpu() && !act.is_smooth() && !bias.track_op();
    if !fusable || bias.dtype() != DType::F32 {
        let y = (conv2d_fused(x, w, bias, spec, Activation::Identity)? + residual)?;
        return activate(&y, act);
    }
    if bias.dims() != [g.cout] {
        bail!("conv2d: bias must be [{}], got {:?}", g.cout, bias.dims());
    }
    for (name, t) in [("x", x), ("w", w), ("residual", residual)] {
        if t.dtype() != DType::F32 {
            bail!("conv2d: {name} must be f32 on the CPU, got {:?}", t.dtype());
        }
    }
    let bias = bias.to_vec1::<f32>()?;
    let kept = kept::key(w, Direction::Forward);
    x.apply_op3(
        w,
        residual,
        ConvAddAct {
            spec,
            act,
            bias,
            kept,
        },
    )
}

/// The convolution alone, without bias or activation: `conv(x, w)` (`[B,Cin,H,W]` with
/// `[Cout,Cin,kh,kw]` -> `[B,Cout,OH,OW]`), by [`conv2d_fused`]'s kernel. Differentiable w.r.t.
/// `x` and `w`.
pub fn conv2d(x: &Tensor, w: &Tensor, spec: ConvSpec) -> Result<Tensor> {
    let cout = w.dims().first().copied().unwrap_or(0);
    let zero = Tensor::zeros(cout, w.dtype(), w.device())?;
    conv2d_fused(x, w, &zero, spec, Activation::Identity)
}

mod side_by_side;
mod winograd;

pub use winograd::kept::KeptKernels;

#[cfg(test)]
mod tests;
#[cfg(test)]
#[allow(
    clippy::disallowed_macros,
    reason = "the timing test prints what it measured"
)]
mod timings;
