//! PyTorch export: the model's state dict in the key names of the torchvision or timm module
//! that rebuilds it (`.safetensors`), the trained head in place of the classifier, and a
//! Python script beside it that rebuilds the module and loads the file.
//!
//! BatchNorm goes out unfolded, as the original checkpoint holds it (convlens keeps the
//! checkpoint's tensors; the folded ones are only what it computes with), except in the stages
//! a run fine-tuned: they hold folded weights only, and go out with an identity BatchNorm
//! ([`finetuned`]). The check before the
//! files are put in place reads the state dict back, compares it tensor by tensor with what was
//! meant to be written, rebuilds a convlens network from it and compares its logits on the
//! bundled photos with the model's.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{Device, Tensor};

use super::verify::{self, Verification};
use super::{ExportReport, ExportRequest, Pending, ProgressFn, check_destination};
use crate::cancel::CancelToken;
use crate::graph::layers::BatchNormMode;
use crate::train::head::{Head, HeadKind};
use crate::zoo::checkpoint::Checkpoint;
use crate::zoo::{self, Model, Preprocess, small_convnet};
use crate::{Error, Result};
use targets::{reduced_build, target, torch_name};

mod targets;

/// What goes into the state dict, and what the check rebuilds from it.
struct StateDict {
    /// `(torch name, tensor)` in writing order.
    tensors: Vec<(String, Tensor)>,
    /// torch name -> convlens checkpoint name, for the rebuild.
    native: HashMap<String, String>,
    /// The Python script.
    script: String,
}

/// The pretrained base a model builds on, its checkpoint and class count (`None` for the
/// scratch convnet).
struct Base {
    architecture: String,
    ckpt: Checkpoint,
    classes: usize,
    /// A trained model's head and the layer it reads.
    head: Option<(Head, String)>,
    /// The base tensors a fine-tuned model replaces, by checkpoint name (see [`finetuned`]).
    finetuned: HashMap<String, Tensor>,
}

fn base_of(model: &Model) -> Result<Option<Base>> {
    let Some((dir, manifest)) = &model.spec.trained else {
        let architecture = model.spec.manifest.architecture.clone();
        return Ok(Some(Base {
            ckpt: Checkpoint::open(&model.spec.weights_path, &Device::Cpu)?,
            classes: model.spec.manifest.num_classes,
            architecture,
            head: None,
            finetuned: HashMap::new(),
        }));
    };
    let Some(base_ref) = &manifest.base else {
        return Ok(None);
    };
    let base_spec = crate::train::bundle::base_of(dir, manifest)?
        .ok_or_else(|| Error::Model(format!("{}: no base model", dir.display())))?;
    let tensors = crate::train::bundle::load_tensors(dir, &Device::Cpu)?;
    let head = Head::from_tensors(manifest.head.unwrap_or_default(), &tensors)?;
    let ckpt = Checkpoint::open(&base_spec.weights_path, &Device::Cpu)?;
    let classes = base_spec.manifest.num_classes;
    let architecture = base_ref.architecture.clone();
    let finetuned = finetuned(
        &ckpt,
        &architecture,
        classes,
        &manifest.finetuned_layers,
        &tensors,
    )
    .map_err(|e| Error::Model(format!("{}: {e}", dir.display())))?;
    Ok(Some(Base {
        architecture,
        ckpt,
        classes,
        head: Some((head, base_ref.feature_layer.clone())),
        finetuned,
    }))
}

/// The tensors of the fine-tuned base stages `layers` under the base checkpoint's names.
///
/// A trained model stores a fine-tuned stage's tensors as convlens computes with them (named
/// by the stage, BatchNorm folded into each convolution: `blocks.15.project.weight`). The base
/// network is built once more from its checkpoint with BatchNorm unfolded; its stages then
/// hold the checkpoint's own tensors, so each tensor's checkpoint name is found by identity
/// (no naming rules per architecture). A folded convolution goes out as the convolution's
/// weight with its BatchNorm the identity (scale 1, shift the folded bias, mean 0, variance
/// `1 - eps`), which gives the same outputs in evaluation; a tensor without BatchNorm (VGG's)
/// goes out as it is. A BatchNorm applied alone goes out with its folded scale and shift, mean
/// 0 and variance `1 - eps`.
fn finetuned(
    ckpt: &Checkpoint,
    architecture: &str,
    classes: usize,
    layers: &[String],
    saved: &HashMap<String, Tensor>,
) -> Result<HashMap<String, Tensor>> {
    let mut out = HashMap::new();
    let Some(first) = layers.first() else {
        return Ok(out);
    };
    let eps = target(architecture)?.bn_eps.unwrap_or(1e-5);
    let by_id: HashMap<candle_core::TensorId, String> = ckpt
        .keys()
        .into_iter()
        .map(|k| Ok((ckpt.get(k)?.id(), k.to_string())))
        .collect::<Result<_>>()?;
    let mut net = zoo::build_network(architecture, ckpt, classes)?;
    net.set_batchnorm_mode(Some(first), BatchNormMode::Exact)?;
    let unfolded: Vec<(String, Tensor)> = net
        .tensors_mut_from(first)?
        .into_iter()
        .filter(|(name, _)| layers.iter().any(|l| name.starts_with(&format!("{l}."))))
        .map(|(name, t)| (name, t.clone()))
        .collect();
    let by_name: HashMap<&str, &Tensor> = unfolded.iter().map(|(n, t)| (n.as_str(), t)).collect();
    // A BatchNorm applied alone (DenseNet's `norm1`) runs as a 1x1 depthwise conv of ones
    // that is no checkpoint tensor: its folded weight is the BatchNorm's scale.
    let alone = |p: &str| {
        by_name
            .get(format!("{p}.conv.weight").as_str())
            .is_some_and(|w| !by_id.contains_key(&w.id()))
    };
    let key_of = |name: &str, t: &Tensor| {
        by_id.get(&t.id()).cloned().ok_or_else(|| {
            Error::Model(format!(
                "the fine-tuned tensor `{name}` has no counterpart in the base checkpoint {}, \
                 so it has no torchvision/timm name; export this model to ONNX instead",
                ckpt.path().display()
            ))
        })
    };
    let saved_as = |name: &str, like: &Tensor| -> Result<Tensor> {
        let t = saved
            .get(name)
            .ok_or_else(|| Error::Model(format!("the fine-tuned tensor `{name}` is missing")))?;
        Ok(t.reshape(like.dims())?)
    };
    for (name, t) in &unfolded {
        let conv = name
            .strip_suffix(".conv.weight")
            .filter(|p| by_name.contains_key(format!("{p}.bn.weight").as_str()));
        let bn = name
            .strip_suffix(".bn.weight")
            .filter(|p| by_name.contains_key(format!("{p}.conv.weight").as_str()));
        if let Some(p) = conv {
            if !alone(p) {
                out.insert(key_of(name, t)?, saved_as(&format!("{p}.weight"), t)?);
            }
        } else if let Some(p) = bn {
            let key = key_of(name, t)?;
            let prefix = key.strip_suffix(".weight").unwrap_or(&key);
            let shift = saved_as(&format!("{p}.bias"), t)?;
            let scale = if alone(p) {
                saved_as(&format!("{p}.weight"), t)?
            } else {
                shift.ones_like()?
            };
            out.insert(format!("{prefix}.weight"), scale);
            out.insert(format!("{prefix}.running_mean"), shift.zeros_like()?);
            out.insert(
                format!("{prefix}.running_var"),
                (shift.ones_like()? * (1.0 - eps))?,
            );
            out.insert(format!("{prefix}.bias"), shift);
        } else if !name.ends_with(".bn.bias") {
            out.insert(key_of(name, t)?, saved_as(name, t)?);
        }
    }
    Ok(out)
}

/// The head's tensors under `slot_key` as an `nn.Sequential` names them (`0` and `3` for the
/// dense head's two layers, `0` for the linear one).
fn head_names(slot_key: &str, head: &Head) -> Vec<(String, String, Tensor)> {
    head.named_tensors()
        .into_iter()
        .map(|(name, t)| {
            let index = if name.starts_with("head.dense.") {
                0
            } else {
                3
            };
            let index = if head.kind() == HeadKind::Linear {
                0
            } else {
                index
            };
            let suffix = name.rsplit('.').next().unwrap_or_default().to_string();
            (format!("{slot_key}.{index}.{suffix}"), name, t)
        })
        .collect()
}

fn state_dict(model: &Model, weights_file: &str) -> Result<StateDict> {
    let Some(base) = base_of(model)? else {
        return scratch_state_dict(model, weights_file);
    };
    let arch = base.architecture.as_str();
    let target = target(arch)?;
    if base.classes == 0 {
        return Err(Error::Model(format!(
            "{arch}: a feature-only checkpoint (no classifier) cannot be rebuilt with \
             torchvision/timm; export it to ONNX instead"
        )));
    }
    let expected = zoo::expected_tensors(arch, base.classes)
        .ok_or_else(|| Error::Model(format!("unknown architecture `{arch}`")))?;
    let native_slot = format!("{}.", target.native_slot_key);
    let mut tensors = Vec::new();
    let mut native = HashMap::new();
    for (name, _) in &expected {
        if base.head.is_some() && name.starts_with(&native_slot) {
            continue;
        }
        let torch = torch_name(arch, name)?;
        let t = match base.finetuned.get(name) {
            Some(t) => t.clone(),
            None => base.ckpt.get(name)?,
        };
        tensors.push((torch.clone(), t));
        native.insert(torch, name.clone());
    }
    if let Some(name) = base
        .finetuned
        .keys()
        .find(|n| !native.values().any(|v| v == *n))
    {
        return Err(Error::Model(format!(
            "the fine-tuned tensor `{name}` is not part of {arch}'s state dict"
        )));
    }
    let mut head_features = 0;
    if let Some((head, feature_layer)) = &base.head {
        if feature_layer != "pooled" {
            return Err(Error::Model(format!(
                "the head reads `{feature_layer}`, which has no torchvision/timm counterpart; \
                 export this model to ONNX instead"
            )));
        }
        for (torch, name, t) in head_names(target.slot_key, head) {
            if name == "head.dense.weight" || head.kind() == HeadKind::Linear {
                head_features = head_features.max(t.dim(1).unwrap_or(0));
            }
            tensors.push((torch.clone(), t));
            native.insert(torch, name);
        }
    }
    let timm_arch = arch.strip_suffix("_timm").unwrap_or(arch);
    let build = reduced_build(arch, &base.ckpt.shapes())
        .unwrap_or_else(|| target.build.to_string())
        .replace("{arch}", arch)
        .replace("{timm_arch}", timm_arch)
        .replace("{classes}", &base.classes.to_string());
    let mut body = format!("    model = {build}\n");
    if let Some((head, _)) = &base.head {
        let classes = head.classes();
        let module = match head.kind() {
            HeadKind::Dense => format!(
                "nn.Sequential(nn.Linear({head_features}, {hidden}), nn.ReLU(), \
                 nn.Dropout({dropout}), nn.Linear({hidden}, {classes}))",
                hidden = crate::train::head::HIDDEN,
                dropout = crate::train::head::DROPOUT,
            ),
            HeadKind::Linear => format!("nn.Sequential(nn.Linear({head_features}, {classes}))"),
        };
        body.push_str(&format!(
            "    # The classifier convlens trained, in place of the original one.\n    {} = {module}\n",
            target.slot
        ));
    }
    if let Some(eps) = target.bn_eps {
        body.push_str(&format!(
            "    for m in model.modules():\n        if isinstance(m, nn.BatchNorm2d):\n            \
             m.eps = {eps}  # the epsilon these weights were trained with\n"
        ));
    }
    let library = if build.starts_with("timm") {
        "timm"
    } else {
        "torchvision"
    };
    Ok(StateDict {
        tensors,
        native,
        script: script(model, weights_file, library, &body),
    })
}

/// The scratch convnet: the same tensor names, a small module defined in the script.
fn scratch_state_dict(model: &Model, weights_file: &str) -> Result<StateDict> {
    let Some((dir, _)) = &model.spec.trained else {
        return Err(Error::Model("not a trained model".into()));
    };
    let saved = crate::train::bundle::load_tensors(dir, &Device::Cpu)?;
    let size = model.spec.preprocess.input_size() as usize;
    let classes = model.spec.labels.len();
    let mut tensors = Vec::new();
    let mut native = HashMap::new();
    for (name, _) in small_convnet::tensor_shapes(size, classes)? {
        let t = saved.get(&name).cloned().ok_or_else(|| {
            Error::Model(format!("{}: tensor `{name}` is missing", dir.display()))
        })?;
        native.insert(name.clone(), name.clone());
        tensors.push((name, t));
    }
    let [c1, c2, c3, c4, c5] = small_convnet::CHANNELS;
    let flat = small_convnet::flat_features(size)?;
    let body = format!(
        "    class SmallConvnet(nn.Module):\n\
         \x20       \"\"\"convlens's convnet trained from scratch (3x3 valid convs + ReLU, 2x2 max pools).\"\"\"\n\
         \x20       def __init__(self):\n\
         \x20           super().__init__()\n\
         \x20           self.block1 = nn.Conv2d(3, {c1}, 3)\n\
         \x20           self.block2 = nn.Conv2d({c1}, {c2}, 3)\n\
         \x20           self.block3 = nn.Conv2d({c2}, {c3}, 3)\n\
         \x20           self.block4 = nn.Conv2d({c3}, {c4}, 3)\n\
         \x20           self.conv5 = nn.Conv2d({c4}, {c5}, 3)\n\
         \x20           self.dropout = nn.Dropout({dropout})\n\
         \x20           self.logits = nn.Linear({flat}, {classes})\n\
         \n\
         \x20       def forward(self, x):\n\
         \x20           for block in (self.block1, self.block2, self.block3, self.block4):\n\
         \x20               x = nn.functional.max_pool2d(torch.relu(block(x)), 2)\n\
         \x20           x = torch.relu(self.conv5(x)).flatten(1)\n\
         \x20           return self.logits(self.dropout(x))\n\
         \n\
         \x20   model = SmallConvnet()\n",
        dropout = small_convnet::DROPOUT,
    );
    Ok(StateDict {
        tensors,
        native,
        script: script(model, weights_file, "", &body),
    })
}

/// The loading script: `build_model()`, `load_model()`, and classifying an image given on the
/// command line.
fn script(model: &Model, weights_file: &str, library: &str, build_body: &str) -> String {
    let spec = &model.spec;
    let (resize, mean, std) = match &spec.preprocess {
        Preprocess::CenterCrop(t) => (
            format!(
                "    img = TF.resize(img, {}, interpolation=TF.InterpolationMode.BILINEAR, antialias=True)\n    img = TF.center_crop(img, {})\n",
                t.resize_shorter, t.crop
            ),
            t.mean,
            t.std,
        ),
        Preprocess::Resize(t) => (
            format!(
                "    img = TF.resize(img, [{0}, {0}], interpolation=TF.InterpolationMode.BILINEAR, antialias=True)\n",
                t.size
            ),
            t.mean,
            t.std,
        ),
    };
    let import = match library {
        "" => String::new(),
        lib => format!("    import {lib}\n"),
    };
    let classes = serde_json::to_string(&spec.labels).unwrap_or_default();
    format!(
        r#""""Rebuilds {name} ({arch}) in PyTorch and loads the weights convlens exported.

Written by convlens {version} beside {weights_file}. Needs torch, safetensors{and_lib};
`python {{this file}} IMAGE` prints the top-5 classes of an image.
"""
import json
import os
import sys

import torch
from torch import nn
from safetensors.torch import load_file

WEIGHTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "{weights_file}")
CLASSES = json.loads({classes:?})
MEAN, STD = {mean:?}, {std:?}


def build_model():
    """The module, with random weights."""
{import}{build_body}    return model


def load_model(path=WEIGHTS):
    """The module with the exported weights, in evaluation mode."""
    model = build_model()
    missing, unexpected = model.load_state_dict(load_file(path), strict=False)
    missing = [k for k in missing if not k.endswith("num_batches_tracked")]
    if missing or unexpected:
        raise RuntimeError(f"{{path}} does not fit: missing {{missing}}, unexpected {{unexpected}}")
    return model.eval()


def preprocess(path):
    """An image file as the model's input, [1, 3, H, W]."""
    from PIL import Image
    import torchvision.transforms.functional as TF
    img = Image.open(path).convert("RGB")
{resize}    return TF.normalize(TF.to_tensor(img), MEAN, STD).unsqueeze(0)


if __name__ == "__main__":
    model = load_model()
    for image in sys.argv[1:]:
        with torch.no_grad():
            probs = model(preprocess(image)).softmax(1)[0]
        top = probs.topk(min(5, len(CLASSES)))
        print(image, [(CLASSES[i], round(p, 4)) for p, i in zip(top.values.tolist(), top.indices.tolist())])
"#,
        name = spec.manifest.name,
        arch = spec.manifest.architecture,
        version = env!("CARGO_PKG_VERSION"),
        and_lib = if library.is_empty() {
            String::new()
        } else {
            format!(" and {library}")
        },
    )
}

/// Where the state dict and the script go: `out` when it ends in `.safetensors` (the script
/// beside it as `<stem>_load.py`), else the folder `out` with `<model>.safetensors`.
pub fn destinations(model: &Model, out: &Path) -> (PathBuf, PathBuf) {
    let weights = if out.extension().is_some_and(|e| e == "safetensors") {
        out.to_path_buf()
    } else {
        let stem = crate::export::naming::figure_stem(&[&model.spec.manifest.name]);
        out.join(format!("{stem}.safetensors"))
    };
    let stem = weights
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "model".into());
    let script = weights.with_file_name(format!("{stem}_load.py"));
    (weights, script)
}

/// Exports `model` as a state dict and loading script (see the module doc).
pub fn export(
    model: &Model,
    req: &ExportRequest,
    progress: ProgressFn,
    cancel: &CancelToken,
) -> Result<ExportReport> {
    let (weights, script_path) = destinations(model, &req.out);
    let inputs = super::model_inputs(model);
    check_destination(&weights, req.overwrite, &inputs)?;
    check_destination(&script_path, req.overwrite, &inputs)?;
    progress("collecting the tensors", 0, 3);
    let file_name = weights
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let dict = state_dict(model, &file_name)?;
    cancel.check()?;
    progress("writing", 1, 3);
    let pending = Pending::beside(&weights);
    let map: HashMap<String, Tensor> = dict
        .tensors
        .iter()
        .map(|(n, t)| Ok((n.clone(), t.to_device(&Device::Cpu)?.contiguous()?)))
        .collect::<Result<_>>()?;
    crate::fsutil::save_safetensors(&map, pending.path())?;
    let mut pending_script = Pending::write(&script_path, dict.script.as_bytes())?;
    cancel.check()?;
    progress("reading it back and running it on the bundled photos", 2, 3);
    let tensors = verify::verify_tensors(pending.path(), &dict.tensors)?;
    if !tensors.passed() {
        return Err(Error::Model(format!(
            "{}: verification failed, nothing was written: {}",
            weights.display(),
            tensors.summary()
        )));
    }
    let outputs = rebuild_and_compare(model, pending.path(), &dict.native)?;
    cancel.check()?;
    pending.commit_if(&outputs, req.overwrite)?;
    pending_script.commit(req.overwrite)?;
    progress("done", 3, 3);
    Ok(ExportReport {
        files: vec![weights, script_path],
        verification: outputs,
    })
}

/// Rebuilds a convlens network from the written state dict (names mapped back) and compares its
/// logits on the bundled photos with the model's.
fn rebuild_and_compare(
    model: &Model,
    path: &Path,
    native: &HashMap<String, String>,
) -> Result<Verification> {
    let written = candle_core::safetensors::load(path, &Device::Cpu)?;
    let mut tensors: HashMap<String, Tensor> = HashMap::new();
    for (torch, t) in written {
        let name = native.get(&torch).ok_or_else(|| {
            Error::Model(format!("{}: unexpected tensor `{torch}`", path.display()))
        })?;
        tensors.insert(name.clone(), t);
    }
    let network = match base_of(model)? {
        None => {
            let size = model.spec.preprocess.input_size() as usize;
            small_convnet::build(&tensors, size, model.spec.labels.len())?
        }
        Some(base) => {
            // The base's own classifier is not exported with a trained head; the loader needs
            // it, and the network is cut before it.
            if base.head.is_some() {
                let slot = format!("{}.", target(&base.architecture)?.native_slot_key);
                for (name, _) in
                    zoo::expected_tensors(&base.architecture, base.classes).unwrap_or_default()
                {
                    if name.starts_with(&slot) {
                        tensors.insert(name.clone(), base.ckpt.get(&name)?);
                    }
                }
            }
            // The head's tensors are not the base checkpoint's (whose own names may start with
            // `head.` too: timm's ConvNeXt).
            let head_names: std::collections::HashSet<String> = base
                .head
                .iter()
                .flat_map(|(head, _)| head.named_tensors().into_iter().map(|(n, _)| n))
                .collect();
            let base_tensors = tensors
                .iter()
                .filter(|(name, _)| !head_names.contains(*name))
                .map(|(name, t)| (name.clone(), t.clone()))
                .collect();
            let ckpt = Checkpoint::from_tensors(path, base_tensors, &Device::Cpu)?;
            let mut net = zoo::build_network(&base.architecture, &ckpt, base.classes)?;
            if let Some((head, feature_layer)) = &base.head {
                net.truncate_after(feature_layer)?;
                net.push(
                    "logits",
                    Box::new(Head::from_tensors(head.kind(), &tensors)?),
                );
            }
            net
        }
    };
    let x = verify::sample_batch(model)?;
    let expected = model
        .network
        .forward(&x.to_device(&model.device)?)?
        .to_device(&Device::Cpu)?;
    let found = network.forward(&x)?;
    verify::compare(
        &format!(
            "logits of the {} bundled photos through the state dict read back",
            x.dim(0)?
        ),
        &expected,
        &found,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lite_names_follow_timm_stages() {
        let n = |s: &str| torch_name("efficientnet_lite0", s).unwrap();
        assert_eq!(n("_conv_stem.weight"), "conv_stem.weight");
        assert_eq!(n("_bn0.running_var"), "bn1.running_var");
        // Block 0 is timm's depthwise-separable block.
        assert_eq!(
            n("_blocks.0._depthwise_conv.weight"),
            "blocks.0.0.conv_dw.weight"
        );
        assert_eq!(n("_blocks.0._bn2.bias"), "blocks.0.0.bn2.bias");
        // Lite0's stages hold 1, 2, 2, 3, 3, 4, 1 blocks.
        assert_eq!(
            n("_blocks.1._expand_conv.weight"),
            "blocks.1.0.conv_pw.weight"
        );
        assert_eq!(n("_blocks.2._bn1.weight"), "blocks.1.1.bn2.weight");
        assert_eq!(
            n("_blocks.3._project_conv.weight"),
            "blocks.2.0.conv_pwl.weight"
        );
        assert_eq!(
            n("_blocks.11._bn0.running_mean"),
            "blocks.5.0.bn1.running_mean"
        );
        assert_eq!(n("_blocks.15._bn2.weight"), "blocks.6.0.bn3.weight");
        assert_eq!(n("_conv_head.weight"), "conv_head.weight");
        assert_eq!(n("_bn1.weight"), "bn2.weight");
        assert_eq!(n("_fc.bias"), "classifier.bias");
        assert!(torch_name("efficientnet_lite0", "_blocks.99._bn0.weight").is_err());
        assert_eq!(
            torch_name("resnet18", "layer1.0.bn1.weight").unwrap(),
            "layer1.0.bn1.weight"
        );
    }
}
