//! The one way to ask the worker for work: a [`Request`], answered by a typed [`Reply`].

use std::path::PathBuf;

use image::RgbImage;

use super::evidence::{self, FaithView, SanityView};
use super::views::{self, ActivationView, CamView, ModelInfo, PredictionRow, TrainOutcome};
use super::{Engine, JobContext, Partial};
use crate::Result;
use crate::data::augment::Augment;
use crate::data::folder::{FolderOptions, ImageFolder};
use crate::device::DeviceChoice;
use crate::export::FigureRequest;
use crate::train::{TrainConfig, TrainEvent, train};
use crate::viz::activations::{GridOptions, LayerSparsity};
use crate::viz::cam::{CamMethod, CamOptions, Smooth};
use crate::viz::colormap::Colormap;
use crate::viz::faithfulness::FaithOptions;
use crate::viz::filters::{FilterOptions, FilterProgress, filter_patterns_with};
use crate::workspace::{Destination, RunDetails, RunSummary, Workspace, evaluate_saved};

/// Work for the worker thread.
#[derive(Clone, Debug)]
pub enum Request {
    /// Load (or find loaded) a model by name or path and describe it.
    LoadModel { key: String },
    /// Describe a model (its layers) for a tab that looks through it beside the loaded one;
    /// the loaded model stays the loaded model.
    Describe { key: String },
    /// Scan an image folder (one subfolder per class).
    ScanData { dir: PathBuf },
    /// Move the engine to another device (the loaded models are dropped).
    SetDevice(DeviceChoice),
    /// The activation grid of one layer for one image.
    Activations {
        model: String,
        image: PathBuf,
        layer: String,
        options: GridOptions,
    },
    /// Sparsity by depth for one image.
    Sparsity { model: String, image: PathBuf },
    /// A class-activation map; `own_layer` takes the model's default CAM layer instead of
    /// `options.layer` (a trained model has its own layers); `row` says which row of the
    /// Heatmap tab it is for.
    Cam {
        model: String,
        image: PathBuf,
        options: CamOptions,
        own_layer: bool,
        row: usize,
        colormap: Colormap,
        alpha: f32,
    },
    /// The top `k` classes of each file.
    Predict {
        model: String,
        paths: Vec<PathBuf>,
        k: usize,
    },
    /// Train on a folder, then evaluate the result on its validation split.
    Train {
        model: String,
        data_dir: PathBuf,
        config: Box<TrainConfig>,
        /// An empty (or new) folder to save into; `None`: a new run folder of the workspace.
        out_dir: Option<PathBuf>,
        /// The workspace a new run folder goes into; `None`: the user's.
        workspace: Option<Workspace>,
    },
    /// Filter patterns of `filters` of `layer`, tile by tile.
    Filters {
        model: String,
        layer: String,
        filters: Vec<usize>,
        options: FilterOptions,
    },
    /// Render figures and write each PNG with its JSON sidecar; a name already taken gets a
    /// numeric suffix ([`crate::export::naming::unused_path`]), nothing is written over.
    Export {
        model: String,
        figures: Vec<(FigureRequest, PathBuf)>,
        scale: u32,
    },
    /// Export a model (by name or path) to ONNX or PyTorch, verified by reading it back
    /// ([`crate::interchange::export`]).
    ExportModel {
        model: String,
        request: crate::interchange::ExportRequest,
    },
    /// `n` augmented versions of one image at `size` pixels.
    Augment {
        image: PathBuf,
        augment: Augment,
        size: u32,
        n: usize,
    },
    /// Thumbnails of at most `size` pixels, each sent as a [`Partial::Thumbnail`].
    Thumbnails { paths: Vec<PathBuf>, size: u32 },
    /// The runs of a workspace, newest first.
    ListRuns { workspace: Workspace },
    /// One run read in full; `compare`: for the overlay of a second run's curves.
    ShowRun {
        workspace: Workspace,
        name: String,
        compare: bool,
    },
    /// Sets the name shown for a run (blank clears it; the folder keeps its name), then lists.
    RenameRun {
        workspace: Workspace,
        name: String,
        display: String,
    },
    /// Deletes a run (the workspace refuses folders that are not runs), then lists.
    DeleteRun { workspace: Workspace, name: String },
    /// The top images of one channel over a folder (and its pattern when `pattern`).
    ChannelExamples {
        model: String,
        dir: PathBuf,
        layer: String,
        channel: usize,
        rank: crate::viz::examples::Rank,
        pattern: bool,
    },
    /// The information-distillation probe of a model over a labelled folder.
    Probe {
        model: String,
        dir: PathBuf,
        max_images: usize,
    },
    /// The map of a labelled folder: pooled features through `model`, projected by `method`.
    Map {
        model: String,
        data_dir: PathBuf,
        projection: crate::insight::map::Projection,
    },
    /// Suspect labels of a labelled folder: out-of-fold probabilities over `folds` folds.
    Suspects {
        model: String,
        data_dir: PathBuf,
        folds: usize,
    },
    /// Faithfulness metrics of `methods`' maps, made with the parameters of the row's map `map`
    /// (layer, class, score, smoothing, the pixel methods' parameters; class `None`: the top
    /// class), beside the random-map baseline, for `row` of the Heatmap tab; `compare`: the
    /// "compare methods" view.
    Faithfulness {
        model: String,
        image: PathBuf,
        map: CamOptions,
        methods: Vec<CamMethod>,
        options: FaithOptions,
        row: usize,
        compare: bool,
    },
    /// The model-randomisation sanity check of the map `map` (its method and parameters), for
    /// `row` of the Heatmap tab.
    Sanity {
        model: String,
        image: PathBuf,
        map: CamOptions,
        seed: u64,
        row: usize,
    },
}

/// The kind of a request, for the window's bookkeeping (which tab waits for what).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum JobKind {
    Model,
    Data,
    Device,
    Activations,
    Sparsity,
    Cam,
    Predict,
    Train,
    Filters,
    Export,
    Augment,
    Thumbnails,
    /// Listing, renaming or deleting runs.
    Runs,
    /// Reading one run.
    RunDetails,
    /// A channel's top images over a folder.
    Examples,
    /// The information-distillation probe.
    Probe,
    /// The dataset map.
    Map,
    /// Suspect labels.
    Suspects,
    /// Faithfulness metrics or the sanity check of heatmaps.
    Evidence,
}

impl JobKind {
    /// A short name for the status bar and the message log.
    pub fn name(self) -> &'static str {
        match self {
            JobKind::Model => "loading the model",
            JobKind::Data => "scanning the folder",
            JobKind::Device => "opening the device",
            JobKind::Activations => "activations",
            JobKind::Sparsity => "sparsity",
            JobKind::Cam => "heatmap",
            JobKind::Predict => "predicting",
            JobKind::Train => "training",
            JobKind::Filters => "filters",
            JobKind::Export => "exporting",
            JobKind::Augment => "augmenting",
            JobKind::Thumbnails => "thumbnails",
            JobKind::Runs => "runs",
            JobKind::RunDetails => "reading a run",
            JobKind::Examples => "channel examples",
            JobKind::Probe => "probe",
            JobKind::Map => "dataset map",
            JobKind::Suspects => "suspect labels",
            JobKind::Evidence => "heatmap evidence",
        }
    }
}

/// The result of a finished request.
#[derive(Debug)]
pub enum Reply {
    Model(ModelInfo),
    /// The answer to [`Request::Describe`].
    Described(ModelInfo),
    Data(ImageFolder),
    /// The device's name.
    Device(String),
    Activations(ActivationView),
    Sparsity(Vec<LayerSparsity>),
    /// A heatmap, for row `row` of the Heatmap tab.
    Cam {
        /// Boxed: a view with its options is several times the size of the other replies.
        view: Box<CamView>,
        row: usize,
    },
    Predictions(Vec<PredictionRow>),
    Trained(TrainOutcome),
    /// How many filter patterns were computed (the tiles came as partial results).
    Filters(usize),
    /// The files written.
    Exported(Vec<PathBuf>),
    /// A model export's report, or why it failed (then nothing was written).
    ModelExported(std::result::Result<crate::interchange::ExportReport, String>),
    Augmented(Vec<RgbImage>),
    /// All thumbnails were sent.
    Thumbnails,
    /// The runs of the workspace, newest first, after `done` (a rename or deletion) if any.
    Runs {
        runs: Vec<RunSummary>,
        done: Option<String>,
    },
    /// One run read in full, for the overlay when `compare`.
    Run {
        details: Box<RunDetails>,
        compare: bool,
    },
    /// A channel's top images.
    Examples(Box<super::dataset::ChannelExamplesView>),
    /// A probe's result, with the model's key.
    Probe(String, crate::viz::probe::ProbeReport),
    /// The answer to [`Request::Map`]: the model key it was asked with, and the map.
    Map(String, Box<crate::insight::map::DatasetMap>),
    /// The answer to [`Request::Suspects`].
    Suspects(Box<super::insight::SuspectsView>),
    /// The answer to [`Request::Faithfulness`].
    Faithfulness(Box<FaithView>),
    /// The answer to [`Request::Sanity`].
    Sanity(Box<SanityView>),
}

/// How many images a prediction job classifies between two checks for Cancel.
const PREDICT_CHUNK: usize = 16;

impl Request {
    /// The request's kind.
    pub fn kind(&self) -> JobKind {
        match self {
            Request::LoadModel { .. } | Request::Describe { .. } => JobKind::Model,
            Request::ScanData { .. } => JobKind::Data,
            Request::SetDevice(_) => JobKind::Device,
            Request::Activations { .. } => JobKind::Activations,
            Request::Sparsity { .. } => JobKind::Sparsity,
            Request::Cam { .. } => JobKind::Cam,
            Request::Predict { .. } => JobKind::Predict,
            Request::Train { .. } => JobKind::Train,
            Request::Filters { .. } => JobKind::Filters,
            Request::Export { .. } | Request::ExportModel { .. } => JobKind::Export,
            Request::Augment { .. } => JobKind::Augment,
            Request::Thumbnails { .. } => JobKind::Thumbnails,
            Request::ListRuns { .. } | Request::RenameRun { .. } | Request::DeleteRun { .. } => {
                JobKind::Runs
            }
            Request::ShowRun { .. } => JobKind::RunDetails,
            Request::ChannelExamples { .. } => JobKind::Examples,
            Request::Probe { .. } => JobKind::Probe,
            Request::Map { .. } => JobKind::Map,
            Request::Suspects { .. } => JobKind::Suspects,
            Request::Faithfulness { .. } | Request::Sanity { .. } => JobKind::Evidence,
        }
    }

    /// Does the work on the worker thread.
    pub(super) fn run(self, engine: &mut Engine, ctx: &JobContext) -> Result<Reply> {
        match self {
            Request::LoadModel { key } => views::load_model(engine, &key).map(Reply::Model),
            Request::Describe { key } => views::load_model(engine, &key).map(Reply::Described),
            Request::ScanData { dir } => {
                ImageFolder::scan(&dir, &FolderOptions::default()).map(Reply::Data)
            }
            Request::SetDevice(choice) => {
                let device = choice.open()?;
                let name = format!("{device:?}");
                engine.set_device(device);
                Ok(Reply::Device(name))
            }
            Request::Activations {
                model,
                image,
                layer,
                options,
            } => {
                views::activations(engine, &model, &image, &layer, &options).map(Reply::Activations)
            }
            Request::Sparsity { model, image } => {
                views::sparsity(engine, &model, &image).map(Reply::Sparsity)
            }
            Request::Cam {
                model,
                image,
                mut options,
                own_layer,
                row,
                colormap,
                alpha,
            } => {
                if own_layer {
                    options.layer = engine
                        .model(&model)?
                        .spec
                        .manifest
                        .default_cam_layer
                        .clone();
                }
                let batched = options.method.is_batched() || options.smooth == Smooth::Aug;
                let label = format!("{} batches", options.method.title());
                let mut progress = |done: usize, total: usize| {
                    if batched {
                        ctx.progress(&label, done, total);
                    }
                    !ctx.cancel.is_cancelled()
                };
                let view = views::cam_view(
                    engine,
                    &model,
                    &image,
                    &options,
                    colormap,
                    alpha,
                    &mut progress,
                )?;
                Ok(Reply::Cam {
                    view: Box::new(view),
                    row,
                })
            }
            Request::Predict { model, paths, k } => {
                // In chunks: Cancel stops a long list, and the status bar shows how far it is.
                let mut rows = Vec::with_capacity(paths.len());
                for (i, chunk) in paths.chunks(PREDICT_CHUNK).enumerate() {
                    ctx.cancel.check()?;
                    ctx.progress("images", i * PREDICT_CHUNK, paths.len());
                    rows.extend(views::predictions(engine, &model, chunk, k)?);
                }
                Ok(Reply::Predictions(rows))
            }
            Request::Train {
                model,
                data_dir,
                config,
                out_dir,
                workspace,
            } => {
                let (out_dir, workspace) = (out_dir.as_deref(), workspace.as_ref());
                train_and_evaluate(engine, ctx, &model, &data_dir, &config, out_dir, workspace)
                    .map(Reply::Trained)
            }
            Request::Filters {
                model,
                layer,
                filters,
                options,
            } => {
                let model = engine.model(&model)?;
                let batch = options.batch.max(1);
                let steps = options.ascent.steps;
                let total = filters.len().div_ceil(batch) * steps;
                let stage = format!("filters: ascent steps ({} filters)", filters.len());
                let patterns =
                    filter_patterns_with(&model, &layer, &filters, &options, &mut |p| {
                        match p {
                            FilterProgress::Step { first, step, .. } => {
                                ctx.progress(&stage, (first / batch) * steps + step, total)
                            }
                            FilterProgress::Tile { index, image } => {
                                ctx.partial(Partial::FilterTile {
                                    index,
                                    image: image.clone(),
                                })
                            }
                        }
                        !ctx.cancel.is_cancelled()
                    })?;
                Ok(Reply::Filters(patterns.len()))
            }
            Request::Export {
                model,
                figures,
                scale,
            } => {
                let loaded = engine.model(&model)?;
                let mut written = Vec::new();
                for (i, (request, out)) in figures.iter().enumerate() {
                    ctx.progress("figures", i, figures.len());
                    // A batch ("every method") leaves out a method that cannot explain the
                    // model (FullGrad on ConvNeXt); a single figure reports why.
                    if figures.len() > 1
                        && request.refusal(&loaded.network, &loaded.device).is_some()
                    {
                        continue;
                    }
                    // Never over a file already there (an earlier export, or this one's).
                    let out = crate::export::naming::unused_path(out);
                    let exported = crate::export::export(
                        &loaded,
                        &model,
                        request,
                        scale,
                        &out,
                        &mut |_, _| !ctx.cancel.is_cancelled(),
                    )?;
                    written.push(exported.png);
                    written.push(exported.sidecar);
                }
                Ok(Reply::Exported(written))
            }
            Request::ExportModel { model, request } => {
                let loaded = engine.model(&model)?;
                let progress = |step: &str, done: usize, total: usize| {
                    ctx.progress(&format!("export: {step}"), done, total);
                };
                match crate::interchange::export(&loaded, &request, &progress, &ctx.cancel) {
                    Err(crate::Error::Cancelled) => Err(crate::Error::Cancelled),
                    result => Ok(Reply::ModelExported(result.map_err(|e| e.to_string()))),
                }
            }
            Request::Augment {
                image,
                augment,
                size,
                n,
            } => views::augment_previews(&image, &augment, size, n).map(Reply::Augmented),
            Request::Thumbnails { paths, size } => {
                for path in paths {
                    ctx.cancel.check()?;
                    let thumb = views::thumbnail(&path, size);
                    ctx.partial(Partial::Thumbnail(path, thumb));
                }
                Ok(Reply::Thumbnails)
            }
            Request::ListRuns { workspace } => Ok(Reply::Runs {
                runs: workspace.list()?,
                done: None,
            }),
            Request::ShowRun {
                workspace,
                name,
                compare,
            } => Ok(Reply::Run {
                details: Box::new(workspace.show(&name)?),
                compare,
            }),
            Request::RenameRun {
                workspace,
                name,
                display,
            } => {
                workspace.set_display_name(&name, Some(&display))?;
                let done = match display.trim() {
                    "" => format!("run {name}: shown by its folder name again"),
                    shown => format!("run {name} is now shown as `{shown}`"),
                };
                Ok(Reply::Runs {
                    runs: workspace.list()?,
                    done: Some(done),
                })
            }
            Request::DeleteRun { workspace, name } => {
                workspace.delete(&name)?;
                Ok(Reply::Runs {
                    runs: workspace.list()?,
                    done: Some(format!("deleted run {name}")),
                })
            }
            Request::ChannelExamples {
                model,
                dir,
                layer,
                channel,
                rank,
                pattern,
            } => super::dataset::channel_examples(
                engine, ctx, &model, &dir, &layer, channel, rank, pattern,
            )
            .map(|v| Reply::Examples(Box::new(v))),
            Request::Probe {
                model,
                dir,
                max_images,
            } => super::dataset::probe_folder(engine, ctx, &model, &dir, max_images)
                .map(|(key, report)| Reply::Probe(key, report)),
            Request::Map {
                model,
                data_dir,
                projection,
            } => super::insight::map(engine, ctx, &model, &data_dir, projection)
                .map(|m| Reply::Map(model, Box::new(m))),
            Request::Suspects {
                model,
                data_dir,
                folds,
            } => super::insight::suspects(engine, ctx, &model, &data_dir, folds)
                .map(|s| Reply::Suspects(Box::new(s))),
            Request::Faithfulness {
                model,
                image,
                map,
                methods,
                options,
                row,
                compare,
            } => evidence::faithfulness(
                engine, ctx, &model, &image, &map, &methods, &options, row, compare,
            )
            .map(|v| Reply::Faithfulness(Box::new(v))),
            Request::Sanity {
                model,
                image,
                map,
                seed,
                row,
            } => evidence::sanity(engine, ctx, &model, &image, &map, seed, row)
                .map(|v| Reply::Sanity(Box::new(v))),
        }
    }
}

/// Trains on a folder into `out_dir` (an empty or new folder, locked while training) or a new
/// run folder of `workspace` (`None`: the user's), streaming events, then evaluates the kept model on the
/// validation split and saves that evaluation beside it. A run that saved nothing leaves no
/// folder behind.
fn train_and_evaluate(
    engine: &mut Engine,
    ctx: &JobContext,
    key: &str,
    data_dir: &std::path::Path,
    cfg: &TrainConfig,
    out_dir: Option<&std::path::Path>,
    workspace: Option<&Workspace>,
) -> Result<TrainOutcome> {
    cfg.validate()?;
    let base = engine.model(key)?;
    let dest = match (out_dir, workspace) {
        (None, Some(workspace)) => Destination::new_run(workspace.clone(), cfg.mode, data_dir)?,
        (out_dir, _) => Destination::open(out_dir, false, cfg.mode, data_dir)?,
    };
    let out_dir = dest.work().to_path_buf();
    let trained = train_into(ctx, &base, data_dir, cfg, &out_dir);
    if trained.is_err() && !crate::train::bundle::is_trained_model(&out_dir) {
        dest.discard();
    }
    let (report, data) = trained?;
    let out_key = out_dir.to_string_lossy().into_owned();
    engine.forget(&out_key);
    let evaluation = evaluate_saved(
        &out_dir,
        &data,
        cfg.batch_size,
        &base.device,
        &mut |done, total| ctx.progress("evaluating", done, total),
        &ctx.cancel,
    )?
    .ok_or_else(|| {
        crate::Error::Training(format!(
            "{}: no finished epoch to evaluate",
            out_dir.display()
        ))
    })?;
    Ok(TrainOutcome { report, evaluation })
}

/// Scans the data and trains into `out_dir`, streaming events and progress lines.
fn train_into(
    ctx: &JobContext,
    base: &crate::zoo::Model,
    data_dir: &std::path::Path,
    cfg: &TrainConfig,
    out_dir: &std::path::Path,
) -> Result<(crate::train::TrainReport, ImageFolder)> {
    let data = ImageFolder::scan(data_dir, &cfg.folder_options())?;
    // The phase and epoch the batches belong to, for a progress line like
    // "finetune, epoch 2 of 3, batch: 6 of 8".
    let mut phase: Option<(String, usize)> = None;
    let mut epochs_done = 0;
    let report = train(
        base,
        &data,
        cfg,
        out_dir,
        &mut |event| {
            match &event {
                TrainEvent::Phase { name, epochs } => {
                    phase = Some((name.clone(), *epochs));
                    epochs_done = 0;
                }
                TrainEvent::Epoch(_) => epochs_done += 1,
                TrainEvent::Progress { what, done, total } => {
                    let stage = match &phase {
                        Some((name, n)) if *n > 0 => {
                            format!("{name}, epoch {} of {n}, batch", epochs_done + 1)
                        }
                        // "extracting features, validation images: 64 of 80".
                        Some((name, _)) => format!("{name}, {what}"),
                        None => what.clone(),
                    };
                    ctx.progress(&stage, *done, *total);
                }
                TrainEvent::Warning(_) => {}
            }
            ctx.partial(Partial::Train(event));
        },
        &ctx.cancel,
    )?;
    Ok((report, data))
}
