//! Any model output through every tool-call format's parser, whole and cut into pieces of a size
//! the input picks: nothing may panic, and when the whole text reads as calls, the pieces read
//! the same. The rest of the input, as JSON, goes through the schema bounds the grammars apply.
#![no_main]

use cortex_neuron::engine::grammar::bounded;
use cortex_neuron::engine::toolcall::{Format, Piece};
use libfuzzer_sys::fuzz_target;

const FORMATS: [Format; 4] = [Format::Generic, Format::Hermes, Format::Llama3, Format::Mistral];

/// Text, calls and arguments, folded: (text, [(name, arguments)]).
fn read(format: Format, text: &str, size: usize) -> Result<(String, Vec<(String, String)>), String> {
    let mut parser = format.parser();
    let mut pieces = Vec::new();
    let mut rest = text;
    while !rest.is_empty() {
        let mut cut = size.clamp(1, rest.len());
        while !rest.is_char_boundary(cut) {
            cut += 1;
        }
        pieces.extend(parser.push(&rest[..cut])?);
        rest = &rest[cut..];
    }
    pieces.extend(parser.finish()?);
    let (mut out, mut calls) = (String::new(), Vec::<(String, String)>::new());
    for p in pieces {
        match p {
            Piece::Text(t) => out.push_str(&t),
            Piece::Call(n) => calls.push((n, String::new())),
            Piece::Args(a) => calls.last_mut().ok_or("arguments before a call")?.1.push_str(&a),
        }
    }
    Ok((out, calls))
}

fuzz_target!(|data: &[u8]| {
    let Some((&size, rest)) = data.split_first() else { return };
    let text = String::from_utf8_lossy(rest);
    for format in FORMATS {
        if let Ok(whole) = read(format, &text, usize::MAX) {
            // A cut may make a lone text look like a marker's start, never different calls.
            if let Ok(split) = read(format, &text, usize::from(size % 16) + 1) {
                assert_eq!(split.1, whole.1, "{format:?}");
            }
        }
    }
    if let Ok(schema) = serde_json::from_slice::<serde_json::Value>(rest) {
        let _ = bounded(&schema);
    }
});
