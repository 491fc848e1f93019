//! Stages the classic architectures share beyond [`crate::graph::layers`]: max pooling,
//! a convolution with its own bias (no BatchNorm), a dense layer with activation, adaptive
//! average pooling + flatten, and the prefix helper that names a stage's tensors.

use candle_core::Tensor;

use crate::Result;
use crate::graph::Stage;
use crate::graph::layers::ConvBnAct;
use crate::interchange::onnx::OnnxGraph;
use crate::ops::{
    Activation, DropoutSeeds, adaptive_avg_pool2d, bias_act, conv2d_bias_act, max_pool2d,
    seeded_dropout,
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

    /// Flatten alone when the input is already `size x size`, an AveragePool first when its
    /// sides are a multiple of `size`; other sizes (uneven or upsampling windows) are refused.
    fn to_onnx(&self, g: &mut OnnxGraph, x: &str, input: &[usize]) -> Result<String> {
        let (h, w) = (input[1], input[2]);
        if h != w || h % self.size != 0 {
            return Err(crate::Error::Model(format!(
                "adaptive average pooling of {h}x{w} to {0}x{0} has uneven windows, which \
                 ONNX cannot express; export at an input size whose feature map here is a \
                 multiple of {0}",
                self.size
            )));
        }
        let pooled = if h == self.size {
            x.to_string()
        } else {
            g.avg_pool(x, h / self.size)
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

/// Mobile inverted bottleneck (EfficientNet-Lite's MBConv, MobileNetV2's inverted residual):
/// 1x1 expand (ReLU6) -> depthwise kxk (ReLU6) -> 1x1 project (linear), plus the input when
/// stride is 1 and channels match.
pub struct MbConv {
    expand: Option<ConvBnAct>,
    depthwise: ConvBnAct,
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
            project,
            residual,
        }
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
        expand_macs + self.depthwise.macs(&hidden) + self.project.macs(&dw_out)
    }

    fn param_count(&self) -> usize {
        self.expand.as_ref().map_or(0, |e| e.param_count())
            + self.depthwise.param_count()
            + self.project.param_count()
    }

    /// Named `expand.*`, `depthwise.*`, `project.*` (`weight`, `bias`).
    fn tensors_mut(&mut self) -> Vec<(String, &mut Tensor)> {
        let mut out = Vec::new();
        if let Some(e) = self.expand.as_mut() {
            out.extend(prefixed("expand".into(), e));
        }
        out.extend(prefixed("depthwise".into(), &mut self.depthwise));
        out.extend(prefixed("project".into(), &mut self.project));
        out
    }

    /// `expand`, `depthwise`, `project` convolutions, plus an Add of the input.
    fn to_onnx(&self, g: &mut OnnxGraph, x: &str, input: &[usize]) -> Result<String> {
        let (h, hidden) = match &self.expand {
            Some(e) => (
                g.part("expand", |g| e.to_onnx(g, x, input))?,
                e.output_shape(input),
            ),
            None => (x.to_string(), input.to_vec()),
        };
        let h = g.part("depthwise", |g| self.depthwise.to_onnx(g, &h, &hidden))?;
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
