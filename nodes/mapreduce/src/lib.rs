//! MapReduce (Lab 1) with a coordinator that Raft can replicate.
//!
//! * [`app`]: the [`app::Application`] trait (map, reduce) and the apps:
//!   word count, inverted index, and the lab's test apps (`mtiming`,
//!   `rtiming`, `crash`, `nocrash`).
//! * [`coordinator`]: the coordinator as a pure, deterministic state machine
//!   (time is inside the commands), so Raft can replicate it.
//! * [`worker`]: the worker loop and the task execution (atomic files).
//! * [`local`]: an unreplicated in-process coordinator.
//! * [`sequential`]: the reference run; [`input`]: seeded input text.
//! * [`net`]: the coordinator service over our QUIC transport with mutual TLS.
//! * [`replicated`]: one replica of the Raft-replicated coordinator (a process).

pub mod app;
pub mod coordinator;
pub mod input;
pub mod local;
pub mod net;
pub mod replicated;
pub mod sequential;
pub mod worker;

pub use app::{AppContext, AppFault, Application, KeyValue};
pub use coordinator::{Command, Coordinator, JobSpec, Progress, Reply, Task, TaskKind};
pub use worker::{run_worker, CoordinatorLink, WorkerExit, WorkerOptions};
