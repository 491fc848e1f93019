//! The Predict tab: the top classes of a list of image files (typed, picked or dropped), by the
//! model picked in its chooser, in the order listed and with a thumbnail each.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::{STALE_OPACITY, model_chooser, model_or_empty};
use crate::gui::context::{AppContext, Command, Commands};
use crate::gui::pick::{self, PickKind};
use crate::gui::widgets;
use crate::jobs::views::PredictionRow;
use crate::jobs::{JobKind, Request};

/// What Predict says when asked with no file listed.
pub const EMPTY_LIST: &str = "Predict: list at least one image file above (one path per line; \
                              type or paste it, use Pick files…, or drop files on the window)";

/// The Predict tab's persisted options.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct PredictSettings {
    /// The model asked (a key of the model chooser; `None`: the model trained in this session
    /// if there is one, else the loaded one).
    pub model: Option<String>,
}

/// The Predict tab's state: the file list and the last answers.
pub struct PredictTab {
    /// Image files, one per line.
    pub input: String,
    predictions: Vec<PredictionRow>,
    /// A hint shown under the buttons (an empty list).
    notice: Option<&'static str>,
}

impl Default for PredictTab {
    /// Starts with the bundled photos listed, so one click shows what the tab does.
    fn default() -> Self {
        PredictTab {
            input: bundled_images()
                .iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join("\n"),
            predictions: Vec::new(),
            notice: None,
        }
    }
}

/// The photos bundled in `assets/images`, by name (none when the folder is not there).
pub fn bundled_images() -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("assets/images");
    let mut out: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| {
                    p.extension().is_some_and(|e| {
                        crate::data::folder::IMAGE_EXTENSIONS
                            .contains(&e.to_string_lossy().to_lowercase().as_str())
                    })
                })
                .collect()
        })
        .unwrap_or_default();
    out.sort();
    out
}

impl PredictTab {
    /// New answers arrived.
    pub fn set_predictions(&mut self, predictions: Vec<PredictionRow>) {
        self.predictions = predictions;
    }

    /// The answers on screen, in the order of the list.
    pub fn predictions(&self) -> &[PredictionRow] {
        &self.predictions
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

    /// The key of the model the tab asks.
    fn model_key(ctx: &AppContext, s: &PredictSettings) -> Option<String> {
        ctx.model_key(s.model.as_deref().or(ctx.trained_model))
    }

    /// The command that classifies the listed files with the chosen model; a note saying what
    /// to do with nothing listed; `None` without a model.
    pub fn predict_command(&self, ctx: &AppContext, s: &PredictSettings) -> Option<Command> {
        let model = Self::model_key(ctx, s)?;
        let paths = self.paths();
        if paths.is_empty() {
            return Some(Command::Note(EMPTY_LIST.into()));
        }
        Some(Command::Submit(Request::Predict { model, paths, k: 5 }))
    }

    /// Draws the tab.
    pub fn ui(&mut self, ui: &mut egui::Ui, ctx: &AppContext, s: &mut PredictSettings) -> Commands {
        let mut out = Commands::default();
        if model_or_empty(ui, ctx).is_none() {
            return out;
        }
        // A long list scrolls in its own box: the buttons below stay in the window.
        egui::ScrollArea::vertical()
            .id_salt("predict-list")
            .max_height(160.0)
            .show(ui, |ui| {
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
            });
        let running = ctx.running(JobKind::Predict);
        let mut ask = false;
        ui.horizontal_wrapped(|ui| {
            let key = Self::model_key(ctx, s);
            if let Some(k) = model_chooser(ui, "predict-model", ctx, key.as_deref()) {
                s.model = Some(k);
                ask = !self.paths().is_empty();
            }
            if let Some(files) = pick::button(ui, "predict", "Pick files…", PickKind::Files) {
                self.input = files
                    .iter()
                    .map(|p| p.display().to_string())
                    .collect::<Vec<_>>()
                    .join("\n");
            }
            ask |= ui
                .add_enabled(!running, egui::Button::new("Predict"))
                .clicked();
            if running {
                ui.spinner();
            }
        });
        if ask && let Some(c) = self.predict_command(ctx, s) {
            self.notice = matches!(c, Command::Note(_)).then_some(EMPTY_LIST);
            out.push(c);
        }
        pick::notice(ui, "predict");
        if let Some(notice) = self.notice {
            ui.label(egui::RichText::new(notice).color(ui.visuals().warn_fg_color));
        }
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
        let mut wanted = Vec::new();
        egui::ScrollArea::vertical()
            .id_salt("predictions")
            .show(ui, |ui| {
                if running {
                    ui.multiply_opacity(STALE_OPACITY);
                }
                for (path, result) in &self.predictions {
                    ui.label(egui::RichText::new(path.display().to_string()).strong());
                    ui.horizontal(|ui| {
                        match ctx.thumbs.get(path) {
                            Some(tex) => {
                                widgets::fitted_image(ui, tex, egui::vec2(72.0, 72.0));
                            }
                            None => {
                                ui.add_sized([72.0, 72.0], egui::Spinner::new());
                                wanted.push(path.clone());
                            }
                        }
                        ui.vertical(|ui| match result {
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
                        });
                    });
                    ui.add_space(6.0);
                }
            });
        if !wanted.is_empty() {
            out.push(Command::Thumbnails(wanted));
        }
        out
    }
}
