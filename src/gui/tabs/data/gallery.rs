//! The Data tab's gallery: the dataset's images filtered by split and class, in rows that wrap
//! to the width (the tab scrolls). A click makes an image the current one and stays here;
//! buttons open it in the Activations or Heatmap tab.

use std::path::Path;

use super::CELL;
use crate::data::folder::{ImageFolder, Sample, Split};
use crate::gui::context::{AppContext, Command, Commands};
use crate::gui::settings::Tab;
use crate::gui::widgets;

/// Which images the gallery shows.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GalleryFilter {
    /// `None`: every split (each thumbnail then says which).
    pub split: Option<Split>,
    /// A class index (`None`: every class).
    pub class: Option<usize>,
}

impl GalleryFilter {
    /// The images that pass with their split: train, validation, then test, each in the
    /// dataset's order (by class, then by path).
    pub fn samples<'a>(&self, data: &'a ImageFolder) -> Vec<(Split, &'a Sample)> {
        Split::ALL
            .into_iter()
            .filter(|s| self.split.is_none_or(|f| f == *s))
            .flat_map(|s| data.split(s).iter().map(move |x| (s, x)))
            .filter(|(_, x)| self.class.is_none_or(|c| c == x.label))
            .collect()
    }
}

/// The gallery's state: its filter.
#[derive(Debug, Default)]
pub struct Gallery {
    pub filter: GalleryFilter,
}

/// The name a thumbnail has for screen readers and tests: `FILE (CLASS, SPLIT)`.
pub fn thumbnail_name(data: &ImageFolder, split: Split, sample: &Sample) -> String {
    let file = sample
        .path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    format!("{file} ({}, {split})", data.classes[sample.label])
}

impl Gallery {
    /// Draws the filter row, the current image with its "open in" buttons, and the thumbnails.
    pub fn ui(
        &mut self,
        ui: &mut egui::Ui,
        ctx: &AppContext,
        data: &ImageFolder,
        out: &mut Commands,
    ) {
        if self.filter.class.is_some_and(|c| c >= data.classes.len()) {
            self.filter.class = None;
        }
        widgets::section(ui, "Gallery");
        let samples = self.filter.samples(data);
        ui.horizontal_wrapped(|ui| {
            self.filter_ui(ui, data);
            let total: usize = Split::ALL.iter().map(|&s| data.split(s).len()).sum();
            ui.label(format!("showing {} of {total} images", samples.len()));
        });
        current_image(ui, ctx, data, out);
        ui.label(
            egui::RichText::new(
                "Hover for the class and path; a click makes an image the current one.",
            )
            .weak(),
        );
        thumbnails(ui, ctx, data, &samples, self.filter.split.is_none(), out);
    }

    /// The split and class combo boxes.
    fn filter_ui(&mut self, ui: &mut egui::Ui, data: &ImageFolder) {
        let split_text = |s: Option<Split>| match s {
            None => "all splits".to_string(),
            Some(s) => format!("{s}: {} images", data.split(s).len()),
        };
        let label = ui.label("split");
        egui::ComboBox::from_id_salt("gallery-split")
            .selected_text(split_text(self.filter.split))
            .show_ui(ui, |ui| {
                for s in [
                    None,
                    Some(Split::Train),
                    Some(Split::Validation),
                    Some(Split::Test),
                ] {
                    ui.selectable_value(&mut self.filter.split, s, split_text(s));
                }
            })
            .response
            .labelled_by(label.id);
        let class_text = |c: Option<usize>| match c {
            None => "all classes".to_string(),
            Some(c) => data.classes[c].clone(),
        };
        let label = ui.label("class");
        egui::ComboBox::from_id_salt("gallery-class")
            .selected_text(class_text(self.filter.class))
            .height(300.0)
            .show_ui(ui, |ui| {
                let classes = std::iter::once(None).chain((0..data.classes.len()).map(Some));
                for c in classes {
                    ui.selectable_value(&mut self.filter.class, c, class_text(c));
                }
            })
            .response
            .labelled_by(label.id);
    }
}

/// The current image (with its class and split when it is in the dataset) and the buttons
/// that open it in the visual tabs.
fn current_image(ui: &mut egui::Ui, ctx: &AppContext, data: &ImageFolder, out: &mut Commands) {
    let found = Split::ALL.into_iter().find_map(|s| {
        data.split(s)
            .iter()
            .find(|x| x.path == ctx.image)
            .map(|x| thumbnail_name(data, s, x))
    });
    let name = found.unwrap_or_else(|| file_name(ctx.image));
    ui.horizontal_wrapped(|ui| {
        ui.label(format!("current image: {name}"))
            .on_hover_text(ctx.image.display().to_string());
        for (tab, text) in [
            (Tab::Activations, "Open in Activations"),
            (Tab::Heatmap, "Open in Heatmap"),
        ] {
            if ui.button(text).clicked() {
                out.push(Command::OpenTab(tab));
            }
        }
    });
}

fn file_name(path: &Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| path.display().to_string())
}

/// The thumbnails in rows that fit the width; only the rows on screen are drawn and ask for
/// their thumbnails. With `badges`, each says its split.
fn thumbnails(
    ui: &mut egui::Ui,
    ctx: &AppContext,
    data: &ImageFolder,
    samples: &[(Split, &Sample)],
    badges: bool,
    out: &mut Commands,
) {
    let per_row = super::super::tiles_per_row(ui, CELL);
    let mut wanted = Vec::new();
    for row in samples.chunks(per_row) {
        let (rect, _) =
            ui.allocate_exact_size(egui::vec2(ui.available_width(), CELL), egui::Sense::hover());
        if !ui.is_rect_visible(rect) {
            continue;
        }
        let mut row_ui = ui.new_child(
            egui::UiBuilder::new()
                .max_rect(rect)
                .layout(egui::Layout::left_to_right(egui::Align::Center)),
        );
        for &(split, sample) in row {
            let Some(tex) = ctx.thumbs.get(&sample.path) else {
                row_ui.add_sized([CELL, CELL], egui::Spinner::new());
                wanted.push(sample.path.clone());
                continue;
            };
            let name = thumbnail_name(data, split, sample);
            let r = widgets::named_image(&mut row_ui, tex, egui::vec2(CELL, CELL), &name)
                .on_hover_text(format!(
                    "{} ({split})\n{}",
                    data.classes[sample.label],
                    sample.path.display()
                ));
            if badges {
                badge(&row_ui, r.rect, split.name());
            }
            if sample.path == ctx.image {
                let stroke = egui::Stroke::new(3.0, row_ui.visuals().selection.stroke.color);
                row_ui
                    .painter()
                    .rect_stroke(r.rect, 2.0, stroke, egui::StrokeKind::Outside);
            }
            if r.clicked() && sample.path != ctx.image {
                out.push(Command::SetImage(sample.path.clone()));
            }
        }
    }
    if !wanted.is_empty() {
        out.push(Command::Thumbnails(wanted));
    }
}

/// A small label on a dark background in the lower left corner of `rect`.
fn badge(ui: &egui::Ui, rect: egui::Rect, text: &str) {
    let painter = ui.painter();
    let galley = painter.layout_no_wrap(
        text.to_string(),
        egui::FontId::proportional(11.0),
        egui::Color32::WHITE,
    );
    let at = rect.left_bottom() + egui::vec2(3.0, -3.0 - galley.size().y);
    let back = egui::Rect::from_min_size(at, galley.size()).expand(2.0);
    painter.rect_filled(back, 2.0, egui::Color32::from_black_alpha(170));
    painter.galley(at, galley, egui::Color32::WHITE);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::folder::FolderOptions;

    #[test]
    fn the_filter_keeps_one_split_and_one_class() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("assets/datasets/fashion-mini");
        let data = ImageFolder::scan(&root, &FolderOptions::default()).unwrap();
        let all = GalleryFilter::default().samples(&data);
        let total: usize = Split::ALL.iter().map(|&s| data.split(s).len()).sum();
        assert_eq!(all.len(), total);
        let validation = GalleryFilter {
            split: Some(Split::Validation),
            class: None,
        };
        let shown = validation.samples(&data);
        assert_eq!(shown.len(), data.split(Split::Validation).len());
        assert!(shown.iter().all(|(s, _)| *s == Split::Validation));
        let bags = GalleryFilter {
            split: Some(Split::Train),
            class: Some(1),
        };
        let shown = bags.samples(&data);
        assert_eq!(shown.len(), data.class_counts(Split::Train)[1]);
        for (_, x) in &shown {
            assert_eq!(x.label, 1);
            let folder = x.path.parent().unwrap().file_name().unwrap();
            assert_eq!(folder.to_string_lossy(), data.classes[1]);
        }
    }
}
