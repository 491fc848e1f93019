//! Loss and accuracy per epoch of one run, with the kept epoch and the phase changes marked,
//! hover values, and optionally a second run's validation curves overlaid. Each plot's legend
//! sits below it, so it never covers a curve.

use egui::Color32;
use egui_plot::{HoverPosition, Line, LineStyle, Plot, PlotPoints, PlotUi, VLine};

use crate::gui::widgets::{LegendEntry as Entry, legend};
use crate::train::EpochMetrics;
use crate::workspace::History;

/// A second run's curves drawn over the first, labelled with its name.
#[derive(Clone, Debug)]
pub struct Compared {
    /// The run's folder name.
    pub name: String,
    /// What the legend calls it.
    pub title: String,
    pub history: History,
}

/// The colours of the train and validation curves, the overlaid run, the kept epoch and the
/// phase changes.
const TRAIN: Color32 = Color32::from_rgb(80, 140, 230);
const VALIDATION: Color32 = Color32::from_rgb(235, 125, 40);
const COMPARED: Color32 = Color32::from_rgb(170, 100, 210);
const KEPT: Color32 = Color32::GOLD;
const PHASE: Color32 = Color32::GRAY;

/// The height of a plot; its legend adds a line or two below.
const PLOT_HEIGHT: f32 = 160.0;

/// The legend name of the kept-epoch marker (epochs counted from 1 over all phases).
pub fn kept_label(kept: usize) -> String {
    format!("kept (epoch {})", kept + 1)
}

/// The legend name of the marker where phase `name` starts.
pub fn phase_label(name: &str) -> String {
    format!("start of {name}")
}

/// One line under the plots: the kept epoch and the phases, in words.
pub fn caption(history: &History) -> String {
    let kept = match history.kept_epoch().zip(history.kept) {
        Some((e, i)) => format!(
            "kept: epoch {} ({} epoch {}), validation loss {:.3}, accuracy {:.3}",
            i + 1,
            e.phase,
            e.epoch,
            e.val_loss,
            e.val_accuracy
        ),
        None if history.epochs.is_empty() => "no finished epoch".to_string(),
        None => "kept: the initial weights (no epoch lowered the validation loss)".to_string(),
    };
    let phases: Vec<String> = history
        .phases
        .iter()
        .map(|p| {
            if p.end - p.start == 1 {
                format!("{} {}", p.name, p.start + 1)
            } else {
                format!("{} {}–{}", p.name, p.start + 1, p.end)
            }
        })
        .collect();
    if phases.is_empty() {
        return kept;
    }
    format!("{kept}; epochs: {}", phases.join(", "))
}

/// One value per epoch at x = 1, 2, ... (over all phases).
fn series(epochs: &[EpochMetrics], value: impl Fn(&EpochMetrics) -> f32) -> PlotPoints<'static> {
    epochs
        .iter()
        .enumerate()
        .map(|(i, m)| [(i + 1) as f64, value(m) as f64])
        .collect::<Vec<_>>()
        .into()
}

/// The kept epoch and the phase changes as vertical lines.
fn markers(p: &mut PlotUi<'_>, history: &History) {
    for span in history.phases.iter().skip(1) {
        p.vline(
            VLine::new(phase_label(&span.name), span.start as f64 + 0.5)
                .color(PHASE)
                .style(LineStyle::dashed_dense()),
        );
    }
    if let Some(kept) = history.kept {
        p.vline(
            VLine::new(kept_label(kept), (kept + 1) as f64)
                .color(KEPT)
                .width(2.0),
        );
    }
}

/// The hover text at a point of a curve: its name, the epoch (and its phase) and the value.
fn hover_text(history: &History, pos: &HoverPosition<'_>) -> Option<String> {
    let HoverPosition::NearDataPoint {
        plot_name,
        position,
        ..
    } = pos
    else {
        return None;
    };
    let x = position.x.round();
    let phase = (x >= 1.0)
        .then(|| history.epochs.get(x as usize - 1))
        .flatten()
        .map(|e| format!(" ({} {})", e.phase, e.epoch))
        .unwrap_or_default();
    Some(format!("{plot_name}\nepoch {x}{phase}: {:.3}", position.y))
}

/// The legend of one plot: its two curves, the markers, the overlaid run's curve.
fn entries(history: &History, names: [&str; 2], compare: Option<&Compared>) -> Vec<Entry> {
    let entry = |name: String, color, dashed| Entry {
        name,
        color,
        dashed,
    };
    let mut out = vec![
        entry(names[0].to_string(), TRAIN, false),
        entry(names[1].to_string(), VALIDATION, false),
    ];
    for span in history.phases.iter().skip(1) {
        out.push(entry(phase_label(&span.name), PHASE, true));
    }
    if let Some(kept) = history.kept {
        out.push(entry(kept_label(kept), KEPT, false));
    }
    if let Some(c) = compare {
        out.push(entry(format!("{}: {}", c.title, names[1]), COMPARED, true));
    }
    out
}

/// The two plots side by side, each with its legend below (the page scrolls over them: the
/// plots take no wheel).
pub fn curves(ui: &mut egui::Ui, history: &History, compare: Option<&Compared>) {
    type Metric = fn(&EpochMetrics) -> f32;
    let plots: [(&str, [(&str, Metric); 2]); 2] = [
        (
            "loss",
            [
                ("train loss", |m| m.train_loss),
                ("validation loss", |m| m.val_loss),
            ],
        ),
        (
            "accuracy",
            [
                ("train accuracy", |m| m.train_accuracy),
                ("validation accuracy", |m| m.val_accuracy),
            ],
        ),
    ];
    ui.columns(2, |cols| {
        for ((id, lines), col) in plots.into_iter().zip(cols.iter_mut()) {
            Plot::new(id)
                .height(PLOT_HEIGHT)
                .allow_scroll(false)
                .x_axis_label("epoch")
                .y_axis_label(id)
                .label_formatter(|pos| hover_text(history, pos))
                .show(col, |p| {
                    for ((name, value), color) in lines.into_iter().zip([TRAIN, VALIDATION]) {
                        p.line(Line::new(name, series(&history.epochs, value)).color(color));
                    }
                    markers(p, history);
                    if let Some(c) = compare {
                        let (name, value) = lines[1];
                        p.line(
                            Line::new(
                                format!("{}: {name}", c.title),
                                series(&c.history.epochs, value),
                            )
                            .color(COMPARED)
                            .style(LineStyle::dashed_loose()),
                        );
                    }
                });
            legend(col, &entries(history, [lines[0].0, lines[1].0], compare));
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn epoch(phase: &str, epoch: usize, best: bool) -> EpochMetrics {
        EpochMetrics {
            phase: phase.into(),
            epoch,
            train_loss: 0.5,
            train_accuracy: 0.8,
            val_loss: 0.25,
            val_accuracy: 0.9,
            secs: 0.1,
            best,
        }
    }

    #[test]
    fn the_caption_names_the_kept_epoch_and_the_phases() {
        let h = History::new(vec![
            epoch("head", 1, true),
            epoch("head", 2, true),
            epoch("finetune", 1, false),
        ]);
        assert_eq!(
            caption(&h),
            "kept: epoch 2 (head epoch 2), validation loss 0.250, accuracy 0.900; \
             epochs: head 1–2, finetune 3"
        );
        let none = History::new(vec![epoch("scratch", 1, false)]);
        assert!(caption(&none).starts_with("kept: the initial weights"));
        assert_eq!(caption(&History::default()), "no finished epoch");
    }

    #[test]
    fn the_legend_lists_the_curves_the_markers_and_the_overlay() {
        let h = History::new(vec![epoch("head", 1, true), epoch("finetune", 1, false)]);
        let c = Compared {
            name: "b".into(),
            title: "baseline".into(),
            history: History::default(),
        };
        let names: Vec<String> = entries(&h, ["train loss", "validation loss"], Some(&c))
            .into_iter()
            .map(|e| e.name)
            .collect();
        assert_eq!(
            names,
            [
                "train loss",
                "validation loss",
                "start of finetune",
                "kept (epoch 1)",
                "baseline: validation loss"
            ]
        );
    }

    #[test]
    fn hover_names_the_epoch_and_its_phase() {
        let h = History::new(vec![epoch("head", 1, true), epoch("finetune", 1, false)]);
        let pos = HoverPosition::NearDataPoint {
            plot_name: "validation loss",
            position: egui_plot::PlotPoint::new(2.0, 0.25),
            index: 1,
        };
        assert_eq!(
            hover_text(&h, &pos).unwrap(),
            "validation loss\nepoch 2 (finetune 1): 0.250"
        );
        let elsewhere = HoverPosition::Elsewhere {
            position: egui_plot::PlotPoint::new(0.0, 0.0),
        };
        assert_eq!(hover_text(&h, &elsewhere), None);
    }
}
