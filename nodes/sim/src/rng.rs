//! The simulator's only source of randomness: a ChaCha stream seeded from the
//! run's seed. Nothing reachable from a simulation may use `thread_rng` or the
//! wall clock, or a seed would stop replaying.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// A seeded random number generator with the few draws the simulator needs.
///
/// Subsystems (network, fault schedule, each Raft node's election timer) get
/// their own stream via [`SimRng::fork`], so adding a draw in one subsystem
/// does not shift the draws of the others more than necessary.
#[derive(Clone, Debug)]
pub struct SimRng {
    inner: ChaCha8Rng,
}

impl SimRng {
    pub fn new(seed: u64) -> Self {
        Self {
            inner: ChaCha8Rng::seed_from_u64(seed),
        }
    }

    /// An independent generator for one subsystem, derived from this one's
    /// seed material and a stream label.
    pub fn fork(&mut self, stream: u64) -> SimRng {
        let base: u64 = self.inner.gen();
        SimRng::new(base ^ stream.wrapping_mul(0x9E37_79B9_7F4A_7C15))
    }

    /// A uniformly random `u64`.
    pub fn next_u64(&mut self) -> u64 {
        self.inner.gen()
    }

    /// Uniform in `[0, bound)`; 0 when `bound` is 0.
    pub fn below(&mut self, bound: u64) -> u64 {
        if bound == 0 {
            0
        } else {
            self.inner.gen_range(0..bound)
        }
    }

    /// Uniform in `[low, high]` (inclusive); `low` when `high <= low`.
    pub fn between(&mut self, low: u64, high: u64) -> u64 {
        if high <= low {
            low
        } else {
            self.inner.gen_range(low..=high)
        }
    }

    /// True with probability `probability` (clamped to [0, 1]).
    pub fn chance(&mut self, probability: f64) -> bool {
        if probability <= 0.0 {
            false
        } else if probability >= 1.0 {
            true
        } else {
            self.inner.gen_bool(probability)
        }
    }

    /// A uniformly chosen element, or `None` for an empty slice.
    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> Option<&'a T> {
        if items.is_empty() {
            None
        } else {
            let at = self.below(items.len() as u64) as usize;
            items.get(at)
        }
    }

    /// Shuffles `items` in place (Fisher-Yates).
    pub fn shuffle<T>(&mut self, items: &mut [T]) {
        for i in (1..items.len()).rev() {
            let j = self.below(i as u64 + 1) as usize;
            items.swap(i, j);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_gives_same_draws() {
        let mut a = SimRng::new(42);
        let mut b = SimRng::new(42);
        let xs: Vec<u64> = (0..100).map(|_| a.below(1000)).collect();
        let ys: Vec<u64> = (0..100).map(|_| b.below(1000)).collect();
        assert_eq!(xs, ys);
    }

    #[test]
    fn forks_are_independent_of_later_parent_draws() {
        let mut a = SimRng::new(7);
        let mut fa = a.fork(1);
        let mut b = SimRng::new(7);
        let mut fb = b.fork(1);
        b.next_u64();
        assert_eq!(fa.next_u64(), fb.next_u64());
        let mut c = SimRng::new(7);
        let mut fc = c.fork(2);
        assert_ne!(SimRng::new(7).fork(1).next_u64(), fc.next_u64());
    }

    #[test]
    fn between_is_inclusive_and_bounded() {
        let mut r = SimRng::new(1);
        let mut seen_low = false;
        let mut seen_high = false;
        for _ in 0..10_000 {
            let x = r.between(3, 5);
            assert!((3..=5).contains(&x), "{x} out of [3,5]");
            seen_low |= x == 3;
            seen_high |= x == 5;
        }
        assert!(seen_low && seen_high);
    }
}
