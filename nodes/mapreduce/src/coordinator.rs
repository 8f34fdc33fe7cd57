//! The coordinator as a deterministic state machine: commands in, replies out.
//!
//! Pure side of the I/O line: no clock, no files. Time enters as `now_ms`
//! inside the commands (stamped by whoever proposes them), so the same log
//! gives the same assignments on every replica; that is what lets Raft
//! replicate the coordinator. A task handed out at `t` may be handed out
//! again to someone else at `t + task_timeout_ms` if it has not been
//! reported done (the lab's re-issue after ~10 s).

use serde::{Deserialize, Serialize};

/// The job: input files (one map task each) and the number of reduce tasks.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobSpec {
    pub files: Vec<String>,
    pub n_reduce: u32,
    /// How long a task may run before it is handed to another worker.
    pub task_timeout_ms: u64,
}

/// Limits on a job (a limit on everything that grows).
pub const MAX_FILES: usize = 100_000;
pub const MAX_REDUCE: u32 = 10_000;

impl JobSpec {
    pub fn validate(&self) -> Result<(), JobError> {
        if self.files.is_empty() || self.files.len() > MAX_FILES {
            return Err(JobError::Files {
                count: self.files.len(),
            });
        }
        if self.n_reduce == 0 || self.n_reduce > MAX_REDUCE {
            return Err(JobError::Reduce {
                n_reduce: self.n_reduce,
            });
        }
        if self.task_timeout_ms == 0 {
            return Err(JobError::Timeout);
        }
        Ok(())
    }
}

/// A job the coordinator refuses.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
pub enum JobError {
    #[error("a job needs 1..={MAX_FILES} input files, got {count}")]
    Files { count: usize },
    #[error("n_reduce must be in 1..={MAX_REDUCE}, got {n_reduce}")]
    Reduce { n_reduce: u32 },
    #[error("task_timeout_ms must be positive")]
    Timeout,
    #[error("another job is already running")]
    Busy,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum TaskKind {
    Map,
    Reduce,
}

/// One task handed to a worker.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Task {
    pub kind: TaskKind,
    /// Map: the input file's position; reduce: the bucket.
    pub index: u32,
    /// Map: the input file.
    pub file: Option<String>,
    pub n_map: u32,
    pub n_reduce: u32,
    /// Unique per hand-out, so a report can be traced to its assignment.
    pub attempt: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Command {
    /// Starts the job; repeating the same spec is a no-op (a retried start).
    Start(JobSpec),
    /// A worker asks for work.
    RequestTask { worker: u64, now_ms: u64 },
    /// A worker finished a task (its output is renamed into place).
    Complete {
        kind: TaskKind,
        index: u32,
        attempt: u64,
        now_ms: u64,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Reply {
    Started,
    Refused(JobError),
    Task(Task),
    /// Nothing to do now (tasks are running elsewhere); ask again later.
    Wait,
    /// The job is done: the worker exits.
    Exit,
    /// No job yet.
    NoJob,
    Ack,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
enum TaskState {
    Idle,
    Running { since_ms: u64, attempt: u64 },
    Done,
}

/// Counts for progress displays.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Progress {
    pub maps_done: u32,
    pub maps_total: u32,
    pub reduces_done: u32,
    pub reduces_total: u32,
    /// Tasks handed out again after a timeout.
    pub reissued: u64,
}

impl Progress {
    pub fn done(&self) -> bool {
        self.reduces_total > 0 && self.reduces_done == self.reduces_total
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Coordinator {
    job: Option<JobSpec>,
    maps: Vec<TaskState>,
    reduces: Vec<TaskState>,
    next_attempt: u64,
    /// The latest time seen: commands stamped by different leaders' clocks
    /// never move it backwards.
    now_ms: u64,
    reissued: u64,
}

impl Coordinator {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn job(&self) -> Option<&JobSpec> {
        self.job.as_ref()
    }

    pub fn apply(&mut self, command: &Command) -> Reply {
        match command {
            Command::Start(spec) => self.start(spec),
            Command::RequestTask { now_ms, .. } => {
                self.now_ms = self.now_ms.max(*now_ms);
                self.assign()
            }
            Command::Complete {
                kind,
                index,
                now_ms,
                ..
            } => {
                self.now_ms = self.now_ms.max(*now_ms);
                let tasks = match kind {
                    TaskKind::Map => &mut self.maps,
                    TaskKind::Reduce => &mut self.reduces,
                };
                // Any attempt's output is as good as another's (deterministic
                // apps, atomic renames), so a late report still counts.
                if let Some(state) = tasks.get_mut(*index as usize) {
                    *state = TaskState::Done;
                }
                Reply::Ack
            }
        }
    }

    fn start(&mut self, spec: &JobSpec) -> Reply {
        if let Some(job) = &self.job {
            return if job == spec {
                Reply::Started
            } else {
                Reply::Refused(JobError::Busy)
            };
        }
        if let Err(error) = spec.validate() {
            return Reply::Refused(error);
        }
        self.maps = vec![TaskState::Idle; spec.files.len()];
        self.reduces = vec![TaskState::Idle; spec.n_reduce as usize];
        self.job = Some(spec.clone());
        Reply::Started
    }

    fn assign(&mut self) -> Reply {
        let Some(job) = &self.job else {
            return Reply::NoJob;
        };
        let (kind, tasks) = if self.maps.iter().all(|s| *s == TaskState::Done) {
            if self.reduces.iter().all(|s| *s == TaskState::Done) {
                return Reply::Exit;
            }
            (TaskKind::Reduce, &mut self.reduces)
        } else {
            (TaskKind::Map, &mut self.maps)
        };
        let now_ms = self.now_ms;
        let timeout_ms = job.task_timeout_ms;
        let available = |state: &TaskState| match state {
            TaskState::Idle => true,
            TaskState::Running { since_ms, .. } => now_ms >= since_ms.saturating_add(timeout_ms),
            TaskState::Done => false,
        };
        let Some(position) = tasks.iter().position(available) else {
            return Reply::Wait;
        };
        if matches!(tasks[position], TaskState::Running { .. }) {
            self.reissued += 1;
        }
        self.next_attempt += 1;
        tasks[position] = TaskState::Running {
            since_ms: now_ms,
            attempt: self.next_attempt,
        };
        Reply::Task(Task {
            kind,
            index: position as u32,
            file: match kind {
                TaskKind::Map => job.files.get(position).cloned(),
                TaskKind::Reduce => None,
            },
            n_map: job.files.len() as u32,
            n_reduce: job.n_reduce,
            attempt: self.next_attempt,
        })
    }

    pub fn progress(&self) -> Progress {
        let done =
            |tasks: &[TaskState]| tasks.iter().filter(|s| **s == TaskState::Done).count() as u32;
        Progress {
            maps_done: done(&self.maps),
            maps_total: self.maps.len() as u32,
            reduces_done: done(&self.reduces),
            reduces_total: self.reduces.len() as u32,
            reissued: self.reissued,
        }
    }

    pub fn is_done(&self) -> bool {
        self.progress().done()
    }

    /// Which attempt currently holds a task (tests and diagnostics).
    pub fn running_attempt(&self, kind: TaskKind, index: u32) -> Option<u64> {
        let tasks = match kind {
            TaskKind::Map => &self.maps,
            TaskKind::Reduce => &self.reduces,
        };
        match tasks.get(index as usize) {
            Some(TaskState::Running { attempt, .. }) => Some(*attempt),
            _ => None,
        }
    }

    pub fn encode_snapshot(&self) -> Vec<u8> {
        let mut bytes = Vec::new();
        // Serialising plain vectors and integers into a Vec cannot fail.
        let _ = ciborium::into_writer(self, &mut bytes);
        bytes
    }

    pub fn decode_snapshot(bytes: &[u8]) -> Result<Self, CodecError> {
        ciborium::from_reader(bytes).map_err(|e| CodecError(e.to_string()))
    }
}

/// Undecodable command or snapshot bytes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("cannot decode: {0}")]
pub struct CodecError(pub String);

impl Command {
    pub fn encode(&self) -> Vec<u8> {
        let mut bytes = Vec::new();
        let _ = ciborium::into_writer(self, &mut bytes);
        bytes
    }

    pub fn decode(bytes: &[u8]) -> Result<Self, CodecError> {
        ciborium::from_reader(bytes).map_err(|e| CodecError(e.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(files: usize, n_reduce: u32) -> JobSpec {
        JobSpec {
            files: (0..files).map(|i| format!("in-{i}")).collect(),
            n_reduce,
            task_timeout_ms: 100,
        }
    }

    fn request(c: &mut Coordinator, now_ms: u64) -> Reply {
        c.apply(&Command::RequestTask { worker: 1, now_ms })
    }

    fn task(reply: Reply) -> Task {
        match reply {
            Reply::Task(task) => task,
            other => panic!("expected a task, got {other:?}"),
        }
    }

    fn complete(c: &mut Coordinator, t: &Task, now_ms: u64) {
        let reply = c.apply(&Command::Complete {
            kind: t.kind,
            index: t.index,
            attempt: t.attempt,
            now_ms,
        });
        assert_eq!(reply, Reply::Ack);
    }

    #[test]
    fn no_job_until_started_and_bad_specs_refused() {
        let mut c = Coordinator::new();
        assert_eq!(request(&mut c, 0), Reply::NoJob);
        assert!(matches!(
            c.apply(&Command::Start(spec(0, 1))),
            Reply::Refused(JobError::Files { .. })
        ));
        assert!(matches!(
            c.apply(&Command::Start(spec(1, 0))),
            Reply::Refused(JobError::Reduce { .. })
        ));
        assert_eq!(c.apply(&Command::Start(spec(1, 1))), Reply::Started);
        assert_eq!(
            c.apply(&Command::Start(spec(1, 1))),
            Reply::Started,
            "retried start"
        );
        assert_eq!(
            c.apply(&Command::Start(spec(2, 1))),
            Reply::Refused(JobError::Busy)
        );
    }

    #[test]
    fn reduces_only_after_all_maps_then_exit() {
        let mut c = Coordinator::new();
        c.apply(&Command::Start(spec(2, 2)));
        let m0 = task(request(&mut c, 0));
        let m1 = task(request(&mut c, 0));
        assert_eq!(
            (m0.kind, m0.index, m0.file.as_deref()),
            (TaskKind::Map, 0, Some("in-0"))
        );
        assert_eq!((m1.kind, m1.index), (TaskKind::Map, 1));
        assert_eq!(
            request(&mut c, 1),
            Reply::Wait,
            "maps running, no reduce yet"
        );
        complete(&mut c, &m0, 2);
        assert_eq!(request(&mut c, 3), Reply::Wait);
        complete(&mut c, &m1, 4);
        let r0 = task(request(&mut c, 5));
        let r1 = task(request(&mut c, 5));
        assert_eq!((r0.kind, r0.index, r0.n_map), (TaskKind::Reduce, 0, 2));
        assert_eq!((r1.kind, r1.index), (TaskKind::Reduce, 1));
        complete(&mut c, &r0, 6);
        assert!(!c.is_done());
        assert_eq!(request(&mut c, 7), Reply::Wait);
        complete(&mut c, &r1, 8);
        assert!(c.is_done());
        assert_eq!(request(&mut c, 9), Reply::Exit);
    }

    #[test]
    fn a_task_is_reissued_only_after_the_timeout() {
        let mut c = Coordinator::new();
        c.apply(&Command::Start(spec(1, 1)));
        let first = task(request(&mut c, 1000));
        assert_eq!(request(&mut c, 1099), Reply::Wait);
        let second = task(request(&mut c, 1100));
        assert_eq!(second.index, first.index);
        assert!(second.attempt > first.attempt);
        assert_eq!(c.progress().reissued, 1);
        // The slow first attempt reports late: still counts, once.
        complete(&mut c, &first, 1200);
        assert_eq!(c.progress().maps_done, 1);
        complete(&mut c, &second, 1201);
        assert_eq!(c.progress().maps_done, 1);
    }

    #[test]
    fn time_never_moves_backwards() {
        let mut c = Coordinator::new();
        c.apply(&Command::Start(spec(1, 1)));
        let _ = task(request(&mut c, 5000));
        // A new leader with a clock behind the old one must not re-issue early
        // nor treat the running task as older than it is.
        assert_eq!(request(&mut c, 10), Reply::Wait);
        assert_eq!(request(&mut c, 5099), Reply::Wait);
        assert!(matches!(request(&mut c, 5100), Reply::Task(_)));
    }

    #[test]
    fn snapshot_and_commands_round_trip() {
        let mut c = Coordinator::new();
        c.apply(&Command::Start(spec(3, 2)));
        let _ = request(&mut c, 1);
        let restored = Coordinator::decode_snapshot(&c.encode_snapshot()).unwrap();
        assert_eq!(restored, c);
        let command = Command::Complete {
            kind: TaskKind::Reduce,
            index: 3,
            attempt: 9,
            now_ms: 77,
        };
        assert_eq!(Command::decode(&command.encode()).unwrap(), command);
        assert!(Command::decode(b"\xff\x00garbage").is_err());
    }
}
