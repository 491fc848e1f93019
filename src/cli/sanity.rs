//! `convlens sanity IMAGE [--method M] [--layer L] [--class C] [--seed S] [--out F.png]
//! [--json]`: the model-randomisation sanity check (src/viz/sanity.rs) as a figure with its
//! sidecar, and a table of Spearman / SSIM by randomised stage.

use std::path::PathBuf;
use std::process::ExitCode;

use super::figure_io::{check_figure_out, default_out};
use super::output::{outln, print_json};
use super::{ModelArgs, Progress};
use crate::Result;
use crate::export::{self, evidence};
use crate::viz::cam::{self, CamMethod, CamOptions};
use crate::viz::sanity;

/// Arguments of `convlens sanity`.
#[derive(clap::Args, Debug)]
pub struct SanityArgs {
    /// The image.
    pub image: PathBuf,
    /// The method whose map is checked.
    #[arg(long, default_value = "gradcam")]
    pub method: CamMethod,
    /// The layer; default: the model's default CAM layer.
    #[arg(long)]
    pub layer: Option<String>,
    /// The class, by name or index; default: the top-1 prediction of the intact model.
    #[arg(long)]
    pub class: Option<String>,
    /// Seed of the random weights.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Figure scale factor, 1-4.
    #[arg(long, default_value_t = 1)]
    pub scale: u32,
    /// The figure (.png or .jpg; a sidecar .json goes beside it).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Print the steps as JSON.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub model: ModelArgs,
}

#[derive(serde::Serialize)]
struct Record<'a> {
    image: String,
    image_sha256: String,
    method: &'a str,
    layer: &'a str,
    class: usize,
    class_name: String,
    seed: u64,
    #[serde(flatten)]
    sanity: &'a sanity::Sanity,
}

/// Runs the cascade, writes the figure and its sidecar, prints the steps.
pub fn run(args: &SanityArgs) -> Result<ExitCode> {
    export::check_scale(args.scale)?;
    let out = args
        .out
        .clone()
        .unwrap_or_else(|| default_out(Some(&args.image), &format!("sanity-{}", args.method)));
    check_figure_out(&out, &[&args.image])?;
    let mut model = args.model.load()?;
    let layer = args
        .layer
        .clone()
        .unwrap_or_else(|| model.spec.manifest.default_cam_layer.clone());
    model.network.index_of(&layer)?;
    let input = model.spec.preprocess.load(&args.image, &model.device)?;
    let (_, _, h, w) = input.dims4()?;
    let class = match args.class.as_deref() {
        Some(c) => export::resolve_class(&model.spec.labels, c)?,
        None => {
            cam::compute(
                &model.network,
                &input,
                &CamOptions::new(args.method, &layer).for_model(&model),
            )?
            .class
        }
    };
    let opts = CamOptions {
        class: Some(class),
        ..CamOptions::new(args.method, &layer)
    }
    .for_model(&model);
    let mut bar = Progress::new(0, "sanity");
    let result = sanity::cascade(
        &mut model.network,
        (h, w),
        args.seed,
        &mut |net| Ok(cam::compute(net, &input, &opts)?.map),
        &mut |d, t| {
            bar.set_length(t as u64);
            bar.set_position(d as u64);
            true
        },
    )?;
    bar.finish();
    let class_name = model
        .spec
        .labels
        .get(class)
        .cloned()
        .unwrap_or_else(|| format!("class {class}"));
    let image_label = args
        .image
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let figure = evidence::sanity_figure(
        &result,
        &format!(
            "Sanity check: {} at {layer}, class {class_name}",
            export::method_title(args.method)
        ),
        &format!(
            "{} · {image_label} · class {class} · weights re-randomised stage by stage (seed {})",
            model.spec.manifest.name, args.seed
        ),
        args.scale,
    );
    let record = Record {
        image: args.image.display().to_string(),
        image_sha256: crate::zoo::file_sha256(&args.image)?,
        method: args.method.name(),
        layer: &layer,
        class,
        class_name,
        seed: args.seed,
        sanity: &result,
    };
    let sidecar = evidence::write_with_sidecar(
        &figure,
        &out,
        "sanity",
        &model,
        &args.model.model,
        args.scale,
        &record,
    )?;
    if args.json {
        print_json(&record);
        return Ok(ExitCode::SUCCESS);
    }
    outln!("{:<16}{:>10}{:>10}", "randomised", "spearman", "ssim");
    for s in &result.steps {
        outln!("{:<16}{:>10.4}{:>10.4}", s.stage, s.spearman, s.ssim);
    }
    if result.flagged {
        outln!(
            "FLAGGED: {}'s map does not change with the model (Spearman >= {} while the top half of the stages is randomised)",
            args.method,
            sanity::FLAG_SPEARMAN
        );
    } else {
        outln!("{}'s map changes as the model is randomised", args.method);
    }
    outln!("figure: {}", out.display());
    outln!("sidecar: {}", sidecar.display());
    Ok(ExitCode::SUCCESS)
}
