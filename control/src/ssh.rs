//! The SSH layer: the system OpenSSH client (`ssh`, `scp`) driven as child processes.
//!
//! We use the well-kept system client rather than a protocol library: host keys are pinned
//! through a `known_hosts` file we write (`StrictHostKeyChecking=yes`), the user's own
//! `~/.ssh/config` is ignored (`-F /dev/null`) so runs do not depend on who starts them, and
//! each node gets one multiplexing master (`ControlMaster`, `ControlPersist`) opened by
//! [`Ssh::connect`], so later commands cost one local socket round trip instead of a handshake.
//!
//! For the local cluster the client runs inside the cluster's own "control" network namespace
//! (`ip netns exec rj-<tag>-ctl ssh ...`), so the host's network is never used; for real hosts
//! (`netns: None`) it runs directly.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use crate::cluster::Node;
use crate::cmd::{self, shell_quote, CmdError, CmdOutput};

/// How to reach a set of nodes.
#[derive(Debug, Clone)]
pub struct SshSettings {
    pub user: String,
    pub port: u16,
    /// The private key (`IdentitiesOnly=yes`: no agent, no other keys).
    pub identity: PathBuf,
    /// Pinned host keys; hosts not in it are refused.
    pub known_hosts: PathBuf,
    /// Where the multiplexing sockets live (keep the path short: unix sockets allow ~100 bytes).
    pub control_dir: PathBuf,
    /// Run the client inside this network namespace (local cluster) or directly (`None`).
    pub netns: Option<String>,
    pub connect_timeout: Duration,
    /// Upper bound for any one command or copy.
    pub command_timeout: Duration,
    /// How long an idle master lingers; a crashed control process leaves none forever.
    pub control_persist: Duration,
}

impl SshSettings {
    pub fn new(user: &str, identity: PathBuf, known_hosts: PathBuf, control_dir: PathBuf) -> Self {
        Self {
            user: user.to_string(),
            port: 22,
            identity,
            known_hosts,
            control_dir,
            netns: None,
            connect_timeout: Duration::from_secs(5),
            command_timeout: Duration::from_secs(30),
            control_persist: Duration::from_secs(120),
        }
    }
}

/// Why a remote operation failed. Exit status 255 is ssh's own failure (unreachable, host key
/// refused, authentication); any other non-zero status is the remote command's.
#[derive(Debug, thiserror::Error)]
pub enum RemoteError {
    #[error("node {node}: {source}")]
    Local { node: String, source: CmdError },
    #[error("node {node}: ssh cannot reach {host}: {stderr}")]
    Unreachable {
        node: String,
        host: String,
        stderr: String,
    },
    #[error("node {node}: remote command failed with {code:?}: {stderr} (command: {command})")]
    Command {
        node: String,
        command: String,
        code: Option<i32>,
        stderr: String,
    },
    #[error("node {node}: copying {what} failed: {stderr}")]
    Copy {
        node: String,
        what: String,
        stderr: String,
    },
}

/// Running commands and copying files on nodes, as root. [`Ssh`] is the real implementation;
/// a `Db` or nemesis written against this trait works on any cluster.
pub trait Remote: Send + Sync {
    /// Runs `script` with `/bin/sh` as root on `node`; `Ok` holds the output, whatever the
    /// exit status, unless ssh itself failed.
    fn exec_status(&self, node: &Node, script: &str) -> Result<CmdOutput, RemoteError>;
    /// Copies a local file to `remote_path` on `node`.
    fn upload(&self, node: &Node, local: &Path, remote_path: &str) -> Result<(), RemoteError>;
    /// Copies `remote_path` from `node` to a local file.
    fn download(&self, node: &Node, remote_path: &str, local: &Path) -> Result<(), RemoteError>;

    /// Like [`Remote::exec_status`] but a non-zero exit is a [`RemoteError::Command`]; returns
    /// stdout.
    fn exec(&self, node: &Node, script: &str) -> Result<String, RemoteError> {
        let output = self.exec_status(node, script)?;
        if output.success() {
            Ok(output.stdout)
        } else {
            Err(RemoteError::Command {
                node: node.name.clone(),
                command: first_line(script),
                code: output.code,
                stderr: output.stderr.trim().to_string(),
            })
        }
    }
}

fn first_line(script: &str) -> String {
    let line = script.trim().lines().next().unwrap_or("");
    line.chars().take(120).collect()
}

/// The OpenSSH-backed [`Remote`].
#[derive(Debug, Clone)]
pub struct Ssh {
    pub settings: SshSettings,
}

impl Ssh {
    pub fn new(settings: SshSettings) -> Self {
        Self { settings }
    }

    fn control_path(&self, node: &Node) -> PathBuf {
        self.settings.control_dir.join(format!("cm-{}", node.name))
    }

    /// `program`, wrapped in `ip netns exec` when the client lives in a namespace.
    fn command(&self, program: &str) -> Command {
        match &self.settings.netns {
            Some(ns) => {
                let mut command = Command::new("ip");
                command.args(["netns", "exec", ns, program]);
                command
            }
            None => Command::new(program),
        }
    }

    /// Options shared by `ssh` and `scp`.
    fn options(&self, node: &Node, master: bool) -> Vec<String> {
        let s = &self.settings;
        let mut options = vec!["-F".to_string(), "/dev/null".to_string(), "-i".to_string()];
        options.push(s.identity.display().to_string());
        for option in [
            "BatchMode=yes".to_string(),
            "StrictHostKeyChecking=yes".to_string(),
            format!("UserKnownHostsFile={}", s.known_hosts.display()),
            "GlobalKnownHostsFile=/dev/null".to_string(),
            "IdentitiesOnly=yes".to_string(),
            "PasswordAuthentication=no".to_string(),
            format!("ConnectTimeout={}", s.connect_timeout.as_secs().max(1)),
            "ServerAliveInterval=5".to_string(),
            "ServerAliveCountMax=3".to_string(),
            "LogLevel=ERROR".to_string(),
            format!("User={}", s.user),
            format!("Port={}", s.port),
            format!("ControlPath={}", self.control_path(node).display()),
            format!("ControlMaster={}", if master { "yes" } else { "no" }),
            format!("ControlPersist={}s", s.control_persist.as_secs().max(1)),
        ] {
            options.push("-o".to_string());
            options.push(option);
        }
        options
    }

    /// Opens the node's multiplexing master, retrying until `deadline` passes (sshd may still
    /// be starting). Later commands ride on it; if it dies they connect on their own.
    pub fn connect(&self, node: &Node, wait: Duration) -> Result<(), RemoteError> {
        let started = Instant::now();
        loop {
            let mut command = self.command("ssh");
            command
                .args(self.options(node, true))
                .args(["-f", "-N", &node.host]);
            let result = cmd::run(&mut command, self.settings.command_timeout);
            let error = match result {
                Ok(output) if output.success() => return Ok(()),
                Ok(output) => RemoteError::Unreachable {
                    node: node.name.clone(),
                    host: node.host.clone(),
                    stderr: output.stderr.trim().to_string(),
                },
                Err(source) => RemoteError::Local {
                    node: node.name.clone(),
                    source,
                },
            };
            if started.elapsed() >= wait {
                return Err(error);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Asks the node's master to exit (best effort: it may already be gone).
    pub fn disconnect(&self, node: &Node) {
        let mut command = self.command("ssh");
        command
            .args(self.options(node, false))
            .args(["-O", "exit", &node.host]);
        let _ = cmd::run(&mut command, Duration::from_secs(5));
    }

    /// Wraps a script so it runs as root under `/bin/sh` whatever the login shell is.
    fn as_root(&self, script: &str) -> String {
        if self.settings.user == "root" {
            format!("sh -c {}", shell_quote(script))
        } else {
            format!("sudo -n sh -c {}", shell_quote(script))
        }
    }

    fn scp(&self, node: &Node, from: &str, to: &str, what: String) -> Result<(), RemoteError> {
        let mut command = self.command("scp");
        // -p keeps modes (an uploaded binary stays executable), -q quiets progress.
        command
            .args(["-q", "-p"])
            .args(self.options(node, false))
            .args(["--", from, to]);
        let output = cmd::run(&mut command, self.settings.command_timeout).map_err(|source| {
            RemoteError::Local {
                node: node.name.clone(),
                source,
            }
        })?;
        if output.success() {
            Ok(())
        } else {
            Err(RemoteError::Copy {
                node: node.name.clone(),
                what,
                stderr: output.stderr.trim().to_string(),
            })
        }
    }
}

impl Remote for Ssh {
    fn exec_status(&self, node: &Node, script: &str) -> Result<CmdOutput, RemoteError> {
        let mut command = self.command("ssh");
        command.args(self.options(node, false)).args([
            node.host.as_str(),
            "--",
            &self.as_root(script),
        ]);
        let output = cmd::run(&mut command, self.settings.command_timeout).map_err(|source| {
            RemoteError::Local {
                node: node.name.clone(),
                source,
            }
        })?;
        if output.code == Some(255) {
            return Err(RemoteError::Unreachable {
                node: node.name.clone(),
                host: node.host.clone(),
                stderr: output.stderr.trim().to_string(),
            });
        }
        Ok(output)
    }

    fn upload(&self, node: &Node, local: &Path, remote_path: &str) -> Result<(), RemoteError> {
        let to = format!("{}:{}", scp_host(&node.host), remote_path);
        self.scp(
            node,
            &local.display().to_string(),
            &to,
            format!("{} -> {remote_path}", local.display()),
        )
    }

    fn download(&self, node: &Node, remote_path: &str, local: &Path) -> Result<(), RemoteError> {
        let from = format!("{}:{}", scp_host(&node.host), remote_path);
        self.scp(
            node,
            &from,
            &local.display().to_string(),
            format!("{remote_path} -> {}", local.display()),
        )
    }
}

/// scp needs IPv6 literals in brackets; names and IPv4 pass through.
fn scp_host(host: &str) -> String {
    if host.contains(':') {
        format!("[{host}]")
    } else {
        host.to_string()
    }
}
