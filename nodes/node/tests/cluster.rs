//! Real `node` processes on loopback: elections, replication, kill -9 of the
//! leader, restart and catch-up (by snapshot when far behind), whole-cluster
//! restart, refused rogue clients and garbage packets.

mod common;

use std::time::Duration;

use common::{status_of, wait_for_leader, LocalCluster};
use kv::client::{ClerkConfig, Outcome};
use kv::command::{Op, OpResult};
use node::client::{Connection, KvClient};

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

fn put(key: &str, value: &str) -> Op {
    Op::Put {
        key: key.into(),
        value: value.into(),
    }
}

fn get(key: &str) -> Op {
    Op::Get { key: key.into() }
}

async fn must_get(client: &mut KvClient, key: &str) -> String {
    match client.call(get(key)).await {
        Outcome::Ok(OpResult::Value(value)) => value,
        other => panic!("get {key}: {other:?}"),
    }
}

async fn must_put(client: &mut KvClient, key: &str, value: &str) {
    let outcome = client.call(put(key, value)).await;
    assert_eq!(outcome, Outcome::Ok(OpResult::Done), "put {key}={value}");
}

fn client(connection: &Connection, id: u64) -> KvClient {
    KvClient::new(connection.clone(), id, ClerkConfig::default(), id)
}

#[test]
fn three_nodes_replicate_survive_leader_kill_and_whole_cluster_restart() {
    let mut cluster = LocalCluster::new(3, "");
    cluster.start_all();
    let rt = runtime();
    let ok = rt.block_on(async {
        let connection = Connection::open(cluster.cluster.clone()).expect("client");
        let leader = wait_for_leader(&connection, &[1, 2, 3], Duration::from_secs(10))
            .await
            .expect("a leader within 10 s");
        let mut c = client(&connection, 1);
        for i in 0..20 {
            must_put(&mut c, "k", &format!("v{i}")).await;
        }
        assert_eq!(must_get(&mut c, "k").await, "v19");

        // kill -9 the leader: a new one is elected, nothing committed is lost.
        cluster.kill(leader);
        let others: Vec<u64> = [1, 2, 3].into_iter().filter(|id| *id != leader).collect();
        let new_leader = wait_for_leader(&connection, &others, Duration::from_secs(10))
            .await
            .expect("a new leader within 10 s of killing the old one");
        assert_ne!(new_leader, leader);
        assert_eq!(must_get(&mut c, "k").await, "v19");
        must_put(&mut c, "k", "after-kill").await;

        // The killed node restarts and catches up.
        cluster.start(leader);
        let mut caught_up = false;
        for _ in 0..200 {
            let lead = status_of(&connection, new_leader).await;
            let back = status_of(&connection, leader).await;
            if let (Some(lead), Some(back)) = (lead, back) {
                if back.applied_index >= lead.commit_index && lead.commit_index > 0 {
                    caught_up = true;
                    break;
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert!(caught_up, "restarted node {leader} did not catch up");

        // Whole-cluster restart (clean SIGTERM): every committed write survives.
        for id in 1..=3 {
            assert_eq!(
                cluster.stop(id),
                Some(0),
                "node {id} did not exit cleanly on SIGTERM"
            );
        }
        cluster.start_all();
        wait_for_leader(&connection, &[1, 2, 3], Duration::from_secs(10))
            .await
            .expect("a leader after restart");
        let mut c = client(&connection, 2);
        assert_eq!(must_get(&mut c, "k").await, "after-kill");
        true
    });
    if !ok {
        cluster.dump_logs();
    }
}

#[test]
fn five_nodes_elect_and_replicate_with_two_down() {
    let mut cluster = LocalCluster::new(5, "");
    cluster.start_all();
    let rt = runtime();
    rt.block_on(async {
        let connection = Connection::open(cluster.cluster.clone()).expect("client");
        let leader = wait_for_leader(&connection, &[1, 2, 3, 4, 5], Duration::from_secs(10))
            .await
            .expect("a leader within 10 s");
        let mut c = client(&connection, 7);
        must_put(&mut c, "a", "1").await;
        // Two followers down: a majority (3 of 5) still commits.
        let followers: Vec<u64> = (1..=5).filter(|id| *id != leader).take(2).collect();
        for id in &followers {
            cluster.kill(*id);
        }
        must_put(&mut c, "a", "2").await;
        assert_eq!(must_get(&mut c, "a").await, "2");
    });
}

#[test]
fn far_behind_follower_catches_up_by_snapshot() {
    // Tiny maxraftstate so the leader compacts its log while node 3 is down.
    let mut cluster = LocalCluster::new(3, "[kv]\nmax_raft_state_bytes = 4096\n");
    cluster.start_all();
    let rt = runtime();
    rt.block_on(async {
        let connection = Connection::open(cluster.cluster.clone()).expect("client");
        let leader = wait_for_leader(&connection, &[1, 2, 3], Duration::from_secs(10))
            .await
            .expect("leader");
        let lagging = if leader == 3 { 2 } else { 3 };
        cluster.kill(lagging);
        let mut c = client(&connection, 9);
        for i in 0..300 {
            must_put(&mut c, &format!("k{}", i % 10), &format!("value-{i}")).await;
        }
        let leader_now = wait_for_leader(
            &connection,
            &[1, 2, 3]
                .into_iter()
                .filter(|id| *id != lagging)
                .collect::<Vec<_>>(),
            Duration::from_secs(5),
        )
        .await
        .expect("leader");
        let lead = status_of(&connection, leader_now).await.expect("status");
        assert!(
            lead.snapshot_index > 0,
            "the leader never snapshotted: {lead:?}"
        );
        cluster.start(lagging);
        let mut report = None;
        for _ in 0..200 {
            if let Some(r) = status_of(&connection, lagging).await {
                if r.applied_index >= lead.commit_index {
                    report = Some(r);
                    break;
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let report = report.expect("the lagging node caught up");
        assert!(
            report.snapshot_index > 0,
            "the lagging node caught up without a snapshot: {report:?}"
        );
        for i in 290..300 {
            assert_eq!(
                must_get(&mut c, &format!("k{}", i % 10)).await,
                format!("value-{i}")
            );
        }
    });
}

#[test]
fn rogue_clients_and_garbage_packets_are_refused_while_the_cluster_serves() {
    let mut cluster = LocalCluster::new(3, "");
    cluster.start_all();
    // A second CA and a client certificate from it.
    let rogue_dir = cluster.path().join("rogue");
    let status = std::process::Command::new(env!("CARGO_BIN_EXE_node"))
        .args(["certs", "--out"])
        .arg(&rogue_dir)
        .args(["--client", "client"])
        .stdout(std::process::Stdio::null())
        .status()
        .expect("node certs");
    assert!(status.success());
    let rt = runtime();
    rt.block_on(async {
        let connection = Connection::open(cluster.cluster.clone()).expect("client");
        wait_for_leader(&connection, &[1, 2, 3], Duration::from_secs(10))
            .await
            .expect("leader");
        // The rogue client trusts the real CA (so it could verify the nodes)
        // but presents a certificate from its own CA.
        let mut rogue_cluster = cluster.cluster.clone();
        rogue_cluster.tls.cert = rogue_dir.join("client.pem");
        rogue_cluster.tls.key = rogue_dir.join("client.key");
        let rogue = Connection::open(rogue_cluster).expect("rogue client");
        let refused = rogue.status(1, Duration::from_secs(2)).await;
        assert!(
            refused.is_err(),
            "a client with a foreign certificate was served"
        );

        // Garbage UDP datagrams at every node.
        let socket = std::net::UdpSocket::bind("127.0.0.1:0").expect("udp");
        for node in &cluster.nodes {
            for len in [0usize, 1, 7, 100, 1200, 1500] {
                let garbage: Vec<u8> = (0..len).map(|i| (i * 31 + 7) as u8).collect();
                let _ = socket.send_to(&garbage, node.addr);
            }
        }
        let mut c = client(&connection, 11);
        must_put(&mut c, "x", "still-serving").await;
        assert_eq!(must_get(&mut c, "x").await, "still-serving");
    });
}

#[test]
fn bad_config_is_exit_status_2_naming_the_field() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("node.toml");
    std::fs::write(
        &config,
        "id = 0\nname = \"n1\"\nlisten = \"127.0.0.1:1\"\ndata_dir = \"d\"\nservice = \"kv\"\n\
         [tls]\nca = \"a\"\ncert = \"b\"\nkey = \"c\"\n",
    )
    .expect("write");
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_node"))
        .args(["run", "--config"])
        .arg(&config)
        .output()
        .expect("run node");
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("`id`"),
        "stderr does not name the field: {stderr}"
    );
}
