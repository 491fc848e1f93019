//! Figure layouts: the CAM triptych, the activation grid and the filter-pattern grid.
//!
//! Every layout is computed in integer pixels at scale 1 and multiplied by the scale factor,
//! so a figure at scale `s` is exactly `s` times as wide and as tall as at scale 1; text is
//! rasterised at the scaled size (not resampled).

use image::imageops::{FilterType, resize};
use image::{Rgb, RgbImage};

use super::canvas::{Align, Canvas, INK, MUTED};
use crate::viz::activations::{GridOptions, LayerActivations};
use crate::viz::cam::Cam;
use crate::viz::colormap::Colormap;
use crate::viz::filters::FilterPattern;
use crate::viz::overlay::CropPlacement;

/// Margin around a figure, scale-1 pixels.
pub(crate) const MARGIN: u32 = 16;
/// Title font size, scale-1 pixels.
pub(crate) const TITLE: u32 = 20;
/// Subtitle and caption font size.
pub(crate) const SUB: u32 = 13;
/// Tick and tile label font size.
pub(crate) const SMALL: u32 = 11;
/// Colorbar width.
const BAR: u32 = 14;
/// Light grey shown where a map has no value (outside the network's crop).
const NO_DATA: Rgb<u8> = Rgb([228, 228, 228]);

/// The header block (title + subtitle) height at scale 1.
pub(crate) fn header_height() -> u32 {
    TITLE * 5 / 4 + 4 + SUB * 5 / 4 + 10
}

/// Draws the title and subtitle; returns nothing (the layout reserves [`header_height`]).
pub(crate) fn header(c: &mut Canvas, title: &str, subtitle: &str, s: u32) {
    let x = (MARGIN * s) as f32;
    let y = (MARGIN * s) as f32;
    c.text(title, x, y, (TITLE * s) as f32, INK, Align::Left);
    let y2 = y + ((TITLE * 5 / 4 + 4) * s) as f32;
    c.text(subtitle, x, y2, (SUB * s) as f32, MUTED, Align::Left);
}

/// The width of `text` at scale 1 and `size`, rounded up.
pub(crate) fn width1(text: &str, size: u32) -> u32 {
    Canvas::new(1, 1).text_width(text, size as f32).ceil() as u32
}

/// Space for a colorbar and its tick labels at scale 1: `(gap before, bar + labels)`.
fn colorbar_width(ticks: &[(f32, String)]) -> (u32, u32) {
    let label = ticks
        .iter()
        .map(|(_, t)| width1(t, SMALL))
        .max()
        .unwrap_or(0);
    (14, BAR + 2 + BAR / 3 + SMALL / 3 + label + 2)
}

/// Fits `(w, h)` into a `(bw, bh)` box keeping the aspect ratio (at least 1 x 1).
fn fit((w, h): (u32, u32), (bw, bh): (u32, u32)) -> (u32, u32) {
    let k = (f64::from(bw) / f64::from(w.max(1))).min(f64::from(bh) / f64::from(h.max(1)));
    (
        ((f64::from(w) * k).round() as u32).max(1),
        ((f64::from(h) * k).round() as u32).max(1),
    )
}

/// What a CAM figure shows besides the map.
#[derive(Clone, Debug)]
pub struct CamFigure<'a> {
    /// The original, uncropped image.
    pub original: &'a RgbImage,
    /// Where the network's crop lies in it.
    pub placement: CropPlacement,
    pub cam: &'a Cam,
    pub title: String,
    pub subtitle: String,
    pub colormap: Colormap,
    /// Weight of the heatmap in the overlay (0.4).
    pub alpha: f32,
}

/// "image | heatmap | overlay" side by side, the map (crop resolution) placed back on the
/// original image by bilinear sampling; a colorbar for the map; the crop outlined.
pub fn cam_figure(f: &CamFigure, scale: u32) -> RgbImage {
    let s = scale.max(1);
    let (ow, oh) = f.original.dimensions();
    let (pw1, ph1) = fit((ow, oh), (340, 256));
    let gap1 = 12;
    // A signed map (in [-1, 1]) is drawn as 0.5 + 0.5 v: its ticks say -1 .. 1.
    let signed = f.cam.signed;
    let ticks: Vec<(f32, String)> = [0.0f32, 0.25, 0.5, 0.75, 1.0]
        .iter()
        .map(|&v| {
            let label = if signed { 2.0 * v - 1.0 } else { v };
            (v, format!("{label:.2}"))
        })
        .collect();
    let colormap = f.colormap.for_map(signed);
    let (bar_gap1, bar_w1) = colorbar_width(&ticks);
    let caption1 = SUB * 5 / 4 + 4;
    let top1 = MARGIN + header_height() + caption1;
    let w1 = MARGIN + 3 * pw1 + 2 * gap1 + bar_gap1 + bar_w1 + MARGIN;
    let h1 = top1 + ph1 + MARGIN;
    let (pw, ph, gap, top) = (pw1 * s, ph1 * s, gap1 * s, top1 * s);
    let mut c = Canvas::new(w1 * s, h1 * s);
    header(&mut c, &f.title, &f.subtitle, s);

    let photo = resize(f.original, pw, ph, FilterType::Triangle);
    let map = &f.cam.display_map();
    let size = f.cam.size;
    let heat_at = |px: u32, py: u32| {
        let x = (f64::from(px) + 0.5) * f64::from(ow) / f64::from(pw);
        let y = (f64::from(py) + 0.5) * f64::from(oh) / f64::from(ph);
        f.placement.sample(map, size, x, y)
    };
    let mut heat = RgbImage::from_pixel(pw, ph, NO_DATA);
    let mut overlay = photo.clone();
    for py in 0..ph {
        for px in 0..pw {
            if let Some(v) = heat_at(px, py) {
                let h = colormap.rgb(v);
                heat.put_pixel(px, py, Rgb(h));
                let o = overlay.get_pixel_mut(px, py);
                for (c, &hc) in o.0.iter_mut().zip(&h) {
                    let mix = f32::from(*c) * (1.0 - f.alpha) + f32::from(hc) * f.alpha;
                    *c = mix.round().clamp(0.0, 255.0) as u8;
                }
            }
        }
    }
    let x0 = MARGIN * s;
    let xs = [x0, x0 + pw + gap, x0 + 2 * (pw + gap)];
    let alpha_text = format!("overlay (α = {})", trim_float(f.alpha));
    let captions = ["image", "heatmap", alpha_text.as_str()];
    for (i, pic) in [&photo, &heat, &overlay].into_iter().enumerate() {
        c.blit(pic, i64::from(xs[i]), i64::from(top));
        c.text(
            captions[i],
            (xs[i] + pw / 2) as f32,
            ((top1 - caption1) * s) as f32,
            (SUB * s) as f32,
            INK,
            Align::Center,
        );
    }
    // The crop the network saw, outlined on the photo and the overlay.
    let p = &f.placement;
    let (bx, by) = (
        p.x0 * f64::from(pw) / f64::from(ow),
        p.y0 * f64::from(ph) / f64::from(oh),
    );
    let (bw, bh) = (
        p.w * f64::from(pw) / f64::from(ow),
        p.h * f64::from(ph) / f64::from(oh),
    );
    let covers_all =
        bx < 1.0 && by < 1.0 && bx + bw > f64::from(pw) - 1.0 && by + bh > f64::from(ph) - 1.0;
    if !covers_all {
        for &x in &[xs[0], xs[2]] {
            c.outline(
                i64::from(x) + bx.round() as i64,
                i64::from(top) + by.round() as i64,
                bw.round() as u32,
                bh.round() as u32,
                s,
                Rgb([255, 255, 255]),
            );
        }
    }
    let bar_x = xs[2] + pw + bar_gap1 * s;
    c.colorbar(
        colormap,
        i64::from(bar_x),
        i64::from(top),
        BAR * s,
        ph,
        &ticks,
        (SMALL * s) as f32,
        s,
    );
    c.img
}

/// Formats a float without trailing zeros (`0.4`, `1`).
fn trim_float(v: f32) -> String {
    let t = format!("{v:.3}");
    t.trim_end_matches('0').trim_end_matches('.').to_string()
}

/// The activation grid: every channel a tile (enlarged by pixel replication to at least ~40
/// scale-1 pixels), row labels with the first channel index of each row, column indices on
/// top, a colorbar in z-scores.
pub fn activations_figure(
    acts: &LayerActivations,
    grid: &GridOptions,
    title: &str,
    subtitle: &str,
    scale: u32,
) -> RgbImage {
    let s = scale.max(1);
    let layout = acts.layout(grid);
    let (tw, th) = layout.tile;
    let zoom1 = 40u32.div_ceil(tw.max(th).max(1)).max(1);
    let (tile_w1, tile_h1) = (tw * zoom1, th * zoom1);
    let gut1 = grid.gutter;
    let last_row_label = ((layout.rows - 1) * layout.cols).to_string();
    let label_w1 = width1(&last_row_label, SMALL) + 6;
    let col_labels = layout.cols <= 32;
    let col_label_h1 = if col_labels { SMALL * 5 / 4 + 2 } else { 0 };
    let ticks: Vec<(f32, String)> = vec![
        (0.0, "−2σ".into()),
        (0.25, "−1σ".into()),
        (0.5, "mean".into()),
        (0.75, "+1σ".into()),
        (1.0, "+2σ".into()),
    ];
    let (bar_gap1, bar_w1) = colorbar_width(&ticks);
    let grid_w1 = layout.cols as u32 * tile_w1 + (layout.cols as u32 - 1) * gut1;
    let grid_h1 = layout.rows as u32 * tile_h1 + (layout.rows as u32 - 1) * gut1;
    let top1 = MARGIN + header_height() + col_label_h1;
    let left1 = MARGIN + label_w1;
    let w1 = (left1 + grid_w1 + bar_gap1 + bar_w1 + MARGIN)
        .max(MARGIN * 2 + width1(title, TITLE))
        .max(MARGIN * 2 + width1(subtitle, SUB));
    let h1 = top1 + grid_h1.max(120) + MARGIN;
    let mut c = Canvas::new(w1 * s, h1 * s);
    header(&mut c, title, subtitle, s);

    let shared = grid.shared_scale.then(|| acts.layer_stats());
    let table = grid.colormap.table();
    let (zoom, gut) = (zoom1 * s, gut1 * s);
    let (left, top) = (left1 * s, top1 * s);
    for ch in 0..acts.channels {
        let levels = acts.levels(ch, shared.as_ref());
        let tile = RgbImage::from_fn(tw, th, |x, y| {
            Rgb(table[levels[(y * tw + x) as usize] as usize])
        });
        let (r, col) = ((ch / layout.cols) as u32, (ch % layout.cols) as u32);
        let x = left + col * (tile_w1 * s + gut);
        let y = top + r * (tile_h1 * s + gut);
        c.blit_nearest(&tile, i64::from(x), i64::from(y), zoom);
    }
    let small = (SMALL * s) as f32;
    for r in 0..layout.rows as u32 {
        let y = top + r * (tile_h1 * s + gut) + tile_h1 * s / 2;
        let label = (r as usize * layout.cols).to_string();
        c.text(
            &label,
            (left - 5 * s) as f32,
            y as f32 - small * 0.6,
            small,
            MUTED,
            Align::Right,
        );
    }
    if col_labels {
        for col in 0..layout.cols as u32 {
            let x = left + col * (tile_w1 * s + gut) + tile_w1 * s / 2;
            c.text(
                &format!("+{col}"),
                x as f32,
                (top - col_label_h1 * s) as f32,
                small,
                MUTED,
                Align::Center,
            );
        }
    }
    let bar_h = (grid_h1.clamp(120, 320)) * s;
    let bar_x = left + grid_w1 * s + bar_gap1 * s;
    c.colorbar(
        grid.colormap,
        i64::from(bar_x),
        i64::from(top),
        BAR * s,
        bar_h,
        &ticks,
        small,
        s,
    );
    c.img
}

/// The filter patterns, `cols` per row, each labelled with its filter index.
pub fn filters_figure(
    patterns: &[FilterPattern],
    cols: usize,
    title: &str,
    subtitle: &str,
    scale: u32,
) -> RgbImage {
    let s = scale.max(1);
    let n = patterns.len().max(1);
    let cols = cols.clamp(1, n) as u32;
    let rows = n.div_ceil(cols as usize) as u32;
    let (tw1, th1) = patterns.first().map_or((1, 1), |p| p.image.dimensions());
    let gap1 = 6;
    let label_h1 = SMALL * 5 / 4 + 2;
    let cell_w1 = tw1 + gap1;
    let cell_h1 = th1 + label_h1 + gap1;
    let top1 = MARGIN + header_height();
    let w1 = (MARGIN * 2 + cols * cell_w1 - gap1)
        .max(MARGIN * 2 + width1(title, TITLE))
        .max(MARGIN * 2 + width1(subtitle, SUB));
    let h1 = top1 + rows * cell_h1 - gap1 + MARGIN;
    let mut c = Canvas::new(w1 * s, h1 * s);
    header(&mut c, title, subtitle, s);
    let small = (SMALL * s) as f32;
    for (i, p) in patterns.iter().enumerate() {
        let (r, col) = (i as u32 / cols, i as u32 % cols);
        let x = (MARGIN + col * cell_w1) * s;
        let y = (top1 + r * cell_h1) * s;
        let pic = if s == 1 {
            p.image.clone()
        } else {
            resize(&p.image, tw1 * s, th1 * s, FilterType::Nearest)
        };
        c.blit(&pic, i64::from(x), i64::from(y));
        c.text(
            &p.filter.to_string(),
            (x + tw1 * s / 2) as f32,
            (y + th1 * s + s) as f32,
            small,
            MUTED,
            Align::Center,
        );
    }
    c.img
}
