//! Elections (§5.2) with pre-vote (§9.6) and the check-quorum lease:
//! campaigning, counting votes, and answering vote requests.

use crate::errors::StepError;
use crate::message::{Message, MessageBody};
use crate::progress::Progress;
use crate::raft::{Raft, Role};
use crate::types::{EntryKind, Index, NodeId, Term};

impl Raft {
    /// True while this node believes a leader is alive: it is the leader, or
    /// it heard from one less than an election timeout ago.
    pub(crate) fn in_lease(&self) -> bool {
        match self.role {
            Role::Leader => true,
            _ => {
                self.leader.is_some()
                    && self.election_elapsed_ticks < self.cfg.election_timeout_ticks_min
            }
        }
    }

    /// Starts an election: with pre-vote first if `pre_vote`, and with the
    /// leadership-transfer flag if a leader asked us to (TimeoutNow).
    pub(crate) fn campaign(&mut self, pre_vote: bool, transfer: bool) {
        let was_leader = self.role == Role::Leader;
        if was_leader {
            // Only reachable through RawNode::campaign on a leader: a no-op.
            return;
        }
        self.votes.clear();
        self.votes.insert(self.id, true);
        self.leader = None;
        self.reset_election_timer();
        self.campaign_is_transfer = transfer;
        if pre_vote {
            self.role = Role::PreCandidate;
            self.counters.pre_votes_started += 1;
        } else {
            self.role = Role::Candidate;
            self.term += 1;
            self.vote = Some(self.id);
            self.counters.elections_started += 1;
        }
        self.request_votes();
        self.check_election_result();
    }

    /// Sends the (pre-)vote request to every voter that has not answered
    /// yet. Called when the campaign starts and again every heartbeat
    /// interval while it lasts: requests are idempotent (a voter grants the
    /// same candidate again), and on a lossy or slow network a fresh request
    /// is a fresh chance to finish the election before the timeout.
    pub(crate) fn request_votes(&mut self) {
        let (last_log_index, last_log_term) = (self.log.last_index(), self.log.last_term());
        let missing: Vec<NodeId> = self
            .peer_ids()
            .into_iter()
            .filter(|id| !self.votes.contains_key(id))
            .collect();
        for to in missing {
            if self.role == Role::PreCandidate {
                let body = MessageBody::PreVote {
                    last_log_index,
                    last_log_term,
                };
                self.send_with_term(to, self.term + 1, body);
            } else {
                let leadership_transfer = self.campaign_is_transfer;
                let body = MessageBody::Vote {
                    last_log_index,
                    last_log_term,
                    leadership_transfer,
                };
                self.send(to, body);
            }
        }
    }

    pub(crate) fn check_election_result(&mut self) {
        let granted = self.votes.values().filter(|&&g| g).count();
        let rejected = self.votes.len() - granted;
        let quorum = self.cfg.quorum();
        if granted >= quorum {
            match self.role {
                Role::PreCandidate => self.campaign(false, false),
                Role::Candidate => self.become_leader(),
                _ => {}
            }
        } else if rejected > self.cfg.voters.len() - quorum {
            self.become_follower(self.term, None);
        }
    }

    pub(crate) fn become_leader(&mut self) {
        assert_eq!(
            self.vote,
            Some(self.id),
            "a leader of term {} must have voted for itself",
            self.term
        );
        self.role = Role::Leader;
        self.leader = Some(self.id);
        self.votes.clear();
        self.counters.leaderships_won += 1;
        self.election_elapsed_ticks = 0;
        self.heartbeat_elapsed_ticks = 0;
        self.lead_transferee = None;
        self.read_round = 1;
        self.heartbeat_sent_ticks.clear();
        self.lease_revoked = false;
        let next_index = self.log.last_index() + 1;
        for p in self.progress.values_mut() {
            *p = Progress::new(next_index, self.cfg.max_inflight_messages);
            // Everyone gets a full election timeout to answer the new leader.
            p.last_active_tick = Some(self.now_ticks);
        }
        if !self.cfg.mutations.break_figure8_commit_rule {
            // §8: commit an entry of this term at once, so that entries of
            // earlier terms get committed and ReadIndex can be answered.
            self.append_entry(EntryKind::Noop, Vec::new());
        }
        self.maybe_commit();
        for to in self.peer_ids() {
            self.send_append(to);
        }
    }

    pub(crate) fn handle_vote_request(
        &mut self,
        from: NodeId,
        term: Term,
        last_index: Index,
        last_term: Term,
        pre_vote: bool,
    ) {
        let up_to_date = self.log.is_up_to_date(last_index, last_term);
        if pre_vote {
            // §9.6: grant only if we would vote in that term and have not
            // heard from a leader within the minimum election timeout.
            let granted = term > self.term && !self.in_lease() && up_to_date;
            let reply_term = if granted { term } else { self.term };
            self.send_with_term(from, reply_term, MessageBody::PreVoteResponse { granted });
            return;
        }
        // Here term == self.term (a higher term made us follow it above).
        let can_vote = self.vote == Some(from) || (self.vote.is_none() && self.leader.is_none());
        let granted = can_vote && up_to_date;
        if granted {
            assert!(
                self.vote.is_none() || self.vote == Some(from),
                "one vote per term: voted {:?} in term {}, now {from}",
                self.vote,
                self.term
            );
            self.vote = Some(from);
            self.reset_election_timer();
        }
        self.send(from, MessageBody::VoteResponse { granted });
    }

    pub(crate) fn step_candidate(&mut self, m: Message) -> Result<(), StepError> {
        match m.body {
            MessageBody::Append { .. }
            | MessageBody::Heartbeat { .. }
            | MessageBody::InstallSnapshot { .. } => {
                // A leader of our term exists (§5.2): follow it.
                self.become_follower(m.term, Some(m.from));
                self.handle_from_leader(m)
            }
            MessageBody::PreVoteResponse { granted } if self.role == Role::PreCandidate => {
                let expected_term = if granted { self.term + 1 } else { self.term };
                if m.term != expected_term {
                    return Err(self.unexpected(&m));
                }
                self.votes.entry(m.from).or_insert(granted);
                self.check_election_result();
                Ok(())
            }
            MessageBody::VoteResponse { granted } if self.role == Role::Candidate => {
                self.votes.entry(m.from).or_insert(granted);
                self.check_election_result();
                Ok(())
            }
            _ => Err(self.unexpected(&m)),
        }
    }
}
