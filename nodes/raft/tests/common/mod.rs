//! A tiny hand-driven cluster for the paper tests: N RawNodes, an in-memory
//! "disk" per node, a FIFO message queue, and links that can be cut. No
//! randomness: every test is a fixed script.
#![allow(dead_code, clippy::unwrap_used)]

use raft::{
    Config, Entry, EntryKind, HardState, Index, Message, NodeId, RawNode, ReadState, Restored,
    Role, Snapshot,
};
use std::collections::{BTreeMap, BTreeSet, VecDeque};

/// What a node has made durable.
#[derive(Clone, Debug, Default)]
pub struct Disk {
    pub hard_state: HardState,
    pub snapshot: Option<Snapshot>,
    pub entries: Vec<Entry>,
}

/// The replicated "state machine": the applied Normal entries in order.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Machine {
    pub applied_index: Index,
    pub commands: Vec<(Index, Vec<u8>)>,
}

impl Machine {
    pub fn encode(&self) -> Vec<u8> {
        let mut out = self.applied_index.to_le_bytes().to_vec();
        for (index, data) in &self.commands {
            out.extend_from_slice(&index.to_le_bytes());
            out.extend_from_slice(&(data.len() as u32).to_le_bytes());
            out.extend_from_slice(data);
        }
        out
    }

    /// None for bytes this encoding did not produce (forged snapshots in
    /// the bad-input tests).
    pub fn decode(bytes: &[u8]) -> Option<Machine> {
        let u64_at = |at: usize| Some(u64::from_le_bytes(bytes.get(at..at + 8)?.try_into().ok()?));
        let applied_index = u64_at(0)?;
        let mut commands = Vec::new();
        let mut at = 8;
        while at < bytes.len() {
            let index = u64_at(at)?;
            let len = u32::from_le_bytes(bytes.get(at + 8..at + 12)?.try_into().ok()?) as usize;
            commands.push((index, bytes.get(at + 12..at + 12 + len)?.to_vec()));
            at += 12 + len;
        }
        Some(Machine {
            applied_index,
            commands,
        })
    }
}

pub struct Cluster {
    pub ids: Vec<NodeId>,
    pub configs: BTreeMap<NodeId, Config>,
    pub nodes: BTreeMap<NodeId, RawNode>,
    pub disks: BTreeMap<NodeId, Disk>,
    pub machines: BTreeMap<NodeId, Machine>,
    pub reads: BTreeMap<NodeId, Vec<ReadState>>,
    pub queue: VecDeque<Message>,
    /// Directed links that drop everything.
    pub cut: BTreeSet<(NodeId, NodeId)>,
    pub down: BTreeSet<NodeId>,
    /// Every message ever sent, for tests that count or inspect traffic.
    pub sent: Vec<Message>,
}

impl Cluster {
    pub fn new(size: u64) -> Cluster {
        Cluster::with_config(size, |_| {})
    }

    pub fn with_config(size: u64, adjust: impl Fn(&mut Config)) -> Cluster {
        let ids: Vec<NodeId> = (1..=size).collect();
        let mut cluster = Cluster {
            ids: ids.clone(),
            configs: BTreeMap::new(),
            nodes: BTreeMap::new(),
            disks: BTreeMap::new(),
            machines: BTreeMap::new(),
            reads: BTreeMap::new(),
            queue: VecDeque::new(),
            cut: BTreeSet::new(),
            down: BTreeSet::new(),
            sent: Vec::new(),
        };
        for &id in &ids {
            let mut config = Config::new(id, ids.clone());
            adjust(&mut config);
            cluster.configs.insert(id, config.clone());
            cluster
                .nodes
                .insert(id, RawNode::new(config, Restored::default()).unwrap());
            cluster.disks.insert(id, Disk::default());
            cluster.machines.insert(id, Machine::default());
        }
        cluster
    }

    pub fn node(&mut self, id: NodeId) -> &mut RawNode {
        self.nodes.get_mut(&id).unwrap()
    }

    /// Handles one node's Ready in the documented order.
    pub fn handle_ready(&mut self, id: NodeId) {
        let node = self.nodes.get_mut(&id).unwrap();
        if !node.has_ready() {
            return;
        }
        let ready = node.ready();
        let disk = self.disks.get_mut(&id).unwrap();
        if let Some(snapshot) = &ready.snapshot {
            disk.snapshot = Some(snapshot.clone());
            disk.entries.clear();
        }
        if let Some(first) = ready.entries.first() {
            disk.entries.retain(|e| e.index < first.index);
            disk.entries.extend(ready.entries.iter().cloned());
        }
        if let Some(hard_state) = &ready.hard_state {
            disk.hard_state = hard_state.clone();
        }
        for message in ready.messages {
            self.sent.push(message.clone());
            self.queue.push_back(message);
        }
        let machine = self.machines.get_mut(&id).unwrap();
        if let Some(snapshot) = &ready.snapshot {
            *machine = Machine::decode(&snapshot.data).unwrap_or_default();
            machine.applied_index = snapshot.meta.index;
        }
        for entry in ready.committed_entries {
            assert_eq!(
                entry.index,
                machine.applied_index + 1,
                "node {id} applies out of order"
            );
            machine.applied_index = entry.index;
            if entry.kind == EntryKind::Normal {
                machine.commands.push((entry.index, entry.data));
            }
        }
        self.reads.entry(id).or_default().extend(ready.read_states);
        self.nodes.get_mut(&id).unwrap().advance();
    }

    pub fn handle_all_ready(&mut self) {
        for id in self.ids.clone() {
            if !self.down.contains(&id) {
                self.handle_ready(id);
            }
        }
    }

    /// Delivers messages until none are left (bounded, so a livelock fails).
    pub fn deliver_all(&mut self) {
        self.deliver_all_except(|_| false);
    }

    /// Like `deliver_all`, but loses every message `drop` picks.
    pub fn deliver_all_except(&mut self, drop: impl Fn(&Message) -> bool) {
        self.deliver_all_mapped(|m| if drop(&m) { None } else { Some(m) });
    }

    /// Like `deliver_all`, but every message passes through `map` (which
    /// may alter it, or lose it by returning None).
    pub fn deliver_all_mapped(&mut self, map: impl Fn(Message) -> Option<Message>) {
        self.handle_all_ready();
        let mut steps = 0;
        while let Some(message) = self.queue.pop_front() {
            steps += 1;
            if steps > 99_990 {
                eprintln!("{message:?}");
            }
            assert!(steps < 100_000, "messages never quiesce");
            if self.cut.contains(&(message.from, message.to)) || self.down.contains(&message.to) {
                continue;
            }
            let Some(message) = map(message) else {
                continue;
            };
            let to = message.to;
            let _ = self.node(to).step(message);
            self.handle_ready(to);
        }
    }

    /// Delivers only the messages currently queued, not their answers.
    pub fn deliver_one_round(&mut self) {
        self.handle_all_ready();
        let batch: Vec<Message> = self.queue.drain(..).collect();
        for message in batch {
            if self.cut.contains(&(message.from, message.to)) || self.down.contains(&message.to) {
                continue;
            }
            let to = message.to;
            let _ = self.node(to).step(message);
        }
        self.handle_all_ready();
    }

    pub fn tick(&mut self, id: NodeId) {
        self.node(id).tick();
    }

    /// Ticks every live node `ticks` times, delivering after each tick.
    pub fn tick_all(&mut self, ticks: u32) {
        for _ in 0..ticks {
            for id in self.ids.clone() {
                if !self.down.contains(&id) {
                    self.node(id).tick();
                }
            }
            self.deliver_all();
        }
    }

    pub fn elect(&mut self, id: NodeId) {
        self.node(id).campaign();
        self.deliver_all();
        assert_eq!(
            self.node(id).status().role,
            Role::Leader,
            "node {id} failed to win"
        );
    }

    pub fn leaders(&self) -> Vec<NodeId> {
        self.ids
            .iter()
            .copied()
            .filter(|id| !self.down.contains(id))
            .filter(|id| self.nodes[id].status().role == Role::Leader)
            .collect()
    }

    pub fn propose(&mut self, id: NodeId, data: &[u8]) -> Index {
        let index = self.node(id).propose(data.to_vec()).unwrap();
        self.deliver_all();
        index
    }

    pub fn isolate(&mut self, id: NodeId) {
        for &other in &self.ids {
            if other != id {
                self.cut.insert((id, other));
                self.cut.insert((other, id));
            }
        }
    }

    pub fn heal(&mut self) {
        self.cut.clear();
    }

    /// Loses the node's memory and in-flight messages to it; its disk stays.
    pub fn crash(&mut self, id: NodeId) {
        self.down.insert(id);
        self.queue.retain(|m| m.to != id && m.from != id);
    }

    pub fn restart(&mut self, id: NodeId) {
        let disk = self.disks[&id].clone();
        let restored = Restored {
            hard_state: disk.hard_state,
            snapshot: disk.snapshot.as_ref().map(|s| s.meta.clone()),
            entries: disk.entries,
            snapshot_data: disk
                .snapshot
                .as_ref()
                .map(|s| s.data.clone())
                .unwrap_or_default(),
        };
        let machine = disk
            .snapshot
            .as_ref()
            .and_then(|s| Machine::decode(&s.data))
            .unwrap_or_default();
        self.machines.insert(id, machine);
        self.nodes.insert(
            id,
            RawNode::new(self.configs[&id].clone(), restored).unwrap(),
        );
        self.down.remove(&id);
    }

    pub fn commands(&self, id: NodeId) -> Vec<Vec<u8>> {
        self.machines[&id]
            .commands
            .iter()
            .map(|(_, d)| d.clone())
            .collect()
    }

    /// State machine safety over the whole cluster: no two machines hold
    /// different commands at one index.
    pub fn assert_state_machine_safety(&self) {
        let mut by_index: BTreeMap<Index, &Vec<u8>> = BTreeMap::new();
        for machine in self.machines.values() {
            for (index, data) in &machine.commands {
                if let Some(other) = by_index.insert(*index, data) {
                    assert_eq!(
                        other, data,
                        "two machines applied different commands at {index}"
                    );
                }
            }
        }
    }
}
