//! Log entries of a replica group and the messages between clerks, groups
//! and the controller, with their CBOR codec.

use std::collections::BTreeMap;

use kv::{ClientId, Op, OpResult, Seq};
use serde::{Deserialize, Serialize};
use shardctrler::{Config, ShardId};

/// One shard's replicated state: its keys, and per client the last write's
/// sequence number applied to this shard. The table travels with the shard,
/// so a retried write that reaches the new owner is not applied twice.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ShardData {
    pub kv: BTreeMap<String, String>,
    pub sessions: BTreeMap<ClientId, Seq>,
}

/// A replica group's log entry.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum GroupCommand {
    /// A clerk's Get/Put/Append.
    Client {
        client_id: ClientId,
        seq: Seq,
        op: Op,
    },
    /// Move to this configuration (must be the current one's successor).
    Config(Config),
    /// The data of `shard` as its previous owner had it when handing it over
    /// in configuration `config_num`.
    InsertShard {
        config_num: u64,
        shard: ShardId,
        data: ShardData,
    },
    /// The new owner has `shard` of `config_num`: drop our copy.
    DeleteShard { config_num: u64, shard: ShardId },
    /// The previous owner dropped its copy of `shard`: nothing left to confirm.
    ConfirmDeleted { config_num: u64, shard: ShardId },
}

/// Bytes that do not decode.
#[derive(Debug, thiserror::Error)]
#[error("not a shardkv {what}: {reason}")]
pub struct DecodeError {
    pub what: &'static str,
    pub reason: String,
}

pub(crate) fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    let mut out = Vec::new();
    if let Err(error) = ciborium::into_writer(value, &mut out) {
        // Writing plain in-memory data to a Vec has no I/O to fail.
        panic!("CBOR encoding of an in-memory value failed: {error}");
    }
    out
}

pub(crate) fn decode<T: serde::de::DeserializeOwned>(
    data: &[u8],
    what: &'static str,
) -> Result<T, DecodeError> {
    ciborium::from_reader(data).map_err(|e| DecodeError {
        what,
        reason: e.to_string(),
    })
}

impl GroupCommand {
    pub fn encode(&self) -> Vec<u8> {
        encode(self)
    }
    pub fn decode(data: &[u8]) -> Result<Self, DecodeError> {
        decode(data, "log entry")
    }
}

/// A clerk's request; a retry carries the same `client_id` and `seq`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShardKvRequest {
    pub client_id: ClientId,
    pub seq: Seq,
    pub op: Op,
}

/// A server's answer to one [`ShardKvRequest`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ShardKvResponse {
    Ok(OpResult),
    /// This group does not serve the key's shard now (not its owner, or not
    /// received yet). Definite: refresh the configuration and retry.
    WrongGroup,
    /// Not the leader; not proposed. Definite.
    WrongLeader {
        leader_hint: Option<raft::NodeId>,
    },
    /// Proposed, then leadership was lost: may still commit. Indefinite.
    LeadershipLost,
    /// Gave up waiting for the commit. Indefinite.
    Timeout,
    /// Too many pending requests; not proposed. Definite.
    Busy,
    /// Malformed (over a size limit, or an operation shardkv does not offer). Definite.
    Invalid(String),
}

/// Asks the previous owner for `shard` as it handed it over at `config_num`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PullRequest {
    pub config_num: u64,
    pub shard: ShardId,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum PullReply {
    Data {
        config_num: u64,
        shard: ShardId,
        data: ShardData,
    },
    /// The responder has not reached `config_num` yet (or no longer has the
    /// shard, which means the asker already installed it). Ask again later.
    NotReady,
}

/// Tells the previous owner that `shard` of `config_num` is installed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeleteRequest {
    pub config_num: u64,
    pub shard: ShardId,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum DeleteReply {
    /// The responder's copy is gone (its deletion is in its applied log).
    Deleted { config_num: u64, shard: ShardId },
    /// Not yet (deletion proposed, or responder behind). Ask again later.
    NotYet,
}
