//! The smooth activations (SiLU, hard-swish, hard-sigmoid, sigmoid, GELU) as one element-wise op
//! on rayon whose backward reads the input: their gradient cannot be told from the output
//! alone, as the fused kernels' piecewise-linear ones are.

use candle_core::{CpuStorage, CustomOp1, CustomOp2, DType, Layout, Result, Shape, Tensor, bail};
use rayon::prelude::*;

use super::{Activation, f32_data, zeroed};

/// Elements per rayon task.
const BLOCK: usize = 16_384;

/// `d act / dx` at `x`, as PyTorch's backward kernels compute it (hard-swish: 0 below -3,
/// `x / 3 + 0.5` up to 3 inclusive, 1 above; hard-sigmoid: `1/6` strictly inside (-3, 3);
/// GELU: `Φ(x) + x φ(x)`, in f64 as its forward).
#[inline(always)]
fn derivative(act: Activation, x: f32) -> f32 {
    match act {
        Activation::Silu => {
            let s = 1.0 / (1.0 + (-x).exp());
            s * (1.0 + x * (1.0 - s))
        }
        Activation::HardSwish => {
            if x < -3.0 {
                0.0
            } else if x <= 3.0 {
                x / 3.0 + 0.5
            } else {
                1.0
            }
        }
        Activation::HardSigmoid => {
            if x > -3.0 && x < 3.0 {
                1.0 / 6.0
            } else {
                0.0
            }
        }
        Activation::Sigmoid => {
            let s = 1.0 / (1.0 + (-x).exp());
            s * (1.0 - s)
        }
        Activation::Gelu => {
            let x = f64::from(x);
            let cdf = 0.5 * (1.0 + candle_core::cpu::erf::erf_f64(x / std::f64::consts::SQRT_2));
            let pdf = (-0.5 * x * x).exp() / (2.0 * std::f64::consts::PI).sqrt();
            (cdf + x * pdf) as f32
        }
        other => {
            if other.passes(other.apply(x)) {
                1.0
            } else {
                0.0
            }
        }
    }
}

/// The op: `x` -> `act(x)` element by element.
struct SmoothAct {
    act: Activation,
}

impl CustomOp1 for SmoothAct {
    fn name(&self) -> &'static str {
        "convlens-smooth-act"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        let x = f32_data(storage, layout, self.name())?;
        let mut out = zeroed(x.len());
        let act = self.act;
        out.par_chunks_mut(BLOCK)
            .zip(x.par_chunks(BLOCK))
            .for_each(|(o, x)| act.copy(o, x));
        Ok((CpuStorage::F32(out), layout.shape().clone()))
    }

    fn bwd(&self, arg: &Tensor, _res: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        Ok(Some(
            grad.apply_op2_no_bwd(arg, &SmoothGrad { act: self.act })?,
        ))
    }
}

/// Backward: `(grad, x)` -> `grad * act'(x)`.
struct SmoothGrad {
    act: Activation,
}

impl CustomOp2 for SmoothGrad {
    fn name(&self) -> &'static str {
        "convlens-smooth-act-grad"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        if l1.dims() != l2.dims() {
            bail!(
                "{}: gradient {:?} and input {:?} differ in shape",
                self.name(),
                l1.dims(),
                l2.dims()
            );
        }
        let grad = f32_data(s1, l1, self.name())?;
        let x = f32_data(s2, l2, self.name())?;
        let mut out = zeroed(x.len());
        let act = self.act;
        out.par_chunks_mut(BLOCK)
            .zip(grad.par_chunks(BLOCK))
            .zip(x.par_chunks(BLOCK))
            .for_each(|((o, g), x)| {
                for ((o, &g), &x) in o.iter_mut().zip(g).zip(x) {
                    *o = g * derivative(act, x);
                }
            });
        Ok((CpuStorage::F32(out), l1.shape().clone()))
    }
}

/// `act(x)` element by element, any shape; differentiable (the backward reads `x`). Meant for
/// the smooth activations ([`Activation::is_smooth`]); the others go to candle's ops.
///
/// On the CPU `x` must be f32 (any layout); other devices compose candle's ops (SiLU, sigmoid,
/// `x * clamp(x + 3, 0, 6) / 6`, `gelu_erf`).
pub fn smooth_act(x: &Tensor, act: Activation) -> Result<Tensor> {
    if !act.is_smooth() {
        return act.apply_tensor(x);
    }
    if !x.device().is_cpu() {
        let hard_sigmoid = || (x + 3.0)?.clamp(0f32, 6f32)? / 6.0;
        return match act {
            Activation::Silu => x.silu(),
            Activation::Sigmoid => (x.neg()?.exp()? + 1.0)?.recip(),
            Activation::HardSigmoid => hard_sigmoid(),
            Activation::Gelu => x.gelu_erf(),
            _ => x * hard_sigmoid()?,
        };
    }
    if x.dtype() != DType::F32 {
        bail!("smooth_act: x must be f32 on the CPU, got {:?}", x.dtype());
    }
    x.apply_op1(SmoothAct { act })
}

#[cfg(test)]
mod tests {
    use candle_core::Device;

    use super::super::test_util::{
        act_f64, central_differences, grads_all, rel_to_max, tensor, to_f64,
    };
    use super::*;

    const SMOOTH: [Activation; 5] = [
        Activation::Silu,
        Activation::HardSwish,
        Activation::HardSigmoid,
        Activation::Sigmoid,
        Activation::Gelu,
    ];

    #[test]
    fn values_match_the_definitions_and_candle() -> Result<()> {
        let x = tensor(&[2, 3, 5, 7], 11, 6.0)?;
        for act in SMOOTH {
            let got = to_f64(&smooth_act(&x, act)?)?;
            let want: Vec<f64> = to_f64(&x)?.iter().map(|&v| act_f64(act, v)).collect();
            for (g, w) in got.iter().zip(&want) {
                assert!((g - w).abs() < 1e-6, "{act:?}: {g} vs {w}");
            }
        }
        let silu = x.silu()?;
        assert!(rel_to_max(&smooth_act(&x, Activation::Silu)?, &silu)? < 1e-6);
        let gelu = x.gelu_erf()?;
        assert!(rel_to_max(&smooth_act(&x, Activation::Gelu)?, &gelu)? < 1e-6);
        // Known points: hard-swish(-3) = 0, hard-swish(3) = 3, hard-sigmoid(0) = 1/2.
        let p = Tensor::new(&[-3f32, 3.0, 0.0], &Device::Cpu)?;
        let hs: Vec<f32> = smooth_act(&p, Activation::HardSwish)?.to_vec1()?;
        assert_eq!(hs, [0.0, 3.0, 0.0]);
        let hsig: Vec<f32> = smooth_act(&p, Activation::HardSigmoid)?.to_vec1()?;
        assert_eq!(hsig, [0.0, 1.0, 0.5]);
        Ok(())
    }

    #[test]
    fn gradients_match_finite_differences() -> Result<()> {
        // Values spread over (-6, 6), a non-contiguous view included.
        let x = tensor(&[3, 4, 6], 5, 6.0)?.transpose(1, 2)?;
        let r = tensor(x.dims(), 6, 1.0)?;
        let rf = to_f64(&r)?;
        for act in SMOOTH {
            let g = grads_all(|t| smooth_act(t[0], act), &[&x], &r)?;
            let mut params = [to_f64(&x)?];
            let loss = |p: &[Vec<f64>; 1]| -> f64 {
                p[0].iter()
                    .zip(&rf)
                    .map(|(&v, &r)| act_f64(act, v) * r)
                    .sum()
            };
            let fd: Vec<f32> = central_differences(&mut params, 0, 1e-4, loss)
                .into_iter()
                .map(|v| v as f32)
                .collect();
            let fd = Tensor::from_vec(fd, g[0].dims(), &Device::Cpu)?;
            let e = rel_to_max(&g[0], &fd)?;
            assert!(e < 1e-4, "{act:?}: rel error {e}");
        }
        Ok(())
    }
}
