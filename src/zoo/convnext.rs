//! ConvNeXt Tiny and Small (Liu et al. 2022) in torchvision's and timm's key names.
//!
//! A block: 7x7 depthwise conv (with bias) -> LayerNorm over channels (eps 1e-6) -> 1x1 to
//! 4x the width + exact GELU -> 1x1 back -> per-channel layer scale, plus the input
//! (stochastic depth is the identity in evaluation). The stem is a 4x4/s4 conv then LayerNorm;
//! each later stage starts with LayerNorm then a 2x2/s2 conv; the head pools, normalises
//! (LayerNorm) and classifies.
//!
//! - torchvision `convnext_tiny/small` (ids `convnext_tiny`, `convnext_small`):
//!   `features.0.{0,1}` (stem conv, norm), `features.{1,3,5,7}.B.block.{0,2,3,5}` (dw conv,
//!   norm, fc1, fc2) and `.layer_scale` `[C, 1, 1]`, `features.{2,4,6}.{0,1}` (downsample
//!   norm, conv), `classifier.0` (head norm), `classifier.2` (fc). Layer ids: `features.0` ..
//!   `features.7`, `pooled`, `logits`.
//! - timm `convnext_tiny/small` (ids `convnext_tiny_timm`, `convnext_small_timm`): `stem.{0,1}`,
//!   `stages.S.downsample.{0,1}` (S > 0), `stages.S.blocks.B.{conv_dw,norm,mlp.fc1,mlp.fc2}` and
//!   `.gamma` `[C]`, `head.norm`, `head.fc`. Layer ids: `stem`, `stages.0` .. `stages.3` (each
//!   with its downsample), `pooled`, `logits`.
//!
//! Shapes at 224 px for the published widths 96/192/384/768: stem `[96, 56, 56]`, the stages
//! `[96, 56, 56]` .. `[768, 7, 7]`, `pooled` `[768]` (after the head's LayerNorm: the features
//! the classifier reads). The widths are read from the checkpoint (reduced-width checkpoints
//! build as well); the depths decide Tiny (3-3-9-3) or Small (3-3-27-3).

use candle_core::Tensor;

use super::checkpoint::{Checkpoint, ExpectedTensors};
use super::detect::{Detected, Shapes, classes, detected, indices_after};
use super::registry::{Architecture, PreprocessDefaults};
use super::{IMAGENET_MEAN, IMAGENET_STD};
use crate::graph::classifier::Classifier;
use crate::graph::probe::{BiasProbing, Pass};
use crate::graph::{Network, Stage};
use crate::interchange::onnx::OnnxGraph;
use crate::ops::{
    Activation, conv2d_bias_act, depthwise_conv2d, layer_norm_channels, layer_norm_last,
    pointwise_conv2d,
};
use crate::{Error, Result};

/// LayerNorm epsilon of both libraries' ConvNeXts.
const LN_EPS: f64 = 1e-6;
/// The published stage widths.
const DIMS: [usize; 4] = [96, 192, 384, 768];
/// Hidden width of a block's MLP per channel.
const MLP_RATIO: usize = 4;
/// Side of the depthwise kernel.
const DW_KERNEL: usize = 7;

/// Whose key names a checkpoint uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Naming {
    /// `features.N.B.block.*`, `classifier.*`.
    Torchvision,
    /// `stem.*`, `stages.S.blocks.B.*`, `head.*`.
    Timm,
}

/// The architectures this module builds: `(id, naming, blocks per stage)`.
const VARIANTS: [(&str, Naming, [usize; 4]); 4] = [
    ("convnext_tiny", Naming::Torchvision, [3, 3, 9, 3]),
    ("convnext_small", Naming::Torchvision, [3, 3, 27, 3]),
    ("convnext_tiny_timm", Naming::Timm, [3, 3, 9, 3]),
    ("convnext_small_timm", Naming::Timm, [3, 3, 27, 3]),
];

/// The ids of [`VARIANTS`].
pub const ARCHITECTURES: [&str; 4] = [VARIANTS[0].0, VARIANTS[1].0, VARIANTS[2].0, VARIANTS[3].0];

/// A ConvNeXt's shape: naming, depths and widths.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConvNextConfig {
    /// The key names.
    pub naming: Naming,
    /// Blocks per stage.
    pub depths: [usize; 4],
    /// Channels per stage.
    pub dims: [usize; 4],
}

impl ConvNextConfig {
    /// The published config of `id`.
    pub fn of(id: &str) -> Option<Self> {
        VARIANTS
            .iter()
            .find(|v| v.0 == id)
            .map(|&(_, naming, depths)| ConvNextConfig {
                naming,
                depths,
                dims: DIMS,
            })
    }

    /// `id`'s config with the widths a checkpoint's depthwise kernels hold (the published
    /// ones where a stage's first block is missing: the audit then names what is wrong).
    pub fn from_shapes(id: &str, shapes: &Shapes) -> Option<Self> {
        let mut cfg = Self::of(id)?;
        for s in 0..4 {
            if let Some(shape) = shapes.get(&format!("{}.weight", cfg.block_key(s, 0, Part::Dw))) {
                cfg.dims[s] = shape[0];
            }
        }
        Some(cfg)
    }

    fn stem_key(&self, conv: bool) -> &'static str {
        match (self.naming, conv) {
            (Naming::Torchvision, true) => "features.0.0",
            (Naming::Torchvision, false) => "features.0.1",
            (Naming::Timm, true) => "stem.0",
            (Naming::Timm, false) => "stem.1",
        }
    }

    /// Key prefix of stage `s`'s (> 0) downsample norm (`conv` false) or conv.
    fn downsample_key(&self, s: usize, conv: bool) -> String {
        let i = usize::from(conv);
        match self.naming {
            Naming::Torchvision => format!("features.{}.{i}", 2 * s),
            Naming::Timm => format!("stages.{s}.downsample.{i}"),
        }
    }

    /// Key prefix of one part of block `b` of stage `s` (the layer scale's full key for
    /// [`Part::Scale`]).
    fn block_key(&self, s: usize, b: usize, part: Part) -> String {
        match self.naming {
            Naming::Torchvision => {
                let p = format!("features.{}.{b}", 2 * s + 1);
                match part {
                    Part::Dw => format!("{p}.block.0"),
                    Part::Norm => format!("{p}.block.2"),
                    Part::Fc1 => format!("{p}.block.3"),
                    Part::Fc2 => format!("{p}.block.5"),
                    Part::Scale => format!("{p}.layer_scale"),
                }
            }
            Naming::Timm => {
                let p = format!("stages.{s}.blocks.{b}");
                match part {
                    Part::Dw => format!("{p}.conv_dw"),
                    Part::Norm => format!("{p}.norm"),
                    Part::Fc1 => format!("{p}.mlp.fc1"),
                    Part::Fc2 => format!("{p}.mlp.fc2"),
                    Part::Scale => format!("{p}.gamma"),
                }
            }
        }
    }

    fn head_key(&self, fc: bool) -> &'static str {
        match (self.naming, fc) {
            (Naming::Torchvision, false) => "classifier.0",
            (Naming::Torchvision, true) => "classifier.2",
            (Naming::Timm, false) => "head.norm",
            (Naming::Timm, true) => "head.fc",
        }
    }

    fn scale_shape(&self, c: usize) -> Vec<usize> {
        match self.naming {
            Naming::Torchvision => vec![c, 1, 1],
            Naming::Timm => vec![c],
        }
    }
}

/// The parts of a block.
#[derive(Clone, Copy)]
enum Part {
    Dw,
    Norm,
    Fc1,
    Fc2,
    Scale,
}

/// `<prefix>.weight` and `<prefix>.bias` with their shapes.
fn weight_bias(prefix: &str, weight: Vec<usize>, out: usize) -> ExpectedTensors {
    vec![
        (format!("{prefix}.weight"), weight),
        (format!("{prefix}.bias"), vec![out]),
    ]
}

/// Every tensor a checkpoint of `cfg` holds; `num_classes` 0: feature-only (no fc; the head's
/// LayerNorm stays, it belongs to the features).
pub fn expected_tensors(cfg: &ConvNextConfig, num_classes: usize) -> ExpectedTensors {
    let d = cfg.dims;
    let mut t = weight_bias(cfg.stem_key(true), vec![d[0], 3, 4, 4], d[0]);
    t.extend(weight_bias(cfg.stem_key(false), vec![d[0]], d[0]));
    for s in 0..4 {
        let c = d[s];
        if s > 0 {
            t.extend(weight_bias(
                &cfg.downsample_key(s, false),
                vec![d[s - 1]],
                d[s - 1],
            ));
            t.extend(weight_bias(
                &cfg.downsample_key(s, true),
                vec![c, d[s - 1], 2, 2],
                c,
            ));
        }
        for b in 0..cfg.depths[s] {
            let key = |p| cfg.block_key(s, b, p);
            t.extend(weight_bias(
                &key(Part::Dw),
                vec![c, 1, DW_KERNEL, DW_KERNEL],
                c,
            ));
            t.extend(weight_bias(&key(Part::Norm), vec![c], c));
            t.extend(weight_bias(
                &key(Part::Fc1),
                vec![MLP_RATIO * c, c],
                MLP_RATIO * c,
            ));
            t.extend(weight_bias(&key(Part::Fc2), vec![c, MLP_RATIO * c], c));
            t.push((key(Part::Scale), cfg.scale_shape(c)));
        }
    }
    t.extend(weight_bias(cfg.head_key(false), vec![d[3]], d[3]));
    if num_classes > 0 {
        t.extend(weight_bias(
            cfg.head_key(true),
            vec![num_classes, d[3]],
            num_classes,
        ));
    }
    t
}

/// A LayerNorm's affine tensors, each `[C]`.
struct Norm {
    weight: Tensor,
    bias: Tensor,
}

impl Norm {
    fn load(ckpt: &Checkpoint, prefix: &str) -> Result<Self> {
        Ok(Norm {
            weight: ckpt.get(&format!("{prefix}.weight"))?,
            bias: ckpt.get(&format!("{prefix}.bias"))?,
        })
    }

    /// Over the channels of `[batch, C, h, w]`.
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        Ok(layer_norm_channels(x, &self.weight, &self.bias, LN_EPS)?)
    }

    /// The same as ONNX nodes, over dimension 1 of a tensor of `rank` dimensions, its weights
    /// named `<part>.weight` and `<part>.bias`.
    fn to_onnx(&self, g: &mut OnnxGraph, part: &str, x: &str, rank: usize) -> Result<String> {
        g.part(part, |g| {
            g.layer_norm(x, &self.weight, &self.bias, LN_EPS, rank)
        })
    }

    fn tensors_mut(&mut self, prefix: &str) -> Vec<(String, &mut Tensor)> {
        vec![
            (format!("{prefix}.weight"), &mut self.weight),
            (format!("{prefix}.bias"), &mut self.bias),
        ]
    }
}

/// A patchifying convolution (kernel = stride, with bias) and its LayerNorm: the stem (conv,
/// then norm) or a downsample (norm, then conv). `[batch, in, h, w]` ->
/// `[batch, out, h/k, w/k]`.
pub struct PatchConv {
    /// `[out, in, k, k]`.
    weight: Tensor,
    /// `[out]`.
    bias: Tensor,
    norm: Norm,
    norm_first: bool,
}

impl PatchConv {
    fn load(ckpt: &Checkpoint, conv: &str, norm: &str, norm_first: bool) -> Result<Self> {
        Ok(PatchConv {
            weight: ckpt.get(&format!("{conv}.weight"))?,
            bias: ckpt.get(&format!("{conv}.bias"))?,
            norm: Norm::load(ckpt, norm)?,
            norm_first,
        })
    }

    fn kernel(&self) -> usize {
        self.weight.dims()[3]
    }
}

impl PatchConv {
    /// The convolution (probed at its output, bias included) and the LayerNorm in the
    /// stage's order.
    fn run(&self, x: &Tensor, pass: &mut Pass) -> Result<Tensor> {
        let k = self.kernel();
        let mut conv = |x: &Tensor| -> Result<Tensor> {
            let z = conv2d_bias_act(x, &self.weight, &self.bias, k, 0, Activation::Identity)?;
            pass.tap(&z, &self.bias)
        };
        if self.norm_first {
            conv(&self.norm.forward(x)?)
        } else {
            self.norm.forward(&conv(x)?)
        }
    }
}

impl Stage for PatchConv {
    crate::stage_runs_by_pass!();

    fn output_shape(&self, input: &[usize]) -> Vec<usize> {
        let k = self.kernel();
        vec![self.weight.dims()[0], input[1] / k, input[2] / k]
    }

    fn macs(&self, input: &[usize]) -> u64 {
        let out: usize = self.output_shape(input).iter().product();
        (out * self.weight.dims()[1..].iter().product::<usize>()) as u64
    }

    fn param_count(&self) -> usize {
        self.weight.elem_count() + self.bias.elem_count() + 2 * self.norm.weight.elem_count()
    }

    /// A Conv (kernel = stride) and the LayerNorm, in the stage's order.
    fn to_onnx(&self, g: &mut OnnxGraph, x: &str, _input: &[usize]) -> Result<String> {
        let k = self.kernel();
        let conv = |g: &mut OnnxGraph, x: &str| {
            g.part("conv", |g| g.conv(x, &self.weight, &self.bias, k, 0, 1))
        };
        if self.norm_first {
            let h = self.norm.to_onnx(g, "norm", x, 4)?;
            conv(g, &h)
        } else {
            let h = conv(g, x)?;
            self.norm.to_onnx(g, "norm", &h, 4)
        }
    }

    /// `conv.weight`, `conv.bias`, `norm.weight`, `norm.bias`.
    fn tensors_mut(&mut self) -> Vec<(String, &mut Tensor)> {
        let mut out = vec![
            ("conv.weight".to_string(), &mut self.weight),
            ("conv.bias".to_string(), &mut self.bias),
        ];
        out.extend(self.norm.tensors_mut("norm"));
        out
    }
}

/// One ConvNeXt block: `x + gamma * fc2(gelu(fc1(norm(dwconv(x)))))`, `[batch, C, h, w]` in
/// and out.
struct Block {
    /// `[C, 1, 7, 7]`, `[C]`.
    dw: (Tensor, Tensor),
    norm: Norm,
    /// `[4C, C]`, `[4C]`.
    fc1: (Tensor, Tensor),
    /// `[C, 4C]`, `[C]`.
    fc2: (Tensor, Tensor),
    /// `[C]` (timm) or `[C, 1, 1]` (torchvision), as the checkpoint holds it.
    gamma: Tensor,
}

impl Block {
    fn load(ckpt: &Checkpoint, cfg: &ConvNextConfig, s: usize, b: usize) -> Result<Self> {
        let key = |p| cfg.block_key(s, b, p);
        let pair = |p| -> Result<(Tensor, Tensor)> {
            Ok((
                ckpt.get(&format!("{}.weight", key(p)))?,
                ckpt.get(&format!("{}.bias", key(p)))?,
            ))
        };
        // Kept as the checkpoint holds it (the PyTorch export finds a fine-tuned tensor's
        // name by identity), reshaped where it is used.
        let gamma = ckpt.get(&key(Part::Scale))?;
        Ok(Block {
            dw: pair(Part::Dw)?,
            norm: Norm::load(ckpt, &key(Part::Norm))?,
            fc1: pair(Part::Fc1)?,
            fc2: pair(Part::Fc2)?,
            gamma,
        })
    }

    /// The depthwise conv is probed at its output (bias included); the LayerNorm and the two
    /// dense layers are not layers pytorch-grad-cam's FullGrad takes a bias from
    /// (`nn.LayerNorm`, `nn.Linear`).
    fn run(&self, x: &Tensor, pass: &mut Pass) -> Result<Tensor> {
        let pad = DW_KERNEL / 2;
        let h = depthwise_conv2d(x, &self.dw.0, &self.dw.1, 1, pad, Activation::Identity)?;
        let h = pass.tap(&h, &self.dw.1)?;
        let h = self.norm.forward(&h)?;
        let h = pointwise_conv2d(&h, &self.fc1.0, &self.fc1.1, Activation::Gelu, None)?;
        let h = pointwise_conv2d(&h, &self.fc2.0, &self.fc2.1, Activation::Identity, None)?;
        let c = self.gamma.dims()[0];
        Ok((h.broadcast_mul(&self.gamma.reshape((1, c, 1, 1))?)? + x)?)
    }

    /// The block as ONNX nodes (a grouped Conv, the LayerNorm, two 1x1 Convs around the
    /// GELU, the layer scale, the Add), weights named `<i>.dw.weight` ... `<i>.gamma.scale`.
    fn to_onnx(&self, g: &mut OnnxGraph, i: usize, x: &str) -> Result<String> {
        g.part(&i.to_string(), |g| {
            let c = self.gamma.dims()[0];
            let (dw, dw_bias) = &self.dw;
            let h = g.part("dw", |g| g.conv(x, dw, dw_bias, 1, DW_KERNEL / 2, c))?;
            let h = self.norm.to_onnx(g, "norm", &h, 4)?;
            let pointwise = |g: &mut OnnxGraph, part: &str, x: &str, (w, b): &(Tensor, Tensor)| {
                let w = w.reshape((w.dim(0)?, w.dim(1)?, 1, 1))?;
                g.part(part, |g| g.conv(x, &w, b, 1, 0, 1))
            };
            let h = pointwise(g, "fc1", &h, &self.fc1)?;
            let h = g.gelu(&h)?;
            let h = pointwise(g, "fc2", &h, &self.fc2)?;
            let h = g.part("gamma", |g| {
                g.scale_channels(&h, &self.gamma.flatten_all()?)
            })?;
            Ok(g.add(&h, x))
        })
    }

    fn macs(&self, input: &[usize]) -> u64 {
        let (c, plane) = (input[0], input[1] * input[2]);
        (plane * c * (DW_KERNEL * DW_KERNEL + 2 * MLP_RATIO * c)) as u64
    }

    fn param_count(&self) -> usize {
        let pair = |p: &(Tensor, Tensor)| p.0.elem_count() + p.1.elem_count();
        pair(&self.dw) + pair(&self.fc1) + pair(&self.fc2) + 3 * self.gamma.elem_count()
    }

    fn tensors_mut(&mut self, i: usize) -> Vec<(String, &mut Tensor)> {
        let mut out = Vec::new();
        for (name, (w, b)) in [
            ("dw", &mut self.dw),
            ("fc1", &mut self.fc1),
            ("fc2", &mut self.fc2),
        ] {
            out.push((format!("{i}.{name}.weight"), w));
            out.push((format!("{i}.{name}.bias"), b));
        }
        out.extend(self.norm.tensors_mut(&format!("{i}.norm")));
        out.push((format!("{i}.gamma"), &mut self.gamma));
        out
    }
}

/// A stage: its downsample (timm's naming keeps it inside the stage) and blocks.
/// `[batch, in, h, w]` -> `[batch, C, h', w']`.
pub struct ConvNextStage {
    downsample: Option<PatchConv>,
    blocks: Vec<Block>,
}

impl ConvNextStage {
    fn run(&self, x: &Tensor, pass: &mut Pass) -> Result<Tensor> {
        let mut h = match &self.downsample {
            Some(d) => pass.part(d, x)?,
            None => x.clone(),
        };
        for b in &self.blocks {
            h = b.run(&h, pass)?;
        }
        Ok(h)
    }
}

impl Stage for ConvNextStage {
    crate::stage_runs_by_pass!();

    fn output_shape(&self, input: &[usize]) -> Vec<usize> {
        match &self.downsample {
            Some(d) => d.output_shape(input),
            None => input.to_vec(),
        }
    }

    fn macs(&self, input: &[usize]) -> u64 {
        let shape = self.output_shape(input);
        self.downsample.as_ref().map_or(0, |d| d.macs(input))
            + self.blocks.iter().map(|b| b.macs(&shape)).sum::<u64>()
    }

    fn param_count(&self) -> usize {
        self.downsample.as_ref().map_or(0, |d| d.param_count())
            + self.blocks.iter().map(Block::param_count).sum::<usize>()
    }

    /// The downsample's nodes (timm), then each block's.
    fn to_onnx(&self, g: &mut OnnxGraph, x: &str, input: &[usize]) -> Result<String> {
        let mut h = match &self.downsample {
            Some(d) => g.part("downsample", |g| d.to_onnx(g, x, input))?,
            None => x.to_string(),
        };
        for (i, b) in self.blocks.iter().enumerate() {
            h = b.to_onnx(g, i, &h)?;
        }
        Ok(h)
    }

    /// `downsample.*` (timm), then `<block>.{dw,fc1,fc2,norm}.{weight,bias}`, `<block>.gamma`.
    fn tensors_mut(&mut self) -> Vec<(String, &mut Tensor)> {
        let mut out: Vec<(String, &mut Tensor)> = match self.downsample.as_mut() {
            Some(d) => d
                .tensors_mut()
                .into_iter()
                .map(|(n, t)| (format!("downsample.{n}"), t))
                .collect(),
            None => Vec::new(),
        };
        for (i, b) in self.blocks.iter_mut().enumerate() {
            out.extend(b.tensors_mut(i));
        }
        out
    }
}

/// Global average pooling, then the head's LayerNorm: `[batch, C, h, w]` -> `[batch, C]`.
pub struct NormPool {
    norm: Norm,
}

impl Stage for NormPool {
    fn forward(&self, x: &Tensor, _train: bool) -> Result<Tensor> {
        let pooled = x.mean((2, 3))?;
        Ok(layer_norm_last(
            &pooled,
            &self.norm.weight,
            &self.norm.bias,
            LN_EPS,
        )?)
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
        2 * self.norm.weight.elem_count()
    }

    /// ReduceMean over the plane, then the LayerNorm over the channels of `[batch, C]`.
    fn to_onnx(&self, g: &mut OnnxGraph, x: &str, _input: &[usize]) -> Result<String> {
        let pooled = g.global_avg_pool(x);
        self.norm.to_onnx(g, "norm", &pooled, 2)
    }

    fn tensors_mut(&mut self) -> Vec<(String, &mut Tensor)> {
        self.norm.tensors_mut("norm")
    }
}

/// Builds ConvNeXt `id` from a checkpoint (widths read from it, then audited); `num_classes`
/// 0: feature-only, the network ends at `pooled`. Input `[batch, 3, h, w]` (h, w multiples of
/// 32), output `[batch, num_classes]` (or `[batch, C]`).
pub fn build(ckpt: &Checkpoint, id: &str, num_classes: usize) -> Result<Network> {
    let cfg = ConvNextConfig::from_shapes(id, &ckpt.shapes()).ok_or_else(|| {
        Error::Model(format!(
            "unknown ConvNeXt `{id}`; known: {}",
            ARCHITECTURES.join(", ")
        ))
    })?;
    ckpt.audit(id, &expected_tensors(&cfg, num_classes))?;
    let tv = cfg.naming == Naming::Torchvision;
    let mut stages: Vec<(String, Box<dyn Stage>)> = Vec::new();
    let stem = PatchConv::load(ckpt, cfg.stem_key(true), cfg.stem_key(false), false)?;
    stages.push((
        if tv { "features.0" } else { "stem" }.into(),
        Box::new(stem),
    ));
    for s in 0..4 {
        let downsample = if s > 0 {
            let (norm, conv) = (cfg.downsample_key(s, false), cfg.downsample_key(s, true));
            Some(PatchConv::load(ckpt, &conv, &norm, true)?)
        } else {
            None
        };
        let blocks = (0..cfg.depths[s])
            .map(|b| Block::load(ckpt, &cfg, s, b))
            .collect::<Result<Vec<_>>>()?;
        if tv {
            if let Some(d) = downsample {
                stages.push((format!("features.{}", 2 * s), Box::new(d)));
            }
            let stage = ConvNextStage {
                downsample: None,
                blocks,
            };
            stages.push((format!("features.{}", 2 * s + 1), Box::new(stage)));
        } else {
            let stage = ConvNextStage { downsample, blocks };
            stages.push((format!("stages.{s}"), Box::new(stage)));
        }
    }
    let norm = Norm::load(ckpt, cfg.head_key(false))?;
    stages.push(("pooled".into(), Box::new(NormPool { norm })));
    if num_classes > 0 {
        let fc = cfg.head_key(true);
        let classifier = Classifier::new(
            ckpt.get(&format!("{fc}.weight"))?,
            ckpt.get(&format!("{fc}.bias"))?,
            0.0,
        );
        stages.push(("logits".into(), Box::new(classifier)));
    }
    Ok(Network::new(3, stages))
}

/// The ConvNeXt family in the [`registry`](super::registry).
pub struct ConvNext;

impl Architecture for ConvNext {
    fn family(&self) -> &'static str {
        "ConvNeXt"
    }

    fn ids(&self) -> &'static [&'static str] {
        &ARCHITECTURES
    }

    fn key_names(&self) -> &'static str {
        "torchvision `features.0..7` (`block.0/2/3/5`, `layer_scale`), `classifier.0/2`; \
         timm `stem.0/1`, `stages.0..3` (`downsample`, `blocks.B.conv_dw/norm/mlp.fc1/fc2/gamma`), \
         `head.norm`, `head.fc`"
    }

    fn expected_tensors(&self, id: &str, num_classes: usize) -> Option<ExpectedTensors> {
        ConvNextConfig::of(id).map(|cfg| expected_tensors(&cfg, num_classes))
    }

    /// With the widths of `shapes`' depthwise kernels.
    fn expected_tensors_like(
        &self,
        id: &str,
        num_classes: usize,
        shapes: &Shapes,
    ) -> Option<ExpectedTensors> {
        ConvNextConfig::from_shapes(id, shapes).map(|cfg| expected_tensors(&cfg, num_classes))
    }

    fn build(&self, id: &str, ckpt: &Checkpoint, num_classes: usize) -> Result<Network> {
        build(ckpt, id, num_classes)
    }

    fn default_cam_layer(&self, id: &str) -> String {
        match ConvNextConfig::of(id).map(|c| c.naming) {
            Some(Naming::Timm) => "stages.3".into(),
            _ => "features.7".into(),
        }
    }

    /// torchvision's IMAGENET1K_V1 transforms (224 crop of 236 for Tiny, 230 for Small);
    /// timm's `in12k_ft_in1k` config (224 at crop_pct 0.95: 235). ImageNet mean and std.
    /// (Both resize bilinearly in torchvision; timm's config asks for bicubic.)
    fn preprocess(&self, id: &str) -> PreprocessDefaults {
        let resize_shorter = match id {
            "convnext_tiny" => 236,
            "convnext_small" => 230,
            _ => 235,
        };
        PreprocessDefaults {
            input_size: 224,
            resize_shorter,
            mean: IMAGENET_MEAN,
            std: IMAGENET_STD,
        }
    }

    fn detect(&self, shapes: &Shapes) -> Option<Result<Detected>> {
        let naming = if shapes.contains_key("features.1.0.block.0.weight")
            && shapes.contains_key("features.1.0.layer_scale")
        {
            Naming::Torchvision
        } else if shapes.contains_key("stages.0.blocks.0.conv_dw.weight")
            && shapes.contains_key("stem.0.weight")
        {
            Naming::Timm
        } else {
            return None;
        };
        Some(detect_convnext(shapes, naming))
    }
}

fn detect_convnext(shapes: &Shapes, naming: Naming) -> Result<Detected> {
    let counts: Vec<usize> = (0..4)
        .map(|s| match naming {
            Naming::Torchvision => indices_after(shapes, &format!("features.{}.", 2 * s + 1)).len(),
            Naming::Timm => indices_after(shapes, &format!("stages.{s}.blocks.")).len(),
        })
        .collect();
    let text = counts
        .iter()
        .map(usize::to_string)
        .collect::<Vec<_>>()
        .join("-");
    let (lib, keys, fc) = match naming {
        Naming::Torchvision => (
            "torchvision",
            "`features.N.B.block.*`, `layer_scale`",
            "classifier.2.weight",
        ),
        Naming::Timm => (
            "timm",
            "`stem.*`, `stages.S.blocks.B.conv_dw/mlp.*`, `gamma`",
            "head.fc.weight",
        ),
    };
    let Some(&(id, _, _)) = VARIANTS
        .iter()
        .find(|v| v.1 == naming && v.2[..] == counts[..])
    else {
        return Err(Error::Model(format!(
            "the weights look like a {lib} ConvNeXt with {text} blocks per stage, which convlens \
             does not build (Tiny 3-3-9-3, Small 3-3-27-3)"
        )));
    };
    let cfg = ConvNextConfig::from_shapes(id, shapes);
    let widths = cfg.map_or_else(String::new, |c| {
        format!(", widths {}", c.dims.map(|d| d.to_string()).join("/"))
    });
    let why = format!("keys {keys} ({lib} ConvNeXt) with {text} blocks per stage{widths}: {id}");
    Ok(detected(id, why, classes(shapes, fc)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tensor_counts_match_the_libraries() {
        // Both libraries' state dicts: 182 tensors for Tiny, 344 for Small.
        let counts: Vec<usize> = ARCHITECTURES
            .iter()
            .map(|a| expected_tensors(&ConvNextConfig::of(a).unwrap(), 1000).len())
            .collect();
        assert_eq!(counts, [182, 344, 182, 344]);
        let timm = expected_tensors(&ConvNextConfig::of("convnext_tiny_timm").unwrap(), 0);
        assert!(
            timm.iter()
                .any(|(n, s)| n == "stages.3.downsample.1.weight" && s == &[768, 384, 2, 2])
        );
        assert!(!timm.iter().any(|(n, _)| n.starts_with("head.fc")));
    }

    #[test]
    fn reduced_widths_are_read_from_the_shapes() {
        let mut cfg = ConvNextConfig::of("convnext_small").unwrap();
        cfg.dims = [8, 16, 24, 32];
        let shapes: Shapes = expected_tensors(&cfg, 5).into_iter().collect();
        let found = super::super::detect::detect(&shapes).unwrap();
        assert_eq!(
            (found.architecture.as_str(), found.num_classes),
            ("convnext_small", 5)
        );
        assert!(
            found.why.contains("3-3-27-3") && found.why.contains("8/16/24/32"),
            "{}",
            found.why
        );
        assert_eq!(
            ConvNextConfig::from_shapes("convnext_small", &shapes),
            Some(cfg)
        );
    }
}
