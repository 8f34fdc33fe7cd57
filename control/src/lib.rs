//! Jepsen-style control process: clusters, SSH, node lifecycle, nemesis, histories, results.
//!
//! This crate is the I/O side of testing: it provisions machines ([`cluster`]), reaches them
//! only over SSH ([`ssh`]), runs daemons by pid file ([`daemon`], [`db`]), injects faults
//! ([`nemesis`]), and records what clients saw ([`history`], [`results`]). The pure parts —
//! partition maths, the fault schedule, subnet choice, history formats — are plain functions
//! with unit tests; everything that touches the system is behind the `Remote`, `Db`, `Client`
//! and `Nemesis` traits.
//!
//! Concepts follow Jepsen: a test is nodes + db + client + generator + nemesis + checker.

pub mod analyze;
pub mod bench;
pub mod client;
pub mod cluster;
pub mod cmd;
pub mod daemon;
pub mod db;
pub mod etcd;
pub mod history;
pub mod mr;
pub mod nemesis;
pub mod net;
pub mod netns;
pub mod ourkv;
pub mod report;
pub mod results;
pub mod runner;
pub mod shard;
pub mod ssh;
pub mod workload;
