//! The training options form: mode (with a line on what it does), epochs, batch size, ...;
//! fields that do not apply to the chosen mode are disabled.

use super::mode_help;
use crate::gui::settings::TrainForm;
use crate::gui::widgets;
use crate::train::Mode;

/// The training options; fields that do not apply to the chosen mode are disabled.
pub fn form_ui(ui: &mut egui::Ui, f: &mut TrainForm) {
    ui.horizontal_wrapped(|ui| {
        let l = ui.label("mode");
        egui::ComboBox::from_id_salt("mode")
            .selected_text(f.mode.name())
            .show_ui(ui, |ui| {
                for m in Mode::ALL {
                    ui.selectable_value(&mut f.mode, m, m.name())
                        .on_hover_text(mode_help(m));
                }
            })
            .response
            .labelled_by(l.id)
            .on_hover_text(mode_help(f.mode));
        ui.label(egui::RichText::new(mode_help(f.mode)).weak());
    });
    let finetune = f.mode == Mode::Finetune;
    let augments = f.mode != Mode::Extract;
    egui::Grid::new("train-form").num_columns(4).show(ui, |ui| {
        widgets::labelled(ui, "epochs", |ui| {
            ui.add(egui::DragValue::new(&mut f.epochs).range(1..=500))
        });
        widgets::labelled(ui, "batch size", |ui| {
            ui.add(egui::DragValue::new(&mut f.batch_size).range(1..=256))
        });
        ui.end_row();
        widgets::labelled(ui, "learning rate", |ui| {
            ui.add(
                egui::DragValue::new(&mut f.lr)
                    .range(1e-7..=1.0)
                    .speed(1e-4),
            )
        });
        widgets::labelled(ui, "seed", |ui| ui.add(egui::DragValue::new(&mut f.seed)));
        ui.end_row();
        let why = "only for the finetune mode";
        widgets::labelled(ui, "unfreeze (stages)", |ui| {
            ui.add_enabled(
                finetune,
                egui::DragValue::new(&mut f.unfreeze).range(1..=10),
            )
            .on_disabled_hover_text(why)
        });
        widgets::labelled(ui, "fine-tune epochs", |ui| {
            ui.add_enabled(
                finetune,
                egui::DragValue::new(&mut f.finetune_epochs).range(1..=100),
            )
            .on_disabled_hover_text(why)
        });
        ui.end_row();
        widgets::labelled(ui, "BatchNorm", |ui| {
            ui.add_enabled(
                finetune,
                egui::Checkbox::new(&mut f.train_batchnorm, "train statistics when fine-tuning"),
            )
            .on_hover_text(
                "Off (the usual recipe): the unfrozen stages keep the pretrained statistics. \
                 On: batch statistics, running statistics updated, scale and shift trained.",
            )
            .on_disabled_hover_text(why)
        });
        widgets::labelled(ui, "save to", |ui| {
            ui.add(
                egui::TextEdit::singleline(&mut f.out_dir)
                    .hint_text("empty: a new run of the workspace"),
            )
            .on_hover_text(
                "An empty or new folder to save the trained model in. Left empty, the run \
                 gets its own folder in the workspace (listed under Runs).",
            )
        });
        ui.end_row();
    });
    ui.add_enabled_ui(augments, |ui| {
        ui.horizontal_wrapped(|ui| {
            ui.label("augment:")
                .on_disabled_hover_text("extract runs each image once: no augmentation");
            let a = &mut f.augment;
            ui.checkbox(&mut a.flip, "flip");
            for (v, name, d) in [
                (&mut a.rotation, "rotate", 0.1),
                (&mut a.zoom, "zoom", 0.2),
                (&mut a.translation, "translate", 0.1),
                (&mut a.contrast, "contrast", 0.2),
            ] {
                let mut on = v.is_some();
                if ui.checkbox(&mut on, name).changed() {
                    *v = on.then_some(d);
                }
            }
        });
    });
}
