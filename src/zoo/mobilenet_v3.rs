//! MobileNetV3 Large and Small (Howard et al.; width 1.0): inverted residuals with hard-swish
//! or ReLU, squeeze-excitation with a ReLU and a hard-sigmoid gate, in two namings:
//!
//! - torchvision `mobilenet_v3_large` / `mobilenet_v3_small`: `features.0.0/1` (stem),
//!   `features.N.block.*` (see [`super::mobile_blocks`]), `features.16` / `features.12` (last
//!   1x1 conv + BN + hard-swish), `classifier.0` (Linear) + hard-swish + dropout +
//!   `classifier.3`; BatchNorm eps 1e-3;
//! - timm `mobilenetv3_large_100` / `mobilenetv3_small_100`: `conv_stem`, `bn1`, `blocks.S.B.*`,
//!   the last stage `blocks.S.0.conv` + `bn1`, then after the pooling `conv_head` (1x1 conv with
//!   bias) + hard-swish, `classifier`; eps 1e-5.
//!
//! Layer ids are the checkpoint's (`features.N` / `conv_stem`, `blocks.S.B`), then the pooled
//! last stage (`avgpool` / `global_pool`, `[960]` or `[576]`), `pooled` (the 1280- or 1024-wide
//! features after the first dense layer and hard-swish: what the classifier reads) and
//! `logits`. The CAM layer is the last spatial stage.

use super::checkpoint::{Checkpoint, ExpectedTensors, expected_batchnorm};
use super::detect::{Detected, Shapes, classes, detected};
use super::mobile_blocks::{
    BlockSpec, KeyLayout, SeSpec, build_block, conv_bn, expected_block, make_divisible,
};
use super::registry::{Architecture, PreprocessDefaults};
use crate::graph::classifier::Classifier;
use crate::graph::layers::{ConvKind, GlobalAvgPool};
use crate::graph::{Network, Stage};
use crate::ops::Activation;
use crate::zoo::blocks::DenseAct;
use crate::{Error, Result};

/// The ids this module builds.
pub const ARCHITECTURES: [&str; 4] = [
    "mobilenet_v3_large",
    "mobilenet_v3_small",
    "mobilenetv3_large_100",
    "mobilenetv3_small_100",
];

/// One block row: (kernel, expanded channels, output channels, squeeze-excitation, hard-swish
/// (else ReLU), stride) — torchvision's `bneck_conf` table.
type Row = (usize, usize, usize, bool, bool, usize);

const LARGE: [Row; 15] = [
    (3, 16, 16, false, false, 1),
    (3, 64, 24, false, false, 2),
    (3, 72, 24, false, false, 1),
    (5, 72, 40, true, false, 2),
    (5, 120, 40, true, false, 1),
    (5, 120, 40, true, false, 1),
    (3, 240, 80, false, true, 2),
    (3, 200, 80, false, true, 1),
    (3, 184, 80, false, true, 1),
    (3, 184, 80, false, true, 1),
    (3, 480, 112, true, true, 1),
    (3, 672, 112, true, true, 1),
    (5, 672, 160, true, true, 2),
    (5, 960, 160, true, true, 1),
    (5, 960, 160, true, true, 1),
];

const SMALL: [Row; 11] = [
    (3, 16, 16, true, false, 2),
    (3, 72, 24, false, false, 2),
    (3, 88, 24, false, false, 1),
    (5, 96, 40, true, true, 2),
    (5, 240, 40, true, true, 1),
    (5, 240, 40, true, true, 1),
    (5, 120, 48, true, true, 1),
    (5, 144, 48, true, true, 1),
    (5, 288, 96, true, true, 2),
    (5, 576, 96, true, true, 1),
    (5, 576, 96, true, true, 1),
];

/// A variant: its table, timm's grouping of the rows into stages, the last conv's and the
/// first dense layer's widths, and the naming.
#[derive(Clone, Copy, Debug)]
pub struct Variant {
    rows: &'static [Row],
    /// Blocks per timm stage (the last conv is a stage of its own after these).
    stages: &'static [usize],
    last_conv: usize,
    dense: usize,
    layout: KeyLayout,
}

impl Variant {
    /// The variant of an id of [`ARCHITECTURES`].
    pub fn of(id: &str) -> Option<Variant> {
        let large = (&LARGE[..], &[1, 2, 3, 4, 2, 3][..], 960, 1280);
        let small = (&SMALL[..], &[1, 2, 3, 2, 3][..], 576, 1024);
        let ((rows, stages, last_conv, dense), layout) = match id {
            "mobilenet_v3_large" => (large, KeyLayout::Torchvision),
            "mobilenet_v3_small" => (small, KeyLayout::Torchvision),
            "mobilenetv3_large_100" => (large, KeyLayout::Timm),
            "mobilenetv3_small_100" => (small, KeyLayout::Timm),
            _ => return None,
        };
        Some(Variant {
            rows,
            stages,
            last_conv,
            dense,
            layout,
        })
    }

    fn bn_eps(&self) -> f64 {
        match self.layout {
            KeyLayout::Torchvision => 1e-3,
            KeyLayout::Timm => 1e-5,
        }
    }

    /// Every block with its (layer id, key prefix), in order.
    pub fn blocks(&self) -> Vec<(String, String, BlockSpec)> {
        let mut in_channels = 16;
        let mut out = Vec::new();
        let stage_of = |i: usize| {
            let mut first = 0;
            for (s, &n) in self.stages.iter().enumerate() {
                if i < first + n {
                    return (s, i - first);
                }
                first += n;
            }
            (self.stages.len(), 0)
        };
        for (i, &(kernel, hidden, out_channels, se, hs, stride)) in self.rows.iter().enumerate() {
            let act = if hs {
                Activation::HardSwish
            } else {
                Activation::Relu
            };
            let spec = BlockSpec {
                kernel,
                stride,
                in_channels,
                hidden,
                out_channels,
                act,
                se: se.then(|| SeSpec {
                    reduced: make_divisible(hidden as f64 / 4.0, 8),
                    act: Activation::Relu,
                    gate: Activation::HardSigmoid,
                }),
            };
            let (id, prefix) = match self.layout {
                KeyLayout::Torchvision => {
                    let id = format!("features.{}", i + 1);
                    let prefix = format!("{id}.block");
                    (id, prefix)
                }
                KeyLayout::Timm => {
                    let (s, r) = stage_of(i);
                    let id = format!("blocks.{s}.{r}");
                    (id.clone(), id)
                }
            };
            out.push((id, prefix, spec));
            in_channels = out_channels;
        }
        out
    }

    /// The stem's and last conv's (layer id, weight key, BatchNorm prefix); the pooling's id;
    /// the first dense layer's and the classifier's prefixes.
    fn names(&self) -> Names {
        let n = self.rows.len() + 1;
        match self.layout {
            KeyLayout::Torchvision => Names {
                stem: (
                    "features.0".into(),
                    "features.0.0.weight".into(),
                    "features.0.1".into(),
                ),
                last: (
                    format!("features.{n}"),
                    format!("features.{n}.0.weight"),
                    format!("features.{n}.1"),
                ),
                pool: "avgpool",
                dense: "classifier.0",
                classifier: "classifier.3",
            },
            KeyLayout::Timm => {
                let s = self.stages.len();
                Names {
                    stem: ("conv_stem".into(), "conv_stem.weight".into(), "bn1".into()),
                    last: (
                        format!("blocks.{s}.0"),
                        format!("blocks.{s}.0.conv.weight"),
                        format!("blocks.{s}.0.bn1"),
                    ),
                    pool: "global_pool",
                    dense: "conv_head",
                    classifier: "classifier",
                }
            }
        }
    }
}

struct Names {
    stem: (String, String, String),
    last: (String, String, String),
    pool: &'static str,
    dense: &'static str,
    classifier: &'static str,
}

/// Every tensor of a checkpoint of `id` with `num_classes` outputs (0: feature-only, which
/// keeps the first dense layer: `pooled` is its output).
pub fn expected_tensors(id: &str, num_classes: usize) -> Option<ExpectedTensors> {
    let v = Variant::of(id)?;
    let names = v.names();
    let mut t: ExpectedTensors = vec![(names.stem.1.clone(), vec![16, 3, 3, 3])];
    t.extend(expected_batchnorm(&names.stem.2, 16));
    let blocks = v.blocks();
    for (_, prefix, spec) in &blocks {
        t.extend(expected_block(v.layout, prefix, spec));
    }
    let last_in = blocks.last()?.2.out_channels;
    t.push((names.last.1.clone(), vec![v.last_conv, last_in, 1, 1]));
    t.extend(expected_batchnorm(&names.last.2, v.last_conv));
    let dense_shape = match v.layout {
        KeyLayout::Torchvision => vec![v.dense, v.last_conv],
        KeyLayout::Timm => vec![v.dense, v.last_conv, 1, 1],
    };
    t.push((format!("{}.weight", names.dense), dense_shape));
    t.push((format!("{}.bias", names.dense), vec![v.dense]));
    if num_classes > 0 {
        let c = names.classifier;
        t.push((format!("{c}.weight"), vec![num_classes, v.dense]));
        t.push((format!("{c}.bias"), vec![num_classes]));
    }
    Some(t)
}

fn unknown(id: &str) -> Error {
    Error::Model(format!(
        "unknown MobileNetV3 `{id}`; known: {}",
        ARCHITECTURES.join(", ")
    ))
}

/// Builds a MobileNetV3 from an audited checkpoint (`num_classes` 0: the network ends at
/// `pooled`). Input `[batch, 3, h, w]`, output `[batch, num_classes]`.
pub fn build(ckpt: &Checkpoint, id: &str, num_classes: usize) -> Result<Network> {
    let v = Variant::of(id).ok_or_else(|| unknown(id))?;
    ckpt.audit(
        id,
        &expected_tensors(id, num_classes).ok_or_else(|| unknown(id))?,
    )?;
    let (eps, names) = (v.bn_eps(), v.names());
    let hs = Activation::HardSwish;
    let mut stages: Vec<(String, Box<dyn Stage>)> = Vec::new();
    let stem_kind = ConvKind::Dense {
        stride: 2,
        padding: 1,
    };
    let (sid, w, bn) = &names.stem;
    stages.push((
        sid.clone(),
        Box::new(conv_bn(ckpt, (w, bn), stem_kind, hs, eps, false)?),
    ));
    for (layer, prefix, spec) in v.blocks() {
        let block = build_block(ckpt, v.layout, &prefix, &spec, eps, false)?;
        stages.push((layer, Box::new(block)));
    }
    let (lid, w, bn) = &names.last;
    let last = conv_bn(ckpt, (w, bn), ConvKind::Pointwise, hs, eps, false)?;
    stages.push((lid.clone(), Box::new(last)));
    stages.push((names.pool.into(), Box::new(GlobalAvgPool)));
    let dense_w = ckpt.get(&format!("{}.weight", names.dense))?;
    let dense_w = dense_w.reshape((v.dense, v.last_conv))?;
    let dense_b = ckpt.get(&format!("{}.bias", names.dense))?;
    stages.push((
        "pooled".into(),
        Box::new(DenseAct::new(dense_w, dense_b, hs, 0.0)),
    ));
    if num_classes > 0 {
        let c = names.classifier;
        stages.push((
            "logits".into(),
            Box::new(Classifier::new(
                ckpt.get(&format!("{c}.weight"))?,
                ckpt.get(&format!("{c}.bias"))?,
                0.2,
            )),
        ));
    }
    Ok(Network::new(3, stages))
}

/// MobileNetV3 in the [`registry`](super::registry).
pub struct MobileNetV3;

impl Architecture for MobileNetV3 {
    fn family(&self) -> &'static str {
        "MobileNetV3"
    }

    fn ids(&self) -> &'static [&'static str] {
        &ARCHITECTURES
    }

    fn key_names(&self) -> &'static str {
        "torchvision `features.N.block`, `classifier.0/3`; timm `conv_stem`, `blocks.S.B`, \
         `conv_head` (with bias), `classifier`"
    }

    fn expected_tensors(&self, id: &str, num_classes: usize) -> Option<ExpectedTensors> {
        expected_tensors(id, num_classes)
    }

    fn build(&self, id: &str, ckpt: &Checkpoint, num_classes: usize) -> Result<Network> {
        build(ckpt, id, num_classes)
    }

    fn default_cam_layer(&self, id: &str) -> String {
        Variant::of(id).map_or_else(String::new, |v| v.names().last.0)
    }

    /// torchvision's weights' transforms (Large V2: resize 232, Small: 256; crop 224) and
    /// timm's configs (224, crop_pct 0.875), ImageNet mean and std.
    fn preprocess(&self, id: &str) -> PreprocessDefaults {
        PreprocessDefaults {
            resize_shorter: if id == "mobilenet_v3_large" { 232 } else { 256 },
            ..PreprocessDefaults::IMAGENET
        }
    }

    fn detect(&self, shapes: &Shapes) -> Option<Result<Detected>> {
        let tv = shapes.contains_key("features.0.0.weight")
            && shapes.keys().any(|k| k.starts_with("features.1.block."));
        let timm = shapes.contains_key("conv_stem.weight") && shapes.contains_key("conv_head.bias");
        (tv || timm).then(|| detect_mobilenet_v3(shapes, tv))
    }
}

fn detect_mobilenet_v3(shapes: &Shapes, torchvision: bool) -> Result<Detected> {
    let candidates: Vec<&str> = ARCHITECTURES
        .into_iter()
        .filter(|a| id_is_torchvision(a) == torchvision)
        .collect();
    let body: Shapes = shapes
        .iter()
        .filter(|(k, _)| {
            !k.starts_with(if torchvision {
                "classifier.3."
            } else {
                "classifier."
            })
        })
        .map(|(k, s)| (k.clone(), s.clone()))
        .collect();
    let found = candidates.iter().find(|a| {
        expected_tensors(a, 0).is_some_and(|t| t.into_iter().collect::<Shapes>() == body)
    });
    let naming = if torchvision {
        "torchvision `features.N.block.*`, `classifier.0`"
    } else {
        "timm `conv_stem`, `blocks.S.B.*`, `conv_head` with a bias"
    };
    let blocks = shapes
        .keys()
        .filter(|k| {
            k.ends_with(if torchvision {
                "block.0.0.weight"
            } else {
                ".conv_dw.weight"
            })
        })
        .count();
    let Some(id) = found else {
        return Err(Error::Model(format!(
            "the weights look like a MobileNetV3 ({naming}) with {blocks} blocks whose shapes \
             fit neither width-1.0 variant convlens builds ({}: 15 and 11 blocks)",
            candidates.join(", ")
        )));
    };
    let (size, width) = if id.contains("large") {
        ("Large", 960)
    } else {
        ("Small", 576)
    };
    let why = format!(
        "keys {naming} (MobileNetV3) with {blocks} inverted residual blocks, hard-swish and \
         squeeze-excitation, the last conv {width} wide: MobileNetV3 {size}: {id}"
    );
    let key = if torchvision {
        "classifier.3.weight"
    } else {
        "classifier.weight"
    };
    Ok(detected(id, why, classes(shapes, key)))
}

fn id_is_torchvision(id: &str) -> bool {
    id.starts_with("mobilenet_v3_")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn squeeze_excitation_widths_match_timm() {
        // timm's mobilenetv3_small_100: reduced channels of the SE blocks, in order.
        let v = Variant::of("mobilenetv3_small_100").unwrap();
        let reduced: Vec<usize> = v
            .blocks()
            .iter()
            .filter_map(|(_, _, s)| s.se.map(|se| se.reduced))
            .collect();
        assert_eq!(reduced, [8, 24, 64, 64, 32, 40, 72, 144, 144]);
        let ids: Vec<String> = v.blocks().into_iter().map(|b| b.0).collect();
        assert_eq!(
            ids[..4],
            ["blocks.0.0", "blocks.1.0", "blocks.1.1", "blocks.2.0"]
        );
        assert_eq!(v.names().last.0, "blocks.5.0");
        assert_eq!(
            Variant::of("mobilenet_v3_large").unwrap().names().last.0,
            "features.16"
        );
    }
}
