//! Tokenizers built from a GGUF file's own metadata so that token ids match llama.cpp on the same
//! file, or loaded from a repository's tokenizer.json.
//!
//! candle's `TokenizerFromGguf` adds a prefix space in its default byte-level pipeline (so
//! `system` after `<|im_start|>` becomes `Ġsystem`) and rejects SentencePiece (`llama`) vocabularies.
//! llama.cpp never adds a prefix space to byte-level BPE and picks its pre-tokenizer regexes from
//! `tokenizer.ggml.pre`; this module mirrors that choice per pre-tokenizer name.

use std::collections::{HashMap, HashSet};
use std::path::Path;

use candle_core::quantized::gguf_file::Content;
use tokenizers::decoders::byte_fallback::ByteFallback;
use tokenizers::decoders::byte_level::ByteLevel as ByteLevelDecoder;
use tokenizers::decoders::fuse::Fuse;
use tokenizers::decoders::sequence::Sequence as DecoderSequence;
use tokenizers::decoders::strip::Strip;
use tokenizers::models::bpe::{Vocab, BPE};
use tokenizers::normalizers::{unicode::NFC, Prepend, Replace};
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::digits::Digits;
use tokenizers::pre_tokenizers::sequence::Sequence as PreSequence;
use tokenizers::pre_tokenizers::split::{Split, SplitPattern};
use tokenizers::pre_tokenizers::PreTokenizerWrapper;
use tokenizers::{AddedToken, NormalizerWrapper, SplitDelimiterBehavior, Tokenizer};

use super::gguf_meta as meta;
use super::EngineError;

/// llama.cpp's token types (`llama_token_type`).
const TOKEN_TYPE_NORMAL: u64 = 1;
const TOKEN_TYPE_CONTROL: u64 = 3;
const TOKEN_TYPE_USER_DEFINED: u64 = 4;

// Pre-tokenizer regexes, as llama.cpp uses them for each `tokenizer.ggml.pre` value.
const REGEX_LLAMA3: &str = r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
const REGEX_QWEN2: &str = r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

/// A tokenizer plus the special ids generation needs.
#[derive(Clone)]
pub struct TextTokenizer {
    inner: Tokenizer,
    /// Prepended to every encoded prompt when the model asks for it.
    pub bos: Option<u32>,
    add_bos: bool,
    /// Any of these ends generation.
    pub eos: Vec<u32>,
    pub bos_text: String,
    pub eos_text: String,
}

fn tk_err(e: impl std::fmt::Display) -> EngineError {
    EngineError::Tokenizer(e.to_string())
}

fn split(regex: &str) -> Result<PreTokenizerWrapper, EngineError> {
    Ok(Split::new(SplitPattern::Regex(regex.into()), SplitDelimiterBehavior::Isolated, false).map_err(tk_err)?.into())
}

/// The pre-tokenizer for a byte-level BPE vocabulary, chosen by `tokenizer.ggml.pre`.
fn byte_level_pre(pre: &str) -> Result<PreTokenizerWrapper, EngineError> {
    // ByteLevel with use_regex applies the GPT-2 split; with it off, only the byte mapping.
    let plain = || ByteLevel::new(false, false, false);
    Ok(match pre {
        "llama3" | "llama-bpe" | "smaug-bpe" | "lfm2" | "falcon3" | "pixtral" => {
            PreSequence::new(vec![split(REGEX_LLAMA3)?, plain().into()]).into()
        }
        "qwen2" | "qwen35" | "deepseek-r1-qwen" | "stablelm2" | "hunyuan" => {
            PreSequence::new(vec![split(REGEX_QWEN2)?, plain().into()]).into()
        }
        // SmolLM: every digit on its own, then the GPT-2 split.
        "smollm" | "starcoder" | "refact" | "codeshell" => {
            PreSequence::new(vec![Digits::new(true).into(), ByteLevel::new(false, false, true).into()]).into()
        }
        _ => ByteLevel::new(false, false, true).into(),
    })
}

/// SentencePiece vocabularies in GGUF carry scores, not merges. Merges are recovered the way
/// Hugging Face converts them: every split of a token into two vocabulary entries, ranked by the
/// merged token's score.
fn merges_from_scores(tokens: &[String], scores: &[f32], types: &[u64]) -> Vec<(String, String)> {
    let index: HashMap<&str, usize> = tokens.iter().enumerate().map(|(i, t)| (t.as_str(), i)).collect();
    let mut merges: Vec<(f32, usize, usize, String, String)> = Vec::new();
    for (id, tok) in tokens.iter().enumerate() {
        if types.get(id).copied().unwrap_or(TOKEN_TYPE_NORMAL) != TOKEN_TYPE_NORMAL {
            continue;
        }
        for (cut, _) in tok.char_indices().skip(1) {
            let (l, r) = tok.split_at(cut);
            if let (Some(&li), Some(&ri)) = (index.get(l), index.get(r)) {
                merges.push((scores.get(id).copied().unwrap_or(0.0), li, ri, l.into(), r.into()));
            }
        }
    }
    merges.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)).then(a.2.cmp(&b.2)));
    merges.into_iter().map(|m| (m.3, m.4)).collect()
}

impl TextTokenizer {
    pub fn from_gguf(ct: &Content) -> Result<Self, EngineError> {
        let model = meta::string(ct, "tokenizer.ggml.model").unwrap_or_default();
        let tokens = meta::strings(ct, "tokenizer.ggml.tokens")
            .ok_or_else(|| EngineError::Tokenizer("GGUF has no tokenizer.ggml.tokens".into()))?;
        let types = meta::u64s(ct, "tokenizer.ggml.token_type").unwrap_or_default();
        let vocab: Vocab = tokens.iter().enumerate().map(|(i, t)| (t.clone(), i as u32)).collect();
        let mut tokenizer = match model.as_str() {
            "gpt2" => {
                let merges = meta::strings(ct, "tokenizer.ggml.merges")
                    .ok_or_else(|| EngineError::Tokenizer("GGUF has no tokenizer.ggml.merges".into()))?
                    .into_iter()
                    .filter_map(|m| m.split_once(' ').map(|(a, b)| (a.to_string(), b.to_string())))
                    .collect();
                let bpe = BPE::builder().vocab_and_merges(vocab, merges).build().map_err(tk_err)?;
                let mut t = Tokenizer::new(bpe);
                let pre = meta::string(ct, "tokenizer.ggml.pre").unwrap_or_else(|| "default".into());
                if pre == "qwen2" {
                    t.with_normalizer(Some(NFC)).map_err(tk_err)?;
                }
                t.with_pre_tokenizer(Some(byte_level_pre(&pre)?));
                t.with_decoder(Some(ByteLevelDecoder::new(false, false, false)));
                t
            }
            "llama" => {
                let scores = meta::f32s(ct, "tokenizer.ggml.scores").unwrap_or_default();
                let merges = merges_from_scores(&tokens, &scores, &types);
                let unk =
                    meta::u64(ct, "tokenizer.ggml.unknown_token_id").and_then(|i| tokens.get(i as usize).cloned());
                let mut builder = BPE::builder().vocab_and_merges(vocab, merges).byte_fallback(true);
                if let Some(unk) = unk {
                    builder = builder.unk_token(unk);
                }
                let mut t = Tokenizer::new(builder.build().map_err(tk_err)?);
                let prefix = meta::bool(ct, "tokenizer.ggml.add_space_prefix").unwrap_or(true);
                let mut norms: Vec<NormalizerWrapper> = Vec::new();
                if prefix {
                    norms.push(Prepend::new("▁".into()).into());
                }
                norms.push(Replace::new(" ", "▁").map_err(tk_err)?.into());
                t.with_normalizer(Some(tokenizers::normalizers::Sequence::new(norms))).map_err(tk_err)?;
                let mut decoders = vec![
                    Replace::new("▁", " ").map_err(tk_err)?.into(),
                    ByteFallback::new().into(),
                    Fuse::new().into(),
                ];
                if prefix {
                    decoders.push(Strip::new(' ', 1, 0).into());
                }
                t.with_decoder(Some(DecoderSequence::new(decoders)));
                t
            }
            other => return Err(EngineError::Unsupported(format!("GGUF tokenizer model `{other}`"))),
        };
        // llama.cpp parses control and user-defined tokens in the prompt text as single tokens.
        let specials: Vec<AddedToken> = types
            .iter()
            .enumerate()
            .filter(|(_, &t)| t == TOKEN_TYPE_CONTROL || t == TOKEN_TYPE_USER_DEFINED)
            .filter_map(|(i, &t)| {
                let tok = tokens.get(i)?;
                Some(AddedToken::from(tok.clone(), t == TOKEN_TYPE_CONTROL).normalized(false))
            })
            .collect();
        tokenizer.add_special_tokens(specials).map_err(tk_err)?;

        let id = |key: &str| meta::u64(ct, key).map(|v| v as u32);
        let bos = id("tokenizer.ggml.bos_token_id");
        let mut eos: Vec<u32> = id("tokenizer.ggml.eos_token_id").into_iter().collect();
        eos.extend(id("tokenizer.ggml.eot_token_id"));
        // Chat models end turns with their end-of-turn marker even when `eos` names another token.
        for marker in ["<|im_end|>", "<|eot_id|>", "<end_of_turn>", "<|endoftext|>"] {
            if let Some(i) = tokens.iter().position(|t| t == marker) {
                eos.push(i as u32);
            }
        }
        eos.sort_unstable();
        eos.dedup();
        let add_bos = meta::bool(ct, "tokenizer.ggml.add_bos_token").unwrap_or(model == "llama");
        let text = |i: Option<u32>| i.and_then(|i| tokens.get(i as usize).cloned()).unwrap_or_default();
        Ok(Self {
            inner: tokenizer,
            bos,
            add_bos,
            bos_text: text(bos),
            eos_text: text(id("tokenizer.ggml.eos_token_id")),
            eos,
        })
    }

    /// Loads `tokenizer.json` from a repository directory; special ids come from
    /// `tokenizer_config.json` and the model config's `eos_token_id`.
    pub fn from_dir(dir: &Path, config: &serde_json::Value) -> Result<Self, EngineError> {
        let path = dir.join("tokenizer.json");
        let inner =
            Tokenizer::from_file(&path).map_err(|e| EngineError::Tokenizer(format!("{}: {e}", path.display())))?;
        let tc: serde_json::Value = std::fs::read(dir.join("tokenizer_config.json"))
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default();
        let token_text = |key: &str| -> Option<String> {
            match tc.get(key)? {
                serde_json::Value::String(s) => Some(s.clone()),
                v => v.get("content")?.as_str().map(str::to_string),
            }
        };
        let bos_text = token_text("bos_token").unwrap_or_default();
        let eos_text = token_text("eos_token").unwrap_or_default();
        let bos = inner.token_to_id(&bos_text);
        let mut eos: HashSet<u32> = inner.token_to_id(&eos_text).into_iter().collect();
        match config.get("eos_token_id") {
            Some(serde_json::Value::Number(n)) => eos.extend(n.as_u64().map(|v| v as u32)),
            Some(serde_json::Value::Array(a)) => eos.extend(a.iter().filter_map(|v| v.as_u64()).map(|v| v as u32)),
            _ => {}
        }
        let add_bos = tc.get("add_bos_token").and_then(|v| v.as_bool()).unwrap_or(false);
        let mut eos: Vec<u32> = eos.into_iter().collect();
        eos.sort_unstable();
        Ok(Self { inner, bos, add_bos, eos, bos_text, eos_text })
    }

    /// Token ids for `text`, special tokens in the text parsed as such (as llama.cpp's server
    /// does for rendered chat prompts), with BOS prepended when the model wants it.
    pub fn encode(&self, text: &str) -> Result<Vec<u32>, EngineError> {
        let enc = self.inner.encode_fast(text, false).map_err(tk_err)?;
        let mut ids = Vec::with_capacity(enc.len() + 1);
        if self.add_bos {
            if let Some(bos) = self.bos {
                // Templates that already write the BOS text must not get it twice.
                if enc.get_ids().first() != Some(&bos) {
                    ids.push(bos);
                }
            }
        }
        ids.extend_from_slice(enc.get_ids());
        Ok(ids)
    }

    /// Text for `ids`, special tokens left out.
    pub fn decode(&self, ids: &[u32]) -> Result<String, EngineError> {
        self.inner.decode(ids, true).map_err(tk_err)
    }

    /// The underlying Hugging Face tokenizer (e.g. to save it as tokenizer.json).
    pub fn inner(&self) -> &Tokenizer {
        &self.inner
    }

    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }
}
