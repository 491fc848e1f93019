//! The list of saved runs: name, mode, dataset, best validation accuracy and date, damaged runs
//! with their problem; a click shows a run, and each can be renamed or (after a confirmation)
//! deleted; the run on screen can be opened as the loaded model or compared with another. The
//! reading and writing happens on the worker.

use super::Compared;
use crate::gui::context::{AppContext, Command, Commands};
use crate::gui::widgets;
use crate::jobs::{JobKind, Request};
use crate::workspace::{RunSummary, Workspace};

/// What the list is in the middle of: renaming or deleting a run.
#[derive(Debug, Default)]
pub struct RunList {
    /// The run being renamed (folder name) and the name typed so far.
    renaming: Option<(String, String)>,
    /// The run whose deletion waits for a confirmation.
    deleting: Option<String>,
}

/// The name a run is shown by: its display name, else its folder's.
pub fn title(run: &RunSummary) -> &str {
    run.display_name.as_deref().unwrap_or(&run.name)
}

/// `2026-11-29T22:10:05Z` as `2026-11-29 22:10`.
fn short_date(rfc3339: &str) -> String {
    rfc3339.get(..16).unwrap_or(rfc3339).replacen('T', " ", 1)
}

/// The request for run `name` of `workspace` (the overlay's when `compare`).
pub fn show_command(workspace: Option<&Workspace>, name: &str, compare: bool) -> Option<Command> {
    Some(Command::Submit(Request::ShowRun {
        workspace: workspace?.clone(),
        name: name.to_string(),
        compare,
    }))
}

/// The request that lists the runs of `workspace` again.
pub fn list_command(workspace: Option<&Workspace>) -> Option<Command> {
    Some(Command::Submit(Request::ListRuns {
        workspace: workspace?.clone(),
    }))
}

/// "Open as model": makes the run `name` the loaded model of every tab (disabled while it is,
/// or when the run has no usable model).
pub fn open_button(ui: &mut egui::Ui, ctx: &AppContext, name: &str, out: &mut Commands) {
    let Some(run) = ctx.runs.iter().find(|r| r.name == name) else {
        return;
    };
    let key = crate::gui::context::run_key(run);
    let loaded = ctx.model.is_some_and(|m| m.key == key || m.key == run.name);
    let open = ui
        .add_enabled(
            run.problem.is_none() && !loaded,
            egui::Button::new("Open as model"),
        )
        .on_hover_text("make this run's model the loaded model of every tab")
        .on_disabled_hover_text(if loaded {
            "this run's model is the loaded model"
        } else {
            "this run has no usable model"
        });
    if open.clicked() {
        out.push(Command::LoadModel(Some(key)));
    }
}

/// The "compare with" choice: another run whose validation curves are overlaid.
pub fn compare_combo(
    ui: &mut egui::Ui,
    ctx: &AppContext,
    shown: Option<&str>,
    compare: &mut Option<Compared>,
    out: &mut Commands,
) {
    let label = ui.label("compare with");
    let current = compare
        .as_ref()
        .map_or("none", |c| c.title.as_str())
        .to_string();
    egui::ComboBox::from_id_salt("compare-with")
        .selected_text(current)
        .show_ui(ui, |ui| {
            if ui.selectable_label(compare.is_none(), "none").clicked() {
                *compare = None;
            }
            for run in ctx
                .runs
                .iter()
                .filter(|r| Some(r.name.as_str()) != shown && r.epochs > 0)
            {
                let on = compare.as_ref().is_some_and(|c| c.name == run.name);
                if ui.selectable_label(on, title(run)).clicked()
                    && !on
                    && let Some(c) = show_command(ctx.workspace, &run.name, true)
                {
                    out.push(c);
                }
            }
        })
        .response
        .labelled_by(label.id);
}

impl RunList {
    /// Draws the list; `shown` is the folder name of the run on screen.
    pub fn ui(
        &mut self,
        ui: &mut egui::Ui,
        ctx: &AppContext,
        shown: Option<&str>,
        out: &mut Commands,
    ) {
        let Some(workspace) = ctx.workspace else {
            ui.label("Runs are not kept: there is no data folder (see the message log).");
            return;
        };
        let runs = ctx.runs;
        let busy = ctx.running(JobKind::Runs);
        ui.horizontal_wrapped(|ui| {
            widgets::section(ui, &format!("Runs ({})", runs.len()));
            ui.label(
                egui::RichText::new(format!("in {}", workspace.runs_dir().display()))
                    .weak()
                    .small(),
            );
            if ui
                .add_enabled(!busy, egui::Button::new("Refresh"))
                .clicked()
                && let Some(c) = list_command(ctx.workspace)
            {
                out.push(c);
            }
        });
        if runs.is_empty() {
            ui.label(egui::RichText::new("No runs yet: each training run is saved here.").weak());
            return;
        }
        egui::ScrollArea::both()
            .id_salt("runs-scroll")
            .max_height(180.0)
            .show(ui, |ui| {
                // Names on one line (the list scrolls sideways); problems are cut short.
                ui.style_mut().wrap_mode = Some(egui::TextWrapMode::Extend);
                egui::Grid::new("runs-grid")
                    .striped(true)
                    .num_columns(6)
                    .show(ui, |ui| {
                        for h in ["run", "mode", "dataset", "val. accuracy", "started", ""] {
                            ui.label(egui::RichText::new(h).strong());
                        }
                        ui.end_row();
                        for run in runs {
                            self.row(ui, ctx, run, shown == Some(run.name.as_str()), busy, out);
                            ui.end_row();
                        }
                    });
            });
        self.pending(ui, ctx, runs, busy, out);
    }

    fn row(
        &mut self,
        ui: &mut egui::Ui,
        ctx: &AppContext,
        run: &RunSummary,
        selected: bool,
        busy: bool,
        out: &mut Commands,
    ) {
        ui.vertical(|ui| {
            let name = ui
                .selectable_label(selected, title(run))
                .on_hover_text(run.path.display().to_string());
            if name.clicked()
                && !selected
                && let Some(c) = show_command(ctx.workspace, &run.name, false)
            {
                out.push(c);
            }
            if let Some(problem) = &run.problem {
                ui.set_max_width(320.0);
                let text = egui::RichText::new(problem)
                    .small()
                    .color(ui.visuals().error_fg_color);
                ui.add(egui::Label::new(text).truncate())
                    .on_hover_text(problem);
            }
        });
        ui.label(run.mode.map_or("?", |m| m.name()));
        ui.label(run.dataset.as_deref().unwrap_or("?"));
        ui.label(
            run.best_val_accuracy
                .map_or_else(|| "—".to_string(), |a| format!("{a:.3}")),
        );
        ui.label(short_date(&run.created));
        ui.horizontal(|ui| {
            ui.add_enabled_ui(!busy, |ui| {
                if ui.small_button("Rename…").clicked() {
                    self.renaming = Some((run.name.clone(), String::new()));
                    self.deleting = None;
                }
                if ui.small_button("Delete…").clicked() {
                    self.deleting = Some(run.name.clone());
                    self.renaming = None;
                }
            });
        });
    }

    /// The rename field or the delete confirmation under the list.
    fn pending(
        &mut self,
        ui: &mut egui::Ui,
        ctx: &AppContext,
        runs: &[RunSummary],
        busy: bool,
        out: &mut Commands,
    ) {
        let Some(workspace) = ctx.workspace else {
            return;
        };
        let of = |name: &str| runs.iter().find(|r| r.name == name);
        if let Some((name, typed)) = &mut self.renaming {
            let mut close = of(name).is_none();
            ui.horizontal_wrapped(|ui| {
                let now = of(name).map_or(name.as_str(), title);
                widgets::labelled(ui, &format!("name shown for {name}"), |ui| {
                    ui.add(
                        egui::TextEdit::singleline(typed)
                            .hint_text(now)
                            .desired_width(240.0),
                    )
                });
                if ui
                    .add_enabled(!busy, egui::Button::new("Save name"))
                    .clicked()
                {
                    out.push(Command::Submit(Request::RenameRun {
                        workspace: workspace.clone(),
                        name: name.clone(),
                        display: typed.clone(),
                    }));
                    close = true;
                }
                close |= ui.button("Cancel").clicked();
                ui.label(
                    egui::RichText::new("(the folder keeps its name; blank: show the folder's)")
                        .weak(),
                );
            });
            if close {
                self.renaming = None;
            }
        }
        if let Some(name) = &self.deleting {
            let Some(run) = of(name) else {
                self.deleting = None;
                return;
            };
            let mut close = false;
            ui.horizontal_wrapped(|ui| {
                ui.label(format!(
                    "Delete run {} and its model? This cannot be undone.",
                    title(run)
                ));
                if ui
                    .add_enabled(!busy, egui::Button::new("Delete run"))
                    .clicked()
                {
                    out.push(Command::Submit(Request::DeleteRun {
                        workspace: workspace.clone(),
                        name: name.clone(),
                    }));
                    close = true;
                }
                close |= ui.button("Keep it").clicked();
            });
            if close {
                self.deleting = None;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_are_shortened_to_the_minute() {
        assert_eq!(short_date("2026-11-29T22:10:05Z"), "2026-11-29 22:10");
        assert_eq!(short_date("garbled"), "garbled");
    }
}
