//! Linearizable reads without writing to the log (§6.4 of the thesis):
//! ReadIndex confirmed by a heartbeat round, or a leader lease.

use crate::config::ReadMode;
use crate::errors::ProposeError;
use crate::message::MessageBody;
use crate::quorum::majority_value;
use crate::raft::{PendingRead, Raft, ReadState, Role};
use crate::types::{Index, NodeId};

impl Raft {
    pub(crate) fn committed_in_current_term(&self) -> bool {
        self.log.term(self.log.committed) == Some(self.term)
    }

    pub(crate) fn read_index(&mut self, ctx: Vec<u8>) -> Result<(), ProposeError> {
        match self.role {
            Role::Leader => self.leader_read(self.id, ctx),
            _ => match self.leader {
                Some(leader) => {
                    self.send(leader, MessageBody::ReadIndex { ctx });
                    Ok(())
                }
                None => Err(ProposeError::NotLeader { leader_hint: None }),
            },
        }
    }

    pub(crate) fn leader_read(
        &mut self,
        requester: NodeId,
        ctx: Vec<u8>,
    ) -> Result<(), ProposeError> {
        let pending = self.pending_reads.len() + self.reads_awaiting_commit.len();
        if pending >= self.cfg.max_pending_reads {
            return Err(ProposeError::TooManyPendingReads {
                pending,
                limit: self.cfg.max_pending_reads,
            });
        }
        if !self.committed_in_current_term() {
            // §6.4 step 1: until an entry of this term commits, this leader
            // does not know the latest commit index.
            self.reads_awaiting_commit.push((requester, ctx));
            return Ok(());
        }
        let index = self.log.committed;
        if self.cfg.voters.len() == 1 || self.lease_valid() {
            self.answer_read(requester, ctx, index);
            return Ok(());
        }
        self.pending_reads.push_back(PendingRead {
            round: self.read_round,
            index,
            ctx,
            requester,
        });
        self.read_heartbeat_pending = true;
        Ok(())
    }

    /// Lease mode: a majority (counting this leader) acknowledged a
    /// heartbeat sent less than `election_timeout_ticks_min - 1` ticks ago,
    /// so none of them will vote for another leader yet (the one tick of
    /// margin absorbs tick skew). Never after a TimeoutNow in this term,
    /// which lets its target bypass the followers' lease.
    pub(crate) fn lease_valid(&self) -> bool {
        if self.cfg.read_mode != ReadMode::Lease || self.lease_revoked {
            return false;
        }
        // Encode "never acknowledged" as 0 and a send tick t as t + 1.
        let mut acked: Vec<u64> = self
            .progress
            .values()
            .map(|p| p.lease_acked_sent_tick.map_or(0, |t| t + 1))
            .collect();
        acked.push(self.now_ticks + 1);
        let oldest_in_majority = majority_value(&mut acked, self.cfg.quorum());
        oldest_in_majority > 0
            && oldest_in_majority - 1 + u64::from(self.cfg.election_timeout_ticks_min)
                > self.now_ticks + 1
    }

    pub(crate) fn answer_read(&mut self, requester: NodeId, ctx: Vec<u8>, index: Index) {
        if requester == self.id {
            self.read_states.push(ReadState { ctx, index });
        } else {
            self.send(requester, MessageBody::ReadIndexResponse { ctx, index });
        }
    }

    /// Answers the reads whose round a majority has confirmed.
    pub(crate) fn confirm_reads(&mut self) {
        if self.pending_reads.is_empty() {
            return;
        }
        let mut rounds: Vec<u64> = self.progress.values().map(|p| p.read_round_acked).collect();
        rounds.push(u64::MAX);
        let confirmed = majority_value(&mut rounds, self.cfg.quorum());
        while self
            .pending_reads
            .front()
            .is_some_and(|r| r.round <= confirmed)
        {
            if let Some(read) = self.pending_reads.pop_front() {
                self.answer_read(read.requester, read.ctx, read.index);
            }
        }
    }
}
