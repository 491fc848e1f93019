//! Classification metrics: accuracy, the confusion matrix, per-class precision and recall.

use serde::{Deserialize, Serialize};

/// Counts of (true class, predicted class) pairs.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ConfusionMatrix {
    /// `counts[true][predicted]`.
    pub counts: Vec<Vec<usize>>,
}

/// Precision and recall of one class.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ClassMetrics {
    pub class: String,
    /// Of the images predicted as this class, the fraction that are (NaN-free: 0 when none).
    pub precision: f32,
    /// Of the images of this class, the fraction predicted as it.
    pub recall: f32,
    /// Images of this class.
    pub support: usize,
}

impl ConfusionMatrix {
    /// An all-zero matrix for `classes` classes.
    pub fn new(classes: usize) -> Self {
        ConfusionMatrix {
            counts: vec![vec![0; classes]; classes],
        }
    }

    /// Counts one prediction.
    pub fn add(&mut self, truth: usize, predicted: usize) {
        self.counts[truth][predicted] += 1;
    }

    /// All counted predictions.
    pub fn total(&self) -> usize {
        self.counts.iter().flatten().sum()
    }

    /// Fraction on the diagonal (0 when empty).
    pub fn accuracy(&self) -> f32 {
        let total = self.total();
        if total == 0 {
            return 0.0;
        }
        let right: usize = (0..self.counts.len()).map(|i| self.counts[i][i]).sum();
        right as f32 / total as f32
    }

    /// Precision and recall per class, named by `classes`.
    pub fn per_class(&self, classes: &[String]) -> Vec<ClassMetrics> {
        let n = self.counts.len();
        (0..n)
            .map(|c| {
                let predicted: usize = (0..n).map(|t| self.counts[t][c]).sum();
                let support: usize = self.counts[c].iter().sum();
                let hit = self.counts[c][c] as f32;
                ClassMetrics {
                    class: classes.get(c).cloned().unwrap_or_else(|| c.to_string()),
                    precision: if predicted > 0 {
                        hit / predicted as f32
                    } else {
                        0.0
                    },
                    recall: if support > 0 {
                        hit / support as f32
                    } else {
                        0.0
                    },
                    support,
                }
            })
            .collect()
    }
}

/// Index of the largest value of each row of `[n, classes]` probabilities or logits.
pub fn argmax_rows(rows: &[Vec<f32>]) -> Vec<usize> {
    rows.iter()
        .map(|r| {
            (0..r.len())
                .max_by(|&a, &b| r[a].total_cmp(&r[b]).then(b.cmp(&a)))
                .unwrap_or(0)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accuracy_precision_recall() {
        let mut m = ConfusionMatrix::new(2);
        for (t, p) in [(0, 0), (0, 0), (0, 1), (1, 1)] {
            m.add(t, p);
        }
        assert_eq!(m.total(), 4);
        assert_eq!(m.accuracy(), 0.75);
        let per = m.per_class(&["a".into(), "b".into()]);
        assert_eq!(per[0].recall, 2.0 / 3.0);
        assert_eq!(per[0].precision, 1.0);
        assert_eq!(per[1].precision, 0.5);
        assert_eq!(per[1].support, 1);
    }

    #[test]
    fn argmax_prefers_the_first_of_ties() {
        assert_eq!(
            argmax_rows(&[vec![0.1, 0.7, 0.2], vec![0.5, 0.5]]),
            vec![1, 0]
        );
    }
}
