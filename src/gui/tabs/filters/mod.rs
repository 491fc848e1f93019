//! The Filters tab: the pattern each filter of a layer responds to most, computed by gradient
//! ascent tile by tile, in a grid that wraps to the width and scrolls; optionally the filters of
//! a second model beside it (of its own layer when it lacks the selected one), and an export of
//! what is on screen.

mod grid;

use serde::{Deserialize, Serialize};

use super::compare::{Described, compare_chooser, compare_key, file_name_of, layer_for};
use super::{empty_state, export_target, layer_combo, model_chooser, model_or_empty, slug};
use crate::gui::context::{AppContext, Command, Commands};
use crate::gui::settings::ExportSettings;
use crate::gui::widgets;
use crate::jobs::views::ModelInfo;
use crate::jobs::{JobId, JobKind, Request};
use crate::viz::filters::{FilterMethod, FilterOptions};
use grid::FilterGrid;

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
    /// The model whose filters are shown beside (a key of the model chooser; `None`: none).
    pub compare: Option<String>,
    /// The layer of the compared model when it lacks the selected one (its own layers).
    pub compare_layer: Option<String>,
    /// The layer of the chosen model when it lacks the selected one (its own layers, e.g. of
    /// a model trained from scratch).
    pub own_layer: Option<String>,
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
            compare: None,
            compare_layer: None,
            own_layer: None,
        }
    }
}

/// The Filters tab's state: the loaded model's tiles and the compared model's.
#[derive(Default)]
pub struct FiltersTab {
    main: FilterGrid,
    other: FilterGrid,
    /// The compared model's request, submitted and not started yet (where its job goes).
    pending: Option<(String, String)>,
    /// The layers of the models compared with.
    described: Described,
    /// The clicked filter's top images in the data folder.
    pub examples: super::examples::ExamplesPanel,
}

impl FiltersTab {
    /// Tiles finished and asked for, of the loaded model's grid.
    pub fn progress(&self) -> (usize, usize) {
        self.main.progress()
    }

    /// Tiles finished and asked for, of the compared model's grid.
    pub fn compared_progress(&self) -> (usize, usize) {
        self.other.progress()
    }

    /// The job that computes tiles was submitted: for the compared grid when it is the
    /// compared model's request, for the first grid otherwise.
    pub fn started(&mut self, job: JobId, request: &Request) {
        if let Request::Filters { model, layer, .. } = request
            && self.pending.as_ref() == Some(&(model.clone(), layer.clone()))
        {
            self.pending = None;
            self.other.started(job, request);
        } else {
            self.main.started(job, request);
        }
    }

    /// A finished tile of job `job`.
    pub fn tile(&mut self, job: JobId, index: usize, image: image::RgbImage) {
        if !self.main.tile(job, index, &image) {
            self.other.tile(job, index, &image);
        }
    }

    /// A model compared with was described.
    pub fn described(&mut self, info: &ModelInfo) {
        self.described.insert(info);
    }

    /// The command that computes the tab's filters: of the selected layer, or of the chosen
    /// model's own layer when it lacks that one; `None` while its layers are not known.
    pub fn compute_command(&self, ctx: &AppContext, s: &FilterSettings) -> Option<Command> {
        let model = ctx.model_key(s.model.as_deref())?;
        let (layer, _) = self.shown_layer(ctx, &model, s)?;
        Some(filters_request(s, model, layer))
    }

    /// The layer the first grid is of for the model `key` and whether it replaces the selected
    /// one (the model lacks it); `None` while the model's layers are not known.
    fn shown_layer(
        &self,
        ctx: &AppContext,
        key: &str,
        s: &FilterSettings,
    ) -> Option<(String, bool)> {
        let own = self.described.spatial(ctx, key)?;
        layer_for(ctx.layer?, own, s.own_layer.as_deref())
    }

    /// The compared model, the layer its filters are of, and whether that is its own layer
    /// (it lacks the selected one); `None` while comparison is off or its layers are unknown.
    fn compared(&self, ctx: &AppContext, s: &FilterSettings) -> Option<(String, String, bool)> {
        let other = compare_key(ctx, s.compare.as_deref())?;
        let own = self.described.spatial(ctx, &other)?;
        let (layer, replaced) = layer_for(ctx.layer?, own, s.compare_layer.as_deref())?;
        Some((other, layer, replaced))
    }

    /// The commands that compute the filters of both models (the compared one's is noted, so
    /// that its tiles go beside the first).
    fn compute_both(&mut self, ctx: &AppContext, s: &FilterSettings) -> Commands {
        let mut out = Commands(self.compute_command(ctx, s).into_iter().collect());
        if let Some((other, layer, _)) = self.compared(ctx, s) {
            self.pending = Some((other.clone(), layer.clone()));
            out.push(filters_request(s, other, layer));
        }
        out
    }

    /// Draws the tab.
    pub fn ui(
        &mut self,
        ui: &mut egui::Ui,
        ctx: &AppContext,
        s: &mut FilterSettings,
        export: &mut ExportSettings,
    ) -> Commands {
        let mut out = Commands::default();
        let Some(model) = model_or_empty(ui, ctx) else {
            return out;
        };
        let running = ctx.running(JobKind::Filters);
        let other = compare_key(ctx, s.compare.as_deref());
        let key = ctx.model_key(s.model.as_deref()).unwrap_or_default();
        let selected = ctx.layer.unwrap_or_default();
        let (current, replaced) = self
            .shown_layer(ctx, &key, s)
            .unwrap_or_else(|| (selected.to_string(), false));
        let layers = match self.described.spatial(ctx, &key) {
            Some(own) => own.to_vec(),
            None => {
                out.extend(Commands(
                    self.described.ask(ctx, &key).into_iter().collect(),
                ));
                model.spatial.clone()
            }
        };
        ui.horizontal_wrapped(|ui| {
            if let Some(k) = model_chooser(ui, "filter-model", ctx, Some(&key)) {
                s.model = Some(k);
                s.own_layer = None;
            }
            if let Some(l) = layer_combo(ui, "filter-layer", "layer", &current, &layers) {
                if replaced {
                    s.own_layer = Some(l);
                } else {
                    out.push(Command::SelectLayer(l));
                }
            }
            if let Some(c) = compare_chooser(ui, "filter-compare", ctx, other.as_deref()) {
                s.compare = c;
                s.compare_layer = None;
                self.other = FilterGrid::default();
            }
            options_ui(ui, s);
        });
        if let Some(other) = &other {
            out.extend(Commands(
                self.described.ask(ctx, other).into_iter().collect(),
            ));
        }
        if replaced {
            ui.label(format!(
                "{} has no layer {selected}: it was built with its own layers (e.g. trained \
                 from scratch), so its own layer {current} is shown.",
                ctx.model_name(&key)
            ));
        }
        // The chosen model's layers are read on the worker after it is chosen; until they
        // are known there is nothing to compute, and a click must not be swallowed silently.
        let reading = self.described.spatial(ctx, &key).is_none();
        let ready = self.shown_layer(ctx, &key, s).is_some();
        ui.horizontal_wrapped(|ui| {
            let compute = ui
                .add_enabled(!running && ready, egui::Button::new("Compute"))
                .on_disabled_hover_text(if reading {
                    "Reading the chosen model's layers"
                } else if running {
                    "The filters are being computed"
                } else {
                    "Select a layer first"
                });
            if reading {
                ui.spinner();
                ui.label(format!("reading the layers of {}", ctx.model_name(&key)));
            }
            if compute.clicked() {
                out.extend(self.compute_both(ctx, s));
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
        if self.main.tiles.is_empty() {
            let action = format!("Compute {} filters of {current}", s.count);
            if empty_state(
                ui,
                "This tab shows the pattern each filter of a layer responds to most, found by \
                 gradient ascent from noise.",
                &action,
                ready && !running,
            ) {
                out.extend(self.compute_both(ctx, s));
            }
            return out;
        }
        out.extend(self.export_ui(ui, export, running));
        out.0.extend(self.grids(ui, ctx, s, other.as_deref()));
        out
    }

    /// The export folder and scale, and "Export PNG": the grids on screen as figures.
    fn export_ui(&self, ui: &mut egui::Ui, export: &mut ExportSettings, running: bool) -> Commands {
        let mut out = Commands::default();
        let shown = [&self.main, &self.other];
        let figures: Vec<_> = shown
            .iter()
            .filter_map(|g| g.figure().map(|f| (*g, f)))
            .collect();
        let clicked = ui
            .horizontal_wrapped(|ui| {
                export_target(ui, export);
                ui.add_enabled(
                    !running && !figures.is_empty(),
                    egui::Button::new("Export PNG"),
                )
                .on_hover_text("the filter grids on screen, each as a PNG with a JSON sidecar")
                .on_disabled_hover_text("once every tile on screen is computed")
                .clicked()
            })
            .inner;
        if clicked {
            let dir = std::path::PathBuf::from(&export.dir);
            for (g, figure) in figures {
                let name = format!("filters_{}_{}.png", file_name_of(&g.model), slug(&g.layer));
                out.push(Command::Submit(Request::Export {
                    model: g.model.clone(),
                    figures: vec![(figure, dir.join(name))],
                    scale: export.scale,
                }));
            }
        }
        out
    }

    /// The grids, each under its model's name: side by side when wide, else one above the
    /// other, in one scroll area.
    fn grids(
        &mut self,
        ui: &mut egui::Ui,
        ctx: &AppContext,
        s: &mut FilterSettings,
        other: Option<&str>,
    ) -> Option<Command> {
        let mut out = None;
        let compared = other.and_then(|_| self.compared(ctx, s));
        let ids = ctx.jobs.ids(JobKind::Filters);
        let running = |g: &FilterGrid| g.job.is_some_and(|j| ids.contains(&j));
        let beside = other.is_some() && ui.available_width() >= 2.0 * (3.0 * grid::TILE + 24.0);
        egui::ScrollArea::vertical()
            .id_salt("filter-tiles")
            .show(ui, |ui| {
                let half = if beside {
                    ui.available_width() / 2.0 - 8.0
                } else {
                    ui.available_width()
                };
                let layout = if beside {
                    egui::Layout::left_to_right(egui::Align::Min)
                } else {
                    egui::Layout::top_down(egui::Align::Min)
                };
                ui.with_layout(layout, |ui| {
                    ui.vertical(|ui| {
                        ui.set_width(half);
                        title(ui, ctx, &self.main);
                        let r = running(&self.main);
                        self.main.show(ui, "filter", r);
                        let main = &self.main;
                        if let Some((i, Some(tile))) =
                            main.clicked.and_then(|i| main.tiles.get(i).map(|t| (i, t)))
                        {
                            let (key, layer) = (main.model.clone(), main.layer.clone());
                            let tile = tile.clone();
                            out = self.examples.ui(
                                ui,
                                ctx,
                                &key,
                                &layer,
                                main.first + i,
                                Some(&tile),
                            );
                        }
                    });
                    let Some(other) = other else { return };
                    ui.vertical(|ui| {
                        ui.set_width(half);
                        ui.add_space(8.0);
                        self.compared_ui(ui, ctx, s, other, compared.as_ref());
                        if !self.other.tiles.is_empty() {
                            title(ui, ctx, &self.other);
                            let r = running(&self.other);
                            self.other.show(ui, "filter-2", r);
                        }
                    });
                });
            });
        out
    }

    /// What the compared side says before its tiles: its own layer and why, or what to do.
    fn compared_ui(
        &self,
        ui: &mut egui::Ui,
        ctx: &AppContext,
        s: &mut FilterSettings,
        other: &str,
        compared: Option<&(String, String, bool)>,
    ) {
        let name = ctx.model_name(other);
        match compared {
            None if ctx.running(JobKind::Model) => {
                ui.horizontal(|ui| {
                    ui.spinner();
                    ui.label(format!("reading the layers of {name}…"));
                });
            }
            None => {
                ui.label(format!(
                    "The layers of {name} could not be read; the message log says why."
                ));
            }
            Some((_, layer, true)) => {
                ui.label(format!(
                    "{name} has no layer {}: it was built with its own layers (e.g. trained \
                     from scratch), so its filters are shown for its own layer:",
                    ctx.layer.unwrap_or_default()
                ));
                let own = self.described.spatial(ctx, other).unwrap_or_default();
                if let Some(l) = layer_combo(ui, "filter-compare-layer", "its layer", layer, own) {
                    s.compare_layer = Some(l);
                }
            }
            Some(_) => {}
        }
        if self.other.tiles.is_empty() && compared.is_some() {
            ui.label(format!("Compute shows {name}'s filters here."));
        }
    }
}

/// A model's name and what its tiles are, above its grid.
fn title(ui: &mut egui::Ui, ctx: &AppContext, g: &FilterGrid) {
    let (done, total) = g.progress();
    ui.label(
        egui::RichText::new(format!(
            "{} — {done} of {total} filters of {} computed",
            ctx.model_name(&g.model),
            g.layer
        ))
        .strong(),
    );
}

/// The request that computes the tab's filters of `layer` of `model`.
fn filters_request(s: &FilterSettings, model: String, layer: String) -> Command {
    let mut options = FilterOptions::for_method(s.method, s.size);
    options.ascent.steps = s.steps;
    options.seed = s.seed;
    Command::Submit(Request::Filters {
        model,
        layer,
        filters: (s.first..s.first + s.count).collect(),
        options,
    })
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
