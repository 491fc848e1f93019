//! Guided backpropagation (pytorch-grad-cam 1.5.7's `GuidedBackpropReLUModel`: the input
//! gradient with every ReLU's backward passing only positive gradients, here ReLU6's too) and
//! Guided Grad-CAM (Captum 0.9's `GuidedGradCam`: that gradient times the layer's Grad-CAM,
//! ReLU'd, upsampled to the input by nearest neighbour).

use candle_core::{Device, Tensor};

use super::input_gradients;
use crate::graph::Network;
use crate::ops::GuidedBackprop;
use crate::viz::cam::{CamMethod, CamOptions, CamScore, layer_cam};
use crate::{Error, Result};

/// The guided gradient of the class score with respect to `input` (`[B, 3, H, W]`, same
/// shape). CPU only: other devices' ReLUs are candle's own.
pub fn guided_backprop(
    net: &Network,
    input: &Tensor,
    class: usize,
    score: CamScore,
) -> Result<Tensor> {
    if let Some(why) = CamMethod::GuidedBackprop.refusal(net, input.device()) {
        return Err(Error::Model(why));
    }
    let _guided = GuidedBackprop::enable();
    input_gradients(net, input, class, score)
}

/// `lowres` (`(h, w)`) resized to `(out_h, out_w)` by nearest neighbour as PyTorch's
/// `interpolate(mode="nearest")`: source index `floor(dst * (in / out))` in f32.
pub fn nearest(lowres: &[f32], (h, w): (usize, usize), (out_h, out_w): (usize, usize)) -> Vec<f32> {
    let (sy, sx) = (h as f32 / out_h as f32, w as f32 / out_w as f32);
    let mut out = Vec::with_capacity(out_h * out_w);
    for y in 0..out_h {
        let yi = ((y as f32 * sy).floor() as usize).min(h - 1);
        for x in 0..out_w {
            let xi = ((x as f32 * sx).floor() as usize).min(w - 1);
            out.push(lowres[yi * w + xi]);
        }
    }
    out
}

/// Guided Grad-CAM of `input` (`[1, 3, H, W]`) at `opts.layer` for `class`: `[1, 3, H, W]`.
pub fn guided_grad_cam(
    net: &Network,
    input: &Tensor,
    opts: &CamOptions,
    class: usize,
) -> Result<Tensor> {
    if let Some(why) = CamMethod::GuidedGradCam.refusal(net, input.device()) {
        return Err(Error::Model(why));
    }
    let gb = guided_backprop(net, input, class, opts.score)?;
    let cam_opts = CamOptions {
        method: CamMethod::GradCam,
        smooth: Default::default(),
        ..opts.clone()
    };
    let cam = layer_cam(net, input, &cam_opts, Some(class), &mut |_, _| true)?;
    let (_, _, h, w) = input.dims4()?;
    let up = nearest(&cam.lowres, cam.lowres_size, (h, w));
    let up = Tensor::from_vec(up, (1, 1, h, w), &Device::Cpu)?.to_device(input.device())?;
    Ok(gb.broadcast_mul(&up)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_repeats_each_value_over_its_block() {
        let out = nearest(&[1.0, 2.0, 3.0, 4.0], (2, 2), (4, 4));
        assert_eq!(&out[..4], &[1.0, 1.0, 2.0, 2.0]);
        assert_eq!(&out[12..], &[3.0, 3.0, 4.0, 4.0]);
    }
}
