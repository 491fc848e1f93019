//! The figures of the evidence behind a heatmap: the sanity check's correlation-by-stage chart
//! ([`sanity_figure`]) and the faithfulness report's box plots ([`summary_figure`]); each is
//! written with a JSON sidecar that records what it was made from and every number it shows
//! ([`write_with_sidecar`]; these sidecars are records, `convlens reproduce` does not read them).

use std::path::{Path, PathBuf};

use image::{Rgb, RgbImage};
use serde::Serialize;

use super::canvas::{Align, Canvas, INK, MUTED};
use super::plots::{self, BASELINE, Frame, PALETTE};
use super::{ModelRef, VERSION, check_figure_path, figure_bytes, sidecar_path};
use crate::Result;
use crate::fsutil::{write_atomic, write_json_atomic};
use crate::viz::colormap::Colormap;
use crate::viz::faithfulness::Metric;
use crate::viz::sanity::{FLAG_SPEARMAN, Sanity};
use crate::zoo::Model;

const WARN: Rgb<u8> = Rgb([200, 30, 30]);

/// What a sidecar of these figures holds besides the figure's own fields.
#[derive(Serialize)]
struct EvidenceSidecar<'a, T: Serialize> {
    convlens_version: &'a str,
    /// `sanity` or `faithfulness-summary`.
    kind: &'a str,
    model: ModelRef,
    device: String,
    scale: u32,
    png: String,
    png_sha256: String,
    #[serde(flatten)]
    content: &'a T,
}

/// The model a figure was made with, as sidecars record it.
pub fn model_ref(model: &Model, source: &str) -> ModelRef {
    ModelRef {
        name: model.spec.manifest.name.clone(),
        source: source.to_string(),
        weights_sha256: model.weights_hash.clone(),
    }
}

/// Writes `img` to `out` (PNG or JPEG by extension) and the sidecar `out.json` holding
/// `content` (flattened) with the model, the scale and the figure's SHA-256. Returns the
/// sidecar's path.
pub fn write_with_sidecar<T: Serialize>(
    img: &RgbImage,
    out: &Path,
    kind: &str,
    model: &Model,
    model_source: &str,
    scale: u32,
    content: &T,
) -> Result<PathBuf> {
    use sha2::{Digest, Sha256};
    check_figure_path(out)?;
    let bytes = figure_bytes(img, out)?;
    write_atomic(out, &bytes)?;
    let sidecar = sidecar_path(out);
    let record = EvidenceSidecar {
        convlens_version: VERSION,
        kind,
        model: model_ref(model, model_source),
        device: super::device_name(&model.device),
        scale,
        png: out
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default(),
        png_sha256: Sha256::digest(&bytes)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect(),
        content,
    };
    write_json_atomic(&sidecar, &record)?;
    Ok(sidecar)
}

/// A map `[h * w]` in `[0, 1]` as a colour picture of `size` x `size` pixels (nearest).
fn thumbnail(map: &[f32], (h, w): (usize, usize), size: u32, cmap: Colormap) -> RgbImage {
    RgbImage::from_fn(size, size, |x, y| {
        let mx = (x as usize * w / size as usize).min(w.saturating_sub(1));
        let my = (y as usize * h / size as usize).min(h.saturating_sub(1));
        let v = map.get(my * w + mx).copied().unwrap_or(0.0);
        if v.is_finite() {
            Rgb(cmap.rgb(v.clamp(0.0, 1.0)))
        } else {
            Rgb([200, 200, 200])
        }
    })
}

/// The sanity check: the original map and the map after each randomised stage (thumbnails,
/// jet), then Spearman and SSIM to the original by step; a flagged method says so in red.
pub fn sanity_figure(s: &Sanity, title: &str, subtitle: &str, scale: u32) -> RgbImage {
    let k = scale.max(1) as f32;
    let font = 13.0 * k;
    let thumb = (64.0 * k) as u32;
    let per_row = 10usize;
    let n_maps = s.steps.len() + 1;
    let rows = n_maps.div_ceil(per_row);
    let margin = 24.0 * k;
    let width = margin * 2.0 + per_row as f32 * (thumb as f32 + 8.0 * k) + 60.0 * k;
    let thumbs_top = margin + font * 4.2;
    let row_h = thumb as f32 + font * 1.6;
    let chart_top = thumbs_top + rows as f32 * row_h + font * 2.0;
    let chart_h = 300.0 * k;
    let height = chart_top + chart_h + font * 4.0 + margin;
    let mut c = Canvas::new(width as u32, height as u32);
    c.text(title, margin, margin, font * 1.3, INK, Align::Left);
    c.text(
        subtitle,
        margin,
        margin + font * 1.7,
        font * 0.9,
        MUTED,
        Align::Left,
    );
    let verdict = if s.flagged {
        (
            format!(
                "FLAGGED: the map does not follow the model (Spearman stays >= {FLAG_SPEARMAN} \
                 while the top half of the stages is randomised)"
            ),
            WARN,
        )
    } else {
        (
            "The map changes as the model is randomised (passes the check)".to_string(),
            INK,
        )
    };
    c.text(
        &verdict.0,
        margin,
        margin + font * 2.9,
        font,
        verdict.1,
        Align::Left,
    );
    let mut maps: Vec<(&str, &[f32])> = vec![("original", &s.original)];
    maps.extend(
        s.steps
            .iter()
            .map(|st| (st.stage.as_str(), st.map.as_slice())),
    );
    for (i, (label, map)) in maps.iter().enumerate() {
        let (row, col) = (i / per_row, i % per_row);
        let x = margin + col as f32 * (thumb as f32 + 8.0 * k);
        let y = thumbs_top + row as f32 * row_h;
        c.blit(
            &thumbnail(map, s.size, thumb, Colormap::Jet),
            x as i64,
            y as i64,
        );
        c.text(
            label,
            x + thumb as f32 / 2.0,
            y + thumb as f32 + 2.0 * k,
            font * 0.75,
            INK,
            Align::Center,
        );
    }
    let labels: Vec<String> = maps.iter().map(|(l, _)| (*l).to_string()).collect();
    let with_original = |f: &dyn Fn(&crate::viz::sanity::SanityStep) -> f32| {
        std::iter::once(1.0)
            .chain(s.steps.iter().map(f))
            .collect::<Vec<f32>>()
    };
    let series = vec![
        (
            "Spearman".to_string(),
            with_original(&|st| st.spearman),
            PALETTE[0],
        ),
        ("SSIM".to_string(), with_original(&|st| st.ssim), PALETTE[1]),
    ];
    let lo = plots::value_range(series.iter().flat_map(|(_, v, _)| v.iter().copied()))
        .0
        .min(0.0);
    let frame = Frame {
        x: margin + 50.0 * k,
        y: chart_top,
        w: width - 2.0 * margin - 50.0 * k,
        h: chart_h,
    };
    plots::line_chart(
        &mut c,
        frame,
        (lo, 1.05),
        &labels,
        &series,
        font * 0.85,
        k as u32,
    );
    c.text(
        "stages randomised cumulatively, from the output down",
        frame.x + frame.w / 2.0,
        frame.y + frame.h + font * 2.9,
        font * 0.85,
        MUTED,
        Align::Center,
    );
    c.img
}

/// The report's summary: one panel per metric, a box per method (its values over the images)
/// and one for the random-map baseline (grey). `values[m][i]` are method `i`'s values of
/// metric `Metric::ALL[m]`, `baseline[m]` the baseline's.
pub fn summary_figure(
    methods: &[String],
    values: &[Vec<Vec<f32>>],
    baseline: &[Vec<f32>],
    title: &str,
    subtitle: &str,
    scale: u32,
) -> RgbImage {
    let k = scale.max(1) as f32;
    let font = 12.0 * k;
    let cols = 4usize;
    let rows = Metric::ALL.len().div_ceil(cols);
    let margin = 24.0 * k;
    let panel_w = (60.0 * k * (methods.len() + 1) as f32).max(220.0 * k);
    let panel_h = 220.0 * k;
    let gap_x = 70.0 * k;
    let gap_y = 80.0 * k;
    let top = margin + font * 4.0;
    let width = margin * 2.0 + cols as f32 * (panel_w + gap_x);
    let height = top + rows as f32 * (panel_h + gap_y) + margin;
    let mut c = Canvas::new(width as u32, height as u32);
    c.text(title, margin, margin, font * 1.4, INK, Align::Left);
    c.text(
        subtitle,
        margin,
        margin + font * 1.8,
        font * 0.9,
        MUTED,
        Align::Left,
    );
    for (m, metric) in Metric::ALL.iter().enumerate() {
        let (row, col) = (m / cols, m % cols);
        let frame = Frame {
            x: margin + gap_x * 0.8 + col as f32 * (panel_w + gap_x),
            y: top + font * 1.5 + row as f32 * (panel_h + gap_y),
            w: panel_w,
            h: panel_h,
        };
        let mut boxes: Vec<(String, Vec<f32>, Rgb<u8>)> = methods
            .iter()
            .enumerate()
            .map(|(i, name)| {
                (
                    name.clone(),
                    values[m].get(i).cloned().unwrap_or_default(),
                    PALETTE[i % PALETTE.len()],
                )
            })
            .collect();
        boxes.push(("random".into(), baseline[m].clone(), BASELINE));
        let better = if metric.higher_is_better() {
            "higher"
        } else {
            "lower"
        };
        let name = format!("{} ({better} is better)", metric.title());
        plots::box_plot(&mut c, frame, &name, &boxes, font * 0.85, k as u32);
    }
    c.img
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::viz::sanity::SanityStep;

    #[test]
    fn figures_draw_at_any_scale() {
        let s = Sanity {
            original: vec![0.5; 16],
            size: (4, 4),
            steps: vec![SanityStep {
                stage: "logits".into(),
                spearman: 0.2,
                ssim: f32::NAN,
                map: vec![0.1; 16],
            }],
            flagged: true,
        };
        for scale in [1, 2] {
            let img = sanity_figure(&s, "t", "s", scale);
            assert!(img.width() > 600 * scale && img.height() > 300 * scale);
        }
        let values = vec![vec![vec![0.1, 0.2, 0.3]]; Metric::ALL.len()];
        let baseline = vec![vec![0.0, 0.1]; Metric::ALL.len()];
        let img = summary_figure(&["gradcam".into()], &values, &baseline, "t", "s", 1);
        assert!(img.width() > 800);
    }
}
