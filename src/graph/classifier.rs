//! The dense classifier at the end of every network: dropout in training, then
//! `x · Wᵀ + b`.

use candle_core::Tensor;

use super::Stage;
use super::probe::BiasProbing;
use crate::Result;
use crate::interchange::onnx::OnnxGraph;
use crate::ops::{DropoutSeeds, seeded_dropout};

/// Dropout (training only) then a dense layer: `[batch, in]` -> `[batch, out]`.
pub struct Classifier {
    /// `[out, in]`.
    weight: Tensor,
    /// `[out]`.
    bias: Tensor,
    dropout: f32,
    seeds: DropoutSeeds,
}

impl Classifier {
    /// `weight` `[out, in]`, `bias` `[out]`; `dropout` is the drop probability in training.
    pub fn new(weight: Tensor, bias: Tensor, dropout: f32) -> Self {
        Classifier {
            weight,
            bias,
            dropout,
            seeds: DropoutSeeds::new(0),
        }
    }
}

impl Stage for Classifier {
    fn forward(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        let x = if train && self.dropout > 0.0 {
            seeded_dropout(x, self.dropout, self.seeds.next())?
        } else {
            x.clone()
        };
        let product = if untracked_cpu(&[&x, &self.weight]) {
            product_by_row_groups(&x, &self.weight)?
        } else {
            x.matmul(&self.weight.t()?)?
        };
        Ok(product.broadcast_add(&self.bias)?)
    }

    fn output_shape(&self, _input: &[usize]) -> Vec<usize> {
        vec![self.weight.dims()[0]]
    }

    fn macs(&self, _input: &[usize]) -> u64 {
        self.weight.elem_count() as u64
    }

    fn param_count(&self) -> usize {
        self.weight.elem_count() + self.bias.elem_count()
    }

    fn tensors_mut(&mut self) -> Vec<(String, &mut Tensor)> {
        vec![
            ("weight".into(), &mut self.weight),
            ("bias".into(), &mut self.bias),
        ]
    }

    /// A Gemm (dropout is training-only).
    fn to_onnx(&self, g: &mut OnnxGraph, x: &str, _input: &[usize]) -> Result<String> {
        g.dense(x, &self.weight, &self.bias)
    }

    fn bias_probing(&self) -> BiasProbing {
        BiasProbing::NoBias
    }
}

/// Output features per task of [`product_by_row_groups`]: a fixed count, so that which values
/// each product sums never depends on the number of threads.
const CLASSIFIER_ROWS_PER_TASK: usize = 256;

/// Whether every tensor of `ts` lives on the CPU and none records an operation for a backward
/// pass (no variable, nothing computed from one).
fn untracked_cpu(ts: &[&Tensor]) -> bool {
    ts.iter().all(|t| t.device().is_cpu() && !t.track_op())
}

/// `x` `[batch, in]` times `weight` `[out, in]` transposed, `[batch, out]`, in rayon tasks of
/// [`CLASSIFIER_ROWS_PER_TASK`] output features, concatenated. candle's CPU product runs on
/// the calling thread (`CANDLE_NUM_THREADS=1`, see `ops::configure_cpu_threads`); at batch 1
/// Lite0's classifier (a 5 MB weight, read once) was the one serial stretch of a forward
/// (0.22 ms of ~5 on two threads). No gradient flows through it: untracked tensors only.
fn product_by_row_groups(x: &Tensor, weight: &Tensor) -> Result<Tensor> {
    use rayon::prelude::*;
    let out = weight.dim(0)?;
    let groups: Vec<usize> = (0..out).step_by(CLASSIFIER_ROWS_PER_TASK).collect();
    if groups.len() < 2 {
        return Ok(x.matmul(&weight.t()?)?);
    }
    let parts = groups
        .par_iter()
        .map(|&j0| {
            let rows = CLASSIFIER_ROWS_PER_TASK.min(out - j0);
            Ok(x.matmul(&weight.narrow(0, j0, rows)?.t()?)?)
        })
        .collect::<Result<Vec<Tensor>>>()?;
    Ok(Tensor::cat(&parts, 1)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Var};

    fn ramp(n: usize, a: f32, b: f32) -> Vec<f32> {
        (0..n).map(|i| (i as f32 * a + b).sin()).collect()
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

    /// The classifier's product split into groups of output features gives candle's product
    /// of the whole weight (to rounding), at batch 1 and 3, with a last group that is short;
    /// with a variable weight it takes candle's path, and the gradient reaches the weight.
    #[test]
    fn classifier_split_by_rows_matches_and_keeps_gradients() {
        let dev = Device::Cpu;
        let (out, inputs) = (2 * CLASSIFIER_ROWS_PER_TASK + 37, 40);
        let w = Tensor::from_vec(ramp(out * inputs, 0.37, 0.1), (out, inputs), &dev).unwrap();
        let b = Tensor::from_vec(ramp(out, 0.11, 0.5), out, &dev).unwrap();
        let head = Classifier::new(w.clone(), b.clone(), 0.0);
        for batch in [1, 3] {
            let x =
                Tensor::from_vec(ramp(batch * inputs, 0.23, 0.7), (batch, inputs), &dev).unwrap();
            let want = x
                .matmul(&w.t().unwrap())
                .unwrap()
                .broadcast_add(&b)
                .unwrap();
            let got = head.forward(&x, false).unwrap();
            assert_eq!(got.dims(), &[batch, out]);
            assert!(max_diff(&got, &want) < 1e-5, "batch {batch}");
        }
        let var = Var::from_tensor(&w).unwrap();
        let trained = Classifier::new(var.as_tensor().clone(), b, 0.0);
        let x = Tensor::from_vec(ramp(inputs, 0.23, 0.7), (1, inputs), &dev).unwrap();
        let grads = trained
            .forward(&x, false)
            .unwrap()
            .sum_all()
            .unwrap()
            .backward()
            .unwrap();
        let gw = grads
            .get(var.as_tensor())
            .expect("a gradient for the weight");
        // d(sum of logits)/dW[j][i] = x[i] for every output j.
        let want = x.broadcast_as((out, inputs)).unwrap();
        assert!(max_diff(gw, &want) < 1e-6);
    }
}
