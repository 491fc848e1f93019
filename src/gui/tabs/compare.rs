//! Looking through a second model beside the first: the "compare with" chooser and what the
//! tabs learn about the models they compare with (their layers), asked of the worker once.

use std::collections::{HashMap, HashSet};
use std::path::Path;

use super::slug;
use crate::gui::context::{AppContext, Command};
use crate::jobs::Request;
use crate::jobs::views::ModelInfo;

/// The models described by the worker for a tab, by key, and those asked for.
#[derive(Default)]
pub struct Described {
    known: HashMap<String, ModelInfo>,
    asked: HashSet<String>,
}

impl Described {
    /// Keeps a model's description.
    pub fn insert(&mut self, info: &ModelInfo) {
        self.known.insert(info.key.clone(), info.clone());
    }

    /// The layers with a spatial output of the model with `key`: the loaded model's are known,
    /// another's once described (`None`: not yet).
    pub fn spatial<'a>(&'a self, ctx: &AppContext<'a>, key: &str) -> Option<&'a [String]> {
        match ctx.model {
            Some(m) if m.key == key => Some(&m.spatial),
            _ => self.known.get(key).map(|m| m.spatial.as_slice()),
        }
    }

    /// The request that describes `key`, the first time it is asked for while its layers are
    /// not known (a tab drawing every frame asks once).
    pub fn ask(&mut self, ctx: &AppContext, key: &str) -> Option<Command> {
        let command = self.request(ctx, key)?;
        self.asked.insert(key.to_string()).then_some(command)
    }

    /// The request that describes `key`, when its layers are not known yet.
    pub fn request(&self, ctx: &AppContext, key: &str) -> Option<Command> {
        self.spatial(ctx, key).is_none().then(|| {
            Command::Submit(Request::Describe {
                key: key.to_string(),
            })
        })
    }
}

/// The key of the model compared with while it is still offered (`None`: comparison off).
pub fn compare_key(ctx: &AppContext, chosen: Option<&str>) -> Option<String> {
    let key = chosen?;
    ctx.model_choices()
        .iter()
        .any(|c| c.key == key)
        .then(|| key.to_string())
}

/// A combo box labelled "compare with": "off" or one of the models the tabs can look through.
/// Returns the new choice (`Some(None)`: turned off) when it changed.
pub fn compare_chooser(
    ui: &mut egui::Ui,
    id: &str,
    ctx: &AppContext,
    current: Option<&str>,
) -> Option<Option<String>> {
    let label = ui.label("compare with");
    let shown = current.map_or_else(|| "off".to_string(), |k| ctx.model_name(k));
    let mut picked = None;
    egui::ComboBox::from_id_salt(id)
        .selected_text(shown)
        .show_ui(ui, |ui| {
            if ui.selectable_label(current.is_none(), "off").clicked() {
                picked = Some(None);
            }
            for c in ctx.model_choices() {
                if ui
                    .selectable_label(current == Some(c.key.as_str()), &c.label)
                    .clicked()
                {
                    picked = Some(Some(c.key));
                }
            }
        })
        .response
        .labelled_by(label.id);
    picked.filter(|p| p.as_deref() != current)
}

/// A model's key made into a short, file-name-safe name (the last part of a path).
pub fn file_name_of(key: &str) -> String {
    let name = Path::new(key)
        .file_name()
        .map_or_else(|| key.to_string(), |n| n.to_string_lossy().into_owned());
    slug(&name)
}

/// The layer shown for a model with layers `own` when `layer` is selected: that layer when the
/// model has it, otherwise `chosen` (one of its own), otherwise the one a third of the way in.
/// The flag says whether the model's own layer replaced the selected one.
pub fn layer_for(layer: &str, own: &[String], chosen: Option<&str>) -> Option<(String, bool)> {
    if own.iter().any(|l| l == layer) {
        return Some((layer.to_string(), false));
    }
    let pick = chosen
        .filter(|c| own.iter().any(|l| l == c))
        .map(str::to_string)
        .or_else(|| own.get(own.len() / 3).cloned())?;
    Some((pick, true))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_layer_the_model_lacks_falls_back_to_one_of_its_own() {
        let own: Vec<String> = ["conv1", "conv2", "conv3"].map(String::from).to_vec();
        assert_eq!(
            layer_for("conv2", &own, None),
            Some(("conv2".into(), false))
        );
        assert_eq!(
            layer_for("blocks.4", &own, Some("conv3")),
            Some(("conv3".into(), true))
        );
        assert_eq!(
            layer_for("blocks.4", &own, Some("blocks.2")),
            Some(("conv2".into(), true)),
            "a choice that is not its own: a third of the way in"
        );
        assert_eq!(layer_for("blocks.4", &[], None), None);
    }

    #[test]
    fn file_names_of_keys_are_safe() {
        assert_eq!(
            file_name_of("/tmp/runs/2026-11-30 extract"),
            "2026_11_30_extract"
        );
        assert_eq!(file_name_of("mobilenet_v2"), "mobilenet_v2");
    }
}
