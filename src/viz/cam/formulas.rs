//! The CAM formulas of pytorch-grad-cam 1.5.7 on plain rows: channel weights from activations
//! `A` and gradients `G` (`[channel][position]`, one image), each channel's contribution to the
//! map, and the first-principal-component projection of Eigen-CAM and `--smooth eigen`.

/// Grad-CAM: the spatial mean of each channel's gradient.
pub fn grad_cam_weights(g: &[Vec<f32>]) -> Vec<f32> {
    g.iter()
        .map(|row| row.iter().sum::<f32>() / row.len() as f32)
        .collect()
}

/// Grad-CAM++: `sum_hw relu(G) * g2 / (2 g2 + sum_hw(A) g3 + 1e-6)`, zero where `G == 0`.
pub fn grad_cam_pp_weights(a: &[Vec<f32>], g: &[Vec<f32>]) -> Vec<f32> {
    a.iter()
        .zip(g)
        .map(|(a_row, g_row)| {
            let sum_a: f32 = a_row.iter().sum();
            g_row
                .iter()
                .map(|&gv| {
                    if gv == 0.0 {
                        return 0.0;
                    }
                    let g2 = gv * gv;
                    let g3 = g2 * gv;
                    let alpha = g2 / (2.0 * g2 + sum_a * g3 + 1e-6);
                    gv.max(0.0) * alpha
                })
                .sum()
        })
        .collect()
}

/// XGradCAM (Fu et al. 2020): `sum_hw G * A / (sum_hw A + 1e-7)`.
pub fn xgrad_cam_weights(a: &[Vec<f32>], g: &[Vec<f32>]) -> Vec<f32> {
    a.iter()
        .zip(g)
        .map(|(a_row, g_row)| {
            let denom = a_row.iter().sum::<f32>() + 1e-7;
            a_row
                .iter()
                .zip(g_row)
                .map(|(&x, &gv)| gv * x / denom)
                .sum()
        })
        .collect()
}

/// Each channel's contribution `weights[c] * A[c]` (Grad-CAM, ++, XGradCAM, Score-CAM,
/// AblationCAM).
pub fn weighted(a: &[Vec<f32>], weights: &[f32]) -> Vec<Vec<f32>> {
    a.iter()
        .zip(weights)
        .map(|(row, &wc)| row.iter().map(|&x| wc * x).collect())
        .collect()
}

/// Each channel's element-wise contribution `G * A` (HiResCAM), or `relu(G) * A` with
/// `positive_gradient` (Layer-CAM).
pub fn elementwise(a: &[Vec<f32>], g: &[Vec<f32>], positive_gradient: bool) -> Vec<Vec<f32>> {
    a.iter()
        .zip(g)
        .map(|(a_row, g_row)| {
            a_row
                .iter()
                .zip(g_row)
                .map(|(&x, &gv)| {
                    if positive_gradient {
                        gv.max(0.0) * x
                    } else {
                        gv * x
                    }
                })
                .collect()
        })
        .collect()
}

/// The map: the sum over channels of their contributions, position by position.
pub fn channel_sum(contributions: &[Vec<f32>]) -> Vec<f32> {
    let mut cam = vec![0f32; contributions.first().map_or(0, Vec::len)];
    for row in contributions {
        for (v, &x) in cam.iter_mut().zip(row) {
            *v += x;
        }
    }
    cam
}

/// Eigen-CAM: the rows (positions x channels, each channel centred) projected on their first
/// right singular vector, signed so that the larger magnitude is positive.
pub fn eigen_cam(a: &[Vec<f32>], positions: usize) -> Vec<f32> {
    let x = nalgebra::DMatrix::<f64>::from_fn(positions, a.len(), |p, c| a[c][p] as f64);
    let means = x.row_mean();
    let centred = nalgebra::DMatrix::from_fn(positions, a.len(), |p, c| x[(p, c)] - means[c]);
    let svd = centred.clone().svd(false, true);
    let Some(v_t) = svd.v_t else {
        return vec![0.0; positions];
    };
    // nalgebra does not promise sorted singular values: take the largest.
    let best = (0..svd.singular_values.len())
        .max_by(|&i, &j| svd.singular_values[i].total_cmp(&svd.singular_values[j]))
        .unwrap_or(0);
    let projection = &centred * v_t.row(best).transpose();
    let (min, max) = projection
        .iter()
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), &v| {
            (lo.min(v), hi.max(v))
        });
    let sign = if min.abs() > max.abs() { -1.0 } else { 1.0 };
    projection.iter().map(|&v| (sign * v) as f32).collect()
}

/// `x - min`, then divided by `1e-7 + max` (pytorch-grad-cam's `scale_cam_image`).
pub fn min_max(x: &[f32]) -> Vec<f32> {
    let min = x.iter().copied().fold(f32::INFINITY, f32::min);
    let shifted: Vec<f32> = x.iter().map(|v| v - min).collect();
    let max = shifted.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    shifted.iter().map(|v| v / (1e-7 + max)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn min_max_spans_zero_to_almost_one() {
        let out = min_max(&[2.0, 4.0, 3.0]);
        assert_eq!(out[0], 0.0);
        // 2 / (2 + 1e-7) rounds to exactly 1.0 in f32, as in the library.
        assert!((out[1] - 1.0).abs() < 1e-6 && out[1] <= 1.0);
    }

    #[test]
    fn eigen_cam_finds_the_dominant_pattern() {
        // Two channels that both follow one spatial pattern: the projection follows it.
        let pattern = [0.0f32, 1.0, 4.0, 1.0];
        let a = vec![pattern.to_vec(), pattern.iter().map(|v| 2.0 * v).collect()];
        let p = eigen_cam(&a, 4);
        let argmax = (0..4).max_by(|&i, &j| p[i].total_cmp(&p[j])).unwrap();
        assert_eq!(argmax, 2);
    }

    #[test]
    fn xgrad_cam_weights_by_hand() {
        // sum(G * A) / (sum(A) + 1e-7): (1*2 + 3*4) / 6 and (-1 * 1) / 1.
        let a = vec![vec![2.0, 4.0], vec![1.0, 0.0]];
        let g = vec![vec![1.0, 3.0], vec![-1.0, 5.0]];
        let w = xgrad_cam_weights(&a, &g);
        assert!((w[0] - 14.0 / 6.0).abs() < 1e-5, "{w:?}");
        assert!((w[1] + 1.0).abs() < 1e-5, "{w:?}");
    }

    #[test]
    fn hires_keeps_negative_gradients_and_layer_cam_drops_them() {
        let a = vec![vec![2.0, 1.0]];
        let g = vec![vec![-1.0, 3.0]];
        assert_eq!(channel_sum(&elementwise(&a, &g, false)), vec![-2.0, 3.0]);
        assert_eq!(channel_sum(&elementwise(&a, &g, true)), vec![0.0, 3.0]);
    }
}
