//! The Activations tab: every channel of one layer for the current image as a grid of legible
//! tiles (zoom at the cursor, drag to pan, hover for a channel's statistics, click to enlarge),
//! the image as the model sees it, the sparsity of every layer by depth with the layer on show
//! marked, and optionally the same layer of a second model beside it.

mod export;
mod grid;
mod sparsity;

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::compare::{Described, compare_chooser, compare_key, layer_for};
use super::{
    STALE_OPACITY, Textures, colormap_combo, empty_state, layer_combo, model_chooser,
    model_or_empty,
};
use crate::gui::context::{AppContext, Command, Commands};
use crate::gui::settings::ExportSettings;
use crate::gui::widgets;
use crate::jobs::views::{ActivationView, ModelInfo};
use crate::jobs::{JobKind, Request};
use crate::viz::activations::{GridOptions, LayerSparsity};
use crate::viz::colormap::Colormap;
use grid::GridState;

/// Columns of the grid the worker renders (the screen lays tiles out on its own).
const ATLAS_COLS: usize = 16;
/// Width of the column beside the grids (input image, enlarged channel, sparsity).
const SIDE: f32 = 300.0;

/// The Activations tab's persisted options.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ActivationSettings {
    /// Tiles per row chosen for a layer; a layer not listed gets as many as fit the width.
    pub columns: BTreeMap<String, usize>,
    pub colormap: Colormap,
    /// One colour scale for all channels instead of one per channel.
    pub shared_scale: bool,
    /// The model looked through (a key of the model chooser; `None`: the loaded model).
    pub model: Option<String>,
    /// The model shown beside it (a key of the model chooser; `None`: no comparison).
    pub compare: Option<String>,
    /// The layer shown of a chosen model that lacks the selected one (one of its own layers,
    /// e.g. of a model trained from scratch).
    pub own_layer: Option<String>,
}

impl Default for ActivationSettings {
    fn default() -> Self {
        ActivationSettings {
            columns: BTreeMap::new(),
            colormap: Colormap::Viridis,
            shared_scale: false,
            model: None,
            compare: None,
            own_layer: None,
        }
    }
}

/// One model's grid: the view, how it is zoomed and scrolled, the channel enlarged.
#[derive(Default)]
struct Side {
    view: Option<ActivationView>,
    grid: GridState,
    enlarged: Option<usize>,
    /// The columns shown last frame.
    cols: usize,
}

impl Side {
    /// A new grid: the zoom and scroll stay for the same model and layer (a new image, new
    /// colours), the enlarged channel too.
    fn set(&mut self, view: ActivationView) {
        let same = self
            .view
            .as_ref()
            .is_some_and(|v| v.model == view.model && v.layer == view.layer);
        self.grid.new_grid(same);
        if !same {
            self.enlarged = None;
        }
        self.view = Some(view);
    }
}

/// The Activations tab's state.
#[derive(Default)]
pub struct ActivationsTab {
    main: Side,
    other: Side,
    sparsity: Vec<LayerSparsity>,
    /// The layers of the models compared with.
    described: Described,
    /// The keys of the models on show last frame (where an arriving grid goes).
    keys: (Option<String>, Option<String>),
    /// The layer the first grid shows this frame (the selected one, or the chosen model's own).
    shown: String,
    textures: Textures,
    /// The clicked channel's top images in the data folder.
    pub examples: super::examples::ExamplesPanel,
}

impl ActivationsTab {
    /// The grid on screen.
    pub fn view(&self) -> Option<&ActivationView> {
        self.main.view.as_ref()
    }

    /// The grid of the model compared with, once computed.
    pub fn compared_view(&self) -> Option<&ActivationView> {
        self.other.view.as_ref()
    }

    /// A new grid arrived: it goes beside the first when it is of the model compared with
    /// (to both when both sides show the same model).
    pub fn set_view(&mut self, view: ActivationView) {
        let to_other = self.keys.1.as_ref() == Some(&view.model);
        let to_main = !to_other || self.keys.0.as_ref() == Some(&view.model);
        self.textures.clear();
        if to_other {
            self.other.set(view.clone());
        }
        if to_main {
            self.main.set(view);
        }
    }

    /// A new sparsity profile arrived.
    pub fn set_sparsity(&mut self, sparsity: Vec<LayerSparsity>) {
        self.sparsity = sparsity;
    }

    /// A model compared with was described.
    pub fn described(&mut self, info: &ModelInfo) {
        self.described.insert(info);
    }

    /// The layer the first grid shows for the model `key`, whether it replaces the selected one
    /// (the model lacks it: one of its own, `s.own_layer` or a third of the way in), and the
    /// model's layers; `None` while its layers are not known (it is being described).
    fn shown_layer(
        &self,
        ctx: &AppContext,
        key: &str,
        s: &ActivationSettings,
    ) -> Option<(String, bool, Vec<String>)> {
        let own = self.described.spatial(ctx, key)?;
        let (layer, replaced) = layer_for(ctx.layer?, own, s.own_layer.as_deref())?;
        Some((layer, replaced, own.to_vec()))
    }

    /// The requests that recompute the grids and the sparsity profile. The model compared
    /// with is described first when its layers are not known; it gets a grid only when it has
    /// the layer.
    pub fn requests(&self, ctx: &AppContext, s: &ActivationSettings) -> Vec<Command> {
        let Some(model) = ctx.model_key(s.model.as_deref()) else {
            return Vec::new();
        };
        let Some((layer, _, _)) = self.shown_layer(ctx, &model, s) else {
            // A chosen model's layers are read first; its grid follows.
            return self.described.request(ctx, &model).into_iter().collect();
        };
        let layer = layer.as_str();
        let request = |model: &str| {
            Command::Submit(Request::Activations {
                model: model.to_string(),
                image: ctx.image.to_path_buf(),
                layer: layer.to_string(),
                options: grid_options(s),
            })
        };
        let mut out = vec![
            request(&model),
            Command::Submit(Request::Sparsity {
                model: model.clone(),
                image: ctx.image.to_path_buf(),
            }),
        ];
        if let Some(other) = compare_key(ctx, s.compare.as_deref())
            && other != model
        {
            match self.described.spatial(ctx, &other) {
                Some(layers) if layers.iter().any(|l| l == layer) => out.push(request(&other)),
                Some(_) => {}
                None => out.extend(self.described.request(ctx, &other)),
            }
        }
        out
    }

    /// Draws the tab.
    pub fn ui(
        &mut self,
        ui: &mut egui::Ui,
        ctx: &AppContext,
        s: &mut ActivationSettings,
        export: &mut ExportSettings,
    ) -> Commands {
        let mut out = Commands::default();
        let Some(model) = model_or_empty(ui, ctx) else {
            return out;
        };
        let computing = ctx.running(JobKind::Activations);
        let key = ctx.model_key(s.model.as_deref()).unwrap_or_default();
        let other = compare_key(ctx, s.compare.as_deref());
        self.keys = (Some(key.clone()), other.clone());
        let mut changed = false;
        let selected = ctx.layer.unwrap_or_default();
        let (layer, replaced, layers) = match self.shown_layer(ctx, &key, s) {
            Some(shown) => shown,
            None => {
                out.extend(Commands(
                    self.described.ask(ctx, &key).into_iter().collect(),
                ));
                (selected.to_string(), false, model.spatial.clone())
            }
        };
        self.shown = layer.clone();
        let layer = layer.as_str();
        ui.horizontal_wrapped(|ui| {
            if let Some(k) = model_chooser(ui, "act-model", ctx, Some(&key)) {
                s.model = Some(k);
                s.own_layer = None;
                changed = true;
            }
            if let Some(l) = layer_combo(ui, "act-layer", "layer", layer, &layers) {
                if replaced {
                    s.own_layer = Some(l);
                    changed = true;
                } else {
                    out.push(Command::SelectLayer(l));
                }
            }
            if let Some(c) = compare_chooser(ui, "act-compare", ctx, other.as_deref()) {
                s.compare = c;
                self.other = Side::default();
                changed = true;
            }
            changed |= colormap_combo(ui, "act-cmap", &mut s.colormap);
            changed |= ui.checkbox(&mut s.shared_scale, "shared scale").changed();
            columns_ui(ui, s, layer);
            if computing {
                ui.spinner();
            }
        });
        if changed {
            out.push(Command::RefreshActivations);
        }
        if replaced {
            ui.label(format!(
                "{} has no layer {selected}: it was built with its own layers (e.g. trained \
                 from scratch), so its own layer {layer} is shown.",
                ctx.model_name(&key)
            ));
        }
        if self.main.view.is_none() {
            if !computing
                && empty_state(
                    ui,
                    "This tab shows what every channel of a layer responds to in the image: \
                     one small map per channel.",
                    &format!("Show {layer} for this image"),
                    ctx.layer.is_some(),
                )
            {
                out.push(Command::RefreshActivations);
            }
            return out;
        }
        out.extend(self.export(ui, s, export, &key, &layers));
        if computing {
            ui.multiply_opacity(STALE_OPACITY);
        }
        out.0.extend(self.body(ui, ctx, s, other.as_deref()));
        out
    }

    /// The grids (side by side when wide, one above the other when narrow) and the column of
    /// details beside them (below them when narrow).
    fn body(
        &mut self,
        ui: &mut egui::Ui,
        ctx: &AppContext,
        s: &ActivationSettings,
        other: Option<&str>,
    ) -> Option<Command> {
        let wide = ui.available_width() >= 760.0;
        let full = ui.available_size();
        let grids = if wide {
            egui::vec2(full.x - SIDE - 12.0, full.y)
        } else {
            egui::vec2(full.x, (full.y * 0.62).max(240.0))
        };
        let layer = self.shown.clone();
        let cols = s.columns.get(&layer).copied();
        let layout = if wide {
            egui::Layout::left_to_right(egui::Align::Min)
        } else {
            egui::Layout::top_down(egui::Align::Min)
        };
        let mut out = None;
        ui.with_layout(layout, |ui| {
            ui.allocate_ui(grids, |ui| {
                ui.set_min_size(grids);
                ui.vertical(|ui| self.grids(ui, ctx, grids, cols, other));
            });
            egui::ScrollArea::vertical()
                .id_salt("act-details")
                .show(ui, |ui| {
                    ui.vertical(|ui| {
                        ui.set_max_width(if wide { SIDE } else { full.x });
                        out = self.details(ui, ctx, &layer);
                    });
                });
        });
        out
    }

    /// The loaded model's grid, and the compared model's beside or below it.
    fn grids(
        &mut self,
        ui: &mut egui::Ui,
        ctx: &AppContext,
        size: egui::Vec2,
        cols: Option<usize>,
        other: Option<&str>,
    ) {
        let Some(other) = other else {
            let title_and_grid = size - egui::vec2(0.0, 24.0);
            show_side(ui, ctx, "act-grid", &mut self.main, title_and_grid, cols);
            return;
        };
        let beside = size.x >= 2.0 * 380.0;
        let each = if beside {
            egui::vec2(size.x / 2.0 - 6.0, size.y - 24.0)
        } else {
            egui::vec2(size.x, size.y / 2.0 - 30.0)
        };
        let layout = if beside {
            egui::Layout::left_to_right(egui::Align::Min)
        } else {
            egui::Layout::top_down(egui::Align::Min)
        };
        let missing = self.missing_layer(ctx, other);
        ui.with_layout(layout, |ui| {
            ui.allocate_ui(each, |ui| {
                ui.vertical(|ui| show_side(ui, ctx, "act-grid", &mut self.main, each, cols))
            });
            ui.allocate_ui(each, |ui| {
                ui.vertical(|ui| match &missing {
                    Some(text) => {
                        ui.label(egui::RichText::new(ctx.model_name(other)).strong());
                        ui.label(text);
                    }
                    None => show_side(ui, ctx, "act-grid-2", &mut self.other, each, cols),
                })
            });
        });
    }

    /// Why the model compared with shows no grid of the selected layer, if it shows none.
    fn missing_layer(&self, ctx: &AppContext, other: &str) -> Option<String> {
        let layer = self.shown.as_str();
        let layers = self.described.spatial(ctx, other)?;
        (!layers.iter().any(|l| l == layer)).then(|| {
            let shown: Vec<&str> = layers.iter().take(8).map(String::as_str).collect();
            format!(
                "This model has no layer {layer}: it was built with its own layers ({}{}), \
                 e.g. trained from scratch. Compare a model of the same architecture, or look \
                 at its own layers by choosing it as the model.",
                shown.join(", "),
                if layers.len() > shown.len() {
                    ", …"
                } else {
                    ""
                }
            )
        })
    }

    /// The input image, the enlarged channels and the sparsity plot.
    fn details(&mut self, ui: &mut egui::Ui, ctx: &AppContext, layer: &str) -> Option<Command> {
        let Some(view) = &self.main.view else {
            return None;
        };
        let (w, h) = view.input.dimensions();
        ui.label(format!("input as the model sees it ({w}×{h} centre crop)"));
        let t = self.textures.get(ui.ctx(), "act-input", &view.input, true);
        widgets::fitted_image(ui, &t, egui::vec2(ui.available_width().min(SIDE), 220.0));
        // The channel clicked in each grid, under its model's name.
        for side in [&self.main, &self.other] {
            let (Some(view), Some(c)) = (&side.view, side.enlarged) else {
                continue;
            };
            let s = view.stats[c];
            ui.label(format!(
                "{}, channel {c}: min {:.3}, max {:.3}, mean {:.3}",
                ctx.model_name(&view.model),
                s.min,
                s.max,
                s.mean
            ));
            let t = self.textures.get(
                ui.ctx(),
                &format!("channel-{}-{}-{c}", view.model, view.layer),
                &view.channels[c],
                false,
            );
            widgets::fitted_image(ui, &t, egui::vec2(ui.available_width().min(SIDE), 260.0));
        }
        let clicked = self.main.view.as_ref().zip(self.main.enlarged);
        let out = clicked.and_then(|(v, c)| self.examples.ui(ui, ctx, &v.model, &v.layer, c, None));
        if !self.sparsity.is_empty() {
            widgets::section(ui, "Sparsity by depth");
            sparsity::plot(ui, &self.sparsity, layer);
        }
        out
    }
}

/// One side's title (the model's name and the layer's summary) and its grid.
fn show_side(
    ui: &mut egui::Ui,
    ctx: &AppContext,
    id: &str,
    side: &mut Side,
    size: egui::Vec2,
    cols: Option<usize>,
) {
    let Some(view) = &side.view else {
        ui.horizontal(|ui| {
            ui.spinner();
            ui.label("computing…");
        });
        return;
    };
    let blank = view.stats.iter().filter(|s| s.is_blank()).count();
    let zoom = match side.grid.zoom() {
        1.0 => String::new(),
        z => format!(", zoom {:.0}%", 100.0 * z),
    };
    ui.label(
        egui::RichText::new(format!(
            "{} — {}: {} channels of {}×{}, {} blank ({:.0}%){zoom}",
            ctx.model_name(&view.model),
            view.layer,
            view.stats.len(),
            view.layout.tile.0,
            view.layout.tile.1,
            blank,
            100.0 * blank as f32 / view.stats.len().max(1) as f32,
        ))
        .strong(),
    )
    .on_hover_text("ctrl+wheel zooms at the cursor, drag pans, click a channel to enlarge it");
    let shown = side.grid.show(ui, id, view, cols, size);
    side.cols = shown.cols;
    if shown.clicked.is_some() {
        side.enlarged = shown.clicked;
    }
}

/// The columns control: as many as fit ("auto") or a number chosen for the layer.
fn columns_ui(ui: &mut egui::Ui, s: &mut ActivationSettings, layer: &str) {
    let mut auto = !s.columns.contains_key(layer);
    if ui
        .checkbox(&mut auto, "auto columns")
        .on_hover_text("as many columns as the width holds; untick to choose for this layer")
        .changed()
    {
        if auto {
            s.columns.remove(layer);
        } else {
            s.columns.insert(layer.to_string(), 8);
        }
    }
    if let Some(cols) = s.columns.get_mut(layer) {
        widgets::labelled(ui, "columns", |ui| {
            ui.add(egui::DragValue::new(cols).range(1..=64))
        });
    }
}

/// The options of the grid the worker renders.
fn grid_options(s: &ActivationSettings) -> GridOptions {
    GridOptions {
        cols: ATLAS_COLS,
        gutter: 1,
        colormap: s.colormap,
        shared_scale: s.shared_scale,
    }
}
