//! Faithfulness metrics: does a heatmap point at what the model uses? For one image, one class
//! and one map at the input's size (any method's, `[h * w]` in `[0, 1]`):
//!
//! - ROAD most-relevant-first and least-relevant-first at percentiles, and their combination
//!   (pytorch-grad-cam 1.5.7's `ROADMostRelevantFirst`, `ROADLeastRelevantFirst`,
//!   `ROADCombined`; [`road`]);
//! - the confidence change of the image multiplied by the map, the drop and the increase in
//!   confidence (Chattopadhyay et al. 2018; `CamMultImageConfidenceChange`,
//!   `DropInConfidence`, `IncreaseInConfidence`);
//! - deletion and insertion AUC (Petsiuk et al. 2018, RISE; [`causal`]).
//!
//! The perturbed images of every map of an image are scored in shared batches (`batch` images
//! per forward, [`plan`]). The same metrics of a seeded uniform random map are the baseline a
//! map should beat ([`evaluate_methods`], [`evaluate_with_baseline`]).

pub mod causal;
pub mod noise;
pub mod plan;
pub mod road;

use candle_core::{D, Device, IndexOp, Tensor};

use crate::cancel::CancelToken;
use crate::graph::Network;
use crate::viz::cam::CamScore;
use crate::{Error, Result};
use causal::Causal;

/// What to compute and how.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct FaithOptions {
    /// ROAD's percentiles (1-99), pytorch-grad-cam's `[10, 20, ..., 90]` by default.
    pub percentiles: Vec<u32>,
    /// The class score every metric reads: the softmax probability (default, as
    /// pytorch-grad-cam's ROAD examples and RISE use) or the raw logit.
    pub score: CamScore,
    /// Deletion / insertion steps (2-4096): `ceil(pixels / steps)` pixels move per step.
    pub steps: usize,
    /// Perturbed images per forward (1-256).
    pub batch: usize,
    /// Seed of the ROAD noise and the random-map baseline.
    pub seed: u64,
}

impl Default for FaithOptions {
    fn default() -> Self {
        FaithOptions {
            percentiles: (1..=9).map(|i| i * 10).collect(),
            score: CamScore::Probability,
            steps: 32,
            batch: 16,
            seed: 0,
        }
    }
}

impl FaithOptions {
    /// Errors, naming the option, unless percentiles are 1-99 (at least one), steps 2-4096
    /// and batch 1-256.
    pub fn validate(&self) -> Result<()> {
        if self.percentiles.is_empty() {
            return Err(Error::Model(
                "--percentiles needs at least one value".into(),
            ));
        }
        for &p in &self.percentiles {
            super::check_range("percentile", p, 1..=99)?;
        }
        super::check_range("--steps", self.steps, 2..=4096)?;
        super::check_range("--batch", self.batch, 1..=256)
    }
}

/// The metrics of one map. Score differences are `score(perturbed) - score(image)`.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Scores {
    /// ROAD most relevant first, one difference per percentile (the pixels at or above the
    /// percentile are imputed: lower is better).
    pub road_morf: Vec<f32>,
    /// ROAD least relevant first, per percentile (the pixels at or below `100 - p` of the
    /// map imputed: higher is better).
    pub road_lerf: Vec<f32>,
    /// Score change of the image multiplied by the map (`CamMultImageConfidenceChange`).
    pub confidence_change: f32,
    /// The deletion curve: the score after each step (first: the image).
    pub deletion: Vec<f32>,
    /// The insertion curve (first: the blurred image, last: the image).
    pub insertion: Vec<f32>,
}

/// One number per map, as the report and the GUI list them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum Metric {
    RoadMorf,
    RoadLerf,
    RoadCombined,
    DropInConfidence,
    IncreaseInConfidence,
    DeletionAuc,
    InsertionAuc,
}

impl Metric {
    /// Every metric, in report order.
    pub const ALL: [Metric; 7] = [
        Metric::RoadMorf,
        Metric::RoadLerf,
        Metric::RoadCombined,
        Metric::DropInConfidence,
        Metric::IncreaseInConfidence,
        Metric::DeletionAuc,
        Metric::InsertionAuc,
    ];

    /// The column name (CSV, JSON).
    pub fn name(self) -> &'static str {
        match self {
            Metric::RoadMorf => "road_morf",
            Metric::RoadLerf => "road_lerf",
            Metric::RoadCombined => "road_combined",
            Metric::DropInConfidence => "drop_in_confidence",
            Metric::IncreaseInConfidence => "increase_in_confidence",
            Metric::DeletionAuc => "deletion_auc",
            Metric::InsertionAuc => "insertion_auc",
        }
    }

    /// A short label for figures and the GUI.
    pub fn title(self) -> &'static str {
        match self {
            Metric::RoadMorf => "ROAD MoRF",
            Metric::RoadLerf => "ROAD LeRF",
            Metric::RoadCombined => "ROAD combined",
            Metric::DropInConfidence => "Drop in conf.",
            Metric::IncreaseInConfidence => "Increase in conf.",
            Metric::DeletionAuc => "Deletion AUC",
            Metric::InsertionAuc => "Insertion AUC",
        }
    }

    /// Whether a larger value means a more faithful map.
    pub fn higher_is_better(self) -> bool {
        !matches!(
            self,
            Metric::RoadMorf | Metric::DropInConfidence | Metric::DeletionAuc
        )
    }
}

impl Scores {
    /// The mean of the ROAD MoRF differences (`ROADMostRelevantFirstAverage`).
    pub fn road_morf_mean(&self) -> f32 {
        mean(&self.road_morf)
    }

    /// The mean of the ROAD LeRF differences (`ROADLeastRelevantFirstAverage`).
    pub fn road_lerf_mean(&self) -> f32 {
        mean(&self.road_lerf)
    }

    /// The value of one metric.
    pub fn metric(&self, m: Metric) -> f32 {
        match m {
            Metric::RoadMorf => self.road_morf_mean(),
            Metric::RoadLerf => self.road_lerf_mean(),
            // `ROADCombined`: (LeRF - MoRF) / 2.
            Metric::RoadCombined => (self.road_lerf_mean() - self.road_morf_mean()) / 2.0,
            Metric::DropInConfidence => (-self.confidence_change).max(0.0),
            Metric::IncreaseInConfidence => f32::from(u8::from(self.confidence_change > 0.0)),
            Metric::DeletionAuc => causal::auc(&self.deletion),
            Metric::InsertionAuc => causal::auc(&self.insertion),
        }
    }
}

fn mean(v: &[f32]) -> f32 {
    v.iter().sum::<f32>() / v.len().max(1) as f32
}

/// The metrics of a map and of the random-map baseline, for one image and class.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Faithfulness {
    /// The class the scores are for.
    pub class: usize,
    /// The class score of the unperturbed image.
    pub score: f32,
    /// The map's metrics.
    pub map: Scores,
    /// The same metrics of [`random_map`] (seeded by the options' seed).
    pub random: Scores,
}

/// The random-map baseline: `h * w` uniform values in `[0, 1)` from `seed`
/// (stream `random-map` of [`noise::uniform`]).
pub fn random_map(seed: u64, (h, w): (usize, usize)) -> Vec<f32> {
    noise::uniform(seed, "random-map", h * w)
}

/// The ROAD noise of one perturbation, `[c, h, w]`: [`road::NOISE`] times standard normal
/// values of stream `road-morf-P` or `road-lerf-P`.
pub fn road_noise(seed: u64, most_relevant_first: bool, percentile: u32, len: usize) -> Vec<f32> {
    let kind = if most_relevant_first { "morf" } else { "lerf" };
    noise::normal(seed, &format!("road-{kind}-{percentile}"), len)
        .into_iter()
        .map(|g| road::NOISE * g)
        .collect()
}

/// The score of `class` for each image of a batch `[n, c, h, w]`.
pub fn class_scores(net: &Network, x: &Tensor, class: usize, score: CamScore) -> Result<Vec<f32>> {
    let logits = net.forward(x)?;
    let classes = logits.dim(1)?;
    if class >= classes {
        return Err(Error::Model(format!(
            "class {class} is out of range: the model has {classes} classes"
        )));
    }
    let s = match score {
        CamScore::Logit => logits,
        CamScore::Probability => candle_nn::ops::softmax(&logits, D::Minus1)?,
    };
    let v = s
        .i((.., class))?
        .to_device(&Device::Cpu)?
        .to_vec1::<f32>()?;
    if let Some(bad) = v.iter().find(|s| !s.is_finite()) {
        return Err(Error::NonFinite {
            what: format!("the score of class {class} of a perturbed image"),
            value: *bad,
        });
    }
    Ok(v)
}

/// The metrics of `map` (`[h * w]`, row-major, the input's size) for `class` on one
/// preprocessed image `input` `[1, c, h, w]`, and the unperturbed image's class score.
/// `progress(done, total)` counts scored images; `cancel` stops the work with
/// [`Error::Cancelled`] between batches and inside ROAD's imputations (each a solve that can
/// run for seconds).
pub fn evaluate(
    net: &Network,
    input: &Tensor,
    map: &[f32],
    class: usize,
    opts: &FaithOptions,
    cancel: &CancelToken,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<(f32, Scores)> {
    let (score, mut scores) = evaluate_many(net, input, &[map], class, opts, cancel, progress)?;
    Ok((score, scores.remove(0)))
}

/// The metrics of each of `maps` (`[h * w]` each) for `class` on one preprocessed image
/// `input` `[1, c, h, w]`, and the unperturbed image's class score. Every perturbed image of
/// every map is scored in shared batches of `opts.batch`, made (ROAD's imputations in
/// parallel) only when its batch is scored; the images no map changes (the image, its blurred
/// copy, zeros) are scored once. `cancel` and `progress` as [`evaluate`]'s.
pub fn evaluate_many(
    net: &Network,
    input: &Tensor,
    maps: &[&[f32]],
    class: usize,
    opts: &FaithOptions,
    cancel: &CancelToken,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<(f32, Vec<Scores>)> {
    use plan::{Perturbation, Plan};
    use rayon::prelude::*;
    opts.validate()?;
    let (b, c, h, w) = input.dims4()?;
    if b != 1 {
        return Err(Error::Model(format!(
            "faithfulness is measured one image at a time, got a batch of {b}"
        )));
    }
    for map in maps {
        if map.len() != h * w {
            return Err(Error::Model(format!(
                "the map has {} values but the input is {h}x{w}: a map must be at the input's size",
                map.len()
            )));
        }
        if let Some(bad) = map.iter().find(|v| !v.is_finite()) {
            return Err(Error::NonFinite {
                what: "a value of the map".into(),
                value: *bad,
            });
        }
    }
    let image = input
        .to_device(&Device::Cpu)?
        .flatten_all()?
        .to_vec1::<f32>()?;
    let plan = Plan::new(
        &image,
        (c, h, w),
        maps,
        &opts.percentiles,
        opts.steps,
        opts.seed,
    );
    let total = plan.items.len();
    let mut scored = Vec::with_capacity(total);
    for chunk in plan.items.chunks(opts.batch.max(1)) {
        cancel.check()?;
        let images = chunk
            .par_iter()
            .map(|&what| plan.image(what, cancel))
            .collect::<Result<Vec<Vec<f32>>>>()?;
        let flat: Vec<f32> = images.into_iter().flatten().collect();
        let x = Tensor::from_vec(flat, (chunk.len(), c, h, w), &Device::Cpu)?
            .to_device(input.device())?;
        scored.extend(class_scores(net, &x, class, opts.score)?);
        progress(scored.len(), total);
    }
    cancel.check()?;

    let n_p = opts.percentiles.len();
    let steps = plan.steps();
    let mut out = vec![
        Scores {
            road_morf: vec![f32::NAN; n_p],
            road_lerf: vec![f32::NAN; n_p],
            confidence_change: f32::NAN,
            deletion: vec![f32::NAN; steps + 1],
            insertion: vec![f32::NAN; steps + 1],
        };
        maps.len()
    ];
    let base = scored[0];
    for (&what, &s) in plan.items.iter().zip(&scored) {
        match what {
            Perturbation::Image => {
                for m in &mut out {
                    m.deletion[0] = s;
                    m.insertion[steps] = s;
                }
            }
            Perturbation::Blurred => out.iter_mut().for_each(|m| m.insertion[0] = s),
            Perturbation::Zeros => out.iter_mut().for_each(|m| m.deletion[steps] = s),
            Perturbation::Product { map } => out[map].confidence_change = s - base,
            Perturbation::Road {
                map,
                most_relevant_first,
                percentile,
            } => {
                let v = if most_relevant_first {
                    &mut out[map].road_morf
                } else {
                    &mut out[map].road_lerf
                };
                v[percentile] = s - base;
            }
            Perturbation::Curve { map, kind, k } => match kind {
                Causal::Deletion => out[map].deletion[k] = s,
                Causal::Insertion => out[map].insertion[k] = s,
            },
        }
    }
    Ok((base, out))
}

/// [`evaluate`] for `map` and for the random-map baseline, in shared batches.
pub fn evaluate_with_baseline(
    net: &Network,
    input: &Tensor,
    map: &[f32],
    class: usize,
    opts: &FaithOptions,
    cancel: &CancelToken,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<Faithfulness> {
    let (score, mut maps, random) =
        evaluate_methods(net, input, &[map], class, opts, cancel, progress)?;
    Ok(Faithfulness {
        class,
        score,
        map: maps.remove(0),
        random,
    })
}

/// [`evaluate_many`] for `maps` and the random-map baseline ([`random_map`]): the
/// unperturbed score, each map's metrics and the baseline's. `cancel` and `progress` as
/// [`evaluate`]'s: the baseline's ROAD imputations (a random map removes scattered pixels
/// all over the image) stop on cancel like every other map's.
pub fn evaluate_methods(
    net: &Network,
    input: &Tensor,
    maps: &[&[f32]],
    class: usize,
    opts: &FaithOptions,
    cancel: &CancelToken,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<(f32, Vec<Scores>, Scores)> {
    let (_, _, h, w) = input.dims4()?;
    let random = random_map(opts.seed, (h, w));
    let mut all = maps.to_vec();
    all.push(&random);
    let (score, mut scores) = evaluate_many(net, input, &all, class, opts, cancel, progress)?;
    let random = scores
        .pop()
        .ok_or_else(|| Error::Model("no baseline".into()))?;
    Ok((score, scores, random))
}

/// The metrics of the random-map baseline alone.
pub fn baseline(
    net: &Network,
    input: &Tensor,
    class: usize,
    opts: &FaithOptions,
    cancel: &CancelToken,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<Scores> {
    let (_, _, h, w) = input.dims4()?;
    let map = random_map(opts.seed, (h, w));
    Ok(evaluate(net, input, &map, class, opts, cancel, progress)?.1)
}

/// The mean rank of each map over every [`Metric`] (1 = best on every metric; ties share the
/// mean of their ranks; a value that is not a number ranks last): the "compare methods" order.
pub fn mean_ranks(scores: &[&Scores]) -> Vec<f32> {
    let n = scores.len();
    let mut total = vec![0f32; n];
    for m in Metric::ALL {
        let key = |i: usize| {
            let v = scores[i].metric(m);
            let v = if m.higher_is_better() { -v } else { v };
            if v.is_nan() { f32::INFINITY } else { v }
        };
        let mut order: Vec<usize> = (0..n).collect();
        order.sort_by(|&a, &b| key(a).total_cmp(&key(b)));
        let mut i = 0;
        while i < n {
            let mut j = i;
            while j + 1 < n && key(order[j + 1]) == key(order[i]) {
                j += 1;
            }
            for &k in &order[i..=j] {
                total[k] += (i + j) as f32 / 2.0 + 1.0;
            }
            i = j + 1;
        }
    }
    total.iter().map(|t| t / Metric::ALL.len() as f32).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_are_checked() {
        assert!(FaithOptions::default().validate().is_ok());
        let bad = FaithOptions {
            percentiles: vec![0],
            ..FaithOptions::default()
        };
        assert!(
            bad.validate()
                .unwrap_err()
                .to_string()
                .contains("percentile 0")
        );
        let bad = FaithOptions {
            steps: 1,
            ..FaithOptions::default()
        };
        assert!(bad.validate().unwrap_err().to_string().contains("--steps"));
    }

    #[test]
    fn derived_metrics_follow_the_library() {
        let s = Scores {
            road_morf: vec![-0.4, -0.2],
            road_lerf: vec![0.1, -0.1],
            confidence_change: -0.25,
            deletion: vec![1.0, 0.0],
            insertion: vec![0.0, 1.0, 1.0],
        };
        assert!((s.metric(Metric::RoadMorf) + 0.3).abs() < 1e-6);
        assert!((s.metric(Metric::RoadCombined) - 0.15).abs() < 1e-6);
        assert_eq!(s.metric(Metric::DropInConfidence), 0.25);
        assert_eq!(s.metric(Metric::IncreaseInConfidence), 0.0);
        assert_eq!(s.metric(Metric::DeletionAuc), 0.5);
        assert_eq!(s.metric(Metric::InsertionAuc), 0.75);
        // A map better on every metric ranks first on every metric.
        let better = Scores {
            road_morf: vec![-0.9, -0.9],
            road_lerf: vec![0.2, 0.2],
            confidence_change: 0.1,
            deletion: vec![0.5, 0.0],
            insertion: vec![1.0, 1.0, 1.0],
        };
        assert_eq!(mean_ranks(&[&s, &better]), [2.0, 1.0]);
        assert_eq!(mean_ranks(&[&s, &s]), [1.5, 1.5]);
    }
}
