//! The router without sockets: requests go through `tower::ServiceExt::oneshot` into the same
//! `Router` `cortex serve` runs, backed by a real lifecycle and engine on a generated tiny model.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use serde_json::{json, Value};
use tower::ServiceExt;

use super::*;
use crate::engine::EngineOptions;
use crate::lifecycle::catalogue::ModelsFile;
use crate::lifecycle::{memory, LifecycleConfig};
use crate::mesh::tests::TempDir;

const MAX_BODY: usize = 64 * 1024;

/// A router over a models directory holding one tiny model, `tiny`; `keys` turns auth on.
fn app(dir: &TempDir, keys: &[&str]) -> Router {
    crate::testutil::write_tiny_llama(&dir.path().join("tiny.gguf"), Default::default()).expect("tiny model");
    let cfg = LifecycleConfig {
        models_dir: dir.path().to_path_buf(),
        extra: vec![],
        file: ModelsFile::builtin(),
        strategy: Default::default(),
        device: memory::cpu_device(Some(1 << 30), 0.75, 0),
        listed_devices: vec![],
        defrag_after_cycles: 0,
        engine: EngineOptions::on(crate::engine::Device::Cpu),
    };
    let metrics = Metrics::new();
    let models = Arc::new(Models::new(cfg, metrics.clone()));
    let state = AppState {
        node: Arc::new(Node::new(models.clone())),
        models,
        metrics,
        api_keys: Arc::new(keys.iter().map(|k| k.to_string()).collect()),
        admin_keys: Arc::new(vec![]),
        mesh: None,
    };
    router(state, MAX_BODY, Duration::from_secs(5))
}

async fn send(app: &Router, req: Request<Body>) -> (StatusCode, Value) {
    let resp = app.clone().oneshot(req).await.expect("the router answers");
    let status = resp.status();
    let bytes = axum::body::to_bytes(resp.into_body(), usize::MAX).await.expect("a body");
    (status, serde_json::from_slice(&bytes).unwrap_or(Value::Null))
}

fn post(uri: &str, body: impl Into<Body>) -> Request<Body> {
    Request::post(uri).header("content-type", "application/json").body(body.into()).unwrap()
}

fn chat(model: &str) -> String {
    json!({"model": model, "max_tokens": 4, "temperature": 0, "messages": [{"role": "user", "content": "hi"}]})
        .to_string()
}

fn openai_error(body: &Value) -> &str {
    body["error"]["message"].as_str().unwrap_or_else(|| panic!("not an OpenAI error: {body}"))
}

fn anthropic_error(body: &Value) -> &str {
    assert_eq!(body["type"], "error", "not an Anthropic error: {body}");
    body["error"]["message"].as_str().unwrap_or_else(|| panic!("not an Anthropic error: {body}"))
}

#[tokio::test]
async fn health_and_unknown_routes() {
    let dir = TempDir::new("router-health");
    let app = app(&dir, &[]);
    let (status, body) = send(&app, Request::get("/health").body(Body::empty()).unwrap()).await;
    assert_eq!((status, body["status"].as_str()), (StatusCode::OK, Some("ok")));
    let (status, body) = send(&app, Request::get("/v1/nope").body(Body::empty()).unwrap()).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(openai_error(&body).contains("no such route"));
}

#[tokio::test]
async fn a_chat_is_answered_by_the_real_engine_and_unknown_models_are_404() {
    let dir = TempDir::new("router-chat");
    let app = app(&dir, &[]);
    let (status, body) = send(&app, post("/v1/chat/completions", chat("tiny"))).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["model"], "tiny");
    assert!(body["usage"]["completion_tokens"].as_u64().is_some_and(|n| (1..=4).contains(&n)), "{body}");
    let (status, body) = send(&app, post("/v1/chat/completions", chat("no-such-model"))).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(openai_error(&body).contains("no-such-model"));
    let (status, body) = send(&app, Request::get("/v1/models").body(Body::empty()).unwrap()).await;
    assert_eq!(status, StatusCode::OK);
    let tiny = body["data"].as_array().unwrap().iter().find(|m| m["id"] == "tiny").cloned().unwrap();
    assert_eq!((tiny["state"].as_str(), tiny["kind"].as_str()), (Some("ready"), Some("generator")));
}

#[tokio::test]
async fn bad_bodies_get_400_in_each_routes_dialect() {
    let dir = TempDir::new("router-bad");
    let app = app(&dir, &[]);
    let (status, body) = send(&app, post("/v1/chat/completions", "{not json")).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(openai_error(&body).contains("invalid request body"));
    let (status, body) = send(&app, post("/v1/messages", "{\"model\": 3}")).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    anthropic_error(&body);
    // A body over the limit by its length: 413 in the route's dialect, the connection closed.
    let big = vec![b' '; MAX_BODY + 1];
    let req = Request::post("/v1/messages").header("content-length", big.len()).body(Body::from(big)).unwrap();
    let resp = app.clone().oneshot(req).await.unwrap();
    assert_eq!(resp.status(), StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(resp.headers().get("connection").map(|v| v.as_bytes()), Some(&b"close"[..]));
    let bytes = axum::body::to_bytes(resp.into_body(), usize::MAX).await.unwrap();
    assert!(anthropic_error(&serde_json::from_slice(&bytes).unwrap()).contains("larger than this server accepts"));
}

#[tokio::test]
async fn keys_are_required_when_configured() {
    let dir = TempDir::new("router-keys");
    let app = app(&dir, &["sesame"]);
    let (status, body) = send(&app, post("/v1/chat/completions", chat("tiny"))).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert!(openai_error(&body).contains("API key is required"));
    let (status, body) = send(&app, post("/v1/messages", "{}")).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    anthropic_error(&body);
    let req = Request::post("/v1/chat/completions")
        .header("content-type", "application/json")
        .header("x-api-key", "sesame")
        .body(Body::from(chat("tiny")))
        .unwrap();
    assert_eq!(send(&app, req).await.0, StatusCode::OK);
    // The admin API takes the key too, and an action it does not know is no route at all.
    let req = Request::post("/cortex/v1/reboot").header("authorization", "Bearer sesame").body(Body::empty()).unwrap();
    assert_eq!(send(&app, req).await.0, StatusCode::NOT_FOUND);
}
