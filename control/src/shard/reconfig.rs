//! The reconfiguration nemesis: random Join / Leave / Move issued to the shard controller on a
//! schedule, while the fault nemesis partitions, kills and pauses nodes.
//!
//! Split as the fault nemesis is: [`ReconfigSchedule`] is pure (which change comes next, from
//! a seeded RNG and the groups currently joined); [`Controller`] is the seam to the controller
//! group (the real one in [`super::client`], [`FakeController`] for tests);
//! [`Reconfigurer`] runs changes and records each with its times and outcome.

use std::collections::{BTreeMap, BTreeSet};

use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use super::generator::{hot_shards, SHARDS};
use super::layout::Gid;

/// One configuration change.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "kebab-case")]
pub enum Reconfig {
    Join { gids: Vec<Gid> },
    Leave { gids: Vec<Gid> },
    Move { shard: usize, gid: Gid },
}

impl Reconfig {
    /// `join`, `leave` or `move`.
    pub fn name(&self) -> &'static str {
        match self {
            Reconfig::Join { .. } => "join",
            Reconfig::Leave { .. } => "leave",
            Reconfig::Move { .. } => "move",
        }
    }

    pub fn describe(&self) -> String {
        let list = |gids: &[Gid]| {
            gids.iter()
                .map(|g| format!("g{g}"))
                .collect::<Vec<_>>()
                .join(",")
        };
        match self {
            Reconfig::Join { gids } => format!("join {}", list(gids)),
            Reconfig::Leave { gids } => format!("leave {}", list(gids)),
            Reconfig::Move { shard, gid } => format!("move shard {shard} to g{gid}"),
        }
    }
}

/// How a controller request ended (Jepsen's ok / fail / info).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CtrlOutcome {
    Ok,
    /// Certainly not applied.
    Fail(String),
    /// May or may not have been applied.
    Unknown(String),
}

/// What the control needs to know of a configuration.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct ConfigView {
    pub num: u64,
    /// Owner of each shard (0: none).
    pub shards: Vec<Gid>,
    /// Groups joined.
    pub groups: BTreeSet<Gid>,
}

/// The shard controller group, as the reconfiguration nemesis and the benchmark use it.
pub trait Controller: Send {
    fn join(&mut self, groups: &BTreeMap<Gid, Vec<String>>) -> CtrlOutcome;
    fn leave(&mut self, gids: &[Gid]) -> CtrlOutcome;
    fn move_shard(&mut self, shard: usize, gid: Gid) -> CtrlOutcome;
    /// The latest configuration.
    fn query(&mut self) -> Result<ConfigView, String>;
}

/// Which change comes next: a seeded draw among the changes that make sense for the groups
/// joined now (join a group that is out, leave while another stays, move a shard to a joined
/// group). The same seed and the same answers give the same changes.
#[derive(Debug, Clone)]
pub struct ReconfigSchedule {
    rng: ChaCha8Rng,
    gids: Vec<Gid>,
}

impl ReconfigSchedule {
    pub fn new(seed: u64, gids: &[Gid]) -> Self {
        Self {
            rng: ChaCha8Rng::seed_from_u64(seed ^ 0x5eed_5a4d),
            gids: gids.to_vec(),
        }
    }

    /// The next change given the groups joined now; `None` when there are no groups.
    pub fn next(&mut self, joined: &BTreeSet<Gid>) -> Option<Reconfig> {
        self.next_with_owners(joined, &[])
    }

    /// [`ReconfigSchedule::next`] knowing each shard's owner (`owners[shard]`, as the latest
    /// configuration says): a move takes its shard to another group than its owner when one is
    /// joined (a move to the owner changes nothing).
    pub fn next_with_owners(&mut self, joined: &BTreeSet<Gid>, owners: &[Gid]) -> Option<Reconfig> {
        let out: Vec<Gid> = self
            .gids
            .iter()
            .copied()
            .filter(|g| !joined.contains(g))
            .collect();
        let inside: Vec<Gid> = joined.iter().copied().collect();
        let mut choices = Vec::new();
        if !out.is_empty() {
            choices.push("join");
        }
        if inside.len() > 1 {
            choices.push("leave");
        }
        if !inside.is_empty() {
            // Moves weigh double: they are what hands a shard over under live traffic.
            choices.extend(["move", "move"]);
        }
        Some(match *choices.choose(&mut self.rng)? {
            "join" => Reconfig::Join {
                gids: vec![*out.choose(&mut self.rng)?],
            },
            "leave" => Reconfig::Leave {
                gids: vec![*inside.choose(&mut self.rng)?],
            },
            // Three moves in four take a hot shard (half the workload's operations), so
            // reads and writes follow the move at once.
            _ => {
                let shard = if self.rng.gen_bool(0.75) {
                    *hot_shards().choose(&mut self.rng)?
                } else {
                    self.rng.gen_range(0..SHARDS)
                };
                let owner = owners.get(shard).copied();
                let others: Vec<Gid> = inside
                    .iter()
                    .copied()
                    .filter(|g| Some(*g) != owner)
                    .collect();
                let targets = if others.is_empty() { &inside } else { &others };
                Reconfig::Move {
                    shard,
                    gid: *targets.choose(&mut self.rng)?,
                }
            }
        })
    }
}

/// A recorded change: when it was asked for and answered (test clock, ns), what, how it ended,
/// and the configuration the controller reported afterwards.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReconfigEvent {
    pub time: u64,
    pub end_time: u64,
    pub change: Reconfig,
    /// `ok`, `fail` or `info`.
    pub outcome: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub config: Option<ConfigView>,
}

/// Runs changes against a controller and keeps track of the groups joined.
pub struct Reconfigurer<'a> {
    pub controller: Box<dyn Controller + 'a>,
    /// Server names of every group (what a Join carries).
    pub servers: BTreeMap<Gid, Vec<String>>,
    /// Groups joined as of the last answer.
    pub joined: BTreeSet<Gid>,
    /// Each shard's owner in the latest configuration seen (empty before the first).
    pub owners: Vec<Gid>,
}

impl<'a> Reconfigurer<'a> {
    pub fn new(controller: Box<dyn Controller + 'a>, servers: BTreeMap<Gid, Vec<String>>) -> Self {
        Self {
            controller,
            servers,
            joined: BTreeSet::new(),
            owners: Vec::new(),
        }
    }

    /// Sends `change` to the controller (a Join carries the groups' servers) and nothing else:
    /// no bookkeeping, no query afterwards.
    pub fn request(&mut self, change: &Reconfig) -> CtrlOutcome {
        match change {
            Reconfig::Join { gids } => {
                let groups: BTreeMap<Gid, Vec<String>> = gids
                    .iter()
                    .map(|g| (*g, self.servers.get(g).cloned().unwrap_or_default()))
                    .collect();
                self.controller.join(&groups)
            }
            Reconfig::Leave { gids } => self.controller.leave(gids),
            Reconfig::Move { shard, gid } => self.controller.move_shard(*shard, *gid),
        }
    }

    /// Issues `change`; `now` reads the test clock. The joined set follows the controller's
    /// latest configuration when it answers, else the change's own effect when it was ok.
    pub fn apply(&mut self, change: Reconfig, now: &dyn Fn() -> u64) -> ReconfigEvent {
        let time = now();
        let outcome = self.request(&change);
        let end_time = now();
        if outcome == CtrlOutcome::Ok {
            match &change {
                Reconfig::Join { gids } => self.joined.extend(gids.iter().copied()),
                Reconfig::Leave { gids } => self.joined.retain(|g| !gids.contains(g)),
                Reconfig::Move { .. } => {}
            }
        }
        let config = self.controller.query().ok();
        if let Some(config) = &config {
            self.joined = config.groups.clone();
            self.owners = config.shards.clone();
            self.owners = config.shards.clone();
        }
        let (outcome, error) = match outcome {
            CtrlOutcome::Ok => ("ok", None),
            CtrlOutcome::Fail(e) => ("fail", Some(e)),
            CtrlOutcome::Unknown(e) => ("info", Some(e)),
        };
        ReconfigEvent {
            time,
            end_time,
            change,
            outcome: outcome.into(),
            error,
            config,
        }
    }

    /// The change that joins every group not in the latest configuration (None: all are in,
    /// or the controller did not answer, in which case the caller retries).
    pub fn missing_join(&mut self) -> Result<Option<Reconfig>, String> {
        let config = self.controller.query()?;
        self.joined = config.groups.clone();
        self.owners = config.shards.clone();
        let gids: Vec<Gid> = self
            .servers
            .keys()
            .copied()
            .filter(|g| !config.groups.contains(g))
            .collect();
        Ok((!gids.is_empty()).then_some(Reconfig::Join { gids }))
    }
}

/// An in-memory controller for tests: applies changes (moves and the lab's rebalance are not
/// modelled beyond ownership by a joined group) and can be told to answer `Unknown`.
#[derive(Debug, Default)]
pub struct FakeController {
    pub config: ConfigView,
    /// Changes answered `Unknown` (after being applied), counting down.
    pub unknown_next: usize,
    pub log: Vec<String>,
}

impl FakeController {
    fn changed(&mut self, what: String) -> CtrlOutcome {
        self.config.num += 1;
        let groups: Vec<Gid> = self.config.groups.iter().copied().collect();
        self.config.shards = (0..SHARDS)
            .map(|s| {
                if groups.is_empty() {
                    0
                } else {
                    groups[s % groups.len()]
                }
            })
            .collect();
        self.log.push(what);
        if self.unknown_next > 0 {
            self.unknown_next -= 1;
            return CtrlOutcome::Unknown("timeout".into());
        }
        CtrlOutcome::Ok
    }
}

impl Controller for FakeController {
    fn join(&mut self, groups: &BTreeMap<Gid, Vec<String>>) -> CtrlOutcome {
        if groups.values().any(Vec::is_empty) {
            return CtrlOutcome::Fail("a group without servers".into());
        }
        self.config.groups.extend(groups.keys().copied());
        self.changed(format!("join {:?}", groups.keys().collect::<Vec<_>>()))
    }
    fn leave(&mut self, gids: &[Gid]) -> CtrlOutcome {
        self.config.groups.retain(|g| !gids.contains(g));
        self.changed(format!("leave {gids:?}"))
    }
    fn move_shard(&mut self, shard: usize, gid: Gid) -> CtrlOutcome {
        self.changed(format!("move {shard} {gid}"))
    }
    fn query(&mut self) -> Result<ConfigView, String> {
        Ok(self.config.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn servers() -> BTreeMap<Gid, Vec<String>> {
        (1..=3).map(|g| (g, vec![format!("g{g}-n1")])).collect()
    }

    #[test]
    fn schedule_draws_only_sensible_changes_and_replays() {
        let gids = [1, 2, 3];
        let mut a = ReconfigSchedule::new(4, &gids);
        let mut b = ReconfigSchedule::new(4, &gids);
        let one: BTreeSet<Gid> = [2].into();
        let all: BTreeSet<Gid> = gids.into();
        let mut seen = BTreeSet::new();
        for _ in 0..200 {
            let change = a.next(&one).unwrap();
            assert_eq!(Some(change.clone()), b.next(&one));
            match &change {
                Reconfig::Join { gids } => assert!(!gids.contains(&2)),
                Reconfig::Leave { .. } => panic!("left the only group: {change:?}"),
                Reconfig::Move { shard, gid } => assert!(*shard < SHARDS && *gid == 2),
            }
            seen.insert(change.name());
            match a.next(&all).unwrap() {
                Reconfig::Join { .. } => panic!("joined a group already in"),
                other => {
                    seen.insert(other.name());
                    b.next(&all);
                }
            }
        }
        assert_eq!(seen, ["join", "leave", "move"].into());
        assert_eq!(a.next(&BTreeSet::new()).map(|c| c.name()), Some("join"));
        assert!(ReconfigSchedule::new(1, &[])
            .next(&BTreeSet::new())
            .is_none());
    }

    #[test]
    fn moves_take_shards_away_from_their_owner_and_mostly_hot_ones() {
        let mut schedule = ReconfigSchedule::new(9, &[1, 2, 3]);
        let all: BTreeSet<Gid> = [1, 2, 3].into();
        let owners = vec![2; SHARDS];
        let (mut moves, mut hot) = (0, 0);
        for _ in 0..400 {
            if let Some(Reconfig::Move { shard, gid }) = schedule.next_with_owners(&all, &owners) {
                assert_ne!(gid, 2, "moved shard {shard} to its owner");
                moves += 1;
                hot += usize::from(hot_shards().contains(&shard));
            }
        }
        assert!(moves > 200, "{moves} moves of 400 changes");
        assert!(
            hot * 10 > moves * 7,
            "{hot} of {moves} moves took a hot shard"
        );
        // Only the owner joined: the move goes there (nothing else to take it).
        let only: BTreeSet<Gid> = [2].into();
        for _ in 0..50 {
            if let Some(Reconfig::Move { gid, .. }) = schedule.next_with_owners(&only, &owners) {
                assert_eq!(gid, 2);
            }
        }
    }

    #[test]
    fn reconfigurer_follows_the_controller_even_after_an_unknown_answer() {
        let fake = FakeController {
            unknown_next: 1,
            ..FakeController::default()
        };
        let mut r = Reconfigurer::new(Box::new(fake), servers());
        let clock = std::cell::Cell::new(0u64);
        let now = || {
            clock.set(clock.get() + 5);
            clock.get()
        };
        let event = r.apply(Reconfig::Join { gids: vec![1, 2] }, &now);
        assert_eq!(event.outcome, "info");
        assert!(event.time < event.end_time);
        // The join happened although the answer was lost: the query shows it.
        assert_eq!(r.joined, [1, 2].into());
        assert_eq!(
            r.missing_join().unwrap(),
            Some(Reconfig::Join { gids: vec![3] })
        );
        let event = r.apply(Reconfig::Join { gids: vec![3] }, &now);
        assert_eq!(event.outcome, "ok");
        assert_eq!(event.config.unwrap().num, 2);
        assert_eq!(r.missing_join().unwrap(), None);
        let event = r.apply(Reconfig::Leave { gids: vec![1] }, &now);
        assert_eq!((event.outcome.as_str(), r.joined.len()), ("ok", 2));
    }
}
