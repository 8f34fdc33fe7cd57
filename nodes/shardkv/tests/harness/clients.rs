//! The clerks' side of the world: operations, the auto workload, and
//! carrying out each `ShardClerk` action over the lossy network.

use std::collections::BTreeMap;

use kv::Op;
use shardctrler::{CtrlOp, CtrlResult};
use shardkv::{ClerkAction, ShardClerk, ShardKvResponse};

use super::ctrl::{CtrlAction, CtrlClerk};
use super::servers::{node_of, Msg};
use super::{ClientSlot, Harness, Micros, Timer, World, ATTEMPT_TIMEOUT_US, MS, THINK_US};

impl World {
    // ---- clients ------------------------------------------------------

    pub fn add_client(&mut self) -> usize {
        let index = self.clients.len();
        let client_id = self.host.rng().next_u64();
        let process = self.next_process;
        self.next_process += 1;
        self.clients.push(ClientSlot {
            clerk: ShardClerk::new(client_id),
            ctrl: CtrlClerk::new(client_id, self.ctrl_servers.clone()),
            wants_config: false,
            ctrl_result: None,
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
        self.history.invoke(slot.process, &op, self.host.now_us());
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
        let deadline = self.now_us() + timeout_us;
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
            let now = self.now_us();
            self.host.schedule(now, Timer::ClientNext { client });
        }
    }

    pub fn stop_appending(&mut self) {
        for c in &mut self.clients {
            c.stopping = true;
        }
    }

    /// No kv operation and no controller request in flight.
    pub fn all_idle(&self) -> bool {
        self.clients
            .iter()
            .all(|c| c.current.is_none() && !c.ctrl.busy())
    }

    /// Carries out one of the clerk's actions.
    pub(super) fn perform(&mut self, client: usize, action: ClerkAction) {
        match action {
            ClerkAction::Send {
                attempt,
                server,
                request,
            } => {
                let at = self.now_us() + ATTEMPT_TIMEOUT_US;
                self.host
                    .schedule(at, Timer::ClientTimeout { client, attempt });
                if let Some(to) = node_of(&server) {
                    self.send(client, to, Msg::Kv { attempt, request });
                }
            }
            ClerkAction::QueryConfig { .. } => {
                // The controller clerk retries until a controller server
                // answers; an answer to an earlier refresh still in flight
                // serves this one too.
                self.clients[client].wants_config = true;
                if !self.clients[client].ctrl.busy() {
                    let action = self.clients[client].ctrl.begin(CtrlOp::Query { num: None });
                    self.perform_ctrl(client, action);
                }
            }
            ClerkAction::Backoff { attempt } => {
                let at = self.now_us() + 10 * MS;
                self.host
                    .schedule(at, Timer::ClientResend { client, attempt });
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

    /// Carries out one of the controller clerk's actions.
    pub(super) fn perform_ctrl(&mut self, client: usize, action: CtrlAction) {
        match action {
            CtrlAction::Send {
                to,
                attempt,
                request,
            } => {
                let at = self.now_us() + ATTEMPT_TIMEOUT_US;
                self.host
                    .schedule(at, Timer::CtrlTimeout { client, attempt });
                self.send(client, to, Msg::Ctrl { attempt, request });
            }
            CtrlAction::Backoff { attempt } => {
                let at = self.now_us() + 10 * MS;
                self.host
                    .schedule(at, Timer::CtrlResend { client, attempt });
            }
            CtrlAction::Done(result) => {
                *self.counts.entry("ctrl_done".into()).or_default() += 1;
                let slot = &mut self.clients[client];
                if let CtrlResult::Config(config) = &result {
                    if std::mem::take(&mut slot.wants_config) {
                        let action = slot.clerk.on_config(config.clone());
                        self.perform(client, action);
                        return;
                    }
                }
                slot.ctrl_result = Some(result);
            }
            CtrlAction::Ignored => {}
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
        let now = self.now_us();
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
            self.host
                .schedule(now + THINK_US, Timer::ClientNext { client });
        }
    }

    pub(super) fn next_auto(&mut self, client: usize) {
        let Some(keys) = self.clients[client].auto_keys.clone() else {
            return;
        };
        if self.clients[client].stopping || !self.client_idle(client) {
            return;
        }
        let key = keys[self.random_below(keys.len() as u64) as usize].clone();
        let value = format!("x {client} {} y", self.clients[client].ops_done);
        let op = if self.random_below(10) < 2 {
            Op::Get { key }
        } else {
            Op::Append { key, value }
        };
        self.start_op(client, op);
    }
}
