//! The architecture registry: every family of networks the zoo builds, each described by one
//! [`Architecture`] implementation in its own module (ids, the tensors a checkpoint holds, how
//! to build it, its CAM layer and preprocessing, how to recognise it from names and shapes).
//!
//! Detection ([`super::detect::detect`]), manifest checks, `convlens info` and the zoo table
//! read [`FAMILIES`]; adding an architecture is one module plus one line there.

use super::checkpoint::{Checkpoint, ExpectedTensors};
use super::detect::{Detected, Shapes};
use super::{IMAGENET_MEAN, IMAGENET_STD};
use super::{
    convnext, densenet, efficientnet, efficientnet_lite, inception_v3, mobilenet_v1, mobilenet_v2,
    mobilenet_v3, resnet, timm_relu6, vgg, xception,
};
use crate::Result;
use crate::graph::Network;

/// How an ImageNet model of an architecture expects its evaluation input: the shorter side
/// resized to `resize_shorter`, the centre `input_size` square cropped, then normalised.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct PreprocessDefaults {
    /// Side of the square network input, in pixels.
    pub input_size: u32,
    /// The shorter side before the centre crop, in pixels.
    pub resize_shorter: u32,
    /// Per-channel mean (RGB, on 0..1 pixels).
    pub mean: [f32; 3],
    /// Per-channel standard deviation (RGB).
    pub std: [f32; 3],
}

impl PreprocessDefaults {
    /// torchvision's ImageNet evaluation: 256 -> 224 crop, ImageNet mean and std.
    pub const IMAGENET: PreprocessDefaults = PreprocessDefaults {
        input_size: 224,
        resize_shorter: 256,
        mean: IMAGENET_MEAN,
        std: IMAGENET_STD,
    };
}

/// One family of architectures the zoo builds (e.g. ResNet: `resnet18` .. `resnet101`).
///
/// Every method taking an `id` is called only with one of [`Architecture::ids`].
pub trait Architecture: Sync {
    /// The family in words, e.g. `ResNet`.
    fn family(&self) -> &'static str;

    /// The architecture ids it builds (a manifest's `architecture`), e.g. `resnet18`.
    fn ids(&self) -> &'static [&'static str];

    /// The checkpoint key names it reads, in words for messages and the zoo table, e.g.
    /// "torchvision/timm `conv1`, `layer1..4`, `fc`".
    fn key_names(&self) -> &'static str;

    /// Every tensor a checkpoint of `id` with `num_classes` outputs holds (0: a feature-only
    /// checkpoint), with its shape. `None` when `id` cannot have that many classes.
    fn expected_tensors(&self, id: &str, num_classes: usize) -> Option<ExpectedTensors>;

    /// The tensors a checkpoint of `id` must hold when its tensors are `shapes`: families that
    /// read their widths from the file (reduced-width checkpoints) take them from `shapes`;
    /// by default [`Architecture::expected_tensors`].
    fn expected_tensors_like(
        &self,
        id: &str,
        num_classes: usize,
        _shapes: &Shapes,
    ) -> Option<ExpectedTensors> {
        self.expected_tensors(id, num_classes)
    }

    /// Builds the network of `id` from a checkpoint (`num_classes` 0: it ends at `pooled`).
    /// Input `[batch, 3, h, w]`.
    fn build(&self, id: &str, ckpt: &Checkpoint, num_classes: usize) -> Result<Network>;

    /// The layer class-activation maps look at by default (the last spatial stage).
    fn default_cam_layer(&self, id: &str) -> String;

    /// The evaluation preprocessing its ImageNet weights expect.
    fn preprocess(&self, _id: &str) -> PreprocessDefaults {
        PreprocessDefaults::IMAGENET
    }

    /// `None` when the tensor names are not this family's; otherwise the id and class count
    /// found with the evidence in words, or an error saying why this family's names do not
    /// make a network the zoo builds (e.g. a ResNet depth it does not know).
    fn detect(&self, shapes: &Shapes) -> Option<Result<Detected>>;

    /// What [`Architecture::detect`] found, refined by the file's path: for ids whose
    /// tensors are the same names and shapes as another id's (timm's `tf_` ports), the path
    /// may name the variant. Unchanged by default.
    fn refine_by_path(&self, found: Detected, _path: &std::path::Path) -> Detected {
        found
    }
}

/// Every family, in the order detection tries them (more specific names first).
pub static FAMILIES: &[&dyn Architecture] = &[
    &resnet::ResNet,
    &mobilenet_v1::MobileNetV1,
    &xception::Xception,
    &inception_v3::InceptionV3,
    &mobilenet_v2::MobileNetV2,
    &vgg::Vgg,
    &efficientnet_lite::EfficientNetLite,
    &efficientnet::EfficientNet,
    &mobilenet_v3::MobileNetV3,
    &timm_relu6::TimmRelu6,
    &convnext::ConvNext,
    &densenet::DenseNet,
];

/// The family building architecture `id`.
pub fn family_of(id: &str) -> Option<&'static dyn Architecture> {
    FAMILIES.iter().copied().find(|f| f.ids().contains(&id))
}

/// Every architecture id the zoo builds, family by family.
pub fn all_ids() -> Vec<&'static str> {
    FAMILIES
        .iter()
        .flat_map(|f| f.ids().iter().copied())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_unique_and_each_has_a_family() {
        let ids = all_ids();
        let unique: std::collections::BTreeSet<_> = ids.iter().collect();
        assert_eq!(unique.len(), ids.len(), "{ids:?}");
        for id in ids {
            assert!(family_of(id).is_some_and(|f| f.ids().contains(&id)));
        }
        assert!(family_of("lenet").is_none());
    }

    #[test]
    fn every_id_is_detected_from_its_own_tensors_with_and_without_a_classifier() {
        for id in all_ids() {
            let family = family_of(id).unwrap();
            for classes in [1000, 7, 0] {
                let Some(expected) = family.expected_tensors(id, classes) else {
                    continue;
                };
                let shapes: Shapes = expected.into_iter().collect();
                let path = std::path::PathBuf::from(format!("{id}.safetensors"));
                let found = super::super::detect::detect_path(&shapes, &path).unwrap();
                assert_eq!(
                    (found.architecture.as_str(), found.num_classes),
                    (id, classes),
                    "{}",
                    found.why
                );
            }
        }
    }
}
