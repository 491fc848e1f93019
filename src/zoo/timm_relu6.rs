//! timm's naming of the ReLU6 mobile nets without squeeze-excitation: EfficientNet-Lite0..4
//! (`tf_efficientnet_lite0` .. `tf_efficientnet_lite4`, TensorFlow "same" padding, BatchNorm eps
//! 1e-3) and MobileNetV2 (`mobilenetv2_100`, symmetric padding, eps 1e-5). Both read
//! `conv_stem`, `bn1`, `blocks.S.B.*` (see [`super::mobile_blocks`]), `conv_head`, `bn2`,
//! `classifier`; the block shapes are those of [`super::efficientnet_lite`] and
//! [`super::mobilenet_v2`] (the same networks under torchvision's or the bundled file's names).
//!
//! Layer ids: `conv_stem`, `blocks.S.B`, `conv_head` (the CAM layer), `pooled`, `logits`.

use super::blocks::MbConvConfig;
use super::checkpoint::{Checkpoint, ExpectedTensors, expected_batchnorm};
use super::detect::{Detected, Shapes, classes, detected};
use super::efficientnet_lite::LiteConfig;
use super::mobile_blocks::{BlockSpec, KeyLayout, build_block, conv_bn, expected_block};
use super::registry::{Architecture, PreprocessDefaults};
use crate::graph::classifier::Classifier;
use crate::graph::layers::{ConvKind, GlobalAvgPool};
use crate::graph::{Network, Stage};
use crate::ops::Activation;
use crate::{Error, Result};

/// The ids this module builds.
pub const ARCHITECTURES: [&str; 6] = [
    "tf_efficientnet_lite0",
    "tf_efficientnet_lite1",
    "tf_efficientnet_lite2",
    "tf_efficientnet_lite3",
    "tf_efficientnet_lite4",
    "mobilenetv2_100",
];

const STEM: usize = 32;
const HEAD: usize = 1280;

/// The blocks of `id` as `(stage, index in stage, spec)`: a stage starts where the output
/// channels change (every stage of both tables has its own width).
fn blocks(id: &str) -> Option<Vec<(usize, usize, BlockSpec)>> {
    let flat: Vec<MbConvConfig> = if id == "mobilenetv2_100" {
        super::mobilenet_v2::blocks()
    } else {
        LiteConfig::of(id.strip_prefix("tf_")?)?.blocks()
    };
    let mut out = Vec::new();
    let (mut stage, mut index) = (0, 0);
    for (i, b) in flat.iter().enumerate() {
        if i > 0 {
            if b.out_channels == flat[i - 1].out_channels {
                index += 1;
            } else {
                stage += 1;
                index = 0;
            }
        }
        let spec = BlockSpec {
            kernel: b.kernel,
            stride: b.stride,
            in_channels: b.in_channels,
            hidden: b.hidden(),
            out_channels: b.out_channels,
            act: Activation::Relu6,
            se: None,
        };
        out.push((stage, index, spec));
    }
    Some(out)
}

fn is_lite(id: &str) -> bool {
    id.starts_with("tf_efficientnet_lite")
}

/// Every tensor of a checkpoint of `id` with `num_classes` outputs (0: feature-only).
pub fn expected_tensors(id: &str, num_classes: usize) -> Option<ExpectedTensors> {
    let blocks = blocks(id)?;
    let mut t: ExpectedTensors = vec![("conv_stem.weight".into(), vec![STEM, 3, 3, 3])];
    t.extend(expected_batchnorm("bn1", STEM));
    for (s, r, spec) in &blocks {
        t.extend(expected_block(
            KeyLayout::Timm,
            &format!("blocks.{s}.{r}"),
            spec,
        ));
    }
    let last = blocks.last()?.2.out_channels;
    t.push(("conv_head.weight".into(), vec![HEAD, last, 1, 1]));
    t.extend(expected_batchnorm("bn2", HEAD));
    if num_classes > 0 {
        t.push(("classifier.weight".into(), vec![num_classes, HEAD]));
        t.push(("classifier.bias".into(), vec![num_classes]));
    }
    Some(t)
}

fn unknown(id: &str) -> Error {
    Error::Model(format!(
        "unknown timm mobile net `{id}`; known: {}",
        ARCHITECTURES.join(", ")
    ))
}

/// Builds the network of `id` from an audited checkpoint (`num_classes` 0: it ends at
/// `pooled`). Input `[batch, 3, h, w]`, output `[batch, num_classes]` (or `[batch, 1280]`).
pub fn build(ckpt: &Checkpoint, id: &str, num_classes: usize) -> Result<Network> {
    let blocks = blocks(id).ok_or_else(|| unknown(id))?;
    ckpt.audit(
        id,
        &expected_tensors(id, num_classes).ok_or_else(|| unknown(id))?,
    )?;
    let (eps, same) = if is_lite(id) {
        (1e-3, true)
    } else {
        (1e-5, false)
    };
    let relu6 = Activation::Relu6;
    let mut stages: Vec<(String, Box<dyn Stage>)> = Vec::new();
    let stem = ConvKind::Dense {
        stride: 2,
        padding: 1,
    };
    let stem = conv_bn(ckpt, ("conv_stem.weight", "bn1"), stem, relu6, eps, same)?;
    stages.push(("conv_stem".into(), Box::new(stem)));
    for (s, r, spec) in &blocks {
        let id = format!("blocks.{s}.{r}");
        let block = build_block(ckpt, KeyLayout::Timm, &id, spec, eps, same)?;
        stages.push((id, Box::new(block)));
    }
    let head = ("conv_head.weight", "bn2");
    let head = conv_bn(ckpt, head, ConvKind::Pointwise, relu6, eps, same)?;
    stages.push(("conv_head".into(), Box::new(head)));
    stages.push(("pooled".into(), Box::new(GlobalAvgPool)));
    if num_classes > 0 {
        let dropout = LiteConfig::of(id.trim_start_matches("tf_")).map_or(0.2, |c| c.dropout);
        stages.push((
            "logits".into(),
            Box::new(Classifier::new(
                ckpt.get("classifier.weight")?,
                ckpt.get("classifier.bias")?,
                dropout,
            )),
        ));
    }
    Ok(Network::new(3, stages))
}

/// timm's EfficientNet-Lite and MobileNetV2 in the [`registry`](super::registry).
pub struct TimmRelu6;

impl Architecture for TimmRelu6 {
    fn family(&self) -> &'static str {
        "EfficientNet-Lite / MobileNetV2 (timm)"
    }

    fn ids(&self) -> &'static [&'static str] {
        &ARCHITECTURES
    }

    fn key_names(&self) -> &'static str {
        "timm `conv_stem`, `blocks.S.B` without squeeze-excitation, `conv_head`, `classifier`"
    }

    fn expected_tensors(&self, id: &str, num_classes: usize) -> Option<ExpectedTensors> {
        expected_tensors(id, num_classes)
    }

    fn build(&self, id: &str, ckpt: &Checkpoint, num_classes: usize) -> Result<Network> {
        build(ckpt, id, num_classes)
    }

    fn default_cam_layer(&self, _id: &str) -> String {
        "conv_head".into()
    }

    /// timm's configs: Lite0..4 at 224, 240, 260, 300, 380 px with crop_pct 0.875, 0.882,
    /// 0.89, 0.904, 0.92 and mean/std 0.5; MobileNetV2 224 / 0.875 with ImageNet's.
    fn preprocess(&self, id: &str) -> PreprocessDefaults {
        let lite = [
            (224, 0.875),
            (240, 0.882),
            (260, 0.89),
            (300, 0.904),
            (380, 0.92),
        ];
        let n = id
            .strip_prefix("tf_efficientnet_lite")
            .and_then(|n| n.parse::<usize>().ok());
        match n.and_then(|n| lite.get(n)) {
            Some(&(size, crop)) => PreprocessDefaults {
                input_size: size,
                resize_shorter: (size as f64 / crop + 1e-6) as u32,
                mean: [0.5; 3],
                std: [0.5; 3],
            },
            None => PreprocessDefaults::IMAGENET,
        }
    }

    fn detect(&self, shapes: &Shapes) -> Option<Result<Detected>> {
        let ours = shapes.contains_key("conv_stem.weight")
            && shapes.contains_key("conv_head.weight")
            && !shapes.contains_key("conv_head.bias")
            && !shapes.keys().any(|k| k.contains(".se."));
        ours.then(|| detect_timm_relu6(shapes))
    }
}

fn detect_timm_relu6(shapes: &Shapes) -> Result<Detected> {
    let body: Shapes = shapes
        .iter()
        .filter(|(k, _)| !k.starts_with("classifier."))
        .map(|(k, s)| (k.clone(), s.clone()))
        .collect();
    let blocks = shapes
        .keys()
        .filter(|k| k.ends_with(".conv_dw.weight"))
        .count();
    let found = ARCHITECTURES.into_iter().find(|a| {
        expected_tensors(a, 0).is_some_and(|t| t.into_iter().collect::<Shapes>() == body)
    });
    let Some(id) = found else {
        return Err(Error::Model(format!(
            "the weights look like a timm mobile net without squeeze-excitation (`conv_stem`, \
             `blocks.S.B`, `conv_head`) with {blocks} blocks whose shapes fit none of {}",
            ARCHITECTURES.join(", ")
        )));
    };
    let what = if is_lite(id) {
        "EfficientNet-Lite, TensorFlow \"same\" padding as timm's `tf_` ports"
    } else {
        "MobileNetV2 width 1.0"
    };
    let why = format!(
        "keys timm `conv_stem`, `blocks.S.B.*` without squeeze-excitation, `conv_head` with \
         {blocks} blocks whose shapes are {what}: {id}"
    );
    Ok(detected(id, why, classes(shapes, "classifier.weight")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stages_follow_timms_grouping() {
        // timm's stage lengths (`[len(s) for s in model.blocks]`).
        let stages = |id: &str| -> Vec<usize> {
            let b = blocks(id).unwrap();
            let n = b.last().unwrap().0 + 1;
            (0..n)
                .map(|s| b.iter().filter(|x| x.0 == s).count())
                .collect()
        };
        assert_eq!(stages("tf_efficientnet_lite0"), [1, 2, 2, 3, 3, 4, 1]);
        assert_eq!(stages("tf_efficientnet_lite4"), [1, 4, 4, 6, 6, 8, 1]);
        assert_eq!(stages("mobilenetv2_100"), [1, 2, 3, 4, 3, 3, 1]);
    }
}
