//! Applying and undoing the nemesis's faults on the running job: which worker or replica a
//! fault hits is decided here at the moment it acts (who is alive, who leads, from the
//! monitor), through the seeded [`super::plan::Plan`]; each act is one SSH round trip by pid
//! file ([`crate::daemon`]) or an iptables rule in our own chain ([`crate::nemesis::apply`]).

use std::time::Instant;

use super::driver::Run;
use super::monitor::Monitor;
use super::plan::MrFault;
use super::MrEvent;
use crate::cluster::Node;
use crate::daemon;
use crate::nemesis::{apply, grudge};
use crate::ssh::Remote as _;

/// A lasting fault in effect, undone at `until`.
#[derive(Debug, Clone)]
pub(super) struct ActiveFault {
    pub(super) fault: MrFault,
    /// The worker number or replica index it hit.
    pub(super) target: String,
    pub(super) node: Node,
    pub(super) until: Instant,
    pub(super) started_event: usize,
}

pub(super) enum FaultStart {
    Done(Option<ActiveFault>),
    NoTarget,
}

impl Run<'_> {
    /// Applies `fault` now. Lasting faults come back to be stopped.
    pub(super) fn start_fault(&mut self, fault: MrFault, monitor: &Monitor) -> FaultStart {
        let time = self.now();
        let ssh = self.cluster.ssh();
        let mut event = MrEvent::new(time, "nemesis", "start");
        event.fault = Some(fault);
        let until = Instant::now() + self.options.fault_duration;
        let (target, node, result) = match fault {
            MrFault::KillWorker | MrFault::PauseWorker => {
                let live: Vec<usize> = self
                    .workers
                    .iter()
                    .enumerate()
                    .filter(|(_, w)| w.end.is_none() && !w.paused)
                    .map(|(i, _)| i)
                    .collect();
                let Some(&index) = self.plan.pick(&live) else {
                    return FaultStart::NoTarget;
                };
                let worker = self.workers[index].clone();
                event.process = Some(worker.spec.name.clone());
                event.node = Some(worker.node.name.clone());
                event.pid = Some(worker.pid);
                let result = if fault == MrFault::KillWorker {
                    daemon::kill(ssh, &worker.node, &worker.spec).map(|_| ())
                } else {
                    daemon::pause(ssh, &worker.node, &worker.spec).map(|_| ())
                };
                if result.is_ok() {
                    if fault == MrFault::KillWorker {
                        self.workers[index].end = Some("killed".into());
                        self.workers[index].ended = Some(self.now());
                    } else {
                        self.workers[index].paused = true;
                    }
                }
                (
                    index.to_string(),
                    worker.node,
                    result.map_err(|e| e.to_string()),
                )
            }
            MrFault::KillLeader | MrFault::PauseLeader | MrFault::PartitionLeader => {
                let Some(leader) = monitor.leader() else {
                    return FaultStart::NoTarget;
                };
                let Some(index) = self.addresses.iter().position(|a| a.name == leader) else {
                    return FaultStart::NoTarget;
                };
                let (node, spec) = self.replica_specs[index].clone();
                event.process = Some(spec.name.clone());
                event.node = Some(node.name.clone());
                event.detail = Some(format!("leader {leader}"));
                let result = match fault {
                    MrFault::KillLeader => daemon::kill(ssh, &node, &spec).map(|pid| {
                        event.pid = pid;
                    }),
                    MrFault::PauseLeader => daemon::pause(ssh, &node, &spec).map(|pid| {
                        event.pid = Some(pid);
                    }),
                    _ => Ok(()),
                }
                .map_err(|e| e.to_string());
                let result = if fault == MrFault::PartitionLeader {
                    self.partition_isolating(&node)
                } else {
                    result
                };
                (index.to_string(), node, result)
            }
        };
        event.end_time = self.now();
        if let Err(error) = &result {
            event.error = Some(error.clone());
            self.errors.push(format!("{}: {error}", fault.name()));
        }
        let started_event = self.record(event);
        if fault == MrFault::KillWorker && result.is_ok() {
            let name = target
                .parse::<usize>()
                .ok()
                .and_then(|i| self.workers.get(i))
                .map(|w| w.spec.name.clone());
            if let Err(e) = self.start_worker(name.as_deref()) {
                self.errors
                    .push(format!("starting a replacement worker: {e}"));
            }
        }
        if fault.lasts() && result.is_ok() {
            FaultStart::Done(Some(ActiveFault {
                fault,
                target,
                node,
                until,
                started_event,
            }))
        } else {
            FaultStart::Done(None)
        }
    }

    /// Cuts `node` off from every other node (both directions), through our iptables chain.
    fn partition_isolating(&self, node: &Node) -> Result<(), String> {
        let nodes = self.cluster.nodes();
        let names: Vec<String> = nodes.iter().map(|n| n.name.clone()).collect();
        let grudge = grudge::isolate(&names, &node.name);
        for each in nodes {
            let drops = apply::drops_for(nodes, &grudge, each).map_err(|e| e.to_string())?;
            self.cluster
                .ssh()
                .exec(each, &apply::drop_from_script(&drops))
                .map_err(|e| e.to_string())?;
        }
        Ok(())
    }

    pub(super) fn stop_fault(&mut self, active: &ActiveFault) {
        let time = self.now();
        let ssh = self.cluster.ssh();
        let mut event = MrEvent::new(time, "nemesis", "stop");
        event.fault = Some(active.fault);
        event.node = Some(active.node.name.clone());
        let result: Result<(), String> = match active.fault {
            MrFault::KillWorker => Ok(()),
            MrFault::PauseWorker => {
                let index = active.target.parse::<usize>().unwrap_or(usize::MAX);
                match self.workers.get(index).cloned() {
                    Some(worker) => {
                        event.process = Some(worker.spec.name.clone());
                        self.workers[index].paused = false;
                        daemon::resume(ssh, &worker.node, &worker.spec)
                            .map(|_| ())
                            .map_err(|e| e.to_string())
                    }
                    None => Ok(()),
                }
            }
            MrFault::KillLeader | MrFault::PauseLeader => {
                let index = active.target.parse::<usize>().unwrap_or(usize::MAX);
                match self.replica_specs.get(index).cloned() {
                    Some((node, spec)) => {
                        event.process = Some(spec.name.clone());
                        if active.fault == MrFault::KillLeader {
                            daemon::start(ssh, &node, &spec).map(|pid| {
                                event.pid = Some(pid);
                                event.detail = Some("restarted from its WAL".into());
                            })
                        } else {
                            daemon::resume(ssh, &node, &spec).map(|_| ())
                        }
                        .map_err(|e| e.to_string())
                    }
                    None => Ok(()),
                }
            }
            MrFault::PartitionLeader => self.heal_partitions(),
        };
        event.end_time = self.now();
        if let Err(error) = &result {
            event.error = Some(error.clone());
            self.errors
                .push(format!("undoing {}: {error}", active.fault.name()));
        }
        if let Some(started) = self.events.get_mut(active.started_event) {
            started.detail = Some(format!(
                "{}{}lasted {:.2} s",
                started.detail.clone().unwrap_or_default(),
                if started.detail.is_some() { "; " } else { "" },
                (time.saturating_sub(started.time)) as f64 / 1e9
            ));
        }
        self.record(event);
    }

    pub(super) fn heal_partitions(&self) -> Result<(), String> {
        for node in self.cluster.nodes() {
            self.cluster
                .ssh()
                .exec(node, &apply::heal_script())
                .map_err(|e| e.to_string())?;
        }
        Ok(())
    }
}
