//! Where a training run writes its model: a folder the user named (checked and locked before
//! any work, replaced as a whole only when asked) or a new run folder of the workspace. Used
//! alike by the CLI and the desktop app.

use std::path::{Path, PathBuf};

use super::Workspace;
use crate::Result;
use crate::fsutil::OutputDir;
use crate::train::Mode;

/// The folder a training run saves into.
pub enum Destination {
    /// A folder the user named (`train --out`, the app's "save to").
    Named(OutputDir),
    /// A new run folder of the workspace.
    Run { workspace: Workspace, dir: PathBuf },
}

impl Destination {
    /// `dir` when one is named (refused when it exists and is not empty unless `overwrite`;
    /// locked), else a new run folder of the user's workspace for a `mode` run on `data_dir`.
    pub fn open(
        dir: Option<&Path>,
        overwrite: bool,
        mode: Mode,
        data_dir: &Path,
    ) -> Result<Destination> {
        Ok(match dir {
            Some(dir) => Destination::Named(OutputDir::open(dir, overwrite)?),
            None => Destination::new_run(Workspace::open_default()?, mode, data_dir)?,
        })
    }

    /// A new run folder of `workspace` for a `mode` run on `data_dir`.
    pub fn new_run(workspace: Workspace, mode: Mode, data_dir: &Path) -> Result<Destination> {
        let dir = workspace.create_run(mode, data_dir)?;
        Ok(Destination::Run { workspace, dir })
    }

    /// The folder training writes into (for a replaced folder, a hidden one beside it).
    pub fn work(&self) -> &Path {
        match self {
            Destination::Named(out) => out.work(),
            Destination::Run { dir, .. } => dir,
        }
    }

    /// Keeps what was written (a replacement is renamed into place); returns the model's folder.
    pub fn keep(&self) -> Result<&Path> {
        match self {
            Destination::Named(out) => out.commit(),
            Destination::Run { dir, .. } => Ok(dir),
        }
    }

    /// Removes what a run that saved nothing left behind; returns a note on what stays
    /// unchanged (empty, or `; DIR is unchanged` for a folder that was to be replaced).
    pub fn discard(&self) -> String {
        match self {
            Destination::Named(out) => {
                out.discard();
                if out.work() == out.target() {
                    String::new()
                } else {
                    format!("; {} is unchanged", out.target().display())
                }
            }
            Destination::Run { workspace, dir } => {
                // A folder that holds more than its record is kept (it is a run).
                let _ = workspace.discard_unsaved(dir);
                String::new()
            }
        }
    }
}
