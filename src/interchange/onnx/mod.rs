//! ONNX export: a loaded model (zoo network or trained model) as an ONNX `ModelProto`, built
//! with the message types of `candle-onnx`, BatchNorm folded, the preprocessing written into
//! the model's `metadata_props`.

mod graph;

pub use graph::{OnnxGraph, int, ints, not_exportable};

use candle_onnx::onnx::{
    ModelProto, OperatorSetIdProto, StringStringEntryProto, TensorShapeProto, TypeProto,
    ValueInfoProto, tensor_proto, tensor_shape_proto, type_proto,
};

use crate::zoo::{Model, Preprocess};
use crate::{Error, Result};

/// The opsets the export can target: from 13 (Softmax over one axis) to 17 (opset 18 moves
/// ReduceMean's axes into an input).
pub const OPSETS: std::ops::RangeInclusive<i64> = 13..=17;
/// The default opset.
pub const DEFAULT_OPSET: i64 = 17;
/// The largest fixed batch size an export accepts.
pub const MAX_BATCH: usize = 4096;

/// The batch dimension of the exported input.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum BatchSize {
    /// Any batch size (the dimension is named `batch`).
    #[default]
    Dynamic,
    /// Exactly this many images per call.
    Fixed(usize),
}

impl std::str::FromStr for BatchSize {
    type Err = String;

    fn from_str(s: &str) -> std::result::Result<Self, String> {
        if s.eq_ignore_ascii_case("dynamic") {
            return Ok(BatchSize::Dynamic);
        }
        match s.parse::<usize>() {
            Ok(n) if (1..=MAX_BATCH).contains(&n) => Ok(BatchSize::Fixed(n)),
            _ => Err(format!(
                "`{s}` is not a batch size: use `dynamic` or 1..={MAX_BATCH}"
            )),
        }
    }
}

/// How the ONNX file is built.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct OnnxOptions {
    /// Operator set version, in [`OPSETS`].
    pub opset: i64,
    /// The input's batch dimension.
    pub batch: BatchSize,
    /// The graph normalises itself: its input is RGB in `[0, 1]` (resized as the metadata
    /// says), not the normalised tensor.
    pub include_preprocess: bool,
    /// The output is softmax probabilities (`probabilities`) instead of `logits`.
    pub softmax: bool,
}

impl Default for OnnxOptions {
    fn default() -> Self {
        OnnxOptions {
            opset: DEFAULT_OPSET,
            batch: BatchSize::Dynamic,
            include_preprocess: false,
            softmax: false,
        }
    }
}

impl OnnxOptions {
    /// Checks the opset and the batch size; errors name the value and the allowed range.
    pub fn validate(&self) -> Result<()> {
        if !OPSETS.contains(&self.opset) {
            return Err(Error::InvalidOption(format!(
                "--opset {}: convlens writes opsets {} to {}",
                self.opset,
                OPSETS.start(),
                OPSETS.end()
            )));
        }
        if let BatchSize::Fixed(n) = self.batch
            && !(1..=MAX_BATCH).contains(&n)
        {
            return Err(Error::InvalidOption(format!(
                "--batch {n}: use `dynamic` or 1..={MAX_BATCH}"
            )));
        }
        Ok(())
    }

    /// The name of the graph's input.
    pub fn input_name(&self) -> &'static str {
        if self.include_preprocess {
            "image"
        } else {
            "input"
        }
    }

    /// The name of the graph's output.
    pub fn output_name(&self) -> &'static str {
        if self.softmax {
            "probabilities"
        } else {
            "logits"
        }
    }
}

/// The ONNX IR version that goes with an opset (IR 8 came with opset 17, 7 with 13-15).
fn ir_version(opset: i64) -> i64 {
    if opset >= 17 { 8 } else { 7 }
}

/// A float tensor type with these dimensions (`None` = the dynamic `batch`).
fn tensor_type(dims: &[Option<usize>]) -> TypeProto {
    let dim = dims
        .iter()
        .map(|d| tensor_shape_proto::Dimension {
            value: Some(match d {
                Some(n) => tensor_shape_proto::dimension::Value::DimValue(*n as i64),
                None => tensor_shape_proto::dimension::Value::DimParam("batch".into()),
            }),
            ..Default::default()
        })
        .collect();
    TypeProto {
        value: Some(type_proto::Value::TensorType(type_proto::Tensor {
            elem_type: tensor_proto::DataType::Float as i32,
            shape: Some(TensorShapeProto { dim }),
        })),
        ..Default::default()
    }
}

/// The preprocessing a caller must apply before the graph, as metadata entries.
pub fn preprocess_metadata(model: &Model, opts: &OnnxOptions) -> Vec<(String, String)> {
    let spec = &model.spec;
    let size = spec.preprocess.input_size();
    let (resize, mean, std) = match &spec.preprocess {
        Preprocess::CenterCrop(t) => (
            format!(
                "resize the shorter side to {} pixels (bilinear, antialiased like Pillow), then \
                 take the centre {}x{} crop",
                t.resize_shorter, t.crop, t.crop
            ),
            t.mean,
            t.std,
        ),
        Preprocess::Resize(t) => (
            format!(
                "resize the whole image to {0}x{0} pixels (bilinear, antialiased like Pillow)",
                t.size
            ),
            t.mean,
            t.std,
        ),
    };
    let normalise = if opts.include_preprocess {
        "in the graph: feed RGB values in [0, 1]".to_string()
    } else {
        "before the graph: (RGB in [0, 1] - mean) / std per channel".to_string()
    };
    let json = |v: &[f32]| serde_json::to_string(v).unwrap_or_default();
    vec![
        ("input_name".into(), opts.input_name().into()),
        (
            "input_layout".into(),
            format!("NCHW float32, RGB, {size}x{size}"),
        ),
        ("input_size".into(), size.to_string()),
        ("resize".into(), resize),
        ("mean".into(), json(&mean)),
        ("std".into(), json(&std)),
        ("normalization".into(), normalise),
        ("output_name".into(), opts.output_name().into()),
        (
            "class_names".into(),
            serde_json::to_string(&spec.labels).unwrap_or_default(),
        ),
        ("model_name".into(), spec.manifest.name.clone()),
        ("architecture".into(), spec.manifest.architecture.clone()),
        ("source".into(), spec.manifest.provenance.source.clone()),
        ("license".into(), spec.manifest.provenance.license.clone()),
        ("weights_sha256".into(), model.weights_hash.clone()),
    ]
}

/// The model as ONNX: input `input` (`[batch, 3, size, size]`, normalised) or `image`
/// (`[0, 1]` RGB, with `include_preprocess`), output `logits` (or `probabilities`)
/// `[batch, classes]`. An error names the first stage that cannot be exported.
pub fn build(model: &Model, opts: &OnnxOptions) -> Result<ModelProto> {
    opts.validate()?;
    let size = model.spec.preprocess.input_size() as usize;
    let (mean, std) = match &model.spec.preprocess {
        Preprocess::CenterCrop(t) => (t.mean, t.std),
        Preprocess::Resize(t) => (t.mean, t.std),
    };
    let mut g = OnnxGraph::new();
    let input = opts.input_name();
    let x = if opts.include_preprocess {
        g.enter("preprocess");
        let m = g.floats("mean", &[1, 3, 1, 1], &mean)?;
        let s = g.floats("std", &[1, 3, 1, 1], &std)?;
        let centred = g.node("Sub", &[input, &m], Vec::new());
        g.node("Div", &[&centred, &s], Vec::new())
    } else {
        input.to_string()
    };
    let logits = model.network.to_onnx(&mut g, &x, size)?;
    if logits == x {
        return Err(Error::Model("the network has no layer to export".into()));
    }
    rename_value(&mut g, &logits, "logits");
    if opts.softmax {
        g.node("Softmax", &["logits"], vec![int("axis", 1)]);
        g.rename_last_output("probabilities")?;
    }
    let classes = model.spec.labels.len();
    let batch = match opts.batch {
        BatchSize::Dynamic => None,
        BatchSize::Fixed(n) => Some(n),
    };
    let graph = candle_onnx::onnx::GraphProto {
        name: model.spec.manifest.name.clone(),
        node: std::mem::take(&mut g.nodes),
        initializer: std::mem::take(&mut g.initializers),
        input: vec![ValueInfoProto {
            name: input.into(),
            r#type: Some(tensor_type(&[batch, Some(3), Some(size), Some(size)])),
            ..Default::default()
        }],
        output: vec![ValueInfoProto {
            name: opts.output_name().into(),
            r#type: Some(tensor_type(&[batch, Some(classes)])),
            ..Default::default()
        }],
        ..Default::default()
    };
    let metadata = preprocess_metadata(model, opts);
    let doc = format!(
        "{} ({}) exported by convlens {}. Preprocessing: {}; {}. Classes: {}.",
        model.spec.manifest.name,
        model.spec.manifest.architecture,
        env!("CARGO_PKG_VERSION"),
        metadata_value(&metadata, "resize"),
        metadata_value(&metadata, "normalization"),
        classes
    );
    Ok(ModelProto {
        ir_version: ir_version(opts.opset),
        opset_import: vec![OperatorSetIdProto {
            domain: String::new(),
            version: opts.opset,
        }],
        producer_name: "convlens".into(),
        producer_version: env!("CARGO_PKG_VERSION").into(),
        doc_string: doc,
        graph: Some(graph),
        metadata_props: metadata
            .into_iter()
            .map(|(key, value)| StringStringEntryProto { key, value })
            .collect(),
        ..Default::default()
    })
}

/// One stage alone as an ONNX model (for checking a stage's description against its forward,
/// here and with other runtimes): input `input` `[batch, ...input]`, output `output`, any
/// batch size, opset [`DEFAULT_OPSET`].
pub fn stage_model(stage: &dyn crate::graph::Stage, input: &[usize]) -> Result<ModelProto> {
    let mut g = OnnxGraph::new();
    g.enter("stage");
    let mut out = stage.to_onnx(&mut g, "input", input)?;
    if out == "input" {
        out = g.node("Identity", &["input"], Vec::new());
    }
    rename_value(&mut g, &out, "output");
    let dims = |shape: &[usize]| -> Vec<Option<usize>> {
        std::iter::once(None)
            .chain(shape.iter().map(|&d| Some(d)))
            .collect()
    };
    let graph = candle_onnx::onnx::GraphProto {
        name: "stage".into(),
        node: std::mem::take(&mut g.nodes),
        initializer: std::mem::take(&mut g.initializers),
        input: vec![ValueInfoProto {
            name: "input".into(),
            r#type: Some(tensor_type(&dims(input))),
            ..Default::default()
        }],
        output: vec![ValueInfoProto {
            name: "output".into(),
            r#type: Some(tensor_type(&dims(&stage.output_shape(input)))),
            ..Default::default()
        }],
        ..Default::default()
    };
    Ok(ModelProto {
        ir_version: ir_version(DEFAULT_OPSET),
        opset_import: vec![OperatorSetIdProto {
            domain: String::new(),
            version: DEFAULT_OPSET,
        }],
        producer_name: "convlens".into(),
        graph: Some(graph),
        ..Default::default()
    })
}

/// Runs [`stage_model`] of `stage` on `x` (`[batch, ...]`) with candle-onnx's evaluator.
pub fn eval_stage(
    stage: &dyn crate::graph::Stage,
    x: &candle_core::Tensor,
) -> Result<candle_core::Tensor> {
    let model = stage_model(stage, &x.dims()[1..])?;
    let inputs = std::collections::HashMap::from([("input".to_string(), x.clone())]);
    let mut out = candle_onnx::simple_eval(&model, inputs)?;
    out.remove("output")
        .ok_or_else(|| Error::Model("the stage's ONNX graph has no output".into()))
}

fn metadata_value<'a>(metadata: &'a [(String, String)], key: &str) -> &'a str {
    metadata
        .iter()
        .find(|(k, _)| k == key)
        .map_or("", |(_, v)| v.as_str())
}

/// Renames the value `from` to `to` wherever a node reads or writes it.
fn rename_value(g: &mut OnnxGraph, from: &str, to: &str) {
    for node in &mut g.nodes {
        for name in node.input.iter_mut().chain(node.output.iter_mut()) {
            if name == from {
                *name = to.to_string();
            }
        }
    }
}

/// The model's `metadata_props` as key/value pairs.
pub fn metadata(model: &ModelProto) -> Vec<(String, String)> {
    model
        .metadata_props
        .iter()
        .map(|e| (e.key.clone(), e.value.clone()))
        .collect()
}

/// The serialised bytes of an ONNX model.
pub fn encode(model: &ModelProto) -> Vec<u8> {
    prost::Message::encode_to_vec(model)
}
