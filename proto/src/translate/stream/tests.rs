//! SSE framing, and the helpers the renderers' tests share.

use serde_json::Value;

use super::*;
use crate::generate::{Event, FinishReason, Timings, Usage};

pub(super) const TIMINGS: Timings = Timings { ttft_ms: 10.0, prefill_tok_s: 100.0, decode_tok_s: 20.0, queue_ms: 0.0 };

pub(super) fn timings_json() -> Value {
    serde_json::json!({"ttft_ms": 10.0, "prefill_tok_s": 100.0, "decode_tok_s": 20.0, "queue_ms": 0.0})
}

pub(super) fn run(mut on_event: impl FnMut(&Event) -> Vec<SseFrame>, evs: &[Event]) -> Vec<SseFrame> {
    evs.iter().flat_map(&mut on_event).collect()
}

pub(super) fn data(f: &SseFrame) -> Value {
    serde_json::from_str(&f.data).unwrap()
}

pub(super) fn text(choice: u32, text: &str) -> Event {
    Event::Text { choice, text: text.into(), logprobs: Vec::new() }
}

pub(super) fn done(choice: u32, finish: FinishReason, completion_tokens: u32) -> Event {
    Event::Done {
        choice,
        finish,
        usage: Usage { prompt_tokens: 4, completion_tokens, ..Default::default() },
        timings: TIMINGS,
    }
}

pub(super) fn tool_call(choice: u32, index: u32, id: &str, name: &str) -> Event {
    Event::ToolCall { choice, index, id: id.into(), name: name.into() }
}

pub(super) fn args(choice: u32, index: u32, fragment: &str) -> Event {
    Event::ToolArgs { choice, index, fragment: fragment.into() }
}

/// "Hel", "lo", then the end.
pub(super) fn hello(finish: FinishReason) -> Vec<Event> {
    vec![Event::Started { prompt_tokens: 4, cached_tokens: 0 }, text(0, "Hel"), text(0, "lo"), done(0, finish, 2)]
}

/// Two calls, no text.
pub(super) fn two_calls() -> Vec<Event> {
    vec![
        Event::Started { prompt_tokens: 4, cached_tokens: 0 },
        tool_call(0, 0, "call_abc", "get_weather"),
        args(0, 0, r#"{"city":"#),
        args(0, 0, r#""Paris"}"#),
        tool_call(0, 1, "call_def", "get_weather"),
        args(0, 1, r#"{"city":"Rome"}"#),
        done(0, FinishReason::ToolCalls, 2),
    ]
}

#[test]
fn sse_strings() {
    let named = SseFrame { event: Some("ping".into()), data: r#"{"type":"ping"}"#.into() };
    assert_eq!(named.to_sse_string(), "event: ping\ndata: {\"type\":\"ping\"}\n\n");
    assert_eq!(SseFrame::done().to_sse_string(), "data: [DONE]\n\n");
    let multi = SseFrame { event: None, data: "a\nb".into() };
    assert_eq!(multi.to_sse_string(), "data: a\ndata: b\n\n");
}
