//! Model export for use outside convlens: ONNX ([`onnx`]) and a PyTorch state dict
//! ([`pytorch`]), each written beside its destination, verified by reading it back
//! ([`verify`]) and only then renamed into place, never over an existing file unless asked.
//! (Figure export lives in [`crate::export`].)

pub mod onnx;
pub mod pytorch;
pub mod verify;

use std::path::{Path, PathBuf};

use crate::cancel::CancelToken;
use crate::zoo::Model;
use crate::{Error, Result};
use verify::Verification;

/// The file formats a model exports to.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum ExportFormat {
    /// An ONNX model (`.onnx`).
    #[default]
    Onnx,
    /// A PyTorch state dict in torchvision/timm names (`.safetensors`) and a loading script.
    Pytorch,
}

impl std::str::FromStr for ExportFormat {
    type Err = String;

    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s.to_ascii_lowercase().as_str() {
            "onnx" => Ok(ExportFormat::Onnx),
            "pytorch" | "torch" => Ok(ExportFormat::Pytorch),
            _ => Err(format!("unknown format `{s}`; use onnx or pytorch")),
        }
    }
}

impl ExportFormat {
    /// Both formats, for choosers.
    pub const ALL: [ExportFormat; 2] = [ExportFormat::Onnx, ExportFormat::Pytorch];

    /// The format's name as the command line spells it.
    pub fn name(self) -> &'static str {
        match self {
            ExportFormat::Onnx => "onnx",
            ExportFormat::Pytorch => "pytorch",
        }
    }

    /// The extension of the main file.
    pub fn extension(self) -> &'static str {
        match self {
            ExportFormat::Onnx => "onnx",
            ExportFormat::Pytorch => "safetensors",
        }
    }
}

/// What to export where.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ExportRequest {
    pub format: ExportFormat,
    /// The ONNX file; for PyTorch the `.safetensors` file, or a folder that receives
    /// `<model>.safetensors` and `<model>_load.py`.
    pub out: PathBuf,
    /// Replace existing files (else an existing one is refused before any work).
    pub overwrite: bool,
    /// ONNX options (ignored for PyTorch).
    pub onnx: onnx::OnnxOptions,
}

/// What an export wrote and how it checked out.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ExportReport {
    /// The files written, the main one first.
    pub files: Vec<PathBuf>,
    /// The check made before the files were put in place.
    pub verification: Verification,
}

/// Progress of an export: `(step, done, total)`.
pub type ProgressFn<'a> = &'a dyn Fn(&str, usize, usize);

/// Exports `model` as `req` asks: builds the file, writes it beside its destination, reads it
/// back and compares (see [`verify`]), then renames it into place. A failed check is an error
/// (the unverified file is removed, nothing is put in place), as is cancelling (checked between
/// steps; the file beside is removed too).
pub fn export(
    model: &Model,
    req: &ExportRequest,
    progress: ProgressFn,
    cancel: &CancelToken,
) -> Result<ExportReport> {
    match req.format {
        ExportFormat::Onnx => export_onnx(model, req, progress, cancel),
        ExportFormat::Pytorch => pytorch::export(model, req, progress, cancel),
    }
}

fn export_onnx(
    model: &Model,
    req: &ExportRequest,
    progress: ProgressFn,
    cancel: &CancelToken,
) -> Result<ExportReport> {
    req.onnx.validate()?;
    let out = req.out.clone();
    check_destination(&out, req.overwrite, &model_inputs(model))?;
    progress("building the ONNX graph", 0, 3);
    let proto = onnx::build(model, &req.onnx)?;
    cancel.check()?;
    progress("writing", 1, 3);
    let pending = Pending::write(&out, &onnx::encode(&proto))?;
    cancel.check()?;
    progress("running it with candle-onnx on the bundled photos", 2, 3);
    let verification = verify::verify_onnx(pending.path(), model, &req.onnx, cancel)?;
    cancel.check()?;
    pending.commit_if(&verification, req.overwrite)?;
    progress("done", 3, 3);
    Ok(ExportReport {
        files: vec![out],
        verification,
    })
}

/// The files a model was loaded from (an export must never write onto them).
fn model_inputs(model: &Model) -> Vec<PathBuf> {
    vec![
        model.spec.weights_path.clone(),
        model.spec.manifest_path.clone(),
    ]
}

/// Checks, before any work, that `out` may be written: not one of `inputs`, not a folder,
/// not a device, pipe or socket (`--out /dev/null --overwrite` would rename a file over the
/// device), not an existing file unless `overwrite`, its folder writable.
pub fn check_destination(out: &Path, overwrite: bool, inputs: &[PathBuf]) -> Result<()> {
    let inputs: Vec<&Path> = inputs.iter().map(PathBuf::as_path).collect();
    crate::fsutil::check_not_input(out, &inputs)?;
    crate::fsutil::ensure_writable_file(out)?;
    if std::fs::metadata(out).is_ok_and(|m| !m.is_file()) {
        return Err(Error::Model(format!(
            "{}: is not a regular file (a device, pipe or socket); choose a file to write",
            out.display()
        )));
    }
    if out.exists() && !overwrite {
        return Err(Error::Model(format!(
            "{}: already exists; choose another --out or pass --overwrite",
            out.display()
        )));
    }
    Ok(())
}

/// A file written beside its destination (`.NAME.PID.export.tmp` in the same folder), removed
/// on drop unless committed: an interrupted or failed export leaves nothing behind.
pub(crate) struct Pending {
    tmp: PathBuf,
    target: PathBuf,
    committed: bool,
}

impl Pending {
    /// Writes `bytes` beside `target` (creating its folder if missing).
    pub(crate) fn write(target: &Path, bytes: &[u8]) -> Result<Pending> {
        let pending = Pending::beside(target);
        if let Some(dir) = pending.tmp.parent() {
            std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        }
        std::fs::write(&pending.tmp, bytes).map_err(|e| Error::io(&pending.tmp, e))?;
        Ok(pending)
    }

    /// A pending file beside `target`, not yet written (write it at [`Pending::path`]).
    pub(crate) fn beside(target: &Path) -> Pending {
        let dir = match target.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        };
        let name = target
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        Pending {
            tmp: dir.join(format!(".{name}.{}.export.tmp", std::process::id())),
            target: target.to_path_buf(),
            committed: false,
        }
    }

    /// Where the file is written until committed.
    pub(crate) fn path(&self) -> &Path {
        &self.tmp
    }

    /// Puts the file in place if `check` passed, else an error with the check's summary (the
    /// file is removed). Without `overwrite` a file that appeared meanwhile is not replaced.
    pub(crate) fn commit_if(mut self, check: &Verification, overwrite: bool) -> Result<()> {
        if !check.passed() {
            return Err(Error::Model(format!(
                "{}: verification failed, nothing was written (the unverified file was \
                 removed): {}",
                self.target.display(),
                check.summary()
            )));
        }
        self.commit(overwrite)
    }

    /// Renames the file into place; without `overwrite` through a hard link, which fails
    /// rather than replace a file that appeared since the check.
    pub(crate) fn commit(&mut self, overwrite: bool) -> Result<()> {
        let placed = if overwrite {
            std::fs::rename(&self.tmp, &self.target)
        } else {
            std::fs::hard_link(&self.tmp, &self.target)
                .and_then(|()| std::fs::remove_file(&self.tmp))
        };
        placed.map_err(|e| {
            if e.kind() == std::io::ErrorKind::AlreadyExists {
                Error::Model(format!(
                    "{}: appeared while exporting; choose another --out or pass --overwrite",
                    self.target.display()
                ))
            } else {
                Error::io(&self.target, e)
            }
        })?;
        self.committed = true;
        Ok(())
    }
}

impl Drop for Pending {
    fn drop(&mut self) {
        if !self.committed {
            let _ = std::fs::remove_file(&self.tmp);
        }
    }
}
