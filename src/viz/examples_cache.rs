//! The on-disk cache of [`LayerExamples`]: one entry per (model weights, layer, preprocessing,
//! folder content), so opening the same channel examples again reads a file instead of
//! running the folder through the network.
//!
//! The key hashes the weights' SHA-256, the layer, the preprocessing and the folder's
//! [`Listing::fingerprint`] (relative paths, classes, sizes, modification times), so a changed,
//! added or removed image, other weights or another layer make another entry. An entry is a
//! header line `CLEX <version> <sha256 of the rest>` and the JSON; one of another version, one
//! keeping fewer examples per channel than asked, or one whose bytes no longer match its
//! checksum (counted as corrupt) is computed anew and replaced.

use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use super::examples::{self, LayerExamples};
use crate::cancel::CancelToken;
use crate::data::listing::Listing;
use crate::zoo::Model;
use crate::{Error, Result};

/// The entry format: bumped whenever the layout or the meaning of the values changes.
pub const ENTRY_VERSION: u32 = 1;

/// Where the examples came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Source {
    /// Read from the cache (no image was decoded).
    Cached,
    /// Computed (nothing usable was cached).
    Computed,
    /// Computed because the cached entry had changed on disk.
    RecomputedCorrupt,
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The cache file of `layer` of `model` over `listing` under `root`.
pub fn entry_path(root: &Path, model: &Model, layer: &str, listing: &Listing) -> Result<PathBuf> {
    let pre = serde_json::to_string(&model.spec.preprocess).map_err(|source| Error::Json {
        path: root.to_path_buf(),
        source,
    })?;
    let mut h = Sha256::new();
    for part in [
        model.weights_hash.as_str(),
        layer,
        pre.as_str(),
        &listing.fingerprint(),
    ] {
        h.update(part.as_bytes());
        h.update([0]);
    }
    Ok(root
        .join("examples")
        .join(format!("{}.json", &hex(&h.finalize())[..32])))
}

/// What an entry's bytes hold.
#[derive(Debug, PartialEq)]
enum Read {
    Hit(Box<LayerExamples>),
    Miss,
    Corrupt,
}

fn encode(examples: &LayerExamples) -> Result<Vec<u8>> {
    let json = serde_json::to_vec(examples).map_err(|source| Error::Json {
        path: PathBuf::from("examples cache"),
        source,
    })?;
    let mut bytes = format!("CLEX {ENTRY_VERSION} {}\n", hex(&Sha256::digest(&json))).into_bytes();
    bytes.extend_from_slice(&json);
    Ok(bytes)
}

fn decode(bytes: &[u8]) -> Read {
    let Some(nl) = bytes.iter().position(|&b| b == b'\n') else {
        return Read::Miss;
    };
    let header = String::from_utf8_lossy(&bytes[..nl]);
    let parts: Vec<&str> = header.split(' ').collect();
    let version = ENTRY_VERSION.to_string();
    if parts.len() != 3 || parts[0] != "CLEX" || parts[1] != version {
        return Read::Miss;
    }
    let json = &bytes[nl + 1..];
    if hex(&Sha256::digest(json)) != parts[2] {
        return Read::Corrupt;
    }
    serde_json::from_slice(json).map_or(Read::Corrupt, |e| Read::Hit(Box::new(e)))
}

/// The examples of `layer` over `listing` with at least `top` per channel: from the cache under
/// `cache_root` when it holds them, else computed ([`examples::compute`]) and stored.
/// A cached entry keeping more than `top` is returned as it is (callers show the first `top`).
#[allow(clippy::too_many_arguments)]
pub fn examples_cached(
    model: &Model,
    layer: &str,
    listing: &Listing,
    top: usize,
    batch: usize,
    cache_root: Option<&Path>,
    progress: &mut dyn FnMut(usize, usize),
    cancel: &CancelToken,
) -> Result<(LayerExamples, Source)> {
    let path = cache_root
        .map(|root| entry_path(root, model, layer, listing))
        .transpose()?;
    let mut source = Source::Computed;
    if let Some(path) = &path {
        match std::fs::read(path).map_or(Read::Miss, |b| decode(&b)) {
            Read::Hit(e) if e.top >= top && e.layer == layer => return Ok((*e, Source::Cached)),
            Read::Corrupt => source = Source::RecomputedCorrupt,
            Read::Hit(_) | Read::Miss => {}
        }
    }
    let computed = examples::compute(model, layer, listing, top, batch, progress, cancel)?;
    if let Some(path) = &path {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        }
        crate::fsutil::write_atomic(path, &encode(&computed)?)?;
    }
    Ok((computed, source))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::viz::receptive::ReceptiveField;

    fn sample() -> LayerExamples {
        LayerExamples {
            layer: "blocks.4".into(),
            map: [28, 28],
            input_size: 224,
            field: ReceptiveField {
                stride: 8.0,
                offset: 3.5,
                radius: 40,
            },
            top: 2,
            scanned: 3,
            skipped: vec![],
            channels: vec![],
        }
    }

    #[test]
    fn entries_round_trip_and_a_changed_byte_is_corrupt() -> Result<()> {
        let bytes = encode(&sample())?;
        assert_eq!(decode(&bytes), Read::Hit(Box::new(sample())));
        let mut changed = bytes.clone();
        let last = changed.len() - 3;
        changed[last] ^= 0x01;
        assert_eq!(decode(&changed), Read::Corrupt);
        let other = String::from_utf8_lossy(&bytes).replacen("CLEX 1 ", "CLEX 9 ", 1);
        assert_eq!(decode(other.as_bytes()), Read::Miss);
        assert_eq!(decode(b"{}"), Read::Miss);
        Ok(())
    }
}
