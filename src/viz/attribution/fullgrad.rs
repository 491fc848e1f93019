//! FullGrad (Srinivas & Fleuret 2019) as pytorch-grad-cam 1.5.7's `FullGrad` computes it: the
//! input gradient times the input, plus, for every layer with a bias (each 2-D convolution
//! with one and each BatchNorm, [`crate::graph::probe`]), the bias times the gradient at the
//! layer's output. Every term is made absolute, each of its channels is min-max scaled
//! (`(x - min) / (1e-7 + max)`, the library's `scale_cam_image`) and resized to the input
//! (half-pixel bilinear, as cv2), the channels and terms are summed, and the sum is min-max
//! scaled once more. The layer is not used.
//!
//! The layers are the library's choice (`type(m) in [Conv2d, BatchNorm2d]` with a bias): every
//! BatchNorm (DenseNet's pre-activation ones included), every convolution with its own bias
//! (VGG's, ConvNeXt's stem, depthwise and downsample convolutions, the squeeze-excitation
//! convolutions of EfficientNet and MobileNetV3, whose 1x1 terms scale to 0), never a
//! LayerNorm or a dense layer (ConvNeXt's MLP is `nn.Linear`).
//!
//! Where the library pairs each layer's bias with the gradients its hooks collected in
//! backward order, here each layer's gradient comes from its own probe; the two pairings agree
//! on every network of `tests/fixtures/make/fx_fullgrad.py` and `fx_fullgrad_zoo.py` but
//! Xception, where the library's backward order puts a skip BatchNorm's gradient beside another
//! layer's bias and it fails (numpy cannot broadcast them). Two deliberate differences: the
//! library picks layers by exact type, so on timm models whose BatchNorm is a `BatchNormAct2d`
//! (EfficientNet-B, MobileNetV3) it skips every BatchNorm; convlens takes every BatchNorm, as
//! the paper does. And timm's MobileNetV3 `conv_head` (a 1x1 convolution with a bias on the
//! pooled 1x1 map, a dense layer here) is not probed: its term would scale to 0.

use candle_core::{Tensor, Var};

use crate::graph::Network;
use crate::viz::cam::{Cam, CamMethod, CamOptions, min_max, resolve_class, rows, score_target};
use crate::viz::resize::{Corners, bilinear};
use crate::{Error, Result};

/// FullGrad's map of `input` (`[1, 3, H, W]`) for `opts.class` (`None`: the top-1), scored
/// as `opts.score`: [`Cam::lowres`] is the unscaled sum at the input's resolution, [`Cam::map`]
/// its min-max scaling. Errors, naming the stage, on a network whose convolutions cannot be
/// probed ([`CamMethod::refusal`]).
pub fn full_grad(net: &Network, input: &Tensor, opts: &CamOptions) -> Result<Cam> {
    if let Some(why) = CamMethod::FullGrad.refusal(net, input.device()) {
        return Err(Error::Model(why));
    }
    let (_, channels, h, w) = input.dims4()?;
    let x = Var::from_tensor(input)?;
    let (logits, probes) = net.forward_probed(x.as_tensor())?;
    let (class, prob) = resolve_class(&logits, opts.class)?;
    let grads = score_target(&logits, class, opts.score)?.backward()?;
    let g_in = grads
        .get(x.as_tensor())
        .ok_or_else(|| Error::Model("no gradient reached the input".into()))?;
    let mut total = channel_terms(&rows(&(g_in * input)?)?);
    for p in &probes {
        let Some(g) = grads.get(p.probe.as_tensor()) else {
            // A layer the class score does not depend on: every channel scales to 0.
            continue;
        };
        let (_, c, lh, lw) = g.dims4()?;
        let term = g.broadcast_mul(&p.bias.reshape((1, c, 1, 1))?)?;
        let low = channel_terms(&rows(&term)?);
        let up = if (lh, lw) == (h, w) {
            low
        } else {
            bilinear(&low, (lh, lw), (h, w), Corners::HalfPixel)
        };
        for (t, u) in total.iter_mut().zip(&up) {
            *t += u;
        }
    }
    if let Some(bad) = total.iter().find(|v| !v.is_finite()) {
        return Err(Error::NonFinite {
            what: format!("the FullGrad map of class {class}"),
            value: *bad,
        });
    }
    debug_assert_eq!(total.len(), h * w, "{channels} channels");
    Ok(Cam {
        method: opts.method,
        layer: "input".to_string(),
        class,
        prob,
        map: min_max(&total),
        lowres: total,
        lowres_size: (h, w),
        size: (h, w),
        signed: false,
        attribution: None,
        completeness: None,
    })
}

/// The sum over channels of each channel's `|x|` min-max scaled: `[C][h * w]` -> `[h * w]`.
pub fn channel_terms(channels: &[Vec<f32>]) -> Vec<f32> {
    let plane = channels.first().map_or(0, Vec::len);
    let mut sum = vec![0f32; plane];
    for row in channels {
        let abs: Vec<f32> = row.iter().map(|v| v.abs()).collect();
        for (s, v) in sum.iter_mut().zip(min_max(&abs)) {
            *s += v;
        }
    }
    sum
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_channel_is_scaled_alone_then_summed() {
        // |[-2, 0, 2]| -> [1, 0, 1]; a constant channel scales to 0; [1, 2, 3] -> [0, .5, 1].
        let sum = channel_terms(&[vec![-2.0, 0.0, 2.0], vec![5.0; 3], vec![1.0, 2.0, 3.0]]);
        let want = [1.0, 0.5, 2.0];
        for (s, w) in sum.iter().zip(want) {
            assert!((s - w).abs() < 1e-6, "{sum:?}");
        }
    }
}
