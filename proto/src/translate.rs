//! Dialect ⇄ neutral translation. Inbound: an OpenAI or Anthropic request body becomes a
//! validated [`GenerateRequest`]: every check a client should hear about as a 400 happens here
//! (tool definitions, tool choice, response format, history that answers calls never made,
//! `n`, logprobs ranges), so the engine and the mesh never see a request they cannot serve.
//! Outbound: neutral [`Event`]s become one JSON body ([`Collected`] + the response builders) or
//! SSE frames (the stream renderers in `stream`); both need the [`ReplyShape`] of the request
//! (how many choices, whether logprobs were asked, which tools are free-form).
//!
//! [`Event`]: crate::generate::Event

use crate::generate::{ErrorKind, GenerateError, GenerateRequest, SamplingParams, MAX_CHOICES};
use crate::tools::ToolInput;

mod anthropic_request;
mod collect;
mod openai_request;
mod render;
mod stream;

pub use anthropic_request::{count_tokens_request, messages_request, TOOL_ERROR_PREFIX};
pub use collect::{chat_completion, completion, message, Collected, CollectedChoice};
pub use openai_request::{chat_request, completion_request, MAX_COMPLETION_LOGPROBS};
pub use stream::{AnthropicStream, OpenAiChatStream, OpenAiCompletionStream, SseFrame};

/// Most stop strings one request may carry (OpenAI allows 4; vLLM and llama.cpp more).
pub const MAX_STOP_SEQUENCES: usize = 16;

fn invalid(message: impl Into<String>) -> GenerateError {
    GenerateError::new(ErrorKind::InvalidRequest, message)
}

/// What a response must look like beyond what its events say, taken from the neutral request
/// (the gateway keeps it from translation to rendering).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplyShape {
    /// Choices to expect: the response is complete after this many `Done` events.
    pub n: u32,
    /// Log-probabilities were asked for: render `logprobs` objects (empty if the engine sent
    /// none) rather than `null`.
    pub logprobs: bool,
    /// The request's free-form tools (OpenAI `custom`): their calls render as `custom` calls
    /// with `input`, not as functions with `arguments`.
    pub text_tools: Vec<String>,
}

impl Default for ReplyShape {
    fn default() -> Self {
        Self { n: 1, logprobs: false, text_tools: Vec::new() }
    }
}

impl ReplyShape {
    pub fn of(req: &GenerateRequest) -> Self {
        let text_tools = req.tools.iter().filter(|t| matches!(t.input, ToolInput::Text { .. }));
        Self {
            n: req.n.clamp(1, MAX_CHOICES),
            logprobs: req.params.logprobs.is_some(),
            text_tools: text_tools.map(|t| t.name.clone()).collect(),
        }
    }

    fn is_text_tool(&self, name: &str) -> bool {
        self.text_tools.iter().any(|t| t == name)
    }
}

/// `n` of an OpenAI request: 1 to [`MAX_CHOICES`].
fn choices(n: Option<i64>) -> Result<u32, GenerateError> {
    match n {
        None => Ok(1),
        Some(n) if (1..=i64::from(MAX_CHOICES)).contains(&n) => Ok(n as u32),
        Some(n) => Err(invalid(format!("n must be between 1 and {MAX_CHOICES} (got {n})"))),
    }
}

/// The sampling controls both dialects share, before validation.
struct Knobs {
    max_tokens: Option<i64>,
    temperature: Option<f32>,
    top_p: Option<f32>,
    top_k: Option<i64>,
    seed: Option<u64>,
    stop: Vec<String>,
    frequency_penalty: Option<f32>,
    presence_penalty: Option<f32>,
    repetition_penalty: Option<f32>,
    ignore_eos: bool,
}

fn sampling(k: Knobs, max_temperature: f32) -> Result<SamplingParams, GenerateError> {
    let max_tokens = match k.max_tokens {
        None => None,
        Some(n) if n < 1 => return Err(invalid("max_tokens must be at least 1")),
        Some(n) => Some(u32::try_from(n).unwrap_or(u32::MAX)),
    };
    let in_range = |name: &str, v: Option<f32>, lo: f32, hi: f32| match v {
        Some(x) if !(lo..=hi).contains(&x) => Err(invalid(format!("{name} must be between {lo} and {hi} (got {x})"))),
        _ => Ok(v),
    };
    let temperature = in_range("temperature", k.temperature, 0.0, max_temperature)?;
    if let Some(p) = k.top_p {
        if !(p > 0.0 && p <= 1.0) {
            return Err(invalid(format!("top_p must be greater than 0 and at most 1 (got {p})")));
        }
    }
    let frequency_penalty = in_range("frequency_penalty", k.frequency_penalty, -2.0, 2.0)?;
    let presence_penalty = in_range("presence_penalty", k.presence_penalty, -2.0, 2.0)?;
    if let Some(r) = k.repetition_penalty {
        if r <= 0.0 || !r.is_finite() {
            return Err(invalid(format!("repetition_penalty must be greater than 0 (got {r})")));
        }
    }
    // Empty stop strings would match everywhere; clients send them by accident, so drop them.
    let stop: Vec<String> = k.stop.into_iter().filter(|s| !s.is_empty()).collect();
    if stop.len() > MAX_STOP_SEQUENCES {
        return Err(invalid(format!("at most {MAX_STOP_SEQUENCES} stop sequences are supported (got {})", stop.len())));
    }
    Ok(SamplingParams {
        max_tokens,
        temperature,
        top_p: k.top_p,
        // vLLM and llama.cpp treat top_k <= 0 as "off"; so do we.
        top_k: k.top_k.filter(|&t| t > 0).map(|t| u32::try_from(t).unwrap_or(u32::MAX)),
        seed: k.seed,
        repetition_penalty: k.repetition_penalty,
        frequency_penalty,
        presence_penalty,
        stop,
        logprobs: None,
        ignore_eos: k.ignore_eos,
    })
}
