//! The OpenAI HTTP dialect: bodies of `/v1/chat/completions`, `/v1/completions` and
//! `/v1/models`, their streaming chunks, and the error shape. Plain serde data; what a request
//! means is decided in `translate`.
//!
//! Requests ignore unknown fields on purpose: clients routinely send `logit_bias`, `metadata`,
//! `store` and the like, and rejecting them would break those clients over features we simply
//! do not offer. The fields cortex does act on (tools, tool choice, response format, `n`,
//! logprobs) are kept loose where a wrong value deserves a 400 naming the field rather than a
//! serde message: `translate` checks them. Every type derives both directions so the CLI can
//! build requests and read responses with the same definitions.

use serde::{Deserialize, Deserializer, Serialize};
use serde_json::{json, Map, Value};

use crate::generate::{ContextOverflow, ErrorKind, FinishReason, GenerateError, Timings, Usage};

/// `system_fingerprint` of every response and chunk: the build that answered.
pub const SYSTEM_FINGERPRINT: &str = concat!("cortex-", env!("CARGO_PKG_VERSION"));

/// `object` of a non-streaming chat response.
pub const CHAT_COMPLETION_OBJECT: &str = "chat.completion";
/// `object` of a chat stream chunk.
pub const CHAT_COMPLETION_CHUNK_OBJECT: &str = "chat.completion.chunk";
/// `object` of a text completion, streamed or not.
pub const TEXT_COMPLETION_OBJECT: &str = "text_completion";

/// Body of `POST /v1/chat/completions`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ChatCompletionRequest {
    pub model: String,
    pub messages: Vec<OaiMessage>,
    /// Newer name of `max_tokens`; wins when both are given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_completion_tokens: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tools: Option<Vec<OaiTool>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_choice: Option<OaiToolChoice>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parallel_tool_calls: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response_format: Option<OaiResponseFormat>,
    /// The deprecated request-level forms of `tools` and `tool_choice`: refused by `translate`
    /// (answering them needs the legacy `function_call` response), not silently ignored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub functions: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub function_call: Option<Value>,
    /// Report each token's log-probability.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub logprobs: Option<bool>,
    /// And this many alternatives per token (0 to 20; needs `logprobs: true`). Signed so that a
    /// negative value gets the range message.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub top_logprobs: Option<i64>,
    #[serde(flatten)]
    pub sampling: OaiSampling,
}

/// One entry of `tools`: `{"type": "function", "function": {...}}` or `{"type": "custom",
/// "custom": {...}}`. Loose: a missing name or a wrong type is refused by `translate`, by path.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct OaiTool {
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub function: Option<OaiFunction>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub custom: Option<OaiCustomTool>,
}

/// A function tool: its arguments are a JSON object of `parameters` (a JSON Schema).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct OaiFunction {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Absent: no parameters (OpenAI's reading too).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parameters: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub strict: Option<bool>,
}

/// A free-form tool: its input is text, shaped by `format` when that is a grammar.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct OaiCustomTool {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub format: Option<OaiCustomFormat>,
}

/// `{"type": "text"}` or `{"type": "grammar", "grammar": {"syntax", "definition"}}`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct OaiCustomFormat {
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grammar: Option<OaiGrammar>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct OaiGrammar {
    /// `lark` or `regex`.
    pub syntax: String,
    pub definition: String,
}

/// `tool_choice`: `"none" | "auto" | "required"`, or an object naming one tool.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum OaiToolChoice {
    Mode(String),
    Named(OaiNamedToolChoice),
}

/// `{"type": "function", "function": {"name"}}` or `{"type": "custom", "custom": {"name"}}`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct OaiNamedToolChoice {
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub function: Option<OaiName>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub custom: Option<OaiName>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct OaiName {
    pub name: String,
}

/// `response_format`: `{"type": "text" | "json_object"}` or `{"type": "json_schema",
/// "json_schema": {"name", "schema", "strict"}}`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct OaiResponseFormat {
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub json_schema: Option<OaiJsonSchema>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct OaiJsonSchema {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Absent: any JSON value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schema: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub strict: Option<bool>,
}

/// The sampling, stopping and streaming fields both generation requests share.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct OaiSampling {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_tokens: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub temperature: Option<f32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub top_p: Option<f32>,
    /// Extension (vLLM, llama.cpp): `<= 0` disables it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub top_k: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seed: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stop: Option<StopSpec>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stream: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stream_options: Option<StreamOptions>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub frequency_penalty: Option<f32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub presence_penalty: Option<f32>,
    /// Extension (vLLM, llama.cpp): multiplicative, 1.0 = off.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repetition_penalty: Option<f32>,
    /// Extension (vLLM, llama.cpp): generate to `max_tokens` whatever the model says.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ignore_eos: Option<bool>,
    /// Signed so that 0 and negative values get the range message.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub n: Option<i64>,
    /// Extension (Ollama): how long the model stays loaded; passed through untouched.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keep_alive: Option<Value>,
}

impl OaiSampling {
    pub fn is_stream(&self) -> bool {
        self.stream.unwrap_or(false)
    }

    pub fn include_usage(&self) -> bool {
        self.stream_options.as_ref().and_then(|o| o.include_usage).unwrap_or(false)
    }
}

/// One message of a chat request. `role` stays a string so that an unknown role becomes a
/// readable 400 naming it (from `translate`), not a serde "unknown variant" message.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct OaiMessage {
    pub role: String,
    /// Absent or `null` for assistant turns that only carried tool calls.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content: Option<OaiContent>,
    /// An assistant turn's calls.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_calls: Option<Vec<OaiToolCall>>,
    /// A `tool` message: the call it answers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_call_id: Option<String>,
    /// A legacy `function` message: the function that answered (required there).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// A legacy assistant turn's single call (before `tool_calls`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub function_call: Option<OaiFunctionCall>,
}

impl OaiMessage {
    pub fn text(role: impl Into<String>, content: impl Into<String>) -> Self {
        Self { role: role.into(), content: Some(OaiContent::Text(content.into())), ..Default::default() }
    }
}

/// A call, in an assistant message of the history or of a response: `{"id", "type":
/// "function", "function": {"name", "arguments"}}` or `{"id", "type": "custom", "custom":
/// {"name", "input"}}`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct OaiToolCall {
    /// Empty when a request left it out (refused by `translate`).
    #[serde(default)]
    pub id: String,
    #[serde(rename = "type", default = "function_type")]
    pub kind: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub function: Option<OaiFunctionCall>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub custom: Option<OaiCustomCall>,
}

fn function_type() -> String {
    "function".into()
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct OaiFunctionCall {
    pub name: String,
    /// JSON text. A request may also give the object itself; it is read back as compact text.
    #[serde(default, deserialize_with = "json_text")]
    pub arguments: String,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct OaiCustomCall {
    pub name: String,
    #[serde(default)]
    pub input: String,
}

/// A string as is; any other JSON value as its compact text (`null` as empty).
fn json_text<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    Ok(match Value::deserialize(d)? {
        Value::String(s) => s,
        Value::Null => String::new(),
        other => other.to_string(),
    })
}

/// Message content: a plain string or an array of typed parts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum OaiContent {
    Text(String),
    Parts(Vec<OaiContentPart>),
}

/// One content part. Kept loose (`type` as a string) so that `image_url` and friends parse
/// and are refused with a clear message by `translate` rather than by serde.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OaiContentPart {
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
}

/// `stop`: one string or a list of them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum StopSpec {
    One(String),
    Many(Vec<String>),
}

impl StopSpec {
    pub fn to_vec(&self) -> Vec<String> {
        match self {
            StopSpec::One(s) => vec![s.clone()],
            StopSpec::Many(v) => v.clone(),
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct StreamOptions {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub include_usage: Option<bool>,
}

/// Body of `POST /v1/completions` (the legacy raw-text endpoint).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CompletionRequest {
    pub model: String,
    pub prompt: PromptSpec,
    /// Accepted and ignored: the prompt is never echoed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub echo: Option<bool>,
    /// Report each token's log-probability and this many alternatives (0 to 5).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub logprobs: Option<i64>,
    #[serde(flatten)]
    pub sampling: OaiSampling,
}

/// `prompt`: a string, or an array that must hold exactly one string (batches are refused).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum PromptSpec {
    One(String),
    Many(Vec<String>),
}

impl Default for PromptSpec {
    fn default() -> Self {
        PromptSpec::One(String::new())
    }
}

/// Token counts in OpenAI's names.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct OaiUsage {
    pub prompt_tokens: u32,
    pub completion_tokens: u32,
    pub total_tokens: u32,
    /// Of the prompt tokens, those served from the prefix cache, as OpenAI reports them.
    #[serde(default)]
    pub prompt_tokens_details: PromptTokensDetails,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PromptTokensDetails {
    pub cached_tokens: u32,
}

impl From<Usage> for OaiUsage {
    fn from(u: Usage) -> Self {
        Self {
            prompt_tokens: u.prompt_tokens,
            completion_tokens: u.completion_tokens,
            total_tokens: u.total(),
            prompt_tokens_details: PromptTokensDetails { cached_tokens: u.cached_tokens },
        }
    }
}

/// Extension field `timings` (llama.cpp's server reports the same idea); clients that do not
/// know it ignore it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct OaiTimings {
    pub ttft_ms: f64,
    pub prefill_tok_s: f64,
    pub decode_tok_s: f64,
    pub queue_ms: f64,
}

impl From<Timings> for OaiTimings {
    fn from(t: Timings) -> Self {
        Self { ttft_ms: t.ttft_ms, prefill_tok_s: t.prefill_tok_s, decode_tok_s: t.decode_tok_s, queue_ms: t.queue_ms }
    }
}

/// Body of `GET /v1/models`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelList {
    pub object: String,
    pub data: Vec<ModelObject>,
}

impl ModelList {
    pub fn new(data: Vec<ModelObject>) -> Self {
        Self { object: "list".into(), data }
    }
}

/// One model. `extra` is flattened into the object so the server can add its own fields
/// (`loaded`, `size_bytes`, …) next to OpenAI's.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelObject {
    pub id: String,
    pub object: String,
    pub created: u64,
    pub owned_by: String,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

impl ModelObject {
    pub fn new(id: impl Into<String>, created: u64, owned_by: impl Into<String>) -> Self {
        Self { id: id.into(), object: "model".into(), created, owned_by: owned_by.into(), extra: Map::new() }
    }
}

/// `finish_reason` for a neutral finish: OpenAI has no separate stop-sequence reason.
pub fn finish_reason(f: &FinishReason) -> &'static str {
    match f {
        FinishReason::Stop | FinishReason::StopSequence(_) => "stop",
        FinishReason::Length => "length",
        FinishReason::ToolCalls => "tool_calls",
    }
}

/// The error body `{"error": {...}}` as parsed by clients (code is loose: servers differ).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ErrorResponse {
    pub error: ErrorObject,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ErrorObject {
    pub message: String,
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default)]
    pub param: Option<String>,
    #[serde(default)]
    pub code: Option<Value>,
}

/// OpenAI's `error.type` for each class.
pub fn error_type(kind: ErrorKind) -> &'static str {
    match kind {
        ErrorKind::InvalidRequest | ErrorKind::PayloadTooLarge | ErrorKind::Conflict => "invalid_request_error",
        ErrorKind::Authentication => "authentication_error",
        ErrorKind::PermissionDenied => "permission_error",
        ErrorKind::NotFound => "not_found_error",
        ErrorKind::Overloaded => "rate_limit_error",
        ErrorKind::Unavailable => "service_unavailable",
        ErrorKind::Internal => "server_error",
    }
}

/// OpenAI's `error.code`: a machine-readable detail where one is meaningful.
pub fn error_code(kind: ErrorKind) -> Option<&'static str> {
    match kind {
        ErrorKind::InvalidRequest | ErrorKind::Internal => None,
        ErrorKind::Authentication => Some("invalid_api_key"),
        ErrorKind::PermissionDenied => Some("permission_denied"),
        ErrorKind::NotFound => Some("not_found"),
        ErrorKind::PayloadTooLarge => Some("request_too_large"),
        ErrorKind::Conflict => Some("conflict"),
        ErrorKind::Overloaded => Some("rate_limit_exceeded"),
        ErrorKind::Unavailable => Some("service_unavailable"),
    }
}

/// The error's text; a context overflow in OpenAI's own words, which clients (LiteLLM, Codex,
/// LangChain) match to tell it from other 400s.
pub fn error_message(err: &GenerateError) -> String {
    match err.overflow {
        Some(ContextOverflow { prompt, max_tokens, context }) => format!(
            "This model's maximum context length is {context} tokens. However, you requested {} tokens ({prompt} in the messages, {max_tokens} in the completion). Please reduce the length of the messages or completion.",
            u64::from(prompt) + u64::from(max_tokens)
        ),
        None => err.message.clone(),
    }
}

/// `{"error": {"message", "type", "param": null, "code"}}` for an error of any class; the
/// error's own code (`context_length_exceeded`, …) wins over the class's.
pub fn error_body(err: &GenerateError) -> Value {
    json!({
        "error": {
            "message": error_message(err),
            "type": error_type(err.kind),
            "param": null,
            "code": err.code.as_deref().or(error_code(err.kind)),
        }
    })
}

mod response;

pub use response::{
    ChatChoice, ChatCompletion, ChatCompletionChunk, ChatLogprobs, ChunkChoice, Completion, CompletionChoice,
    CompletionChunk, CompletionLogprobs, Delta, OaiCustomDelta, OaiFunctionDelta, OaiTokenLogprob, OaiToolCallDelta,
    OaiTopLogprob, ResponseMessage,
};

#[cfg(test)]
mod tests;
