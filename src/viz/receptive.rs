//! Where in the input a unit of a layer looks: its receptive field, derived empirically from
//! gradients once per layer (no stage needs to describe its geometry, so it holds for every
//! architecture of the zoo, branches and all).
//!
//! The centre unit of `layer` (summed over its channels) is differentiated with respect to a
//! batch of seeded random inputs of [`PROBE_SCALE`] times the model's input size (large, so
//! the field is not cut by the border); the input pixels with a non-zero gradient in any image
//! of the batch bound the field. Its half-size is the largest distance from the unit's centre
//! pixel to that box, the stride is the input size over the map size, and the unit's centre
//! pixel comes from the box's centre. This is a lower bound of the theoretical field (a path
//! through a unit that is off for every probe image counts for nothing), and exactly it for
//! the bundled Lite0 at `blocks.4` (see the test).

use candle_core::{Device, IndexOp, Tensor, Var};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::graph::Network;
use crate::{Error, Result};

/// The probe input is this many times the model's input size.
pub const PROBE_SCALE: usize = 2;
/// Random images differentiated together.
const PROBE_IMAGES: usize = 2;

/// The receptive field of every unit of a layer, in network-input pixels.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ReceptiveField {
    /// Input pixels per map position (input size / map size).
    pub stride: f32,
    /// Input pixel at the centre of map position 0 (rows and columns alike).
    pub offset: f32,
    /// Pixels from a unit's centre to the edge of its field (the field is `2 * radius + 1`
    /// pixels wide before the image's border cuts it).
    pub radius: u32,
}

impl ReceptiveField {
    /// The field of map position `(y, x)` as `[x0, y0, x1, y1]` (inclusive-exclusive) in an
    /// input of `size` x `size` pixels, cut at the border.
    pub fn patch(&self, y: usize, x: usize, size: u32) -> [u32; 4] {
        let span = |i: usize| {
            let c = self.offset + self.stride * i as f32;
            let lo = (c.round() - self.radius as f32).max(0.0) as u32;
            let hi = ((c.round() + self.radius as f32 + 1.0).max(0.0) as u32).min(size);
            (lo.min(size.saturating_sub(1)), hi.max(lo + 1).min(size))
        };
        let (x0, x1) = span(x);
        let (y0, y1) = span(y);
        [x0, y0, x1, y1]
    }
}

/// The receptive field of `layer` (a spatial layer) for a square input of `input_size` pixels,
/// probed by gradients on `device` (the one holding `net`'s weights).
pub fn receptive_field(
    net: &Network,
    layer: &str,
    input_size: usize,
    device: &Device,
) -> Result<ReceptiveField> {
    let size = input_size * PROBE_SCALE;
    let mut rng = ChaCha8Rng::seed_from_u64(0x7266_6965_6c64);
    let values: Vec<f32> = (0..PROBE_IMAGES * 3 * size * size)
        .map(|_| rng.random_range(-2.0f32..2.0))
        .collect();
    let x = Var::from_tensor(&Tensor::from_vec(
        values,
        (PROBE_IMAGES, 3, size, size),
        device,
    )?)?;
    let out = net.forward_range(None, layer, x.as_tensor(), false)?;
    if out.rank() != 4 {
        return Err(super::activations::not_spatial(
            net,
            x.as_tensor(),
            layer,
            out.dims(),
        ));
    }
    let (_, _, h, w) = out.dims4()?;
    let (cy, cx) = (h / 2, w / 2);
    let grads = out.i((.., .., cy, cx))?.sum_all()?.backward()?;
    let g = grads
        .get(x.as_tensor())
        .ok_or_else(|| Error::Model(format!("no gradient reaches the input from `{layer}`")))?
        .abs()?
        .sum((0, 1))?
        .to_vec2::<f32>()?;
    let rows: Vec<usize> = (0..size)
        .filter(|&r| g[r].iter().any(|&v| v > 0.0))
        .collect();
    let cols: Vec<usize> = (0..size)
        .filter(|&c| g.iter().any(|row| row[c] > 0.0))
        .collect();
    let (Some(&y0), Some(&y1), Some(&x0), Some(&x1)) =
        (rows.first(), rows.last(), cols.first(), cols.last())
    else {
        return Err(Error::Model(format!(
            "no input pixel reaches the centre unit of `{layer}`: its receptive field is empty"
        )));
    };
    let stride = size as f32 / h.max(w) as f32;
    // The centre pixel from the box, unless the border cut the box (then from the stride).
    let centre = |lo: usize, hi: usize, i: usize| {
        if lo > 0 && hi + 1 < size {
            (lo + hi) as f32 / 2.0
        } else {
            stride * i as f32 + (stride - 1.0) / 2.0
        }
    };
    let (py, px) = (centre(y0, y1, cy), centre(x0, x1, cx));
    let radius = [
        py - y0 as f32,
        y1 as f32 - py,
        px - x0 as f32,
        x1 as f32 - px,
    ]
    .into_iter()
    .fold(0f32, f32::max)
    .ceil() as u32;
    Ok(ReceptiveField {
        stride,
        offset: py - stride * cy as f32,
        radius,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patches_follow_the_stride_and_are_cut_at_the_border() {
        let f = ReceptiveField {
            stride: 8.0,
            offset: 0.0,
            radius: 10,
        };
        assert_eq!(f.patch(0, 0, 224), [0, 0, 11, 11]);
        assert_eq!(f.patch(2, 3, 224), [14, 6, 35, 27]);
        assert_eq!(f.patch(27, 27, 224), [206, 206, 224, 224]);
    }
}
