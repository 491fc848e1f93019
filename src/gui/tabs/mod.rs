//! The central tabs, one module each. A tab owns its runtime state, draws from a read-only
//! [`AppContext`](super::context::AppContext) plus its own persisted options, and returns
//! [`Commands`](super::context::Commands); none calls the engine or touches another tab.

pub mod activations;
mod compare;
pub mod data;
pub mod examples;
pub mod filters;
pub mod heatmap;
mod job_line;
pub mod map;
pub mod model;
pub mod predict;
pub mod start;
pub mod train;

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use image::RgbImage;

use super::context::{AppContext, Command, ModelChoice};
use super::pick::{self, PickKind};
use super::settings::ExportSettings;
use super::widgets;
use crate::jobs::views::ModelInfo;
use crate::jobs::{JobKind, Request};
use crate::viz::colormap::Colormap;

/// Every tab's runtime state.
#[derive(Default)]
pub struct Tabs {
    pub model: model::ModelTab,
    pub data: data::DataTab,
    pub train: train::TrainTab,
    pub activations: activations::ActivationsTab,
    pub filters: filters::FiltersTab,
    pub heatmap: heatmap::HeatmapTab,
    pub predict: predict::PredictTab,
    pub map: map::MapTab,
}

/// How much a result is dimmed while a newer one is computed.
const STALE_OPACITY: f32 = 0.45;

/// A colormap combo box labelled "colormap"; returns whether it changed.
fn colormap_combo(ui: &mut egui::Ui, id: &str, value: &mut Colormap) -> bool {
    let before = *value;
    let label = ui.label("colormap");
    egui::ComboBox::from_id_salt(id)
        .selected_text(value.name())
        .show_ui(ui, |ui| {
            for c in Colormap::ALL {
                ui.selectable_value(value, c, c.name());
            }
        })
        .response
        .labelled_by(label.id);
    *value != before
}

/// A combo box of layer ids labelled `label`; returns the newly picked layer.
fn layer_combo(
    ui: &mut egui::Ui,
    id: &str,
    label: &str,
    current: &str,
    layers: &[String],
) -> Option<String> {
    let l = ui.label(label);
    let mut picked = None;
    egui::ComboBox::from_id_salt(id)
        .selected_text(current)
        .height(400.0)
        .show_ui(ui, |ui| {
            for layer in layers {
                if ui.selectable_label(current == layer, layer).clicked() {
                    picked = Some(layer.clone());
                }
            }
        })
        .response
        .labelled_by(l.id);
    picked
}

/// A combo box labelled "model" over the models the tabs can look through (the loaded one,
/// the trained one, runs), showing `current` (a model key); returns the newly picked key.
fn model_chooser(
    ui: &mut egui::Ui,
    id: &str,
    ctx: &AppContext,
    current: Option<&str>,
) -> Option<String> {
    let choices = ctx.model_choices();
    let shown = current.map(|k| ctx.model_name(k)).unwrap_or_default();
    model_combo(ui, id, &choices, current, &shown)
}

/// A combo box labelled "model" over `choices`, showing `shown` for `current` (a model key);
/// returns the newly picked key.
fn model_combo(
    ui: &mut egui::Ui,
    id: &str,
    choices: &[ModelChoice],
    current: Option<&str>,
    shown: &str,
) -> Option<String> {
    let label = ui.label("model");
    let mut picked = None;
    egui::ComboBox::from_id_salt(id)
        .selected_text(shown)
        .show_ui(ui, |ui| {
            for c in choices {
                if ui
                    .selectable_label(current == Some(c.key.as_str()), &c.label)
                    .clicked()
                {
                    picked = Some(c.key.clone());
                }
            }
        })
        .response
        .labelled_by(label.id);
    picked.filter(|k| current != Some(k.as_str()))
}

/// A file-name-safe version of a layer id or class name.
fn slug(text: &str) -> String {
    text.chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect()
}

/// The file stem of an image, made file-name safe.
fn image_stem(image: &Path) -> String {
    image
        .file_stem()
        .map(|s| slug(&s.to_string_lossy()))
        .unwrap_or_else(|| "image".into())
}

/// The loaded model, or an empty state saying why there is none: still loading, or what to do.
fn model_or_empty<'a>(ui: &mut egui::Ui, ctx: &AppContext<'a>) -> Option<&'a ModelInfo> {
    if ctx.model.is_none() {
        if ctx.running(JobKind::Model) {
            ui.horizontal(|ui| {
                ui.spinner();
                ui.label("Loading the model…");
            });
        } else {
            ui.label(
                "No model is loaded. Pick one in the left panel (the bundled ones are listed \
                 there); the message log says why the last one did not load.",
            );
        }
    }
    ctx.model
}

/// A tab's empty state: what it will show, and the one button that makes it show something.
/// Returns whether the button was clicked.
fn empty_state(ui: &mut egui::Ui, explain: &str, action: &str, enabled: bool) -> bool {
    ui.add_space(24.0);
    ui.vertical_centered(|ui| {
        ui.label(egui::RichText::new(explain).size(15.0));
        ui.add_space(8.0);
        ui.add_enabled(
            enabled,
            egui::Button::new(egui::RichText::new(action).strong()),
        )
        .clicked()
    })
    .inner
}

/// The export row of a tab: folder, scale, "Export PNG" (the figure on screen) and
/// "Export all" (every layer or method). Returns which button was clicked.
fn export_row(ui: &mut egui::Ui, export: &mut ExportSettings) -> (bool, bool) {
    let mut clicked = (false, false);
    ui.horizontal_wrapped(|ui| {
        export_target(ui, export);
        clicked.0 = ui.button("Export PNG").clicked();
        clicked.1 = ui.button("Export all").clicked();
    });
    pick::notice(ui, "export");
    clicked
}

/// The export folder (typed or picked) and the scale of the figures.
fn export_target(ui: &mut egui::Ui, export: &mut ExportSettings) {
    widgets::labelled(ui, "export to", |ui| {
        ui.add(egui::TextEdit::singleline(&mut export.dir).desired_width(220.0))
    });
    if let Some(p) = pick::one(ui, "export", "Folder…", PickKind::Folder) {
        export.dir = p;
    }
    widgets::labelled(ui, "scale", |ui| {
        ui.add(egui::DragValue::new(&mut export.scale).range(1..=4))
    });
}

/// The command that exports `figures` (request, file stem) into the export folder.
fn export_command(
    model: &str,
    export: &ExportSettings,
    figures: Vec<(crate::export::FigureRequest, String)>,
) -> Command {
    let dir = PathBuf::from(&export.dir);
    Command::Submit(Request::Export {
        model: model.to_string(),
        figures: figures
            .into_iter()
            .map(|(request, name)| (request, dir.join(format!("{name}.png"))))
            .collect(),
        scale: export.scale,
    })
}

/// A tab's textures by name, made from their image the first time they are drawn.
#[derive(Default)]
struct Textures(HashMap<String, egui::TextureHandle>);

impl Textures {
    /// The texture `name`, uploaded from `img` when not already there (smoothed when `smooth`).
    fn get(
        &mut self,
        ctx: &egui::Context,
        name: &str,
        img: &RgbImage,
        smooth: bool,
    ) -> egui::TextureHandle {
        self.0
            .entry(name.to_string())
            .or_insert_with(|| {
                if smooth {
                    widgets::photo_texture(ctx, name, img)
                } else {
                    widgets::texture(ctx, name, img)
                }
            })
            .clone()
    }

    /// Drops every texture (their images changed).
    fn clear(&mut self) {
        self.0.clear();
    }
}

/// Tiles of `tile` pixels laid out in rows that fit the width; returns how many fit in a row.
fn tiles_per_row(ui: &egui::Ui, tile: f32) -> usize {
    let spacing = ui.spacing().item_spacing.x;
    (((ui.available_width() + spacing) / (tile + spacing)).floor() as usize).max(1)
}
