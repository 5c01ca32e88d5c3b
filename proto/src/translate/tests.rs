use serde_json::{json, Value};

use super::*;
use crate::anthropic::CountTokensRequest;

fn chat(body: Value) -> Result<GenerateRequest, GenerateError> {
    let req: ChatCompletionRequest = serde_json::from_value(body).unwrap();
    chat_request(&req, "chatcmpl-1".into(), "smollm2-135m".into())
}

fn anth(body: Value) -> Result<GenerateRequest, GenerateError> {
    let req: MessagesRequest = serde_json::from_value(body).unwrap();
    messages_request(&req, "msg_1".into(), "smollm2-135m".into())
}

fn invalid_message(r: Result<GenerateRequest, GenerateError>) -> String {
    let err = r.unwrap_err();
    assert_eq!(err.kind, ErrorKind::InvalidRequest, "{err:?}");
    err.message
}

fn msg(role: Role, content: &str) -> ChatMessage {
    ChatMessage::text(role, content)
}

#[test]
fn chat_request_maps_roles_parts_and_params() {
    let r = chat(json!({
        "model": "helexa/small",
        "messages": [
            {"role": "developer", "content": "Be brief."},
            {"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]},
            {"role": "assistant", "content": null},
            {"role": "tool", "content": "42"}
        ],
        "max_tokens": 10, "max_completion_tokens": 20, "temperature": 0.7, "top_p": 0.9,
        "top_k": 40, "seed": 3, "stop": ["", "END"], "frequency_penalty": 0.5,
        "repetition_penalty": 1.1, "tools": []
    }))
    .unwrap();
    assert_eq!(r.id, "chatcmpl-1");
    assert_eq!(r.model, "smollm2-135m");
    assert_eq!(
        r.prompt,
        Prompt::Chat(vec![
            msg(Role::System, "Be brief."),
            msg(Role::User, "a\nb"),
            msg(Role::Assistant, ""),
            msg(Role::Tool, "42"),
        ])
    );
    let p = r.params;
    assert_eq!(p.max_tokens, Some(20), "max_completion_tokens wins");
    assert_eq!((p.temperature, p.top_p, p.top_k, p.seed), (Some(0.7), Some(0.9), Some(40), Some(3)));
    assert_eq!(p.stop, vec!["END"], "empty stop strings are dropped");
    assert_eq!(p.frequency_penalty, Some(0.5));
    assert_eq!(p.presence_penalty, None);
    assert_eq!(p.repetition_penalty, Some(1.1));
}

#[test]
fn chat_request_defaults_leave_engine_defaults() {
    let r = chat(json!({"model": "m", "messages": [{"role": "user", "content": "hi"}],
                        "stop": "\n", "top_k": -1}))
    .unwrap();
    assert_eq!(r.params, SamplingParams { stop: vec!["\n".into()], ..Default::default() });
}

#[test]
fn chat_request_refuses_bad_input() {
    let user = json!([{"role": "user", "content": "hi"}]);
    assert_eq!(invalid_message(chat(json!({"model": "m", "messages": []}))), "messages must not be empty");
    let m = invalid_message(chat(json!({"model": "m", "messages": [
        {"role": "user", "content": "hi"}, {"role": "function", "content": "x"}]})));
    assert!(m.contains("messages[1]") && m.contains("'function'"), "{m}");
    let m = invalid_message(chat(json!({"model": "m", "messages": [{"role": "user", "content": [
        {"type": "text", "text": "what is this?"},
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,AA"}}]}]})));
    assert!(m.contains("only text content is supported") && m.contains("image_url"), "{m}");
    for bad in [0, -5] {
        assert_eq!(
            invalid_message(chat(json!({"model": "m", "messages": user, "max_tokens": bad}))),
            "max_tokens must be at least 1"
        );
    }
    let m = invalid_message(chat(json!({"model": "m", "messages": user,
                                        "max_completion_tokens": 0, "max_tokens": 5})));
    assert_eq!(m, "max_tokens must be at least 1");
    assert!(invalid_message(chat(json!({"model": "m", "messages": user, "n": 2}))).contains("n must be 1"));
    let m = invalid_message(chat(json!({"model": "m", "messages": user, "temperature": 2.5})));
    assert!(m.starts_with("temperature must be between 0 and 2"), "{m}");
    for top_p in [0.0, 1.5] {
        let m = invalid_message(chat(json!({"model": "m", "messages": user, "top_p": top_p})));
        assert!(m.starts_with("top_p"), "{m}");
    }
    let m = invalid_message(chat(json!({"model": "m", "messages": user, "presence_penalty": -3})));
    assert!(m.starts_with("presence_penalty"), "{m}");
    let m = invalid_message(chat(json!({"model": "m", "messages": user, "repetition_penalty": 0})));
    assert!(m.starts_with("repetition_penalty"), "{m}");
    let stops: Vec<String> = (0..17).map(|i| format!("s{i}")).collect();
    let m = invalid_message(chat(json!({"model": "m", "messages": user, "stop": stops})));
    assert!(m.contains("at most 16"), "{m}");
}

#[test]
fn chat_request_accepts_the_range_edges() {
    let r = chat(json!({"model": "m", "messages": [{"role": "user", "content": "hi"}],
                        "temperature": 2.0, "top_p": 1.0, "max_tokens": 1, "n": 1}))
    .unwrap();
    assert_eq!(r.params.temperature, Some(2.0));
    assert_eq!(r.params.max_tokens, Some(1));
}

#[test]
fn completion_request_takes_one_prompt() {
    let req: CompletionRequest = serde_json::from_value(json!({
        "model": "m", "prompt": ["Once upon"], "max_tokens": 7, "echo": true, "best_of": 1
    }))
    .unwrap();
    let r = completion_request(&req, "cmpl-1".into(), "smollm2".into()).unwrap();
    assert_eq!(r.prompt, Prompt::Text("Once upon".into()));
    assert_eq!(r.params.max_tokens, Some(7));
    let req: CompletionRequest = serde_json::from_value(json!({"model": "m", "prompt": ["a", "b"]})).unwrap();
    let err = completion_request(&req, "c".into(), "m".into()).unwrap_err();
    assert_eq!(err.kind, ErrorKind::InvalidRequest);
    assert!(err.message.contains("exactly one"), "{}", err.message);
    let req: CompletionRequest = serde_json::from_value(json!({"model": "m", "prompt": "x", "n": 3})).unwrap();
    assert!(completion_request(&req, "c".into(), "m".into()).is_err());
}

#[test]
fn messages_request_puts_system_first_and_flattens_text() {
    let r = anth(json!({
        "model": "claude-3-5-haiku-latest", "max_tokens": 64,
        "system": [{"type": "text", "text": "One."}, {"type": "text", "text": "Two.", "cache_control": {"type": "ephemeral"}}],
        "messages": [
            {"role": "user", "content": "Hello"},
            {"role": "assistant", "content": [{"type": "text", "text": "Hi"}]},
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t", "content": [{"type": "text", "text": "42"}]}]}
        ],
        "stop_sequences": ["STOP"], "temperature": 1.0, "top_k": 10
    }))
    .unwrap();
    assert_eq!(
        r.prompt,
        Prompt::Chat(vec![
            msg(Role::System, "One.\nTwo."),
            msg(Role::User, "Hello"),
            msg(Role::Assistant, "Hi"),
            msg(Role::User, "42"),
        ])
    );
    assert_eq!(r.params.max_tokens, Some(64));
    assert_eq!(r.params.stop, vec!["STOP"]);
    assert_eq!(r.params.temperature, Some(1.0));
    assert_eq!(r.params.top_k, Some(10));
}

#[test]
fn messages_request_refuses_bad_input() {
    let user = json!([{"role": "user", "content": "hi"}]);
    assert_eq!(
        invalid_message(anth(json!({"model": "m", "max_tokens": 5, "messages": []}))),
        "messages must not be empty"
    );
    let m = invalid_message(anth(json!({"model": "m", "max_tokens": 5,
                                        "messages": [{"role": "system", "content": "x"}]})));
    assert!(m.contains("messages[0]") && m.contains("'system'"), "{m}");
    assert_eq!(
        invalid_message(anth(json!({"model": "m", "max_tokens": 0, "messages": user}))),
        "max_tokens must be at least 1"
    );
    let m = invalid_message(anth(json!({"model": "m", "max_tokens": 5, "messages": user,
                                        "temperature": 1.5})));
    assert!(m.starts_with("temperature must be between 0 and 1"), "{m}");
    let m = invalid_message(anth(json!({"model": "m", "max_tokens": 5, "messages": [
        {"role": "user", "content": [{"type": "image", "source": {}}]}]})));
    assert!(m.contains("only text content is supported") && m.contains("'image'"), "{m}");
    let m = invalid_message(anth(json!({"model": "m", "max_tokens": 5, "messages": [
        {"role": "assistant", "content": [{"type": "tool_use", "id": "t", "name": "f", "input": {}}]}]})));
    assert!(m.contains("'tool_use'"), "{m}");
}

#[test]
fn count_tokens_prompt_includes_system() {
    let req: CountTokensRequest = serde_json::from_value(json!({
        "model": "m", "system": "S", "messages": [{"role": "user", "content": "U"}]
    }))
    .unwrap();
    assert_eq!(count_tokens_prompt(&req).unwrap(), Prompt::Chat(vec![msg(Role::System, "S"), msg(Role::User, "U")]));
    let empty = CountTokensRequest { model: "m".into(), ..Default::default() };
    assert!(count_tokens_prompt(&empty).is_err());
}

fn collected(finish: FinishReason) -> Collected {
    let mut c = Collected::default();
    c.push(Event::Started { prompt_tokens: 5 });
    c.push(Event::text("Hel"));
    c.push(Event::text("lo"));
    let timings = Timings { ttft_ms: 12.5, prefill_tok_s: 400.0, decode_tok_s: 50.0, queue_ms: 1.0 };
    let usage = Usage { prompt_tokens: 5, completion_tokens: 2 };
    c.push(Event::Done { choice: 0, finish, usage, timings });
    c
}

#[test]
fn collected_builds_chat_completion() {
    let c = collected(FinishReason::Length);
    assert_eq!(c.text, "Hello");
    let v = serde_json::to_value(chat_completion("chatcmpl-1", "helexa/small", 1_700_000_000, &c)).unwrap();
    assert_eq!(
        v,
        json!({
            "id": "chatcmpl-1", "object": "chat.completion", "created": 1_700_000_000u64,
            "model": "helexa/small",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": "Hello"},
                         "finish_reason": "length", "logprobs": null}],
            "usage": {"prompt_tokens": 5, "completion_tokens": 2, "total_tokens": 7},
            "timings": {"ttft_ms": 12.5, "prefill_tok_s": 400.0, "decode_tok_s": 50.0, "queue_ms": 1.0}
        })
    );
}

#[test]
fn collected_builds_completion_and_message() {
    let c = collected(FinishReason::StopSequence("END".into()));
    let comp = completion("cmpl-1", "m", 9, &c);
    assert_eq!(comp.object, "text_completion");
    assert_eq!(comp.choices[0].text, "Hello");
    assert_eq!(comp.choices[0].finish_reason.as_deref(), Some("stop"));
    assert_eq!(comp.usage.total_tokens, 7);
    let m = serde_json::to_value(message("msg_1", "claude-x", &c)).unwrap();
    assert_eq!(
        m,
        json!({
            "id": "msg_1", "type": "message", "role": "assistant",
            "content": [{"type": "text", "text": "Hello"}], "model": "claude-x",
            "stop_reason": "stop_sequence", "stop_sequence": "END",
            "usage": {"input_tokens": 5, "output_tokens": 2}
        })
    );
}

#[test]
fn collected_keeps_the_error() {
    let mut c = Collected::default();
    c.push(Event::Started { prompt_tokens: 3 });
    c.push(Event::Error { error: GenerateError::new(ErrorKind::Internal, "engine died") });
    assert_eq!(c.error.as_ref().map(|e| e.kind), Some(ErrorKind::Internal));
    assert_eq!(c.finish, None);
    assert_eq!(c.usage.prompt_tokens, 3);
    let v = serde_json::to_value(chat_completion("c", "m", 1, &c)).unwrap();
    assert_eq!(v["choices"][0]["finish_reason"], Value::Null);
    assert!(v.get("timings").is_none());
}
