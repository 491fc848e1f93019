//! Small widgets: textures from images, images scaled to fit, a labelled progress line.

use image::RgbImage;

/// Uploads an RGB image as a texture (nearest-neighbour when magnified: activations and
/// filters are pixel data).
pub fn texture(ctx: &egui::Context, name: &str, img: &RgbImage) -> egui::TextureHandle {
    let (w, h) = img.dimensions();
    let color = egui::ColorImage::from_rgb([w as usize, h as usize], img.as_raw());
    ctx.load_texture(name, color, egui::TextureOptions::NEAREST)
}

/// Like [`texture`] but smoothed when scaled (photos, heatmaps).
pub fn photo_texture(ctx: &egui::Context, name: &str, img: &RgbImage) -> egui::TextureHandle {
    let (w, h) = img.dimensions();
    let color = egui::ColorImage::from_rgb([w as usize, h as usize], img.as_raw());
    ctx.load_texture(name, color, egui::TextureOptions::LINEAR)
}

/// Shows a texture scaled to fit `max` while keeping its aspect ratio; returns the response
/// (sensing clicks and hover).
pub fn fitted_image(
    ui: &mut egui::Ui,
    tex: &egui::TextureHandle,
    max: egui::Vec2,
) -> egui::Response {
    ui.add(fitted(tex, max))
}

/// Like [`fitted_image`], with a name for screen readers and UI tests (e.g. the file name).
pub fn named_image(
    ui: &mut egui::Ui,
    tex: &egui::TextureHandle,
    max: egui::Vec2,
    name: &str,
) -> egui::Response {
    ui.add(fitted(tex, max).alt_text(name))
}

fn fitted(tex: &egui::TextureHandle, max: egui::Vec2) -> egui::Image<'static> {
    let size = tex.size_vec2();
    let scale = (max.x / size.x).min(max.y / size.y).max(0.01);
    egui::Image::from_texture((tex.id(), size * scale)).sense(egui::Sense::click())
}

/// A heading-sized section title (its response labels the section's inputs).
pub fn section(ui: &mut egui::Ui, title: &str) -> egui::Response {
    ui.add_space(4.0);
    ui.label(egui::RichText::new(title).strong().size(15.0))
}

/// A label followed by a widget that the label names (for screen readers and UI tests).
pub fn labelled(
    ui: &mut egui::Ui,
    label: &str,
    add: impl FnOnce(&mut egui::Ui) -> egui::Response,
) -> egui::Response {
    let l = ui.label(label);
    add(ui).labelled_by(l.id)
}

/// An error line in the theme's error colour, selectable so it can be copied.
pub fn error_line(ui: &mut egui::Ui, text: &str) {
    ui.add(
        egui::Label::new(egui::RichText::new(text).color(ui.visuals().error_fg_color))
            .selectable(true),
    );
}

/// One entry of a legend drawn outside a plot: a short line in the curve's colour and style,
/// and its name.
pub struct LegendEntry {
    pub name: String,
    pub color: egui::Color32,
    pub dashed: bool,
}

/// A legend in rows under a plot (never over a curve, unlike egui_plot's own).
pub fn legend(ui: &mut egui::Ui, entries: &[LegendEntry]) {
    ui.horizontal_wrapped(|ui| {
        ui.spacing_mut().item_spacing.y = 0.0;
        for e in entries {
            let (rect, _) = ui.allocate_exact_size(egui::vec2(18.0, 10.0), egui::Sense::hover());
            let ends = [rect.left_center(), rect.right_center()];
            let stroke = egui::Stroke::new(2.0, e.color);
            if e.dashed {
                ui.painter()
                    .extend(egui::Shape::dashed_line(&ends, stroke, 4.0, 3.0));
            } else {
                ui.painter().line_segment(ends, stroke);
            }
            ui.label(egui::RichText::new(&e.name).small());
            ui.add_space(4.0);
        }
    });
}
