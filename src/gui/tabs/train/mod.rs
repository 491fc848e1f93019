//! The Train tab: the training form, the list of saved runs, and the run on screen (this
//! session's, live while it trains, or one picked in the list): its curves with the kept epoch
//! and the phase changes marked, a second run's curves overlaid on request, and its validation
//! confusion matrix whose cells list their images.

mod confusion;
mod curves;
mod export;
mod form;
mod runs;

use crate::gui::context::{AppContext, Command, Commands};
use crate::gui::settings::TrainForm;
use crate::gui::widgets;
use crate::jobs::views::TrainOutcome;
use crate::jobs::{JobKind, Request};
use crate::train::evaluate::Evaluation;
use crate::train::{EpochMetrics, Mode, TrainConfig, TrainEvent};
use crate::workspace::{History, RunDetails, RunSummary, Workspace};
pub use curves::Compared;
pub use export::in_form_words;

/// One line on what a training mode does.
pub fn mode_help(mode: Mode) -> &'static str {
    match mode {
        Mode::Extract => {
            "The pretrained base stays frozen and runs once per image (features cached); only a \
             small head is trained. Fastest."
        }
        Mode::ExtractAugment => {
            "Frozen base, but on freshly augmented images every epoch (no cache): slower, \
             overfits less."
        }
        Mode::Finetune => {
            "The head first (as extract), then the top stages of the base are unfrozen and \
             trained at a low learning rate, with augmentation."
        }
        Mode::Scratch => {
            "A small convnet trained from random weights (the pretrained model is not used)."
        }
    }
}

/// What the tab shows of one training run: its epochs, and its evaluation once finished.
#[derive(Clone, Debug, Default)]
pub struct RunView {
    /// The run's folder name in the workspace (`None`: still training, or saved elsewhere).
    pub name: Option<String>,
    /// What the run is called on screen.
    pub title: String,
    pub history: History,
    pub evaluation: Option<Evaluation>,
    /// Why a saved run cannot be used as it is.
    pub problem: Option<String>,
    /// The confusion cell whose images are listed: (true, predicted).
    pub selected_cell: Option<(usize, usize)>,
}

impl RunView {
    /// A saved run as read from its folder.
    fn saved(details: RunDetails) -> Self {
        RunView {
            title: runs::title(&details.summary).to_string(),
            name: Some(details.summary.name),
            history: details.history,
            evaluation: details.evaluation.map(|e| e.evaluation),
            problem: details.summary.problem,
            selected_cell: None,
        }
    }

    /// The selected confusion cell and how many images it lists.
    pub fn selected_cell(&self) -> Option<((usize, usize), usize)> {
        let (t, p) = self.selected_cell?;
        let n = confusion::cell_images(self.evaluation.as_ref()?, t, p).len();
        Some(((t, p), n))
    }
}

/// The Train tab's state.
#[derive(Default)]
pub struct TrainTab {
    /// This session's training run (live while it trains).
    pub live: RunView,
    /// This session's last finished run.
    pub outcome: Option<TrainOutcome>,
    /// A run picked in the list, shown instead of the live one.
    pub saved: Option<RunView>,
    /// The run whose validation curves are overlaid.
    pub compare: Option<Compared>,
    /// Whether the runs were listed once (the last session's run is reselected then).
    listed: bool,
    list: runs::RunList,
    /// The export form of the run on screen.
    pub export: export::ExportPanel,
}

impl TrainTab {
    /// The run on screen.
    pub fn shown(&self) -> &RunView {
        self.saved.as_ref().unwrap_or(&self.live)
    }

    /// The request that lists the runs (none without a workspace).
    pub fn list_command(workspace: Option<&Workspace>) -> Option<Command> {
        runs::list_command(workspace)
    }

    /// A run starts: the old curves and matrix go, and the live run is shown.
    pub fn started(&mut self) {
        self.live = RunView {
            title: "this session's run".into(),
            ..RunView::default()
        };
        self.outcome = None;
        self.saved = None;
    }

    /// A training event; returns a warning for the message log.
    pub fn event(&mut self, event: TrainEvent) -> Option<String> {
        match event {
            TrainEvent::Epoch(m) => {
                let mut epochs = std::mem::take(&mut self.live.history.epochs);
                epochs.push(m);
                self.live.history = History::new(epochs);
            }
            TrainEvent::Warning(w) => return Some(w),
            TrainEvent::Phase { .. } | TrainEvent::Progress { .. } => {}
        }
        None
    }

    /// The run finished and was evaluated; returns its name when it was saved as a run of the
    /// workspace (then listed again).
    pub fn finished(
        &mut self,
        workspace: Option<&Workspace>,
        outcome: TrainOutcome,
    ) -> Option<String> {
        let dir = &outcome.report.out_dir;
        let in_workspace = workspace.is_some_and(|w| dir.parent() == Some(w.runs_dir()));
        let name = in_workspace
            .then(|| dir.file_name().map(|n| n.to_string_lossy().into_owned()))
            .flatten();
        self.live = RunView {
            title: name.clone().unwrap_or_else(|| dir.display().to_string()),
            name: name.clone(),
            history: History::new(outcome.report.history.clone()),
            evaluation: Some(outcome.evaluation.clone()),
            problem: None,
            selected_cell: None,
        };
        self.outcome = Some(outcome);
        self.saved = None;
        name
    }

    /// Shows a loaded trained model's history when nothing else is on screen.
    pub fn show_history(&mut self, history: &[EpochMetrics]) {
        if self.live.history.epochs.is_empty() && self.outcome.is_none() && self.saved.is_none() {
            self.live.history = History::new(history.to_vec());
            self.live.title = "the loaded model".into();
        }
    }

    /// The runs were listed: the shown and compared runs follow renames and deletions, and the
    /// first time, the last session's run `last` is reselected (forgotten, with a note saying
    /// so, when it is gone; without one, the newest sound run is shown).
    pub fn runs_listed(
        &mut self,
        workspace: Option<&Workspace>,
        runs: &[RunSummary],
        last: &mut Option<String>,
    ) -> Commands {
        let mut out = Commands::default();
        let find = |name: &Option<String>| {
            name.as_ref()
                .and_then(|n| runs.iter().find(|r| &r.name == n))
        };
        if find(last).is_none()
            && let Some(gone) = last.take()
        {
            out.push(Command::Note(format!(
                "the run `{gone}` shown last time is no longer in the workspace"
            )));
        }
        if !self.listed {
            self.listed = true;
            let idle = self.saved.is_none() && self.outcome.is_none();
            let newest = runs.iter().find(|r| r.problem.is_none()).map(|r| &r.name);
            if let (true, Some(name)) = (idle, last.as_ref().or(newest))
                && let Some(c) = runs::show_command(workspace, name, false)
            {
                out.push(c);
            }
        }
        for view in [Some(&mut self.live), self.saved.as_mut()]
            .into_iter()
            .flatten()
        {
            match find(&view.name) {
                Some(run) => view.title = runs::title(run).to_string(),
                None if view.name.is_some() => *view = RunView::default(),
                None => {}
            }
        }
        if self.saved.as_ref().is_some_and(|v| v.name.is_none()) {
            self.saved = None;
        }
        if let Some(c) = &mut self.compare {
            match runs.iter().find(|r| r.name == c.name) {
                Some(run) => c.title = runs::title(run).to_string(),
                None => self.compare = None,
            }
        }
        out
    }

    /// A run was read: shown (then remembered in `last`), or overlaid when `compare`.
    pub fn run_read(&mut self, details: RunDetails, compare: bool, last: &mut Option<String>) {
        if compare {
            self.compare = Some(Compared {
                title: runs::title(&details.summary).to_string(),
                name: details.summary.name,
                history: details.history,
            });
        } else {
            *last = Some(details.summary.name.clone());
            self.saved = Some(RunView::saved(details));
        }
    }

    /// Draws the tab; `form` is the persisted training options.
    pub fn ui(&mut self, ui: &mut egui::Ui, ctx: &AppContext, form: &mut TrainForm) -> Commands {
        let mut out = Commands::default();
        let running = ctx.running(JobKind::Train);
        egui::ScrollArea::vertical()
            .id_salt("train-tab")
            .show(ui, |ui| {
                ui.add_enabled_ui(!running, |ui| form::form_ui(ui, form));
                start_row(ui, ctx, form, running, &mut out);
                ui.separator();
                let shown = self.shown().name.clone();
                self.list.ui(ui, ctx, shown.as_deref(), &mut out);
                ui.separator();
                self.run_ui(ui, ctx, running, &mut out);
            });
        out
    }

    /// The model folder of the run on screen, for "Export…": a sound run of the workspace, or
    /// this session's finished run wherever it was saved.
    fn export_key(&self, ctx: &AppContext, running: bool) -> Option<String> {
        match &self.saved {
            Some(view) => {
                let run = ctx
                    .runs
                    .iter()
                    .find(|r| Some(&r.name) == view.name.as_ref())?;
                run.problem
                    .is_none()
                    .then(|| crate::gui::context::run_key(run))
            }
            None if running => None,
            None => self
                .outcome
                .as_ref()
                .map(|o| o.report.out_dir.to_string_lossy().into_owned()),
        }
    }

    /// The run on screen: its name, the comparison choice, curves and confusion matrix.
    fn run_ui(&mut self, ui: &mut egui::Ui, ctx: &AppContext, running: bool, out: &mut Commands) {
        let offer_live = self.saved.is_some() && (running || self.outcome.is_some());
        let mut show_live = false;
        let export_key = self.export_key(ctx, running);
        let view = match &mut self.saved {
            Some(v) => v,
            None => &mut self.live,
        };
        if view.history.epochs.is_empty() && !running && view.problem.is_none() {
            ui.label(
                egui::RichText::new(
                    "The curves of loss and accuracy per epoch appear here while a run trains \
                     (or when a run is picked in the list), then the validation confusion \
                     matrix: click a cell to see its images, an image to see its heatmap.",
                )
                .weak(),
            );
            return;
        }
        ui.horizontal_wrapped(|ui| {
            widgets::section(ui, &view.title);
            show_live = offer_live && ui.button("Show this session's run").clicked();
            if let Some(name) = view.name.as_deref() {
                runs::open_button(ui, ctx, name, out);
            }
            self.export.button(ui, ctx, export_key.as_deref());
            runs::compare_combo(ui, ctx, view.name.as_deref(), &mut self.compare, out);
        });
        self.export.ui(ui, ctx, export_key.as_deref(), out);
        if let Some(problem) = &view.problem {
            widgets::error_line(ui, problem);
        }
        curves::curves(ui, &view.history, self.compare.as_ref());
        ui.label(curves::caption(&view.history));
        if view.evaluation.is_some() {
            ui.separator();
            confusion::ui(ui, ctx, view, out);
        }
        if show_live {
            self.saved = None;
        }
    }
}

/// "Start training", "Cancel training" and what the run will train on.
fn start_row(
    ui: &mut egui::Ui,
    ctx: &AppContext,
    form: &TrainForm,
    running: bool,
    out: &mut Commands,
) {
    ui.horizontal_wrapped(|ui| {
        let ready = ctx.model.is_some() && ctx.data.is_some();
        let start = ui
            .add_enabled(!running && ready, egui::Button::new("Start training"))
            .on_disabled_hover_text(if running {
                "a run is in progress"
            } else {
                "needs a loaded model and a scanned dataset (left panel)"
            });
        if start.clicked()
            && let Some(c) = start_command(ctx, form)
        {
            out.push(c);
        }
        if ui
            .add_enabled(running, egui::Button::new("Cancel training"))
            .clicked()
        {
            out.push(Command::Cancel(JobKind::Train));
        }
        match (ctx.data, ctx.trained_model) {
            (None, _) => {
                ui.label("No dataset: scan a folder in the left panel first.");
            }
            (Some(d), None) => {
                ui.label(format!(
                    "on {} ({} classes)",
                    d.root.display(),
                    d.classes.len()
                ));
            }
            (Some(_), Some(dir)) => {
                ui.label(format!("trained model: {dir}"));
            }
        }
    });
}

/// The command that starts a run with the form's options on the scanned dataset.
pub fn start_command(ctx: &AppContext, f: &TrainForm) -> Option<Command> {
    let (model, data) = (ctx.model?, ctx.data?);
    let config = TrainConfig {
        mode: f.mode,
        epochs: f.epochs,
        batch_size: f.batch_size,
        lr: f.lr,
        seed: f.seed,
        unfreeze: f.unfreeze,
        finetune_epochs: f.finetune_epochs,
        train_batchnorm: f.train_batchnorm,
        head: f.head,
        augment: f.augment.clone(),
        ..TrainConfig::default()
    };
    Some(Command::Submit(Request::Train {
        model: model.key.clone(),
        data_dir: data.root.clone(),
        config: Box::new(config),
        out_dir: f.typed_out_dir(),
        workspace: ctx.workspace.cloned(),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::workspace::Workspace;

    fn summary(name: &str, problem: Option<&str>) -> RunSummary {
        RunSummary {
            name: name.into(),
            display_name: None,
            path: name.into(),
            created: "2026-11-29T22:10:05Z".into(),
            mode: Some(Mode::Extract),
            dataset: Some("fashion-mini".into()),
            best_val_accuracy: Some(0.9),
            epochs: 1,
            problem: problem.map(str::to_string),
        }
    }

    fn details(name: &str) -> RunDetails {
        RunDetails {
            summary: summary(name, None),
            record: None,
            manifest: None,
            history: History::default(),
            evaluation: None,
        }
    }

    /// The run names the commands ask the worker to read.
    fn shown(out: &Commands) -> Vec<String> {
        out.0
            .iter()
            .filter_map(|c| match c {
                Command::Submit(Request::ShowRun { name, .. }) => Some(name.clone()),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn the_first_listing_reselects_the_last_run_or_the_newest_sound_one() {
        let ws = Workspace::at("/nowhere/runs");
        let runs = || vec![summary("bad", Some("no model.json")), summary("new", None)];
        let mut tab = TrainTab::default();
        let mut last = Some("new".to_string());
        assert_eq!(
            shown(&tab.runs_listed(Some(&ws), &runs(), &mut last)),
            ["new"]
        );
        assert!(shown(&tab.runs_listed(Some(&ws), &runs(), &mut last)).is_empty());

        let mut tab = TrainTab::default();
        let mut last = Some("deleted meanwhile".to_string());
        assert_eq!(
            shown(&tab.runs_listed(Some(&ws), &runs(), &mut last)),
            ["new"]
        );
        assert_eq!(last, None, "a run that is gone is forgotten");
    }

    #[test]
    fn listings_follow_renames_and_deletions() {
        let ws = Workspace::at("/nowhere/runs");
        let mut tab = TrainTab::default();
        let mut last = None;
        let _ = tab.runs_listed(Some(&ws), &[summary("a", None)], &mut last);
        tab.run_read(details("a"), false, &mut last);
        tab.run_read(details("b"), true, &mut last);
        assert_eq!(last.as_deref(), Some("a"));
        assert_eq!(tab.shown().name.as_deref(), Some("a"));

        let mut renamed = summary("a", None);
        renamed.display_name = Some("baseline".into());
        let _ = tab.runs_listed(Some(&ws), &[renamed, summary("b", None)], &mut last);
        assert_eq!(tab.shown().title, "baseline");
        assert_eq!(tab.compare.as_ref().unwrap().name, "b");

        let _ = tab.runs_listed(Some(&ws), &[summary("a", None)], &mut last);
        assert!(tab.compare.is_none(), "the compared run was deleted");
        let _ = tab.runs_listed(Some(&ws), &[], &mut last);
        assert_eq!(tab.shown().name, None, "the shown run was deleted");
        assert_eq!(last, None);
    }
}
