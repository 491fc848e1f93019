//! ResNet-18/34 (BasicBlock) and ResNet-50/101 (Bottleneck, stride on the 3x3 conv as in
//! torchvision's "v1.5"), loading torchvision's key names (`conv1.weight`, `bn1.*`,
//! `layer1.0.conv1.weight`, `layer2.0.downsample.0.weight`, `layer2.0.downsample.1.*`,
//! `fc.weight` ...; timm's ResNets use the same names). BatchNorm (eps 1e-5) is folded.
//!
//! Layer ids: `conv1` (7x7/s2 conv + BN + ReLU, `[64, 112, 112]` at 224), `maxpool` (3x3/s2/p1,
//! `[64, 56, 56]`), `layer1` .. `layer4` (one stage per group of blocks; `[256·e/4 .. 512·e,
//! 56 .. 7, 56 .. 7]` with expansion `e` = 1 or 4), `pooled` (`[512·e]`), `logits` (absent for a
//! feature-only checkpoint without `fc.*`).

use candle_core::Tensor;

use super::blocks::{MaxPool, prefixed};
use super::checkpoint::{Checkpoint, ExpectedTensors, expected_batchnorm};
use super::detect::{Detected, Shapes, classes, detected, indices_after};
use super::registry::Architecture;
use crate::graph::classifier::Classifier;
use crate::graph::layers::{ConvBnAct, ConvKind, GlobalAvgPool};
use crate::graph::probe::{BiasProbes, BiasProbing};
use crate::graph::{Network, Stage};
use crate::interchange::onnx::OnnxGraph;
use crate::ops::Activation;
use crate::{Error, Result};

/// BatchNorm epsilon of torchvision's ResNets.
const BN_EPS: f64 = 1e-5;
const STEM_CHANNELS: usize = 64;
/// Bottleneck width of each group (`planes` in torchvision).
const WIDTHS: [usize; 4] = [64, 128, 256, 512];

/// The layer class-activation maps look at by default.
pub const DEFAULT_CAM_LAYER: &str = "layer4";

/// The architectures this module builds.
pub const ARCHITECTURES: [&str; 4] = ["resnet18", "resnet34", "resnet50", "resnet101"];

/// The residual block type.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BlockKind {
    /// Two 3x3 convs (`conv1`, `conv2`), expansion 1.
    Basic,
    /// 1x1 reduce, 3x3 (strided), 1x1 expand (`conv1` .. `conv3`), expansion 4.
    Bottleneck,
}

impl BlockKind {
    /// Output channels per `planes`.
    pub fn expansion(self) -> usize {
        match self {
            BlockKind::Basic => 1,
            BlockKind::Bottleneck => 4,
        }
    }
}

/// A ResNet variant: block type and blocks per group.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ResNetConfig {
    /// Basic (18/34) or bottleneck (50/101) blocks.
    pub block: BlockKind,
    /// Blocks in `layer1` .. `layer4`, e.g. `[2, 2, 2, 2]` for ResNet-18.
    pub layers: [usize; 4],
}

impl ResNetConfig {
    /// The config of `resnet18`, `resnet34`, `resnet50` or `resnet101`.
    pub fn of(architecture: &str) -> Option<Self> {
        let (block, layers) = match architecture {
            "resnet18" => (BlockKind::Basic, [2, 2, 2, 2]),
            "resnet34" => (BlockKind::Basic, [3, 4, 6, 3]),
            "resnet50" => (BlockKind::Bottleneck, [3, 4, 6, 3]),
            "resnet101" => (BlockKind::Bottleneck, [3, 4, 23, 3]),
            _ => return None,
        };
        Some(ResNetConfig { block, layers })
    }

    /// The architecture name for a block type and block counts, if convlens builds it.
    pub fn name(&self) -> Option<&'static str> {
        ARCHITECTURES
            .into_iter()
            .find(|a| ResNetConfig::of(a) == Some(*self))
    }

    /// Channels of the last group's output (the `pooled` features): 512 or 2048.
    pub fn feature_channels(&self) -> usize {
        WIDTHS[3] * self.block.expansion()
    }

    /// Every block as `(group 1..=4, index, in channels, planes, stride)`.
    fn blocks(&self) -> Vec<(usize, usize, usize, usize, usize)> {
        let mut out = Vec::new();
        let mut inp = STEM_CHANNELS;
        for (g, (&n, &planes)) in self.layers.iter().zip(&WIDTHS).enumerate() {
            for i in 0..n {
                let stride = if g > 0 && i == 0 { 2 } else { 1 };
                out.push((g + 1, i, inp, planes, stride));
                inp = planes * self.block.expansion();
            }
        }
        out
    }

    /// The convs of one block as `(name, out, in, k, stride)`; the downsample path last as
    /// `downsample.0` when the block changes shape.
    fn block_convs(
        &self,
        inp: usize,
        planes: usize,
        stride: usize,
    ) -> Vec<(&'static str, usize, usize, usize, usize)> {
        let out = planes * self.block.expansion();
        let mut convs = match self.block {
            BlockKind::Basic => vec![
                ("conv1", planes, inp, 3, stride),
                ("conv2", planes, planes, 3, 1),
            ],
            BlockKind::Bottleneck => vec![
                ("conv1", planes, inp, 1, 1),
                ("conv2", planes, planes, 3, stride),
                ("conv3", out, planes, 1, 1),
            ],
        };
        if stride != 1 || inp != out {
            convs.push(("downsample.0", out, inp, 1, stride));
        }
        convs
    }
}

/// The BatchNorm key prefix of a block conv: `conv2` -> `bn2`, `downsample.0` -> `downsample.1`.
fn bn_name(conv: &str) -> String {
    match conv.strip_prefix("conv") {
        Some(n) => format!("bn{n}"),
        None => "downsample.1".into(),
    }
}

/// Every tensor a ResNet checkpoint must hold, with its shape; `num_classes` 0 means a
/// feature-only checkpoint (no `fc.*`).
pub fn expected_tensors(cfg: &ResNetConfig, num_classes: usize) -> ExpectedTensors {
    let mut t: ExpectedTensors = vec![("conv1.weight".into(), vec![STEM_CHANNELS, 3, 7, 7])];
    t.extend(expected_batchnorm("bn1", STEM_CHANNELS));
    for (g, i, inp, planes, stride) in cfg.blocks() {
        let p = format!("layer{g}.{i}");
        for (name, out, cin, k, _) in cfg.block_convs(inp, planes, stride) {
            t.push((format!("{p}.{name}.weight"), vec![out, cin, k, k]));
            t.extend(expected_batchnorm(&format!("{p}.{}", bn_name(name)), out));
        }
    }
    if num_classes > 0 {
        let c = cfg.feature_channels();
        t.push(("fc.weight".into(), vec![num_classes, c]));
        t.push(("fc.bias".into(), vec![num_classes]));
    }
    t
}

/// One residual block: a chain of conv + BN (+ ReLU but the last), plus the input (through the
/// downsample conv + BN when the shape changes), then ReLU.
struct Block {
    /// `conv1`, `conv2` (, `conv3`) with BatchNorm folded.
    convs: Vec<ConvBnAct>,
    downsample: Option<ConvBnAct>,
}

impl Block {
    fn forward(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        let Some((last, first)) = self.convs.split_last() else {
            return Err(Error::Model("a residual block without convolutions".into()));
        };
        let mut h = x.clone();
        for conv in first {
            h = conv.forward(&h, train)?;
        }
        let identity = match &self.downsample {
            Some(d) => d.forward(x, train)?,
            None => x.clone(),
        };
        // The last convolution, the residual add and the ReLU in one pass.
        last.forward_add_act(&h, &identity, Activation::Relu, train)
    }

    /// The block unfused, each convolution run by `conv` (probed for FullGrad): the
    /// convolutions, the residual add, then the fused ops' ReLU (not candle's, so that guided
    /// backpropagation reaches it).
    fn run(
        &self,
        x: &Tensor,
        conv: &mut dyn FnMut(&ConvBnAct, &Tensor) -> Result<Tensor>,
    ) -> Result<Tensor> {
        let mut h = x.clone();
        for c in &self.convs {
            h = conv(c, &h)?;
        }
        let identity = match &self.downsample {
            Some(d) => conv(d, x)?,
            None => x.clone(),
        };
        Ok(crate::ops::bias_act::activate(
            &(h + identity)?,
            Activation::Relu,
        )?)
    }

    fn output_shape(&self, input: &[usize]) -> Vec<usize> {
        self.convs
            .iter()
            .fold(input.to_vec(), |s, c| c.output_shape(&s))
    }

    fn macs(&self, input: &[usize]) -> u64 {
        let mut shape = input.to_vec();
        let mut macs = 0;
        for c in &self.convs {
            macs += c.macs(&shape);
            shape = c.output_shape(&shape);
        }
        macs + self.downsample.as_ref().map_or(0, |d| d.macs(input))
    }

    fn param_count(&self) -> usize {
        self.convs.iter().map(|c| c.param_count()).sum::<usize>()
            + self.downsample.as_ref().map_or(0, |d| d.param_count())
    }
}

/// One group of residual blocks (`layer1` .. `layer4`):
/// `[batch, in, h, w]` -> `[batch, planes·expansion, h/stride, w/stride]`.
pub struct ResLayer {
    blocks: Vec<Block>,
}

impl Stage for ResLayer {
    fn forward(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        let mut h = x.clone();
        for b in &self.blocks {
            h = b.forward(&h, train)?;
        }
        Ok(h)
    }

    fn output_shape(&self, input: &[usize]) -> Vec<usize> {
        self.blocks
            .iter()
            .fold(input.to_vec(), |s, b| b.output_shape(&s))
    }

    fn macs(&self, input: &[usize]) -> u64 {
        let mut shape = input.to_vec();
        let mut macs = 0;
        for b in &self.blocks {
            macs += b.macs(&shape);
            shape = b.output_shape(&shape);
        }
        macs
    }

    fn param_count(&self) -> usize {
        self.blocks.iter().map(Block::param_count).sum()
    }

    /// Named `<block>.<conv>.weight|bias`, e.g. `0.conv1.weight`, `0.downsample.bias`.
    fn tensors_mut(&mut self) -> Vec<(String, &mut Tensor)> {
        let mut out = Vec::new();
        for (i, b) in self.blocks.iter_mut().enumerate() {
            for (j, c) in b.convs.iter_mut().enumerate() {
                out.extend(prefixed(format!("{i}.conv{}", j + 1), c));
            }
            if let Some(d) = b.downsample.as_mut() {
                out.extend(prefixed(format!("{i}.downsample"), d));
            }
        }
        out
    }

    /// Per block: the convolutions in a chain, the downsample beside them, Add, Relu.
    fn to_onnx(&self, g: &mut OnnxGraph, x: &str, input: &[usize]) -> Result<String> {
        let mut h = x.to_string();
        let mut shape = input.to_vec();
        for (i, b) in self.blocks.iter().enumerate() {
            let block_in = h.clone();
            let mut y = h.clone();
            let mut s = shape.clone();
            for (j, conv) in b.convs.iter().enumerate() {
                y = g.part(&format!("{i}.conv{}", j + 1), |g| conv.to_onnx(g, &y, &s))?;
                s = conv.output_shape(&s);
            }
            let identity = match &b.downsample {
                Some(d) => g.part(&format!("{i}.downsample"), |g| {
                    d.to_onnx(g, &block_in, &shape)
                })?,
                None => block_in,
            };
            let sum = g.add(&y, &identity);
            h = g.activation(&sum, Activation::Relu)?;
            shape = s;
        }
        Ok(h)
    }

    fn batchnorm_layers(&mut self) -> Vec<&mut ConvBnAct> {
        self.blocks
            .iter_mut()
            .flat_map(|b| b.convs.iter_mut().chain(b.downsample.as_mut()))
            .collect()
    }

    fn bias_probing(&self) -> BiasProbing {
        BiasProbing::Own
    }

    fn forward_probed(&self, x: &Tensor, probes: &mut BiasProbes) -> Result<Tensor> {
        let mut h = x.clone();
        for b in &self.blocks {
            h = b.run(&h, &mut |conv, t| conv.forward_probed(t, probes))?;
        }
        Ok(h)
    }
}

/// The conv kind of a `k x k` conv at `stride` with "same" padding.
fn conv_kind(k: usize, stride: usize) -> ConvKind {
    if k == 1 && stride == 1 {
        ConvKind::Pointwise
    } else {
        ConvKind::Dense {
            stride,
            padding: (k - 1) / 2,
        }
    }
}

/// Builds a ResNet from an audited checkpoint (`num_classes` 0: feature-only, the network
/// ends at `pooled`). Input `[batch, 3, h, w]`, output `[batch, num_classes]` (or
/// `[batch, 512·expansion]`).
pub fn build(ckpt: &Checkpoint, architecture: &str, num_classes: usize) -> Result<Network> {
    let cfg = ResNetConfig::of(architecture).ok_or_else(|| {
        crate::Error::Model(format!(
            "unknown ResNet `{architecture}`; known: {}",
            ARCHITECTURES.join(", ")
        ))
    })?;
    ckpt.audit(architecture, &expected_tensors(&cfg, num_classes))?;
    let mut stages: Vec<(String, Box<dyn Stage>)> = Vec::new();
    stages.push((
        "conv1".into(),
        Box::new(ConvBnAct::new(
            ConvKind::Dense {
                stride: 2,
                padding: 3,
            },
            &ckpt.get("conv1.weight")?,
            &ckpt.batchnorm("bn1", BN_EPS)?,
            Activation::Relu,
        )?),
    ));
    stages.push((
        "maxpool".into(),
        Box::new(MaxPool {
            kernel: 3,
            stride: 2,
            padding: 1,
        }),
    ));
    let mut groups: Vec<Vec<Block>> = (0..4).map(|_| Vec::new()).collect();
    for (g, i, inp, planes, stride) in cfg.blocks() {
        let p = format!("layer{g}.{i}");
        let mut convs = Vec::new();
        let mut downsample = None;
        let specs = cfg.block_convs(inp, planes, stride);
        let main_convs = specs.iter().filter(|s| s.0.starts_with("conv")).count();
        for (j, &(name, _, _, k, s)) in specs.iter().enumerate() {
            let last = j + 1 == main_convs;
            let act = if name.starts_with("conv") && !last {
                Activation::Relu
            } else {
                Activation::Identity
            };
            let conv = ConvBnAct::new(
                conv_kind(k, s),
                &ckpt.get(&format!("{p}.{name}.weight"))?,
                &ckpt.batchnorm(&format!("{p}.{}", bn_name(name)), BN_EPS)?,
                act,
            )?;
            if name.starts_with("conv") {
                convs.push(conv);
            } else {
                downsample = Some(conv);
            }
        }
        groups[g - 1].push(Block { convs, downsample });
    }
    for (g, blocks) in groups.into_iter().enumerate() {
        stages.push((format!("layer{}", g + 1), Box::new(ResLayer { blocks })));
    }
    stages.push(("pooled".into(), Box::new(GlobalAvgPool)));
    if num_classes > 0 {
        stages.push((
            "logits".into(),
            Box::new(Classifier::new(
                ckpt.get("fc.weight")?,
                ckpt.get("fc.bias")?,
                0.0,
            )),
        ));
    }
    Ok(Network::new(3, stages))
}

/// The ResNet family in the [`registry`](super::registry).
pub struct ResNet;

impl Architecture for ResNet {
    fn family(&self) -> &'static str {
        "ResNet"
    }

    fn ids(&self) -> &'static [&'static str] {
        &ARCHITECTURES
    }

    fn key_names(&self) -> &'static str {
        "torchvision/timm `conv1`, `bn1`, `layer1..4`, `fc`"
    }

    fn expected_tensors(&self, id: &str, num_classes: usize) -> Option<ExpectedTensors> {
        ResNetConfig::of(id).map(|cfg| expected_tensors(&cfg, num_classes))
    }

    fn build(&self, id: &str, ckpt: &Checkpoint, num_classes: usize) -> Result<Network> {
        build(ckpt, id, num_classes)
    }

    fn default_cam_layer(&self, _id: &str) -> String {
        DEFAULT_CAM_LAYER.into()
    }

    fn detect(&self, shapes: &Shapes) -> Option<Result<Detected>> {
        let layer1 = shapes.keys().any(|k| k.starts_with("layer1."));
        (shapes.contains_key("conv1.weight") && layer1).then(|| detect_resnet(shapes))
    }
}

fn detect_resnet(shapes: &Shapes) -> Result<Detected> {
    let counts: Vec<usize> = (1..=4)
        .map(|g| indices_after(shapes, &format!("layer{g}.")).len())
        .collect();
    let block = if shapes.contains_key("layer1.0.conv3.weight") {
        BlockKind::Bottleneck
    } else {
        BlockKind::Basic
    };
    let kind = match block {
        BlockKind::Basic => "BasicBlock (conv1, conv2)",
        BlockKind::Bottleneck => "Bottleneck (conv1..conv3)",
    };
    let counts_text = counts
        .iter()
        .map(usize::to_string)
        .collect::<Vec<_>>()
        .join("-");
    let cfg = ResNetConfig {
        block,
        layers: [counts[0], counts[1], counts[2], counts[3]],
    };
    let Some(name) = cfg.name() else {
        return Err(Error::Model(format!(
            "the weights look like a ResNet with {counts_text} {kind} blocks, which convlens \
             does not build (known: {})",
            ARCHITECTURES.join(", ")
        )));
    };
    let why = format!(
        "keys `conv1.weight`, `bn1.*`, `layer1`..`layer4` (torchvision/timm ResNet) with \
         {counts_text} {kind} blocks: {name}"
    );
    Ok(detected(name, why, classes(shapes, "fc.weight")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tensor_counts_match_torchvision() {
        // torchvision state_dict sizes without `num_batches_tracked`: 102, 182, 267, 522
        // (the resnet18 fixture holds 102 tensors).
        let counts: Vec<usize> = ARCHITECTURES
            .iter()
            .map(|a| expected_tensors(&ResNetConfig::of(a).unwrap(), 1000).len())
            .collect();
        assert_eq!(counts, [102, 182, 267, 522]);
        let r50 = ResNetConfig::of("resnet50").unwrap();
        assert_eq!(r50.name(), Some("resnet50"));
        assert_eq!(r50.feature_channels(), 2048);
        let t = expected_tensors(&r50, 0);
        assert!(
            t.iter()
                .any(|(n, s)| n == "layer1.0.downsample.0.weight" && s == &[256, 64, 1, 1])
        );
        assert!(!t.iter().any(|(n, _)| n.starts_with("fc.")));
    }
}
