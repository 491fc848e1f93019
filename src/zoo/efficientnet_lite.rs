//! EfficientNet-Lite0 (Tan & Le; the Lite variant: no squeeze-excitation, ReLU6, fixed stem
//! and head), loading the checkpoint's native key names (`_conv_stem.weight`,
//! `_blocks.4._depthwise_conv.weight`, `_fc.bias` ...).
//!
//! Layer ids: `stem`, `blocks.0` .. `blocks.15`, `head`, `pooled`, `logits`.

use super::blocks::MbConv;
use super::checkpoint::{Checkpoint, ExpectedTensors, expected_batchnorm};
use crate::Result;
use crate::graph::layers::{Classifier, ConvBnAct, ConvKind, GlobalAvgPool};
use crate::graph::{Network, Stage};
use crate::ops::Activation;

/// BatchNorm epsilon of the EfficientNet checkpoints (TensorFlow's 1e-3, not PyTorch's 1e-5).
const BN_EPS: f64 = 1e-3;
const STEM_CHANNELS: usize = 32;
const HEAD_CHANNELS: usize = 1280;
/// Dropout before the classifier in training.
const DROPOUT: f32 = 0.2;

/// One stage of MBConv blocks: (repeats, kernel, first stride, expansion, output channels).
const LITE0_STAGES: [(usize, usize, usize, usize, usize); 7] = [
    (1, 3, 1, 1, 16),
    (2, 3, 2, 6, 24),
    (2, 5, 2, 6, 40),
    (3, 3, 2, 6, 80),
    (3, 5, 1, 6, 112),
    (4, 5, 2, 6, 192),
    (1, 3, 1, 6, 320),
];

/// The shape of one MBConv block.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BlockConfig {
    pub kernel: usize,
    pub stride: usize,
    pub expand: usize,
    pub in_channels: usize,
    pub out_channels: usize,
}

impl BlockConfig {
    fn hidden(&self) -> usize {
        self.in_channels * self.expand
    }

    fn has_residual(&self) -> bool {
        self.stride == 1 && self.in_channels == self.out_channels
    }
}

/// The 16 blocks of Lite0, in order (strides 2 at blocks 1, 3, 5 and 11).
pub fn lite0_blocks() -> Vec<BlockConfig> {
    let mut blocks = Vec::new();
    let mut in_channels = STEM_CHANNELS;
    for &(repeats, kernel, stride, expand, out_channels) in &LITE0_STAGES {
        for r in 0..repeats {
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

/// Every tensor a Lite0 checkpoint with `num_classes` outputs must hold, with its shape.
pub fn expected_tensors(num_classes: usize) -> ExpectedTensors {
    let mut t: ExpectedTensors = vec![("_conv_stem.weight".into(), vec![STEM_CHANNELS, 3, 3, 3])];
    t.extend(expected_batchnorm("_bn0", STEM_CHANNELS));
    let blocks = lite0_blocks();
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
    let last = blocks.last().expect("Lite0 has blocks").out_channels;
    t.push(("_conv_head.weight".into(), vec![HEAD_CHANNELS, last, 1, 1]));
    t.extend(expected_batchnorm("_bn1", HEAD_CHANNELS));
    t.push(("_fc.weight".into(), vec![num_classes, HEAD_CHANNELS]));
    t.push(("_fc.bias".into(), vec![num_classes]));
    t
}

/// Builds Lite0 from an audited checkpoint; every weight ends up on `device`.
pub fn build(ckpt: &Checkpoint, num_classes: usize) -> Result<Network> {
    ckpt.audit("efficientnet_lite0", &expected_tensors(num_classes))?;
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
    for (i, b) in lite0_blocks().iter().enumerate() {
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
    stages.push((
        "logits".into(),
        Box::new(Classifier::new(
            ckpt.get("_fc.weight")?,
            ckpt.get("_fc.bias")?,
            DROPOUT,
        )),
    ));
    Ok(Network::new(3, stages))
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
        assert_eq!(expected_tensors(1000).len(), 247);
    }
}
