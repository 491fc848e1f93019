//! `convlens filters --layer L [--filters 0..64] [--method chollet|lucid] [--steps N] [--size PX]
//! [--seed S] [--cols 8] [--batch 8] [--scale 1] [--out F.png]`.

use std::path::PathBuf;
use std::process::ExitCode;

use super::figure_io::{check_figure_out, default_out};
use super::output::outln;
use super::{ModelArgs, Progress};
use crate::export::{self, FigureRequest, FiltersRequest};
use crate::viz::filters::{self, FilterMethod, FilterOptions};
use crate::{Error, Result};

/// Arguments of `convlens filters`.
#[derive(clap::Args, Debug)]
pub struct FiltersArgs {
    /// The layer whose filters are visualised (see `convlens info`).
    #[arg(long)]
    pub layer: String,
    /// Which filters: a range `A..B` (B excluded), an index, or a comma list; default the
    /// first 64 (fewer if the layer has fewer).
    #[arg(long)]
    pub filters: Option<String>,
    /// chollet (gradient ascent on the pixels) or lucid (Fourier image, decorrelated colours,
    /// random jitter/scale/rotation, Adam: the textures of Olah et al.).
    #[arg(long, default_value = "chollet")]
    pub method: FilterMethod,
    /// Gradient steps (default 30 for chollet, 256 for lucid).
    #[arg(long)]
    pub steps: Option<usize>,
    /// Side of the input image, pixels.
    #[arg(long, default_value_t = 128)]
    pub size: usize,
    /// Seed of the start images (same seed, same picture).
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Tiles per row.
    #[arg(long, default_value_t = 8)]
    pub cols: usize,
    /// Filters ascended together per forward/backward pass.
    #[arg(long, default_value_t = 8)]
    pub batch: usize,
    /// Figure scale factor, 1-4.
    #[arg(long, default_value_t = 1)]
    pub scale: u32,
    /// The figure to write, .png or .jpg/.jpeg (a sidecar .json goes beside it).
    #[arg(long)]
    pub out: Option<PathBuf>,
    #[command(flatten)]
    pub model: ModelArgs,
}

/// Parses `A..B`, `A..=B`, `N` or `a,b,c` against a layer of `count` filters.
pub fn parse_filters(spec: &str, count: usize) -> std::result::Result<Vec<usize>, String> {
    let spec = spec.trim();
    let num = |s: &str| {
        s.trim()
            .parse::<usize>()
            .map_err(|_| format!("`{s}` is not a filter index (use A..B, N or a,b,c)"))
    };
    let list: Vec<usize> = if let Some((a, b)) = spec.split_once("..") {
        let start = if a.trim().is_empty() { 0 } else { num(a)? };
        let end = match b.strip_prefix('=') {
            Some(b) => num(b)?.saturating_add(1),
            None if b.trim().is_empty() => count,
            None => num(b)?,
        };
        // Checked before the list is made: `0..99999999999` must not allocate it.
        if end > count {
            return Err(format!(
                "the layer has {count} filters (0..{count}); there is no filter {}",
                end - 1
            ));
        }
        (start..end).collect()
    } else {
        spec.split(',')
            .map(num)
            .collect::<std::result::Result<_, _>>()?
    };
    if list.is_empty() {
        return Err(format!("`{spec}` selects no filter"));
    }
    if let Some(bad) = list.iter().find(|&&f| f >= count) {
        return Err(format!(
            "the layer has {count} filters (0..{count}); there is no filter {bad}"
        ));
    }
    Ok(list)
}

/// Computes the filter patterns (progress bar per tile), writes the figure and its sidecar.
pub fn run(args: &FiltersArgs) -> Result<ExitCode> {
    export::check_scale(args.scale)?;
    let mut options = FilterOptions::for_method(args.method, args.size);
    options.ascent.steps = args.steps.unwrap_or(args.method.default_steps());
    options.seed = args.seed;
    options.batch = args.batch;
    options.validate()?;
    if let Some(out) = &args.out {
        check_figure_out(out, &[])?;
    }
    let model = args.model.load()?;
    let count = filters::filter_count(&model, &args.layer)?;
    let list = match &args.filters {
        Some(s) => parse_filters(s, count).map_err(Error::Model)?,
        None => (0..count.min(64)).collect(),
    };
    let request = FigureRequest::Filters(FiltersRequest {
        layer: args.layer.clone(),
        filters: list.clone(),
        cols: args.cols,
        options,
    });
    request.validate(args.scale)?;
    let out = args
        .out
        .clone()
        .unwrap_or_else(|| default_out(None, &format!("{}-filters", args.layer)));
    check_figure_out(&out, &[])?;
    let mut bar = Progress::new(list.len() as u64, "filters");
    let started = std::time::Instant::now();
    let exported = export::export(
        &model,
        &args.model.model,
        &request,
        args.scale,
        &out,
        &mut |done, _| {
            bar.set_position(done as u64);
            true
        },
    )?;
    bar.finish();
    outln!(
        "{} filters of {} in {:.1} s",
        list.len(),
        args.layer,
        started.elapsed().as_secs_f64()
    );
    outln!("figure: {}", exported.png.display());
    outln!("sidecar: {}", exported.sidecar.display());
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filter_lists_parse() {
        assert_eq!(parse_filters("0..4", 10).unwrap(), vec![0, 1, 2, 3]);
        assert_eq!(parse_filters("2..=3", 10).unwrap(), vec![2, 3]);
        assert_eq!(parse_filters("8..", 10).unwrap(), vec![8, 9]);
        assert_eq!(parse_filters("5", 10).unwrap(), vec![5]);
        assert_eq!(parse_filters("1, 3,7", 10).unwrap(), vec![1, 3, 7]);
        assert!(
            parse_filters("0..64", 40)
                .unwrap_err()
                .contains("40 filters")
        );
        assert!(parse_filters("x", 40).is_err());
        assert!(parse_filters("3..3", 40).is_err());
        // A huge range is refused before a list of its length is made (it would not fit).
        let e = parse_filters("0..18446744073709551615", 40).unwrap_err();
        assert!(
            e.contains("40 filters") && e.contains("18446744073709551614"),
            "{e}"
        );
        let e = parse_filters("0..=18446744073709551615", 40).unwrap_err();
        assert!(e.contains("40 filters"), "{e}");
        assert!(
            parse_filters("5..2", 40)
                .unwrap_err()
                .contains("`5..2` selects no filter")
        );
    }
}
