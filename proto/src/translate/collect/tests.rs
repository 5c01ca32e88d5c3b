use serde_json::{json, Value};

use super::*;
use crate::generate::{ErrorKind, GenerateRequest, Prompt, TopLogprob};
use crate::openai::SYSTEM_FINGERPRINT;
use crate::tools::{Tool, ToolInput};

const TIMINGS: Timings = Timings { ttft_ms: 12.5, prefill_tok_s: 400.0, decode_tok_s: 50.0, queue_ms: 1.0 };

fn done(choice: u32, finish: FinishReason, completion_tokens: u32) -> Event {
    Event::Done {
        choice,
        finish,
        usage: Usage { prompt_tokens: 5, completion_tokens, ..Default::default() },
        timings: TIMINGS,
    }
}

fn text(choice: u32, text: &str) -> Event {
    Event::Text { choice, text: text.into(), logprobs: Vec::new() }
}

fn tool_call(choice: u32, index: u32, id: &str, name: &str) -> Event {
    Event::ToolCall { choice, index, id: id.into(), name: name.into() }
}

fn args(choice: u32, index: u32, fragment: &str) -> Event {
    Event::ToolArgs { choice, index, fragment: fragment.into() }
}

fn collect(shape: ReplyShape, events: Vec<Event>) -> Collected {
    let mut c = Collected::new(shape);
    for ev in events {
        assert!(!c.is_finished(), "{ev:?} after the end");
        c.push(ev);
    }
    c
}

fn collected(finish: FinishReason) -> Collected {
    let events = vec![
        Event::Started { prompt_tokens: 5, cached_tokens: 0 },
        Event::text("Hel"),
        Event::text("lo"),
        done(0, finish, 2),
    ];
    collect(ReplyShape::default(), events)
}

const USAGE: &str =
    r#"{"prompt_tokens": 5, "completion_tokens": 2, "total_tokens": 7, "prompt_tokens_details": {"cached_tokens": 0}}"#;

fn parse(s: &str) -> Value {
    serde_json::from_str(s).unwrap()
}

fn timings() -> Value {
    json!({"ttft_ms": 12.5, "prefill_tok_s": 400.0, "decode_tok_s": 50.0, "queue_ms": 1.0})
}

#[test]
fn collected_builds_chat_completion() {
    let c = collected(FinishReason::Length);
    assert!(c.is_finished());
    assert_eq!(c.choices[0].text, "Hello");
    let v = serde_json::to_value(chat_completion("chatcmpl-1", "helexa/small", 1_700_000_000, &c)).unwrap();
    assert_eq!(
        v,
        json!({
            "id": "chatcmpl-1", "object": "chat.completion", "created": 1_700_000_000u64,
            "model": "helexa/small", "system_fingerprint": SYSTEM_FINGERPRINT,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": "Hello"},
                         "finish_reason": "length", "logprobs": null}],
            "usage": parse(USAGE),
            "timings": timings()
        })
    );
    assert!(SYSTEM_FINGERPRINT.starts_with("cortex-"));
}

#[test]
fn collected_builds_completion_and_message() {
    let c = collected(FinishReason::StopSequence("END".into()));
    let v = serde_json::to_value(completion("cmpl-1", "m", 9, &c)).unwrap();
    assert_eq!(
        v,
        json!({
            "id": "cmpl-1", "object": "text_completion", "created": 9, "model": "m",
            "system_fingerprint": SYSTEM_FINGERPRINT,
            "choices": [{"index": 0, "text": "Hello", "finish_reason": "stop", "logprobs": null}],
            "usage": parse(USAGE), "timings": timings()
        })
    );
    let m = serde_json::to_value(message("msg_1", "claude-x", &c)).unwrap();
    assert_eq!(
        m,
        json!({
            "id": "msg_1", "type": "message", "role": "assistant",
            "content": [{"type": "text", "text": "Hello"}], "model": "claude-x",
            "stop_reason": "stop_sequence", "stop_sequence": "END",
            "usage": {"input_tokens": 5, "output_tokens": 2, "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0}
        })
    );
}

#[test]
fn collected_keeps_the_error() {
    let mut c = Collected::default();
    c.push(Event::Started { prompt_tokens: 3, cached_tokens: 0 });
    c.push(Event::Error { error: GenerateError::new(ErrorKind::Internal, "engine died") });
    assert!(c.is_finished());
    assert_eq!(c.error.as_ref().map(|e| e.kind), Some(ErrorKind::Internal));
    assert_eq!(c.choices[0].finish, None);
    assert_eq!(c.usage.prompt_tokens, 3);
    let v = serde_json::to_value(chat_completion("c", "m", 1, &c)).unwrap();
    assert_eq!(v["choices"][0]["finish_reason"], Value::Null);
    assert!(v.get("timings").is_none());
    // Nothing counts after the error.
    c.push(text(0, "late"));
    assert_eq!(c.choices[0].text, "");
}

/// Two calls, their arguments in pieces, and no text.
fn two_calls() -> Vec<Event> {
    vec![
        Event::Started { prompt_tokens: 5, cached_tokens: 0 },
        tool_call(0, 0, "call_abc", "get_weather"),
        args(0, 0, r#"{"city":"#),
        args(0, 0, r#""Paris"}"#),
        tool_call(0, 1, "call_def", "get_weather"),
        args(0, 1, r#"{"city":"Rome"}"#),
        done(0, FinishReason::ToolCalls, 2),
    ]
}

#[test]
fn tool_calls_only_in_both_dialects() {
    let c = collect(ReplyShape::default(), two_calls());
    let v = serde_json::to_value(chat_completion("chatcmpl-1", "gpt-4o", 1_700_000_000, &c)).unwrap();
    assert_eq!(
        v,
        json!({
            "id": "chatcmpl-1", "object": "chat.completion", "created": 1_700_000_000u64, "model": "gpt-4o",
            "system_fingerprint": SYSTEM_FINGERPRINT,
            "choices": [{
                "index": 0,
                "message": {
                    "role": "assistant",
                    "content": null,
                    "tool_calls": [
                        {"id": "call_abc", "type": "function",
                         "function": {"name": "get_weather", "arguments": "{\"city\":\"Paris\"}"}},
                        {"id": "call_def", "type": "function",
                         "function": {"name": "get_weather", "arguments": "{\"city\":\"Rome\"}"}}
                    ]
                },
                "finish_reason": "tool_calls",
                "logprobs": null
            }],
            "usage": parse(USAGE), "timings": timings()
        })
    );
    let m = serde_json::to_value(message("msg_1", "claude-x", &c)).unwrap();
    assert_eq!(
        m,
        json!({
            "id": "msg_1", "type": "message", "role": "assistant", "model": "claude-x",
            "content": [
                {"type": "tool_use", "id": "toolu_abc", "name": "get_weather", "input": {"city": "Paris"}},
                {"type": "tool_use", "id": "toolu_def", "name": "get_weather", "input": {"city": "Rome"}}
            ],
            "stop_reason": "tool_use", "stop_sequence": null,
            "usage": {"input_tokens": 5, "output_tokens": 2, "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0}
        })
    );
}

#[test]
fn text_then_a_call_in_both_dialects() {
    let events = vec![
        text(0, "Let me check."),
        tool_call(0, 0, "call_abc", "get_weather"),
        args(0, 0, r#"{"city": "Paris"}"#),
        done(0, FinishReason::ToolCalls, 2),
    ];
    let c = collect(ReplyShape::default(), events);
    let v = serde_json::to_value(chat_completion("c", "m", 1, &c)).unwrap();
    assert_eq!(
        v["choices"][0]["message"],
        json!({"role": "assistant", "content": "Let me check.", "tool_calls": [
            {"id": "call_abc", "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\": \"Paris\"}"}}]})
    );
    let m = serde_json::to_value(message("msg_1", "m", &c)).unwrap();
    assert_eq!(
        m["content"],
        json!([{"type": "text", "text": "Let me check."},
               {"type": "tool_use", "id": "toolu_abc", "name": "get_weather", "input": {"city": "Paris"}}])
    );
    assert_eq!(m["stop_reason"], "tool_use");
}

#[test]
fn calls_of_free_form_tools_render_as_custom() {
    let req = GenerateRequest {
        tools: vec![Tool {
            name: "apply_patch".into(),
            description: String::new(),
            input: ToolInput::Text { grammar: None },
        }],
        ..GenerateRequest::new("c", "m", Prompt::Text(String::new()), Default::default())
    };
    let shape = ReplyShape::of(&req);
    assert_eq!(shape.text_tools, ["apply_patch"]);
    let events = vec![
        tool_call(0, 0, "call_p", "apply_patch"),
        args(0, 0, "*** Begin Patch\n"),
        args(0, 0, "*** End Patch"),
        done(0, FinishReason::ToolCalls, 2),
    ];
    let c = collect(shape, events);
    let v = serde_json::to_value(chat_completion("c", "m", 1, &c)).unwrap();
    assert_eq!(
        v["choices"][0]["message"]["tool_calls"],
        json!([{"id": "call_p", "type": "custom",
                "custom": {"name": "apply_patch", "input": "*** Begin Patch\n*** End Patch"}}])
    );
}

#[test]
fn anthropic_input_is_an_object_even_from_broken_arguments() {
    // Cut off at max_tokens mid-call: Anthropic's `input` must still be an object.
    let events = vec![tool_call(0, 0, "call_x", "f"), args(0, 0, r#"{"city": "Par"#), done(0, FinishReason::Length, 2)];
    let m = serde_json::to_value(message("msg_1", "m", &collect(ReplyShape::default(), events))).unwrap();
    assert_eq!(m["content"], json!([{"type": "tool_use", "id": "toolu_x", "name": "f", "input": {}}]));
    assert_eq!(m["stop_reason"], "max_tokens");
    // No text and no call: one empty text block, as before.
    let m = serde_json::to_value(message(
        "msg_1",
        "m",
        &collect(ReplyShape::default(), vec![done(0, FinishReason::Stop, 0)]),
    ))
    .unwrap();
    assert_eq!(m["content"], json!([{"type": "text", "text": ""}]));
}

#[test]
fn n_choices_interleave_and_usage_counts_the_prompt_once() {
    let shape = ReplyShape { n: 2, ..ReplyShape::default() };
    let events = vec![
        Event::Started { prompt_tokens: 5, cached_tokens: 0 },
        text(1, "B"),
        text(0, "A"),
        text(1, "b"),
        done(1, FinishReason::Length, 2),
        text(0, "a"),
        // Ignored: choice 1 is done, choice 2 does not exist.
        text(1, "late"),
        text(2, "nobody"),
        done(0, FinishReason::Stop, 3),
    ];
    let mut c = Collected::new(shape);
    for ev in events {
        c.push(ev);
    }
    assert!(c.is_finished());
    let v = serde_json::to_value(chat_completion("c", "m", 1, &c)).unwrap();
    assert_eq!(
        v["choices"],
        json!([
            {"index": 0, "message": {"role": "assistant", "content": "Aa"}, "finish_reason": "stop", "logprobs": null},
            {"index": 1, "message": {"role": "assistant", "content": "Bb"}, "finish_reason": "length", "logprobs": null}
        ])
    );
    assert_eq!(
        v["usage"],
        json!({"prompt_tokens": 5, "completion_tokens": 5, "total_tokens": 10, "prompt_tokens_details": {"cached_tokens": 0}})
    );
    let v = serde_json::to_value(completion("c", "m", 1, &c)).unwrap();
    assert_eq!(
        v["choices"],
        json!([
            {"index": 0, "text": "Aa", "finish_reason": "stop", "logprobs": null},
            {"index": 1, "text": "Bb", "finish_reason": "length", "logprobs": null}
        ])
    );
}

#[test]
fn a_choice_is_not_finished_until_every_choice_is() {
    let mut c = Collected::new(ReplyShape { n: 2, ..ReplyShape::default() });
    c.push(done(0, FinishReason::Stop, 1));
    assert!(!c.is_finished());
    c.push(done(0, FinishReason::Stop, 1));
    assert_eq!(c.usage.completion_tokens, 1, "a second Done of the same choice is ignored");
    c.push(done(1, FinishReason::Stop, 1));
    assert!(c.is_finished());
}

pub(crate) fn lp(token: &str, logprob: f32, top: &[(&str, f32)]) -> TokenLogprob {
    TokenLogprob {
        token: token.into(),
        bytes: token.as_bytes().to_vec(),
        logprob,
        top: top
            .iter()
            .map(|(t, l)| TopLogprob { token: (*t).into(), bytes: t.as_bytes().to_vec(), logprob: *l })
            .collect(),
    }
}

#[test]
fn logprobs_render_in_both_openai_shapes() {
    let shape = ReplyShape { logprobs: true, ..ReplyShape::default() };
    let events = vec![
        Event::Text {
            choice: 0,
            text: "Hé".into(),
            logprobs: vec![lp("H", -0.5, &[("H", -0.5), ("J", -1.5)]), lp("é", -0.25, &[("e", -2.0)])],
        },
        Event::Text { choice: 0, text: "llo".into(), logprobs: vec![lp("llo", -0.125, &[])] },
        done(0, FinishReason::Stop, 3),
    ];
    let c = collect(shape.clone(), events);
    let v = serde_json::to_value(chat_completion("c", "m", 1, &c)).unwrap();
    assert_eq!(
        v["choices"][0]["logprobs"],
        json!({
            "content": [
                {"token": "H", "logprob": -0.5, "bytes": [72],
                 "top_logprobs": [{"token": "H", "logprob": -0.5, "bytes": [72]},
                                  {"token": "J", "logprob": -1.5, "bytes": [74]}]},
                {"token": "é", "logprob": -0.25, "bytes": [195, 169],
                 "top_logprobs": [{"token": "e", "logprob": -2.0, "bytes": [101]}]},
                {"token": "llo", "logprob": -0.125, "bytes": [108, 108, 111], "top_logprobs": []}
            ],
            "refusal": null
        })
    );
    let v = serde_json::to_value(completion("c", "m", 1, &c)).unwrap();
    assert_eq!(
        v["choices"][0]["logprobs"],
        json!({
            "tokens": ["H", "é", "llo"],
            "token_logprobs": [-0.5, -0.25, -0.125],
            // The sampled token is always among the alternatives.
            "top_logprobs": [{"H": -0.5, "J": -1.5}, {"e": -2.0, "é": -0.25}, {"llo": -0.125}],
            // In characters: "é" is two bytes but one character.
            "text_offset": [0, 1, 2]
        })
    );
    // Asked, but no tokens: an empty list rather than null.
    let c = collect(shape, vec![done(0, FinishReason::Stop, 0)]);
    let v = serde_json::to_value(chat_completion("c", "m", 1, &c)).unwrap();
    assert_eq!(v["choices"][0]["logprobs"], json!({"content": [], "refusal": null}));
}
