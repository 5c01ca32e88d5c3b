//! The Anthropic HTTP dialect: bodies of `/v1/messages` and `/v1/messages/count_tokens`, the
//! typed stream events, and the error shape. Plain serde data; what a request means is decided
//! in `translate`.
//!
//! As on the OpenAI side, unknown request fields (`thinking`, `cache_control`, `metadata`, …)
//! are ignored rather than refused, and content blocks, tools and the tool choice keep `type` as
//! a string so an unsupported one gets a readable 400 from `translate`.

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::generate::{ContextOverflow, ErrorKind, FinishReason, GenerateError, Usage};

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
    /// Extension (as OpenAI's `seed`): a sampled answer that repeats for the same seed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seed: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stream: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<Value>,
    /// Extension (Ollama): how long the model stays loaded; passed through untouched.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keep_alive: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tools: Option<Vec<AnthTool>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_choice: Option<AnthToolChoice>,
    /// Structured output (`{"type": "json_schema", "schema"}`), as Anthropic's first beta
    /// named it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output_format: Option<AnthOutputFormat>,
    /// The same under its current name, `output_config.format` (other keys, such as `effort`,
    /// are ignored).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output_config: Option<AnthOutputConfig>,
}

/// `output_config`: only its `format` means something to cortex.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct AnthOutputConfig {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub format: Option<AnthOutputFormat>,
}

/// An output format: `type` kept as a string so an unknown one is refused by name.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct AnthOutputFormat {
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schema: Option<Value>,
}

/// One entry of `tools`. A client tool has no `type` (or `"custom"`) and an `input_schema`;
/// any other `type` is one of Anthropic's server tools (`web_search_20250305`,
/// `bash_20250124`, …), which cortex cannot run and `translate` refuses by name.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct AnthTool {
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub input_schema: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub strict: Option<bool>,
    /// As on content blocks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache_control: Option<Value>,
}

/// `tool_choice`: `{"type": "auto" | "any" | "none"}` or `{"type": "tool", "name"}`, each with
/// an optional `disable_parallel_tool_use`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct AnthToolChoice {
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disable_parallel_tool_use: Option<bool>,
}

impl MessagesRequest {
    pub fn is_stream(&self) -> bool {
        self.stream.unwrap_or(false)
    }

    /// Whether any system block, message block or tool carries `cache_control`.
    pub fn marks_cache(&self) -> bool {
        let blocks = |c: &AnthContent| match c {
            AnthContent::Blocks(b) => b.iter().any(|b| b.cache_control.is_some()),
            AnthContent::Text(_) => false,
        };
        self.system.as_ref().is_some_and(blocks)
            || self.messages.iter().any(|m| blocks(&m.content))
            || self.tools.iter().flatten().any(|t| t.cache_control.is_some())
    }

    /// The session `metadata.user_id` names (Claude Code puts its session id there).
    pub fn session(&self) -> Option<&str> {
        self.metadata.as_ref()?.get("user_id")?.as_str().filter(|s| !s.is_empty())
    }
}

/// Body of `POST /v1/messages/count_tokens`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CountTokensRequest {
    pub model: String,
    pub messages: Vec<AnthMessage>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub system: Option<AnthSystem>,
    /// The tools count too: the template renders them into the prompt.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tools: Option<Vec<AnthTool>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_choice: Option<AnthToolChoice>,
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
/// Other keys are ignored.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct AnthBlock {
    #[serde(rename = "type")]
    pub kind: String,
    /// Marks the prompt up to here for caching: cortex caches every prefix anyway, and reports
    /// the blocks such a request adds as cache writes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache_control: Option<Value>,
    /// For `text` blocks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
    /// For `tool_use` blocks: the call's id, tool and arguments (an object).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub input: Option<Value>,
    /// For `tool_result` blocks: the call answered, the result (a string or nested blocks) and
    /// whether it is an error.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_use_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content: Option<AnthContent>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub is_error: Option<bool>,
}

impl AnthBlock {
    pub fn text(text: impl Into<String>) -> Self {
        Self { kind: "text".into(), text: Some(text.into()), ..Default::default() }
    }
}

/// Non-streaming response of `/v1/messages`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Message {
    pub id: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub role: String,
    pub content: Vec<ContentBlock>,
    pub model: String,
    pub stop_reason: Option<String>,
    pub stop_sequence: Option<String>,
    pub usage: AnthUsage,
}

/// A response content block: text, or a call of one of the request's tools.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ContentBlock {
    Text {
        text: String,
    },
    ToolUse {
        /// `toolu_…` (see [`tool_use_id`]).
        id: String,
        name: String,
        /// The arguments, a JSON object (`{}` at a stream's `content_block_start`).
        input: Value,
    },
}

impl ContentBlock {
    pub fn text(text: impl Into<String>) -> Self {
        ContentBlock::Text { text: text.into() }
    }
}

/// The id of a call as Anthropic clients expect it: the engine's `call_…` becomes `toolu_…`
/// (same suffix, so one call keeps one id across a stream and its replayed history); an id
/// already in `toolu_` form is kept, any other gets the prefix.
pub fn tool_use_id(id: &str) -> String {
    if id.starts_with("toolu_") {
        id.to_string()
    } else {
        format!("toolu_{}", id.strip_prefix("call_").unwrap_or(id))
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AnthUsage {
    /// Prompt tokens neither read from nor written to the cache, as Anthropic counts them (the
    /// prompt is the sum of the three).
    pub input_tokens: u32,
    pub output_tokens: u32,
    #[serde(default)]
    pub cache_creation_input_tokens: u32,
    #[serde(default)]
    pub cache_read_input_tokens: u32,
}

impl AnthUsage {
    /// Anthropic's split of a neutral count: cache reads and writes apart from the rest.
    pub fn of(u: &Usage) -> Self {
        let cached = u.cached_tokens.min(u.prompt_tokens);
        let written = u.cache_write_tokens.min(u.prompt_tokens - cached);
        Self {
            input_tokens: u.prompt_tokens - cached - written,
            output_tokens: u.completion_tokens,
            cache_creation_input_tokens: written,
            cache_read_input_tokens: cached,
        }
    }
}

/// The events of a `/v1/messages` stream. The SSE `event:` name equals the `type` tag
/// ([`StreamEvent::name`]), as in Anthropic's API.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum StreamEvent {
    MessageStart { message: Message },
    ContentBlockStart { index: u32, content_block: ContentBlock },
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
    TextDelta {
        text: String,
    },
    /// More of a `tool_use` block's input, as JSON text; the pieces concatenate to the object.
    InputJsonDelta {
        partial_json: String,
    },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MessageDeltaBody {
    pub stop_reason: Option<String>,
    pub stop_sequence: Option<String>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeltaUsage {
    pub output_tokens: u32,
    /// The final input counts, as Anthropic's `message_delta` repeats them (cumulative).
    #[serde(default)]
    pub input_tokens: u32,
    #[serde(default)]
    pub cache_creation_input_tokens: u32,
    #[serde(default)]
    pub cache_read_input_tokens: u32,
}

impl DeltaUsage {
    pub fn of(u: &Usage) -> Self {
        let a = AnthUsage::of(u);
        Self {
            output_tokens: a.output_tokens,
            input_tokens: a.input_tokens,
            cache_creation_input_tokens: a.cache_creation_input_tokens,
            cache_read_input_tokens: a.cache_read_input_tokens,
        }
    }
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
        Self { kind: error_type(err.kind).into(), message: error_message(err) }
    }
}

/// The error's text as Anthropic's API words it where clients parse it: a context overflow
/// reads as Anthropic's own, so that Claude Code lowers `max_tokens` and retries, or shows
/// "prompt is too long".
pub fn error_message(err: &GenerateError) -> String {
    match err.overflow {
        Some(ContextOverflow { prompt, context, .. }) if prompt > context => {
            format!("prompt is too long: {prompt} tokens > {context} maximum")
        }
        Some(ContextOverflow { prompt, max_tokens, context }) => format!(
            "input length and `max_tokens` exceed context limit: {prompt} + {max_tokens} > {context}, decrease input length or `max_tokens` and try again"
        ),
        None => err.message.clone(),
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
        "error": { "type": error_type(err.kind), "message": error_message(err) },
    })
}

#[cfg(test)]
mod tests;
