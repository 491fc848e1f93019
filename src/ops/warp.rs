//! Affine warps of images with bilinear sampling, differentiable w.r.t. the image: the random
//! jitter, scale and rotation of feature visualisation (lucid's `standard_transforms`) in one
//! resampling.
//!
//! [`affine_warp`] maps `x [B,C,H,W]` to `[B,C,OH,OW]`: output pixel `(ox, oy)` of image `b`
//! reads the input at `(sx, sy) = maps[b].apply(ox, oy)`, pixel centres at integer
//! coordinates, bilinearly from its four neighbours; a neighbour outside the input counts as
//! zero ([`WarpPadding::Zeros`]) or as the nearest edge pixel ([`WarpPadding::Border`]). The
//! backward pass scatters each output gradient back to the same four neighbours with the same
//! weights (the transform parameters get no gradient).

use candle_core::{CpuStorage, CustomOp1, DType, Device, Layout, Result, Shape, Tensor, bail};
use rayon::prelude::*;

use super::f32_data;

/// An affine map of pixel coordinates, `(x, y) -> (a x + b y + c, d x + e y + f)` for
/// `m = [a, b, c, d, e, f]`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Affine {
    /// `[a, b, c, d, e, f]`, row-major `2 x 3`.
    pub m: [f64; 6],
}

impl Affine {
    /// The identity.
    pub const IDENTITY: Affine = Affine {
        m: [1.0, 0.0, 0.0, 0.0, 1.0, 0.0],
    };

    /// `(x, y) -> (x + dx, y + dy)`.
    pub fn translate(dx: f64, dy: f64) -> Self {
        Affine {
            m: [1.0, 0.0, dx, 0.0, 1.0, dy],
        }
    }

    /// Scaling by `s` about `(cx, cy)`.
    pub fn scale_about(s: f64, cx: f64, cy: f64) -> Self {
        Affine {
            m: [s, 0.0, cx - s * cx, 0.0, s, cy - s * cy],
        }
    }

    /// Rotation by `radians` about `(cx, cy)`, in the `x`-right, `y`-down frame of an image:
    /// positive angles turn points clockwise as displayed, so a warp sampling through it turns
    /// the picture counterclockwise.
    pub fn rotate_about(radians: f64, cx: f64, cy: f64) -> Self {
        let (s, c) = radians.sin_cos();
        Affine {
            m: [c, -s, cx - c * cx + s * cy, s, c, cy - s * cx - c * cy],
        }
    }

    /// `self` after `first`: `p -> self(first(p))`.
    pub fn after(&self, first: &Affine) -> Self {
        let [a, b, c, d, e, f] = self.m;
        let [p, q, r, s, t, u] = first.m;
        Affine {
            m: [
                a * p + b * s,
                a * q + b * t,
                a * r + b * u + c,
                d * p + e * s,
                d * q + e * t,
                d * r + e * u + f,
            ],
        }
    }

    /// The map applied to `(x, y)`.
    pub fn apply(&self, x: f64, y: f64) -> (f64, f64) {
        let [a, b, c, d, e, f] = self.m;
        (a * x + b * y + c, d * x + e * y + f)
    }
}

/// What a bilinear tap outside the input reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WarpPadding {
    /// Zero.
    Zeros,
    /// The nearest pixel on the input's edge.
    Border,
}

/// `v.floor()` without the call into libm that `f64::floor` is on a baseline x86-64 target
/// (the warp takes two per output pixel); the same value for every `v`.
#[inline]
fn floor(v: f64) -> f64 {
    if v.is_nan() || v.abs() >= 4.0e18 {
        return v.floor(); // NaN, infinities and values beyond i64
    }
    let t = v as i64 as f64;
    if t > v { t - 1.0 } else { t }
}

/// The geometry shared by the forward and backward kernels.
#[derive(Clone, Debug)]
pub(super) struct Warp {
    pub maps: Vec<Affine>,
    pub out: (usize, usize),
    pub padding: WarpPadding,
}

impl Warp {
    /// The (up to) four `(input index, weight)` taps of output `(ox, oy)` under `map` on an
    /// `h x w` input; taps outside read zero (dropped) or are clamped to the edge.
    #[inline(always)]
    pub fn taps(
        &self,
        map: &Affine,
        ox: usize,
        oy: usize,
        h: usize,
        w: usize,
    ) -> [(usize, f32); 4] {
        let (sx, sy) = map.apply(ox as f64, oy as f64);
        let (x0, y0) = (floor(sx), floor(sy));
        let (fx, fy) = ((sx - x0) as f32, (sy - y0) as f32);
        let weights = [
            (1.0 - fx) * (1.0 - fy),
            fx * (1.0 - fy),
            (1.0 - fx) * fy,
            fx * fy,
        ];
        // All four inside (nearly every pixel of a jitter/scale/rotation): no per-tap tests.
        if x0 >= 0.0 && y0 >= 0.0 && x0 + 1.0 < w as f64 && y0 + 1.0 < h as f64 {
            let i = y0 as usize * w + x0 as usize;
            return [
                (i, weights[0]),
                (i + 1, weights[1]),
                (i + w, weights[2]),
                (i + w + 1, weights[3]),
            ];
        }
        self.edge_taps(x0, y0, weights, h, w)
    }

    /// [`Warp::taps`] where a tap may fall outside: each one tested.
    #[inline(never)]
    fn edge_taps(
        &self,
        x0: f64,
        y0: f64,
        weights: [f32; 4],
        h: usize,
        w: usize,
    ) -> [(usize, f32); 4] {
        let mut out = [(0usize, 0f32); 4];
        for (t, (dx, dy)) in [(0.0, 0.0), (1.0, 0.0), (0.0, 1.0), (1.0, 1.0)]
            .into_iter()
            .enumerate()
        {
            let (x, y) = (x0 + dx, y0 + dy);
            let inside = x >= 0.0 && y >= 0.0 && x < w as f64 && y < h as f64;
            out[t] = match (inside, self.padding) {
                (true, _) => (y as usize * w + x as usize, weights[t]),
                (false, WarpPadding::Zeros) => (0, 0.0),
                (false, WarpPadding::Border) => {
                    let cx = x.clamp(0.0, (w - 1) as f64) as usize;
                    let cy = y.clamp(0.0, (h - 1) as f64) as usize;
                    (cy * w + cx, weights[t])
                }
            };
        }
        out
    }

    /// Adds one image's output gradient `g` `[C, OH*OW]` through `map`'s taps onto `gx`
    /// `[C, h*w]`, the image the warp sampled; channel `k`'s values pass through `scale(k, v)`
    /// first. Each output pixel's taps are computed once for all channels, and every channel's
    /// scatter runs in the order a per-plane loop would.
    pub fn scatter(
        &self,
        map: &Affine,
        g: &[f32],
        (h, w): (usize, usize),
        gx: &mut [f32],
        scale: impl Fn(usize, f32) -> f32,
    ) {
        let (oh, ow) = self.out;
        let out_plane = oh * ow;
        for oy in 0..oh {
            for ox in 0..ow {
                let taps = self.taps(map, ox, oy, h, w);
                let p = oy * ow + ox;
                for (k, gx) in gx.chunks_exact_mut(h * w).enumerate() {
                    let go = scale(k, g[k * out_plane + p]);
                    for &(i, wt) in &taps {
                        gx[i] += wt * go;
                    }
                }
            }
        }
    }

    pub fn check(&self, dims: &[usize], op: &str) -> Result<(usize, usize, usize, usize)> {
        let &[b, c, h, w] = dims else {
            bail!("{op}: the image must be [B,C,H,W], got {dims:?}");
        };
        if self.maps.len() != b {
            bail!("{op}: {} affine maps for a batch of {b}", self.maps.len());
        }
        if h == 0 || w == 0 || self.out.0 == 0 || self.out.1 == 0 {
            bail!("{op}: cannot warp {h}x{w} to {}x{}", self.out.0, self.out.1);
        }
        Ok((b, c, h, w))
    }
}

impl CustomOp1 for Warp {
    fn name(&self) -> &'static str {
        "convlens-affine-warp"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        let (b, c, h, w) = self.check(layout.dims(), self.name())?;
        let x = f32_data(storage, layout, self.name())?;
        let (oh, ow) = self.out;
        let (plane, out_plane) = (h * w, oh * ow);
        let mut y = vec![0f32; b * c * out_plane];
        // One task per image: each output pixel's taps serve all its channels.
        y.par_chunks_mut(c * out_plane)
            .enumerate()
            .for_each(|(image, out)| {
                let map = &self.maps[image];
                let x = &x[image * c * plane..][..c * plane];
                for oy in 0..oh {
                    for ox in 0..ow {
                        let taps = self.taps(map, ox, oy, h, w);
                        let p = oy * ow + ox;
                        for (ch, x) in x.chunks_exact(plane).enumerate() {
                            out[ch * out_plane + p] = taps.iter().map(|&(i, wt)| wt * x[i]).sum();
                        }
                    }
                }
            });
        Ok((CpuStorage::F32(y), Shape::from((b, c, oh, ow))))
    }

    fn bwd(&self, arg: &Tensor, _res: &Tensor, grad_res: &Tensor) -> Result<Option<Tensor>> {
        let (_, _, h, w) = arg.dims4()?;
        let op = WarpGrad {
            warp: self.clone(),
            input: (h, w),
        };
        Ok(Some(grad_res.apply_op1_no_bwd(&op)?))
    }
}

/// `grad [B,C,OH,OW]` -> the input gradient `[B,C,H,W]` of a [`Warp`].
struct WarpGrad {
    warp: Warp,
    input: (usize, usize),
}

impl CustomOp1 for WarpGrad {
    fn name(&self) -> &'static str {
        "convlens-affine-warp-grad"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        let dims = layout.dims();
        let (oh, ow) = self.warp.out;
        let (h, w) = self.input;
        let &[b, c, gh, gw] = dims else {
            bail!(
                "{}: the gradient must be [B,C,OH,OW], got {dims:?}",
                self.name()
            );
        };
        if (gh, gw) != (oh, ow) || self.warp.maps.len() != b {
            bail!(
                "{}: gradient {dims:?} does not fit {} maps to {oh}x{ow}",
                self.name(),
                self.warp.maps.len()
            );
        }
        let g = f32_data(storage, layout, self.name())?;
        let (plane, out_plane) = (h * w, oh * ow);
        let mut gx = vec![0f32; b * c * plane];
        // One task per image.
        gx.par_chunks_mut(c * plane)
            .enumerate()
            .for_each(|(image, gx)| {
                let g = &g[image * c * out_plane..][..c * out_plane];
                self.warp
                    .scatter(&self.warp.maps[image], g, (h, w), gx, |_, v| v);
            });
        Ok((CpuStorage::F32(gx), Shape::from((b, c, h, w))))
    }
}

/// Warps each image of `x` `[B,C,H,W]` by its own affine map to `[B,C,OH,OW]` (`out =
/// (OH, OW)`): output pixel `(ox, oy)` of image `b` samples the input bilinearly at
/// `maps[b].apply(ox, oy)` (input pixel centres at integer coordinates), with `padding` outside.
///
/// Differentiable w.r.t. `x`. Runs on the CPU in f32; tensors on other devices or of other
/// float types are converted there and back (both conversions are differentiable).
pub fn affine_warp(
    x: &Tensor,
    maps: &[Affine],
    out: (usize, usize),
    padding: WarpPadding,
) -> Result<Tensor> {
    let op = Warp {
        maps: maps.to_vec(),
        out,
        padding,
    };
    op.check(x.dims(), "affine_warp")?;
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

    use super::super::test_util::{central_differences, max_abs_diff, tensor, to_f64};
    use super::*;

    /// Bilinear sampling the textbook way, in f64: `sum over the 4 neighbours of
    /// (1-|dx|)(1-|dy|) * value` with the padding rule.
    fn naive(
        x: &[f64],
        dims: [usize; 4],
        maps: &[Affine],
        out: (usize, usize),
        pad: WarpPadding,
    ) -> Vec<f64> {
        let [b, c, h, w] = dims;
        let mut y = Vec::new();
        for bi in 0..b {
            for ci in 0..c {
                let plane = &x[(bi * c + ci) * h * w..][..h * w];
                let read = |xx: i64, yy: i64| -> f64 {
                    let inside = xx >= 0 && yy >= 0 && xx < w as i64 && yy < h as i64;
                    match (inside, pad) {
                        (true, _) => plane[yy as usize * w + xx as usize],
                        (false, WarpPadding::Zeros) => 0.0,
                        (false, WarpPadding::Border) => {
                            plane[yy.clamp(0, h as i64 - 1) as usize * w
                                + xx.clamp(0, w as i64 - 1) as usize]
                        }
                    }
                };
                for oy in 0..out.0 {
                    for ox in 0..out.1 {
                        let (sx, sy) = maps[bi].apply(ox as f64, oy as f64);
                        let (x0, y0) = (sx.floor() as i64, sy.floor() as i64);
                        let mut v = 0.0;
                        for yy in y0..=y0 + 1 {
                            for xx in x0..=x0 + 1 {
                                let wt =
                                    (1.0 - (sx - xx as f64).abs()) * (1.0 - (sy - yy as f64).abs());
                                v += wt * read(xx, yy);
                            }
                        }
                        y.push(v);
                    }
                }
            }
        }
        y
    }

    fn maps_for(b: usize, h: usize, w: usize) -> Vec<Affine> {
        let (cx, cy) = ((w as f64 - 1.0) / 2.0, (h as f64 - 1.0) / 2.0);
        let all = [
            Affine::IDENTITY,
            Affine::translate(1.3, -0.6),
            Affine::rotate_about(0.3, cx, cy).after(&Affine::scale_about(0.9, cx, cy)),
            Affine::translate(2.0, 3.0)
                .after(&Affine::rotate_about(-0.1, cx, cy))
                .after(&Affine::scale_about(1.1, cx, cy)),
        ];
        (0..b).map(|i| all[i % all.len()]).collect()
    }

    #[test]
    fn forward_matches_naive_sampling() -> Result<()> {
        for &(b, c, h, w, oh, ow) in &[(4, 3, 9, 8, 9, 8), (2, 2, 7, 10, 5, 12), (3, 1, 6, 6, 8, 4)]
        {
            let x = tensor(&[b, c, h, w], (h * w) as u64, 1.0)?;
            let maps = maps_for(b, h, w);
            for pad in [WarpPadding::Zeros, WarpPadding::Border] {
                let got = to_f64(&affine_warp(&x, &maps, (oh, ow), pad)?)?;
                let want = naive(&to_f64(&x)?, [b, c, h, w], &maps, (oh, ow), pad);
                let err = got
                    .iter()
                    .zip(&want)
                    .map(|(a, b)| (a - b).abs())
                    .fold(0.0, f64::max);
                assert!(err < 1e-5, "{b}x{c}x{h}x{w} -> {oh}x{ow} {pad:?}: {err}");
            }
        }
        Ok(())
    }

    #[test]
    fn integer_translation_is_a_shift_and_identity_a_copy() -> Result<()> {
        let x = tensor(&[1, 2, 5, 6], 1, 1.0)?;
        let same = affine_warp(&x, &[Affine::IDENTITY], (5, 6), WarpPadding::Zeros)?;
        assert_eq!(max_abs_diff(&same, &x)?, 0.0);
        // Output (ox, oy) reads input (ox + 2, oy + 1): a crop at (2, 1), zeros past the edge.
        let shifted = affine_warp(
            &x,
            &[Affine::translate(2.0, 1.0)],
            (5, 6),
            WarpPadding::Zeros,
        )?;
        let crop = x.narrow(2, 1, 4)?.narrow(3, 2, 4)?;
        assert_eq!(
            max_abs_diff(&shifted.narrow(2, 0, 4)?.narrow(3, 0, 4)?, &crop)?,
            0.0
        );
        let tail = shifted
            .narrow(3, 4, 2)?
            .abs()?
            .sum_all()?
            .to_scalar::<f32>()?;
        assert_eq!(tail, 0.0);
        // A quarter turn about the centre of a square image permutes its pixels.
        let q = Affine::rotate_about(std::f64::consts::FRAC_PI_2, 2.0, 2.0);
        let x = tensor(&[1, 1, 5, 5], 2, 1.0)?;
        let r = affine_warp(&x, &[q], (5, 5), WarpPadding::Zeros)?;
        let (xs, rs) = (to_f64(&x)?, to_f64(&r)?);
        // (ox, oy) reads (cx - (oy - cy), cy + (ox - cx)) = (4 - oy, ox).
        for oy in 0..5 {
            for ox in 0..5 {
                assert!((rs[oy * 5 + ox] - xs[ox * 5 + 4 - oy]).abs() < 1e-6);
            }
        }
        Ok(())
    }

    #[test]
    fn composition_applies_the_first_map_first() {
        let s = Affine::scale_about(2.0, 0.0, 0.0);
        let t = Affine::translate(1.0, 0.0);
        assert_eq!(t.after(&s).apply(3.0, 1.0), (7.0, 2.0));
        assert_eq!(s.after(&t).apply(3.0, 1.0), (8.0, 2.0));
    }

    #[test]
    fn backward_matches_finite_differences() -> Result<()> {
        // Sample positions away from pixel boundaries (a translate by .37, rotations), where
        // bilinear sampling is linear in the image: finite differences are exact up to f64.
        let (b, c, h, w, oh, ow) = (4, 2, 6, 7, 5, 8);
        let x = tensor(&[b, c, h, w], 5, 1.0)?;
        let maps = maps_for(b, h, w);
        let r = tensor(&[b, c, oh, ow], 6, 1.0)?;
        for pad in [WarpPadding::Zeros, WarpPadding::Border] {
            let var = Var::from_tensor(&x)?;
            let loss = (affine_warp(var.as_tensor(), &maps, (oh, ow), pad)? * &r)?.sum_all()?;
            let grads = loss.backward()?;
            let got = to_f64(grads.get(var.as_tensor()).expect("gradient"))?;
            let (xv, rv) = (to_f64(&x)?, to_f64(&r)?);
            let f = |v: &[f64]| -> f64 {
                naive(v, [b, c, h, w], &maps, (oh, ow), pad)
                    .iter()
                    .zip(&rv)
                    .map(|(a, b)| a * b)
                    .sum()
            };
            let eps = 1e-3;
            let fds = central_differences(&mut [xv], 0, eps, |p| f(&p[0]));
            for (i, fd) in fds.into_iter().enumerate() {
                assert!(
                    (got[i] - fd).abs() < 1e-4,
                    "{pad:?} element {i}: autograd {} vs finite differences {fd}",
                    got[i]
                );
            }
        }
        Ok(())
    }

    #[test]
    fn bad_shapes_are_errors() -> Result<()> {
        let x = tensor(&[2, 1, 4, 4], 1, 1.0)?;
        let err = affine_warp(&x, &[Affine::IDENTITY], (4, 4), WarpPadding::Zeros).unwrap_err();
        assert!(
            err.to_string().contains("1 affine maps for a batch of 2"),
            "{err}"
        );
        assert!(
            affine_warp(
                &x.flatten_all()?,
                &[Affine::IDENTITY],
                (4, 4),
                WarpPadding::Zeros
            )
            .is_err()
        );
        assert!(affine_warp(&x, &[Affine::IDENTITY; 2], (0, 4), WarpPadding::Zeros).is_err());
        Ok(())
    }
}
