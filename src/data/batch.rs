//! Training batches: consecutive chunks of a split's samples, decoded, resized, augmented and
//! normalised in parallel into one tensor.

use candle_core::{Device, Tensor};
use rayon::prelude::*;

use super::augment::{Augment, augment_seed};
use super::folder::{Sample, SkippedFile};
use super::preprocess::load_rgb;
use super::train_transform::TrainTransform;
use crate::{Error, Result};

/// Consecutive chunks of `batch_size` samples (the last one may be shorter); a `batch_size` of
/// 0 is treated as 1. Batch `b` starts at sample index `b * batch_size`.
pub fn batches(samples: &[Sample], batch_size: usize) -> impl Iterator<Item = &[Sample]> {
    samples.chunks(batch_size.max(1))
}

/// How the images of one batch are augmented in [`load_batch`].
#[derive(Clone, Copy, Debug)]
pub struct BatchAugment<'a> {
    /// The augmentations to apply (to the resized `size` x `size` image).
    pub augment: &'a Augment,
    /// The run's seed.
    pub seed: u64,
    /// The epoch (so every epoch sees fresh augmentations).
    pub epoch: u64,
    /// Index, in the epoch's sample order, of the batch's first sample: sample `i` of the batch
    /// is augmented with seed [`augment_seed`]`(seed, epoch, first_index + i)`.
    pub first_index: u64,
}

/// A decoded batch: the samples of a chunk that decoded, in their order.
#[derive(Clone, Debug)]
pub struct Batch {
    /// `[n, 3, size, size]` f32 images, normalised by the [`TrainTransform`].
    pub images: Tensor,
    /// `[n]` u32 class labels.
    pub labels: Tensor,
    /// For each of the `n` rows, its index in the `samples` slice given to [`load_batch`].
    pub indices: Vec<usize>,
}

impl Batch {
    /// The number of images `n` (never 0).
    pub fn len(&self) -> usize {
        self.indices.len()
    }

    /// Always false: [`load_batch`] returns no batch instead of an empty one.
    pub fn is_empty(&self) -> bool {
        self.indices.is_empty()
    }
}

/// Decodes, resizes ([`TrainTransform::apply`]), optionally augments ([`BatchAugment`]) and
/// normalises `samples` in parallel on rayon into one batch on `device`.
///
/// Returns the [`Batch`] (`images` `[n, 3, size, size]` f32, `labels` `[n]` u32, `n <= samples.len()`),
/// or `None` when no sample decoded, and the files that failed to decode as [`SkippedFile`]s
/// (they are left out, the batch goes on). The only errors are tensor errors on `device` and
/// an input size of 0. Memory: one `n x 3 x size x size` f32 buffer plus at most one decoded
/// image per rayon thread.
pub fn load_batch(
    samples: &[Sample],
    transform: &TrainTransform,
    augment: Option<BatchAugment<'_>>,
    device: &Device,
) -> Result<(Option<Batch>, Vec<SkippedFile>)> {
    let s = transform.size as usize;
    if s == 0 {
        return Err(Error::Dataset("the input size must be at least 1".into()));
    }
    let per = 3 * s * s;
    let mut data = vec![0f32; samples.len() * per];
    let outcomes: Vec<Option<String>> = data
        .par_chunks_mut(per)
        .zip(samples.par_iter())
        .enumerate()
        .map(|(i, (out, sample))| {
            let img = match load_rgb(&sample.path) {
                Ok(img) => img,
                Err(Error::Image { reason, .. }) => return Some(reason),
                Err(Error::Io { source, .. }) => return Some(source.to_string()),
                Err(e) => return Some(e.to_string()),
            };
            let mut img = transform.apply(&img);
            if let Some(a) = &augment {
                let seed = augment_seed(a.seed, a.epoch, a.first_index + i as u64);
                img = a.augment.apply(&img, seed);
            }
            transform.normalize_into(&img, out);
            None
        })
        .collect();

    let (mut indices, mut labels, mut skipped) = (Vec::new(), Vec::new(), Vec::new());
    for (i, outcome) in outcomes.into_iter().enumerate() {
        match outcome {
            None => {
                let kept = indices.len();
                if kept != i {
                    data.copy_within(i * per..(i + 1) * per, kept * per);
                }
                indices.push(i);
                labels.push(samples[i].label as u32);
            }
            Some(reason) => skipped.push(SkippedFile {
                path: samples[i].path.clone(),
                reason,
            }),
        }
    }
    let n = indices.len();
    if n == 0 {
        return Ok((None, skipped));
    }
    data.truncate(n * per);
    let images = Tensor::from_vec(data, (n, 3, s, s), device)?;
    let labels = Tensor::from_vec(labels, n, device)?;
    Ok((
        Some(Batch {
            images,
            labels,
            indices,
        }),
        skipped,
    ))
}

#[cfg(test)]
#[allow(
    clippy::disallowed_macros,
    reason = "tests print what they saw on failure"
)]
mod tests {
    use std::path::{Path, PathBuf};

    use super::*;
    use crate::data::folder::tests::png;

    #[test]
    fn batches_are_chunks() {
        let samples: Vec<Sample> = (0..7)
            .map(|i| Sample {
                path: PathBuf::from(format!("{i}.png")),
                label: 0,
            })
            .collect();
        let sizes: Vec<usize> = batches(&samples, 3).map(<[Sample]>::len).collect();
        assert_eq!(sizes, [3, 3, 1]);
        assert_eq!(batches(&samples, 0).count(), 7);
    }

    #[test]
    fn load_batch_returns_good_images_and_reports_bad_ones() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        let good: Vec<PathBuf> = (0..3).map(|i| root.join(format!("good{i}.png"))).collect();
        for (i, p) in good.iter().enumerate() {
            png(p, 60 * i as u8);
        }
        let garbage = root.join("broken.png");
        std::fs::write(&garbage, b"not an image at all").unwrap();
        let truncated = root.join("truncated.png");
        let bytes = std::fs::read(&good[0]).unwrap();
        std::fs::write(&truncated, &bytes[..bytes.len() / 2]).unwrap();
        let samples = vec![
            Sample {
                path: good[0].clone(),
                label: 0,
            },
            Sample {
                path: garbage.clone(),
                label: 1,
            },
            Sample {
                path: good[1].clone(),
                label: 1,
            },
            Sample {
                path: truncated.clone(),
                label: 0,
            },
            Sample {
                path: good[2].clone(),
                label: 2,
            },
        ];
        let t = TrainTransform::new(8, [0.5; 3], [0.25; 3]);
        let dev = Device::Cpu;
        let (batch, skipped) = load_batch(&samples, &t, None, &dev).unwrap();
        let batch = batch.unwrap();
        assert_eq!(batch.images.dims(), &[3, 3, 8, 8]);
        assert_eq!(batch.labels.to_vec1::<u32>().unwrap(), [0, 1, 2]);
        assert_eq!(batch.indices, [0, 2, 4]);
        assert_eq!(batch.len(), 3);
        let bad: Vec<&Path> = skipped.iter().map(|s| s.path.as_path()).collect();
        assert_eq!(bad, [garbage.as_path(), truncated.as_path()]);
        for s in &skipped {
            eprintln!("load_batch skipped {s}");
            assert!(!s.reason.is_empty());
        }
        // Each row is exactly the single-image transform.
        for (row, &i) in batch.indices.iter().enumerate() {
            let single = t.load(&samples[i].path, &dev).unwrap();
            let got = batch.images.narrow(0, row, 1).unwrap();
            let diff = (got - single)
                .unwrap()
                .abs()
                .unwrap()
                .flatten_all()
                .unwrap()
                .max(0)
                .unwrap()
                .to_scalar::<f32>()
                .unwrap();
            assert_eq!(diff, 0.0, "row {row}");
        }

        // Augmented: deterministic, and sample i uses augment_seed(seed, epoch, first + i).
        let aug = Augment::default();
        let spec = BatchAugment {
            augment: &aug,
            seed: 5,
            epoch: 2,
            first_index: 10,
        };
        let (a1, _) = load_batch(&samples, &t, Some(spec), &dev).unwrap();
        let (a2, _) = load_batch(&samples, &t, Some(spec), &dev).unwrap();
        let (a1, a2) = (a1.unwrap(), a2.unwrap());
        let v1 = a1.images.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        assert_eq!(
            v1,
            a2.images.flatten_all().unwrap().to_vec1::<f32>().unwrap()
        );
        let img = t.apply(&load_rgb(&samples[4].path).unwrap());
        let expect = t
            .to_tensor(&aug.apply(&img, augment_seed(5, 2, 14)), &dev)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        assert_eq!(&v1[2 * 3 * 64..], expect.as_slice());

        // A batch of only bad files.
        let (none, skipped) = load_batch(&samples[1..2], &t, None, &dev).unwrap();
        assert!(none.is_none());
        assert_eq!(skipped.len(), 1);
    }
}
