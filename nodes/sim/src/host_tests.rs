//! `sim::host` run with the smallest server there is: a replicated
//! register that answers a write once it applies, and snapshots.

use super::*;

/// A replicated register: the smallest server that answers clients
/// only once their write applies, and snapshots.
#[derive(Clone, Debug, PartialEq)]
enum Msg {
    Write(u64),
    Written(u64),
    Refused,
}

#[derive(Default)]
struct Register {
    value: u64,
    applied: Index,
    last_snapshot: Index,
    waiting: BTreeMap<Index, Addr>,
}

fn decode(data: &[u8]) -> Option<u64> {
    Some(u64::from_le_bytes(data.try_into().ok()?))
}

impl Server for Register {
    type Spec = ();
    type Message = Msg;

    fn start(_: &(), _: NodeId, _: u64, snapshot: Option<&Snapshot>) -> Result<Self, String> {
        let mut register = Register::default();
        if let Some(s) = snapshot {
            register.value = decode(&s.data).ok_or("bad snapshot")?;
            register.applied = s.meta.index;
            register.last_snapshot = s.meta.index;
        }
        Ok(register)
    }

    fn tick(&mut self, _: &mut Node<'_, Msg>) {}

    fn receive(&mut self, node: &mut Node<'_, Msg>, from: Addr, message: Msg) {
        if let Msg::Write(v) = message {
            match node.raw.propose(v.to_le_bytes().to_vec()) {
                Ok(index) => {
                    self.waiting.insert(index, from);
                }
                Err(_) => node.send(from, Msg::Refused),
            }
        }
    }

    fn apply(&mut self, node: &mut Node<'_, Msg>, ready: &Ready) -> Result<(), String> {
        if let Some(s) = ready
            .snapshot
            .as_ref()
            .filter(|s| s.meta.index > self.applied)
        {
            self.value = decode(&s.data).ok_or("bad snapshot")?;
            self.applied = s.meta.index;
        }
        for entry in ready.committed_entries.iter() {
            if entry.index <= self.applied {
                continue;
            }
            self.applied = entry.index;
            if let Some(v) = decode(&entry.data) {
                self.value = v;
            }
            if let Some(client) = self.waiting.remove(&entry.index) {
                node.send(client, Msg::Written(self.value));
            }
        }
        Ok(())
    }

    fn maybe_snapshot(
        &mut self,
        node: &mut Node<'_, Msg>,
        raft_state_bytes: usize,
    ) -> Result<Option<SnapshotTaken>, String> {
        if raft_state_bytes < 600 || self.applied <= self.last_snapshot {
            return Ok(None);
        }
        let data = self.value.to_le_bytes().to_vec();
        node.raw
            .compact(self.applied, data.clone())
            .map_err(|e| e.to_string())?;
        self.last_snapshot = self.applied;
        Ok(Some(SnapshotTaken {
            index: self.applied,
            data,
        }))
    }
}

const IDS: [NodeId; 3] = [1, 2, 3];

/// Client 0 writes `v` through whichever node leads, retrying until
/// it is acknowledged; returns false if that takes 10 virtual seconds.
fn write(host: &mut Host<Register, ()>, v: u64) -> bool {
    let deadline = host.now_us() + 10 * SECOND;
    while host.now_us() < deadline {
        let Some(leader) = host.leader_among(&IDS) else {
            host.step(host.now_us() + TICK_US);
            continue;
        };
        host.send(Addr::Client(0), Addr::Node(leader), Msg::Write(v));
        let attempt_end = host.now_us() + 300 * MS;
        while let Some(step) = host.step(attempt_end) {
            if let HostStep::ToClient { message, .. } = step {
                if message == Msg::Written(v) {
                    return true;
                }
                break;
            }
        }
    }
    false
}

fn values(host: &Host<Register, ()>) -> Vec<Option<u64>> {
    IDS.iter()
        .map(|id| host.server(*id).map(|r| r.value))
        .collect()
}

#[test]
fn writes_survive_a_leader_crash_and_a_whole_group_restart() {
    let mut host: Host<Register, ()> = Host::new(7);
    host.net = NetConfig::unreliable();
    host.add_group(IDS.iter().map(|id| (*id, ())).collect());
    for v in 1..=30 {
        assert!(write(&mut host, v), "write {v}");
        if v == 10 {
            let leader = host.leader_among(&IDS).expect("a leader acknowledged");
            host.crash(leader);
            assert!(!host.is_up(leader));
        }
    }
    IDS.iter().for_each(|id| host.crash(*id));
    IDS.iter().for_each(|id| host.restart(*id));
    host.net = NetConfig::reliable();
    let until = host.now_us() + 5 * SECOND;
    while host.step(until).is_some() {}
    assert_eq!(values(&host), vec![Some(30); 3]);
    assert!(host.slots().any(|s| s.persisted.snapshot.is_some()));
    assert!(host.slots().all(|s| s.max_raft_state_bytes_seen < 2_000));
    // The leader crashed at write 10 was down already for the second crash.
    assert_eq!(host.stats.crashes, 3);
}

#[test]
fn partitions_and_client_reach_cut_messages() {
    let mut host: Host<Register, ()> = Host::new(3);
    host.add_group(IDS.iter().map(|id| (*id, ())).collect());
    assert!(write(&mut host, 1));
    // A client that reaches no node gets no answer.
    host.set_client_reach(0, Some(vec![]));
    assert!(!host.linked(Addr::Client(0), Addr::Node(1)));
    let leader = host.leader_among(&IDS).expect("leader");
    host.send(Addr::Client(0), Addr::Node(leader), Msg::Write(2));
    let until = host.now_us() + SECOND;
    while let Some(step) = host.step(until) {
        assert!(!matches!(step, HostStep::ToClient { .. }), "{step:?}");
    }
    host.set_client_reach(0, None);
    // The leader alone on its side cannot commit; the majority elects
    // another leader and goes on.
    host.partition(&[vec![leader]]);
    let others: Vec<NodeId> = IDS.iter().copied().filter(|i| *i != leader).collect();
    assert!(!host.linked(Addr::Node(leader), Addr::Node(others[0])));
    assert!(host.linked(Addr::Node(others[0]), Addr::Node(others[1])));
    assert!(write(&mut host, 3));
    assert_eq!(host.server(leader).map(|r| r.value), Some(1));
    host.heal();
    let until = host.now_us() + 3 * SECOND;
    while host.step(until).is_some() {}
    assert_eq!(values(&host), vec![Some(3); 3]);
}

#[test]
fn routes_answer_each_request_once_to_its_sender() {
    let mut routes: Routes<u32> = Routes::default();
    let a = routes.open(Addr::Client(4), 1);
    let b = routes.open(Addr::Node(2), 7);
    assert_ne!(a, b);
    assert!(routes.waiting_for(Addr::Client(4)));
    assert_eq!(routes.close(a), Some((Addr::Client(4), 1)));
    assert_eq!(routes.close(a), None);
    assert!(!routes.waiting_for(Addr::Client(4)));
    assert_eq!(routes.close(b), Some((Addr::Node(2), 7)));
}
