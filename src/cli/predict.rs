//! `convlens predict IMAGE... [--model M] [--top K] [--json] [--device D]`.

use std::path::PathBuf;
use std::process::ExitCode;

use super::output::{errln, outln, print_json};
use super::{ModelArgs, Progress};
use crate::Result;
use crate::predict::{ClassScore, top_k};

/// Images decoded and classified together.
const BATCH: usize = 16;

/// Arguments of `convlens predict`.
#[derive(clap::Args, Debug)]
pub struct PredictArgs {
    /// Image files (PNG, JPEG, GIF, BMP, TIFF, WebP).
    #[arg(required = true)]
    pub images: Vec<PathBuf>,
    /// How many classes to show per image.
    #[arg(long, default_value_t = 5)]
    pub top: usize,
    /// Print JSON: `[{"image": ..., "top": [{"index", "class", "prob"}, ...]}]`.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub model: ModelArgs,
}

#[derive(serde::Serialize)]
struct ImagePrediction {
    image: String,
    top: Vec<ClassScore>,
}

/// Classifies every readable image; unreadable ones get a line on stderr and exit code 1.
pub fn run(args: &PredictArgs) -> Result<ExitCode> {
    crate::predict::check_top(args.top)?;
    let model = args.model.load()?;
    let mut bar = Progress::new(args.images.len() as u64, "predict");
    let mut results = Vec::new();
    let mut failed = 0usize;
    for chunk in args.images.chunks(BATCH) {
        let loaded = model.load_batch(chunk)?;
        for (path, err) in &loaded.failures {
            bar.suspend(|| errln!("error: {}: {}", path.display(), error_reason(path, err)));
            failed += 1;
        }
        if loaded.batch.is_some() {
            let probs = model.batch_probabilities(&loaded)?;
            for (path, p) in loaded.paths.iter().zip(probs) {
                let prediction = ImagePrediction {
                    image: path.display().to_string(),
                    top: top_k(&p, args.top, &model.spec.labels),
                };
                if !args.json {
                    bar.suspend(|| print_text(&prediction));
                }
                results.push(prediction);
            }
        }
        bar.inc(chunk.len() as u64);
    }
    bar.finish();
    if args.json {
        print_json(&results);
    }
    Ok(if failed > 0 {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

/// The error without a repeated path prefix (the caller prints the path first).
fn error_reason(path: &std::path::Path, err: &crate::Error) -> String {
    let text = err.to_string();
    let prefix = format!("{}: ", path.display());
    let reason = text.strip_prefix(&prefix).unwrap_or(&text);
    // Decoder messages may span lines; one bad file gets one line.
    reason.split_whitespace().collect::<Vec<_>>().join(" ")
}

fn print_text(p: &ImagePrediction) {
    outln!("{}", p.image);
    for (rank, c) in p.top.iter().enumerate() {
        outln!(
            "  {:>2}. {:<32} {:>6.3}  (class {})",
            rank + 1,
            c.class,
            c.prob,
            c.index
        );
    }
}
