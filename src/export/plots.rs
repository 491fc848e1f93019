//! Charts drawn on a [`Canvas`]: a line chart (the sanity check's correlations by
//! randomisation step) and box plots (the faithfulness report's metrics by method).

use image::Rgb;

use super::canvas::{Align, Canvas, INK, MUTED};

/// Series colours (matplotlib's tab10: blue, orange, green, red, purple, brown ...).
pub const PALETTE: [Rgb<u8>; 8] = [
    Rgb([31, 119, 180]),
    Rgb([255, 127, 14]),
    Rgb([44, 160, 44]),
    Rgb([214, 39, 40]),
    Rgb([148, 103, 189]),
    Rgb([140, 86, 75]),
    Rgb([227, 119, 194]),
    Rgb([23, 190, 207]),
];
/// The colour of a random baseline.
pub const BASELINE: Rgb<u8> = Rgb([150, 150, 150]);
const GRID: Rgb<u8> = Rgb([225, 225, 225]);

/// A rectangle on the canvas.
#[derive(Clone, Copy, Debug)]
pub struct Frame {
    pub x: f32,
    pub y: f32,
    pub w: f32,
    pub h: f32,
}

/// A straight line `t` pixels thick.
pub fn line(c: &mut Canvas, (x0, y0): (f32, f32), (x1, y1): (f32, f32), t: u32, color: Rgb<u8>) {
    let n = ((x1 - x0).abs().max((y1 - y0).abs()).ceil() as usize).max(1);
    let half = t as f32 / 2.0;
    for i in 0..=n {
        let f = i as f32 / n as f32;
        let (x, y) = (x0 + (x1 - x0) * f, y0 + (y1 - y0) * f);
        c.fill(
            (x - half).round() as i64,
            (y - half).round() as i64,
            t,
            t,
            color,
        );
    }
}

/// A short number for an axis: 3 significant digits.
pub fn tick_label(v: f32) -> String {
    if v == 0.0 {
        return "0".into();
    }
    let a = v.abs();
    if (0.01..1000.0).contains(&a) {
        let s = format!("{v:.3}");
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        format!("{v:.2e}")
    }
}

/// The value range of a chart: the data's, widened a little, never empty.
pub fn value_range(values: impl Iterator<Item = f32>) -> (f32, f32) {
    let (mut lo, mut hi) = (f32::INFINITY, f32::NEG_INFINITY);
    for v in values.filter(|v| v.is_finite()) {
        lo = lo.min(v);
        hi = hi.max(v);
    }
    if !lo.is_finite() {
        return (0.0, 1.0);
    }
    if hi - lo < 1e-6 {
        return (lo - 0.5, hi + 0.5);
    }
    let pad = (hi - lo) * 0.05;
    (lo - pad, hi + pad)
}

/// Round values for the grid lines of `(lo, hi)`: the multiples in it of a step of 1, 2, 2.5 or
/// 5 times a power of ten, the step that gives closest to 5 lines (3 to 7; 0, 0.25 ... 1 for
/// `(-0.05, 1.05)`). Just the two ends for an empty or non-finite range.
pub fn nice_ticks(lo: f32, hi: f32) -> Vec<f32> {
    if !(lo.is_finite() && hi.is_finite() && hi > lo) {
        return vec![lo, hi];
    }
    let count = |step: f64| ((f64::from(hi) / step).floor() - (f64::from(lo) / step).ceil()) + 1.0;
    let magnitude = 10f64.powf((f64::from(hi - lo) / 4.0).log10().floor());
    let step = [0.5, 1.0, 2.0, 2.5, 5.0, 10.0, 20.0]
        .iter()
        .map(|m| m * magnitude)
        .filter(|&s| (3.0..=7.0).contains(&count(s)))
        .min_by(|&a, &b| (count(a) - 5.0).abs().total_cmp(&(count(b) - 5.0).abs()))
        .unwrap_or(f64::from(hi - lo) / 4.0);
    let first = (f64::from(lo) / step).ceil() as i64;
    let last = (f64::from(hi) / step).floor() as i64;
    (first..=last).map(|k| (k as f64 * step) as f32).collect()
}

/// Axes: a frame, horizontal grid lines with labels at round values of `range`
/// ([`nice_ticks`]), an optional title above. Returns the map from a value to a y pixel.
pub fn axes(
    c: &mut Canvas,
    f: Frame,
    range: (f32, f32),
    title: &str,
    font: f32,
    line_w: u32,
) -> impl Fn(f32) -> f32 + use<> {
    let (lo, hi) = range;
    let to_y = move |v: f32| f.y + f.h - (v - lo) / (hi - lo) * f.h;
    for v in nice_ticks(lo, hi) {
        let y = to_y(v);
        c.fill(f.x as i64, y as i64, f.w as u32, line_w.max(1), GRID);
        c.text(
            &tick_label(v),
            f.x - font * 0.4,
            y - font * 0.6,
            font,
            MUTED,
            Align::Right,
        );
    }
    c.outline(f.x as i64, f.y as i64, f.w as u32, f.h as u32, line_w, INK);
    if !title.is_empty() {
        c.text(
            title,
            f.x + f.w / 2.0,
            f.y - font * 1.6,
            font * 1.1,
            INK,
            Align::Center,
        );
    }
    to_y
}

/// Quartiles, median and extremes of a sample (linear interpolation, as numpy): `None` when it
/// has no finite value.
pub fn five_numbers(values: &[f32]) -> Option<[f32; 5]> {
    let mut v: Vec<f32> = values.iter().copied().filter(|v| v.is_finite()).collect();
    if v.is_empty() {
        return None;
    }
    v.sort_by(f32::total_cmp);
    let q = |p: f32| {
        let x = p * (v.len() - 1) as f32;
        let (i, f) = (x.floor() as usize, x - x.floor());
        let j = (i + 1).min(v.len() - 1);
        v[i] + (v[j] - v[i]) * f
    };
    Some([v[0], q(0.25), q(0.5), q(0.75), v[v.len() - 1]])
}

/// One box per `(label, values, colour)` in frame `f` (whiskers at the minimum and maximum),
/// labels below, values on a shared axis.
pub fn box_plot(
    c: &mut Canvas,
    f: Frame,
    title: &str,
    boxes: &[(String, Vec<f32>, Rgb<u8>)],
    font: f32,
    line_w: u32,
) {
    let range = value_range(boxes.iter().flat_map(|(_, v, _)| v.iter().copied()));
    let to_y = axes(c, f, range, title, font, line_w);
    let slot = f.w / boxes.len().max(1) as f32;
    for (i, (label, values, color)) in boxes.iter().enumerate() {
        let cx = f.x + slot * (i as f32 + 0.5);
        c.text(
            label,
            cx,
            f.y + f.h + font * 0.4,
            font * 0.85,
            INK,
            Align::Center,
        );
        let Some([min, q1, med, q3, max]) = five_numbers(values) else {
            continue;
        };
        let bw = (slot * 0.55).max(4.0);
        let lw = line_w.max(1);
        line(c, (cx, to_y(min)), (cx, to_y(q1)), lw, INK);
        line(c, (cx, to_y(q3)), (cx, to_y(max)), lw, INK);
        for v in [min, max] {
            line(
                c,
                (cx - bw / 4.0, to_y(v)),
                (cx + bw / 4.0, to_y(v)),
                lw,
                INK,
            );
        }
        let (top, bottom) = (to_y(q3), to_y(q1));
        c.fill(
            (cx - bw / 2.0) as i64,
            top as i64,
            bw as u32,
            (bottom - top).max(1.0) as u32,
            *color,
        );
        c.outline(
            (cx - bw / 2.0) as i64,
            top as i64,
            bw as u32,
            (bottom - top).max(1.0) as u32 + lw,
            lw,
            INK,
        );
        line(
            c,
            (cx - bw / 2.0, to_y(med)),
            (cx + bw / 2.0, to_y(med)),
            lw + 1,
            INK,
        );
    }
}

/// Lines through `(x index, value)` for each `(label, values, colour)` over `labels.len()`
/// positions, with a marker at each finite point, x labels in two staggered rows, a legend.
pub fn line_chart(
    c: &mut Canvas,
    f: Frame,
    range: (f32, f32),
    labels: &[String],
    series: &[(String, Vec<f32>, Rgb<u8>)],
    font: f32,
    line_w: u32,
) {
    let to_y = axes(c, f, range, "", font, line_w);
    let n = labels.len().max(2);
    let to_x = |i: usize| f.x + f.w * (i as f32 + 0.5) / n as f32;
    for (i, label) in labels.iter().enumerate() {
        let row = (i % 2) as f32;
        c.text(
            label,
            to_x(i),
            f.y + f.h + font * (0.4 + 1.2 * row),
            font * 0.8,
            INK,
            Align::Center,
        );
    }
    for (si, (name, values, color)) in series.iter().enumerate() {
        let mut prev: Option<(f32, f32)> = None;
        for (i, v) in values.iter().enumerate() {
            if !v.is_finite() {
                prev = None;
                continue;
            }
            let p = (to_x(i), to_y(*v));
            if let Some(q) = prev {
                line(c, q, p, line_w + 1, *color);
            }
            let m = (line_w * 3 + 2) as i64;
            c.fill(
                p.0 as i64 - m / 2,
                p.1 as i64 - m / 2,
                m as u32,
                m as u32,
                *color,
            );
            prev = Some(p);
        }
        let lx = f.x + f.w - font * 9.0;
        let ly = f.y + font * (0.6 + 1.4 * si as f32);
        c.fill(
            lx as i64,
            (ly + font * 0.45) as i64,
            (font * 1.5) as u32,
            line_w + 2,
            *color,
        );
        c.text(name, lx + font * 2.0, ly, font, INK, Align::Left);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn five_numbers_are_numpys_quartiles() {
        // numpy.percentile([1, 2, 3, 4, 10], [0, 25, 50, 75, 100]) = [1, 2, 3, 4, 10].
        assert_eq!(
            five_numbers(&[10.0, 1.0, 3.0, 2.0, 4.0]),
            Some([1.0, 2.0, 3.0, 4.0, 10.0])
        );
        // numpy.percentile([1, 2, 3, 4], 25) = 1.75.
        assert_eq!(five_numbers(&[1.0, 2.0, 3.0, 4.0]).unwrap()[1], 1.75);
        assert_eq!(five_numbers(&[f32::NAN]), None);
    }

    #[test]
    fn labels_and_ranges() {
        assert_eq!(tick_label(0.5), "0.5");
        assert_eq!(tick_label(-0.125), "-0.125");
        assert_eq!(value_range([1.0f32, 1.0].into_iter()), (0.5, 1.5));
    }

    #[test]
    fn grid_lines_fall_on_round_values() {
        assert_eq!(nice_ticks(-0.05, 1.05), [0.0, 0.25, 0.5, 0.75, 1.0]);
        assert_eq!(nice_ticks(0.5, 1.5), [0.6, 0.8, 1.0, 1.2, 1.4]);
        assert_eq!(nice_ticks(-0.31, 0.02), [-0.3, -0.2, -0.1, 0.0]);
        assert_eq!(nice_ticks(12.0, 97.0), [20.0, 40.0, 60.0, 80.0]);
        assert_eq!(nice_ticks(1.0, 1.0), [1.0, 1.0]);
        assert_eq!(nice_ticks(0.0, f32::NAN).len(), 2);
        for (lo, hi) in [(-3.7e-4, 2.1e-3), (0.91, 0.93), (-120.0, 5.0)] {
            let t = nice_ticks(lo, hi);
            assert!((3..=7).contains(&t.len()), "{lo}..{hi}: {t:?}");
            assert!(t.iter().all(|v| (lo..=hi).contains(v)), "{lo}..{hi}: {t:?}");
        }
    }
}
