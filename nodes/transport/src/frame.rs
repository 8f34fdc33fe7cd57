//! Frames: a `u32` big-endian payload length, then that many bytes of CBOR.
//!
//! The length is checked against `max_frame_bytes` before anything is
//! allocated, so a hostile header cannot make us reserve 4 GiB. A payload must
//! decode to exactly one value of the expected type with no trailing bytes.

use serde::{de::DeserializeOwned, Serialize};

/// Bytes in the length header.
pub const HEADER_BYTES: usize = 4;

/// Why a frame could not be written or read. Each variant says who caused it:
/// see [`FrameError::caused_by_peer`].
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    /// We were asked to send a value whose encoding exceeds the limit (our side).
    #[error("frame of {len_bytes} bytes exceeds our max_frame_bytes {max_frame_bytes}")]
    TooLargeToSend {
        len_bytes: usize,
        max_frame_bytes: usize,
    },
    /// The peer announced a frame longer than our limit (peer's side).
    #[error("peer announced a frame of {len_bytes} bytes, over max_frame_bytes {max_frame_bytes}")]
    TooLarge {
        len_bytes: u64,
        max_frame_bytes: usize,
    },
    /// The value could not be encoded as CBOR (our side: a serde impl failed).
    #[error("could not encode frame: {0}")]
    Encode(String),
    /// The payload was not valid CBOR for the expected type (peer's side).
    #[error("undecodable frame of {len_bytes} bytes: {reason}")]
    Undecodable { len_bytes: usize, reason: String },
    /// The stream ended inside a frame (peer's side, or the connection broke).
    #[error("stream ended inside a frame after {read_bytes} of {expected_bytes} bytes")]
    Truncated {
        read_bytes: usize,
        expected_bytes: usize,
    },
}

impl FrameError {
    /// True when the bytes the peer sent were at fault; false when we were.
    pub fn caused_by_peer(&self) -> bool {
        match self {
            FrameError::TooLargeToSend { .. } | FrameError::Encode(_) => false,
            FrameError::TooLarge { .. }
            | FrameError::Undecodable { .. }
            | FrameError::Truncated { .. } => true,
        }
    }

    /// The stream reset code a receiver uses to tell the sender about this error.
    pub fn code(&self) -> quinn::VarInt {
        match self {
            FrameError::TooLarge { .. } | FrameError::TooLargeToSend { .. } => {
                crate::codes::FRAME_TOO_LARGE
            }
            FrameError::Undecodable { .. } | FrameError::Encode(_) => crate::codes::UNDECODABLE,
            FrameError::Truncated { .. } => crate::codes::TRUNCATED,
        }
    }
}

/// Encodes `value` as one frame (header and payload) and appends it to `out`.
/// On error `out` is left as it was.
pub fn encode_into<T: Serialize + ?Sized>(
    value: &T,
    max_frame_bytes: usize,
    out: &mut Vec<u8>,
) -> Result<(), FrameError> {
    let start = out.len();
    out.extend_from_slice(&[0; HEADER_BYTES]);
    if let Err(error) = ciborium::into_writer(value, &mut *out) {
        out.truncate(start);
        return Err(FrameError::Encode(error.to_string()));
    }
    let len_bytes = out.len() - start - HEADER_BYTES;
    // The u32 header bounds the limit too, whatever max_frame_bytes says.
    let header = match u32::try_from(len_bytes) {
        Ok(header) if len_bytes <= max_frame_bytes => header,
        _ => {
            out.truncate(start);
            return Err(FrameError::TooLargeToSend {
                len_bytes,
                max_frame_bytes,
            });
        }
    };
    out[start..start + HEADER_BYTES].copy_from_slice(&header.to_be_bytes());
    Ok(())
}

/// Encodes `value` as one frame.
pub fn encode<T: Serialize + ?Sized>(
    value: &T,
    max_frame_bytes: usize,
) -> Result<Vec<u8>, FrameError> {
    let mut out = Vec::new();
    encode_into(value, max_frame_bytes, &mut out)?;
    Ok(out)
}

/// Validates a length header against the limit.
pub fn check_header(
    header: [u8; HEADER_BYTES],
    max_frame_bytes: usize,
) -> Result<usize, FrameError> {
    let len_bytes = u32::from_be_bytes(header);
    match usize::try_from(len_bytes) {
        Ok(len) if len <= max_frame_bytes => Ok(len),
        _ => Err(FrameError::TooLarge {
            len_bytes: u64::from(len_bytes),
            max_frame_bytes,
        }),
    }
}

/// Decodes one payload (without header); trailing bytes are an error.
pub fn decode_payload<T: DeserializeOwned>(payload: &[u8]) -> Result<T, FrameError> {
    let mut rest = payload;
    let value = ciborium::from_reader(&mut rest).map_err(|error| FrameError::Undecodable {
        len_bytes: payload.len(),
        reason: error.to_string(),
    })?;
    if !rest.is_empty() {
        return Err(FrameError::Undecodable {
            len_bytes: payload.len(),
            reason: format!("{} trailing bytes after the value", rest.len()),
        });
    }
    Ok(value)
}

/// What ended a read on a QUIC stream.
#[derive(Debug, thiserror::Error)]
pub(crate) enum StreamReadError {
    /// The bytes were bad (too long, undecodable, truncated).
    #[error(transparent)]
    Frame(#[from] FrameError),
    /// The stream or connection failed underneath.
    #[error(transparent)]
    Read(#[from] quinn::ReadError),
}

/// Reads one frame from `recv`. Returns `Ok(None)` on a clean end of stream
/// at a frame boundary.
pub(crate) async fn read_frame<T: DeserializeOwned>(
    recv: &mut quinn::RecvStream,
    max_frame_bytes: usize,
) -> Result<Option<T>, StreamReadError> {
    let mut header = [0u8; HEADER_BYTES];
    let mut filled = 0;
    while filled < HEADER_BYTES {
        match recv.read(&mut header[filled..]).await? {
            Some(n) => filled += n,
            None if filled == 0 => return Ok(None),
            None => {
                return Err(FrameError::Truncated {
                    read_bytes: filled,
                    expected_bytes: HEADER_BYTES,
                }
                .into())
            }
        }
    }
    let len = check_header(header, max_frame_bytes)?;
    let mut payload = vec![0u8; len];
    match recv.read_exact(&mut payload).await {
        Ok(()) => {}
        Err(quinn::ReadExactError::FinishedEarly(read_bytes)) => {
            return Err(FrameError::Truncated {
                read_bytes,
                expected_bytes: len,
            }
            .into())
        }
        Err(quinn::ReadExactError::ReadError(error)) => return Err(error.into()),
    }
    Ok(Some(decode_payload(&payload)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_preserves_value() {
        let value = (7u64, "seven".to_string(), vec![1u8, 2, 3]);
        let bytes = encode(&value, 1024).unwrap();
        let len = check_header(bytes[..4].try_into().unwrap(), 1024).unwrap();
        assert_eq!(len, bytes.len() - HEADER_BYTES);
        let back: (u64, String, Vec<u8>) = decode_payload(&bytes[HEADER_BYTES..]).unwrap();
        assert_eq!(back, value);
    }

    #[test]
    fn encode_refuses_one_byte_over_the_limit_and_keeps_buffer() {
        let value = "x".repeat(100);
        let exact = encode(&value, usize::MAX).unwrap().len() - HEADER_BYTES;
        assert!(encode(&value, exact).is_ok());
        let mut out = vec![9u8];
        let error = encode_into(&value, exact - 1, &mut out).unwrap_err();
        assert!(matches!(error, FrameError::TooLargeToSend { .. }));
        assert!(!error.caused_by_peer());
        assert_eq!(out, vec![9u8]);
    }

    #[test]
    fn header_over_limit_is_a_peer_error() {
        let error = check_header(1001u32.to_be_bytes(), 1000).unwrap_err();
        assert!(error.caused_by_peer());
        assert_eq!(check_header(1000u32.to_be_bytes(), 1000).unwrap(), 1000);
        assert!(check_header(u32::MAX.to_be_bytes(), DEFAULT).is_err());
    }
    const DEFAULT: usize = crate::DEFAULT_MAX_FRAME_BYTES;

    #[test]
    fn garbage_and_trailing_bytes_are_undecodable() {
        assert!(decode_payload::<String>(&[0xff, 0x00, 0x13]).is_err());
        let mut bytes = encode(&5u32, 100).unwrap().split_off(HEADER_BYTES);
        assert_eq!(decode_payload::<u32>(&bytes).unwrap(), 5);
        bytes.push(0);
        let error = decode_payload::<u32>(&bytes).unwrap_err();
        assert!(matches!(error, FrameError::Undecodable { .. }), "{error}");
    }
}
