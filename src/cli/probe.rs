//! `convlens probe [FOLDER] [--out probe.png] [--json] [--model M] [--compare M2]
//! [--max-images N]`: class-probe accuracy, instance retrieval, input reconstruction and
//! sparsity by depth.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use super::ModelArgs;
use super::figure_io::check_figure_out;
use super::interrupt::{cancel_on_ctrl_c, or_interrupted};
use super::output::{errln, outln};
use super::progress::Progress;
use crate::Result;
use crate::cancel::CancelToken;
use crate::data::folder::{FolderOptions, ImageFolder};
use crate::export::folder_figure::write_folder_figure;
use crate::export::probe_figure::probe_figure;
use crate::viz::probe::{ProbeOptions, ProbeReport, probe};

/// Arguments of `convlens probe`.
#[derive(clap::Args, Debug)]
pub struct ProbeArgs {
    /// A labelled folder (one subfolder per class, or train/ validation/ test/); default the
    /// bundled fashion-mini.
    pub folder: Option<PathBuf>,
    /// The figure to write, .png or .jpg (a sidecar .json beside it; a taken name gets a
    /// number, nothing is overwritten).
    #[arg(long, default_value = "probe.png")]
    pub out: PathBuf,
    /// Print the numbers as JSON on stdout (else a table).
    #[arg(long)]
    pub json: bool,
    /// A second model drawn dashed in the same plot (e.g. the base of a trained model).
    #[arg(long)]
    pub compare: Option<String>,
    /// The most images probed; a larger folder is subsampled (seeded).
    #[arg(long, default_value_t = ProbeOptions::default().max_images)]
    pub max_images: usize,
    /// Images per forward pass (1-128; each goes through with its augmented copy).
    #[arg(long, default_value_t = ProbeOptions::default().batch)]
    pub batch: usize,
    /// Seed of the subsample, the augmentations and the probes.
    #[arg(long, default_value_t = ProbeOptions::default().seed)]
    pub seed: u64,
    /// Figure scale factor, 1-4.
    #[arg(long, default_value_t = 1)]
    pub scale: u32,
    #[command(flatten)]
    pub model: ModelArgs,
}

/// The most images per forward pass (twice as many go through: each with its augmented copy).
const MAX_BATCH: usize = 128;

/// The bundled labelled dataset.
pub fn bundled_dataset() -> PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("assets/datasets/fashion-mini")
}

fn table(name: &str, r: &ProbeReport) {
    outln!(
        "{name}: {} train / {} held-out images, majority baseline {:.3}",
        r.train_images,
        r.held_out_images,
        r.majority_baseline
    );
    outln!(
        "{:<12} {:>8} {:>8} {:>10} {:>9} {:>9}",
        "layer",
        "channels",
        "class",
        "instance",
        "recon R2",
        "sparsity"
    );
    for t in &r.taps {
        let recon = t
            .reconstruction_r2
            .map_or_else(|| "-".to_string(), |v| format!("{v:.3}"));
        outln!(
            "{:<12} {:>8} {:>8.3} {:>10.3} {:>9} {:>9.3}",
            t.layer,
            t.channels,
            t.class_accuracy,
            t.instance_top1,
            recon,
            t.sparsity
        );
    }
}

/// Probes the model (and the one to compare with), writes the figure and its sidecar; Ctrl-C
/// stops between batches (see [`super::interrupt`]).
pub fn run(args: &ProbeArgs) -> Result<ExitCode> {
    crate::export::check_scale(args.scale)?;
    crate::viz::check_range("--batch", args.batch, 1..=MAX_BATCH)?;
    let folder_path = args.folder.clone().unwrap_or_else(bundled_dataset);
    check_figure_out(&args.out, &[&folder_path])?;
    let cancel = cancel_on_ctrl_c();
    or_interrupted(run_probe(args, &folder_path, &cancel), None)
}

fn run_probe(args: &ProbeArgs, folder_path: &Path, cancel: &CancelToken) -> Result<ExitCode> {
    let folder = ImageFolder::scan(folder_path, &FolderOptions::default())?;
    let opts = ProbeOptions {
        max_images: args.max_images,
        batch: args.batch,
        seed: args.seed,
        ..ProbeOptions::default()
    };
    let mut sources = vec![args.model.model.clone()];
    sources.extend(args.compare.clone());
    // Every model is loaded before any probing: a bad --compare fails at once.
    let models = sources
        .iter()
        .map(|source| {
            ModelArgs {
                model: source.clone(),
                device: args.model.device,
            }
            .load()
        })
        .collect::<Result<Vec<_>>>()?;
    let mut reports = Vec::new();
    for (source, model) in sources.iter().zip(&models) {
        let mut bar = Progress::new(0, &format!("probe {source}"));
        let started = std::time::Instant::now();
        let report = probe(
            model,
            &folder,
            &opts,
            &mut |done, total| {
                bar.set_length(total as u64);
                bar.set_position(done as u64);
            },
            cancel,
        )?;
        bar.finish();
        errln!(
            "{source}: probed in {:.1} s",
            started.elapsed().as_secs_f64()
        );
        reports.push((model.spec.manifest.name.clone(), report));
    }
    let Some(model) = models.first() else {
        return Ok(ExitCode::FAILURE);
    };
    // Files that could not be read, each once (every model reads the same images).
    let skipped: Vec<String> = folder
        .skipped
        .iter()
        .map(|s| format!("{}: {}", s.path.display(), s.reason))
        .chain(
            reports
                .first()
                .into_iter()
                .flat_map(|(_, r)| r.skipped.clone()),
        )
        .collect();
    for s in &skipped {
        errln!("skipped {s}");
    }
    let shown: Vec<(String, &ProbeReport)> = reports.iter().map(|(n, r)| (n.clone(), r)).collect();
    let img = probe_figure(
        &shown,
        "What each layer knows: the class, the instance, the input itself, and how sparse it is",
        &format!(
            "{} · {} · linear probe on pooled activations; own altered view among all, 4x4-pooled, by cosine; linear decoder of the 56x56 input, held-out R^2",
            reports
                .iter()
                .map(|(n, _)| n.as_str())
                .collect::<Vec<_>>()
                .join(" vs "),
            folder_path.display()
        ),
        args.scale,
    );
    let result = serde_json::json!({
        "models": reports.iter().zip(&sources).map(|((name, r), source)| serde_json::json!({
            "name": name, "source": source, "probe": r,
        })).collect::<Vec<_>>(),
    });
    let written = write_folder_figure(
        &img,
        &args.out,
        model,
        &args.model.model,
        "probe",
        folder_path,
        serde_json::to_value(&opts).unwrap_or_default(),
        args.scale,
        result.clone(),
    )?;
    if args.json {
        outln!(
            "{}",
            serde_json::to_string_pretty(&result).unwrap_or_default()
        );
        errln!("figure: {}", written.png.display());
    } else {
        for (name, r) in &reports {
            table(name, r);
        }
        outln!("figure: {}", written.png.display());
        outln!("sidecar: {}", written.sidecar.display());
    }
    // 1 when files were skipped (listed above), as the other commands do.
    Ok(if skipped.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
