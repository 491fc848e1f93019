//! The Activations tab's export: the grids on screen, or every layer's grid, as figures with
//! their sidecars.

use super::{ATLAS_COLS, ActivationSettings, ActivationsTab};
use crate::gui::context::Commands;
use crate::gui::settings::ExportSettings;
use crate::gui::tabs::compare::file_name_of;
use crate::gui::tabs::{export_command, export_row, image_stem, slug};
use crate::viz::activations::GridOptions;

impl ActivationsTab {
    /// The export row and what its buttons ask for: the grids on screen (the one compared
    /// with too) or every layer's of the first model.
    pub(super) fn export(
        &self,
        ui: &mut egui::Ui,
        s: &ActivationSettings,
        export: &mut ExportSettings,
        key: &str,
        layers: &[String],
    ) -> Commands {
        let mut out = Commands::default();
        let Some(view) = &self.main.view else {
            return out;
        };
        let (one, all) = export_row(ui, export);
        if one || all {
            let layers = if all {
                layers.to_vec()
            } else {
                vec![view.layer.clone()]
            };
            let stem = image_stem(&view.image);
            let figures = layers
                .into_iter()
                .map(|layer| {
                    // The columns on screen for the layer shown, the chosen or default ones
                    // for the others.
                    let cols = match s.columns.get(&layer) {
                        Some(&c) => c,
                        None if layer == view.layer => self.main.cols.max(1),
                        None => ATLAS_COLS,
                    };
                    let grid = GridOptions {
                        cols,
                        ..view.options.clone()
                    };
                    let name = format!("activations_{stem}_{}", slug(&layer));
                    let request = crate::export::FigureRequest::Activations(
                        crate::export::ActivationsRequest {
                            image: view.image.clone(),
                            layer,
                            grid,
                        },
                    );
                    (request, name)
                })
                .collect();
            out.push(export_command(key, export, figures));
            // The grid beside it, of the model compared with, named after that model.
            if let (true, Some(other)) = (one, &self.other.view) {
                let grid = GridOptions {
                    cols: self.other.cols.max(1),
                    ..other.options.clone()
                };
                let name = format!(
                    "activations_{stem}_{}_{}",
                    slug(&other.layer),
                    file_name_of(&other.model)
                );
                let request =
                    crate::export::FigureRequest::Activations(crate::export::ActivationsRequest {
                        image: other.image.clone(),
                        layer: other.layer.clone(),
                        grid,
                    });
                out.push(export_command(&other.model, export, vec![(request, name)]));
            }
        }
        out
    }
}
