//! The headless command line: one file per subcommand, thin shells over the library.

mod activations;
mod cam;
mod evaluate;
mod examples;
mod export_model;
mod faithfulness;
mod figure_io;
mod filters;
mod info;
mod insight;
mod interrupt;
mod output;
mod predict;
mod probe;
mod progress;
mod reproduce;
mod runs;
mod sanity;
mod train;

pub use progress::Progress;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::device::DeviceChoice;

/// convlens: transfer learning and a look inside convnets.
#[derive(Parser, Debug)]
#[command(name = "convlens", version, about, long_about = None)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
    /// The most pixels (width x height) an image may have to be decoded: larger ones are
    /// refused before any memory is allocated. Raise it for trusted, very large images.
    #[arg(long, value_name = "N", global = true, default_value_t = crate::data::decode::DEFAULT_MAX_PIXELS)]
    pub max_pixels: u64,
    /// Render the window once everything has loaded, write it to this PNG and exit.
    #[cfg(feature = "gui")]
    #[arg(long, value_name = "OUT.png", global = true)]
    pub screenshot: Option<std::path::PathBuf>,
    /// The tab to open on (Model, Data, Train, Activations, Filters, Heatmap, Predict).
    #[cfg(feature = "gui")]
    #[arg(long, global = true)]
    pub tab: Option<String>,
    /// Start the tab's main job once the model and data are in (train the bundled dataset,
    /// compute the filters, predict the bundled photos); `--screenshot` waits for it.
    #[cfg(feature = "gui")]
    #[arg(long, global = true)]
    pub run: bool,
    /// The window's size, WIDTHxHEIGHT (default 1280x800). Not global: `filters` and `train`
    /// have a `--size` of their own.
    #[cfg(feature = "gui")]
    #[arg(long, value_name = "WxH", value_parser = parse_size)]
    pub size: Option<[f32; 2]>,
}

/// Parses a window size like `1280x800` (each side 200 to 8192).
#[cfg(feature = "gui")]
fn parse_size(text: &str) -> std::result::Result<[f32; 2], String> {
    let bad = || format!("`{text}` is not a window size: use WIDTHxHEIGHT, e.g. 1280x800");
    let (w, h) = text.split_once(['x', 'X']).ok_or_else(bad)?;
    let side = |v: &str| -> std::result::Result<f32, String> {
        match v.trim().parse::<u32>() {
            Ok(n) if (200..=8192).contains(&n) => Ok(n as f32),
            Ok(n) => Err(format!(
                "window side {n} is out of range: use 200 to 8192 pixels"
            )),
            Err(_) => Err(bad()),
        }
    };
    Ok([side(w)?, side(h)?])
}

/// The subcommands; none opens the desktop app.
#[derive(Subcommand, Debug)]
pub enum Command {
    /// Classify images with a model (ImageNet's 1000 classes for the bundled one).
    Predict(predict::PredictArgs),
    /// Print a model's layer table (output shapes, parameters, FLOPs).
    Info(info::InfoArgs),
    /// Train a classifier on an image folder (one subfolder per class).
    Train(train::TrainArgs),
    /// Evaluate a trained model on a labelled image folder.
    Evaluate(evaluate::EvaluateArgs),
    /// The training runs of the workspace: list, show, rename, delete.
    Runs(runs::RunsArgs),
    /// Every channel of a layer's output for an image, as a grid figure (PNG + JSON sidecar).
    Activations(activations::ActivationsArgs),
    /// The pattern each filter of a layer responds to, by gradient ascent (PNG + sidecar).
    Filters(filters::FiltersArgs),
    /// Where in an image a class is found: a class-activation map figure (PNG + sidecar).
    Cam(cam::CamArgs),
    /// Render a figure again from its JSON sidecar (same PNG, byte for byte).
    Reproduce(reproduce::ReproduceArgs),
    /// Export a model to ONNX or PyTorch, verified by reading it back.
    Export(export_model::ExportArgs),
    /// The images of a folder that excite each channel of a layer most (figure + sidecar).
    Examples(examples::ExamplesArgs),
    /// What each layer knows about the class and the instance, by depth (figure + sidecar).
    Probe(probe::ProbeArgs),
    /// A map of a labelled folder: every image's pooled features projected to 2-D (PCA or
    /// t-SNE), as a figure and a JSON of every point.
    Embed(insight::EmbedArgs),
    /// Images whose label looks wrong: out-of-fold probabilities of the given label, ranked.
    Suspects(insight::SuspectsArgs),
    /// Whether heatmaps are faithful: ROAD, confidence change, deletion/insertion, each beside
    /// a random map (one image: a table; a folder: CSV + summary figure).
    Faithfulness(faithfulness::FaithfulnessArgs),
    /// The model-randomisation sanity check of a heatmap method (figure + sidecar).
    Sanity(sanity::SanityArgs),
    /// Open the desktop app (the default when no subcommand is given).
    #[cfg(feature = "gui")]
    Gui(GuiArgs),
}

/// Options shared by every subcommand that loads a model.
#[derive(clap::Args, Debug, Clone)]
pub struct ModelArgs {
    /// A model name in the models folder, a manifest, a weights file, a model folder or the
    /// name of a training run (`convlens runs list`).
    #[arg(long, default_value = crate::zoo::DEFAULT_MODEL)]
    pub model: String,
    /// cpu, cuda[:N], metal[:N] or auto.
    #[arg(long, default_value = "cpu")]
    pub device: DeviceChoice,
}

impl ModelArgs {
    /// Resolves, loads and audits the model on the chosen device.
    pub fn load(&self) -> crate::Result<crate::zoo::Model> {
        let device = self.device.open()?;
        crate::zoo::resolve(&self.model)?.load(&device)
    }
}

/// Options of the desktop app.
#[cfg(feature = "gui")]
#[derive(clap::Args, Debug, Clone)]
pub struct GuiArgs {
    /// The model to open.
    #[arg(long, default_value = crate::zoo::DEFAULT_MODEL)]
    pub model: String,
}

/// Runs a parsed command line and returns the process exit code.
pub fn run(mut cli: Cli) -> ExitCode {
    match crate::data::decode::DecodeLimits::new(cli.max_pixels) {
        Ok(limits) => crate::data::decode::set_process_limits(limits),
        Err(e) => {
            output::errln!("error: {e}");
            return ExitCode::FAILURE;
        }
    }
    let result = match cli.command.take() {
        Some(Command::Predict(args)) => predict::run(&args),
        Some(Command::Info(args)) => info::run(&args),
        Some(Command::Train(args)) => train::run(&args),
        Some(Command::Evaluate(args)) => evaluate::run(&args),
        Some(Command::Runs(args)) => runs::run(&args),
        Some(Command::Activations(args)) => activations::run(&args),
        Some(Command::Filters(args)) => filters::run(&args),
        Some(Command::Cam(args)) => cam::run(&args),
        Some(Command::Reproduce(args)) => reproduce::run(&args),
        Some(Command::Export(args)) => export_model::run(&args),
        Some(Command::Examples(args)) => examples::run(&args),
        Some(Command::Probe(args)) => probe::run(&args),
        Some(Command::Embed(args)) => insight::run_embed(&args),
        Some(Command::Suspects(args)) => insight::run_suspects(&args),
        Some(Command::Faithfulness(args)) => faithfulness::run(&args),
        Some(Command::Sanity(args)) => sanity::run(&args),
        #[cfg(feature = "gui")]
        Some(Command::Gui(args)) => open_gui(Some(args.model), &cli),
        #[cfg(feature = "gui")]
        None => open_gui(None, &cli),
        #[cfg(not(feature = "gui"))]
        None => {
            use clap::CommandFactory;
            output::out!("{}", Cli::command().render_help());
            output::errln!(
                "\n(this build has no desktop app: it was built without the `gui` feature)"
            );
            Ok(ExitCode::from(2))
        }
    };
    result.unwrap_or_else(|e| {
        output::errln!("error: {e}");
        ExitCode::FAILURE
    })
}

/// Opens the desktop app, or renders it once to a PNG with `--screenshot`.
#[cfg(feature = "gui")]
fn open_gui(model: Option<String>, cli: &Cli) -> crate::Result<ExitCode> {
    let screenshot = cli.screenshot.clone();
    let tab = match &cli.tab {
        Some(name) => Some(crate::gui::Tab::from_name(name).ok_or_else(|| {
            crate::Error::Model(format!(
                "unknown tab `{name}`; use one of {}",
                crate::gui::Tab::ALL.map(|t| t.title()).join(", ")
            ))
        })?),
        None => None,
    };
    let options = crate::gui::AppOptions {
        model,
        // A screenshot shows the defaults, not whatever the user last looked at.
        settings_path: if screenshot.is_some() {
            None
        } else {
            crate::gui::settings::Settings::default_path()
        },
        tab,
        workspace: None,
        run: cli.run,
        window: cli.size,
    };
    match screenshot {
        Some(out) => crate::gui::screenshot(options, out)?,
        None => crate::gui::run(options)?,
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(all(test, feature = "gui"))]
mod tests {
    use clap::Parser;

    use super::{Cli, Command, parse_size};

    #[test]
    fn the_window_size_leaves_the_subcommands_own_size_alone() {
        let cli =
            Cli::try_parse_from(["convlens", "--size", "1024x700", "--tab", "filters"]).unwrap();
        assert_eq!(cli.size, Some([1024.0, 700.0]));
        for args in [
            &["convlens", "filters", "--layer", "blocks.4", "--size", "64"][..],
            &[
                "convlens", "train", "data", "--mode", "scratch", "--size", "96",
            ],
        ] {
            let cli = Cli::try_parse_from(args).unwrap();
            assert!(
                matches!(cli.command, Some(Command::Filters(_) | Command::Train(_))),
                "{args:?}"
            );
        }
    }

    #[test]
    fn a_window_size_is_width_x_height_within_bounds() {
        assert_eq!(parse_size("1280x800"), Ok([1280.0, 800.0]));
        assert_eq!(parse_size("1024X700"), Ok([1024.0, 700.0]));
        let err = parse_size("1280").unwrap_err();
        assert!(
            err.contains("`1280`") && err.contains("WIDTHxHEIGHT"),
            "{err}"
        );
        let err = parse_size("100x800").unwrap_err();
        assert!(err.contains("100") && err.contains("200 to 8192"), "{err}");
        assert!(parse_size("axb").is_err());
    }
}
