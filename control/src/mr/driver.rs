//! The run itself: set up, drive the job under the nemesis, collect, check, report.
//!
//! I/O side: SSH to the nodes (through [`crate::daemon`]), files in the results folder. The
//! choices (which fault next, whom it hits) come from [`super::plan::Plan`]; the verdicts from
//! [`super::check`].

use std::fs::{self, File, OpenOptions};
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use mapreduce::app::{self, AppOptions};
use mapreduce::net::CoordinatorAddress;
use serde_json::Value;

use super::check;
use super::deploy::{self, JobSettings};
use super::faults::{ActiveFault, FaultStart};
use super::monitor::{Monitor, Sample};
use super::plan::{MrFault, Plan};
use super::verdict::{write_outputs, Verdicts};
use super::{MrError, MrEvent, MrOptions, MrOutcome};
use crate::cluster::local::{LocalCluster, LocalOptions};
use crate::cluster::{Cluster, Node};
use crate::daemon::{self, DaemonSpec, ProcessState};
use crate::history::TestClock;
use crate::nemesis::apply;
use crate::results::RunDir;
use crate::ssh::Remote as _;

/// How often workers are checked and faults started or stopped.
const LOOP_INTERVAL: Duration = Duration::from_millis(200);
/// A fault whose target is not there yet (no leader known) is retried this long.
const TARGET_WAIT_MAX: Duration = Duration::from_secs(10);
/// Limit on worker replacements, so a crash loop cannot start processes forever.
const WORKERS_STARTED_MAX: usize = 500;

/// A worker process we started.
#[derive(Debug, Clone)]
pub(super) struct WorkerProc {
    pub(super) node: Node,
    pub(super) spec: DaemonSpec,
    pub(super) pid: u32,
    /// How it ended: `job-done`, `crashed`, `error`, `killed`, `vanished`, `stopped`.
    pub(super) end: Option<String>,
    pub(super) ended: Option<u64>,
    pub(super) paused: bool,
}

/// Everything the run keeps while it drives the job.
pub(super) struct Run<'a> {
    pub(super) options: &'a MrOptions,
    pub(super) cluster: &'a dyn Cluster,
    pub(super) clock: TestClock,
    pub(super) job: JobSettings,
    pub(super) addresses: Vec<CoordinatorAddress>,
    pub(super) replica_specs: Vec<(Node, DaemonSpec)>,
    pub(super) workers: Vec<WorkerProc>,
    pub(super) events: Vec<MrEvent>,
    pub(super) events_file: Option<File>,
    pub(super) errors: Vec<String>,
    pub(super) plan: Plan,
    /// (worker, output digest) when the first worker exited by itself.
    pub(super) first_exit: Option<(String, String)>,
}

/// Runs the whole test. Errors are setup failures (nothing was checked); a run that checked
/// returns an outcome whether or not it passed.
pub fn run(options: &MrOptions, interrupted: &AtomicBool) -> Result<MrOutcome, MrError> {
    options.validate()?;
    eprintln!("SEED={}", options.seed);
    let binary = find_binary(options)?;
    let run_dir = RunDir::create(&options.results_root, &options.name, chrono::Local::now())?;
    eprintln!("control: results in {}", run_dir.path.display());
    let staging = tempfile::Builder::new()
        .prefix("rj-mr-")
        .tempdir()
        .map_err(|e| MrError::Setup(format!("staging directory: {e}")))?;
    let (files, expected) = prepare_inputs(options, staging.path())?;
    let certs = staging.path().join("certs");
    mapreduce::net::write_certs(&certs, &deploy::replica_names(options.replicas))
        .map_err(|e| MrError::Setup(format!("certificates: {e}")))?;
    let provisioning = Instant::now();
    let mut cluster = LocalCluster::provision(&LocalOptions {
        nodes: options.nodes,
        tag: None,
        subnet: None,
    })?;
    eprintln!(
        "control: cluster {} with {} nodes ready in {:.1} s",
        cluster.tag(),
        cluster.nodes().len(),
        provisioning.elapsed().as_secs_f64()
    );
    let job = JobSettings {
        app: options.app.clone(),
        files: files.clone(),
        n_reduce: options.n_reduce,
        task_timeout_ms: millis(options.task_timeout),
        task_delay_ms: millis(options.task_delay),
        crash_seed: options.seed,
        crash_stall_max_ms: millis(options.crash_stall_max),
        linger_ms: 5_000,
    };
    let mut run = Run {
        options,
        cluster: &cluster,
        clock: TestClock::new(),
        addresses: deploy::replica_addresses(cluster.nodes(), options.replicas),
        replica_specs: Vec::new(),
        job,
        workers: Vec::new(),
        events: Vec::new(),
        events_file: OpenOptions::new()
            .create(true)
            .append(true)
            .open(run_dir.path.join("events.jsonl"))
            .ok(),
        errors: Vec::new(),
        plan: Plan::new(options.seed, &options.faults),
        first_exit: None,
    };
    let result = run.install(&binary, &certs, staging.path(), &files);
    let mut samples = Vec::new();
    let mut job_time = None;
    let mut output = None;
    match result {
        Err(e) => run.errors.push(format!("install: {e}")),
        Ok(()) => {
            let mut monitor = Monitor::start(
                cluster.client_netns(),
                certs.clone(),
                run.addresses.clone(),
                run.clock,
            );
            job_time = run.drive(&monitor, interrupted);
            if let Some(error) = monitor.error() {
                run.errors.push(format!("monitor: {error}"));
            }
            monitor.stop();
            samples = monitor.samples();
            output = run.collect(&run_dir);
        }
    }
    run.stop_everything();
    run.collect_logs(&run_dir);
    let events = run.finish_events(&samples);
    let first_exit = run.first_exit.clone();
    let mut errors = std::mem::take(&mut run.errors);
    let tag = cluster.tag().to_string();
    drop(run);
    if let Err(e) = cluster.teardown() {
        errors.push(format!("teardown of {tag}: {e}"));
    }
    let verdicts = Verdicts::new(options, &expected, output, first_exit, &events, job_time);
    write_outputs(&run_dir, options, &samples, &events, &verdicts, &errors)?;
    Ok(MrOutcome {
        run_dir: run_dir.path,
        valid: verdicts.failed().is_empty() && errors.is_empty(),
        failed_checks: verdicts.failed(),
        errors,
        events,
    })
}

fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

fn find_binary(options: &MrOptions) -> Result<PathBuf, MrError> {
    let beside = std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent().map(|d| d.join("mapreduce")));
    options
        .mapreduce_binary
        .clone()
        .or(beside)
        .filter(|p| p.exists())
        .ok_or_else(|| {
            MrError::BadOption(
                "the `mapreduce` binary is not beside `control` (build it: `cargo build --release -p mapreduce`) and --mapreduce-binary was not given".into(),
            )
        })
}

/// Generates the inputs into `staging` and runs the sequential reference there; returns the
/// input names and the reference's sorted lines.
fn prepare_inputs(
    options: &MrOptions,
    staging: &Path,
) -> Result<(Vec<String>, Vec<String>), MrError> {
    let inputs = staging.join("inputs");
    fs::create_dir_all(&inputs).map_err(|e| MrError::Setup(format!("inputs: {e}")))?;
    let files = mapreduce::input::generate(
        &inputs,
        options.seed,
        options.input_files,
        options.input_bytes_per_file,
    )
    .map_err(|e| MrError::Setup(format!("generating inputs: {e}")))?;
    let reference = app::by_name(options.reference_app(), &AppOptions::default())
        .ok_or_else(|| MrError::BadOption(format!("no app {}", options.reference_app())))?;
    let correct = staging.join("mr-correct.txt");
    let started = Instant::now();
    mapreduce::sequential::run_sequential(
        reference.as_ref(),
        &app::local_context(&inputs),
        &files,
        &correct,
    )
    .map_err(|e| MrError::Setup(format!("sequential reference: {e}")))?;
    let text = fs::read_to_string(&correct)
        .map_err(|e| MrError::Setup(format!("reading {}: {e}", correct.display())))?;
    let expected = check::sorted_lines([text.as_str()]);
    eprintln!(
        "control: {} input files, {} expected output lines (sequential {}: {:.2} s)",
        files.len(),
        expected.len(),
        options.reference_app(),
        started.elapsed().as_secs_f64()
    );
    Ok((files, expected))
}

impl Run<'_> {
    pub(super) fn now(&self) -> u64 {
        self.clock.now_ns()
    }

    /// Appends an event (and writes it to `events.jsonl` at once); returns its index.
    pub(super) fn record(&mut self, event: MrEvent) -> usize {
        if let Some(file) = &mut self.events_file {
            if let Ok(line) = serde_json::to_string(&event) {
                let _ = writeln!(file, "{line}");
            }
        }
        if self.options.progress {
            eprintln!(
                "control: {:7.2} s {} {} {}{}{}",
                event.time as f64 / 1e9,
                event.kind,
                event.phase,
                event
                    .fault
                    .map(|f| format!("{} ", f.name()))
                    .unwrap_or_default(),
                event.process.clone().unwrap_or_default(),
                event
                    .detail
                    .as_ref()
                    .map(|d| format!(" ({d})"))
                    .unwrap_or_default()
            );
        }
        self.events.push(event);
        self.events.len() - 1
    }

    /// Uploads the binary, certificates and inputs, installs our iptables chain, starts the
    /// replicas and the workers.
    fn install(
        &mut self,
        binary: &Path,
        certs: &Path,
        staging: &Path,
        files: &[String],
    ) -> Result<(), MrError> {
        let cluster = self.cluster;
        let ssh = cluster.ssh();
        let setup = |e: String| MrError::Setup(e);
        let cert_files: Vec<PathBuf> = fs::read_dir(certs)
            .map_err(|e| setup(format!("reading {}: {e}", certs.display())))?
            .filter_map(|entry| entry.ok().map(|e| e.path()))
            .collect();
        std::thread::scope(|scope| {
            let handles: Vec<_> = cluster
                .nodes()
                .iter()
                .map(|node| {
                    let cert_files = &cert_files;
                    scope.spawn(move || -> Result<(), String> {
                        daemon::upload(ssh, node, binary, &deploy::binary(cluster, node))
                            .map_err(|e| e.to_string())?;
                        for file in cert_files {
                            let name = file.file_name().map(|n| n.to_string_lossy().into_owned());
                            let Some(name) = name else { continue };
                            let to = format!("{}/{name}", deploy::certs_dir(cluster, node));
                            daemon::upload(ssh, node, file, &to).map_err(|e| e.to_string())?;
                        }
                        ssh.exec(node, &apply::install_chain_script())
                            .map_err(|e| e.to_string())?;
                        Ok(())
                    })
                })
                .collect();
            handles.into_iter().try_for_each(|h| {
                h.join()
                    .unwrap_or_else(|_| Err("upload thread panicked".into()))
            })
        })
        .map_err(setup)?;
        let first = cluster
            .nodes()
            .first()
            .ok_or_else(|| setup("no nodes".into()))?;
        let job_dir = deploy::job_dir(cluster);
        for file in files {
            daemon::upload(
                ssh,
                first,
                &staging.join("inputs").join(file),
                &format!("{job_dir}/{file}"),
            )
            .map_err(|e| setup(format!("uploading {file}: {e}")))?;
        }
        for index in 0..self.options.replicas {
            let node = deploy::replica_node(cluster.nodes(), index)
                .ok_or_else(|| setup("no node for a replica".into()))?
                .clone();
            let spec = deploy::replica_spec(cluster, &node, index, &self.addresses, &self.job);
            let time = self.now();
            let pid = daemon::start(ssh, &node, &spec)
                .map_err(|e| setup(format!("starting replica {}: {e}", index + 1)))?;
            let mut event = MrEvent::new(time, "replica", "start");
            event.end_time = self.now();
            event.process = Some(spec.name.clone());
            event.node = Some(node.name.clone());
            event.pid = Some(pid);
            self.record(event);
            self.replica_specs.push((node, spec));
        }
        for _ in 0..self.options.workers {
            self.start_worker(None)
                .map_err(|e| setup(format!("starting a worker: {e}")))?;
        }
        Ok(())
    }

    pub(super) fn start_worker(&mut self, replaces: Option<&str>) -> Result<(), String> {
        let number = self.workers.len() + 1;
        if number > WORKERS_STARTED_MAX {
            return Err(format!("{WORKERS_STARTED_MAX} workers started already"));
        }
        let node = deploy::worker_node(self.cluster.nodes(), number)
            .ok_or("no node for a worker")?
            .clone();
        let spec = deploy::worker_spec(self.cluster, &node, number, &self.addresses, &self.job);
        let time = self.now();
        let pid = daemon::start(self.cluster.ssh(), &node, &spec).map_err(|e| e.to_string())?;
        let mut event = MrEvent::new(time, "worker", "start");
        event.end_time = self.now();
        event.process = Some(spec.name.clone());
        event.node = Some(node.name.clone());
        event.pid = Some(pid);
        event.detail = replaces.map(|r| format!("replaces {r}"));
        self.record(event);
        self.workers.push(WorkerProc {
            node,
            spec,
            pid,
            end: None,
            ended: None,
            paused: false,
        });
        Ok(())
    }

    /// Drives the job until it is done and the workers exited (or the deadline); returns the
    /// job's time (workers started to every reduce done) when it finished.
    fn drive(&mut self, monitor: &Monitor, interrupted: &AtomicBool) -> Option<Duration> {
        let started = Instant::now();
        let deadline = started + self.options.job_deadline;
        let mut next_fault_at = started + self.options.first_fault_after;
        let mut pending: Option<(MrFault, Instant)> = None;
        let mut active: Option<ActiveFault> = None;
        let mut done_since: Option<Instant> = None;
        let mut job_time = None;
        let mut last_progress = Instant::now();
        loop {
            if interrupted.load(Ordering::SeqCst) {
                self.errors.push("interrupted".into());
                break;
            }
            let now = Instant::now();
            if done_since.is_none() && monitor.done_at().is_some() {
                done_since = Some(now);
                job_time = Some(started.elapsed());
                let mut event = MrEvent::new(self.now(), "job", "done");
                event.detail = Some(format!(
                    "{:.2} s after the workers started",
                    started.elapsed().as_secs_f64()
                ));
                self.record(event);
            }
            // Faults: stop the one in effect when its time is up (or the job is done), start
            // the next when the calm is over.
            if let Some(fault) = &active {
                if now >= fault.until || done_since.is_some() {
                    let fault = fault.clone();
                    self.stop_fault(&fault);
                    active = None;
                    next_fault_at = Instant::now() + self.options.fault_interval;
                }
            }
            if active.is_none() && done_since.is_none() && now >= next_fault_at {
                let (fault, since) = match pending.take() {
                    Some(p) => p,
                    None => match self.plan.next_fault() {
                        Some(fault) => (fault, now),
                        None => (MrFault::KillWorker, far_future(now)),
                    },
                };
                if since <= now {
                    match self.start_fault(fault, monitor) {
                        FaultStart::Done(lasting) => {
                            active = lasting;
                            if active.is_none() {
                                next_fault_at = Instant::now() + self.options.fault_interval;
                            }
                        }
                        FaultStart::NoTarget if now.duration_since(since) < TARGET_WAIT_MAX => {
                            pending = Some((fault, since));
                        }
                        FaultStart::NoTarget => {
                            let mut event = MrEvent::new(self.now(), "nemesis", "skipped");
                            event.fault = Some(fault);
                            event.error = Some("no target (no leader or no live worker)".into());
                            self.record(event);
                            next_fault_at = Instant::now() + self.options.fault_interval;
                        }
                    }
                } else {
                    next_fault_at = far_future(now);
                }
            }
            self.supervise(done_since.is_some());
            let live = self.workers.iter().filter(|w| w.end.is_none()).count();
            if let Some(since) = done_since {
                if live == 0 || since.elapsed() >= self.options.exit_grace {
                    break;
                }
            }
            if Instant::now() >= deadline {
                self.errors.push(format!(
                    "the job was not done within {} s",
                    self.options.job_deadline.as_secs()
                ));
                break;
            }
            if self.options.progress && last_progress.elapsed() >= Duration::from_secs(2) {
                last_progress = Instant::now();
                if let Some(sample) = monitor.state.lock().ok().and_then(|s| s.latest().cloned()) {
                    eprintln!(
                        "control: {:7.2} s maps {}/{} reduces {}/{} reissued {} leader {} workers live {live}",
                        sample.time as f64 / 1e9,
                        sample.maps_done,
                        sample.maps_total,
                        sample.reduces_done,
                        sample.reduces_total,
                        sample.reissued,
                        sample.leader.as_deref().unwrap_or("-")
                    );
                }
            }
            std::thread::sleep(LOOP_INTERVAL);
        }
        if let Some(fault) = active.take() {
            self.stop_fault(&fault);
        }
        job_time
    }

    /// Notes workers that ended, replaces crashed ones while the job runs, and takes the
    /// early-exit snapshot when the first worker exits by itself.
    fn supervise(&mut self, job_done: bool) {
        let ssh = self.cluster.ssh();
        for index in 0..self.workers.len() {
            let worker = self.workers[index].clone();
            if worker.end.is_some() || worker.paused {
                continue;
            }
            match daemon::state(ssh, &worker.node, &worker.spec) {
                Ok(ProcessState::NotRunning) => {}
                Ok(_) => continue,
                Err(e) => {
                    self.errors
                        .push(format!("state of {}: {e}", worker.spec.name));
                    continue;
                }
            }
            let time = self.now();
            let end = self.exit_reason(&worker);
            if end == "job-done" && self.first_exit.is_none() {
                let digest = ssh
                    .exec(
                        &worker.node,
                        &deploy::output_digest_script(&deploy::job_dir(self.cluster)),
                    )
                    .map(|d| d.trim().to_string());
                match digest {
                    Ok(digest) => self.first_exit = Some((worker.spec.name.clone(), digest)),
                    Err(e) => self.errors.push(format!("output digest: {e}")),
                }
            }
            self.workers[index].end = Some(end.clone());
            self.workers[index].ended = Some(time);
            let mut event = MrEvent::new(time, "worker", "exit");
            event.end_time = self.now();
            event.process = Some(worker.spec.name.clone());
            event.node = Some(worker.node.name.clone());
            event.pid = Some(worker.pid);
            event.detail = Some(end.clone());
            self.record(event);
            if end != "job-done" && !job_done {
                if let Err(e) = self.start_worker(Some(&worker.spec.name)) {
                    self.errors
                        .push(format!("starting a replacement worker: {e}"));
                }
            }
        }
    }

    /// How an exited worker ended, from the stats line it prints last.
    fn exit_reason(&self, worker: &WorkerProc) -> String {
        let script = format!(
            "grep '^{}' {} | tail -n 1",
            mapreduce::worker::WORKER_STATS_PREFIX,
            crate::cmd::shell_quote(&worker.spec.log_file())
        );
        let line = self
            .cluster
            .ssh()
            .exec(&worker.node, &script)
            .unwrap_or_default();
        line.trim()
            .strip_prefix(mapreduce::worker::WORKER_STATS_PREFIX)
            .and_then(|json| serde_json::from_str::<Value>(json).ok())
            .and_then(|v| v["exit"].as_str().map(String::from))
            .unwrap_or_else(|| "vanished".into())
    }

    /// Downloads the job's output into `output/` and returns its sorted lines and digest.
    fn collect(&mut self, run_dir: &RunDir) -> Option<(Vec<String>, Option<String>)> {
        let ssh = self.cluster.ssh();
        let node = self.cluster.nodes().first()?.clone();
        let job_dir = deploy::job_dir(self.cluster);
        if self.options.mutation.as_deref() == Some("truncate-output") {
            let script = format!(
                "cd {} && f=mr-out-0 && s=$(stat -c %s $f) && truncate -s $((s / 2)) $f",
                crate::cmd::shell_quote(&job_dir)
            );
            let mut event = MrEvent::new(self.now(), "mutation", "truncate-output");
            event.process = Some("mr-out-0".into());
            if let Err(e) = ssh.exec(&node, &script) {
                event.error = Some(e.to_string());
            }
            self.record(event);
        }
        let digest = ssh
            .exec(&node, &deploy::output_digest_script(&job_dir))
            .map(|d| d.trim().to_string())
            .ok();
        let listing = match ssh.exec(
            &node,
            &format!("cd {} && ls", crate::cmd::shell_quote(&job_dir)),
        ) {
            Ok(listing) => listing,
            Err(e) => {
                self.errors.push(format!("listing the output: {e}"));
                return None;
            }
        };
        let output_dir = run_dir.path.join("output");
        if let Err(e) = fs::create_dir_all(&output_dir) {
            self.errors
                .push(format!("creating {}: {e}", output_dir.display()));
            return None;
        }
        let mut texts = Vec::new();
        for name in listing
            .lines()
            .map(str::trim)
            .filter(|n| n.starts_with("mr-out-"))
        {
            let local = output_dir.join(name);
            if let Err(e) = ssh.download(&node, &format!("{job_dir}/{name}"), &local) {
                self.errors.push(format!("downloading {name}: {e}"));
                return None;
            }
            texts.push(fs::read_to_string(&local).unwrap_or_default());
        }
        Some((
            check::sorted_lines(texts.iter().map(String::as_str)),
            digest,
        ))
    }

    /// Stops what still runs (workers that did not exit are noted as such), heals partitions.
    fn stop_everything(&mut self) {
        let ssh = self.cluster.ssh();
        if let Err(e) = self.heal_partitions() {
            self.errors.push(format!("healing: {e}"));
        }
        for index in 0..self.workers.len() {
            let worker = self.workers[index].clone();
            if worker.end.is_some() {
                continue;
            }
            if let Err(e) = daemon::stop(ssh, &worker.node, &worker.spec, 1000) {
                self.errors
                    .push(format!("stopping {}: {e}", worker.spec.name));
            }
            self.workers[index].end = Some("stopped".into());
            self.workers[index].ended = Some(self.now());
            let mut event = MrEvent::new(self.now(), "worker", "exit");
            event.process = Some(worker.spec.name.clone());
            event.node = Some(worker.node.name.clone());
            event.detail = Some("stopped by control: it had not exited".into());
            self.record(event);
        }
        for (node, spec) in self.replica_specs.clone() {
            if let Err(e) = daemon::stop(ssh, &node, &spec, 1000) {
                self.errors.push(format!("stopping {}: {e}", spec.name));
            }
        }
        for node in self.cluster.nodes() {
            let _ = ssh.exec(node, &apply::remove_chain_script());
        }
    }

    fn collect_logs(&mut self, run_dir: &RunDir) {
        for node in self.cluster.nodes() {
            let dest = run_dir.node_dir(&node.name);
            if let Err(e) = fs::create_dir_all(&dest) {
                self.errors
                    .push(format!("creating {}: {e}", dest.display()));
                continue;
            }
            if let Err(e) = daemon::collect_logs(
                self.cluster.ssh(),
                node,
                &self.cluster.node_dir(node),
                &dest,
            ) {
                self.errors
                    .push(format!("collecting logs of {}: {e}", node.name));
            }
        }
    }

    /// The events in time order, with leader changes (from the monitor's samples) added.
    fn finish_events(&mut self, samples: &[Sample]) -> Vec<MrEvent> {
        let mut events = self.events.clone();
        let mut last: Option<(String, u64)> = None;
        for sample in samples {
            if let Some(leader) = &sample.leader {
                let current = (leader.clone(), sample.term);
                if last.as_ref() != Some(&current) {
                    let mut event = MrEvent::new(sample.time, "leader", "elected");
                    event.process = Some(format!("mr-{leader}"));
                    event.detail = Some(format!("{leader} leads in term {}", sample.term));
                    events.push(event);
                    last = Some(current);
                }
            }
        }
        events.sort_by_key(|e| e.time);
        events
    }
}

fn far_future(now: Instant) -> Instant {
    now + Duration::from_secs(365 * 24 * 3600)
}
