//! ROAD (Rong et al. 2022, "A Consistent and Efficient Evaluation Strategy for Attribution
//! Methods"): pixels are removed by noisy linear imputation, as pytorch-grad-cam 1.5.7's
//! `NoisyLinearImputer` does it, and which pixels go is decided by a percentile of the map
//! (`RemoveMostRelevantFirst` / `RemoveLeastRelevantFirst`).
//!
//! Each removed pixel's value is the weighted mean of its 8 neighbours (weight 1/6 for the 4
//! edge neighbours, 1/12 for the 4 corners, neighbours outside the image left out), known
//! neighbours entering the right-hand side: one sparse symmetric positive-definite system over
//! the removed pixels, then `noise` added to every imputed value. SciPy's `spsolve` factors
//! the system there; here conjugate gradients preconditioned by aggregation multigrid solve it
//! (float64, to a relative residual of 1e-11).

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
/// within ~1e-9 of a direct solver's, far below what float32 pixels resolve).
const TOLERANCE: f64 = 1e-11;
/// The most unknowns of the coarsest multigrid level, solved there by a direct factorisation
/// (a system this small is solved directly: its factor is cheaper than the iterations).
const COARSEST: usize = 4096;
/// The factor on the coarse correction: piecewise-constant prolongation under-corrects the
/// smooth error by about half in 2-D, and scaling it (Vaněk et al.'s over-correction) took the
/// iterations on 224-pixel holes from 30 to 18; below 2 the cycle stays positive definite.
const OVER_CORRECTION: f64 = 1.5;

/// A symmetric M-matrix: `A_ii = diagonal[i]`, `A_ij = -w` for each `(j, w)` in
/// `neighbours[i]` (`w > 0`, each pair listed in both rows).
struct Operator {
    diagonal: Vec<f64>,
    neighbours: Vec<Vec<(usize, f64)>>,
}

impl Operator {
    /// `y = A x`.
    fn apply(&self, x: &[f64], y: &mut [f64]) {
        for (i, row) in self.neighbours.iter().enumerate() {
            let mut v = self.diagonal[i] * x[i];
            for &(j, w) in row {
                v -= w * x[j];
            }
            y[i] = v;
        }
    }

    /// One Gauss-Seidel sweep on `A x = b`, in increasing unknown order or (`forward ==
    /// false`) decreasing: the two sweeps are each other's adjoint.
    fn gauss_seidel(&self, b: &[f64], x: &mut [f64], forward: bool) {
        let mut relax = |i: usize| {
            let mut v = b[i];
            for &(j, w) in &self.neighbours[i] {
                v += w * x[j];
            }
            x[i] = v / self.diagonal[i];
        };
        if forward {
            (0..b.len()).for_each(&mut relax);
        } else {
            (0..b.len()).rev().for_each(&mut relax);
        }
    }

    /// The Galerkin product `Pᵀ A P` for the piecewise-constant prolongation that gives each
    /// unknown its aggregate's value (`aggregate[i]` < `count`).
    fn galerkin(&self, aggregate: &[usize], count: usize) -> Operator {
        let mut diagonal = vec![0f64; count];
        let mut neighbours: Vec<Vec<(usize, f64)>> = vec![Vec::new(); count];
        for (i, row) in self.neighbours.iter().enumerate() {
            let ai = aggregate[i];
            diagonal[ai] += self.diagonal[i];
            for &(j, w) in row {
                let aj = aggregate[j];
                if aj == ai {
                    diagonal[ai] -= w;
                } else if let Some(entry) = neighbours[ai].iter_mut().find(|e| e.0 == aj) {
                    entry.1 += w;
                } else {
                    neighbours[ai].push((aj, w));
                }
            }
        }
        Operator {
            diagonal,
            neighbours,
        }
    }
}

/// The imputation system over the removed pixels, `(-A) x = -b` in the library's terms:
/// symmetric positive definite (an M-matrix: each removed pixel's in-image neighbour weights
/// on the diagonal, minus the weights of removed neighbours off it), unknowns in raster order.
struct System {
    operator: Operator,
    /// `[channel][unknown]`: the known neighbours' weighted values.
    rhs: Vec<Vec<f64>>,
}

impl System {
    /// The system over the removed pixels `unknown` (raster order).
    fn assemble(
        image: &[f32],
        (c, h, w): (usize, usize, usize),
        keep: &[bool],
        unknown: &[usize],
    ) -> Self {
        let hw = h * w;
        let n = unknown.len();
        let mut var_of = vec![usize::MAX; hw];
        for (k, &p) in unknown.iter().enumerate() {
            var_of[p] = k;
        }
        let mut operator = Operator {
            diagonal: vec![0.0; n],
            neighbours: vec![Vec::new(); n],
        };
        let mut rhs = vec![vec![0f64; n]; c];
        for (k, &p) in unknown.iter().enumerate() {
            let (y, x) = ((p / w) as isize, (p % w) as isize);
            for ((dy, dx), weight) in NEIGHBOURS {
                let (ny, nx) = (y + dy, x + dx);
                if ny < 0 || nx < 0 || ny >= h as isize || nx >= w as isize {
                    continue;
                }
                operator.diagonal[k] += weight;
                let q = ny as usize * w + nx as usize;
                if keep[q] {
                    for (ch, rhs) in rhs.iter_mut().enumerate() {
                        rhs[k] += weight * f64::from(image[ch * hw + q]);
                    }
                } else {
                    operator.neighbours[k].push((var_of[q], weight));
                }
            }
        }
        System { operator, rhs }
    }
}

/// An aggregation multigrid hierarchy over a [`System`]'s operator, used as the conjugate
/// gradients' preconditioner: each level merges the unknowns of 2x2 blocks of the level
/// above (pixel coordinates halved), its operator the Galerkin product; the coarsest level
/// (at most [`COARSEST`] unknowns, or one block of the whole image) is factored. One V-cycle
/// (a forward Gauss-Seidel sweep, the coarse correction, a backward sweep) is symmetric and
/// positive definite, so conjugate gradients stay valid, and it removes the smooth error that
/// makes plain or SSOR-preconditioned gradients slow on large holes.
struct Multigrid {
    /// The operators, finest first.
    levels: Vec<Operator>,
    /// Per level but the coarsest: each unknown's aggregate on the next level.
    aggregates: Vec<Vec<usize>>,
    coarsest: Skyline,
}

impl Multigrid {
    /// The hierarchy for `operator`, whose unknowns lie at the pixels `positions` of an image
    /// `w` wide.
    fn new(operator: Operator, positions: &[usize], w: usize) -> Result<Self> {
        let mut coordinates: Vec<(usize, usize)> =
            positions.iter().map(|&p| (p / w, p % w)).collect();
        let mut levels = vec![operator];
        let mut aggregates = Vec::new();
        loop {
            let fine = &levels[levels.len() - 1];
            let whole_image = coordinates.iter().all(|&c| c == coordinates[0]);
            if fine.diagonal.len() <= COARSEST || whole_image {
                break;
            }
            let mut index = std::collections::HashMap::new();
            let aggregate: Vec<usize> = coordinates
                .iter()
                .map(|&(y, x)| {
                    let next = index.len();
                    *index.entry((y / 2, x / 2)).or_insert(next)
                })
                .collect();
            let mut coarse = vec![(0, 0); index.len()];
            for (&(y, x), &i) in &index {
                coarse[i] = (y, x);
            }
            let operator = fine.galerkin(&aggregate, coarse.len());
            levels.push(operator);
            aggregates.push(aggregate);
            coordinates = coarse;
        }
        let coarsest = Skyline::factor(&levels[levels.len() - 1])?;
        Ok(Multigrid {
            levels,
            aggregates,
            coarsest,
        })
    }

    /// One V-cycle from zero on level `level` for the right-hand side `b`.
    fn cycle(&self, level: usize, b: &[f64]) -> Vec<f64> {
        let mut x = b.to_vec();
        if level + 1 == self.levels.len() {
            self.coarsest.solve(&mut x);
            return x;
        }
        let (operator, aggregate) = (&self.levels[level], &self.aggregates[level]);
        x.iter_mut().for_each(|v| *v = 0.0);
        operator.gauss_seidel(b, &mut x, true);
        let mut r = vec![0f64; b.len()];
        operator.apply(&x, &mut r);
        let mut coarse_b = vec![0f64; self.levels[level + 1].diagonal.len()];
        for (i, (bi, ri)) in b.iter().zip(&r).enumerate() {
            coarse_b[aggregate[i]] += bi - ri;
        }
        let correction = self.cycle(level + 1, &coarse_b);
        for (xi, &a) in x.iter_mut().zip(aggregate) {
            *xi += OVER_CORRECTION * correction[a];
        }
        operator.gauss_seidel(b, &mut x, false);
        x
    }

    /// Solves `A x = b` (the finest operator) by conjugate gradients preconditioned with one
    /// V-cycle, from 0, to a relative residual of [`TOLERANCE`], checking `cancel` at every
    /// iteration.
    fn solve(&self, b: &[f64], cancel: &CancelToken) -> Result<Vec<f64>> {
        let n = b.len();
        let dot = |a: &[f64], b: &[f64]| -> f64 { a.iter().zip(b).map(|(x, y)| x * y).sum() };
        let mut x = vec![0f64; n];
        let norm_b = dot(b, b).sqrt();
        if norm_b == 0.0 {
            return Ok(x);
        }
        let operator = &self.levels[0];
        let mut r = b.to_vec();
        let mut z = self.cycle(0, &r);
        let mut p = z.clone();
        let mut q = vec![0f64; n];
        let mut rz = dot(&r, &z);
        let max_iterations = 10 * n + 100;
        for _ in 0..max_iterations {
            cancel.check()?;
            operator.apply(&p, &mut q);
            let alpha = rz / dot(&p, &q);
            for i in 0..n {
                x[i] += alpha * p[i];
                r[i] -= alpha * q[i];
            }
            if dot(&r, &r).sqrt() <= TOLERANCE * norm_b {
                return Ok(x);
            }
            z = self.cycle(0, &r);
            let rz_new = dot(&r, &z);
            let beta = rz_new / rz;
            rz = rz_new;
            for i in 0..n {
                p[i] = z[i] + beta * p[i];
            }
        }
        Err(Error::Model(format!(
            "the imputation of {n} pixels did not converge in {max_iterations} iterations"
        )))
    }
}

/// The Cholesky factor `L` (`A = L Lᵀ`) of an [`Operator`] in skyline storage: row `i` holds
/// columns `first[i]..=i` contiguously from `start[i]`, `first[i]` being the row's lowest
/// neighbour (the factorisation fills only inside that profile).
struct Skyline {
    first: Vec<usize>,
    start: Vec<usize>,
    values: Vec<f64>,
}

impl Skyline {
    /// Factors `operator` (row-oriented Cholesky: each entry one dot product of two rows).
    fn factor(operator: &Operator) -> Result<Self> {
        let n = operator.diagonal.len();
        let first: Vec<usize> = operator
            .neighbours
            .iter()
            .enumerate()
            .map(|(i, row)| row.iter().map(|&(j, _)| j).fold(i, usize::min))
            .collect();
        let mut start = Vec::with_capacity(n + 1);
        let mut total = 0usize;
        for (i, &f) in first.iter().enumerate() {
            start.push(total);
            total += i - f + 1;
        }
        start.push(total);
        let mut values = vec![0f64; total];
        for i in 0..n {
            values[start[i] + i - first[i]] = operator.diagonal[i];
            for &(j, w) in &operator.neighbours[i] {
                if j < i {
                    values[start[i] + j - first[i]] = -w;
                }
            }
        }
        for i in 0..n {
            let (done, rest) = values.split_at_mut(start[i]);
            let fi = first[i];
            let row = &mut rest[..=i - fi];
            for j in fi..i {
                let fj = first[j];
                let lo = fi.max(fj);
                let row_j = &done[start[j]..=start[j] + j - fj];
                let s = dot(&row[lo - fi..j - fi], &row_j[lo - fj..j - fj]);
                row[j - fi] = (row[j - fi] - s) / row_j[j - fj];
            }
            let d = row[i - fi] - dot(&row[..i - fi], &row[..i - fi]);
            if d.is_nan() || d <= 0.0 {
                return Err(Error::Model(format!(
                    "the imputation system is not positive definite at unknown {i} of {n} \
                     (pivot {d})"
                )));
            }
            row[i - fi] = d.sqrt();
        }
        Ok(Skyline {
            first,
            start,
            values,
        })
    }

    /// Row `i` of the factor: columns `first[i]..=i`.
    fn row(&self, i: usize) -> &[f64] {
        &self.values[self.start[i]..self.start[i + 1]]
    }

    /// Solves `L Lᵀ x = b` in place.
    fn solve(&self, x: &mut [f64]) {
        for i in 0..x.len() {
            let (row, f) = (self.row(i), self.first[i]);
            let s = dot(&row[..i - f], &x[f..i]);
            x[i] = (x[i] - s) / row[i - f];
        }
        for i in (0..x.len()).rev() {
            let (row, f) = (self.row(i), self.first[i]);
            x[i] /= row[i - f];
            let xi = x[i];
            for (xk, l) in x[f..i].iter_mut().zip(&row[..i - f]) {
                *xk -= l * xi;
            }
        }
    }
}

/// `Σ a_k b_k` over equal-length slices, in eight independent partial sums (so that the
/// compiler vectorises it; the order differs from a plain left-to-right sum only by rounding).
fn dot(a: &[f64], b: &[f64]) -> f64 {
    let mut acc = [0f64; 8];
    let (ca, cb) = (a.chunks_exact(8), b.chunks_exact(8));
    let tail: f64 = ca
        .remainder()
        .iter()
        .zip(cb.remainder())
        .map(|(x, y)| x * y)
        .sum();
    for (x, y) in ca.zip(cb) {
        for k in 0..8 {
            acc[k] += x[k] * y[k];
        }
    }
    acc.iter().sum::<f64>() + tail
}

/// Solves the imputation system; returns `[unknown, c]` row-major, rounded to float32.
fn solve(
    image: &[f32],
    dims: (usize, usize, usize),
    keep: &[bool],
    unknown: &[usize],
    cancel: &CancelToken,
) -> Result<Vec<f32>> {
    let (c, _, w) = dims;
    let system = System::assemble(image, dims, keep, unknown);
    let multigrid = Multigrid::new(system.operator, unknown, w)?;
    let mut out = vec![0f32; unknown.len() * c];
    for (ch, b) in system.rhs.iter().enumerate() {
        for (k, v) in multigrid.solve(b, cancel)?.into_iter().enumerate() {
            out[k * c + ch] = v as f32;
        }
    }
    Ok(out)
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

    /// A hole shaped like a CAM's top percentiles (a blob plus scattered pixels) in a
    /// noise-like image, large enough for a multigrid hierarchy: the preconditioned
    /// conjugate gradients and a direct factorisation of the whole system, two independent
    /// solvers, agree, and the solution satisfies every removed pixel's neighbour-mean
    /// equation.
    #[test]
    fn multigrid_gradients_agree_with_the_direct_solve_and_satisfy_the_equations() {
        let (c, h, w) = (3, 160, 150);
        let image: Vec<f32> = (0..c * h * w)
            .map(|i| ((i * 7919 % 1013) as f32 / 1013.0) - 0.5)
            .collect();
        let keep: Vec<bool> = (0..h * w)
            .map(|p| {
                let (y, x) = ((p / w) as f32, (p % w) as f32);
                let blob = (y - 80.0).powi(2) / 4900.0 + (x - 75.0).powi(2) / 4225.0 < 1.0;
                !(blob || p % 17 == 3)
            })
            .collect();
        let unknown: Vec<usize> = (0..h * w).filter(|&p| !keep[p]).collect();
        let system = System::assemble(&image, (c, h, w), &keep, &unknown);
        let factor = Skyline::factor(&system.operator).unwrap();
        let rhs = system.rhs.clone();
        let multigrid = Multigrid::new(system.operator, &unknown, w).unwrap();
        assert!(
            multigrid.levels.len() >= 3,
            "{} levels",
            multigrid.levels.len()
        );
        for b in &rhs {
            let mut direct = b.clone();
            factor.solve(&mut direct);
            let iterative = multigrid.solve(b, &CancelToken::new()).unwrap();
            for (a, b) in direct.iter().zip(&iterative) {
                assert!((a - b).abs() < 1e-8, "{a} vs {b}");
            }
        }
        let go = CancelToken::new();
        let out = impute(&image, (c, h, w), &keep, &vec![0.0; c * h * w], &go).unwrap();
        for &p in &unknown {
            let (y, x) = ((p / w) as isize, (p % w) as isize);
            for ch in 0..c {
                let (mut sum, mut weights) = (0f64, 0f64);
                for ((dy, dx), weight) in NEIGHBOURS {
                    let (ny, nx) = (y + dy, x + dx);
                    if ny >= 0 && nx >= 0 && ny < h as isize && nx < w as isize {
                        let q = ny as usize * w + nx as usize;
                        sum += weight * f64::from(out[ch * h * w + q]);
                        weights += weight;
                    }
                }
                let v = f64::from(out[ch * h * w + p]);
                assert!(
                    (v - sum / weights).abs() < 1e-5,
                    "pixel {p}: {v} vs {}",
                    sum / weights
                );
            }
        }
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
