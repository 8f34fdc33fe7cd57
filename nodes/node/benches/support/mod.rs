//! What both node benchmarks share: the machine's description, its physical
//! floor (fdatasync, loopback round trip), a local cluster of real `node`
//! processes, a closed-loop load generator on one thread, and CPU accounting
//! for the generator (getrusage) and each node process (/proc/<pid>/stat).
//!
//! The generator runs every client as a task on one current-thread tokio
//! runtime sharing one QUIC client endpoint, so that on a 2-core machine it
//! takes as little CPU from the three nodes as it can; its own CPU use is
//! measured and printed with every result so the reader can see how much it
//! took anyway.

#![allow(dead_code)] // each bench uses a different part of this module

use std::fs;
use std::io::Write;
use std::net::{SocketAddr, UdpSocket};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use kv::client::{ClerkConfig, Outcome};
use kv::command::{Op, OpResult};
use node::client::{Connection, KvClient};
use node::config::{KvSection, RaftSection};
use node::ClusterFile;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

/// Latency histograms count microseconds, up to one minute, 3 significant digits.
pub fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000, 3).expect("valid histogram bounds")
}

pub fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(default)
}

pub fn env_f64(name: &str, default: f64) -> f64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(default)
}

pub fn env_string(name: &str, default: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| default.to_string())
}

/// A comma-separated list of numbers, e.g. `BENCH_CLIENTS=1,16,64`.
pub fn env_list(name: &str, default: &[usize]) -> Vec<usize> {
    match std::env::var(name) {
        Ok(text) => {
            let list: Vec<usize> = text
                .split(',')
                .filter_map(|s| s.trim().parse().ok())
                .filter(|n| *n > 0)
                .collect();
            if list.is_empty() {
                default.to_vec()
            } else {
                list
            }
        }
        Err(_) => default.to_vec(),
    }
}

pub fn ms(micros: u64) -> f64 {
    micros as f64 / 1000.0
}

/// Ordered key/value lines describing a run: printed first, stored in results.json.
#[derive(Debug, Default, Clone)]
pub struct Setup {
    pub items: Vec<(String, String)>,
}

impl Setup {
    /// The machine and build: CPU model, cores, kernel, build profile.
    pub fn machine(bench: &str) -> Setup {
        let mut setup = Setup::default();
        setup.add("bench", bench);
        let cpu_model = fs::read_to_string("/proc/cpuinfo")
            .unwrap_or_default()
            .lines()
            .find(|l| l.starts_with("model name"))
            .and_then(|l| l.split(':').nth(1))
            .unwrap_or("unknown")
            .trim()
            .to_string();
        setup.add("cpu", cpu_model);
        setup.add(
            "cores",
            std::thread::available_parallelism().map_or(0, |n| n.get()),
        );
        setup.add(
            "kernel",
            fs::read_to_string("/proc/sys/kernel/osrelease")
                .unwrap_or_default()
                .trim(),
        );
        let profile = if cfg!(debug_assertions) {
            "debug (numbers meaningless; use cargo bench)"
        } else {
            "release (cargo bench)"
        };
        setup.add("build", profile);
        setup.add(
            "load",
            fs::read_to_string("/proc/loadavg")
                .unwrap_or_default()
                .split_whitespace()
                .take(3)
                .collect::<Vec<_>>()
                .join(" "),
        );
        setup
    }

    pub fn add(&mut self, key: &str, value: impl ToString) {
        self.items.push((key.to_string(), value.to_string()));
    }

    /// The node settings the cluster runs with (the daemon's defaults).
    pub fn add_node_defaults(&mut self) {
        let raft = RaftSection::default();
        let kv = KvSection::default();
        self.add(
            "raft",
            format!(
                "tick {} ms, heartbeat every {} ticks, election timeout {}-{} ticks, pre-vote {}, check-quorum {}, max in-flight {} messages",
                raft.tick_ms,
                raft.heartbeat_interval_ticks,
                raft.election_timeout_ticks_min,
                raft.election_timeout_ticks_max,
                raft.pre_vote,
                raft.check_quorum,
                raft.max_inflight_messages
            ),
        );
        self.add(
            "kv",
            format!(
                "reads {:?}, snapshot at {} bytes of log",
                kv.read_mode,
                kv.max_raft_state_bytes
                    .map_or("never".to_string(), |b| b.to_string())
            ),
        );
    }

    pub fn print(&self) {
        for (key, value) in &self.items {
            println!("{key:<18} {value}");
        }
        println!();
    }

    pub fn to_json(&self) -> serde_json::Value {
        serde_json::Value::Object(
            self.items
                .iter()
                .map(|(k, v)| (k.clone(), serde_json::Value::String(v.clone())))
                .collect(),
        )
    }
}

/// The mount (device, mount point, type) holding `dir`.
pub fn filesystem_of(dir: &Path) -> String {
    let dir = fs::canonicalize(dir).unwrap_or_else(|_| dir.to_path_buf());
    fs::read_to_string("/proc/mounts")
        .unwrap_or_default()
        .lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            (fields.len() >= 3 && dir.starts_with(fields[1])).then(|| {
                (
                    fields[1].len(),
                    format!("{} on {} ({})", fields[0], fields[1], fields[2]),
                )
            })
        })
        .max()
        .map(|(_, text)| text)
        .unwrap_or_else(|| "unknown".into())
}

/// fdatasync latency of a 4 KiB write to a file in `dir`, in microseconds.
/// `append`: each write extends the file (as the write-ahead log's segments
/// grow, so every fdatasync also commits the new size to the journal);
/// otherwise the same 4 KiB block is overwritten (what a preallocated
/// segment would cost).
pub fn fdatasync_latency(dir: &Path, count: u64, append: bool) -> Histogram<u64> {
    let path = dir.join("fsync-probe");
    let file = fs::OpenOptions::new()
        .create(true)
        .truncate(true)
        .read(true)
        .write(true)
        .open(&path)
        .expect("create the fsync probe file");
    let block = vec![0x5au8; 4096];
    let mut histogram = new_histogram();
    for i in 0..count + count / 10 {
        let begin = Instant::now();
        let offset = if append { i * 4096 } else { 0 };
        file.write_all_at(&block, offset).expect("write 4 KiB");
        file.sync_data().expect("fdatasync");
        if i >= count / 10 {
            record(&mut histogram, begin.elapsed());
        }
    }
    drop(file);
    let _ = fs::remove_file(&path);
    histogram
}

/// Round trip of a 64-byte UDP datagram on loopback to an echo on another
/// thread (as between two processes: each hop wakes the other side), in µs.
pub fn udp_round_trip(count: u64) -> Histogram<u64> {
    let echo = UdpSocket::bind("127.0.0.1:0").expect("bind echo socket");
    let echo_addr = echo.local_addr().expect("echo address");
    echo.set_read_timeout(Some(Duration::from_secs(5)))
        .expect("echo timeout");
    let total = count + count / 10;
    let server = std::thread::spawn(move || {
        let mut buf = [0u8; 1500];
        for _ in 0..total {
            let Ok((len, from)) = echo.recv_from(&mut buf) else {
                return;
            };
            let _ = echo.send_to(&buf[..len], from);
        }
    });
    let client = UdpSocket::bind("127.0.0.1:0").expect("bind client socket");
    client.connect(echo_addr).expect("connect to echo");
    client
        .set_read_timeout(Some(Duration::from_secs(5)))
        .expect("client timeout");
    let message = [7u8; 64];
    let mut buf = [0u8; 1500];
    let mut histogram = new_histogram();
    for i in 0..total {
        let begin = Instant::now();
        client.send(&message).expect("send datagram");
        client.recv(&mut buf).expect("echo answered");
        if i >= count / 10 {
            record(&mut histogram, begin.elapsed());
        }
    }
    let _ = server.join();
    histogram
}

pub fn record(histogram: &mut Histogram<u64>, elapsed: Duration) {
    histogram.saturating_record((elapsed.as_micros() as u64).max(1));
}

/// `p50 … max` of a microsecond histogram, for one line of output.
pub fn percentiles(h: &Histogram<u64>) -> String {
    format!(
        "p50 {:.3} ms  p90 {:.3} ms  p99 {:.3} ms  p99.9 {:.3} ms  max {:.3} ms  (n={})",
        ms(h.value_at_quantile(0.50)),
        ms(h.value_at_quantile(0.90)),
        ms(h.value_at_quantile(0.99)),
        ms(h.value_at_quantile(0.999)),
        ms(h.max()),
        h.len()
    )
}

/// A cluster of real `node run` processes on loopback, each with its data
/// in a temporary directory. Processes are killed by their own handles (pid)
/// when this is dropped.
pub struct BenchCluster {
    pub dir: tempfile::TempDir,
    pub cluster: ClusterFile,
    pub names: Vec<String>,
    pub children: Vec<Child>,
}

impl BenchCluster {
    /// Makes certificates and configs for `n` nodes in a new temporary
    /// directory under `BENCH_DIR` (default: the system temp dir) and starts
    /// every node.
    pub fn start(n: usize) -> BenchCluster {
        let base = std::env::var("BENCH_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|_| std::env::temp_dir());
        let dir = tempfile::tempdir_in(&base).expect("bench directory");
        let certs = dir.path().join("certs");
        let names: Vec<String> = (1..=n).map(|i| format!("n{i}")).collect();
        let mut args = vec![
            "certs".to_string(),
            "--out".into(),
            certs.display().to_string(),
        ];
        for name in &names {
            args.push("--node".into());
            args.push(format!("{name}=127.0.0.1"));
        }
        args.extend(["--client".into(), "bench".into()]);
        let status = Command::new(env!("CARGO_BIN_EXE_node"))
            .args(&args)
            .stdout(Stdio::null())
            .status()
            .expect("run `node certs`");
        assert!(status.success(), "`node certs` failed");
        let ports = free_udp_ports(n);
        let addrs: Vec<SocketAddr> = ports
            .iter()
            .map(|p| SocketAddr::from(([127, 0, 0, 1], *p)))
            .collect();
        let logs = dir.path().join("logs");
        fs::create_dir_all(&logs).expect("log directory");
        let mut children = Vec::new();
        for i in 0..n {
            let mut text = format!(
                "id = {id}\nname = \"{name}\"\nlisten = \"{addr}\"\ndata_dir = \"{name}/data\"\n\
                 service = \"kv\"\n[tls]\nca = \"certs/ca.pem\"\ncert = \"certs/{name}.pem\"\n\
                 key = \"certs/{name}.key\"\n",
                id = i + 1,
                name = names[i],
                addr = addrs[i]
            );
            for j in (0..n).filter(|j| *j != i) {
                text.push_str(&format!(
                    "[[peers]]\nid = {}\nname = \"{}\"\naddr = \"{}\"\n",
                    j + 1,
                    names[j],
                    addrs[j]
                ));
            }
            let config = dir.path().join(format!("{}.toml", names[i]));
            fs::write(&config, text).expect("write node config");
            let log = fs::File::create(logs.join(format!("{}.log", names[i]))).expect("node log");
            let child = Command::new(env!("CARGO_BIN_EXE_node"))
                .args(["run", "--config"])
                .arg(&config)
                .env("RUST_LOG", env_string("BENCH_NODE_LOG", "info"))
                .stdout(Stdio::null())
                .stderr(log)
                .spawn()
                .expect("spawn `node run`");
            children.push(child);
        }
        let cluster = ClusterFile::new(
            &certs,
            "bench",
            (0..n)
                .map(|i| (i as u64 + 1, names[i].clone(), addrs[i]))
                .collect(),
        );
        BenchCluster {
            dir,
            cluster,
            names,
            children,
        }
    }

    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().to_path_buf()
    }

    pub fn pids(&self) -> Vec<u32> {
        self.children.iter().map(Child::id).collect()
    }

    /// CPU seconds (user + system) each node process has used so far.
    pub fn cpu_seconds(&self) -> Vec<f64> {
        self.pids().into_iter().map(process_cpu_seconds).collect()
    }

    /// Seconds each node's threads have spent runnable but waiting for a CPU.
    pub fn run_queue_seconds(&self) -> Vec<f64> {
        self.pids().into_iter().map(run_queue_seconds).collect()
    }

    /// Waits until one node reports itself leader; returns its id.
    pub async fn wait_for_leader(&self, connection: &Connection, within: Duration) -> u64 {
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            for node in &self.cluster.nodes {
                if let Ok(report) = connection.status(node.id, Duration::from_millis(500)).await {
                    if report.role == "leader" {
                        return node.id;
                    }
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        self.dump_logs();
        panic!("no leader within {within:?}");
    }

    pub fn dump_logs(&self) {
        for name in &self.names {
            let log = fs::read_to_string(self.dir.path().join("logs").join(format!("{name}.log")))
                .unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(20).collect();
            eprintln!("===== last lines of {name}'s log =====");
            for line in tail.iter().rev() {
                eprintln!("{line}");
            }
        }
    }
}

impl Drop for BenchCluster {
    fn drop(&mut self) {
        for child in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Picks free UDP ports on loopback (bind to port 0, read, release).
fn free_udp_ports(n: usize) -> Vec<u16> {
    let sockets: Vec<UdpSocket> = (0..n)
        .map(|_| UdpSocket::bind("127.0.0.1:0").expect("bind a probe socket"))
        .collect();
    sockets
        .iter()
        .map(|s| s.local_addr().expect("probe address").port())
        .collect()
}

/// utime + stime of a process (all its threads) from /proc/<pid>/stat.
/// The kernel reports them in USER_HZ ticks, which Linux fixes at 100.
pub fn process_cpu_seconds(pid: u32) -> f64 {
    const USER_HZ: f64 = 100.0;
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // The command name (field 2) may contain spaces; fields after ')' are fixed.
    let Some(rest) = stat.rsplit_once(')').map(|(_, rest)| rest) else {
        return 0.0;
    };
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // rest starts at field 3 (state); utime is field 14, stime 15.
    let ticks = |i: usize| {
        fields
            .get(i - 3)
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
    };
    (ticks(14) + ticks(15)) as f64 / USER_HZ
}

/// Time the process's threads waited on a run queue (second field of
/// /proc/<pid>/task/<tid>/schedstat, nanoseconds): CPU they wanted and did
/// not get because other processes had it.
pub fn run_queue_seconds(pid: u32) -> f64 {
    let Ok(tasks) = fs::read_dir(format!("/proc/{pid}/task")) else {
        return 0.0;
    };
    let nanos: u64 = tasks
        .flatten()
        .filter_map(|task| fs::read_to_string(task.path().join("schedstat")).ok())
        .filter_map(|text| {
            text.split_whitespace()
                .nth(1)
                .and_then(|v| v.parse::<u64>().ok())
        })
        .sum();
    nanos as f64 / 1e9
}

/// CPU seconds (user + system) used by this process, i.e. the load generator.
pub fn own_cpu_seconds() -> f64 {
    use nix::sys::resource::{getrusage, UsageWho};
    match getrusage(UsageWho::RUSAGE_SELF) {
        Ok(usage) => {
            let seconds = |t: nix::sys::time::TimeVal| t.tv_sec() as f64 + t.tv_usec() as f64 / 1e6;
            seconds(usage.user_time()) + seconds(usage.system_time())
        }
        Err(_) => 0.0,
    }
}

/// What one closed-loop run measured (only operations that completed inside
/// the measured window count).
#[derive(Debug)]
pub struct LoadResult {
    pub clients: usize,
    pub latency_us: Histogram<u64>,
    pub ok: u64,
    /// Definite failures (`Outcome::Fail`).
    pub fail: u64,
    /// Unknown outcomes (timeouts, gave up).
    pub unknown: u64,
    /// Reads answered with an empty value (a missing key): after a preload
    /// every read must see a value, so this shows whether reads are real.
    pub empty_reads: u64,
    /// Bytes of the values reads returned.
    pub read_bytes: u64,
    pub measured: Duration,
    /// CPU seconds used by the generator (this process) in the window.
    pub generator_cpu_seconds: f64,
    /// CPU seconds used by each node process in the window.
    pub node_cpu_seconds: Vec<f64>,
    /// Seconds each node's threads waited for a CPU in the window.
    pub node_run_queue_seconds: Vec<f64>,
}

impl LoadResult {
    pub fn ops_per_sec(&self) -> f64 {
        self.latency_us.len() as f64 / self.measured.as_secs_f64()
    }

    pub fn errors(&self) -> u64 {
        self.fail + self.unknown
    }

    /// CPU used per completed operation, in µs: each node, then the generator.
    pub fn cpu_line(&self) -> String {
        let ops = self.latency_us.len().max(1) as f64;
        let secs = self.measured.as_secs_f64();
        let nodes: Vec<String> = self
            .node_cpu_seconds
            .iter()
            .map(|c| format!("{:.0}% ({:.0} µs/op)", 100.0 * c / secs, c * 1e6 / ops))
            .collect();
        let total: f64 = self.node_cpu_seconds.iter().sum::<f64>() + self.generator_cpu_seconds;
        let waits: Vec<String> = self
            .node_run_queue_seconds
            .iter()
            .map(|w| format!("{:.0}%", 100.0 * w / secs))
            .collect();
        format!(
            "cpu: nodes [{}] waited for a CPU [{}], generator {:.0}% ({:.0} µs/op); all {:.2} of {} cores",
            nodes.join(", "),
            waits.join(", "),
            100.0 * self.generator_cpu_seconds / secs,
            self.generator_cpu_seconds * 1e6 / ops,
            total / secs,
            std::thread::available_parallelism().map_or(0, |n| n.get())
        )
    }
}

/// Makes operation `n` of a client from its RNG: shared by every client task.
pub type OpMaker = Arc<dyn Fn(&mut ChaCha8Rng, u64) -> Op + Send + Sync>;

/// Hands out client ids that are unique for the life of a cluster: the
/// servers deduplicate by (client id, sequence number), so a new clerk must
/// never reuse an old clerk's id.
#[derive(Debug)]
pub struct ClientIds {
    next: u64,
}

impl ClientIds {
    pub fn new() -> ClientIds {
        ClientIds { next: 1 }
    }

    pub fn take(&mut self, n: usize) -> Vec<u64> {
        let ids = (self.next..self.next + n as u64).collect();
        self.next += n as u64;
        ids
    }
}

/// Runs `clients` closed-loop clients (each waits for its answer before it
/// sends the next operation) for `warmup + measure`; records the operations
/// that complete inside the measured window. Must run on a current-thread
/// runtime (every client is a task on the generator's one thread).
pub async fn closed_loop(
    connection: &Connection,
    client_ids: Vec<u64>,
    seed: u64,
    warmup: Duration,
    measure: Duration,
    nodes: &BenchCluster,
    make_op: OpMaker,
) -> LoadResult {
    let clients = client_ids.len();
    let start = Instant::now();
    let window_start = start + warmup;
    let window_end = window_start + measure;
    let mut tasks = Vec::new();
    for id in client_ids {
        let mut client = KvClient::new(connection.clone(), id, ClerkConfig::default(), seed ^ id);
        let make_op = make_op.clone();
        tasks.push(tokio::spawn(async move {
            let mut rng = ChaCha8Rng::seed_from_u64(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ id);
            let mut histogram = new_histogram();
            let (mut fail, mut unknown) = (0u64, 0u64);
            let (mut empty_reads, mut read_bytes) = (0u64, 0u64);
            let mut n = 0u64;
            while Instant::now() < window_end {
                let op = make_op(&mut rng, n);
                n += 1;
                let begin = Instant::now();
                let outcome = client.call(op).await;
                let end = Instant::now();
                if end < window_start || end > window_end {
                    continue;
                }
                match outcome {
                    Outcome::Ok(result) => {
                        record(&mut histogram, end - begin);
                        if let OpResult::Value(value) = result {
                            read_bytes += value.len() as u64;
                            empty_reads += u64::from(value.is_empty());
                        }
                    }
                    Outcome::Fail(_) => fail += 1,
                    Outcome::Unknown(_) => unknown += 1,
                }
            }
            (histogram, fail, unknown, empty_reads, read_bytes)
        }));
    }
    tokio::time::sleep_until(window_start.into()).await;
    let generator_before = own_cpu_seconds();
    let nodes_before = nodes.cpu_seconds();
    let waits_before = nodes.run_queue_seconds();
    tokio::time::sleep_until(window_end.into()).await;
    let node_run_queue_seconds = nodes
        .run_queue_seconds()
        .iter()
        .zip(&waits_before)
        .map(|(after, before)| after - before)
        .collect();
    let generator_cpu_seconds = own_cpu_seconds() - generator_before;
    let node_cpu_seconds = nodes
        .cpu_seconds()
        .iter()
        .zip(&nodes_before)
        .map(|(after, before)| after - before)
        .collect();
    let mut latency_us = new_histogram();
    let (mut fail, mut unknown, mut empty_reads, mut read_bytes) = (0, 0, 0, 0);
    for task in tasks {
        let (histogram, f, u, e, b) = task.await.expect("client task");
        latency_us.add(&histogram).expect("same histogram bounds");
        fail += f;
        unknown += u;
        empty_reads += e;
        read_bytes += b;
    }
    LoadResult {
        clients,
        ok: latency_us.len(),
        latency_us,
        fail,
        unknown,
        empty_reads,
        read_bytes,
        measured: measure,
        generator_cpu_seconds,
        node_cpu_seconds,
        node_run_queue_seconds,
    }
}

/// Writes `results.json` (and a small self-contained `report.html`) into
/// `results/<bench>/<YYYYmmddTHHMMSS>/` at the workspace root and points
/// `results/<bench>/latest` at it; returns the folder.
pub fn write_results(
    bench: &str,
    document: &serde_json::Value,
    html: &str,
) -> std::io::Result<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let root = fs::canonicalize(&root).unwrap_or(root);
    let stamp = chrono::Utc::now().format("%Y%m%dT%H%M%S").to_string();
    let bench_dir = root.join("results").join(bench);
    let dir = bench_dir.join(&stamp);
    fs::create_dir_all(&dir)?;
    let text = serde_json::to_string_pretty(document).map_err(std::io::Error::other)?;
    fs::write(dir.join("results.json"), text + "\n")?;
    let mut file = fs::File::create(dir.join("report.html"))?;
    file.write_all(html.as_bytes())?;
    let latest = bench_dir.join("latest");
    let _ = fs::remove_file(&latest);
    let _ = std::os::unix::fs::symlink(&stamp, &latest);
    Ok(dir)
}

/// Minimal HTML escaping for the report.
pub fn escape_html(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}
