//! Composite stages: a named sequence of stages run one after the other ([`Sequential`]), for
//! architectures whose checkpoint stage (timm's `blocks.3`) holds several blocks, and named
//! branches run on the same input whose outputs are concatenated along the channels
//! ([`Concat`], Inception's modules).

use candle_core::Tensor;

use crate::Result;
use crate::graph::Stage;
use crate::graph::layers::ConvBnAct;
use crate::graph::probe::{BiasProbes, BiasProbing};
use crate::interchange::onnx::OnnxGraph;

/// Stages run in order, each named by its part of the checkpoint key (`0`, `1`, ... for
/// `blocks.3.0`, `blocks.3.1`): `[batch, ...input]` -> the last part's output.
pub struct Sequential {
    parts: Vec<(String, Box<dyn Stage>)>,
}

impl Sequential {
    /// The parts in execution order, each with its name (the prefix of its tensors).
    pub fn new(parts: Vec<(String, Box<dyn Stage>)>) -> Self {
        Sequential { parts }
    }
}

impl Stage for Sequential {
    fn forward(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        let mut h = x.clone();
        for (_, part) in &self.parts {
            h = part.forward(&h, train)?;
        }
        Ok(h)
    }

    fn output_shape(&self, input: &[usize]) -> Vec<usize> {
        self.parts
            .iter()
            .fold(input.to_vec(), |s, (_, p)| p.output_shape(&s))
    }

    fn macs(&self, input: &[usize]) -> u64 {
        let mut shape = input.to_vec();
        let mut macs = 0;
        for (_, p) in &self.parts {
            macs += p.macs(&shape);
            shape = p.output_shape(&shape);
        }
        macs
    }

    fn param_count(&self) -> usize {
        self.parts.iter().map(|(_, p)| p.param_count()).sum()
    }

    /// Named `<part>.<tensor>`, e.g. `0.depthwise.weight`.
    fn tensors_mut(&mut self) -> Vec<(String, &mut Tensor)> {
        named(&mut self.parts)
    }

    /// Each part's nodes in turn, its weights named `<stage>.<part>.*`.
    fn to_onnx(&self, g: &mut OnnxGraph, x: &str, input: &[usize]) -> Result<String> {
        let mut h = x.to_string();
        let mut shape = input.to_vec();
        for (name, p) in &self.parts {
            h = g.part(name, |g| p.to_onnx(g, &h, &shape))?;
            shape = p.output_shape(&shape);
        }
        Ok(h)
    }

    fn batchnorm_layers(&mut self) -> Vec<&mut ConvBnAct> {
        self.parts
            .iter_mut()
            .flat_map(|(_, p)| p.batchnorm_layers())
            .collect()
    }

    fn bias_probing(&self) -> BiasProbing {
        BiasProbing::of_parts(self.parts.iter().map(|(_, p)| p.as_ref()))
    }

    fn forward_probed(&self, x: &Tensor, probes: &mut BiasProbes) -> Result<Tensor> {
        let mut h = x.clone();
        for (_, part) in &self.parts {
            h = part.forward_probed(&h, probes)?;
        }
        Ok(h)
    }
}

/// Branches run on the same input, their outputs concatenated along the channels (each
/// branch keeps the spatial size): `[batch, in, h, w]` -> `[batch, sum of the branches'
/// channels, h', w']`. The gradient of the concatenation splits back into the branches.
pub struct Concat {
    branches: Vec<(String, Box<dyn Stage>)>,
}

impl Concat {
    /// The branches in the order their channels are concatenated, each with its name.
    pub fn new(branches: Vec<(String, Box<dyn Stage>)>) -> Self {
        Concat { branches }
    }
}

impl Stage for Concat {
    fn forward(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        let outs = self
            .branches
            .iter()
            .map(|(_, b)| b.forward(x, train))
            .collect::<Result<Vec<_>>>()?;
        Ok(Tensor::cat(&outs, 1)?)
    }

    fn output_shape(&self, input: &[usize]) -> Vec<usize> {
        let shapes: Vec<Vec<usize>> = self
            .branches
            .iter()
            .map(|(_, b)| b.output_shape(input))
            .collect();
        let mut out = shapes.first().cloned().unwrap_or_else(|| input.to_vec());
        out[0] = shapes.iter().map(|s| s[0]).sum();
        out
    }

    fn macs(&self, input: &[usize]) -> u64 {
        self.branches.iter().map(|(_, b)| b.macs(input)).sum()
    }

    fn param_count(&self) -> usize {
        self.branches.iter().map(|(_, b)| b.param_count()).sum()
    }

    /// Named `<branch>.<tensor>`, e.g. `branch1x1.weight`.
    fn tensors_mut(&mut self) -> Vec<(String, &mut Tensor)> {
        named(&mut self.branches)
    }

    /// Each branch's nodes on the same input, then a Concat along the channels.
    fn to_onnx(&self, g: &mut OnnxGraph, x: &str, input: &[usize]) -> Result<String> {
        let outs = self
            .branches
            .iter()
            .map(|(name, b)| g.part(name, |g| b.to_onnx(g, x, input)))
            .collect::<Result<Vec<_>>>()?;
        let outs: Vec<&str> = outs.iter().map(String::as_str).collect();
        Ok(g.concat(&outs))
    }

    fn batchnorm_layers(&mut self) -> Vec<&mut ConvBnAct> {
        self.branches
            .iter_mut()
            .flat_map(|(_, b)| b.batchnorm_layers())
            .collect()
    }

    fn bias_probing(&self) -> BiasProbing {
        BiasProbing::of_parts(self.branches.iter().map(|(_, b)| b.as_ref()))
    }

    fn forward_probed(&self, x: &Tensor, probes: &mut BiasProbes) -> Result<Tensor> {
        let outs = self
            .branches
            .iter()
            .map(|(_, b)| b.forward_probed(x, probes))
            .collect::<Result<Vec<_>>>()?;
        Ok(Tensor::cat(&outs, 1)?)
    }
}

/// The tensors of named parts, each named `<part>.<tensor>`.
fn named(parts: &mut [(String, Box<dyn Stage>)]) -> Vec<(String, &mut Tensor)> {
    parts
        .iter_mut()
        .flat_map(|(name, p)| {
            let name = name.clone();
            p.tensors_mut()
                .into_iter()
                .map(move |(n, t)| (format!("{name}.{n}"), t))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::graph::layers::{ConvKind, GlobalAvgPool};
    use crate::ops::{Activation, BatchNormParams};
    use candle_core::Device;

    fn conv(cin: usize, cout: usize) -> Result<ConvBnAct> {
        let dev = Device::Cpu;
        let w = Tensor::arange(0f32, (cout * cin) as f32, &dev)?.reshape((cout, cin, 1, 1))?;
        let bn = BatchNormParams {
            weight: Tensor::ones(cout, candle_core::DType::F32, &dev)?,
            bias: Tensor::zeros(cout, candle_core::DType::F32, &dev)?,
            running_mean: Tensor::zeros(cout, candle_core::DType::F32, &dev)?,
            running_var: Tensor::ones(cout, candle_core::DType::F32, &dev)?,
            eps: 0.0,
        };
        ConvBnAct::new(ConvKind::Pointwise, &w, &bn, Activation::Identity)
    }

    #[test]
    fn runs_its_parts_in_order_and_names_their_tensors() -> Result<()> {
        let mut seq = Sequential::new(vec![
            ("0".into(), Box::new(conv(2, 3)?)),
            ("1".into(), Box::new(conv(3, 1)?)),
            ("pool".into(), Box::new(GlobalAvgPool)),
        ]);
        let x = Tensor::new(&[[[[1f32]], [[2f32]]]], &Device::Cpu)?;
        // [1, 2] -> [0*1 + 1*2, 2*1 + 3*2, 4*1 + 5*2] = [2, 8, 14] -> 0*2 + 1*8 + 2*14 = 36.
        let y: Vec<Vec<f32>> = seq.forward(&x, false)?.to_vec2()?;
        assert_eq!(y, [[36.0]]);
        assert_eq!(seq.output_shape(&[2, 5, 5]), [1]);
        assert_eq!(seq.macs(&[2, 1, 1]), 6 + 3);
        let names: Vec<String> = seq.tensors_mut().into_iter().map(|(n, _)| n).collect();
        assert_eq!(names, ["0.weight", "0.bias", "1.weight", "1.bias"]);
        assert_eq!(seq.batchnorm_layers().len(), 2);
        Ok(())
    }

    /// Their ONNX descriptions (each part scoped by its name) give their outputs.
    #[test]
    fn sequential_and_concat_export_to_onnx() -> Result<()> {
        let seq = Sequential::new(vec![
            ("0".into(), Box::new(conv(2, 3)?)),
            ("1".into(), Box::new(conv(3, 4)?)),
        ]);
        let cat = Concat::new(vec![
            ("a".into(), Box::new(conv(2, 3)?)),
            ("b".into(), Box::new(seq)),
        ]);
        let x = Tensor::randn(0f32, 1.0, (2, 2, 3, 5), &Device::Cpu)?;
        let expected = cat.forward(&x, false)?;
        let found = crate::interchange::onnx::eval_stage(&cat, &x)?;
        assert_eq!(found.dims(), [2, 7, 3, 5]);
        let diff = (found - expected)?.abs()?.max_all()?.to_scalar::<f32>()?;
        assert!(diff < 1e-4, "{diff}");
        let model = crate::interchange::onnx::stage_model(&cat, &[2, 3, 5])?;
        let names: Vec<&str> = model.graph.as_ref().map_or(Vec::new(), |g| {
            g.initializer.iter().map(|t| t.name.as_str()).collect()
        });
        assert_eq!(
            names,
            [
                "stage.a.weight",
                "stage.a.bias",
                "stage.b.0.weight",
                "stage.b.0.bias"
            ]
            .into_iter()
            .chain(["stage.b.1.weight", "stage.b.1.bias"])
            .collect::<Vec<_>>()
        );
        Ok(())
    }

    #[test]
    fn concatenates_its_branches_along_the_channels() -> Result<()> {
        let mut cat = Concat::new(vec![
            ("a".into(), Box::new(conv(2, 3)?)),
            ("b".into(), Box::new(conv(2, 1)?)),
        ]);
        let x = Tensor::new(&[[[[1f32]], [[2f32]]]], &Device::Cpu)?;
        let y: Vec<f32> = cat.forward(&x, false)?.flatten_all()?.to_vec1()?;
        assert_eq!(y, [2.0, 8.0, 14.0, 2.0]);
        assert_eq!(cat.output_shape(&[2, 5, 5]), [4, 5, 5]);
        let names: Vec<String> = cat.tensors_mut().into_iter().map(|(n, _)| n).collect();
        assert_eq!(names, ["a.weight", "a.bias", "b.weight", "b.bias"]);
        // The gradient of each output channel reaches its own branch's weights only.
        let w = candle_core::Var::from_tensor(&cat.tensors_mut()[2].1.clone())?;
        *cat.tensors_mut()[2].1 = w.as_tensor().clone();
        let r = Tensor::new(&[[[[0f32]], [[0f32]], [[0f32]], [[3f32]]]], &Device::Cpu)?;
        let grads = (cat.forward(&x, true)? * r)?.sum_all()?.backward()?;
        let g: Vec<f32> = grads.get(w.as_tensor()).unwrap().flatten_all()?.to_vec1()?;
        assert_eq!(g, [3.0, 6.0]);
        Ok(())
    }
}
