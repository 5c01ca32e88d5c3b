//! Engine events from fuzz bytes, shared by the stream targets: each event is an op byte, a
//! length byte and that many bytes of text (text with or without log-probabilities, tool-call
//! starts and argument fragments, done, errors; for choices 0 to 3 and call indexes 0 to 2).

use cortex_proto::generate::{
    ContextOverflow, ErrorKind, Event, FinishReason, GenerateError, Timings, TokenLogprob, TopLogprob, Usage,
};

fn logprobs(bytes: &[u8]) -> Vec<TokenLogprob> {
    let token = |b: &[u8]| (String::from_utf8_lossy(b).into_owned(), b.to_vec());
    bytes
        .chunks(3)
        .map(|c| {
            let (t, raw) = token(&c[..c.len().min(2)]);
            let top = c.iter().map(|&b| {
                let (token, bytes) = token(&[b]);
                TopLogprob { token, bytes, logprob: -f32::from(b) / 7.0 }
            });
            TokenLogprob { token: t, bytes: raw, logprob: -f32::from(c[0]) / 3.0, top: top.collect() }
        })
        .collect()
}

pub fn events(data: &[u8]) -> Vec<Event> {
    let mut out = Vec::new();
    let mut rest = data;
    while let [op, len, tail @ ..] = rest {
        let n = (*len as usize).min(tail.len());
        let (bytes, next) = tail.split_at(n);
        let text = String::from_utf8_lossy(bytes).into_owned();
        let count = u32::from_le_bytes([*len, *op, n as u8, 0]).wrapping_mul(0x0101_0101);
        // Choices 0 to 3 (one more than the largest shape asks for); call indexes 0 to 2.
        let (choice, index) = (u32::from(*len % 4), u32::from(*op >> 6) % 3);
        out.push(match op % 8 {
            0 => Event::Started { prompt_tokens: count, cached_tokens: count / 2 },
            1 => Event::Text { choice, text, logprobs: Vec::new() },
            2 => Event::Text { choice, text, logprobs: logprobs(bytes) },
            3 => Event::Done {
                choice,
                finish: match len % 4 {
                    0 => FinishReason::Stop,
                    1 => FinishReason::Length,
                    2 => FinishReason::ToolCalls,
                    _ => FinishReason::StopSequence(text),
                },
                usage: Usage {
                    prompt_tokens: count,
                    completion_tokens: u32::MAX - count / 2,
                    // Counts from a peer need not add up: more cached than prompted included.
                    cached_tokens: count.wrapping_mul(3),
                    cache_write_tokens: count / 3,
                },
                timings: Timings { ttft_ms: f64::from(count), ..Timings::default() },
            },
            4 => Event::ToolCall { choice, index, id: format!("call_{count:x}"), name: text },
            5 => Event::ToolArgs { choice, index, fragment: text },
            6 => Event::Error { error: GenerateError::new(ErrorKind::Unavailable, text) },
            _ => Event::Error {
                error: GenerateError::context_length(ContextOverflow {
                    prompt: count,
                    max_tokens: u32::MAX - count,
                    context: count / 2,
                }),
            },
        });
        rest = next;
    }
    out
}
