//! Committed entries per second through the bare core: N RawNodes in one
//! thread, FIFO in-memory delivery, no persistence cost. Criterion-free;
//! prints its setup. Run: `cargo bench -p raft --bench core_throughput`.
//! (The simulator's benchmarks in nodes/sim measure the full stack.)

#![allow(clippy::unwrap_used, clippy::expect_used)] // benchmark harness

use raft::{Config, EntryKind, Message, RawNode, Restored, Role};
use std::collections::VecDeque;
use std::time::Instant;

const COMMAND_BYTES: usize = 64;

/// Drains `node`'s Ready into the queue; returns Normal entries it applied.
fn handle(node: &mut RawNode, queue: &mut VecDeque<Message>) -> usize {
    if !node.has_ready() {
        return 0;
    }
    let ready = node.ready();
    queue.extend(ready.messages);
    let applied = ready
        .committed_entries
        .iter()
        .filter(|e| e.kind == EntryKind::Normal)
        .count();
    node.advance();
    applied
}

fn run(voters: u64, batch: usize, total: usize) -> f64 {
    let ids: Vec<u64> = (1..=voters).collect();
    let mut nodes: Vec<RawNode> = ids
        .iter()
        .map(|&id| RawNode::new(Config::new(id, ids.clone()), Restored::default()).unwrap())
        .collect();
    let mut queue = VecDeque::new();
    nodes[0].campaign();
    let (mut proposed, mut committed) = (0, 0);
    let start = Instant::now();
    while committed < total {
        let leading = nodes[0].status().role == Role::Leader;
        if leading && proposed < total {
            for _ in 0..batch {
                if nodes[0].propose(vec![7; COMMAND_BYTES]).is_ok() {
                    proposed += 1;
                }
            }
        } else {
            // Heartbeats carry the last commit index to the followers.
            nodes.iter_mut().for_each(RawNode::tick);
        }
        for (i, node) in nodes.iter_mut().enumerate() {
            let applied = handle(node, &mut queue);
            if i == 0 {
                committed += applied;
            }
        }
        while let Some(message) = queue.pop_front() {
            let to = (message.to - 1) as usize;
            let _ = nodes[to].step(message);
            let applied = handle(&mut nodes[to], &mut queue);
            if to == 0 {
                committed += applied;
            }
        }
    }
    committed as f64 / start.elapsed().as_secs_f64()
}

fn main() {
    let total = 200_000;
    println!(
        "setup: {total} commands of {COMMAND_BYTES} bytes, Config::new defaults, one thread, \
         FIFO in-memory delivery, no storage; proposals per Ready = batch"
    );
    for voters in [3, 5] {
        for batch in [1, 10, 100] {
            let rate = run(voters, batch, total);
            println!("voters={voters} batch={batch:>3}: {rate:>10.0} committed entries/s");
        }
    }
}
