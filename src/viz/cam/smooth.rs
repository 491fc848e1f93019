//! Smoothing of a layer CAM as pytorch-grad-cam 1.5.7 defines it: `aug_smooth` (the mean of the
//! maps of six test-time augmentations, each mapped back) and `eigen_smooth` (the first
//! principal component of the channels' contributions instead of their sum).

use std::fmt;
use std::str::FromStr;

use candle_core::{Device, Tensor};

use super::{Cam, CamOptions, layer_cam, resolve_class};
use crate::graph::Network;
use crate::{Error, Result};

/// How a layer CAM is smoothed.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Smooth {
    /// No smoothing.
    #[default]
    None,
    /// Test-time augmentation: the image as is and flipped left-right, each times 0.9, 1 and
    /// 1.1 (ttach's `HorizontalFlip` x `Multiply`); the six maps (each normalised, flipped
    /// back) are averaged. Six times the work.
    Aug,
    /// The channels' contributions (`w_c A_c`, or `G A` for HiResCAM and Layer-CAM's
    /// `relu(G) A`) projected on their first principal component instead of summed.
    Eigen,
}

impl Smooth {
    /// Every smoothing, in the order the GUI lists them.
    pub const ALL: [Smooth; 3] = [Smooth::None, Smooth::Aug, Smooth::Eigen];

    /// The command-line name.
    pub fn name(self) -> &'static str {
        match self {
            Smooth::None => "none",
            Smooth::Aug => "aug",
            Smooth::Eigen => "eigen",
        }
    }
}

impl fmt::Display for Smooth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Smooth {
    type Err = String;

    fn from_str(s: &str) -> std::result::Result<Self, String> {
        Smooth::ALL
            .into_iter()
            .find(|m| m.name() == s.trim().to_ascii_lowercase())
            .ok_or_else(|| format!("unknown smoothing `{s}`; use none, aug or eigen"))
    }
}

/// The image flipped left-right: `[1, 3, H, W]`, columns reversed.
fn flip(x: &Tensor) -> Result<Tensor> {
    let w = x.dim(3)?;
    let idx: Vec<u32> = (0..w as u32).rev().collect();
    let idx = Tensor::from_vec(idx, w, &Device::Cpu)?.to_device(x.device())?;
    Ok(x.index_select(&idx, 3)?)
}

/// `--smooth aug`: the class is fixed first (asked for, or the top-1 of the image as is).
pub(super) fn augmented(
    net: &Network,
    input: &Tensor,
    opts: &CamOptions,
    progress: &mut dyn FnMut(usize, usize) -> bool,
) -> Result<Cam> {
    let (class, _) = resolve_class(&net.forward(input)?, opts.class)?;
    let (_, _, h, w) = input.dims4()?;
    let mut sum = vec![0f32; h * w];
    let mut plain = None;
    let mut done = 0;
    for flipped in [false, true] {
        for factor in [0.9, 1.0, 1.1] {
            if !progress(done, 6) {
                return Err(Error::Cancelled);
            }
            let x = if flipped { flip(input)? } else { input.clone() };
            let x = if factor == 1.0 {
                x
            } else {
                x.affine(factor, 0.0)?
            };
            let cam = layer_cam(net, &x, opts, Some(class), &mut |_, _| true)?;
            for (y, row) in sum.chunks_mut(w).enumerate() {
                let src = &cam.map[y * w..(y + 1) * w];
                for (x, v) in row.iter_mut().enumerate() {
                    *v += if flipped { src[w - 1 - x] } else { src[x] };
                }
            }
            if !flipped && factor == 1.0 {
                plain = Some(cam);
            }
            done += 1;
        }
    }
    progress(6, 6);
    let mut cam = plain.ok_or_else(|| Error::Model("no un-augmented map".into()))?;
    cam.map = sum.iter().map(|v| v / 6.0).collect();
    Ok(cam)
}
