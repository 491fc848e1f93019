//! The worker's side of looking at a folder through a model: one channel's top images (with
//! their patches and, when asked, the channel's pattern) and the information-distillation
//! probe, each with progress and Cancel.

use std::path::Path;

use image::RgbImage;

use super::{Engine, JobContext};
use crate::Result;
use crate::data::decode::load_rgb;
use crate::data::folder::{FolderOptions, ImageFolder};
use crate::data::listing::Listing;
use crate::export::examples_figure::tiles;
use crate::train::features::default_cache_root;
use crate::viz::examples::{Hit, Rank};
use crate::viz::examples_cache::{Source, examples_cached};
use crate::viz::filters::{FilterOptions, FilterProgress, filter_patterns_with};
use crate::viz::probe::{ProbeOptions, ProbeReport, probe};

/// Side of the patch and image pictures sent to the window, pixels.
pub const EXAMPLE_SIDE: u32 = 96;

/// One channel's top images, ready to draw.
#[derive(Debug)]
pub struct ChannelExamplesView {
    /// The model's key, the layer and the channel.
    pub model: String,
    pub layer: String,
    pub channel: usize,
    pub rank: Rank,
    /// Best first: the hit, its receptive-field patch and the model's view of the image.
    pub hits: Vec<(Hit, RgbImage, RgbImage)>,
    /// The channel's pattern by gradient ascent, when asked for.
    pub pattern: Option<RgbImage>,
    /// Images the layer's examples were computed over.
    pub scanned: usize,
    /// Whether they came from the cache.
    pub cached: bool,
}

/// The top `top` images of `channel` of `layer` over the folder `dir` (cached per model, layer
/// and folder), and the channel's pattern when `pattern`.
#[allow(clippy::too_many_arguments)]
pub fn channel_examples(
    engine: &mut Engine,
    ctx: &JobContext,
    key: &str,
    dir: &Path,
    layer: &str,
    channel: usize,
    rank: Rank,
    pattern: bool,
) -> Result<ChannelExamplesView> {
    let model = engine.model(key)?;
    let listing = Listing::of(dir)?;
    let root = default_cache_root();
    let (ex, source) = examples_cached(
        &model,
        layer,
        &listing,
        9,
        32,
        Some(&root),
        &mut |done, total| ctx.progress("examples: images", done, total),
        &ctx.cancel,
    )?;
    let top = ex.channels.get(channel).ok_or_else(|| {
        crate::Error::Model(format!(
            "layer `{layer}` has {} channels; there is no channel {channel}",
            ex.channels.len()
        ))
    })?;
    let mut hits = Vec::new();
    for hit in top.ranked(rank).iter().take(9) {
        ctx.cancel.check()?;
        let img = load_rgb(&listing.root.join(&hit.image))?;
        let (patch, view) = tiles(&model.spec.preprocess.apply(&img), hit, EXAMPLE_SIDE);
        hits.push((hit.clone(), patch, view));
    }
    let pattern = if pattern {
        let opts = FilterOptions::default();
        let steps = opts.ascent.steps;
        let found = filter_patterns_with(&model, layer, &[channel], &opts, &mut |p| {
            if let FilterProgress::Step { step, .. } = p {
                ctx.progress("examples: the channel's pattern", step, steps);
            }
            !ctx.cancel.is_cancelled()
        })?;
        found.into_iter().next().map(|p| p.image)
    } else {
        None
    };
    Ok(ChannelExamplesView {
        model: key.to_string(),
        layer: layer.to_string(),
        channel,
        rank,
        hits,
        pattern,
        scanned: ex.scanned,
        cached: source == Source::Cached,
    })
}

/// The probe of the model `key` over at most `max_images` of the labelled folder `dir`, with
/// its model key.
pub fn probe_folder(
    engine: &mut Engine,
    ctx: &JobContext,
    key: &str,
    dir: &Path,
    max_images: usize,
) -> Result<(String, ProbeReport)> {
    let model = engine.model(key)?;
    let folder = ImageFolder::scan(dir, &FolderOptions::default())?;
    let report = probe(
        &model,
        &folder,
        &ProbeOptions {
            max_images,
            ..ProbeOptions::default()
        },
        &mut |done, total| ctx.progress("probe: images", done, total),
        &ctx.cancel,
    )?;
    Ok((key.to_string(), report))
}
