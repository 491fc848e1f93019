//! EfficientNet B0..B4 (Tan & Le; MBConv blocks with squeeze-excitation and SiLU) in the three
//! namings checkpoints come in:
//!
//! - timm `efficientnet_b*` (id `efficientnet_bN_timm`): `conv_stem`, `bn1`, `blocks.S.B.*`
//!   (see [`super::mobile_blocks`]), `conv_head`, `bn2`, `classifier`; BatchNorm eps 1e-5,
//!   symmetric padding;
//! - timm `tf_efficientnet_b*` (id `tf_efficientnet_bN`): the same names, TensorFlow's "same"
//!   padding (asymmetric for the strided convolutions, from the input size) and eps 1e-3;
//! - torchvision `efficientnet_b*` (id `efficientnet_bN`): `features.0.0/1` (stem),
//!   `features.S.B.block.*`, `features.8.0/1` (head), `classifier.1`; eps 1e-5.
//!
//! B1..B4 scale B0's channels by the width multiplier (rounded to multiples of 8 as
//! [`make_divisible`]) and every stage's repeats by the depth multiplier, rounded up (stem and
//! head channels scale too), as timm's `_gen_efficientnet` and torchvision do. Squeeze-
//! excitation reduces to a quarter of the block's input channels.
//!
//! Layer ids are the checkpoint's: timm `conv_stem`, `blocks.0.0` .. `blocks.6.0`, `conv_head`;
//! torchvision `features.0`, `features.1.0` .. `features.7.0`, `features.8`; then `pooled`,
//! `logits` (absent for a feature-only checkpoint). The CAM layer is the head.

use super::checkpoint::{Checkpoint, ExpectedTensors, expected_batchnorm};
use super::detect::{Detected, Shapes, classes, detected};
use super::efficientnet_lite::LITE0_STAGES as BASE_STAGES;
use super::mobile_blocks::{
    BlockSpec, KeyLayout, SeSpec, build_block, conv_bn, expected_block, make_divisible,
};
use super::registry::{Architecture, PreprocessDefaults};
use crate::graph::classifier::Classifier;
use crate::graph::layers::{ConvKind, GlobalAvgPool};
use crate::graph::{Network, Stage};
use crate::ops::Activation;
use crate::{Error, Result};

/// The three namings, each with its ids for B0..B4.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Naming {
    /// timm `efficientnet_b*`.
    Timm,
    /// timm `tf_efficientnet_b*` (TensorFlow "same" padding, eps 1e-3).
    TimmTf,
    /// torchvision `efficientnet_b*`.
    Torchvision,
}

/// Every id this module builds: torchvision's, timm's, timm's TensorFlow ports.
pub const ARCHITECTURES: [&str; 15] = [
    "efficientnet_b0",
    "efficientnet_b1",
    "efficientnet_b2",
    "efficientnet_b3",
    "efficientnet_b4",
    "efficientnet_b0_timm",
    "efficientnet_b1_timm",
    "efficientnet_b2_timm",
    "efficientnet_b3_timm",
    "efficientnet_b4_timm",
    "tf_efficientnet_b0",
    "tf_efficientnet_b1",
    "tf_efficientnet_b2",
    "tf_efficientnet_b3",
    "tf_efficientnet_b4",
];

/// One variant: its naming and scaling.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Variant {
    pub naming: Naming,
    /// 0..=4 for B0..B4.
    pub index: usize,
    /// Channel multiplier.
    pub width: f64,
    /// Repeat multiplier.
    pub depth: f64,
}

impl Variant {
    /// The variant of an id of [`ARCHITECTURES`].
    pub fn of(id: &str) -> Option<Variant> {
        let (naming, rest) = if let Some(r) = id.strip_prefix("tf_efficientnet_b") {
            (Naming::TimmTf, r)
        } else if let Some(r) = id
            .strip_prefix("efficientnet_b")
            .and_then(|r| r.strip_suffix("_timm"))
        {
            (Naming::Timm, r)
        } else {
            (Naming::Torchvision, id.strip_prefix("efficientnet_b")?)
        };
        let index: usize = rest.parse().ok()?;
        let (width, depth) =
            *[(1.0, 1.0), (1.0, 1.1), (1.1, 1.2), (1.2, 1.4), (1.4, 1.8)].get(index)?;
        Some(Variant {
            naming,
            index,
            width,
            depth,
        })
    }

    /// The id of this variant.
    pub fn id(&self) -> String {
        let n = self.index;
        match self.naming {
            Naming::Timm => format!("efficientnet_b{n}_timm"),
            Naming::TimmTf => format!("tf_efficientnet_b{n}"),
            Naming::Torchvision => format!("efficientnet_b{n}"),
        }
    }

    fn layout(&self) -> KeyLayout {
        match self.naming {
            Naming::Torchvision => KeyLayout::Torchvision,
            _ => KeyLayout::Timm,
        }
    }

    fn bn_eps(&self) -> f64 {
        match self.naming {
            Naming::TimmTf => 1e-3,
            _ => 1e-5,
        }
    }

    fn tf_same(&self) -> bool {
        self.naming == Naming::TimmTf
    }

    /// `channels` times the width multiplier, rounded to a multiple of 8.
    pub fn channels(&self, channels: usize) -> usize {
        make_divisible(channels as f64 * self.width, 8)
    }

    /// Stem and head channels.
    pub fn stem_head(&self) -> (usize, usize) {
        (self.channels(32), self.channels(1280))
    }

    /// Every block as `(stage, index in stage, spec)`.
    pub fn blocks(&self) -> Vec<(usize, usize, BlockSpec)> {
        let mut out = Vec::new();
        let mut in_channels = self.stem_head().0;
        for (s, &(repeats, kernel, stride, expand, c)) in BASE_STAGES.iter().enumerate() {
            let out_channels = self.channels(c);
            let repeats = (repeats as f64 * self.depth).ceil() as usize;
            for r in 0..repeats {
                out.push((
                    s,
                    r,
                    BlockSpec {
                        kernel,
                        stride: if r == 0 { stride } else { 1 },
                        in_channels,
                        hidden: in_channels * expand,
                        out_channels,
                        act: Activation::Silu,
                        se: Some(SeSpec {
                            reduced: (in_channels / 4).max(1),
                            act: Activation::Silu,
                            gate: Activation::Sigmoid,
                        }),
                    },
                ));
                in_channels = out_channels;
            }
        }
        out
    }

    /// Dropout before the classifier in training (torchvision's 0.2 .. 0.4).
    fn dropout(&self) -> f32 {
        [0.2, 0.2, 0.3, 0.3, 0.4][self.index]
    }

    /// Key names and layer ids of this naming.
    fn names(&self) -> Names {
        match self.layout() {
            KeyLayout::Timm => Names {
                stem: ("conv_stem", "conv_stem.weight", "bn1"),
                head: ("conv_head", "conv_head.weight", "bn2"),
                classifier: "classifier",
            },
            KeyLayout::Torchvision => Names {
                stem: ("features.0", "features.0.0.weight", "features.0.1"),
                head: ("features.8", "features.8.0.weight", "features.8.1"),
                classifier: "classifier.1",
            },
        }
    }

    /// A block's layer id and key prefix.
    fn block_names(&self, stage: usize, index: usize) -> (String, String) {
        match self.layout() {
            KeyLayout::Timm => {
                let id = format!("blocks.{stage}.{index}");
                (id.clone(), id)
            }
            KeyLayout::Torchvision => {
                let id = format!("features.{}.{index}", stage + 1);
                (id.clone(), format!("{id}.block"))
            }
        }
    }
}

/// The stem's and head's (layer id, conv weight key, BatchNorm prefix), the classifier prefix.
struct Names {
    stem: (&'static str, &'static str, &'static str),
    head: (&'static str, &'static str, &'static str),
    classifier: &'static str,
}

/// Every tensor of a checkpoint of `id` with `num_classes` outputs (0: feature-only).
pub fn expected_tensors(id: &str, num_classes: usize) -> Option<ExpectedTensors> {
    let v = Variant::of(id)?;
    let names = v.names();
    let (stem, head) = v.stem_head();
    let mut t: ExpectedTensors = vec![(names.stem.1.into(), vec![stem, 3, 3, 3])];
    t.extend(expected_batchnorm(names.stem.2, stem));
    let blocks = v.blocks();
    for (s, r, spec) in &blocks {
        t.extend(expected_block(v.layout(), &v.block_names(*s, *r).1, spec));
    }
    let last = blocks.last()?.2.out_channels;
    t.push((names.head.1.into(), vec![head, last, 1, 1]));
    t.extend(expected_batchnorm(names.head.2, head));
    if num_classes > 0 {
        let c = names.classifier;
        t.push((format!("{c}.weight"), vec![num_classes, head]));
        t.push((format!("{c}.bias"), vec![num_classes]));
    }
    Some(t)
}

fn unknown(id: &str) -> Error {
    Error::Model(format!(
        "unknown EfficientNet `{id}`; known: {}",
        ARCHITECTURES.join(", ")
    ))
}

/// Builds an EfficientNet from an audited checkpoint (`num_classes` 0: the network ends at
/// `pooled`). Input `[batch, 3, h, w]`, output `[batch, num_classes]` (or `[batch, head]`).
pub fn build(ckpt: &Checkpoint, id: &str, num_classes: usize) -> Result<Network> {
    let v = Variant::of(id).ok_or_else(|| unknown(id))?;
    ckpt.audit(
        id,
        &expected_tensors(id, num_classes).ok_or_else(|| unknown(id))?,
    )?;
    let (eps, same, names) = (v.bn_eps(), v.tf_same(), v.names());
    let silu = Activation::Silu;
    let mut stages: Vec<(String, Box<dyn Stage>)> = Vec::new();
    let stem = ConvKind::Dense {
        stride: 2,
        padding: 1,
    };
    let (id_stem, w, bn) = names.stem;
    let stem = conv_bn(ckpt, (w, bn), stem, silu, eps, same)?;
    stages.push((id_stem.into(), Box::new(stem)));
    for (s, r, spec) in v.blocks() {
        let (layer, prefix) = v.block_names(s, r);
        let block = build_block(ckpt, v.layout(), &prefix, &spec, eps, same)?;
        stages.push((layer, Box::new(block)));
    }
    let (id_head, w, bn) = names.head;
    let head = conv_bn(ckpt, (w, bn), ConvKind::Pointwise, silu, eps, same)?;
    stages.push((id_head.into(), Box::new(head)));
    stages.push(("pooled".into(), Box::new(GlobalAvgPool)));
    if num_classes > 0 {
        let c = names.classifier;
        stages.push((
            "logits".into(),
            Box::new(Classifier::new(
                ckpt.get(&format!("{c}.weight"))?,
                ckpt.get(&format!("{c}.bias"))?,
                v.dropout(),
            )),
        ));
    }
    Ok(Network::new(3, stages))
}

/// EfficientNet B0..B4 in the [`registry`](super::registry).
pub struct EfficientNet;

impl Architecture for EfficientNet {
    fn family(&self) -> &'static str {
        "EfficientNet"
    }

    fn ids(&self) -> &'static [&'static str] {
        &ARCHITECTURES
    }

    fn key_names(&self) -> &'static str {
        "timm `conv_stem`, `blocks.S.B` with `se.conv_reduce`, `conv_head`, `classifier`; \
         torchvision `features.S.B.block` with `fc1`/`fc2`, `classifier.1`"
    }

    fn expected_tensors(&self, id: &str, num_classes: usize) -> Option<ExpectedTensors> {
        expected_tensors(id, num_classes)
    }

    fn build(&self, id: &str, ckpt: &Checkpoint, num_classes: usize) -> Result<Network> {
        build(ckpt, id, num_classes)
    }

    fn default_cam_layer(&self, id: &str) -> String {
        Variant::of(id).map_or_else(|| "conv_head".into(), |v| v.names().head.0.into())
    }

    /// Each source's pretrained evaluation: torchvision's weights' transforms (crop / resize
    /// 224/256, 240/255, 288/288, 300/320, 380/384), timm's default configs (input size and
    /// `crop_pct`, B1's mean and std 0.5).
    fn preprocess(&self, id: &str) -> PreprocessDefaults {
        let Some(v) = Variant::of(id) else {
            return PreprocessDefaults::IMAGENET;
        };
        let timm = |size: u32, crop_pct: f64| (size, (size as f64 / crop_pct + 1e-6) as u32);
        let (input_size, resize_shorter) = match v.naming {
            Naming::Torchvision => [(224, 256), (240, 255), (288, 288), (300, 320), (380, 384)],
            Naming::Timm => [
                timm(224, 0.875),
                timm(240, 0.9),
                timm(256, 0.875),
                timm(288, 0.875),
                timm(320, 0.875),
            ],
            Naming::TimmTf => [
                timm(224, 0.875),
                timm(240, 0.882),
                timm(260, 0.89),
                timm(300, 0.904),
                timm(380, 0.922),
            ],
        }[v.index];
        let half = v.naming == Naming::Timm && v.index == 1;
        PreprocessDefaults {
            input_size,
            resize_shorter,
            mean: if half { [0.5; 3] } else { super::IMAGENET_MEAN },
            std: if half { [0.5; 3] } else { super::IMAGENET_STD },
        }
    }

    fn detect(&self, shapes: &Shapes) -> Option<Result<Detected>> {
        let timm = shapes.contains_key("conv_stem.weight")
            && shapes.keys().any(|k| k.contains(".se.conv_reduce."))
            && !shapes.keys().any(|k| k.starts_with("conv_head.bias"));
        // `features.1.0.block.0.0`: a conv + BatchNorm block inside a stage (torchvision's
        // ConvNeXt has `features.1.0.block.0` as a bare conv, its MobileNetV3 no stage level).
        let tv = shapes.contains_key("features.0.0.weight")
            && shapes.contains_key("features.1.0.block.0.0.weight");
        (timm || tv).then(|| detect_efficientnet(shapes, tv))
    }

    /// A timm file whose path names `tf_efficientnet` (the file, or the hub's folder
    /// `models--timm--tf_efficientnet_b0...`) is the TensorFlow port.
    fn refine_by_path(&self, found: Detected, path: &std::path::Path) -> Detected {
        let tf = path
            .to_string_lossy()
            .to_lowercase()
            .contains("tf_efficientnet_b");
        match Variant::of(&found.architecture) {
            Some(v) if tf && v.naming == Naming::Timm => {
                let id = Variant {
                    naming: Naming::TimmTf,
                    ..v
                }
                .id();
                Detected {
                    why: format!(
                        "{}; the path names `tf_efficientnet_b*`: TensorFlow \"same\" padding and \
                         BatchNorm eps 1e-3: {id}",
                        found.why
                    ),
                    architecture: id,
                    num_classes: found.num_classes,
                }
            }
            _ => found,
        }
    }
}

fn detect_efficientnet(shapes: &Shapes, torchvision: bool) -> Result<Detected> {
    let body: Shapes = shapes
        .iter()
        .filter(|(k, _)| !k.starts_with("classifier."))
        .map(|(k, s)| (k.clone(), s.clone()))
        .collect();
    // timm's two namings share every shape: TensorFlow's BatchNorm eps and padding are not in
    // the file, so a timm file is `_timm` unless its name says otherwise (a manifest can).
    let candidates = ARCHITECTURES
        .iter()
        .filter(|a| {
            Variant::of(a).is_some_and(|v| (v.naming == Naming::Torchvision) == torchvision)
        })
        .filter(|a| Variant::of(a).is_some_and(|v| v.naming != Naming::TimmTf));
    let found = candidates.clone().find(|a| {
        expected_tensors(a, 0).is_some_and(|t| t.into_iter().collect::<Shapes>() == body)
    });
    let blocks = shapes
        .keys()
        .filter(|k| {
            k.ends_with(if torchvision {
                ".block.0.0.weight"
            } else {
                ".conv_dw.weight"
            })
        })
        .count();
    let stem_key = if torchvision {
        "features.0.0.weight"
    } else {
        "conv_stem.weight"
    };
    let stem = shapes.get(stem_key).cloned().unwrap_or_default();
    let naming = if torchvision {
        "torchvision `features.S.B.block.*` with squeeze-excitation `fc1`/`fc2`"
    } else {
        "timm `conv_stem`, `blocks.S.B.*` with `se.conv_reduce`/`se.conv_expand`"
    };
    let Some(id) = found else {
        let known: Vec<String> = candidates
            .filter_map(|a| Some(format!("{a} {} blocks", Variant::of(a)?.blocks().len())))
            .collect();
        return Err(Error::Model(format!(
            "the weights look like an EfficientNet ({naming}) with {blocks} blocks and stem \
             {stem:?}, whose shapes fit none of the variants convlens builds ({})",
            known.join(", ")
        )));
    };
    let v = Variant::of(id).ok_or_else(|| unknown(id))?;
    let why = format!(
        "keys {naming} (EfficientNet) with {blocks} blocks, stem {stem:?} and head {} channels: \
         B{} scaling (width {}, depth {}): {id}{}",
        v.stem_head().1,
        v.index,
        v.width,
        v.depth,
        if torchvision {
            ""
        } else {
            " (`tf_efficientnet_b*` has the same names and shapes: a path naming it, or a \
             manifest, picks that)"
        }
    );
    let key = if torchvision {
        "classifier.1.weight"
    } else {
        "classifier.weight"
    };
    Ok(detected(id, why, classes(shapes, key)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scaling_matches_timm() {
        // timm's stage repeats for B0..B4 and the last stage's and head's channels.
        let repeats = |id: &str| -> Vec<usize> {
            let b = Variant::of(id).unwrap().blocks();
            (0..7)
                .map(|s| b.iter().filter(|x| x.0 == s).count())
                .collect()
        };
        assert_eq!(repeats("efficientnet_b0"), [1, 2, 2, 3, 3, 4, 1]);
        assert_eq!(repeats("efficientnet_b1_timm"), [2, 3, 3, 4, 4, 5, 2]);
        assert_eq!(repeats("tf_efficientnet_b3"), [2, 3, 3, 5, 5, 6, 2]);
        assert_eq!(repeats("efficientnet_b4"), [2, 4, 4, 6, 6, 8, 2]);
        let heads: Vec<(usize, usize)> = (0..5)
            .map(|i| {
                Variant::of(&format!("efficientnet_b{i}"))
                    .unwrap()
                    .stem_head()
            })
            .collect();
        assert_eq!(
            heads,
            [(32, 1280), (32, 1280), (32, 1408), (40, 1536), (48, 1792)]
        );
        for id in ARCHITECTURES {
            assert_eq!(Variant::of(id).unwrap().id(), id);
        }
        assert!(Variant::of("efficientnet_b5").is_none());
        assert!(Variant::of("efficientnet_lite0").is_none());
    }

    #[test]
    fn b0_has_torchvisions_tensor_count() {
        // torchvision's efficientnet_b0 state dict: 360 tensors without the 49
        // `num_batches_tracked`; the classifier is 2 of them.
        assert_eq!(
            expected_tensors("efficientnet_b0", 1000).unwrap().len(),
            311
        );
        assert_eq!(
            expected_tensors("efficientnet_b0_timm", 0).unwrap().len(),
            309
        );
    }
}
