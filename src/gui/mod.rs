//! The desktop app (feature `gui`). For now: the model's layer table, loaded off the UI thread.

use std::sync::mpsc;

use crate::graph::LayerInfo;
use crate::text::{shape_text, thousands};
use crate::{Error, Result};

/// What the window shows about the loaded model.
struct ModelSummary {
    title: String,
    source: String,
    table: Vec<LayerInfo>,
}

enum LoadState {
    Loading(mpsc::Receiver<Result<ModelSummary>>),
    Ready(ModelSummary),
    Failed(String),
}

/// The app's state.
pub struct ConvlensApp {
    model_name: String,
    state: LoadState,
    selected_layer: Option<String>,
}

impl ConvlensApp {
    /// Starts loading `model` on a worker thread; `repaint` is called when it is done.
    pub fn new(model: &str, repaint: impl Fn() + Send + 'static) -> Self {
        let (tx, rx) = mpsc::channel();
        let name = model.to_string();
        std::thread::Builder::new()
            .name("convlens-load".into())
            .spawn(move || {
                let _ = tx.send(load_summary(&name));
                repaint();
            })
            .expect("spawn the model loader");
        ConvlensApp {
            model_name: model.to_string(),
            state: LoadState::Loading(rx),
            selected_layer: None,
        }
    }

    /// The layer the user clicked in the table.
    pub fn selected_layer(&self) -> Option<&str> {
        self.selected_layer.as_deref()
    }

    fn poll(&mut self) {
        if let LoadState::Loading(rx) = &self.state {
            match rx.try_recv() {
                Ok(Ok(summary)) => self.state = LoadState::Ready(summary),
                Ok(Err(e)) => self.state = LoadState::Failed(e.to_string()),
                Err(mpsc::TryRecvError::Empty) => {}
                Err(mpsc::TryRecvError::Disconnected) => {
                    self.state = LoadState::Failed("the model loader stopped".into())
                }
            }
        }
    }

    /// Draws the whole window.
    pub fn draw(&mut self, ui: &mut egui::Ui) {
        self.poll();
        ui.heading("convlens");
        match &self.state {
            LoadState::Loading(_) => {
                ui.horizontal(|ui| {
                    ui.spinner();
                    ui.label(format!("Loading {}…", self.model_name));
                });
            }
            LoadState::Failed(msg) => {
                ui.colored_label(ui.visuals().error_fg_color, msg);
            }
            LoadState::Ready(summary) => {
                ui.label(egui::RichText::new(&summary.title).strong());
                ui.label(&summary.source);
                ui.separator();
                layer_table(ui, &summary.table, &mut self.selected_layer);
            }
        }
    }
}

fn load_summary(model: &str) -> Result<ModelSummary> {
    let spec = crate::zoo::resolve(model)?;
    let loaded = spec.load(&candle_core::Device::Cpu)?;
    let m = &spec.manifest;
    Ok(ModelSummary {
        title: format!(
            "{} — {} classes, input {}×{}",
            m.name, m.num_classes, m.input_size, m.input_size
        ),
        source: format!("{} ({})", m.provenance.source, m.provenance.license),
        table: loaded.network.layers(m.input_size as usize),
    })
}

fn layer_table(ui: &mut egui::Ui, table: &[LayerInfo], selected: &mut Option<String>) {
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
                for l in table {
                    let is_selected = selected.as_deref() == Some(l.id.as_str());
                    if ui.selectable_label(is_selected, &l.id).clicked() {
                        *selected = Some(l.id.clone());
                    }
                    ui.label(shape_text(&l.output_shape));
                    ui.label(thousands(l.params));
                    ui.label(format!("{:.1}", l.flops as f64 / 1e6));
                    ui.end_row();
                }
                let params: usize = table.iter().map(|l| l.params).sum();
                let flops: u64 = table.iter().map(|l| l.flops).sum();
                ui.label(egui::RichText::new("total").strong());
                ui.label("");
                ui.label(egui::RichText::new(thousands(params)).strong());
                ui.label(egui::RichText::new(format!("{:.1}", flops as f64 / 1e6)).strong());
                ui.end_row();
            });
    });
}

impl eframe::App for ConvlensApp {
    fn ui(&mut self, ui: &mut egui::Ui, _frame: &mut eframe::Frame) {
        egui::CentralPanel::default().show(ui, |ui| self.draw(ui));
    }
}

/// Opens the desktop window on `model`.
pub fn run(model: &str) -> Result<()> {
    let options = eframe::NativeOptions {
        viewport: egui::ViewportBuilder::default()
            .with_title("convlens")
            .with_inner_size([720.0, 640.0]),
        ..Default::default()
    };
    let model = model.to_string();
    eframe::run_native(
        "convlens",
        options,
        Box::new(move |cc| {
            let ctx = cc.egui_ctx.clone();
            Ok(Box::new(ConvlensApp::new(&model, move || {
                ctx.request_repaint()
            })))
        }),
    )
    .map_err(|e| Error::Model(format!("cannot open the window: {e}")))
}
