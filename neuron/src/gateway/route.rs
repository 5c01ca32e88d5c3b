//! Where a generation runs: this node (through the local node service), or a peer chosen by
//! `cortex_proto::routing` from the fleet view and the prompt's prefix key. Either way the
//! caller gets the same neutral event stream. A peer that fails before its first event is
//! skipped for the next candidate; one that fails later ends the stream with a clean error event.

use cortex_proto::embed::{EmbedRequest, EmbedResult};
use cortex_proto::eviction::KeepAlive;
use cortex_proto::generate::{ErrorKind, Event, GenerateError, GenerateRequest};
use cortex_proto::prefix::{session_key, PrefixKey};
use cortex_proto::routing::{self, Decision, Member};
use cortex_proto::translate::ReplyShape;
use tokio::sync::mpsc::UnboundedReceiver;

use super::AppState;
use crate::lifecycle::Lease;
use crate::mesh::Remote;

/// A generation under way.
pub struct Opened {
    pub events: UnboundedReceiver<Event>,
    /// Held while a local model serves the request.
    pub lease: Option<Lease>,
    /// The concrete model id (metric label).
    pub model: String,
    pub id: String,
    /// What the response must look like beyond its events (choices, log-probabilities).
    pub shape: ReplyShape,
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

/// Builds the neutral request for the model `asked` resolves to (`make` gets the response id and
/// that model id) and starts it where the fleet view says it should run.
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
    let request = make(id.clone(), model.clone())?;
    let Some(mesh) = st.mesh.clone() else {
        return open_local(st, &request, ka).await;
    };
    let fleet = mesh.fleet();
    let members: Vec<Member<'_>> = fleet.iter().map(|(doc, state)| Member { state: *state, doc }).collect();
    let (prefix, session) = match mesh.cache_aware {
        true => (PrefixKey::of(&request), request.session.as_deref().map(session_key)),
        false => (PrefixKey::default(), None),
    };
    let order: Vec<String> = match routing::route(
        &routing::Request { model: &model, prefix: &prefix, session, load_margin: mesh.load_margin },
        &mesh.name,
        &members,
        rand::random(),
    ) {
        Decision::Try(c) => c.into_iter().map(|c| c.node).collect(),
        // This node's own answer (404, or serving a model the view has not caught up with).
        Decision::NotFound => return open_local(st, &request, ka).await,
        Decision::Unavailable(why) => return Err(GenerateError::new(ErrorKind::Unavailable, why)),
    };
    let mut failures = Vec::new();
    for node in order {
        if node == mesh.name {
            return open_local(st, &request, ka).await;
        }
        match mesh.generate(&node, &request, keep_alive.cloned()).await {
            Ok(Remote::Events(events)) => {
                st.metrics.forwarded.with_label_values(&[&node]).inc();
                tracing::info!(request = %id, model = %model, peer = %node, "forwarded");
                return Ok(Opened { events, lease: None, model, id, shape: ReplyShape::of(&request) });
            }
            // The peer answered with an error of its own (bad request, context): that is the answer.
            Ok(Remote::Refused(e)) if e.kind != ErrorKind::Unavailable && e.kind != ErrorKind::Internal => {
                return Err(e)
            }
            Ok(Remote::Refused(e)) => failures.push(format!("{node}: {}", e.message)),
            Err(e) => failures.push(e.to_string()),
        }
        tracing::warn!(request = %id, peer = %node, "peer failed before its first token; trying the next");
    }
    Err(GenerateError::new(ErrorKind::Unavailable, format!("no node could serve `{model}`: {}", failures.join("; "))))
}

async fn open_local(st: &AppState, request: &GenerateRequest, ka: Option<KeepAlive>) -> Result<Opened, GenerateError> {
    let local = st.node.generate(request, ka).await?;
    let model = local.lease.id().to_string();
    let shape = ReplyShape::of(request);
    Ok(Opened { events: local.events, lease: Some(local.lease), model, id: request.id.clone(), shape })
}

/// Embeds where the fleet view says the model runs: this node, or peers in the routing core's
/// order (the next one when a peer cannot be reached or fails; a peer's refusal of the request
/// itself is the answer).
pub async fn embed(
    st: &AppState,
    request: &EmbedRequest,
    keep_alive: Option<&serde_json::Value>,
) -> Result<EmbedResult, GenerateError> {
    let ka =
        keep_alive.map(KeepAlive::parse).transpose().map_err(|e| GenerateError::new(ErrorKind::InvalidRequest, e))?;
    let Some(mesh) = st.mesh.clone() else {
        return st.node.embed(request, ka).await;
    };
    let fleet = mesh.fleet();
    let members: Vec<Member<'_>> = fleet.iter().map(|(doc, state)| Member { state: *state, doc }).collect();
    let prefix = PrefixKey::default();
    let order: Vec<String> = match routing::route(
        &routing::Request { model: &request.model, prefix: &prefix, session: None, load_margin: mesh.load_margin },
        &mesh.name,
        &members,
        rand::random(),
    ) {
        Decision::Try(c) => c.into_iter().map(|c| c.node).collect(),
        Decision::NotFound => return st.node.embed(request, ka).await,
        Decision::Unavailable(why) => return Err(GenerateError::new(ErrorKind::Unavailable, why)),
    };
    let mut failures = Vec::new();
    for node in order {
        if node == mesh.name {
            return st.node.embed(request, ka).await;
        }
        match mesh.embed(&node, request, keep_alive.cloned()).await {
            Ok(Ok(result)) => {
                st.metrics.forwarded.with_label_values(&[&node]).inc();
                tracing::info!(request = %request.id, model = %request.model, peer = %node, "embeddings forwarded");
                return Ok(result);
            }
            Ok(Err(e)) if e.kind != ErrorKind::Unavailable && e.kind != ErrorKind::Internal => return Err(e),
            Ok(Err(e)) => failures.push(format!("{node}: {}", e.message)),
            Err(e) => failures.push(e.to_string()),
        }
        tracing::warn!(request = %request.id, peer = %node, "peer failed to embed; trying the next");
    }
    Err(GenerateError::new(
        ErrorKind::Unavailable,
        format!("no node could serve `{}`: {}", request.model, failures.join("; ")),
    ))
}
