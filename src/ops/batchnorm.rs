//! BatchNorm: folding (in inference BatchNorm is an affine map per channel, so it disappears
//! into the preceding convolution's weights and a bias), the unfolded eval-mode map, and
//! training-mode normalisation with batch statistics.

use candle_core::{Result, Tensor};

/// A BatchNorm2d layer's tensors as stored in a checkpoint (each `[channels]`).
#[derive(Clone, Debug)]
pub struct BatchNormParams {
    pub weight: Tensor,
    pub bias: Tensor,
    pub running_mean: Tensor,
    pub running_var: Tensor,
    pub eps: f64,
}

impl BatchNormParams {
    /// `(scale, shift)`, each `[channels]`, with `bn(x) = x * scale + shift` in eval mode.
    pub fn scale_shift(&self) -> Result<(Tensor, Tensor)> {
        let scale = (&self.weight / (&self.running_var + self.eps)?.sqrt()?)?;
        let shift = (&self.bias - (&self.running_mean * &scale)?)?;
        Ok((scale, shift))
    }
}

/// Folds eval-mode BatchNorm into a bias-free convolution.
/// `weight`: `[out, in/groups, kh, kw]` (or `[out, in]`). Returns the folded weight (same shape)
/// and bias `[out]`.
pub fn fold_batchnorm(weight: &Tensor, bn: &BatchNormParams) -> Result<(Tensor, Tensor)> {
    let (scale, shift) = bn.scale_shift()?;
    let mut scale_shape = vec![1usize; weight.rank()];
    scale_shape[0] = scale.dim(0)?;
    let folded = weight.broadcast_mul(&scale.reshape(scale_shape)?)?;
    Ok((folded, shift))
}

/// Applies eval-mode BatchNorm to `x` `[batch, channels, ...]` unfolded, in the order that
/// rounds like the PyTorch reference: `(x - running_mean) * (weight / sqrt(running_var + eps))
/// + bias` (differentiable through `x`, `weight` and `bias`).
pub fn batchnorm_eval(x: &Tensor, bn: &BatchNormParams) -> Result<Tensor> {
    let mut shape = vec![1usize; x.rank()];
    shape[1] = bn.weight.dim(0)?;
    let per_channel = |t: &Tensor| t.reshape(shape.as_slice());
    let scale = per_channel(&bn.weight)?
        .broadcast_div(&(per_channel(&bn.running_var)? + bn.eps)?.sqrt()?)?;
    x.broadcast_sub(&per_channel(&bn.running_mean)?)?
        .broadcast_mul(&scale)?
        .broadcast_add(&per_channel(&bn.bias)?)
}

/// Training-mode BatchNorm of `x` `[batch, channels, h, w]` with the batch's own statistics
/// (differentiable through `x`, `weight` and `bias`, each `[channels]`):
/// `(x - mean) / sqrt(var + eps) * weight + bias` with the biased variance over batch, height
/// and width. Also returns the batch mean and the unbiased variance (`[channels]`, detached),
/// which update the running statistics as PyTorch does.
pub fn batchnorm_train(
    x: &Tensor,
    weight: &Tensor,
    bias: &Tensor,
    eps: f64,
) -> Result<(Tensor, Tensor, Tensor)> {
    let (n, c, h, w) = x.dims4()?;
    let count = n * h * w;
    if count < 2 {
        candle_core::bail!(
            "BatchNorm with batch statistics needs more than one value per channel \
             (input {:?})",
            x.dims()
        );
    }
    // Channel-major `[c, n * h * w]`: the statistics, and the gradients that flow back to the
    // per-channel tensors, are then reductions over the last, contiguous dimension (candle
    // reduces a broadcast `[1, c, 1, 1]` over dims 0, 2, 3 with slow strided loops).
    let xc = x.transpose(0, 1)?.contiguous()?.reshape((c, count))?;
    let mean = xc.mean_keepdim(1)?;
    let centred = xc.broadcast_sub(&mean)?;
    let var = centred.sqr()?.mean_keepdim(1)?;
    let inv_std = (var.clone() + eps)?.sqrt()?.recip()?;
    let y = centred
        .broadcast_mul(&inv_std)?
        .broadcast_mul(&weight.reshape((c, 1))?)?
        .broadcast_add(&bias.reshape((c, 1))?)?
        .reshape((c, n, h, w))?
        .transpose(0, 1)?
        .contiguous()?;
    let unbiased = (var.flatten_all()? * (count as f64 / (count - 1) as f64))?;
    Ok((y, mean.flatten_all()?.detach(), unbiased.detach()))
}

/// `running = (1 - momentum) * running + momentum * batch` (PyTorch's update), detached.
pub fn update_running(running: &Tensor, batch: &Tensor, momentum: f64) -> Result<Tensor> {
    ((running.detach() * (1.0 - momentum))? + (batch.detach() * momentum)?)?.contiguous()
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Tensor};

    fn ramp(n: usize, a: f32, b: f32) -> Vec<f32> {
        (0..n).map(|i| (i as f32 * a + b).sin()).collect()
    }

    #[test]
    fn folded_conv_equals_conv_then_batchnorm() -> Result<()> {
        let dev = Device::Cpu;
        let x = Tensor::from_vec(ramp(2 * 3 * 6 * 6, 0.37, 0.1), (2, 3, 6, 6), &dev)?;
        let w = Tensor::from_vec(ramp(4 * 3 * 3 * 3, 0.91, 0.3), (4, 3, 3, 3), &dev)?;
        let c = |v: Vec<f32>| Tensor::from_vec(v, 4, &dev);
        let bn = BatchNormParams {
            weight: c(vec![1.5, 0.5, -0.7, 1.0])?,
            bias: c(vec![0.1, -0.2, 0.3, 0.0])?,
            running_mean: c(vec![0.05, 0.4, -0.3, 0.2])?,
            running_var: c(vec![0.9, 1.7, 0.2, 1.1])?,
            eps: 1e-3,
        };
        let reference = batchnorm_eval(&x.conv2d(&w, 1, 1, 1, 1)?, &bn)?;
        let (wf, bf) = fold_batchnorm(&w, &bn)?;
        let folded = x
            .conv2d(&wf, 1, 1, 1, 1)?
            .broadcast_add(&bf.reshape((1, 4, 1, 1))?)?;
        let diff = (reference - folded)?.abs()?.max_all()?.to_scalar::<f32>()?;
        assert!(diff < 1e-5, "max diff {diff}");
        Ok(())
    }

    #[test]
    fn batch_statistics_normalise_each_channel() -> Result<()> {
        let dev = Device::Cpu;
        let x = Tensor::from_vec(ramp(3 * 2 * 4 * 5, 0.73, 0.2), (3, 2, 4, 5), &dev)?;
        let x = ((x * 3.0)? + 1.5)?;
        let gamma = Tensor::from_vec(vec![2.0f32, 0.5], 2, &dev)?;
        let beta = Tensor::from_vec(vec![-1.0f32, 0.25], 2, &dev)?;
        let (y, mean, var) = batchnorm_train(&x, &gamma, &beta, 1e-5)?;
        for c in 0..2 {
            let xs: Vec<f32> = x.narrow(1, c, 1)?.flatten_all()?.to_vec1()?;
            let ys: Vec<f32> = y.narrow(1, c, 1)?.flatten_all()?.to_vec1()?;
            let n = xs.len() as f64;
            let m = xs.iter().map(|&v| v as f64).sum::<f64>() / n;
            let v = xs.iter().map(|&v| (v as f64 - m).powi(2)).sum::<f64>() / n;
            assert!((mean.to_vec1::<f32>()?[c] as f64 - m).abs() < 1e-5);
            assert!((var.to_vec1::<f32>()?[c] as f64 - v * n / (n - 1.0)).abs() < 1e-4);
            let (g, b) = ([2.0, 0.5][c], [-1.0, 0.25][c]);
            for (&xv, &yv) in xs.iter().zip(&ys) {
                let expected = (xv as f64 - m) / (v + 1e-5).sqrt() * g + b;
                assert!((yv as f64 - expected).abs() < 1e-4, "{yv} vs {expected}");
            }
        }
        Ok(())
    }

    #[test]
    fn batch_statistics_pass_gradients_to_scale_and_shift() -> Result<()> {
        let dev = Device::Cpu;
        let x = Tensor::from_vec(ramp(2 * 2 * 3 * 3, 0.51, 0.7), (2, 2, 3, 3), &dev)?;
        let gamma = candle_core::Var::from_vec(vec![1.0f32, -0.5], 2, &dev)?;
        let beta = candle_core::Var::from_vec(vec![0.0f32, 0.0], 2, &dev)?;
        let (y, _, _) = batchnorm_train(&x, gamma.as_tensor(), beta.as_tensor(), 1e-5)?;
        // d(sum(y * x)) / d(beta) = sum(x) per channel; / d(gamma) = sum(x_hat * x).
        let grads = (&y * &x)?.sum_all()?.backward()?;
        let g_beta: Vec<f32> = grads.get(beta.as_tensor()).unwrap().to_vec1()?;
        let sums: Vec<f32> = x.sum((0, 2, 3))?.to_vec1()?;
        for c in 0..2 {
            assert!((g_beta[c] - sums[c]).abs() < 1e-4);
        }
        assert!(grads.get(gamma.as_tensor()).is_some());
        Ok(())
    }

    #[test]
    fn running_statistics_move_by_the_momentum() -> Result<()> {
        let dev = Device::Cpu;
        let running = Tensor::from_vec(vec![1.0f32, 2.0], 2, &dev)?;
        let batch = Tensor::from_vec(vec![3.0f32, 0.0], 2, &dev)?;
        let updated: Vec<f32> = update_running(&running, &batch, 0.1)?.to_vec1()?;
        assert!((updated[0] - 1.2).abs() < 1e-6 && (updated[1] - 1.8).abs() < 1e-6);
        Ok(())
    }
}
