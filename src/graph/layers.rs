//! Building blocks shared by the architectures of the zoo: convolutions with BatchNorm (folded
//! in, or unfolded for exact gradients and training) and a fused activation, global average
//! pooling (the dense classifier is `graph::classifier`).

use std::sync::Mutex;

use candle_core::{Tensor, TensorId};

use super::Stage;
use super::probe::{BiasProbes, BiasProbing};
use crate::interchange::onnx::OnnxGraph;
use crate::ops::bias_act::activate;
use crate::ops::{
    Activation, BatchNormParams, ConvSpec, batchnorm_eval, batchnorm_train, conv2d_add_act,
    conv2d_bias_act, conv2d_fused, conv2d_rect, depthwise_conv2d, expand_depthwise_conv2d,
    fold_batchnorm, pointwise_conv2d, update_running,
};
use crate::{Error, Result};

/// How a convolution connects its input and output channels.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConvKind {
    /// Every input channel to every output channel, kernel `k x k` (weight `[out, in, k, k]`).
    Dense { stride: usize, padding: usize },
    /// A 1x1 convolution, run as a matrix product (weight `[out, in, 1, 1]`).
    Pointwise,
    /// One `k x k` filter per channel (weight `[channels, 1, k, k]`).
    Depthwise { stride: usize, padding: usize },
    /// Every input channel to every output channel, a `kh x kw` kernel (weight
    /// `[out, in, kh, kw]`, e.g. Inception's 1x7), stride 1, zero padding `padding_h` above and
    /// below and `padding_w` left and right.
    Rect { padding_h: usize, padding_w: usize },
}

/// How a [`ConvBnAct`] runs its BatchNorm.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BatchNormMode {
    /// Folded into the convolution, run by the fused kernels (inference, frozen layers).
    #[default]
    Folded,
    /// Unfolded with the running statistics, in PyTorch's order of operations (convolution,
    /// then BatchNorm, then activation): the rounding of the reference, for gradient work that
    /// must match it where a unit sits on an activation's kink.
    Exact,
    /// Trainable BatchNorm: with `train` set, the batch's own statistics normalise and the
    /// running statistics move by [`BATCHNORM_MOMENTUM`]; without it, as [`BatchNormMode::Exact`].
    /// The convolution weight and BatchNorm's scale and shift are the trainable tensors.
    Train,
}

/// How far one training batch moves BatchNorm's running statistics (PyTorch's default).
pub const BATCHNORM_MOMENTUM: f64 = 0.1;

/// Convolution + BatchNorm + activation. Runs fused with BatchNorm folded into the weights
/// ([`BatchNormMode::Folded`], the default) or unfolded ([`ConvBnAct::set_batchnorm_mode`]).
pub struct ConvBnAct {
    kind: ConvKind,
    /// `[out, in/groups, k, k]` (`[out, in]` for pointwise), BatchNorm scale folded in.
    weight: Tensor,
    /// `[out]`, BatchNorm shift.
    bias: Tensor,
    act: Activation,
    params: usize,
    mode: BatchNormMode,
    /// The unfolded convolution weight `[out, in/groups, k, k]`.
    conv_weight: Tensor,
    /// BatchNorm's tensors; the running statistics change in training forwards (hence the lock).
    bn: Mutex<BatchNormParams>,
    /// Ids of `weight` and `bias` when they were last folded from the unfolded tensors: other ids
    /// mean someone replaced them (fine-tuning in folded mode) and they cannot be unfolded.
    folded_ids: (TensorId, TensorId),
    /// TensorFlow's "same" padding (timm's `tf_*` ports): the input is zero-padded by
    /// `max((ceil(n / s) - 1) * s + k - n, 0)` per axis, the smaller half before, at every
    /// forward (it depends on the input size); the kind's own padding is then 0.
    tf_same: bool,
}

impl ConvBnAct {
    /// Keeps `weight` (`[out, in/groups, k, k]`, no conv bias) and `bn`, and folds them for the
    /// fused kernels.
    pub fn new(
        kind: ConvKind,
        weight: &Tensor,
        bn: &BatchNormParams,
        act: Activation,
    ) -> Result<Self> {
        let (folded, bias) = fold_batchnorm(weight, bn)?;
        let params = folded.elem_count() + 2 * bias.elem_count();
        let folded = pointwise_as_matrix(kind, folded)?;
        Ok(ConvBnAct {
            kind,
            folded_ids: (folded.id(), bias.id()),
            weight: folded,
            bias,
            act,
            params,
            mode: BatchNormMode::Folded,
            conv_weight: weight.clone(),
            bn: Mutex::new(bn.clone()),
            tf_same: false,
        })
    }

    /// The same layer with TensorFlow's "same" padding instead of the kind's own (see the
    /// field `tf_same`): output `ceil(n / stride)` per axis.
    pub fn with_tf_same_padding(mut self) -> Self {
        self.kind = match self.kind {
            ConvKind::Dense { stride, .. } => ConvKind::Dense { stride, padding: 0 },
            ConvKind::Depthwise { stride, .. } => ConvKind::Depthwise { stride, padding: 0 },
            ConvKind::Pointwise => ConvKind::Pointwise,
            ConvKind::Rect { .. } => ConvKind::Rect {
                padding_h: 0,
                padding_w: 0,
            },
        };
        self.tf_same = true;
        self
    }

    /// The (before, after) zero padding of TensorFlow's "same" for an axis of `n` pixels and
    /// a kernel `k` wide along it.
    fn same_padding(&self, n: usize, k: usize) -> (usize, usize) {
        let (stride, _) = self.stride_padding();
        let total = ((n.div_ceil(stride) - 1) * stride + k).saturating_sub(n);
        (total / 2, total - total / 2)
    }

    /// `x` `[batch, c, h, w]` zero-padded for TensorFlow's "same" (unchanged without it).
    fn pad_same(&self, x: &Tensor) -> Result<Tensor> {
        if !self.tf_same {
            return Ok(x.clone());
        }
        let (kh, kw) = self.kernel_hw();
        let (top, bottom) = self.same_padding(x.dim(2)?, kh);
        let (left, right) = self.same_padding(x.dim(3)?, kw);
        if top + bottom + left + right == 0 {
            return Ok(x.clone());
        }
        Ok(x.pad_with_zeros(2, top, bottom)?
            .pad_with_zeros(3, left, right)?)
    }

    /// Output channels.
    pub fn out_channels(&self) -> usize {
        self.bias.dims()[0]
    }

    /// The current BatchNorm mode.
    pub fn batchnorm_mode(&self) -> BatchNormMode {
        self.mode
    }

    /// Switches how BatchNorm runs. Back to [`BatchNormMode::Folded`], the (possibly trained)
    /// unfolded tensors and running statistics are folded anew. Leaving it is an error if the
    /// folded tensors were replaced (fine-tuned folded), since they cannot be unfolded exactly.
    pub fn set_batchnorm_mode(&mut self, mode: BatchNormMode) -> Result<()> {
        if mode == self.mode {
            return Ok(());
        }
        if mode == BatchNormMode::Folded {
            let bn = self.bn.get_mut().map_err(|_| poisoned())?;
            let detached = BatchNormParams {
                weight: bn.weight.detach(),
                bias: bn.bias.detach(),
                running_mean: bn.running_mean.clone(),
                running_var: bn.running_var.clone(),
                eps: bn.eps,
            };
            let (folded, bias) = fold_batchnorm(&self.conv_weight.detach(), &detached)?;
            self.weight = pointwise_as_matrix(self.kind, folded)?;
            self.bias = bias;
            self.folded_ids = (self.weight.id(), self.bias.id());
        } else if self.mode == BatchNormMode::Folded
            && (self.weight.id(), self.bias.id()) != self.folded_ids
        {
            return Err(Error::Model(
                "these folded convolution weights were replaced (fine-tuned with BatchNorm \
                 folded), so BatchNorm cannot be unfolded"
                    .into(),
            ));
        }
        self.mode = mode;
        Ok(())
    }

    /// The kernel's `(height, width)`.
    fn kernel_hw(&self) -> (usize, usize) {
        let d = self.conv_weight.dims();
        (d[2], d[3])
    }

    /// The convolution with BatchNorm folded in, whatever the mode: weight
    /// `[out, in/groups, k, k]`, bias `[out]`.
    pub fn folded(&self) -> Result<(Tensor, Tensor)> {
        if self.mode == BatchNormMode::Folded {
            return Ok((
                self.weight.reshape(self.conv_weight.dims())?,
                self.bias.clone(),
            ));
        }
        let bn = self.bn.lock().map_err(|_| poisoned())?;
        Ok(fold_batchnorm(&self.conv_weight, &bn)?)
    }

    /// A pointwise convolution with `residual` (shaped like the output) added after the
    /// activation, in the same pass: `act(conv(x)) + residual`.
    pub fn forward_with_residual(
        &self,
        x: &Tensor,
        residual: &Tensor,
        train: bool,
    ) -> Result<Tensor> {
        Ok(match (self.kind, self.mode) {
            (ConvKind::Pointwise, BatchNormMode::Folded) => {
                pointwise_conv2d(x, &self.weight, &self.bias, self.act, Some(residual))?
            }
            _ => (self.forward(x, train)? + residual)?,
        })
    }

    /// This convolution (whose own activation is the identity) with `residual` (shaped like the
    /// output) added before `act`: `act(conv(x) + residual)`, the end of a ResNet block, in one
    /// pass when BatchNorm is folded.
    pub fn forward_add_act(
        &self,
        x: &Tensor,
        residual: &Tensor,
        act: Activation,
        train: bool,
    ) -> Result<Tensor> {
        let spec = match self.kind {
            // "same" padding is padded explicitly by `forward`.
            _ if self.tf_same => None,
            ConvKind::Dense { stride, padding } => Some(ConvSpec::square(stride, padding)),
            ConvKind::Pointwise => Some(ConvSpec::square(1, 0)),
            ConvKind::Rect {
                padding_h,
                padding_w,
            } => Some(ConvSpec::padded(padding_h, padding_w)),
            ConvKind::Depthwise { .. } => None,
        };
        match spec {
            Some(spec)
                if self.mode == BatchNormMode::Folded && self.act == Activation::Identity =>
            {
                let w = self.weight.reshape(self.conv_weight.dims())?;
                Ok(conv2d_add_act(x, &w, &self.bias, residual, spec, act)?)
            }
            // Through the fused ops' activation (not candle's) so that guided backpropagation
            // reaches it.
            _ => Ok(activate(&(self.forward(x, train)? + residual)?, act)?),
        }
    }

    /// This pointwise convolution followed by the depthwise convolution `depthwise`, fused
    /// into one pass that never materialises this layer's (expanded) output when both are
    /// folded.
    pub fn forward_then_depthwise(
        &self,
        depthwise: &ConvBnAct,
        x: &Tensor,
        train: bool,
    ) -> Result<Tensor> {
        match (self.kind, depthwise.kind, self.mode, depthwise.mode) {
            _ if depthwise.tf_same => depthwise.forward(&self.forward(x, train)?, train),
            (
                ConvKind::Pointwise,
                ConvKind::Depthwise { stride, padding },
                BatchNormMode::Folded,
                BatchNormMode::Folded,
            ) => Ok(expand_depthwise_conv2d(
                x,
                (&self.weight, &self.bias, self.act),
                (&depthwise.weight, &depthwise.bias, depthwise.act),
                stride,
                padding,
            )?),
            _ => depthwise.forward(&self.forward(x, train)?, train),
        }
    }

    /// The stride and the padding `(above and below, left and right)`.
    fn stride_padding(&self) -> (usize, (usize, usize)) {
        match self.kind {
            ConvKind::Dense { stride, padding } | ConvKind::Depthwise { stride, padding } => {
                (stride, (padding, padding))
            }
            ConvKind::Pointwise => (1, (0, 0)),
            ConvKind::Rect {
                padding_h,
                padding_w,
            } => (1, (padding_h, padding_w)),
        }
    }

    /// The convolution alone with the unfolded weight: `[batch, out, h', w']`.
    fn conv_unfolded(&self, x: &Tensor) -> Result<Tensor> {
        self.conv_with(x, &self.conv_weight)
    }

    /// The convolution alone with `weight` (`[out, in/groups, kh, kw]`), no bias.
    fn conv_with(&self, x: &Tensor, weight: &Tensor) -> Result<Tensor> {
        let (stride, (padding, _)) = self.stride_padding();
        Ok(match self.kind {
            ConvKind::Rect {
                padding_h,
                padding_w,
            } => conv2d_rect(x, weight, padding_h, padding_w)?,
            // candle's convolution for 1x1 too: it rounds like the reference, while the gemm
            // kernel's order of summation moves a kink of the filter fixture by step 2 (Lite0's
            // stem through `ops::conv2d`: image_step2 off by 2e-2).
            ConvKind::Dense { .. } | ConvKind::Pointwise => {
                x.conv2d(weight, padding, stride, 1, 1)?
            }
            ConvKind::Depthwise { .. } => {
                let zero = Tensor::zeros(self.out_channels(), x.dtype(), x.device())?;
                depthwise_conv2d(x, weight, &zero, stride, padding, Activation::Identity)?
            }
        })
    }

    /// Convolution, BatchNorm (batch statistics when training in [`BatchNormMode::Train`],
    /// else the running ones), activation: three passes, differentiable in every tensor.
    fn forward_unfolded(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        let y = self.conv_unfolded(x)?;
        let mut bn = self.bn.lock().map_err(|_| poisoned())?;
        let normalised = if train && self.mode == BatchNormMode::Train {
            let (y, mean, var) = batchnorm_train(&y, &bn.weight, &bn.bias, bn.eps)?;
            bn.running_mean = update_running(&bn.running_mean, &mean, BATCHNORM_MOMENTUM)?;
            bn.running_var = update_running(&bn.running_var, &var, BATCHNORM_MOMENTUM)?;
            y
        } else {
            batchnorm_eval(&y, &bn)?
        };
        Ok(self.act.apply_tensor(&normalised)?)
    }
}

fn poisoned() -> Error {
    Error::Model("a BatchNorm layer's statistics lock was poisoned by a panic".into())
}

/// A pointwise convolution's weight as the `[out, in]` matrix its kernel takes.
fn pointwise_as_matrix(kind: ConvKind, weight: Tensor) -> Result<Tensor> {
    Ok(match kind {
        ConvKind::Pointwise => {
            let (out, inp) = (weight.dim(0)?, weight.dim(1)?);
            weight.reshape((out, inp))?
        }
        _ => weight,
    })
}

impl Stage for ConvBnAct {
    /// `[batch, in, h, w]` -> `[batch, out, h', w']`.
    fn forward(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        let x = &self.pad_same(x)?;
        if self.mode != BatchNormMode::Folded {
            return self.forward_unfolded(x, train);
        }
        Ok(match self.kind {
            ConvKind::Dense { stride, padding } => {
                conv2d_bias_act(x, &self.weight, &self.bias, stride, padding, self.act)?
            }
            ConvKind::Pointwise => pointwise_conv2d(x, &self.weight, &self.bias, self.act, None)?,
            ConvKind::Depthwise { stride, padding } => {
                depthwise_conv2d(x, &self.weight, &self.bias, stride, padding, self.act)?
            }
            ConvKind::Rect {
                padding_h,
                padding_w,
            } => conv2d_fused(
                x,
                &self.weight,
                &self.bias,
                ConvSpec::padded(padding_h, padding_w),
                self.act,
            )?,
        })
    }

    fn output_shape(&self, input: &[usize]) -> Vec<usize> {
        let (stride, (ph, pw)) = self.stride_padding();
        let (kh, kw) = self.kernel_hw();
        let out = |n: usize, p: usize, k: usize| {
            if self.tf_same {
                n.div_ceil(stride)
            } else {
                (n + 2 * p - k) / stride + 1
            }
        };
        vec![
            self.out_channels(),
            out(input[1], ph, kh),
            out(input[2], pw, kw),
        ]
    }

    fn macs(&self, input: &[usize]) -> u64 {
        let out = self.output_shape(input);
        let (kh, kw) = self.kernel_hw();
        let per_output = match self.kind {
            ConvKind::Depthwise { .. } => kh * kw,
            _ => input[0] * kh * kw,
        };
        (out.iter().product::<usize>() * per_output) as u64
    }

    fn param_count(&self) -> usize {
        self.params
    }

    /// Folded: `weight` and `bias` (the folded pair). Unfolded: `conv.weight`, `bn.weight` and
    /// `bn.bias` (the running statistics are not trained).
    fn tensors_mut(&mut self) -> Vec<(String, &mut Tensor)> {
        if self.mode == BatchNormMode::Folded {
            return vec![
                ("weight".into(), &mut self.weight),
                ("bias".into(), &mut self.bias),
            ];
        }
        let bn = self.bn.get_mut().unwrap_or_else(|e| e.into_inner());
        vec![
            ("conv.weight".into(), &mut self.conv_weight),
            ("bn.weight".into(), &mut bn.weight),
            ("bn.bias".into(), &mut bn.bias),
        ]
    }

    fn batchnorm_layers(&mut self) -> Vec<&mut ConvBnAct> {
        vec![self]
    }

    fn bias_probing(&self) -> BiasProbing {
        BiasProbing::Own
    }

    /// Convolution and BatchNorm in PyTorch's order (the folded pair when the folded tensors
    /// were fine-tuned and the unfolded ones are stale), the probe with BatchNorm's effective
    /// bias, the activation.
    fn forward_probed(&self, x: &Tensor, probes: &mut BiasProbes) -> Result<Tensor> {
        let x = &self.pad_same(x)?;
        let stale = self.mode == BatchNormMode::Folded
            && (self.weight.id(), self.bias.id()) != self.folded_ids;
        let (z, bias) = if stale {
            let weight = self.weight.reshape(self.conv_weight.dims())?;
            let c = self.out_channels();
            let y = self.conv_with(x, &weight)?;
            (
                y.broadcast_add(&self.bias.reshape((1, c, 1, 1))?)?,
                self.bias.clone(),
            )
        } else {
            let bn = self.bn.lock().map_err(|_| poisoned())?;
            let y = batchnorm_eval(&self.conv_unfolded(x)?, &bn)?;
            (y, bn.scale_shift()?.1)
        };
        let z = probes.tap(&z, &bias)?;
        Ok(activate(&z, self.act)?)
    }

    /// A Conv (BatchNorm folded; `group` = channels for a depthwise one), then the activation.
    /// TensorFlow's "same" padding becomes the Conv's `pads` for this `input` (`[c, h, w]`;
    /// the exported input's sides are fixed), uneven where TensorFlow pads one more pixel
    /// after than before.
    fn to_onnx(&self, g: &mut OnnxGraph, x: &str, input: &[usize]) -> Result<String> {
        let (weight, bias) = self.folded()?;
        let (stride, (padding_h, padding_w)) = self.stride_padding();
        let [top, left, bottom, right] = if self.tf_same {
            let (kh, kw) = self.kernel_hw();
            let (top, bottom) = self.same_padding(input[1], kh);
            let (left, right) = self.same_padding(input[2], kw);
            [top, left, bottom, right]
        } else {
            [padding_h, padding_w, padding_h, padding_w]
        };
        let group = match self.kind {
            ConvKind::Depthwise { .. } => self.out_channels(),
            ConvKind::Dense { .. } | ConvKind::Pointwise | ConvKind::Rect { .. } => 1,
        };
        let pads = [top, left, bottom, right];
        let y = g.conv_with_pads(x, &weight, &bias, stride, pads, group)?;
        g.activation(&y, self.act)
    }
}

/// Spatial mean: `[batch, channels, h, w]` -> `[batch, channels]`.
pub struct GlobalAvgPool;

impl Stage for GlobalAvgPool {
    fn forward(&self, x: &Tensor, _train: bool) -> Result<Tensor> {
        Ok(x.mean((2, 3))?)
    }

    fn to_onnx(&self, g: &mut OnnxGraph, x: &str, _input: &[usize]) -> Result<String> {
        Ok(g.global_avg_pool(x))
    }

    fn bias_probing(&self) -> BiasProbing {
        BiasProbing::NoBias
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

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Var};

    fn ramp(n: usize, a: f32, b: f32) -> Vec<f32> {
        (0..n).map(|i| (i as f32 * a + b).sin()).collect()
    }

    fn max_diff(a: &Tensor, b: &Tensor) -> f32 {
        (a - b)
            .unwrap()
            .abs()
            .unwrap()
            .max_all()
            .unwrap()
            .to_scalar()
            .unwrap()
    }

    /// A conv of `kind` with 4 output channels, BatchNorm and ReLU6, and a `[2, 4, 6, 6]` input.
    fn layer(kind: ConvKind) -> (ConvBnAct, Tensor) {
        let dev = Device::Cpu;
        let c = |v: Vec<f32>| Tensor::from_vec(v, 4, &dev).unwrap();
        let bn = BatchNormParams {
            weight: c(vec![1.5, 0.5, -0.7, 1.0]),
            bias: c(vec![0.1, -0.2, 0.3, 0.0]),
            running_mean: c(vec![0.05, 0.4, -0.3, 0.2]),
            running_var: c(vec![0.9, 1.7, 0.2, 1.1]),
            eps: 1e-3,
        };
        let (inp, kh, kw) = match kind {
            ConvKind::Depthwise { .. } => (1, 3, 3),
            ConvKind::Pointwise => (4, 1, 1),
            ConvKind::Dense { .. } => (4, 3, 3),
            ConvKind::Rect { .. } => (4, 1, 3),
        };
        let w =
            Tensor::from_vec(ramp(4 * inp * kh * kw, 0.91, 0.3), (4, inp, kh, kw), &dev).unwrap();
        let x = Tensor::from_vec(ramp(2 * 4 * 6 * 6, 0.37, 0.1), (2, 4, 6, 6), &dev).unwrap();
        let x = (x * 2.0).unwrap();
        (ConvBnAct::new(kind, &w, &bn, Activation::Relu6).unwrap(), x)
    }

    const KINDS: [ConvKind; 4] = [
        ConvKind::Rect {
            padding_h: 0,
            padding_w: 1,
        },
        ConvKind::Dense {
            stride: 2,
            padding: 1,
        },
        ConvKind::Pointwise,
        ConvKind::Depthwise {
            stride: 1,
            padding: 1,
        },
    ];

    /// TensorFlow's "same" padding and the smooth activations, described as ONNX and run by
    /// candle-onnx, give the layer's own output, dense, depthwise and pointwise, on even and
    /// odd sides; stride 2 on an even side pads one pixel after and none before.
    #[test]
    fn tf_same_padding_and_smooth_activations_export_to_onnx() -> Result<()> {
        use crate::interchange::onnx::{eval_stage, stage_model};
        let acts = [
            Activation::Silu,
            Activation::HardSwish,
            Activation::HardSigmoid,
            Activation::Sigmoid,
        ];
        let kinds = [
            ConvKind::Dense {
                stride: 2,
                padding: 1,
            },
            ConvKind::Depthwise {
                stride: 2,
                padding: 1,
            },
            ConvKind::Depthwise {
                stride: 1,
                padding: 1,
            },
            ConvKind::Pointwise,
        ];
        for (i, kind) in kinds.into_iter().enumerate() {
            for side in [6, 5] {
                let (conv, x) = layer(kind);
                let mut conv = conv.with_tf_same_padding();
                conv.act = acts[(i + side) % acts.len()];
                let x = x.narrow(2, 0, side)?.narrow(3, 0, side)?;
                let expected = conv.forward(&x, false)?;
                let found = eval_stage(&conv, &x)?;
                assert_eq!(found.dims(), expected.dims(), "{kind:?} {side}");
                let diff = max_diff(&found, &expected);
                assert!(diff < 1e-5, "{kind:?} {:?} side {side}: {diff}", conv.act);
            }
        }
        let pads = |side: usize| -> Result<Vec<i64>> {
            let conv = layer(kinds[0]).0.with_tf_same_padding();
            let model = stage_model(&conv, &[4, side, side])?;
            let graph = model.graph.unwrap_or_default();
            let node = graph.node.iter().find(|n| n.op_type == "Conv");
            let pads = node.and_then(|n| n.attribute.iter().find(|a| a.name == "pads"));
            Ok(pads.map(|a| a.ints.clone()).unwrap_or_default())
        };
        assert_eq!(pads(6)?, [0, 0, 1, 1]);
        assert_eq!(pads(5)?, [1, 1, 1, 1]);
        Ok(())
    }

    #[test]
    fn exact_mode_computes_what_the_folded_one_does() -> Result<()> {
        for kind in KINDS {
            let (mut conv, x) = layer(kind);
            let folded = conv.forward(&x, false)?;
            conv.set_batchnorm_mode(BatchNormMode::Exact)?;
            let exact = conv.forward(&x, true)?;
            assert!(max_diff(&folded, &exact) < 1e-5, "{kind:?}");
            let names: Vec<String> = conv.tensors_mut().into_iter().map(|(n, _)| n).collect();
            assert_eq!(names, ["conv.weight", "bn.weight", "bn.bias"]);
        }
        Ok(())
    }

    #[test]
    fn train_mode_normalises_with_batch_statistics_and_refolds() -> Result<()> {
        for kind in KINDS {
            let (mut conv, x) = layer(kind);
            let pretrained = conv.forward(&x, false)?;
            conv.set_batchnorm_mode(BatchNormMode::Train)?;
            // Evaluation in train mode keeps the running statistics.
            assert!(max_diff(&conv.forward(&x, false)?, &pretrained) < 1e-5);
            // A training forward: before the activation each channel has mean `bn.bias`.
            let mut linear = layer(kind).0;
            linear.act = Activation::Identity;
            linear.set_batchnorm_mode(BatchNormMode::Train)?;
            let y = linear.forward(&x, true)?;
            let means: Vec<f32> = y.mean((0, 2, 3))?.to_vec1()?;
            for (m, b) in means.iter().zip([0.1, -0.2, 0.3, 0.0]) {
                assert!((m - b).abs() < 1e-4, "{kind:?}: {m} vs {b}");
            }
            // The running statistics moved; folding them in gives the unfolded evaluation.
            conv.forward(&x, true)?;
            let exact = conv.forward(&x, false)?;
            assert!(max_diff(&exact, &pretrained) > 1e-3, "{kind:?}");
            conv.set_batchnorm_mode(BatchNormMode::Folded)?;
            assert!(
                max_diff(&conv.forward(&x, false)?, &exact) < 1e-5,
                "{kind:?}"
            );
        }
        Ok(())
    }

    #[test]
    fn gradients_reach_the_unfolded_tensors() -> Result<()> {
        let (mut conv, x) = layer(KINDS[0]);
        conv.set_batchnorm_mode(BatchNormMode::Train)?;
        let vars: Vec<Var> = conv
            .tensors_mut()
            .into_iter()
            .map(|(_, t)| {
                let v = Var::from_tensor(t)?;
                *t = v.as_tensor().clone();
                Ok(v)
            })
            .collect::<Result<_>>()?;
        let grads = conv.forward(&x, true)?.sqr()?.sum_all()?.backward()?;
        for v in &vars {
            let g = grads.get(v.as_tensor()).expect("a gradient");
            assert!(g.abs()?.sum_all()?.to_scalar::<f32>()? > 0.0);
        }
        Ok(())
    }

    #[test]
    fn replaced_folded_weights_cannot_be_unfolded() -> Result<()> {
        let (mut conv, _) = layer(KINDS[1]);
        for (_, t) in conv.tensors_mut() {
            *t = (&*t * 1.0)?;
        }
        let err = conv.set_batchnorm_mode(BatchNormMode::Exact).unwrap_err();
        assert!(err.to_string().contains("cannot be unfolded"), "{err}");
        Ok(())
    }
}
