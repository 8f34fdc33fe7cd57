//! WAL benchmarks: the disk's fdatasync floor, append+sync throughput by
//! batch size, and recovery time of a 100 MB log. Prints its setup first.
//!
//! `cargo bench -p storage --bench wal`. Knobs: `STORAGE_BENCH_DIR` (where
//! to write; default the system temp dir), `STORAGE_BENCH_LOG_MB` (size of
//! the recovery log, default 100), `STORAGE_BENCH_DROP_CACHES=1` (also time
//! a cold-cache recovery; drops the whole machine's page cache, root only).

use std::fs::{self, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use storage::{DiskOptions, DiskStorage, Entry, EntryKind, HardState, LogStore};

fn main() {
    let base = std::env::var("STORAGE_BENCH_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| std::env::temp_dir());
    let dir = tempfile::tempdir_in(&base).expect("bench dir");
    let log_mb: u64 = std::env::var("STORAGE_BENCH_LOG_MB")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(100);
    print_setup(dir.path());

    fdatasync_latency(dir.path());
    for batch in [1usize, 16, 256] {
        append_sync_throughput(dir.path(), batch);
    }
    recovery_time(dir.path(), log_mb);
}

fn print_setup(dir: &Path) {
    let kernel = fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    let cpu_model = fs::read_to_string("/proc/cpuinfo")
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with("model name"))
        .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_string())
        .unwrap_or_default();
    println!("== storage WAL benchmark ==");
    println!("dir: {}", dir.display());
    println!("filesystem: {}", mount_of(dir));
    println!("kernel: {}  cpus: {cpus}  cpu: {cpu_model}", kernel.trim());
    println!("build: release (cargo bench); entries of 1 KiB; segment size 64 MiB (default)");
    println!("note: the machine is shared with other builds; numbers are indicative");
    println!();
}

/// The mount entry (device, mount point, type, options) holding `dir`.
fn mount_of(dir: &Path) -> String {
    let mounts = fs::read_to_string("/proc/mounts").unwrap_or_default();
    let dir = fs::canonicalize(dir).unwrap_or_else(|_| dir.to_path_buf());
    mounts
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f.len() >= 4 && dir.starts_with(f[1])).then(|| {
                (
                    f[1].len(),
                    format!("{} on {} type {} ({})", f[0], f[1], f[2], f[3]),
                )
            })
        })
        .max()
        .map(|(_, s)| s)
        .unwrap_or_else(|| "unknown".into())
}

struct Stats {
    samples: Vec<Duration>,
}

impl Stats {
    fn percentile(&mut self, p: f64) -> Duration {
        self.samples.sort();
        let i = ((self.samples.len() as f64 - 1.0) * p).round() as usize;
        self.samples[i]
    }
    fn mean(&self) -> Duration {
        self.samples.iter().sum::<Duration>() / self.samples.len() as u32
    }
    fn line(&mut self) -> String {
        format!(
            "mean {:>7.1} us  p50 {:>7.1} us  p90 {:>7.1} us  p99 {:>7.1} us  max {:>8.1} us",
            us(self.mean()),
            us(self.percentile(0.5)),
            us(self.percentile(0.9)),
            us(self.percentile(0.99)),
            us(self.percentile(1.0)),
        )
    }
}

fn us(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

/// Append 4 KiB to a file and fdatasync, the way a WAL does: the floor
/// under every commit.
fn fdatasync_latency(dir: &Path) {
    let path = dir.join("fdatasync.bin");
    let file = OpenOptions::new()
        .create(true)
        .truncate(true)
        .read(true)
        .write(true)
        .open(&path)
        .expect("open");
    let block = vec![0xA5u8; 4096];
    let n = 1000;
    let mut stats = Stats {
        samples: Vec::with_capacity(n),
    };
    for i in 0..n + 50 {
        let t = Instant::now();
        file.write_all_at(&block, (i * 4096) as u64).expect("write");
        file.sync_data().expect("fdatasync");
        if i >= 50 {
            stats.samples.push(t.elapsed());
        }
    }
    println!("fdatasync of a 4 KiB append ({n} samples after 50 warm-up):");
    println!("  {}", stats.line());
    // The same, overwriting blocks that already exist: no size or extent
    // change to journal, the floor a preallocating WAL could reach.
    let mut stats = Stats {
        samples: Vec::with_capacity(n),
    };
    for i in 0..n {
        let t = Instant::now();
        file.write_all_at(&block, ((i % 64) * 4096) as u64)
            .expect("write");
        file.sync_data().expect("fdatasync");
        stats.samples.push(t.elapsed());
    }
    println!("fdatasync of a 4 KiB overwrite in place ({n} samples):");
    println!("  {}", stats.line());
    println!();
    let _ = fs::remove_file(&path);
}

fn entry(index: u64, term: u64) -> Entry {
    Entry {
        term,
        index,
        kind: EntryKind::Normal,
        data: vec![(index % 251) as u8; 1024],
    }
}

/// save_ready of `batch` 1 KiB entries plus a hard state, one fdatasync each.
fn append_sync_throughput(base: &Path, batch: usize) {
    let dir = tempfile::tempdir_in(base).expect("dir");
    let (mut store, _) = DiskStorage::open(dir.path(), DiskOptions::default()).expect("open");
    let target = Duration::from_secs(3);
    let mut stats = Stats {
        samples: Vec::new(),
    };
    let mut next = 1u64;
    let start = Instant::now();
    while start.elapsed() < target || stats.samples.len() < 20 {
        let entries: Vec<Entry> = (next..next + batch as u64).map(|i| entry(i, 1)).collect();
        let hs = HardState {
            term: 1,
            vote: Some(1),
            commit: next - 1,
        };
        let t = Instant::now();
        store
            .save_ready(Some(&hs), &entries, None)
            .expect("save_ready");
        stats.samples.push(t.elapsed());
        next += batch as u64;
    }
    let elapsed = start.elapsed().as_secs_f64();
    let total = next - 1;
    println!(
        "append+sync, batch of {batch:>3} x 1 KiB: {:>8.0} entries/s  {:>6.1} MB/s  {:>6.0} batches/s  ({} batches in {elapsed:.1} s)",
        total as f64 / elapsed,
        total as f64 * 1024.0 / elapsed / 1e6,
        stats.samples.len() as f64 / elapsed,
        stats.samples.len(),
    );
    println!("  per batch: {}", stats.line());
}

/// Writes a log of `mb` MB, then times `DiskStorage::open` reading it back.
fn recovery_time(base: &Path, mb: u64) {
    let dir = tempfile::tempdir_in(base).expect("dir");
    let entries_total = mb * 1_000_000 / 1024;
    {
        let (mut store, _) = DiskStorage::open(dir.path(), DiskOptions::default()).expect("open");
        let mut next = 1u64;
        while next <= entries_total {
            let last = (next + 255).min(entries_total);
            let batch: Vec<Entry> = (next..=last).map(|i| entry(i, 1)).collect();
            store.append(None, &batch, None).expect("append");
            next = last + 1;
            if next % (256 * 64) == 1 {
                store.sync().expect("sync");
            }
        }
        let hs = HardState {
            term: 1,
            vote: Some(1),
            commit: entries_total,
        };
        store.save_ready(Some(&hs), &[], None).expect("final sync");
    }
    let bytes: u64 = fs::read_dir(dir.path().join("wal"))
        .expect("wal dir")
        .filter_map(|e| e.ok()?.metadata().ok())
        .map(|m| m.len())
        .sum();
    let mut runs = Vec::new();
    for _ in 0..3 {
        let t = Instant::now();
        let (_store, recovered) =
            DiskStorage::open(dir.path(), DiskOptions::default()).expect("open");
        let took = t.elapsed();
        assert_eq!(recovered.entries.len() as u64, entries_total);
        runs.push(took);
    }
    runs.sort();
    println!();
    println!(
        "recovery of a {:.1} MB log ({entries_total} entries of 1 KiB, warm page cache): best {:.0} ms, median {:.0} ms ({:.0} MB/s)",
        bytes as f64 / 1e6,
        runs[0].as_secs_f64() * 1e3,
        runs[1].as_secs_f64() * 1e3,
        bytes as f64 / 1e6 / runs[1].as_secs_f64()
    );
    if std::env::var("STORAGE_BENCH_DROP_CACHES").is_ok_and(|v| v == "1") {
        let dropped = fs::write("/proc/sys/vm/drop_caches", "3").is_ok();
        if dropped {
            let t = Instant::now();
            let (_store, recovered) =
                DiskStorage::open(dir.path(), DiskOptions::default()).expect("open");
            let took = t.elapsed();
            assert_eq!(recovered.entries.len() as u64, entries_total);
            println!(
                "recovery, cold page cache: {:.0} ms ({:.0} MB/s)",
                took.as_secs_f64() * 1e3,
                bytes as f64 / 1e6 / took.as_secs_f64()
            );
        } else {
            println!("(could not drop the page cache; cold recovery not measured)");
        }
    }
}
