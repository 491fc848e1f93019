//! The workspace of training runs: every run is a folder under `runs/` of the data folder
//! (see [`paths`]), named `DATE-mode-dataset` (e.g. `2026-11-29T2210-extract-fashion-mini`),
//! holding the model, its history and its evaluation (see [`run`]); never overwritten. A run's
//! folder name can be given wherever a model is (`--model NAME`).

pub mod destination;
pub mod evaluation;
pub mod name;
pub mod paths;
pub mod run;
pub mod stamp;

use std::path::{Path, PathBuf};

use crate::train::Mode;
use crate::{Error, Result};
pub use destination::Destination;
pub use evaluation::{SavedEvaluation, evaluate_saved};
pub use run::{History, PhaseSpan, RunDetails, RunRecord, RunSummary};
use stamp::Stamp;

/// How many numbered names (`-2`, `-3` ...) a new run tries before giving up.
const MAX_TRIES: usize = 1000;

/// A folder of runs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Workspace {
    runs: PathBuf,
}

impl Workspace {
    /// The user's workspace: `runs/` in the data folder ([`paths::data_dir`]).
    pub fn open_default() -> Result<Workspace> {
        Ok(Workspace::at(paths::data_dir()?.join("runs")))
    }

    /// The workspace whose runs are the subfolders of `runs_dir` (made when the first run is).
    pub fn at(runs_dir: impl Into<PathBuf>) -> Workspace {
        Workspace {
            runs: runs_dir.into(),
        }
    }

    /// The folder holding the runs.
    pub fn runs_dir(&self) -> &Path {
        &self.runs
    }

    /// Makes the folder of a new run of `mode` on the dataset folder `data_dir`, named after
    /// the current time, and writes its record; returns its path.
    pub fn create_run(&self, mode: Mode, data_dir: &Path) -> Result<PathBuf> {
        self.create_run_at(&Stamp::now(), mode, data_dir)
    }

    /// [`Workspace::create_run`] at a given time: the name gets `-2`, `-3` ... when taken
    /// (made with `create_dir`, so two processes never get the same folder).
    pub fn create_run_at(&self, when: &Stamp, mode: Mode, data_dir: &Path) -> Result<PathBuf> {
        std::fs::create_dir_all(&self.runs).map_err(|e| Error::io(&self.runs, e))?;
        let record = run::RunRecord::new(when, mode, data_dir);
        let base = name::base_name(when, mode, &record.dataset);
        for n in 1..=MAX_TRIES {
            let dir = self.runs.join(name::numbered(&base, n));
            match std::fs::create_dir(&dir) {
                Ok(()) => {
                    if let Err(e) = record.write(&dir) {
                        let _ = std::fs::remove_dir_all(&dir);
                        return Err(e);
                    }
                    return Ok(dir);
                }
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(Error::io(dir, e)),
            }
        }
        Err(Error::Workspace(format!(
            "{}: {MAX_TRIES} runs named {base}[-N] already exist",
            self.runs.display()
        )))
    }

    /// Removes a run folder that holds nothing but its record (a run that failed before saving
    /// a model), so failed attempts do not pile up; returns whether it was removed.
    pub fn discard_unsaved(&self, dir: &Path) -> Result<bool> {
        let entries: Vec<_> = std::fs::read_dir(dir)
            .map_err(|e| Error::io(dir, e))?
            .collect::<std::io::Result<_>>()
            .map_err(|e| Error::io(dir, e))?;
        let only_record = entries.len() == 1 && entries[0].file_name() == run::RECORD;
        if !only_record || dir.parent() != Some(self.runs.as_path()) {
            return Ok(false);
        }
        std::fs::remove_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        Ok(true)
    }

    /// Every run, newest first (damaged folders too, each with its problem). Hidden entries and
    /// files are not runs and are skipped; no folder yet means no runs.
    pub fn list(&self) -> Result<Vec<RunSummary>> {
        let entries = match std::fs::read_dir(&self.runs) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(Error::io(&self.runs, e)),
        };
        let mut runs = Vec::new();
        for entry in entries {
            let entry = entry.map_err(|e| Error::io(&self.runs, e))?;
            let path = entry.path();
            if entry.file_name().to_string_lossy().starts_with('.') || !path.is_dir() {
                continue;
            }
            runs.push(run::read(&path).summary);
        }
        runs.sort_by(|a, b| b.created.cmp(&a.created).then(b.name.cmp(&a.name)));
        Ok(runs)
    }

    /// The folder of the run `name` (a folder name in the workspace).
    pub fn find(&self, name: &str) -> Result<PathBuf> {
        name::check(name)?;
        let dir = self.runs.join(name);
        if dir.is_dir() {
            return Ok(dir);
        }
        let newest: Vec<String> = self
            .list()
            .unwrap_or_default()
            .into_iter()
            .take(5)
            .map(|r| r.name)
            .collect();
        Err(Error::Workspace(format!(
            "no run `{name}` in {} ({})",
            self.runs.display(),
            if newest.is_empty() {
                "it has no runs yet".to_string()
            } else {
                format!("newest: {}", newest.join(", "))
            }
        )))
    }

    /// The run `name` read in full (its problem, if any, in the summary).
    pub fn show(&self, name: &str) -> Result<RunDetails> {
        Ok(run::read(&self.find(name)?))
    }

    /// Renames the folder of run `name` to `new_name` (refused when that name is taken or not
    /// a safe folder name); returns the new path.
    pub fn rename(&self, name: &str, new_name: &str) -> Result<PathBuf> {
        let from = self.find(name)?;
        run::check_is_run(&from)?;
        name::check(new_name)?;
        let to = self.runs.join(new_name);
        if std::fs::symlink_metadata(&to).is_ok() {
            return Err(Error::Workspace(format!(
                "{}: already exists; choose another name",
                to.display()
            )));
        }
        std::fs::rename(&from, &to).map_err(|e| Error::io(&to, e))?;
        Ok(to)
    }

    /// Sets the name shown for run `name` (its folder keeps its name); `None` or blank text
    /// clears it.
    pub fn set_display_name(&self, name: &str, display: Option<&str>) -> Result<()> {
        let dir = self.find(name)?;
        let mut record = RunRecord::read(&dir)?;
        let display = display.map(str::trim).filter(|d| !d.is_empty());
        let unfit = |d: &str| d.chars().any(char::is_control) || d.chars().count() > 200;
        if display.is_some_and(unfit) {
            return Err(Error::Workspace(format!(
                "`{}` cannot name a run: at most 200 characters, no control characters",
                display.unwrap_or_default()
            )));
        }
        record.display_name = display.map(str::to_string);
        record.write(&dir)
    }

    /// Deletes run `name`: only a folder of this workspace that holds a `run.json` and nothing
    /// but the files convlens writes there; anything else is refused and left as it is.
    pub fn delete(&self, name: &str) -> Result<()> {
        let dir = self.find(name)?;
        run::check_is_run(&dir)?;
        // Hidden first (a rename), so a deletion cut short never shows as a damaged run.
        let doomed = self
            .runs
            .join(format!(".deleting-{name}-{}", std::process::id()));
        std::fs::rename(&dir, &doomed).map_err(|e| Error::io(&dir, e))?;
        std::fs::remove_dir_all(&doomed).map_err(|e| Error::io(&doomed, e))
    }
}

/// The folder of the run `name` in the user's workspace, if there is one: how a run's name
/// works as a model (`--model NAME`). Names that are not run names give `None`.
pub fn find_run(name: &str) -> Option<PathBuf> {
    name::check(name).ok()?;
    let dir = Workspace::open_default().ok()?.runs.join(name);
    dir.is_dir().then_some(dir)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::train_transform::TrainTransform;
    use crate::train::bundle::{TrainedManifest, WEIGHTS, save_manifest};
    use crate::train::{EpochMetrics, TrainConfig};

    fn when(minute: u64) -> Stamp {
        Stamp::from_unix(1_795_990_205 + 60 * minute)
    }

    /// A workspace in a temporary folder and a dataset folder named `fashion-mini`.
    fn setup() -> (tempfile::TempDir, Workspace, PathBuf) {
        let tmp = tempfile::tempdir().unwrap();
        let ws = Workspace::at(tmp.path().join("runs"));
        let data = tmp.path().join("fashion-mini");
        std::fs::create_dir(&data).unwrap();
        (tmp, ws, data)
    }

    /// Writes a trained-model manifest with one epoch of validation accuracy `acc` (and a
    /// stand-in weights file: nothing here loads it).
    fn save_model(dir: &Path, acc: f32) {
        let mut m = TrainedManifest::new(
            &TrainConfig::default(),
            &["a".to_string(), "b".to_string()],
            TrainTransform::new(224, [0.0; 3], [1.0; 3]),
            None,
            None,
            Vec::new(),
            "conv5",
        );
        m.history = vec![EpochMetrics {
            phase: "head".into(),
            epoch: 1,
            train_loss: 0.4,
            train_accuracy: 0.9,
            val_loss: 0.3,
            val_accuracy: acc,
            secs: 0.1,
            best: true,
        }];
        m.best_val_loss = 0.3;
        m.best_val_accuracy = acc;
        save_manifest(dir, &m).unwrap();
        std::fs::write(dir.join(WEIGHTS), b"stand-in").unwrap();
    }

    #[test]
    fn new_runs_get_unique_names_and_a_record() {
        let (_tmp, ws, data) = setup();
        let first = ws.create_run_at(&when(0), Mode::Extract, &data).unwrap();
        let second = ws.create_run_at(&when(0), Mode::Extract, &data).unwrap();
        let third = ws.create_run_at(&when(0), Mode::Extract, &data).unwrap();
        let name = |p: &Path| p.file_name().unwrap().to_string_lossy().into_owned();
        assert_eq!(name(&first), "2026-11-29T2210-extract-fashion-mini");
        assert_eq!(name(&second), "2026-11-29T2210-extract-fashion-mini-2");
        assert_eq!(name(&third), "2026-11-29T2210-extract-fashion-mini-3");
        let record = RunRecord::read(&second).unwrap();
        assert_eq!(record.mode, Mode::Extract);
        assert_eq!(record.dataset, "fashion-mini");
        assert_eq!(record.created, "2026-11-29T22:10:05Z");
        // A run that saved nothing can be discarded; one with a model cannot.
        assert!(ws.discard_unsaved(&third).unwrap());
        assert!(!third.exists());
        save_model(&first, 0.5);
        assert!(!ws.discard_unsaved(&first).unwrap());
        assert!(first.join(run::RECORD).is_file());
    }

    #[test]
    fn lists_newest_first_with_damaged_folders_and_their_problems() {
        let (_tmp, ws, data) = setup();
        assert_eq!(ws.list().unwrap(), Vec::new(), "no folder yet: no runs");
        let old = ws.create_run_at(&when(0), Mode::Extract, &data).unwrap();
        save_model(&old, 0.75);
        let new = ws.create_run_at(&when(5), Mode::Finetune, &data).unwrap();
        save_model(&new, 0.5);
        let unsaved = ws.create_run_at(&when(3), Mode::Scratch, &data).unwrap();
        let stranger = ws.runs_dir().join("holiday photos");
        std::fs::create_dir(&stranger).unwrap();
        let garbled = ws.create_run_at(&when(1), Mode::Extract, &data).unwrap();
        std::fs::write(garbled.join(run::RECORD), "{ not json").unwrap();
        std::fs::write(garbled.join(crate::train::bundle::MANIFEST), "[]").unwrap();
        std::fs::write(ws.runs_dir().join("notes.txt"), "a file, not a run").unwrap();
        std::fs::create_dir(ws.runs_dir().join(".deleting-x-1")).unwrap();

        let runs = ws.list().unwrap();
        let names: Vec<&str> = runs.iter().map(|r| r.name.as_str()).collect();
        assert_eq!(runs.len(), 5, "{names:?}");
        let at = |dir: &Path| runs.iter().position(|r| r.path == dir).unwrap();
        assert!(
            at(&new) < at(&unsaved) && at(&unsaved) < at(&old),
            "{names:?}"
        );

        let sound = &runs[at(&new)];
        assert_eq!(sound.problem, None);
        assert_eq!(sound.mode, Some(Mode::Finetune));
        assert_eq!(sound.dataset.as_deref(), Some("fashion-mini"));
        assert_eq!(sound.best_val_accuracy, Some(0.5));
        assert_eq!(sound.epochs, 1);
        assert_eq!(runs[at(&old)].best_val_accuracy, Some(0.75));

        let problem = |dir: &Path| runs[at(dir)].problem.clone().unwrap_or_default();
        assert!(
            problem(&unsaved).contains("no model.json"),
            "{}",
            problem(&unsaved)
        );
        assert_eq!(runs[at(&unsaved)].best_val_accuracy, None);
        assert!(
            problem(&stranger).contains("no run.json"),
            "{}",
            problem(&stranger)
        );
        assert!(
            problem(&garbled).contains("run.json"),
            "{}",
            problem(&garbled)
        );
        assert!(
            problem(&garbled).contains("model.json"),
            "{}",
            problem(&garbled)
        );
    }

    #[test]
    fn show_reads_history_and_evaluation_and_find_names_the_runs() {
        let (_tmp, ws, data) = setup();
        let dir = ws.create_run_at(&when(0), Mode::Extract, &data).unwrap();
        save_model(&dir, 0.5);
        let name = dir.file_name().unwrap().to_str().unwrap();
        let details = ws.show(name).unwrap();
        assert_eq!(details.history.kept, Some(0));
        assert_eq!(details.history.phases.len(), 1);
        assert_eq!(details.evaluation, None);
        assert_eq!(details.manifest.unwrap().classes, vec!["a", "b"]);
        let err = ws.find("nope").unwrap_err().to_string();
        assert!(err.contains("no run `nope`") && err.contains(name), "{err}");
        let err = ws.find("../runs").unwrap_err().to_string();
        assert!(err.contains("cannot name a run"), "{err}");
    }

    #[test]
    fn rename_checks_the_new_name_and_collisions() {
        let (_tmp, ws, data) = setup();
        let a = ws.create_run_at(&when(0), Mode::Extract, &data).unwrap();
        let b = ws.create_run_at(&when(1), Mode::Extract, &data).unwrap();
        save_model(&a, 0.5);
        let a_name = a.file_name().unwrap().to_str().unwrap();
        let b_name = b.file_name().unwrap().to_str().unwrap();
        let err = ws.rename(a_name, b_name).unwrap_err().to_string();
        assert!(err.contains("already exists"), "{err}");
        assert!(ws.rename(a_name, "a/b").is_err());
        assert!(ws.rename(a_name, "CON").is_err());
        let moved = ws.rename(a_name, "good run").unwrap();
        assert_eq!(moved, ws.runs_dir().join("good run"));
        assert!(!a.exists());
        assert_eq!(
            ws.show("good run").unwrap().summary.best_val_accuracy,
            Some(0.5)
        );

        ws.set_display_name(b_name, Some("  baseline  ")).unwrap();
        let shown = ws.show(b_name).unwrap().summary;
        assert_eq!(shown.display_name.as_deref(), Some("baseline"));
        ws.set_display_name(b_name, Some("")).unwrap();
        assert_eq!(ws.show(b_name).unwrap().summary.display_name, None);
        assert!(ws.set_display_name(b_name, Some("bell\u{7}")).is_err());
    }

    #[test]
    fn delete_removes_runs_and_refuses_anything_else() {
        let (tmp, ws, data) = setup();
        let run = ws.create_run_at(&when(0), Mode::Extract, &data).unwrap();
        save_model(&run, 0.5);
        std::fs::write(run.join(".model.json.123.tmp"), "left by a crash").unwrap();
        ws.delete(run.file_name().unwrap().to_str().unwrap())
            .unwrap();
        assert!(!run.exists());
        assert_eq!(std::fs::read_dir(ws.runs_dir()).unwrap().count(), 0);

        // Not a run: no record.
        let stranger = ws.runs_dir().join("photos");
        std::fs::create_dir(&stranger).unwrap();
        std::fs::write(stranger.join("cat.jpg"), "precious").unwrap();
        let err = ws.delete("photos").unwrap_err().to_string();
        assert!(err.contains("not a run") && err.contains("photos"), "{err}");
        // A run folder the user put other files into.
        let mixed = ws.create_run_at(&when(1), Mode::Extract, &data).unwrap();
        std::fs::write(mixed.join("cat.jpg"), "precious").unwrap();
        std::fs::create_dir(mixed.join("figures")).unwrap();
        let mixed_name = mixed.file_name().unwrap().to_str().unwrap();
        let err = ws.delete(mixed_name).unwrap_err().to_string();
        assert!(err.contains("cat.jpg, figures"), "{err}");
        // Names that leave the workspace, and a missing run.
        assert!(ws.delete("..").is_err());
        assert!(ws.delete("../fashion-mini").is_err());
        assert!(ws.delete("missing").is_err());
        assert_eq!(
            std::fs::read(stranger.join("cat.jpg")).unwrap(),
            b"precious"
        );
        assert_eq!(std::fs::read(mixed.join("cat.jpg")).unwrap(), b"precious");
        assert!(data.is_dir() && tmp.path().join("runs").is_dir());
        #[cfg(unix)]
        {
            // A link to a run elsewhere is not deleted through.
            let elsewhere = Workspace::at(tmp.path().join("other"));
            let target = elsewhere
                .create_run_at(&when(2), Mode::Extract, &data)
                .unwrap();
            std::os::unix::fs::symlink(&target, ws.runs_dir().join("link")).unwrap();
            let err = ws.delete("link").unwrap_err().to_string();
            assert!(err.contains("link"), "{err}");
            assert!(target.join(run::RECORD).is_file());
        }
    }
}
