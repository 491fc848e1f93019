//! The line a panel shows while its own job is queued or runs, so that the progress is where
//! the button was clicked (not only in the status bar): a spinner, how far the job is (done of
//! total and the time left, as the status bar says it) or which job it waits for, and Cancel.

use crate::gui::context::{AppContext, Command, Commands};
use crate::jobs::JobKind;

/// Width of the progress bar, points (room for "stage: 86 of 170, about 1 min 6 s left").
const BAR_WIDTH: f32 = 380.0;

/// Draws the line for the job of `kind` (nothing when none is in flight); a click on the
/// button labelled `cancel` pushes its cancellation to `out`.
pub fn job_line(
    ui: &mut egui::Ui,
    ctx: &AppContext,
    kind: JobKind,
    cancel: &str,
    out: &mut Commands,
) {
    if !ctx.running(kind) {
        return;
    }
    ui.spinner();
    match ctx.jobs.current() {
        Some((_, k, line)) if k == kind => {
            match line.fraction {
                Some(f) => ui.add(
                    egui::ProgressBar::new(f)
                        .desired_width(BAR_WIDTH)
                        .text(line.text),
                ),
                None => ui.label(line.text),
            };
        }
        Some((_, other, _)) => {
            ui.label(format!("waiting for: {}", other.name()));
        }
        None => {}
    }
    if ui.button(cancel).clicked() {
        out.push(Command::Cancel(kind));
    }
}
