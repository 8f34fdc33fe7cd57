//! The node daemon and its clients.
//!
//! This crate is on the I/O side of the line: it runs the Raft core (pure,
//! `nodes/raft`) on tokio with durable storage (`nodes/storage`) and the QUIC
//! transport (`nodes/transport`), and hosts a service (`nodes/kv`). The
//! `node` binary runs a daemon (`node run`), makes certificates (`node
//! certs`) and asks for status (`node status`); the `kv` binary is a client.

pub mod client;
pub mod cluster;
pub mod config;
pub mod runtime;
pub mod service;
pub mod shard_client;
pub mod shard_service;
pub mod wire;

pub use cluster::ClusterFile;
pub use config::NodeConfig;
