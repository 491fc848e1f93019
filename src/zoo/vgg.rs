//! VGG-11/13/16/19 (Simonyan & Zisserman; without BatchNorm), loading torchvision's key names
//! (`features.N.weight|bias` for the 3x3 convs, `classifier.0|3|6.weight|bias`) or timm's
//! (`vgg16_timm` ...: the same `features`, then `pre_logits.fc1` a 7x7 conv, `pre_logits.fc2` a
//! 1x1 conv, `head.fc` the classifier).
//!
//! Layer ids follow torchvision's `features` indices: each conv with its ReLU is one stage named
//! by the conv's index (`features.0`, `features.2`, ...), each 2x2 max pool by its own
//! (`features.4`, ... `features.30` for VGG-16). With the classifier: `avgpool` (adaptive average
//! pool to 7x7, flattened: `[25088]`), `classifier.0` (fc + ReLU, `[4096]`), `pooled` (the second
//! fc + ReLU, `[4096]`: the features a new classifier is trained on), `logits`. A feature-only
//! checkpoint (no `classifier.*`) ends with `pooled` = the global average of the last pool
//! (`[512]`).
//!
//! timm's layout after `features`: `pre_logits.fc1` (7x7 conv 512 -> 4096 + ReLU, the input first
//! average-pooled up to 7x7 when smaller; `[4096, h/32 - 6, w/32 - 6]`, 1x1 at 224),
//! `pre_logits.fc2` (1x1 conv + ReLU), `pooled` (global average, `[4096]`), `logits` (`head.fc`).
//! Without `head.fc` it ends at `pooled`.

use candle_core::Tensor;

use super::blocks::{AdaptiveAvgPoolFlatten, ConvAct, DenseAct, MaxPool};
use super::checkpoint::{Checkpoint, ExpectedTensors};
use super::detect::{Detected, Shapes, classes, detected, indices_after};
use super::registry::Architecture;
use crate::graph::classifier::Classifier;
use crate::graph::layers::GlobalAvgPool;
use crate::graph::probe::{BiasProbes, BiasProbing};
use crate::graph::{Network, Stage};
use crate::interchange::onnx::OnnxGraph;
use crate::ops::{Activation, adaptive_avg_pool2d};
use crate::{Error, Result};

/// Width of the two hidden fully connected layers.
const HIDDEN: usize = 4096;
/// Side of the adaptive average pool before the classifier.
const POOL_SIZE: usize = 7;
/// Dropout before `classifier.3` and `classifier.6` in training.
const DROPOUT: f32 = 0.5;

/// The architectures this module builds with torchvision's names.
pub const ARCHITECTURES: [&str; 4] = ["vgg11", "vgg13", "vgg16", "vgg19"];

/// The same architectures with timm's names (`pre_logits.fc1|fc2` convs, `head.fc`).
pub const TIMM_ARCHITECTURES: [&str; 4] = ["vgg11_timm", "vgg13_timm", "vgg16_timm", "vgg19_timm"];

/// Side of `pre_logits.fc1`'s kernel in timm's layout (the 7x7 grid torchvision pools to).
const TIMM_FC1_KERNEL: usize = 7;

/// How a checkpoint names the layers after `features`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Layout {
    /// torchvision: `classifier.0|3|6` fully connected layers after a 7x7 adaptive pool.
    Torchvision,
    /// timm: `pre_logits.fc1` (7x7 conv), `pre_logits.fc2` (1x1 conv), `head.fc`.
    Timm,
}

/// The base VGG id (`vgg16`) and the layout of an architecture id (`vgg16` or `vgg16_timm`).
pub fn parse(architecture: &str) -> Option<(&'static str, Layout)> {
    if let Some(i) = ARCHITECTURES.iter().position(|a| *a == architecture) {
        return Some((ARCHITECTURES[i], Layout::Torchvision));
    }
    TIMM_ARCHITECTURES
        .iter()
        .position(|a| *a == architecture)
        .map(|i| (ARCHITECTURES[i], Layout::Timm))
}

/// The architecture id of a base VGG (`vgg16`) in a layout.
pub fn id(base: &str, layout: Layout) -> Option<&'static str> {
    let i = ARCHITECTURES.iter().position(|a| *a == base)?;
    Some(match layout {
        Layout::Torchvision => ARCHITECTURES[i],
        Layout::Timm => TIMM_ARCHITECTURES[i],
    })
}

/// One entry of a VGG configuration: a 3x3 conv with that many output channels, or a pool.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Item {
    Conv(usize),
    Pool,
}

/// A pool in the configurations below.
const M: usize = 0;

/// torchvision's configurations A, B, D, E: output channels of each 3x3 conv, `M` for a pool.
fn config(architecture: &str) -> Option<Vec<Item>> {
    let (base, _) = parse(architecture)?;
    let cfg: &[usize] = match base {
        "vgg11" => &[64, M, 128, M, 256, 256, M, 512, 512, M, 512, 512, M],
        "vgg13" => &[
            64, 64, M, 128, 128, M, 256, 256, M, 512, 512, M, 512, 512, M,
        ],
        "vgg16" => &[
            64, 64, M, 128, 128, M, 256, 256, 256, M, 512, 512, 512, M, 512, 512, 512, M,
        ],
        "vgg19" => &[
            64, 64, M, 128, 128, M, 256, 256, 256, 256, M, 512, 512, 512, 512, M, 512, 512, 512,
            512, M,
        ],
        _ => return None,
    };
    Some(
        cfg.iter()
            .map(|&c| if c == M { Item::Pool } else { Item::Conv(c) })
            .collect(),
    )
}

/// The `features` layers as `(torchvision index, item, input channels)`: a conv takes index
/// `i` and its ReLU `i + 1`, a pool one index.
fn layers(items: &[Item]) -> Vec<(usize, Item, usize)> {
    let mut out = Vec::new();
    let (mut index, mut channels) = (0, 3);
    for &item in items {
        out.push((index, item, channels));
        match item {
            Item::Conv(c) => {
                index += 2;
                channels = c;
            }
            Item::Pool => index += 1,
        }
    }
    out
}

/// The VGG variant with `convs` 3x3 convolutions (8, 10, 13 or 16), if any.
pub fn from_conv_count(convs: usize) -> Option<&'static str> {
    ARCHITECTURES.into_iter().find(|a| {
        config(a).is_some_and(|c| c.iter().filter(|i| matches!(i, Item::Conv(_))).count() == convs)
    })
}

/// The id of the last conv stage (the default class-activation-map layer), e.g. `features.28`
/// for VGG-16.
pub fn default_cam_layer(architecture: &str) -> Option<String> {
    let items = config(architecture)?;
    layers(&items)
        .into_iter()
        .rev()
        .find(|(_, item, _)| matches!(item, Item::Conv(_)))
        .map(|(i, _, _)| format!("features.{i}"))
}

fn unknown(architecture: &str) -> Error {
    Error::Model(format!(
        "unknown VGG `{architecture}`; known: {}, {}",
        ARCHITECTURES.join(", "),
        TIMM_ARCHITECTURES.join(", ")
    ))
}

/// Every tensor a VGG checkpoint must hold, with its shape; `num_classes` 0 means a
/// feature-only checkpoint (no `classifier.*`; with timm's names, `pre_logits.*` but no
/// `head.fc`). `None` for an unknown variant.
pub fn expected_tensors(architecture: &str, num_classes: usize) -> Option<ExpectedTensors> {
    let (_, layout) = parse(architecture)?;
    let items = config(architecture)?;
    let mut t = ExpectedTensors::new();
    let mut last = 3;
    for (i, item, cin) in layers(&items) {
        if let Item::Conv(c) = item {
            t.push((format!("features.{i}.weight"), vec![c, cin, 3, 3]));
            t.push((format!("features.{i}.bias"), vec![c]));
            last = c;
        }
    }
    if layout == Layout::Timm {
        let k = TIMM_FC1_KERNEL;
        t.push(("pre_logits.fc1.weight".into(), vec![HIDDEN, last, k, k]));
        t.push(("pre_logits.fc1.bias".into(), vec![HIDDEN]));
        t.push(("pre_logits.fc2.weight".into(), vec![HIDDEN, HIDDEN, 1, 1]));
        t.push(("pre_logits.fc2.bias".into(), vec![HIDDEN]));
        if num_classes > 0 {
            t.push(("head.fc.weight".into(), vec![num_classes, HIDDEN]));
            t.push(("head.fc.bias".into(), vec![num_classes]));
        }
        return Some(t);
    }
    if num_classes > 0 {
        let flat = last * POOL_SIZE * POOL_SIZE;
        for (i, (out, inp)) in [(HIDDEN, flat), (HIDDEN, HIDDEN), (num_classes, HIDDEN)]
            .into_iter()
            .enumerate()
        {
            t.push((format!("classifier.{}.weight", 3 * i), vec![out, inp]));
            t.push((format!("classifier.{}.bias", 3 * i), vec![out]));
        }
    }
    Some(t)
}

/// Builds a VGG from an audited checkpoint (`num_classes` 0: feature-only, the network ends at
/// `pooled` = global average `[batch, 512]`, `[batch, 4096]` with timm's `pre_logits`). Input
/// `[batch, 3, h, w]` (h, w >= 32), output `[batch, num_classes]`.
pub fn build(ckpt: &Checkpoint, architecture: &str, num_classes: usize) -> Result<Network> {
    let (_, layout) = parse(architecture).ok_or_else(|| unknown(architecture))?;
    let items = config(architecture).ok_or_else(|| unknown(architecture))?;
    let expected =
        expected_tensors(architecture, num_classes).ok_or_else(|| unknown(architecture))?;
    ckpt.audit(architecture, &expected)?;
    let mut stages: Vec<(String, Box<dyn Stage>)> = Vec::new();
    for (i, item, _) in layers(&items) {
        let stage: Box<dyn Stage> = match item {
            Item::Conv(_) => Box::new(ConvAct::new(
                ckpt.get(&format!("features.{i}.weight"))?,
                ckpt.get(&format!("features.{i}.bias"))?,
                1,
                1,
                Activation::Relu,
            )),
            Item::Pool => Box::new(MaxPool {
                kernel: 2,
                stride: 2,
                padding: 0,
            }),
        };
        stages.push((format!("features.{i}"), stage));
    }
    if layout == Layout::Timm {
        let conv = |name: &str| -> Result<ConvAct> {
            Ok(ConvAct::new(
                ckpt.get(&format!("pre_logits.{name}.weight"))?,
                ckpt.get(&format!("pre_logits.{name}.bias"))?,
                1,
                0,
                Activation::Relu,
            ))
        };
        stages.push((
            "pre_logits.fc1".into(),
            Box::new(PoolUpThenConv {
                min_size: TIMM_FC1_KERNEL,
                conv: conv("fc1")?,
            }),
        ));
        stages.push(("pre_logits.fc2".into(), Box::new(conv("fc2")?)));
        stages.push(("pooled".into(), Box::new(GlobalAvgPool)));
        if num_classes > 0 {
            stages.push((
                "logits".into(),
                Box::new(Classifier::new(
                    ckpt.get("head.fc.weight")?,
                    ckpt.get("head.fc.bias")?,
                    0.0,
                )),
            ));
        }
        return Ok(Network::new(3, stages));
    }
    if num_classes == 0 {
        stages.push(("pooled".into(), Box::new(GlobalAvgPool)));
        return Ok(Network::new(3, stages));
    }
    let fc = |i: usize| -> Result<(candle_core::Tensor, candle_core::Tensor)> {
        Ok((
            ckpt.get(&format!("classifier.{i}.weight"))?,
            ckpt.get(&format!("classifier.{i}.bias"))?,
        ))
    };
    stages.push((
        "avgpool".into(),
        Box::new(AdaptiveAvgPoolFlatten { size: POOL_SIZE }),
    ));
    let (w, b) = fc(0)?;
    stages.push((
        "classifier.0".into(),
        Box::new(DenseAct::new(w, b, Activation::Relu, 0.0)),
    ));
    let (w, b) = fc(3)?;
    stages.push((
        "pooled".into(),
        Box::new(DenseAct::new(w, b, Activation::Relu, DROPOUT)),
    ));
    let (w, b) = fc(6)?;
    stages.push(("logits".into(), Box::new(Classifier::new(w, b, DROPOUT))));
    Ok(Network::new(3, stages))
}

/// timm's `pre_logits.fc1`: an input smaller than `min_size` on a side is first average-pooled
/// up to it (`adaptive_avg_pool2d` to `max(min_size, side)`), then the conv + ReLU:
/// `[batch, c, h, w]` -> `[batch, out, max(h, k) - k + 1, max(w, k) - k + 1]`.
struct PoolUpThenConv {
    min_size: usize,
    conv: ConvAct,
}

impl PoolUpThenConv {
    /// `x` average-pooled up to `min_size` on a side smaller than it.
    fn pooled_up(&self, x: &Tensor) -> Result<Tensor> {
        let (_, _, h, w) = x.dims4()?;
        Ok(if h < self.min_size || w < self.min_size {
            adaptive_avg_pool2d(x, (h.max(self.min_size), w.max(self.min_size)))?
        } else {
            x.clone()
        })
    }

    fn grown(&self, input: &[usize]) -> Vec<usize> {
        vec![
            input[0],
            input[1].max(self.min_size),
            input[2].max(self.min_size),
        ]
    }
}

impl Stage for PoolUpThenConv {
    fn forward(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        self.conv.forward(&self.pooled_up(x)?, train)
    }

    fn bias_probing(&self) -> BiasProbing {
        BiasProbing::Own
    }

    fn forward_probed(&self, x: &Tensor, probes: &mut BiasProbes) -> Result<Tensor> {
        self.conv.forward_probed(&self.pooled_up(x)?, probes)
    }

    fn output_shape(&self, input: &[usize]) -> Vec<usize> {
        self.conv.output_shape(&self.grown(input))
    }

    fn macs(&self, input: &[usize]) -> u64 {
        self.conv.macs(&self.grown(input))
    }

    fn param_count(&self) -> usize {
        self.conv.param_count()
    }

    fn tensors_mut(&mut self) -> Vec<(String, &mut Tensor)> {
        self.conv.tensors_mut()
    }

    /// The convolution; pooling up a feature map smaller than the kernel is refused (export at
    /// an input of at least `32 x min_size` pixels).
    fn to_onnx(&self, g: &mut OnnxGraph, x: &str, input: &[usize]) -> Result<String> {
        if input[1] < self.min_size || input[2] < self.min_size {
            return Err(Error::Model(format!(
                "its {}x{} input would be average-pooled up to {min}x{min}, which this export \
                 does not describe; export at an input size of at least {} pixels",
                input[1],
                input[2],
                32 * self.min_size,
                min = self.min_size,
            )));
        }
        self.conv.to_onnx(g, x, input)
    }
}

/// The VGG family (torchvision's and timm's layouts) in the [`registry`](super::registry).
pub struct Vgg;

/// Every VGG id, torchvision's layout then timm's.
const ALL_IDS: [&str; 8] = [
    ARCHITECTURES[0],
    ARCHITECTURES[1],
    ARCHITECTURES[2],
    ARCHITECTURES[3],
    TIMM_ARCHITECTURES[0],
    TIMM_ARCHITECTURES[1],
    TIMM_ARCHITECTURES[2],
    TIMM_ARCHITECTURES[3],
];

impl Architecture for Vgg {
    fn family(&self) -> &'static str {
        "VGG"
    }

    fn ids(&self) -> &'static [&'static str] {
        &ALL_IDS
    }

    fn key_names(&self) -> &'static str {
        "torchvision `features.N`, `classifier.N`; timm `pre_logits.fc1|fc2`, `head.fc`"
    }

    fn expected_tensors(&self, id: &str, num_classes: usize) -> Option<ExpectedTensors> {
        expected_tensors(id, num_classes)
    }

    fn build(&self, id: &str, ckpt: &Checkpoint, num_classes: usize) -> Result<Network> {
        build(ckpt, id, num_classes)
    }

    fn default_cam_layer(&self, id: &str) -> String {
        default_cam_layer(id).unwrap_or_default()
    }

    fn detect(&self, shapes: &Shapes) -> Option<Result<Detected>> {
        let first = shapes.get("features.0.weight");
        first
            .is_some_and(|s| s.len() == 4)
            .then(|| detect_vgg(shapes))
    }
}

fn detect_vgg(shapes: &Shapes) -> Result<Detected> {
    if shapes
        .keys()
        .any(|k| k.starts_with("features.") && k.ends_with(".running_mean"))
    {
        return Err(Error::Model(
            "the weights look like a VGG with BatchNorm (`features.N.running_mean` keys, \
             e.g. vgg16_bn), which convlens does not build (known: vgg11, vgg13, vgg16, vgg19)"
                .into(),
        ));
    }
    let convs = indices_after(shapes, "features.")
        .into_iter()
        .filter(|i| {
            shapes
                .get(&format!("features.{i}.weight"))
                .is_some_and(|s| s.len() == 4)
        })
        .count();
    let Some(name) = from_conv_count(convs) else {
        return Err(Error::Model(format!(
            "the weights look like a VGG (`features.N.weight` 3x3 convs) with {convs} convs; \
             convlens builds {} (8, 10, 13, 16 convs)",
            ARCHITECTURES.join(", ")
        )));
    };
    if shapes.contains_key("pre_logits.fc1.weight") {
        let timm = id(name, Layout::Timm)
            .ok_or_else(|| Error::Model(format!("{name} has no timm layout")))?;
        let why = format!(
            "keys `features.N.weight|bias` without BatchNorm with {convs} 3x3 convs, then \
             `pre_logits.fc1` (7x7 conv) / `pre_logits.fc2` / `head.fc` (timm's VGG): {timm}"
        );
        return Ok(detected(timm, why, classes(shapes, "head.fc.weight")));
    }
    let why = format!(
        "keys `features.N.weight|bias` without BatchNorm (torchvision VGG) with {convs} \
         3x3 convs: {name}"
    );
    Ok(detected(name, why, classes(shapes, "classifier.6.weight")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn variants_follow_torchvision() {
        // torchvision state_dict sizes: 22, 26, 32, 38 tensors.
        let counts: Vec<usize> = ARCHITECTURES
            .iter()
            .map(|a| expected_tensors(a, 1000).unwrap().len())
            .collect();
        assert_eq!(counts, [22, 26, 32, 38]);
        assert_eq!(default_cam_layer("vgg16").as_deref(), Some("features.28"));
        assert_eq!(default_cam_layer("vgg19").as_deref(), Some("features.34"));
        assert_eq!(from_conv_count(13), Some("vgg16"));
        assert_eq!(from_conv_count(16), Some("vgg19"));
        assert_eq!(from_conv_count(12), None);
        let t = expected_tensors("vgg16", 10).unwrap();
        assert!(t.contains(&("classifier.0.weight".into(), vec![4096, 25088])));
        assert!(t.contains(&("classifier.6.weight".into(), vec![10, 4096])));
        assert!(t.contains(&("features.28.weight".into(), vec![512, 512, 3, 3])));
        // timm's layout: the same 26 feature tensors, then pre_logits (4) and head.fc (2).
        let t = expected_tensors("vgg16_timm", 1000).unwrap();
        assert_eq!(t.len(), 32);
        assert!(t.contains(&("pre_logits.fc1.weight".into(), vec![4096, 512, 7, 7])));
        assert!(t.contains(&("pre_logits.fc2.weight".into(), vec![4096, 4096, 1, 1])));
        assert!(t.contains(&("head.fc.weight".into(), vec![1000, 4096])));
        assert_eq!(expected_tensors("vgg16_timm", 0).unwrap().len(), 30);
        assert_eq!(parse("vgg19_timm"), Some(("vgg19", Layout::Timm)));
        assert_eq!(id("vgg11", Layout::Timm), Some("vgg11_timm"));
        assert_eq!(
            default_cam_layer("vgg16_timm").as_deref(),
            Some("features.28")
        );
    }
}
