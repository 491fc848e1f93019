//! The Map tab: the dataset seen through a model. A scatter of every image's pooled features
//! projected to 2-D (PCA or t-SNE), coloured by class, prediction or correct/wrong; hover shows
//! the image, a click opens it in Heatmap, a dragged box lists the images inside. Below it, the
//! suspect labels: images ranked by the out-of-fold probability of their label. Both are
//! computed on the worker (status bar: progress and Cancel).

mod scatter;
mod suspects;

use std::path::{Path, PathBuf};

use super::job_line::job_line;
use super::{STALE_OPACITY, model_chooser, model_or_empty};
use crate::gui::context::{AppContext, Command, Commands, ModelChoice};
use crate::gui::settings::Tab;
use crate::gui::tabs::heatmap::Explain;
use crate::gui::widgets;
use crate::insight::map::{ColorBy, DatasetMap, Method, Projection};
use crate::insight::tsne::TsneOptions;
use crate::jobs::insight::SuspectsView;
use crate::jobs::{JobKind, Request};

/// The Map tab's state.
pub struct MapTab {
    /// The model asked (a key of the chooser; `None`: this session's trained model if any,
    /// else the loaded one).
    pub model: Option<String>,
    pub method: Method,
    /// t-SNE's settings (perplexity and iterations are shown when t-SNE is chosen).
    pub tsne: TsneOptions,
    pub color: ColorBy,
    pub folds: usize,
    map: Option<DatasetMap>,
    /// The model key the map on screen was made with.
    made_with: String,
    suspects: Option<SuspectsView>,
    scatter: scatter::ScatterState,
}

impl Default for MapTab {
    fn default() -> Self {
        MapTab {
            model: None,
            method: Method::Pca,
            tsne: TsneOptions::default(),
            color: ColorBy::Class,
            folds: 5,
            map: None,
            made_with: String::new(),
            suspects: None,
            scatter: scatter::ScatterState::default(),
        }
    }
}

impl MapTab {
    /// A finished map, made with the model `key` (a key of the chooser).
    pub fn set_map(&mut self, key: String, map: DatasetMap) {
        self.made_with = key;
        self.scatter = scatter::ScatterState::default();
        if self.color == ColorBy::Correct && map.points.iter().any(|p| p.correct.is_none()) {
            self.color = ColorBy::Class;
        }
        self.map = Some(map);
    }

    /// Finished suspect labels.
    pub fn set_suspects(&mut self, view: SuspectsView) {
        self.suspects = Some(view);
    }

    /// The map on screen.
    pub fn map(&self) -> Option<&DatasetMap> {
        self.map.as_ref()
    }

    /// The suspect labels on screen.
    pub fn suspects(&self) -> Option<&SuspectsView> {
        self.suspects.as_ref()
    }

    /// The images inside the last dragged box.
    pub fn selection(&self) -> &[usize] {
        &self.scatter.selected
    }

    fn model_key(&self, ctx: &AppContext) -> Option<String> {
        ctx.model_key(self.model.as_deref().or(ctx.trained_model))
    }

    /// The command that computes the map with the chosen model and method.
    pub fn map_command(&self, ctx: &AppContext) -> Option<Command> {
        Some(Command::Submit(Request::Map {
            model: self.model_key(ctx)?,
            data_dir: ctx.data?.root.clone(),
            projection: Projection {
                method: self.method,
                tsne: self.tsne,
            },
        }))
    }

    /// The command that computes the suspect labels.
    pub fn suspects_command(&self, ctx: &AppContext) -> Option<Command> {
        Some(Command::Submit(Request::Suspects {
            model: self.model_key(ctx)?,
            data_dir: ctx.data?.root.clone(),
            folds: self.folds,
        }))
    }

    /// Draws the tab.
    pub fn ui(&mut self, ui: &mut egui::Ui, ctx: &AppContext) -> Commands {
        let mut out = Commands::default();
        if model_or_empty(ui, ctx).is_none() {
            return out;
        }
        let Some(data) = ctx.data else {
            ui.label("No data folder is scanned: pick one in the left panel.");
            return out;
        };
        egui::ScrollArea::vertical()
            .id_salt("map-scroll")
            .show(ui, |ui| {
                ui.label(format!(
                    "{}: every image's pooled features through the model, in 2-D.",
                    data.root.display()
                ));
                self.controls(ui, ctx, &mut out);
                let busy = ctx.running(JobKind::Map);
                match &self.map {
                    Some(map) => {
                        let current = self.model_key(ctx);
                        let stale =
                            stale_reason(ctx, current.as_deref(), &self.made_with, &map.dataset);
                        if let Some(why) = &stale {
                            stale_line(ui, &format!("This map is out of date: {why}."));
                        }
                        let opacity = if busy || stale.is_some() {
                            STALE_OPACITY
                        } else {
                            1.0
                        };
                        // A click explains a point with the model that placed it.
                        let model = Some(self.made_with.clone());
                        ui.scope(|ui| {
                            ui.set_opacity(opacity);
                            scatter::ui(
                                ui,
                                ctx,
                                &model,
                                map,
                                self.color,
                                &mut self.scatter,
                                &mut out,
                            );
                        });
                        self.selection_list(ui, ctx, &mut out);
                    }
                    None if busy => {
                        ui.label("Computing the map…");
                    }
                    None => {
                        ui.label("No map yet: choose a method and click Compute map.");
                    }
                }
                ui.separator();
                suspects::ui(ui, ctx, self, &mut out);
            });
        out
    }

    /// Perplexity and iterations of t-SNE, within the ranges people use (the defaults are
    /// scikit-learn's).
    fn tsne_controls(&mut self, ui: &mut egui::Ui) {
        ui.weak("t-SNE");
        let label = ui.label("perplexity");
        ui.add(egui::DragValue::new(&mut self.tsne.perplexity).range(2.0..=100.0))
            .labelled_by(label.id)
            .on_hover_text(
                "about how many neighbours each image keeps close: small values show local \
                 clusters, large ones the overall layout (5-50 is usual)",
            );
        let label = ui.label("iterations");
        ui.add(
            egui::DragValue::new(&mut self.tsne.epochs)
                .range(250..=10_000)
                .speed(10.0),
        )
        .labelled_by(label.id)
        .on_hover_text("gradient steps; the first 250 pull clusters apart");
    }

    fn controls(&mut self, ui: &mut egui::Ui, ctx: &AppContext, out: &mut Commands) {
        ui.horizontal_wrapped(|ui| {
            let current = self.model_key(ctx);
            if let Some(k) = model_chooser(ui, "map-model", ctx, current.as_deref()) {
                self.model = Some(k);
            }
            let label = ui.label("method");
            egui::ComboBox::from_id_salt("map-method")
                .selected_text(self.method.name())
                .show_ui(ui, |ui| {
                    for m in Method::ALL {
                        ui.selectable_value(&mut self.method, m, m.name());
                    }
                })
                .response
                .labelled_by(label.id);
            let label = ui.label("colour by");
            let has_correct = self
                .map
                .as_ref()
                .is_some_and(|m| m.points.iter().all(|p| p.correct.is_some()));
            egui::ComboBox::from_id_salt("map-color")
                .selected_text(self.color.name())
                .show_ui(ui, |ui| {
                    for c in ColorBy::ALL {
                        let enabled = c != ColorBy::Correct || has_correct;
                        ui.add_enabled_ui(enabled, |ui| {
                            ui.selectable_value(&mut self.color, c, c.name())
                                .on_disabled_hover_text(
                                    "needs a model trained on this folder's classes",
                                );
                        });
                    }
                })
                .response
                .labelled_by(label.id);
            let busy = ctx.running(JobKind::Map);
            if ui
                .add_enabled(!busy, egui::Button::new("Compute map"))
                .clicked()
            {
                out.0.extend(self.map_command(ctx));
            }
            job_line(ui, ctx, JobKind::Map, "Cancel map", out);
        });
        if self.method == Method::Tsne {
            ui.horizontal_wrapped(|ui| self.tsne_controls(ui));
        }
    }

    /// The images of the dragged box, with thumbnails; a click opens one in Heatmap.
    fn selection_list(&self, ui: &mut egui::Ui, ctx: &AppContext, out: &mut Commands) {
        let Some(map) = &self.map else {
            return;
        };
        let selected = &self.scatter.selected;
        if selected.is_empty() {
            ui.label("Drag a box on the map (with the Select box option) to list its images.");
            return;
        }
        widgets::section(ui, &format!("{} images in the box", selected.len()));
        let mut wanted = Vec::new();
        ui.horizontal_wrapped(|ui| {
            for &i in selected.iter().take(MAX_LISTED) {
                let p = &map.points[i];
                let path = map.dataset.join(&p.path);
                let hover = point_text(p);
                match ctx.thumbs.get(&path) {
                    Some(tex) => {
                        let name = p.path.to_string_lossy();
                        if widgets::named_image(ui, tex, egui::vec2(64.0, 64.0), &name)
                            .on_hover_text(hover)
                            .clicked()
                        {
                            let model = Some(self.made_with.clone());
                            out.0.extend(open_in_heatmap(ctx, &model, map, i));
                        }
                    }
                    None => {
                        ui.add_sized([64.0, 64.0], egui::Spinner::new());
                        wanted.push(path);
                    }
                }
            }
        });
        if selected.len() > MAX_LISTED {
            ui.label(format!("(the first {MAX_LISTED} are shown)"));
        }
        if !wanted.is_empty() {
            out.push(Command::Thumbnails(wanted));
        }
    }
}

/// Why a result made with the model `made_with` from the folder `dataset` no longer shows
/// what the tab's choices ask for (`current`: the model chosen now); `None` while it does.
fn stale_reason(
    ctx: &AppContext,
    current: Option<&str>,
    made_with: &str,
    dataset: &Path,
) -> Option<String> {
    if current != Some(made_with) {
        return Some(format!(
            "it was made with {}, not the model chosen above (compute it again for that one)",
            ctx.model_name(made_with)
        ));
    }
    match ctx.data {
        Some(d) if d.root != dataset => Some(format!(
            "it was made from {}, not the data folder scanned now",
            dataset.display()
        )),
        _ => None,
    }
}

/// A warning line saying why the result under it is dimmed.
fn stale_line(ui: &mut egui::Ui, text: &str) {
    ui.label(egui::RichText::new(text).color(ui.visuals().warn_fg_color));
}

/// The most thumbnails a selection lists.
const MAX_LISTED: usize = 200;

/// A point's hover text: path, label, prediction.
fn point_text(p: &crate::insight::map::MapPoint) -> String {
    let mut text = format!("{}\nlabel: {}", p.path.display(), p.class);
    if let (Some(pred), Some(prob)) = (&p.prediction, p.probability) {
        text.push_str(&format!("\npredicted: {pred} ({prob:.3})"));
    }
    text
}

/// What a click on point `i` does: with a model trained on the folder's classes, the Heatmap
/// tab explains it (the label's and the prediction's maps); otherwise it opens on the image.
fn open_in_heatmap(
    ctx: &AppContext,
    model: &Option<String>,
    map: &DatasetMap,
    i: usize,
) -> Vec<Command> {
    let p = &map.points[i];
    let path = map.dataset.join(&p.path);
    let predicted = p.prediction.as_deref().filter(|_| p.correct.is_some());
    explain(ctx, model, &map.classes, &path, p.label, predicted)
}

/// Opens `path` in Heatmap, explaining label `label` against `predicted` (a class name of the
/// folder, `None` when the model predicts other classes).
fn explain(
    ctx: &AppContext,
    model: &Option<String>,
    classes: &[String],
    path: &Path,
    label: usize,
    predicted: Option<&str>,
) -> Vec<Command> {
    let predicted = predicted.and_then(|name| classes.iter().position(|c| c == name));
    match (model, predicted, classes.get(label)) {
        (Some(key), Some(p), Some(truth)) => vec![Command::Explain(
            PathBuf::from(path),
            Explain {
                model: ModelChoice {
                    label: ctx.model_name(key),
                    key: key.clone(),
                },
                truth: (label, truth.clone()),
                predicted: (p, classes[p].clone()),
            },
        )],
        _ => vec![
            Command::SetImage(path.to_path_buf()),
            Command::OpenTab(Tab::Heatmap),
        ],
    }
}
