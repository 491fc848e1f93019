//! A run's validation confusion matrix; clicking a cell lists its images, and a click on one
//! opens the Heatmap tab set up to explain it (the run's map of the true and of the predicted
//! class, and the loaded model's view).

use std::path::PathBuf;

use super::RunView;
use crate::gui::context::{AppContext, Command, Commands, ModelChoice};
use crate::gui::settings::Tab;
use crate::gui::tabs::heatmap::Explain;
use crate::gui::widgets;
use crate::train::evaluate::Evaluation;
use crate::viz::colormap::Colormap;

/// The images of cell (`t`, `p`) with their predicted probability. A live evaluation knows
/// every image; a saved one only the misclassified ones (the diagonal lists none).
pub fn cell_images(e: &Evaluation, t: usize, p: usize) -> Vec<(PathBuf, f32)> {
    if !e.predictions.is_empty() {
        return e
            .predictions
            .iter()
            .filter(|(_, tt, pp, _)| (*tt, *pp) == (t, p))
            .map(|(path, _, _, prob)| (path.clone(), *prob))
            .collect();
    }
    let (Some(truth), Some(predicted)) = (e.classes.get(t), e.classes.get(p)) else {
        return Vec::new();
    };
    e.misclassified
        .iter()
        .filter(|m| &m.true_class == truth && &m.predicted_class == predicted)
        .map(|m| (m.path.clone(), m.predicted_prob))
        .collect()
}

/// Draws the matrix of `view` (which has an evaluation) and the selected cell's images.
pub fn ui(ui: &mut egui::Ui, ctx: &AppContext, view: &mut RunView, out: &mut Commands) {
    let Some(e) = &view.evaluation else {
        return;
    };
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
    // Every column as wide as the widest class name and a margin, from this frame's text (a
    // grid sizes its columns from the previous frame), each name centred over its column and
    // right-aligned beside its row: no name runs into its neighbour's.
    let width = column_width(ui, &e.classes);
    let name = |c: &str| {
        egui::Label::new(egui::RichText::new(c).small()).wrap_mode(egui::TextWrapMode::Extend)
    };
    egui::ScrollArea::horizontal()
        .id_salt("confusion-scroll")
        .show(ui, |ui| {
            egui::Grid::new("confusion")
                .spacing([GAP, GAP])
                .min_col_width(width)
                .show(ui, |ui| {
                    ui.label("");
                    for c in &e.classes {
                        ui.add_sized([width, 18.0], name(c));
                    }
                    ui.end_row();
                    for (t, row) in e.confusion.iter().enumerate() {
                        ui.allocate_ui_with_layout(
                            egui::vec2(width, CELL_HEIGHT),
                            egui::Layout::right_to_left(egui::Align::Center),
                            |ui| ui.add(name(&e.classes[t])),
                        );
                        for (p, &n) in row.iter().enumerate() {
                            if cell(ui, n, max, width, &e.classes[t], &e.classes[p]) {
                                view.selected_cell = Some((t, p));
                            }
                        }
                        ui.end_row();
                    }
                });
        });
    let Some((t, p)) = view.selected_cell else {
        return;
    };
    let images = cell_images(e, t, p);
    let saved_diagonal = t == p && e.predictions.is_empty();
    ui.label(if saved_diagonal {
        format!(
            "true {0}, predicted {0}: a saved run keeps only its misclassified images",
            e.classes[t]
        )
    } else {
        format!(
            "{} images: true {}, predicted {} (click one to see the heatmaps of both classes)",
            images.len(),
            e.classes[t],
            e.classes[p]
        )
    });
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
                        out.0.extend(open_image(ctx, view, e, path, (t, p)));
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

/// The model of the run on screen: a run of the workspace by its folder, else this session's
/// model (`None`: neither, e.g. a run saved elsewhere in an earlier session).
fn run_model(ctx: &AppContext, view: &RunView) -> Option<ModelChoice> {
    let key = match (&view.name, ctx.workspace) {
        (Some(name), Some(ws)) => ws.runs_dir().join(name).to_string_lossy().into_owned(),
        _ => ctx.trained_model?.to_string(),
    };
    let label = if ctx.trained_model == Some(key.as_str()) {
        ctx.model_name(&key)
    } else {
        format!("run: {}", view.title)
    };
    Some(ModelChoice { label, key })
}

/// What a click on image `path` of cell (`t`, `p`) does: the Heatmap tab explains it with the
/// run's model; without one, the tab just opens on the image.
fn open_image(
    ctx: &AppContext,
    view: &RunView,
    e: &Evaluation,
    path: &std::path::Path,
    (t, p): (usize, usize),
) -> Vec<Command> {
    match run_model(ctx, view) {
        Some(model) => vec![Command::Explain(
            path.to_path_buf(),
            Explain {
                model,
                truth: (t, e.classes[t].clone()),
                predicted: (p, e.classes[p].clone()),
            },
        )],
        None => vec![
            Command::SetImage(path.to_path_buf()),
            Command::OpenTab(Tab::Heatmap),
        ],
    }
}

/// A cell's accessible label: `true bag, predicted sandal: 3`.
fn cell_label(n: usize, truth: &str, predicted: &str) -> String {
    format!("true {truth}, predicted {predicted}: {n}")
}

/// The smallest width of a matrix cell, in points.
const CELL_WIDTH: f32 = 44.0;
/// The height of a matrix cell, in points.
const CELL_HEIGHT: f32 = 28.0;
/// The space between cells, and at least between two class names, in points.
const GAP: f32 = 4.0;

/// The width of the matrix's columns: the widest class name in small text and [`GAP`], at
/// least [`CELL_WIDTH`].
fn column_width(ui: &egui::Ui, classes: &[String]) -> f32 {
    let font = egui::TextStyle::Small.resolve(ui.style());
    classes
        .iter()
        .map(|c| {
            ui.painter()
                .layout_no_wrap(c.clone(), font.clone(), egui::Color32::WHITE)
                .size()
                .x
        })
        .fold(CELL_WIDTH - GAP, f32::max)
        .ceil()
        + GAP
}

/// One cell `width` wide coloured by its count; returns whether it was clicked.
fn cell(ui: &mut egui::Ui, n: usize, max: usize, width: f32, truth: &str, predicted: &str) -> bool {
    let level = n as f32 / max as f32;
    let [r, g, b] = Colormap::Viridis.rgb(level);
    let text_color = if level > 0.6 {
        egui::Color32::BLACK
    } else {
        egui::Color32::WHITE
    };
    let button = egui::Button::new(egui::RichText::new(n.to_string()).color(text_color))
        .fill(egui::Color32::from_rgb(r, g, b))
        .min_size(egui::vec2(width, CELL_HEIGHT));
    let response = ui.add(button);
    // Screen readers (and UI tests) hear what the cell counts, not the bare number.
    let label = cell_label(n, truth, predicted);
    response.widget_info(|| egui::WidgetInfo::labeled(egui::Role::Button, true, &label));
    response
        .on_hover_text(format!("true {truth}, predicted {predicted}"))
        .clicked()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::train::evaluate::Misclassified;

    #[test]
    fn a_saved_evaluation_lists_the_misclassified_images_of_a_cell() {
        let mut e = Evaluation {
            accuracy: 0.5,
            loss: None,
            classes: vec!["bag".into(), "sandal".into()],
            confusion: vec![vec![1, 1], vec![0, 0]],
            per_class: Vec::new(),
            misclassified: vec![Misclassified {
                path: "/d/bag/2.png".into(),
                true_class: "bag".into(),
                predicted_class: "sandal".into(),
                true_prob: 0.25,
                predicted_prob: 0.75,
            }],
            skipped: Vec::new(),
            predictions: Vec::new(),
        };
        assert_eq!(
            cell_images(&e, 0, 1),
            vec![(PathBuf::from("/d/bag/2.png"), 0.75)]
        );
        assert!(cell_images(&e, 0, 0).is_empty(), "saved: no correct images");
        assert!(cell_images(&e, 5, 0).is_empty());
        // A live evaluation knows every image.
        e.predictions = vec![
            ("/d/bag/1.png".into(), 0, 0, 0.9),
            ("/d/bag/2.png".into(), 0, 1, 0.75),
        ];
        assert_eq!(
            cell_images(&e, 0, 0),
            vec![(PathBuf::from("/d/bag/1.png"), 0.9)]
        );
    }
}
