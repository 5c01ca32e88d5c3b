//! axum routes: OpenAI (`/v1/chat/completions`, `/v1/completions`, `/v1/responses`,
//! `/v1/embeddings`, `/v1/models`), Anthropic
//! (`/v1/messages`, `/v1/messages/count_tokens`), `/health`, and the metrics listener.

mod admin;
mod embeddings;
mod error;
mod inference;
mod responses;
mod route;
#[cfg(test)]
mod tests;

use std::sync::Arc;

use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use cortex_proto::generate::ErrorKind;
use cortex_proto::model::{ModelState, PeerState};
use cortex_proto::openai::{ModelList, ModelObject};
use cortex_proto::placement::PlacementDoc;

pub use error::{ApiError, Dialect};

use crate::lifecycle::{ModelStatus, Models};
use crate::metrics::Metrics;
use crate::node::Node;

/// What every handler shares.
#[derive(Clone)]
pub struct AppState {
    /// The local node service: generations and admin actions served here.
    pub node: Arc<Node>,
    pub models: Arc<Models>,
    pub metrics: Metrics,
    /// Every accepted key, admin keys included.
    pub api_keys: Arc<Vec<String>>,
    /// Keys allowed on `/cortex/v1/...`; empty means every API key is.
    pub admin_keys: Arc<Vec<String>>,
    /// The fleet, when this node is part of one.
    pub mesh: Option<Arc<crate::mesh::Mesh>>,
}

impl AppState {
    /// Checks `Authorization: Bearer KEY` or `x-api-key: KEY` when keys are configured.
    pub fn authorize(&self, headers: &HeaderMap, dialect: Dialect) -> Result<(), ApiError> {
        self.check_key(headers, dialect, &self.api_keys)
    }

    /// Admin routes: a key from `admin_keys` (or any key when no admin keys are set); a valid
    /// inference-only key gets 403.
    pub fn authorize_admin(&self, headers: &HeaderMap) -> Result<(), ApiError> {
        let d = Dialect::OpenAi;
        if self.admin_keys.is_empty() {
            return self.authorize(headers, d);
        }
        self.check_key(headers, d, &self.api_keys)?;
        self.check_key(headers, d, &self.admin_keys)
            .map_err(|_| ApiError::new(d, ErrorKind::PermissionDenied, "this key may not use the admin API"))
    }

    fn check_key(&self, headers: &HeaderMap, dialect: Dialect, keys: &[String]) -> Result<(), ApiError> {
        if self.api_keys.is_empty() {
            return Ok(());
        }
        let bearer = headers
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer ").or_else(|| v.strip_prefix("bearer ")));
        let x_key = headers.get("x-api-key").and_then(|v| v.to_str().ok());
        let presented = [bearer, x_key];
        if presented
            .iter()
            .flatten()
            .any(|k| keys.iter().any(|good| constant_time_eq(good.as_bytes(), k.trim().as_bytes())))
        {
            return Ok(());
        }
        let msg = if presented.iter().all(Option::is_none) {
            "an API key is required: send `Authorization: Bearer KEY` or `x-api-key: KEY`"
        } else {
            "the API key is not valid"
        };
        Err(ApiError::new(dialect, ErrorKind::Authentication, msg))
    }
}

/// Compares keys without leaking the matching prefix length through timing.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// A request body that has not fully arrived by its deadline fails to read: the handler answers
/// 400 in its dialect ("could not read the request body") and the connection closes, instead of a
/// client holding it open by trickling bytes.
struct DeadlineBody {
    inner: axum::body::Body,
    deadline: std::pin::Pin<Box<tokio::time::Sleep>>,
}

impl http_body::Body for DeadlineBody {
    type Data = axum::body::Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        if std::future::Future::poll(self.deadline.as_mut(), cx).is_ready() {
            return std::task::Poll::Ready(Some(Err(axum::Error::new("the request body did not arrive in time"))));
        }
        std::pin::Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

async fn body_deadline(
    axum::extract::State(limit): axum::extract::State<std::time::Duration>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let req =
        req.map(|inner| axum::body::Body::new(DeadlineBody { inner, deadline: Box::pin(tokio::time::sleep(limit)) }));
    next.run(req).await
}

/// Most bytes of an oversized body read and discarded before its 413 is sent.
pub const DRAIN_LIMIT: u64 = 64 << 20;

/// A body larger than `max` by its `Content-Length` is read and discarded (up to [`DRAIN_LIMIT`],
/// within the body deadline) before the 413 goes out with `Connection: close`: a client that
/// sends its whole body before reading the answer (Python's urllib) then reads the 413 instead
/// of a broken pipe, which is what nginx's lingering close arranges. Bodies without a length
/// are cut at the limit by the route's own extractor.
async fn refuse_oversized(
    State(max): State<usize>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let declared =
        req.headers().get(axum::http::header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    let Some(declared) = declared.filter(|&n| n > max as u64) else { return next.run(req).await };
    let dialect = if req.uri().path().starts_with("/v1/messages") { Dialect::Anthropic } else { Dialect::OpenAi };
    let mut body = req.into_body().into_data_stream();
    let mut drained = 0u64;
    while drained < DRAIN_LIMIT.min(declared) {
        match futures::StreamExt::next(&mut body).await {
            Some(Ok(chunk)) => drained += chunk.len() as u64,
            _ => break,
        }
    }
    let msg = format!("the request body ({declared} bytes) is larger than this server accepts ({max} bytes)");
    let mut resp = ApiError::new(dialect, ErrorKind::PayloadTooLarge, msg).into_response();
    resp.headers_mut().insert(axum::http::header::CONNECTION, axum::http::HeaderValue::from_static("close"));
    resp
}

/// Every refused request (status 400 and up) logged at info with its route, the model it
/// named, its status and the reason it was given (never its body), and counted per route and
/// status; an unknown route counts as `unmatched`.
async fn log_refusals(
    State(metrics): State<Metrics>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let route = req.extensions().get::<axum::extract::MatchedPath>().map(|p| p.as_str().to_string());
    let route = route.unwrap_or_else(|| "unmatched".into());
    let (method, path) = (req.method().clone(), req.uri().path().to_string());
    let resp = next.run(req).await;
    let status = resp.status();
    if status.is_client_error() || status.is_server_error() {
        let refusal = resp.extensions().get::<error::Refusal>();
        let reason = refusal.map_or_else(|| status.canonical_reason().unwrap_or("").to_string(), |r| r.reason.clone());
        let model = refusal.and_then(|r| r.model.as_deref()).unwrap_or("-");
        tracing::info!(%method, %path, route, model, status = status.as_u16(), reason, "request refused");
        metrics.refused.with_label_values(&[&route, status.as_str()]).inc();
    }
    resp
}

/// `HEAD /` and `HEAD /v1/messages`: clients check that the server is there before they send.
async fn present() -> StatusCode {
    StatusCode::OK
}

pub fn router(state: AppState, max_body_bytes: usize, body_timeout: std::time::Duration) -> Router {
    let metrics = state.metrics.clone();
    Router::new()
        .route("/", get(root).head(present))
        .route("/health", get(health))
        .route("/v1/models", get(list_models))
        .route("/v1/models/{*id}", get(get_model))
        .route("/v1/chat/completions", post(inference::chat_completions))
        .route("/v1/completions", post(inference::completions))
        .route("/v1/messages", post(inference::messages).head(present))
        .route("/v1/messages/count_tokens", post(inference::count_tokens))
        .route("/v1/embeddings", post(embeddings::embeddings))
        .route("/v1/responses", post(responses::responses))
        .route("/cortex/v1/status", get(admin::status))
        .route("/cortex/v1/load", post(admin::load))
        .route("/cortex/v1/unload", post(admin::unload))
        .route("/cortex/v1/pin", post(admin::pin))
        .route("/cortex/v1/unpin", post(admin::unpin))
        .fallback(not_found)
        .layer(DefaultBodyLimit::max(max_body_bytes))
        .layer(axum::middleware::from_fn_with_state(max_body_bytes, refuse_oversized))
        .layer(axum::middleware::from_fn_with_state(body_timeout, body_deadline))
        .layer(axum::middleware::from_fn_with_state(metrics, log_refusals))
        .with_state(state)
}

/// `GET /`: what answers here, for a person or a probe.
async fn root() -> Json<serde_json::Value> {
    Json(serde_json::json!({ "name": "cortex", "version": env!("CARGO_PKG_VERSION"), "status": "ok" }))
}

pub fn metrics_router(metrics: Metrics) -> Router {
    Router::new().route(
        "/metrics",
        get(move || {
            let m = metrics.clone();
            async move { ([("content-type", "text/plain; version=0.0.4")], m.render()) }
        }),
    )
}

async fn health(State(st): State<AppState>) -> Json<serde_json::Value> {
    let (running, queued) = st.models.busy();
    Json(serde_json::json!({ "status": "ok", "running": running, "queued": queued }))
}

async fn not_found() -> ApiError {
    ApiError::new(Dialect::OpenAi, ErrorKind::NotFound, "no such route")
}

fn model_object(id: &str, v: &ModelStatus, alias_of: Option<&str>) -> ModelObject {
    let mut extra = serde_json::Map::new();
    extra.insert("loaded".into(), (v.state == ModelState::Ready).into());
    extra.insert("state".into(), v.state.as_str().into());
    extra.insert("kind".into(), v.kind.as_str().into());
    extra.insert("pinned".into(), v.pinned.into());
    extra.insert("on_disk".into(), v.on_disk.into());
    extra.insert("size_bytes".into(), v.size_bytes.into());
    extra.insert("format".into(), v.format.into());
    if let Some(target) = alias_of {
        extra.insert("alias_of".into(), target.into());
    }
    if let Some(err) = &v.error {
        extra.insert("last_error".into(), err.as_str().into());
    }
    ModelObject { id: id.to_string(), object: "model".into(), created: v.created, owned_by: "cortex".into(), extra }
}

/// Models on this node, then each alias whose target is here, mirroring its target. In a
/// fleet, every member's models are merged in, each with where it is loaded (`locations`) and
/// where it could be loaded (`feasible_on`).
fn all_models(st: &AppState) -> Vec<ModelObject> {
    let models: &Models = &st.models;
    let views = models.status().models;
    let mut out: Vec<ModelObject> = views.iter().map(|v| model_object(&v.id, v, None)).collect();
    if let Some(mesh) = &st.mesh {
        merge_fleet(&mut out, &mesh.fleet());
    }
    let mut aliases: Vec<(String, String)> =
        models.aliases().iter().map(|(a, t)| (a.to_string(), t.to_string())).collect();
    if let Some(mesh) = &st.mesh {
        aliases.extend(mesh.fleet().into_iter().flat_map(|(d, _)| d.aliases));
    }
    aliases.sort();
    aliases.dedup_by(|a, b| a.0 == b.0);
    for (alias, target) in aliases {
        if let Some(t) = out.iter().find(|m| m.id == target).cloned() {
            let mut entry = t;
            entry.id = alias;
            entry.extra.insert("alias_of".into(), target.into());
            out.push(entry);
        }
    }
    out
}

/// Adds `locations` and `feasible_on` to each model, and the models only peers have. A model
/// that only members unable to take work hold (down, suspect, left, draining) is listed as
/// `unavailable`: requests for it get 503, not 404.
fn merge_fleet(out: &mut Vec<ModelObject>, fleet: &[(PlacementDoc, PeerState)]) {
    let open: Vec<_> = fleet.iter().filter(|(d, s)| *s == PeerState::Alive && !d.draining).map(|(d, _)| d).collect();
    let mut ids: Vec<String> = fleet.iter().flat_map(|(d, _)| d.models.iter().map(|m| m.id.clone())).collect();
    ids.sort();
    ids.dedup();
    for id in ids {
        let locations: Vec<&str> =
            open.iter().filter(|d| d.model(&id).is_some_and(|m| m.is_ready())).map(|d| d.node.as_str()).collect();
        let feasible: Vec<&str> = open
            .iter()
            .filter(|d| d.model(&id).is_some_and(|m| m.bytes <= d.budget_bytes))
            .map(|d| d.node.as_str())
            .collect();
        let served = open.iter().any(|d| d.model(&id).is_some());
        let entry = match out.iter_mut().find(|m| m.id == id) {
            Some(e) => e,
            None => {
                let Some((d, _)) = fleet.iter().find(|(d, _)| d.model(&id).is_some()) else { continue };
                let Some(m) = d.model(&id) else { continue };
                let mut extra = serde_json::Map::new();
                extra.insert("size_bytes".into(), m.bytes.into());
                extra.insert("kind".into(), m.kind.as_str().into());
                extra.insert("pinned".into(), false.into());
                extra.insert("on_disk".into(), false.into());
                out.push(ModelObject {
                    id: id.clone(),
                    object: "model".into(),
                    created: 0,
                    owned_by: "cortex".into(),
                    extra,
                });
                out.last_mut().unwrap_or_else(|| unreachable!())
            }
        };
        let state = match (locations.is_empty(), served) {
            (false, _) => "ready",
            (true, true) => "unloaded",
            (true, false) => "unavailable",
        };
        entry.extra.insert("loaded".into(), (!locations.is_empty()).into());
        entry.extra.insert("state".into(), state.into());
        entry.extra.insert("locations".into(), locations.into());
        entry.extra.insert("feasible_on".into(), feasible.into());
    }
}

async fn list_models(State(st): State<AppState>, headers: HeaderMap) -> Result<Json<ModelList>, ApiError> {
    st.authorize(&headers, Dialect::OpenAi)?;
    Ok(Json(ModelList::new(all_models(&st))))
}

async fn get_model(State(st): State<AppState>, headers: HeaderMap, Path(id): Path<String>) -> Response {
    if let Err(e) = st.authorize(&headers, Dialect::OpenAi) {
        return e.into_response();
    }
    match all_models(&st).into_iter().find(|m| m.id == id) {
        Some(m) => Json(m).into_response(),
        None => {
            ApiError::new(Dialect::OpenAi, ErrorKind::NotFound, format!("model `{id}` does not exist on this neuron"))
                .into_response()
        }
    }
}
