//! A model whose chat template renders tools (Hermes style) calls them in its own format,
//! through a real `cortex serve`: the template gets the tools, the grammar holds the call to
//! `<tool_call>{…}</tool_call>`, and the parsed call comes back in both dialects.

mod common;

use common::{client, post, Neuron, TempDir};
use cortex_neuron::testutil::{write_tiny_gguf_with_template, GgufArch, TinyLlama, HERMES_TEMPLATE};
use serde_json::{json, Value};

fn weather_schema() -> Value {
    json!({"type": "object", "properties": {"city": {"type": "string"}, "days": {"type": "integer"}},
           "required": ["city", "days"], "additionalProperties": false})
}

fn hermes_neuron(dir: &TempDir) -> Neuron {
    write_tiny_gguf_with_template(
        &dir.path().join("hermes.gguf"),
        // The tiny vocabulary spends a token a byte or two: the tools need room.
        TinyLlama { context: 4096, ..TinyLlama::default() },
        GgufArch::Llama,
        HERMES_TEMPLATE,
    )
    .expect("write the tiny Hermes model");
    Neuron::start(dir.path(), &[])
}

#[test]
fn a_hermes_model_calls_tools_in_its_own_format_through_both_dialects() {
    let dir = TempDir::new("agents-hermes");
    let n = hermes_neuron(&dir);
    let tools = json!([{"type": "function", "function": {"name": "get_weather", "parameters": weather_schema()}}]);
    for seed in 0..3 {
        let body = json!({"model": "hermes", "max_tokens": 1500, "temperature": 0.9, "seed": seed,
                          "messages": [{"role": "user", "content": "weather?"}],
                          "tools": tools, "tool_choice": "required", "parallel_tool_calls": false});
        let (code, r) = post(&n.url("/v1/chat/completions"), &body);
        assert_eq!(code, 200, "{r}\n{}", n.log());
        let choice = &r["choices"][0];
        assert_eq!(choice["finish_reason"], "tool_calls", "{r}");
        let call = &choice["message"]["tool_calls"][0]["function"];
        assert_eq!(call["name"], "get_weather");
        let args: Value = serde_json::from_str(call["arguments"].as_str().unwrap()).unwrap();
        assert!(args["city"].is_string() && args["days"].is_i64(), "{args}");
    }
    // Anthropic, streamed: a tool_use block whose input arrives as input_json_delta fragments.
    let body = json!({"model": "hermes", "max_tokens": 1500, "stream": true,
                      "messages": [{"role": "user", "content": "weather?"}],
                      "tools": [{"name": "get_weather", "input_schema": weather_schema()}],
                      "tool_choice": {"type": "tool", "name": "get_weather", "disable_parallel_tool_use": true}});
    let resp = client().post(n.url("/v1/messages")).json(&body).send().unwrap();
    let events = common::sse_events(resp);
    let start = events.iter().find(|(e, d)| e.as_deref() == Some("content_block_start") && d.contains("tool_use"));
    assert!(start.is_some_and(|(_, d)| d.contains("\"name\":\"get_weather\"")), "{events:?}");
    let partial: String = events
        .iter()
        .filter(|(e, _)| e.as_deref() == Some("content_block_delta"))
        .filter_map(|(_, d)| serde_json::from_str::<Value>(d).ok())
        .filter_map(|v| v["delta"]["partial_json"].as_str().map(str::to_string))
        .collect();
    let input: Value = serde_json::from_str(&partial).unwrap_or_else(|e| panic!("{e}: {partial}"));
    assert!(input["city"].is_string(), "{input}");
    assert!(events.iter().any(|(_, d)| d.contains("\"stop_reason\":\"tool_use\"")), "{events:?}");
    // Free to answer (auto): whatever the random model writes comes back, no call forced on it.
    // (A random model needs up to 256 tokens per free string, hence the budgets above.)
    let body = json!({"model": "hermes", "max_tokens": 8, "temperature": 0,
                      "messages": [{"role": "user", "content": "hi"}], "tools": tools});
    let (code, r) = post(&n.url("/v1/chat/completions"), &body);
    assert_eq!(code, 200, "{r}");
    assert!(r["choices"][0]["finish_reason"] == "length" || r["choices"][0]["finish_reason"] == "stop", "{r}");
}
