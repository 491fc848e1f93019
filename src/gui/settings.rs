//! What the app remembers across restarts (model, folder, tab, options), kept apart from the
//! runtime state and written atomically as JSON in the user's config folder.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::data::augment::Augment;
use crate::train::{HeadKind, Mode};
use crate::viz::cam::CamMethod;
use crate::viz::colormap::Colormap;
use crate::viz::filters::FilterMethod;

/// The tabs of the central area.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum Tab {
    #[default]
    Model,
    Data,
    Train,
    Activations,
    Filters,
    Heatmap,
    Predict,
}

impl Tab {
    /// Every tab, in display order.
    pub const ALL: [Tab; 7] = [
        Tab::Model,
        Tab::Data,
        Tab::Train,
        Tab::Activations,
        Tab::Filters,
        Tab::Heatmap,
        Tab::Predict,
    ];

    /// The tab's title.
    pub fn title(self) -> &'static str {
        match self {
            Tab::Model => "Model",
            Tab::Data => "Data",
            Tab::Train => "Train",
            Tab::Activations => "Activations",
            Tab::Filters => "Filters",
            Tab::Heatmap => "Heatmap",
            Tab::Predict => "Predict",
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
    /// The folder the next training saves into: `out_dir` when one is typed, else a new run
    /// folder of the workspace for `data_dir` (made now).
    pub fn destination(&self, data_dir: &Path) -> crate::Result<PathBuf> {
        match self.typed_out_dir() {
            Some(dir) => Ok(dir),
            None => crate::workspace::Workspace::open_default()?.create_run(self.mode, data_dir),
        }
    }

    /// The folder typed as `out_dir`, if any. The fixed temporary folder earlier versions saved
    /// every run into counts as none, so old settings stop overwriting it.
    fn typed_out_dir(&self) -> Option<PathBuf> {
        let typed = self.out_dir.trim();
        let legacy = std::env::temp_dir().join("convlens-model");
        (!typed.is_empty() && Path::new(typed) != legacy).then(|| PathBuf::from(typed))
    }
}

/// Everything persisted.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Settings {
    pub model: String,
    pub data_dir: String,
    pub tab: Tab,
    /// The image the Activations and Heatmap tabs look at.
    pub image: String,
    pub layer: Option<String>,
    pub cols: usize,
    pub colormap: Colormap,
    pub shared_scale: bool,
    pub cam_method: CamMethod,
    pub cam_layer: Option<String>,
    pub cam_colormap: Colormap,
    pub alpha: f32,
    pub filter_first: usize,
    pub filter_count: usize,
    pub filter_method: FilterMethod,
    pub filter_steps: usize,
    pub filter_size: usize,
    pub filter_seed: u64,
    pub export_scale: u32,
    pub export_dir: String,
    pub train: TrainForm,
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
            tab: Tab::Activations,
            image: assets
                .join("images/chelsea.png")
                .to_string_lossy()
                .into_owned(),
            layer: Some("blocks.2".into()),
            cols: 16,
            colormap: Colormap::Viridis,
            shared_scale: false,
            cam_method: CamMethod::GradCam,
            cam_layer: None,
            cam_colormap: Colormap::Jet,
            alpha: 0.4,
            filter_first: 0,
            filter_count: 16,
            filter_method: FilterMethod::Chollet,
            filter_steps: 30,
            filter_size: 128,
            filter_seed: 0,
            export_scale: 2,
            export_dir: std::env::temp_dir()
                .join("convlens-figures")
                .to_string_lossy()
                .into_owned(),
            train: TrainForm::default(),
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
        let s = Settings {
            tab: Tab::Heatmap,
            alpha: 0.7,
            ..Settings::default()
        };
        s.save(&path);
        assert_eq!(Settings::load(Some(&path)), s);
        std::fs::write(&path, "{not json").unwrap();
        assert_eq!(Settings::load(Some(&path)), Settings::default());
        assert_eq!(Tab::from_name("heatmap"), Some(Tab::Heatmap));
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
