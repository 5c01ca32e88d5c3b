//! The admin API (`/cortex/v1/...`): this node's status, and load / unload / pin / unpin.
//! Guarded by an admin key when keys are configured.

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::Json;
use cortex_proto::generate::ErrorKind;
use serde::Deserialize;
use serde_json::{json, Value};

use super::{ApiError, AppState, Dialect};
use crate::lifecycle::NodeStatus;

#[derive(Deserialize)]
struct ModelRef {
    model: String,
}

pub async fn status(State(st): State<AppState>, headers: HeaderMap) -> Result<Json<NodeStatus>, ApiError> {
    st.authorize_admin(&headers)?;
    Ok(Json(st.models.status()))
}

fn model_ref(st: &AppState, headers: &HeaderMap, body: Result<Bytes, BytesRejection>) -> Result<String, ApiError> {
    st.authorize_admin(headers)?;
    let d = Dialect::OpenAi;
    let bytes = body.map_err(|r| ApiError::from_body(d, r))?;
    let r: ModelRef = serde_json::from_slice(&bytes).map_err(|e| ApiError::from_json(d, e))?;
    if r.model.is_empty() {
        return Err(ApiError::new(d, ErrorKind::InvalidRequest, "model must not be empty"));
    }
    Ok(r.model)
}

fn done(st: &AppState, action: &str, model: &str) -> Json<Value> {
    let state = st.models.resolve(model).map(|s| s.status());
    Json(json!({ "ok": true, "action": action, "model": model, "status": state }))
}

fn api(e: cortex_proto::generate::GenerateError) -> ApiError {
    ApiError { dialect: Dialect::OpenAi, error: e }
}

pub async fn load(
    State(st): State<AppState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<Value>, ApiError> {
    let model = model_ref(&st, &headers, body)?;
    st.models.load(&model).await.map_err(api)?;
    Ok(done(&st, "load", &model))
}

pub async fn unload(
    State(st): State<AppState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<Value>, ApiError> {
    let model = model_ref(&st, &headers, body)?;
    st.models.unload(&model).map_err(api)?;
    Ok(done(&st, "unload", &model))
}

pub async fn pin(
    State(st): State<AppState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<Value>, ApiError> {
    let model = model_ref(&st, &headers, body)?;
    st.models.pin(&model).await.map_err(api)?;
    Ok(done(&st, "pin", &model))
}

pub async fn unpin(
    State(st): State<AppState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<Value>, ApiError> {
    let model = model_ref(&st, &headers, body)?;
    st.models.unpin(&model).map_err(api)?;
    Ok(done(&st, "unpin", &model))
}
