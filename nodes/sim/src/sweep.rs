//! Running a scenario over many seeds, and replaying one.
//!
//! * `SEED=n` runs exactly seed `n` (replay).
//! * `SIM_SEEDS=n` runs `n` seeds per sweep (default: the sweep's own,
//!   modest so `cargo test -p sim` stays quick).
//! * `SIM_SEED_BASE=b` starts the sweep at seed `b` (default 1) to explore
//!   seeds CI has not seen.
//!
//! Every run prints `SEED=n` before it starts, so a failure's captured output
//! names its seed; the failure message repeats it with the replay command.

use crate::error::SimError;
use std::panic::{catch_unwind, AssertUnwindSafe};

fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name).ok()?.trim().parse().ok()
}

/// A named scenario: one seeded run that either holds or fails.
pub type Scenario = (&'static str, fn(u64) -> Result<(), SimError>);

/// The seeds a sweep covers under the current environment.
pub fn seeds(default_count: u64) -> Vec<u64> {
    if let Some(seed) = env_u64("SEED") {
        return vec![seed];
    }
    let count = env_u64("SIM_SEEDS").unwrap_or(default_count);
    let base = env_u64("SIM_SEED_BASE").unwrap_or(1);
    (base..base.saturating_add(count)).collect()
}

/// Runs one seed, turning a panic into [`SimError::Panic`].
pub fn run_seed<F>(seed: u64, scenario: &F) -> Result<(), SimError>
where
    F: Fn(u64) -> Result<(), SimError>,
{
    println!("SEED={seed}");
    match catch_unwind(AssertUnwindSafe(|| scenario(seed))) {
        Ok(result) => result,
        Err(payload) => {
            let message = payload
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| payload.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_else(|| "non-string panic".to_string());
            Err(SimError::Panic(message))
        }
    }
}

/// Runs `scenario` for every seed of [`seeds`]; panics (failing the test) at
/// the first failing seed with the seed, the error and the replay command.
pub fn sweep<F>(name: &str, default_count: u64, scenario: F)
where
    F: Fn(u64) -> Result<(), SimError>,
{
    for seed in seeds(default_count) {
        if let Err(error) = run_seed(seed, &scenario) {
            panic!(
                "{name} failed with SEED={seed}\n{error}\nreplay: SEED={seed} cargo test -p sim -- {name} --exact --nocapture"
            );
        }
    }
}

/// Fails the scenario with a [`SimError::Claim`] unless `condition` holds.
/// The first argument is the simulator (for the virtual time of the failure).
#[macro_export]
macro_rules! claim {
    ($sim:expr, $condition:expr, $($message:tt)+) => {
        if !$condition {
            return Err($crate::SimError::Claim {
                at_us: $sim.now_us(),
                message: format!($($message)+),
            });
        }
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_panicking_scenario_becomes_an_error() {
        let result = run_seed(5, &|seed| {
            if seed == 5 {
                panic!("boom {seed}");
            }
            Ok(())
        });
        assert_eq!(result, Err(SimError::Panic("boom 5".to_string())));
    }
}
