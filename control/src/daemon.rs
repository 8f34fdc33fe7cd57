//! Node lifecycle over SSH: a daemon is a program on a node, addressed only by the pid file it
//! was started with, never by name.
//!
//! Every signal goes through one check first: the pid in the pid file must be a live process
//! whose executable is the daemon's binary (`/proc/<pid>/exe`), so a stale pid file whose pid
//! the kernel has reused for someone else's process is never signalled. Each operation is one
//! shell script sent in one SSH round trip.

use std::path::Path;

use crate::cluster::Node;
use crate::cmd::shell_quote;
use crate::ssh::{Remote, RemoteError};

/// A daemon on one node: its binary, arguments and the directory holding its pid and log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DaemonSpec {
    /// Short name for the pid and log files (`node` -> `node.pid`, `node.log`).
    pub name: String,
    /// Working directory on the node.
    pub dir: String,
    /// Absolute path of the program on the node.
    pub binary: String,
    pub args: Vec<String>,
    pub env: Vec<(String, String)>,
}

impl DaemonSpec {
    pub fn pid_file(&self) -> String {
        format!("{}/{}.pid", self.dir, self.name)
    }

    pub fn log_file(&self) -> String {
        format!("{}/{}.log", self.dir, self.name)
    }

    /// Shell prelude: `ours PID` succeeds when PID is alive and runs our binary.
    fn prelude(&self) -> String {
        let binary = shell_quote(&self.binary);
        format!(
            "pidfile={pid}\n\
             ours() {{ exe=$(readlink /proc/$1/exe 2>/dev/null) || return 1; \
               [ \"$exe\" = {binary} ] || [ \"$exe\" = {binary}' (deleted)' ]; }}\n\
             current() {{ p=$(cat \"$pidfile\" 2>/dev/null) || return 1; \
               case \"$p\" in ''|*[!0-9]*) return 1;; esac; ours \"$p\" && echo \"$p\"; }}\n\
             stopped() {{ grep -q '^State:[[:space:]]*T' /proc/$1/status 2>/dev/null; }}\n",
            pid = shell_quote(&self.pid_file()),
        )
    }
}

#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error(transparent)]
    Remote(#[from] RemoteError),
    #[error("node {node}: {daemon} is already running as pid {pid}")]
    AlreadyRunning {
        node: String,
        daemon: String,
        pid: u32,
    },
    #[error("node {node}: {daemon} exited right after starting; log tail:\n{log}")]
    DiedAtStart {
        node: String,
        daemon: String,
        log: String,
    },
    #[error("node {node}: {daemon} is not running")]
    NotRunning { node: String, daemon: String },
    #[error("node {node}: unexpected answer from lifecycle script: `{answer}`")]
    Protocol { node: String, answer: String },
}

/// What the pid file says about the daemon.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProcessState {
    NotRunning,
    Running(u32),
    /// Alive but stopped by SIGSTOP.
    Paused(u32),
}

impl ProcessState {
    pub fn pid(&self) -> Option<u32> {
        match self {
            ProcessState::NotRunning => None,
            ProcessState::Running(pid) | ProcessState::Paused(pid) => Some(*pid),
        }
    }
}

/// How a stop ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopOutcome {
    WasNotRunning,
    /// Exited after SIGTERM within the grace period.
    Terminated(u32),
    /// Needed SIGKILL.
    Killed(u32),
}

fn parse_pid(node: &Node, answer: &str) -> Result<u32, DaemonError> {
    answer.trim().parse().map_err(|_| DaemonError::Protocol {
        node: node.name.clone(),
        answer: answer.trim().to_string(),
    })
}

/// Uploads a local file to `remote_path` on `node`, creating its directory.
pub fn upload(
    remote: &dyn Remote,
    node: &Node,
    local: &Path,
    remote_path: &str,
) -> Result<(), DaemonError> {
    if let Some((parent, _)) = remote_path.rsplit_once('/') {
        if !parent.is_empty() {
            remote.exec(node, &format!("mkdir -p {}", shell_quote(parent)))?;
        }
    }
    remote.upload(node, local, remote_path)?;
    Ok(())
}

/// Starts the daemon detached (`setsid nohup ... &`), writes its pid file, and waits (up to
/// ~2 s) until the pid runs our binary. Refuses when it already runs.
pub fn start(remote: &dyn Remote, node: &Node, spec: &DaemonSpec) -> Result<u32, DaemonError> {
    let mut command = String::new();
    for (key, value) in &spec.env {
        command.push_str(&format!("{}={} ", shell_quote(key), shell_quote(value)));
    }
    command.push_str(&format!("setsid nohup {}", shell_quote(&spec.binary)));
    for arg in &spec.args {
        command.push(' ');
        command.push_str(&shell_quote(arg));
    }
    let log = shell_quote(&spec.log_file());
    let script = format!(
        "{prelude}\
         cd {dir} || exit 5\n\
         if p=$(current); then echo \"running $p\"; exit 0; fi\n\
         echo \"--- control: start $(date -u +%Y-%m-%dT%H:%M:%SZ) ---\" >> {log}\n\
         {command} >> {log} 2>&1 < /dev/null &\n\
         pid=$!\necho $pid > \"$pidfile\"\n\
         i=0; while [ $i -lt 200 ]; do\n\
           if ours $pid; then echo \"started $pid\"; exit 0; fi\n\
           if [ ! -d /proc/$pid ] || grep -q '^State:[[:space:]]*Z' /proc/$pid/status 2>/dev/null; then\n\
             echo died; tail -n 20 {log}; exit 0; fi\n\
           sleep 0.01; i=$((i+1)); done\n\
         echo \"slow $pid\"\n",
        prelude = spec.prelude(),
        dir = shell_quote(&spec.dir),
    );
    let answer = remote.exec(node, &script)?;
    let mut lines = answer.lines();
    let first = lines.next().unwrap_or("");
    let daemon = spec.name.clone();
    match first.split_once(' ') {
        Some(("started", pid)) => parse_pid(node, pid),
        Some(("running", pid)) => Err(DaemonError::AlreadyRunning {
            node: node.name.clone(),
            daemon,
            pid: parse_pid(node, pid)?,
        }),
        _ if first == "died" => Err(DaemonError::DiedAtStart {
            node: node.name.clone(),
            daemon,
            log: lines.collect::<Vec<_>>().join("\n"),
        }),
        _ => Err(DaemonError::Protocol {
            node: node.name.clone(),
            answer: answer.trim().to_string(),
        }),
    }
}

/// Reads the daemon's state from its pid file.
pub fn state(
    remote: &dyn Remote,
    node: &Node,
    spec: &DaemonSpec,
) -> Result<ProcessState, DaemonError> {
    let script = format!(
        "{}if p=$(current); then if stopped $p; then echo \"paused $p\"; else echo \"running $p\"; fi; else echo none; fi\n",
        spec.prelude()
    );
    let answer = remote.exec(node, &script)?;
    let answer = answer.trim();
    match answer.split_once(' ') {
        Some(("running", pid)) => Ok(ProcessState::Running(parse_pid(node, pid)?)),
        Some(("paused", pid)) => Ok(ProcessState::Paused(parse_pid(node, pid)?)),
        _ if answer == "none" => Ok(ProcessState::NotRunning),
        _ => Err(DaemonError::Protocol {
            node: node.name.clone(),
            answer: answer.to_string(),
        }),
    }
}

/// SIGTERM (and SIGCONT, so a paused daemon can act on it), wait up to `grace_ms`, then
/// SIGKILL and wait until the pid is gone.
pub fn stop(
    remote: &dyn Remote,
    node: &Node,
    spec: &DaemonSpec,
    grace_ms: u64,
) -> Result<StopOutcome, DaemonError> {
    let rounds = grace_ms.div_ceil(10).max(1);
    let script = format!(
        "{prelude}p=$(current) || {{ echo none; exit 0; }}\n\
         kill -TERM $p 2>/dev/null; kill -CONT $p 2>/dev/null\n\
         i=0; while [ $i -lt {rounds} ]; do ours $p || {{ echo \"terminated $p\"; exit 0; }}; sleep 0.01; i=$((i+1)); done\n\
         kill -KILL $p 2>/dev/null\n\
         i=0; while [ $i -lt 500 ]; do ours $p || {{ echo \"killed $p\"; exit 0; }}; sleep 0.01; i=$((i+1)); done\n\
         echo \"stuck $p\"\n",
        prelude = spec.prelude(),
    );
    let answer = remote.exec(node, &script)?;
    let answer = answer.trim();
    match answer.split_once(' ') {
        Some(("terminated", pid)) => Ok(StopOutcome::Terminated(parse_pid(node, pid)?)),
        Some(("killed", pid)) => Ok(StopOutcome::Killed(parse_pid(node, pid)?)),
        _ if answer == "none" => Ok(StopOutcome::WasNotRunning),
        _ => Err(DaemonError::Protocol {
            node: node.name.clone(),
            answer: answer.to_string(),
        }),
    }
}

/// `kill -9` by pid, waiting until the process is gone. `Ok(None)` when it was not running.
pub fn kill(
    remote: &dyn Remote,
    node: &Node,
    spec: &DaemonSpec,
) -> Result<Option<u32>, DaemonError> {
    let script = format!(
        "{prelude}p=$(current) || {{ echo none; exit 0; }}\n\
         kill -KILL $p\n\
         i=0; while [ $i -lt 500 ]; do ours $p || {{ echo \"killed $p\"; exit 0; }}; sleep 0.01; i=$((i+1)); done\n\
         echo \"stuck $p\"\n",
        prelude = spec.prelude(),
    );
    let answer = remote.exec(node, &script)?;
    let answer = answer.trim();
    match answer.split_once(' ') {
        Some(("killed", pid)) => Ok(Some(parse_pid(node, pid)?)),
        _ if answer == "none" => Ok(None),
        _ => Err(DaemonError::Protocol {
            node: node.name.clone(),
            answer: answer.to_string(),
        }),
    }
}

fn signal_and_wait(
    remote: &dyn Remote,
    node: &Node,
    spec: &DaemonSpec,
    signal: &str,
    want_stopped: bool,
) -> Result<u32, DaemonError> {
    let condition = if want_stopped {
        "stopped $p"
    } else {
        "! stopped $p"
    };
    let script = format!(
        "{prelude}p=$(current) || {{ echo none; exit 0; }}\n\
         kill -{signal} $p\n\
         i=0; while [ $i -lt 300 ]; do if {condition}; then echo \"done $p\"; exit 0; fi; sleep 0.01; i=$((i+1)); done\n\
         echo \"stuck $p\"\n",
        prelude = spec.prelude(),
    );
    let answer = remote.exec(node, &script)?;
    let answer = answer.trim();
    match answer.split_once(' ') {
        Some(("done", pid)) => parse_pid(node, pid),
        _ if answer == "none" => Err(DaemonError::NotRunning {
            node: node.name.clone(),
            daemon: spec.name.clone(),
        }),
        _ => Err(DaemonError::Protocol {
            node: node.name.clone(),
            answer: answer.to_string(),
        }),
    }
}

/// SIGSTOP, waiting until the kernel reports the process stopped.
pub fn pause(remote: &dyn Remote, node: &Node, spec: &DaemonSpec) -> Result<u32, DaemonError> {
    signal_and_wait(remote, node, spec, "STOP", true)
}

/// SIGCONT, waiting until the process runs again.
pub fn resume(remote: &dyn Remote, node: &Node, spec: &DaemonSpec) -> Result<u32, DaemonError> {
    signal_and_wait(remote, node, spec, "CONT", false)
}

/// Copies every regular file in the daemon's directory whose name ends in `.log` into
/// `local_dir`; returns the copied file names.
pub fn collect_logs(
    remote: &dyn Remote,
    node: &Node,
    dir: &str,
    local_dir: &Path,
) -> Result<Vec<String>, DaemonError> {
    let listing = remote.exec(
        node,
        &format!("cd {} 2>/dev/null || exit 0; for f in *.log; do [ -f \"$f\" ] && echo \"$f\"; done; true", shell_quote(dir)),
    )?;
    let mut copied = Vec::new();
    for name in listing
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.contains('/'))
    {
        remote.download(node, &format!("{dir}/{name}"), &local_dir.join(name))?;
        copied.push(name.to_string());
    }
    Ok(copied)
}
