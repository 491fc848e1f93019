//! The "pick" buttons: files and folders chosen in the system's dialog (on Linux the
//! xdg-desktop-portal, reached over the D-Bus session bus). When no dialog can open, or one
//! gave nothing, a notice says so under the button's row: every field with such a button
//! also takes a typed or pasted path.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};

/// What a button picks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PickKind {
    File,
    Files,
    Folder,
    /// A file to write (the dialog asks before replacing one).
    Save,
}

/// The notice when this system has no dialog service at all.
pub const NO_SERVICE: &str = "No file dialog is available here (no D-Bus session for \
                              xdg-desktop-portal): type or paste the path instead.";

/// The notice when the dialog gave nothing (cancelled, or it never opened).
pub const NOTHING_PICKED: &str = "Nothing was picked. If no dialog opened, this system has no \
                                  file-dialog service (xdg-desktop-portal): type or paste the \
                                  path instead.";

/// Whether no dialog can open: on Linux, the portal needs a D-Bus session bus, named by
/// `DBUS_SESSION_BUS_ADDRESS` (`bus_address`) or found as `bus` in `XDG_RUNTIME_DIR`
/// (`runtime_dir`). Other systems have their own dialogs.
pub fn no_dialog_service(bus_address: Option<&OsStr>, runtime_dir: Option<&Path>) -> bool {
    cfg!(target_os = "linux")
        && bus_address.is_none_or(OsStr::is_empty)
        && !runtime_dir.is_some_and(|d| d.join("bus").exists())
}

/// [`no_dialog_service`] for this process's environment.
fn no_dialog_service_here() -> bool {
    let bus = std::env::var_os("DBUS_SESSION_BUS_ADDRESS");
    let runtime = std::env::var_os("XDG_RUNTIME_DIR").map(PathBuf::from);
    no_dialog_service(bus.as_deref(), runtime.as_deref())
}

/// A button labelled `text` that opens the dialog; returns what was picked. Without a dialog
/// service, or when the dialog gave nothing, [`notice`] with the same `salt` says so.
pub fn button(ui: &mut egui::Ui, salt: &str, text: &str, kind: PickKind) -> Option<Vec<PathBuf>> {
    let clicked = ui
        .button(text)
        .on_hover_text("opens the system's file dialog; a typed or pasted path works too")
        .clicked();
    if !clicked {
        return None;
    }
    let id = notice_id(salt);
    let picked = if no_dialog_service_here() {
        Err(NO_SERVICE)
    } else {
        let dialog = rfd::FileDialog::new();
        let paths = match kind {
            PickKind::File => dialog.pick_file().map(|p| vec![p]),
            PickKind::Files => dialog.pick_files(),
            PickKind::Folder => dialog.pick_folder().map(|p| vec![p]),
            PickKind::Save => dialog.save_file().map(|p| vec![p]),
        };
        paths.filter(|p| !p.is_empty()).ok_or(NOTHING_PICKED)
    };
    match picked {
        Ok(paths) => {
            ui.data_mut(|d| d.remove::<&'static str>(id));
            Some(paths)
        }
        Err(why) => {
            ui.data_mut(|d| d.insert_temp(id, why));
            None
        }
    }
}

/// [`button`] for one path, as text for a field.
pub fn one(ui: &mut egui::Ui, salt: &str, text: &str, kind: PickKind) -> Option<String> {
    button(ui, salt, text, kind)
        .and_then(|paths| paths.into_iter().next())
        .map(|p| p.to_string_lossy().into_owned())
}

/// Shows why the button `salt` picked nothing, if it did (until a pick succeeds).
pub fn notice(ui: &mut egui::Ui, salt: &str) {
    if let Some(text) = ui.data(|d| d.get_temp::<&'static str>(notice_id(salt))) {
        ui.label(
            egui::RichText::new(text)
                .small()
                .color(ui.visuals().warn_fg_color),
        );
    }
}

fn notice_id(salt: &str) -> egui::Id {
    egui::Id::unique(("pick-notice", salt))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn without_a_session_bus_there_is_no_dialog_on_linux() {
        let tmp = tempfile::tempdir().unwrap();
        let missing = no_dialog_service(None, Some(tmp.path()));
        let empty = no_dialog_service(Some(OsStr::new("")), None);
        assert_eq!(missing, cfg!(target_os = "linux"));
        assert_eq!(empty, cfg!(target_os = "linux"));
        assert!(!no_dialog_service(
            Some(OsStr::new("unix:path=/run/user/1000/bus")),
            None
        ));
        std::fs::write(tmp.path().join("bus"), "").unwrap();
        assert!(!no_dialog_service(None, Some(tmp.path())));
    }
}
