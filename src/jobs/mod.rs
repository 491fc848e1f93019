//! The only place that spawns threads: one named worker thread owns the device and the loaded
//! networks. Work comes in as a [`Request`] on a bounded queue; progress, partial results and one
//! final [`Outcome`] per job go out as [`Event`]s, each followed by a call to a waker (the GUI
//! passes `request_repaint`). A job that panics ends as [`Outcome::Panicked`]; the worker lives on.

mod dataset;
pub mod evidence;
pub mod insight;
mod request;
pub mod views;

use std::collections::HashMap;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::PathBuf;
use std::sync::mpsc::{self, Receiver, Sender, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};

use candle_core::Device;
use image::RgbImage;

use crate::cancel::CancelToken;
use crate::train::TrainEvent;
use crate::zoo::Model;
use crate::{Error, Result};

pub use dataset::ChannelExamplesView;
pub use request::{JobKind, Reply, Request};

/// What the worker thread keeps between jobs: the device and the models it has loaded.
pub struct Engine {
    pub device: Device,
    models: HashMap<String, Arc<Model>>,
}

impl Engine {
    /// An engine on `device` with nothing loaded.
    pub fn new(device: Device) -> Self {
        Engine {
            device,
            models: HashMap::new(),
        }
    }

    /// The model named or found at `name_or_path`, loaded once and kept.
    pub fn model(&mut self, name_or_path: &str) -> Result<Arc<Model>> {
        if let Some(m) = self.models.get(name_or_path) {
            return Ok(m.clone());
        }
        let model = Arc::new(crate::zoo::resolve(name_or_path)?.load(&self.device)?);
        self.models.insert(name_or_path.to_string(), model.clone());
        Ok(model)
    }

    /// Forgets a loaded model (e.g. a trained model folder that was rewritten).
    pub fn forget(&mut self, name_or_path: &str) {
        self.models.remove(name_or_path);
    }

    /// Moves to another device; the loaded models (on the old one) are dropped.
    pub fn set_device(&mut self, device: Device) {
        self.device = device;
        self.models.clear();
    }
}

/// Names one submitted job in the events that report on it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct JobId(u64);

/// How far a running job is: `done` of `total` units of its current `stage`.
#[derive(Clone, Debug, PartialEq)]
pub struct Progress {
    /// What is being counted (`"filters: ascent steps"`, `"Score-CAM batches"`, ...).
    pub stage: String,
    pub done: usize,
    pub total: usize,
}

/// A piece of a job's result that is useful before the job ends.
#[derive(Debug)]
pub enum Partial {
    /// One finished filter pattern (`index` into the requested filter list).
    FilterTile { index: usize, image: RgbImage },
    /// A training event (phase, epoch, warning).
    Train(TrainEvent),
    /// One thumbnail (`None`: the file could not be read).
    Thumbnail(PathBuf, Option<RgbImage>),
}

/// How a job ended.
#[derive(Debug)]
pub enum Outcome {
    /// It finished with this result.
    Done(Reply),
    /// The user stopped it (not an error).
    Cancelled,
    /// It failed.
    Failed(Error),
    /// It panicked (a bug): the panic's message. The worker keeps running.
    Panicked(String),
}

/// What the worker tells its owner.
#[derive(Debug)]
#[allow(
    clippy::large_enum_variant,
    reason = "a few events per job, each moved once through the channel: boxing buys nothing"
)]
pub enum Event {
    Progress(JobId, Progress),
    Partial(JobId, Partial),
    /// The last event of every job, sent exactly once.
    Finished(JobId, Outcome),
}

/// What a running job can do: report progress and partial results, and check for cancel.
pub struct JobContext {
    id: JobId,
    events: Sender<Event>,
    waker: Arc<dyn Fn() + Send + Sync>,
    /// Set when the user asked this job to stop.
    pub cancel: CancelToken,
}

impl JobContext {
    fn send(&self, event: Event) {
        let _ = self.events.send(event);
        (self.waker)();
    }

    /// Reports `done` of `total` units of `stage`.
    pub fn progress(&self, stage: &str, done: usize, total: usize) {
        let progress = Progress {
            stage: stage.to_string(),
            done,
            total,
        };
        self.send(Event::Progress(self.id, progress));
    }

    /// Hands over a piece of the result.
    pub fn partial(&self, partial: Partial) {
        self.send(Event::Partial(self.id, partial));
    }
}

type Task = Box<dyn FnOnce(&mut Engine, &JobContext) -> Result<Reply> + Send>;

/// A worker thread running one job at a time, in order.
pub struct Worker {
    tasks: SyncSender<(JobId, Task)>,
    events: Receiver<Event>,
    /// The cancel flag of every job submitted and not yet finished.
    pending: Arc<Mutex<HashMap<JobId, CancelToken>>>,
    next: u64,
}

/// How many jobs may wait behind the running one.
const QUEUE: usize = 32;

impl Worker {
    /// Starts the worker thread with an engine on `device`; `waker` runs after every event.
    #[allow(
        clippy::disallowed_methods,
        clippy::expect_used,
        reason = "this is the one place that starts a thread; an OS that refuses one at start-up \
                  leaves the app nothing to run"
    )]
    pub fn spawn(device: Device, waker: impl Fn() + Send + Sync + 'static) -> Self {
        let (task_tx, task_rx) = mpsc::sync_channel::<(JobId, Task)>(QUEUE);
        let (event_tx, event_rx) = mpsc::channel();
        let waker: Arc<dyn Fn() + Send + Sync> = Arc::new(waker);
        let pending: Arc<Mutex<HashMap<JobId, CancelToken>>> = Arc::default();
        let tokens = pending.clone();
        std::thread::Builder::new()
            .name("convlens-worker".into())
            .spawn(move || {
                let mut engine = Engine::new(device);
                while let Ok((id, task)) = task_rx.recv() {
                    let cancel = tokens
                        .lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner)
                        .get(&id)
                        .cloned()
                        .unwrap_or_default();
                    let ctx = JobContext {
                        id,
                        events: event_tx.clone(),
                        waker: waker.clone(),
                        cancel,
                    };
                    let outcome = if ctx.cancel.is_cancelled() {
                        Outcome::Cancelled
                    } else {
                        run_guarded(task, &mut engine, &ctx)
                    };
                    tokens
                        .lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner)
                        .remove(&id);
                    ctx.send(Event::Finished(id, outcome));
                }
            })
            .expect("spawn the worker thread");
        Worker {
            tasks: task_tx,
            events: event_rx,
            pending,
            next: 0,
        }
    }

    /// Queues a request. A full queue is an error (the user is clicking faster than the worker).
    pub fn submit(&mut self, request: Request) -> Result<JobId> {
        self.submit_task(Box::new(move |engine, ctx| request.run(engine, ctx)))
    }

    fn submit_task(&mut self, task: Task) -> Result<JobId> {
        self.next += 1;
        let id = JobId(self.next);
        self.pending
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(id, CancelToken::new());
        match self.tasks.try_send((id, task)) {
            Ok(()) => Ok(id),
            Err(e) => {
                self.pending
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .remove(&id);
                Err(Error::Model(match e {
                    TrySendError::Full(_) => {
                        "too many jobs are waiting; wait for the running one or cancel it".into()
                    }
                    TrySendError::Disconnected(_) => "the worker thread has stopped".into(),
                }))
            }
        }
    }

    /// Asks job `id` to stop (at its next check if running; before it starts if queued).
    pub fn cancel(&self, id: JobId) {
        if let Some(c) = self
            .pending
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(&id)
        {
            c.cancel();
        }
    }

    /// Whether any submitted job has not finished yet.
    pub fn busy(&self) -> bool {
        !self
            .pending
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .is_empty()
    }

    /// The events sent since the last call.
    pub fn drain(&self) -> Vec<Event> {
        self.events.try_iter().collect()
    }
}

/// Runs a task, turning `Error::Cancelled` into [`Outcome::Cancelled`] and a panic into
/// [`Outcome::Panicked`].
fn run_guarded(task: Task, engine: &mut Engine, ctx: &JobContext) -> Outcome {
    match catch_unwind(AssertUnwindSafe(|| task(engine, ctx))) {
        Ok(Ok(reply)) => Outcome::Done(reply),
        Ok(Err(Error::Cancelled)) => Outcome::Cancelled,
        Ok(Err(e)) => Outcome::Failed(e),
        Err(payload) => Outcome::Panicked(
            payload
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| payload.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "a job panicked".into()),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, Instant};

    /// The first `n` jobs to finish, in order (fewer when no event comes for 10 s).
    fn finished(worker: &Worker, n: usize) -> Vec<(JobId, Outcome)> {
        let mut got = Vec::new();
        while got.len() < n {
            match worker.events.recv_timeout(Duration::from_secs(10)) {
                Ok(Event::Finished(id, outcome)) => got.push((id, outcome)),
                Ok(_) => {}
                Err(_) => break,
            }
        }
        got
    }

    /// A task that says on `started` that it runs, then ends once cancelled (or after 10 s).
    fn wait_for_cancel(started: Sender<()>) -> Task {
        Box::new(move |_, ctx| {
            let _ = started.send(());
            let start = Instant::now();
            while start.elapsed() < Duration::from_secs(10) {
                ctx.cancel.check()?;
                std::thread::sleep(Duration::from_millis(5));
            }
            Ok(Reply::Thumbnails)
        })
    }

    #[test]
    fn jobs_run_in_order_and_cancel_is_not_an_error() {
        let mut worker = Worker::spawn(Device::Cpu, || {});
        let first = worker
            .submit_task(Box::new(|_, _| Ok(Reply::Thumbnails)))
            .unwrap();
        let (started, running_started) = mpsc::channel();
        let running = worker
            .submit_task(wait_for_cancel(started.clone()))
            .unwrap();
        let queued = worker.submit_task(wait_for_cancel(started)).unwrap();
        assert!(worker.busy());
        // Cancelled once the second job runs: it stops at its next check, the third before it
        // starts.
        running_started
            .recv_timeout(Duration::from_secs(10))
            .expect("the second job starts");
        worker.cancel(queued);
        worker.cancel(running);
        let got = finished(&worker, 3);
        assert_eq!(got.len(), 3, "{got:?}");
        assert_eq!(got[0].0, first);
        assert!(matches!(got[0].1, Outcome::Done(Reply::Thumbnails)));
        assert_eq!(got[1].0, running);
        assert!(matches!(got[1].1, Outcome::Cancelled), "{:?}", got[1].1);
        assert_eq!(got[2].0, queued);
        assert!(matches!(got[2].1, Outcome::Cancelled), "{:?}", got[2].1);
        assert!(
            running_started.try_recv().is_err(),
            "the third job never ran"
        );
        assert!(!worker.busy());
    }

    #[test]
    fn a_panicking_job_ends_and_the_worker_goes_on() {
        let mut worker = Worker::spawn(Device::Cpu, || {});
        worker
            .submit_task(Box::new(|_, _| panic!("boom in a job")))
            .unwrap();
        worker
            .submit_task(Box::new(|_, _| Ok(Reply::Thumbnails)))
            .unwrap();
        let got = finished(&worker, 2);
        assert!(
            matches!(&got[0].1, Outcome::Panicked(m) if m.contains("boom in a job")),
            "{got:?}"
        );
        assert!(matches!(got[1].1, Outcome::Done(Reply::Thumbnails)));
        assert!(
            !worker.busy(),
            "a panicked job does not leave the worker busy"
        );
    }

    #[test]
    fn a_failed_job_carries_its_typed_error() {
        let mut worker = Worker::spawn(Device::Cpu, || {});
        worker
            .submit(Request::LoadModel {
                key: "no_such_model_anywhere".into(),
            })
            .unwrap();
        let got = finished(&worker, 1);
        match &got[0].1 {
            Outcome::Failed(e) => assert!(e.to_string().contains("no_such_model_anywhere"), "{e}"),
            other => panic!("expected a failure, got {other:?}"),
        }
    }
}
