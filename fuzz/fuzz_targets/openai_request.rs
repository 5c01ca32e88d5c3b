//! An OpenAI request body as the gateway receives it: parse, translate to the neutral request,
//! and send that over the mesh (encode, decode) — nothing may panic, and the frame round-trips.
#![no_main]

use cortex_proto::frame::{decode, encode, Message};
use cortex_proto::openai::{ChatCompletionRequest, CompletionRequest};
use cortex_proto::translate::{chat_request, completion_request};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let translated = if let Ok(req) = serde_json::from_slice::<ChatCompletionRequest>(data) {
        Some(chat_request(&req, "id".into(), req.model.clone()))
    } else if let Ok(req) = serde_json::from_slice::<CompletionRequest>(data) {
        Some(completion_request(&req, "id".into(), req.model.clone()))
    } else {
        None
    };
    if let Some(Ok(request)) = translated {
        let msg = Message::Generate { request: Box::new(request), keep_alive: None };
        let bytes = encode(&msg);
        let (back, used) = decode(&bytes).expect("our own frame decodes").expect("complete");
        assert_eq!(used, bytes.len());
        assert_eq!(back, msg);
    }
});
