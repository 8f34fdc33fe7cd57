//! An in-process coordinator: the state machine behind a mutex with a
//! monotonic clock, for tests and for the single-coordinator server.

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use crate::coordinator::{Command, Coordinator, JobSpec, Progress, Reply, Task};
use crate::worker::{CoordinatorLink, WorkerError};

/// A shared, unreplicated coordinator. Clones share the state.
#[derive(Debug, Clone)]
pub struct LocalCoordinator {
    state: Arc<Mutex<Coordinator>>,
    epoch: Instant,
}

impl LocalCoordinator {
    pub fn start(spec: JobSpec) -> Result<Self, crate::coordinator::JobError> {
        let mut coordinator = Coordinator::new();
        if let Reply::Refused(error) = coordinator.apply(&Command::Start(spec)) {
            return Err(error);
        }
        Ok(LocalCoordinator {
            state: Arc::new(Mutex::new(coordinator)),
            epoch: Instant::now(),
        })
    }

    fn lock(&self) -> MutexGuard<'_, Coordinator> {
        // The state is a plain value: a panicked holder leaves it consistent.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn now_ms(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// Stamps `command`'s time with this coordinator's clock and applies it.
    pub fn apply(&self, mut command: Command) -> Reply {
        let now = self.now_ms();
        match &mut command {
            Command::RequestTask { now_ms, .. } | Command::Complete { now_ms, .. } => {
                *now_ms = now;
            }
            Command::Start(_) => {}
        }
        self.lock().apply(&command)
    }

    pub fn progress(&self) -> Progress {
        self.lock().progress()
    }
}

impl CoordinatorLink for LocalCoordinator {
    fn request_task(&mut self, worker: u64) -> Result<Reply, WorkerError> {
        Ok(self.apply(Command::RequestTask { worker, now_ms: 0 }))
    }
    fn complete(&mut self, task: &Task) -> Result<(), WorkerError> {
        self.apply(Command::Complete {
            kind: task.kind,
            index: task.index,
            attempt: task.attempt,
            now_ms: 0,
        });
        Ok(())
    }
}
