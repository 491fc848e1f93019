//! The Heatmap tab: class-activation maps (Grad-CAM and friends) of the current image, for
//! the base model and, once one is trained, the trained model; class and layer choice, export.

use serde::{Deserialize, Serialize};

use super::{
    STALE_OPACITY, Textures, colormap_combo, export_command, export_row, image_stem, layer_combo,
    model_or_empty, slug,
};
use crate::gui::context::{AppContext, Command, Commands};
use crate::gui::settings::ExportSettings;
use crate::gui::widgets;
use crate::jobs::views::{CamView, ModelInfo};
use crate::jobs::{JobKind, Request};
use crate::viz::cam::{CamMethod, CamOptions};
use crate::viz::colormap::Colormap;

/// The Heatmap tab's persisted options.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct HeatmapSettings {
    pub method: CamMethod,
    /// `None`: the model's default CAM layer.
    pub layer: Option<String>,
    pub colormap: Colormap,
    /// Opacity of the heatmap over the photo.
    pub alpha: f32,
}

impl Default for HeatmapSettings {
    fn default() -> Self {
        HeatmapSettings {
            method: CamMethod::GradCam,
            layer: None,
            colormap: Colormap::Jet,
            alpha: 0.4,
        }
    }
}

/// The Heatmap tab's state.
#[derive(Default)]
pub struct HeatmapTab {
    base: Option<CamView>,
    trained: Option<CamView>,
    /// The class asked for (`None`: the top class).
    class: Option<usize>,
    search: String,
    textures: Textures,
}

impl HeatmapTab {
    /// The base model's heatmap on screen.
    pub fn view(&self) -> Option<&CamView> {
        self.base.as_ref()
    }

    /// A heatmap arrived (for the trained model's row when `trained`).
    pub fn set_view(&mut self, view: CamView, trained: bool) {
        self.textures.clear();
        if trained {
            self.trained = Some(view);
        } else {
            self.base = Some(view);
        }
    }

    /// The image changed: back to its top class.
    pub fn new_image(&mut self) {
        self.class = None;
    }

    /// The requests for the base model's heatmap and the trained model's, if any.
    pub fn requests(&self, ctx: &AppContext, s: &HeatmapSettings) -> Vec<Command> {
        let Some(model) = ctx.model else {
            return Vec::new();
        };
        let mut options = CamOptions::new(
            s.method,
            s.layer.as_deref().unwrap_or(&model.default_cam_layer),
        );
        options.class = self.class;
        let request = |model: &str, options: CamOptions, trained: bool| {
            Command::Submit(Request::Cam {
                model: model.to_string(),
                image: ctx.image.to_path_buf(),
                options,
                // A trained model has its own layers (a scratch convnet): its default CAM layer.
                own_layer: trained,
                trained,
                colormap: s.colormap,
                alpha: s.alpha,
            })
        };
        let mut out = vec![request(&model.key, options, false)];
        if let Some(trained) = ctx.trained_model
            && trained != model.key
        {
            out.push(request(trained, CamOptions::new(s.method, ""), true));
        }
        out
    }

    /// Draws the tab.
    pub fn ui(
        &mut self,
        ui: &mut egui::Ui,
        ctx: &AppContext,
        s: &mut HeatmapSettings,
        export: &mut ExportSettings,
    ) -> Commands {
        let mut out = Commands::default();
        let Some(model) = model_or_empty(ui, ctx) else {
            return out;
        };
        let computing = ctx.running(JobKind::Cam);
        let mut changed = controls(ui, model, s);
        if computing {
            ui.horizontal(|ui| {
                ui.spinner();
                ui.label("computing the heatmap… (the one shown is the previous one)");
            });
        }
        egui::ScrollArea::vertical()
            .id_salt("heatmap-tab")
            .show(ui, |ui| {
                changed |= self.class_choice(ui, model);
                if let Some(view) = &self.base {
                    let (one, all) = export_row(ui, export);
                    if one || all {
                        out.push(export_figures(model, view, s, export, all));
                    }
                }
                if computing {
                    ui.multiply_opacity(STALE_OPACITY);
                }
                self.rows(ui, ctx);
            });
        if changed {
            out.push(Command::RefreshCam);
        }
        out
    }

    /// The class row (the top 5 and a search over all classes); returns whether it changed.
    fn class_choice(&mut self, ui: &mut egui::Ui, model: &ModelInfo) -> bool {
        let Some(view) = &self.base else {
            return false;
        };
        let mut changed = false;
        ui.horizontal_wrapped(|ui| {
            ui.label("class:");
            for c in &view.top5 {
                let selected = view.class == c.index;
                if ui
                    .selectable_label(selected, format!("{} {:.3}", c.class, c.prob))
                    .clicked()
                {
                    self.class = Some(c.index);
                    changed = true;
                }
            }
        });
        ui.horizontal_wrapped(|ui| {
            widgets::labelled(ui, "any class:", |ui| {
                ui.add(
                    egui::TextEdit::singleline(&mut self.search)
                        .hint_text("search")
                        .desired_width(160.0),
                )
            });
            if !self.search.is_empty() {
                let needle = self.search.to_lowercase();
                let hits: Vec<(usize, String)> = model
                    .labels
                    .iter()
                    .enumerate()
                    .filter(|(_, l)| l.to_lowercase().contains(&needle))
                    .take(8)
                    .map(|(i, l)| (i, l.clone()))
                    .collect();
                for (i, l) in hits {
                    if ui.small_button(format!("{l} ({i})")).clicked() {
                        self.class = Some(i);
                        self.search.clear();
                        changed = true;
                    }
                }
            }
        });
        changed
    }

    /// One row per model: original, heatmap, overlay (side by side when they fit, else wrapped).
    fn rows(&mut self, ui: &mut egui::Ui, ctx: &AppContext) {
        if self.base.is_none() {
            ui.label(
                "This tab shows which parts of the image made the model pick a class. It \
                 appears here once the model has looked at the image.",
            );
            return;
        }
        let egui_ctx = ui.ctx().clone();
        for (prefix, view) in [("cam", &self.base), ("trained-cam", &self.trained)] {
            let Some(view) = view else { continue };
            ui.separator();
            let who = if prefix == "cam" {
                if ctx.model.is_some_and(|m| m.history.is_empty()) {
                    "base model"
                } else {
                    "loaded model"
                }
            } else {
                "trained model"
            };
            ui.label(
                egui::RichText::new(format!(
                    "{who} — {} (p = {:.3}), {} at {}",
                    view.class_name, view.prob, view.options.method, view.options.layer
                ))
                .strong(),
            );
            let spacing = ui.spacing().item_spacing.x;
            let width = ((ui.available_width() - 2.0 * spacing) / 3.0).max(160.0);
            ui.horizontal_wrapped(|ui| {
                for (part, img) in [
                    ("original", &view.images.original),
                    ("heatmap", &view.images.heatmap),
                    ("overlay", &view.images.overlay),
                ] {
                    let t = self
                        .textures
                        .get(&egui_ctx, &format!("{prefix}-{part}"), img, true);
                    ui.vertical(|ui| {
                        ui.label(part);
                        widgets::fitted_image(ui, &t, egui::vec2(width, 320.0));
                    });
                }
            });
        }
    }
}

/// Method, layer, colormap and alpha, wrapping to the width; returns whether one changed.
fn controls(ui: &mut egui::Ui, model: &ModelInfo, s: &mut HeatmapSettings) -> bool {
    let mut changed = false;
    ui.horizontal_wrapped(|ui| {
        ui.label("method");
        for m in CamMethod::ALL {
            changed |= ui.selectable_value(&mut s.method, m, m.name()).changed();
        }
        let current = s
            .layer
            .clone()
            .unwrap_or_else(|| model.default_cam_layer.clone());
        if let Some(l) = layer_combo(ui, "cam-layer", "layer", &current, &model.spatial) {
            s.layer = Some(l);
            changed = true;
        }
        changed |= colormap_combo(ui, "cam-cmap", &mut s.colormap);
        changed |= widgets::labelled(ui, "alpha", |ui| {
            ui.add(egui::Slider::new(&mut s.alpha, 0.0..=1.0))
        })
        .drag_stopped();
    });
    changed
}

/// The export of the heatmap on screen, or of every method (`all`).
fn export_figures(
    model: &ModelInfo,
    view: &CamView,
    s: &HeatmapSettings,
    export: &ExportSettings,
    all: bool,
) -> Command {
    let methods = if all {
        CamMethod::ALL.to_vec()
    } else {
        vec![view.options.method]
    };
    let stem = image_stem(&view.image);
    let figures = methods
        .into_iter()
        .map(|method| {
            let name = format!(
                "cam_{stem}_{}_{}_{}",
                slug(&view.class_name),
                slug(&view.options.layer),
                slug(method.name())
            );
            let request = crate::export::FigureRequest::Cam(crate::export::CamRequest {
                image: view.image.clone(),
                layer: view.options.layer.clone(),
                method,
                class: Some(view.class),
                score: view.options.score,
                colormap: s.colormap,
                alpha: s.alpha,
            });
            (request, name)
        })
        .collect();
    export_command(model, export, figures)
}
