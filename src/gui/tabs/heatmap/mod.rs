//! The Heatmap tab: class-activation maps (Grad-CAM and friends) of the current image in up to
//! [`MAX_ROWS`] rows, each with its own model, layer and class: by default the loaded model and
//! the model trained in this session; set up by a confusion-matrix click to explain an error
//! (the trained model's map of the true and of the predicted class, and the base model's view).

mod evidence;
mod export;
mod images;
mod params;
mod row;

use serde::{Deserialize, Serialize};

use super::Textures;
use crate::gui::context::{AppContext, Command, Commands, ModelChoice};
use crate::gui::settings::ExportSettings;
use crate::jobs::views::CamView;
use crate::jobs::{JobKind, Request};
use crate::viz::attribution::AttributionOptions;
use crate::viz::cam::{CamMethod, CamOptions, MethodKind, Smooth};
use crate::viz::colormap::Colormap;

/// The most rows of heatmaps the tab shows.
pub const MAX_ROWS: usize = 4;

/// The model and layer of one row (persisted).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct RowChoice {
    /// A key of the model chooser; `None`: the loaded model in the first row, the model
    /// trained in this session in the others (the row is hidden while there is none).
    pub model: Option<String>,
    /// `None`: the model's default CAM layer.
    pub layer: Option<String>,
    /// The class asked for instead of the top one, and why (`None`: the top class).
    pub class: Option<ClassChoice>,
}

impl RowChoice {
    /// The row's class choice while the row shows the model `key` it was made for (a class
    /// index means nothing in another model's labels).
    pub fn class_for(&self, key: &str) -> Option<&ClassChoice> {
        self.class.as_ref().filter(|c| c.model == key)
    }
}

/// A row's class (persisted with the row, so a restart shows the same maps).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClassChoice {
    /// The model key whose labels `index` indexes.
    pub model: String,
    /// The class asked for (`None`: the top class).
    pub index: Option<usize>,
    /// What the class stands for, when the row was set up to explain an error.
    pub role: Option<Role>,
}

/// What a row's class stands for when the rows explain an error.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Role {
    /// The image's label.
    Truth,
    /// The class the trained model predicted.
    Prediction,
    /// The other model's own top class.
    Top,
}

impl Role {
    /// How a row's title names it.
    pub fn name(self) -> &'static str {
        match self {
            Role::Truth => "true class",
            Role::Prediction => "predicted class",
            Role::Top => "top class",
        }
    }
}

/// The Heatmap tab's persisted options.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct HeatmapSettings {
    pub method: CamMethod,
    /// Smoothing of the layer CAMs.
    pub smooth: Smooth,
    /// The pixel methods' (and AblationCAM's) parameters.
    pub attribution: AttributionOptions,
    pub colormap: Colormap,
    /// Opacity of the heatmap over the photo.
    pub alpha: f32,
    /// The rows, 1 to [`MAX_ROWS`].
    pub rows: Vec<RowChoice>,
}

impl Default for HeatmapSettings {
    fn default() -> Self {
        HeatmapSettings {
            method: CamMethod::GradCam,
            smooth: Smooth::None,
            attribution: AttributionOptions::default(),
            colormap: Colormap::Jet,
            alpha: 0.4,
            rows: vec![RowChoice::default(), RowChoice::default()],
        }
    }
}

impl HeatmapSettings {
    /// The image changed: every row back to its top class.
    pub fn new_image(&mut self) {
        for row in &mut self.rows {
            row.class = None;
        }
    }

    /// A newly loaded model: layers it does not have go back to the default CAM layer.
    pub fn keep_layers_of(&mut self, layers: &[String]) {
        for row in &mut self.rows {
            if row.layer.as_ref().is_some_and(|l| !layers.contains(l)) {
                row.layer = None;
            }
        }
    }
}

/// What a confusion-matrix click asks the tab to explain: one image of a trained model's
/// validation split, its true class and the class the model predicted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Explain {
    /// The trained model's key and how it is named.
    pub model: ModelChoice,
    /// Index and name of the true class (in the trained model's labels).
    pub truth: (usize, String),
    /// Index and name of the predicted class.
    pub predicted: (usize, String),
}

/// One row of heatmaps at run time: its last view and the class search typed.
#[derive(Default)]
struct Row {
    view: Option<CamView>,
    search: String,
    /// Faithfulness and sanity check of the row's map (shown while they match it).
    evidence: evidence::RowEvidence,
}

/// The Heatmap tab's state.
#[derive(Default)]
pub struct HeatmapTab {
    /// Parallel to the settings' rows (grown on demand).
    rows: Vec<Row>,
    textures: Textures,
    /// Models brought in by [`HeatmapTab::explain`] that the model chooser does not list (a
    /// saved run).
    extra: Vec<ModelChoice>,
    /// The last "compare methods" result (shown while it matches the first row's map).
    compare: Option<crate::jobs::evidence::FaithView>,
    /// Where the last evidence job was asked for (its progress shows there).
    asked: Option<evidence::Asked>,
}

impl HeatmapTab {
    /// The first row's heatmap on screen.
    pub fn view(&self) -> Option<&CamView> {
        self.rows.first().and_then(|r| r.view.as_ref())
    }

    /// The second row's heatmap on screen (the model compared with).
    pub fn compared_view(&self) -> Option<&CamView> {
        self.rows.get(1).and_then(|r| r.view.as_ref())
    }

    /// The faithfulness and sanity check last computed for row `row`'s map (shown while they
    /// match it).
    pub fn evidence(
        &self,
        row: usize,
    ) -> (
        Option<&crate::jobs::evidence::FaithView>,
        Option<&crate::jobs::evidence::SanityView>,
    ) {
        self.rows.get(row).map_or((None, None), |r| {
            (r.evidence.faith.as_ref(), r.evidence.sanity.as_ref())
        })
    }

    /// Every row's heatmap on screen (`None`: not computed yet) with what its class stands
    /// for, in row order.
    pub fn views(&self, s: &HeatmapSettings) -> Vec<(Option<&CamView>, Option<&'static str>)> {
        self.rows
            .iter()
            .enumerate()
            .map(|(i, r)| {
                let view = r.view.as_ref();
                (view, view.and_then(|v| role_of(s, i, v)).map(Role::name))
            })
            .collect()
    }

    /// A heatmap arrived for `row`.
    pub fn set_view(&mut self, view: CamView, row: usize) {
        self.textures.clear();
        self.row_mut(row).view = Some(view);
    }

    /// Sets the rows up to explain an image of a trained model's validation split (the image
    /// itself is set by the caller): the trained model's map of the true class, of the
    /// predicted class (when they differ), and the `loaded` model's map of its own top class.
    pub fn explain(&mut self, s: &mut HeatmapSettings, e: Explain, loaded: Option<String>) {
        let key = e.model.key.clone();
        if !self.extra.iter().any(|c| c.key == key) {
            self.extra.push(e.model);
        }
        let row = |model: String, index: Option<usize>, role| RowChoice {
            model: Some(model.clone()),
            layer: None,
            class: Some(ClassChoice {
                model,
                index,
                role: Some(role),
            }),
        };
        let mut rows = vec![row(key.clone(), Some(e.truth.0), Role::Truth)];
        if e.predicted.0 != e.truth.0 {
            rows.push(row(key.clone(), Some(e.predicted.0), Role::Prediction));
        }
        if let Some(loaded) = loaded.filter(|l| *l != key) {
            rows.push(row(loaded, None, Role::Top));
        }
        self.rows = rows.iter().map(|_| Row::default()).collect();
        s.rows = rows;
        self.textures.clear();
    }

    fn row_mut(&mut self, row: usize) -> &mut Row {
        if self.rows.len() <= row {
            self.rows.resize_with(row + 1, Row::default);
        }
        &mut self.rows[row]
    }

    /// The models the rows can choose from: the chooser's, then those brought in by
    /// [`HeatmapTab::explain`].
    fn choices(&self, ctx: &AppContext) -> Vec<ModelChoice> {
        let mut out = ctx.model_choices();
        for c in &self.extra {
            if !out.iter().any(|o| o.key == c.key) {
                out.push(c.clone());
            }
        }
        out
    }

    /// The model key of each row (`None`: the row is hidden: no trained model to show).
    pub fn row_models(&self, ctx: &AppContext, s: &HeatmapSettings) -> Vec<Option<String>> {
        let choices = self.choices(ctx);
        let offered = |k: &str| choices.iter().any(|c| c.key == k);
        let loaded = ctx.model.map(|m| m.key.clone());
        let first = s.rows.first().and_then(|r| r.model.as_deref());
        let first = first.filter(|k| offered(k)).map(str::to_string).or(loaded);
        s.rows
            .iter()
            .take(MAX_ROWS)
            .enumerate()
            .map(|(i, r)| match (i, r.model.as_deref()) {
                (0, _) => first.clone(),
                (_, Some(k)) if offered(k) => Some(k.to_string()),
                // The model trained in this session, unless it is the first row's.
                _ => ctx
                    .trained_model
                    .filter(|k| offered(k) && first.as_deref() != Some(*k))
                    .map(str::to_string),
            })
            .collect()
    }

    /// How the rows name the model with `key`.
    fn model_name(&self, ctx: &AppContext, key: &str) -> String {
        self.choices(ctx)
            .into_iter()
            .find(|c| c.key == key)
            .map(|c| c.label)
            .unwrap_or_else(|| key.to_string())
    }

    /// The requests for every shown row's heatmap.
    pub fn requests(&self, ctx: &AppContext, s: &HeatmapSettings) -> Vec<Command> {
        let models = self.row_models(ctx, s);
        models
            .into_iter()
            .enumerate()
            .filter_map(|(row, model)| {
                let model = model?;
                let layer = s.rows[row].layer.as_deref();
                let mut options = CamOptions::new(s.method, layer.unwrap_or(""));
                options.class = s.rows[row].class_for(&model).and_then(|c| c.index);
                if s.method.kind() == MethodKind::Layer {
                    options.smooth = s.smooth;
                }
                options.attribution = s.attribution.clone();
                Some(Command::Submit(Request::Cam {
                    model,
                    image: ctx.image.to_path_buf(),
                    options,
                    // Without a layer asked for, the model's own default CAM layer (a trained
                    // model may have its own layers: a scratch convnet).
                    own_layer: layer.is_none(),
                    row,
                    colormap: s.colormap,
                    alpha: s.alpha,
                }))
            })
            .collect()
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
        let Some(model) = super::model_or_empty(ui, ctx) else {
            return out;
        };
        if s.rows.is_empty() {
            s.rows.push(RowChoice::default());
        }
        let computing = ctx.running(JobKind::Cam);
        let mut changed = controls(ui, s);
        if computing {
            progress_line(ui, ctx, &mut out);
        }
        let models = self.row_models(ctx, s);
        egui::ScrollArea::vertical()
            .id_salt("heatmap-tab")
            .show(ui, |ui| {
                if self.rows.iter().all(|r| r.view.is_none()) {
                    ui.label(
                        "This tab shows which parts of the image made the model pick a class. \
                         It appears here once the model has looked at the image.",
                    );
                    return;
                }
                let (one, all) = super::export_row(ui, export);
                if one || all {
                    out.extend(self.export(&models, s, export, all));
                }
                self.compare_ui(ui, ctx, &mut out);
                let mut remove = None;
                for (row, key) in models.iter().enumerate() {
                    let Some(key) = key else { continue };
                    ui.separator();
                    let edit = self.row_controls(ui, ctx, model, s, row, key);
                    changed |= edit.changed;
                    if edit.remove {
                        remove = Some(row);
                    }
                    ui.scope(|ui| {
                        if computing {
                            ui.multiply_opacity(super::STALE_OPACITY);
                        }
                        self.images(ui, row, s.colormap);
                    });
                    self.evidence_ui(ui, ctx, row, &mut out);
                }
                ui.separator();
                if s.rows.len() < MAX_ROWS
                    && ui
                        .button("Add row")
                        .on_hover_text("another heatmap of this image: a model, layer or class")
                        .clicked()
                {
                    s.rows.push(RowChoice {
                        model: ctx.model.map(|m| m.key.clone()),
                        ..RowChoice::default()
                    });
                    changed = true;
                }
                if let Some(row) = remove {
                    s.rows.remove(row);
                    if row < self.rows.len() {
                        self.rows.remove(row);
                    }
                    self.textures.clear();
                    changed = true;
                }
            });
        if changed {
            out.push(Command::RefreshCam);
        }
        out
    }
}

/// What row `row`'s class stands for, while the row shows the model it was chosen for.
fn role_of(s: &HeatmapSettings, row: usize, view: &CamView) -> Option<Role> {
    s.rows.get(row)?.class_for(&view.model)?.role
}

/// Method and its parameters, colormap and alpha (shared by every row), wrapping to the
/// width; returns whether one changed.
fn controls(ui: &mut egui::Ui, s: &mut HeatmapSettings) -> bool {
    let mut changed = false;
    changed |= params::method_controls(ui, s);
    ui.horizontal_wrapped(|ui| {
        changed |= super::colormap_combo(ui, "cam-cmap", &mut s.colormap);
        changed |= crate::gui::widgets::labelled(ui, "alpha", |ui| {
            ui.add(egui::Slider::new(&mut s.alpha, 0.0..=1.0))
        })
        .drag_stopped();
    });
    changed
}

/// While heatmaps compute: the running job's progress (the batched methods report batches
/// done of total and the time left) and a Cancel button; the maps on screen are dimmed meanwhile.
fn progress_line(ui: &mut egui::Ui, ctx: &AppContext, out: &mut Commands) {
    ui.horizontal_wrapped(|ui| {
        ui.spinner();
        match ctx.jobs.current() {
            Some((_, JobKind::Cam, line)) => {
                let text = format!("computing the heatmaps: {}", line.text);
                match line.fraction {
                    Some(f) => ui.add(egui::ProgressBar::new(f).desired_width(320.0).text(text)),
                    None => ui.label(text),
                };
            }
            Some((_, kind, _)) => {
                ui.label(format!("heatmaps waiting for: {}", kind.name()));
            }
            None => {}
        }
        ui.label("(the maps shown are the previous ones)");
        if ui.button("Cancel heatmap").clicked() {
            out.push(Command::Cancel(JobKind::Cam));
        }
    });
}
