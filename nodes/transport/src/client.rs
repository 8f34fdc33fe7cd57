//! The calling side of requests, with one cached connection per server.
//!
//! Errors are split by what the caller may conclude (Jepsen's definite versus
//! indefinite): [`RequestError::is_definite`] is true only when the request
//! certainly did not take effect on the server — it was never sent, the
//! handshake was refused, or the server refused the frame before handing it
//! to the service. Everything after the first byte went out (timeouts, lost
//! connections, missing or bad answers) is unknown.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{de::DeserializeOwned, Serialize};
use tokio::time::{timeout_at, Instant};

use crate::certs::{self, Identity};
use crate::endpoint::EndpointError;
use crate::frame::{self, FrameError, StreamReadError};
use crate::tls::{self, TransportOptions};
use crate::{codes, PeerName};

/// Settings of a standalone [`Client`].
#[derive(Debug, Clone)]
pub struct ClientOptions {
    /// Local address of the client's UDP socket.
    pub bind: SocketAddr,
    /// Largest request we send and response we accept (payload bytes).
    pub max_frame_bytes: usize,
    pub transport: TransportOptions,
}

impl Default for ClientOptions {
    fn default() -> Self {
        ClientOptions {
            bind: SocketAddr::from(([0, 0, 0, 0], 0)),
            max_frame_bytes: crate::DEFAULT_MAX_FRAME_BYTES,
            transport: TransportOptions::default(),
        }
    }
}

/// Why a request failed. See [`RequestError::is_definite`].
#[derive(Debug, thiserror::Error)]
pub enum RequestError {
    /// The request could not be encoded (our side); nothing was sent.
    #[error("request not sent: {0}")]
    Encode(FrameError),
    /// No connection to the server; nothing was sent.
    #[error("request not sent: cannot connect to {server} at {addr}: {reason}")]
    Connect {
        server: String,
        addr: SocketAddr,
        reason: String,
    },
    /// The TLS handshake was refused, by the server (our certificate) or by
    /// us (its certificate); the server processed nothing.
    #[error("request not delivered: TLS handshake with {server} refused: {reason}")]
    Refused { server: String, reason: String },
    /// The server refused the request's frame before handing it to its
    /// service (too large, undecodable, no handler); stream reset `code`.
    #[error("request rejected by {server} with code {code} before processing")]
    Rejected { server: String, code: u64 },
    /// No answer within the timeout after the request was sent: unknown.
    #[error("no answer from {server} within {timeout:?}; outcome unknown")]
    Timeout { server: String, timeout: Duration },
    /// The connection broke after the request was sent: unknown.
    #[error("connection to {server} lost after sending; outcome unknown: {reason}")]
    ConnectionLost { server: String, reason: String },
    /// The server ended the stream without an answer (code, if it reset the
    /// stream; see [`crate::codes`]): unknown.
    #[error("{server} sent no answer (code {code:?}); outcome unknown")]
    NoResponse { server: String, code: Option<u64> },
    /// The answer could not be read (too large, undecodable): the request
    /// was processed, its result is unknown.
    #[error("bad answer from {server}; outcome unknown: {source}")]
    BadResponse { server: String, source: FrameError },
}

/// Who caused an error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Blame {
    /// Our side: bad input or configuration.
    Local,
    /// The server: refused us, or sent bad data.
    Remote,
    /// Neither can be told: the network or a crash.
    Network,
}

impl RequestError {
    /// True when the request certainly did not take effect (a `fail` in the
    /// history); false when it may have (an `info`).
    pub fn is_definite(&self) -> bool {
        matches!(
            self,
            RequestError::Encode(_)
                | RequestError::Connect { .. }
                | RequestError::Refused { .. }
                | RequestError::Rejected { .. }
        )
    }

    /// Who caused the error.
    pub fn caused_by(&self) -> Blame {
        match self {
            RequestError::Encode(_) => Blame::Local,
            RequestError::Refused { .. }
            | RequestError::Rejected { .. }
            | RequestError::NoResponse { .. }
            | RequestError::BadResponse { .. } => Blame::Remote,
            RequestError::Connect { .. }
            | RequestError::Timeout { .. }
            | RequestError::ConnectionLost { .. } => Blame::Network,
        }
    }
}

type ConnectionKey = (SocketAddr, PeerName);

/// Sends requests. Cheap to clone; clones share the socket and connections.
#[derive(Clone)]
pub struct Client {
    inner: Arc<ClientInner>,
}

struct ClientInner {
    quinn: quinn::Endpoint,
    config: quinn::ClientConfig,
    max_frame_bytes: usize,
    connections: Mutex<HashMap<ConnectionKey, quinn::Connection>>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("max_frame_bytes", &self.inner.max_frame_bytes)
            .finish_non_exhaustive()
    }
}

impl Client {
    /// A client presenting `identity`, trusting `roots`. Binds its own UDP
    /// socket; must be called inside a tokio runtime.
    pub fn new(
        identity: &Identity,
        roots: rustls::RootCertStore,
        options: ClientOptions,
    ) -> Result<Client, EndpointError> {
        let crypto = tls::client_crypto(Some(identity), roots)?;
        let config = tls::client_config(crypto, &options.transport)?;
        Self::with_config(config, options)
    }

    /// [`Client::new`] from PEM files (see [`crate::certs`]).
    pub fn from_files(
        cert_path: &std::path::Path,
        key_path: &std::path::Path,
        ca_path: &std::path::Path,
        options: ClientOptions,
    ) -> Result<Client, EndpointError> {
        let identity = certs::load_identity(cert_path, key_path)?;
        let roots = certs::load_ca(ca_path)?;
        Self::new(&identity, roots, options)
    }

    /// A client with a ready quinn configuration (e.g. one presenting no
    /// certificate, to test refusal).
    pub fn with_config(
        config: quinn::ClientConfig,
        options: ClientOptions,
    ) -> Result<Client, EndpointError> {
        let quinn =
            quinn::Endpoint::client(options.bind).map_err(|source| EndpointError::Bind {
                addr: options.bind,
                source,
            })?;
        Ok(Self::on_endpoint(quinn, config, options.max_frame_bytes))
    }

    /// A client sharing an existing quinn endpoint (a node's own socket).
    pub(crate) fn on_endpoint(
        quinn: quinn::Endpoint,
        config: quinn::ClientConfig,
        max_frame_bytes: usize,
    ) -> Client {
        Client {
            inner: Arc::new(ClientInner {
                quinn,
                config,
                max_frame_bytes,
                connections: Mutex::new(HashMap::new()),
            }),
        }
    }

    /// The local address of the client's socket.
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.inner.quinn.local_addr()
    }

    /// Sends `request` to the server named `server_name` at `addr` on its own
    /// stream and waits for the answer, all within `timeout`. Reuses a cached
    /// connection to that server; a broken one is replaced.
    pub async fn request<Req, Resp>(
        &self,
        addr: SocketAddr,
        server_name: &str,
        request: &Req,
        timeout: Duration,
    ) -> Result<Resp, RequestError>
    where
        Req: Serialize + ?Sized,
        Resp: DeserializeOwned,
    {
        let deadline = Instant::now() + timeout;
        let bytes =
            frame::encode(request, self.inner.max_frame_bytes).map_err(RequestError::Encode)?;
        let key: ConnectionKey = (addr, server_name.into());
        let (mut send, mut recv) = self.open_stream(&key, deadline).await?;
        // From here on the server may receive the request: failures are unknown
        // unless the server tells us it refused.
        let exchange = async {
            send.write_all(&bytes)
                .await
                .map_err(|error| write_error(server_name, error))?;
            let _ = send.finish();
            match frame::read_frame::<Resp>(&mut recv, self.inner.max_frame_bytes).await {
                Ok(Some(response)) => Ok(response),
                Ok(None) => Err(RequestError::NoResponse {
                    server: server_name.to_string(),
                    code: None,
                }),
                Err(StreamReadError::Frame(source)) => Err(RequestError::BadResponse {
                    server: server_name.to_string(),
                    source,
                }),
                Err(StreamReadError::Read(error)) => Err(read_error(server_name, error)),
            }
        };
        let result = match timeout_at(deadline, exchange).await {
            Ok(result) => result,
            Err(_) => Err(RequestError::Timeout {
                server: server_name.to_string(),
                timeout,
            }),
        };
        if matches!(
            result,
            Err(RequestError::ConnectionLost { .. } | RequestError::Refused { .. })
        ) {
            self.evict(&key);
        }
        result
    }

    /// Opens a request stream, connecting (once more if a cached connection
    /// turns out dead). Every error here is definite: nothing was sent.
    async fn open_stream(
        &self,
        key: &ConnectionKey,
        deadline: Instant,
    ) -> Result<(quinn::SendStream, quinn::RecvStream), RequestError> {
        let mut attempts_left = 2;
        loop {
            attempts_left -= 1;
            let connection = self.connection(key, deadline).await?;
            let opened = timeout_at(deadline, connection.open_bi()).await;
            match opened {
                Ok(Ok(streams)) => return Ok(streams),
                Ok(Err(error)) => {
                    self.evict(key);
                    if attempts_left == 0 {
                        return Err(connect_error(key, &error));
                    }
                }
                Err(_) => {
                    return Err(RequestError::Connect {
                        server: key.1.to_string(),
                        addr: key.0,
                        reason: "timed out waiting for a free request stream".into(),
                    })
                }
            }
        }
    }

    async fn connection(
        &self,
        key: &ConnectionKey,
        deadline: Instant,
    ) -> Result<quinn::Connection, RequestError> {
        if let Some(connection) = self.cached(key) {
            if connection.close_reason().is_none() {
                return Ok(connection);
            }
            self.evict(key);
        }
        let (addr, server_name) = key;
        let connecting = self
            .inner
            .quinn
            .connect_with(self.inner.config.clone(), *addr, server_name)
            .map_err(|error| RequestError::Connect {
                server: server_name.to_string(),
                addr: *addr,
                reason: error.to_string(),
            })?;
        let connection = match timeout_at(deadline, connecting).await {
            Ok(Ok(connection)) => connection,
            Ok(Err(error)) => return Err(connect_error(key, &error)),
            Err(_) => {
                return Err(RequestError::Connect {
                    server: server_name.to_string(),
                    addr: *addr,
                    reason: "timed out".into(),
                })
            }
        };
        self.lock_connections()
            .insert(key.clone(), connection.clone());
        Ok(connection)
    }

    fn cached(&self, key: &ConnectionKey) -> Option<quinn::Connection> {
        self.lock_connections().get(key).cloned()
    }

    fn evict(&self, key: &ConnectionKey) {
        self.lock_connections().remove(key);
    }

    fn lock_connections(
        &self,
    ) -> std::sync::MutexGuard<'_, HashMap<ConnectionKey, quinn::Connection>> {
        // A panic while holding this lock cannot leave the map inconsistent.
        self.inner
            .connections
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Closes every cached connection and the socket (if not shared).
    pub fn close(&self) {
        for (_, connection) in self.lock_connections().drain() {
            connection.close(codes::CLOSED, b"client closed");
        }
    }
}

/// A TLS alert ends the connection with a QUIC crypto error (0x100 + alert).
fn is_tls_refusal(error: &quinn::ConnectionError) -> bool {
    let code = match error {
        quinn::ConnectionError::ConnectionClosed(close) => u64::from(close.error_code),
        quinn::ConnectionError::TransportError(error) => u64::from(error.code),
        _ => return false,
    };
    (0x100..=0x1ff).contains(&code)
}

fn connect_error(key: &ConnectionKey, error: &quinn::ConnectionError) -> RequestError {
    if is_tls_refusal(error) {
        RequestError::Refused {
            server: key.1.to_string(),
            reason: error.to_string(),
        }
    } else {
        RequestError::Connect {
            server: key.1.to_string(),
            addr: key.0,
            reason: error.to_string(),
        }
    }
}

fn connection_lost(server: &str, error: quinn::ConnectionError) -> RequestError {
    if is_tls_refusal(&error) {
        // The handshake never completed on the server: nothing was processed.
        RequestError::Refused {
            server: server.to_string(),
            reason: error.to_string(),
        }
    } else {
        RequestError::ConnectionLost {
            server: server.to_string(),
            reason: error.to_string(),
        }
    }
}

/// A stream reset code from the server: refusals before processing are
/// definite, anything else is not.
fn reset_by_server(server: &str, code: quinn::VarInt) -> RequestError {
    let definite = [
        codes::FRAME_TOO_LARGE,
        codes::UNDECODABLE,
        codes::TRUNCATED,
        codes::NO_HANDLER,
    ];
    if definite.contains(&code) {
        RequestError::Rejected {
            server: server.to_string(),
            code: code.into_inner(),
        }
    } else {
        RequestError::NoResponse {
            server: server.to_string(),
            code: Some(code.into_inner()),
        }
    }
}

fn write_error(server: &str, error: quinn::WriteError) -> RequestError {
    match error {
        quinn::WriteError::Stopped(code) => reset_by_server(server, code),
        quinn::WriteError::ConnectionLost(error) => connection_lost(server, error),
        other => RequestError::ConnectionLost {
            server: server.to_string(),
            reason: other.to_string(),
        },
    }
}

fn read_error(server: &str, error: quinn::ReadError) -> RequestError {
    match error {
        quinn::ReadError::Reset(code) => reset_by_server(server, code),
        quinn::ReadError::ConnectionLost(error) => connection_lost(server, error),
        other => RequestError::ConnectionLost {
            server: server.to_string(),
            reason: other.to_string(),
        },
    }
}
