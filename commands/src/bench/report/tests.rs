use std::time::Duration;

use serde_json::json;

use super::*;

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn sample(ttft: u64, gaps: &[u64], prompt: u64, completion: u64) -> Sample {
    Sample {
        ttft: Some(ms(ttft)),
        gaps: gaps.iter().map(|&g| ms(g)).collect(),
        total: ms(ttft + gaps.iter().sum::<u64>()),
        prompt_tokens: prompt,
        completion_tokens: completion,
        ..Sample::default()
    }
}

#[test]
fn percentiles_are_nearest_rank() {
    let v: Vec<u32> = (1..=10).collect();
    assert_eq!(percentile(&v, 50.0), Some(5));
    assert_eq!(percentile(&v, 95.0), Some(10));
    assert_eq!(percentile(&v, 99.0), Some(10));
    assert_eq!(percentile(&v, 10.0), Some(1));
    assert_eq!(percentile(&v, 0.0), Some(1));
    assert_eq!(percentile(&[7], 99.0), Some(7));
    assert_eq!(percentile::<u32>(&[], 50.0), None);
    let hundred: Vec<u32> = (1..=100).collect();
    assert_eq!((percentile(&hundred, 95.0), percentile(&hundred, 99.0)), (Some(95), Some(99)));
}

#[test]
fn a_level_sums_what_the_server_reported_and_counts_failures_by_kind() {
    let outcomes = vec![
        Ok(sample(100, &[10, 10, 10, 10], 40, 5)),
        Ok(sample(300, &[20, 20, 20, 20], 40, 5)),
        Err(Failure::http(404, "model `x` is not available")),
        Err(Failure::new("stream", "the stream broke off")),
    ];
    let l = Level::new("m", 2, &outcomes, Duration::from_secs(2));
    assert_eq!((l.requests, l.ok, l.prompt_tokens, l.completion_tokens), (4, 2, 80, 10));
    assert_eq!(l.errors, BTreeMap::from([("http_4xx", 1), ("stream", 1)]));
    assert_eq!(l.first_error.as_deref(), Some("the neuron answered 404: model `x` is not available"));
    assert_eq!((l.aggregate_tok_s, l.requests_per_s), (5.0, 1.0));
    assert_eq!(l.ttft_ms, Spread { p50: Some(100.0), p95: Some(300.0), p99: Some(300.0) });
    assert_eq!(l.itl_ms, Spread { p50: Some(10.0), p95: Some(20.0), p99: Some(20.0) });
    // 4 tokens after the first in 40 ms and in 80 ms: 100 and 50 tok/s; the median is the lower.
    assert_eq!(l.decode_tok_s_p50, Some(50.0));
}

#[test]
fn a_level_where_everything_failed_has_no_latencies() {
    let l = Level::new("m", 1, &[Err(Failure::new("connection", "refused"))], ms(5));
    assert_eq!((l.ok, l.completion_tokens, l.aggregate_tok_s), (0, 0, 0.0));
    assert_eq!(l.ttft_ms, Spread { p50: None, p95: None, p99: None });
    assert_eq!(l.decode_tok_s_p50, None);
}

#[test]
fn the_report_totals_every_level_and_the_table_has_a_row_each() {
    let mut r = Report::new("http://n", Api::Openai, 64, 5, 2);
    r.push("tiny", 1, &[Ok(sample(5, &[1, 1], 30, 3)), Ok(sample(6, &[1, 1], 30, 3))], ms(20));
    r.push("tiny", 3, &[Ok(sample(5, &[1, 1], 30, 3)), Err(Failure::http(503, "busy"))], ms(10));
    assert_eq!((r.totals.requests, r.totals.ok, r.totals.prompt_tokens, r.totals.completion_tokens), (4, 3, 90, 9));
    assert_eq!(r.totals.errors, BTreeMap::from([("http_5xx", 1)]));
    let table = r.table().unwrap();
    let rows: Vec<&str> = table.lines().filter(|l| l.starts_with("tiny ")).collect();
    assert_eq!(rows.len(), 2, "{table}");
    assert!(rows[0].contains(" 2/2 ") && rows[1].contains("http_5xx=1"), "{table}");
    assert!(table.contains("first error, tiny at concurrency 3: the neuron answered 503: busy"), "{table}");
    let doc = serde_json::to_value(&r).unwrap();
    assert_eq!(doc["levels"][1]["errors"], json!({"http_5xx": 1}));
    assert_eq!(doc["levels"][0]["ttft_ms"]["p50"], json!(5.0));
}

#[test]
fn openai_events() {
    let content = json!({"choices": [{"index": 0, "delta": {"content": "hi"}}], "usage": null});
    assert_eq!(parse_event(Api::Openai, &content).unwrap(), Chunk { text: Some("hi"), ..Chunk::default() });
    let usage = json!({"choices": [], "usage": {"prompt_tokens": 12, "completion_tokens": 5, "total_tokens": 17}});
    let c = parse_event(Api::Openai, &usage).unwrap();
    assert_eq!((c.text, c.prompt_tokens, c.completion_tokens), (None, Some(12), Some(5)));
    let err = json!({"error": {"message": "Overloaded", "type": "server_error"}});
    assert!(parse_event(Api::Openai, &err).unwrap_err().to_string().contains("Overloaded"));
}

#[test]
fn anthropic_events() {
    let start = json!({"type": "message_start", "message": {"usage": {"input_tokens": 9, "output_tokens": 0}}});
    assert_eq!(parse_event(Api::Anthropic, &start).unwrap(), Chunk { prompt_tokens: Some(9), ..Chunk::default() });
    let delta = json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "lo"}});
    assert_eq!(parse_event(Api::Anthropic, &delta).unwrap().text, Some("lo"));
    let end = json!({"type": "message_delta", "delta": {"stop_reason": "max_tokens"}, "usage": {"output_tokens": 5}});
    assert_eq!(parse_event(Api::Anthropic, &end).unwrap(), Chunk { completion_tokens: Some(5), ..Chunk::default() });
    assert_eq!(parse_event(Api::Anthropic, &json!({"type": "ping"})).unwrap(), Chunk::default());
    let err = json!({"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}});
    assert!(parse_event(Api::Anthropic, &err).is_err());
}

#[test]
fn probe_answers_in_both_dialects_fit_on_one_line() {
    let openai = json!({"choices": [{"message": {"content": "Paris.\nIt is."}}], "usage": {"prompt_tokens": 7, "completion_tokens": 4}});
    let a = Answer::new("m1", Api::Openai, ms(12), Ok(openai));
    assert_eq!((a.answer.as_deref(), a.completion_tokens), (Some("Paris.\nIt is."), Some(4)));
    let anthropic =
        json!({"content": [{"type": "text", "text": "Paris"}], "usage": {"input_tokens": 7, "output_tokens": 1}});
    let b = Answer::new("m2", Api::Anthropic, ms(3), Ok(anthropic));
    assert_eq!((b.answer.as_deref(), b.prompt_tokens), (Some("Paris"), Some(7)));
    let c = Answer::new("m3", Api::Openai, ms(1), Err(Failure::http(404, "unknown")));
    let table = probe_table(&[a, b, c]).unwrap();
    assert_eq!(table.lines().count(), 4, "{table}");
    assert!(table.contains("Paris. It is.") && table.contains("error: the neuron answered 404"), "{table}");
}
