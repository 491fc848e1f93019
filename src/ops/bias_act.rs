//! Per-channel bias and activation fused into one pass: `act(x + bias[c])`.

use candle_core::{CpuStorage, CustomOp2, DType, Layout, Result, Shape, Tensor, bail};
use rayon::prelude::*;

use super::{
    Activation, act_grad, channel_sum, channels_and_plane, f32_data, min_planes_per_task, zeroed,
};

/// The op: `(x [B,C,...], bias [C])` -> `act(x + bias[c])`.
struct BiasAct {
    act: Activation,
}

impl CustomOp2 for BiasAct {
    fn name(&self) -> &'static str {
        "convlens-bias-act"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (c, plane) = check(l1.dims(), l2.dims())?;
        let x = f32_data(s1, l1, self.name())?;
        let bias = f32_data(s2, l2, self.name())?;
        let act = self.act;
        let mut out = zeroed(x.len());
        if plane > 0 {
            out.par_chunks_mut(plane)
                .zip(x.par_chunks(plane))
                .with_min_len(min_planes_per_task(plane))
                .enumerate()
                .for_each(|(i, (o, x))| {
                    let b = bias[i % c];
                    match act {
                        Activation::Identity => o.iter_mut().zip(x).for_each(|(o, x)| *o = x + b),
                        Activation::Relu => {
                            o.iter_mut().zip(x).for_each(|(o, x)| *o = (x + b).max(0.0))
                        }
                        Activation::Relu6 => o
                            .iter_mut()
                            .zip(x)
                            .for_each(|(o, x)| *o = (x + b).clamp(0.0, 6.0)),
                        smooth => o
                            .iter_mut()
                            .zip(x)
                            .for_each(|(o, x)| *o = smooth.apply(x + b)),
                    }
                });
        }
        Ok((CpuStorage::F32(out), l1.shape().clone()))
    }

    fn bwd(
        &self,
        x: &Tensor,
        bias: &Tensor,
        res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let gx = act_grad(grad, res, self.act)?;
        let gb = bias.track_op().then(|| channel_sum(&gx)).transpose()?;
        Ok((x.track_op().then_some(gx), gb))
    }
}

/// Checks `x [B,C,...]` and `bias [C]`; returns `(C, plane)`.
fn check(x: &[usize], bias: &[usize]) -> Result<(usize, usize)> {
    let (c, plane) = channels_and_plane(x, "bias_act")?;
    if bias != [c] {
        bail!("bias_act: bias must be [C] with C = {c}, got {bias:?} for x {x:?}");
    }
    Ok((c, plane))
}

/// Per-channel bias and activation in one pass: `act(x + bias[c])`.
///
/// - `x`: `[B,C]`, `[B,C,H,W]` or any rank >= 2 with channels in dimension 1; `bias`: `[C]`.
/// - Returns the shape of `x`.
///
/// Differentiable w.r.t. `x` and `bias`. On the CPU both must be f32 (any layout); other
/// devices fall back to candle's `broadcast_add` + activation.
pub fn bias_act(x: &Tensor, bias: &Tensor, act: Activation) -> Result<Tensor> {
    let (c, _) = check(x.dims(), bias.dims())?;
    if act.is_smooth() {
        return super::smooth_act(&bias_act(x, bias, Activation::Identity)?, act);
    }
    if !x.device().is_cpu() {
        let mut shape = vec![1; x.rank()];
        shape[1] = c;
        return act.apply_tensor(&x.broadcast_add(&bias.reshape(shape)?)?);
    }
    for (name, t) in [("x", x), ("bias", bias)] {
        if t.dtype() != DType::F32 {
            bail!(
                "bias_act: {name} must be f32 on the CPU, got {:?}",
                t.dtype()
            );
        }
    }
    x.apply_op2(bias, BiasAct { act })
}

/// `act(x)` for `x` `[B,C,...]`, as [`bias_act`] with a zero bias: its backward goes through
/// the fused ops' activation gradient (so it follows [`super::GuidedBackprop`]), unlike
/// candle's `relu`.
pub fn activate(x: &Tensor, act: Activation) -> Result<Tensor> {
    let (c, _) = channels_and_plane(x.dims(), "activate")?;
    let zero = Tensor::zeros(c, x.dtype(), x.device())?;
    bias_act(x, &zero, act)
}

#[cfg(test)]
mod tests {
    use candle_core::Device;

    use super::super::test_util::{
        ACTS, central_differences, grads_all, max_abs_diff, rel_to_max, tensor, to_f64,
    };
    use super::*;

    const SHAPES: &[&[usize]] = &[
        &[4, 5],
        &[2, 3, 4, 5],
        &[1, 6, 7, 3],
        &[3, 2, 5],
        &[2, 3, 1, 1],
    ];

    fn reference(x: &Tensor, bias: &Tensor, act: Activation) -> Result<Tensor> {
        let mut shape = vec![1; x.rank()];
        shape[1] = bias.dim(0)?;
        act.apply_tensor(&x.broadcast_add(&bias.reshape(shape)?)?)
    }

    fn grads(
        f: impl Fn(&Tensor, &Tensor) -> Result<Tensor>,
        x: &Tensor,
        bias: &Tensor,
        r: &Tensor,
    ) -> Result<[Tensor; 2]> {
        let g = grads_all(|t| f(t[0], t[1]), &[x, bias], r)?;
        Ok(g.try_into().expect("two gradients"))
    }

    #[test]
    fn forward_matches_candle() -> Result<()> {
        for (i, dims) in SHAPES.iter().enumerate() {
            let x = tensor(dims, i as u64, 8.0)?;
            let bias = tensor(&[dims[1]], 50 + i as u64, 2.0)?;
            for act in ACTS {
                let got = bias_act(&x, &bias, act)?;
                let want = reference(&x, &bias, act)?;
                assert_eq!(got.dims(), x.dims());
                assert!(max_abs_diff(&got, &want)? <= 1e-6, "{dims:?} {act:?}");
            }
        }
        // Non-contiguous x and bias.
        let x = tensor(&[2, 5, 3, 4], 1, 8.0)?.transpose(1, 3)?;
        let bias = tensor(&[4, 2], 2, 2.0)?.narrow(1, 1, 1)?.squeeze(1)?;
        for act in ACTS {
            let got = bias_act(&x, &bias, act)?;
            assert!(max_abs_diff(&got, &reference(&x, &bias, act)?)? <= 1e-6);
        }
        Ok(())
    }

    #[test]
    fn backward_matches_candle() -> Result<()> {
        for (i, dims) in SHAPES.iter().enumerate() {
            let x = tensor(dims, 10 + i as u64, 8.0)?;
            let bias = tensor(&[dims[1]], 60 + i as u64, 2.0)?;
            let r = tensor(dims, 70 + i as u64, 1.0)?;
            for act in ACTS {
                let ours = grads(|x, b| bias_act(x, b, act), &x, &bias, &r)?;
                let theirs = grads(|x, b| reference(x, b, act), &x, &bias, &r)?;
                for which in 0..2 {
                    let e = rel_to_max(&ours[which], &theirs[which])?;
                    assert!(e < 1e-5, "{dims:?} {act:?} grad {which}: rel error {e}");
                }
            }
        }
        Ok(())
    }

    #[test]
    fn backward_matches_finite_differences() -> Result<()> {
        let eps = 1e-6;
        for (i, dims) in SHAPES.iter().enumerate() {
            let c = dims[1];
            let plane: usize = dims[2..].iter().product();
            let x = tensor(dims, 20 + i as u64, 8.0)?;
            let bias = tensor(&[c], 80 + i as u64, 2.0)?;
            let r = tensor(dims, 90 + i as u64, 1.0)?;
            let rf = to_f64(&r)?;
            for act in ACTS {
                let analytic = grads(|x, b| bias_act(x, b, act), &x, &bias, &r)?;
                let mut params = [to_f64(&x)?, to_f64(&bias)?];
                let loss = |p: &[Vec<f64>; 2]| -> f64 {
                    p[0].iter()
                        .enumerate()
                        .map(|(j, &v)| {
                            let y = v + p[1][(j / plane) % c];
                            let y = match act {
                                Activation::Identity => y,
                                Activation::Relu => y.max(0.0),
                                Activation::Relu6 => y.clamp(0.0, 6.0),
                                other => super::super::test_util::act_f64(other, y),
                            };
                            y * rf[j]
                        })
                        .sum()
                };
                for (which, analytic) in analytic.iter().enumerate().take(2) {
                    let fd: Vec<f32> = central_differences(&mut params, which, eps, loss)
                        .into_iter()
                        .map(|v| v as f32)
                        .collect();
                    let fd = Tensor::from_vec(fd, analytic.dims(), &Device::Cpu)?;
                    let e = rel_to_max(analytic, &fd)?;
                    assert!(e < 1e-4, "{dims:?} {act:?} grad {which}: rel error {e}");
                }
            }
        }
        Ok(())
    }

    #[test]
    fn bad_inputs_are_errors() -> Result<()> {
        let x = tensor(&[2, 3, 4], 0, 1.0)?;
        let bias = tensor(&[3], 1, 1.0)?;
        assert!(bias_act(&x, &bias.narrow(0, 0, 2)?, Activation::Relu).is_err());
        assert!(bias_act(&bias, &bias, Activation::Relu).is_err());
        let err = bias_act(&x.to_dtype(DType::F64)?, &bias, Activation::Relu).unwrap_err();
        assert!(err.to_string().contains("f32"), "{err}");
        Ok(())
    }
}
