//! A short memory of the last events, printed when an invariant breaks.
//! Records are small `Copy` values so keeping them costs almost nothing;
//! they become text only when a run fails.

use raft::{NodeId, Term};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TraceKind {
    Tick,
    Deliver {
        from: NodeId,
        term: Term,
        kind: &'static str,
    },
    Send {
        to: NodeId,
        term: Term,
        kind: &'static str,
    },
    /// A message the network dropped (loss) or a cut link / down node
    /// refused (cut).
    Dropped {
        from: NodeId,
        to: NodeId,
        kind: &'static str,
        cut: bool,
    },
    Persist {
        term: Term,
        commit: u64,
        last_index: u64,
    },
    Apply {
        index: u64,
        term: Term,
    },
    Role {
        role: &'static str,
        term: Term,
    },
    Crash,
    CrashBeforePersist,
    Restart,
    Fault(&'static str),
    Propose {
        index: u64,
    },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TraceEvent {
    pub at_us: u64,
    pub node: NodeId,
    pub kind: TraceKind,
}

/// A ring buffer of the last `capacity` events.
#[derive(Debug)]
pub struct Trace {
    events: Vec<TraceEvent>,
    next: usize,
    capacity: usize,
    /// Ticks are most events and say little; skip them unless asked.
    pub include_ticks: bool,
}

impl Trace {
    pub fn new(capacity: usize) -> Self {
        Self {
            events: Vec::with_capacity(capacity),
            next: 0,
            capacity,
            include_ticks: false,
        }
    }

    pub fn record(&mut self, at_us: u64, node: NodeId, kind: TraceKind) {
        if self.capacity == 0 || (!self.include_ticks && kind == TraceKind::Tick) {
            return;
        }
        let event = TraceEvent { at_us, node, kind };
        if self.events.len() < self.capacity {
            self.events.push(event);
        } else {
            self.events[self.next] = event;
        }
        self.next = (self.next + 1) % self.capacity;
    }

    /// The recorded events, oldest first, one line each.
    pub fn lines(&self) -> Vec<String> {
        let (newer, older) = if self.events.len() < self.capacity {
            (&self.events[..], &[][..])
        } else {
            let (a, b) = self.events.split_at(self.next);
            (a, b)
        };
        older
            .iter()
            .chain(newer)
            .map(|e| {
                format!(
                    "{:>10.3} ms  n{}  {:?}",
                    e.at_us as f64 / 1e3,
                    e.node,
                    e.kind
                )
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_last_events_in_order() {
        let mut t = Trace::new(3);
        for i in 0..5 {
            t.record(i, 1, TraceKind::Apply { index: i, term: 1 });
        }
        let lines = t.lines();
        assert_eq!(lines.len(), 3);
        assert!(lines[0].contains("index: 2"), "{lines:?}");
        assert!(lines[2].contains("index: 4"), "{lines:?}");
    }
}
