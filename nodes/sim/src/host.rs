//! Hosting replicated servers on `raft::RawNode` inside one virtual clock.
//!
//! [`crate::Sim`] applies a [`crate::StateMachine`] itself, so it cannot
//! host a *server*: code that answers clients later (pending requests,
//! ReadIndex reads), sends its own messages (shard pulls, controller
//! queries) or decides when to snapshot. [`Host`] runs such servers as the
//! node daemon does, through a [`Server`] the service implements, and keeps
//! everything else here once:
//!
//! * the event loop: one seeded RNG, virtual microseconds, Raft ticks every
//!   [`TICK_US`], several Raft groups side by side (each node names its own
//!   voters), several server kinds (the implementor may be an enum);
//! * the Ready loop in `raft::Ready`'s order: persist (hard state, entries,
//!   snapshot) to the node's [`Persisted`] disk, apply through
//!   [`Server::apply`], `advance()`, [`Server::maybe_snapshot`], then send;
//! * crash semantics: a crash drops the server and its `RawNode` (pending
//!   requests, volatile state, timers of that incarnation); a restart builds
//!   both again from what was persisted; messages addressed to a down node
//!   are lost;
//! * one faulty network for Raft messages and application messages alike
//!   (node to node, client to node, node to client): the simulator's
//!   [`NetConfig`] (delay, loss, duplication, long reordering, FIFO links),
//!   partitions among nodes, and which nodes each client can reach; a link
//!   is checked when a message is sent and again when it arrives.
//!
//! Clients are the harness's business: [`Host::step`] hands back messages
//! addressed to clients and the harness's own timers ([`HostStep`]), and the
//! harness sends with [`Host::send`] and schedules with [`Host::schedule`].
//! A harness implements [`Harness`] (its host, what its clients do with a
//! message or a timer) and gets the event loop, `run_until(time, stop)`.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap};
use std::fmt::Debug;

use crate::network::NetConfig;
use crate::rng::SimRng;
/// A node's disk, as the rest of the simulator models it.
pub use crate::storage::Persisted;
use raft::{Index, Message, NodeId, RawNode, Ready, Restored, Role, Snapshot};

#[path = "host_links.rs"]
mod links;
pub use links::HostLinks;

/// Virtual microseconds.
pub type Micros = u64;
pub const MS: Micros = 1_000;
pub const SECOND: Micros = 1_000_000;
/// One Raft tick: with 2-tick heartbeats and 10-20 tick elections this is
/// the labs' 100 ms heartbeat and ~1 s election timeout.
pub const TICK_US: Micros = 50 * MS;

/// A client of the hosted servers, numbered by the harness.
pub type ClientId = usize;

/// An endpoint of the simulated network.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Addr {
    Node(NodeId),
    Client(ClientId),
}

/// Builds the `RawNode`'s recovery input from what the node's disk holds.
fn restored(persisted: &Persisted) -> Restored {
    Restored {
        hard_state: persisted.hard_state.clone(),
        snapshot: persisted.snapshot.as_ref().map(|s| s.meta.clone()),
        entries: persisted.entries.clone(),
        snapshot_data: persisted
            .snapshot
            .as_ref()
            .map(|s| s.data.clone())
            .unwrap_or_default(),
    }
}

/// Step 1 of a Ready: the snapshot (Figure 13: a matching suffix of the log
/// stays), the entries (a conflicting suffix is replaced), the hard state.
fn persist(persisted: &mut Persisted, ready: &Ready) -> Result<(), String> {
    if let Some(snapshot) = &ready.snapshot {
        persisted.install_snapshot(snapshot.clone());
    }
    persisted.append(&ready.entries)?;
    if let Some(hard_state) = &ready.hard_state {
        persisted.hard_state = hard_state.clone();
    }
    Ok(())
}

/// A snapshot the server took of everything applied up to `index` (and
/// handed to `RawNode::compact`); the host writes it to the node's disk.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SnapshotTaken {
    pub index: Index,
    pub data: Vec<u8>,
}

/// Where each request a server took came from, until it is answered.
/// Servers name a request by a number of their own (kv's and
/// shardctrler's `RequestId`) and answer it later, maybe after a log
/// round; this maps the number back to the sender and the sender's tag
/// (an attempt number, a sequence number). Lost with the server in a crash,
/// as a real node's connections are.
#[derive(Clone, Debug)]
pub struct Routes<Tag> {
    next_request_id: u64,
    open: BTreeMap<u64, (Addr, Tag)>,
}

impl<Tag> Default for Routes<Tag> {
    fn default() -> Self {
        Self {
            next_request_id: 1,
            open: BTreeMap::new(),
        }
    }
}

impl<Tag> Routes<Tag> {
    /// A new request id for a request from `from`.
    pub fn open(&mut self, from: Addr, tag: Tag) -> u64 {
        let id = self.next_request_id;
        self.next_request_id += 1;
        self.open.insert(id, (from, tag));
        id
    }

    /// Who gets the answer to `request_id` (once).
    pub fn close(&mut self, request_id: u64) -> Option<(Addr, Tag)> {
        self.open.remove(&request_id)
    }

    /// Whether a request from `from` still waits for its answer.
    pub fn waiting_for(&self, from: Addr) -> bool {
        self.open.values().any(|(a, _)| *a == from)
    }
}

/// What a server callback may use: its Raft node, the clock, and an outbox
/// whose messages the host sends through the network after the callback.
pub struct Node<'a, M> {
    pub id: NodeId,
    pub raw: &'a mut RawNode,
    pub now_us: Micros,
    outbox: &'a mut Vec<(Addr, M)>,
}

impl<M> Node<'_, M> {
    pub fn send(&mut self, to: Addr, message: M) {
        self.outbox.push((to, message));
    }
}

/// A service's server as the host runs it. One value per live node; a
/// crash drops it, a restart calls [`Server::start`] again.
pub trait Server: Sized {
    /// What the harness configures per node (kept across restarts; edit it
    /// with [`Host::spec_mut`] before a restart).
    type Spec: Clone + Debug;
    /// Application messages: requests, replies, server-to-server traffic.
    type Message: Clone + Debug;

    /// A fresh server for node `id`'s start number `incarnation` (a random
    /// number, different on every start), restored from `snapshot` if the
    /// disk holds one (before any Ready).
    fn start(
        spec: &Self::Spec,
        id: NodeId,
        incarnation: u64,
        snapshot: Option<&Snapshot>,
    ) -> Result<Self, String>;

    /// Adjusts the node's Raft configuration (voters and seed are set).
    fn configure_raft(_spec: &Self::Spec, _config: &mut raft::Config) {}

    /// One Raft tick passed (`raw.tick()` was called just before).
    fn tick(&mut self, node: &mut Node<'_, Self::Message>);

    /// A message from a client or another node.
    fn receive(&mut self, node: &mut Node<'_, Self::Message>, from: Addr, message: Self::Message);

    /// Steps 3-4 of `ready` (restore its snapshot, apply its committed
    /// entries, serve its read states); it is already persisted. An error is
    /// a broken contract and fails the run.
    fn apply(&mut self, node: &mut Node<'_, Self::Message>, ready: &Ready) -> Result<(), String>;

    /// After `advance()`: snapshot (and compact `node.raw`) if the persisted
    /// Raft state of `raft_state_bytes` calls for it.
    fn maybe_snapshot(
        &mut self,
        node: &mut Node<'_, Self::Message>,
        raft_state_bytes: usize,
    ) -> Result<Option<SnapshotTaken>, String>;
}

struct Live<S> {
    raw: RawNode,
    server: S,
}

/// One node: its configuration, its disk, and (while up) its server.
pub struct NodeSlot<S: Server> {
    pub id: NodeId,
    pub voters: Vec<NodeId>,
    pub spec: S::Spec,
    pub persisted: Persisted,
    pub max_raft_state_bytes_seen: usize,
    /// Snapshots received from a leader (InstallSnapshot) and installed.
    pub snapshots_installed: u64,
    pub starts: u64,
    incarnation: u64,
    live: Option<Live<S>>,
}

impl<S: Server> NodeSlot<S> {
    pub fn is_up(&self) -> bool {
        self.live.is_some()
    }
    pub fn server(&self) -> Option<&S> {
        self.live.as_ref().map(|l| &l.server)
    }
    pub fn raw(&self) -> Option<&RawNode> {
        self.live.as_ref().map(|l| &l.raw)
    }
}

/// Counters of a run, for reports.
#[derive(Clone, Debug, Default)]
pub struct HostStats {
    pub raft_messages: u64,
    pub raft_message_bytes: u64,
    pub app_messages: u64,
    pub messages_lost: u64,
    pub crashes: u64,
    pub events: BTreeMap<&'static str, u64>,
}

enum Event<M, T> {
    Tick { node: NodeId, incarnation: u64 },
    Raft(Message),
    Deliver { from: Addr, to: Addr, message: M },
    Timer(T),
}

/// What one [`Host::step`] did.
#[derive(Debug)]
pub enum HostStep<M, T> {
    /// Handled inside the host (a tick, a Raft or node-bound message).
    Internal,
    /// A message for a client of the harness.
    ToClient {
        client: ClientId,
        from: NodeId,
        message: M,
    },
    /// A timer the harness scheduled.
    Timer(T),
}

/// Hosted nodes, the network between them and clients, and the clock.
/// `T` is the harness's own timer payload.
pub struct Host<S: Server, T> {
    pub seed: u64,
    now_us: Micros,
    rng: SimRng,
    queue: BinaryHeap<Reverse<(Micros, u64)>>,
    events: BTreeMap<u64, Event<S::Message, T>>,
    next_event: u64,
    nodes: BTreeMap<NodeId, NodeSlot<S>>,
    pub net: NetConfig,
    links: HostLinks,
    pub stats: HostStats,
}

impl<S: Server, T> Host<S, T> {
    /// An empty world on a reliable network, its randomness from `seed`.
    pub fn new(seed: u64) -> Self {
        Self {
            seed,
            now_us: 0,
            rng: SimRng::new(seed),
            queue: BinaryHeap::new(),
            events: BTreeMap::new(),
            next_event: 0,
            nodes: BTreeMap::new(),
            net: NetConfig::reliable(),
            links: HostLinks::default(),
            stats: HostStats::default(),
        }
    }

    pub fn now_us(&self) -> Micros {
        self.now_us
    }

    /// The run's random stream (for workloads and fault scripts).
    pub fn rng(&mut self) -> &mut SimRng {
        &mut self.rng
    }

    /// Adds node `id` of the Raft group `voters` (which includes it), down
    /// with an empty disk; [`Host::start`] boots it.
    pub fn add_node(&mut self, id: NodeId, voters: Vec<NodeId>, spec: S::Spec) {
        assert!(
            voters.contains(&id),
            "node {id} not among voters {voters:?}"
        );
        let slot = NodeSlot {
            id,
            voters,
            spec,
            persisted: Persisted::default(),
            max_raft_state_bytes_seen: 0,
            snapshots_installed: 0,
            starts: 0,
            incarnation: 0,
            live: None,
        };
        let previous = self.nodes.insert(id, slot);
        assert!(previous.is_none(), "node {id} added twice");
    }

    /// Adds a group of nodes with one spec each and starts them.
    pub fn add_group(&mut self, members: Vec<(NodeId, S::Spec)>) {
        let voters: Vec<NodeId> = members.iter().map(|(id, _)| *id).collect();
        for (id, spec) in members {
            self.add_node(id, voters.clone(), spec);
        }
        for id in voters {
            self.start(id);
        }
    }

    pub fn ids(&self) -> Vec<NodeId> {
        self.nodes.keys().copied().collect()
    }

    pub fn slots(&self) -> impl Iterator<Item = &NodeSlot<S>> {
        self.nodes.values()
    }

    pub fn slot(&self, id: NodeId) -> &NodeSlot<S> {
        match self.nodes.get(&id) {
            Some(slot) => slot,
            None => panic!("no node {id}"),
        }
    }

    fn slot_mut(&mut self, id: NodeId) -> &mut NodeSlot<S> {
        match self.nodes.get_mut(&id) {
            Some(slot) => slot,
            None => panic!("no node {id}"),
        }
    }

    /// The node's spec, for changes that take effect at its next start.
    pub fn spec_mut(&mut self, id: NodeId) -> &mut S::Spec {
        &mut self.slot_mut(id).spec
    }

    pub fn server(&self, id: NodeId) -> Option<&S> {
        self.nodes.get(&id).and_then(|s| s.server())
    }

    pub fn status(&self, id: NodeId) -> Option<raft::Status> {
        self.nodes.get(&id)?.raw().map(|r| r.status())
    }

    pub fn is_up(&self, id: NodeId) -> bool {
        self.nodes.get(&id).is_some_and(|s| s.is_up())
    }

    /// The live leader with the highest term among `ids`, if any.
    pub fn leader_among(&self, ids: &[NodeId]) -> Option<NodeId> {
        ids.iter()
            .filter_map(|id| self.status(*id))
            .filter(|s| s.role == Role::Leader)
            .max_by_key(|s| s.term)
            .map(|s| s.id)
    }

    /// Boots node `id` from its disk (no-op while it is up).
    pub fn start(&mut self, id: NodeId) {
        if self.is_up(id) {
            return;
        }
        let incarnation = self.rng.next_u64();
        let raft_seed = self.rng.next_u64();
        let phase = self.rng.below(TICK_US);
        let slot = self.slot_mut(id);
        let mut config = raft::Config::new(id, slot.voters.clone());
        config.seed = raft_seed;
        S::configure_raft(&slot.spec, &mut config);
        let raw = match RawNode::new(config, restored(&slot.persisted)) {
            Ok(raw) => raw,
            Err(error) => {
                let log: Vec<(Index, u64)> = slot
                    .persisted
                    .entries
                    .iter()
                    .map(|e| (e.index, e.term))
                    .collect();
                let snapshot = slot
                    .persisted
                    .snapshot
                    .as_ref()
                    .map(|s| (s.meta.index, s.meta.term));
                panic!("node {id} failed to start: {error}; log (index, term) {log:?}, snapshot {snapshot:?}")
            }
        };
        let server = S::start(
            &slot.spec,
            id,
            incarnation,
            slot.persisted.snapshot.as_ref(),
        )
        .unwrap_or_else(|error| panic!("node {id} cannot start its server: {error}"));
        slot.incarnation = incarnation;
        slot.starts += 1;
        slot.live = Some(Live { raw, server });
        let at = self.now_us + phase;
        self.push(
            at,
            Event::Tick {
                node: id,
                incarnation,
            },
        );
        self.drive(id);
    }

    /// Kills node `id`: its server and Raft node are gone, its disk stays.
    pub fn crash(&mut self, id: NodeId) {
        if self.slot_mut(id).live.take().is_some() {
            self.stats.crashes += 1;
        }
    }

    /// [`Host::start`] under the labs' name.
    pub fn restart(&mut self, id: NodeId) {
        self.start(id);
    }

    // ---- the network ---------------------------------------------------

    /// See [`HostLinks::partition`].
    pub fn partition(&mut self, sides: &[Vec<NodeId>]) {
        self.links.partition(sides);
    }

    pub fn heal(&mut self) {
        self.links.heal();
    }

    /// Which nodes `client` can reach; `None`: all of them.
    pub fn set_client_reach(&mut self, client: ClientId, nodes: Option<Vec<NodeId>>) {
        self.links.set_client_reach(client, nodes);
    }

    pub fn linked(&self, a: Addr, b: Addr) -> bool {
        self.links.linked(a, b)
    }

    /// When the copies of a message from `from` to `to` arrive: none if
    /// the network loses it, two if it duplicates it. On FIFO links no copy
    /// arrives before an earlier message's.
    fn plan(&mut self, from: Addr, to: Addr) -> Vec<Micros> {
        let mut arrivals = Vec::new();
        for delay in self.net.plan(&mut self.rng).into_iter().flatten() {
            let mut at = self.now_us + delay;
            if self.net.fifo_links {
                at = self.links.fifo_arrival(from, to, at);
            }
            arrivals.push(at);
        }
        if arrivals.is_empty() {
            self.stats.messages_lost += 1;
        }
        arrivals
    }

    /// Sends an application message through the network (lost if `from`
    /// and `to` are not linked now or when it arrives, or by chance).
    pub fn send(&mut self, from: Addr, to: Addr, message: S::Message) {
        self.stats.app_messages += 1;
        if !self.linked(from, to) {
            return;
        }
        for at in self.plan(from, to) {
            self.push(
                at,
                Event::Deliver {
                    from,
                    to,
                    message: message.clone(),
                },
            );
        }
    }

    fn send_raft(&mut self, message: Message) {
        self.stats.raft_messages += 1;
        self.stats.raft_message_bytes += message.approx_size_bytes() as u64;
        if !self.linked(Addr::Node(message.from), Addr::Node(message.to)) {
            return;
        }
        let (from, to) = (Addr::Node(message.from), Addr::Node(message.to));
        for at in self.plan(from, to) {
            self.push(at, Event::Raft(message.clone()));
        }
    }

    // ---- the clock -----------------------------------------------------

    fn push(&mut self, at: Micros, event: Event<S::Message, T>) {
        let id = self.next_event;
        self.next_event += 1;
        self.events.insert(id, event);
        self.queue.push(Reverse((at, id)));
    }

    /// The harness's timer: `timer` comes back from [`Host::step`] at `at_us`.
    pub fn schedule(&mut self, at_us: Micros, timer: T) {
        let at = at_us.max(self.now_us);
        self.push(at, Event::Timer(timer));
    }

    /// Handles the next event due by `until_us`; `None` (with the clock at
    /// `until_us`) when there is none.
    pub fn step(&mut self, until_us: Micros) -> Option<HostStep<S::Message, T>> {
        let Some(Reverse((at, id))) = self.queue.peek().copied() else {
            self.now_us = self.now_us.max(until_us);
            return None;
        };
        if at > until_us {
            self.now_us = self.now_us.max(until_us);
            return None;
        }
        self.queue.pop();
        self.now_us = at;
        let Some(event) = self.events.remove(&id) else {
            return Some(HostStep::Internal);
        };
        let name = match &event {
            Event::Tick { .. } => "tick",
            Event::Raft(_) => "raft",
            Event::Deliver { .. } => "deliver",
            Event::Timer(_) => "timer",
        };
        *self.stats.events.entry(name).or_default() += 1;
        Some(self.handle(event))
    }

    fn handle(&mut self, event: Event<S::Message, T>) -> HostStep<S::Message, T> {
        match event {
            Event::Tick { node, incarnation } => {
                let slot = self.slot(node);
                if slot.incarnation != incarnation || !slot.is_up() {
                    return HostStep::Internal;
                }
                self.call_server(node, |server, ctx| {
                    ctx.raw.tick();
                    server.tick(ctx);
                });
                let at = self.now_us + TICK_US;
                self.push(at, Event::Tick { node, incarnation });
                HostStep::Internal
            }
            Event::Raft(message) => {
                let to = message.to;
                if !self.linked(Addr::Node(message.from), Addr::Node(to)) {
                    return HostStep::Internal;
                }
                // Stale or unexpected messages are refused and counted by the core.
                self.call_server(to, |_, ctx| {
                    let _ = ctx.raw.step(message);
                });
                HostStep::Internal
            }
            Event::Deliver { from, to, message } => {
                if !self.linked(from, to) {
                    return HostStep::Internal;
                }
                match to {
                    Addr::Client(client) => match from {
                        Addr::Node(from) => HostStep::ToClient {
                            client,
                            from,
                            message,
                        },
                        Addr::Client(_) => HostStep::Internal,
                    },
                    Addr::Node(id) => {
                        self.call_server(id, |server, ctx| server.receive(ctx, from, message));
                        HostStep::Internal
                    }
                }
            }
            Event::Timer(timer) => HostStep::Timer(timer),
        }
    }

    /// Calls `f` with node `id`'s server and Raft node (if it is up), then
    /// sends what the server queued and handles the Readies it caused.
    fn call_server(&mut self, id: NodeId, f: impl FnOnce(&mut S, &mut Node<'_, S::Message>)) {
        let now_us = self.now_us;
        let Some(live) = self.nodes.get_mut(&id).and_then(|s| s.live.as_mut()) else {
            return;
        };
        let mut outbox = Vec::new();
        let mut ctx = Node {
            id,
            raw: &mut live.raw,
            now_us,
            outbox: &mut outbox,
        };
        f(&mut live.server, &mut ctx);
        self.route(id, outbox);
        self.drive(id);
    }

    fn route(&mut self, from: NodeId, outbox: Vec<(Addr, S::Message)>) {
        for (to, message) in outbox {
            self.send(Addr::Node(from), to, message);
        }
    }

    /// Handles every Ready node `id` has, in the order `raft::Ready` prescribes.
    fn drive(&mut self, id: NodeId) {
        let now_us = self.now_us;
        loop {
            let slot = self.slot_mut(id);
            let Some(live) = slot.live.as_mut() else {
                return;
            };
            if !live.raw.has_ready() {
                return;
            }
            let mut ready = live.raw.ready();
            // 1. persist
            if let Err(error) = persist(&mut slot.persisted, &ready) {
                panic!("node {id}: persisting a Ready: {error}");
            }
            if ready.snapshot.is_some() {
                slot.snapshots_installed += 1;
            }
            // 3-4. restore, apply, serve reads. (2, sending, follows below:
            // delivery is scheduled in virtual time, so sending after the
            // local apply changes nothing another node can see.)
            let mut outbox = Vec::new();
            let mut ctx = Node {
                id,
                raw: &mut live.raw,
                now_us,
                outbox: &mut outbox,
            };
            if let Err(error) = live.server.apply(&mut ctx, &ready) {
                panic!("node {id}: {error}");
            }
            // 5. advance, then the snapshot the server may take.
            ctx.raw.advance();
            let size = slot.persisted.raft_state_bytes();
            match live.server.maybe_snapshot(&mut ctx, size) {
                Ok(Some(taken)) => {
                    let term = slot.persisted.term_at(taken.index).unwrap_or_else(|| {
                        panic!("node {id}: no term for snapshot index {}", taken.index)
                    });
                    slot.persisted.compact(Snapshot {
                        meta: raft::SnapshotMeta {
                            index: taken.index,
                            term,
                            voters: slot.voters.clone(),
                        },
                        data: taken.data,
                    });
                }
                Ok(None) => {}
                Err(error) => panic!("node {id}: {error}"),
            }
            slot.max_raft_state_bytes_seen = slot
                .max_raft_state_bytes_seen
                .max(slot.persisted.raft_state_bytes());
            for message in std::mem::take(&mut ready.messages) {
                self.send_raft(message);
            }
            self.route(id, outbox);
        }
    }
}

/// A harness around a [`Host`]: its clients and its timers. The provided
/// [`Harness::run_until`] is the event loop every test script uses.
pub trait Harness: Sized {
    type Server: Server;
    type Timer;

    fn host_mut(&mut self) -> &mut Host<Self::Server, Self::Timer>;

    /// A message from node `from` reached `client`.
    fn on_client_message(
        &mut self,
        client: ClientId,
        from: NodeId,
        message: <Self::Server as Server>::Message,
    );

    /// A timer scheduled with [`Host::schedule`] is due.
    fn on_timer(&mut self, timer: Self::Timer);

    /// Runs events until virtual time `until_us` or until `stop` holds
    /// (checked before every event, so the clock stops at the event that
    /// made it true). Returns whether `stop` held.
    fn run_until<F: Fn(&Self) -> bool>(&mut self, until_us: Micros, stop: F) -> bool {
        loop {
            if stop(self) {
                return true;
            }
            match self.host_mut().step(until_us) {
                None => return stop(self),
                Some(HostStep::Internal) => {}
                Some(HostStep::ToClient {
                    client,
                    from,
                    message,
                }) => self.on_client_message(client, from, message),
                Some(HostStep::Timer(timer)) => self.on_timer(timer),
            }
        }
    }

    /// Runs every event of the next `duration_us`.
    fn run_for(&mut self, duration_us: Micros) {
        let until = self.host_mut().now_us() + duration_us;
        self.run_until(until, |_| false);
    }
}

#[cfg(test)]
#[path = "host_tests.rs"]
mod tests;
