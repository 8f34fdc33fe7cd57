//! End-to-end: a real local cluster (namespaces, bridge, sshd per node), the stand-in daemon
//! driven over SSH, iptables partitions, pauses, kills, log collection and teardown.
//!
//! Needs root (skipped with a printed reason otherwise) and `make deps` (fails with a clear
//! message if a program is missing). Each test uses its own random tag, so they run in
//! parallel; each cluster is torn down by its Drop guard even when an assertion fails.

// Test helpers are test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::BTreeSet;
use std::fs;
use std::net::{SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::time::Duration;

use control::cluster::hosts::{SshCluster, SshClusterOptions};
use control::cluster::local::{LocalCluster, LocalOptions};
use control::cluster::{new_tag, stale, Cluster, Node, BASE_DIR};
use control::daemon::ProcessState;
use control::db::{collect_logs, standin_db, Db, ProcessDb, STANDIN_PORT};
use control::nemesis::apply::{ClusterNemesis, CHAIN};
use control::nemesis::{grudge, Fault, Nemesis};
use control::results::RunDir;
use control::ssh::{Remote, RemoteError, Ssh};
use control::{net, netns};

fn ready() -> bool {
    common::ready(&[])
}

fn standin() -> ProcessDb {
    standin_db(PathBuf::from(env!("CARGO_BIN_EXE_standin")))
}

/// Probes per check: a node "answers" if any of these gets a reply and is "silent" only if
/// none does, so a loaded machine (tests run beside compilers) cannot fake either verdict
/// with one slow reply.
const PROBE_ATTEMPTS: u32 = 5;

/// Sends `ping` from the control namespace (where the test's clients live) to a node.
fn probe_from_control(cluster: &LocalCluster, node: &Node) -> Option<String> {
    let target = SocketAddr::from((node.ip, STANDIN_PORT));
    netns::run_in(Some(&cluster.namespace("ctl")), move || {
        let socket = UdpSocket::bind("0.0.0.0:0").ok()?;
        socket
            .set_read_timeout(Some(Duration::from_millis(300)))
            .ok()?;
        let mut buffer = [0u8; 256];
        for _ in 0..PROBE_ATTEMPTS {
            socket.send_to(b"ping", target).ok()?;
            if let Ok((n, _)) = socket.recv_from(&mut buffer) {
                return Some(String::from_utf8_lossy(&buffer[..n]).into_owned());
            }
        }
        None
    })
    .expect("enter control namespace")
}

/// Runs the stand-in's probe on node `from` against node `to`: true when `to` answered.
fn probe_between(cluster: &dyn Cluster, from: &Node, to: &Node) -> bool {
    let binary = format!("{}/bin/standin", cluster.node_dir(from));
    let script = format!(
        "for i in $(seq {PROBE_ATTEMPTS}); do {binary} probe {}:{STANDIN_PORT} --timeout-ms 300 && exit 0; done; exit 1",
        to.ip
    );
    let output = cluster
        .ssh()
        .exec_status(from, &script)
        .expect("ssh to the probing node");
    output.success()
}

fn pid_of(db: &dyn Db, cluster: &dyn Cluster, node: &Node) -> u32 {
    match db.state(cluster, node).unwrap() {
        ProcessState::Running(pid) => pid,
        other => panic!("{} not running: {other:?}", node.name),
    }
}

fn alive(pid: u32) -> bool {
    stale::process_start_ticks(pid).is_some()
}

fn sshd_pids(tag: &str, nodes: &[Node]) -> Vec<u32> {
    nodes
        .iter()
        .map(|n| {
            let path = format!("{BASE_DIR}/{tag}/sshd/{}/sshd.pid", n.name);
            fs::read_to_string(&path).unwrap().trim().parse().unwrap()
        })
        .collect()
}

#[test]
fn local_cluster_lifecycle_partition_pause_kill_logs_teardown() {
    if !ready() {
        return;
    }
    let mut cluster = LocalCluster::provision(&LocalOptions {
        nodes: 3,
        ..LocalOptions::default()
    })
    .unwrap();
    let tag = cluster.tag().to_string();
    let nodes = cluster.nodes().to_vec();
    let (n1, n2, n3) = (&nodes[0], &nodes[1], &nodes[2]);
    eprintln!("tag {tag}, subnet {}", cluster.subnet());

    // The network: our namespaces exist, the host got no address or route in our subnet.
    let namespaces = stale::our_namespaces(Some(&tag));
    assert_eq!(namespaces.len(), 5, "{namespaces:?}");
    let host = net::read_host_networks().unwrap();
    assert!(
        !host.iter().any(|h| h.overlaps(&cluster.subnet())),
        "host sees {host:?}"
    );

    // SSH: commands run as root inside the node's namespace; failures are typed.
    let ssh = cluster.ssh();
    let who = ssh.exec(n2, "id -u; ip -4 -o addr show dev eth0").unwrap();
    assert!(who.starts_with("0\n"), "{who}");
    assert!(who.contains(&n2.ip.to_string()), "{who}");
    match ssh.exec(n1, "echo oops >&2; exit 3") {
        Err(RemoteError::Command { code, stderr, .. }) => {
            assert_eq!(code, Some(3));
            assert_eq!(stderr, "oops");
        }
        other => panic!("expected a command error, got {other:?}"),
    }

    // Lifecycle: install, start, every node answers from the control side.
    let db = standin();
    for node in &nodes {
        db.setup(&cluster, node).unwrap();
        db.start(&cluster, node).unwrap();
    }
    for node in &nodes {
        let answer = probe_from_control(&cluster, node).expect("node answers");
        assert!(
            answer.starts_with(&format!("pong {}", node.name)),
            "{answer}"
        );
    }
    let first_pids: Vec<u32> = nodes.iter().map(|n| pid_of(&db, &cluster, n)).collect();
    assert!(
        db.start(&cluster, n1).is_err(),
        "a second start must be refused"
    );

    // Partition: isolate n1. Its chain holds drops of n2 and n3; traffic stops both ways
    // between n1 and the rest, and keeps flowing between n2 and n3.
    let mut nemesis = ClusterNemesis::new(&cluster, &db);
    nemesis.setup().unwrap();
    let names: Vec<String> = nodes.iter().map(|n| n.name.clone()).collect();
    let isolate = Fault::Partition {
        shape: control::nemesis::PartitionKind::IsolateLeader,
        grudge: grudge::isolate(&names, "n1"),
    };
    assert!(
        probe_between(&cluster, n2, n1),
        "before the partition n2 reaches n1"
    );
    nemesis.start(&isolate).unwrap();
    let rules = ssh.exec(n1, &format!("iptables -w -S {CHAIN}")).unwrap();
    assert!(
        rules.contains(&format!("-A {CHAIN} -s {}/32 -j DROP", n2.ip)),
        "{rules}"
    );
    assert!(
        rules.contains(&format!("-A {CHAIN} -s {}/32 -j DROP", n3.ip)),
        "{rules}"
    );
    assert!(
        !probe_between(&cluster, n2, n1),
        "partitioned: n2 must not reach n1"
    );
    assert!(
        !probe_between(&cluster, n1, n3),
        "partitioned: n1 must not reach n3"
    );
    assert!(probe_between(&cluster, n2, n3), "n2 and n3 stay connected");
    assert!(
        probe_from_control(&cluster, n1).is_some(),
        "control is never partitioned"
    );
    nemesis.stop(&isolate).unwrap();
    assert!(
        probe_between(&cluster, n2, n1),
        "healed: n2 reaches n1 again"
    );
    assert!(
        probe_between(&cluster, n1, n3),
        "healed: n1 reaches n3 again"
    );

    // Pause: SIGSTOP makes n2 silent, SIGCONT brings it back (same pid).
    let pause = Fault::Pause {
        nodes: vec!["n2".into()],
    };
    nemesis.start(&pause).unwrap();
    assert!(
        matches!(db.state(&cluster, n2).unwrap(), ProcessState::Paused(p) if p == first_pids[1])
    );
    assert!(
        probe_from_control(&cluster, n2).is_none(),
        "a paused node must not answer"
    );
    nemesis.stop(&pause).unwrap();
    assert_eq!(pid_of(&db, &cluster, n2), first_pids[1]);
    assert!(
        probe_from_control(&cluster, n2).is_some(),
        "resumed node answers"
    );

    // Kill -9 and restart: a new pid, answering again.
    let kill = Fault::Kill {
        nodes: vec!["n3".into()],
    };
    nemesis.start(&kill).unwrap();
    assert_eq!(db.state(&cluster, n3).unwrap(), ProcessState::NotRunning);
    assert!(
        !alive(first_pids[2]),
        "killed pid {} still alive",
        first_pids[2]
    );
    assert!(probe_from_control(&cluster, n3).is_none());
    nemesis.stop(&kill).unwrap();
    let new_pid = pid_of(&db, &cluster, n3);
    assert_ne!(new_pid, first_pids[2]);
    assert!(
        probe_from_control(&cluster, n3).is_some(),
        "restarted node answers"
    );

    // heal_all restores a healthy cluster whatever is in effect.
    nemesis
        .start(&Fault::Pause {
            nodes: vec!["n1".into()],
        })
        .unwrap();
    nemesis
        .start(&Fault::Kill {
            nodes: vec!["n2".into()],
        })
        .unwrap();
    nemesis
        .start(&Fault::Partition {
            shape: control::nemesis::PartitionKind::RandomHalves,
            grudge: grudge::isolate(&names, "n3"),
        })
        .unwrap();
    nemesis.heal_all().unwrap();
    for node in &nodes {
        assert!(matches!(
            db.state(&cluster, node).unwrap(),
            ProcessState::Running(_)
        ));
        assert!(
            probe_from_control(&cluster, node).is_some(),
            "{} answers after heal_all",
            node.name
        );
    }
    assert!(probe_between(&cluster, n1, n3));

    // Graceful stop: SIGTERM suffices for the stand-in.
    let n1_pid = pid_of(&db, &cluster, n1);
    db.stop(&cluster, n1).unwrap();
    assert!(!alive(n1_pid));
    assert_eq!(db.state(&cluster, n1).unwrap(), ProcessState::NotRunning);

    // Logs come back into the results folder layout.
    let results = tempfile::tempdir().unwrap();
    let run = RunDir::create(results.path(), "standin", chrono::Local::now()).unwrap();
    for node in &nodes {
        let copied = collect_logs(&db, &cluster, node, &run.node_dir(&node.name)).unwrap();
        assert_eq!(copied, ["standin.log"]);
    }
    let n3_log = fs::read_to_string(run.node_dir("n3").join("standin.log")).unwrap();
    assert_eq!(
        n3_log.matches("listening on").count(),
        2,
        "start + restart: {n3_log}"
    );

    // Teardown: no namespace, no sshd, no daemon, no run directory remains.
    let sshds = sshd_pids(&tag, &nodes);
    let daemons: Vec<u32> = nodes
        .iter()
        .filter_map(|n| db.state(&cluster, n).ok()?.pid())
        .collect();
    assert!(sshds.iter().all(|p| alive(*p)));
    cluster.teardown().unwrap();
    assert!(stale::our_namespaces(Some(&tag)).is_empty());
    for pid in sshds.iter().chain(&daemons) {
        assert!(!alive(*pid), "pid {pid} survived teardown");
    }
    assert!(!Path::new(&format!("{BASE_DIR}/{tag}")).exists());
    cluster.teardown().unwrap();
}

#[test]
fn host_keys_are_pinned_and_unknown_hosts_fail_fast() {
    if !ready() {
        return;
    }
    let cluster = LocalCluster::provision(&LocalOptions {
        nodes: 2,
        ..LocalOptions::default()
    })
    .unwrap();
    let nodes = cluster.nodes().to_vec();
    let good = cluster.ssh().settings.clone();
    // A known_hosts that claims n1's address has n2's key: ssh must refuse n1.
    let dir = tempfile::tempdir().unwrap();
    let known = fs::read_to_string(&good.known_hosts).unwrap();
    let n2_key: String = known
        .lines()
        .find(|l| l.starts_with(&format!("{} ", nodes[1].host)))
        .unwrap()
        .split_once(' ')
        .unwrap()
        .1
        .to_string();
    let swapped = dir.path().join("known_hosts");
    fs::write(&swapped, format!("{} {n2_key}\n", nodes[0].host)).unwrap();
    let mut settings = good.clone();
    settings.known_hosts = swapped;
    settings.control_dir = dir.path().to_path_buf();
    let wrong = Ssh::new(settings.clone());
    match wrong.exec(&nodes[0], "true") {
        Err(RemoteError::Unreachable { stderr, .. }) => {
            assert!(stderr.contains("key"), "{stderr}")
        }
        other => panic!("a wrong host key must be refused: {other:?}"),
    }
    // An address nobody has: Unreachable within the connect timeout.
    settings.connect_timeout = Duration::from_secs(1);
    let nowhere = Node {
        name: "ghost".into(),
        host: cluster.subnet().host(250).unwrap().to_string(),
        ip: cluster.subnet().host(250).unwrap(),
    };
    assert!(matches!(
        Ssh::new(settings).exec(&nowhere, "true"),
        Err(RemoteError::Unreachable { .. })
    ));
    // The good settings still work; print what one multiplexed round trip costs here.
    assert_eq!(cluster.ssh().exec(&nodes[0], "echo ok").unwrap(), "ok\n");
    let started = std::time::Instant::now();
    const ROUNDS: u32 = 20;
    for _ in 0..ROUNDS {
        cluster.ssh().exec(&nodes[0], "true").unwrap();
    }
    eprintln!(
        "ssh exec round trip (ip netns exec + multiplexed ssh): {:.1} ms average over {ROUNDS}",
        started.elapsed().as_secs_f64() * 1000.0 / f64::from(ROUNDS)
    );
}

#[test]
fn ssh_cluster_runs_the_same_lifecycle_on_hosts_it_is_given() {
    if !ready() {
        return;
    }
    let local = LocalCluster::provision(&LocalOptions {
        nodes: 2,
        ..LocalOptions::default()
    })
    .unwrap();
    // Pretend the namespaces are remote machines: only addresses, user, key and known_hosts.
    let settings = &local.ssh().settings;
    let ssh_tag = new_tag();
    let mut hosts = SshCluster::connect(SshClusterOptions {
        nodes: local.nodes().to_vec(),
        user: "root".into(),
        identity: settings.identity.clone(),
        known_hosts: settings.known_hosts.clone(),
        tag: Some(ssh_tag.clone()),
        client_netns: Some(local.namespace("ctl")),
    })
    .unwrap();
    let nodes = hosts.nodes().to_vec();
    let db = standin();
    for node in &nodes {
        db.setup(&hosts, node).unwrap();
        db.start(&hosts, node).unwrap();
    }
    let binary = format!("{BASE_DIR}/{ssh_tag}/nodes/n1/bin/standin");
    assert!(
        Path::new(&binary).exists(),
        "uploaded under the ssh cluster's own tag"
    );
    assert!(probe_between(&hosts, &nodes[0], &nodes[1]));
    let mut nemesis = ClusterNemesis::new(&hosts, &db);
    nemesis.setup().unwrap();
    let names: Vec<String> = nodes.iter().map(|n| n.name.clone()).collect();
    nemesis.partition(&grudge::isolate(&names, "n2")).unwrap();
    assert!(!probe_between(&hosts, &nodes[0], &nodes[1]));
    nemesis.heal().unwrap();
    assert!(probe_between(&hosts, &nodes[0], &nodes[1]));
    let before = pid_of(&db, &hosts, &nodes[1]);
    db.kill(&hosts, &nodes[1]).unwrap();
    db.start(&hosts, &nodes[1]).unwrap();
    assert_ne!(pid_of(&db, &hosts, &nodes[1]), before);
    db.pause(&hosts, &nodes[0]).unwrap();
    assert!(!probe_between(&hosts, &nodes[1], &nodes[0]));
    db.resume(&hosts, &nodes[0]).unwrap();
    assert!(probe_between(&hosts, &nodes[1], &nodes[0]));
    let daemons: Vec<u32> = nodes.iter().map(|n| pid_of(&db, &hosts, n)).collect();

    // The ssh cluster's teardown kills its daemons by pid file, removes its chain and files.
    hosts.teardown().unwrap();
    for pid in daemons {
        assert!(
            !alive(pid),
            "daemon {pid} survived the ssh cluster's teardown"
        );
    }
    assert!(!Path::new(&format!("{BASE_DIR}/{ssh_tag}")).exists());
    let rules = local.ssh().exec(&nodes[0], "iptables -w -S").unwrap();
    assert!(!rules.contains(CHAIN), "{rules}");
}

#[test]
fn stale_runs_are_found_and_removed_by_tag() {
    if !ready() {
        return;
    }
    let mut cluster = LocalCluster::provision(&LocalOptions {
        nodes: 1,
        ..LocalOptions::default()
    })
    .unwrap();
    let tag = cluster.tag().to_string();
    let db = standin();
    let node = cluster.nodes()[0].clone();
    db.setup(&cluster, &node).unwrap();
    db.start(&cluster, &node).unwrap();
    let daemon = pid_of(&db, &cluster, &node);
    assert!(
        !stale::stale_tags().contains(&tag),
        "a live run is not stale"
    );
    // Pretend the control process died: its owner pid is now one that has exited.
    let mut child = std::process::Command::new("true").spawn().unwrap();
    let dead = child.id();
    child.wait().unwrap();
    fs::write(stale::owner_file(&tag), format!("{dead} 1\n")).unwrap();
    assert!(stale::stale_tags().contains(&tag));
    let report = stale::teardown_tag(&tag).unwrap();
    assert!(report.terminated.contains(&daemon), "{report:?}");
    assert!(!alive(daemon));
    assert!(stale::our_namespaces(Some(&tag)).is_empty());
    let left: BTreeSet<String> = stale::stale_tags().into_iter().collect();
    assert!(!left.contains(&tag));
    cluster.teardown().unwrap();
}

#[test]
fn a_tag_in_use_is_refused() {
    if !ready() {
        return;
    }
    let cluster = LocalCluster::provision(&LocalOptions {
        nodes: 1,
        ..LocalOptions::default()
    })
    .unwrap();
    let again = LocalCluster::provision(&LocalOptions {
        nodes: 1,
        tag: Some(cluster.tag().to_string()),
        subnet: None,
    });
    let err = again.unwrap_err().to_string();
    assert!(err.contains("already in use"), "{err}");
    // The refused attempt must not have torn down the live cluster.
    assert_eq!(
        cluster.ssh().exec(&cluster.nodes()[0], "echo ok").unwrap(),
        "ok\n"
    );
}

fn short_test(
    name: &str,
    nodes: usize,
    nemesis: &str,
    root: &Path,
) -> control::runner::TestOptions {
    let mut options = common::short_test(name, "standin", "kv", nemesis, root, 1);
    options.nodes = nodes;
    options.time = Duration::from_secs(5);
    options.faulty = Duration::from_secs(2);
    options.healed = Duration::from_millis(500);
    options.recovery = Duration::from_secs(1);
    options.concurrency = 4;
    options.rate = 200;
    options.standin_binary = Some(PathBuf::from(env!("CARGO_BIN_EXE_standin")));
    options
}

#[test]
fn runner_writes_a_checked_results_folder_and_catches_a_data_loss() {
    use control::analyze::Validity;
    use std::sync::atomic::AtomicBool;
    if !ready() {
        return;
    }
    let root = tempfile::tempdir().unwrap();
    let not_interrupted = AtomicBool::new(false);

    // Clients only reach n1 from the control namespace, which no partition cuts: the
    // stand-in stays linearizable under partitions.
    let options = short_test("calm", 3, "partition", root.path());
    let outcome = control::runner::run_test(&options, &not_interrupted).unwrap();
    assert_eq!(outcome.validity, Validity::Valid, "{outcome:?}");
    let latest = root.path().join("calm/latest");
    for file in [
        "history.jsonl",
        "history.edn",
        "results.json",
        "report.html",
        "nodes/n1/standin.log",
    ] {
        assert!(latest.join(file).exists(), "missing {file}");
    }
    let results = common::results(&latest);
    assert_eq!(results["valid"], true);
    assert!(
        results["ops"]["ok"].as_u64().unwrap() > 100,
        "{}",
        results["ops"]
    );
    let phases: Vec<&str> = results["nemesis"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["phase"].as_str().unwrap())
        .collect();
    assert!(
        phases.contains(&"start") && phases.contains(&"stop"),
        "{phases:?}"
    );
    assert_eq!(phases.last(), Some(&"heal-all"), "always healed at the end");
    assert!(results["stats"]["latency_ok"]["p99_ms"].as_f64().is_some());
    let lost = common::assert_final_reads_cover_every_written_key(&outcome.run_dir);
    assert_eq!(lost["valid"], true, "{lost}");

    // The stand-in keeps its data in memory: kill -9 of its only node loses acknowledged
    // writes, and the checker must say so. Reads after the restart miss them, which the
    // linearizability checker rejects; the final state may not show the loss (a put after the
    // restart legitimately replaces lost appends), so the lost-writes check is only required
    // to have read every key.
    let options = short_test("lossy", 1, "kill", root.path());
    let outcome = control::runner::run_test(&options, &not_interrupted).unwrap();
    assert_eq!(outcome.validity, Validity::Invalid, "{outcome:?}");
    let results = common::results(&outcome.run_dir);
    assert_eq!(results["checks"]["linearizable"]["valid"], false);
    common::assert_final_reads_cover_every_written_key(&outcome.run_dir);
    assert!(stale::our_namespaces(Some(&outcome.tag)).is_empty());
    assert!(!Path::new(&format!("{BASE_DIR}/{}", outcome.tag)).exists());
}

#[test]
fn an_interrupted_run_still_heals_tears_down_and_checks() {
    use std::sync::atomic::AtomicBool;
    if !ready() {
        return;
    }
    let root = tempfile::tempdir().unwrap();
    // Already interrupted: the runner must skip the schedule but still do the whole tail.
    let interrupted = AtomicBool::new(true);
    let outcome =
        control::runner::run_test(&short_test("cut", 2, "all", root.path()), &interrupted).unwrap();
    assert!(outcome.interrupted);
    assert!(outcome.run_dir.join("results.json").exists());
    assert!(
        stale::our_namespaces(Some(&outcome.tag)).is_empty(),
        "namespaces of {} left",
        outcome.tag
    );
    assert!(!Path::new(&format!("{BASE_DIR}/{}", outcome.tag)).exists());
    let results = common::results(&outcome.run_dir);
    assert_eq!(results["run"]["interrupted"], true);
    assert_eq!(
        results["nemesis"].as_array().unwrap().last().unwrap()["phase"],
        "heal-all"
    );
}

/// Starts `control test` and returns it with the cluster tag it printed once ready.
// The caller waits for the child (wait_exit / kill + wait).
#[allow(clippy::zombie_processes)]
fn spawn_control(
    root: &Path,
) -> (
    std::process::Child,
    String,
    std::sync::mpsc::Receiver<String>,
) {
    use std::io::{BufRead, BufReader};
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_control"))
        .args([
            "test",
            "--db",
            "standin",
            "--nodes",
            "2",
            "--time",
            "60",
            "--nemesis",
            "none",
            "--rate",
            "50",
            "--quiet",
        ])
        .arg("--results")
        .arg(root)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let (lines, receiver) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            eprintln!("[control] {line}");
            if lines.send(line).is_err() {
                break;
            }
        }
    });
    loop {
        let line = receiver
            .recv_timeout(Duration::from_secs(60))
            .expect("control printed its cluster");
        if let Some(rest) = line.strip_prefix("control: cluster ") {
            let tag = rest.split_whitespace().next().unwrap().to_string();
            return (child, tag, receiver);
        }
    }
}

fn wait_exit(child: &mut std::process::Child, limit: Duration) -> std::process::ExitStatus {
    let started = std::time::Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        if started.elapsed() > limit {
            let _ = child.kill();
            panic!("control did not exit within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn ctrl_c_tears_down_and_a_killed_run_is_cleaned_by_tag() {
    use nix::sys::signal::{kill, Signal};
    use nix::unistd::Pid;
    if !ready() {
        return;
    }
    let root = tempfile::tempdir().unwrap();

    // SIGINT (Ctrl-C): the run stops early, heals, tears down, checks, and exits.
    let (mut child, tag, _lines) = spawn_control(root.path());
    assert!(!stale::our_namespaces(Some(&tag)).is_empty());
    std::thread::sleep(Duration::from_secs(3));
    kill(Pid::from_raw(child.id() as i32), Signal::SIGINT).unwrap();
    let status = wait_exit(&mut child, Duration::from_secs(60));
    assert_eq!(
        status.code(),
        Some(0),
        "an interrupted calm run is still valid"
    );
    assert!(
        stale::our_namespaces(Some(&tag)).is_empty(),
        "namespaces of {tag} left"
    );
    assert!(!Path::new(&format!("{BASE_DIR}/{tag}")).exists());
    let results = common::results(&root.path().join("standin-kv/latest"));
    assert_eq!(results["run"]["interrupted"], true);
    // An interrupted run still reads every key it wrote before it checks.
    common::assert_final_reads_cover_every_written_key(&root.path().join("standin-kv/latest"));

    // SIGKILL: nothing runs in the control process any more; `control teardown --tag` must
    // find and remove everything it left (namespaces, sshd, daemons, files).
    let (mut child, tag, _lines) = spawn_control(root.path());
    std::thread::sleep(Duration::from_secs(2));
    let inside = stale::processes_in(&stale::our_namespaces(Some(&tag)));
    assert!(!inside.is_empty());
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(
        stale::stale_tags().contains(&tag),
        "a run whose control died is stale"
    );
    let status = std::process::Command::new(env!("CARGO_BIN_EXE_control"))
        .args(["teardown", "--tag", &tag])
        .status()
        .unwrap();
    assert!(status.success());
    assert!(stale::our_namespaces(Some(&tag)).is_empty());
    assert!(!Path::new(&format!("{BASE_DIR}/{tag}")).exists());
    for pid in inside {
        assert!(!alive(pid), "pid {pid} from the killed run survived");
    }
}
