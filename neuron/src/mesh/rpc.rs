//! Mesh RPC: typed calls over QUIC bi-streams (one request frame out, reply frames back), the
//! server that answers a peer's calls, and the errors a call can end in. Generations and admin
//! actions are answered by the local node service (`crate::node`), the same one HTTP uses;
//! placement and goodbyes by the mesh itself.

use std::sync::Arc;

use cortex_proto::embed::{EmbedRequest, EmbedResult};
use cortex_proto::eviction::KeepAlive;
use cortex_proto::frame::{self, FrameError, Message};
use cortex_proto::generate::{ChatMessage, ErrorKind, Event, GenerateError, GenerateRequest};
use cortex_proto::model::AdminAction;
use cortex_proto::placement::PlacementDoc;
use quinn::{Connection, RecvStream, SendStream};
use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver, UnboundedSender};
use tracing::Instrument;

use super::membership::Input;
use super::transport::TransportError;
use super::Mesh;

/// Why a call to a peer failed (as opposed to the peer answering with an error of its own).
#[derive(Debug, thiserror::Error)]
pub enum RpcError {
    /// The peer is not a live member of the fleet: never seen, down or left.
    #[error("peer {0} is not a live member")]
    NotMember(String),
    /// No connection could be made (unreachable, or its certificate refused).
    #[error("cannot reach peer {peer}: {source}")]
    Connect {
        peer: String,
        #[source]
        source: TransportError,
    },
    /// The stream could not be opened, written or read.
    #[error("stream to peer {peer} failed: {source}")]
    Stream {
        peer: String,
        #[source]
        source: std::io::Error,
    },
    /// The peer's reply is not a valid frame.
    #[error("peer {peer} sent a garbled reply: {source}")]
    Frame {
        peer: String,
        #[source]
        source: FrameError,
    },
    /// The stream ended before the reply did.
    #[error("peer {peer} closed the stream without answering")]
    Closed { peer: String },
    /// A reply of the wrong kind.
    #[error("peer {peer} answered with an unexpected {got} message")]
    Unexpected { peer: String, got: String },
}

/// Upper bound on one read from a stream.
const READ_CHUNK: usize = 64 * 1024;

/// A generation a peer runs: its events, or its refusal before the first one.
pub enum Remote {
    Events(UnboundedReceiver<Event>),
    Refused(GenerateError),
}

/// The reply frames of one call, as they arrive.
struct Replies {
    peer: String,
    rx: UnboundedReceiver<Result<Message, RpcError>>,
}

impl Replies {
    /// The next reply; a stream that ends first is [`RpcError::Closed`].
    async fn next(&mut self) -> Result<Message, RpcError> {
        self.rx.recv().await.unwrap_or_else(|| Err(RpcError::Closed { peer: self.peer.clone() }))
    }

    fn unexpected(&self, got: &Message) -> RpcError {
        let got = format!("{got:?}").split([' ', '{', '(']).next().unwrap_or_default().to_string();
        RpcError::Unexpected { peer: self.peer.clone(), got }
    }
}

impl Mesh {
    /// Opens a bi-stream to `node`, sends `msg`, and returns the reply frames as they arrive.
    async fn call(self: &Arc<Self>, node: &str, msg: &Message) -> Result<Replies, RpcError> {
        let addr = self.peer_table().live_addr(node).ok_or_else(|| RpcError::NotMember(node.to_string()))?;
        let conn =
            self.conn(node, addr).await.map_err(|source| RpcError::Connect { peer: node.to_string(), source })?;
        let stream_err = |source: std::io::Error| RpcError::Stream { peer: node.to_string(), source };
        let (mut send, recv) = conn.open_bi().await.map_err(|e| stream_err(e.into()))?;
        send.write_all(&frame::encode(msg)).await.map_err(|e| stream_err(e.into()))?;
        let _ = send.finish();
        let (tx, rx) = unbounded_channel();
        let span = tracing::debug_span!("mesh_rpc_replies", peer = %node);
        tokio::spawn(read_frames(node.to_string(), recv, tx, Some(send)).instrument(span));
        Ok(Replies { peer: node.to_string(), rx })
    }

    /// Runs `request` on `node`: its events once the first one arrives, or its refusal. A
    /// stream that breaks later ends with an error event, never silently.
    pub async fn generate(
        self: &Arc<Self>,
        node: &str,
        request: &GenerateRequest,
        keep_alive: Option<serde_json::Value>,
    ) -> Result<Remote, RpcError> {
        let mut replies =
            self.call(node, &Message::Generate { request: Box::new(request.clone()), keep_alive }).await?;
        let first = match replies.next().await? {
            Message::Event { event } => event,
            other => return Err(replies.unexpected(&other)),
        };
        if let Event::Error { error } = first {
            return Ok(Remote::Refused(error));
        }
        let (tx, rx) = unbounded_channel();
        // The stream ends after the last choice's `Done`, or at an error.
        let mut pending = request.n.max(1);
        let _ = tx.send(first);
        let span = tracing::info_span!("mesh_relay", peer = %node, request = %request.id);
        tokio::spawn(
            async move {
                loop {
                    let ev = match replies.next().await {
                        Ok(Message::Event { event }) => event,
                        Ok(_) | Err(_) => Event::Error {
                            error: GenerateError::new(
                                ErrorKind::Unavailable,
                                format!("peer {} failed in the middle of the answer", replies.peer),
                            ),
                        },
                    };
                    if matches!(ev, Event::Done { .. }) {
                        pending = pending.saturating_sub(1);
                    }
                    let last = pending == 0 || matches!(ev, Event::Error { .. });
                    // The client went away: dropping `replies` resets the stream, which stops the peer.
                    if tx.send(ev).is_err() || last {
                        return;
                    }
                }
            }
            .instrument(span),
        );
        Ok(Remote::Events(rx))
    }

    /// Asks `node` to act on one of its models: the peer's own answer inside the call's result.
    pub async fn admin(
        self: &Arc<Self>,
        node: &str,
        action: AdminAction,
        model: &str,
    ) -> Result<Result<(), GenerateError>, RpcError> {
        let mut replies = self.call(node, &Message::Admin { action, model: model.to_string() }).await?;
        match replies.next().await? {
            Message::AdminResult { ok: true, .. } => Ok(Ok(())),
            Message::AdminResult { error, .. } => Ok(Err(error.unwrap_or_else(|| {
                GenerateError::new(ErrorKind::Internal, format!("node {node} refused without saying why"))
            }))),
            other => Err(replies.unexpected(&other)),
        }
    }

    /// Asks `node` to embed: the peer's own answer (vectors or refusal) inside the call's result.
    pub async fn embed(
        self: &Arc<Self>,
        node: &str,
        request: &EmbedRequest,
        keep_alive: Option<serde_json::Value>,
    ) -> Result<Result<EmbedResult, GenerateError>, RpcError> {
        let msg = Message::Embed { request: Box::new(request.clone()), keep_alive };
        let mut replies = self.call(node, &msg).await?;
        match replies.next().await? {
            Message::Embedded { result } => Ok(result),
            other => Err(replies.unexpected(&other)),
        }
    }

    /// The stored Responses conversation `node` holds under `id`, if it still does.
    pub async fn fetch_conversation(
        self: &Arc<Self>,
        node: &str,
        id: &str,
    ) -> Result<Option<Vec<ChatMessage>>, RpcError> {
        let mut replies = self.call(node, &Message::FetchConversation { id: id.to_string() }).await?;
        match replies.next().await? {
            Message::Conversation { messages } => Ok(messages),
            other => Err(replies.unexpected(&other)),
        }
    }

    /// The newest document `from` holds for `node`.
    pub(super) async fn fetch_placement(
        self: &Arc<Self>,
        from: &str,
        node: &str,
    ) -> Result<Option<PlacementDoc>, RpcError> {
        let mut replies = self.call(from, &Message::FetchPlacement { node: node.to_string() }).await?;
        match replies.next().await? {
            Message::Placement { doc } => Ok(doc),
            other => Err(replies.unexpected(&other)),
        }
    }

    /// `(node, version)` of every document `from` holds.
    pub(super) async fn fetch_digest(self: &Arc<Self>, from: &str) -> Result<Vec<(String, u64)>, RpcError> {
        let mut replies = self.call(from, &Message::FetchDigest).await?;
        match replies.next().await? {
            Message::Digest { versions } => Ok(versions),
            other => Err(replies.unexpected(&other)),
        }
    }

    /// Tells `node` this one is leaving; returns once it has noted it (it ends the stream).
    pub(super) async fn goodbye(self: &Arc<Self>, node: &str) -> Result<(), RpcError> {
        let mut replies = self.call(node, &Message::Leaving).await?;
        while replies.rx.recv().await.is_some() {}
        Ok(())
    }

    /// Serves the calls a peer opens on a connection.
    pub(super) async fn serve_streams(self: Arc<Self>, peer: String, conn: Connection) {
        while let Ok((send, recv)) = conn.accept_bi().await {
            let span = tracing::info_span!("mesh_serve", peer = %peer);
            tokio::spawn(self.clone().serve_one(peer.clone(), send, recv).instrument(span));
        }
    }

    async fn serve_one(self: Arc<Self>, peer: String, mut send: SendStream, recv: RecvStream) {
        let (tx, mut rx) = unbounded_channel();
        tokio::spawn(read_frames(peer.clone(), recv, tx, None).in_current_span());
        let msg = match rx.recv().await {
            Some(Ok(msg)) => msg,
            Some(Err(e)) => {
                tracing::warn!(error = %e, "garbled mesh request; stream closed");
                let _ = send.reset(quinn::VarInt::from_u32(1));
                return;
            }
            None => return,
        };
        let reply = |m: &Message| frame::encode(m);
        match msg {
            Message::FetchPlacement { node } => {
                let doc = self.placement.get(&node);
                let _ = send.write_all(&reply(&Message::Placement { doc })).await;
            }
            Message::FetchDigest => {
                let versions = self.placement.digest();
                let _ = send.write_all(&reply(&Message::Digest { versions })).await;
            }
            Message::Admin { action, model } => {
                let result = self.node.admin(action, &model).await;
                let outcome = if result.is_ok() { "ok" } else { "refused" };
                self.metrics.mesh_rpcs.with_label_values(&["admin", outcome]).inc();
                let _ = send.write_all(&reply(&Message::AdminResult { ok: result.is_ok(), error: result.err() })).await;
            }
            Message::Generate { request, keep_alive } => {
                self.metrics.mesh_rpcs.with_label_values(&["generate", "ok"]).inc();
                self.relay(&peer, *request, keep_alive, &mut send).await;
            }
            Message::Embed { request, keep_alive } => {
                let ka = keep_alive.as_ref().and_then(|v| KeepAlive::parse(v).ok());
                let result = self.node.embed(&request, ka).await;
                let outcome = if result.is_ok() { "ok" } else { "refused" };
                self.metrics.mesh_rpcs.with_label_values(&["embed", outcome]).inc();
                let _ = send.write_all(&reply(&Message::Embedded { result })).await;
            }
            Message::FetchConversation { id } => {
                let messages = self.node.responses.get(&id);
                let outcome = if messages.is_some() { "ok" } else { "refused" };
                self.metrics.mesh_rpcs.with_label_values(&["conversation", outcome]).inc();
                let _ = send.write_all(&reply(&Message::Conversation { messages })).await;
            }
            Message::Leaving => self.feed(Input::PeerLeft(peer)),
            other => {
                tracing::warn!(message = ?other, "unexpected mesh request");
                let _ = send.reset(quinn::VarInt::from_u32(1));
                return;
            }
        }
        // Ending the stream is also the acknowledgement a leaver waits for.
        let _ = send.finish();
    }

    /// Runs a peer's generation on this node and streams its events back, holding the model's
    /// lease until the last one.
    async fn relay(
        &self,
        peer: &str,
        request: GenerateRequest,
        keep_alive: Option<serde_json::Value>,
        send: &mut SendStream,
    ) {
        let keep_alive = keep_alive.as_ref().map(KeepAlive::parse).transpose();
        let local = match keep_alive {
            Ok(ka) => self.node.generate(&request, ka).await,
            Err(e) => Err(GenerateError::new(ErrorKind::InvalidRequest, e)),
        };
        let (mut events, _lease) = match local {
            Ok(l) => (l.events, l.lease),
            Err(error) => {
                let _ = send.write_all(&frame::encode(&Message::Event { event: Event::Error { error } })).await;
                return;
            }
        };
        let mut pending = request.n.max(1);
        while let Some(ev) = events.recv().await {
            if matches!(ev, Event::Done { .. }) {
                pending = pending.saturating_sub(1);
            }
            let last = pending == 0 || matches!(ev, Event::Error { .. });
            // A write error means the requester went away: dropping `events` stops generation.
            if send.write_all(&frame::encode(&Message::Event { event: ev })).await.is_err() {
                tracing::info!(peer = %peer, "forwarded request abandoned by its gateway");
                return;
            }
            if last {
                return;
            }
        }
    }
}

/// Reads frames from a stream into a channel until it ends or a frame is garbled. `send`, the
/// stream's other half, is held while reading so the peer does not see this side go away.
async fn read_frames(
    peer: String,
    mut recv: RecvStream,
    tx: UnboundedSender<Result<Message, RpcError>>,
    send: Option<SendStream>,
) {
    let _send = send;
    let mut buf: Vec<u8> = Vec::new();
    let mut chunk = vec![0u8; READ_CHUNK];
    loop {
        loop {
            match frame::decode(&buf) {
                Ok(Some((msg, used))) => {
                    buf.drain(..used);
                    if tx.send(Ok(msg)).is_err() {
                        return;
                    }
                }
                Ok(None) => break,
                Err(source) => {
                    let _ = tx.send(Err(RpcError::Frame { peer, source }));
                    let _ = recv.stop(quinn::VarInt::from_u32(2));
                    return;
                }
            }
        }
        match recv.read(&mut chunk).await {
            Ok(Some(n)) => buf.extend_from_slice(&chunk[..n]),
            Ok(None) => {
                if !buf.is_empty() {
                    let source =
                        std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "the stream ended inside a frame");
                    let _ = tx.send(Err(RpcError::Stream { peer, source }));
                }
                return;
            }
            Err(e) => {
                let _ = tx.send(Err(RpcError::Stream { peer, source: e.into() }));
                return;
            }
        }
    }
}
