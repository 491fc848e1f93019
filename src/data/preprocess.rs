//! Decoding and evaluation preprocessing, exactly like the PyTorch reference.
//!
//! The reference (see `tests/fixtures/README.md`, "Preprocessing") is
//!
//! 1. `PIL.Image.open(path).convert("RGB")`;
//! 2. resize with `Image.BILINEAR` so the shorter side is 256 and the long side is
//!    `round(256 * long / short)` (Python `round`, half to even);
//! 3. centre crop 224 at `left = round((W - 224) / 2)`, `top = round((H - 224) / 2)`;
//! 4. `x / 255`, `(x - mean) / std` per channel, HWC -> CHW, batch dimension.
//!
//! [`resize_bilinear`] is a port of Pillow's `libImaging/Resample.c` (two separable passes,
//! horizontal first, coefficients computed in `f64`, normalised, converted to 22-bit fixed
//! point and accumulated in `i32`), so it produces Pillow's uint8 output bit for bit; the
//! fixture crops of `chelsea.png` and `coffee.png` are reproduced with zero differing levels.
//!
//! Decoding itself ([`load_rgb`]) lives in [`super::decode`]. One deliberate difference:
//! [`load_rgb`] applies the EXIF orientation (Pillow's `open` does
//! not), so photos taken in portrait come out upright.

use std::path::Path;

use candle_core::{Device, Tensor};
use image::RgbImage;

pub use super::decode::load_rgb;
use crate::Result;

/// How an image becomes a network input (one model's evaluation preprocessing).
///
/// [`EvalTransform::apply`] resizes so the shorter side is `resize_shorter` and centre-crops a
/// `crop` x `crop` square; [`EvalTransform::to_tensor`] scales to `[0, 1]` and normalises each
/// channel with `(x - mean) / std`, giving a `[1, 3, crop, crop]` f32 tensor.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct EvalTransform {
    /// Target length of the shorter side after resizing (e.g. 256).
    pub resize_shorter: u32,
    /// Side of the square centre crop (e.g. 224).
    pub crop: u32,
    /// Per-channel (R, G, B) mean subtracted from the `[0, 1]` pixel values.
    pub mean: [f32; 3],
    /// Per-channel (R, G, B) standard deviation the centred values are divided by.
    pub std: [f32; 3],
}

impl EvalTransform {
    /// The torchvision ImageNet evaluation transform: resize 256, crop 224,
    /// mean (0.485, 0.456, 0.406), std (0.229, 0.224, 0.225).
    pub fn imagenet() -> Self {
        EvalTransform {
            resize_shorter: 256,
            crop: 224,
            mean: [0.485, 0.456, 0.406],
            std: [0.229, 0.224, 0.225],
        }
    }

    /// Resizes `img` (any size) so its shorter side is `resize_shorter`
    /// ([`shorter_side_size`], [`resize_bilinear`]) and centre-crops it ([`center_crop`]):
    /// a `crop` x `crop` uint8 RGB image. Only the cropped window of the resized image is
    /// computed ([`resize_bilinear_window`]), so a very long thin image costs no more than a
    /// square one.
    pub fn apply(&self, img: &RgbImage) -> RgbImage {
        let (w, h) = shorter_side_size(img.width(), img.height(), self.resize_shorter);
        let (left, top) = center_crop_offset(w, h, self.crop);
        let window = |offset: i64, side: u32| {
            let start = offset.clamp(0, i64::from(side)) as u32;
            let end = (offset + i64::from(self.crop)).clamp(0, i64::from(side)) as u32;
            start..end.max(start)
        };
        let (xs, ys) = (window(left, w), window(top, h));
        let resized = resize_bilinear_window(img, (w, h), xs.clone(), ys.clone());
        let mut out = RgbImage::new(self.crop, self.crop);
        // The window lands at its place in the crop; outside the resized image stays black.
        image::imageops::replace(
            &mut out,
            &resized,
            i64::from(xs.start) - left,
            i64::from(ys.start) - top,
        );
        out
    }

    /// Normalises an already transformed image (the output of [`EvalTransform::apply`]) into a
    /// `[1, 3, H, W]` f32 tensor, i.e. `[1, 3, crop, crop]`. The image is not resized here.
    pub fn to_tensor(&self, img: &RgbImage, device: &Device) -> Result<Tensor> {
        Ok(normalize_to_tensor(img, self.mean, self.std, device)?.unsqueeze(0)?)
    }

    /// [`EvalTransform::apply`] then [`EvalTransform::to_tensor`] on an in-memory image of any
    /// size: `[1, 3, crop, crop]` f32.
    pub fn process(&self, img: &RgbImage, device: &Device) -> Result<Tensor> {
        self.to_tensor(&self.apply(img), device)
    }

    /// Decodes the image file at `path` ([`load_rgb`]) and preprocesses it:
    /// `[1, 3, crop, crop]` f32.
    pub fn load(&self, path: &Path, device: &Device) -> Result<Tensor> {
        self.process(&load_rgb(path)?, device)
    }
}

/// Python's `round(x)` (round half to even), as an integer.
pub fn python_round(x: f64) -> i64 {
    x.round_ties_even() as i64
}

/// Output `(width, height)` when resizing so the shorter side becomes `shorter`: the long side is
/// `round(shorter * long / short)` with Python rounding (chelsea 451x300 -> 385x256, where
/// torchvision's `Resize(256)` would truncate to 384). A square stays square; an empty image
/// gives `(0, 0)`.
pub fn shorter_side_size(width: u32, height: u32, shorter: u32) -> (u32, u32) {
    if width == 0 || height == 0 {
        return (0, 0);
    }
    let long = |long: u32, short: u32| {
        let v = python_round(f64::from(shorter) * f64::from(long) / f64::from(short));
        v.clamp(0, i64::from(u32::MAX)) as u32
    };
    if width <= height {
        (shorter, long(height, width))
    } else {
        (long(width, height), shorter)
    }
}

/// Top-left corner `(left, top)` of the centred `size` x `size` crop of a `width` x `height`
/// image: `round((width - size) / 2)`, `round((height - size) / 2)` with Python rounding
/// (385x256 -> (80, 16)). On an axis where the image is smaller than `size` the Python value is
/// negative; it is returned as 0 here (see [`center_crop`] for how such images are cropped).
pub fn center_crop_box(width: u32, height: u32, size: u32) -> (u32, u32) {
    let (left, top) = center_crop_offset(width, height, size);
    (left.max(0) as u32, top.max(0) as u32)
}

/// The signed Python offsets `round((dim - size) / 2)`.
fn center_crop_offset(width: u32, height: u32, size: u32) -> (i64, i64) {
    let off = |dim: u32| python_round((f64::from(dim) - f64::from(size)) / 2.0);
    (off(width), off(height))
}

/// The centred `size` x `size` crop of `img`, at [`center_crop_box`].
///
/// Callers resize first so the image is at least `size` on both sides (as
/// [`EvalTransform::apply`] does). If it is smaller anyway this does not panic: like Pillow's
/// `img.crop((left, top, left + size, top + size))` with the (negative) Python offsets, the part
/// of the square outside the image is black.
pub fn center_crop(img: &RgbImage, size: u32) -> RgbImage {
    let (w, h) = img.dimensions();
    let (left, top) = center_crop_offset(w, h, size);
    let mut out = RgbImage::new(size, size);
    let (w, h, size_i) = (i64::from(w), i64::from(h), i64::from(size));
    // Source columns [x0, x1) land at destination columns [x0 - left, x1 - left).
    let x0 = left.max(0);
    let x1 = (left + size_i).min(w);
    if x1 <= x0 {
        return out;
    }
    let n = (x1 - x0) as usize * 3;
    let (src, dst) = (img.as_raw(), &mut *out);
    for y in top.max(0)..(top + size_i).min(h) {
        let s = (y * w + x0) as usize * 3;
        let d = ((y - top) * size_i + (x0 - left)) as usize * 3;
        dst[d..d + n].copy_from_slice(&src[s..s + n]);
    }
    out
}

/// `x / 255` then `(x - mean[c]) / std[c]` per channel, HWC -> CHW: a `[3, H, W]` f32 tensor.
/// The arithmetic is f32, as in torchvision (`to_tensor` then `Normalize`).
pub fn normalize_to_tensor(
    img: &RgbImage,
    mean: [f32; 3],
    std: [f32; 3],
    device: &Device,
) -> Result<Tensor> {
    let (w, h) = img.dimensions();
    let plane = w as usize * h as usize;
    // 256 possible values per channel: a lookup table gives the same f32 results, faster.
    let lut: [[f32; 256]; 3] =
        std::array::from_fn(|c| std::array::from_fn(|v| (v as f32 / 255.0 - mean[c]) / std[c]));
    let mut data = vec![0f32; 3 * plane];
    let (r, rest) = data.split_at_mut(plane);
    let (g, b) = rest.split_at_mut(plane);
    for (i, px) in img.as_raw().chunks_exact(3).enumerate() {
        r[i] = lut[0][px[0] as usize];
        g[i] = lut[1][px[1] as usize];
        b[i] = lut[2][px[2] as usize];
    }
    Ok(Tensor::from_vec(data, (3, h as usize, w as usize), device)?)
}

/// Pillow's fixed-point precision: 32 bits - 8 for the result - 2 for overflow headroom.
const PRECISION_BITS: u32 = 32 - 8 - 2;
/// Rounding offset every accumulator starts from.
const HALF: i32 = 1 << (PRECISION_BITS - 1);

/// The fixed-point filter taps of one axis: output pixel `i` reads input pixels
/// `start[i] .. start[i] + len[i]` with weights `weights[i * ksize ..][.. len[i]]`.
struct Taps {
    ksize: usize,
    start: Vec<usize>,
    len: Vec<usize>,
    weights: Vec<i32>,
}

impl Taps {
    fn of(&self, i: usize) -> (usize, &[i32]) {
        let k = &self.weights[i * self.ksize..][..self.len[i]];
        (self.start[i], k)
    }
}

/// Pillow's triangle filter (`bilinear_filter`, support 1).
fn bilinear_filter(x: f64) -> f64 {
    let x = x.abs();
    if x < 1.0 { 1.0 - x } else { 0.0 }
}

/// Port of Pillow's `precompute_coeffs` + `normalize_coeffs_8bpc` for `Image.BILINEAR` and the
/// full box `(0, in_size)`, operation for operation (the C `(int)` casts truncate toward zero,
/// as Rust's `as` does), for the output pixels `outputs` of the `out_size` ones (each output
/// pixel's taps depend only on its own index, so a window is computed exactly as in full).
fn bilinear_taps(in_size: u32, out_size: u32, outputs: std::ops::Range<u32>) -> Taps {
    const SUPPORT: f64 = 1.0;
    // Pillow passes the box as C floats: in0 = 0.0f, in1 = in_size.
    let (in0, in1) = (0.0f32, in_size as f32);
    let scale = f64::from(in1 - in0) / f64::from(out_size);
    let filterscale = if scale < 1.0 { 1.0 } else { scale };
    let support = SUPPORT * filterscale;
    let ksize = support.ceil() as usize * 2 + 1;
    let ss = 1.0 / filterscale;
    let in_size = in_size as i32;

    let out = outputs.len();
    let mut taps = Taps {
        ksize,
        start: Vec::with_capacity(out),
        len: Vec::with_capacity(out),
        weights: vec![0; out * ksize],
    };
    let mut k = vec![0f64; ksize];
    for (i, xx) in outputs.enumerate() {
        let center = f64::from(in0) + (f64::from(xx) + 0.5) * scale;
        let xmin = ((center - support + 0.5) as i32).max(0);
        let xmax = ((center + support + 0.5) as i32).min(in_size);
        let n = ((xmax - xmin).max(0) as usize).min(ksize);
        let mut ww = 0.0;
        for (x, kx) in k[..n].iter_mut().enumerate() {
            let w = bilinear_filter((f64::from(x as i32 + xmin) - center + 0.5) * ss);
            *kx = w;
            ww += w;
        }
        let fixed = &mut taps.weights[i * ksize..][..n];
        for (f, &kx) in fixed.iter_mut().zip(&k[..n]) {
            let kx = if ww != 0.0 { kx / ww } else { kx };
            let scaled = kx * f64::from(1i32 << PRECISION_BITS);
            *f = if kx < 0.0 {
                (-0.5 + scaled) as i32
            } else {
                (0.5 + scaled) as i32
            };
        }
        taps.start.push(xmin as usize);
        taps.len.push(n);
    }
    taps
}

/// Pillow's `clip8`: drop the fraction bits and saturate to `0..=255`.
#[inline]
fn clip8(acc: i32) -> u8 {
    (acc >> PRECISION_BITS).clamp(0, 255) as u8
}

/// Horizontal pass over source rows `rows` of an RGB buffer `src_width` pixels wide; `dst` holds
/// `rows.len()` rows of `taps.len.len()` pixels.
fn resample_horizontal(
    src: &[u8],
    src_width: usize,
    rows: std::ops::Range<usize>,
    taps: &Taps,
    dst: &mut [u8],
) {
    let out_w = taps.start.len();
    if out_w == 0 {
        return;
    }
    let src_rows =
        src[rows.start * src_width * 3..rows.end * src_width * 3].chunks_exact(src_width * 3);
    for (src_row, dst_row) in src_rows.zip(dst.chunks_exact_mut(out_w * 3)) {
        for (xx, out_px) in dst_row.chunks_exact_mut(3).enumerate() {
            let (start, k) = taps.of(xx);
            let pixels = &src_row[start * 3..(start + k.len()) * 3];
            let (mut s0, mut s1, mut s2) = (HALF, HALF, HALF);
            for (px, &w) in pixels.chunks_exact(3).zip(k) {
                s0 += i32::from(px[0]) * w;
                s1 += i32::from(px[1]) * w;
                s2 += i32::from(px[2]) * w;
            }
            out_px[0] = clip8(s0);
            out_px[1] = clip8(s1);
            out_px[2] = clip8(s2);
        }
    }
}

/// Vertical pass: `src` has rows of `width` RGB pixels, `dst` has `taps.len.len()` such rows.
/// Integer sums do not depend on the order, so whole rows are accumulated at once.
fn resample_vertical(src: &[u8], width: usize, taps: &Taps, dst: &mut [u8]) {
    let row_len = width * 3;
    if row_len == 0 {
        return;
    }
    let mut acc = vec![HALF; row_len];
    for (yy, dst_row) in dst.chunks_exact_mut(row_len).enumerate() {
        let (start, k) = taps.of(yy);
        acc.fill(HALF);
        for (j, &w) in k.iter().enumerate() {
            let src_row = &src[(start + j) * row_len..][..row_len];
            for (a, &p) in acc.iter_mut().zip(src_row) {
                *a += i32::from(p) * w;
            }
        }
        for (d, &a) in dst_row.iter_mut().zip(&acc) {
            *d = clip8(a);
        }
    }
}

/// Resizes to `width` x `height` exactly like Pillow's `img.resize((width, height),
/// Image.BILINEAR)` on an RGB image: a triangle filter widened by the scale factor when
/// downscaling (antialiasing), applied horizontally then vertically in 22-bit fixed point,
/// rounded to uint8. Identical sizes return a copy. Filter coefficients are computed once per
/// axis; cost is about `(in_h * out_w + out_h * out_w) * taps` multiply-adds per channel.
pub fn resize_bilinear(img: &RgbImage, width: u32, height: u32) -> RgbImage {
    if img.dimensions() == (width, height) {
        return img.clone();
    }
    resize_bilinear_window(img, (width, height), 0..width, 0..height)
}

/// The columns `xs` and rows `ys` of [`resize_bilinear`]`(img, size.0, size.1)`, computed
/// without the rest of the resized image: the same pixels, bit for bit, with memory and time
/// proportional to the window (a 1 x 20000 image resized so its shorter side is 256 would be
/// 256 x 5120000 pixels; its 224 x 224 centre crop is all a model needs). `xs` and `ys` must lie
/// within `size`.
#[allow(
    clippy::expect_used,
    reason = "`out` is allocated as w_out x h_out x 3"
)]
pub fn resize_bilinear_window(
    img: &RgbImage,
    size: (u32, u32),
    xs: std::ops::Range<u32>,
    ys: std::ops::Range<u32>,
) -> RgbImage {
    let (in_w, in_h) = img.dimensions();
    let (width, height) = size;
    assert!(
        xs.end <= width && ys.end <= height,
        "window outside the resized image"
    );
    let (w_out, h_out) = (xs.len(), ys.len());
    if w_out == 0 || h_out == 0 {
        return RgbImage::new(w_out as u32, h_out as u32);
    }
    let need_horizontal = in_w != width;
    let need_vertical = in_h != height;
    let src = img.as_raw();
    let mut out = vec![0u8; w_out * h_out * 3];
    // Without a resize on an axis, the window is a plain crop on that axis.
    let taps_h = need_horizontal.then(|| bilinear_taps(in_w, width, xs.clone()));
    let taps_v = if need_vertical {
        bilinear_taps(in_h, height, ys.clone())
    } else {
        identity_taps(ys.clone())
    };
    // Only the source rows the vertical pass reads (Pillow's ybox_first .. ybox_last).
    let first = taps_v.start[0];
    let last = (taps_v.start[h_out - 1] + taps_v.len[h_out - 1]).max(first);
    let shifted = Taps {
        start: taps_v.start.iter().map(|s| s - first).collect(),
        ..taps_v
    };
    let rows = match &taps_h {
        Some(taps_h) => {
            let mut temp = vec![0u8; w_out * (last - first) * 3];
            resample_horizontal(src, in_w as usize, first..last, taps_h, &mut temp);
            temp
        }
        None => {
            let (row, x0) = (in_w as usize * 3, xs.start as usize * 3);
            (first..last)
                .flat_map(|y| &src[y * row + x0..][..w_out * 3])
                .copied()
                .collect()
        }
    };
    resample_vertical(&rows, w_out, &shifted, &mut out);
    RgbImage::from_raw(w_out as u32, h_out as u32, out).expect("buffer size matches the dimensions")
}

/// Taps that copy rows `rows` unchanged (weight 1.0 in fixed point), for an axis not resized.
fn identity_taps(rows: std::ops::Range<u32>) -> Taps {
    Taps {
        ksize: 1,
        start: rows.clone().map(|r| r as usize).collect(),
        len: vec![1; rows.len()],
        weights: vec![1 << PRECISION_BITS; rows.len()],
    }
}

#[cfg(test)]
#[allow(
    clippy::disallowed_macros,
    reason = "tests print what they saw on failure"
)]
mod tests {
    use super::*;
    use crate::Error;
    use image::Rgb;
    use std::path::PathBuf;

    const LITE0_MEAN: [f32; 3] = [0.498; 3];
    const LITE0_STD: [f32; 3] = [0.502; 3];

    fn repo(rel: &str) -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join(rel)
    }

    fn lite0() -> EvalTransform {
        EvalTransform {
            resize_shorter: 256,
            crop: 224,
            mean: LITE0_MEAN,
            std: LITE0_STD,
        }
    }

    fn fixture_input(name: &str) -> Tensor {
        let path = repo(&format!("tests/fixtures/lite0_{name}.safetensors"));
        let mut tensors = candle_core::safetensors::load(&path, &Device::Cpu).unwrap();
        let input = tensors.remove("input").expect("fixture has `input`");
        assert_eq!(input.dims(), &[1, 3, 224, 224]);
        input
    }

    /// The uint8 crop recovered from the fixture's normalised `input` (NCHW -> HWC).
    fn fixture_crop(input: &Tensor) -> RgbImage {
        let v = input.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let plane = 224 * 224;
        let mut max_err = 0f32;
        let mut img = RgbImage::new(224, 224);
        for (i, px) in img.pixels_mut().enumerate() {
            for c in 0..3 {
                let level = (v[c * plane + i] * LITE0_STD[c] + LITE0_MEAN[c]) * 255.0;
                max_err = max_err.max((level - level.round()).abs());
                px.0[c] = level.round() as u8;
            }
        }
        assert!(max_err < 1e-3, "fixture levels are not integers: {max_err}");
        img
    }

    #[test]
    fn python_round_is_half_to_even() {
        assert_eq!(python_round(0.5), 0);
        assert_eq!(python_round(1.5), 2);
        assert_eq!(python_round(2.5), 2);
        assert_eq!(python_round(80.5), 80);
        assert_eq!(python_round(-0.5), 0);
        assert_eq!(python_round(-1.5), -2);
        assert_eq!(python_round(2.4999), 2);
        assert_eq!(python_round(384.8533), 385);
    }

    #[test]
    fn geometry_matches_reference() {
        assert_eq!(shorter_side_size(451, 300, 256), (385, 256));
        assert_eq!(shorter_side_size(600, 400, 256), (384, 256));
        assert_eq!(shorter_side_size(300, 451, 256), (256, 385));
        assert_eq!(shorter_side_size(500, 500, 256), (256, 256));
        assert_eq!(shorter_side_size(0, 10, 256), (0, 0));
        assert_eq!(center_crop_box(385, 256, 224), (80, 16));
        assert_eq!(center_crop_box(384, 256, 224), (80, 16));
        assert_eq!(center_crop_box(224, 224, 224), (0, 0));
        assert_eq!(center_crop_box(100, 300, 224), (0, 38));
    }

    #[test]
    fn center_crop_copies_the_box_and_pads_small_images() {
        let img = RgbImage::from_fn(7, 5, |x, y| Rgb([x as u8, y as u8, 100]));
        let c = center_crop(&img, 3);
        // left = round(4 / 2) = 2, top = round(2 / 2) = 1
        assert_eq!(c.get_pixel(0, 0), &Rgb([2, 1, 100]));
        assert_eq!(c.get_pixel(2, 2), &Rgb([4, 3, 100]));
        // Smaller than the crop: Pillow's crop at (round(-1/2), round(-3/2)) = (0, -2).
        let small = RgbImage::from_fn(3, 1, |x, _| Rgb([x as u8 + 1, 9, 9]));
        let c = center_crop(&small, 4);
        assert_eq!(c.dimensions(), (4, 4));
        assert_eq!(c.get_pixel(0, 2), &Rgb([1, 9, 9]));
        assert_eq!(c.get_pixel(2, 2), &Rgb([3, 9, 9]));
        assert_eq!(c.get_pixel(3, 2), &Rgb([0, 0, 0]));
        assert_eq!(c.get_pixel(0, 0), &Rgb([0, 0, 0]));
        assert_eq!(c.get_pixel(0, 3), &Rgb([0, 0, 0]));
        assert_eq!(center_crop(&RgbImage::new(0, 0), 2), RgbImage::new(2, 2));
    }

    #[test]
    fn resize_keeps_constants_and_identity() {
        let img = RgbImage::from_pixel(451, 300, Rgb([7, 128, 255]));
        for (w, h) in [(385, 256), (10, 3), (900, 601), (451, 17), (3, 300), (1, 1)] {
            let r = resize_bilinear(&img, w, h);
            assert_eq!(r.dimensions(), (w, h));
            assert!(r.pixels().all(|p| p.0 == [7, 128, 255]), "{w}x{h}");
        }
        let noise = RgbImage::from_fn(31, 17, |x, y| {
            Rgb([(x * 7 + y * 13) as u8, x as u8, y as u8])
        });
        assert_eq!(resize_bilinear(&noise, 31, 17), noise);
        assert_eq!(resize_bilinear(&noise, 0, 5).dimensions(), (0, 5));
    }

    #[test]
    fn apply_computes_only_the_crop_of_the_resize() {
        let t = EvalTransform {
            resize_shorter: 32,
            crop: 24,
            ..lite0()
        };
        let img = |w: u32, h: u32| {
            RgbImage::from_fn(w, h, |x, y| {
                Rgb([(x * 37 + y) as u8, (y * 11) as u8, (x ^ y) as u8])
            })
        };
        // Wide, tall, thin, small (crop larger than the resize) and square images.
        for (w, h) in [(90, 40), (40, 90), (1, 700), (700, 2), (32, 32), (7, 5)] {
            let src = img(w, h);
            let (rw, rh) = shorter_side_size(w, h, t.resize_shorter);
            let full = center_crop(&resize_bilinear(&src, rw, rh), t.crop);
            assert_eq!(t.apply(&src), full, "{w}x{h}");
        }
        let small = EvalTransform {
            resize_shorter: 16,
            ..t
        };
        let src = img(30, 20);
        let (rw, rh) = shorter_side_size(30, 20, 16);
        assert_eq!(
            small.apply(&src),
            center_crop(&resize_bilinear(&src, rw, rh), 24)
        );
    }

    #[test]
    fn bilinear_taps_match_pillow_by_hand() {
        // 4 -> 2: scale 2, support 2; output 0 has centre 1.0, taps at x = 0, 1, 2 with
        // triangle weights (0.75, 0.75, 0.25) / 1.75 (x = 3 has weight 0 after truncation).
        let t = bilinear_taps(4, 2, 0..2);
        let (start, k) = t.of(0);
        assert_eq!(start, 0);
        let expect = [0.75 / 1.75, 0.75 / 1.75, 0.25 / 1.75]
            .map(|v: f64| (0.5 + v * f64::from(1 << 22)) as i32);
        assert_eq!(&k[..3], &expect);
        // Upscaling 2 -> 4: plain (non-widened) bilinear with edge clamping.
        let t = bilinear_taps(2, 4, 0..4);
        let (start, k) = t.of(1);
        assert_eq!(start, 0);
        assert_eq!(
            k,
            &[
                (0.5 + 0.75 * 4194304.0) as i32,
                (0.5 + 0.25 * 4194304.0) as i32
            ]
        );
    }

    fn compare_with_fixture(name: &str) -> (u8, usize) {
        let path = repo(&format!("assets/images/{name}.png"));
        let img = load_rgb(&path).unwrap();
        let t = lite0();
        let (w, h) = shorter_side_size(img.width(), img.height(), t.resize_shorter);
        let (left, top) = center_crop_box(w, h, t.crop);
        let ours = t.apply(&img);
        let input = fixture_input(name);
        let theirs = fixture_crop(&input);
        let mut max_diff = 0u8;
        let mut differing = 0usize;
        for (a, b) in ours.as_raw().iter().zip(theirs.as_raw()) {
            let d = a.abs_diff(*b);
            max_diff = max_diff.max(d);
            differing += usize::from(d != 0);
        }
        eprintln!(
            "{name}: {}x{} -> {w}x{h}, crop at ({left}, {top}); vs fixture crop: max |diff| = {max_diff} \
             levels, {differing} of {} samples differ",
            img.width(),
            img.height(),
            ours.as_raw().len()
        );

        let tensor = t.load(&path, &Device::Cpu).unwrap();
        assert_eq!(tensor.dims(), &[1, 3, 224, 224]);
        let tdiff = (&tensor - &input)
            .unwrap()
            .abs()
            .unwrap()
            .flatten_all()
            .unwrap()
            .max(0)
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        eprintln!("{name}: load() vs fixture `input`: max |diff| = {tdiff:e}");
        // One level is 1 / (255 * 0.502) = 7.8e-3 in normalised units; f32 rounding aside.
        let bound = f32::from(max_diff) / (255.0 * 0.502) + 1e-6;
        assert!(tdiff <= bound, "{name}: tensor diff {tdiff} > {bound}");
        if max_diff == 0 {
            // Same uint8 levels and the same f32 operations as torchvision: bit-identical.
            assert_eq!(
                tdiff, 0.0,
                "{name}: identical crops but tensor diff {tdiff}"
            );
        }
        (max_diff, differing)
    }

    #[test]
    fn chelsea_matches_pil_exactly() {
        let (max_diff, differing) = compare_with_fixture("chelsea");
        assert_eq!((max_diff, differing), (0, 0));
    }

    #[test]
    fn coffee_matches_pil_exactly() {
        let (max_diff, differing) = compare_with_fixture("coffee");
        assert_eq!((max_diff, differing), (0, 0));
    }

    #[test]
    fn normalize_layout_and_values() {
        let img = RgbImage::from_fn(3, 2, |x, y| Rgb([x as u8 * 100, y as u8 * 255, 51]));
        let t = normalize_to_tensor(&img, [0.5, 0.0, 0.2], [0.5, 1.0, 0.1], &Device::Cpu).unwrap();
        assert_eq!(t.dims(), &[3, 2, 3]);
        let v = t.to_vec3::<f32>().unwrap();
        assert_eq!(v[0][1][2], (200.0 / 255.0 - 0.5) / 0.5);
        assert_eq!(v[1][1][0], 1.0);
        assert_eq!(v[1][0][0], 0.0);
        assert!((v[2][0][1] - 0.0).abs() < 1e-6);
        let batched = lite0().to_tensor(&img, &Device::Cpu).unwrap();
        assert_eq!(batched.dims(), &[1, 3, 2, 3]);
    }

    #[test]
    fn transform_serde_roundtrip() {
        let t = lite0();
        let json = serde_json::to_string(&t).unwrap();
        assert_eq!(serde_json::from_str::<EvalTransform>(&json).unwrap(), t);
    }

    #[test]
    fn missing_file_error_names_it() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("no_such_image.png");
        let err = load_rgb(&missing).unwrap_err();
        assert!(matches!(err, Error::Io { .. }), "{err:?}");
        assert!(
            err.to_string().contains(&missing.display().to_string()),
            "{err}"
        );
        let err = lite0().load(&missing, &Device::Cpu).unwrap_err();
        assert!(err.to_string().contains("no_such_image.png"), "{err}");
    }
}
