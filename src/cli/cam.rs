//! `convlens cam IMAGE|FOLDER [--class NAME|INDEX] [--method M] [--layer L] [--smooth S]
//! [--samples N] [--noise F] [--steps N] [--baseline B] [--window N] [--stride N] [--batch N]
//! [--seed N] [--alpha A] [--colormap C] [--scale S] [--out F.png] [--json]`.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use super::figure_io::{check_figure_out, check_out, default_out, export_folder};
use super::output::{errln, outln, print_json};
use super::{ModelArgs, Progress};
use crate::export::{self, CamRequest, Exported, FigureRequest};
use crate::viz::attribution::{AttributionOptions, Baseline, Completeness};
use crate::viz::cam::{CamMethod, CamScore, MethodKind, Smooth};
use crate::viz::colormap::Colormap;
use crate::{Error, Result};

/// Arguments of `convlens cam`.
#[derive(clap::Args, Debug)]
pub struct CamArgs {
    /// An image file, or a folder: one figure per image, with index.csv and index.json.
    pub image: PathBuf,
    /// The class, by name (case-insensitive) or index; default: the top-1 prediction.
    #[arg(long)]
    pub class: Option<String>,
    /// Layer CAMs: gradcam, gradcam++, layercam, scorecam, eigencam, hirescam, xgradcam,
    /// ablationcam; pixel attributions: saliency, smoothgrad, integrated-gradients, occlusion,
    /// guided-backprop, guided-gradcam, fullgrad.
    #[arg(long, default_value = "gradcam")]
    pub method: CamMethod,
    /// The layer; default: the model's default CAM layer (pixel methods do not use it).
    #[arg(long)]
    pub layer: Option<String>,
    /// Smoothing of a layer CAM: none, aug (test-time augmentation) or eigen (first
    /// principal component), as pytorch-grad-cam's aug_smooth / eigen_smooth.
    #[arg(long, default_value = "none")]
    pub smooth: Smooth,
    /// SmoothGrad: noisy samples averaged.
    #[arg(long, default_value_t = AttributionOptions::default().samples)]
    pub samples: usize,
    /// SmoothGrad: noise standard deviation as a fraction of the input's range.
    #[arg(long, default_value_t = AttributionOptions::default().noise)]
    pub noise: f32,
    /// Integrated Gradients: integration points (Gauss-Legendre).
    #[arg(long, default_value_t = AttributionOptions::default().steps)]
    pub steps: usize,
    /// Integrated Gradients: black, blurred or uniform.
    #[arg(long, default_value = "black")]
    pub baseline: Baseline,
    /// Integrated Gradients: the blurred baseline's Gaussian sigma in pixels.
    #[arg(long, default_value_t = AttributionOptions::default().blur_sigma)]
    pub blur_sigma: f32,
    /// Occlusion: the window's side in pixels.
    #[arg(long, default_value_t = AttributionOptions::default().window)]
    pub window: usize,
    /// Occlusion: the window's step in pixels.
    #[arg(long, default_value_t = AttributionOptions::default().stride)]
    pub stride: usize,
    /// Images per forward (AblationCAM, SmoothGrad, Integrated Gradients, occlusion).
    #[arg(long, default_value_t = AttributionOptions::default().batch)]
    pub batch: usize,
    /// The seed of SmoothGrad's noise and the uniform baseline.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Weight of the heatmap in the overlay, 0-1.
    #[arg(long, default_value_t = 0.4)]
    pub alpha: f32,
    /// viridis, magma, inferno, gray, turbo or jet.
    #[arg(long, default_value = "jet")]
    pub colormap: Colormap,
    /// The class score: the raw logit (default) or the softmax probability.
    #[arg(long)]
    pub prob_score: bool,
    /// Figure scale factor, 1-4.
    #[arg(long, default_value_t = 1)]
    pub scale: u32,
    /// The figure to write, .png or .jpg/.jpeg (a sidecar .json goes beside it); for a folder, the output folder.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Print JSON: the low-resolution map, the class, its probability and the figure's path.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub model: ModelArgs,
}

#[derive(serde::Serialize)]
struct CamJson {
    image: String,
    class: usize,
    class_name: String,
    prob: f32,
    method: String,
    /// `layer` or `pixel`.
    kind: MethodKind,
    layer: String,
    /// Rows of the map at the layer's resolution (after ReLU, before normalisation), or at
    /// the input's for a pixel method.
    lowres: Vec<Vec<f32>>,
    /// `[h, w]` of `lowres`.
    lowres_size: [usize; 2],
    /// Whether the map's sign means something (Integrated Gradients, occlusion).
    signed: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    smooth: Option<Smooth>,
    /// Integrated Gradients: `score_difference` (F(image) - F(baseline)) and `error` (the
    /// attributions' sum minus it).
    #[serde(skip_serializing_if = "Option::is_none")]
    completeness: Option<Completeness>,
    figure: String,
    sidecar: String,
}

fn to_json(image: &Path, e: &Exported, smooth: Smooth) -> Option<CamJson> {
    let cam = e.cam.as_ref()?;
    let (_, w) = cam.lowres_size;
    Some(CamJson {
        image: image.display().to_string(),
        class: cam.class,
        class_name: e.result["class_name"]
            .as_str()
            .unwrap_or_default()
            .to_string(),
        prob: cam.prob,
        method: cam.method.name().to_string(),
        kind: cam.method.kind(),
        layer: cam.layer.clone(),
        lowres: cam.lowres.chunks(w.max(1)).map(<[f32]>::to_vec).collect(),
        lowres_size: [cam.lowres_size.0, cam.lowres_size.1],
        signed: cam.signed,
        smooth: (smooth != Smooth::None).then_some(smooth),
        completeness: cam.completeness,
        figure: e.png.display().to_string(),
        sidecar: e.sidecar.display().to_string(),
    })
}

/// Computes the map, writes the figure and its sidecar, prints a summary (or JSON).
pub fn run(args: &CamArgs) -> Result<ExitCode> {
    export::check_scale(args.scale)?;
    if !(0.0..=1.0).contains(&args.alpha) {
        return Err(Error::Model(format!(
            "--alpha {} is outside 0..1",
            args.alpha
        )));
    }
    check_out(args.out.as_deref(), &args.image)?;
    let model = args.model.load()?;
    let layer = args
        .layer
        .clone()
        .unwrap_or_else(|| model.spec.manifest.default_cam_layer.clone());
    model.network.index_of(&layer)?;
    let class = args
        .class
        .as_deref()
        .map(|c| export::resolve_class(&model.spec.labels, c))
        .transpose()?;
    let attribution = AttributionOptions {
        samples: args.samples,
        noise: args.noise,
        steps: args.steps,
        baseline: args.baseline,
        blur_sigma: args.blur_sigma,
        window: args.window,
        stride: args.stride,
        batch: args.batch,
        seed: args.seed,
        normalization: None,
    };
    let make = |image: &Path| {
        FigureRequest::Cam(CamRequest {
            image: image.to_path_buf(),
            layer: layer.clone(),
            method: args.method,
            class,
            score: if args.prob_score {
                CamScore::Probability
            } else {
                CamScore::Logit
            },
            colormap: args.colormap,
            alpha: args.alpha,
            smooth: args.smooth,
            attribution: attribution.clone(),
        })
    };
    if args.image.is_dir() {
        let out_dir = args
            .out
            .clone()
            .unwrap_or_else(|| PathBuf::from("convlens-cam"));
        let mut found = Vec::new();
        let (_, failed) = export_folder(
            &model,
            &args.model.model,
            &args.image,
            &out_dir,
            args.scale,
            &["class", "class_name", "prob"],
            &make,
            &mut |image, res| match res {
                Ok(e) => {
                    if args.json {
                        found.extend(to_json(image, e, args.smooth));
                    } else {
                        outln!(
                            "{}: {} ({:.3}) -> {}",
                            image.display(),
                            e.result["class_name"].as_str().unwrap_or_default(),
                            e.result["prob"].as_f64().unwrap_or_default(),
                            e.png.display()
                        );
                    }
                }
                Err(err) => errln!("error: {err}"),
            },
        )?;
        if args.json {
            print_json(&found);
        } else {
            outln!("index: {}", out_dir.join("index.csv").display());
        }
        return Ok(if failed > 0 {
            ExitCode::FAILURE
        } else {
            ExitCode::SUCCESS
        });
    }
    let out = args
        .out
        .clone()
        .unwrap_or_else(|| default_out(Some(&args.image), &format!("{layer}-{}", args.method)));
    check_figure_out(&out, &[&args.image])?;
    let request = make(&args.image);
    let batched = args.method.is_batched() || args.smooth == Smooth::Aug;
    let mut bar = batched.then(|| Progress::new(0, args.method.name()));
    let exported = export::export(
        &model,
        &args.model.model,
        &request,
        args.scale,
        &out,
        &mut |done, total| {
            if let Some(b) = &mut bar {
                b.set_length(total as u64);
                b.set_position(done as u64);
            }
            true
        },
    )?;
    if let Some(b) = bar {
        b.finish();
    }
    if args.json {
        print_json(&to_json(&args.image, &exported, args.smooth));
    } else {
        outln!(
            "{} at {}: {} (class {}, p = {:.3})",
            args.method,
            layer,
            exported.result["class_name"].as_str().unwrap_or_default(),
            exported.result["class"],
            exported.result["prob"].as_f64().unwrap_or_default()
        );
        outln!("figure: {}", exported.png.display());
        outln!("sidecar: {}", exported.sidecar.display());
    }
    Ok(ExitCode::SUCCESS)
}
