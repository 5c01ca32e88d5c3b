use serde_json::{json, Value};

use super::*;
use crate::generate::{ErrorKind, FinishReason, Timings, Usage};

fn events(finish: FinishReason) -> Vec<Event> {
    vec![
        Event::Started { prompt_tokens: 4 },
        Event::text("Hel"),
        Event::text("lo"),
        Event::Done {
            choice: 0,
            finish,
            usage: Usage { prompt_tokens: 4, completion_tokens: 2 },
            timings: Timings { ttft_ms: 10.0, prefill_tok_s: 100.0, decode_tok_s: 20.0, queue_ms: 0.0 },
        },
    ]
}

fn run(on_event: impl FnMut(&Event) -> Vec<SseFrame>, evs: &[Event]) -> Vec<SseFrame> {
    evs.iter().flat_map(on_event).collect()
}

fn data(f: &SseFrame) -> Value {
    serde_json::from_str(&f.data).unwrap()
}

const TIMINGS: &str = r#"{"ttft_ms":10.0,"prefill_tok_s":100.0,"decode_tok_s":20.0,"queue_ms":0.0}"#;

#[test]
fn openai_chat_stream_with_usage() {
    let mut s = OpenAiChatStream::new("chatcmpl-1".into(), "helexa/small".into(), 1700, true);
    let frames = run(|e| s.on_event(e), &events(FinishReason::Stop));
    let chunk = |choices: Value, usage: Value| {
        json!({"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1700,
               "model": "helexa/small", "choices": choices, "usage": usage})
    };
    let choice =
        |delta: Value, finish: Value| json!([{"index": 0, "delta": delta, "finish_reason": finish, "logprobs": null}]);
    assert_eq!(frames.len(), 6);
    assert!(frames.iter().all(|f| f.event.is_none()));
    assert_eq!(data(&frames[0]), chunk(choice(json!({"role": "assistant", "content": ""}), Value::Null), Value::Null));
    assert_eq!(data(&frames[1]), chunk(choice(json!({"content": "Hel"}), Value::Null), Value::Null));
    assert_eq!(data(&frames[2]), chunk(choice(json!({"content": "lo"}), Value::Null), Value::Null));
    let mut last = chunk(choice(json!({}), json!("stop")), Value::Null);
    last["timings"] = serde_json::from_str(TIMINGS).unwrap();
    assert_eq!(data(&frames[3]), last);
    assert_eq!(
        data(&frames[4]),
        chunk(json!([]), json!({"prompt_tokens": 4, "completion_tokens": 2, "total_tokens": 6}))
    );
    assert_eq!(frames[5], SseFrame::done());
    // Nothing after the end.
    assert!(s.on_event(&Event::text("late")).is_empty());
}

#[test]
fn openai_chat_stream_without_usage_has_no_usage_key() {
    let mut s = OpenAiChatStream::new("c".into(), "m".into(), 1, false);
    let frames = run(|e| s.on_event(e), &events(FinishReason::Length));
    assert_eq!(frames.len(), 5);
    for f in &frames[..4] {
        assert!(!f.data.contains("\"usage\""), "{}", f.data);
    }
    assert_eq!(data(&frames[3])["choices"][0]["finish_reason"], "length");
    assert_eq!(frames[4].data, "[DONE]");
}

#[test]
fn openai_chat_stream_error_frame_then_done() {
    let mut s = OpenAiChatStream::new("c".into(), "m".into(), 1, true);
    let mut frames = s.on_event(&Event::Started { prompt_tokens: 1 });
    frames.extend(s.on_event(&Event::Error { error: GenerateError::new(ErrorKind::Internal, "CUDA out of memory") }));
    assert_eq!(frames.len(), 3);
    assert_eq!(
        data(&frames[1]),
        json!({"error": {"message": "CUDA out of memory", "type": "server_error",
                         "param": null, "code": null}})
    );
    assert_eq!(frames[2], SseFrame::done());
    assert!(s.on_event(&Event::text("x")).is_empty());
}

#[test]
fn openai_chat_stream_error_before_start_has_no_role_chunk() {
    let mut s = OpenAiChatStream::new("c".into(), "m".into(), 1, false);
    let frames = s.on_event(&Event::Error { error: GenerateError::new(ErrorKind::Unavailable, "no peer") });
    assert_eq!(frames.len(), 2);
    assert_eq!(data(&frames[0])["error"]["type"], "service_unavailable");
}

#[test]
fn openai_completion_stream_sequence() {
    let mut s = OpenAiCompletionStream::new("cmpl-1".into(), "m".into(), 5, true);
    let frames = run(|e| s.on_event(e), &events(FinishReason::StopSequence("\n".into())));
    assert_eq!(frames.len(), 5, "Started emits nothing");
    let texts: Vec<Value> = frames[..3].iter().map(|f| data(f)["choices"][0]["text"].clone()).collect();
    assert_eq!(texts, vec![json!("Hel"), json!("lo"), json!("")]);
    assert_eq!(
        data(&frames[0]),
        json!({"id": "cmpl-1", "object": "text_completion", "created": 5, "model": "m",
               "choices": [{"index": 0, "text": "Hel", "finish_reason": null, "logprobs": null}],
               "usage": null})
    );
    assert_eq!(data(&frames[2])["choices"][0]["finish_reason"], "stop");
    assert_eq!(data(&frames[3])["choices"], json!([]));
    assert_eq!(data(&frames[3])["usage"]["completion_tokens"], 2);
    assert_eq!(frames[4].data, "[DONE]");

    let mut s = OpenAiCompletionStream::new("cmpl-1".into(), "m".into(), 5, false);
    let frames = run(|e| s.on_event(e), &events(FinishReason::Stop));
    assert_eq!(frames.len(), 4);
    assert!(frames.iter().all(|f| !f.data.contains("usage")));
}

#[test]
fn anthropic_stream_sequence() {
    let mut s = AnthropicStream::new("msg_1".into(), "claude-x".into());
    let frames = run(|e| s.on_event(e), &events(FinishReason::StopSequence("END".into())));
    let names: Vec<&str> = frames.iter().map(|f| f.event.as_deref().unwrap()).collect();
    assert_eq!(
        names,
        [
            "message_start",
            "content_block_start",
            "ping",
            "content_block_delta",
            "content_block_delta",
            "content_block_stop",
            "message_delta",
            "message_stop"
        ]
    );
    for f in &frames {
        assert_eq!(data(f)["type"], f.event.as_deref().unwrap());
    }
    assert_eq!(
        data(&frames[0]),
        json!({"type": "message_start", "message": {
            "id": "msg_1", "type": "message", "role": "assistant", "content": [],
            "model": "claude-x", "stop_reason": null, "stop_sequence": null,
            "usage": {"input_tokens": 4, "output_tokens": 0}}})
    );
    assert_eq!(
        data(&frames[1]),
        json!({"type": "content_block_start", "index": 0,
               "content_block": {"type": "text", "text": ""}})
    );
    assert_eq!(
        data(&frames[4]),
        json!({"type": "content_block_delta", "index": 0,
               "delta": {"type": "text_delta", "text": "lo"}})
    );
    assert_eq!(data(&frames[5]), json!({"type": "content_block_stop", "index": 0}));
    assert_eq!(
        data(&frames[6]),
        json!({"type": "message_delta",
               "delta": {"stop_reason": "stop_sequence", "stop_sequence": "END"},
               "usage": {"output_tokens": 2}})
    );
    assert_eq!(data(&frames[7]), json!({"type": "message_stop"}));
}

#[test]
fn anthropic_stream_maps_finish_and_errors() {
    let mut s = AnthropicStream::new("msg_1".into(), "m".into());
    let frames = run(|e| s.on_event(e), &events(FinishReason::Length));
    assert_eq!(data(&frames[6])["delta"], json!({"stop_reason": "max_tokens", "stop_sequence": null}));

    let mut s = AnthropicStream::new("msg_2".into(), "m".into());
    let mut frames = s.on_event(&Event::Started { prompt_tokens: 2 });
    frames.extend(s.on_event(&Event::Error { error: GenerateError::new(ErrorKind::Unavailable, "Overloaded") }));
    assert_eq!(frames.len(), 4);
    assert_eq!(frames[3].event.as_deref(), Some("error"));
    assert_eq!(
        data(&frames[3]),
        json!({"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}})
    );
    assert!(s.on_event(&Event::text("x")).is_empty());
}

#[test]
fn anthropic_stream_opens_even_without_started() {
    let mut s = AnthropicStream::new("msg_3".into(), "m".into());
    let frames = s.on_event(&Event::text("hi"));
    let names: Vec<&str> = frames.iter().map(|f| f.event.as_deref().unwrap()).collect();
    assert_eq!(names, ["message_start", "content_block_start", "ping", "content_block_delta"]);
}

#[test]
fn sse_strings() {
    let named = SseFrame { event: Some("ping".into()), data: r#"{"type":"ping"}"#.into() };
    assert_eq!(named.to_sse_string(), "event: ping\ndata: {\"type\":\"ping\"}\n\n");
    assert_eq!(SseFrame::done().to_sse_string(), "data: [DONE]\n\n");
    let multi = SseFrame { event: None, data: "a\nb".into() };
    assert_eq!(multi.to_sse_string(), "data: a\ndata: b\n\n");
}
