//! DenseNet-121 (Huang et al. 2017) in torchvision's key names: `features.conv0`,
//! `features.norm0`, `features.denseblockN.denselayerM.{norm1,conv1,norm2,conv2}`,
//! `features.transitionN.{norm,conv}`, `features.norm5`, `classifier`.
//!
//! A dense layer is pre-activation: BN -> ReLU -> 1x1 conv -> BN -> ReLU -> 3x3 conv, its
//! `growth` new channels concatenated to its input. The BatchNorm after the 1x1 conv (`norm2`)
//! and after `conv0` (`norm0`) fold into those convolutions as usual. The BatchNorms that come
//! before a convolution with a ReLU in between (`norm1`, a transition's `norm`, `norm5`)
//! cannot fold into it; each runs as its own per-channel affine (eval BatchNorm is one) fused
//! with the ReLU, a 1x1 depthwise "convolution" of ones followed by the BatchNorm (so it trains
//! and switches BatchNorm mode like every other [`ConvBnAct`]).
//!
//! Layer ids: `features.conv0` (conv0 + norm0 + ReLU, `[64, 112, 112]` at 224),
//! `features.pool0` (`[64, 56, 56]`), `features.denseblock1` .. `features.denseblock4`
//! (`[256, 56, 56]`, `[512, 28, 28]`, `[1024, 14, 14]`, `[1024, 7, 7]`),
//! `features.transition1` .. `3` (BN, ReLU, 1x1 conv halving the channels, 2x2/s2 average
//! pool), `features.norm5` (BatchNorm only, as the module's output; the ReLU follows in
//! `pooled`), `pooled` (ReLU, global average, `[1024]`), `logits`. The widths (initial
//! features, growth, bottleneck) are read from the checkpoint; the 6-12-24-16 layers decide 121.

use candle_core::{DType, Tensor};

use super::blocks::MaxPool;
use super::checkpoint::{Checkpoint, ExpectedTensors, expected_batchnorm};
use super::detect::{Detected, Shapes, classes, detected, indices_after};
use super::registry::Architecture;
use crate::graph::classifier::Classifier;
use crate::graph::layers::{ConvBnAct, ConvKind};
use crate::graph::probe::{BiasProbes, BiasProbing, Pass};
use crate::graph::{Network, Stage};
use crate::interchange::onnx::OnnxGraph;
use crate::ops::{Activation, conv2d_bias_act};
use crate::{Error, Result};

/// BatchNorm epsilon of torchvision's DenseNets.
const BN_EPS: f64 = 1e-5;
/// The architecture this module builds.
pub const ARCHITECTURES: [&str; 1] = ["densenet121"];
/// Dense layers per block of DenseNet-121.
pub const LAYERS: [usize; 4] = [6, 12, 24, 16];

/// A dense layer's place and input width: `(block 1..=4, layer 1.., input channels)`.
type LayerPlan = (usize, usize, usize);
/// A transition's place and input width: `(after block, channels in)`.
type TransitionPlan = (usize, usize);

/// A DenseNet's widths: initial features, growth rate, bottleneck width (`bn_size · growth`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DenseNetConfig {
    /// Channels of `conv0` (64).
    pub init: usize,
    /// Channels each dense layer adds (32).
    pub growth: usize,
    /// Channels of each layer's 1x1 bottleneck (4 · 32 = 128).
    pub bottleneck: usize,
}

impl DenseNetConfig {
    /// The published DenseNet-121.
    pub const PUBLISHED: DenseNetConfig = DenseNetConfig {
        init: 64,
        growth: 32,
        bottleneck: 128,
    };

    /// The widths a checkpoint's tensors hold (the published ones where a key is missing:
    /// the audit then names it).
    pub fn from_shapes(shapes: &Shapes) -> Self {
        let dim0 = |key: &str, default: usize| shapes.get(key).map_or(default, |s| s[0]);
        let layer = "features.denseblock1.denselayer1";
        let p = Self::PUBLISHED;
        DenseNetConfig {
            init: dim0("features.conv0.weight", p.init),
            growth: dim0(&format!("{layer}.conv2.weight"), p.growth),
            bottleneck: dim0(&format!("{layer}.conv1.weight"), p.bottleneck),
        }
    }

    /// Every dense layer as `(block 1..=4, layer 1.., input channels)`, and every transition
    /// as `(block, channels in)` after its block; the final channel count last.
    fn plan(&self) -> (Vec<LayerPlan>, Vec<TransitionPlan>, usize) {
        let (mut layers, mut transitions) = (Vec::new(), Vec::new());
        let mut c = self.init;
        for (b, &n) in LAYERS.iter().enumerate() {
            for l in 0..n {
                layers.push((b + 1, l + 1, c + l * self.growth));
            }
            c += n * self.growth;
            if b < 3 {
                transitions.push((b + 1, c));
                c /= 2;
            }
        }
        (layers, transitions, c)
    }
}

/// Every tensor a DenseNet checkpoint of `cfg` holds; `num_classes` 0: feature-only (no
/// `classifier.*`).
pub fn expected_tensors(cfg: &DenseNetConfig, num_classes: usize) -> ExpectedTensors {
    let mut t: ExpectedTensors = vec![("features.conv0.weight".into(), vec![cfg.init, 3, 7, 7])];
    t.extend(expected_batchnorm("features.norm0", cfg.init));
    let (layers, transitions, last) = cfg.plan();
    for (b, l, inp) in layers {
        let p = format!("features.denseblock{b}.denselayer{l}");
        t.extend(expected_batchnorm(&format!("{p}.norm1"), inp));
        t.push((format!("{p}.conv1.weight"), vec![cfg.bottleneck, inp, 1, 1]));
        t.extend(expected_batchnorm(&format!("{p}.norm2"), cfg.bottleneck));
        t.push((
            format!("{p}.conv2.weight"),
            vec![cfg.growth, cfg.bottleneck, 3, 3],
        ));
    }
    for (b, c) in transitions {
        let p = format!("features.transition{b}");
        t.extend(expected_batchnorm(&format!("{p}.norm"), c));
        t.push((format!("{p}.conv.weight"), vec![c / 2, c, 1, 1]));
    }
    t.extend(expected_batchnorm("features.norm5", last));
    if num_classes > 0 {
        t.push(("classifier.weight".into(), vec![num_classes, last]));
        t.push(("classifier.bias".into(), vec![num_classes]));
    }
    t
}

/// The BatchNorm at `prefix` (+ `act`) applied to its own input, as a 1x1 depthwise conv of
/// ones followed by the BatchNorm: `[batch, C, h, w]` in and out.
fn batchnorm_act(ckpt: &Checkpoint, prefix: &str, act: Activation) -> Result<ConvBnAct> {
    let bn = ckpt.batchnorm(prefix, BN_EPS)?;
    let c = bn.weight.dims()[0];
    let ones = Tensor::ones((c, 1, 1, 1), DType::F32, bn.weight.device())?;
    ConvBnAct::new(
        ConvKind::Depthwise {
            stride: 1,
            padding: 0,
        },
        &ones,
        &bn,
        act,
    )
}

/// Learnable parameters of a [`batchnorm_act`] as the checkpoint counts them (scale, shift).
fn batchnorm_params(layer: &ConvBnAct) -> usize {
    2 * layer.out_channels()
}

/// A convolution without bias or BatchNorm: `[batch, in, h, w]` -> `[batch, out, h', w']`.
struct PlainConv {
    /// `[out, in, k, k]`.
    weight: Tensor,
    /// `[out]` zeros (the fused kernel's bias; not a parameter).
    zero: Tensor,
    padding: usize,
}

impl PlainConv {
    fn load(ckpt: &Checkpoint, key: &str, padding: usize) -> Result<Self> {
        let weight = ckpt.get(key)?;
        let zero = Tensor::zeros(weight.dims()[0], DType::F32, weight.device())?;
        Ok(PlainConv {
            weight,
            zero,
            padding,
        })
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        Ok(conv2d_bias_act(
            x,
            &self.weight,
            &self.zero,
            1,
            self.padding,
            Activation::Identity,
        )?)
    }

    /// A Conv with a zero bias.
    fn to_onnx(&self, g: &mut OnnxGraph, part: &str, x: &str) -> Result<String> {
        g.part(part, |g| {
            g.conv(x, &self.weight, &self.zero, 1, self.padding, 1)
        })
    }

    /// MACs on an `[in, h, w]` input (stride 1, "same" padding).
    fn macs(&self, input: &[usize]) -> u64 {
        (input[1] * input[2] * self.weight.elem_count()) as u64
    }
}

/// One dense layer: `norm1` + ReLU, `conv1` (+ `norm2` folded) + ReLU, `conv2`.
/// `[batch, in, h, w]` -> `[batch, growth, h, w]` (the new channels only).
struct DenseLayer {
    norm1: ConvBnAct,
    conv1: ConvBnAct,
    conv2: PlainConv,
}

impl DenseLayer {
    /// `norm1` (pre-activation: probed at its output, before its ReLU), `conv1` with `norm2`
    /// (probed at `norm2`'s output), `conv2` (no bias).
    fn run(&self, x: &Tensor, pass: &mut Pass) -> Result<Tensor> {
        let h = pass.part(&self.norm1, x)?;
        let h = pass.part(&self.conv1, &h)?;
        self.conv2.forward(&h)
    }

    /// `norm1`, `conv1`, `conv2` as ONNX nodes, weights named `<part>.weight` ...
    fn to_onnx(&self, g: &mut OnnxGraph, x: &str, input: &[usize]) -> Result<String> {
        let h = g.part("norm1", |g| self.norm1.to_onnx(g, x, input))?;
        let h = g.part("conv1", |g| self.conv1.to_onnx(g, &h, input))?;
        self.conv2.to_onnx(g, "conv2", &h)
    }
}

/// A dense block: each layer's output concatenated to its input.
/// `[batch, in, h, w]` -> `[batch, in + layers · growth, h, w]`.
pub struct DenseBlock {
    layers: Vec<DenseLayer>,
}

impl DenseBlock {
    fn run(&self, x: &Tensor, pass: &mut Pass) -> Result<Tensor> {
        let mut h = x.clone();
        for layer in &self.layers {
            let new = layer.run(&h, pass)?;
            h = Tensor::cat(&[&h, &new], 1)?;
        }
        Ok(h)
    }
}

impl Stage for DenseBlock {
    crate::stage_runs_by_pass!();

    fn output_shape(&self, input: &[usize]) -> Vec<usize> {
        let growth: usize = self.layers.iter().map(|l| l.conv2.weight.dims()[0]).sum();
        vec![input[0] + growth, input[1], input[2]]
    }

    fn macs(&self, input: &[usize]) -> u64 {
        let mut shape = input.to_vec();
        let mut macs = 0;
        for l in &self.layers {
            macs += l.norm1.macs(&shape) + l.conv1.macs(&shape);
            macs += l.conv2.macs(&l.conv1.output_shape(&shape));
            shape[0] += l.conv2.weight.dims()[0];
        }
        macs
    }

    fn param_count(&self) -> usize {
        self.layers
            .iter()
            .map(|l| {
                batchnorm_params(&l.norm1) + l.conv1.param_count() + l.conv2.weight.elem_count()
            })
            .sum()
    }

    /// `<layer>.norm1.*`, `<layer>.conv1.*` (with norm2), `<layer>.conv2.weight`.
    fn tensors_mut(&mut self) -> Vec<(String, &mut Tensor)> {
        let mut out = Vec::new();
        for (i, l) in self.layers.iter_mut().enumerate() {
            for (part, conv) in [("norm1", &mut l.norm1), ("conv1", &mut l.conv1)] {
                out.extend(
                    conv.tensors_mut()
                        .into_iter()
                        .map(move |(n, t)| (format!("{i}.{part}.{n}"), t)),
                );
            }
            out.push((format!("{i}.conv2.weight"), &mut l.conv2.weight));
        }
        out
    }

    fn batchnorm_layers(&mut self) -> Vec<&mut ConvBnAct> {
        self.layers
            .iter_mut()
            .flat_map(|l| [&mut l.norm1, &mut l.conv1])
            .collect()
    }

    /// Each layer's nodes, its output concatenated to its input.
    fn to_onnx(&self, g: &mut OnnxGraph, x: &str, input: &[usize]) -> Result<String> {
        let mut h = x.to_string();
        let mut shape = input.to_vec();
        for (i, l) in self.layers.iter().enumerate() {
            let new = g.part(&i.to_string(), |g| l.to_onnx(g, &h, &shape))?;
            h = g.concat(&[&h, &new]);
            shape[0] += l.conv2.weight.dims()[0];
        }
        Ok(h)
    }
}

/// A transition: BN + ReLU, 1x1 conv, 2x2/s2 average pool.
/// `[batch, c, h, w]` -> `[batch, c/2, h/2, w/2]`.
pub struct Transition {
    norm: ConvBnAct,
    conv: PlainConv,
}

impl Transition {
    /// The BatchNorm (probed at its output, before its ReLU), the conv, the pooling.
    fn run(&self, x: &Tensor, pass: &mut Pass) -> Result<Tensor> {
        let h = self.conv.forward(&pass.part(&self.norm, x)?)?;
        Ok(h.avg_pool2d(2)?)
    }
}

impl Stage for Transition {
    crate::stage_runs_by_pass!();

    fn output_shape(&self, input: &[usize]) -> Vec<usize> {
        vec![self.conv.weight.dims()[0], input[1] / 2, input[2] / 2]
    }

    fn macs(&self, input: &[usize]) -> u64 {
        self.norm.macs(input) + self.conv.macs(input)
    }

    fn param_count(&self) -> usize {
        batchnorm_params(&self.norm) + self.conv.weight.elem_count()
    }

    /// `norm.*`, `conv.weight`.
    fn tensors_mut(&mut self) -> Vec<(String, &mut Tensor)> {
        let mut out: Vec<(String, &mut Tensor)> = self
            .norm
            .tensors_mut()
            .into_iter()
            .map(|(n, t)| (format!("norm.{n}"), t))
            .collect();
        out.push(("conv.weight".into(), &mut self.conv.weight));
        out
    }

    fn batchnorm_layers(&mut self) -> Vec<&mut ConvBnAct> {
        vec![&mut self.norm]
    }

    /// The BatchNorm (a 1x1 grouped Conv) + Relu, the Conv, a 2x2 AveragePool.
    fn to_onnx(&self, g: &mut OnnxGraph, x: &str, input: &[usize]) -> Result<String> {
        let h = g.part("norm", |g| self.norm.to_onnx(g, x, input))?;
        let h = self.conv.to_onnx(g, "conv", &h)?;
        Ok(g.avg_pool(&h, 2))
    }
}

/// `norm5` alone (torchvision's `features` output; its ReLU comes with the pooling).
struct Norm5(ConvBnAct);

impl Stage for Norm5 {
    fn forward(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        self.0.forward(x, train)
    }

    fn bias_probing(&self) -> BiasProbing {
        BiasProbing::Own
    }

    fn forward_probed(&self, x: &Tensor, probes: &mut BiasProbes) -> Result<Tensor> {
        self.0.forward_probed(x, probes)
    }

    fn output_shape(&self, input: &[usize]) -> Vec<usize> {
        input.to_vec()
    }

    fn macs(&self, input: &[usize]) -> u64 {
        self.0.macs(input)
    }

    fn param_count(&self) -> usize {
        batchnorm_params(&self.0)
    }

    fn tensors_mut(&mut self) -> Vec<(String, &mut Tensor)> {
        self.0.tensors_mut()
    }

    fn batchnorm_layers(&mut self) -> Vec<&mut ConvBnAct> {
        vec![&mut self.0]
    }

    fn to_onnx(&self, g: &mut OnnxGraph, x: &str, input: &[usize]) -> Result<String> {
        self.0.to_onnx(g, x, input)
    }
}

/// ReLU then the spatial mean (torchvision's `F.relu` + `adaptive_avg_pool2d` + flatten):
/// `[batch, c, h, w]` -> `[batch, c]`.
struct ReluPool;

impl Stage for ReluPool {
    fn forward(&self, x: &Tensor, _train: bool) -> Result<Tensor> {
        Ok(x.relu()?.mean((2, 3))?)
    }

    fn bias_probing(&self) -> BiasProbing {
        BiasProbing::NoBias
    }

    fn to_onnx(&self, g: &mut OnnxGraph, x: &str, _input: &[usize]) -> Result<String> {
        let h = g.relu(x);
        Ok(g.global_avg_pool(&h))
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

/// Builds DenseNet-121 from a checkpoint (widths read from it, then audited); `num_classes`
/// 0: feature-only, the network ends at `pooled`. Input `[batch, 3, h, w]` (h, w multiples of
/// 32), output `[batch, num_classes]` (or `[batch, c]`).
pub fn build(ckpt: &Checkpoint, num_classes: usize) -> Result<Network> {
    let cfg = DenseNetConfig::from_shapes(&ckpt.shapes());
    ckpt.audit("densenet121", &expected_tensors(&cfg, num_classes))?;
    let mut stages: Vec<(String, Box<dyn Stage>)> = Vec::new();
    let conv0 = ConvBnAct::new(
        ConvKind::Dense {
            stride: 2,
            padding: 3,
        },
        &ckpt.get("features.conv0.weight")?,
        &ckpt.batchnorm("features.norm0", BN_EPS)?,
        Activation::Relu,
    )?;
    stages.push(("features.conv0".into(), Box::new(conv0)));
    let pool0 = MaxPool {
        kernel: 3,
        stride: 2,
        padding: 1,
    };
    stages.push(("features.pool0".into(), Box::new(pool0)));
    for (b, &n) in LAYERS.iter().enumerate() {
        let b = b + 1;
        let layers = (1..=n)
            .map(|l| {
                let p = format!("features.denseblock{b}.denselayer{l}");
                Ok(DenseLayer {
                    norm1: batchnorm_act(ckpt, &format!("{p}.norm1"), Activation::Relu)?,
                    conv1: ConvBnAct::new(
                        ConvKind::Pointwise,
                        &ckpt.get(&format!("{p}.conv1.weight"))?,
                        &ckpt.batchnorm(&format!("{p}.norm2"), BN_EPS)?,
                        Activation::Relu,
                    )?,
                    conv2: PlainConv::load(ckpt, &format!("{p}.conv2.weight"), 1)?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        stages.push((
            format!("features.denseblock{b}"),
            Box::new(DenseBlock { layers }),
        ));
        if b < 4 {
            let p = format!("features.transition{b}");
            let transition = Transition {
                norm: batchnorm_act(ckpt, &format!("{p}.norm"), Activation::Relu)?,
                conv: PlainConv::load(ckpt, &format!("{p}.conv.weight"), 0)?,
            };
            stages.push((p, Box::new(transition)));
        }
    }
    let norm5 = batchnorm_act(ckpt, "features.norm5", Activation::Identity)?;
    stages.push(("features.norm5".into(), Box::new(Norm5(norm5))));
    stages.push(("pooled".into(), Box::new(ReluPool)));
    if num_classes > 0 {
        let classifier = Classifier::new(
            ckpt.get("classifier.weight")?,
            ckpt.get("classifier.bias")?,
            0.0,
        );
        stages.push(("logits".into(), Box::new(classifier)));
    }
    Ok(Network::new(3, stages))
}

/// The DenseNet family in the [`registry`](super::registry).
pub struct DenseNet;

impl Architecture for DenseNet {
    fn family(&self) -> &'static str {
        "DenseNet"
    }

    fn ids(&self) -> &'static [&'static str] {
        &ARCHITECTURES
    }

    fn key_names(&self) -> &'static str {
        "torchvision `features.conv0/norm0`, `features.denseblock1..4.denselayerM.norm1/conv1/norm2/conv2`, \
         `features.transition1..3`, `features.norm5`, `classifier`"
    }

    fn expected_tensors(&self, id: &str, num_classes: usize) -> Option<ExpectedTensors> {
        (id == ARCHITECTURES[0]).then(|| expected_tensors(&DenseNetConfig::PUBLISHED, num_classes))
    }

    /// With the widths `shapes` holds (initial features, growth, bottleneck).
    fn expected_tensors_like(
        &self,
        id: &str,
        num_classes: usize,
        shapes: &Shapes,
    ) -> Option<ExpectedTensors> {
        (id == ARCHITECTURES[0])
            .then(|| expected_tensors(&DenseNetConfig::from_shapes(shapes), num_classes))
    }

    fn build(&self, _id: &str, ckpt: &Checkpoint, num_classes: usize) -> Result<Network> {
        build(ckpt, num_classes)
    }

    fn default_cam_layer(&self, _id: &str) -> String {
        "features.norm5".into()
    }

    fn detect(&self, shapes: &Shapes) -> Option<Result<Detected>> {
        let dense = shapes.contains_key("features.conv0.weight")
            && shapes
                .keys()
                .any(|k| k.starts_with("features.denseblock1."));
        dense.then(|| detect_densenet(shapes))
    }
}

fn detect_densenet(shapes: &Shapes) -> Result<Detected> {
    let counts: Vec<usize> = (1..=4)
        .map(|b| indices_after(shapes, &format!("features.denseblock{b}.denselayer")).len())
        .collect();
    let text = counts
        .iter()
        .map(usize::to_string)
        .collect::<Vec<_>>()
        .join("-");
    if counts != LAYERS {
        return Err(Error::Model(format!(
            "the weights look like a torchvision DenseNet with {text} dense layers per block, \
             which convlens does not build (densenet121: 6-12-24-16)"
        )));
    }
    let cfg = DenseNetConfig::from_shapes(shapes);
    let why = format!(
        "keys `features.conv0`, `features.denseblock1..4.denselayerM.*`, `features.transition*` \
         (torchvision DenseNet) with {text} dense layers per block, {} initial features, growth {}, \
         bottleneck {}: densenet121",
        cfg.init, cfg.growth, cfg.bottleneck
    );
    Ok(detected(
        "densenet121",
        why,
        classes(shapes, "classifier.weight"),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tensor_count_and_widths_match_torchvision() {
        // torchvision's densenet121 state dict: 606 tensors without `num_batches_tracked`.
        let t = expected_tensors(&DenseNetConfig::PUBLISHED, 1000);
        assert_eq!(t.len(), 606);
        assert!(
            t.iter()
                .any(|(n, s)| n == "features.transition3.conv.weight" && s == &[512, 1024, 1, 1])
        );
        assert!(
            t.iter()
                .any(|(n, s)| n == "classifier.weight" && s == &[1000, 1024])
        );
        let reduced = DenseNetConfig {
            init: 8,
            growth: 4,
            bottleneck: 8,
        };
        let shapes: Shapes = expected_tensors(&reduced, 0).into_iter().collect();
        assert_eq!(DenseNetConfig::from_shapes(&shapes), reduced);
        let d = super::super::detect::detect(&shapes).unwrap();
        assert_eq!((d.architecture.as_str(), d.num_classes), ("densenet121", 0));
        assert!(d.why.contains("growth 4"), "{}", d.why);
    }
}
