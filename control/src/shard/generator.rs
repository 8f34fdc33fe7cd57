//! Operations of the `shardkv` workload: get/put/append with unique written values over keys
//! spread across every shard, in the history format of the `kv` model, so the linearizability
//! checker and the lost-writes check apply unchanged.
//!
//! A key's shard is its first byte modulo 10 (the lab's `key2shard`), so keys start with a
//! digit: `<d>k<n>` covers all ten shards as `d` runs over 0..=9. As in [`crate::workload`],
//! keys rotate in windows so each key's history stays short enough to check exhaustively.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde_json::Value;

use crate::client::{Generator, Op};

/// Shards of the store (the controller's `NSHARDS`).
pub const SHARDS: usize = 10;

/// The shard of `key`: its first byte modulo [`SHARDS`] (empty key: 0), as the servers compute.
pub fn key_to_shard(key: &str) -> usize {
    key.as_bytes()
        .first()
        .map_or(0, |b| usize::from(*b) % SHARDS)
}

/// get/put/append over `keys` keys per window (at least one per shard when `keys >= 10`).
#[derive(Debug)]
pub struct ShardKvGenerator {
    rng: ChaCha8Rng,
    keys: u64,
    counter: u64,
    /// Percent of operations that are gets; the rest split evenly between put and append.
    read_percent: u32,
    /// Operations per window; `u64::MAX`: a fixed key set (benchmarks).
    ops_per_window: u64,
    /// Updates are puts only (benchmarks: values keep their size, as YCSB's updates do).
    puts_only: bool,
    /// Half the operations go to the window's first [`HOT_KEYS`] keys (the shards the
    /// reconfiguration nemesis moves most), so operations meet every move; off for benchmarks.
    hot: bool,
}

/// Keys per window that get half the operations: the [`hot_shards`].
pub const HOT_KEYS: u64 = 2;

/// The shards of the hot keys: moved most often by the reconfiguration nemesis, so a group
/// that keeps serving a shard it handed over meets reads and writes right after the move.
pub fn hot_shards() -> Vec<usize> {
    (0..HOT_KEYS)
        .map(|i| key_to_shard(&ShardKvGenerator::key(i)))
        .collect()
}

impl ShardKvGenerator {
    /// Operations one generator makes before moving to the next window of keys.
    pub const OPS_PER_KEY_WINDOW: u64 = 100;

    pub fn new(seed: u64, keys: usize, read_percent: u32) -> Self {
        Self {
            rng: ChaCha8Rng::seed_from_u64(seed),
            keys: keys.max(1) as u64,
            counter: 0,
            read_percent: read_percent.min(100),
            ops_per_window: Self::OPS_PER_KEY_WINDOW,
            puts_only: false,
            hot: true,
        }
    }

    /// Never rotates keys (a benchmark's fixed key set).
    pub fn fixed_keys(mut self) -> Self {
        self.ops_per_window = u64::MAX;
        self.hot = false;
        self
    }

    /// Updates are puts (no appends): a benchmark's values keep their size.
    pub fn puts_only(mut self) -> Self {
        self.puts_only = true;
        self
    }

    /// The `i`th key (its digit picks the shard, round-robin).
    pub fn key(i: u64) -> String {
        format!("{}k{i}", i % 10)
    }
}

impl Generator for ShardKvGenerator {
    fn next_op(&mut self, process: u64) -> Op {
        let window = self.counter / self.ops_per_window;
        let slot = if self.hot && self.rng.gen_bool(0.5) {
            self.rng.gen_range(0..HOT_KEYS.min(self.keys))
        } else {
            self.rng.gen_range(0..self.keys)
        };
        let index = window * self.keys + slot;
        let key = Self::key(index);
        self.counter += 1;
        let unique = format!("x{process}-{}", self.counter);
        let roll = self.rng.gen_range(0..100);
        let (f, value) = if roll < self.read_percent {
            ("get", Value::Null)
        } else if self.puts_only || self.rng.gen_bool(0.5) {
            ("put", Value::String(unique))
        } else {
            ("append", Value::String(unique))
        };
        Op {
            f: f.into(),
            key: Some(key),
            value,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    #[test]
    fn keys_cover_every_shard_and_writes_are_unique() {
        let mut generator = ShardKvGenerator::new(3, 10, 40);
        let mut shards = BTreeSet::new();
        let mut written = BTreeSet::new();
        let mut gets = 0;
        for i in 0..1000 {
            let op = generator.next_op(i % 4);
            shards.insert(key_to_shard(op.key.as_deref().unwrap()));
            if op.f == "get" {
                gets += 1;
            } else {
                assert!(written.insert(op.value.to_string()), "{op:?}");
            }
        }
        assert_eq!(shards.len(), SHARDS);
        let hot = hot_shards();
        assert_eq!(hot.len(), 2);
        let mut generator = ShardKvGenerator::new(3, 10, 40);
        let on_hot = (0..1000)
            .filter(|i| {
                let op = generator.next_op(i % 4);
                hot.contains(&key_to_shard(op.key.as_deref().unwrap()))
            })
            .count();
        assert!(
            (530..670).contains(&on_hot),
            "{on_hot} of 1000 on hot shards"
        );
        assert!((300..500).contains(&gets), "{gets} gets of 1000 at 40%");
    }

    #[test]
    fn same_seed_same_operations_and_windows_rotate() {
        let mut a = ShardKvGenerator::new(8, 10, 50);
        let mut b = ShardKvGenerator::new(8, 10, 50);
        let first: Vec<Op> = (0..100).map(|_| a.next_op(1)).collect();
        let again: Vec<Op> = (0..100).map(|_| b.next_op(1)).collect();
        assert_eq!(first, again);
        let next = a.next_op(1);
        let key: u64 = next.key.unwrap()[2..].parse().unwrap();
        assert!(
            (10..20).contains(&key),
            "second window starts at key 10: {key}"
        );
        let mut fixed = ShardKvGenerator::new(8, 10, 95).fixed_keys();
        for _ in 0..500 {
            let key: u64 = fixed.next_op(0).key.unwrap()[2..].parse().unwrap();
            assert!(key < 10);
        }
    }
}
