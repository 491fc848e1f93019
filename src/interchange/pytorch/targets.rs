//! The PyTorch module that rebuilds each architecture family: the Python that builds it (at
//! the checkpoint's own widths where they differ from the published ones), where its
//! classifier sits, and how convlens's checkpoint names map to its state dict's.

use crate::zoo::convnext::{ConvNextConfig, Naming};
use crate::zoo::densenet::{self, DenseNetConfig};
use crate::zoo::detect::Shapes;
use crate::zoo::efficientnet_lite::LiteConfig;
use crate::zoo::{efficientnet, mobilenet_v3, timm_relu6};
use crate::{Error, Result};

/// How one architecture family is rebuilt in PyTorch.
pub(super) struct Target {
    /// Python that builds the module with `num_classes` outputs (`{classes}` replaced).
    pub(super) build: &'static str,
    /// The Python attribute holding the classifier a trained head replaces.
    pub(super) slot: &'static str,
    /// The classifier's key prefix in the state dict (and in convlens's checkpoint).
    pub(super) slot_key: &'static str,
    /// The classifier's key prefix in convlens's checkpoint.
    pub(super) native_slot_key: &'static str,
    /// BatchNorm epsilon to set on the rebuilt module when it differs from PyTorch's 1e-5.
    pub(super) bn_eps: Option<f64>,
}

/// The PyTorch target of an architecture id, or an error naming it.
pub(super) fn target(architecture: &str) -> Result<Target> {
    let tv = |build: &'static str, slot, slot_key| Target {
        build,
        slot,
        slot_key,
        native_slot_key: slot_key,
        bn_eps: None,
    };
    Ok(match architecture {
        "resnet18" | "resnet34" | "resnet50" | "resnet101" => tv(
            "torchvision.models.{arch}(weights=None, num_classes={classes})",
            "model.fc",
            "fc",
        ),
        "mobilenet_v2" => tv(
            "torchvision.models.mobilenet_v2(weights=None, num_classes={classes})",
            "model.classifier[1]",
            "classifier.1",
        ),
        "vgg11" | "vgg13" | "vgg16" | "vgg19" => tv(
            "torchvision.models.{arch}(weights=None, num_classes={classes})",
            "model.classifier[6]",
            "classifier.6",
        ),
        "vgg11_timm" | "vgg13_timm" | "vgg16_timm" | "vgg19_timm" => tv(
            "timm.create_model(\"{timm_arch}\", pretrained=False, num_classes={classes})",
            "model.head.fc",
            "head.fc",
        ),
        a if efficientnet::Variant::of(a).is_some() || mobilenet_v3::Variant::of(a).is_some() => {
            zoo_b_target(a)
        }
        a if timm_relu6::ARCHITECTURES.contains(&a) => Target {
            build: "timm.create_model(\"{arch}\", pretrained=False, num_classes={classes})",
            slot: "model.classifier",
            slot_key: "classifier",
            native_slot_key: "classifier",
            bn_eps: a.starts_with("tf_").then_some(1e-3),
        },
        "mobilenetv1_100" | "mobilenetv1_125" => tv(
            "timm.create_model(\"{arch}\", pretrained=False, num_classes={classes})",
            "model.classifier",
            "classifier",
        ),
        "legacy_xception" => tv(
            "timm.create_model(\"{arch}\", pretrained=False, num_classes={classes})",
            "model.fc",
            "fc",
        ),
        // Without the auxiliary classifier (the export leaves out `AuxLogits`, used only in
        // training); its BatchNorms' epsilon is 1e-3, which the module sets too.
        "inception_v3" => Target {
            build: "torchvision.models.inception_v3(weights=None, num_classes={classes}, \
                    aux_logits=False, init_weights=False)",
            slot: "model.fc",
            slot_key: "fc",
            native_slot_key: "fc",
            bn_eps: Some(1e-3),
        },
        "convnext_tiny" | "convnext_small" => tv(
            "torchvision.models.{arch}(weights=None, num_classes={classes})",
            "model.classifier[2]",
            "classifier.2",
        ),
        "convnext_tiny_timm" | "convnext_small_timm" => tv(
            "timm.create_model(\"{timm_arch}\", pretrained=False, num_classes={classes})",
            "model.head.fc",
            "head.fc",
        ),
        "densenet121" => tv(
            "torchvision.models.densenet121(weights=None, num_classes={classes})",
            "model.classifier",
            "classifier",
        ),
        a if LiteConfig::of(a).is_some() => Target {
            build: "timm.create_model(\"{arch}\", pretrained=False, num_classes={classes})",
            slot: "model.classifier",
            slot_key: "classifier",
            native_slot_key: "_fc",
            // TensorFlow's epsilon, which the Lite checkpoints were trained with.
            bn_eps: Some(1e-3),
        },
        other => {
            return Err(Error::Model(format!(
                "the architecture `{other}` cannot be exported to PyTorch yet (export it to \
                 ONNX instead)"
            )));
        }
    })
}

/// EfficientNet-B and MobileNetV3, whose checkpoints already use the module's names: the
/// torchvision module (classifier `classifier.1`, MobileNetV3's `classifier.3`) or the timm one
/// (`classifier`), with the BatchNorm epsilon convlens runs it with when that is not 1e-5
/// (timm's TensorFlow ports and torchvision's MobileNetV3: 1e-3, which their modules set too).
pub(super) fn zoo_b_target(architecture: &str) -> Target {
    let mnv3 = mobilenet_v3::Variant::of(architecture).is_some();
    let torchvision = !architecture.ends_with("_timm")
        && !architecture.starts_with("tf_")
        && !architecture.starts_with("mobilenetv3_");
    let (build, slot, slot_key) = match (torchvision, mnv3) {
        (true, false) => (
            "torchvision.models.{arch}(weights=None, num_classes={classes})",
            "model.classifier[1]",
            "classifier.1",
        ),
        (true, true) => (
            "torchvision.models.{arch}(weights=None, num_classes={classes})",
            "model.classifier[3]",
            "classifier.3",
        ),
        (false, _) => (
            "timm.create_model(\"{timm_arch}\", pretrained=False, num_classes={classes})",
            "model.classifier",
            "classifier",
        ),
    };
    let tf = architecture.starts_with("tf_");
    Target {
        build,
        slot,
        slot_key,
        native_slot_key: slot_key,
        bn_eps: (tf || (torchvision && mnv3)).then_some(1e-3),
    }
}

/// The constructor of a checkpoint whose widths are not the published ones (ConvNeXt and
/// DenseNet read theirs from the file), with `{classes}` left to fill; `None` at the published
/// widths or for other families (their build line applies).
pub(super) fn reduced_build(architecture: &str, shapes: &Shapes) -> Option<String> {
    if let Some(published) = ConvNextConfig::of(architecture) {
        let cfg = ConvNextConfig::from_shapes(architecture, shapes)?;
        if cfg.dims == published.dims {
            return None;
        }
        let [a, b, c, d] = cfg.dims;
        return Some(match cfg.naming {
            Naming::Timm => format!(
                "timm.create_model(\"{}\", pretrained=False, num_classes={{classes}}, \
                 dims=({a}, {b}, {c}, {d}))",
                architecture.strip_suffix("_timm").unwrap_or(architecture)
            ),
            Naming::Torchvision => {
                let stages = (0..4)
                    .map(|s| {
                        let next = cfg.dims.get(s + 1).map_or("None".into(), usize::to_string);
                        format!(
                            "torchvision.models.convnext.CNBlockConfig({}, {next}, {})",
                            cfg.dims[s], cfg.depths[s]
                        )
                    })
                    .collect::<Vec<_>>()
                    .join(", ");
                format!("torchvision.models.convnext.ConvNeXt([{stages}], num_classes={{classes}})")
            }
        });
    }
    if architecture == densenet::ARCHITECTURES[0] {
        let cfg = DenseNetConfig::from_shapes(shapes);
        let p = DenseNetConfig::PUBLISHED;
        if (cfg.init, cfg.growth, cfg.bottleneck) == (p.init, p.growth, p.bottleneck) {
            return None;
        }
        let blocks = densenet::LAYERS.map(|n| n.to_string()).join(", ");
        return Some(format!(
            "torchvision.models.DenseNet(growth_rate={}, block_config=({blocks}), \
             num_init_features={}, bn_size={}, num_classes={{classes}})",
            cfg.growth,
            cfg.init,
            cfg.bottleneck / cfg.growth.max(1),
        ));
    }
    None
}

/// A checkpoint key in the PyTorch module's naming: timm's for EfficientNet-Lite (the
/// checkpoint uses the `efficientnet_pytorch` names), the same key for the others.
pub(super) fn torch_name(architecture: &str, native: &str) -> Result<String> {
    let Some(cfg) = LiteConfig::of(architecture) else {
        return Ok(native.to_string());
    };
    let unknown = || Error::Model(format!("`{native}`: not an EfficientNet-Lite tensor name"));
    let top = |rest: &str, map: &[(&str, &str)]| -> Option<String> {
        map.iter()
            .find_map(|(from, to)| rest.strip_prefix(from).map(|tail| format!("{to}{tail}")))
    };
    if let Some(rest) = native.strip_prefix("_blocks.") {
        let (index, tail) = rest.split_once('.').ok_or_else(unknown)?;
        let i: usize = index.parse().map_err(|_| unknown())?;
        let blocks = cfg.blocks();
        let block = blocks.get(i).ok_or_else(unknown)?;
        // timm numbers blocks by stage; a stage is a run of blocks with the same output width.
        let stage = (1..=i)
            .filter(|&k| blocks[k - 1].out_channels != blocks[k].out_channels)
            .count();
        let within = blocks[..i]
            .iter()
            .rev()
            .take_while(|b| b.out_channels == block.out_channels)
            .count();
        let parts: &[(&str, &str)] = if block.expand == 1 {
            &[
                ("_depthwise_conv.", "conv_dw."),
                ("_bn1.", "bn1."),
                ("_project_conv.", "conv_pw."),
                ("_bn2.", "bn2."),
            ]
        } else {
            &[
                ("_expand_conv.", "conv_pw."),
                ("_bn0.", "bn1."),
                ("_depthwise_conv.", "conv_dw."),
                ("_bn1.", "bn2."),
                ("_project_conv.", "conv_pwl."),
                ("_bn2.", "bn3."),
            ]
        };
        let tail = top(tail, parts).ok_or_else(unknown)?;
        return Ok(format!("blocks.{stage}.{within}.{tail}"));
    }
    top(
        native,
        &[
            ("_conv_stem.", "conv_stem."),
            ("_bn0.", "bn1."),
            ("_conv_head.", "conv_head."),
            ("_bn1.", "bn2."),
            ("_fc.", "classifier."),
        ],
    )
    .ok_or_else(unknown)
}
