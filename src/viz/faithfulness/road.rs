//! ROAD (Rong et al. 2022, "A Consistent and Efficient Evaluation Strategy for Attribution
//! Methods"): pixels are removed by noisy linear imputation, as pytorch-grad-cam 1.5.7's
//! `NoisyLinearImputer` does it, and which pixels go is decided by a percentile of the map
//! (`RemoveMostRelevantFirst` / `RemoveLeastRelevantFirst`).
//!
//! Each removed pixel's value is the weighted mean of its 8 neighbours (weight 1/6 for the 4
//! edge neighbours, 1/12 for the 4 corners, neighbours outside the image left out), known
//! neighbours entering the right-hand side: one sparse symmetric positive-definite system over
//! the removed pixels (SciPy's `spsolve` there, conjugate gradients in float64 here), then
//! `noise` added to every imputed value.

use crate::cancel::CancelToken;
use crate::{Error, Result};

/// Neighbour offsets `(dy, dx)` and their weights (pytorch-grad-cam's `neighbors_weights`).
const NEIGHBOURS: [((isize, isize), f64); 8] = [
    ((1, 1), 1.0 / 12.0),
    ((0, 1), 1.0 / 6.0),
    ((-1, 1), 1.0 / 12.0),
    ((1, -1), 1.0 / 12.0),
    ((0, -1), 1.0 / 6.0),
    ((-1, -1), 1.0 / 12.0),
    ((1, 0), 1.0 / 6.0),
    ((-1, 0), 1.0 / 6.0),
];

/// The amplitude of the imputation noise (`NoisyLinearImputer(noise=0.01)`).
pub const NOISE: f32 = 0.01;

/// `numpy.percentile(values, percentile)` (method `linear`) for float32 values, rounded as
/// NumPy 2 rounds it: the virtual index `(n - 1) * (p / 100)` in float64, the interpolation
/// `a + (b - a) * g` (or `b - (b - a) * (1 - g)` for `g >= 0.5`) in float32.
pub fn percentile(values: &[f32], percentile: f64) -> f32 {
    let mut v = values.to_vec();
    v.sort_by(f32::total_cmp);
    let n = v.len();
    if n == 0 {
        return f32::NAN;
    }
    let virtual_index = (n - 1) as f64 * (percentile / 100.0);
    let below = virtual_index.floor();
    let gamma = virtual_index - below;
    let (lo, hi) = if virtual_index >= (n - 1) as f64 {
        (n - 1, n - 1)
    } else if virtual_index < 0.0 {
        (0, 0)
    } else {
        (below as usize, below as usize + 1)
    };
    let (a, b) = (v[lo], v[hi]);
    let diff = b - a;
    if gamma >= 0.5 {
        b - diff * (1.0 - gamma) as f32
    } else {
        a + diff * gamma as f32
    }
}

/// Which pixels stay (`true`) when removing at `percentile` of `map` (`[h * w]`, row-major):
/// most relevant first keeps `map < percentile(map)`; least relevant first keeps
/// `1 - map < percentile(1 - map)` (pytorch-grad-cam's `RemoveMostRelevantFirst` /
/// `RemoveLeastRelevantFirst`, which remove the pixels at or above the threshold).
pub fn keep_mask(map: &[f32], percentile_: f64, most_relevant_first: bool) -> Vec<bool> {
    let values: Vec<f32> = if most_relevant_first {
        map.to_vec()
    } else {
        map.iter().map(|v| 1.0 - v).collect()
    };
    let threshold = percentile(&values, percentile_);
    values.iter().map(|&v| v < threshold).collect()
}

/// Noisy linear imputation of an image `[c, h, w]` (row-major, `c * h * w` values): every
/// pixel with `keep[y * w + x] == false` is replaced, in every channel, by the solution of the
/// neighbour-mean system plus `noise[ch * h * w + y * w + x]` (the caller's noise, already
/// scaled, e.g. [`NOISE`] times a standard normal field). Kept pixels are returned unchanged.
/// When no pixel is kept there is nothing to interpolate from: the imputed values are the
/// noise alone (SciPy's solver would return NaN for that singular system). Stops with
/// [`Error::Cancelled`] at the solver's next iteration once `cancel` is set (a solve over most
/// of a 224-pixel image runs for seconds).
pub fn impute(
    image: &[f32],
    (c, h, w): (usize, usize, usize),
    keep: &[bool],
    noise: &[f32],
    cancel: &CancelToken,
) -> Result<Vec<f32>> {
    let hw = h * w;
    if image.len() != c * hw || keep.len() != hw || noise.len() != c * hw {
        return Err(Error::Model(format!(
            "imputation: an image of {} values, a mask of {} and noise of {} do not fit [{c}, {h}, {w}]",
            image.len(),
            keep.len(),
            noise.len()
        )));
    }
    let unknown: Vec<usize> = (0..hw).filter(|&i| !keep[i]).collect();
    let mut out = image.to_vec();
    if unknown.is_empty() {
        return Ok(out);
    }
    let solution = if unknown.len() == hw {
        vec![0f32; hw * c]
    } else {
        solve(image, (c, h, w), keep, &unknown, cancel)?
    };
    for (k, &p) in unknown.iter().enumerate() {
        for ch in 0..c {
            out[ch * hw + p] = solution[k * c + ch] + noise[ch * hw + p];
        }
    }
    Ok(out)
}

/// Relative residual at which the conjugate gradients stop (float64; the solution is then
/// within ~1e-6 of a direct solver's, far below what float32 pixels resolve).
const TOLERANCE: f64 = 1e-11;
/// SSOR's relaxation factor (near optimal for the large holes of 224-pixel images).
const OMEGA: f64 = 1.7;

/// The imputation system over the removed pixels, `(-A) x = -b` in the library's terms:
/// symmetric positive definite (an M-matrix: each removed pixel's in-image neighbour weights
/// on the diagonal, minus the weights of removed neighbours off it).
struct System {
    /// Per unknown: the diagonal.
    diagonal: Vec<f64>,
    /// Per unknown: its removed neighbours (their unknown index, the weight).
    neighbours: Vec<Vec<(usize, f64)>>,
}

impl System {
    /// `y = A x` for `c` right-hand sides stored `[unknown][channel]`.
    fn apply(&self, x: &[f64], y: &mut [f64], c: usize) {
        for (i, row) in self.neighbours.iter().enumerate() {
            for ch in 0..c {
                let mut v = self.diagonal[i] * x[i * c + ch];
                for &(j, w) in row {
                    v -= w * x[j * c + ch];
                }
                y[i * c + ch] = v;
            }
        }
    }

    /// `z = M^-1 r` for the SSOR preconditioner `(D/w + L) (D/w)^-1 (D/w + U)` (up to scale).
    fn precondition(&self, r: &[f64], z: &mut [f64], c: usize) {
        let n = self.diagonal.len();
        for i in 0..n {
            let d = self.diagonal[i] / OMEGA;
            for ch in 0..c {
                let mut v = r[i * c + ch];
                for &(j, w) in &self.neighbours[i] {
                    if j < i {
                        v += w * z[j * c + ch];
                    }
                }
                z[i * c + ch] = v / d;
            }
        }
        for i in 0..n {
            let d = self.diagonal[i] / OMEGA;
            for ch in 0..c {
                z[i * c + ch] *= d;
            }
        }
        for i in (0..n).rev() {
            let d = self.diagonal[i] / OMEGA;
            for ch in 0..c {
                let mut v = z[i * c + ch];
                for &(j, w) in &self.neighbours[i] {
                    if j > i {
                        v += w * z[j * c + ch];
                    }
                }
                z[i * c + ch] = v / d;
            }
        }
    }
}

/// Solves the imputation system; returns `[unknown, c]` row-major, rounded to float32. SciPy's
/// `spsolve` factors the system; here SSOR-preconditioned conjugate gradients (float64, each
/// channel its own recurrence) run to a relative residual of [`TOLERANCE`], checking `cancel`
/// at every iteration.
fn solve(
    image: &[f32],
    (c, h, w): (usize, usize, usize),
    keep: &[bool],
    unknown: &[usize],
    cancel: &CancelToken,
) -> Result<Vec<f32>> {
    let hw = h * w;
    let n = unknown.len();
    let mut var_of = vec![usize::MAX; hw];
    for (k, &p) in unknown.iter().enumerate() {
        var_of[p] = k;
    }
    let mut system = System {
        diagonal: vec![0.0; n],
        neighbours: vec![Vec::new(); n],
    };
    let mut b = vec![0f64; n * c];
    for (k, &p) in unknown.iter().enumerate() {
        let (y, x) = ((p / w) as isize, (p % w) as isize);
        for ((dy, dx), weight) in NEIGHBOURS {
            let (ny, nx) = (y + dy, x + dx);
            if ny < 0 || nx < 0 || ny >= h as isize || nx >= w as isize {
                continue;
            }
            system.diagonal[k] += weight;
            let q = ny as usize * w + nx as usize;
            if keep[q] {
                for ch in 0..c {
                    b[k * c + ch] += weight * f64::from(image[ch * hw + q]);
                }
            } else {
                system.neighbours[k].push((var_of[q], weight));
            }
        }
    }
    // Conjugate gradients from 0, every channel at once (`[unknown][channel]`).
    let mut x = vec![0f64; n * c];
    let mut r = b.clone();
    let mut z = vec![0f64; n * c];
    system.precondition(&r, &mut z, c);
    let mut p = z.clone();
    let mut q = vec![0f64; n * c];
    let dot = |a: &[f64], b: &[f64], ch: usize| -> f64 {
        (0..n).map(|i| a[i * c + ch] * b[i * c + ch]).sum()
    };
    let norm_b: Vec<f64> = (0..c).map(|ch| dot(&b, &b, ch).sqrt()).collect();
    let mut rz: Vec<f64> = (0..c).map(|ch| dot(&r, &z, ch)).collect();
    let mut done: Vec<bool> = norm_b.iter().map(|&nb| nb == 0.0).collect();
    let max_iterations = 20 * n + 100;
    for _ in 0..max_iterations {
        if done.iter().all(|d| *d) {
            break;
        }
        cancel.check()?;
        system.apply(&p, &mut q, c);
        for ch in 0..c {
            if done[ch] {
                continue;
            }
            let alpha = rz[ch] / dot(&p, &q, ch);
            for i in 0..n {
                x[i * c + ch] += alpha * p[i * c + ch];
                r[i * c + ch] -= alpha * q[i * c + ch];
            }
            if dot(&r, &r, ch).sqrt() <= TOLERANCE * norm_b[ch] {
                done[ch] = true;
            }
        }
        system.precondition(&r, &mut z, c);
        for ch in (0..c).filter(|&ch| !done[ch]) {
            let rz_new = dot(&r, &z, ch);
            let beta = rz_new / rz[ch];
            rz[ch] = rz_new;
            for i in 0..n {
                p[i * c + ch] = z[i * c + ch] + beta * p[i * c + ch];
            }
        }
    }
    if !done.iter().all(|d| *d) {
        return Err(Error::Model(format!(
            "the imputation of {n} pixels did not converge in {max_iterations} iterations"
        )));
    }
    Ok(x.iter().map(|&v| v as f32).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentile_is_numpys() {
        // numpy.percentile(np.float32([3, 1, 2, 10]), [0, 25, 50, 90, 100]): 90 is 7.8999996, not
        // the nearest float32 to 7.9 (the float32 rounding of numpy 2).
        let v = [3.0f32, 1.0, 2.0, 10.0];
        assert_eq!(percentile(&v, 0.0), 1.0);
        assert_eq!(percentile(&v, 25.0), 1.75);
        assert_eq!(percentile(&v, 50.0), 2.5);
        assert_eq!(percentile(&v, 90.0), 7.899_999_6);
        assert_eq!(percentile(&v, 100.0), 10.0);
    }

    #[test]
    fn most_and_least_relevant_masks_remove_opposite_ends() {
        let map: Vec<f32> = (0..10).map(|i| i as f32 / 9.0).collect();
        let morf = keep_mask(&map, 80.0, true);
        assert_eq!(morf.iter().filter(|k| !**k).count(), 2);
        assert!(!morf[9] && !morf[8] && morf[0]);
        let lerf = keep_mask(&map, 80.0, false);
        assert!(!lerf[0] && !lerf[1] && lerf[9]);
    }

    #[test]
    fn a_linear_ramp_is_imputed_exactly() {
        // A plane is its neighbours' weighted mean (symmetric weights): the imputation of a
        // removed block of a ramp gives the ramp back.
        let (h, w) = (6, 7);
        let image: Vec<f32> = (0..h * w)
            .map(|p| (p / w) as f32 * 0.5 + (p % w) as f32 * 0.25)
            .collect();
        let keep: Vec<bool> = (0..h * w)
            .map(|p| !((2..4).contains(&(p / w)) && (2..5).contains(&(p % w))))
            .collect();
        let go = CancelToken::new();
        let out = impute(&image, (1, h, w), &keep, &vec![0.0; h * w], &go).unwrap();
        for (a, b) in out.iter().zip(&image) {
            assert!((a - b).abs() < 1e-5, "{a} vs {b}");
        }
        let noisy = impute(&image, (1, h, w), &keep, &vec![0.5; h * w], &go).unwrap();
        assert!((noisy[2 * w + 2] - image[2 * w + 2] - 0.5).abs() < 1e-5);
        assert_eq!(noisy[0], image[0]);
    }

    /// A cancelled token stops the solve (at its first iteration) instead of imputing: the
    /// random-map baseline's solves, like every map's, end on Cancel.
    #[test]
    fn a_cancelled_imputation_stops_with_cancelled() {
        let (h, w) = (64, 64);
        let image: Vec<f32> = (0..h * w).map(|p| (p as f32 * 0.37).sin()).collect();
        let keep: Vec<bool> = (0..h * w).map(|p| p % 7 == 0).collect();
        let noise = vec![0.0; h * w];
        let cancel = CancelToken::new();
        assert!(impute(&image, (1, h, w), &keep, &noise, &cancel).is_ok());
        cancel.cancel();
        let err = impute(&image, (1, h, w), &keep, &noise, &cancel).unwrap_err();
        assert!(matches!(err, Error::Cancelled), "{err}");
        // Nothing removed: nothing to solve, the image comes back even when cancelled.
        let all = vec![true; h * w];
        assert!(impute(&image, (1, h, w), &all, &noise, &cancel).is_ok());
    }
}
