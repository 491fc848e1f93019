//! One model's filter tiles: filled tile by tile by the job that computes them, drawn in rows
//! that fit the width.

use image::RgbImage;

use super::super::{STALE_OPACITY, Textures, tiles_per_row};
use crate::export::{FigureRequest, FiltersRequest};
use crate::gui::widgets;
use crate::jobs::{JobId, Request};
use crate::viz::filters::FilterOptions;

/// Side of a tile on screen, pixels.
pub const TILE: f32 = 112.0;

/// The tiles of one computation (`None` in a slot: not computed yet).
#[derive(Default)]
pub struct FilterGrid {
    pub tiles: Vec<Option<RgbImage>>,
    /// The filter number of the first tile.
    pub first: usize,
    /// The model (its key) and layer they belong to, and the options they were computed with.
    pub model: String,
    pub layer: String,
    options: Option<FilterOptions>,
    /// The job computing them (tiles of older jobs are ignored).
    pub job: Option<JobId>,
    /// The tiles per row on screen last frame.
    cols: usize,
    textures: Textures,
    /// The tile clicked last (its index), whose dataset examples are shown.
    pub clicked: Option<usize>,
}

impl FilterGrid {
    /// Tiles finished and asked for.
    pub fn progress(&self) -> (usize, usize) {
        let done = self.tiles.iter().filter(|t| t.is_some()).count();
        (done, self.tiles.len())
    }

    /// The job `job` computing `request` was submitted: its tiles replace these.
    pub fn started(&mut self, job: JobId, request: &Request) {
        if let Request::Filters {
            model,
            layer,
            filters,
            options,
        } = request
        {
            *self = FilterGrid {
                tiles: vec![None; filters.len()],
                first: filters.first().copied().unwrap_or(0),
                model: model.clone(),
                layer: layer.clone(),
                options: Some(options.clone()),
                job: Some(job),
                ..FilterGrid::default()
            };
        }
    }

    /// A finished tile of job `job`, if it is this grid's.
    pub fn tile(&mut self, job: JobId, index: usize, image: &RgbImage) -> bool {
        let mine = self.job == Some(job) && index < self.tiles.len();
        if mine {
            self.tiles[index] = Some(image.clone());
        }
        mine
    }

    /// The figure of these filters as on screen (same filters, options and columns), once
    /// every tile is computed.
    pub fn figure(&self) -> Option<FigureRequest> {
        let (done, total) = self.progress();
        let options = self.options.clone()?;
        (total > 0 && done == total).then(|| {
            FigureRequest::Filters(FiltersRequest {
                layer: self.layer.clone(),
                filters: (self.first..self.first + total).collect(),
                cols: self.cols.max(1),
                options,
            })
        })
    }

    /// The tiles in rows that fit the width; `running`: missing tiles are being computed.
    pub fn show(&mut self, ui: &mut egui::Ui, id: &str, running: bool) {
        let egui_ctx = ui.ctx().clone();
        let per_row = tiles_per_row(ui, TILE);
        self.cols = per_row.min(self.tiles.len()).max(1);
        for (r, row) in self.tiles.chunks(per_row).enumerate() {
            ui.horizontal(|ui| {
                for (k, tile) in row.iter().enumerate() {
                    let i = r * per_row + k;
                    ui.vertical(|ui| {
                        ui.set_width(TILE);
                        match tile {
                            Some(img) => {
                                let t =
                                    self.textures
                                        .get(&egui_ctx, &format!("{id}-{i}"), img, false);
                                let name = format!("pattern of filter {}", self.first + i);
                                let r = widgets::named_image(ui, &t, egui::vec2(TILE, TILE), &name)
                                    .on_hover_text(
                                        "click: the data folder's images that excite it most",
                                    );
                                if r.clicked() {
                                    self.clicked = Some(i);
                                }
                            }
                            None if running => {
                                ui.add_sized([TILE, TILE], egui::Spinner::new());
                            }
                            None => {
                                ui.scope(|ui| {
                                    ui.multiply_opacity(STALE_OPACITY);
                                    ui.add_sized([TILE, TILE], egui::Label::new("not computed"));
                                });
                            }
                        }
                        ui.label(egui::RichText::new(format!("filter {}", self.first + i)).small());
                    });
                }
            });
        }
    }
}
