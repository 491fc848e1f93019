//! The app: its state and its frame. Each frame first takes in the worker's events
//! ([`ConvlensApp::handle_events`]), then draws the left panel, the tab bar, the current tab
//! and the status bar, collecting the [`Command`]s they return, and applies those at the end
//! ([`ConvlensApp::apply`]). Heavy work goes to the worker thread.

use std::path::{Path, PathBuf};

use super::board::JobBoard;
use super::context::{AppContext, Command, Commands};
use super::log::{Level, MessageLog};
use super::settings::{Settings, Tab};
use super::tabs::{self, Tabs};
use super::thumbs::Thumbnails;
use crate::data::folder::ImageFolder;
use crate::device::DeviceChoice;
use crate::jobs::Worker;
use crate::jobs::views::{ActivationView, CamView, ModelInfo, TrainOutcome};
use crate::train::EpochMetrics;
use crate::workspace::{History, RunSummary, Workspace};

/// How the app starts.
#[derive(Clone, Debug, Default)]
pub struct AppOptions {
    /// The model to open (a name in `models/`, a manifest, a weights file or a model folder).
    pub model: Option<String>,
    /// Where settings persist; `None` keeps them in memory only (tests).
    pub settings_path: Option<PathBuf>,
    /// The tab to open on.
    pub tab: Option<Tab>,
    /// The folder of training runs; `None`: the user's (`runs/` in the data folder).
    pub workspace: Option<PathBuf>,
    /// Once the model and data have loaded, start the tab's main job (what its main button
    /// does: train, compute filters, predict, preview augmentations).
    pub run: bool,
    /// The window's inner size in points (`None`: 1280 x 800).
    pub window: Option<[f32; 2]>,
}

/// What the tabs share: the loaded model and dataset, the trained model, thumbnails.
#[derive(Default)]
pub(super) struct Shared {
    /// The model in use; stays while another loads and when a load fails.
    pub model: Option<ModelInfo>,
    /// The dataset in use; kept the same way.
    pub data: Option<ImageFolder>,
    /// The folder of the model trained in this session.
    pub trained_model: Option<String>,
    pub thumbs: Thumbnails,
    /// The device the worker computes on.
    pub device: String,
    /// The workspace of training runs (`None` when there is no data folder for it).
    pub workspace: Option<Workspace>,
    /// The runs of the workspace as last listed, newest first.
    pub runs: Vec<RunSummary>,
}

/// The app.
pub struct ConvlensApp {
    pub(super) settings: Settings,
    settings_path: Option<PathBuf>,
    saved_settings: Settings,
    pub(super) worker: Worker,
    pub(super) board: JobBoard,
    pub(super) shared: Shared,
    pub(super) log: MessageLog,
    pub(super) tabs: Tabs,
    /// Frames drawn (tests check that the window keeps painting during training).
    pub frames: u64,
    started: bool,
    /// `--run`: the tab's main job is still to be started.
    run_pending: bool,
}

impl ConvlensApp {
    /// Starts the worker; `repaint` is called whenever it has news.
    pub fn new(options: AppOptions, repaint: impl Fn() + Send + Sync + 'static) -> Self {
        let mut settings = Settings::load(options.settings_path.as_deref());
        let mut log = MessageLog::default();
        for note in settings.check_restored(options.model.is_some()) {
            log.push(Level::Note, note);
        }
        if let Some(model) = options.model {
            settings.model = model;
        }
        if let Some(tab) = options.tab {
            settings.tab = tab;
        }
        let workspace = match options.workspace {
            Some(dir) => Some(Workspace::at(dir)),
            None => Workspace::open_default()
                .map_err(|e| log.push(Level::Error, format!("training runs: {e}")))
                .ok(),
        };
        ConvlensApp {
            saved_settings: settings.clone(),
            settings,
            settings_path: options.settings_path,
            worker: Worker::spawn(candle_core::Device::Cpu, repaint),
            board: JobBoard::default(),
            shared: Shared {
                device: "CPU".into(),
                workspace,
                ..Shared::default()
            },
            log,
            tabs: Tabs::default(),
            frames: 0,
            started: false,
            run_pending: options.run,
        }
    }

    /// The current tab.
    pub fn tab(&self) -> Tab {
        self.settings.tab
    }

    /// The loaded model's description, once loaded.
    pub fn model_info(&self) -> Option<&ModelInfo> {
        self.shared.model.as_ref()
    }

    /// The scanned dataset, once scanned.
    pub fn dataset(&self) -> Option<&ImageFolder> {
        self.shared.data.as_ref()
    }

    /// The layer picked in the layer table (and used by the visualisation tabs).
    pub fn selected_layer(&self) -> Option<&str> {
        self.settings.layer.as_deref()
    }

    /// The epochs of this session's training run.
    pub fn history(&self) -> &[EpochMetrics] {
        &self.tabs.train.live.history.epochs
    }

    /// The last finished training run.
    pub fn train_outcome(&self) -> Option<&TrainOutcome> {
        self.tabs.train.outcome.as_ref()
    }

    /// The selected confusion cell and how many images it lists.
    pub fn selected_cell(&self) -> Option<((usize, usize), usize)> {
        self.tabs.train.shown().selected_cell()
    }

    /// The runs of the workspace as last listed, newest first.
    pub fn runs(&self) -> &[RunSummary] {
        &self.shared.runs
    }

    /// The folder name of the run the Train tab shows (`None`: a run still training, or none).
    pub fn shown_run(&self) -> Option<&str> {
        self.tabs.train.shown().name.as_deref()
    }

    /// The epochs, phases and kept epoch of the run the Train tab shows.
    pub fn shown_history(&self) -> &History {
        &self.tabs.train.shown().history
    }

    /// The run whose curves are overlaid for comparison.
    pub fn compared_run(&self) -> Option<&str> {
        self.tabs.train.compare.as_ref().map(|c| c.name.as_str())
    }

    /// The current activation grid.
    pub fn activation_view(&self) -> Option<&ActivationView> {
        self.tabs.activations.view()
    }

    /// The activation grid of the model compared with, once computed.
    pub fn compared_activation_view(&self) -> Option<&ActivationView> {
        self.tabs.activations.compared_view()
    }

    /// The current class-activation map of the loaded model.
    pub fn cam_view(&self) -> Option<&CamView> {
        self.tabs.heatmap.view()
    }

    /// The heatmap of the Heatmap tab's second row (the model compared with), once computed.
    pub fn compared_cam_view(&self) -> Option<&CamView> {
        self.tabs.heatmap.compared_view()
    }

    /// Every row of the Heatmap tab: its heatmap once computed, and what its class stands for
    /// when set up to explain an error ("true class", "predicted class", "top class").
    pub fn cam_rows(&self) -> Vec<(Option<&CamView>, Option<&'static str>)> {
        self.tabs.heatmap.views(&self.settings.heatmap)
    }

    /// The faithfulness and sanity check last computed for the Heatmap tab's row `row`.
    pub fn cam_evidence(
        &self,
        row: usize,
    ) -> (
        Option<&crate::jobs::evidence::FaithView>,
        Option<&crate::jobs::evidence::SanityView>,
    ) {
        self.tabs.heatmap.evidence(row)
    }

    /// The Predict tab's answers, in the order of its list.
    pub fn predictions(&self) -> &[crate::jobs::views::PredictionRow] {
        self.tabs.predict.predictions()
    }

    /// The Map tab (its map, suspect labels and box selection; its method and colouring).
    pub fn map_tab(&self) -> &super::tabs::map::MapTab {
        &self.tabs.map
    }

    /// The Map tab, to set its method, colouring or folds.
    pub fn map_tab_mut(&mut self) -> &mut super::tabs::map::MapTab {
        &mut self.tabs.map
    }

    /// The folder of the model trained in this session, once there is one.
    pub fn trained_model(&self) -> Option<&str> {
        self.shared.trained_model.as_deref()
    }

    /// Filter tiles finished and asked for.
    pub fn filter_progress(&self) -> (usize, usize) {
        self.tabs.filters.progress()
    }

    /// The top images of the filter clicked in Filters, once computed.
    pub fn filter_examples(&self) -> Option<&crate::jobs::ChannelExamplesView> {
        self.tabs.filters.examples.view()
    }

    /// The top images of the channel clicked in Activations, once computed.
    pub fn activation_examples(&self) -> Option<&crate::jobs::ChannelExamplesView> {
        self.tabs.activations.examples.view()
    }

    /// The Data tab's probe section: its results, newest first, and its image budget.
    pub fn probe_panel_mut(&mut self) -> &mut super::tabs::data::probe::ProbePanel {
        &mut self.tabs.data.probe
    }

    /// Filter tiles finished and asked for, of the model compared with.
    pub fn compared_filter_progress(&self) -> (usize, usize) {
        self.tabs.filters.compared_progress()
    }

    /// The newest error not dismissed.
    pub fn last_error(&self) -> Option<&str> {
        self.log.last_error()
    }

    /// The newest note (or cancellation) not dismissed.
    pub fn last_note(&self) -> Option<&str> {
        self.log.last_note()
    }

    /// Every message of the session with its time.
    pub fn messages(&self) -> &[super::log::Entry] {
        self.log.entries()
    }

    /// Whether a job the window asked for has not finished yet.
    pub fn busy(&self) -> bool {
        self.board.busy()
    }

    /// The line the status bar shows for the running job.
    pub fn status_line(&self) -> Option<String> {
        self.board.current().map(|(_, _, line)| line.text)
    }

    /// The settings as they are now (what the next start restores).
    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    /// The settings (for tests and persistence).
    pub fn settings_mut(&mut self) -> &mut Settings {
        &mut self.settings
    }

    /// Starts a training run with the Train tab's options (nothing without model and data).
    pub fn start_training(&mut self) {
        let command = tabs::train::start_command(&self.context(), &self.settings.train);
        self.apply(Commands(command.into_iter().collect()));
    }

    /// Makes `layer` the one the visual tabs show, as picking it in the layer table does.
    pub fn select_layer(&mut self, layer: &str) {
        self.apply(Commands(vec![Command::SelectLayer(layer.to_string())]));
    }

    /// Starts computing the Filters tab's patterns.
    pub fn start_filters(&mut self) {
        let command = self
            .tabs
            .filters
            .compute_command(&self.context(), &self.settings.filters);
        self.apply(Commands(command.into_iter().collect()));
    }

    /// Whether `--run` has still to start the tab's job (it waits for the loads).
    pub fn run_pending(&self) -> bool {
        self.run_pending
    }

    /// The tab's main job, as its main button starts it. Activations and Heatmap compute on
    /// their own once the model is in; Start and Model have none.
    fn tab_job(&self) -> Commands {
        let ctx = self.context();
        let command = match self.settings.tab {
            Tab::Train => tabs::train::start_command(&ctx, &self.settings.train),
            Tab::Filters => self
                .tabs
                .filters
                .compute_command(&ctx, &self.settings.filters),
            Tab::Predict => self
                .tabs
                .predict
                .predict_command(&ctx, &self.settings.predict),
            Tab::Data => tabs::data::preview_command(&ctx, &self.settings.train.augment),
            Tab::Map => self.tabs.map.map_command(&ctx),
            Tab::Start | Tab::Model | Tab::Activations | Tab::Heatmap => None,
        };
        Commands(command.into_iter().collect())
    }

    /// The read-only view of the shared state the tabs draw from.
    pub(super) fn context(&self) -> AppContext<'_> {
        context_of(
            &self.shared,
            &self.settings.image,
            self.settings.layer.as_deref(),
            &self.board,
        )
    }

    /// Draws one frame into `ui` (the whole window).
    pub fn draw(&mut self, ui: &mut egui::Ui) {
        self.frames += 1;
        let egui_ctx = ui.ctx().clone();
        let mut commands = Commands::default();
        if !self.started {
            self.started = true;
            if self.settings.device != DeviceChoice::Cpu {
                commands.push(Command::Submit(crate::jobs::Request::SetDevice(
                    self.settings.device,
                )));
            }
            commands.push(Command::LoadModel(None));
            commands.push(Command::ScanData(None));
            if let Some(c) = tabs::train::TrainTab::list_command(self.shared.workspace.as_ref()) {
                commands.push(c);
            }
        }
        self.handle_events(&egui_ctx);
        // The loads asked for in the first frame keep the board busy until they are in.
        if self.run_pending && self.frames > 1 && !self.board.busy() {
            self.run_pending = false;
            commands.extend(self.tab_job());
        }
        commands.extend(self.dropped_files(&egui_ctx));

        egui::Panel::bottom("status").show(ui, |ui| commands.extend(self.status_bar(ui)));
        egui::Panel::left("sources")
            .default_size(250.0)
            .resizable(true)
            .show(ui, |ui| {
                egui::ScrollArea::vertical().show(ui, |ui| commands.extend(self.left_panel(ui)));
            });
        egui::CentralPanel::default().show(ui, |ui| commands.extend(self.central(ui)));
        self.log.window(&egui_ctx);
        self.apply(commands);
        if self.board.busy() {
            egui_ctx.request_repaint_after(std::time::Duration::from_millis(100));
        }
        self.persist();
    }

    /// The tab bar and the current tab.
    fn central(&mut self, ui: &mut egui::Ui) -> Commands {
        ui.horizontal_wrapped(|ui| {
            for tab in Tab::ALL {
                ui.selectable_value(&mut self.settings.tab, tab, tab.title());
            }
        });
        ui.separator();
        // Borrowed field by field: the tabs below are drawn mutably beside it.
        let ctx = context_of(
            &self.shared,
            &self.settings.image,
            self.settings.layer.as_deref(),
            &self.board,
        );
        match self.settings.tab {
            Tab::Start => tabs::start::ui(ui, &ctx, &self.settings.train),
            Tab::Model => self.tabs.model.ui(ui, &ctx),
            Tab::Data => self
                .tabs
                .data
                .ui(ui, &ctx, &mut self.settings.train.augment),
            Tab::Train => self.tabs.train.ui(ui, &ctx, &mut self.settings.train),
            Tab::Activations => self.tabs.activations.ui(
                ui,
                &ctx,
                &mut self.settings.activations,
                &mut self.settings.export,
            ),
            Tab::Filters => self.tabs.filters.ui(
                ui,
                &ctx,
                &mut self.settings.filters,
                &mut self.settings.export,
            ),
            Tab::Heatmap => self.tabs.heatmap.ui(
                ui,
                &ctx,
                &mut self.settings.heatmap,
                &mut self.settings.export,
            ),
            Tab::Predict => self.tabs.predict.ui(ui, &ctx, &mut self.settings.predict),
            Tab::Map => self.tabs.map.ui(ui, &ctx),
        }
    }

    fn persist(&mut self) {
        if self.settings != self.saved_settings {
            if let Some(path) = &self.settings_path {
                self.settings.save(path);
            }
            self.saved_settings = self.settings.clone();
        }
    }

    /// Image files dropped on the window: the first becomes the image of the visual tabs, all
    /// go to the Predict tab there.
    fn dropped_files(&mut self, ctx: &egui::Context) -> Commands {
        let mut out = Commands::default();
        let dropped: Vec<PathBuf> = ctx.input(|i| {
            i.raw
                .dropped_files
                .iter()
                .map(|f| f.path().to_path_buf())
                .filter(|p| !p.as_os_str().is_empty())
                .collect()
        });
        if dropped.is_empty() {
            return out;
        }
        if self.settings.tab == Tab::Predict {
            self.tabs.predict.input = dropped
                .iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join("\n");
            let ctx = self.context();
            if let Some(c) = self
                .tabs
                .predict
                .predict_command(&ctx, &self.settings.predict)
            {
                out.push(c);
            }
        } else {
            out.push(Command::SetImage(dropped[0].clone()));
        }
        out
    }

    /// Adds a message to the log.
    pub(super) fn note(&mut self, level: Level, text: impl Into<String>) {
        self.log.push(level, text);
    }
}

impl eframe::App for ConvlensApp {
    fn ui(&mut self, ui: &mut egui::Ui, _frame: &mut eframe::Frame) {
        self.draw(ui);
    }
}

/// The read-only view the tabs draw from, built from the fields it borrows (so a tab can be
/// drawn mutably while it is alive).
fn context_of<'a>(
    shared: &'a Shared,
    image: &'a str,
    layer: Option<&'a str>,
    board: &'a JobBoard,
) -> AppContext<'a> {
    AppContext {
        model: shared.model.as_ref(),
        data: shared.data.as_ref(),
        image: Path::new(image),
        layer,
        trained_model: shared.trained_model.as_deref(),
        jobs: board,
        thumbs: &shared.thumbs,
        workspace: shared.workspace.as_ref(),
        runs: &shared.runs,
    }
}
