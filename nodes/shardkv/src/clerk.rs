//! The clerk's decisions, without I/O: which server of which group to ask,
//! when to refresh the configuration, when an operation is done. The
//! runtime carries out each [`ClerkAction`] and feeds answers and timeouts
//! back, tagged with the attempt number the action carried (answers to
//! older attempts are ignored).
//!
//! As the lab's clerk: the key's shard names the group in the cached
//! configuration; `WrongGroup` or a timed-out attempt refreshes the
//! configuration from the controller (the group may have left or died);
//! other refusals move on to the group's next server. A retry keeps its
//! sequence number, so the groups' per-shard deduplication tables apply it
//! at most once, even across a shard's move.

use std::collections::BTreeMap;

use kv::{ClientId, Op, OpResult, Seq};
use shardctrler::{Config, Gid};

use crate::command::{ShardKvRequest, ShardKvResponse};

/// What the runtime should do next for this clerk.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ClerkAction {
    /// Send `request` to the server named `server`; if no answer comes
    /// within the attempt timeout, call [`ShardClerk::on_timeout`].
    Send {
        attempt: u64,
        server: String,
        request: ShardKvRequest,
    },
    /// Ask the controller for its latest configuration and hand it to
    /// [`ShardClerk::on_config`]; on no answer, [`ShardClerk::on_timeout`].
    QueryConfig { attempt: u64 },
    /// Wait a short pause, then call [`ShardClerk::resend`].
    Backoff { attempt: u64 },
    /// The operation finished: its result, or why it was refused for good.
    Done(Result<OpResult, String>),
    /// Nothing to do (a stale answer).
    Ignored,
}

/// One client of the sharded store, with at most one operation in flight.
#[derive(Clone, Debug)]
pub struct ShardClerk {
    client_id: ClientId,
    seq: Seq,
    config: Config,
    current: Option<Op>,
    attempt: u64,
    /// Per group, which of its servers to try next (sticks to a leader).
    next_server: BTreeMap<Gid, usize>,
}

/// [`ShardClerk::begin`] while an operation is in flight.
#[derive(Debug, thiserror::Error)]
#[error("clerk {client_id} already has an operation in flight")]
pub struct Busy {
    pub client_id: ClientId,
}

impl ShardClerk {
    /// `client_id` must be unique across the cluster's lifetime.
    pub fn new(client_id: ClientId) -> Self {
        Self {
            client_id,
            seq: 0,
            config: Config::default(),
            current: None,
            attempt: 0,
            next_server: BTreeMap::new(),
        }
    }

    pub fn client_id(&self) -> ClientId {
        self.client_id
    }
    pub fn config(&self) -> &Config {
        &self.config
    }
    pub fn in_flight(&self) -> Option<&Op> {
        self.current.as_ref()
    }

    /// Starts `op` with the next sequence number.
    pub fn begin(&mut self, op: Op) -> Result<ClerkAction, Busy> {
        if self.current.is_some() {
            return Err(Busy {
                client_id: self.client_id,
            });
        }
        self.seq += 1;
        self.current = Some(op);
        Ok(self.send())
    }

    fn send(&mut self) -> ClerkAction {
        let Some(op) = self.current.clone() else {
            return ClerkAction::Ignored;
        };
        self.attempt += 1;
        let attempt = self.attempt;
        let gid = self.config.owner(self.config.shard_of(op.key()));
        let servers = self.config.groups.get(&gid).filter(|s| !s.is_empty());
        let Some(servers) = servers.filter(|_| gid != 0) else {
            return ClerkAction::QueryConfig { attempt };
        };
        let index = self.next_server.get(&gid).copied().unwrap_or(0) % servers.len();
        ClerkAction::Send {
            attempt,
            server: servers[index].clone(),
            request: ShardKvRequest {
                client_id: self.client_id,
                seq: self.seq,
                op,
            },
        }
    }

    fn refresh(&mut self) -> ClerkAction {
        self.attempt += 1;
        ClerkAction::QueryConfig {
            attempt: self.attempt,
        }
    }

    fn skip_server(&mut self) {
        if let Some(op) = &self.current {
            let gid = self.config.owner(self.config.shard_of(op.key()));
            *self.next_server.entry(gid).or_insert(0) += 1;
        }
    }

    fn current_attempt(&self, attempt: u64) -> bool {
        self.current.is_some() && attempt == self.attempt
    }

    /// A server's answer to the request of `attempt`.
    pub fn on_response(&mut self, attempt: u64, response: ShardKvResponse) -> ClerkAction {
        if !self.current_attempt(attempt) {
            return ClerkAction::Ignored;
        }
        match response {
            ShardKvResponse::Ok(result) => {
                self.current = None;
                ClerkAction::Done(Ok(result))
            }
            ShardKvResponse::Invalid(reason) => {
                self.current = None;
                ClerkAction::Done(Err(reason))
            }
            ShardKvResponse::WrongGroup => self.refresh(),
            ShardKvResponse::WrongLeader { .. }
            | ShardKvResponse::LeadershipLost
            | ShardKvResponse::Timeout
            | ShardKvResponse::Busy => {
                self.skip_server();
                self.attempt += 1;
                ClerkAction::Backoff {
                    attempt: self.attempt,
                }
            }
        }
    }

    /// No answer to `attempt` in time: next server, fresh configuration.
    pub fn on_timeout(&mut self, attempt: u64) -> ClerkAction {
        if !self.current_attempt(attempt) {
            return ClerkAction::Ignored;
        }
        self.skip_server();
        self.refresh()
    }

    /// Gives up on the operation in flight (the runtime's deadline passed):
    /// answers to it are ignored from now on, and the next operation gets
    /// the next sequence number. The abandoned one may still take effect.
    pub fn abandon(&mut self) {
        self.current = None;
        self.attempt += 1;
    }

    /// After a [`ClerkAction::Backoff`] pause.
    pub fn resend(&mut self, attempt: u64) -> ClerkAction {
        if !self.current_attempt(attempt) {
            return ClerkAction::Ignored;
        }
        self.send()
    }

    /// The controller's latest configuration (older ones are ignored).
    pub fn on_config(&mut self, config: Config) -> ClerkAction {
        if config.num >= self.config.num {
            self.config = config;
        }
        if self.current.is_some() {
            self.send()
        } else {
            ClerkAction::Ignored
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use shardctrler::NSHARDS;

    fn config(num: u64, gid: Gid) -> Config {
        Config {
            num,
            shards: vec![gid; NSHARDS],
            groups: [(gid, vec![format!("{gid}a"), format!("{gid}b")])]
                .into_iter()
                .collect(),
        }
    }

    fn get() -> Op {
        Op::Get { key: "k".into() }
    }

    #[test]
    fn asks_the_controller_first_then_the_owner() {
        let mut clerk = ShardClerk::new(1);
        assert_eq!(
            clerk.begin(get()).unwrap(),
            ClerkAction::QueryConfig { attempt: 1 }
        );
        assert!(clerk.begin(get()).is_err());
        let ClerkAction::Send {
            attempt,
            server,
            request,
        } = clerk.on_config(config(1, 7))
        else {
            panic!("expected a send");
        };
        assert_eq!((attempt, server.as_str(), request.seq), (2, "7a", 1));
        let done = clerk.on_response(2, ShardKvResponse::Ok(OpResult::Value("v".into())));
        assert_eq!(done, ClerkAction::Done(Ok(OpResult::Value("v".into()))));
        assert!(clerk.in_flight().is_none());
    }

    #[test]
    fn wrong_group_refreshes_and_retries_with_the_same_seq() {
        let mut clerk = ShardClerk::new(1);
        clerk.begin(get()).unwrap();
        clerk.on_config(config(1, 7));
        assert_eq!(
            clerk.on_response(2, ShardKvResponse::WrongGroup),
            ClerkAction::QueryConfig { attempt: 3 }
        );
        // An old configuration does not replace the newer one.
        let ClerkAction::Send {
            server, request, ..
        } = clerk.on_config(config(0, 9))
        else {
            panic!("expected a send");
        };
        assert_eq!((server.as_str(), request.seq), ("7a", 1));
        let ClerkAction::Send {
            server, request, ..
        } = clerk.on_config(config(2, 8))
        else {
            panic!("expected a send");
        };
        assert_eq!((server.as_str(), request.seq), ("8a", 1));
    }

    #[test]
    fn refusals_move_to_the_next_server_and_stale_answers_are_ignored() {
        let mut clerk = ShardClerk::new(1);
        clerk.begin(get()).unwrap();
        clerk.on_config(config(1, 7));
        let backoff = clerk.on_response(2, ShardKvResponse::WrongLeader { leader_hint: None });
        assert_eq!(backoff, ClerkAction::Backoff { attempt: 3 });
        assert_eq!(
            clerk.on_response(2, ShardKvResponse::Ok(OpResult::Done)),
            ClerkAction::Ignored
        );
        let ClerkAction::Send {
            server, attempt, ..
        } = clerk.resend(3)
        else {
            panic!("expected a send");
        };
        assert_eq!(server, "7b");
        assert_eq!(
            clerk.on_timeout(attempt),
            ClerkAction::QueryConfig {
                attempt: attempt + 1
            }
        );
        assert_eq!(clerk.on_timeout(attempt), ClerkAction::Ignored);
    }

    #[test]
    fn an_abandoned_operation_ignores_late_answers_and_frees_the_clerk() {
        let mut clerk = ShardClerk::new(1);
        clerk.begin(get()).unwrap();
        clerk.on_config(config(1, 7));
        clerk.abandon();
        assert!(clerk.in_flight().is_none());
        assert_eq!(
            clerk.on_response(2, ShardKvResponse::Ok(OpResult::Done)),
            ClerkAction::Ignored
        );
        let ClerkAction::Send { request, .. } = clerk.begin(get()).unwrap() else {
            panic!("expected a send with the cached configuration");
        };
        assert_eq!(request.seq, 2);
    }
}
