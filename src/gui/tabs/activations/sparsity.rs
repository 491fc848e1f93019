//! The sparsity-by-depth plot: blank channels and zero values of every layer for the current
//! image, the layer on show marked, the values of the layer under the pointer on hover.

use egui_plot::{HoverPosition, Line, Plot, PlotPoints, Points, VLine};

use crate::gui::widgets::{LegendEntry, legend};
use crate::viz::activations::LayerSparsity;

/// The colours of the two curves (the legend under the plot names them).
const BLANK: egui::Color32 = egui::Color32::from_rgb(220, 90, 90);
const ZEROS: egui::Color32 = egui::Color32::from_rgb(80, 140, 230);

/// The fraction of zero values of a layer (what the plot's second line shows).
fn zero_values(s: &LayerSparsity) -> f32 {
    1.0 - s.active_fraction
}

/// The position (depth) of `layer` in the profile, where the plot marks it.
pub fn marker(sparsity: &[LayerSparsity], layer: &str) -> Option<usize> {
    sparsity.iter().position(|s| s.layer == layer)
}

/// What hovering at depth `x` shows: the nearest layer's name and sparsity.
pub fn hover_text(sparsity: &[LayerSparsity], x: f64) -> Option<String> {
    if !x.is_finite() || sparsity.is_empty() {
        return None;
    }
    let i = x.round().clamp(0.0, (sparsity.len() - 1) as f64) as usize;
    let s = &sparsity[i];
    Some(format!(
        "{} (depth {i})\nblank channels {:.1}%\nzero values {:.1}%",
        s.layer,
        100.0 * s.blank_fraction,
        100.0 * zero_values(s)
    ))
}

/// Draws the plot, marking `layer`.
pub fn plot(ui: &mut egui::Ui, sparsity: &[LayerSparsity], layer: &str) {
    let points = |f: fn(&LayerSparsity) -> f32| -> Vec<[f64; 2]> {
        sparsity
            .iter()
            .enumerate()
            .map(|(i, s)| [i as f64, f64::from(f(s))])
            .collect()
    };
    let blank = points(|s| s.blank_fraction);
    let zeros = points(zero_values);
    let names: Vec<String> = sparsity.iter().map(|s| s.layer.clone()).collect();
    let mark = marker(sparsity, layer);
    let colour = ui.visuals().warn_fg_color;
    if let Some(i) = mark {
        ui.label(
            egui::RichText::new(format!(
                "{layer} (marked): {:.1}% blank channels, {:.1}% zero values",
                100.0 * sparsity[i].blank_fraction,
                100.0 * zero_values(&sparsity[i])
            ))
            .small(),
        );
    }
    Plot::new("sparsity")
        .height(200.0)
        .allow_scroll(false)
        .include_y(0.0)
        .include_y(1.05)
        .y_axis_label("fraction")
        .x_axis_label("layer (depth)")
        .x_axis_formatter(move |mark, _| {
            names
                .get(mark.value.round() as usize)
                .cloned()
                .unwrap_or_default()
        })
        .label_formatter(|pos| {
            let x = match pos {
                HoverPosition::NearDataPoint { position, .. } => position.x,
                HoverPosition::Elsewhere { position } => position.x,
            };
            hover_text(sparsity, x)
        })
        .show(ui, |p| {
            if let Some(i) = mark {
                p.vline(VLine::new(format!("{layer} (shown)"), i as f64).color(colour));
                let at = vec![blank[i], zeros[i]];
                p.points(
                    Points::new("", PlotPoints::from(at))
                        .radius(5.0)
                        .color(colour),
                );
            }
            p.line(Line::new("blank channels", PlotPoints::from(blank.clone())).color(BLANK));
            p.line(Line::new("zero values", PlotPoints::from(zeros.clone())).color(ZEROS));
        });
    let entry = |name: String, color| LegendEntry {
        name,
        color,
        dashed: false,
    };
    let mut entries = vec![
        entry("blank channels".into(), BLANK),
        entry("zero values".into(), ZEROS),
    ];
    if mark.is_some() {
        entries.push(entry(format!("{layer} (shown)"), colour));
    }
    legend(ui, &entries);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layer(name: &str, blank: f32, active: f32) -> LayerSparsity {
        LayerSparsity {
            layer: name.into(),
            blank_fraction: blank,
            mean: 0.0,
            active_fraction: active,
        }
    }

    #[test]
    fn the_selected_layer_is_marked_at_its_depth() {
        let profile = [
            layer("stem", 0.0, 0.9),
            layer("blocks.1", 0.1, 0.5),
            layer("head", 0.5, 0.2),
        ];
        assert_eq!(marker(&profile, "blocks.1"), Some(1));
        assert_eq!(marker(&profile, "head"), Some(2));
        assert_eq!(
            marker(&profile, "blocks.9"),
            None,
            "not in the profile: no mark"
        );
    }

    #[test]
    fn hovering_names_the_nearest_layer_and_its_values() {
        let profile = [layer("stem", 0.0, 0.9), layer("head", 0.5, 0.25)];
        let text = hover_text(&profile, 0.8).unwrap();
        assert!(text.starts_with("head (depth 1)"), "{text}");
        assert!(text.contains("blank channels 50.0%"), "{text}");
        assert!(text.contains("zero values 75.0%"), "{text}");
        assert!(hover_text(&profile, -3.0).unwrap().starts_with("stem"));
        assert_eq!(hover_text(&profile, f64::NAN), None);
        assert_eq!(hover_text(&[], 0.0), None);
    }
}
