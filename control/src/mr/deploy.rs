//! Where the MapReduce job's pieces live on the cluster, and how they start.
//!
//! Layout (every path under the run's tag, so runs never collide):
//!
//! ```text
//! <node dir>/bin/mapreduce        the binary (every node)
//! <node dir>/certs/               CA, coordinator certificates c1..cN, the workers' certificate
//! <node dir>/mr-c<i>/             replica i's Raft log and snapshots (its node only)
//! <node dir>/mr-c<i>.{pid,log}    replica i's pid file and log
//! <node dir>/mr-worker-<k>.{pid,log}
//! <BASE>/<tag>/job/               inputs, mr-<m>-<r> intermediates, mr-out-<r> outputs
//! ```
//!
//! The job directory is shared storage, as in the lab (and as GFS is in the paper): a reduce
//! reads the intermediate files every map worker wrote. On the local cluster every namespace
//! sees the one host file system, so that path is the same directory on every node; on real
//! hosts it must be a shared mount.

use std::net::SocketAddr;

use mapreduce::net::CoordinatorAddress;

use crate::cluster::{Cluster, Node, BASE_DIR};
use crate::daemon::DaemonSpec;

/// Replica `i` (1-based) listens on UDP `REPLICA_PORT_BASE + i` of its node.
pub const REPLICA_PORT_BASE: u16 = 7100;

/// The job's settings every replica and worker is started with.
#[derive(Debug, Clone)]
pub struct JobSettings {
    pub app: String,
    pub files: Vec<String>,
    pub n_reduce: u32,
    pub task_timeout_ms: u64,
    /// Workers sleep this long before each task (stretches a small job so faults land mid-job).
    pub task_delay_ms: u64,
    pub crash_seed: u64,
    pub crash_stall_max_ms: u64,
    /// How long replicas keep answering `Exit` after the job is done.
    pub linger_ms: u64,
}

/// The shared job directory.
pub fn job_dir(cluster: &dyn Cluster) -> String {
    format!("{BASE_DIR}/{}/job", cluster.tag())
}

pub fn binary(cluster: &dyn Cluster, node: &Node) -> String {
    format!("{}/bin/mapreduce", cluster.node_dir(node))
}

pub fn certs_dir(cluster: &dyn Cluster, node: &Node) -> String {
    format!("{}/certs", cluster.node_dir(node))
}

/// Replica names, `c1..cN`, which are also their certificate names.
pub fn replica_names(replicas: usize) -> Vec<String> {
    (1..=replicas).map(|i| format!("c{i}")).collect()
}

/// Replica `i` (0-based) runs on node `i mod nodes`.
pub fn replica_node(nodes: &[Node], index: usize) -> Option<&Node> {
    nodes.get(index % nodes.len().max(1))
}

/// Worker `k` (1-based, counting replacements) runs on node `(k - 1) mod nodes`: spread evenly,
/// and a replacement lands on another node than the worker it replaces.
pub fn worker_node(nodes: &[Node], number: usize) -> Option<&Node> {
    nodes.get(number.saturating_sub(1) % nodes.len().max(1))
}

/// Every replica's name and address.
pub fn replica_addresses(nodes: &[Node], replicas: usize) -> Vec<CoordinatorAddress> {
    replica_names(replicas)
        .into_iter()
        .enumerate()
        .filter_map(|(i, name)| {
            let node = replica_node(nodes, i)?;
            let port = REPLICA_PORT_BASE + u16::try_from(i + 1).ok()?;
            Some(CoordinatorAddress {
                name,
                addr: SocketAddr::from((node.ip, port)),
            })
        })
        .collect()
}

fn address_list(addresses: &[CoordinatorAddress]) -> String {
    addresses
        .iter()
        .map(|a| format!("{}={}", a.name, a.addr))
        .collect::<Vec<_>>()
        .join(",")
}

/// Replica `index` (0-based) as a daemon on its node.
pub fn replica_spec(
    cluster: &dyn Cluster,
    node: &Node,
    index: usize,
    addresses: &[CoordinatorAddress],
    job: &JobSettings,
) -> DaemonSpec {
    let dir = cluster.node_dir(node);
    let name = format!("mr-c{}", index + 1);
    let mut args = vec![
        "replica".to_string(),
        format!("--id={}", index + 1),
        format!("--replicas={}", address_list(addresses)),
        format!("--data-dir={dir}/{name}"),
        format!("--certs={}", certs_dir(cluster, node)),
        format!("--dir={}", job_dir(cluster)),
        format!("--app={}", job.app),
        format!("--n-reduce={}", job.n_reduce),
        format!("--task-timeout-ms={}", job.task_timeout_ms),
        format!("--linger-ms={}", job.linger_ms),
    ];
    args.extend(job.files.iter().cloned());
    DaemonSpec {
        name,
        binary: binary(cluster, node),
        dir,
        args,
        env: Vec::new(),
    }
}

/// Worker number `number` as a daemon on its node.
pub fn worker_spec(
    cluster: &dyn Cluster,
    node: &Node,
    number: usize,
    addresses: &[CoordinatorAddress],
    job: &JobSettings,
) -> DaemonSpec {
    DaemonSpec {
        name: format!("mr-worker-{number}"),
        binary: binary(cluster, node),
        dir: cluster.node_dir(node),
        args: vec![
            "worker".to_string(),
            format!("--app={}", job.app),
            format!("--dir={}", job_dir(cluster)),
            format!("--certs={}", certs_dir(cluster, node)),
            format!("--coordinator={}", address_list(addresses)),
            format!("--task-delay-ms={}", job.task_delay_ms),
            format!("--seed={}", job.crash_seed),
            format!("--crash-stall-max-ms={}", job.crash_stall_max_ms),
        ],
        env: Vec::new(),
    }
}

/// The shell pipeline printing a digest of the job's sorted output (the lab's
/// `sort mr-out* | grep .`), so the early-exit check can compare two moments cheaply.
pub fn output_digest_script(job_dir: &str) -> String {
    format!(
        "cd {} && cat mr-out-* 2>/dev/null | grep . | LC_ALL=C sort | sha256sum | cut -d' ' -f1",
        crate::cmd::shell_quote(job_dir)
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    fn nodes(n: u8) -> Vec<Node> {
        (1..=n)
            .map(|i| Node {
                name: format!("n{i}"),
                host: format!("10.0.0.{i}"),
                ip: Ipv4Addr::new(10, 0, 0, i),
            })
            .collect()
    }

    #[test]
    fn replicas_spread_and_get_distinct_ports_even_when_sharing_a_node() {
        let two = nodes(2);
        let addresses = replica_addresses(&two, 3);
        let rendered: Vec<String> = addresses
            .iter()
            .map(|a| format!("{}={}", a.name, a.addr))
            .collect();
        assert_eq!(
            rendered,
            ["c1=10.0.0.1:7101", "c2=10.0.0.2:7102", "c3=10.0.0.1:7103"]
        );
    }

    #[test]
    fn workers_round_robin_so_a_replacement_moves_on() {
        let three = nodes(3);
        let placed: Vec<&str> = (1..=5)
            .map(|k| worker_node(&three, k).unwrap().name.as_str())
            .collect();
        assert_eq!(placed, ["n1", "n2", "n3", "n1", "n2"]);
    }
}
