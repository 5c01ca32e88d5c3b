//! Any sequence of engine events (text with or without log-probabilities, tool-call starts and
//! argument fragments, done, errors; for any choice, call index and count, in any order)
//! through the three streaming translators and the non-streaming collector, for a reply shape
//! taken from the first byte (1 to 3 choices, logprobs or not, a free-form tool or not).
//! Nothing may panic; every SSE frame carries valid JSON (or the literal [DONE]); an OpenAI
//! stream sends [DONE] exactly when it reports itself finished, as its last frame, and nothing
//! after; the collector finishes exactly when the OpenAI streams do; Anthropic content blocks
//! open with increasing indexes and every delta and stop is about the open block.
#![no_main]

#[path = "events.rs"]
mod events;

use cortex_proto::translate::{chat_completion, completion, message, Collected, ReplyShape, SseFrame};
use cortex_proto::translate::{AnthropicStream, OpenAiChatStream, OpenAiCompletionStream};
use libfuzzer_sys::fuzz_target;
use serde_json::Value;

fn json_frames(frames: &[SseFrame]) {
    for frame in frames {
        for line in frame.to_sse_string().lines() {
            if let Some(d) = line.strip_prefix("data: ") {
                assert!(d == "[DONE]" || serde_json::from_str::<Value>(d).is_ok(), "{d}");
            }
        }
    }
}

/// An OpenAI stream's frames for one event: [DONE] only as the last frame of the event that
/// finishes the stream.
fn openai_frames(frames: &[SseFrame], was_finished: bool, finished: bool) {
    if was_finished {
        assert!(frames.is_empty());
    }
    for (i, f) in frames.iter().enumerate() {
        let last = i + 1 == frames.len();
        assert_eq!(f.data == "[DONE]", last && finished, "{frames:?}");
    }
}

/// What the Anthropic blocks must respect: each opens at the next index, deltas and stops are
/// about the open one.
#[derive(Default)]
struct Blocks {
    next: u64,
    open: Option<u64>,
}

impl Blocks {
    fn see(&mut self, frames: &[SseFrame]) {
        for f in frames {
            let v: Value = serde_json::from_str(&f.data).expect("json");
            let index = v["index"].as_u64();
            match v["type"].as_str() {
                Some("content_block_start") => {
                    assert_eq!(self.open, None, "a block starts while another is open");
                    assert_eq!(index, Some(self.next));
                    self.open = index;
                    self.next += 1;
                }
                Some("content_block_delta") => assert_eq!(index, self.open),
                Some("content_block_stop") => {
                    assert_eq!(index, self.open);
                    self.open = None;
                }
                Some("message_delta") => assert_eq!(self.open, None, "message_delta with a block open"),
                _ => {}
            }
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&first, rest)) = data.split_first() else { return };
    let shape = ReplyShape {
        n: 1 + u32::from(first % 3),
        logprobs: first & 4 != 0,
        text_tools: if first & 8 != 0 { vec!["t".into()] } else { Vec::new() },
    };
    let evs = events::events(rest);
    let include_usage = first & 16 != 0;
    let mut chat = OpenAiChatStream::new("id".into(), "m".into(), 0, include_usage, shape.clone());
    let mut comp = OpenAiCompletionStream::new("id".into(), "m".into(), 0, !include_usage, shape.clone());
    let mut anth = AnthropicStream::new("id".into(), "m".into());
    let mut collected = Collected::new(shape);
    let mut blocks = Blocks::default();
    for ev in &evs {
        let was = (chat.is_finished(), comp.is_finished(), anth.is_finished());
        let frames = chat.on_event(ev);
        json_frames(&frames);
        openai_frames(&frames, was.0, chat.is_finished());
        let frames = comp.on_event(ev);
        json_frames(&frames);
        openai_frames(&frames, was.1, comp.is_finished());
        let frames = anth.on_event(ev);
        json_frames(&frames);
        if was.2 {
            assert!(frames.is_empty());
        }
        blocks.see(&frames);
        collected.push(ev.clone());
        assert_eq!(collected.is_finished(), chat.is_finished());
        assert_eq!(collected.is_finished(), comp.is_finished());
    }
    let _ = serde_json::to_string(&chat_completion("id", "m", 0, &collected));
    let _ = serde_json::to_string(&completion("id", "m", 0, &collected));
    let _ = serde_json::to_string(&message("id", "m", &collected));
});
