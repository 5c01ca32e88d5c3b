//! `cortex bench` against a real neuron: its figures agree with the neuron's own Prometheus
//! counters for the same run, in both dialects; a run where everything failed exits 1; `--probe`
//! answers once per model; `--turns` replays conversations whose later turns come from the
//! prefix cache, which `cortex status` and the metrics show.

mod common;

use std::process::{Command, Output};

use common::{cortex_bin, roomy_tiny_model, tiny_model, Neuron, TempDir};
use serde_json::Value;

fn cortex(n: &Neuron, args: &[&str]) -> Output {
    Command::new(cortex_bin())
        .args(args)
        .env("CORTEX_ENDPOINT", &n.http)
        .env_remove("CORTEX_API_KEY")
        .env("NO_COLOR", "1")
        .env("XDG_CONFIG_HOME", "/nonexistent")
        .output()
        .unwrap()
}

fn json(o: &Output) -> Value {
    assert!(o.status.success(), "failed: {}", String::from_utf8_lossy(&o.stderr));
    serde_json::from_slice(&o.stdout).expect("stdout is one JSON document")
}

/// The neuron's counters for the tiny model: (200 requests, prompt tokens, completion tokens).
fn counters(n: &Neuron, api: &str) -> (f64, f64, f64) {
    (
        n.metric("cortex_requests_total", &["model=\"tiny\"", &format!("api=\"{api}\""), "status=\"200\""]),
        n.metric("cortex_prompt_tokens_total", &["model=\"tiny\""]),
        n.metric("cortex_completion_tokens_total", &["model=\"tiny\""]),
    )
}

/// Checks one `--concurrency 1,3 --requests 6 --max-tokens 5` report against the counters'
/// growth over the run.
fn check_against_counters(report: &Value, before: (f64, f64, f64), after: (f64, f64, f64)) {
    let u = |v: &Value| v.as_u64().unwrap_or_else(|| panic!("not a count: {v}")) as f64;
    let totals = &report["totals"];
    assert_eq!(u(&totals["ok"]), 12.0, "{report:#}");
    assert_eq!(u(&totals["requests"]), after.0 - before.0, "requests vs cortex_requests_total");
    assert_eq!(u(&totals["prompt_tokens"]), after.1 - before.1, "prompt tokens vs cortex_prompt_tokens_total");
    assert_eq!(
        u(&totals["completion_tokens"]),
        after.2 - before.2,
        "completion tokens vs cortex_completion_tokens_total"
    );
    // The tiny model never ends on its own: every request yields exactly max-tokens.
    assert_eq!(u(&totals["completion_tokens"]), 12.0 * 5.0);
    assert!(u(&totals["prompt_tokens"]) > 0.0);
    assert_eq!(totals["errors"], serde_json::json!({}));

    let levels = report["levels"].as_array().expect("levels");
    let conc: Vec<u64> = levels.iter().map(|l| l["concurrency"].as_u64().unwrap()).collect();
    assert_eq!(conc, [1, 3]);
    for l in levels {
        assert_eq!((l["model"].as_str(), u(&l["requests"]), u(&l["ok"])), (Some("tiny"), 6.0, 6.0), "{l:#}");
        assert_eq!(u(&l["completion_tokens"]), 30.0);
        let ttft = l["ttft_ms"]["p50"].as_f64().expect("a TTFT p50");
        let wall_ms = l["wall_s"].as_f64().unwrap() * 1e3;
        assert!(ttft > 0.0 && ttft <= wall_ms, "TTFT p50 {ttft} ms vs the level's {wall_ms} ms: {l:#}");
        assert!(l["ttft_ms"]["p50"].as_f64() <= l["ttft_ms"]["p99"].as_f64(), "{l:#}");
        assert!(l["aggregate_tok_s"].as_f64().unwrap() > 0.0 && l["requests_per_s"].as_f64().unwrap() > 0.0);
        assert!(l["itl_ms"]["p50"].as_f64().is_some(), "{l:#}");
    }
}

#[test]
fn bench_figures_agree_with_the_neurons_counters_in_both_dialects() {
    let dir = TempDir::new("bench");
    tiny_model(dir.path(), "tiny");
    let n = Neuron::start(dir.path(), &[]);
    let args = ["bench", "tiny", "--concurrency", "1,3", "--requests", "6", "--max-tokens", "5", "--json"];

    let before = counters(&n, "chat_completions");
    let report = json(&cortex(&n, &args));
    assert_eq!(report["api"], "openai");
    check_against_counters(&report, before, counters(&n, "chat_completions"));

    let before = counters(&n, "messages");
    let report = json(&cortex(&n, &[&args[..], &["--api", "anthropic"]].concat()));
    assert_eq!(report["api"], "anthropic");
    check_against_counters(&report, before, counters(&n, "messages"));

    // The table for people has a row per level with the same counts.
    let out = cortex(&n, &["bench", "tiny", "--concurrency", "2", "--requests", "3", "--max-tokens", "4"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let table = String::from_utf8_lossy(&out.stdout);
    let rows: Vec<&str> = table.lines().filter(|l| l.starts_with("tiny ")).collect();
    assert_eq!(rows.len(), 1, "{table}");
    assert!(rows[0].contains(" 3/3 ") && rows[0].contains(" 12 "), "{table}");
}

#[test]
fn a_run_where_everything_failed_exits_1_and_probe_answers_once_per_model() {
    let dir = TempDir::new("bench-probe");
    tiny_model(dir.path(), "tiny");
    tiny_model(dir.path(), "tiny2");
    let n = Neuron::start(dir.path(), &[]);

    let failed = cortex(&n, &["bench", "no-such-model", "--requests", "2", "--json"]);
    assert_eq!(failed.status.code(), Some(1), "{failed:?}");
    let report: Value = serde_json::from_slice(&failed.stdout).expect("the report is still printed");
    assert_eq!(report["totals"]["ok"], 0);
    assert_eq!(report["totals"]["errors"]["http_4xx"], 4, "{report:#}");
    assert!(String::from_utf8_lossy(&failed.stderr).contains("404"), "{failed:?}");

    let answers = json(&cortex(&n, &["bench", "tiny", "tiny2", "--probe", "hi", "--max-tokens", "4", "--json"]));
    let answers = answers.as_array().expect("one JSON array");
    let models: Vec<&str> = answers.iter().map(|a| a["model"].as_str().unwrap()).collect();
    assert_eq!(models, ["tiny", "tiny2"]);
    for a in answers {
        assert!(a["answer"].as_str().is_some_and(|t| !t.is_empty()), "{a:#}");
        assert_eq!(a["completion_tokens"], 4, "{a:#}");
        assert!(a["latency_ms"].as_f64().unwrap() > 0.0);
    }
    let out = cortex(&n, &["bench", "tiny", "tiny2", "--probe", "hi", "--max-tokens", "4", "--api", "anthropic"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let table = String::from_utf8_lossy(&out.stdout);
    assert_eq!(table.lines().filter(|l| l.starts_with("tiny ") || l.starts_with("tiny2 ")).count(), 2, "{table}");
}

/// `--api embeddings` on all-MiniLM-L6-v2 (from models/, fetched by .ci/run): every input of
/// every request is embedded, and the prompt tokens agree with the neuron's counter.
#[test]
fn bench_drives_an_embedding_model_and_agrees_with_the_neurons_counters() {
    let minilm = common::real_model("all-MiniLM-L6-v2");
    let dir = TempDir::new("bench-embed");
    std::os::unix::fs::symlink(&minilm, dir.path().join("all-MiniLM-L6-v2")).unwrap();
    let n = Neuron::start(dir.path(), &[]);
    let tokens = || n.metric("cortex_prompt_tokens_total", &["model=\"all-MiniLM-L6-v2\""]);
    let before = tokens();
    let args = ["bench", "helexa/embed", "--api", "embeddings", "--batch", "5", "-c", "1,2", "-n", "4", "--json"];
    let report = json(&cortex(&n, &args));
    assert_eq!((report["api"].as_str(), report["batch"].as_u64()), (Some("embeddings"), Some(5)));
    assert_eq!(report["totals"]["ok"], 8, "{report:#}");
    assert_eq!(report["totals"]["prompt_tokens"].as_f64(), Some(tokens() - before), "{report:#}");
    for l in report["levels"].as_array().unwrap() {
        let wall = l["wall_s"].as_f64().unwrap();
        // wall_s is rounded to the millisecond in the report, the rate is not.
        let rate = l["inputs_per_s"].as_f64().unwrap();
        assert!((rate - 20.0 / wall).abs() <= 0.01 * rate + 0.01, "{rate} inputs/s for 20 inputs in {wall} s: {l:#}");
        assert!(l["latency_ms"]["p50"].as_f64().unwrap() <= wall * 1e3, "{l:#}");
    }
    // `--probe` asks a question, which an embedding run cannot: exit 1 saying what to do.
    let failed = cortex(&n, &["bench", "helexa/embed", "--api", "embeddings", "--probe", "hi"]);
    assert_eq!(failed.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&failed.stderr).contains("--api openai or anthropic"), "{failed:?}");
}

#[test]
fn multi_turn_replays_are_served_from_the_prefix_cache() {
    let dir = TempDir::new("bench-turns");
    roomy_tiny_model(dir.path(), "tiny");
    let n = Neuron::start(dir.path(), &[]);
    let args = [
        "bench",
        "tiny",
        "--turns",
        "3",
        "--sessions",
        "2",
        "--system-tokens",
        "150",
        "--prompt-tokens",
        "10",
        "--max-tokens",
        "4",
        "--session-header",
        "--json",
    ];
    let report = json(&cortex(&n, &args));
    let turns = report["per_turn"].as_array().unwrap();
    assert_eq!(turns.len(), 3, "{report}");
    for t in turns {
        assert_eq!((t["ok"].as_u64(), t["failed"].as_u64()), (Some(2), Some(0)), "{report}");
    }
    // Each later turn resends the conversation: most of its prompt is already cached.
    for t in &turns[1..] {
        assert!(t["cached_share"].as_f64().unwrap() > 0.5, "{report}");
        assert!(t["prompt_tokens_mean"].as_f64() > turns[0]["prompt_tokens_mean"].as_f64(), "{report}");
    }
    assert!(n.metric("cortex_prefix_hit_tokens_total", &["tiny"]) > 0.0);
    assert!(n.metric("cortex_prefix_cache_bytes", &["tiny"]) > 0.0);
    // cortex status shows the cache and its hit ratio.
    let status = cortex(&n, &["status"]);
    let table = String::from_utf8_lossy(&status.stdout);
    let row = table.lines().find(|l| l.starts_with("tiny ")).unwrap_or_else(|| panic!("{table}"));
    assert!(table.contains("PREFIX CACHE") && row.contains(" MiB") && row.trim_end().ends_with('%'), "{table}");
}
