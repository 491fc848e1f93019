//! File names for exported figures: built from what the figure shows (method, model, class,
//! image), made safe for every file system, and never the name of a file already there.

use std::path::{Path, PathBuf};

use super::sidecar_path;

/// The longest stem [`figure_stem`] builds, in characters (file systems allow 255 bytes; the
/// numeric suffix and the extension need room).
const MAX_STEM: usize = 120;

/// A file-name-safe stem from `parts`: each part's ASCII letters, digits and `-` kept, every
/// other run of characters one `_`, empty parts left out, the parts joined by `_`, at most
/// [`MAX_STEM`] characters; `figure` when nothing is left.
/// `figure_stem(&["gradcam", "trained: run/1", "", "chelsea"])` is `gradcam_trained_run_1_chelsea`.
pub fn figure_stem(parts: &[&str]) -> String {
    let mut out = String::new();
    for part in parts {
        let mut clean = String::new();
        for c in part.chars() {
            if c.is_ascii_alphanumeric() || c == '-' {
                clean.push(c);
            } else if !clean.is_empty() && !clean.ends_with('_') {
                clean.push('_');
            }
        }
        let clean = clean.trim_end_matches('_');
        if clean.is_empty() {
            continue;
        }
        if !out.is_empty() {
            out.push('_');
        }
        out.push_str(clean);
    }
    let mut out: String = out.chars().take(MAX_STEM).collect();
    while out.ends_with('_') {
        out.pop();
    }
    if out.is_empty() { "figure".into() } else { out }
}

/// `path` when neither it nor its sidecar exists, else the first of `STEM_2.EXT`,
/// `STEM_3.EXT`, ... in the same folder for which neither exists: an export never writes over
/// a figure or a sidecar already there.
pub fn unused_path(path: &Path) -> PathBuf {
    let taken = |p: &Path| p.exists() || sidecar_path(p).exists();
    if !taken(path) {
        return path.to_path_buf();
    }
    let stem = path
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "figure".into());
    let ext = path
        .extension()
        .map(|e| format!(".{}", e.to_string_lossy()))
        .unwrap_or_default();
    (2u64..)
        .map(|n| path.with_file_name(format!("{stem}_{n}{ext}")))
        .find(|p| !taken(p))
        .unwrap_or_else(|| path.to_path_buf())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stems_keep_letters_digits_and_dashes_only() {
        assert_eq!(
            figure_stem(&["gradcam", "trained: run/1", "", "chelsea"]),
            "gradcam_trained_run_1_chelsea"
        );
        assert_eq!(
            figure_stem(&["score-cam", "base: lite0", "Egyptian cat", "a b"]),
            "score-cam_base_lite0_Egyptian_cat_a_b"
        );
        // What once made `gradcam__.png`: empty and unsafe parts.
        assert_eq!(figure_stem(&["gradcam", "", "../..", "é"]), "gradcam");
        assert_eq!(figure_stem(&["", "/"]), "figure");
        let long = "x".repeat(300);
        assert_eq!(figure_stem(&[&long]).len(), MAX_STEM);
    }

    #[test]
    fn an_existing_figure_or_sidecar_gets_a_numbered_name() {
        let dir = tempfile::tempdir().unwrap();
        let png = dir.path().join("cam.png");
        assert_eq!(unused_path(&png), png);
        std::fs::write(&png, b"x").unwrap();
        assert_eq!(unused_path(&png), dir.path().join("cam_2.png"));
        // A sidecar alone also takes the name.
        std::fs::write(dir.path().join("cam_2.json"), b"{}").unwrap();
        assert_eq!(unused_path(&png), dir.path().join("cam_3.png"));
    }
}
