//! The clerks' side of the world: operations, the auto workload, and
//! carrying out each `ShardClerk` action over the lossy network.

use std::collections::BTreeMap;

use kv::Op;
use rand::Rng;
use shardkv::{ClerkAction, ShardClerk, ShardKvResponse};

use super::{node_of, ClientSlot, Event, Micros, World, ATTEMPT_TIMEOUT_US, MS, THINK_US};

impl World {
    // ---- clients ------------------------------------------------------

    pub fn add_client(&mut self) -> usize {
        let index = self.clients.len();
        let client_id = self.rng.gen();
        let process = self.next_process;
        self.next_process += 1;
        self.clients.push(ClientSlot {
            clerk: ShardClerk::new(client_id),
            process,
            current: None,
            auto_keys: None,
            stopping: false,
            ops_done: 0,
            last_result: None,
            appended: BTreeMap::new(),
        });
        index
    }

    pub fn client_idle(&self, client: usize) -> bool {
        self.clients[client].current.is_none()
    }

    pub fn start_op(&mut self, client: usize, op: Op) {
        let slot = &mut self.clients[client];
        assert!(slot.current.is_none(), "client {client} is busy");
        slot.last_result = None;
        self.history.invoke(slot.process, &op, self.now_us);
        slot.current = Some(op.clone());
        let action = match slot.clerk.begin(op) {
            Ok(action) => action,
            Err(busy) => panic!("{busy}"),
        };
        self.perform(client, action);
    }

    /// Runs `op` and waits up to `timeout_us`; a get's value or "" for writes.
    pub fn op(&mut self, client: usize, op: Op, timeout_us: Micros) -> Option<String> {
        self.start_op(client, op);
        let deadline = self.now_us + timeout_us;
        self.run_until(deadline, |w| w.client_idle(client));
        if self.client_idle(client) {
            self.clients[client].last_result.clone()
        } else {
            None
        }
    }

    /// The client appends to random keys among `keys`, back to back.
    pub fn start_appending(&mut self, client: usize, keys: Vec<String>) {
        self.clients[client].auto_keys = Some(keys);
        self.clients[client].stopping = false;
        if self.client_idle(client) {
            let now = self.now_us;
            self.schedule(now, Event::ClientNext { client });
        }
    }

    pub fn stop_appending(&mut self) {
        for c in &mut self.clients {
            c.stopping = true;
        }
    }

    pub fn all_idle(&self) -> bool {
        self.clients.iter().all(|c| c.current.is_none())
    }

    /// Carries out one of the clerk's actions.
    pub(super) fn perform(&mut self, client: usize, action: ClerkAction) {
        match action {
            ClerkAction::Send {
                attempt,
                server,
                request,
            } => {
                let at = self.now_us + ATTEMPT_TIMEOUT_US;
                self.schedule(at, Event::ClientTimeout { client, attempt });
                if let Some(to) = node_of(&server) {
                    self.hop(Event::Request {
                        to,
                        client,
                        attempt,
                        request,
                    });
                }
            }
            ClerkAction::QueryConfig { attempt } => {
                let at = self.now_us + ATTEMPT_TIMEOUT_US;
                self.schedule(at, Event::ClientTimeout { client, attempt });
                let config = self.ctrler.latest().clone();
                // Two hops: the query and its answer.
                if self.net.drop_probability > 0.0 && self.rng.gen_bool(self.net.drop_probability) {
                    return;
                }
                self.hop(Event::ConfigToClient { client, config });
            }
            ClerkAction::Backoff { attempt } => {
                let at = self.now_us + 10 * MS;
                self.schedule(at, Event::ClientResend { client, attempt });
            }
            ClerkAction::Done(Ok(result)) => {
                let value = match result {
                    kv::OpResult::Value(v) => v,
                    _ => String::new(),
                };
                self.complete(client, Some(value));
            }
            ClerkAction::Done(Err(_)) => self.complete(client, None),
            ClerkAction::Ignored => {}
        }
    }

    pub(super) fn on_response(&mut self, client: usize, attempt: u64, response: ShardKvResponse) {
        let kind = format!("{response:?}");
        let kind = kind.split(['(', ' ']).next().unwrap_or("?").to_string();
        let action = self.clients[client].clerk.on_response(attempt, response);
        let kind = if action == ClerkAction::Ignored {
            "response_stale".to_string()
        } else {
            kind
        };
        *self.counts.entry(kind).or_default() += 1;
        self.perform(client, action);
    }

    pub(super) fn complete(&mut self, client: usize, result: Option<String>) {
        let now = self.now_us;
        let slot = &mut self.clients[client];
        let Some(op) = slot.current.take() else {
            return;
        };
        slot.ops_done += 1;
        match &result {
            Some(value) => {
                self.history.ok(slot.process, &op, value, now);
                if let Op::Append { key, value } = &op {
                    slot.appended
                        .entry(key.clone())
                        .or_default()
                        .push(value.clone());
                }
            }
            None => self.history.fail(slot.process, &op, now),
        }
        slot.last_result = result;
        if slot.auto_keys.is_some() && !slot.stopping {
            // The lab's clients pause 10 ms between operations.
            self.schedule(now + THINK_US, Event::ClientNext { client });
        }
    }

    pub(super) fn next_auto(&mut self, client: usize) {
        let Some(keys) = self.clients[client].auto_keys.clone() else {
            return;
        };
        if self.clients[client].stopping || !self.client_idle(client) {
            return;
        }
        let key = keys[self.rng.gen_range(0..keys.len())].clone();
        let value = format!("x {client} {} y", self.clients[client].ops_done);
        let op = if self.rng.gen_range(0..10) < 2 {
            Op::Get { key }
        } else {
            Op::Append { key, value }
        };
        self.start_op(client, op);
    }
}
