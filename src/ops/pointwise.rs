//! 1x1 (pointwise) convolution fused with bias, activation and an optional residual:
//! `act(w · x + bias) + residual`, `[B,Cin,H,W]` -> `[B,Cout,H,W]`.
//!
//! Per image the convolution is the matrix product `w [Cout,Cin] · x_b [Cin,H*W]`. The forward
//! runs it on rayon tasks of `(image, column tile, row tile)` (so batch 1 is parallel too), each
//! a single-threaded `gemm` straight into the output buffer, and adds the bias, applies the
//! activation and adds the residual to the tile while it is in cache (see `ops::matmul`):
//! one pass over the output instead of four (product, bias + activation, residual add, plus
//! candle's broadcast of the weight).
//!
//! The backward: `gp = grad * act'(pre)`, `gx_b = wᵀ · gp_b` (the same tiled product; small
//! images side by side in one),
//! `gw = Σ_b gp_b · x_bᵀ` (the batch's columns side by side, `ops::weight_grad`), `gbias = Σ gp` per
//! channel and `gresidual = grad`.

use candle_core::{CpuStorage, CustomOp2, CustomOp3, DType, Layout, Result, Shape, Tensor, bail};
use rayon::prelude::*;

use super::matmul::{Epilogue, MatRef, batched_matmul, transpose};
use super::op_times;
use super::pointwise_direct::forward_matmul;
use super::weight_grad;
use super::{Activation, act_grad, channel_sum, f32_data};

/// Checks `x [B,Cin,H,W]` and `w [Cout,Cin]`; returns `(B, Cin, Cout, H*W)`.
fn check(x: &[usize], w: &[usize]) -> Result<(usize, usize, usize, usize)> {
    let &[b, cin, h, wd] = x else {
        bail!("pointwise_conv2d: x must be [B,Cin,H,W], got {x:?}");
    };
    let &[cout, wcin] = w else {
        bail!("pointwise_conv2d: w must be [Cout,Cin], got {w:?}");
    };
    if wcin != cin {
        bail!("pointwise_conv2d: w {w:?} does not take the {cin} channels of x {x:?}");
    }
    Ok((b, cin, cout, h * wd))
}

/// The forward op without a residual: `(x, w, bias)` -> `act(w · x + bias)`.
struct PointwiseConv {
    act: Activation,
}

impl CustomOp3 for PointwiseConv {
    fn name(&self) -> &'static str {
        "convlens-pointwise-conv2d"
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
        let (b, cin, cout, hw) = check(l1.dims(), l2.dims())?;
        let _timed = timed(self.name(), [l1.dims(), l2.dims()], b * cin * cout * hw);
        let x = f32_data(s1, l1, self.name())?;
        let w = f32_data(s2, l2, self.name())?;
        let bias = f32_data(s3, l3, self.name())?;
        let epi = Epilogue {
            bias: Some(&bias),
            act: self.act,
            ..Epilogue::NONE
        };
        let out = forward_matmul(MatRef::row_major(&w, 0, cin), cout, cin, &x, b, hw, epi);
        let dims = l1.dims();
        Ok((
            CpuStorage::F32(out),
            Shape::from((b, cout, dims[2], dims[3])),
        ))
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
        let gx = x.track_op().then(|| grad_input(&gp, w)).transpose()?;
        let gw = w.track_op().then(|| grad_weight(x, &gp)).transpose()?;
        let gb = bias.track_op().then(|| channel_sum(&gp)).transpose()?;
        Ok((gx, gw, gb))
    }
}

/// The forward op with a residual: `(x, wb, residual)` -> `act(w · x + bias) + residual`. A
/// custom op takes at most three arguments, so the bias either rides in the op (`bias`, when
/// no gradient is wanted for it: `wb` is then `w`, `[Cout, Cin]`), or is packed beside the
/// weight (`wb = [w | bias]`, `[Cout, Cin + 1]`; copying every weight on every call, so only
/// when the bias is trained).
struct PointwiseConvResidual {
    act: Activation,
    bias: Option<Vec<f32>>,
}

impl PointwiseConvResidual {
    /// Columns of `wb` that are not weights: 1 when the bias is packed beside the weight.
    fn packed(&self) -> usize {
        usize::from(self.bias.is_none())
    }
}

impl CustomOp3 for PointwiseConvResidual {
    fn name(&self) -> &'static str {
        "convlens-pointwise-conv2d-residual"
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
        let &[cout, cols] = l2.dims() else {
            bail!(
                "{}: wb must be [Cout,Cin(+1)], got {:?}",
                self.name(),
                l2.dims()
            );
        };
        let (b, cin, cout, hw) = check(l1.dims(), &[cout, cols.saturating_sub(self.packed())])?;
        let dims = l1.dims();
        let out_dims = [b, cout, dims[2], dims[3]];
        if l3.dims() != out_dims {
            bail!(
                "{}: residual {:?} is not shaped like the output {out_dims:?}",
                self.name(),
                l3.dims()
            );
        }
        let _timed = timed(self.name(), [l1.dims(), l2.dims()], b * cin * cout * hw);
        let x = f32_data(s1, l1, self.name())?;
        let wb = f32_data(s2, l2, self.name())?;
        let residual = f32_data(s3, l3, self.name())?;
        let packed_bias: Vec<f32>;
        let bias = match &self.bias {
            Some(bias) if bias.len() == cout => bias.as_slice(),
            Some(bias) => bail!("{}: {} biases for {cout} channels", self.name(), bias.len()),
            None => {
                packed_bias = (0..cout).map(|o| wb[o * cols + cin]).collect();
                &packed_bias
            }
        };
        let epi = Epilogue {
            bias: Some(bias),
            act: self.act,
            residual: Some(&residual),
            ..Epilogue::NONE
        };
        let out = forward_matmul(MatRef::row_major(&wb, 0, cols), cout, cin, &x, b, hw, epi);
        Ok((CpuStorage::F32(out), Shape::from(out_dims.to_vec())))
    }

    fn bwd(
        &self,
        x: &Tensor,
        wb: &Tensor,
        residual: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let cin = x.dim(1)?;
        let w = wb.narrow(1, 0, cin)?;
        let gp = match self.act {
            Activation::Identity => grad.clone(),
            // The mask needs the activation's output, before the residual was added: recompute
            // it (subtracting the residual from `res` could misjudge a value clamped at 6).
            act => {
                let bias = match &self.bias {
                    Some(bias) => Tensor::from_slice(bias, bias.len(), wb.device())?,
                    None => wb.narrow(1, cin, 1)?.squeeze(1)?,
                };
                let pre = x.apply_op3_no_bwd(&w, &bias, &PointwiseConv { act })?;
                act_grad(grad, &pre, act)?
            }
        };
        let gx = x.track_op().then(|| grad_input(&gp, &w)).transpose()?;
        let gwb = wb
            .track_op()
            .then(|| {
                let gw = grad_weight(x, &gp)?;
                if self.bias.is_some() {
                    return Ok(gw);
                }
                let gb = channel_sum(&gp)?;
                Tensor::cat(&[&gw, &gb.unsqueeze(1)?], 1)
            })
            .transpose()?;
        let gr = residual.track_op().then(|| grad.clone());
        Ok((gx, gwb, gr))
    }
}

/// Times an op's call (operands shaped `dims`, `macs` multiply-adds) when [`op_times`]
/// records.
fn timed(op: &'static str, dims: [&[usize]; 2], macs: usize) -> op_times::Timed {
    op_times::Timed::start(op, || format!("{:?} {:?}", dims[0], dims[1]), macs)
}

/// `(gp [B,Cout,H,W], w [Cout,Cin])` -> `wᵀ · gp_b` per image: `[B,Cin,H,W]`.
struct GradInput;

impl CustomOp2 for GradInput {
    fn name(&self) -> &'static str {
        "convlens-pointwise-grad-input"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let &[cout, cin] = l2.dims() else {
            bail!("{}: w must be [Cout,Cin], got {:?}", self.name(), l2.dims());
        };
        let (b, _, _, hw) = check(l1.dims(), &[cin, cout])?;
        let _timed = timed(self.name(), [l1.dims(), l2.dims()], b * cin * cout * hw);
        let gp = f32_data(s1, l1, self.name())?;
        let w = f32_data(s2, l2, self.name())?;
        let w_transposed = transpose(&w, cout, cin);
        let (wt, epi) = (MatRef::row_major(&w_transposed, 0, cout), Epilogue::NONE);
        let gx = if hw < GATHER_BELOW && b > 1 {
            let side_by_side =
                batched_matmul(wt, cin, cout, &gather(&gp, b, cout, hw), 1, b * hw, epi);
            scatter(&side_by_side, b, cin, hw)
        } else {
            batched_matmul(wt, cin, cout, &gp, b, hw, epi)
        };
        let dims = l1.dims();
        Ok((CpuStorage::F32(gx), Shape::from((b, cin, dims[2], dims[3]))))
    }
}

/// Images of fewer pixels than this go through the input gradient's product side by side, as
/// one `[Cout, B*H*W]` matrix: per image the product is too thin (49 columns at 7x7) and packs
/// the whole weight once per image.
const GATHER_BELOW: usize = 1024;

/// `[B, C, N]` -> `[C, B*N]`: the images side by side.
fn gather(t: &[f32], b: usize, c: usize, n: usize) -> Vec<f32> {
    let mut out = vec![0f32; b * c * n];
    out.par_chunks_mut(b * n).enumerate().for_each(|(ch, row)| {
        for (img, dst) in row.chunks_exact_mut(n).enumerate() {
            dst.copy_from_slice(&t[(img * c + ch) * n..][..n]);
        }
    });
    out
}

/// `[C, B*N]` -> `[B, C, N]`, the inverse of [`gather`].
fn scatter(t: &[f32], b: usize, c: usize, n: usize) -> Vec<f32> {
    let mut out = vec![0f32; b * c * n];
    out.par_chunks_mut(c * n)
        .enumerate()
        .for_each(|(img, image)| {
            for (ch, dst) in image.chunks_exact_mut(n).enumerate() {
                dst.copy_from_slice(&t[(ch * b + img) * n..][..n]);
            }
        });
    out
}

/// `wᵀ · gp_b` per image: the input gradient of a 1x1 convolution, `(gp [B,Cout,H,W],
/// w [Cout,Cin])` -> `[B,Cin,H,W]`.
pub(super) fn grad_input(gp: &Tensor, w: &Tensor) -> Result<Tensor> {
    gp.apply_op2_no_bwd(w, &GradInput)
}

/// `(x [B,Cin,H,W], gp [B,Cout,H,W])` -> `Σ_b gp_b · x_bᵀ`: `[Cout,Cin]`.
struct GradWeight;

impl CustomOp2 for GradWeight {
    fn name(&self) -> &'static str {
        "convlens-pointwise-grad-weight"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (b, cin, h, w) = match l1.dims() {
            &[b, cin, h, w] => (b, cin, h, w),
            d => bail!("{}: x must be [B,Cin,H,W], got {d:?}", self.name()),
        };
        let cout = l2.dims().get(1).copied().unwrap_or(0);
        if l2.dims() != [b, cout, h, w] {
            bail!(
                "{}: grad {:?} does not match x {:?}",
                self.name(),
                l2.dims(),
                l1.dims()
            );
        }
        let _timed = timed(self.name(), [l1.dims(), l2.dims()], b * cin * cout * h * w);
        let x = f32_data(s1, l1, self.name())?;
        let gp = f32_data(s2, l2, self.name())?;
        let hw = h * w;
        // Segments: runs of one image's pixels, as long as a chunk holds.
        let per = weight_grad::max_cols(cout, cin).min(hw.max(1));
        let pieces = hw.div_ceil(per);
        let lens: Vec<usize> = (0..b * pieces)
            .map(|s| per.min(hw - (s % pieces) * per))
            .collect();
        let gw = weight_grad::sum_over_segments(cout, cin, &lens, |s, a, bx| {
            let (img, c0) = (s / pieces, (s % pieces) * per);
            let t = lens[s];
            for o in 0..cout {
                a.row(o)
                    .copy_from_slice(&gp[(img * cout + o) * hw + c0..][..t]);
            }
            for i in 0..cin {
                bx.row(i)
                    .copy_from_slice(&x[(img * cin + i) * hw + c0..][..t]);
            }
        });
        Ok((CpuStorage::F32(gw), Shape::from((cout, cin))))
    }
}

/// `Σ_b gp_b · x_bᵀ`: the weight gradient of a 1x1 convolution, `(x [B,Cin,H,W],
/// gp [B,Cout,H,W])` -> `[Cout,Cin]`.
pub(super) fn grad_weight(x: &Tensor, gp: &Tensor) -> Result<Tensor> {
    x.apply_op2_no_bwd(gp, &GradWeight)
}

/// `act(w · x + bias)` without a backward (recomputing an activation in a backward pass).
pub(super) fn forward_no_grad(
    x: &Tensor,
    w: &Tensor,
    bias: &Tensor,
    act: Activation,
) -> Result<Tensor> {
    x.apply_op3_no_bwd(w, bias, &PointwiseConv { act })
}

/// candle's own ops: `act(w · x + bias) + residual` (the non-CPU fallback, test reference).
fn with_candle(
    x: &Tensor,
    w: &Tensor,
    bias: &Tensor,
    act: Activation,
    residual: Option<&Tensor>,
) -> Result<Tensor> {
    let (b, cin, h, wd) = x.dims4()?;
    let cout = w.dim(0)?;
    let y = w
        .broadcast_left(b)?
        .matmul(&x.reshape((b, cin, h * wd))?)?
        .reshape((b, cout, h, wd))?
        .broadcast_add(&bias.reshape((1, cout, 1, 1))?)?;
    let y = act.apply_tensor(&y)?;
    match residual {
        Some(r) => y + r,
        None => Ok(y),
    }
}

/// 1x1 convolution fused with bias, activation and an optional residual:
/// `act(w · x + bias) + residual`. The activation comes *before* the residual is added (as in
/// MobileNetV2 / EfficientNet blocks, whose projection is linear: `act = Identity` there).
///
/// - `x`: `[B,Cin,H,W]`; `w`: `[Cout,Cin]`; `bias`: `[Cout]`; `residual`: `[B,Cout,H,W]`.
/// - Returns `[B,Cout,H,W]`.
///
/// Differentiable w.r.t. all of them. On the CPU everything must be f32 (any layout); other
/// devices fall back to candle's `matmul` + `broadcast_add` + activation (+ add).
pub fn pointwise_conv2d(
    x: &Tensor,
    w: &Tensor,
    bias: &Tensor,
    act: Activation,
    residual: Option<&Tensor>,
) -> Result<Tensor> {
    let (b, _, cout, _) = check(x.dims(), w.dims())?;
    if bias.dims() != [cout] {
        bail!(
            "pointwise_conv2d: bias must be [Cout] with Cout = {cout}, got {:?}",
            bias.dims()
        );
    }
    if let Some(r) = residual {
        let want = [b, cout, x.dim(2)?, x.dim(3)?];
        if r.dims() != want {
            bail!(
                "pointwise_conv2d: residual must be {want:?}, got {:?}",
                r.dims()
            );
        }
    }
    if act.is_smooth() {
        let y = super::smooth_act(
            &pointwise_conv2d(x, w, bias, Activation::Identity, None)?,
            act,
        )?;
        return match residual {
            Some(r) => y + r,
            None => Ok(y),
        };
    }
    if !x.device().is_cpu() {
        return with_candle(x, w, bias, act, residual);
    }
    let named = [("x", Some(x)), ("w", Some(w)), ("bias", Some(bias))];
    for (name, t) in named.into_iter().chain([("residual", residual)]) {
        if let Some(t) = t
            && t.dtype() != DType::F32
        {
            bail!(
                "pointwise_conv2d: {name} must be f32 on the CPU, got {:?}",
                t.dtype()
            );
        }
    }
    match residual {
        None => x.apply_op3(w, bias, PointwiseConv { act }),
        Some(r) if bias.track_op() => {
            let wb = Tensor::cat(&[w, &bias.unsqueeze(1)?], 1)?;
            x.apply_op3(&wb, r, PointwiseConvResidual { act, bias: None })
        }
        Some(r) => {
            let bias = Some(bias.to_vec1()?);
            x.apply_op3(w, r, PointwiseConvResidual { act, bias })
        }
    }
}

#[cfg(test)]
mod tests {
    use candle_core::{Device, Var};

    use super::super::test_util::{
        ACTS, act_f64, central_differences, grads_or_none, rel_to_max, tensor, to_f64,
    };
    use super::*;

    /// `(B, Cin, Cout, H, W)`.
    type Case = (usize, usize, usize, usize, usize);

    const CASES: &[Case] = &[
        (1, 3, 5, 4, 4),
        (3, 4, 6, 3, 5),
        (1, 7, 2, 1, 1),
        (3, 1, 1, 2, 3),
        (1, 6, 9, 5, 3),
        (3, 5, 3, 4, 2),
    ];

    fn inputs(case: Case, seed: u64) -> Result<[Tensor; 4]> {
        let (b, cin, cout, h, w) = case;
        Ok([
            tensor(&[b, cin, h, w], seed, 2.0)?,
            tensor(&[cout, cin], seed + 1, 1.0)?,
            tensor(&[cout], seed + 2, 1.0)?,
            tensor(&[b, cout, h, w], seed + 3, 1.0)?,
        ])
    }

    /// Gradients of `sum(f(x, w, bias, residual) * r)` w.r.t. the four inputs.
    fn grads(
        f: impl Fn(&Tensor, &Tensor, &Tensor, &Tensor) -> Result<Tensor>,
        args: &[Tensor; 4],
        r: &Tensor,
    ) -> Result<[Tensor; 4]> {
        let mut g = grads_or_none(|t| f(t[0], t[1], t[2], t[3]), &args.each_ref(), r)?;
        // Without the residual argument, its variable gets no gradient.
        let res = g.pop().flatten().map_or_else(|| args[3].zeros_like(), Ok)?;
        let get = |g: Option<Tensor>| g.expect("a gradient");
        let [x, w, b]: [Option<Tensor>; 3] = g.try_into().expect("three gradients");
        Ok([get(x), get(w), get(b), res])
    }

    /// `ours` or candle's reference, with or without the residual argument.
    fn op(
        ours: bool,
        act: Activation,
        with_residual: bool,
    ) -> impl Fn(&Tensor, &Tensor, &Tensor, &Tensor) -> Result<Tensor> {
        move |x, w, b, r| {
            let r = with_residual.then_some(r);
            if ours {
                pointwise_conv2d(x, w, b, act, r)
            } else {
                with_candle(x, w, b, act, r)
            }
        }
    }

    #[test]
    fn forward_matches_candle() -> Result<()> {
        // The small cases, and larger ones that split into several column and row tiles.
        let more: &[Case] = &[
            (1, 16, 96, 40, 40),
            (3, 24, 144, 28, 28),
            (1, 320, 1280, 7, 7),
        ];
        for (i, &case) in CASES.iter().chain(more).enumerate() {
            let [x, w, bias, res] = inputs(case, 10 * i as u64)?;
            for act in ACTS {
                for with_res in [false, true] {
                    let r = with_res.then_some(&res);
                    let got = pointwise_conv2d(&x, &w, &bias, act, r)?;
                    let want = with_candle(&x, &w, &bias, act, r)?;
                    assert_eq!(got.dims(), want.dims());
                    let e = rel_to_max(&got, &want)?;
                    assert!(e <= 1e-5, "{case:?} {act:?} residual {with_res}: {e}");
                }
            }
        }
        Ok(())
    }

    #[test]
    fn forward_non_contiguous_inputs() -> Result<()> {
        let (b, cin, cout, h, w) = (3, 4, 5, 6, 7);
        let x = tensor(&[b, cin, w, h], 1, 2.0)?.transpose(2, 3)?;
        let wt = tensor(&[cin, cout], 2, 1.0)?.t()?;
        let bias = tensor(&[cout, 2], 3, 1.0)?.narrow(1, 1, 1)?.squeeze(1)?;
        let res = tensor(&[cout, b, h, w], 4, 1.0)?.transpose(0, 1)?;
        for t in [&x, &wt, &bias, &res] {
            assert!(!t.is_contiguous());
        }
        for act in ACTS {
            for r in [None, Some(&res)] {
                let got = pointwise_conv2d(&x, &wt, &bias, act, r)?;
                let want = with_candle(&x, &wt, &bias, act, r)?;
                assert!(rel_to_max(&got, &want)? <= 1e-5, "{act:?}");
            }
        }
        // A narrowed batch with an offset into its storage.
        let xn = tensor(&[5, cin, h, w], 5, 2.0)?.narrow(0, 2, 3)?;
        let got = pointwise_conv2d(&xn, &wt, &bias, Activation::Relu6, Some(&res))?;
        let want = with_candle(&xn, &wt, &bias, Activation::Relu6, Some(&res))?;
        assert!(rel_to_max(&got, &want)? <= 1e-5);
        Ok(())
    }

    #[test]
    fn bad_inputs_are_errors() -> Result<()> {
        let [x, w, bias, res] = inputs((2, 3, 4, 5, 5), 0)?;
        let act = Activation::Identity;
        assert!(pointwise_conv2d(&x.narrow(1, 0, 2)?, &w, &bias, act, None).is_err());
        assert!(pointwise_conv2d(&x, &w, &bias.narrow(0, 0, 2)?, act, None).is_err());
        assert!(pointwise_conv2d(&x, &w.unsqueeze(2)?, &bias, act, None).is_err());
        assert!(pointwise_conv2d(&x, &w, &bias, act, Some(&res.narrow(3, 0, 4)?)).is_err());
        let err = pointwise_conv2d(&x.to_dtype(DType::F64)?, &w, &bias, act, None).unwrap_err();
        assert!(err.to_string().contains("f32"), "{err}");
        Ok(())
    }

    #[test]
    fn backward_matches_candle() -> Result<()> {
        let more: &[Case] = &[(1, 16, 96, 40, 40), (3, 40, 24, 9, 9)];
        for (i, &case) in CASES.iter().chain(more).enumerate() {
            let args = inputs(case, 100 + 10 * i as u64)?;
            let (b, _, cout, h, w) = case;
            let r = tensor(&[b, cout, h, w], 7 + i as u64, 1.0)?;
            for act in ACTS {
                for with_res in [false, true] {
                    let ours = grads(op(true, act, with_res), &args, &r)?;
                    let theirs = grads(op(false, act, with_res), &args, &r)?;
                    for which in 0..if with_res { 4 } else { 3 } {
                        let e = rel_to_max(&ours[which], &theirs[which])?;
                        assert!(
                            e < 1e-5,
                            "{case:?} {act:?} residual {with_res} grad {which}: rel error {e}"
                        );
                    }
                }
            }
        }
        Ok(())
    }

    /// `sum((act(w · x + bias) + residual) * r)` in f64, by the definition.
    fn loss_f64(case: Case, act: Activation, p: &[Vec<f64>; 4], with_res: bool, r: &[f64]) -> f64 {
        let (b, cin, cout, h, w) = case;
        let hw = h * w;
        let [x, wt, bias, res] = p;
        let mut loss = 0.0;
        for img in 0..b {
            for o in 0..cout {
                for j in 0..hw {
                    let mut v = bias[o];
                    for i in 0..cin {
                        v += wt[o * cin + i] * x[(img * cin + i) * hw + j];
                    }
                    let at = (img * cout + o) * hw + j;
                    let y = act_f64(act, v) + if with_res { res[at] } else { 0.0 };
                    loss += y * r[at];
                }
            }
        }
        loss
    }

    #[test]
    fn backward_matches_finite_differences() -> Result<()> {
        let eps = 1e-6;
        for (i, &case) in CASES.iter().enumerate() {
            // Scale the inputs so that ReLU6 saturates for some outputs.
            let args = inputs(case, 200 + 10 * i as u64)?.map(|t| (t * 3.0).unwrap());
            let (b, _, cout, h, w) = case;
            let r = tensor(&[b, cout, h, w], 9 + i as u64, 1.0)?;
            let rf = to_f64(&r)?;
            for act in ACTS {
                for with_res in [false, true] {
                    let analytic = grads(op(true, act, with_res), &args, &r)?;
                    let mut params = [
                        to_f64(&args[0])?,
                        to_f64(&args[1])?,
                        to_f64(&args[2])?,
                        to_f64(&args[3])?,
                    ];
                    for (which, analytic) in
                        analytic
                            .iter()
                            .enumerate()
                            .take(if with_res { 4 } else { 3 })
                    {
                        let loss = |p: &[Vec<f64>; 4]| loss_f64(case, act, p, with_res, &rf);
                        let fd: Vec<f32> = central_differences(&mut params, which, eps, loss)
                            .into_iter()
                            .map(|v| v as f32)
                            .collect();
                        let fd = Tensor::from_vec(fd, analytic.dims(), &Device::Cpu)?;
                        let e = rel_to_max(analytic, &fd)?;
                        assert!(
                            e < 1e-4,
                            "{case:?} {act:?} residual {with_res} grad {which}: rel error {e}"
                        );
                    }
                }
            }
        }
        Ok(())
    }

    #[test]
    fn backward_through_non_contiguous_inputs() -> Result<()> {
        let (b, cin, cout, h, w) = (3, 4, 5, 6, 7);
        let args = [
            tensor(&[b, cin, w, h], 21, 2.0)?,
            tensor(&[cin, cout], 22, 1.0)?,
            tensor(&[cout, 2], 23, 1.0)?,
            tensor(&[cout, b, h, w], 24, 1.0)?,
        ];
        let r = tensor(&[b, cout, h, w], 25, 1.0)?;
        // Views of the variables: transposed, narrowed, transposed again.
        let views = |ours: bool| {
            move |x: &Tensor, w: &Tensor, bias: &Tensor, res: &Tensor| {
                let (x, w) = (x.transpose(2, 3)?, w.t()?);
                let (bias, res) = (bias.narrow(1, 1, 1)?.squeeze(1)?, res.transpose(0, 1)?);
                op(ours, Activation::Relu6, true)(&x, &w, &bias, &res)
            }
        };
        let ours = grads(views(true), &args, &r)?;
        let theirs = grads(views(false), &args, &r)?;
        for which in 0..4 {
            let e = rel_to_max(&ours[which], &theirs[which])?;
            assert!(e < 1e-5, "grad {which}: rel error {e}");
        }
        Ok(())
    }

    #[test]
    fn backward_skips_untracked_arguments() -> Result<()> {
        let case = (2, 3, 4, 5, 5);
        let [x, w, bias, res] = inputs(case, 300)?;
        let r = tensor(&[2, 4, 5, 5], 301, 1.0)?;
        let want = grads(
            op(false, Activation::Relu, true),
            &[x.clone(), w.clone(), bias.clone(), res.clone()],
            &r,
        )?;
        for with_res in [false, true] {
            // Only w is a variable.
            let wv = Var::from_tensor(&w)?;
            let rr = with_res.then_some(&res);
            let y = pointwise_conv2d(&x, wv.as_tensor(), &bias, Activation::Relu, rr)?;
            let g = y.mul(&r)?.sum_all()?.backward()?;
            assert!(g.get(&x).is_none() && g.get(&bias).is_none() && g.get(&res).is_none());
            let gw = g.get(wv.as_tensor()).expect("a weight gradient");
            assert!(rel_to_max(gw, &want[1])? < 1e-5);
            // Only x is a variable (a frozen network's input gradient: the bias rides in the
            // op instead of being packed beside the weight).
            let xv = Var::from_tensor(&x)?;
            let y = pointwise_conv2d(xv.as_tensor(), &w, &bias, Activation::Relu, rr)?;
            let g = y.mul(&r)?.sum_all()?.backward()?;
            assert!(g.get(&w).is_none() && g.get(&bias).is_none() && g.get(&res).is_none());
            let gx = g.get(xv.as_tensor()).expect("an input gradient");
            assert!(rel_to_max(gx, &want[0])? < 1e-5);
        }
        Ok(())
    }
}
