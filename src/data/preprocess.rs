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
//! One deliberate difference: [`load_rgb`] applies the EXIF orientation (Pillow's `open` does
//! not), so photos taken in portrait come out upright.

use std::io::Cursor;
use std::path::Path;

use candle_core::{Device, Tensor};
use image::metadata::Orientation;
use image::{DynamicImage, ImageDecoder, ImageReader, RgbImage};

use crate::{Error, Result};

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
    /// a `crop` x `crop` uint8 RGB image.
    pub fn apply(&self, img: &RgbImage) -> RgbImage {
        let (w, h) = shorter_side_size(img.width(), img.height(), self.resize_shorter);
        let resized = resize_bilinear(img, w, h);
        center_crop(&resized, self.crop)
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

/// Decodes the image file at `path` to 8-bit RGB, like `PIL.Image.open(path).convert("RGB")`.
///
/// The format is guessed from the content, not the extension (PNG, JPEG, GIF, BMP, TIFF, WebP).
/// Grayscale is replicated to three channels; alpha is dropped without compositing (as Pillow's
/// `convert("RGB")` does); 16-bit samples keep their high byte (Pillow's `RGB;16B` unpacking;
/// for 16-bit grayscale Pillow would clip instead, which is not reproduced). The EXIF
/// orientation, if any, is applied (Pillow's `open` would not). Every error names the file: a
/// missing or unreadable file gives [`Error::Io`], an unknown format or a corrupt or truncated
/// image gives [`Error::Image`].
pub fn load_rgb(path: &Path) -> Result<RgbImage> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    decode_rgb(&bytes).map_err(|reason| Error::image(path, reason))
}

/// Decodes an in-memory image file to RGB; the error is the reason, without a path.
fn decode_rgb(bytes: &[u8]) -> std::result::Result<RgbImage, String> {
    let reader = ImageReader::new(Cursor::new(bytes))
        .with_guessed_format()
        .map_err(|e| e.to_string())?;
    if reader.format().is_none() {
        return Err("not an image (unrecognised file format)".to_string());
    }
    let mut decoder = reader.into_decoder().map_err(|e| e.to_string())?;
    // A broken EXIF block is not worth failing the image for; real decoding errors surface below.
    let orientation = decoder.orientation().unwrap_or(Orientation::NoTransforms);
    let mut img = DynamicImage::from_decoder(decoder).map_err(|e| e.to_string())?;
    orient(&mut img, orientation);
    Ok(to_rgb_like_pil(img))
}

/// Applies an EXIF orientation so the image is displayed upright.
fn orient(img: &mut DynamicImage, orientation: Orientation) {
    img.apply_orientation(orientation);
}

/// `convert("RGB")`: replicate gray, drop alpha, 16-bit -> high byte, floats via `image`.
fn to_rgb_like_pil(img: DynamicImage) -> RgbImage {
    fn high_bytes<const C: usize>(w: u32, h: u32, samples: &[u16]) -> RgbImage {
        let data = samples
            .chunks_exact(C)
            .flat_map(|px| {
                let hi = |v: u16| (v >> 8) as u8;
                match C {
                    1 | 2 => [hi(px[0]); 3],
                    _ => [hi(px[0]), hi(px[1]), hi(px[2])],
                }
            })
            .collect();
        RgbImage::from_raw(w, h, data).expect("buffer size matches the dimensions")
    }
    let (w, h) = (img.width(), img.height());
    match img {
        DynamicImage::ImageRgb8(rgb) => rgb,
        DynamicImage::ImageLuma16(b) => high_bytes::<1>(w, h, b.as_raw()),
        DynamicImage::ImageLumaA16(b) => high_bytes::<2>(w, h, b.as_raw()),
        DynamicImage::ImageRgb16(b) => high_bytes::<3>(w, h, b.as_raw()),
        DynamicImage::ImageRgba16(b) => high_bytes::<4>(w, h, b.as_raw()),
        other => other.into_rgb8(),
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
/// as Rust's `as` does).
fn bilinear_taps(in_size: u32, out_size: u32) -> Taps {
    const SUPPORT: f64 = 1.0;
    // Pillow passes the box as C floats: in0 = 0.0f, in1 = in_size.
    let (in0, in1) = (0.0f32, in_size as f32);
    let scale = f64::from(in1 - in0) / f64::from(out_size);
    let filterscale = if scale < 1.0 { 1.0 } else { scale };
    let support = SUPPORT * filterscale;
    let ksize = support.ceil() as usize * 2 + 1;
    let ss = 1.0 / filterscale;
    let in_size = in_size as i32;

    let out = out_size as usize;
    let mut taps = Taps {
        ksize,
        start: Vec::with_capacity(out),
        len: Vec::with_capacity(out),
        weights: vec![0; out * ksize],
    };
    let mut k = vec![0f64; ksize];
    for xx in 0..out {
        let center = f64::from(in0) + (xx as f64 + 0.5) * scale;
        let xmin = ((center - support + 0.5) as i32).max(0);
        let xmax = ((center + support + 0.5) as i32).min(in_size);
        let n = ((xmax - xmin).max(0) as usize).min(ksize);
        let mut ww = 0.0;
        for (x, kx) in k[..n].iter_mut().enumerate() {
            let w = bilinear_filter((f64::from(x as i32 + xmin) - center + 0.5) * ss);
            *kx = w;
            ww += w;
        }
        let fixed = &mut taps.weights[xx * ksize..][..n];
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
    let (in_w, in_h) = img.dimensions();
    if (in_w, in_h) == (width, height) {
        return img.clone();
    }
    if width == 0 || height == 0 {
        return RgbImage::new(width, height);
    }
    let need_horizontal = in_w != width;
    let need_vertical = in_h != height;
    let taps_h = bilinear_taps(in_w, width);
    let taps_v = bilinear_taps(in_h, height);

    let (w_out, h_out) = (width as usize, height as usize);
    let src = img.as_raw();
    let mut out = vec![0u8; w_out * h_out * 3];
    if need_horizontal {
        // Only the source rows the vertical pass reads (Pillow's ybox_first .. ybox_last).
        let first = taps_v.start[0];
        let last = taps_v.start[h_out - 1] + taps_v.len[h_out - 1];
        let last = last.max(first);
        if need_vertical {
            let mut temp = vec![0u8; w_out * (last - first) * 3];
            resample_horizontal(src, in_w as usize, first..last, &taps_h, &mut temp);
            let shifted = Taps {
                start: taps_v.start.iter().map(|s| s - first).collect(),
                ..taps_v
            };
            resample_vertical(&temp, w_out, &shifted, &mut out);
        } else {
            resample_horizontal(src, in_w as usize, 0..in_h as usize, &taps_h, &mut out);
        }
    } else {
        resample_vertical(src, w_out, &taps_v, &mut out);
    }
    RgbImage::from_raw(width, height, out).expect("buffer size matches the dimensions")
}

#[cfg(test)]
mod tests {
    use super::*;
    use image::{ImageBuffer, ImageEncoder, Luma, Rgb, Rgba};
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
    fn bilinear_taps_match_pillow_by_hand() {
        // 4 -> 2: scale 2, support 2; output 0 has centre 1.0, taps at x = 0, 1, 2 with
        // triangle weights (0.75, 0.75, 0.25) / 1.75 (x = 3 has weight 0 after truncation).
        let t = bilinear_taps(4, 2);
        let (start, k) = t.of(0);
        assert_eq!(start, 0);
        let expect = [0.75 / 1.75, 0.75 / 1.75, 0.25 / 1.75]
            .map(|v: f64| (0.5 + v * f64::from(1 << 22)) as i32);
        assert_eq!(&k[..3], &expect);
        // Upscaling 2 -> 4: plain (non-widened) bilinear with edge clamping.
        let t = bilinear_taps(2, 4);
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
    fn grayscale_and_rgba_png_become_rgb() {
        let dir = tempfile::tempdir().unwrap();
        let gray_path = dir.path().join("gray.png");
        ImageBuffer::from_fn(5, 4, |x, y| Luma([(x * 40 + y) as u8]))
            .save(&gray_path)
            .unwrap();
        let gray = load_rgb(&gray_path).unwrap();
        assert_eq!(gray.dimensions(), (5, 4));
        assert_eq!(gray.get_pixel(3, 2), &Rgb([122, 122, 122]));

        let rgba_path = dir.path().join("rgba.png");
        ImageBuffer::from_fn(5, 4, |x, _| Rgba([10, 20, 30, (x * 60) as u8]))
            .save(&rgba_path)
            .unwrap();
        let rgba = load_rgb(&rgba_path).unwrap();
        // Alpha dropped, not composited: colour unchanged even where fully transparent.
        assert!(rgba.pixels().all(|p| p.0 == [10, 20, 30]));

        // 16-bit RGB keeps the high byte like Pillow (0x80FF -> 0x80, not rounded to 0x81).
        let rgb16_path = dir.path().join("rgb16.png");
        ImageBuffer::from_pixel(2, 2, Rgb([0x80FFu16, 0xFFFF, 0x00FF]))
            .save(&rgb16_path)
            .unwrap();
        assert!(
            load_rgb(&rgb16_path)
                .unwrap()
                .pixels()
                .all(|p| p.0 == [0x80, 0xFF, 0])
        );
    }

    #[test]
    fn format_comes_from_content_not_extension() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("actually_a_png.jpg");
        RgbImage::from_pixel(3, 2, Rgb([1, 2, 3]))
            .save_with_format(&path, image::ImageFormat::Png)
            .unwrap();
        assert_eq!(
            load_rgb(&path).unwrap(),
            RgbImage::from_pixel(3, 2, Rgb([1, 2, 3]))
        );
    }

    /// A minimal big-endian TIFF/EXIF block with one entry: Orientation (0x0112) = `value`.
    fn exif_orientation_block(value: u16) -> Vec<u8> {
        let mut b = b"MM\0\x2a".to_vec();
        b.extend_from_slice(&8u32.to_be_bytes()); // IFD0 offset
        b.extend_from_slice(&1u16.to_be_bytes()); // one entry
        b.extend_from_slice(&0x0112u16.to_be_bytes()); // tag
        b.extend_from_slice(&3u16.to_be_bytes()); // SHORT
        b.extend_from_slice(&1u32.to_be_bytes()); // count
        b.extend_from_slice(&value.to_be_bytes());
        b.extend_from_slice(&[0, 0]); // padding of the value field
        b.extend_from_slice(&0u32.to_be_bytes()); // no next IFD
        b
    }

    #[test]
    fn jpeg_exif_orientation_is_applied() {
        // 32x16: left half red, right half blue. Orientation 6 = rotate 90 degrees clockwise,
        // so the upright image is 16x32 with red on top.
        let img = RgbImage::from_fn(32, 16, |x, _| {
            if x < 16 {
                Rgb([255, 0, 0])
            } else {
                Rgb([0, 0, 255])
            }
        });
        let mut bytes = Vec::new();
        let mut enc = image::codecs::jpeg::JpegEncoder::new_with_quality(&mut bytes, 95);
        enc.set_exif_metadata(exif_orientation_block(6)).unwrap();
        enc.write_image(img.as_raw(), 32, 16, image::ExtendedColorType::Rgb8)
            .unwrap();
        assert!(
            bytes.windows(6).any(|w| w == b"Exif\0\0"),
            "no APP1 Exif segment written"
        );

        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("rotated.jpg");
        std::fs::write(&path, &bytes).unwrap();
        let loaded = load_rgb(&path).unwrap();
        assert_eq!(loaded.dimensions(), (16, 32));
        let top = loaded.get_pixel(8, 4).0;
        let bottom = loaded.get_pixel(8, 28).0;
        assert!(top[0] > 200 && top[2] < 60, "top should be red: {top:?}");
        assert!(
            bottom[2] > 200 && bottom[0] < 60,
            "bottom should be blue: {bottom:?}"
        );
    }

    #[test]
    fn orient_helper_rotates() {
        let mut img =
            DynamicImage::ImageRgb8(RgbImage::from_fn(3, 2, |x, y| Rgb([x as u8, y as u8, 0])));
        orient(&mut img, Orientation::from_exif(6).unwrap());
        let rgb = img.into_rgb8();
        assert_eq!(rgb.dimensions(), (2, 3));
        // Clockwise: the old bottom-left pixel (0, 1) becomes the new top-left.
        assert_eq!(rgb.get_pixel(0, 0), &Rgb([0, 1, 0]));
        assert_eq!(rgb.get_pixel(1, 0), &Rgb([0, 0, 0]));
    }

    fn assert_image_error_names(err: Error, path: &Path) {
        let msg = err.to_string();
        assert!(
            matches!(err, Error::Image { .. }),
            "expected Error::Image, got {err:?}"
        );
        assert!(msg.contains(&path.display().to_string()), "{msg}");
    }

    #[test]
    fn truncated_and_fake_images_are_image_errors_naming_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let png = std::fs::read(repo("assets/images/chelsea.png")).unwrap();
        let truncated = dir.path().join("truncated.png");
        std::fs::write(&truncated, &png[..png.len() / 2]).unwrap();
        let err = load_rgb(&truncated).unwrap_err();
        eprintln!("truncated: {err}");
        assert_image_error_names(err, &truncated);

        let text = dir.path().join("notes.png");
        std::fs::write(&text, "this is not an image\n").unwrap();
        let err = load_rgb(&text).unwrap_err();
        eprintln!("text: {err}");
        assert_image_error_names(err, &text);

        let empty = dir.path().join("empty.jpg");
        std::fs::write(&empty, b"").unwrap();
        assert_image_error_names(load_rgb(&empty).unwrap_err(), &empty);
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
