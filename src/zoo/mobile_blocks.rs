//! Mobile inverted-residual blocks ([`MbConv`], squeeze-excitation optional) under the two key
//! layouts checkpoints use, shared by EfficientNet, MobileNetV3 and the timm namings of
//! EfficientNet-Lite and MobileNetV2:
//!
//! - timm's EfficientNet builder (`blocks.S.B`): an inverted residual holds `conv_pw` + `bn1`
//!   (expand), `conv_dw` + `bn2`, `se.conv_reduce` / `se.conv_expand`, `conv_pwl` + `bn3`; a
//!   depthwise-separable block (no expansion) `conv_dw` + `bn1`, `se.*`, `conv_pw` + `bn2`;
//! - torchvision's `MBConv` / `InvertedResidual` (`features.N[.M].block`): a sequence
//!   `block.K.0` (conv) + `block.K.1` (BatchNorm) for expand, depthwise and project, with the
//!   squeeze-excitation `block.K.fc1` / `block.K.fc2` after the depthwise.

use super::blocks::{MbConv, SqueezeExcite};
use super::checkpoint::{Checkpoint, ExpectedTensors, expected_batchnorm};
use crate::Result;
use crate::graph::layers::{ConvBnAct, ConvKind};
use crate::ops::Activation;

/// Which library's key names a checkpoint uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeyLayout {
    /// timm's `conv_pw` / `conv_dw` / `se.conv_reduce` / `conv_pwl` names.
    Timm,
    /// torchvision's sequential `block.K.0` / `block.K.1` / `block.K.fc1` names.
    Torchvision,
}

/// A block's squeeze-excitation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SeSpec {
    /// Channels of the bottleneck.
    pub reduced: usize,
    /// Activation after the reduction (SiLU, ReLU).
    pub act: Activation,
    /// The gate (sigmoid, hard-sigmoid).
    pub gate: Activation,
}

/// The shape of one block.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BlockSpec {
    /// Side of the depthwise kernel.
    pub kernel: usize,
    /// Stride of the depthwise convolution.
    pub stride: usize,
    /// Input channels.
    pub in_channels: usize,
    /// Channels of the expanded tensor (`in_channels`: no expansion convolution).
    pub hidden: usize,
    /// Output channels.
    pub out_channels: usize,
    /// Activation after the expansion and the depthwise convolution.
    pub act: Activation,
    /// Squeeze-excitation after the depthwise convolution.
    pub se: Option<SeSpec>,
}

impl BlockSpec {
    /// Whether the block has a 1x1 expansion.
    pub fn has_expand(&self) -> bool {
        self.hidden != self.in_channels
    }

    /// Whether the input is added to the output (stride 1, same channels).
    pub fn has_residual(&self) -> bool {
        self.stride == 1 && self.in_channels == self.out_channels
    }
}

/// A conv weight key and its BatchNorm prefix.
type ConvKeys = (String, String);

/// The keys of one block's tensors.
struct BlockKeys {
    expand: Option<ConvKeys>,
    depthwise: ConvKeys,
    /// reduce weight, reduce bias, expand weight, expand bias.
    se: Option<[String; 4]>,
    project: ConvKeys,
}

fn keys(layout: KeyLayout, prefix: &str, spec: &BlockSpec) -> BlockKeys {
    let p = prefix;
    let se_keys = |reduce: &str, expand: &str| {
        [
            format!("{p}.{reduce}.weight"),
            format!("{p}.{reduce}.bias"),
            format!("{p}.{expand}.weight"),
            format!("{p}.{expand}.bias"),
        ]
    };
    match layout {
        KeyLayout::Timm => {
            let conv = |c: &str, bn: &str| (format!("{p}.{c}.weight"), format!("{p}.{bn}"));
            let se = spec.se.map(|_| se_keys("se.conv_reduce", "se.conv_expand"));
            if spec.has_expand() {
                BlockKeys {
                    expand: Some(conv("conv_pw", "bn1")),
                    depthwise: conv("conv_dw", "bn2"),
                    se,
                    project: conv("conv_pwl", "bn3"),
                }
            } else {
                BlockKeys {
                    expand: None,
                    depthwise: conv("conv_dw", "bn1"),
                    se,
                    project: conv("conv_pw", "bn2"),
                }
            }
        }
        KeyLayout::Torchvision => {
            let conv = |k: usize| (format!("{p}.{k}.0.weight"), format!("{p}.{k}.1"));
            let mut k = 0;
            let expand = spec.has_expand().then(|| {
                k += 1;
                conv(0)
            });
            let depthwise = conv(k);
            k += 1;
            let se = spec.se.map(|_| {
                k += 1;
                se_keys(&format!("{}.fc1", k - 1), &format!("{}.fc2", k - 1))
            });
            BlockKeys {
                expand,
                depthwise,
                se,
                project: conv(k),
            }
        }
    }
}

/// Every tensor of the block at `prefix` (e.g. `blocks.1.0`, `features.2.0.block`).
pub fn expected_block(layout: KeyLayout, prefix: &str, spec: &BlockSpec) -> ExpectedTensors {
    let k = keys(layout, prefix, spec);
    let mut t = ExpectedTensors::new();
    let mut conv = |(w, bn): ConvKeys, shape: Vec<usize>| {
        let c = shape[0];
        t.push((w, shape));
        t.extend(expected_batchnorm(&bn, c));
    };
    if let Some(e) = k.expand {
        conv(e, vec![spec.hidden, spec.in_channels, 1, 1]);
    }
    conv(k.depthwise, vec![spec.hidden, 1, spec.kernel, spec.kernel]);
    if let (Some([rw, rb, ew, eb]), Some(se)) = (k.se, spec.se) {
        t.push((rw, vec![se.reduced, spec.hidden, 1, 1]));
        t.push((rb, vec![se.reduced]));
        t.push((ew, vec![spec.hidden, se.reduced, 1, 1]));
        t.push((eb, vec![spec.hidden]));
    }
    let (w, bn) = k.project;
    t.push((w, vec![spec.out_channels, spec.hidden, 1, 1]));
    t.extend(expected_batchnorm(&bn, spec.out_channels));
    t
}

/// A convolution + BatchNorm + activation from the checkpoint (`tf_same`: TensorFlow's "same"
/// padding instead of the kind's).
pub fn conv_bn(
    ckpt: &Checkpoint,
    (weight, bn): (&str, &str),
    kind: ConvKind,
    act: Activation,
    bn_eps: f64,
    tf_same: bool,
) -> Result<ConvBnAct> {
    let conv = ConvBnAct::new(kind, &ckpt.get(weight)?, &ckpt.batchnorm(bn, bn_eps)?, act)?;
    Ok(if tf_same {
        conv.with_tf_same_padding()
    } else {
        conv
    })
}

/// Builds the block at `prefix` from an audited checkpoint: `[batch, in, h, w]` ->
/// `[batch, out, h / stride, w / stride]`.
pub fn build_block(
    ckpt: &Checkpoint,
    layout: KeyLayout,
    prefix: &str,
    spec: &BlockSpec,
    bn_eps: f64,
    tf_same: bool,
) -> Result<MbConv> {
    let k = keys(layout, prefix, spec);
    let conv = |(w, bn): &ConvKeys, kind, act| {
        conv_bn(ckpt, (w.as_str(), bn.as_str()), kind, act, bn_eps, tf_same)
    };
    let expand = k
        .expand
        .as_ref()
        .map(|e| conv(e, ConvKind::Pointwise, spec.act))
        .transpose()?;
    let depthwise = conv(
        &k.depthwise,
        ConvKind::Depthwise {
            stride: spec.stride,
            padding: (spec.kernel - 1) / 2,
        },
        spec.act,
    )?;
    let project = conv(&k.project, ConvKind::Pointwise, Activation::Identity)?;
    let block = MbConv::new(expand, depthwise, project, spec.has_residual());
    Ok(match (k.se, spec.se) {
        (Some(names), Some(se)) => {
            let tensors = names.each_ref().map(|n| ckpt.get(n));
            let [a, b, c, d] = tensors;
            block.with_squeeze_excite(SqueezeExcite::new([a?, b?, c?, d?], se.act, se.gate)?)
        }
        _ => block,
    })
}

/// `channels * multiplier` rounded to the nearest multiple of `divisor`, never below
/// `divisor` nor below 90% of the scaled value (timm's `make_divisible`, torchvision's
/// `_make_divisible`).
pub fn make_divisible(channels: f64, divisor: usize) -> usize {
    let d = divisor as f64;
    let mut rounded = ((((channels + d / 2.0) / d).floor()) as usize * divisor).max(divisor);
    if (rounded as f64) < 0.9 * channels {
        rounded += divisor;
    }
    rounded
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(hidden: usize, se: bool) -> BlockSpec {
        BlockSpec {
            kernel: 3,
            stride: 2,
            in_channels: 16,
            hidden,
            out_channels: 24,
            act: Activation::Silu,
            se: se.then_some(SeSpec {
                reduced: 4,
                act: Activation::Silu,
                gate: Activation::Sigmoid,
            }),
        }
    }

    #[test]
    fn both_layouts_name_every_tensor_in_order() {
        let names = |layout, prefix, s| -> Vec<String> {
            expected_block(layout, prefix, &s)
                .into_iter()
                .map(|(n, _)| n)
                .filter(|n| n.ends_with(".weight"))
                .collect()
        };
        let timm = names(KeyLayout::Timm, "blocks.1.0", spec(96, true));
        assert_eq!(timm[0], "blocks.1.0.conv_pw.weight");
        assert!(timm.contains(&"blocks.1.0.se.conv_expand.weight".to_string()));
        assert!(timm.contains(&"blocks.1.0.conv_pwl.weight".to_string()));
        let tv = names(KeyLayout::Torchvision, "features.2.0.block", spec(96, true));
        for key in [
            "features.2.0.block.0.0.weight",
            "features.2.0.block.1.0.weight",
            "features.2.0.block.2.fc1.weight",
            "features.2.0.block.3.0.weight",
            "features.2.0.block.3.1.weight",
        ] {
            assert!(tv.contains(&key.to_string()), "{key}: {tv:?}");
        }
        // No expansion: the depthwise is block.0, the projection block.1 (block.2 with SE).
        let tv = names(KeyLayout::Torchvision, "features.1", spec(16, false));
        assert_eq!(tv[0], "features.1.0.0.weight");
        assert!(tv.contains(&"features.1.1.0.weight".to_string()), "{tv:?}");
        let timm = names(KeyLayout::Timm, "blocks.0.0", spec(16, false));
        let want = ["conv_dw", "bn1", "conv_pw", "bn2"].map(|p| format!("blocks.0.0.{p}.weight"));
        assert_eq!(timm, want);
    }

    #[test]
    fn make_divisible_like_timm() {
        let r = |c: f64| make_divisible(c, 8);
        assert_eq!(
            [r(32.0), r(35.2), r(44.0), r(16.0 * 1.4), r(1280.0 * 1.1)],
            [32, 32, 48, 24, 1408]
        );
        assert_eq!(r(3.0), 8);
    }
}
