//! The client library's core: a [`Clerk`] state machine that numbers
//! requests, finds the leader by hint, retries with backoff, enforces timeouts
//! and classifies each operation's outcome. No I/O and no clock: the runtime
//! (simulator or tokio) passes the current time in and carries out each
//! [`Send`] the clerk asks for, at its `send_at`, arming a timer for its
//! `timeout_at`.
//!
//! Outcomes follow the history contract: `Ok` happened, `Fail` certainly did
//! not happen, `Unknown` may have happened. An operation becomes `Unknown` as
//! soon as any attempt may have reached a leader (a timeout, a lost
//! connection after sending, a leader that lost track of it) and the clerk
//! gives up before learning the answer; it is never reported as failed. A cas
//! whose expected value did not match completes as `Fail`.

use std::time::Duration;

use raft::NodeId;

use crate::command::{ClientId, InvalidOp, Op, OpResult, Seq};
use crate::message::{KvRequest, KvResponse};

/// Clerk settings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClerkConfig {
    /// How long to wait for one attempt's response before trying another server.
    pub attempt_timeout: Duration,
    /// Give up on an operation after this long. `None`: retry until answered
    /// (the 6.824 clerk's behaviour).
    pub op_timeout: Option<Duration>,
    /// First pause after a full round of servers without an answer; doubles
    /// per round up to `backoff_max`, with jitter.
    pub backoff_min: Duration,
    pub backoff_max: Duration,
}

impl Default for ClerkConfig {
    fn default() -> Self {
        Self {
            attempt_timeout: Duration::from_millis(500),
            op_timeout: Some(Duration::from_secs(10)),
            backoff_min: Duration::from_millis(10),
            backoff_max: Duration::from_millis(500),
        }
    }
}

/// A request for the runtime to send.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Send {
    pub to: NodeId,
    pub request: KvRequest,
    /// Which attempt of this operation this is; pass it back with the
    /// response or the timeout.
    pub attempt: u32,
    /// Send no earlier than this (backoff).
    pub send_at: Duration,
    /// If no response by then, call [`Clerk::on_timeout`].
    pub timeout_at: Duration,
}

/// Why an operation certainly did not take effect.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FailReason {
    /// The cas's expected value did not match; nothing changed.
    CasMismatch,
    /// The request is malformed; no server accepted it.
    Invalid(InvalidOp),
    /// The clerk gave up, and every attempt was refused before being proposed.
    GaveUp,
}

/// Why an operation's outcome is not known.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum UnknownReason {
    /// The clerk gave up after an attempt that may have been applied.
    GaveUp,
    /// The server reported a newer request of this client already applied;
    /// happens only if two clerks share a client id.
    Stale,
}

/// An operation's outcome, as the history records it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    Ok(OpResult),
    Fail(FailReason),
    Unknown(UnknownReason),
}

/// What the runtime does next for this clerk.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Step {
    Send(Send),
    Done(Outcome),
    /// The input was about an old attempt or operation; nothing to do.
    Ignored,
}

/// [`Clerk::begin`] while an operation is still outstanding.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
#[error("operation {seq} is still outstanding; a clerk runs one operation at a time")]
pub struct ClerkBusy {
    pub seq: Seq,
}

/// Counters for tests and metrics.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ClerkCounters {
    pub operations: u64,
    pub attempts: u64,
    pub timeouts: u64,
    pub redirects: u64,
}

#[derive(Clone, Debug)]
struct InFlight {
    request: KvRequest,
    started_at: Duration,
    attempt: u32,
    /// The server the current attempt went to.
    to_index: usize,
    /// Some attempt may have reached a leader that proposed it.
    maybe_applied: bool,
    /// Attempts since the last backoff pause; a full round of servers
    /// without an answer pauses.
    attempts_this_round: usize,
    backoff: Duration,
}

/// One client: one operation at a time, numbered 1, 2, 3 ...
#[derive(Clone, Debug)]
pub struct Clerk {
    client_id: ClientId,
    servers: Vec<NodeId>,
    /// Index into `servers` of the presumed leader.
    leader_index: usize,
    next_seq: Seq,
    config: ClerkConfig,
    in_flight: Option<InFlight>,
    rng_state: u64,
    counters: ClerkCounters,
}

impl Clerk {
    /// `servers` must not be empty; `seed` drives the backoff jitter (pass one
    /// from the runtime's seeded RNG so the simulator replays).
    pub fn new(client_id: ClientId, servers: Vec<NodeId>, config: ClerkConfig, seed: u64) -> Self {
        assert!(!servers.is_empty(), "a clerk needs at least one server");
        Self {
            client_id,
            servers,
            leader_index: 0,
            next_seq: 1,
            config,
            in_flight: None,
            rng_state: seed,
            counters: ClerkCounters::default(),
        }
    }

    pub fn client_id(&self) -> ClientId {
        self.client_id
    }

    pub fn counters(&self) -> &ClerkCounters {
        &self.counters
    }

    /// The server the clerk currently believes leads.
    pub fn presumed_leader(&self) -> NodeId {
        self.servers[self.leader_index]
    }

    /// The outstanding operation's request, if any.
    pub fn in_flight(&self) -> Option<&KvRequest> {
        self.in_flight.as_ref().map(|f| &f.request)
    }

    /// Starts an operation: returns the first attempt to send now, to the presumed leader.
    pub fn begin(&mut self, op: Op, now: Duration) -> Result<Send, ClerkBusy> {
        self.begin_at(op, None, now)
    }

    /// Starts an operation whose first attempt goes to `first` (if it is one of the servers)
    /// instead of the presumed leader; later attempts follow leader hints as usual. Jepsen-style
    /// workloads bind each client to a node this way, so a replica that wrongly answers on its
    /// own (e.g. the unsafe stale-read mode) is actually asked.
    pub fn begin_at(
        &mut self,
        op: Op,
        first: Option<NodeId>,
        now: Duration,
    ) -> Result<Send, ClerkBusy> {
        if let Some(in_flight) = &self.in_flight {
            return Err(ClerkBusy {
                seq: in_flight.request.seq,
            });
        }
        let seq = self.next_seq;
        self.next_seq += 1;
        self.counters.operations += 1;
        let first_index = first
            .and_then(|id| self.servers.iter().position(|s| *s == id))
            .unwrap_or(self.leader_index);
        let mut in_flight = InFlight {
            request: KvRequest {
                client_id: self.client_id,
                seq,
                op,
            },
            started_at: now,
            attempt: 0,
            to_index: first_index,
            maybe_applied: false,
            attempts_this_round: 0,
            backoff: self.config.backoff_min,
        };
        let send = Self::plan_send(
            &mut in_flight,
            &self.servers,
            &self.config,
            &mut self.counters,
            first_index,
            now,
        );
        self.in_flight = Some(in_flight);
        Ok(send)
    }

    /// A response to attempt `attempt` of operation `seq` arrived from `from`.
    pub fn on_response(
        &mut self,
        seq: Seq,
        attempt: u32,
        from: NodeId,
        response: KvResponse,
        now: Duration,
    ) -> Step {
        let Some(in_flight) = &mut self.in_flight else {
            return Step::Ignored;
        };
        if seq != in_flight.request.seq {
            return Step::Ignored;
        }
        // An answer for this seq is good whichever attempt it came from.
        match response {
            KvResponse::Ok(result) => {
                if let Some(index) = self.servers.iter().position(|s| *s == from) {
                    self.leader_index = index;
                }
                let outcome = match result {
                    OpResult::Cas { swapped: false } => Outcome::Fail(FailReason::CasMismatch),
                    other => Outcome::Ok(other),
                };
                return self.finish(outcome);
            }
            KvResponse::Invalid(invalid) => {
                return self.finish(Outcome::Fail(FailReason::Invalid(invalid)))
            }
            KvResponse::Stale => return self.finish(Outcome::Unknown(UnknownReason::Stale)),
            _ => {}
        }
        if attempt != in_flight.attempt {
            // A refusal of an attempt we already replaced: the current one is still out.
            return Step::Ignored;
        }
        if !response.is_definite_refusal() {
            in_flight.maybe_applied = true;
        }
        let next_index = match response.leader_hint() {
            Some(hint) if hint != from => match self.servers.iter().position(|s| *s == hint) {
                Some(index) => {
                    self.counters.redirects += 1;
                    index
                }
                None => (in_flight.to_index + 1) % self.servers.len(),
            },
            _ if response == KvResponse::Busy => in_flight.to_index,
            _ => (in_flight.to_index + 1) % self.servers.len(),
        };
        self.next_attempt(next_index, now)
    }

    /// Attempt `attempt` of operation `seq` got no response by its
    /// `timeout_at` (or its connection broke after sending).
    pub fn on_timeout(&mut self, seq: Seq, attempt: u32, now: Duration) -> Step {
        let Some(in_flight) = &mut self.in_flight else {
            return Step::Ignored;
        };
        if seq != in_flight.request.seq || attempt != in_flight.attempt {
            return Step::Ignored;
        }
        self.counters.timeouts += 1;
        in_flight.maybe_applied = true;
        let next_index = (in_flight.to_index + 1) % self.servers.len();
        self.next_attempt(next_index, now)
    }

    /// Attempt `attempt` could not be delivered at all (e.g. the connection
    /// was refused before the request was written): definite for that attempt.
    pub fn on_unreachable(&mut self, seq: Seq, attempt: u32, now: Duration) -> Step {
        let Some(in_flight) = &mut self.in_flight else {
            return Step::Ignored;
        };
        if seq != in_flight.request.seq || attempt != in_flight.attempt {
            return Step::Ignored;
        }
        let next_index = (in_flight.to_index + 1) % self.servers.len();
        self.next_attempt(next_index, now)
    }

    fn finish(&mut self, outcome: Outcome) -> Step {
        self.in_flight = None;
        Step::Done(outcome)
    }

    /// Plans the next attempt to `servers[index]`, pausing after a full round
    /// of servers, or gives up past the operation deadline.
    fn next_attempt(&mut self, index: usize, now: Duration) -> Step {
        let servers = self.servers.len();
        let Some(in_flight) = &mut self.in_flight else {
            return Step::Ignored;
        };
        let mut send_at = now;
        if in_flight.attempts_this_round >= servers {
            let jitter = jitter(&mut self.rng_state, in_flight.backoff);
            send_at = now + in_flight.backoff / 2 + jitter;
            in_flight.backoff = (in_flight.backoff * 2).min(self.config.backoff_max);
            in_flight.attempts_this_round = 0;
        }
        if let Some(op_timeout) = self.config.op_timeout {
            if send_at >= in_flight.started_at + op_timeout {
                let outcome = if in_flight.maybe_applied {
                    Outcome::Unknown(UnknownReason::GaveUp)
                } else {
                    Outcome::Fail(FailReason::GaveUp)
                };
                return self.finish(outcome);
            }
        }
        Step::Send(Self::plan_send(
            in_flight,
            &self.servers,
            &self.config,
            &mut self.counters,
            index,
            send_at,
        ))
    }

    /// Numbers and addresses the next attempt of the operation in flight.
    fn plan_send(
        in_flight: &mut InFlight,
        servers: &[NodeId],
        config: &ClerkConfig,
        counters: &mut ClerkCounters,
        index: usize,
        send_at: Duration,
    ) -> Send {
        in_flight.attempt += 1;
        in_flight.attempts_this_round += 1;
        in_flight.to_index = index;
        counters.attempts += 1;
        let mut timeout_at = send_at + config.attempt_timeout;
        if let Some(op_timeout) = config.op_timeout {
            timeout_at = timeout_at.min(in_flight.started_at + op_timeout);
        }
        Send {
            to: servers[index],
            request: in_flight.request.clone(),
            attempt: in_flight.attempt,
            send_at,
            timeout_at,
        }
    }
}

/// A uniformly random duration in [0, max/2], from a SplitMix64 step.
fn jitter(state: &mut u64, max: Duration) -> Duration {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^= z >> 31;
    let half_nanos = (max.as_nanos() / 2) as u64;
    Duration::from_nanos(if half_nanos == 0 {
        0
    } else {
        z % (half_nanos + 1)
    })
}

#[cfg(test)]
#[path = "client_tests.rs"]
mod tests;
