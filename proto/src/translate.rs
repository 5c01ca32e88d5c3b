//! Dialect ⇄ neutral translation. Inbound: an OpenAI or Anthropic request body becomes a
//! validated [`GenerateRequest`] (every check a client should hear about as a 400 happens here,
//! so the engine and the mesh never see an impossible request). Outbound: neutral [`Event`]s
//! become one JSON body ([`Collected`] + the response builders) or SSE frames (the stream
//! renderers in `stream`, re-exported here).

use crate::anthropic::{self, AnthContent, AnthMessage, MessagesRequest};
use crate::generate::{
    ChatMessage, ErrorKind, Event, FinishReason, GenerateError, GenerateRequest, Prompt, Role, SamplingParams, Timings,
    Usage,
};
use crate::openai::{
    self, ChatCompletionRequest, CompletionRequest, OaiContent, OaiMessage, OaiSampling, PromptSpec, StopSpec,
};

mod stream;

pub use stream::{AnthropicStream, OpenAiChatStream, OpenAiCompletionStream, SseFrame};

/// Most stop strings one request may carry (OpenAI allows 4; vLLM and llama.cpp more).
pub const MAX_STOP_SEQUENCES: usize = 16;

fn invalid(message: impl Into<String>) -> GenerateError {
    GenerateError::new(ErrorKind::InvalidRequest, message)
}

/// `POST /v1/chat/completions` → neutral request. `model` is the resolved concrete id.
pub fn chat_request(req: &ChatCompletionRequest, id: String, model: String) -> Result<GenerateRequest, GenerateError> {
    if req.messages.is_empty() {
        return Err(invalid("messages must not be empty"));
    }
    check_n(req.sampling.n)?;
    let messages = req.messages.iter().enumerate().map(|(i, m)| oai_message(i, m));
    let messages = messages.collect::<Result<Vec<_>, _>>()?;
    let params = sampling(oai_knobs(&req.sampling, req.max_completion_tokens.or(req.sampling.max_tokens)), 2.0)?;
    Ok(GenerateRequest::new(id, model, Prompt::Chat(messages), params))
}

fn oai_message(i: usize, m: &OaiMessage) -> Result<ChatMessage, GenerateError> {
    let role = match m.role.as_str() {
        // "developer" is OpenAI's newer name for the system role.
        "system" | "developer" => Role::System,
        "user" => Role::User,
        "assistant" => Role::Assistant,
        "tool" => Role::Tool,
        other => return Err(invalid(format!("messages[{i}]: unsupported role '{other}'"))),
    };
    let content = match &m.content {
        None => String::new(),
        Some(OaiContent::Text(t)) => t.clone(),
        Some(OaiContent::Parts(parts)) => {
            let texts = parts.iter().map(|p| match (p.kind.as_str(), &p.text) {
                ("text", text) => Ok(text.clone().unwrap_or_default()),
                (kind, _) => Err(text_only(i, kind)),
            });
            texts.collect::<Result<Vec<_>, _>>()?.join("\n")
        }
    };
    Ok(ChatMessage::text(role, content))
}

/// `POST /v1/completions` → neutral request with a raw-text prompt.
pub fn completion_request(
    req: &CompletionRequest,
    id: String,
    model: String,
) -> Result<GenerateRequest, GenerateError> {
    check_n(req.sampling.n)?;
    let prompt = match &req.prompt {
        PromptSpec::One(p) => p.clone(),
        PromptSpec::Many(v) => match v.as_slice() {
            [p] => p.clone(),
            _ => return Err(invalid("prompt must be a string or an array of exactly one string")),
        },
    };
    let params = sampling(oai_knobs(&req.sampling, req.sampling.max_tokens), 2.0)?;
    Ok(GenerateRequest::new(id, model, Prompt::Text(prompt), params))
}

/// `POST /v1/messages` → neutral request; `system` becomes a leading system message.
pub fn messages_request(req: &MessagesRequest, id: String, model: String) -> Result<GenerateRequest, GenerateError> {
    let messages = anthropic_messages(req.system.as_ref(), &req.messages)?;
    let params = sampling(
        Knobs {
            max_tokens: Some(req.max_tokens),
            temperature: req.temperature,
            top_p: req.top_p,
            top_k: req.top_k,
            seed: None,
            stop: req.stop_sequences.clone().unwrap_or_default(),
            frequency_penalty: None,
            presence_penalty: None,
            repetition_penalty: None,
        },
        // Anthropic's temperature range is 0..=1.
        1.0,
    )?;
    Ok(GenerateRequest::new(id, model, Prompt::Chat(messages), params))
}

/// `POST /v1/messages/count_tokens` → the prompt whose tokens are counted.
pub fn count_tokens_prompt(req: &anthropic::CountTokensRequest) -> Result<Prompt, GenerateError> {
    anthropic_messages(req.system.as_ref(), &req.messages).map(Prompt::Chat)
}

fn anthropic_messages(
    system: Option<&AnthContent>,
    messages: &[AnthMessage],
) -> Result<Vec<ChatMessage>, GenerateError> {
    if messages.is_empty() {
        return Err(invalid("messages must not be empty"));
    }
    let mut out = Vec::with_capacity(messages.len() + 1);
    if let Some(system) = system {
        let content = anthropic_text(system)
            .map_err(|kind| invalid(format!("system: only text content is supported (got '{kind}')")))?;
        out.push(ChatMessage::text(Role::System, content));
    }
    for (i, m) in messages.iter().enumerate() {
        let role = match m.role.as_str() {
            "user" => Role::User,
            "assistant" => Role::Assistant,
            other => return Err(invalid(format!("messages[{i}]: unsupported role '{other}'"))),
        };
        let content = anthropic_text(&m.content).map_err(|kind| text_only(i, &kind))?;
        out.push(ChatMessage::text(role, content));
    }
    Ok(out)
}

/// Flattens content to text; `Err` names the first block type that is not text. A
/// `tool_result` whose own content is text is flattened too, so a client replaying a tool
/// exchange as plain text still works.
fn anthropic_text(content: &AnthContent) -> Result<String, String> {
    match content {
        AnthContent::Text(t) => Ok(t.clone()),
        AnthContent::Blocks(blocks) => {
            let texts = blocks.iter().map(|b| match b.kind.as_str() {
                "text" => Ok(b.text.clone().unwrap_or_default()),
                "tool_result" => match &b.content {
                    None => Ok(String::new()),
                    Some(inner) => anthropic_text(inner),
                },
                other => Err(other.to_string()),
            });
            Ok(texts.collect::<Result<Vec<_>, _>>()?.join("\n"))
        }
    }
}

fn text_only(index: usize, kind: &str) -> GenerateError {
    invalid(format!("messages[{index}]: only text content is supported (got '{kind}')"))
}

fn check_n(n: Option<u32>) -> Result<(), GenerateError> {
    match n {
        None | Some(1) => Ok(()),
        Some(n) => Err(invalid(format!("n must be 1 (got {n}): one choice per request"))),
    }
}

/// The sampling controls both dialects share, before validation.
/// The knobs of either OpenAI generation request.
fn oai_knobs(s: &OaiSampling, max_tokens: Option<i64>) -> Knobs {
    Knobs {
        max_tokens,
        temperature: s.temperature,
        top_p: s.top_p,
        top_k: s.top_k,
        seed: s.seed,
        stop: s.stop.as_ref().map_or_else(Vec::new, StopSpec::to_vec),
        frequency_penalty: s.frequency_penalty,
        presence_penalty: s.presence_penalty,
        repetition_penalty: s.repetition_penalty,
    }
}

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
    })
}

/// A whole event stream folded into one result, for non-streaming responses.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Collected {
    pub text: String,
    /// `None` until `Done` arrives (so also after an error).
    pub finish: Option<FinishReason>,
    pub usage: Usage,
    pub timings: Timings,
    pub error: Option<GenerateError>,
}

impl Collected {
    pub fn push(&mut self, ev: Event) {
        match ev {
            Event::Started { prompt_tokens } => self.usage.prompt_tokens = prompt_tokens,
            Event::Text { text, .. } => self.text.push_str(&text),
            Event::ToolCall { .. } | Event::ToolArgs { .. } => {}
            Event::Done { finish, usage, timings, .. } => {
                self.finish = Some(finish);
                self.usage = usage;
                self.timings = timings;
            }
            Event::Error { error } => self.error = Some(error),
        }
    }
}

/// Non-streaming chat response; `model` is the name the client asked for.
pub fn chat_completion(id: &str, model: &str, created: u64, c: &Collected) -> openai::ChatCompletion {
    openai::ChatCompletion {
        id: id.into(),
        object: openai::CHAT_COMPLETION_OBJECT.into(),
        created,
        model: model.into(),
        choices: vec![openai::ChatChoice {
            index: 0,
            message: openai::ResponseMessage { role: "assistant".into(), content: c.text.clone() },
            finish_reason: c.finish.as_ref().map(|f| openai::finish_reason(f).into()),
            logprobs: None,
        }],
        usage: c.usage.into(),
        timings: c.finish.as_ref().map(|_| c.timings.into()),
    }
}

/// Non-streaming `/v1/completions` response.
pub fn completion(id: &str, model: &str, created: u64, c: &Collected) -> openai::Completion {
    openai::Completion {
        id: id.into(),
        object: openai::TEXT_COMPLETION_OBJECT.into(),
        created,
        model: model.into(),
        choices: vec![openai::CompletionChoice {
            index: 0,
            text: c.text.clone(),
            finish_reason: c.finish.as_ref().map(|f| openai::finish_reason(f).into()),
            logprobs: None,
        }],
        usage: c.usage.into(),
        timings: c.finish.as_ref().map(|_| c.timings.into()),
    }
}

/// Non-streaming `/v1/messages` response.
pub fn message(id: &str, model: &str, c: &Collected) -> anthropic::Message {
    anthropic::Message {
        id: id.into(),
        kind: "message".into(),
        role: "assistant".into(),
        content: vec![anthropic::TextBlock::new(c.text.clone())],
        model: model.into(),
        stop_reason: c.finish.as_ref().map(|f| anthropic::stop_reason(f).into()),
        stop_sequence: c.finish.as_ref().and_then(anthropic::stop_sequence),
        usage: anthropic::AnthUsage { input_tokens: c.usage.prompt_tokens, output_tokens: c.usage.completion_tokens },
    }
}

#[cfg(test)]
mod tests;
