//! The sharded store as real processes on loopback: 3 shard controller
//! nodes and replica groups of 3 `node` processes each, driven through
//! `CtrlClient` and `ShardKvClient`; histories checked for linearizability
//! with the checker, and the keep-serving mutation caught.

#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::net::{SocketAddr, UdpSocket};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use kv::client::Outcome;
use kv::command::{Op, OpResult};
use node::client::Connection;
use node::config::PeerConfig;
use node::shard_client::{CtrlClient, ShardClientConfig, ShardKvClient};
use node::ClusterFile;
use serde_json::json;
use shardctrler::{key_to_shard_of, Gid};

/// One `node` process of the deployment.
struct Proc {
    name: String,
    config: PathBuf,
    child: Option<Child>,
}

/// Controllers c1..c3 (ids 1..3) and groups g<gid>n1..3 (ids 1..3 within
/// their group); one CA for all, plus a client certificate.
struct ShardCluster {
    dir: tempfile::TempDir,
    procs: Vec<Proc>,
    groups: BTreeMap<Gid, Vec<PeerConfig>>,
    cluster: ClusterFile,
}

fn free_udp_ports(n: usize) -> Vec<u16> {
    let sockets: Vec<UdpSocket> = (0..n)
        .map(|_| UdpSocket::bind("127.0.0.1:0").unwrap())
        .collect();
    sockets
        .iter()
        .map(|s| s.local_addr().unwrap().port())
        .collect()
}

const RAFT: &str = "[raft]\ntick_ms = 10\nelection_timeout_ticks_min = 30\n\
                    election_timeout_ticks_max = 60\nheartbeat_interval_ticks = 5\n";

impl ShardCluster {
    /// Writes certificates and configs; starts nothing. `mutated` groups run
    /// with `unsafe_keep_serving`.
    fn new(gids: &[Gid], mutated: &[Gid], shards: usize) -> ShardCluster {
        let dir = tempfile::tempdir().unwrap();
        let certs = dir.path().join("certs");
        let mut members: Vec<(Option<Gid>, u64, String)> =
            (1..=3).map(|i| (None, i, format!("c{i}"))).collect();
        for gid in gids {
            members.extend((1..=3).map(|i| (Some(*gid), i, format!("g{gid}n{i}"))));
        }
        let ports = free_udp_ports(members.len());
        let mut args = vec![
            "certs".to_string(),
            "--out".into(),
            certs.display().to_string(),
        ];
        for (_, _, name) in &members {
            args.push("--node".into());
            args.push(format!("{name}=127.0.0.1"));
        }
        args.extend(["--client".into(), "client".into()]);
        let status = Command::new(env!("CARGO_BIN_EXE_node"))
            .args(&args)
            .stdout(Stdio::null())
            .status()
            .unwrap();
        assert!(status.success(), "node certs failed");
        let peer = |i: usize| PeerConfig {
            id: members[i].1,
            name: members[i].2.clone(),
            addr: SocketAddr::from(([127, 0, 0, 1], ports[i])),
        };
        let controllers: Vec<PeerConfig> = (0..3).map(peer).collect();
        let mut groups: BTreeMap<Gid, Vec<PeerConfig>> = BTreeMap::new();
        for (i, (gid, _, _)) in members.iter().enumerate() {
            if let Some(gid) = gid {
                groups.entry(*gid).or_default().push(peer(i));
            }
        }
        let mut procs = Vec::new();
        for (i, (gid, id, name)) in members.iter().enumerate() {
            let me = peer(i);
            let group: &[PeerConfig] = match gid {
                None => &controllers,
                Some(gid) => &groups[gid],
            };
            let service = if gid.is_some() {
                "shardkv"
            } else {
                "shardctrler"
            };
            let mut text = format!(
                "id = {id}\nname = \"{name}\"\nlisten = \"{addr}\"\ndata_dir = \"{name}/data\"\n\
                 service = \"{service}\"\n[tls]\nca = \"certs/ca.pem\"\n\
                 cert = \"certs/{name}.pem\"\nkey = \"certs/{name}.key\"\n",
                addr = me.addr
            );
            for p in group.iter().filter(|p| p.name != *name) {
                text.push_str(&format!(
                    "[[peers]]\nid = {}\nname = \"{}\"\naddr = \"{}\"\n",
                    p.id, p.name, p.addr
                ));
            }
            text.push_str(RAFT);
            text.push_str("[kv]\nmax_raft_state_bytes = 65536\n");
            if gid.is_none() {
                text.push_str(&format!("[shardctrler]\nshards = {shards}\n"));
            }
            if let Some(gid) = gid {
                text.push_str(&format!(
                    "[shardkv]\ngid = {gid}\npoll_ms = 100\nunsafe_keep_serving = {}\n",
                    mutated.contains(gid)
                ));
                for c in &controllers {
                    text.push_str(&format!(
                        "[[shardkv.controllers]]\nid = {}\nname = \"{}\"\naddr = \"{}\"\n",
                        c.id, c.name, c.addr
                    ));
                }
            }
            let config = dir.path().join(format!("{name}.toml"));
            std::fs::write(&config, text).unwrap();
            procs.push(Proc {
                name: name.clone(),
                config,
                child: None,
            });
        }
        let cluster = ClusterFile::new(
            &certs,
            "client",
            controllers
                .iter()
                .map(|c| (c.id, c.name.clone(), c.addr))
                .collect(),
        );
        ShardCluster {
            dir,
            procs,
            groups,
            cluster,
        }
    }

    fn proc_mut(&mut self, name: &str) -> &mut Proc {
        self.procs.iter_mut().find(|p| p.name == name).unwrap()
    }

    fn start(&mut self, name: &str) {
        let log_dir = self.dir.path().join("logs");
        std::fs::create_dir_all(&log_dir).unwrap();
        let proc = self.proc_mut(name);
        assert!(proc.child.is_none(), "{name} already running");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log_dir.join(format!("{name}.log")))
            .unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_node"))
            .args(["run", "--config"])
            .arg(&proc.config)
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        proc.child = Some(child);
    }

    fn start_all(&mut self) {
        let names: Vec<String> = self.procs.iter().map(|p| p.name.clone()).collect();
        for name in names {
            self.start(&name);
        }
    }

    /// kill -9 by the pid of the child we spawned.
    fn kill(&mut self, name: &str) {
        if let Some(mut child) = self.proc_mut(name).child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    fn dump_logs(&self) {
        for p in &self.procs {
            let log = std::fs::read_to_string(
                self.dir.path().join("logs").join(format!("{}.log", p.name)),
            )
            .unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(40).collect();
            eprintln!("===== {} (last 40 lines) =====", p.name);
            for line in tail.into_iter().rev() {
                eprintln!("{line}");
            }
        }
    }

    /// The Join argument for these groups.
    fn join_arg(&self, gids: &[Gid]) -> BTreeMap<Gid, Vec<(String, SocketAddr)>> {
        gids.iter()
            .map(|gid| {
                let servers = self.groups[gid]
                    .iter()
                    .map(|p| (p.name.clone(), p.addr))
                    .collect();
                (*gid, servers)
            })
            .collect()
    }

    /// A connection whose cluster file lists group `gid`'s members (for status).
    fn group_connection(&self, connection: &Connection, gid: Gid) -> Connection {
        let mut cluster = connection.cluster.clone();
        cluster.nodes = self.groups[&gid].clone();
        Connection {
            transport: connection.transport.clone(),
            cluster,
        }
    }
}

impl Drop for ShardCluster {
    fn drop(&mut self) {
        let names: Vec<String> = self.procs.iter().map(|p| p.name.clone()).collect();
        for name in names {
            self.kill(&name);
        }
    }
}

/// The group member that is leader, by status (its name).
async fn group_leader(connection: &Connection, within: Duration) -> Option<(u64, String)> {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        for node in &connection.cluster.nodes {
            if let Ok(report) = connection.status(node.id, Duration::from_millis(300)).await {
                if report.role == "leader" {
                    return Some((node.id, node.name.clone()));
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    None
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

fn client_config() -> ShardClientConfig {
    ShardClientConfig {
        op_timeout: Duration::from_secs(5),
        ..ShardClientConfig::default()
    }
}

/// A key whose shard is `shard` of the default count (keys map by their first byte).
fn key_in(shard: usize, suffix: &str) -> String {
    key_in_of(shard, shardctrler::NSHARDS, suffix)
}

/// A key whose shard is `shard` of `count`.
fn key_in_of(shard: usize, count: usize, suffix: &str) -> String {
    let first = (b'a'..=b'z')
        .find(|b| usize::from(*b) % count == shard)
        .unwrap();
    let key = format!("{}{suffix}", first as char);
    assert_eq!(key_to_shard_of(&key, count), shard);
    key
}

#[test]
fn groups_join_serve_move_and_leave() {
    // A deployment with 6 shards rather than the default 10.
    const SHARDS: usize = 6;
    let mut cluster = ShardCluster::new(&[1, 2], &[], SHARDS);
    cluster.start_all();
    let rt = runtime();
    rt.block_on(async {
        let connection = Connection::open(cluster.cluster.clone()).unwrap();
        let mut admin = CtrlClient::from_connection(&connection, 1, client_config());
        let config = admin.query(None).await.expect("query the controller");
        assert_eq!(config.num, 0);
        admin.join(cluster.join_arg(&[1])).await.expect("join 1");
        let mut client = ShardKvClient::from_connection(&connection, 100, client_config());
        let keys: Vec<String> = (0..SHARDS).map(|s| key_in_of(s, SHARDS, "x")).collect();
        for key in &keys {
            let outcome = client.put(key, &format!("{key}-1")).await;
            assert_eq!(outcome, Outcome::Ok(OpResult::Done), "put {key}");
        }
        admin.join(cluster.join_arg(&[2])).await.expect("join 2");
        let config = admin.query(None).await.unwrap();
        assert_eq!(config.shards.len(), SHARDS);
        assert_eq!(config.shards_of(2).len(), SHARDS / 2, "{config:?}");
        for key in &keys {
            let outcome = client.append(key, "+2").await;
            assert_eq!(outcome, Outcome::Ok(OpResult::Done), "append {key}");
        }
        admin.move_shard(0, 1).await.expect("move");
        admin.leave(vec![1]).await.expect("leave 1");
        let mut reader = ShardKvClient::from_connection(&connection, 101, client_config());
        for key in &keys {
            let outcome = reader.get(key).await;
            assert_eq!(
                outcome,
                Outcome::Ok(OpResult::Value(format!("{key}-1+2"))),
                "get {key}"
            );
        }
        let config = admin.query(None).await.unwrap();
        assert!(config.shards.iter().all(|g| *g == 2), "{config:?}");
        assert!(matches!(
            admin.move_shard(3, 9).await,
            Err(node::shard_client::CtrlError::Invalid(_))
        ));
    });
    // The CLI against the same deployment.
    let cluster_file = cluster.dir.path().join("cluster.toml");
    cluster.cluster.write(&cluster_file).unwrap();
    let shardctl = |args: &[&str]| {
        let output = Command::new(env!("CARGO_BIN_EXE_shardctl"))
            .arg("--cluster")
            .arg(&cluster_file)
            .args(args)
            .output()
            .unwrap();
        (
            output.status.code(),
            String::from_utf8_lossy(&output.stdout).trim().to_string(),
        )
    };
    let key = key_in_of(4, SHARDS, "cli");
    assert_eq!(shardctl(&["put", &key, "from-cli"]).0, Some(0));
    assert_eq!(shardctl(&["get", &key]), (Some(0), "from-cli".to_string()));
    let (code, query) = shardctl(&["query"]);
    assert_eq!(code, Some(0));
    assert!(query.contains("\"shards\""), "{query}");
    assert_eq!(
        shardctl(&["move", "--shard", "99", "--gid", "2"]).0,
        Some(1)
    );
}

/// Records events as JSON lines in the DESIGN.md history format.
#[derive(Clone)]
struct Recorder {
    start: Instant,
    lines: Arc<Mutex<Vec<String>>>,
}

impl Recorder {
    fn new() -> Self {
        Recorder {
            start: Instant::now(),
            lines: Arc::new(Mutex::new(Vec::new())),
        }
    }

    fn record(&self, process: u64, kind: &str, f: &str, key: &str, value: &str) {
        let time = self.start.elapsed().as_nanos() as u64;
        let line = json!({"process": process, "type": kind, "f": f, "key": key, "value": value, "time": time});
        self.lines.lock().unwrap().push(line.to_string());
    }

    fn text(&self) -> String {
        self.lines.lock().unwrap().join("\n")
    }
}

/// One logical process: appends of unique tokens and gets on `keys`; a
/// process whose operation ends unknown is retired and replaced (Jepsen).
/// Returns the acknowledged appends as (key, token).
async fn worker(
    connection: Connection,
    recorder: Recorder,
    keys: Vec<String>,
    worker_index: u64,
    seed: u64,
    until: Instant,
) -> Vec<(String, String)> {
    let mut rng = seed | 1;
    let mut next = move || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng
    };
    let config = ShardClientConfig {
        op_timeout: Duration::from_secs(3),
        ..ShardClientConfig::default()
    };
    let mut process = worker_index;
    let mut client = ShardKvClient::from_connection(&connection, 1000 + process, config.clone());
    let mut acked = Vec::new();
    let mut counter = 0u64;
    while Instant::now() < until {
        counter += 1;
        let key = keys[(next() % keys.len() as u64) as usize].clone();
        let token = format!("p{process}-{counter};");
        let (f, op, value) = if next() % 2 == 0 {
            ("get", Op::Get { key: key.clone() }, String::new())
        } else {
            let op = Op::Append {
                key: key.clone(),
                value: token.clone(),
            };
            ("append", op, token.clone())
        };
        recorder.record(process, "invoke", f, &key, &value);
        match client.call(op).await {
            Outcome::Ok(OpResult::Value(read)) => recorder.record(process, "ok", f, &key, &read),
            Outcome::Ok(_) => {
                recorder.record(process, "ok", f, &key, &value);
                acked.push((key, token));
            }
            Outcome::Fail(_) => recorder.record(process, "fail", f, &key, &value),
            Outcome::Unknown(_) => {
                recorder.record(process, "info", f, &key, &value);
                process += 100;
                client =
                    ShardKvClient::from_connection(&connection, 1000 + process, config.clone());
            }
        }
    }
    acked
}

fn check(history: &str) -> checker::CheckResult {
    let parsed = checker::history::parse_str(
        history,
        checker::Format::Jsonl,
        std::path::Path::new("history.jsonl"),
    )
    .expect("our history parses");
    checker::check_history(
        &parsed,
        &checker::ModelKind::Kv,
        &checker::Options {
            timeout: Some(Duration::from_secs(60)),
            ..checker::Options::default()
        },
    )
    .expect("check")
}

/// Reads every key with a fresh client (retrying until answered) and
/// returns the acknowledged appends missing from the final values.
async fn lost_appends(
    connection: &Connection,
    client_id: u64,
    keys: &[String],
    acked: &[(String, String)],
) -> Vec<(String, String)> {
    let mut reader = ShardKvClient::from_connection(connection, client_id, client_config());
    let mut finals = BTreeMap::new();
    for key in keys {
        let value = loop {
            if let Outcome::Ok(OpResult::Value(value)) = reader.get(key).await {
                break value;
            }
        };
        finals.insert(key.clone(), value);
    }
    acked
        .iter()
        .filter(|(key, token)| !finals[key].contains(token.as_str()))
        .cloned()
        .collect()
}

fn seed() -> u64 {
    let seed = std::env::var("SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x5eed);
    println!("SEED={seed}");
    seed
}

#[test]
fn reconfigurations_and_a_group_leader_kill_keep_every_write_and_linearizability() {
    let seed = seed();
    let mut cluster = ShardCluster::new(&[1, 2], &[], shardctrler::NSHARDS);
    cluster.start_all();
    let rt = runtime();
    let recorder = Recorder::new();
    let keys: Vec<String> = [0, 3, 5, 8].iter().map(|s| key_in(*s, "k")).collect();
    let (acked, lost) = rt.block_on(async {
        let connection = Connection::open(cluster.cluster.clone()).unwrap();
        let mut admin = CtrlClient::from_connection(&connection, 1, client_config());
        admin.join(cluster.join_arg(&[1, 2])).await.expect("join");
        let until = Instant::now() + Duration::from_secs(12);
        let workers: Vec<_> = (0..6)
            .map(|i| {
                tokio::spawn(worker(
                    connection.clone(),
                    recorder.clone(),
                    keys.clone(),
                    i,
                    seed.wrapping_add(i),
                    until,
                ))
            })
            .collect();
        // Reconfigurations while the workers run: moves, a leave and a
        // re-join, and group 1's leader killed (kill -9) right after a
        // change that moves shards away from it, then restarted.
        tokio::time::sleep(Duration::from_secs(1)).await;
        for (shard, gid) in [(0, 1), (3, 2), (5, 1), (8, 2)] {
            admin.move_shard(shard, gid).await.expect("move");
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
        admin.leave(vec![1]).await.expect("leave");
        let group1 = cluster.group_connection(&connection, 1);
        let (_, leader) = group_leader(&group1, Duration::from_secs(5))
            .await
            .expect("group 1 leader");
        cluster.kill(&leader);
        tokio::time::sleep(Duration::from_millis(1500)).await;
        cluster.start(&leader);
        admin.join(cluster.join_arg(&[1])).await.expect("re-join");
        tokio::time::sleep(Duration::from_secs(1)).await;
        admin.move_shard(0, 2).await.expect("move");
        let mut acked = Vec::new();
        for w in workers {
            acked.extend(w.await.unwrap());
        }
        let lost = lost_appends(&connection, 5000, &keys, &acked).await;
        (acked, lost)
    });
    let history = recorder.text();
    assert!(
        acked.len() > 50,
        "too few acknowledged appends: {}",
        acked.len()
    );
    if !lost.is_empty() {
        cluster.dump_logs();
        panic!("acknowledged appends lost: {lost:?} (SEED={seed})");
    }
    let result = check(&history);
    if result.verdict != checker::Verdict::Linearizable {
        let path = std::env::temp_dir().join("shard-history-failed.jsonl");
        let _ = std::fs::write(&path, &history);
        cluster.dump_logs();
        panic!(
            "verdict {:?}; history saved to {} (SEED={seed})",
            result.verdict,
            path.display()
        );
    }
}

#[test]
fn keep_serving_a_handed_over_shard_is_caught() {
    // Both groups keep serving shards they have handed over, until the new
    // owner's deletion reaches them. Clients that still route to the old
    // owner get acknowledgements for appends the new owner never sees, or
    // read values it has since changed: a lost write or a non-linearizable
    // history. Shards move back and forth under load; a few rounds.
    let seed = seed();
    let mut cluster = ShardCluster::new(&[1, 2], &[1, 2], shardctrler::NSHARDS);
    cluster.start_all();
    let rt = runtime();
    let keys: Vec<String> = [2, 7].iter().map(|s| key_in(*s, "m")).collect();
    let caught = rt.block_on(async {
        let connection = Connection::open(cluster.cluster.clone()).unwrap();
        let mut admin = CtrlClient::from_connection(&connection, 1, client_config());
        admin.join(cluster.join_arg(&[1, 2])).await.expect("join");
        for round in 0..3u64 {
            let recorder = Recorder::new();
            let until = Instant::now() + Duration::from_secs(5);
            let workers: Vec<_> = (0..6)
                .map(|i| {
                    tokio::spawn(worker(
                        connection.clone(),
                        recorder.clone(),
                        keys.clone(),
                        round * 10_000 + i,
                        seed.wrapping_add(round * 100 + i),
                        until,
                    ))
                })
                .collect();
            let mut owner = 1;
            while Instant::now() + Duration::from_millis(500) < until {
                owner = 3 - owner;
                for shard in [2, 7] {
                    let _ = admin.move_shard(shard, owner).await;
                }
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
            let mut acked = Vec::new();
            for w in workers {
                acked.extend(w.await.unwrap());
            }
            let lost = lost_appends(&connection, 50_000 + round, &keys, &acked).await;
            let verdict = check(&recorder.text()).verdict;
            println!(
                "round {round}: {} acknowledged appends, {} lost, verdict {verdict:?}",
                acked.len(),
                lost.len()
            );
            if !lost.is_empty() || verdict == checker::Verdict::NotLinearizable {
                return true;
            }
        }
        false
    });
    assert!(
        caught,
        "keep-serving went unnoticed in 3 rounds (SEED={seed})"
    );
}
