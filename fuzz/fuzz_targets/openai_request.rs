//! An OpenAI request body as the gateway receives it: parse, translate to the neutral request,
//! and send that over the mesh (encode, decode) — nothing may panic, the frame round-trips, and
//! whatever translates is something the engine can do (tools checked, choices and logprobs in
//! range, every tool result answering an earlier call). Besides whole bodies, any JSON value is
//! also tried as the `tools`, `tool_choice`, `messages` and `response_format` of a minimal chat
//! request, so the fuzzer reaches the tool translation without rediscovering the envelope.
#![no_main]

use cortex_proto::frame::{decode, encode, Message};
use cortex_proto::generate::{GenerateRequest, Prompt, Role, MAX_CHOICES, MAX_TOP_LOGPROBS};
use cortex_proto::openai::{ChatCompletionRequest, CompletionRequest};
use cortex_proto::tools::check_tools;
use cortex_proto::translate::{chat_request, completion_request};
use libfuzzer_sys::fuzz_target;
use serde_json::{json, Value};

const SLOTS: [&str; 4] = ["tools", "tool_choice", "messages", "response_format"];

fn check(request: GenerateRequest) {
    assert!((1..=MAX_CHOICES).contains(&request.n));
    assert!(request.params.logprobs.is_none_or(|k| k <= MAX_TOP_LOGPROBS));
    assert_eq!(check_tools(&request.tools, &request.tool_choice), Ok(()));
    if let Prompt::Chat(messages) = &request.prompt {
        for (i, m) in messages.iter().enumerate() {
            if let (Role::Tool, Some(id)) = (m.role, &m.tool_call_id) {
                let earlier = messages[..i].iter().flat_map(|p| &p.tool_calls);
                assert!(earlier.clone().any(|c| &c.id == id), "result {id} answers no earlier call");
            }
        }
    }
    let msg = Message::Generate { request: Box::new(request), keep_alive: None };
    let bytes = encode(&msg);
    let (back, used) = decode(&bytes).expect("our own frame decodes").expect("complete");
    assert_eq!(used, bytes.len());
    assert_eq!(back, msg);
}

fn chat(req: &ChatCompletionRequest) {
    if let Ok(request) = chat_request(req, "id".into(), req.model.clone()) {
        check(request);
    }
}

fuzz_target!(|data: &[u8]| {
    if let Ok(req) = serde_json::from_slice::<ChatCompletionRequest>(data) {
        chat(&req);
    } else if let Ok(req) = serde_json::from_slice::<CompletionRequest>(data) {
        if let Ok(request) = completion_request(&req, "id".into(), req.model.clone()) {
            check(request);
        }
    }
    if let Ok(value) = serde_json::from_slice::<Value>(data) {
        let slot = SLOTS[data.len() % SLOTS.len()];
        let mut body = json!({"model": "m", "messages": [{"role": "user", "content": "x"}],
                              "tools": [{"type": "function", "function": {"name": "f"}}]});
        body[slot] = value;
        if let Ok(req) = serde_json::from_value::<ChatCompletionRequest>(body) {
            chat(&req);
        }
    }
});
