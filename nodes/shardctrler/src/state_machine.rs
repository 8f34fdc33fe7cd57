//! The controller's replicated state: every configuration so far and the
//! deduplication table, with apply, snapshot and restore.
//!
//! Exactly-once: a client numbers its requests 1, 2, 3 ... and has one
//! outstanding at a time. The table keeps each client's last applied
//! sequence number and reply; a retry of it gets the recorded reply without
//! being applied again, an older one is not applied at all. Queries change
//! nothing and are not recorded.

use std::collections::{BTreeMap, BTreeSet};

use raft::Index;
use serde::{Deserialize, Serialize};

use crate::config::{rebalance, Config, Gid, ShardId};

/// A client's identity, unique across the cluster's lifetime.
pub type ClientId = u64;
/// A client's per-request number; a retry reuses it.
pub type Seq = u64;

/// At most this many servers per group in a Join: a bigger request is
/// refused rather than replicated.
pub const MAX_SERVERS_PER_GROUP: usize = 64;
/// At most this many groups named in one Join or Leave.
pub const MAX_GROUPS_PER_REQUEST: usize = 256;

/// What a clerk asks the controller.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum CtrlOp {
    /// New groups (gid -> server names); rebalances. Gid 0 is reserved.
    Join { groups: BTreeMap<Gid, Vec<String>> },
    /// Groups leave; their shards go to the others; rebalances.
    Leave { gids: Vec<Gid> },
    /// Puts one shard on one (joined) group; no rebalance.
    Move { shard: ShardId, gid: Gid },
    /// Configuration `num`, or the latest for `None` or a number past it.
    Query { num: Option<u64> },
}

/// A log entry's payload.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct CtrlCommand {
    pub client_id: ClientId,
    pub seq: Seq,
    pub op: CtrlOp,
}

/// Result of a request.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum CtrlResult {
    /// A Join, Leave or Move took effect (it made a new configuration).
    Done,
    /// A query's answer.
    Config(Config),
    /// Refused as malformed (unknown gid, shard out of range, gid 0, over a
    /// limit); nothing changed. Definite.
    Invalid(String),
}

/// What applying one command did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ApplyOutcome {
    Applied(CtrlResult),
    /// A retry of the client's last request: the recorded reply.
    Duplicate(CtrlResult),
    /// Older than the client's last request: not applied.
    Stale {
        last_seq: Seq,
    },
}

impl ApplyOutcome {
    pub fn result(&self) -> Option<&CtrlResult> {
        match self {
            ApplyOutcome::Applied(r) | ApplyOutcome::Duplicate(r) => Some(r),
            ApplyOutcome::Stale { .. } => None,
        }
    }
}

/// Bytes that do not decode (a log entry or a snapshot).
#[derive(Debug, thiserror::Error)]
#[error("not a shard controller {what}: {reason}")]
pub struct DecodeError {
    pub what: &'static str,
    pub reason: String,
}

fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    let mut out = Vec::new();
    if let Err(error) = ciborium::into_writer(value, &mut out) {
        // Writing plain in-memory data to a Vec has no I/O to fail.
        panic!("CBOR encoding of an in-memory value failed: {error}");
    }
    out
}

fn decode<T: serde::de::DeserializeOwned>(
    data: &[u8],
    what: &'static str,
) -> Result<T, DecodeError> {
    ciborium::from_reader(data).map_err(|e| DecodeError {
        what,
        reason: e.to_string(),
    })
}

impl CtrlCommand {
    pub fn encode(&self) -> Vec<u8> {
        encode(self)
    }
    pub fn decode(data: &[u8]) -> Result<Self, DecodeError> {
        decode(data, "command")
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
struct Session {
    last_seq: Seq,
    reply: CtrlResult,
}

/// The controller's replicated state machine.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShardCtrler {
    configs: Vec<Config>,
    sessions: BTreeMap<ClientId, Session>,
    applied_index: Index,
}

impl Default for ShardCtrler {
    fn default() -> Self {
        Self {
            configs: vec![Config::default()],
            sessions: BTreeMap::new(),
            applied_index: 0,
        }
    }
}

impl ShardCtrler {
    pub fn new() -> Self {
        Self::default()
    }

    /// A controller whose deployment has `shard_count` shards (not the
    /// default [`crate::NSHARDS`]).
    pub fn with_shards(shard_count: usize) -> Self {
        Self {
            configs: vec![Config::empty(shard_count)],
            ..Self::default()
        }
    }

    pub fn latest(&self) -> &Config {
        // Never empty: starts with configuration 0 and only grows.
        &self.configs[self.configs.len() - 1]
    }

    /// Configuration `num`, or the latest for `None` or a number past it.
    pub fn query(&self, num: Option<u64>) -> &Config {
        match num {
            Some(n) if (n as usize) < self.configs.len() => &self.configs[n as usize],
            _ => self.latest(),
        }
    }

    pub fn applied_index(&self) -> Index {
        self.applied_index
    }

    /// Applies the log entry at `index` carrying `data`. An entry that does
    /// not decode is skipped the same way on every replica.
    pub fn apply_entry(
        &mut self,
        index: Index,
        data: &[u8],
    ) -> Option<(CtrlCommand, ApplyOutcome)> {
        self.applied_index = self.applied_index.max(index);
        let command = CtrlCommand::decode(data).ok()?;
        let outcome = self.apply(&command);
        Some((command, outcome))
    }

    /// Applies one command with exactly-once semantics.
    pub fn apply(&mut self, command: &CtrlCommand) -> ApplyOutcome {
        if let CtrlOp::Query { num } = &command.op {
            return ApplyOutcome::Applied(CtrlResult::Config(self.query(*num).clone()));
        }
        if let Some(session) = self.sessions.get(&command.client_id) {
            if command.seq == session.last_seq {
                return ApplyOutcome::Duplicate(session.reply.clone());
            }
            if command.seq < session.last_seq {
                return ApplyOutcome::Stale {
                    last_seq: session.last_seq,
                };
            }
        }
        let reply = match self.change(&command.op) {
            Ok(config) => {
                self.configs.push(config);
                CtrlResult::Done
            }
            Err(reason) => CtrlResult::Invalid(reason),
        };
        self.sessions.insert(
            command.client_id,
            Session {
                last_seq: command.seq,
                reply: reply.clone(),
            },
        );
        ApplyOutcome::Applied(reply)
    }

    /// The next configuration a Join, Leave or Move makes, or why not.
    fn change(&self, op: &CtrlOp) -> Result<Config, String> {
        let mut next = self.latest().clone();
        next.num += 1;
        match op {
            CtrlOp::Join { groups } => {
                if groups.len() > MAX_GROUPS_PER_REQUEST {
                    return Err(format!(
                        "join of {} groups, limit {MAX_GROUPS_PER_REQUEST}",
                        groups.len()
                    ));
                }
                for (gid, servers) in groups {
                    if *gid == 0 {
                        return Err("gid 0 is reserved for unassigned shards".into());
                    }
                    if servers.len() > MAX_SERVERS_PER_GROUP {
                        return Err(format!(
                            "group {gid} has {} servers, limit {MAX_SERVERS_PER_GROUP}",
                            servers.len()
                        ));
                    }
                    next.groups.insert(*gid, servers.clone());
                }
            }
            CtrlOp::Leave { gids } => {
                if gids.len() > MAX_GROUPS_PER_REQUEST {
                    return Err(format!(
                        "leave of {} groups, limit {MAX_GROUPS_PER_REQUEST}",
                        gids.len()
                    ));
                }
                for gid in gids {
                    next.groups.remove(gid);
                }
            }
            CtrlOp::Move { shard, gid } => {
                let count = next.shards.len();
                if *shard >= count {
                    return Err(format!("shard {shard} out of range 0..{count}"));
                }
                if !next.groups.contains_key(gid) {
                    return Err(format!("move to gid {gid}, which has not joined"));
                }
                next.shards[*shard] = *gid;
                return Ok(next);
            }
            CtrlOp::Query { .. } => return Err("a query makes no configuration".into()),
        }
        let gids: BTreeSet<Gid> = next.groups.keys().copied().collect();
        next.shards = rebalance(&next.shards, &gids);
        Ok(next)
    }

    /// Everything applied so far, as bytes every replica produces alike.
    pub fn snapshot(&self) -> Vec<u8> {
        encode(self)
    }

    /// Replaces the state with a snapshot's.
    pub fn restore(&mut self, data: &[u8]) -> Result<(), DecodeError> {
        let restored: ShardCtrler = decode(data, "snapshot")?;
        if restored.configs.is_empty() {
            return Err(DecodeError {
                what: "snapshot",
                reason: "no configurations".into(),
            });
        }
        *self = restored;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::NSHARDS;

    fn cmd(client_id: ClientId, seq: Seq, op: CtrlOp) -> CtrlCommand {
        CtrlCommand { client_id, seq, op }
    }

    fn join(gids: &[Gid]) -> CtrlOp {
        CtrlOp::Join {
            groups: gids.iter().map(|g| (*g, vec![format!("s{g}")])).collect(),
        }
    }

    #[test]
    fn joins_leaves_and_moves_make_numbered_configs() {
        let mut ctrler = ShardCtrler::new();
        assert_eq!(ctrler.latest().num, 0);
        ctrler.apply(&cmd(1, 1, join(&[1])));
        assert_eq!(ctrler.latest().shards, vec![1; NSHARDS]);
        ctrler.apply(&cmd(1, 2, join(&[2])));
        assert_eq!(
            ctrler
                .latest()
                .counts()
                .values()
                .copied()
                .collect::<Vec<_>>(),
            vec![5, 5]
        );
        ctrler.apply(&cmd(1, 3, CtrlOp::Move { shard: 0, gid: 2 }));
        assert_eq!(ctrler.latest().num, 3);
        assert_eq!(ctrler.latest().owner(0), 2);
        ctrler.apply(&cmd(1, 4, CtrlOp::Leave { gids: vec![1] }));
        assert_eq!(ctrler.latest().shards, vec![2; NSHARDS]);
        assert_eq!(ctrler.query(Some(1)).shards, vec![1; NSHARDS]);
        assert_eq!(ctrler.query(Some(99)).num, 4);
        assert_eq!(ctrler.query(None).num, 4);
    }

    #[test]
    fn retries_apply_once() {
        let mut ctrler = ShardCtrler::new();
        let first = ctrler.apply(&cmd(9, 1, join(&[1])));
        assert_eq!(first, ApplyOutcome::Applied(CtrlResult::Done));
        let retry = ctrler.apply(&cmd(9, 1, join(&[1])));
        assert_eq!(retry, ApplyOutcome::Duplicate(CtrlResult::Done));
        assert_eq!(ctrler.latest().num, 1);
        ctrler.apply(&cmd(9, 2, join(&[2])));
        assert_eq!(
            ctrler.apply(&cmd(9, 1, join(&[1]))),
            ApplyOutcome::Stale { last_seq: 2 }
        );
        assert_eq!(ctrler.latest().num, 2);
    }

    #[test]
    fn bad_requests_are_refused_and_change_nothing() {
        let mut ctrler = ShardCtrler::new();
        let out = ctrler.apply(&cmd(1, 1, CtrlOp::Move { shard: 0, gid: 5 }));
        assert!(matches!(out, ApplyOutcome::Applied(CtrlResult::Invalid(_))));
        let out = ctrler.apply(&cmd(
            1,
            2,
            CtrlOp::Move {
                shard: NSHARDS,
                gid: 5,
            },
        ));
        assert!(matches!(out, ApplyOutcome::Applied(CtrlResult::Invalid(_))));
        let out = ctrler.apply(&cmd(1, 3, join(&[0])));
        assert!(matches!(out, ApplyOutcome::Applied(CtrlResult::Invalid(_))));
        assert_eq!(ctrler.latest().num, 0);
    }

    #[test]
    fn snapshot_restores_configs_and_sessions() {
        let mut a = ShardCtrler::new();
        a.apply_entry(1, &cmd(1, 1, join(&[1, 2])).encode());
        a.apply_entry(2, &cmd(1, 2, CtrlOp::Leave { gids: vec![2] }).encode());
        let mut b = ShardCtrler::new();
        b.restore(&a.snapshot()).unwrap();
        assert_eq!(a, b);
        assert_eq!(
            b.apply(&cmd(1, 2, CtrlOp::Leave { gids: vec![2] })),
            ApplyOutcome::Duplicate(CtrlResult::Done)
        );
        assert!(b.restore(b"\xff garbage").is_err());
        assert_eq!(b.applied_index(), 2);
    }

    #[test]
    fn garbage_entries_are_skipped_alike() {
        let mut ctrler = ShardCtrler::new();
        assert!(ctrler.apply_entry(1, b"\x00\x01").is_none());
        assert_eq!(ctrler.applied_index(), 1);
        assert_eq!(ctrler.latest().num, 0);
    }
}
