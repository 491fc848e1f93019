//! The one abstraction everything shares: a [`Network`] is an ordered list of named stages.
//!
//! A stage's id is the checkpoint's (or fixture's) own dotted name, e.g. `blocks.4`, so any
//! stage's output can be tapped ([`Network::forward_with_taps`]) and the network can be run
//! piecewise ([`Network::forward_range`]): candle keeps gradients only for `Var` leaves, so
//! Grad-CAM and gradient ascent split the network at the layer they look at.

pub mod classifier;
pub mod layers;
pub mod probe;

use candle_core::Tensor;

use self::probe::{BiasProbes, BiasProbing};
use crate::{Error, Result};

/// One stage of a network: a module whose output can be tapped.
pub trait Stage: Send + Sync {
    /// Runs the stage on a batch. `train` switches on training-only behaviour (dropout).
    /// Shapes: `[batch, ...input]` -> `[batch, ...output]`.
    fn forward(&self, x: &Tensor, train: bool) -> Result<Tensor>;

    /// The output shape, without the batch dimension, for an input shape without it
    /// (e.g. `[3, 224, 224]` -> `[32, 112, 112]`).
    fn output_shape(&self, input: &[usize]) -> Vec<usize>;

    /// Multiply-accumulates per image for that input shape.
    fn macs(&self, input: &[usize]) -> u64;

    /// Learnable parameters as the checkpoint counts them (BatchNorm's scale and shift
    /// included, running statistics excluded).
    fn param_count(&self) -> usize;

    /// The tensors the stage computes with, by name relative to the stage (e.g.
    /// `project.weight`), for saving and for making them trainable (`Var`s) in fine-tuning.
    /// With BatchNorm folded these are the folded weights and biases.
    fn tensors_mut(&mut self) -> Vec<(String, &mut Tensor)>;

    /// The convolution + BatchNorm layers inside the stage (to switch how BatchNorm runs).
    fn batchnorm_layers(&mut self) -> Vec<&mut layers::ConvBnAct> {
        Vec::new()
    }

    /// How the stage runs under [`Stage::forward_probed`] (FullGrad, [`probe`]). The default
    /// is unsupported (naming the type), so FullGrad never skips a stage's biases silently.
    fn bias_probing(&self) -> BiasProbing {
        BiasProbing::Unsupported(std::any::type_name::<Self>())
    }

    /// Runs the stage in inference mode like [`Stage::forward`], with a probe added at the
    /// output of every 2-D convolution with a bias (before its activation) and recorded in
    /// `probes`. The default runs `forward` for a stage without such convolutions
    /// ([`BiasProbing::NoBias`]) and refuses otherwise.
    fn forward_probed(&self, x: &Tensor, probes: &mut BiasProbes) -> Result<Tensor> {
        let _ = probes;
        match self.bias_probing() {
            BiasProbing::NoBias => self.forward(x, false),
            _ => Err(probe::unsupported(std::any::type_name::<Self>())),
        }
    }

    /// Describes the stage as ONNX nodes in `g` (BatchNorm folded, inference mode) reading
    /// the tensor named `x`, shaped `[batch, ...input]`; returns the name of its output. The
    /// default refuses with an error naming the stage's type, so a stage without a
    /// description is never exported wrongly.
    fn to_onnx(
        &self,
        _g: &mut crate::interchange::onnx::OnnxGraph,
        _x: &str,
        _input: &[usize],
    ) -> Result<String> {
        Err(crate::interchange::onnx::not_exportable(
            std::any::type_name::<Self>(),
        ))
    }
}

/// What the layer table shows about one stage.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct LayerInfo {
    /// The stage's id, e.g. `blocks.4`.
    pub id: String,
    /// Output shape without the batch dimension, e.g. `[40, 28, 28]`.
    pub output_shape: Vec<usize>,
    /// Learnable parameters of this stage.
    pub params: usize,
    /// Floating-point operations per image (2 x multiply-accumulates).
    pub flops: u64,
}

struct NamedStage {
    id: String,
    stage: Box<dyn Stage>,
}

/// A network of named stages, run in order.
pub struct Network {
    stages: Vec<NamedStage>,
    input_channels: usize,
}

impl Network {
    /// A network from its stages in execution order; `input_channels` is the image's (3).
    pub fn new(input_channels: usize, stages: Vec<(String, Box<dyn Stage>)>) -> Self {
        let stages = stages
            .into_iter()
            .map(|(id, stage)| NamedStage { id, stage })
            .collect();
        Network {
            stages,
            input_channels,
        }
    }

    /// The stage ids in execution order.
    pub fn layer_ids(&self) -> impl Iterator<Item = &str> {
        self.stages.iter().map(|s| s.id.as_str())
    }

    /// The tensors of every stage from `from` (inclusive) to the end, named
    /// `<stage id>.<tensor name>` (e.g. `blocks.15.project.weight`).
    pub fn tensors_mut_from(&mut self, from: &str) -> Result<Vec<(String, &mut Tensor)>> {
        let start = self.index_of(from)?;
        Ok(self.stages[start..]
            .iter_mut()
            .flat_map(|named| {
                let id = named.id.clone();
                named
                    .stage
                    .tensors_mut()
                    .into_iter()
                    .map(move |(name, t)| (format!("{id}.{name}"), t))
            })
            .collect())
    }

    /// Every stage's tensors, named `<stage id>.<tensor name>`, cloned (cheap: shared storage).
    /// (`&mut` only because stages hand out their tensors mutably; nothing changes.)
    #[allow(
        clippy::expect_used,
        reason = "the id is the first stage's own, so the lookup cannot fail"
    )]
    pub fn named_tensors(&mut self) -> Vec<(String, Tensor)> {
        let first = self.stages.first().map(|s| s.id.clone());
        match first {
            Some(id) => self
                .tensors_mut_from(&id)
                .expect("the first stage exists")
                .into_iter()
                .map(|(n, t)| (n, t.clone()))
                .collect(),
            None => Vec::new(),
        }
    }

    /// Runs BatchNorm as `mode` in every stage from `from` (inclusive; `None`: all stages).
    /// See [`layers::BatchNormMode`]; returning to `Folded` folds the current tensors anew.
    pub fn set_batchnorm_mode(
        &mut self,
        from: Option<&str>,
        mode: layers::BatchNormMode,
    ) -> Result<()> {
        let start = match from {
            Some(id) => self.index_of(id)?,
            None => 0,
        };
        for named in &mut self.stages[start..] {
            for layer in named.stage.batchnorm_layers() {
                layer.set_batchnorm_mode(mode).map_err(|e| match e {
                    Error::Model(msg) => Error::Model(format!("stage `{}`: {msg}", named.id)),
                    other => other,
                })?;
            }
        }
        Ok(())
    }

    /// Drops every stage after `id` (e.g. to put a new classifier on `pooled`).
    pub fn truncate_after(&mut self, id: &str) -> Result<()> {
        let i = self.index_of(id)?;
        self.stages.truncate(i + 1);
        Ok(())
    }

    /// Appends a stage at the end.
    pub fn push(&mut self, id: &str, stage: Box<dyn Stage>) {
        self.stages.push(NamedStage {
            id: id.to_string(),
            stage,
        });
    }

    /// The id of the last stage (whose output is the network's output).
    pub fn output_layer(&self) -> &str {
        self.stages.last().map_or("", |s| s.id.as_str())
    }

    /// The position of a stage, or an error naming the unknown id and listing the known ones.
    pub fn index_of(&self, id: &str) -> Result<usize> {
        self.stages
            .iter()
            .position(|s| s.id == id)
            .ok_or_else(|| Error::UnknownLayer {
                id: id.to_string(),
                known: self.layer_ids().collect::<Vec<_>>().join(", "),
            })
    }

    /// The whole network in inference mode: `[batch, 3, h, w]` -> the last stage's output
    /// (the logits, `[batch, classes]`).
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        self.run(x, 0, self.stages.len(), false)
    }

    /// Runs the network up to the deepest requested tap (inference mode) and returns the
    /// tapped outputs in the order asked, each `[batch, ...]` as [`LayerInfo::output_shape`].
    pub fn forward_with_taps(&self, x: &Tensor, taps: &[&str]) -> Result<Vec<Tensor>> {
        let wanted = taps
            .iter()
            .map(|id| self.index_of(id))
            .collect::<Result<Vec<_>>>()?;
        let Some(&last) = wanted.iter().max() else {
            return Ok(Vec::new());
        };
        let mut outputs: Vec<Option<Tensor>> = vec![None; taps.len()];
        in_pool(|| {
            let mut h = x.clone();
            for (i, named) in self.stages[..=last].iter().enumerate() {
                h = named.stage.forward(&h, false)?;
                for (slot, &w) in outputs.iter_mut().zip(&wanted) {
                    if w == i {
                        *slot = Some(h.clone());
                    }
                }
            }
            Ok::<_, Error>(())
        })?;
        outputs
            .into_iter()
            .zip(taps)
            .map(|(t, tap)| {
                t.ok_or_else(|| crate::Error::Model(format!("the tap `{tap}` was not reached")))
            })
            .collect()
    }

    /// Runs the stages after `from` up to and including `to`. `x` is the output of `from`,
    /// or the network's input when `from` is `None`. `train` enables dropout.
    /// An empty range (`to` before or at `from`) is an error naming both layers.
    pub fn forward_range(
        &self,
        from: Option<&str>,
        to: &str,
        x: &Tensor,
        train: bool,
    ) -> Result<Tensor> {
        let start = match from {
            Some(id) => self.index_of(id)? + 1,
            None => 0,
        };
        let end = self.index_of(to)? + 1;
        if end <= start {
            return Err(Error::Model(format!(
                "layer `{to}` does not come after `{}`: nothing to run",
                from.unwrap_or("input")
            )));
        }
        self.run(x, start, end, train)
    }

    /// Runs stages `start..end`. In inference mode every image is computed on its own (no
    /// stage mixes a batch's images then: BatchNorm uses its running statistics), so a batch
    /// whose largest activation would pass [`ACTIVATION_BUDGET_BYTES`] runs in the fewest
    /// chunks that fit, of `ceil(batch / chunks)` images each (the last may be shorter), whose
    /// outputs are joined: VGG-16's 224-px layers hold 12.8 MB per image, two
    /// of them 822 MB at batch 32. Only a kernel chosen by a batch's pixel count can differ for a
    /// chunk (float rounding).
    fn run(&self, x: &Tensor, start: usize, end: usize, train: bool) -> Result<Tensor> {
        let stages = &self.stages[start..end];
        let batch = x.dims().first().copied().unwrap_or(0);
        let per_chunk = if train {
            batch
        } else {
            images_per_chunk(stages, x.dims(), x.dtype().size_in_bytes())
        };
        in_pool(|| {
            if per_chunk >= batch {
                return run_stages(stages, x, train);
            }
            let chunks = batch.div_ceil(per_chunk);
            let size = batch.div_ceil(chunks);
            let outputs = (0..batch)
                .step_by(size)
                .map(|first| {
                    run_stages(stages, &x.narrow(0, first, size.min(batch - first))?, train)
                })
                .collect::<Result<Vec<_>>>()?;
            Ok(Tensor::cat(&outputs, 0)?)
        })
    }

    /// Describes the whole network as ONNX nodes in `g`, reading `x` (`[batch, channels,
    /// input_size, input_size]`); returns the name of the last stage's output. An error names
    /// the first stage that cannot be described.
    pub fn to_onnx(
        &self,
        g: &mut crate::interchange::onnx::OnnxGraph,
        x: &str,
        input_size: usize,
    ) -> Result<String> {
        let mut shape = vec![self.input_channels, input_size, input_size];
        let mut h = x.to_string();
        for named in &self.stages {
            g.enter(&named.id);
            h = named
                .stage
                .to_onnx(g, &h, &shape)
                .map_err(|e| Error::Model(format!("stage `{}`: {e}", named.id)))?;
            shape = named.stage.output_shape(&shape);
        }
        g.enter("");
        Ok(h)
    }

    /// The layer table for a square input of `input_size` pixels.
    pub fn layers(&self, input_size: usize) -> Vec<LayerInfo> {
        let mut shape = vec![self.input_channels, input_size, input_size];
        self.stages
            .iter()
            .map(|named| {
                let flops = 2 * named.stage.macs(&shape);
                shape = named.stage.output_shape(&shape);
                LayerInfo {
                    id: named.id.clone(),
                    output_shape: shape.clone(),
                    params: named.stage.param_count(),
                    flops,
                }
            })
            .collect()
    }
}

/// The most bytes one stage's output may take in an inference run before the batch is split
/// into chunks of images ([`Network::run`]). Lite0, ResNet and MobileNet at 224 px stay whole
/// up to batch 64 and more; VGG-16 at 224 px runs in chunks of up to 20 images.
pub const ACTIVATION_BUDGET_BYTES: usize = 256 << 20;

/// How many images of an input `[batch, ...]` go through `stages` at once so that no
/// stage's output passes [`ACTIVATION_BUDGET_BYTES`] (at least one).
fn images_per_chunk(stages: &[NamedStage], input: &[usize], element_bytes: usize) -> usize {
    let mut shape = input.get(1..).unwrap_or_default().to_vec();
    let mut largest = shape.iter().product::<usize>();
    for named in stages {
        shape = named.stage.output_shape(&shape);
        largest = largest.max(shape.iter().product());
    }
    (ACTIVATION_BUDGET_BYTES / (largest * element_bytes).max(1)).max(1)
}

/// Runs `stages` in order on `x`.
fn run_stages(stages: &[NamedStage], x: &Tensor, train: bool) -> Result<Tensor> {
    let mut h = x.clone();
    for named in stages {
        h = named.stage.forward(&h, train)?;
    }
    Ok(h)
}

/// Runs `f` on a thread of rayon's pool (inline when already on one). The kernels' parallel
/// loops are then forked by a worker that takes part in them: called from a thread outside
/// the pool, every loop (~55 per Lite0 forward) is handed to the pool while the caller sleeps
/// until it ends, two thread wake-ups per op. The tasks, and so the results, are the same.
fn in_pool<R: Send>(f: impl FnOnce() -> R + Send) -> R {
    rayon::scope(|_| f())
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    /// Adds a constant; output shape = input shape.
    struct AddConst(f64);
    impl Stage for AddConst {
        fn forward(&self, x: &Tensor, _train: bool) -> Result<Tensor> {
            Ok((x + self.0)?)
        }
        fn output_shape(&self, input: &[usize]) -> Vec<usize> {
            input.to_vec()
        }
        fn macs(&self, input: &[usize]) -> u64 {
            input.iter().product::<usize>() as u64
        }
        fn param_count(&self) -> usize {
            1
        }
        fn tensors_mut(&mut self) -> Vec<(String, &mut Tensor)> {
            Vec::new()
        }
    }

    fn net() -> Network {
        Network::new(
            1,
            vec![
                ("a".into(), Box::new(AddConst(1.0)) as Box<dyn Stage>),
                ("b".into(), Box::new(AddConst(10.0))),
                ("c".into(), Box::new(AddConst(100.0))),
            ],
        )
    }

    #[test]
    fn taps_come_back_in_the_order_asked() -> Result<()> {
        let x = Tensor::zeros((1, 1, 2, 2), candle_core::DType::F32, &Device::Cpu)?;
        let taps = net().forward_with_taps(&x, &["b", "a"])?;
        assert_eq!(taps[0].flatten_all()?.to_vec1::<f32>()?[0], 11.0);
        assert_eq!(taps[1].flatten_all()?.to_vec1::<f32>()?[0], 1.0);
        Ok(())
    }

    #[test]
    fn range_runs_after_from_through_to() -> Result<()> {
        let x = Tensor::zeros((1, 1, 2, 2), candle_core::DType::F32, &Device::Cpu)?;
        let n = net();
        let y = n.forward_range(Some("a"), "c", &x, false)?;
        assert_eq!(y.flatten_all()?.to_vec1::<f32>()?[0], 110.0);
        let y = n.forward_range(None, "a", &x, false)?;
        assert_eq!(y.flatten_all()?.to_vec1::<f32>()?[0], 1.0);
        assert!(n.forward_range(Some("c"), "a", &x, false).is_err());
        Ok(())
    }

    #[test]
    fn unknown_layer_lists_known_ones() {
        let x = Tensor::zeros((1, 1, 2, 2), candle_core::DType::F32, &Device::Cpu).unwrap();
        let err = net().forward_with_taps(&x, &["blocks.99"]).unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.contains("blocks.99") && msg.contains("a, b, c"),
            "{msg}"
        );
    }

    #[test]
    fn a_stage_without_an_onnx_description_is_named_in_the_error() {
        let mut g = crate::interchange::onnx::OnnxGraph::new();
        let err = net().to_onnx(&mut g, "input", 4).unwrap_err().to_string();
        assert!(
            err.contains("stage `a`")
                && err.contains("AddConst")
                && err.contains("cannot be exported to ONNX yet"),
            "{err}"
        );
    }

    /// Claims an output of `per_image` elements and records the batch sizes it runs on.
    struct Recorder {
        per_image: usize,
        seen: std::sync::Arc<std::sync::Mutex<Vec<usize>>>,
    }
    impl Stage for Recorder {
        fn forward(&self, x: &Tensor, _train: bool) -> Result<Tensor> {
            if let Ok(mut seen) = self.seen.lock() {
                seen.push(x.dim(0)?);
            }
            Ok((x * 2.0)?)
        }
        fn output_shape(&self, _input: &[usize]) -> Vec<usize> {
            vec![self.per_image]
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

    #[test]
    fn inference_over_the_activation_budget_runs_in_chunks_of_images() -> Result<()> {
        // Three images' outputs fit the budget, a fourth does not.
        let per_image = ACTIVATION_BUDGET_BYTES / 4 / 3;
        let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let n = Network::new(
            1,
            vec![(
                "r".into(),
                Box::new(Recorder {
                    per_image,
                    seen: seen.clone(),
                }) as Box<dyn Stage>,
            )],
        );
        let x = Tensor::arange(0f32, 7.0, &Device::Cpu)?.reshape((7, 1, 1, 1))?;
        let y = n.forward(&x)?;
        assert_eq!(
            y.flatten_all()?.to_vec1::<f32>()?,
            [0.0, 2.0, 4.0, 6.0, 8.0, 10.0, 12.0]
        );
        assert_eq!(*seen.lock().unwrap(), [3, 3, 1]);
        // Training (batch statistics) keeps the batch whole.
        seen.lock().unwrap().clear();
        let _ = n.forward_range(None, "r", &x, true)?;
        assert_eq!(*seen.lock().unwrap(), [7]);
        Ok(())
    }

    #[test]
    fn layer_table_follows_shapes() {
        let table = net().layers(4);
        assert_eq!(table.len(), 3);
        assert_eq!(table[2].output_shape, vec![1, 4, 4]);
        assert_eq!(table[0].flops, 32);
    }
}
