//! A node's endpoint: one UDP socket that accepts connections from peers and
//! clients, dials peers for one-way messages, and serves requests.

use std::collections::HashMap;
use std::marker::PhantomData;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use serde::{de::DeserializeOwned, Serialize};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::certs::{self, CertError, Identity};
use crate::client::Client;
use crate::frame::{self, FrameError, StreamReadError};
use crate::metrics::{Metrics, MetricsSnapshot};
use crate::peer::{self, PeerOptions, PeerSender};
use crate::server::{self, RequestHandler, ServeStream};
use crate::tls::{self, TlsError, TransportOptions};
use crate::{codes, PeerName};

/// A peer this endpoint sends one-way messages to and accepts them from.
/// `name` must be the DNS name in the peer's certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerAddress {
    pub name: String,
    pub addr: SocketAddr,
}

/// Everything an endpoint needs. [`EndpointConfig::new`] fills in defaults.
#[derive(Debug)]
pub struct EndpointConfig {
    pub identity: Identity,
    pub roots: rustls::RootCertStore,
    /// Where to bind the UDP socket (ignored when `socket` is given).
    pub listen: SocketAddr,
    /// A ready socket to use instead of binding `listen` (a seam for tests
    /// and a future simulated network).
    pub socket: Option<std::net::UdpSocket>,
    pub peers: Vec<PeerAddress>,
    /// Bound on one frame's payload, both directions.
    pub max_frame_bytes: usize,
    /// Outgoing messages queued per peer before new ones are dropped.
    pub peer_queue_messages: usize,
    /// Received peer messages buffered before their streams wait.
    pub incoming_queue_messages: usize,
    /// Open connections (peers and clients, both directions) beyond which
    /// new incoming connections are refused.
    pub max_connections: usize,
    pub reconnect_backoff_min: Duration,
    pub reconnect_backoff_max: Duration,
    pub connect_timeout: Duration,
    pub transport: TransportOptions,
    /// Seed for quinn's connection-id and packet-number randomness.
    pub rng_seed: Option<[u8; 32]>,
}

impl EndpointConfig {
    pub fn new(identity: Identity, roots: rustls::RootCertStore, listen: SocketAddr) -> Self {
        EndpointConfig {
            identity,
            roots,
            listen,
            socket: None,
            peers: Vec::new(),
            max_frame_bytes: crate::DEFAULT_MAX_FRAME_BYTES,
            peer_queue_messages: 4096,
            incoming_queue_messages: 4096,
            max_connections: 4096,
            reconnect_backoff_min: Duration::from_millis(20),
            reconnect_backoff_max: Duration::from_secs(1),
            connect_timeout: Duration::from_secs(2),
            transport: TransportOptions::default(),
            rng_seed: None,
        }
    }

    /// [`EndpointConfig::new`] with the identity and CA loaded from PEM files.
    pub fn from_files(
        cert_path: &Path,
        key_path: &Path,
        ca_path: &Path,
        listen: SocketAddr,
    ) -> Result<Self, CertError> {
        Ok(Self::new(
            certs::load_identity(cert_path, key_path)?,
            certs::load_ca(ca_path)?,
            listen,
        ))
    }

    fn validate(&self) -> Result<(), EndpointError> {
        let invalid = |field: &'static str, reason: &str| {
            Err(EndpointError::Config {
                field,
                reason: reason.to_string(),
            })
        };
        if self.max_frame_bytes == 0 || self.max_frame_bytes > u32::MAX as usize {
            return invalid("max_frame_bytes", "must be in 1..=u32::MAX");
        }
        if self.peer_queue_messages == 0 {
            return invalid("peer_queue_messages", "must be at least 1");
        }
        if self.max_connections == 0 {
            return invalid("max_connections", "must be at least 1");
        }
        if self.incoming_queue_messages == 0 {
            return invalid("incoming_queue_messages", "must be at least 1");
        }
        if self.reconnect_backoff_min.is_zero()
            || self.reconnect_backoff_min > self.reconnect_backoff_max
        {
            return invalid(
                "reconnect_backoff_min",
                "must be positive and at most reconnect_backoff_max",
            );
        }
        if self.connect_timeout.is_zero() {
            return invalid("connect_timeout", "must be positive");
        }
        if self.transport.keep_alive_interval >= self.transport.idle_timeout {
            return invalid(
                "transport.keep_alive_interval",
                "must be below idle_timeout",
            );
        }
        let mut seen = std::collections::HashSet::new();
        for peer in &self.peers {
            if peer.name == self.identity.name {
                return invalid("peers", &format!("{} is this endpoint itself", peer.name));
            }
            if !seen.insert(&peer.name) {
                return invalid("peers", &format!("{} is listed twice", peer.name));
            }
        }
        Ok(())
    }
}

/// Errors while building an endpoint or client.
#[derive(Debug, thiserror::Error)]
pub enum EndpointError {
    #[error("invalid transport config: {field}: {reason}")]
    Config { field: &'static str, reason: String },
    #[error(transparent)]
    Cert(#[from] CertError),
    #[error(transparent)]
    Tls(#[from] TlsError),
    #[error("cannot bind UDP socket {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
}

/// Why [`Endpoint::send`] did not queue a message. None of these is
/// retried by the transport; for Raft they all mean "lost".
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    #[error("{peer} is not a configured peer")]
    UnknownPeer { peer: String },
    #[error("queue to {peer} is full; message dropped")]
    QueueFull { peer: String },
    #[error("message to {peer} not sent: {source}")]
    Frame { peer: String, source: FrameError },
    #[error("endpoint is shut down")]
    Shutdown,
}

/// Received one-way messages, each with its sender's certificate name.
#[derive(Debug)]
pub struct Incoming<M> {
    receiver: mpsc::Receiver<(PeerName, M)>,
}

impl<M> Incoming<M> {
    /// The next message; `None` once the endpoint is gone.
    pub async fn recv(&mut self) -> Option<(PeerName, M)> {
        self.receiver.recv().await
    }

    /// The next message if one is waiting.
    pub fn try_recv(&mut self) -> Option<(PeerName, M)> {
        self.receiver.try_recv().ok()
    }
}

/// A node's endpoint. Cheap to clone; all clones share one socket.
pub struct Endpoint<M> {
    inner: Arc<EndpointInner>,
    _message: PhantomData<fn(M) -> M>,
}

impl<M> Clone for Endpoint<M> {
    fn clone(&self) -> Self {
        Endpoint {
            inner: self.inner.clone(),
            _message: PhantomData,
        }
    }
}

impl<M> std::fmt::Debug for Endpoint<M> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Endpoint")
            .field("name", &self.inner.name)
            .field("local_addr", &self.inner.local_addr)
            .finish_non_exhaustive()
    }
}

struct EndpointInner {
    name: PeerName,
    local_addr: SocketAddr,
    quinn: quinn::Endpoint,
    client_config: quinn::ClientConfig,
    client: Client,
    peer_options: PeerOptions,
    max_frame_bytes: usize,
    metrics: Arc<Metrics>,
    shared: Arc<Shared>,
    accept_task: Mutex<Option<JoinHandle<()>>>,
}

/// What the accepting tasks need.
struct Shared {
    peers: RwLock<HashMap<PeerName, PeerSender>>,
    metrics: Arc<Metrics>,
    max_frame_bytes: usize,
}

impl Drop for EndpointInner {
    fn drop(&mut self) {
        self.quinn.close(codes::CLOSED, b"endpoint dropped");
        if let Some(task) = lock(&self.accept_task).take() {
            task.abort();
        }
        write_peers(&self.shared.peers).clear();
    }
}

impl<M> Endpoint<M>
where
    M: Serialize + DeserializeOwned + Send + 'static,
{
    /// Binds an endpoint that carries peer messages and refuses requests.
    /// Must be called inside a tokio runtime.
    pub fn bind(config: EndpointConfig) -> Result<(Endpoint<M>, Incoming<M>), EndpointError> {
        Self::start(config, |_, _| server::refuse_all())
    }

    /// Binds an endpoint that carries peer messages and serves requests with
    /// `handler`. Must be called inside a tokio runtime.
    pub fn bind_with_handler<H: RequestHandler>(
        config: EndpointConfig,
        handler: H,
    ) -> Result<(Endpoint<M>, Incoming<M>), EndpointError> {
        Self::start(config, move |max_frame_bytes, metrics| {
            server::erase(handler, max_frame_bytes, metrics)
        })
    }

    fn start(
        config: EndpointConfig,
        make_server: impl FnOnce(usize, Arc<Metrics>) -> ServeStream,
    ) -> Result<(Endpoint<M>, Incoming<M>), EndpointError> {
        config.validate()?;
        let server_crypto = tls::server_crypto(&config.identity, config.roots.clone())?;
        let server_config = tls::server_config(server_crypto, &config.transport)?;
        let client_crypto = tls::client_crypto(Some(&config.identity), config.roots.clone())?;
        let client_config = tls::client_config(client_crypto, &config.transport)?;
        let socket = match config.socket {
            Some(socket) => socket,
            None => {
                std::net::UdpSocket::bind(config.listen).map_err(|source| EndpointError::Bind {
                    addr: config.listen,
                    source,
                })?
            }
        };
        let bind_error = |source| EndpointError::Bind {
            addr: config.listen,
            source,
        };
        let local_addr = socket.local_addr().map_err(bind_error)?;
        let quinn = quinn::Endpoint::new(
            tls::endpoint_config(&config.identity, config.rng_seed),
            Some(server_config),
            socket,
            Arc::new(quinn::TokioRuntime),
        )
        .map_err(bind_error)?;

        let metrics = Arc::new(Metrics::default());
        let shared = Arc::new(Shared {
            peers: RwLock::new(HashMap::new()),
            metrics: metrics.clone(),
            max_frame_bytes: config.max_frame_bytes,
        });
        let (incoming_sender, receiver) = mpsc::channel(config.incoming_queue_messages);
        let serve = make_server(config.max_frame_bytes, metrics.clone());
        let accept_task = tokio::spawn(accept_loop(
            quinn.clone(),
            Arc::downgrade(&shared),
            incoming_sender,
            serve,
            config.max_connections,
        ));
        let endpoint = Endpoint {
            inner: Arc::new(EndpointInner {
                name: config.identity.name.as_str().into(),
                local_addr,
                client: Client::on_endpoint(
                    quinn.clone(),
                    client_config.clone(),
                    config.max_frame_bytes,
                ),
                quinn,
                client_config,
                peer_options: PeerOptions {
                    queue_messages: config.peer_queue_messages,
                    backoff_min: config.reconnect_backoff_min,
                    backoff_max: config.reconnect_backoff_max,
                    connect_timeout: config.connect_timeout,
                },
                max_frame_bytes: config.max_frame_bytes,
                metrics,
                shared,
                accept_task: Mutex::new(Some(accept_task)),
            }),
            _message: PhantomData,
        };
        for peer in config.peers {
            endpoint.add_peer(peer);
        }
        tracing::info!(name = %endpoint.inner.name, addr = %local_addr, "transport endpoint listening");
        Ok((endpoint, Incoming { receiver }))
    }

    /// Queues `message` for `peer` without waiting. The message is encoded
    /// here, so an oversized one is refused to the caller.
    pub fn send(&self, peer: &str, message: &M) -> Result<(), SendError> {
        let bytes = frame::encode(message, self.inner.max_frame_bytes).map_err(|source| {
            SendError::Frame {
                peer: peer.to_string(),
                source,
            }
        })?;
        let peers = read_peers(&self.inner.shared.peers);
        let sender = peers.get(peer).ok_or_else(|| SendError::UnknownPeer {
            peer: peer.to_string(),
        })?;
        sender.queue.try_send(bytes).map_err(|error| match error {
            mpsc::error::TrySendError::Full(_) => {
                Metrics::add(&self.inner.metrics.peer_messages_dropped_queue_full);
                SendError::QueueFull {
                    peer: peer.to_string(),
                }
            }
            mpsc::error::TrySendError::Closed(_) => SendError::Shutdown,
        })
    }

    /// Adds (or re-addresses) a peer: we dial it, and accept its messages.
    pub fn add_peer(&self, peer: PeerAddress) {
        let name: PeerName = peer.name.as_str().into();
        let mut peers = write_peers(&self.inner.shared.peers);
        if peers
            .get(&name)
            .is_some_and(|sender| sender.addr == peer.addr)
        {
            return;
        }
        let sender = peer::spawn(
            name.clone(),
            peer.addr,
            self.inner.quinn.clone(),
            self.inner.client_config.clone(),
            self.inner.peer_options.clone(),
            self.inner.metrics.clone(),
        );
        peers.insert(name, sender);
    }

    /// Forgets a peer: its queue is dropped and its messages refused.
    pub fn remove_peer(&self, name: &str) {
        write_peers(&self.inner.shared.peers).remove(name);
    }
}

impl<M> Endpoint<M> {
    /// This endpoint's name (from its certificate).
    pub fn name(&self) -> &str {
        &self.inner.name
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.inner.local_addr
    }

    pub fn metrics(&self) -> MetricsSnapshot {
        self.inner.metrics.snapshot()
    }

    /// A request client sharing this endpoint's socket and identity.
    pub fn client(&self) -> &Client {
        &self.inner.client
    }

    /// Closes every connection and stops all tasks; waits (bounded) until
    /// peers have been told, so the port can be reused.
    pub async fn shutdown(&self) {
        self.inner.quinn.close(codes::CLOSED, b"shutdown");
        if let Some(task) = lock(&self.inner.accept_task).take() {
            task.abort();
        }
        write_peers(&self.inner.shared.peers).clear();
        let _ = tokio::time::timeout(Duration::from_secs(2), self.inner.quinn.wait_idle()).await;
    }
}

async fn accept_loop<M>(
    quinn: quinn::Endpoint,
    shared: std::sync::Weak<Shared>,
    incoming_sender: mpsc::Sender<(PeerName, M)>,
    serve: ServeStream,
    max_connections: usize,
) where
    M: DeserializeOwned + Send + 'static,
{
    while let Some(incoming) = quinn.accept().await {
        let Some(shared) = shared.upgrade() else {
            return;
        };
        // An Incoming is not yet counted in open_connections().
        if quinn.open_connections() >= max_connections {
            Metrics::add(&shared.metrics.connections_refused_limit);
            tracing::warn!(remote = %incoming.remote_address(), max_connections, "refusing connection: at max_connections");
            incoming.refuse();
            continue;
        }
        tokio::spawn(serve_connection(
            incoming,
            shared,
            incoming_sender.clone(),
            serve.clone(),
        ));
    }
}

async fn serve_connection<M>(
    incoming: quinn::Incoming,
    shared: Arc<Shared>,
    incoming_sender: mpsc::Sender<(PeerName, M)>,
    serve: ServeStream,
) where
    M: DeserializeOwned + Send + 'static,
{
    let remote = incoming.remote_address();
    let connection = match incoming.await {
        Ok(connection) => connection,
        Err(error) => {
            Metrics::add(&shared.metrics.handshakes_refused);
            tracing::warn!(%remote, %error, "refused connection during handshake");
            return;
        }
    };
    let Some(name) = authenticated_name(&connection) else {
        tracing::warn!(%remote, "closing connection: certificate has no DNS name");
        connection.close(codes::NO_IDENTITY, b"certificate has no DNS name");
        return;
    };
    Metrics::add(&shared.metrics.connections_accepted);
    tracing::debug!(%remote, peer = %name, "accepted connection");
    loop {
        tokio::select! {
            stream = connection.accept_uni() => match stream {
                Ok(stream) => {
                    tokio::spawn(read_peer_stream(
                        name.clone(),
                        stream,
                        shared.clone(),
                        incoming_sender.clone(),
                    ));
                }
                Err(error) => {
                    tracing::debug!(peer = %name, %error, "connection ended");
                    return;
                }
            },
            streams = connection.accept_bi() => match streams {
                Ok((send, recv)) => {
                    tokio::spawn(serve(name.clone(), send, recv));
                }
                Err(error) => {
                    tracing::debug!(peer = %name, %error, "connection ended");
                    return;
                }
            },
        }
    }
}

/// The first DNS name of the certificate the peer authenticated with. The
/// handshake already verified the chain to our CA.
fn authenticated_name(connection: &quinn::Connection) -> Option<PeerName> {
    let identity = connection.peer_identity()?;
    let chain = identity
        .downcast::<Vec<rustls::pki_types::CertificateDer<'static>>>()
        .ok()?;
    let name = certs::certificate_name(chain.first()?)?;
    Some(name.into())
}

/// Reads one-way messages from one peer stream until it ends. A bad frame
/// stops this stream only.
async fn read_peer_stream<M>(
    from: PeerName,
    mut stream: quinn::RecvStream,
    shared: Arc<Shared>,
    incoming_sender: mpsc::Sender<(PeerName, M)>,
) where
    M: DeserializeOwned + Send + 'static,
{
    if !read_peers(&shared.peers).contains_key(&from) {
        Metrics::add(&shared.metrics.streams_refused_not_a_peer);
        tracing::warn!(peer = %from, "refusing one-way stream: not a configured peer");
        let _ = stream.stop(codes::NOT_A_PEER);
        return;
    }
    loop {
        match frame::read_frame::<M>(&mut stream, shared.max_frame_bytes).await {
            Ok(Some(message)) => {
                if incoming_sender.send((from.clone(), message)).await.is_err() {
                    let _ = stream.stop(codes::CLOSED);
                    return;
                }
                Metrics::add(&shared.metrics.peer_messages_received);
            }
            Ok(None) => return,
            Err(StreamReadError::Frame(error)) => {
                tracing::warn!(peer = %from, %error, "closing peer stream: bad frame");
                shared.metrics.frame_rejected(&error);
                let _ = stream.stop(error.code());
                return;
            }
            Err(StreamReadError::Read(error)) => {
                tracing::debug!(peer = %from, %error, "peer stream ended");
                return;
            }
        }
    }
}

// Lock helpers: a panic while a lock is held cannot leave these maps in a
// state worse than "a peer entry is missing or stale", so poisoning is ignored.

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn read_peers(
    peers: &RwLock<HashMap<PeerName, PeerSender>>,
) -> std::sync::RwLockReadGuard<'_, HashMap<PeerName, PeerSender>> {
    peers
        .read()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn write_peers(
    peers: &RwLock<HashMap<PeerName, PeerSender>>,
) -> std::sync::RwLockWriteGuard<'_, HashMap<PeerName, PeerSender>> {
    peers
        .write()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}
