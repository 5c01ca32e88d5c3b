//! The Anthropic stream renderer: content blocks opened as the answer needs them, text and
//! `tool_use` alike, with increasing indexes.

use serde_json::{Map, Value};

use super::SseFrame;
use crate::anthropic::{self, BlockDelta, ContentBlock, DeltaUsage, MessageDeltaBody, StreamEvent};
use crate::generate::{Event, Usage};

/// The content block being streamed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Open {
    Text {
        block: u32,
    },
    /// `call` is the event's call index.
    Tool {
        block: u32,
        call: u32,
    },
}

impl Open {
    fn block(self) -> u32 {
        match self {
            Open::Text { block } | Open::Tool { block, .. } => block,
        }
    }
}

/// Renders `/v1/messages` streams in Anthropic's event order: `message_start`; per content
/// block `content_block_start` (a `ping` after the first), `content_block_delta`* (`text_delta`
/// for text, `input_json_delta` for a `tool_use` block's arguments), `content_block_stop`; then
/// `message_delta` and `message_stop`. Or an `error` event, after which nothing follows.
///
/// A text block opens at the first text and a `tool_use` block at each call, each closing the
/// block before it; an answer with neither still gets one empty text block, as the one-body
/// response does. Only choice 0 exists (Anthropic has no `n`). Call ids are rewritten
/// `call_…` → `toolu_…` ([`anthropic::tool_use_id`]). A call's arguments that arrive after the
/// next block opened are dropped: Anthropic blocks cannot interleave, and the engine writes
/// calls one after another.
#[derive(Debug, Clone)]
pub struct AnthropicStream {
    id: String,
    model: String,
    started: bool,
    pinged: bool,
    open: Option<Open>,
    next_block: u32,
    calls: Vec<u32>,
    finished: bool,
}

impl AnthropicStream {
    /// `model` is the name the client asked for.
    pub fn new(id: String, model: String) -> Self {
        Self { id, model, started: false, pinged: false, open: None, next_block: 0, calls: Vec::new(), finished: false }
    }

    /// The stream is over: the message stopped, or an error ended it.
    pub fn is_finished(&self) -> bool {
        self.finished
    }

    fn frame(ev: &StreamEvent) -> SseFrame {
        SseFrame::json(Some(ev.name()), ev)
    }

    fn message_start(&mut self, prompt_tokens: u32, cached_tokens: u32) -> SseFrame {
        self.started = true;
        let message = anthropic::Message {
            id: self.id.clone(),
            kind: "message".into(),
            role: "assistant".into(),
            content: Vec::new(),
            model: self.model.clone(),
            stop_reason: None,
            stop_sequence: None,
            usage: anthropic::AnthUsage::of(&Usage { prompt_tokens, cached_tokens, ..Usage::default() }),
        };
        Self::frame(&StreamEvent::MessageStart { message })
    }

    /// Closes the open block, if any.
    fn close(&mut self, out: &mut Vec<SseFrame>) {
        if let Some(open) = self.open.take() {
            out.push(Self::frame(&StreamEvent::ContentBlockStop { index: open.block() }));
        }
    }

    /// Closes the open block and starts `block` at the next index.
    fn start(&mut self, block: ContentBlock, out: &mut Vec<SseFrame>) -> u32 {
        self.close(out);
        let index = self.next_block;
        self.next_block += 1;
        out.push(Self::frame(&StreamEvent::ContentBlockStart { index, content_block: block }));
        if !self.pinged {
            self.pinged = true;
            out.push(Self::frame(&StreamEvent::Ping));
        }
        index
    }

    pub fn on_event(&mut self, ev: &Event) -> Vec<SseFrame> {
        let mut out = Vec::new();
        if self.finished {
            return out;
        }
        match ev {
            // An error before anything was sent needs no message envelope around it.
            Event::Error { error } => {
                self.finished = true;
                let error = anthropic::ErrorObject::from_error(error);
                out.push(Self::frame(&StreamEvent::Error { error }));
                return out;
            }
            Event::Started { prompt_tokens, cached_tokens } => {
                if !self.started {
                    out.push(self.message_start(*prompt_tokens, *cached_tokens));
                }
                return out;
            }
            Event::Text { choice, .. }
            | Event::ToolCall { choice, .. }
            | Event::ToolArgs { choice, .. }
            | Event::Done { choice, .. } => {
                if *choice != 0 {
                    return out;
                }
            }
        }
        if !self.started {
            out.push(self.message_start(0, 0));
        }
        match ev {
            Event::Text { text, .. } => {
                let index = match self.open {
                    Some(Open::Text { block }) => block,
                    _ => {
                        let block = self.start(ContentBlock::text(""), &mut out);
                        self.open = Some(Open::Text { block });
                        block
                    }
                };
                let delta = BlockDelta::TextDelta { text: text.clone() };
                out.push(Self::frame(&StreamEvent::ContentBlockDelta { index, delta }));
            }
            Event::ToolCall { index, id, name, .. } => {
                if self.calls.contains(index) {
                    return out;
                }
                self.calls.push(*index);
                let block = ContentBlock::ToolUse {
                    id: anthropic::tool_use_id(id),
                    name: name.clone(),
                    input: Value::Object(Map::new()),
                };
                let block = self.start(block, &mut out);
                self.open = Some(Open::Tool { block, call: *index });
            }
            Event::ToolArgs { index, fragment, .. } => {
                if let Some(Open::Tool { block, call }) = self.open {
                    if call == *index {
                        let delta = BlockDelta::InputJsonDelta { partial_json: fragment.clone() };
                        out.push(Self::frame(&StreamEvent::ContentBlockDelta { index: block, delta }));
                    }
                }
            }
            Event::Done { finish, usage, .. } => {
                self.finished = true;
                if self.next_block == 0 {
                    let block = self.start(ContentBlock::text(""), &mut out);
                    self.open = Some(Open::Text { block });
                }
                self.close(&mut out);
                let delta = MessageDeltaBody {
                    stop_reason: Some(anthropic::stop_reason(finish).into()),
                    stop_sequence: anthropic::stop_sequence(finish),
                };
                let usage = DeltaUsage::of(usage);
                out.push(Self::frame(&StreamEvent::MessageDelta { delta, usage }));
                out.push(Self::frame(&StreamEvent::MessageStop));
            }
            Event::Started { .. } | Event::Error { .. } => {}
        }
        out
    }
}

#[cfg(test)]
mod tests;
