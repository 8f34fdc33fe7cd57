//! YCSB's core workloads A, B and C as pure generators: which operation, on which key, with
//! which value. No I/O and no clock; every stream is a function of its seed, so a run's
//! operation sequence replays from `SEED=n`.
//!
//! Keys are chosen as YCSB does by default: a Zipfian distribution (constant 0.99) over the
//! preloaded records, scrambled by a hash so the popular keys are spread over the key space
//! rather than being the first few. `uniform` is available for comparison.

use std::str::FromStr;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// YCSB's Zipfian constant.
pub const ZIPFIAN_CONSTANT: f64 = 0.99;

/// A YCSB core workload: the fraction of reads; the rest are updates (whole-value puts).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Workload {
    /// 50 % reads, 50 % updates ("update heavy").
    A,
    /// 95 % reads, 5 % updates ("read mostly").
    B,
    /// 100 % reads ("read only").
    C,
}

impl Workload {
    pub const ALL: [Workload; 3] = [Workload::A, Workload::B, Workload::C];

    /// Reads per 1,000 operations (integers keep the mix exact and printable).
    pub fn reads_per_mille(self) -> u32 {
        match self {
            Workload::A => 500,
            Workload::B => 950,
            Workload::C => 1000,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Workload::A => "a",
            Workload::B => "b",
            Workload::C => "c",
        }
    }

    pub fn describe(self) -> &'static str {
        match self {
            Workload::A => "YCSB A: 50% read, 50% update",
            Workload::B => "YCSB B: 95% read, 5% update",
            Workload::C => "YCSB C: 100% read",
        }
    }
}

impl FromStr for Workload {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "a" => Ok(Workload::A),
            "b" => Ok(Workload::B),
            "c" => Ok(Workload::C),
            other => Err(format!("unknown workload `{other}` (available: a, b, c)")),
        }
    }
}

/// How keys are drawn.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyDistribution {
    /// YCSB's default: scrambled Zipfian.
    Zipfian,
    Uniform,
}

impl KeyDistribution {
    pub fn name(self) -> &'static str {
        match self {
            KeyDistribution::Zipfian => "zipfian",
            KeyDistribution::Uniform => "uniform",
        }
    }
}

impl FromStr for KeyDistribution {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "zipfian" => Ok(KeyDistribution::Zipfian),
            "uniform" => Ok(KeyDistribution::Uniform),
            other => Err(format!(
                "unknown key distribution `{other}` (available: zipfian, uniform)"
            )),
        }
    }
}

/// Gray et al.'s Zipfian generator ("Quickly generating billion-record synthetic databases",
/// SIGMOD 1994), as YCSB uses it: O(n) set-up once, O(1) per draw. Item 0 is the most popular.
#[derive(Debug, Clone)]
pub struct Zipfian {
    items: u64,
    theta: f64,
    zeta_n: f64,
    alpha: f64,
    eta: f64,
}

impl Zipfian {
    pub fn new(items: u64, theta: f64) -> Zipfian {
        assert!(items >= 1, "a Zipfian distribution needs at least one item");
        assert!(
            theta > 0.0 && theta < 1.0,
            "theta must be in (0, 1), got {theta}"
        );
        let zeta = |n: u64| (1..=n).map(|i| 1.0 / (i as f64).powf(theta)).sum::<f64>();
        let zeta_n = zeta(items);
        let zeta_2 = zeta(2.min(items));
        let eta = if items <= 2 {
            0.0
        } else {
            (1.0 - (2.0 / items as f64).powf(1.0 - theta)) / (1.0 - zeta_2 / zeta_n)
        };
        Zipfian {
            items,
            theta,
            zeta_n,
            alpha: 1.0 / (1.0 - theta),
            eta,
        }
    }

    /// The item for a uniform draw `u` in [0, 1).
    pub fn item(&self, u: f64) -> u64 {
        let uz = u * self.zeta_n;
        if uz < 1.0 {
            return 0;
        }
        if uz < 1.0 + 0.5f64.powf(self.theta) {
            return 1.min(self.items - 1);
        }
        let rank = (self.items as f64 * (self.eta * u - self.eta + 1.0).powf(self.alpha)) as u64;
        rank.min(self.items - 1)
    }
}

/// FNV-1a of the rank: spreads the popular ranks over the key space (YCSB's scrambling).
fn scramble(rank: u64, items: u64) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in rank.to_le_bytes() {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    hash % items
}

/// Draws record numbers in `0..records`.
#[derive(Debug, Clone)]
pub struct KeyChooser {
    records: u64,
    zipfian: Option<Zipfian>,
}

impl KeyChooser {
    pub fn new(records: u64, distribution: KeyDistribution) -> KeyChooser {
        let records = records.max(1);
        KeyChooser {
            records,
            zipfian: match distribution {
                KeyDistribution::Zipfian => Some(Zipfian::new(records, ZIPFIAN_CONSTANT)),
                KeyDistribution::Uniform => None,
            },
        }
    }

    pub fn next(&self, rng: &mut impl Rng) -> u64 {
        match &self.zipfian {
            Some(z) => scramble(z.item(rng.gen::<f64>()), self.records),
            None => rng.gen_range(0..self.records),
        }
    }
}

/// The key of record `i` (fixed width, so keys sort and print alike).
pub fn key_name(i: u64) -> String {
    format!("user{i:06}")
}

/// A value of `bytes` printable ASCII bytes whose first 16 carry `stamp` (so successive
/// updates differ) and whose rest is drawn from `rng`.
pub fn value(bytes: usize, stamp: u64, rng: &mut impl Rng) -> String {
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
    let mut text = format!("{stamp:016x}");
    text.truncate(bytes);
    while text.len() < bytes {
        text.push(char::from(ALPHABET[rng.gen_range(0..ALPHABET.len())]));
    }
    text
}

/// One operation of a YCSB stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Operation {
    Read { key: String },
    Update { key: String, value: String },
}

impl Operation {
    pub fn is_read(&self) -> bool {
        matches!(self, Operation::Read { .. })
    }
}

/// One client's operation stream.
#[derive(Debug, Clone)]
pub struct OperationStream {
    workload: Workload,
    keys: KeyChooser,
    value_bytes: usize,
    rng: ChaCha8Rng,
    counter: u64,
}

impl OperationStream {
    pub fn new(workload: Workload, keys: KeyChooser, value_bytes: usize, seed: u64) -> Self {
        OperationStream {
            workload,
            keys,
            value_bytes,
            rng: ChaCha8Rng::seed_from_u64(seed),
            counter: 0,
        }
    }

    pub fn next_operation(&mut self) -> Operation {
        self.counter += 1;
        let key = key_name(self.keys.next(&mut self.rng));
        if self.rng.gen_range(0..1000) < self.workload.reads_per_mille() {
            Operation::Read { key }
        } else {
            let value = value(self.value_bytes, self.counter, &mut self.rng);
            Operation::Update { key, value }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn workloads_parse_and_have_ycsb_mixes() {
        assert_eq!("A".parse::<Workload>(), Ok(Workload::A));
        assert_eq!(" c".parse::<Workload>(), Ok(Workload::C));
        assert!("d".parse::<Workload>().is_err());
        let keys = KeyChooser::new(1000, KeyDistribution::Uniform);
        for (workload, expected) in [(Workload::A, 0.5), (Workload::B, 0.95), (Workload::C, 1.0)] {
            let mut stream = OperationStream::new(workload, keys.clone(), 8, 7);
            let reads = (0..20_000)
                .filter(|_| stream.next_operation().is_read())
                .count() as f64
                / 20_000.0;
            assert!(
                (reads - expected).abs() < 0.02,
                "{workload:?}: read fraction {reads}, want {expected}"
            );
        }
    }

    #[test]
    fn zipfian_prefers_low_ranks_and_stays_in_range() {
        let z = Zipfian::new(1000, ZIPFIAN_CONSTANT);
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        let mut counts = vec![0u32; 1000];
        for _ in 0..100_000 {
            counts[z.item(rng.gen::<f64>()) as usize] += 1;
        }
        assert!(counts[0] > counts[10], "{} vs {}", counts[0], counts[10]);
        assert!(
            counts[10] > counts[500],
            "{} vs {}",
            counts[10],
            counts[500]
        );
        // With theta 0.99 over 1,000 items the top item draws about 1/zeta(1000) ≈ 13 %.
        let top = f64::from(counts[0]) / 100_000.0;
        assert!((0.10..0.17).contains(&top), "top item share {top}");
    }

    #[test]
    fn scrambled_keys_cover_the_space_and_replay_from_the_seed() {
        let keys = KeyChooser::new(1000, KeyDistribution::Zipfian);
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        let drawn: std::collections::BTreeSet<u64> =
            (0..50_000).map(|_| keys.next(&mut rng)).collect();
        assert!(drawn.iter().all(|k| *k < 1000));
        assert!(drawn.len() > 500, "only {} distinct keys", drawn.len());
        let mut a = OperationStream::new(Workload::A, keys.clone(), 1024, 9);
        let mut b = OperationStream::new(Workload::A, keys, 1024, 9);
        for _ in 0..100 {
            assert_eq!(a.next_operation(), b.next_operation());
        }
    }

    #[test]
    fn values_have_the_requested_size_and_differ() {
        let mut rng = ChaCha8Rng::seed_from_u64(5);
        let one = value(1024, 1, &mut rng);
        let two = value(1024, 2, &mut rng);
        assert_eq!(one.len(), 1024);
        assert_eq!(two.len(), 1024);
        assert_ne!(one, two);
        assert_eq!(value(4, 1, &mut rng).len(), 4);
        assert_eq!(key_name(7), "user000007");
    }
}
