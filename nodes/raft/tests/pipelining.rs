//! Batching and pipelining of AppendEntries: bounded in-flight window,
//! bounded message size, and each command sent to each follower ~once.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers outside #[test] fns

mod common;
use common::Cluster;
use raft::{Message, MessageBody, ProgressState};

fn appends_to(messages: &[Message], to: u64) -> Vec<usize> {
    messages
        .iter()
        .filter(|m| m.to == to)
        .filter_map(|m| match &m.body {
            MessageBody::Append { entries, .. } if !entries.is_empty() => Some(entries.len()),
            _ => None,
        })
        .collect()
}

/// Proposals between two Readys travel in one Append per follower.
#[test]
fn proposals_between_readys_are_batched() {
    let mut c = Cluster::new(3);
    c.elect(1);
    for i in 0..100u8 {
        c.node(1).propose(vec![i]).unwrap();
    }
    let ready = c.node(1).ready();
    assert_eq!(ready.entries.len(), 100);
    assert_eq!(appends_to(&ready.messages, 2), vec![100]);
    assert_eq!(appends_to(&ready.messages, 3), vec![100]);
}

/// max_message_bytes caps each Append (one oversized entry still goes).
#[test]
fn append_size_is_capped_but_always_carries_one_entry() {
    let mut c = Cluster::with_config(3, |cfg| cfg.max_message_bytes = 200);
    c.elect(1);
    for _ in 0..20 {
        c.node(1).propose(vec![0; 50]).unwrap();
    }
    c.node(1).propose(vec![0; 1000]).unwrap();
    c.deliver_all();
    c.tick_all(2); // the next heartbeat carries the commit index
    let sizes: Vec<usize> = c
        .sent
        .iter()
        .filter_map(|m| match &m.body {
            MessageBody::Append { entries, .. } if !entries.is_empty() => {
                Some(entries.iter().map(|e| e.data.len() + 24).sum())
            }
            _ => None,
        })
        .collect();
    assert!(
        sizes.iter().all(|&s| s <= 200 || s == 1024),
        "sizes {sizes:?}"
    );
    assert!(sizes.contains(&1024));
    assert_eq!(c.commands(2).len(), 21);
}

/// In Replicate state the leader streams up to max_inflight_messages
/// Appends without waiting, then stops until acknowledgements arrive.
#[test]
fn inflight_window_bounds_unacknowledged_appends() {
    let window = 4;
    let mut c = Cluster::with_config(3, |cfg| cfg.max_inflight_messages = window);
    c.elect(1);
    c.propose(1, b"warm-up"); // followers move to Replicate
    let status = c.node(1).status();
    assert!(status
        .followers
        .iter()
        .all(|f| f.state == ProgressState::Replicate));
    let mut outstanding = Vec::new();
    for i in 0..10u8 {
        c.node(1).propose(vec![i]).unwrap();
        let ready = c.node(1).ready();
        outstanding.extend(ready.messages);
        c.node(1).advance();
    }
    assert_eq!(
        appends_to(&outstanding, 2).len(),
        window,
        "window caps the pipeline"
    );
    let follower = c.node(1).status().followers[0].clone();
    assert_eq!(follower.inflight_messages, window);
    // Acknowledgements open the window; everything arrives in the end.
    c.queue.extend(outstanding);
    c.deliver_all();
    c.tick_all(2);
    assert_eq!(c.commands(2).len(), 11);
    assert_eq!(c.commands(3), c.commands(1));
}

/// Lab 2B "bytes/RPC counts": in steady state each command is sent to each
/// follower about once.
#[test]
fn each_command_reaches_each_follower_about_once() {
    let mut c = Cluster::new(5);
    c.elect(1);
    let entries_before = c.node(1).counters().entries_sent;
    for i in 0..50u8 {
        c.propose(1, &[i]);
    }
    let sent = c.node(1).counters().entries_sent - entries_before;
    assert_eq!(sent, 50 * 4, "entries sent for 50 commands to 4 followers");
}
