//! `shardctl`: one request against a sharded store: the shard controller
//! (query, join, leave, move) or the replica groups (get, put, append).
//!
//! The cluster file lists the controller nodes. Exit status: 0 done (query
//! prints the configuration as JSON, get prints the value), 1 certainly not
//! done (refused), 2 bad usage or cluster file, 3 the outcome is unknown.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use kv::client::Outcome;
use kv::command::{Op, OpResult};
use node::client::Connection;
use node::shard_client::{CtrlClient, CtrlError, ShardClientConfig, ShardKvClient};
use node::ClusterFile;

#[derive(Parser, Debug)]
#[command(
    name = "shardctl",
    version,
    about = "One request against a sharded store"
)]
struct Cli {
    /// The cluster file: the controller nodes and the client certificate.
    #[arg(long, global = true, default_value = "cluster.toml")]
    cluster: PathBuf,
    /// Give up after this many milliseconds (the outcome is then unknown).
    #[arg(long, global = true, default_value_t = 10_000)]
    timeout_ms: u64,
    /// Client id (unique among the store's clients); default: from the pid and clock.
    #[arg(long, global = true)]
    client_id: Option<u64>,
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Print configuration NUM (default: the latest) as JSON.
    Query { num: Option<u64> },
    /// A new replica group; each server as NAME=IP:PORT (its certificate name and address).
    Join {
        #[arg(long)]
        gid: u64,
        #[arg(long = "server", value_name = "NAME=ADDR", required = true)]
        servers: Vec<String>,
    },
    /// Groups leave; their shards go to the others.
    Leave {
        #[arg(long = "gid", required = true)]
        gids: Vec<u64>,
    },
    /// Put one shard on one group.
    Move {
        #[arg(long)]
        shard: usize,
        #[arg(long)]
        gid: u64,
    },
    /// Print the key's value ("" if missing).
    Get { key: String },
    /// Set the key's value.
    Put { key: String, value: String },
    /// Append to the key's value.
    Append { key: String, value: String },
}

fn parse_server(spec: &str) -> Result<(String, SocketAddr), String> {
    let (name, addr) = spec
        .split_once('=')
        .ok_or_else(|| format!("--server {spec:?}: expected NAME=IP:PORT"))?;
    let addr = addr
        .parse()
        .map_err(|e| format!("--server {spec:?}: bad address: {e}"))?;
    Ok((name.to_string(), addr))
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let cluster = match ClusterFile::load(&cli.cluster) {
        Ok(cluster) => cluster,
        Err(error) => {
            eprintln!("shardctl: {error}");
            return ExitCode::from(2);
        }
    };
    let client_id = cli.client_id.unwrap_or_else(|| {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0);
        (nanos << 16) ^ u64::from(std::process::id())
    });
    let config = ShardClientConfig {
        op_timeout: Duration::from_millis(cli.timeout_ms),
        ..ShardClientConfig::default()
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("shardctl: {error}");
            return ExitCode::from(1);
        }
    };
    runtime.block_on(async {
        let connection = match Connection::open(cluster) {
            Ok(connection) => connection,
            Err(error) => {
                eprintln!("shardctl: {error}");
                return ExitCode::from(2);
            }
        };
        let mut ctrl = CtrlClient::from_connection(&connection, client_id, config.clone());
        let ctrl_result = match cli.command {
            Cmd::Query { num } => match ctrl.query(num).await {
                Ok(config) => {
                    let json = serde_json::json!({
                        "num": config.num,
                        "shards": config.shards,
                        "groups": config.groups,
                    });
                    println!("{json}");
                    Ok(())
                }
                Err(error) => Err(error),
            },
            Cmd::Join { gid, servers } => {
                let servers: Result<Vec<_>, String> =
                    servers.iter().map(|s| parse_server(s)).collect();
                match servers {
                    Ok(servers) => ctrl.join(BTreeMap::from([(gid, servers)])).await,
                    Err(message) => {
                        eprintln!("shardctl: {message}");
                        return ExitCode::from(2);
                    }
                }
            }
            Cmd::Leave { gids } => ctrl.leave(gids).await,
            Cmd::Move { shard, gid } => ctrl.move_shard(shard, gid).await,
            Cmd::Get { key } => {
                return kv_op(&connection, client_id, config, Op::Get { key }).await
            }
            Cmd::Put { key, value } => {
                return kv_op(&connection, client_id, config, Op::Put { key, value }).await
            }
            Cmd::Append { key, value } => {
                return kv_op(&connection, client_id, config, Op::Append { key, value }).await
            }
        };
        match ctrl_result {
            Ok(()) => ExitCode::SUCCESS,
            Err(error @ CtrlError::Unknown) => {
                eprintln!("shardctl: {error}");
                ExitCode::from(3)
            }
            Err(error) => {
                eprintln!("shardctl: {error}");
                ExitCode::from(1)
            }
        }
    })
}

async fn kv_op(
    connection: &Connection,
    client_id: u64,
    config: ShardClientConfig,
    op: Op,
) -> ExitCode {
    let mut client = ShardKvClient::from_connection(connection, client_id, config);
    match client.call(op).await {
        Outcome::Ok(OpResult::Value(value)) => {
            println!("{value}");
            ExitCode::SUCCESS
        }
        Outcome::Ok(_) => ExitCode::SUCCESS,
        Outcome::Fail(reason) => {
            eprintln!("shardctl: not applied: {reason:?}");
            ExitCode::from(1)
        }
        Outcome::Unknown(reason) => {
            eprintln!("shardctl: outcome unknown: {reason:?}");
            ExitCode::from(3)
        }
    }
}
