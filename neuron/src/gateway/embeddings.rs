//! `POST /v1/embeddings` (OpenAI dialect): inputs checked and translated to the neutral request,
//! embedded on this node or on the peer that holds (or best fits) the model, and answered as
//! floats or base64, with usage. Metrics count it like a generation (api `embeddings`).

use std::time::Instant;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use axum::Json;
use base64::Engine as _;
use cortex_proto::embed::{EmbedResult, Encoding, OaiEmbeddingRequest};
use serde_json::json;

use super::inference::{new_id, parse, with_model};
use super::{route, ApiError, AppState, Dialect};

pub async fn embeddings(
    State(st): State<AppState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let d = Dialect::OpenAi;
    let start = Instant::now();
    let mut asked = String::new();
    let res = async {
        let req: OaiEmbeddingRequest = parse(&st, &headers, body, d)?;
        asked.clone_from(&req.model);
        let api_err = |error| ApiError { dialect: d, error };
        let model = route::resolve(&st, &req.model);
        let (request, encoding) = req.to_neutral(new_id("emb-"), model.clone()).map_err(api_err)?;
        let result = route::embed(&st, &request, req.keep_alive.as_ref()).await.map_err(|e| {
            st.metrics
                .requests
                .with_label_values(&[&model, "embeddings", e.kind.http_status().to_string().as_str()])
                .inc();
            api_err(e)
        })?;
        let m = &st.metrics;
        m.requests.with_label_values(&[&result.model, "embeddings", "200"]).inc();
        m.prompt_tokens.with_label_values(&[&result.model]).inc_by(result.prompt_tokens.into());
        m.latency.with_label_values(&[&result.model, "embeddings"]).observe(start.elapsed().as_secs_f64());
        Ok::<_, ApiError>(Json(body_of(result, encoding)).into_response())
    }
    .await;
    res.unwrap_or_else(|e| with_model(e.into_response(), &asked))
}

/// The OpenAI response: one `embedding` object per input, in order.
fn body_of(result: EmbedResult, encoding: Encoding) -> serde_json::Value {
    let data: Vec<serde_json::Value> = result
        .vectors
        .into_iter()
        .enumerate()
        .map(|(index, v)| {
            let embedding = match encoding {
                Encoding::Float => json!(v),
                Encoding::Base64 => {
                    let bytes: Vec<u8> = v.iter().flat_map(|x| x.to_le_bytes()).collect();
                    json!(base64::engine::general_purpose::STANDARD.encode(bytes))
                }
            };
            json!({"object": "embedding", "index": index, "embedding": embedding})
        })
        .collect();
    json!({
        "object": "list",
        "data": data,
        "model": result.model,
        "usage": {"prompt_tokens": result.prompt_tokens, "total_tokens": result.prompt_tokens},
    })
}
