//! The first half of an inverted-residual (MBConv) block in one op: a 1x1 expansion, its bias
//! and activation, then a depthwise convolution, its bias and activation:
//! `act_d(dw(act_e(w_e · x + b_e), w_d) + b_d)`, `[B,Cin,H,W]` -> `[B,Chid,OH,OW]`.
//!
//! The expanded activation (`[B,Chid,H,W]`, six times the input; 150 MB for Lite0's second
//! block at batch 32) is never written to memory: each rayon task takes one image and a group
//! of hidden channels, computes their expanded planes with bias and activation into a buffer
//! that stays in L2 (the direct 1x1 kernel of [`super::pointwise_direct`], or `gemm` where the
//! CPU has none), and runs a depthwise kernel from it straight into the output: up to 112x112
//! planes on x86 the channels-last one of [`super::channels_last`] (the product stored
//! channels-last), otherwise the plane-major one of [`super::depthwise`], plane by plane.
//!
//! The backward recomputes the expanded activation (one 1x1 convolution), then chains the
//! depthwise and pointwise gradient kernels.

use candle_core::{CpuStorage, CustomOp3, DType, Layout, Result, Shape, Tensor, bail};
use rayon::prelude::*;

use super::Unfilled;
#[cfg(target_arch = "x86_64")]
use super::channels_last;
use super::depthwise::{self, PlaneConv};
use super::matmul::{MatRef, SyncPtr, WANTED_TASKS, bias_act_rows, gemm_into};
use super::pointwise_direct::{Kernel, Product};
use super::{Activation, act_grad, channel_sum, f32_data, pointwise};

/// Floats of expanded activation per task buffer (256 KiB).
const GROUP_FLOATS: usize = 65_536;

/// The largest input planes (`H*W`) that take the channels-last depthwise kernel: Lite0's
/// 112x112 ones included since the direct kernel stores its product channels-last itself (a
/// separate transpose made them 15 % slower than the plane-major kernel). On the Zen 5 EPYC
/// (2026-12-03, 2 x 30 alternated rounds) moving them here made the batch-1 forward 0.96x the
/// time and batch 32 1.05-1.09x the img/s. Larger planes were not measured. (At 112x112 a
/// group's padded buffer of 8 channels, the fewest, is 416 KB: past [`GROUP_FLOATS`], still
/// inside a 1 MiB L2.)
#[cfg(target_arch = "x86_64")]
const CHANNELS_LAST_MAX_PIXELS: usize = 112 * 112;

/// The op: `(x [B,Cin,H,W], we [Chid,Cin], wd [Chid,k*k])` with the biases `(b_e, b_d)` riding
/// in the op (`biases`) when no gradient is wanted for them, otherwise packed beside the
/// weights: `(x, [w_e | b_e] [Chid,Cin+1], [w_d | b_d] [Chid,k*k+1])` (a custom op takes at
/// most three arguments, and packing copies every weight on every call).
struct ExpandDepthwise {
    k: usize,
    stride: usize,
    padding: usize,
    expand_act: Activation,
    depthwise_act: Activation,
    biases: Option<(Vec<f32>, Vec<f32>)>,
    /// Use the plane-major depthwise kernel even where the channels-last one is available.
    #[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
    plane_major: bool,
}

impl ExpandDepthwise {
    /// Columns of each weight argument that are not weights: 1 when the biases are packed.
    fn packed(&self) -> usize {
        usize::from(self.biases.is_none())
    }

    /// Checks the shapes; returns `(B, Cin, Chid, H, W)`.
    fn check(
        &self,
        x: &[usize],
        web: &[usize],
        wdb: &[usize],
    ) -> Result<(usize, usize, usize, usize, usize)> {
        let &[b, cin, h, w] = x else {
            bail!("expand_depthwise: x must be [B,Cin,H,W], got {x:?}");
        };
        let chid = web.first().copied().unwrap_or(0);
        let extra = self.packed();
        let biases_fit = self
            .biases
            .as_ref()
            .is_none_or(|(be, bd)| be.len() == chid && bd.len() == chid);
        if web != [chid, cin + extra] || wdb != [chid, self.k * self.k + extra] || !biases_fit {
            bail!(
                "expand_depthwise: packed weights {web:?} and {wdb:?} do not fit x {x:?} and \
                 a {k}x{k} kernel",
                k = self.k
            );
        }
        Ok((b, cin, chid, h, w))
    }
}

/// The unpacked arguments of one forward call: `x [B,Cin,H,W]`, the expansion's weights (rows
/// of `we.1` floats, the first `Cin` of them weights) and biases `be [Chid]`, the depthwise
/// weights (rows of `wd.1`, the first `k*k` weights) and biases `bd [Chid]`.
struct Args<'a> {
    b: usize,
    cin: usize,
    chid: usize,
    h: usize,
    w: usize,
    x: &'a [f32],
    we: (&'a [f32], usize),
    be: &'a [f32],
    wd: (&'a [f32], usize),
    bd: &'a [f32],
}

impl Args<'_> {
    /// How many hidden channels each task takes, given how many fit its buffer (`fit`), so
    /// that there are enough tasks for every thread at small batches; a multiple of `align`.
    fn group(&self, fit: usize, align: usize) -> usize {
        let mut group = fit.clamp(1, self.chid);
        if group >= 2 * align {
            group -= group % align;
        }
        // A constant task count, so the groups (and the floats) do not depend on the machine.
        let want = WANTED_TASKS;
        if self.b * self.chid.div_ceil(group) < want {
            let spread = self
                .chid
                .div_ceil(want.div_ceil(self.b))
                .next_multiple_of(align);
            group = group.min(spread).max(1);
        }
        group
    }

    /// The direct product of expansion rows `j0..j0 + rows` of image `img` (`hw` pixels) into
    /// `dst` (`rows` planes of `hw`), with the biases `be[j0..]` and activation `act`; the
    /// channels-last path sets [`Product::pixels`] on it to store it channels-last instead.
    fn expansion(
        &self,
        img: usize,
        (j0, rows): (usize, usize),
        hw: usize,
        dst: *mut f32,
        act: Activation,
    ) -> Product {
        Product {
            m: rows,
            n: hw,
            k: self.cin,
            lhs: MatRef::row_major(self.we.0, j0 * self.we.1, self.we.1),
            x: self.x[img * self.cin * hw..].as_ptr(),
            x_rs: hw,
            dst,
            d_rs: hw,
            bias: Some(self.be[j0..j0 + rows].as_ptr()),
            act,
            residual: None,
            pixels: None,
        }
    }
}

impl ExpandDepthwise {
    /// The forward with the plane-major depthwise kernel: each task computes its group's
    /// expanded planes, with bias and activation, into a buffer (the direct kernel, or `gemm`
    /// and then the bias and activation) and convolves plane by plane into `dst`
    /// (`[B,Chid,OH,OW]`, `ohw = OH*OW`).
    fn forward_planes(&self, a: &Args<'_>, plane: &PlaneConv, ohw: usize, dst: SyncPtr) {
        let (hw, kk) = (a.h * a.w, self.k * self.k);
        // Hidden channels per task: the group's planes fit the buffer (a multiple of 4 for the
        // product's microkernel).
        let group = a.group(GROUP_FLOATS / hw, 4);
        let groups = a.chid.div_ceil(group);
        let (ea, da) = (self.expand_act, self.depthwise_act);
        let direct = expansion_kernel();
        (0..a.b * groups).into_par_iter().for_each_init(
            || (Vec::new(), plane.scratch()),
            |(hid, scratch): &mut (Vec<f32>, _), task| {
                let (img, j0) = (task / groups, (task % groups) * group);
                let rows = group.min(a.chid - j0);
                // Grown once per task; gemm overwrites it (no need to zero it again).
                if hid.len() < rows * hw {
                    hid.resize(rows * hw, 0.0);
                }
                let hid = &mut hid[..rows * hw];
                let lhs = MatRef::row_major(a.we.0, j0 * a.we.1, a.we.1);
                match direct {
                    // SAFETY: hid is `rows x hw`; lhs is rows j0.. of w_e (row stride
                    // `we.1`), x image img of x (`cin x hw`), the biases `be[j0..j0 + rows]`;
                    // the kernel is the detected one, the activation not smooth (the public
                    // op routes those around this one).
                    Some(kernel) => unsafe {
                        a.expansion(img, (j0, rows), hw, hid.as_mut_ptr(), ea)
                            .run(kernel)
                    },
                    None => {
                        // SAFETY: as above, for gemm.
                        unsafe {
                            gemm_into(
                                rows,
                                hw,
                                a.cin,
                                hid.as_mut_ptr(),
                                hw,
                                false,
                                lhs,
                                MatRef::row_major(a.x, img * a.cin * hw, hw),
                            );
                        }
                        bias_act_rows(hid, hw, &a.be[j0..j0 + rows], ea);
                    }
                }
                for (j, src) in (j0..).zip(hid.chunks_exact(hw)) {
                    // SAFETY: plane j of image img lies inside `dst`, and only this task (the
                    // owner of channels j0..j0 + rows of image img) writes it; it is zeroed
                    // before the slice is made.
                    let o = unsafe {
                        let at = dst.get().add((img * a.chid + j) * ohw);
                        at.write_bytes(0, ohw);
                        std::slice::from_raw_parts_mut(at, ohw)
                    };
                    let wd = &a.wd.0[j * a.wd.1..][..kk];
                    plane.forward(src, wd, a.bd[j], da, o, scratch);
                }
            },
        );
    }

    /// The forward with the channels-last depthwise kernel of [`channels_last`]: each task
    /// has the direct `kernel` store its group's expansion, with bias and activation, into a
    /// zero-padded channels-last buffer, and convolves 8 channels x 8 pixels at a time into
    /// `dst` (`[B,Chid,OH,OW]`, `ohw = OH*OW`). The plane-major path, which runs the same
    /// kernel, gives the same bits.
    ///
    /// # Safety
    /// The CPU must have AVX2 and FMA, and `kernel` must be the detected one; `dst` must hold
    /// `B * Chid * ohw` values.
    #[cfg(target_arch = "x86_64")]
    unsafe fn forward_channels_last(&self, kernel: Kernel, a: &Args<'_>, ohw: usize, dst: SyncPtr) {
        let (k, s, p) = (self.k, self.stride, self.padding);
        let hw = a.h * a.w;
        let padded = (a.h + 2 * p) * (a.w + 2 * p);
        let group = a.group((GROUP_FLOATS / padded / 8).max(1) * 8, 8);
        let groups = a.chid.div_ceil(group);
        let tile = channels_last::Tile::new(a.h, a.w, k, s, p, group);
        let params = tile.params(a.wd, a.bd, group);
        let (ea, da) = (self.expand_act, self.depthwise_act);
        (0..a.b * groups).into_par_iter().for_each(|task| {
            tile.with_buffers(|bufs| {
                let (img, j0) = (task / groups, (task % groups) * group);
                let rows = group.min(a.chid - j0);
                // SAFETY: the product's pixels go to the padded buffer's interior, each with
                // room for g8 channels (rows <= g8, both multiples of 8 but the last group's
                // rows); lhs is rows j0.. of w_e (row stride `we.1`), x image img of x (`cin x
                // hw`), the biases `be[j0..j0 + rows]`; the kernel is the detected one, the
                // activation not smooth (the public op routes those around this one). Then
                // AVX2 + FMA (the caller's contract); the buffer and parameters are the tile's
                // own; planes j0..j0 + rows of image img lie inside `dst` and only this task
                // writes them.
                unsafe {
                    let (padded, pixels) = tile.channels_last_target(bufs);
                    let mut product = a.expansion(img, (j0, rows), hw, padded, ea);
                    product.pixels = Some(pixels.as_ptr());
                    product.run(kernel);
                    let out = dst.get().add((img * a.chid + j0) * ohw);
                    tile.depthwise_to_planes(bufs, (&params, task % groups), rows, da, out);
                }
            })
        });
    }
}

/// The kernel of the expansion products, whatever the batch: the direct one when the CPU has
/// one. A task's product is one image's group of hidden channels, for which `gemm` would copy
/// (pack) all of the image's input again, once per group (`benches/reference/log.md`,
/// 2026-12-02, has the alternated rounds; `None`: `gemm`).
fn expansion_kernel() -> Option<Kernel> {
    Kernel::detect()
}

impl CustomOp3 for ExpandDepthwise {
    fn name(&self) -> &'static str {
        "convlens-expand-depthwise"
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
        let (b, cin, chid, h, w) = self.check(l1.dims(), l2.dims(), l3.dims())?;
        let plane = PlaneConv::new(h, w, self.k, self.stride, self.padding)?;
        let (oh, ow) = plane.out_hw();
        let x = f32_data(s1, l1, self.name())?;
        let web = f32_data(s2, l2, self.name())?;
        let wdb = f32_data(s3, l3, self.name())?;
        let (ohw, kk) = (oh * ow, self.k * self.k);
        let (we_cols, wd_cols) = (cin + self.packed(), kk + self.packed());
        let packed_biases: (Vec<f32>, Vec<f32>);
        let (be, bd) = match &self.biases {
            Some((be, bd)) => (be.as_slice(), bd.as_slice()),
            None => {
                packed_biases = (
                    (0..chid).map(|j| web[j * we_cols + cin]).collect(),
                    (0..chid).map(|j| wdb[j * wd_cols + kk]).collect(),
                );
                (packed_biases.0.as_slice(), packed_biases.1.as_slice())
            }
        };
        let shape = Shape::from((b, chid, oh, ow));
        if shape.elem_count() == 0 {
            return Ok((CpuStorage::F32(Vec::new()), shape));
        }
        let args = Args {
            b,
            cin,
            chid,
            h,
            w,
            x: &x,
            we: (&web, we_cols),
            be,
            wd: (&wdb, wd_cols),
            bd,
        };
        #[cfg(target_arch = "x86_64")]
        if let Some(kernel) = expansion_kernel()
            .filter(|_| super::has_avx2_fma() && !self.plane_major)
            .filter(|_| h * w <= CHANNELS_LAST_MAX_PIXELS)
        {
            let mut out = Unfilled::new(shape.elem_count());
            // SAFETY: AVX2 + FMA checked just above; `out` has room for `b * chid * ohw`
            // values, which the tasks write through raw pointers (every output plane, every
            // pixel), so the buffer is filled afterwards.
            let out = unsafe {
                self.forward_channels_last(kernel, &args, ohw, SyncPtr(out.ptr()));
                out.assume_filled()
            };
            return Ok((CpuStorage::F32(out), shape));
        }
        // The plane-major kernel writes through slices: each task zeroes its planes first.
        let mut out = Unfilled::new(shape.elem_count());
        self.forward_planes(&args, &plane, ohw, SyncPtr(out.ptr()));
        // SAFETY: the tasks zeroed (then wrote) every plane of every image.
        let out = unsafe { out.assume_filled() };
        Ok((CpuStorage::F32(out), shape))
    }

    /// Gradients only for the arguments that the graph tracks.
    fn bwd(
        &self,
        x: &Tensor,
        web: &Tensor,
        wdb: &Tensor,
        res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let (_, cin, chid, _, _) = self.check(x.dims(), web.dims(), wdb.dims())?;
        let (k, kk, s, p) = (self.k, self.k * self.k, self.stride, self.padding);
        let we = web.narrow(1, 0, cin)?;
        let be = match &self.biases {
            Some((be, _)) => Tensor::from_slice(be, chid, web.device())?,
            None => web.narrow(1, cin, 1)?.squeeze(1)?,
        };
        // The expanded activation, recomputed.
        let hidden = pointwise::forward_no_grad(x, &we, &be, self.expand_act)?;
        // The depthwise's pre-activation gradient, materialised only for its weights'
        // gradient (the input gradient below masks it on the fly).
        let gpd = wdb
            .track_op()
            .then(|| act_grad(grad, res, self.depthwise_act))
            .transpose()?;
        let gwdb = gpd
            .as_ref()
            .map(|gpd| {
                let gwd = depthwise::grad_weight(&hidden, gpd, s, p, k)?.reshape((chid, kk))?;
                if self.biases.is_some() {
                    return Ok(gwd);
                }
                Tensor::cat(&[&gwd, &channel_sum(gpd)?.unsqueeze(1)?], 1)
            })
            .transpose()?;
        let (mut gx, mut gweb) = (None, None);
        if x.track_op() || web.track_op() {
            let wd = wdb.narrow(1, 0, kk)?.reshape((chid, 1, k, k))?;
            let acts = (self.depthwise_act, self.expand_act);
            let gpe = depthwise::grad_input_fused_acts((grad, res), &wd, &hidden, acts, (s, p))?;
            if x.track_op() {
                gx = Some(pointwise::grad_input(&gpe, &we)?);
            }
            if web.track_op() {
                let gwe = pointwise::grad_weight(x, &gpe)?;
                gweb = Some(match self.biases {
                    Some(_) => gwe,
                    None => Tensor::cat(&[&gwe, &channel_sum(&gpe)?.unsqueeze(1)?], 1)?,
                });
            }
        }
        Ok((gx, gweb, gwdb))
    }
}

/// A 1x1 expansion and a depthwise convolution, each with its bias and activation, fused:
/// `act_d(dw(act_e(w_e · x + b_e), w_d) + b_d)`, without materialising the expanded tensor.
///
/// - `x`: `[B,Cin,H,W]`; `expand = (w_e [Chid,Cin], b_e [Chid], act_e)`;
///   `depthwise = (w_d [Chid,1,k,k], b_d [Chid], act_d)`; zero padding `padding`, square
///   `stride`.
/// - Returns `[B,Chid,OH,OW]` with `OH = (H + 2*padding - k) / stride + 1` (same for `OW`).
///
/// Equal to [`super::pointwise_conv2d`] followed by [`super::depthwise_conv2d`], and
/// differentiable w.r.t. every tensor. On the CPU everything must be f32 (any layout); other
/// devices run those two ops (which fall back to candle's).
pub fn expand_depthwise_conv2d(
    x: &Tensor,
    expand: (&Tensor, &Tensor, Activation),
    depthwise: (&Tensor, &Tensor, Activation),
    stride: usize,
    padding: usize,
) -> Result<Tensor> {
    if expand.2.is_smooth() || depthwise.2.is_smooth() {
        // Two passes: the smooth activations' backward needs their inputs.
        let h = pointwise::pointwise_conv2d(x, expand.0, expand.1, expand.2, None)?;
        let (w, b, act) = depthwise;
        return super::depthwise_conv2d(&h, w, b, stride, padding, act);
    }
    fused(x, expand, depthwise, (stride, padding), false)
}

/// [`expand_depthwise_conv2d`], with the plane-major depthwise kernel even where the
/// channels-last one is available when `plane_major` (tests compare the two).
fn fused(
    x: &Tensor,
    expand: (&Tensor, &Tensor, Activation),
    depthwise: (&Tensor, &Tensor, Activation),
    (stride, padding): (usize, usize),
    plane_major: bool,
) -> Result<Tensor> {
    let (we, be, expand_act) = expand;
    let (wd, bd, depthwise_act) = depthwise;
    let &[chid, wcin] = we.dims() else {
        bail!(
            "expand_depthwise: w_e must be [Chid,Cin], got {:?}",
            we.dims()
        );
    };
    let &[wdc, 1, k, k2] = wd.dims() else {
        bail!(
            "expand_depthwise: w_d must be [Chid,1,k,k], got {:?}",
            wd.dims()
        );
    };
    if wdc != chid || k != k2 || be.dims() != [chid] || bd.dims() != [chid] {
        bail!(
            "expand_depthwise: w_e {:?}, b_e {:?}, w_d {:?}, b_d {:?} do not agree",
            we.dims(),
            be.dims(),
            wd.dims(),
            bd.dims()
        );
    }
    if x.rank() != 4 || x.dim(1)? != wcin {
        bail!(
            "expand_depthwise: x {:?} does not fit w_e {:?}",
            x.dims(),
            we.dims()
        );
    }
    if !x.device().is_cpu() {
        let hidden = super::pointwise_conv2d(x, we, be, expand_act, None)?;
        return super::depthwise_conv2d(&hidden, wd, bd, stride, padding, depthwise_act);
    }
    for (name, t) in [("x", x), ("w_e", we), ("b_e", be), ("w_d", wd), ("b_d", bd)] {
        if t.dtype() != DType::F32 {
            bail!(
                "expand_depthwise: {name} must be f32 on the CPU, got {:?}",
                t.dtype()
            );
        }
    }
    let wd = wd.reshape((chid, k * k))?;
    let mut op = ExpandDepthwise {
        k,
        stride,
        padding,
        expand_act,
        depthwise_act,
        biases: None,
        plane_major,
    };
    if be.track_op() || bd.track_op() {
        let web = Tensor::cat(&[we, &be.unsqueeze(1)?], 1)?;
        let wdb = Tensor::cat(&[&wd, &bd.unsqueeze(1)?], 1)?;
        return x.apply_op3(&web, &wdb, op);
    }
    op.biases = Some((be.to_vec1()?, bd.to_vec1()?));
    x.apply_op3(we, &wd, op)
}

#[cfg(test)]
#[allow(
    clippy::disallowed_macros,
    reason = "timing tests print what they measured"
)]
mod tests {
    use candle_core::{Device, Var};

    use super::super::test_util::{
        act_f64, central_differences, grads_all, rel_to_max, tensor, to_f64,
    };
    use super::*;

    /// `(B, Cin, Chid, H, W, k, stride)`, padding `k / 2`.
    type Case = (usize, usize, usize, usize, usize, usize, usize);

    const CASES: &[Case] = &[
        (1, 3, 6, 6, 6, 3, 1),
        (3, 2, 5, 7, 5, 3, 2),
        (1, 4, 8, 9, 9, 5, 2),
        (3, 3, 4, 6, 7, 5, 1),
        (1, 2, 3, 1, 1, 3, 1),
    ];

    const ACT_PAIRS: [(Activation, Activation); 3] = [
        (Activation::Relu6, Activation::Relu6),
        (Activation::Identity, Activation::Relu),
        (Activation::Relu, Activation::Identity),
    ];

    /// `[x, w_e, b_e, w_d, b_d]`.
    fn inputs(case: Case, seed: u64) -> Result<[Tensor; 5]> {
        let (b, cin, chid, h, w, k, _) = case;
        Ok([
            tensor(&[b, cin, h, w], seed, 3.0)?,
            tensor(&[chid, cin], seed + 1, 1.5)?,
            tensor(&[chid], seed + 2, 1.0)?,
            tensor(&[chid, 1, k, k], seed + 3, 1.0)?,
            tensor(&[chid], seed + 4, 1.0)?,
        ])
    }

    /// candle's own ops.
    fn reference(t: &[&Tensor], case: Case, acts: (Activation, Activation)) -> Result<Tensor> {
        let (b, cin, chid, h, w, k, s) = case;
        let y = t[1]
            .broadcast_left(b)?
            .matmul(&t[0].reshape((b, cin, h * w))?)?
            .reshape((b, chid, h, w))?
            .broadcast_add(&t[2].reshape((1, chid, 1, 1))?)?;
        let y = acts.0.apply_tensor(&y)?;
        let y = y
            .conv2d(t[3], k / 2, s, 1, chid)?
            .broadcast_add(&t[4].reshape((1, chid, 1, 1))?)?;
        acts.1.apply_tensor(&y)
    }

    fn ours(t: &[&Tensor], case: Case, acts: (Activation, Activation)) -> Result<Tensor> {
        let (k, s) = (case.5, case.6);
        expand_depthwise_conv2d(t[0], (t[1], t[2], acts.0), (t[3], t[4], acts.1), s, k / 2)
    }

    /// [`ours`] with the plane-major depthwise kernel.
    fn ours_plane_major(
        t: &[&Tensor],
        case: Case,
        acts: (Activation, Activation),
    ) -> Result<Tensor> {
        let (k, s) = (case.5, case.6);
        fused(
            t[0],
            (t[1], t[2], acts.0),
            (t[3], t[4], acts.1),
            (s, k / 2),
            true,
        )
    }

    /// Gradients of `sum(f(args) * r)` w.r.t. every argument.
    fn grads(
        f: impl Fn(&[&Tensor]) -> Result<Tensor>,
        args: &[Tensor; 5],
        r: &Tensor,
    ) -> Result<Vec<Tensor>> {
        grads_all(f, &args.each_ref(), r)
    }

    fn out_dims(case: Case) -> [usize; 4] {
        let (b, _, chid, h, w, k, s) = case;
        let o = |n: usize| (n + 2 * (k / 2) - k) / s + 1;
        [b, chid, o(h), o(w)]
    }

    #[test]
    fn forward_matches_candle() -> Result<()> {
        // The small cases, and Lite0-like ones with several channel groups.
        let more: &[Case] = &[
            (1, 16, 96, 40, 40, 3, 2),
            (2, 24, 144, 28, 28, 5, 1),
            (1, 40, 92, 14, 14, 5, 1),
            (2, 19, 101, 7, 9, 3, 1),
            (1, 16, 96, 112, 112, 3, 2),
            (1, 5, 20, 67, 90, 5, 1),
        ];
        for (i, &case) in CASES.iter().chain(more).enumerate() {
            let args = inputs(case, 10 * i as u64)?;
            let t: Vec<&Tensor> = args.iter().collect();
            for acts in ACT_PAIRS {
                let got = ours(&t, case, acts)?;
                let want = reference(&t, case, acts)?;
                assert_eq!(got.dims(), want.dims(), "{case:?}");
                let e = rel_to_max(&got, &want)?;
                assert!(e <= 1e-5, "{case:?} {acts:?}: {e}");
                // Both depthwise kernels (where the channels-last one runs), bit for bit.
                let planes = ours_plane_major(&t, case, acts)?;
                let (a, b) = (
                    got.flatten_all()?.to_vec1::<f32>()?,
                    planes.flatten_all()?.to_vec1::<f32>()?,
                );
                assert!(
                    a.iter().zip(&b).all(|(a, b)| a.to_bits() == b.to_bits()),
                    "{case:?} {acts:?}: the kernels differ"
                );
            }
        }
        Ok(())
    }

    #[test]
    fn forward_non_contiguous_inputs() -> Result<()> {
        let case = (3, 3, 5, 7, 5, 3, 2);
        let args = inputs(case, 1)?;
        // Transposed / narrowed copies holding the same values.
        let x = args[0].transpose(2, 3)?.contiguous()?.transpose(2, 3)?;
        let we = args[1].t()?.contiguous()?.t()?;
        let be = Tensor::stack(&[&args[2], &args[2]], 1)?
            .narrow(1, 1, 1)?
            .squeeze(1)?;
        for t in [&x, &we, &be] {
            assert!(!t.is_contiguous());
        }
        let t = [&x, &we, &be, &args[3], &args[4]];
        let acts = (Activation::Relu6, Activation::Relu6);
        let e = rel_to_max(&ours(&t, case, acts)?, &reference(&t, case, acts)?)?;
        assert!(e <= 1e-5, "{e}");
        Ok(())
    }

    #[test]
    fn bad_inputs_are_errors() -> Result<()> {
        let case = (1, 3, 6, 6, 6, 3, 1);
        let [x, we, be, wd, bd] = inputs(case, 0)?;
        let a = Activation::Relu6;
        let run = |x: &Tensor, we: &Tensor, wd: &Tensor, bd: &Tensor| {
            expand_depthwise_conv2d(x, (we, &be, a), (wd, bd, a), 1, 1)
        };
        assert!(run(&x.narrow(1, 0, 2)?, &we, &wd, &bd).is_err());
        assert!(run(&x, &we, &wd.narrow(0, 0, 5)?, &bd).is_err());
        assert!(run(&x, &we, &wd, &bd.narrow(0, 0, 5)?).is_err());
        assert!(run(&x, &we.unsqueeze(2)?, &wd, &bd).is_err());
        assert!(run(&x.to_dtype(DType::F64)?, &we, &wd, &bd).is_err());
        Ok(())
    }

    #[test]
    fn backward_matches_candle() -> Result<()> {
        let more: &[Case] = &[(1, 16, 96, 20, 20, 3, 2)];
        for (i, &case) in CASES.iter().chain(more).enumerate() {
            let args = inputs(case, 100 + 10 * i as u64)?;
            let r = tensor(&out_dims(case), 7 + i as u64, 1.0)?;
            for acts in ACT_PAIRS {
                let a = grads(|t| ours(t, case, acts), &args, &r)?;
                let b = grads(|t| reference(t, case, acts), &args, &r)?;
                for which in 0..5 {
                    let e = rel_to_max(&a[which], &b[which])?;
                    assert!(e < 1e-5, "{case:?} {acts:?} grad {which}: rel error {e}");
                }
            }
        }
        Ok(())
    }

    /// `sum(y * r)` in f64, by the definition.
    fn loss_f64(case: Case, acts: (Activation, Activation), p: &[Vec<f64>], r: &[f64]) -> f64 {
        let (b, cin, chid, h, w, k, s) = case;
        let pad = k / 2;
        let [_, _, oh, ow] = out_dims(case);
        let (x, we, be, wd, bd) = (&p[0], &p[1], &p[2], &p[3], &p[4]);
        let hidden = |img: usize, j: usize, y: usize, xx: usize| {
            let mut v = be[j];
            for c in 0..cin {
                v += we[j * cin + c] * x[((img * cin + c) * h + y) * w + xx];
            }
            act_f64(acts.0, v)
        };
        let mut loss = 0.0;
        for img in 0..b {
            for j in 0..chid {
                for oy in 0..oh {
                    for ox in 0..ow {
                        let mut v = bd[j];
                        for ky in 0..k {
                            for kx in 0..k {
                                let iy = (oy * s + ky) as isize - pad as isize;
                                let ix = (ox * s + kx) as isize - pad as isize;
                                if iy >= 0 && ix >= 0 && (iy as usize) < h && (ix as usize) < w {
                                    v += wd[(j * k + ky) * k + kx]
                                        * hidden(img, j, iy as usize, ix as usize);
                                }
                            }
                        }
                        loss += act_f64(acts.1, v) * r[((img * chid + j) * oh + oy) * ow + ox];
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
            let args = inputs(case, 200 + 10 * i as u64)?;
            let r = tensor(&out_dims(case), 9 + i as u64, 1.0)?;
            let rf = to_f64(&r)?;
            for acts in ACT_PAIRS {
                let analytic = grads(|t| ours(t, case, acts), &args, &r)?;
                let mut params = args.iter().map(to_f64).collect::<Result<Vec<_>>>()?;
                for (which, analytic) in analytic.iter().enumerate().take(5) {
                    let loss = |p: &Vec<Vec<f64>>| loss_f64(case, acts, p, &rf);
                    let fd: Vec<f32> = central_differences(&mut params, which, eps, loss)
                        .into_iter()
                        .map(|v| v as f32)
                        .collect();
                    let fd = Tensor::from_vec(fd, analytic.dims(), &Device::Cpu)?;
                    let e = rel_to_max(analytic, &fd)?;
                    assert!(e < 1e-4, "{case:?} {acts:?} grad {which}: rel error {e}");
                }
            }
        }
        Ok(())
    }

    /// `ours` or `reference`.
    type Impl = fn(&[&Tensor], Case, (Activation, Activation)) -> Result<Tensor>;

    #[test]
    fn backward_through_non_contiguous_inputs() -> Result<()> {
        let case = (3, 3, 5, 7, 5, 3, 2);
        let (b, cin, chid, h, w, k, _) = case;
        // The variables, laid out so that the op sees transposed views of them.
        let args = [
            tensor(&[b, cin, w, h], 31, 3.0)?,
            tensor(&[cin, chid], 32, 1.5)?,
            tensor(&[chid], 33, 1.0)?,
            tensor(&[chid, 1, k, k], 34, 1.0)?,
            tensor(&[chid], 35, 1.0)?,
        ];
        let r = tensor(&out_dims(case), 36, 1.0)?;
        let acts = (Activation::Relu6, Activation::Relu6);
        let views = |f: Impl| {
            move |t: &[&Tensor]| {
                let (x, we, wd) = (t[0].transpose(2, 3)?, t[1].t()?, t[3].transpose(2, 3)?);
                assert!(!x.is_contiguous() && !we.is_contiguous() && !wd.is_contiguous());
                f(&[&x, &we, t[2], &wd, t[4]], case, acts)
            }
        };
        let a = grads(views(ours), &args, &r)?;
        let b = grads(views(reference), &args, &r)?;
        for which in 0..5 {
            let e = rel_to_max(&a[which], &b[which])?;
            assert!(e < 1e-5, "grad {which}: rel error {e}");
        }
        Ok(())
    }

    #[test]
    fn backward_skips_untracked_arguments() -> Result<()> {
        let case = (2, 3, 4, 6, 6, 3, 2);
        let args = inputs(case, 41)?;
        let r = tensor(&out_dims(case), 42, 1.0)?;
        let acts = (Activation::Relu6, Activation::Relu6);
        let want = grads(|t| reference(t, case, acts), &args, &r)?;
        // Only x is a variable (gradient ascent on the input of a frozen network), then only
        // the depthwise weight.
        for which in [0, 3] {
            let v = Var::from_tensor(&args[which])?;
            let mut t: Vec<&Tensor> = args.iter().collect();
            t[which] = v.as_tensor();
            let g = ours(&t, case, acts)?.mul(&r)?.sum_all()?.backward()?;
            for (i, a) in args.iter().enumerate() {
                assert!(i == which || g.get(a).is_none());
            }
            let got = g.get(v.as_tensor()).expect("a gradient");
            assert!(rel_to_max(got, &want[which])? < 1e-5);
        }
        Ok(())
    }

    /// Throwaway timing of Lite0's blocks at batch 32 and 1, fused and unfused (best of
    /// several runs): `cargo test --release --lib ops::expand_depthwise -- --ignored
    /// --nocapture`.
    #[test]
    #[ignore]
    fn timing() -> Result<()> {
        crate::ops::test_util::keep_freed_memory();
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
        // "best wall-clock ms (mean CPU ms)" per call.
        let best = |n: usize, f: &dyn Fn() -> Result<Tensor>| -> Result<String> {
            f()?;
            let (mut best, cpu0) = (f64::INFINITY, cpu_ms());
            for _ in 0..n {
                let t = std::time::Instant::now();
                std::hint::black_box(f()?);
                best = best.min(t.elapsed().as_secs_f64() * 1e3);
            }
            Ok(format!(
                "{best:.2} ms (cpu {:.2})",
                (cpu_ms() - cpu0) / n as f64
            ))
        };
        for (cin, cout, hw) in [
            (144, 24, 56),
            (96, 24, 56),
            (32, 16, 112),
            (240, 40, 28),
            (672, 112, 14),
        ] {
            for b in [32, 1] {
                let x = tensor(&[b, cin, hw, hw], 1, 1.0)?;
                let w = tensor(&[cout, cin], 2, 1.0)?;
                let bias = tensor(&[cout], 3, 1.0)?;
                let n = if b == 1 { 400 } else { 20 };
                let t = best(n, &|| {
                    super::super::pointwise_conv2d(&x, &w, &bias, Activation::Identity, None)
                })?;
                println!("B={b} pointwise {cin}->{cout} @{hw}: {t}");
            }
        }
        let acts = (Activation::Relu6, Activation::Relu6);
        for (cin, chid, hw, k, s) in [
            (16, 96, 112, 3, 2),
            (24, 144, 56, 3, 1),
            (40, 240, 28, 5, 1),
            (112, 672, 14, 5, 1),
            (192, 1152, 7, 5, 1),
        ] {
            for b in [32, 1] {
                let case = (b, cin, chid, hw, hw, k, s);
                let args = inputs(case, 1)?;
                let t: Vec<&Tensor> = args.iter().collect();
                let n = if b == 1 { 400 } else { 20 };
                let fused = best(n, &|| ours(&t, case, acts))?;
                let split = best(n, &|| {
                    let h = super::super::pointwise_conv2d(t[0], t[1], t[2], acts.0, None)?;
                    super::super::depthwise_conv2d(&h, t[3], t[4], s, k / 2, acts.1)
                })?;
                println!("B={b} {cin}->{chid} @{hw} k{k} s{s}: fused {fused}, split {split}");
            }
        }
        Ok(())
    }
}
