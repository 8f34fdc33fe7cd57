//! The coordinator service over our QUIC transport with mutual TLS.
//!
//! I/O side. Workers send one [`Request`] per stream and get one
//! [`Response`]. A replica that is not the leader answers
//! [`Response::NotLeader`] with a hint; the worker's [`QuicLink`] then tries
//! the hinted or next coordinator address.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use transport::{certs, Client, ClientOptions, RequestHandler};

use crate::coordinator::{Command, Progress, Reply, Task, TaskKind};
use crate::local::LocalCoordinator;
use crate::worker::{CoordinatorLink, WorkerError};

/// The certificate name workers present.
pub const WORKER_CERT_NAME: &str = "mr-worker";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Request {
    RequestTask {
        worker: u64,
    },
    Complete {
        kind: TaskKind,
        index: u32,
        attempt: u64,
    },
    Progress,
    /// Whether this replica leads (tests and tools that kill the leader).
    Role,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Response {
    Reply(Reply),
    Progress(Progress),
    /// This replica cannot decide; `leader` is a coordinator name if known.
    NotLeader {
        leader: Option<String>,
    },
    Role {
        leader: bool,
        term: u64,
    },
}

/// Writes a CA, one node certificate per coordinator name (for 127.0.0.1)
/// and the workers' client certificate into `dir`.
pub fn write_certs(dir: &Path, coordinator_names: &[String]) -> Result<(), certs::CertError> {
    let ca = certs::generate_ca()?;
    let loopback = [std::net::IpAddr::from([127, 0, 0, 1])];
    let mut issued = Vec::new();
    for name in coordinator_names {
        issued.push(certs::issue_node_cert(&ca, name, &loopback)?);
    }
    issued.push(certs::issue_client_cert(&ca, WORKER_CERT_NAME)?);
    certs::write_pem_files(dir, &ca, &issued)
}

/// Translates a worker request into a coordinator command (time is stamped
/// by whoever applies or proposes it).
pub fn command_for(request: &Request) -> Option<Command> {
    match request {
        Request::RequestTask { worker } => Some(Command::RequestTask {
            worker: *worker,
            now_ms: 0,
        }),
        Request::Complete {
            kind,
            index,
            attempt,
        } => Some(Command::Complete {
            kind: *kind,
            index: *index,
            attempt: *attempt,
            now_ms: 0,
        }),
        Request::Progress | Request::Role => None,
    }
}

/// Serves requests from the unreplicated coordinator.
#[derive(Debug, Clone)]
pub struct SingleHandler {
    pub coordinator: LocalCoordinator,
}

impl RequestHandler for SingleHandler {
    type Request = Request;
    type Response = Response;

    fn handle(
        &self,
        _from: transport::PeerName,
        request: Request,
    ) -> impl std::future::Future<Output = Option<Response>> + Send {
        let response = match (command_for(&request), request) {
            (Some(command), _) => Response::Reply(self.coordinator.apply(command)),
            (None, Request::Role) => Response::Role {
                leader: true,
                term: 0,
            },
            (None, _) => Response::Progress(self.coordinator.progress()),
        };
        async move { Some(response) }
    }
}

/// A coordinator replica's name and address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CoordinatorAddress {
    pub name: String,
    pub addr: SocketAddr,
}

/// `name=addr` (e.g. `c1=127.0.0.1:7000`).
pub fn parse_address(text: &str) -> Option<CoordinatorAddress> {
    let (name, addr) = text.split_once('=')?;
    Some(CoordinatorAddress {
        name: name.to_string(),
        addr: addr.parse().ok()?,
    })
}

/// The worker's link over QUIC: blocking calls on a private tokio runtime
/// (the worker's task code is synchronous file and CPU work).
pub struct QuicLink {
    runtime: tokio::runtime::Runtime,
    client: Client,
    coordinators: Vec<CoordinatorAddress>,
    current: usize,
    request_timeout: Duration,
}

impl QuicLink {
    pub fn new(
        cert_dir: &Path,
        coordinators: Vec<CoordinatorAddress>,
        request_timeout: Duration,
    ) -> Result<Self, WorkerError> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| WorkerError::Link(format!("tokio runtime: {e}")))?;
        let client = {
            let _guard = runtime.enter();
            Client::from_files(
                &cert_dir.join(format!("{WORKER_CERT_NAME}.pem")),
                &cert_dir.join(format!("{WORKER_CERT_NAME}.key")),
                &cert_dir.join("ca.pem"),
                ClientOptions::default(),
            )
            .map_err(|e| WorkerError::Link(format!("client: {e}")))?
        };
        if coordinators.is_empty() {
            return Err(WorkerError::Link("no coordinator address".into()));
        }
        Ok(QuicLink {
            runtime,
            client,
            coordinators,
            current: 0,
            request_timeout,
        })
    }

    /// Sends `request` to the coordinator believed to lead, following
    /// leader hints; tries each address at most twice.
    pub fn call(&mut self, request: &Request) -> Result<Response, WorkerError> {
        let mut last_error = String::from("no attempt");
        for _ in 0..self.coordinators.len() * 2 {
            let target = self.coordinators[self.current].clone();
            let result = self.runtime.block_on(self.client.request::<_, Response>(
                target.addr,
                &target.name,
                request,
                self.request_timeout,
            ));
            match result {
                Ok(Response::NotLeader { leader }) => {
                    let hinted = leader
                        .and_then(|name| self.coordinators.iter().position(|c| c.name == name));
                    self.current = match hinted {
                        Some(position) if position != self.current => position,
                        _ => (self.current + 1) % self.coordinators.len(),
                    };
                    last_error = format!("{} is not the leader", target.name);
                    if hinted.is_none() {
                        // No leader known (an election is on): back off a little.
                        std::thread::sleep(Duration::from_millis(50));
                    }
                }
                Ok(response) => return Ok(response),
                Err(error) => {
                    last_error = format!("{}: {error}", target.name);
                    self.current = (self.current + 1) % self.coordinators.len();
                }
            }
        }
        Err(WorkerError::Link(last_error))
    }

    /// Sends `request` to the coordinator at `position` in the address list
    /// only, without following leader hints: what monitors use to ask each
    /// replica for its own role and progress.
    pub fn ask(&mut self, position: usize, request: &Request) -> Result<Response, WorkerError> {
        let target =
            self.coordinators.get(position).cloned().ok_or_else(|| {
                WorkerError::Link(format!("no coordinator at position {position}"))
            })?;
        self.runtime
            .block_on(self.client.request::<_, Response>(
                target.addr,
                &target.name,
                request,
                self.request_timeout,
            ))
            .map_err(|error| WorkerError::Link(format!("{}: {error}", target.name)))
    }

    pub fn coordinators(&self) -> &[CoordinatorAddress] {
        &self.coordinators
    }

    pub fn progress(&mut self) -> Result<Progress, WorkerError> {
        match self.call(&Request::Progress)? {
            Response::Progress(progress) => Ok(progress),
            other => Err(WorkerError::Link(format!("unexpected answer {other:?}"))),
        }
    }
}

impl std::fmt::Debug for QuicLink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QuicLink")
            .field("coordinators", &self.coordinators)
            .finish_non_exhaustive()
    }
}

impl CoordinatorLink for QuicLink {
    fn request_task(&mut self, worker: u64) -> Result<Reply, WorkerError> {
        match self.call(&Request::RequestTask { worker })? {
            Response::Reply(reply) => Ok(reply),
            other => Err(WorkerError::Link(format!("unexpected answer {other:?}"))),
        }
    }

    fn complete(&mut self, task: &Task) -> Result<(), WorkerError> {
        self.call(&Request::Complete {
            kind: task.kind,
            index: task.index,
            attempt: task.attempt,
        })
        .map(|_| ())
    }
}
