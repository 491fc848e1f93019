//! What the figure subcommands share: output paths (checked before any work, never an
//! input), a folder of images in place of one image, and the index written beside a folder's
//! figures.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};

use crate::export::{self, Exported, FigureRequest};
use crate::fsutil::{self, FileId};
use crate::zoo::Model;
use crate::{Error, Result};

/// Image file extensions a folder is scanned for.
const IMAGE_EXTENSIONS: [&str; 9] = [
    "png", "jpg", "jpeg", "gif", "bmp", "tif", "tiff", "webp", "jfif",
];

/// The images of a folder (not recursive), sorted by name.
pub fn images_in(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut images: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| Error::io(dir, e))?
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.is_file()
                && p.extension().is_some_and(|e| {
                    IMAGE_EXTENSIONS.contains(&e.to_string_lossy().to_lowercase().as_str())
                })
        })
        .collect();
    images.sort();
    if images.is_empty() {
        return Err(Error::Model(format!(
            "{}: no images in this folder ({})",
            dir.display(),
            IMAGE_EXTENSIONS.join(", ")
        )));
    }
    Ok(images)
}

/// `chelsea.png` + `head-gradcam` -> `chelsea-head-gradcam.png` (in the current folder).
pub fn default_out(image: Option<&Path>, suffix: &str) -> PathBuf {
    let stem = image
        .and_then(|p| p.file_stem())
        .map(|s| s.to_string_lossy().into_owned());
    let name = match stem {
        Some(stem) => format!("{stem}-{suffix}.png"),
        None => format!("{suffix}.png"),
    };
    PathBuf::from(sanitize(&name))
}

/// Checks a figure's output path before any work: a supported extension, not inside an input
/// that is a folder of images, a writable folder (created if missing), and neither the figure
/// nor its sidecar one of the `inputs`.
pub fn check_figure_out(out: &Path, inputs: &[&Path]) -> Result<()> {
    export::check_figure_path(out)?;
    for folder in inputs.iter().filter(|i| i.is_dir()) {
        check_outside(out, folder)?;
    }
    fsutil::ensure_writable_file(out)?;
    fsutil::check_not_input(out, inputs)?;
    fsutil::check_not_input(&export::sidecar_path(out), inputs)
}

/// Refuses a figure anywhere inside the folder of images `folder`: it would become one of the
/// images the next run reads (a class's image, in a labelled folder).
pub fn check_outside(out: &Path, folder: &Path) -> Result<()> {
    let Ok(folder_real) = std::fs::canonicalize(folder) else {
        return Ok(());
    };
    // The nearest folder of `out` that exists (the rest would be created inside it).
    let absolute = std::path::absolute(out).map_err(|e| Error::io(out, e))?;
    let Some(existing) = absolute.ancestors().skip(1).find(|a| a.is_dir()) else {
        return Ok(());
    };
    match std::fs::canonicalize(existing) {
        Ok(dir) if dir.starts_with(&folder_real) => Err(Error::Model(format!(
            "refusing to write {} inside the image folder {}: it would become one of its \
             images; choose an --out outside it",
            out.display(),
            folder.display()
        ))),
        _ => Ok(()),
    }
}

/// Checks a folder's output folder before any work: writable (created if missing) and not the
/// folder of images itself (figures there would mix with, and could replace, the inputs).
pub fn check_folder_out(out_dir: &Path, folder: &Path) -> Result<()> {
    if FileId::of(out_dir).is_some() && FileId::of(out_dir) == FileId::of(folder) {
        return Err(Error::Model(format!(
            "refusing to write figures into {}: it is the input folder {}; choose another --out",
            out_dir.display(),
            folder.display()
        )));
    }
    fsutil::ensure_writable_dir(out_dir)
}

/// Checks an explicit `--out` for `image` (a file, or a folder of images) before any work.
pub fn check_out(out: Option<&Path>, image: &Path) -> Result<()> {
    match out {
        Some(out) if image.is_dir() => check_folder_out(out, image),
        Some(out) => check_figure_out(out, &[image]),
        None => Ok(()),
    }
}

/// The figure file name of each image of a folder: `<stem>.png`, or `<stem>_<ext>.png` when
/// another image shares the stem (`x.jpg` and `x.png` give `x_jpg.png` and `x_png.png`); a
/// name still taken (after replacing odd characters, ignoring case) gets `-2`, `-3` ... The
/// same folder always gives the same names.
pub fn figure_names(images: &[PathBuf]) -> Vec<String> {
    let stem = |p: &Path| {
        p.file_stem()
            .map_or_else(|| "figure".into(), |s| s.to_string_lossy().into_owned())
    };
    let mut stems: HashMap<String, usize> = HashMap::new();
    for image in images {
        *stems.entry(stem(image).to_lowercase()).or_default() += 1;
    }
    let mut used = HashSet::new();
    images
        .iter()
        .map(|image| {
            let s = stem(image);
            let base = if stems[&s.to_lowercase()] > 1 {
                let ext = image
                    .extension()
                    .map(|e| e.to_string_lossy().into_owned())
                    .unwrap_or_default();
                sanitize(&format!("{s}_{ext}"))
            } else {
                sanitize(&s)
            };
            let mut name = format!("{base}.png");
            let mut n = 1;
            while !used.insert(name.to_lowercase()) {
                n += 1;
                name = format!("{base}-{n}.png");
            }
            name
        })
        .collect()
}

/// Replaces characters that do not belong in a file name.
fn sanitize(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_alphanumeric() || "-_.+".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// One row of a folder's index.
#[derive(serde::Serialize)]
pub struct IndexRow {
    pub image: String,
    pub figure: String,
    pub sidecar: String,
    pub result: serde_json::Value,
    pub error: Option<String>,
}

/// Exports one figure per image of a folder into `out_dir` (names from [`figure_names`], each
/// with its sidecar), then `index.csv` and `index.json`. `make(image)` builds each request;
/// `csv_columns` picks result fields for the CSV. A failing image is recorded in the index and
/// reported; the exit code is 1 if any failed. `out_dir` is checked before any work.
#[allow(clippy::too_many_arguments)]
pub fn export_folder(
    model: &Model,
    model_source: &str,
    folder: &Path,
    out_dir: &Path,
    scale: u32,
    csv_columns: &[&str],
    make: &dyn Fn(&Path) -> FigureRequest,
    on_done: &mut dyn FnMut(&Path, &Result<Exported>),
) -> Result<(Vec<IndexRow>, usize)> {
    let images = images_in(folder)?;
    check_folder_out(out_dir, folder)?;
    let inputs: Vec<&Path> = images.iter().map(PathBuf::as_path).collect();
    let mut bar = super::Progress::new(images.len() as u64, "figures");
    let mut rows = Vec::new();
    let mut failed = 0;
    for (image, name) in images.iter().zip(figure_names(&images)) {
        let out = out_dir.join(name);
        let res = fsutil::check_not_input(&out, &inputs)
            .and_then(|()| fsutil::check_not_input(&export::sidecar_path(&out), &inputs))
            .and_then(|()| {
                export::export(
                    model,
                    model_source,
                    &make(image),
                    scale,
                    &out,
                    &mut |_, _| true,
                )
            });
        bar.suspend(|| on_done(image, &res));
        rows.push(match res {
            Ok(e) => IndexRow {
                image: image.display().to_string(),
                figure: e.png.display().to_string(),
                sidecar: e.sidecar.display().to_string(),
                result: e.result,
                error: None,
            },
            Err(e) => {
                failed += 1;
                IndexRow {
                    image: image.display().to_string(),
                    figure: String::new(),
                    sidecar: String::new(),
                    result: serde_json::Value::Null,
                    error: Some(e.to_string()),
                }
            }
        });
        bar.inc(1);
    }
    bar.finish();
    write_index(out_dir, &rows, csv_columns)?;
    Ok((rows, failed))
}

fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

/// Writes `index.json` (every row) and `index.csv` (image, figure, the chosen result fields,
/// error) into `dir`.
pub fn write_index(dir: &Path, rows: &[IndexRow], columns: &[&str]) -> Result<()> {
    crate::fsutil::write_json_atomic(&dir.join("index.json"), rows)?;
    let mut csv = String::from("image,figure");
    for c in columns {
        csv.push(',');
        csv.push_str(c);
    }
    csv.push_str(",error\n");
    for r in rows {
        csv.push_str(&csv_field(&r.image));
        csv.push(',');
        csv.push_str(&csv_field(&r.figure));
        for c in columns {
            csv.push(',');
            let v = match &r.result[*c] {
                serde_json::Value::Null => String::new(),
                serde_json::Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            csv.push_str(&csv_field(&v));
        }
        csv.push(',');
        csv.push_str(&csv_field(r.error.as_deref().unwrap_or("")));
        csv.push('\n');
    }
    crate::fsutil::write_atomic(&dir.join("index.csv"), csv.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_names() {
        assert_eq!(
            default_out(Some(Path::new("a/chelsea.png")), "head-gradcam"),
            PathBuf::from("chelsea-head-gradcam.png")
        );
        assert_eq!(
            default_out(None, "blocks.4-filters"),
            PathBuf::from("blocks.4-filters.png")
        );
        assert_eq!(csv_field("a,b"), "\"a,b\"");
    }

    #[test]
    fn figure_names_never_collide() {
        let images: Vec<PathBuf> = ["a.png", "x.JPG", "x.png", "x_png.png", "y z.png", "y_z.png"]
            .iter()
            .map(PathBuf::from)
            .collect();
        let names = figure_names(&images);
        assert_eq!(
            names,
            [
                "a.png",
                "x_JPG.png",
                "x_png.png",
                "x_png-2.png",
                "y_z.png",
                "y_z-2.png"
            ]
        );
        assert_eq!(figure_names(&images), names, "stable");
    }
}
