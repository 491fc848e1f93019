//! The Start view: the three steps of the app (data, train, look inside), each with where it
//! stands and the one button that takes it further.

use super::data::bundled_dataset;
use super::train::{mode_help, start_command};
use crate::gui::context::{AppContext, Command, Commands};
use crate::gui::settings::{Tab, TrainForm};
use crate::jobs::JobKind;

/// Draws the Start view.
pub fn ui(ui: &mut egui::Ui, ctx: &AppContext, form: &TrainForm) -> Commands {
    let mut out = Commands::default();
    egui::ScrollArea::vertical()
        .id_salt("start")
        .show(ui, |ui| {
            ui.heading("Teach a pretrained convnet new classes, then look inside it");
            match ctx.model {
                Some(m) => ui.label(format!("Model: {}", m.title)),
                None if ctx.running(JobKind::Model) => ui.label("Loading the model…"),
                None => ui.label("No model loaded: pick one in the left panel."),
            };
            ui.add_space(8.0);
            step(ui, "1. Data", |ui| data_step(ui, ctx, &mut out));
            step(ui, "2. Train", |ui| train_step(ui, ctx, form, &mut out));
            step(ui, "3. Look inside", |ui| look_step(ui, &mut out));
        });
    out
}

/// A framed step with a title.
fn step(ui: &mut egui::Ui, title: &str, body: impl FnOnce(&mut egui::Ui)) {
    egui::Frame::group(ui.style()).show(ui, |ui| {
        ui.set_width(ui.available_width());
        ui.label(egui::RichText::new(title).strong().size(17.0));
        body(ui);
    });
    ui.add_space(6.0);
}

fn data_step(ui: &mut egui::Ui, ctx: &AppContext, out: &mut Commands) {
    match ctx.data {
        Some(d) => {
            ui.label(format!(
                "Ready: {}: {} classes, {} training / {} validation / {} test images.",
                d.root.display(),
                d.classes.len(),
                d.splits.train.len(),
                d.splits.validation.len(),
                d.splits.test.len()
            ));
            ui.horizontal_wrapped(|ui| {
                if ui.button("Look at the data").clicked() {
                    out.push(Command::OpenTab(Tab::Data));
                }
                ui.label(
                    egui::RichText::new(
                        "or choose your own folder (one subfolder per class) in the left panel",
                    )
                    .weak(),
                );
            });
        }
        None if ctx.running(JobKind::Data) => {
            ui.label("Scanning the folder…");
        }
        None => {
            ui.label("A folder of images with one subfolder per class.");
            if ui
                .button("Use the bundled dataset (fashion-mini)")
                .clicked()
            {
                out.push(Command::ScanData(Some(bundled_dataset())));
            }
        }
    }
}

fn train_step(ui: &mut egui::Ui, ctx: &AppContext, form: &TrainForm, out: &mut Commands) {
    ui.label(format!(
        "Train a classifier for these classes. Mode {}: {}",
        form.mode.name(),
        mode_help(form.mode)
    ));
    let running = ctx.running(JobKind::Train);
    ui.horizontal_wrapped(|ui| {
        let ready = ctx.model.is_some() && ctx.data.is_some() && !running;
        if ui
            .add_enabled(
                ready,
                egui::Button::new(format!("Train now ({}, {} epochs)", form.mode, form.epochs)),
            )
            .clicked()
            && let Some(c) = start_command(ctx, form)
        {
            out.push(c);
            out.push(Command::OpenTab(Tab::Train));
        }
        if ui.button("Training options").clicked() {
            out.push(Command::OpenTab(Tab::Train));
        }
        if running {
            ui.spinner();
            ui.label("training…");
        } else if let Some(dir) = ctx.trained_model {
            ui.label(format!("Done: the trained model is in {dir}"));
        }
    });
}

fn look_step(ui: &mut egui::Ui, out: &mut Commands) {
    for (tab, what) in [
        (
            Tab::Activations,
            "what every channel of a layer sees in an image",
        ),
        (Tab::Filters, "the pattern each filter responds to most"),
        (Tab::Heatmap, "which parts of the image decided the class"),
        (Tab::Predict, "the top classes of your own images"),
        (
            Tab::Map,
            "the whole dataset in 2-D, and the labels that look wrong",
        ),
    ] {
        ui.horizontal(|ui| {
            if ui.button(format!("Open {}", tab.title())).clicked() {
                out.push(Command::OpenTab(tab));
            }
            ui.label(what);
        });
    }
}
