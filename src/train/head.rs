//! The classifier trained on top of a frozen (or partly unfrozen) base: pooled features ->
//! Dense(256, ReLU) -> Dropout(0.5) -> Dense(classes), or a single linear layer.

use std::collections::HashMap;

use candle_core::{Device, Tensor, Var};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use crate::graph::Stage;
use crate::interchange::onnx::OnnxGraph;
use crate::ops::{DropoutSeeds, seeded_dropout};
use crate::zoo::checkpoint::ExpectedTensors;
use crate::{Error, Result};

/// Width of the hidden layer of the dense head.
pub const HIDDEN: usize = 256;
/// Drop probability before the output layer of the dense head.
pub const DROPOUT: f32 = 0.5;

/// The shape of the head.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum HeadKind {
    /// Dense(256, ReLU) -> Dropout(0.5) -> Dense(classes) (Chollet's head).
    #[default]
    Dense,
    /// Dense(classes) only (softmax regression on the features).
    Linear,
}

impl std::str::FromStr for HeadKind {
    type Err = String;

    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s.to_ascii_lowercase().as_str() {
            "dense" => Ok(HeadKind::Dense),
            "linear" => Ok(HeadKind::Linear),
            _ => Err(format!("unknown head `{s}`; use dense or linear")),
        }
    }
}

/// The saved name prefix of each dense layer of a head of `kind`, in order.
fn layer_names(kind: HeadKind) -> &'static [&'static str] {
    match kind {
        HeadKind::Dense => &["head.dense", "head.out"],
        HeadKind::Linear => &["head.out"],
    }
}

/// The saved name of the head's output layer weight (`[classes, inputs]`), whatever its kind.
pub const OUTPUT_WEIGHT: &str = "head.out.weight";

/// A trained or trainable head: `[batch, features]` -> `[batch, classes]` logits.
pub struct Head {
    kind: HeadKind,
    /// `(weight [out, in], bias [out])` per dense layer, in order.
    layers: Vec<(Tensor, Tensor)>,
    seeds: DropoutSeeds,
}

impl Head {
    /// A freshly initialised head (PyTorch's Linear init, `U(-1/sqrt(in), 1/sqrt(in))`) from a
    /// seeded generator.
    pub fn init(
        kind: HeadKind,
        features: usize,
        classes: usize,
        seed: u64,
        device: &Device,
    ) -> Result<Self> {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let dims: Vec<(usize, usize)> = match kind {
            HeadKind::Dense => vec![(features, HIDDEN), (HIDDEN, classes)],
            HeadKind::Linear => vec![(features, classes)],
        };
        let layers = dims
            .into_iter()
            .map(|(inp, out)| {
                let bound = 1.0 / (inp as f32).sqrt();
                let mut uniform = |n: usize| -> Vec<f32> {
                    (0..n).map(|_| rng.random_range(-bound..bound)).collect()
                };
                let w = Tensor::from_vec(uniform(out * inp), (out, inp), device)?;
                let b = Tensor::from_vec(uniform(out), out, device)?;
                Ok((w, b))
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Head {
            kind,
            layers,
            seeds: DropoutSeeds::new(seed),
        })
    }

    /// The saved tensors of a head of `kind` reading `features` and giving `classes` logits:
    /// name and shape, in the order of [`Head::named_tensors`].
    pub fn expected_tensors(kind: HeadKind, features: usize, classes: usize) -> ExpectedTensors {
        let dims = match kind {
            HeadKind::Dense => vec![(features, HIDDEN), (HIDDEN, classes)],
            HeadKind::Linear => vec![(features, classes)],
        };
        layer_names(kind)
            .iter()
            .zip(dims)
            .flat_map(|(n, (inp, out))| {
                [
                    (format!("{n}.weight"), vec![out, inp]),
                    (format!("{n}.bias"), vec![out]),
                ]
            })
            .collect()
    }

    /// A head from saved tensors (see [`Head::named_tensors`]); a missing one is an error
    /// naming it. Shapes are not checked here: audit the file first
    /// ([`Head::expected_tensors`]).
    pub fn from_tensors(kind: HeadKind, tensors: &HashMap<String, Tensor>) -> Result<Self> {
        let layers = layer_names(kind)
            .iter()
            .map(|n| {
                let get = |suffix: &str| {
                    let key = format!("{n}.{suffix}");
                    tensors
                        .get(&key)
                        .cloned()
                        .ok_or_else(|| Error::Model(format!("the head tensor `{key}` is missing")))
                };
                Ok((get("weight")?, get("bias")?))
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Head {
            kind,
            layers,
            seeds: DropoutSeeds::new(0),
        })
    }

    /// The head's tensors with the names they are saved under.
    pub fn named_tensors(&self) -> Vec<(String, Tensor)> {
        layer_names(self.kind)
            .iter()
            .zip(&self.layers)
            .flat_map(|(n, (w, b))| {
                [
                    (format!("{n}.weight"), w.clone()),
                    (format!("{n}.bias"), b.clone()),
                ]
            })
            .collect()
    }

    /// Turns the head's tensors into trainable variables and returns them.
    pub fn make_trainable(&mut self) -> Result<Vec<Var>> {
        let mut vars = Vec::new();
        for (w, b) in &mut self.layers {
            for t in [w, b] {
                let var = Var::from_tensor(t)?;
                *t = var.as_tensor().clone();
                vars.push(var);
            }
        }
        Ok(vars)
    }

    /// A frozen copy of the current values (for the best checkpoint).
    pub fn snapshot(&self) -> Result<Head> {
        Ok(Head {
            kind: self.kind,
            layers: self
                .layers
                .iter()
                .map(|(w, b)| Ok((w.detach().copy()?, b.detach().copy()?)))
                .collect::<Result<Vec<_>>>()?,
            seeds: DropoutSeeds::new(0),
        })
    }

    /// Number of output classes.
    pub fn classes(&self) -> usize {
        self.layers.last().map_or(0, |(w, _)| w.dims()[0])
    }

    /// The head's kind.
    pub fn kind(&self) -> HeadKind {
        self.kind
    }

    /// Restarts the dropout masks' sequence (at the start of a training run).
    pub fn reseed_dropout(&self, seed: u64) {
        self.seeds.reseed(seed);
    }

    /// `[batch, features]` -> `[batch, classes]`; `train` applies the seeded dropout.
    pub fn logits(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        let mut h = x.clone();
        let last = self.layers.len() - 1;
        for (i, (w, b)) in self.layers.iter().enumerate() {
            if i == last && self.kind == HeadKind::Dense && train {
                h = seeded_dropout(&h, DROPOUT, self.seeds.next())?;
            }
            h = h.matmul(&w.t()?)?.broadcast_add(b)?;
            if i != last {
                h = h.relu()?;
            }
        }
        Ok(h)
    }
}

impl Stage for Head {
    fn forward(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        self.logits(x, train)
    }

    fn bias_probing(&self) -> crate::graph::probe::BiasProbing {
        crate::graph::probe::BiasProbing::NoBias
    }

    fn output_shape(&self, _input: &[usize]) -> Vec<usize> {
        vec![self.classes()]
    }

    fn macs(&self, _input: &[usize]) -> u64 {
        self.layers.iter().map(|(w, _)| w.elem_count() as u64).sum()
    }

    fn param_count(&self) -> usize {
        self.layers
            .iter()
            .map(|(w, b)| w.elem_count() + b.elem_count())
            .sum()
    }

    /// A Gemm per layer, Relu between them (dropout is training-only).
    fn to_onnx(&self, g: &mut OnnxGraph, x: &str, _input: &[usize]) -> Result<String> {
        let last = self.layers.len().saturating_sub(1);
        let mut h = x.to_string();
        for (i, ((w, b), name)) in self.layers.iter().zip(layer_names(self.kind)).enumerate() {
            let part = name.trim_start_matches("head.");
            h = g.part(part, |g| g.dense(&h, w, b))?;
            if i != last {
                h = g.activation(&h, crate::ops::Activation::Relu)?;
            }
        }
        Ok(h)
    }

    fn tensors_mut(&mut self) -> Vec<(String, &mut Tensor)> {
        self.layers
            .iter_mut()
            .enumerate()
            .flat_map(|(i, (w, b))| [(format!("{i}.weight"), w), (format!("{i}.bias"), b)])
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_head_and_round_trip() -> Result<()> {
        let a = Head::init(HeadKind::Dense, 8, 3, 1, &Device::Cpu)?;
        let b = Head::init(HeadKind::Dense, 8, 3, 1, &Device::Cpu)?;
        let x = Tensor::ones((2, 8), candle_core::DType::F32, &Device::Cpu)?;
        let (ya, yb) = (a.logits(&x, false)?, b.logits(&x, false)?);
        assert_eq!(ya.to_vec2::<f32>()?, yb.to_vec2::<f32>()?);
        assert_eq!(ya.dims(), &[2, 3]);
        let saved: HashMap<String, Tensor> = a.named_tensors().into_iter().collect();
        let c = Head::from_tensors(HeadKind::Dense, &saved)?;
        assert_eq!(c.logits(&x, false)?.to_vec2::<f32>()?, ya.to_vec2::<f32>()?);
        assert!(Head::from_tensors(HeadKind::Linear, &HashMap::new()).is_err());
        Ok(())
    }

    #[test]
    fn expected_tensors_are_what_a_head_saves() -> Result<()> {
        for kind in [HeadKind::Dense, HeadKind::Linear] {
            let head = Head::init(kind, 8, 3, 1, &Device::Cpu)?;
            let saved: Vec<(String, Vec<usize>)> = head
                .named_tensors()
                .into_iter()
                .map(|(n, t)| (n, t.dims().to_vec()))
                .collect();
            assert_eq!(saved, Head::expected_tensors(kind, 8, 3));
            assert_eq!(
                saved.iter().find(|(n, _)| n == OUTPUT_WEIGHT).unwrap().1[0],
                3
            );
        }
        Ok(())
    }
}
