//! Optimisers: AdamW (candle's) and SGD with momentum (candle's SGD has none).

use candle_core::backprop::GradStore;
use candle_core::{Tensor, Var};
use candle_nn::Optimizer as _;
use serde::{Deserialize, Serialize};

use crate::Result;

/// Which optimiser to train with.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub enum OptimizerKind {
    /// AdamW with decoupled weight decay.
    AdamW { weight_decay: f64 },
    /// Stochastic gradient descent with (heavy-ball) momentum.
    Sgd { momentum: f64 },
}

impl Default for OptimizerKind {
    fn default() -> Self {
        OptimizerKind::AdamW { weight_decay: 0.01 }
    }
}

/// An optimiser over a set of variables.
pub enum Optimizer {
    AdamW(candle_nn::AdamW),
    Sgd(SgdMomentum),
}

impl Optimizer {
    /// A fresh optimiser of `kind` for `vars` at learning rate `lr`.
    pub fn new(kind: OptimizerKind, vars: Vec<Var>, lr: f64) -> Result<Self> {
        Ok(match kind {
            OptimizerKind::AdamW { weight_decay } => Optimizer::AdamW(candle_nn::AdamW::new(
                vars,
                candle_nn::ParamsAdamW {
                    lr,
                    weight_decay,
                    ..Default::default()
                },
            )?),
            OptimizerKind::Sgd { momentum } => Optimizer::Sgd(SgdMomentum::new(vars, lr, momentum)),
        })
    }

    /// One update from the gradients of `loss`.
    pub fn backward_step(&mut self, loss: &Tensor) -> Result<()> {
        let grads = loss.backward()?;
        self.step(&grads)
    }

    /// One update from computed gradients.
    pub fn step(&mut self, grads: &GradStore) -> Result<()> {
        match self {
            Optimizer::AdamW(o) => o.step(grads)?,
            Optimizer::Sgd(o) => o.step(grads)?,
        }
        Ok(())
    }
}

/// SGD with momentum (PyTorch's form): `v = momentum * v + g; w -= lr * v`.
pub struct SgdMomentum {
    vars: Vec<Var>,
    velocity: Vec<Option<Tensor>>,
    lr: f64,
    momentum: f64,
}

impl SgdMomentum {
    /// Momentum 0 is plain SGD.
    pub fn new(vars: Vec<Var>, lr: f64, momentum: f64) -> Self {
        let velocity = vec![None; vars.len()];
        SgdMomentum {
            vars,
            velocity,
            lr,
            momentum,
        }
    }

    /// One update.
    pub fn step(&mut self, grads: &GradStore) -> Result<()> {
        for (var, v) in self.vars.iter().zip(self.velocity.iter_mut()) {
            let Some(g) = grads.get(var) else { continue };
            let next = match v.take() {
                Some(prev) => ((prev * self.momentum)? + g)?,
                None => g.clone(),
            };
            var.set(&(var.as_tensor() - (&next * self.lr)?)?)?;
            *v = Some(next);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    /// Minimises (w - 3)^2 from w = 0.
    fn minimise(kind: OptimizerKind, lr: f64, steps: usize) -> f32 {
        let w = Var::new(&[0f32], &Device::Cpu).unwrap();
        let mut opt = Optimizer::new(kind, vec![w.clone()], lr).unwrap();
        for _ in 0..steps {
            let loss = (w.as_tensor() - 3.0)
                .unwrap()
                .sqr()
                .unwrap()
                .sum_all()
                .unwrap();
            opt.backward_step(&loss).unwrap();
        }
        w.as_tensor().to_vec1::<f32>().unwrap()[0]
    }

    #[test]
    fn both_optimisers_converge() {
        let sgd = minimise(OptimizerKind::Sgd { momentum: 0.9 }, 0.02, 300);
        assert!((sgd - 3.0).abs() < 1e-3, "sgd {sgd}");
        let adam = minimise(OptimizerKind::AdamW { weight_decay: 0.0 }, 0.1, 500);
        assert!((adam - 3.0).abs() < 1e-2, "adamw {adam}");
    }

    #[test]
    fn momentum_accelerates() {
        let plain = minimise(OptimizerKind::Sgd { momentum: 0.0 }, 0.01, 20);
        let heavy = minimise(OptimizerKind::Sgd { momentum: 0.9 }, 0.01, 20);
        assert!((3.0 - heavy).abs() < (3.0 - plain).abs());
    }
}
