//! `convlens runs list|show|rename|delete`: the training runs of the workspace (each a folder
//! `convlens train` made; its name works as `--model NAME`).

use std::process::ExitCode;

use super::evaluate::print_evaluation;
use super::output::{outln, print_json};
use crate::Result;
use crate::workspace::{RunDetails, RunSummary, Workspace};

/// Arguments of `convlens runs`.
#[derive(clap::Args, Debug)]
pub struct RunsArgs {
    #[command(subcommand)]
    pub action: RunsAction,
}

/// What to do with the runs.
#[derive(clap::Subcommand, Debug)]
pub enum RunsAction {
    /// Every run, newest first: name, mode, dataset, best validation accuracy, start time.
    List {
        /// Print JSON: one object per run (name, path, created, mode, dataset,
        /// best_val_accuracy, epochs, problem).
        #[arg(long)]
        json: bool,
    },
    /// One run: its model, epochs (phases, the kept epoch) and evaluation.
    Show {
        /// The run's folder name.
        name: String,
        /// Print JSON: summary, record, manifest, history, evaluation.
        #[arg(long)]
        json: bool,
    },
    /// Renames a run's folder (or, with --display, only the name shown for it).
    Rename {
        /// The run's folder name.
        name: String,
        /// The new folder name (or display name; empty clears it).
        new_name: String,
        /// Set the display name; the folder keeps its name.
        #[arg(long)]
        display: bool,
    },
    /// Deletes a run's folder; anything that is not a run folder is refused.
    Delete {
        /// The run's folder name.
        name: String,
    },
}

/// Runs the action on the user's workspace.
pub fn run(args: &RunsArgs) -> Result<ExitCode> {
    let ws = Workspace::open_default()?;
    match &args.action {
        RunsAction::List { json } => list(&ws, *json)?,
        RunsAction::Show { name, json } => {
            let details = ws.show(name)?;
            if *json {
                print_json(&details);
            } else {
                show(&details);
            }
        }
        RunsAction::Rename {
            name,
            new_name,
            display: false,
        } => {
            let to = ws.rename(name, new_name)?;
            outln!("renamed {name} to {}", to.display());
        }
        RunsAction::Rename {
            name,
            new_name,
            display: true,
        } => {
            ws.set_display_name(name, Some(new_name))?;
            outln!("{name} is shown as `{}`", new_name.trim());
        }
        RunsAction::Delete { name } => {
            let dir = ws.find(name)?;
            ws.delete(name)?;
            outln!("deleted {}", dir.display());
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `2026-11-29T22:10:05Z` -> `2026-11-29 22:10`.
fn minutes(created: &str) -> String {
    created.get(..16).unwrap_or(created).replacen('T', " ", 1)
}

fn accuracy(run: &RunSummary) -> String {
    run.best_val_accuracy
        .map(|a| format!("{a:.3}"))
        .unwrap_or_else(|| "-".into())
}

fn list(ws: &Workspace, json: bool) -> Result<()> {
    let runs = ws.list()?;
    if json {
        print_json(&runs);
        return Ok(());
    }
    if runs.is_empty() {
        outln!(
            "no runs yet in {} (`convlens train DATA_DIR` makes one)",
            ws.runs_dir().display()
        );
        return Ok(());
    }
    let plural = if runs.len() == 1 { "" } else { "s" };
    outln!("{} run{plural} in {}", runs.len(), ws.runs_dir().display());
    let name_width = runs.iter().map(|r| r.name.len()).max().unwrap_or(4).max(4);
    let data_width = runs
        .iter()
        .filter_map(|r| r.dataset.as_ref().map(String::len))
        .max()
        .unwrap_or(7)
        .max(7);
    outln!(
        "{:<name_width$}  {:<15}  {:<data_width$}  {:>7}  {:>6}  started (UTC)",
        "name",
        "mode",
        "dataset",
        "val acc",
        "epochs"
    );
    for r in &runs {
        outln!(
            "{:<name_width$}  {:<15}  {:<data_width$}  {:>7}  {:>6}  {}{}",
            r.name,
            r.mode.map(|m| m.name()).unwrap_or("-"),
            r.dataset.as_deref().unwrap_or("-"),
            accuracy(r),
            r.epochs,
            minutes(&r.created),
            r.display_name
                .as_ref()
                .map(|d| format!("  \"{d}\""))
                .unwrap_or_default()
        );
        if let Some(problem) = &r.problem {
            outln!("    problem: {problem}");
        }
    }
    Ok(())
}

fn show(d: &RunDetails) {
    let s = &d.summary;
    outln!("run      {}", s.name);
    if let Some(display) = &s.display_name {
        outln!("shown as {display}");
    }
    outln!("folder   {}", s.path.display());
    outln!("started  {} UTC", minutes(&s.created));
    if let Some(record) = &d.record {
        outln!(
            "trained  {} on {} ({})",
            record.mode,
            record.dataset,
            record.data_dir.display()
        );
    }
    if let Some(m) = &d.manifest {
        let base = m
            .base
            .as_ref()
            .map_or("none (from scratch)", |b| b.name.as_str());
        outln!("base     {base}");
        outln!("classes  {}", m.classes.join(", "));
    }
    if let Some(problem) = &s.problem {
        outln!("problem  {problem}");
    }
    let h = &d.history;
    if !h.epochs.is_empty() {
        outln!("\nepochs (* lowered the best validation loss; > kept)");
        outln!(
            "  {:<9} {:>5} {:>9} {:>7} {:>9} {:>7} {:>7}",
            "phase",
            "epoch",
            "loss",
            "acc",
            "val loss",
            "val acc",
            "secs"
        );
        for (i, e) in h.epochs.iter().enumerate() {
            if h.phases.iter().skip(1).any(|p| p.start == i) {
                outln!("  -- {} starts --", e.phase);
            }
            let mark = match (h.kept == Some(i), e.best) {
                (true, _) => ">",
                (false, true) => "*",
                (false, false) => " ",
            };
            outln!(
                "{mark} {:<9} {:>5} {:>9.4} {:>7.3} {:>9.4} {:>7.3} {:>7.1}",
                e.phase,
                e.epoch,
                e.train_loss,
                e.train_accuracy,
                e.val_loss,
                e.val_accuracy,
                e.secs
            );
        }
        match h.kept_epoch() {
            Some(e) => outln!(
                "kept: {} epoch {} (validation loss {:.4}, accuracy {:.3})",
                e.phase,
                e.epoch,
                e.val_loss,
                e.val_accuracy
            ),
            None => outln!("kept: the initial weights (no epoch lowered the validation loss)"),
        }
    }
    match &d.evaluation {
        Some(saved) => {
            let e = &saved.evaluation;
            let images: usize = e.confusion.iter().flatten().sum();
            outln!(
                "\nevaluation on the {} split: accuracy {:.4} on {images} images",
                saved.split,
                e.accuracy
            );
            print_evaluation(e);
        }
        None => outln!("\nno evaluation saved"),
    }
}
