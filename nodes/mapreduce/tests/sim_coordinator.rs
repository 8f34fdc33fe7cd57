//! Step 3 in the simulator: the coordinator state machine replicated by Raft
//! on 3 nodes under virtual time; simulated workers (some of which lose
//! their task) talk to whoever leads; the leader is crashed mid-job and the
//! job still finishes with the sequential run's output.

#![allow(clippy::unwrap_used)] // test helpers: a failed setup step should panic

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::time::Duration;

use mapreduce::app::{AppContext, Application, KeyValue, WordCount};
use mapreduce::worker::{partition, reduce_sorted};
use mapreduce::{Command, Coordinator, JobSpec, Reply, Task, TaskKind};
use sim::{lab, Sim, SimConfig, SimError, StateMachine};

/// The coordinator as the simulator's service.
#[derive(Default)]
struct Replica(Coordinator);

impl StateMachine for Replica {
    /// `None` for an undecodable command (never proposed here).
    type Output = Option<Reply>;

    fn apply(&mut self, _index: u64, command: &[u8]) -> Option<Reply> {
        Command::decode(command).ok().map(|c| self.0.apply(&c))
    }
    fn snapshot(&self) -> Vec<u8> {
        self.0.encode_snapshot()
    }
    fn restore(&mut self, snapshot: &[u8]) {
        self.0 = Coordinator::decode_snapshot(snapshot).unwrap_or_default();
    }
}

const TASK_TIMEOUT_MS: u64 = 1_000;
const WORKERS: usize = 3;
const JOB_DEADLINE: Duration = Duration::from_secs(120);

enum Pending {
    Request,
    Complete(Task),
}

enum WorkerState {
    Idle {
        next_us: u64,
    },
    Awaiting {
        node: u64,
        index: u64,
        term: u64,
        sent_us: u64,
        pending: Pending,
    },
    Running {
        task: Task,
        done_us: u64,
        lost: bool,
    },
    Exited,
}

/// The job's files in memory: inputs, intermediate buckets, outputs.
#[derive(Default)]
struct Files {
    inputs: BTreeMap<String, String>,
    intermediate: HashMap<(u32, u32), Vec<KeyValue>>,
    outputs: HashMap<u32, Vec<String>>,
}

fn context() -> AppContext {
    AppContext {
        work_dir: Path::new(".").to_path_buf(),
        worker_id: 0,
        ids_are_pids: false,
    }
}

impl Files {
    fn run(&mut self, task: &Task) {
        match task.kind {
            TaskKind::Map => {
                let file = task.file.clone().unwrap_or_default();
                let pairs = WordCount
                    .map(&context(), &file, &self.inputs[&file])
                    .unwrap();
                let mut buckets = vec![Vec::new(); task.n_reduce as usize];
                for pair in pairs {
                    buckets[partition(&pair.key, task.n_reduce) as usize].push(pair);
                }
                for (r, bucket) in buckets.into_iter().enumerate() {
                    self.intermediate.insert((task.index, r as u32), bucket);
                }
            }
            TaskKind::Reduce => {
                let mut pairs = Vec::new();
                for m in 0..task.n_map {
                    let bucket = self
                        .intermediate
                        .get(&(m, task.index))
                        .unwrap_or_else(|| panic!("reduce {} before map {m} finished", task.index));
                    pairs.extend(bucket.iter().cloned());
                }
                let lines = reduce_sorted(&WordCount, &context(), pairs).unwrap();
                self.outputs.insert(
                    task.index,
                    lines.into_iter().map(|(k, v)| format!("{k} {v}")).collect(),
                );
            }
        }
    }

    fn sorted_output(&self) -> Vec<String> {
        let mut lines: Vec<String> = self.outputs.values().flatten().cloned().collect();
        lines.sort();
        lines
    }

    fn sequential(&self) -> Vec<String> {
        let mut pairs = Vec::new();
        for (file, text) in &self.inputs {
            pairs.extend(WordCount.map(&context(), file, text).unwrap());
        }
        let mut lines: Vec<String> = reduce_sorted(&WordCount, &context(), pairs)
            .unwrap()
            .into_iter()
            .map(|(k, v)| format!("{k} {v}"))
            .collect();
        lines.sort();
        lines
    }
}

fn claim(sim: &Sim<Replica>, message: String) -> SimError {
    SimError::Claim {
        at_us: sim.now_us(),
        message: format!("{message}\n{}", sim.describe()),
    }
}

fn scenario(seed: u64, unreliable: bool) -> Result<(), SimError> {
    let dir = tempfile::tempdir().map_err(|e| SimError::Panic(e.to_string()))?;
    let names = mapreduce::input::generate(dir.path(), seed, 6, 3_000)
        .map_err(|e| SimError::Panic(e.to_string()))?;
    let mut files = Files::default();
    for name in &names {
        let text = std::fs::read_to_string(dir.path().join(name))
            .map_err(|e| SimError::Panic(e.to_string()))?;
        files.inputs.insert(name.clone(), text);
    }

    let mut config = SimConfig::new(3, seed);
    config.record_outputs = true;
    config.snapshot_every_entries = Some(25);
    if unreliable {
        // The lab's unreliable network: delays, 10% loss each way, reordering.
        config.net = sim::NetConfig::unreliable();
    }
    let mut sim = Sim::new(config, |_| Replica::default())?;
    let spec = JobSpec {
        files: names.clone(),
        n_reduce: 10,
        task_timeout_ms: TASK_TIMEOUT_MS,
    };
    let total_tasks = (names.len() + 10) as u64;

    // Outputs by node and index, with the term of the entry.
    let mut applied: HashMap<u64, BTreeMap<u64, (u64, Option<Reply>)>> = HashMap::new();
    let mut started = false;
    let mut workers: Vec<WorkerState> = (0..WORKERS)
        .map(|_| WorkerState::Idle { next_us: 0 })
        .collect();
    let mut acknowledged_completions = 0u64;
    let mut crashed: Option<(u64, u64)> = None; // (node, restart at)
    let mut completions_before_crash = 0u64;
    let mut lost_tasks = 0u64;

    while !workers.iter().all(|w| matches!(w, WorkerState::Exited)) {
        if sim.now() > JOB_DEADLINE {
            return Err(claim(&sim, format!("job not done by {JOB_DEADLINE:?}")));
        }
        sim.run_for(Duration::from_millis(10))?;
        let now_us = sim.now_us();
        for node in sim.ids().to_vec() {
            for a in sim.take_outputs(node) {
                applied
                    .entry(node)
                    .or_default()
                    .insert(a.index, (a.term, a.output));
            }
        }
        // The nemesis: kill the leader once a third of the tasks are done,
        // bring it back 2 s later.
        if crashed.is_none() && acknowledged_completions * 3 >= total_tasks {
            if let Some(leader) = lab::current_leader(&sim) {
                println!("crashing leader {leader} at {:.2} s after {acknowledged_completions} completions", now_us as f64 / 1e6);
                completions_before_crash = acknowledged_completions;
                sim.crash(leader);
                crashed = Some((leader, now_us + 2_000_000));
            }
        }
        if let Some((node, at_us)) = crashed {
            if at_us <= now_us && !sim.is_up(node) {
                sim.restart(node)?;
            }
        }
        let leader = lab::current_leader(&sim);
        if !started {
            if let Some(leader) = leader {
                if sim
                    .propose(leader, Command::Start(spec.clone()).encode())
                    .is_ok()
                {
                    started = true;
                }
            }
        }
        for (id, worker) in workers.iter_mut().enumerate() {
            let next = match std::mem::replace(worker, WorkerState::Exited) {
                WorkerState::Exited => WorkerState::Exited,
                WorkerState::Idle { next_us } if next_us > now_us => WorkerState::Idle { next_us },
                WorkerState::Idle { .. } => {
                    let command = Command::RequestTask {
                        worker: id as u64,
                        now_ms: now_us / 1000,
                    };
                    propose(&mut sim, leader, command, Pending::Request, now_us)
                }
                WorkerState::Running {
                    task,
                    done_us,
                    lost,
                } if done_us <= now_us => {
                    if lost {
                        // The worker died with its task; a fresh one asks again.
                        lost_tasks += 1;
                        WorkerState::Idle { next_us: now_us }
                    } else {
                        files.run(&task);
                        let command = Command::Complete {
                            kind: task.kind,
                            index: task.index,
                            attempt: task.attempt,
                            now_ms: now_us / 1000,
                        };
                        propose(&mut sim, leader, command, Pending::Complete(task), now_us)
                    }
                }
                running @ WorkerState::Running { .. } => running,
                WorkerState::Awaiting {
                    node,
                    index,
                    term,
                    sent_us,
                    pending,
                } => {
                    match applied.get(&node).and_then(|m| m.get(&index)) {
                        Some((applied_term, Some(reply))) if *applied_term == term => {
                            match (pending, reply) {
                                (Pending::Request, Reply::Task(task)) => {
                                    let duration_us = sim.rng().between(50_000, 300_000);
                                    let lost = sim.rng().below(10) == 0;
                                    WorkerState::Running {
                                        task: task.clone(),
                                        done_us: now_us + duration_us,
                                        lost,
                                    }
                                }
                                (Pending::Request, Reply::Exit) => WorkerState::Exited,
                                (Pending::Request, _) => WorkerState::Idle {
                                    next_us: now_us + 50_000,
                                },
                                (Pending::Complete(_), _) => {
                                    acknowledged_completions += 1;
                                    WorkerState::Idle { next_us: now_us }
                                }
                            }
                        }
                        // Another entry took the slot (leader changed), or no
                        // answer in time: retry the same request.
                        Some(_) => retry(&mut sim, leader, id, pending, now_us),
                        None if now_us > sent_us + 1_000_000 => {
                            retry(&mut sim, leader, id, pending, now_us)
                        }
                        None => WorkerState::Awaiting {
                            node,
                            index,
                            term,
                            sent_us,
                            pending,
                        },
                    }
                }
            };
            *worker = next;
        }
    }

    if crashed.is_none() {
        return Err(claim(&sim, "the leader was never crashed".into()));
    }
    println!(
        "job done at {:.2} s; completions acknowledged {acknowledged_completions} (before crash {completions_before_crash}); lost tasks {lost_tasks}",
        sim.now_us() as f64 / 1e6
    );
    // Every live replica agrees the job is done (nothing was forgotten).
    sim.run_for(Duration::from_secs(1))?;
    for node in sim.ids().to_vec() {
        if let Some(replica) = sim.machine(node) {
            if !replica.0.is_done() {
                return Err(claim(
                    &sim,
                    format!(
                        "node {node} does not know the job is done: {:?}",
                        replica.0.progress()
                    ),
                ));
            }
        }
    }
    let (output, expected) = (files.sorted_output(), files.sequential());
    if output != expected {
        return Err(claim(
            &sim,
            format!(
                "output ({} lines) differs from sequential ({} lines)",
                output.len(),
                expected.len()
            ),
        ));
    }
    Ok(())
}

fn propose(
    sim: &mut Sim<Replica>,
    leader: Option<u64>,
    command: Command,
    pending: Pending,
    now_us: u64,
) -> WorkerState {
    let Some(node) = leader else {
        return retry_later(command, pending, now_us);
    };
    let term = sim.status(node).map(|s| s.term).unwrap_or(0);
    match sim.propose(node, command.encode()) {
        Ok(index) => WorkerState::Awaiting {
            node,
            index,
            term,
            sent_us: now_us,
            pending,
        },
        Err(_) => retry_later(command, pending, now_us),
    }
}

/// No leader to talk to: a request goes back to idle (asks again), a
/// completion is re-sent on the next step.
fn retry_later(_command: Command, pending: Pending, now_us: u64) -> WorkerState {
    match pending {
        Pending::Request => WorkerState::Idle {
            next_us: now_us + 50_000,
        },
        Pending::Complete(task) => WorkerState::Running {
            task,
            done_us: now_us + 50_000,
            lost: false,
        },
    }
}

fn retry(
    sim: &mut Sim<Replica>,
    leader: Option<u64>,
    id: usize,
    pending: Pending,
    now_us: u64,
) -> WorkerState {
    let command = match &pending {
        Pending::Request => Command::RequestTask {
            worker: id as u64,
            now_ms: now_us / 1000,
        },
        Pending::Complete(task) => Command::Complete {
            kind: task.kind,
            index: task.index,
            attempt: task.attempt,
            now_ms: now_us / 1000,
        },
    };
    propose(sim, leader, command, pending, now_us)
}

#[test]
fn replicated_coordinator_survives_a_leader_crash_mid_job() {
    sim::sweep(
        "replicated_coordinator_survives_a_leader_crash_mid_job",
        4,
        |seed| scenario(seed, false),
    );
}

#[test]
fn replicated_coordinator_survives_a_leader_crash_on_an_unreliable_network() {
    sim::sweep(
        "replicated_coordinator_survives_a_leader_crash_on_an_unreliable_network",
        4,
        |seed| scenario(seed, true),
    );
}
