//! An Anthropic request body (messages and count_tokens): parse and translate; nothing may
//! panic, a translated request round-trips through a mesh frame, and it is something the engine
//! can do (tools checked, every tool result answering an earlier call). Any JSON value is also
//! tried as the `tools`, `tool_choice` and `messages` of a minimal request, so the fuzzer
//! reaches the tool translation without rediscovering the envelope.
#![no_main]

use cortex_proto::anthropic::{CountTokensRequest, MessagesRequest};
use cortex_proto::frame::{decode, encode, Message};
use cortex_proto::generate::{GenerateRequest, Prompt, Role};
use cortex_proto::tools::check_tools;
use cortex_proto::translate::{count_tokens_request, messages_request};
use libfuzzer_sys::fuzz_target;
use serde_json::{json, Value};

const SLOTS: [&str; 3] = ["tools", "tool_choice", "messages"];

fn check(request: GenerateRequest) {
    assert_eq!(request.n, 1);
    assert_eq!(request.params.logprobs, None);
    assert_eq!(check_tools(&request.tools, &request.tool_choice), Ok(()));
    if let Prompt::Chat(messages) = &request.prompt {
        for (i, m) in messages.iter().enumerate() {
            if m.role == Role::Tool {
                let id = m.tool_call_id.as_ref().expect("a tool result names its call");
                let earlier = messages[..i].iter().flat_map(|p| &p.tool_calls);
                assert!(earlier.clone().any(|c| &c.id == id), "result {id} answers no earlier call");
            }
        }
    }
    let msg = Message::Generate { request: Box::new(request), keep_alive: None };
    let bytes = encode(&msg);
    let (back, _) = decode(&bytes).expect("our own frame decodes").expect("complete");
    assert_eq!(back, msg);
}

fn messages(req: &MessagesRequest) {
    if let Ok(request) = messages_request(req, "id".into(), req.model.clone()) {
        check(request);
    }
}

fuzz_target!(|data: &[u8]| {
    if let Ok(req) = serde_json::from_slice::<MessagesRequest>(data) {
        messages(&req);
    }
    if let Ok(req) = serde_json::from_slice::<CountTokensRequest>(data) {
        if let Ok(request) = count_tokens_request(&req, "id".into(), req.model.clone()) {
            check(request);
        }
    }
    if let Ok(value) = serde_json::from_slice::<Value>(data) {
        let slot = SLOTS[data.len() % SLOTS.len()];
        let mut body = json!({"model": "m", "max_tokens": 16, "messages": [{"role": "user", "content": "x"}],
                              "tools": [{"name": "f", "input_schema": {"type": "object"}}]});
        body[slot] = value;
        if let Ok(req) = serde_json::from_value::<MessagesRequest>(body) {
            messages(&req);
        }
    }
});
