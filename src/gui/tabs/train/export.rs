//! "Export…" on a run: its model as ONNX or as a PyTorch state dict, written on the worker
//! (progress in the status bar), checked by reading it back, and the check's result shown
//! here.

use std::path::{Path, PathBuf};

use crate::gui::context::{AppContext, Command, Commands};
use crate::gui::pick::{self, PickKind};
use crate::gui::tabs::job_line::job_line;
use crate::gui::widgets;
use crate::interchange::onnx::OnnxOptions;
use crate::interchange::{ExportFormat, ExportReport, ExportRequest};
use crate::jobs::{JobKind, Request};
use crate::workspace::Workspace;

/// The export form of the run on screen and the last export's result.
#[derive(Debug, Default)]
pub struct ExportPanel {
    /// The model folder the form is open for; `None`: closed.
    run: Option<String>,
    format: ExportFormat,
    /// The file to write (for PyTorch a `.safetensors` file or a folder).
    path: String,
    onnx: OnnxOptions,
    overwrite: bool,
    /// The last export's report, or why it failed.
    result: Option<Result<ExportReport, String>>,
    /// The format and path the last export was asked for (its result is marked as earlier
    /// once the form asks for another).
    made_for: Option<(ExportFormat, String)>,
}

/// An export error with the command line's advice (`--out`, `--overwrite`) put in the form's
/// words.
pub fn in_form_words(error: &str) -> String {
    error.replace(
        "choose another --out or pass --overwrite",
        "choose another file, or tick \"replace an existing file\"",
    )
}

/// The last part of a model's path (a run's folder name).
fn stem(key: &str) -> String {
    std::path::Path::new(key)
        .file_name()
        .map_or_else(|| "model".into(), |n| n.to_string_lossy().into_owned())
}

/// The default destination for the export of the model folder `key`: beside it, or for a run
/// of the workspace in the data folder's `exports/` (not among the runs).
fn default_path(key: &str, workspace: Option<&Workspace>, format: ExportFormat) -> String {
    let model = Path::new(key);
    let dir = match (model.parent(), workspace) {
        (Some(parent), Some(w)) if parent == w.runs_dir() => {
            parent.parent().unwrap_or(parent).join("exports")
        }
        (Some(parent), _) => parent.to_path_buf(),
        (None, _) => PathBuf::from("."),
    };
    dir.join(format!("{}.{}", stem(key), format.extension()))
        .to_string_lossy()
        .into_owned()
}

impl ExportPanel {
    /// The "Export…" button of the model at `key` (a run's folder; `None`: the run on screen
    /// has no usable model, the button is disabled): opens (or closes) the form for it.
    pub fn button(&mut self, ui: &mut egui::Ui, ctx: &AppContext, key: Option<&str>) {
        let open = key.is_some() && self.run.as_deref() == key;
        let clicked = ui
            .add_enabled(key.is_some(), egui::Button::new("Export…").selected(open))
            .on_hover_text("write this run's model as ONNX or as a PyTorch state dict")
            .on_disabled_hover_text("this run has no usable model")
            .clicked();
        if let (true, Some(key)) = (clicked, key) {
            if open {
                self.run = None;
            } else {
                self.run = Some(key.to_string());
                self.path = default_path(key, ctx.workspace, self.format);
                self.result = None;
            }
        }
    }

    /// The form, when open for the model at `key` (closed when another run is on screen).
    pub fn ui(
        &mut self,
        ui: &mut egui::Ui,
        ctx: &AppContext,
        key: Option<&str>,
        out: &mut Commands,
    ) {
        let Some(model) = self.run.clone() else {
            return;
        };
        if key != Some(model.as_str()) {
            self.run = None;
            return;
        }
        let busy = ctx.running(JobKind::Export);
        egui::Frame::group(ui.style()).show(ui, |ui| {
            ui.horizontal_wrapped(|ui| {
                ui.label("Format");
                for format in ExportFormat::ALL {
                    let label = match format {
                        ExportFormat::Onnx => "ONNX (.onnx)",
                        ExportFormat::Pytorch => "PyTorch state dict (.safetensors + script)",
                    };
                    if ui.radio(self.format == format, label).clicked() && self.format != format {
                        if self.path == default_path(&model, ctx.workspace, self.format) {
                            self.path = default_path(&model, ctx.workspace, format);
                        }
                        self.format = format;
                    }
                }
            });
            ui.horizontal(|ui| {
                let label = ui.label("Write to");
                // Choose… at the right end, the path as wide as the rest of the line (a run's
                // name is long), on one line at any width.
                let right = egui::Layout::right_to_left(egui::Align::Center);
                ui.with_layout(right, |ui| {
                    if let Some(p) = pick::one(ui, "export-model", "Choose…", PickKind::Save) {
                        self.path = p;
                    }
                    let edit = egui::TextEdit::singleline(&mut self.path)
                        .desired_width(ui.available_width());
                    ui.add(edit).labelled_by(label.id);
                });
            });
            pick::notice(ui, "export-model");
            if self.format == ExportFormat::Onnx {
                ui.horizontal_wrapped(|ui| {
                    ui.checkbox(&mut self.onnx.include_preprocess, "normalise in the graph")
                        .on_hover_text("the input is RGB in [0, 1], resized as the metadata says");
                    ui.checkbox(&mut self.onnx.softmax, "softmax output");
                });
            }
            ui.horizontal_wrapped(|ui| {
                ui.checkbox(&mut self.overwrite, "replace an existing file");
                let ready = !busy && !self.path.trim().is_empty();
                let export = ui
                    .add_enabled(ready, egui::Button::new("Export"))
                    .on_disabled_hover_text(if busy {
                        "an export is in progress"
                    } else {
                        "choose where to write it"
                    });
                if export.clicked() {
                    self.result = None;
                    self.made_for = Some((self.format, self.path.trim().to_string()));
                    out.push(Command::Submit(Request::ExportModel {
                        model: model.clone(),
                        request: ExportRequest {
                            format: self.format,
                            out: self.path.trim().into(),
                            overwrite: self.overwrite,
                            onnx: self.onnx.clone(),
                        },
                    }));
                }
                job_line(ui, ctx, JobKind::Export, "Cancel export", out);
            });
            self.result_ui(ui);
        });
    }

    /// The last export's result; dimmed under a line saying so once the form asks for another
    /// format or file than it was made for.
    fn result_ui(&self, ui: &mut egui::Ui) {
        let Some(result) = &self.result else {
            return;
        };
        let current = (self.format, self.path.trim().to_string());
        let earlier = self.made_for.as_ref().filter(|made| **made != current);
        ui.scope(|ui| {
            if let Some((format, path)) = earlier {
                ui.label(
                    egui::RichText::new(format!(
                        "Earlier export ({} to {path}), not of the choices above: press Export \
                         for those.",
                        match format {
                            ExportFormat::Onnx => "ONNX",
                            ExportFormat::Pytorch => "PyTorch",
                        }
                    ))
                    .color(ui.visuals().warn_fg_color),
                );
                ui.multiply_opacity(crate::gui::tabs::STALE_OPACITY);
            }
            match result {
                Ok(report) => {
                    for file in &report.files {
                        ui.label(format!("Wrote {}", file.display()));
                    }
                    ui.label(format!("Checked: {}", report.verification.summary()));
                }
                Err(e) => widgets::error_line(ui, e),
            }
        });
    }

    /// An export finished: its report, or why it failed (nothing was written then).
    pub fn finished(&mut self, result: Result<ExportReport, String>) {
        self.result = Some(result.map_err(|e| in_form_words(&e)));
    }
}

#[cfg(test)]
mod tests {
    use super::in_form_words;

    #[test]
    fn an_existing_file_is_explained_with_the_forms_checkbox() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("m.onnx");
        std::fs::write(&out, b"mine").unwrap();
        let e = crate::interchange::check_destination(&out, false, &[])
            .unwrap_err()
            .to_string();
        let words = in_form_words(&e);
        assert!(
            words.contains("m.onnx")
                && words.contains("tick \"replace an existing file\"")
                && !words.contains("--"),
            "{words}"
        );
    }
}
