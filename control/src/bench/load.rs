//! The load generator: closed-loop clients (each sends its next request when the previous one
//! answered) and an open-loop schedule (requests due at fixed times whatever the system does),
//! recorded into HDR histograms.
//!
//! **Coordinated omission.** A closed-loop client that waits 50 ms for one answer silently
//! skips the requests it would have sent meanwhile, so its percentiles hide stalls. The open
//! loop gives request `i` the intended send time `start + i / rate` and measures its latency
//! from there: when the system (or the generator) falls behind, the time a request waited for
//! its turn is counted, as wrk2 and HdrHistogram's `recordValueWithExpectedInterval` do.
//! tokio's timer fires on millisecond ticks, so a worker sleeps until at most 1 ms before the
//! intended time and sends when it wakes; a request sent early is measured from its actual
//! send, one sent late from its intended time (`latency = done - min(sent, intended)`), and
//! the lateness itself is kept as `send lag`.
//!
//! Everything runs on the caller's runtime; each logical client is one task that owns its
//! [`BenchClient`] and hands it back at the end, so the same clients (and connections) serve
//! every measured cell.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use hdrhistogram::Histogram;
use tokio::time::Instant;

use super::procstat::{self, CpuDelta};
use super::system::BenchClient;
use super::ycsb::{KeyChooser, Operation, OperationStream, Workload};

/// Largest latency a histogram holds (larger values are clamped): longer than any timeout.
pub const LATENCY_MAX_US: u64 = 120_000_000;
/// Error messages kept per cell as examples.
const ERROR_EXAMPLES_MAX: usize = 5;
/// An open-loop run stops taking tickets this long after its window ends; tickets still
/// untaken count as `unsent`.
const DRAIN_LIMIT: Duration = Duration::from_secs(3);

/// An empty latency histogram (microseconds, 3 significant digits).
pub fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, LATENCY_MAX_US, 3)
        .unwrap_or_else(|_| Histogram::new(3).unwrap_or_else(|_| unreachable_histogram()))
}

/// `new_with_bounds(1, 120 s, 3)` and `new(3)` are valid by construction; this is never
/// reached, but avoids a panic path in library code.
fn unreachable_histogram() -> Histogram<u64> {
    Histogram::new_with_max(LATENCY_MAX_US, 2).unwrap_or_else(|_| unreachable_histogram())
}

/// What one cell (system x workload x clients or rate) is to do.
#[derive(Debug, Clone)]
pub struct CellPlan {
    pub workload: Workload,
    pub keys: KeyChooser,
    pub value_bytes: usize,
    pub seed: u64,
    pub warmup: Duration,
    pub duration: Duration,
    /// Width of a throughput-over-time bin.
    pub bin: Duration,
}

/// What a cell measured during its window (warm-up excluded).
#[derive(Debug, Clone)]
pub struct Measured {
    pub ok: u64,
    pub errors: u64,
    /// Open loop: requests due in the window that were never sent (the run was too far behind).
    pub unsent: u64,
    /// Latency of ok operations, microseconds.
    pub latency_us: Histogram<u64>,
    /// Open loop: how late requests were sent against their intended time, microseconds.
    pub send_lag_us: Option<Histogram<u64>>,
    /// Ok completions per bin of `bin` over the window.
    pub ok_per_bin: Vec<u64>,
    pub bin: Duration,
    pub duration: Duration,
    pub error_examples: Vec<String>,
    /// CPU of the servers and of this process over the window.
    pub cpu: Option<CpuDelta>,
}

impl Measured {
    fn empty(plan: &CellPlan, open: bool) -> Measured {
        Measured {
            ok: 0,
            errors: 0,
            unsent: 0,
            latency_us: new_histogram(),
            send_lag_us: open.then(new_histogram),
            ok_per_bin: vec![0; bins(plan)],
            bin: plan.bin,
            duration: plan.duration,
            error_examples: Vec::new(),
            cpu: None,
        }
    }

    fn merge(&mut self, other: Measured) {
        self.ok += other.ok;
        self.errors += other.errors;
        self.unsent += other.unsent;
        let _ = self.latency_us.add(&other.latency_us);
        if let (Some(mine), Some(theirs)) = (self.send_lag_us.as_mut(), &other.send_lag_us) {
            let _ = mine.add(theirs);
        }
        for (mine, theirs) in self.ok_per_bin.iter_mut().zip(&other.ok_per_bin) {
            *mine += theirs;
        }
        for e in other.error_examples {
            if self.error_examples.len() < ERROR_EXAMPLES_MAX {
                self.error_examples.push(e);
            }
        }
    }

    /// Ok completions inside the measured window per second. An open-loop request due in the
    /// window but completed after it (in the drain) counts in `ok` and the latency, not here.
    pub fn ops_per_sec(&self) -> f64 {
        self.ok_per_bin.iter().sum::<u64>() as f64 / self.duration.as_secs_f64().max(1e-9)
    }

    /// Records one completion at `done` (relative to the window) that took `latency`.
    fn record(&mut self, window_offset: Duration, latency: Duration, result: Result<(), String>) {
        match result {
            Ok(()) => {
                self.ok += 1;
                let us = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX);
                self.latency_us
                    .saturating_record(us.clamp(1, LATENCY_MAX_US));
                let i = (window_offset.as_nanos() / self.bin.as_nanos().max(1)) as usize;
                if let Some(slot) = self.ok_per_bin.get_mut(i) {
                    *slot += 1;
                }
            }
            Err(e) => {
                self.errors += 1;
                if self.error_examples.len() < ERROR_EXAMPLES_MAX {
                    self.error_examples.push(e);
                }
            }
        }
    }
}

fn bins(plan: &CellPlan) -> usize {
    (plan
        .duration
        .as_nanos()
        .div_ceil(plan.bin.as_nanos().max(1)) as usize)
        .max(1)
}

async fn perform(client: &mut dyn BenchClient, operation: Operation) -> Result<(), String> {
    match operation {
        Operation::Read { key } => client.read(&key).await,
        Operation::Update { key, value } => client.update(&key, value).await,
    }
}

/// Samples CPU at the window's start and end while the tasks run.
async fn sample_window(pids: &[u32], start: Instant, end: Instant) -> Option<CpuDelta> {
    tokio::time::sleep_until(start).await;
    let before = procstat::sample(pids);
    tokio::time::sleep_until(end).await;
    let after = procstat::sample(pids);
    Some(procstat::delta(&before?, &after?))
}

type Task = tokio::task::JoinHandle<(Box<dyn BenchClient>, Measured)>;

/// Collects the tasks' clients and measurements; a task that panicked loses its client.
async fn join(
    tasks: Vec<Task>,
    plan: &CellPlan,
    open: bool,
) -> (Vec<Box<dyn BenchClient>>, Measured) {
    let mut total = Measured::empty(plan, open);
    let mut clients = Vec::with_capacity(tasks.len());
    for task in tasks {
        match task.await {
            Ok((client, measured)) => {
                clients.push(client);
                total.merge(measured);
            }
            Err(e) => {
                total.errors += 1;
                total
                    .error_examples
                    .push(format!("client task failed: {e}"));
            }
        }
    }
    (clients, total)
}

/// `clients.len()` closed-loop clients for `plan.warmup + plan.duration`; only completions
/// inside the window after the warm-up are measured. Returns the clients for the next cell.
pub async fn closed_loop(
    clients: Vec<Box<dyn BenchClient>>,
    plan: &CellPlan,
    pids: &[u32],
    stop: &Arc<AtomicBool>,
) -> (Vec<Box<dyn BenchClient>>, Measured) {
    let start = Instant::now();
    let window_start = start + plan.warmup;
    let end = window_start + plan.duration;
    let tasks: Vec<Task> = clients
        .into_iter()
        .enumerate()
        .map(|(i, mut client)| {
            let plan = plan.clone();
            let stop = stop.clone();
            tokio::spawn(async move {
                let mut stream = OperationStream::new(
                    plan.workload,
                    plan.keys.clone(),
                    plan.value_bytes,
                    plan.seed.wrapping_add(i as u64),
                );
                let mut measured = Measured::empty(&plan, false);
                while Instant::now() < end && !stop.load(Ordering::Relaxed) {
                    let operation = stream.next_operation();
                    let sent = Instant::now();
                    let result = perform(&mut *client, operation).await;
                    let done = Instant::now();
                    if done >= window_start && done < end {
                        measured.record(done - window_start, done - sent, result);
                    }
                }
                (client, measured)
            })
        })
        .collect();
    let cpu = sample_window(pids, window_start, end).await;
    let (clients, mut measured) = join(tasks, plan, false).await;
    measured.cpu = cpu;
    (clients, measured)
}

/// Requests due at `rate` per second (over warm-up and window) served by a pool of
/// `clients.len()` workers; latency from the intended send time (see the module doc).
pub async fn open_loop(
    clients: Vec<Box<dyn BenchClient>>,
    plan: &CellPlan,
    rate: f64,
    pids: &[u32],
    stop: &Arc<AtomicBool>,
) -> (Vec<Box<dyn BenchClient>>, Measured) {
    let rate = rate.max(1e-3);
    let start = Instant::now() + Duration::from_millis(5);
    let window_start = start + plan.warmup;
    let end = window_start + plan.duration;
    let next_ticket = Arc::new(AtomicU64::new(0));
    let tasks: Vec<Task> = clients
        .into_iter()
        .enumerate()
        .map(|(i, mut client)| {
            let plan = plan.clone();
            let stop = stop.clone();
            let next_ticket = next_ticket.clone();
            tokio::spawn(async move {
                let mut stream = OperationStream::new(
                    plan.workload,
                    plan.keys.clone(),
                    plan.value_bytes,
                    plan.seed.wrapping_add(i as u64),
                );
                let mut measured = Measured::empty(&plan, true);
                loop {
                    if stop.load(Ordering::Relaxed) || Instant::now() > end + DRAIN_LIMIT {
                        break;
                    }
                    let ticket = next_ticket.fetch_add(1, Ordering::Relaxed);
                    let intended = start + Duration::from_secs_f64(ticket as f64 / rate);
                    if intended >= end {
                        break;
                    }
                    let early = intended.checked_sub(Duration::from_millis(1));
                    if let Some(wake) = early.filter(|w| *w > Instant::now()) {
                        tokio::time::sleep_until(wake).await;
                    }
                    let operation = stream.next_operation();
                    let sent = Instant::now();
                    let result = perform(&mut *client, operation).await;
                    let done = Instant::now();
                    if intended >= window_start {
                        let from = sent.min(intended);
                        let offset = done.saturating_duration_since(window_start);
                        let in_window = done < end;
                        if in_window {
                            measured.record(offset, done - from, result);
                        } else {
                            // Completed in the drain: counts, but outside the throughput bins.
                            let bins = measured.ok_per_bin.len();
                            measured.record(plan.bin * bins as u32, done - from, result);
                        }
                        if let Some(lag) = measured.send_lag_us.as_mut() {
                            let us =
                                u64::try_from(sent.saturating_duration_since(intended).as_micros())
                                    .unwrap_or(u64::MAX);
                            lag.saturating_record(us.clamp(1, LATENCY_MAX_US));
                        }
                    }
                }
                (client, measured)
            })
        })
        .collect();
    let cpu = sample_window(pids, window_start, end).await;
    let (clients, mut measured) = join(tasks, plan, true).await;
    measured.cpu = cpu;
    // Tickets due in the window: those with warm-up <= i / rate < warm-up + duration.
    let first = (plan.warmup.as_secs_f64() * rate).ceil() as u64;
    let last = ((plan.warmup + plan.duration).as_secs_f64() * rate).ceil() as u64;
    let due = last.saturating_sub(first);
    measured.unsent = due.saturating_sub(measured.ok + measured.errors);
    (clients, measured)
}

/// Writes every record once (`records` keys of `value_bytes`), spread over the clients, each
/// put retried a few times. Returns the clients and how long it took.
pub async fn preload(
    clients: Vec<Box<dyn BenchClient>>,
    records: u64,
    value_bytes: usize,
    seed: u64,
) -> Result<(Vec<Box<dyn BenchClient>>, Duration), String> {
    use rand::SeedableRng;
    const ATTEMPTS: usize = 5;
    let started = Instant::now();
    let workers = clients.len().max(1) as u64;
    let tasks: Vec<_> = clients
        .into_iter()
        .enumerate()
        .map(|(i, mut client)| {
            tokio::spawn(async move {
                let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed.wrapping_add(i as u64));
                let mut failure = None;
                let mut record = i as u64;
                while record < records && failure.is_none() {
                    let key = super::ycsb::key_name(record);
                    let mut last_error = String::new();
                    let mut written = false;
                    for _ in 0..ATTEMPTS {
                        let value = super::ycsb::value(value_bytes, record, &mut rng);
                        match client.update(&key, value).await {
                            Ok(()) => {
                                written = true;
                                break;
                            }
                            Err(e) => last_error = e,
                        }
                    }
                    if !written {
                        failure = Some(format!("preloading {key}: {last_error}"));
                    }
                    record += workers;
                }
                (client, failure)
            })
        })
        .collect();
    let mut clients = Vec::new();
    let mut failures = Vec::new();
    for task in tasks {
        match task.await {
            Ok((client, failure)) => {
                clients.push(client);
                failures.extend(failure);
            }
            Err(e) => failures.push(format!("preload task failed: {e}")),
        }
    }
    match failures.into_iter().next() {
        Some(first) => Err(first),
        None => Ok((clients, started.elapsed())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bench::system::CallFuture;
    use crate::bench::ycsb::KeyDistribution;

    /// A system that answers after a fixed delay, counting calls.
    struct Fixed {
        delay: Duration,
        calls: Arc<AtomicU64>,
    }

    impl BenchClient for Fixed {
        fn read<'a>(&'a mut self, _key: &'a str) -> CallFuture<'a> {
            Box::pin(async move {
                self.calls.fetch_add(1, Ordering::Relaxed);
                tokio::time::sleep(self.delay).await;
                Ok(())
            })
        }
        fn update<'a>(&'a mut self, key: &'a str, _value: String) -> CallFuture<'a> {
            self.read(key)
        }
    }

    fn plan() -> CellPlan {
        CellPlan {
            workload: Workload::A,
            keys: KeyChooser::new(100, KeyDistribution::Uniform),
            value_bytes: 16,
            seed: 1,
            warmup: Duration::from_millis(100),
            duration: Duration::from_millis(600),
            bin: Duration::from_millis(100),
        }
    }

    fn clients(n: usize, delay: Duration, calls: &Arc<AtomicU64>) -> Vec<Box<dyn BenchClient>> {
        (0..n)
            .map(|_| {
                Box::new(Fixed {
                    delay,
                    calls: calls.clone(),
                }) as Box<dyn BenchClient>
            })
            .collect()
    }

    #[test]
    fn open_loop_counts_the_wait_of_requests_it_could_not_send_in_time() {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async {
            let calls = Arc::new(AtomicU64::new(0));
            let stop = Arc::new(AtomicBool::new(false));
            // One worker, 20 ms per request, 200 requests/s due: it serves 50/s, so requests
            // wait longer and longer for their turn, and the histogram must show it.
            let (_, behind) = open_loop(
                clients(1, Duration::from_millis(20), &calls),
                &plan(),
                200.0,
                &[],
                &stop,
            )
            .await;
            let p50_ms = behind.latency_us.value_at_quantile(0.5) as f64 / 1e3;
            assert!(p50_ms > 100.0, "median {p50_ms} ms hides the queueing");
            // Every request due in the window was served within the drain limit, late.
            assert_eq!(
                behind.ok + behind.unsent,
                120,
                "ok {} unsent {}",
                behind.ok,
                behind.unsent
            );
            let lag = behind.send_lag_us.as_ref().unwrap();
            assert!(
                lag.value_at_quantile(0.5) > 100_000,
                "the send lag shows the backlog"
            );
            // Plenty of workers at a low rate: latency is the service time.
            let (_, easy) = open_loop(
                clients(8, Duration::from_millis(2), &calls),
                &plan(),
                100.0,
                &[],
                &stop,
            )
            .await;
            let easy_p50_ms = easy.latency_us.value_at_quantile(0.5) as f64 / 1e3;
            assert!(
                easy_p50_ms * 4.0 < p50_ms,
                "median {easy_p50_ms} ms far below capacity vs {p50_ms} ms above it"
            );
            assert!(
                (40..=80).contains(&easy.ok),
                "ok {} (expected ~60 due)",
                easy.ok
            );
            assert_eq!(easy.errors, 0);
        });
    }

    #[test]
    fn closed_loop_measures_only_the_window_and_returns_every_client() {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async {
            let calls = Arc::new(AtomicU64::new(0));
            let stop = Arc::new(AtomicBool::new(false));
            let (back, measured) = closed_loop(
                clients(4, Duration::from_millis(10), &calls),
                &plan(),
                &[],
                &stop,
            )
            .await;
            assert_eq!(back.len(), 4);
            // 4 clients x ~10 ms per op x 0.6 s: about 240 measured of ~280 calls in total.
            assert!(measured.ok < calls.load(Ordering::Relaxed));
            assert!((20..=260).contains(&measured.ok), "ok {}", measured.ok);
            assert_eq!(measured.ok_per_bin.len(), 6);
            assert_eq!(measured.ok_per_bin.iter().sum::<u64>(), measured.ok);
            let before = calls.load(Ordering::Relaxed);
            let (back, _took) = preload(back, 10, 8, 3).await.unwrap();
            assert_eq!(back.len(), 4);
            assert_eq!(
                calls.load(Ordering::Relaxed) - before,
                10,
                "one put per record"
            );
        });
    }
}
