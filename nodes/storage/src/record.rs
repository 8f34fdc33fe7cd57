//! The record codec: how one WAL record is framed and what its payload holds.
//!
//! ```text
//! offset  size  field
//!      0     4  length           bytes from offset 8 to the end of the record (LE)
//!      4     4  crc32c           over bytes [0, 4) and [8, 8 + length)  (LE)
//!      8     1  type             kind (bits 0..6) | END_OF_BATCH (bit 7)
//!      9     8  batch            sequence number of the batch (LE), +1 per batch
//!     17     8  durable_through  highest batch known fsynced when this was written
//!     25     .  payload          depends on kind
//! ```
//!
//! The checksum covers the length too, so a flipped length bit is caught
//! like any other. A batch (one `append` call) is one or more records with
//! the same batch number; its last record carries END_OF_BATCH. Recovery
//! applies whole batches only, so a Ready's entries and hard state become
//! visible together or not at all.
//!
//! `durable_through` is what lets recovery tell a torn tail from corruption:
//! an intact record claiming batch `b` was durable proves that any damage in
//! batch `b` or earlier happened to data that was already acknowledged.

use raft::{Entry, EntryKind, HardState, Index, Term};

use crate::error::Corruption;

/// Length and checksum fields.
pub(crate) const FRAME_PREFIX_BYTES: usize = 8;
/// Type, batch and durable_through fields.
const BODY_FIXED_BYTES: usize = 17;
/// Everything before the payload.
pub(crate) const RECORD_HEADER_BYTES: usize = FRAME_PREFIX_BYTES + BODY_FIXED_BYTES;
/// Upper bound on one record's length field. Entries are split across
/// records well below this; a larger length can only be damage.
pub(crate) const RECORD_BYTES_MAX: u32 = 80 * 1024 * 1024;
/// Entries records are cut when their payload passes this size, so a big
/// batch becomes several records of one batch rather than one huge record.
pub(crate) const ENTRIES_RECORD_PAYLOAD_TARGET_BYTES: usize = 1024 * 1024;

const END_OF_BATCH: u8 = 0x80;
const KIND_ENTRIES: u8 = 1;
const KIND_HARD_STATE: u8 = 2;
const KIND_TRUNCATE: u8 = 3;
const KIND_SNAPSHOT: u8 = 4;

/// Fixed bytes per entry inside an entries payload: term, kind, data length.
const ENTRY_FIXED_BYTES: usize = 8 + 1 + 4;

/// A decoded record payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Record {
    /// Consecutive entries, the first at `entries[0].index`.
    Entries(Vec<Entry>),
    HardState(HardState),
    /// Drop every entry with index >= `from_index`.
    Truncate {
        from_index: Index,
    },
    /// The log is compacted up to `index` (whose term is `term`): drop
    /// every entry with index <= `index`. A snapshot that replaces the log
    /// is written as `Truncate { index + 1 }` followed by this.
    Snapshot {
        index: Index,
        term: Term,
    },
}

/// A record to encode, borrowing the caller's data.
#[derive(Debug, Clone, Copy)]
pub(crate) enum RecordRef<'a> {
    Entries(&'a [Entry]),
    HardState(&'a HardState),
    Truncate { from_index: Index },
    Snapshot { index: Index, term: Term },
}

/// Appends one framed record to `buf`.
pub(crate) fn encode_record(
    buf: &mut Vec<u8>,
    record: RecordRef<'_>,
    batch: u64,
    durable_through: u64,
    end_of_batch: bool,
) {
    let start = buf.len();
    buf.extend_from_slice(&[0u8; FRAME_PREFIX_BYTES]);
    let kind = match record {
        RecordRef::Entries(_) => KIND_ENTRIES,
        RecordRef::HardState(_) => KIND_HARD_STATE,
        RecordRef::Truncate { .. } => KIND_TRUNCATE,
        RecordRef::Snapshot { .. } => KIND_SNAPSHOT,
    };
    buf.push(kind | if end_of_batch { END_OF_BATCH } else { 0 });
    buf.extend_from_slice(&batch.to_le_bytes());
    buf.extend_from_slice(&durable_through.to_le_bytes());
    match record {
        RecordRef::Entries(entries) => {
            let first_index = entries.first().map_or(0, |e| e.index);
            buf.extend_from_slice(&first_index.to_le_bytes());
            buf.extend_from_slice(&(entries.len() as u32).to_le_bytes());
            for entry in entries {
                buf.extend_from_slice(&entry.term.to_le_bytes());
                buf.push(match entry.kind {
                    EntryKind::Normal => 0,
                    EntryKind::Noop => 1,
                });
                buf.extend_from_slice(&(entry.data.len() as u32).to_le_bytes());
                buf.extend_from_slice(&entry.data);
            }
        }
        RecordRef::HardState(hs) => {
            buf.extend_from_slice(&hs.term.to_le_bytes());
            match hs.vote {
                Some(v) => {
                    buf.push(1);
                    buf.extend_from_slice(&v.to_le_bytes());
                }
                None => {
                    buf.push(0);
                    buf.extend_from_slice(&0u64.to_le_bytes());
                }
            }
            buf.extend_from_slice(&hs.commit.to_le_bytes());
        }
        RecordRef::Truncate { from_index } => buf.extend_from_slice(&from_index.to_le_bytes()),
        RecordRef::Snapshot { index, term } => {
            buf.extend_from_slice(&index.to_le_bytes());
            buf.extend_from_slice(&term.to_le_bytes());
        }
    }
    let length = (buf.len() - start - FRAME_PREFIX_BYTES) as u32;
    let length_bytes = length.to_le_bytes();
    let crc = crc32c::crc32c_append(
        crc32c::crc32c(&length_bytes),
        &buf[start + FRAME_PREFIX_BYTES..],
    );
    buf[start..start + 4].copy_from_slice(&length_bytes);
    buf[start + 4..start + 8].copy_from_slice(&crc.to_le_bytes());
}

/// Splits `entries` into runs whose encoded payload stays near
/// [`ENTRIES_RECORD_PAYLOAD_TARGET_BYTES`] (a run holds at least one entry).
pub(crate) fn entries_chunks(entries: &[Entry]) -> Vec<&[Entry]> {
    let mut chunks = Vec::new();
    let mut start = 0;
    let mut bytes = 0;
    for (i, entry) in entries.iter().enumerate() {
        let size = ENTRY_FIXED_BYTES + entry.data.len();
        if i > start && bytes + size > ENTRIES_RECORD_PAYLOAD_TARGET_BYTES {
            chunks.push(&entries[start..i]);
            start = i;
            bytes = 0;
        }
        bytes += size;
    }
    if start < entries.len() {
        chunks.push(&entries[start..]);
    }
    chunks
}

/// A frame whose length and checksum are intact.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Frame<'a> {
    pub(crate) kind: u8,
    pub(crate) end_of_batch: bool,
    pub(crate) batch: u64,
    pub(crate) durable_through: u64,
    pub(crate) payload: &'a [u8],
    /// Offset just past this record.
    pub(crate) end: usize,
}

/// Reads the frame at `offset`. `Ok(None)` means `offset` is exactly the
/// end of `buf`; `Err` describes why the bytes there are not a whole,
/// intact record.
pub(crate) fn read_frame(buf: &[u8], offset: usize) -> Result<Option<Frame<'_>>, Corruption> {
    let remaining = buf.len().saturating_sub(offset);
    if remaining == 0 {
        return Ok(None);
    }
    if remaining < RECORD_HEADER_BYTES {
        return Err(Corruption::TruncatedHeader {
            bytes_remaining: remaining,
        });
    }
    let length = read_u32(buf, offset);
    if (length as usize) < BODY_FIXED_BYTES || length > RECORD_BYTES_MAX {
        return Err(Corruption::BadLength { length });
    }
    let body_start = offset + FRAME_PREFIX_BYTES;
    let body_end = body_start + length as usize;
    if body_end > buf.len() {
        return Err(Corruption::TruncatedRecord {
            length,
            bytes_remaining: remaining,
        });
    }
    let stored = read_u32(buf, offset + 4);
    let computed = crc32c::crc32c_append(
        crc32c::crc32c(&buf[offset..offset + 4]),
        &buf[body_start..body_end],
    );
    if stored != computed {
        return Err(Corruption::ChecksumMismatch { stored, computed });
    }
    let type_byte = buf[body_start];
    Ok(Some(Frame {
        kind: type_byte & !END_OF_BATCH,
        end_of_batch: type_byte & END_OF_BATCH != 0,
        batch: read_u64(buf, body_start + 1),
        durable_through: read_u64(buf, body_start + 9),
        payload: &buf[body_start + BODY_FIXED_BYTES..body_end],
        end: body_end,
    }))
}

/// Cheap plausibility test used by the forward scan after a damaged
/// record: could a record of a later batch start at `offset`? Checks the
/// fixed fields before the checksum so scanning garbage stays linear.
pub(crate) fn later_batch_frame_at(
    buf: &[u8],
    offset: usize,
    damaged_batch: u64,
) -> Option<Frame<'_>> {
    if buf.len().saturating_sub(offset) < RECORD_HEADER_BYTES {
        return None;
    }
    let length = read_u32(buf, offset);
    if (length as usize) < BODY_FIXED_BYTES
        || length > RECORD_BYTES_MAX
        || offset + FRAME_PREFIX_BYTES + length as usize > buf.len()
    {
        return None;
    }
    let kind = buf[offset + FRAME_PREFIX_BYTES] & !END_OF_BATCH;
    if !(KIND_ENTRIES..=KIND_SNAPSHOT).contains(&kind) {
        return None;
    }
    // Every batch takes at least one record header, which bounds how far
    // the batch number can have advanced by this point in the file.
    let batch_limit = damaged_batch + (buf.len() / RECORD_HEADER_BYTES) as u64 + 1;
    let batch = read_u64(buf, offset + FRAME_PREFIX_BYTES + 1);
    let durable = read_u64(buf, offset + FRAME_PREFIX_BYTES + 9);
    if batch <= damaged_batch || batch > batch_limit || durable < damaged_batch || durable >= batch
    {
        return None;
    }
    read_frame(buf, offset).ok().flatten()
}

/// Decodes the payload of an intact frame.
pub(crate) fn decode_payload(frame: &Frame<'_>) -> Result<Record, Corruption> {
    let mut r = Reader {
        buf: frame.payload,
        pos: 0,
    };
    let record = match frame.kind {
        KIND_ENTRIES => {
            let first_index = r.u64()?;
            let count = r.u32()? as usize;
            // Each entry takes at least ENTRY_FIXED_BYTES, so a count the
            // payload cannot hold is rejected before allocating.
            if count > r.remaining() / ENTRY_FIXED_BYTES {
                return Err(undecodable(format!("entry count {count} too large")));
            }
            let mut entries = Vec::with_capacity(count);
            for i in 0..count as u64 {
                let term = r.u64()?;
                let kind = match r.u8()? {
                    0 => EntryKind::Normal,
                    1 => EntryKind::Noop,
                    k => return Err(undecodable(format!("unknown entry kind {k}"))),
                };
                let len = r.u32()? as usize;
                let data = r.bytes(len)?.to_vec();
                entries.push(Entry {
                    term,
                    index: first_index + i,
                    kind,
                    data,
                });
            }
            Record::Entries(entries)
        }
        KIND_HARD_STATE => {
            let term = r.u64()?;
            let has_vote = r.u8()?;
            let vote = r.u64()?;
            let commit = r.u64()?;
            let vote = match has_vote {
                0 => None,
                1 => Some(vote),
                v => return Err(undecodable(format!("vote flag {v}"))),
            };
            Record::HardState(HardState { term, vote, commit })
        }
        KIND_TRUNCATE => Record::Truncate {
            from_index: r.u64()?,
        },
        KIND_SNAPSHOT => Record::Snapshot {
            index: r.u64()?,
            term: r.u64()?,
        },
        k => return Err(undecodable(format!("unknown record kind {k}"))),
    };
    if r.remaining() != 0 {
        return Err(undecodable(format!(
            "{} trailing bytes after the payload",
            r.remaining()
        )));
    }
    Ok(record)
}

fn undecodable(detail: String) -> Corruption {
    Corruption::Undecodable { detail }
}

pub(crate) fn read_u32(buf: &[u8], at: usize) -> u32 {
    let mut b = [0u8; 4];
    b.copy_from_slice(&buf[at..at + 4]);
    u32::from_le_bytes(b)
}

pub(crate) fn read_u64(buf: &[u8], at: usize) -> u64 {
    let mut b = [0u8; 8];
    b.copy_from_slice(&buf[at..at + 8]);
    u64::from_le_bytes(b)
}

/// Bounds-checked little-endian reader over a payload.
pub(crate) struct Reader<'a> {
    pub(crate) buf: &'a [u8],
    pub(crate) pos: usize,
}

impl<'a> Reader<'a> {
    pub(crate) fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }
    pub(crate) fn bytes(&mut self, n: usize) -> Result<&'a [u8], Corruption> {
        if self.remaining() < n {
            return Err(undecodable(format!(
                "needs {n} bytes at payload offset {}, {} left",
                self.pos,
                self.remaining()
            )));
        }
        let out = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(out)
    }
    pub(crate) fn u8(&mut self) -> Result<u8, Corruption> {
        Ok(self.bytes(1)?[0])
    }
    pub(crate) fn u32(&mut self) -> Result<u32, Corruption> {
        Ok(read_u32(self.bytes(4)?, 0))
    }
    pub(crate) fn u64(&mut self) -> Result<u64, Corruption> {
        Ok(read_u64(self.bytes(8)?, 0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(index: Index, term: Term, data: &[u8]) -> Entry {
        Entry {
            term,
            index,
            kind: if data.is_empty() {
                EntryKind::Noop
            } else {
                EntryKind::Normal
            },
            data: data.to_vec(),
        }
    }

    #[test]
    fn every_record_kind_round_trips() {
        let entries = vec![
            entry(5, 2, b"abc"),
            entry(6, 2, b""),
            entry(7, 3, &[9; 300]),
        ];
        let hs = HardState {
            term: 7,
            vote: Some(3),
            commit: 6,
        };
        let records = [
            RecordRef::Entries(&entries),
            RecordRef::HardState(&hs),
            RecordRef::Truncate { from_index: 9 },
            RecordRef::Snapshot { index: 4, term: 2 },
        ];
        let mut buf = Vec::new();
        for (i, r) in records.iter().enumerate() {
            encode_record(&mut buf, *r, 11, 10, i == 3);
        }
        let mut offset = 0;
        let mut decoded = Vec::new();
        while let Some(frame) = read_frame(&buf, offset).expect("intact") {
            assert_eq!(frame.batch, 11);
            assert_eq!(frame.durable_through, 10);
            assert_eq!(frame.end_of_batch, decoded.len() == 3);
            decoded.push(decode_payload(&frame).expect("decodes"));
            offset = frame.end;
        }
        assert_eq!(
            decoded,
            vec![
                Record::Entries(entries.clone()),
                Record::HardState(hs),
                Record::Truncate { from_index: 9 },
                Record::Snapshot { index: 4, term: 2 },
            ]
        );
    }

    #[test]
    fn a_flipped_length_bit_is_a_checksum_or_length_error() {
        let mut buf = Vec::new();
        encode_record(&mut buf, RecordRef::Truncate { from_index: 3 }, 1, 0, true);
        for bit in 0..32 {
            let mut damaged = buf.clone();
            damaged[bit / 8] ^= 1 << (bit % 8);
            assert!(read_frame(&damaged, 0).is_err(), "bit {bit} went unnoticed");
        }
    }

    #[test]
    fn chunks_cover_all_entries_in_order_and_respect_the_target() {
        let entries: Vec<Entry> = (1..=3000).map(|i| entry(i, 1, &[1; 1000])).collect();
        let chunks = entries_chunks(&entries);
        assert!(chunks.len() > 1);
        let flat: Vec<Entry> = chunks.iter().flat_map(|c| c.iter().cloned()).collect();
        assert_eq!(flat, entries);
        for c in &chunks {
            let bytes: usize = c.iter().map(|e| ENTRY_FIXED_BYTES + e.data.len()).sum();
            assert!(
                bytes <= ENTRIES_RECORD_PAYLOAD_TARGET_BYTES,
                "chunk of {bytes} bytes"
            );
        }
        // One entry over the target still gets a record of its own.
        let big = vec![entry(
            1,
            1,
            &vec![0; 2 * ENTRIES_RECORD_PAYLOAD_TARGET_BYTES],
        )];
        assert_eq!(entries_chunks(&big).len(), 1);
    }
}
