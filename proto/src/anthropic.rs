//! The Anthropic HTTP dialect: bodies of `/v1/messages` and `/v1/messages/count_tokens`, the
//! typed stream events, and the error shape. Plain serde data; what a request means is decided
//! in `translate`.
//!
//! As on the OpenAI side, unknown request fields (`tools`, `thinking`, `cache_control`, …) are
//! ignored rather than refused, and content blocks keep `type` as a string so an unsupported
//! block gets a readable 400 from `translate`.

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::generate::{ErrorKind, FinishReason, GenerateError};

/// Body of `POST /v1/messages`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct MessagesRequest {
    pub model: String,
    pub messages: Vec<AnthMessage>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub system: Option<AnthSystem>,
    /// Required by Anthropic's API, so a missing one is a parse error here too.
    pub max_tokens: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub temperature: Option<f32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub top_p: Option<f32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub top_k: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stop_sequences: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stream: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<Value>,
    /// Extension (Ollama): how long the model stays loaded; passed through untouched.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keep_alive: Option<Value>,
}

impl MessagesRequest {
    pub fn is_stream(&self) -> bool {
        self.stream.unwrap_or(false)
    }
}

/// Body of `POST /v1/messages/count_tokens`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CountTokensRequest {
    pub model: String,
    pub messages: Vec<AnthMessage>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub system: Option<AnthSystem>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CountTokensResponse {
    pub input_tokens: u32,
}

/// One turn. `role` stays a string so an unknown role is refused by name.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AnthMessage {
    pub role: String,
    pub content: AnthContent,
}

impl AnthMessage {
    pub fn text(role: impl Into<String>, content: impl Into<String>) -> Self {
        Self { role: role.into(), content: AnthContent::Text(content.into()) }
    }
}

/// Content: a plain string or a list of blocks.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum AnthContent {
    Text(String),
    Blocks(Vec<AnthBlock>),
}

/// `system` has the same two shapes as message content.
pub type AnthSystem = AnthContent;

/// A request content block, kept loose so unknown types parse and are refused by name.
/// `cache_control` and other keys are ignored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AnthBlock {
    #[serde(rename = "type")]
    pub kind: String,
    /// For `text` blocks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
    /// For `tool_result` blocks: a string or nested blocks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content: Option<AnthContent>,
}

/// Non-streaming response of `/v1/messages`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Message {
    pub id: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub role: String,
    pub content: Vec<TextBlock>,
    pub model: String,
    pub stop_reason: Option<String>,
    pub stop_sequence: Option<String>,
    pub usage: AnthUsage,
}

/// A response content block; only text is ever produced.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TextBlock {
    #[serde(rename = "type")]
    pub kind: String,
    pub text: String,
}

impl TextBlock {
    pub fn new(text: impl Into<String>) -> Self {
        Self { kind: "text".into(), text: text.into() }
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AnthUsage {
    pub input_tokens: u32,
    pub output_tokens: u32,
}

/// The events of a `/v1/messages` stream. The SSE `event:` name equals the `type` tag
/// ([`StreamEvent::name`]), as in Anthropic's API.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum StreamEvent {
    MessageStart { message: Message },
    ContentBlockStart { index: u32, content_block: TextBlock },
    Ping,
    ContentBlockDelta { index: u32, delta: BlockDelta },
    ContentBlockStop { index: u32 },
    MessageDelta { delta: MessageDeltaBody, usage: DeltaUsage },
    MessageStop,
    Error { error: ErrorObject },
}

impl StreamEvent {
    pub fn name(&self) -> &'static str {
        match self {
            StreamEvent::MessageStart { .. } => "message_start",
            StreamEvent::ContentBlockStart { .. } => "content_block_start",
            StreamEvent::Ping => "ping",
            StreamEvent::ContentBlockDelta { .. } => "content_block_delta",
            StreamEvent::ContentBlockStop { .. } => "content_block_stop",
            StreamEvent::MessageDelta { .. } => "message_delta",
            StreamEvent::MessageStop => "message_stop",
            StreamEvent::Error { .. } => "error",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum BlockDelta {
    TextDelta { text: String },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MessageDeltaBody {
    pub stop_reason: Option<String>,
    pub stop_sequence: Option<String>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeltaUsage {
    pub output_tokens: u32,
}

/// `stop_reason` for a neutral finish.
pub fn stop_reason(f: &FinishReason) -> &'static str {
    match f {
        FinishReason::Stop => "end_turn",
        FinishReason::Length => "max_tokens",
        FinishReason::StopSequence(_) => "stop_sequence",
        FinishReason::ToolCalls => "tool_use",
    }
}

/// `stop_sequence`: the matched string, only when a stop sequence ended the turn.
pub fn stop_sequence(f: &FinishReason) -> Option<String> {
    match f {
        FinishReason::StopSequence(s) => Some(s.clone()),
        FinishReason::Stop | FinishReason::Length | FinishReason::ToolCalls => None,
    }
}

/// The error body `{"type": "error", "error": {...}}` as parsed by clients.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ErrorResponse {
    #[serde(rename = "type")]
    pub kind: String,
    pub error: ErrorObject,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ErrorObject {
    #[serde(rename = "type")]
    pub kind: String,
    pub message: String,
}

impl ErrorObject {
    pub fn from_error(err: &GenerateError) -> Self {
        Self { kind: error_type(err.kind).into(), message: err.message.clone() }
    }
}

/// Anthropic's `error.type` for each class (its names for 413 and 503 differ from OpenAI's).
pub fn error_type(kind: ErrorKind) -> &'static str {
    match kind {
        ErrorKind::InvalidRequest => "invalid_request_error",
        ErrorKind::Authentication => "authentication_error",
        ErrorKind::PermissionDenied => "permission_error",
        ErrorKind::NotFound => "not_found_error",
        ErrorKind::Conflict => "invalid_request_error",
        ErrorKind::PayloadTooLarge => "request_too_large",
        ErrorKind::Overloaded => "rate_limit_error",
        ErrorKind::Unavailable => "overloaded_error",
        ErrorKind::Internal => "api_error",
    }
}

/// `{"type": "error", "error": {"type", "message"}}` for an error of any class.
pub fn error_body(err: &GenerateError) -> Value {
    json!({
        "type": "error",
        "error": { "type": error_type(err.kind), "message": err.message },
    })
}

#[cfg(test)]
mod tests;
