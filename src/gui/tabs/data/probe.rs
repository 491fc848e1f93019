//! The Data tab's probe section: "information distillation" measured on the data folder, for
//! any model the tabs can look through: class-probe accuracy, instance retrieval, input
//! reconstruction (R^2) and sparsity by depth, one plot (solid: the latest model probed,
//! dashed: the one before it).

use egui_plot::{Line, LineStyle, Plot, PlotPoints};

use crate::gui::context::{AppContext, Command, Commands};
use crate::gui::tabs::job_line::job_line;
use crate::gui::tabs::model_chooser;
use crate::gui::widgets;
use crate::jobs::{JobKind, Request};
use crate::viz::probe::{ProbeReport, TapProbe};

/// The curves: name, value, colour.
type Curve = (&'static str, fn(&TapProbe) -> Option<f32>, egui::Color32);
const CURVES: [Curve; 4] = [
    (
        "class probe",
        |t| Some(t.class_accuracy),
        egui::Color32::from_rgb(60, 130, 220),
    ),
    (
        "instance top-1",
        |t| Some(t.instance_top1),
        egui::Color32::from_rgb(220, 70, 70),
    ),
    (
        "input reconstruction R²",
        |t| t.reconstruction_r2,
        egui::Color32::from_rgb(50, 170, 60),
    ),
    (
        "sparsity",
        |t| Some(t.sparsity),
        egui::Color32::from_rgb(150, 150, 150),
    ),
];

/// The probe section's state: the model chosen, how many images, the results so far (newest
/// last).
pub struct ProbePanel {
    model: Option<String>,
    /// The most images probed.
    pub max_images: usize,
    results: Vec<(String, ProbeReport)>,
}

impl Default for ProbePanel {
    fn default() -> Self {
        ProbePanel {
            model: None,
            max_images: crate::viz::probe::ProbeOptions::default().max_images,
            results: Vec::new(),
        }
    }
}

impl ProbePanel {
    /// Takes a finished probe of the model `key` (replacing an older one of it).
    pub fn set(&mut self, key: String, report: ProbeReport) {
        self.results.retain(|(k, _)| *k != key);
        self.results.push((key, report));
    }

    /// The results on show, newest first (at most two).
    pub fn shown(&self) -> impl Iterator<Item = &(String, ProbeReport)> {
        self.results.iter().rev().take(2)
    }

    /// Draws the section.
    pub fn ui(&mut self, ui: &mut egui::Ui, ctx: &AppContext, out: &mut Commands) {
        let Some(data) = ctx.data else { return };
        let key = ctx.model_key(self.model.as_deref()).unwrap_or_default();
        ui.horizontal_wrapped(|ui| {
            widgets::section(ui, "What each layer knows (information distillation)");
            if let Some(k) = model_chooser(ui, "probe-model", ctx, Some(&key)) {
                self.model = Some(k);
            }
            widgets::labelled(ui, "images at most", |ui| {
                ui.add(egui::DragValue::new(&mut self.max_images).range(4..=100_000))
            });
            let running = ctx.running(JobKind::Probe);
            if ui
                .add_enabled(!running, egui::Button::new("Probe"))
                .on_hover_text(
                    "a linear class probe, instance retrieval and a linear reconstruction of \
                     the image on every layer's activations (a seeded draw of at most that \
                     many images of the folder)",
                )
                .clicked()
            {
                out.push(Command::Submit(Request::Probe {
                    model: key.clone(),
                    dir: data.root.clone(),
                    max_images: self.max_images,
                }));
            }
            job_line(ui, ctx, JobKind::Probe, "Cancel", out);
        });
        let shown: Vec<&(String, ProbeReport)> = self.shown().collect();
        let Some((_, first)) = shown.first() else {
            ui.label(
                "Does a layer know the class, or the very image? Probe trains a softmax \
                 classifier on each layer's pooled activations and tries to find each image \
                 from a slightly shifted, zoomed and brightened copy of it (the layer pooled \
                 to a 4 x 4 grid), and fits a linear decoder that rebuilds the image from the \
                 layer (R²: the share of the image's pixel variance it recovers on held-out \
                 images).",
            );
            return;
        };
        for (k, r) in &shown {
            let (Some(stem), Some(head)) = (r.taps.first(), r.taps.last()) else {
                continue;
            };
            let r2 = |t: &TapProbe| {
                t.reconstruction_r2
                    .map_or_else(|| "–".to_string(), |v| format!("{v:.2}"))
            };
            ui.label(format!(
                "{}: class probe {:.2} ({}) to {:.2} ({}); instance {:.2} to {:.2}; \
                 reconstruction R² {} to {}; {} train, {} held out",
                ctx.model_name(k),
                stem.class_accuracy,
                stem.layer,
                head.class_accuracy,
                head.layer,
                stem.instance_top1,
                head.instance_top1,
                r2(stem),
                r2(head),
                r.train_images,
                r.held_out_images
            ));
        }
        // The key above the plot, not a legend inside it: the curves end at the top right.
        ui.horizontal_wrapped(|ui| {
            for (name, _, colour) in CURVES {
                ui.colored_label(colour, format!("— {name}"));
            }
            for (m, (k, _)) in shown.iter().enumerate() {
                let style = if m == 0 { "solid" } else { "dashed" };
                ui.label(format!("· {style}: {}", ctx.model_name(k)));
            }
        });
        let names: Vec<String> = first.taps.iter().map(|t| t.layer.clone()).collect();
        Plot::new("probe")
            .height(240.0)
            .allow_scroll(false)
            .include_y(0.0)
            .include_y(1.05)
            .x_axis_label("layer (depth)")
            .x_axis_formatter(move |mark, _| {
                names
                    .get(mark.value.round() as usize)
                    .cloned()
                    .unwrap_or_default()
            })
            .show(ui, |plot| {
                for (m, (k, r)) in shown.iter().enumerate() {
                    for (name, value, colour) in CURVES {
                        let pts: PlotPoints = r
                            .taps
                            .iter()
                            .enumerate()
                            .filter_map(|(i, t)| Some([i as f64, f64::from(value(t)?)]))
                            .collect();
                        let style = if m == 0 {
                            LineStyle::Solid
                        } else {
                            LineStyle::dashed_loose()
                        };
                        let label = format!("{name} · {}", ctx.model_name(k));
                        plot.line(Line::new(label, pts).color(colour).style(style));
                    }
                }
            });
    }
}
