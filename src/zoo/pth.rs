//! PyTorch checkpoints (`torch.save` zip archives, `.pth` / `.pt` / `.bin`), read through
//! candle's pickle reader: the state dict at the top level or nested under one of
//! [`STATE_DICT_KEYS`] (a training checkpoint's `{"state_dict": ..., "epoch": ...}`).

use std::path::Path;

use candle_core::Tensor;
use candle_core::pickle::PthTensors;

use crate::{Error, Result};

/// Keys under which training scripts nest the state dict, tried in this order when the top
/// level holds no tensors.
pub const STATE_DICT_KEYS: [&str; 4] = ["state_dict", "model", "model_state_dict", "module"];

/// A PyTorch zip checkpoint with its state dict located (no tensor data read yet).
pub struct PthFile {
    tensors: PthTensors,
    /// The key the state dict was found under (`None`: the top level).
    pub key: Option<&'static str>,
}

impl PthFile {
    /// Opens the archive and finds the state dict. Errors name the file: not a zip archive
    /// (e.g. a legacy pre-1.6 `torch.save` file), or no tensors at the top level nor under
    /// [`STATE_DICT_KEYS`].
    pub fn open(path: &Path) -> Result<Self> {
        let bad = |why: String| {
            Error::Model(format!(
                "{}: not a readable PyTorch checkpoint ({why})",
                path.display()
            ))
        };
        let top = PthTensors::new(path, None).map_err(|e| bad(e.to_string()))?;
        if !top.tensor_infos().is_empty() {
            return Ok(PthFile {
                tensors: top,
                key: None,
            });
        }
        for key in STATE_DICT_KEYS {
            // A missing key is an error from candle: try the next one.
            match PthTensors::new(path, Some(key)) {
                Ok(t) if !t.tensor_infos().is_empty() => {
                    return Ok(PthFile {
                        tensors: t,
                        key: Some(key),
                    });
                }
                _ => {}
            }
        }
        Err(bad(format!(
            "no tensors at the top level nor under {}",
            STATE_DICT_KEYS.map(|k| format!("`{k}`")).join(", ")
        )))
    }

    /// Every tensor's name and shape, from the pickled metadata only.
    pub fn shapes(&self) -> Vec<(String, Vec<usize>)> {
        self.tensors
            .tensor_infos()
            .iter()
            .map(|(name, info)| (name.clone(), info.layout.dims().to_vec()))
            .collect()
    }

    /// Reads every tensor in its stored dtype, on the CPU. Errors name the file and tensor.
    pub fn load(&self, path: &Path) -> Result<Vec<(String, Tensor)>> {
        let mut names: Vec<&String> = self.tensors.tensor_infos().keys().collect();
        names.sort();
        names
            .into_iter()
            .map(|name| {
                let t = self
                    .tensors
                    .get(name)
                    .map_err(|e| Error::Model(format!("{}: tensor `{name}`: {e}", path.display())))?
                    .ok_or_else(|| {
                        Error::Model(format!("{}: tensor `{name}` vanished", path.display()))
                    })?;
                Ok((name.clone(), t))
            })
            .collect()
    }
}
