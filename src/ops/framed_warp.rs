//! lucid's transforms of one step in one differentiable op: the image framed by a constant
//! padding, warped by [`Warp`]'s bilinear affine sampling, then normalised per channel.
//!
//! [`framed_warp`] maps images `x [B,C,H,W]` to `[B,C,OH,OW]`: image `b` is embedded `pad`
//! pixels deep in a canvas of `pad_value` (`H + 2 pad` by `W + 2 pad`), output pixel
//! `(ox, oy)` samples the canvas at `maps[b].apply(ox, oy)` as [`super::affine_warp`] does with
//! [`WarpPadding::Zeros`] (zero beyond the canvas), and channel `c` of the result becomes
//! `(v - mean[c]) / std[c]`. It gives, bit for bit, the chain `x.affine(1, -pad_value)`,
//! `pad_with_zeros` on both axes, `affine(1, pad_value)`, `affine_warp`, `broadcast_sub(mean)`,
//! `broadcast_div(std)`, and the same gradient w.r.t. `x`, without the eight intermediate
//! tensors, their backward nodes and candle's gradient accumulation (each a pass over the
//! batch on one thread). The backward scatters `grad / std` through the warp's taps into a
//! per-image canvas and crops its interior.

use candle_core::{CpuStorage, CustomOp1, DType, Device, Layout, Result, Shape, Tensor, bail};
use rayon::prelude::*;

use super::warp::{Affine, Warp, WarpPadding};
use super::{Unfilled, f32_data};

/// The frame of a [`framed_warp`]: the padding before the warp and the per-channel
/// normalisation after it.
#[derive(Clone, Debug, PartialEq)]
pub struct Frame {
    /// Pixels of padding on each side of the image.
    pub pad: usize,
    /// The padding's value.
    pub pad_value: f32,
    /// Per channel, subtracted after the warp.
    pub mean: Vec<f32>,
    /// Per channel, divided by after the subtraction.
    pub std: Vec<f32>,
}

/// The op: the warp of the canvas (its `maps`, output size; zeros beyond the canvas) and the
/// frame.
#[derive(Clone, Debug)]
struct FramedWarp {
    warp: Warp,
    frame: Frame,
}

impl FramedWarp {
    /// Checks the image's shape against the maps and the frame; returns `(B, C, H, W)`.
    fn check(&self, dims: &[usize], op: &str) -> Result<(usize, usize, usize, usize)> {
        let &[b, c, h, w] = dims else {
            bail!("{op}: the image must be [B,C,H,W], got {dims:?}");
        };
        let f = &self.frame;
        if f.mean.len() != c || f.std.len() != c {
            bail!(
                "{op}: {} means and {} standard deviations for {c} channels",
                f.mean.len(),
                f.std.len()
            );
        }
        let (ch, cw) = self.canvas(h, w);
        self.warp.check(&[b, c, ch, cw], op)?;
        Ok((b, c, h, w))
    }

    /// The canvas of an `h x w` image: `(h + 2 pad, w + 2 pad)`.
    fn canvas(&self, h: usize, w: usize) -> (usize, usize) {
        (h + 2 * self.frame.pad, w + 2 * self.frame.pad)
    }

    /// `canvas [C, CH, CW]` from one image `x [C, H, W]`: the pad value around
    /// `(x - pad_value) + pad_value` (the values of candle's affine / pad / affine chain).
    fn fill(&self, x: &[f32], canvas: &mut [f32], (h, w): (usize, usize)) {
        let (p, pv) = (self.frame.pad, self.frame.pad_value);
        let (ch, cw) = self.canvas(h, w);
        for (src, dst) in x.chunks_exact(h * w).zip(canvas.chunks_exact_mut(ch * cw)) {
            dst.fill(pv);
            for (row, out) in src.chunks_exact(w).zip(dst.chunks_exact_mut(cw).skip(p)) {
                for (o, &v) in out[p..p + w].iter_mut().zip(row) {
                    *o = (v - pv) + pv;
                }
            }
        }
    }
}

impl CustomOp1 for FramedWarp {
    fn name(&self) -> &'static str {
        "convlens-framed-warp"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        let (b, c, h, w) = self.check(layout.dims(), self.name())?;
        let x = f32_data(storage, layout, self.name())?;
        let (oh, ow) = self.warp.out;
        let (ch, cw) = self.canvas(h, w);
        let (plane, cplane, out_plane) = (h * w, ch * cw, oh * ow);
        let (mean, std) = (&self.frame.mean, &self.frame.std);
        let mut y = Unfilled::new(b * c * out_plane);
        // One task per image: its canvas stays in cache, each output pixel's taps serve all
        // its channels.
        y.slots()
            .par_chunks_mut(c * out_plane)
            .enumerate()
            .for_each_init(
                || vec![0f32; c * cplane],
                |canvas, (image, out)| {
                    self.fill(&x[image * c * plane..][..c * plane], canvas, (h, w));
                    let map = &self.warp.maps[image];
                    for oy in 0..oh {
                        for ox in 0..ow {
                            let [t0, t1, t2, t3] = self.warp.taps(map, ox, oy, ch, cw);
                            let p = oy * ow + ox;
                            for (k, src) in canvas.chunks_exact(cplane).enumerate() {
                                // `affine_warp`'s sum, in its order.
                                let v = t0.1 * src[t0.0]
                                    + t1.1 * src[t1.0]
                                    + t2.1 * src[t2.0]
                                    + t3.1 * src[t3.0];
                                out[k * out_plane + p].write((v - mean[k]) / std[k]);
                            }
                        }
                    }
                },
            );
        // SAFETY: each image's task wrote every pixel of each of its channels.
        let y = unsafe { y.assume_filled() };
        Ok((CpuStorage::F32(y), Shape::from((b, c, oh, ow))))
    }

    fn bwd(&self, arg: &Tensor, _res: &Tensor, grad_res: &Tensor) -> Result<Option<Tensor>> {
        let (_, _, h, w) = arg.dims4()?;
        let op = FramedWarpGrad {
            op: self.clone(),
            input: (h, w),
        };
        Ok(Some(grad_res.apply_op1_no_bwd(&op)?))
    }
}

/// `grad [B,C,OH,OW]` -> the image gradient `[B,C,H,W]` of a [`FramedWarp`].
struct FramedWarpGrad {
    op: FramedWarp,
    input: (usize, usize),
}

impl CustomOp1 for FramedWarpGrad {
    fn name(&self) -> &'static str {
        "convlens-framed-warp-grad"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        let dims = layout.dims();
        let (h, w) = self.input;
        let (oh, ow) = self.op.warp.out;
        let &[b, c, gh, gw] = dims else {
            bail!(
                "{}: the gradient must be [B,C,OH,OW], got {dims:?}",
                self.name()
            );
        };
        if (gh, gw) != (oh, ow) {
            bail!("{}: gradient {dims:?} is not {oh}x{ow}", self.name());
        }
        self.op.check(&[b, c, h, w], self.name())?;
        let g = f32_data(storage, layout, self.name())?;
        let (ch, cw) = self.op.canvas(h, w);
        let (plane, cplane, out_plane) = (h * w, ch * cw, oh * ow);
        let (p, std) = (self.op.frame.pad, &self.op.frame.std);
        let mut gx = Unfilled::new(b * c * plane);
        // Per image: `grad / std` scattered through the taps into a zeroed canvas in
        // `affine_warp`'s order, then the canvas's interior copied out.
        gx.slots()
            .par_chunks_mut(c * plane)
            .enumerate()
            .for_each_init(
                || vec![0f32; c * cplane],
                |canvas, (image, gx)| {
                    canvas.fill(0.0);
                    let g = &g[image * c * out_plane..][..c * out_plane];
                    let map = &self.op.warp.maps[image];
                    self.op
                        .warp
                        .scatter(map, g, (ch, cw), canvas, |k, v| v / std[k]);
                    for (src, dst) in canvas.chunks_exact(cplane).zip(gx.chunks_exact_mut(plane)) {
                        for (row, out) in src.chunks_exact(cw).skip(p).zip(dst.chunks_exact_mut(w))
                        {
                            for (o, &v) in out.iter_mut().zip(&row[p..p + w]) {
                                o.write(v);
                            }
                        }
                    }
                },
            );
        // SAFETY: each image's task wrote every pixel of each of its channels.
        let gx = unsafe { gx.assume_filled() };
        Ok((CpuStorage::F32(gx), Shape::from((b, c, h, w))))
    }
}

/// Frames each image of `x` `[B,C,H,W]` by `frame.pad` pixels of `frame.pad_value`, warps the
/// canvas by its own affine map to `[B,C,OH,OW]` (`out = (OH, OW)`, zero beyond the canvas;
/// see [`super::affine_warp`]) and normalises channel `c` to `(v - mean[c]) / std[c]`.
///
/// Differentiable w.r.t. `x`. Runs on the CPU in f32; tensors on other devices or of other
/// float types are converted there and back (both conversions are differentiable).
pub fn framed_warp(
    x: &Tensor,
    maps: &[Affine],
    out: (usize, usize),
    frame: &Frame,
) -> Result<Tensor> {
    let op = FramedWarp {
        warp: Warp {
            maps: maps.to_vec(),
            out,
            padding: WarpPadding::Zeros,
        },
        frame: frame.clone(),
    };
    op.check(x.dims(), "framed_warp")?;
    if x.device().is_cpu() && x.dtype() == DType::F32 {
        return x.apply_op1(op);
    }
    x.to_device(&Device::Cpu)?
        .to_dtype(DType::F32)?
        .apply_op1(op)?
        .to_dtype(x.dtype())?
        .to_device(x.device())
}

#[cfg(test)]
mod tests {
    use candle_core::Var;

    use super::super::affine_warp;
    use super::super::test_util::tensor;
    use super::*;

    /// The chain of candle ops the op replaces (as `viz::lucid` ran it before).
    fn chain(x: &Tensor, maps: &[Affine], out: (usize, usize), f: &Frame) -> Result<Tensor> {
        let (p, pv) = (f.pad, f64::from(f.pad_value));
        let padded = x
            .affine(1.0, -pv)?
            .pad_with_zeros(2, p, p)?
            .pad_with_zeros(3, p, p)?
            .affine(1.0, pv)?;
        let c = f.mean.len();
        let mean = Tensor::from_vec(f.mean.clone(), (1, c, 1, 1), x.device())?;
        let std = Tensor::from_vec(f.std.clone(), (1, c, 1, 1), x.device())?;
        affine_warp(&padded, maps, out, WarpPadding::Zeros)?
            .broadcast_sub(&mean)?
            .broadcast_div(&std)
    }

    fn values(t: &Tensor) -> Result<Vec<f32>> {
        t.flatten_all()?.to_vec1::<f32>()
    }

    #[test]
    fn matches_the_chain_of_candle_ops_bit_for_bit() -> Result<()> {
        let (b, c, h, w, out) = (4, 3, 9, 10, (13, 12));
        let frame = Frame {
            pad: 3,
            pad_value: 0.5,
            mean: vec![0.485, 0.456, 0.406],
            std: vec![0.229, 0.224, 0.225],
        };
        // Images in (0, 1) as the sigmoid gives them.
        let x = ((tensor(&[b, c, h, w], 3, 1.0)? + 1.0)? * 0.5)?;
        let (cx, cy) = (7.5, 7.0);
        // Translations, a zoom, rotations: some taps fall beyond the canvas (16 x 15).
        let maps = [
            Affine::translate(1.5, 2.25),
            Affine::scale_about(1.0 / 0.9, cx, cy),
            Affine::rotate_about(0.17, cx, cy).after(&Affine::translate(0.3, -0.4)),
            Affine::translate(3.0, 1.0)
                .after(&Affine::rotate_about(-0.35, cx, cy))
                .after(&Affine::scale_about(0.8, cx, cy)),
        ];
        let r = tensor(&[b, c, out.0, out.1], 4, 1.0)?;
        let var = Var::from_tensor(&x)?;
        let fused = framed_warp(var.as_tensor(), &maps, out, &frame)?;
        let reference = chain(var.as_tensor(), &maps, out, &frame)?;
        assert_eq!(values(&fused)?, values(&reference)?);
        let g_fused = (&fused * &r)?.sum_all()?.backward()?;
        let g_ref = (&reference * &r)?.sum_all()?.backward()?;
        let grad = |g: &candle_core::backprop::GradStore| -> Result<Vec<f32>> {
            values(g.get(var.as_tensor()).expect("a gradient"))
        };
        let (got, want) = (grad(&g_fused)?, grad(&g_ref)?);
        assert!(want.iter().any(|v| *v != 0.0));
        assert_eq!(got, want);
        Ok(())
    }

    #[test]
    fn bad_shapes_are_errors() -> Result<()> {
        let x = tensor(&[2, 3, 4, 4], 1, 1.0)?;
        let frame = Frame {
            pad: 1,
            pad_value: 0.5,
            mean: vec![0.0; 2],
            std: vec![1.0; 3],
        };
        let maps = [Affine::IDENTITY; 2];
        let err = framed_warp(&x, &maps, (4, 4), &frame).unwrap_err();
        assert!(
            err.to_string()
                .contains("2 means and 3 standard deviations for 3 channels"),
            "{err}"
        );
        let frame = Frame {
            mean: vec![0.0; 3],
            ..frame
        };
        let err = framed_warp(&x, &maps[..1], (4, 4), &frame).unwrap_err();
        assert!(err.to_string().contains("1 affine maps for a batch of 2"));
        Ok(())
    }
}
