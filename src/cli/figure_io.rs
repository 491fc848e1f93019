//! What the figure subcommands share: output paths, a folder of images in place of one image,
//! and the index written beside a folder's figures.

use std::path::{Path, PathBuf};

use crate::export::{self, Exported, FigureRequest};
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

/// Exports one figure per image of a folder into `out_dir` (`<stem>.png` + sidecar), then
/// `index.csv` and `index.json`. `make(image)` builds each request; `csv_columns` picks result
/// fields for the CSV. A failing image is recorded in the index and reported; the exit code
/// is 1 if any failed.
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
    let bar = super::progress_bar(images.len() as u64, "figures");
    let mut rows = Vec::new();
    let mut failed = 0;
    for image in &images {
        let stem = image
            .file_stem()
            .map_or_else(|| "figure".into(), |s| s.to_string_lossy());
        let out = out_dir.join(sanitize(&format!("{stem}.png")));
        let request = make(image);
        let res = export::export(model, model_source, &request, scale, &out, &mut |_, _| true);
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
    bar.finish_and_clear();
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
    let mut json = serde_json::to_vec_pretty(rows).expect("the index serialises");
    json.push(b'\n');
    crate::fsutil::write_atomic(&dir.join("index.json"), &json)?;
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
}
