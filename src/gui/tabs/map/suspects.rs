//! The suspect-labels list of the Map tab: the images least confident in their label (out of
//! fold), each with its thumbnail, given and suggested label, p(given) and confident learning's
//! flag; a click opens it in Heatmap.

use super::{MapTab, explain, stale_line, stale_reason};
use crate::gui::context::{AppContext, Command, Commands};
use crate::gui::tabs::STALE_OPACITY;
use crate::gui::tabs::job_line::job_line;
use crate::gui::widgets;
use crate::jobs::JobKind;

/// Rows listed.
const SHOWN: usize = 30;

/// Draws the section.
pub fn ui(ui: &mut egui::Ui, ctx: &AppContext, tab: &mut MapTab, out: &mut Commands) {
    widgets::section(ui, "Suspect labels");
    ui.label(
        "Each image scored by a head trained on the other folds' cached features: the lower \
         p(given), the likelier the label is wrong or the image ambiguous. Flagged: confident \
         learning puts it in another class.",
    );
    let busy = ctx.running(JobKind::Suspects);
    ui.horizontal_wrapped(|ui| {
        widgets::labelled(ui, "folds", |ui| {
            ui.add(egui::DragValue::new(&mut tab.folds).range(2..=20))
        });
        if ui
            .add_enabled(!busy, egui::Button::new("Find suspect labels"))
            .clicked()
        {
            out.0.extend(tab.suspects_command(ctx));
        }
        job_line(ui, ctx, JobKind::Suspects, "Cancel suspects", out);
    });
    let Some(view) = &tab.suspects else {
        return;
    };
    let current = tab.model_key(ctx);
    let stale = stale_reason(ctx, current.as_deref(), &view.key, &view.dataset);
    if let Some(why) = &stale {
        stale_line(ui, &format!("These suspects are out of date: {why}."));
        ui.multiply_opacity(STALE_OPACITY);
    }
    let report = &view.report;
    let flagged = report.suspects.iter().filter(|s| s.flagged).count();
    ui.label(format!(
        "{} images ranked through {}; {flagged} flagged. The {} least confident:",
        report.suspects.len(),
        view.model,
        SHOWN.min(report.suspects.len())
    ));
    // A click explains an image with the model that ranked it.
    let model = Some(view.key.clone()).filter(|_| view.same_classes);
    let mut wanted = Vec::new();
    egui::Grid::new("suspects")
        .striped(true)
        .num_columns(5)
        .show(ui, |ui| {
            for h in ["", "rank", "p(given)", "given -> suggested", "image"] {
                ui.strong(h);
            }
            ui.end_row();
            for s in report.suspects.iter().take(SHOWN) {
                let path = view.dataset.join(&s.path);
                let name = |c: usize| report.classes.get(c).map_or("?", String::as_str);
                let clicked = match ctx.thumbs.get(&path) {
                    Some(tex) => widgets::named_image(
                        ui,
                        tex,
                        egui::vec2(48.0, 48.0),
                        &s.path.to_string_lossy(),
                    )
                    .on_hover_text("open in Heatmap")
                    .clicked(),
                    None => {
                        ui.add_sized([48.0, 48.0], egui::Spinner::new());
                        wanted.push(path.clone());
                        false
                    }
                };
                ui.label(s.rank.to_string());
                ui.label(format!("{:.3}", s.p_given));
                ui.label(format!(
                    "{} -> {}{}",
                    name(s.given),
                    name(s.suggested),
                    if s.flagged { " (flagged)" } else { "" }
                ));
                let link = ui.link(s.path.to_string_lossy()).clicked();
                ui.end_row();
                if clicked || link {
                    out.0.extend(explain(
                        ctx,
                        &model,
                        &report.classes,
                        &path,
                        s.given,
                        Some(name(s.suggested)).filter(|_| model.is_some()),
                    ));
                }
            }
        });
    if !wanted.is_empty() {
        out.push(Command::Thumbnails(wanted));
    }
}
