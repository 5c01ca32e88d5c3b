//! Streaming renderers: small state machines fed neutral [`Event`]s, each returning the SSE
//! frames to write. They hold no IO and no clock (`created` is passed in), so the gateway only
//! forwards frames and the exact wire sequence is tested here.
//!
//! Every renderer tolerates a missing `Started` (it opens the stream on the first event of any
//! kind), ignores events of a choice that does not exist or is already done, and ignores
//! everything after the end: the last choice's `Done`, or an `Error`
//! ([`is_finished`](OpenAiChatStream::is_finished) says when that is reached).

use serde::Serialize;

use crate::generate::GenerateError;
use crate::openai;

mod anthropic_stream;
mod openai_stream;

pub use anthropic_stream::AnthropicStream;
pub use openai_stream::{OpenAiChatStream, OpenAiCompletionStream};

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

#[cfg(test)]
mod tests;
