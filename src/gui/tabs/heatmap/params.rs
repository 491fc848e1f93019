//! The method chooser (layer CAMs and pixel attributions) and the chosen method's parameters.

use super::HeatmapSettings;
use crate::gui::widgets;
use crate::viz::attribution::Baseline;
use crate::viz::cam::{CamMethod, MethodKind, Smooth};

/// The width of the column naming the method groups, in points.
const GROUP_WIDTH: f32 = 110.0;

/// The two rows of methods, then the parameters of the chosen one; returns whether anything
/// changed (the heatmaps are recomputed).
pub(super) fn method_controls(ui: &mut egui::Ui, s: &mut HeatmapSettings) -> bool {
    let mut changed = false;
    for (kind, label, hint) in [
        (
            MethodKind::Layer,
            "layer CAM",
            "a map at the chosen layer's resolution, upsampled to the image",
        ),
        (
            MethodKind::Pixel,
            "pixel attribution",
            "a map at the image's own resolution (the layer is not used)",
        ),
    ] {
        // The group's name in a column of its own: a row that wraps continues under its
        // methods, not under the name (where it would read as a group of its own).
        ui.horizontal(|ui| {
            ui.allocate_ui_with_layout(
                egui::vec2(GROUP_WIDTH, ui.spacing().interact_size.y),
                egui::Layout::left_to_right(egui::Align::Center),
                |ui| ui.label(label).on_hover_text(hint),
            );
            ui.horizontal_wrapped(|ui| {
                for m in CamMethod::ALL.into_iter().filter(|m| m.kind() == kind) {
                    changed |= ui
                        .selectable_value(&mut s.method, m, m.name())
                        .on_hover_text(m.title())
                        .changed();
                }
            });
        });
    }
    ui.horizontal_wrapped(|ui| changed |= parameters(ui, s));
    changed
}

/// Whether a number field's edit is finished (a drag let go, or typed and left).
fn done(r: &egui::Response) -> bool {
    r.drag_stopped() || r.lost_focus() || (r.changed() && !r.dragged() && !r.has_focus())
}

fn number<T: egui::emath::Numeric>(
    ui: &mut egui::Ui,
    label: &str,
    value: &mut T,
    range: std::ops::RangeInclusive<T>,
) -> bool {
    let r = widgets::labelled(ui, label, |ui| {
        ui.add(egui::DragValue::new(value).range(range))
    });
    done(&r)
}

fn parameters(ui: &mut egui::Ui, s: &mut HeatmapSettings) -> bool {
    let a = &mut s.attribution;
    let mut changed = false;
    match s.method {
        CamMethod::Saliency => {
            ui.label("|gradient| of the class score per pixel, largest over colour channels");
        }
        CamMethod::SmoothGrad => {
            changed |= number(ui, "samples", &mut a.samples, 1..=256);
            let r = widgets::labelled(ui, "noise", |ui| {
                ui.add(egui::Slider::new(&mut a.noise, 0.0..=1.0))
            })
            .on_hover_text("standard deviation as a fraction of the image's value range");
            changed |= done(&r);
            changed |= number(ui, "seed", &mut a.seed, 0..=u64::MAX);
        }
        CamMethod::IntegratedGradients => {
            changed |= number(ui, "steps", &mut a.steps, 1..=512);
            let before = a.baseline;
            let label = ui.label("baseline");
            egui::ComboBox::from_id_salt("cam-baseline")
                .selected_text(a.baseline.name())
                .show_ui(ui, |ui| {
                    for b in Baseline::ALL {
                        ui.selectable_value(&mut a.baseline, b, b.name());
                    }
                })
                .response
                .labelled_by(label.id);
            changed |= a.baseline != before;
            match a.baseline {
                Baseline::Blurred => changed |= number(ui, "blur σ", &mut a.blur_sigma, 0.5..=64.0),
                Baseline::Uniform => changed |= number(ui, "seed", &mut a.seed, 0..=u64::MAX),
                Baseline::Black => {}
            }
        }
        CamMethod::GuidedBackprop => {
            ui.label("the input gradient, only positive gradients passed back through each ReLU");
        }
        CamMethod::GuidedGradCam => {
            ui.label("guided backpropagation times the row's layer's Grad-CAM");
        }
        CamMethod::FullGrad => {
            ui.label(
                "|input × gradient| plus |bias × gradient| of every layer, each scaled, summed",
            );
        }
        CamMethod::Occlusion => {
            changed |= number(ui, "window", &mut a.window, 1..=512);
            changed |= number(ui, "stride", &mut a.stride, 1..=512);
            changed |= number(ui, "batch", &mut a.batch, 1..=256);
        }
        m => {
            let before = s.smooth;
            let label = ui.label("smoothing");
            egui::ComboBox::from_id_salt("cam-smooth")
                .selected_text(s.smooth.name())
                .show_ui(ui, |ui| {
                    for o in Smooth::ALL {
                        ui.selectable_value(&mut s.smooth, o, o.name());
                    }
                })
                .response
                .labelled_by(label.id)
                .on_hover_text("aug: the mean over flips and brightness x0.9/1/1.1; eigen: the first principal component");
            changed |= s.smooth != before;
            if m == CamMethod::AblationCam {
                changed |= number(ui, "batch", &mut a.batch, 1..=256);
            }
        }
    }
    changed
}
