//! The panels around the tabs: the sources on the left (model, data, image, device) and the
//! status bar at the bottom (the running job's progress, Cancel, the newest message).

use std::path::PathBuf;

use super::app::ConvlensApp;
use super::context::{Command, Commands};
use super::pick::{self, PickKind};
use super::widgets;
use crate::device::DeviceChoice;
use crate::jobs::{JobKind, Request};

/// A single-line text field with a label (a typed path is used on Enter or with the button
/// beside it); returns whether Enter was pressed in it.
fn path_field(ui: &mut egui::Ui, label: egui::Id, text: &mut String) -> bool {
    let r = ui
        .add(egui::TextEdit::singleline(text).desired_width(150.0))
        .labelled_by(label);
    r.lost_focus() && ui.input(|i| i.key_pressed(egui::Key::Enter))
}

impl ConvlensApp {
    /// The status bar.
    pub(super) fn status_bar(&mut self, ui: &mut egui::Ui) -> Commands {
        let mut out = Commands::default();
        ui.horizontal(|ui| {
            match self.board.current() {
                Some((_, kind, line)) => {
                    ui.spinner();
                    ui.add(
                        egui::ProgressBar::new(line.fraction.unwrap_or(0.0))
                            .desired_width(360.0)
                            .text(line.text),
                    );
                    let queued = self.board.queued();
                    if queued > 0 {
                        ui.label(format!("+{queued} queued"));
                    }
                    if ui.button("Cancel").clicked() {
                        out.push(Command::Cancel(kind));
                    }
                }
                None => {
                    ui.label("ready");
                }
            }
            ui.separator();
            self.log.status_ui(ui);
        });
        out
    }

    /// The left panel: where the model, the data and the image come from, and the device.
    pub(super) fn left_panel(&mut self, ui: &mut egui::Ui) -> Commands {
        let mut out = Commands::default();
        let title = widgets::section(ui, "Model");
        let mut reload = false;
        ui.horizontal(|ui| {
            reload |= path_field(ui, title.id, &mut self.settings.model);
            if let Some(p) = pick::one(ui, "model", "Open…", PickKind::File) {
                self.settings.model = p;
                reload = true;
            }
        });
        pick::notice(ui, "model");
        let available = crate::zoo::available_models(&crate::zoo::models_dir());
        ui.horizontal_wrapped(|ui| {
            for name in available {
                if ui.small_button(&name).clicked() {
                    self.settings.model = name;
                    reload = true;
                }
            }
            reload |= ui.button("Load").clicked();
        });
        if reload {
            out.push(Command::LoadModel(None));
        }
        let loading = self.board.running(JobKind::Model);
        ui.horizontal_wrapped(|ui| {
            if loading {
                ui.spinner();
            }
            match (&self.shared.model, loading) {
                (Some(m), _) => ui.label(&m.title),
                (None, true) => ui.label("(loading…)"),
                (None, false) => ui.label("(no model loaded)"),
            };
        });

        let title = widgets::section(ui, "Data");
        let mut rescan = false;
        ui.horizontal(|ui| {
            rescan |= path_field(ui, title.id, &mut self.settings.data_dir);
            if let Some(p) = pick::one(ui, "data", "Folder…", PickKind::Folder) {
                self.settings.data_dir = p;
                rescan = true;
            }
        });
        pick::notice(ui, "data");
        rescan |= ui.button("Scan").clicked();
        if rescan {
            out.push(Command::ScanData(None));
        }
        match &self.shared.data {
            Some(d) => ui.label(format!(
                "{} classes, {} / {} / {} images",
                d.classes.len(),
                d.splits.train.len(),
                d.splits.validation.len(),
                d.splits.test.len()
            )),
            None if self.board.running(JobKind::Data) => ui.label("(scanning…)"),
            None => ui.label("(no dataset)"),
        };

        let title = widgets::section(ui, "Image");
        let mut reimage = false;
        ui.horizontal(|ui| {
            reimage |= path_field(ui, title.id, &mut self.settings.image);
            if let Some(p) = pick::one(ui, "image", "Open…", PickKind::File) {
                self.settings.image = p;
                reimage = true;
            }
        });
        pick::notice(ui, "image");
        let samples = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("assets/images");
        ui.horizontal_wrapped(|ui| {
            reimage |= ui
                .button("Show")
                .on_hover_text("look at the image whose path is typed above")
                .clicked();
            for name in ["chelsea.png", "coffee.png", "astronaut.png", "rocket.jpg"] {
                if ui.small_button(name).clicked() {
                    self.settings.image = samples.join(name).to_string_lossy().into_owned();
                    reimage = true;
                }
            }
        });
        if reimage {
            out.push(Command::SetImage(PathBuf::from(self.settings.image.trim())));
        }
        ui.label(egui::RichText::new("or drop an image on the window").weak());
        self.device_ui(ui, &mut out);
        out
    }

    /// The device combo: changing it moves the worker's engine and reloads the model.
    fn device_ui(&mut self, ui: &mut egui::Ui, out: &mut Commands) {
        let title = widgets::section(ui, "Device");
        let before = self.settings.device;
        let name = |d: DeviceChoice| match d {
            DeviceChoice::Auto => "auto (best available)".to_string(),
            DeviceChoice::Cpu => "CPU".to_string(),
            DeviceChoice::Cuda(n) => format!("CUDA {n}"),
            DeviceChoice::Metal(n) => format!("Metal {n}"),
        };
        egui::ComboBox::from_id_salt("device")
            .selected_text(name(self.settings.device))
            .show_ui(ui, |ui| {
                let mut choices = vec![DeviceChoice::Cpu, DeviceChoice::Auto];
                if cfg!(feature = "cuda") {
                    choices.push(DeviceChoice::Cuda(0));
                }
                if cfg!(feature = "metal") {
                    choices.push(DeviceChoice::Metal(0));
                }
                for c in choices {
                    ui.selectable_value(&mut self.settings.device, c, name(c));
                }
            })
            .response
            .labelled_by(title.id);
        if self.settings.device != before {
            out.push(Command::Submit(Request::SetDevice(self.settings.device)));
        }
        ui.label(egui::RichText::new(format!("computing on {}", self.shared.device)).weak());
    }
}
