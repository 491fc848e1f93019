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
//! Every perturbed image is scored in batches (`batch` images per forward). The same metrics
//! of a seeded uniform random map are the baseline a map should beat ([`evaluate_with_baseline`]).

pub mod causal;
pub mod noise;
pub mod road;

use candle_core::{D, Device, IndexOp, Tensor};

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

    /// Forward passes (images) one [`evaluate`] runs, for progress.
    pub fn images_per_map(&self, pixels: usize) -> usize {
        let (_, n) = causal::step_size(pixels, self.steps);
        1 + 2 * self.percentiles.len() + 2 * (n + 1)
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

/// Reads class scores of images in batches.
struct Scorer<'a> {
    net: &'a Network,
    device: Device,
    dims: (usize, usize, usize),
    class: usize,
    opts: &'a FaithOptions,
}

impl Scorer<'_> {
    /// The class score of each image (`[c, h, w]` each), `opts.batch` per forward;
    /// `tick(images)` after each batch cancels when it returns `false`.
    fn scores(&self, images: &[Vec<f32>], tick: &mut dyn FnMut(usize) -> bool) -> Result<Vec<f32>> {
        let (c, h, w) = self.dims;
        let mut out = Vec::with_capacity(images.len());
        for chunk in images.chunks(self.opts.batch.max(1)) {
            let flat: Vec<f32> = chunk.iter().flatten().copied().collect();
            let x = Tensor::from_vec(flat, (chunk.len(), c, h, w), &Device::Cpu)?
                .to_device(&self.device)?;
            out.extend(class_scores(self.net, &x, self.class, self.opts.score)?);
            if !tick(chunk.len()) {
                return Err(Error::Cancelled);
            }
        }
        Ok(out)
    }
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
/// preprocessed image `input` `[1, c, h, w]`. `progress(done, total)` counts scored images
/// ([`FaithOptions::images_per_map`]) and cancels ([`Error::Cancelled`]) by returning `false`.
pub fn evaluate(
    net: &Network,
    input: &Tensor,
    map: &[f32],
    class: usize,
    opts: &FaithOptions,
    progress: &mut dyn FnMut(usize, usize) -> bool,
) -> Result<(f32, Scores)> {
    opts.validate()?;
    let (b, c, h, w) = input.dims4()?;
    if b != 1 {
        return Err(Error::Model(format!(
            "faithfulness is measured one image at a time, got a batch of {b}"
        )));
    }
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
    let image = input
        .to_device(&Device::Cpu)?
        .flatten_all()?
        .to_vec1::<f32>()?;
    let dims = (c, h, w);
    let scorer = Scorer {
        net,
        device: input.device().clone(),
        dims,
        class,
        opts,
    };
    let total = opts.images_per_map(h * w);
    let mut done = 0;
    let mut tick = |n: usize| {
        done += n;
        progress(done, total)
    };

    // The image, the image times the map, then ROAD's imputations.
    let mut images = vec![
        image.clone(),
        image
            .iter()
            .enumerate()
            .map(|(i, v)| v * map[i % (h * w)])
            .collect(),
    ];
    // The imputations are independent: solved in parallel.
    let cases: Vec<(bool, u32)> = [true, false]
        .into_iter()
        .flat_map(|morf| opts.percentiles.iter().map(move |&p| (morf, p)))
        .collect();
    let imputed: Vec<Result<Vec<f32>>> = {
        use rayon::prelude::*;
        cases
            .par_iter()
            .map(|&(most_relevant_first, p)| {
                let keep = road::keep_mask(map, f64::from(p), most_relevant_first);
                let noise = road_noise(opts.seed, most_relevant_first, p, image.len());
                road::impute(&image, dims, &keep, &noise)
            })
            .collect()
    };
    for img in imputed {
        images.push(img?);
    }
    let s = scorer.scores(&images, &mut tick)?;
    let base = s[0];
    let diff = |v: &[f32]| v.iter().map(|x| x - base).collect::<Vec<f32>>();
    let n_p = opts.percentiles.len();
    let confidence_change = s[1] - base;
    let road_morf = diff(&s[2..2 + n_p]);
    let road_lerf = diff(&s[2 + n_p..2 + 2 * n_p]);
    drop(images);

    let order = causal::salient_order(map);
    let (step, n_steps) = causal::step_size(h * w, opts.steps);
    let curve = |kind: Causal, tick: &mut dyn FnMut(usize) -> bool| -> Result<Vec<f32>> {
        let (start, finish) = causal::endpoints(kind, &image, dims);
        let mut scores = Vec::with_capacity(n_steps + 1);
        let ks: Vec<usize> = (0..=n_steps).collect();
        for chunk in ks.chunks(opts.batch.max(1)) {
            let imgs: Vec<Vec<f32>> = chunk
                .iter()
                .map(|&k| causal::image_at(&start, &finish, &order, step, k, c))
                .collect();
            scores.extend(scorer.scores(&imgs, tick)?);
        }
        Ok(scores)
    };
    let deletion = curve(Causal::Deletion, &mut tick)?;
    let insertion = curve(Causal::Insertion, &mut tick)?;
    Ok((
        base,
        Scores {
            road_morf,
            road_lerf,
            confidence_change,
            deletion,
            insertion,
        },
    ))
}

/// [`evaluate`] for `map` and for the random-map baseline; progress counts both.
pub fn evaluate_with_baseline(
    net: &Network,
    input: &Tensor,
    map: &[f32],
    class: usize,
    opts: &FaithOptions,
    progress: &mut dyn FnMut(usize, usize) -> bool,
) -> Result<Faithfulness> {
    let (_, _, h, w) = input.dims4()?;
    let per = opts.images_per_map(h * w);
    let (score, scores) = evaluate(net, input, map, class, opts, &mut |d, _| {
        progress(d, 2 * per)
    })?;
    let random = baseline(net, input, class, opts, &mut |d, _| {
        progress(per + d, 2 * per)
    })?;
    Ok(Faithfulness {
        class,
        score,
        map: scores,
        random,
    })
}

/// The metrics of the random-map baseline alone (shared by every method of one image and class).
pub fn baseline(
    net: &Network,
    input: &Tensor,
    class: usize,
    opts: &FaithOptions,
    progress: &mut dyn FnMut(usize, usize) -> bool,
) -> Result<Scores> {
    let (_, _, h, w) = input.dims4()?;
    let map = random_map(opts.seed, (h, w));
    Ok(evaluate(net, input, &map, class, opts, progress)?.1)
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
