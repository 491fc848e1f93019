//! The only place that spawns threads: one named worker thread owns the device and the loaded
//! networks; jobs come in on a bounded channel, results and progress go out on another and
//! call a waker (the GUI passes `request_repaint`).

use std::collections::HashMap;
use std::sync::mpsc::{self, Receiver, Sender, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};

use candle_core::Device;

use crate::cancel::CancelToken;
use crate::zoo::Model;
use crate::{Error, Result};

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
}

/// What a running job can do: send messages (waking the receiver) and check for cancel.
pub struct JobContext<M> {
    events: Sender<M>,
    waker: Arc<dyn Fn() + Send + Sync>,
    /// Set when the user asked this job to stop.
    pub cancel: CancelToken,
}

impl<M> JobContext<M> {
    /// Sends a message to the owner of the worker and wakes it.
    pub fn send(&self, message: M) {
        let _ = self.events.send(message);
        (self.waker)();
    }
}

type Task<M> = Box<dyn FnOnce(&mut Engine, &JobContext<M>) + Send>;

/// A worker thread running one job at a time, in order.
pub struct Worker<M> {
    tasks: SyncSender<(Task<M>, CancelToken)>,
    events: Receiver<M>,
    current: Arc<Mutex<Option<CancelToken>>>,
}

/// How many jobs may wait behind the running one.
const QUEUE: usize = 16;

impl<M: Send + 'static> Worker<M> {
    /// Starts the worker thread with an engine on `device`; `waker` runs after every message.
    pub fn spawn(device: Device, waker: impl Fn() + Send + Sync + 'static) -> Self {
        let (task_tx, task_rx) = mpsc::sync_channel::<(Task<M>, CancelToken)>(QUEUE);
        let (event_tx, event_rx) = mpsc::channel();
        let waker: Arc<dyn Fn() + Send + Sync> = Arc::new(waker);
        let current: Arc<Mutex<Option<CancelToken>>> = Arc::default();
        let running = current.clone();
        std::thread::Builder::new()
            .name("convlens-worker".into())
            .spawn(move || {
                let mut engine = Engine::new(device);
                while let Ok((task, cancel)) = task_rx.recv() {
                    *running.lock().expect("not poisoned") = Some(cancel.clone());
                    let ctx = JobContext {
                        events: event_tx.clone(),
                        waker: waker.clone(),
                        cancel,
                    };
                    task(&mut engine, &ctx);
                    *running.lock().expect("not poisoned") = None;
                    waker();
                }
            })
            .expect("spawn the worker thread");
        Worker {
            tasks: task_tx,
            events: event_rx,
            current,
        }
    }

    /// Queues a job. A full queue is an error (the user is clicking faster than the worker).
    pub fn submit(
        &self,
        job: impl FnOnce(&mut Engine, &JobContext<M>) + Send + 'static,
    ) -> Result<()> {
        match self.tasks.try_send((Box::new(job), CancelToken::new())) {
            Ok(()) => Ok(()),
            Err(TrySendError::Full(_)) => Err(Error::Model(
                "too many jobs are waiting; wait for the running one or cancel it".into(),
            )),
            Err(TrySendError::Disconnected(_)) => {
                Err(Error::Model("the worker thread has stopped".into()))
            }
        }
    }

    /// Asks the running job to stop at its next check.
    pub fn cancel_current(&self) {
        if let Some(c) = self.current.lock().expect("not poisoned").as_ref() {
            c.cancel();
        }
    }

    /// Whether a job is running.
    pub fn busy(&self) -> bool {
        self.current.lock().expect("not poisoned").is_some()
    }

    /// The messages sent since the last call.
    pub fn drain(&self) -> Vec<M> {
        self.events.try_iter().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, Instant};

    #[test]
    fn jobs_run_in_order_and_can_be_cancelled() {
        let worker: Worker<String> = Worker::spawn(Device::Cpu, || {});
        worker.submit(|_, ctx| ctx.send("first".into())).unwrap();
        worker
            .submit(|_, ctx| {
                let start = Instant::now();
                while !ctx.cancel.is_cancelled() && start.elapsed() < Duration::from_secs(10) {
                    std::thread::sleep(Duration::from_millis(5));
                }
                ctx.send(
                    if ctx.cancel.is_cancelled() {
                        "cancelled"
                    } else {
                        "timeout"
                    }
                    .into(),
                );
            })
            .unwrap();
        let start = Instant::now();
        while !worker.busy() && start.elapsed() < Duration::from_secs(5) {
            std::thread::sleep(Duration::from_millis(5));
        }
        std::thread::sleep(Duration::from_millis(50));
        worker.cancel_current();
        let mut got = Vec::new();
        while got.len() < 2 && start.elapsed() < Duration::from_secs(10) {
            got.extend(worker.drain());
            std::thread::sleep(Duration::from_millis(5));
        }
        assert_eq!(got, ["first", "cancelled"]);
    }
}
