//! Throughput of the sharded store with 1, 2 and 3 replica groups, for a
//! read-heavy and an update-heavy workload, as real `node` processes on
//! loopback (3 controllers + 3 nodes per group). Prints the setup and a table.
//!
//! `cargo bench -p node --bench shardkv`. Knobs: SHARD_BENCH_SECS (per
//! cell, default 5), SHARD_BENCH_CLIENTS (default 32), SHARD_BENCH_GROUPS
//! (default 1,2,3), SHARD_BENCH_KEYS (default 200).
//!
//! On a 2-core machine every process shares the same two cores, so more
//! groups add CPU work for the same cores: the table shows what sharding
//! costs or gains here, not what it would on one machine per node.

#![allow(clippy::unwrap_used)]

mod support;

use std::collections::BTreeMap;
use std::net::{SocketAddr, UdpSocket};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use kv::client::Outcome;
use kv::command::Op;
use node::client::Connection;
use node::shard_client::{CtrlClient, ShardClientConfig, ShardKvClient};
use node::ClusterFile;
use support::{env_list, env_u64, new_histogram, percentiles, record, Setup};

struct Deployment {
    _dir: tempfile::TempDir,
    children: Vec<Child>,
    connection_file: ClusterFile,
    groups: BTreeMap<u64, Vec<(String, SocketAddr)>>,
}

impl Drop for Deployment {
    fn drop(&mut self) {
        for child in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn start(group_count: u64) -> Deployment {
    let dir = tempfile::tempdir().unwrap();
    let certs = dir.path().join("certs");
    let mut members: Vec<(Option<u64>, u64, String)> =
        (1..=3).map(|i| (None, i, format!("c{i}"))).collect();
    for gid in 1..=group_count {
        members.extend((1..=3).map(|i| (Some(gid), i, format!("g{gid}n{i}"))));
    }
    let sockets: Vec<UdpSocket> = members
        .iter()
        .map(|_| UdpSocket::bind("127.0.0.1:0").unwrap())
        .collect();
    let addrs: Vec<SocketAddr> = sockets.iter().map(|s| s.local_addr().unwrap()).collect();
    drop(sockets);
    let mut args = vec![
        "certs".to_string(),
        "--out".into(),
        certs.display().to_string(),
    ];
    for (_, _, name) in &members {
        args.extend(["--node".into(), format!("{name}=127.0.0.1")]);
    }
    args.extend(["--client".into(), "client".into()]);
    let status = Command::new(env!("CARGO_BIN_EXE_node"))
        .args(&args)
        .stdout(Stdio::null())
        .status()
        .unwrap();
    assert!(status.success());
    let in_group = |gid: Option<u64>| -> Vec<usize> {
        (0..members.len())
            .filter(|i| members[*i].0 == gid)
            .collect()
    };
    let mut children = Vec::new();
    let mut groups = BTreeMap::new();
    for (i, (gid, id, name)) in members.iter().enumerate() {
        let service = if gid.is_some() {
            "shardkv"
        } else {
            "shardctrler"
        };
        let mut text = format!(
            "id = {id}\nname = \"{name}\"\nlisten = \"{}\"\ndata_dir = \"{name}/data\"\n\
             service = \"{service}\"\n[tls]\nca = \"certs/ca.pem\"\ncert = \"certs/{name}.pem\"\n\
             key = \"certs/{name}.key\"\n",
            addrs[i]
        );
        for j in in_group(*gid).into_iter().filter(|j| *j != i) {
            text.push_str(&format!(
                "[[peers]]\nid = {}\nname = \"{}\"\naddr = \"{}\"\n",
                members[j].1, members[j].2, addrs[j]
            ));
        }
        if let Some(gid) = gid {
            text.push_str(&format!("[shardkv]\ngid = {gid}\n"));
            for j in in_group(None) {
                text.push_str(&format!(
                    "[[shardkv.controllers]]\nid = {}\nname = \"{}\"\naddr = \"{}\"\n",
                    members[j].1, members[j].2, addrs[j]
                ));
            }
            groups
                .entry(*gid)
                .or_insert_with(Vec::new)
                .push((name.clone(), addrs[i]));
        }
        let config = dir.path().join(format!("{name}.toml"));
        std::fs::write(&config, text).unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_node"))
            .args(["run", "--config"])
            .arg(&config)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        children.push(child);
    }
    let connection_file = ClusterFile::new(
        Path::new(&certs),
        "client",
        in_group(None)
            .into_iter()
            .map(|i| (members[i].1, members[i].2.clone(), addrs[i]))
            .collect(),
    );
    Deployment {
        _dir: dir,
        children,
        connection_file,
        groups,
    }
}

struct Cell {
    ops: u64,
    errors: u64,
    elapsed: Duration,
    latency: hdrhistogram::Histogram<u64>,
}

/// Closed loop: `clients` tasks on one thread, each a get with probability
/// `read_share`, otherwise a put of a 100-byte value, on uniform keys.
async fn load(
    connection: &Connection,
    clients: u64,
    keys: u64,
    read_share: f64,
    secs: u64,
    first_client_id: u64,
) -> Cell {
    let until = Instant::now() + Duration::from_secs(secs);
    let start = Instant::now();
    let tasks: Vec<_> = (0..clients)
        .map(|c| {
            let mut client = ShardKvClient::from_connection(
                connection,
                first_client_id + c,
                ShardClientConfig::default(),
            );
            tokio::spawn(async move {
                let mut rng: u64 = (first_client_id + c).wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
                let mut latency = new_histogram();
                let (mut ops, mut errors) = (0u64, 0u64);
                let value = "v".repeat(100);
                while Instant::now() < until {
                    rng ^= rng << 13;
                    rng ^= rng >> 7;
                    rng ^= rng << 17;
                    let key = format!("{}{}", (b'a' + (rng % 26) as u8) as char, rng % keys);
                    let read = (rng >> 20) % 1000 < (read_share * 1000.0) as u64;
                    let op = if read {
                        Op::Get { key }
                    } else {
                        Op::Put {
                            key,
                            value: value.clone(),
                        }
                    };
                    let began = Instant::now();
                    match client.call(op).await {
                        Outcome::Ok(_) => {
                            ops += 1;
                            record(&mut latency, began.elapsed());
                        }
                        _ => errors += 1,
                    }
                }
                (ops, errors, latency)
            })
        })
        .collect();
    let mut cell = Cell {
        ops: 0,
        errors: 0,
        elapsed: Duration::ZERO,
        latency: new_histogram(),
    };
    for task in tasks {
        let (ops, errors, latency) = task.await.unwrap();
        cell.ops += ops;
        cell.errors += errors;
        cell.latency.add(&latency).unwrap();
    }
    cell.elapsed = start.elapsed();
    cell
}

fn main() {
    let secs = env_u64("SHARD_BENCH_SECS", 5);
    let clients = env_u64("SHARD_BENCH_CLIENTS", 32);
    let keys = env_u64("SHARD_BENCH_KEYS", 200);
    let group_counts = env_list("SHARD_BENCH_GROUPS", &[1, 2, 3]);
    let workloads = [("read-heavy", 0.95), ("update-heavy", 0.5)];
    let mut setup = Setup::machine("shardkv");
    setup.add(
        "deployment",
        "3 shard controllers + N replica groups of 3 node processes each, all on 127.0.0.1 \
         (QUIC + mutual TLS, fsync on); 10 shards balanced over the groups",
    );
    setup.add_node_defaults();
    setup.add(
        "load",
        format!(
            "{clients} closed-loop clients on one thread, {keys} keys over all shards, uniform; \
             gets and puts of 100-byte values both go through the owning group's log; {secs} s per cell"
        ),
    );
    setup.add(
        "workloads",
        "read-heavy 95% get / 5% put; update-heavy 50% get / 50% put",
    );
    setup.print();
    println!(
        "{:<7} {:<13} {:>10} {:>8}  latency",
        "groups", "workload", "ops/s", "errors"
    );
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    for groups in group_counts {
        let deployment = start(groups as u64);
        rt.block_on(async {
            let connection = Connection::open(deployment.connection_file.clone()).unwrap();
            let mut admin =
                CtrlClient::from_connection(&connection, 1, ShardClientConfig::default());
            admin
                .join(deployment.groups.clone())
                .await
                .expect("join the groups");
            // Warm up: every group has its shards and a leader.
            let _ = load(&connection, 8, keys, 0.0, 2, 10_000).await;
            for (i, (name, read_share)) in workloads.iter().enumerate() {
                let cell = load(
                    &connection,
                    clients,
                    keys,
                    *read_share,
                    secs,
                    100_000 * (i as u64 + 1),
                )
                .await;
                println!(
                    "{:<7} {:<13} {:>10.0} {:>8}  {}",
                    groups,
                    name,
                    cell.ops as f64 / cell.elapsed.as_secs_f64(),
                    cell.errors,
                    percentiles(&cell.latency)
                );
            }
        });
        drop(deployment);
    }
}
