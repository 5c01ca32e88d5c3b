//! OpenAI response bodies: one-body chat and text completions, their streaming chunks, tool
//! calls and tool-call deltas, and the two log-probability shapes (chat's per-token objects, the
//! legacy completions' parallel lists).

use std::collections::BTreeMap;

use serde::{Deserialize, Deserializer, Serialize};

use super::{OaiTimings, OaiToolCall, OaiUsage};

/// Non-streaming chat response.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChatCompletion {
    pub id: String,
    pub object: String,
    pub created: u64,
    pub model: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub system_fingerprint: Option<String>,
    pub choices: Vec<ChatChoice>,
    pub usage: OaiUsage,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timings: Option<OaiTimings>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChatChoice {
    pub index: u32,
    pub message: ResponseMessage,
    pub finish_reason: Option<String>,
    /// `null` unless the request asked for logprobs.
    pub logprobs: Option<ChatLogprobs>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ResponseMessage {
    pub role: String,
    /// `null` when the answer is only tool calls, as OpenAI sends it.
    pub content: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_calls: Option<Vec<OaiToolCall>>,
}

/// A chat choice's `logprobs`: one entry per generated token of the content. `refusal` is
/// always `null` (cortex never refuses through that channel).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ChatLogprobs {
    pub content: Option<Vec<OaiTokenLogprob>>,
    #[serde(default)]
    pub refusal: Option<Vec<OaiTokenLogprob>>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OaiTokenLogprob {
    pub token: String,
    pub logprob: f32,
    pub bytes: Option<Vec<u8>>,
    pub top_logprobs: Vec<OaiTopLogprob>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OaiTopLogprob {
    pub token: String,
    pub logprob: f32,
    pub bytes: Option<Vec<u8>>,
}

/// One chunk of a chat stream.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChatCompletionChunk {
    pub id: String,
    pub object: String,
    pub created: u64,
    pub model: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub system_fingerprint: Option<String>,
    pub choices: Vec<ChunkChoice>,
    /// `None`: no `usage` key (include_usage off). `Some(None)`: `"usage": null`, as OpenAI
    /// sends on every chunk but the last when include_usage is on. `Some(Some(_))`: the final
    /// usage chunk.
    #[serde(default, skip_serializing_if = "Option::is_none", deserialize_with = "present")]
    pub usage: Option<Option<OaiUsage>>,
    /// Extension: sent on the chunk that carries `finish_reason`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timings: Option<OaiTimings>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChunkChoice {
    pub index: u32,
    pub delta: Delta,
    pub finish_reason: Option<String>,
    /// The log-probabilities of this chunk's content tokens, when asked for.
    pub logprobs: Option<ChatLogprobs>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Delta {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_calls: Option<Vec<OaiToolCallDelta>>,
}

/// A piece of call `index`: the first one carries `id`, `type` and the name (with empty
/// arguments or input), later ones only more arguments or input.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct OaiToolCallDelta {
    pub index: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub function: Option<OaiFunctionDelta>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub custom: Option<OaiCustomDelta>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct OaiFunctionDelta {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub arguments: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct OaiCustomDelta {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub input: Option<String>,
}

/// Non-streaming `/v1/completions` response.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Completion {
    pub id: String,
    pub object: String,
    pub created: u64,
    pub model: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub system_fingerprint: Option<String>,
    pub choices: Vec<CompletionChoice>,
    pub usage: OaiUsage,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timings: Option<OaiTimings>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CompletionChoice {
    pub index: u32,
    pub text: String,
    pub finish_reason: Option<String>,
    /// `null` unless the request asked for logprobs.
    pub logprobs: Option<CompletionLogprobs>,
}

/// The legacy completions `logprobs` object: parallel lists, one entry per token.
/// `top_logprobs` maps each alternative's text to its log-probability, the sampled token
/// always included (so up to `logprobs + 1` entries, as OpenAI documents); `text_offset` is
/// each token's offset in characters into the choice's generated text.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CompletionLogprobs {
    pub tokens: Vec<String>,
    pub token_logprobs: Vec<f32>,
    pub top_logprobs: Vec<BTreeMap<String, f32>>,
    pub text_offset: Vec<u32>,
}

/// One chunk of a `/v1/completions` stream (OpenAI names it `text_completion` too).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CompletionChunk {
    pub id: String,
    pub object: String,
    pub created: u64,
    pub model: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub system_fingerprint: Option<String>,
    pub choices: Vec<CompletionChoice>,
    /// Same three states as [`ChatCompletionChunk::usage`].
    #[serde(default, skip_serializing_if = "Option::is_none", deserialize_with = "present")]
    pub usage: Option<Option<OaiUsage>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timings: Option<OaiTimings>,
}

/// Keeps a present `null` apart from a missing key (serde folds both into `None` otherwise).
fn present<'de, D, T>(d: D) -> Result<Option<Option<T>>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    Option::<T>::deserialize(d).map(Some)
}
