//! File-system helpers that keep the user's files safe: atomic writes, "is this output one of
//! the inputs?", writable-folder checks, and a model folder written by one run at a time and
//! replaced as a whole.

use std::fs::File;
use std::path::{Path, PathBuf};

use crate::{Error, Result};

/// Writes `value` as pretty JSON and a newline to `path` atomically (see [`write_atomic`]).
pub fn write_json_atomic<T: serde::Serialize + ?Sized>(path: &Path, value: &T) -> Result<()> {
    let mut json = serde_json::to_vec_pretty(value).map_err(|source| Error::Json {
        path: path.to_path_buf(),
        source,
    })?;
    json.push(b'\n');
    write_atomic(path, &json)
}

/// Writes `bytes` to `path` atomically: a temporary file in the same folder, then a rename,
/// so a reader (or a crash) never sees half a file.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let dir = parent_of(path);
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{name}.{}.tmp", std::process::id()));
    std::fs::write(&tmp, bytes).map_err(|e| Error::io(&tmp, e))?;
    std::fs::rename(&tmp, path).map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        Error::io(path, e)
    })
}

/// Saves `tensors` as a safetensors file at `path` with the mode a file created there gets
/// (0666 less the umask, e.g. 0644), not the 0600 of the temporary file the safetensors crate
/// writes and renames into place.
pub fn save_safetensors(
    tensors: &std::collections::HashMap<String, candle_core::Tensor>,
    path: &Path,
) -> Result<()> {
    let dir = parent_of(path);
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    // The mode the umask gives a new file here, read off an empty file created first.
    File::create(path).map_err(|e| Error::io(path, e))?;
    let mode = std::fs::metadata(path)
        .map_err(|e| Error::io(path, e))?
        .permissions();
    candle_core::safetensors::save(tensors, path)?;
    std::fs::set_permissions(path, mode).map_err(|e| Error::io(path, e))
}

/// The folder a file goes into (`.` for a bare file name).
fn parent_of(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

/// What identifies a file whatever the path it is reached by (hard links, symlinks, `..`):
/// device and inode on Unix, the canonical path elsewhere.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct FileId(#[cfg(unix)] (u64, u64), #[cfg(not(unix))] PathBuf);

impl FileId {
    /// The identity of an existing file (symlinks followed); `None` if it does not exist.
    pub fn of(path: &Path) -> Option<FileId> {
        #[cfg(unix)]
        {
            use std::os::unix::fs::MetadataExt;
            let m = std::fs::metadata(path).ok()?;
            Some(FileId((m.dev(), m.ino())))
        }
        #[cfg(not(unix))]
        {
            std::fs::canonicalize(path).ok().map(FileId)
        }
    }
}

/// Refuses an output that is one of the inputs (the same file by any path): writing it would
/// destroy the input.
pub fn check_not_input(out: &Path, inputs: &[&Path]) -> Result<()> {
    let Some(out_id) = FileId::of(out) else {
        return Ok(());
    };
    match inputs
        .iter()
        .find(|i| FileId::of(i).as_ref() == Some(&out_id))
    {
        Some(input) => Err(Error::Model(format!(
            "refusing to write {}: it is the input {} (the same file); choose another --out",
            out.display(),
            input.display()
        ))),
        None => Ok(()),
    }
}

/// Makes sure files can be created in `dir`: creates it (and its parents) if missing and
/// writes then removes a probe file, so a bad output folder is reported before any work.
pub fn ensure_writable_dir(dir: &Path) -> Result<()> {
    create_dir(dir)?;
    probe(dir)
}

/// Creates `dir` and its parents, refusing a file in its place.
fn create_dir(dir: &Path) -> Result<()> {
    if dir.exists() && !dir.is_dir() {
        return Err(Error::Model(format!(
            "{}: is a file, but a folder is needed here",
            dir.display()
        )));
    }
    std::fs::create_dir_all(dir).map_err(|e| {
        Error::Model(format!(
            "{}: cannot create this folder ({e})",
            dir.display()
        ))
    })
}

/// Writes then removes a hidden file in `dir`: the one sure test that it is writable.
fn probe(dir: &Path) -> Result<()> {
    let probe = dir.join(format!(".convlens-probe-{}", std::process::id()));
    match std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&probe)
    {
        Ok(_) => {
            let _ = std::fs::remove_file(&probe);
            Ok(())
        }
        Err(e) => Err(Error::Model(format!(
            "{}: cannot write into this folder ({e})",
            dir.display()
        ))),
    }
}

/// Checks, before any work, that a file can be written at `out`: not a folder, and its folder
/// writable, or (when missing) the nearest folder above it that exists. Missing folders are not
/// created here but by the write ([`write_atomic`], [`save_safetensors`]), so a run refused or
/// interrupted before it writes leaves no empty folder behind.
pub fn ensure_writable_file(out: &Path) -> Result<()> {
    if out.is_dir() {
        return Err(Error::Model(format!(
            "{}: is a folder, but a file is needed here",
            out.display()
        )));
    }
    let dir = parent_of(out);
    let existing = dir
        .ancestors()
        .map(|a| {
            if a.as_os_str().is_empty() {
                Path::new(".")
            } else {
                a
            }
        })
        .find(|a| a.exists())
        .unwrap_or(Path::new("."));
    if !existing.is_dir() {
        return Err(Error::Model(format!(
            "{}: is a file, but a folder is needed here",
            existing.display()
        )));
    }
    probe(existing)
}

/// Whether `dir` holds anything (a missing folder holds nothing).
fn has_entries(dir: &Path) -> Result<bool> {
    match std::fs::read_dir(dir) {
        Ok(mut entries) => Ok(entries.next().is_some()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(Error::io(dir, e)),
    }
}

/// An output folder that one process writes at a time (a lock held until drop) and that
/// replaces an existing folder only as a whole: with `overwrite`, the run writes into a
/// hidden sibling (`.NAME.convlens-new-PID`) that [`OutputDir::commit`] renames into place,
/// so the folder never holds a mix of two runs. A new or empty folder is written in place.
#[derive(Debug)]
pub struct OutputDir {
    target: PathBuf,
    work: PathBuf,
    /// Whether this process created `target` (removed again if nothing was written).
    created: bool,
    _lock: File,
}

impl OutputDir {
    /// Validates and locks `target`: refuses a file, a folder another run holds, and a
    /// non-empty folder unless `overwrite`.
    pub fn open(target: &Path, overwrite: bool) -> Result<OutputDir> {
        let created = !target.exists();
        create_dir(target)?;
        // `.` or `..` has no name to put a sibling beside: use the folder's real path.
        let target = &match target.file_name() {
            Some(_) => target.to_path_buf(),
            None => std::fs::canonicalize(target).map_err(|e| Error::io(target, e))?,
        };
        // Locked before it is looked into, so two runs never both find it empty.
        let lock = lock_dir(target)?;
        let replace = has_entries(target)?;
        if replace && !overwrite {
            return Err(Error::Model(format!(
                "{}: this folder exists and is not empty; use --overwrite to replace it as a \
                 whole, or choose another --out",
                target.display()
            )));
        }
        let work = if replace {
            let work = sibling(target, &format!("convlens-new-{}", std::process::id()));
            if work.exists() {
                std::fs::remove_dir_all(&work).map_err(|e| Error::io(&work, e))?;
            }
            std::fs::create_dir(&work).map_err(|e| {
                Error::Model(format!(
                    "{}: cannot write beside this folder to replace it ({e})",
                    target.display()
                ))
            })?;
            work
        } else {
            probe(target)?;
            target.to_path_buf()
        };
        Ok(OutputDir {
            target: target.to_path_buf(),
            work,
            created,
            _lock: lock,
        })
    }

    /// The folder to write into now (the target, or its hidden sibling when replacing).
    pub fn work(&self) -> &Path {
        &self.work
    }

    /// The folder the result ends up in.
    pub fn target(&self) -> &Path {
        &self.target
    }

    /// Whether the work folder holds anything.
    pub fn has_output(&self) -> bool {
        has_entries(&self.work).unwrap_or(false)
    }

    /// Puts what was written in place: when replacing, the old folder is moved aside, the new
    /// one renamed to the target, and the old one deleted. Returns the target.
    pub fn commit(&self) -> Result<&Path> {
        if self.work == self.target {
            return Ok(&self.target);
        }
        let old = self.work.with_file_name(
            self.work
                .file_name()
                .map(|n| {
                    n.to_string_lossy()
                        .replace(".convlens-new-", ".convlens-old-")
                })
                .unwrap_or_default(),
        );
        std::fs::rename(&self.target, &old).map_err(|e| Error::io(&self.target, e))?;
        if let Err(e) = std::fs::rename(&self.work, &self.target) {
            let _ = std::fs::rename(&old, &self.target);
            return Err(Error::io(&self.target, e));
        }
        std::fs::remove_dir_all(&old).map_err(|e| Error::io(&old, e))?;
        Ok(&self.target)
    }

    /// Drops what was written: removes the hidden work folder, or the target if this process
    /// created it and it is still empty. The previous content, if any, stays untouched.
    pub fn discard(&self) {
        if self.work != self.target {
            let _ = std::fs::remove_dir_all(&self.work);
        } else if self.created && !self.has_output() {
            let _ = std::fs::remove_dir(&self.target);
        }
    }
}

/// A hidden path beside `dir`: `.NAME.<tag>`.
fn sibling(dir: &Path, tag: &str) -> PathBuf {
    let name = dir
        .file_name()
        .map_or_else(|| "out".into(), |n| n.to_string_lossy().into_owned());
    parent_of(dir).join(format!(".{name}.{tag}"))
}

/// Takes the exclusive lock of a folder, failing at once if another process holds it.
fn lock_dir(dir: &Path) -> Result<File> {
    // On Unix the folder itself is locked (nothing left behind); elsewhere a hidden lock file
    // beside it, as a folder cannot be opened as a file there.
    #[cfg(unix)]
    let file = File::open(dir).map_err(|e| Error::io(dir, e))?;
    #[cfg(not(unix))]
    let file = {
        let path = sibling(dir, "convlens-lock");
        File::create(&path).map_err(|e| Error::io(&path, e))?
    };
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(std::fs::TryLockError::WouldBlock) => Err(Error::Model(format!(
            "{}: another convlens run is writing this folder; wait for it or choose another --out",
            dir.display()
        ))),
        Err(std::fs::TryLockError::Error(e)) => Err(Error::Model(format!(
            "{}: cannot lock this folder ({e})",
            dir.display()
        ))),
    }
}

/// The path of `to` as seen from the folder `from` (`../images/chelsea.png`), both resolved
/// first (symlinks, `..`); `None` when either does not exist or they share no root (another
/// drive on Windows). The same two files give the same answer wherever the tree is cloned.
pub fn relative_path(from: &Path, to: &Path) -> Option<PathBuf> {
    let (from, to) = (
        std::fs::canonicalize(from).ok()?,
        std::fs::canonicalize(to).ok()?,
    );
    let (a, b): (Vec<_>, Vec<_>) = (from.components().collect(), to.components().collect());
    if a.first() != b.first() {
        return None;
    }
    let common = a.iter().zip(&b).take_while(|(x, y)| x == y).count();
    let ups = std::iter::repeat_n(std::path::Component::ParentDir, a.len() - common);
    Some(ups.chain(b[common..].iter().copied()).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[cfg(unix)]
    #[test]
    fn safetensors_files_get_the_mode_of_a_new_file() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let plain = dir.path().join("plain");
        std::fs::write(&plain, b"x").unwrap();
        let path = dir.path().join("t.safetensors");
        let t = candle_core::Tensor::zeros(3, candle_core::DType::F32, &candle_core::Device::Cpu)
            .unwrap();
        save_safetensors(&[("t".to_string(), t)].into(), &path).unwrap();
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        // (The safetensors crate alone leaves its temporary file's 0600: under the usual umask
        // 022 a plain file is 0644.)
        assert_eq!(mode(&path), mode(&plain));
    }

    #[test]
    fn relative_paths_climb_to_the_common_folder() {
        let dir = tempfile::tempdir().unwrap();
        let figs = dir.path().join("assets/figures");
        let images = dir.path().join("assets/images");
        std::fs::create_dir_all(&figs).unwrap();
        std::fs::create_dir_all(&images).unwrap();
        std::fs::write(images.join("a.png"), b"x").unwrap();
        assert_eq!(
            relative_path(&figs, &images.join("a.png")),
            Some(PathBuf::from("../images/a.png"))
        );
        assert_eq!(
            relative_path(&images, &images.join("a.png")),
            Some(PathBuf::from("a.png"))
        );
        assert_eq!(relative_path(&figs, &images.join("missing.png")), None);
    }

    #[test]
    fn writes_and_replaces() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("sub").join("a.bin");
        write_atomic(&p, b"one").unwrap();
        write_atomic(&p, b"two").unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"two");
        assert_eq!(std::fs::read_dir(p.parent().unwrap()).unwrap().count(), 1);
    }

    #[test]
    fn an_input_is_found_by_any_path() {
        let dir = tempfile::tempdir().unwrap();
        let input = dir.path().join("photo.png");
        std::fs::write(&input, b"x").unwrap();
        let other = dir.path().join("other.png");
        check_not_input(&other, &[&input]).unwrap();
        std::fs::write(&other, b"y").unwrap();
        check_not_input(&other, &[&input]).unwrap();
        let dotted = dir.path().join(".").join("photo.png");
        let err = check_not_input(&dotted, &[&input]).unwrap_err().to_string();
        assert!(err.contains("photo.png") && err.contains("input"), "{err}");
        #[cfg(unix)]
        {
            let link = dir.path().join("link.png");
            std::os::unix::fs::symlink(&input, &link).unwrap();
            assert!(check_not_input(&link, &[&input]).is_err());
            let hard = dir.path().join("hard.png");
            std::fs::hard_link(&input, &hard).unwrap();
            assert!(check_not_input(&hard, &[&input]).is_err());
        }
    }

    #[test]
    fn a_file_is_not_a_folder() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("f");
        std::fs::write(&file, b"x").unwrap();
        let err = ensure_writable_dir(&file).unwrap_err().to_string();
        assert!(err.contains("is a file"), "{err}");
        assert!(ensure_writable_file(&file.join("x.png")).is_err());
        assert!(ensure_writable_file(dir.path()).is_err());
        // A missing folder is not made by the check (a refused run leaves none behind) but by
        // the write.
        let out = dir.path().join("new").join("deeper").join("x.png");
        ensure_writable_file(&out).unwrap();
        assert!(!dir.path().join("new").exists());
        assert!(ensure_writable_file(&file.join("more").join("x.png")).is_err());
        write_atomic(&out, b"png").unwrap();
        assert_eq!(std::fs::read(&out).unwrap(), b"png");
        let weights = dir.path().join("other").join("w.safetensors");
        ensure_writable_file(&weights).unwrap();
        let t = candle_core::Tensor::zeros(2, candle_core::DType::F32, &candle_core::Device::Cpu);
        save_safetensors(&[("t".to_string(), t.unwrap())].into(), &weights).unwrap();
        assert!(weights.is_file());
    }

    #[test]
    fn an_output_folder_is_replaced_as_a_whole() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("model");
        std::fs::create_dir(&target).unwrap();
        std::fs::write(target.join("old.txt"), b"old").unwrap();
        let err = OutputDir::open(&target, false).unwrap_err().to_string();
        assert!(err.contains("--overwrite"), "{err}");
        let out = OutputDir::open(&target, true).unwrap();
        assert_ne!(out.work(), target);
        // The old run stays whole until the new one is committed.
        std::fs::write(out.work().join("new.txt"), b"new").unwrap();
        assert!(target.join("old.txt").exists());
        out.commit().unwrap();
        assert!(!target.join("old.txt").exists());
        assert_eq!(std::fs::read(target.join("new.txt")).unwrap(), b"new");
        drop(out);
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn a_folder_is_written_by_one_run_at_a_time() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("model");
        let first = OutputDir::open(&target, false).unwrap();
        assert_eq!(first.work(), target);
        let err = OutputDir::open(&target, true).unwrap_err().to_string();
        assert!(err.contains("another convlens run"), "{err}");
        first.discard();
        drop(first);
        assert!(!target.exists(), "an empty folder it created is removed");
        OutputDir::open(&target, false).unwrap();
    }
}
