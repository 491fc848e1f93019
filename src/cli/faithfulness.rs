//! `convlens faithfulness IMAGE|FOLDER [--methods M,...] [--out DIR] ...`: the faithfulness
//! metrics of each method's map (src/viz/faithfulness), each beside the random-map baseline.
//!
//! For one image the numbers are printed (or `--json`). For a folder, every metric of every
//! method for every image goes to `DIR/faithfulness.csv` (one row per image x method; the
//! curves and per-percentile values in `faithfulness.json`) with a summary figure
//! `DIR/summary.png` (+ sidecar): box plots per metric and method. A labelled folder (class
//! subfolders, optionally `train/ validation/ test/`) uses each image's label when the model
//! knows the folder's class names, else the prediction; a plain folder of images the
//! prediction. `DIR` must be new or empty (never overwritten); Ctrl-C stops after the image in
//! progress and keeps the finished rows.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use super::figure_io::images_in;
use super::output::{errln, outln, print_json};
use super::{ModelArgs, Progress};
use crate::cancel::CancelToken;
use crate::data::folder::{FolderOptions, ImageFolder, Split};
use crate::export::evidence;
use crate::viz::cam::{self, CamMethod, CamOptions, CamScore};
use crate::viz::faithfulness::{self, FaithOptions, Metric, Scores};
use crate::zoo::Model;
use crate::{Error, Result};

/// Arguments of `convlens faithfulness`.
#[derive(clap::Args, Debug)]
pub struct FaithfulnessArgs {
    /// An image, or a folder of images (a labelled dataset or a plain folder).
    pub input: PathBuf,
    /// The methods, comma-separated (default: every method).
    #[arg(long, value_delimiter = ',')]
    pub methods: Option<Vec<CamMethod>>,
    /// The CAM layer; default: the model's default CAM layer.
    #[arg(long)]
    pub layer: Option<String>,
    /// The class (one image only), by name or index; default: the top-1 prediction.
    #[arg(long)]
    pub class: Option<String>,
    /// For a labelled folder with split folders: test (default when there is one),
    /// validation, train or all.
    #[arg(long)]
    pub split: Option<String>,
    /// ROAD's percentiles, comma-separated, 1-99.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "10,20,30,40,50,60,70,80,90"
    )]
    pub percentiles: Vec<u32>,
    /// Deletion / insertion steps, 2-4096.
    #[arg(long, default_value_t = 32)]
    pub steps: usize,
    /// Perturbed images per forward pass, 1-256.
    #[arg(long, default_value_t = 16)]
    pub batch: usize,
    /// Seed of ROAD's noise and of the random-map baseline.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Score the raw logit instead of the softmax probability.
    #[arg(long)]
    pub logit_score: bool,
    /// The report folder (a folder input): new or empty; default `convlens-faithfulness`
    /// (then `-2`, `-3` ... when taken).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Summary figure scale factor, 1-4.
    #[arg(long, default_value_t = 1)]
    pub scale: u32,
    /// Print JSON (one image: every value; a folder: the per-method means).
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub model: ModelArgs,
}

/// One image x method of the report.
#[derive(Clone, Debug, serde::Serialize)]
struct Row {
    image: String,
    method: String,
    class: usize,
    class_name: String,
    /// `label` or `prediction`.
    class_from: &'static str,
    /// The class score of the unperturbed image.
    score: f32,
    map: Scores,
    random: Scores,
}

impl FaithfulnessArgs {
    fn options(&self) -> FaithOptions {
        FaithOptions {
            percentiles: self.percentiles.clone(),
            score: if self.logit_score {
                CamScore::Logit
            } else {
                CamScore::Probability
            },
            steps: self.steps,
            batch: self.batch,
            seed: self.seed,
        }
    }

    fn methods(&self) -> Vec<CamMethod> {
        self.methods
            .clone()
            .unwrap_or_else(|| CamMethod::ALL.to_vec())
    }
}

/// What the images are and where their classes come from.
struct Work {
    images: Vec<PathBuf>,
    /// Per image: the class and `label` / `prediction` (None: predict).
    labels: Vec<Option<usize>>,
    note: String,
}

/// The methods asked for, refused up front (before any map is computed) when one cannot
/// explain the model on its device; or, when none were, every method that can.
fn default_applicable(
    args: &FaithfulnessArgs,
    methods: Vec<CamMethod>,
    model: &crate::zoo::Model,
) -> Result<Vec<CamMethod>> {
    match args.methods {
        Some(_) => {
            for m in &methods {
                if let Some(why) = m.refusal(&model.network, &model.device) {
                    return Err(Error::Model(why));
                }
            }
            Ok(methods)
        }
        None => Ok(CamMethod::applicable(
            &methods,
            &model.network,
            &model.device,
        )),
    }
}

/// Runs the command.
pub fn run(args: &FaithfulnessArgs) -> Result<ExitCode> {
    let opts = args.options();
    opts.validate()?;
    crate::export::check_scale(args.scale)?;
    let methods = args.methods();
    if methods.is_empty() {
        return Err(Error::Model("--methods names no method".into()));
    }
    if args.input.is_dir() {
        if args.class.is_some() {
            return Err(Error::Model(
                "--class is for one image; a folder uses each image's label or prediction".into(),
            ));
        }
        let out = report_dir(args.out.as_deref(), &args.input)?;
        let model = args.model.load()?;
        let methods = default_applicable(args, methods, &model)?;
        let layer = layer_of(args, &model)?;
        let work = gather(&args.input, args.split.as_deref(), &model)?;
        // Created once the model and the folder are known good: a refused run leaves no
        // empty report folder behind.
        crate::fsutil::ensure_writable_dir(&out)?;
        return folder_report(args, &model, &layer, &methods, &opts, &work, &out);
    }
    if args.out.is_some() {
        return Err(Error::Model(
            "--out is for a folder report; for one image the numbers are printed".into(),
        ));
    }
    let model = args.model.load()?;
    let methods = default_applicable(args, methods, &model)?;
    let layer = layer_of(args, &model)?;
    let class = args
        .class
        .as_deref()
        .map(|c| crate::export::resolve_class(&model.spec.labels, c))
        .transpose()?;
    let mut bar = Progress::new(0, "faithfulness");
    let rows = image_rows(
        &model,
        &args.input,
        class.map(|c| (c, "argument")),
        &layer,
        &methods,
        &opts,
        &CancelToken::new(),
        &mut |d, t| {
            bar.set_length(t as u64);
            bar.set_position(d as u64);
        },
    )?;
    bar.finish();
    if args.json {
        print_json(&rows);
        return Ok(ExitCode::SUCCESS);
    }
    if let Some(r) = rows.first() {
        outln!(
            "{}: class {} ({}), score {:.4}, layer {layer}",
            r.image,
            r.class,
            r.class_name,
            r.score
        );
    }
    print_table(&rows);
    Ok(ExitCode::SUCCESS)
}

fn layer_of(args: &FaithfulnessArgs, model: &Model) -> Result<String> {
    let layer = args
        .layer
        .clone()
        .unwrap_or_else(|| model.spec.manifest.default_cam_layer.clone());
    model.network.index_of(&layer)?;
    Ok(layer)
}

/// Each metric: the map's value and the random baseline's, per method, in columns as wide as
/// their longest name (`integrated-gradients`, `increase_in_confidence (+)`).
fn print_table(rows: &[Row]) {
    let label = |m: Metric| {
        let arrow = if m.higher_is_better() { "+" } else { "-" };
        format!("{} ({arrow})", m.name())
    };
    let first = Metric::ALL
        .iter()
        .map(|&m| label(m).len())
        .max()
        .unwrap_or(0)
        .max("metric".len());
    let width = |name: &str| (name.len() + 2).max(12);
    let mut header = format!("{:<first$}", "metric");
    for r in rows {
        header += &format!("{:>w$}", r.method, w = width(&r.method));
    }
    header += &format!("{:>12}", "random");
    outln!("{header}");
    for m in Metric::ALL {
        let mut line = format!("{:<first$}", label(m));
        for r in rows {
            line += &format!("{:>w$.4}", r.map.metric(m), w = width(&r.method));
        }
        if let Some(r) = rows.first() {
            line += &format!("{:>12.4}", r.random.metric(m));
        }
        outln!("{line}");
    }
}

/// The rows of one image: the baseline once, then each method's map and metrics.
/// `class`: the class and where it comes from; `None` predicts it.
#[allow(clippy::too_many_arguments)]
fn image_rows(
    model: &Model,
    image: &Path,
    class: Option<(usize, &'static str)>,
    layer: &str,
    methods: &[CamMethod],
    opts: &FaithOptions,
    cancel: &CancelToken,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<Vec<Row>> {
    let input = model.spec.preprocess.load(image, &model.device)?;
    let (class, class_from) = match class {
        Some(c) => c,
        None => {
            let logits = model.network.forward(&input)?;
            let c = logits.squeeze(0)?.argmax(0)?.to_scalar::<u32>()? as usize;
            (c, "prediction")
        }
    };
    let class_name = model
        .spec
        .labels
        .get(class)
        .cloned()
        .unwrap_or_else(|| format!("class {class}"));
    // Each method's map once, then every map's perturbed images in shared batches.
    let mut maps = Vec::with_capacity(methods.len());
    for &method in methods {
        let cam_opts = CamOptions {
            class: Some(class),
            ..CamOptions::new(method, layer)
        }
        .for_model(model);
        let map = cam::compute_with_progress(&model.network, &input, &cam_opts, &mut |_, _| {
            !cancel.is_cancelled()
        })?;
        maps.push(map.map);
    }
    let refs: Vec<&[f32]> = maps.iter().map(Vec::as_slice).collect();
    let (score, scores, random) = faithfulness::evaluate_methods(
        &model.network,
        &input,
        &refs,
        class,
        opts,
        cancel,
        progress,
    )?;
    Ok(methods
        .iter()
        .zip(scores)
        .map(|(method, map)| Row {
            image: image.display().to_string(),
            method: method.name().to_string(),
            class,
            class_name: class_name.clone(),
            class_from,
            score,
            map,
            random: random.clone(),
        })
        .collect())
}

/// The report folder (not created yet): `out` when new or empty, else an error; without
/// `--out`, `convlens-faithfulness` or the first free `-2`, `-3` ... Never inside the input
/// folder.
fn report_dir(out: Option<&Path>, input: &Path) -> Result<PathBuf> {
    let empty_or_new = |p: &Path| match std::fs::read_dir(p) {
        Ok(mut entries) => entries.next().is_none(),
        Err(e) => e.kind() == std::io::ErrorKind::NotFound,
    };
    let dir = match out {
        Some(p) => {
            if p.exists() && !p.is_dir() {
                return Err(Error::Model(format!(
                    "--out {} is a file; the report needs a folder",
                    p.display()
                )));
            }
            if !empty_or_new(p) {
                return Err(Error::Model(format!(
                    "--out {} exists and is not empty: the report never overwrites; choose a new folder",
                    p.display()
                )));
            }
            p.to_path_buf()
        }
        None => (1..)
            .map(|n| {
                PathBuf::from(if n == 1 {
                    "convlens-faithfulness".to_string()
                } else {
                    format!("convlens-faithfulness-{n}")
                })
            })
            .find(|p| empty_or_new(p))
            .unwrap_or_else(|| PathBuf::from("convlens-faithfulness")),
    };
    let inside = |p: &Path| -> Option<bool> {
        let input = input.canonicalize().ok()?;
        let mut probe = p.to_path_buf();
        while !probe.exists() {
            probe = probe.parent()?.to_path_buf();
            if probe.as_os_str().is_empty() {
                probe = PathBuf::from(".");
            }
        }
        Some(probe.canonicalize().ok()?.starts_with(&input))
    };
    if inside(&dir) == Some(true) {
        return Err(Error::Model(format!(
            "refusing to write the report into {}: it is inside the input folder {}; choose another --out",
            dir.display(),
            input.display()
        )));
    }
    Ok(dir)
}

/// The images of `folder` and their classes.
fn gather(folder: &Path, split: Option<&str>, model: &Model) -> Result<Work> {
    let scanned = ImageFolder::scan(folder, &FolderOptions::default());
    let data = match scanned {
        Ok(d) => d,
        Err(scan_error) => {
            if split.is_some() {
                return Err(scan_error);
            }
            let images = images_in(folder).map_err(|_| scan_error)?;
            let n = images.len();
            return Ok(Work {
                labels: vec![None; n],
                images,
                note: format!("{n} images, classes predicted (not a labelled folder)"),
            });
        }
    };
    let samples = match split {
        Some("all") => data.all_samples(),
        Some(name) => {
            let s = match name {
                "test" => Split::Test,
                "validation" | "val" => Split::Validation,
                "train" => Split::Train,
                other => {
                    return Err(Error::Dataset(format!(
                        "unknown split `{other}`; use test, validation, train or all"
                    )));
                }
            };
            data.split(s).to_vec()
        }
        None if !data.splits.test.is_empty() => data.splits.test.clone(),
        None => data.all_samples(),
    };
    if samples.is_empty() {
        return Err(Error::Dataset(format!(
            "{}: no images in the chosen split",
            folder.display()
        )));
    }
    // The folder's classes as the model's class indices, when the model knows them all.
    let lower: Vec<String> = model.spec.labels.iter().map(|l| l.to_lowercase()).collect();
    let mapping: Option<Vec<usize>> = data
        .classes
        .iter()
        .map(|c| lower.iter().position(|l| *l == c.to_lowercase()))
        .collect();
    let n = samples.len();
    let (labels, note) = match &mapping {
        Some(map) => (
            samples.iter().map(|s| Some(map[s.label])).collect(),
            format!("{n} images, each scored for its label"),
        ),
        None => (
            vec![None; n],
            format!(
                "{n} images; the model does not know the folder's classes ({}), so each is scored for its predicted class",
                data.classes.join(", ")
            ),
        ),
    };
    Ok(Work {
        images: samples.into_iter().map(|s| s.path).collect(),
        labels,
        note,
    })
}

fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

/// `faithfulness.csv`: one row per image x method, each metric and its random baseline.
fn csv(rows: &[Row], errors: &[(String, String)]) -> String {
    let mut out = String::from("image,method,class,class_name,class_from,score");
    for m in Metric::ALL {
        out += &format!(",{}", m.name());
    }
    for m in Metric::ALL {
        out += &format!(",random_{}", m.name());
    }
    out += ",error\n";
    for r in rows {
        out += &format!(
            "{},{},{},{},{},{}",
            csv_field(&r.image),
            r.method,
            r.class,
            csv_field(&r.class_name),
            r.class_from,
            r.score
        );
        for m in Metric::ALL {
            out += &format!(",{}", r.map.metric(m));
        }
        for m in Metric::ALL {
            out += &format!(",{}", r.random.metric(m));
        }
        out += ",\n";
    }
    for (image, err) in errors {
        out += &format!("{},,,,,", csv_field(image));
        out += &",".repeat(2 * Metric::ALL.len());
        out += &format!(",{}\n", csv_field(err));
    }
    out
}

#[derive(serde::Serialize)]
struct MethodMeans {
    method: String,
    images: usize,
    means: serde_json::Map<String, serde_json::Value>,
}

fn means(rows: &[Row], methods: &[CamMethod]) -> Vec<MethodMeans> {
    let mean = |v: Vec<f32>| v.iter().sum::<f32>() / v.len().max(1) as f32;
    let mut out: Vec<MethodMeans> = methods
        .iter()
        .map(|m| {
            let mine: Vec<&Row> = rows.iter().filter(|r| r.method == m.name()).collect();
            let means = Metric::ALL
                .iter()
                .map(|&x| {
                    (
                        x.name().to_string(),
                        serde_json::json!(mean(mine.iter().map(|r| r.map.metric(x)).collect())),
                    )
                })
                .collect();
            MethodMeans {
                method: m.name().to_string(),
                images: mine.len(),
                means,
            }
        })
        .collect();
    // The baseline, once per image (every method's row holds the same).
    let first = methods.first().map(|m| m.name()).unwrap_or_default();
    let base: Vec<&Row> = rows.iter().filter(|r| r.method == first).collect();
    out.push(MethodMeans {
        method: "random".into(),
        images: base.len(),
        means: Metric::ALL
            .iter()
            .map(|&x| {
                (
                    x.name().to_string(),
                    serde_json::json!(mean(base.iter().map(|r| r.random.metric(x)).collect())),
                )
            })
            .collect(),
    });
    out
}

#[allow(clippy::too_many_arguments)]
fn folder_report(
    args: &FaithfulnessArgs,
    model: &Model,
    layer: &str,
    methods: &[CamMethod],
    opts: &FaithOptions,
    work: &Work,
    out: &Path,
) -> Result<ExitCode> {
    let cancel = CancelToken::new();
    let on_interrupt = cancel.clone();
    if let Err(e) = ctrlc::set_handler(move || on_interrupt.cancel()) {
        errln!("warning: Ctrl-C will not stop the report cleanly ({e})");
    }
    errln!("{}: {}", args.input.display(), work.note);
    let n = work.images.len();
    let mut bar = Progress::new(n as u64, "faithfulness (images)");
    let mut rows = Vec::new();
    let mut errors = Vec::new();
    let mut cancelled = false;
    for (i, (image, label)) in work.images.iter().zip(&work.labels).enumerate() {
        let res = image_rows(
            model,
            image,
            label.map(|c| (c, "label")),
            layer,
            methods,
            opts,
            &cancel,
            &mut |_, _| {},
        );
        match res {
            Ok(r) => rows.extend(r),
            Err(Error::Cancelled) => {
                cancelled = true;
                break;
            }
            Err(e) => {
                bar.suspend(|| errln!("error: {}: {e}", image.display()));
                errors.push((image.display().to_string(), e.to_string()));
            }
        }
        bar.set_position(i as u64 + 1);
        if cancel.is_cancelled() {
            cancelled = true;
            break;
        }
    }
    bar.finish();
    let csv_path = out.join("faithfulness.csv");
    crate::fsutil::write_atomic(&csv_path, csv(&rows, &errors).as_bytes())?;
    crate::fsutil::write_json_atomic(&out.join("faithfulness.json"), &rows)?;
    let summary = means(&rows, methods);
    let names: Vec<String> = methods.iter().map(|m| m.name().to_string()).collect();
    let values: Vec<Vec<Vec<f32>>> = Metric::ALL
        .iter()
        .map(|&m| {
            methods
                .iter()
                .map(|me| {
                    rows.iter()
                        .filter(|r| r.method == me.name())
                        .map(|r| r.map.metric(m))
                        .collect()
                })
                .collect()
        })
        .collect();
    let first = methods.first().map(|m| m.name()).unwrap_or_default();
    let baseline: Vec<Vec<f32>> = Metric::ALL
        .iter()
        .map(|&m| {
            rows.iter()
                .filter(|r| r.method == first)
                .map(|r| r.random.metric(m))
                .collect()
        })
        .collect();
    let images_done = rows.len() / methods.len().max(1);
    let figure = evidence::summary_figure(
        &names,
        &values,
        &baseline,
        &format!(
            "Faithfulness of {} maps at {layer}",
            model.spec.manifest.name
        ),
        &format!(
            "{} · {images_done} images · {} score · ROAD percentiles {:?} · {} deletion/insertion steps · seed {}",
            args.input.display(),
            if args.logit_score {
                "logit"
            } else {
                "probability"
            },
            opts.percentiles,
            opts.steps,
            opts.seed
        ),
        args.scale,
    );
    let figure_path = out.join("summary.png");
    #[derive(serde::Serialize)]
    struct Content<'a> {
        input: String,
        layer: &'a str,
        options: &'a FaithOptions,
        images: usize,
        note: &'a str,
        means: &'a [MethodMeans],
    }
    evidence::write_with_sidecar(
        &figure,
        &figure_path,
        "faithfulness-summary",
        model,
        &args.model.model,
        args.scale,
        &Content {
            input: args.input.display().to_string(),
            layer,
            options: opts,
            images: images_done,
            note: &work.note,
            means: &summary,
        },
    )?;
    if args.json {
        print_json(&summary);
    } else {
        let mut header = format!("{:<24}", "mean");
        for s in &summary {
            header += &format!("{:>12}", s.method);
        }
        outln!("{header}");
        for m in Metric::ALL {
            let mut line = format!("{:<24}", m.name());
            for s in &summary {
                line += &format!("{:>12.4}", s.means[m.name()].as_f64().unwrap_or(f64::NAN));
            }
            outln!("{line}");
        }
        outln!("csv: {}", csv_path.display());
        outln!("figure: {}", figure_path.display());
    }
    if cancelled {
        errln!(
            "cancelled: {images_done} of {n} images done; {} and the figure hold those",
            csv_path.display()
        );
        return Ok(ExitCode::from(130));
    }
    Ok(if errors.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
