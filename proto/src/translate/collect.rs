//! Non-streaming responses: the whole event stream folded per choice ([`Collected`]), then
//! built into one body per dialect.

use super::render::{chat_logprobs, oai_tool_call, tool_input, TextOffset};
use super::ReplyShape;
use crate::anthropic::{self, ContentBlock};
use crate::generate::{Event, FinishReason, GenerateError, Timings, TokenLogprob, Usage, MAX_CHOICES};
use crate::openai;
use crate::tools::ToolCall;

/// A whole event stream folded into one result, for non-streaming responses. Complete
/// ([`Collected::is_finished`]) after one `Done` per choice, or at the first error.
#[derive(Debug, Clone, PartialEq)]
pub struct Collected {
    pub shape: ReplyShape,
    /// One per choice the request asked for, in order.
    pub choices: Vec<CollectedChoice>,
    /// The prompt once, plus the completion tokens of every choice.
    pub usage: Usage,
    /// Those of choice 0.
    pub timings: Timings,
    pub error: Option<GenerateError>,
}

/// One choice's answer.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CollectedChoice {
    pub text: String,
    /// In the order the model made them, arguments complete.
    pub tool_calls: Vec<ToolCall>,
    /// Of the text's tokens, when asked for.
    pub logprobs: Vec<TokenLogprob>,
    /// `None` until its `Done` arrives (so also after an error).
    pub finish: Option<FinishReason>,
    /// The event index of each call in `tool_calls`.
    call_index: Vec<u32>,
}

impl Default for Collected {
    fn default() -> Self {
        Self::new(ReplyShape::default())
    }
}

impl Collected {
    pub fn new(shape: ReplyShape) -> Self {
        let n = shape.n.clamp(1, MAX_CHOICES) as usize;
        Self {
            shape,
            choices: vec![CollectedChoice::default(); n],
            usage: Usage::default(),
            timings: Timings::default(),
            error: None,
        }
    }

    /// Every choice is done, or an error ended the stream.
    pub fn is_finished(&self) -> bool {
        self.error.is_some() || self.choices.iter().all(|c| c.finish.is_some())
    }

    /// Folds one event in. Events of a choice that does not exist or is already done, a second
    /// start of the same call, arguments of a call never started, and anything after an error
    /// are ignored.
    pub fn push(&mut self, ev: Event) {
        if self.error.is_some() {
            return;
        }
        if let Event::Error { error } = ev {
            self.error = Some(error);
            return;
        }
        if let Event::Started { prompt_tokens, .. } = ev {
            self.usage.prompt_tokens = prompt_tokens;
            return;
        }
        let choice = match &ev {
            Event::Text { choice, .. }
            | Event::ToolCall { choice, .. }
            | Event::ToolArgs { choice, .. }
            | Event::Done { choice, .. } => *choice,
            Event::Started { .. } | Event::Error { .. } => return,
        };
        let Some(c) = self.choices.get_mut(choice as usize).filter(|c| c.finish.is_none()) else { return };
        match ev {
            Event::Text { text, logprobs, .. } => {
                c.text.push_str(&text);
                c.logprobs.extend(logprobs);
            }
            Event::ToolCall { index, id, name, .. } => {
                if !c.call_index.contains(&index) {
                    c.call_index.push(index);
                    c.tool_calls.push(ToolCall { id, name, arguments: String::new() });
                }
            }
            Event::ToolArgs { index, fragment, .. } => {
                if let Some(k) = c.call_index.iter().position(|&i| i == index) {
                    c.tool_calls[k].arguments.push_str(&fragment);
                }
            }
            Event::Done { finish, usage, timings, .. } => {
                c.finish = Some(finish);
                self.usage.add_choice(&usage);
                if choice == 0 {
                    self.timings = timings;
                }
            }
            Event::Started { .. } | Event::Error { .. } => {}
        }
    }

    fn any_finished(&self) -> bool {
        self.choices.iter().any(|c| c.finish.is_some())
    }
}

/// Non-streaming chat response; `model` is the name the client asked for.
pub fn chat_completion(id: &str, model: &str, created: u64, c: &Collected) -> openai::ChatCompletion {
    let choices = c.choices.iter().zip(0..).map(|(ch, index)| {
        let tool_calls: Vec<_> = ch.tool_calls.iter().map(|t| oai_tool_call(&c.shape, t)).collect();
        // OpenAI sends `"content": null` for an answer that is only calls.
        let content = (tool_calls.is_empty() || !ch.text.is_empty()).then(|| ch.text.clone());
        openai::ChatChoice {
            index,
            message: openai::ResponseMessage {
                role: "assistant".into(),
                content,
                tool_calls: (!tool_calls.is_empty()).then_some(tool_calls),
            },
            finish_reason: ch.finish.as_ref().map(|f| openai::finish_reason(f).into()),
            logprobs: c.shape.logprobs.then(|| chat_logprobs(&ch.logprobs)),
        }
    });
    openai::ChatCompletion {
        id: id.into(),
        object: openai::CHAT_COMPLETION_OBJECT.into(),
        created,
        model: model.into(),
        system_fingerprint: Some(openai::SYSTEM_FINGERPRINT.into()),
        choices: choices.collect(),
        usage: c.usage.into(),
        timings: c.any_finished().then(|| c.timings.into()),
    }
}

/// Non-streaming `/v1/completions` response.
pub fn completion(id: &str, model: &str, created: u64, c: &Collected) -> openai::Completion {
    let choices = c.choices.iter().zip(0..).map(|(ch, index)| openai::CompletionChoice {
        index,
        text: ch.text.clone(),
        finish_reason: ch.finish.as_ref().map(|f| openai::finish_reason(f).into()),
        logprobs: c.shape.logprobs.then(|| TextOffset::default().completion_logprobs(&ch.text, &ch.logprobs)),
    });
    openai::Completion {
        id: id.into(),
        object: openai::TEXT_COMPLETION_OBJECT.into(),
        created,
        model: model.into(),
        system_fingerprint: Some(openai::SYSTEM_FINGERPRINT.into()),
        choices: choices.collect(),
        usage: c.usage.into(),
        timings: c.any_finished().then(|| c.timings.into()),
    }
}

/// Non-streaming `/v1/messages` response (choice 0: Anthropic has no `n`): the text block,
/// then one `tool_use` block per call; a lone empty text block when there is neither.
pub fn message(id: &str, model: &str, c: &Collected) -> anthropic::Message {
    let ch = c.choices.first().cloned().unwrap_or_default();
    let mut content = Vec::with_capacity(1 + ch.tool_calls.len());
    if !ch.text.is_empty() || ch.tool_calls.is_empty() {
        content.push(ContentBlock::text(ch.text.clone()));
    }
    content.extend(ch.tool_calls.iter().map(|t| ContentBlock::ToolUse {
        id: anthropic::tool_use_id(&t.id),
        name: t.name.clone(),
        input: tool_input(&t.arguments),
    }));
    anthropic::Message {
        id: id.into(),
        kind: "message".into(),
        role: "assistant".into(),
        content,
        model: model.into(),
        stop_reason: ch.finish.as_ref().map(|f| anthropic::stop_reason(f).into()),
        stop_sequence: ch.finish.as_ref().and_then(anthropic::stop_sequence),
        usage: anthropic::AnthUsage::of(&c.usage),
    }
}

#[cfg(test)]
mod tests;
