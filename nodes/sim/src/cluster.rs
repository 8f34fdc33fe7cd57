//! The simulator proper: N Raft nodes, each with a state machine and a
//! simulated disk, driven in one thread by an event queue under virtual time.
//!
//! One step = pop the earliest event (a node's clock tick or a message
//! arriving), feed it to the node, and handle the node's Ready in the order
//! written on `raft::Ready`: persist, send, restore/apply, serve reads,
//! advance. The invariant checker runs after every Ready. Faults and client
//! requests are applied between steps by the scenario code.

use crate::error::{SimError, Violation};
use crate::faults::Fault;
use crate::invariants::{AppliedRecord, Broken, Invariants};
use crate::machine::StateMachine;
use crate::network::{Links, NetConfig};
use crate::queue::EventQueue;
use crate::rng::SimRng;
use crate::storage::Persisted;
use crate::trace::{Trace, TraceKind};
use raft::{
    Config, EntryKind, Index, Message, MessageBody, NodeId, ProposeError, RawNode, ReadState,
    Restored, Role, Snapshot, SnapshotMeta, Status, Term,
};
use std::collections::HashMap;
use std::time::Duration;

/// How a simulation is set up. [`SimConfig::new`] gives the lab's timing:
/// 1 tick = 10 ms, heartbeats every 100 ms (the lab's "at most 10 per
/// second"), election timeouts of 0.5-1 s (the lab expects an election to
/// finish within its 1 s `RaftElectionTimeout`; with 1-2 s timeouts two
/// survivors of three on the 10%-loss network sometimes need more than the
/// lab's 10 s to agree, e.g. SEED=1264 of the lossy snapshot test).
#[derive(Clone, Debug)]
pub struct SimConfig {
    pub nodes: usize,
    pub seed: u64,
    /// Virtual time of one Raft tick.
    pub tick_us: u64,
    pub net: NetConfig,
    /// Template for every node's Raft configuration; `id`, `voters` and
    /// `seed` are filled in per node (and `seed` anew per incarnation).
    pub raft: Config,
    /// The application snapshots after this many entries applied since its
    /// last snapshot (`None`: never).
    pub snapshot_every_entries: Option<u64>,
    /// Keep every apply's output for [`Sim::take_outputs`] (services' clerks
    /// need them; the Raft tests do not).
    pub record_outputs: bool,
    /// Events kept for the failure trace.
    pub trace_capacity: usize,
    /// Check that a granted vote is on disk before the grant is sent. Only
    /// the mutation tests turn it off, to show that election safety alone
    /// also catches a forgotten vote.
    pub check_vote_durability: bool,
    /// `None`: every Ready is persisted at once, before its messages leave
    /// (the classic contract). `Some((min, max))`: the runtime of
    /// `raft::Config::async_storage_writes` (the node daemon's): a Ready's
    /// write becomes durable after a delay drawn from `[min, max]` µs, in
    /// order per node; the leader's Appends leave at once, other messages
    /// when their write is durable, committed entries are applied at once,
    /// and a crash loses the writes still in flight (a random prefix of them
    /// may have reached the disk). `SIM_PERSIST=async` (every seed) or
    /// `SIM_PERSIST=mixed` (odd seeds) turns it on in [`SimConfig::new`].
    pub async_persist_delay_us: Option<(u64, u64)>,
}

/// Write delays of the async persistence mode: from faster than any
/// message to slower than a reliable network's round trip, so acks, commits
/// and crashes interleave with unfinished writes in every order.
pub const ASYNC_PERSIST_DELAY_US: (u64, u64) = (0, 4_000);

/// Whether `SIM_PERSIST` asks for async persistence for this seed.
fn async_persist_from_env(seed: u64) -> bool {
    match std::env::var("SIM_PERSIST").as_deref() {
        Ok("async") => true,
        Ok("mixed") => seed % 2 == 1,
        _ => false,
    }
}

impl SimConfig {
    pub fn new(nodes: usize, seed: u64) -> Self {
        let mut raft = Config::new(1, vec![1]);
        raft.heartbeat_interval_ticks = 10;
        raft.election_timeout_ticks_min = 50;
        raft.election_timeout_ticks_max = 100;
        Self {
            nodes,
            seed,
            tick_us: 10_000,
            net: NetConfig::reliable(),
            raft,
            snapshot_every_entries: None,
            record_outputs: false,
            // SIM_TRACE=n keeps n events, and failure descriptions show them.
            trace_capacity: std::env::var("SIM_TRACE")
                .ok()
                .and_then(|v| v.parse().ok())
                .unwrap_or(40),
            check_vote_durability: true,
            async_persist_delay_us: async_persist_from_env(seed).then_some(ASYNC_PERSIST_DELAY_US),
        }
    }

    /// Turns on the async persistence mode with the default delays.
    pub fn with_async_persist(mut self) -> Self {
        self.async_persist_delay_us = Some(ASYNC_PERSIST_DELAY_US);
        self
    }
}

/// Why a client request could not be handed to a node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ClientError {
    /// The node is crashed (or no such node).
    NodeDown(NodeId),
    Raft(ProposeError),
}

impl std::fmt::Display for ClientError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ClientError::NodeDown(id) => write!(f, "node {id} is down"),
            ClientError::Raft(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for ClientError {}

/// One command applied on one node, with the state machine's output.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Applied<O> {
    pub index: Index,
    pub term: Term,
    pub output: O,
}

/// A ReadIndex read that a node may now serve: its state machine has applied
/// at least `index`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServedRead {
    pub ctx: Vec<u8>,
    pub index: Index,
    pub applied: Index,
    pub at_us: u64,
}

/// Counts of network traffic, for the lab's RPC-count and byte bounds.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NetStats {
    pub messages_sent: u64,
    pub bytes_sent: u64,
    pub messages_delivered: u64,
    /// Lost to a cut link or a crashed receiver.
    pub messages_cut: u64,
    /// Lost by the unreliable network.
    pub messages_lost: u64,
    pub messages_duplicated: u64,
    /// Messages the receiving core refused (stale, unexpected...).
    pub messages_refused: u64,
    pub sent_by_kind: HashMap<&'static str, u64>,
}

enum Event {
    Tick {
        node: usize,
        incarnation: u64,
    },
    Deliver(Message),
    /// Handle the node's Ready after client requests (proposals, reads,
    /// transfers) made at this instant: requests arriving together share
    /// one Ready, as in a runtime loop that drains its request queue first.
    Flush {
        node: usize,
        incarnation: u64,
    },
    /// The oldest write in flight on the node is durable (async mode).
    WriteDone {
        node: usize,
        incarnation: u64,
    },
}

/// One Ready's writes on their way to disk (async mode), with the messages
/// that wait for them.
#[derive(Debug)]
struct PendingWrite {
    snapshot: Option<Snapshot>,
    entries: Vec<raft::Entry>,
    hard_state: Option<raft::HardState>,
    /// A snapshot the application took (`take_snapshot`): queued behind the
    /// writes of the entries it covers, as the node daemon's storage thread
    /// does.
    compact: Option<Snapshot>,
    messages: Vec<Message>,
    /// What to report to `RawNode::on_persisted` once durable.
    point: Option<(Index, Term)>,
}

struct Node<S: StateMachine> {
    id: NodeId,
    raft: Option<RawNode>,
    machine: Option<S>,
    disk: Persisted,
    /// Async mode: the disk plus every write in flight, i.e. what the node
    /// has asked to store (None in the classic mode, where it is `disk`).
    written: Option<Persisted>,
    pending_writes: std::collections::VecDeque<PendingWrite>,
    /// When the newest write in flight completes (writes finish in order).
    last_write_done_us: u64,
    /// This node's own write delay, overriding the config's (a slow disk).
    write_delay_us: Option<(u64, u64)>,
    /// Bumped on every crash so stale tick events are ignored.
    incarnation: u64,
    applied: Index,
    /// Highest index this node ever applied, across incarnations (what the
    /// lab tester's `logs` remember).
    max_applied: Index,
    commit_seen: Index,
    role_seen: Role,
    crash_before_persist: bool,
    flush_scheduled: bool,
    pending_reads: Vec<ReadState>,
    served_reads: Vec<ServedRead>,
    outputs: Vec<Applied<<S as StateMachine>::Output>>,
}

impl<S: StateMachine> Node<S> {
    fn is_up(&self) -> bool {
        self.raft.is_some()
    }

    /// The log as the node's own writes have shaped it (durable or not).
    fn written(&self) -> &Persisted {
        self.written.as_ref().unwrap_or(&self.disk)
    }
}

/// A deterministic cluster of Raft nodes running state machine `S`.
pub struct Sim<S: StateMachine> {
    config: SimConfig,
    ids: Vec<NodeId>,
    nodes: Vec<Node<S>>,
    factory: Box<dyn FnMut(NodeId) -> S>,
    queue: EventQueue<Event>,
    now_us: u64,
    net_rng: SimRng,
    node_rng: SimRng,
    scenario_rng: SimRng,
    client_rng: SimRng,
    /// Write delays and which in-flight writes survive a crash (async mode).
    disk_rng: SimRng,
    links: Links,
    invariants: Invariants,
    /// ctx of each outstanding read -> highest index known committed anywhere
    /// when it was asked: a linearizable read must reflect at least that.
    read_floor: HashMap<Vec<u8>, Index>,
    trace: Trace,
    violation: Option<SimError>,
    stats: NetStats,
    events_processed: u64,
    /// Latest arrival time scheduled per link `(from - 1) * n + (to - 1)`,
    /// to keep links FIFO when the network asks for it.
    last_arrival_us: Vec<u64>,
}

impl<S: StateMachine> Sim<S> {
    /// Starts `config.nodes` fresh nodes with ids `1..=nodes`; `factory`
    /// builds an empty state machine for a node (at start and on restart).
    pub fn new(
        config: SimConfig,
        factory: impl FnMut(NodeId) -> S + 'static,
    ) -> Result<Self, SimError> {
        let mut root = SimRng::new(config.seed);
        let config_nodes = config.nodes;
        let ids: Vec<NodeId> = (1..=config.nodes as NodeId).collect();
        let nodes = ids
            .iter()
            .map(|&id| Node {
                id,
                raft: None,
                machine: None,
                disk: Persisted::default(),
                written: None,
                pending_writes: Default::default(),
                last_write_done_us: 0,
                write_delay_us: None,
                incarnation: 0,
                applied: 0,
                max_applied: 0,
                commit_seen: 0,
                role_seen: Role::Follower,
                crash_before_persist: false,
                flush_scheduled: false,
                pending_reads: Vec::new(),
                served_reads: Vec::new(),
                outputs: Vec::new(),
            })
            .collect();
        let mut sim = Sim {
            links: Links::fully_connected(config.nodes),
            trace: Trace::new(config.trace_capacity),
            net_rng: root.fork(1),
            node_rng: root.fork(2),
            scenario_rng: root.fork(3),
            client_rng: root.fork(4),
            disk_rng: root.fork(5),
            config,
            ids,
            nodes,
            factory: Box::new(factory),
            queue: EventQueue::default(),
            now_us: 0,
            invariants: Invariants::default(),
            read_floor: HashMap::new(),
            violation: None,
            stats: NetStats::default(),
            events_processed: 0,
            last_arrival_us: vec![0; config_nodes * config_nodes],
        };
        for at in 0..sim.nodes.len() {
            sim.start_node(at)?;
        }
        Ok(sim)
    }

    // ----- time -------------------------------------------------------------

    /// Virtual time since the start, in microseconds.
    pub fn now_us(&self) -> u64 {
        self.now_us
    }

    pub fn now(&self) -> Duration {
        Duration::from_micros(self.now_us)
    }

    /// Runs every event up to `now + duration`. Stops early (with the error)
    /// if an invariant breaks.
    pub fn run_for(&mut self, duration: Duration) -> Result<(), SimError> {
        self.run_until(duration, |_| false).map(|_| ())
    }

    /// Runs until `done(self)` holds (checked before the first event and
    /// after each one) or `timeout` of virtual time passes. Returns whether
    /// `done` held.
    pub fn run_until(
        &mut self,
        timeout: Duration,
        mut done: impl FnMut(&Self) -> bool,
    ) -> Result<bool, SimError> {
        let deadline_us = self.now_us.saturating_add(timeout.as_micros() as u64);
        loop {
            if let Some(error) = &self.violation {
                return Err(error.clone());
            }
            if done(self) {
                return Ok(true);
            }
            match self.queue.peek_time_us() {
                Some(at_us) if at_us <= deadline_us => {
                    if let Some((at_us, event)) = self.queue.pop() {
                        self.now_us = at_us;
                        self.process(event);
                    }
                }
                _ => {
                    self.now_us = deadline_us;
                    return Ok(false);
                }
            }
        }
    }

    /// Events handled so far (ticks and deliveries), for speed measurements.
    pub fn events_processed(&self) -> u64 {
        self.events_processed
    }

    /// Randomness for the scenario (which node to crash, what to propose),
    /// derived from the seed and independent of the network's draws.
    pub fn rng(&mut self) -> &mut SimRng {
        &mut self.scenario_rng
    }

    // ----- clients ----------------------------------------------------------

    /// `Start(command)` on `node`: the index it would take if this node is
    /// the leader and stays so.
    pub fn propose(&mut self, node: NodeId, command: Vec<u8>) -> Result<Index, ClientError> {
        let at = self.slot(node).ok_or(ClientError::NodeDown(node))?;
        let raft = self.nodes[at]
            .raft
            .as_mut()
            .ok_or(ClientError::NodeDown(node))?;
        let index = raft.propose(command).map_err(ClientError::Raft)?;
        self.trace
            .record(self.now_us, node, TraceKind::Propose { index });
        self.schedule_flush(at);
        Ok(index)
    }

    /// Asks `node` for a linearizable read; the answer shows in
    /// [`Sim::take_reads`] (if it ever comes). `ctx` should be unique.
    pub fn read_index(&mut self, node: NodeId, ctx: Vec<u8>) -> Result<(), ClientError> {
        let at = self.slot(node).ok_or(ClientError::NodeDown(node))?;
        let floor = self.invariants.max_committed_index();
        let raft = self.nodes[at]
            .raft
            .as_mut()
            .ok_or(ClientError::NodeDown(node))?;
        raft.read_index(ctx.clone()).map_err(ClientError::Raft)?;
        self.read_floor.insert(ctx, floor);
        self.schedule_flush(at);
        Ok(())
    }

    pub fn transfer_leadership(&mut self, node: NodeId, to: NodeId) -> Result<(), ClientError> {
        let at = self.slot(node).ok_or(ClientError::NodeDown(node))?;
        let raft = self.nodes[at]
            .raft
            .as_mut()
            .ok_or(ClientError::NodeDown(node))?;
        raft.transfer_leadership(to).map_err(ClientError::Raft)?;
        self.schedule_flush(at);
        Ok(())
    }

    /// One hop of a client request or reply between a clerk and `node`
    /// under the current network: the delay if it arrives, `None` if it is
    /// lost, `node` is down or disconnected (labrpc: a clerk's RPC to a
    /// disconnected server fails). Services' clerks use it to put their RPCs
    /// through the same faults as Raft's messages.
    pub fn client_hop(&mut self, node: NodeId) -> Option<Duration> {
        if !self.is_up(node) || !self.links.is_connected(node) {
            return None;
        }
        match self.config.net.plan(&mut self.client_rng) {
            [Some(delay_us), _] => Some(Duration::from_micros(delay_us)),
            [None, _] => None,
        }
    }

    /// Reads `node` may serve since the last call.
    pub fn take_reads(&mut self, node: NodeId) -> Vec<ServedRead> {
        self.slot(node)
            .map(|at| std::mem::take(&mut self.nodes[at].served_reads))
            .unwrap_or_default()
    }

    /// Outputs of commands `node` applied since the last call (only with
    /// `record_outputs`).
    pub fn take_outputs(&mut self, node: NodeId) -> Vec<Applied<S::Output>> {
        self.slot(node)
            .map(|at| std::mem::take(&mut self.nodes[at].outputs))
            .unwrap_or_default()
    }

    // ----- faults -----------------------------------------------------------

    pub fn apply_fault(&mut self, fault: &Fault) -> Result<(), SimError> {
        match fault {
            Fault::Crash(node) => self.crash(*node),
            Fault::CrashBeforePersist(node) => self.crash_before_persist(*node),
            Fault::Restart(node) => self.restart(*node)?,
            Fault::Disconnect(node) => self.disconnect(*node),
            Fault::Connect(node) => self.connect(*node),
            Fault::Partition(groups) => self.partition(groups),
            Fault::Heal => self.heal(),
            Fault::SetNetwork(net) => self.set_network(net.clone()),
        }
        Ok(())
    }

    /// Stops `node`. Its disk keeps what earlier Readies persisted; its
    /// volatile state (Raft's memory, the state machine, pending reads) is
    /// gone. Messages already sent stay in flight.
    pub fn crash(&mut self, node: NodeId) {
        if let Some(at) = self.slot(node) {
            self.trace.record(self.now_us, node, TraceKind::Crash);
            self.kill(at);
        }
    }

    /// Crashes `node` when it next has a Ready, before persisting it.
    pub fn crash_before_persist(&mut self, node: NodeId) {
        if let Some(at) = self.slot(node) {
            if self.nodes[at].is_up() {
                self.nodes[at].crash_before_persist = true;
            }
        }
    }

    /// Async mode: gives `node` a disk whose writes take `[min, max]` µs
    /// (None: the config's delays again).
    pub fn set_write_delay_us(&mut self, node: NodeId, delay_us: Option<(u64, u64)>) {
        if let Some(at) = self.slot(node) {
            self.nodes[at].write_delay_us = delay_us;
        }
    }

    /// Writes `node` has in flight (async mode).
    pub fn writes_in_flight(&self, node: NodeId) -> usize {
        self.slot(node)
            .map_or(0, |at| self.nodes[at].pending_writes.len())
    }

    /// Crashes `node` and loses every write it has in flight (a crash
    /// before the OS wrote any of them back); [`Sim::crash`] keeps a random
    /// prefix of them.
    pub fn crash_losing_writes(&mut self, node: NodeId) {
        if let Some(at) = self.slot(node) {
            self.nodes[at].pending_writes.clear();
            self.crash(node);
        }
    }

    /// Starts a crashed `node` from its disk. If it is up, only cancels a
    /// pending [`Sim::crash_before_persist`], so "restart everyone" before a
    /// liveness phase leaves every node up.
    pub fn restart(&mut self, node: NodeId) -> Result<(), SimError> {
        match self.slot(node) {
            Some(at) if self.nodes[at].is_up() => {
                self.nodes[at].crash_before_persist = false;
                Ok(())
            }
            Some(at) => {
                self.trace.record(self.now_us, node, TraceKind::Restart);
                self.start_node(at)
            }
            _ => Ok(()),
        }
    }

    pub fn disconnect(&mut self, node: NodeId) {
        self.trace
            .record(self.now_us, node, TraceKind::Fault("disconnect"));
        self.links.disconnect(node);
    }

    pub fn connect(&mut self, node: NodeId) {
        self.trace
            .record(self.now_us, node, TraceKind::Fault("connect"));
        self.links.connect(node);
    }

    pub fn partition(&mut self, groups: &[Vec<NodeId>]) {
        self.trace
            .record(self.now_us, 0, TraceKind::Fault("partition"));
        self.links.partition(groups);
    }

    /// Cuts or restores one directed link.
    pub fn set_link(&mut self, from: NodeId, to: NodeId, works: bool) {
        self.links.set_link(from, to, works);
    }

    pub fn heal(&mut self) {
        self.trace.record(self.now_us, 0, TraceKind::Fault("heal"));
        self.links.heal();
    }

    pub fn set_network(&mut self, net: NetConfig) {
        self.config.net = net;
    }

    pub fn network(&self) -> &NetConfig {
        &self.config.net
    }

    pub fn is_connected(&self, node: NodeId) -> bool {
        self.links.is_connected(node)
    }

    // ----- observation ------------------------------------------------------

    pub fn ids(&self) -> &[NodeId] {
        &self.ids
    }

    pub fn config(&self) -> &SimConfig {
        &self.config
    }

    pub fn is_up(&self, node: NodeId) -> bool {
        self.slot(node).is_some_and(|at| self.nodes[at].is_up())
    }

    /// Nodes that are down.
    pub fn crashed(&self) -> Vec<NodeId> {
        self.nodes
            .iter()
            .filter(|n| !n.is_up())
            .map(|n| n.id)
            .collect()
    }

    pub fn status(&self, node: NodeId) -> Option<Status> {
        let at = self.slot(node)?;
        self.nodes[at].raft.as_ref().map(RawNode::status)
    }

    pub fn raft(&self, node: NodeId) -> Option<&RawNode> {
        self.nodes.get(self.slot(node)?)?.raft.as_ref()
    }

    /// Live nodes that believe they lead, with their terms.
    pub fn leaders(&self) -> Vec<(NodeId, Term)> {
        self.nodes
            .iter()
            .filter_map(|n| n.raft.as_ref().map(|r| (n.id, r.status())))
            .filter(|(_, s)| s.role == Role::Leader)
            .map(|(id, s)| (id, s.term))
            .collect()
    }

    pub fn machine(&self, node: NodeId) -> Option<&S> {
        self.nodes.get(self.slot(node)?)?.machine.as_ref()
    }

    /// What `node` has on disk (kept across crashes).
    pub fn persisted(&self, node: NodeId) -> Option<&Persisted> {
        Some(&self.nodes.get(self.slot(node)?)?.disk)
    }

    /// What `node`'s current incarnation has applied.
    pub fn applied_index(&self, node: NodeId) -> Index {
        self.slot(node).map_or(0, |at| self.nodes[at].applied)
    }

    /// What the cluster applied at `index`, if anyone did.
    pub fn applied_at(&self, index: Index) -> Option<&AppliedRecord> {
        self.invariants.applied_at(index)
    }

    pub fn max_applied_index(&self) -> Index {
        self.invariants.max_applied_index()
    }

    /// The lab's `nCommitted(index)`: how many nodes (live or crashed) have
    /// ever applied `index`, and what was applied there.
    pub fn n_committed(&self, index: Index) -> (usize, Option<&AppliedRecord>) {
        let count = self.nodes.iter().filter(|n| n.max_applied >= index).count();
        (count, self.invariants.applied_at(index))
    }

    pub fn stats(&self) -> &NetStats {
        &self.stats
    }

    /// One line per node (role, term, leader, commit, applied, log bounds,
    /// connectivity; the leader's view of each follower), for failure
    /// messages.
    pub fn describe(&self) -> String {
        let mut out = String::new();
        for node in &self.nodes {
            let connected = self.links.is_connected(node.id);
            match node.raft.as_ref().map(RawNode::status) {
                None => out.push_str(&format!("  n{}: down\n", node.id)),
                Some(s) => {
                    out.push_str(&format!(
                        "  n{}: {:?} term {} leader {:?} commit {} applied {} log {}..={} snapshot {} connected {}\n",
                        node.id, s.role, s.term, s.leader, s.commit, node.applied, s.first_index,
                        s.last_index, s.snapshot_index, connected
                    ));
                    for f in &s.followers {
                        out.push_str(&format!(
                            "      -> n{}: match {} next {} {:?} inflight {} active {}\n",
                            f.id,
                            f.match_index,
                            f.next_index,
                            f.state,
                            f.inflight_messages,
                            f.recent_active
                        ));
                    }
                }
            }
        }
        if std::env::var("SIM_TRACE").is_ok() {
            for line in self.trace.lines() {
                out.push_str(&format!("  {line}\n"));
            }
        }
        out
    }

    /// The last events (see `SimConfig::trace_capacity`), oldest first.
    pub fn trace_lines(&self) -> Vec<String> {
        self.trace.lines()
    }

    /// The violation or panic that stopped the run, if any.
    pub fn failure(&self) -> Option<&SimError> {
        self.violation.as_ref()
    }

    // ----- machinery --------------------------------------------------------

    fn slot(&self, node: NodeId) -> Option<usize> {
        let at = usize::try_from(node).ok()?.checked_sub(1)?;
        (at < self.nodes.len()).then_some(at)
    }

    fn start_node(&mut self, at: usize) -> Result<(), SimError> {
        let mut config = self.config.raft.clone();
        config.id = self.nodes[at].id;
        config.voters = self.ids.clone();
        config.seed = self.node_rng.next_u64();
        config.async_storage_writes = self.config.async_persist_delay_us.is_some();
        let disk = &self.nodes[at].disk;
        let restored = Restored {
            hard_state: disk.hard_state.clone(),
            snapshot: disk.snapshot.as_ref().map(|s| s.meta.clone()),
            entries: disk.entries.clone(),
            snapshot_data: disk
                .snapshot
                .as_ref()
                .map(|s| s.data.clone())
                .unwrap_or_default(),
        };
        let id = self.nodes[at].id;
        let raft = RawNode::new(config, restored)
            .map_err(|e| SimError::Setup(format!("node {id} cannot start: {e}")))?;
        let mut machine = (self.factory)(self.nodes[at].id);
        let config_async = self.config.async_persist_delay_us.is_some();
        let node = &mut self.nodes[at];
        node.applied = 0;
        if let Some(snapshot) = &node.disk.snapshot {
            machine.restore(&snapshot.data);
            node.applied = snapshot.meta.index;
        }
        node.raft = Some(raft);
        node.machine = Some(machine);
        node.pending_writes.clear();
        node.written = config_async.then(|| node.disk.clone());
        node.last_write_done_us = self.now_us;
        node.commit_seen = 0;
        node.role_seen = Role::Follower;
        node.crash_before_persist = false;
        let incarnation = node.incarnation;
        let phase_us = self.node_rng.below(self.config.tick_us);
        self.queue.push(
            self.now_us + phase_us,
            Event::Tick {
                node: at,
                incarnation,
            },
        );
        self.handle_ready(at);
        Ok(())
    }

    /// Queues a Ready handling for `nodes[at]` at the current instant,
    /// once however many requests arrive before it runs.
    fn schedule_flush(&mut self, at: usize) {
        let node = &mut self.nodes[at];
        if !node.flush_scheduled {
            node.flush_scheduled = true;
            let incarnation = node.incarnation;
            self.queue.push(
                self.now_us,
                Event::Flush {
                    node: at,
                    incarnation,
                },
            );
        }
    }

    fn kill(&mut self, at: usize) {
        // Async mode: the OS may have written some of the writes in flight
        // before the crash; recovery keeps whole batches in order, so a
        // random prefix of them survives, without their messages.
        let pending = self.nodes[at].pending_writes.len() as u64;
        if pending > 0 {
            let survivors = self.disk_rng.below(pending + 1);
            for _ in 0..survivors {
                if let Some(write) = self.nodes[at].pending_writes.pop_front() {
                    if let Err(broken) = self.make_durable(at, &write) {
                        self.fail(broken);
                    }
                }
            }
        }
        let node = &mut self.nodes[at];
        node.pending_writes.clear();
        if node.written.is_some() {
            node.written = Some(node.disk.clone());
        }
        node.flush_scheduled = false;
        node.raft = None;
        node.machine = None;
        node.incarnation += 1;
        node.pending_reads.clear();
        node.crash_before_persist = false;
    }

    fn process(&mut self, event: Event) {
        self.events_processed += 1;
        match event {
            Event::Tick {
                node: at,
                incarnation,
            } => {
                let node = &mut self.nodes[at];
                if node.incarnation != incarnation {
                    return;
                }
                let Some(raft) = node.raft.as_mut() else {
                    return;
                };
                raft.tick();
                let next = self.now_us + self.config.tick_us;
                self.queue.push(
                    next,
                    Event::Tick {
                        node: at,
                        incarnation,
                    },
                );
                if raft.has_ready() {
                    self.handle_ready(at);
                }
            }
            Event::Deliver(message) => self.deliver(message),
            Event::Flush {
                node: at,
                incarnation,
            } => {
                if self.nodes[at].incarnation == incarnation {
                    self.nodes[at].flush_scheduled = false;
                    self.handle_ready(at);
                }
            }
            Event::WriteDone {
                node: at,
                incarnation,
            } => {
                if self.nodes[at].incarnation == incarnation {
                    self.complete_write(at);
                }
            }
        }
    }

    fn deliver(&mut self, message: Message) {
        let Some(at) = self.slot(message.to) else {
            return;
        };
        if !self.links.can_deliver(message.from, message.to) || !self.nodes[at].is_up() {
            self.stats.messages_cut += 1;
            self.trace_dropped(&message, true);
            return;
        }
        self.stats.messages_delivered += 1;
        self.trace.record(
            self.now_us,
            message.to,
            TraceKind::Deliver {
                from: message.from,
                term: message.term,
                kind: message.kind(),
            },
        );
        if let Some(raft) = self.nodes[at].raft.as_mut() {
            if raft.step(message).is_err() {
                self.stats.messages_refused += 1;
            }
        }
        self.handle_ready(at);
    }

    fn send(&mut self, message: Message) {
        self.stats.messages_sent += 1;
        self.stats.bytes_sent += message.approx_size_bytes() as u64;
        *self.stats.sent_by_kind.entry(message.kind()).or_insert(0) += 1;
        if !self.links.can_deliver(message.from, message.to) {
            self.stats.messages_cut += 1;
            self.trace_dropped(&message, true);
            return;
        }
        match self.config.net.plan(&mut self.net_rng) {
            [None, _] => {
                self.stats.messages_lost += 1;
                self.trace_dropped(&message, false);
            }
            [Some(first), second] => {
                let link = self.link_slot(message.from, message.to);
                let first_us = self.arrival_us(link, first);
                if let Some(again) = second {
                    self.stats.messages_duplicated += 1;
                    let again_us = self.arrival_us(link, again);
                    self.queue.push(again_us, Event::Deliver(message.clone()));
                }
                self.queue.push(first_us, Event::Deliver(message));
            }
        }
    }

    fn trace_dropped(&mut self, message: &Message, cut: bool) {
        self.trace.record(
            self.now_us,
            message.to,
            TraceKind::Dropped {
                from: message.from,
                to: message.to,
                kind: message.kind(),
                cut,
            },
        );
    }

    fn link_slot(&self, from: NodeId, to: NodeId) -> Option<usize> {
        let n = self.nodes.len();
        let f = self.slot(from)?;
        let t = self.slot(to)?;
        Some(f * n + t)
    }

    /// When a message sent now with `delay_us` arrives: no earlier than the
    /// previous message on a FIFO link.
    fn arrival_us(&mut self, link: Option<usize>, delay_us: u64) -> u64 {
        let mut at_us = self.now_us + delay_us;
        if self.config.net.fifo_links {
            if let Some(last) = link.and_then(|l| self.last_arrival_us.get_mut(l)) {
                at_us = at_us.max(*last);
                *last = at_us;
            }
        }
        at_us
    }

    fn fail(&mut self, (invariant, detail): Broken) {
        if self.violation.is_some() {
            return;
        }
        self.violation = Some(SimError::Invariant(Box::new(Violation {
            at_us: self.now_us,
            invariant,
            detail,
            trace: self.trace.lines(),
        })));
    }

    /// Handles every Ready `nodes[at]` has, in the documented order, then
    /// checks the invariants.
    fn handle_ready(&mut self, at: usize) {
        let mut snapshot_wanted = false;
        loop {
            if self.violation.is_some() {
                return;
            }
            let node = &mut self.nodes[at];
            let id = node.id;
            let Some(raft) = node.raft.as_mut() else {
                return;
            };
            if !raft.has_ready() {
                break;
            }
            let ready = raft.ready();
            if node.crash_before_persist {
                self.trace
                    .record(self.now_us, id, TraceKind::CrashBeforePersist);
                self.kill(at);
                return;
            }
            if self.config.async_persist_delay_us.is_some() {
                // The leader's Appends go out now; the write starts and the
                // other messages wait for it (`complete_write`).
                if let Err(broken) = self.send_all(at, ready.early_messages) {
                    self.fail(broken);
                    return;
                }
                let point = ready
                    .entries
                    .last()
                    .map(|e| (e.index, e.term))
                    .or_else(|| ready.snapshot.as_ref().map(|s| (s.meta.index, s.meta.term)));
                let write = PendingWrite {
                    snapshot: ready.snapshot.clone(),
                    entries: ready.entries,
                    hard_state: ready.hard_state,
                    compact: None,
                    messages: ready.messages,
                    point,
                };
                if let Err(broken) = self.start_write(at, write) {
                    self.fail(broken);
                    return;
                }
            } else {
                // 1. Persist snapshot, entries, hard state: one atomic fsync.
                if let Err(broken) =
                    self.persist(at, &ready.snapshot, &ready.entries, &ready.hard_state)
                {
                    self.fail(broken);
                    return;
                }
                // 2. Send.
                if let Err(broken) = self.send_all(at, ready.messages) {
                    self.fail(broken);
                    return;
                }
            }
            // 3. Restore, then apply.
            if let Some(snapshot) = &ready.snapshot {
                let node = &mut self.nodes[at];
                if let Some(machine) = node.machine.as_mut() {
                    machine.restore(&snapshot.data);
                }
                node.applied = snapshot.meta.index;
                node.max_applied = node.max_applied.max(node.applied);
            }
            for entry in &ready.committed_entries {
                if let Err(broken) = self.apply(at, entry) {
                    self.fail(broken);
                    return;
                }
            }
            // 4. Reads.
            let node = &mut self.nodes[at];
            node.pending_reads.extend(ready.read_states);
            if let Err(broken) = self.serve_reads(at) {
                self.fail(broken);
                return;
            }
            // 5. Advance.
            let node = &mut self.nodes[at];
            if let Some(raft) = node.raft.as_mut() {
                raft.advance();
            }
            if let Some(every) = self.config.snapshot_every_entries {
                let node = &self.nodes[at];
                snapshot_wanted |= node.applied >= node.written().snapshot_index() + every;
            }
            if let Err(broken) = self.observe(at) {
                self.fail(broken);
                return;
            }
        }
        if snapshot_wanted {
            self.take_snapshot(at);
        }
    }

    /// Sends `messages` from `nodes[at]`, checking first that what each
    /// promises (a vote, an acknowledged entry) is on its disk.
    fn send_all(&mut self, at: usize, messages: Vec<Message>) -> Result<(), Broken> {
        let id = self.nodes[at].id;
        for message in messages {
            self.check_vote_durable(at, &message)?;
            self.trace.record(
                self.now_us,
                id,
                TraceKind::Send {
                    to: message.to,
                    term: message.term,
                    kind: message.kind(),
                },
            );
            self.send(message);
        }
        Ok(())
    }

    /// Async mode: queues a write behind the node's writes in flight; it
    /// becomes durable after a random delay, never before an earlier one.
    fn start_write(&mut self, at: usize, write: PendingWrite) -> Result<(), Broken> {
        let (low, high) = self.nodes[at]
            .write_delay_us
            .or(self.config.async_persist_delay_us)
            .unwrap_or((0, 0));
        let delay_us = self.disk_rng.between(low, high.max(low));
        let node = &mut self.nodes[at];
        let id = node.id;
        let written = node.written.get_or_insert_with(|| node.disk.clone());
        apply_write(written, &write)
            .map_err(|e| ("entries are contiguous", format!("node {id}: {e}")))?;
        let done_us = (self.now_us + delay_us).max(node.last_write_done_us);
        node.last_write_done_us = done_us;
        node.pending_writes.push_back(write);
        let incarnation = node.incarnation;
        self.queue.push(
            done_us,
            Event::WriteDone {
                node: at,
                incarnation,
            },
        );
        Ok(())
    }

    /// Makes the oldest write in flight durable (checking the persistence
    /// invariants), sends the messages that waited for it, and tells Raft.
    fn complete_write(&mut self, at: usize) {
        let Some(write) = self.nodes[at].pending_writes.pop_front() else {
            return;
        };
        if let Err(broken) = self.make_durable(at, &write) {
            self.fail(broken);
            return;
        }
        if let Err(broken) = self.send_all(at, write.messages) {
            self.fail(broken);
            return;
        }
        if let (Some((index, term)), Some(raft)) = (write.point, self.nodes[at].raft.as_mut()) {
            raft.on_persisted(index, term);
        }
        self.handle_ready(at);
    }

    fn make_durable(&mut self, at: usize, write: &PendingWrite) -> Result<(), Broken> {
        self.persist(at, &write.snapshot, &write.entries, &write.hard_state)?;
        if let Some(snapshot) = &write.compact {
            self.nodes[at].disk.compact(snapshot.clone());
        }
        Ok(())
    }

    fn persist(
        &mut self,
        at: usize,
        snapshot: &Option<Snapshot>,
        entries: &[raft::Entry],
        hard_state: &Option<raft::HardState>,
    ) -> Result<(), Broken> {
        let node = &mut self.nodes[at];
        let id = node.id;
        if let Some(snapshot) = snapshot {
            // raft installs only snapshots whose last entry its log lacks,
            // and asks for the whole stored log to be discarded.
            node.disk.entries.clear();
            node.disk.snapshot = Some(snapshot.clone());
        }
        if !entries.is_empty() {
            node.disk
                .append(entries)
                .map_err(|e| ("entries are contiguous", format!("node {id}: {e}")))?;
            self.invariants
                .on_persist_entries(id, entries, &node.disk)?;
        }
        if let Some(hard_state) = hard_state {
            Invariants::on_persist_hard_state(id, &node.disk.hard_state, hard_state)?;
            node.disk.hard_state = hard_state.clone();
        }
        if snapshot.is_some() || !entries.is_empty() || hard_state.is_some() {
            let disk = &node.disk;
            self.trace.record(
                self.now_us,
                id,
                TraceKind::Persist {
                    term: disk.hard_state.term,
                    commit: disk.hard_state.commit,
                    last_index: disk.last_index(),
                },
            );
        }
        Ok(())
    }

    /// A granted vote promises the voter will not vote for anyone else in
    /// that term, so it must already be on disk when the grant leaves; the
    /// same holds for an acknowledged entry.
    fn check_vote_durable(&self, at: usize, message: &Message) -> Result<(), Broken> {
        if let MessageBody::AppendResponse {
            success: true,
            index,
            ..
        } = message.body
        {
            // An acknowledged entry counts towards commit: it must be on disk.
            let disk = &self.nodes[at].disk;
            if disk.last_index() < index {
                return Err((
                    "entries persisted before they are acknowledged",
                    format!(
                        "node {} acknowledges index {index} to {} but its disk ends at {}",
                        message.from,
                        message.to,
                        disk.last_index()
                    ),
                ));
            }
        }
        if !self.config.check_vote_durability {
            return Ok(());
        }
        if let MessageBody::VoteResponse { granted: true } = message.body {
            let disk = &self.nodes[at].disk.hard_state;
            if disk.term != message.term || disk.vote != Some(message.to) {
                return Err((
                    "vote persisted before it is granted",
                    format!(
                        "node {} grants its vote in term {} to {} but its disk holds term {} vote {:?}",
                        message.from, message.term, message.to, disk.term, disk.vote
                    ),
                ));
            }
        }
        Ok(())
    }

    fn apply(&mut self, at: usize, entry: &raft::Entry) -> Result<(), Broken> {
        let node = &mut self.nodes[at];
        if entry.index != node.applied + 1 {
            return Err((
                "entries are applied in order",
                format!(
                    "node {} applied up to {} and was handed entry {}",
                    node.id, node.applied, entry.index
                ),
            ));
        }
        self.invariants.on_apply(node.id, entry)?;
        self.trace.record(
            self.now_us,
            node.id,
            TraceKind::Apply {
                index: entry.index,
                term: entry.term,
            },
        );
        if entry.kind == EntryKind::Normal {
            if let Some(machine) = node.machine.as_mut() {
                let output = machine.apply(entry.index, &entry.data);
                if self.config.record_outputs {
                    node.outputs.push(Applied {
                        index: entry.index,
                        term: entry.term,
                        output,
                    });
                }
            }
        }
        node.applied = entry.index;
        node.max_applied = node.max_applied.max(entry.index);
        Ok(())
    }

    fn serve_reads(&mut self, at: usize) -> Result<(), Broken> {
        let now_us = self.now_us;
        let node = &mut self.nodes[at];
        let applied = node.applied;
        let mut index = 0;
        while index < node.pending_reads.len() {
            if node.pending_reads[index].index > applied {
                index += 1;
                continue;
            }
            let read = node.pending_reads.swap_remove(index);
            if let Some(floor) = self.read_floor.remove(&read.ctx) {
                if read.index < floor {
                    return Err((
                        "linearizable reads",
                        format!(
                            "node {} serves a read at index {} but index {floor} was committed before the read was asked",
                            node.id, read.index
                        ),
                    ));
                }
            }
            node.served_reads.push(ServedRead {
                ctx: read.ctx,
                index: read.index,
                applied,
                at_us: now_us,
            });
        }
        Ok(())
    }

    /// Checks the node's status after a Ready: leadership, commit, applied.
    fn observe(&mut self, at: usize) -> Result<(), Broken> {
        let node = &mut self.nodes[at];
        let Some(raft) = node.raft.as_ref() else {
            return Ok(());
        };
        let status = raft.status();
        if status.role != node.role_seen {
            node.role_seen = status.role;
            self.trace.record(
                self.now_us,
                node.id,
                TraceKind::Role {
                    role: match status.role {
                        Role::Follower => "follower",
                        Role::PreCandidate => "pre-candidate",
                        Role::Candidate => "candidate",
                        Role::Leader => "leader",
                    },
                    term: status.term,
                },
            );
        }
        if status.role == Role::Leader && self.invariants.on_leader(node.id, status.term)? {
            self.invariants
                .check_leader_log(node.id, status.term, &node.disk)?;
        }
        if status.commit < node.commit_seen {
            return Err((
                "commit index never decreases",
                format!(
                    "node {} commit went from {} to {}",
                    node.id, node.commit_seen, status.commit
                ),
            ));
        }
        if status.commit > node.commit_seen {
            // Async mode: a commit may run ahead of this node's own disk
            // (a durable majority elsewhere), never ahead of what it wrote.
            let log = node.written.as_ref().unwrap_or(&node.disk);
            self.invariants.on_commit(
                node.id,
                status.term,
                node.commit_seen,
                status.commit,
                log,
            )?;
            node.commit_seen = status.commit;
        }
        if node.applied > status.commit {
            return Err((
                "applied <= commit",
                format!(
                    "node {} applied {} above its commit {}",
                    node.id, node.applied, status.commit
                ),
            ));
        }
        Ok(())
    }

    /// The application snapshots its state machine and lets Raft compact.
    fn take_snapshot(&mut self, at: usize) {
        let voters = self.ids.clone();
        let node = &mut self.nodes[at];
        let (Some(raft), Some(machine)) = (node.raft.as_mut(), node.machine.as_ref()) else {
            return;
        };
        let index = node.applied;
        let Some(term) = node.written.as_ref().unwrap_or(&node.disk).term_at(index) else {
            return;
        };
        let data = machine.snapshot();
        if raft.compact(index, data.clone()).is_err() {
            return;
        }
        let snapshot = Snapshot {
            meta: SnapshotMeta {
                index,
                term,
                voters,
            },
            data,
        };
        if node.written.is_none() {
            node.disk.compact(snapshot);
            return;
        }
        let write = PendingWrite {
            snapshot: None,
            entries: Vec::new(),
            hard_state: None,
            compact: Some(snapshot),
            messages: Vec::new(),
            point: None,
        };
        if let Err(broken) = self.start_write(at, write) {
            self.fail(broken);
        }
    }
}

impl Sim<crate::machine::LogMachine> {
    /// A cluster running the Raft tests' replicated log of commands.
    pub fn with_log(config: SimConfig) -> Result<Self, SimError> {
        Sim::new(config, |_| crate::machine::LogMachine::default())
    }
}

/// Applies one write to a simulated disk, in the order a Ready prescribes.
fn apply_write(disk: &mut Persisted, write: &PendingWrite) -> Result<(), String> {
    if let Some(snapshot) = &write.snapshot {
        disk.entries.clear();
        disk.snapshot = Some(snapshot.clone());
    }
    disk.append(&write.entries)?;
    if let Some(hard_state) = &write.hard_state {
        disk.hard_state = hard_state.clone();
    }
    if let Some(snapshot) = &write.compact {
        disk.compact(snapshot.clone());
    }
    Ok(())
}
