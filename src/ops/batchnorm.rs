//! BatchNorm folding: in inference BatchNorm is an affine map per channel, so it disappears
//! into the preceding convolution's weights and a bias.

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

/// Applies eval-mode BatchNorm to `x` `[batch, channels, ...]` (the unfolded reference).
pub fn batchnorm_eval(x: &Tensor, bn: &BatchNormParams) -> Result<Tensor> {
    let (scale, shift) = bn.scale_shift()?;
    let mut shape = vec![1usize; x.rank()];
    shape[1] = scale.dim(0)?;
    x.broadcast_mul(&scale.reshape(shape.clone())?)?
        .broadcast_add(&shift.reshape(shape)?)
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
}
