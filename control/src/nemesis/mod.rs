//! Nemesis: the faults a test injects.
//!
//! Three parts, as in Jepsen: [`grudge`] and [`schedule`] are pure maths (who is cut off from
//! whom, which fault comes next, from a seeded RNG); [`Nemesis`] is the seam that applies a
//! [`Fault`]; [`apply::ClusterNemesis`] applies faults to a real cluster over SSH (iptables in
//! a chain of our own, kill -9 + restart, SIGSTOP/SIGCONT). [`RecordingNemesis`] is the
//! in-memory implementation for tests.

pub mod apply;
pub mod grudge;
pub mod schedule;

use std::collections::BTreeSet;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

pub use grudge::Grudge;

/// The families of faults a test can enable (`--nemesis partition,kill,pause`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum NemesisKind {
    Partition,
    Kill,
    Pause,
}

impl NemesisKind {
    pub const ALL: [NemesisKind; 3] = [
        NemesisKind::Partition,
        NemesisKind::Kill,
        NemesisKind::Pause,
    ];

    pub fn name(&self) -> &'static str {
        match self {
            NemesisKind::Partition => "partition",
            NemesisKind::Kill => "kill",
            NemesisKind::Pause => "pause",
        }
    }
}

impl fmt::Display for NemesisKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Parses a comma-separated list: `partition,kill,pause`, `all`, or `none`.
pub fn parse_kinds(text: &str) -> Result<BTreeSet<NemesisKind>, NemesisError> {
    let mut kinds = BTreeSet::new();
    for word in text.split(',').map(str::trim).filter(|w| !w.is_empty()) {
        match word {
            "all" => kinds.extend(NemesisKind::ALL),
            "none" => {}
            other => {
                kinds.insert(other.parse()?);
            }
        }
    }
    Ok(kinds)
}

impl FromStr for NemesisKind {
    type Err = NemesisError;
    fn from_str(text: &str) -> Result<Self, NemesisError> {
        NemesisKind::ALL
            .into_iter()
            .find(|k| k.name() == text)
            .ok_or_else(|| NemesisError::UnknownKind(text.to_string()))
    }
}

/// Which partition shape.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum PartitionKind {
    RandomHalves,
    /// Isolate the leader when the database names one, else a random node.
    IsolateLeader,
    MajoritiesRing,
    Bridge,
}

/// One fault, fully determined (the nodes are chosen when the fault is drawn).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum Fault {
    Partition {
        shape: PartitionKind,
        grudge: Grudge,
    },
    Kill {
        nodes: Vec<String>,
    },
    Pause {
        nodes: Vec<String>,
    },
}

impl Fault {
    pub fn kind(&self) -> NemesisKind {
        match self {
            Fault::Partition { .. } => NemesisKind::Partition,
            Fault::Kill { .. } => NemesisKind::Kill,
            Fault::Pause { .. } => NemesisKind::Pause,
        }
    }

    /// The nodes the fault touches.
    pub fn nodes(&self) -> Vec<String> {
        match self {
            Fault::Partition { grudge, .. } => {
                let mut nodes: BTreeSet<String> = grudge.keys().cloned().collect();
                nodes.extend(grudge.values().flatten().cloned());
                nodes.into_iter().collect()
            }
            Fault::Kill { nodes } | Fault::Pause { nodes } => nodes.clone(),
        }
    }

    /// A one-line description for the progress display.
    pub fn describe(&self) -> String {
        match self {
            Fault::Partition { shape, grudge } => {
                let shape = serde_json::to_value(shape)
                    .ok()
                    .and_then(|v| v.as_str().map(String::from))
                    .unwrap_or_default();
                format!("partition {shape} ({} nodes cut)", grudge.len())
            }
            Fault::Kill { nodes } => format!("kill {}", nodes.join(",")),
            Fault::Pause { nodes } => format!("pause {}", nodes.join(",")),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum NemesisError {
    #[error("unknown nemesis `{0}` (want partition, kill, pause, all or none)")]
    UnknownKind(String),
    #[error("node {node}: {message}")]
    Node { node: String, message: String },
    #[error("unknown node `{0}` in a fault")]
    UnknownNode(String),
}

/// Applies faults. `stop` undoes exactly one started fault; `heal_all` restores a fully
/// healthy cluster whatever happened before (connectivity, every node running and resumed) and
/// is what the runner calls before its final recovery phase and on every exit path.
pub trait Nemesis: Send {
    fn setup(&mut self) -> Result<(), NemesisError>;
    fn start(&mut self, fault: &Fault) -> Result<(), NemesisError>;
    fn stop(&mut self, fault: &Fault) -> Result<(), NemesisError>;
    fn heal_all(&mut self) -> Result<(), NemesisError>;
}

/// In-memory nemesis for tests: remembers what is in effect.
#[derive(Debug, Default)]
pub struct RecordingNemesis {
    pub active: Vec<Fault>,
    pub log: Vec<String>,
}

impl Nemesis for RecordingNemesis {
    fn setup(&mut self) -> Result<(), NemesisError> {
        self.log.push("setup".into());
        Ok(())
    }

    fn start(&mut self, fault: &Fault) -> Result<(), NemesisError> {
        self.log.push(format!("start {}", fault.describe()));
        self.active.push(fault.clone());
        Ok(())
    }

    fn stop(&mut self, fault: &Fault) -> Result<(), NemesisError> {
        self.log.push(format!("stop {}", fault.describe()));
        self.active.retain(|f| f != fault);
        Ok(())
    }

    fn heal_all(&mut self) -> Result<(), NemesisError> {
        self.log.push("heal-all".into());
        self.active.clear();
        Ok(())
    }
}

/// A nemesis event for the results: when a fault started or stopped, on the test's monotonic
/// clock (the history's `time`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NemesisEvent {
    /// Nanoseconds since the test began, when the nemesis was asked to act.
    pub time: u64,
    /// When it had finished acting (applying rules over SSH, restarting a node takes time).
    #[serde(default)]
    pub end_time: u64,
    /// `start`, `stop` or `heal-all`.
    pub phase: String,
    pub kind: Option<NemesisKind>,
    pub nodes: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fault: Option<Fault>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_parse_lists_all_and_none() {
        assert_eq!(parse_kinds("all").unwrap().len(), 3);
        assert!(parse_kinds("none").unwrap().is_empty());
        let some = parse_kinds("kill, pause").unwrap();
        assert!(some.contains(&NemesisKind::Kill) && some.contains(&NemesisKind::Pause));
        let err = parse_kinds("partition,flood").unwrap_err().to_string();
        assert!(err.contains("flood"), "{err}");
    }

    #[test]
    fn fault_serializes_with_its_kind() {
        let fault = Fault::Kill {
            nodes: vec!["n1".into()],
        };
        let json = serde_json::to_string(&fault).unwrap();
        assert_eq!(json, r#"{"kind":"kill","nodes":["n1"]}"#);
        assert_eq!(fault.nodes(), ["n1"]);
    }
}
