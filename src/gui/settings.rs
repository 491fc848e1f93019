//! What the app remembers across restarts (model, folder, tab, options), kept apart from the
//! runtime state and written atomically as JSON in the user's config folder.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

pub use super::tabs::activations::ActivationSettings;
pub use super::tabs::filters::FilterSettings;
pub use super::tabs::heatmap::HeatmapSettings;
pub use super::tabs::predict::PredictSettings;
use crate::data::augment::Augment;
use crate::device::DeviceChoice;
use crate::train::{HeadKind, Mode};

/// The tabs of the central area.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum Tab {
    /// The guided first view: data, train, look inside.
    #[default]
    Start,
    Model,
    Data,
    Train,
    Activations,
    Filters,
    Heatmap,
    Predict,
    /// The dataset map and suspect labels.
    Map,
}

impl Tab {
    /// Every tab, in display order.
    pub const ALL: [Tab; 9] = [
        Tab::Start,
        Tab::Model,
        Tab::Data,
        Tab::Train,
        Tab::Activations,
        Tab::Filters,
        Tab::Heatmap,
        Tab::Predict,
        Tab::Map,
    ];

    /// The tab's title.
    pub fn title(self) -> &'static str {
        match self {
            Tab::Start => "Start",
            Tab::Model => "Model",
            Tab::Data => "Data",
            Tab::Train => "Train",
            Tab::Activations => "Activations",
            Tab::Filters => "Filters",
            Tab::Heatmap => "Heatmap",
            Tab::Predict => "Predict",
            Tab::Map => "Map",
        }
    }

    /// The tab named `name` (case-insensitive).
    pub fn from_name(name: &str) -> Option<Tab> {
        Tab::ALL
            .into_iter()
            .find(|t| t.title().eq_ignore_ascii_case(name))
    }
}

/// Options of the Train tab.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct TrainForm {
    pub mode: Mode,
    pub epochs: usize,
    pub batch_size: usize,
    pub lr: f64,
    pub seed: u64,
    pub unfreeze: usize,
    pub finetune_epochs: usize,
    /// Fine-tuning trains BatchNorm's statistics, scale and shift.
    pub train_batchnorm: bool,
    pub head: HeadKind,
    pub augment: Augment,
    /// Where the trained model goes; empty: a new run folder in the workspace.
    pub out_dir: String,
}

impl Default for TrainForm {
    fn default() -> Self {
        TrainForm {
            mode: Mode::Extract,
            epochs: 10,
            batch_size: 32,
            lr: 1e-3,
            seed: 42,
            unfreeze: 2,
            finetune_epochs: 3,
            train_batchnorm: false,
            head: HeadKind::Dense,
            augment: Augment::default(),
            out_dir: String::new(),
        }
    }
}

impl TrainForm {
    /// The folder typed as `out_dir`, if any (`None`: a new run folder of the workspace). The fixed temporary folder earlier versions saved
    /// every run into counts as none, so old settings stop overwriting it.
    pub fn typed_out_dir(&self) -> Option<PathBuf> {
        let typed = self.out_dir.trim();
        let legacy = std::env::temp_dir().join("convlens-model");
        (!typed.is_empty() && Path::new(typed) != legacy).then(|| PathBuf::from(typed))
    }
}

/// Where and how big figures are exported.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ExportSettings {
    pub dir: String,
    /// Pixels per figure pixel (1 to 4).
    pub scale: u32,
}

impl Default for ExportSettings {
    fn default() -> Self {
        ExportSettings {
            dir: std::env::temp_dir()
                .join("convlens-figures")
                .to_string_lossy()
                .into_owned(),
            scale: 2,
        }
    }
}

/// Everything persisted: what the whole app shares, then each tab's own options.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Settings {
    pub model: String,
    pub data_dir: String,
    pub tab: Tab,
    /// The image the Activations and Heatmap tabs look at.
    pub image: String,
    /// The layer picked in the layer table (Activations and Filters show it).
    pub layer: Option<String>,
    pub device: DeviceChoice,
    pub activations: ActivationSettings,
    pub heatmap: HeatmapSettings,
    pub filters: FilterSettings,
    pub predict: PredictSettings,
    pub export: ExportSettings,
    pub train: TrainForm,
    /// The run selected in the Train tab's list (its folder name), reselected on start.
    pub run: Option<String>,
}

impl Default for Settings {
    fn default() -> Self {
        let assets = Path::new(env!("CARGO_MANIFEST_DIR")).join("assets");
        Settings {
            model: crate::zoo::DEFAULT_MODEL.into(),
            data_dir: assets
                .join("datasets/fashion-mini")
                .to_string_lossy()
                .into_owned(),
            tab: Tab::Start,
            image: assets
                .join("images/chelsea.png")
                .to_string_lossy()
                .into_owned(),
            layer: Some("blocks.2".into()),
            device: DeviceChoice::Cpu,
            activations: ActivationSettings::default(),
            heatmap: HeatmapSettings::default(),
            filters: FilterSettings::default(),
            predict: PredictSettings::default(),
            export: ExportSettings::default(),
            train: TrainForm::default(),
            run: None,
        }
    }
}

impl Settings {
    /// `settings.json` in the config folder of [`crate::workspace::paths`]; `None` when there
    /// is none (no home folder and no `CONVLENS_CONFIG`).
    pub fn default_path() -> Option<PathBuf> {
        crate::workspace::paths::config_dir()
            .ok()
            .map(|dir| dir.join("settings.json"))
    }

    /// The saved settings, or the defaults when there are none (or they do not parse).
    pub fn load(path: Option<&Path>) -> Settings {
        path.and_then(|p| std::fs::read_to_string(p).ok())
            .and_then(|text| serde_json::from_str(&text).ok())
            .unwrap_or_default()
    }

    /// Checks what the last session left against the disk: an image that is gone is replaced
    /// by the bundled one, a model file or folder that is gone by the bundled model (unless
    /// `keep_model`: the model was asked for on the command line), and a data folder that is
    /// gone is kept (its scan says why it fails) but explained. Returns a note for each.
    pub fn check_restored(&mut self, keep_model: bool) -> Vec<String> {
        let defaults = Settings::default();
        let mut notes = Vec::new();
        if !Path::new(self.image.trim()).is_file() {
            notes.push(format!(
                "the last session's image {} is gone; showing {}",
                self.image, defaults.image
            ));
            self.image = defaults.image;
        }
        let model = self.model.trim();
        let is_path = model.contains(['/', '\\']) && crate::zoo::hub::parse(model).is_none();
        if !keep_model && is_path && !Path::new(model).exists() {
            notes.push(format!(
                "the last session's model {model} is gone; opening {}",
                defaults.model
            ));
            self.model = defaults.model;
        }
        if !Path::new(self.data_dir.trim()).is_dir() {
            notes.push(format!(
                "the last session's data folder {} is gone: choose another in the left panel, \
                 or use the bundled dataset (Data tab)",
                self.data_dir
            ));
        }
        notes
    }

    /// Saves atomically; failures are ignored (settings are a convenience).
    pub fn save(&self, path: &Path) {
        if let Ok(text) = serde_json::to_string_pretty(self) {
            let _ = crate::fsutil::write_atomic(path, text.as_bytes());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_survives_garbage() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.json");
        let mut s = Settings {
            tab: Tab::Heatmap,
            ..Settings::default()
        };
        s.heatmap.alpha = 0.7;
        s.save(&path);
        assert_eq!(Settings::load(Some(&path)), s);
        std::fs::write(&path, "{not json").unwrap();
        assert_eq!(Settings::load(Some(&path)), Settings::default());
        assert_eq!(Tab::from_name("heatmap"), Some(Tab::Heatmap));
    }

    #[test]
    fn restored_paths_that_are_gone_fall_back_with_a_note() {
        let defaults = Settings::default();
        let mut s = Settings {
            image: "/no/such.png".into(),
            model: "/no/such/model.safetensors".into(),
            data_dir: "/no/such/folder".into(),
            ..Settings::default()
        };
        let notes = s.check_restored(false);
        assert_eq!(notes.len(), 3, "{notes:?}");
        assert!(notes[0].contains("/no/such.png"), "{}", notes[0]);
        assert_eq!(s.image, defaults.image);
        assert_eq!(s.model, defaults.model);
        assert_eq!(s.data_dir, "/no/such/folder", "kept: its scan says why");
        // A model asked for on the command line is left to its own error.
        let mut s = Settings {
            model: "/no/such/model.safetensors".into(),
            ..Settings::default()
        };
        assert!(s.check_restored(true).is_empty());
        assert_eq!(s.model, "/no/such/model.safetensors");
        assert!(Settings::default().check_restored(false).is_empty());
    }

    #[test]
    fn training_saves_into_a_new_run_unless_a_folder_is_typed() {
        let mut form = TrainForm::default();
        assert_eq!(form.typed_out_dir(), None);
        form.out_dir = std::env::temp_dir()
            .join("convlens-model")
            .to_string_lossy()
            .into_owned();
        assert_eq!(form.typed_out_dir(), None, "the old fixed default");
        form.out_dir = " my-model ".into();
        assert_eq!(form.typed_out_dir(), Some(PathBuf::from("my-model")));
    }
}
