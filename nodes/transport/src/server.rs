//! The serving side of requests: one bidirectional stream per request, one
//! frame in, one frame out.
//!
//! A service implements [`RequestHandler`], or takes requests from a channel
//! made by [`request_channel`] when its state lives in a single loop (the node
//! daemon's Raft loop) and answers later through a [`Responder`].

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use serde::{de::DeserializeOwned, Serialize};
use tokio::sync::{mpsc, oneshot};

use crate::frame::{self, StreamReadError};
use crate::metrics::Metrics;
use crate::{codes, PeerName};

/// Serves requests. `from` is the caller's authenticated certificate name.
pub trait RequestHandler: Send + Sync + 'static {
    type Request: DeserializeOwned + Send + 'static;
    type Response: Serialize + Send + 'static;

    /// Answers one request. `None` sends no answer: the caller then sees an
    /// unknown outcome ([`crate::RequestError::NoResponse`]), so return `None`
    /// only when the request may have taken effect; a definite refusal should
    /// be a `Response` value saying so.
    fn handle(
        &self,
        from: PeerName,
        request: Self::Request,
    ) -> impl Future<Output = Option<Self::Response>> + Send;
}

/// A received request waiting for its answer.
#[derive(Debug)]
pub struct PendingRequest<Req, Resp> {
    /// The caller's authenticated certificate name.
    pub from: PeerName,
    pub request: Req,
    pub responder: Responder<Resp>,
}

/// Sends the answer to one request. Dropping it without answering tells the
/// caller "no response" (unknown outcome).
#[derive(Debug)]
pub struct Responder<Resp> {
    sender: oneshot::Sender<Resp>,
}

impl<Resp> Responder<Resp> {
    /// Sends the answer; false if the caller's stream is already gone.
    pub fn respond(self, response: Resp) -> bool {
        self.sender.send(response).is_ok()
    }
}

/// A [`RequestHandler`] that forwards every request into a channel.
#[derive(Debug)]
pub struct ChannelHandler<Req, Resp> {
    sender: mpsc::Sender<PendingRequest<Req, Resp>>,
}

/// Makes a handler that queues up to `capacity` requests for the receiver.
/// When the queue is full, request streams wait (QUIC flow control then
/// pushes back on the callers).
pub fn request_channel<Req, Resp>(
    capacity: usize,
) -> (
    ChannelHandler<Req, Resp>,
    mpsc::Receiver<PendingRequest<Req, Resp>>,
) {
    let (sender, receiver) = mpsc::channel(capacity.max(1));
    (ChannelHandler { sender }, receiver)
}

impl<Req, Resp> RequestHandler for ChannelHandler<Req, Resp>
where
    Req: DeserializeOwned + Send + 'static,
    Resp: Serialize + Send + 'static,
{
    type Request = Req;
    type Response = Resp;

    async fn handle(&self, from: PeerName, request: Req) -> Option<Resp> {
        let (sender, receiver) = oneshot::channel();
        let pending = PendingRequest {
            from,
            request,
            responder: Responder { sender },
        };
        self.sender.send(pending).await.ok()?;
        receiver.await.ok()
    }
}

/// A handler with its types erased, as the endpoint stores it.
pub(crate) type ServeStream = Arc<
    dyn Fn(
            PeerName,
            quinn::SendStream,
            quinn::RecvStream,
        ) -> Pin<Box<dyn Future<Output = ()> + Send>>
        + Send
        + Sync,
>;

pub(crate) fn erase<H: RequestHandler>(
    handler: H,
    max_frame_bytes: usize,
    metrics: Arc<Metrics>,
) -> ServeStream {
    let handler = Arc::new(handler);
    Arc::new(move |from, send, recv| {
        Box::pin(serve_one(
            handler.clone(),
            from,
            send,
            recv,
            max_frame_bytes,
            metrics.clone(),
        ))
    })
}

async fn serve_one<H: RequestHandler>(
    handler: Arc<H>,
    from: PeerName,
    mut send: quinn::SendStream,
    mut recv: quinn::RecvStream,
    max_frame_bytes: usize,
    metrics: Arc<Metrics>,
) {
    let request = match frame::read_frame::<H::Request>(&mut recv, max_frame_bytes).await {
        Ok(Some(request)) => request,
        Ok(None) => {
            tracing::warn!(peer = %from, "request stream ended before its frame");
            let _ = send.reset(codes::TRUNCATED);
            return;
        }
        Err(StreamReadError::Frame(error)) => {
            tracing::warn!(peer = %from, %error, "closing request stream: bad frame");
            metrics.frame_rejected(&error);
            let _ = recv.stop(error.code());
            let _ = send.reset(error.code());
            return;
        }
        Err(StreamReadError::Read(error)) => {
            tracing::debug!(peer = %from, %error, "request stream failed while reading");
            return;
        }
    };
    let Some(response) = handler.handle(from.clone(), request).await else {
        let _ = send.reset(codes::HANDLER_DROPPED);
        return;
    };
    let bytes = match frame::encode(&response, max_frame_bytes) {
        Ok(bytes) => bytes,
        Err(error) => {
            tracing::error!(peer = %from, %error, "could not encode response");
            let _ = send.reset(codes::RESPONSE_FAILED);
            return;
        }
    };
    match send.write_all(&bytes).await {
        Ok(()) => {
            // Dropping a finished stream still delivers its data.
            let _ = send.finish();
            Metrics::add(&metrics.requests_served);
        }
        Err(error) => tracing::debug!(peer = %from, %error, "could not send response"),
    }
}

/// What the endpoint does with request streams when it has no handler.
pub(crate) fn refuse_all() -> ServeStream {
    Arc::new(|from, mut send, mut recv| {
        Box::pin(async move {
            tracing::debug!(peer = %from, "refusing request: this endpoint serves none");
            let _ = recv.stop(codes::NO_HANDLER);
            let _ = send.reset(codes::NO_HANDLER);
        })
    })
}
