//! Stand-in daemon for testing the control process before the real node daemon exists.
//!
//! `standin serve --listen IP:PORT --name NAME` answers UDP datagrams: `ping` -> `pong NAME PID
//! COUNT`, `get K` -> `ok VALUE`, `put K V` / `append K V` -> `ok`. State lives in memory only,
//! so a kill -9 loses it: exactly the kind of database a Jepsen test should catch.
//! `standin probe IP:PORT [--timeout-ms N] [--message TEXT]` sends one datagram and prints the
//! answer; exit status 0 when one came, 1 on timeout.

use std::collections::HashMap;
use std::io::Write;
use std::net::{SocketAddr, UdpSocket};
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(about = "UDP stand-in daemon and probe for control's tests")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve requests on one UDP address.
    Serve {
        #[arg(long)]
        listen: SocketAddr,
        #[arg(long, default_value = "standin")]
        name: String,
    },
    /// Send one request and print the answer.
    Probe {
        target: SocketAddr,
        #[arg(long, default_value_t = 500)]
        timeout_ms: u64,
        #[arg(long, default_value = "ping")]
        message: String,
    },
}

/// Requests are at most this long; longer ones are refused.
const DATAGRAM_BYTES_MAX: usize = 8192;

fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Serve { listen, name } => serve(listen, &name),
        Command::Probe {
            target,
            timeout_ms,
            message,
        } => {
            let answer = probe(target, &message, Duration::from_millis(timeout_ms))?;
            match answer {
                Some(text) => {
                    println!("{text}");
                    Ok(())
                }
                None => {
                    eprintln!("no answer from {target} within {timeout_ms} ms");
                    std::process::exit(1);
                }
            }
        }
    }
}

fn serve(listen: SocketAddr, name: &str) -> anyhow::Result<()> {
    let socket = UdpSocket::bind(listen).with_context(|| format!("binding {listen}"))?;
    let pid = std::process::id();
    println!("standin {name} pid {pid} listening on {listen}");
    std::io::stdout().flush().ok();
    let mut store: HashMap<String, String> = HashMap::new();
    let mut count: u64 = 0;
    let mut buffer = vec![0u8; DATAGRAM_BYTES_MAX];
    loop {
        let (length, from) = socket.recv_from(&mut buffer).context("receiving")?;
        count += 1;
        let request = String::from_utf8_lossy(&buffer[..length]).into_owned();
        let answer = handle(&request, &mut store, name, pid, count);
        if count <= 20 || count.is_multiple_of(1000) {
            println!("request {count} from {from}: {request} -> {answer}");
        }
        if let Err(e) = socket.send_to(answer.as_bytes(), from) {
            eprintln!("reply to {from}: {e}");
        }
    }
}

fn handle(
    request: &str,
    store: &mut HashMap<String, String>,
    name: &str,
    pid: u32,
    count: u64,
) -> String {
    let mut words = request.splitn(3, ' ');
    match (words.next(), words.next(), words.next()) {
        (Some("ping"), None, None) => format!("pong {name} {pid} {count}"),
        (Some("get"), Some(key), None) => {
            format!("ok {}", store.get(key).map_or("", String::as_str))
        }
        (Some("put"), Some(key), Some(value)) => {
            store.insert(key.to_string(), value.to_string());
            "ok".to_string()
        }
        (Some("append"), Some(key), Some(value)) => {
            store.entry(key.to_string()).or_default().push_str(value);
            "ok".to_string()
        }
        _ => format!("error bad request `{request}`"),
    }
}

fn probe(target: SocketAddr, message: &str, timeout: Duration) -> anyhow::Result<Option<String>> {
    let bind: SocketAddr = if target.is_ipv4() {
        "0.0.0.0:0".parse()?
    } else {
        "[::]:0".parse()?
    };
    let socket = UdpSocket::bind(bind).context("binding probe socket")?;
    socket.set_read_timeout(Some(timeout.max(Duration::from_millis(1))))?;
    socket
        .send_to(message.as_bytes(), target)
        .with_context(|| format!("sending to {target}"))?;
    let mut buffer = vec![0u8; DATAGRAM_BYTES_MAX];
    match socket.recv_from(&mut buffer) {
        Ok((length, _)) => Ok(Some(
            String::from_utf8_lossy(&buffer[..length]).into_owned(),
        )),
        Err(e)
            if matches!(
                e.kind(),
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
            ) =>
        {
            Ok(None)
        }
        Err(e) => Err(e).context("receiving answer"),
    }
}
