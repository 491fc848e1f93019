//! Every image of a folder, labelled or not, in a fixed order, with a fingerprint of the
//! folder's content (for caches of results computed over the whole folder).
//!
//! A folder that [`ImageFolder::scan_one_class_or_more`] accepts (class folders, one or more,
//! or split folders) gives every image of every split with its class
//! ([`ImageFolder::all_samples`] order); any other folder with images at its top level gives
//! those images, sorted by name, without a class.

use std::path::{Path, PathBuf};
use std::time::UNIX_EPOCH;

use sha2::{Digest, Sha256};

use super::folder::{FolderOptions, ImageFolder, SkippedFile, has_image_extension};
use crate::{Error, Result};

/// The images of a folder, each with its class index when the folder is labelled.
#[derive(Clone, Debug)]
pub struct Listing {
    /// The folder as given.
    pub root: PathBuf,
    /// Class names (empty for an unlabelled folder).
    pub classes: Vec<String>,
    /// The images in a fixed order, with their class index into `classes`.
    pub images: Vec<(PathBuf, Option<usize>)>,
    /// Files left out of a labelled folder, with the reason.
    pub skipped: Vec<SkippedFile>,
}

impl Listing {
    /// Lists `root`: a labelled dataset if it is one, else the images at its top level.
    /// Errors name the folder: missing, or neither a dataset nor a folder with images.
    pub fn of(root: &Path) -> Result<Listing> {
        let opts = FolderOptions::default();
        match ImageFolder::scan_one_class_or_more(root, &opts) {
            Ok(folder) => Ok(Listing {
                root: root.to_path_buf(),
                images: folder
                    .all_samples()
                    .into_iter()
                    .map(|s| (s.path, Some(s.label)))
                    .collect(),
                classes: folder.classes,
                skipped: folder.skipped,
            }),
            Err(Error::Dataset(why)) => {
                let mut images: Vec<PathBuf> = match std::fs::read_dir(root) {
                    Ok(entries) => entries
                        .flatten()
                        .map(|e| e.path())
                        .filter(|p| p.is_file() && has_image_extension(p))
                        .filter(|p| {
                            !p.file_name()
                                .is_some_and(|n| n.to_string_lossy().starts_with('.'))
                        })
                        .collect(),
                    Err(_) => Vec::new(),
                };
                if images.is_empty() {
                    return Err(Error::Dataset(format!(
                        "{why}; nor does {} hold images at its top level",
                        root.display()
                    )));
                }
                images.sort();
                Ok(Listing {
                    root: root.to_path_buf(),
                    classes: Vec::new(),
                    images: images.into_iter().map(|p| (p, None)).collect(),
                    skipped: Vec::new(),
                })
            }
            Err(e) => Err(e),
        }
    }

    /// The class name of image `i`, if the folder is labelled.
    pub fn class_of(&self, i: usize) -> Option<&str> {
        let (_, label) = self.images.get(i)?;
        label.and_then(|l| self.classes.get(l)).map(String::as_str)
    }

    /// Image `i`'s path relative to the folder (the whole path when it is not inside).
    pub fn relative(&self, i: usize) -> PathBuf {
        self.images.get(i).map_or_else(PathBuf::new, |(p, _)| {
            p.strip_prefix(&self.root)
                .map_or_else(|_| p.clone(), Path::to_path_buf)
        })
    }

    /// SHA-256 (hex) of the folder's content as far as a cache needs it: each image's
    /// relative path, class, size and modification time, in order. Reads no image.
    pub fn fingerprint(&self) -> String {
        let mut h = Sha256::new();
        for (i, (path, label)) in self.images.iter().enumerate() {
            h.update(self.relative(i).to_string_lossy().as_bytes());
            h.update([0]);
            h.update(label.map_or(u64::MAX, |l| l as u64).to_le_bytes());
            if let Ok(meta) = std::fs::metadata(path) {
                h.update(meta.len().to_le_bytes());
                let mtime = meta
                    .modified()
                    .ok()
                    .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
                    .map_or(0, |d| d.as_nanos());
                h.update(mtime.to_le_bytes());
            }
        }
        h.update(self.classes.join("\n").as_bytes());
        h.finalize().iter().map(|b| format!("{b:02x}")).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_flat_folder_is_unlabelled_and_a_change_changes_the_fingerprint() -> Result<()> {
        let dir = tempfile::tempdir().map_err(|e| Error::io(Path::new("tmp"), e))?;
        let img = image::RgbImage::from_pixel(4, 4, image::Rgb([9, 9, 9]));
        for name in ["b.png", "a.png"] {
            img.save(dir.path().join(name))
                .map_err(|e| Error::Model(e.to_string()))?;
        }
        std::fs::write(dir.path().join("notes.txt"), "x").map_err(|e| Error::io(dir.path(), e))?;
        let listing = Listing::of(dir.path())?;
        assert_eq!(listing.images.len(), 2);
        assert_eq!(listing.relative(0), PathBuf::from("a.png"));
        assert_eq!(listing.class_of(0), None);
        let before = listing.fingerprint();
        assert_eq!(before, Listing::of(dir.path())?.fingerprint());
        img.save(dir.path().join("c.png"))
            .map_err(|e| Error::Model(e.to_string()))?;
        assert_ne!(before, Listing::of(dir.path())?.fingerprint());
        let empty = tempfile::tempdir().map_err(|e| Error::io(Path::new("tmp"), e))?;
        let err = Listing::of(empty.path()).unwrap_err().to_string();
        assert!(err.contains("top level"), "{err}");
        Ok(())
    }

    #[test]
    fn one_class_folder_is_listed_with_its_class() -> Result<()> {
        let dir = tempfile::tempdir().map_err(|e| Error::io(Path::new("tmp"), e))?;
        let cats = dir.path().join("cats");
        std::fs::create_dir(&cats).map_err(|e| Error::io(&cats, e))?;
        let img = image::RgbImage::from_pixel(4, 4, image::Rgb([9, 9, 9]));
        for name in ["b.png", "a.png"] {
            img.save(cats.join(name))
                .map_err(|e| Error::Model(e.to_string()))?;
        }
        let listing = Listing::of(dir.path())?;
        assert_eq!(listing.classes, ["cats"]);
        assert_eq!(listing.images.len(), 2);
        assert_eq!(listing.relative(0), PathBuf::from("cats/a.png"));
        assert_eq!(listing.class_of(1), Some("cats"));
        Ok(())
    }
}
