//! A deterministic world for the KV service's Lab 3 tests: Raft nodes hosting
//! `KvServer`s, clerks as simulated clients, a lossy partitionable network,
//! crashes and restarts, all under virtual time from one seed.
//!
//! Why here and not in `nodes/sim`: the simulator hosts a `StateMachine`
//! (apply/snapshot/restore) and owns the apply loop, so it cannot host the
//! KV *server* (ReadIndex reads, pending-request bookkeeping, the snapshot
//! trigger) nor run clients inside the simulation. This module drives
//! `raft::RawNode` directly, exactly as the node daemon will, through the
//! crate's public API (`KvServer::on_raft_ready`, `maybe_snapshot`, `Clerk`).

#![allow(dead_code)]

pub mod history;
pub mod lab;

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap};
use std::time::Duration;

use kv::client::{Clerk, ClerkConfig, Outcome, Send, Step};
use kv::message::{KvRequest, KvResponse};
use kv::server::{KvServer, RequestId, ServerConfig};
use kv::Op;
use raft::{
    Config, Entry, HardState, Index, Message, NodeId, RawNode, Restored, Role, Snapshot,
    SnapshotMeta,
};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use history::Recorder;

/// Virtual microseconds.
pub type Micros = u64;

pub const MS: Micros = 1_000;
pub const SECOND: Micros = 1_000_000;

/// Raft tick: with 2-tick heartbeats and 10-20 tick elections this is the
/// lab's 100 ms heartbeat and ~1 s election timeout.
pub const TICK_US: Micros = 50 * MS;
pub const HEARTBEAT_US: Micros = 2 * TICK_US;

/// What a message suffers on a working link.
#[derive(Clone, Copy, Debug)]
pub struct NetConfig {
    pub delay_us_min: Micros,
    pub delay_us_max: Micros,
    pub drop_probability: f64,
}

impl NetConfig {
    pub fn reliable() -> Self {
        Self {
            delay_us_min: 100,
            delay_us_max: 1_000,
            drop_probability: 0.0,
        }
    }
    /// labrpc's unreliable network: 0-26 ms, 10% of messages lost.
    pub fn unreliable() -> Self {
        Self {
            delay_us_min: 0,
            delay_us_max: 26 * MS,
            drop_probability: 0.10,
        }
    }
}

/// A node's stable storage: what survives a crash.
#[derive(Clone, Debug, Default)]
pub struct Persisted {
    pub hard_state: HardState,
    pub snapshot: Option<Snapshot>,
    pub entries: Vec<Entry>,
}

/// Bytes an entry takes on disk besides its data (term, index, kind, length, checksum).
const ENTRY_OVERHEAD_BYTES: usize = 32;
const HARD_STATE_BYTES: usize = 32;

impl Persisted {
    fn snapshot_index(&self) -> Index {
        self.snapshot.as_ref().map_or(0, |s| s.meta.index)
    }

    fn term_at(&self, index: Index) -> Option<u64> {
        if index == self.snapshot_index() {
            return self.snapshot.as_ref().map(|s| s.meta.term);
        }
        self.entries
            .iter()
            .find(|e| e.index == index)
            .map(|e| e.term)
    }

    fn append(&mut self, new: &[Entry]) {
        let Some(first) = new.first() else { return };
        self.entries.retain(|e| e.index < first.index);
        self.entries.extend_from_slice(new);
    }

    /// Persisted Raft state in bytes, as Lab 3's `persister.RaftStateSize()`.
    pub fn raft_state_bytes(&self) -> usize {
        HARD_STATE_BYTES
            + self
                .entries
                .iter()
                .map(|e| e.data.len() + ENTRY_OVERHEAD_BYTES)
                .sum::<usize>()
    }

    pub fn snapshot_bytes(&self) -> usize {
        self.snapshot.as_ref().map_or(0, |s| s.data.len())
    }
}

struct Live {
    raw: RawNode,
    server: KvServer,
}

pub struct NodeSlot {
    pub id: NodeId,
    incarnation: u64,
    pub persisted: Persisted,
    live: Option<Live>,
    pub max_raft_state_bytes_seen: usize,
    pub snapshots_installed: u64,
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

#[derive(Debug)]
enum Event {
    Tick {
        node: NodeId,
        incarnation: u64,
    },
    Raft {
        message: Message,
    },
    Request {
        to: NodeId,
        client: usize,
        request_id: RequestId,
        request: KvRequest,
    },
    Response {
        client: usize,
        from: NodeId,
        seq: u64,
        attempt: u32,
        response: KvResponse,
    },
    ClientSend {
        client: usize,
        send: Send,
    },
    ClientTimeout {
        client: usize,
        seq: u64,
        attempt: u32,
    },
    ClientNext {
        client: usize,
    },
}

/// Where a request came from, to route its reply.
#[derive(Clone, Copy, Debug)]
struct Route {
    client: usize,
    seq: u64,
    attempt: u32,
}

/// Counters of the run, for reports.
#[derive(Clone, Debug, Default)]
pub struct WorldStats {
    pub raft_messages: u64,
    pub raft_message_bytes: u64,
    pub client_messages: u64,
    pub crashes: u64,
    pub events: BTreeMap<&'static str, u64>,
}

pub struct World {
    pub seed: u64,
    pub now_us: Micros,
    rng: ChaCha8Rng,
    queue: BinaryHeap<Reverse<(Micros, u64)>>,
    events: BTreeMap<u64, Event>,
    next_event: u64,
    pub nodes: Vec<NodeSlot>,
    pub clients: Vec<ClientSlot>,
    pub net: NetConfig,
    /// Partition group per node (index id-1); equal groups can talk.
    groups: Vec<u32>,
    server_config: ServerConfig,
    clerk_config: ClerkConfig,
    routes: BTreeMap<RequestId, Route>,
    next_request_id: RequestId,
    next_process: i64,
    pub history: Recorder,
    pub errors: Vec<String>,
    pub stats: WorldStats,
}

impl World {
    /// `servers` nodes (ids 1..=servers), all started, fully connected, reliable.
    pub fn new(seed: u64, servers: usize, server_config: ServerConfig) -> World {
        let mut world = World {
            seed,
            now_us: 0,
            rng: ChaCha8Rng::seed_from_u64(seed),
            queue: BinaryHeap::new(),
            events: BTreeMap::new(),
            next_event: 0,
            nodes: Vec::new(),
            clients: Vec::new(),
            net: NetConfig::reliable(),
            groups: vec![0; servers],
            server_config,
            clerk_config: ClerkConfig {
                attempt_timeout: Duration::from_millis(300),
                op_timeout: None,
                backoff_min: Duration::from_millis(10),
                backoff_max: Duration::from_millis(200),
            },
            routes: BTreeMap::new(),
            next_request_id: 1,
            next_process: 0,
            history: Recorder::default(),
            errors: Vec::new(),
            stats: WorldStats::default(),
        };
        for id in 1..=servers as NodeId {
            world.nodes.push(NodeSlot {
                id,
                incarnation: 0,
                persisted: Persisted::default(),
                live: None,
                max_raft_state_bytes_seen: 0,
                snapshots_installed: 0,
            });
            world.start_node(id);
        }
        world
    }

    pub fn node_ids(&self) -> Vec<NodeId> {
        self.nodes.iter().map(|n| n.id).collect()
    }

    pub fn clerk_config(&self) -> &ClerkConfig {
        &self.clerk_config
    }

    /// Clerks added from now on use `config`.
    pub fn set_clerk_config(&mut self, config: ClerkConfig) {
        self.clerk_config = config;
    }

    fn schedule(&mut self, at: Micros, event: Event) {
        let id = self.next_event;
        self.next_event += 1;
        self.events.insert(id, event);
        self.queue.push(Reverse((at, id)));
    }

    fn slot(&mut self, id: NodeId) -> &mut NodeSlot {
        &mut self.nodes[(id - 1) as usize]
    }

    fn start_node(&mut self, id: NodeId) {
        let voters = self.node_ids_all();
        let mut config = Config::new(id, voters);
        config.seed = self.rng.gen();
        config.read_mode = match self.server_config.read_mode {
            kv::ReadMode::Lease => raft::ReadMode::Lease,
            _ => raft::ReadMode::ReadIndex,
        };
        let incarnation: u64 = self.rng.gen();
        let server_config = self.server_config.clone();
        let slot = self.slot(id);
        let persisted = slot.persisted.clone();
        let restored = Restored {
            hard_state: persisted.hard_state.clone(),
            snapshot: persisted.snapshot.as_ref().map(|s| s.meta.clone()),
            entries: persisted.entries.clone(),
            snapshot_data: persisted
                .snapshot
                .as_ref()
                .map(|s| s.data.clone())
                .unwrap_or_default(),
        };
        let raw = match RawNode::new(config, restored) {
            Ok(raw) => raw,
            Err(error) => panic!("node {id} failed to start: {error}"),
        };
        let mut server = KvServer::new(id, server_config, incarnation);
        if let Some(snapshot) = &persisted.snapshot {
            if let Err(error) = server.restore_snapshot(snapshot.meta.index, &snapshot.data) {
                panic!("node {id} cannot restore its snapshot: {error}");
            }
        }
        slot.incarnation = incarnation;
        slot.live = Some(Live { raw, server });
        let phase = self.rng.gen_range(0..TICK_US);
        let at = self.now_us + phase;
        self.schedule(
            at,
            Event::Tick {
                node: id,
                incarnation,
            },
        );
        self.drive(id);
    }

    fn node_ids_all(&self) -> Vec<NodeId> {
        (1..=self.groups.len() as NodeId).collect()
    }

    pub fn crash(&mut self, id: NodeId) {
        let slot = self.slot(id);
        if slot.live.take().is_some() {
            self.stats.crashes += 1;
        }
    }

    pub fn restart(&mut self, id: NodeId) {
        if self.slot(id).live.is_none() {
            self.start_node(id);
        }
    }

    pub fn is_up(&self, id: NodeId) -> bool {
        self.nodes[(id - 1) as usize].live.is_some()
    }

    /// Only nodes in the same group can talk; clients are not affected.
    pub fn partition(&mut self, groups: &[Vec<NodeId>]) {
        for (g, members) in groups.iter().enumerate() {
            for id in members {
                self.groups[(*id - 1) as usize] = g as u32;
            }
        }
    }

    pub fn heal(&mut self) {
        self.groups.iter_mut().for_each(|g| *g = 0);
    }

    /// The live leader with the highest term, if any.
    pub fn leader(&self) -> Option<NodeId> {
        self.nodes
            .iter()
            .filter_map(|n| n.live.as_ref().map(|l| l.raw.status()))
            .filter(|s| s.role == Role::Leader)
            .max_by_key(|s| s.term)
            .map(|s| s.id)
    }

    pub fn server(&self, id: NodeId) -> Option<&KvServer> {
        self.nodes[(id - 1) as usize]
            .live
            .as_ref()
            .map(|l| &l.server)
    }

    pub fn raft_counters(&self, id: NodeId) -> Option<raft::Counters> {
        self.nodes[(id - 1) as usize]
            .live
            .as_ref()
            .map(|l| l.raw.counters().clone())
    }

    fn linked(&self, a: NodeId, b: NodeId) -> bool {
        self.groups[(a - 1) as usize] == self.groups[(b - 1) as usize]
    }

    fn client_linked(&self, client: usize, node: NodeId) -> bool {
        self.clients[client].servers.contains(&node)
    }

    /// Delay for one message, or None if it is lost.
    fn plan_delay(&mut self) -> Option<Micros> {
        if self.net.drop_probability > 0.0 && self.rng.gen_bool(self.net.drop_probability) {
            return None;
        }
        Some(
            self.rng
                .gen_range(self.net.delay_us_min..=self.net.delay_us_max),
        )
    }

    // ---- clients -------------------------------------------------------

    /// A new client whose clerk knows every server but can reach only
    /// `reachable` (the lab's `makeClient(to)`).
    pub fn add_client_reaching(&mut self, reachable: Vec<NodeId>) -> usize {
        let all = self.node_ids();
        let client = self.add_client(all);
        self.clients[client].servers = reachable;
        client
    }

    /// A new client that can reach `servers` (its clerk's server list).
    pub fn add_client(&mut self, servers: Vec<NodeId>) -> usize {
        let index = self.clients.len();
        let client_id: u64 = self.rng.gen();
        let clerk_seed: u64 = self.rng.gen();
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
        self.clients[client].servers = servers;
    }

    pub fn client_idle(&self, client: usize) -> bool {
        self.clients[client].current.is_none()
    }

    /// Starts `op` on an idle client.
    pub fn start_op(&mut self, client: usize, op: Op) {
        let now = Duration::from_micros(self.now_us);
        let slot = &mut self.clients[client];
        assert!(slot.current.is_none(), "client {client} is busy");
        slot.ops_started += 1;
        slot.last_outcome = None;
        slot.current = Some((self.now_us, op.clone()));
        self.history.invoke(slot.process, &op, self.now_us);
        let send = match slot.clerk.begin(op, now) {
            Ok(send) => send,
            Err(busy) => panic!("clerk busy: {busy}"),
        };
        self.client_send(client, send);
    }

    /// Runs `op` on `client` and waits up to `timeout_us` for its outcome.
    pub fn op(&mut self, client: usize, op: Op, timeout_us: Micros) -> Option<Outcome> {
        self.start_op(client, op);
        let deadline = self.now_us + timeout_us;
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
            let now = self.now_us;
            self.schedule(now, Event::ClientNext { client });
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
        if send.send_at > Duration::from_micros(self.now_us) {
            // Round up: an event at the floor would find the send still early.
            let at = send.send_at.as_nanos().div_ceil(1_000) as Micros;
            self.schedule(at, Event::ClientSend { client, send });
            return;
        }
        let timeout_at = send.timeout_at.as_nanos().div_ceil(1_000) as Micros;
        self.schedule(
            timeout_at,
            Event::ClientTimeout {
                client,
                seq: send.request.seq,
                attempt: send.attempt,
            },
        );
        self.stats.client_messages += 1;
        let request_id = self.next_request_id;
        self.next_request_id += 1;
        self.routes.insert(
            request_id,
            Route {
                client,
                seq: send.request.seq,
                attempt: send.attempt,
            },
        );
        if !self.client_linked(client, send.to) {
            return;
        }
        if let Some(delay) = self.plan_delay() {
            let at = self.now_us + delay;
            self.schedule(
                at,
                Event::Request {
                    to: send.to,
                    client,
                    request_id,
                    request: send.request,
                },
            );
        }
    }

    fn client_step(&mut self, client: usize, step: Step) {
        match step {
            Step::Send(send) => self.client_send(client, send),
            Step::Ignored => {}
            Step::Done(outcome) => self.complete(client, outcome),
        }
    }

    fn complete(&mut self, client: usize, outcome: Outcome) {
        let now = self.now_us;
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
            self.schedule(now, Event::ClientNext { client });
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
            self.rng.gen_range(0..auto.key_count).to_string()
        } else {
            client.to_string()
        };
        let n = self.clients[client].ops_started;
        let value = format!("x {client} {n} y");
        let dice = self.rng.gen_range(0..100);
        let op = if dice < auto.append_percent {
            Op::Append { key, value }
        } else if dice < auto.append_percent + auto.put_percent {
            Op::Put { key, value }
        } else {
            Op::Get { key }
        };
        self.start_op(client, op);
    }

    // ---- nodes ---------------------------------------------------------

    /// Handles every Ready the node has, in the order `raft::Ready` prescribes.
    fn drive(&mut self, id: NodeId) {
        let voters = self.node_ids_all();
        loop {
            let slot = &mut self.nodes[(id - 1) as usize];
            let Some(live) = slot.live.as_mut() else {
                return;
            };
            if !live.raw.has_ready() {
                break;
            }
            let mut ready = live.raw.ready();
            // 1. persist
            if let Some(snapshot) = &ready.snapshot {
                slot.persisted.entries.clear();
                slot.persisted.snapshot = Some(snapshot.clone());
                slot.snapshots_installed += 1;
            }
            slot.persisted.append(&ready.entries);
            if let Some(hard_state) = &ready.hard_state {
                slot.persisted.hard_state = hard_state.clone();
            }
            // 3-4. restore, apply, reads
            if let Err(error) = live.server.on_raft_ready(&live.raw, &ready) {
                panic!("node {id}: {error}");
            }
            live.raw.advance();
            let size = slot.persisted.raft_state_bytes();
            match live.server.maybe_snapshot(&mut live.raw, size) {
                Ok(Some(taken)) => {
                    let term = slot.persisted.term_at(taken.index).unwrap_or_else(|| {
                        panic!("node {id}: no term for snapshot index {}", taken.index)
                    });
                    slot.persisted.entries.retain(|e| e.index > taken.index);
                    slot.persisted.snapshot = Some(Snapshot {
                        meta: SnapshotMeta {
                            index: taken.index,
                            term,
                            voters: voters.clone(),
                        },
                        data: taken.data,
                    });
                }
                Ok(None) => {}
                Err(error) => panic!("node {id}: {error}"),
            }
            let slot = &mut self.nodes[(id - 1) as usize];
            slot.max_raft_state_bytes_seen = slot
                .max_raft_state_bytes_seen
                .max(slot.persisted.raft_state_bytes());
            // 2. send (after persisting; handled after apply here since
            // delivery is scheduled in virtual time anyway)
            for message in std::mem::take(&mut ready.messages) {
                self.send_raft(message);
            }
            self.flush_replies(id);
        }
        self.flush_replies(id);
    }

    fn groups_voters(&self) -> Vec<NodeId> {
        self.node_ids_all()
    }

    fn flush_replies(&mut self, id: NodeId) {
        let Some(live) = self.nodes[(id - 1) as usize].live.as_mut() else {
            return;
        };
        for reply in live.server.take_replies() {
            let Some(route) = self.routes.remove(&reply.request_id) else {
                continue;
            };
            if !self.client_linked(route.client, id) {
                continue;
            }
            if let Some(delay) = self.plan_delay() {
                let at = self.now_us + delay;
                self.schedule(
                    at,
                    Event::Response {
                        client: route.client,
                        from: id,
                        seq: route.seq,
                        attempt: route.attempt,
                        response: reply.response,
                    },
                );
            }
        }
    }

    fn send_raft(&mut self, message: Message) {
        self.stats.raft_messages += 1;
        self.stats.raft_message_bytes += message.approx_size_bytes() as u64;
        if !self.linked(message.from, message.to) {
            return;
        }
        if let Some(delay) = self.plan_delay() {
            let at = self.now_us + delay;
            self.schedule(at, Event::Raft { message });
        }
    }

    // ---- the loop ------------------------------------------------------

    /// Runs events until virtual time `until_us` or `stop` holds (checked
    /// after each event). Returns whether `stop` held.
    pub fn run_until<F: Fn(&World) -> bool>(&mut self, until_us: Micros, stop: F) -> bool {
        loop {
            if stop(self) {
                return true;
            }
            let Some(Reverse((at, id))) = self.queue.peek().copied() else {
                self.now_us = until_us;
                return false;
            };
            if at > until_us {
                self.now_us = until_us;
                return stop(self);
            }
            self.queue.pop();
            self.now_us = at;
            if let Some(event) = self.events.remove(&id) {
                self.handle(event);
            }
        }
    }

    pub fn run_for(&mut self, duration_us: Micros) {
        let until = self.now_us + duration_us;
        self.run_until(until, |_| false);
    }

    fn handle(&mut self, event: Event) {
        let name = match &event {
            Event::Tick { .. } => "tick",
            Event::Raft { .. } => "raft",
            Event::Request { .. } => "request",
            Event::Response { .. } => "response",
            Event::ClientSend { .. } => "client_send",
            Event::ClientTimeout { .. } => "client_timeout",
            Event::ClientNext { .. } => "client_next",
        };
        *self.stats.events.entry(name).or_default() += 1;
        match event {
            Event::Tick { node, incarnation } => {
                let slot = self.slot(node);
                if slot.incarnation != incarnation {
                    return;
                }
                let Some(live) = slot.live.as_mut() else {
                    return;
                };
                live.raw.tick();
                live.server.tick(&live.raw);
                let at = self.now_us + TICK_US;
                self.schedule(at, Event::Tick { node, incarnation });
                self.drive(node);
            }
            Event::Raft { message } => {
                let to = message.to;
                if !self.linked(message.from, to) {
                    return;
                }
                let Some(live) = self.slot(to).live.as_mut() else {
                    return;
                };
                // Stale or unexpected messages are refused and counted by the core.
                let _ = live.raw.step(message);
                self.drive(to);
            }
            Event::Request {
                to,
                client,
                request_id,
                request,
            } => {
                if !self.client_linked(client, to) {
                    return;
                }
                let Some(live) = self.slot(to).live.as_mut() else {
                    return;
                };
                live.server
                    .handle_request(&mut live.raw, request_id, request);
                self.drive(to);
            }
            Event::Response {
                client,
                from,
                seq,
                attempt,
                response,
            } => {
                if !self.client_linked(client, from) {
                    return;
                }
                let now = Duration::from_micros(self.now_us);
                let step = self.clients[client]
                    .clerk
                    .on_response(seq, attempt, from, response, now);
                self.client_step(client, step);
            }
            Event::ClientSend { client, send } => {
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
            Event::ClientTimeout {
                client,
                seq,
                attempt,
            } => {
                let now = Duration::from_micros(self.now_us);
                let step = self.clients[client].clerk.on_timeout(seq, attempt, now);
                self.client_step(client, step);
            }
            Event::ClientNext { client } => self.next_auto_op(client),
        }
    }

    /// Uniform random number from the world's stream (for test scripts).
    pub fn random_below(&mut self, bound: u64) -> u64 {
        self.rng.gen_range(0..bound)
    }

    /// Random minority/majority split of all nodes.
    pub fn random_halves(&mut self) -> Vec<Vec<NodeId>> {
        let mut ids = self.node_ids();
        for i in (1..ids.len()).rev() {
            let j = self.rng.gen_range(0..=i);
            ids.swap(i, j);
        }
        let majority = ids.split_off(ids.len() / 2);
        vec![ids, majority]
    }
}
