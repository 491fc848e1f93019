//! Principal component analysis of a feature matrix, as scikit-learn's `PCA` computes it:
//! centred data, components by decreasing variance, each component's sign chosen so that its
//! largest-magnitude entry is positive (scikit-learn >= 1.5's `svd_flip(u_based_decision=False)`).

use candle_core::{DType, Device, Tensor};
use nalgebra::{DMatrix, SymmetricEigen};

use crate::{Error, Result};

/// A fitted projection onto the first `k` principal components.
#[derive(Clone, Debug)]
pub struct Pca {
    /// Per-feature mean, `[d]`.
    pub mean: Vec<f32>,
    /// Unit-length components, `[k][d]`, by decreasing variance.
    pub components: Vec<Vec<f32>>,
    /// Share of the total variance each component carries, `[k]`.
    pub explained_variance_ratio: Vec<f32>,
}

impl Pca {
    /// Fits `k` components to `x` (`[n, d]`, f32, any device). Needs `n >= 2` and
    /// `1 <= k <= min(n, d)`. Uses the `[d, d]` covariance when `d <= n`, else the `[n, n]`
    /// Gram matrix (so 400 images of 1,280 features cost a 400 x 400 eigenproblem).
    pub fn fit(x: &Tensor, k: usize) -> Result<Pca> {
        let (n, d) = x.dims2()?;
        if n < 2 || k == 0 || k > n.min(d) {
            return Err(Error::InvalidOption(format!(
                "PCA of {n} samples of {d} features into {k} components: needs at least 2 \
                 samples and 1 to {} components",
                n.min(d)
            )));
        }
        let x = x.to_device(&Device::Cpu)?.to_dtype(DType::F32)?;
        let mean_t = x.mean_keepdim(0)?;
        let centred = x.broadcast_sub(&mean_t)?;
        let mean = mean_t.squeeze(0)?.to_vec1::<f32>()?;
        let use_gram = d > n;
        let product = if use_gram {
            centred.matmul(&centred.t()?)?
        } else {
            centred.t()?.matmul(&centred)?
        };
        let m = product.dims2()?.0;
        let values: Vec<f64> = product
            .to_dtype(DType::F64)?
            .flatten_all()?
            .to_vec1::<f64>()?;
        let eig = SymmetricEigen::new(DMatrix::from_row_slice(m, m, &values));
        let mut order: Vec<usize> = (0..m).collect();
        order.sort_by(|&a, &b| eig.eigenvalues[b].total_cmp(&eig.eigenvalues[a]));
        let total: f64 = eig.eigenvalues.iter().map(|v| v.max(0.0)).sum();
        let mut components = Vec::with_capacity(k);
        let mut ratio = Vec::with_capacity(k);
        for &i in order.iter().take(k) {
            let vector: Vec<f64> = eig.eigenvectors.column(i).iter().copied().collect();
            let value = eig.eigenvalues[i].max(0.0);
            let mut component: Vec<f64> = if use_gram {
                // v = X^T u / ||X^T u|| (u is a left singular vector).
                let u = Tensor::from_vec(
                    vector.iter().map(|&v| v as f32).collect::<Vec<f32>>(),
                    (n, 1),
                    &Device::Cpu,
                )?;
                let v = centred.t()?.matmul(&u)?.squeeze(1)?.to_vec1::<f32>()?;
                let v: Vec<f64> = v.into_iter().map(f64::from).collect();
                let norm = v.iter().map(|a| a * a).sum::<f64>().sqrt().max(1e-300);
                v.into_iter().map(|a| a / norm).collect()
            } else {
                vector
            };
            flip_sign(&mut component);
            components.push(component.into_iter().map(|v| v as f32).collect());
            ratio.push(if total > 0.0 {
                (value / total) as f32
            } else {
                0.0
            });
        }
        Ok(Pca {
            mean,
            components,
            explained_variance_ratio: ratio,
        })
    }

    /// Projects `x` (`[n, d]`) onto the components: `[n, k]` on the CPU.
    pub fn transform(&self, x: &Tensor) -> Result<Tensor> {
        let d = self.mean.len();
        let k = self.components.len();
        let mean = Tensor::from_vec(self.mean.clone(), (1, d), &Device::Cpu)?;
        let flat: Vec<f32> = self.components.iter().flatten().copied().collect();
        let w = Tensor::from_vec(flat, (k, d), &Device::Cpu)?;
        let x = x.to_device(&Device::Cpu)?.to_dtype(DType::F32)?;
        Ok(x.broadcast_sub(&mean)?.matmul(&w.t()?)?)
    }
}

/// Makes the largest-magnitude entry of `v` positive (scikit-learn's sign convention).
fn flip_sign(v: &mut [f64]) {
    let largest = v
        .iter()
        .copied()
        .max_by(|a, b| a.abs().total_cmp(&b.abs()))
        .unwrap_or(0.0);
    if largest < 0.0 {
        v.iter_mut().for_each(|a| *a = -*a);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tensor(rows: &[[f32; 3]]) -> Tensor {
        let flat: Vec<f32> = rows.iter().flatten().copied().collect();
        Tensor::from_vec(flat, (rows.len(), 3), &Device::Cpu).unwrap()
    }

    #[test]
    fn points_on_a_line_have_one_component_carrying_all_variance() {
        // x = t * (1, 2, 2) / 3 + (5, 5, 5): the first component is (1, 2, 2) / 3.
        let rows: Vec<[f32; 3]> = [-2.0f32, -1.0, 0.0, 1.0, 2.0]
            .iter()
            .map(|t| [5.0 + t / 3.0, 5.0 + 2.0 * t / 3.0, 5.0 + 2.0 * t / 3.0])
            .collect();
        let pca = Pca::fit(&tensor(&rows), 1).unwrap();
        for (got, want) in pca.components[0]
            .iter()
            .zip([1.0 / 3.0, 2.0 / 3.0, 2.0 / 3.0])
        {
            assert!((got - want).abs() < 1e-5, "{:?}", pca.components);
        }
        assert!((pca.explained_variance_ratio[0] - 1.0).abs() < 1e-5);
        let y = pca
            .transform(&tensor(&rows))
            .unwrap()
            .to_vec2::<f32>()
            .unwrap();
        for (row, t) in y.iter().zip([-2.0f32, -1.0, 0.0, 1.0, 2.0]) {
            assert!((row[0] - t).abs() < 1e-5, "{y:?}");
        }
    }

    #[test]
    fn the_gram_and_covariance_routes_agree() {
        // 3 samples of 3 features (covariance) against the same with a zero feature column
        // repeated to make d > n (Gram): same coordinates.
        let rows = [[1.0f32, 0.0, 2.0], [0.0, 3.0, 1.0], [4.0, 1.0, 0.0]];
        let a = Pca::fit(&tensor(&rows), 2).unwrap();
        let wide: Vec<f32> = rows.iter().flat_map(|r| [r[0], r[1], r[2], 0.0]).collect();
        let wide = Tensor::from_vec(wide, (3, 4), &Device::Cpu).unwrap();
        let b = Pca::fit(&wide, 2).unwrap();
        let ya = a
            .transform(&tensor(&rows))
            .unwrap()
            .to_vec2::<f32>()
            .unwrap();
        let yb = b.transform(&wide).unwrap().to_vec2::<f32>().unwrap();
        for (ra, rb) in ya.iter().zip(&yb) {
            for (p, q) in ra.iter().zip(rb) {
                assert!((p - q).abs() < 1e-4, "{ya:?} vs {yb:?}");
            }
        }
    }

    #[test]
    fn too_few_samples_or_components_are_refused() {
        let one = tensor(&[[1.0, 2.0, 3.0]]);
        assert!(Pca::fit(&one, 1).is_err());
        let two = tensor(&[[1.0, 2.0, 3.0], [0.0, 1.0, 0.0]]);
        assert!(Pca::fit(&two, 3).is_err());
        assert!(Pca::fit(&two, 0).is_err());
    }
}
