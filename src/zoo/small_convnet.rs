//! The small convnet trained from scratch for comparison (Chollet, DLwP ch. 8): five 3x3
//! convolutions (32-64-128-256-256, valid padding, ReLU), 2x2 max-pooling after the first four,
//! flatten, dropout 0.5, dense.
//!
//! Layer ids: `block1` .. `block4` (conv + ReLU + pool), `conv5`, `flatten`, `logits`.

use std::collections::HashMap;

use candle_core::{Device, Tensor};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::graph::classifier::Classifier;
use crate::graph::probe::{BiasProbes, BiasProbing};
use crate::graph::{Network, Stage};
use crate::interchange::onnx::OnnxGraph;
use crate::ops::bias_act::activate;
use crate::ops::{Activation, conv2d_bias_act};
use crate::{Error, Result};

/// Output channels of the five convolutions.
pub const CHANNELS: [usize; 5] = [32, 64, 128, 256, 256];
/// Drop probability before the dense layer.
pub const DROPOUT: f32 = 0.5;
/// The classifier weight, `[classes, flat features]`.
pub const OUTPUT_WEIGHT: &str = "logits.weight";

/// 3x3 valid convolution + bias + ReLU, then 2x2 max-pooling if `pool`.
pub struct ConvReluPool {
    /// `[out, in, 3, 3]`.
    weight: Tensor,
    /// `[out]`.
    bias: Tensor,
    pool: bool,
}

impl Stage for ConvReluPool {
    /// `[batch, in, h, w]` -> `[batch, out, (h-2)/2, (w-2)/2]` (without pooling: `h-2, w-2`).
    fn forward(&self, x: &Tensor, _train: bool) -> Result<Tensor> {
        let y = conv2d_bias_act(x, &self.weight, &self.bias, 1, 0, Activation::Relu)?;
        Ok(if self.pool { y.max_pool2d(2)? } else { y })
    }

    fn bias_probing(&self) -> BiasProbing {
        BiasProbing::Own
    }

    /// The convolution plus its bias, the probe, ReLU, the pooling.
    fn forward_probed(&self, x: &Tensor, probes: &mut BiasProbes) -> Result<Tensor> {
        let c = self.bias.dim(0)?;
        let z = x
            .conv2d(&self.weight, 0, 1, 1, 1)?
            .broadcast_add(&self.bias.reshape((1, c, 1, 1))?)?;
        let y = activate(&probes.tap(&z, &self.bias)?, Activation::Relu)?;
        Ok(if self.pool { y.max_pool2d(2)? } else { y })
    }

    fn to_onnx(&self, g: &mut OnnxGraph, x: &str, _input: &[usize]) -> Result<String> {
        let y = g.conv(x, &self.weight, &self.bias, 1, 0, 1)?;
        let y = g.activation(&y, Activation::Relu)?;
        Ok(if self.pool {
            g.max_pool(&y, 2, 2, 0)
        } else {
            y
        })
    }

    fn output_shape(&self, input: &[usize]) -> Vec<usize> {
        let (h, w) = (input[1] - 2, input[2] - 2);
        let (h, w) = if self.pool { (h / 2, w / 2) } else { (h, w) };
        vec![self.weight.dims()[0], h, w]
    }

    fn macs(&self, input: &[usize]) -> u64 {
        let out = self.weight.dims()[0];
        ((input[1] - 2) * (input[2] - 2) * out * input[0] * 9) as u64
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
}

/// `[batch, c, h, w]` -> `[batch, c*h*w]`.
pub struct Flatten;

impl Stage for Flatten {
    fn forward(&self, x: &Tensor, _train: bool) -> Result<Tensor> {
        Ok(x.flatten_from(1)?)
    }

    fn bias_probing(&self) -> BiasProbing {
        BiasProbing::NoBias
    }

    fn to_onnx(&self, g: &mut OnnxGraph, x: &str, _input: &[usize]) -> Result<String> {
        Ok(g.flatten(x))
    }

    fn output_shape(&self, input: &[usize]) -> Vec<usize> {
        vec![input.iter().product()]
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

/// The flattened width after the convolutions for a square input of `size` pixels.
pub fn flat_features(size: usize) -> Result<usize> {
    let mut s = size;
    for i in 0..5 {
        if s < 3 {
            return Err(Error::Model(format!(
                "input size {size} is too small for the small convnet (at least 78 pixels)"
            )));
        }
        s -= 2;
        if i < 4 {
            s /= 2;
        }
    }
    if s == 0 {
        return Err(Error::Model(format!(
            "input size {size} is too small for the small convnet (at least 78 pixels)"
        )));
    }
    Ok(CHANNELS[4] * s * s)
}

/// Every tensor's name and shape for `classes` outputs at `size` pixels.
pub fn tensor_shapes(size: usize, classes: usize) -> Result<Vec<(String, Vec<usize>)>> {
    let mut shapes = Vec::new();
    let mut in_c = 3;
    for (i, &c) in CHANNELS.iter().enumerate() {
        let id = stage_id(i);
        shapes.push((format!("{id}.weight"), vec![c, in_c, 3, 3]));
        shapes.push((format!("{id}.bias"), vec![c]));
        in_c = c;
    }
    let flat = flat_features(size)?;
    shapes.push((OUTPUT_WEIGHT.into(), vec![classes, flat]));
    shapes.push(("logits.bias".into(), vec![classes]));
    Ok(shapes)
}

fn stage_id(i: usize) -> String {
    if i < 4 {
        format!("block{}", i + 1)
    } else {
        "conv5".into()
    }
}

/// Glorot-uniform weights and zero biases (Keras' defaults) from a seeded generator.
pub fn init_tensors(
    size: usize,
    classes: usize,
    seed: u64,
    device: &Device,
) -> Result<HashMap<String, Tensor>> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    tensor_shapes(size, classes)?
        .into_iter()
        .map(|(name, shape)| {
            let n: usize = shape.iter().product();
            let t = if name.ends_with(".bias") {
                Tensor::zeros(shape, candle_core::DType::F32, device)?
            } else {
                let receptive: usize = shape[2..].iter().product::<usize>().max(1);
                let (fan_out, fan_in) = (shape[0] * receptive, shape[1] * receptive);
                let bound = (6.0 / (fan_in + fan_out) as f32).sqrt();
                let v: Vec<f32> = (0..n).map(|_| rng.random_range(-bound..bound)).collect();
                Tensor::from_vec(v, shape, device)?
            };
            Ok((name, t))
        })
        .collect()
}

/// Builds the network from named tensors (see [`tensor_shapes`]); a missing or mis-shaped
/// tensor is an error naming it.
pub fn build(tensors: &HashMap<String, Tensor>, size: usize, classes: usize) -> Result<Network> {
    let get = |name: &str, shape: &[usize]| -> Result<Tensor> {
        let t = tensors
            .get(name)
            .ok_or_else(|| Error::Model(format!("small convnet: tensor `{name}` is missing")))?;
        if t.dims() != shape {
            return Err(Error::Model(format!(
                "small convnet: tensor `{name}`: expected {shape:?}, found {:?}",
                t.dims()
            )));
        }
        Ok(t.clone())
    };
    let shapes: HashMap<String, Vec<usize>> = tensor_shapes(size, classes)?.into_iter().collect();
    let mut stages: Vec<(String, Box<dyn Stage>)> = Vec::new();
    for i in 0..5 {
        let id = stage_id(i);
        let w = format!("{id}.weight");
        let b = format!("{id}.bias");
        stages.push((
            id,
            Box::new(ConvReluPool {
                weight: get(&w, &shapes[&w])?,
                bias: get(&b, &shapes[&b])?,
                pool: i < 4,
            }),
        ));
    }
    stages.push(("flatten".into(), Box::new(Flatten)));
    stages.push((
        "logits".into(),
        Box::new(Classifier::new(
            get("logits.weight", &shapes["logits.weight"])?,
            get("logits.bias", &shapes["logits.bias"])?,
            DROPOUT,
        )),
    ));
    Ok(Network::new(3, stages))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shapes_at_180_pixels_follow_the_book() -> Result<()> {
        assert_eq!(flat_features(180)?, 256 * 7 * 7);
        let net = build(&init_tensors(180, 4, 0, &Device::Cpu)?, 180, 4)?;
        let table = net.layers(180);
        assert_eq!(table[0].output_shape, vec![32, 89, 89]);
        assert_eq!(table[4].output_shape, vec![256, 7, 7]);
        assert_eq!(table.last().unwrap().output_shape, vec![4]);
        assert!(flat_features(77).is_err());
        assert_eq!(flat_features(78)?, 256);
        Ok(())
    }

    #[test]
    fn forward_runs_and_gradients_reach_the_first_layer() -> Result<()> {
        let mut net = build(&init_tensors(80, 3, 1, &Device::Cpu)?, 80, 3)?;
        let mut vars = Vec::new();
        for (_, t) in net.tensors_mut_from("block1")? {
            let v = candle_core::Var::from_tensor(t)?;
            *t = v.as_tensor().clone();
            vars.push(v);
        }
        let x = Tensor::ones((2, 3, 80, 80), candle_core::DType::F32, &Device::Cpu)?;
        let y = net.forward_range(None, "logits", &x, true)?;
        assert_eq!(y.dims(), &[2, 3]);
        let grads = y.sqr()?.sum_all()?.backward()?;
        assert!(
            grads.get(&vars[0]).is_some(),
            "gradient reaches block1.weight"
        );
        Ok(())
    }
}
