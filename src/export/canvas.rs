//! A white RGB canvas that figures are drawn on: rectangles, pictures, anti-aliased text in the
//! bundled DejaVu Sans (`assets/fonts/`), and colorbars.

use ab_glyph::{Font, FontRef, PxScale, ScaleFont, point};
use image::{Rgb, RgbImage};

use crate::viz::colormap::Colormap;

/// DejaVu Sans 2.37 (Bitstream Vera license, `assets/fonts/LICENSE-DejaVu.txt`).
static FONT_BYTES: &[u8] = include_bytes!("../../assets/fonts/DejaVuSans.ttf");

/// The bundled font.
#[allow(
    clippy::expect_used,
    reason = "the bundled font's bytes are fixed at build time (and a test parses them)"
)]
pub fn font() -> FontRef<'static> {
    FontRef::try_from_slice(FONT_BYTES).expect("the bundled DejaVu Sans parses")
}

/// Near-black for text.
pub const INK: Rgb<u8> = Rgb([25, 25, 25]);
/// Grey for secondary text.
pub const MUTED: Rgb<u8> = Rgb([95, 95, 95]);
/// The background.
pub const WHITE: Rgb<u8> = Rgb([255, 255, 255]);

/// Horizontal alignment of a text run relative to its anchor `x`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Align {
    Left,
    Center,
    Right,
}

/// An RGB image being drawn on.
pub struct Canvas {
    pub img: RgbImage,
    font: FontRef<'static>,
}

impl Canvas {
    /// A white canvas of `w` x `h` pixels.
    pub fn new(w: u32, h: u32) -> Self {
        Canvas {
            img: RgbImage::from_pixel(w.max(1), h.max(1), WHITE),
            font: font(),
        }
    }

    /// Fills a rectangle (clipped to the canvas).
    pub fn fill(&mut self, x: i64, y: i64, w: u32, h: u32, color: Rgb<u8>) {
        let (cw, ch) = (i64::from(self.img.width()), i64::from(self.img.height()));
        for yy in y.max(0)..(y + i64::from(h)).min(ch) {
            for xx in x.max(0)..(x + i64::from(w)).min(cw) {
                self.img.put_pixel(xx as u32, yy as u32, color);
            }
        }
    }

    /// A rectangle outline `t` pixels thick, inside the rectangle.
    pub fn outline(&mut self, x: i64, y: i64, w: u32, h: u32, t: u32, color: Rgb<u8>) {
        self.fill(x, y, w, t, color);
        self.fill(x, y + i64::from(h) - i64::from(t), w, t, color);
        self.fill(x, y, t, h, color);
        self.fill(x + i64::from(w) - i64::from(t), y, t, h, color);
    }

    /// Copies a picture with its top-left corner at `(x, y)`.
    pub fn blit(&mut self, pic: &RgbImage, x: i64, y: i64) {
        image::imageops::replace(&mut self.img, pic, x, y);
    }

    /// Copies a picture enlarged `zoom` times by pixel replication (for tiles whose pixels are
    /// data: activation maps).
    pub fn blit_nearest(&mut self, pic: &RgbImage, x: i64, y: i64, zoom: u32) {
        let zoom = zoom.max(1);
        if zoom == 1 {
            return self.blit(pic, x, y);
        }
        for (px, py, c) in pic.enumerate_pixels() {
            self.fill(
                x + i64::from(px * zoom),
                y + i64::from(py * zoom),
                zoom,
                zoom,
                *c,
            );
        }
    }

    /// The advance width of `text` at `size` pixels.
    pub fn text_width(&self, text: &str, size: f32) -> f32 {
        let f = self.font.as_scaled(PxScale::from(size));
        let mut w = 0.0;
        let mut prev = None;
        for c in text.chars() {
            let id = f.glyph_id(c);
            if let Some(p) = prev {
                w += f.kern(p, id);
            }
            w += f.h_advance(id);
            prev = Some(id);
        }
        w
    }

    /// Draws one line of text at `size` pixels with its top (ascent line) at `y`; `x` is the
    /// left edge, centre or right edge per `align`. Returns the line height.
    pub fn text(
        &mut self,
        text: &str,
        x: f32,
        y: f32,
        size: f32,
        color: Rgb<u8>,
        align: Align,
    ) -> f32 {
        let scale = PxScale::from(size);
        let f = self.font.as_scaled(scale);
        let width = self.text_width(text, size);
        let mut caret = match align {
            Align::Left => x,
            Align::Center => x - width / 2.0,
            Align::Right => x - width,
        };
        let baseline = y + f.ascent();
        let mut prev = None;
        let (cw, ch) = (self.img.width() as i64, self.img.height() as i64);
        for c in text.chars() {
            let id = f.glyph_id(c);
            if let Some(p) = prev {
                caret += f.kern(p, id);
            }
            let glyph = id.with_scale_and_position(scale, point(caret, baseline));
            caret += f.h_advance(id);
            prev = Some(id);
            let Some(outlined) = self.font.outline_glyph(glyph) else {
                continue;
            };
            let b = outlined.px_bounds();
            let img = &mut self.img;
            outlined.draw(|gx, gy, cov| {
                let px = b.min.x as i64 + i64::from(gx);
                let py = b.min.y as i64 + i64::from(gy);
                if px < 0 || py < 0 || px >= cw || py >= ch {
                    return;
                }
                let dst = img.get_pixel_mut(px as u32, py as u32);
                let a = cov.clamp(0.0, 1.0);
                for k in 0..3 {
                    let v = f32::from(dst.0[k]) * (1.0 - a) + f32::from(color.0[k]) * a;
                    dst.0[k] = v.round() as u8;
                }
            });
        }
        f.height()
    }

    /// A vertical colorbar: `cmap` from 1 (top) to 0 (bottom) in a `w` x `h` box at `(x, y)`
    /// with a thin frame, and tick marks with labels `(value in [0, 1], text)` to its right.
    #[allow(clippy::too_many_arguments)]
    pub fn colorbar(
        &mut self,
        cmap: Colormap,
        x: i64,
        y: i64,
        w: u32,
        h: u32,
        ticks: &[(f32, String)],
        font_size: f32,
        line: u32,
    ) {
        self.blit(&cmap.bar(w, h), x, y);
        self.outline(
            x - i64::from(line),
            y - i64::from(line),
            w + 2 * line,
            h + 2 * line,
            line,
            INK,
        );
        let tick_len = (w / 3).max(2);
        for (v, label) in ticks {
            let ty = y + ((1.0 - v.clamp(0.0, 1.0)) * (h as f32 - line as f32)).round() as i64;
            self.fill(x + i64::from(w) + i64::from(line), ty, tick_len, line, INK);
            let tx = x as f32 + (w + line + tick_len) as f32 + font_size * 0.3;
            // Centre the digits (cap height ~0.73 em) on the tick.
            let ascent = self.font.as_scaled(PxScale::from(font_size)).ascent();
            let top = ty as f32 + line as f32 / 2.0 + 0.365 * font_size - ascent;
            self.text(label, tx, top, font_size, INK, Align::Left);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_draws_ink_and_measures() {
        let mut c = Canvas::new(200, 40);
        c.text("Egyptian cat", 5.0, 5.0, 18.0, INK, Align::Left);
        let dark = c.img.pixels().filter(|p| p.0[0] < 128).count();
        assert!(dark > 50, "{dark} dark pixels");
        assert!(c.text_width("Egyptian cat", 18.0) > c.text_width("cat", 18.0));
        let w = c.text_width("ab", 20.0);
        assert!((c.text_width("ab", 40.0) - 2.0 * w).abs() < 0.5);
    }

    #[test]
    fn colorbar_runs_top_high() {
        let mut c = Canvas::new(60, 110);
        c.colorbar(
            Colormap::Gray,
            5,
            5,
            10,
            100,
            &[(0.0, "0".into()), (1.0, "1".into())],
            10.0,
            1,
        );
        assert!(c.img.get_pixel(8, 6).0[0] > 240);
        assert!(c.img.get_pixel(8, 103).0[0] < 15);
    }
}
