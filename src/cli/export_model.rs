//! `convlens export MODEL --format onnx|pytorch --out PATH`: the model as ONNX or as a PyTorch
//! state dict, verified by reading it back before it is put in place.

use std::path::PathBuf;
use std::process::ExitCode;

use super::output::{errln, outln};
use crate::cancel::CancelToken;
use crate::interchange::onnx::{BatchSize, DEFAULT_OPSET, OnnxOptions};
use crate::interchange::{ExportFormat, ExportRequest};
use crate::{Error, Result};

/// Arguments of `convlens export`.
#[derive(clap::Args, Debug)]
pub struct ExportArgs {
    /// A model name in the models folder, a manifest, a weights file, a trained model's folder
    /// or the name of a training run.
    pub model: String,
    /// onnx, or pytorch (a `.safetensors` state dict in torchvision/timm names + a script).
    #[arg(long, default_value = "onnx")]
    pub format: ExportFormat,
    /// The file to write (`.onnx`; for pytorch a `.safetensors` file or a folder).
    #[arg(long)]
    pub out: PathBuf,
    /// ONNX operator set (13 to 17).
    #[arg(long, default_value_t = DEFAULT_OPSET)]
    pub opset: i64,
    /// The ONNX input's batch dimension: `dynamic` or a fixed size.
    #[arg(long, default_value = "dynamic")]
    pub batch: BatchSize,
    /// The ONNX graph normalises its input itself: feed RGB in [0, 1] (resized as the
    /// metadata says).
    #[arg(long)]
    pub include_preprocess: bool,
    /// The ONNX output is softmax probabilities instead of logits.
    #[arg(long)]
    pub softmax: bool,
    /// Replace existing output files.
    #[arg(long)]
    pub overwrite: bool,
}

/// Exports, verifies, and prints what was written and how it compared.
pub fn run(args: &ExportArgs) -> Result<ExitCode> {
    let req = ExportRequest {
        format: args.format,
        out: args.out.clone(),
        overwrite: args.overwrite,
        onnx: OnnxOptions {
            opset: args.opset,
            batch: args.batch,
            include_preprocess: args.include_preprocess,
            softmax: args.softmax,
        },
    };
    req.onnx.validate()?;
    let model = crate::zoo::resolve(&args.model)?.load(&candle_core::Device::Cpu)?;
    // Ctrl-C stops between steps; the file written beside the destination is removed.
    let cancel = CancelToken::new();
    let on_interrupt = cancel.clone();
    if let Err(e) = ctrlc::set_handler(move || on_interrupt.cancel()) {
        errln!("warning: Ctrl-C will not stop the export cleanly ({e})");
    }
    let progress = |step: &str, done: usize, total: usize| {
        errln!("[{done}/{total}] {step}");
    };
    match crate::interchange::export(&model, &req, &progress, &cancel) {
        Ok(report) => {
            for file in &report.files {
                let bytes = std::fs::metadata(file).map(|m| m.len()).unwrap_or(0);
                outln!("wrote {} ({:.1} MB)", file.display(), bytes as f64 / 1e6);
            }
            outln!("verified: {}", report.verification.summary());
            Ok(ExitCode::SUCCESS)
        }
        Err(Error::Cancelled) => {
            errln!("interrupted: nothing was written");
            Ok(ExitCode::from(130))
        }
        Err(e) => Err(e),
    }
}
