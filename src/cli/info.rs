//! `convlens info [MODEL | --model MODEL] [--json]`: the layer table; `convlens info --zoo`:
//! the architectures the zoo builds (from the registry).

use std::process::ExitCode;

use super::ModelArgs;
use super::output::{out, outln, print_json};
use crate::device::DeviceChoice;
use crate::graph::LayerInfo;
use crate::text::{shape_text, thousands};
use crate::zoo::{Model, detect, registry};
use crate::{Error, Result};

/// Arguments of `convlens info`.
#[derive(clap::Args, Debug)]
pub struct InfoArgs {
    /// The model (as `--model`): a model name, a manifest, a weights file, a model folder or
    /// a training run.
    #[arg(value_name = "MODEL")]
    pub file: Option<String>,
    /// The model, as every other subcommand names it (default: the bundled one).
    #[arg(long)]
    pub model: Option<String>,
    /// cpu, cuda[:N], metal[:N] or auto.
    #[arg(long, default_value = "cpu")]
    pub device: DeviceChoice,
    /// Print the table as JSON.
    #[arg(long)]
    pub json: bool,
    /// List the architectures the zoo builds (family, ids, key names read, default CAM layer,
    /// input size) instead of a model's layers: a Markdown table, or JSON with `--json`.
    #[arg(long, conflicts_with_all = ["file", "model"])]
    pub zoo: bool,
}

impl InfoArgs {
    /// The model to load: the positional `MODEL` or `--model` (an error when both are given
    /// and differ), else the bundled default.
    pub fn model_args(&self) -> Result<ModelArgs> {
        let model = match (&self.file, &self.model) {
            (Some(file), Some(flag)) if file != flag => {
                return Err(Error::Model(format!(
                    "two models given: `{file}` and --model `{flag}`; name one (either form)"
                )));
            }
            (Some(m), _) | (None, Some(m)) => m.clone(),
            (None, None) => crate::zoo::DEFAULT_MODEL.to_string(),
        };
        Ok(ModelArgs {
            model,
            device: self.device,
        })
    }
}

/// One row of `convlens info --zoo` per registry family.
#[derive(serde::Serialize)]
struct ZooRow {
    family: &'static str,
    ids: Vec<&'static str>,
    key_names: &'static str,
    default_cam_layers: Vec<String>,
    /// `input_size / resize_shorter` per id.
    preprocess: Vec<String>,
}

fn zoo_rows() -> Vec<ZooRow> {
    registry::FAMILIES
        .iter()
        .map(|f| {
            let ids = f.ids().to_vec();
            let mut cams: Vec<String> = ids.iter().map(|id| f.default_cam_layer(id)).collect();
            cams.dedup();
            let mut preprocess: Vec<String> = ids
                .iter()
                .map(|id| {
                    let p = f.preprocess(id);
                    format!("{} of {}", p.input_size, p.resize_shorter)
                })
                .collect();
            preprocess.dedup();
            ZooRow {
                family: f.family(),
                ids,
                key_names: f.key_names(),
                default_cam_layers: cams,
                preprocess,
            }
        })
        .collect()
}

/// The registry as a Markdown table (the facts of the README's zoo table).
fn zoo_table() -> String {
    let code = |v: &[&str]| {
        v.iter()
            .map(|s| format!("`{s}`"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let mut s = String::from(
        "| family | `architecture` ids | key names read | default CAM layer | input (crop of shorter side) |\n\
         | --- | --- | --- | --- | --- |\n",
    );
    for r in zoo_rows() {
        let cams: Vec<&str> = r.default_cam_layers.iter().map(String::as_str).collect();
        s += &format!(
            "| {} | {} | {} | {} | {} |\n",
            r.family,
            code(&r.ids),
            r.key_names,
            code(&cams),
            r.preprocess.join(", ")
        );
    }
    s
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
    if args.zoo {
        if args.json {
            print_json(&serde_json::json!(zoo_rows()));
        } else {
            out!("{}", zoo_table());
        }
        return Ok(ExitCode::SUCCESS);
    }
    let model = args.model_args()?.load()?;
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
