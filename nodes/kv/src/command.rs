//! What a client asks for and what the replicated log carries: operations,
//! their results, and the CBOR codec for log entries.
//!
//! A log entry's data is one [`Command`]: the operation plus the client's id
//! and sequence number, so every replica can deduplicate a retried request
//! the same way (the deduplication table lives in the replicated state, see
//! [`crate::state_machine`]).

use serde::{Deserialize, Serialize};

/// A client's identity, chosen by the client (randomly, from a seeded source
/// in the simulator) and unique across the cluster's lifetime.
pub type ClientId = u64;

/// A client's per-request sequence number. Starts at 1 and increases by one
/// for each new operation; a retry of the same operation reuses its number.
pub type Seq = u64;

/// Upper bound on a key's length: a request over it is refused as a definite
/// failure rather than replicated.
pub const MAX_KEY_BYTES: usize = 1024;
/// Upper bound on a value's length (put/append/cas arguments).
pub const MAX_VALUE_BYTES: usize = 1 << 20;

/// One operation on the key/value store. A missing key reads as `""`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Op {
    /// Read the key's current value (`""` if missing).
    Get { key: String },
    /// Replace the key's value.
    Put { key: String, value: String },
    /// Append to the key's value (to `""` if missing).
    Append { key: String, value: String },
    /// Compare-and-set: set the key to `new` if and only if its current value
    /// (`""` if missing) equals `expected`.
    Cas {
        key: String,
        expected: String,
        new: String,
    },
}

impl Op {
    /// The key the operation touches.
    pub fn key(&self) -> &str {
        match self {
            Op::Get { key }
            | Op::Put { key, .. }
            | Op::Append { key, .. }
            | Op::Cas { key, .. } => key,
        }
    }

    /// Whether the operation only reads. Reads are never recorded in the
    /// deduplication table: re-executing a read is harmless, and keeping the
    /// table to writes keeps snapshots small.
    pub fn is_read(&self) -> bool {
        matches!(self, Op::Get { .. })
    }

    /// Checks the size limits; a request that fails here is refused before
    /// it reaches the log.
    pub fn validate(&self) -> Result<(), InvalidOp> {
        if self.key().len() > MAX_KEY_BYTES {
            return Err(InvalidOp::KeyTooLong {
                len_bytes: self.key().len(),
            });
        }
        let value_len_bytes = match self {
            Op::Get { .. } => 0,
            Op::Put { value, .. } | Op::Append { value, .. } => value.len(),
            Op::Cas { expected, new, .. } => expected.len().max(new.len()),
        };
        if value_len_bytes > MAX_VALUE_BYTES {
            return Err(InvalidOp::ValueTooLong {
                len_bytes: value_len_bytes,
            });
        }
        Ok(())
    }
}

/// Why an operation was refused before being replicated.
#[derive(Clone, Debug, PartialEq, Eq, Hash, thiserror::Error, Serialize, Deserialize)]
pub enum InvalidOp {
    #[error("key is {len_bytes} bytes, the limit is {MAX_KEY_BYTES}")]
    KeyTooLong { len_bytes: usize },
    #[error("value is {len_bytes} bytes, the limit is {MAX_VALUE_BYTES}")]
    ValueTooLong { len_bytes: usize },
}

/// The result of applying an operation.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum OpResult {
    /// A get's value (`""` for a missing key).
    Value(String),
    /// A put or append took effect.
    Done,
    /// A cas: `swapped` is true iff the current value equalled `expected`
    /// and was replaced. A false cas had no effect.
    Cas { swapped: bool },
}

/// A log entry's payload: who asked, which request, and what.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Command {
    pub client_id: ClientId,
    pub seq: Seq,
    pub op: Op,
}

/// A log entry whose data does not decode as a [`Command`]. Every replica
/// sees the same bytes, so every replica skips it the same way.
#[derive(Debug, thiserror::Error)]
#[error("log entry data is not a kv command: {reason}")]
pub struct DecodeError {
    pub reason: String,
}

impl Command {
    /// CBOR bytes for a log entry.
    pub fn encode(&self) -> Vec<u8> {
        encode_cbor(self)
    }

    /// Decodes a log entry's data.
    pub fn decode(data: &[u8]) -> Result<Command, DecodeError> {
        decode_cbor(data)
    }
}

/// Serializes to CBOR. Serializing our own plain data types into a `Vec`
/// cannot fail (no I/O, no maps with non-string keys that CBOR rejects), so a
/// failure here is a programming error.
pub(crate) fn encode_cbor<T: Serialize>(value: &T) -> Vec<u8> {
    let mut out = Vec::new();
    if let Err(error) = ciborium::into_writer(value, &mut out) {
        // Writing to a Vec has no I/O error; only a broken Serialize impl gets here.
        panic!("CBOR encoding of an in-memory value failed: {error}");
    }
    out
}

pub(crate) fn decode_cbor<T: serde::de::DeserializeOwned>(data: &[u8]) -> Result<T, DecodeError> {
    ciborium::from_reader(data).map_err(|error| DecodeError {
        reason: error.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn command_round_trips_through_cbor() {
        let command = Command {
            client_id: 7,
            seq: 3,
            op: Op::Cas {
                key: "k".into(),
                expected: "".into(),
                new: "v".into(),
            },
        };
        let bytes = command.encode();
        assert_eq!(Command::decode(&bytes).unwrap(), command);
    }

    #[test]
    fn garbage_does_not_decode() {
        assert!(Command::decode(&[0xff, 0x00, 0x13]).is_err());
        assert!(Command::decode(&[]).is_err());
    }

    #[test]
    fn limits_are_checked() {
        let long_key = "k".repeat(MAX_KEY_BYTES + 1);
        assert_eq!(
            Op::Get { key: long_key }.validate(),
            Err(InvalidOp::KeyTooLong {
                len_bytes: MAX_KEY_BYTES + 1
            })
        );
        let long_value = "v".repeat(MAX_VALUE_BYTES + 1);
        assert!(Op::Append {
            key: "k".into(),
            value: long_value
        }
        .validate()
        .is_err());
        assert!(Op::Put {
            key: "k".into(),
            value: "v".into()
        }
        .validate()
        .is_ok());
    }
}
