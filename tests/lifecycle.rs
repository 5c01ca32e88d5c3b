//! Model lifecycle on one neuron: memory budget and eviction, single-flight loads, keep-alive,
//! unload while serving, pins — real `cortex serve` processes with generated tiny models.

mod common;

use std::path::Path;
use std::time::Duration;

use common::{client, post, tiny_model, Neuron, TempDir};
use serde_json::{json, Value};

fn ask(n: &Neuron, model: &str) -> (u16, Value) {
    let req = json!({"model": model, "max_tokens": 2, "messages": [{"role": "user", "content": "hi"}]});
    post(&n.url("/v1/chat/completions"), &req)
}

fn admin(n: &Neuron, action: &str, model: &str) -> (u16, Value) {
    post(&n.url(&format!("/cortex/v1/{action}")), &json!({ "model": model }))
}

fn states(n: &Neuron) -> Vec<(String, String)> {
    let s: Value = client().get(n.url("/cortex/v1/status")).send().unwrap().json().unwrap();
    s["models"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| (m["id"].as_str().unwrap().to_string(), m["state"].as_str().unwrap().to_string()))
        .collect()
}

fn loaded(n: &Neuron) -> Vec<String> {
    states(n).into_iter().filter(|(_, s)| s == "ready").map(|(id, _)| id).collect()
}

/// Three tiny models, each declared to cost 100 MiB, under a 250 MiB budget: two fit.
fn three_models(dir: &Path, extra: &str) -> std::path::PathBuf {
    let mut toml = String::new();
    for (name, prio) in [("a", 1), ("b", 5), ("c", 3)] {
        let path = tiny_model(dir, name);
        toml.push_str(&format!(
            "[models.\"{name}\"]\npath = \"{}\"\nmemory = \"100MiB\"\npriority = {prio}\n",
            path.display()
        ));
    }
    toml.push_str(extra);
    let file = dir.join("models.toml");
    std::fs::write(&file, toml).unwrap();
    file
}

fn start(dir: &TempDir, extra_toml: &str, args: &[&str]) -> Neuron {
    let models = three_models(dir.path(), extra_toml);
    let empty = dir.path().join("empty");
    std::fs::create_dir_all(&empty).unwrap();
    let mut all = vec!["--models-config", models.to_str().unwrap(), "--memory-budget", "250MiB"];
    all.extend_from_slice(args);
    Neuron::start(&empty, &all)
}

#[test]
fn lru_evicts_the_least_recently_used_model() {
    let dir = TempDir::new("lru");
    let n = start(&dir, "", &["--eviction", "lru"]);
    assert_eq!(ask(&n, "a").0, 200);
    assert_eq!(ask(&n, "b").0, 200);
    assert_eq!(ask(&n, "a").0, 200); // a is now the most recent
    assert_eq!(ask(&n, "c").0, 200);
    assert_eq!(loaded(&n), vec!["a", "c"]);
    assert_eq!(n.metric("cortex_model_evictions_total", &["model=\"b\"", "reason=\"memory\""]), 1.0);
}

#[test]
fn priority_evicts_the_lowest_priority_model() {
    let dir = TempDir::new("priority");
    let n = start(&dir, "", &["--eviction", "priority"]);
    assert_eq!(ask(&n, "a").0, 200); // priority 1
    assert_eq!(ask(&n, "b").0, 200); // priority 5
    assert_eq!(ask(&n, "b").0, 200);
    assert_eq!(ask(&n, "a").0, 200); // most recent, but lowest priority
    assert_eq!(ask(&n, "c").0, 200);
    assert_eq!(loaded(&n), vec!["b", "c"]);
}

#[test]
fn pinned_models_are_never_evicted_and_a_full_node_says_who_holds_it() {
    let dir = TempDir::new("pinned");
    let n = start(&dir, "", &[]);
    assert_eq!(admin(&n, "pin", "a").0, 200);
    assert_eq!(ask(&n, "b").0, 200);
    assert_eq!(ask(&n, "a").0, 200);
    assert_eq!(ask(&n, "c").0, 200); // b goes though a is least recently used
    assert_eq!(loaded(&n), vec!["a", "c"]);
    assert_eq!(admin(&n, "pin", "c").0, 200);
    let (status, body) = ask(&n, "b");
    assert_eq!(status, 503, "{body}");
    let msg = body["error"]["message"].as_str().unwrap();
    assert!(msg.contains("a (100 MiB, pinned)") && msg.contains("c (100 MiB, pinned)"), "{msg}");
    assert_eq!(admin(&n, "unpin", "c").0, 200);
    assert_eq!(ask(&n, "b").0, 200);
    assert_eq!(loaded(&n), vec!["a", "b"]);
}

#[test]
fn a_model_that_is_streaming_is_never_evicted_and_unload_waits_for_nobody() {
    let dir = TempDir::new("busy");
    // Model "slow" takes seconds to stream; with b pinned, c needs slow's room but may not take it.
    let slow = common::slow_model(dir.path(), "slow");
    let extra = format!("[models.\"slow\"]\npath = \"{}\"\nmemory = \"100MiB\"\n", slow.display());
    let n = start(&dir, &extra, &[]);
    assert_eq!(admin(&n, "pin", "b").0, 200);
    let url = n.url("/v1/chat/completions");
    let req =
        json!({"model": "slow", "max_tokens": 400, "stream": true, "messages": [{"role": "user", "content": "go"}]});
    let mut stream = client().post(&url).json(&req).send().unwrap();
    let mut buf = [0u8; 64];
    assert!(std::io::Read::read(&mut stream, &mut buf).unwrap() > 0);
    let (status, body) = ask(&n, "c");
    assert_eq!(status, 503, "{body}");
    assert!(body["error"]["message"].as_str().unwrap().contains("slow (100 MiB, serving requests)"), "{body}");
    // Unloading a model with a request in flight is refused, clearly.
    let (status, body) = admin(&n, "unload", "slow");
    assert_eq!(status, 409, "{body}");
    assert!(body["error"]["message"].as_str().unwrap().contains("in flight"), "{body}");
    // The stream was not cut off by any of this.
    // (After a partial read, the rest of the body is only reachable through Read.)
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut stream, &mut rest).unwrap();
    assert!(rest.trim_end().ends_with("data: [DONE]"), "stream cut off: {rest}");
    assert!(n.eventually(Duration::from_secs(10), || admin(&n, "unload", "slow").0 == 200));
    assert_eq!(loaded(&n), vec!["b"]);
}

#[test]
fn twenty_concurrent_requests_for_a_cold_model_share_one_load() {
    let dir = TempDir::new("single-flight");
    let n = start(&dir, "", &[]);
    let url = n.url("/v1/chat/completions");
    let handles: Vec<_> = (0..20)
        .map(|_| {
            let url = url.clone();
            std::thread::spawn(move || {
                let req = json!({"model": "a", "max_tokens": 3, "messages": [{"role": "user", "content": "hi"}]});
                post(&url, &req).0
            })
        })
        .collect();
    let codes: Vec<u16> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    assert_eq!(codes, vec![200; 20]);
    assert_eq!(n.metric("cortex_model_loads_total", &["model=\"a\"", "outcome=\"ok\""]), 1.0);
}

#[test]
fn keep_alive_unloads_idle_models_and_requests_extend_it() {
    let dir = TempDir::new("keep-alive");
    let n = start(&dir, "", &[]);
    // keep_alive 1s from the request: unloaded soon after.
    let req = |model: &str, ka: Value| json!({"model": model, "max_tokens": 2, "keep_alive": ka, "messages": [{"role": "user", "content": "hi"}]});
    assert_eq!(post(&n.url("/v1/chat/completions"), &req("a", json!("1s"))).0, 200);
    assert_eq!(loaded(&n), vec!["a"]);
    assert!(n.eventually(Duration::from_secs(20), || loaded(&n).is_empty()), "a stayed loaded");
    assert_eq!(n.metric("cortex_model_evictions_total", &["model=\"a\"", "reason=\"idle\""]), 1.0);
    // A request extends it: 1s, then 600 seconds.
    assert_eq!(post(&n.url("/v1/chat/completions"), &req("b", json!(1))).0, 200);
    assert_eq!(post(&n.url("/v1/messages"), &req("b", json!("10m"))).0, 200);
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(loaded(&n), vec!["b"]);
    // keep_alive 0 unloads right after the request.
    assert_eq!(post(&n.url("/v1/chat/completions"), &req("b", json!(0))).0, 200);
    assert!(n.eventually(Duration::from_secs(10), || loaded(&n).is_empty()));
    let (status, body) = post(&n.url("/v1/chat/completions"), &req("b", json!("soon")));
    assert_eq!(status, 400, "{body}");
}

#[test]
fn an_invalid_models_file_is_rejected_at_start_with_every_error() {
    let dir = TempDir::new("bad-models");
    let file = dir.path().join("models.toml");
    std::fs::write(&file, "[models.\"x\"]\npriority = \"high\"\nshade = 1\n").unwrap();
    let out = std::process::Command::new(common::cortex_bin())
        .args(["serve", "--listen", "127.0.0.1:0", "--metrics-listen", "127.0.0.1:0", "--models-config"])
        .arg(&file)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("models.toml:2: models.\"x\".priority"), "{err}");
    assert!(err.contains("models.toml:3: models.\"x\".shade: unknown key"), "{err}");
    assert!(err.contains("needs a path or a hub repository"), "{err}");
}

#[test]
fn after_n_unloads_resident_models_are_reloaded_to_defragment() {
    let dir = TempDir::new("defrag");
    let cfg = dir.path().join("cortex.toml");
    std::fs::write(&cfg, "[eviction]\ndefrag_after_cycles = 2\n").unwrap();
    let n = start(&dir, "", &["--config", cfg.to_str().unwrap()]);
    assert_eq!(ask(&n, "a").0, 200);
    assert_eq!(ask(&n, "b").0, 200);
    assert_eq!(admin(&n, "unload", "b").0, 200); // one unload
    assert!(!n.log().contains("reloaded to defragment"));
    assert_eq!(ask(&n, "c").0, 200);
    assert_eq!(admin(&n, "unload", "c").0, 200); // two: a, still resident, is reloaded
    assert!(n.eventually(Duration::from_secs(20), || n.log().contains("reloaded to defragment memory")), "{}", n.log());
    assert_eq!(loaded(&n), vec!["a"]);
    assert_eq!(ask(&n, "a").0, 200);
}
