//! Endpoints on loopback (127.0.0.1, ephemeral ports): peer messages,
//! requests, refusal of foreign certificates, bad frames, frame-size limits.
//! Deadlines below only bound a hang; nothing asserts speed.

#![allow(clippy::unwrap_used)] // test code: a panic is a failed test

use std::net::SocketAddr;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use transport::certs::{self, CertificateAuthority, Identity};
use transport::tls::{self, TransportOptions};
use transport::{
    codes, Client, ClientOptions, Endpoint, EndpointConfig, Incoming, PeerAddress, PeerName,
    RequestError, RequestHandler, SendError,
};

const HANG_LIMIT: Duration = Duration::from_secs(20);

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Message {
    /// What the sender claims to be; the transport must not believe it.
    claimed_from: String,
    seq: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
enum Request {
    Echo(String),
    WhoAmI,
    NeverAnswer,
    DropWithoutAnswer,
}

struct TestHandler;

impl RequestHandler for TestHandler {
    type Request = Request;
    type Response = String;

    async fn handle(&self, from: PeerName, request: Request) -> Option<String> {
        match request {
            Request::Echo(text) => Some(text),
            Request::WhoAmI => Some(from.to_string()),
            Request::NeverAnswer => {
                tokio::time::sleep(Duration::from_secs(3600)).await;
                None
            }
            Request::DropWithoutAnswer => None,
        }
    }
}

fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .with_test_writer()
        .try_init();
}

fn loopback() -> SocketAddr {
    "127.0.0.1:0".parse().unwrap()
}

fn node_identity(ca: &CertificateAuthority, name: &str) -> Identity {
    certs::issue_node_cert(ca, name, &["127.0.0.1".parse().unwrap()])
        .unwrap()
        .identity()
        .unwrap()
}

fn node_config(ca: &CertificateAuthority, name: &str) -> EndpointConfig {
    EndpointConfig::new(node_identity(ca, name), ca.roots().unwrap(), loopback())
}

fn client(ca: &CertificateAuthority, name: &str) -> Client {
    let identity = certs::issue_client_cert(ca, name)
        .unwrap()
        .identity()
        .unwrap();
    Client::new(
        &identity,
        ca.roots().unwrap(),
        ClientOptions {
            bind: loopback(),
            ..ClientOptions::default()
        },
    )
    .unwrap()
}

fn server(config: EndpointConfig) -> Endpoint<Message> {
    let (endpoint, _incoming) =
        Endpoint::<Message>::bind_with_handler(config, TestHandler).unwrap();
    endpoint
}

/// A raw QUIC connection with our TLS settings, for writing bad bytes.
async fn raw_connection(
    identity: Option<&Identity>,
    ca: &CertificateAuthority,
    addr: SocketAddr,
    server_name: &str,
) -> (quinn::Endpoint, quinn::Connection) {
    let crypto = tls::client_crypto(identity, ca.roots().unwrap()).unwrap();
    let config = tls::client_config(crypto, &TransportOptions::default()).unwrap();
    let endpoint = quinn::Endpoint::client(loopback()).unwrap();
    let connection = endpoint
        .connect_with(config, addr, server_name)
        .unwrap()
        .await
        .unwrap();
    (endpoint, connection)
}

async fn recv(incoming: &mut Incoming<Message>) -> (PeerName, Message) {
    tokio::time::timeout(HANG_LIMIT, incoming.recv())
        .await
        .expect("no message before the hang limit")
        .expect("incoming channel closed")
}

async fn echo(
    client: &Client,
    endpoint_addr: SocketAddr,
    name: &str,
    text: &str,
) -> Result<String, RequestError> {
    client
        .request(
            endpoint_addr,
            name,
            &Request::Echo(text.to_string()),
            HANG_LIMIT,
        )
        .await
}

#[tokio::test]
async fn three_endpoints_exchange_messages_named_by_certificate() {
    init_tracing();
    let ca = certs::generate_ca().unwrap();
    let names = ["n1", "n2", "n3"];
    let mut endpoints = Vec::new();
    let mut incomings = Vec::new();
    for name in names {
        let (endpoint, incoming) = Endpoint::<Message>::bind(node_config(&ca, name)).unwrap();
        endpoints.push(endpoint);
        incomings.push(incoming);
    }
    for endpoint in &endpoints {
        for other in &endpoints {
            if other.name() != endpoint.name() {
                endpoint.add_peer(PeerAddress {
                    name: other.name().to_string(),
                    addr: other.local_addr(),
                });
            }
        }
    }
    for (index, endpoint) in endpoints.iter().enumerate() {
        for other in names.iter().filter(|other| **other != endpoint.name()) {
            for seq in 0..3 {
                // The body lies about the sender.
                let message = Message {
                    claimed_from: "n9".into(),
                    seq: index as u64 * 100 + seq,
                };
                endpoint.send(other, &message).unwrap();
            }
        }
    }
    for (index, incoming) in incomings.iter_mut().enumerate() {
        let mut received = Vec::new();
        for _ in 0..6 {
            let (from, message) = recv(incoming).await;
            assert_eq!(message.claimed_from, "n9");
            received.push((from.to_string(), message.seq));
        }
        received.sort();
        let expected: Vec<(String, u64)> = (0..3)
            .filter(|sender| *sender != index)
            .flat_map(|sender| {
                (0..3).map(move |seq| (names[sender].to_string(), sender as u64 * 100 + seq))
            })
            .collect();
        assert_eq!(received, expected, "receiver {}", names[index]);
    }
    for endpoint in &endpoints {
        let metrics = endpoint.metrics();
        assert_eq!(metrics.peer_messages_received, 6);
        assert_eq!(metrics.peer_messages_sent, 6);
    }
}

#[tokio::test]
async fn sender_reconnects_after_peer_restarts_on_the_same_port() {
    init_tracing();
    let ca = certs::generate_ca().unwrap();
    let n2_identity = node_identity(&ca, "n2");
    let (n1, _n1_incoming) = Endpoint::<Message>::bind(node_config(&ca, "n1")).unwrap();
    let n2_config = EndpointConfig::new(n2_identity.clone(), ca.roots().unwrap(), loopback());
    let (n2, mut n2_incoming) = Endpoint::<Message>::bind(n2_config).unwrap();
    let n2_addr = n2.local_addr();
    n2.add_peer(PeerAddress {
        name: "n1".into(),
        addr: n1.local_addr(),
    });
    n1.add_peer(PeerAddress {
        name: "n2".into(),
        addr: n2_addr,
    });

    let message = |seq| Message {
        claimed_from: "n1".into(),
        seq,
    };
    n1.send("n2", &message(1)).unwrap();
    assert_eq!(recv(&mut n2_incoming).await.1.seq, 1);

    n2.shutdown().await;
    drop(n2);
    drop(n2_incoming);

    // Restart n2 with the same identity on the same port.
    let deadline = tokio::time::Instant::now() + HANG_LIMIT;
    let (n2, mut n2_incoming) = loop {
        let mut config = EndpointConfig::new(n2_identity.clone(), ca.roots().unwrap(), n2_addr);
        config.peers = vec![PeerAddress {
            name: "n1".into(),
            addr: n1.local_addr(),
        }];
        match Endpoint::<Message>::bind(config) {
            Ok(bound) => break bound,
            Err(error) if tokio::time::Instant::now() < deadline => {
                eprintln!("rebind {n2_addr}: {error}; retrying");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(error) => panic!("cannot rebind {n2_addr}: {error}"),
        }
    };
    assert_eq!(n2.local_addr(), n2_addr);

    // Keep sending until the new incarnation receives one (messages sent
    // into the dead connection may be lost: that is allowed).
    let mut seq = 100;
    let received = loop {
        match n1.send("n2", &message(seq)) {
            Ok(()) | Err(SendError::QueueFull { .. }) => {}
            Err(error) => panic!("{error}"),
        }
        seq += 1;
        tokio::select! {
            received = n2_incoming.recv() => break received.unwrap(),
            _ = tokio::time::sleep(Duration::from_millis(50)) => {}
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no message after restart"
        );
    };
    assert_eq!(&*received.0, "n1");
    assert!(received.1.seq >= 100);
    assert!(
        n1.metrics().peer_connections_established >= 2,
        "{:?}",
        n1.metrics()
    );
}

#[tokio::test]
async fn request_round_trip_reuses_one_connection() {
    init_tracing();
    let ca = certs::generate_ca().unwrap();
    let server = server(node_config(&ca, "n1"));
    let client = client(&ca, "client-7");
    for index in 0..10 {
        let text = format!("hello {index}");
        assert_eq!(
            echo(&client, server.local_addr(), "n1", &text)
                .await
                .unwrap(),
            text
        );
    }
    let who: String = client
        .request(server.local_addr(), "n1", &Request::WhoAmI, HANG_LIMIT)
        .await
        .unwrap();
    assert_eq!(who, "client-7");
    let metrics = server.metrics();
    assert_eq!(metrics.connections_accepted, 1);
    assert_eq!(metrics.requests_served, 11);

    // Nodes call each other through the endpoint's own client.
    let (n2, _incoming) = Endpoint::<Message>::bind(node_config(&ca, "n2")).unwrap();
    let who: String = n2
        .client()
        .request(server.local_addr(), "n1", &Request::WhoAmI, HANG_LIMIT)
        .await
        .unwrap();
    assert_eq!(who, "n2");
}

#[tokio::test]
async fn client_reconnects_after_server_restart() {
    init_tracing();
    let ca = certs::generate_ca().unwrap();
    let identity = node_identity(&ca, "n1");
    let first = server(EndpointConfig::new(
        identity.clone(),
        ca.roots().unwrap(),
        loopback(),
    ));
    let addr = first.local_addr();
    let client = client(&ca, "client-1");
    assert_eq!(echo(&client, addr, "n1", "a").await.unwrap(), "a");
    first.shutdown().await;
    drop(first);
    // The cached connection is closed by the server's shutdown, so the
    // next request sees either a refused connect (definite) or succeeds.
    let deadline = tokio::time::Instant::now() + HANG_LIMIT;
    let second = loop {
        match Endpoint::<Message>::bind_with_handler(
            EndpointConfig::new(identity.clone(), ca.roots().unwrap(), addr),
            TestHandler,
        ) {
            Ok((endpoint, _)) => break endpoint,
            Err(_) if tokio::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(50)).await
            }
            Err(error) => panic!("{error}"),
        }
    };
    let mut answer = None;
    for _ in 0..20 {
        match echo(&client, addr, "n1", "b").await {
            Ok(text) => {
                answer = Some(text);
                break;
            }
            Err(error) => eprintln!("retrying after: {error}"),
        }
    }
    assert_eq!(answer.as_deref(), Some("b"));
    assert_eq!(second.metrics().requests_served, 1);
}

#[tokio::test]
async fn foreign_and_missing_certificates_are_refused_while_good_clients_work() {
    init_tracing();
    let ca = certs::generate_ca().unwrap();
    let server = server(node_config(&ca, "n1"));
    let addr = server.local_addr();
    let good = client(&ca, "client-good");
    assert_eq!(echo(&good, addr, "n1", "before").await.unwrap(), "before");

    // A client certificate from another CA, trusting our CA for the server.
    let rogue_ca = certs::generate_ca().unwrap();
    let rogue_identity = certs::issue_client_cert(&rogue_ca, "client-good")
        .unwrap()
        .identity()
        .unwrap();
    let rogue = Client::new(
        &rogue_identity,
        ca.roots().unwrap(),
        ClientOptions {
            bind: loopback(),
            ..ClientOptions::default()
        },
    )
    .unwrap();
    let error = echo(&rogue, addr, "n1", "rogue").await.unwrap_err();
    assert!(matches!(error, RequestError::Refused { .. }), "{error:?}");
    assert!(error.is_definite());

    // A client with no certificate at all.
    let crypto = tls::client_crypto(None, ca.roots().unwrap()).unwrap();
    let config = tls::client_config(crypto, &TransportOptions::default()).unwrap();
    let anonymous = Client::with_config(
        config,
        ClientOptions {
            bind: loopback(),
            ..ClientOptions::default()
        },
    )
    .unwrap();
    let error = echo(&anonymous, addr, "n1", "anonymous").await.unwrap_err();
    assert!(matches!(error, RequestError::Refused { .. }), "{error:?}");
    assert!(error.is_definite());

    // A node certificate from another CA cannot send peer messages either.
    let (rogue_node, _incoming) = Endpoint::<Message>::bind(EndpointConfig::new(
        node_identity(&rogue_ca, "n2"),
        ca.roots().unwrap(),
        loopback(),
    ))
    .unwrap();
    let error = rogue_node
        .client()
        .request::<_, String>(addr, "n1", &Request::WhoAmI, HANG_LIMIT)
        .await
        .unwrap_err();
    assert!(error.is_definite(), "{error:?}");

    assert_eq!(echo(&good, addr, "n1", "after").await.unwrap(), "after");
    let metrics = server.metrics();
    assert!(metrics.handshakes_refused >= 3, "{metrics:?}");
    assert_eq!(metrics.requests_served, 2);
}

#[tokio::test]
async fn server_certificate_must_match_the_name_and_the_ca() {
    init_tracing();
    let ca = certs::generate_ca().unwrap();
    let server = server(node_config(&ca, "n1"));
    let good = client(&ca, "client-1");
    let error = echo(&good, server.local_addr(), "n2", "x")
        .await
        .unwrap_err();
    assert!(matches!(error, RequestError::Refused { .. }), "{error:?}");

    let other_ca = certs::generate_ca().unwrap();
    let impostor = server_with(node_config(&other_ca, "n1"));
    let error = echo(&good, impostor.local_addr(), "n1", "x")
        .await
        .unwrap_err();
    assert!(matches!(error, RequestError::Refused { .. }), "{error:?}");
    assert!(error.is_definite());
}

fn server_with(config: EndpointConfig) -> Endpoint<Message> {
    server(config)
}

#[tokio::test]
async fn bad_request_frames_close_only_their_stream() {
    init_tracing();
    let ca = certs::generate_ca().unwrap();
    let server = server(node_config(&ca, "n1"));
    let addr = server.local_addr();
    let identity = certs::issue_client_cert(&ca, "client-raw")
        .unwrap()
        .identity()
        .unwrap();
    let (_raw_endpoint, connection) = raw_connection(Some(&identity), &ca, addr, "n1").await;

    // Garbage after a plausible header.
    let (mut send, mut recv) = connection.open_bi().await.unwrap();
    send.write_all(&[0, 0, 0, 4, 0xff, 0xfe, 0xfd, 0xfc])
        .await
        .unwrap();
    send.finish().unwrap();
    let error = recv.read_to_end(1024).await.unwrap_err();
    assert_eq!(
        error.to_string(),
        quinn::ReadToEndError::Read(quinn::ReadError::Reset(codes::UNDECODABLE)).to_string()
    );

    // A header announcing 4 GiB.
    let (mut send, mut recv) = connection.open_bi().await.unwrap();
    send.write_all(&u32::MAX.to_be_bytes()).await.unwrap();
    let error = recv.read_to_end(1024).await.unwrap_err();
    assert!(
        matches!(error, quinn::ReadToEndError::Read(quinn::ReadError::Reset(code)) if code == codes::FRAME_TOO_LARGE),
        "{error:?}"
    );

    // Pure garbage, no header structure at all.
    let (mut send, mut recv) = connection.open_bi().await.unwrap();
    send.write_all(b"GET / HTTP/1.1\r\n\r\n").await.unwrap();
    send.finish().unwrap();
    assert!(recv.read_to_end(1024).await.is_err());

    // The same connection still serves a well-formed request ...
    let (mut send, mut recv) = connection.open_bi().await.unwrap();
    let bytes =
        transport::frame::encode(&Request::Echo("same connection".into()), 1 << 20).unwrap();
    send.write_all(&bytes).await.unwrap();
    send.finish().unwrap();
    let answer = recv.read_to_end(1024).await.unwrap();
    let text: String = transport::frame::decode_payload(&answer[4..]).unwrap();
    assert_eq!(text, "same connection");

    // ... and so does the endpoint, for everyone else.
    let good = client(&ca, "client-good");
    assert_eq!(
        echo(&good, addr, "n1", "still here").await.unwrap(),
        "still here"
    );
    let metrics = server.metrics();
    assert_eq!(metrics.frames_rejected_undecodable, 1, "{metrics:?}");
    assert_eq!(metrics.frames_rejected_too_large, 2, "{metrics:?}");
}

#[tokio::test]
async fn bad_peer_frames_close_only_their_stream() {
    init_tracing();
    let ca = certs::generate_ca().unwrap();
    let (n1, mut n1_incoming) = Endpoint::<Message>::bind(node_config(&ca, "n1")).unwrap();
    let n2_identity = node_identity(&ca, "n2");
    let (n2, _n2_incoming) = Endpoint::<Message>::bind(EndpointConfig::new(
        n2_identity.clone(),
        ca.roots().unwrap(),
        loopback(),
    ))
    .unwrap();
    n1.add_peer(PeerAddress {
        name: "n2".into(),
        addr: n2.local_addr(),
    });
    n2.add_peer(PeerAddress {
        name: "n1".into(),
        addr: n1.local_addr(),
    });

    // Raw streams authenticated as n2 (a configured peer).
    let (_raw_endpoint, connection) =
        raw_connection(Some(&n2_identity), &ca, n1.local_addr(), "n1").await;
    let mut garbage = connection.open_uni().await.unwrap();
    garbage
        .write_all(&[0, 0, 0, 3, 0xff, 0xff, 0xff])
        .await
        .unwrap();
    assert_eq!(garbage.stopped().await.unwrap(), Some(codes::UNDECODABLE));
    let mut oversized = connection.open_uni().await.unwrap();
    oversized
        .write_all(&(u32::MAX - 1).to_be_bytes())
        .await
        .unwrap();
    assert_eq!(
        oversized.stopped().await.unwrap(),
        Some(codes::FRAME_TOO_LARGE)
    );

    // A client (not a configured peer) cannot inject peer messages.
    let client_identity = certs::issue_client_cert(&ca, "client-1")
        .unwrap()
        .identity()
        .unwrap();
    let (_client_endpoint, client_connection) =
        raw_connection(Some(&client_identity), &ca, n1.local_addr(), "n1").await;
    let mut injected = client_connection.open_uni().await.unwrap();
    let bytes = transport::frame::encode(
        &Message {
            claimed_from: "n2".into(),
            seq: 666,
        },
        1 << 20,
    )
    .unwrap();
    injected.write_all(&bytes).await.unwrap();
    assert_eq!(injected.stopped().await.unwrap(), Some(codes::NOT_A_PEER));

    // Real traffic from n2 still arrives, and only it.
    n2.send(
        "n1",
        &Message {
            claimed_from: "n2".into(),
            seq: 7,
        },
    )
    .unwrap();
    let (from, message) = recv(&mut n1_incoming).await;
    assert_eq!((&*from, message.seq), ("n2", 7));
    let metrics = n1.metrics();
    assert_eq!(metrics.frames_rejected_undecodable, 1, "{metrics:?}");
    assert_eq!(metrics.frames_rejected_too_large, 1, "{metrics:?}");
    assert_eq!(metrics.streams_refused_not_a_peer, 1, "{metrics:?}");
    assert_eq!(metrics.peer_messages_received, 1, "{metrics:?}");
}

/// The length of `text` whose CBOR encoding is exactly `payload_bytes`.
fn text_of_encoded_len(payload_bytes: usize) -> String {
    let mut text = String::new();
    loop {
        let len = transport::frame::encode(&Request::Echo(text.clone()), usize::MAX)
            .unwrap()
            .len()
            - 4;
        if len == payload_bytes {
            return text;
        }
        assert!(
            len < payload_bytes,
            "no text encodes to exactly {payload_bytes} bytes"
        );
        text.push('x');
    }
}

#[tokio::test]
async fn frame_of_exactly_max_bytes_passes_and_one_more_fails() {
    init_tracing();
    const MAX: usize = 1000;
    let ca = certs::generate_ca().unwrap();
    let mut config = node_config(&ca, "n1");
    config.max_frame_bytes = MAX;
    let server = server(config);
    // The client allows more than the server, so the server's limit is tested.
    let client = client(&ca, "client-1");

    let exact = text_of_encoded_len(MAX);
    let answer: String = client
        .request(
            server.local_addr(),
            "n1",
            &Request::Echo(exact.clone()),
            HANG_LIMIT,
        )
        .await
        .unwrap();
    // The answer (a bare string) is shorter than the request, so it fits too.
    assert_eq!(answer, exact);

    let over = text_of_encoded_len(MAX + 1);
    let error = client
        .request::<_, String>(server.local_addr(), "n1", &Request::Echo(over), HANG_LIMIT)
        .await
        .unwrap_err();
    assert!(
        matches!(error, RequestError::Rejected { code, .. } if code == codes::FRAME_TOO_LARGE.into_inner()),
        "{error:?}"
    );
    assert!(error.is_definite());
    assert_eq!(server.metrics().frames_rejected_too_large, 1);

    // The sender refuses to send one byte over its own limit.
    let mut small = ClientOptions {
        bind: loopback(),
        ..ClientOptions::default()
    };
    small.max_frame_bytes = MAX;
    let identity = certs::issue_client_cert(&ca, "client-2")
        .unwrap()
        .identity()
        .unwrap();
    let small_client = Client::new(&identity, ca.roots().unwrap(), small).unwrap();
    let error = small_client
        .request::<_, String>(
            server.local_addr(),
            "n1",
            &Request::Echo(text_of_encoded_len(MAX + 1)),
            HANG_LIMIT,
        )
        .await
        .unwrap_err();
    assert!(matches!(error, RequestError::Encode(_)), "{error:?}");
    assert!(error.is_definite());
}

#[tokio::test]
async fn peer_message_of_exactly_max_bytes_passes_and_one_more_is_refused() {
    init_tracing();
    const MAX: usize = 500;
    let ca = certs::generate_ca().unwrap();
    let mut n1_config = node_config(&ca, "n1");
    n1_config.max_frame_bytes = MAX;
    let mut n2_config = node_config(&ca, "n2");
    n2_config.max_frame_bytes = MAX;
    let (n1, _) = Endpoint::<String>::bind(n1_config).unwrap();
    let (n2, mut n2_incoming) = Endpoint::<String>::bind(n2_config).unwrap();
    n1.add_peer(PeerAddress {
        name: "n2".into(),
        addr: n2.local_addr(),
    });
    n2.add_peer(PeerAddress {
        name: "n1".into(),
        addr: n1.local_addr(),
    });
    let exact = "y".repeat(MAX - 3); // a text of 256..=65535 bytes has a 3-byte CBOR header
    assert_eq!(
        transport::frame::encode(&exact, usize::MAX).unwrap().len(),
        MAX + 4
    );
    n1.send("n2", &exact).unwrap();
    let (from, received) = tokio::time::timeout(HANG_LIMIT, n2_incoming.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!((&*from, received), ("n1", exact.clone()));
    let error = n1.send("n2", &format!("{exact}y")).unwrap_err();
    assert!(matches!(error, SendError::Frame { .. }), "{error:?}");
}

#[tokio::test]
async fn outcomes_after_sending_are_unknown_and_before_are_definite() {
    init_tracing();
    let ca = certs::generate_ca().unwrap();
    let server = server(node_config(&ca, "n1"));
    let client = client(&ca, "client-1");

    let error = client
        .request::<_, String>(
            server.local_addr(),
            "n1",
            &Request::NeverAnswer,
            Duration::from_millis(200),
        )
        .await
        .unwrap_err();
    assert!(matches!(error, RequestError::Timeout { .. }), "{error:?}");
    assert!(!error.is_definite());

    let error = client
        .request::<_, String>(
            server.local_addr(),
            "n1",
            &Request::DropWithoutAnswer,
            HANG_LIMIT,
        )
        .await
        .unwrap_err();
    assert!(
        matches!(error, RequestError::NoResponse { code: Some(code), .. } if code == codes::HANDLER_DROPPED.into_inner()),
        "{error:?}"
    );
    assert!(!error.is_definite());

    // Nobody listens on this port: connect fails, the request certainly did not happen.
    let silent = std::net::UdpSocket::bind(loopback()).unwrap();
    let error = client
        .request::<_, String>(
            silent.local_addr().unwrap(),
            "n1",
            &Request::WhoAmI,
            Duration::from_millis(300),
        )
        .await
        .unwrap_err();
    assert!(matches!(error, RequestError::Connect { .. }), "{error:?}");
    assert!(error.is_definite());

    // An endpoint without a handler refuses requests definitely.
    let (no_handler, _) = Endpoint::<Message>::bind(node_config(&ca, "n2")).unwrap();
    let error = client
        .request::<_, String>(no_handler.local_addr(), "n2", &Request::WhoAmI, HANG_LIMIT)
        .await
        .unwrap_err();
    assert!(
        matches!(error, RequestError::Rejected { code, .. } if code == codes::NO_HANDLER.into_inner()),
        "{error:?}"
    );
}

#[tokio::test]
async fn full_peer_queue_drops_and_counts() {
    init_tracing();
    let ca = certs::generate_ca().unwrap();
    let mut config = node_config(&ca, "n1");
    config.peer_queue_messages = 4;
    let (n1, _) = Endpoint::<Message>::bind(config).unwrap();
    let silent = std::net::UdpSocket::bind(loopback()).unwrap();
    n1.add_peer(PeerAddress {
        name: "n2".into(),
        addr: silent.local_addr().unwrap(),
    });
    // Current-thread runtime: the peer task cannot run between these sends.
    for seq in 0..4 {
        n1.send(
            "n2",
            &Message {
                claimed_from: "n1".into(),
                seq,
            },
        )
        .unwrap();
    }
    let error = n1
        .send(
            "n2",
            &Message {
                claimed_from: "n1".into(),
                seq: 4,
            },
        )
        .unwrap_err();
    assert!(matches!(error, SendError::QueueFull { .. }), "{error:?}");
    assert_eq!(n1.metrics().peer_messages_dropped_queue_full, 1);
    let error = n1
        .send(
            "n3",
            &Message {
                claimed_from: "n1".into(),
                seq: 5,
            },
        )
        .unwrap_err();
    assert!(matches!(error, SendError::UnknownPeer { .. }), "{error:?}");
}

#[tokio::test]
async fn invalid_config_names_the_field() {
    let ca = certs::generate_ca().unwrap();
    let mut config = node_config(&ca, "n1");
    config.max_frame_bytes = 0;
    let error = Endpoint::<Message>::bind(config).unwrap_err();
    assert!(error.to_string().contains("max_frame_bytes"), "{error}");
    let mut config = node_config(&ca, "n1");
    config.peers = vec![PeerAddress {
        name: "n1".into(),
        addr: loopback(),
    }];
    let error = Endpoint::<Message>::bind(config).unwrap_err();
    assert!(error.to_string().contains("peers"), "{error}");
}

/// Runs an endpoint on a runtime of its own thread; `crash` drops that
/// runtime, so the endpoint vanishes without sending CONNECTION_CLOSE (as
/// after kill -9) and its port is freed.
struct CrashableNode {
    crash: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl CrashableNode {
    fn start(
        config: EndpointConfig,
        received: tokio::sync::mpsc::UnboundedSender<(PeerName, Message)>,
    ) -> (CrashableNode, SocketAddr) {
        let (crash, crashed) = tokio::sync::oneshot::channel::<()>();
        let (addr_sender, addr_receiver) = std::sync::mpsc::channel();
        let thread = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            runtime.spawn(async move {
                let (endpoint, mut incoming) = Endpoint::<Message>::bind(config).unwrap();
                addr_sender.send(endpoint.local_addr()).unwrap();
                while let Some(message) = incoming.recv().await {
                    let _ = received.send(message);
                }
                drop(endpoint);
            });
            runtime.block_on(async {
                let _ = crashed.await;
            });
            // Dropping the runtime drops every task unpolled: nothing is sent.
            drop(runtime);
        });
        let addr = addr_receiver.recv().unwrap();
        (
            CrashableNode {
                crash: Some(crash),
                thread: Some(thread),
            },
            addr,
        )
    }

    fn crash(mut self) {
        let _ = self.crash.take().unwrap().send(());
        self.thread.take().unwrap().join().unwrap();
    }
}

#[tokio::test]
async fn sender_reconnects_after_peer_crashes_without_closing() {
    init_tracing();
    let ca = certs::generate_ca().unwrap();
    let n2_identity = node_identity(&ca, "n2");
    // An idle timeout beyond the hang limit: only a recognised stateless
    // reset from the restarted n2 can end the old connection in time.
    let long_idle = TransportOptions {
        idle_timeout: Duration::from_secs(120),
        ..TransportOptions::default()
    };
    let mut n1_config = node_config(&ca, "n1");
    n1_config.transport = long_idle.clone();
    let (n1, _n1_incoming) = Endpoint::<Message>::bind(n1_config).unwrap();
    let n2_config = |addr| {
        let mut config = EndpointConfig::new(n2_identity.clone(), ca.roots().unwrap(), addr);
        config.transport = long_idle.clone();
        config.peers = vec![PeerAddress {
            name: "n1".into(),
            addr: n1.local_addr(),
        }];
        config
    };
    let (received_sender, mut received) = tokio::sync::mpsc::unbounded_channel();
    let (n2, n2_addr) = CrashableNode::start(n2_config(loopback()), received_sender.clone());
    n1.add_peer(PeerAddress {
        name: "n2".into(),
        addr: n2_addr,
    });
    let message = |seq| Message {
        claimed_from: "n1".into(),
        seq,
    };
    n1.send("n2", &message(1)).unwrap();
    let first = tokio::time::timeout(HANG_LIMIT, received.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(first.1.seq, 1);

    n2.crash();
    let (_n2_again, _) = CrashableNode::start(n2_config(n2_addr), received_sender);

    let deadline = tokio::time::Instant::now() + HANG_LIMIT;
    let mut seq = 100;
    let (from, message) = loop {
        let _ = n1.send("n2", &message(seq));
        seq += 1;
        tokio::select! {
            message = received.recv() => break message.unwrap(),
            _ = tokio::time::sleep(Duration::from_millis(50)) => {}
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "old connection never reset: {:?}",
            n1.metrics()
        );
    };
    assert_eq!(&*from, "n1");
    assert!(message.seq >= 100);
    assert_eq!(
        n1.metrics().peer_connections_established,
        2,
        "{:?}",
        n1.metrics()
    );
}

#[tokio::test]
async fn connections_beyond_the_limit_are_refused_definitely() {
    init_tracing();
    let ca = certs::generate_ca().unwrap();
    let mut config = node_config(&ca, "n1");
    config.max_connections = 1;
    let server = server(config);
    let first = client(&ca, "client-1");
    assert_eq!(
        echo(&first, server.local_addr(), "n1", "a").await.unwrap(),
        "a"
    );
    let second = client(&ca, "client-2");
    let error = echo(&second, server.local_addr(), "n1", "b")
        .await
        .unwrap_err();
    assert!(error.is_definite(), "{error:?}");
    assert_eq!(server.metrics().connections_refused_limit, 1);
    assert_eq!(
        echo(&first, server.local_addr(), "n1", "c").await.unwrap(),
        "c"
    );
}
