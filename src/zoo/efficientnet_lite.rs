//! EfficientNet-Lite0..4 (Tan & Le; the Lite variant: no squeeze-excitation, ReLU6, fixed stem
//! and head), loading the checkpoint's native key names (`_conv_stem.weight`,
//! `_blocks.4._depthwise_conv.weight`, `_fc.bias` ...).
//!
//! Lite1..4 scale Lite0's channels and repeats as TensorFlow's reference and timm do
//! (`_gen_efficientnet_lite`): channels times the width multiplier rounded to a multiple of 8
//! (never below 90% of the scaled value), the repeats of the middle five stages times the depth
//! multiplier rounded up; the stem (32), the first and last stages' repeats and the head (1280)
//! stay fixed.
//!
//! Layer ids: `stem`, `blocks.0` .. `blocks.N-1` (16, 21, 21, 24, 30 blocks), `head`, `pooled`,
//! `logits` (absent for a feature-only checkpoint without `_fc.*`).

use super::blocks::{MbConv, MbConvConfig};
use super::checkpoint::{Checkpoint, ExpectedTensors, expected_batchnorm};
use super::detect::{Detected, Shapes, classes, detected, indices_after};
use super::registry::{Architecture, PreprocessDefaults};
use crate::graph::classifier::Classifier;
use crate::graph::layers::{ConvBnAct, ConvKind, GlobalAvgPool};
use crate::graph::{Network, Stage};
use crate::ops::Activation;
use crate::{Error, Result};

/// BatchNorm epsilon of the EfficientNet checkpoints (TensorFlow's 1e-3, not PyTorch's 1e-5).
const BN_EPS: f64 = 1e-3;
const STEM_CHANNELS: usize = 32;
const HEAD_CHANNELS: usize = 1280;
/// Channel counts are rounded to multiples of this.
const CHANNEL_DIVISOR: usize = 8;

/// The architectures this module builds.
pub const ARCHITECTURES: [&str; 5] = [
    "efficientnet_lite0",
    "efficientnet_lite1",
    "efficientnet_lite2",
    "efficientnet_lite3",
    "efficientnet_lite4",
];

/// One stage of MBConv blocks: (repeats, kernel, first stride, expansion, output channels),
/// Lite0's values (the base the other variants scale; EfficientNet-B0's too).
pub(crate) const LITE0_STAGES: [(usize, usize, usize, usize, usize); 7] = [
    (1, 3, 1, 1, 16),
    (2, 3, 2, 6, 24),
    (2, 5, 2, 6, 40),
    (3, 3, 2, 6, 80),
    (3, 5, 1, 6, 112),
    (4, 5, 2, 6, 192),
    (1, 3, 1, 6, 320),
];

/// `channels` times the width multiplier `width`, rounded to the nearest multiple of 8 but
/// never below 90% of the scaled value (timm's `round_channels` / `make_divisible`).
pub fn round_channels(channels: usize, width: f64) -> usize {
    let v = channels as f64 * width;
    let d = CHANNEL_DIVISOR;
    let mut rounded = (((v + d as f64 / 2.0) as usize) / d * d).max(d);
    if (rounded as f64) < 0.9 * v {
        rounded += d;
    }
    rounded
}

/// A Lite variant's scaling (TensorFlow's `efficientnet_lite_builder` table).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct LiteConfig {
    /// Channel multiplier.
    pub width: f64,
    /// Repeat multiplier of the middle stages.
    pub depth: f64,
    /// Input side the variant was trained at, in pixels.
    pub resolution: u32,
    /// The centre crop's share of the resized image at evaluation (timm's `crop_pct`).
    pub crop_fraction: f64,
    /// Dropout before the classifier in training.
    pub dropout: f32,
}

impl LiteConfig {
    /// The scaling of `efficientnet_lite0` .. `efficientnet_lite4`.
    pub fn of(architecture: &str) -> Option<Self> {
        let (width, depth, resolution, crop_fraction, dropout) = match architecture {
            "efficientnet_lite0" => (1.0, 1.0, 224, 0.875, 0.2),
            "efficientnet_lite1" => (1.0, 1.1, 240, 0.882, 0.2),
            "efficientnet_lite2" => (1.1, 1.2, 260, 0.890, 0.3),
            "efficientnet_lite3" => (1.2, 1.4, 280, 0.904, 0.3),
            "efficientnet_lite4" => (1.4, 1.8, 300, 0.920, 0.3),
            _ => return None,
        };
        Some(LiteConfig {
            width,
            depth,
            resolution,
            crop_fraction,
            dropout,
        })
    }

    /// `channels` times the width multiplier, rounded to the nearest multiple of 8 but never
    /// below 90% of the scaled value (timm's `round_channels` / `make_divisible`).
    pub fn channels(&self, channels: usize) -> usize {
        round_channels(channels, self.width)
    }

    /// The blocks of stage `stage` (0..7): the first and last keep their repeats, the others
    /// are scaled by the depth multiplier and rounded up.
    fn repeats(&self, stage: usize, repeats: usize) -> usize {
        if stage == 0 || stage + 1 == LITE0_STAGES.len() {
            repeats
        } else {
            (repeats as f64 * self.depth).ceil() as usize
        }
    }

    /// Every MBConv block in order.
    pub fn blocks(&self) -> Vec<BlockConfig> {
        let mut blocks = Vec::new();
        let mut in_channels = STEM_CHANNELS;
        for (stage, &(repeats, kernel, stride, expand, out)) in LITE0_STAGES.iter().enumerate() {
            let out_channels = self.channels(out);
            for r in 0..self.repeats(stage, repeats) {
                blocks.push(BlockConfig {
                    kernel,
                    stride: if r == 0 { stride } else { 1 },
                    expand,
                    in_channels,
                    out_channels,
                });
                in_channels = out_channels;
            }
        }
        blocks
    }
}

/// The shape of one MBConv block.
pub type BlockConfig = MbConvConfig;

/// The 16 blocks of Lite0, in order (strides 2 at blocks 1, 3, 5 and 11).
#[allow(clippy::expect_used, reason = "Lite0 is a row of a fixed table")]
pub fn lite0_blocks() -> Vec<BlockConfig> {
    LiteConfig::of("efficientnet_lite0")
        .expect("Lite0 is known")
        .blocks()
}

fn unknown(architecture: &str) -> Error {
    Error::Model(format!(
        "unknown EfficientNet-Lite `{architecture}`; known: {}",
        ARCHITECTURES.join(", ")
    ))
}

/// Every tensor a Lite checkpoint with `num_classes` outputs must hold, with its shape
/// (`num_classes` 0: feature-only, no `_fc.*`). `None` for an unknown variant.
pub fn expected_tensors(architecture: &str, num_classes: usize) -> Option<ExpectedTensors> {
    let blocks = LiteConfig::of(architecture)?.blocks();
    let mut t: ExpectedTensors = vec![("_conv_stem.weight".into(), vec![STEM_CHANNELS, 3, 3, 3])];
    t.extend(expected_batchnorm("_bn0", STEM_CHANNELS));
    for (i, b) in blocks.iter().enumerate() {
        let p = format!("_blocks.{i}");
        if b.expand != 1 {
            t.push((
                format!("{p}._expand_conv.weight"),
                vec![b.hidden(), b.in_channels, 1, 1],
            ));
            t.extend(expected_batchnorm(&format!("{p}._bn0"), b.hidden()));
        }
        t.push((
            format!("{p}._depthwise_conv.weight"),
            vec![b.hidden(), 1, b.kernel, b.kernel],
        ));
        t.extend(expected_batchnorm(&format!("{p}._bn1"), b.hidden()));
        t.push((
            format!("{p}._project_conv.weight"),
            vec![b.out_channels, b.hidden(), 1, 1],
        ));
        t.extend(expected_batchnorm(&format!("{p}._bn2"), b.out_channels));
    }
    let last = blocks.last()?.out_channels;
    t.push(("_conv_head.weight".into(), vec![HEAD_CHANNELS, last, 1, 1]));
    t.extend(expected_batchnorm("_bn1", HEAD_CHANNELS));
    if num_classes > 0 {
        t.push(("_fc.weight".into(), vec![num_classes, HEAD_CHANNELS]));
        t.push(("_fc.bias".into(), vec![num_classes]));
    }
    Some(t)
}

/// Builds an EfficientNet-Lite from an audited checkpoint (`num_classes` 0: feature-only, the
/// network ends at `pooled`). Input `[batch, 3, h, w]`, output `[batch, num_classes]` (or
/// `[batch, 1280]`).
pub fn build(ckpt: &Checkpoint, architecture: &str, num_classes: usize) -> Result<Network> {
    let cfg = LiteConfig::of(architecture).ok_or_else(|| unknown(architecture))?;
    let expected =
        expected_tensors(architecture, num_classes).ok_or_else(|| unknown(architecture))?;
    ckpt.audit(architecture, &expected)?;
    let relu6 = Activation::Relu6;
    let mut stages: Vec<(String, Box<dyn Stage>)> = Vec::new();
    stages.push((
        "stem".into(),
        Box::new(ConvBnAct::new(
            ConvKind::Dense {
                stride: 2,
                padding: 1,
            },
            &ckpt.get("_conv_stem.weight")?,
            &ckpt.batchnorm("_bn0", BN_EPS)?,
            relu6,
        )?),
    ));
    for (i, b) in cfg.blocks().iter().enumerate() {
        let p = format!("_blocks.{i}");
        let expand = if b.expand != 1 {
            Some(ConvBnAct::new(
                ConvKind::Pointwise,
                &ckpt.get(&format!("{p}._expand_conv.weight"))?,
                &ckpt.batchnorm(&format!("{p}._bn0"), BN_EPS)?,
                relu6,
            )?)
        } else {
            None
        };
        let depthwise = ConvBnAct::new(
            ConvKind::Depthwise {
                stride: b.stride,
                padding: (b.kernel - 1) / 2,
            },
            &ckpt.get(&format!("{p}._depthwise_conv.weight"))?,
            &ckpt.batchnorm(&format!("{p}._bn1"), BN_EPS)?,
            relu6,
        )?;
        let project = ConvBnAct::new(
            ConvKind::Pointwise,
            &ckpt.get(&format!("{p}._project_conv.weight"))?,
            &ckpt.batchnorm(&format!("{p}._bn2"), BN_EPS)?,
            Activation::Identity,
        )?;
        stages.push((
            format!("blocks.{i}"),
            Box::new(MbConv::new(expand, depthwise, project, b.has_residual())),
        ));
    }
    stages.push((
        "head".into(),
        Box::new(ConvBnAct::new(
            ConvKind::Pointwise,
            &ckpt.get("_conv_head.weight")?,
            &ckpt.batchnorm("_bn1", BN_EPS)?,
            relu6,
        )?),
    ));
    stages.push(("pooled".into(), Box::new(GlobalAvgPool)));
    if num_classes > 0 {
        stages.push((
            "logits".into(),
            Box::new(Classifier::new(
                ckpt.get("_fc.weight")?,
                ckpt.get("_fc.bias")?,
                cfg.dropout,
            )),
        ));
    }
    Ok(Network::new(3, stages))
}

/// EfficientNet-Lite0..4 in the [`registry`](super::registry).
pub struct EfficientNetLite;

impl Architecture for EfficientNetLite {
    fn family(&self) -> &'static str {
        "EfficientNet-Lite"
    }

    fn ids(&self) -> &'static [&'static str] {
        &ARCHITECTURES
    }

    fn key_names(&self) -> &'static str {
        "`_conv_stem`, `_blocks.N`, `_conv_head`, `_fc`"
    }

    fn expected_tensors(&self, id: &str, num_classes: usize) -> Option<ExpectedTensors> {
        expected_tensors(id, num_classes)
    }

    fn build(&self, id: &str, ckpt: &Checkpoint, num_classes: usize) -> Result<Network> {
        build(ckpt, id, num_classes)
    }

    fn default_cam_layer(&self, _id: &str) -> String {
        "head".into()
    }

    /// Trained at its own resolution (timm's crop fractions) with TensorFlow's normalisation
    /// (mean 127/255, std 128/255).
    fn preprocess(&self, id: &str) -> PreprocessDefaults {
        match LiteConfig::of(id) {
            Some(c) => PreprocessDefaults {
                input_size: c.resolution,
                // 256, 272, 292, 309, 326 for Lite0..4.
                resize_shorter: (c.resolution as f64 / c.crop_fraction + 1e-6).floor() as u32,
                mean: [0.498; 3],
                std: [0.502; 3],
            },
            None => PreprocessDefaults::IMAGENET,
        }
    }

    fn detect(&self, shapes: &Shapes) -> Option<Result<Detected>> {
        shapes
            .contains_key("_conv_stem.weight")
            .then(|| detect_efficientnet_lite(shapes))
    }
}

fn detect_efficientnet_lite(shapes: &Shapes) -> Result<Detected> {
    if shapes.keys().any(|k| k.contains("._se_reduce.")) {
        return Err(Error::Model(format!(
            "the weights look like an EfficientNet with squeeze-excitation (`_se_reduce` \
             keys, B0..B7); convlens builds the Lite variants {}",
            ARCHITECTURES.join(", ")
        )));
    }
    let blocks = indices_after(shapes, "_blocks.").len();
    let body: Shapes = shapes
        .iter()
        .filter(|(k, _)| !k.starts_with("_fc."))
        .map(|(k, s)| (k.clone(), s.clone()))
        .collect();
    let found = ARCHITECTURES.into_iter().find(|a| {
        expected_tensors(a, 0).is_some_and(|t| t.into_iter().collect::<Shapes>() == body)
    });
    let Some(name) = found else {
        let counts: Vec<String> = ARCHITECTURES
            .iter()
            .map(|a| {
                let n = LiteConfig::of(a).map_or(0, |c| c.blocks().len());
                format!("{a} {n}")
            })
            .collect();
        return Err(Error::Model(format!(
            "the weights look like an EfficientNet-Lite (`_conv_stem`, `_blocks.N` keys) with \
             {blocks} blocks whose shapes fit none of the variants convlens builds ({} blocks)",
            counts.join(", ")
        )));
    };
    let last = shapes
        .get(&format!(
            "_blocks.{}._project_conv.weight",
            blocks.saturating_sub(1)
        ))
        .map_or(0, |s| s[0]);
    let why = format!(
        "keys `_conv_stem.weight`, `_blocks.0..{}.*` without squeeze-excitation, \
         `_conv_head.weight` (EfficientNet-Lite) with {blocks} blocks, the last {last} channels \
         wide: {name}",
        blocks.saturating_sub(1)
    );
    Ok(detected(name, why, classes(shapes, "_fc.weight")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lite0_has_sixteen_blocks_with_the_documented_strides() {
        let blocks = lite0_blocks();
        assert_eq!(blocks.len(), 16);
        let strided: Vec<usize> = (0..16).filter(|&i| blocks[i].stride == 2).collect();
        assert_eq!(strided, vec![1, 3, 5, 11]);
        assert_eq!(blocks[15].out_channels, 320);
    }

    #[test]
    fn expected_tensors_match_the_checkpoint_size() {
        // 247 tensors in the bundled file, all accounted for.
        assert_eq!(
            expected_tensors("efficientnet_lite0", 1000).unwrap().len(),
            247
        );
        assert_eq!(
            expected_tensors("efficientnet_lite0", 0).unwrap().len(),
            245
        );
    }

    #[test]
    fn lite1_to_4_scale_like_timm() {
        let counts: Vec<usize> = ARCHITECTURES
            .iter()
            .map(|a| LiteConfig::of(a).unwrap().blocks().len())
            .collect();
        assert_eq!(counts, [16, 21, 21, 24, 30]);
        let widths = |a: &str| -> Vec<usize> {
            let c = LiteConfig::of(a).unwrap();
            [16, 24, 40, 80, 112, 192, 320]
                .map(|ch| c.channels(ch))
                .to_vec()
        };
        assert_eq!(
            widths("efficientnet_lite1"),
            [16, 24, 40, 80, 112, 192, 320]
        );
        assert_eq!(
            widths("efficientnet_lite2"),
            [16, 24, 48, 88, 120, 208, 352]
        );
        assert_eq!(
            widths("efficientnet_lite3"),
            [24, 32, 48, 96, 136, 232, 384]
        );
        assert_eq!(
            widths("efficientnet_lite4"),
            [24, 32, 56, 112, 160, 272, 448]
        );
        // Lite4: stage repeats 1, 4, 4, 6, 6, 8, 1; strides still at each stage's first block.
        let blocks = LiteConfig::of("efficientnet_lite4").unwrap().blocks();
        let strided: Vec<usize> = (0..blocks.len())
            .filter(|&i| blocks[i].stride == 2)
            .collect();
        assert_eq!(strided, [1, 5, 9, 21]);
        assert_eq!(blocks[0].in_channels, 32, "the stem stays 32");
        // Parameters with 1000 classes (running statistics excluded): Lite0 is the bundled
        // file's 4,652,008; TensorFlow's table gives 5.4M, 6.1M, 8.2M, 13.0M for Lite1..4.
        let params: Vec<usize> = ARCHITECTURES
            .iter()
            .map(|a| {
                expected_tensors(a, 1000)
                    .unwrap()
                    .iter()
                    .filter(|(n, _)| !n.ends_with("running_mean") && !n.ends_with("running_var"))
                    .map(|(_, s)| s.iter().product::<usize>())
                    .sum()
            })
            .collect();
        assert_eq!(
            params,
            [4_652_008, 5_416_680, 6_092_072, 8_197_096, 13_006_568]
        );
    }
}
