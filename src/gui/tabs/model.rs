//! The Model tab: the layer table (output shape, parameters, FLOPs); a click picks the layer
//! the Activations and Filters tabs show.

use super::model_or_empty;
use crate::gui::context::{AppContext, Command, Commands};
use crate::text::{shape_text, thousands};

/// The Model tab (no state of its own).
#[derive(Default)]
pub struct ModelTab;

impl ModelTab {
    /// Draws the tab.
    pub fn ui(&mut self, ui: &mut egui::Ui, ctx: &AppContext) -> Commands {
        let mut out = Commands::default();
        let Some(m) = model_or_empty(ui, ctx) else {
            return out;
        };
        ui.label(egui::RichText::new(&m.title).strong());
        ui.label(&m.source);
        ui.label(
            egui::RichText::new("Click a layer to look at it in the Activations and Filters tabs.")
                .weak(),
        );
        ui.separator();
        egui::ScrollArea::both().id_salt("layers").show(ui, |ui| {
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
                        let selected = ctx.layer == Some(l.id.as_str());
                        if ui.selectable_label(selected, &l.id).clicked() {
                            out.push(if m.spatial.contains(&l.id) {
                                Command::SelectLayer(l.id.clone())
                            } else {
                                Command::Note(format!(
                                    "`{}` has no spatial output to show as a grid",
                                    l.id
                                ))
                            });
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
        out
    }
}
