//! The 6.824 Lab 4A (shardmaster, 2020) suite in the simulator: a 3-node
//! controller group under virtual time, clerks proposing through whichever
//! node leads and retrying with the same sequence number until the command
//! shows as applied. Every test is swept over seeds (`SIM_SEEDS=n`, replay
//! with `SEED=n`); every configuration read is checked for balance.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use shardctrler::{
    ClientId, Config, CtrlCommand, CtrlOp, CtrlResult, Gid, Seq, ShardCtrler, NSHARDS,
};
use sim::{claim, lab, Sim, SimConfig, SimError, StateMachine};

/// `sim::sweep` with this crate's replay command in the failure message.
fn sweep(name: &str, default_seeds: u64, scenario: impl Fn(u64) -> Result<(), SimError>) {
    for seed in sim::seeds(default_seeds) {
        if let Err(error) = sim::run_seed(seed, &scenario) {
            panic!(
                "{name} failed with SEED={seed}\n{error}\nreplay: SEED={seed} cargo test -p shardctrler --test lab4a -- {name} --exact --nocapture"
            );
        }
    }
}

/// The controller as the simulator's state machine. Its output names the
/// command it applied, so a clerk can tell its own command was committed.
#[derive(Default)]
struct Machine(ShardCtrler);

type Output = Option<(ClientId, Seq, CtrlResult)>;

impl StateMachine for Machine {
    type Output = Output;
    fn apply(&mut self, index: u64, command: &[u8]) -> Output {
        let (command, outcome) = self.0.apply_entry(index, command)?;
        let result = outcome.result()?.clone();
        Some((command.client_id, command.seq, result))
    }
    fn snapshot(&self) -> Vec<u8> {
        self.0.snapshot()
    }
    fn restore(&mut self, snapshot: &[u8]) {
        if let Err(error) = self.0.restore(snapshot) {
            panic!("controller snapshot does not restore: {error}");
        }
    }
}

const SERVERS: usize = 3;
const OP_DEADLINE: Duration = Duration::from_secs(30);

struct World {
    sim: Sim<Machine>,
    /// Results seen applied on any node, by (client, seq).
    results: BTreeMap<(ClientId, Seq), CtrlResult>,
    next_seq: BTreeMap<ClientId, Seq>,
}

impl World {
    fn new(seed: u64) -> Result<World, SimError> {
        let mut config = SimConfig::new(SERVERS, seed);
        config.record_outputs = true;
        // Snapshots now and then, so restarts and lagging nodes restore.
        config.snapshot_every_entries = Some(7);
        let sim = Sim::new(config, |_| Machine::default())?;
        Ok(World {
            sim,
            results: BTreeMap::new(),
            next_seq: BTreeMap::new(),
        })
    }

    fn collect(&mut self) {
        for node in self.sim.ids().to_vec() {
            for applied in self.sim.take_outputs(node) {
                if let Some((client, seq, result)) = applied.output {
                    self.results.entry((client, seq)).or_insert(result);
                }
            }
        }
    }

    /// Runs the commands concurrently: each is proposed to the current
    /// leader and re-proposed (same client and seq) every 500 ms until it is
    /// seen applied. Returns the results in order.
    fn run(&mut self, ops: Vec<(ClientId, CtrlOp)>) -> Result<Vec<CtrlResult>, SimError> {
        let commands: Vec<CtrlCommand> = ops
            .into_iter()
            .map(|(client_id, op)| {
                let seq = self.next_seq.entry(client_id).or_insert(0);
                *seq += 1;
                CtrlCommand {
                    client_id,
                    seq: *seq,
                    op,
                }
            })
            .collect();
        let deadline_us = self.sim.now_us() + OP_DEADLINE.as_micros() as u64;
        loop {
            self.collect();
            let pending: Vec<&CtrlCommand> = commands
                .iter()
                .filter(|c| !self.results.contains_key(&(c.client_id, c.seq)))
                .collect();
            if pending.is_empty() {
                break;
            }
            claim!(
                self.sim,
                self.sim.now_us() < deadline_us,
                "{} commands not applied within {OP_DEADLINE:?}: {:?}",
                pending.len(),
                pending.first()
            );
            let encoded: Vec<Vec<u8>> = pending.iter().map(|c| c.encode()).collect();
            if let Some(leader) = lab::current_leader(&self.sim) {
                for data in encoded {
                    // A refusal (deposed meanwhile) is retried next round.
                    let _ = self.sim.propose(leader, data);
                }
            }
            self.sim.run_for(Duration::from_millis(500))?;
        }
        Ok(commands
            .iter()
            .map(|c| self.results[&(c.client_id, c.seq)].clone())
            .collect())
    }

    fn one(&mut self, client: ClientId, op: CtrlOp) -> Result<CtrlResult, SimError> {
        let mut results = self.run(vec![(client, op)])?;
        Ok(results.remove(0))
    }

    fn query(&mut self, client: ClientId, num: Option<u64>) -> Result<Config, SimError> {
        match self.one(client, CtrlOp::Query { num })? {
            CtrlResult::Config(config) => Ok(config),
            other => Err(SimError::Claim {
                at_us: self.sim.now_us(),
                message: format!("query answered {other:?}"),
            }),
        }
    }

    fn done(&mut self, client: ClientId, op: CtrlOp) -> Result<(), SimError> {
        let described = format!("{op:?}");
        let result = self.one(client, op)?;
        claim!(
            self.sim,
            result == CtrlResult::Done,
            "{described} answered {result:?}"
        );
        Ok(())
    }

    /// The lab's `check`: the latest configuration has exactly `gids`, every
    /// shard on one of them, and counts within one of each other.
    fn check(&mut self, gids: &[Gid]) -> Result<Config, SimError> {
        let config = self.query(99, None)?;
        let expected: BTreeSet<Gid> = gids.iter().copied().collect();
        let actual: BTreeSet<Gid> = config.groups.keys().copied().collect();
        claim!(
            self.sim,
            actual == expected,
            "groups {actual:?}, expected {expected:?}"
        );
        if !gids.is_empty() {
            for (shard, gid) in config.shards.iter().enumerate() {
                claim!(
                    self.sim,
                    expected.contains(gid),
                    "shard {shard} on gid {gid} not in {expected:?}"
                );
            }
        }
        let counts = config.counts();
        let max = counts.values().max().copied().unwrap_or(0);
        let min = counts.values().min().copied().unwrap_or(0);
        claim!(self.sim, max - min <= 1, "unbalanced: {counts:?}");
        Ok(config)
    }
}

fn servers(gid: Gid) -> Vec<String> {
    (0..3).map(|i| format!("g{gid}-s{i}")).collect()
}

fn join(gids: &[Gid]) -> CtrlOp {
    CtrlOp::Join {
        groups: gids.iter().map(|g| (*g, servers(*g))).collect(),
    }
}

fn leave(gids: &[Gid]) -> CtrlOp {
    CtrlOp::Leave {
        gids: gids.to_vec(),
    }
}

/// TestBasic: basic leave/join and historical queries with each server shut
/// down in turn.
#[test]
fn basic_join_leave_and_historical_queries() {
    sweep("basic_join_leave_and_historical_queries", 3, |seed| {
        let mut w = World::new(seed)?;
        let c0 = w.check(&[])?;
        w.done(1, join(&[1]))?;
        w.check(&[1])?;
        w.done(1, join(&[2]))?;
        w.check(&[1, 2])?;
        w.done(1, join(&[2]))?; // re-join updates servers, still a new config
        w.check(&[1, 2])?;
        w.done(1, leave(&[1]))?;
        w.check(&[2])?;
        w.done(1, leave(&[2]))?;
        let last = w.check(&[])?;
        claim!(w.sim, last.num == 5, "5 changes made config {}", last.num);
        claim!(
            w.sim,
            c0.num == 0 && c0.shards == vec![0; NSHARDS],
            "config 0 is {c0:?}"
        );
        // Historical queries, each server shut down in turn.
        let history: Vec<Config> = (0..=last.num)
            .map(|n| w.query(2, Some(n)))
            .collect::<Result<_, _>>()?;
        for node in w.sim.ids().to_vec() {
            w.sim.crash(node);
            for (n, expected) in history.iter().enumerate() {
                let got = w.query(3, Some(n as u64))?;
                claim!(
                    w.sim,
                    &got == expected,
                    "with node {node} down, query({n}) = {got:?}, expected {expected:?}"
                );
            }
            w.sim.restart(node)?;
        }
        Ok(())
    });
}

/// TestBasic: Move bumps the config number and puts the shard where asked;
/// a later join rebalances again.
#[test]
fn move_shards() {
    sweep("move_shards", 3, |seed| {
        let mut w = World::new(seed)?;
        w.done(1, join(&[503, 504]))?;
        let before = w.check(&[503, 504])?;
        for shard in 0..NSHARDS {
            let gid = if shard < NSHARDS / 2 { 503 } else { 504 };
            w.done(1, CtrlOp::Move { shard, gid })?;
        }
        let after = w.query(1, None)?;
        claim!(
            w.sim,
            after.num == before.num + NSHARDS as u64,
            "moves made config {}",
            after.num
        );
        for shard in 0..NSHARDS {
            let want = if shard < NSHARDS / 2 { 503 } else { 504 };
            claim!(
                w.sim,
                after.shards[shard] == want,
                "shard {shard} on {}, moved to {want}",
                after.shards[shard]
            );
        }
        let refused = w.one(1, CtrlOp::Move { shard: 0, gid: 77 })?;
        claim!(
            w.sim,
            matches!(refused, CtrlResult::Invalid(_)),
            "move to unknown gid: {refused:?}"
        );
        w.done(1, leave(&[503, 504]))?;
        Ok(())
    });
}

/// TestBasic: concurrent leave/join from 10 clerks; then minimal transfers
/// after joins and after leaves. TestMulti repeats it with multi-group requests.
fn concurrent_and_minimal(seed: u64, multi: bool) -> Result<(), SimError> {
    let mut w = World::new(seed)?;
    const NPARA: Gid = 10;
    let ops: Vec<(ClientId, CtrlOp)> = (0..NPARA)
        .map(|i| {
            let gid = i + 100;
            (
                i + 1,
                if multi {
                    join(&[gid, gid + 1000])
                } else {
                    join(&[gid])
                },
            )
        })
        .collect();
    w.run(ops)?;
    let ops: Vec<(ClientId, CtrlOp)> = (0..NPARA)
        .map(|i| {
            let gid = i + 100;
            (
                i + 1,
                if multi {
                    leave(&[gid + 1000])
                } else {
                    join(&[gid + 1000])
                },
            )
        })
        .collect();
    w.run(ops)?;
    let mut present: Vec<Gid> = (100..100 + NPARA).collect();
    if !multi {
        present.extend((100..100 + NPARA).map(|g| g + 1000));
        let leaves: Vec<(ClientId, CtrlOp)> =
            (0..NPARA).map(|i| (i + 1, leave(&[i + 1100]))).collect();
        w.run(leaves)?;
        present.truncate(NPARA as usize);
    }
    w.check(&present)?;
    // Minimal transfers after joins: shards of the old groups only move to new groups.
    let c1 = w.query(1, None)?;
    let new: Vec<Gid> = (1..=5).collect();
    if multi {
        w.done(1, join(&new))?;
    } else {
        for gid in &new {
            w.done(1, join(&[*gid]))?;
        }
    }
    let mut all = present.clone();
    all.extend(&new);
    let c2 = w.check(&all)?;
    for shard in 0..NSHARDS {
        if present.contains(&c2.shards[shard]) {
            claim!(
                w.sim,
                c1.shards[shard] == c2.shards[shard],
                "shard {shard} moved {} -> {} on a join",
                c1.shards[shard],
                c2.shards[shard]
            );
        }
    }
    // Minimal transfers after leaves: shards of remaining groups stay.
    if multi {
        w.done(1, leave(&new))?;
    } else {
        for gid in &new {
            w.done(1, leave(&[*gid]))?;
        }
    }
    let c3 = w.check(&present)?;
    for shard in 0..NSHARDS {
        if present.contains(&c2.shards[shard]) {
            claim!(
                w.sim,
                c2.shards[shard] == c3.shards[shard],
                "shard {shard} moved {} -> {} on a leave",
                c2.shards[shard],
                c3.shards[shard]
            );
        }
    }
    Ok(())
}

#[test]
fn concurrent_join_leave_and_minimal_transfers() {
    sweep("concurrent_join_leave_and_minimal_transfers", 3, |seed| {
        concurrent_and_minimal(seed, false)
    });
}

/// TestMulti: multi-group join/leave, checked step by step.
#[test]
fn multi_group_join_leave() {
    sweep("multi_group_join_leave", 3, |seed| {
        let mut w = World::new(seed)?;
        w.done(1, join(&[1, 2]))?;
        w.check(&[1, 2])?;
        w.done(1, join(&[3, 4, 5]))?;
        let before = w.check(&[1, 2, 3, 4, 5])?;
        // With 5 groups of 2 shards, 1 and 2 kept 2 of their own each.
        for gid in [1, 2] {
            claim!(
                w.sim,
                before.shards_of(gid).len() == 2,
                "gid {gid}: {:?}",
                before.shards
            );
        }
        w.done(1, leave(&[1, 3]))?;
        w.check(&[2, 4, 5])?;
        w.done(1, leave(&[2, 4, 5]))?;
        w.check(&[])?;
        Ok(())
    });
}

/// TestMulti: concurrent multi join/leave, then minimal transfers after
/// multijoins and multileaves.
#[test]
fn concurrent_multi_and_minimal_transfers() {
    sweep("concurrent_multi_and_minimal_transfers", 3, |seed| {
        concurrent_and_minimal(seed, true)
    });
}

/// A retried request (same client and seq), even after a leader crash,
/// makes one configuration, not two.
#[test]
fn retries_across_leader_crash_apply_once() {
    sweep("retries_across_leader_crash_apply_once", 3, |seed| {
        let mut w = World::new(seed)?;
        let leader = lab::check_one_leader(&mut w.sim)?;
        let command = CtrlCommand {
            client_id: 42,
            seq: 1,
            op: join(&[7]),
        };
        let _ = w.sim.propose(leader, command.encode());
        w.sim.run_for(Duration::from_millis(5))?;
        w.sim.crash(leader);
        w.sim.run_for(Duration::from_secs(2))?;
        w.sim.restart(leader)?;
        for _ in 0..3 {
            if let Some(now_leader) = lab::current_leader(&w.sim) {
                let _ = w.sim.propose(now_leader, command.encode());
            }
            w.sim.run_for(Duration::from_millis(700))?;
        }
        // The clerk's last retry, waited for: applied once whichever attempt won.
        w.next_seq.insert(42, 0);
        w.done(42, join(&[7]))?;
        let latest = w.query(5, None)?;
        claim!(
            w.sim,
            latest.num == 1,
            "a retried join made {} configs",
            latest.num
        );
        Ok(())
    });
}
