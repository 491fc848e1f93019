//! A row's pictures: the original, the heatmap and the overlay, the colour bar of the map's
//! scale beside them and a line that explains the scale and the grey frame.

use super::HeatmapTab;
use crate::gui::widgets;
use crate::viz::colormap::Colormap;

/// The colour bar's image size in pixels ([`Colormap::bar`]); drawn as tall as the pictures.
const BAR: [u32; 2] = [14, 256];
/// The colour bar's width in points.
const BAR_WIDTH: f32 = 14.0;
/// Room for the bar's column: the bar and its tick labels.
const BAR_COLUMN: f32 = 64.0;

/// What the colour bar's scale means (the maps are min-max normalised per map).
pub(super) const SCALE_HELP: &str = "Each map is normalised on its own: 0 is its lowest value, \
                                     1 its highest (the colours are not comparable in absolute \
                                     terms between rows).";
/// What the grey frame on a heatmap is.
pub(super) const FRAME_HELP: &str = "grey frame: outside the centre crop the model did not see";

impl HeatmapTab {
    /// Row `row`'s original, heatmap and overlay (side by side when they fit, else wrapped),
    /// the colour bar of `colormap` and the legend line.
    pub(super) fn images(&mut self, ui: &mut egui::Ui, row: usize, colormap: Colormap) {
        let Some(view) = self.rows.get(row).and_then(|r| r.view.as_ref()) else {
            return;
        };
        let egui_ctx = ui.ctx().clone();
        let spacing = ui.spacing().item_spacing.x;
        let width = ((ui.available_width() - 3.0 * spacing - BAR_COLUMN) / 3.0).max(160.0);
        let bar_name = format!("colour-bar-{}", colormap.name());
        let bar = self
            .textures
            .get(&egui_ctx, &bar_name, &colormap.bar(BAR[0], BAR[1]), false);
        // The pictures' height on screen (fitted into `width` x 320, like them).
        let (w, h) = view.images.original.dimensions();
        let scale = (width / w.max(1) as f32).min(320.0 / h.max(1) as f32);
        let height = (h as f32 * scale).max(80.0);
        ui.horizontal_wrapped(|ui| {
            for (part, img) in [
                ("original", &view.images.original),
                ("heatmap", &view.images.heatmap),
                ("overlay", &view.images.overlay),
            ] {
                let t = self
                    .textures
                    .get(&egui_ctx, &format!("cam-{row}-{part}"), img, true);
                ui.vertical(|ui| {
                    ui.label(part);
                    let r = widgets::fitted_image(ui, &t, egui::vec2(width, 320.0));
                    if part == "heatmap" && view.images.outside {
                        r.on_hover_text(FRAME_HELP);
                    }
                });
            }
            ui.vertical(|ui| colour_bar(ui, &bar, height));
        });
        ui.horizontal_wrapped(|ui| {
            let small = |t: &str| egui::RichText::new(t).weak();
            ui.label(small("colour: 0 = the map's lowest value, 1 = its highest"))
                .on_hover_text(SCALE_HELP);
            if view.images.outside {
                ui.label(small("·"));
                ui.label(small(FRAME_HELP));
            }
        });
    }
}

/// The colour bar, `height` points tall, with its scale: "1" at the top, "0.5" in the middle,
/// "0" at the bottom.
fn colour_bar(ui: &mut egui::Ui, bar: &egui::TextureHandle, height: f32) {
    ui.label("colour scale").on_hover_text(SCALE_HELP);
    // Room above and below the bar for half a tick label.
    let inset = 8.0;
    let (rect, response) = ui.allocate_exact_size(
        egui::vec2(BAR_COLUMN - 8.0, height + 2.0 * inset),
        egui::Sense::hover(),
    );
    let bar_rect = egui::Rect::from_min_size(
        rect.min + egui::vec2(0.0, inset),
        egui::vec2(BAR_WIDTH, height),
    );
    let painter = ui.painter_at(rect);
    painter.image(
        bar.id(),
        bar_rect,
        egui::Rect::from_min_max(egui::pos2(0.0, 0.0), egui::pos2(1.0, 1.0)),
        egui::Color32::WHITE,
    );
    let stroke = ui.visuals().widgets.noninteractive.fg_stroke;
    painter.rect_stroke(bar_rect, 0.0, stroke, egui::StrokeKind::Outside);
    let font = egui::TextStyle::Small.resolve(ui.style());
    for (v, text) in [(1.0f32, "1"), (0.5, "0.5"), (0.0, "0")] {
        let y = bar_rect.bottom() - v * height;
        let x = bar_rect.right();
        painter.line_segment([egui::pos2(x, y), egui::pos2(x + 4.0, y)], stroke);
        let anchor = egui::Align2::LEFT_CENTER;
        painter.text(
            egui::pos2(x + 6.0, y),
            anchor,
            text,
            font.clone(),
            stroke.color,
        );
    }
    response.on_hover_text(SCALE_HELP);
}
