//! End-to-end behaviour of one neuron: real `cortex serve` processes with generated tiny
//! models, driven over HTTP.

mod common;

use std::io::Read;
use std::time::Duration;

use common::{client, post, sse_events, tiny_model, Neuron, TempDir};
use serde_json::{json, Value};

fn chat(model: &str, max_tokens: u32, stream: bool) -> Value {
    json!({
        "model": model,
        "messages": [{"role": "user", "content": "hello there"}],
        "max_tokens": max_tokens,
        "temperature": 0,
        "stream": stream,
        "stream_options": {"include_usage": true},
    })
}

#[test]
fn concurrent_streams_all_complete_with_usage() {
    let dir = TempDir::new("concurrent");
    tiny_model(dir.path(), "tiny");
    let n = Neuron::start(dir.path(), &[]);
    let url = n.url("/v1/chat/completions");
    let handles: Vec<_> = (0..16)
        .map(|i| {
            let url = url.clone();
            std::thread::spawn(move || {
                let body = chat("tiny", 8 + i, true);
                let resp = client().post(&url).json(&body).send().unwrap();
                assert_eq!(resp.status(), 200);
                let events = sse_events(resp);
                assert_eq!(events.last().map(|e| e.1.as_str()), Some("[DONE]"));
                let usage: Value = serde_json::from_str(&events[events.len() - 2].1).unwrap();
                let text: String = events
                    .iter()
                    .filter_map(|(_, d)| serde_json::from_str::<Value>(d).ok())
                    .filter_map(|c| c.pointer("/choices/0/delta/content").and_then(Value::as_str).map(str::to_string))
                    .collect();
                (i, usage["usage"].clone(), text)
            })
        })
        .collect();
    for h in handles {
        let (i, usage, text) = h.join().unwrap();
        // The tiny model never emits end-of-text, so each stream runs to its own max_tokens.
        assert_eq!(usage["completion_tokens"], 8 + i, "request {i}: {usage}");
        assert!(usage["prompt_tokens"].as_u64().unwrap() > 0);
        assert!(!text.is_empty(), "request {i} streamed no text");
    }
    // The gauges drop once a stream's last byte has gone out, a moment after the client read it.
    let settled = || n.metric("cortex_in_flight_requests", &[]) == 0.0 && n.metric("cortex_queue_depth", &[]) == 0.0;
    assert!(n.eventually(std::time::Duration::from_secs(5), settled), "in-flight or queue gauge stuck above 0");
    assert_eq!(n.metric("cortex_requests_total", &["status=\"200\""]), 16.0);
    let expected: f64 = (0..16).map(|i| 8.0 + i as f64).sum();
    assert_eq!(n.metric("cortex_completion_tokens_total", &[]), expected);
    // The loaded model's engine and kernel family are named, once.
    let level = format!("kernels=\"cortex-{}", cortex_kernels::level().as_str());
    assert_eq!(n.metric("cortex_model_kernels_info", &["model=\"tiny\"", "engine=\"cortex-cpu\"", &level]), 1.0);
}

/// Requests that arrive together run in shared engine steps (batched on the CPU decoder), and
/// each still gets, token for token, the greedy answer it gets alone.
#[test]
fn concurrent_greedy_requests_share_steps_and_answer_as_they_do_alone() {
    let dir = TempDir::new("batched");
    tiny_model(dir.path(), "tiny");
    let n = Neuron::start(dir.path(), &[]);
    concurrent_answers_match_solo_ones(&n, "tiny");
}

/// The same with the batched decoder (the GPU's default) on the CPU (`CORTEX_ENGINE=batched`),
/// for llama and Gemma 3 GGUF files and a qwen3 safetensors repository.
#[test]
fn the_batched_decoder_answers_concurrent_requests_as_it_answers_them_alone() {
    use cortex_neuron::testutil::{write_tiny_gguf, write_tiny_safetensors, GgufArch, SafetensorsArch, TinyLlama};
    let dir = TempDir::new("batched-decoder");
    tiny_model(dir.path(), "tiny");
    write_tiny_safetensors(&dir.path().join("tiny-qwen3-st"), SafetensorsArch::Qwen3, TinyLlama::default()).unwrap();
    write_tiny_gguf(&dir.path().join("tiny-gemma3.gguf"), TinyLlama::default(), GgufArch::Gemma3).unwrap();
    let n = Neuron::start_with_env(dir.path(), &[], &[("CORTEX_ENGINE", "batched")]);
    for model in ["tiny", "tiny-qwen3-st", "tiny-gemma3"] {
        concurrent_answers_match_solo_ones(&n, model);
    }
    let loaded: Vec<String> = n.log().lines().filter(|l| l.contains("loaded")).map(str::to_string).collect();
    assert_eq!(loaded.len(), 3, "{}", n.log());
    assert!(loaded.iter().all(|l| l.contains("engine=\"batched\"") || l.contains("engine=batched")), "{loaded:?}");
}

/// Eight greedy requests one after another, then all at once: the same answers, and some steps
/// ran several sequences.
fn concurrent_answers_match_solo_ones(n: &Neuron, model: &str) {
    fn answer(url: &str, model: &str, i: usize) -> String {
        let body = json!({
            "model": model,
            "messages": [{"role": "user", "content": format!("request {i}: {}", "more words ".repeat(i))}],
            "max_tokens": 120 + 10 * i,
            "temperature": 0,
        });
        let v: Value = client().post(url).json(&body).send().unwrap().json().unwrap();
        v.pointer("/choices/0/message/content").and_then(Value::as_str).expect("an answer").to_string()
    }
    let url = n.url("/v1/chat/completions");
    let alone: Vec<String> = (0..8).map(|i| answer(&url, model, i)).collect();
    let label = format!("model=\"{model}\"");
    let single_steps = || n.metric("cortex_step_sequences_bucket", &[&label, "le=\"1\""]);
    let steps = || n.metric("cortex_step_sequences_count", &[&label]);
    assert_eq!(single_steps(), steps(), "{model}: requests one after another run alone");
    let start = std::sync::Arc::new(std::sync::Barrier::new(8));
    let together: Vec<_> = (0..8)
        .map(|i| {
            let (url, start, model) = (url.clone(), start.clone(), model.to_string());
            std::thread::spawn(move || {
                start.wait();
                answer(&url, &model, i)
            })
        })
        .collect();
    for (i, (h, alone)) in together.into_iter().zip(&alone).enumerate() {
        assert_eq!(&h.join().unwrap(), alone, "{model}: request {i} answered differently beside others");
    }
    assert!(single_steps() < steps(), "{model}: no step ran two sequences together:\n{}", n.log());
}

#[test]
fn a_client_that_disconnects_stops_its_generation() {
    let dir = TempDir::new("disconnect");
    tiny_model(dir.path(), "tiny");
    let n = Neuron::start(dir.path(), &[]);
    let mut resp = client().post(n.url("/v1/chat/completions")).json(&chat("tiny", 400, true)).send().unwrap();
    let mut buf = [0u8; 256];
    let got = resp.read(&mut buf).unwrap();
    assert!(got > 0, "the stream started");
    drop(resp);
    let stopped = n.eventually(Duration::from_secs(30), || n.metric("cortex_generations_cancelled_total", &[]) == 1.0);
    assert!(stopped, "generation was not cancelled:\n{}", n.log());
    assert!(n.eventually(Duration::from_secs(10), || n.metric("cortex_in_flight_requests", &[]) == 0.0));
    // Stopped early: far fewer than the 400 tokens asked for were generated.
    assert!(n.log().contains("client went away"), "{}", n.log());
    assert_eq!(n.metric("cortex_completion_tokens_total", &[]), 0.0);
}

#[test]
fn a_full_queue_answers_429_with_retry_after() {
    let dir = TempDir::new("queue");
    // The slow model holds the slot for seconds; the tiny one finishes 480 tokens in a blink.
    common::slow_model(dir.path(), "slow");
    let cfg = dir.path().join("cortex.toml");
    std::fs::write(&cfg, "[engine]\nmax_active = 1\nqueue_capacity = 0\n").unwrap();
    let n = Neuron::start(dir.path(), &["--config", cfg.to_str().unwrap()]);
    let url = n.url("/v1/chat/completions");
    // Hold the only slot with a long generation, then ask again.
    let mut long = client().post(&url).json(&chat("slow", 480, true)).send().unwrap();
    let mut buf = [0u8; 64];
    assert!(long.read(&mut buf).unwrap() > 0);
    let resp = client().post(&url).json(&chat("slow", 4, false)).send().unwrap();
    assert_eq!(resp.status(), 429);
    assert_eq!(resp.headers().get("retry-after").and_then(|v| v.to_str().ok()), Some("1"));
    let body: Value = resp.json().unwrap();
    assert_eq!(body["error"]["type"], "rate_limit_error");
    drop(long);
    // Once the slot frees up the same request is served.
    assert!(n.eventually(Duration::from_secs(30), || post(&url, &chat("slow", 4, false)).0 == 200));
}

#[test]
fn max_tokens_beyond_the_context_is_lowered_and_a_prompt_over_it_is_a_clear_400() {
    let dir = TempDir::new("context");
    tiny_model(dir.path(), "tiny");
    let n = Neuron::start(dir.path(), &[]);
    // The tiny model's context is 512 tokens: max_tokens 600 is lowered to the room the prompt
    // leaves, so the answer never runs past the context.
    let (status, body) = post(&n.url("/v1/chat/completions"), &chat("tiny", 600, false));
    assert_eq!(status, 200, "{body}");
    let usage = &body["usage"];
    let total = usage["prompt_tokens"].as_u64().unwrap() + usage["completion_tokens"].as_u64().unwrap();
    assert!(total <= 512, "{usage}");
    if body["choices"][0]["finish_reason"] == "length" {
        assert_eq!(total, 512, "{usage}");
    }
    // A prompt longer than the context: each dialect's own wording.
    let long = "word ".repeat(600);
    let req = json!({"model": "tiny", "max_tokens": 10, "messages": [{"role": "user", "content": long}]});
    let (status, body) = post(&n.url("/v1/messages"), &req);
    assert_eq!(status, 400);
    assert_eq!(body["type"], "error");
    assert_eq!(body["error"]["type"], "invalid_request_error");
    let m = body["error"]["message"].as_str().unwrap();
    assert!(m.starts_with("prompt is too long: ") && m.ends_with(" tokens > 512 maximum"), "{m}");
    let (status, body) = post(&n.url("/v1/chat/completions"), &req);
    assert_eq!(status, 400);
    assert_eq!(body["error"]["code"], "context_length_exceeded");
    let m = body["error"]["message"].as_str().unwrap();
    assert!(m.starts_with("This model's maximum context length is 512 tokens."), "{m}");
    assert_eq!(client().get(n.url("/health")).send().unwrap().status(), 200);
}

#[test]
fn strict_context_refuses_max_tokens_beyond_the_context_in_anthropic_s_words() {
    let dir = TempDir::new("strict");
    tiny_model(dir.path(), "tiny");
    let cfg = dir.path().join("cortex.toml");
    std::fs::write(&cfg, "[engine]\nstrict_context = true\n").unwrap();
    let n = Neuron::start(dir.path(), &["--config", cfg.to_str().unwrap()]);
    let req = json!({"model": "tiny", "max_tokens": 32000, "messages": [{"role": "user", "content": "hello there"}]});
    let (status, body) = post(&n.url("/v1/messages"), &req);
    assert_eq!(status, 400, "{body}");
    // The wording Claude Code parses to lower max_tokens and retry.
    let m = body["error"]["message"].as_str().unwrap();
    let figures = m
        .strip_prefix("input length and `max_tokens` exceed context limit: ")
        .and_then(|r| r.strip_suffix(", decrease input length or `max_tokens` and try again"))
        .unwrap_or_else(|| panic!("{m}"));
    let (sum, limit) = figures.split_once(" > ").unwrap();
    let (prompt, max) = sum.split_once(" + ").unwrap();
    assert_eq!((max, limit), ("32000", "512"), "{m}");
    let prompt: u32 = prompt.parse().unwrap();
    let mut fits = req.clone();
    fits["max_tokens"] = json!(512 - prompt);
    assert_eq!(post(&n.url("/v1/messages"), &fits).0, 200);
}

#[test]
fn models_toml_sets_a_model_s_context_and_chat_template() {
    let dir = TempDir::new("per-model");
    let file = tiny_model(dir.path(), "tiny");
    let models = dir.path().join("models.toml");
    let toml = format!(
        "[models.\"tiny\"]\npath = \"{}\"\ncontext = 64\ntemperature = 0\nchat_template = \"{{% for m in messages %}}{{{{ m.content }}}}{{% endfor %}}\"\n",
        file.display()
    );
    std::fs::write(&models, toml).unwrap();
    let n = Neuron::start(dir.path(), &["--models-config", models.to_str().unwrap()]);
    // The template renders only the messages' text: the prompt counts as the raw text does.
    let counted = post(
        &n.url("/v1/messages/count_tokens"),
        &json!({"model": "tiny", "messages": [{"role": "user", "content": "hello there"}]}),
    );
    let raw = post(&n.url("/v1/completions"), &json!({"model": "tiny", "prompt": "hello there", "max_tokens": 1}));
    assert_eq!((counted.0, raw.0), (200, 200), "{counted:?} {raw:?}");
    assert_eq!(counted.1["input_tokens"], raw.1["usage"]["prompt_tokens"]);
    // Requests that set no temperature get the model's 0: the same text every time (the random
    // tiny model samples a different text each time at the default of 1).
    let free = json!({"model": "tiny", "max_tokens": 24, "messages": [{"role": "user", "content": "hello"}]});
    let texts: Vec<Value> = (0..3)
        .map(|_| post(&n.url("/v1/chat/completions"), &free).1["choices"][0]["message"]["content"].clone())
        .collect();
    assert!(texts.iter().all(|t| t == &texts[0] && t.is_string()), "{texts:?}");
    // The context is the file's 64, not the model's 512.
    let (status, body) = post(&n.url("/v1/chat/completions"), &chat("tiny", 600, false));
    assert_eq!(status, 200, "{body}");
    let usage = &body["usage"];
    assert!(usage["prompt_tokens"].as_u64().unwrap() + usage["completion_tokens"].as_u64().unwrap() <= 64, "{usage}");
    let long =
        json!({"model": "tiny", "max_tokens": 4, "messages": [{"role": "user", "content": "word ".repeat(100)}]});
    let (status, body) = post(&n.url("/v1/messages"), &long);
    assert_eq!(status, 400);
    assert!(body["error"]["message"].as_str().unwrap().ends_with(" tokens > 64 maximum"), "{body}");
}

#[test]
fn same_seed_same_text_and_stop_strings_cut_cleanly() {
    let dir = TempDir::new("seed");
    tiny_model(dir.path(), "tiny");
    let n = Neuron::start(dir.path(), &[]);
    let url = n.url("/v1/chat/completions");
    let sampled = |seed: u64| {
        let mut req = chat("tiny", 24, false);
        req["temperature"] = json!(1.0);
        req["seed"] = json!(seed);
        let (status, body) = post(&url, &req);
        assert_eq!(status, 200, "{body}");
        body["choices"][0]["message"]["content"].as_str().unwrap().to_string()
    };
    assert_eq!(sampled(11), sampled(11));
    assert!((12..16).any(|s| sampled(s) != sampled(11)), "different seeds never changed the text");

    // Greedy text, then the same request stopped at a piece from its middle.
    let (_, body) = post(&url, &chat("tiny", 40, false));
    let full = body["choices"][0]["message"]["content"].as_str().unwrap().to_string();
    let chars: Vec<char> = full.chars().collect();
    let stop: String = chars[chars.len() / 2..chars.len() / 2 + 2].iter().collect();
    let before = &full[..full.find(&stop).unwrap()];
    let mut req = chat("tiny", 40, true);
    req["stop"] = json!([stop]);
    let events = sse_events(client().post(&url).json(&req).send().unwrap());
    let streamed: String = events
        .iter()
        .filter_map(|(_, d)| serde_json::from_str::<Value>(d).ok())
        .filter_map(|c| c.pointer("/choices/0/delta/content").and_then(Value::as_str).map(str::to_string))
        .collect();
    assert_eq!(streamed, before, "stop {stop:?} in {full:?}");
}

#[test]
fn a_corrupt_model_fails_its_requests_and_the_neuron_serves_the_others() {
    let dir = TempDir::new("corrupt");
    let good = tiny_model(dir.path(), "tiny");
    let bytes = std::fs::read(&good).unwrap();
    std::fs::write(dir.path().join("broken.gguf"), &bytes[..bytes.len() / 3]).unwrap();
    let n = Neuron::start(dir.path(), &[]);
    let (status, body) = post(&n.url("/v1/chat/completions"), &chat("broken", 4, false));
    assert_eq!(status, 503, "{body}");
    assert!(body["error"]["message"].as_str().unwrap().contains("failed to load"), "{body}");
    let (status, _) = post(&n.url("/v1/chat/completions"), &chat("tiny", 4, false));
    assert_eq!(status, 200);
    let models: Value = client().get(n.url("/v1/models")).send().unwrap().json().unwrap();
    let broken = models["data"].as_array().unwrap().iter().find(|m| m["id"] == "broken").unwrap();
    assert_eq!(broken["loaded"], false);
    assert!(broken["last_error"].as_str().is_some(), "{broken}");
}

#[test]
fn sigterm_lets_a_running_stream_finish_then_exits_zero() {
    let dir = TempDir::new("sigterm");
    common::slow_model(dir.path(), "slow");
    // A grace long enough for 200 tokens on a busy CI machine: the test is that the stream
    // finishes, not how fast.
    let cfg = dir.path().join("cortex.toml");
    std::fs::write(&cfg, "[server]\nshutdown_grace_secs = 300\n").unwrap();
    let n = Neuron::start(dir.path(), &["--config", cfg.to_str().unwrap()]);
    let url = n.url("/v1/chat/completions");
    let stream =
        std::thread::spawn(move || sse_events(client().post(&url).json(&chat("slow", 200, true)).send().unwrap()));
    assert!(n.eventually(Duration::from_secs(30), || n.metric("cortex_in_flight_requests", &[]) == 1.0));
    let status = n.terminate();
    assert!(status.success(), "exit status {status}");
    let events = stream.join().unwrap();
    assert_eq!(events.last().map(|e| e.1.as_str()), Some("[DONE]"), "the stream was cut off");
    let usage: Value = serde_json::from_str(&events[events.len() - 2].1).unwrap();
    assert_eq!(usage["usage"]["completion_tokens"], 200);
}

#[test]
fn qwen2_and_qwen3_gguf_files_serve_chats() {
    use cortex_neuron::testutil::{write_tiny_gguf, GgufArch, TinyLlama};
    let dir = TempDir::new("qwen-gguf");
    write_tiny_gguf(&dir.path().join("tiny-qwen2.gguf"), TinyLlama::default(), GgufArch::Qwen2).unwrap();
    write_tiny_gguf(&dir.path().join("tiny-qwen3.gguf"), TinyLlama::default(), GgufArch::Qwen3).unwrap();
    let n = Neuron::start(dir.path(), &[]);
    for model in ["tiny-qwen2", "tiny-qwen3"] {
        let (status, body) = post(&n.url("/v1/chat/completions"), &chat(model, 6, false));
        assert_eq!(status, 200, "{model}: {body}\n{}", n.log());
        assert_eq!(body["usage"]["completion_tokens"], 6, "{body}");
        assert!(!body["choices"][0]["message"]["content"].as_str().unwrap().is_empty(), "{body}");
    }
    // qwen2 runs one sequence at a time (its candle weights cannot be cloned): two concurrent
    // streams both complete, one after the other.
    let url = n.url("/v1/chat/completions");
    let streams: Vec<_> = (0..2)
        .map(|_| {
            let url = url.clone();
            std::thread::spawn(move || {
                sse_events(client().post(&url).json(&chat("tiny-qwen2", 8, true)).send().unwrap())
            })
        })
        .collect();
    for s in streams {
        assert_eq!(s.join().unwrap().last().map(|e| e.1.clone()), Some("[DONE]".to_string()));
    }
}

#[test]
fn safetensors_repositories_serve_llama_and_qwen3() {
    use cortex_neuron::testutil::{write_tiny_safetensors, SafetensorsArch, TinyLlama};
    let dir = TempDir::new("safetensors");
    write_tiny_safetensors(&dir.path().join("tiny-llama-st"), SafetensorsArch::Llama, TinyLlama::default()).unwrap();
    write_tiny_safetensors(&dir.path().join("tiny-qwen3-st"), SafetensorsArch::Qwen3, TinyLlama::default()).unwrap();
    let n = Neuron::start(dir.path(), &[]);
    for model in ["tiny-llama-st", "tiny-qwen3-st"] {
        let (status, body) = post(&n.url("/v1/chat/completions"), &chat(model, 6, false));
        assert_eq!(status, 200, "{model}: {body}");
        assert_eq!(body["model"], model);
        assert!(body["usage"]["completion_tokens"].as_u64().unwrap() >= 1, "{body}");
    }
    let models: Value = client().get(n.url("/v1/models")).send().unwrap().json().unwrap();
    let format =
        |id: &str| models["data"].as_array().unwrap().iter().find(|m| m["id"] == id).map(|m| m["format"].clone());
    assert_eq!(format("tiny-llama-st"), Some(json!("safetensors")));
    assert_eq!(format("tiny-qwen3-st"), Some(json!("safetensors")));
}
