//! MobileNet V1 (Howard et al.), loading timm's `mobilenetv1_100` / `mobilenetv1_125` key
//! names (`conv_stem.weight`, `bn1.*`, `blocks.S.B.conv_dw.weight`, `blocks.S.B.bn1.*`,
//! `blocks.S.B.conv_pw.weight`, `blocks.S.B.bn2.*`, `classifier.*`).
//!
//! The stem is a 3x3/s2 conv + BatchNorm + ReLU6; then 13 depthwise-separable blocks (3x3
//! depthwise + BN + ReLU6, 1x1 pointwise + BN + ReLU6, no residual) in timm's five stages
//! (1, 2, 2, 6, 2 blocks; 64, 128, 256, 512, 1024 channels times the width multiplier, each
//! stage after the first starting with stride 2); global average pooling; `classifier`. No
//! head conv (`mobilenetv1_100h`'s `conv_head` is not built). BatchNorm eps 1e-5 (timm's
//! PyTorch default), folded.
//!
//! Layer ids: `conv_stem` (`[32w, 112, 112]` at 224), `blocks.0` .. `blocks.4` (the stages;
//! `blocks.4` is `[1024w, 7, 7]`, the default CAM layer), `pooled` (`[1024w]`), `logits` (absent
//! for a feature-only checkpoint).

use super::blocks::MbConv;
use super::checkpoint::{Checkpoint, ExpectedTensors, expected_batchnorm};
use super::compose::Sequential;
use super::detect::{Detected, Shapes, classes, detected};
use super::efficientnet_lite::round_channels;
use super::registry::{Architecture, PreprocessDefaults};
use crate::graph::classifier::Classifier;
use crate::graph::layers::{ConvBnAct, ConvKind, GlobalAvgPool};
use crate::graph::{Network, Stage};
use crate::ops::Activation;
use crate::{Error, Result};

/// BatchNorm epsilon of timm's MobileNet V1 (PyTorch's default).
const BN_EPS: f64 = 1e-5;
/// Stem channels at width 1.0.
const STEM_CHANNELS: usize = 32;
/// Stages at width 1.0: (blocks, output channels, stride of the first block).
const STAGES: [(usize, usize, usize); 5] = [
    (1, 64, 1),
    (2, 128, 2),
    (2, 256, 2),
    (6, 512, 2),
    (2, 1024, 2),
];

/// The architectures this module builds, with their width multipliers.
pub const ARCHITECTURES: [(&str, f64); 2] = [("mobilenetv1_100", 1.0), ("mobilenetv1_125", 1.25)];

/// The ids of [`ARCHITECTURES`].
const IDS: [&str; 2] = [ARCHITECTURES[0].0, ARCHITECTURES[1].0];

/// The layer class-activation maps look at by default (the last stage).
pub const DEFAULT_CAM_LAYER: &str = "blocks.4";

/// Width multiplier of architecture `id`.
fn width_of(id: &str) -> Option<f64> {
    ARCHITECTURES
        .iter()
        .find(|(a, _)| *a == id)
        .map(|&(_, w)| w)
}

/// One depthwise-separable block: (input channels, output channels, stride).
type BlockShape = (usize, usize, usize);

/// The blocks of each stage at `width`, in order.
fn stages(width: f64) -> Vec<Vec<BlockShape>> {
    let mut c = round_channels(STEM_CHANNELS, width);
    STAGES
        .iter()
        .map(|&(n, out, stride)| {
            let out = round_channels(out, width);
            (0..n)
                .map(|i| {
                    let b = (c, out, if i == 0 { stride } else { 1 });
                    c = out;
                    b
                })
                .collect()
        })
        .collect()
}

/// Every tensor a checkpoint of width `width` holds; `num_classes` 0: no `classifier.*`.
fn tensors(width: f64, num_classes: usize) -> ExpectedTensors {
    let stem = round_channels(STEM_CHANNELS, width);
    let mut t: ExpectedTensors = vec![("conv_stem.weight".into(), vec![stem, 3, 3, 3])];
    t.extend(expected_batchnorm("bn1", stem));
    let mut last = stem;
    for (s, blocks) in stages(width).iter().enumerate() {
        for (b, &(cin, cout, _)) in blocks.iter().enumerate() {
            let p = format!("blocks.{s}.{b}");
            t.push((format!("{p}.conv_dw.weight"), vec![cin, 1, 3, 3]));
            t.extend(expected_batchnorm(&format!("{p}.bn1"), cin));
            t.push((format!("{p}.conv_pw.weight"), vec![cout, cin, 1, 1]));
            t.extend(expected_batchnorm(&format!("{p}.bn2"), cout));
            last = cout;
        }
    }
    if num_classes > 0 {
        t.push(("classifier.weight".into(), vec![num_classes, last]));
        t.push(("classifier.bias".into(), vec![num_classes]));
    }
    t
}

/// Every tensor a checkpoint of `architecture` with `num_classes` outputs holds (0: feature
/// only); `None` for an id this module does not build.
pub fn expected_tensors(architecture: &str, num_classes: usize) -> Option<ExpectedTensors> {
    width_of(architecture).map(|w| tensors(w, num_classes))
}

/// Builds MobileNet V1 from a checkpoint (audited first; `num_classes` 0: the network ends at
/// `pooled`). Input `[batch, 3, h, w]`, output `[batch, num_classes]` (or `[batch, 1024w]`).
pub fn build(ckpt: &Checkpoint, architecture: &str, num_classes: usize) -> Result<Network> {
    let width = width_of(architecture).ok_or_else(|| {
        Error::Model(format!(
            "`{architecture}` is not a MobileNet V1 id ({})",
            IDS.join(", ")
        ))
    })?;
    ckpt.audit(architecture, &tensors(width, num_classes))?;
    let relu6 = Activation::Relu6;
    let conv = |kind, w: &str, bn: &str| -> Result<ConvBnAct> {
        ConvBnAct::new(kind, &ckpt.get(w)?, &ckpt.batchnorm(bn, BN_EPS)?, relu6)
    };
    let mut net: Vec<(String, Box<dyn Stage>)> = vec![(
        "conv_stem".into(),
        Box::new(conv(
            ConvKind::Dense {
                stride: 2,
                padding: 1,
            },
            "conv_stem.weight",
            "bn1",
        )?),
    )];
    for (s, blocks) in stages(width).iter().enumerate() {
        let mut parts: Vec<(String, Box<dyn Stage>)> = Vec::new();
        for (b, &(_, _, stride)) in blocks.iter().enumerate() {
            let p = format!("blocks.{s}.{b}");
            let depthwise = conv(
                ConvKind::Depthwise { stride, padding: 1 },
                &format!("{p}.conv_dw.weight"),
                &format!("{p}.bn1"),
            )?;
            let pointwise = conv(
                ConvKind::Pointwise,
                &format!("{p}.conv_pw.weight"),
                &format!("{p}.bn2"),
            )?;
            // A separable block is an MBConv without expansion or residual whose projection
            // keeps its ReLU6.
            parts.push((
                b.to_string(),
                Box::new(MbConv::new(None, depthwise, pointwise, false)),
            ));
        }
        net.push((format!("blocks.{s}"), Box::new(Sequential::new(parts))));
    }
    net.push(("pooled".into(), Box::new(GlobalAvgPool)));
    if num_classes > 0 {
        net.push((
            "logits".into(),
            Box::new(Classifier::new(
                ckpt.get("classifier.weight")?,
                ckpt.get("classifier.bias")?,
                0.0,
            )),
        ));
    }
    Ok(Network::new(3, net))
}

/// MobileNet V1 (timm) in the [`registry`](super::registry).
pub struct MobileNetV1;

impl Architecture for MobileNetV1 {
    fn family(&self) -> &'static str {
        "MobileNet V1"
    }

    fn ids(&self) -> &'static [&'static str] {
        &IDS
    }

    fn key_names(&self) -> &'static str {
        "timm `conv_stem`, `bn1`, `blocks.S.B.conv_dw`/`conv_pw`, `classifier`"
    }

    fn expected_tensors(&self, id: &str, num_classes: usize) -> Option<ExpectedTensors> {
        expected_tensors(id, num_classes)
    }

    fn build(&self, id: &str, ckpt: &Checkpoint, num_classes: usize) -> Result<Network> {
        build(ckpt, id, num_classes)
    }

    fn default_cam_layer(&self, _id: &str) -> String {
        DEFAULT_CAM_LAYER.into()
    }

    /// timm's `mobilenetv1_100.ra4_e3600_r224_in1k` / `mobilenetv1_125.ra4_e3600_r224_in1k`:
    /// 224 px at crop fraction 0.875 (resize to 256), mean and std 0.5.
    fn preprocess(&self, _id: &str) -> PreprocessDefaults {
        PreprocessDefaults {
            input_size: 224,
            resize_shorter: 256,
            mean: [0.5; 3],
            std: [0.5; 3],
        }
    }

    /// timm's EfficientNet-style names (`conv_stem`, `blocks.S.B`) with only depthwise-separable
    /// blocks (`conv_dw` + `conv_pw`; no `conv_pwl`, no squeeze-excitation) and no `conv_head`.
    fn detect(&self, shapes: &Shapes) -> Option<Result<Detected>> {
        let separable_only = shapes.contains_key("conv_stem.weight")
            && shapes.contains_key("blocks.0.0.conv_dw.weight")
            && !shapes.contains_key("conv_head.weight")
            && shapes
                .keys()
                .filter_map(|k| k.strip_prefix("blocks."))
                .all(|k| {
                    let part = k.split('.').nth(2).unwrap_or_default();
                    matches!(part, "conv_dw" | "bn1" | "conv_pw" | "bn2")
                });
        separable_only.then(|| detect_mobilenet_v1(shapes))
    }
}

fn detect_mobilenet_v1(shapes: &Shapes) -> Result<Detected> {
    let stem = shapes.get("conv_stem.weight").cloned().unwrap_or_default();
    let body: Shapes = shapes
        .iter()
        .filter(|(k, _)| !k.starts_with("classifier."))
        .map(|(k, s)| (k.clone(), s.clone()))
        .collect();
    // The width from the stem (32 channels times the multiplier), then every shape checked.
    let found = ARCHITECTURES.iter().find(|&&(_, w)| {
        stem.first() == Some(&round_channels(STEM_CHANNELS, w))
            && tensors(w, 0).into_iter().collect::<Shapes>() == body
    });
    let blocks = shapes
        .keys()
        .filter(|k| k.ends_with(".conv_dw.weight"))
        .count();
    let Some(&(id, width)) = found else {
        return Err(Error::Model(format!(
            "the weights look like a timm MobileNet V1 (`conv_stem`, `blocks.S.B.conv_dw`/\
             `conv_pw` keys, no `conv_head`) with stem {stem:?} and {blocks} separable blocks; \
             convlens builds {} (13 blocks in stages of 1-2-2-6-2, stem 32 or 40 channels)",
            IDS.join(", ")
        )));
    };
    let last = round_channels(1024, width);
    let why = format!(
        "keys `conv_stem.weight` {stem:?}, `blocks.0..4.B.conv_dw`/`conv_pw` (13 \
         depthwise-separable blocks in stages of 1-2-2-6-2, {last} channels at the end, no \
         `conv_head`; timm MobileNet V1) at width {width}: {id}"
    );
    Ok(detected(id, why, classes(shapes, "classifier.weight")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timm_tensor_counts_and_widths() {
        // timm's state dict: 164 entries, 27 of them `num_batches_tracked`.
        assert_eq!(
            expected_tensors("mobilenetv1_100", 1000).unwrap().len(),
            137
        );
        let t = expected_tensors("mobilenetv1_125", 0).unwrap();
        assert!(t.contains(&("conv_stem.weight".into(), vec![40, 3, 3, 3])));
        assert!(t.contains(&("blocks.4.1.conv_pw.weight".into(), vec![1280, 1280, 1, 1])));
        let strides: Vec<usize> = stages(1.0).iter().map(|s| s[0].2).collect();
        assert_eq!(strides, [1, 2, 2, 2, 2]);
    }
}
