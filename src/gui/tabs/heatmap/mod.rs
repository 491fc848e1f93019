//! The Heatmap tab: class-activation maps (Grad-CAM and friends) of the current image, for
//! the base model and, once one is trained, the trained model; class and layer choice, export.

use serde::{Deserialize, Serialize};

use super::{
    STALE_OPACITY, Textures, colormap_combo, export_command, export_row, image_stem, layer_combo,
    model_chooser, model_or_empty, slug,
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
    /// The first row's layer; `None`: its model's default CAM layer.
    pub layer: Option<String>,
    pub colormap: Colormap,
    /// Opacity of the heatmap over the photo.
    pub alpha: f32,
    /// The first row's model (a key of the model chooser; `None`: the loaded model).
    pub model: Option<String>,
    /// The second row's model (`None`: the model trained in this session, if any).
    pub compare: Option<String>,
    /// The second row's layer; `None`: its model's default CAM layer.
    pub compare_layer: Option<String>,
}

impl Default for HeatmapSettings {
    fn default() -> Self {
        HeatmapSettings {
            method: CamMethod::GradCam,
            layer: None,
            colormap: Colormap::Jet,
            alpha: 0.4,
            model: None,
            compare: None,
            compare_layer: None,
        }
    }
}

/// One row of heatmaps: its last view and the class asked for.
#[derive(Default)]
struct Row {
    view: Option<CamView>,
    /// The class asked for (`None`: the top class).
    class: Option<usize>,
    search: String,
}

/// The Heatmap tab's state: the first row (the chosen model) and the second (the model it is
/// compared with, by default the one trained in this session).
#[derive(Default)]
pub struct HeatmapTab {
    rows: [Row; 2],
    textures: Textures,
}

/// The two rows' models: the first row's key and, when there is one to compare with, the
/// second's.
fn row_models(ctx: &AppContext, s: &HeatmapSettings) -> (Option<String>, Option<String>) {
    let first = ctx.model_key(s.model.as_deref());
    let second = s
        .compare
        .as_deref()
        .or(ctx.trained_model)
        .and_then(|k| ctx.model_key(Some(k)))
        .filter(|k| first.as_ref() != Some(k));
    (first, second)
}

impl HeatmapTab {
    /// The first row's heatmap on screen.
    pub fn view(&self) -> Option<&CamView> {
        self.rows[0].view.as_ref()
    }

    /// The second row's heatmap on screen (the model compared with).
    pub fn compared_view(&self) -> Option<&CamView> {
        self.rows[1].view.as_ref()
    }

    /// A heatmap arrived (for the second row when `trained`).
    pub fn set_view(&mut self, view: CamView, trained: bool) {
        self.textures.clear();
        self.rows[usize::from(trained)].view = Some(view);
    }

    /// The image changed: back to its top classes.
    pub fn new_image(&mut self) {
        for row in &mut self.rows {
            row.class = None;
        }
    }

    /// The requests for both rows' heatmaps (the second only with a model to compare with).
    pub fn requests(&self, ctx: &AppContext, s: &HeatmapSettings) -> Vec<Command> {
        let (Some(first), second) = row_models(ctx, s) else {
            return Vec::new();
        };
        let request = |model: String, layer: Option<&String>, row: usize| {
            let mut options = CamOptions::new(s.method, layer.map_or("", |l| l.as_str()));
            options.class = self.rows[row].class;
            Command::Submit(Request::Cam {
                model,
                image: ctx.image.to_path_buf(),
                options,
                // Without a layer asked for, the model's own default CAM layer (a trained model
                // may have its own layers: a scratch convnet).
                own_layer: layer.is_none(),
                trained: row == 1,
                colormap: s.colormap,
                alpha: s.alpha,
            })
        };
        let mut out = vec![request(first, s.layer.as_ref(), 0)];
        if let Some(second) = second {
            out.push(request(second, s.compare_layer.as_ref(), 1));
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
        let mut changed = controls(ui, s);
        if computing {
            ui.horizontal(|ui| {
                ui.spinner();
                ui.label("computing the heatmap… (the one shown is the previous one)");
            });
        }
        let (first, second) = row_models(ctx, s);
        egui::ScrollArea::vertical()
            .id_salt("heatmap-tab")
            .show(ui, |ui| {
                if self.rows[0].view.is_some() {
                    let (one, all) = export_row(ui, export);
                    if one || all {
                        for (row, key) in [&first, &second].into_iter().enumerate() {
                            if let (Some(view), Some(key)) = (&self.rows[row].view, key) {
                                out.push(export_figures(key, view, s, export, all, row));
                            }
                        }
                    }
                }
                if self.rows[0].view.is_none() {
                    ui.label(
                        "This tab shows which parts of the image made the model pick a class. \
                         It appears here once the model has looked at the image.",
                    );
                    return;
                }
                for row in 0..2 {
                    let key = if row == 0 { &first } else { &second };
                    if row == 1 && key.is_none() {
                        break;
                    }
                    ui.separator();
                    changed |= self.row_controls(ui, ctx, model, s, row);
                    let dim = computing;
                    ui.scope(|ui| {
                        if dim {
                            ui.multiply_opacity(STALE_OPACITY);
                        }
                        self.images(ui, row);
                    });
                }
            });
        if changed {
            out.push(Command::RefreshCam);
        }
        out
    }

    /// A row's title, model, layer and class choice; returns whether one changed.
    fn row_controls(
        &mut self,
        ui: &mut egui::Ui,
        ctx: &AppContext,
        model: &ModelInfo,
        s: &mut HeatmapSettings,
        row: usize,
    ) -> bool {
        let mut changed = false;
        let (first, second) = row_models(ctx, s);
        let key = if row == 0 { first } else { second };
        let title = key
            .as_deref()
            .map(|k| ctx.model_name(k))
            .unwrap_or_default();
        if let Some(view) = &self.rows[row].view {
            ui.label(
                egui::RichText::new(format!(
                    "{title} — {} (p = {:.3}), {} at {}",
                    view.class_name, view.prob, view.options.method, view.options.layer
                ))
                .strong(),
            );
        }
        let salt = if row == 0 { "cam" } else { "cam-compare" };
        ui.horizontal_wrapped(|ui| {
            if let Some(k) = model_chooser(ui, &format!("{salt}-model"), ctx, key.as_deref()) {
                if row == 0 {
                    s.model = Some(k);
                    s.layer = None;
                } else {
                    s.compare = Some(k);
                    s.compare_layer = None;
                }
                self.rows[row].class = None;
                changed = true;
            }
            let layer = if row == 0 {
                &mut s.layer
            } else {
                &mut s.compare_layer
            };
            let current = layer
                .clone()
                .or_else(|| {
                    self.rows[row]
                        .view
                        .as_ref()
                        .map(|v| v.options.layer.clone())
                })
                .unwrap_or_else(|| model.default_cam_layer.clone());
            // The loaded model's layers: a model trained from it (extract, finetune) has the
            // same backbone; a scratch model keeps its own default layer unless one is picked.
            if let Some(l) = layer_combo(
                ui,
                &format!("{salt}-layer"),
                "layer",
                &current,
                &model.spatial,
            ) {
                *layer = Some(l);
                changed = true;
            }
        });
        changed |= self.class_choice(ui, model, row, key.as_deref() == Some(model.key.as_str()));
        changed
    }

    /// A row's class choice: its top 5 and, for the loaded model, a search over all classes;
    /// returns whether it changed.
    fn class_choice(
        &mut self,
        ui: &mut egui::Ui,
        model: &ModelInfo,
        row: usize,
        searchable: bool,
    ) -> bool {
        let r = &mut self.rows[row];
        let Some(view) = &r.view else {
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
                    r.class = Some(c.index);
                    changed = true;
                }
            }
        });
        if !searchable {
            return changed;
        }
        ui.horizontal_wrapped(|ui| {
            widgets::labelled(ui, "any class:", |ui| {
                ui.add(
                    egui::TextEdit::singleline(&mut r.search)
                        .id_salt(("cam-search", row))
                        .hint_text("search")
                        .desired_width(160.0),
                )
            });
            if !r.search.is_empty() {
                let needle = r.search.to_lowercase();
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
                        r.class = Some(i);
                        r.search.clear();
                        changed = true;
                    }
                }
            }
        });
        changed
    }

    /// A row's original, heatmap and overlay (side by side when they fit, else wrapped).
    fn images(&mut self, ui: &mut egui::Ui, row: usize) {
        let Some(view) = &self.rows[row].view else {
            return;
        };
        let egui_ctx = ui.ctx().clone();
        let prefix = if row == 0 { "cam" } else { "trained-cam" };
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

/// Method, colormap and alpha (shared by both rows), wrapping to the width; returns whether
/// one changed.
fn controls(ui: &mut egui::Ui, s: &mut HeatmapSettings) -> bool {
    let mut changed = false;
    ui.horizontal_wrapped(|ui| {
        ui.label("method");
        for m in CamMethod::ALL {
            changed |= ui.selectable_value(&mut s.method, m, m.name()).changed();
        }
        ui.end_row();
        changed |= colormap_combo(ui, "cam-cmap", &mut s.colormap);
        changed |= widgets::labelled(ui, "alpha", |ui| {
            ui.add(egui::Slider::new(&mut s.alpha, 0.0..=1.0))
        })
        .drag_stopped();
    });
    changed
}

/// The export of a row's heatmap on screen (through `model`), or of every method (`all`); the
/// second row's files end in `_compared`.
fn export_figures(
    model: &str,
    view: &CamView,
    s: &HeatmapSettings,
    export: &ExportSettings,
    all: bool,
    row: usize,
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
                "cam_{stem}_{}_{}_{}{}",
                slug(&view.class_name),
                slug(&view.options.layer),
                slug(method.name()),
                if row == 1 { "_compared" } else { "" }
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
