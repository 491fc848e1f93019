//! Ridge regression solved in closed form from streamed sums, for the probe's input
//! reconstruction ([`super::reconstruct`]): rows are added batch by batch to [`RidgeStats`]
//! (row count, column sums, `X'X`, `X'Y`, per-target sums of squares, all f64), so memory is
//! `d x (d + k)` however many rows there are.
//!
//! The model (as scikit-learn's `StandardScaler` then `Ridge(alpha = alpha * rows)`): features
//! standardised with the fitting rows' mean and population standard deviation (a feature that
//! never varies keeps scale 1 and so contributes nothing), an unpenalised intercept, and the
//! penalty `alpha * rows * |B|^2` on the standardised coefficients `B`, i.e.
//! `(R + alpha I) B = R_xy` with `R` the features' correlation matrix and `R_xy` their
//! covariances with the targets over their standard deviations. Scored by the coefficient of
//! determination of scikit-learn's `r2_score(multioutput="variance_weighted")`: one minus the
//! sum of squared errors over the sum of squares about the scored rows' own column means, all
//! columns together. The reference is `tests/fixtures/make/fx_ridge.py`.

use candle_core::{DType, Device, Tensor};
use nalgebra::{DMatrix, SymmetricEigen};

use crate::{Error, Result};

/// Sufficient statistics of rows `(x [d], y [k])`.
#[derive(Clone, Debug)]
pub struct RidgeStats {
    /// Rows added.
    pub n: f64,
    /// `[1, d]` column sums of `x`.
    sx: Tensor,
    /// `[1, k]` column sums of `y`.
    sy: Tensor,
    /// `[1, k]` column sums of `y * y`.
    syy: Tensor,
    /// `[d, d]` `X'X`.
    sxx: Tensor,
    /// `[d, k]` `X'Y`.
    sxy: Tensor,
}

/// A feature's variance is taken as zero (scale 1) below this fraction of the largest.
const CONSTANT_FEATURE: f64 = 1e-12;

impl RidgeStats {
    /// No rows yet, `d` features and `k` targets.
    pub fn new(d: usize, k: usize) -> Result<Self> {
        let z = |r: usize, c: usize| Tensor::zeros((r, c), DType::F64, &Device::Cpu);
        Ok(RidgeStats {
            n: 0.0,
            sx: z(1, d)?,
            sy: z(1, k)?,
            syy: z(1, k)?,
            sxx: z(d, d)?,
            sxy: z(d, k)?,
        })
    }

    /// Adds rows `x` `[rows, d]` and `y` `[rows, k]` (any float dtype, any device).
    pub fn add(&mut self, x: &Tensor, y: &Tensor) -> Result<()> {
        let x = x.to_device(&Device::Cpu)?.to_dtype(DType::F64)?;
        let y = y.to_device(&Device::Cpu)?.to_dtype(DType::F64)?;
        let (rows, d) = x.dims2()?;
        let (rows_y, k) = y.dims2()?;
        if rows != rows_y || d != self.sxx.dim(0)? || k != self.sy.dim(1)? {
            return Err(Error::Model(format!(
                "ridge: rows [{rows}, {d}] and [{rows_y}, {k}] do not fit statistics of {} features and {} targets",
                self.sxx.dim(0)?,
                self.sy.dim(1)?
            )));
        }
        let xt = x.t()?;
        self.n += rows as f64;
        self.sx = (&self.sx + x.sum_keepdim(0)?)?;
        self.sy = (&self.sy + y.sum_keepdim(0)?)?;
        self.syy = (&self.syy + y.sqr()?.sum_keepdim(0)?)?;
        self.sxx = (&self.sxx + xt.matmul(&x)?)?;
        self.sxy = (&self.sxy + xt.matmul(&y)?)?;
        Ok(())
    }

    /// The statistics of both sets of rows together.
    pub fn merged(&self, other: &RidgeStats) -> Result<RidgeStats> {
        Ok(RidgeStats {
            n: self.n + other.n,
            sx: (&self.sx + &other.sx)?,
            sy: (&self.sy + &other.sy)?,
            syy: (&self.syy + &other.syy)?,
            sxx: (&self.sxx + &other.sxx)?,
            sxy: (&self.sxy + &other.sxy)?,
        })
    }

    /// Only the targets `start..start + len`.
    pub fn targets(&self, start: usize, len: usize) -> Result<RidgeStats> {
        Ok(RidgeStats {
            n: self.n,
            sx: self.sx.clone(),
            sy: self.sy.narrow(1, start, len)?,
            syy: self.syy.narrow(1, start, len)?,
            sxx: self.sxx.clone(),
            sxy: self.sxy.narrow(1, start, len)?,
        })
    }

    /// `[1, k]` sums of squares of each target about its mean.
    fn sst(&self) -> Result<Tensor> {
        Ok((&self.syy - (self.sy.sqr()? / self.n.max(1.0))?)?)
    }
}

/// The fitting rows' standardisation and moments: `mu_x` `[1, d]`, `sigma` `[d, 1]`,
/// `mu_y` `[1, k]`, `r` `[d, d]` (correlations), `rxy` `[d, k]`.
struct Standardised {
    mu_x: Tensor,
    sigma: Tensor,
    mu_y: Tensor,
    r: Tensor,
    rxy: Tensor,
}

impl Standardised {
    fn of(s: &RidgeStats) -> Result<Standardised> {
        if s.n < 1.0 {
            return Err(Error::Model("ridge: no rows to fit".into()));
        }
        let mu_x = (&s.sx / s.n)?;
        let mu_y = (&s.sy / s.n)?;
        let cxx = ((&s.sxx / s.n)? - mu_x.t()?.matmul(&mu_x)?)?;
        let cxy = ((&s.sxy / s.n)? - mu_x.t()?.matmul(&mu_y)?)?;
        let d = cxx.dim(0)?;
        let all = cxx.flatten_all()?.to_vec1::<f64>()?;
        let var: Vec<f64> = (0..d).map(|i| all[i * d + i]).collect();
        let top = var.iter().copied().fold(0f64, f64::max);
        let sigma: Vec<f64> = var
            .iter()
            .map(|&v| {
                if v > top * CONSTANT_FEATURE && v > 0.0 {
                    v.sqrt()
                } else {
                    1.0
                }
            })
            .collect();
        let sigma = Tensor::from_vec(sigma, (d, 1), &Device::Cpu)?;
        let r = cxx.broadcast_div(&sigma)?.broadcast_div(&sigma.t()?)?;
        let rxy = cxy.broadcast_div(&sigma)?;
        Ok(Standardised {
            mu_x,
            sigma,
            mu_y,
            r,
            rxy,
        })
    }

    /// The predictor of standardised coefficients `b` `[d, k]`: `x W + c`.
    fn predictor(&self, b: &Tensor) -> Result<Linear> {
        let w = b.broadcast_div(&self.sigma)?;
        let c = (&self.mu_y - self.mu_x.matmul(&w)?)?;
        Ok(Linear { w, c })
    }
}

/// A fitted linear map `y = x W + c`: `w` `[d, k]`, `c` `[1, k]`.
#[derive(Clone, Debug)]
pub struct Linear {
    pub w: Tensor,
    pub c: Tensor,
}

impl Linear {
    /// `[1, k]` sums of squared errors over the rows of `s`.
    fn sse(&self, s: &RidgeStats) -> Result<Tensor> {
        let (w, c) = (&self.w, &self.c);
        // sum (y - xW - c)^2 = syy - 2 (diag(W'Sxy) + c sy) + diag(W'SxxW) + 2 c (sx W) + n c^2
        let w_sxy = (w * &s.sxy)?.sum_keepdim(0)?;
        let w_sxx_w = (w * s.sxx.matmul(w)?)?.sum_keepdim(0)?;
        let cross = (&w_sxy + (c * &s.sy)?)?;
        let fitted = ((&w_sxx_w + (c * s.sx.matmul(w)?)? * 2.0)? + (c.sqr()? * s.n)?)?;
        Ok(((&s.syy - cross * 2.0)? + fitted)?)
    }

    /// R^2 on the rows of `s`: 1 - SSE / SST, all targets together.
    pub fn r2(&self, s: &RidgeStats) -> Result<f64> {
        let sse = self.sse(s)?.sum_all()?.to_scalar::<f64>()?;
        let sst = s.sst()?.sum_all()?.to_scalar::<f64>()?;
        Ok(if sst > 0.0 { 1.0 - sse / sst } else { 0.0 })
    }
}

fn to_matrix(t: &Tensor) -> Result<DMatrix<f64>> {
    let (r, c) = t.dims2()?;
    Ok(DMatrix::from_row_slice(
        r,
        c,
        &t.flatten_all()?.to_vec1::<f64>()?,
    ))
}

fn to_tensor(m: &DMatrix<f64>) -> Result<Tensor> {
    // nalgebra stores columns: the slice read as rows is the transpose.
    Ok(Tensor::from_slice(m.as_slice(), (m.ncols(), m.nrows()), &Device::Cpu)?.t()?)
}

/// Ridge of strength `alpha` fitted to the rows of `s` (Cholesky of `R + alpha I`).
pub fn fit(s: &RidgeStats, alpha: f64) -> Result<Linear> {
    let st = Standardised::of(s)?;
    let d = st.r.dim(0)?;
    let a = to_matrix(&st.r)? + DMatrix::<f64>::identity(d, d) * alpha;
    let chol = a.cholesky().ok_or_else(|| {
        Error::Model(format!(
            "ridge: the features' correlations plus {alpha} are not positive definite"
        ))
    })?;
    let b = chol.solve(&to_matrix(&st.rxy)?);
    st.predictor(&to_tensor(&b)?)
}

/// What [`choose`] picked.
#[derive(Clone, Debug, PartialEq)]
pub struct Choice {
    /// Index into the strengths.
    pub alpha: usize,
    /// The target group.
    pub group: usize,
    /// Validation R^2 per group and strength, `[groups][alphas]`.
    pub validation_r2: Vec<Vec<f64>>,
}

/// Fits every strength of `alphas` on `fit` (one eigendecomposition) for the targets split into
/// `groups` equal consecutive groups (candidate targets, e.g. shifted copies of an image), and
/// picks the pair with the best R^2 on `validation`.
pub fn choose(
    fitting: &RidgeStats,
    validation: &RidgeStats,
    groups: usize,
    alphas: &[f64],
) -> Result<Choice> {
    let k = fitting.sy.dim(1)?;
    if groups == 0 || k % groups != 0 || alphas.is_empty() {
        return Err(Error::Model(format!(
            "ridge: {k} targets are not {groups} equal groups, or no strength to try"
        )));
    }
    let per = k / groups;
    let st = Standardised::of(fitting)?;
    let eig = SymmetricEigen::new(to_matrix(&st.r)?);
    let v = to_tensor(&eig.eigenvectors)?; // [d, d], columns are eigenvectors
    let lambda = Tensor::from_slice(eig.eigenvalues.as_slice(), (v.dim(0)?, 1), &Device::Cpu)?;
    let g = v.t()?.matmul(&st.rxy)?; // [d, k]
    let sst = validation.sst()?;
    let mut r2 = vec![vec![0f64; alphas.len()]; groups];
    for (a, &alpha) in alphas.iter().enumerate() {
        let b = v.matmul(&g.broadcast_div(&(&lambda + alpha)?)?)?;
        let sse = st.predictor(&b)?.sse(validation)?;
        for (grp, row) in r2.iter_mut().enumerate() {
            let e = sse
                .narrow(1, grp * per, per)?
                .sum_all()?
                .to_scalar::<f64>()?;
            let t = sst
                .narrow(1, grp * per, per)?
                .sum_all()?
                .to_scalar::<f64>()?;
            row[a] = if t > 0.0 { 1.0 - e / t } else { 0.0 };
        }
    }
    let mut best = (0, 0);
    for (grp, row) in r2.iter().enumerate() {
        for (a, &v) in row.iter().enumerate() {
            if v > r2[best.0][best.1] {
                best = (grp, a);
            }
        }
    }
    Ok(Choice {
        alpha: best.1,
        group: best.0,
        validation_r2: r2,
    })
}

/// Held-out R^2 of the ridge chosen by [`choose`] on `fit` and `validation`, refitted on both:
/// `(R^2, choice)`.
pub fn held_out_r2(
    fitting: &RidgeStats,
    validation: &RidgeStats,
    held_out: &RidgeStats,
    groups: usize,
    alphas: &[f64],
) -> Result<(f64, Choice)> {
    let choice = choose(fitting, validation, groups, alphas)?;
    let per = fitting.sy.dim(1)? / groups;
    let both = fitting
        .merged(validation)?
        .targets(choice.group * per, per)?;
    let model = fit(&both, alphas[choice.alpha])?;
    let r2 = model.r2(&held_out.targets(choice.group * per, per)?)?;
    Ok((r2, choice))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `n` rows of 3 features (seeded, different scales) and their values.
    fn rows(n: usize, seed: u64) -> Result<Tensor> {
        use rand::{Rng, SeedableRng};
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        let v: Vec<f64> = (0..n * 3)
            .map(|i| rng.random_range(-1.0..1.0) * [1.0, 30.0, 0.01][i % 3])
            .collect();
        Ok(Tensor::from_vec(v, (n, 3), &Device::Cpu)?)
    }

    fn stats(x: &Tensor, y: &Tensor) -> Result<RidgeStats> {
        let mut s = RidgeStats::new(x.dim(1)?, y.dim(1)?)?;
        // In two batches, as the probe adds them.
        let half = x.dim(0)? / 2;
        s.add(&x.narrow(0, 0, half)?, &y.narrow(0, 0, half)?)?;
        let rest = x.dim(0)? - half;
        s.add(&x.narrow(0, half, rest)?, &y.narrow(0, half, rest)?)?;
        Ok(s)
    }

    #[test]
    fn an_exact_linear_target_is_recovered_and_noise_is_not() -> Result<()> {
        let w = Tensor::new(&[[2.0f64, -1.0], [0.1, 0.0], [50.0, 3.0]], &Device::Cpu)?;
        let linear = |x: &Tensor| -> Result<Tensor> { Ok((x.matmul(&w)? + 0.7)?) };
        let (xf, xv, xh) = (rows(2000, 1)?, rows(1000, 2)?, rows(1000, 3)?);
        // Noise independent of the features: two more columns (a second group).
        let noise = |n: usize, seed: u64| -> Result<Tensor> { Ok(rows(n, seed)?.narrow(1, 0, 2)?) };
        let y = |x: &Tensor, seed: u64| -> Result<Tensor> {
            Ok(Tensor::cat(&[linear(x)?, noise(x.dim(0)?, seed)?], 1)?)
        };
        let (sf, sv, sh) = (
            stats(&xf, &y(&xf, 11)?)?,
            stats(&xv, &y(&xv, 12)?)?,
            stats(&xh, &y(&xh, 13)?)?,
        );
        let alphas = [1e-6, 1e-2, 1.0];
        let (r2, choice) = held_out_r2(&sf, &sv, &sh, 2, &alphas)?;
        assert_eq!((choice.group, choice.alpha), (0, 0), "{choice:?}");
        assert!(r2 > 1.0 - 1e-6, "{r2}");
        // The noise group alone: nothing to explain, held-out R^2 about 0 (at most slightly
        // below: the fit's noise does not carry over).
        for a in 0..alphas.len() {
            assert!(choice.validation_r2[1][a].abs() < 0.01, "{choice:?}");
        }
        let noise_model = fit(&sf.targets(2, 2)?, 1.0)?;
        let r2_noise = noise_model.r2(&sh.targets(2, 2)?)?;
        assert!(r2_noise.abs() < 0.01, "{r2_noise}");
        // The fitted map is the true one, in original units (the intercept too).
        let exact = fit(&sf.targets(0, 2)?, 1e-9)?;
        let got = exact.w.to_vec2::<f64>()?;
        for (g, want) in got.iter().zip(w.to_vec2::<f64>()?) {
            for (a, b) in g.iter().zip(want) {
                assert!((a - b).abs() < 1e-4 * b.abs().max(1.0), "{got:?}");
            }
        }
        let c = exact.c.to_vec2::<f64>()?;
        assert!(c[0].iter().all(|v| (v - 0.7).abs() < 1e-4), "{c:?}");
        Ok(())
    }

    #[test]
    fn mismatched_rows_and_groups_are_refused() -> Result<()> {
        let mut s = RidgeStats::new(3, 2)?;
        assert!(s.add(&rows(4, 1)?, &rows(5, 2)?.narrow(1, 0, 2)?).is_err());
        assert!(s.add(&rows(4, 1)?, &rows(4, 2)?).is_err());
        s.add(&rows(4, 1)?, &rows(4, 2)?.narrow(1, 0, 2)?)?;
        assert!(choose(&s, &s, 3, &[1.0]).is_err());
        assert!(fit(&RidgeStats::new(3, 2)?, 1.0).is_err());
        Ok(())
    }
}
