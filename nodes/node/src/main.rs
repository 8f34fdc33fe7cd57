//! `node`: the node daemon (`node run`), certificates (`node certs`) and
//! status (`node status`).
//!
//! Exit status: 0 success, 1 runtime failure, 2 bad usage or configuration.

use std::net::IpAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use node::client::Connection;
use node::{ClusterFile, NodeConfig};

#[derive(Parser, Debug)]
#[command(
    name = "node",
    version,
    about = "Raft node daemon: runs a replicated service over QUIC with mutual TLS"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run the daemon until SIGTERM or Ctrl-C.
    Run {
        /// The node's configuration (see the `config` module docs for the format).
        #[arg(long)]
        config: PathBuf,
        /// DANGER: answer gets from every replica's local state (not linearizable;
        /// exists so the test harness can prove it catches stale reads).
        #[arg(long)]
        unsafe_stale_reads: bool,
        /// DANGER: a shardkv group keeps serving shards it has handed over (not
        /// linearizable; exists so the test harness can prove it catches it).
        #[arg(long)]
        unsafe_keep_serving: bool,
    },
    /// Make a cluster CA and certificates for nodes and clients (PEM files).
    Certs {
        /// Output directory (ca.pem, ca.key, <name>.pem, <name>.key).
        #[arg(long)]
        out: PathBuf,
        /// A node as NAME=IP[,IP...] (server and client usage); repeatable.
        #[arg(long = "node", value_name = "NAME=IPS")]
        nodes: Vec<String>,
        /// A client name (client usage only); repeatable.
        #[arg(long = "client", value_name = "NAME")]
        clients: Vec<String>,
    },
    /// Print every node's role, term, leader, commit and applied index, log size.
    Status {
        /// The cluster file (nodes and the client certificate).
        #[arg(long)]
        cluster: PathBuf,
        /// Print JSON lines instead of a table.
        #[arg(long)]
        json: bool,
        /// Per-node timeout in milliseconds.
        #[arg(long, default_value_t = 2000)]
        timeout_ms: u64,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    match cli.command {
        Command::Run {
            config,
            unsafe_stale_reads,
            unsafe_keep_serving,
        } => run(config, unsafe_stale_reads, unsafe_keep_serving),
        Command::Certs {
            out,
            nodes,
            clients,
        } => certs(out, &nodes, &clients),
        Command::Status {
            cluster,
            json,
            timeout_ms,
        } => status(cluster, json, Duration::from_millis(timeout_ms)),
    }
}

fn run(config_path: PathBuf, unsafe_stale_reads: bool, unsafe_keep_serving: bool) -> ExitCode {
    let mut config = match NodeConfig::load(&config_path) {
        Ok(config) => config,
        Err(error) => {
            eprintln!("node: {error}");
            return ExitCode::from(2);
        }
    };
    config.kv.unsafe_stale_reads |= unsafe_stale_reads;
    if unsafe_keep_serving {
        match config.shardkv.as_mut() {
            Some(section) => section.unsafe_keep_serving = true,
            None => {
                eprintln!("node: --unsafe-keep-serving needs service = \"shardkv\"");
                return ExitCode::from(2);
            }
        }
    }
    let pid_file = config
        .pid_file
        .clone()
        .unwrap_or_else(|| config.data_dir.join("node.pid"));
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("node: cannot start the tokio runtime: {error}");
            return ExitCode::from(1);
        }
    };
    let result = runtime.block_on(async {
        if let Some(parent) = pid_file.parent() {
            std::fs::create_dir_all(parent)?;
        }
        std::fs::write(&pid_file, format!("{}\n", std::process::id()))?;
        let shutdown = async {
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(mut sigterm) => {
                    tokio::select! {
                        _ = sigterm.recv() => tracing::info!("SIGTERM received"),
                        _ = tokio::signal::ctrl_c() => tracing::info!("interrupt received"),
                    }
                }
                Err(error) => {
                    tracing::warn!(%error, "cannot watch SIGTERM; only Ctrl-C stops the node");
                    let _ = tokio::signal::ctrl_c().await;
                }
            }
        };
        node::runtime::run(config, shutdown)
            .await
            .map_err(anyhow::Error::from)
    });
    let _ = std::fs::remove_file(&pid_file);
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!("node stopped: {error:#}");
            eprintln!("node: {error:#}");
            ExitCode::from(1)
        }
    }
}

fn certs(out: PathBuf, nodes: &[String], clients: &[String]) -> ExitCode {
    match make_certs(&out, nodes, clients) {
        Ok(count) => {
            println!("wrote a CA and {count} certificates to {}", out.display());
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("node certs: {error:#}");
            ExitCode::from(2)
        }
    }
}

fn make_certs(
    out: &std::path::Path,
    nodes: &[String],
    clients: &[String],
) -> anyhow::Result<usize> {
    use anyhow::Context;
    use transport::certs;
    if nodes.is_empty() && clients.is_empty() {
        anyhow::bail!("nothing to issue: give at least one --node NAME=IP or --client NAME");
    }
    let ca = certs::generate_ca()?;
    let mut issued = Vec::new();
    for spec in nodes {
        let (name, ips) = spec
            .split_once('=')
            .with_context(|| format!("--node {spec:?}: expected NAME=IP[,IP...]"))?;
        let ips = ips
            .split(',')
            .map(|ip| {
                ip.parse::<IpAddr>()
                    .with_context(|| format!("--node {spec:?}: bad IP {ip:?}"))
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        issued.push(certs::issue_node_cert(&ca, name, &ips)?);
    }
    for name in clients {
        issued.push(certs::issue_client_cert(&ca, name)?);
    }
    certs::write_pem_files(out, &ca, &issued)?;
    certs::write_ca_key(out, &ca)?;
    Ok(issued.len())
}

fn status(cluster_path: PathBuf, json: bool, timeout: Duration) -> ExitCode {
    let cluster = match ClusterFile::load(&cluster_path) {
        Ok(cluster) => cluster,
        Err(error) => {
            eprintln!("node status: {error}");
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("node status: {error}");
            return ExitCode::from(1);
        }
    };
    runtime.block_on(async {
        let connection = match Connection::open(cluster) {
            Ok(connection) => connection,
            Err(error) => {
                eprintln!("node status: {error}");
                return ExitCode::from(2);
            }
        };
        let mut failures = 0;
        if !json {
            println!(
                "{:<6} {:<14} {:>6} {:>7} {:>10} {:>10} {:>12}",
                "node", "role", "term", "leader", "commit", "applied", "log bytes"
            );
        }
        for peer in connection.cluster.nodes.clone() {
            match connection.status(peer.id, timeout).await {
                Ok(report) if json => {
                    println!("{}", serde_json::to_string(&report).unwrap_or_default())
                }
                Ok(r) => println!(
                    "{:<6} {:<14} {:>6} {:>7} {:>10} {:>10} {:>12}",
                    r.name,
                    r.role,
                    r.term,
                    r.leader
                        .map(|l| l.to_string())
                        .unwrap_or_else(|| "-".into()),
                    r.commit_index,
                    r.applied_index,
                    r.log_bytes
                ),
                Err(error) => {
                    failures += 1;
                    eprintln!("{}: {error}", peer.name);
                }
            }
        }
        if failures == 0 {
            ExitCode::SUCCESS
        } else {
            ExitCode::from(1)
        }
    })
}
