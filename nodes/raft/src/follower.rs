//! The follower's side of replication: the AppendEntries consistency
//! check with conflict hints (§5.3) and InstallSnapshot assembly (§7).

use crate::errors::StepError;
use crate::message::{Message, MessageBody};
use crate::raft::{IncomingSnapshot, Raft, ReadState};
use crate::types::{Entry, Index, NodeId, Snapshot, SnapshotMeta, Term};

impl Raft {
    pub(crate) fn step_follower(&mut self, m: Message) -> Result<(), StepError> {
        match m.body {
            MessageBody::Append { .. }
            | MessageBody::Heartbeat { .. }
            | MessageBody::InstallSnapshot { .. } => {
                self.leader = Some(m.from);
                self.election_elapsed_ticks = 0;
                self.handle_from_leader(m)
            }
            MessageBody::TimeoutNow => {
                if self.leader != Some(m.from) {
                    return Err(self.unexpected(&m));
                }
                self.campaign(false, true);
                Ok(())
            }
            MessageBody::ReadIndexResponse { ctx, index } => {
                self.read_states.push(ReadState { ctx, index });
                Ok(())
            }
            _ => Err(self.unexpected(&m)),
        }
    }

    pub(crate) fn handle_from_leader(&mut self, m: Message) -> Result<(), StepError> {
        let from = m.from;
        let term = m.term;
        match m.body {
            MessageBody::Append {
                prev_log_index,
                prev_log_term,
                entries,
                leader_commit,
            } => self.handle_append(
                from,
                term,
                prev_log_index,
                prev_log_term,
                entries,
                leader_commit,
            ),
            MessageBody::Heartbeat { commit, read_round } => {
                // The leader sends at most our acknowledged match index, so
                // the entries up to `commit` are the leader's. A commit beyond
                // our log means we lost acknowledged entries (a storage bug);
                // leave it to the next Append rather than trust it.
                if commit <= self.log.last_index() {
                    self.log.commit_to(commit);
                }
                self.send(from, MessageBody::HeartbeatResponse { read_round });
                Ok(())
            }
            MessageBody::InstallSnapshot {
                meta,
                offset,
                data,
                done,
            } => self.handle_snapshot_chunk(from, term, meta, offset, data, done),
            _ => Err(StepError::Malformed {
                from,
                reason: "not a leader message",
            }),
        }
    }

    pub(crate) fn handle_append(
        &mut self,
        from: NodeId,
        term: Term,
        mut prev_log_index: Index,
        mut prev_log_term: Term,
        entries: Vec<Entry>,
        leader_commit: Index,
    ) -> Result<(), StepError> {
        let malformed = |reason| Err(StepError::Malformed { from, reason });
        check_append_shape(term, prev_log_index, prev_log_term, &entries).or_else(malformed)?;
        let committed = self.log.committed;
        let mut skip = 0;
        if prev_log_index < committed {
            // Entries up to our commit index are known to match (§5.3): skip
            // them and check the rest against our committed entry.
            skip = ((committed - prev_log_index) as usize).min(entries.len());
            prev_log_index = committed;
            let Some(term_at_commit) = self.log.term(committed) else {
                return malformed("commit index outside the log");
            };
            prev_log_term = term_at_commit;
        }
        if prev_log_index == committed && self.log.term(committed) != Some(prev_log_term) {
            // The leader disagrees with a committed entry: only possible if
            // Raft was broken (e.g. a test mutation). Do not answer, so the
            // two do not ping-pong rejections.
            return Err(StepError::ConflictsWithCommitted {
                from,
                index: committed,
                commit: committed,
            });
        }
        if self.log.term(prev_log_index) != Some(prev_log_term) {
            self.reject_append(from, prev_log_index);
            return Ok(());
        }
        let new_entries = &entries[skip..];
        if new_entries.first().is_some_and(|e| e.term < prev_log_term) {
            return malformed("entry term below the term of our committed entry before it");
        }
        let last_new = prev_log_index + new_entries.len() as u64;
        let first_conflict = new_entries
            .iter()
            .position(|e| self.log.term(e.index) != Some(e.term));
        if let Some(position) = first_conflict {
            let conflict_index = new_entries[position].index;
            if conflict_index <= self.log.last_index() {
                if conflict_index <= committed {
                    return Err(StepError::ConflictsWithCommitted {
                        from,
                        index: conflict_index,
                        commit: committed,
                    });
                }
                self.log.truncate_from(conflict_index);
            }
            for entry in entries.into_iter().skip(skip + position) {
                self.log.append(entry);
            }
        }
        self.log.commit_to(leader_commit.min(last_new));
        self.send(
            from,
            MessageBody::AppendResponse {
                success: true,
                index: last_new,
                conflict_term: None,
                conflict_index: 0,
            },
        );
        Ok(())
    }

    /// §7: the whole snapshot arrived. If our log already holds its last
    /// entry, keep the entries after it and just commit; otherwise replace
    /// the log with it and hand it to the application in the next Ready.
    pub(crate) fn install_received_snapshot(&mut self, snapshot: Snapshot) {
        let index = snapshot.meta.index;
        if self.log.term(index) == Some(snapshot.meta.term) {
            self.log.commit_to(index);
            return;
        }
        self.snapshot = Some(snapshot.clone());
        self.log.install_snapshot(snapshot);
        self.counters.snapshots_installed += 1;
    }

    /// §5.3 with the fast-backtracking hint: our term at the rejected index
    /// and the first index of that term (or our last index + 1 when the log
    /// is shorter), so the leader can skip a whole term per round trip.
    pub(crate) fn reject_append(&mut self, from: NodeId, prev_log_index: Index) {
        let last = self.log.last_index();
        let committed = self.log.committed;
        let (conflict_term, conflict_index) = match self.log.term(prev_log_index) {
            Some(t) if prev_log_index <= last => {
                (Some(t), self.log.first_index_of_term(t).max(committed + 1))
            }
            _ => (None, last + 1),
        };
        self.counters.append_rejections_sent += 1;
        let body = MessageBody::AppendResponse {
            success: false,
            index: prev_log_index,
            conflict_term,
            conflict_index,
        };
        self.send(from, body);
    }

    pub(crate) fn handle_snapshot_chunk(
        &mut self,
        from: NodeId,
        term: Term,
        meta: SnapshotMeta,
        offset: u64,
        data: Vec<u8>,
        done: bool,
    ) -> Result<(), StepError> {
        if meta.index == 0 || meta.term == 0 || meta.term > term {
            return Err(StepError::Malformed {
                from,
                reason: "snapshot index or term impossible",
            });
        }
        let snapshot_index = meta.index;
        if snapshot_index <= self.log.committed {
            // We already have everything it covers.
            self.incoming_snapshot = None;
            self.send(
                from,
                MessageBody::SnapshotResponse {
                    snapshot_index,
                    next_offset: 0,
                    done: true,
                },
            );
            return Ok(());
        }
        if offset == 0 {
            self.incoming_snapshot = Some(IncomingSnapshot {
                meta: meta.clone(),
                data: Vec::new(),
            });
        }
        let expected = match &self.incoming_snapshot {
            Some(incoming) if incoming.meta == meta => incoming.data.len() as u64,
            _ => 0,
        };
        if offset != expected {
            self.send(
                from,
                MessageBody::SnapshotResponse {
                    snapshot_index,
                    next_offset: expected,
                    done: false,
                },
            );
            return Err(StepError::SnapshotChunkOffset {
                from,
                offset,
                expected,
            });
        }
        let Some(incoming) = self.incoming_snapshot.as_mut() else {
            return Err(StepError::SnapshotChunkOffset {
                from,
                offset,
                expected,
            });
        };
        incoming.data.extend_from_slice(&data);
        let next_offset = incoming.data.len() as u64;
        if !done {
            self.send(
                from,
                MessageBody::SnapshotResponse {
                    snapshot_index,
                    next_offset,
                    done: false,
                },
            );
            return Ok(());
        }
        if let Some(IncomingSnapshot { meta, data }) = self.incoming_snapshot.take() {
            self.install_received_snapshot(Snapshot { meta, data });
        }
        self.send(
            from,
            MessageBody::SnapshotResponse {
                snapshot_index,
                next_offset,
                done: true,
            },
        );
        Ok(())
    }
}

/// What a well-formed Append looks like: entries numbered right after
/// `prev_log_index` without overflow, terms never decreasing from
/// `prev_log_term`, and nothing above the sender's term.
fn check_append_shape(
    term: Term,
    prev_log_index: Index,
    prev_log_term: Term,
    entries: &[Entry],
) -> Result<(), &'static str> {
    if prev_log_term > term {
        return Err("previous log term above the message term");
    }
    let mut previous_term = prev_log_term;
    for (offset, entry) in entries.iter().enumerate() {
        if prev_log_index.checked_add(1 + offset as u64) != Some(entry.index) {
            return Err("entries are not contiguous after the previous log index");
        }
        if entry.term < previous_term || entry.term > term {
            return Err("entry terms decrease or exceed the message term");
        }
        previous_term = entry.term;
    }
    Ok(())
}
