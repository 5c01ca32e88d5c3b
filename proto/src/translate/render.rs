//! Response pieces both the one-body builders and the stream renderers need: tool calls and
//! log-probabilities in each dialect's shape.

use std::collections::BTreeMap;

use serde_json::{Map, Value};

use super::ReplyShape;
use crate::generate::TokenLogprob;
use crate::openai::{
    ChatLogprobs, CompletionLogprobs, OaiCustomCall, OaiFunctionCall, OaiTokenLogprob, OaiToolCall, OaiTopLogprob,
};
use crate::tools::ToolCall;

/// A call in OpenAI's shape: `custom` with `input` for a free-form tool, else `function` with
/// `arguments`.
pub(super) fn oai_tool_call(shape: &ReplyShape, call: &ToolCall) -> OaiToolCall {
    let (name, text) = (call.name.clone(), call.arguments.clone());
    if shape.is_text_tool(&call.name) {
        let custom = Some(OaiCustomCall { name, input: text });
        OaiToolCall { id: call.id.clone(), kind: "custom".into(), function: None, custom }
    } else {
        let function = Some(OaiFunctionCall { name, arguments: text });
        OaiToolCall { id: call.id.clone(), kind: "function".into(), function, custom: None }
    }
}

/// A `tool_use` block's `input`: the arguments parsed as a JSON object. Arguments that are not
/// one (possible only when generation stopped mid-call, e.g. at `max_tokens`, since the engine
/// constrains calls to their schema) give `{}`: Anthropic's `input` is always an object, and
/// an empty one makes the client's tool report the missing arguments.
pub(super) fn tool_input(arguments: &str) -> Value {
    match serde_json::from_str::<Value>(arguments) {
        Ok(v @ Value::Object(_)) => v,
        _ => Value::Object(Map::new()),
    }
}

/// A chat choice's (or chunk's) `logprobs`.
pub(super) fn chat_logprobs(tokens: &[TokenLogprob]) -> ChatLogprobs {
    let content = tokens.iter().map(|t| OaiTokenLogprob {
        token: t.token.clone(),
        logprob: t.logprob,
        bytes: Some(t.bytes.clone()),
        top_logprobs: t
            .top
            .iter()
            .map(|a| OaiTopLogprob { token: a.token.clone(), logprob: a.logprob, bytes: Some(a.bytes.clone()) })
            .collect(),
    });
    ChatLogprobs { content: Some(content.collect()), refusal: None }
}

/// Where the next token of a choice starts, in characters of its generated text, carried from
/// one piece of text to the next.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(super) struct TextOffset {
    chars: usize,
}

impl TextOffset {
    /// The legacy completions `logprobs` of `tokens`, which make up `text` (the choice's text
    /// from this offset on); advances past `text`. Offsets follow the tokens' bytes through
    /// `text`, so a token that ends inside a character is placed at that character's start.
    pub(super) fn completion_logprobs(&mut self, text: &str, tokens: &[TokenLogprob]) -> CompletionLogprobs {
        let mut out = CompletionLogprobs::default();
        let (mut byte, mut counted_to, mut chars) = (0usize, 0usize, self.chars);
        for t in tokens {
            let mut at = byte.min(text.len());
            while !text.is_char_boundary(at) {
                at -= 1;
            }
            if at > counted_to {
                chars += text[counted_to..at].chars().count();
                counted_to = at;
            }
            out.text_offset.push(u32::try_from(chars).unwrap_or(u32::MAX));
            out.tokens.push(t.token.clone());
            out.token_logprobs.push(t.logprob);
            let mut top: BTreeMap<String, f32> = t.top.iter().map(|a| (a.token.clone(), a.logprob)).collect();
            // The sampled token is always listed, as OpenAI documents.
            top.entry(t.token.clone()).or_insert(t.logprob);
            out.top_logprobs.push(top);
            byte += t.bytes.len();
        }
        self.chars += text.chars().count();
        out
    }
}
