//! `convlens info [--model M] [--json]`: the layer table.

use std::process::ExitCode;

use super::ModelArgs;
use super::output::{out, outln, print_json};
use crate::Result;
use crate::graph::LayerInfo;
use crate::text::{shape_text, thousands};
use crate::zoo::{Model, detect};

/// Arguments of `convlens info`.
#[derive(clap::Args, Debug)]
pub struct InfoArgs {
    /// Print the table as JSON.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub model: ModelArgs,
}

/// What the tensor names and shapes of a pretrained model's weights file say, when a manifest
/// named the architecture (a bare weights file has the detection in its notes already; a
/// trained model's file holds only what training changed).
fn detection_line(model: &Model) -> Option<String> {
    let spec = &model.spec;
    if spec.trained.is_some() || spec.manifest_path == spec.weights_path {
        return None;
    }
    let found = detect::read_shapes(&spec.weights_path).and_then(|s| detect::detect(&s));
    Some(match found {
        Ok(d) if d.architecture == spec.manifest.architecture => {
            format!("the tensors agree with the manifest: {}", d.why)
        }
        Ok(d) => format!(
            "the manifest says {}, the tensors look like {}: {}",
            spec.manifest.architecture, d.architecture, d.why
        ),
        Err(e) => format!("the tensors match no known layout: {e}"),
    })
}

/// Prints the model's description and its layer table.
pub fn run(args: &InfoArgs) -> Result<ExitCode> {
    let model = args.model.load()?;
    let m = &model.spec.manifest;
    let table = model.network.layers(m.input_size as usize);
    let detected = detection_line(&model);
    if args.json {
        let out = serde_json::json!({
            "name": m.name,
            "architecture": m.architecture,
            "weights": model.spec.weights_path,
            "input_size": m.input_size,
            "num_classes": m.num_classes,
            "default_cam_layer": m.default_cam_layer,
            "provenance": m.provenance,
            "detected": detected,
            "layers": table,
        });
        print_json(&out);
        return Ok(ExitCode::SUCCESS);
    }
    outln!(
        "{} ({}), {} classes, input {}x{}, weights {}",
        m.name,
        m.architecture,
        m.num_classes,
        m.input_size,
        m.input_size,
        model.spec.weights_path.display()
    );
    if !m.provenance.source.is_empty() {
        outln!("source: {} ({})", m.provenance.source, m.provenance.license);
    }
    if !m.provenance.notes.is_empty() {
        outln!("notes: {}", m.provenance.notes);
    }
    if let Some(line) = &detected {
        outln!("detected: {line}");
    }
    outln!();
    out!("{}", format_table(&table));
    Ok(ExitCode::SUCCESS)
}

/// The layer table as aligned text, with a total line.
pub fn format_table(table: &[LayerInfo]) -> String {
    let mut s = format!(
        "{:<10} {:>16} {:>12} {:>10}\n",
        "layer", "output", "params", "MFLOPs"
    );
    for l in table {
        s += &format!(
            "{:<10} {:>16} {:>12} {:>10.1}\n",
            l.id,
            shape_text(&l.output_shape),
            thousands(l.params),
            l.flops as f64 / 1e6
        );
    }
    let params: usize = table.iter().map(|l| l.params).sum();
    let flops: u64 = table.iter().map(|l| l.flops).sum();
    s += &format!(
        "{:<10} {:>16} {:>12} {:>10.1}\n",
        "total",
        "",
        thousands(params),
        flops as f64 / 1e6
    );
    s
}
