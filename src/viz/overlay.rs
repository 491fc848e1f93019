//! A class-activation map placed back on the original, uncropped image: the heatmap alone and
//! blended over the photo.

use image::RgbImage;

use super::colormap::Colormap;
use crate::zoo::Preprocess;

/// The region a model's input shows, in original-image pixel coordinates.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct CropPlacement {
    /// `(width, height)` of the original image.
    pub original: (u32, u32),
    /// Left edge of the crop, original pixels.
    pub x0: f64,
    /// Top edge of the crop, original pixels.
    pub y0: f64,
    /// Width of the crop, original pixels.
    pub w: f64,
    /// Height of the crop, original pixels.
    pub h: f64,
}

impl CropPlacement {
    /// The region [`Preprocess::source_region`] of an original of `width` x `height`: for a
    /// centre crop, the crop box in resized coordinates scaled back by `original / resized`.
    pub fn new(width: u32, height: u32, preprocess: &Preprocess) -> Self {
        let [x0, y0, x1, y1] = preprocess.source_region(width, height).map(f64::from);
        CropPlacement {
            original: (width, height),
            x0,
            y0,
            w: x1 - x0,
            h: y1 - y0,
        }
    }

    /// The value of `map` (`[h, w]` row-major, covering the crop) at the continuous original
    /// coordinate `(x, y)` (pixel centres at `i + 0.5`), by half-pixel bilinear interpolation
    /// with clamped edges; `None` outside the crop.
    pub fn sample(&self, map: &[f32], (mh, mw): (usize, usize), x: f64, y: f64) -> Option<f32> {
        let (dx, dy) = (x - self.x0, y - self.y0);
        if dx < 0.0 || dy < 0.0 || dx >= self.w || dy >= self.h || mh == 0 || mw == 0 {
            return None;
        }
        let u = (dx / self.w * mw as f64 - 0.5).clamp(0.0, (mw - 1) as f64);
        let v = (dy / self.h * mh as f64 - 0.5).clamp(0.0, (mh - 1) as f64);
        let (x0, y0) = (u.floor() as usize, v.floor() as usize);
        let (x1, y1) = ((x0 + 1).min(mw - 1), (y0 + 1).min(mh - 1));
        let (fx, fy) = ((u - x0 as f64) as f32, (v - y0 as f64) as f32);
        let at = |yy: usize, xx: usize| map[yy * mw + xx];
        let top = at(y0, x0) + (at(y0, x1) - at(y0, x0)) * fx;
        let bottom = at(y1, x0) + (at(y1, x1) - at(y1, x0)) * fx;
        Some(top + (bottom - top) * fy)
    }

    /// `map` placed on the original at its resolution, `[height, width]` row-major, `NaN`
    /// outside the crop.
    pub fn place(&self, map: &[f32], size: (usize, usize)) -> Vec<f32> {
        let (w, h) = self.original;
        (0..h)
            .flat_map(|y| (0..w).map(move |x| (x, y)))
            .map(|(x, y)| {
                self.sample(map, size, f64::from(x) + 0.5, f64::from(y) + 0.5)
                    .unwrap_or(f32::NAN)
            })
            .collect()
    }
}

/// The three panels of a CAM figure, at the original image's size.
#[derive(Clone, Debug)]
pub struct CamImages {
    pub original: RgbImage,
    /// The coloured map; outside the region the network saw, mid-grey.
    pub heatmap: RgbImage,
    /// The map blended over the photo with the given alpha (photo alone outside the region).
    pub overlay: RgbImage,
    /// Whether part of the original lies outside the region the network saw (the heatmap's
    /// grey frame).
    pub outside: bool,
}

/// Colours `map` (`[h, w]` at network-input resolution) with `colormap`, places it over the
/// region of `original` the network saw and blends it with opacity `alpha` (0: photo, 1: map).
pub fn cam_images(
    original: &RgbImage,
    map: &[f32],
    map_size: (usize, usize),
    placement: &CropPlacement,
    colormap: Colormap,
    alpha: f32,
) -> CamImages {
    let (w, h) = original.dimensions();
    let placed = (0..h)
        .flat_map(|y| (0..w).map(move |x| (x, y)))
        .map(|(x, y)| placement.sample(map, map_size, f64::from(x) + 0.5, f64::from(y) + 0.5));
    let mut heatmap = RgbImage::new(w, h);
    let mut overlay = original.clone();
    let a = alpha.clamp(0.0, 1.0);
    let mut outside = false;
    for (i, value) in placed.enumerate() {
        let (x, y) = ((i as u32) % w, (i as u32) / w);
        match value {
            Some(v) => {
                let c = colormap.rgb(v);
                heatmap.put_pixel(x, y, image::Rgb(c));
                let p = overlay.get_pixel_mut(x, y);
                for k in 0..3 {
                    p[k] = ((1.0 - a) * p[k] as f32 + a * c[k] as f32).round() as u8;
                }
            }
            None => {
                outside = true;
                heatmap.put_pixel(x, y, image::Rgb([128, 128, 128]));
            }
        }
    }
    CamImages {
        original: original.clone(),
        heatmap,
        overlay,
        outside,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::preprocess::EvalTransform;

    #[test]
    fn chelsea_crop_maps_back() {
        // 451x300 -> 385x256, crop at (80, 16) of 224: in original pixels x0 = 80 * 451/385.
        let p = CropPlacement::new(451, 300, &Preprocess::CenterCrop(EvalTransform::imagenet()));
        assert!((p.x0 - 80.0 * 451.0 / 385.0).abs() < 1e-4);
        assert!((p.y0 - 16.0 * 300.0 / 256.0).abs() < 1e-4);
        assert!((p.w - 224.0 * 451.0 / 385.0).abs() < 1e-4);
        assert!((p.h - 224.0 * 300.0 / 256.0).abs() < 1e-4);
    }

    #[test]
    fn sampling_is_identity_on_the_crop_grid_and_none_outside() {
        let t = EvalTransform {
            resize_shorter: 4,
            crop: 4,
            mean: [0.0; 3],
            std: [1.0; 3],
        };
        let p = CropPlacement::new(4, 4, &Preprocess::CenterCrop(t.clone()));
        let map: Vec<f32> = (0..16).map(|v| v as f32).collect();
        let placed = p.place(&map, (4, 4));
        assert_eq!(placed, map);
        assert_eq!(p.sample(&map, (4, 4), -0.5, 1.0), None);
        let wide = CropPlacement::new(8, 4, &Preprocess::CenterCrop(t));
        let placed = wide.place(&map, (4, 4));
        assert!(placed[0].is_nan() && placed[7].is_nan());
        assert_eq!(placed[2], 0.0);
    }

    #[test]
    fn alpha_zero_keeps_the_photo() {
        let photo = RgbImage::from_pixel(4, 4, image::Rgb([10, 20, 30]));
        let whole = CropPlacement::new(
            4,
            4,
            &Preprocess::Resize(crate::data::train_transform::TrainTransform::new(
                4, [0.0; 3], [1.0; 3],
            )),
        );
        let out = cam_images(&photo, &[0.5; 4], (2, 2), &whole, Colormap::Jet, 0.0);
        assert_eq!(out.overlay, photo);
        assert_ne!(out.heatmap, photo);
        assert!(!out.outside, "the whole photo was seen");
        let t = EvalTransform {
            resize_shorter: 4,
            crop: 4,
            mean: [0.0; 3],
            std: [1.0; 3],
        };
        let wide = CropPlacement::new(8, 4, &Preprocess::CenterCrop(t));
        let photo = RgbImage::from_pixel(8, 4, image::Rgb([10, 20, 30]));
        let out = cam_images(&photo, &[0.5; 4], (2, 2), &wide, Colormap::Jet, 0.5);
        assert!(out.outside, "columns 0, 1, 6 and 7 lie outside the crop");
        assert_eq!(out.heatmap.get_pixel(0, 0).0, [128, 128, 128]);
    }
}
