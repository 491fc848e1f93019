//! Stages the classic architectures share beyond [`crate::graph::layers`]: max pooling,
//! a convolution with its own bias (no BatchNorm), a dense layer with activation, adaptive
//! average pooling + flatten, and the prefix helper that names a stage's tensors.

use candle_core::Tensor;

use crate::Result;
use crate::graph::Stage;
use crate::graph::layers::ConvBnAct;
use crate::graph::probe::{BiasProbes, BiasProbing};
use crate::interchange::onnx::OnnxGraph;
use crate::ops::bias_act::activate;
use crate::ops::{
    Activation, DropoutSeeds, SeWeights, adaptive_avg_pool2d, bias_act, conv2d_bias_act,
    max_pool2d, seeded_dropout, squeeze_excite,
};

/// Max pooling (`-inf` padding, floor mode, gradient to each window's first maximum):
/// `[batch, c, h, w]` -> `[batch, c, (h + 2p - k)/s + 1, (w + 2p - k)/s + 1]`.
pub struct MaxPool {
    /// Window side `k`.
    pub kernel: usize,
    /// Step `s` between windows.
    pub stride: usize,
    /// `-inf` padding `p` on every side (at most `k / 2`).
    pub padding: usize,
}

impl Stage for MaxPool {
    fn forward(&self, x: &Tensor, _train: bool) -> Result<Tensor> {
        Ok(max_pool2d(x, self.kernel, self.stride, self.padding)?)
    }

    fn to_onnx(&self, g: &mut OnnxGraph, x: &str, _input: &[usize]) -> Result<String> {
        Ok(g.max_pool(x, self.kernel, self.stride, self.padding))
    }

    fn bias_probing(&self) -> BiasProbing {
        BiasProbing::NoBias
    }

    fn output_shape(&self, input: &[usize]) -> Vec<usize> {
        let out = |n: usize| (n + 2 * self.padding - self.kernel) / self.stride + 1;
        vec![input[0], out(input[1]), out(input[2])]
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

/// A dense convolution with its own bias, then an activation (VGG's conv + ReLU):
/// `[batch, in, h, w]` -> `[batch, out, h', w']`.
pub struct ConvAct {
    /// `[out, in, k, k]`.
    weight: Tensor,
    /// `[out]`.
    bias: Tensor,
    stride: usize,
    padding: usize,
    act: Activation,
}

impl ConvAct {
    /// `weight` `[out, in, k, k]`, `bias` `[out]`.
    pub fn new(
        weight: Tensor,
        bias: Tensor,
        stride: usize,
        padding: usize,
        act: Activation,
    ) -> Self {
        ConvAct {
            weight,
            bias,
            stride,
            padding,
            act,
        }
    }
}

impl Stage for ConvAct {
    fn forward(&self, x: &Tensor, _train: bool) -> Result<Tensor> {
        Ok(conv2d_bias_act(
            x,
            &self.weight,
            &self.bias,
            self.stride,
            self.padding,
            self.act,
        )?)
    }

    fn bias_probing(&self) -> BiasProbing {
        BiasProbing::Own
    }

    /// The convolution plus its bias, the probe, the activation.
    fn forward_probed(&self, x: &Tensor, probes: &mut BiasProbes) -> Result<Tensor> {
        let y = x.conv2d(&self.weight, self.padding, self.stride, 1, 1)?;
        let z = y.broadcast_add(&self.bias.reshape((1, self.bias.dim(0)?, 1, 1))?)?;
        Ok(activate(&probes.tap(&z, &self.bias)?, self.act)?)
    }

    fn to_onnx(&self, g: &mut OnnxGraph, x: &str, _input: &[usize]) -> Result<String> {
        let y = g.conv(x, &self.weight, &self.bias, self.stride, self.padding, 1)?;
        g.activation(&y, self.act)
    }

    fn output_shape(&self, input: &[usize]) -> Vec<usize> {
        let k = self.weight.dims()[3];
        let out = |n: usize| (n + 2 * self.padding - k) / self.stride + 1;
        vec![self.weight.dims()[0], out(input[1]), out(input[2])]
    }

    fn macs(&self, input: &[usize]) -> u64 {
        let out = self.output_shape(input);
        let per_output: usize = self.weight.dims()[1..].iter().product();
        (out.iter().product::<usize>() * per_output) as u64
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

/// Dropout on the input (training only), a dense layer, an activation:
/// `[batch, in]` -> `[batch, out]` (VGG's `classifier.0` / `classifier.3` with their ReLU).
pub struct DenseAct {
    /// `[out, in]`.
    weight: Tensor,
    /// `[out]`.
    bias: Tensor,
    act: Activation,
    dropout: f32,
    seeds: DropoutSeeds,
}

impl DenseAct {
    /// `weight` `[out, in]`, `bias` `[out]`; `dropout` is the drop probability of the input
    /// in training.
    pub fn new(weight: Tensor, bias: Tensor, act: Activation, dropout: f32) -> Self {
        DenseAct {
            weight,
            bias,
            act,
            dropout,
            seeds: DropoutSeeds::new(0),
        }
    }
}

impl Stage for DenseAct {
    fn forward(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        let x = if train && self.dropout > 0.0 {
            seeded_dropout(x, self.dropout, self.seeds.next())?
        } else {
            x.clone()
        };
        let y = x.matmul(&self.weight.t()?)?;
        Ok(bias_act(&y, &self.bias, self.act)?)
    }

    /// A Gemm, then the activation (dropout is training-only).
    fn to_onnx(&self, g: &mut OnnxGraph, x: &str, _input: &[usize]) -> Result<String> {
        let y = g.dense(x, &self.weight, &self.bias)?;
        g.activation(&y, self.act)
    }

    fn bias_probing(&self) -> BiasProbing {
        BiasProbing::NoBias
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

/// Adaptive average pooling to `size x size`, then flatten (torchvision VGG's `avgpool` +
/// `flatten`): `[batch, c, h, w]` -> `[batch, c * size * size]`.
pub struct AdaptiveAvgPoolFlatten {
    /// Side of the pooled grid (7 for VGG).
    pub size: usize,
}

impl Stage for AdaptiveAvgPoolFlatten {
    fn forward(&self, x: &Tensor, _train: bool) -> Result<Tensor> {
        let y = adaptive_avg_pool2d(x, (self.size, self.size))?;
        Ok(y.flatten_from(1)?)
    }

    fn bias_probing(&self) -> BiasProbing {
        BiasProbing::NoBias
    }

    /// Flatten alone when the input is already `size x size`, an AveragePool first when its
    /// sides are a multiple of `size`, else PyTorch's uneven (or overlapping) bins as two
    /// MatMuls ([`OnnxGraph::adaptive_avg_pool`]).
    fn to_onnx(&self, g: &mut OnnxGraph, x: &str, input: &[usize]) -> Result<String> {
        let (h, w) = (input[1], input[2]);
        let n = self.size;
        let pooled = if h == n && w == n {
            x.to_string()
        } else if h == w && h % n == 0 {
            g.avg_pool(x, h / n)
        } else {
            g.adaptive_avg_pool(x, [h, w], [n, n])?
        };
        Ok(g.flatten(&pooled))
    }

    fn output_shape(&self, input: &[usize]) -> Vec<usize> {
        vec![input[0] * self.size * self.size]
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

/// The shape of one mobile inverted bottleneck ([`MbConv`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MbConvConfig {
    /// Side of the depthwise kernel (3 or 5).
    pub kernel: usize,
    /// Stride of the depthwise conv (1 or 2).
    pub stride: usize,
    /// Expansion factor of the hidden width (1 or 6).
    pub expand: usize,
    /// Input channels.
    pub in_channels: usize,
    /// Output channels.
    pub out_channels: usize,
}

impl MbConvConfig {
    /// Channels of the expanded (hidden) tensor.
    pub fn hidden(&self) -> usize {
        self.in_channels * self.expand
    }

    /// Whether the input is added to the output (stride 1, same channels).
    pub fn has_residual(&self) -> bool {
        self.stride == 1 && self.in_channels == self.out_channels
    }
}

/// Squeeze-excitation inside a block ([`squeeze_excite`]): `[batch, c, h, w]` scaled per
/// channel by `gate(expand(act(reduce(mean))))`.
pub struct SqueezeExcite {
    /// The checkpoint's own tensors, as it shapes them (`[r, c, 1, 1]` or `[r, c]`): the
    /// PyTorch export finds a fine-tuned tensor's checkpoint name by its identity.
    weights: SeWeights,
    act: Activation,
    gate: Activation,
}

impl SqueezeExcite {
    /// From the checkpoint's 1x1 convolutions: `reduce_w` `[r, c, 1, 1]` (or `[r, c]`),
    /// `reduce_b` `[r]`, `expand_w` `[c, r, 1, 1]` (or `[c, r]`), `expand_b` `[c]`; `act`
    /// after the reduction (SiLU, ReLU), `gate` on the expansion (sigmoid, hard-sigmoid).
    pub fn new(
        [reduce_w, reduce_b, expand_w, expand_b]: [Tensor; 4],
        act: Activation,
        gate: Activation,
    ) -> Result<Self> {
        let se = SqueezeExcite {
            weights: SeWeights {
                reduce_w,
                reduce_b,
                expand_w,
                expand_b,
            },
            act,
            gate,
        };
        se.matrices()?;
        Ok(se)
    }

    /// The weights with the convolutions as matrices (`[r, c]`, `[c, r]`), views of the
    /// tensors held (whatever their shape: a run saved before may hold matrices).
    fn matrices(&self) -> Result<SeWeights> {
        let matrix = |w: &Tensor| -> Result<Tensor> {
            let (o, i) = (w.dim(0)?, w.dim(1)?);
            Ok(w.reshape((o, i))?)
        };
        let w = &self.weights;
        Ok(SeWeights {
            reduce_w: matrix(&w.reduce_w)?,
            reduce_b: w.reduce_b.clone(),
            expand_w: matrix(&w.expand_w)?,
            expand_b: w.expand_b.clone(),
        })
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        Ok(squeeze_excite(x, &self.matrices()?, self.act, self.gate)?)
    }

    /// The same as ONNX nodes ([`OnnxGraph::squeeze_excite`]).
    fn to_onnx(&self, g: &mut OnnxGraph, x: &str) -> Result<String> {
        let w = &self.weights;
        let tensors = [&w.reduce_w, &w.reduce_b, &w.expand_w, &w.expand_b];
        g.squeeze_excite(x, tensors, self.act, self.gate)
    }

    /// [`SqueezeExcite::forward`] with the reduction's and the expansion's outputs probed
    /// before their activation, each `[batch, channels, 1, 1]` (1x1 convolutions with a bias
    /// in PyTorch, which pytorch-grad-cam's FullGrad counts; on a 1x1 map their terms scale
    /// to 0).
    fn forward_probed(&self, x: &Tensor, probes: &mut BiasProbes) -> Result<Tensor> {
        let (b, c, _, _) = x.dims4()?;
        let w = &self.matrices()?;
        let r = w.reduce_b.dim(0)?;
        let dense = |v: &Tensor, weight: &Tensor, bias: &Tensor, n: usize| -> Result<Tensor> {
            Ok(v.matmul(&weight.t()?)?
                .broadcast_add(bias)?
                .reshape((b, n, 1, 1))?)
        };
        let z = dense(&x.mean((2, 3))?, &w.reduce_w, &w.reduce_b, r)?;
        let h = activate(&probes.tap(&z, &w.reduce_b)?, self.act)?;
        let z = dense(&h.reshape((b, r))?, &w.expand_w, &w.expand_b, c)?;
        let gate = activate(&probes.tap(&z, &w.expand_b)?, self.gate)?;
        Ok(x.broadcast_mul(&gate)?)
    }

    fn param_count(&self) -> usize {
        let w = &self.weights;
        [&w.reduce_w, &w.reduce_b, &w.expand_w, &w.expand_b]
            .iter()
            .map(|t| t.elem_count())
            .sum()
    }

    /// Multiply-accumulates per image: the two small products and the channel scaling.
    fn macs(&self, input: &[usize]) -> u64 {
        (2 * self.weights.reduce_w.elem_count() + input.iter().product::<usize>()) as u64
    }

    /// Named `reduce.weight`, `reduce.bias`, `expand.weight`, `expand.bias`.
    fn tensors_mut(&mut self) -> Vec<(String, &mut Tensor)> {
        let w = &mut self.weights;
        vec![
            ("reduce.weight".into(), &mut w.reduce_w),
            ("reduce.bias".into(), &mut w.reduce_b),
            ("expand.weight".into(), &mut w.expand_w),
            ("expand.bias".into(), &mut w.expand_b),
        ]
    }
}

/// Mobile inverted bottleneck (EfficientNet-Lite's MBConv, MobileNetV2's inverted residual,
/// EfficientNet's and MobileNetV3's with squeeze-excitation): 1x1 expand -> depthwise kxk ->
/// optional squeeze-excitation -> 1x1 project (linear), plus the input when stride is 1 and
/// channels match. The activations are the convolutions' own.
pub struct MbConv {
    expand: Option<ConvBnAct>,
    depthwise: ConvBnAct,
    se: Option<SqueezeExcite>,
    project: ConvBnAct,
    residual: bool,
}

impl MbConv {
    /// A block from its convolutions; `expand` is `None` when the expansion factor is 1.
    pub fn new(
        expand: Option<ConvBnAct>,
        depthwise: ConvBnAct,
        project: ConvBnAct,
        residual: bool,
    ) -> Self {
        MbConv {
            expand,
            depthwise,
            se: None,
            project,
            residual,
        }
    }

    /// The same block with squeeze-excitation between the depthwise and the projection.
    pub fn with_squeeze_excite(mut self, se: SqueezeExcite) -> Self {
        self.se = Some(se);
        self
    }
}

impl Stage for MbConv {
    /// `[batch, in, h, w]` -> `[batch, out, h/stride, w/stride]`.
    fn forward(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        // Expansion and depthwise convolution in one pass: the expanded tensor (six times the
        // input) is never written out.
        let h = match &self.expand {
            Some(e) => e.forward_then_depthwise(&self.depthwise, x, train)?,
            None => self.depthwise.forward(x, train)?,
        };
        let h = match &self.se {
            Some(se) => se.forward(&h)?,
            None => h,
        };
        // The residual is added in the projection's own pass.
        if self.residual {
            self.project.forward_with_residual(&h, x, train)
        } else {
            self.project.forward(&h, train)
        }
    }

    fn output_shape(&self, input: &[usize]) -> Vec<usize> {
        let hidden = match &self.expand {
            Some(e) => e.output_shape(input),
            None => input.to_vec(),
        };
        self.project
            .output_shape(&self.depthwise.output_shape(&hidden))
    }

    fn macs(&self, input: &[usize]) -> u64 {
        let (expand_macs, hidden) = match &self.expand {
            Some(e) => (e.macs(input), e.output_shape(input)),
            None => (0, input.to_vec()),
        };
        let dw_out = self.depthwise.output_shape(&hidden);
        let se_macs = self.se.as_ref().map_or(0, |se| se.macs(&dw_out));
        expand_macs + self.depthwise.macs(&hidden) + se_macs + self.project.macs(&dw_out)
    }

    fn param_count(&self) -> usize {
        self.expand.as_ref().map_or(0, |e| e.param_count())
            + self.depthwise.param_count()
            + self.se.as_ref().map_or(0, |se| se.param_count())
            + self.project.param_count()
    }

    /// Named `expand.*`, `depthwise.*`, `se.*` (with squeeze-excitation), `project.*`.
    fn tensors_mut(&mut self) -> Vec<(String, &mut Tensor)> {
        let mut out = Vec::new();
        if let Some(e) = self.expand.as_mut() {
            out.extend(prefixed("expand".into(), e));
        }
        out.extend(prefixed("depthwise".into(), &mut self.depthwise));
        if let Some(se) = self.se.as_mut() {
            out.extend(
                se.tensors_mut()
                    .into_iter()
                    .map(|(n, t)| (format!("se.{n}"), t)),
            );
        }
        out.extend(prefixed("project".into(), &mut self.project));
        out
    }

    /// `expand`, `depthwise` convolutions, the squeeze-excitation, the `project`
    /// convolution, plus an Add of the input.
    fn to_onnx(&self, g: &mut OnnxGraph, x: &str, input: &[usize]) -> Result<String> {
        let (h, hidden) = match &self.expand {
            Some(e) => (
                g.part("expand", |g| e.to_onnx(g, x, input))?,
                e.output_shape(input),
            ),
            None => (x.to_string(), input.to_vec()),
        };
        let h = g.part("depthwise", |g| self.depthwise.to_onnx(g, &h, &hidden))?;
        let h = match &self.se {
            Some(se) => se.to_onnx(g, &h)?,
            None => h,
        };
        let dw_out = self.depthwise.output_shape(&hidden);
        let y = g.part("project", |g| self.project.to_onnx(g, &h, &dw_out))?;
        Ok(if self.residual { g.add(&y, x) } else { y })
    }

    fn batchnorm_layers(&mut self) -> Vec<&mut ConvBnAct> {
        let mut out: Vec<&mut ConvBnAct> = self.expand.iter_mut().collect();
        out.push(&mut self.depthwise);
        out.push(&mut self.project);
        out
    }

    fn bias_probing(&self) -> BiasProbing {
        BiasProbing::Own
    }

    /// The three convolutions one after the other (not fused) and the squeeze-excitation
    /// between the last two, each probed, plus the input.
    fn forward_probed(&self, x: &Tensor, probes: &mut BiasProbes) -> Result<Tensor> {
        let h = match &self.expand {
            Some(e) => e.forward_probed(x, probes)?,
            None => x.clone(),
        };
        let h = self.depthwise.forward_probed(&h, probes)?;
        let h = match &self.se {
            Some(se) => se.forward_probed(&h, probes)?,
            None => h,
        };
        let y = self.project.forward_probed(&h, probes)?;
        Ok(if self.residual { (y + x)? } else { y })
    }
}

/// A conv's tensors named `<part>.<name>` (e.g. `0.conv1.weight` for `part` = `0.conv1`).
pub(crate) fn prefixed<'a>(
    part: String,
    conv: &'a mut ConvBnAct,
) -> impl Iterator<Item = (String, &'a mut Tensor)> + 'a {
    conv.tensors_mut()
        .into_iter()
        .map(move |(name, t)| (format!("{part}.{name}"), t))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::graph::layers::ConvKind;
    use crate::interchange::onnx::eval_stage;
    use candle_core::Device;

    /// A conv + BatchNorm (random) of `kind` from `inp` to `out` channels, kernel `k`.
    fn conv(kind: ConvKind, inp: usize, out: usize, k: usize, act: Activation) -> ConvBnAct {
        let dev = Device::Cpu;
        let r = |shape: &[usize]| Tensor::randn(0f32, 0.5, shape, &dev).unwrap();
        let bn = crate::ops::BatchNormParams {
            weight: (r(&[out]) + 1.0).unwrap(),
            bias: r(&[out]),
            running_mean: r(&[out]),
            running_var: (r(&[out]).abs().unwrap() + 0.5).unwrap(),
            eps: 1e-3,
        };
        ConvBnAct::new(kind, &r(&[out, inp, k, k]), &bn, act).unwrap()
    }

    /// An inverted residual with squeeze-excitation, as EfficientNet (SiLU, sigmoid gate,
    /// TensorFlow "same" padding, stride 2) and MobileNetV3 (ReLU inside the SE, hard-sigmoid
    /// gate, hard-swish, the residual) build it: its ONNX description gives its output.
    #[test]
    fn squeeze_excitation_blocks_export_to_onnx() -> Result<()> {
        use Activation::{HardSigmoid, HardSwish, Relu, Sigmoid, Silu};
        for (act, se_act, gate, stride, tf_same) in [
            (Silu, Silu, Sigmoid, 2, true),
            (HardSwish, Relu, HardSigmoid, 1, false),
        ] {
            let (c, hidden, r) = (8, 24, 6);
            let mut depthwise = conv(
                ConvKind::Depthwise { stride, padding: 2 },
                1,
                hidden,
                5,
                act,
            );
            if tf_same {
                depthwise = depthwise.with_tf_same_padding();
            }
            let expand = conv(ConvKind::Pointwise, c, hidden, 1, act);
            let project = conv(ConvKind::Pointwise, hidden, c, 1, Activation::Identity);
            let dev = Device::Cpu;
            let t = |shape: &[usize]| Tensor::randn(0f32, 0.5, shape, &dev);
            let se = SqueezeExcite::new(
                [
                    t(&[r, hidden, 1, 1])?,
                    t(&[r])?,
                    t(&[hidden, r, 1, 1])?,
                    t(&[hidden])?,
                ],
                se_act,
                gate,
            )?;
            let block =
                MbConv::new(Some(expand), depthwise, project, stride == 1).with_squeeze_excite(se);
            let x = Tensor::randn(0f32, 1.0, (2, c, 10, 10), &dev)?;
            let expected = block.forward(&x, false)?;
            let found = eval_stage(&block, &x)?;
            assert_eq!(found.dims(), expected.dims());
            let diff = (found - &expected)?.abs()?.max_all()?.to_scalar::<f32>()?;
            // The gate scales each channel by 0..1: skipping it would be far off.
            assert!(diff < 1e-4, "{act:?}: {diff}");
        }
        Ok(())
    }

    /// Its ONNX description, run by candle-onnx, gives the stage's own output: evenly divided
    /// (8 -> 4, an AveragePool), uneven (8 -> 7, 13 -> 7: windows of 2 and 3 rows, overlapping)
    /// and larger (5 -> 7, each row in up to two windows), square or not.
    #[test]
    fn adaptive_pooling_exports_pytorchs_bins_for_any_size() -> Result<()> {
        for (size, (h, w)) in [
            (4, (8, 8)),
            (7, (8, 8)),
            (7, (13, 13)),
            (7, (5, 5)),
            (3, (10, 6)),
        ] {
            let stage = AdaptiveAvgPoolFlatten { size };
            let x = Tensor::randn(0f32, 1.0, (2, 3, h, w), &Device::Cpu)?;
            let expected = stage.forward(&x, false)?;
            let found = eval_stage(&stage, &x)?;
            assert_eq!(found.dims(), [2, 3 * size * size]);
            let diff = (found - &expected)?.abs()?.max_all()?.to_scalar::<f32>()?;
            assert!(diff < 1e-6, "{h}x{w} -> {size}: {diff}");
        }
        // 8 -> 7 by hand: cell 1 averages rows 1..3 (floor(8/7) = 1, ceil(16/7) = 3).
        let x = Tensor::arange(0f32, 8.0, &Device::Cpu)?
            .reshape((1, 1, 8, 1))?
            .broadcast_as((1, 1, 8, 8))?
            .contiguous()?;
        let rows: Vec<f32> = eval_stage(&AdaptiveAvgPoolFlatten { size: 7 }, &x)?
            .reshape((7, 7))?
            .narrow(1, 0, 1)?
            .flatten_all()?
            .to_vec1()?;
        assert_eq!(rows, [0.5, 1.5, 2.5, 3.5, 4.5, 5.5, 6.5]);
        Ok(())
    }
}
