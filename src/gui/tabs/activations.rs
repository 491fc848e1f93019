//! The Activations tab: every channel of one layer for the current image as a zoomable grid,
//! a click enlarges one channel, and the sparsity of every layer by depth.

use egui_plot::{Legend, Line, Plot, PlotPoints};
use serde::{Deserialize, Serialize};

use super::{
    STALE_OPACITY, Textures, colormap_combo, empty_state, export_command, export_row, image_stem,
    layer_combo, model_chooser, model_or_empty, slug,
};
use crate::gui::context::{AppContext, Command, Commands};
use crate::gui::settings::ExportSettings;
use crate::gui::widgets;
use crate::jobs::views::ActivationView;
use crate::jobs::{JobKind, Request};
use crate::viz::activations::{GridOptions, LayerSparsity};
use crate::viz::colormap::Colormap;

/// The Activations tab's persisted options.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ActivationSettings {
    pub cols: usize,
    pub colormap: Colormap,
    /// One colour scale for all channels instead of one per channel.
    pub shared_scale: bool,
    /// The model looked through (a key of the model chooser; `None`: the loaded model).
    pub model: Option<String>,
}

impl Default for ActivationSettings {
    fn default() -> Self {
        ActivationSettings {
            cols: 16,
            colormap: Colormap::Viridis,
            shared_scale: false,
            model: None,
        }
    }
}

/// The Activations tab's state.
#[derive(Default)]
pub struct ActivationsTab {
    view: Option<ActivationView>,
    sparsity: Vec<LayerSparsity>,
    enlarged: Option<usize>,
    textures: Textures,
}

impl ActivationsTab {
    /// The grid on screen.
    pub fn view(&self) -> Option<&ActivationView> {
        self.view.as_ref()
    }

    /// A new grid arrived.
    pub fn set_view(&mut self, view: ActivationView) {
        self.textures.clear();
        self.enlarged = None;
        self.view = Some(view);
    }

    /// A new sparsity profile arrived.
    pub fn set_sparsity(&mut self, sparsity: Vec<LayerSparsity>) {
        self.sparsity = sparsity;
    }

    /// The requests that recompute the grid and the sparsity profile.
    pub fn requests(ctx: &AppContext, s: &ActivationSettings) -> Vec<Command> {
        let (Some(model), Some(layer)) = (ctx.model_key(s.model.as_deref()), ctx.layer) else {
            return Vec::new();
        };
        let options = GridOptions {
            cols: s.cols.max(1),
            gutter: 1,
            colormap: s.colormap,
            shared_scale: s.shared_scale,
        };
        vec![
            Command::Submit(Request::Activations {
                model: model.clone(),
                image: ctx.image.to_path_buf(),
                layer: layer.to_string(),
                options,
            }),
            Command::Submit(Request::Sparsity {
                model,
                image: ctx.image.to_path_buf(),
            }),
        ]
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
        let mut changed = false;
        let key = ctx.model_key(s.model.as_deref()).unwrap_or_default();
        ui.horizontal_wrapped(|ui| {
            if let Some(k) = model_chooser(ui, "act-model", ctx, Some(&key)) {
                s.model = Some(k);
                changed = true;
            }
            let current = ctx.layer.unwrap_or_default();
            if let Some(l) = layer_combo(ui, "act-layer", "layer", current, &model.spatial) {
                out.push(Command::SelectLayer(l));
            }
            changed |= widgets::labelled(ui, "columns", |ui| {
                ui.add(egui::DragValue::new(&mut s.cols).range(1..=64))
            })
            .changed();
            changed |= colormap_combo(ui, "act-cmap", &mut s.colormap);
            changed |= ui.checkbox(&mut s.shared_scale, "shared scale").changed();
            if computing {
                ui.spinner();
            }
        });
        if changed {
            out.push(Command::RefreshActivations);
        }
        let Some(view) = &self.view else {
            if !computing
                && empty_state(
                    ui,
                    "This tab shows what every channel of a layer responds to in the image: \
                     one small map per channel.",
                    &format!("Show {} for this image", ctx.layer.unwrap_or("a layer")),
                    ctx.layer.is_some(),
                )
            {
                out.push(Command::RefreshActivations);
            }
            return out;
        };
        let (one, all) = export_row(ui, export);
        if one || all {
            let layers = if all {
                model.spatial.clone()
            } else {
                vec![view.layer.clone()]
            };
            let stem = image_stem(&view.image);
            let figures = layers
                .into_iter()
                .map(|layer| {
                    let name = format!("activations_{stem}_{}", slug(&layer));
                    let request = crate::export::FigureRequest::Activations(
                        crate::export::ActivationsRequest {
                            image: view.image.clone(),
                            layer,
                            grid: view.options.clone(),
                        },
                    );
                    (request, name)
                })
                .collect();
            out.push(export_command(&key, export, figures));
        }
        let blank = view.stats.iter().filter(|s| s.is_blank()).count();
        ui.label(format!(
            "{}: {} channels of {}×{}, {} blank ({:.0}%) — ctrl+wheel zooms, click a channel",
            view.layer,
            view.stats.len(),
            view.layout.tile.0,
            view.layout.tile.1,
            blank,
            100.0 * blank as f32 / view.stats.len().max(1) as f32
        ));
        if computing {
            ui.multiply_opacity(STALE_OPACITY);
        }
        self.grid_and_details(ui);
        out
    }

    fn grid_and_details(&mut self, ui: &mut egui::Ui) {
        let Some(view) = &self.view else { return };
        let egui_ctx = ui.ctx().clone();
        let tex = self
            .textures
            .get(&egui_ctx, "activations", &view.grid, false);
        let wide = ui.available_width() > 700.0;
        let grid_width = if wide {
            (ui.available_width() * 0.64).max(200.0)
        } else {
            ui.available_width()
        };
        let height = ui.available_height();
        let mut enlarge = None;
        let layout = if wide {
            egui::Layout::left_to_right(egui::Align::Min)
        } else {
            egui::Layout::top_down(egui::Align::Min)
        };
        ui.with_layout(layout, |ui| {
            ui.allocate_ui(egui::vec2(grid_width, height), |ui| {
                let zoom_id = ui
                    .scope_id()
                    .with(("act-zoom", &view.layer, view.layout.cols));
                let mut zoom: f32 = ui.data(|d| d.get_temp(zoom_id)).unwrap_or(0.0);
                let avail = ui.available_size();
                let size = tex.size_vec2();
                if zoom <= 0.0 {
                    zoom = (avail.x / size.x).min(avail.y.max(100.0) / size.y).max(0.1);
                }
                let r = egui::ScrollArea::both()
                    .id_salt("act-scroll")
                    .show(ui, |ui| {
                        ui.add(
                            egui::Image::from_texture((tex.id(), size * zoom))
                                .sense(egui::Sense::click()),
                        )
                    });
                let response = r.inner;
                if response.hovered() {
                    // Ctrl + wheel (or a pinch) zooms; the wheel alone scrolls.
                    let factor = ui.input(|i| i.zoom_delta());
                    if factor != 1.0 {
                        zoom = (zoom * factor).clamp(0.05, 40.0);
                    }
                }
                ui.data_mut(|d| d.insert_temp(zoom_id, zoom));
                if let Some(pos) = response.hover_pos() {
                    let local = (pos - response.rect.min) / zoom;
                    if let Some(c) = view.layout.tile_at(local.x as u32, local.y as u32) {
                        let s = &view.stats[c];
                        response.clone().on_hover_text(format!(
                            "channel {c}\nmin {:.3}  max {:.3}  mean {:.3}",
                            s.min, s.max, s.mean
                        ));
                        if response.clicked() {
                            enlarge = Some(c);
                        }
                    }
                }
            });
            egui::ScrollArea::vertical()
                .id_salt("act-details")
                .show(ui, |ui| {
                    // Top to bottom, whatever the layout around it.
                    ui.vertical(|ui| {
                        details(ui, view, &self.sparsity, self.enlarged, &mut self.textures)
                    });
                });
        });
        if enlarge.is_some() {
            self.enlarged = enlarge;
        }
    }
}

/// The enlarged channel and the sparsity plot.
fn details(
    ui: &mut egui::Ui,
    view: &ActivationView,
    sparsity: &[LayerSparsity],
    enlarged: Option<usize>,
    textures: &mut Textures,
) {
    if let Some(c) = enlarged {
        let s = view.stats[c];
        ui.label(format!(
            "channel {c}: min {:.3}, max {:.3}, mean {:.3}",
            s.min, s.max, s.mean
        ));
        let t = textures.get(
            ui.ctx(),
            &format!("channel-{}-{c}", view.layer),
            &view.channels[c],
            false,
        );
        widgets::fitted_image(ui, &t, egui::vec2(ui.available_width(), 260.0));
    }
    if sparsity.is_empty() {
        return;
    }
    widgets::section(ui, "Sparsity by depth");
    let points = |f: &dyn Fn(&LayerSparsity) -> f32| -> PlotPoints<'static> {
        sparsity
            .iter()
            .enumerate()
            .map(|(i, s)| [i as f64, f(s) as f64])
            .collect::<Vec<_>>()
            .into()
    };
    let names: Vec<String> = sparsity.iter().map(|s| s.layer.clone()).collect();
    Plot::new("sparsity")
        .height(200.0)
        .allow_scroll(false)
        .include_y(0.0)
        .include_y(1.15)
        .y_axis_label("fraction")
        .legend(Legend::default())
        .x_axis_label("layer (depth)")
        .x_axis_formatter(move |mark, _| {
            names
                .get(mark.value.round() as usize)
                .cloned()
                .unwrap_or_default()
        })
        .show(ui, |p| {
            p.line(Line::new("blank channels", points(&|s| s.blank_fraction)));
            p.line(Line::new(
                "zero values",
                points(&|s| 1.0 - s.active_fraction),
            ));
        });
}
