//! Where convlens keeps its files: settings (the config folder), feature caches (the cache
//! folder) and training runs (the data folder), in the platform's usual places as the
//! `directories` crate knows them:
//!
//! | folder | Linux | macOS | Windows |
//! | --- | --- | --- | --- |
//! | config | `$XDG_CONFIG_HOME/convlens` or `~/.config/convlens` | `~/Library/Application Support/convlens` | `%APPDATA%\convlens\config` |
//! | cache | `$XDG_CACHE_HOME/convlens` or `~/.cache/convlens` | `~/Library/Caches/convlens` | `%LOCALAPPDATA%\convlens\cache` |
//! | data | `$XDG_DATA_HOME/convlens` or `~/.local/share/convlens` | `~/Library/Application Support/convlens` | `%APPDATA%\convlens\data` |
//!
//! (`directories` uses an XDG variable only when it holds an absolute path.) Each folder has an
//! override, `CONVLENS_CONFIG`, `CONVLENS_CACHE` and `CONVLENS_DATA`, which tests and CI use so
//! that they never write into the real home folder. Nothing else in convlens reads these
//! variables.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use directories::ProjectDirs;

use crate::{Error, Result};

/// The kinds of folder convlens writes to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Folder {
    /// Settings of the desktop app.
    Config,
    /// Feature caches (safe to delete).
    Cache,
    /// Training runs.
    Data,
}

impl Folder {
    /// The environment variable that overrides this folder.
    pub fn variable(self) -> &'static str {
        match self {
            Folder::Config => "CONVLENS_CONFIG",
            Folder::Cache => "CONVLENS_CACHE",
            Folder::Data => "CONVLENS_DATA",
        }
    }

    /// What convlens keeps there, for messages.
    fn holds(self) -> &'static str {
        match self {
            Folder::Config => "settings",
            Folder::Cache => "feature caches",
            Folder::Data => "training runs",
        }
    }

    fn of(self, dirs: &ProjectDirs) -> &Path {
        match self {
            Folder::Config => dirs.config_dir(),
            Folder::Cache => dirs.cache_dir(),
            Folder::Data => dirs.data_dir(),
        }
    }
}

/// The platform's folders for convlens (`None` when the user's home folder is unknown).
fn platform() -> Option<ProjectDirs> {
    ProjectDirs::from("", "", "convlens")
}

/// The folder of `kind` from its override's value (`override_value`) or the platform's
/// folders. An empty override counts as unset; a relative one is taken from the current folder.
fn resolve(
    kind: Folder,
    override_value: Option<OsString>,
    platform: Option<&ProjectDirs>,
) -> Result<PathBuf> {
    if let Some(value) = override_value.filter(|v| !v.is_empty()) {
        let path = PathBuf::from(value);
        return std::path::absolute(&path).map_err(|e| Error::io(path, e));
    }
    platform
        .map(|dirs| kind.of(dirs).to_path_buf())
        .ok_or_else(|| {
            Error::Workspace(format!(
                "no home folder found to keep {} in; set {} to a folder",
                kind.holds(),
                kind.variable()
            ))
        })
}

/// The folder of `kind` for this process: its variable when set, else the platform's.
pub fn folder(kind: Folder) -> Result<PathBuf> {
    resolve(kind, std::env::var_os(kind.variable()), platform().as_ref())
}

/// The settings folder: `$CONVLENS_CONFIG`, else the platform's config folder.
pub fn config_dir() -> Result<PathBuf> {
    folder(Folder::Config)
}

/// The feature-cache folder: `$CONVLENS_CACHE`, else the platform's cache folder.
pub fn cache_dir() -> Result<PathBuf> {
    folder(Folder::Cache)
}

/// The data folder (training runs live in its `runs/`): `$CONVLENS_DATA`, else the platform's.
pub fn data_dir() -> Result<PathBuf> {
    folder(Folder::Data)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dirs() -> ProjectDirs {
        ProjectDirs::from_path(PathBuf::from("convlens")).expect("a home folder in tests")
    }

    #[test]
    fn an_override_wins_and_an_empty_one_is_ignored() {
        let tmp = tempfile::tempdir().unwrap();
        let platform = dirs();
        for kind in [Folder::Config, Folder::Cache, Folder::Data] {
            let chosen = resolve(kind, Some(tmp.path().into()), Some(&platform)).unwrap();
            assert_eq!(chosen, tmp.path());
            let default = resolve(kind, Some(OsString::new()), Some(&platform)).unwrap();
            assert_eq!(default, kind.of(&platform));
            assert_eq!(resolve(kind, None, Some(&platform)).unwrap(), default);
        }
    }

    #[test]
    fn the_three_platform_folders_are_convlens_own() {
        let platform = dirs();
        for kind in [Folder::Config, Folder::Cache, Folder::Data] {
            let path = resolve(kind, None, Some(&platform)).unwrap();
            assert!(
                path.components().any(|c| c.as_os_str() == "convlens"),
                "{}",
                path.display()
            );
        }
        assert_ne!(
            resolve(Folder::Cache, None, Some(&platform)).unwrap(),
            resolve(Folder::Data, None, Some(&platform)).unwrap()
        );
    }

    #[test]
    fn a_relative_override_is_made_absolute() {
        let path = resolve(Folder::Data, Some("runs-here".into()), None).unwrap();
        assert!(path.is_absolute());
        assert!(path.ends_with("runs-here"));
    }

    #[test]
    fn no_home_and_no_override_names_the_variable() {
        let err = resolve(Folder::Data, None, None).unwrap_err().to_string();
        assert!(err.contains("CONVLENS_DATA"), "{err}");
        assert!(err.contains("training runs"), "{err}");
    }
}
