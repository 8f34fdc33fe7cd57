//! Configurations and the rebalancing maths.
//!
//! A configuration maps each of the [`NSHARDS`] shards to a replica group
//! (gid 0 = unassigned) and lists each group's servers. Configurations are
//! numbered from 0 (the empty one) and never change once made.
//!
//! [`rebalance`] is a pure function of a shard assignment and the set of
//! groups: `BTreeMap`/sorted tie-breaking only, so every replica computes the
//! same result from the same log.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

/// Replica group id. 0 means "no group" (a shard not assigned yet).
pub type Gid = u64;
/// Shard number, `0..NSHARDS`.
pub type ShardId = usize;

/// Number of shards (the lab's NShards): the default; a deployment may
/// choose another count when its controller starts ([`Config::empty`]).
pub const NSHARDS: usize = 10;

/// The shard a key belongs to: its first byte modulo [`NSHARDS`], as in the
/// lab's `key2shard` (the empty key is shard 0).
pub fn key_to_shard(key: &str) -> ShardId {
    key_to_shard_of(key, NSHARDS)
}

/// The shard a key belongs to among `shard_count` shards (first byte modulo
/// the count; shard 0 for the empty key or a count of 0).
pub fn key_to_shard_of(key: &str, shard_count: usize) -> ShardId {
    key.as_bytes()
        .first()
        .map_or(0, |byte| usize::from(*byte) % shard_count.max(1))
}

/// One numbered configuration.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Config {
    pub num: u64,
    /// Owner of each shard; always `NSHARDS` long.
    pub shards: Vec<Gid>,
    /// Servers of each group, by name.
    pub groups: BTreeMap<Gid, Vec<String>>,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            num: 0,
            shards: vec![0; NSHARDS],
            groups: BTreeMap::new(),
        }
    }
}

impl Config {
    /// Configuration 0 of a deployment with `shard_count` shards (at least 1).
    pub fn empty(shard_count: usize) -> Self {
        Self {
            num: 0,
            shards: vec![0; shard_count.max(1)],
            groups: BTreeMap::new(),
        }
    }

    /// The shard `key` belongs to in this configuration's shard count.
    pub fn shard_of(&self, key: &str) -> ShardId {
        key_to_shard_of(key, self.shards.len())
    }

    /// The owner of `shard` (0 if out of range or unassigned).
    pub fn owner(&self, shard: ShardId) -> Gid {
        self.shards.get(shard).copied().unwrap_or(0)
    }

    /// Shards owned by `gid`, ascending.
    pub fn shards_of(&self, gid: Gid) -> Vec<ShardId> {
        (0..self.shards.len())
            .filter(|s| self.shards[*s] == gid)
            .collect()
    }

    /// Shard count per group in `groups` (groups with none included).
    pub fn counts(&self) -> BTreeMap<Gid, usize> {
        let mut counts: BTreeMap<Gid, usize> = self.groups.keys().map(|g| (*g, 0)).collect();
        for gid in &self.shards {
            if let Some(count) = counts.get_mut(gid) {
                *count += 1;
            }
        }
        counts
    }
}

/// Reassigns shards so that every shard belongs to a group in `groups`, the
/// groups' shard counts differ by at most one, and as few shards as possible
/// change owner. With no groups every shard goes to 0.
///
/// How: a group's target is `NSHARDS / n`, and the `NSHARDS % n` groups that
/// already own the most shards (ties: smaller gid) get one more, which is
/// what keeps moves minimal. Groups above target give up their
/// highest-numbered shards; those and orphaned shards (owner gone) go, in
/// ascending order, to groups below target in ascending gid order.
pub fn rebalance(shards: &[Gid], groups: &BTreeSet<Gid>) -> Vec<Gid> {
    if groups.is_empty() {
        return vec![0; shards.len()];
    }
    let mut owned: BTreeMap<Gid, Vec<ShardId>> = groups.iter().map(|g| (*g, Vec::new())).collect();
    let mut free: Vec<ShardId> = Vec::new();
    for (shard, gid) in shards.iter().enumerate() {
        match owned.get_mut(gid) {
            Some(list) => list.push(shard),
            None => free.push(shard),
        }
    }
    let n = groups.len();
    let base = shards.len() / n;
    let extra = shards.len() % n;
    let mut by_load: Vec<(Gid, usize)> = owned.iter().map(|(g, l)| (*g, l.len())).collect();
    // Most-loaded first, then smaller gid: a total order, so deterministic.
    by_load.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    let target: BTreeMap<Gid, usize> = by_load
        .iter()
        .enumerate()
        .map(|(rank, (gid, _))| (*gid, base + usize::from(rank < extra)))
        .collect();
    for (gid, list) in owned.iter_mut() {
        while list.len() > target[gid] {
            if let Some(shard) = list.pop() {
                free.push(shard);
            }
        }
    }
    free.sort_unstable();
    let mut free = free.into_iter();
    let mut result = shards.to_vec();
    for (gid, list) in owned.iter() {
        for shard in list {
            result[*shard] = *gid;
        }
        for _ in list.len()..target[gid] {
            if let Some(shard) = free.next() {
                result[shard] = *gid;
            }
        }
    }
    assert!(free.next().is_none(), "rebalance left a shard unassigned");
    result
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    fn set(gids: &[Gid]) -> BTreeSet<Gid> {
        gids.iter().copied().collect()
    }

    fn moved(before: &[Gid], after: &[Gid]) -> usize {
        before.iter().zip(after).filter(|(a, b)| a != b).count()
    }

    fn assert_balanced(shards: &[Gid], groups: &BTreeSet<Gid>) {
        let mut counts: BTreeMap<Gid, usize> = groups.iter().map(|g| (*g, 0)).collect();
        for gid in shards {
            *counts
                .get_mut(gid)
                .unwrap_or_else(|| panic!("shard on unknown gid {gid}: {shards:?}")) += 1;
        }
        let max = counts.values().max().copied().unwrap_or(0);
        let min = counts.values().min().copied().unwrap_or(0);
        assert!(max - min <= 1, "unbalanced {counts:?}");
    }

    /// The fewest moves any balanced assignment needs: orphaned shards plus,
    /// per group, what it holds above the most it may keep.
    fn lower_bound_moves(before: &[Gid], groups: &BTreeSet<Gid>) -> usize {
        let n = groups.len();
        let (base, extra) = (before.len() / n, before.len() % n);
        let mut loads: Vec<usize> = groups
            .iter()
            .map(|g| before.iter().filter(|x| *x == g).count())
            .collect();
        loads.sort_unstable_by(|a, b| b.cmp(a));
        let orphans = before.iter().filter(|g| !groups.contains(g)).count();
        let over: usize = loads
            .iter()
            .enumerate()
            .map(|(rank, load)| load.saturating_sub(base + usize::from(rank < extra)))
            .sum();
        orphans + over
    }

    #[test]
    fn first_join_takes_every_shard() {
        let result = rebalance(&[0; NSHARDS], &set(&[7]));
        assert_eq!(result, vec![7; NSHARDS]);
    }

    #[test]
    fn no_groups_unassigns_everything() {
        assert_eq!(rebalance(&[3; NSHARDS], &set(&[])), vec![0; NSHARDS]);
    }

    #[test]
    fn second_join_moves_exactly_half() {
        let after = rebalance(&[1; NSHARDS], &set(&[1, 2]));
        assert_balanced(&after, &set(&[1, 2]));
        assert_eq!(moved(&[1; NSHARDS], &after), 5);
    }

    #[test]
    fn more_groups_than_shards_leaves_some_idle() {
        let gids: Vec<Gid> = (1..=12).collect();
        let after = rebalance(&[1; NSHARDS], &set(&gids));
        assert_balanced(&after, &set(&gids));
        assert_eq!(after.iter().collect::<BTreeSet<_>>().len(), NSHARDS);
    }

    #[test]
    fn a_configuration_maps_keys_by_its_own_shard_count() {
        let config = Config::empty(4);
        assert_eq!(config.shards.len(), 4);
        assert_eq!(config.shard_of("a"), usize::from(b'a') % 4);
        assert_eq!(Config::default().shard_of("a"), key_to_shard("a"));
        assert_eq!(Config::empty(0).shards.len(), 1);
    }

    #[test]
    fn key_to_shard_is_first_byte_mod_nshards() {
        assert_eq!(key_to_shard(""), 0);
        assert_eq!(key_to_shard("a"), usize::from(b'a') % NSHARDS);
        assert_eq!(key_to_shard("0xyz"), usize::from(b'0') % NSHARDS);
    }

    /// Property: over random assignments and random group changes, the
    /// result is balanced, valid, moves the minimum possible, and is a pure
    /// function of its inputs.
    #[test]
    fn random_rebalances_are_balanced_minimal_and_deterministic() {
        let seed: u64 = std::env::var("SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(42);
        println!("SEED={seed}");
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        for round in 0..2_000 {
            let group_count = rng.gen_range(0..14);
            let groups: BTreeSet<Gid> = (0..group_count).map(|_| rng.gen_range(1..20)).collect();
            let before: Vec<Gid> = (0..NSHARDS).map(|_| rng.gen_range(0..20)).collect();
            let after = rebalance(&before, &groups);
            assert_eq!(after, rebalance(&before, &groups), "round {round}");
            if groups.is_empty() {
                assert!(after.iter().all(|g| *g == 0));
                continue;
            }
            assert_balanced(&after, &groups);
            assert_eq!(
                moved(&before, &after),
                lower_bound_moves(&before, &groups),
                "round {round}: {before:?} over {groups:?} -> {after:?}"
            );
            // A balanced assignment over the same groups stays put.
            assert_eq!(rebalance(&after, &groups), after, "round {round}");
        }
    }
}
