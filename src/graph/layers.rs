//! Building blocks shared by the architectures of the zoo: convolutions with BatchNorm folded
//! in and a fused activation, global average pooling, a dense classifier.

use candle_core::Tensor;

use super::Stage;
use crate::Result;
use crate::ops::{
    Activation, BatchNormParams, DropoutSeeds, conv2d_bias_act, depthwise_conv2d,
    expand_depthwise_conv2d, fold_batchnorm, pointwise_conv2d, seeded_dropout,
};

/// How a convolution connects its input and output channels.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConvKind {
    /// Every input channel to every output channel, kernel `k x k` (weight `[out, in, k, k]`).
    Dense { stride: usize, padding: usize },
    /// A 1x1 convolution, run as a matrix product (weight `[out, in, 1, 1]`).
    Pointwise,
    /// One `k x k` filter per channel (weight `[channels, 1, k, k]`).
    Depthwise { stride: usize, padding: usize },
}

/// Convolution + eval-mode BatchNorm (folded into the weights) + activation, run fused.
pub struct ConvBnAct {
    kind: ConvKind,
    /// `[out, in/groups, k, k]`, BatchNorm scale folded in.
    weight: Tensor,
    /// `[out]`, BatchNorm shift.
    bias: Tensor,
    act: Activation,
    params: usize,
}

impl ConvBnAct {
    /// Folds `bn` into `weight` (`[out, in/groups, k, k]`, no conv bias).
    pub fn new(
        kind: ConvKind,
        weight: &Tensor,
        bn: &BatchNormParams,
        act: Activation,
    ) -> Result<Self> {
        let (weight, bias) = fold_batchnorm(weight, bn)?;
        let params = weight.elem_count() + 2 * bias.elem_count();
        let weight = match kind {
            ConvKind::Pointwise => {
                let (out, inp) = (weight.dim(0)?, weight.dim(1)?);
                weight.reshape((out, inp))?
            }
            _ => weight,
        };
        Ok(ConvBnAct {
            kind,
            weight,
            bias,
            act,
            params,
        })
    }

    /// Output channels.
    pub fn out_channels(&self) -> usize {
        self.bias.dims()[0]
    }

    fn kernel_size(&self) -> usize {
        match self.kind {
            ConvKind::Pointwise => 1,
            _ => self.weight.dims()[3],
        }
    }

    /// A pointwise convolution with `residual` (shaped like the output) added after the
    /// activation, in the same pass: `act(conv(x)) + residual`.
    pub fn forward_with_residual(
        &self,
        x: &Tensor,
        residual: &Tensor,
        train: bool,
    ) -> Result<Tensor> {
        Ok(match self.kind {
            ConvKind::Pointwise => {
                pointwise_conv2d(x, &self.weight, &self.bias, self.act, Some(residual))?
            }
            _ => (self.forward(x, train)? + residual)?,
        })
    }

    /// This pointwise convolution followed by the depthwise convolution `depthwise`, fused
    /// into one pass that never materialises this layer's (expanded) output.
    pub fn forward_then_depthwise(&self, depthwise: &ConvBnAct, x: &Tensor) -> Result<Tensor> {
        match (self.kind, depthwise.kind) {
            (ConvKind::Pointwise, ConvKind::Depthwise { stride, padding }) => {
                Ok(expand_depthwise_conv2d(
                    x,
                    (&self.weight, &self.bias, self.act),
                    (&depthwise.weight, &depthwise.bias, depthwise.act),
                    stride,
                    padding,
                )?)
            }
            _ => depthwise.forward(&self.forward(x, false)?, false),
        }
    }

    fn stride_padding(&self) -> (usize, usize) {
        match self.kind {
            ConvKind::Dense { stride, padding } | ConvKind::Depthwise { stride, padding } => {
                (stride, padding)
            }
            ConvKind::Pointwise => (1, 0),
        }
    }
}

impl Stage for ConvBnAct {
    /// `[batch, in, h, w]` -> `[batch, out, h', w']`.
    fn forward(&self, x: &Tensor, _train: bool) -> Result<Tensor> {
        Ok(match self.kind {
            ConvKind::Dense { stride, padding } => {
                conv2d_bias_act(x, &self.weight, &self.bias, stride, padding, self.act)?
            }
            ConvKind::Pointwise => pointwise_conv2d(x, &self.weight, &self.bias, self.act, None)?,
            ConvKind::Depthwise { stride, padding } => {
                depthwise_conv2d(x, &self.weight, &self.bias, stride, padding, self.act)?
            }
        })
    }

    fn output_shape(&self, input: &[usize]) -> Vec<usize> {
        let (stride, padding) = self.stride_padding();
        let k = self.kernel_size();
        let out = |n: usize| (n + 2 * padding - k) / stride + 1;
        vec![self.out_channels(), out(input[1]), out(input[2])]
    }

    fn macs(&self, input: &[usize]) -> u64 {
        let out = self.output_shape(input);
        let per_output = match self.kind {
            ConvKind::Depthwise { .. } => self.kernel_size().pow(2),
            _ => input[0] * self.kernel_size().pow(2),
        };
        (out.iter().product::<usize>() * per_output) as u64
    }

    fn param_count(&self) -> usize {
        self.params
    }

    fn tensors_mut(&mut self) -> Vec<(String, &mut Tensor)> {
        vec![
            ("weight".into(), &mut self.weight),
            ("bias".into(), &mut self.bias),
        ]
    }
}

/// Spatial mean: `[batch, channels, h, w]` -> `[batch, channels]`.
pub struct GlobalAvgPool;

impl Stage for GlobalAvgPool {
    fn forward(&self, x: &Tensor, _train: bool) -> Result<Tensor> {
        Ok(x.mean((2, 3))?)
    }

    fn output_shape(&self, input: &[usize]) -> Vec<usize> {
        vec![input[0]]
    }

    fn macs(&self, _input: &[usize]) -> u64 {
        0
    }

    fn param_count(&self) -> usize {
        0
    }

    fn tensors_mut(&mut self) -> Vec<(String, &mut Tensor)> {
        Vec::new()
    }
}

/// Dropout (training only) then a dense layer: `[batch, in]` -> `[batch, out]`.
pub struct Classifier {
    /// `[out, in]`.
    weight: Tensor,
    /// `[out]`.
    bias: Tensor,
    dropout: f32,
    seeds: DropoutSeeds,
}

impl Classifier {
    /// `weight` `[out, in]`, `bias` `[out]`; `dropout` is the drop probability in training.
    pub fn new(weight: Tensor, bias: Tensor, dropout: f32) -> Self {
        Classifier {
            weight,
            bias,
            dropout,
            seeds: DropoutSeeds::new(0),
        }
    }
}

impl Stage for Classifier {
    fn forward(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        let x = if train && self.dropout > 0.0 {
            seeded_dropout(x, self.dropout, self.seeds.next())?
        } else {
            x.clone()
        };
        Ok(x.matmul(&self.weight.t()?)?.broadcast_add(&self.bias)?)
    }

    fn output_shape(&self, _input: &[usize]) -> Vec<usize> {
        vec![self.weight.dims()[0]]
    }

    fn macs(&self, _input: &[usize]) -> u64 {
        self.weight.elem_count() as u64
    }

    fn param_count(&self) -> usize {
        self.weight.elem_count() + self.bias.elem_count()
    }

    fn tensors_mut(&mut self) -> Vec<(String, &mut Tensor)> {
        vec![
            ("weight".into(), &mut self.weight),
            ("bias".into(), &mut self.bias),
        ]
    }
}
