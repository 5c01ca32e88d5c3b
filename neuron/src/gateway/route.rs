//! Where a generation runs: this node, or a peer chosen by `cortex_proto::routing` from the
//! fleet view. Either way the caller gets the same neutral event stream. A peer that fails
//! before its first event is skipped for the next candidate; one that fails later ends the
//! stream with a clean error event.

use std::sync::Arc;

use cortex_proto::eviction::KeepAlive;
use cortex_proto::frame::Message;
use cortex_proto::generate::{ErrorKind, Event, GenerateError, GenerateRequest};
use cortex_proto::routing::{self, Decision, Member};
use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver};

use super::AppState;
use crate::lifecycle::Lease;
use crate::mesh::Mesh;

/// A generation under way.
pub struct Opened {
    pub events: UnboundedReceiver<Event>,
    /// Held while a local model serves the request.
    pub lease: Option<Lease>,
    /// The concrete model id (metric label).
    pub model: String,
    pub id: String,
}

/// The concrete model id for a client's name: this node's aliases, then any peer's.
pub fn resolve(st: &AppState, asked: &str) -> String {
    let local = st.models.aliases().resolve(asked);
    if local != asked || st.models.resolve(asked).is_some() {
        return local.to_string();
    }
    if let Some(mesh) = &st.mesh {
        for (doc, _) in mesh.fleet() {
            if let Some((_, target)) = doc.aliases.iter().find(|(a, _)| a == asked) {
                return target.clone();
            }
        }
    }
    asked.to_string()
}

/// Starts the generation where the fleet view says it should run.
pub async fn open(
    st: &AppState,
    asked: &str,
    keep_alive: Option<&serde_json::Value>,
    id: String,
    make: impl FnOnce(String, String) -> Result<GenerateRequest, GenerateError>,
) -> Result<Opened, GenerateError> {
    let ka =
        keep_alive.map(KeepAlive::parse).transpose().map_err(|e| GenerateError::new(ErrorKind::InvalidRequest, e))?;
    let model = resolve(st, asked);
    let Some(mesh) = st.mesh.clone() else {
        return open_local(st, asked, ka, id, make).await;
    };
    let fleet = mesh.fleet();
    let members: Vec<Member<'_>> = fleet.iter().map(|(doc, alive)| Member { alive: *alive, doc }).collect();
    let order: Vec<String> = match routing::route(&model, &mesh.name, &members, rand::random()) {
        Decision::Try(c) => c.into_iter().map(|c| c.node).collect(),
        // This node's own answer (404, or serving a model the view has not caught up with).
        Decision::NotFound => return open_local(st, asked, ka, id, make).await,
        Decision::Unavailable(why) => return Err(GenerateError::new(ErrorKind::Unavailable, why)),
    };
    let request = make(id.clone(), model.clone())?;
    let mut failures = Vec::new();
    for node in order {
        if node == mesh.name {
            let req = request.clone();
            return open_local(st, asked, ka, id, move |_, _| Ok(req)).await;
        }
        match forward(&mesh, &node, &request, keep_alive.cloned()).await {
            Ok(Forwarded::Events(events)) => {
                st.metrics.forwarded.with_label_values(&[&node]).inc();
                tracing::info!(request = %id, model = %model, peer = %node, "forwarded");
                return Ok(Opened { events, lease: None, model, id });
            }
            // The peer answered with an error of its own (bad request, context): that is the answer.
            Ok(Forwarded::Refused(e)) if e.kind != ErrorKind::Unavailable && e.kind != ErrorKind::Internal => {
                return Err(e)
            }
            Ok(Forwarded::Refused(e)) => failures.push(format!("{node}: {}", e.message)),
            Err(e) => failures.push(format!("{node}: {e}")),
        }
        tracing::warn!(request = %id, peer = %node, "peer failed before its first token; trying the next");
    }
    Err(GenerateError::new(ErrorKind::Unavailable, format!("no node could serve `{model}`: {}", failures.join("; "))))
}

async fn open_local(
    st: &AppState,
    asked: &str,
    ka: Option<KeepAlive>,
    id: String,
    make: impl FnOnce(String, String) -> Result<GenerateRequest, GenerateError>,
) -> Result<Opened, GenerateError> {
    let lease = st.models.acquire(asked, ka).await?;
    let model = lease.model.clone();
    let req = make(id.clone(), model.id.clone())?;
    let (m, r) = (model.clone(), req.clone());
    let prepared = tokio::task::spawn_blocking(move || m.prepare(&r))
        .await
        .map_err(|e| GenerateError::new(ErrorKind::Internal, format!("tokenizer task failed: {e}")))??;
    tracing::info!(request = %id, model = %model.id, prompt_tokens = prepared.prompt.len(), max_tokens = prepared.max_tokens, "generating");
    let events = model.submit(&req, prepared)?;
    Ok(Opened { events, lease: Some(lease), model: model.id.clone(), id })
}

enum Forwarded {
    Events(UnboundedReceiver<Event>),
    Refused(GenerateError),
}

/// Sends the request to `node` and waits for its first event.
async fn forward(
    mesh: &Arc<Mesh>,
    node: &str,
    request: &GenerateRequest,
    keep_alive: Option<serde_json::Value>,
) -> Result<Forwarded, String> {
    let mut replies = mesh.rpc(node, &Message::Generate { request: request.clone(), keep_alive }).await?;
    let first = match replies.recv().await {
        Some(Ok(Message::Event { event })) => event,
        Some(Ok(other)) => return Err(format!("unexpected reply {other:?}")),
        Some(Err(e)) => return Err(e),
        None => return Err("the peer closed the stream without answering".into()),
    };
    if let Event::Error { error } = first {
        return Ok(Forwarded::Refused(error));
    }
    let (tx, rx) = unbounded_channel();
    let peer = node.to_string();
    let _ = tx.send(first);
    tokio::spawn(async move {
        loop {
            let ev = match replies.recv().await {
                Some(Ok(Message::Event { event })) => event,
                Some(Ok(_)) | Some(Err(_)) | None => Event::Error {
                    error: GenerateError::new(
                        ErrorKind::Unavailable,
                        format!("peer {peer} failed in the middle of the answer"),
                    ),
                },
            };
            let last = matches!(ev, Event::Done { .. } | Event::Error { .. });
            // The client went away: dropping `replies` resets the stream, which stops the peer.
            if tx.send(ev).is_err() || last {
                return;
            }
        }
    });
    Ok(Forwarded::Events(rx))
}
