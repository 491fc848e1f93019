//! Bias probes: the gradient at the output of every 2-D convolution that has a bias, before
//! its activation, as FullGrad (Srinivas & Fleuret 2019) needs it. A convolution followed by
//! BatchNorm counts once, at BatchNorm's output, with BatchNorm's effective bias
//! `bias - running_mean * weight / sqrt(running_var + eps)` (pytorch-grad-cam's choice of
//! layers: every `Conv2d` with a bias and every `BatchNorm2d`).
//!
//! The zoo runs convolution, BatchNorm and activation fused, and candle keeps gradients only
//! for `Var` leaves, so [`Stage::forward_probed`] runs a stage unfused with a zero `Var` (the
//! probe, shaped like the layer's output `[batch, C, h, w]`) added where the activation reads.
//! The probe changes nothing forward and its gradient is the gradient at that output, pixel by
//! pixel (a per-channel bias gradient would be its sum over the batch and the pixels, which
//! FullGrad cannot use).

use candle_core::{Tensor, Var};

use super::{Network, Stage};
use crate::{Error, Result};

/// One probed layer: its bias and the zero tensor added to its output.
pub struct BiasProbe {
    /// The layer's bias (BatchNorm's effective bias), `[C]`.
    pub bias: Tensor,
    /// Zeros `[batch, C, h, w]` added to the layer's output; its gradient is the one there.
    pub probe: Var,
}

/// The probes of one forward pass, in execution order.
#[derive(Default)]
pub struct BiasProbes {
    probes: Vec<BiasProbe>,
}

impl BiasProbes {
    /// `z + 0` with the zero recorded as a probe of the layer whose bias is `bias` (`[C]`);
    /// `z` is the layer's output before the activation, `[batch, C, h, w]`.
    pub fn tap(&mut self, z: &Tensor, bias: &Tensor) -> Result<Tensor> {
        let probe = Var::zeros(z.shape(), z.dtype(), z.device())?;
        let out = (z + probe.as_tensor())?;
        self.probes.push(BiasProbe {
            bias: bias.clone(),
            probe,
        });
        Ok(out)
    }

    /// The probes recorded, in execution order.
    pub fn into_vec(self) -> Vec<BiasProbe> {
        self.probes
    }
}

/// Inside an `impl Stage for T` whose `T` has a `run(&self, x, pass: &mut Pass)`: the three
/// [`Stage`] methods that go through it (`forward`, `bias_probing` = own, `forward_probed`).
#[macro_export]
macro_rules! stage_runs_by_pass {
    () => {
        fn forward(
            &self,
            x: &candle_core::Tensor,
            train: bool,
        ) -> $crate::Result<candle_core::Tensor> {
            self.run(x, &mut $crate::graph::probe::Pass::Forward { train })
        }

        fn bias_probing(&self) -> $crate::graph::probe::BiasProbing {
            $crate::graph::probe::BiasProbing::Own
        }

        fn forward_probed(
            &self,
            x: &candle_core::Tensor,
            probes: &mut $crate::graph::probe::BiasProbes,
        ) -> $crate::Result<candle_core::Tensor> {
            self.run(x, &mut $crate::graph::probe::Pass::Probed(probes))
        }
    };
}

/// How a composite stage is being run: as [`Stage::forward`] or as [`Stage::forward_probed`].
/// A composite (a DenseNet block, an Xception block, a ConvNeXt stage) writes its computation
/// once, as a `run(&self, x, pass: &mut Pass)`, runs its parts with [`Pass::part`] and marks
/// the output of each layer with a bias that is not a part of its own (a convolution's bias,
/// before whatever follows it) with [`Pass::tap`]; its `forward` and `forward_probed` both
/// call that `run`.
pub enum Pass<'a> {
    /// [`Stage::forward`]; `train` switches on training-only behaviour. Taps change nothing.
    Forward {
        /// As [`Stage::forward`]'s.
        train: bool,
    },
    /// [`Stage::forward_probed`]: inference, a probe at every tap and in every part.
    Probed(&'a mut BiasProbes),
}

impl Pass<'_> {
    /// `stage` run on `x` as this pass runs stages.
    pub fn part(&mut self, stage: &dyn Stage, x: &Tensor) -> Result<Tensor> {
        match self {
            Pass::Forward { train } => stage.forward(x, *train),
            Pass::Probed(probes) => stage.forward_probed(x, probes),
        }
    }

    /// `z`, the output `[batch, C, h, w]` of a layer whose bias is `bias` (`[C]`), with a
    /// probe added when probing ([`BiasProbes::tap`]); `z` itself otherwise.
    pub fn tap(&mut self, z: &Tensor, bias: &Tensor) -> Result<Tensor> {
        match self {
            Pass::Forward { .. } => Ok(z.clone()),
            Pass::Probed(probes) => probes.tap(z, bias),
        }
    }
}

/// How a stage runs under [`Stage::forward_probed`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BiasProbing {
    /// No 2-D convolution with a bias inside (pooling, dense layers): `forward` serves.
    NoBias,
    /// The stage probes its own convolutions (it implements `forward_probed`).
    Own,
    /// The stage cannot (yet) expose the gradients at its convolutions' outputs; the stage's
    /// type name.
    Unsupported(&'static str),
}

impl BiasProbing {
    /// The probing of a stage made of `parts`: unsupported if any part is, else its own.
    pub fn of_parts<'a>(parts: impl IntoIterator<Item = &'a dyn Stage>) -> BiasProbing {
        parts
            .into_iter()
            .map(|p| p.bias_probing())
            .find(|p| matches!(p, BiasProbing::Unsupported(_)))
            .unwrap_or(BiasProbing::Own)
    }
}

/// The error of a stage type that cannot run probed.
pub(crate) fn unsupported(type_name: &str) -> Error {
    Error::Model(format!(
        "{} cannot expose the gradients at its convolutions' outputs (bias probes)",
        short_type(type_name)
    ))
}

/// `convlens::zoo::convnext::ConvNextStage` -> `ConvNextStage`.
fn short_type(type_name: &str) -> &str {
    type_name.rsplit("::").next().unwrap_or(type_name)
}

impl Network {
    /// Why [`Network::forward_probed`] cannot run on this network (the first stage that
    /// cannot, by id and type), or `None` when it can.
    pub fn bias_probe_refusal(&self) -> Option<String> {
        self.stages
            .iter()
            .find_map(|named| match named.stage.bias_probing() {
                BiasProbing::Unsupported(t) => Some(format!(
                    "stage `{}` ({}) cannot expose the gradients at its convolutions' outputs",
                    named.id,
                    short_type(t)
                )),
                _ => None,
            })
    }

    /// The whole network in inference mode with a probe at every biased layer: `[batch, 3,
    /// h, w]` -> the logits and the probes in execution order. Errors, naming the stage, on a
    /// network [`Network::bias_probe_refusal`] refuses.
    pub fn forward_probed(&self, x: &Tensor) -> Result<(Tensor, Vec<BiasProbe>)> {
        if let Some(why) = self.bias_probe_refusal() {
            return Err(Error::Model(why));
        }
        let mut probes = BiasProbes::default();
        let mut h = x.clone();
        for named in &self.stages {
            h = named
                .stage
                .forward_probed(&h, &mut probes)
                .map_err(|e| match e {
                    Error::Model(msg) => Error::Model(format!("stage `{}`: {msg}", named.id)),
                    other => other,
                })?;
        }
        Ok((h, probes.into_vec()))
    }
}

#[cfg(test)]
mod tests {
    use candle_core::{DType, Device};

    use super::*;
    use crate::graph::classifier::Classifier;
    use crate::graph::layers::{ConvBnAct, ConvKind, GlobalAvgPool};
    use crate::ops::{Activation, BatchNormParams};

    fn ramp(n: usize, a: f32, b: f32) -> Vec<f32> {
        (0..n).map(|i| (i as f32 * a + b).sin()).collect()
    }

    fn t(v: Vec<f32>, shape: &[usize]) -> Tensor {
        Tensor::from_vec(v, shape, &Device::Cpu).unwrap()
    }

    fn bn(c: usize, seed: f32) -> BatchNormParams {
        let pos = |s: f32| {
            t(
                ramp(c, 0.7, s).iter().map(|v| 1.0 + 0.5 * v).collect(),
                &[c],
            )
        };
        BatchNormParams {
            weight: pos(seed),
            bias: t(ramp(c, 1.3, seed + 1.0), &[c]),
            running_mean: t(ramp(c, 0.9, seed + 2.0), &[c]),
            running_var: pos(seed + 3.0),
            eps: 1e-3,
        }
    }

    /// conv 3x3 (no activation: its output is its pre-activation) -> conv 1x1 + ReLU6 ->
    /// mean -> dense, on `[1, 3, 6, 6]`.
    fn net() -> Network {
        let w1 = t(ramp(4 * 3 * 9, 0.37, 0.2), &[4, 3, 3, 3]);
        let w2 = t(ramp(5 * 4, 0.61, 0.4), &[5, 4, 1, 1]);
        let dense = Classifier::new(
            t(ramp(2 * 5, 0.83, 0.1), &[2, 5]),
            t(vec![0.1, -0.1], &[2]),
            0.0,
        );
        let conv = |kind, w: &Tensor, b, act| -> Box<dyn Stage> {
            Box::new(ConvBnAct::new(kind, w, &b, act).unwrap())
        };
        let dense_kind = ConvKind::Dense {
            stride: 1,
            padding: 1,
        };
        Network::new(
            3,
            vec![
                (
                    "a".into(),
                    conv(dense_kind, &w1, bn(4, 0.0), Activation::Identity),
                ),
                (
                    "b".into(),
                    conv(ConvKind::Pointwise, &w2, bn(5, 5.0), Activation::Relu6),
                ),
                ("pooled".into(), Box::new(GlobalAvgPool)),
                ("logits".into(), Box::new(dense)),
            ],
        )
    }

    fn max_diff(a: &Tensor, b: &Tensor) -> f32 {
        (a - b)
            .unwrap()
            .abs()
            .unwrap()
            .max_all()
            .unwrap()
            .to_scalar()
            .unwrap()
    }

    /// The probe changes nothing forward, its gradient is the gradient at the layer's output
    /// (measured by splitting the network there), and its bias is BatchNorm's effective one.
    #[test]
    fn a_probe_reads_the_gradient_at_its_layers_output() -> Result<()> {
        let net = net();
        let x = t(ramp(3 * 36, 0.29, 0.5), &[1, 3, 6, 6]);
        let (logits, probes) = net.forward_probed(&x)?;
        assert!(max_diff(&logits, &net.forward(&x)?) < 1e-5);
        assert_eq!(probes.len(), 2);
        let g_probe = logits.get(0)?.get(1)?.backward()?;
        let g_probe = g_probe.get(probes[0].probe.as_tensor()).unwrap().clone();

        let a = net.forward_range(None, "a", &x, false)?;
        let var = Var::from_tensor(&a)?;
        let rest = net.forward_range(Some("a"), "logits", var.as_tensor(), false)?;
        let grads = rest.get(0)?.get(1)?.backward()?;
        let g_split = grads.get(var.as_tensor()).unwrap();
        let scale = g_split.abs()?.max_all()?.to_scalar::<f32>()?;
        assert!(scale > 1e-3);
        assert!(max_diff(&g_probe, g_split) <= 1e-5 * scale);

        let b = bn(4, 0.0);
        let w: Vec<f32> = b.weight.to_vec1()?;
        let mean: Vec<f32> = b.running_mean.to_vec1()?;
        let var: Vec<f32> = b.running_var.to_vec1()?;
        let beta: Vec<f32> = b.bias.to_vec1()?;
        let ours: Vec<f32> = probes[0].bias.to_vec1()?;
        for c in 0..4 {
            let theirs = beta[c] - mean[c] * w[c] / (var[c] + 1e-3).sqrt();
            assert!((ours[c] - theirs).abs() < 1e-6, "channel {c}");
        }
        Ok(())
    }

    struct Opaque;
    impl Stage for Opaque {
        fn forward(&self, x: &Tensor, _train: bool) -> Result<Tensor> {
            Ok(x.clone())
        }
        fn output_shape(&self, input: &[usize]) -> Vec<usize> {
            input.to_vec()
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

    #[test]
    fn a_stage_that_cannot_probe_is_named() {
        let mut net = net();
        assert_eq!(net.bias_probe_refusal(), None);
        net.push("opaque", Box::new(Opaque));
        let why = net.bias_probe_refusal().unwrap();
        assert!(why.contains("stage `opaque` (Opaque)"), "{why}");
        let x = Tensor::zeros((1, 3, 6, 6), DType::F32, &Device::Cpu).unwrap();
        let err = net.forward_probed(&x).err().unwrap().to_string();
        assert!(err.contains("stage `opaque`"), "{err}");
    }
}
