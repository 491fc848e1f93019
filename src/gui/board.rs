//! The jobs the window has submitted and not yet seen finish, with their progress and a time
//! estimate, for spinners, the status bar and Cancel.

use std::collections::{BTreeMap, HashSet};
use std::time::{Duration, Instant};

use crate::jobs::{JobId, JobKind, Progress};

/// One job in flight.
#[derive(Clone, Debug)]
struct InFlight {
    kind: JobKind,
    progress: Option<Progress>,
    /// When the current stage reported its first progress.
    stage_started: Instant,
    /// `done` at that moment (a stage may resume part-way).
    stage_base: usize,
}

/// The jobs in flight, in submission order (the worker runs them in that order).
#[derive(Debug, Default)]
pub struct JobBoard {
    jobs: BTreeMap<JobId, InFlight>,
    /// Jobs cancelled because a newer one of the same kind replaced them (no message).
    superseded: HashSet<JobId>,
}

impl JobBoard {
    /// Records a submitted job.
    pub fn start(&mut self, id: JobId, kind: JobKind) {
        self.jobs.insert(
            id,
            InFlight {
                kind,
                progress: None,
                stage_started: Instant::now(),
                stage_base: 0,
            },
        );
    }

    /// Records a job's progress.
    pub fn progress(&mut self, id: JobId, progress: Progress) {
        if let Some(job) = self.jobs.get_mut(&id) {
            let new_stage = job
                .progress
                .as_ref()
                .is_none_or(|p| p.stage != progress.stage || progress.done < p.done);
            if new_stage {
                job.stage_started = Instant::now();
                job.stage_base = progress.done;
            }
            job.progress = Some(progress);
        }
    }

    /// Forgets a finished job: its kind, and whether it was superseded (so says nothing).
    pub fn finish(&mut self, id: JobId) -> Option<(JobKind, bool)> {
        let job = self.jobs.remove(&id)?;
        Some((job.kind, self.superseded.remove(&id)))
    }

    /// Marks jobs of `kind` as replaced by a newer one; returns them for cancelling.
    pub fn supersede(&mut self, kind: JobKind) -> Vec<JobId> {
        let ids = self.ids(kind);
        self.superseded.extend(ids.iter().copied());
        ids
    }

    /// The jobs of `kind` in flight.
    pub fn ids(&self, kind: JobKind) -> Vec<JobId> {
        self.jobs
            .iter()
            .filter(|(_, j)| j.kind == kind)
            .map(|(&id, _)| id)
            .collect()
    }

    /// Whether a job of `kind` is queued or running.
    pub fn running(&self, kind: JobKind) -> bool {
        self.jobs.values().any(|j| j.kind == kind)
    }

    /// Whether any job is in flight.
    pub fn busy(&self) -> bool {
        !self.jobs.is_empty()
    }

    /// The running job (the oldest in flight): its id and a line describing it.
    pub fn current(&self) -> Option<(JobId, JobKind, StatusLine)> {
        let (&id, job) = self.jobs.iter().next()?;
        let line = match &job.progress {
            None => StatusLine {
                text: job.kind.name().to_string(),
                fraction: None,
            },
            Some(p) => {
                let left = time_left(job.stage_started.elapsed(), p, job.stage_base);
                let mut text = format!("{}: {} of {}", p.stage, p.done, p.total);
                if let Some(left) = left {
                    text.push_str(&format!(", about {} left", duration_text(left)));
                }
                StatusLine {
                    text,
                    fraction: (p.total > 0).then(|| p.done as f32 / p.total as f32),
                }
            }
        };
        Some((id, job.kind, line))
    }

    /// How many jobs wait behind the running one.
    pub fn queued(&self) -> usize {
        self.jobs.len().saturating_sub(1)
    }
}

/// A line for the status bar: what runs, and how far it is when known.
#[derive(Clone, Debug, PartialEq)]
pub struct StatusLine {
    pub text: String,
    pub fraction: Option<f32>,
}

/// The time the rest of a stage should take at the rate seen so far (after at least one unit
/// and half a second).
fn time_left(elapsed: Duration, p: &Progress, base: usize) -> Option<Duration> {
    let done = p.done.checked_sub(base).filter(|&d| d > 0)?;
    if elapsed < Duration::from_millis(500) || p.total <= p.done {
        return None;
    }
    Some(elapsed.mul_f64((p.total - p.done) as f64 / done as f64))
}

/// `12 s`, `3 min 5 s`.
pub fn duration_text(d: Duration) -> String {
    let s = d.as_secs_f64().round() as u64;
    if s < 60 {
        format!("{s} s")
    } else {
        format!("{} min {} s", s / 60, s % 60)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn progress(stage: &str, done: usize, total: usize) -> Progress {
        Progress {
            stage: stage.into(),
            done,
            total,
        }
    }

    #[test]
    fn time_left_follows_the_rate_of_the_stage() {
        let p = progress("steps", 10, 40);
        let left = time_left(Duration::from_secs(5), &p, 0).unwrap();
        assert_eq!(left, Duration::from_secs(15));
        // Nothing done yet, or too early: no guess.
        assert_eq!(time_left(Duration::from_secs(5), &p, 10), None);
        assert_eq!(time_left(Duration::from_millis(100), &p, 0), None);
        assert_eq!(duration_text(Duration::from_secs(185)), "3 min 5 s");
    }

    #[test]
    fn the_board_tracks_kinds_and_superseded_jobs() {
        let mut board = JobBoard::default();
        let mut worker = crate::jobs::Worker::spawn(candle_core::Device::Cpu, || {});
        let a = worker
            .submit(crate::jobs::Request::Thumbnails {
                paths: vec![],
                size: 8,
            })
            .unwrap();
        board.start(a, JobKind::Thumbnails);
        assert!(board.running(JobKind::Thumbnails));
        assert!(!board.running(JobKind::Filters));
        board.progress(a, progress("decoding", 1, 4));
        let (_, _, line) = board.current().unwrap();
        assert_eq!(line.text, "decoding: 1 of 4");
        assert_eq!(line.fraction, Some(0.25));
        assert_eq!(board.supersede(JobKind::Thumbnails), vec![a]);
        assert_eq!(board.finish(a), Some((JobKind::Thumbnails, true)));
        assert!(!board.busy());
    }
}
