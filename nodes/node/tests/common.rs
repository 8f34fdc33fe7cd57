//! A local cluster of real `node` processes on loopback for tests: certificates,
//! configs, start, kill -9 (by pid), restart, status.

#![allow(dead_code)]

use std::net::{SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use node::client::Connection;
use node::wire::StatusReport;
use node::ClusterFile;

pub struct LocalCluster {
    pub dir: tempfile::TempDir,
    pub nodes: Vec<NodeHandle>,
    pub cluster: ClusterFile,
}

pub struct NodeHandle {
    pub id: u64,
    pub name: String,
    pub addr: SocketAddr,
    pub config: PathBuf,
    pub child: Option<Child>,
}

/// Picks free UDP ports on loopback (bind to port 0, read, release).
fn free_udp_ports(n: usize) -> Vec<u16> {
    let sockets: Vec<UdpSocket> = (0..n)
        .map(|_| UdpSocket::bind("127.0.0.1:0").expect("bind udp"))
        .collect();
    sockets
        .iter()
        .map(|s| s.local_addr().expect("local addr").port())
        .collect()
}

impl LocalCluster {
    /// Writes certificates and configs for `n` nodes; starts none.
    pub fn new(n: usize, extra_config: &str) -> LocalCluster {
        let dir = tempfile::tempdir().expect("tempdir");
        let certs = dir.path().join("certs");
        let ports = free_udp_ports(n);
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
        args.extend(["--client".into(), "client".into()]);
        let status = Command::new(env!("CARGO_BIN_EXE_node"))
            .args(&args)
            .stdout(Stdio::null())
            .status()
            .expect("run node certs");
        assert!(status.success(), "node certs failed");
        let addrs: Vec<SocketAddr> = ports
            .iter()
            .map(|p| SocketAddr::from(([127, 0, 0, 1], *p)))
            .collect();
        let mut nodes = Vec::new();
        for i in 0..n {
            let id = i as u64 + 1;
            let mut text = format!(
                "id = {id}\nname = \"{name}\"\nlisten = \"{addr}\"\ndata_dir = \"{name}/data\"\n\
                 service = \"kv\"\n[tls]\nca = \"certs/ca.pem\"\ncert = \"certs/{name}.pem\"\n\
                 key = \"certs/{name}.key\"\n",
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
            text.push_str(extra_config);
            let config = dir.path().join(format!("{}.toml", names[i]));
            std::fs::write(&config, text).expect("write config");
            nodes.push(NodeHandle {
                id,
                name: names[i].clone(),
                addr: addrs[i],
                config,
                child: None,
            });
        }
        let cluster = ClusterFile::new(
            &certs,
            "client",
            nodes
                .iter()
                .map(|n| (n.id, n.name.clone(), n.addr))
                .collect(),
        );
        LocalCluster {
            dir,
            nodes,
            cluster,
        }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn start(&mut self, id: u64) {
        let log_dir = self.dir.path().join("logs");
        std::fs::create_dir_all(&log_dir).expect("log dir");
        let node = &mut self.nodes[id as usize - 1];
        assert!(node.child.is_none(), "{} already running", node.name);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log_dir.join(format!("{}.log", node.name)))
            .expect("open log");
        let child = Command::new(env!("CARGO_BIN_EXE_node"))
            .args(["run", "--config"])
            .arg(&node.config)
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn node");
        node.child = Some(child);
    }

    pub fn start_all(&mut self) {
        for id in 1..=self.nodes.len() as u64 {
            self.start(id);
        }
    }

    /// kill -9 by pid (the child handle we spawned).
    pub fn kill(&mut self, id: u64) {
        if let Some(mut child) = self.nodes[id as usize - 1].child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGTERM by pid and wait for a clean exit; returns the exit status code.
    pub fn stop(&mut self, id: u64) -> Option<i32> {
        let mut child = self.nodes[id as usize - 1].child.take()?;
        let pid = child.id();
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(pid.to_string())
            .status();
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                return status.code();
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn log(&self, id: u64) -> String {
        let name = &self.nodes[id as usize - 1].name;
        std::fs::read_to_string(self.dir.path().join("logs").join(format!("{name}.log")))
            .unwrap_or_default()
    }

    pub fn dump_logs(&self) {
        for node in &self.nodes {
            eprintln!("===== log of {} =====\n{}", node.name, self.log(node.id));
        }
    }
}

impl Drop for LocalCluster {
    fn drop(&mut self) {
        for id in 1..=self.nodes.len() as u64 {
            self.kill(id);
        }
    }
}

pub async fn status_of(connection: &Connection, id: u64) -> Option<StatusReport> {
    connection.status(id, Duration::from_millis(500)).await.ok()
}

/// Waits until the running nodes agree on one leader; returns its id.
pub async fn wait_for_leader(
    connection: &Connection,
    running: &[u64],
    within: Duration,
) -> Option<u64> {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        let mut leaders = Vec::new();
        for id in running {
            if let Some(report) = status_of(connection, *id).await {
                if report.role == "leader" {
                    leaders.push((report.term, *id));
                }
            }
        }
        leaders.sort();
        if let Some((_, id)) = leaders.last() {
            return Some(*id);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    None
}
