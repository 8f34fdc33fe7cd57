//! How a simulated run fails: a broken safety invariant (always a bug), a
//! scenario claim that did not hold (e.g. no leader within 5 s), or a panic.

use std::fmt;

/// A Raft safety property that failed, with the last events before it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Violation {
    /// Virtual time of the violation, microseconds since the start.
    pub at_us: u64,
    /// Which invariant: "election safety", "log matching", ...
    pub invariant: &'static str,
    pub detail: String,
    /// The last events before the violation, oldest first.
    pub trace: Vec<String>,
}

/// Why a simulated scenario failed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SimError {
    /// The invariant checker fired: Raft is unsafe for this seed.
    Invariant(Box<Violation>),
    /// A claim of the scenario (liveness, timing, counts) did not hold.
    Claim { at_us: u64, message: String },
    /// The core or the scenario panicked.
    Panic(String),
    /// The simulation could not be set up (a node refused its config or
    /// its restored state).
    Setup(String),
}

impl SimError {
    pub fn is_invariant(&self) -> bool {
        matches!(self, SimError::Invariant(_))
    }
}

impl fmt::Display for SimError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SimError::Invariant(v) => {
                writeln!(
                    f,
                    "invariant violated at {:.3} s: {}: {}",
                    v.at_us as f64 / 1e6,
                    v.invariant,
                    v.detail
                )?;
                writeln!(f, "last events:")?;
                for line in &v.trace {
                    writeln!(f, "  {line}")?;
                }
                Ok(())
            }
            SimError::Claim { at_us, message } => {
                write!(f, "claim failed at {:.3} s: {message}", *at_us as f64 / 1e6)
            }
            SimError::Panic(message) => write!(f, "panicked: {message}"),
            SimError::Setup(message) => write!(f, "setup failed: {message}"),
        }
    }
}

impl std::error::Error for SimError {}
