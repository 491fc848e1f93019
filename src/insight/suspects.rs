//! Suspect labels: out-of-fold predicted probabilities of every image's given label (a head
//! trained k times on the cached features of the other folds), ranked by self-confidence, with
//! confident learning's flag (Northcutt et al. 2021, as cleanlab computes it): per-class
//! thresholds `t_j` = the mean probability of class `j` over the images labelled `j`; an image
//! counts in the confident joint at (given, j) for the most probable `j` whose probability
//! reaches `t_j`; off the diagonal it is a likely label issue, `j` its suggested label.

use std::path::{Path, PathBuf};

use candle_core::{Device, Tensor};
use rand::SeedableRng;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;
use serde::Serialize;

use super::dataset::relative;
use crate::cancel::CancelToken;
use crate::train::features::Features;
use crate::train::trainer::fit_head;
use crate::train::{HeadKind, TrainConfig};
use crate::{Error, Result};

/// The most folds.
pub const MAX_FOLDS: usize = 20;

/// How the out-of-fold probabilities are made.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SuspectOptions {
    /// Folds (2-20): each image is scored by a head that never saw it.
    pub folds: usize,
    /// Epochs of each fold's head.
    pub epochs: usize,
    /// Seeds the folds and the heads.
    pub seed: u64,
}

impl Default for SuspectOptions {
    fn default() -> Self {
        SuspectOptions {
            folds: 5,
            epochs: 30,
            seed: 42,
        }
    }
}

/// One image, ranked.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Suspect {
    /// 1 = the least confident in its given label.
    pub rank: usize,
    /// The row of the features (an index into the dataset's images).
    pub row: usize,
    pub path: PathBuf,
    /// The given label and the suggested one (the confident class when flagged, else the most
    /// probable class), as class indices.
    pub given: usize,
    pub suggested: usize,
    /// Out-of-fold probability of the given label (the self-confidence) and of the suggestion.
    pub p_given: f32,
    pub p_suggested: f32,
    /// Off the diagonal of the confident joint: a likely label issue.
    pub flagged: bool,
}

/// Every image ranked, with what the ranking came from.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct SuspectReport {
    pub classes: Vec<String>,
    /// Per-class thresholds `t_j`.
    pub thresholds: Vec<f32>,
    /// `[given][confident]` counts.
    pub confident_joint: Vec<Vec<usize>>,
    /// Every image, least self-confident first.
    pub suspects: Vec<Suspect>,
}

/// The fold of each of `labels.len()` images: stratified (each class spread evenly over the
/// folds) after a seeded shuffle.
pub fn fold_of(labels: &[u32], folds: usize, seed: u64) -> Vec<usize> {
    let mut order: Vec<usize> = (0..labels.len()).collect();
    order.shuffle(&mut ChaCha8Rng::seed_from_u64(seed));
    order.sort_by_key(|&i| labels[i]); // stable: shuffled within each class
    let mut fold = vec![0; labels.len()];
    for (k, &i) in order.iter().enumerate() {
        fold[i] = k % folds;
    }
    fold
}

/// Out-of-fold softmax probabilities `[n][classes]` of a head ([`HeadKind::Linear`], AdamW at
/// 1e-3, batch 32) trained on the other folds' rows of `features`. `progress(done, total)`
/// counts epochs over all folds.
pub fn out_of_fold_probabilities(
    features: &Features,
    classes: usize,
    options: SuspectOptions,
    progress: &mut dyn FnMut(usize, usize),
    cancel: &CancelToken,
) -> Result<Vec<Vec<f32>>> {
    let n = features.labels.len();
    let folds = options.folds;
    if !(2..=MAX_FOLDS).contains(&folds) || n < 2 * folds || options.epochs == 0 {
        return Err(Error::InvalidOption(format!(
            "{folds} folds of {n} images, {} epochs: needs 2-{MAX_FOLDS} folds, at least two \
             images per fold and at least 1 epoch",
            options.epochs
        )));
    }
    if let Some(&l) = features.labels.iter().find(|&&l| l as usize >= classes) {
        return Err(Error::Dataset(format!(
            "label {l} but only {classes} classes"
        )));
    }
    let fold = fold_of(&features.labels, folds, options.seed);
    let cfg = TrainConfig {
        head: HeadKind::Linear,
        epochs: options.epochs,
        batch_size: 32,
        lr: 1e-3,
        seed: options.seed,
        ..TrainConfig::default()
    };
    let mut probs = vec![Vec::new(); n];
    let total = folds * options.epochs;
    for f in 0..folds {
        let (held, kept): (Vec<usize>, Vec<usize>) = (0..n).partition(|&i| fold[i] == f);
        let subset = |rows: &[usize]| -> Result<Features> {
            let idx: Vec<u32> = rows.iter().map(|&i| i as u32).collect();
            let index = Tensor::from_vec(idx, rows.len(), &Device::Cpu)?;
            Ok(Features {
                x: features.x.index_select(&index, 0)?,
                labels: rows.iter().map(|&i| features.labels[i]).collect(),
                paths: Vec::new(),
            })
        };
        let head = fit_head(
            subset(&kept)?,
            classes,
            &TrainConfig {
                seed: options.seed.wrapping_add(f as u64),
                ..cfg.clone()
            },
            &mut |epoch| progress(f * options.epochs + epoch, total),
            cancel,
        )?;
        let logits = head.logits(&subset(&held)?.x, false)?;
        let p = candle_nn::ops::softmax(&logits, 1)?.to_vec2::<f32>()?;
        for (&i, row) in held.iter().zip(p) {
            probs[i] = row;
        }
    }
    Ok(probs)
}

/// Per-class thresholds: the mean probability of class `j` over the images labelled `j` (0
/// for a class without images).
pub fn thresholds(probs: &[Vec<f32>], labels: &[u32], classes: usize) -> Vec<f32> {
    let mut sum = vec![0f64; classes];
    let mut count = vec![0usize; classes];
    for (p, &l) in probs.iter().zip(labels) {
        let l = l as usize;
        sum[l] += f64::from(p[l]);
        count[l] += 1;
    }
    sum.iter()
        .zip(&count)
        .map(|(&s, &c)| if c > 0 { (s / c as f64) as f32 } else { 0.0 })
        .collect()
}

/// The confident class of an image: the most probable class whose probability reaches its
/// threshold, if any.
fn confident_class(p: &[f32], thresholds: &[f32]) -> Option<usize> {
    (0..p.len())
        .filter(|&j| p[j] >= thresholds[j])
        .max_by(|&a, &b| p[a].total_cmp(&p[b]).then(b.cmp(&a)))
}

/// Ranks every image by the out-of-fold probability of its given label (lowest first; ties by
/// row), flags the confident joint's off-diagonal images and suggests a label for each.
/// `paths` are shown relative to `root`.
pub fn rank(
    probs: &[Vec<f32>],
    labels: &[u32],
    paths: &[PathBuf],
    classes: &[String],
    root: &Path,
) -> SuspectReport {
    let k = classes.len();
    let t = thresholds(probs, labels, k);
    let mut joint = vec![vec![0usize; k]; k];
    let mut suspects: Vec<Suspect> = probs
        .iter()
        .zip(labels)
        .enumerate()
        .map(|(row, (p, &l))| {
            let given = l as usize;
            let confident = confident_class(p, &t);
            if let Some(j) = confident {
                joint[given][j] += 1;
            }
            let flagged = confident.is_some_and(|j| j != given);
            let top = (0..k)
                .max_by(|&a, &b| p[a].total_cmp(&p[b]).then(b.cmp(&a)))
                .unwrap_or(given);
            let suggested = if flagged {
                confident.unwrap_or(top)
            } else {
                top
            };
            Suspect {
                rank: 0,
                row,
                path: paths
                    .get(row)
                    .map_or_else(PathBuf::new, |p| relative(p, root)),
                given,
                suggested,
                p_given: p[given],
                p_suggested: p[suggested],
                flagged,
            }
        })
        .collect();
    suspects.sort_by(|a, b| a.p_given.total_cmp(&b.p_given).then(a.row.cmp(&b.row)));
    for (i, s) in suspects.iter_mut().enumerate() {
        s.rank = i + 1;
    }
    SuspectReport {
        classes: classes.to_vec(),
        thresholds: t,
        confident_joint: joint,
        suspects,
    }
}

/// One CSV field, quoted when it holds a comma, a quote or a line break (RFC 4180).
fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

/// The report as CSV: `path,given_label,suggested_label,p_given,rank,flagged`, one row per
/// image in rank order.
pub fn to_csv(report: &SuspectReport) -> String {
    let mut out = String::from("path,given_label,suggested_label,p_given,rank,flagged\n");
    let name = |c: usize| report.classes.get(c).map_or("?", String::as_str);
    for s in &report.suspects {
        out.push_str(&format!(
            "{},{},{},{:.6},{},{}\n",
            csv_field(&s.path.to_string_lossy()),
            csv_field(name(s.given)),
            csv_field(name(s.suggested)),
            s.p_given,
            s.rank,
            s.flagged
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names() -> Vec<String> {
        vec!["a".into(), "b".into()]
    }

    #[test]
    fn thresholds_joint_and_ranking_follow_confident_learning() {
        // Worked by hand: t_a = mean(0.9, 0.8, 0.2) = 0.6333, t_b = mean(0.9, 0.7) = 0.8.
        let probs = vec![
            vec![0.9, 0.1],
            vec![0.8, 0.2],
            vec![0.2, 0.8], // labelled a, confidently b: flagged, suggested b
            vec![0.1, 0.9],
            vec![0.3, 0.7], // labelled b, below t_b, a below t_a: no confident class
        ];
        let labels = [0, 0, 0, 1, 1];
        let paths: Vec<PathBuf> = (0..5)
            .map(|i| PathBuf::from(format!("/d/{i}.png")))
            .collect();
        let r = rank(&probs, &labels, &paths, &names(), Path::new("/d"));
        assert!((r.thresholds[0] - 0.633_333).abs() < 1e-5);
        assert!((r.thresholds[1] - 0.8).abs() < 1e-6);
        assert_eq!(r.confident_joint, vec![vec![2, 1], vec![0, 1]]);
        let order: Vec<usize> = r.suspects.iter().map(|s| s.row).collect();
        assert_eq!(order, vec![2, 4, 1, 0, 3]);
        let first = &r.suspects[0];
        assert_eq!((first.rank, first.given, first.suggested), (1, 0, 1));
        assert!(first.flagged && !r.suspects[1].flagged);
        assert_eq!(first.path, PathBuf::from("2.png"));
        let csv = to_csv(&r);
        assert_eq!(
            csv.lines().nth(1),
            Some("2.png,a,b,0.200000,1,true"),
            "{csv}"
        );
    }

    #[test]
    fn folds_are_stratified_and_seeded() {
        let labels: Vec<u32> = (0..20).map(|i| (i % 2) as u32).collect();
        let f = fold_of(&labels, 5, 3);
        for fold in 0..5 {
            for class in 0..2 {
                let n = (0..20)
                    .filter(|&i| f[i] == fold && labels[i] == class)
                    .count();
                assert_eq!(n, 2, "fold {fold} class {class}");
            }
        }
        assert_eq!(f, fold_of(&labels, 5, 3));
        assert_ne!(f, fold_of(&labels, 5, 4));
    }

    #[test]
    fn csv_fields_with_commas_and_quotes_are_quoted() {
        assert_eq!(csv_field("a,b"), "\"a,b\"");
        assert_eq!(csv_field("say \"hi\""), "\"say \"\"hi\"\"\"");
        assert_eq!(csv_field("plain"), "plain");
    }
}
