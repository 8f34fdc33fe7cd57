//! rustls and quinn configurations for mutual TLS inside the cluster.
//!
//! Everything uses rustls's `ring` provider explicitly (`builder_with_provider`),
//! TLS 1.3 only, and the ALPN id [`crate::ALPN`]. The server requires a client
//! certificate that chains to the cluster CA (`WebPkiClientVerifier` over a
//! non-empty root store); the client verifies the server's certificate against
//! the same CA and the expected server name. Public so that tests and tools
//! can open raw QUIC streams with the same security settings.

use std::sync::Arc;
use std::time::Duration;

use quinn::crypto::rustls::{QuicClientConfig, QuicServerConfig};
use rustls::RootCertStore;

use crate::certs::Identity;

/// Errors while building a TLS configuration (bad key, empty root store, ...).
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("TLS configuration rejected: {0}")]
    Rustls(#[from] rustls::Error),
    #[error("client certificate verifier: {0}")]
    Verifier(#[from] rustls::server::VerifierBuilderError),
    #[error("QUIC cannot use this TLS configuration: {0}")]
    Quic(#[from] quinn::crypto::rustls::NoInitialCipherSuite),
    #[error("the trusted CA store is empty")]
    NoRoots,
}

/// QUIC transport parameters shared by both directions.
#[derive(Debug, Clone)]
pub struct TransportOptions {
    /// A connection with no traffic for this long is dead.
    pub idle_timeout: Duration,
    /// Ping this often so that an idle but healthy connection stays up.
    pub keep_alive_interval: Duration,
    /// Requests one connection may have in flight at once.
    pub max_concurrent_requests: u32,
    /// One-way peer streams one connection may have open at once.
    pub max_concurrent_peer_streams: u32,
}

impl Default for TransportOptions {
    fn default() -> Self {
        TransportOptions {
            idle_timeout: Duration::from_secs(10),
            keep_alive_interval: Duration::from_secs(2),
            max_concurrent_requests: 1024,
            max_concurrent_peer_streams: 16,
        }
    }
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn transport_config(options: &TransportOptions) -> Arc<quinn::TransportConfig> {
    let mut config = quinn::TransportConfig::default();
    // Durations beyond QUIC's VarInt range fall back to "no idle timeout".
    config.max_idle_timeout(quinn::IdleTimeout::try_from(options.idle_timeout).ok());
    config.keep_alive_interval(Some(options.keep_alive_interval));
    config.max_concurrent_bidi_streams(options.max_concurrent_requests.into());
    config.max_concurrent_uni_streams(options.max_concurrent_peer_streams.into());
    Arc::new(config)
}

/// The rustls server side: our identity, client certificates required.
pub fn server_crypto(
    identity: &Identity,
    roots: RootCertStore,
) -> Result<rustls::ServerConfig, TlsError> {
    if roots.is_empty() {
        return Err(TlsError::NoRoots);
    }
    let provider = provider();
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
        Arc::new(roots),
        provider.clone(),
    )
    .build()?;
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_client_cert_verifier(verifier)
        .with_single_cert(identity.chain.clone(), identity.key.clone_key())?;
    config.alpn_protocols = vec![crate::ALPN.to_vec()];
    Ok(config)
}

/// The rustls client side: verify the server against `roots`; present
/// `identity` if given (`None` exists for tests of refusal).
pub fn client_crypto(
    identity: Option<&Identity>,
    roots: RootCertStore,
) -> Result<rustls::ClientConfig, TlsError> {
    if roots.is_empty() {
        return Err(TlsError::NoRoots);
    }
    let builder = rustls::ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_root_certificates(roots);
    let mut config = match identity {
        Some(identity) => {
            builder.with_client_auth_cert(identity.chain.clone(), identity.key.clone_key())?
        }
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = vec![crate::ALPN.to_vec()];
    Ok(config)
}

/// quinn server configuration from a rustls one.
pub fn server_config(
    crypto: rustls::ServerConfig,
    options: &TransportOptions,
) -> Result<quinn::ServerConfig, TlsError> {
    let mut config =
        quinn::ServerConfig::with_crypto(Arc::new(QuicServerConfig::try_from(crypto)?));
    config.transport_config(transport_config(options));
    Ok(config)
}

/// quinn client configuration from a rustls one.
pub fn client_config(
    crypto: rustls::ClientConfig,
    options: &TransportOptions,
) -> Result<quinn::ClientConfig, TlsError> {
    let mut config = quinn::ClientConfig::new(Arc::new(QuicClientConfig::try_from(crypto)?));
    config.transport_config(transport_config(options));
    Ok(config)
}

/// quinn endpoint configuration that lets a restarted node end its previous
/// incarnation's connections at once.
///
/// A node that crashed sent no CONNECTION_CLOSE, so its peers keep writing
/// into the dead connection until the idle timeout. When the restarted node
/// gets such a packet it answers with a stateless reset, which the peer
/// believes only if (1) the connection id validates against the node's
/// connection-id generator key and (2) the reset token matches the one the
/// old incarnation issued. Both keys are quinn's random per-process values by
/// default; deriving them from our private key keeps them across restarts
/// (RFC 9000 §10.3 asks for exactly this). Peers then reconnect within a
/// round trip.
pub fn endpoint_config(identity: &Identity, rng_seed: Option<[u8; 32]>) -> quinn::EndpointConfig {
    use ring::hmac;
    let master = hmac::Key::new(hmac::HMAC_SHA256, identity.key.secret_der());
    let derived = hmac::sign(&master, b"raftjepsen quic stateless reset key v1");
    let reset_key = hmac::Key::new(hmac::HMAC_SHA256, derived.as_ref());
    let cid_tag = hmac::sign(&master, b"raftjepsen quic connection id key v1");
    let mut cid_key = [0u8; 8];
    cid_key.copy_from_slice(&cid_tag.as_ref()[..8]);
    let cid_key = u64::from_le_bytes(cid_key);
    let mut config = quinn::EndpointConfig::new(Arc::new(reset_key));
    config.cid_generator(move || {
        Box::new(quinn_proto::HashedConnectionIdGenerator::from_key(cid_key))
    });
    config.rng_seed(rng_seed);
    config
}
