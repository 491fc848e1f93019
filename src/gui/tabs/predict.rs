//! The Predict tab: the top classes of a list of image files (typed, picked or dropped).

use std::path::PathBuf;

use super::{STALE_OPACITY, model_or_empty};
use crate::gui::context::{AppContext, Command, Commands};
use crate::gui::widgets;
use crate::jobs::views::PredictionRow;
use crate::jobs::{JobKind, Request};

/// The Predict tab's state: the file list and the last answers.
#[derive(Default)]
pub struct PredictTab {
    /// Image files, one per line.
    pub input: String,
    predictions: Vec<PredictionRow>,
}

impl PredictTab {
    /// New answers arrived.
    pub fn set_predictions(&mut self, predictions: Vec<PredictionRow>) {
        self.predictions = predictions;
    }

    /// The files listed in the input box.
    fn paths(&self) -> Vec<PathBuf> {
        self.input
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .map(PathBuf::from)
            .collect()
    }

    /// The command that classifies the listed files with the trained model (if any) or the
    /// loaded one; `None` with nothing to classify.
    pub fn predict_command(&self, ctx: &AppContext) -> Option<Command> {
        let model = ctx
            .trained_model
            .map(str::to_string)
            .or_else(|| ctx.model.map(|m| m.key.clone()))?;
        let paths = self.paths();
        if paths.is_empty() {
            return Some(Command::Note(
                "Predict: list at least one image file (one per line, or drop files on the window)"
                    .into(),
            ));
        }
        Some(Command::Submit(Request::Predict { model, paths, k: 5 }))
    }

    /// Draws the tab.
    pub fn ui(&mut self, ui: &mut egui::Ui, ctx: &AppContext) -> Commands {
        let mut out = Commands::default();
        if model_or_empty(ui, ctx).is_none() {
            return out;
        }
        widgets::labelled(
            ui,
            "Image files, one per line (or drop them on the window):",
            |ui| {
                ui.add(
                    egui::TextEdit::multiline(&mut self.input)
                        .desired_rows(3)
                        .desired_width(f32::INFINITY),
                )
            },
        );
        let running = ctx.running(JobKind::Predict);
        ui.horizontal_wrapped(|ui| {
            if ui.button("Pick files…").clicked()
                && let Some(files) = rfd::FileDialog::new().pick_files()
            {
                self.input = files
                    .iter()
                    .map(|p| p.display().to_string())
                    .collect::<Vec<_>>()
                    .join("\n");
            }
            if ui
                .add_enabled(!running, egui::Button::new("Predict"))
                .clicked()
                && let Some(c) = self.predict_command(ctx)
            {
                out.push(c);
            }
            if running {
                ui.spinner();
            }
            ui.label(match ctx.trained_model {
                Some(m) => format!("with the trained model {m}"),
                None => "with the loaded model".into(),
            });
        });
        ui.separator();
        if self.predictions.is_empty() {
            ui.label(
                egui::RichText::new(
                    "The five most likely classes of each image appear here, with their \
                     probabilities.",
                )
                .weak(),
            );
        }
        egui::ScrollArea::vertical()
            .id_salt("predictions")
            .show(ui, |ui| {
                if running {
                    ui.multiply_opacity(STALE_OPACITY);
                }
                for (path, result) in &self.predictions {
                    ui.label(egui::RichText::new(path.display().to_string()).strong());
                    match result {
                        Ok(top) => {
                            for c in top {
                                ui.horizontal(|ui| {
                                    ui.add(
                                        egui::ProgressBar::new(c.prob)
                                            .desired_width(200.0)
                                            .text(format!("{:.3}", c.prob)),
                                    );
                                    ui.label(&c.class);
                                });
                            }
                        }
                        Err(e) => widgets::error_line(ui, e),
                    }
                    ui.add_space(6.0);
                }
            });
        out
    }
}
