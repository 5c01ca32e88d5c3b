//! The admin API (`/cortex/v1/...`): status (this node and, in a fleet, every peer), and
//! load / unload / pin / unpin, here or on another node (`"on": "NODE"`). Guarded by an admin
//! key when keys are configured.

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::Json;
use cortex_proto::generate::{ErrorKind, GenerateError};
use cortex_proto::model::AdminAction;
use serde::Deserialize;
use serde_json::{json, Value};

use super::{ApiError, AppState, Dialect};

#[derive(Deserialize)]
struct ModelRef {
    model: String,
    /// Node to act on; default this one.
    #[serde(default)]
    on: Option<String>,
}

pub async fn status(State(st): State<AppState>, headers: HeaderMap) -> Result<Json<Value>, ApiError> {
    st.authorize_admin(&headers)?;
    let mut doc = serde_json::to_value(st.models.status()).unwrap_or_default();
    if let Some(mesh) = &st.mesh {
        doc["node"] = mesh.name.clone().into();
        doc["peers"] = serde_json::to_value(mesh.peers()).unwrap_or_default();
    }
    Ok(Json(doc))
}

fn api(error: GenerateError) -> ApiError {
    ApiError { dialect: Dialect::OpenAi, error }
}

/// Runs `action` on the named model, here or on the node named by `on`.
async fn act(
    st: AppState,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
    action: AdminAction,
) -> Result<Json<Value>, ApiError> {
    st.authorize_admin(&headers)?;
    let d = Dialect::OpenAi;
    let bytes = body.map_err(|r| ApiError::from_body(d, r))?;
    let r: ModelRef = serde_json::from_slice(&bytes).map_err(|e| ApiError::from_json(d, e))?;
    if r.model.is_empty() {
        return Err(ApiError::new(d, ErrorKind::InvalidRequest, "model must not be empty"));
    }
    let remote = match (&r.on, &st.mesh) {
        (Some(node), Some(mesh)) if *node != mesh.name => Some((node.clone(), mesh.clone())),
        (Some(node), None) => {
            return Err(ApiError::new(
                d,
                ErrorKind::NotFound,
                format!("no node {node}: this neuron is not part of a fleet"),
            ))
        }
        _ => None,
    };
    if let Some((node, mesh)) = remote {
        let answer = mesh.admin(&node, action, &r.model).await;
        let refused = |e: crate::mesh::RpcError| api(GenerateError::new(ErrorKind::Unavailable, e.to_string()));
        answer.map_err(refused)?.map_err(api)?;
        return Ok(Json(json!({ "ok": true, "action": action, "model": r.model, "on": node })));
    }
    st.node.admin(action, &r.model).await.map_err(api)?;
    let state = st.models.resolve(&r.model).map(|s| s.status());
    let node = st.mesh.as_ref().map(|m| m.name.clone());
    Ok(Json(json!({ "ok": true, "action": action, "model": r.model, "on": node, "status": state })))
}

pub async fn load(
    State(st): State<AppState>,
    h: HeaderMap,
    b: Result<Bytes, BytesRejection>,
) -> Result<Json<Value>, ApiError> {
    act(st, h, b, AdminAction::Load).await
}

pub async fn unload(
    State(st): State<AppState>,
    h: HeaderMap,
    b: Result<Bytes, BytesRejection>,
) -> Result<Json<Value>, ApiError> {
    act(st, h, b, AdminAction::Unload).await
}

pub async fn pin(
    State(st): State<AppState>,
    h: HeaderMap,
    b: Result<Bytes, BytesRejection>,
) -> Result<Json<Value>, ApiError> {
    act(st, h, b, AdminAction::Pin).await
}

pub async fn unpin(
    State(st): State<AppState>,
    h: HeaderMap,
    b: Result<Bytes, BytesRejection>,
) -> Result<Json<Value>, ApiError> {
    act(st, h, b, AdminAction::Unpin).await
}
