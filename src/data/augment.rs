//! Seeded data augmentation, like a Keras `Sequential` of `RandomFlip("horizontal")`,
//! `RandomRotation`, `RandomZoom`, `RandomTranslation` (all with `fill_mode="reflect"`) and
//! `RandomContrast` / `RandomBrightness`.
//!
//! [`Augment::apply`] draws the random parameters of one image from a `ChaCha8Rng` seeded with
//! the given `u64` ([`Augment::sample`]), so the same seed always gives the same image. The
//! flip, rotation, zoom and translation are combined into ONE inverse affine map (output pixel
//! centre -> input position), sampled bilinearly once, with reflect padding (`d c b a | a b c d |
//! d c b a`, like Keras' `fill_mode="reflect"`); brightness and contrast then act per channel.
//! Apply it to the already resized `size` x `size` image (after
//! [`TrainTransform::apply`](super::train_transform::TrainTransform::apply)) so it stays cheap:
//! one bilinear sample per output pixel.
//!
//! Per-sample seeds during training come from [`augment_seed`]`(seed, epoch, index)`.

use std::fmt;
use std::str::FromStr;

use image::RgbImage;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;

use crate::{Error, Result};

/// Which random augmentations are applied, and how strongly; `None` switches one off.
///
/// [`Augment::default`] has all of them on: flip, rotation 0.1 of a turn, zoom 0.2,
/// translation 0.1, brightness/contrast 0.2. [`Augment::none`] has all off (identity).
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Augment {
    /// Mirror left-right with probability 0.5.
    pub flip: bool,
    /// Rotate by a uniform angle in `[-f, f]` of a full turn (0.1 = +-36 degrees).
    pub rotation: Option<f32>,
    /// Zoom by a uniform factor: the sampled region is `1 + u` times the image, `u` in
    /// `[-f, f]` (positive zooms out, as in Keras); the aspect ratio is kept.
    pub zoom: Option<f32>,
    /// Shift horizontally and vertically by uniform fractions in `[-f, f]` of the width/height.
    pub translation: Option<f32>,
    /// Contrast factor uniform in `[1 - f, 1 + f]` around each channel's mean, and brightness
    /// shift uniform in `[-f, f]` of full scale.
    pub contrast: Option<f32>,
}

/// The names [`Augment::from_list`] accepts, in canonical order.
pub const AUGMENT_NAMES: [&str; 5] = ["flip", "rotate", "zoom", "translate", "contrast"];

impl Default for Augment {
    fn default() -> Self {
        Augment {
            flip: true,
            rotation: Some(Augment::DEFAULT_ROTATION),
            zoom: Some(Augment::DEFAULT_ZOOM),
            translation: Some(Augment::DEFAULT_TRANSLATION),
            contrast: Some(Augment::DEFAULT_CONTRAST),
        }
    }
}

impl Augment {
    /// Default rotation range: 0.1 of a turn either way.
    pub const DEFAULT_ROTATION: f32 = 0.1;
    /// Default zoom range: +-20 %.
    pub const DEFAULT_ZOOM: f32 = 0.2;
    /// Default translation range: +-10 % of the size.
    pub const DEFAULT_TRANSLATION: f32 = 0.1;
    /// Default brightness/contrast range: +-20 %.
    pub const DEFAULT_CONTRAST: f32 = 0.2;

    /// No augmentation at all: [`Augment::apply`] returns the image unchanged.
    pub fn none() -> Self {
        Augment {
            flip: false,
            rotation: None,
            zoom: None,
            translation: None,
            contrast: None,
        }
    }

    /// Whether every augmentation is switched off.
    pub fn is_none(&self) -> bool {
        *self == Augment::none()
    }

    /// Parses a comma-separated list such as `"flip,rotate,zoom,translate,contrast"` (the CLI's
    /// `--augment`). Listed augmentations are on (with the default strength), the others off;
    /// `name=fraction` sets the strength (`rotate=0.05`). Aliases: `rotation`, `translation`,
    /// `brightness` (= `contrast`). An empty list or `none` gives [`Augment::none`]. Unknown
    /// names or bad values give an error listing the valid names.
    pub fn from_list(list: &str) -> Result<Augment> {
        let mut aug = Augment::none();
        let items: Vec<&str> = list
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .collect();
        if items.len() == 1 && items[0].eq_ignore_ascii_case("none") {
            return Ok(aug);
        }
        let valid = || {
            format!(
                "valid augmentations: {} (optionally name=fraction, e.g. rotate=0.05), or none",
                AUGMENT_NAMES.join(", ")
            )
        };
        for item in items {
            let (name, value) = match item.split_once('=') {
                Some((n, v)) => (n.trim(), Some(v.trim())),
                None => (item, None),
            };
            let name = name.to_ascii_lowercase();
            let (max, default, slot) = match name.as_str() {
                "flip" => {
                    if value.is_some() {
                        return Err(Error::Dataset(format!(
                            "augmentation `{item}`: flip takes no value"
                        )));
                    }
                    aug.flip = true;
                    continue;
                }
                "rotate" | "rotation" => (0.5, Augment::DEFAULT_ROTATION, &mut aug.rotation),
                "zoom" => (0.95, Augment::DEFAULT_ZOOM, &mut aug.zoom),
                "translate" | "translation" => {
                    (1.0, Augment::DEFAULT_TRANSLATION, &mut aug.translation)
                }
                "contrast" | "brightness" => (1.0, Augment::DEFAULT_CONTRAST, &mut aug.contrast),
                _ => {
                    return Err(Error::Dataset(format!(
                        "unknown augmentation `{name}`; {}",
                        valid()
                    )));
                }
            };
            let f = match value {
                None => default,
                Some(v) => match v.parse::<f32>() {
                    Ok(f) if f.is_finite() && f > 0.0 && f <= max => f,
                    _ => {
                        return Err(Error::Dataset(format!(
                            "augmentation `{item}`: the strength must be a number in (0, {max}]"
                        )));
                    }
                },
            };
            *slot = Some(f);
        }
        Ok(aug)
    }

    /// The list form [`Augment::from_list`] parses back: `"flip,rotate,zoom,translate,contrast"`
    /// for the default, `name=value` where a strength is not the default, `"none"` when off.
    pub fn to_list(&self) -> String {
        let mut items = Vec::new();
        if self.flip {
            items.push("flip".to_string());
        }
        let opts = [
            ("rotate", self.rotation, Augment::DEFAULT_ROTATION),
            ("zoom", self.zoom, Augment::DEFAULT_ZOOM),
            ("translate", self.translation, Augment::DEFAULT_TRANSLATION),
            ("contrast", self.contrast, Augment::DEFAULT_CONTRAST),
        ];
        for (name, value, default) in opts {
            match value {
                Some(v) if v == default => items.push(name.to_string()),
                Some(v) => items.push(format!("{name}={v}")),
                None => {}
            }
        }
        if items.is_empty() {
            "none".to_string()
        } else {
            items.join(",")
        }
    }

    /// Draws the random parameters of one augmented image from `ChaCha8Rng::seed_from_u64(seed)`.
    ///
    /// All six numbers are always drawn in the same order (flip, angle, zoom, shift x, shift y,
    /// contrast, brightness), so switching one augmentation off does not change the others'
    /// draws. Disabled augmentations give the identity value (no flip, 0, 1, 0, 1, 0).
    pub fn sample(&self, seed: u64) -> AugmentParams {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let flip = rng.random_bool(0.5);
        // Uniform in [-1, 1).
        let mut sym = || rng.random::<f32>() * 2.0 - 1.0;
        let (u_angle, u_zoom, u_x, u_y, u_contrast, u_bright) =
            (sym(), sym(), sym(), sym(), sym(), sym());
        let mut p = AugmentParams::identity();
        p.flip = self.flip && flip;
        if let Some(f) = self.rotation {
            p.angle = u_angle * f.abs() * std::f32::consts::TAU;
        }
        if let Some(f) = self.zoom {
            p.zoom = 1.0 + u_zoom * f.abs().min(0.95);
        }
        if let Some(f) = self.translation {
            p.shift = [u_x * f.abs(), u_y * f.abs()];
        }
        if let Some(f) = self.contrast {
            p.contrast = 1.0 + u_contrast * f.abs();
            p.brightness = u_bright * f.abs();
        }
        p
    }

    /// The augmented version of `img` for `seed`: same seed, same output; same size as `img`.
    /// Meant for the already resized `size` x `size` image.
    pub fn apply(&self, img: &RgbImage, seed: u64) -> RgbImage {
        self.sample(seed).apply(img)
    }

    /// `n` augmented versions of `img` (rendered in parallel), version `i` with seed
    /// [`augment_seed`]`(seed, 0, i)`: what the GUI shows as previews.
    pub fn previews(&self, img: &RgbImage, n: usize, seed: u64) -> Vec<RgbImage> {
        (0..n)
            .into_par_iter()
            .map(|i| self.apply(img, augment_seed(seed, 0, i as u64)))
            .collect()
    }
}

impl fmt::Display for Augment {
    /// The [`Augment::to_list`] form.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_list())
    }
}

impl FromStr for Augment {
    type Err = Error;

    /// [`Augment::from_list`].
    fn from_str(s: &str) -> Result<Self> {
        Augment::from_list(s)
    }
}

/// The drawn parameters of one augmented image ([`Augment::sample`]); [`AugmentParams::apply`]
/// renders them. Geometric transforms compose like Keras' layers in order: flip, rotation,
/// zoom, translation, all about the image centre.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AugmentParams {
    /// Mirror left-right.
    pub flip: bool,
    /// Rotation in radians (0 = none).
    pub angle: f32,
    /// Zoom factor: the output shows a region `zoom` times the image size (1 = none, > 1 zooms
    /// out, < 1 zooms in).
    pub zoom: f32,
    /// Shift of the content as fractions `[x, y]` of the width and height (0 = none).
    pub shift: [f32; 2],
    /// Contrast factor around each channel's mean (1 = none).
    pub contrast: f32,
    /// Brightness shift as a fraction of full scale, 255 levels (0 = none).
    pub brightness: f32,
}

impl Default for AugmentParams {
    fn default() -> Self {
        AugmentParams::identity()
    }
}

impl AugmentParams {
    /// Parameters that leave the image unchanged.
    pub fn identity() -> Self {
        AugmentParams {
            flip: false,
            angle: 0.0,
            zoom: 1.0,
            shift: [0.0, 0.0],
            contrast: 1.0,
            brightness: 0.0,
        }
    }

    /// The inverse affine map of a `w` x `h` image as `[a, b, c, d, e, f]`: output position
    /// `(x, y)` (pixel edges at integers, so pixel `i` has centre `i + 0.5`) samples the input at
    /// `(a x + b y + c, d x + e y + f)`.
    pub fn inverse_map(&self, w: u32, h: u32) -> [f32; 6] {
        let (w, h) = (w as f32, h as f32);
        let (cx, cy) = (w / 2.0, h / 2.0);
        let (tx, ty) = (self.shift[0] * w, self.shift[1] * h);
        let (sin, cos) = self.angle.sin_cos();
        // Undo the translation, then the zoom (input = c + zoom (p - c)), then the rotation
        // (input = c + R(-angle) (p - c)): input = c + A (p - t - c) with A = zoom R(-angle).
        let a = [
            self.zoom * cos,
            self.zoom * sin,
            -self.zoom * sin,
            self.zoom * cos,
        ];
        let (px, py) = (tx + cx, ty + cy);
        let mut m = [
            a[0],
            a[1],
            cx - (a[0] * px + a[1] * py),
            a[2],
            a[3],
            cy - (a[2] * px + a[3] * py),
        ];
        if self.flip {
            // Then undo the flip: input x = w - x.
            m[0] = -m[0];
            m[1] = -m[1];
            m[2] = w - m[2];
        }
        m
    }

    /// Renders these parameters on `img`: one bilinear resampling through
    /// [`AugmentParams::inverse_map`] with reflect padding (skipped when the map is the
    /// identity), then contrast and brightness per channel. The output has `img`'s size.
    pub fn apply(&self, img: &RgbImage) -> RgbImage {
        let (w, h) = img.dimensions();
        if w == 0 || h == 0 {
            return img.clone();
        }
        let map = self.inverse_map(w, h);
        let mut out = if map == [1.0, 0.0, 0.0, 0.0, 1.0, 0.0] {
            img.clone()
        } else {
            warp_reflect(img, &map)
        };
        if self.contrast != 1.0 || self.brightness != 0.0 {
            adjust_contrast_brightness(&mut out, self.contrast, self.brightness);
        }
        out
    }
}

/// The seed of sample `index` in epoch `epoch` of a run seeded with `seed` (SplitMix64 mixing,
/// so neighbouring indices and epochs get unrelated streams).
pub fn augment_seed(seed: u64, epoch: u64, index: u64) -> u64 {
    let s = splitmix64(seed ^ 0x6175_676d_656e_7421); // "augment!"
    let s = splitmix64(s ^ epoch);
    splitmix64(s ^ index)
}

/// SplitMix64's output function of `x + golden gamma`.
fn splitmix64(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Half-sample symmetric reflection of index `i` into `0..n` (`d c b a | a b c d | d c b a`).
fn reflect(i: i64, n: i64) -> usize {
    let m = i.rem_euclid(2 * n);
    (if m >= n { 2 * n - 1 - m } else { m }) as usize
}

/// Bilinear resampling of `img` through the inverse map `m` (see
/// [`AugmentParams::inverse_map`]), reflect padding outside the image.
#[allow(clippy::expect_used, reason = "`out` is allocated above as w x h x 3")]
fn warp_reflect(img: &RgbImage, m: &[f32; 6]) -> RgbImage {
    let (w, h) = img.dimensions();
    let (wi, hi) = (i64::from(w), i64::from(h));
    let src = img.as_raw();
    let row = w as usize * 3;
    let mut out = vec![0u8; src.len()];
    for (y, out_row) in out.chunks_exact_mut(row).enumerate() {
        let py = y as f32 + 0.5;
        for (x, out_px) in out_row.chunks_exact_mut(3).enumerate() {
            let px = x as f32 + 0.5;
            // Input position in pixel-index coordinates (pixel i has centre i).
            let u = m[0] * px + m[1] * py + m[2] - 0.5;
            let v = m[3] * px + m[4] * py + m[5] - 0.5;
            let (u0, v0) = (u.floor(), v.floor());
            let (fx, fy) = (u - u0, v - v0);
            let (u0, v0) = (u0 as i64, v0 as i64);
            let (xa, xb) = (reflect(u0, wi) * 3, reflect(u0 + 1, wi) * 3);
            let (ya, yb) = (reflect(v0, hi) * row, reflect(v0 + 1, hi) * row);
            for (c, o) in out_px.iter_mut().enumerate() {
                let p = |yo: usize, xo: usize| f32::from(src[yo + xo + c]);
                let (p00, p10, p01, p11) = (p(ya, xa), p(ya, xb), p(yb, xa), p(yb, xb));
                let top = p00 + (p10 - p00) * fx;
                let bottom = p01 + (p11 - p01) * fx;
                *o = (top + (bottom - top) * fy).round().clamp(0.0, 255.0) as u8;
            }
        }
    }
    RgbImage::from_raw(w, h, out).expect("buffer size matches the dimensions")
}

/// `v' = (v - mean_c) * contrast + mean_c + brightness * 255` per channel `c`, rounded and
/// clipped to `0..=255` (Keras' `RandomContrast` then `RandomBrightness`).
fn adjust_contrast_brightness(img: &mut RgbImage, contrast: f32, brightness: f32) {
    let mut sums = [0u64; 3];
    for px in img.as_raw().chunks_exact(3) {
        for (s, &v) in sums.iter_mut().zip(px) {
            *s += u64::from(v);
        }
    }
    let n = (img.width() as u64 * img.height() as u64).max(1) as f64;
    let lut: [[u8; 256]; 3] = std::array::from_fn(|c| {
        let mean = (sums[c] as f64 / n) as f32;
        std::array::from_fn(|v| {
            ((v as f32 - mean) * contrast + mean + brightness * 255.0)
                .round()
                .clamp(0.0, 255.0) as u8
        })
    });
    for px in img.chunks_exact_mut(3) {
        for (c, v) in px.iter_mut().enumerate() {
            *v = lut[c][*v as usize];
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use image::Rgb;

    /// A textured, asymmetric test image.
    fn texture(w: u32, h: u32) -> RgbImage {
        RgbImage::from_fn(w, h, |x, y| {
            Rgb([
                (x * 255 / w.max(1)) as u8,
                (y * 255 / h.max(1)) as u8,
                ((x * 7 + y * 13) % 256) as u8,
            ])
        })
    }

    fn mirrored(img: &RgbImage) -> RgbImage {
        image::imageops::flip_horizontal(img)
    }

    #[test]
    fn same_seed_same_output_different_seed_different_output() {
        let img = texture(32, 32);
        let aug = Augment::default();
        let a = aug.apply(&img, 7);
        assert_eq!(a, aug.apply(&img, 7));
        assert_eq!(a.dimensions(), (32, 32));
        let b = aug.apply(&img, 8);
        assert_ne!(a, b);
        assert_ne!(a, img);
        assert_eq!(aug.sample(7), aug.sample(7));
        assert_ne!(aug.sample(7), aug.sample(8));
    }

    #[test]
    fn forced_flip_mirrors_exactly() {
        let img = texture(17, 9);
        let params = AugmentParams {
            flip: true,
            ..AugmentParams::identity()
        };
        assert_eq!(params.apply(&img), mirrored(&img));
    }

    #[test]
    fn flip_only_is_identity_or_exact_mirror() {
        let img = texture(16, 12);
        let aug = Augment {
            flip: true,
            ..Augment::none()
        };
        let (mut flipped, mut kept) = (0, 0);
        for seed in 0..64 {
            let out = aug.apply(&img, seed);
            if out == img {
                kept += 1;
            } else {
                assert_eq!(out, mirrored(&img), "seed {seed}");
                flipped += 1;
            }
        }
        assert!(flipped > 10 && kept > 10, "flipped {flipped}, kept {kept}");
    }

    #[test]
    fn geometric_transforms_keep_a_constant_image_constant() {
        let img = RgbImage::from_pixel(24, 24, Rgb([200, 17, 99]));
        let rotate = Augment {
            rotation: Some(0.5),
            ..Augment::none()
        };
        let all_geometric = Augment {
            contrast: None,
            ..Augment::default()
        };
        for seed in 0..32 {
            assert_eq!(rotate.apply(&img, seed), img, "rotation, seed {seed}");
            assert_eq!(
                all_geometric.apply(&img, seed),
                img,
                "geometric, seed {seed}"
            );
        }
    }

    #[test]
    fn none_is_identity() {
        let img = texture(20, 13);
        let none = Augment::none();
        assert!(none.is_none());
        for seed in [0, 1, 42, u64::MAX] {
            assert_eq!(none.apply(&img, seed), img);
        }
        assert_eq!(AugmentParams::identity().apply(&img), img);
    }

    #[test]
    fn translation_uses_reflect_padding() {
        // Shift right by exactly 2 pixels: out(x) = in(x - 2); columns 0 and 1 read the
        // reflected indices -2 -> 1 and -1 -> 0.
        let img = texture(8, 4);
        let params = AugmentParams {
            shift: [0.25, 0.0],
            ..AugmentParams::identity()
        };
        let out = params.apply(&img);
        for y in 0..4 {
            for x in 2..8 {
                assert_eq!(out.get_pixel(x, y), img.get_pixel(x - 2, y));
            }
            assert_eq!(out.get_pixel(0, y), img.get_pixel(1, y));
            assert_eq!(out.get_pixel(1, y), img.get_pixel(0, y));
        }
        assert_eq!(
            (-3..7).map(|i| reflect(i, 3)).collect::<Vec<_>>(),
            [2, 1, 0, 0, 1, 2, 2, 1, 0, 0]
        );
    }

    #[test]
    fn quarter_turn_rotates_exactly() {
        // A 90-degree rotation of a square maps pixel centres to pixel centres.
        let img = texture(6, 6);
        let params = AugmentParams {
            angle: std::f32::consts::FRAC_PI_2,
            ..AugmentParams::identity()
        };
        let out = params.apply(&img);
        let r90 = image::imageops::rotate90(&img);
        let r270 = image::imageops::rotate270(&img);
        assert!(out == r90 || out == r270, "not a quarter turn");
    }

    #[test]
    fn contrast_and_brightness_act_per_channel() {
        let img = RgbImage::from_fn(4, 1, |x, _| Rgb([100 + 20 * x as u8, 50, 50]));
        // Channel 0 mean 130: contrast 2 maps 100 -> 70, 160 -> 190; constant channels stay.
        let params = AugmentParams {
            contrast: 2.0,
            ..AugmentParams::identity()
        };
        let out = params.apply(&img);
        assert_eq!(out.get_pixel(0, 0), &Rgb([70, 50, 50]));
        assert_eq!(out.get_pixel(3, 0), &Rgb([190, 50, 50]));
        let params = AugmentParams {
            brightness: 0.1,
            ..AugmentParams::identity()
        };
        let out = params.apply(&img);
        assert_eq!(out.get_pixel(0, 0), &Rgb([126, 76, 76]));
    }

    #[test]
    fn previews_have_the_right_count_and_size() {
        let img = texture(28, 28);
        let previews = Augment::default().previews(&img, 6, 3);
        assert_eq!(previews.len(), 6);
        assert!(previews.iter().all(|p| p.dimensions() == (28, 28)));
        assert_ne!(previews[0], previews[1]);
        assert_eq!(previews, Augment::default().previews(&img, 6, 3));
        assert!(Augment::default().previews(&img, 0, 3).is_empty());
    }

    #[test]
    fn list_parsing_and_printing() {
        let all = Augment::from_list("flip,rotate,zoom,translate,contrast").unwrap();
        assert_eq!(all, Augment::default());
        assert_eq!(all.to_list(), "flip,rotate,zoom,translate,contrast");
        assert_eq!(Augment::from_list("none").unwrap(), Augment::none());
        assert_eq!(Augment::from_list("").unwrap(), Augment::none());
        assert_eq!(Augment::none().to_list(), "none");
        let some: Augment = " flip , rotation=0.05 ".parse().unwrap();
        assert_eq!(
            some,
            Augment {
                flip: true,
                rotation: Some(0.05),
                ..Augment::none()
            }
        );
        assert_eq!(Augment::from_list(&some.to_string()).unwrap(), some);

        let err = Augment::from_list("flip,shear").unwrap_err().to_string();
        assert!(err.contains("shear"), "{err}");
        for name in AUGMENT_NAMES {
            assert!(err.contains(name), "{err}");
        }
        assert!(Augment::from_list("zoom=2").is_err());
        assert!(Augment::from_list("rotate=abc").is_err());
        assert!(Augment::from_list("flip=1").is_err());
    }

    #[test]
    fn serde_roundtrip() {
        let aug = Augment {
            zoom: None,
            ..Augment::default()
        };
        let json = serde_json::to_string(&aug).unwrap();
        assert_eq!(serde_json::from_str::<Augment>(&json).unwrap(), aug);
    }

    #[test]
    fn augment_seeds_differ_by_epoch_and_index() {
        let a = augment_seed(42, 0, 0);
        assert_eq!(a, augment_seed(42, 0, 0));
        assert_ne!(a, augment_seed(42, 0, 1));
        assert_ne!(a, augment_seed(42, 1, 0));
        assert_ne!(a, augment_seed(43, 0, 0));
        assert_ne!(augment_seed(42, 1, 0), augment_seed(42, 0, 1));
    }
}
