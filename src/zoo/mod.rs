//! Models on disk: a weights file plus a small JSON manifest next to it, found by name in the
//! models folder or by path, and built into a [`Network`] by the architecture's module.

pub mod checkpoint;
pub mod efficientnet_lite;

use std::path::{Path, PathBuf};

use candle_core::Device;

use crate::data::preprocess::EvalTransform;
use crate::graph::Network;
use crate::{Error, Result};
use checkpoint::Checkpoint;

/// The name of the model convlens opens when none is given.
pub const DEFAULT_MODEL: &str = "efficientnet_lite0";

/// Where a model came from and under which terms.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Provenance {
    pub source: String,
    pub license: String,
    #[serde(default)]
    pub notes: String,
}

/// A model manifest (`<name>.json` beside the weights), as written on disk.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Manifest {
    pub name: String,
    /// The architecture's id in the zoo, e.g. `efficientnet_lite0`.
    pub architecture: String,
    /// The weights file, relative to the manifest.
    pub weights: String,
    pub num_classes: usize,
    /// Side of the square network input, in pixels.
    pub input_size: u32,
    /// Evaluation resize: the shorter side becomes this, then the centre `input_size` crop.
    pub resize_shorter: u32,
    pub mean: [f32; 3],
    pub std: [f32; 3],
    /// Class names, one per line, relative to the manifest.
    pub labels: String,
    /// The layer class-activation maps look at by default.
    pub default_cam_layer: String,
    #[serde(default)]
    pub provenance: Provenance,
}

/// A model resolved on disk: everything needed to build and use it.
#[derive(Clone, Debug)]
pub struct ModelSpec {
    pub manifest: Manifest,
    /// The manifest file.
    pub manifest_path: PathBuf,
    /// The weights file (absolute or relative to the working directory).
    pub weights_path: PathBuf,
    /// Class names, `num_classes` of them.
    pub labels: Vec<String>,
}

impl ModelSpec {
    /// Reads a manifest and its labels file.
    pub fn from_manifest(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        let manifest: Manifest = serde_json::from_str(&text).map_err(|e| Error::Json {
            path: path.to_path_buf(),
            source: e,
        })?;
        let dir = path.parent().unwrap_or(Path::new("."));
        let labels_path = dir.join(&manifest.labels);
        let labels: Vec<String> = std::fs::read_to_string(&labels_path)
            .map_err(|e| Error::io(&labels_path, e))?
            .lines()
            .map(|l| l.trim().to_string())
            .filter(|l| !l.is_empty())
            .collect();
        if labels.len() != manifest.num_classes {
            return Err(Error::Model(format!(
                "{}: {} class names for a model with {} classes",
                labels_path.display(),
                labels.len(),
                manifest.num_classes
            )));
        }
        Ok(ModelSpec {
            weights_path: dir.join(&manifest.weights),
            manifest_path: path.to_path_buf(),
            manifest,
            labels,
        })
    }

    /// The model's evaluation preprocessing.
    pub fn eval_transform(&self) -> EvalTransform {
        EvalTransform {
            resize_shorter: self.manifest.resize_shorter,
            crop: self.manifest.input_size,
            mean: self.manifest.mean,
            std: self.manifest.std,
        }
    }

    /// Opens the weights, audits them and builds the network on `device`.
    pub fn load(&self, device: &Device) -> Result<Model> {
        let ckpt = Checkpoint::open(&self.weights_path, device)?;
        let network = match self.manifest.architecture.as_str() {
            "efficientnet_lite0" => efficientnet_lite::build(&ckpt, self.manifest.num_classes)?,
            other => {
                return Err(Error::Model(format!(
                    "{}: unknown architecture `{other}`; known: efficientnet_lite0",
                    self.manifest_path.display()
                )));
            }
        };
        Ok(Model {
            spec: self.clone(),
            network,
            device: device.clone(),
            weights_hash: file_sha256(&self.weights_path)?,
        })
    }
}

/// A loaded model: its spec and its network on a device.
pub struct Model {
    pub spec: ModelSpec,
    pub network: Network,
    pub device: Device,
    /// SHA-256 of the weights file (hex): keys feature caches and figure sidecars.
    pub weights_hash: String,
}

/// The SHA-256 of a file's bytes, as lowercase hex.
pub fn file_sha256(path: &Path) -> Result<String> {
    use sha2::{Digest, Sha256};
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    let digest = Sha256::digest(&bytes);
    Ok(digest.iter().map(|b| format!("{b:02x}")).collect())
}

/// The bundled models folder: `$CONVLENS_MODELS`, else `./models` when it holds the default
/// model, else the `models/` folder of the source tree convlens was built from.
pub fn models_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("CONVLENS_MODELS") {
        return PathBuf::from(dir);
    }
    let local = PathBuf::from("models");
    if local.join(format!("{DEFAULT_MODEL}.json")).is_file() {
        return local;
    }
    Path::new(env!("CARGO_MANIFEST_DIR")).join("models")
}

/// Finds a model by name in [`models_dir`] or by path: a manifest (`.json`), a weights file
/// with a manifest of the same stem beside it, or a folder holding `model.json`.
pub fn resolve(name_or_path: &str) -> Result<ModelSpec> {
    let path = Path::new(name_or_path);
    if path.is_dir() {
        return ModelSpec::from_manifest(&path.join("model.json"));
    }
    if path.is_file() {
        if path.extension().is_some_and(|e| e == "json") {
            return ModelSpec::from_manifest(path);
        }
        let manifest = path.with_extension("json");
        if manifest.is_file() {
            return ModelSpec::from_manifest(&manifest);
        }
        return Err(Error::Model(format!(
            "{}: no manifest `{}` beside the weights file (it names the architecture, \
             input size, normalisation and labels)",
            path.display(),
            manifest.display()
        )));
    }
    let dir = models_dir();
    let manifest = dir.join(format!("{name_or_path}.json"));
    if manifest.is_file() {
        return ModelSpec::from_manifest(&manifest);
    }
    Err(Error::Model(format!(
        "no model `{name_or_path}`: not a file or folder, and not a name in {} (known: {})",
        dir.display(),
        available_models(&dir).join(", ")
    )))
}

/// The names of the manifests in a models folder, sorted.
pub fn available_models(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .filter_map(|p| p.file_stem().map(|s| s.to_string_lossy().into_owned()))
        .collect();
    names.sort();
    names
}
