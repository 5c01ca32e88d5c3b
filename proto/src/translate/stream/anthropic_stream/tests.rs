use serde_json::{json, Value};

use super::*;
use crate::generate::{ErrorKind, FinishReason, GenerateError};
use crate::translate::stream::tests::{args, data, done, hello, run, text, tool_call, two_calls};

fn names(frames: &[SseFrame]) -> Vec<&str> {
    frames.iter().map(|f| f.event.as_deref().unwrap()).collect()
}

fn message_start(input_tokens: u32) -> Value {
    json!({"type": "message_start", "message": {
        "id": "msg_1", "type": "message", "role": "assistant", "content": [],
        "model": "claude-x", "stop_reason": null, "stop_sequence": null,
        "usage": {"input_tokens": input_tokens, "output_tokens": 0,
                  "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0}}})
}

fn block_start(index: u32, block: Value) -> Value {
    json!({"type": "content_block_start", "index": index, "content_block": block})
}

fn tool_use(id: &str, name: &str) -> Value {
    json!({"type": "tool_use", "id": id, "name": name, "input": {}})
}

fn text_delta(index: u32, text: &str) -> Value {
    json!({"type": "content_block_delta", "index": index, "delta": {"type": "text_delta", "text": text}})
}

fn json_delta(index: u32, partial: &str) -> Value {
    json!({"type": "content_block_delta", "index": index, "delta": {"type": "input_json_delta", "partial_json": partial}})
}

fn block_stop(index: u32) -> Value {
    json!({"type": "content_block_stop", "index": index})
}

fn message_delta(stop_reason: &str, output_tokens: u32) -> Value {
    json!({"type": "message_delta", "delta": {"stop_reason": stop_reason, "stop_sequence": null},
           "usage": {"output_tokens": output_tokens, "input_tokens": 4,
                      "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0}})
}

fn stream() -> AnthropicStream {
    AnthropicStream::new("msg_1".into(), "claude-x".into())
}

/// Every frame's payload, after checking that its `type` names its SSE event.
fn datas(frames: &[SseFrame]) -> Vec<Value> {
    for f in frames {
        assert_eq!(data(f)["type"], f.event.as_deref().unwrap());
    }
    frames.iter().map(data).collect()
}

#[test]
fn anthropic_stream_of_text() {
    let mut s = stream();
    let frames = run(|e| s.on_event(e), &hello(FinishReason::StopSequence("END".into())));
    assert_eq!(
        datas(&frames),
        [
            message_start(4),
            block_start(0, json!({"type": "text", "text": ""})),
            json!({"type": "ping"}),
            text_delta(0, "Hel"),
            text_delta(0, "lo"),
            block_stop(0),
            json!({"type": "message_delta", "delta": {"stop_reason": "stop_sequence", "stop_sequence": "END"},
                   "usage": {"output_tokens": 2, "input_tokens": 4, "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0}}),
            json!({"type": "message_stop"})
        ]
    );
    assert!(s.is_finished());
}

#[test]
fn anthropic_stream_of_two_tool_calls() {
    let mut s = stream();
    let frames = run(|e| s.on_event(e), &two_calls());
    assert_eq!(
        datas(&frames),
        [
            message_start(4),
            block_start(0, tool_use("toolu_abc", "get_weather")),
            json!({"type": "ping"}),
            json_delta(0, "{\"city\":"),
            json_delta(0, "\"Paris\"}"),
            block_stop(0),
            block_start(1, tool_use("toolu_def", "get_weather")),
            json_delta(1, "{\"city\":\"Rome\"}"),
            block_stop(1),
            message_delta("tool_use", 2),
            json!({"type": "message_stop"})
        ]
    );
}

#[test]
fn anthropic_stream_of_text_then_a_call() {
    let mut s = stream();
    let events = [
        Event::Started { prompt_tokens: 4, cached_tokens: 0 },
        text(0, "Let me check."),
        tool_call(0, 0, "call_abc", "get_weather"),
        args(0, 0, "{\"city\": \"Paris\"}"),
        // Arguments of a call that is not the open block, and another choice: dropped.
        args(0, 3, "{}"),
        text(1, "other choice"),
        done(0, FinishReason::ToolCalls, 9),
    ];
    let frames = run(|e| s.on_event(e), &events);
    assert_eq!(
        datas(&frames),
        [
            message_start(4),
            block_start(0, json!({"type": "text", "text": ""})),
            json!({"type": "ping"}),
            text_delta(0, "Let me check."),
            block_stop(0),
            block_start(1, tool_use("toolu_abc", "get_weather")),
            json_delta(1, "{\"city\": \"Paris\"}"),
            block_stop(1),
            message_delta("tool_use", 9),
            json!({"type": "message_stop"})
        ]
    );
}

#[test]
fn anthropic_stream_of_nothing_has_one_empty_text_block() {
    let mut s = stream();
    let frames = run(
        |e| s.on_event(e),
        &[Event::Started { prompt_tokens: 4, cached_tokens: 0 }, done(0, FinishReason::Length, 0)],
    );
    assert_eq!(
        datas(&frames),
        [
            message_start(4),
            block_start(0, json!({"type": "text", "text": ""})),
            json!({"type": "ping"}),
            block_stop(0),
            message_delta("max_tokens", 0),
            json!({"type": "message_stop"})
        ]
    );
}

#[test]
fn anthropic_stream_maps_errors() {
    let mut s = stream();
    let mut frames = s.on_event(&Event::Started { prompt_tokens: 2, cached_tokens: 0 });
    frames.extend(s.on_event(&Event::Error { error: GenerateError::new(ErrorKind::Unavailable, "Overloaded") }));
    assert_eq!(names(&frames), ["message_start", "error"]);
    assert_eq!(
        data(&frames[1]),
        json!({"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}})
    );
    assert!(s.is_finished());
    assert!(s.on_event(&text(0, "x")).is_empty());
}

#[test]
fn anthropic_stream_opens_even_without_started() {
    let mut s = stream();
    let frames = s.on_event(&text(0, "hi"));
    assert_eq!(names(&frames), ["message_start", "content_block_start", "ping", "content_block_delta"]);
    assert_eq!(data(&frames[0]), message_start(0));
    let frames = s.on_event(&tool_call(0, 0, "toolu_x", "f"));
    assert_eq!(datas(&frames), [block_stop(0), block_start(1, tool_use("toolu_x", "f"))]);
}
