//! The probe's second instance measure: **input reconstruction**, how much of the image a
//! linear decoder recovers from a layer's activations (a linear, closed-form relative of
//! Mahendran & Vedaldi's inversion, "Understanding deep image representations by inverting
//! them", 2015). Reported as the held-out R^2: the fraction of the image's pixel variance the
//! decoder's output explains on images it was not fitted on.
//!
//! ## The measure (decided before looking at its answer)
//!
//! - **Target**: the model's input (its preprocessed, normalised tensor) average-pooled to
//!   [`RECON_GRID`] x [`RECON_GRID`] (4-pixel blocks of a 224 input), the same image for every
//!   layer, three colours.
//! - **Decoder**: one linear map shared by all positions, from the channel vector `[c]` of one
//!   cell of the layer to the `p x p x 3` block of the target that cell covers (a 1 x 1
//!   transposed convolution of stride `p`, as a "pixel shuffle" decoder). A decoder from the
//!   whole map would have `c x h x w` inputs (62,720 at Lite0's head) and no closed form; a
//!   shared one has `c` and a row per cell and image, and a coarse layer can still say where
//!   in its block things are through its channels.
//! - **Each layer at its own resolution.** The claim is about the information a layer keeps,
//!   and halving the resolution is not by itself a loss (a stride-2 convolution with four
//!   times the channels can keep everything), so a layer is *not* pooled to a common grid as
//!   the retrieval does; the target is common instead. A map finer than the target is
//!   average-pooled to it (the target is itself an average, and the average of a linear code
//!   is the code of the average); a map whose side does not divide [`RECON_GRID`] is pooled to
//!   the next coarser side that does (Inception's 17 x 17 to 14 x 14; no model of 224-pixel
//!   input whose maps halve needs this). A map coarser than [`MIN_GRID`] is not measured.
//! - **Alignment.** With PyTorch's padding a cell `i` of stride `s` is centred on input pixel
//!   `s i`, not on the middle of the block `[s i, s i + s)`: the head's cells sit half a cell
//!   (16 pixels) up and left of the blocks they would decode, which would penalise exactly the
//!   coarse layers. So the decoder may move its blocks by up to half a block, in whole target
//!   pixels, the same way on both axes (`p + 1` candidates, one for the finest layers), and the
//!   shift is chosen with the ridge strength on validation images, never on the scored ones.
//! - **The same pixels for every layer**: only the cells whose blocks lie in the central
//!   region one coarsest cell inside the border are used and scored (224 input: pixels 32 to
//!   192), so every shift stays inside the image and no layer is scored on a border another
//!   lacks.
//! - **Fit**: ridge regression on standardised channels ([`super::ridge`]), its strength one of
//!   [`RIDGE_ALPHAS`], chosen with the shift on every [`VALIDATION_EVERY`]-th train image,
//!   refitted on all train images and scored on the held-out ones (validation and test
//!   splits). No class label is used.
//!
//! The sums are added during the probe's one pass ([`Reconstruction::add`]); per layer three
//! sets (fit, validation, held out) of `X'X` (`c x c`) and `X'Y` (`c x 3 p^2 (p + 1)`) in f64:
//! about 150 MB for EfficientNet-Lite0, whatever the number of images.
//!
//! A linear decoder is a lower bound on what a layer keeps: information coded non-linearly
//! (by the ReLUs, or spread over neighbouring cells) counts for nothing here.

use candle_core::{DType, Tensor};
use serde::{Deserialize, Serialize};

use super::probe::grid_pool;
use super::ridge::{RidgeStats, held_out_r2};
use crate::{Error, Result};

/// The side the input is average-pooled to: the image every layer reconstructs.
pub const RECON_GRID: usize = 56;
/// Maps coarser than this (after pooling to a divisor of [`RECON_GRID`]) are not measured.
pub const MIN_GRID: usize = 4;
/// The ridge strengths tried (per row, on standardised channels).
pub const RIDGE_ALPHAS: [f64; 7] = [1e-4, 1e-3, 1e-2, 1e-1, 1.0, 10.0, 100.0];
/// Every this-many-th train image chooses the shift and strength instead of fitting.
pub const VALIDATION_EVERY: usize = 5;

/// Which rows an image adds to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Part {
    Fit,
    Validation,
    HeldOut,
}

impl Part {
    /// The part of the probe's image `i` (train images first, `train` of them).
    pub fn of_image(i: usize, train: usize) -> Part {
        if i >= train {
            Part::HeldOut
        } else if i % VALIDATION_EVERY == VALIDATION_EVERY - 1 {
            Part::Validation
        } else {
            Part::Fit
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// How one layer is read: its map pooled to `grid` x `grid`, each cell decoding a
/// `patch` x `patch` block of the target; the cells `first..first + cells` on both axes; the
/// candidate blocks start at target rows `starts` (the shifts).
#[derive(Clone, Debug, PartialEq)]
struct Geometry {
    grid: usize,
    patch: usize,
    first: usize,
    cells: usize,
    starts: Vec<usize>,
}

/// The shift and strength the decoder of a layer chose.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ReconChoice {
    /// The ridge strength.
    pub alpha: f64,
    /// How far the blocks were moved, in input pixels (both axes; negative: up and left).
    pub shift_px: f32,
}

/// The largest divisor of `t` that is at most `side`.
fn divisor_at_most(t: usize, side: usize) -> usize {
    (1..=side.min(t))
        .rev()
        .find(|g| t.is_multiple_of(*g))
        .unwrap_or(1)
}

/// The geometry of every layer of map sides `sides` (`None`: not measured).
fn geometries(sides: &[usize]) -> Vec<Option<Geometry>> {
    let t = RECON_GRID;
    let grids: Vec<usize> = sides.iter().map(|&s| divisor_at_most(t, s)).collect();
    let Some(coarsest) = grids.iter().copied().filter(|&g| g >= MIN_GRID).min() else {
        return vec![None; sides.len()];
    };
    let frame = t / coarsest;
    grids
        .iter()
        .map(|&grid| {
            if grid < MIN_GRID {
                return None;
            }
            let patch = t / grid;
            let first = frame.div_ceil(patch);
            let cells = ((t - frame) / patch)
                .checked_sub(first)
                .filter(|&c| c > 0)?;
            let half = patch / 2;
            let starts = (0..=2 * half).map(|k| first * patch + k - half).collect();
            Some(Geometry {
                grid,
                patch,
                first,
                cells,
                starts,
            })
        })
        .collect()
}

impl Geometry {
    /// The rows of images `act` `[n, c, h, w]` and `target` `[n, 3, T, T]`: features
    /// `[n * cells^2, c]` and targets `[n * cells^2, 3 * patch^2 * shifts]`.
    fn rows(&self, act: &Tensor, target: &Tensor) -> Result<(Tensor, Tensor)> {
        let (n, c, h, w) = act.dims4()?;
        let (g, p, m) = (self.grid, self.patch, self.cells);
        let pooled = if (h, w) == (g, g) {
            act.to_dtype(DType::F32)?
        } else {
            grid_pool(act, g)?.reshape((n, c, g, g))?
        };
        let x = pooled
            .narrow(2, self.first, m)?
            .narrow(3, self.first, m)?
            .permute((0, 2, 3, 1))?
            .reshape((n * m * m, c))?;
        let ys = self
            .starts
            .iter()
            .map(|&s| {
                Ok(target
                    .narrow(2, s, m * p)?
                    .narrow(3, s, m * p)?
                    .reshape(vec![n, 3, m, p, m, p])?
                    .permute(vec![0, 2, 4, 1, 3, 5])?
                    .reshape((n * m * m, 3 * p * p))?)
            })
            .collect::<Result<Vec<_>>>()?;
        Ok((x, Tensor::cat(&ys, 1)?))
    }
}

/// The sums of every layer's decoders, added batch by batch.
pub struct Reconstruction {
    input_size: usize,
    taps: Vec<Option<(Geometry, Vec<RidgeStats>)>>,
}

impl Reconstruction {
    /// For layers of output shapes `[c, h, w]` of an `input_size` input.
    pub fn new(shapes: &[[usize; 3]], input_size: usize) -> Result<Reconstruction> {
        let sides: Vec<usize> = shapes.iter().map(|s| s[1].min(s[2])).collect();
        let taps = geometries(&sides)
            .into_iter()
            .zip(shapes)
            .map(|(geo, shape)| {
                geo.map(|geo| {
                    let k = 3 * geo.patch * geo.patch * geo.starts.len();
                    let stats = (0..3)
                        .map(|_| RidgeStats::new(shape[0], k))
                        .collect::<Result<Vec<_>>>()?;
                    Ok((geo, stats))
                })
                .transpose()
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Reconstruction { input_size, taps })
    }

    /// The target of input batch `x` `[n, 3, S, S]`: `[n, 3, T, T]` f32.
    pub fn target(x: &Tensor) -> Result<Tensor> {
        let n = x.dim(0)?;
        Ok(grid_pool(x, RECON_GRID)?.reshape((n, 3, RECON_GRID, RECON_GRID))?)
    }

    /// Adds the images of `act` `[n, c, h, w]` (layer `tap`) with their targets `[n, 3, T, T]`
    /// ([`Self::target`]), image `j` to the rows of `parts[j]`.
    pub fn add(&mut self, tap: usize, act: &Tensor, target: &Tensor, parts: &[Part]) -> Result<()> {
        let Some(Some((geo, stats))) = self.taps.get_mut(tap) else {
            return Ok(());
        };
        if parts.len() != act.dim(0)? || parts.len() != target.dim(0)? {
            return Err(Error::Model(format!(
                "reconstruction: {} parts for {} images",
                parts.len(),
                act.dim(0)?
            )));
        }
        for part in [Part::Fit, Part::Validation, Part::HeldOut] {
            let idx: Vec<u32> = (0..parts.len() as u32)
                .filter(|&j| parts[j as usize] == part)
                .collect();
            if idx.is_empty() {
                continue;
            }
            let idx = Tensor::new(idx.as_slice(), act.device())?;
            let (x, y) = geo.rows(
                &act.index_select(&idx, 0)?,
                &target.index_select(&idx.to_device(target.device())?, 0)?,
            )?;
            stats[part.index()].add(&x, &y)?;
        }
        Ok(())
    }

    /// Per layer: the held-out R^2 and the decoder's choice (`None`: not measured, or no
    /// image in a part).
    pub fn finish(self) -> Result<Vec<Option<(f32, ReconChoice)>>> {
        let px = self.input_size as f32 / RECON_GRID as f32;
        self.taps
            .into_iter()
            .map(|tap| {
                let Some((geo, stats)) = tap else {
                    return Ok(None);
                };
                if stats.iter().any(|s| s.n < 1.0) {
                    return Ok(None);
                }
                let (r2, choice) = held_out_r2(
                    &stats[0],
                    &stats[1],
                    &stats[2],
                    geo.starts.len(),
                    &RIDGE_ALPHAS,
                )?;
                let moved = geo.starts[choice.group] as f32 - (geo.first * geo.patch) as f32;
                Ok(Some((
                    r2 as f32,
                    ReconChoice {
                        alpha: RIDGE_ALPHAS[choice.alpha],
                        shift_px: moved * px,
                    },
                )))
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn lite0_maps_are_read_at_their_own_resolution_on_the_same_central_pixels() {
        // EfficientNet-Lite0 at 224: 112, 56, 28, 14 and 7.
        let geo = geometries(&[112, 56, 28, 14, 7, 2]);
        let g = |i: usize| geo[i].clone().unwrap();
        // Grids and blocks: 112 pooled to 56 (1 target pixel), then 2, 4, 8.
        let got: Vec<(usize, usize)> = (0..5).map(|i| (g(i).grid, g(i).patch)).collect();
        assert_eq!(got, [(56, 1), (56, 1), (28, 2), (14, 4), (7, 8)]);
        // Every layer covers target pixels 8..48 (input 32..192) without a shift.
        for i in 0..5 {
            let (a, b) = (
                g(i).first * g(i).patch,
                (g(i).first + g(i).cells) * g(i).patch,
            );
            assert_eq!((a, b), (8, 48), "{:?}", g(i));
        }
        // Shifts: up to half a block each way.
        assert_eq!(g(0).starts, [8]);
        assert_eq!(g(2).starts, [7, 8, 9]);
        assert_eq!(g(4).starts, (4..=12).collect::<Vec<_>>());
        assert_eq!(geo[5], None);
        // Inception-like sides: 17 is read as 14, 35 as 28, 8 as 8.
        let inc = geometries(&[149, 35, 17, 8]);
        let grids: Vec<usize> = inc.iter().map(|g| g.clone().unwrap().grid).collect();
        assert_eq!(grids, [56, 28, 14, 8]);
    }

    #[test]
    fn rows_pair_each_cell_with_the_block_it_covers() -> Result<()> {
        // A 7 x 7 map of 2 channels whose channel 0 is its cell's row, channel 1 its column;
        // a target whose pixel (y, x) is 100 y + x in every colour.
        let t = RECON_GRID;
        let mut a = vec![0f32; 2 * 49];
        for y in 0..7 {
            for x in 0..7 {
                a[y * 7 + x] = y as f32;
                a[49 + y * 7 + x] = x as f32;
            }
        }
        let act = Tensor::from_vec(a, (1, 2, 7, 7), &Device::Cpu)?;
        let px: Vec<f32> = (0..3 * t * t)
            .map(|i| (100 * ((i / t) % t) + i % t) as f32)
            .collect();
        let target = Tensor::from_vec(px, (1, 3, t, t), &Device::Cpu)?;
        let geo = geometries(&[7]).remove(0).unwrap();
        let (x, y) = geo.rows(&act, &target)?;
        assert_eq!(x.dims(), [25, 2]);
        assert_eq!(y.dims(), [25, 3 * 64 * 9]);
        let (x, y) = (x.to_vec2::<f32>()?, y.to_vec2::<f32>()?);
        // Row 7 = cell (2, 3) (cells 1..6): the unshifted block (shift 4 of 0..=8) starts at
        // target (16, 24); its second colour's pixel (1, 2) is (17, 26).
        assert_eq!(x[7], [2.0, 3.0]);
        let block = 4 * 3 * 64;
        assert_eq!(y[7][block], 1624.0);
        assert_eq!(y[7][block + 64 + 8 + 2], 1726.0);
        // Shift 0 moves the block 4 up and left.
        assert_eq!(y[7][0], 1220.0);
        Ok(())
    }

    #[test]
    fn images_go_to_their_part() {
        let parts: Vec<Part> = (0..8).map(|i| Part::of_image(i, 6)).collect();
        use Part::*;
        assert_eq!(
            parts,
            [Fit, Fit, Fit, Fit, Validation, Fit, HeldOut, HeldOut]
        );
    }
}
