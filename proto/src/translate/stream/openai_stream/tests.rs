use serde_json::{json, Value};

use super::*;
use crate::generate::{ContextOverflow, ErrorKind, TopLogprob};
use crate::openai::SYSTEM_FINGERPRINT;
use crate::translate::stream::tests::{args, data, done, hello, run, text, timings_json, tool_call, two_calls};

fn chat(include_usage: bool, shape: ReplyShape) -> OpenAiChatStream {
    OpenAiChatStream::new("chatcmpl-1".into(), "helexa/small".into(), 1700, include_usage, shape)
}

/// A whole chunk of one choice, with `"usage": null` (include_usage on).
fn chunk(index: u32, delta: Value, finish: Value, logprobs: Value) -> Value {
    json!({"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1700, "model": "helexa/small",
           "system_fingerprint": SYSTEM_FINGERPRINT,
           "choices": [{"index": index, "delta": delta, "finish_reason": finish, "logprobs": logprobs}],
           "usage": null})
}

fn role(index: u32) -> Value {
    chunk(index, json!({"role": "assistant", "content": ""}), Value::Null, Value::Null)
}

fn delta(index: u32, delta: Value) -> Value {
    chunk(index, delta, Value::Null, Value::Null)
}

fn finish(index: u32, reason: &str) -> Value {
    let mut last = chunk(index, json!({}), json!(reason), Value::Null);
    last["timings"] = timings_json();
    last
}

fn usage_chunk(completion_tokens: u32) -> Value {
    json!({"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1700, "model": "helexa/small",
           "system_fingerprint": SYSTEM_FINGERPRINT, "choices": [],
           "usage": {"prompt_tokens": 4, "completion_tokens": completion_tokens,
                     "total_tokens": 4 + completion_tokens,
                     "prompt_tokens_details": {"cached_tokens": 0}}})
}

fn datas(frames: &[SseFrame]) -> Vec<Value> {
    frames[..frames.len() - 1].iter().map(data).collect()
}

#[test]
fn openai_chat_stream_with_usage() {
    let mut s = chat(true, ReplyShape::default());
    let frames = run(|e| s.on_event(e), &hello(FinishReason::Stop));
    assert!(frames.iter().all(|f| f.event.is_none()));
    assert_eq!(
        datas(&frames),
        [
            role(0),
            delta(0, json!({"content": "Hel"})),
            delta(0, json!({"content": "lo"})),
            finish(0, "stop"),
            usage_chunk(2)
        ]
    );
    assert_eq!(frames.last(), Some(&SseFrame::done()));
    assert!(s.is_finished());
    // Nothing after the end.
    assert!(s.on_event(&text(0, "late")).is_empty());
}

#[test]
fn openai_chat_stream_without_usage_has_no_usage_key() {
    let mut s = chat(false, ReplyShape::default());
    let frames = run(|e| s.on_event(e), &hello(FinishReason::Length));
    assert_eq!(frames.len(), 5);
    for f in &frames[..4] {
        assert!(!f.data.contains("\"usage\""), "{}", f.data);
    }
    assert_eq!(data(&frames[3])["choices"][0]["finish_reason"], "length");
    assert_eq!(frames[4].data, "[DONE]");
}

#[test]
fn openai_chat_stream_of_two_tool_calls() {
    let mut s = chat(true, ReplyShape::default());
    let frames = run(|e| s.on_event(e), &two_calls());
    assert_eq!(
        datas(&frames),
        [
            role(0),
            delta(
                0,
                json!({"tool_calls": [{"index": 0, "id": "call_abc", "type": "function",
                                            "function": {"name": "get_weather", "arguments": ""}}]})
            ),
            delta(0, json!({"tool_calls": [{"index": 0, "function": {"arguments": "{\"city\":"}}]})),
            delta(0, json!({"tool_calls": [{"index": 0, "function": {"arguments": "\"Paris\"}"}}]})),
            delta(
                0,
                json!({"tool_calls": [{"index": 1, "id": "call_def", "type": "function",
                                            "function": {"name": "get_weather", "arguments": ""}}]})
            ),
            delta(0, json!({"tool_calls": [{"index": 1, "function": {"arguments": "{\"city\":\"Rome\"}"}}]})),
            finish(0, "tool_calls"),
            usage_chunk(2)
        ]
    );
    assert_eq!(frames.last(), Some(&SseFrame::done()));
}

#[test]
fn openai_chat_stream_of_text_then_a_call_and_a_custom_call() {
    let shape = ReplyShape { text_tools: vec!["apply_patch".into()], ..ReplyShape::default() };
    let mut s = chat(true, shape);
    let events = [
        text(0, "Patching."),
        tool_call(0, 0, "call_p", "apply_patch"),
        args(0, 0, "*** Begin Patch"),
        // A second start of the same call and arguments of a call never started are dropped.
        tool_call(0, 0, "call_p", "apply_patch"),
        args(0, 7, "x"),
        done(0, FinishReason::ToolCalls, 3),
    ];
    let frames = run(|e| s.on_event(e), &events);
    assert_eq!(
        datas(&frames),
        [
            role(0),
            delta(0, json!({"content": "Patching."})),
            delta(
                0,
                json!({"tool_calls": [{"index": 0, "id": "call_p", "type": "custom",
                                            "custom": {"name": "apply_patch", "input": ""}}]})
            ),
            delta(0, json!({"tool_calls": [{"index": 0, "custom": {"input": "*** Begin Patch"}}]})),
            finish(0, "tool_calls"),
            usage_chunk(3)
        ]
    );
}

#[test]
fn openai_chat_stream_of_two_interleaved_choices() {
    let mut s = chat(true, ReplyShape { n: 2, ..ReplyShape::default() });
    let events = [
        Event::Started { prompt_tokens: 4, cached_tokens: 0 },
        text(1, "B"),
        text(0, "A"),
        done(1, FinishReason::Length, 1),
        // Choice 1 is done and choice 2 does not exist.
        text(1, "late"),
        text(2, "x"),
        tool_call(0, 0, "call_1", "f"),
        done(0, FinishReason::ToolCalls, 2),
    ];
    let mut frames = Vec::new();
    for ev in &events {
        assert!(!s.is_finished());
        frames.extend(s.on_event(ev));
    }
    assert!(s.is_finished());
    assert_eq!(
        datas(&frames),
        [
            role(0),
            role(1),
            delta(1, json!({"content": "B"})),
            delta(0, json!({"content": "A"})),
            finish(1, "length"),
            delta(
                0,
                json!({"tool_calls": [{"index": 0, "id": "call_1", "type": "function",
                                            "function": {"name": "f", "arguments": ""}}]})
            ),
            finish(0, "tool_calls"),
            usage_chunk(3)
        ]
    );
    assert_eq!(frames.iter().filter(|f| f.data == "[DONE]").count(), 1);
    assert_eq!(frames.last(), Some(&SseFrame::done()));
}

#[test]
fn openai_chat_stream_carries_logprobs_with_their_text() {
    let mut s = chat(false, ReplyShape { logprobs: true, ..ReplyShape::default() });
    let token = TokenLogprob {
        token: "Hi".into(),
        bytes: b"Hi".to_vec(),
        logprob: -0.5,
        top: vec![TopLogprob { token: "Hi".into(), bytes: b"Hi".to_vec(), logprob: -0.5 }],
    };
    let events = [Event::Text { choice: 0, text: "Hi".into(), logprobs: vec![token] }, done(0, FinishReason::Stop, 1)];
    let frames = run(|e| s.on_event(e), &events);
    let d = data(&frames[1]);
    assert_eq!(
        d["choices"],
        json!([{"index": 0, "delta": {"content": "Hi"}, "finish_reason": null, "logprobs": {
            "content": [{"token": "Hi", "logprob": -0.5, "bytes": [72, 105],
                         "top_logprobs": [{"token": "Hi", "logprob": -0.5, "bytes": [72, 105]}]}],
            "refusal": null}}])
    );
    assert_eq!(data(&frames[0])["choices"][0]["logprobs"], Value::Null, "the role chunk has none");
    assert_eq!(data(&frames[2])["choices"][0]["logprobs"], Value::Null, "nor the finish chunk");
}

#[test]
fn openai_chat_stream_error_frame_then_done() {
    let mut s = chat(true, ReplyShape { n: 2, ..ReplyShape::default() });
    let mut frames = s.on_event(&Event::Started { prompt_tokens: 1, cached_tokens: 0 });
    frames.extend(s.on_event(&done(0, FinishReason::Stop, 1)));
    frames.extend(s.on_event(&Event::Error { error: GenerateError::new(ErrorKind::Internal, "CUDA out of memory") }));
    assert_eq!(frames.len(), 5);
    assert_eq!(
        data(&frames[3]),
        json!({"error": {"message": "CUDA out of memory", "type": "server_error",
                         "param": null, "code": null}})
    );
    assert_eq!(frames[4], SseFrame::done());
    assert!(s.is_finished());
    assert!(s.on_event(&text(1, "x")).is_empty());
}

#[test]
fn openai_chat_stream_error_before_start_has_no_role_chunk() {
    let mut s = chat(false, ReplyShape::default());
    let frames = s.on_event(&Event::Error {
        error: GenerateError::context_length(ContextOverflow { prompt: 10, max_tokens: 0, context: 8 }),
    });
    assert_eq!(frames.len(), 2);
    assert_eq!(data(&frames[0])["error"]["type"], "invalid_request_error");
    assert_eq!(data(&frames[0])["error"]["code"], "context_length_exceeded");
}

fn comp(include_usage: bool, shape: ReplyShape) -> OpenAiCompletionStream {
    OpenAiCompletionStream::new("cmpl-1".into(), "m".into(), 5, include_usage, shape)
}

#[test]
fn openai_completion_stream_sequence() {
    let mut s = comp(true, ReplyShape::default());
    let frames = run(|e| s.on_event(e), &hello(FinishReason::StopSequence("\n".into())));
    assert_eq!(frames.len(), 5, "Started emits nothing");
    let texts: Vec<Value> = frames[..3].iter().map(|f| data(f)["choices"][0]["text"].clone()).collect();
    assert_eq!(texts, vec![json!("Hel"), json!("lo"), json!("")]);
    assert_eq!(
        data(&frames[0]),
        json!({"id": "cmpl-1", "object": "text_completion", "created": 5, "model": "m",
               "system_fingerprint": SYSTEM_FINGERPRINT,
               "choices": [{"index": 0, "text": "Hel", "finish_reason": null, "logprobs": null}],
               "usage": null})
    );
    assert_eq!(data(&frames[2])["choices"][0]["finish_reason"], "stop");
    assert_eq!(data(&frames[2])["timings"], timings_json());
    assert_eq!(data(&frames[3])["choices"], json!([]));
    assert_eq!(data(&frames[3])["usage"]["completion_tokens"], 2);
    assert_eq!(frames[4].data, "[DONE]");

    let mut s = comp(false, ReplyShape::default());
    let frames = run(|e| s.on_event(e), &hello(FinishReason::Stop));
    assert_eq!(frames.len(), 4);
    assert!(frames.iter().all(|f| !f.data.contains("usage")));
}

#[test]
fn openai_completion_stream_of_two_choices_with_logprobs() {
    let mut s = comp(true, ReplyShape { n: 2, logprobs: true, text_tools: Vec::new() });
    let tok =
        |t: &str, l: f32| TokenLogprob { token: t.into(), bytes: t.as_bytes().to_vec(), logprob: l, top: Vec::new() };
    let events = [
        Event::Started { prompt_tokens: 4, cached_tokens: 0 },
        Event::Text { choice: 1, text: "né".into(), logprobs: vec![tok("n", -0.5), tok("é", -0.25)] },
        Event::Text { choice: 0, text: "a".into(), logprobs: vec![tok("a", -1.0)] },
        Event::Text { choice: 1, text: "e".into(), logprobs: vec![tok("e", -2.0)] },
        done(0, FinishReason::Stop, 1),
        done(1, FinishReason::Length, 3),
    ];
    let frames = run(|e| s.on_event(e), &events);
    let choices: Vec<Value> = frames[..5].iter().map(|f| data(f)["choices"][0].clone()).collect();
    assert_eq!(
        choices,
        [
            json!({"index": 1, "text": "né", "finish_reason": null, "logprobs": {
                "tokens": ["n", "é"], "token_logprobs": [-0.5, -0.25],
                "top_logprobs": [{"n": -0.5}, {"é": -0.25}], "text_offset": [0, 1]}}),
            json!({"index": 0, "text": "a", "finish_reason": null, "logprobs": {
                "tokens": ["a"], "token_logprobs": [-1.0], "top_logprobs": [{"a": -1.0}], "text_offset": [0]}}),
            // Offsets go on from the choice's earlier text: "né" is two characters.
            json!({"index": 1, "text": "e", "finish_reason": null, "logprobs": {
                "tokens": ["e"], "token_logprobs": [-2.0], "top_logprobs": [{"e": -2.0}], "text_offset": [2]}}),
            json!({"index": 0, "text": "", "finish_reason": "stop", "logprobs": null}),
            json!({"index": 1, "text": "", "finish_reason": "length", "logprobs": null}),
        ]
    );
    assert_eq!(
        data(&frames[5])["usage"],
        json!({"prompt_tokens": 4, "completion_tokens": 4, "total_tokens": 8, "prompt_tokens_details": {"cached_tokens": 0}})
    );
    assert_eq!(frames[6], SseFrame::done());
    assert_eq!(frames.len(), 7);
}
