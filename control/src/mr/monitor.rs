//! Watching the replicated coordinator from the control side: which replica leads, and how
//! far the job is, sampled every few hundred milliseconds.
//!
//! I/O side. The monitor is one thread that enters the cluster's client namespace first (its
//! QUIC socket is created there, see [`crate::netns`]) and asks each replica for its role and
//! progress directly ([`QuicLink::ask`], no leader-following), so a paused or killed replica
//! shows up as a missed answer rather than a redirect. The nemesis reads [`MonitorState::leader`]
//! to find whom to kill; the report draws [`Sample`]s as the task-progress timeline.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use mapreduce::net::{CoordinatorAddress, QuicLink, Request, Response};
use mapreduce::Progress;
use serde::Serialize;

use crate::history::TestClock;

/// Pause between samples.
const SAMPLE_INTERVAL: Duration = Duration::from_millis(250);
/// How long one replica may take to answer before it counts as silent.
const ANSWER_TIMEOUT: Duration = Duration::from_millis(400);
/// Samples kept (a limit on everything that grows): ~1 hour at the interval above.
const SAMPLES_MAX: usize = 15_000;

/// One observation of the coordinator group.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Sample {
    /// Nanoseconds on the run's clock.
    pub time: u64,
    /// The replica that said it leads (highest term), if one did.
    pub leader: Option<String>,
    pub term: u64,
    /// The most advanced progress any replica reported.
    pub maps_done: u32,
    pub maps_total: u32,
    pub reduces_done: u32,
    pub reduces_total: u32,
    pub reissued: u64,
    /// Replicas that answered.
    pub answering: Vec<String>,
}

impl Sample {
    pub fn done(&self) -> bool {
        self.reduces_total > 0 && self.reduces_done == self.reduces_total
    }
}

/// What the monitor has seen so far.
#[derive(Debug, Default)]
pub struct MonitorState {
    pub samples: Vec<Sample>,
    /// The first time a sample showed every reduce done.
    pub done_at: Option<u64>,
    pub error: Option<String>,
}

impl MonitorState {
    pub fn latest(&self) -> Option<&Sample> {
        self.samples.last()
    }

    /// The leader of the latest sample that named one, if it is the latest sample.
    pub fn leader(&self) -> Option<String> {
        self.latest().and_then(|s| s.leader.clone())
    }
}

/// A running monitor; stop it with [`Monitor::stop`].
pub struct Monitor {
    pub state: Arc<Mutex<MonitorState>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Monitor {
    /// Starts sampling `replicas` from namespace `netns` (None: here).
    pub fn start(
        netns: Option<String>,
        certs: PathBuf,
        replicas: Vec<CoordinatorAddress>,
        clock: TestClock,
    ) -> Monitor {
        let state = Arc::new(Mutex::new(MonitorState::default()));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let state = state.clone();
            let stop = stop.clone();
            std::thread::spawn(move || {
                if let Some(name) = &netns {
                    if let Err(e) = crate::netns::enter(name) {
                        set_error(&state, e.to_string());
                        return;
                    }
                }
                let mut link = match QuicLink::new(&certs, replicas, ANSWER_TIMEOUT) {
                    Ok(link) => link,
                    Err(e) => {
                        set_error(&state, format!("monitor link: {e}"));
                        return;
                    }
                };
                while !stop.load(Ordering::SeqCst) {
                    let sample = sample(&mut link, &clock);
                    if let Ok(mut state) = state.lock() {
                        if sample.done() && state.done_at.is_none() {
                            state.done_at = Some(sample.time);
                        }
                        if state.samples.len() < SAMPLES_MAX {
                            state.samples.push(sample);
                        }
                    }
                    std::thread::sleep(SAMPLE_INTERVAL);
                }
            })
        };
        Monitor {
            state,
            stop,
            thread: Some(thread),
        }
    }

    /// A copy of everything seen so far.
    pub fn samples(&self) -> Vec<Sample> {
        self.state
            .lock()
            .map(|s| s.samples.clone())
            .unwrap_or_default()
    }

    pub fn leader(&self) -> Option<String> {
        self.state.lock().ok().and_then(|s| s.leader())
    }

    pub fn done_at(&self) -> Option<u64> {
        self.state.lock().ok().and_then(|s| s.done_at)
    }

    pub fn error(&self) -> Option<String> {
        self.state.lock().ok().and_then(|s| s.error.clone())
    }

    pub fn stop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for Monitor {
    fn drop(&mut self) {
        self.stop();
    }
}

fn set_error(state: &Mutex<MonitorState>, error: String) {
    if let Ok(mut state) = state.lock() {
        state.error = Some(error);
    }
}

/// Asks every replica for its role and progress.
fn sample(link: &mut QuicLink, clock: &TestClock) -> Sample {
    let names: Vec<String> = link.coordinators().iter().map(|c| c.name.clone()).collect();
    let mut leader: Option<(u64, String)> = None;
    let mut best: Option<Progress> = None;
    let mut answering = Vec::new();
    for (position, name) in names.iter().enumerate() {
        let Ok(Response::Role {
            leader: leads,
            term,
        }) = link.ask(position, &Request::Role)
        else {
            continue;
        };
        answering.push(name.clone());
        if leads && leader.as_ref().is_none_or(|(t, _)| term > *t) {
            leader = Some((term, name.clone()));
        }
        if let Ok(Response::Progress(progress)) = link.ask(position, &Request::Progress) {
            let ahead = |p: &Progress| (p.maps_done + p.reduces_done, p.reissued);
            if best.as_ref().is_none_or(|b| ahead(&progress) > ahead(b)) {
                best = Some(progress);
            }
        }
    }
    let progress = best.unwrap_or_default();
    Sample {
        time: clock.now_ns(),
        term: leader.as_ref().map_or(0, |(t, _)| *t),
        leader: leader.map(|(_, name)| name),
        maps_done: progress.maps_done,
        maps_total: progress.maps_total,
        reduces_done: progress.reduces_done,
        reduces_total: progress.reduces_total,
        reissued: progress.reissued,
        answering,
    }
}
