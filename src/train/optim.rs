//! Optimisers: AdamW (candle's algorithm, fused into one pass per variable on the CPU) and SGD
//! with momentum (candle's SGD has none).

use candle_core::backprop::GradStore;
use candle_core::{DType, Tensor, Var};
use candle_nn::Optimizer as _;
use rayon::prelude::*;
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
    /// candle's AdamW, for variables that are not all f32 on the CPU.
    AdamW(candle_nn::AdamW),
    FusedAdamW(FusedAdamW),
    Sgd(SgdMomentum),
}

impl Optimizer {
    /// A fresh optimiser of `kind` for `vars` at learning rate `lr`.
    pub fn new(kind: OptimizerKind, vars: Vec<Var>, lr: f64) -> Result<Self> {
        Ok(match kind {
            OptimizerKind::AdamW { weight_decay } => {
                let params = candle_nn::ParamsAdamW {
                    lr,
                    weight_decay,
                    ..Default::default()
                };
                let fusable = |v: &Var| v.device().is_cpu() && v.dtype() == DType::F32;
                if vars.iter().all(fusable) {
                    Optimizer::FusedAdamW(FusedAdamW::new(vars, params))
                } else {
                    Optimizer::AdamW(candle_nn::AdamW::new(vars, params)?)
                }
            }
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
            Optimizer::FusedAdamW(o) => o.step(grads)?,
            Optimizer::Sgd(o) => o.step(grads)?,
        }
        Ok(())
    }
}

/// Values per rayon task of [`FusedAdamW`]'s update (ResNet-50's `layer4` holds 15 M).
const ADAMW_CHUNK: usize = 1 << 16;

/// AdamW (decoupled weight decay) exactly as candle's `AdamW` computes it, for f32 variables on
/// the CPU, in one pass per variable and step instead of candle's 12 tensor ops (each a pass over
/// the weights, most allocating; with many small steps, as in head training, they dominated the
/// profile). The same f32 operations in the same order, so the weights come out bit for bit
/// as candle's (tested).
pub struct FusedAdamW {
    /// Each variable with its first and second moments.
    vars: Vec<(Var, Vec<f32>, Vec<f32>)>,
    params: candle_nn::ParamsAdamW,
    step_t: i32,
}

impl FusedAdamW {
    /// Zero moments for `vars` (f32, on the CPU).
    pub fn new(vars: Vec<Var>, params: candle_nn::ParamsAdamW) -> Self {
        let vars = vars
            .into_iter()
            .map(|v| {
                let n = v.elem_count();
                (v, vec![0.0; n], vec![0.0; n])
            })
            .collect();
        Self {
            vars,
            params,
            step_t: 0,
        }
    }

    /// One update.
    pub fn step(&mut self, grads: &GradStore) -> Result<()> {
        self.step_t += 1;
        let p = &self.params;
        // candle's `tensor * f64` is `affine(x, 0)`: `x * (x as f32) + 0`, the `+ 0` included
        // (it turns -0 into +0), and `tensor + eps` is `affine(1, eps)`.
        let f = |x: f64| x as f32;
        let constants = AdamWConstants {
            beta1: f(p.beta1),
            beta2: f(p.beta2),
            one_m_beta1: f(1.0 - p.beta1),
            one_m_beta2: f(1.0 - p.beta2),
            scale_m: f(1.0 / (1.0 - p.beta1.powi(self.step_t))),
            scale_v: f(1.0 / (1.0 - p.beta2.powi(self.step_t))),
            decay: f(1.0 - p.lr * p.weight_decay),
            lr: f(p.lr),
            eps: f(p.eps),
        };
        for (var, m, v) in &mut self.vars {
            let Some(g) = grads.get(var) else { continue };
            if g.elem_count() != var.elem_count() {
                return Err(crate::Error::Training(format!(
                    "AdamW: a gradient of {} values for a variable of {}",
                    g.elem_count(),
                    var.elem_count()
                )));
            }
            // The weights are updated where they lie (no copies out of and back into the
            // variable: three passes over ResNet-50's 15 M trained values per step).
            let update = AdamWUpdate {
                c: constants,
                moments: std::sync::Mutex::new((m.as_mut_slice(), v.as_mut_slice())),
            };
            var.as_tensor().inplace_op2(g, &update)?;
        }
        Ok(())
    }
}

/// The per-step constants of [`FusedAdamW`]'s update, in f32 as candle's ops round them.
#[derive(Clone, Copy)]
struct AdamWConstants {
    beta1: f32,
    beta2: f32,
    one_m_beta1: f32,
    one_m_beta2: f32,
    scale_m: f32,
    scale_v: f32,
    decay: f32,
    lr: f32,
    eps: f32,
}

impl AdamWConstants {
    /// One value's update: the weight `t`, its moments `m` and `v`, its gradient `g`.
    #[inline(always)]
    fn apply(&self, t: &mut f32, m: &mut f32, v: &mut f32, g: f32) {
        *m = (*m * self.beta1 + 0.0) + (g * self.one_m_beta1 + 0.0);
        *v = (*v * self.beta2 + 0.0) + ((g * g) * self.one_m_beta2 + 0.0);
        let (m_hat, v_hat) = (*m * self.scale_m + 0.0, *v * self.scale_v + 0.0);
        let adjusted = m_hat / (v_hat.sqrt() + self.eps);
        *t = (*t * self.decay + 0.0) - (adjusted * self.lr + 0.0);
    }
}

/// [`FusedAdamW`]'s update of one variable as an in-place op: `(weights, gradient)`, the
/// weights overwritten, the moments updated beside them.
struct AdamWUpdate<'a> {
    c: AdamWConstants,
    /// The variable's first and second moments (a lock only because the op is `&self`).
    moments: std::sync::Mutex<(&'a mut [f32], &'a mut [f32])>,
}

impl candle_core::InplaceOp2 for AdamWUpdate<'_> {
    fn name(&self) -> &'static str {
        "convlens-adamw-update"
    }

    fn cpu_fwd(
        &self,
        s1: &mut candle_core::CpuStorage,
        l1: &candle_core::Layout,
        s2: &candle_core::CpuStorage,
        l2: &candle_core::Layout,
    ) -> candle_core::Result<()> {
        let g = crate::ops::f32_data(s2, l2, self.name())?;
        let Some((start, end)) = l1.contiguous_offsets() else {
            candle_core::bail!("{}: the variable is not contiguous", self.name());
        };
        let theta = match s1 {
            candle_core::CpuStorage::F32(data) => &mut data[start..end],
            _ => candle_core::bail!("{}: only f32 weights are updated in place", self.name()),
        };
        let mut moments = self
            .moments
            .lock()
            .map_err(|_| candle_core::Error::Msg("AdamW: a poisoned lock".into()))?;
        let (m, v) = &mut *moments;
        if g.len() != theta.len() || m.len() != theta.len() || v.len() != theta.len() {
            candle_core::bail!(
                "{}: {} weights, {} gradients, {} and {} moments",
                self.name(),
                theta.len(),
                g.len(),
                m.len(),
                v.len()
            );
        }
        // Element by element, so the chunks' threads change no bits.
        let c = self.c;
        theta
            .par_chunks_mut(ADAMW_CHUNK)
            .zip(m.par_chunks_mut(ADAMW_CHUNK))
            .zip(v.par_chunks_mut(ADAMW_CHUNK))
            .zip(g.par_chunks(ADAMW_CHUNK))
            .for_each(|(((theta, m), v), g)| {
                for (((t, m), v), &g) in theta.iter_mut().zip(m).zip(v).zip(g) {
                    c.apply(t, m, v, g);
                }
            });
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
    fn fused_adamw_is_candles_adamw_bit_for_bit() {
        let dev = Device::Cpu;
        let init = |seed: u32, shape: (usize, usize)| {
            let n = shape.0 * shape.1;
            let data: Vec<f32> = (0..n)
                .map(|i| {
                    ((i as f32 + seed as f32) * 0.731).sin() * if i % 7 == 0 { 0.0 } else { 1.5 }
                })
                .collect();
            Tensor::from_vec(data, shape, &dev).unwrap()
        };
        let params = candle_nn::ParamsAdamW {
            lr: 3e-3,
            weight_decay: 0.05,
            ..Default::default()
        };
        let make = || {
            [
                Var::from_tensor(&init(1, (17, 9))).unwrap(),
                Var::from_tensor(&init(2, (1, 5))).unwrap(),
                // More values than one rayon task of the update takes.
                Var::from_tensor(&init(4, (300, 300))).unwrap(),
            ]
        };
        let (ours, theirs) = (make(), make());
        // A network holds clones of its variables' tensors: the update must reach them.
        let held = ours[0].as_tensor().clone();
        let mut fused = FusedAdamW::new(ours.to_vec(), params.clone());
        let mut candle = candle_nn::AdamW::new(theirs.to_vec(), params).unwrap();
        let x = init(3, (9, 5));
        for step in 0..6 {
            // loss = sum((w0 · x + w1)^2 * c) + sum(w2^3): gradients with zeros, signs and
            // scales.
            let loss = |w: &[Var; 3]| {
                let y = w[0]
                    .as_tensor()
                    .matmul(&x)
                    .unwrap()
                    .broadcast_add(w[1].as_tensor())
                    .unwrap();
                let w2 = w[2].as_tensor();
                let cube = w2.sqr().unwrap().mul(w2).unwrap().sum_all().unwrap();
                ((y.sqr().unwrap() * (1.0 + step as f64))
                    .unwrap()
                    .sum_all()
                    .unwrap()
                    + cube)
                    .unwrap()
            };
            fused.step(&loss(&ours).backward().unwrap()).unwrap();
            candle.step(&loss(&theirs).backward().unwrap()).unwrap();
            for (a, b) in ours.iter().zip(&theirs) {
                let a = a
                    .as_tensor()
                    .flatten_all()
                    .unwrap()
                    .to_vec1::<f32>()
                    .unwrap();
                let b = b
                    .as_tensor()
                    .flatten_all()
                    .unwrap()
                    .to_vec1::<f32>()
                    .unwrap();
                assert!(
                    a.iter().zip(&b).all(|(a, b)| a.to_bits() == b.to_bits()),
                    "step {step}: {a:?} vs {b:?}"
                );
            }
            let held = held.flatten_all().unwrap().to_vec1::<f32>().unwrap();
            let var = ours[0].flatten_all().unwrap().to_vec1::<f32>().unwrap();
            assert_eq!(
                held, var,
                "step {step}: a clone of the variable was not updated"
            );
        }
    }

    #[test]
    fn fused_adamw_names_a_gradient_of_the_wrong_size() {
        let dev = Device::Cpu;
        let w = Var::new(&[1f32, 2.0, 3.0], &dev).unwrap();
        let mut opt = FusedAdamW::new(vec![w.clone()], candle_nn::ParamsAdamW::default());
        // A gradient store whose entry for `w` has 2 values, not 3.
        let other = Var::new(&[1f32, 2.0], &dev).unwrap();
        let mut grads = (other.as_tensor().sum_all().unwrap()).backward().unwrap();
        let g = grads.remove(other.as_tensor()).unwrap();
        grads.insert(w.as_tensor(), g);
        let err = opt.step(&grads).unwrap_err().to_string();
        assert!(err.contains("2 values") && err.contains("of 3"), "{err}");
        assert_eq!(w.as_tensor().to_vec1::<f32>().unwrap(), [1.0, 2.0, 3.0]);
    }

    /// candle's backward pass (vendored, see vendor/candle-core/README.md) stores the first
    /// gradient reaching a node as is, negated through a sub, and adds the later ones; the
    /// stored gradients are shared between entries, so nothing may write them in place.
    #[test]
    fn backward_adds_every_use_and_updates_leave_shared_gradients_alone() {
        let dev = Device::Cpu;
        let values = |v: [f32; 3]| Tensor::new(&v, &dev).unwrap();
        let (x, y, z) = (
            Var::new(&[1f32, -2.0, 0.5], &dev).unwrap(),
            Var::new(&[3f32, 0.25, -1.0], &dev).unwrap(),
            Var::new(&[2f32, 2.0, 2.0], &dev).unwrap(),
        );
        let (w, v) = (values([0.5, 4.0, -3.0]), values([7.0, -0.5, 1.5]));
        // root = sum((a + a) - x + y * v - z), a = x * w: `a` is used twice, `x` twice (in `a`
        // and the sub), `y` and `z` once each.
        let a = x.as_tensor().mul(&w).unwrap();
        let b = (&a + &a).unwrap();
        let yv = y.as_tensor().mul(&v).unwrap();
        let s = (((b - x.as_tensor()).unwrap() + yv).unwrap() - z.as_tensor()).unwrap();
        let root = s.sum_all().unwrap();
        let grads = root.backward().unwrap();
        let get = |g: &GradStore, t: &Tensor| g.get(t).unwrap().to_vec1::<f32>().unwrap();
        // d/dx = 2w - 1, d/dy = v, d/dz = -1: exact in f32.
        assert_eq!(get(&grads, x.as_tensor()), [0.0, 7.0, -7.0]);
        assert_eq!(get(&grads, y.as_tensor()), [7.0, -0.5, 1.5]);
        assert_eq!(get(&grads, z.as_tensor()), [-1.0; 3]);
        // The nodes' own gradients, the root's included, are consumed on the way.
        assert!(grads.get(&a).is_none() && grads.get(&s).is_none());
        assert!(grads.get(&root).is_none());
        // A variable as the root: its gradient is one.
        assert_eq!(
            get(&x.as_tensor().backward().unwrap(), x.as_tensor()),
            [1.0; 3]
        );

        // `p + q`: both variables get the one incoming gradient; FusedAdamW updates `p` in
        // place, then `q`, from the same shared gradient, which must come out unchanged.
        let (p, q) = (
            Var::new(&[1f32; 3], &dev).unwrap(),
            Var::new(&[1f32; 3], &dev).unwrap(),
        );
        let grads = (p.as_tensor() + q.as_tensor())
            .unwrap()
            .sum_all()
            .unwrap()
            .backward()
            .unwrap();
        let mut opt = FusedAdamW::new(vec![p.clone(), q.clone()], Default::default());
        opt.step(&grads).unwrap();
        assert_eq!(get(&grads, p.as_tensor()), [1.0; 3]);
        assert_eq!(get(&grads, q.as_tensor()), [1.0; 3]);
        let (p, q) = (
            p.as_tensor().to_vec1::<f32>().unwrap(),
            q.as_tensor().to_vec1::<f32>().unwrap(),
        );
        assert!(p[0] < 1.0, "{p:?}");
        assert_eq!(p, q);
    }

    /// The vendored backward pass adds an upsampling's gradient to its input's other uses (the
    /// published 0.11.1 overwrote whatever was there), and takes a first gradient that is a
    /// view at an offset in a larger buffer (a `cat`'s second part) into a gather's backward.
    #[test]
    fn backward_adds_upsampling_gradients_and_takes_offset_views() {
        let dev = Device::Cpu;
        let flat = |t: &Tensor| t.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        // Two upsamplings of `x`, weighted 1 and 2: each value reaches 4 outputs of each.
        let x = Var::new(&[[[[1f32, 2.0], [3.0, 4.0]]]], &dev).unwrap();
        let up = |scale: f64| {
            let u = x.as_tensor().upsample_nearest2d(4, 4).unwrap();
            (u * scale).unwrap().sum_all().unwrap()
        };
        let grads = (up(1.0) + up(2.0)).unwrap().backward().unwrap();
        assert_eq!(flat(grads.get(x.as_tensor()).unwrap()), [12.0; 4]);

        // `picked` is the second half of a cat: its gradient is rows 2..4 of the cat's.
        let y = Var::new(&[[1f32, 2.0, 3.0], [4.0, 5.0, 6.0]], &dev).unwrap();
        let ids = Tensor::new(&[[2u32], [0]], &dev).unwrap();
        let picked = y.as_tensor().gather(&ids, 1).unwrap();
        let other = Tensor::new(&[[10f32], [20.0]], &dev).unwrap();
        let weights = Tensor::new(&[[1f32], [3.0], [5.0], [7.0]], &dev).unwrap();
        let cat = Tensor::cat(&[&other, &picked], 0).unwrap();
        let grads = (cat * weights)
            .unwrap()
            .sum_all()
            .unwrap()
            .backward()
            .unwrap();
        assert_eq!(
            flat(grads.get(y.as_tensor()).unwrap()),
            [0.0, 0.0, 5.0, 7.0, 0.0, 0.0]
        );
    }

    #[test]
    fn momentum_accelerates() {
        let plain = minimise(OptimizerKind::Sgd { momentum: 0.0 }, 0.01, 20);
        let heavy = minimise(OptimizerKind::Sgd { momentum: 0.9 }, 0.01, 20);
        assert!((3.0 - heavy).abs() < (3.0 - plain).abs());
    }
}
