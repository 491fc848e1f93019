//! Deletion and insertion (Petsiuk et al. 2018, "RISE", its `CausalMetric`): pixels are moved,
//! most relevant first, from a start image to a finish image, `step` pixels at a time, and the
//! class score is read after every step; the metric is the area under that curve.
//!
//! Deletion starts from the image and ends at zeros (the normalised mean colour); insertion
//! starts from the image blurred by RISE's kernel (`gkern(11, 5)`: SciPy's `gaussian_filter` of
//! a centred impulse in an 11 x 11 window, sigma 5, `reflect` borders, as float32) and ends at
//! the image. Ties in the map are ordered by pixel index (a stable sort of `-map`).

/// RISE's blur window (pixels) and its Gaussian's sigma.
const BLUR_SIZE: usize = 11;
const BLUR_SIGMA: f64 = 5.0;

/// Which of the two curves.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Causal {
    Deletion,
    Insertion,
}

/// Pixel indices (`y * w + x`) by decreasing map value, ties by increasing index.
pub fn salient_order(map: &[f32]) -> Vec<usize> {
    let mut order: Vec<usize> = (0..map.len()).collect();
    order.sort_by(|&a, &b| map[b].total_cmp(&map[a]).then(a.cmp(&b)));
    order
}

/// Pixels per step for `steps` steps over `pixels` pixels (`ceil(pixels / steps)`), and the
/// number of steps that gives (`ceil(pixels / step)`, as RISE counts them).
pub fn step_size(pixels: usize, steps: usize) -> (usize, usize) {
    let step = pixels.div_ceil(steps.max(1)).max(1);
    (step, pixels.div_ceil(step))
}

/// The 1-D profile of RISE's kernel: SciPy's 1-D Gaussian (radius `4 sigma + 0.5` truncated,
/// normalised) correlated with an impulse at the window's centre under `reflect` borders.
fn blur_profile() -> Vec<f64> {
    let radius = (4.0 * BLUR_SIGMA + 0.5) as isize;
    let weights: Vec<f64> = (-radius..=radius)
        .map(|x| (-0.5 / (BLUR_SIGMA * BLUR_SIGMA) * (x * x) as f64).exp())
        .collect();
    let total: f64 = weights.iter().sum();
    let n = BLUR_SIZE as isize;
    let centre = n / 2;
    // `reflect` (d c b a | a b c d | d c b a): period 2n.
    let reflect = |i: isize| {
        let m = i.rem_euclid(2 * n);
        if m >= n { 2 * n - 1 - m } else { m }
    };
    (0..n)
        .map(|i| {
            (-radius..=radius)
                .zip(&weights)
                .filter(|(j, _)| reflect(i + j) == centre)
                .map(|(_, w)| w / total)
                .sum()
        })
        .collect()
}

/// RISE's 11 x 11 blur kernel as float32, row-major.
pub fn blur_kernel() -> Vec<f32> {
    let g = blur_profile();
    g.iter()
        .flat_map(|a| g.iter().map(move |b| (a * b) as f32))
        .collect()
}

/// Blurs each channel of `[c, h, w]` with [`blur_kernel`], zero padding (a 2-D correlation as
/// `conv2d(x, kernel, padding=5)`).
pub fn blur(image: &[f32], (c, h, w): (usize, usize, usize)) -> Vec<f32> {
    let k = blur_kernel();
    let r = (BLUR_SIZE / 2) as isize;
    let mut out = vec![0f32; image.len()];
    for ch in 0..c {
        let plane = &image[ch * h * w..(ch + 1) * h * w];
        for y in 0..h as isize {
            for x in 0..w as isize {
                let mut acc = 0f32;
                for ky in -r..=r {
                    let yy = y + ky;
                    if yy < 0 || yy >= h as isize {
                        continue;
                    }
                    for kx in -r..=r {
                        let xx = x + kx;
                        if xx < 0 || xx >= w as isize {
                            continue;
                        }
                        let kv = k[((ky + r) as usize) * BLUR_SIZE + (kx + r) as usize];
                        acc += kv * plane[yy as usize * w + xx as usize];
                    }
                }
                out[ch * h * w + y as usize * w + x as usize] = acc;
            }
        }
    }
    out
}

/// The start and finish images of a curve for `image` `[c, h, w]`.
pub fn endpoints(kind: Causal, image: &[f32], dims: (usize, usize, usize)) -> (Vec<f32>, Vec<f32>) {
    match kind {
        Causal::Deletion => (image.to_vec(), vec![0.0; image.len()]),
        Causal::Insertion => (blur(image, dims), image.to_vec()),
    }
}

/// The image after `k` steps: `start` with the first `k * step` pixels of `order` (every
/// channel) taken from `finish`.
pub fn image_at(
    start: &[f32],
    finish: &[f32],
    order: &[usize],
    step: usize,
    k: usize,
    channels: usize,
) -> Vec<f32> {
    let hw = order.len();
    let mut img = start.to_vec();
    for &p in &order[..(k * step).min(hw)] {
        for ch in 0..channels {
            img[ch * hw + p] = finish[ch * hw + p];
        }
    }
    img
}

/// RISE's `auc`: the trapezoidal area under `scores` over `[0, 1]`
/// (`(sum - first / 2 - last / 2) / (n - 1)`).
pub fn auc(scores: &[f32]) -> f32 {
    let n = scores.len();
    if n < 2 {
        return scores.first().copied().unwrap_or(f32::NAN);
    }
    let sum: f64 = scores.iter().map(|&s| f64::from(s)).sum();
    ((sum - f64::from(scores[0]) / 2.0 - f64::from(scores[n - 1]) / 2.0) / (n - 1) as f64) as f32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_blur_kernel_rises_to_its_centre_as_scipys() {
        // scipy.ndimage.gaussian_filter(impulse 11x11 at the centre, 5)[5, 0..6] as float32.
        let k = blur_kernel();
        assert_eq!(k.len(), 121);
        let total: f32 = k.iter().sum();
        assert!((total - 1.0).abs() < 1e-5, "sum {total}");
        for (x, want) in [
            0.008_266_49f32,
            0.008_354_64,
            0.008_502_95,
            0.008_664_31,
            0.008_786_33,
            0.008_832_63,
        ]
        .iter()
        .enumerate()
        {
            // The reference values are printed to 8 decimals: half a unit of the last is 5e-9.
            assert!((k[55 + x] - want).abs() < 6e-9, "k[5, {x}] = {}", k[55 + x]);
        }
        assert_eq!(k[0], k[120]);
    }

    #[test]
    fn steps_and_area() {
        assert_eq!(step_size(224 * 224, 224), (224, 224));
        assert_eq!(step_size(10, 3), (4, 3));
        assert_eq!(auc(&[1.0, 1.0, 1.0]), 1.0);
        assert_eq!(auc(&[1.0, 0.0]), 0.5);
        assert_eq!(salient_order(&[0.1, 0.5, 0.5, 0.9]), [3, 1, 2, 0]);
        let img = image_at(&[1.0; 8], &[0.0; 8], &[3, 1, 2, 0], 1, 2, 2);
        assert_eq!(img, [1.0, 0.0, 1.0, 0.0, 1.0, 0.0, 1.0, 0.0]);
    }
}
