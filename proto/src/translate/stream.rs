//! Streaming renderers: small state machines fed neutral [`Event`]s, each returning the SSE
//! frames to write. They hold no IO and no clock (`created` is passed in), so the gateway only
//! forwards frames and the exact wire sequence is tested here.
//!
//! Every renderer tolerates a missing `Started` (it opens the stream on the first event of any
//! kind) and ignores events after the terminal `Done` or `Error`.

use serde::Serialize;

use crate::anthropic::{self, BlockDelta, DeltaUsage, MessageDeltaBody, StreamEvent, TextBlock};
use crate::generate::{Event, GenerateError};
use crate::openai::{self, ChatCompletionChunk, ChunkChoice, CompletionChoice, CompletionChunk};

/// One Server-Sent Event: an optional `event:` name and the `data:` payload (JSON text, or
/// `[DONE]` at the end of an OpenAI stream).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SseFrame {
    pub event: Option<String>,
    pub data: String,
}

impl SseFrame {
    /// OpenAI's end-of-stream sentinel.
    pub fn done() -> Self {
        Self { event: None, data: "[DONE]".into() }
    }

    fn json<T: Serialize>(event: Option<&str>, body: &T) -> Self {
        // Serializing these plain structs cannot fail; fall back to an error body regardless
        // rather than panic.
        let data = serde_json::to_string(body).unwrap_or_else(|e| {
            serde_json::json!({"error": {"message": e.to_string(), "type": "server_error"}}).to_string()
        });
        Self { event: event.map(str::to_string), data }
    }

    /// The frame as it goes on the wire, blank line included. A payload with newlines (never
    /// produced by serde_json, but possible in principle) becomes several `data:` lines, which
    /// SSE readers join back with `\n`.
    pub fn to_sse_string(&self) -> String {
        let mut out = String::with_capacity(self.data.len() + 32);
        if let Some(event) = &self.event {
            out.push_str("event: ");
            out.push_str(event);
            out.push('\n');
        }
        for line in self.data.split('\n') {
            out.push_str("data: ");
            out.push_str(line);
            out.push('\n');
        }
        out.push('\n');
        out
    }
}

/// A mid-stream error on the OpenAI routes: the status line is long gone, so the error goes
/// out as a data frame holding the usual `{"error": {...}}` body. We then still send `[DONE]`:
/// that is what vLLM and SGLang do (their stream generators yield the error frame and fall
/// through to `data: [DONE]`), and it lets clients that read until `[DONE]` finish cleanly,
/// while the OpenAI SDKs raise on the error frame before reaching it.
fn openai_error_frames(error: &GenerateError) -> Vec<SseFrame> {
    vec![SseFrame::json(None, &openai::error_body(error)), SseFrame::done()]
}

/// Renders `/v1/chat/completions` streams.
#[derive(Debug, Clone)]
pub struct OpenAiChatStream {
    id: String,
    model: String,
    created: u64,
    include_usage: bool,
    started: bool,
    finished: bool,
}

impl OpenAiChatStream {
    /// `model` is the name the client asked for; `created` is unix seconds.
    pub fn new(id: String, model: String, created: u64, include_usage: bool) -> Self {
        Self { id, model, created, include_usage, started: false, finished: false }
    }

    fn chunk(&self, delta: openai::Delta, finish_reason: Option<String>) -> ChatCompletionChunk {
        ChatCompletionChunk {
            id: self.id.clone(),
            object: openai::CHAT_COMPLETION_CHUNK_OBJECT.into(),
            created: self.created,
            model: self.model.clone(),
            choices: vec![ChunkChoice { index: 0, delta, finish_reason, logprobs: None }],
            usage: self.include_usage.then_some(None),
            timings: None,
        }
    }

    pub fn on_event(&mut self, ev: &Event) -> Vec<SseFrame> {
        if self.finished {
            return Vec::new();
        }
        let mut out = Vec::new();
        // An error before anything was sent needs no opening chunk.
        if !self.started && !matches!(ev, Event::Error { .. }) {
            self.started = true;
            // The first chunk announces the role, as OpenAI's does.
            let delta = openai::Delta { role: Some("assistant".into()), content: Some(String::new()) };
            out.push(SseFrame::json(None, &self.chunk(delta, None)));
        }
        match ev {
            Event::Started { .. } | Event::ToolCall { .. } | Event::ToolArgs { .. } => {}
            Event::Text { text, .. } => {
                let delta = openai::Delta { role: None, content: Some(text.clone()) };
                out.push(SseFrame::json(None, &self.chunk(delta, None)));
            }
            Event::Done { finish, usage, timings, .. } => {
                self.finished = true;
                let reason = Some(openai::finish_reason(finish).to_string());
                let mut last = self.chunk(openai::Delta::default(), reason);
                last.timings = Some((*timings).into());
                out.push(SseFrame::json(None, &last));
                if self.include_usage {
                    let mut usage_chunk = self.chunk(openai::Delta::default(), None);
                    usage_chunk.choices.clear();
                    usage_chunk.usage = Some(Some((*usage).into()));
                    out.push(SseFrame::json(None, &usage_chunk));
                }
                out.push(SseFrame::done());
            }
            Event::Error { error } => {
                self.finished = true;
                out.extend(openai_error_frames(error));
            }
        }
        out
    }
}

/// Renders `/v1/completions` streams. Unlike chat there is no role to announce, so `Started`
/// emits nothing (as in vLLM); text chunks carry `text`, the final one `finish_reason`.
#[derive(Debug, Clone)]
pub struct OpenAiCompletionStream {
    id: String,
    model: String,
    created: u64,
    include_usage: bool,
    finished: bool,
}

impl OpenAiCompletionStream {
    pub fn new(id: String, model: String, created: u64, include_usage: bool) -> Self {
        Self { id, model, created, include_usage, finished: false }
    }

    fn chunk(&self, text: String, finish_reason: Option<String>) -> CompletionChunk {
        CompletionChunk {
            id: self.id.clone(),
            object: openai::TEXT_COMPLETION_OBJECT.into(),
            created: self.created,
            model: self.model.clone(),
            choices: vec![CompletionChoice { index: 0, text, finish_reason, logprobs: None }],
            usage: self.include_usage.then_some(None),
            timings: None,
        }
    }

    pub fn on_event(&mut self, ev: &Event) -> Vec<SseFrame> {
        if self.finished {
            return Vec::new();
        }
        match ev {
            Event::Started { .. } | Event::ToolCall { .. } | Event::ToolArgs { .. } => Vec::new(),
            Event::Text { text, .. } => vec![SseFrame::json(None, &self.chunk(text.clone(), None))],
            Event::Done { finish, usage, timings, .. } => {
                self.finished = true;
                let reason = Some(openai::finish_reason(finish).to_string());
                let mut last = self.chunk(String::new(), reason);
                last.timings = Some((*timings).into());
                let mut out = vec![SseFrame::json(None, &last)];
                if self.include_usage {
                    let mut usage_chunk = self.chunk(String::new(), None);
                    usage_chunk.choices.clear();
                    usage_chunk.usage = Some(Some((*usage).into()));
                    out.push(SseFrame::json(None, &usage_chunk));
                }
                out.push(SseFrame::done());
                out
            }
            Event::Error { error } => {
                self.finished = true;
                openai_error_frames(error)
            }
        }
    }
}

/// Renders `/v1/messages` streams in Anthropic's event order: `message_start`,
/// `content_block_start`, `ping`, `content_block_delta`*, `content_block_stop`,
/// `message_delta`, `message_stop`; or an `error` event, after which nothing follows.
#[derive(Debug, Clone)]
pub struct AnthropicStream {
    id: String,
    model: String,
    started: bool,
    finished: bool,
}

impl AnthropicStream {
    /// `model` is the name the client asked for.
    pub fn new(id: String, model: String) -> Self {
        Self { id, model, started: false, finished: false }
    }

    fn frame(ev: &StreamEvent) -> SseFrame {
        SseFrame::json(Some(ev.name()), ev)
    }

    fn open(&mut self, prompt_tokens: u32) -> Vec<SseFrame> {
        self.started = true;
        let message = anthropic::Message {
            id: self.id.clone(),
            kind: "message".into(),
            role: "assistant".into(),
            content: Vec::new(),
            model: self.model.clone(),
            stop_reason: None,
            stop_sequence: None,
            usage: anthropic::AnthUsage { input_tokens: prompt_tokens, output_tokens: 0 },
        };
        [
            StreamEvent::MessageStart { message },
            StreamEvent::ContentBlockStart { index: 0, content_block: TextBlock::new("") },
            StreamEvent::Ping,
        ]
        .iter()
        .map(Self::frame)
        .collect()
    }

    pub fn on_event(&mut self, ev: &Event) -> Vec<SseFrame> {
        if self.finished {
            return Vec::new();
        }
        // An error before anything was sent needs no message envelope around it.
        let mut out = match ev {
            Event::Started { prompt_tokens } if !self.started => return self.open(*prompt_tokens),
            Event::Error { .. } => Vec::new(),
            _ if !self.started => self.open(0),
            _ => Vec::new(),
        };
        match ev {
            Event::Started { .. } | Event::ToolCall { .. } | Event::ToolArgs { .. } => {}
            Event::Text { text, .. } => out.push(Self::frame(&StreamEvent::ContentBlockDelta {
                index: 0,
                delta: BlockDelta::TextDelta { text: text.clone() },
            })),
            Event::Done { finish, usage, .. } => {
                self.finished = true;
                let delta = MessageDeltaBody {
                    stop_reason: Some(anthropic::stop_reason(finish).into()),
                    stop_sequence: anthropic::stop_sequence(finish),
                };
                let usage = DeltaUsage { output_tokens: usage.completion_tokens };
                out.extend(
                    [
                        StreamEvent::ContentBlockStop { index: 0 },
                        StreamEvent::MessageDelta { delta, usage },
                        StreamEvent::MessageStop,
                    ]
                    .iter()
                    .map(Self::frame),
                );
            }
            Event::Error { error } => {
                self.finished = true;
                let error = anthropic::ErrorObject::from_error(error);
                out.push(Self::frame(&StreamEvent::Error { error }));
            }
        }
        out
    }
}

#[cfg(test)]
mod tests;
