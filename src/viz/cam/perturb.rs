//! The gradient-free CAMs: channel weights from batched forwards of perturbed inputs (Score-CAM:
//! the image masked by each channel) or perturbed activations (AblationCAM: each channel zeroed).

use std::collections::HashMap;

use candle_core::{Device, Tensor};

use super::{CamOptions, class_scores, rows};
use crate::graph::Network;
use crate::viz::resize::{Corners, bilinear};
use crate::{Error, Result};

/// Score-CAM's channels grouped by the masked input they give, which decides their score:
/// `(representatives, group)`, `group[c]` the index in `representatives` of the channel whose
/// forward serves channel `c`. Channels with bit-identical maps give the same mask; channels whose
/// map is constant all give the all-zero mask (`(v - min) / (max - min + 1e-8)` with `v = min`
/// everywhere, as [`bilinear`] keeps a constant map constant). After a ReLU most channels of a
/// late layer are all zero (746 of Lite0's 1,280 `head` channels on chelsea), so this is where
/// most of the forwards go. Exact: every channel gets the score of its own masked input.
pub(crate) fn mask_groups(maps: &[Vec<f32>]) -> (Vec<usize>, Vec<usize>) {
    let mut seen: HashMap<Option<Vec<u32>>, usize> = HashMap::new();
    let mut representatives = Vec::new();
    let group = maps
        .iter()
        .enumerate()
        .map(|(c, map)| {
            let constant = map.iter().all(|&v| v == map[0]);
            let key = (!constant).then(|| map.iter().map(|v| v.to_bits()).collect());
            *seen.entry(key).or_insert_with(|| {
                representatives.push(c);
                representatives.len() - 1
            })
        })
        .collect();
    (representatives, group)
}

/// Score-CAM: softmax over channels of the class score of the input masked by each channel's
/// upsampled, min-max-normalised activation (`act`: `[1, C, h, w]`). One forward per distinct
/// masked input ([`mask_groups`]), `opts.scorecam_batch` of them per forward.
pub(super) fn score_cam_weights(
    net: &Network,
    input: &Tensor,
    act: &Tensor,
    class: usize,
    opts: &CamOptions,
    progress: &mut dyn FnMut(usize, usize) -> bool,
) -> Result<Vec<f32>> {
    let (_, _, h, w) = act.dims4()?;
    let (_, in_c, in_h, in_w) = input.dims4()?;
    let a = rows(act)?;
    let (representatives, group) = mask_groups(&a);
    let x = input
        .to_device(&Device::Cpu)?
        .flatten_all()?
        .to_vec1::<f32>()?;
    let plane = in_h * in_w;
    let distinct = representatives.len();
    let batch = opts.scorecam_batch.max(1);
    let mut unique_scores = Vec::with_capacity(distinct);
    // Every batch runs the same frozen network: its Winograd kernels are transformed once.
    let _kept = crate::ops::KeptKernels::scope();
    for chunk in representatives.chunks(batch) {
        if !progress(unique_scores.len(), distinct) {
            return Err(Error::Cancelled);
        }
        // The masked inputs `mask * x`, written straight into the batch.
        let mut masked = Vec::with_capacity(chunk.len() * x.len());
        for &c in chunk {
            let up = bilinear(&a[c], (h, w), (in_h, in_w), Corners::Aligned);
            let min = up.iter().copied().fold(f32::INFINITY, f32::min);
            let max = up.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            let range = max - min + 1e-8;
            for channel in x.chunks_exact(plane) {
                masked.extend(channel.iter().zip(&up).map(|(x, v)| (v - min) / range * x));
            }
        }
        let masked = Tensor::from_vec(masked, (chunk.len(), in_c, in_h, in_w), &Device::Cpu)?
            .to_device(input.device())?;
        unique_scores.extend(class_scores(&net.forward(&masked)?, class, opts.score)?);
    }
    progress(distinct, distinct);
    let scores: Vec<f32> = group.iter().map(|&g| unique_scores[g]).collect();
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn constant_and_identical_maps_share_a_forward() {
        let maps = vec![
            vec![0.0, 0.0, 0.0, 0.0], // constant: the all-zero mask
            vec![1.0, 0.0, 2.0, 0.0],
            vec![6.0, 6.0, 6.0, 6.0], // constant too
            vec![1.0, 0.0, 2.0, 0.0], // as channel 1
            vec![2.0, 0.0, 4.0, 0.0], // proportional to 1, but only equal bits are shared
            vec![f32::NAN, 0.0, 0.0, 0.0],
            vec![f32::NAN, 0.0, 0.0, 0.0],
        ];
        let (representatives, group) = mask_groups(&maps);
        assert_eq!(representatives, vec![0, 1, 4, 5]);
        assert_eq!(group, vec![0, 1, 0, 1, 2, 3, 3]);
        // A constant map gives an exactly constant upsampling, hence the all-zero mask.
        let up = bilinear(&maps[2], (2, 2), (7, 9), Corners::Aligned);
        assert!(up.iter().all(|&v| v == 6.0));
    }
}
