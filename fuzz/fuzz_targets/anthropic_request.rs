//! An Anthropic request body (messages and count_tokens): parse and translate; nothing may panic
//! and a translated request round-trips through a mesh frame.
#![no_main]

use cortex_proto::anthropic::{CountTokensRequest, MessagesRequest};
use cortex_proto::frame::{decode, encode, Message};
use cortex_proto::translate::{count_tokens_prompt, messages_request};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(req) = serde_json::from_slice::<MessagesRequest>(data) {
        if let Ok(request) = messages_request(&req, "id".into(), req.model.clone()) {
            let msg = Message::Generate { request: Box::new(request), keep_alive: None };
            let bytes = encode(&msg);
            let (back, _) = decode(&bytes).expect("our own frame decodes").expect("complete");
            assert_eq!(back, msg);
        }
    }
    if let Ok(req) = serde_json::from_slice::<CountTokensRequest>(data) {
        let _ = count_tokens_prompt(&req);
    }
});
