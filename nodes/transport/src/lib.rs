//! QUIC transport with mutual TLS and length-prefixed CBOR frames.
//!
//! This crate is on the I/O side of the line: it owns a UDP socket (one per
//! node), runs quinn on tokio, and knows nothing about Raft. It carries any
//! serde type, in two shapes:
//!
//! * **Peer messages** ([`Endpoint::send`], [`Endpoint::incoming`]): one-way,
//!   on one long-lived unidirectional stream per (sender, receiver) pair, with
//!   reconnect and capped exponential backoff and a bounded outgoing queue per
//!   peer (a full queue drops and counts: Raft tolerates loss). The sender's
//!   name on every received message comes from its authenticated certificate,
//!   never from the message body.
//! * **Requests** ([`Client::request`], [`RequestHandler`]): one bidirectional
//!   stream per request, one frame each way. Errors say whether the request
//!   certainly did not take effect ([`RequestError::is_definite`]) or whether
//!   the outcome is unknown.
//!
//! Every peer and client presents a certificate from the cluster CA
//! ([`certs`]); anything else is refused in the TLS handshake. Frames are a
//! `u32` big-endian length followed by CBOR ([`frame`]), bounded by
//! `max_frame_bytes`; a bad frame closes only its stream.
//!
//! How the node daemon uses it:
//!
//! ```rust,no_run
//! # use std::{path::Path, time::Duration};
//! # use transport::*;
//! # #[derive(serde::Serialize, serde::Deserialize)] struct RaftMessage;
//! # #[derive(serde::Serialize, serde::Deserialize)] enum KvRequest { Get(String) }
//! # #[derive(serde::Serialize, serde::Deserialize)] enum KvResponse { Value(String) }
//! # async fn example() -> Result<(), Box<dyn std::error::Error>> {
//! let dir = Path::new("certs");
//! let mut config = EndpointConfig::from_files(
//!     &dir.join("n1.pem"), &dir.join("n1.key"), &dir.join("ca.pem"),
//!     "10.0.0.1:7000".parse()?,
//! )?;
//! config.peers = vec![PeerAddress { name: "n2".into(), addr: "10.0.0.2:7000".parse()? }];
//! let (handler, mut requests) = request_channel::<KvRequest, KvResponse>(1024);
//! let (endpoint, mut incoming) = Endpoint::<RaftMessage>::bind_with_handler(config, handler)?;
//!
//! endpoint.send("n2", &RaftMessage)?;                  // never blocks; QueueFull = lost
//! if let Some((from, message)) = incoming.recv().await { /* from = "n2", from its certificate */ }
//! if let Some(pending) = requests.recv().await {       // answer now or after commit
//!     pending.responder.respond(KvResponse::Value(String::new()));
//! }
//!
//! // A client process (or `node status`):
//! let client = Client::from_files(
//!     &dir.join("client-1.pem"), &dir.join("client-1.key"), &dir.join("ca.pem"),
//!     ClientOptions::default(),
//! )?;
//! match client.request::<_, KvResponse>("10.0.0.1:7000".parse()?, "n1",
//!                                        &KvRequest::Get("k".into()), Duration::from_secs(1)).await {
//!     Ok(response) => { /* ok */ }
//!     Err(error) if error.is_definite() => { /* fail: certainly not applied */ }
//!     Err(error) => { /* info: outcome unknown */ }
//! }
//! # Ok(()) }
//! ```
//!
//! Seams for a later simulator: the UDP socket can be passed in
//! ([`EndpointConfig::socket`]), quinn's RNG can be seeded
//! ([`EndpointConfig::rng_seed`]), and timers are tokio's (pausable in tests).

#![forbid(unsafe_code)]

pub mod certs;
mod client;
mod endpoint;
pub mod frame;
mod metrics;
mod peer;
mod server;
pub mod tls;

pub use client::{Client, ClientOptions, RequestError};
pub use endpoint::{Endpoint, EndpointConfig, EndpointError, Incoming, PeerAddress, SendError};
pub use frame::FrameError;
pub use metrics::MetricsSnapshot;
pub use server::{request_channel, ChannelHandler, PendingRequest, RequestHandler, Responder};

use std::sync::Arc;

/// The authenticated name of a peer or client: the first DNS name in the
/// subject alternative names of the certificate it presented.
pub type PeerName = Arc<str>;

/// ALPN protocol id: a node only talks to something speaking this protocol.
pub const ALPN: &[u8] = b"raftjepsen/1";

/// Default bound on one frame's CBOR payload (the length header's value).
pub const DEFAULT_MAX_FRAME_BYTES: usize = 16 * 1024 * 1024;

/// Application error codes carried in QUIC stream resets (`STOP_SENDING` /
/// `RESET_STREAM`) and connection closes. They tell the other side why a
/// stream ended without the frame it expected.
pub mod codes {
    use quinn::VarInt;

    /// Normal close (endpoint shutdown).
    pub const CLOSED: VarInt = VarInt::from_u32(0);
    /// The frame's length header exceeded the receiver's `max_frame_bytes`.
    pub const FRAME_TOO_LARGE: VarInt = VarInt::from_u32(1);
    /// The frame's payload was not valid CBOR for the expected type.
    pub const UNDECODABLE: VarInt = VarInt::from_u32(2);
    /// The stream ended in the middle of a frame.
    pub const TRUNCATED: VarInt = VarInt::from_u32(3);
    /// The endpoint serves no requests (no handler was installed).
    pub const NO_HANDLER: VarInt = VarInt::from_u32(4);
    /// The request was received and handed to the service, which dropped it
    /// without answering: its outcome is unknown.
    pub const HANDLER_DROPPED: VarInt = VarInt::from_u32(5);
    /// A one-way peer stream was opened by someone who is not a configured peer.
    pub const NOT_A_PEER: VarInt = VarInt::from_u32(6);
    /// The certificate carried no usable name.
    pub const NO_IDENTITY: VarInt = VarInt::from_u32(7);
    /// The handler answered but the answer could not be encoded or was too
    /// large: the request took effect, the caller cannot know its result.
    pub const RESPONSE_FAILED: VarInt = VarInt::from_u32(8);
}
