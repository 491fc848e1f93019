//! How a dataset's splits were made, recorded with a trained model (`model.json`'s `split`), so
//! that evaluating the model later on the same folder draws exactly the same validation split,
//! or says why it cannot.
//!
//! The record holds what the draw depends on: whether the validation split is a folder or was
//! drawn from the training pool, the seed, the fraction, and a digest (count per class and
//! SHA-256) of the sorted relative paths of the pool it was drawn from (the train and
//! validation images). The same folder scanned with the recorded options gives the same split
//! ([`ImageFolder::scan`] is deterministic); a folder whose pool differs cannot.

use std::fmt;
use std::path::Path;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::folder::{FolderOptions, ImageFolder, Split};
use crate::{Error, Result};

/// How a trained model's validation (and test) split was made.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SplitRecord {
    /// The dataset's split folders (`train`, `validation`, `test`); empty when it had class
    /// folders only. The test split is the `test` folder when listed, else there was none.
    pub split_folders: Vec<Split>,
    /// Whether the validation split was drawn from the training pool (there was no validation
    /// folder); otherwise it is the validation folder itself.
    pub validation_drawn: bool,
    /// Seed of the draw.
    pub seed: u64,
    /// Fraction of each class drawn for validation.
    pub validation_fraction: f32,
    /// The pool the validation split was drawn from (train and validation images).
    pub pool: PoolDigest,
}

/// The images of a pool: how many per class, and the SHA-256 of their sorted relative paths.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PoolDigest {
    /// The class names, sorted (as [`ImageFolder::classes`]).
    pub classes: Vec<String>,
    /// Images per class, indexed like `classes`.
    pub class_files: Vec<usize>,
    /// SHA-256 (hex) of the pool's paths relative to the dataset folder, `/`-separated, sorted
    /// byte-wise, each followed by a newline.
    pub sha256: String,
}

impl PoolDigest {
    /// The digest of the train and validation images of `data`.
    pub fn of(data: &ImageFolder) -> PoolDigest {
        let mut class_files = vec![0; data.classes.len()];
        let mut paths: Vec<String> = data
            .split(Split::Train)
            .iter()
            .chain(data.split(Split::Validation))
            .map(|s| {
                if let Some(n) = class_files.get_mut(s.label) {
                    *n += 1;
                }
                relative(&data.root, &s.path)
            })
            .collect();
        paths.sort();
        let mut hasher = Sha256::new();
        for p in &paths {
            hasher.update(p.as_bytes());
            hasher.update(b"\n");
        }
        PoolDigest {
            classes: data.classes.clone(),
            class_files,
            sha256: format!("{:x}", hasher.finalize()),
        }
    }

    /// How many images the pool has.
    pub fn files(&self) -> usize {
        self.class_files.iter().sum()
    }

    /// What changed from `self` (the recorded pool) to `now`, in words: the image counts and
    /// the classes whose count differs, e.g. "320 images then, 321 now (bag 80 -> 81)".
    pub fn describe_change(&self, now: &PoolDigest) -> String {
        if self.classes != now.classes {
            return format!(
                "its classes were [{}] and are [{}]",
                self.classes.join(", "),
                now.classes.join(", ")
            );
        }
        let changed: Vec<String> = self
            .classes
            .iter()
            .zip(self.class_files.iter().zip(&now.class_files))
            .filter(|(_, (then, now))| then != now)
            .map(|(class, (then, now))| format!("{class} {then} -> {now}"))
            .collect();
        if changed.is_empty() {
            return format!(
                "it has the same {} images per class, but other files (renamed, moved or \
                 replaced)",
                self.files()
            );
        }
        format!(
            "{} images then, {} now ({})",
            self.files(),
            now.files(),
            changed.join(", ")
        )
    }
}

/// The path of `file` relative to `root`, `/`-separated (the path itself when it is not
/// inside `root`).
fn relative(root: &Path, file: &Path) -> String {
    let rel = file.strip_prefix(root).unwrap_or(file);
    rel.components()
        .map(|c| c.as_os_str().to_string_lossy())
        .collect::<Vec<_>>()
        .join("/")
}

impl SplitRecord {
    /// The record of how `data` was split (with the options it was scanned with).
    pub fn of(data: &ImageFolder) -> SplitRecord {
        SplitRecord {
            split_folders: data.split_folders.clone(),
            validation_drawn: !data.split_folders.contains(&Split::Validation),
            seed: data.options.seed,
            validation_fraction: data.options.validation_fraction,
            pool: PoolDigest::of(data),
        }
    }

    /// The scan options that draw this split again.
    pub fn folder_options(&self) -> FolderOptions {
        FolderOptions {
            validation_fraction: self.validation_fraction,
            seed: self.seed,
            check_decodable: true,
        }
    }

    /// Checks that `data` (scanned with [`Self::folder_options`]) holds the split recorded:
    /// the same split folders and the same pool of images. The error ([`Error::Dataset`])
    /// names `data`'s folder and says what changed.
    pub fn check(&self, data: &ImageFolder) -> Result<()> {
        let now = SplitRecord::of(data);
        let what = if now.split_folders != self.split_folders {
            Some(format!(
                "its split folders were {} and are {}",
                folder_list(&self.split_folders),
                folder_list(&now.split_folders)
            ))
        } else if now.pool != self.pool {
            Some(self.pool.describe_change(&now.pool))
        } else if (now.seed, now.validation_fraction) != (self.seed, self.validation_fraction) {
            Some(format!(
                "it was split with seed {} and validation fraction {}, not seed {} and {}",
                now.seed, now.validation_fraction, self.seed, self.validation_fraction
            ))
        } else {
            None
        };
        match what {
            None => Ok(()),
            Some(what) => Err(Error::Dataset(format!(
                "{}: not the images the model's split was drawn from: {what}; the {} split \
                 cannot be reproduced",
                data.root.display(),
                Split::Validation
            ))),
        }
    }
}

impl fmt::Display for SplitRecord {
    /// "validation drawn from 320 images (seed 7, fraction 0.3)" or "validation/ folder".
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.validation_drawn {
            write!(
                f,
                "validation split drawn from {} images (seed {}, fraction {})",
                self.pool.files(),
                self.seed,
                self.validation_fraction
            )
        } else {
            write!(f, "validation split from its validation folder")
        }
    }
}

/// "train/, test/" or "none (class folders only)".
fn folder_list(splits: &[Split]) -> String {
    if splits.is_empty() {
        return "none (class folders only)".into();
    }
    splits
        .iter()
        .map(|s| format!("{s}/"))
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::folder::tests::class_folders;

    fn scan(root: &Path, seed: u64, validation_fraction: f32) -> ImageFolder {
        let opts = FolderOptions {
            seed,
            validation_fraction,
            check_decodable: true,
        };
        ImageFolder::scan(root, &opts).unwrap()
    }

    #[test]
    fn a_record_rescans_to_the_same_split_and_notices_changes() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("data");
        class_folders(&root, &[("cat", 10), ("dog", 7)]);
        let data = scan(&root, 7, 0.3);
        let record = SplitRecord::of(&data);
        assert!(record.validation_drawn && record.split_folders.is_empty());
        assert_eq!((record.seed, record.validation_fraction), (7, 0.3));
        assert_eq!(record.pool.class_files, [10, 7]);
        // Through JSON and back, then the same split again.
        let record: SplitRecord =
            serde_json::from_str(&serde_json::to_string(&record).unwrap()).unwrap();
        let again = ImageFolder::scan(&root, &record.folder_options()).unwrap();
        record.check(&again).unwrap();
        assert_eq!(again.splits, data.splits);
        // A copy elsewhere holds the same relative paths: the same pool.
        let copy = dir.path().join("copy");
        class_folders(&copy, &[("cat", 10), ("dog", 7)]);
        record.check(&scan(&copy, 7, 0.3)).unwrap();
        // Other options: another split, refused.
        let err = record.check(&scan(&root, 42, 0.3)).unwrap_err().to_string();
        assert!(err.contains("seed 42"), "{err}");
        // One image more: the folder and the class counts are named.
        std::fs::copy(root.join("dog/img_00.png"), root.join("dog/extra.png")).unwrap();
        let err = record.check(&scan(&root, 7, 0.3)).unwrap_err().to_string();
        assert!(
            err.contains(&root.display().to_string())
                && err.contains("17 images then, 18 now (dog 7 -> 8)")
                && err.contains("cannot be reproduced"),
            "{err}"
        );
        // Same counts, another file.
        std::fs::remove_file(root.join("dog/img_00.png")).unwrap();
        let err = record.check(&scan(&root, 7, 0.3)).unwrap_err().to_string();
        assert!(err.contains("other files"), "{err}");
    }

    #[test]
    fn split_folders_are_recorded() {
        let dir = tempfile::tempdir().unwrap();
        class_folders(&dir.path().join("train"), &[("a", 3), ("b", 3)]);
        class_folders(&dir.path().join("validation"), &[("a", 1), ("b", 1)]);
        let data = scan(dir.path(), 42, 0.2);
        let record = SplitRecord::of(&data);
        assert_eq!(record.split_folders, [Split::Train, Split::Validation]);
        assert!(!record.validation_drawn);
        assert_eq!(record.pool.files(), 8);
        let text = serde_json::to_string(&record).unwrap();
        assert!(
            text.contains(r#""split_folders":["train","validation"]"#),
            "{text}"
        );
    }
}
