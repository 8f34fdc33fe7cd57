//! Counters of what the endpoint did and refused. Monotonic; read with
//! [`crate::Endpoint::metrics`].

use std::sync::atomic::{AtomicU64, Ordering};

macro_rules! counters {
    ($($(#[$doc:meta])* $name:ident,)*) => {
        #[derive(Debug, Default)]
        pub(crate) struct Metrics {
            $(pub(crate) $name: AtomicU64,)*
        }

        /// A copy of the endpoint's counters at one moment.
        #[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
        pub struct MetricsSnapshot {
            $($(#[$doc])* pub $name: u64,)*
        }

        impl Metrics {
            pub(crate) fn snapshot(&self) -> MetricsSnapshot {
                MetricsSnapshot {
                    $($name: self.$name.load(Ordering::Relaxed),)*
                }
            }
        }
    };
}

counters! {
    /// Peer messages written to a stream.
    peer_messages_sent,
    /// Peer messages dropped because the peer's outgoing queue was full.
    peer_messages_dropped_queue_full,
    /// Peer messages dropped because the peer was unreachable or the stream broke.
    peer_messages_dropped_disconnected,
    /// Peer messages received and delivered to the incoming channel.
    peer_messages_received,
    /// Outgoing peer connections established (first connect and reconnects).
    peer_connections_established,
    /// Outgoing peer connection attempts that failed.
    peer_connect_failures,
    /// Requests answered by the handler.
    requests_served,
    /// Incoming frames refused because the length header exceeded max_frame_bytes.
    frames_rejected_too_large,
    /// Incoming frames refused because the payload did not decode.
    frames_rejected_undecodable,
    /// Incoming streams that ended inside a frame.
    frames_rejected_truncated,
    /// Incoming connections that completed the handshake.
    connections_accepted,
    /// Incoming connections refused because max_connections were open.
    connections_refused_limit,
    /// Incoming connections refused during the handshake (bad or missing certificate, ...).
    handshakes_refused,
    /// One-way streams refused because the sender is not a configured peer.
    streams_refused_not_a_peer,
}

impl Metrics {
    pub(crate) fn add(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a refused incoming frame by its reason.
    pub(crate) fn frame_rejected(&self, error: &crate::FrameError) {
        use crate::FrameError;
        match error {
            FrameError::TooLarge { .. } | FrameError::TooLargeToSend { .. } => {
                Self::add(&self.frames_rejected_too_large)
            }
            FrameError::Undecodable { .. } | FrameError::Encode(_) => {
                Self::add(&self.frames_rejected_undecodable)
            }
            FrameError::Truncated { .. } => Self::add(&self.frames_rejected_truncated),
        }
    }
}
