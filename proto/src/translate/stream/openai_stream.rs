//! The OpenAI stream renderers: chat chunks (role, content, tool-call deltas, finish, usage)
//! and legacy completion chunks, for any number of interleaved choices.

use super::{openai_error_frames, SseFrame};
use crate::generate::{Event, FinishReason, GenerateError, Timings, TokenLogprob, Usage, MAX_CHOICES};
use crate::openai::{
    self, ChatCompletionChunk, ChunkChoice, CompletionChoice, CompletionChunk, Delta, OaiCustomDelta, OaiFunctionDelta,
    OaiToolCallDelta,
};
use crate::translate::render::{chat_logprobs, TextOffset};
use crate::translate::ReplyShape;

/// What both OpenAI renderers track: the choices still open, usage summed over them, the end.
#[derive(Debug, Clone)]
struct Choices<S> {
    states: Vec<S>,
    done: Vec<bool>,
    usage: Usage,
    finished: bool,
}

impl<S: Default + Clone> Choices<S> {
    fn new(n: u32) -> Self {
        let n = n.clamp(1, MAX_CHOICES) as usize;
        Self { states: vec![S::default(); n], done: vec![false; n], usage: Usage::default(), finished: false }
    }

    /// The choice an event is about, if it exists and is still open.
    fn open(&self, choice: u32) -> Option<usize> {
        let i = choice as usize;
        (i < self.states.len() && !self.done[i]).then_some(i)
    }

    /// Records choice `i`'s end; true when it was the last.
    fn finish(&mut self, i: usize, usage: &Usage) -> bool {
        self.done[i] = true;
        self.usage.add_choice(usage);
        self.finished = self.done.iter().all(|&d| d);
        self.finished
    }
}

/// The choice index of a per-choice event.
fn choice_of(ev: &Event) -> Option<u32> {
    match ev {
        Event::Text { choice, .. }
        | Event::ToolCall { choice, .. }
        | Event::ToolArgs { choice, .. }
        | Event::Done { choice, .. } => Some(*choice),
        Event::Started { .. } | Event::Error { .. } => None,
    }
}

/// A chat choice's progress: whether its role chunk went out, and its calls (event index, and
/// whether the tool is free-form).
#[derive(Debug, Clone, Default)]
struct ChatChoiceState {
    opened: bool,
    calls: Vec<(u32, bool)>,
}

/// Renders `/v1/chat/completions` streams: per choice a role chunk (`{"role": "assistant",
/// "content": ""}`), content chunks (with their `logprobs` when asked), tool-call chunks (the
/// first of a call with `id`, `type` and name, then argument fragments), and a chunk with
/// `finish_reason` (and the `timings` extension); after the last choice, the usage chunk (when
/// `include_usage`) and `[DONE]`. Each chunk holds one choice, by index.
#[derive(Debug, Clone)]
pub struct OpenAiChatStream {
    id: String,
    model: String,
    created: u64,
    include_usage: bool,
    shape: ReplyShape,
    choices: Choices<ChatChoiceState>,
}

impl OpenAiChatStream {
    /// `model` is the name the client asked for; `created` is unix seconds; `shape` comes from
    /// the translated request.
    pub fn new(id: String, model: String, created: u64, include_usage: bool, shape: ReplyShape) -> Self {
        let choices = Choices::new(shape.n);
        Self { id, model, created, include_usage, shape, choices }
    }

    /// The stream is over: every choice is done, or an error ended it.
    pub fn is_finished(&self) -> bool {
        self.choices.finished
    }

    fn chunk(&self, choices: Vec<ChunkChoice>) -> SseFrame {
        SseFrame::json(None, &self.chunk_body(choices))
    }

    fn chunk_body(&self, choices: Vec<ChunkChoice>) -> ChatCompletionChunk {
        ChatCompletionChunk {
            id: self.id.clone(),
            object: openai::CHAT_COMPLETION_CHUNK_OBJECT.into(),
            created: self.created,
            model: self.model.clone(),
            system_fingerprint: Some(openai::SYSTEM_FINGERPRINT.into()),
            choices,
            usage: self.include_usage.then_some(None),
            timings: None,
        }
    }

    fn delta(&self, index: usize, delta: Delta) -> SseFrame {
        let index = index as u32;
        self.chunk(vec![ChunkChoice { index, delta, finish_reason: None, logprobs: None }])
    }

    /// The role chunk of choice `i`, once.
    fn open(&mut self, i: usize, out: &mut Vec<SseFrame>) {
        if !self.choices.states[i].opened {
            self.choices.states[i].opened = true;
            let delta = Delta { role: Some("assistant".into()), content: Some(String::new()), tool_calls: None };
            out.push(self.delta(i, delta));
        }
    }

    pub fn on_event(&mut self, ev: &Event) -> Vec<SseFrame> {
        let mut out = Vec::new();
        if self.choices.finished {
            return out;
        }
        if let Event::Error { error } = ev {
            self.choices.finished = true;
            return openai_error_frames(error);
        }
        if let Event::Started { prompt_tokens, .. } = ev {
            self.choices.usage.prompt_tokens = *prompt_tokens;
            for i in 0..self.choices.states.len() {
                if !self.choices.done[i] {
                    self.open(i, &mut out);
                }
            }
            return out;
        }
        let Some(i) = choice_of(ev).and_then(|c| self.choices.open(c)) else { return out };
        self.open(i, &mut out);
        match ev {
            Event::Text { text, logprobs, .. } => out.push(self.text(i, text, logprobs)),
            Event::ToolCall { index, id, name, .. } => {
                if self.choices.states[i].calls.iter().any(|(k, _)| k == index) {
                    return out;
                }
                let custom = self.shape.is_text_tool(name);
                self.choices.states[i].calls.push((*index, custom));
                let mut call = OaiToolCallDelta { index: *index, id: Some(id.clone()), ..Default::default() };
                if custom {
                    call.kind = Some("custom".into());
                    call.custom = Some(OaiCustomDelta { name: Some(name.clone()), input: Some(String::new()) });
                } else {
                    call.kind = Some("function".into());
                    call.function = Some(OaiFunctionDelta { name: Some(name.clone()), arguments: Some(String::new()) });
                }
                out.push(self.delta(i, Delta { tool_calls: Some(vec![call]), ..Default::default() }));
            }
            Event::ToolArgs { index, fragment, .. } => {
                let Some(&(_, custom)) = self.choices.states[i].calls.iter().find(|(k, _)| k == index) else {
                    return out;
                };
                let mut call = OaiToolCallDelta { index: *index, ..Default::default() };
                if custom {
                    call.custom = Some(OaiCustomDelta { name: None, input: Some(fragment.clone()) });
                } else {
                    call.function = Some(OaiFunctionDelta { name: None, arguments: Some(fragment.clone()) });
                }
                out.push(self.delta(i, Delta { tool_calls: Some(vec![call]), ..Default::default() }));
            }
            Event::Done { finish, usage, timings, .. } => {
                out.push(self.finish_chunk(i, finish, timings));
                if self.choices.finish(i, usage) {
                    if self.include_usage {
                        let mut usage_chunk = self.chunk_body(Vec::new());
                        usage_chunk.usage = Some(Some(self.choices.usage.into()));
                        out.push(SseFrame::json(None, &usage_chunk));
                    }
                    out.push(SseFrame::done());
                }
            }
            Event::Started { .. } | Event::Error { .. } => {}
        }
        out
    }

    fn text(&self, i: usize, text: &str, logprobs: &[TokenLogprob]) -> SseFrame {
        let delta = Delta { content: Some(text.to_string()), ..Default::default() };
        let logprobs = self.shape.logprobs.then(|| chat_logprobs(logprobs));
        self.chunk(vec![ChunkChoice { index: i as u32, delta, finish_reason: None, logprobs }])
    }

    fn finish_chunk(&self, i: usize, finish: &FinishReason, timings: &Timings) -> SseFrame {
        let reason = Some(openai::finish_reason(finish).to_string());
        let mut last = self.chunk_body(vec![ChunkChoice {
            index: i as u32,
            delta: Delta::default(),
            finish_reason: reason,
            logprobs: None,
        }]);
        last.timings = Some((*timings).into());
        SseFrame::json(None, &last)
    }
}

/// Renders `/v1/completions` streams. Unlike chat there is no role to announce, so `Started`
/// emits nothing (as in vLLM); text chunks carry `text` (and the legacy `logprobs` when
/// asked), the final one per choice `finish_reason`. Tool events do not exist on this route
/// and are ignored.
#[derive(Debug, Clone)]
pub struct OpenAiCompletionStream {
    id: String,
    model: String,
    created: u64,
    include_usage: bool,
    shape: ReplyShape,
    choices: Choices<TextOffset>,
}

impl OpenAiCompletionStream {
    pub fn new(id: String, model: String, created: u64, include_usage: bool, shape: ReplyShape) -> Self {
        let choices = Choices::new(shape.n);
        Self { id, model, created, include_usage, shape, choices }
    }

    /// The stream is over: every choice is done, or an error ended it.
    pub fn is_finished(&self) -> bool {
        self.choices.finished
    }

    fn chunk(&self, choices: Vec<CompletionChoice>) -> CompletionChunk {
        CompletionChunk {
            id: self.id.clone(),
            object: openai::TEXT_COMPLETION_OBJECT.into(),
            created: self.created,
            model: self.model.clone(),
            system_fingerprint: Some(openai::SYSTEM_FINGERPRINT.into()),
            choices,
            usage: self.include_usage.then_some(None),
            timings: None,
        }
    }

    pub fn on_event(&mut self, ev: &Event) -> Vec<SseFrame> {
        if self.choices.finished {
            return Vec::new();
        }
        match ev {
            Event::Started { prompt_tokens, .. } => {
                self.choices.usage.prompt_tokens = *prompt_tokens;
                return Vec::new();
            }
            Event::Error { error } => return self.error(error),
            _ => {}
        }
        let Some(i) = choice_of(ev).and_then(|c| self.choices.open(c)) else { return Vec::new() };
        let index = i as u32;
        match ev {
            Event::Text { text, logprobs, .. } => {
                let logprobs = self.shape.logprobs.then(|| self.choices.states[i].completion_logprobs(text, logprobs));
                let choice = CompletionChoice { index, text: text.clone(), finish_reason: None, logprobs };
                vec![SseFrame::json(None, &self.chunk(vec![choice]))]
            }
            Event::Done { finish, usage, timings, .. } => {
                let reason = Some(openai::finish_reason(finish).to_string());
                let mut last = self.chunk(vec![CompletionChoice {
                    index,
                    text: String::new(),
                    finish_reason: reason,
                    logprobs: None,
                }]);
                last.timings = Some((*timings).into());
                let mut out = vec![SseFrame::json(None, &last)];
                if self.choices.finish(i, usage) {
                    if self.include_usage {
                        let mut usage_chunk = self.chunk(Vec::new());
                        usage_chunk.usage = Some(Some(self.choices.usage.into()));
                        out.push(SseFrame::json(None, &usage_chunk));
                    }
                    out.push(SseFrame::done());
                }
                out
            }
            Event::ToolCall { .. } | Event::ToolArgs { .. } | Event::Started { .. } | Event::Error { .. } => Vec::new(),
        }
    }

    fn error(&mut self, error: &GenerateError) -> Vec<SseFrame> {
        self.choices.finished = true;
        openai_error_frames(error)
    }
}

#[cfg(test)]
mod tests;
