//! A trained model on disk: a folder with `model.json` (the manifest: base model and its
//! weights' hash, classes, preprocessing, mode, configuration, metrics history, version) and
//! `weights.safetensors` (the head, any fine-tuned stages, or the whole scratch convnet).

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{Device, Tensor};
use serde::{Deserialize, Serialize};

use super::head::{Head, HeadKind};
use super::{EpochMetrics, Mode, TrainConfig};
use crate::data::train_transform::TrainTransform;
use crate::graph::Network;
use crate::zoo::{self, small_convnet};
use crate::{Error, Result};

/// The manifest's file name inside a trained-model folder.
pub const MANIFEST: &str = "model.json";
/// The weights' file name inside a trained-model folder.
pub const WEIGHTS: &str = "weights.safetensors";
/// The manifest's `format` value.
pub const FORMAT: &str = "convlens-trained-model/1";

/// The pretrained model a trained model builds on.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct BaseModelRef {
    /// Its name in the models folder.
    pub name: String,
    /// Its manifest's path when it was trained (used when the name is not found).
    pub manifest: PathBuf,
    pub architecture: String,
    /// SHA-256 of its weights file: loading refuses a base whose weights changed.
    pub weights_hash: String,
    /// The layer the head reads (`pooled`).
    pub feature_layer: String,
}

/// `model.json` of a trained model.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TrainedManifest {
    pub format: String,
    pub convlens_version: String,
    pub classes: Vec<String>,
    /// How images become inputs (the whole image resized, normalised).
    pub preprocess: TrainTransform,
    pub mode: Mode,
    pub config: TrainConfig,
    /// `None` for a convnet trained from scratch.
    pub base: Option<BaseModelRef>,
    pub head: Option<HeadKind>,
    /// Base stages whose tensors were fine-tuned (stored in the weights file).
    pub finetuned_layers: Vec<String>,
    pub default_cam_layer: String,
    pub history: Vec<EpochMetrics>,
    pub best_val_loss: f32,
    pub best_val_accuracy: f32,
}

impl TrainedManifest {
    /// A manifest for a run about to start.
    pub fn new(
        cfg: &TrainConfig,
        classes: &[String],
        preprocess: TrainTransform,
        base: Option<BaseModelRef>,
        head: Option<HeadKind>,
        finetuned_layers: Vec<String>,
        default_cam_layer: &str,
    ) -> Self {
        TrainedManifest {
            format: FORMAT.into(),
            convlens_version: env!("CARGO_PKG_VERSION").into(),
            classes: classes.to_vec(),
            preprocess,
            mode: cfg.mode,
            config: cfg.clone(),
            base,
            head,
            finetuned_layers,
            default_cam_layer: default_cam_layer.into(),
            history: Vec::new(),
            best_val_loss: f32::INFINITY,
            best_val_accuracy: 0.0,
        }
    }

    /// Reads `dir/model.json`.
    pub fn read(dir: &Path) -> Result<Self> {
        let path = dir.join(MANIFEST);
        let text = std::fs::read_to_string(&path).map_err(|e| Error::io(&path, e))?;
        let m: TrainedManifest = serde_json::from_str(&text).map_err(|e| Error::Json {
            path: path.clone(),
            source: e,
        })?;
        if m.format != FORMAT {
            return Err(Error::Model(format!(
                "{}: format `{}` is not `{FORMAT}`",
                path.display(),
                m.format
            )));
        }
        Ok(m)
    }
}

/// Whether `dir` holds a trained model.
pub fn is_trained_model(dir: &Path) -> bool {
    let Ok(text) = std::fs::read_to_string(dir.join(MANIFEST)) else {
        return false;
    };
    serde_json::from_str::<serde_json::Value>(&text)
        .ok()
        .and_then(|v| {
            v.get("format")
                .and_then(|f| f.as_str())
                .map(|f| f == FORMAT)
        })
        .unwrap_or(false)
}

/// Writes the weights, then the manifest, each atomically.
pub fn save(dir: &Path, manifest: &TrainedManifest, tensors: &[(String, Tensor)]) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    let map: HashMap<String, Tensor> = tensors
        .iter()
        .map(|(n, t)| Ok((n.clone(), t.to_device(&Device::Cpu)?)))
        .collect::<Result<_>>()?;
    let path = dir.join(WEIGHTS);
    let tmp = dir.join(format!(".{WEIGHTS}.{}.tmp", std::process::id()));
    candle_core::safetensors::save(&map, &tmp)?;
    std::fs::rename(&tmp, &path).map_err(|e| Error::io(&path, e))?;
    save_manifest(dir, manifest)
}

/// Writes the manifest atomically.
pub fn save_manifest(dir: &Path, manifest: &TrainedManifest) -> Result<()> {
    let text = serde_json::to_string_pretty(manifest).expect("serialisable");
    crate::fsutil::write_atomic(&dir.join(MANIFEST), text.as_bytes())
}

/// The saved tensors of a trained model, on the CPU.
pub fn load_tensors(dir: &Path) -> Result<HashMap<String, Tensor>> {
    let path = dir.join(WEIGHTS);
    candle_core::safetensors::load(&path, &Device::Cpu).map_err(|e| {
        Error::Model(format!(
            "{}: not a readable safetensors weights file ({e})",
            path.display()
        ))
    })
}

/// The base model's spec, found by name or by its recorded path, with its weights' hash checked.
fn base_spec(dir: &Path, base: &BaseModelRef) -> Result<zoo::ModelSpec> {
    let spec = zoo::resolve(&base.name)
        .or_else(|_| zoo::resolve(base.manifest.to_str().unwrap_or_default()))
        .map_err(|e| {
            Error::Model(format!(
                "{}: its base model `{}` cannot be found ({e})",
                dir.display(),
                base.name
            ))
        })?;
    let hash = zoo::file_sha256(&spec.weights_path)?;
    if hash != base.weights_hash {
        return Err(Error::Model(format!(
            "{}: the base weights changed: {} has SHA-256 {}…, the model was trained on {}…; \
             retrain it or restore the original weights",
            dir.display(),
            spec.weights_path.display(),
            &hash[..12],
            &base.weights_hash[..12.min(base.weights_hash.len())]
        )));
    }
    Ok(spec)
}

/// Builds a trained model's network on `device`: the base up to the feature layer with any
/// fine-tuned stages replaced, plus the trained head as `logits`; or the scratch convnet.
pub fn build_network(dir: &Path, m: &TrainedManifest, device: &Device) -> Result<Network> {
    let tensors = load_tensors(dir)?;
    let tensors: HashMap<String, Tensor> = tensors
        .into_iter()
        .map(|(k, t)| Ok((k, t.to_device(device)?)))
        .collect::<Result<_>>()?;
    let Some(base) = &m.base else {
        let size = m.preprocess.size as usize;
        return small_convnet::build(&tensors, size, m.classes.len());
    };
    let mut net = base_spec(dir, base)?.load(device)?.network;
    net.truncate_after(&base.feature_layer)?;
    for layer in &m.finetuned_layers {
        for (name, t) in net.tensors_mut_from(layer)? {
            if !name.starts_with(&format!("{layer}.")) {
                continue;
            }
            let saved = tensors.get(&name).ok_or_else(|| {
                Error::Model(format!(
                    "{}: fine-tuned tensor `{name}` is missing",
                    dir.join(WEIGHTS).display()
                ))
            })?;
            if saved.dims() != t.dims() {
                return Err(Error::Weights {
                    path: dir.join(WEIGHTS),
                    tensor: name,
                    expected: format!("{:?}", t.dims()),
                    found: format!("{:?}", saved.dims()),
                    more: 0,
                });
            }
            *t = saved.clone();
        }
    }
    let head = Head::from_tensors(m.head.unwrap_or_default(), &tensors)?;
    net.push("logits", Box::new(head));
    Ok(net)
}

/// The base model's spec of a trained model (for its provenance and CAM layer).
pub fn base_of(dir: &Path, m: &TrainedManifest) -> Result<Option<zoo::ModelSpec>> {
    m.base.as_ref().map(|b| base_spec(dir, b)).transpose()
}
