//! Inception V3 (Szegedy et al.), loading torchvision's `inception_v3` key names, which timm's
//! `inception_v3.*` share: `Conv2d_1a_3x3.conv.weight`, `Conv2d_1a_3x3.bn.*`, ...,
//! `Mixed_5b.branch5x5_2.conv.weight`, ..., `Mixed_7c.branch_pool.bn.*`, `fc.*`. The auxiliary
//! classifier (`AuxLogits.*`, used only in training) is accepted and ignored: the checkpoint
//! reader drops it ([`super::checkpoint::is_bookkeeping`]).
//!
//! Every convolution is torchvision's `BasicConv2d` (conv without bias, BatchNorm eps 1e-3,
//! ReLU; folded). Stem: 3x3/s2, 3x3, 3x3 pad 1, 3x3/s2 max pool, 1x1, 3x3, 3x3/s2 max pool;
//! then the modules `Mixed_5b` .. `Mixed_5d` (InceptionA), `Mixed_6a` (B, stride 2),
//! `Mixed_6b` .. `Mixed_6e` (C, with 1x7 and 7x1 convolutions), `Mixed_7a` (D, stride 2),
//! `Mixed_7b`, `Mixed_7c` (E, 1x3 and 3x1 branches); each module's branches run on its input
//! and are concatenated along the channels (the average-pool branches pool 3x3 at stride 1 with
//! zero padding 1 counted in the mean, as PyTorch's `avg_pool2d` defaults); global average
//! pooling; dropout 0.5 in training; `fc`.
//!
//! **`transform_input`.** torchvision's own weights (`Inception_V3_Weights.IMAGENET1K_V1`,
//! ported from TensorFlow) set `transform_input=True`: the model takes an ImageNet-normalised
//! input and maps each channel back to `(pixel - 0.5) / 0.5` before the first convolution.
//! convlens has no such step inside the network; its default preprocessing normalises with
//! mean and std 0.5 directly, which gives the same network input. A checkpoint trained without
//! the transform on ImageNet mean/std (timm's `inception_v3.gluon_in1k`) needs a manifest with
//! those values.
//!
//! Layer ids: `Conv2d_1a_3x3` (`[32, 149, 149]` at 299), `Conv2d_2a_3x3`, `Conv2d_2b_3x3`,
//! `maxpool1`, `Conv2d_3b_1x1`, `Conv2d_4a_3x3`, `maxpool2` (`[192, 35, 35]`), `Mixed_5b` ..
//! `Mixed_5d` (`[288, 35, 35]`), `Mixed_6a` .. `Mixed_6e` (`[768, 17, 17]`), `Mixed_7a` ..
//! `Mixed_7c` (`[2048, 8, 8]`, the default CAM layer), `pooled` (`[2048]`), `logits` (absent for
//! a feature-only checkpoint).

use candle_core::Tensor;

use super::blocks::MaxPool;
use super::checkpoint::{Checkpoint, ExpectedTensors, expected_batchnorm};
use super::compose::{Concat, Sequential};
use super::detect::{Detected, Shapes, classes, detected};
use super::registry::{Architecture, PreprocessDefaults};
use crate::graph::classifier::Classifier;
use crate::graph::layers::{ConvBnAct, ConvKind, GlobalAvgPool};
use crate::graph::probe::BiasProbing;
use crate::graph::{Network, Stage};
use crate::interchange::onnx::OnnxGraph;
use crate::ops::{Activation, depthwise_conv2d};
use crate::{Error, Result};

/// BatchNorm epsilon of torchvision's `BasicConv2d`.
const BN_EPS: f64 = 1e-3;
/// The architecture id (torchvision's and timm's model name).
pub const ARCHITECTURE: &str = "inception_v3";
/// The layer class-activation maps look at by default.
pub const DEFAULT_CAM_LAYER: &str = "Mixed_7c";
/// Channels of `Mixed_7c` (the pooled features).
const FEATURES: usize = 2048;
/// Dropout before `fc` in training (torchvision's default).
const DROPOUT: f32 = 0.5;

/// One piece of the network as the checkpoint describes it.
enum Node {
    /// `BasicConv2d` `<name>.conv` + `<name>.bn` + ReLU from `cin` to `cout` channels.
    Conv {
        name: String,
        cin: usize,
        cout: usize,
        kernel: (usize, usize),
        kind: ConvKind,
    },
    /// 3x3 average pooling, stride 1, zero padding 1 counted in the mean.
    AvgPool,
    /// 3x3 max pooling at stride 2, no padding.
    MaxPool,
    /// Pieces run in order.
    Seq(Vec<Node>),
    /// Pieces run on the same input, concatenated along the channels.
    Cat(Vec<Node>),
}

/// A `BasicConv2d` of module `module`'s branch `branch` (`module` empty: a stem conv).
/// `k` is the kernel `(height, width)`, `s` the stride; padding keeps the size where torchvision
/// pads (1x1, 1xn / nx1, 3x3 and 5x5 at stride 1 in the modules) and is 0 otherwise.
fn conv(
    module: &str,
    branch: &str,
    cin: usize,
    cout: usize,
    k: (usize, usize),
    s: usize,
    pad: bool,
) -> Node {
    let name = if module.is_empty() {
        branch.to_string()
    } else {
        format!("{module}.{branch}")
    };
    let kind = match (k, s, pad) {
        ((1, 1), 1, _) => ConvKind::Pointwise,
        ((kh, kw), 1, true) if kh != kw => ConvKind::Rect {
            padding_h: kh / 2,
            padding_w: kw / 2,
        },
        ((kh, _), stride, pad) => ConvKind::Dense {
            stride,
            padding: if pad { kh / 2 } else { 0 },
        },
    };
    Node::Conv {
        name,
        cin,
        cout,
        kernel: k,
        kind,
    }
}

/// InceptionA (`Mixed_5b` .. `Mixed_5d`): `cin` -> 224 + `pool` channels.
fn inception_a(m: &str, cin: usize, pool: usize) -> Node {
    Node::Cat(vec![
        conv(m, "branch1x1", cin, 64, (1, 1), 1, true),
        Node::Seq(vec![
            conv(m, "branch5x5_1", cin, 48, (1, 1), 1, true),
            conv(m, "branch5x5_2", 48, 64, (5, 5), 1, true),
        ]),
        Node::Seq(vec![
            conv(m, "branch3x3dbl_1", cin, 64, (1, 1), 1, true),
            conv(m, "branch3x3dbl_2", 64, 96, (3, 3), 1, true),
            conv(m, "branch3x3dbl_3", 96, 96, (3, 3), 1, true),
        ]),
        Node::Seq(vec![
            Node::AvgPool,
            conv(m, "branch_pool", cin, pool, (1, 1), 1, true),
        ]),
    ])
}

/// InceptionB (`Mixed_6a`, stride 2): `cin` -> 480 + `cin` channels.
fn inception_b(m: &str, cin: usize) -> Node {
    Node::Cat(vec![
        conv(m, "branch3x3", cin, 384, (3, 3), 2, false),
        Node::Seq(vec![
            conv(m, "branch3x3dbl_1", cin, 64, (1, 1), 1, true),
            conv(m, "branch3x3dbl_2", 64, 96, (3, 3), 1, true),
            conv(m, "branch3x3dbl_3", 96, 96, (3, 3), 2, false),
        ]),
        Node::MaxPool,
    ])
}

/// InceptionC (`Mixed_6b` .. `Mixed_6e`, 1x7 / 7x1 factorised with `c7` channels): 768 -> 768.
fn inception_c(m: &str, c7: usize) -> Node {
    let cin = 768;
    let (row, col) = ((1, 7), (7, 1));
    Node::Cat(vec![
        conv(m, "branch1x1", cin, 192, (1, 1), 1, true),
        Node::Seq(vec![
            conv(m, "branch7x7_1", cin, c7, (1, 1), 1, true),
            conv(m, "branch7x7_2", c7, c7, row, 1, true),
            conv(m, "branch7x7_3", c7, 192, col, 1, true),
        ]),
        Node::Seq(vec![
            conv(m, "branch7x7dbl_1", cin, c7, (1, 1), 1, true),
            conv(m, "branch7x7dbl_2", c7, c7, col, 1, true),
            conv(m, "branch7x7dbl_3", c7, c7, row, 1, true),
            conv(m, "branch7x7dbl_4", c7, c7, col, 1, true),
            conv(m, "branch7x7dbl_5", c7, 192, row, 1, true),
        ]),
        Node::Seq(vec![
            Node::AvgPool,
            conv(m, "branch_pool", cin, 192, (1, 1), 1, true),
        ]),
    ])
}

/// InceptionD (`Mixed_7a`, stride 2): 768 -> 1280.
fn inception_d(m: &str) -> Node {
    let cin = 768;
    Node::Cat(vec![
        Node::Seq(vec![
            conv(m, "branch3x3_1", cin, 192, (1, 1), 1, true),
            conv(m, "branch3x3_2", 192, 320, (3, 3), 2, false),
        ]),
        Node::Seq(vec![
            conv(m, "branch7x7x3_1", cin, 192, (1, 1), 1, true),
            conv(m, "branch7x7x3_2", 192, 192, (1, 7), 1, true),
            conv(m, "branch7x7x3_3", 192, 192, (7, 1), 1, true),
            conv(m, "branch7x7x3_4", 192, 192, (3, 3), 2, false),
        ]),
        Node::MaxPool,
    ])
}

/// InceptionE (`Mixed_7b`, `Mixed_7c`): `cin` -> 2048.
fn inception_e(m: &str, cin: usize) -> Node {
    let split = |a: &str, b: &str| {
        Node::Cat(vec![
            conv(m, a, 384, 384, (1, 3), 1, true),
            conv(m, b, 384, 384, (3, 1), 1, true),
        ])
    };
    Node::Cat(vec![
        conv(m, "branch1x1", cin, 320, (1, 1), 1, true),
        Node::Seq(vec![
            conv(m, "branch3x3_1", cin, 384, (1, 1), 1, true),
            split("branch3x3_2a", "branch3x3_2b"),
        ]),
        Node::Seq(vec![
            conv(m, "branch3x3dbl_1", cin, 448, (1, 1), 1, true),
            conv(m, "branch3x3dbl_2", 448, 384, (3, 3), 1, true),
            split("branch3x3dbl_3a", "branch3x3dbl_3b"),
        ]),
        Node::Seq(vec![
            Node::AvgPool,
            conv(m, "branch_pool", cin, 192, (1, 1), 1, true),
        ]),
    ])
}

/// The stages before pooling, with their ids (= the checkpoint's module names).
fn stages() -> Vec<(&'static str, Node)> {
    vec![
        (
            "Conv2d_1a_3x3",
            conv("", "Conv2d_1a_3x3", 3, 32, (3, 3), 2, false),
        ),
        (
            "Conv2d_2a_3x3",
            conv("", "Conv2d_2a_3x3", 32, 32, (3, 3), 1, false),
        ),
        (
            "Conv2d_2b_3x3",
            conv("", "Conv2d_2b_3x3", 32, 64, (3, 3), 1, true),
        ),
        ("maxpool1", Node::MaxPool),
        (
            "Conv2d_3b_1x1",
            conv("", "Conv2d_3b_1x1", 64, 80, (1, 1), 1, true),
        ),
        (
            "Conv2d_4a_3x3",
            conv("", "Conv2d_4a_3x3", 80, 192, (3, 3), 1, false),
        ),
        ("maxpool2", Node::MaxPool),
        ("Mixed_5b", inception_a("Mixed_5b", 192, 32)),
        ("Mixed_5c", inception_a("Mixed_5c", 256, 64)),
        ("Mixed_5d", inception_a("Mixed_5d", 288, 64)),
        ("Mixed_6a", inception_b("Mixed_6a", 288)),
        ("Mixed_6b", inception_c("Mixed_6b", 128)),
        ("Mixed_6c", inception_c("Mixed_6c", 160)),
        ("Mixed_6d", inception_c("Mixed_6d", 160)),
        ("Mixed_6e", inception_c("Mixed_6e", 192)),
        ("Mixed_7a", inception_d("Mixed_7a")),
        ("Mixed_7b", inception_e("Mixed_7b", 1280)),
        ("Mixed_7c", inception_e("Mixed_7c", 2048)),
    ]
}

/// Appends the tensors of `node` to `out`.
fn expected_of(node: &Node, out: &mut ExpectedTensors) {
    match node {
        Node::Conv {
            name,
            cin,
            cout,
            kernel: (kh, kw),
            ..
        } => {
            out.push((format!("{name}.conv.weight"), vec![*cout, *cin, *kh, *kw]));
            out.extend(expected_batchnorm(&format!("{name}.bn"), *cout));
        }
        Node::AvgPool | Node::MaxPool => {}
        Node::Seq(nodes) | Node::Cat(nodes) => {
            for n in nodes {
                expected_of(n, out);
            }
        }
    }
}

/// Every tensor an Inception V3 checkpoint holds (without the auxiliary classifier);
/// `num_classes` 0: no `fc.*`.
pub fn expected_tensors(num_classes: usize) -> ExpectedTensors {
    let mut t = ExpectedTensors::new();
    for (_, node) in stages() {
        expected_of(&node, &mut t);
    }
    if num_classes > 0 {
        t.push(("fc.weight".into(), vec![num_classes, FEATURES]));
        t.push(("fc.bias".into(), vec![num_classes]));
    }
    t
}

/// 3x3 average pooling at stride 1 with zero padding 1, the padding counted in the mean
/// (PyTorch's `avg_pool2d(x, 3, 1, 1)`, `count_include_pad=True`): a depthwise convolution
/// with every weight 1/9, whose kernel has an exact backward. `[b, c, h, w]` -> same shape.
pub struct AvgPool3;

impl Stage for AvgPool3 {
    fn forward(&self, x: &Tensor, _train: bool) -> Result<Tensor> {
        let c = x.dim(1)?;
        let w = Tensor::full(1f32 / 9.0, (c, 1, 3, 3), x.device())?.to_dtype(x.dtype())?;
        let zero = Tensor::zeros(c, x.dtype(), x.device())?;
        Ok(depthwise_conv2d(x, &w, &zero, 1, 1, Activation::Identity)?)
    }

    fn bias_probing(&self) -> BiasProbing {
        BiasProbing::NoBias
    }

    fn output_shape(&self, input: &[usize]) -> Vec<usize> {
        input.to_vec()
    }

    /// The same depthwise convolution of weights 1/9 (ONNX's AveragePool with padding is the
    /// same operation, but candle-onnx's evaluator, which checks every export, refuses pads).
    fn to_onnx(&self, g: &mut OnnxGraph, x: &str, input: &[usize]) -> Result<String> {
        let c = input[0];
        let cpu = candle_core::Device::Cpu;
        let w = Tensor::full(1f32 / 9.0, (c, 1, 3, 3), &cpu)?;
        let zero = Tensor::zeros(c, candle_core::DType::F32, &cpu)?;
        g.conv(x, &w, &zero, 1, 1, c)
    }

    fn macs(&self, _input: &[usize]) -> u64 {
        0
    }

    fn param_count(&self) -> usize {
        0
    }

    fn tensors_mut(&mut self) -> Vec<(String, &mut Tensor)> {
        Vec::new()
    }
}

/// The stage of `node`, named by its position among its siblings.
fn stage_of(ckpt: &Checkpoint, node: &Node) -> Result<Box<dyn Stage>> {
    Ok(match node {
        Node::Conv { name, kind, .. } => Box::new(ConvBnAct::new(
            *kind,
            &ckpt.get(&format!("{name}.conv.weight"))?,
            &ckpt.batchnorm(&format!("{name}.bn"), BN_EPS)?,
            Activation::Relu,
        )?),
        Node::AvgPool => Box::new(AvgPool3),
        Node::MaxPool => Box::new(MaxPool {
            kernel: 3,
            stride: 2,
            padding: 0,
        }),
        Node::Seq(nodes) => Box::new(Sequential::new(parts(ckpt, nodes)?)),
        Node::Cat(nodes) => Box::new(Concat::new(parts(ckpt, nodes)?)),
    })
}

/// The stages of `nodes`, each named by its checkpoint name's last part (`branch5x5_1`) or,
/// for pooling and groups, by its position.
fn parts(ckpt: &Checkpoint, nodes: &[Node]) -> Result<Vec<(String, Box<dyn Stage>)>> {
    nodes
        .iter()
        .enumerate()
        .map(|(i, n)| {
            let name = match n {
                Node::Conv { name, .. } => name.rsplit('.').next().unwrap_or(name).to_string(),
                _ => i.to_string(),
            };
            Ok((name, stage_of(ckpt, n)?))
        })
        .collect()
}

/// Builds Inception V3 from a checkpoint (audited first; `num_classes` 0: the network ends at
/// `pooled`). Input `[batch, 3, h, w]` (at least 75 px), output `[batch, num_classes]` (or
/// `[batch, 2048]`).
pub fn build(ckpt: &Checkpoint, num_classes: usize) -> Result<Network> {
    ckpt.audit(ARCHITECTURE, &expected_tensors(num_classes))?;
    let mut net = stages()
        .into_iter()
        .map(|(id, node)| Ok((id.to_string(), stage_of(ckpt, &node)?)))
        .collect::<Result<Vec<_>>>()?;
    net.push(("pooled".into(), Box::new(GlobalAvgPool)));
    if num_classes > 0 {
        net.push((
            "logits".into(),
            Box::new(Classifier::new(
                ckpt.get("fc.weight")?,
                ckpt.get("fc.bias")?,
                DROPOUT,
            )),
        ));
    }
    Ok(Network::new(3, net))
}

/// Inception V3 (torchvision, timm) in the [`registry`](super::registry).
pub struct InceptionV3;

impl Architecture for InceptionV3 {
    fn family(&self) -> &'static str {
        "Inception V3"
    }

    fn ids(&self) -> &'static [&'static str] {
        &[ARCHITECTURE]
    }

    fn key_names(&self) -> &'static str {
        "torchvision/timm `Conv2d_1a_3x3` .. `Mixed_7c` (`.conv`, `.bn`), `AuxLogits` ignored, `fc`"
    }

    fn expected_tensors(&self, _id: &str, num_classes: usize) -> Option<ExpectedTensors> {
        Some(expected_tensors(num_classes))
    }

    fn build(&self, _id: &str, ckpt: &Checkpoint, num_classes: usize) -> Result<Network> {
        build(ckpt, num_classes)
    }

    fn default_cam_layer(&self, _id: &str) -> String {
        DEFAULT_CAM_LAYER.into()
    }

    /// torchvision's `Inception_V3_Weights.IMAGENET1K_V1`: shorter side 342, centre 299;
    /// mean and std 0.5, the network input its `transform_input=True` makes from an
    /// ImageNet-normalised one (see the module documentation). timm's `inception_v3.tf_in1k`
    /// and `tv_in1k` use the same mean and std.
    fn preprocess(&self, _id: &str) -> PreprocessDefaults {
        PreprocessDefaults {
            input_size: 299,
            resize_shorter: 342,
            mean: [0.5; 3],
            std: [0.5; 3],
        }
    }

    fn detect(&self, shapes: &Shapes) -> Option<Result<Detected>> {
        (shapes.contains_key("Conv2d_1a_3x3.conv.weight")
            || shapes.keys().any(|k| k.starts_with("Mixed_5b.")))
        .then(|| detect_inception(shapes))
    }
}

fn detect_inception(shapes: &Shapes) -> Result<Detected> {
    let body: Shapes = shapes
        .iter()
        .filter(|(k, _)| !k.starts_with("fc."))
        .map(|(k, s)| (k.clone(), s.clone()))
        .collect();
    let expected: Shapes = expected_tensors(0).into_iter().collect();
    if body != expected {
        let first = expected
            .iter()
            .find(|(k, s)| body.get(*k) != Some(s))
            .map(|(k, s)| format!("`{k}` should be {s:?}, found {:?}", body.get(k)))
            .or_else(|| {
                body.keys()
                    .find(|k| !expected.contains_key(*k))
                    .map(|k| format!("`{k}` is not an Inception V3 tensor"))
            })
            .unwrap_or_default();
        return Err(Error::Model(format!(
            "the weights look like an Inception (`Conv2d_1a_3x3`, `Mixed_*` keys) but do not \
             fit Inception V3: {first}"
        )));
    }
    let why = "keys `Conv2d_1a_3x3.conv.weight` [32, 3, 3, 3] .. `Conv2d_4a_3x3`, \
               `Mixed_5b..5d` / `Mixed_6a` / `Mixed_6b..6e` (1x7 and 7x1 branches) / \
               `Mixed_7a..7c` with `.conv` + `.bn` convolutions (torchvision/timm Inception V3, \
               `AuxLogits` ignored)"
        .to_string();
    Ok(detected(ARCHITECTURE, why, classes(shapes, "fc.weight")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::test_util::{central_differences, tensor, to_f64};
    use candle_core::{DType, Device, Var};

    #[test]
    fn torchvision_counts() {
        let t = expected_tensors(1000);
        // torchvision's state dict without AuxLogits: 94 convolutions (1 tensor + 4 of BN) + fc.
        assert_eq!(t.len(), 94 * 5 + 2);
        let params: usize = t
            .iter()
            .filter(|(n, _)| !n.contains("running"))
            .map(|(_, s)| s.iter().product::<usize>())
            .sum();
        // torchvision: 27,161,264 parameters, 3,326,696 of them in AuxLogits.
        assert_eq!(params, 27_161_264 - 3_326_696);
        assert!(
            t.iter()
                .any(|(n, s)| n == "Mixed_6b.branch7x7_2.conv.weight" && s == &[128, 128, 1, 7])
        );
    }

    /// The network's shapes through every stage at 299 px (torchvision's documented sizes).
    #[test]
    fn stage_shapes_at_299() -> Result<()> {
        let dev = Device::Cpu;
        let tensors = expected_tensors(10)
            .into_iter()
            .map(|(n, s)| Ok((n, Tensor::zeros(s, DType::F32, &dev)?)))
            .collect::<Result<Vec<_>>>()?;
        let ckpt =
            Checkpoint::from_tensors("inception.safetensors", tensors.into_iter().collect(), &dev)?;
        let net = build(&ckpt, 10)?;
        let shapes: Vec<(String, Vec<usize>)> = net
            .layers(299)
            .into_iter()
            .map(|l| (l.id, l.output_shape))
            .collect();
        let at = |id: &str| shapes.iter().find(|(n, _)| n == id).map(|(_, s)| s.clone());
        assert_eq!(at("Conv2d_1a_3x3"), Some(vec![32, 149, 149]));
        assert_eq!(at("maxpool2"), Some(vec![192, 35, 35]));
        assert_eq!(at("Mixed_5d"), Some(vec![288, 35, 35]));
        assert_eq!(at("Mixed_6e"), Some(vec![768, 17, 17]));
        assert_eq!(at("Mixed_7c"), Some(vec![2048, 8, 8]));
        assert_eq!(at("logits"), Some(vec![10]));
        Ok(())
    }

    /// The average pool's values (padding counted: a corner averages 4 values over 9) and its
    /// gradient by finite differences.
    #[test]
    fn average_pool_counts_the_padding_and_has_an_exact_gradient() -> Result<()> {
        let x = tensor(&[2, 3, 4, 5], 3, 2.0)?;
        let y = AvgPool3.forward(&x, false)?;
        let xs = to_f64(&x)?;
        let direct = |xs: &[f64]| -> Vec<f64> {
            let mut out = vec![0.0; 2 * 3 * 4 * 5];
            for p in 0..6 {
                for i in 0..4i64 {
                    for j in 0..5i64 {
                        let mut s = 0.0;
                        for di in -1..=1i64 {
                            for dj in -1..=1i64 {
                                let (a, b) = (i + di, j + dj);
                                if (0..4).contains(&a) && (0..5).contains(&b) {
                                    s += xs[p * 20 + (a * 5 + b) as usize];
                                }
                            }
                        }
                        out[p * 20 + (i * 5 + j) as usize] = s / 9.0;
                    }
                }
            }
            out
        };
        let want = direct(&xs);
        let got = to_f64(&y)?;
        let err = got
            .iter()
            .zip(&want)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0, f64::max);
        assert!(err < 1e-6, "{err}");
        let r = tensor(&[2, 3, 4, 5], 4, 1.0)?;
        let v = Var::from_tensor(&x)?;
        let g = (AvgPool3.forward(v.as_tensor(), true)? * &r)?
            .sum_all()?
            .backward()?;
        let ours = to_f64(g.get(v.as_tensor()).expect("a gradient"))?;
        let rv = to_f64(&r)?;
        let mut params = vec![xs];
        let fd = central_differences(&mut params, 0, 1e-3, |p| {
            direct(&p[0]).iter().zip(&rv).map(|(a, b)| a * b).sum()
        });
        let err = ours
            .iter()
            .zip(&fd)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0, f64::max);
        assert!(err < 1e-5, "{err}");
        Ok(())
    }
}
