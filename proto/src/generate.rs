//! The neutral generation request and event stream. Both HTTP dialects translate into these
//! types, the engine consumes them, and (later) the mesh carries them between neurons, so they
//! are plain serde data with no behaviour tied to a transport.

use serde::{Deserialize, Serialize};

use crate::tools::{ResponseFormat, Tool, ToolCall, ToolChoice};

/// Who said a chat message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    System,
    User,
    Assistant,
    Tool,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::System => "system",
            Role::User => "user",
            Role::Assistant => "assistant",
            Role::Tool => "tool",
        }
    }
}

/// One chat message with its text content already flattened.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChatMessage {
    pub role: Role,
    pub content: String,
    /// The calls an assistant turn made.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tool_calls: Vec<ToolCall>,
    /// For a tool result: the call it answers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_call_id: Option<String>,
    /// For a tool result: the tool that produced it, where the client said.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

impl ChatMessage {
    /// A message of plain text.
    pub fn text(role: Role, content: impl Into<String>) -> Self {
        Self { role, content: content.into(), tool_calls: Vec::new(), tool_call_id: None, name: None }
    }
}

/// What the model is asked to continue.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Prompt {
    /// Rendered through the model's chat template.
    Chat(Vec<ChatMessage>),
    /// Raw text completion, no template.
    Text(String),
}

/// Sampling and stopping controls. `None` means "the engine's default".
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SamplingParams {
    pub max_tokens: Option<u32>,
    pub temperature: Option<f32>,
    pub top_p: Option<f32>,
    pub top_k: Option<u32>,
    pub seed: Option<u64>,
    /// Multiplicative penalty (llama.cpp style, 1.0 = off).
    pub repetition_penalty: Option<f32>,
    /// OpenAI style additive penalties (0.0 = off).
    pub frequency_penalty: Option<f32>,
    pub presence_penalty: Option<f32>,
    /// Stop strings; the text stops before the first one found and it is never emitted.
    #[serde(default)]
    pub stop: Vec<String>,
    /// Report each generated token's log-probability and this many most likely alternatives
    /// (0 to [`MAX_TOP_LOGPROBS`]); `None`: no log-probabilities.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub logprobs: Option<u32>,
    /// Keep generating past the model's end-of-sequence token, to `max_tokens` (the vLLM and
    /// llama.cpp extension, for measuring decode through the API).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub ignore_eos: bool,
}

impl SamplingParams {
    /// These parameters, each one the request left unset taken from `defaults` (a model's own
    /// defaults, as an operator configured them).
    pub fn or(mut self, defaults: &SamplingParams) -> Self {
        self.temperature = self.temperature.or(defaults.temperature);
        self.top_p = self.top_p.or(defaults.top_p);
        self.top_k = self.top_k.or(defaults.top_k);
        self.repetition_penalty = self.repetition_penalty.or(defaults.repetition_penalty);
        self
    }
}

/// Most alternatives a token's log-probability report may list (OpenAI's limit).
pub const MAX_TOP_LOGPROBS: u32 = 20;
/// Most choices one request may ask for.
pub const MAX_CHOICES: u32 = 16;

/// A generation request as the engine sees it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GenerateRequest {
    /// Unique request id (also the response id shown to clients).
    pub id: String,
    /// Concrete model id after alias resolution.
    pub model: String,
    pub prompt: Prompt,
    pub params: SamplingParams,
    /// Tools the model may call.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tools: Vec<Tool>,
    #[serde(default)]
    pub tool_choice: ToolChoice,
    /// Several calls in one answer allowed.
    #[serde(default = "yes")]
    pub parallel_tool_calls: bool,
    /// The shape of a plain answer.
    #[serde(default, skip_serializing_if = "ResponseFormat::is_text")]
    pub format: ResponseFormat,
    /// Independent choices to generate for the same prompt (1 to [`MAX_CHOICES`]).
    #[serde(default = "one")]
    pub n: u32,
    /// The last message is the assistant's answer begun by the client (Anthropic's prefill):
    /// generation continues its text instead of opening a new turn.
    #[serde(default, skip_serializing_if = "is_false")]
    pub continue_final: bool,
    /// The client marked part of the prompt for caching (Anthropic's `cache_control`): the
    /// blocks the prompt adds to the prefix cache are reported as cache writes.
    #[serde(default, skip_serializing_if = "is_false")]
    pub cache_control: bool,
    /// The conversation this request continues, where the client names it (`x-session-id`,
    /// Claude Code's session header, Anthropic's `metadata.user_id`): a routing hint that keeps
    /// a conversation on the neuron holding its cache, never a pin.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session: Option<String>,
}

fn is_false(b: &bool) -> bool {
    !*b
}

fn yes() -> bool {
    true
}

fn one() -> u32 {
    1
}

impl GenerateRequest {
    /// A request for `prompt` with everything else at its default: no tools, free text, one
    /// choice.
    pub fn new(id: impl Into<String>, model: impl Into<String>, prompt: Prompt, params: SamplingParams) -> Self {
        Self {
            id: id.into(),
            model: model.into(),
            prompt,
            params,
            tools: Vec::new(),
            tool_choice: ToolChoice::Auto,
            parallel_tool_calls: true,
            format: ResponseFormat::Text,
            n: 1,
            continue_final: false,
            cache_control: false,
            session: None,
        }
    }

    /// Whether the output is constrained or may hold tool calls (anything but free text).
    pub fn is_structured(&self) -> bool {
        (!self.tools.is_empty() && self.tool_choice != ToolChoice::None) || !self.format.is_text()
    }
}

/// Why generation ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FinishReason {
    /// The model emitted an end-of-sequence token.
    Stop,
    /// `max_tokens` or the context window was reached.
    Length,
    /// One of the request's stop strings matched (the string itself).
    StopSequence(String),
    /// The answer ends in tool calls.
    ToolCalls,
}

/// Token counts, as every dialect reports them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Usage {
    pub prompt_tokens: u32,
    pub completion_tokens: u32,
    /// Prompt tokens the prefix cache supplied.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub cached_tokens: u32,
    /// Prompt tokens written to the prefix cache by a request that marked `cache_control`.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub cache_write_tokens: u32,
}

/// A token's log-probability (natural log, over the model's raw distribution) and its text.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TokenLogprob {
    pub token: String,
    pub bytes: Vec<u8>,
    pub logprob: f32,
    /// The most likely tokens at that position, most likely first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub top: Vec<TopLogprob>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TopLogprob {
    pub token: String,
    pub bytes: Vec<u8>,
    pub logprob: f32,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

impl Usage {
    /// Saturating: the counts may come from a peer.
    pub fn total(&self) -> u32 {
        self.prompt_tokens.saturating_add(self.completion_tokens)
    }

    /// Counts a request's choice in: the prompt is counted once (the most any choice found
    /// cached), the completions summed.
    pub fn add_choice(&mut self, choice: &Usage) {
        self.prompt_tokens = choice.prompt_tokens;
        self.completion_tokens = self.completion_tokens.saturating_add(choice.completion_tokens);
        self.cached_tokens = self.cached_tokens.max(choice.cached_tokens);
        self.cache_write_tokens = self.cache_write_tokens.max(choice.cache_write_tokens);
    }
}

/// How fast a generation ran.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Timings {
    /// Time to first token, from when the request reached the engine, in milliseconds.
    pub ttft_ms: f64,
    /// Prompt tokens per second during prefill.
    pub prefill_tok_s: f64,
    /// Generated tokens per second after the first.
    pub decode_tok_s: f64,
    /// Milliseconds spent waiting in the scheduler's queue.
    pub queue_ms: f64,
}

/// An error during generation, with the class that decides the HTTP status.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("{message}")]
pub struct GenerateError {
    pub kind: ErrorKind,
    pub message: String,
    /// A machine-readable detail finer than the class, in OpenAI's vocabulary (e.g.
    /// [`CONTEXT_LENGTH_EXCEEDED`]); the OpenAI error body's `code` prefers it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<String>,
    /// For a request that does not fit the model's context: the figures, so that each dialect
    /// words the error as its clients parse it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub overflow: Option<ContextOverflow>,
}

/// A prompt and its `max_tokens` against a model's context, in tokens.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContextOverflow {
    pub prompt: u32,
    /// What the request asked to generate (0 when it did not say).
    pub max_tokens: u32,
    pub context: u32,
}

/// `code` of a request whose prompt and `max_tokens` do not fit the model's context.
pub const CONTEXT_LENGTH_EXCEEDED: &str = "context_length_exceeded";

impl GenerateError {
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Self { kind, message: message.into(), code: None, overflow: None }
    }

    /// A 400 for a prompt (plus `max_tokens`) longer than the model's context, coded
    /// [`CONTEXT_LENGTH_EXCEEDED`] as OpenAI clients expect; `message` is the neutral wording
    /// (CLI, logs), the dialects word it from the figures.
    pub fn context_length(overflow: ContextOverflow) -> Self {
        let ContextOverflow { prompt, max_tokens, context } = overflow;
        let message = if prompt > context {
            format!("the prompt has {prompt} tokens, more than this model's {context}-token context; shorten it")
        } else {
            format!(
                "this model's context is {context} tokens; the prompt has {prompt} and max_tokens asks for {max_tokens} more. Shorten the prompt or lower max_tokens"
            )
        };
        Self { overflow: Some(overflow), ..Self::new(ErrorKind::InvalidRequest, message) }
            .with_code(CONTEXT_LENGTH_EXCEEDED)
    }

    pub fn with_code(mut self, code: impl Into<String>) -> Self {
        self.code = Some(code.into());
        self
    }
}

/// Classes of failure, each with one HTTP status in every dialect.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorKind {
    /// The request is malformed or impossible (400).
    InvalidRequest,
    /// Missing or wrong API key (401).
    Authentication,
    /// The key is valid but may not do this (403).
    PermissionDenied,
    /// No such model (404).
    NotFound,
    /// The request conflicts with the model's state, e.g. unloading one that is serving (409).
    Conflict,
    /// Body too large (413).
    PayloadTooLarge,
    /// The queue is full (429).
    Overloaded,
    /// The model cannot be served right now (503).
    Unavailable,
    /// A bug or an engine failure (500).
    Internal,
}

impl ErrorKind {
    pub fn http_status(self) -> u16 {
        match self {
            ErrorKind::InvalidRequest => 400,
            ErrorKind::Authentication => 401,
            ErrorKind::PermissionDenied => 403,
            ErrorKind::NotFound => 404,
            ErrorKind::Conflict => 409,
            ErrorKind::PayloadTooLarge => 413,
            ErrorKind::Overloaded => 429,
            ErrorKind::Unavailable => 503,
            ErrorKind::Internal => 500,
        }
    }
}

/// What the engine streams back for one request, in order: `Started`, then for each choice
/// (`choice` 0 to n − 1, interleaved) any number of `Text`, `ToolCall` and `ToolArgs`, and one
/// `Done`; the stream ends after the last choice's `Done`, or at the first `Error`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Event {
    /// The prompt is tokenized and the request is scheduled.
    Started {
        prompt_tokens: u32,
        /// Of those, tokens the prefix cache supplied (not computed).
        #[serde(default, skip_serializing_if = "is_zero")]
        cached_tokens: u32,
    },
    /// A piece of generated text (never a partial UTF-8 character, never part of a stop string),
    /// with the log-probabilities of the tokens it completes when they were asked for.
    Text {
        #[serde(default, skip_serializing_if = "is_zero")]
        choice: u32,
        text: String,
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        logprobs: Vec<TokenLogprob>,
    },
    /// The model began call `index` (0, 1, … within its choice) of tool `name`.
    ToolCall {
        #[serde(default, skip_serializing_if = "is_zero")]
        choice: u32,
        index: u32,
        id: String,
        name: String,
    },
    /// More of call `index`'s arguments, as text (JSON for functions).
    ToolArgs {
        #[serde(default, skip_serializing_if = "is_zero")]
        choice: u32,
        index: u32,
        fragment: String,
    },
    /// One choice ended; `usage` counts the prompt and this choice's tokens.
    Done {
        #[serde(default, skip_serializing_if = "is_zero")]
        choice: u32,
        finish: FinishReason,
        usage: Usage,
        timings: Timings,
    },
    Error {
        error: GenerateError,
    },
}

impl Event {
    /// Text of choice 0 with no log-probabilities.
    pub fn text(text: impl Into<String>) -> Self {
        Event::Text { choice: 0, text: text.into(), logprobs: Vec::new() }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_s_own_sampling_wins_over_the_model_s_defaults() {
        let defaults =
            SamplingParams { temperature: Some(0.0), top_k: Some(40), seed: Some(7), ..SamplingParams::default() };
        let asked = SamplingParams { temperature: Some(0.9), max_tokens: Some(5), ..SamplingParams::default() };
        let got = asked.or(&defaults);
        assert_eq!((got.temperature, got.top_k, got.max_tokens), (Some(0.9), Some(40), Some(5)));
        // A seed is the request's alone: a model default would make every answer the same.
        assert_eq!(got.seed, None);
    }
}
