//! A class-activation map placed back on the original, uncropped image: the heatmap alone and
//! blended over the photo.

use image::RgbImage;

use super::colormap::Colormap;

/// Resamples `map` (`[map_h, map_w]`, row-major, values in `[0, 1]`) over `region`
/// (`[x0, y0, x1, y1]` in canvas pixels) of a `width` x `height` canvas, bilinearly with
/// half-pixel centres; canvas pixels outside the region get `None`.
pub fn place_map(
    map: &[f32],
    (map_h, map_w): (usize, usize),
    region: [f32; 4],
    (width, height): (u32, u32),
) -> Vec<Option<f32>> {
    let [x0, y0, x1, y1] = region;
    let sample = |v: f32, n: usize| -> (usize, usize, f32) {
        let v = v.clamp(0.0, (n - 1) as f32);
        let lo = v.floor() as usize;
        let hi = (lo + 1).min(n - 1);
        (lo, hi, v - lo as f32)
    };
    let mut out = Vec::with_capacity((width * height) as usize);
    for y in 0..height {
        let cy = y as f32 + 0.5;
        let inside_y = cy >= y0 && cy < y1;
        let (r0, r1, fy) = sample((cy - y0) / (y1 - y0) * map_h as f32 - 0.5, map_h);
        for x in 0..width {
            let cx = x as f32 + 0.5;
            if !inside_y || cx < x0 || cx >= x1 {
                out.push(None);
                continue;
            }
            let (c0, c1, fx) = sample((cx - x0) / (x1 - x0) * map_w as f32 - 0.5, map_w);
            let top = map[r0 * map_w + c0] * (1.0 - fx) + map[r0 * map_w + c1] * fx;
            let bottom = map[r1 * map_w + c0] * (1.0 - fx) + map[r1 * map_w + c1] * fx;
            out.push(Some(top * (1.0 - fy) + bottom * fy));
        }
    }
    out
}

/// The three panels of a CAM figure, at the original image's size.
#[derive(Clone, Debug)]
pub struct CamImages {
    pub original: RgbImage,
    /// The coloured map; outside the region the network saw, mid-grey.
    pub heatmap: RgbImage,
    /// The map blended over the photo with the given alpha (photo alone outside the region).
    pub overlay: RgbImage,
}

/// Colours `map` (`[h, w]` at network-input resolution) with `colormap`, stretches it over
/// `region` of `original` and blends it with opacity `alpha` (0: photo, 1: map).
pub fn cam_images(
    original: &RgbImage,
    map: &[f32],
    map_size: (usize, usize),
    region: [f32; 4],
    colormap: Colormap,
    alpha: f32,
) -> CamImages {
    let (w, h) = original.dimensions();
    let placed = place_map(map, map_size, region, (w, h));
    let mut heatmap = RgbImage::new(w, h);
    let mut overlay = original.clone();
    let a = alpha.clamp(0.0, 1.0);
    for (i, value) in placed.iter().enumerate() {
        let (x, y) = ((i as u32) % w, (i as u32) / w);
        match value {
            Some(v) => {
                let c = colormap.rgb(*v);
                heatmap.put_pixel(x, y, image::Rgb(c));
                let p = overlay.get_pixel_mut(x, y);
                for k in 0..3 {
                    p[k] = ((1.0 - a) * p[k] as f32 + a * c[k] as f32).round() as u8;
                }
            }
            None => heatmap.put_pixel(x, y, image::Rgb([128, 128, 128])),
        }
    }
    CamImages {
        original: original.clone(),
        heatmap,
        overlay,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placement_covers_only_the_region() {
        let placed = place_map(&[1.0; 4], (2, 2), [2.0, 0.0, 6.0, 4.0], (8, 4));
        assert!(placed[0].is_none() && placed[7].is_none());
        assert_eq!(placed[3], Some(1.0));
        assert_eq!(placed.iter().filter(|v| v.is_some()).count(), 16);
    }

    #[test]
    fn placement_interpolates_a_ramp() {
        // A 1x2 ramp over the full canvas: left half low, right half high, monotone.
        let placed = place_map(&[0.0, 1.0], (1, 2), [0.0, 0.0, 8.0, 1.0], (8, 1));
        let v: Vec<f32> = placed.into_iter().map(Option::unwrap).collect();
        assert!(v.windows(2).all(|w| w[0] <= w[1]));
        assert_eq!(v[0], 0.0);
        assert_eq!(v[7], 1.0);
    }

    #[test]
    fn alpha_zero_keeps_the_photo() {
        let photo = RgbImage::from_pixel(4, 4, image::Rgb([10, 20, 30]));
        let out = cam_images(
            &photo,
            &[0.5; 4],
            (2, 2),
            [0.0, 0.0, 4.0, 4.0],
            Colormap::Jet,
            0.0,
        );
        assert_eq!(out.overlay, photo);
        assert_ne!(out.heatmap, photo);
    }
}
