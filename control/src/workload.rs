//! Workloads for the stand-in database, and the key-value generator later reused for the KV
//! service.
//!
//! [`KvGenerator`]: get/put/append over a few keys with values unique per process and
//! operation (`x<process>-<n>`), so a lost or duplicated write is visible to the checker.
//! [`StandinClients`]: UDP clients of the stand-in daemon. The stand-in is one unreplicated
//! in-memory store, so every client talks to the first node; killing that node loses data,
//! and the checker says so — which is what a stand-in is for.

use std::net::{SocketAddr, UdpSocket};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde_json::Value;

use crate::analyze::lost_writes::Semantics;
use crate::client::{Client, ClientFactory, Completion, Generator, Op, Workload};
use crate::cluster::Node;
use crate::db::STANDIN_PORT;

/// get/put/append over `keys` keys at a time, unique written values. Keys rotate: after
/// [`KvGenerator::OPS_PER_KEY_WINDOW`] operations a generator moves to the next `keys` keys,
/// so appended values stay short and each key's history stays small enough to check (as
/// Jepsen's independent keys do). Generators advance at about the same pace, so concurrent
/// processes share their window.
#[derive(Debug)]
pub struct KvGenerator {
    rng: ChaCha8Rng,
    keys: usize,
    counter: u64,
}

impl KvGenerator {
    pub const OPS_PER_KEY_WINDOW: u64 = 100;

    pub fn new(seed: u64, keys: usize) -> Self {
        Self {
            rng: ChaCha8Rng::seed_from_u64(seed),
            keys: keys.max(1),
            counter: 0,
        }
    }
}

impl Generator for KvGenerator {
    fn next_op(&mut self, process: u64) -> Op {
        let window = self.counter / Self::OPS_PER_KEY_WINDOW;
        let key = format!(
            "k{}",
            window * self.keys as u64 + self.rng.gen_range(0..self.keys as u64)
        );
        self.counter += 1;
        let unique = format!("x{process}-{}", self.counter);
        match self.rng.gen_range(0..3) {
            0 => Op {
                f: "get".into(),
                key: Some(key),
                value: Value::Null,
            },
            1 => Op {
                f: "put".into(),
                key: Some(key),
                value: Value::String(unique),
            },
            _ => Op {
                f: "append".into(),
                key: Some(key),
                value: Value::String(unique),
            },
        }
    }
}

/// The read the final-read phase makes of `key` for a workload checked with checker model
/// `model`: `get` for `kv`, `read` for the registers. `None` for a model whose writes the
/// lost-writes check cannot judge (the runner then skips the phase).
pub fn final_read_op(model: &str, key: &str) -> Option<Op> {
    let f = match Semantics::for_model(model)? {
        Semantics::Kv => "get",
        Semantics::Register => "read",
    };
    Some(Op {
        f: f.into(),
        key: Some(key.to_string()),
        value: Value::Null,
    })
}

/// The `kv` workload against the stand-in: [`KvGenerator`] over 5 keys at a time, UDP
/// clients to the first node, checked with the `kv` model.
#[derive(Debug, Clone, Copy, Default)]
pub struct StandinKv;

impl Workload for StandinKv {
    fn name(&self) -> &str {
        "kv"
    }

    fn model(&self) -> &str {
        "kv"
    }

    fn generator(&self, seed: u64) -> Box<dyn Generator> {
        Box::new(KvGenerator::new(seed, 5))
    }

    fn clients(&self, nodes: &[Node]) -> Arc<dyn ClientFactory> {
        Arc::new(StandinClients {
            primary: nodes.first().cloned().unwrap_or(Node {
                name: "none".into(),
                host: "0.0.0.0".into(),
                ip: std::net::Ipv4Addr::UNSPECIFIED,
            }),
        })
    }
}

/// Opens UDP clients of the stand-in, all aimed at `primary`.
#[derive(Debug, Clone)]
pub struct StandinClients {
    pub primary: Node,
}

impl ClientFactory for StandinClients {
    fn open(&self, _node: &Node, _process: u64) -> Result<Box<dyn Client>, String> {
        let target = SocketAddr::from((self.primary.ip, STANDIN_PORT));
        Ok(Box::new(StandinClient {
            socket: open_socket(target)?,
            target,
        }))
    }
}

fn open_socket(target: SocketAddr) -> Result<UdpSocket, String> {
    let socket = UdpSocket::bind("0.0.0.0:0").map_err(|e| format!("binding client socket: {e}"))?;
    socket
        .connect(target)
        .map_err(|e| format!("connecting to {target}: {e}"))?;
    Ok(socket)
}

/// One process's UDP client. Requests carry no id, so after a timeout the socket is replaced:
/// a late answer then arrives at a closed port instead of being taken for the next answer.
#[derive(Debug)]
pub struct StandinClient {
    socket: UdpSocket,
    target: SocketAddr,
}

impl Client for StandinClient {
    fn invoke(&mut self, op: &Op, timeout: Duration) -> Completion {
        let key = op.key.clone().unwrap_or_default();
        let request = match (op.f.as_str(), &op.value) {
            ("get", _) => format!("get {key}"),
            ("put", Value::String(v)) => format!("put {key} {v}"),
            ("append", Value::String(v)) => format!("append {key} {v}"),
            _ => return Completion::Fail(format!("stand-in cannot do {} {:?}", op.f, op.value)),
        };
        // A read that never arrived changed nothing: its timeout is a definite failure.
        let unknown = |message: String| {
            if op.f == "get" {
                Completion::Fail(message)
            } else {
                Completion::Info(message)
            }
        };
        if let Err(e) = self.socket.send(request.as_bytes()) {
            return Completion::Fail(format!("send: {e}"));
        }
        let deadline = Instant::now() + timeout;
        let mut buffer = [0u8; 8192];
        let remaining = deadline.saturating_duration_since(Instant::now());
        if self
            .socket
            .set_read_timeout(Some(remaining.max(Duration::from_millis(1))))
            .is_err()
        {
            return unknown("cannot set timeout".into());
        }
        match self.socket.recv(&mut buffer) {
            Ok(n) => {
                let answer = String::from_utf8_lossy(&buffer[..n]);
                match answer.strip_prefix("ok") {
                    Some(rest) if op.f == "get" => Completion::Ok(Value::String(
                        rest.strip_prefix(' ').unwrap_or(rest).to_string(),
                    )),
                    Some(_) => Completion::Ok(op.value.clone()),
                    None => Completion::Fail(answer.into_owned()),
                }
            }
            Err(e) => {
                let completion =
                    unknown(format!("no answer within {} ms: {e}", timeout.as_millis()));
                match open_socket(self.target) {
                    Ok(socket) => self.socket = socket,
                    // Keep the old socket; the runner retires this process after `info`
                    // anyway, and a `fail` read changes nothing it could misreport.
                    Err(_) => {
                        return Completion::Info(format!("{completion:?}; could not reopen socket"))
                    }
                }
                completion
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn final_reads_use_the_model_s_read() {
        assert_eq!(final_read_op("kv", "k3").unwrap().f, "get");
        for model in ["register", "cas-register"] {
            let op = final_read_op(model, "r1").unwrap();
            assert_eq!((op.f.as_str(), op.key.as_deref()), ("read", Some("r1")));
        }
        assert!(final_read_op("set", "s").is_none());
    }

    #[test]
    fn generated_writes_are_unique_and_replayable() {
        let mut a = KvGenerator::new(5, 3);
        let mut b = KvGenerator::new(5, 3);
        let mut written = std::collections::BTreeSet::new();
        for i in 0..300 {
            let op = a.next_op(i % 7);
            assert_eq!(op, b.next_op(i % 7));
            let window = i / KvGenerator::OPS_PER_KEY_WINDOW;
            let key: u64 = op
                .key
                .as_deref()
                .unwrap()
                .trim_start_matches('k')
                .parse()
                .unwrap();
            assert_eq!(key / 3, window, "op {i} key {key}");
            if op.f != "get" {
                assert!(
                    written.insert(op.value.to_string()),
                    "duplicate value {:?}",
                    op.value
                );
            }
        }
        assert!(written.len() > 100);
    }
}
