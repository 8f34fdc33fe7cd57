//! Generator of large histories for tests and benchmarks (pure: the seed is the
//! only source of randomness, no clock, no I/O).
//!
//! It simulates `clients` clients against one real atomic store with `keys`
//! keys. Each operation is invoked, takes effect at a single instant (its
//! linearization point) some time later, and returns some time after that, so
//! the invoke/return intervals of different clients overlap the way a real
//! service's do. Because every effect is applied to the store at one instant,
//! in time order, the history is linearizable by construction. A small share
//! of operations end `info` (they took effect, or not, and the client never
//! learns which); the client then continues under a new process id, as
//! Jepsen's clients do after an indeterminate failure.
//!
//! Written values are unique (`x<n>y` strings for kv, increasing integers for
//! registers), which is what the graph pre-pass needs and what our workloads do.
//!
//! With [`Anomaly`] set, one short sequence of three operations by one client
//! on one key is made wrong in the middle of the history (see [`Anomaly`]);
//! those operations' ids are returned so tests can assert the checker blames
//! them. The same seed gives the same history, bit for bit.

use std::cmp::Reverse;
use std::collections::BinaryHeap;

use crate::history::{History, Operation, Status};
use crate::model::ModelKind;
use crate::value::Value;

/// A small deterministic random number generator (SplitMix64): enough for
/// workloads, trivially reproducible from its seed, no dependency.
#[derive(Clone, Debug)]
pub struct SplitMix64 {
    state: u64,
}

impl SplitMix64 {
    /// A generator whose whole future is determined by `seed`.
    pub fn new(seed: u64) -> SplitMix64 {
        SplitMix64 { state: seed }
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..bound` (`bound` > 0; 0 gives 0).
    pub fn below(&mut self, bound: u64) -> u64 {
        if bound == 0 {
            return 0;
        }
        // Multiply-shift: unbiased enough for workloads and far faster than rejection.
        ((u128::from(self.next_u64()) * u128::from(bound)) >> 64) as u64
    }

    /// Uniform in `low..=high`.
    pub fn between(&mut self, low: u64, high: u64) -> u64 {
        low + self.below(high.saturating_sub(low).saturating_add(1))
    }

    /// True with probability `per_mille` / 1000.
    pub fn chance_per_mille(&mut self, per_mille: u32) -> bool {
        self.below(1000) < u64::from(per_mille)
    }
}

/// The model family a generated history is written for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum GeneratedModel {
    /// `get`/`put`/`append` on strings (checked with [`ModelKind::Kv`]).
    Kv,
    /// `read`/`write` on integers, initial value nil.
    Register,
    /// `read`/`write`/`cas` on integers, initial value nil; a CAS whose
    /// expected value did not match completes `fail`.
    CasRegister,
}

impl GeneratedModel {
    /// The model the checker should use for histories of this family.
    pub fn model_kind(self) -> ModelKind {
        match self {
            GeneratedModel::Kv => ModelKind::Kv,
            GeneratedModel::Register => ModelKind::Register {
                initial: Value::Nil,
            },
            GeneratedModel::CasRegister => ModelKind::CasRegister {
                initial: Value::Nil,
            },
        }
    }

    /// `kv`, `register` or `cas-register`.
    pub fn name(self) -> &'static str {
        match self {
            GeneratedModel::Kv => "kv",
            GeneratedModel::Register => "register",
            GeneratedModel::CasRegister => "cas-register",
        }
    }
}

/// One injected bug. Both are a sequence of three operations by one client on
/// one key that no other client touches meanwhile: write A, write B, read.
/// Whatever else happens, the read comes after the second write in real
/// time, so the history is not linearizable.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Anomaly {
    /// Both writes take effect but the read returns A (the older value).
    StaleRead,
    /// The second write is acknowledged but never applied (for kv it is an
    /// `append`), so the read returns the store's value, without it.
    LostWrite,
}

/// What to generate.
#[derive(Clone, Debug)]
pub struct GenerateConfig {
    /// Model family.
    pub model: GeneratedModel,
    /// Concurrent clients (each has one operation outstanding at a time).
    pub clients: usize,
    /// Keys `k0`..`k{keys-1}`, chosen uniformly.
    pub keys: usize,
    /// Operations in the history (the anomaly's three included).
    pub operations: usize,
    /// Share of operations, in thousandths, that end `info`.
    pub info_per_mille: u32,
    /// The injected bug, if any.
    pub anomaly: Option<Anomaly>,
    /// Seed of everything random.
    pub seed: u64,
}

impl GenerateConfig {
    /// A linearizable workload with 1% info operations.
    pub fn new(
        model: GeneratedModel,
        clients: usize,
        keys: usize,
        operations: usize,
        seed: u64,
    ) -> GenerateConfig {
        GenerateConfig {
            model,
            clients,
            keys,
            operations,
            info_per_mille: 10,
            anomaly: None,
            seed,
        }
    }
}

/// A generated history and what was done to it.
#[derive(Clone, Debug)]
pub struct Generated {
    /// The history.
    pub history: History,
    /// The seed it came from.
    pub seed: u64,
    /// The injected anomaly, if one was injected.
    pub anomaly: Option<Anomaly>,
    /// The key of the anomaly.
    pub anomaly_key: Option<String>,
    /// Ids (into `history.operations`) of the three anomaly operations.
    pub anomaly_operations: Vec<usize>,
}

/// Times in simulated nanoseconds: think time between a client's operations,
/// invoke-to-effect and effect-to-return delays. The ranges overlap so that
/// concurrent operations interleave in every order.
const THINK_NANOS_MAX: u64 = 2_000;
const EFFECT_DELAY_NANOS_MAX: u64 = 4_000;
const RETURN_DELAY_NANOS_MAX: u64 = 4_000;
/// How long a client waits before looking again when its key is reserved.
const RETRY_NANOS: u64 = 500;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Phase {
    Invoke,
    Effect,
    Return,
}

/// What a client is doing.
#[derive(Clone, Debug)]
struct InFlight {
    op: usize,
    key: usize,
    /// The operation is the anomaly's step 0, 1 or 2.
    anomaly_step: Option<usize>,
    /// Ends `info`.
    info: bool,
    /// Takes effect (false for a lost write, or an info op that never happened).
    applies: bool,
}

/// The store value of one key.
#[derive(Clone, Debug)]
enum Stored {
    Text(String),
    Int(Option<i64>),
}

struct Simulation<'a> {
    config: &'a GenerateConfig,
    rng: SplitMix64,
    store: Vec<Stored>,
    operations: Vec<Operation>,
    /// Next event position (invoke_index / return_index).
    events: usize,
    /// Unique value counter.
    next_value: i64,
    process_of: Vec<i64>,
    in_flight: Vec<Option<InFlight>>,
    in_flight_per_key: Vec<usize>,
    invoked: usize,
    /// (client, key, step) of the anomaly while it runs.
    anomaly_run: Option<(usize, usize, usize)>,
    anomaly_done: bool,
    anomaly_ops: Vec<usize>,
    /// The value A of the anomaly's first write.
    anomaly_value: Option<Value>,
    queue: BinaryHeap<Reverse<(u64, u64, usize, Phase)>>,
    sequence: u64,
}

/// Generates a history; see the module doc. `operations` is reached exactly
/// (if `clients` and `keys` are at least 1).
pub fn generate(config: &GenerateConfig) -> Generated {
    let clients = config.clients.max(1);
    let keys = config.keys.max(1);
    let initial = match config.model {
        GeneratedModel::Kv => Stored::Text(String::new()),
        _ => Stored::Int(None),
    };
    let mut sim = Simulation {
        config,
        rng: SplitMix64::new(config.seed),
        store: vec![initial; keys],
        operations: Vec::with_capacity(config.operations),
        events: 0,
        next_value: 1,
        process_of: (0..clients as i64).collect(),
        in_flight: vec![None; clients],
        in_flight_per_key: vec![0; keys],
        invoked: 0,
        anomaly_run: None,
        anomaly_done: config.anomaly.is_none(),
        anomaly_ops: Vec::new(),
        anomaly_value: None,
        queue: BinaryHeap::new(),
        sequence: 0,
    };
    for client in 0..clients {
        let start = sim.rng.below(THINK_NANOS_MAX);
        sim.schedule(start, client, Phase::Invoke);
    }
    while let Some(Reverse((time, _, client, phase))) = sim.queue.pop() {
        match phase {
            Phase::Invoke => sim.invoke(time, client, keys),
            Phase::Effect => sim.effect(time, client),
            Phase::Return => sim.complete(time, client),
        }
    }
    let anomaly_key = match (config.anomaly, sim.anomaly_ops.first()) {
        (Some(_), Some(&id)) => sim.operations[id].key.clone(),
        _ => None,
    };
    let events = sim.events;
    Generated {
        history: History {
            operations: sim.operations,
            events,
            skipped_events: 0,
        },
        seed: config.seed,
        anomaly: config.anomaly.filter(|_| sim.anomaly_ops.len() == 3),
        anomaly_key,
        anomaly_operations: sim.anomaly_ops,
    }
}

impl Simulation<'_> {
    fn schedule(&mut self, time: u64, client: usize, phase: Phase) {
        self.sequence += 1;
        self.queue
            .push(Reverse((time, self.sequence, client, phase)));
    }

    fn fresh_value(&mut self) -> i64 {
        let v = self.next_value;
        self.next_value += 1;
        v
    }

    fn fresh_text(&mut self) -> String {
        format!("x{}y", self.fresh_value())
    }

    /// Starts the anomaly at the half-way point with the first client that
    /// invokes then; returns the key and step this client must do next.
    fn anomaly_step_for(&mut self, client: usize, keys: usize) -> Option<(usize, usize)> {
        if let Some((c, key, step)) = self.anomaly_run {
            return (c == client).then_some((key, step));
        }
        if self.anomaly_done || self.invoked < self.config.operations / 2 {
            return None;
        }
        if self.config.operations.saturating_sub(self.invoked) < 3 {
            return None;
        }
        let key = self.rng.below(keys as u64) as usize;
        self.anomaly_run = Some((client, key, 0));
        Some((key, 0))
    }

    fn invoke(&mut self, time: u64, client: usize, keys: usize) {
        if self.invoked >= self.config.operations {
            return;
        }
        let anomaly = self.anomaly_step_for(client, keys);
        let (key, anomaly_step) = match anomaly {
            Some((key, step)) => {
                if step == 0 && self.in_flight_per_key[key] > 0 {
                    // Wait for the key to drain so the three steps are alone on it.
                    self.schedule(time + RETRY_NANOS, client, Phase::Invoke);
                    return;
                }
                (key, Some(step))
            }
            None => {
                let mut key = self.rng.below(keys as u64) as usize;
                if let Some((_, reserved, _)) = self.anomaly_run {
                    if key == reserved {
                        if keys == 1 {
                            self.schedule(time + RETRY_NANOS, client, Phase::Invoke);
                            return;
                        }
                        key = (key + 1) % keys;
                    }
                }
                (key, None)
            }
        };
        let (f, input, info, applies) = match anomaly_step {
            Some(step) => self.anomaly_invocation(step),
            None => self.random_invocation(),
        };
        let id = self.operations.len();
        self.operations.push(Operation {
            id,
            process: self.process_of[client],
            f: f.to_string(),
            key: Some(format!("k{key}")),
            input,
            output: Value::Nil,
            status: Status::Info,
            invoke_index: self.events,
            return_index: None,
            invoke_time: Some(time as i64),
            return_time: None,
            line: 0,
        });
        self.events += 1;
        self.invoked += 1;
        self.in_flight_per_key[key] += 1;
        if anomaly_step.is_some() {
            self.anomaly_ops.push(id);
        }
        self.in_flight[client] = Some(InFlight {
            op: id,
            key,
            anomaly_step,
            info,
            applies,
        });
        let effect = time + 1 + self.rng.below(EFFECT_DELAY_NANOS_MAX);
        self.schedule(effect, client, Phase::Effect);
    }

    /// The three steps: write A, write B (lost or not), read.
    fn anomaly_invocation(&mut self, step: usize) -> (&'static str, Value, bool, bool) {
        let lost = self.config.anomaly == Some(Anomaly::LostWrite);
        let kv = self.config.model == GeneratedModel::Kv;
        match step {
            0 => {
                let value = if kv {
                    Value::Str(self.fresh_text())
                } else {
                    Value::Int(self.fresh_value())
                };
                self.anomaly_value = Some(value.clone());
                (if kv { "put" } else { "write" }, value, false, true)
            }
            1 => {
                if kv {
                    let f = if lost { "append" } else { "put" };
                    (f, Value::Str(self.fresh_text()), false, !lost)
                } else {
                    ("write", Value::Int(self.fresh_value()), false, !lost)
                }
            }
            _ => (if kv { "get" } else { "read" }, Value::Nil, false, true),
        }
    }

    fn random_invocation(&mut self) -> (&'static str, Value, bool, bool) {
        let info = self.rng.chance_per_mille(self.config.info_per_mille);
        let applies = !info || self.rng.below(2) == 0;
        let roll = self.rng.below(100);
        let (f, input) = match self.config.model {
            GeneratedModel::Kv => {
                if roll < 50 {
                    ("get", Value::Nil)
                } else if roll < 65 {
                    ("put", Value::Str(self.fresh_text()))
                } else {
                    ("append", Value::Str(self.fresh_text()))
                }
            }
            GeneratedModel::Register => {
                if roll < 50 {
                    ("read", Value::Nil)
                } else {
                    ("write", Value::Int(self.fresh_value()))
                }
            }
            GeneratedModel::CasRegister => {
                if roll < 40 {
                    ("read", Value::Nil)
                } else if roll < 65 {
                    ("write", Value::Int(self.fresh_value()))
                } else {
                    // The expected value is filled in at the effect, when it can
                    // be the current one (likely success) or an old one (failure).
                    ("cas", Value::Nil)
                }
            }
        };
        (f, input, info, applies)
    }

    /// The linearization point: apply to the store, fill in the result.
    fn effect(&mut self, time: u64, client: usize) {
        let Some(flight) = self.in_flight[client].clone() else {
            return;
        };
        let return_delay = 1 + self.rng.below(RETURN_DELAY_NANOS_MAX);
        let stale = self.config.anomaly == Some(Anomaly::StaleRead);
        let f = self.operations[flight.op].f.clone();
        let stored = &mut self.store[flight.key];
        let mut failed = false;
        let output = match (f.as_str(), stored) {
            ("get", Stored::Text(text)) => Value::Str(text.clone()),
            ("put", Stored::Text(text)) => {
                let v = self.operations[flight.op].input.clone();
                if flight.applies {
                    *text = v.as_str().unwrap_or_default().to_string();
                }
                v
            }
            ("append", Stored::Text(text)) => {
                let v = self.operations[flight.op].input.clone();
                if flight.applies {
                    text.push_str(v.as_str().unwrap_or_default());
                }
                v
            }
            ("read", Stored::Int(current)) => current.map_or(Value::Nil, Value::Int),
            ("write", Stored::Int(current)) => {
                let v = self.operations[flight.op].input.clone();
                if flight.applies {
                    *current = v.as_int();
                }
                v
            }
            ("cas", Stored::Int(current)) => {
                let new = self.next_value;
                self.next_value += 1;
                // Expect the current value two times in three, else a stale one.
                let old = match *current {
                    Some(c) if self.rng.below(3) > 0 => Some(c),
                    Some(c) => Some(c - 1 - self.rng.below(3) as i64),
                    None => None,
                };
                let old_value = old.map_or(Value::Nil, Value::Int);
                let input = Value::List(vec![old_value, Value::Int(new)]);
                self.operations[flight.op].input = input.clone();
                if old == *current {
                    if flight.applies {
                        *current = Some(new);
                    }
                } else {
                    failed = true;
                }
                input
            }
            (_, _) => Value::Nil,
        };
        let output = match (flight.anomaly_step, stale, &self.anomaly_value) {
            // The stale read returns A although B was applied.
            (Some(2), true, Some(a)) => a.clone(),
            _ => output,
        };
        let op = &mut self.operations[flight.op];
        op.output = output;
        if failed && !flight.info {
            op.status = Status::Fail;
        }
        self.schedule(time + return_delay, client, Phase::Return);
    }

    fn complete(&mut self, time: u64, client: usize) {
        let Some(flight) = self.in_flight[client].take() else {
            return;
        };
        self.in_flight_per_key[flight.key] -= 1;
        let op = &mut self.operations[flight.op];
        op.return_time = Some(time as i64);
        if flight.info {
            op.status = Status::Info;
            op.output = Value::Nil;
            op.return_index = None;
            // Jepsen: a client whose operation is indeterminate continues as a new process.
            self.process_of[client] += self.config.clients.max(1) as i64;
        } else {
            if op.status != Status::Fail {
                op.status = Status::Ok;
            }
            op.return_index = Some(self.events);
        }
        self.events += 1;
        if let Some(step) = flight.anomaly_step {
            if let Some((c, key, _)) = self.anomaly_run {
                self.anomaly_run = if step >= 2 {
                    None
                } else {
                    Some((c, key, step + 1))
                };
            }
            if step >= 2 {
                self.anomaly_done = true;
            }
        }
        let think = self.rng.below(THINK_NANOS_MAX);
        self.schedule(time + think, client, Phase::Invoke);
    }
}
