//! The Data tab: classes and counts per split, an augmentation preview, and a gallery of the
//! images filtered by split and class (a click makes one the image of the visual tabs), and the
//! probe of what each layer knows about the class and the instance.

mod gallery;
pub mod probe;

use super::{STALE_OPACITY, empty_state};
use crate::data::augment::Augment;
use crate::data::folder::Split;
use crate::gui::context::{AppContext, Command, Commands};
use crate::gui::widgets;
use crate::jobs::{JobKind, Request};
pub use gallery::Gallery;

/// Side of a gallery cell, pixels.
const CELL: f32 = 96.0;

/// The Data tab's state: the augmentation previews and the gallery's filter.
#[derive(Default)]
pub struct DataTab {
    previews: Vec<egui::TextureHandle>,
    pub gallery: Gallery,
    /// The information-distillation probe of the folder.
    pub probe: probe::ProbePanel,
}

/// The bundled dataset's folder.
pub fn bundled_dataset() -> String {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("assets/datasets/fashion-mini")
        .to_string_lossy()
        .into_owned()
}

impl DataTab {
    /// Takes the augmented previews computed by the worker.
    pub fn set_previews(&mut self, ctx: &egui::Context, images: &[image::RgbImage]) {
        self.previews = images
            .iter()
            .enumerate()
            .map(|(i, img)| widgets::photo_texture(ctx, &format!("preview-{i}"), img))
            .collect();
    }

    /// Draws the tab; `augment` is the training form's augmentation (previewed here).
    pub fn ui(&mut self, ui: &mut egui::Ui, ctx: &AppContext, augment: &mut Augment) -> Commands {
        let mut out = Commands::default();
        let Some(data) = ctx.data else {
            if ctx.running(JobKind::Data) {
                ui.horizontal(|ui| {
                    ui.spinner();
                    ui.label("Scanning the folder…");
                });
            } else if empty_state(
                ui,
                "This tab shows a dataset: its classes, how many images each split has, \
                 augmented samples and every image. Choose a folder with one subfolder per \
                 class in the left panel, or start with the bundled one.",
                "Use the bundled dataset (fashion-mini)",
                true,
            ) {
                out.push(Command::ScanData(Some(bundled_dataset())));
            }
            return out;
        };
        egui::ScrollArea::vertical()
            .id_salt("data-tab")
            .show(ui, |ui| {
                ui.label(egui::RichText::new(data.root.display().to_string()).strong());
                egui::Grid::new("class-counts")
                    .striped(true)
                    .show(ui, |ui| {
                        for h in ["class", "train", "validation", "test"] {
                            ui.label(egui::RichText::new(h).strong());
                        }
                        ui.end_row();
                        let counts: Vec<Vec<usize>> =
                            [Split::Train, Split::Validation, Split::Test]
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
                self.augmentation(ui, ctx, augment, &mut out);
                ui.separator();
                self.probe.ui(ui, ctx, &mut out);
                ui.separator();
                self.gallery.ui(ui, ctx, data, &mut out);
            });
        out
    }

    fn augmentation(
        &mut self,
        ui: &mut egui::Ui,
        ctx: &AppContext,
        augment: &mut Augment,
        out: &mut Commands,
    ) {
        if ctx.data.is_none() {
            return;
        }
        ui.horizontal_wrapped(|ui| {
            widgets::section(ui, "Augmentation preview");
            ui.checkbox(&mut augment.flip, "flip");
            for (v, name, d) in [
                (&mut augment.rotation, "rotate", 0.1),
                (&mut augment.zoom, "zoom", 0.2),
                (&mut augment.translation, "translate", 0.1),
                (&mut augment.contrast, "contrast", 0.2),
            ] {
                let mut on = v.is_some();
                if ui.checkbox(&mut on, name).changed() {
                    *v = on.then_some(d);
                }
            }
            if ui.button("Preview").clicked() {
                out.extend(Commands(
                    preview_command(ctx, augment).into_iter().collect(),
                ));
            }
            if ctx.running(JobKind::Augment) {
                ui.spinner();
            }
        });
        if !self.previews.is_empty() {
            ui.horizontal_wrapped(|ui| {
                if ctx.running(JobKind::Augment) {
                    ui.multiply_opacity(STALE_OPACITY);
                }
                for t in &self.previews {
                    widgets::fitted_image(ui, t, egui::vec2(CELL, CELL));
                }
            });
        }
    }
}

/// The command that previews eight augmented versions of the dataset's first training image
/// (the current image without a dataset).
pub fn preview_command(ctx: &AppContext, augment: &Augment) -> Option<Command> {
    let image = ctx
        .data
        .and_then(|d| d.split(Split::Train).first().map(|s| s.path.clone()))
        .unwrap_or_else(|| ctx.image.to_path_buf());
    Some(Command::Submit(Request::Augment {
        image,
        augment: augment.clone(),
        size: 128,
        n: 8,
    }))
}
