//! Squeeze-excitation (Hu et al.): each channel scaled by a gate computed from the spatial
//! means of all channels through a small bottleneck, as EfficientNet (SiLU, sigmoid gate) and
//! MobileNetV3 (ReLU, hard-sigmoid gate) use it. A composition of candle ops and
//! [`super::bias_act()`], differentiable in every argument.

use candle_core::{Result, Tensor, bail};

use super::{Activation, bias_act};

/// The tensors of one squeeze-excitation: two 1x1 convolutions with biases.
#[derive(Clone, Debug)]
pub struct SeWeights {
    /// `[reduced, channels]` (the checkpoint's `[reduced, channels, 1, 1]`).
    pub reduce_w: Tensor,
    /// `[reduced]`.
    pub reduce_b: Tensor,
    /// `[channels, reduced]`.
    pub expand_w: Tensor,
    /// `[channels]`.
    pub expand_b: Tensor,
}

/// `x * gate(expand(act(reduce(mean_hw(x)))))`, the gate broadcast over each channel's plane.
///
/// - `x`: `[B,C,H,W]`; `se`: reduce `[R,C]` + `[R]`, expand `[C,R]` + `[C]`.
/// - Returns `[B,C,H,W]`.
pub fn squeeze_excite(
    x: &Tensor,
    se: &SeWeights,
    act: Activation,
    gate: Activation,
) -> Result<Tensor> {
    let &[b, c, _, _] = x.dims() else {
        bail!("squeeze_excite: x must be [B,C,H,W], got {:?}", x.dims());
    };
    let r = se.reduce_b.dims1()?;
    if se.reduce_w.dims() != [r, c] || se.expand_w.dims() != [c, r] || se.expand_b.dims() != [c] {
        bail!(
            "squeeze_excite: reduce {:?} + {:?}, expand {:?} + {:?} do not fit {c} channels",
            se.reduce_w.dims(),
            se.reduce_b.dims(),
            se.expand_w.dims(),
            se.expand_b.dims()
        );
    }
    let pooled = x.mean((2, 3))?;
    let h = bias_act(&pooled.matmul(&se.reduce_w.t()?)?, &se.reduce_b, act)?;
    let g = bias_act(&h.matmul(&se.expand_w.t()?)?, &se.expand_b, gate)?;
    x.broadcast_mul(&g.reshape((b, c, 1, 1))?)
}

#[cfg(test)]
mod tests {
    use candle_core::Device;

    use super::super::test_util::{
        act_f64, central_differences, grads_all, rel_to_max, tensor, to_f64,
    };
    use super::*;

    /// `[B,C,H,W]` = `[2,3,4,5]`, 2 reduced channels.
    const B: usize = 2;
    const C: usize = 3;
    const HW: usize = 20;
    const R: usize = 2;

    /// The f64 reference from flat parameters `[x, rw, rb, ew, eb]`.
    fn reference(p: &[Vec<f64>; 5], act: Activation, gate: Activation) -> Vec<f64> {
        let mut out = vec![0.0; B * C * HW];
        for b in 0..B {
            let mean: Vec<f64> = (0..C)
                .map(|c| p[0][(b * C + c) * HW..][..HW].iter().sum::<f64>() / HW as f64)
                .collect();
            let h: Vec<f64> = (0..R)
                .map(|r| {
                    act_f64(
                        act,
                        p[2][r] + (0..C).map(|c| p[1][r * C + c] * mean[c]).sum::<f64>(),
                    )
                })
                .collect();
            for c in 0..C {
                let g = act_f64(
                    gate,
                    p[4][c] + (0..R).map(|r| p[3][c * R + r] * h[r]).sum::<f64>(),
                );
                for i in 0..HW {
                    out[(b * C + c) * HW + i] = p[0][(b * C + c) * HW + i] * g;
                }
            }
        }
        out
    }

    #[test]
    fn values_and_gradients_match_an_f64_reference() -> Result<()> {
        let x = tensor(&[B, C, 4, 5], 1, 3.0)?;
        let rw = tensor(&[R, C], 2, 2.0)?;
        let rb = tensor(&[R], 3, 1.0)?;
        let ew = tensor(&[C, R], 4, 2.0)?;
        let eb = tensor(&[C], 5, 1.0)?;
        let r = tensor(&[B, C, 4, 5], 6, 1.0)?;
        let rf = to_f64(&r)?;
        for (act, gate) in [
            (Activation::Silu, Activation::Sigmoid),
            (Activation::Relu, Activation::HardSigmoid),
        ] {
            let f = |t: &[&Tensor]| {
                let se = SeWeights {
                    reduce_w: t[1].clone(),
                    reduce_b: t[2].clone(),
                    expand_w: t[3].clone(),
                    expand_b: t[4].clone(),
                };
                squeeze_excite(t[0], &se, act, gate)
            };
            let args = [&x, &rw, &rb, &ew, &eb];
            let mut params = [
                to_f64(&x)?,
                to_f64(&rw)?,
                to_f64(&rb)?,
                to_f64(&ew)?,
                to_f64(&eb)?,
            ];
            let got = to_f64(&f(&args)?)?;
            for (g, w) in got.iter().zip(reference(&params, act, gate)) {
                assert!((g - w).abs() < 1e-5, "{act:?}/{gate:?}: {g} vs {w}");
            }
            let grads = grads_all(f, &args, &r)?;
            let loss = |p: &[Vec<f64>; 5]| -> f64 {
                reference(p, act, gate)
                    .iter()
                    .zip(&rf)
                    .map(|(y, r)| y * r)
                    .sum()
            };
            for (which, g) in grads.iter().enumerate() {
                let fd: Vec<f32> = central_differences(&mut params, which, 1e-4, loss)
                    .into_iter()
                    .map(|v| v as f32)
                    .collect();
                let fd = Tensor::from_vec(fd, g.dims(), &Device::Cpu)?;
                let e = rel_to_max(g, &fd)?;
                assert!(e < 1e-3, "{act:?}/{gate:?} grad {which}: rel error {e}");
            }
        }
        Ok(())
    }
}
