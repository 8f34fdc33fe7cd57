//! A replica group's replicated state: the current and previous
//! configuration and the shards it holds, each with its status, keys and
//! deduplication table. Deterministic (`BTreeMap`s only): replicas that
//! applied the same log hold byte-identical snapshots.

use std::collections::BTreeMap;

use kv::{Op, OpResult};
use raft::Index;
use serde::{Deserialize, Serialize};
use shardctrler::{Config, Gid, ShardId};

use crate::command::{decode, encode, DecodeError, GroupCommand, ShardData};

/// Where a shard the group holds stands in the current configuration.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ShardStatus {
    /// Ours, settled: served.
    Serving,
    /// Ours in the current configuration, data not received yet: refused.
    Receiving,
    /// Ours and received (served), but the previous owner has not yet
    /// confirmed it deleted its copy.
    Confirming,
    /// Given away in the current configuration: frozen, refused, kept until
    /// the new owner has it (then deleted).
    HandingOver,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
struct Shard {
    status: ShardStatus,
    data: ShardData,
}

/// What applying one entry did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ApplyResult {
    /// A client operation took effect (or was a retry of one that had).
    Client(OpResult),
    /// A client operation on a shard this group does not serve now.
    WrongGroup,
    /// A client operation shardkv does not offer (cas).
    Unsupported,
    /// A configuration, shard insertion, deletion or confirmation took
    /// effect (`true`) or was stale or premature and ignored (`false`).
    Internal(bool),
}

const SNAPSHOT_FORMAT_VERSION: u32 = 1;

#[derive(Serialize, Deserialize)]
struct SnapshotData {
    version: u32,
    gid: Gid,
    config: Config,
    previous: Config,
    shards: BTreeMap<ShardId, Shard>,
    applied_index: Index,
}

/// The group's state machine.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ShardKvState {
    gid: Gid,
    config: Config,
    previous: Config,
    shards: BTreeMap<ShardId, Shard>,
    applied_index: Index,
    /// TEST-ONLY mutation: keep serving shards handed over. Not replicated
    /// state; every replica of a mutated group sets it.
    keep_serving_handed_over_shards: bool,
}

impl ShardKvState {
    pub fn new(gid: Gid) -> Self {
        Self {
            gid,
            config: Config::default(),
            previous: Config::default(),
            shards: BTreeMap::new(),
            applied_index: 0,
            keep_serving_handed_over_shards: false,
        }
    }

    /// DANGER, tests only: serve shards after handing them over, so the
    /// harness can show the linearizability check catches it.
    pub fn set_keep_serving_handed_over_shards(&mut self, on: bool) {
        self.keep_serving_handed_over_shards = on;
    }

    pub fn gid(&self) -> Gid {
        self.gid
    }
    pub fn config(&self) -> &Config {
        &self.config
    }
    pub fn previous_config(&self) -> &Config {
        &self.previous
    }
    pub fn applied_index(&self) -> Index {
        self.applied_index
    }

    pub fn status(&self, shard: ShardId) -> Option<ShardStatus> {
        self.shards.get(&shard).map(|s| s.status)
    }

    /// Shards held in `status`, ascending.
    pub fn shards_in(&self, status: ShardStatus) -> Vec<ShardId> {
        self.shards
            .iter()
            .filter(|(_, s)| s.status == status)
            .map(|(id, _)| *id)
            .collect()
    }

    /// Shards held in any status (what the group stores).
    pub fn held_shards(&self) -> Vec<ShardId> {
        self.shards.keys().copied().collect()
    }

    /// True when every shard is settled, so the next configuration may be applied.
    pub fn settled(&self) -> bool {
        self.shards
            .values()
            .all(|s| s.status == ShardStatus::Serving)
    }

    /// Whether requests for `shard` are served now.
    pub fn can_serve(&self, shard: ShardId) -> bool {
        match self.shards.get(&shard).map(|s| s.status) {
            Some(ShardStatus::Serving | ShardStatus::Confirming) => {
                self.config.owner(shard) == self.gid
            }
            Some(ShardStatus::HandingOver) => self.keep_serving_handed_over_shards,
            _ => false,
        }
    }

    /// The data of `shard` if it was handed over in configuration
    /// `config_num` and is still kept (what a [`crate::PullRequest`] gets).
    pub fn handed_over(&self, config_num: u64, shard: ShardId) -> Option<&ShardData> {
        let held = self.shards.get(&shard)?;
        (self.config.num == config_num && held.status == ShardStatus::HandingOver)
            .then_some(&held.data)
    }

    /// Value of `key` if its shard is held (tests and local inspection).
    pub fn read(&self, key: &str) -> Option<&str> {
        let shard = self.shards.get(&self.config.shard_of(key))?;
        shard.data.kv.get(key).map(String::as_str)
    }

    /// Applies the entry at `index` (any bytes: undecodable entries are
    /// skipped alike everywhere and return `None`).
    pub fn apply_entry(
        &mut self,
        index: Index,
        data: &[u8],
    ) -> Option<(GroupCommand, ApplyResult)> {
        self.applied_index = self.applied_index.max(index);
        let command = GroupCommand::decode(data).ok()?;
        let result = self.apply(&command);
        Some((command, result))
    }

    pub fn apply(&mut self, command: &GroupCommand) -> ApplyResult {
        match command {
            GroupCommand::Client { client_id, seq, op } => self.apply_client(*client_id, *seq, op),
            GroupCommand::Config(next) => ApplyResult::Internal(self.apply_config(next)),
            GroupCommand::InsertShard {
                config_num,
                shard,
                data,
            } => {
                let ok = self.transition(*config_num, *shard, ShardStatus::Receiving, |held| {
                    held.data = data.clone();
                    held.status = ShardStatus::Confirming;
                });
                ApplyResult::Internal(ok)
            }
            GroupCommand::DeleteShard { config_num, shard } => {
                let ok = self.config.num == *config_num
                    && self.status(*shard) == Some(ShardStatus::HandingOver);
                if ok {
                    self.shards.remove(shard);
                }
                ApplyResult::Internal(ok)
            }
            GroupCommand::ConfirmDeleted { config_num, shard } => {
                let ok = self.transition(*config_num, *shard, ShardStatus::Confirming, |held| {
                    held.status = ShardStatus::Serving;
                });
                ApplyResult::Internal(ok)
            }
        }
    }

    fn transition(
        &mut self,
        config_num: u64,
        shard: ShardId,
        from: ShardStatus,
        change: impl FnOnce(&mut Shard),
    ) -> bool {
        if self.config.num != config_num {
            return false;
        }
        match self.shards.get_mut(&shard) {
            Some(held) if held.status == from => {
                change(held);
                true
            }
            _ => false,
        }
    }

    fn apply_client(&mut self, client_id: kv::ClientId, seq: kv::Seq, op: &Op) -> ApplyResult {
        let shard_id = self.config.shard_of(op.key());
        if !self.can_serve(shard_id) {
            return ApplyResult::WrongGroup;
        }
        let Some(shard) = self.shards.get_mut(&shard_id) else {
            return ApplyResult::WrongGroup;
        };
        let data = &mut shard.data;
        match op {
            Op::Get { key } => ApplyResult::Client(OpResult::Value(
                data.kv.get(key).cloned().unwrap_or_default(),
            )),
            Op::Cas { .. } => ApplyResult::Unsupported,
            Op::Put { key, value } | Op::Append { key, value } => {
                // Writes of one client are sequential: anything at or below
                // the last applied seq of this shard is a retry.
                if data
                    .sessions
                    .get(&client_id)
                    .is_some_and(|last| *last >= seq)
                {
                    return ApplyResult::Client(OpResult::Done);
                }
                if matches!(op, Op::Put { .. }) {
                    data.kv.insert(key.clone(), value.clone());
                } else {
                    data.kv.entry(key.clone()).or_default().push_str(value);
                }
                data.sessions.insert(client_id, seq);
                ApplyResult::Client(OpResult::Done)
            }
        }
    }

    /// Moves to `next` if it is the successor of the current configuration
    /// and every shard is settled; marks what is gained and lost.
    fn apply_config(&mut self, next: &Config) -> bool {
        // The shard count is fixed from configuration 1 on (configuration 0
        // is the empty default, whatever count the deployment chose).
        let count_ok = if self.config.num == 0 {
            !next.shards.is_empty()
        } else {
            next.shards.len() == self.config.shards.len()
        };
        if next.num != self.config.num + 1 || !self.settled() || !count_ok {
            return false;
        }
        for shard in 0..next.shards.len() {
            let before = self.config.owner(shard);
            let after = next.owner(shard);
            if after == self.gid && before != self.gid {
                // Unowned before: nothing to fetch, serve an empty shard.
                let status = if before == 0 {
                    ShardStatus::Serving
                } else {
                    ShardStatus::Receiving
                };
                self.shards.insert(
                    shard,
                    Shard {
                        status,
                        data: ShardData::default(),
                    },
                );
            } else if before == self.gid && after != self.gid {
                if let Some(held) = self.shards.get_mut(&shard) {
                    held.status = ShardStatus::HandingOver;
                }
            }
        }
        self.previous = std::mem::replace(&mut self.config, next.clone());
        true
    }

    pub fn snapshot(&self) -> Vec<u8> {
        encode(&SnapshotData {
            version: SNAPSHOT_FORMAT_VERSION,
            gid: self.gid,
            config: self.config.clone(),
            previous: self.previous.clone(),
            shards: self.shards.clone(),
            applied_index: self.applied_index,
        })
    }

    /// Replaces the state with a snapshot's (the mutation flag stays as set).
    pub fn restore(&mut self, data: &[u8]) -> Result<(), DecodeError> {
        let snapshot: SnapshotData = decode(data, "snapshot")?;
        if snapshot.version != SNAPSHOT_FORMAT_VERSION || snapshot.gid != self.gid {
            return Err(DecodeError {
                what: "snapshot",
                reason: format!(
                    "version {} of gid {}, expected version {SNAPSHOT_FORMAT_VERSION} of gid {}",
                    snapshot.version, snapshot.gid, self.gid
                ),
            });
        }
        self.config = snapshot.config;
        self.previous = snapshot.previous;
        self.shards = snapshot.shards;
        self.applied_index = snapshot.applied_index;
        Ok(())
    }
}

#[cfg(test)]
#[path = "state_machine_tests.rs"]
mod tests;
