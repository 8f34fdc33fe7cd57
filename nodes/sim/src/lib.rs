//! Deterministic simulator: N Raft nodes under virtual time with a seeded RNG.
//!
//! This crate is on the pure side of the I/O line too: no sockets, files,
//! threads or wall clock. Everything that happens in a run (message delays,
//! losses, election timeouts, crashes) is drawn from one seed, so
//! `SEED=n cargo test -p sim <test>` replays a failure exactly.
//!
//! * [`Sim`] runs the nodes: an event queue of clock ticks and message
//!   deliveries; each node's Ready is handled in the documented order
//!   (persist, send, apply, serve reads, advance) and the invariant checker
//!   runs after every Ready.
//! * [`StateMachine`] is the seam for services (KV, shard controller, shard
//!   KV): `apply`, `snapshot`, `restore`. [`LogMachine`] is the Raft tests'
//!   replicated log of opaque commands.
//! * [`network`] (delay, loss, duplication, long reordering, partitions),
//!   [`faults`] (nemesis maths, random schedules), [`storage`] (what
//!   survives a crash), [`invariants`] (the safety checker).
//! * [`lab`] holds the 6.824 tester's helpers (`check_one_leader`, `one`,
//!   ...) in virtual time; [`sweep`] runs a scenario over seeds.
//!
//! A service plugs in by implementing [`StateMachine`]:
//!
//! ```
//! use sim::{lab, Sim, SimConfig, SimError, StateMachine};
//! use std::time::Duration;
//!
//! #[derive(Default)]
//! struct Counter {
//!     total: u64,
//! }
//!
//! impl StateMachine for Counter {
//!     type Output = u64;
//!     fn apply(&mut self, _index: u64, command: &[u8]) -> u64 {
//!         self.total += command.len() as u64;
//!         self.total
//!     }
//!     fn snapshot(&self) -> Vec<u8> {
//!         self.total.to_le_bytes().to_vec()
//!     }
//!     fn restore(&mut self, snapshot: &[u8]) {
//!         self.total = snapshot.try_into().map(u64::from_le_bytes).unwrap_or(0);
//!     }
//! }
//!
//! fn scenario(seed: u64) -> Result<(), SimError> {
//!     let mut config = SimConfig::new(3, seed);
//!     config.snapshot_every_entries = Some(100);
//!     config.record_outputs = true;
//!     let mut sim = Sim::new(config, |_node| Counter::default())?;
//!     let leader = lab::check_one_leader(&mut sim)?;
//!     let index = sim.propose(leader, b"abc".to_vec()).expect("leader accepts");
//!     sim.run_until(Duration::from_secs(2), |s| s.applied_index(leader) >= index)?;
//!     let outputs = sim.take_outputs(leader);
//!     assert_eq!(outputs.last().map(|a| (a.index, a.output)), Some((index, 3)));
//!     sim.crash(leader);
//!     sim.restart(leader)?; // from its simulated disk
//!     Ok(())
//! }
//!
//! sim::sweep("counter_example", 3, scenario);
//! ```

pub mod cluster;
pub mod error;
pub mod faults;
pub mod history;
pub mod host;
pub mod invariants;
pub mod lab;
pub mod machine;
pub mod network;
pub mod queue;
pub mod rng;
pub mod storage;
pub mod sweep;
pub mod trace;

/// The Raft core the simulator drives, re-exported for services' tests.
pub use raft;

pub use cluster::{Applied, ClientError, NetStats, ServedRead, Sim, SimConfig};
pub use error::{SimError, Violation};
pub use faults::{Fault, NemesisConfig};
pub use machine::{LogMachine, StateMachine};
pub use network::{Links, NetConfig};
pub use rng::SimRng;
pub use sweep::{run_seed, seeds, sweep, Scenario};
