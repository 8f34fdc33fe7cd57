//! What travels between clients and a node daemon: one request frame and one
//! response frame per bidirectional stream (see the transport crate). Raft
//! messages between nodes travel separately, as `raft::Message` on one-way
//! peer streams.

use serde::{Deserialize, Serialize};

/// A request to a node.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum NodeRequest {
    /// A key/value operation (the node must run the kv service).
    Kv(kv::message::KvRequest),
    /// The node's Raft status.
    Status,
    /// A shard controller request (the node must run the shardctrler service).
    Ctrl(shardctrler::CtrlRequest),
    /// A sharded KV operation (the node must run the shardkv service).
    ShardKv(shardkv::ShardKvRequest),
    /// Another replica group asks for a shard this group handed over.
    ShardPull(shardkv::PullRequest),
    /// Another replica group has installed a shard this group handed over.
    ShardDelete(shardkv::DeleteRequest),
}

/// A node's answer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum NodeResponse {
    Kv(kv::message::KvResponse),
    Status(StatusReport),
    /// The node does not serve this kind of request (definite: nothing happened).
    Unsupported(String),
    Ctrl(shardctrler::CtrlResponse),
    ShardKv(shardkv::ShardKvResponse),
    ShardPull(shardkv::PullReply),
    ShardDelete(shardkv::DeleteReply),
}

/// What `node status` prints.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatusReport {
    pub id: u64,
    pub name: String,
    pub service: String,
    /// follower, pre-candidate, candidate or leader.
    pub role: String,
    pub term: u64,
    pub leader: Option<u64>,
    pub commit_index: u64,
    pub applied_index: u64,
    pub first_index: u64,
    pub last_index: u64,
    pub snapshot_index: u64,
    /// Bytes of the write-ahead log on disk.
    pub log_bytes: u64,
    pub unsafe_stale_reads: bool,
    /// Peer messages dropped by the Raft core as malformed or stale.
    pub dropped_messages: u64,
}
