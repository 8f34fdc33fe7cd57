//! Serde helper for `Vec<u8>` fields: `#[serde(with = "crate::bytes")]`.
//!
//! Serde's derive treats a `Vec<u8>` as a sequence of integers, so CBOR
//! writes every byte as its own integer item (one to two bytes each, and a
//! call per byte on both sides: ~14% of a leader's CPU under load). This
//! writes the field as one CBOR byte string instead. Reading also accepts
//! the old sequence form, so a frame from a peer built before the change
//! still decodes.

use serde::de::{Deserializer, Error, SeqAccess, Visitor};
use serde::Serializer;
use std::fmt;

pub fn serialize<S: Serializer>(bytes: &[u8], serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_bytes(bytes)
}

pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Vec<u8>, D::Error> {
    deserializer.deserialize_byte_buf(BytesVisitor)
}

struct BytesVisitor;

impl<'de> Visitor<'de> for BytesVisitor {
    type Value = Vec<u8>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a byte string")
    }

    fn visit_bytes<E: Error>(self, v: &[u8]) -> Result<Vec<u8>, E> {
        Ok(v.to_vec())
    }

    fn visit_byte_buf<E: Error>(self, v: Vec<u8>) -> Result<Vec<u8>, E> {
        Ok(v)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<u8>, A::Error> {
        // Bounded by what the frame holds; the hint is only a hint.
        let mut out = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(64 * 1024));
        while let Some(byte) = seq.next_element::<u8>()? {
            out.push(byte);
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use crate::types::{Entry, EntryKind};
    use crate::{Message, MessageBody};

    fn entry(data: Vec<u8>) -> Entry {
        Entry {
            term: 3,
            index: 7,
            kind: EntryKind::Normal,
            data,
        }
    }

    #[test]
    fn entry_data_is_one_byte_string_in_cbor() {
        let data: Vec<u8> = (0..1024u32).map(|i| (i * 7 + 200) as u8).collect();
        let mut out = Vec::new();
        ciborium::into_writer(&entry(data.clone()), &mut out).unwrap();
        // As a sequence of integers, bytes >= 24 take two bytes each.
        assert!(out.len() < 1024 + 64, "encoded {} bytes", out.len());
        let back: Entry = ciborium::from_reader(out.as_slice()).unwrap();
        assert_eq!(back.data, data);
    }

    #[test]
    fn the_old_integer_sequence_form_still_decodes() {
        #[derive(serde::Serialize)]
        struct OldEntry {
            term: u64,
            index: u64,
            kind: EntryKind,
            data: Vec<u8>,
        }
        let old = OldEntry {
            term: 3,
            index: 7,
            kind: EntryKind::Normal,
            data: vec![1, 200, 255],
        };
        let mut out = Vec::new();
        ciborium::into_writer(&old, &mut out).unwrap();
        let back: Entry = ciborium::from_reader(out.as_slice()).unwrap();
        assert_eq!(back, entry(vec![1, 200, 255]));
    }

    #[test]
    fn messages_with_bytes_round_trip() {
        let message = Message {
            from: 1,
            to: 2,
            term: 4,
            body: MessageBody::ReadIndexResponse {
                ctx: b"read-17".to_vec(),
                index: 9,
            },
        };
        let mut out = Vec::new();
        ciborium::into_writer(&message, &mut out).unwrap();
        let back: Message = ciborium::from_reader(out.as_slice()).unwrap();
        assert_eq!(back, message);
    }
}
