//! `kv`: one operation against a KV cluster.
//!
//! Exit status: 0 the operation took effect (get prints the value), 1 it
//! certainly did not (e.g. a cas whose expected value did not match), 2 bad
//! usage or cluster file, 3 the outcome is unknown (timeout: it may or may
//! not have taken effect).

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use kv::client::{ClerkConfig, Outcome};
use kv::command::{Op, OpResult};
use node::client::{Connection, KvClient};
use node::ClusterFile;

#[derive(Parser, Debug)]
#[command(name = "kv", version, about = "Run one operation against a KV cluster")]
struct Cli {
    /// The cluster file (nodes and the client certificate).
    #[arg(long, global = true, default_value = "cluster.toml")]
    cluster: PathBuf,
    /// Give up after this many milliseconds (the outcome is then unknown).
    #[arg(long, global = true, default_value_t = 10_000)]
    timeout_ms: u64,
    #[command(subcommand)]
    op: OpCommand,
}

#[derive(Subcommand, Debug)]
enum OpCommand {
    /// Print the key's value ("" if missing).
    Get { key: String },
    /// Set the key's value.
    Put { key: String, value: String },
    /// Append to the key's value.
    Append { key: String, value: String },
    /// Set the key to NEW only if its value is EXPECTED.
    Cas {
        key: String,
        expected: String,
        new: String,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let cluster = match ClusterFile::load(&cli.cluster) {
        Ok(cluster) => cluster,
        Err(error) => {
            eprintln!("kv: {error}");
            return ExitCode::from(2);
        }
    };
    let op = match cli.op {
        OpCommand::Get { key } => Op::Get { key },
        OpCommand::Put { key, value } => Op::Put { key, value },
        OpCommand::Append { key, value } => Op::Append { key, value },
        OpCommand::Cas { key, expected, new } => Op::Cas { key, expected, new },
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("kv: {error}");
            return ExitCode::from(1);
        }
    };
    runtime.block_on(async {
        let connection = match Connection::open(cluster) {
            Ok(connection) => connection,
            Err(error) => {
                eprintln!("kv: {error}");
                return ExitCode::from(2);
            }
        };
        let config = ClerkConfig {
            op_timeout: Some(Duration::from_millis(cli.timeout_ms)),
            ..ClerkConfig::default()
        };
        let seed = u64::from(std::process::id());
        let client_id = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(seed);
        let mut client = KvClient::new(connection, client_id, config, seed);
        match client.call(op).await {
            Outcome::Ok(OpResult::Value(value)) => {
                println!("{value}");
                ExitCode::SUCCESS
            }
            Outcome::Ok(_) => ExitCode::SUCCESS,
            Outcome::Fail(reason) => {
                eprintln!("kv: failed (certainly not applied): {reason:?}");
                ExitCode::from(1)
            }
            Outcome::Unknown(reason) => {
                eprintln!("kv: outcome unknown (may or may not have been applied): {reason:?}");
                ExitCode::from(3)
            }
        }
    })
}
