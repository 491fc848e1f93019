//! One row's title (model, class and score) and its model, layer and class controls.

use super::{ClassChoice, HeatmapSettings, HeatmapTab, RowChoice};
use crate::gui::context::AppContext;
use crate::gui::widgets;
use crate::jobs::views::{CamView, ModelInfo};
use crate::viz::cam::MethodKind;

/// What the user did with a row's controls.
#[derive(Default)]
pub(super) struct RowEdit {
    /// The model, layer or class changed: the heatmaps are recomputed.
    pub changed: bool,
    /// "Remove row" was clicked.
    pub remove: bool,
}

/// A row's title: the model's name, then the class shown with what it stands for and its
/// probability, then method and layer: `trained: model — true class: bag (p = 0.250),
/// gradcam at blocks.6`.
pub(super) fn title(model: &str, view: &CamView, role: Option<&str>) -> String {
    let class = match role {
        Some(role) => format!("{role}: {}", view.class_name),
        None => view.class_name.clone(),
    };
    let (h, w) = view.map_size;
    let at = match view.options.method.kind() {
        MethodKind::Layer => format!("at {} ({h}×{w})", view.options.layer),
        MethodKind::Pixel => format!("on the pixels ({h}×{w})"),
    };
    let mut text = format!(
        "{model} — {class} (p = {:.3}), {} {at}",
        view.prob, view.options.method
    );
    if let Some(c) = view.completeness {
        text.push_str(&format!(
            "; completeness error {:.3e} of a score difference {:.4}",
            c.error, c.score_difference
        ));
    }
    text
}

impl HeatmapTab {
    /// A row's title, model, layer and class choice (`key`: the row's model).
    pub(super) fn row_controls(
        &mut self,
        ui: &mut egui::Ui,
        ctx: &AppContext,
        model: &ModelInfo,
        s: &mut HeatmapSettings,
        row: usize,
        key: &str,
    ) -> RowEdit {
        let mut edit = RowEdit::default();
        let name = self.model_name(ctx, key);
        self.row_mut(row);
        if let Some(view) = &self.rows[row].view {
            let role = super::role_of(s, row, view).map(super::Role::name);
            let text = title(&name, view, role);
            ui.label(egui::RichText::new(text).strong());
        }
        let choices = self.choices(ctx);
        let method = s.method;
        let salt = format!("cam-row-{row}");
        ui.horizontal_wrapped(|ui| {
            let id = format!("{salt}-model");
            let picked = super::super::model_combo(ui, &id, &choices, Some(key), &name);
            let choice = &mut s.rows[row];
            if let Some(k) = picked {
                choice.model = Some(k);
                choice.layer = None;
                choice.class = None;
                edit.changed = true;
            }
            let current = choice
                .layer
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
            if !method.uses_layer() {
                ui.label(
                    egui::RichText::new(format!("layer: none, {method} maps the pixels")).weak(),
                );
            } else if let Some(l) = super::super::layer_combo(
                ui,
                &format!("{salt}-layer"),
                "layer",
                &current,
                &model.spatial,
            ) {
                choice.layer = Some(l);
                edit.changed = true;
            }
            if row > 0 && ui.small_button("Remove row").clicked() {
                edit.remove = true;
            }
        });
        edit.changed |= self.class_choice(ui, model, &mut s.rows[row], row, key);
        edit
    }

    /// A row's class choice: its top 5 and, for the loaded model, a search over all classes;
    /// returns whether it changed. `key`: the row's model.
    fn class_choice(
        &mut self,
        ui: &mut egui::Ui,
        model: &ModelInfo,
        choice: &mut RowChoice,
        row: usize,
        key: &str,
    ) -> bool {
        let searchable = key == model.key;
        let r = &mut self.rows[row];
        let Some(view) = &r.view else {
            return false;
        };
        let mut pick = |index: usize| {
            choice.class = Some(ClassChoice {
                model: key.to_string(),
                index: Some(index),
                role: None,
            });
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
                    pick(c.index);
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
                        pick(i);
                        r.search.clear();
                        changed = true;
                    }
                }
            }
        });
        changed
    }
}
