//! `cortex bench --turns N --sessions S`: S conversations at once, each N turns, every request
//! resending the whole conversation (a system prompt they all share, then its own turns and the
//! answers it got), as agents do. Reports per turn the time to first token (p50, p95 over the
//! sessions) and the share of prompt tokens the prefix caches supplied, and the whole run's
//! throughput.

use std::time::{Duration, Instant};

use anyhow::Context;
use serde::Serialize;
use serde_json::{json, Value};

use super::report::{percentile, Failure, Sample};
use super::{filler, preload, stream_in, Api, BenchArgs};
use crate::client::Client;
use crate::error::user;

#[derive(Debug, Serialize)]
struct TurnFigures {
    turn: u32,
    ok: usize,
    failed: usize,
    ttft_p50_ms: Option<f64>,
    ttft_p95_ms: Option<f64>,
    prompt_tokens_mean: f64,
    /// Cached prompt tokens over prompt tokens, this turn over all sessions.
    cached_share: f64,
}

#[derive(Debug, Serialize)]
struct TurnsReport {
    endpoint: String,
    model: String,
    api: &'static str,
    sessions: u32,
    turns: u32,
    system_tokens: u32,
    per_turn: Vec<TurnFigures>,
    wall_s: f64,
    completion_tokens: u64,
    /// Completion tokens per second over the whole run.
    throughput_tok_s: f64,
    first_error: Option<String>,
}

fn figures(turn: u32, outcomes: &[&Result<Sample, Failure>]) -> TurnFigures {
    let ok: Vec<&Sample> = outcomes.iter().filter_map(|o| o.as_ref().ok()).collect();
    let mut ttft: Vec<f64> = ok.iter().filter_map(|s| s.ttft).map(|d| d.as_secs_f64() * 1e3).collect();
    ttft.sort_by(f64::total_cmp);
    let prompt: u64 = ok.iter().map(|s| s.prompt_tokens).sum();
    let cached: u64 = ok.iter().map(|s| s.cached_tokens).sum();
    TurnFigures {
        turn,
        ok: ok.len(),
        failed: outcomes.len() - ok.len(),
        ttft_p50_ms: percentile(&ttft, 50.0),
        ttft_p95_ms: percentile(&ttft, 95.0),
        prompt_tokens_mean: if ok.is_empty() { 0.0 } else { prompt as f64 / ok.len() as f64 },
        cached_share: if prompt == 0 { 0.0 } else { cached as f64 / prompt as f64 },
    }
}

/// What every conversation of a run shares.
struct Plan {
    client: Client,
    api: Api,
    model: String,
    system: String,
    turns: u32,
    question_tokens: u32,
    max_tokens: u32,
    header: bool,
}

/// Conversation `index`: `turns` requests, each the whole history so far plus a new question.
async fn session(plan: std::sync::Arc<Plan>, index: u32) -> Vec<Result<Sample, Failure>> {
    let Plan { ref client, api, ref model, ref system, turns, question_tokens, max_tokens, header } = *plan;
    let name = format!("bench-session-{index}");
    let mut history: Vec<Value> = Vec::new();
    let mut out = Vec::with_capacity(turns as usize);
    for turn in 1..=turns {
        let question = format!("Conversation {index}, question {turn}: {}", filler(question_tokens));
        history.push(json!({ "role": "user", "content": question }));
        let mut body = api.body(model, "", max_tokens, true);
        match api {
            Api::Anthropic => {
                body["system"] = json!(system);
                body["messages"] = json!(history);
            }
            _ => {
                let mut messages = vec![json!({ "role": "system", "content": system })];
                messages.extend(history.iter().cloned());
                body["messages"] = json!(messages);
            }
        }
        let outcome = stream_in(client, api, &body, header.then_some(name.as_str())).await;
        let answer = outcome.as_ref().map(|s| s.text.clone()).unwrap_or_default();
        // A failed turn still moves the conversation on, as a client that retries later would.
        history.push(
            json!({ "role": "assistant", "content": if answer.is_empty() { "(no answer)".into() } else { answer } }),
        );
        out.push(outcome);
    }
    out
}

pub async fn run(client: &Client, args: &BenchArgs, turns: u32) -> anyhow::Result<()> {
    if args.api == Api::Embeddings {
        return user("--turns replays conversations; use it with --api openai or anthropic, not embeddings");
    }
    let model = args.models.first().cloned().unwrap_or_else(|| "helexa/small".into());
    preload(client, &model).await;
    let system = format!("You are a careful assistant. Reference notes follow. {}", filler(args.system_tokens));
    let start = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    let plan = std::sync::Arc::new(Plan {
        client: client.clone(),
        api: args.api,
        model: model.clone(),
        system,
        turns,
        question_tokens: args.prompt_tokens,
        max_tokens: args.max_tokens,
        header: args.session_header,
    });
    for index in 0..args.sessions {
        tasks.spawn(session(plan.clone(), index));
    }
    let mut all = Vec::new();
    while let Some(joined) = tasks.join_next().await {
        all.push(joined.context("a bench session task failed")?);
    }
    let wall = start.elapsed();
    let per_turn: Vec<TurnFigures> =
        (0..turns as usize).map(|t| figures(t as u32 + 1, &all.iter().map(|s| &s[t]).collect::<Vec<_>>())).collect();
    let completion_tokens: u64 =
        all.iter().flatten().filter_map(|o| o.as_ref().ok()).map(|s| s.completion_tokens).sum();
    let first_error = all.iter().flatten().find_map(|o| o.as_ref().err().map(|f| f.message.clone()));
    let report = TurnsReport {
        endpoint: client.base.clone(),
        model,
        api: args.api.name(),
        sessions: args.sessions,
        turns,
        system_tokens: args.system_tokens,
        throughput_tok_s: completion_tokens as f64 / wall.as_secs_f64().max(1e-9),
        wall_s: wall.as_secs_f64(),
        completion_tokens,
        per_turn,
        first_error,
    };
    if args.json {
        crate::printer::json(&report)?;
    } else {
        crate::printer::emit(&table(&report))?;
    }
    if report.per_turn.iter().all(|t| t.ok == 0) {
        return user(format!("every request failed; the first: {}", report.first_error.unwrap_or_default()));
    }
    Ok(())
}

fn ms(x: Option<f64>) -> String {
    x.map_or("-".into(), |v| format!("{v:.0}"))
}

fn table(r: &TurnsReport) -> String {
    let mut out = format!(
        "{} at {}, {} sessions x {} turns, shared system prompt ~{} tokens\n{:>4}  {:>4}  {:>6}  {:>13}  {:>13}  {:>13}  {:>7}\n",
        r.model,
        r.endpoint,
        r.sessions,
        r.turns,
        r.system_tokens,
        "TURN",
        "OK",
        "FAILED",
        "TTFT P50 MS",
        "TTFT P95 MS",
        "PROMPT TOKENS",
        "CACHED"
    );
    for t in &r.per_turn {
        out.push_str(&format!(
            "{:>4}  {:>4}  {:>6}  {:>13}  {:>13}  {:>13.0}  {:>6.1}%\n",
            t.turn,
            t.ok,
            t.failed,
            ms(t.ttft_p50_ms),
            ms(t.ttft_p95_ms),
            t.prompt_tokens_mean,
            100.0 * t.cached_share
        ));
    }
    out.push_str(&format!(
        "{} completion tokens in {:.1} s: {:.1} tok/s\n",
        r.completion_tokens,
        Duration::from_secs_f64(r.wall_s).as_secs_f64(),
        r.throughput_tok_s
    ));
    if let Some(e) = &r.first_error {
        out.push_str(&format!("first error: {e}\n"));
    }
    out
}
