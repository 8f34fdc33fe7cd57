//! Small random kv histories: the partitioned search, the unpartitioned
//! search (whose pruning hooks differ) and the brute-force oracle must agree.
//! Some histories get one read changed to another value seen in the history,
//! so both verdicts occur. `SEED=n` replays one case; `AGREEMENT_CASES=n`.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a failure is the test failing

use checker::generate::{generate, GenerateConfig, GeneratedModel, SplitMix64};
use checker::{check_history, oracle, ModelKind, Options, Status, Value, Verdict};

fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name).ok().and_then(|v| v.parse().ok())
}

#[test]
fn kv_partitioned_unpartitioned_and_oracle_agree() {
    let seeds: Vec<u64> = match env_u64("SEED") {
        Some(seed) => vec![seed],
        None => (0..env_u64("AGREEMENT_CASES").unwrap_or(400)).collect(),
    };
    eprintln!("SEED=0..{} (replay one with SEED=n)", seeds.len());
    let (mut valid, mut invalid) = (0, 0);
    for seed in seeds {
        let mut config = GenerateConfig::new(GeneratedModel::Kv, 4, 2, 9, seed);
        config.info_per_mille = 150;
        let mut history = generate(&config).history;
        let mut rng = SplitMix64::new(seed ^ 0x5eed);
        if rng.below(2) == 0 {
            let values: Vec<Value> = history
                .operations
                .iter()
                .map(|o| o.input.clone())
                .filter(|v| !v.is_nil())
                .collect();
            let gets: Vec<usize> = history
                .operations
                .iter()
                .filter(|o| o.f == "get" && o.status == Status::Ok)
                .map(|o| o.id)
                .collect();
            if !gets.is_empty() && !values.is_empty() {
                let g = gets[rng.below(gets.len() as u64) as usize];
                history.operations[g].output =
                    values[rng.below(values.len() as u64) as usize].clone();
            }
        }
        let options = Options::default();
        let partitioned = check_history(&history, &ModelKind::Kv, &options)
            .unwrap()
            .verdict;
        let whole = check_history(&history, &ModelKind::KvUnpartitioned, &options)
            .unwrap()
            .verdict;
        let truth = oracle::check(&history, &ModelKind::Kv).unwrap();
        let want = if truth {
            Verdict::Linearizable
        } else {
            Verdict::NotLinearizable
        };
        assert_eq!(partitioned, want, "SEED={seed} kv\n{history:#?}");
        assert_eq!(whole, want, "SEED={seed} kv-unpartitioned\n{history:#?}");
        if truth {
            valid += 1;
        } else {
            invalid += 1;
        }
    }
    eprintln!("{valid} linearizable, {invalid} not");
    assert!(env_u64("SEED").is_some() || (valid > 0 && invalid > 0));
}
