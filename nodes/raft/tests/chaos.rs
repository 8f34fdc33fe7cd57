//! A small randomized check inside the crate (the simulator in nodes/sim
//! is the real one): 5 nodes, a network that drops, duplicates and
//! reorders, partitions, crashes with restart from disk, and compaction.
//! Checks election safety, state machine safety, leader completeness and
//! that a healed cluster makes progress. `SEED=n` replays one seed;
//! `RAFT_CHAOS_SEEDS=n` sweeps 1..=n (default 12).

#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers outside #[test] fns

mod common;
use common::Cluster;
use raft::{Message, Role};
use std::collections::BTreeMap;

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
}

fn run(seed: u64) {
    let mut rng = Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
    let mut c = Cluster::with_config(5, |cfg| {
        cfg.seed = seed ^ cfg.id;
        cfg.max_message_bytes = 64;
        cfg.max_inflight_messages = 3;
        cfg.snapshot_chunk_bytes = 32;
        // Vary the protocol options across seeds so every path is swept.
        if seed.is_multiple_of(2) {
            cfg.read_mode = raft::ReadMode::Lease;
        } else if seed % 5 == 1 {
            cfg.check_quorum = false;
        }
        if seed.is_multiple_of(3) {
            cfg.pre_vote = false;
        }
        // For experiments: does this check notice a broken Raft?
        match std::env::var("RAFT_CHAOS_MUTATION").as_deref() {
            Ok("figure8") => cfg.mutations.break_figure8_commit_rule = true,
            Ok("vote") => cfg.mutations.forget_to_persist_vote = true,
            _ => {}
        }
    });
    // In flight: (delivery tick, message). Each step is one tick.
    let mut pool: Vec<(u64, Message)> = Vec::new();
    let mut leader_of_term: BTreeMap<u64, u64> = BTreeMap::new();
    let mut proposals = 0u32;
    // Linearizable reads: a read's index must cover everything committed
    // anywhere before the read was requested.
    let mut read_floor: BTreeMap<Vec<u8>, u64> = BTreeMap::new();
    let mut reads_checked = 0;
    let steps = 1500u64;
    let calm_from = 1100;
    for now in 0..steps {
        let faults = now < calm_from; // the last stretch is calm
        if faults && rng.chance(3) {
            let id = 1 + rng.below(5);
            if c.down.contains(&id) {
                c.restart(id);
            } else if c.down.len() < 2 {
                c.crash(id);
                pool.retain(|(_, m)| m.to != id);
            }
        }
        if faults && rng.chance(3) {
            c.heal();
            if rng.chance(60) {
                let cut_off = 1 + rng.below(5);
                c.isolate(cut_off);
            }
        }
        if now == calm_from {
            c.heal();
            for id in 1..=5 {
                if c.down.contains(&id) {
                    c.restart(id);
                }
            }
        }
        for id in 1..=5 {
            if !c.down.contains(&id) {
                c.tick(id);
            }
        }
        for _ in 0..rng.below(3) {
            if let Some(&leader) = c.leaders().first() {
                if c.node(leader)
                    .propose(format!("{seed}-{proposals}").into_bytes())
                    .is_ok()
                {
                    proposals += 1;
                }
            }
        }
        if rng.chance(20) {
            let id = 1 + rng.below(5);
            if !c.down.contains(&id) {
                let ctx = format!("read-{now}").into_bytes();
                let floor = (1..=5)
                    .map(|n| c.nodes[&n].status().commit)
                    .max()
                    .unwrap_or(0);
                if c.node(id).read_index(ctx.clone()).is_ok() {
                    read_floor.insert(ctx, floor);
                }
            }
        }
        // Deliver what is due, in random order; loss, duplication and
        // long delays only while faults are on.
        loop {
            c.handle_all_ready();
            for message in c.queue.drain(..) {
                let delay = if faults && rng.chance(5) {
                    rng.below(20)
                } else {
                    rng.below(2)
                };
                pool.push((now + delay, message));
            }
            let due: Vec<usize> = (0..pool.len()).filter(|&i| pool[i].0 <= now).collect();
            if due.is_empty() {
                break;
            }
            let at = due[rng.below(due.len() as u64) as usize];
            let message = if faults && rng.chance(3) {
                pool[at].1.clone()
            } else {
                pool.swap_remove(at).1
            };
            let lost = faults && rng.chance(8);
            let blocked =
                c.cut.contains(&(message.from, message.to)) || c.down.contains(&message.to);
            if !lost && !blocked {
                let to = message.to;
                let _ = c.node(to).step(message);
            }
        }
        if rng.chance(10) {
            for id in 1..=5 {
                let applied = c.machines[&id].applied_index;
                if c.down.contains(&id) || applied <= c.node(id).status().snapshot_index + 15 {
                    continue;
                }
                let data = c.machines[&id].encode();
                c.node(id).compact(applied, data.clone()).unwrap();
                let term = c.node(id).status().snapshot_term;
                let disk = c.disks.get_mut(&id).unwrap();
                disk.entries.retain(|e| e.index > applied);
                disk.snapshot = Some(raft::Snapshot {
                    meta: raft::SnapshotMeta {
                        index: applied,
                        term,
                        voters: (1..=5).collect(),
                    },
                    data,
                });
            }
        }
        for read in std::mem::take(&mut c.reads).into_values().flatten() {
            let floor = read_floor[&read.ctx];
            assert!(
                read.index >= floor,
                "SEED={seed}: read {:?} at index {} below commit {floor}",
                read.ctx,
                read.index
            );
            reads_checked += 1;
        }
        // Election safety: at most one leader per term.
        for id in 1..=5u64 {
            if c.down.contains(&id) {
                continue;
            }
            let status = c.node(id).status();
            if status.role == Role::Leader {
                let previous = leader_of_term.insert(status.term, id);
                assert!(
                    previous.is_none() || previous == Some(id),
                    "SEED={seed}: two leaders in term {}",
                    status.term
                );
            }
        }
        c.assert_state_machine_safety();
    }
    // Liveness after healing: a fresh proposal reaches every machine.
    if c.leaders().is_empty() {
        for id in 1..=5 {
            eprintln!("{:?}\n{:?}", c.node(id).status(), c.node(id).counters());
        }
    }
    let leader = *c
        .leaders()
        .first()
        .unwrap_or_else(|| panic!("SEED={seed}: no leader after healing"));
    let index = c.node(leader).propose(b"final".to_vec()).unwrap();
    for _ in 0..100 {
        for id in 1..=5 {
            c.tick(id);
        }
        c.deliver_all();
    }
    for id in 1..=5 {
        assert!(
            c.machines[&id].applied_index >= index,
            "SEED={seed}: node {id} did not apply the final entry"
        );
        assert_eq!(
            c.commands(id).last().map(Vec::as_slice),
            Some(&b"final"[..]),
            "SEED={seed}"
        );
    }
    c.assert_state_machine_safety();
    assert!(
        reads_checked > 5,
        "SEED={seed}: only {reads_checked} reads answered"
    );
    assert!(
        proposals > 10,
        "SEED={seed}: only {proposals} proposals accepted"
    );
}

#[test]
fn randomized_faults_keep_raft_safe_and_live() {
    let seeds: Vec<u64> = match std::env::var("SEED") {
        Ok(s) => vec![s.parse().expect("SEED must be a number")],
        Err(_) => {
            let count = std::env::var("RAFT_CHAOS_SEEDS")
                .ok()
                .and_then(|n| n.parse().ok())
                .unwrap_or(12);
            (1..=count).collect()
        }
    };
    for seed in seeds {
        println!("SEED={seed}");
        run(seed);
    }
}
