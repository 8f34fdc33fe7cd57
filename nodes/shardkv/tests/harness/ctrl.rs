//! A sans-IO clerk for the shard controller (`shardctrler::CtrlServer`,
//! the node daemon's controller code, hosted on a Raft group by the
//! harness): finds the leader, retries, and keeps one sequence number per
//! request so a retried Join, Leave or Move is applied once (the
//! controller's session table). The group servers use one for their
//! configuration polls, every clerk one for its refreshes, and the test one
//! for its Join/Leave/Move.

use raft::NodeId;
use shardctrler::{ClientId, CtrlOp, CtrlRequest, CtrlResponse, CtrlResult, Seq};

/// What the runtime should do for a [`CtrlClerk`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CtrlAction {
    /// Send `request` to controller server `to`; call
    /// [`CtrlClerk::on_timeout`] if no answer comes in time.
    Send {
        to: NodeId,
        attempt: u64,
        request: CtrlRequest,
    },
    /// Pause briefly, then [`CtrlClerk::resend`].
    Backoff {
        attempt: u64,
    },
    Done(CtrlResult),
    Ignored,
}

/// A controller client with one request in flight: sticks to the server
/// that answered last, follows leader hints, moves on after refusals and
/// timeouts, and never gives up (as the lab's clerk).
#[derive(Clone, Debug)]
pub struct CtrlClerk {
    client_id: ClientId,
    seq: Seq,
    servers: Vec<NodeId>,
    leader: usize,
    attempt: u64,
    current: Option<CtrlOp>,
}

impl CtrlClerk {
    pub fn new(client_id: ClientId, servers: Vec<NodeId>) -> Self {
        assert!(!servers.is_empty(), "a controller clerk needs servers");
        Self {
            client_id,
            seq: 0,
            servers,
            leader: 0,
            attempt: 0,
            current: None,
        }
    }

    pub fn client_id(&self) -> ClientId {
        self.client_id
    }

    /// The attempt number of the last action handed out.
    pub fn attempt(&self) -> u64 {
        self.attempt
    }

    pub fn busy(&self) -> bool {
        self.current.is_some()
    }

    /// Starts `op` with the next sequence number (the clerk must be idle).
    pub fn begin(&mut self, op: CtrlOp) -> CtrlAction {
        assert!(
            self.current.is_none(),
            "controller clerk {} busy",
            self.client_id
        );
        self.seq += 1;
        self.current = Some(op);
        self.send()
    }

    fn send(&mut self) -> CtrlAction {
        let Some(op) = self.current.clone() else {
            return CtrlAction::Ignored;
        };
        self.attempt += 1;
        CtrlAction::Send {
            to: self.servers[self.leader % self.servers.len()],
            attempt: self.attempt,
            request: CtrlRequest {
                client_id: self.client_id,
                seq: self.seq,
                op,
            },
        }
    }

    fn current_attempt(&self, attempt: u64) -> bool {
        self.current.is_some() && attempt == self.attempt
    }

    fn next_server(&mut self) {
        self.leader = (self.leader + 1) % self.servers.len();
    }

    pub fn on_response(&mut self, attempt: u64, response: CtrlResponse) -> CtrlAction {
        if !self.current_attempt(attempt) {
            return CtrlAction::Ignored;
        }
        match response {
            CtrlResponse::Ok(result) => {
                self.current = None;
                CtrlAction::Done(result)
            }
            CtrlResponse::WrongLeader { leader_hint } => {
                match leader_hint.and_then(|h| self.servers.iter().position(|s| *s == h)) {
                    Some(index) if index != self.leader % self.servers.len() => {
                        self.leader = index;
                        self.send()
                    }
                    _ => {
                        self.next_server();
                        self.attempt += 1;
                        CtrlAction::Backoff {
                            attempt: self.attempt,
                        }
                    }
                }
            }
            // Older than a request of ours already answered: cannot happen
            // with one request in flight; the caller sees it as a refusal.
            CtrlResponse::Stale => {
                self.current = None;
                CtrlAction::Done(CtrlResult::Invalid("answered Stale".into()))
            }
            CtrlResponse::LeadershipLost | CtrlResponse::Timeout | CtrlResponse::Busy => {
                self.next_server();
                self.attempt += 1;
                CtrlAction::Backoff {
                    attempt: self.attempt,
                }
            }
        }
    }

    pub fn on_timeout(&mut self, attempt: u64) -> CtrlAction {
        if !self.current_attempt(attempt) {
            return CtrlAction::Ignored;
        }
        self.next_server();
        self.send()
    }

    pub fn resend(&mut self, attempt: u64) -> CtrlAction {
        if !self.current_attempt(attempt) {
            return CtrlAction::Ignored;
        }
        self.send()
    }
}
