//! Any sequence of engine events (text in pieces, done, errors, in any order, with any counts)
//! through the three streaming translators and the non-streaming collector: nothing may panic and
//! every SSE frame carries valid JSON (or the literal [DONE]).
#![no_main]

use cortex_proto::generate::{ErrorKind, Event, FinishReason, GenerateError, Timings, Usage};
use cortex_proto::translate::{chat_completion, completion, message, Collected};
use cortex_proto::translate::{AnthropicStream, OpenAiChatStream, OpenAiCompletionStream};
use libfuzzer_sys::fuzz_target;

fn events(data: &[u8]) -> Vec<Event> {
    let mut out = Vec::new();
    let mut rest = data;
    while let [op, len, tail @ ..] = rest {
        let n = (*len as usize).min(tail.len());
        let (bytes, next) = tail.split_at(n);
        let text = String::from_utf8_lossy(bytes).into_owned();
        let count = u32::from_le_bytes([*len, *op, n as u8, 0]).wrapping_mul(0x0101_0101);
        out.push(match op % 6 {
            0 => Event::Started { prompt_tokens: count },
            1 | 2 => Event::text(text),
            3 => Event::Done {
                choice: 0,
                finish: match len % 3 {
                    0 => FinishReason::Stop,
                    1 => FinishReason::Length,
                    _ => FinishReason::StopSequence(text),
                },
                usage: Usage { prompt_tokens: count, completion_tokens: u32::MAX - count / 2 },
                timings: Timings { ttft_ms: f64::from(count), ..Timings::default() },
            },
            4 => Event::Error { error: GenerateError::new(ErrorKind::Unavailable, text) },
            _ => Event::Error { error: GenerateError::new(ErrorKind::InvalidRequest, text) },
        });
        rest = next;
    }
    out
}

fuzz_target!(|data: &[u8]| {
    let evs = events(data);
    let mut chat = OpenAiChatStream::new("id".into(), "m".into(), 0, data.first().is_some_and(|b| b & 1 == 1));
    let mut comp = OpenAiCompletionStream::new("id".into(), "m".into(), 0, true);
    let mut anth = AnthropicStream::new("id".into(), "m".into());
    let mut collected = Collected::default();
    for ev in &evs {
        for frame in chat.on_event(ev).into_iter().chain(comp.on_event(ev)).chain(anth.on_event(ev)) {
            let sse = frame.to_sse_string();
            for line in sse.lines() {
                if let Some(d) = line.strip_prefix("data: ") {
                    assert!(d == "[DONE]" || serde_json::from_str::<serde_json::Value>(d).is_ok(), "{d}");
                }
            }
        }
        collected.push(ev.clone());
    }
    let _ = serde_json::to_string(&chat_completion("id", "m", 0, &collected));
    let _ = serde_json::to_string(&completion("id", "m", 0, &collected));
    let _ = serde_json::to_string(&message("id", "m", &collected));
});
