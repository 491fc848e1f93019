//! The evidence under each heatmap: its faithfulness numbers beside the random-map baseline,
//! the model-randomisation sanity check (Spearman and SSIM by randomised stage, a flag when the
//! map does not change), and the "compare methods" view ranking every method on the current
//! image. All computed on demand on the worker, with progress and Cancel.

use egui_plot::{Legend, Line, Plot, PlotPoints};

use super::HeatmapTab;
use crate::gui::context::{AppContext, Command, Commands};
use crate::gui::tabs::job_line::job_line;
use crate::jobs::evidence::{EvidenceKey, FaithView, SanityView};
use crate::jobs::views::CamView;
use crate::jobs::{JobKind, Request};
use crate::viz::cam::{CamMethod, CamOptions};
use crate::viz::faithfulness::{FaithOptions, Metric, Scores, mean_ranks};
use crate::viz::sanity::FLAG_SPEARMAN;

/// Where the evidence job in flight was asked for: its progress and Cancel show there.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Asked {
    /// A row's Faithfulness or Sanity check button.
    Row(usize),
    /// The "Compare methods" button.
    Compare,
}

/// While an evidence job runs: its progress and Cancel.
fn progress_line(ui: &mut egui::Ui, ctx: &AppContext, out: &mut Commands) {
    job_line(ui, ctx, JobKind::Evidence, "Cancel", out);
}

/// A row's evidence, kept while it matches the row's map.
#[derive(Default)]
pub(super) struct RowEvidence {
    pub faith: Option<FaithView>,
    pub sanity: Option<SanityView>,
}

/// The options of the map `view` shows, its class resolved: what its evidence is made with.
fn map_options(view: &CamView) -> CamOptions {
    CamOptions {
        class: Some(view.class),
        ..view.options.clone()
    }
}

/// Whether evidence about `key` is about the map `view` shows: the same model, image and
/// options (method, layer, class, score, smoothing, parameters).
fn matches(key: &EvidenceKey, view: &CamView) -> bool {
    key.model == view.model && key.image == view.image && key.map == map_options(view)
}

/// Whether the "compare methods" view about `key` is about `view`'s image, class, layer and
/// parameters (whichever method the row shows).
fn compares(key: &EvidenceKey, view: &CamView) -> bool {
    let mut map = key.map.clone();
    map.method = view.options.method;
    key.model == view.model && key.image == view.image && map == map_options(view)
}

/// The request for `methods`' faithfulness, with the parameters of the map `view` shows.
fn faith_request(view: &CamView, methods: Vec<CamMethod>, row: usize, compare: bool) -> Command {
    Command::Submit(Request::Faithfulness {
        model: view.model.clone(),
        image: view.image.clone(),
        map: map_options(view),
        methods,
        options: FaithOptions::default(),
        row,
        compare,
    })
}

/// `-0.1234` with the baseline beside it, coloured by whether the map beats it.
fn value_cells(ui: &mut egui::Ui, m: Metric, value: f32, random: f32) {
    let beats = if m.higher_is_better() {
        value > random
    } else {
        value < random
    };
    let text = egui::RichText::new(format!("{value:.4}"));
    ui.label(if beats {
        text.color(ui.visuals().hyperlink_color)
    } else {
        text
    });
    ui.label(egui::RichText::new(format!("{random:.4}")).weak());
}

/// The metrics of one map beside the baseline, one line per metric.
fn metrics_grid(ui: &mut egui::Ui, id: &str, scores: &Scores, random: &Scores) {
    egui::Grid::new(id).striped(true).show(ui, |ui| {
        ui.strong("metric");
        ui.strong("this map");
        ui.strong("random map");
        ui.end_row();
        for m in Metric::ALL {
            let better = if m.higher_is_better() {
                "higher"
            } else {
                "lower"
            };
            ui.label(m.title())
                .on_hover_text(format!("{} ({better} is better)", m.name()));
            value_cells(ui, m, scores.metric(m), random.metric(m));
            ui.end_row();
        }
    });
}

impl HeatmapTab {
    /// A faithfulness result arrived.
    pub fn set_faithfulness(&mut self, view: FaithView) {
        if view.compare {
            self.compare = Some(view);
        } else {
            let row = view.row;
            self.row_mut(row).evidence.faith = Some(view);
        }
    }

    /// A sanity-check result arrived.
    pub fn set_sanity(&mut self, view: SanityView) {
        let row = view.row;
        self.row_mut(row).evidence.sanity = Some(view);
    }

    /// The numbers under row `row`'s map, the buttons that compute them, the sanity check.
    pub(super) fn evidence_ui(
        &mut self,
        ui: &mut egui::Ui,
        ctx: &AppContext,
        row: usize,
        out: &mut Commands,
    ) {
        let Some(r) = self.rows.get(row) else { return };
        let Some(view) = &r.view else { return };
        let mut asked = None;
        let busy = ctx.running(JobKind::Evidence);
        let method = view.options.method;
        let faith = r.evidence.faith.as_ref().filter(|f| matches(&f.key, view));
        let sanity = r.evidence.sanity.as_ref().filter(|s| matches(&s.key, view));
        ui.horizontal_wrapped(|ui| {
            if faith.is_none()
                && ui
                    .add_enabled(!busy, egui::Button::new("Faithfulness"))
                    .on_hover_text(
                        "ROAD, confidence change and deletion/insertion of this map, each beside \
                         a random map (about 150 forward passes)",
                    )
                    .clicked()
            {
                out.push(faith_request(view, vec![method], row, false));
                asked = Some(Asked::Row(row));
            }
            if sanity.is_none()
                && ui
                    .add_enabled(!busy, egui::Button::new("Sanity check"))
                    .on_hover_text(
                        "re-randomise the model's weights stage by stage from the top and see \
                         whether the map changes (Adebayo et al. 2018)",
                    )
                    .clicked()
            {
                out.push(Command::Submit(Request::Sanity {
                    model: view.model.clone(),
                    image: view.image.clone(),
                    map: map_options(view),
                    seed: 0,
                    row,
                }));
                asked = Some(Asked::Row(row));
            }
            if busy && self.asked == Some(Asked::Row(row)) {
                progress_line(ui, ctx, out);
            }
        });
        if asked.is_some() {
            self.asked = asked;
        }
        if let Some(f) = faith
            && let Some((_, scores)) = f.methods.first()
        {
            ui.label(format!("faithfulness of {method} (score {:.4}):", f.score));
            metrics_grid(ui, &format!("faith-{row}"), scores, &f.random);
        }
        if let Some(s) = sanity {
            sanity_ui(ui, row, s);
        }
    }

    /// The "compare methods" view: every method's metrics on the first row's map, ranked.
    pub(super) fn compare_ui(&mut self, ui: &mut egui::Ui, ctx: &AppContext, out: &mut Commands) {
        let Some(view) = self.rows.first().and_then(|r| r.view.as_ref()) else {
            return;
        };
        let busy = ctx.running(JobKind::Evidence);
        let current = self.compare.as_ref().filter(|c| compares(&c.key, view));
        let mut asked = None;
        ui.horizontal_wrapped(|ui| {
            if ui
                .add_enabled(!busy, egui::Button::new("Compare methods"))
                .on_hover_text("every method's faithfulness on this image and class, ranked")
                .clicked()
            {
                out.push(faith_request(view, CamMethod::ALL.to_vec(), 0, true));
                asked = Some(Asked::Compare);
            }
            // A row's job shows its progress under the row (unless that row is gone).
            let row_shown = |r: usize| self.rows.get(r).is_some_and(|r| r.view.is_some());
            let here = match self.asked {
                Some(Asked::Row(r)) => !row_shown(r),
                _ => true,
            };
            if busy && here {
                progress_line(ui, ctx, out);
            }
        });
        if asked.is_some() {
            self.asked = asked;
        }
        let Some(c) = current else { return };
        let scores: Vec<&Scores> = c.methods.iter().map(|(_, s)| s).collect();
        let ranks = mean_ranks(&scores);
        let mut order: Vec<usize> = (0..c.methods.len()).collect();
        order.sort_by(|&a, &b| ranks[a].total_cmp(&ranks[b]));
        ui.label(format!(
            "methods ranked by their mean rank over the {} metrics (1 = best), class {}:",
            Metric::ALL.len(),
            view.class_name
        ));
        egui::ScrollArea::horizontal()
            .id_salt("compare-methods")
            .show(ui, |ui| {
                egui::Grid::new("compare-methods-grid")
                    .striped(true)
                    .show(ui, |ui| {
                        ui.strong("#");
                        ui.strong("method");
                        ui.strong("mean rank");
                        for m in Metric::ALL {
                            ui.strong(m.title());
                        }
                        ui.end_row();
                        for (place, &i) in order.iter().enumerate() {
                            ui.label(format!("{}", place + 1));
                            ui.label(c.methods[i].0.name());
                            ui.label(format!("{:.2}", ranks[i]));
                            for m in Metric::ALL {
                                ui.label(format!("{:.4}", c.methods[i].1.metric(m)));
                            }
                            ui.end_row();
                        }
                        ui.label("");
                        ui.label(egui::RichText::new("random map").weak());
                        ui.label("");
                        for m in Metric::ALL {
                            ui.label(
                                egui::RichText::new(format!("{:.4}", c.random.metric(m))).weak(),
                            );
                        }
                        ui.end_row();
                    });
            });
    }
}

/// The sanity check's verdict and its Spearman / SSIM by randomised stage.
fn sanity_ui(ui: &mut egui::Ui, row: usize, s: &SanityView) {
    let result = &s.sanity;
    if result.flagged {
        ui.colored_label(
            ui.visuals().error_fg_color,
            format!(
                "FLAGGED: {}'s map does not follow the model (Spearman to the original stays \
                 >= {FLAG_SPEARMAN} while the top half of the stages is randomised)",
                s.method
            ),
        );
    } else {
        ui.label(format!(
            "sanity check passed: {}'s map changes as the weights are randomised",
            s.method
        ));
    }
    let names: Vec<String> = std::iter::once("original".to_string())
        .chain(result.steps.iter().map(|st| st.stage.clone()))
        .collect();
    let series = |f: fn(&crate::viz::sanity::SanityStep) -> f32| -> Vec<[f64; 2]> {
        std::iter::once([0.0, 1.0])
            .chain(
                result
                    .steps
                    .iter()
                    .enumerate()
                    .filter(|(_, st)| f(st).is_finite())
                    .map(|(i, st)| [(i + 1) as f64, f64::from(f(st))]),
            )
            .collect()
    };
    let spearman = series(|st| st.spearman);
    let ssim = series(|st| st.ssim);
    Plot::new(("sanity", row))
        .height(180.0)
        .allow_scroll(false)
        .include_y(0.0)
        .include_y(1.0)
        .legend(Legend::default())
        .x_axis_label("stages randomised (from the output down)")
        .x_axis_formatter(move |mark, _| {
            names
                .get(mark.value.round().max(0.0) as usize)
                .cloned()
                .unwrap_or_default()
        })
        .show(ui, |plot| {
            plot.line(Line::new("Spearman", PlotPoints::from(spearman)));
            plot.line(Line::new("SSIM", PlotPoints::from(ssim)));
        });
}
