//! Hosting the server on our Raft core: [`Consensus`] for `raft::RawNode`,
//! and [`KvServer::on_raft_ready`], which takes a whole `raft::Ready`.
//!
//! A runtime's loop per node, in the order `raft::Ready` prescribes:
//!
//! ```text
//! on client request:   server.handle_request(&mut raw, request_id, request)
//! on raft message:     raw.step(message)
//! on each tick:        raw.tick(); server.tick(&raw)
//! then, while raw.has_ready():
//!     let ready = raw.ready();
//!     persist ready.snapshot, ready.entries, ready.hard_state (one fsync)
//!     send ready.messages
//!     server.on_raft_ready(&raw, &ready)?      // restore, apply, read states
//!     raw.advance();
//!     if let Some(taken) = server.maybe_snapshot(&mut raw, persisted_raft_state_bytes)? {
//!         persist taken (snapshot file), drop the stored log up to taken.index
//!     }
//! finally: for reply in server.take_replies() { send reply.response to reply.request_id's client }
//! ```

use raft::{Index, ProposeError, RawNode, Ready, Role};

use crate::server::{Consensus, KvServer, Leadership, Refusal, ServerError};

fn refusal(error: ProposeError) -> Refusal {
    match error {
        ProposeError::NotLeader { leader_hint } => Refusal::NotLeader { leader_hint },
        // Transfer in progress, queue limits, unknown node: definite, retry later.
        _ => Refusal::Busy,
    }
}

impl Consensus for RawNode {
    fn propose(&mut self, data: Vec<u8>) -> Result<Index, Refusal> {
        RawNode::propose(self, data).map_err(refusal)
    }

    fn read_index(&mut self, ctx: Vec<u8>) -> Result<(), Refusal> {
        RawNode::read_index(self, ctx).map_err(refusal)
    }

    fn compact(&mut self, index: Index, snapshot_data: Vec<u8>) -> Result<(), String> {
        RawNode::compact(self, index, snapshot_data).map_err(|error| error.to_string())
    }

    fn leadership(&self) -> Leadership {
        let status = self.status();
        Leadership {
            term: status.term,
            is_leader: status.role == Role::Leader,
            leader_hint: status.leader,
        }
    }
}

impl KvServer {
    /// Steps 3 and 4 of a `raft::Ready` (see [`KvServer::on_ready`]): call
    /// after persisting the Ready and sending its messages, before `advance()`.
    pub fn on_raft_ready(&mut self, node: &RawNode, ready: &Ready) -> Result<(), ServerError> {
        let read_states: Vec<(Vec<u8>, Index)> = ready
            .read_states
            .iter()
            .map(|r| (r.ctx.clone(), r.index))
            .collect();
        self.on_ready(
            node,
            ready.snapshot.as_ref(),
            &ready.committed_entries,
            &read_states,
        )
    }
}
