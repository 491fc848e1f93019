//! The central tabs. Each reads the app state and queues jobs; none calls the engine itself.

use std::path::{Path, PathBuf};

use egui_plot::{Legend, Line, Plot, PlotPoints};

use super::app::ConvlensApp;
use super::jobs::{self, Msg};
use super::widgets;
use crate::data::folder::Split;
use crate::text::{shape_text, thousands};
use crate::train::{Mode, TrainConfig};
use crate::viz::activations::GridOptions;
use crate::viz::cam::{CamMethod, CamOptions};
use crate::viz::colormap::Colormap;
use crate::viz::filters::{FilterMethod, FilterOptions};

/// Colormaps offered in the combo boxes.
const COLORMAPS: [Colormap; 6] = [
    Colormap::Viridis,
    Colormap::Magma,
    Colormap::Inferno,
    Colormap::Gray,
    Colormap::Turbo,
    Colormap::Jet,
];

fn colormap_combo(ui: &mut egui::Ui, id: &str, value: &mut Colormap) -> bool {
    let before = *value;
    let label = ui.label("colormap");
    egui::ComboBox::from_id_salt(id)
        .selected_text(value.name())
        .show_ui(ui, |ui| {
            for c in COLORMAPS {
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

/// A file-name-safe version of a layer id or class name.
fn slug(text: &str) -> String {
    text.chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect()
}

impl ConvlensApp {
    /// The export row of a tab: folder, scale, "Export PNG" (the figure on screen) and
    /// "Export all" (every layer or method). Returns which button was clicked.
    fn export_row(&mut self, ui: &mut egui::Ui) -> (bool, bool) {
        let mut clicked = (false, false);
        ui.horizontal(|ui| {
            widgets::labelled(ui, "export to", |ui| {
                ui.add(
                    egui::TextEdit::singleline(&mut self.settings.export_dir).desired_width(220.0),
                )
            });
            if ui.button("Folder…").clicked()
                && let Some(p) = rfd::FileDialog::new().pick_folder()
            {
                self.settings.export_dir = p.to_string_lossy().into_owned();
            }
            widgets::labelled(ui, "scale", |ui| {
                ui.add(egui::DragValue::new(&mut self.settings.export_scale).range(1..=4))
            });
            clicked.0 = ui.button("Export PNG").clicked();
            clicked.1 = ui.button("Export all").clicked();
        });
        clicked
    }

    /// Queues figure exports into the export folder.
    fn export(&mut self, figures: Vec<(crate::export::FigureRequest, String)>) {
        let Some(model) = &self.model else { return };
        let dir = PathBuf::from(&self.settings.export_dir);
        let figures = figures
            .into_iter()
            .map(|(request, name)| (request, dir.join(format!("{name}.png"))))
            .collect();
        let job = jobs::export_job(model.key.clone(), figures, self.settings.export_scale);
        self.submit("exporting", job);
    }

    fn image_stem(&self) -> String {
        PathBuf::from(&self.settings.image)
            .file_stem()
            .map(|s| slug(&s.to_string_lossy()))
            .unwrap_or_else(|| "image".into())
    }

    /// Recomputes the activation grid (and the sparsity profile) for the current image/layer.
    pub(super) fn request_activations(&mut self) {
        let (Some(model), Some(layer)) = (&self.model, self.settings.layer.clone()) else {
            return;
        };
        let key = model.key.clone();
        let image = PathBuf::from(&self.settings.image);
        let options = GridOptions {
            cols: self.settings.cols.max(1),
            gutter: 1,
            colormap: self.settings.colormap,
            shared_scale: self.settings.shared_scale,
        };
        self.pending_activations = true;
        let image2 = image.clone();
        let key2 = key.clone();
        self.submit("activations", move |engine, ctx| {
            ctx.send(Msg::Activations(jobs::or_text(|| {
                jobs::activations(engine, &key, &image, &layer, &options)
            })));
        });
        self.submit("sparsity", move |engine, ctx| {
            ctx.send(Msg::Sparsity(jobs::or_text(|| {
                jobs::sparsity(engine, &key2, &image2)
            })));
        });
    }

    fn cam_options(&self, default_layer: &str) -> CamOptions {
        let mut o = CamOptions::new(
            self.settings.cam_method,
            self.settings.cam_layer.as_deref().unwrap_or(default_layer),
        );
        o.class = self.cam_class;
        o
    }

    /// Recomputes the heatmap for the base model (and the trained model, if one is loaded).
    pub(super) fn request_cam(&mut self) {
        let Some(model) = &self.model else { return };
        // The base with the tab's options; a trained model at its own default layer (a scratch
        // convnet has other layers), which the worker reads from the loaded model.
        let mut targets = vec![(
            model.key.clone(),
            self.cam_options(&model.default_cam_layer),
            false,
        )];
        if let Some(trained) = self.trained_model.clone()
            && trained != model.key
        {
            let options = CamOptions::new(self.settings.cam_method, &model.default_cam_layer);
            targets.push((trained, options, true));
        }
        for (key, mut options, own_default_layer) in targets {
            let image = PathBuf::from(&self.settings.image);
            let colormap = self.settings.cam_colormap;
            let alpha = self.settings.alpha;
            self.submit("heatmap", move |engine, ctx| {
                ctx.send(Msg::Cam(jobs::or_text(|| {
                    if own_default_layer {
                        options.layer = engine.model(&key)?.spec.manifest.default_cam_layer.clone();
                    }
                    jobs::cam_view(engine, &key, &image, &options, colormap, alpha, &ctx.cancel)
                })));
            });
        }
    }

    /// Classifies the files listed in the Predict tab.
    pub(super) fn request_predictions(&mut self) {
        let Some(model) = &self.model else { return };
        let key = self
            .trained_model
            .clone()
            .unwrap_or_else(|| model.key.clone());
        let paths: Vec<PathBuf> = self
            .predict_input
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .map(PathBuf::from)
            .collect();
        self.submit("predicting", move |engine, ctx| {
            match jobs::predictions(engine, &key, &paths, 5) {
                Ok(p) => ctx.send(Msg::Predictions(p)),
                Err(e) => ctx.send(Msg::Predictions(vec![(
                    PathBuf::from("?"),
                    Err(e.to_string()),
                )])),
            }
        });
    }

    /// Starts a training run with the Train tab's options.
    pub fn start_training(&mut self) {
        let Some(model) = &self.model else { return };
        let f = &self.settings.train;
        let cfg = TrainConfig {
            mode: f.mode,
            epochs: f.epochs,
            batch_size: f.batch_size,
            lr: f.lr,
            seed: f.seed,
            unfreeze: f.unfreeze,
            finetune_epochs: f.finetune_epochs,
            train_batchnorm: f.train_batchnorm,
            head: f.head,
            augment: f.augment.clone(),
            ..TrainConfig::default()
        };
        if let Err(e) = cfg.validate() {
            self.status.error = Some(e.to_string());
            return;
        }
        let out_dir = match f.destination(Path::new(&self.settings.data_dir)) {
            Ok(dir) => dir,
            Err(e) => {
                self.status.error = Some(e.to_string());
                return;
            }
        };
        self.history.clear();
        self.outcome = None;
        self.selected_cell = None;
        self.training = true;
        let job = jobs::train_job(
            model.key.clone(),
            PathBuf::from(&self.settings.data_dir),
            cfg,
            out_dir,
        );
        self.submit("training", job);
    }

    pub(super) fn model_tab(&mut self, ui: &mut egui::Ui) {
        let Some(m) = &self.model else {
            ui.horizontal(|ui| {
                ui.spinner();
                ui.label(format!("Loading {}…", self.settings.model));
            });
            return;
        };
        ui.label(egui::RichText::new(&m.title).strong());
        ui.label(&m.source);
        ui.label(
            egui::RichText::new("Click a layer to look at it in the Activations and Filters tabs.")
                .weak(),
        );
        ui.separator();
        let mut clicked = None;
        egui::ScrollArea::vertical().show(ui, |ui| {
            egui::Grid::new("layers")
                .striped(true)
                .num_columns(4)
                .spacing([24.0, 4.0])
                .show(ui, |ui| {
                    for title in ["layer", "output shape", "parameters", "MFLOPs"] {
                        ui.label(egui::RichText::new(title).strong());
                    }
                    ui.end_row();
                    for l in &m.layers {
                        let selected = self.settings.layer.as_deref() == Some(l.id.as_str());
                        if ui.selectable_label(selected, &l.id).clicked() {
                            clicked = Some(l.id.clone());
                        }
                        ui.label(shape_text(&l.output_shape));
                        ui.label(thousands(l.params));
                        ui.label(format!("{:.1}", l.flops as f64 / 1e6));
                        ui.end_row();
                    }
                    let params: usize = m.layers.iter().map(|l| l.params).sum();
                    let flops: u64 = m.layers.iter().map(|l| l.flops).sum();
                    ui.label(egui::RichText::new("total").strong());
                    ui.label("");
                    ui.label(egui::RichText::new(thousands(params)).strong());
                    ui.label(egui::RichText::new(format!("{:.1}", flops as f64 / 1e6)).strong());
                    ui.end_row();
                });
        });
        if let Some(id) = clicked {
            if m.spatial.contains(&id) {
                self.settings.layer = Some(id);
                self.request_activations();
            } else {
                self.status.note = Some(format!("`{id}` has no spatial output to show as a grid"));
            }
        }
    }

    pub(super) fn data_tab(&mut self, ui: &mut egui::Ui) {
        let Some(data) = self.data.clone() else {
            ui.label("Choose a folder with one subfolder per class (left panel).");
            return;
        };
        ui.label(egui::RichText::new(data.root.display().to_string()).strong());
        egui::Grid::new("class-counts")
            .striped(true)
            .show(ui, |ui| {
                for h in ["class", "train", "validation", "test"] {
                    ui.label(egui::RichText::new(h).strong());
                }
                ui.end_row();
                let counts: Vec<Vec<usize>> = [Split::Train, Split::Validation, Split::Test]
                    .iter()
                    .map(|&s| data.class_counts(s))
                    .collect();
                for (i, c) in data.classes.iter().enumerate() {
                    ui.label(c);
                    for split in &counts {
                        ui.label(split[i].to_string());
                    }
                    ui.end_row();
                }
            });
        if !data.skipped.is_empty() {
            ui.collapsing(format!("{} skipped files", data.skipped.len()), |ui| {
                for s in &data.skipped {
                    ui.label(format!("{}: {}", s.path.display(), s.reason));
                }
            });
        }
        ui.separator();
        ui.horizontal(|ui| {
            widgets::section(ui, "Augmentation preview");
            let a = &mut self.settings.train.augment;
            ui.checkbox(&mut a.flip, "flip");
            let toggle = |ui: &mut egui::Ui, v: &mut Option<f32>, name: &str, default: f32| {
                let mut on = v.is_some();
                if ui.checkbox(&mut on, name).changed() {
                    *v = on.then_some(default);
                }
            };
            toggle(ui, &mut a.rotation, "rotate", 0.1);
            toggle(ui, &mut a.zoom, "zoom", 0.2);
            toggle(ui, &mut a.translation, "translate", 0.1);
            toggle(ui, &mut a.contrast, "contrast", 0.2);
            if ui.button("Preview").clicked() {
                let image = data
                    .split(Split::Train)
                    .first()
                    .map(|s| s.path.clone())
                    .unwrap_or_else(|| PathBuf::from(&self.settings.image));
                let augment = self.settings.train.augment.clone();
                self.submit("augmenting", move |_, ctx| {
                    ctx.send(Msg::Augmented(jobs::or_text(|| {
                        jobs::augment_previews(&image, &augment, 128, 8)
                    })));
                });
            }
        });
        if !self.previews.is_empty() {
            ui.horizontal_wrapped(|ui| {
                for t in &self.previews {
                    widgets::fitted_image(ui, t, egui::vec2(96.0, 96.0));
                }
            });
        }
        ui.separator();
        widgets::section(ui, "Gallery");
        let samples: Vec<(PathBuf, String)> = Split::ALL
            .iter()
            .flat_map(|&s| data.split(s).iter())
            .map(|s| (s.path.clone(), data.classes[s.label].clone()))
            .collect();
        let per_row = ((ui.available_width() / 104.0).floor() as usize).max(1);
        let rows = samples.len().div_ceil(per_row);
        let mut wanted = Vec::new();
        let mut open = None;
        egui::ScrollArea::vertical()
            .id_salt("gallery")
            .show_rows(ui, 104.0, rows, |ui, range| {
                for row in range {
                    ui.horizontal(|ui| {
                        for (path, class) in samples.iter().skip(row * per_row).take(per_row) {
                            match self.thumbs.get(path) {
                                Some(t) => {
                                    let r = widgets::fitted_image(ui, t, egui::vec2(96.0, 96.0))
                                        .on_hover_text(format!("{class}\n{}", path.display()));
                                    if r.clicked() {
                                        open = Some(path.clone());
                                    }
                                }
                                None => {
                                    ui.add_sized([96.0, 96.0], egui::Spinner::new());
                                    wanted.push(path.clone());
                                }
                            }
                        }
                    });
                }
            });
        self.request_thumbnails(wanted);
        if let Some(p) = open {
            self.set_image(p);
            self.settings.tab = super::settings::Tab::Activations;
        }
    }

    pub(super) fn train_tab(&mut self, ui: &mut egui::Ui) {
        let running = self.training;
        ui.add_enabled_ui(!running, |ui| {
            let f = &mut self.settings.train;
            egui::Grid::new("train-form").num_columns(4).show(ui, |ui| {
                let l = ui.label("mode");
                egui::ComboBox::from_id_salt("mode")
                    .selected_text(f.mode.name())
                    .show_ui(ui, |ui| {
                        for m in Mode::ALL {
                            ui.selectable_value(&mut f.mode, m, m.name());
                        }
                    })
                    .response
                    .labelled_by(l.id);
                widgets::labelled(ui, "epochs", |ui| {
                    ui.add(egui::DragValue::new(&mut f.epochs).range(1..=500))
                });
                ui.end_row();
                widgets::labelled(ui, "batch size", |ui| {
                    ui.add(egui::DragValue::new(&mut f.batch_size).range(1..=256))
                });
                widgets::labelled(ui, "learning rate", |ui| {
                    ui.add(
                        egui::DragValue::new(&mut f.lr)
                            .range(1e-7..=1.0)
                            .speed(1e-4),
                    )
                });
                ui.end_row();
                widgets::labelled(ui, "seed", |ui| ui.add(egui::DragValue::new(&mut f.seed)));
                widgets::labelled(ui, "unfreeze (stages)", |ui| {
                    ui.add(egui::DragValue::new(&mut f.unfreeze).range(1..=10))
                });
                ui.end_row();
                widgets::labelled(ui, "fine-tune epochs", |ui| {
                    ui.add(egui::DragValue::new(&mut f.finetune_epochs).range(1..=100))
                });
                widgets::labelled(ui, "save to", |ui| ui.text_edit_singleline(&mut f.out_dir));
                ui.end_row();
                widgets::labelled(ui, "BatchNorm", |ui| {
                    ui.checkbox(&mut f.train_batchnorm, "train statistics when fine-tuning")
                        .on_hover_text(
                            "Off (the usual recipe): the unfrozen stages keep the pretrained \
                             statistics. On: batch statistics, running statistics updated, \
                             scale and shift trained.",
                        )
                });
                ui.end_row();
            });
            ui.horizontal(|ui| {
                ui.label("augment:");
                let a = &mut f.augment;
                ui.checkbox(&mut a.flip, "flip");
                for (v, name, d) in [
                    (&mut a.rotation, "rotate", 0.1),
                    (&mut a.zoom, "zoom", 0.2),
                    (&mut a.translation, "translate", 0.1),
                    (&mut a.contrast, "contrast", 0.2),
                ] {
                    let mut on = v.is_some();
                    if ui.checkbox(&mut on, name).changed() {
                        *v = on.then_some(d);
                    }
                }
            });
        });
        ui.horizontal(|ui| {
            if ui
                .add_enabled(!running, egui::Button::new("Start training"))
                .clicked()
            {
                self.start_training();
            }
            if ui
                .add_enabled(running, egui::Button::new("Cancel training"))
                .clicked()
            {
                self.worker.cancel_current();
            }
            if let Some(dir) = &self.trained_model {
                ui.label(format!("trained model: {dir}"));
            }
        });
        ui.separator();
        self.curves(ui);
        if let Some(outcome) = self.outcome.clone() {
            ui.separator();
            self.confusion(ui, &outcome);
        }
    }

    fn curves(&self, ui: &mut egui::Ui) {
        let series = |f: &dyn Fn(&crate::train::EpochMetrics) -> f32| -> PlotPoints<'static> {
            self.history
                .iter()
                .enumerate()
                .map(|(i, m)| [(i + 1) as f64, f(m) as f64])
                .collect::<Vec<_>>()
                .into()
        };
        ui.columns(2, |cols| {
            Plot::new("loss")
                .height(180.0)
                .legend(Legend::default())
                .x_axis_label("epoch")
                .y_axis_label("loss")
                .show(&mut cols[0], |p| {
                    p.line(Line::new("train loss", series(&|m| m.train_loss)));
                    p.line(Line::new("validation loss", series(&|m| m.val_loss)));
                });
            Plot::new("accuracy")
                .height(180.0)
                .legend(Legend::default())
                .x_axis_label("epoch")
                .y_axis_label("accuracy")
                .show(&mut cols[1], |p| {
                    p.line(Line::new("train accuracy", series(&|m| m.train_accuracy)));
                    p.line(Line::new(
                        "validation accuracy",
                        series(&|m| m.val_accuracy),
                    ));
                });
        });
    }

    fn confusion(&mut self, ui: &mut egui::Ui, outcome: &jobs::TrainOutcome) {
        let e = &outcome.evaluation;
        widgets::section(
            ui,
            &format!(
                "Validation: accuracy {:.3} — confusion matrix (rows true, columns predicted)",
                e.accuracy
            ),
        );
        let max = e
            .confusion
            .iter()
            .flatten()
            .copied()
            .max()
            .unwrap_or(1)
            .max(1);
        let mut clicked = None;
        ui.horizontal(|ui| {
            egui::Grid::new("confusion")
                .spacing([2.0, 2.0])
                .show(ui, |ui| {
                    ui.label("");
                    for c in &e.classes {
                        ui.label(egui::RichText::new(c).small());
                    }
                    ui.end_row();
                    for (t, row) in e.confusion.iter().enumerate() {
                        ui.label(egui::RichText::new(&e.classes[t]).small());
                        for (p, &n) in row.iter().enumerate() {
                            let level = n as f32 / max as f32;
                            let [r, g, b] = Colormap::Viridis.rgb(level);
                            let text_color = if level > 0.6 {
                                egui::Color32::BLACK
                            } else {
                                egui::Color32::WHITE
                            };
                            let button = egui::Button::new(
                                egui::RichText::new(n.to_string()).color(text_color),
                            )
                            .fill(egui::Color32::from_rgb(r, g, b))
                            .min_size(egui::vec2(44.0, 28.0));
                            if ui
                                .add(button)
                                .on_hover_text(format!(
                                    "true {}, predicted {}",
                                    e.classes[t], e.classes[p]
                                ))
                                .clicked()
                            {
                                clicked = Some((t, p));
                            }
                        }
                        ui.end_row();
                    }
                });
        });
        if clicked.is_some() {
            self.selected_cell = clicked;
        }
        if let Some((t, p)) = self.selected_cell {
            let images: Vec<(PathBuf, f32)> = e
                .predictions
                .iter()
                .filter(|(_, tt, pp, _)| *tt == t && *pp == p)
                .map(|(path, _, _, prob)| (path.clone(), *prob))
                .collect();
            ui.label(format!(
                "{} images: true {}, predicted {} (click one to see its heatmap)",
                images.len(),
                e.classes[t],
                e.classes[p]
            ));
            let mut wanted = Vec::new();
            let mut open = None;
            ui.horizontal_wrapped(|ui| {
                for (path, prob) in &images {
                    match self.thumbs.get(path) {
                        Some(tex) => {
                            if widgets::fitted_image(ui, tex, egui::vec2(72.0, 72.0))
                                .on_hover_text(format!("{}\np = {prob:.3}", path.display()))
                                .clicked()
                            {
                                open = Some(path.clone());
                            }
                        }
                        None => {
                            ui.add_sized([72.0, 72.0], egui::Spinner::new());
                            wanted.push(path.clone());
                        }
                    }
                }
            });
            self.request_thumbnails(wanted);
            if let Some(path) = open {
                self.set_image(path);
                self.settings.tab = super::settings::Tab::Heatmap;
            }
        }
    }

    /// The currently selected confusion cell and how many images it lists.
    pub fn selected_cell(&self) -> Option<((usize, usize), usize)> {
        let (t, p) = self.selected_cell?;
        let e = &self.outcome.as_ref()?.evaluation;
        let n = e
            .predictions
            .iter()
            .filter(|(_, tt, pp, _)| *tt == t && *pp == p)
            .count();
        Some(((t, p), n))
    }

    pub(super) fn activations_tab(&mut self, ui: &mut egui::Ui) {
        let Some(model) = self.model.clone() else {
            ui.label("Loading the model…");
            return;
        };
        let mut changed = false;
        ui.horizontal(|ui| {
            let current = self.settings.layer.clone().unwrap_or_default();
            if let Some(l) = layer_combo(ui, "act-layer", "layer", &current, &model.spatial) {
                self.settings.layer = Some(l);
                changed = true;
            }
            changed |= widgets::labelled(ui, "columns", |ui| {
                ui.add(egui::DragValue::new(&mut self.settings.cols).range(1..=64))
            })
            .changed();
            changed |= colormap_combo(ui, "act-cmap", &mut self.settings.colormap);
            changed |= ui
                .checkbox(&mut self.settings.shared_scale, "shared scale")
                .changed();
            if self.pending_activations {
                ui.spinner();
            }
        });
        if changed {
            self.request_activations();
        }
        let Some(view) = self.activations.clone() else {
            return;
        };
        let (one, all) = self.export_row(ui);
        if one || all {
            let layers = if all {
                model.spatial.clone()
            } else {
                vec![view.layer.clone()]
            };
            let stem = self.image_stem();
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
            self.export(figures);
        }
        let ctx = ui.ctx().clone();
        let tex = self.tex(&ctx, "activations", &view.grid, false);
        let blank = view.stats.iter().filter(|s| s.is_blank()).count();
        ui.label(format!(
            "{}: {} channels of {}×{}, {} blank ({:.0}%) — ctrl+wheel zooms, drag pans, click a channel",
            view.layer,
            view.stats.len(),
            view.layout.tile.0,
            view.layout.tile.1,
            blank,
            100.0 * blank as f32 / view.stats.len().max(1) as f32
        ));
        let grid_width = (ui.available_width() * 0.64).max(200.0);
        let height = ui.available_height();
        ui.horizontal_top(|ui| {
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
                    // Ctrl + wheel (or a pinch) zooms; the wheel alone and dragging pan.
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
                            self.enlarged_channel = Some(c);
                        }
                    }
                }
            });
            ui.vertical(|ui| {
                if let Some(c) = self.enlarged_channel {
                    let s = view.stats[c];
                    ui.label(format!(
                        "channel {c}: min {:.3}, max {:.3}, mean {:.3}",
                        s.min, s.max, s.mean
                    ));
                    let t = self.tex(
                        &ctx,
                        &format!("channel-{}-{c}", view.layer),
                        &view.channels[c],
                        false,
                    );
                    widgets::fitted_image(ui, &t, egui::vec2(ui.available_width(), 260.0));
                }
                if !self.sparsity.is_empty() {
                    widgets::section(ui, "Sparsity by depth");
                    let blank: PlotPoints = self
                        .sparsity
                        .iter()
                        .enumerate()
                        .map(|(i, s)| [i as f64, s.blank_fraction as f64])
                        .collect::<Vec<_>>()
                        .into();
                    let active: PlotPoints = self
                        .sparsity
                        .iter()
                        .enumerate()
                        .map(|(i, s)| [i as f64, 1.0 - s.active_fraction as f64])
                        .collect::<Vec<_>>()
                        .into();
                    let names: Vec<String> =
                        self.sparsity.iter().map(|s| s.layer.clone()).collect();
                    Plot::new("sparsity")
                        .height(200.0)
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
                            p.line(Line::new("blank channels", blank));
                            p.line(Line::new("zero values", active));
                        });
                }
            });
        });
    }

    pub(super) fn filters_tab(&mut self, ui: &mut egui::Ui) {
        let Some(model) = self.model.clone() else {
            ui.label("Loading the model…");
            return;
        };
        ui.horizontal(|ui| {
            let current = self.settings.layer.clone().unwrap_or_default();
            if let Some(l) = layer_combo(ui, "filter-layer", "layer", &current, &model.spatial) {
                self.settings.layer = Some(l);
            }
            let s = &mut self.settings;
            widgets::labelled(ui, "filters from", |ui| {
                ui.add(egui::DragValue::new(&mut s.filter_first).range(0..=4096))
            });
            widgets::labelled(ui, "count", |ui| {
                ui.add(egui::DragValue::new(&mut s.filter_count).range(1..=256))
            });
            let l = ui.label("method");
            let before = s.filter_method;
            egui::ComboBox::from_id_salt("filter-method")
                .selected_text(s.filter_method.name())
                .show_ui(ui, |ui| {
                    for m in [FilterMethod::Chollet, FilterMethod::Lucid] {
                        ui.selectable_value(&mut s.filter_method, m, m.name());
                    }
                })
                .response
                .labelled_by(l.id);
            if s.filter_method != before {
                s.filter_steps = s.filter_method.default_steps();
            }
            widgets::labelled(ui, "steps", |ui| {
                ui.add(egui::DragValue::new(&mut s.filter_steps).range(1..=1024))
            });
            widgets::labelled(ui, "size", |ui| {
                ui.add(egui::DragValue::new(&mut s.filter_size).range(32..=512))
            });
            widgets::labelled(ui, "seed", |ui| {
                ui.add(egui::DragValue::new(&mut s.filter_seed))
            });
        });
        ui.horizontal(|ui| {
            if ui
                .add_enabled(!self.filters_running, egui::Button::new("Compute"))
                .clicked()
            {
                self.start_filters();
            }
            if ui
                .add_enabled(self.filters_running, egui::Button::new("Cancel"))
                .clicked()
            {
                self.worker.cancel_current();
            }
        });
        let ctx = ui.ctx().clone();
        let first = self.settings.filter_first;
        let tiles = self.filter_tiles.clone();
        egui::ScrollArea::vertical().show(ui, |ui| {
            ui.horizontal_wrapped(|ui| {
                for (i, tile) in tiles.iter().enumerate() {
                    ui.vertical(|ui| {
                        match tile {
                            Some(img) => {
                                let t = self.tex(&ctx, &format!("filter-{i}"), img, false);
                                widgets::fitted_image(ui, &t, egui::vec2(112.0, 112.0));
                            }
                            None => {
                                ui.add_sized([112.0, 112.0], egui::Spinner::new());
                            }
                        }
                        ui.label(egui::RichText::new(format!("filter {}", first + i)).small());
                    });
                }
            });
        });
    }

    /// Starts computing the Filters tab's patterns, tile by tile.
    pub fn start_filters(&mut self) {
        let (Some(model), Some(layer)) = (&self.model, self.settings.layer.clone()) else {
            return;
        };
        let s = &self.settings;
        let filters: Vec<usize> = (s.filter_first..s.filter_first + s.filter_count).collect();
        let mut options = FilterOptions::for_method(s.filter_method, s.filter_size);
        options.ascent.steps = s.filter_steps;
        options.seed = s.filter_seed;
        self.filter_tiles = vec![None; filters.len()];
        self.filters_running = true;
        let job = jobs::filters_job(model.key.clone(), layer, filters, options);
        self.submit("filters", job);
    }

    pub(super) fn heatmap_tab(&mut self, ui: &mut egui::Ui) {
        let Some(model) = self.model.clone() else {
            ui.label("Loading the model…");
            return;
        };
        let mut changed = false;
        ui.horizontal(|ui| {
            ui.label("method");
            for m in CamMethod::ALL {
                changed |= ui
                    .selectable_value(&mut self.settings.cam_method, m, m.name())
                    .changed();
            }
            let current = self
                .settings
                .cam_layer
                .clone()
                .unwrap_or_else(|| model.default_cam_layer.clone());
            if let Some(l) = layer_combo(ui, "cam-layer", "layer", &current, &model.spatial) {
                self.settings.cam_layer = Some(l);
                changed = true;
            }
            changed |= colormap_combo(ui, "cam-cmap", &mut self.settings.cam_colormap);
            changed |= widgets::labelled(ui, "alpha", |ui| {
                ui.add(egui::Slider::new(&mut self.settings.alpha, 0.0..=1.0))
            })
            .drag_stopped();
        });
        if let Some(view) = self.cam.clone() {
            ui.horizontal_wrapped(|ui| {
                ui.label("class:");
                for c in &view.top5 {
                    let selected = view.class == c.index;
                    if ui
                        .selectable_label(selected, format!("{} {:.3}", c.class, c.prob))
                        .clicked()
                    {
                        self.cam_class = Some(c.index);
                        changed = true;
                    }
                }
            });
            ui.horizontal(|ui| {
                widgets::labelled(ui, "any class:", |ui| {
                    ui.add(
                        egui::TextEdit::singleline(&mut self.class_search)
                            .hint_text("search")
                            .desired_width(160.0),
                    )
                });
                if !self.class_search.is_empty() {
                    let needle = self.class_search.to_lowercase();
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
                            self.cam_class = Some(i);
                            self.class_search.clear();
                            changed = true;
                        }
                    }
                }
            });
        }
        if changed {
            self.request_cam();
        }
        if let Some(view) = self.cam.clone() {
            let (one, all) = self.export_row(ui);
            if one || all {
                let methods = if all {
                    CamMethod::ALL.to_vec()
                } else {
                    vec![view.options.method]
                };
                let stem = self.image_stem();
                let figures = methods
                    .into_iter()
                    .map(|method| {
                        let name = format!(
                            "cam_{stem}_{}_{}_{}",
                            slug(&view.class_name),
                            slug(&view.options.layer),
                            slug(method.name())
                        );
                        let request =
                            crate::export::FigureRequest::Cam(crate::export::CamRequest {
                                image: view.image.clone(),
                                layer: view.options.layer.clone(),
                                method,
                                class: Some(view.class),
                                score: view.options.score,
                                colormap: self.settings.cam_colormap,
                                alpha: self.settings.alpha,
                            });
                        (request, name)
                    })
                    .collect();
                self.export(figures);
            }
        }
        let ctx = ui.ctx().clone();
        for (prefix, view) in [
            ("cam", self.cam.clone()),
            ("trained-cam", self.trained_cam.clone()),
        ] {
            let Some(view) = view else { continue };
            ui.separator();
            ui.label(
                egui::RichText::new(format!(
                    "{} — {} (p = {:.3}), {} at {}",
                    if prefix == "cam" {
                        "base model"
                    } else {
                        "trained model"
                    },
                    view.class_name,
                    view.prob,
                    view.options.method,
                    view.options.layer
                ))
                .strong(),
            );
            let width = (ui.available_width() - 16.0) / 3.0;
            ui.horizontal(|ui| {
                for (part, img) in [
                    ("original", &view.images.original),
                    ("heatmap", &view.images.heatmap),
                    ("overlay", &view.images.overlay),
                ] {
                    let t = self.tex(&ctx, &format!("{prefix}-{part}"), img, true);
                    ui.vertical(|ui| {
                        ui.label(part);
                        widgets::fitted_image(ui, &t, egui::vec2(width, 320.0));
                    });
                }
            });
        }
    }

    pub(super) fn predict_tab(&mut self, ui: &mut egui::Ui) {
        widgets::labelled(
            ui,
            "Image files, one per line (or drop them on the window):",
            |ui| {
                ui.add(
                    egui::TextEdit::multiline(&mut self.predict_input)
                        .desired_rows(3)
                        .desired_width(f32::INFINITY),
                )
            },
        );
        ui.horizontal(|ui| {
            if ui.button("Pick files…").clicked()
                && let Some(files) = rfd::FileDialog::new().pick_files()
            {
                self.predict_input = files
                    .iter()
                    .map(|p| p.display().to_string())
                    .collect::<Vec<_>>()
                    .join("\n");
            }
            if ui.button("Predict").clicked() {
                self.request_predictions();
            }
            ui.label(match &self.trained_model {
                Some(m) => format!("with the trained model {m}"),
                None => "with the loaded model".into(),
            });
        });
        ui.separator();
        let predictions = self.predictions.clone();
        egui::ScrollArea::vertical().show(ui, |ui| {
            for (path, result) in &predictions {
                ui.label(egui::RichText::new(path.display().to_string()).strong());
                match result {
                    Ok(top) => {
                        for c in top {
                            ui.horizontal(|ui| {
                                ui.add(
                                    egui::ProgressBar::new(c.prob)
                                        .desired_width(200.0)
                                        .text(format!("{:.3}", c.prob)),
                                );
                                ui.label(&c.class);
                            });
                        }
                    }
                    Err(e) => widgets::error_line(ui, e),
                }
                ui.add_space(6.0);
            }
        });
    }
}
