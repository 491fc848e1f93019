//! The training loop shared by the four recipes: batches, cross-entropy, the optimiser, a
//! validation pass per epoch, the best checkpoint (by validation loss) on disk, early stopping,
//! NaN detection and cancellation between batches.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::time::Instant;

use candle_core::{Device, Tensor, Var};
use rand::SeedableRng;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;

use super::bundle::{self, BaseModelRef, TrainedManifest};
use super::features::{ExtractStats, FeatureCache, Features, default_cache_root, extract_features};
use super::head::Head;
use super::metrics::{ConfusionMatrix, argmax_rows};
use super::optim::Optimizer;
use super::{EpochMetrics, Mode, TrainConfig, TrainEvent};
use crate::cancel::CancelToken;
use crate::data::augment::{Augment, augment_seed};
use crate::data::folder::{BatchAugment, load_batch};
use crate::data::folder::{ImageFolder, Sample, Split};
use crate::data::split_record::SplitRecord;
use crate::data::train_transform::TrainTransform;
use crate::graph::Network;
use crate::graph::layers::BatchNormMode;
use crate::zoo::{Model, ModelSpec, checkpoint, small_convnet};
use crate::{Error, Result};

/// The layer whose output the head is trained on.
pub const FEATURE_LAYER: &str = "pooled";

/// What a finished (or stopped) run leaves behind.
#[derive(Clone, Debug)]
pub struct TrainReport {
    /// The trained model's folder (holding the best checkpoint).
    pub out_dir: PathBuf,
    pub history: Vec<EpochMetrics>,
    /// Best validation loss and its accuracy (the checkpointed model's).
    pub best_val_loss: f32,
    pub best_val_accuracy: f32,
    /// Feature extraction work (images run through the base vs read from the cache).
    pub extract: ExtractStats,
    /// Files skipped because they could not be read, with the reason.
    pub skipped: Vec<(PathBuf, String)>,
}

/// A model being trained, as the loop sees it.
trait Learner {
    /// Trainable variables.
    fn vars(&self) -> Vec<Var>;
    /// Shuffles for `epoch` and returns the number of training batches.
    fn start_epoch(&mut self, epoch: usize) -> usize;
    /// Logits `[n, classes]` (with gradient) and labels `[n]` (u32) of training batch `i`.
    fn train_batch(&mut self, epoch: usize, i: usize) -> Result<(Tensor, Tensor)>;
    /// Mean validation loss and the confusion matrix.
    fn validate(&mut self) -> Result<(f32, ConfusionMatrix)>;
    /// The tensors to save, detached copies.
    fn checkpoint(&mut self) -> Result<Vec<(String, Tensor)>>;
    /// Files found unreadable since the last call.
    fn take_skipped(&mut self) -> Vec<(PathBuf, String)>;
}

/// Trains a classifier for the image folder and writes it to `out_dir`.
///
/// `base` is the pretrained model for the transfer modes (ignored by `scratch`).
pub fn train(
    base: &Model,
    data: &ImageFolder,
    cfg: &TrainConfig,
    out_dir: &Path,
    on_event: &mut dyn FnMut(TrainEvent),
    cancel: &CancelToken,
) -> Result<TrainReport> {
    if let (Some((dir, _)), Mode::Extract | Mode::ExtractAugment | Mode::Finetune) =
        (&base.spec.trained, cfg.mode)
    {
        return Err(Error::Training(format!(
            "{} is a model trained by convlens; transfer learning starts from a pretrained \
             model (e.g. efficientnet_lite0)",
            dir.display()
        )));
    }
    cfg.validate()?;
    cfg.validate_for(&base.network, FEATURE_LAYER)?;
    let classes = data.classes.clone();
    for (split, name) in [
        (Split::Train, "training"),
        (Split::Validation, "validation"),
    ] {
        if data.split(split).is_empty() {
            return Err(Error::Dataset(format!(
                "{}: the {name} split has no images",
                data.root.display()
            )));
        }
    }
    let mut run = Run {
        cfg,
        classes: classes.clone(),
        out_dir: out_dir.to_path_buf(),
        history: Vec::new(),
        best_val_loss: f32::INFINITY,
        best_val_accuracy: 0.0,
        skipped: Vec::new(),
        reported: HashSet::new(),
        manifest: None,
        trained_layers: Vec::new(),
        saved: false,
    };
    let device = base.device.clone();
    let mut extract = ExtractStats::default();
    match cfg.mode {
        Mode::Scratch => {
            let size = cfg.scratch_size;
            let transform = TrainTransform::new(size, [0.0; 3], [1.0; 3]);
            let tensors =
                small_convnet::init_tensors(size as usize, classes.len(), cfg.seed, &device)?;
            let mut net = small_convnet::build(&tensors, size as usize, classes.len())?;
            let vars = make_trainable(&mut net, "block1", None)?;
            run.manifest = Some(
                TrainedManifest::new(
                    cfg,
                    &classes,
                    transform.clone(),
                    None,
                    None,
                    Vec::new(),
                    "conv5",
                )
                .with_split(SplitRecord::of(data)),
            );
            let mut learner = ImageLearner::new(
                Trunk::Whole(net),
                None,
                vars,
                data,
                transform,
                cfg,
                device.clone(),
            );
            run.phase(
                &mut learner,
                "scratch",
                cfg.epochs,
                cfg.lr,
                on_event,
                cancel,
            )?;
        }
        Mode::Extract | Mode::ExtractAugment | Mode::Finetune => {
            let transform = TrainTransform::new(
                base.spec.preprocess.input_size(),
                base.spec.manifest.mean,
                base.spec.manifest.std,
            );
            let base_ref = BaseModelRef::of(&base.spec, &base.weights_hash);
            let cache_root = cfg.cache_dir.clone().unwrap_or_else(default_cache_root);
            let cache =
                FeatureCache::open(&cache_root, &base.weights_hash, FEATURE_LAYER, &transform)?;
            on_event(TrainEvent::Phase {
                name: "extracting features".into(),
                epochs: 0,
            });
            let (val, stats) = run.features(
                base,
                (data, Split::Validation),
                &transform,
                &cache,
                on_event,
                cancel,
            )?;
            extract.computed += stats.computed;
            extract.cached += stats.cached;
            extract.corrupt += stats.corrupt;
            let width = val.x.dim(1)?;
            let mut head = Head::init(cfg.head, width, classes.len(), cfg.seed, &device)?;
            let vars = head.make_trainable()?;
            run.manifest = Some(
                TrainedManifest::new(
                    cfg,
                    &classes,
                    transform.clone(),
                    Some(base_ref.clone()),
                    Some(cfg.head),
                    Vec::new(),
                    &base.spec.manifest.default_cam_layer,
                )
                .with_split(SplitRecord::of(data)),
            );
            if cfg.mode == Mode::ExtractAugment {
                let trunk = Trunk::Frozen(&base.network);
                let mut learner = ImageLearner::new(
                    trunk,
                    Some((head, val)),
                    vars,
                    data,
                    transform,
                    cfg,
                    device.clone(),
                );
                run.phase(&mut learner, "head", cfg.epochs, cfg.lr, on_event, cancel)?;
            } else {
                let (train_features, stats) = run.features(
                    base,
                    (data, Split::Train),
                    &transform,
                    &cache,
                    on_event,
                    cancel,
                )?;
                extract.computed += stats.computed;
                extract.cached += stats.cached;
                extract.corrupt += stats.corrupt;
                let mut learner = FeatureLearner {
                    head,
                    vars,
                    train: train_features,
                    val,
                    batch_size: cfg.batch_size,
                    seed: cfg.seed,
                    order: Vec::new(),
                    device: device.clone(),
                };
                run.phase(&mut learner, "head", cfg.epochs, cfg.lr, on_event, cancel)?;
                if cfg.mode == Mode::Finetune {
                    run.finetune(base, data, transform, on_event, cancel)?;
                }
            }
        }
    }
    run.finish()?;
    Ok(TrainReport {
        out_dir: out_dir.to_path_buf(),
        history: run.history,
        best_val_loss: run.best_val_loss,
        best_val_accuracy: run.best_val_accuracy,
        extract,
        skipped: run.skipped,
    })
}

/// Turns the tensors of every stage from `from` on (but the stage `except`) into trainable
/// variables.
fn make_trainable(net: &mut Network, from: &str, except: Option<&str>) -> Result<Vec<Var>> {
    let skip = except.map(|id| format!("{id}."));
    net.tensors_mut_from(from)?
        .into_iter()
        .filter(|(name, _)| skip.as_ref().is_none_or(|p| !name.starts_with(p.as_str())))
        .map(|(_, t)| {
            let var = Var::from_tensor(t)?;
            *t = var.as_tensor().clone();
            Ok(var)
        })
        .collect()
}

/// State of one run across its phases.
struct Run<'a> {
    cfg: &'a TrainConfig,
    classes: Vec<String>,
    out_dir: PathBuf,
    history: Vec<EpochMetrics>,
    best_val_loss: f32,
    best_val_accuracy: f32,
    skipped: Vec<(PathBuf, String)>,
    reported: HashSet<PathBuf>,
    manifest: Option<TrainedManifest>,
    /// Base stages the current phase trains (recorded with each checkpoint that holds them).
    trained_layers: Vec<String>,
    /// Whether a checkpoint has been written.
    saved: bool,
}

impl Run<'_> {
    fn note_skipped(
        &mut self,
        files: Vec<(PathBuf, String)>,
        on_event: &mut dyn FnMut(TrainEvent),
    ) {
        for (path, reason) in files {
            if self.reported.insert(path.clone()) {
                on_event(TrainEvent::Warning(format!(
                    "skipped {}: {reason}",
                    path.display()
                )));
                self.skipped.push((path, reason));
            }
        }
    }

    /// The cached features of `split`'s images, computed by `base` on its device; progress
    /// names the split.
    fn features(
        &mut self,
        base: &Model,
        (data, split): (&ImageFolder, Split),
        transform: &TrainTransform,
        cache: &FeatureCache,
        on_event: &mut dyn FnMut(TrainEvent),
        cancel: &CancelToken,
    ) -> Result<(Features, ExtractStats)> {
        let samples = data.split(split);
        let total = samples.len();
        let what = format!("{split} images");
        let (features, skipped, stats) = extract_features(
            &base.network,
            FEATURE_LAYER,
            samples,
            transform,
            Some(cache),
            self.cfg.batch_size,
            &base.device,
            &mut |done, _| {
                on_event(TrainEvent::Progress {
                    what: what.clone(),
                    done,
                    total,
                })
            },
            cancel,
        )?;
        self.note_skipped(
            skipped.into_iter().map(|s| (s.path, s.reason)).collect(),
            on_event,
        );
        if stats.corrupt > 0 {
            on_event(TrainEvent::Warning(format!(
                "{} cached feature files in {} did not match their checksum (changed on disk) \
                 and were computed anew",
                stats.corrupt,
                cache.dir().display()
            )));
        }
        Ok((features, stats))
    }

    /// Writes the checkpoint (weights first, then the manifest), atomically; refused, with
    /// nothing written, when a weight is not finite or the manifest would not load back.
    fn save(&mut self, tensors: Vec<(String, Tensor)>) -> Result<()> {
        let manifest = self
            .manifest
            .as_mut()
            .ok_or_else(|| Error::Training("no manifest before the first checkpoint".into()))?;
        manifest.history = self.history.clone();
        manifest.finetuned_layers = self.trained_layers.clone();
        manifest.best_val_loss = self.best_val_loss;
        manifest.best_val_accuracy = self.best_val_accuracy;
        let weights = self.out_dir.join(bundle::WEIGHTS);
        for (name, t) in &tensors {
            checkpoint::ensure_finite(&weights, name, t)?;
        }
        manifest.to_loadable_json()?;
        bundle::save(&self.out_dir, manifest, &tensors)?;
        self.saved = true;
        Ok(())
    }

    fn finish(&mut self) -> Result<()> {
        let manifest = self
            .manifest
            .as_mut()
            .ok_or_else(|| Error::Training("no manifest before the first checkpoint".into()))?;
        manifest.history = self.history.clone();
        manifest.to_loadable_json()?;
        bundle::save_manifest(&self.out_dir, manifest)
    }

    /// Runs `epochs` epochs of one phase; the best epoch (by validation loss, over the whole
    /// run) is checkpointed. Stops early after `patience` epochs without improvement.
    fn phase(
        &mut self,
        learner: &mut dyn Learner,
        phase: &str,
        epochs: usize,
        lr: f64,
        on_event: &mut dyn FnMut(TrainEvent),
        cancel: &CancelToken,
    ) -> Result<()> {
        on_event(TrainEvent::Phase {
            name: phase.to_string(),
            epochs,
        });
        if self.history.is_empty() {
            // A checkpoint exists from the start, so even a run that diverges at once leaves
            // a model that loads (the initial weights).
            let (loss, cm) = learner.validate()?;
            if loss.is_finite() {
                self.best_val_loss = loss;
                self.best_val_accuracy = cm.accuracy();
            }
            self.save(learner.checkpoint()?)?;
        }
        let mut optimizer = Optimizer::new(self.cfg.optimizer, learner.vars(), lr)?;
        let mut since_best = 0;
        for epoch in 1..=epochs {
            let start = Instant::now();
            let batches = learner.start_epoch(epoch);
            let (mut loss_sum, mut seen) = (0f64, 0usize);
            let mut cm = ConfusionMatrix::new(self.classes.len());
            for i in 0..batches {
                if let Err(cancelled) = cancel.check() {
                    // The best checkpoint stays; the manifest records the finished epochs.
                    self.finish()?;
                    return Err(cancelled);
                }
                let (logits, labels) = learner.train_batch(epoch, i)?;
                let skipped = learner.take_skipped();
                self.note_skipped(skipped, on_event);
                let n = labels.dim(0)?;
                if n == 0 {
                    continue;
                }
                let loss = candle_nn::loss::cross_entropy(&logits, &labels)?;
                let value = loss.to_scalar::<f32>()?;
                if !value.is_finite() {
                    return Err(self.diverged(value, phase, epoch, i + 1, lr));
                }
                optimizer.backward_step(&loss)?;
                loss_sum += value as f64 * n as f64;
                seen += n;
                let predicted = argmax_rows(&logits.detach().to_device(&Device::Cpu)?.to_vec2()?);
                for (t, p) in labels.to_vec1::<u32>()?.into_iter().zip(predicted) {
                    cm.add(t as usize, p);
                }
                on_event(TrainEvent::Progress {
                    what: format!("{phase} epoch {epoch}"),
                    done: i + 1,
                    total: batches,
                });
            }
            let (val_loss, val_cm) = learner.validate()?;
            if !val_loss.is_finite() {
                return Err(self.diverged(val_loss, phase, epoch, batches, lr));
            }
            let best = val_loss < self.best_val_loss;
            let metrics = EpochMetrics {
                phase: phase.to_string(),
                epoch,
                train_loss: (loss_sum / seen.max(1) as f64) as f32,
                train_accuracy: cm.accuracy(),
                val_loss,
                val_accuracy: val_cm.accuracy(),
                secs: start.elapsed().as_secs_f32(),
                best,
            };
            self.history.push(metrics.clone());
            if best {
                self.best_val_loss = val_loss;
                self.best_val_accuracy = val_cm.accuracy();
                self.save(learner.checkpoint()?)?;
                since_best = 0;
            } else {
                since_best += 1;
            }
            on_event(TrainEvent::Epoch(metrics));
            if self.cfg.patience.is_some_and(|p| since_best >= p) {
                on_event(TrainEvent::Warning(format!(
                    "early stop: no better validation loss in {since_best} epochs"
                )));
                break;
            }
        }
        Ok(())
    }

    fn diverged(&self, value: f32, phase: &str, epoch: usize, batch: usize, lr: f64) -> Error {
        let kept = if !self.saved {
            "Nothing was saved.".to_string()
        } else if self.best_val_loss.is_finite() {
            format!(
                "The best checkpoint (validation loss {:.4}) is kept in {}",
                self.best_val_loss,
                self.out_dir.display()
            )
        } else {
            format!(
                "The model saved in {} is the untrained starting point (no finite validation \
                 loss was reached)",
                self.out_dir.display()
            )
        };
        Error::Training(format!(
            "the loss became {value} in {phase} epoch {epoch}, batch {batch} (learning rate \
             {lr}): training stopped. Try a lower learning rate. {kept}"
        ))
    }

    /// Phase two of `finetune`: the best head so far plus the top stages, unfrozen.
    fn finetune(
        &mut self,
        base: &Model,
        data: &ImageFolder,
        transform: TrainTransform,
        on_event: &mut dyn FnMut(TrainEvent),
        cancel: &CancelToken,
    ) -> Result<()> {
        let cfg = self.cfg;
        let device = base.device.clone();
        let loaded = bundle::load_tensors(&self.out_dir, &device)?;
        let mut head = Head::from_tensors(cfg.head, &loaded)?;
        // A private copy of the base, so the caller's model stays frozen.
        let mut net = base.spec.load(&device)?.network;
        net.truncate_after(FEATURE_LAYER)?;
        cfg.validate_for(&net, FEATURE_LAYER)?; // checked up front too; indexes below rely on it
        let ids: Vec<String> = net.layer_ids().map(str::to_string).collect();
        let pooled = ids.len() - 1;
        let first_unfrozen = ids[pooled - cfg.unfreeze].clone();
        let last_frozen = ids[pooled - cfg.unfreeze - 1].clone();
        if cfg.train_batchnorm {
            net.set_batchnorm_mode(Some(&first_unfrozen), BatchNormMode::Train)?;
        }
        let unfrozen: Vec<String> = ids[pooled - cfg.unfreeze..pooled].to_vec();
        // Only the unfrozen stages: the feature layer itself stays frozen (its tensors, a
        // dense layer in VGG and MobileNetV3, are not among the fine-tuned layers saved).
        let mut vars = make_trainable(&mut net, &first_unfrozen, Some(FEATURE_LAYER))?;
        vars.extend(head.make_trainable()?);
        self.trained_layers = unfrozen;
        let mut learner = ImageLearner::new(
            Trunk::Split { net, last_frozen },
            None,
            vars,
            data,
            transform,
            cfg,
            device,
        );
        learner.head = Some(head);
        self.phase(
            &mut learner,
            "finetune",
            cfg.finetune_epochs,
            cfg.finetune_lr,
            on_event,
            cancel,
        )
    }
}

/// Trains a fresh head of `cfg.head` on cached `features` for `cfg.epochs` epochs (batch size,
/// learning rate, optimiser and seed from `cfg`): the head-only path of [`train`] without a
/// validation split, checkpoints or early stopping, for the k-fold fits of suspect labels.
/// `progress(epoch)` after each epoch. A loss that is not finite is an error.
pub fn fit_head(
    features: Features,
    classes: usize,
    cfg: &TrainConfig,
    progress: &mut dyn FnMut(usize),
    cancel: &CancelToken,
) -> Result<Head> {
    let device = Device::Cpu;
    let width = features.x.dim(1)?;
    let mut head = Head::init(cfg.head, width, classes, cfg.seed, &device)?;
    let vars = head.make_trainable()?;
    let empty = Features {
        x: Tensor::zeros((0, width), candle_core::DType::F32, &device)?,
        labels: Vec::new(),
        paths: Vec::new(),
    };
    let mut learner = FeatureLearner {
        head,
        vars,
        train: features,
        val: empty,
        batch_size: cfg.batch_size,
        seed: cfg.seed,
        order: Vec::new(),
        device,
    };
    let mut optimizer = Optimizer::new(cfg.optimizer, learner.vars(), cfg.lr)?;
    for epoch in 1..=cfg.epochs {
        for i in 0..learner.start_epoch(epoch) {
            cancel.check()?;
            let (logits, labels) = learner.train_batch(epoch, i)?;
            let loss = candle_nn::loss::cross_entropy(&logits, &labels)?;
            let value = loss.to_scalar::<f32>()?;
            if !value.is_finite() {
                return Err(Error::NonFinite {
                    what: format!("the head's training loss (epoch {epoch}, batch {})", i + 1),
                    value,
                });
            }
            optimizer.backward_step(&loss)?;
        }
        progress(epoch);
    }
    learner.head.snapshot()
}

/// The head trained on cached features.
struct FeatureLearner {
    head: Head,
    vars: Vec<Var>,
    train: Features,
    val: Features,
    batch_size: usize,
    seed: u64,
    order: Vec<usize>,
    device: Device,
}

fn labels_tensor(labels: &[u32], device: &Device) -> Result<Tensor> {
    Ok(Tensor::from_vec(labels.to_vec(), labels.len(), device)?)
}

/// Mean cross-entropy and confusion of a head on features, in batches.
fn evaluate_head(
    head: &Head,
    f: &Features,
    classes: usize,
    device: &Device,
) -> Result<(f32, ConfusionMatrix)> {
    let mut cm = ConfusionMatrix::new(classes);
    let n = f.labels.len();
    let mut loss_sum = 0f64;
    for start in (0..n).step_by(256) {
        let len = (n - start).min(256);
        let x = f.x.narrow(0, start, len)?.to_device(device)?;
        let labels = &f.labels[start..start + len];
        let logits = head.logits(&x, false)?;
        let loss = candle_nn::loss::cross_entropy(&logits, &labels_tensor(labels, device)?)?;
        loss_sum += loss.to_scalar::<f32>()? as f64 * len as f64;
        let predicted = argmax_rows(&logits.to_device(&Device::Cpu)?.to_vec2()?);
        for (&t, p) in labels.iter().zip(predicted) {
            cm.add(t as usize, p);
        }
    }
    Ok(((loss_sum / n.max(1) as f64) as f32, cm))
}

impl Learner for FeatureLearner {
    fn vars(&self) -> Vec<Var> {
        self.vars.clone()
    }

    fn start_epoch(&mut self, epoch: usize) -> usize {
        self.order = (0..self.train.labels.len()).collect();
        let mut rng = ChaCha8Rng::seed_from_u64(augment_seed(self.seed, epoch as u64, 0));
        self.order.shuffle(&mut rng);
        if epoch == 1 {
            self.head.reseed_dropout(self.seed);
        }
        self.order.len().div_ceil(self.batch_size.max(1))
    }

    fn train_batch(&mut self, _epoch: usize, i: usize) -> Result<(Tensor, Tensor)> {
        let bs = self.batch_size.max(1);
        let idx: Vec<u32> = self.order[i * bs..((i + 1) * bs).min(self.order.len())]
            .iter()
            .map(|&j| j as u32)
            .collect();
        let index = Tensor::from_vec(idx.clone(), idx.len(), &Device::Cpu)?;
        let x = self
            .train
            .x
            .index_select(&index, 0)?
            .to_device(&self.device)?;
        let labels: Vec<u32> = idx.iter().map(|&j| self.train.labels[j as usize]).collect();
        Ok((
            self.head.logits(&x, true)?,
            labels_tensor(&labels, &self.device)?,
        ))
    }

    fn validate(&mut self) -> Result<(f32, ConfusionMatrix)> {
        let classes = self.head.classes();
        evaluate_head(&self.head, &self.val, classes, &self.device)
    }

    fn checkpoint(&mut self) -> Result<Vec<(String, Tensor)>> {
        detached(self.head.named_tensors())
    }

    fn take_skipped(&mut self) -> Vec<(PathBuf, String)> {
        Vec::new()
    }
}

fn detached(tensors: Vec<(String, Tensor)>) -> Result<Vec<(String, Tensor)>> {
    tensors
        .into_iter()
        .map(|(n, t)| Ok((n, t.detach().copy()?)))
        .collect()
}

/// The part of the network that runs on images before the head.
enum Trunk<'a> {
    /// A frozen base up to the features (`extract-augment`).
    Frozen(&'a Network),
    /// A base whose stages after `last_frozen` are trainable (`finetune`).
    Split { net: Network, last_frozen: String },
    /// A whole trainable network ending in logits (`scratch`).
    Whole(Network),
}

/// Trains on images decoded (and augmented) batch by batch: never more than one batch of
/// images in memory.
struct ImageLearner<'a> {
    trunk: Trunk<'a>,
    head: Option<Head>,
    /// Cached validation features (`extract-augment`: the frozen base does not change).
    val_features: Option<Features>,
    vars: Vec<Var>,
    train: Vec<Sample>,
    val: Vec<Sample>,
    classes: usize,
    transform: TrainTransform,
    augment: Augment,
    batch_size: usize,
    seed: u64,
    order: Vec<usize>,
    device: Device,
    skipped: Vec<(PathBuf, String)>,
    /// The trainable stages run BatchNorm in [`BatchNormMode::Train`].
    train_batchnorm: bool,
}

impl<'a> ImageLearner<'a> {
    fn new(
        trunk: Trunk<'a>,
        head_and_val: Option<(Head, Features)>,
        vars: Vec<Var>,
        data: &ImageFolder,
        transform: TrainTransform,
        cfg: &TrainConfig,
        device: Device,
    ) -> Self {
        let (head, val_features) = match head_and_val {
            Some((h, v)) => (Some(h), Some(v)),
            None => (None, None),
        };
        ImageLearner {
            trunk,
            head,
            val_features,
            vars,
            train: data.split(Split::Train).to_vec(),
            val: data.split(Split::Validation).to_vec(),
            classes: data.classes.len(),
            transform,
            augment: cfg.augment.clone(),
            batch_size: cfg.batch_size.max(1),
            seed: cfg.seed,
            order: Vec::new(),
            device,
            skipped: Vec::new(),
            train_batchnorm: cfg.train_batchnorm,
        }
    }

    /// Decodes (and, for `augment_epoch`, augments) a batch in parallel: `[n, 3, s, s]` and
    /// the labels `[n]` of the images that could be read; unreadable ones are remembered.
    fn load(
        &mut self,
        samples: &[Sample],
        augment_epoch: Option<usize>,
        first_index: usize,
    ) -> Result<Option<(Tensor, Tensor)>> {
        let augment = augment_epoch.map(|epoch| BatchAugment {
            augment: &self.augment,
            seed: self.seed,
            epoch: epoch as u64,
            first_index: first_index as u64,
        });
        let (batch, skipped) = load_batch(samples, &self.transform, augment, &self.device)?;
        self.skipped
            .extend(skipped.into_iter().map(|s| (s.path, s.reason)));
        Ok(batch.map(|b| (b.images, b.labels)))
    }

    /// Logits for a batch of images; `train` enables dropout and keeps the graph.
    fn logits(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        let head = |f: &Tensor| {
            self.head
                .as_ref()
                .ok_or_else(|| Error::Training("the classifier head was not built".into()))?
                .logits(f, train)
        };
        match &self.trunk {
            Trunk::Frozen(net) => head(&net.forward_range(None, FEATURE_LAYER, x, false)?.detach()),
            Trunk::Split { net, last_frozen } => {
                let frozen = net.forward_range(None, last_frozen, x, false)?.detach();
                head(&net.forward_range(Some(last_frozen), FEATURE_LAYER, &frozen, train)?)
            }
            Trunk::Whole(net) => net.forward_range(None, net.output_layer(), x, train),
        }
    }
}

impl Learner for ImageLearner<'_> {
    fn vars(&self) -> Vec<Var> {
        self.vars.clone()
    }

    fn start_epoch(&mut self, epoch: usize) -> usize {
        self.order = (0..self.train.len()).collect();
        let mut rng = ChaCha8Rng::seed_from_u64(augment_seed(self.seed, epoch as u64, 1));
        self.order.shuffle(&mut rng);
        if epoch == 1
            && let Some(h) = &self.head
        {
            h.reseed_dropout(self.seed);
        }
        self.order.len().div_ceil(self.batch_size)
    }

    fn train_batch(&mut self, epoch: usize, i: usize) -> Result<(Tensor, Tensor)> {
        let bs = self.batch_size;
        let picked: Vec<Sample> = self.order[i * bs..((i + 1) * bs).min(self.order.len())]
            .iter()
            .map(|&j| self.train[j].clone())
            .collect();
        let augment_epoch = (!self.augment.is_none()).then_some(epoch);
        match self.load(&picked, augment_epoch, i * bs)? {
            Some((x, labels)) => Ok((self.logits(&x, true)?, labels)),
            None => Ok((
                Tensor::zeros((0, self.classes), candle_core::DType::F32, &self.device)?,
                Tensor::zeros(0, candle_core::DType::U32, &self.device)?,
            )),
        }
    }

    fn validate(&mut self) -> Result<(f32, ConfusionMatrix)> {
        if let (Some(head), Some(val)) = (&self.head, &self.val_features) {
            return evaluate_head(head, val, self.classes, &self.device);
        }
        let mut cm = ConfusionMatrix::new(self.classes);
        let mut loss_sum = 0f64;
        let val = std::mem::take(&mut self.val);
        for chunk in val.chunks(self.batch_size) {
            let Some((x, labels)) = self.load(chunk, None, 0)? else {
                continue;
            };
            let logits = self.logits(&x, false)?.detach();
            let loss = candle_nn::loss::cross_entropy(&logits, &labels)?;
            let n = labels.dim(0)?;
            loss_sum += loss.to_scalar::<f32>()? as f64 * n as f64;
            let predicted = argmax_rows(&logits.to_device(&Device::Cpu)?.to_vec2()?);
            for (t, p) in labels.to_vec1::<u32>()?.into_iter().zip(predicted) {
                cm.add(t as usize, p);
            }
        }
        self.val = val;
        Ok(((loss_sum / cm.total().max(1) as f64) as f32, cm))
    }

    fn checkpoint(&mut self) -> Result<Vec<(String, Tensor)>> {
        let mut tensors = self
            .head
            .as_ref()
            .map(|h| h.named_tensors())
            .unwrap_or_default();
        match &mut self.trunk {
            Trunk::Frozen(_) => {}
            Trunk::Split { net, last_frozen } => {
                // Saved folded (the trained BatchNorm and its running statistics folded in),
                // as the base's own stages are; then back to training BatchNorm.
                let first = net.index_of(last_frozen)? + 1;
                let first = net.layer_ids().nth(first).unwrap_or_default().to_string();
                let train_bn = self.train_batchnorm;
                if train_bn {
                    net.set_batchnorm_mode(Some(&first), BatchNormMode::Folded)?;
                }
                // The feature layer stays frozen (see `make_trainable`): not saved.
                let trained = trainable_tensors(net, last_frozen, true)?;
                let feature = format!("{FEATURE_LAYER}.");
                tensors.extend(
                    trained
                        .into_iter()
                        .filter(|(n, _)| !n.starts_with(&feature)),
                );
                if train_bn {
                    net.set_batchnorm_mode(Some(&first), BatchNormMode::Train)?;
                }
            }
            Trunk::Whole(net) => {
                let first = net.layer_ids().next().unwrap_or_default().to_string();
                tensors.extend(trainable_tensors(net, &first, false)?);
            }
        }
        detached(tensors)
    }

    fn take_skipped(&mut self) -> Vec<(PathBuf, String)> {
        std::mem::take(&mut self.skipped)
    }
}

/// The named tensors of the stages after (`exclusive`) or from `id`, cloned.
fn trainable_tensors(
    net: &mut Network,
    id: &str,
    exclusive: bool,
) -> Result<Vec<(String, Tensor)>> {
    let ids: Vec<String> = net.layer_ids().map(str::to_string).collect();
    let start = net.index_of(id)? + usize::from(exclusive);
    Ok(net
        .named_tensors()
        .into_iter()
        .filter(|(name, _)| {
            ids[start..]
                .iter()
                .any(|sid| name.starts_with(&format!("{sid}.")))
        })
        .collect())
}

/// Base model reference helpers used by [`train`].
impl BaseModelRef {
    /// The reference to `spec` with its weights' hash.
    pub fn of(spec: &ModelSpec, weights_hash: &str) -> Self {
        BaseModelRef {
            name: spec.manifest.name.clone(),
            manifest: std::fs::canonicalize(&spec.manifest_path)
                .unwrap_or_else(|_| spec.manifest_path.clone()),
            architecture: spec.manifest.architecture.clone(),
            weights_hash: weights_hash.to_string(),
            feature_layer: FEATURE_LAYER.to_string(),
        }
    }
}
