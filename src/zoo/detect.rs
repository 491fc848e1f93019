//! Which architecture a weights file holds, told from its tensor names and shapes alone
//! (ResNet depth from the block counts, VGG variant from the conv count, ...), with the reason
//! in words. A manifest's `architecture` overrides this; detection then only explains a file
//! that does not fit ("it looks like resnet18").

use std::collections::{BTreeMap, BTreeSet};
use std::io::Read;
use std::path::Path;

use super::resnet::{BlockKind, ResNetConfig};
use super::{efficientnet_lite, mobilenet_v2, resnet, vgg};
use crate::{Error, Result};

/// What [`detect`] found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Detected {
    /// The zoo's architecture id, e.g. `resnet18`.
    pub architecture: String,
    /// Outputs of the classifier; 0 for a feature-only checkpoint (no classifier tensors).
    pub num_classes: usize,
    /// The evidence, in words (which keys and shapes decided it).
    pub why: String,
}

/// Tensor name -> shape (e.g. `conv1.weight` -> `[64, 3, 7, 7]`).
pub type Shapes = BTreeMap<String, Vec<usize>>;

/// The weight tensors' names and shapes of a weights file (safetensors, or a PyTorch zip
/// checkpoint), read from its header or pickled metadata only (no tensor data is loaded);
/// see [`super::checkpoint::read_shapes`]. Errors name the file.
pub fn read_shapes(path: &Path) -> Result<Shapes> {
    Ok(super::checkpoint::read_shapes(path)?.into_iter().collect())
}

/// The tensor names and shapes of a safetensors file, read from its header only. Errors name
/// the file.
pub(crate) fn read_safetensors_shapes(path: &Path) -> Result<Shapes> {
    let bad = |why: String| {
        Error::Model(format!(
            "{}: not a readable safetensors weights file ({why})",
            path.display()
        ))
    };
    let mut file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    let mut len = [0u8; 8];
    file.read_exact(&mut len)
        .map_err(|e| bad(format!("no header: {e}")))?;
    let len = u64::from_le_bytes(len);
    let size = file.metadata().map_err(|e| Error::io(path, e))?.len();
    if len > size.saturating_sub(8) || len > 100 << 20 {
        return Err(bad(format!("header length {len} in a {size}-byte file")));
    }
    let mut header = vec![0u8; len as usize];
    file.read_exact(&mut header)
        .map_err(|e| bad(format!("truncated header: {e}")))?;
    let json: serde_json::Value =
        serde_json::from_slice(&header).map_err(|e| bad(format!("header is not JSON: {e}")))?;
    let obj = json
        .as_object()
        .ok_or_else(|| bad("header is not a JSON object".into()))?;
    obj.iter()
        .filter(|(k, _)| k.as_str() != "__metadata__")
        .map(|(k, v)| {
            let shape = v
                .get("shape")
                .and_then(|s| s.as_array())
                .and_then(|a| {
                    a.iter()
                        .map(|d| d.as_u64().map(|d| d as usize))
                        .collect::<Option<Vec<_>>>()
                })
                .ok_or_else(|| bad(format!("tensor `{k}` has no shape")))?;
            Ok((k.clone(), shape))
        })
        .collect()
}

/// Distinct values of the integer after `prefix` in the keys (`layer1.` -> the block indices
/// `0, 1, ...` of `layer1.0.conv1.weight`, `layer1.1.conv1.weight` ...).
fn indices_after(shapes: &Shapes, prefix: &str) -> BTreeSet<usize> {
    shapes
        .keys()
        .filter_map(|k| k.strip_prefix(prefix))
        .filter_map(|rest| rest.split('.').next()?.parse().ok())
        .collect()
}

/// `classes` from the classifier weight `key` (`[classes, features]`), with the reason.
fn classes(shapes: &Shapes, key: &str) -> (usize, String) {
    match shapes.get(key) {
        Some(s) if s.len() == 2 => (s[0], format!("`{key}` {s:?}: {} classes", s[0])),
        _ => (0, format!("no `{key}`: feature-only (no classifier)")),
    }
}

fn detected(architecture: &str, why: String, (num_classes, cls): (usize, String)) -> Detected {
    Detected {
        architecture: architecture.into(),
        num_classes,
        why: format!("{why}; {cls}"),
    }
}

fn resnet(shapes: &Shapes) -> Result<Detected> {
    let counts: Vec<usize> = (1..=4)
        .map(|g| indices_after(shapes, &format!("layer{g}.")).len())
        .collect();
    let block = if shapes.contains_key("layer1.0.conv3.weight") {
        BlockKind::Bottleneck
    } else {
        BlockKind::Basic
    };
    let kind = match block {
        BlockKind::Basic => "BasicBlock (conv1, conv2)",
        BlockKind::Bottleneck => "Bottleneck (conv1..conv3)",
    };
    let counts_text = counts
        .iter()
        .map(usize::to_string)
        .collect::<Vec<_>>()
        .join("-");
    let cfg = ResNetConfig {
        block,
        layers: [counts[0], counts[1], counts[2], counts[3]],
    };
    let Some(name) = cfg.name() else {
        return Err(Error::Model(format!(
            "the weights look like a ResNet with {counts_text} {kind} blocks, which convlens \
             does not build (known: {})",
            resnet::ARCHITECTURES.join(", ")
        )));
    };
    let why = format!(
        "keys `conv1.weight`, `bn1.*`, `layer1`..`layer4` (torchvision/timm ResNet) with \
         {counts_text} {kind} blocks: {name}"
    );
    Ok(detected(name, why, classes(shapes, "fc.weight")))
}

fn mobilenet_v2(shapes: &Shapes) -> Result<Detected> {
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

fn vgg(shapes: &Shapes) -> Result<Detected> {
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
    let Some(name) = vgg::from_conv_count(convs) else {
        return Err(Error::Model(format!(
            "the weights look like a VGG (`features.N.weight` 3x3 convs) with {convs} convs; \
             convlens builds {} (8, 10, 13, 16 convs)",
            vgg::ARCHITECTURES.join(", ")
        )));
    };
    if shapes.contains_key("pre_logits.fc1.weight") {
        let timm = vgg::id(name, vgg::Layout::Timm)
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

fn efficientnet_lite(shapes: &Shapes) -> Result<Detected> {
    if shapes.keys().any(|k| k.contains("._se_reduce.")) {
        return Err(Error::Model(format!(
            "the weights look like an EfficientNet with squeeze-excitation (`_se_reduce` \
             keys, B0..B7); convlens builds the Lite variants {}",
            efficientnet_lite::ARCHITECTURES.join(", ")
        )));
    }
    let blocks = indices_after(shapes, "_blocks.").len();
    let body: Shapes = shapes
        .iter()
        .filter(|(k, _)| !k.starts_with("_fc."))
        .map(|(k, s)| (k.clone(), s.clone()))
        .collect();
    let found = efficientnet_lite::ARCHITECTURES.into_iter().find(|a| {
        efficientnet_lite::expected_tensors(a, 0)
            .is_some_and(|t| t.into_iter().collect::<Shapes>() == body)
    });
    let Some(name) = found else {
        let counts: Vec<String> = efficientnet_lite::ARCHITECTURES
            .iter()
            .map(|a| {
                let n = efficientnet_lite::LiteConfig::of(a).map_or(0, |c| c.blocks().len());
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

/// How a bare weights file of `architecture` prepares images: (input side, shorter side after
/// the resize, mean, std). ImageNet's 224 / 256 and mean/std except for EfficientNet-Lite,
/// trained at its own resolution (timm's crop fractions) with TensorFlow's normalisation
/// (mean 127/255, std 128/255).
pub fn default_preprocess(architecture: &str) -> (u32, u32, [f32; 3], [f32; 3]) {
    match efficientnet_lite::LiteConfig::of(architecture) {
        Some(c) => {
            // 256, 272, 292, 309, 326 for Lite0..4.
            let resize = (c.resolution as f64 / c.crop_fraction + 1e-6).floor() as u32;
            (c.resolution, resize, [0.498; 3], [0.502; 3])
        }
        None => (224, 256, super::IMAGENET_MEAN, super::IMAGENET_STD),
    }
}

/// The architecture of a checkpoint from its tensor names and shapes, with the reason; an
/// error says what the keys look like when no architecture convlens builds fits.
pub fn detect(shapes: &Shapes) -> Result<Detected> {
    let has = |k: &str| shapes.contains_key(k);
    let has_prefix = |p: &str| shapes.keys().any(|k| k.starts_with(p));
    if has("conv1.weight") && has_prefix("layer1.") {
        return resnet(shapes);
    }
    if has("features.0.0.weight") && has_prefix("features.1.conv.") {
        return mobilenet_v2(shapes);
    }
    if shapes
        .get("features.0.weight")
        .is_some_and(|s| s.len() == 4)
    {
        return vgg(shapes);
    }
    if has("_conv_stem.weight") {
        return efficientnet_lite(shapes);
    }
    let first: Vec<&str> = shapes.keys().take(6).map(String::as_str).collect();
    Err(Error::Model(format!(
        "cannot tell the architecture from the {} tensor names (first: {}); convlens reads \
         torchvision/timm ResNet (`conv1`, `layer1..4`), VGG (`features.N`, `classifier.N`), \
         MobileNetV2 (`features.N.conv`) and EfficientNet-Lite0..4 (`_conv_stem`, `_blocks.N`) \
         names; a manifest (`<weights stem>.json`) can name the architecture",
        shapes.len(),
        if first.is_empty() {
            "none".to_string()
        } else {
            first.join(", ")
        }
    )))
}

/// The layer class-activation maps look at by default for an architecture id.
pub fn default_cam_layer(architecture: &str) -> Option<String> {
    match architecture {
        a if resnet::ARCHITECTURES.contains(&a) => Some(resnet::DEFAULT_CAM_LAYER.into()),
        "mobilenet_v2" => Some(mobilenet_v2::DEFAULT_CAM_LAYER.into()),
        a if efficientnet_lite::ARCHITECTURES.contains(&a) => Some("head".into()),
        a => vgg::default_cam_layer(a),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shapes_of(t: super::super::checkpoint::ExpectedTensors) -> Shapes {
        t.into_iter().collect()
    }

    #[test]
    fn every_architecture_is_detected_from_its_own_keys() {
        for arch in resnet::ARCHITECTURES {
            let cfg = ResNetConfig::of(arch).unwrap();
            let d = detect(&shapes_of(resnet::expected_tensors(&cfg, 1000))).unwrap();
            assert_eq!(
                (d.architecture.as_str(), d.num_classes),
                (arch, 1000),
                "{}",
                d.why
            );
            let d = detect(&shapes_of(resnet::expected_tensors(&cfg, 0))).unwrap();
            assert_eq!(
                (d.architecture.as_str(), d.num_classes),
                (arch, 0),
                "{}",
                d.why
            );
        }
        for arch in vgg::ARCHITECTURES {
            let d = detect(&shapes_of(vgg::expected_tensors(arch, 10).unwrap())).unwrap();
            assert_eq!(
                (d.architecture.as_str(), d.num_classes),
                (arch, 10),
                "{}",
                d.why
            );
        }
        let d = detect(&shapes_of(mobilenet_v2::expected_tensors(1000))).unwrap();
        assert_eq!(d.architecture, "mobilenet_v2");
        for arch in vgg::TIMM_ARCHITECTURES {
            for classes in [1000, 0] {
                let d = detect(&shapes_of(vgg::expected_tensors(arch, classes).unwrap())).unwrap();
                assert_eq!(
                    (d.architecture.as_str(), d.num_classes),
                    (arch, classes),
                    "{}",
                    d.why
                );
            }
        }
        let resize: Vec<u32> = efficientnet_lite::ARCHITECTURES
            .iter()
            .map(|a| default_preprocess(a).1)
            .collect();
        assert_eq!(resize, [256, 272, 292, 309, 326]);
        assert_eq!(default_preprocess("resnet50").0, 224);
        for arch in efficientnet_lite::ARCHITECTURES {
            for classes in [1000, 0] {
                let t = efficientnet_lite::expected_tensors(arch, classes).unwrap();
                let d = detect(&shapes_of(t)).unwrap();
                assert_eq!(
                    (d.architecture.as_str(), d.num_classes),
                    (arch, classes),
                    "{}",
                    d.why
                );
            }
        }
    }

    #[test]
    fn the_reason_names_the_evidence() {
        let cfg = ResNetConfig::of("resnet50").unwrap();
        let d = detect(&shapes_of(resnet::expected_tensors(&cfg, 1000))).unwrap();
        assert!(
            d.why.contains("3-4-6-3") && d.why.contains("Bottleneck"),
            "{}",
            d.why
        );
        assert!(
            d.why.contains("fc.weight") && d.why.contains("1000 classes"),
            "{}",
            d.why
        );
    }

    #[test]
    fn unknown_layouts_are_described() {
        // ResNet-152 (3-8-36-3) is a ResNet convlens does not build.
        let mut s = Shapes::new();
        s.insert("conv1.weight".into(), vec![64, 3, 7, 7]);
        for (g, n) in [(1, 3), (2, 8), (3, 36), (4, 3)] {
            for i in 0..n {
                s.insert(format!("layer{g}.{i}.conv3.weight"), vec![1, 1, 1, 1]);
            }
        }
        let msg = detect(&s).unwrap_err().to_string();
        assert!(
            msg.contains("3-8-36-3") && msg.contains("resnet101"),
            "{msg}"
        );
        let mut s = Shapes::new();
        s.insert("encoder.weight".into(), vec![3]);
        let msg = detect(&s).unwrap_err().to_string();
        assert!(
            msg.contains("encoder.weight") && msg.contains("manifest"),
            "{msg}"
        );
        assert!(detect(&Shapes::new()).is_err());
    }
}
