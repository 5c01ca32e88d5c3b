//! `POST /v1/responses` (OpenAI Responses): parsed and translated by `cortex_proto::responses`,
//! run through the same generation path as chat (`inference::generate`), answered as one
//! response object or as `response.*` events. Unless `store` is false, the conversation (input
//! and output, instructions excluded) is kept on this neuron (`Node::responses`) under the
//! response's id, which names this neuron, so that `previous_response_id` can continue it from
//! any gateway of the fleet.

use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::Response;
use cortex_proto::generate::{ChatMessage, ErrorKind, Event, GenerateError, Prompt, Role};
use cortex_proto::responses::{CallStyle, ResponsesRequest, ResponsesStream};
use cortex_proto::tools::ToolCall;
use cortex_proto::translate::SseFrame;
use serde_json::Value;

use super::inference::{self, Render, Route};
use super::{ApiError, AppState, Dialect};
use crate::node::Node;

/// A Responses request under way: what its answer repeats and what it leaves in the store.
pub struct Responding {
    /// The request's settings, repeated in the response object.
    pub echo: Value,
    /// How its tool calls are written back.
    pub style: CallStyle,
    /// Where the conversation is kept (`None` with `store: false`).
    store: Option<Arc<Node>>,
    /// The conversation so far (earlier turns, then this input), set when the neutral request
    /// is built.
    prompt: Mutex<Vec<ChatMessage>>,
}

impl Responding {
    fn prompt(&self) -> std::sync::MutexGuard<'_, Vec<ChatMessage>> {
        self.prompt.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Stores the finished conversation under the response's id (when the request allows).
    pub fn keep(&self, id: &str, output: &[Value]) {
        if let Some(node) = &self.store {
            let prompt = self.prompt().clone();
            node.responses.put(id.to_string(), conversation(prompt, output));
        }
    }
}

/// A response id: `resp_<hex>`, followed by `_<node>` in a fleet so that any gateway knows which
/// neuron holds its conversation (node names are DNS-style: no underscore).
pub fn response_id(st: &AppState) -> String {
    let id = inference::new_id("resp_");
    match &st.mesh {
        Some(mesh) => format!("{id}_{}", mesh.name),
        None => id,
    }
}

/// The neuron a response id names, if any.
fn owner(id: &str) -> Option<&str> {
    id.strip_prefix("resp_")?.split_once('_').map(|(_, node)| node).filter(|n| !n.is_empty())
}

/// The conversation a response leaves: its prompt's messages, then its output as an assistant turn.
pub fn conversation(mut prompt: Vec<ChatMessage>, output: &[Value]) -> Vec<ChatMessage> {
    let mut turn = ChatMessage::text(Role::Assistant, "");
    for item in output {
        match item["type"].as_str() {
            Some("message") => {
                for part in item["content"].as_array().into_iter().flatten() {
                    turn.content.push_str(part["text"].as_str().unwrap_or_default());
                }
            }
            Some(kind @ ("function_call" | "custom_tool_call")) => turn.tool_calls.push(ToolCall {
                id: item["call_id"].as_str().unwrap_or_default().to_string(),
                name: item["name"].as_str().unwrap_or_default().to_string(),
                arguments: item[if kind == "function_call" { "arguments" } else { "input" }]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
            }),
            _ => {}
        }
    }
    prompt.push(turn);
    prompt
}

/// The earlier conversation `previous_response_id` names: from this neuron's store, else from
/// the neuron its id names. A clear 404 when it is gone (evicted, never stored, its neuron left).
async fn history(st: &AppState, prev: &str) -> Result<Vec<ChatMessage>, ApiError> {
    if let Some(m) = st.node.responses.get(prev) {
        return Ok(m);
    }
    let mut why = String::new();
    if let (Some(mesh), Some(node)) = (&st.mesh, owner(prev)) {
        if node != mesh.name {
            match mesh.fetch_conversation(node, prev).await {
                Ok(Some(m)) => return Ok(m),
                Ok(None) => {}
                Err(e) => why = format!(" (it was kept on neuron `{node}`, which cannot be asked: {e})"),
            }
        }
    }
    let mut error = GenerateError::new(
        ErrorKind::NotFound,
        format!(
            "Previous response with id '{prev}' not found{why}. Responses are kept in memory on the neuron that \
             answered them, up to {} per neuron; send the conversation as input items instead (store: false).",
            crate::node::RESPONSE_STORE_CAPACITY
        ),
    );
    error.code = Some("previous_response_not_found".into());
    Err(ApiError { dialect: Dialect::OpenAi, error })
}

pub async fn responses(
    State(st): State<AppState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let req: ResponsesRequest = match inference::parse(&st, &headers, body, Dialect::OpenAi) {
        Ok(r) => r,
        Err(e) => return inference::refused(&st, "responses", "", e),
    };
    let prior = match &req.previous_response_id {
        Some(prev) => match history(&st, prev).await {
            Ok(h) => h,
            Err(e) => return inference::refused(&st, "responses", &req.model, e),
        },
        None => Vec::new(),
    };
    let style = match req.call_style() {
        Ok(s) => s,
        Err(error) => {
            return inference::refused(&st, "responses", &req.model, ApiError { dialect: Dialect::OpenAi, error })
        }
    };
    let ctx = Arc::new(Responding {
        echo: req.echo(),
        style,
        store: (req.store != Some(false)).then(|| st.node.clone()),
        prompt: Mutex::default(),
    });
    let route = Route::Responses(ctx.clone());
    let id = response_id(&st);
    let make = inference::in_session(&headers, |id, model| {
        let request = req.to_neutral(id, model, prior)?;
        if let Prompt::Chat(messages) = &request.prompt {
            // The instructions are this request's own: a follow-up brings its own.
            let skip = usize::from(req.instructions.is_some());
            *ctx.prompt() = messages[skip..].to_vec();
        }
        Ok(request)
    });
    let res = inference::generate(&st, &route, id, &req.model, req.stream, req.keep_alive.as_ref(), make).await;
    inference::finish(&st, &route, &req.model, res)
}

/// The streaming renderer: `response.*` events, and the conversation stored once it completes.
pub struct Stream {
    inner: ResponsesStream,
    ctx: Arc<Responding>,
    id: String,
}

impl Stream {
    pub fn new(ctx: Arc<Responding>, id: String, created: u64) -> Self {
        let inner = ResponsesStream::new(id.clone(), ctx.echo.clone(), created, ctx.style.clone());
        Self { inner, ctx, id }
    }
}

impl Render for Stream {
    fn frames(&mut self, ev: &Event) -> Vec<SseFrame> {
        let was = self.inner.is_finished();
        let frames = self.inner.on_event(ev);
        if !was {
            if let Some(output) = self.inner.output() {
                self.ctx.keep(&self.id, output);
            }
        }
        frames
    }

    fn finished(&self) -> bool {
        self.inner.is_finished()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn ids_name_their_neuron_and_plain_ids_name_none() {
        assert_eq!(owner("resp_0a1b_n2.fleet"), Some("n2.fleet"));
        assert_eq!(owner("resp_0a1b"), None);
        assert_eq!(owner("resp_0a1b_"), None);
        assert_eq!(owner("chatcmpl-1_n1"), None);
    }

    #[test]
    fn the_store_is_bounded_and_forgets_the_oldest_first() {
        let store = crate::node::ResponseStore::default();
        let cap = crate::node::RESPONSE_STORE_CAPACITY;
        for i in 0..=cap {
            store.put(format!("resp_{i}"), vec![ChatMessage::text(Role::User, i.to_string())]);
        }
        assert!(store.get("resp_0").is_none());
        assert_eq!(store.get("resp_1").unwrap()[0].content, "1");
        assert_eq!(store.get(&format!("resp_{cap}")).unwrap()[0].content, cap.to_string());
    }

    #[test]
    fn a_conversation_is_the_prompt_then_one_assistant_turn_with_text_and_calls() {
        let prompt = vec![ChatMessage::text(Role::User, "list files")];
        let output = [
            json!({"type": "message", "content": [{"type": "output_text", "text": "Sure."}]}),
            json!({"type": "function_call", "call_id": "c1", "name": "shell", "arguments": "{\"cmd\":\"ls\"}"}),
            json!({"type": "custom_tool_call", "call_id": "c2", "name": "apply_patch", "input": "*** Begin Patch"}),
        ];
        let c = conversation(prompt, &output);
        assert_eq!(c.len(), 2);
        assert_eq!((c[1].role, c[1].content.as_str()), (Role::Assistant, "Sure."));
        let calls: Vec<(&str, &str)> = c[1].tool_calls.iter().map(|t| (t.id.as_str(), t.arguments.as_str())).collect();
        assert_eq!(calls, [("c1", "{\"cmd\":\"ls\"}"), ("c2", "*** Begin Patch")]);
    }
}
