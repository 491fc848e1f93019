//! The one place where the app's state changes: worker events are taken in at the top of the
//! frame, and the commands the panels returned are applied at its end. Matches on job kinds
//! name every kind: a new kind must say what its cancel, failure and start do here.
#![warn(clippy::wildcard_enum_match_arm)]

use std::path::{Path, PathBuf};

use super::app::ConvlensApp;
use super::context::{Command, Commands};
use super::log::Level;
use super::settings::Settings;
use super::tabs::train::TrainTab;
use super::thumbs::THUMBNAIL_SIZE;
use crate::jobs::{Event, JobId, JobKind, Outcome, Partial, Reply, Request};
use crate::workspace::RunSummary;

/// Kinds whose newer request replaces a queued or running older one.
const REPLACED_BY_NEWER: [JobKind; 5] = [
    JobKind::Activations,
    JobKind::Sparsity,
    JobKind::Cam,
    JobKind::Predict,
    JobKind::Examples,
];

impl ConvlensApp {
    /// Takes in everything the worker sent since the last frame.
    pub(super) fn handle_events(&mut self, egui_ctx: &egui::Context) {
        let mut follow_up = Commands::default();
        for event in self.worker.drain() {
            match event {
                Event::Progress(id, p) => self.board.progress(id, p),
                Event::Partial(id, partial) => self.partial(egui_ctx, id, partial),
                Event::Finished(id, outcome) => {
                    let Some((kind, superseded)) = self.board.finish(id) else {
                        continue;
                    };
                    follow_up.extend(self.finished(egui_ctx, kind, superseded, outcome));
                }
            }
        }
        self.apply(follow_up);
    }

    fn partial(&mut self, egui_ctx: &egui::Context, id: JobId, partial: Partial) {
        match partial {
            Partial::FilterTile { index, image } => self.tabs.filters.tile(id, index, image),
            Partial::Train(event) => {
                if let Some(warning) = self.tabs.train.event(event) {
                    self.note(Level::Note, warning);
                }
            }
            Partial::Thumbnail(path, img) => self.shared.thumbs.insert(egui_ctx, path, img),
        }
    }

    /// A job ended: its result goes where it belongs; a cancel is a neutral note, a failure an
    /// error, and neither leaves anything half-done on screen.
    fn finished(
        &mut self,
        egui_ctx: &egui::Context,
        kind: JobKind,
        superseded: bool,
        outcome: Outcome,
    ) -> Commands {
        match outcome {
            // A view a newer request replaced is stale (an older image, model or class).
            Outcome::Done(_) if superseded => {}
            Outcome::Done(reply) => return self.reply(egui_ctx, reply),
            Outcome::Cancelled => {
                if kind == JobKind::Thumbnails {
                    self.shared.thumbs.forget_unanswered();
                } else if !superseded {
                    let text = match kind {
                        JobKind::Train => format!(
                            "training cancelled after {} epochs",
                            self.tabs.train.live.history.epochs.len()
                        ),
                        JobKind::Model
                        | JobKind::Data
                        | JobKind::Device
                        | JobKind::Activations
                        | JobKind::Sparsity
                        | JobKind::Cam
                        | JobKind::Predict
                        | JobKind::Filters
                        | JobKind::Export
                        | JobKind::Augment
                        | JobKind::Thumbnails
                        | JobKind::Runs
                        | JobKind::RunDetails
                        | JobKind::Examples
                        | JobKind::Probe
                        | JobKind::Map
                        | JobKind::Suspects
                        | JobKind::Evidence => format!("{} cancelled", kind.name()),
                    };
                    self.note(Level::Cancelled, text);
                }
            }
            Outcome::Failed(e) => {
                self.failed(kind);
                self.note(Level::Error, format!("{}: {e}", kind.name()));
            }
            Outcome::Panicked(message) => {
                self.failed(kind);
                self.note(
                    Level::Error,
                    format!(
                        "{}: internal error (a bug, please report it): {message}",
                        kind.name()
                    ),
                );
            }
        }
        Commands::default()
    }

    /// After a failed load the previous model or dataset stays in use, and so does its name.
    fn failed(&mut self, kind: JobKind) {
        match kind {
            JobKind::Model => {
                if let Some(m) = &self.shared.model {
                    self.settings.model = m.key.clone();
                }
            }
            JobKind::Data => {
                if let Some(d) = &self.shared.data {
                    self.settings.data_dir = d.root.to_string_lossy().into_owned();
                }
            }
            JobKind::Device => {
                self.settings.device = crate::device::DeviceChoice::Cpu;
            }
            JobKind::Thumbnails => self.shared.thumbs.forget_unanswered(),
            // Nothing else changes state before its reply: a failure leaves all as it was.
            JobKind::Activations
            | JobKind::Sparsity
            | JobKind::Cam
            | JobKind::Predict
            | JobKind::Train
            | JobKind::Filters
            | JobKind::Export
            | JobKind::Augment
            | JobKind::Runs
            | JobKind::RunDetails
            | JobKind::Examples
            | JobKind::Probe
            | JobKind::Map
            | JobKind::Suspects
            | JobKind::Evidence => {}
        }
    }

    fn reply(&mut self, egui_ctx: &egui::Context, reply: Reply) -> Commands {
        let mut out = Commands::default();
        match reply {
            Reply::Model(info) => {
                if !self
                    .settings
                    .layer
                    .as_ref()
                    .is_some_and(|l| info.spatial.contains(l))
                {
                    self.settings.layer = info.spatial.get(info.spatial.len() / 3).cloned();
                }
                self.settings.heatmap.keep_layers_of(&info.spatial);
                self.tabs.train.show_history(&info.history);
                self.settings.model = info.key.clone();
                self.shared.model = Some(info);
                out.push(Command::RefreshActivations);
                out.push(Command::RefreshCam);
            }
            Reply::Described(info) => {
                self.tabs.filters.described(&info);
                self.tabs.activations.described(&info);
                out.push(Command::RefreshActivations);
            }
            Reply::Data(folder) => {
                self.settings.data_dir = folder.root.to_string_lossy().into_owned();
                self.shared.data = Some(folder);
            }
            Reply::Device(name) => {
                self.shared.device = name;
                out.push(Command::LoadModel(None));
            }
            Reply::Activations(view) => self.tabs.activations.set_view(view),
            Reply::Sparsity(s) => self.tabs.activations.set_sparsity(s),
            Reply::Cam { view, row } => self.tabs.heatmap.set_view(*view, row),
            Reply::Faithfulness(view) => self.tabs.heatmap.set_faithfulness(*view),
            Reply::Sanity(view) => self.tabs.heatmap.set_sanity(*view),
            Reply::Predictions(p) => self.tabs.predict.set_predictions(p),
            Reply::Map(key, map) => self.tabs.map.set_map(key, *map),
            Reply::Suspects(view) => self.tabs.map.set_suspects(*view),
            Reply::Trained(outcome) => {
                let dir = outcome.report.out_dir.to_string_lossy().into_owned();
                self.note(
                    Level::Note,
                    format!(
                        "saved {dir} (validation accuracy {:.3})",
                        outcome.evaluation.accuracy
                    ),
                );
                self.shared.trained_model = Some(dir);
                let workspace = self.shared.workspace.as_ref();
                if let Some(name) = self.tabs.train.finished(workspace, outcome) {
                    self.settings.run = Some(name);
                }
                out.extend(Commands(
                    TrainTab::list_command(workspace).into_iter().collect(),
                ));
                out.push(Command::RefreshCam);
            }
            Reply::Filters(_) | Reply::Thumbnails => {}
            Reply::Exported(paths) => {
                // One line per file in the message log, then a summary for the status bar.
                for p in &paths {
                    self.note(Level::Note, format!("wrote {}", p.display()));
                }
                let folders: std::collections::BTreeSet<_> =
                    paths.iter().filter_map(|p| p.parent()).collect();
                let folders: Vec<String> =
                    folders.iter().map(|f| f.display().to_string()).collect();
                self.note(
                    Level::Note,
                    format!(
                        "exported {} files to {} (Messages lists them)",
                        paths.len(),
                        folders.join(", ")
                    ),
                );
            }
            Reply::ModelExported(result) => {
                match &result {
                    Ok(report) => self.note(
                        Level::Note,
                        format!(
                            "exported {}: {}",
                            report
                                .files
                                .first()
                                .map(|f| f.display().to_string())
                                .unwrap_or_default(),
                            report.verification.summary()
                        ),
                    ),
                    Err(e) => self.note(
                        Level::Error,
                        format!("model export: {}", super::tabs::train::in_form_words(e)),
                    ),
                }
                self.tabs.train.export.finished(result);
            }
            Reply::Augmented(images) => self.tabs.data.set_previews(egui_ctx, &images),
            Reply::Runs { runs, done } => {
                if let Some(done) = done {
                    self.note(Level::Note, done);
                }
                out.extend(self.runs_listed(runs));
            }
            Reply::Run { details, compare } => {
                self.tabs
                    .train
                    .run_read(*details, compare, &mut self.settings.run);
            }
            Reply::Examples(view) => {
                if self.tabs.filters.examples.wants(&view) {
                    self.tabs.filters.examples.set(*view);
                } else {
                    self.tabs.activations.examples.set(*view);
                }
            }
            Reply::Probe(key, report) => self.tabs.data.probe.set(key, report),
        }
        out
    }

    /// The runs were listed: the Train tab follows, and a model chooser holding a run that is
    /// gone falls back to the loaded model (said in the log); the views whose model changed
    /// (a run of the last session is offered again, or one vanished) are recomputed.
    fn runs_listed(&mut self, runs: Vec<RunSummary>) -> Commands {
        let before = self.viewed_models();
        self.shared.runs = runs;
        let workspace = self.shared.workspace.as_ref();
        let mut out =
            self.tabs
                .train
                .runs_listed(workspace, &self.shared.runs, &mut self.settings.run);
        let chosen: Vec<String> = model_slots(&mut self.settings)
            .into_iter()
            .filter_map(|(_, slot)| slot.clone())
            .chain(self.shared.trained_model.clone())
            .collect();
        let gone: Vec<String> = {
            let ctx = self.context();
            chosen.into_iter().filter(|k| ctx.run_vanished(k)).collect()
        };
        for (tab, slot) in model_slots(&mut self.settings) {
            if let Some(key) = slot.take_if(|k| gone.contains(k)) {
                let name = Path::new(&key)
                    .file_name()
                    .map_or(key.clone(), |n| n.to_string_lossy().into_owned());
                out.push(Command::Note(format!(
                    "{tab}: the run {name} is no longer in the workspace; back to the loaded model"
                )));
            }
        }
        if self
            .shared
            .trained_model
            .take_if(|k| gone.contains(k))
            .is_some()
        {
            out.push(Command::Note(
                "this session's trained run is no longer in the workspace".into(),
            ));
        }
        if self.viewed_models() != before {
            out.push(Command::RefreshActivations);
            out.push(Command::RefreshCam);
        }
        out
    }

    /// The models the Activations grid and the heatmap rows are computed with now.
    fn viewed_models(&self) -> Vec<Option<String>> {
        let ctx = self.context();
        let s = &self.settings;
        let mut out = vec![ctx.model_key(s.activations.model.as_deref())];
        out.extend(self.tabs.heatmap.row_models(&ctx, &s.heatmap));
        out
    }

    /// Applies the commands of a frame, in order.
    pub(super) fn apply(&mut self, commands: Commands) {
        for command in commands.0 {
            match command {
                Command::Submit(request) => {
                    let replace = REPLACED_BY_NEWER.contains(&request.kind());
                    self.submit(request, replace)
                }
                Command::Cancel(kind) => {
                    for id in self.board.ids(kind) {
                        self.worker.cancel(id);
                    }
                }
                Command::LoadModel(key) => {
                    if let Some(key) = key {
                        self.settings.model = key;
                    }
                    let key = self.settings.model.trim().to_string();
                    self.submit(Request::LoadModel { key }, false);
                }
                Command::ScanData(dir) => {
                    if let Some(dir) = dir {
                        self.settings.data_dir = dir;
                    }
                    let dir = PathBuf::from(self.settings.data_dir.trim());
                    self.submit(Request::ScanData { dir }, false);
                }
                Command::SelectLayer(layer) => {
                    self.settings.layer = Some(layer);
                    self.refresh_activations();
                }
                Command::SetImage(path) => {
                    self.settings.image = path.to_string_lossy().into_owned();
                    self.settings.heatmap.new_image();
                    self.refresh_activations();
                    self.refresh_cam();
                }
                Command::OpenTab(tab) => self.settings.tab = tab,
                Command::Explain(image, explain) => {
                    self.settings.image = image.to_string_lossy().into_owned();
                    let loaded = self.shared.model.as_ref().map(|m| m.key.clone());
                    self.tabs
                        .heatmap
                        .explain(&mut self.settings.heatmap, explain, loaded);
                    self.settings.tab = super::settings::Tab::Heatmap;
                    self.refresh_activations();
                    self.refresh_cam();
                }
                Command::Thumbnails(paths) => {
                    let paths = self.shared.thumbs.not_asked(paths);
                    if !paths.is_empty() {
                        let request = Request::Thumbnails {
                            paths,
                            size: THUMBNAIL_SIZE,
                        };
                        self.submit(request, false);
                    }
                }
                Command::RefreshCam => self.refresh_cam(),
                Command::RefreshActivations => self.refresh_activations(),
                Command::Note(text) => self.note(Level::Note, text),
            }
        }
    }

    /// Queues a request; with `replace`, jobs of its kind still in flight are cancelled first
    /// (a newer view replaces an older one).
    fn submit(&mut self, request: Request, replace: bool) {
        let kind = request.kind();
        if replace {
            self.supersede(kind);
        }
        let filters = matches!(request, Request::Filters { .. }).then(|| request.clone());
        match self.worker.submit(request) {
            Ok(id) => {
                self.board.start(id, kind);
                match kind {
                    JobKind::Train => self.tabs.train.started(),
                    JobKind::Filters => {
                        if let Some(r) = &filters {
                            self.tabs.filters.started(id, r);
                        }
                    }
                    JobKind::Model
                    | JobKind::Data
                    | JobKind::Device
                    | JobKind::Activations
                    | JobKind::Sparsity
                    | JobKind::Cam
                    | JobKind::Predict
                    | JobKind::Export
                    | JobKind::Augment
                    | JobKind::Thumbnails
                    | JobKind::Runs
                    | JobKind::RunDetails
                    | JobKind::Examples
                    | JobKind::Probe
                    | JobKind::Map
                    | JobKind::Suspects
                    | JobKind::Evidence => {}
                }
            }
            Err(e) => self.note(Level::Error, format!("{}: {e}", kind.name())),
        }
    }

    fn supersede(&mut self, kind: JobKind) {
        for id in self.board.supersede(kind) {
            self.worker.cancel(id);
        }
    }

    /// Recomputes the activation grids (the loaded model's and the one compared with are one
    /// refresh: the second does not replace the first) and the sparsity profile.
    fn refresh_activations(&mut self) {
        self.supersede(JobKind::Activations);
        self.supersede(JobKind::Sparsity);
        let commands = self
            .tabs
            .activations
            .requests(&self.context(), &self.settings.activations);
        self.submit_together(commands);
    }

    /// Recomputes the heatmaps: the base model's and the trained model's are one refresh (the
    /// second does not replace the first).
    fn refresh_cam(&mut self) {
        self.supersede(JobKind::Cam);
        let commands = self
            .tabs
            .heatmap
            .requests(&self.context(), &self.settings.heatmap);
        self.submit_together(commands);
    }

    /// Submits the requests among `commands` as one refresh: none replaces another.
    fn submit_together(&mut self, commands: Vec<Command>) {
        for command in commands {
            if let Command::Submit(request) = command {
                self.submit(request, false);
            }
        }
    }
}

/// Each tab's model choice, named by its tab (for the log).
fn model_slots(s: &mut Settings) -> Vec<(String, &mut Option<String>)> {
    let mut out = vec![
        ("Activations".to_string(), &mut s.activations.model),
        ("Filters".to_string(), &mut s.filters.model),
    ];
    for (i, row) in s.heatmap.rows.iter_mut().enumerate() {
        out.push((format!("Heatmap row {}", i + 1), &mut row.model));
    }
    out.push(("Predict".to_string(), &mut s.predict.model));
    out
}
