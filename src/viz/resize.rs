//! Bilinear resampling of single-channel float maps (row-major `[h, w]`), in the two
//! conventions the references use.

/// How output pixel centres map onto the input grid.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Corners {
    /// Half-pixel centres, edges clamped: OpenCV `INTER_LINEAR`, PyTorch
    /// `align_corners=False` (no antialiasing).
    HalfPixel,
    /// Corner pixels of input and output coincide: PyTorch `UpsamplingBilinear2d`
    /// (`align_corners=True`).
    Aligned,
}

/// For each output index: (lower input index, upper input index, weight of the upper one).
fn axis_taps(n_in: usize, n_out: usize, corners: Corners) -> Vec<(usize, usize, f32)> {
    (0..n_out)
        .map(|o| {
            let src = match corners {
                Corners::HalfPixel => {
                    let scale = n_in as f64 / n_out as f64;
                    ((o as f64 + 0.5) * scale - 0.5).max(0.0)
                }
                Corners::Aligned => {
                    if n_out > 1 {
                        o as f64 * (n_in as f64 - 1.0) / (n_out as f64 - 1.0)
                    } else {
                        0.0
                    }
                }
            };
            let lo = (src.floor() as usize).min(n_in - 1);
            let hi = (lo + 1).min(n_in - 1);
            (lo, hi, (src - lo as f64) as f32)
        })
        .collect()
}

/// Resizes `src` (`[h, w]` row-major) to `[out_h, out_w]` with bilinear interpolation.
pub fn bilinear(
    src: &[f32],
    (h, w): (usize, usize),
    (out_h, out_w): (usize, usize),
    corners: Corners,
) -> Vec<f32> {
    assert_eq!(
        src.len(),
        h * w,
        "bilinear: {} values for {h}x{w}",
        src.len()
    );
    let ys = axis_taps(h, out_h, corners);
    let xs = axis_taps(w, out_w, corners);
    let mut out = Vec::with_capacity(out_h * out_w);
    for &(y0, y1, fy) in &ys {
        let (r0, r1) = (&src[y0 * w..][..w], &src[y1 * w..][..w]);
        for &(x0, x1, fx) in &xs {
            let top = r0[x0] + (r0[x1] - r0[x0]) * fx;
            let bottom = r1[x0] + (r1[x1] - r1[x0]) * fx;
            out.push(top + (bottom - top) * fy);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn half_pixel_upsampling_matches_opencv_on_a_ramp() {
        // cv2.resize(np.array([[0, 1]], np.float32), (4, 1)) == [0, .25, .75, 1]
        let out = bilinear(&[0.0, 1.0], (1, 2), (1, 4), Corners::HalfPixel);
        assert_eq!(out, vec![0.0, 0.25, 0.75, 1.0]);
    }

    #[test]
    fn aligned_upsampling_keeps_the_corners() {
        let out = bilinear(&[0.0, 1.0], (1, 2), (1, 5), Corners::Aligned);
        assert_eq!(out, vec![0.0, 0.25, 0.5, 0.75, 1.0]);
    }

    #[test]
    fn same_size_is_identity() {
        let src: Vec<f32> = (0..12).map(|i| i as f32).collect();
        for c in [Corners::HalfPixel, Corners::Aligned] {
            assert_eq!(bilinear(&src, (3, 4), (3, 4), c), src);
        }
    }
}
