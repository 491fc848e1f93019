//! Which architecture a weights file holds, told from its tensor names and shapes alone
//! (ResNet depth from the block counts, VGG variant from the conv count, ...), with the reason
//! in words. A manifest's `architecture` overrides this; detection then only explains a file
//! that does not fit ("it looks like resnet18").

use std::collections::{BTreeMap, BTreeSet};
use std::io::Read;
use std::path::Path;

use super::registry::{self, PreprocessDefaults};
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
pub(crate) fn indices_after(shapes: &Shapes, prefix: &str) -> BTreeSet<usize> {
    shapes
        .keys()
        .filter_map(|k| k.strip_prefix(prefix))
        .filter_map(|rest| rest.split('.').next()?.parse().ok())
        .collect()
}

/// `classes` from the classifier weight `key` (`[classes, features]`), with the reason.
pub(crate) fn classes(shapes: &Shapes, key: &str) -> (usize, String) {
    match shapes.get(key) {
        Some(s) if s.len() == 2 => (s[0], format!("`{key}` {s:?}: {} classes", s[0])),
        _ => (0, format!("no `{key}`: feature-only (no classifier)")),
    }
}

/// A [`Detected`] with the evidence `why` and the classifier's reason joined.
pub(crate) fn detected(
    architecture: &str,
    why: String,
    (num_classes, cls): (usize, String),
) -> Detected {
    Detected {
        architecture: architecture.into(),
        num_classes,
        why: format!("{why}; {cls}"),
    }
}

/// How a bare weights file of `architecture` prepares images (the registry's
/// [`registry::Architecture::preprocess`]); ImageNet's 224 / 256 and mean/std for an unknown id.
pub fn default_preprocess(architecture: &str) -> PreprocessDefaults {
    registry::family_of(architecture)
        .map_or(PreprocessDefaults::IMAGENET, |f| f.preprocess(architecture))
}

/// The architecture of a checkpoint from its tensor names and shapes, with the reason: the
/// first family of [`registry::FAMILIES`] that recognises the names decides. An error says
/// what the keys look like when no architecture convlens builds fits.
pub fn detect(shapes: &Shapes) -> Result<Detected> {
    if let Some(found) = registry::FAMILIES.iter().find_map(|f| f.detect(shapes)) {
        return found;
    }
    let first: Vec<&str> = shapes.keys().take(6).map(String::as_str).collect();
    let known: Vec<String> = registry::FAMILIES
        .iter()
        .map(|f| format!("{} ({})", f.family(), f.key_names()))
        .collect();
    Err(Error::Model(format!(
        "cannot tell the architecture from the {} tensor names (first: {}); convlens reads \
         these names: {}; a manifest (`<weights stem>.json`) can name the architecture",
        shapes.len(),
        if first.is_empty() {
            "none".to_string()
        } else {
            first.join(", ")
        },
        known.join("; ")
    )))
}

/// [`detect`] for the weights file at `path`, refined by the path where the family tells
/// variants apart that way ([`registry::Architecture::refine_by_path`]).
pub fn detect_path(shapes: &Shapes, path: &Path) -> Result<Detected> {
    let found = detect(shapes)?;
    Ok(match registry::family_of(&found.architecture) {
        Some(family) => family.refine_by_path(found, path),
        None => found,
    })
}

/// The layer class-activation maps look at by default for an architecture id.
pub fn default_cam_layer(architecture: &str) -> Option<String> {
    registry::family_of(architecture).map(|f| f.default_cam_layer(architecture))
}

#[cfg(test)]
mod tests {
    use super::super::resnet::{self, ResNetConfig};
    use super::super::{efficientnet_lite, mobilenet_v2, vgg};
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
            .map(|a| default_preprocess(a).resize_shorter)
            .collect();
        assert_eq!(resize, [256, 272, 292, 309, 326]);
        assert_eq!(default_preprocess("resnet50").input_size, 224);
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
