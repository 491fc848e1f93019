//! The information-distillation figure: class-probe accuracy, instance retrieval, input
//! reconstruction (R^2, drawn from 0: a negative one sits on the axis) and sparsity by depth
//! (one curve each, 0 to 1), for one or more models (solid for the first, dashed for the
//! others). A layer without a reconstruction value breaks that curve.

use image::{Rgb, RgbImage};

use super::canvas::{Align, Canvas, INK, MUTED};
use super::figures::{MARGIN, SMALL, header, header_height, width1};
use crate::viz::probe::ProbeReport;

/// The plot's least width; it widens to the header's.
const PLOT_W: u32 = 560;
const PLOT_H: u32 = 300;
/// The four measures: name, colour.
const CURVES: [(&str, Rgb<u8>); 4] = [
    ("class probe accuracy (held out)", Rgb([31, 119, 180])),
    ("instance retrieval top-1", Rgb([214, 39, 40])),
    (
        "input reconstruction R^2 (linear decoder, held out)",
        Rgb([44, 160, 44]),
    ),
    ("sparsity (blank channels)", Rgb([120, 120, 120])),
];
const GRID: Rgb<u8> = Rgb([225, 225, 225]);

fn values(r: &ProbeReport, curve: usize) -> Vec<Option<f32>> {
    r.taps
        .iter()
        .map(|t| match curve {
            0 => Some(t.class_accuracy),
            1 => Some(t.instance_top1),
            2 => t.reconstruction_r2,
            _ => Some(t.sparsity),
        })
        .collect()
}

/// Renders the curves of `reports` (each with its model's name, sharing the first's layers on
/// the x axis) at `scale`.
pub fn probe_figure(
    reports: &[(String, &ProbeReport)],
    title: &str,
    subtitle: &str,
    scale: u32,
) -> RgbImage {
    let s = scale.max(1);
    let layers: Vec<&str> = reports
        .first()
        .map(|(_, r)| r.taps.iter().map(|t| t.layer.as_str()).collect())
        .unwrap_or_default();
    let axis_w1 = width1("1.0", SMALL) + 8;
    let label_h1 = layers
        .iter()
        .map(|l| width1(l, SMALL))
        .max()
        .unwrap_or(0)
        .min(90)
        + 8;
    let legend_h1 = (CURVES.len() + reports.len()) as u32 * (SMALL * 5 / 4 + 4) + 8;
    let top1 = MARGIN + header_height();
    let left1 = MARGIN + axis_w1;
    let w1 = (left1 + PLOT_W + MARGIN)
        .max(MARGIN * 2 + width1(title, super::figures::TITLE))
        .max(MARGIN * 2 + width1(subtitle, super::figures::SUB));
    let plot_w1 = w1 - left1 - MARGIN;
    let h1 = top1 + PLOT_H + label_h1 + legend_h1 + MARGIN;
    let mut c = Canvas::new(w1 * s, h1 * s);
    header(&mut c, title, subtitle, s);
    let (px, py, pw, ph) = (left1 * s, top1 * s, plot_w1 * s, PLOT_H * s);
    let small = (SMALL * s) as f32;
    for k in 0..=4 {
        let y = py + ph - ph * k / 4;
        c.fill(i64::from(px), i64::from(y), pw, s, GRID);
        let label = format!("{:.2}", k as f32 / 4.0);
        c.text(
            &label,
            (px - 4 * s) as f32,
            y as f32 - small / 2.0,
            small,
            MUTED,
            Align::Right,
        );
    }
    c.outline(i64::from(px), i64::from(py), pw, ph + s, s, MUTED);
    let n = layers.len().max(2);
    let x_at = |i: usize| px as f32 + pw as f32 * (i as f32 + 0.5) / n as f32;
    let y_at = |v: f32| (py + ph) as f32 - ph as f32 * v.clamp(0.0, 1.0);
    // Layer names under the axis: every k-th, k as small as lets them not overlap.
    let widest = layers
        .iter()
        .map(|l| width1(l, SMALL) as f32 * 0.85)
        .fold(0f32, f32::max);
    let every = ((widest + 8.0) / (plot_w1 as f32 / n as f32))
        .ceil()
        .max(1.0) as usize;
    for (i, l) in layers.iter().enumerate().step_by(every.max(1)) {
        let short: String = l.chars().take(14).collect();
        c.text(
            &short,
            x_at(i),
            (py + ph + 4 * s) as f32,
            small * 0.85,
            MUTED,
            Align::Center,
        );
    }
    for (m, (_, report)) in reports.iter().enumerate() {
        for (k, &(_, colour)) in CURVES.iter().enumerate() {
            let v = values(report, k);
            for (i, pair) in v.windows(2).enumerate() {
                let (Some(a), Some(b)) = (pair[0], pair[1]) else {
                    continue;
                };
                let (x0, y0, x1, y1) = (x_at(i), y_at(a), x_at(i + 1), y_at(b));
                let steps = ((x1 - x0).abs().max((y1 - y0).abs()) as usize).max(1);
                for t in 0..=steps {
                    if m > 0 && (t / (6 * s as usize)) % 2 == 1 {
                        continue; // dashed
                    }
                    let f = t as f32 / steps as f32;
                    let (x, y) = (x0 + (x1 - x0) * f, y0 + (y1 - y0) * f);
                    c.fill(
                        x as i64 - i64::from(s),
                        y as i64 - i64::from(s),
                        2 * s,
                        2 * s,
                        colour,
                    );
                }
            }
            for (i, val) in v.iter().enumerate() {
                let Some(val) = *val else { continue };
                c.fill(
                    x_at(i) as i64 - 2 * i64::from(s),
                    y_at(val) as i64 - 2 * i64::from(s),
                    4 * s,
                    4 * s,
                    colour,
                );
            }
        }
    }
    let mut ly = (py + ph + label_h1 * s) as f32;
    let line_h = ((SMALL * 5 / 4 + 4) * s) as f32;
    for &(name, colour) in &CURVES {
        c.fill(
            i64::from(px),
            ly as i64 + i64::from(SMALL * s / 2),
            18 * s,
            3 * s,
            colour,
        );
        c.text(name, (px + 24 * s) as f32, ly, small, INK, Align::Left);
        ly += line_h;
    }
    for (m, (name, _)) in reports.iter().enumerate() {
        let style = if m == 0 { "solid" } else { "dashed" };
        c.text(
            &format!("{style}: {name}"),
            px as f32,
            ly,
            small,
            MUTED,
            Align::Left,
        );
        ly += line_h;
    }
    c.img
}
