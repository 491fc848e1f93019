//! `convlens examples FOLDER --layer L [--channels 0..16] [--top 9] [--rank max|mean]
//! [--out F.png] [--json] [--no-cache]`: the images of a folder that excite each channel most.

use std::path::PathBuf;
use std::process::ExitCode;

use super::ModelArgs;
use super::figure_io::{check_figure_out, default_out};
use super::filters::parse_filters;
use super::interrupt::{cancel_on_ctrl_c, or_interrupted};
use super::output::{errln, outln};
use super::progress::Progress;
use crate::cancel::CancelToken;
use crate::data::listing::Listing;
use crate::export::examples_figure::{ExamplesFigure, examples_figure};
use crate::export::folder_figure::write_folder_figure;
use crate::train::features::default_cache_root;
use crate::viz::examples::{LayerExamples, Rank};
use crate::viz::examples_cache::{Source, examples_cached};
use crate::{Error, Result};

/// Arguments of `convlens examples`.
#[derive(clap::Args, Debug)]
pub struct ExamplesArgs {
    /// A folder of images: one subfolder per class (or train/ validation/ test/), or images
    /// at its top level (unlabelled).
    pub folder: PathBuf,
    /// The layer whose channels are ranked (a layer with a spatial output; see `convlens info`).
    #[arg(long)]
    pub layer: String,
    /// Which channels, one row each: `A..B` (B excluded), an index, or a comma list.
    #[arg(long, default_value = "0..16")]
    pub channels: String,
    /// Images per channel (1-64).
    #[arg(long, default_value_t = 9)]
    pub top: usize,
    /// Rank by the channel's maximum activation in an image, or by its mean.
    #[arg(long, default_value = "max")]
    pub rank: Rank,
    /// Images per forward pass (1-256).
    #[arg(long, default_value_t = 32)]
    pub batch: usize,
    /// Figure scale factor, 1-4.
    #[arg(long, default_value_t = 1)]
    pub scale: u32,
    /// The figure to write, .png or .jpg (a sidecar .json beside it; a taken name gets a
    /// number, nothing is overwritten).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Also print the shown channels' examples as JSON on stdout.
    #[arg(long)]
    pub json: bool,
    /// Neither read nor write the cache (recompute).
    #[arg(long)]
    pub no_cache: bool,
    #[command(flatten)]
    pub model: ModelArgs,
}

/// The shown channels' examples as JSON: per channel, the hits of the ranking, best first.
pub fn examples_json(
    ex: &LayerExamples,
    channels: &[usize],
    rank: Rank,
    top: usize,
) -> serde_json::Value {
    serde_json::json!({
        "layer": ex.layer,
        "rank": rank.name(),
        "top": top,
        "map": ex.map,
        "input_size": ex.input_size,
        "receptive_field": ex.field,
        "scanned": ex.scanned,
        "skipped": ex.skipped,
        "channels": channels.iter().map(|&c| serde_json::json!({
            "channel": c,
            "hits": ex.channels.get(c).map_or(&[][..], |t| t.ranked(rank)).iter().take(top).collect::<Vec<_>>(),
        })).collect::<Vec<_>>(),
    })
}

/// Computes (or reads from the cache) the examples, writes the figure and its sidecar; Ctrl-C
/// stops between batches (see [`super::interrupt`]).
pub fn run(args: &ExamplesArgs) -> Result<ExitCode> {
    crate::export::check_scale(args.scale)?;
    crate::viz::check_range("--top", args.top, 1..=crate::viz::examples::MAX_TOP)?;
    crate::viz::check_range("--batch", args.batch, 1..=crate::viz::examples::MAX_BATCH)?;
    let out = args
        .out
        .clone()
        .unwrap_or_else(|| default_out(None, &format!("{}-examples", args.layer)));
    check_figure_out(&out, &[&args.folder])?;
    let cancel = cancel_on_ctrl_c();
    or_interrupted(examples(args, &out, &cancel), None)
}

fn examples(args: &ExamplesArgs, out: &std::path::Path, cancel: &CancelToken) -> Result<ExitCode> {
    let model = args.model.load()?;
    let size = model.spec.preprocess.input_size() as usize;
    let count = model
        .network
        .layers(size)
        .into_iter()
        .find(|l| l.id == args.layer)
        .map(|l| l.output_shape[0]);
    let Some(count) = count else {
        model.network.index_of(&args.layer)?;
        return Err(Error::Model(format!("unknown layer `{}`", args.layer)));
    };
    let channels = parse_filters(&args.channels, count)
        .map_err(|e| Error::Model(format!("--channels: {}", e.replace("filter", "channel"))))?;
    let listing = Listing::of(&args.folder)?;
    let cache_root = (!args.no_cache).then(default_cache_root);
    let mut bar = Progress::new(listing.images.len() as u64, "images");
    let started = std::time::Instant::now();
    let (ex, source) = examples_cached(
        &model,
        &args.layer,
        &listing,
        args.top,
        args.batch,
        cache_root.as_deref(),
        &mut |done, _| bar.set_position(done as u64),
        cancel,
    )?;
    bar.finish();
    match source {
        Source::Cached => errln!("from the cache (no image decoded)"),
        Source::Computed => errln!(
            "{} images through `{}` in {:.1} s",
            ex.scanned,
            args.layer,
            started.elapsed().as_secs_f64()
        ),
        Source::RecomputedCorrupt => {
            errln!("the cached examples had changed on disk: computed anew");
        }
    }
    for s in &listing.skipped {
        errln!("skipped {}: {}", s.path.display(), s.reason);
    }
    for s in &ex.skipped {
        errln!("skipped {s}");
    }
    let name = &model.spec.manifest.name;
    let fig = ExamplesFigure {
        examples: &ex,
        channels: &channels,
        rank: args.rank,
        top: args.top,
        folder: &listing.root,
        preprocess: &model.spec.preprocess,
        title: format!(
            "{} · top {} images per channel by {} activation",
            args.layer,
            args.top,
            args.rank.name()
        ),
        subtitle: format!(
            "{name} · {} · {} images · receptive field {} px, stride {}",
            listing.root.display(),
            ex.scanned,
            2 * ex.field.radius + 1,
            ex.field.stride
        ),
    };
    let img = examples_figure(&fig, args.scale)?;
    let result = examples_json(&ex, &channels, args.rank, args.top);
    let request = serde_json::json!({
        "layer": args.layer, "channels": channels, "top": args.top, "rank": args.rank.name(),
    });
    let written = write_folder_figure(
        &img,
        out,
        &model,
        &args.model.model,
        "examples",
        &args.folder,
        request,
        args.scale,
        result.clone(),
    )?;
    if args.json {
        outln!(
            "{}",
            serde_json::to_string_pretty(&result).unwrap_or_default()
        );
    } else {
        outln!("figure: {}", written.png.display());
        outln!("sidecar: {}", written.sidecar.display());
    }
    if args.json {
        errln!("figure: {}", written.png.display());
    }
    // 1 when files were skipped (listed above), as the other commands do.
    Ok(if listing.skipped.is_empty() && ex.skipped.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
