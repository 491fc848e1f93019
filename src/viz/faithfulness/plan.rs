//! Every perturbed image the metrics of several maps of one image need, listed once so they
//! are scored in shared, full batches: the image times each map, ROAD's imputations at each
//! percentile (most and least relevant first) and the inner steps of the deletion and
//! insertion curves. The images no map changes (the image itself, its blurred copy, zeros:
//! the curves' ends) are scored once for all of them. Images are made only when their batch is
//! scored, so memory holds one batch, not the whole list.

use super::causal::{self, Causal};
use super::{road, road_noise};
use crate::Result;
use crate::cancel::CancelToken;

/// One image to score.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Perturbation {
    /// The unperturbed image (every difference's reference, a deletion curve's first point
    /// and an insertion curve's last).
    Image,
    /// The image blurred by RISE's kernel (every insertion curve's first point).
    Blurred,
    /// Zeros (every deletion curve's last point).
    Zeros,
    /// The image multiplied by map `map` (`CamMultImageConfidenceChange`).
    Product { map: usize },
    /// ROAD's imputation for map `map` at the options' `percentile`-th percentile.
    Road {
        map: usize,
        most_relevant_first: bool,
        percentile: usize,
    },
    /// Step `k` of map `map`'s curve, strictly inside it (`0 < k < steps`).
    Curve { map: usize, kind: Causal, k: usize },
}

/// What the images of every map are made from.
pub struct Plan<'a> {
    image: &'a [f32],
    dims: (usize, usize, usize),
    maps: Vec<&'a [f32]>,
    /// Per map: pixels by decreasing map value ([`causal::salient_order`]).
    orders: Vec<Vec<usize>>,
    /// The insertion curve's start (the image blurred by RISE's kernel).
    blurred: Vec<f32>,
    zeros: Vec<f32>,
    percentiles: Vec<u32>,
    /// ROAD's noise per (most relevant first, percentile index): the same for every map.
    noise: Vec<Vec<f32>>,
    /// Pixels per curve step and the number of steps ([`causal::step_size`]).
    step: usize,
    steps: usize,
    /// Every image to score, [`Perturbation::Image`] first.
    pub items: Vec<Perturbation>,
}

impl<'a> Plan<'a> {
    /// The plan for `maps` (`[h * w]` each) of `image` (`[c, h, w]`).
    pub fn new(
        image: &'a [f32],
        dims: (usize, usize, usize),
        maps: &[&'a [f32]],
        percentiles: &[u32],
        curve_steps: usize,
        seed: u64,
    ) -> Plan<'a> {
        let (_, h, w) = dims;
        let (step, steps) = causal::step_size(h * w, curve_steps);
        let road_cases: Vec<(bool, usize)> = [true, false]
            .into_iter()
            .flat_map(|morf| (0..percentiles.len()).map(move |i| (morf, i)))
            .collect();
        let noise: Vec<Vec<f32>> = {
            use rayon::prelude::*;
            road_cases
                .par_iter()
                .map(|&(morf, i)| road_noise(seed, morf, percentiles[i], image.len()))
                .collect()
        };
        let mut items = vec![
            Perturbation::Image,
            Perturbation::Blurred,
            Perturbation::Zeros,
        ];
        for map in 0..maps.len() {
            items.push(Perturbation::Product { map });
            for &(most_relevant_first, percentile) in &road_cases {
                items.push(Perturbation::Road {
                    map,
                    most_relevant_first,
                    percentile,
                });
            }
            for kind in [Causal::Deletion, Causal::Insertion] {
                for k in 1..steps {
                    items.push(Perturbation::Curve { map, kind, k });
                }
            }
        }
        Plan {
            image,
            dims,
            maps: maps.to_vec(),
            orders: maps.iter().map(|m| causal::salient_order(m)).collect(),
            blurred: causal::blur(image, dims),
            zeros: vec![0.0; image.len()],
            percentiles: percentiles.to_vec(),
            noise,
            step,
            steps,
            items,
        }
    }

    /// Curve steps (each curve has `steps + 1` points).
    pub fn steps(&self) -> usize {
        self.steps
    }

    /// The image `[c, h, w]` of `what`; a ROAD imputation stops with
    /// [`crate::Error::Cancelled`] once `cancel` is set.
    pub fn image(&self, what: Perturbation, cancel: &CancelToken) -> Result<Vec<f32>> {
        let (c, h, w) = self.dims;
        Ok(match what {
            Perturbation::Image => self.image.to_vec(),
            Perturbation::Blurred => self.blurred.clone(),
            Perturbation::Zeros => self.zeros.clone(),
            Perturbation::Product { map } => {
                let m = self.maps[map];
                self.image
                    .iter()
                    .enumerate()
                    .map(|(i, v)| v * m[i % (h * w)])
                    .collect()
            }
            Perturbation::Road {
                map,
                most_relevant_first,
                percentile,
            } => {
                let p = self.percentiles[percentile];
                let keep = road::keep_mask(self.maps[map], f64::from(p), most_relevant_first);
                let case = (if most_relevant_first {
                    0
                } else {
                    self.percentiles.len()
                }) + percentile;
                road::impute(self.image, self.dims, &keep, &self.noise[case], cancel)?
            }
            Perturbation::Curve { map, kind, k } => {
                let (start, finish) = match kind {
                    Causal::Deletion => (self.image, self.zeros.as_slice()),
                    Causal::Insertion => (self.blurred.as_slice(), self.image),
                };
                causal::image_at(start, finish, &self.orders[map], self.step, k, c)
            }
        })
    }
}
