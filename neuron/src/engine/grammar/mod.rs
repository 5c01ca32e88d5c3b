//! Grammar-constrained decoding with llguidance: a request's tools, tool choice and answer
//! format become one grammar (JSON schemas, Lark, regex), compiled per sequence against the
//! model's own vocabulary. Generation samples as usual and checks the sampled token (about a
//! microsecond); only a rejected token costs a full mask (tens of microseconds), so the common
//! case stays free.
//!
//! Free strings, integers and arrays that a schema leaves unbounded get bounds here (documented
//! in the README), and whitespace inside JSON is at most one space: a small model must always
//! be able to close its JSON within `max_tokens`.

use std::sync::{Arc, OnceLock};

use cortex_proto::generate::{ErrorKind, GenerateError, GenerateRequest};
use cortex_proto::tools::{Grammar, ResponseFormat, Tool, ToolChoice, ToolInput};
use llguidance::api::TopLevelGrammar;
use llguidance::toktrie::{TokEnv, TokRxInfo, TokTrie, TokenId, TokenizerEnv};
use llguidance::{Matcher, ParserFactory};
use serde_json::{json, Value};

use super::toolcall::Format;

pub mod vocab;

/// Longest string a schema without `maxLength` may produce.
pub const MAX_FREE_STRING: u64 = 256;
/// Largest magnitude of an integer or number a schema leaves unbounded (15 digits).
pub const MAX_FREE_INTEGER: i64 = 999_999_999_999_999;
/// Decimals a number may have when its schema sets no `multipleOf`.
pub const FREE_NUMBER_STEP: f64 = 1e-6;
/// Most items of an array a schema leaves unbounded.
pub const MAX_FREE_ITEMS: u64 = 64;
/// Most calls in one answer when parallel calls are allowed: a small model that would repeat
/// a call forever closes its list here.
pub const MAX_PARALLEL_CALLS: usize = 4;

/// A model's tokens as bytes (control tokens marked special, so that no JSON or text rule can
/// produce them), with its end-of-sequence ids.
pub struct Vocab {
    bytes: Vec<Vec<u8>>,
    eos: Vec<TokenId>,
    bos: Option<TokenId>,
}

impl Vocab {
    /// From each token's bytes; `special` marks control tokens.
    pub fn new(tokens: Vec<(Vec<u8>, bool)>, eos: Vec<TokenId>, bos: Option<TokenId>) -> Self {
        let bytes = tokens
            .into_iter()
            .map(
                |(b, special)| {
                    if special {
                        std::iter::once(TokTrie::SPECIAL_TOKEN_MARKER).chain(b).collect()
                    } else {
                        b
                    }
                },
            )
            .collect();
        Self { bytes, eos, bos }
    }

    /// The bytes token `id` stands for (a control token's name).
    pub fn token_bytes(&self, id: u32) -> &[u8] {
        match self.bytes.get(id as usize) {
            Some(b) if b.first() == Some(&TokTrie::SPECIAL_TOKEN_MARKER) => &b[1..],
            Some(b) => b,
            None => &[],
        }
    }

    /// The control token spelled `name`, if the vocabulary has one.
    pub fn special(&self, name: &str) -> Option<u32> {
        self.bytes
            .iter()
            .position(|b| b.first() == Some(&TokTrie::SPECIAL_TOKEN_MARKER) && &b[1..] == name.as_bytes())
            .map(|i| i as u32)
    }

    pub fn len(&self) -> usize {
        self.bytes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }
}

/// The trie as llguidance sees it. No tokenizer: grammars force no tokens, so masks stay exact
/// and what the model writes is always its own tokenization.
struct Env {
    trie: TokTrie,
}

impl TokenizerEnv for Env {
    fn tok_trie(&self) -> &TokTrie {
        &self.trie
    }
    fn tokenize_bytes(&self, s: &[u8]) -> Vec<TokenId> {
        self.trie.greedy_tokenize(s)
    }
    fn tokenize_is_canonical(&self) -> bool {
        false
    }
}

/// A model's grammar compiler, built on the first constrained request (it costs 86 ms and 19 MiB
/// for SmolLM2's 49k tokens, 640 ms and 112 MiB for Gemma 3's 262k).
pub struct Grammars {
    vocab: Arc<Vocab>,
    /// Width of the model's logits (may exceed the tokenizer's vocabulary).
    n_logits: usize,
    factory: OnceLock<Result<Arc<ParserFactory>, String>>,
}

fn invalid(msg: impl Into<String>) -> GenerateError {
    GenerateError::new(ErrorKind::InvalidRequest, msg)
}

impl Grammars {
    pub fn new(vocab: Arc<Vocab>, n_logits: usize) -> Self {
        Self { vocab, n_logits, factory: OnceLock::new() }
    }

    pub fn vocab(&self) -> &Arc<Vocab> {
        &self.vocab
    }

    fn factory(&self) -> Result<&Arc<ParserFactory>, GenerateError> {
        self.factory
            .get_or_init(|| {
                let mut words = self.vocab.bytes.clone();
                while words.len() < self.n_logits {
                    // Logits past the tokenizer's vocabulary: special, never produced.
                    let mut w = format!(".<[{}]>", words.len()).into_bytes();
                    w[0] = TokTrie::SPECIAL_TOKEN_MARKER;
                    words.push(w);
                }
                let eos = self.vocab.eos.first().copied().unwrap_or(0);
                let info = TokRxInfo {
                    vocab_size: words.len() as u32,
                    tok_eos: eos,
                    tok_bos: self.vocab.bos,
                    tok_pad: None,
                    tok_unk: None,
                    tok_end_of_turn: None,
                };
                let trie = TokTrie::from(&info, &words).with_eos_tokens(&self.vocab.eos);
                let env: TokEnv = Arc::new(Env { trie });
                let mut f = ParserFactory::new_simple(&env).map_err(|e| e.to_string())?;
                f.set_stderr_log_level(0);
                f.limits_mut().verbose_errors = false;
                Ok(Arc::new(f))
            })
            .as_ref()
            .map_err(|e| GenerateError::new(ErrorKind::Internal, format!("cannot build the grammar compiler: {e}")))
    }

    /// Compiles `grammar` for one sequence; a grammar llguidance refuses is the client's error.
    pub fn compile(&self, grammar: TopLevelGrammar) -> Result<Constraint, GenerateError> {
        let parser = self.factory()?.create_parser(grammar).map_err(|e| {
            let msg = e.to_string();
            // Unknown special tokens list the whole vocabulary's specials: keep it readable.
            let msg: String = msg.chars().take(400).collect();
            invalid(format!("the requested output format cannot be compiled: {msg}"))
        })?;
        Ok(Constraint { matcher: Matcher::new(Ok(parser)), spent: std::time::Duration::ZERO })
    }
}

/// One sequence's grammar state.
pub struct Constraint {
    matcher: Matcher,
    /// Time spent in the grammar itself (checks, masks, advancing), not in the sampler.
    spent: std::time::Duration,
}

/// What the constraint made of a step's logits.
pub enum Pick {
    /// This token, and whether the sampler's first choice was refused (a full mask was needed).
    Token(u32, bool),
    /// The grammar is complete: nothing more may be generated.
    Complete,
}

impl Constraint {
    /// Picks the next token with `choose` (the sampler), checking its choice against the grammar
    /// and choosing again from the allowed tokens only when it is refused. `Err`: the grammar
    /// reached a dead end (no token allowed).
    pub fn pick(
        &mut self,
        logits: Vec<f32>,
        mut choose: impl FnMut(Vec<f32>) -> Result<u32, super::EngineError>,
    ) -> Result<Pick, String> {
        if self.matcher.is_stopped() {
            return Ok(Pick::Complete);
        }
        let mut masked = logits.clone();
        let first = choose(logits).map_err(|e| e.to_string())?;
        let t0 = std::time::Instant::now();
        let allowed = self.matcher.validate_tokens(&[first]).map_err(|e| e.to_string())? == 1;
        let token = if allowed {
            first
        } else {
            let mask = self.matcher.compute_mask().map_err(|e| format!("no token is allowed next: {e}"))?;
            if mask.is_zero() {
                return Err("no token is allowed next".into());
            }
            mask.iter_unset_entries(|i| {
                if let Some(l) = masked.get_mut(i) {
                    *l = f32::NEG_INFINITY
                }
            });
            // Logits past the trie's vocabulary are never allowed either.
            masked.iter_mut().skip(mask.len()).for_each(|l| *l = f32::NEG_INFINITY);
            self.spent += t0.elapsed();
            choose(masked).map_err(|e| e.to_string())?
        };
        let t1 = std::time::Instant::now();
        self.matcher.consume_token(token).map_err(|e| format!("token {token} refused: {e}"))?;
        self.spent += if allowed { t0.elapsed() } else { t1.elapsed() };
        Ok(Pick::Token(token, !allowed))
    }

    /// The time spent in the grammar since the last call.
    pub fn take_spent(&mut self) -> std::time::Duration {
        std::mem::take(&mut self.spent)
    }

    /// Whether the grammar accepts nothing more (the answer is whole).
    pub fn complete(&self) -> bool {
        self.matcher.is_stopped()
    }
}

/// The grammar a request's output must follow, if any: its tools (in `format`, the model's way
/// of writing calls) and tool choice, else its answer format.
pub fn for_request(req: &GenerateRequest, format: Format, vocab: &Vocab) -> Option<TopLevelGrammar> {
    let tools = !req.tools.is_empty() && req.tool_choice != ToolChoice::None;
    if tools {
        return Some(TopLevelGrammar::from_lark(tools_lark(req, format, vocab)));
    }
    match &req.format {
        ResponseFormat::Text => None,
        ResponseFormat::JsonObject => Some(TopLevelGrammar::from_json_schema(bounded(&json!({"type": "object"})))),
        ResponseFormat::JsonSchema { schema, .. } => Some(TopLevelGrammar::from_json_schema(bounded(schema))),
        ResponseFormat::Grammar { grammar: Grammar::Lark(src) } => Some(TopLevelGrammar::from_lark(src.clone())),
        ResponseFormat::Grammar { grammar: Grammar::Regex(re) } => Some(TopLevelGrammar::from_regex(re)),
    }
}

/// A Lark string literal for `s`.
fn lit(s: &str) -> String {
    Value::String(s.to_string()).to_string()
}

/// A marker in the grammar: the control token when the vocabulary has one, else the text.
fn marker(vocab: &Vocab, text: &str) -> String {
    match vocab.special(text) {
        Some(id) => format!("<[{id}]>"),
        None => lit(text),
    }
}

/// A free-form tool input without a grammar: any JSON string, bounded.
fn free_text() -> String {
    format!("%json {}", json!({"type": "string", "maxLength": MAX_FREE_STRING * 8}))
}

/// One rule per callable tool: `{"name": "<name>", "<args key>": <input>}`.
fn call_rules(req: &GenerateRequest, args_key: &str) -> (String, String) {
    let callable: Vec<&Tool> = match &req.tool_choice {
        ToolChoice::Named(name) => req.tools.iter().filter(|t| &t.name == name).collect(),
        _ => req.tools.iter().collect(),
    };
    let mut rules = String::new();
    let mut names = Vec::new();
    for (i, t) in callable.iter().enumerate() {
        let head = lit(&format!(r#"{{"name": {}, "{args_key}": "#, Value::String(t.name.clone())));
        let input = match &t.input {
            ToolInput::Json { schema, .. } => format!("%json {}", bounded(schema)),
            // Free-form input travels as a JSON string, held to the tool's grammar when it has one
            // (checked when the request was read; llguidance quotes the pattern for JSON itself).
            ToolInput::Text { grammar: Some(g) } => match g.input_regex() {
                Ok(rx) => format!("%json {}", json!({"type": "string", "pattern": rx})),
                Err(_) => free_text(),
            },
            ToolInput::Text { grammar: None } => free_text(),
        };
        rules.push_str(&format!("call_{i}: {head} {input} \"}}\"\n"));
        names.push(format!("call_{i}"));
    }
    (rules, names.join(" | "))
}

fn tools_lark(req: &GenerateRequest, format: Format, vocab: &Vocab) -> String {
    let forced = matches!(req.tool_choice, ToolChoice::Required | ToolChoice::Named(_));
    // `one`, then up to MAX_PARALLEL_CALLS − 1 more after `sep`, as nested optionals.
    let many = |one: &str, sep: &str| {
        if !req.parallel_tool_calls {
            return one.to_string();
        }
        (1..MAX_PARALLEL_CALLS).fold(one.to_string(), |inner, _| format!("{one} ({} {inner})?", lit(sep)))
    };
    let args_key = if format == Format::Llama3 { "parameters" } else { "arguments" };
    let (rules, any_call) = call_rules(req, args_key);
    let body = match format {
        Format::Generic => {
            let calls = format!("{} {} {}", lit(r#"{"tool_calls": ["#), many("call", ", "), lit("]}"));
            let answer = format!("{} %json {} {}", lit(r#"{"text": "#), json!({"type": "string"}), lit("}"));
            if forced {
                format!("start: {calls}\n")
            } else {
                format!("start: {calls} | {answer}\n")
            }
        }
        Format::Hermes => {
            let (open, close) = (marker(vocab, "<tool_call>"), marker(vocab, "</tool_call>"));
            let block = format!("{open} \"\\n\" call \"\\n\" {close}");
            if forced {
                format!("start: {}\nblock: {block}\n", many("block", "\n"))
            } else {
                format!(
                    "start: ( tool_call )* TEXT\nTEXT: /(.|\\n)*/\ncall_hd[lazy]: TEXT {open}\ntool_call: call_hd \"\\n\" call \"\\n\" {close}\n"
                )
            }
        }
        Format::Llama3 => {
            if forced {
                format!("start: {}\n", many("call", "; "))
            } else {
                format!("start: TEXT | {}\nTEXT: /[^{{](.|\\n)*/\n", many("call", "; "))
            }
        }
        Format::Mistral => {
            let open = marker(vocab, "[TOOL_CALLS]");
            let calls = format!("{open} \"[\" {} \"]\"", many("call", ", "));
            if forced {
                format!("start: {calls}\n")
            } else {
                format!("start: TEXT | {calls}\nTEXT: /[^\\[](.|\\n)*/\n")
            }
        }
    };
    format!("{body}call: {any_call}\n{rules}")
}

/// Where [`bounded`] keeps its definition of a bounded value of any type.
const ANY: &str = "#/$defs/cortex_any";
/// Most properties an object of unspecified shape may have.
pub const MAX_FREE_PROPERTIES: u64 = 16;

/// Any JSON value, bounded: what an object of unspecified shape holds.
fn any_value() -> Value {
    let r = json!({"$ref": ANY});
    json!({"anyOf": [
        {"type": "string", "maxLength": MAX_FREE_STRING},
        {"type": "number", "minimum": -MAX_FREE_INTEGER, "maximum": MAX_FREE_INTEGER, "multipleOf": FREE_NUMBER_STEP},
        {"type": "boolean"},
        {"type": "null"},
        {"type": "array", "items": r, "maxItems": MAX_FREE_ITEMS},
        {"type": "object", "additionalProperties": r, "maxProperties": MAX_FREE_PROPERTIES},
    ]})
}

/// `schema` with bounds where it leaves strings, numbers, arrays or extra properties
/// unbounded, and at most one space where JSON allows whitespace.
pub fn bounded(schema: &Value) -> Value {
    let mut s = schema.clone();
    bound(&mut s);
    if let Value::Object(map) = &mut s {
        map.insert("x-guidance".into(), json!({"whitespace_pattern": "[ ]?"}));
        if !map.get("$defs").is_some_and(Value::is_object) {
            map.insert("$defs".into(), json!({}));
        }
        if let Some(Value::Object(defs)) = map.get_mut("$defs") {
            defs.insert("cortex_any".into(), any_value());
        }
    }
    s
}

fn bound(v: &mut Value) {
    let Value::Object(map) = v else { return };
    let types: Vec<String> = match map.get("type") {
        Some(Value::String(t)) => vec![t.clone()],
        Some(Value::Array(ts)) => ts.iter().filter_map(|t| t.as_str().map(str::to_string)).collect(),
        _ => Vec::new(),
    };
    let is = |t: &str| types.iter().any(|x| x == t);
    let fixed = map.contains_key("enum") || map.contains_key("const");
    let has = |map: &serde_json::Map<String, Value>, keys: &[&str]| keys.iter().any(|k| map.contains_key(*k));
    if is("string") && !fixed && !has(map, &["maxLength", "pattern", "format"]) {
        map.insert("maxLength".into(), MAX_FREE_STRING.into());
    }
    if is("number") && !fixed && !has(map, &["multipleOf"]) {
        map.insert("multipleOf".into(), FREE_NUMBER_STEP.into());
    }
    if (is("integer") || is("number")) && !fixed {
        if !has(map, &["maximum", "exclusiveMaximum"]) {
            map.insert("maximum".into(), MAX_FREE_INTEGER.into());
        }
        if !has(map, &["minimum", "exclusiveMinimum"]) {
            map.insert("minimum".into(), (-MAX_FREE_INTEGER).into());
        }
    }
    if is("array") {
        if !has(map, &["maxItems"]) {
            map.insert("maxItems".into(), MAX_FREE_ITEMS.into());
        }
        if !has(map, &["items", "prefixItems"]) || map.get("items") == Some(&Value::Bool(true)) {
            map.insert("items".into(), json!({"$ref": ANY}));
        }
    }
    if is("object") {
        // Extra properties are allowed unless the schema says otherwise: bounded, then.
        match map.get("additionalProperties") {
            None | Some(Value::Bool(true)) if !has(map, &["patternProperties"]) => {
                map.insert("additionalProperties".into(), json!({"$ref": ANY}));
                if !has(map, &["maxProperties"]) {
                    let named = map.get("properties").and_then(Value::as_object).map_or(0, |p| p.len() as u64);
                    map.insert("maxProperties".into(), (named + MAX_FREE_PROPERTIES).into());
                }
            }
            _ => {}
        }
    }
    for key in ["properties", "$defs", "definitions", "patternProperties"] {
        if let Some(Value::Object(children)) = map.get_mut(key) {
            children.values_mut().for_each(bound);
        }
    }
    for key in ["items", "additionalProperties", "not", "contains"] {
        if let Some(child) = map.get_mut(key) {
            bound(child);
        }
    }
    for key in ["anyOf", "oneOf", "allOf", "prefixItems"] {
        if let Some(Value::Array(children)) = map.get_mut(key) {
            children.iter_mut().for_each(bound);
        }
    }
}

#[cfg(test)]
mod tests;
