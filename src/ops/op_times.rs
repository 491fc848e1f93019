//! The wall time of each convolution call while switched on: a network's forward or training
//! step seen layer by layer (`cargo bench --bench forward -- --arch resnet50 --ops`, or
//! `CONVLENS_BENCH_OPS=1` for the suite's fine-tuning step). The kernels' timing tests
//! (`conv::timings`) time one shape alone, on inputs they made; here each layer runs where the
//! network runs it, after the layers before it (ResNet-50's 56-px block ends, which add the
//! residual, came out at 104 GMAC/s there, the same product without it at 180). Switched off
//! (the default), a call costs one relaxed atomic load.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::Instant;

/// The calls of one op on one set of shapes.
#[derive(Clone, Debug)]
pub struct OpTimes {
    /// The op's name (`convlens-conv2d-bias-act`, `convlens-pointwise-grad-weight`, ...).
    pub op: &'static str,
    /// Its operands' shapes and, for a convolution, stride and padding.
    pub shapes: String,
    /// Multiply-adds of one call.
    pub macs: u64,
    /// Wall time of each call, in seconds, in call order.
    pub seconds: Vec<f64>,
}

impl OpTimes {
    /// The median call's time in seconds (0 without calls).
    pub fn median(&self) -> f64 {
        let mut s = self.seconds.clone();
        s.sort_by(f64::total_cmp);
        s.get(s.len() / 2).copied().unwrap_or(0.0)
    }
}

static ON: AtomicBool = AtomicBool::new(false);

type Recorded = BTreeMap<(&'static str, String), (u64, Vec<f64>)>;

static RECORDED: Mutex<Recorded> = Mutex::new(BTreeMap::new());

/// Forgets what was recorded and starts recording every call.
pub fn start() {
    RECORDED
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .clear();
    ON.store(true, Ordering::Relaxed);
}

/// Stops recording and returns what was recorded since [`start`], the op with the most time in
/// all first.
pub fn stop() -> Vec<OpTimes> {
    ON.store(false, Ordering::Relaxed);
    let recorded = std::mem::take(&mut *RECORDED.lock().unwrap_or_else(PoisonError::into_inner));
    let mut all: Vec<OpTimes> = recorded
        .into_iter()
        .map(|((op, shapes), (macs, seconds))| OpTimes {
            op,
            shapes,
            macs,
            seconds,
        })
        .collect();
    let total = |t: &OpTimes| t.seconds.iter().sum::<f64>();
    all.sort_by(|a, b| total(b).total_cmp(&total(a)));
    all
}

/// Times one call from its creation to its drop, when recording is on.
pub(crate) struct Timed(Option<(&'static str, String, u64, Instant)>);

impl Timed {
    /// A call of `op` on `shapes()` (made only when recording) of `macs` multiply-adds.
    pub(crate) fn start(op: &'static str, shapes: impl FnOnce() -> String, macs: usize) -> Self {
        Timed(
            ON.load(Ordering::Relaxed)
                .then(|| (op, shapes(), macs as u64, Instant::now())),
        )
    }
}

impl Drop for Timed {
    fn drop(&mut self) {
        if let Some((op, shapes, macs, at)) = self.0.take() {
            let seconds = at.elapsed().as_secs_f64();
            let mut recorded = RECORDED.lock().unwrap_or_else(PoisonError::into_inner);
            let entry = recorded.entry((op, shapes)).or_insert((macs, Vec::new()));
            entry.1.push(seconds);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Recorded only between `start` and `stop`, per op and shapes, the longest total first.
    /// (Other tests' convolutions running meanwhile are recorded too: they are left out.)
    #[test]
    fn records_between_start_and_stop() {
        drop(Timed::start("before", || "x".into(), 1));
        start();
        for _ in 0..3 {
            let _t = Timed::start("short", || "[1]".into(), 10);
        }
        {
            let _t = Timed::start("long", || "[2]".into(), 20);
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        let mut got = stop();
        drop(Timed::start("after", || "x".into(), 1));
        got.retain(|t| !t.op.starts_with("convlens"));
        let names: Vec<(&str, usize, u64)> = got
            .iter()
            .map(|t| (t.op, t.seconds.len(), t.macs))
            .collect();
        assert_eq!(names, [("long", 1, 20), ("short", 3, 10)]);
        assert!(got[0].median() >= 0.02, "{:?}", got[0].seconds);
        assert!(stop().iter().all(|t| t.op.starts_with("convlens")));
    }
}
