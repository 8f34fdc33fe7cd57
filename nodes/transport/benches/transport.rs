//! Transport speed on loopback, beside the floor of a plain UDP round trip.
//!
//! `cargo bench -p transport` (env: BENCH_REQUESTS, BENCH_MESSAGES,
//! BENCH_PAYLOAD_BYTES, BENCH_CONCURRENCY). Measures, on one current-thread
//! tokio runtime (client and server share the thread, as the node daemon's
//! hot path should; see DESIGN.md on cross-core wake-ups):
//! 1. plain UDP echo round trip (tokio sockets), the floor;
//!    (1-3 run twice: server on the client's thread, and on a thread of its own)
//! 2. request/response round trip over QUIC + TLS + CBOR, one at a time;
//! 3. request throughput with several requests in flight;
//! 4. one-way peer message throughput (both endpoints on one thread).
#![allow(clippy::unwrap_used, clippy::expect_used)] // a benchmark: a panic is a failed run

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};
use transport::{
    certs, Client, ClientOptions, Endpoint, EndpointConfig, PeerAddress, PeerName, RequestHandler,
    SendError,
};

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Payload {
    seq: u64,
    data: String,
}

struct Echo;

impl RequestHandler for Echo {
    type Request = Payload;
    type Response = Payload;
    async fn handle(&self, _from: PeerName, request: Payload) -> Option<Payload> {
        Some(request)
    }
}

fn loopback() -> SocketAddr {
    "127.0.0.1:0".parse().unwrap()
}

fn report(label: &str, histogram: &Histogram<u64>, elapsed: Duration) {
    println!(
        "{label:<34} n={:<7} p50={:>6.1}us p99={:>7.1}us p99.9={:>7.1}us max={:>8.1}us  {:>9.0} ops/s",
        histogram.len(),
        histogram.value_at_quantile(0.50) as f64 / 1000.0,
        histogram.value_at_quantile(0.99) as f64 / 1000.0,
        histogram.value_at_quantile(0.999) as f64 / 1000.0,
        histogram.max() as f64 / 1000.0,
        histogram.len() as f64 / elapsed.as_secs_f64(),
    );
}

fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000_000, 3).unwrap()
}

/// Where the server side runs: on the client's thread, or on a runtime of
/// its own thread (like a separate process: every hop wakes another thread).
#[derive(Clone, Copy, PartialEq)]
enum Placement {
    SameThread,
    OtherThread,
}

impl Placement {
    fn label(self) -> &'static str {
        match self {
            Placement::SameThread => "same thread",
            Placement::OtherThread => "server thread",
        }
    }
}

/// Runs `serve` (which reports its address) on the current runtime or on a
/// new thread's runtime; the server lives until the process exits.
async fn start_server<F, Fut>(placement: Placement, serve: F) -> SocketAddr
where
    F: FnOnce(tokio::sync::oneshot::Sender<SocketAddr>) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + 'static,
{
    let (addr_sender, addr_receiver) = tokio::sync::oneshot::channel();
    match placement {
        Placement::SameThread => {
            tokio::task::spawn_local(serve(addr_sender));
        }
        Placement::OtherThread => {
            std::thread::spawn(move || {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .unwrap();
                tokio::task::LocalSet::new().block_on(&runtime, serve(addr_sender));
            });
        }
    }
    addr_receiver.await.unwrap()
}

async fn udp_round_trip(placement: Placement, count: usize, payload_bytes: usize) {
    let server_addr = start_server(placement, |addr| async move {
        let server = tokio::net::UdpSocket::bind(loopback()).await.unwrap();
        addr.send(server.local_addr().unwrap()).unwrap();
        let mut buf = vec![0u8; 65536];
        loop {
            let (len, from) = server.recv_from(&mut buf).await.unwrap();
            server.send_to(&buf[..len], from).await.unwrap();
        }
    })
    .await;
    let client = tokio::net::UdpSocket::bind(loopback()).await.unwrap();
    client.connect(server_addr).await.unwrap();
    let message = vec![7u8; payload_bytes];
    let mut buf = vec![0u8; 65536];
    let mut histogram = new_histogram();
    for _ in 0..count / 10 {
        client.send(&message).await.unwrap();
        client.recv(&mut buf).await.unwrap();
    }
    let started = Instant::now();
    for _ in 0..count {
        let begin = Instant::now();
        client.send(&message).await.unwrap();
        client.recv(&mut buf).await.unwrap();
        histogram.record(begin.elapsed().as_nanos() as u64).unwrap();
    }
    report(
        &format!("udp echo round trip, {}", placement.label()),
        &histogram,
        started.elapsed(),
    );
}

async fn request_round_trip(
    placement: Placement,
    ca: &certs::CertificateAuthority,
    count: usize,
    payload_bytes: usize,
    concurrency: usize,
) {
    let identity = certs::issue_node_cert(ca, "n1", &[])
        .unwrap()
        .identity()
        .unwrap();
    let roots = ca.roots().unwrap();
    let addr = start_server(placement, move |addr| async move {
        let (server, _incoming) = Endpoint::<Payload>::bind_with_handler(
            EndpointConfig::new(identity, roots, loopback()),
            Echo,
        )
        .unwrap();
        addr.send(server.local_addr()).unwrap();
        std::future::pending::<()>().await;
    })
    .await;
    let client_identity = certs::issue_client_cert(ca, "bench-client")
        .unwrap()
        .identity()
        .unwrap();
    let client = Client::new(
        &client_identity,
        ca.roots().unwrap(),
        ClientOptions {
            bind: loopback(),
            ..ClientOptions::default()
        },
    )
    .unwrap();
    let data = "x".repeat(payload_bytes);
    let timeout = Duration::from_secs(10);
    for seq in 0..(count / 10) as u64 {
        let _: Payload = client
            .request(
                addr,
                "n1",
                &Payload {
                    seq,
                    data: data.clone(),
                },
                timeout,
            )
            .await
            .unwrap();
    }

    let mut histogram = new_histogram();
    let started = Instant::now();
    for seq in 0..count as u64 {
        let begin = Instant::now();
        let answer: Payload = client
            .request(
                addr,
                "n1",
                &Payload {
                    seq,
                    data: data.clone(),
                },
                timeout,
            )
            .await
            .unwrap();
        histogram.record(begin.elapsed().as_nanos() as u64).unwrap();
        assert_eq!(answer.seq, seq);
    }
    report(
        &format!("quic request, 1 in flight, {}", placement.label()),
        &histogram,
        started.elapsed(),
    );

    let started = Instant::now();
    let per_worker = count / concurrency;
    let mut workers = tokio::task::JoinSet::new();
    for worker in 0..concurrency {
        let client = client.clone();
        let data = data.clone();
        workers.spawn(async move {
            let mut histogram = new_histogram();
            for index in 0..per_worker {
                let seq = (worker * per_worker + index) as u64;
                let begin = Instant::now();
                let _: Payload = client
                    .request(
                        addr,
                        "n1",
                        &Payload {
                            seq,
                            data: data.clone(),
                        },
                        timeout,
                    )
                    .await
                    .unwrap();
                histogram.record(begin.elapsed().as_nanos() as u64).unwrap();
            }
            histogram
        });
    }
    let mut histogram = new_histogram();
    while let Some(worker) = workers.join_next().await {
        histogram.add(worker.unwrap()).unwrap();
    }
    report(
        &format!(
            "quic request, {concurrency} in flight, {}",
            placement.label()
        ),
        &histogram,
        started.elapsed(),
    );
}

async fn peer_throughput(ca: &certs::CertificateAuthority, count: usize, payload_bytes: usize) {
    let bind = |name: &str| {
        let identity = certs::issue_node_cert(ca, name, &[])
            .unwrap()
            .identity()
            .unwrap();
        let mut config = EndpointConfig::new(identity, ca.roots().unwrap(), loopback());
        config.peer_queue_messages = 4096;
        Endpoint::<Payload>::bind(config).unwrap()
    };
    let (n1, _n1_incoming) = bind("n1");
    let (n2, mut n2_incoming) = bind("n2");
    n1.add_peer(PeerAddress {
        name: "n2".into(),
        addr: n2.local_addr(),
    });
    n2.add_peer(PeerAddress {
        name: "n1".into(),
        addr: n1.local_addr(),
    });
    let data = "x".repeat(payload_bytes);
    // Warm up: the connection is open once one message made it.
    n1.send(
        "n2",
        &Payload {
            seq: 0,
            data: data.clone(),
        },
    )
    .unwrap();
    n2_incoming.recv().await.unwrap();

    let receiver = tokio::spawn(async move {
        for _ in 0..count {
            n2_incoming.recv().await.unwrap();
        }
    });
    let started = Instant::now();
    let mut queue_full = 0u64;
    for seq in 0..count as u64 {
        let message = Payload {
            seq,
            data: data.clone(),
        };
        loop {
            match n1.send("n2", &message) {
                Ok(()) => break,
                Err(SendError::QueueFull { .. }) => {
                    queue_full += 1;
                    tokio::task::yield_now().await;
                }
                Err(error) => panic!("{error}"),
            }
        }
    }
    receiver.await.unwrap();
    let elapsed = started.elapsed();
    let frame_bytes = transport::frame::encode(&Payload { seq: 0, data }, usize::MAX)
        .unwrap()
        .len();
    println!(
        "{:<34} n={count:<7} {:>9.0} msgs/s  {:>7.1} MiB/s of frames ({frame_bytes} B each); sender saw a full queue {queue_full} times (retried)",
        "one-way peer messages",
        count as f64 / elapsed.as_secs_f64(),
        (count * frame_bytes) as f64 / elapsed.as_secs_f64() / (1024.0 * 1024.0),
    );
}

fn main() {
    let requests = env_usize("BENCH_REQUESTS", 20_000);
    let messages = env_usize("BENCH_MESSAGES", 300_000);
    let payload_bytes = env_usize("BENCH_PAYLOAD_BYTES", 100);
    let concurrency = env_usize("BENCH_CONCURRENCY", 16).max(1);
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(0);
    println!("transport bench setup: loopback 127.0.0.1, {cores} cores visible, tokio current_thread runtimes;");
    println!("  'same thread': client and server share one thread; 'server thread': server on its own thread (as across processes);");
    println!(
        "  payload {payload_bytes} B (CBOR struct {{seq, data}}), {requests} requests after {} warm-up, {messages} one-way messages, concurrency {concurrency},",
        requests / 10
    );
    println!(
        "  TLS 1.3 (ring), mutual auth, ECDSA P-256 certificates from rcgen; release profile: {}",
        !cfg!(debug_assertions)
    );
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    tokio::task::LocalSet::new().block_on(&runtime, async {
        let ca = certs::generate_ca().unwrap();
        for placement in [Placement::SameThread, Placement::OtherThread] {
            udp_round_trip(placement, requests, payload_bytes).await;
            request_round_trip(placement, &ca, requests, payload_bytes, concurrency).await;
        }
        peer_throughput(&ca, messages, payload_bytes).await;
    });
}
