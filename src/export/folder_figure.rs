//! Writing the figures computed over a whole folder (channel examples, the probe curves):
//! never over a file already there, with a JSON sidecar whose head is every figure's
//! (version, model, device, scale, file name and checksum) and whose body says what was
//! computed over which folder. `reproduce` does not re-render these (that would mean running
//! the folder through the model again); the sidecar records everything needed to compute them.

use std::path::{Path, PathBuf};

use image::RgbImage;
use serde::Serialize;

use super::{ModelRef, VERSION, device_name, figure_bytes, sha256_hex, sidecar_path};
use crate::Result;
use crate::fsutil::{write_atomic, write_json_atomic};
use crate::zoo::Model;

/// The sidecar of a folder figure.
#[derive(Clone, Debug, Serialize)]
pub struct FolderSidecar<'a> {
    pub convlens_version: &'a str,
    pub model: ModelRef,
    pub device: String,
    /// `examples` or `probe`.
    pub kind: &'a str,
    /// The folder, as given.
    pub folder: &'a Path,
    /// The request's options (layer, channels, ranking ...).
    pub request: serde_json::Value,
    pub scale: u32,
    pub png: String,
    pub png_sha256: String,
    /// What was computed.
    pub result: serde_json::Value,
}

/// A folder figure written to disk.
#[derive(Clone, Debug)]
pub struct Written {
    pub png: PathBuf,
    pub sidecar: PathBuf,
}

/// Writes `img` at `out` (or, when it or its sidecar exists, at the first free `STEM_N` name
/// beside it) and its sidecar.
#[allow(clippy::too_many_arguments)]
pub fn write_folder_figure(
    img: &RgbImage,
    out: &Path,
    model: &Model,
    model_source: &str,
    kind: &str,
    folder: &Path,
    request: serde_json::Value,
    scale: u32,
    result: serde_json::Value,
) -> Result<Written> {
    let out = super::naming::unused_path(out);
    let bytes = figure_bytes(img, &out)?;
    write_atomic(&out, &bytes)?;
    let sidecar = sidecar_path(&out);
    let body = FolderSidecar {
        convlens_version: VERSION,
        model: ModelRef {
            name: model.spec.manifest.name.clone(),
            source: model_source.to_string(),
            weights_sha256: model.weights_hash.clone(),
        },
        device: device_name(&model.device),
        kind,
        folder,
        request,
        scale,
        png: out
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default(),
        png_sha256: sha256_hex(&bytes),
        result,
    };
    write_json_atomic(&sidecar, &body)?;
    Ok(Written { png: out, sidecar })
}
