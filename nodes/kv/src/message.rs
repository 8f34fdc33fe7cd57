//! Client request and response messages, as the node daemon carries them over
//! the transport (CBOR frames) and the simulator carries them as values.
//!
//! Every response says whether the request *certainly did not* take effect
//! through this attempt ([`KvResponse::is_definite_refusal`]) or may have:
//! the client needs that to report an unknown outcome as unknown.

use raft::NodeId;
use serde::{Deserialize, Serialize};

use crate::command::{ClientId, InvalidOp, Op, OpResult, Seq};

/// A client's request. A retry carries the same `client_id` and `seq`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct KvRequest {
    pub client_id: ClientId,
    pub seq: Seq,
    pub op: Op,
}

/// A server's answer to one [`KvRequest`].
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum KvResponse {
    /// The operation took effect (or, for a get, read) with this result.
    /// A cas whose expected value did not match is `Ok(Cas { swapped: false })`.
    Ok(OpResult),
    /// This server is not the leader and did not propose the request.
    /// Definite for this attempt. `leader_hint` is whom it believes leads.
    WrongLeader { leader_hint: Option<NodeId> },
    /// The server proposed the request, then lost track of it (leadership or
    /// term changed, or another entry took its log slot). It may still be
    /// committed: indefinite. Retry with the same seq.
    LeadershipLost { leader_hint: Option<NodeId> },
    /// The server gave up waiting for the request to commit. Indefinite.
    Timeout,
    /// Too many requests pending at this server; not proposed. Definite.
    Busy,
    /// A newer request of this client was already applied; this one was not
    /// applied now and its original reply is no longer kept.
    Stale,
    /// The request is malformed (e.g. over a size limit). Definite; retrying
    /// does not help.
    Invalid(InvalidOp),
}

impl KvResponse {
    /// True when the request certainly did not take effect through this
    /// attempt (it may still take effect through an earlier attempt, which
    /// the client tracks).
    pub fn is_definite_refusal(&self) -> bool {
        matches!(
            self,
            KvResponse::WrongLeader { .. } | KvResponse::Busy | KvResponse::Invalid(_)
        )
    }

    /// The leader hint carried, if any.
    pub fn leader_hint(&self) -> Option<NodeId> {
        match self {
            KvResponse::WrongLeader { leader_hint }
            | KvResponse::LeadershipLost { leader_hint } => *leader_hint,
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::command::{decode_cbor, encode_cbor};

    #[test]
    fn messages_round_trip_through_cbor() {
        let request = KvRequest {
            client_id: 1,
            seq: 2,
            op: Op::Append {
                key: "k".into(),
                value: "v".into(),
            },
        };
        let decoded: KvRequest = decode_cbor(&encode_cbor(&request)).unwrap();
        assert_eq!(decoded, request);
        for response in [
            KvResponse::Ok(OpResult::Value("x".into())),
            KvResponse::WrongLeader {
                leader_hint: Some(3),
            },
            KvResponse::LeadershipLost { leader_hint: None },
            KvResponse::Timeout,
            KvResponse::Invalid(InvalidOp::KeyTooLong { len_bytes: 5000 }),
        ] {
            let decoded: KvResponse = decode_cbor(&encode_cbor(&response)).unwrap();
            assert_eq!(decoded, response);
        }
    }

    #[test]
    fn only_refusals_before_proposing_are_definite() {
        assert!(KvResponse::WrongLeader { leader_hint: None }.is_definite_refusal());
        assert!(KvResponse::Busy.is_definite_refusal());
        assert!(!KvResponse::Timeout.is_definite_refusal());
        assert!(!KvResponse::LeadershipLost { leader_hint: None }.is_definite_refusal());
        assert!(!KvResponse::Stale.is_definite_refusal());
    }
}
