//! `convlens activations IMAGE|FOLDER --layer L [--cols 16] [--colormap viridis]
//! [--shared-scale] [--scale 1] [--out F.png] [--profile]`.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use super::ModelArgs;
use super::figure_io::{check_figure_out, check_out, default_out, export_folder};
use super::output::{errln, outln};
use crate::Result;
use crate::export::{self, ActivationsRequest, FigureRequest};
use crate::viz::activations::{self, GridOptions};
use crate::viz::colormap::Colormap;

/// Arguments of `convlens activations`.
#[derive(clap::Args, Debug)]
pub struct ActivationsArgs {
    /// An image file, or a folder: one figure per image, with index.csv and index.json.
    pub image: PathBuf,
    /// The layer whose channels are shown (see `convlens info`).
    #[arg(long)]
    pub layer: String,
    /// Tiles per row.
    #[arg(long, default_value_t = 16)]
    pub cols: usize,
    /// viridis, magma, inferno, gray, turbo or jet.
    #[arg(long, default_value = "viridis")]
    pub colormap: Colormap,
    /// One scale for the whole layer instead of standardising each channel on its own.
    #[arg(long)]
    pub shared_scale: bool,
    /// Figure scale factor, 1-4.
    #[arg(long, default_value_t = 1)]
    pub scale: u32,
    /// The figure to write, .png or .jpg/.jpeg (a sidecar .json goes beside it); for a folder, the output folder.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Also print the sparsity of every spatial layer (blank channels and mean by depth).
    #[arg(long)]
    pub profile: bool,
    #[command(flatten)]
    pub model: ModelArgs,
}

/// Writes the activation grid and its sidecar; prints the layer's sparsity.
pub fn run(args: &ActivationsArgs) -> Result<ExitCode> {
    export::check_scale(args.scale)?;
    check_out(args.out.as_deref(), &args.image)?;
    let grid = GridOptions {
        cols: args.cols,
        gutter: 1,
        colormap: args.colormap,
        shared_scale: args.shared_scale,
    };
    grid.validate()?;
    let model = args.model.load()?;
    model.network.index_of(&args.layer)?;
    let make = |image: &Path| {
        FigureRequest::Activations(ActivationsRequest {
            image: image.to_path_buf(),
            layer: args.layer.clone(),
            grid: grid.clone(),
        })
    };
    if args.image.is_dir() {
        let out_dir = args
            .out
            .clone()
            .unwrap_or_else(|| PathBuf::from("convlens-activations"));
        let (_, failed) = export_folder(
            &model,
            &args.model.model,
            &args.image,
            &out_dir,
            args.scale,
            &["channels", "blank_fraction", "mean", "active_fraction"],
            &make,
            &mut |image, res| match res {
                Ok(e) => outln!("{}: {}", image.display(), summary(&e.result)),
                Err(err) => errln!("error: {err}"),
            },
        )?;
        outln!("index: {}", out_dir.join("index.csv").display());
        return Ok(if failed > 0 {
            ExitCode::FAILURE
        } else {
            ExitCode::SUCCESS
        });
    }
    let out = args
        .out
        .clone()
        .unwrap_or_else(|| default_out(Some(&args.image), &format!("{}-activations", args.layer)));
    check_figure_out(&out, &[&args.image])?;
    let exported = export::export(
        &model,
        &args.model.model,
        &make(&args.image),
        args.scale,
        &out,
        &mut |_, _| true,
    )?;
    outln!("{}: {}", args.layer, summary(&exported.result));
    outln!("figure: {}", exported.png.display());
    outln!("sidecar: {}", exported.sidecar.display());
    if args.profile {
        let input = model.spec.preprocess.load(&args.image, &model.device)?;
        outln!(
            "\n{:<12} {:>8} {:>10} {:>8}",
            "layer",
            "blank",
            "mean",
            "active"
        );
        for l in activations::sparsity_profile(&model.network, &input)? {
            outln!(
                "{:<12} {:>7.1}% {:>10.4} {:>7.1}%",
                l.layer,
                100.0 * l.blank_fraction,
                l.mean,
                100.0 * l.active_fraction
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn summary(r: &serde_json::Value) -> String {
    format!(
        "{} channels of {}x{}, blank {:.1}%, mean {:.4}, active {:.1}%",
        r["channels"],
        r["height"],
        r["width"],
        100.0 * r["blank_fraction"].as_f64().unwrap_or_default(),
        r["mean"].as_f64().unwrap_or_default(),
        100.0 * r["active_fraction"].as_f64().unwrap_or_default()
    )
}
