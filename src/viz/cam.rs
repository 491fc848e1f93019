//! Class-activation maps: where in the image the network finds a class.
//!
//! Grad-CAM, Grad-CAM++, Layer-CAM, Score-CAM and Eigen-CAM, exactly as pytorch-grad-cam 1.5.7
//! computes them (see `tests/fixtures/README.md`): a low-resolution map at the chosen layer,
//! ReLU, min-max normalisation, half-pixel bilinear upsampling to the input, min-max again.

use std::fmt;
use std::str::FromStr;

use candle_core::{D, Device, IndexOp, Tensor, Var};

use super::resize::{Corners, bilinear};
use crate::graph::Network;
use crate::{Error, Result};

/// A class-activation-map method.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum CamMethod {
    /// Channel weights = spatial mean of the gradient (Selvaraju et al. 2017).
    GradCam,
    /// Channel weights from second and third powers of the gradient (Chattopadhay et al. 2018).
    GradCamPlusPlus,
    /// Element-wise positive gradient times activation (Jiang et al. 2021).
    LayerCam,
    /// Channel weights = softmax of the class score with the input masked by each channel
    /// (Wang et al. 2020); no gradients, one forward per channel (batched).
    ScoreCam,
    /// First principal component of the activations (Muhammad & Yeasin 2020); class-agnostic.
    EigenCam,
}

impl CamMethod {
    /// Every method, in the order the GUI lists them.
    pub const ALL: [CamMethod; 5] = [
        CamMethod::GradCam,
        CamMethod::GradCamPlusPlus,
        CamMethod::LayerCam,
        CamMethod::ScoreCam,
        CamMethod::EigenCam,
    ];

    /// The method's command-line name.
    pub fn name(self) -> &'static str {
        match self {
            CamMethod::GradCam => "gradcam",
            CamMethod::GradCamPlusPlus => "gradcam++",
            CamMethod::LayerCam => "layercam",
            CamMethod::ScoreCam => "scorecam",
            CamMethod::EigenCam => "eigencam",
        }
    }

    fn needs_gradient(self) -> bool {
        matches!(
            self,
            CamMethod::GradCam | CamMethod::GradCamPlusPlus | CamMethod::LayerCam
        )
    }
}

impl fmt::Display for CamMethod {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for CamMethod {
    type Err = String;

    fn from_str(s: &str) -> std::result::Result<Self, String> {
        let key = s.to_ascii_lowercase().replace(['-', '_'], "");
        CamMethod::ALL
            .into_iter()
            .find(|m| m.name() == key || (key == "gradcampp" && *m == CamMethod::GradCamPlusPlus))
            .ok_or_else(|| {
                format!(
                    "unknown CAM method `{s}`; use one of {}",
                    CamMethod::ALL.map(|m| m.name()).join(", ")
                )
            })
    }
}

/// What the class score is.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum CamScore {
    /// The raw logit (pytorch-grad-cam's `ClassifierOutputTarget`).
    #[default]
    Logit,
    /// The softmax probability.
    Probability,
}

/// What to compute.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct CamOptions {
    pub method: CamMethod,
    /// The layer to look at (a stage with a spatial output, e.g. `head`).
    pub layer: String,
    /// The class; `None` takes the top-1 prediction.
    pub class: Option<usize>,
    pub score: CamScore,
    /// Score-CAM: masked images per forward.
    pub scorecam_batch: usize,
}

impl CamOptions {
    /// `method` at `layer` for the top-1 class, scored by the logit.
    pub fn new(method: CamMethod, layer: &str) -> Self {
        CamOptions {
            method,
            layer: layer.to_string(),
            class: None,
            score: CamScore::Logit,
            scorecam_batch: 16,
        }
    }

    /// Errors, naming the option, unless a layer is named and `scorecam_batch` is 1 to 256
    /// (the CLI, the desktop app and `reproduce` all call it).
    pub fn validate(&self) -> Result<()> {
        if self.layer.trim().is_empty() {
            return Err(Error::Model("--layer must name a layer".into()));
        }
        super::check_range("scorecam_batch", self.scorecam_batch, 1..=256)
    }
}

/// A computed map.
#[derive(Clone, Debug)]
pub struct Cam {
    pub method: CamMethod,
    pub layer: String,
    /// The class the map is for.
    pub class: usize,
    /// The softmax probability of that class for the unmasked image.
    pub prob: f32,
    /// The layer-resolution map after ReLU, before normalisation, `[h, w]` row-major.
    pub lowres: Vec<f32>,
    /// `(h, w)` of [`Cam::lowres`].
    pub lowres_size: (usize, usize),
    /// The map at input resolution, in `[0, 1]`, row-major.
    pub map: Vec<f32>,
    /// `(height, width)` of [`Cam::map`] (the network input's).
    pub size: (usize, usize),
}

/// Computes a class-activation map for one preprocessed image `[1, 3, H, W]`.
pub fn compute(net: &Network, input: &Tensor, opts: &CamOptions) -> Result<Cam> {
    compute_with_progress(net, input, opts, &mut |_, _| true)
}

/// As [`compute`]; `progress(done, total)` is called as Score-CAM's batches finish and
/// cancels the job ([`Error::Cancelled`]) when it returns `false`.
pub fn compute_with_progress(
    net: &Network,
    input: &Tensor,
    opts: &CamOptions,
    progress: &mut dyn FnMut(usize, usize) -> bool,
) -> Result<Cam> {
    let (batch, _, in_h, in_w) = input.dims4()?;
    if batch != 1 {
        return Err(Error::Model(format!(
            "a class-activation map is computed for one image at a time, got a batch of {batch}"
        )));
    }
    let layer = opts.layer.as_str();
    let output = net.output_layer();
    if net.index_of(layer)? >= net.index_of(output)? {
        return Err(Error::Model(format!(
            "layer `{layer}` is the network's output: a class-activation map needs a layer \
             before it (e.g. the model's default CAM layer)"
        )));
    }
    let act = net.forward_range(None, layer, input, false)?;
    let (_, _, h, w) = act.dims4().map_err(|_| {
        Error::Model(format!(
            "layer `{layer}` has no spatial output (shape {:?}): pick a convolutional layer",
            act.dims()
        ))
    })?;

    let act_var = Var::from_tensor(&act)?;
    let logits = net.forward_range(Some(layer), output, act_var.as_tensor(), false)?;
    let num_classes = logits.dim(1)?;
    // `ops::softmax`, not `softmax_last_dim`: candle-nn 0.11's fused kernel has no backward,
    // so a probability target would give no gradient at all.
    let probs = candle_nn::ops::softmax(&logits, D::Minus1)?;
    let class = match opts.class {
        Some(c) if c >= num_classes => {
            return Err(Error::Model(format!(
                "class {c} is out of range: the model has {num_classes} classes (0..{})",
                num_classes - 1
            )));
        }
        Some(c) => c,
        None => probs.i(0)?.argmax(0)?.to_scalar::<u32>()? as usize,
    };
    let prob = probs.i((0, class))?.to_scalar::<f32>()?;
    if !prob.is_finite() {
        return Err(Error::NonFinite {
            what: format!("the probability of class {class}"),
            value: prob,
        });
    }

    let a = rows(&act)?;
    let raw = match opts.method {
        m if m.needs_gradient() => {
            let target = match opts.score {
                CamScore::Logit => logits.i((0, class))?,
                CamScore::Probability => probs.i((0, class))?,
            };
            let grads = target.backward()?;
            let g = grads
                .get(act_var.as_tensor())
                .ok_or_else(|| Error::Model(format!("no gradient reached layer `{layer}`")))?;
            let g = rows(g)?;
            match m {
                CamMethod::GradCam => weighted_sum(&a, &grad_cam_weights(&g)),
                CamMethod::GradCamPlusPlus => weighted_sum(&a, &grad_cam_pp_weights(&a, &g)),
                _ => layer_cam(&a, &g),
            }
        }
        CamMethod::EigenCam => eigen_cam(&a, h * w),
        _ => {
            let weights = score_cam_weights(net, input, &act, class, opts, progress)?;
            weighted_sum(&a, &weights)
        }
    };
    debug_assert_eq!(raw.len(), h * w);
    let lowres: Vec<f32> = raw.iter().map(|v| v.max(0.0)).collect();
    let up = bilinear(&min_max(&lowres), (h, w), (in_h, in_w), Corners::HalfPixel);
    Ok(Cam {
        method: opts.method,
        layer: layer.to_string(),
        class,
        prob,
        lowres,
        lowres_size: (h, w),
        map: min_max(&up),
        size: (in_h, in_w),
    })
}

/// `[1, C, h, w]` -> one row of `h * w` values per channel.
fn rows(t: &Tensor) -> Result<Vec<Vec<f32>>> {
    Ok(t.to_device(&Device::Cpu)?
        .squeeze(0)?
        .flatten_from(1)?
        .to_vec2::<f32>()?)
}

/// `x - min`, then divided by `1e-7 + max` (pytorch-grad-cam's `scale_cam_image`).
pub fn min_max(x: &[f32]) -> Vec<f32> {
    let min = x.iter().copied().fold(f32::INFINITY, f32::min);
    let shifted: Vec<f32> = x.iter().map(|v| v - min).collect();
    let max = shifted.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    shifted.iter().map(|v| v / (1e-7 + max)).collect()
}

/// `sum_c weights[c] * a[c]`, one value per position.
fn weighted_sum(a: &[Vec<f32>], weights: &[f32]) -> Vec<f32> {
    let mut cam = vec![0f32; a[0].len()];
    for (row, &wc) in a.iter().zip(weights) {
        for (v, &x) in cam.iter_mut().zip(row) {
            *v += wc * x;
        }
    }
    cam
}

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

/// Layer-CAM: `sum_c relu(G_c) * A_c`, position by position.
pub fn layer_cam(a: &[Vec<f32>], g: &[Vec<f32>]) -> Vec<f32> {
    let mut cam = vec![0f32; a[0].len()];
    for (a_row, g_row) in a.iter().zip(g) {
        for ((v, &x), &gv) in cam.iter_mut().zip(a_row).zip(g_row) {
            *v += gv.max(0.0) * x;
        }
    }
    cam
}

/// Eigen-CAM: the activations (positions x channels, each channel centred) projected on their
/// first right singular vector, signed so that the larger magnitude is positive.
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

/// Score-CAM: softmax over channels of the class score of the input masked by each channel's
/// upsampled, min-max-normalised activation.
fn score_cam_weights(
    net: &Network,
    input: &Tensor,
    act: &Tensor,
    class: usize,
    opts: &CamOptions,
    progress: &mut dyn FnMut(usize, usize) -> bool,
) -> Result<Vec<f32>> {
    let (_, channels, h, w) = act.dims4()?;
    let (_, _, in_h, in_w) = input.dims4()?;
    let a = rows(act)?;
    let batch = opts.scorecam_batch.max(1);
    let mut scores = Vec::with_capacity(channels);
    for start in (0..channels).step_by(batch) {
        if !progress(start, channels) {
            return Err(Error::Cancelled);
        }
        let end = (start + batch).min(channels);
        let masks: Vec<f32> = a[start..end]
            .iter()
            .flat_map(|row| {
                let up = bilinear(row, (h, w), (in_h, in_w), Corners::Aligned);
                let min = up.iter().copied().fold(f32::INFINITY, f32::min);
                let max = up.iter().copied().fold(f32::NEG_INFINITY, f32::max);
                up.into_iter()
                    .map(move |v| (v - min) / (max - min + 1e-8))
                    .collect::<Vec<_>>()
            })
            .collect();
        let masks = Tensor::from_vec(masks, (end - start, 1, in_h, in_w), &Device::Cpu)?
            .to_device(input.device())?;
        let masked = masks.broadcast_mul(input)?;
        let logits = net.forward(&masked)?;
        let score = match opts.score {
            CamScore::Logit => logits,
            #[allow(clippy::disallowed_methods, reason = "Score-CAM is forward only")]
            CamScore::Probability => candle_nn::ops::softmax_last_dim(&logits)?,
        };
        scores.extend(
            score
                .i((.., class))?
                .to_device(&Device::Cpu)?
                .to_vec1::<f32>()?,
        );
    }
    progress(channels, channels);
    let max = scores.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let exp: Vec<f32> = scores.iter().map(|s| (s - max).exp()).collect();
    let total: f32 = exp.iter().sum();
    Ok(exp.iter().map(|e| e / total).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn method_names_round_trip() {
        for m in CamMethod::ALL {
            assert_eq!(m.name().parse::<CamMethod>(), Ok(m));
        }
        assert_eq!(
            "Grad-CAM++".parse::<CamMethod>(),
            Ok(CamMethod::GradCamPlusPlus)
        );
        assert!(
            "cam-o-matic"
                .parse::<CamMethod>()
                .unwrap_err()
                .contains("cam-o-matic")
        );
    }

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
}
