//! The Train tab: the training form (mode, epochs, ...), curves of loss and accuracy per epoch,
//! and the validation confusion matrix whose cells list their images. What is shown is one
//! [`RunView`], so a list of saved runs can show any of them here.

use std::path::PathBuf;

use egui_plot::{Legend, Line, Plot, PlotPoints};

use crate::gui::context::{AppContext, Command, Commands};
use crate::gui::settings::{Tab, TrainForm};
use crate::gui::widgets;
use crate::jobs::views::TrainOutcome;
use crate::jobs::{JobKind, Request};
use crate::train::{EpochMetrics, Mode, TrainConfig, TrainEvent};
use crate::viz::colormap::Colormap;

/// One line on what a training mode does.
pub fn mode_help(mode: Mode) -> &'static str {
    match mode {
        Mode::Extract => {
            "The pretrained base stays frozen and runs once per image (features cached); only a \
             small head is trained. Fastest."
        }
        Mode::ExtractAugment => {
            "Frozen base, but on freshly augmented images every epoch (no cache): slower, \
             overfits less."
        }
        Mode::Finetune => {
            "The head first (as extract), then the top stages of the base are unfrozen and \
             trained at a low learning rate, with augmentation."
        }
        Mode::Scratch => {
            "A small convnet trained from random weights (the pretrained model is not used)."
        }
    }
}

/// What the tab shows of one training run: its epochs, and its evaluation once finished.
#[derive(Clone, Debug, Default)]
pub struct RunView {
    pub history: Vec<EpochMetrics>,
    pub outcome: Option<TrainOutcome>,
    /// The confusion cell whose images are listed: (true, predicted).
    pub selected_cell: Option<(usize, usize)>,
}

impl RunView {
    /// The selected confusion cell and how many images it lists.
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
}

/// The Train tab's state.
#[derive(Default)]
pub struct TrainTab {
    /// The run on screen (this session's last one).
    pub run: RunView,
}

impl TrainTab {
    /// A run starts: the old curves and matrix go.
    pub fn started(&mut self) {
        self.run = RunView::default();
    }

    /// A training event; returns a warning for the message log.
    pub fn event(&mut self, event: TrainEvent) -> Option<String> {
        match event {
            TrainEvent::Epoch(m) => self.run.history.push(m),
            TrainEvent::Warning(w) => return Some(w),
            TrainEvent::Phase { .. } | TrainEvent::Progress { .. } => {}
        }
        None
    }

    /// The run finished and was evaluated.
    pub fn finished(&mut self, outcome: TrainOutcome) {
        self.run.history = outcome.report.history.clone();
        self.run.outcome = Some(outcome);
    }

    /// Shows a loaded trained model's history when nothing was trained in this session.
    pub fn show_history(&mut self, history: &[EpochMetrics]) {
        if self.run.history.is_empty() && self.run.outcome.is_none() {
            self.run.history = history.to_vec();
        }
    }

    /// Draws the tab; `form` is the persisted training options.
    pub fn ui(&mut self, ui: &mut egui::Ui, ctx: &AppContext, form: &mut TrainForm) -> Commands {
        let mut out = Commands::default();
        let running = ctx.running(JobKind::Train);
        egui::ScrollArea::vertical()
            .id_salt("train-tab")
            .show(ui, |ui| {
                ui.add_enabled_ui(!running, |ui| form_ui(ui, form));
                ui.horizontal_wrapped(|ui| {
                    let ready = ctx.model.is_some() && ctx.data.is_some();
                    let start = ui
                        .add_enabled(!running && ready, egui::Button::new("Start training"))
                        .on_disabled_hover_text(if running {
                            "a run is in progress"
                        } else {
                            "needs a loaded model and a scanned dataset (left panel)"
                        });
                    if start.clicked()
                        && let Some(c) = start_command(ctx, form)
                    {
                        out.push(c);
                    }
                    if ui
                        .add_enabled(running, egui::Button::new("Cancel training"))
                        .clicked()
                    {
                        out.push(Command::Cancel(JobKind::Train));
                    }
                    match (ctx.data, ctx.trained_model) {
                        (None, _) => {
                            ui.label("No dataset: scan a folder in the left panel first.");
                        }
                        (Some(d), None) => {
                            ui.label(format!(
                                "on {} ({} classes)",
                                d.root.display(),
                                d.classes.len()
                            ));
                        }
                        (Some(_), Some(dir)) => {
                            ui.label(format!("trained model: {dir}"));
                        }
                    }
                });
                ui.separator();
                if self.run.history.is_empty() && !running {
                    ui.label(
                        egui::RichText::new(
                            "The curves of loss and accuracy per epoch appear here while a run \
                             trains, then the validation confusion matrix: click a cell to see \
                             its images, an image to see its heatmap.",
                        )
                        .weak(),
                    );
                } else {
                    curves(ui, &self.run.history);
                }
                if self.run.outcome.is_some() {
                    ui.separator();
                    self.confusion(ui, ctx, &mut out);
                }
            });
        out
    }

    fn confusion(&mut self, ui: &mut egui::Ui, ctx: &AppContext, out: &mut Commands) {
        let Some(outcome) = &self.run.outcome else {
            return;
        };
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
        egui::ScrollArea::horizontal()
            .id_salt("confusion-scroll")
            .show(ui, |ui| {
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
                                if confusion_cell(ui, n, max, &e.classes[t], &e.classes[p]) {
                                    self.run.selected_cell = Some((t, p));
                                }
                            }
                            ui.end_row();
                        }
                    });
            });
        let Some((t, p)) = self.run.selected_cell else {
            return;
        };
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
        ui.horizontal_wrapped(|ui| {
            for (path, prob) in &images {
                match ctx.thumbs.get(path) {
                    Some(tex) => {
                        let name = path.file_name().unwrap_or_default().to_string_lossy();
                        if widgets::named_image(ui, tex, egui::vec2(72.0, 72.0), &name)
                            .on_hover_text(format!("{}\np = {prob:.3}", path.display()))
                            .clicked()
                        {
                            out.push(Command::SetImage(path.clone()));
                            out.push(Command::OpenTab(Tab::Heatmap));
                        }
                    }
                    None => {
                        ui.add_sized([72.0, 72.0], egui::Spinner::new());
                        wanted.push(path.clone());
                    }
                }
            }
        });
        if !wanted.is_empty() {
            out.push(Command::Thumbnails(wanted));
        }
    }
}

/// One confusion-matrix cell coloured by its count; returns whether it was clicked.
fn confusion_cell(ui: &mut egui::Ui, n: usize, max: usize, truth: &str, predicted: &str) -> bool {
    let level = n as f32 / max as f32;
    let [r, g, b] = Colormap::Viridis.rgb(level);
    let text_color = if level > 0.6 {
        egui::Color32::BLACK
    } else {
        egui::Color32::WHITE
    };
    let button = egui::Button::new(egui::RichText::new(n.to_string()).color(text_color))
        .fill(egui::Color32::from_rgb(r, g, b))
        .min_size(egui::vec2(44.0, 28.0));
    ui.add(button)
        .on_hover_text(format!("true {truth}, predicted {predicted}"))
        .clicked()
}

/// The training options; fields that do not apply to the chosen mode are disabled.
fn form_ui(ui: &mut egui::Ui, f: &mut TrainForm) {
    ui.horizontal_wrapped(|ui| {
        let l = ui.label("mode");
        egui::ComboBox::from_id_salt("mode")
            .selected_text(f.mode.name())
            .show_ui(ui, |ui| {
                for m in Mode::ALL {
                    ui.selectable_value(&mut f.mode, m, m.name())
                        .on_hover_text(mode_help(m));
                }
            })
            .response
            .labelled_by(l.id)
            .on_hover_text(mode_help(f.mode));
        ui.label(egui::RichText::new(mode_help(f.mode)).weak());
    });
    let finetune = f.mode == Mode::Finetune;
    let augments = f.mode != Mode::Extract;
    egui::Grid::new("train-form").num_columns(4).show(ui, |ui| {
        widgets::labelled(ui, "epochs", |ui| {
            ui.add(egui::DragValue::new(&mut f.epochs).range(1..=500))
        });
        widgets::labelled(ui, "batch size", |ui| {
            ui.add(egui::DragValue::new(&mut f.batch_size).range(1..=256))
        });
        ui.end_row();
        widgets::labelled(ui, "learning rate", |ui| {
            ui.add(
                egui::DragValue::new(&mut f.lr)
                    .range(1e-7..=1.0)
                    .speed(1e-4),
            )
        });
        widgets::labelled(ui, "seed", |ui| ui.add(egui::DragValue::new(&mut f.seed)));
        ui.end_row();
        let why = "only for the finetune mode";
        widgets::labelled(ui, "unfreeze (stages)", |ui| {
            ui.add_enabled(
                finetune,
                egui::DragValue::new(&mut f.unfreeze).range(1..=10),
            )
            .on_disabled_hover_text(why)
        });
        widgets::labelled(ui, "fine-tune epochs", |ui| {
            ui.add_enabled(
                finetune,
                egui::DragValue::new(&mut f.finetune_epochs).range(1..=100),
            )
            .on_disabled_hover_text(why)
        });
        ui.end_row();
        widgets::labelled(ui, "BatchNorm", |ui| {
            ui.add_enabled(
                finetune,
                egui::Checkbox::new(&mut f.train_batchnorm, "train statistics when fine-tuning"),
            )
            .on_hover_text(
                "Off (the usual recipe): the unfrozen stages keep the pretrained statistics. \
                 On: batch statistics, running statistics updated, scale and shift trained.",
            )
            .on_disabled_hover_text(why)
        });
        widgets::labelled(ui, "save to", |ui| ui.text_edit_singleline(&mut f.out_dir));
        ui.end_row();
    });
    ui.add_enabled_ui(augments, |ui| {
        ui.horizontal_wrapped(|ui| {
            ui.label("augment:")
                .on_disabled_hover_text("extract runs each image once: no augmentation");
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
}

/// The command that starts a run with the form's options on the scanned dataset.
pub fn start_command(ctx: &AppContext, f: &TrainForm) -> Option<Command> {
    let (model, data) = (ctx.model?, ctx.data?);
    let config = TrainConfig {
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
    Some(Command::Submit(Request::Train {
        model: model.key.clone(),
        data_dir: data.root.clone(),
        config: Box::new(config),
        out_dir: f.typed_out_dir(),
    }))
}

/// Loss and accuracy per epoch (the page scrolls over them: the plots take no wheel).
fn curves(ui: &mut egui::Ui, history: &[EpochMetrics]) {
    let series = |f: &dyn Fn(&EpochMetrics) -> f32| -> PlotPoints<'static> {
        history
            .iter()
            .enumerate()
            .map(|(i, m)| [(i + 1) as f64, f(m) as f64])
            .collect::<Vec<_>>()
            .into()
    };
    ui.columns(2, |cols| {
        Plot::new("loss")
            .height(180.0)
            .allow_scroll(false)
            .legend(Legend::default())
            .x_axis_label("epoch")
            .y_axis_label("loss")
            .show(&mut cols[0], |p| {
                p.line(Line::new("train loss", series(&|m| m.train_loss)));
                p.line(Line::new("validation loss", series(&|m| m.val_loss)));
            });
        Plot::new("accuracy")
            .height(180.0)
            .allow_scroll(false)
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
