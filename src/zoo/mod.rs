//! Models on disk: a weights file plus a small JSON manifest next to it, found by name in the
//! models folder or by path, and built into a [`Network`] by the architecture's module.

pub mod blocks;
pub mod checkpoint;
pub mod compose;
pub mod convnext;
pub mod densenet;
pub mod detect;
pub mod efficientnet;
pub mod efficientnet_lite;
pub mod hub;
pub mod inception_v3;
pub mod limits;
pub mod mobile_blocks;
pub mod mobilenet_v1;
pub mod mobilenet_v2;
pub mod mobilenet_v3;
pub mod pth;
pub mod registry;
pub mod resnet;
pub mod small_convnet;
pub mod timm_relu6;
pub mod vgg;
pub mod xception;

use std::path::{Path, PathBuf};

use candle_core::Device;

use candle_core::Tensor;
use image::RgbImage;

use crate::data::preprocess::{EvalTransform, center_crop_box, shorter_side_size};
use crate::data::train_transform::TrainTransform;
use crate::graph::Network;
use crate::train::bundle::{self, TrainedManifest};
use crate::{Error, Result};
use checkpoint::Checkpoint;

/// How a model turns an image file into its input.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub enum Preprocess {
    /// Shorter side resized, centre crop (pretrained ImageNet models).
    CenterCrop(EvalTransform),
    /// The whole image resized to a square (models trained by convlens).
    Resize(TrainTransform),
}

impl Preprocess {
    /// Side of the square network input, in pixels.
    pub fn input_size(&self) -> u32 {
        match self {
            Preprocess::CenterCrop(t) => t.crop,
            Preprocess::Resize(t) => t.size,
        }
    }

    /// The per-channel `(mean, std)` the pixels in `[0, 1]` are normalised with.
    pub fn normalization(&self) -> ([f32; 3], [f32; 3]) {
        match self {
            Preprocess::CenterCrop(t) => (t.mean, t.std),
            Preprocess::Resize(t) => (t.mean, t.std),
        }
    }

    /// The image the network sees (size x size, before normalisation).
    pub fn apply(&self, img: &RgbImage) -> RgbImage {
        match self {
            Preprocess::CenterCrop(t) => t.apply(img),
            Preprocess::Resize(t) => t.apply(img),
        }
    }

    /// Normalises an image already through [`Preprocess::apply`]: `[1, 3, size, size]`.
    pub fn to_tensor(&self, img: &RgbImage, device: &Device) -> Result<Tensor> {
        match self {
            Preprocess::CenterCrop(t) => t.to_tensor(img, device),
            Preprocess::Resize(t) => t.to_tensor(img, device),
        }
    }

    /// Decodes and preprocesses an image file: `[1, 3, size, size]`; errors name the file.
    pub fn load(&self, path: &Path, device: &Device) -> Result<Tensor> {
        match self {
            Preprocess::CenterCrop(t) => t.load(path, device),
            Preprocess::Resize(t) => t.load(path, device),
        }
    }

    /// The region `[x0, y0, x1, y1]` of a `width` x `height` original image that the network
    /// input shows, in original pixel coordinates (for placing a map back on the image).
    pub fn source_region(&self, width: u32, height: u32) -> [f32; 4] {
        match self {
            Preprocess::CenterCrop(t) => {
                let (rw, rh) = shorter_side_size(width, height, t.resize_shorter);
                let (left, top) = center_crop_box(rw, rh, t.crop);
                let (sx, sy) = (width as f32 / rw as f32, height as f32 / rh as f32);
                [
                    left as f32 * sx,
                    top as f32 * sy,
                    (left + t.crop) as f32 * sx,
                    (top + t.crop) as f32 * sy,
                ]
            }
            Preprocess::Resize(_) => [0.0, 0.0, width as f32, height as f32],
        }
    }
}

/// ImageNet's per-channel mean (RGB), the default normalisation of a bare weights file.
pub const IMAGENET_MEAN: [f32; 3] = [0.485, 0.456, 0.406];
/// ImageNet's per-channel standard deviation (RGB).
pub const IMAGENET_STD: [f32; 3] = [0.229, 0.224, 0.225];

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

impl Manifest {
    /// Checks the values that size or scale the input and the classifier against
    /// [`limits`]: `input_size`, `resize_shorter`, `mean`, `std`, `num_classes`. Errors name
    /// `path`, the field and the allowed range.
    pub fn validate(&self, path: &Path) -> Result<()> {
        limits::check_input_size(path, "input_size", self.input_size)?;
        limits::check_resize_shorter(path, self.resize_shorter, self.input_size)?;
        limits::check_normalisation(path, &self.mean, &self.std)?;
        limits::check_class_count(path, "`num_classes` gives", self.num_classes)
    }
}

/// A model resolved on disk: everything needed to build and use it.
#[derive(Clone, Debug)]
pub struct ModelSpec {
    /// The pretrained manifest, or one describing a trained model (architecture, input size,
    /// normalisation, classes, CAM layer, provenance).
    pub manifest: Manifest,
    /// The manifest file.
    pub manifest_path: PathBuf,
    /// The weights file (absolute or relative to the working directory).
    pub weights_path: PathBuf,
    /// Class names, `num_classes` of them.
    pub labels: Vec<String>,
    /// How an image file becomes the network input.
    pub preprocess: Preprocess,
    /// For a model trained by convlens: its folder and manifest.
    pub trained: Option<(PathBuf, TrainedManifest)>,
}

impl ModelSpec {
    /// Reads a manifest and its labels file.
    pub fn from_manifest(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        let manifest: Manifest = serde_json::from_str(&text).map_err(|e| Error::Json {
            path: path.to_path_buf(),
            source: e,
        })?;
        manifest.validate(path)?;
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
        let preprocess = Preprocess::CenterCrop(EvalTransform {
            resize_shorter: manifest.resize_shorter,
            crop: manifest.input_size,
            mean: manifest.mean,
            std: manifest.std,
        });
        Ok(ModelSpec {
            weights_path: dir.join(&manifest.weights),
            manifest_path: path.to_path_buf(),
            manifest,
            labels,
            preprocess,
            trained: None,
        })
    }

    /// Reads a trained-model folder (`model.json` + `weights.safetensors`); its base model must
    /// be found and have unchanged weights.
    pub fn from_trained(dir: &Path) -> Result<Self> {
        let m = TrainedManifest::read(dir)?;
        let base = bundle::base_of(dir, &m)?;
        let name = dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "trained".into());
        let (architecture, provenance) = match &base {
            Some(b) => (
                b.manifest.architecture.clone(),
                Provenance {
                    source: format!(
                        "trained by convlens {} ({} mode) on top of {}",
                        m.convlens_version, m.mode, b.manifest.name
                    ),
                    license: b.manifest.provenance.license.clone(),
                    notes: b.manifest.provenance.source.clone(),
                },
            ),
            None => (
                "small_convnet".to_string(),
                Provenance {
                    source: format!("trained from scratch by convlens {}", m.convlens_version),
                    license: String::new(),
                    notes: String::new(),
                },
            ),
        };
        let manifest = Manifest {
            name,
            architecture,
            weights: bundle::WEIGHTS.into(),
            num_classes: m.classes.len(),
            input_size: m.preprocess.size,
            resize_shorter: m.preprocess.size,
            mean: m.preprocess.mean,
            std: m.preprocess.std,
            labels: String::new(),
            default_cam_layer: m.default_cam_layer.clone(),
            provenance,
        };
        Ok(ModelSpec {
            manifest,
            manifest_path: dir.join(bundle::MANIFEST),
            weights_path: dir.join(bundle::WEIGHTS),
            labels: m.classes.clone(),
            preprocess: Preprocess::Resize(m.preprocess.clone()),
            trained: Some((dir.to_path_buf(), m)),
        })
    }

    /// A spec for a weights file (safetensors or PyTorch zip) without a manifest: the architecture and class
    /// count are detected from its tensors ([`detect::detect`]; the reason goes into
    /// `provenance.notes`), with the architecture's preprocessing ([`detect::default_preprocess`]:
    /// input 224 after resizing the shorter side to 256 and ImageNet mean/std but for
    /// EfficientNet-Lite), the ImageNet class names for 1000 classes (`class N`
    /// otherwise), the architecture's default class-activation-map layer.
    pub fn from_weights(path: &Path) -> Result<Self> {
        let shapes = detect::read_shapes(path)?;
        let found = detect::detect_path(&shapes, path)?;
        let n = found.num_classes;
        limits::check_class_count(path, "the classifier has", n)?;
        let imagenet_labels = models_dir().join("imagenet_classes.txt");
        let (labels_file, labels) = if n == 1000 && imagenet_labels.is_file() {
            let text = std::fs::read_to_string(&imagenet_labels)
                .map_err(|e| Error::io(&imagenet_labels, e))?;
            let labels: Vec<String> = text
                .lines()
                .map(|l| l.trim().to_string())
                .filter(|l| !l.is_empty())
                .collect();
            (imagenet_labels.display().to_string(), labels)
        } else {
            (
                String::new(),
                (0..n).map(|i| format!("class {i}")).collect(),
            )
        };
        if labels.len() != n {
            return Err(Error::Model(format!(
                "{labels_file}: {} class names for a model with {n} classes",
                labels.len()
            )));
        }
        let name = path
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_else(|| found.architecture.clone());
        let registry::PreprocessDefaults {
            input_size,
            resize_shorter,
            mean,
            std,
        } = detect::default_preprocess(&found.architecture);
        let source = match checkpoint::weights_format(path)? {
            checkpoint::WeightsFormat::Safetensors => {
                "a safetensors weights file without a manifest".to_string()
            }
            checkpoint::WeightsFormat::PytorchZip => {
                let place = match pth::PthFile::open(path)?.key {
                    Some(key) => format!("under `{key}`"),
                    None => "at the top level".into(),
                };
                format!("a PyTorch checkpoint without a manifest (state dict {place})")
            }
        };
        let manifest = Manifest {
            name,
            default_cam_layer: detect::default_cam_layer(&found.architecture).unwrap_or_default(),
            architecture: found.architecture,
            weights: path
                .file_name()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_default(),
            num_classes: n,
            input_size,
            resize_shorter,
            mean,
            std,
            labels: labels_file,
            provenance: Provenance {
                source,
                license: "license unknown".into(),
                notes: format!(
                    "architecture detected from the tensor names and shapes: {}",
                    found.why
                ),
            },
        };
        let preprocess = Preprocess::CenterCrop(EvalTransform {
            resize_shorter: manifest.resize_shorter,
            crop: manifest.input_size,
            mean: manifest.mean,
            std: manifest.std,
        });
        Ok(ModelSpec {
            manifest,
            // The weights file stands in for the manifest: resolving it again gives this spec.
            manifest_path: path.to_path_buf(),
            weights_path: path.to_path_buf(),
            labels,
            preprocess,
            trained: None,
        })
    }

    /// Opens the weights, audits them and builds the network on `device`.
    pub fn load(&self, device: &Device) -> Result<Model> {
        if let Some((dir, m)) = &self.trained {
            return Ok(Model {
                spec: self.clone(),
                network: bundle::build_network(dir, m, device)?,
                device: device.clone(),
                weights_hash: file_sha256(&self.weights_path)?,
            });
        }
        let architecture = self.manifest.architecture.as_str();
        if registry::family_of(architecture).is_none() {
            return Err(Error::Model(format!(
                "{}: unknown architecture `{architecture}`; known: {}",
                self.manifest_path.display(),
                registry::all_ids().join(", ")
            )));
        }
        let classes = self.manifest.num_classes;
        limits::check_class_count(&self.manifest_path, "the manifest gives", classes)?;
        let expected = match detect::read_shapes(&self.weights_path) {
            Ok(shapes) => registry::family_of(architecture)
                .and_then(|f| f.expected_tensors_like(architecture, classes, &shapes)),
            Err(_) => expected_tensors(architecture, classes),
        };
        if let Some(expected) = expected {
            // From the header alone, before a byte of tensor data is read.
            checkpoint::audit_file(&self.weights_path, architecture, &expected).map_err(
                |audit| match detect::read_shapes(&self.weights_path) {
                    Ok(shapes) => misfit(&self.weights_path, architecture, &shapes, audit),
                    Err(_) => audit,
                },
            )?;
        }
        let ckpt = Checkpoint::open(&self.weights_path, device)?;
        let network = build_network(architecture, &ckpt, classes)?;
        Ok(Model {
            spec: self.clone(),
            network,
            device: device.clone(),
            weights_hash: file_sha256(&self.weights_path)?,
        })
    }
}

/// Every tensor a checkpoint of `architecture` with `num_classes` outputs must hold (0: the
/// feature-only checkpoint), with its shape; `None` for an unknown architecture.
pub fn expected_tensors(
    architecture: &str,
    num_classes: usize,
) -> Option<checkpoint::ExpectedTensors> {
    registry::family_of(architecture)?.expected_tensors(architecture, num_classes)
}

/// Builds the network of `architecture` (an id of [`registry::all_ids`]) from a checkpoint,
/// after auditing its keys and shapes (`num_classes` 0: a feature-only checkpoint, the network
/// ends at `pooled`). Input `[batch, 3, h, w]`.
///
/// When the file does not fit and its tensors look like another architecture, the error says
/// which one and why (e.g. a ResNet-18 file opened as `vgg16`).
pub fn build_network(architecture: &str, ckpt: &Checkpoint, num_classes: usize) -> Result<Network> {
    let Some(family) = registry::family_of(architecture) else {
        return Err(Error::Model(format!(
            "{}: unknown architecture `{architecture}`; known: {}",
            ckpt.path().display(),
            registry::all_ids().join(", ")
        )));
    };
    family
        .build(architecture, ckpt, num_classes)
        .map_err(|e| misfit(ckpt.path(), architecture, &ckpt.shapes(), e))
}

/// A shape-audit error ([`Error::Weights`]) of weights at `path` that do not fit
/// `architecture`, explained: when their tensors look like another architecture, the error
/// says which one and why. Other errors pass through.
fn misfit(path: &Path, architecture: &str, shapes: &detect::Shapes, error: Error) -> Error {
    if !matches!(error, Error::Weights { .. }) {
        return error;
    }
    let looks_like = match detect::detect(shapes) {
        Ok(d) if d.architecture != architecture => {
            format!("it looks like {} ({})", d.architecture, d.why)
        }
        Ok(_) => return error,
        Err(e) => e.to_string(),
    };
    Error::Model(format!(
        "{}: these weights do not fit {architecture}: {looks_like}. First problem: {error}",
        path.display()
    ))
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
/// with a manifest of the same stem beside it, a bare weights file (architecture detected, see
/// [`ModelSpec::from_weights`]), a folder holding `model.json`, or a file on the Hugging Face
/// hub, `hf:ORG/REPO[/FILE][@REVISION]` (fetched into the hub's cache with the `hub` feature,
/// see [`hub`]; the model keeps that name), or the name of a training run of the workspace
/// (see [`crate::workspace`]).
pub fn resolve(name_or_path: &str) -> Result<ModelSpec> {
    if let Some(reference) = hub::parse(name_or_path) {
        let local = hub::fetch(&reference?)?;
        let mut spec = resolve(&local.to_string_lossy())?;
        spec.manifest.name = name_or_path.to_string();
        return Ok(spec);
    }
    let path = Path::new(name_or_path);
    if path.is_dir() {
        if bundle::is_trained_model(path) {
            return ModelSpec::from_trained(path);
        }
        let manifest = path.join("model.json");
        if !manifest.exists() {
            return Err(no_model_in(path));
        }
        return ModelSpec::from_manifest(&manifest);
    }
    if path.is_file() {
        if path.extension().is_some_and(|e| e == "json") {
            return ModelSpec::from_manifest(path);
        }
        let manifest = path.with_extension("json");
        if manifest.is_file() {
            return ModelSpec::from_manifest(&manifest);
        }
        return ModelSpec::from_weights(path).map_err(|e| {
            Error::Model(format!(
                "{}: no manifest `{}` beside the weights file, and the architecture cannot be \
                 detected: {e}",
                path.display(),
                manifest.display()
            ))
        });
    }
    let dir = models_dir();
    let manifest = dir.join(format!("{name_or_path}.json"));
    if manifest.is_file() {
        return ModelSpec::from_manifest(&manifest);
    }
    if let Some(run) = crate::workspace::find_run(name_or_path) {
        return ModelSpec::from_trained(&run);
    }
    Err(Error::Model(format!(
        "no model `{name_or_path}`: not a file or folder, not a training run (`convlens runs \
         list`), and not a name in {} (known: {})",
        dir.display(),
        available_models(&dir).join(", ")
    )))
}

/// A folder given as a model that holds none (no `model.json`), in words: a training run's
/// folder that has not saved its model yet is told apart from any other folder.
fn no_model_in(dir: &Path) -> Error {
    let what = if dir.join(crate::workspace::run::RECORD).is_file() {
        "is a training run that holds no trained model yet (no model.json: the run has not \
         saved one, or it failed or was stopped first)"
    } else {
        "holds no model (no model.json)"
    };
    Error::Model(format!(
        "{}: {what}; pass a trained model's folder (one that holds model.json and \
         weights.safetensors, e.g. a finished run from `convlens runs list`), a model manifest \
         (.json), a weights file (.safetensors or .pth) or a model's name",
        dir.display()
    ))
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
