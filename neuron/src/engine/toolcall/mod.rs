//! Tool calls in a model's own words. A model whose chat template renders tools writes calls in
//! its family's format (Hermes / Qwen `<tool_call>`, Llama 3 JSON, Mistral `[TOOL_CALLS]`); a
//! model whose template does not (SmolLM2, Gemma 3 270M) gets cortex's generic format: the
//! tools described in the system prompt and the answer held by the grammar to one JSON envelope,
//! `{"tool_calls": [{"name": …, "arguments": {…}}, …]}` or `{"text": "…"}` (llama.cpp's generic
//! handler does the same, its answer keyed `response`).
//!
//! Each format's [`Parser`] reads the generated text as it streams and turns it into neutral
//! [`Piece`]s: text, the start of a call, its arguments' JSON in fragments. Pushing the same text
//! in pieces of any size gives the same calls.

mod formats;
pub mod prompt;
mod scan;
#[cfg(test)]
mod tests;

pub use formats::{Generic, Hermes, Llama3, Mistral};

/// A model family's way of writing tool calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// cortex's JSON envelope, for templates that do not render tools.
    Generic,
    /// `<tool_call>{"name": …, "arguments": …}</tool_call>` (Hermes, Qwen 2.5 and 3).
    Hermes,
    /// `{"name": …, "parameters": …}`, optionally after `<|python_tag|>` (Llama 3.1+).
    Llama3,
    /// `[TOOL_CALLS][{"name": …, "arguments": …}, …]` or `[TOOL_CALLS]name[ARGS]{…}`.
    Mistral,
}

impl Format {
    /// The format a chat template's source implies; `Generic` when it does not render tools.
    pub fn detect(template: Option<&str>) -> Self {
        let Some(t) = template else { return Format::Generic };
        if !t.contains("tools") {
            return Format::Generic;
        }
        if t.contains("<tool_call>") {
            Format::Hermes
        } else if t.contains("[TOOL_CALLS]") {
            Format::Mistral
        } else if t.contains("<|python_tag|>") || (t.contains("<|start_header_id|>") && t.contains("parameters")) {
            Format::Llama3
        } else {
            Format::Generic
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Format::Generic => "generic",
            Format::Hermes => "hermes",
            Format::Llama3 => "llama3",
            Format::Mistral => "mistral",
        }
    }

    /// A parser for one answer in this format.
    pub fn parser(self) -> Box<dyn Parser> {
        match self {
            Format::Generic => Box::new(Generic::default()),
            Format::Hermes => Box::new(Hermes::default()),
            Format::Llama3 => Box::new(Llama3::default()),
            Format::Mistral => Box::new(Mistral::default()),
        }
    }
}

/// A piece of an answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Piece {
    Text(String),
    /// A call to this tool begins; calls are numbered in the order they begin.
    Call(String),
    /// More of the current call's arguments (JSON text).
    Args(String),
}

/// Reads one answer as it streams.
pub trait Parser: Send {
    /// The pieces `text` completes. `Err`: the output cannot be read as this format.
    fn push(&mut self, text: &str) -> Result<Vec<Piece>, String>;
    /// The answer ended: what was held back, or `Err` for a call left unfinished.
    fn finish(&mut self) -> Result<Vec<Piece>, String>;
}

/// Appends `p`, merging it into the last piece when both are text or both are arguments.
fn push_piece(out: &mut Vec<Piece>, p: Piece) {
    match (out.last_mut(), p) {
        (_, Piece::Text(t)) if t.is_empty() => {}
        (_, Piece::Args(a)) if a.is_empty() => {}
        (Some(Piece::Text(a)), Piece::Text(b)) => a.push_str(&b),
        (Some(Piece::Args(a)), Piece::Args(b)) => a.push_str(&b),
        (_, p) => out.push(p),
    }
}

/// How much of the end of `text` to hold back: the longest suffix that is a proper prefix of
/// `marker` (the marker may be starting), and the whitespace before it (dropped if a marker
/// follows, so that text reads the same however it was cut).
fn held_back(text: &str, marker: &str) -> usize {
    let partial = (1..marker.len().min(text.len() + 1))
        .rev()
        .find(|&n| text.is_char_boundary(text.len() - n) && marker.starts_with(&text[text.len() - n..]))
        .unwrap_or(0);
    let before = &text[..text.len() - partial];
    partial + before.len() - before.trim_end().len()
}
