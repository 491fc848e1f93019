//! The map's scatter (egui_plot): one series per colour group, its key above the plot (a legend
//! inside it would cover points; a click on a group hides or shows it), hover shows the
//! nearest image's thumbnail and labels, a click opens it in Heatmap, and with "Select box" a
//! primary drag selects the shown points inside the box.

use egui_plot::{Plot, PlotPoint, Points, Polygon};

use super::{open_in_heatmap, point_text};
use crate::gui::context::{AppContext, Command, Commands};
use crate::gui::widgets;
use crate::insight::map::{ColorBy, DatasetMap, group_color};

/// Height of the plot, in points.
const PLOT_HEIGHT: f32 = 460.0;
/// How near (in screen points) the pointer must be to a point to hover it.
const HOVER_RADIUS: f32 = 8.0;

/// The scatter's interaction state.
#[derive(Default)]
pub struct ScatterState {
    /// Primary drag selects a box instead of panning.
    pub select_box: bool,
    /// Where the current box drag started (plot coordinates).
    drag_start: Option<PlotPoint>,
    /// The corners of the last box (drawn until the next one), plot coordinates.
    last_box: Option<(PlotPoint, PlotPoint)>,
    /// The points inside the last box, by index.
    pub selected: Vec<usize>,
    /// The colour groups hidden by a click on their key, by name.
    hidden: Vec<String>,
}

/// The key above the plot: each group's name in its colour (a hidden one crossed out); a click
/// hides or shows the group.
fn key(ui: &mut egui::Ui, names: &[String], color: ColorBy, hidden: &mut Vec<String>) {
    ui.horizontal_wrapped(|ui| {
        ui.label("key (click to hide or show):");
        for (g, name) in names.iter().enumerate() {
            let [r, gg, b] = group_color(color, g);
            let shown = !hidden.contains(name);
            let colour = egui::Color32::from_rgb(r, gg, b);
            // The group's dot, drawn (the default fonts have no bullet glyph).
            let (dot, _) = ui.allocate_exact_size(egui::vec2(8.0, 8.0), egui::Sense::hover());
            if shown {
                ui.painter().circle_filled(dot.center(), 4.0, colour);
            } else {
                ui.painter()
                    .circle_stroke(dot.center(), 3.5, egui::Stroke::new(1.0, colour));
            }
            let text = egui::RichText::new(name);
            let text = if shown {
                text.color(colour)
            } else {
                text.weak().strikethrough()
            };
            if ui.selectable_label(false, text).clicked() {
                if shown {
                    hidden.push(name.clone());
                } else {
                    hidden.retain(|h| h != name);
                }
            }
        }
    });
}

/// The box with corners `a` and `b`, outlined (unnamed: not in the legend).
fn box_polygon(a: PlotPoint, b: PlotPoint, fill: egui::Color32) -> Polygon<'static> {
    let corners = vec![[a.x, a.y], [b.x, a.y], [b.x, b.y], [a.x, b.y]];
    Polygon::new("", corners)
        .fill_color(fill)
        .stroke(egui::Stroke::new(1.0, egui::Color32::GRAY))
}

/// The indices of the points of `map` inside the box with corners `a` and `b`.
pub fn inside(map: &DatasetMap, a: PlotPoint, b: PlotPoint) -> Vec<usize> {
    let (x0, x1) = (a.x.min(b.x), a.x.max(b.x));
    let (y0, y1) = (a.y.min(b.y), a.y.max(b.y));
    map.points
        .iter()
        .enumerate()
        .filter(|(_, p)| {
            let (x, y) = (f64::from(p.x), f64::from(p.y));
            (x0..=x1).contains(&x) && (y0..=y1).contains(&y)
        })
        .map(|(i, _)| i)
        .collect()
}

/// Draws the scatter and handles hover, click (opens the image in Heatmap through `model`, a
/// chooser key) and box selection.
#[allow(clippy::too_many_arguments)]
pub fn ui(
    ui: &mut egui::Ui,
    ctx: &AppContext,
    model: &Option<String>,
    map: &DatasetMap,
    color: ColorBy,
    state: &mut ScatterState,
    out: &mut Commands,
) {
    let (groups, names) = match map.groups(color) {
        Ok(g) => g,
        Err(e) => {
            widgets::error_line(ui, &e.to_string());
            return;
        }
    };
    ui.horizontal(|ui| {
        ui.checkbox(&mut state.select_box, "Select box")
            .on_hover_text("drag a box to list the images inside (pan is off meanwhile)");
        ui.label(format!(
            "{} images, {} by {}{}",
            map.points.len(),
            map.method.name(),
            map.model,
            map.explained_variance_ratio
                .map_or_else(String::new, |[a, b]| format!(
                    "; axes carry {:.1} % and {:.1} % of the variance",
                    a * 100.0,
                    b * 100.0
                ))
        ));
    });
    key(ui, &names, color, &mut state.hidden);
    let shown: Vec<bool> = names.iter().map(|n| !state.hidden.contains(n)).collect();
    let visible = |i: usize| {
        groups
            .get(i)
            .is_some_and(|&g| shown.get(g).copied().unwrap_or(true))
    };
    let select = state.select_box;
    let drag_start = state.drag_start;
    let last_box = state.last_box.filter(|_| select);
    let response = Plot::new("dataset-map")
        .height(PLOT_HEIGHT)
        .allow_drag(!select)
        .allow_scroll(false)
        .show_grid(false)
        .label_formatter(|_| None)
        .show(ui, |p| {
            for (g, name) in names
                .iter()
                .enumerate()
                .filter(|(g, _)| shown.get(*g).copied().unwrap_or(true))
            {
                let series: Vec<[f64; 2]> = map
                    .points
                    .iter()
                    .zip(&groups)
                    .filter(|(_, k)| **k == g)
                    .map(|(pt, _)| [f64::from(pt.x), f64::from(pt.y)])
                    .collect();
                let [r, gg, b] = group_color(color, g);
                p.points(
                    Points::new(name.as_str(), series)
                        .radius(2.5)
                        .color(egui::Color32::from_rgb(r, gg, b)),
                );
            }
            if let (Some(a), Some(b)) = (drag_start, p.pointer_coordinate()) {
                p.polygon(box_polygon(
                    a,
                    b,
                    egui::Color32::from_rgba_unmultiplied(120, 120, 120, 40),
                ));
            } else if let Some((a, b)) = last_box {
                p.polygon(box_polygon(a, b, egui::Color32::TRANSPARENT));
            }
            p.pointer_coordinate()
        });
    let pointer = response.inner;
    let plot = &response.response;
    // The nearest point on screen, within HOVER_RADIUS.
    let hovered = plot.hover_pos().and_then(|pos| {
        map.points
            .iter()
            .enumerate()
            .filter(|(i, _)| visible(*i))
            .map(|(i, p)| {
                let s = response
                    .transform
                    .position_from_point(&PlotPoint::new(p.x, p.y));
                (i, s.distance(pos))
            })
            .filter(|(_, d)| *d <= HOVER_RADIUS)
            .min_by(|a, b| a.1.total_cmp(&b.1))
            .map(|(i, _)| i)
    });
    if select {
        // The box starts where the button went down (a fast drag is recognised only some
        // way from there).
        if plot.drag_started_by(egui::PointerButton::Primary) {
            let origin = ui.input(|i| i.pointer.press_origin());
            state.drag_start = origin
                .map(|o| response.transform.value_from_position(o))
                .or(pointer);
        }
        if plot.drag_stopped()
            && let (Some(a), Some(b)) = (state.drag_start.take(), pointer)
        {
            state.selected = inside(map, a, b)
                .into_iter()
                .filter(|&i| visible(i))
                .collect();
            state.last_box = Some((a, b));
        }
    } else {
        state.drag_start = None;
    }
    if let Some(i) = hovered {
        let p = &map.points[i];
        let path = map.dataset.join(&p.path);
        let thumb = ctx.thumbs.get(&path).cloned();
        if thumb.is_none() {
            out.push(Command::Thumbnails(vec![path.clone()]));
        }
        plot.clone().on_hover_ui_at_pointer(|ui| {
            if let Some(tex) = &thumb {
                widgets::fitted_image(ui, tex, egui::vec2(128.0, 128.0));
            }
            ui.label(point_text(p));
            ui.label("click: open in Heatmap");
        });
        if plot.clicked() {
            out.0.extend(open_in_heatmap(ctx, model, map, i));
        }
    }
}
