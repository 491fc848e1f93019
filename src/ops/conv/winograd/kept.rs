//! Winograd-transformed kernels of frozen weights kept between calls while a [`KeptKernels`]
//! scope is alive (the filters' gradient ascent and Score-CAM run the same frozen network
//! tens to hundreds of times): the transform (`16` or `36` values for each 3x3 kernel's 9,
//! written for every call) and, for the input gradient, the flipped kernel it starts from, are
//! made once per weight and direction.
//!
//! A weight is recognised by its tensor's id, which candle never gives to another tensor, and
//! only when nothing can change its values: not a variable and not the result of a tracked
//! op. Its transform is kept from its second use on, so that a weight made anew on every
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

/// What the scopes share: how many are alive, the weights used once, the transforms kept.
#[derive(Default)]
struct Registry {
    scopes: usize,
    seen: HashSet<(Key, Tile)>,
    kept: HashMap<(Key, Tile), Arc<Vec<f32>>>,
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

    fn get(&self, k: (Key, Tile)) -> Option<Arc<Vec<f32>>> {
        self.kept.get(&k).cloned()
    }

    /// A transform just made for `k`: kept if a scope is alive and `k` was seen before.
    fn offer(&mut self, k: (Key, Tile), u: &Arc<Vec<f32>>) {
        if self.scopes > 0 && !self.seen.insert(k) {
            self.kept.insert(k, Arc::clone(u));
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

/// The transformed kernel for `tile` of the weight `key` names: the kept one, or `make()`'s,
/// kept when this is the weight's second use in a scope. Without a key, `make()`'s.
pub(in crate::ops::conv) fn transformed(
    key: Option<Key>,
    tile: Tile,
    make: impl FnOnce() -> Vec<f32>,
) -> Arc<Vec<f32>> {
    let Some(key) = key else {
        return Arc::new(make());
    };
    if let Some(u) = registry().get((key, tile)) {
        return u;
    }
    // Made without the lock held: it runs on the rayon pool, and another thread's call may
    // need the registry meanwhile. Two calls making the same transform both get a correct one.
    let u = Arc::new(make());
    registry().offer((key, tile), &u);
    u
}

/// Whether the transform for `tile` of `w` used in `direction` is kept now (for tests).
#[cfg(test)]
pub(in crate::ops::conv) fn is_kept(w: &Tensor, direction: Direction, tile: Tile) -> bool {
    let key = Key {
        id: w.id(),
        direction,
    };
    registry().get((key, tile)).is_some()
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
        r.offer((f, Tile::F2), &u);
        r.offer((f, Tile::F2), &u);
        assert!(r.get((f, Tile::F2)).is_none(), "no scope: nothing kept");
        r.open();
        r.open();
        for k in [(f, Tile::F2), (f, Tile::F4), (b, Tile::F2)] {
            r.offer(k, &u);
            assert!(r.get(k).is_none(), "{k:?}: not kept on its first use");
        }
        r.offer((f, Tile::F2), &u);
        assert!(r.get((f, Tile::F2)).is_some_and(|k| Arc::ptr_eq(&k, &u)));
        assert!(r.get((f, Tile::F4)).is_none() && r.get((b, Tile::F2)).is_none());
        r.close();
        assert!(r.get((f, Tile::F2)).is_some(), "one scope is still alive");
        r.close();
        assert!(r.get((f, Tile::F2)).is_none() && r.seen.is_empty());
        r.close();
        assert_eq!(r.scopes, 0);
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
