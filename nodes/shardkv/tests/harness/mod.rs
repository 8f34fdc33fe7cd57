//! A deterministic world for the Lab 4B tests, as the lab runs them: the
//! shard controller (a Raft group of 3 controller servers) and several
//! replica groups (Raft groups of `ShardKvServer`s), all on one virtual
//! clock and one faulty network, with clerks as simulated clients. Every
//! controller request — the groups' configuration polls, the clerks'
//! configuration refreshes, the test's Join/Leave/Move — is a message to a
//! controller server, answered once its log entry applies; a lost answer
//! is retried (same sequence number) at another server.
//!
//! The nodes run on `sim::host::Host`, which drives `raft::RawNode`s exactly
//! as the node daemon does: Ready handling, persistence with crash
//! semantics, the network.

#![allow(dead_code)]

mod clients;
pub mod ctrl;
/// The kv tests' recorder adapter (the same `kv::Op` history).
#[path = "../../../kv/tests/harness/history.rs"]
pub mod history;
pub mod servers;

use std::collections::BTreeMap;

use kv::Op;
use raft::NodeId;
use shardctrler::server::ServerConfig as CtrlConfig;
use shardctrler::{Config, CtrlOp, CtrlResult, Gid, ShardId};
use shardkv::{ServerConfig, ShardClerk, ShardKvServer};

use ctrl::CtrlClerk;
use history::History;
use servers::{CtrlHosted, Hosted, Msg, Spec};
use sim::host::{Addr, Host, NodeSlot};

pub use servers::server_name;
pub use sim::host::Harness;
pub use sim::host::{Micros, MS, SECOND};
pub use sim::NetConfig;

/// Pause of an auto client between operations.
pub const THINK_US: Micros = 10 * MS;
/// A clerk gives up on one attempt after this long and tries the next server.
pub const ATTEMPT_TIMEOUT_US: Micros = 300 * MS;
/// Controller servers per world (the lab's 3 shardmaster servers).
pub const CTRL_SERVERS: usize = 3;
/// Controller servers snapshot when their Raft state reaches this size, so
/// restarts and lagging replicas go through snapshot installation.
pub const CTRL_MAX_RAFT_STATE_BYTES: usize = 8 * 1024;
/// The test's Join/Leave/Move must finish within this virtual time.
pub const CTRL_OP_TIMEOUT_US: Micros = 30 * SECOND;

/// The harness's timers.
#[derive(Debug)]
pub enum Timer {
    ClientTimeout { client: usize, attempt: u64 },
    ClientResend { client: usize, attempt: u64 },
    ClientNext { client: usize },
    CtrlTimeout { client: usize, attempt: u64 },
    CtrlResend { client: usize, attempt: u64 },
}

/// What a clerk is doing.
pub struct ClientSlot {
    /// The crate's clerk makes the decisions; the slot records history.
    pub clerk: ShardClerk,
    /// Its controller clerk: configuration refreshes (and, for the admin
    /// client, the test's Join/Leave/Move).
    pub ctrl: CtrlClerk,
    /// The shard clerk waits for a configuration from `ctrl`.
    pub wants_config: bool,
    /// The last controller result of an admin request.
    pub ctrl_result: Option<CtrlResult>,
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

pub struct World {
    pub host: Host<Hosted, Timer>,
    pub groups: BTreeMap<Gid, Vec<NodeId>>,
    pub ctrl_servers: Vec<NodeId>,
    pub clients: Vec<ClientSlot>,
    /// The test's controller client (the lab's `mck`).
    admin: usize,
    /// Join/Leave/Move requests the test completed.
    pub ctrl_changes: u64,
    next_process: i64,
    pub history: History,
    /// Clerk-side counts by what happened (responses by kind, timeouts).
    pub counts: BTreeMap<String, u64>,
}

impl World {
    /// `groups` replica groups (gids 100, 101, ... on nodes 1..) of
    /// `servers_per_group` nodes each and the controller group (the next
    /// [`CTRL_SERVERS`] node ids), all started; no group joined yet.
    pub fn new(
        seed: u64,
        groups: usize,
        servers_per_group: usize,
        server_config: ServerConfig,
    ) -> World {
        let mut host = Host::new(seed);
        let first_ctrl = (groups * servers_per_group) as NodeId + 1;
        let ctrl_servers: Vec<NodeId> = (first_ctrl..first_ctrl + CTRL_SERVERS as NodeId).collect();
        host.add_group(
            ctrl_servers
                .iter()
                .map(|id| {
                    let spec = Spec::Ctrl(CtrlConfig {
                        max_raft_state_bytes: Some(CTRL_MAX_RAFT_STATE_BYTES),
                        ..CtrlConfig::default()
                    });
                    (*id, spec)
                })
                .collect(),
        );
        let mut world_groups = BTreeMap::new();
        for g in 0..groups {
            let gid = World::gid(g);
            let members: Vec<NodeId> = (0..servers_per_group)
                .map(|i| (g * servers_per_group + i) as NodeId + 1)
                .collect();
            let spec = Spec::Group {
                gid,
                config: server_config.clone(),
                ctrl_servers: ctrl_servers.clone(),
            };
            host.add_group(members.iter().map(|id| (*id, spec.clone())).collect());
            world_groups.insert(gid, members);
        }
        let mut world = World {
            host,
            groups: world_groups,
            ctrl_servers,
            clients: Vec::new(),
            admin: 0,
            ctrl_changes: 0,
            next_process: 0,
            history: History::default(),
            counts: BTreeMap::new(),
        };
        world.admin = world.add_client();
        world
    }

    pub fn now_us(&self) -> Micros {
        self.host.now_us()
    }

    pub fn set_net(&mut self, net: NetConfig) {
        self.host.net = net;
    }

    /// Uniform draw from the world's seeded stream (for test scripts).
    pub fn random_below(&mut self, bound: u64) -> u64 {
        self.host.rng().below(bound)
    }

    pub fn gid(index: usize) -> Gid {
        100 + index as Gid
    }

    pub fn crash(&mut self, id: NodeId) {
        self.host.crash(id);
    }

    pub fn restart(&mut self, id: NodeId) {
        self.host.restart(id);
    }

    /// Cuts node `id` off from every other node (clients still reach it).
    pub fn isolate(&mut self, id: NodeId) {
        self.host.partition(&[vec![id]]);
    }

    pub fn heal(&mut self) {
        self.host.heal();
    }

    /// TEST-ONLY mutation: every server of every group keeps serving the
    /// shards it handed over (restarts the nodes to apply it; call first).
    pub fn keep_serving_handed_over_shards(&mut self) {
        for id in self.group_node_ids() {
            if let Spec::Group { config, .. } = self.host.spec_mut(id) {
                config.keep_serving_handed_over_shards = true;
            }
            self.crash(id);
            self.restart(id);
        }
    }

    pub fn group_node_ids(&self) -> Vec<NodeId> {
        self.groups.values().flatten().copied().collect()
    }

    /// The replica-group nodes (not the controller's), for the lab's
    /// persisted-size checks.
    pub fn group_slots(&self) -> impl Iterator<Item = &NodeSlot<Hosted>> {
        self.host
            .slots()
            .filter(|s| matches!(s.spec, Spec::Group { .. }))
    }

    /// Whether every live server of `gid` has applied configuration `num`
    /// with all its shards settled.
    pub fn group_settled_at(&self, gid: Gid, num: u64) -> bool {
        self.groups[&gid].iter().all(|id| {
            !self.host.is_up(*id)
                || self
                    .server(*id)
                    .is_some_and(|s| s.state().config().num == num && s.state().settled())
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
        match self.host.server(id)? {
            Hosted::Group(g) => Some(&g.server),
            Hosted::Ctrl(_) => None,
        }
    }

    pub fn ctrl_server(&self, id: NodeId) -> Option<&CtrlHosted> {
        match self.host.server(id)? {
            Hosted::Ctrl(c) => Some(c),
            Hosted::Group(_) => None,
        }
    }

    pub fn leader_of(&self, gid: Gid) -> Option<NodeId> {
        self.host.leader_among(&self.groups[&gid])
    }

    pub fn ctrl_leader(&self) -> Option<NodeId> {
        self.host.leader_among(&self.ctrl_servers)
    }

    /// The newest configuration any live controller replica has applied
    /// (applied means committed, so this is the controller's latest once
    /// the test's request for it has been answered).
    pub fn latest_config(&self) -> Config {
        self.ctrl_servers
            .iter()
            .filter_map(|id| self.ctrl_server(*id))
            .map(|c| c.server.state().latest())
            .max_by_key(|c| c.num)
            .cloned()
            .unwrap_or_default()
    }

    pub fn shards_of(&self, gid: Gid) -> Vec<ShardId> {
        self.latest_config().shards_of(gid)
    }

    /// One line per node: up, role, term, config, shard statuses (for
    /// failure messages).
    pub fn describe(&self) -> String {
        let mut out = format!(
            "at {} ms, controller config {}\n",
            self.now_us() / MS,
            self.latest_config().num
        );
        for slot in self.host.slots() {
            let (Some(raw), Some(server)) = (slot.raw(), slot.server()) else {
                out.push_str(&format!("  n{} {:?}: down\n", slot.id, slot.spec));
                continue;
            };
            let status = raw.status();
            let what = match server {
                Hosted::Group(g) => {
                    let state = g.server.state();
                    let shards: Vec<String> = state
                        .held_shards()
                        .iter()
                        .map(|s| format!("{s}:{:?}", state.status(*s)))
                        .collect();
                    format!(
                        "gid {} config {} shards {}",
                        state.gid(),
                        state.config().num,
                        shards.join(" ")
                    )
                }
                Hosted::Ctrl(c) => format!(
                    "controller config {} pending {}",
                    c.server.state().latest().num,
                    c.server.pending_requests()
                ),
            };
            out.push_str(&format!(
                "  n{}: {:?} term {} commit {} {what}\n",
                slot.id, status.role, status.term, status.commit
            ));
        }
        out
    }

    /// Total persisted bytes (Raft state + snapshot) over the group servers.
    pub fn total_persisted_bytes(&self) -> usize {
        self.group_slots()
            .map(|n| n.persisted.raft_state_bytes() + n.persisted.snapshot_bytes())
            .sum()
    }

    // ---- the controller (the test's mck) -------------------------------

    /// Starts a controller request on the admin client without waiting.
    pub fn start_ctrl(&mut self, op: CtrlOp) {
        let admin = self.admin;
        self.clients[admin].ctrl_result = None;
        let action = self.clients[admin].ctrl.begin(op);
        self.perform_ctrl(admin, action);
    }

    /// The controller server that has proposed the admin's request in
    /// flight and not answered it yet.
    pub fn ctrl_holder(&self) -> Option<NodeId> {
        let admin = &self.clients[self.admin].ctrl;
        if !admin.busy() {
            return None;
        }
        self.ctrl_servers.iter().copied().find(|id| {
            self.ctrl_server(*id)
                .is_some_and(|c| c.is_waiting_for(Addr::Client(self.admin)))
        })
    }

    pub fn ctrl_idle(&self) -> bool {
        !self.clients[self.admin].ctrl.busy()
    }

    /// Waits for the admin's request; Join/Leave/Move must answer Done.
    pub fn finish_ctrl(&mut self) -> Result<(), String> {
        let deadline = self.now_us() + CTRL_OP_TIMEOUT_US;
        if !self.run_until(deadline, |w| w.ctrl_idle()) {
            return Err(format!(
                "controller request not answered within {} s\n{}",
                CTRL_OP_TIMEOUT_US / SECOND,
                self.describe()
            ));
        }
        match self.clients[self.admin].ctrl_result.clone() {
            Some(CtrlResult::Done) => {
                self.ctrl_changes += 1;
                Ok(())
            }
            other => Err(format!("controller answered {other:?}")),
        }
    }

    fn ctrl(&mut self, op: CtrlOp) -> Result<(), String> {
        self.start_ctrl(op);
        self.finish_ctrl()
    }

    pub fn join_op(&self, gids: &[Gid]) -> CtrlOp {
        let groups = gids
            .iter()
            .map(|g| {
                (
                    *g,
                    self.groups[g].iter().map(|id| server_name(*id)).collect(),
                )
            })
            .collect();
        CtrlOp::Join { groups }
    }

    pub fn join(&mut self, gids: &[Gid]) -> Result<(), String> {
        let op = self.join_op(gids);
        self.ctrl(op)
    }

    pub fn leave(&mut self, gids: &[Gid]) -> Result<(), String> {
        self.ctrl(CtrlOp::Leave {
            gids: gids.to_vec(),
        })
    }

    pub fn move_shard(&mut self, shard: ShardId, gid: Gid) -> Result<(), String> {
        self.ctrl(CtrlOp::Move { shard, gid })
    }

    // ---- the network -----------------------------------------------------

    fn send(&mut self, client: usize, to: NodeId, message: Msg) {
        self.host
            .send(Addr::Client(client), Addr::Node(to), message);
    }
}

impl Harness for World {
    type Server = Hosted;
    type Timer = Timer;

    fn host_mut(&mut self) -> &mut Host<Hosted, Timer> {
        &mut self.host
    }

    fn on_client_message(&mut self, client: usize, _from: NodeId, message: Msg) {
        match message {
            Msg::KvReply { attempt, response } => self.on_response(client, attempt, response),
            Msg::CtrlReply { attempt, response } => {
                let action = self.clients[client].ctrl.on_response(attempt, response);
                self.perform_ctrl(client, action);
            }
            _ => {}
        }
    }

    fn on_timer(&mut self, timer: Timer) {
        match timer {
            Timer::ClientTimeout { client, attempt } => {
                let action = self.clients[client].clerk.on_timeout(attempt);
                if action != shardkv::ClerkAction::Ignored {
                    *self.counts.entry("timeout".into()).or_default() += 1;
                }
                self.perform(client, action);
            }
            Timer::ClientResend { client, attempt } => {
                let action = self.clients[client].clerk.resend(attempt);
                self.perform(client, action);
            }
            Timer::ClientNext { client } => self.next_auto(client),
            Timer::CtrlTimeout { client, attempt } => {
                let action = self.clients[client].ctrl.on_timeout(attempt);
                self.perform_ctrl(client, action);
            }
            Timer::CtrlResend { client, attempt } => {
                let action = self.clients[client].ctrl.resend(attempt);
                self.perform_ctrl(client, action);
            }
        }
    }
}
