//! Feature extraction with a frozen base, cached on disk so that a second run over the same
//! folder does no base forward at all.
//!
//! A cache entry is keyed by the base weights' hash, the layer, the preprocessing and the image
//! file (canonical path, size, modification time): change any and the features are recomputed.

use std::path::{Path, PathBuf};
use std::time::UNIX_EPOCH;

use candle_core::{Device, Tensor};
use rayon::prelude::*;
use sha2::{Digest, Sha256};

use crate::cancel::CancelToken;
use crate::data::folder::{Sample, SkippedFile};
use crate::data::train_transform::TrainTransform;
use crate::graph::Network;
use crate::{Error, Result};

/// Where feature caches live: the cache folder of [`crate::workspace::paths`]
/// (`$CONVLENS_CACHE`, else the platform's), else a folder in the temporary directory.
pub fn default_cache_root() -> PathBuf {
    crate::workspace::paths::cache_dir()
        .unwrap_or_else(|_| std::env::temp_dir().join("convlens-cache"))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// One cache folder for one (weights, layer, preprocessing) combination.
pub struct FeatureCache {
    dir: PathBuf,
}

impl FeatureCache {
    /// Opens (creating) the cache for features of `layer` of the base with `weights_hash`,
    /// computed after `transform`.
    pub fn open(
        root: &Path,
        weights_hash: &str,
        layer: &str,
        transform: &TrainTransform,
    ) -> Result<Self> {
        let mut h = Sha256::new();
        h.update(weights_hash.as_bytes());
        h.update(layer.as_bytes());
        h.update(
            serde_json::to_string(transform)
                .expect("serialisable")
                .as_bytes(),
        );
        let dir = root.join("features").join(&hex(&h.finalize())[..24]);
        std::fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
        Ok(FeatureCache { dir })
    }

    /// The cache folder.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn entry(&self, image: &Path) -> Option<PathBuf> {
        let meta = std::fs::metadata(image).ok()?;
        let mtime = meta
            .modified()
            .ok()?
            .duration_since(UNIX_EPOCH)
            .ok()?
            .as_nanos();
        let canonical = std::fs::canonicalize(image).ok()?;
        let mut h = Sha256::new();
        h.update(canonical.to_string_lossy().as_bytes());
        h.update(meta.len().to_le_bytes());
        h.update(mtime.to_le_bytes());
        Some(self.dir.join(format!("{}.f32", &hex(&h.finalize())[..32])))
    }

    /// The cached features of an image, if present and of the expected length.
    pub fn get(&self, image: &Path, len: usize) -> Option<Vec<f32>> {
        let bytes = std::fs::read(self.entry(image)?).ok()?;
        if bytes.len() != len * 4 {
            return None;
        }
        Some(
            bytes
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect(),
        )
    }

    /// Stores an image's features (atomically: a reader never sees half a file).
    pub fn put(&self, image: &Path, features: &[f32]) -> Result<()> {
        let Some(path) = self.entry(image) else {
            return Ok(()); // an image without metadata is simply not cached
        };
        let bytes: Vec<u8> = features.iter().flat_map(|v| v.to_le_bytes()).collect();
        crate::fsutil::write_atomic(&path, &bytes)
    }
}

/// Features of a set of images.
pub struct Features {
    /// `[n, features]` on the CPU.
    pub x: Tensor,
    /// The class of each row.
    pub labels: Vec<u32>,
    /// The image of each row.
    pub paths: Vec<PathBuf>,
}

/// How much work extraction did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ExtractStats {
    /// Images run through the base network.
    pub computed: usize,
    /// Images whose features came from the cache.
    pub cached: usize,
}

/// One batch read ahead: the cached rows, and the decoded inputs of the others.
struct Prepared {
    /// Per sample of the chunk, its cached features.
    cached: Vec<Option<Vec<f32>>>,
    /// Indices (into the chunk) of the samples to compute, and their decoded inputs.
    to_compute: Vec<usize>,
    decoded: Vec<Result<Tensor>>,
}

/// Cache look-ups and decoding (on rayon) of one chunk.
fn prepare(
    chunk: &[Sample],
    transform: &TrainTransform,
    cache: Option<&FeatureCache>,
    width: usize,
) -> Prepared {
    let cached: Vec<Option<Vec<f32>>> = chunk
        .par_iter()
        .map(|s| cache.and_then(|c| c.get(&s.path, width)))
        .collect();
    let to_compute: Vec<usize> = (0..chunk.len()).filter(|&i| cached[i].is_none()).collect();
    let decoded = to_compute
        .par_iter()
        .map(|&i| transform.load(&chunk[i].path, &Device::Cpu))
        .collect();
    Prepared {
        cached,
        to_compute,
        decoded,
    }
}

/// Runs the frozen base up to `layer` (`[batch, features]` output, e.g. `pooled`) on every
/// sample, in batches, reading and filling `cache`. Images that fail to decode are skipped and
/// returned. `progress(done, total)` after each batch.
///
/// Bounded prefetch: while batch `k` runs through the network, batch `k + 1` is read from the
/// cache and decoded on the same rayon pool (`rayon::join`), so decoding fills the gaps of the
/// forward instead of following it; at most two batches of inputs exist at a time.
#[allow(clippy::too_many_arguments)]
pub fn extract_features(
    base: &Network,
    layer: &str,
    samples: &[Sample],
    transform: &TrainTransform,
    cache: Option<&FeatureCache>,
    batch_size: usize,
    device: &Device,
    progress: &mut dyn FnMut(usize, usize),
    cancel: &CancelToken,
) -> Result<(Features, Vec<SkippedFile>, ExtractStats)> {
    let size = transform.size as usize;
    base.index_of(layer)?; // an unknown layer is an error naming the known ones
    let width = base
        .layers(size)
        .iter()
        .find(|l| l.id == layer)
        .and_then(|l| l.output_shape.first().copied())
        .unwrap_or(0);
    let mut rows: Vec<f32> = Vec::with_capacity(samples.len() * width);
    let mut labels = Vec::new();
    let mut paths = Vec::new();
    let mut skipped = Vec::new();
    let mut stats = ExtractStats::default();
    let batch_size = batch_size.max(1);
    let chunks: Vec<&[Sample]> = samples.chunks(batch_size).collect();
    let mut next = chunks
        .first()
        .map(|chunk| prepare(chunk, transform, cache, width));
    for (done, &chunk) in chunks.iter().enumerate() {
        cancel.check()?;
        let Prepared {
            cached,
            to_compute,
            decoded,
        } = next.take().expect("prepared ahead");
        let compute = || -> Result<Vec<Option<Vec<f32>>>> {
            let mut computed: Vec<Option<Vec<f32>>> = vec![None; to_compute.len()];
            let ok: Vec<usize> = (0..decoded.len()).filter(|&i| decoded[i].is_ok()).collect();
            if !ok.is_empty() {
                let inputs: Vec<Tensor> = ok
                    .iter()
                    .map(|&i| decoded[i].as_ref().expect("ok").clone())
                    .collect();
                let x = Tensor::cat(&inputs, 0)?.to_device(device)?;
                let feats = base
                    .forward_range(None, layer, &x, false)?
                    .to_device(&Device::Cpu)?
                    .to_vec2::<f32>()?;
                for (&i, f) in ok.iter().zip(feats) {
                    computed[i] = Some(f);
                }
            }
            Ok(computed)
        };
        let (computed, prefetched) = match chunks.get(done + 1) {
            Some(following) => {
                let (c, p) = rayon::join(compute, || prepare(following, transform, cache, width));
                (c?, Some(p))
            }
            None => (compute()?, None),
        };
        next = prefetched;
        for (&i, f) in to_compute.iter().zip(&computed) {
            if let (Some(c), Some(f)) = (cache, f) {
                c.put(&chunk[i].path, f)?;
            }
        }
        stats.computed += computed.iter().filter(|f| f.is_some()).count();
        for (&i, d) in to_compute.iter().zip(&decoded) {
            if let Err(e) = d {
                skipped.push(SkippedFile {
                    path: chunk[i].path.clone(),
                    reason: e.to_string(),
                });
            }
        }
        let mut fresh = computed.into_iter();
        for (s, c) in chunk.iter().zip(cached) {
            let f = match c {
                Some(f) => {
                    stats.cached += 1;
                    Some(f)
                }
                None => fresh.next().flatten(),
            };
            if let Some(f) = f {
                rows.extend_from_slice(&f);
                labels.push(s.label as u32);
                paths.push(s.path.clone());
            }
        }
        progress(
            (done * batch_size + chunk.len()).min(samples.len()),
            samples.len(),
        );
    }
    let n = labels.len();
    let x = Tensor::from_vec(rows, (n, width), &Device::Cpu)?;
    Ok((Features { x, labels, paths }, skipped, stats))
}
