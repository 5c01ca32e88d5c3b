//! Each token's bytes, for the grammar's trie and for log-probability reports: read from a GGUF
//! file's vocabulary (byte-level BPE through GPT-2's byte alphabet, SentencePiece with `▁` as a
//! space and `<0xNN>` byte tokens) or from a repository's tokenizer.json (llguidance's reader).

use candle_core::quantized::gguf_file::{Content, Value as Meta};

use super::Vocab;
use crate::engine::EngineError;

/// llama.cpp's token types.
const UNKNOWN: u32 = 2;
const CONTROL: u32 = 3;
const USER_DEFINED: u32 = 4;
const UNUSED: u32 = 5;
const BYTE: u32 = 6;

/// GPT-2's byte alphabet, printable character → byte.
fn gpt2_bytes() -> std::collections::HashMap<char, u8> {
    crate::testutil::byte_level_alphabet().into_iter().enumerate().map(|(b, c)| (c, b as u8)).collect()
}

fn err(msg: String) -> EngineError {
    EngineError::Tokenizer(msg)
}

/// The vocabulary of a GGUF file; `eos` are every id that ends generation.
pub fn from_gguf(ct: &Content, eos: &[u32], bos: Option<u32>) -> Result<Vocab, EngineError> {
    let tokens = match ct.metadata.get("tokenizer.ggml.tokens") {
        Some(Meta::Array(a)) => a,
        _ => return Err(err("GGUF has no tokenizer.ggml.tokens".into())),
    };
    let types: Vec<u32> = match ct.metadata.get("tokenizer.ggml.token_type") {
        Some(Meta::Array(a)) => a.iter().map(|v| v.to_i32().map(|t| t as u32).unwrap_or(1)).collect(),
        _ => vec![1; tokens.len()],
    };
    let model = crate::engine::gguf_meta::string(ct, "tokenizer.ggml.model").unwrap_or_default();
    let alphabet = gpt2_bytes();
    let mut out = Vec::with_capacity(tokens.len());
    for (i, t) in tokens.iter().enumerate() {
        let s = t.to_string().map_err(|e| err(format!("token {i}: {e}")))?;
        let kind = types.get(i).copied().unwrap_or(1);
        let entry = match kind {
            UNKNOWN | CONTROL | UNUSED => (s.as_bytes().to_vec(), true),
            USER_DEFINED => (s.as_bytes().to_vec(), false),
            BYTE => {
                let hex = s.strip_prefix("<0x").and_then(|h| h.strip_suffix('>')).unwrap_or_default();
                let b = u8::from_str_radix(hex, 16).map_err(|_| err(format!("token {i} `{s}` is not a byte token")))?;
                (vec![b], false)
            }
            _ if model == "gpt2" => {
                // A character outside the alphabet (a malformed file) keeps its UTF-8 bytes.
                let mut bytes = Vec::with_capacity(s.len());
                for c in s.chars() {
                    match alphabet.get(&c) {
                        Some(&b) => bytes.push(b),
                        None => bytes.extend_from_slice(c.to_string().as_bytes()),
                    }
                }
                (bytes, false)
            }
            _ => (s.replace('\u{2581}', " ").into_bytes(), false),
        };
        out.push(entry);
    }
    Ok(Vocab::new(out, eos.to_vec(), bos))
}

/// The vocabulary of a tokenizer.json (added tokens marked special where it says so).
pub fn from_tokenizer_json(json: &serde_json::Value, eos: &[u32], bos: Option<u32>) -> Result<Vocab, EngineError> {
    let bytes = llguidance::token_bytes_from_tokenizer_json(json).map_err(|e| err(format!("tokenizer.json: {e}")))?;
    let marker = llguidance::toktrie::TokTrie::SPECIAL_TOKEN_MARKER;
    let tokens = bytes
        .into_iter()
        .map(|b| match b.split_first() {
            Some((&m, rest)) if m == marker => (rest.to_vec(), true),
            _ => (b, false),
        })
        .collect();
    Ok(Vocab::new(tokens, eos.to_vec(), bos))
}
