//! Winograd-transformed kernels of frozen weights kept between calls while a [`KeptKernels`]
//! scope is alive (the filters' gradient ascent and Score-CAM run the same frozen network
//! tens to hundreds of times): the transform (`16` or `36` values for each 3x3 kernel's 9,
//! written for every call) and, for the input gradient, the flipped kernel it starts from, are
//! made once per weight and direction.
//!
//! A weight is recognised by its tensor's id, which candle never gives to another tensor, and
//! only when nothing should change its values: not a variable and not the result of a tracked
//! op. A tensor detached from a variable still shares its storage, which an optimiser's step
//! rewrites in place: so each use also compares a fingerprint of the weight's values (64 of
//! them, spread over it, and the count) with the kept transform's, and makes it anew when they
//! differ. Its transform is kept from its second use on, so that a weight made anew on every
//! forward (a layer that reshapes or folds its weight per call) costs one id in a set, never
//! a kept transform. Everything kept is dropped when the last scope ends.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, LazyLock, Mutex, MutexGuard, PoisonError};

use candle_core::{Tensor, TensorId};

use super::Tile;

/// The convolution a weight's transform serves: the forward, or the input gradient (the
/// forward convolution of the output's gradient with the kernel flipped).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(in crate::ops::conv) enum Direction {
    /// `conv(x, w)`.
    Forward,
    /// `conv(gp, flipped(w))`.
    InputGradient,
}

/// A frozen weight in one direction, seen inside a scope ([`key`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(in crate::ops::conv) struct Key {
    id: TensorId,
    direction: Direction,
}

impl Key {
    /// The key with the fingerprint of the weight's values `w` (`[Cout,Cin,3,3]` as stored,
    /// before any flipping).
    pub(in crate::ops::conv) fn stamped(self, w: &[f32]) -> Stamped {
        Stamped {
            key: self,
            fingerprint: fingerprint(w),
        }
    }
}

/// A [`Key`] with the fingerprint of the values it had at this use.
#[derive(Clone, Copy, Debug)]
pub(in crate::ops::conv) struct Stamped {
    key: Key,
    fingerprint: u64,
}

/// FNV-1a over the count and 64 values spread evenly over `w` (all of a shorter one): what an
/// in-place update of a weight (every value moves) cannot leave unchanged, at 64 reads a call.
fn fingerprint(w: &[f32]) -> u64 {
    const PRIME: u64 = 0x0100_0000_01b3;
    let step = (w.len() / 64).max(1);
    let mix = |h: u64, v: u64| (h ^ v).wrapping_mul(PRIME);
    w.iter()
        .step_by(step)
        .take(64)
        .fold(mix(0xcbf2_9ce4_8422_2325, w.len() as u64), |h, v| {
            mix(h, u64::from(v.to_bits()))
        })
}

/// A kept transform and the fingerprint of the values it was made from.
struct Kept {
    fingerprint: u64,
    u: Arc<Vec<f32>>,
}

/// What the scopes share: how many are alive, the weights used once, the transforms kept.
#[derive(Default)]
struct Registry {
    scopes: usize,
    seen: HashSet<(Key, Tile)>,
    kept: HashMap<(Key, Tile), Kept>,
}

impl Registry {
    fn open(&mut self) {
        self.scopes += 1;
    }

    /// Ends a scope; the last one drops everything.
    fn close(&mut self) {
        self.scopes = self.scopes.saturating_sub(1);
        if self.scopes == 0 {
            *self = Registry::default();
        }
    }

    /// The transform kept for `k`, if its weight's fingerprint is still `fingerprint`.
    fn get(&self, k: (Key, Tile), fingerprint: u64) -> Option<Arc<Vec<f32>>> {
        self.kept
            .get(&k)
            .filter(|kept| kept.fingerprint == fingerprint)
            .map(|kept| Arc::clone(&kept.u))
    }

    /// A transform just made for `k` from values of fingerprint `fingerprint`: kept (in place
    /// of a stale one) if a scope is alive and `k` was seen before.
    fn offer(&mut self, k: (Key, Tile), fingerprint: u64, u: &Arc<Vec<f32>>) {
        if self.scopes > 0 && !self.seen.insert(k) {
            let u = Arc::clone(u);
            self.kept.insert(k, Kept { fingerprint, u });
        }
    }
}

static REGISTRY: LazyLock<Mutex<Registry>> = LazyLock::new(Mutex::default);

/// The registry, also after a panic elsewhere (its sets stay consistent: each change is one
/// insert or one clear).
fn registry() -> MutexGuard<'static, Registry> {
    REGISTRY.lock().unwrap_or_else(PoisonError::into_inner)
}

/// While alive, the Winograd convolutions keep the transformed kernels of frozen weights
/// between calls (see the module). Scopes may nest and overlap across threads; what they kept
/// is freed when the last one is dropped. Costs memory while alive: `16/9` (F(2x2)) or `4`
/// (F(4x4)) times the size of each 3x3 weight so used, per direction (VGG-16's gradient
/// ascent at 128 px: ~200 MB).
#[must_use = "the kernels are kept only while the scope is alive"]
pub struct KeptKernels(());

impl KeptKernels {
    /// Opens a scope.
    pub fn scope() -> Self {
        registry().open();
        KeptKernels(())
    }
}

impl Drop for KeptKernels {
    fn drop(&mut self) {
        registry().close();
    }
}

/// The key of weight `w` used in `direction`, when a scope is alive and `w` cannot change.
pub(in crate::ops::conv) fn key(w: &Tensor, direction: Direction) -> Option<Key> {
    (!w.track_op() && registry().scopes > 0).then(|| Key {
        id: w.id(),
        direction,
    })
}

/// The transformed kernel for `tile` of the weight `stamped` names: the kept one if made
/// from the same values, or `make()`'s, kept when this is the weight's second use in a scope.
/// Without a key, `make()`'s.
pub(in crate::ops::conv) fn transformed(
    stamped: Option<Stamped>,
    tile: Tile,
    make: impl FnOnce() -> Vec<f32>,
) -> Arc<Vec<f32>> {
    let Some(Stamped { key, fingerprint }) = stamped else {
        return Arc::new(make());
    };
    if let Some(u) = registry().get((key, tile), fingerprint) {
        return u;
    }
    // Made without the lock held: it runs on the rayon pool, and another thread's call may
    // need the registry meanwhile. Two calls making the same transform both get a correct one.
    let u = Arc::new(make());
    registry().offer((key, tile), fingerprint, &u);
    u
}

/// Whether the transform for `tile` of `w` used in `direction` is kept now (for tests).
#[cfg(test)]
pub(in crate::ops::conv) fn is_kept(w: &Tensor, direction: Direction, tile: Tile) -> bool {
    let key = Key {
        id: w.id(),
        direction,
    };
    registry().kept.contains_key(&(key, tile))
}

#[cfg(test)]
mod tests {
    use candle_core::{Device, Var};

    use super::*;

    fn key(direction: Direction) -> Key {
        let t = Tensor::zeros(1, candle_core::DType::F32, &Device::Cpu).expect("a tensor");
        Key {
            id: t.id(),
            direction,
        }
    }

    /// Kept from the second offer inside a scope, per direction and tile; nothing kept
    /// outside one; everything dropped with the last of two scopes, not with the first.
    #[test]
    fn kept_from_the_second_use_until_the_last_scope_ends() {
        let mut r = Registry::default();
        let u = Arc::new(vec![1.0]);
        let (f, b) = (key(Direction::Forward), key(Direction::InputGradient));
        r.offer((f, Tile::F2), 7, &u);
        r.offer((f, Tile::F2), 7, &u);
        assert!(r.get((f, Tile::F2), 7).is_none(), "no scope: nothing kept");
        r.open();
        r.open();
        for k in [(f, Tile::F2), (f, Tile::F4), (b, Tile::F2)] {
            r.offer(k, 7, &u);
            assert!(r.get(k, 7).is_none(), "{k:?}: not kept on its first use");
        }
        r.offer((f, Tile::F2), 7, &u);
        assert!(r.get((f, Tile::F2), 7).is_some_and(|k| Arc::ptr_eq(&k, &u)));
        assert!(
            r.get((f, Tile::F2), 8).is_none(),
            "the weight's values changed"
        );
        assert!(r.get((f, Tile::F4), 7).is_none() && r.get((b, Tile::F2), 7).is_none());
        let v = Arc::new(vec![2.0]);
        r.offer((f, Tile::F2), 8, &v);
        assert!(r.get((f, Tile::F2), 8).is_some_and(|k| Arc::ptr_eq(&k, &v)));
        assert!(
            r.get((f, Tile::F2), 7).is_none(),
            "the stale one was replaced"
        );
        r.close();
        assert!(
            r.get((f, Tile::F2), 8).is_some(),
            "one scope is still alive"
        );
        r.close();
        assert!(r.get((f, Tile::F2), 8).is_none() && r.seen.is_empty());
        r.close();
        assert_eq!(r.scopes, 0);
    }

    /// Any one value changed, or the count, changes the fingerprint (values spread over a
    /// weight longer than 64 are sampled: a change between samples goes unseen).
    #[test]
    fn fingerprints_see_changed_values() {
        let w: Vec<f32> = (0..640).map(|i| i as f32 * 0.5).collect();
        let f = fingerprint(&w);
        for i in (0..640).step_by(10) {
            let mut v = w.clone();
            v[i] = -v[i] - 1.0;
            assert_ne!(fingerprint(&v), f, "value {i}");
        }
        assert_ne!(fingerprint(&w[..639]), f);
        assert_ne!(fingerprint(&[0.0]), fingerprint(&[-0.0]));
        assert_eq!(fingerprint(&w.clone()), f);
    }

    /// Only weights nothing can change get a key: not a variable, not a tracked op's result.
    #[test]
    fn only_frozen_weights_have_a_key() -> candle_core::Result<()> {
        let _scope = KeptKernels::scope();
        let w = Tensor::ones((2, 2, 3, 3), candle_core::DType::F32, &Device::Cpu)?;
        assert!(super::key(&w, Direction::Forward).is_some());
        let var = Var::from_tensor(&w)?;
        assert!(super::key(var.as_tensor(), Direction::Forward).is_none());
        let derived = (var.as_tensor() * 2.0)?;
        assert!(super::key(&derived, Direction::InputGradient).is_none());
        Ok(())
    }
}
