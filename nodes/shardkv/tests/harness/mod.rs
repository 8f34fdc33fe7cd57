//! A deterministic world for the Lab 4B tests: several replica groups (each
//! a Raft group of `raft::RawNode`s hosting `ShardKvServer`s), the shard
//! controller, clerks, and a lossy network, all under virtual time from one
//! seed.
//!
//! Why not `sim::Sim`: a `Sim` hosts one Raft group whose nodes run a
//! `StateMachine` it applies itself; it has no way to host several groups
//! side by side, to run server logic that sends its own messages (pulls,
//! deletes, controller polls), or to deliver non-Raft messages between nodes.
//! This harness drives `RawNode`s directly through the crates' public APIs,
//! as the kv crate's Lab 3 harness does.
//!
//! Simplification: the controller is one in-world `ShardCtrler` (its own
//! replication is Lab 4A's subject, tested in the shardctrler crate); its
//! queries still cross the lossy network.

#![allow(dead_code)]

mod clients;
pub mod history;

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap};

use kv::Op;
use raft::{
    Config as RaftConfig, Entry, HardState, Index, Message, NodeId, RawNode, Restored, Role,
    Snapshot, SnapshotMeta,
};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use shardctrler::{Config, CtrlCommand, CtrlOp, Gid, ShardCtrler};
use shardkv::{
    ClerkAction, DeleteReply, DeleteRequest, Outbound, PullReply, PullRequest, ServerConfig,
    ShardClerk, ShardKvRequest, ShardKvResponse, ShardKvServer,
};

use history::Recorder;

pub type Micros = u64;
pub const MS: Micros = 1_000;
pub const SECOND: Micros = 1_000_000;
/// With 2-tick heartbeats and 10-20 tick elections: the lab's 100 ms
/// heartbeats and ~1 s election timeout.
pub const TICK_US: Micros = 50 * MS;
/// Pause of an auto client between operations.
pub const THINK_US: Micros = 10 * MS;
/// A clerk gives up on one attempt after this long and tries the next server.
pub const ATTEMPT_TIMEOUT_US: Micros = 300 * MS;

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

#[derive(Clone, Debug, Default)]
pub struct Persisted {
    pub hard_state: HardState,
    pub snapshot: Option<Snapshot>,
    pub entries: Vec<Entry>,
}

const ENTRY_OVERHEAD_BYTES: usize = 32;
const HARD_STATE_BYTES: usize = 32;

impl Persisted {
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
    fn term_at(&self, index: Index) -> Option<u64> {
        if let Some(s) = &self.snapshot {
            if s.meta.index == index {
                return Some(s.meta.term);
            }
        }
        self.entries
            .iter()
            .find(|e| e.index == index)
            .map(|e| e.term)
    }
}

struct Live {
    raw: RawNode,
    server: ShardKvServer,
}

pub struct NodeSlot {
    pub id: NodeId,
    pub gid: Gid,
    incarnation: u64,
    pub persisted: Persisted,
    live: Option<Live>,
    /// Test-only mutation for this node's server.
    pub keep_serving_handed_over_shards: bool,
}

/// What a clerk is doing.
pub struct ClientSlot {
    /// The crate's clerk makes the decisions; the slot records history.
    pub clerk: ShardClerk,
    pub process: i64,
    pub current: Option<Op>,
    /// Auto workload: append to a random key among `keys` every op.
    pub auto_keys: Option<Vec<String>>,
    pub stopping: bool,
    pub ops_done: usize,
    pub last_result: Option<String>,
    /// Successful appends of this client, per key, in order.
    pub appended: BTreeMap<String, Vec<String>>,
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
        attempt: u64,
        request: ShardKvRequest,
    },
    Response {
        client: usize,
        attempt: u64,
        response: ShardKvResponse,
    },
    ClientTimeout {
        client: usize,
        attempt: u64,
    },
    ClientResend {
        client: usize,
        attempt: u64,
    },
    ClientNext {
        client: usize,
    },
    ConfigToClient {
        client: usize,
        config: Config,
    },
    ConfigToNode {
        node: NodeId,
        incarnation: u64,
        config: Config,
    },
    CtrlQueryFromNode {
        node: NodeId,
        incarnation: u64,
        num: u64,
    },
    Pull {
        to: NodeId,
        from: NodeId,
        request: PullRequest,
    },
    PullReply {
        to: NodeId,
        reply: PullReply,
    },
    Delete {
        to: NodeId,
        from: NodeId,
        request: DeleteRequest,
    },
    DeleteReply {
        to: NodeId,
        reply: DeleteReply,
    },
}

pub struct World {
    pub seed: u64,
    pub now_us: Micros,
    rng: ChaCha8Rng,
    queue: BinaryHeap<Reverse<(Micros, u64)>>,
    events: BTreeMap<u64, Event>,
    next_event: u64,
    pub nodes: Vec<NodeSlot>,
    pub groups: BTreeMap<Gid, Vec<NodeId>>,
    pub ctrler: ShardCtrler,
    ctrl_seq: u64,
    pub clients: Vec<ClientSlot>,
    pub net: NetConfig,
    server_config: ServerConfig,
    next_process: i64,
    pub history: Recorder,
    /// Clerk-side counts by what happened (responses by kind, timeouts).
    pub counts: BTreeMap<String, u64>,
}

pub fn server_name(id: NodeId) -> String {
    format!("n{id}")
}

fn node_of(name: &str) -> Option<NodeId> {
    name.strip_prefix('n')?.parse().ok()
}

impl World {
    /// `groups` replica groups (gids 100, 101, ...) of `servers_per_group`
    /// nodes each, all started; none joined yet.
    pub fn new(
        seed: u64,
        groups: usize,
        servers_per_group: usize,
        server_config: ServerConfig,
    ) -> World {
        let mut world = World {
            seed,
            now_us: 0,
            rng: ChaCha8Rng::seed_from_u64(seed),
            queue: BinaryHeap::new(),
            events: BTreeMap::new(),
            next_event: 0,
            nodes: Vec::new(),
            groups: BTreeMap::new(),
            ctrler: ShardCtrler::new(),
            ctrl_seq: 0,
            clients: Vec::new(),
            net: NetConfig::reliable(),
            server_config,
            next_process: 0,
            history: Recorder::default(),
            counts: BTreeMap::new(),
        };
        for g in 0..groups {
            let gid = 100 + g as Gid;
            let mut members = Vec::new();
            for _ in 0..servers_per_group {
                let id = world.nodes.len() as NodeId + 1;
                world.nodes.push(NodeSlot {
                    id,
                    gid,
                    incarnation: 0,
                    persisted: Persisted::default(),
                    live: None,
                    keep_serving_handed_over_shards: false,
                });
                members.push(id);
            }
            world.groups.insert(gid, members.clone());
        }
        for id in 1..=world.nodes.len() as NodeId {
            world.start_node(id);
        }
        world
    }

    /// Uniform draw from the world's seeded stream (for test scripts).
    pub fn random_below(&mut self, bound: u64) -> u64 {
        self.rng.gen_range(0..bound)
    }

    pub fn gid(index: usize) -> Gid {
        100 + index as Gid
    }

    fn schedule(&mut self, at: Micros, event: Event) {
        let id = self.next_event;
        self.next_event += 1;
        self.events.insert(id, event);
        self.queue.push(Reverse((at, id)));
    }

    /// Schedules `event` after one network hop, unless the network loses it.
    fn hop(&mut self, event: Event) {
        if self.net.drop_probability > 0.0 && self.rng.gen_bool(self.net.drop_probability) {
            return;
        }
        let delay = self
            .rng
            .gen_range(self.net.delay_us_min..=self.net.delay_us_max);
        let at = self.now_us + delay;
        self.schedule(at, event);
    }

    fn slot(&mut self, id: NodeId) -> &mut NodeSlot {
        &mut self.nodes[(id - 1) as usize]
    }

    fn start_node(&mut self, id: NodeId) {
        let gid = self.nodes[(id - 1) as usize].gid;
        let voters = self.groups[&gid].clone();
        let mut config = RaftConfig::new(id, voters);
        config.seed = self.rng.gen();
        let incarnation: u64 = self.rng.gen();
        let mut server_config = self.server_config.clone();
        let slot = self.slot(id);
        server_config.keep_serving_handed_over_shards = slot.keep_serving_handed_over_shards;
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
            Err(error) => {
                let terms: Vec<(Index, u64)> = persisted
                    .entries
                    .iter()
                    .map(|e| (e.index, e.term))
                    .collect();
                let snapshot = persisted
                    .snapshot
                    .as_ref()
                    .map(|s| (s.meta.index, s.meta.term));
                panic!("node {id} failed to start: {error}; log (index, term) {terms:?}, snapshot {snapshot:?}")
            }
        };
        let mut server = ShardKvServer::new(id, gid, server_config);
        if let Some(snapshot) = &persisted.snapshot {
            if let Err(error) = server.restore_snapshot(snapshot.meta.index, &snapshot.data) {
                panic!("node {id} cannot restore its snapshot: {error}");
            }
        }
        slot.incarnation = incarnation;
        slot.live = Some(Live { raw, server });
        let at = self.now_us + self.rng.gen_range(0..TICK_US);
        self.schedule(
            at,
            Event::Tick {
                node: id,
                incarnation,
            },
        );
        self.drive(id);
    }

    pub fn crash(&mut self, id: NodeId) {
        self.slot(id).live = None;
    }

    pub fn restart(&mut self, id: NodeId) {
        if self.slot(id).live.is_none() {
            self.start_node(id);
        }
    }

    /// TEST-ONLY mutation: every server of every group keeps serving the
    /// shards it handed over (restarts the nodes to apply it; call first).
    pub fn keep_serving_handed_over_shards(&mut self) {
        for id in 1..=self.nodes.len() as NodeId {
            self.slot(id).keep_serving_handed_over_shards = true;
            self.crash(id);
            self.restart(id);
        }
    }

    /// Whether every live server of `gid` has applied configuration `num`
    /// with all its shards settled.
    pub fn group_settled_at(&self, gid: Gid, num: u64) -> bool {
        self.groups[&gid].iter().all(|id| {
            self.nodes[(*id - 1) as usize]
                .live
                .as_ref()
                .is_none_or(|l| l.server.state().config().num == num && l.server.state().settled())
        })
    }

    /// The lab's ShutdownGroup / StartGroup.
    pub fn shutdown_group(&mut self, gid: Gid) {
        for id in self.groups[&gid].clone() {
            self.crash(id);
        }
    }
    pub fn start_group(&mut self, gid: Gid) {
        for id in self.groups[&gid].clone() {
            self.restart(id);
        }
    }

    pub fn server(&self, id: NodeId) -> Option<&ShardKvServer> {
        self.nodes[(id - 1) as usize]
            .live
            .as_ref()
            .map(|l| &l.server)
    }

    pub fn leader_of(&self, gid: Gid) -> Option<NodeId> {
        self.groups[&gid]
            .iter()
            .filter_map(|id| {
                self.nodes[(*id - 1) as usize]
                    .live
                    .as_ref()
                    .map(|l| l.raw.status())
            })
            .filter(|s| s.role == Role::Leader)
            .max_by_key(|s| s.term)
            .map(|s| s.id)
    }

    /// One line per node: up, role, term, config, shard statuses (for
    /// failure messages).
    pub fn describe(&self) -> String {
        let mut out = format!(
            "at {} ms, controller config {}\n",
            self.now_us / MS,
            self.ctrler.latest().num
        );
        for slot in &self.nodes {
            let Some(live) = &slot.live else {
                out.push_str(&format!("  n{} gid {}: down\n", slot.id, slot.gid));
                continue;
            };
            let status = live.raw.status();
            let state = live.server.state();
            let shards: Vec<String> = state
                .held_shards()
                .iter()
                .map(|s| format!("{s}:{:?}", state.status(*s)))
                .collect();
            out.push_str(&format!(
                "  n{} gid {}: {:?} term {} commit {} config {} shards {}\n",
                slot.id,
                slot.gid,
                status.role,
                status.term,
                status.commit,
                state.config().num,
                shards.join(" ")
            ));
        }
        out
    }

    pub fn raft_status(&self, id: NodeId) -> Option<raft::Status> {
        self.nodes[(id - 1) as usize]
            .live
            .as_ref()
            .map(|l| l.raw.status())
    }

    /// Total persisted bytes (Raft state + snapshot) over every node.
    pub fn total_persisted_bytes(&self) -> usize {
        self.nodes
            .iter()
            .map(|n| n.persisted.raft_state_bytes() + n.persisted.snapshot_bytes())
            .sum()
    }

    // ---- controller (the test's mck) ----------------------------------

    fn ctrl(&mut self, op: CtrlOp) {
        self.ctrl_seq += 1;
        let command = CtrlCommand {
            client_id: u64::MAX,
            seq: self.ctrl_seq,
            op,
        };
        self.ctrler.apply(&command);
    }

    pub fn join(&mut self, gids: &[Gid]) {
        let groups = gids
            .iter()
            .map(|g| {
                (
                    *g,
                    self.groups[g].iter().map(|id| server_name(*id)).collect(),
                )
            })
            .collect();
        self.ctrl(CtrlOp::Join { groups });
    }

    pub fn leave(&mut self, gids: &[Gid]) {
        self.ctrl(CtrlOp::Leave {
            gids: gids.to_vec(),
        });
    }

    // ---- nodes ----------------------------------------------------------

    fn drive(&mut self, id: NodeId) {
        let gid = self.nodes[(id - 1) as usize].gid;
        let voters = self.groups[&gid].clone();
        loop {
            let slot = &mut self.nodes[(id - 1) as usize];
            let Some(live) = slot.live.as_mut() else {
                return;
            };
            if !live.raw.has_ready() {
                break;
            }
            let mut ready = live.raw.ready();
            if let Some(snapshot) = &ready.snapshot {
                // Keep only what the core still holds after installing it:
                // entries past the snapshot may be stale (older terms), and
                // keeping them made a restart inconsistent (SEED=2104).
                let last_index = live.raw.status().last_index;
                let snapshot_index = snapshot.meta.index;
                slot.persisted
                    .entries
                    .retain(|e| e.index > snapshot_index && e.index <= last_index);
                slot.persisted.snapshot = Some(snapshot.clone());
            }
            if let Some(first) = ready.entries.first() {
                let first_index = first.index;
                slot.persisted.entries.retain(|e| e.index < first_index);
                slot.persisted.entries.extend_from_slice(&ready.entries);
            }
            if let Some(hard_state) = &ready.hard_state {
                slot.persisted.hard_state = hard_state.clone();
            }
            if let Err(error) =
                live.server
                    .on_ready(&live.raw, ready.snapshot.as_ref(), &ready.committed_entries)
            {
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
            for message in std::mem::take(&mut ready.messages) {
                self.hop(Event::Raft { message });
            }
        }
        self.flush(id);
    }

    /// Routes the server's replies and outbounds.
    fn flush(&mut self, id: NodeId) {
        let slot = &mut self.nodes[(id - 1) as usize];
        let incarnation = slot.incarnation;
        let Some(live) = slot.live.as_mut() else {
            return;
        };
        let replies = live.server.take_replies();
        let outbound = live.server.take_outbound();
        for reply in replies {
            // request_id encodes (client, attempt).
            let client = (reply.request_id >> 40) as usize;
            let attempt = reply.request_id & ((1 << 40) - 1);
            self.hop(Event::Response {
                client,
                attempt,
                response: reply.response,
            });
        }
        for out in outbound {
            match out {
                Outbound::QueryConfig { num } => self.hop(Event::CtrlQueryFromNode {
                    node: id,
                    incarnation,
                    num,
                }),
                Outbound::Pull {
                    servers, request, ..
                } => {
                    for to in servers.iter().filter_map(|s| node_of(s)) {
                        self.hop(Event::Pull {
                            to,
                            from: id,
                            request: request.clone(),
                        });
                    }
                }
                Outbound::Delete {
                    servers, request, ..
                } => {
                    for to in servers.iter().filter_map(|s| node_of(s)) {
                        self.hop(Event::Delete {
                            to,
                            from: id,
                            request: request.clone(),
                        });
                    }
                }
            }
        }
    }

    fn live_mut(&mut self, id: NodeId) -> Option<&mut Live> {
        self.nodes
            .get_mut((id as usize).wrapping_sub(1))?
            .live
            .as_mut()
    }

    // ---- the loop ---------------------------------------------------------

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
                let Some(live) = self.live_mut(to) else {
                    return;
                };
                let _ = live.raw.step(message);
                self.drive(to);
            }
            Event::Request {
                to,
                client,
                attempt,
                request,
            } => {
                let Some(live) = self.live_mut(to) else {
                    return;
                };
                let request_id = ((client as u64) << 40) | attempt;
                live.server
                    .handle_request(&mut live.raw, request_id, request);
                self.drive(to);
            }
            Event::Response {
                client,
                attempt,
                response,
            } => self.on_response(client, attempt, response),
            Event::ClientTimeout { client, attempt } => {
                let action = self.clients[client].clerk.on_timeout(attempt);
                if action != ClerkAction::Ignored {
                    *self.counts.entry("timeout".into()).or_default() += 1;
                }
                self.perform(client, action);
            }
            Event::ClientResend { client, attempt } => {
                let action = self.clients[client].clerk.resend(attempt);
                self.perform(client, action);
            }
            Event::ClientNext { client } => self.next_auto(client),
            Event::ConfigToClient { client, config } => {
                let action = self.clients[client].clerk.on_config(config);
                self.perform(client, action);
            }
            Event::CtrlQueryFromNode {
                node,
                incarnation,
                num,
            } => {
                let config = self.ctrler.query(Some(num)).clone();
                self.hop(Event::ConfigToNode {
                    node,
                    incarnation,
                    config,
                });
            }
            Event::ConfigToNode {
                node,
                incarnation,
                config,
            } => {
                if self.nodes[(node - 1) as usize].incarnation != incarnation {
                    return;
                }
                let Some(live) = self.live_mut(node) else {
                    return;
                };
                live.server.on_config(&mut live.raw, config);
                self.drive(node);
            }
            Event::Pull { to, from, request } => {
                let Some(live) = self.live_mut(to) else {
                    return;
                };
                let reply = live.server.handle_pull(&request);
                self.hop(Event::PullReply { to: from, reply });
            }
            Event::PullReply { to, reply } => {
                let Some(live) = self.live_mut(to) else {
                    return;
                };
                live.server.on_pull_reply(&mut live.raw, reply);
                self.drive(to);
            }
            Event::Delete { to, from, request } => {
                let Some(live) = self.live_mut(to) else {
                    return;
                };
                let reply = live.server.handle_delete(&mut live.raw, &request);
                self.hop(Event::DeleteReply { to: from, reply });
                self.drive(to);
            }
            Event::DeleteReply { to, reply } => {
                let Some(live) = self.live_mut(to) else {
                    return;
                };
                live.server.on_delete_reply(&mut live.raw, reply);
                self.drive(to);
            }
        }
    }
}
