//! Occlusion sensitivity as Captum 0.9's `Occlusion` with a baseline of 0 (the dataset mean
//! after normalisation): a `window` x `window` square over every channel slides by `stride`
//! (`ceil((H - window) / stride) + 1` positions per axis, the last one cut at the edge); each
//! pixel's attribution is the mean, over the windows covering it, of the class score's drop.

use candle_core::{Device, Tensor};

use crate::graph::Network;
use crate::viz::cam::{CamScore, class_scores};
use crate::{Error, Result};

/// The windows' top-left corners along an axis of `len` pixels.
fn starts(len: usize, window: usize, stride: usize) -> Vec<usize> {
    let count = (len - window).div_ceil(stride) + 1;
    (0..count).map(|i| i * stride).collect()
}

/// The occlusion attributions of `input` (`[1, 3, H, W]` -> the same shape), `batch` occluded
/// images per forward.
#[allow(clippy::too_many_arguments)]
pub fn occlusion(
    net: &Network,
    input: &Tensor,
    class: usize,
    score: CamScore,
    window: usize,
    stride: usize,
    batch: usize,
    progress: &mut dyn FnMut(usize, usize) -> bool,
) -> Result<Tensor> {
    let (_, c, h, w) = input.dims4()?;
    if window > h || window > w {
        return Err(Error::Model(format!(
            "the occlusion window of {window} pixels is larger than the {h}x{w} input"
        )));
    }
    let x = input
        .to_device(&Device::Cpu)?
        .flatten_all()?
        .to_vec1::<f32>()?;
    let base = class_scores(&net.forward(input)?, class, score)?[0];
    let windows: Vec<(usize, usize)> = starts(h, window, stride)
        .into_iter()
        .flat_map(|y| starts(w, window, stride).into_iter().map(move |x| (y, x)))
        .collect();
    let plane = h * w;
    let mut total = vec![0f32; plane];
    let mut count = vec![0f32; plane];
    let batch = batch.max(1);
    for (b, chunk) in windows.chunks(batch).enumerate() {
        if !progress(b * batch, windows.len()) {
            return Err(Error::Cancelled);
        }
        let mut buf = Vec::with_capacity(chunk.len() * x.len());
        for &(y0, x0) in chunk {
            let at = buf.len();
            buf.extend_from_slice(&x);
            for ch in 0..c {
                for y in y0..(y0 + window).min(h) {
                    let row = at + ch * plane + y * w;
                    buf[row + x0..row + (x0 + window).min(w)].fill(0.0);
                }
            }
        }
        let occluded = Tensor::from_vec(buf, (chunk.len(), c, h, w), &Device::Cpu)?
            .to_device(input.device())?;
        let scores = class_scores(&net.forward(&occluded)?, class, score)?;
        for (&(y0, x0), s) in chunk.iter().zip(scores) {
            let drop = base - s;
            for y in y0..(y0 + window).min(h) {
                for x in x0..(x0 + window).min(w) {
                    total[y * w + x] += drop;
                    count[y * w + x] += 1.0;
                }
            }
        }
    }
    progress(windows.len(), windows.len());
    let one: Vec<f32> = total
        .iter()
        .zip(&count)
        .map(|(t, n)| if *n > 0.0 { t / n } else { 0.0 })
        .collect();
    let all: Vec<f32> = (0..c).flat_map(|_| one.iter().copied()).collect();
    Ok(Tensor::from_vec(all, (1, c, h, w), &Device::Cpu)?.to_device(input.device())?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_cover_the_edge_as_captum_counts_them() {
        // 64 px, window 8, stride 4: 15 positions, the last at 56.
        assert_eq!(starts(64, 8, 4).len(), 15);
        assert_eq!(*starts(64, 8, 4).last().unwrap(), 56);
        // 10 px, window 4, stride 4: ceil(6 / 4) + 1 = 3 positions, the last (8) cut to 2 px.
        assert_eq!(starts(10, 4, 4), vec![0, 4, 8]);
    }
}
