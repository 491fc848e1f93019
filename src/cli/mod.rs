//! The headless command line: one file per subcommand, thin shells over the library.

mod evaluate;
mod info;
mod predict;
mod train;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::device::DeviceChoice;

/// convlens: transfer learning and a look inside convnets.
#[derive(Parser, Debug)]
#[command(name = "convlens", version, about, long_about = None)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
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
    /// Open the desktop app (the default when no subcommand is given).
    #[cfg(feature = "gui")]
    Gui(GuiArgs),
}

/// Options shared by every subcommand that loads a model.
#[derive(clap::Args, Debug, Clone)]
pub struct ModelArgs {
    /// A model name in the models folder, a manifest, a weights file or a model folder.
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
pub fn run(cli: Cli) -> ExitCode {
    let result = match cli.command {
        Some(Command::Predict(args)) => predict::run(&args),
        Some(Command::Info(args)) => info::run(&args),
        Some(Command::Train(args)) => train::run(&args),
        Some(Command::Evaluate(args)) => evaluate::run(&args),
        #[cfg(feature = "gui")]
        Some(Command::Gui(args)) => crate::gui::run(&args.model).map(|()| ExitCode::SUCCESS),
        #[cfg(feature = "gui")]
        None => crate::gui::run(crate::zoo::DEFAULT_MODEL).map(|()| ExitCode::SUCCESS),
        #[cfg(not(feature = "gui"))]
        None => {
            use clap::CommandFactory;
            let _ = Cli::command().print_help();
            eprintln!("\n(this build has no desktop app: it was built without the `gui` feature)");
            Ok(ExitCode::from(2))
        }
    };
    result.unwrap_or_else(|e| {
        eprintln!("error: {e}");
        ExitCode::FAILURE
    })
}

/// A progress bar on stderr (drawn only when stderr is a terminal).
pub fn progress_bar(len: u64, what: &str) -> indicatif::ProgressBar {
    let bar = indicatif::ProgressBar::new(len);
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{prefix} [{bar:30}] {pos}/{len} {per_sec} eta {eta}",
        )
        .expect("valid template")
        .progress_chars("=> "),
    );
    bar.set_prefix(what.to_string());
    bar
}
