//! CPU time and context switches of processes, from `/proc`, to profile where each system
//! spends its cycles per request: `task/*/schedstat` gives each thread's time on a CPU in
//! nanoseconds; `task/*/status` its voluntary switches (it blocked: a hand-off to another
//! thread, an fsync, a wait for the network) and involuntary ones (preempted).
//!
//! The local cluster's nodes share this machine's PID namespace, so their daemons' pids (from
//! their pid files) are readable here; on other clusters the samples are simply absent.

use std::fs;
use std::time::Instant;

/// Totals over every thread of a set of processes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Totals {
    pub cpu_ns: u64,
    pub voluntary_switches: u64,
    pub involuntary_switches: u64,
    pub threads: u64,
}

impl Totals {
    fn add(&mut self, other: Totals) {
        self.cpu_ns += other.cpu_ns;
        self.voluntary_switches += other.voluntary_switches;
        self.involuntary_switches += other.involuntary_switches;
        self.threads += other.threads;
    }
}

/// The servers' and this (client) process's totals at one moment.
#[derive(Debug, Clone, Copy)]
pub struct Snapshot {
    pub at: Instant,
    pub servers: Totals,
    pub client: Totals,
    /// Server processes that could be read.
    pub servers_read: usize,
}

/// What happened between two snapshots.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CpuDelta {
    pub wall_s: f64,
    pub server_cpu_s: f64,
    pub client_cpu_s: f64,
    pub server_voluntary_switches: u64,
    pub server_involuntary_switches: u64,
    pub client_voluntary_switches: u64,
    /// Threads of all server processes together, and of this process, at the end.
    pub server_threads: u64,
    pub client_threads: u64,
    pub servers_read: usize,
}

fn field(status: &str, name: &str) -> u64 {
    status
        .lines()
        .find_map(|line| line.strip_prefix(name))
        .and_then(|rest| rest.trim_start_matches(':').trim().parse().ok())
        .unwrap_or(0)
}

/// One process (`pid` or `self`), summed over its threads.
pub fn process(pid: &str) -> Option<Totals> {
    let tasks = fs::read_dir(format!("/proc/{pid}/task")).ok()?;
    let mut totals = Totals::default();
    for task in tasks.flatten() {
        let dir = task.path();
        let cpu_ns = fs::read_to_string(dir.join("schedstat"))
            .ok()
            .and_then(|s| s.split_whitespace().next().and_then(|v| v.parse().ok()))
            .unwrap_or(0);
        let status = fs::read_to_string(dir.join("status")).unwrap_or_default();
        totals.add(Totals {
            cpu_ns,
            voluntary_switches: field(&status, "voluntary_ctxt_switches"),
            involuntary_switches: field(&status, "nonvoluntary_ctxt_switches"),
            threads: 1,
        });
    }
    Some(totals)
}

/// Samples the server processes `pids` and this process. None when /proc is not readable.
pub fn sample(pids: &[u32]) -> Option<Snapshot> {
    let client = process("self")?;
    let mut servers = Totals::default();
    let mut servers_read = 0;
    for pid in pids {
        if let Some(t) = process(&pid.to_string()) {
            servers.add(t);
            servers_read += 1;
        }
    }
    Some(Snapshot {
        at: Instant::now(),
        servers,
        client,
        servers_read,
    })
}

pub fn delta(before: &Snapshot, after: &Snapshot) -> CpuDelta {
    let seconds = |a: u64, b: u64| b.saturating_sub(a) as f64 / 1e9;
    CpuDelta {
        wall_s: after.at.duration_since(before.at).as_secs_f64(),
        server_cpu_s: seconds(before.servers.cpu_ns, after.servers.cpu_ns),
        client_cpu_s: seconds(before.client.cpu_ns, after.client.cpu_ns),
        server_voluntary_switches: after
            .servers
            .voluntary_switches
            .saturating_sub(before.servers.voluntary_switches),
        server_involuntary_switches: after
            .servers
            .involuntary_switches
            .saturating_sub(before.servers.involuntary_switches),
        client_voluntary_switches: after
            .client
            .voluntary_switches
            .saturating_sub(before.client.voluntary_switches),
        server_threads: after.servers.threads,
        client_threads: after.client.threads,
        servers_read: before.servers_read.min(after.servers_read),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_burns_cpu_that_the_sample_sees() {
        let before = sample(&[std::process::id()]).unwrap();
        let started = Instant::now();
        let mut x = 0u64;
        while started.elapsed().as_millis() < 50 {
            x = x.wrapping_mul(6364136223846793005).wrapping_add(1);
        }
        std::hint::black_box(x);
        let after = sample(&[std::process::id()]).unwrap();
        let d = delta(&before, &after);
        assert!(d.client_cpu_s > 0.01, "{d:?}");
        assert_eq!(d.servers_read, 1);
        assert!(d.client_threads >= 1);
        assert_eq!(
            field("voluntary_ctxt_switches:\t42\n", "voluntary_ctxt_switches"),
            42
        );
    }
}
