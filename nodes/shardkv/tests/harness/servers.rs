//! What the host runs on each node: a replica-group server
//! (`ShardKvServer`) or a controller server ([`CtrlServer`]), and the
//! messages between them and the clerks.

use raft::{NodeId, Ready, Snapshot};
use shardctrler::server::ServerConfig as CtrlConfig;
use shardctrler::{CtrlOp, CtrlRequest, CtrlResponse, CtrlResult, CtrlServer, Gid};
use shardkv::{
    DeleteReply, DeleteRequest, Outbound, PullReply, PullRequest, ServerConfig, ShardKvRequest,
    ShardKvResponse, ShardKvServer,
};
use sim::host::{Addr, Node, Routes, Server, SnapshotTaken};

use super::ctrl::{CtrlAction, CtrlClerk};

/// A group server's controller query gets this many ticks (300 ms) before
/// its clerk tries the next controller server.
const CTRL_ATTEMPT_TICKS: u64 = 6;

/// Server name of node `id` in configurations.
pub fn server_name(id: NodeId) -> String {
    format!("n{id}")
}

pub fn node_of(name: &str) -> Option<NodeId> {
    name.strip_prefix('n')?.parse().ok()
}

/// Everything that crosses the simulated network besides Raft messages.
#[derive(Clone, Debug)]
pub enum Msg {
    Kv {
        attempt: u64,
        request: ShardKvRequest,
    },
    KvReply {
        attempt: u64,
        response: ShardKvResponse,
    },
    Ctrl {
        attempt: u64,
        request: CtrlRequest,
    },
    CtrlReply {
        attempt: u64,
        response: CtrlResponse,
    },
    Pull(PullRequest),
    PullReply(PullReply),
    Delete(DeleteRequest),
    DeleteReply(DeleteReply),
}

/// Per node: which server it runs.
#[derive(Clone, Debug)]
pub enum Spec {
    Group {
        gid: Gid,
        config: ServerConfig,
        /// The controller servers its leader queries.
        ctrl_servers: Vec<NodeId>,
    },
    Ctrl(CtrlConfig),
}

/// A replica-group server with its routing state (lost in a crash, as the
/// real node's connections are) and its own controller clerk.
pub struct GroupServer {
    pub server: ShardKvServer,
    /// Tag: the request's attempt, echoed in the reply.
    routes: Routes<u64>,
    ctrl: CtrlClerk,
    ctrl_sent_tick: u64,
    ctrl_resend: Option<u64>,
    now_ticks: u64,
}

/// A controller server with where each request came from.
pub struct CtrlHosted {
    pub server: CtrlServer,
    /// Tag: the request's attempt, echoed in the reply.
    routes: Routes<u64>,
}

impl CtrlHosted {
    /// Whether a request from `client` waits here for its log entry (it
    /// was proposed and not answered yet).
    pub fn is_waiting_for(&self, client: Addr) -> bool {
        self.routes.waiting_for(client)
    }

    fn flush(&mut self, node: &mut Node<'_, Msg>) {
        for reply in self.server.take_replies() {
            if let Some((to, attempt)) = self.routes.close(reply.request_id) {
                let response = reply.response;
                node.send(to, Msg::CtrlReply { attempt, response });
            }
        }
    }

    fn receive(
        &mut self,
        node: &mut Node<'_, Msg>,
        from: Addr,
        attempt: u64,
        request: CtrlRequest,
    ) {
        let request_id = self.routes.open(from, attempt);
        self.server.handle_request(node.raw, request_id, request);
        self.flush(node);
    }
}

pub enum Hosted {
    Group(Box<GroupServer>),
    Ctrl(CtrlHosted),
}

impl GroupServer {
    /// Sends the server's replies and outbounds.
    fn flush(&mut self, node: &mut Node<'_, Msg>) {
        for reply in self.server.take_replies() {
            if let Some((to, attempt)) = self.routes.close(reply.request_id) {
                let response = reply.response;
                node.send(to, Msg::KvReply { attempt, response });
            }
        }
        for out in self.server.take_outbound() {
            match out {
                Outbound::QueryConfig { num } => {
                    if !self.ctrl.busy() {
                        let action = self.ctrl.begin(CtrlOp::Query { num: Some(num) });
                        self.perform(node, action);
                    }
                }
                Outbound::Pull {
                    servers, request, ..
                } => {
                    for to in servers.iter().filter_map(|s| node_of(s)) {
                        node.send(Addr::Node(to), Msg::Pull(request.clone()));
                    }
                }
                Outbound::Delete {
                    servers, request, ..
                } => {
                    for to in servers.iter().filter_map(|s| node_of(s)) {
                        node.send(Addr::Node(to), Msg::Delete(request.clone()));
                    }
                }
            }
        }
    }

    fn perform(&mut self, node: &mut Node<'_, Msg>, action: CtrlAction) {
        match action {
            CtrlAction::Send {
                to,
                attempt,
                request,
            } => {
                self.ctrl_sent_tick = self.now_ticks;
                self.ctrl_resend = None;
                node.send(Addr::Node(to), Msg::Ctrl { attempt, request });
            }
            CtrlAction::Backoff { attempt } => self.ctrl_resend = Some(attempt),
            CtrlAction::Done(CtrlResult::Config(config)) => self.server.on_config(node.raw, config),
            CtrlAction::Done(_) | CtrlAction::Ignored => {}
        }
    }

    fn tick(&mut self, node: &mut Node<'_, Msg>) {
        self.now_ticks += 1;
        self.server.tick(&*node.raw);
        if let Some(attempt) = self.ctrl_resend.take() {
            let action = self.ctrl.resend(attempt);
            self.perform(node, action);
        } else if self.ctrl.busy() && self.now_ticks - self.ctrl_sent_tick >= CTRL_ATTEMPT_TICKS {
            let attempt = self.ctrl.attempt();
            let action = self.ctrl.on_timeout(attempt);
            self.perform(node, action);
        }
        self.flush(node);
    }

    fn receive(&mut self, node: &mut Node<'_, Msg>, from: Addr, message: Msg) {
        match message {
            Msg::Kv { attempt, request } => {
                let request_id = self.routes.open(from, attempt);
                self.server.handle_request(node.raw, request_id, request);
            }
            Msg::CtrlReply { attempt, response } => {
                let action = self.ctrl.on_response(attempt, response);
                self.perform(node, action);
            }
            Msg::Pull(request) => {
                let reply = self.server.handle_pull(&request);
                node.send(from, Msg::PullReply(reply));
            }
            Msg::PullReply(reply) => self.server.on_pull_reply(node.raw, reply),
            Msg::Delete(request) => {
                let reply = self.server.handle_delete(node.raw, &request);
                node.send(from, Msg::DeleteReply(reply));
            }
            Msg::DeleteReply(reply) => self.server.on_delete_reply(node.raw, reply),
            Msg::KvReply { .. } | Msg::Ctrl { .. } => {}
        }
        self.flush(node);
    }
}

impl Server for Hosted {
    type Spec = Spec;
    type Message = Msg;

    fn start(
        spec: &Spec,
        id: NodeId,
        incarnation: u64,
        snapshot: Option<&Snapshot>,
    ) -> Result<Self, String> {
        match spec {
            Spec::Group {
                gid,
                config,
                ctrl_servers,
            } => {
                let mut server = ShardKvServer::new(id, *gid, config.clone());
                if let Some(snapshot) = snapshot {
                    server
                        .restore_snapshot(snapshot.meta.index, &snapshot.data)
                        .map_err(|e| e.to_string())?;
                }
                Ok(Hosted::Group(Box::new(GroupServer {
                    server,
                    routes: Routes::default(),
                    // A new client id per start: the query has no session to keep.
                    ctrl: CtrlClerk::new(incarnation, ctrl_servers.clone()),
                    ctrl_sent_tick: 0,
                    ctrl_resend: None,
                    now_ticks: 0,
                })))
            }
            Spec::Ctrl(config) => {
                let mut server = CtrlServer::new(config.clone());
                if let Some(snapshot) = snapshot {
                    server
                        .restore_snapshot(snapshot.meta.index, &snapshot.data)
                        .map_err(|e| e.to_string())?;
                }
                Ok(Hosted::Ctrl(CtrlHosted {
                    server,
                    routes: Routes::default(),
                }))
            }
        }
    }

    fn tick(&mut self, node: &mut Node<'_, Msg>) {
        match self {
            Hosted::Group(g) => g.tick(node),
            Hosted::Ctrl(c) => {
                c.server.tick(&*node.raw);
                c.flush(node);
            }
        }
    }

    fn receive(&mut self, node: &mut Node<'_, Msg>, from: Addr, message: Msg) {
        match (self, message) {
            (Hosted::Ctrl(c), Msg::Ctrl { attempt, request }) => {
                c.receive(node, from, attempt, request)
            }
            (Hosted::Ctrl(_), _) => {}
            (Hosted::Group(g), message) => g.receive(node, from, message),
        }
    }

    fn apply(&mut self, node: &mut Node<'_, Msg>, ready: &Ready) -> Result<(), String> {
        match self {
            Hosted::Group(g) => {
                g.server
                    .on_ready(
                        &*node.raw,
                        ready.snapshot.as_ref(),
                        &ready.committed_entries,
                    )
                    .map_err(|e| e.to_string())?;
                g.flush(node);
                Ok(())
            }
            Hosted::Ctrl(c) => {
                c.server
                    .on_ready(
                        &*node.raw,
                        ready.snapshot.as_ref(),
                        &ready.committed_entries,
                    )
                    .map_err(|e| e.to_string())?;
                c.flush(node);
                Ok(())
            }
        }
    }

    fn maybe_snapshot(
        &mut self,
        node: &mut Node<'_, Msg>,
        raft_state_bytes: usize,
    ) -> Result<Option<SnapshotTaken>, String> {
        match self {
            Hosted::Group(g) => {
                let taken = g
                    .server
                    .maybe_snapshot(node.raw, raft_state_bytes)
                    .map_err(|e| e.to_string())?;
                g.flush(node);
                Ok(taken.map(|t| SnapshotTaken {
                    index: t.index,
                    data: t.data,
                }))
            }
            Hosted::Ctrl(c) => {
                let taken = c
                    .server
                    .maybe_snapshot(node.raw, raft_state_bytes)
                    .map_err(|e| e.to_string())?;
                Ok(taken.map(|t| SnapshotTaken {
                    index: t.index,
                    data: t.data,
                }))
            }
        }
    }
}
