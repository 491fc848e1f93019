//! The Filters tab: the pattern each filter of a layer responds to most, computed by gradient
//! ascent tile by tile, in a grid that wraps to the width and scrolls.

use image::RgbImage;
use serde::{Deserialize, Serialize};

use super::{
    STALE_OPACITY, Textures, empty_state, layer_combo, model_chooser, model_or_empty, tiles_per_row,
};
use crate::gui::context::{AppContext, Command, Commands};
use crate::gui::widgets;
use crate::jobs::{JobId, JobKind, Request};
use crate::viz::filters::{FilterMethod, FilterOptions};

/// Side of a tile on screen, pixels.
const TILE: f32 = 112.0;

/// The Filters tab's persisted options.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct FilterSettings {
    /// The first filter shown.
    pub first: usize,
    pub count: usize,
    pub method: FilterMethod,
    /// Gradient-ascent steps.
    pub steps: usize,
    /// Side of the optimised image, pixels.
    pub size: usize,
    pub seed: u64,
    /// The model looked through (a key of the model chooser; `None`: the loaded model).
    pub model: Option<String>,
}

impl Default for FilterSettings {
    fn default() -> Self {
        FilterSettings {
            first: 0,
            count: 16,
            method: FilterMethod::Chollet,
            steps: 30,
            size: 128,
            seed: 0,
            model: None,
        }
    }
}

/// The Filters tab's state: the tiles of the last computation (`None`: not computed yet).
#[derive(Default)]
pub struct FiltersTab {
    tiles: Vec<Option<RgbImage>>,
    /// The filter number of the first tile and the layer they belong to.
    first: usize,
    layer: String,
    /// The job computing them (tiles of older jobs are ignored).
    job: Option<JobId>,
    textures: Textures,
}

impl FiltersTab {
    /// Tiles finished and asked for.
    pub fn progress(&self) -> (usize, usize) {
        let done = self.tiles.iter().filter(|t| t.is_some()).count();
        (done, self.tiles.len())
    }

    /// The job that computes the tiles was submitted.
    pub fn started(&mut self, job: JobId, request: &Request) {
        if let Request::Filters { layer, filters, .. } = request {
            self.tiles = vec![None; filters.len()];
            self.first = filters.first().copied().unwrap_or(0);
            self.layer = layer.clone();
            self.textures.clear();
            self.job = Some(job);
        }
    }

    /// A finished tile of job `job`.
    pub fn tile(&mut self, job: JobId, index: usize, image: RgbImage) {
        if self.job == Some(job) && index < self.tiles.len() {
            self.tiles[index] = Some(image);
        }
    }

    /// The command that computes the tab's filters for the selected layer.
    pub fn compute_command(ctx: &AppContext, s: &FilterSettings) -> Option<Command> {
        let (model, layer) = (ctx.model_key(s.model.as_deref())?, ctx.layer?);
        let mut options = FilterOptions::for_method(s.method, s.size);
        options.ascent.steps = s.steps;
        options.seed = s.seed;
        Some(Command::Submit(Request::Filters {
            model,
            layer: layer.to_string(),
            filters: (s.first..s.first + s.count).collect(),
            options,
        }))
    }

    /// Draws the tab.
    pub fn ui(&mut self, ui: &mut egui::Ui, ctx: &AppContext, s: &mut FilterSettings) -> Commands {
        let mut out = Commands::default();
        let Some(model) = model_or_empty(ui, ctx) else {
            return out;
        };
        let running = ctx.running(JobKind::Filters);
        ui.horizontal_wrapped(|ui| {
            let key = ctx.model_key(s.model.as_deref());
            if let Some(k) = model_chooser(ui, "filter-model", ctx, key.as_deref()) {
                s.model = Some(k);
            }
            let current = ctx.layer.unwrap_or_default();
            if let Some(l) = layer_combo(ui, "filter-layer", "layer", current, &model.spatial) {
                out.push(Command::SelectLayer(l));
            }
            options_ui(ui, s);
        });
        ui.horizontal(|ui| {
            if ui
                .add_enabled(!running, egui::Button::new("Compute"))
                .clicked()
            {
                out.extend(Commands(
                    Self::compute_command(ctx, s).into_iter().collect(),
                ));
            }
            if ui
                .add_enabled(running, egui::Button::new("Cancel filters"))
                .clicked()
            {
                out.push(Command::Cancel(JobKind::Filters));
            }
            if running {
                ui.spinner();
            }
        });
        if self.tiles.is_empty() {
            if empty_state(
                ui,
                "This tab shows the pattern each filter of a layer responds to most, found by \
                 gradient ascent from noise.",
                &format!(
                    "Compute {} filters of {}",
                    s.count,
                    ctx.layer.unwrap_or("the selected layer")
                ),
                ctx.layer.is_some() && !running,
            ) && let Some(c) = Self::compute_command(ctx, s)
            {
                out.push(c);
            }
            return out;
        }
        ui.label(format!(
            "{} of {} filters of {} computed",
            self.progress().0,
            self.tiles.len(),
            self.layer
        ));
        egui::ScrollArea::vertical()
            .id_salt("filter-tiles")
            .show(ui, |ui| self.grid(ui, running));
        out
    }

    /// The tiles in rows that fit the width.
    fn grid(&mut self, ui: &mut egui::Ui, running: bool) {
        let egui_ctx = ui.ctx().clone();
        let per_row = tiles_per_row(ui, TILE);
        let current = running && self.job.is_some();
        for (r, row) in self.tiles.chunks(per_row).enumerate() {
            ui.horizontal(|ui| {
                for (k, tile) in row.iter().enumerate() {
                    let i = r * per_row + k;
                    ui.vertical(|ui| {
                        ui.set_width(TILE);
                        match tile {
                            Some(img) => {
                                let t = self.textures.get(
                                    &egui_ctx,
                                    &format!("filter-{i}"),
                                    img,
                                    false,
                                );
                                widgets::fitted_image(ui, &t, egui::vec2(TILE, TILE));
                            }
                            None if current => {
                                ui.add_sized([TILE, TILE], egui::Spinner::new());
                            }
                            None => {
                                ui.scope(|ui| {
                                    ui.multiply_opacity(STALE_OPACITY);
                                    ui.add_sized([TILE, TILE], egui::Label::new("not computed"));
                                });
                            }
                        }
                        ui.label(egui::RichText::new(format!("filter {}", self.first + i)).small());
                    });
                }
            });
        }
    }
}

/// The method, range and ascent options.
fn options_ui(ui: &mut egui::Ui, s: &mut FilterSettings) {
    widgets::labelled(ui, "filters from", |ui| {
        ui.add(egui::DragValue::new(&mut s.first).range(0..=4096))
    });
    widgets::labelled(ui, "count", |ui| {
        ui.add(egui::DragValue::new(&mut s.count).range(1..=256))
    });
    let l = ui.label("method");
    let before = s.method;
    egui::ComboBox::from_id_salt("filter-method")
        .selected_text(s.method.name())
        .show_ui(ui, |ui| {
            for m in [FilterMethod::Chollet, FilterMethod::Lucid] {
                ui.selectable_value(&mut s.method, m, m.name());
            }
        })
        .response
        .labelled_by(l.id);
    if s.method != before {
        s.steps = s.method.default_steps();
    }
    widgets::labelled(ui, "steps", |ui| {
        ui.add(egui::DragValue::new(&mut s.steps).range(1..=1024))
    });
    widgets::labelled(ui, "size", |ui| {
        ui.add(egui::DragValue::new(&mut s.size).range(32..=512))
    });
    widgets::labelled(ui, "seed", |ui| ui.add(egui::DragValue::new(&mut s.seed)));
}
