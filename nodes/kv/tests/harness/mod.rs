//! A deterministic world for the KV service's Lab 3 tests: Raft nodes hosting
//! `KvServer`s, clerks as simulated clients, a lossy partitionable network,
//! crashes and restarts, all under virtual time from one seed.
//!
//! The nodes run on `sim::host::Host`, which drives `raft::RawNode`
//! directly, exactly as the node daemon does (Ready handling, persistence
//! with crash semantics, the network); this file adds what is KV's own:
//! the [`Server`] glue for `KvServer` (routing replies to the clerks that
//! asked), the clerks and their workloads, and the lab's per-client checks.

#![allow(dead_code)]

pub mod history;
pub mod lab;

use std::time::Duration;

use kv::client::{Clerk, ClerkConfig, Outcome, Send, Step};
use kv::message::{KvRequest, KvResponse};
use kv::server::{KvServer, ServerConfig};
use kv::Op;
use raft::{NodeId, Ready, Snapshot};
use sim::host::{Addr, Host, HostStats, Node, NodeSlot, Routes, Server, SnapshotTaken};

use history::History;

pub use sim::host::Harness;
pub use sim::host::{Micros, MS, SECOND, TICK_US};
pub use sim::NetConfig;

pub const HEARTBEAT_US: Micros = 2 * TICK_US;

/// Messages between clerks and servers.
#[derive(Clone, Debug)]
pub enum KvMsg {
    Request {
        attempt: u32,
        request: KvRequest,
    },
    Response {
        seq: u64,
        attempt: u32,
        response: KvResponse,
    },
}

/// A `KvServer` as the host runs it, with where each request came from
/// (lost in a crash, as a real node's connections are).
pub struct KvHosted {
    pub server: KvServer,
    /// Tag: the request's (seq, attempt), echoed in the response.
    routes: Routes<(u64, u32)>,
}

impl KvHosted {
    fn flush(&mut self, node: &mut Node<'_, KvMsg>) {
        for reply in self.server.take_replies() {
            if let Some((to, (seq, attempt))) = self.routes.close(reply.request_id) {
                let response = reply.response;
                node.send(
                    to,
                    KvMsg::Response {
                        seq,
                        attempt,
                        response,
                    },
                );
            }
        }
    }
}

impl Server for KvHosted {
    type Spec = ServerConfig;
    type Message = KvMsg;

    fn start(
        spec: &ServerConfig,
        id: NodeId,
        incarnation: u64,
        snapshot: Option<&Snapshot>,
    ) -> Result<Self, String> {
        let mut server = KvServer::new(id, spec.clone(), incarnation);
        if let Some(snapshot) = snapshot {
            server
                .restore_snapshot(snapshot.meta.index, &snapshot.data)
                .map_err(|e| e.to_string())?;
        }
        Ok(KvHosted {
            server,
            routes: Routes::default(),
        })
    }

    fn configure_raft(spec: &ServerConfig, config: &mut raft::Config) {
        config.read_mode = match spec.read_mode {
            kv::ReadMode::Lease => raft::ReadMode::Lease,
            _ => raft::ReadMode::ReadIndex,
        };
    }

    fn tick(&mut self, node: &mut Node<'_, KvMsg>) {
        self.server.tick(&*node.raw);
        self.flush(node);
    }

    fn receive(&mut self, node: &mut Node<'_, KvMsg>, from: Addr, message: KvMsg) {
        if let KvMsg::Request { attempt, request } = message {
            let request_id = self.routes.open(from, (request.seq, attempt));
            self.server.handle_request(node.raw, request_id, request);
            self.flush(node);
        }
    }

    fn apply(&mut self, node: &mut Node<'_, KvMsg>, ready: &Ready) -> Result<(), String> {
        self.server
            .on_raft_ready(node.raw, ready)
            .map_err(|e| e.to_string())?;
        self.flush(node);
        Ok(())
    }

    fn maybe_snapshot(
        &mut self,
        node: &mut Node<'_, KvMsg>,
        raft_state_bytes: usize,
    ) -> Result<Option<SnapshotTaken>, String> {
        let taken = self
            .server
            .maybe_snapshot(node.raw, raft_state_bytes)
            .map_err(|e| e.to_string())?;
        Ok(taken.map(|t| SnapshotTaken {
            index: t.index,
            data: t.data,
        }))
    }
}

/// Generates a client's next operation.
#[derive(Clone, Debug)]
pub struct AutoWorkload {
    /// Key per client ("0", "1", ...) or a random key among `key_count`.
    pub random_keys: bool,
    pub key_count: usize,
    /// Percentages; the rest are gets.
    pub append_percent: u32,
    pub put_percent: u32,
    /// Stop after this many operations (None: until stopped).
    pub max_ops: Option<usize>,
}

pub struct ClientSlot {
    pub index: usize,
    pub clerk: Clerk,
    pub process: i64,
    /// Servers this client can reach (its clerk's list).
    pub servers: Vec<NodeId>,
    pub current: Option<(u64, Op)>,
    pub last_outcome: Option<Outcome>,
    pub auto: Option<AutoWorkload>,
    pub stopping: bool,
    pub ops_started: usize,
    pub ops_done: usize,
    /// The client's own key's predicted value (per-client-key workloads):
    /// None once an unknown outcome makes it unpredictable.
    pub predicted: Option<String>,
    /// Latencies of completed ops, virtual microseconds.
    pub latencies_us: Vec<Micros>,
}

/// The harness's timers.
#[derive(Debug)]
pub enum Timer {
    Send {
        client: usize,
        send: Send,
    },
    Timeout {
        client: usize,
        seq: u64,
        attempt: u32,
    },
    Next {
        client: usize,
    },
}

pub struct World {
    pub seed: u64,
    pub host: Host<KvHosted, Timer>,
    pub clients: Vec<ClientSlot>,
    clerk_config: ClerkConfig,
    next_process: i64,
    pub history: History,
    pub errors: Vec<String>,
}

impl World {
    /// `servers` nodes (ids 1..=servers), all started, fully connected, reliable.
    pub fn new(seed: u64, servers: usize, server_config: ServerConfig) -> World {
        let mut host = Host::new(seed);
        host.add_group(
            (1..=servers as NodeId)
                .map(|id| (id, server_config.clone()))
                .collect(),
        );
        World {
            seed,
            host,
            clients: Vec::new(),
            clerk_config: ClerkConfig {
                attempt_timeout: Duration::from_millis(300),
                op_timeout: None,
                backoff_min: Duration::from_millis(10),
                backoff_max: Duration::from_millis(200),
            },
            next_process: 0,
            history: History::default(),
            errors: Vec::new(),
        }
    }

    pub fn now_us(&self) -> Micros {
        self.host.now_us()
    }

    pub fn set_net(&mut self, net: NetConfig) {
        self.host.net = net;
    }

    pub fn stats(&self) -> &HostStats {
        &self.host.stats
    }

    pub fn node_ids(&self) -> Vec<NodeId> {
        self.host.ids()
    }

    pub fn node(&self, id: NodeId) -> &NodeSlot<KvHosted> {
        self.host.slot(id)
    }

    pub fn nodes(&self) -> impl Iterator<Item = &NodeSlot<KvHosted>> {
        self.host.slots()
    }

    pub fn clerk_config(&self) -> &ClerkConfig {
        &self.clerk_config
    }

    /// Clerks added from now on use `config`.
    pub fn set_clerk_config(&mut self, config: ClerkConfig) {
        self.clerk_config = config;
    }

    pub fn crash(&mut self, id: NodeId) {
        self.host.crash(id);
    }

    pub fn restart(&mut self, id: NodeId) {
        self.host.restart(id);
    }

    pub fn is_up(&self, id: NodeId) -> bool {
        self.host.is_up(id)
    }

    /// Only nodes in the same group can talk; clients are not affected.
    pub fn partition(&mut self, groups: &[Vec<NodeId>]) {
        self.host.partition(groups);
    }

    pub fn heal(&mut self) {
        self.host.heal();
    }

    /// The live leader with the highest term, if any.
    pub fn leader(&self) -> Option<NodeId> {
        self.host.leader_among(&self.node_ids())
    }

    pub fn server(&self, id: NodeId) -> Option<&KvServer> {
        self.host.server(id).map(|h| &h.server)
    }

    pub fn raft_counters(&self, id: NodeId) -> Option<raft::Counters> {
        self.host.slot(id).raw().map(|r| r.counters().clone())
    }

    // ---- clients -------------------------------------------------------

    /// A new client whose clerk knows every server but can reach only
    /// `reachable` (the lab's `makeClient(to)`).
    pub fn add_client_reaching(&mut self, reachable: Vec<NodeId>) -> usize {
        let all = self.node_ids();
        let client = self.add_client(all);
        self.set_client_servers(client, reachable);
        client
    }

    /// A new client that can reach `servers` (its clerk's server list).
    pub fn add_client(&mut self, servers: Vec<NodeId>) -> usize {
        let index = self.clients.len();
        self.host.set_client_reach(index, Some(servers.clone()));
        let client_id = self.host.rng().next_u64();
        let clerk_seed = self.host.rng().next_u64();
        let process = self.next_process;
        self.next_process += 1;
        self.clients.push(ClientSlot {
            index,
            clerk: Clerk::new(
                client_id,
                servers.clone(),
                self.clerk_config.clone(),
                clerk_seed,
            ),
            process,
            servers,
            current: None,
            last_outcome: None,
            auto: None,
            stopping: false,
            ops_started: 0,
            ops_done: 0,
            predicted: Some(String::new()),
            latencies_us: Vec::new(),
        });
        index
    }

    /// Changes which servers a client can reach (not its clerk's list).
    pub fn set_client_servers(&mut self, client: usize, servers: Vec<NodeId>) {
        self.host.set_client_reach(client, Some(servers.clone()));
        self.clients[client].servers = servers;
    }

    pub fn client_idle(&self, client: usize) -> bool {
        self.clients[client].current.is_none()
    }

    /// Starts `op` on an idle client.
    pub fn start_op(&mut self, client: usize, op: Op) {
        let now_us = self.host.now_us();
        let now = Duration::from_micros(now_us);
        let slot = &mut self.clients[client];
        assert!(slot.current.is_none(), "client {client} is busy");
        slot.ops_started += 1;
        slot.last_outcome = None;
        slot.current = Some((now_us, op.clone()));
        self.history.invoke(slot.process, &op, now_us);
        let send = match slot.clerk.begin(op, now) {
            Ok(send) => send,
            Err(busy) => panic!("clerk busy: {busy}"),
        };
        self.client_send(client, send);
    }

    /// Runs `op` on `client` and waits up to `timeout_us` for its outcome.
    pub fn op(&mut self, client: usize, op: Op, timeout_us: Micros) -> Option<Outcome> {
        self.start_op(client, op);
        let deadline = self.now_us() + timeout_us;
        self.run_until(deadline, |w| w.client_idle(client));
        self.clients[client]
            .last_outcome
            .clone()
            .filter(|_| self.client_idle(client))
    }

    /// Lets a client issue operations from `workload` back to back.
    pub fn start_auto(&mut self, client: usize, workload: AutoWorkload) {
        self.clients[client].auto = Some(workload);
        self.clients[client].stopping = false;
        if self.client_idle(client) {
            let now = self.now_us();
            self.host.schedule(now, Timer::Next { client });
        }
    }

    /// Auto clients finish their current operation and start no more.
    pub fn stop_auto(&mut self) {
        for client in &mut self.clients {
            client.stopping = true;
        }
    }

    pub fn all_clients_idle(&self) -> bool {
        self.clients.iter().all(|c| c.current.is_none())
    }

    fn client_send(&mut self, client: usize, send: Send) {
        if send.send_at > Duration::from_micros(self.now_us()) {
            // Round up: an event at the floor would find the send still early.
            let at = send.send_at.as_nanos().div_ceil(1_000) as Micros;
            self.host.schedule(at, Timer::Send { client, send });
            return;
        }
        let timeout_at = send.timeout_at.as_nanos().div_ceil(1_000) as Micros;
        self.host.schedule(
            timeout_at,
            Timer::Timeout {
                client,
                seq: send.request.seq,
                attempt: send.attempt,
            },
        );
        let message = KvMsg::Request {
            attempt: send.attempt,
            request: send.request,
        };
        self.host
            .send(Addr::Client(client), Addr::Node(send.to), message);
    }

    fn client_step(&mut self, client: usize, step: Step) {
        match step {
            Step::Send(send) => self.client_send(client, send),
            Step::Ignored => {}
            Step::Done(outcome) => self.complete(client, outcome),
        }
    }

    fn complete(&mut self, client: usize, outcome: Outcome) {
        let now = self.now_us();
        let slot = &mut self.clients[client];
        let Some((started_us, op)) = slot.current.take() else {
            return;
        };
        slot.ops_done += 1;
        slot.latencies_us.push(now - started_us);
        self.history.complete(slot.process, &op, &outcome, now);
        // Lab check: on a per-client key, a get returns exactly what this
        // client appended so far.
        let own_key = slot.index.to_string();
        let per_client_keys = slot.auto.as_ref().is_some_and(|a| !a.random_keys);
        if per_client_keys && op.key() == own_key {
            match (&op, &outcome) {
                (Op::Append { value, .. }, Outcome::Ok(_)) => {
                    if let Some(p) = slot.predicted.as_mut() {
                        p.push_str(value)
                    }
                }
                (Op::Get { .. }, Outcome::Ok(kv::OpResult::Value(read))) => {
                    if let Some(p) = &slot.predicted {
                        if p != read {
                            self.errors.push(format!(
                                "client {client}: get({own_key}) returned {read:?}, expected {p:?}"
                            ));
                        }
                    }
                }
                (_, Outcome::Unknown(_)) => slot.predicted = None,
                _ => {}
            }
        }
        if matches!(outcome, Outcome::Unknown(_)) {
            // A process whose operation ended in info is retired (history contract).
            slot.process = self.next_process;
            self.next_process += 1;
        }
        slot.last_outcome = Some(outcome);
        if slot.auto.is_some() && !slot.stopping {
            self.host.schedule(now, Timer::Next { client });
        }
    }

    fn next_auto_op(&mut self, client: usize) {
        let Some(auto) = self.clients[client].auto.clone() else {
            return;
        };
        if self.clients[client].stopping || !self.client_idle(client) {
            return;
        }
        if auto
            .max_ops
            .is_some_and(|max| self.clients[client].ops_started >= max)
        {
            return;
        }
        let key = if auto.random_keys {
            self.random_below(auto.key_count as u64).to_string()
        } else {
            client.to_string()
        };
        let n = self.clients[client].ops_started;
        let value = format!("x {client} {n} y");
        let dice = self.random_below(100) as u32;
        let op = if dice < auto.append_percent {
            Op::Append { key, value }
        } else if dice < auto.append_percent + auto.put_percent {
            Op::Put { key, value }
        } else {
            Op::Get { key }
        };
        self.start_op(client, op);
    }

    // ---- scripts ---------------------------------------------------------

    /// Uniform random number from the world's stream (for test scripts).
    pub fn random_below(&mut self, bound: u64) -> u64 {
        self.host.rng().below(bound)
    }

    /// Random minority/majority split of all nodes.
    pub fn random_halves(&mut self) -> Vec<Vec<NodeId>> {
        let mut ids = self.node_ids();
        self.host.rng().shuffle(&mut ids);
        let majority = ids.split_off(ids.len() / 2);
        vec![ids, majority]
    }
}

impl Harness for World {
    type Server = KvHosted;
    type Timer = Timer;

    fn host_mut(&mut self) -> &mut Host<KvHosted, Timer> {
        &mut self.host
    }

    fn on_client_message(&mut self, client: usize, from: NodeId, message: KvMsg) {
        if let KvMsg::Response {
            seq,
            attempt,
            response,
        } = message
        {
            let now = Duration::from_micros(self.now_us());
            let step = self.clients[client]
                .clerk
                .on_response(seq, attempt, from, response, now);
            self.client_step(client, step);
        }
    }

    fn on_timer(&mut self, timer: Timer) {
        match timer {
            Timer::Send { client, send } => {
                // A stale planned send (the op already finished) is harmless:
                // the server answers, the clerk ignores it.
                if self.clients[client]
                    .clerk
                    .in_flight()
                    .is_some_and(|r| r.seq == send.request.seq)
                {
                    self.client_send(client, send);
                }
            }
            Timer::Timeout {
                client,
                seq,
                attempt,
            } => {
                let now = Duration::from_micros(self.now_us());
                let step = self.clients[client].clerk.on_timeout(seq, attempt, now);
                self.client_step(client, step);
            }
            Timer::Next { client } => self.next_auto_op(client),
        }
    }
}
