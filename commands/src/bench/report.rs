//! The pure half of `cortex bench`: reading one stream event in either dialect, and turning
//! per-request samples into the per-level figures, the table and the JSON document. No I/O and
//! no clock: durations come in measured.

use std::collections::BTreeMap;
use std::fmt::{Display, Write};
use std::time::Duration;

use serde::Serialize;
use serde_json::Value;

use super::Api;

/// What one successful streamed request measured.
#[derive(Debug, Clone, Default)]
pub struct Sample {
    /// From sending the request to the first non-empty content delta.
    pub ttft: Option<Duration>,
    /// Between consecutive content deltas.
    pub gaps: Vec<Duration>,
    /// From sending the request to the end of the stream.
    pub total: Duration,
    /// As the neuron reported them.
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    /// Of the prompt tokens, those the neuron's prefix cache supplied.
    pub cached_tokens: u64,
    /// The answer's text (multi-turn mode resends it).
    pub text: String,
    /// Inputs embedded (embeddings requests).
    pub inputs: u64,
}

impl Sample {
    /// Tokens per second after the first: (completion tokens − 1) over first-to-last delta.
    pub fn decode_tok_s(&self) -> Option<f64> {
        let span: Duration = self.gaps.iter().sum();
        (self.completion_tokens >= 2 && !span.is_zero())
            .then(|| (self.completion_tokens - 1) as f64 / span.as_secs_f64())
    }
}

/// Why a request failed: a bounded kind (`http_4xx`, `http_5xx`, `stream`, `connection`) and
/// the reason.
#[derive(Debug, Clone)]
pub struct Failure {
    pub kind: &'static str,
    pub message: String,
}

impl Failure {
    pub fn new(kind: &'static str, reason: impl Display) -> Self {
        Self { kind, message: reason.to_string() }
    }

    pub fn http(status: u16, message: &str) -> Self {
        let kind = match status / 100 {
            4 => "http_4xx",
            5 => "http_5xx",
            _ => "http_other",
        };
        Self::new(kind, format!("the neuron answered {status}: {message}"))
    }
}

/// What one stream event carries, in either dialect.
#[derive(Debug, Default, PartialEq)]
pub struct Chunk<'a> {
    pub text: Option<&'a str>,
    pub prompt_tokens: Option<u64>,
    /// Present only in the final usage report.
    pub completion_tokens: Option<u64>,
    /// Prompt tokens the prefix cache supplied.
    pub cached_tokens: Option<u64>,
}

/// Reads one event: OpenAI chunks (`choices[0].delta.content`, a final `usage`), or Anthropic
/// events (`message_start` usage, `content_block_delta` text, `message_delta` usage). An error
/// event is an error.
/// The whole prompt of an Anthropic `usage`: its input tokens and its cache reads and writes.
fn anthropic_prompt(usage: &Value) -> Option<u64> {
    let n = |k: &str| usage.get(k).and_then(Value::as_u64);
    n("input_tokens")
        .map(|i| i + n("cache_read_input_tokens").unwrap_or(0) + n("cache_creation_input_tokens").unwrap_or(0))
}

pub fn parse_event(api: Api, ev: &Value) -> anyhow::Result<Chunk<'_>> {
    let u = |p: &str| ev.pointer(p).and_then(Value::as_u64);
    let error = |ev: &Value| {
        let msg = ev.pointer("/error/message").and_then(Value::as_str).unwrap_or("no message");
        anyhow::anyhow!("the neuron stopped the stream: {msg}")
    };
    match api {
        Api::Openai => {
            if ev.get("error").is_some() {
                return Err(error(ev));
            }
            Ok(Chunk {
                text: ev.pointer("/choices/0/delta/content").and_then(Value::as_str),
                prompt_tokens: u("/usage/prompt_tokens"),
                completion_tokens: u("/usage/completion_tokens"),
                cached_tokens: u("/usage/prompt_tokens_details/cached_tokens"),
            })
        }
        // Embeddings answer in one body, not a stream.
        Api::Embeddings => Ok(Chunk::default()),
        Api::Anthropic => match ev["type"].as_str() {
            Some("error") => Err(error(ev)),
            // Anthropic counts cache reads and writes apart from `input_tokens`.
            Some("message_start") => Ok(Chunk {
                prompt_tokens: anthropic_prompt(&ev["message"]["usage"]),
                cached_tokens: u("/message/usage/cache_read_input_tokens"),
                ..Chunk::default()
            }),
            Some("content_block_delta") => {
                Ok(Chunk { text: ev.pointer("/delta/text").and_then(Value::as_str), ..Chunk::default() })
            }
            Some("message_delta") => Ok(Chunk {
                prompt_tokens: anthropic_prompt(&ev["usage"]),
                completion_tokens: u("/usage/output_tokens"),
                cached_tokens: u("/usage/cache_read_input_tokens"),
                ..Chunk::default()
            }),
            _ => Ok(Chunk::default()),
        },
    }
}

/// Nearest-rank percentile of sorted values: the smallest one with at least `p` % of the
/// values at or below it.
pub fn percentile<T: Copy>(sorted: &[T], p: f64) -> Option<T> {
    let n = sorted.len();
    if n == 0 {
        return None;
    }
    let rank = (p / 100.0 * n as f64).ceil() as usize;
    Some(sorted[rank.clamp(1, n) - 1])
}

/// Milliseconds, to the microsecond.
fn ms(d: Duration) -> f64 {
    (d.as_secs_f64() * 1e6).round() / 1e3
}

fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

/// p50, p95 and p99 in milliseconds; null without samples.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct Spread {
    pub p50: Option<f64>,
    pub p95: Option<f64>,
    pub p99: Option<f64>,
}

impl Spread {
    fn of(mut values: Vec<Duration>) -> Self {
        values.sort_unstable();
        let at = |p| percentile(&values, p).map(ms);
        Self { p50: at(50.0), p95: at(95.0), p99: at(99.0) }
    }
}

/// One model at one concurrency level.
#[derive(Debug, Clone, Serialize)]
pub struct Level {
    pub model: String,
    pub concurrency: u32,
    pub requests: u64,
    pub ok: u64,
    /// Failed requests by kind.
    pub errors: BTreeMap<&'static str, u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub first_error: Option<String>,
    pub wall_s: f64,
    /// Successful requests per second of wall time.
    pub requests_per_s: f64,
    /// Completion tokens of the level over its wall time.
    pub aggregate_tok_s: f64,
    /// The median of the per-stream decode rates.
    pub decode_tok_s_p50: Option<f64>,
    pub ttft_ms: Spread,
    /// Gaps between content deltas, over every stream of the level.
    pub itl_ms: Spread,
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    /// Embeddings: whole-request latency (ms) and inputs embedded per second of wall time.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub latency_ms: Option<Spread>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub inputs_per_s: Option<f64>,
}

impl Level {
    pub fn new(model: &str, concurrency: u32, outcomes: &[Result<Sample, Failure>], wall: Duration) -> Self {
        let ok: Vec<&Sample> = outcomes.iter().filter_map(|o| o.as_ref().ok()).collect();
        let mut errors = BTreeMap::new();
        for f in outcomes.iter().filter_map(|o| o.as_ref().err()) {
            *errors.entry(f.kind).or_insert(0) += 1;
        }
        let first_error = outcomes.iter().find_map(|o| o.as_ref().err()).map(|f| f.message.clone());
        let mut decode: Vec<f64> = ok.iter().filter_map(|s| s.decode_tok_s()).collect();
        decode.sort_unstable_by(f64::total_cmp);
        let completion_tokens = ok.iter().map(|s| s.completion_tokens).sum::<u64>();
        let secs = wall.as_secs_f64();
        let per_s = |x: f64| if secs > 0.0 { round2(x / secs) } else { 0.0 };
        Self {
            model: model.to_string(),
            concurrency,
            requests: outcomes.len() as u64,
            ok: ok.len() as u64,
            errors,
            first_error,
            wall_s: (secs * 1e3).round() / 1e3,
            requests_per_s: per_s(ok.len() as f64),
            aggregate_tok_s: per_s(completion_tokens as f64),
            decode_tok_s_p50: percentile(&decode, 50.0).map(round2),
            ttft_ms: Spread::of(ok.iter().filter_map(|s| s.ttft).collect()),
            itl_ms: Spread::of(ok.iter().flat_map(|s| s.gaps.iter().copied()).collect()),
            prompt_tokens: ok.iter().map(|s| s.prompt_tokens).sum(),
            completion_tokens,
            latency_ms: None,
            inputs_per_s: None,
        }
    }
}

/// Sums over every level.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Totals {
    pub requests: u64,
    pub ok: u64,
    pub errors: BTreeMap<&'static str, u64>,
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    pub wall_s: f64,
}

/// The whole run: what was asked, each level, the totals. `--json` prints this.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub endpoint: String,
    pub api: &'static str,
    pub path: &'static str,
    pub prompt_tokens_target: u32,
    pub max_tokens: u32,
    pub requests_per_level: u32,
    /// Inputs per request, for embeddings.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub batch: Option<u32>,
    pub levels: Vec<Level>,
    pub totals: Totals,
}

impl Report {
    pub fn new(endpoint: &str, api: Api, prompt_tokens: u32, max_tokens: u32, requests: u32) -> Self {
        Self {
            endpoint: endpoint.to_string(),
            api: api.name(),
            path: api.path(),
            prompt_tokens_target: prompt_tokens,
            max_tokens,
            requests_per_level: requests,
            batch: None,
            levels: Vec::new(),
            totals: Totals::default(),
        }
    }

    pub fn push(&mut self, model: &str, concurrency: u32, outcomes: &[Result<Sample, Failure>], wall: Duration) {
        let mut level = Level::new(model, concurrency, outcomes, wall);
        if self.batch.is_some() {
            let ok = || outcomes.iter().filter_map(|o| o.as_ref().ok());
            level.latency_ms = Some(Spread::of(ok().map(|s| s.total).collect()));
            let secs = wall.as_secs_f64();
            level.inputs_per_s =
                Some(if secs > 0.0 { round2(ok().map(|s| s.inputs).sum::<u64>() as f64 / secs) } else { 0.0 });
        }
        let t = &mut self.totals;
        t.requests += level.requests;
        t.ok += level.ok;
        for (kind, n) in &level.errors {
            *t.errors.entry(kind).or_insert(0) += n;
        }
        t.prompt_tokens += level.prompt_tokens;
        t.completion_tokens += level.completion_tokens;
        t.wall_s = ((t.wall_s + level.wall_s) * 1e3).round() / 1e3;
        self.levels.push(level);
    }

    /// The table for people: one row per level, then the first error of each failing level.
    pub fn table(&self) -> anyhow::Result<String> {
        if let Some(batch) = self.batch {
            return self.embeddings_table(batch);
        }
        let mut out = String::new();
        writeln!(
            out,
            "neuron {} · {} {} · prompt ~{} tokens · max {} tokens · {} requests per level",
            self.endpoint, self.api, self.path, self.prompt_tokens_target, self.max_tokens, self.requests_per_level
        )?;
        let w = self.levels.iter().map(|l| l.model.len()).max().unwrap_or(5).max(5);
        writeln!(
            out,
            "{:w$}  {:>4}  {:>7}  {:>8}  {:>8}  {:>8}  {:>7}  {:>7}  {:>8}  {:>8}  {:>6}  {:>7}  {:>7}  ERRORS",
            "MODEL",
            "CONC",
            "OK",
            "TTFT p50",
            "p95",
            "p99",
            "ITL p50",
            "p99",
            "DECODE/s",
            "TOTAL/s",
            "REQ/s",
            "PROMPT",
            "COMPL"
        )?;
        let f = |x: Option<f64>| x.map_or("-".to_string(), |v| format!("{v:.1}"));
        for l in &self.levels {
            let errors = l.errors_text();
            writeln!(
                out,
                "{:w$}  {:>4}  {:>7}  {:>8}  {:>8}  {:>8}  {:>7}  {:>7}  {:>8}  {:>8.1}  {:>6.2}  {:>7}  {:>7}  {}",
                l.model,
                l.concurrency,
                format!("{}/{}", l.ok, l.requests),
                f(l.ttft_ms.p50),
                f(l.ttft_ms.p95),
                f(l.ttft_ms.p99),
                f(l.itl_ms.p50),
                f(l.itl_ms.p99),
                f(l.decode_tok_s_p50),
                l.aggregate_tok_s,
                l.requests_per_s,
                l.prompt_tokens,
                l.completion_tokens,
                errors
            )?;
        }
        writeln!(
            out,
            "TTFT, ITL (inter-token latency) in ms; DECODE/s: median tokens/s of one stream; TOTAL/s: completion tokens/s of the level; PROMPT, COMPL: tokens as the neuron counted them"
        )?;
        self.first_errors(&mut out)?;
        Ok(out)
    }
}

impl Level {
    /// Failed requests by kind (`http_4xx=2 stream=1`), or `-`.
    fn errors_text(&self) -> String {
        if self.errors.is_empty() {
            return "-".to_string();
        }
        self.errors.iter().map(|(k, n)| format!("{k}={n}")).collect::<Vec<_>>().join(" ")
    }
}

impl Report {
    /// The first error of each failing level, a line each.
    fn first_errors(&self, out: &mut String) -> std::fmt::Result {
        for l in self.levels.iter().filter(|l| l.first_error.is_some()) {
            let why = l.first_error.as_deref().unwrap_or("");
            writeln!(out, "first error, {} at concurrency {}: {why}", l.model, l.concurrency)?;
        }
        Ok(())
    }

    fn embeddings_table(&self, batch: u32) -> anyhow::Result<String> {
        let mut out = String::new();
        writeln!(
            out,
            "neuron {} · {} {} · {batch} inputs of ~{} tokens per request · {} requests per level",
            self.endpoint, self.api, self.path, self.prompt_tokens_target, self.requests_per_level
        )?;
        let w = self.levels.iter().map(|l| l.model.len()).max().unwrap_or(5).max(5);
        writeln!(
            out,
            "{:w$}  {:>4}  {:>7}  {:>8}  {:>8}  {:>8}  {:>9}  {:>6}  {:>8}  ERRORS",
            "MODEL", "CONC", "OK", "LAT p50", "p95", "p99", "INPUTS/s", "REQ/s", "PROMPT"
        )?;
        let f = |x: Option<f64>| x.map_or("-".to_string(), |v| format!("{v:.1}"));
        for l in &self.levels {
            let errors = l.errors_text();
            let lat = l.latency_ms.clone().unwrap_or_default();
            writeln!(
                out,
                "{:w$}  {:>4}  {:>7}  {:>8}  {:>8}  {:>8}  {:>9.1}  {:>6.2}  {:>8}  {}",
                l.model,
                l.concurrency,
                format!("{}/{}", l.ok, l.requests),
                f(lat.p50),
                f(lat.p95),
                f(lat.p99),
                l.inputs_per_s.unwrap_or(0.0),
                l.requests_per_s,
                l.prompt_tokens,
                errors
            )?;
        }
        writeln!(out, "LAT: whole-request latency in ms; INPUTS/s: inputs embedded per second of the level; PROMPT: tokens as the neuron counted them")?;
        self.first_errors(&mut out)?;
        Ok(out)
    }
}

/// One model's answer to `--probe`.
#[derive(Debug, Clone, Serialize)]
pub struct Answer {
    pub model: String,
    pub latency_ms: f64,
    pub prompt_tokens: Option<u64>,
    pub completion_tokens: Option<u64>,
    pub answer: Option<String>,
    pub error: Option<String>,
}

impl Answer {
    /// From a non-streamed response body in `api`'s dialect, or the failure.
    pub fn new(model: &str, api: Api, latency: Duration, outcome: Result<Value, Failure>) -> Self {
        let (answer, prompt_tokens, completion_tokens, error) = match &outcome {
            Err(f) => (None, None, None, Some(f.message.clone())),
            Ok(body) => {
                let u = |p: &str| body.pointer(p).and_then(Value::as_u64);
                match api {
                    Api::Openai | Api::Embeddings => (
                        body.pointer("/choices/0/message/content").and_then(Value::as_str).map(str::to_string),
                        u("/usage/prompt_tokens"),
                        u("/usage/completion_tokens"),
                        None,
                    ),
                    Api::Anthropic => (
                        Some(
                            body["content"]
                                .as_array()
                                .into_iter()
                                .flatten()
                                .filter_map(|b| b["text"].as_str())
                                .collect(),
                        ),
                        u("/usage/input_tokens"),
                        u("/usage/output_tokens"),
                        None,
                    ),
                }
            }
        };
        Self { model: model.to_string(), latency_ms: ms(latency), prompt_tokens, completion_tokens, answer, error }
    }
}

/// Answers side by side, one row each, on one line (control characters and runs of
/// whitespace become one space).
pub fn probe_table(answers: &[Answer]) -> anyhow::Result<String> {
    let mut out = String::new();
    let w = answers.iter().map(|a| a.model.len()).max().unwrap_or(5).max(5);
    writeln!(out, "{:w$}  {:>10}  {:>6}  ANSWER", "MODEL", "LATENCY", "TOKENS")?;
    for a in answers {
        let text = match (&a.answer, &a.error) {
            (_, Some(e)) => format!("error: {e}"),
            (Some(t), None) => t.chars().map(|c| if c.is_control() { ' ' } else { c }).collect::<String>(),
            (None, None) => String::new(),
        };
        let text = text.split_whitespace().collect::<Vec<_>>().join(" ");
        let tokens = a.completion_tokens.map_or("-".to_string(), |n| n.to_string());
        writeln!(out, "{:w$}  {:>7.1} ms  {:>6}  {}", a.model, a.latency_ms, tokens, text)?;
    }
    Ok(out)
}

#[cfg(test)]
mod tests;
