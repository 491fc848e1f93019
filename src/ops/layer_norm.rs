//! LayerNorm over the channels of an NCHW tensor: each pixel's `C` values normalised by their
//! own mean and (biased) variance, then scaled and shifted per channel. This is PyTorch's
//! `nn.LayerNorm(C)` on the channels-last view (`x.permute(0, 2, 3, 1)`), as ConvNeXt uses it
//! (torchvision's `LayerNorm2d`, timm's `LayerNorm2d` and its blocks' `norm`), without the two
//! permutes.
//!
//! Built from candle's reductions and broadcasts, so its backward is candle's (checked here by
//! finite differences) and it runs on every device.

use candle_core::{D, Result, Tensor, bail};

/// `(x - mean_c(x)) / sqrt(var_c(x) + eps) * weight[c] + bias[c]`, the statistics over the
/// channel dimension 1 of each pixel. `x` `[batch, C, ...]`, `weight` and `bias` `[C]`;
/// output shaped like `x`. Differentiable in all three.
pub fn layer_norm_channels(x: &Tensor, weight: &Tensor, bias: &Tensor, eps: f64) -> Result<Tensor> {
    if x.rank() < 2 {
        bail!(
            "layer_norm_channels: expected [batch, C, ...], got {:?}",
            x.dims()
        );
    }
    let c = x.dim(1)?;
    if weight.dims() != [c] || bias.dims() != [c] {
        bail!(
            "layer_norm_channels: weight and bias must be [{c}], got {:?} and {:?}",
            weight.dims(),
            bias.dims()
        );
    }
    let mut per_channel = vec![1; x.rank()];
    per_channel[1] = c;
    let centred = x.broadcast_sub(&x.mean_keepdim(1)?)?;
    let var = centred.sqr()?.mean_keepdim(1)?;
    let normalised = centred.broadcast_div(&(var + eps)?.sqrt()?)?;
    normalised
        .broadcast_mul(&weight.reshape(per_channel.as_slice())?)?
        .broadcast_add(&bias.reshape(per_channel.as_slice())?)
}

/// The same over the last dimension (`nn.LayerNorm` on a `[..., C]` tensor, e.g. a classifier's
/// `[batch, C]` features). `weight`, `bias` `[C]`.
pub fn layer_norm_last(x: &Tensor, weight: &Tensor, bias: &Tensor, eps: f64) -> Result<Tensor> {
    let centred = x.broadcast_sub(&x.mean_keepdim(D::Minus1)?)?;
    let var = centred.sqr()?.mean_keepdim(D::Minus1)?;
    centred
        .broadcast_div(&(var + eps)?.sqrt()?)?
        .broadcast_mul(weight)?
        .broadcast_add(bias)
}

#[cfg(test)]
mod tests {
    use super::super::Activation;
    use super::super::test_util::{act_f64, central_differences, grads_all, tensor, to_f64};
    use super::*;

    /// f64 reference of [`layer_norm_channels`] on `[b, c, plane]` values.
    fn reference(
        x: &[f64],
        w: &[f64],
        bias: &[f64],
        (b, c, plane): (usize, usize, usize),
    ) -> Vec<f64> {
        let mut out = vec![0.0; x.len()];
        for i in 0..b {
            for p in 0..plane {
                let at = |ch: usize| (i * c + ch) * plane + p;
                let mean = (0..c).map(|ch| x[at(ch)]).sum::<f64>() / c as f64;
                let var = (0..c).map(|ch| (x[at(ch)] - mean).powi(2)).sum::<f64>() / c as f64;
                for ch in 0..c {
                    out[at(ch)] = (x[at(ch)] - mean) / (var + 1e-6).sqrt() * w[ch] + bias[ch];
                }
            }
        }
        out
    }

    #[test]
    fn layer_norm_channels_matches_f64_and_finite_differences() -> Result<()> {
        let dims = (2, 5, 3 * 4);
        let x = tensor(&[2, 5, 3, 4], 1, 2.0)?;
        let w = tensor(&[5], 2, 1.5)?;
        let b = tensor(&[5], 3, 0.5)?;
        let r = tensor(&[2, 5, 3, 4], 4, 1.0)?;
        let got = to_f64(&layer_norm_channels(&x, &w, &b, 1e-6)?)?;
        let want = reference(&to_f64(&x)?, &to_f64(&w)?, &to_f64(&b)?, dims);
        for (g, w) in got.iter().zip(&want) {
            assert!((g - w).abs() < 1e-5, "{g} vs {w}");
        }
        let analytic = grads_all(
            |t| layer_norm_channels(t[0], t[1], t[2], 1e-6),
            &[&x, &w, &b],
            &r,
        )?;
        let rf = to_f64(&r)?;
        let mut params = [to_f64(&x)?, to_f64(&w)?, to_f64(&b)?];
        let loss = |p: &[Vec<f64>; 3]| -> f64 {
            let y = reference(&p[0], &p[1], &p[2], dims);
            y.iter().zip(&rf).map(|(y, r)| y * r).sum()
        };
        for (which, g) in analytic.iter().enumerate() {
            let numeric = central_differences(&mut params, which, 1e-4, loss);
            for (a, n) in to_f64(g)?.iter().zip(&numeric) {
                assert!(
                    (a - n).abs() < 2e-3 * (1.0 + n.abs()),
                    "arg {which}: {a} vs {n}"
                );
            }
        }
        // The last-dimension form agrees with the channel form on the channels-last view.
        let last = layer_norm_last(&x.permute((0, 2, 3, 1))?, &w, &b, 1e-6)?;
        let chan = layer_norm_channels(&x, &w, &b, 1e-6)?.permute((0, 2, 3, 1))?;
        assert!(super::super::test_util::max_abs_diff(&last, &chan)? < 1e-5);
        Ok(())
    }

    #[test]
    fn gelu_matches_f64_and_finite_differences_fused_or_not() -> Result<()> {
        let x = tensor(&[2, 3, 4, 4], 5, 4.0)?;
        let act = Activation::Gelu;
        assert!(act.is_smooth());
        let y = to_f64(&act.apply_tensor(&x)?)?;
        for (v, y) in to_f64(&x)?.iter().zip(&y) {
            assert!((act_f64(act, *v) - y).abs() < 1e-6);
            assert!((f64::from(act.apply(*v as f32)) - y).abs() < 1e-6);
        }
        // PyTorch's value: F.gelu(torch.tensor(1.0)) = 0.8413447.
        assert!((act.apply(1.0) - 0.841_344_7).abs() < 1e-6);
        let r = tensor(&[2, 3, 4, 4], 6, 1.0)?;
        let g = grads_all(|t| act.apply_tensor(t[0]), &[&x], &r)?;
        let rf = to_f64(&r)?;
        let mut params = [to_f64(&x)?];
        let numeric = central_differences(&mut params, 0, 1e-5, |p: &[Vec<f64>; 1]| {
            p[0].iter()
                .zip(&rf)
                .map(|(&v, r)| act_f64(act, v) * r)
                .sum()
        });
        for (a, n) in to_f64(&g[0])?.iter().zip(&numeric) {
            assert!((a - n).abs() < 1e-4, "{a} vs {n}");
        }
        // The kernels run GELU after their identity output, with the same value and gradient.
        let w = tensor(&[5, 3], 7, 0.5)?;
        let bias = tensor(&[5], 8, 0.5)?;
        let r5 = tensor(&[2, 5, 4, 4], 9, 1.0)?;
        let fused = |t: &[&Tensor]| super::super::pointwise_conv2d(t[0], t[1], t[2], act, None);
        let plain = |t: &[&Tensor]| {
            let y = t[0]
                .permute((0, 2, 3, 1))?
                .contiguous()?
                .broadcast_matmul(&t[1].t()?)?;
            act.apply_tensor(&y.broadcast_add(t[2])?.permute((0, 3, 1, 2))?)
        };
        let a = grads_all(fused, &[&x, &w, &bias], &r5)?;
        let b = grads_all(plain, &[&x, &w, &bias], &r5)?;
        for (a, b) in a.iter().zip(&b) {
            assert!(super::super::test_util::max_abs_diff(a, b)? < 1e-4);
        }
        Ok(())
    }
}
