//! The app's state and its frame: left panel (model, data, device), tabs in the centre, a status
//! bar with progress and Cancel at the bottom. Heavy work goes to the worker thread.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use image::RgbImage;

use super::jobs::{self, ActivationView, CamView, ModelInfo, Msg, TrainOutcome};
use super::settings::{Settings, Tab};
use super::widgets;
use crate::data::folder::ImageFolder;
use crate::jobs::Worker;
use crate::train::{EpochMetrics, TrainEvent};
use crate::viz::activations::LayerSparsity;

/// How the app starts.
#[derive(Clone, Debug, Default)]
pub struct AppOptions {
    /// The model to open (a name in `models/`, a manifest, a weights file or a model folder).
    pub model: Option<String>,
    /// Where settings persist; `None` keeps them in memory only (tests).
    pub settings_path: Option<PathBuf>,
    /// The tab to open on.
    pub tab: Option<Tab>,
}

/// Progress of the running job, for the status bar.
#[derive(Clone, Debug, Default)]
pub(super) struct Status {
    pub what: String,
    pub done: usize,
    pub total: usize,
    /// The last error, shown until dismissed.
    pub error: Option<String>,
    /// The last notice (e.g. where a figure was written).
    pub note: Option<String>,
}

/// A thumbnail decoded off the UI thread, waiting to become a texture.
type PendingThumbs = Arc<Mutex<Vec<(PathBuf, Option<RgbImage>)>>>;

/// The app.
pub struct ConvlensApp {
    pub(super) settings: Settings,
    settings_path: Option<PathBuf>,
    saved_settings: Settings,
    pub(super) worker: Worker<Msg>,
    pub(super) ctx: Option<egui::Context>,
    pub(super) status: Status,
    pub(super) model: Option<ModelInfo>,
    pub(super) data: Option<ImageFolder>,
    pub(super) thumbs: HashMap<PathBuf, egui::TextureHandle>,
    pub(super) thumbs_requested: HashSet<PathBuf>,
    pub(super) thumbs_pending: PendingThumbs,
    pub(super) previews: Vec<egui::TextureHandle>,
    pub(super) pending_previews: Option<Vec<RgbImage>>,
    pub(super) history: Vec<EpochMetrics>,
    pub(super) training: bool,
    pub(super) outcome: Option<TrainOutcome>,
    pub(super) selected_cell: Option<(usize, usize)>,
    pub(super) trained_model: Option<String>,
    pub(super) activations: Option<ActivationView>,
    pub(super) pending_activations: bool,
    pub(super) enlarged_channel: Option<usize>,
    pub(super) sparsity: Vec<LayerSparsity>,
    pub(super) filter_tiles: Vec<Option<RgbImage>>,
    pub(super) filters_running: bool,
    pub(super) cam: Option<CamView>,
    pub(super) trained_cam: Option<CamView>,
    pub(super) cam_class: Option<usize>,
    pub(super) class_search: String,
    pub(super) predictions: Vec<jobs::PredictionRow>,
    pub(super) predict_input: String,
    /// Textures by name, rebuilt when their image changes.
    pub(super) textures: HashMap<String, egui::TextureHandle>,
    /// Frames drawn (tests check that the window keeps painting during training).
    pub frames: u64,
    requested_startup: bool,
}

impl ConvlensApp {
    /// Starts the worker; `repaint` is called whenever it has news.
    pub fn new(options: AppOptions, repaint: impl Fn() + Send + Sync + 'static) -> Self {
        let mut settings = Settings::load(options.settings_path.as_deref());
        if let Some(model) = options.model {
            settings.model = model;
        }
        if let Some(tab) = options.tab {
            settings.tab = tab;
        }
        ConvlensApp {
            saved_settings: settings.clone(),
            settings,
            settings_path: options.settings_path,
            worker: Worker::spawn(candle_core::Device::Cpu, repaint),
            ctx: None,
            status: Status::default(),
            model: None,
            data: None,
            thumbs: HashMap::new(),
            thumbs_requested: HashSet::new(),
            thumbs_pending: PendingThumbs::default(),
            previews: Vec::new(),
            pending_previews: None,
            history: Vec::new(),
            training: false,
            outcome: None,
            selected_cell: None,
            trained_model: None,
            activations: None,
            pending_activations: false,
            enlarged_channel: None,
            sparsity: Vec::new(),
            filter_tiles: Vec::new(),
            filters_running: false,
            cam: None,
            trained_cam: None,
            cam_class: None,
            class_search: String::new(),
            predictions: Vec::new(),
            predict_input: String::new(),
            textures: HashMap::new(),
            frames: 0,
            requested_startup: false,
        }
    }

    /// The current tab.
    pub fn tab(&self) -> Tab {
        self.settings.tab
    }

    /// The loaded model's description, once loaded.
    pub fn model_info(&self) -> Option<&ModelInfo> {
        self.model.as_ref()
    }

    /// The layer picked in the layer table (and used by the visualisation tabs).
    pub fn selected_layer(&self) -> Option<&str> {
        self.settings.layer.as_deref()
    }

    /// The epochs trained so far in this session's last run.
    pub fn history(&self) -> &[EpochMetrics] {
        &self.history
    }

    /// The last finished training run.
    pub fn train_outcome(&self) -> Option<&TrainOutcome> {
        self.outcome.as_ref()
    }

    /// The current activation grid.
    pub fn activation_view(&self) -> Option<&ActivationView> {
        self.activations.as_ref()
    }

    /// The current class-activation map.
    pub fn cam_view(&self) -> Option<&CamView> {
        self.cam.as_ref()
    }

    /// Filter tiles finished and asked for.
    pub fn filter_progress(&self) -> (usize, usize) {
        let done = self.filter_tiles.iter().filter(|t| t.is_some()).count();
        (done, self.filter_tiles.len())
    }

    /// The last error shown in the status bar.
    pub fn last_error(&self) -> Option<&str> {
        self.status.error.as_deref()
    }

    /// The last notice shown in the status bar.
    pub fn last_note(&self) -> Option<&str> {
        self.status.note.as_deref()
    }

    /// Whether the worker is running a job.
    pub fn busy(&self) -> bool {
        self.worker.busy()
    }

    /// The settings (for tests and persistence).
    pub fn settings_mut(&mut self) -> &mut Settings {
        &mut self.settings
    }

    /// Queues a job, reporting a full queue in the status bar.
    pub(super) fn submit(
        &mut self,
        what: &str,
        job: impl FnOnce(&mut crate::jobs::Engine, &crate::jobs::JobContext<Msg>) + Send + 'static,
    ) {
        self.status.what = what.to_string();
        self.status.done = 0;
        self.status.total = 0;
        if let Err(e) = self.worker.submit(job) {
            self.status.error = Some(e.to_string());
        }
    }

    /// Loads the model named in the settings.
    pub(super) fn load_model(&mut self) {
        self.model = None;
        self.activations = None;
        self.cam = None;
        self.filter_tiles.clear();
        let key = self.settings.model.clone();
        self.submit(&format!("loading {key}"), jobs::model_job(key));
    }

    /// Scans the data folder named in the settings.
    pub(super) fn load_data(&mut self) {
        self.data = None;
        let dir = PathBuf::from(&self.settings.data_dir);
        self.submit("scanning the folder", jobs::data_job(dir));
    }

    fn handle(&mut self, msg: Msg) {
        match msg {
            Msg::Model(Ok(info)) => {
                let layer_ok = self
                    .settings
                    .layer
                    .as_ref()
                    .is_some_and(|l| info.spatial.contains(l));
                if !layer_ok {
                    self.settings.layer = info.spatial.get(info.spatial.len() / 3).cloned();
                }
                if self
                    .settings
                    .cam_layer
                    .as_ref()
                    .is_some_and(|l| !info.spatial.contains(l))
                {
                    self.settings.cam_layer = None;
                }
                if self.history.is_empty() && !self.training {
                    self.history = info.history.clone();
                }
                self.model = Some(info);
                self.request_activations();
                self.request_cam();
            }
            Msg::Model(Err(e)) => self.status.error = Some(e),
            Msg::Data(Ok(folder)) => {
                self.thumbs.clear();
                self.thumbs_requested.clear();
                self.data = Some(folder);
            }
            Msg::Data(Err(e)) => self.status.error = Some(e),
            Msg::Progress { what, done, total } => {
                self.status.what = what;
                self.status.done = done;
                self.status.total = total;
            }
            Msg::Activations(r) => {
                self.pending_activations = false;
                match r {
                    Ok(view) => {
                        self.textures.remove("activations");
                        self.enlarged_channel = None;
                        self.activations = Some(view);
                    }
                    Err(e) => self.status.error = Some(e),
                }
            }
            Msg::Sparsity(Ok(s)) => self.sparsity = s,
            Msg::Sparsity(Err(e)) => self.status.error = Some(e),
            Msg::Cam(Ok(view)) => {
                let trained = self.trained_model.as_deref() == Some(view.model.as_str())
                    && view.model != self.settings.model;
                let prefix = if trained { "trained-cam" } else { "cam" };
                for part in ["original", "heatmap", "overlay"] {
                    self.textures.remove(&format!("{prefix}-{part}"));
                }
                if trained {
                    self.trained_cam = Some(view);
                } else {
                    self.cam = Some(view);
                }
            }
            Msg::Cam(Err(e)) => self.status.error = Some(e),
            Msg::Predictions(p) => self.predictions = p,
            Msg::Train(event) => match event {
                TrainEvent::Epoch(m) => self.history.push(m),
                TrainEvent::Progress { what, done, total } => {
                    self.status.what = what;
                    self.status.done = done;
                    self.status.total = total;
                }
                TrainEvent::Phase { name, .. } => self.status.what = name,
                TrainEvent::Warning(w) => self.status.note = Some(w),
            },
            Msg::TrainDone(r) => {
                self.training = false;
                match r {
                    Ok(outcome) => {
                        self.trained_model =
                            Some(outcome.report.out_dir.to_string_lossy().into_owned());
                        self.status.note = Some(format!(
                            "saved {} (validation accuracy {:.3})",
                            outcome.report.out_dir.display(),
                            outcome.evaluation.accuracy
                        ));
                        self.outcome = Some(outcome);
                    }
                    Err(e) => self.status.error = Some(e),
                }
            }
            Msg::FilterTile { index, image } => {
                if index < self.filter_tiles.len() {
                    self.textures.remove(&format!("filter-{index}"));
                    self.filter_tiles[index] = Some(image);
                }
            }
            Msg::FiltersDone(r) => {
                self.filters_running = false;
                if let Err(e) = r {
                    self.status.error = Some(e);
                }
            }
            Msg::Augmented(Ok(images)) => self.pending_previews = Some(images),
            Msg::Augmented(Err(e)) => self.status.error = Some(e),
            Msg::Exported(Ok(paths)) => {
                self.status.note = Some(format!(
                    "exported {}",
                    paths
                        .iter()
                        .map(|p| p.display().to_string())
                        .collect::<Vec<_>>()
                        .join(", ")
                ))
            }
            Msg::Exported(Err(e)) => self.status.error = Some(e),
        }
    }

    /// A texture for `name`, made from `img` the first time.
    pub(super) fn tex(
        &mut self,
        ctx: &egui::Context,
        name: &str,
        img: &RgbImage,
        smooth: bool,
    ) -> egui::TextureHandle {
        self.textures
            .entry(name.to_string())
            .or_insert_with(|| {
                if smooth {
                    widgets::photo_texture(ctx, name, img)
                } else {
                    widgets::texture(ctx, name, img)
                }
            })
            .clone()
    }

    /// Draws one frame into `ui` (the whole window).
    pub fn draw(&mut self, ui: &mut egui::Ui) {
        self.frames += 1;
        let ctx = ui.ctx().clone();
        self.ctx = Some(ctx.clone());
        if !self.requested_startup {
            self.requested_startup = true;
            self.load_model();
            self.load_data();
        }
        for msg in self.worker.drain() {
            self.handle(msg);
        }
        self.absorb_thumbnails(&ctx);
        self.absorb_dropped_files(&ctx);

        egui::Panel::bottom("status").show(ui, |ui| self.status_bar(ui));
        egui::Panel::left("sources")
            .default_size(250.0)
            .resizable(true)
            .show(ui, |ui| {
                egui::ScrollArea::vertical().show(ui, |ui| self.left_panel(ui));
            });
        egui::CentralPanel::default().show(ui, |ui| {
            ui.horizontal(|ui| {
                for tab in Tab::ALL {
                    ui.selectable_value(&mut self.settings.tab, tab, tab.title());
                }
            });
            ui.separator();
            match self.settings.tab {
                Tab::Model => self.model_tab(ui),
                Tab::Data => self.data_tab(ui),
                Tab::Train => self.train_tab(ui),
                Tab::Activations => self.activations_tab(ui),
                Tab::Filters => self.filters_tab(ui),
                Tab::Heatmap => self.heatmap_tab(ui),
                Tab::Predict => self.predict_tab(ui),
            }
        });
        if self.training || self.worker.busy() {
            ctx.request_repaint_after(std::time::Duration::from_millis(100));
        }
        self.persist();
    }

    fn persist(&mut self) {
        if self.settings != self.saved_settings {
            if let Some(path) = &self.settings_path {
                self.settings.save(path);
            }
            self.saved_settings = self.settings.clone();
        }
    }

    fn absorb_thumbnails(&mut self, ctx: &egui::Context) {
        let ready: Vec<(PathBuf, Option<RgbImage>)> =
            std::mem::take(&mut *self.thumbs_pending.lock().expect("not poisoned"));
        for (path, img) in ready {
            let img = img.unwrap_or_else(|| RgbImage::from_pixel(8, 8, image::Rgb([90, 30, 30])));
            let tex = widgets::photo_texture(ctx, &path.to_string_lossy(), &img);
            self.thumbs.insert(path, tex);
        }
        if let Some(images) = self.pending_previews.take() {
            self.previews = images
                .iter()
                .enumerate()
                .map(|(i, img)| widgets::photo_texture(ctx, &format!("preview-{i}"), img))
                .collect();
        }
    }

    /// Image files dropped on the window: the first becomes the image of the visual tabs, all
    /// go to the Predict tab.
    fn absorb_dropped_files(&mut self, ctx: &egui::Context) {
        let dropped: Vec<PathBuf> = ctx.input(|i| {
            i.raw
                .dropped_files
                .iter()
                .map(|f| f.path().to_path_buf())
                .filter(|p| !p.as_os_str().is_empty())
                .collect()
        });
        if dropped.is_empty() {
            return;
        }
        if self.settings.tab == Tab::Predict {
            self.predict_input = dropped
                .iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join("\n");
            self.request_predictions();
        } else {
            self.set_image(dropped[0].clone());
        }
    }

    /// Makes `path` the image of the Activations and Heatmap tabs and recomputes them.
    pub(super) fn set_image(&mut self, path: PathBuf) {
        self.settings.image = path.to_string_lossy().into_owned();
        self.cam_class = None;
        self.request_activations();
        self.request_cam();
    }

    /// Decodes thumbnails on a background thread (no candle there), a few at a time.
    pub(super) fn request_thumbnails(&mut self, paths: Vec<PathBuf>) {
        let wanted: Vec<PathBuf> = paths
            .into_iter()
            .filter(|p| self.thumbs_requested.insert(p.clone()))
            .collect();
        if wanted.is_empty() {
            return;
        }
        let pending = self.thumbs_pending.clone();
        let ctx = self.ctx.clone();
        std::thread::Builder::new()
            .name("convlens-thumbnails".into())
            .spawn(move || {
                for p in wanted {
                    let thumb = jobs::thumbnail(&p, 96);
                    pending.lock().expect("not poisoned").push((p, thumb));
                    if let Some(ctx) = &ctx {
                        ctx.request_repaint();
                    }
                }
            })
            .expect("spawn a thumbnail thread");
    }

    fn status_bar(&mut self, ui: &mut egui::Ui) {
        ui.horizontal(|ui| {
            let busy = self.worker.busy() || self.training || self.filters_running;
            if busy {
                ui.spinner();
                let frac = if self.status.total > 0 {
                    self.status.done as f32 / self.status.total as f32
                } else {
                    0.0
                };
                ui.add(egui::ProgressBar::new(frac).desired_width(220.0).text(
                    if self.status.total > 0 {
                        format!(
                            "{} {}/{}",
                            self.status.what, self.status.done, self.status.total
                        )
                    } else {
                        self.status.what.clone()
                    },
                ));
                if ui.button("Cancel").clicked() {
                    self.worker.cancel_current();
                }
            } else {
                ui.label("ready");
            }
            ui.separator();
            if let Some(e) = self.status.error.clone() {
                widgets::error_line(ui, &e);
                if ui.small_button("dismiss").clicked() {
                    self.status.error = None;
                }
            } else if let Some(n) = &self.status.note {
                ui.label(n);
            }
        });
    }

    fn left_panel(&mut self, ui: &mut egui::Ui) {
        let title = widgets::section(ui, "Model");
        let mut reload = false;
        ui.horizontal(|ui| {
            let r = ui
                .add(egui::TextEdit::singleline(&mut self.settings.model).desired_width(150.0))
                .labelled_by(title.id);
            reload |= r.lost_focus() && ui.input(|i| i.key_pressed(egui::Key::Enter));
            if ui
                .button("Open…")
                .on_hover_text("a weights file, manifest or model folder")
                .clicked()
                && let Some(p) = rfd::FileDialog::new().pick_file()
            {
                self.settings.model = p.to_string_lossy().into_owned();
                reload = true;
            }
        });
        let available = crate::zoo::available_models(&crate::zoo::models_dir());
        ui.horizontal_wrapped(|ui| {
            for name in available {
                if ui.small_button(&name).clicked() {
                    self.settings.model = name;
                    reload = true;
                }
            }
            if ui.button("Load").clicked() {
                reload = true;
            }
        });
        if reload {
            self.load_model();
        }
        match &self.model {
            Some(m) => {
                ui.label(&m.title);
            }
            None => {
                ui.label("(loading…)");
            }
        }

        let title = widgets::section(ui, "Data");
        let mut rescan = false;
        ui.horizontal(|ui| {
            let r = ui
                .add(egui::TextEdit::singleline(&mut self.settings.data_dir).desired_width(150.0))
                .labelled_by(title.id);
            rescan |= r.lost_focus() && ui.input(|i| i.key_pressed(egui::Key::Enter));
            if ui.button("Folder…").clicked()
                && let Some(p) = rfd::FileDialog::new().pick_folder()
            {
                self.settings.data_dir = p.to_string_lossy().into_owned();
                rescan = true;
            }
        });
        if ui.button("Scan").clicked() {
            rescan = true;
        }
        if rescan {
            self.load_data();
        }
        if let Some(d) = &self.data {
            ui.label(format!(
                "{} classes, {} / {} / {} images",
                d.classes.len(),
                d.splits.train.len(),
                d.splits.validation.len(),
                d.splits.test.len()
            ));
        }

        let title = widgets::section(ui, "Image");
        let mut reimage = false;
        ui.horizontal(|ui| {
            let r = ui
                .add(egui::TextEdit::singleline(&mut self.settings.image).desired_width(150.0))
                .labelled_by(title.id);
            reimage |= r.lost_focus() && ui.input(|i| i.key_pressed(egui::Key::Enter));
            if ui.button("Open…").clicked()
                && let Some(p) = rfd::FileDialog::new().pick_file()
            {
                self.settings.image = p.to_string_lossy().into_owned();
                reimage = true;
            }
        });
        let samples = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("assets/images");
        ui.horizontal_wrapped(|ui| {
            for name in ["chelsea.png", "coffee.png", "astronaut.png", "rocket.jpg"] {
                if ui.small_button(name).clicked() {
                    self.settings.image = samples.join(name).to_string_lossy().into_owned();
                    reimage = true;
                }
            }
        });
        if reimage {
            self.set_image(PathBuf::from(self.settings.image.clone()));
        }
        ui.label(egui::RichText::new("or drop an image on the window").weak());

        widgets::section(ui, "Device");
        ui.label(if cfg!(feature = "cuda") {
            "CPU (CUDA compiled in)"
        } else if cfg!(feature = "metal") {
            "CPU (Metal compiled in)"
        } else {
            "CPU"
        });
    }
}

impl eframe::App for ConvlensApp {
    fn ui(&mut self, ui: &mut egui::Ui, _frame: &mut eframe::Frame) {
        self.draw(ui);
    }
}
