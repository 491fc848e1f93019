//! A trained model on disk: a folder with `model.json` (the manifest: base model and its
//! weights' hash, classes, preprocessing, mode, configuration, metrics history, version) and
//! `weights.safetensors` (the head, any fine-tuned stages, or the whole scratch convnet).

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{Device, Tensor};
use serde::{Deserialize, Serialize};

use super::head::{self, Head, HeadKind};
use super::{EpochMetrics, Mode, TrainConfig};
use crate::data::split_record::SplitRecord;
use crate::data::train_transform::TrainTransform;
use crate::graph::Network;
use crate::zoo::checkpoint::{self, ExpectedTensors};
use crate::zoo::{self, detect, limits, small_convnet};
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
    #[serde(deserialize_with = "infinite_if_null")]
    pub best_val_loss: f32,
    pub best_val_accuracy: f32,
    /// How the validation split was made (`None` in manifests written before convlens
    /// recorded it: their split cannot be reproduced).
    #[serde(default)]
    pub split: Option<SplitRecord>,
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
            split: None,
        }
    }

    /// The manifest with the record of how its data was split.
    pub fn with_split(self, split: SplitRecord) -> Self {
        TrainedManifest {
            split: Some(split),
            ..self
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
        m.validate(&path)?;
        Ok(m)
    }

    /// Checks what sizes and scales the model against [`limits`]: the class list, the input
    /// size and the normalisation. Errors name `path` and the field.
    pub fn validate(&self, path: &Path) -> Result<()> {
        if self.classes.is_empty() {
            return Err(Error::Model(format!(
                "{}: `classes` is empty",
                path.display()
            )));
        }
        limits::check_class_count(path, "`classes` lists", self.classes.len())?;
        limits::check_input_size(path, "preprocess.size", self.preprocess.size)?;
        limits::check_normalisation(path, &self.preprocess.mean, &self.preprocess.std)
    }

    /// The manifest as JSON, refused when it would not load back: JSON has no NaN or
    /// infinity, so serde writes them as `null`, which no reader accepts (a diverged run's
    /// learning rate once made every later `predict --model` fail this way).
    pub fn to_loadable_json(&self) -> Result<String> {
        let text = serde_json::to_string_pretty(self).map_err(|e| {
            Error::Training(format!(
                "the trained model's manifest cannot be written: {e}"
            ))
        })?;
        match serde_json::from_str::<TrainedManifest>(&text) {
            Ok(back) if back.validate(Path::new(MANIFEST)).is_ok() => Ok(text),
            Ok(_) | Err(_) => Err(Error::Training(
                "the trained model's manifest holds a value that would not load back (a \
                 non-finite number?)"
                    .into(),
            )),
        }
    }
}

/// `best_val_loss` of a run that never had a finite validation loss is infinite, which JSON
/// writes as `null`: read back as infinity.
fn infinite_if_null<'de, D: serde::Deserializer<'de>>(d: D) -> std::result::Result<f32, D::Error> {
    Ok(Option::<f32>::deserialize(d)?.unwrap_or(f32::INFINITY))
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
    crate::fsutil::save_safetensors(&map, &tmp)?;
    std::fs::rename(&tmp, &path).map_err(|e| Error::io(&path, e))?;
    save_manifest(dir, manifest)
}

/// Writes the manifest atomically.
pub fn save_manifest(dir: &Path, manifest: &TrainedManifest) -> Result<()> {
    crate::fsutil::write_json_atomic(&dir.join(MANIFEST), manifest)
}

/// The saved tensors of a trained model, on `device`; a tensor holding NaN or an infinity is an
/// error naming it.
pub fn load_tensors(dir: &Path, device: &Device) -> Result<HashMap<String, Tensor>> {
    let path = dir.join(WEIGHTS);
    let tensors = candle_core::safetensors::load(&path, device).map_err(|e| {
        Error::Model(format!(
            "{}: not a readable safetensors weights file ({e})",
            path.display()
        ))
    })?;
    for (name, t) in &tensors {
        checkpoint::ensure_finite(&path, name, t)?;
    }
    Ok(tensors)
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
///
/// Before any tensor data is read, the weights file's header is checked against the manifest:
/// the classifier's outputs against its class list (an error naming both counts and the
/// file), then every tensor's name and shape and the file's size
/// ([`checkpoint::audit_file`]). Every tensor read must be finite.
pub fn build_network(dir: &Path, m: &TrainedManifest, device: &Device) -> Result<Network> {
    let path = dir.join(WEIGHTS);
    let classes = m.classes.len();
    let size = m.preprocess.size as usize;
    let (architecture, output_weight, expected, base_net) = match &m.base {
        None => (
            "small_convnet",
            small_convnet::OUTPUT_WEIGHT,
            small_convnet::tensor_shapes(size, classes)?,
            None,
        ),
        Some(base) => {
            let mut net = base_spec(dir, base)?.load(device)?.network;
            net.truncate_after(&base.feature_layer)?;
            let width = net
                .layers(size)
                .last()
                .and_then(|l| l.output_shape.first().copied())
                .unwrap_or(0);
            let mut expected: ExpectedTensors = Vec::new();
            for layer in &m.finetuned_layers {
                let prefix = format!("{layer}.");
                expected.extend(
                    net.tensors_mut_from(layer)?
                        .into_iter()
                        .filter(|(name, _)| name.starts_with(&prefix))
                        .map(|(name, t)| (name, t.dims().to_vec())),
                );
            }
            expected.extend(Head::expected_tensors(
                m.head.unwrap_or_default(),
                width,
                classes,
            ));
            (
                base.architecture.as_str(),
                head::OUTPUT_WEIGHT,
                expected,
                Some(net),
            )
        }
    };
    check_classes(&path, output_weight, classes)?;
    checkpoint::audit_file(&path, architecture, &expected)?;
    let tensors = load_tensors(dir, device)?;
    let Some(mut net) = base_net else {
        return small_convnet::build(&tensors, size, classes);
    };
    for layer in &m.finetuned_layers {
        let prefix = format!("{layer}.");
        for (name, t) in net.tensors_mut_from(layer)? {
            if let (true, Some(saved)) = (name.starts_with(&prefix), tensors.get(&name)) {
                *t = saved.clone();
            }
        }
    }
    let head = Head::from_tensors(m.head.unwrap_or_default(), &tensors)?;
    net.push("logits", Box::new(head));
    Ok(net)
}

/// Refuses weights whose classifier (`output_weight`, `[classes, inputs]`) has another class
/// count than the manifest's class list, from the file's header.
fn check_classes(path: &Path, output_weight: &str, classes: usize) -> Result<()> {
    let shapes = detect::read_shapes(path)?;
    match shapes.get(output_weight).and_then(|s| s.first()) {
        Some(&found) if found != classes => Err(Error::Model(format!(
            "{}: the classifier `{output_weight}` has {found} outputs but {} lists {classes} \
             classes; the weights and the manifest come from different models",
            path.display(),
            path.with_file_name(MANIFEST).display()
        ))),
        _ => Ok(()),
    }
}

/// The base model's spec of a trained model (for its provenance and CAM layer).
pub fn base_of(dir: &Path, m: &TrainedManifest) -> Result<Option<zoo::ModelSpec>> {
    m.base.as_ref().map(|b| base_spec(dir, b)).transpose()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn manifest(cfg: &TrainConfig) -> TrainedManifest {
        let classes = vec!["a".to_string(), "b".to_string()];
        let transform = TrainTransform::new(80, [0.5; 3], [0.25; 3]);
        TrainedManifest::new(cfg, &classes, transform, None, None, Vec::new(), "conv5")
    }

    #[test]
    fn a_manifest_that_would_not_load_back_is_refused() {
        let ok = manifest(&TrainConfig::default());
        // No finite validation loss yet: written as null, read back as infinity.
        assert_eq!(ok.best_val_loss, f32::INFINITY);
        let text = ok.to_loadable_json().unwrap();
        let back: TrainedManifest = serde_json::from_str(&text).unwrap();
        assert_eq!(back.best_val_loss, f32::INFINITY);
        for lr in [f64::NAN, f64::INFINITY] {
            let bad = manifest(&TrainConfig {
                lr,
                ..TrainConfig::default()
            });
            let err = bad.to_loadable_json().unwrap_err().to_string();
            assert!(err.contains("would not load back"), "{err}");
        }
    }

    #[test]
    fn read_checks_sizes_and_normalisation() {
        let mut m = manifest(&TrainConfig::default());
        m.preprocess.std = [0.0; 3];
        let err = m
            .validate(Path::new("x/model.json"))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("x/model.json") && err.contains("`std`"),
            "{err}"
        );
        let mut m = manifest(&TrainConfig::default());
        m.preprocess.size = 100_000;
        let err = m.validate(Path::new("model.json")).unwrap_err().to_string();
        assert!(
            err.contains("preprocess.size") && err.contains("100000"),
            "{err}"
        );
        let mut m = manifest(&TrainConfig::default());
        m.classes.clear();
        assert!(m.validate(Path::new("model.json")).is_err());
    }
}
