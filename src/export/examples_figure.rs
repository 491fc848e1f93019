//! The channel-examples figure: per channel, one row of its top receptive-field patches and,
//! beside them, the whole images (the model's view, the patch outlined) with their class.

use std::collections::HashMap;
use std::path::Path;

use image::{Rgb, RgbImage};

use super::canvas::{Align, Canvas, INK, MUTED};
use super::figures::{MARGIN, SMALL, SUB, header, header_height, width1};
use crate::Result;
use crate::data::decode::load_rgb;
use crate::data::preprocess::resize_bilinear;
use crate::viz::examples::{Hit, LayerExamples, Rank};
use crate::zoo::Preprocess;

/// Side of a patch or image tile at scale 1, pixels.
pub const TILE: u32 = 56;
const GAP: u32 = 4;
const OUTLINE: Rgb<u8> = Rgb([230, 40, 40]);

/// What the figure shows.
pub struct ExamplesFigure<'a> {
    pub examples: &'a LayerExamples,
    /// The channels, one row each, in figure order.
    pub channels: &'a [usize],
    pub rank: Rank,
    /// Examples per row (at most what `examples` keeps).
    pub top: usize,
    /// The folder the examples' image paths are relative to.
    pub folder: &'a Path,
    /// How the model sees an image.
    pub preprocess: &'a Preprocess,
    pub title: String,
    pub subtitle: String,
}

/// The model's view of an example image and its patch, each fitted into a `side` square.
pub fn tiles(view: &RgbImage, hit: &Hit, side: u32) -> (RgbImage, RgbImage) {
    let [x0, y0, x1, y1] = hit.patch;
    let patch = image::imageops::crop_imm(view, x0, y0, x1 - x0, y1 - y0).to_image();
    let fit = |img: &RgbImage| {
        let k = side as f32 / img.width().max(img.height()).max(1) as f32;
        let (w, h) = (
            ((img.width() as f32 * k).round() as u32).clamp(1, side),
            ((img.height() as f32 * k).round() as u32).clamp(1, side),
        );
        resize_bilinear(img, w, h)
    };
    (fit(&patch), fit(view))
}

/// Renders the figure at `scale` (1-4); decodes each example image once.
pub fn examples_figure(f: &ExamplesFigure, scale: u32) -> Result<RgbImage> {
    let s = scale.max(1);
    let ex = f.examples;
    let top = f.top.min(ex.top).max(1) as u32;
    let label_w1 = width1(
        &format!("ch {}", f.channels.iter().max().unwrap_or(&0)),
        SUB,
    ) + 10;
    let row_h1 = TILE + SMALL * 5 / 4 + 8;
    let strip1 = top * TILE + (top - 1) * GAP;
    let col_head1 = SMALL * 5 / 4 + 4;
    let top1 = MARGIN + header_height() + col_head1;
    let w1 = (MARGIN * 2 + label_w1 + 2 * strip1 + 3 * TILE / 2)
        .max(MARGIN * 2 + width1(&f.title, super::figures::TITLE))
        .max(MARGIN * 2 + width1(&f.subtitle, SUB));
    let h1 = top1 + f.channels.len() as u32 * row_h1 + MARGIN;
    let mut c = Canvas::new(w1 * s, h1 * s);
    header(&mut c, &f.title, &f.subtitle, s);
    let (left_patches, left_images) =
        (MARGIN + label_w1, MARGIN + label_w1 + strip1 + 3 * TILE / 2);
    let head_y = ((MARGIN + header_height()) * s) as f32;
    let small = (SMALL * s) as f32;
    c.text(
        "patches (receptive field at the maximum)",
        (left_patches * s) as f32,
        head_y,
        small,
        MUTED,
        Align::Left,
    );
    c.text(
        "images (the model's view)",
        (left_images * s) as f32,
        head_y,
        small,
        MUTED,
        Align::Left,
    );
    let mut views: HashMap<&str, Option<RgbImage>> = HashMap::new();
    for (row, &ch) in f.channels.iter().enumerate() {
        let y1 = top1 + row as u32 * row_h1;
        let y = i64::from(y1 * s);
        c.text(
            &format!("ch {ch}"),
            (MARGIN * s) as f32,
            ((y1 + TILE / 2) * s) as f32 - (SUB * s) as f32 / 2.0,
            (SUB * s) as f32,
            INK,
            Align::Left,
        );
        let hits = ex.channels.get(ch).map_or(&[][..], |t| t.ranked(f.rank));
        for (k, hit) in hits.iter().take(top as usize).enumerate() {
            let view = views.entry(hit.image.as_str()).or_insert_with(|| {
                load_rgb(&f.folder.join(&hit.image))
                    .ok()
                    .map(|img| f.preprocess.apply(&img))
            });
            let Some(view) = view.as_ref() else { continue };
            let side = TILE * s;
            let (patch, whole) = tiles(view, hit, side);
            let px = i64::from((left_patches + k as u32 * (TILE + GAP)) * s);
            c.blit(
                &patch,
                px + i64::from((side - patch.width()) / 2),
                y + i64::from((side - patch.height()) / 2),
            );
            let ix = i64::from((left_images + k as u32 * (TILE + GAP)) * s);
            c.blit(&whole, ix, y);
            let k_img = whole.width() as f32 / view.width().max(1) as f32;
            let [x0, y0, x1, y1p] = hit.patch;
            let (bx, by) = ((x0 as f32 * k_img) as i64, (y0 as f32 * k_img) as i64);
            let bw = (((x1 - x0) as f32 * k_img).ceil() as u32).max(2);
            let bh = (((y1p - y0) as f32 * k_img).ceil() as u32).max(2);
            c.outline(ix + bx, y + by, bw, bh, s, OUTLINE);
            let label = hit
                .class
                .clone()
                .unwrap_or_else(|| format!("{:.2}", hit.score(f.rank)));
            c.text(
                &label,
                ix as f32 + side as f32 / 2.0,
                (y1 + TILE + 2) as f32 * s as f32,
                small,
                MUTED,
                Align::Center,
            );
        }
    }
    Ok(c.img)
}
