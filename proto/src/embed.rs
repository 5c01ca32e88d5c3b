//! Embeddings: the neutral request and result that cross the mesh, and the OpenAI dialect of
//! `POST /v1/embeddings` with the checks that make a bad request a 400 naming its field.

use serde::{Deserialize, Serialize};

use crate::generate::{ErrorKind, GenerateError};

/// OpenAI's cap on inputs per request.
pub const MAX_INPUTS: usize = 2048;

/// One input: text, or token ids of the model's own vocabulary.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum EmbedInput {
    Text(String),
    Tokens(Vec<u32>),
}

/// What a node is asked to embed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EmbedRequest {
    pub id: String,
    pub model: String,
    pub inputs: Vec<EmbedInput>,
    /// Cut inputs longer than the model reads instead of refusing them.
    #[serde(default)]
    pub truncate: bool,
    /// Keep the first N components, renormalised.
    #[serde(default)]
    pub dimensions: Option<usize>,
}

/// One vector per input, in order, and the tokens they took.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EmbedResult {
    pub model: String,
    pub vectors: Vec<Vec<f32>>,
    pub prompt_tokens: u32,
}

/// `input` of an OpenAI embeddings request: a string, strings, token ids, or lists of them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum OaiEmbeddingInput {
    One(String),
    Many(Vec<String>),
    Tokens(Vec<u32>),
    ManyTokens(Vec<Vec<u32>>),
}

/// Body of `POST /v1/embeddings`. `truncate` is cortex's (and Ollama's) extension: inputs over
/// the model's length are cut instead of refused.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OaiEmbeddingRequest {
    pub model: String,
    pub input: serde_json::Value,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encoding_format: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dimensions: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub truncate: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keep_alive: Option<serde_json::Value>,
}

/// How vectors go on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    Float,
    /// Little-endian f32 bytes, base64 (what the OpenAI SDKs ask for by default).
    Base64,
}

fn invalid(msg: impl Into<String>) -> GenerateError {
    GenerateError::new(ErrorKind::InvalidRequest, msg)
}

impl OaiEmbeddingRequest {
    /// The neutral request for `model` (resolved) and how to encode the answer; a 400 naming
    /// the field for anything malformed.
    pub fn to_neutral(&self, id: String, model: String) -> Result<(EmbedRequest, Encoding), GenerateError> {
        let input: OaiEmbeddingInput = serde_json::from_value(self.input.clone()).map_err(|_| {
            invalid("`input` must be a string, an array of strings, an array of token ids, or an array of such arrays")
        })?;
        let inputs: Vec<EmbedInput> = match input {
            OaiEmbeddingInput::One(s) => vec![EmbedInput::Text(s)],
            OaiEmbeddingInput::Many(v) => v.into_iter().map(EmbedInput::Text).collect(),
            OaiEmbeddingInput::Tokens(t) => vec![EmbedInput::Tokens(t)],
            OaiEmbeddingInput::ManyTokens(v) => v.into_iter().map(EmbedInput::Tokens).collect(),
        };
        if inputs.is_empty() {
            return Err(invalid("`input` is empty: give at least one string or token array"));
        }
        if inputs.len() > MAX_INPUTS {
            return Err(invalid(format!("`input` has {} items; at most {MAX_INPUTS} per request", inputs.len())));
        }
        for (i, x) in inputs.iter().enumerate() {
            let empty = match x {
                EmbedInput::Text(s) => s.is_empty(),
                EmbedInput::Tokens(t) => t.is_empty(),
            };
            if empty {
                return Err(invalid(format!("`input[{i}]` is empty")));
            }
        }
        let encoding = match self.encoding_format.as_deref() {
            None | Some("float") => Encoding::Float,
            Some("base64") => Encoding::Base64,
            Some(other) => {
                return Err(invalid(format!("`encoding_format` must be \"float\" or \"base64\", not {other:?}")))
            }
        };
        let dimensions = match &self.dimensions {
            None | Some(serde_json::Value::Null) => None,
            Some(v) => match v.as_u64() {
                Some(n) if n > 0 => Some(n as usize),
                _ => return Err(invalid(format!("`dimensions` must be a positive integer, not {v}"))),
            },
        };
        let request = EmbedRequest { id, model, inputs, truncate: self.truncate.unwrap_or(false), dimensions };
        Ok((request, encoding))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(input: serde_json::Value) -> OaiEmbeddingRequest {
        serde_json::from_value(serde_json::json!({"model": "m", "input": input})).unwrap()
    }

    #[test]
    fn every_input_shape_becomes_inputs_in_order() {
        let cases = [
            (serde_json::json!("a"), vec![EmbedInput::Text("a".into())]),
            (serde_json::json!(["a", "b"]), vec![EmbedInput::Text("a".into()), EmbedInput::Text("b".into())]),
            (serde_json::json!([1, 2]), vec![EmbedInput::Tokens(vec![1, 2])]),
            (serde_json::json!([[1], [2, 3]]), vec![EmbedInput::Tokens(vec![1]), EmbedInput::Tokens(vec![2, 3])]),
        ];
        for (input, want) in cases {
            let (r, enc) = req(input).to_neutral("id".into(), "m".into()).unwrap();
            assert_eq!((r.inputs, enc), (want, Encoding::Float));
        }
    }

    #[test]
    fn bad_requests_name_what_is_wrong() {
        let too_many = serde_json::json!(vec!["x"; MAX_INPUTS + 1]);
        for (input, words) in [
            (serde_json::json!([]), "empty"),
            (serde_json::json!(""), "`input[0]` is empty"),
            (too_many, "at most 2048"),
            (serde_json::json!({"text": "a"}), "must be a string"),
            (serde_json::json!([1, "a"]), "must be a string"),
            (serde_json::json!([-1]), "must be a string"),
        ] {
            let err = req(input.clone()).to_neutral("id".into(), "m".into()).unwrap_err();
            assert_eq!(err.kind, ErrorKind::InvalidRequest);
            assert!(err.message.contains(words), "{input}: {}", err.message);
        }
        let mut r = req(serde_json::json!("a"));
        r.encoding_format = Some("int8".into());
        assert!(r.to_neutral("i".into(), "m".into()).unwrap_err().message.contains("encoding_format"));
        r.encoding_format = Some("base64".into());
        r.dimensions = Some(serde_json::json!(0));
        assert!(r.to_neutral("i".into(), "m".into()).unwrap_err().message.contains("dimensions"));
    }
}
