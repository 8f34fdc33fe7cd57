//! The two systems under comparison behind one small client trait, so the same load generator
//! drives both: [`BenchClient`] over our `node::client::KvClient` and over the `etcd-client`
//! crate, plus how each is started, found (its leader) and stopped on the cluster.
//!
//! **How clients connect** ([`Connect`]), the same rule for both systems:
//! * `leader` (default): every request goes to the current leader. Our KV's clients start at
//!   the leader and keep following leader hints; etcd's client is given only the leader's
//!   endpoint. Neither pays a forwarding hop.
//! * `all`: clients are spread over every member. etcd's client balances its requests over
//!   all endpoints, and followers forward writes to the leader and run ReadIndex for
//!   linearizable reads. Each of our clients sends every request first to its home member: a
//!   follower serves a read itself after a ReadIndex round forwarded to the leader (still
//!   linearizable), and answers a write with a leader hint, so the client retries it there.
//!
//! Both systems share one connection per member among all logical clients (one QUIC
//! connection for ours, one HTTP/2 connection for etcd), multiplexing their requests.

use std::future::Future;
use std::net::SocketAddr;
use std::path::Path;
use std::pin::Pin;
use std::str::FromStr;
use std::time::Duration;

use kv::client::{ClerkConfig, Outcome};
use kv::command::{Op as KvOp, OpResult};
use node::client::{Connection, KvClient};

use crate::cluster::Node;

/// A request in flight: `Ok` when the system confirmed it, else why not.
pub type CallFuture<'a> = Pin<Box<dyn Future<Output = Result<(), String>> + Send + 'a>>;

/// One logical client of a system under test: one operation at a time. A read of a preloaded
/// key that comes back empty is an error (the system lost the record or misrouted the read).
pub trait BenchClient: Send {
    fn read<'a>(&'a mut self, key: &'a str) -> CallFuture<'a>;
    fn update<'a>(&'a mut self, key: &'a str, value: String) -> CallFuture<'a>;
}

/// Which system.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum System {
    /// Our Raft KV (`node` daemon).
    Ours,
    /// etcd 3.4 from the Debian package.
    Etcd,
}

impl System {
    pub fn name(self) -> &'static str {
        match self {
            System::Ours => "ours",
            System::Etcd => "etcd",
        }
    }
}

impl FromStr for System {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim() {
            "ours" | "kv" => Ok(System::Ours),
            "etcd" => Ok(System::Etcd),
            other => Err(format!("unknown system `{other}` (available: ours, etcd)")),
        }
    }
}

/// Where clients send requests (see the module doc).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Connect {
    Leader,
    All,
}

impl Connect {
    pub fn name(self) -> &'static str {
        match self {
            Connect::Leader => "leader",
            Connect::All => "all",
        }
    }

    /// The sentence the report and results.json carry.
    pub fn describe(self) -> &'static str {
        match self {
            Connect::Leader => {
                "leader only: every request of both systems goes to the current leader \
                 (etcd's client gets only the leader's endpoint; our clients start at the leader \
                 and follow leader hints); one shared connection per member for all clients"
            }
            Connect::All => {
                "all members: clients are spread over the 3 members; followers of both serve \
                 linearizable reads after a ReadIndex round with the leader; etcd's followers \
                 forward writes to the leader, ours answer a write with a leader hint and the \
                 client retries it at the leader; one shared connection per member for all clients"
            }
        }
    }
}

impl FromStr for Connect {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "leader" => Ok(Connect::Leader),
            "all" => Ok(Connect::All),
            other => Err(format!(
                "unknown connection mode `{other}` (available: leader, all)"
            )),
        }
    }
}

/// Gives up on an operation after `limit` (an unknown outcome counts as an error here).
async fn within<T, E: std::fmt::Display>(
    limit: Duration,
    call: impl Future<Output = Result<T, E>>,
) -> Result<T, String> {
    match tokio::time::timeout(limit, call).await {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err("timeout".into()),
    }
}

/// A client of our KV.
struct OursClient {
    client: KvClient,
    /// First node of every request in `Connect::All` mode.
    home: Option<u64>,
    op_timeout: Duration,
}

impl OursClient {
    async fn call(&mut self, op: KvOp) -> Result<OpResult, String> {
        let limit = self.op_timeout + Duration::from_secs(1);
        match tokio::time::timeout(limit, self.client.call_at(op, self.home)).await {
            Ok(Outcome::Ok(result)) => Ok(result),
            Ok(Outcome::Fail(reason)) => Err(format!("fail: {reason:?}")),
            Ok(Outcome::Unknown(reason)) => Err(format!("unknown: {reason:?}")),
            Err(_) => Err("timeout".into()),
        }
    }
}

impl BenchClient for OursClient {
    fn read<'a>(&'a mut self, key: &'a str) -> CallFuture<'a> {
        Box::pin(async move {
            match self.call(KvOp::Get { key: key.into() }).await? {
                OpResult::Value(v) if !v.is_empty() => Ok(()),
                OpResult::Value(_) => Err(format!("read of {key} found nothing")),
                other => Err(format!("read answered {other:?}")),
            }
        })
    }

    fn update<'a>(&'a mut self, key: &'a str, value: String) -> CallFuture<'a> {
        Box::pin(async move {
            self.call(KvOp::Put {
                key: key.into(),
                value,
            })
            .await
            .map(|_| ())
        })
    }
}

/// Opens `count` clients of our KV. Must run inside the runtime (and network namespace) that
/// will drive them. `first_client_id` keeps ids unique within the cluster's lifetime: the
/// servers deduplicate requests by client id.
pub async fn open_ours(
    certs_dir: &Path,
    nodes: &[Node],
    leader: &str,
    connect: Connect,
    count: usize,
    first_client_id: u64,
    op_timeout: Duration,
) -> Result<Vec<Box<dyn BenchClient>>, String> {
    let mut file = crate::ourkv::cluster_file(certs_dir, nodes);
    // The clerk presumes the first node leads: put the leader first.
    if let Some(at) = file.nodes.iter().position(|n| n.name == leader) {
        file.nodes.rotate_left(at);
    }
    let ids: Vec<u64> = nodes
        .iter()
        .filter_map(|n| file.nodes.iter().find(|p| p.name == n.name).map(|p| p.id))
        .collect();
    let connection = Connection::open(file).map_err(|e| format!("opening our client: {e}"))?;
    let config = ClerkConfig {
        attempt_timeout: Duration::from_millis(1000).min(op_timeout),
        op_timeout: Some(op_timeout),
        ..ClerkConfig::default()
    };
    let mut clients: Vec<Box<dyn BenchClient>> = Vec::with_capacity(count);
    for i in 0..count {
        let id = first_client_id + i as u64;
        let home = match connect {
            Connect::Leader => None,
            Connect::All => ids.get(i % ids.len().max(1)).copied(),
        };
        clients.push(Box::new(OursClient {
            client: KvClient::new(connection.clone(), id, config.clone(), id),
            home,
            op_timeout,
        }));
    }
    Ok(clients)
}

/// A client of etcd (a clone of one shared `etcd_client::KvClient`).
struct EtcdClient {
    kv: etcd_client::KvClient,
    op_timeout: Duration,
}

impl BenchClient for EtcdClient {
    fn read<'a>(&'a mut self, key: &'a str) -> CallFuture<'a> {
        Box::pin(async move {
            // No options: etcd's default read is linearizable (ReadIndex through the leader).
            let response = within(self.op_timeout, self.kv.get(key, None)).await?;
            match response.kvs().first() {
                Some(kv) if !kv.value().is_empty() => Ok(()),
                _ => Err(format!("read of {key} found nothing")),
            }
        })
    }

    fn update<'a>(&'a mut self, key: &'a str, value: String) -> CallFuture<'a> {
        Box::pin(async move {
            within(self.op_timeout, self.kv.put(key, value, None))
                .await
                .map(|_| ())
        })
    }
}

/// etcd's client URL of a member.
pub fn etcd_url(node: &Node) -> String {
    format!(
        "http://{}",
        SocketAddr::from((node.ip, crate::etcd::CLIENT_PORT))
    )
}

/// Opens `count` etcd clients sharing one `etcd_client::Client`. Must run inside the runtime
/// (and network namespace) that will drive them.
pub async fn open_etcd(
    nodes: &[Node],
    leader: &str,
    connect: Connect,
    count: usize,
    op_timeout: Duration,
) -> Result<Vec<Box<dyn BenchClient>>, String> {
    let endpoints: Vec<String> = match connect {
        Connect::Leader => nodes
            .iter()
            .filter(|n| n.name == leader)
            .map(etcd_url)
            .collect(),
        Connect::All => nodes.iter().map(etcd_url).collect(),
    };
    if endpoints.is_empty() {
        return Err(format!("leader {leader} is not a node of the cluster"));
    }
    let options =
        etcd_client::ConnectOptions::new().with_connect_timeout(Duration::from_millis(1000));
    let client = etcd_client::Client::connect(endpoints.clone(), Some(options))
        .await
        .map_err(|e| format!("connecting to {endpoints:?}: {e}"))?;
    Ok((0..count)
        .map(|_| {
            Box::new(EtcdClient {
                kv: client.kv_client(),
                op_timeout,
            }) as Box<dyn BenchClient>
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_parse() {
        assert_eq!("ours".parse::<System>(), Ok(System::Ours));
        assert_eq!("etcd".parse::<System>(), Ok(System::Etcd));
        assert!("redis".parse::<System>().is_err());
        assert_eq!("all".parse::<Connect>(), Ok(Connect::All));
        assert!("some".parse::<Connect>().is_err());
        let node = Node {
            name: "n1".into(),
            host: "h".into(),
            ip: std::net::Ipv4Addr::new(10, 1, 2, 11),
        };
        assert_eq!(etcd_url(&node), "http://10.1.2.11:2379");
    }
}
