//! The core's own pseudo-random numbers (election timeouts only). A seeded
//! xorshift64* so every run is a function of `Config::seed`; no global RNG.

#[derive(Clone, Debug)]
pub(crate) struct Prng {
    state: u64,
}

impl Prng {
    /// Mixes the seed with splitmix64 so that nearby seeds (1, 2, 3, ...)
    /// give unrelated sequences, and avoids xorshift's all-zero fixed point.
    pub(crate) fn new(seed: u64) -> Self {
        let mut z = seed.wrapping_add(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        Prng {
            state: if z == 0 { 0x2545_F491_4F6C_DD1D } else { z },
        }
    }

    pub(crate) fn next_u64(&mut self) -> u64 {
        let mut x = self.state;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.state = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Uniform in `[low, high)`; `high > low` is the caller's duty.
    pub(crate) fn range_u32(&mut self, low: u32, high: u32) -> u32 {
        debug_assert!(high > low, "empty range [{low}, {high})");
        let width = u64::from(high - low);
        // Modulo bias is below 2^-32 for the widths used here.
        low + (self.next_u64() % width) as u32
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_sequence_and_range_is_respected() {
        let mut a = Prng::new(7);
        let mut b = Prng::new(7);
        let mut c = Prng::new(8);
        let xs: Vec<u32> = (0..100).map(|_| a.range_u32(10, 20)).collect();
        let ys: Vec<u32> = (0..100).map(|_| b.range_u32(10, 20)).collect();
        let zs: Vec<u32> = (0..100).map(|_| c.range_u32(10, 20)).collect();
        assert_eq!(xs, ys);
        assert_ne!(xs, zs);
        assert!(xs.iter().all(|&x| (10..20).contains(&x)));
        // Every value of a small range shows up: the draw is not stuck.
        for v in 10..20 {
            assert!(xs.contains(&v), "value {v} never drawn");
        }
    }
}
