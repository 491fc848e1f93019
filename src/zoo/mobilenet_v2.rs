//! MobileNetV2 (Sandler et al.; width 1.0), loading torchvision's key names
//! (`features.0.0.weight`, `features.0.1.running_mean`, `features.1.conv.0.0.weight`,
//! `features.2.conv.3.weight`, `features.18.0.weight`, `classifier.1.weight` ...).
//! BatchNorm (eps 1e-5) is folded; depthwise convs run on the fused depthwise kernel, 1x1
//! convs as matrix products.
//!
//! Layer ids: `features.0` (3x3/s2 conv + BN + ReLU6, `[32, 112, 112]` at 224), `features.1` ..
//! `features.17` (inverted residual blocks), `features.18` (1x1 conv 320 -> 1280 + BN + ReLU6,
//! `[1280, 7, 7]`), `pooled` (`[1280]`), `logits` (absent for a feature-only checkpoint).

use super::blocks::{MbConv, MbConvConfig};
use super::checkpoint::{Checkpoint, ExpectedTensors, expected_batchnorm};
use super::detect::{Detected, Shapes, classes, detected, indices_after};
use super::registry::Architecture;
use crate::graph::classifier::Classifier;
use crate::graph::layers::{ConvBnAct, ConvKind, GlobalAvgPool};
use crate::graph::{Network, Stage};
use crate::ops::Activation;
use crate::{Error, Result};

/// BatchNorm epsilon of torchvision's MobileNetV2.
const BN_EPS: f64 = 1e-5;
const STEM_CHANNELS: usize = 32;
/// Channels of `features.18` (the `pooled` features).
pub const FEATURE_CHANNELS: usize = 1280;
/// Dropout before the classifier in training (torchvision's `classifier.0`).
const DROPOUT: f32 = 0.2;

/// The layer class-activation maps look at by default.
pub const DEFAULT_CAM_LAYER: &str = "features.18";

/// Inverted residual settings: (expansion t, output channels c, repeats n, first stride s).
const SETTINGS: [(usize, usize, usize, usize); 7] = [
    (1, 16, 1, 1),
    (6, 24, 2, 2),
    (6, 32, 3, 2),
    (6, 64, 4, 2),
    (6, 96, 3, 1),
    (6, 160, 3, 2),
    (6, 320, 1, 1),
];

/// The shape of one inverted residual block (the depthwise kernel is always 3x3).
pub type BlockConfig = MbConvConfig;

/// Key prefixes of block `i`'s (`features.i`) three conv + BN pairs as `(conv weight, bn)`:
/// expand (only when `expand != 1`), depthwise, project.
fn block_keys(b: &BlockConfig, i: usize) -> Vec<(String, String)> {
    let p = format!("features.{i}.conv");
    let mut keys = Vec::new();
    let mut n = 0;
    if b.expand != 1 {
        keys.push((format!("{p}.0.0.weight"), format!("{p}.0.1")));
        n = 1;
    }
    keys.push((format!("{p}.{n}.0.weight"), format!("{p}.{n}.1")));
    keys.push((format!("{p}.{}.weight", n + 1), format!("{p}.{}", n + 2)));
    keys
}

/// The 17 blocks (`features.1` .. `features.17`), in order.
pub fn blocks() -> Vec<BlockConfig> {
    let mut out = Vec::new();
    let mut in_channels = STEM_CHANNELS;
    for &(expand, c, n, s) in &SETTINGS {
        for r in 0..n {
            out.push(BlockConfig {
                kernel: 3,
                stride: if r == 0 { s } else { 1 },
                expand,
                in_channels,
                out_channels: c,
            });
            in_channels = c;
        }
    }
    out
}

/// Every tensor a MobileNetV2 checkpoint must hold, with its shape; `num_classes` 0 means a
/// feature-only checkpoint (no `classifier.*`).
pub fn expected_tensors(num_classes: usize) -> ExpectedTensors {
    let mut t: ExpectedTensors = vec![("features.0.0.weight".into(), vec![STEM_CHANNELS, 3, 3, 3])];
    t.extend(expected_batchnorm("features.0.1", STEM_CHANNELS));
    let blocks = blocks();
    for (i, b) in blocks.iter().enumerate() {
        let keys = block_keys(b, i + 1);
        let mut shapes = Vec::new();
        if b.expand != 1 {
            shapes.push((vec![b.hidden(), b.in_channels, 1, 1], b.hidden()));
        }
        shapes.push((vec![b.hidden(), 1, b.kernel, b.kernel], b.hidden()));
        shapes.push((vec![b.out_channels, b.hidden(), 1, 1], b.out_channels));
        for ((w, bn), (shape, c)) in keys.into_iter().zip(shapes) {
            t.push((w, shape));
            t.extend(expected_batchnorm(&bn, c));
        }
    }
    #[allow(clippy::expect_used, reason = "a fixed, non-empty table of blocks")]
    let last = blocks.last().expect("MobileNetV2 has blocks").out_channels;
    let head = blocks.len() + 1;
    t.push((
        format!("features.{head}.0.weight"),
        vec![FEATURE_CHANNELS, last, 1, 1],
    ));
    t.extend(expected_batchnorm(
        &format!("features.{head}.1"),
        FEATURE_CHANNELS,
    ));
    if num_classes > 0 {
        t.push((
            "classifier.1.weight".into(),
            vec![num_classes, FEATURE_CHANNELS],
        ));
        t.push(("classifier.1.bias".into(), vec![num_classes]));
    }
    t
}

/// Builds MobileNetV2 from an audited checkpoint (`num_classes` 0: feature-only, the network
/// ends at `pooled`). Input `[batch, 3, h, w]`, output `[batch, num_classes]` (or
/// `[batch, 1280]`).
pub fn build(ckpt: &Checkpoint, num_classes: usize) -> Result<Network> {
    ckpt.audit("mobilenet_v2", &expected_tensors(num_classes))?;
    let relu6 = Activation::Relu6;
    let mut stages: Vec<(String, Box<dyn Stage>)> = Vec::new();
    stages.push((
        "features.0".into(),
        Box::new(ConvBnAct::new(
            ConvKind::Dense {
                stride: 2,
                padding: 1,
            },
            &ckpt.get("features.0.0.weight")?,
            &ckpt.batchnorm("features.0.1", BN_EPS)?,
            relu6,
        )?),
    ));
    let blocks = blocks();
    for (i, b) in blocks.iter().enumerate() {
        let mut keys = block_keys(b, i + 1).into_iter();
        let mut conv = |kind, act| -> Result<ConvBnAct> {
            let (w, bn) = keys.next().ok_or_else(|| {
                crate::Error::Model(format!("block {}: fewer convolutions than expected", i + 1))
            })?;
            ConvBnAct::new(kind, &ckpt.get(&w)?, &ckpt.batchnorm(&bn, BN_EPS)?, act)
        };
        let expand = if b.expand != 1 {
            Some(conv(ConvKind::Pointwise, relu6)?)
        } else {
            None
        };
        let depthwise = conv(
            ConvKind::Depthwise {
                stride: b.stride,
                padding: 1,
            },
            relu6,
        )?;
        let project = conv(ConvKind::Pointwise, Activation::Identity)?;
        stages.push((
            format!("features.{}", i + 1),
            Box::new(MbConv::new(expand, depthwise, project, b.has_residual())),
        ));
    }
    let head = blocks.len() + 1;
    stages.push((
        format!("features.{head}"),
        Box::new(ConvBnAct::new(
            ConvKind::Pointwise,
            &ckpt.get(&format!("features.{head}.0.weight"))?,
            &ckpt.batchnorm(&format!("features.{head}.1"), BN_EPS)?,
            relu6,
        )?),
    ));
    stages.push(("pooled".into(), Box::new(GlobalAvgPool)));
    if num_classes > 0 {
        stages.push((
            "logits".into(),
            Box::new(Classifier::new(
                ckpt.get("classifier.1.weight")?,
                ckpt.get("classifier.1.bias")?,
                DROPOUT,
            )),
        ));
    }
    Ok(Network::new(3, stages))
}

/// MobileNetV2 in the [`registry`](super::registry).
pub struct MobileNetV2;

impl Architecture for MobileNetV2 {
    fn family(&self) -> &'static str {
        "MobileNetV2"
    }

    fn ids(&self) -> &'static [&'static str] {
        &["mobilenet_v2"]
    }

    fn key_names(&self) -> &'static str {
        "torchvision `features.N.conv`, `classifier.1`"
    }

    fn expected_tensors(&self, _id: &str, num_classes: usize) -> Option<ExpectedTensors> {
        Some(expected_tensors(num_classes))
    }

    fn build(&self, _id: &str, ckpt: &Checkpoint, num_classes: usize) -> Result<Network> {
        build(ckpt, num_classes)
    }

    fn default_cam_layer(&self, _id: &str) -> String {
        DEFAULT_CAM_LAYER.into()
    }

    fn detect(&self, shapes: &Shapes) -> Option<Result<Detected>> {
        let blocks = shapes.keys().any(|k| k.starts_with("features.1.conv."));
        (shapes.contains_key("features.0.0.weight") && blocks).then(|| detect_mobilenet_v2(shapes))
    }
}

fn detect_mobilenet_v2(shapes: &Shapes) -> Result<Detected> {
    let blocks = indices_after(shapes, "features.")
        .into_iter()
        .filter(|i| {
            shapes
                .keys()
                .any(|k| k.starts_with(&format!("features.{i}.conv.")))
        })
        .count();
    let stem = shapes
        .get("features.0.0.weight")
        .cloned()
        .unwrap_or_default();
    if blocks != 17 || stem != [32, 3, 3, 3] {
        return Err(Error::Model(format!(
            "the weights look like a MobileNetV2 (`features.N.conv.*` keys) with {blocks} \
             inverted residual blocks and stem {stem:?}; convlens builds only the width-1.0 \
             mobilenet_v2 (17 blocks, stem [32, 3, 3, 3])"
        )));
    }
    let why = "keys `features.0.0.weight` [32, 3, 3, 3] and `features.1..17.conv.*` \
               (17 inverted residual blocks, torchvision MobileNetV2): mobilenet_v2"
        .to_string();
    Ok(detected(
        "mobilenet_v2",
        why,
        classes(shapes, "classifier.1.weight"),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seventeen_blocks_and_torchvision_tensor_count() {
        let b = blocks();
        assert_eq!(b.len(), 17);
        let strided: Vec<usize> = (0..17)
            .filter(|&i| b[i].stride == 2)
            .map(|i| i + 1)
            .collect();
        assert_eq!(strided, vec![2, 4, 7, 14]);
        // The fixture holds 262 tensors (parameters + running statistics).
        assert_eq!(expected_tensors(1000).len(), 262);
        let t = expected_tensors(1000);
        assert!(
            t.iter()
                .any(|(n, s)| n == "features.2.conv.3.weight" && s == &[24])
        );
        assert!(
            t.iter()
                .any(|(n, s)| n == "features.1.conv.1.weight" && s == &[16, 32, 1, 1])
        );
    }
}
