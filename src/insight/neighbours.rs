//! Exact nearest neighbours of feature rows, and the two measures of how well a 2-D map keeps
//! them: trustworthiness (scikit-learn's `manifold.trustworthiness`) and k-NN class agreement.

use candle_core::{DType, Device, Tensor};

use crate::{Error, Result};

/// Rows compared against all others at once when finding neighbours (bounds memory to
/// `CHUNK x n` distances).
const CHUNK: usize = 512;

/// Squared Euclidean distances of rows `start..start + len` of `x` (`[n, d]`) to every row:
/// `[len][n]`, through one matrix product (`|a|^2 + |b|^2 - 2 a.b`, clamped at 0).
fn distance_rows(x: &Tensor, norms: &Tensor, start: usize, len: usize) -> Result<Vec<Vec<f32>>> {
    let a = x.narrow(0, start, len)?;
    let an = norms.narrow(0, start, len)?;
    let dots = a.matmul(&x.t()?)?;
    let d2 = an
        .unsqueeze(1)?
        .broadcast_add(&norms.unsqueeze(0)?)?
        .sub(&(dots * 2.0)?)?
        .relu()?;
    Ok(d2.to_vec2::<f32>()?)
}

fn prepared(x: &Tensor) -> Result<(Tensor, Tensor)> {
    let x = x
        .to_device(&Device::Cpu)?
        .to_dtype(DType::F32)?
        .contiguous()?;
    let norms = x.sqr()?.sum(1)?;
    Ok((x, norms))
}

/// The `k` nearest other rows of every row of `x` (`[n, d]`), nearest first, with their
/// Euclidean distances: `n` rows of `k` `(index, distance)`. Needs `k < n`. Ties go to the
/// lower index. `O(n^2 d)` time through matrix products, `O(CHUNK n)` extra memory besides
/// the `n k` result. `progress(done, n)` after each chunk of rows; an error it returns (a
/// cancel) stops the search.
pub fn nearest(
    x: &Tensor,
    k: usize,
    progress: &mut dyn FnMut(usize, usize) -> Result<()>,
) -> Result<Vec<Vec<(usize, f32)>>> {
    let n = x.dims2()?.0;
    if k == 0 || k >= n {
        return Err(Error::InvalidOption(format!(
            "{k} neighbours of each of {n} points: needs 1 <= k < n"
        )));
    }
    let (x, norms) = prepared(x)?;
    let by_distance = |a: &(usize, f32), b: &(usize, f32)| a.1.total_cmp(&b.1).then(a.0.cmp(&b.0));
    let mut out = Vec::with_capacity(n);
    // One scratch row of `n` candidates, reused: each kept row is a fresh `k`-long Vec. (A row
    // collected from the truncated candidates would reuse their `n`-long buffer, so the result
    // held `16 n^2` bytes: 6.4 GB at 20,000 points.)
    let mut order: Vec<(usize, f32)> = Vec::with_capacity(n);
    for start in (0..n).step_by(CHUNK) {
        let len = CHUNK.min(n - start);
        for (r, row) in distance_rows(&x, &norms, start, len)?
            .into_iter()
            .enumerate()
        {
            let me = start + r;
            order.clear();
            order.extend(row.into_iter().enumerate().filter(|&(j, _)| j != me));
            order.select_nth_unstable_by(k - 1, by_distance);
            let nearest = &mut order[..k];
            nearest.sort_by(by_distance);
            out.push(nearest.iter().map(|&(j, d2)| (j, d2.sqrt())).collect());
        }
        progress(start + len, n)?;
    }
    Ok(out)
}

/// Trustworthiness of the embedding `y` (`[n, 2]` or any width) of `x` (`[n, d]`) at `k`
/// neighbours, as scikit-learn defines it: `1 - 2 / (n k (2n - 3k - 1)) * sum_i sum_{j in
/// U_i} (r(i, j) - k)`, where `U_i` are the `k` nearest of `i` in `y` that are not among its
/// `k` nearest in `x` and `r(i, j)` is the rank of `j` among `i`'s neighbours in `x` (1 =
/// nearest). 1 means every neighbour in the map is a neighbour in the features. Needs
/// `k < n / 2`. `O(n^2 d)`.
pub fn trustworthiness(x: &Tensor, y: &Tensor, k: usize) -> Result<f64> {
    let n = x.dims2()?.0;
    if y.dims2()?.0 != n || k == 0 || 2 * k >= n {
        return Err(Error::InvalidOption(format!(
            "trustworthiness at k = {k} of {} map points for {n} samples: needs as many \
             points as samples and k < n / 2",
            y.dims2()?.0
        )));
    }
    let in_map = nearest(y, k, &mut |_, _| Ok(()))?;
    let (x, norms) = prepared(x)?;
    let mut penalty = 0f64;
    for start in (0..n).step_by(CHUNK) {
        let len = CHUNK.min(n - start);
        for (r, row) in distance_rows(&x, &norms, start, len)?
            .into_iter()
            .enumerate()
        {
            let me = start + r;
            // The rank of j in x: 1 + the others strictly closer (ties by index).
            let rank = |j: usize| {
                1 + row
                    .iter()
                    .enumerate()
                    .filter(|&(m, &d)| m != me && (d < row[j] || (d == row[j] && m < j)))
                    .count()
            };
            for &(j, _) in &in_map[me] {
                let r = rank(j);
                if r > k {
                    penalty += (r - k) as f64;
                }
            }
        }
    }
    let (n, k) = (n as f64, k as f64);
    Ok(1.0 - 2.0 / (n * k * (2.0 * n - 3.0 * k - 1.0)) * penalty)
}

/// Share of each point's `k` nearest neighbours in `y` (`[n, width]`) that have its label,
/// averaged over the points: how well the map keeps the classes apart.
pub fn knn_agreement(y: &Tensor, labels: &[u32], k: usize) -> Result<f64> {
    let near = nearest(y, k, &mut |_, _| Ok(()))?;
    if labels.len() != near.len() {
        return Err(Error::InvalidOption(format!(
            "{} labels for {} map points",
            labels.len(),
            near.len()
        )));
    }
    let same: usize = near
        .iter()
        .enumerate()
        .map(|(i, row)| row.iter().filter(|&&(j, _)| labels[j] == labels[i]).count())
        .sum();
    Ok(same as f64 / (near.len() * k) as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn points(p: &[[f32; 2]]) -> Tensor {
        let flat: Vec<f32> = p.iter().flatten().copied().collect();
        Tensor::from_vec(flat, (p.len(), 2), &Device::Cpu).unwrap()
    }

    #[test]
    fn nearest_finds_the_brute_force_neighbours() {
        let p = points(&[[0.0, 0.0], [1.0, 0.0], [3.0, 0.0], [0.0, 2.5], [10.0, 10.0]]);
        let near = nearest(&p, 2, &mut |_, _| Ok(())).unwrap();
        assert_eq!(near[0].iter().map(|n| n.0).collect::<Vec<_>>(), vec![1, 3]); // (0, 2.5) is nearer than (3, 0)
        assert!((near[0][1].1 - 2.5).abs() < 1e-5);
        assert_eq!(near[4].iter().map(|n| n.0).collect::<Vec<_>>(), vec![2, 3]);
        assert!(nearest(&p, 5, &mut |_, _| Ok(())).is_err());
    }

    #[test]
    fn each_row_holds_k_neighbours_not_n_candidates() {
        // 600 points (more than a chunk): a row that kept its candidates' buffer would have
        // room for 599.
        let line: Vec<[f32; 2]> = (0..600).map(|i| [i as f32, 0.0]).collect();
        let near = nearest(&points(&line), 3, &mut |_, _| Ok(())).unwrap();
        assert!(near.iter().all(|row| row.len() == 3 && row.capacity() == 3));
        assert_eq!(
            near[599].iter().map(|n| n.0).collect::<Vec<_>>(),
            vec![598, 597, 596]
        );
    }

    #[test]
    fn a_map_equal_to_the_data_is_fully_trustworthy_and_a_shuffle_matches_scikit_learn() {
        let line: Vec<[f32; 2]> = (0..20)
            .map(|i| [i as f32 + 0.01 * (i * i) as f32, 0.0])
            .collect();
        let x = points(&line);
        assert!((trustworthiness(&x, &x, 3).unwrap() - 1.0).abs() < 1e-12);
        // sklearn.manifold.trustworthiness(x, y, n_neighbors=3) = 0.6144444444444445
        // (scikit-learn 1.9.1; no tied distances, so the ranks are unambiguous).
        let shuffled: Vec<[f32; 2]> = (0..20)
            .map(|i| [((i * 7) % 20) as f32 + 0.003 * i as f32, 0.0])
            .collect();
        let t = trustworthiness(&x, &points(&shuffled), 3).unwrap();
        assert!((t - 0.6144444444444445).abs() < 1e-9, "{t}");
    }

    #[test]
    fn class_agreement_counts_same_label_neighbours() {
        let p = points(&[[0.0, 0.0], [0.1, 0.0], [5.0, 0.0], [5.1, 0.0]]);
        assert_eq!(knn_agreement(&p, &[0, 0, 1, 1], 1).unwrap(), 1.0);
        assert_eq!(knn_agreement(&p, &[0, 1, 0, 1], 1).unwrap(), 0.0);
    }
}
