//! Finding and removing what a local cluster left behind, by tag.
//!
//! Every namespace we create is named `rj-<tag>-<member>` and every file lives under
//! `/var/tmp/rj/<tag>/`, whose `owner` file names the control process (pid and start time).
//! A tag is stale when that process is gone. Teardown of a tag never looks at process names:
//! it signals the pids that live inside our own namespaces (found by comparing each process's
//! network-namespace inode with our namespaces' inodes, as `ip netns pids` does) — first the
//! ones in our pid files with SIGTERM, then everything left with SIGKILL — and then deletes
//! the namespaces, which takes their veths, bridge and iptables rules with them.

use std::collections::BTreeSet;
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use super::{validate_tag, ClusterError, BASE_DIR};
use crate::cmd;

/// Prefix of every namespace we create.
pub const NETNS_PREFIX: &str = "rj-";
const NETNS_DIR: &str = "/run/netns";

/// `rj-<tag>-<member>` -> `(tag, member)`; anything else (other people's namespaces) -> None.
pub fn parse_namespace(name: &str) -> Option<(&str, &str)> {
    let rest = name.strip_prefix(NETNS_PREFIX)?;
    let (tag, member) = rest.split_once('-')?;
    if validate_tag(tag).is_err() || member.is_empty() {
        return None;
    }
    let member_ok = member
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
    member_ok.then_some((tag, member))
}

/// The namespace name for `member` (`n1`, `sw`, `ctl`) of run `tag`.
pub fn namespace_name(tag: &str, member: &str) -> String {
    format!("{NETNS_PREFIX}{tag}-{member}")
}

/// Our namespaces currently present, optionally only those of `tag`.
pub fn our_namespaces(tag: Option<&str>) -> Vec<String> {
    let Ok(entries) = fs::read_dir(NETNS_DIR) else {
        return Vec::new();
    };
    let mut names: Vec<String> = entries
        .filter_map(|e| e.ok())
        .filter_map(|e| e.file_name().into_string().ok())
        .filter(|name| match parse_namespace(name) {
            Some((t, _)) => tag.is_none_or(|want| want == t),
            None => false,
        })
        .collect();
    names.sort();
    names
}

/// The control process that owns a run: its pid and kernel start time (so a reused pid is not
/// mistaken for the owner).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Owner {
    pub pid: u32,
    pub start_ticks: u64,
}

/// Start time of `pid` in clock ticks since boot (field 22 of /proc/<pid>/stat).
pub fn process_start_ticks(pid: u32) -> Option<u64> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may hold spaces and parentheses: parse after the last ')'.
    let after = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = after.split_whitespace().collect();
    // after ')' the fields start at 3 (state); field 22 is index 19.
    if fields.first() == Some(&"Z") {
        return None;
    }
    fields.get(19)?.parse().ok()
}

pub fn owner_file(tag: &str) -> PathBuf {
    PathBuf::from(format!("{BASE_DIR}/{tag}/owner"))
}

/// Records this process as the owner of `tag`.
pub fn write_owner(tag: &str) -> Result<(), ClusterError> {
    let pid = std::process::id();
    let ticks = process_start_ticks(pid).unwrap_or(0);
    let path = owner_file(tag);
    fs::write(&path, format!("{pid} {ticks}\n"))
        .map_err(ClusterError::io(format!("writing {}", path.display())))
}

pub fn read_owner(tag: &str) -> Option<Owner> {
    let text = fs::read_to_string(owner_file(tag)).ok()?;
    let mut parts = text.split_whitespace();
    Some(Owner {
        pid: parts.next()?.parse().ok()?,
        start_ticks: parts.next()?.parse().ok()?,
    })
}

/// Whether the owner of `tag` is still running.
pub fn owner_alive(tag: &str) -> bool {
    match read_owner(tag) {
        Some(owner) => process_start_ticks(owner.pid) == Some(owner.start_ticks),
        None => false,
    }
}

/// A run directory younger than this without an owner file may be a run being provisioned
/// right now (the owner is written just after the directory): not stale yet.
const OWNERLESS_GRACE: std::time::Duration = std::time::Duration::from_secs(60);

fn young_without_owner(tag: &str) -> bool {
    if read_owner(tag).is_some() {
        return false;
    }
    fs::metadata(format!("{BASE_DIR}/{tag}"))
        .and_then(|m| m.modified())
        .ok()
        .and_then(|modified| modified.elapsed().ok())
        .is_some_and(|age| age < OWNERLESS_GRACE)
}

/// Tags that have namespaces or a directory but no live owner.
pub fn stale_tags() -> Vec<String> {
    let mut tags = BTreeSet::new();
    for ns in our_namespaces(None) {
        if let Some((tag, _)) = parse_namespace(&ns) {
            tags.insert(tag.to_string());
        }
    }
    if let Ok(entries) = fs::read_dir(BASE_DIR) {
        for entry in entries.filter_map(|e| e.ok()) {
            if let Ok(name) = entry.file_name().into_string() {
                if validate_tag(&name).is_ok() {
                    tags.insert(name);
                }
            }
        }
    }
    tags.into_iter()
        .filter(|t| !owner_alive(t) && !young_without_owner(t))
        .collect()
}

/// (device, inode) of a namespace file: what identifies a network namespace.
fn ns_id(path: &Path) -> Option<(u64, u64)> {
    fs::metadata(path).ok().map(|m| (m.dev(), m.ino()))
}

/// Pids of processes living in any of `namespaces` (zombies excluded: they hold nothing).
pub fn processes_in(namespaces: &[String]) -> Vec<u32> {
    let ids: BTreeSet<(u64, u64)> = namespaces
        .iter()
        .filter_map(|ns| ns_id(&Path::new(NETNS_DIR).join(ns)))
        .collect();
    if ids.is_empty() {
        return Vec::new();
    }
    let Ok(entries) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    let mut pids = Vec::new();
    for entry in entries.filter_map(|e| e.ok()) {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        if pid == std::process::id() || process_start_ticks(pid).is_none() {
            continue;
        }
        if let Some(id) = ns_id(&entry.path().join("ns/net")) {
            if ids.contains(&id) {
                pids.push(pid);
            }
        }
    }
    pids
}

/// Pids written in `*.pid` files under `dir` (recursively).
fn pid_files_under(dir: &Path, pids: &mut Vec<u32>) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for entry in entries.filter_map(|e| e.ok()) {
        let path = entry.path();
        if path.is_dir() && !path.is_symlink() {
            pid_files_under(&path, pids);
        } else if path.extension().is_some_and(|e| e == "pid") {
            if let Some(pid) = fs::read_to_string(&path)
                .ok()
                .and_then(|t| t.trim().parse().ok())
            {
                pids.push(pid);
            }
        }
    }
}

fn signal(pid: u32, sig: Signal) {
    if let Ok(raw) = i32::try_from(pid) {
        let _ = kill(Pid::from_raw(raw), sig);
    }
}

/// What a teardown did.
#[derive(Debug, Default, Clone)]
pub struct TeardownReport {
    pub terminated: Vec<u32>,
    pub killed: Vec<u32>,
    pub namespaces: Vec<String>,
}

/// Removes every process, namespace and file of `tag`. Processes are only ever signalled if
/// they live in one of `tag`'s namespaces.
pub fn teardown_tag(tag: &str) -> Result<TeardownReport, ClusterError> {
    validate_tag(tag)?;
    let mut report = TeardownReport::default();
    let namespaces = our_namespaces(Some(tag));
    let inside: BTreeSet<u32> = processes_in(&namespaces).into_iter().collect();
    let mut from_files = Vec::new();
    pid_files_under(Path::new(&format!("{BASE_DIR}/{tag}")), &mut from_files);
    for pid in from_files.into_iter().filter(|p| inside.contains(p)) {
        signal(pid, Signal::SIGTERM);
        signal(pid, Signal::SIGCONT);
        report.terminated.push(pid);
    }
    if !report.terminated.is_empty() {
        wait_until(Duration::from_secs(2), || {
            let now: BTreeSet<u32> = processes_in(&namespaces).into_iter().collect();
            report.terminated.iter().all(|p| !now.contains(p))
        });
    }
    for pid in processes_in(&namespaces) {
        signal(pid, Signal::SIGKILL);
        report.killed.push(pid);
    }
    let gone = wait_until(Duration::from_secs(5), || {
        processes_in(&namespaces).is_empty()
    });
    for ns in &namespaces {
        let _ = cmd::run(
            Command::new("ip").args(["netns", "del", ns]),
            Duration::from_secs(10),
        );
        report.namespaces.push(ns.clone());
    }
    let dir = PathBuf::from(format!("{BASE_DIR}/{tag}"));
    if dir.exists() {
        fs::remove_dir_all(&dir)
            .map_err(ClusterError::io(format!("removing {}", dir.display())))?;
    }
    let left = our_namespaces(Some(tag));
    if !gone || !left.is_empty() {
        return Err(ClusterError::Leftovers(format!(
            "tag {tag}: namespaces {left:?}, processes {:?}",
            processes_in(&namespaces)
        )));
    }
    Ok(report)
}

/// Polls `done` until it holds or `limit` passes; returns whether it held.
pub(crate) fn wait_until(limit: Duration, mut done: impl FnMut() -> bool) -> bool {
    let started = Instant::now();
    loop {
        if done() {
            return true;
        }
        if started.elapsed() >= limit {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_our_namespace_names_parse() {
        assert_eq!(parse_namespace("rj-ab12cd-n1"), Some(("ab12cd", "n1")));
        assert_eq!(parse_namespace("rj-ab12cd-ctl"), Some(("ab12cd", "ctl")));
        assert_eq!(parse_namespace("docker-1"), None);
        assert_eq!(parse_namespace("rj-AB-n1"), None);
        assert_eq!(parse_namespace("rj-ab-"), None);
        assert_eq!(parse_namespace("rj-ab-n1/x"), None);
        assert_eq!(namespace_name("ab12cd", "sw"), "rj-ab12cd-sw");
    }

    #[test]
    fn own_process_start_time_is_readable_and_stable() {
        let me = std::process::id();
        let a = process_start_ticks(me).unwrap();
        let b = process_start_ticks(me).unwrap();
        assert_eq!(a, b);
        assert_eq!(process_start_ticks(u32::MAX), None);
    }
}
