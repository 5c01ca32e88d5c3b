//! `cortex bench`: the load generator operators point at a neuron. For each model and
//! concurrency level it sends N streaming requests with at most C in flight and reports what a
//! caller notices: time to first token, the gaps between tokens, tokens per second. Token counts
//! are the ones the neuron reported, so a run can be checked against its Prometheus counters.
//! `--probe` instead asks every model one question and shows the answers side by side.
//!
//! The network shell lives here; the figures are computed by the pure functions in
//! `bench/report.rs`.

mod report;
mod turns;

use std::io::IsTerminal;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde_json::{json, Value};
use tokio::sync::Semaphore;
use tracing::Instrument;

use crate::client::{read_sse, Client, EndpointArgs};
use crate::error::user;
use report::{Answer, Failure, Report, Sample};

/// Which API the requests use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Api {
    /// OpenAI chat completions: POST /v1/chat/completions
    Openai,
    /// Anthropic messages: POST /v1/messages
    Anthropic,
    /// OpenAI embeddings: POST /v1/embeddings, --batch inputs per request (for embedding models)
    Embeddings,
}

impl Api {
    pub fn name(self) -> &'static str {
        match self {
            Api::Openai => "openai",
            Api::Anthropic => "anthropic",
            Api::Embeddings => "embeddings",
        }
    }

    pub fn path(self) -> &'static str {
        match self {
            Api::Openai => "/v1/chat/completions",
            Api::Anthropic => "/v1/messages",
            Api::Embeddings => "/v1/embeddings",
        }
    }

    /// A greedy request with one user message, streamed with usage, or not streamed.
    fn body(self, model: &str, prompt: &str, max_tokens: u32, stream: bool) -> Value {
        let mut body = json!({
            "model": model,
            "messages": [{ "role": "user", "content": prompt }],
            "max_tokens": max_tokens,
            "temperature": 0,
            "stream": stream,
        });
        if stream && self == Api::Openai {
            body["stream_options"] = json!({ "include_usage": true });
        }
        body
    }
}

#[derive(Debug, Clone, clap::Args)]
pub struct BenchArgs {
    /// Models to test, by id or alias; each is loaded before its first level so that load time
    /// is not measured
    #[arg(value_name = "MODEL", default_value = "helexa/small", add = clap_complete::engine::ArgValueCompleter::new(crate::complete::models))]
    pub models: Vec<String>,
    /// Concurrency levels, comma-separated: each runs --requests requests with at most this many
    /// in flight
    #[arg(long, short = 'c', value_name = "N,N...", value_delimiter = ',', default_value = "1,4",
          value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub concurrency: Vec<u32>,
    /// Requests at each concurrency level
    #[arg(long, short = 'n', value_name = "N", default_value_t = 8, value_parser = clap::value_parser!(u32).range(1..))]
    pub requests: u32,
    /// Rough prompt length in tokens (filler text; the report gives the neuron's own count)
    #[arg(long, value_name = "N", default_value_t = 64, value_parser = clap::value_parser!(u32).range(1..))]
    pub prompt_tokens: u32,
    /// Most tokens in each answer
    #[arg(long, value_name = "N", default_value_t = 32, value_parser = clap::value_parser!(u32).range(1..))]
    pub max_tokens: u32,
    /// API to drive: openai (/v1/chat/completions), anthropic (/v1/messages) or embeddings
    /// (/v1/embeddings, for embedding models)
    #[arg(long, value_enum, value_name = "API", default_value_t = Api::Openai)]
    pub api: Api,
    /// With --api embeddings: inputs in each request, each of about --prompt-tokens tokens
    #[arg(long, value_name = "N", default_value_t = 32, value_parser = clap::value_parser!(u32).range(1..=2048))]
    pub batch: u32,
    /// Multi-turn mode: --sessions conversations at once, each this many turns, every request
    /// resending the whole conversation (a shared system prompt of --system-tokens, then its
    /// turns) as agents do; reports time to first token per turn and the prompt tokens the
    /// neurons' prefix caches supplied
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    pub turns: Option<u32>,
    /// With --turns: conversations running at once
    #[arg(long, value_name = "S", default_value_t = 8, value_parser = clap::value_parser!(u32).range(1..))]
    pub sessions: u32,
    /// With --turns: rough length of the system prompt every conversation shares, in tokens
    #[arg(long, value_name = "N", default_value_t = 1500)]
    pub system_tokens: u32,
    /// With --turns: name each conversation in an x-session-id header (a routing hint)
    #[arg(long)]
    pub session_header: bool,
    /// Instead of load, ask each model this question once (not streamed, temperature 0) and
    /// print the answers side by side
    #[arg(long, value_name = "QUESTION")]
    pub probe: Option<String>,
    /// Print one JSON document on stdout instead of a table
    #[arg(long)]
    pub json: bool,
    /// No progress bar on stderr
    #[arg(long, short = 'q')]
    pub quiet: bool,
    #[command(flatten)]
    pub endpoint: EndpointArgs,
}

/// Common words, most of them one token in the usual BPE vocabularies.
const FILLER: [&str; 16] = [
    "the", "quick", "brown", "fox", "jumps", "over", "the", "lazy", "dog", "and", "then", "runs", "back", "to", "the",
    "farm",
];

/// A prompt of about `tokens` tokens.
fn filler(tokens: u32) -> String {
    FILLER.iter().cycle().take(tokens as usize).copied().collect::<Vec<_>>().join(" ")
}

pub async fn run(args: BenchArgs) -> anyhow::Result<()> {
    let client = args.endpoint.connect().await?;
    if let Some(question) = &args.probe {
        return probe(&client, &args, question).await;
    }
    if let Some(turns) = args.turns {
        return turns::run(&client, &args, turns).await;
    }
    let levels = args.models.len() as u64 * args.concurrency.len() as u64;
    let bar = progress(args.quiet, levels * u64::from(args.requests));
    let mut report = Report::new(&client.base, args.api, args.prompt_tokens, args.max_tokens, args.requests);
    if args.api == Api::Embeddings {
        report.batch = Some(args.batch);
    }
    for model in &args.models {
        bar.set_message(format!("loading {model}"));
        preload(&client, model).await;
        for &concurrency in &args.concurrency {
            bar.set_message(format!("{model} at concurrency {concurrency}"));
            let (samples, wall) = run_level(&client, &args, model, concurrency, &bar).await?;
            report.push(model, concurrency, &samples, wall);
        }
    }
    bar.finish_and_clear();
    if args.json {
        crate::printer::json(&report)?;
    } else {
        crate::printer::emit(&report.table()?)?;
    }
    if report.totals.ok == 0 {
        let first = report.levels.iter().find_map(|l| l.first_error.clone()).unwrap_or_default();
        return user(format!("every request failed; the first: {first}"));
    }
    Ok(())
}

/// A bar on stderr counting finished requests; hidden off a terminal and with --quiet.
fn progress(quiet: bool, total: u64) -> ProgressBar {
    let bar = ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stderr());
    if quiet || !std::io::stderr().is_terminal() {
        bar.set_draw_target(ProgressDrawTarget::hidden());
    }
    bar.set_style(
        ProgressStyle::with_template("{msg} [{bar:30}] {pos}/{len} requests {elapsed}")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    bar
}

/// Loads the model so the first level does not time its loading. Best effort: without an
/// admin key, or for an unknown model, the requests themselves show what is wrong.
async fn preload(client: &Client, model: &str) {
    if let Err(e) = client.post_json("/cortex/v1/load", &json!({ "model": model })).await {
        tracing::info!(model, "could not load ahead of the run: {e:#}");
    }
}

/// Runs one level: `args.requests` streamed requests, at most `concurrency` in flight.
/// Returns each request's outcome and the level's wall time.
async fn run_level(
    client: &Client,
    args: &BenchArgs,
    model: &str,
    concurrency: u32,
    bar: &ProgressBar,
) -> anyhow::Result<(Vec<Result<Sample, Failure>>, Duration)> {
    let body = Arc::new(match args.api {
        Api::Embeddings => {
            // Each input differs, so that nothing downstream can answer one from another.
            let inputs: Vec<String> =
                (0..args.batch).map(|i| format!("{} {i}", filler(args.prompt_tokens.saturating_sub(1)))).collect();
            json!({ "model": model, "input": inputs, "encoding_format": "base64" })
        }
        api => api.body(model, &filler(args.prompt_tokens), args.max_tokens, true),
    });
    let gate = Arc::new(Semaphore::new(concurrency as usize));
    let mut tasks = tokio::task::JoinSet::new();
    let start = Instant::now();
    for request in 0..args.requests {
        let (client, body, gate, bar, api) = (client.clone(), body.clone(), gate.clone(), bar.clone(), args.api);
        let span = tracing::info_span!("bench_request", model, concurrency, request);
        tasks.spawn(
            async move {
                let _permit = gate.acquire_owned().await?;
                let outcome = match api {
                    Api::Embeddings => embed_one(&client, &body).await,
                    _ => stream_one(&client, api, &body).await,
                };
                if let Err(f) = &outcome {
                    tracing::debug!(kind = f.kind, "request failed: {}", f.message);
                }
                bar.inc(1);
                anyhow::Ok(outcome)
            }
            .instrument(span),
        );
    }
    let mut samples = Vec::with_capacity(args.requests as usize);
    while let Some(joined) = tasks.join_next().await {
        samples.push(joined.context("a bench request task failed")??);
    }
    Ok((samples, start.elapsed()))
}

/// Turns an error status into a failure carrying the neuron's message (both dialects put it
/// at `error.message`).
async fn accepted(resp: reqwest::Response) -> Result<reqwest::Response, Failure> {
    let status = resp.status();
    if status.is_success() {
        return Ok(resp);
    }
    let body: Value = resp.json().await.unwrap_or_default();
    let msg = body.pointer("/error/message").and_then(Value::as_str).unwrap_or("no message");
    Err(Failure::http(status.as_u16(), msg))
}

/// One embeddings request, timed from sending it to the whole answer.
async fn embed_one(client: &Client, body: &Value) -> Result<Sample, Failure> {
    let t0 = Instant::now();
    let resp = client.post_raw(Api::Embeddings.path(), body).await.map_err(|e| Failure::new("connection", e))?;
    let resp = accepted(resp).await?;
    let answer: Value = resp.json().await.map_err(|e| Failure::new("stream", e))?;
    let inputs = answer["data"].as_array().map_or(0, Vec::len) as u64;
    if inputs != body["input"].as_array().map_or(0, Vec::len) as u64 {
        return Err(Failure::new(
            "stream",
            format!("{inputs} vectors for {} inputs", body["input"].as_array().map_or(0, Vec::len)),
        ));
    }
    let total = t0.elapsed();
    Ok(Sample {
        total,
        inputs,
        prompt_tokens: answer.pointer("/usage/prompt_tokens").and_then(Value::as_u64).unwrap_or(0),
        ..Sample::default()
    })
}

/// One streamed request, timed from sending it.
async fn stream_one(client: &Client, api: Api, body: &Value) -> Result<Sample, Failure> {
    stream_in(client, api, body, None).await
}

/// [`stream_one`], naming the conversation in an `x-session-id` header when `session` is set.
async fn stream_in(client: &Client, api: Api, body: &Value, session: Option<&str>) -> Result<Sample, Failure> {
    let t0 = Instant::now();
    let resp = client.post_in_session(api.path(), body, session).await.map_err(|e| Failure::new("connection", e))?;
    let resp = accepted(resp).await?;
    let mut sample = Sample::default();
    let mut last: Option<Instant> = None;
    let mut finished = false;
    read_sse(resp, |event| {
        let chunk = report::parse_event(api, &event)?;
        if chunk.text.is_some_and(|t| !t.is_empty()) {
            let now = Instant::now();
            match last {
                None => sample.ttft = Some(now - t0),
                Some(prev) => sample.gaps.push(now - prev),
            }
            last = Some(now);
        }
        if let Some(n) = chunk.prompt_tokens {
            sample.prompt_tokens = n;
        }
        if let Some(n) = chunk.completion_tokens {
            sample.completion_tokens = n;
            finished = true;
        }
        if let Some(n) = chunk.cached_tokens {
            sample.cached_tokens = n;
        }
        if let Some(t) = chunk.text {
            sample.text.push_str(t);
        }
        Ok(())
    })
    .await
    .map_err(|e| Failure::new("stream", format!("{e:#}")))?;
    if !finished {
        return Err(Failure::new("stream", "the stream ended before the usage report"));
    }
    sample.total = t0.elapsed();
    Ok(sample)
}

/// Asks every model `question` once and prints the answers side by side.
async fn probe(client: &Client, args: &BenchArgs, question: &str) -> anyhow::Result<()> {
    if args.api == Api::Embeddings {
        return user("--probe asks each model a question; use it with --api openai or anthropic, not embeddings");
    }
    let mut answers = Vec::with_capacity(args.models.len());
    for model in &args.models {
        let body = args.api.body(model, question, args.max_tokens, false);
        let t0 = Instant::now();
        let outcome = match client.post_raw(args.api.path(), &body).await {
            Err(e) => Err(Failure::new("connection", e)),
            Ok(resp) => match accepted(resp).await {
                Err(f) => Err(f),
                Ok(resp) => resp.json::<Value>().await.map_err(|e| Failure::new("stream", e)),
            },
        };
        answers.push(Answer::new(model, args.api, t0.elapsed(), outcome));
    }
    if args.json {
        crate::printer::json(&answers)?;
    } else {
        crate::printer::emit(&report::probe_table(&answers)?)?;
    }
    if answers.iter().all(|a| a.error.is_some()) {
        let first = answers.first().and_then(|a| a.error.clone()).unwrap_or_default();
        return user(format!("no model answered; the first: {first}"));
    }
    Ok(())
}
