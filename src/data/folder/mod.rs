//! Image-folder datasets: one subfolder per class, split into train / validation / test, streamed
//! in batches.
//!
//! Two layouts are recognised by [`ImageFolder::scan`]:
//!
//! - **split folders**: any of `root/train/<class>/...`, `root/validation/<class>/...` (or
//!   `val/`) and `root/test/<class>/...`, with the same classes in each (a folder with only
//!   `test/` is a test split, not one class named `test`). A `train/` without a validation
//!   folder is split into train and validation by the seeded draw below;
//! - **class folders only**: `root/<class>/...`, split into train and validation by a seeded,
//!   stratified draw ([`FolderOptions::validation_fraction`], default 80/20); no test split.
//!   [`ImageFolder::all_samples`] gives every image (to evaluate on a whole labelled folder).
//!
//! The draw depends only on the sorted file list, the seed and the fraction, so a trained model
//! records them ([`super::split_record::SplitRecord`]) and its split can be drawn again.
//!
//! Class labels are the class folder names in sorted (byte) order, as Keras'
//! `image_dataset_from_directory` does. Class folders are searched recursively; symbolic links to
//! files and folders are followed, and a link that leads back to a folder above it (a loop) or
//! to a folder already read is skipped. Hidden files and folders (name starting with `.`), files
//! without an image extension, special files (named pipes, sockets, devices: reading them could
//! hang), broken links and (with [`FolderOptions::check_decodable`]) files whose image cannot be
//! read, is over the pixel budget or is a JPEG cut short ([`super::decode::probe`]) are skipped
//! and listed in [`ImageFolder::skipped`] with the reason; the scan goes on. Problems that make the
//! dataset unusable (missing root, fewer than 2 classes, an empty class, classes that differ
//! between splits) are an [`Error::Dataset`] before any image is decoded.
//!
//! Training streams the samples: [`batches`] cuts a split into chunks and [`load_batch`] decodes
//! one chunk in parallel into a `[n, 3, size, size]` tensor, so at most one batch of images is in
//! memory at a time.

use std::collections::BTreeSet;
use std::fmt;
use std::path::{Path, PathBuf};

use rand::SeedableRng;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;

use super::decode::{probe, special_file_kind, special_file_reason};
use crate::{Error, Result};

pub use super::batch::{Batch, BatchAugment, batches, load_batch};

/// File extensions (lower case) treated as images; the check is case-insensitive.
pub const IMAGE_EXTENSIONS: [&str; 8] = ["png", "jpg", "jpeg", "gif", "bmp", "tif", "tiff", "webp"];

/// One labelled image file.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Sample {
    /// Path of the image file (the dataset root joined with the relative path).
    pub path: PathBuf,
    /// Class index into [`ImageFolder::classes`].
    pub label: usize,
}

/// A file or folder that was left out, and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SkippedFile {
    /// The skipped file or folder.
    pub path: PathBuf,
    /// Why it was skipped (hidden, not an image, unreadable: the decoder's message).
    pub reason: String,
}

impl fmt::Display for SkippedFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path.display(), self.reason)
    }
}

/// One of the three splits of a dataset.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Split {
    /// Samples the model is trained on.
    Train,
    /// Samples for early stopping and model selection.
    Validation,
    /// Held-out samples for the final evaluation (empty unless the dataset has `test/`).
    Test,
}

impl Split {
    /// All splits, in order.
    pub const ALL: [Split; 3] = [Split::Train, Split::Validation, Split::Test];

    /// `"train"`, `"validation"` or `"test"`.
    pub fn name(self) -> &'static str {
        match self {
            Split::Train => "train",
            Split::Validation => "validation",
            Split::Test => "test",
        }
    }
}

impl fmt::Display for Split {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The samples of each split, each sorted by class and then by path.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Splits {
    /// Training samples.
    pub train: Vec<Sample>,
    /// Validation samples.
    pub validation: Vec<Sample>,
    /// Test samples (empty when the dataset has no `test/` folder).
    pub test: Vec<Sample>,
}

/// How [`ImageFolder::scan`] splits and checks a dataset.
#[derive(Clone, Debug, PartialEq)]
pub struct FolderOptions {
    /// Fraction of each class drawn for validation when the dataset has no validation folder,
    /// strictly between 0 and 1 (default 0.2).
    pub validation_fraction: f32,
    /// Seed of the stratified split (default 42).
    pub seed: u64,
    /// Read every image's header (in parallel) and skip the unreadable ones (default true).
    pub check_decodable: bool,
}

impl Default for FolderOptions {
    fn default() -> Self {
        FolderOptions {
            validation_fraction: 0.2,
            seed: 42,
            check_decodable: true,
        }
    }
}

/// A scanned image-folder dataset: the classes and the labelled files of each split.
#[derive(Clone, Debug)]
pub struct ImageFolder {
    /// The dataset folder that was scanned.
    pub root: PathBuf,
    /// Class names, sorted; a sample's label indexes this list.
    pub classes: Vec<String>,
    /// The samples of each split.
    pub splits: Splits,
    /// The splits read from split folders (`train/`, `validation/` or `val/`, `test/`), in
    /// order; empty when the dataset is class folders only.
    pub split_folders: Vec<Split>,
    /// Files and folders left out, with the reason, in scan order.
    pub skipped: Vec<SkippedFile>,
    /// The options it was scanned with (the seed and fraction of a drawn validation split;
    /// see [`super::split_record`]).
    pub options: FolderOptions,
}

/// A class folder and its image files (sorted).
struct ClassDir {
    name: String,
    dir: PathBuf,
    files: Vec<PathBuf>,
}

/// The class folders of one folder (the root, or a split folder), sorted by name.
struct ClassSet {
    dir: PathBuf,
    classes: Vec<ClassDir>,
}

impl ClassSet {
    fn names(&self) -> BTreeSet<&str> {
        self.classes.iter().map(|c| c.name.as_str()).collect()
    }
}

impl ImageFolder {
    /// Scans the dataset at `root` (see the [module docs](self) for the layouts).
    ///
    /// Errors ([`Error::Dataset`], before any image is decoded): `root` missing or not a
    /// folder; a validation fraction outside (0, 1); both `validation/` and `val/`; classes that
    /// differ between split folders (naming the classes missing from each split); fewer than 2
    /// classes; a class folder without any image, or (with
    /// [`FolderOptions::check_decodable`]) without any readable image, naming the class and the
    /// folder. Unreadable folders give [`Error::Io`].
    pub fn scan(root: &Path, opts: &FolderOptions) -> Result<ImageFolder> {
        Self::scan_classes(root, opts, 2)
    }

    /// Scans like [`ImageFolder::scan`] but accepts a single class folder, for work that
    /// compares no classes (a listing of the images, their features).
    pub fn scan_one_class_or_more(root: &Path, opts: &FolderOptions) -> Result<ImageFolder> {
        Self::scan_classes(root, opts, 1)
    }

    /// [`ImageFolder::scan`] with at least `min_classes` (1 or 2) classes.
    fn scan_classes(root: &Path, opts: &FolderOptions, min_classes: usize) -> Result<ImageFolder> {
        let f = opts.validation_fraction;
        if !(f > 0.0 && f < 1.0) {
            return Err(Error::Dataset(format!(
                "the validation fraction must be between 0 and 1, got {f}"
            )));
        }
        match std::fs::metadata(root) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(Error::Dataset(format!(
                    "dataset folder {} does not exist",
                    root.display()
                )));
            }
            Err(e) => return Err(Error::io(root, e)),
            Ok(meta) if !meta.is_dir() => {
                return Err(Error::Dataset(format!(
                    "{} is not a folder; a dataset is a folder with one subfolder per class",
                    root.display()
                )));
            }
            Ok(_) => {}
        }

        let mut skipped = Vec::new();
        let (dirs, files) = list_dir(root, &mut skipped)?;
        let has = |name: &str| dirs.iter().any(|(n, _)| n == name);
        let val_name = match (has("validation"), has("val")) {
            (true, true) => {
                return Err(Error::Dataset(format!(
                    "{} has both validation/ and val/; keep one",
                    root.display()
                )));
            }
            (true, false) => Some("validation"),
            (false, true) => Some("val"),
            (false, false) => None,
        };
        let split_layout = has("train") || has("test") || val_name.is_some();

        for file in files {
            skipped.push(SkippedFile {
                path: file,
                reason: "file at the top level of the dataset (images belong in class folders)"
                    .into(),
            });
        }

        // [train pool, validation folder, test folder]; class folders only: the train pool.
        let mut sets: [Option<ClassSet>; 3] = if split_layout {
            let val_name = val_name.unwrap_or("validation");
            for (name, dir) in &dirs {
                if !matches!(name.as_str(), "train" | "test") && name != val_name {
                    skipped.push(SkippedFile {
                        path: dir.clone(),
                        reason: "folder next to the split folders that is not a split \
                                 (expected train/, validation/ or val/, test/)"
                            .into(),
                    });
                }
            }
            let mut scan_split = |name: &str| -> Result<Option<ClassSet>> {
                if has(name) {
                    class_set(&root.join(name), &mut skipped).map(Some)
                } else {
                    Ok(None)
                }
            };
            [
                scan_split("train")?,
                scan_split(val_name)?,
                scan_split("test")?,
            ]
        } else {
            let classes = dirs
                .into_iter()
                .map(|(name, dir)| {
                    let files = class_files(&dir, &mut skipped)?;
                    Ok(ClassDir { name, dir, files })
                })
                .collect::<Result<Vec<_>>>()?;
            let set = ClassSet {
                dir: root.to_path_buf(),
                classes,
            };
            [Some(set), None, None]
        };
        let split_folders: Vec<Split> = if split_layout {
            Split::ALL
                .into_iter()
                .zip(&sets)
                .filter_map(|(split, set)| set.as_ref().map(|_| split))
                .collect()
        } else {
            Vec::new()
        };

        {
            let present: Vec<&ClassSet> = sets.iter().flatten().collect();
            check_same_classes(&present)?;
            check_class_count(present[0], min_classes)?;
            for set in &present {
                check_not_empty(set, "no image files")?;
            }
        }
        if opts.check_decodable {
            let mut present: Vec<&mut ClassSet> = sets.iter_mut().flatten().collect();
            check_headers(&mut present, &mut skipped);
            for set in &present {
                check_not_empty(set, "no readable images")?;
            }
        }

        let classes: Vec<String> = sets
            .iter()
            .flatten()
            .next()
            .map(|set| set.classes.iter().map(|c| c.name.clone()).collect())
            .unwrap_or_default();
        let to_samples = |set: Option<ClassSet>| -> Vec<Sample> {
            set.map(|s| {
                s.classes
                    .into_iter()
                    .enumerate()
                    .flat_map(|(label, c)| {
                        c.files.into_iter().map(move |path| Sample { path, label })
                    })
                    .collect()
            })
            .unwrap_or_default()
        };
        let [train_set, validation_set, test_set] = std::mem::take(&mut sets);
        let (train, validation) = match (train_set, validation_set) {
            (Some(t), None) => stratified_split(t, opts),
            (t, v) => (to_samples(t), to_samples(v)),
        };
        Ok(ImageFolder {
            root: root.to_path_buf(),
            classes,
            splits: Splits {
                train,
                validation,
                test: to_samples(test_set),
            },
            split_folders,
            skipped,
            options: opts.clone(),
        })
    }

    /// Every sample of the three splits, sorted by class and then by path (what a labelled
    /// folder without split folders is evaluated on).
    pub fn all_samples(&self) -> Vec<Sample> {
        let mut all: Vec<Sample> = Split::ALL
            .into_iter()
            .flat_map(|split| self.split(split).iter().cloned())
            .collect();
        all.sort_by(|a, b| (a.label, &a.path).cmp(&(b.label, &b.path)));
        all
    }

    /// The samples of `split`, sorted by class and then by path.
    pub fn split(&self, split: Split) -> &[Sample] {
        match split {
            Split::Train => &self.splits.train,
            Split::Validation => &self.splits.validation,
            Split::Test => &self.splits.test,
        }
    }

    /// How many samples of each class `split` has (indexed by label, `classes.len()` long).
    pub fn class_counts(&self, split: Split) -> Vec<usize> {
        let mut counts = vec![0; self.classes.len()];
        for s in self.split(split) {
            counts[s.label] += 1;
        }
        counts
    }
}

/// Splits each class of `set` into train and validation: the class's sorted files are shuffled
/// with a `ChaCha8Rng` seeded from `(opts.seed, class index)` and the first
/// `round(fraction * n)` (halves away from zero; at least 1 and at most `n - 1` when `n >= 2`)
/// go to validation.
fn stratified_split(set: ClassSet, opts: &FolderOptions) -> (Vec<Sample>, Vec<Sample>) {
    let (mut train, mut validation) = (Vec::new(), Vec::new());
    for (label, class) in set.classes.into_iter().enumerate() {
        let mut files = class.files;
        let n = files.len();
        let n_val = if n >= 2 {
            ((f64::from(opts.validation_fraction) * n as f64).round() as usize).clamp(1, n - 1)
        } else {
            0
        };
        let mut rng = ChaCha8Rng::seed_from_u64(class_seed(opts.seed, label as u64));
        files.shuffle(&mut rng);
        let mut train_files = files.split_off(n_val);
        files.sort();
        train_files.sort();
        validation.extend(files.into_iter().map(|path| Sample { path, label }));
        train.extend(train_files.into_iter().map(|path| Sample { path, label }));
    }
    (train, validation)
}

/// The split seed of class `class` (SplitMix64 mixing, a stream separate from augmentation).
fn class_seed(seed: u64, class: u64) -> u64 {
    let mix = |x: u64| {
        let mut z = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    };
    mix(mix(seed ^ 0x7370_6c69_7421) ^ class) // "split!"
}

/// Whether `name` is hidden (starts with `.`).
fn is_hidden(name: &std::ffi::OsStr) -> bool {
    name.as_encoded_bytes().first() == Some(&b'.')
}

/// Whether `path` has an image extension ([`IMAGE_EXTENSIONS`], case-insensitive).
pub fn has_image_extension(path: &Path) -> bool {
    path.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| IMAGE_EXTENSIONS.iter().any(|x| e.eq_ignore_ascii_case(x)))
}

/// The entries of `dir` as `(path, is_folder)`, sorted by name, symbolic links followed.
/// Hidden entries, broken links and special files (named pipes, sockets, devices) are skipped
/// and reported.
fn sorted_entries(dir: &Path, skipped: &mut Vec<SkippedFile>) -> Result<Vec<(PathBuf, bool)>> {
    let mut entries = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(|e| Error::io(dir, e))? {
        let entry = entry.map_err(|e| Error::io(dir, e))?;
        let path = entry.path();
        let is_link = entry.file_type().is_ok_and(|t| t.is_symlink());
        // `fs::metadata` follows links: a link is what it points to.
        let meta = std::fs::metadata(&path);
        let is_dir = meta.as_ref().is_ok_and(|m| m.is_dir());
        let reason = match &meta {
            _ if is_hidden(&entry.file_name()) => Some(
                if is_dir {
                    "hidden folder"
                } else {
                    "hidden file"
                }
                .to_string(),
            ),
            Err(e) if is_link => Some(format!("broken symbolic link ({e})")),
            Err(e) => Some(format!("cannot read it: {e}")),
            Ok(_) if is_dir => None,
            Ok(m) => special_file_kind(m.file_type()).map(special_file_reason),
        };
        match reason {
            Some(reason) => skipped.push(SkippedFile { path, reason }),
            None => entries.push((path, is_dir)),
        }
    }
    entries.sort();
    Ok(entries)
}

/// Subfolders as `(name, path)`, sorted by name.
type NamedDirs = Vec<(String, PathBuf)>;

/// The subfolders `(name, path)` and files of `dir`, sorted, hidden ones skipped and reported.
fn list_dir(dir: &Path, skipped: &mut Vec<SkippedFile>) -> Result<(NamedDirs, Vec<PathBuf>)> {
    let (mut dirs, mut files) = (Vec::new(), Vec::new());
    for (path, is_dir) in sorted_entries(dir, skipped)? {
        if is_dir {
            let name = path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            dirs.push((name, path));
        } else {
            files.push(path);
        }
    }
    Ok((dirs, files))
}

/// The class folders of `dir` and their image files; files directly in `dir` are reported.
fn class_set(dir: &Path, skipped: &mut Vec<SkippedFile>) -> Result<ClassSet> {
    let (dirs, files) = list_dir(dir, skipped)?;
    for file in files {
        skipped.push(SkippedFile {
            path: file,
            reason: "file outside the class folders".into(),
        });
    }
    let classes = dirs
        .into_iter()
        .map(|(name, dir)| {
            let files = class_files(&dir, skipped)?;
            Ok(ClassDir { name, dir, files })
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(ClassSet {
        dir: dir.to_path_buf(),
        classes,
    })
}

/// The image files under the class folder `dir` (recursively, symbolic links followed), sorted;
/// hidden entries, files without an image extension, special files and links that loop back to
/// a folder above them or lead to a folder already read are reported in `skipped`.
fn class_files(dir: &Path, skipped: &mut Vec<SkippedFile>) -> Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    let mut seen = BTreeSet::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let real = std::fs::canonicalize(&d).map_err(|e| Error::io(&d, e))?;
        if !seen.insert(real.clone()) {
            skipped.push(SkippedFile {
                path: d,
                reason: format!(
                    "folder already read (it is {}, reached through a symbolic link)",
                    real.display()
                ),
            });
            continue;
        }
        for (path, is_dir) in sorted_entries(&d, skipped)? {
            if is_dir {
                match std::fs::canonicalize(&path) {
                    Ok(target) if real.starts_with(&target) => skipped.push(SkippedFile {
                        reason: format!(
                            "symbolic link loop: it leads back to {}, a folder above it",
                            target.display()
                        ),
                        path,
                    }),
                    _ => stack.push(path),
                }
            } else if has_image_extension(&path) {
                files.push(path);
            } else {
                let reason = match path.extension() {
                    Some(ext) => format!(
                        "not an image file (extension `.{}`; images are {})",
                        ext.to_string_lossy(),
                        IMAGE_EXTENSIONS.join(", ")
                    ),
                    None => format!(
                        "not an image file (no extension; images are {})",
                        IMAGE_EXTENSIONS.join(", ")
                    ),
                };
                skipped.push(SkippedFile { path, reason });
            }
        }
    }
    files.sort();
    Ok(files)
}

/// Errors unless the split folders `sets` all have the same classes.
fn check_same_classes(sets: &[&ClassSet]) -> Result<()> {
    if sets.len() < 2 {
        return Ok(());
    }
    let all: BTreeSet<&str> = sets.iter().flat_map(|s| s.names()).collect();
    let mut problems = Vec::new();
    for set in sets {
        let names = set.names();
        let missing: Vec<String> = all
            .iter()
            .filter(|c| !names.contains(*c))
            .map(|c| format!("`{c}`"))
            .collect();
        if !missing.is_empty() {
            problems.push(format!(
                "{} missing from {}",
                missing.join(", "),
                set.dir.display()
            ));
        }
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(Error::Dataset(format!(
            "the split folders must have the same class folders: {}",
            problems.join("; ")
        )))
    }
}

/// Errors unless `set` has at least `min_classes` (1 or 2) classes.
fn check_class_count(set: &ClassSet, min_classes: usize) -> Result<()> {
    match set.classes.len() {
        1 if min_classes <= 1 => Ok(()),
        0 => Err(Error::Dataset(format!(
            "{} has no class folders; a dataset needs one subfolder per class, at least 2",
            set.dir.display()
        ))),
        1 => Err(Error::Dataset(format!(
            "{} has only one class folder (`{}`); a classifier needs at least 2 classes, \
             one subfolder each",
            set.dir.display(),
            set.classes[0].name
        ))),
        _ => Ok(()),
    }
}

/// Errors naming the first class of `set` without files; `what` says what is lacking.
fn check_not_empty(set: &ClassSet, what: &str) -> Result<()> {
    let empty: Vec<&ClassDir> = set.classes.iter().filter(|c| c.files.is_empty()).collect();
    match empty.as_slice() {
        [] => Ok(()),
        [c] => Err(Error::Dataset(format!(
            "class `{}` has {what} (folder {})",
            c.name,
            c.dir.display()
        ))),
        [c, rest @ ..] => Err(Error::Dataset(format!(
            "class `{}` has {what} (folder {}), and so do {}",
            c.name,
            c.dir.display(),
            rest.iter()
                .map(|c| format!("`{}`", c.name))
                .collect::<Vec<_>>()
                .join(", ")
        ))),
    }
}

/// Reads every file's image header in parallel; unreadable ones are removed and reported.
fn check_headers(sets: &mut [&mut ClassSet], skipped: &mut Vec<SkippedFile>) {
    let paths: Vec<&PathBuf> = sets
        .iter()
        .flat_map(|s| s.classes.iter().flat_map(|c| c.files.iter()))
        .collect();
    let bad: Vec<SkippedFile> = paths
        .par_iter()
        .filter_map(|p| {
            header_problem(p).map(|reason| SkippedFile {
                path: p.to_path_buf(),
                reason,
            })
        })
        .collect();
    if bad.is_empty() {
        return;
    }
    let bad_paths: BTreeSet<&Path> = bad.iter().map(|s| s.path.as_path()).collect();
    for class in sets.iter_mut().flat_map(|s| s.classes.iter_mut()) {
        class.files.retain(|f| !bad_paths.contains(f.as_path()));
    }
    skipped.extend(bad);
}

/// Why the image `path` would not load, if it would not ([`probe`]: a special file, an unknown
/// format, an empty image, over the pixel budget, a JPEG cut short), without decoding it.
fn header_problem(path: &Path) -> Option<String> {
    match probe(path) {
        Ok(_) => None,
        Err(Error::Image { reason, .. }) => Some(reason),
        Err(Error::Io { source, .. }) => Some(format!("cannot read the file: {source}")),
        Err(e) => Some(e.to_string()),
    }
}

#[cfg(test)]
#[allow(
    clippy::disallowed_macros,
    reason = "tests print what they saw on failure"
)]
pub(crate) mod tests;
