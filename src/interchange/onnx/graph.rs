//! [`OnnxGraph`]: the ONNX nodes and weights a network describes itself as, one stage at a
//! time ([`crate::graph::Stage::to_onnx`]), built with the message types of `candle-onnx`.

use candle_core::{DType, Tensor};
use candle_onnx::onnx::{AttributeProto, NodeProto, TensorProto, attribute_proto, tensor_proto};

use crate::ops::Activation;
use crate::{Error, Result};

/// The nodes and initializers (weights) of an ONNX graph under construction. Names are scoped
/// by the stage being described ([`OnnxGraph::enter`]): the weights of stage `blocks.4` are
/// `blocks.4.<name>`, its node outputs `blocks.4/<op>_<n>`.
#[derive(Default)]
pub struct OnnxGraph {
    pub(crate) nodes: Vec<NodeProto>,
    pub(crate) initializers: Vec<TensorProto>,
    scope: String,
    counter: usize,
}

impl OnnxGraph {
    /// An empty graph.
    pub fn new() -> Self {
        Self::default()
    }

    /// Scopes the names that follow to the stage `id`.
    pub fn enter(&mut self, id: &str) {
        self.scope = id.to_string();
    }

    /// Runs `f` with names scoped to the part `part` of the current stage (e.g. the
    /// `expand` convolution of `blocks.4`: weights `blocks.4.expand.weight` ...).
    pub fn part<T>(&mut self, part: &str, f: impl FnOnce(&mut Self) -> Result<T>) -> Result<T> {
        let outer = self.scope.clone();
        self.scope = self.scoped(part);
        let result = f(self);
        self.scope = outer;
        result
    }

    fn scoped(&self, name: &str) -> String {
        if self.scope.is_empty() {
            name.to_string()
        } else {
            format!("{}.{name}", self.scope)
        }
    }

    /// Adds the float tensor `t` (any shape) as a weight named `<stage>.<name>`; returns the
    /// name to use as a node input.
    pub fn weight(&mut self, name: &str, t: &Tensor) -> Result<String> {
        let t = t
            .detach()
            .to_dtype(DType::F32)?
            .to_device(&candle_core::Device::Cpu)?;
        let values = t.flatten_all()?.to_vec1::<f32>()?;
        let full = self.unique(self.scoped(name));
        self.initializers.push(TensorProto {
            name: full.clone(),
            dims: t.dims().iter().map(|&d| d as i64).collect(),
            data_type: tensor_proto::DataType::Float as i32,
            raw_data: values.iter().flat_map(|v| v.to_le_bytes()).collect(),
            ..TensorProto::default()
        });
        Ok(full)
    }

    /// Adds a float constant of shape `dims` (`[]` for a scalar).
    pub fn floats(&mut self, name: &str, dims: &[usize], values: &[f32]) -> Result<String> {
        let t = Tensor::from_slice(values, dims, &candle_core::Device::Cpu)?;
        self.weight(name, &t)
    }

    /// Adds a 1-d int64 constant (shapes, pads).
    pub fn int64s(&mut self, name: &str, values: &[i64]) -> String {
        let full = self.unique(self.scoped(name));
        self.initializers.push(TensorProto {
            name: full.clone(),
            dims: vec![values.len() as i64],
            data_type: tensor_proto::DataType::Int64 as i32,
            raw_data: values.iter().flat_map(|v| v.to_le_bytes()).collect(),
            ..TensorProto::default()
        });
        full
    }

    /// `name`, or `name_2`, `name_3` ... when a weight already has it.
    fn unique(&self, name: String) -> String {
        let taken = |n: &str| self.initializers.iter().any(|t| t.name == n);
        if !taken(&name) {
            return name;
        }
        (2..)
            .map(|i| format!("{name}_{i}"))
            .find(|n| !taken(n))
            .unwrap_or(name)
    }

    /// Adds a node `op` reading `inputs`; returns the name of its one output.
    pub fn node(&mut self, op: &str, inputs: &[&str], attribute: Vec<AttributeProto>) -> String {
        self.counter += 1;
        let output = if self.scope.is_empty() {
            format!("{}_{}", op.to_ascii_lowercase(), self.counter)
        } else {
            format!(
                "{}/{}_{}",
                self.scope,
                op.to_ascii_lowercase(),
                self.counter
            )
        };
        self.nodes.push(NodeProto {
            name: output.clone(),
            op_type: op.to_string(),
            input: inputs.iter().map(|s| s.to_string()).collect(),
            output: vec![output.clone()],
            attribute,
            ..NodeProto::default()
        });
        output
    }

    /// Renames the output of the last node to `name` (the graph's output); errors when the
    /// graph has no node.
    pub fn rename_last_output(&mut self, name: &str) -> Result<()> {
        let node = self
            .nodes
            .last_mut()
            .ok_or_else(|| Error::Model("the network has no layer to export".into()))?;
        node.output = vec![name.to_string()];
        Ok(())
    }

    /// A 2-d convolution: `x` `[batch, in, h, w]`, `weight` `[out, in/group, k, k]`, `bias`
    /// `[out]`, square `stride` and zero `padding` on every side.
    pub fn conv(
        &mut self,
        x: &str,
        weight: &Tensor,
        bias: &Tensor,
        stride: usize,
        padding: usize,
        group: usize,
    ) -> Result<String> {
        self.conv_padded(x, weight, bias, stride, [padding; 2], group)
    }

    /// [`OnnxGraph::conv`] with its own zero padding per axis: `[above and below, left and
    /// right]` (a rectangular kernel's, e.g. Inception's 1x7).
    pub fn conv_padded(
        &mut self,
        x: &str,
        weight: &Tensor,
        bias: &Tensor,
        stride: usize,
        [padding_h, padding_w]: [usize; 2],
        group: usize,
    ) -> Result<String> {
        let pads = [padding_h, padding_w, padding_h, padding_w];
        self.conv_with_pads(x, weight, bias, stride, pads, group)
    }

    /// [`OnnxGraph::conv`] with zero padding `[top, left, bottom, right]`, ONNX's order for
    /// `pads`, which may differ before and after (TensorFlow's "same": the odd pixel after).
    /// candle-onnx's evaluator pads uneven `pads` with zeros itself, ONNX Runtime takes them
    /// as they are, so no separate Pad node is needed.
    pub fn conv_with_pads(
        &mut self,
        x: &str,
        weight: &Tensor,
        bias: &Tensor,
        stride: usize,
        pads: [usize; 4],
        group: usize,
    ) -> Result<String> {
        let (kh, kw) = (weight.dim(2)?, weight.dim(3)?);
        let w = self.weight("weight", weight)?;
        let b = self.weight("bias", bias)?;
        let s = stride as i64;
        Ok(self.node(
            "Conv",
            &[x, &w, &b],
            vec![
                ints("kernel_shape", &[kh as i64, kw as i64]),
                ints("strides", &[s, s]),
                ints("pads", &pads.map(|p| p as i64)),
                ints("dilations", &[1, 1]),
                int("group", group as i64),
            ],
        ))
    }

    /// The activation `act` applied to `x` (nothing for the identity).
    pub fn activation(&mut self, x: &str, act: Activation) -> Result<String> {
        Ok(match act {
            Activation::Identity => x.to_string(),
            Activation::Relu => self.node("Relu", &[x], Vec::new()),
            Activation::Relu6 => {
                let lo = self.floats("clip_min", &[], &[0.0])?;
                let hi = self.floats("clip_max", &[], &[6.0])?;
                self.node("Clip", &[x, &lo, &hi], Vec::new())
            }
            Activation::Gelu => self.gelu(x)?,
            Activation::Sigmoid => self.node("Sigmoid", &[x], Vec::new()),
            Activation::Silu => {
                let gate = self.node("Sigmoid", &[x], Vec::new());
                self.node("Mul", &[x, &gate], Vec::new())
            }
            Activation::HardSigmoid => self.hard_sigmoid(x)?,
            Activation::HardSwish => {
                let gate = self.hard_sigmoid(x)?;
                self.node("Mul", &[x, &gate], Vec::new())
            }
            // Activations added later by other branches refuse, naming themselves, until
            // they are described here.
            #[allow(unreachable_patterns, reason = "kept for activations added by merges")]
            other => {
                return Err(Error::Model(format!(
                    "the activation {other:?} cannot be exported to ONNX yet"
                )));
            }
        })
    }

    /// PyTorch's hard-sigmoid `relu6(x + 3) / 6` as Add, Clip, Div, in PyTorch's order of
    /// operations (hard-swish is `x` times it). Written out because candle-onnx's evaluator,
    /// which checks every export, has no `HardSigmoid`, and `HardSwish` only came with opset 14
    /// (convlens writes 13 too); Add, Clip and Div are in every opset from 13, in the evaluator
    /// and in ONNX Runtime.
    pub fn hard_sigmoid(&mut self, x: &str) -> Result<String> {
        let three = self.floats("three", &[], &[3.0])?;
        let zero = self.floats("zero", &[], &[0.0])?;
        let six = self.floats("six", &[], &[6.0])?;
        let shifted = self.node("Add", &[x, &three], Vec::new());
        let clipped = self.node("Clip", &[&shifted, &zero, &six], Vec::new());
        Ok(self.node("Div", &[&clipped, &six], Vec::new()))
    }

    /// Squeeze-excitation of `x` `[batch, c, h, w]`: `x * gate(expand(act(reduce(mean))))`,
    /// the mean over each channel's plane (ReduceMean, kept `[batch, c, 1, 1]`), `reduce`
    /// (`weight` `[r, c]` or `[r, c, 1, 1]`, `bias` `[r]`) and `expand` (`[c, r]` or
    /// `[c, r, 1, 1]`, `[c]`) as 1x1 Convs with
    /// bias, the activations as [`OnnxGraph::activation`] writes them, the gate broadcast
    /// over the plane by Mul. Weights `<part>.se.reduce.*`, `<part>.se.expand.*`.
    pub fn squeeze_excite(
        &mut self,
        x: &str,
        [reduce_w, reduce_b, expand_w, expand_b]: [&Tensor; 4],
        act: Activation,
        gate: Activation,
    ) -> Result<String> {
        self.part("se", |g| {
            let pooled = g.node(
                "ReduceMean",
                &[x],
                vec![ints("axes", &[2, 3]), int("keepdims", 1)],
            );
            let as_conv = |w: &Tensor| -> Result<Tensor> {
                let (o, i) = (w.dim(0)?, w.dim(1)?);
                Ok(w.reshape((o, i, 1, 1))?)
            };
            let (rw, ew) = (as_conv(reduce_w)?, as_conv(expand_w)?);
            let h = g.part("reduce", |g| g.conv(&pooled, &rw, reduce_b, 1, 0, 1))?;
            let h = g.activation(&h, act)?;
            let s = g.part("expand", |g| g.conv(&h, &ew, expand_b, 1, 0, 1))?;
            let s = g.activation(&s, gate)?;
            Ok(g.node("Mul", &[x, &s], Vec::new()))
        })
    }

    /// The exact GELU `x * (1 + erf(x / sqrt 2)) / 2` (PyTorch's `nn.GELU()`), from `Erf`:
    /// the `Gelu` operator only came with opset 20.
    pub fn gelu(&mut self, x: &str) -> Result<String> {
        let root2 = self.floats("sqrt2", &[], &[std::f32::consts::SQRT_2])?;
        let one = self.floats("one", &[], &[1.0])?;
        let half = self.floats("half", &[], &[0.5])?;
        let scaled = self.node("Div", &[x, &root2], Vec::new());
        let erf = self.node("Erf", &[&scaled], Vec::new());
        let gate = self.node("Add", &[&erf, &one], Vec::new());
        let y = self.node("Mul", &[x, &gate], Vec::new());
        Ok(self.node("Mul", &[&y, &half], Vec::new()))
    }

    /// LayerNorm over dimension 1 of `x` (`[batch, C]` or `[batch, C, h, w]`, `rank` its
    /// rank): each position's `C` values less their mean, over the square root of their
    /// biased variance plus `eps`, times `weight` plus `bias` (each `[C]`). Written out with
    /// ReduceMean, Sub, Mul, Add, Sqrt, Div, which every opset from 13 has (the
    /// `LayerNormalization` operator of opset 17 normalises trailing axes only, so the
    /// channels of an NCHW map would need two transposes around it).
    pub fn layer_norm(
        &mut self,
        x: &str,
        weight: &Tensor,
        bias: &Tensor,
        eps: f64,
        rank: usize,
    ) -> Result<String> {
        let c = weight.elem_count();
        let mut per_channel = vec![c];
        per_channel.resize(rank - 1, 1);
        let w = self.weight("weight", &weight.reshape(per_channel.as_slice())?)?;
        let b = self.weight("bias", &bias.reshape(per_channel.as_slice())?)?;
        let eps = self.floats("eps", &[], &[eps as f32])?;
        let over_c = || vec![ints("axes", &[1]), int("keepdims", 1)];
        let mean = self.node("ReduceMean", &[x], over_c());
        let centred = self.node("Sub", &[x, &mean], Vec::new());
        let square = self.node("Mul", &[&centred, &centred], Vec::new());
        let var = self.node("ReduceMean", &[&square], over_c());
        let var = self.node("Add", &[&var, &eps], Vec::new());
        let std = self.node("Sqrt", &[&var], Vec::new());
        let normalised = self.node("Div", &[&centred, &std], Vec::new());
        let scaled = self.node("Mul", &[&normalised, &w], Vec::new());
        Ok(self.node("Add", &[&scaled, &b], Vec::new()))
    }

    /// Concatenation along the channels (dimension 1) of `inputs`, in order.
    pub fn concat(&mut self, inputs: &[&str]) -> String {
        self.node("Concat", inputs, vec![int("axis", 1)])
    }

    /// `x` times the per-channel `scale` (`[C]`) of an NCHW map (ConvNeXt's layer scale).
    pub fn scale_channels(&mut self, x: &str, scale: &Tensor) -> Result<String> {
        let c = scale.elem_count();
        let s = self.weight("scale", &scale.reshape((c, 1, 1))?)?;
        Ok(self.node("Mul", &[x, &s], Vec::new()))
    }

    /// Adaptive average pooling of `[batch, c, h, w]` to `[batch, c, out_h, out_w]` exactly as
    /// PyTorch's `adaptive_avg_pool2d` bins it (cell `i` averages rows `floor(i*h/out_h)` to
    /// `ceil((i+1)*h/out_h)`, windows of uneven length or overlapping when `out` does not divide
    /// `h`): two MatMuls with the averaging matrices ([`crate::ops::pool::adaptive_matrix`]),
    /// `[out_h, h] x X x [w, out_w]`, as convlens computes it. Any sizes, larger outputs too.
    pub fn adaptive_avg_pool(
        &mut self,
        x: &str,
        [h, w]: [usize; 2],
        [out_h, out_w]: [usize; 2],
    ) -> Result<String> {
        let cpu = candle_core::Device::Cpu;
        let rows = crate::ops::pool::adaptive_matrix(h, out_h, &cpu)?;
        let cols = crate::ops::pool::adaptive_matrix(w, out_w, &cpu)?
            .t()?
            .contiguous()?;
        let cols = self.weight("columns", &cols)?;
        let rows = self.weight("rows", &rows)?;
        let y = self.node("MatMul", &[x, &cols], Vec::new());
        Ok(self.node("MatMul", &[&rows, &y], Vec::new()))
    }

    /// Max pooling with a square window `kernel`, `stride` and `-inf` `padding`, floor mode.
    pub fn max_pool(&mut self, x: &str, kernel: usize, stride: usize, padding: usize) -> String {
        let (k, s, p) = (kernel as i64, stride as i64, padding as i64);
        self.node(
            "MaxPool",
            &[x],
            vec![
                ints("kernel_shape", &[k, k]),
                ints("strides", &[s, s]),
                ints("pads", &[p, p, p, p]),
                int("ceil_mode", 0),
            ],
        )
    }

    /// Average pooling with a square window `kernel` = `stride`, no padding.
    pub fn avg_pool(&mut self, x: &str, kernel: usize) -> String {
        let k = kernel as i64;
        self.node(
            "AveragePool",
            &[x],
            vec![ints("kernel_shape", &[k, k]), ints("strides", &[k, k])],
        )
    }

    /// Spatial mean: `[batch, c, h, w]` -> `[batch, c]` (ReduceMean over axes 2 and 3).
    pub fn global_avg_pool(&mut self, x: &str) -> String {
        self.node(
            "ReduceMean",
            &[x],
            vec![ints("axes", &[2, 3]), int("keepdims", 0)],
        )
    }

    /// `[batch, ...]` -> `[batch, product of the rest]`.
    pub fn flatten(&mut self, x: &str) -> String {
        self.node("Flatten", &[x], vec![int("axis", 1)])
    }

    /// A dense layer: `x` `[batch, in]`, `weight` `[out, in]`, `bias` `[out]` ->
    /// `[batch, out]` (Gemm with the weight transposed).
    pub fn dense(&mut self, x: &str, weight: &Tensor, bias: &Tensor) -> Result<String> {
        let w = self.weight("weight", weight)?;
        let b = self.weight("bias", bias)?;
        Ok(self.node("Gemm", &[x, &w, &b], vec![int("transB", 1)]))
    }

    /// Element-wise `a + b`.
    pub fn add(&mut self, a: &str, b: &str) -> String {
        self.node("Add", &[a, b], Vec::new())
    }

    /// Element-wise `max(x, 0)`.
    pub fn relu(&mut self, x: &str) -> String {
        self.node("Relu", &[x], Vec::new())
    }
}

/// An integer-list attribute.
pub fn ints(name: &str, values: &[i64]) -> AttributeProto {
    AttributeProto {
        name: name.to_string(),
        r#type: attribute_proto::AttributeType::Ints as i32,
        ints: values.to_vec(),
        ..AttributeProto::default()
    }
}

/// An integer attribute.
pub fn int(name: &str, value: i64) -> AttributeProto {
    AttributeProto {
        name: name.to_string(),
        r#type: attribute_proto::AttributeType::Int as i32,
        i: value,
        ..AttributeProto::default()
    }
}

/// The error of a stage type that has no ONNX description yet (the default of
/// [`crate::graph::Stage::to_onnx`]).
pub fn not_exportable(type_name: &str) -> Error {
    let short = type_name.rsplit("::").next().unwrap_or(type_name);
    Error::Model(format!(
        "its type `{short}` ({type_name}) cannot be exported to ONNX yet"
    ))
}
