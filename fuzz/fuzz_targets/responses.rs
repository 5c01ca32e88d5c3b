//! The Responses dialect, both ways. An odd first byte: the rest is a `/v1/responses` body (or
//! any JSON value tried as its `input`, `tools`, `tool_choice` or `text`) — parsing and
//! translating never panic, and whatever translates has checked tools, a call style, an echo
//! object and a mesh frame that round-trips. An even first byte: the rest is engine events
//! through the `response.*` stream and the non-streaming body — every frame is JSON with the
//! next sequence number, the stream opens with created / in_progress, ends exactly once (a
//! completed, incomplete or failed response, the last frame), sends nothing after, and closes
//! every output item it opened before it ends unless it failed.
#![no_main]

#[path = "events.rs"]
mod events;

use cortex_proto::frame::{decode, encode, Message};
use cortex_proto::responses::{response_body, ResponsesRequest, ResponsesStream};
use cortex_proto::tools::check_tools;
use cortex_proto::translate::{Collected, ReplyShape};
use libfuzzer_sys::fuzz_target;
use serde_json::{json, Value};

const SLOTS: [&str; 4] = ["input", "tools", "tool_choice", "text"];

fn request(req: &ResponsesRequest) {
    let Ok(n) = req.to_neutral("resp_1".into(), "m".into(), Vec::new()) else { return };
    assert_eq!(check_tools(&n.tools, &n.tool_choice), Ok(()));
    // Whatever translated has tools whose calls can be written back.
    let style = req.call_style().expect("a request that translates has a call style");
    for t in &n.tools {
        let _ = style.is_custom(&t.name);
    }
    assert!(req.echo().is_object());
    let msg = Message::Generate { request: Box::new(n), keep_alive: None };
    let bytes = encode(&msg);
    assert_eq!(decode(&bytes).expect("our own frame decodes").map(|(m, _)| m), Some(msg));
}

fn stream(data: &[u8]) {
    let tools = json!([{"type": "custom", "name": "t"}, {"type": "function", "name": "f"}]);
    let style = serde_json::from_value::<ResponsesRequest>(json!({"model": "m", "tools": tools}))
        .ok()
        .and_then(|r| r.call_style().ok())
        .unwrap_or_default();
    let mut s = ResponsesStream::new("resp_1".into(), json!({"model": "m"}), 0, style.clone());
    let mut collected = Collected::new(ReplyShape::default());
    let (mut seq, mut open, mut last) = (0u64, 0i64, None::<String>);
    for ev in events::events(data) {
        let was = s.is_finished();
        let frames = s.on_event(&ev);
        if was {
            assert!(frames.is_empty(), "frames after the end");
        }
        for f in &frames {
            let v: Value = serde_json::from_str(&f.data).expect("every frame is JSON");
            assert_eq!(v["sequence_number"].as_u64(), Some(seq));
            assert_eq!(v["type"].as_str(), f.event.as_deref());
            let kind = v["type"].as_str().unwrap_or_default().to_string();
            match (seq, kind.as_str()) {
                (0, k) => assert_eq!(k, "response.created"),
                (1, k) => assert_eq!(k, "response.in_progress"),
                (_, "response.output_item.added") => open += 1,
                (_, "response.output_item.done") => open -= 1,
                _ => {}
            }
            assert!((0..=1).contains(&open), "items overlap or close twice");
            seq += 1;
            last = Some(kind);
        }
        collected.push(ev);
    }
    if s.is_finished() {
        let kind = last.expect("a finished stream said so");
        assert!(matches!(kind.as_str(), "response.completed" | "response.incomplete" | "response.failed"), "{kind}");
        if kind != "response.failed" {
            assert_eq!(open, 0, "an item left open at the end");
        }
    }
    let _ = serde_json::to_string(&response_body("resp_1", &json!({}), 0, &collected, &style));
}

fuzz_target!(|data: &[u8]| {
    let Some((&first, rest)) = data.split_first() else { return };
    if first % 2 == 0 {
        return stream(rest);
    }
    if let Ok(req) = serde_json::from_slice::<ResponsesRequest>(rest) {
        request(&req);
    }
    if let Ok(value) = serde_json::from_slice::<Value>(rest) {
        let mut body = json!({"model": "m", "input": "x", "tools": [{"type": "function", "name": "f"}]});
        body[SLOTS[rest.len() % SLOTS.len()]] = value;
        if let Ok(req) = serde_json::from_value::<ResponsesRequest>(body) {
            request(&req);
        }
    }
});
