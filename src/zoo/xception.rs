//! Xception (Chollet), loading timm's `legacy_xception` key names (the Keras port by
//! tstandley / Cadene): `conv1`, `bn1`, `conv2`, `bn2`, `block1` .. `block12` (each with
//! `rep.N.conv1` depthwise + `rep.N.pointwise` separable convs, `rep.N` BatchNorms, and
//! `skip` + `skipbn` where the shape changes), `conv3` / `conv4` (separable) with `bn3` / `bn4`,
//! `fc`.
//!
//! Entry flow: 3x3/s2 conv (no padding) 32 + BN + ReLU, 3x3 conv (no padding) 64 + BN + ReLU,
//! then `block1` .. `block3` (128, 256, 728 channels, each ending in a 3x3/s2 max pool with
//! padding 1 and a strided 1x1 conv + BN shortcut); middle flow `block4` .. `block11` (three
//! ReLU + separable conv + BN, identity shortcut); exit flow `block12` (728 -> 1024, stride 2),
//! `conv3` (1536) and `conv4` (2048), each separable conv + BN + ReLU; global average pooling;
//! `fc`. A block's first ReLU acts on its input but its shortcut takes the input as it is
//! (`block1` starts without a ReLU). BatchNorm eps 1e-5, folded into the pointwise convs.
//!
//! Layer ids: `conv1` (`[32, 149, 149]` at 299), `conv2` (`[64, 147, 147]`), `block1` ..
//! `block12` (`block12`: `[1024, 10, 10]`), `conv3`, `conv4` (`[2048, 10, 10]`, the default
//! CAM layer), `pooled` (`[2048]`), `logits` (absent for a feature-only checkpoint).

use candle_core::Tensor;

use super::blocks::{MaxPool, prefixed};
use super::checkpoint::{Checkpoint, ExpectedTensors, expected_batchnorm};
use super::detect::{Detected, Shapes, classes, detected};
use super::registry::{Architecture, PreprocessDefaults};
use crate::graph::classifier::Classifier;
use crate::graph::layers::{ConvBnAct, ConvKind, GlobalAvgPool};
use crate::graph::probe::Pass;
use crate::graph::{Network, Stage};
use crate::interchange::onnx::OnnxGraph;
use crate::ops::{Activation, depthwise_conv2d};
use crate::{Error, Result};

/// BatchNorm epsilon of the port (PyTorch's default).
const BN_EPS: f64 = 1e-5;
/// The architecture id (timm's model name).
pub const ARCHITECTURE: &str = "legacy_xception";
/// The layer class-activation maps look at by default.
pub const DEFAULT_CAM_LAYER: &str = "conv4";

/// One block of the port's `Block(in, out, reps, strides, start_with_relu, grow_first)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct BlockConfig {
    in_channels: usize,
    out_channels: usize,
    reps: usize,
    stride: usize,
    start_with_relu: bool,
    grow_first: bool,
}

impl BlockConfig {
    /// `(in, out)` channels of separable conv `i`.
    fn rep_channels(&self, i: usize) -> (usize, usize) {
        if self.grow_first {
            let inc = if i == 0 {
                self.in_channels
            } else {
                self.out_channels
            };
            (inc, self.out_channels)
        } else {
            let outc = if i + 1 < self.reps {
                self.in_channels
            } else {
                self.out_channels
            };
            (self.in_channels, outc)
        }
    }

    /// The index in `rep` of separable conv `i` (its BatchNorm is the next index): the
    /// sequence is ReLU, conv, BN per rep, without the first ReLU when the block does not
    /// start with one.
    fn rep_index(&self, i: usize) -> usize {
        3 * i + usize::from(self.start_with_relu)
    }

    fn has_skip(&self) -> bool {
        self.in_channels != self.out_channels || self.stride != 1
    }
}

/// `block1` .. `block12`.
fn blocks() -> Vec<BlockConfig> {
    let b = |in_channels, out_channels, reps, stride, start_with_relu, grow_first| BlockConfig {
        in_channels,
        out_channels,
        reps,
        stride,
        start_with_relu,
        grow_first,
    };
    let mut out = vec![
        b(64, 128, 2, 2, false, true),
        b(128, 256, 2, 2, true, true),
        b(256, 728, 2, 2, true, true),
    ];
    out.extend((4..=11).map(|_| b(728, 728, 3, 1, true, true)));
    out.push(b(728, 1024, 2, 2, true, false));
    out
}

/// Channels of `conv3` and `conv4` (the pooled features).
const EXIT_CHANNELS: [usize; 2] = [1536, 2048];

/// The tensors of a separable conv `prefix` (`conv1` depthwise + `pointwise`) from `cin` to
/// `cout` channels followed by BatchNorm `bn`.
fn expected_separable(prefix: &str, bn: &str, cin: usize, cout: usize) -> ExpectedTensors {
    let mut t = vec![
        (format!("{prefix}.conv1.weight"), vec![cin, 1, 3, 3]),
        (format!("{prefix}.pointwise.weight"), vec![cout, cin, 1, 1]),
    ];
    t.extend(expected_batchnorm(bn, cout));
    t
}

/// Every tensor an Xception checkpoint holds; `num_classes` 0: no `fc.*`.
pub fn expected_tensors(num_classes: usize) -> ExpectedTensors {
    let mut t: ExpectedTensors = vec![("conv1.weight".into(), vec![32, 3, 3, 3])];
    t.extend(expected_batchnorm("bn1", 32));
    t.push(("conv2.weight".into(), vec![64, 32, 3, 3]));
    t.extend(expected_batchnorm("bn2", 64));
    for (n, b) in blocks().iter().enumerate() {
        let p = format!("block{}", n + 1);
        for i in 0..b.reps {
            let (cin, cout) = b.rep_channels(i);
            let r = b.rep_index(i);
            t.extend(expected_separable(
                &format!("{p}.rep.{r}"),
                &format!("{p}.rep.{}", r + 1),
                cin,
                cout,
            ));
        }
        if b.has_skip() {
            t.push((
                format!("{p}.skip.weight"),
                vec![b.out_channels, b.in_channels, 1, 1],
            ));
            t.extend(expected_batchnorm(&format!("{p}.skipbn"), b.out_channels));
        }
    }
    t.extend(expected_separable("conv3", "bn3", 1024, EXIT_CHANNELS[0]));
    t.extend(expected_separable(
        "conv4",
        "bn4",
        EXIT_CHANNELS[0],
        EXIT_CHANNELS[1],
    ));
    if num_classes > 0 {
        t.push(("fc.weight".into(), vec![num_classes, EXIT_CHANNELS[1]]));
        t.push(("fc.bias".into(), vec![num_classes]));
    }
    t
}

/// A separable convolution (3x3 depthwise, no bias) followed by a 1x1 convolution + BatchNorm
/// + activation: `[batch, in, h, w]` -> `[batch, out, h, w]`.
pub struct SeparableConvBnAct {
    /// `[in, 1, 3, 3]`.
    depthwise: Tensor,
    /// `[in]` zeros (the depthwise kernel's bias).
    zero: Tensor,
    pointwise: ConvBnAct,
}

impl SeparableConvBnAct {
    /// From the checkpoint's `<prefix>.conv1.weight` (depthwise), `<prefix>.pointwise.weight`
    /// and BatchNorm `bn`.
    fn load(ckpt: &Checkpoint, prefix: &str, bn: &str, act: Activation) -> Result<Self> {
        let depthwise = ckpt.get(&format!("{prefix}.conv1.weight"))?;
        let zero = depthwise.zeros_like()?.sum((1, 2, 3))?;
        let pointwise = ConvBnAct::new(
            ConvKind::Pointwise,
            &ckpt.get(&format!("{prefix}.pointwise.weight"))?,
            &ckpt.batchnorm(bn, BN_EPS)?,
            act,
        )?;
        Ok(SeparableConvBnAct {
            depthwise,
            zero,
            pointwise,
        })
    }
}

impl SeparableConvBnAct {
    /// The depthwise conv (no bias), then the pointwise conv + BatchNorm (probed at the
    /// BatchNorm's output) + activation.
    fn run(&self, x: &Tensor, pass: &mut Pass) -> Result<Tensor> {
        let h = depthwise_conv2d(x, &self.depthwise, &self.zero, 1, 1, Activation::Identity)?;
        pass.part(&self.pointwise, &h)
    }
}

impl Stage for SeparableConvBnAct {
    crate::stage_runs_by_pass!();

    fn output_shape(&self, input: &[usize]) -> Vec<usize> {
        self.pointwise.output_shape(input)
    }

    fn macs(&self, input: &[usize]) -> u64 {
        (input.iter().product::<usize>() * 9) as u64 + self.pointwise.macs(input)
    }

    fn param_count(&self) -> usize {
        self.depthwise.elem_count() + self.pointwise.param_count()
    }

    /// `conv1.weight` (depthwise) and the pointwise conv's `pointwise.*`.
    fn tensors_mut(&mut self) -> Vec<(String, &mut Tensor)> {
        let mut out = vec![("conv1.weight".to_string(), &mut self.depthwise)];
        out.extend(prefixed("pointwise".into(), &mut self.pointwise));
        out
    }

    fn batchnorm_layers(&mut self) -> Vec<&mut ConvBnAct> {
        vec![&mut self.pointwise]
    }

    /// A Conv with one group per channel (zero bias), then the pointwise Conv + activation.
    fn to_onnx(&self, g: &mut OnnxGraph, x: &str, input: &[usize]) -> Result<String> {
        let h = g.part("conv1", |g| {
            g.conv(x, &self.depthwise, &self.zero, 1, 1, input[0])
        })?;
        g.part("pointwise", |g| self.pointwise.to_onnx(g, &h, input))
    }
}

/// One Xception block: (ReLU,) separable conv + BN, repeated with ReLUs between, an optional
/// 3x3 max pool at the stride, plus the shortcut (`skip` 1x1 conv + BN, or the input):
/// `[batch, in, h, w]` -> `[batch, out, h/stride, w/stride]`.
struct XceptionBlock {
    start_with_relu: bool,
    reps: Vec<SeparableConvBnAct>,
    pool: Option<MaxPool>,
    skip: Option<ConvBnAct>,
}

impl XceptionBlock {
    fn load(ckpt: &Checkpoint, p: &str, b: &BlockConfig) -> Result<Self> {
        let reps = (0..b.reps)
            .map(|i| {
                let r = b.rep_index(i);
                // The ReLU before the next separable conv rides on this one's BatchNorm.
                let act = if i + 1 < b.reps {
                    Activation::Relu
                } else {
                    Activation::Identity
                };
                SeparableConvBnAct::load(
                    ckpt,
                    &format!("{p}.rep.{r}"),
                    &format!("{p}.rep.{}", r + 1),
                    act,
                )
            })
            .collect::<Result<_>>()?;
        let skip = if b.has_skip() {
            Some(ConvBnAct::new(
                ConvKind::Dense {
                    stride: b.stride,
                    padding: 0,
                },
                &ckpt.get(&format!("{p}.skip.weight"))?,
                &ckpt.batchnorm(&format!("{p}.skipbn"), BN_EPS)?,
                Activation::Identity,
            )?)
        } else {
            None
        };
        Ok(XceptionBlock {
            start_with_relu: b.start_with_relu,
            reps,
            pool: (b.stride != 1).then_some(MaxPool {
                kernel: 3,
                stride: b.stride,
                padding: 1,
            }),
            skip,
        })
    }
}

impl XceptionBlock {
    /// The separable convs and the skip conv as parts (each probed at its BatchNorm's output).
    fn run(&self, x: &Tensor, pass: &mut Pass) -> Result<Tensor> {
        let mut h = if self.start_with_relu {
            x.relu()?
        } else {
            x.clone()
        };
        for rep in &self.reps {
            h = pass.part(rep, &h)?;
        }
        if let Some(pool) = &self.pool {
            h = pass.part(pool, &h)?;
        }
        let shortcut = match &self.skip {
            Some(skip) => pass.part(skip, x)?,
            None => x.clone(),
        };
        Ok((h + shortcut)?)
    }
}

impl Stage for XceptionBlock {
    crate::stage_runs_by_pass!();

    fn output_shape(&self, input: &[usize]) -> Vec<usize> {
        let h = self
            .reps
            .iter()
            .fold(input.to_vec(), |s, r| r.output_shape(&s));
        match &self.pool {
            Some(p) => p.output_shape(&h),
            None => h,
        }
    }

    fn macs(&self, input: &[usize]) -> u64 {
        let mut shape = input.to_vec();
        let mut macs = 0;
        for r in &self.reps {
            macs += r.macs(&shape);
            shape = r.output_shape(&shape);
        }
        macs + self.skip.as_ref().map_or(0, |s| s.macs(input))
    }

    fn param_count(&self) -> usize {
        self.reps.iter().map(Stage::param_count).sum::<usize>()
            + self.skip.as_ref().map_or(0, Stage::param_count)
    }

    /// Named `rep.<i>.*` (i counting separable convs from 0) and `skip.*`.
    fn tensors_mut(&mut self) -> Vec<(String, &mut Tensor)> {
        let mut out = Vec::new();
        for (i, r) in self.reps.iter_mut().enumerate() {
            out.extend(
                r.tensors_mut()
                    .into_iter()
                    .map(move |(n, t)| (format!("rep.{i}.{n}"), t)),
            );
        }
        if let Some(s) = self.skip.as_mut() {
            out.extend(prefixed("skip".into(), s));
        }
        out
    }

    fn batchnorm_layers(&mut self) -> Vec<&mut ConvBnAct> {
        let mut out: Vec<&mut ConvBnAct> = self
            .reps
            .iter_mut()
            .flat_map(|r| r.batchnorm_layers())
            .collect();
        out.extend(self.skip.as_mut());
        out
    }

    /// (Relu,) the separable convs, the MaxPool, plus the shortcut (a Conv or the input).
    fn to_onnx(&self, g: &mut OnnxGraph, x: &str, input: &[usize]) -> Result<String> {
        let mut h = if self.start_with_relu {
            g.relu(x)
        } else {
            x.to_string()
        };
        let mut shape = input.to_vec();
        for (i, rep) in self.reps.iter().enumerate() {
            h = g.part(&format!("rep.{i}"), |g| rep.to_onnx(g, &h, &shape))?;
            shape = rep.output_shape(&shape);
        }
        if let Some(pool) = &self.pool {
            h = pool.to_onnx(g, &h, &shape)?;
        }
        let shortcut = match &self.skip {
            Some(skip) => g.part("skip", |g| skip.to_onnx(g, x, input))?,
            None => x.to_string(),
        };
        Ok(g.add(&h, &shortcut))
    }
}

/// Builds Xception from a checkpoint (audited first; `num_classes` 0: the network ends at
/// `pooled`). Input `[batch, 3, h, w]`, output `[batch, num_classes]` (or `[batch, 2048]`).
pub fn build(ckpt: &Checkpoint, num_classes: usize) -> Result<Network> {
    ckpt.audit(ARCHITECTURE, &expected_tensors(num_classes))?;
    let relu = Activation::Relu;
    let dense = |w: &str, bn: &str, stride| -> Result<ConvBnAct> {
        ConvBnAct::new(
            ConvKind::Dense { stride, padding: 0 },
            &ckpt.get(w)?,
            &ckpt.batchnorm(bn, BN_EPS)?,
            relu,
        )
    };
    let mut net: Vec<(String, Box<dyn Stage>)> = vec![
        ("conv1".into(), Box::new(dense("conv1.weight", "bn1", 2)?)),
        ("conv2".into(), Box::new(dense("conv2.weight", "bn2", 1)?)),
    ];
    for (n, b) in blocks().iter().enumerate() {
        let p = format!("block{}", n + 1);
        net.push((p.clone(), Box::new(XceptionBlock::load(ckpt, &p, b)?)));
    }
    for (conv, bn) in [("conv3", "bn3"), ("conv4", "bn4")] {
        net.push((
            conv.into(),
            Box::new(SeparableConvBnAct::load(ckpt, conv, bn, relu)?),
        ));
    }
    net.push(("pooled".into(), Box::new(GlobalAvgPool)));
    if num_classes > 0 {
        net.push((
            "logits".into(),
            Box::new(Classifier::new(
                ckpt.get("fc.weight")?,
                ckpt.get("fc.bias")?,
                0.0,
            )),
        ));
    }
    Ok(Network::new(3, net))
}

/// Xception (timm `legacy_xception`) in the [`registry`](super::registry).
pub struct Xception;

impl Architecture for Xception {
    fn family(&self) -> &'static str {
        "Xception"
    }

    fn ids(&self) -> &'static [&'static str] {
        &[ARCHITECTURE]
    }

    fn key_names(&self) -> &'static str {
        "timm `legacy_xception`: `conv1`, `bn1`, `block1..12.rep.N`, `conv3`, `conv4`, `fc`"
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

    /// timm's pretrained cfg (the Keras weights): 299 px at crop fraction 0.8975 (resize to
    /// 333), mean and std 0.5. (timm resizes bicubically; convlens's resize is bilinear.)
    fn preprocess(&self, _id: &str) -> PreprocessDefaults {
        PreprocessDefaults {
            input_size: 299,
            resize_shorter: 333,
            mean: [0.5; 3],
            std: [0.5; 3],
        }
    }

    fn detect(&self, shapes: &Shapes) -> Option<Result<Detected>> {
        (shapes.contains_key("conv1.weight") && shapes.contains_key("block1.rep.0.conv1.weight"))
            .then(|| detect_xception(shapes))
    }
}

fn detect_xception(shapes: &Shapes) -> Result<Detected> {
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
                    .map(|k| format!("`{k}` is not an Xception tensor"))
            })
            .unwrap_or_default();
        return Err(Error::Model(format!(
            "the weights look like the Keras-port Xception (`conv1`, `block1.rep.0.conv1` keys) \
             but do not fit timm's legacy_xception: {first}"
        )));
    }
    let why = "keys `conv1.weight` [32, 3, 3, 3], `block1..12.rep.N.conv1`/`pointwise` \
               (separable convs) with `skip`/`skipbn` shortcuts, `conv3`/`conv4` separable \
               to 2048 channels (the Keras Xception port, timm legacy_xception)"
        .to_string();
    Ok(detected(ARCHITECTURE, why, classes(shapes, "fc.weight")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_and_counts_of_the_port() {
        let t = expected_tensors(1000);
        // timm's state dict: 276 entries, 40 of them `num_batches_tracked`.
        assert_eq!(t.len(), 236);
        let has = |k: &str, s: &[usize]| t.iter().any(|(n, v)| n == k && v == s);
        assert!(has("block1.rep.0.conv1.weight", &[64, 1, 3, 3]));
        assert!(has("block1.rep.3.pointwise.weight", &[128, 128, 1, 1]));
        assert!(has("block2.rep.4.pointwise.weight", &[256, 256, 1, 1]));
        assert!(has("block12.rep.1.pointwise.weight", &[728, 728, 1, 1]));
        assert!(has("block12.rep.4.pointwise.weight", &[1024, 728, 1, 1]));
        assert!(has("block12.skip.weight", &[1024, 728, 1, 1]));
        assert!(!t.iter().any(|(n, _)| n.starts_with("block4.skip")));
        let params: usize = t
            .iter()
            .filter(|(n, _)| !n.contains("running"))
            .map(|(_, s)| s.iter().product::<usize>())
            .sum();
        // timm: 22,855,952 parameters.
        assert_eq!(params, 22_855_952);
    }
}
