//! The gradient-free CAMs: channel weights from batched forwards of perturbed inputs (Score-CAM:
//! the image masked by each channel) or perturbed activations (AblationCAM: each channel zeroed).

use candle_core::{Device, Tensor};

use super::{CamOptions, class_scores, rows};
use crate::graph::Network;
use crate::viz::resize::{Corners, bilinear};
use crate::{Error, Result};

/// Score-CAM: softmax over channels of the class score of the input masked by each channel's
/// upsampled, min-max-normalised activation (`act`: `[1, C, h, w]`).
pub(super) fn score_cam_weights(
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
        scores.extend(class_scores(&net.forward(&masked)?, class, opts.score)?);
    }
    progress(channels, channels);
    let max = scores.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let exp: Vec<f32> = scores.iter().map(|s| (s - max).exp()).collect();
    let total: f32 = exp.iter().sum();
    Ok(exp.iter().map(|e| e / total).collect())
}

/// AblationCAM (Desai & Ramaswamy 2020) as pytorch-grad-cam 1.5.7: `(s - s_c) / s` per channel,
/// `s` the class score and `s_c` the score with channel `c` of the layer's output `act`
/// (`[1, C, h, w]`) ablated and the rest of the network run on it, `opts.attribution.batch`
/// ablated copies per forward. Ablated means 0 where the layer's minimum is 0 (after a ReLU),
/// else the minimum minus 1e7 (the library's `ABLATION_VALUE`; it lowers that value again for
/// each later image of a batch, which this does not copy).
pub(super) fn ablation_cam_weights(
    net: &Network,
    layer: &str,
    act: &Tensor,
    class: usize,
    opts: &CamOptions,
    progress: &mut dyn FnMut(usize, usize) -> bool,
) -> Result<Vec<f32>> {
    let output = net.output_layer();
    let (_, channels, h, w) = act.dims4()?;
    let plane = h * w;
    let a = act
        .to_device(&Device::Cpu)?
        .flatten_all()?
        .to_vec1::<f32>()?;
    let min = a.iter().copied().fold(f32::INFINITY, f32::min);
    let fill = if min == 0.0 { 0.0 } else { min - 1e7 };
    let original = class_scores(
        &net.forward_range(Some(layer), output, act, false)?,
        class,
        opts.score,
    )?[0];
    let batch = opts.attribution.batch.max(1);
    let mut scores = Vec::with_capacity(channels);
    for start in (0..channels).step_by(batch) {
        if !progress(start, channels) {
            return Err(Error::Cancelled);
        }
        let end = (start + batch).min(channels);
        let mut buf = Vec::with_capacity((end - start) * a.len());
        for c in start..end {
            let at = buf.len() + c * plane;
            buf.extend_from_slice(&a);
            buf[at..at + plane].fill(fill);
        }
        let ablated = Tensor::from_vec(buf, (end - start, channels, h, w), &Device::Cpu)?
            .to_device(act.device())?;
        let logits = net.forward_range(Some(layer), output, &ablated, false)?;
        scores.extend(class_scores(&logits, class, opts.score)?);
    }
    progress(channels, channels);
    Ok(scores.iter().map(|s| (original - s) / original).collect())
}
