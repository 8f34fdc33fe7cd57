//! QUIC transport with mutual TLS and length-prefixed CBOR frames.
