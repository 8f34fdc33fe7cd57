//! Outgoing one-way messages to one peer: a bounded queue and a task that
//! keeps one connection and one unidirectional stream to the peer open,
//! reconnecting with capped exponential backoff.
//!
//! Loss is acceptable (Raft retries), delay of fresh messages behind stale
//! ones is not: while the peer is unreachable, queued messages are dropped
//! and counted rather than kept for a later flood.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::metrics::Metrics;
use crate::PeerName;

/// Frames gathered into one stream write when several are queued.
const BATCH_BYTES_MAX: usize = 256 * 1024;

#[derive(Debug, Clone)]
pub(crate) struct PeerOptions {
    pub queue_messages: usize,
    pub backoff_min: Duration,
    pub backoff_max: Duration,
    pub connect_timeout: Duration,
}

/// The handle the endpoint keeps per peer. Dropping it ends the task once
/// the queue is drained.
pub(crate) struct PeerSender {
    pub addr: SocketAddr,
    pub queue: mpsc::Sender<Vec<u8>>,
    pub task: JoinHandle<()>,
}

impl Drop for PeerSender {
    fn drop(&mut self) {
        self.task.abort();
    }
}

pub(crate) fn spawn(
    name: PeerName,
    addr: SocketAddr,
    quinn: quinn::Endpoint,
    config: quinn::ClientConfig,
    options: PeerOptions,
    metrics: Arc<Metrics>,
) -> PeerSender {
    let (queue, receiver) = mpsc::channel(options.queue_messages.max(1));
    let task = tokio::spawn(run(
        Link {
            name,
            addr,
            quinn,
            config,
            options,
            metrics,
        },
        receiver,
    ));
    PeerSender { addr, queue, task }
}

struct Link {
    name: PeerName,
    addr: SocketAddr,
    quinn: quinn::Endpoint,
    config: quinn::ClientConfig,
    options: PeerOptions,
    metrics: Arc<Metrics>,
}

enum PumpEnd {
    QueueClosed,
    Broken(String),
}

async fn run(link: Link, mut queue: mpsc::Receiver<Vec<u8>>) {
    let mut backoff = link.options.backoff_min;
    loop {
        match link.connect().await {
            Ok((connection, mut stream)) => {
                Metrics::add(&link.metrics.peer_connections_established);
                tracing::debug!(peer = %link.name, addr = %link.addr, "peer stream open");
                let connected_at = Instant::now();
                match link.pump(&connection, &mut stream, &mut queue).await {
                    PumpEnd::QueueClosed => {
                        let _ = stream.finish();
                        return;
                    }
                    PumpEnd::Broken(reason) => {
                        tracing::info!(peer = %link.name, %reason, "peer stream broke; reconnecting");
                    }
                }
                // A connection that held up for a while resets the backoff; one
                // that dies at once (e.g. our certificate refused) does not.
                if connected_at.elapsed() >= link.options.backoff_max {
                    backoff = link.options.backoff_min;
                }
            }
            Err(reason) => {
                Metrics::add(&link.metrics.peer_connect_failures);
                tracing::debug!(peer = %link.name, addr = %link.addr, %reason, ?backoff, "cannot reach peer");
            }
        }
        if !link.drop_queued(&mut queue) {
            return;
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(link.options.backoff_max);
    }
}

impl Link {
    async fn connect(&self) -> Result<(quinn::Connection, quinn::SendStream), String> {
        let connecting = self
            .quinn
            .connect_with(self.config.clone(), self.addr, &self.name)
            .map_err(|error| error.to_string())?;
        let connection = tokio::time::timeout(self.options.connect_timeout, connecting)
            .await
            .map_err(|_| "connect timed out".to_string())?
            .map_err(|error| error.to_string())?;
        let stream = connection
            .open_uni()
            .await
            .map_err(|error| error.to_string())?;
        Ok((connection, stream))
    }

    /// Writes queued frames to the stream until the queue closes or the
    /// stream breaks.
    async fn pump(
        &self,
        connection: &quinn::Connection,
        stream: &mut quinn::SendStream,
        queue: &mut mpsc::Receiver<Vec<u8>>,
    ) -> PumpEnd {
        let mut batch = Vec::new();
        loop {
            let first = tokio::select! {
                message = queue.recv() => match message {
                    Some(message) => message,
                    None => return PumpEnd::QueueClosed,
                },
                error = connection.closed() => return PumpEnd::Broken(error.to_string()),
            };
            let mut count = 1u64;
            let result = if first.len() >= BATCH_BYTES_MAX {
                stream.write_all(&first).await
            } else {
                batch.clear();
                batch.extend_from_slice(&first);
                while batch.len() < BATCH_BYTES_MAX {
                    match queue.try_recv() {
                        Ok(message) => {
                            batch.extend_from_slice(&message);
                            count += 1;
                        }
                        Err(_) => break,
                    }
                }
                stream.write_all(&batch).await
            };
            match result {
                Ok(()) => {
                    self.metrics
                        .peer_messages_sent
                        .fetch_add(count, std::sync::atomic::Ordering::Relaxed);
                }
                Err(error) => {
                    self.metrics
                        .peer_messages_dropped_disconnected
                        .fetch_add(count, std::sync::atomic::Ordering::Relaxed);
                    return PumpEnd::Broken(error.to_string());
                }
            }
        }
    }

    /// Drops what queued up while the peer was unreachable. False if the
    /// queue is closed (the endpoint let go of this peer).
    fn drop_queued(&self, queue: &mut mpsc::Receiver<Vec<u8>>) -> bool {
        loop {
            match queue.try_recv() {
                Ok(_) => Metrics::add(&self.metrics.peer_messages_dropped_disconnected),
                Err(mpsc::error::TryRecvError::Empty) => return true,
                Err(mpsc::error::TryRecvError::Disconnected) => return false,
            }
        }
    }
}
