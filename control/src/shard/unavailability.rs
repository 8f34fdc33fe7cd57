//! How long a shard was unserved around a move, computed from the history alone.
//!
//! For a move of shard `s` asked for at time `t` (the controller request's invoke): take the
//! completion times of the `ok` operations on keys of `s`, sorted. The window is the gap
//! from the last `ok` completion at or before `t` to the first `ok` completion after it that
//! ends the longest silence within `horizon` after `t` — that is, the largest gap between
//! consecutive `ok` completions that starts at or after that last one and before
//! `t + horizon`. Under a steady load the shard's ordinary gaps are short (a few operations'
//! worth); the move's freeze and hand-over show up as the one long gap.

use crate::history::{Event, EventType};

use super::generator::key_to_shard;

/// Completion times of `ok` operations per shard, sorted.
pub fn ok_times_by_shard(events: &[Event], shards: usize) -> Vec<Vec<u64>> {
    let mut by_shard = vec![Vec::new(); shards];
    for event in events {
        if event.kind != EventType::Ok {
            continue;
        }
        if let Some(key) = &event.key {
            let shard = key_to_shard(key);
            if let Some(times) = by_shard.get_mut(shard) {
                times.push(event.time);
            }
        }
    }
    for times in &mut by_shard {
        times.sort_unstable();
    }
    by_shard
}

/// A move's window, or None when no `ok` operation on the shard precedes the move or none
/// follows it within the horizon (nothing to measure from).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    /// Last `ok` completion before the move's request (ns, test clock).
    pub from: u64,
    /// The `ok` completion that ended the longest silence after it.
    pub to: u64,
}

impl Window {
    pub fn millis(&self) -> f64 {
        (self.to - self.from) as f64 / 1e6
    }
}

/// The unavailability window of a move at `move_time`, from sorted `ok_times` of its shard.
pub fn window(ok_times: &[u64], move_time: u64, horizon_ns: u64) -> Option<Window> {
    let first_after = ok_times.partition_point(|t| *t <= move_time);
    let start = first_after.checked_sub(1)?;
    let limit = move_time.saturating_add(horizon_ns);
    let mut best: Option<Window> = None;
    for pair in ok_times[start..].windows(2) {
        if pair[0] >= limit {
            break;
        }
        let gap = pair[1] - pair[0];
        if best.is_none_or(|b| gap > b.to - b.from) {
            best = Some(Window {
                from: pair[0],
                to: pair[1],
            });
        }
    }
    best
}

/// The median gap between consecutive `ok` completions on a shard (the shard's ordinary
/// rhythm, to read a window against); None with fewer than two.
pub fn median_gap(ok_times: &[u64]) -> Option<u64> {
    let mut gaps: Vec<u64> = ok_times.windows(2).map(|p| p[1] - p[0]).collect();
    if gaps.is_empty() {
        return None;
    }
    gaps.sort_unstable();
    Some(gaps[gaps.len() / 2])
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    #[test]
    fn the_window_is_the_silence_around_the_move() {
        // ok every 10 up to 100, the move at 105, silence until 400, then every 10 again.
        let mut times: Vec<u64> = (1..=10).map(|i| i * 10).collect();
        times.extend((40..50).map(|i| i * 10));
        let w = window(&times, 105, 1_000).unwrap();
        assert_eq!(w, Window { from: 100, to: 400 });
        assert_eq!(median_gap(&times), Some(10));
        // A silence that starts after the horizon is not the move's.
        assert_eq!(
            window(&times, 105, 1).unwrap(),
            Window { from: 100, to: 400 }
        );
        let steady: Vec<u64> = (1..100).map(|i| i * 10).collect();
        assert_eq!(window(&steady, 505, 100).unwrap().to - 500, 10);
        assert_eq!(window(&times, 5, 100), None, "nothing before the move");
        assert_eq!(window(&[1, 2], 5, 100), None, "nothing after the move");
    }

    #[test]
    fn ok_times_group_by_the_keys_shard() {
        let event = |kind, key: &str, time| {
            let mut e = Event::new(0, kind, "get", Some(key), Value::Null);
            e.time = time;
            e
        };
        let events = [
            event(EventType::Ok, "3k3", 30),
            event(EventType::Fail, "3k13", 31),
            event(EventType::Ok, "3k13", 20),
            event(EventType::Ok, "4k4", 40),
        ];
        let by_shard = ok_times_by_shard(&events, 10);
        assert_eq!(by_shard[key_to_shard("3k3")], [20, 30]);
        assert_eq!(by_shard[key_to_shard("4k4")], [40]);
        assert_eq!(by_shard.iter().map(Vec::len).sum::<usize>(), 3);
    }
}
