//! The mesh with real neurons on 127.0.0.1: certificates from a generated fleet CA, tiny
//! generated models, requests forwarded over mutually authenticated QUIC.

mod common;

use std::io::Read;
use std::path::Path;
use std::time::Duration;

use common::{client, post, roomy_tiny_model, tiny_model, Neuron, TempDir};
use cortex_neuron::mesh::identity::{init_ca, issue};
use serde_json::{json, Value};

fn fleet_ca(dir: &Path, names: &[&str]) {
    init_ca(dir, false).unwrap();
    for n in names {
        issue(dir, n, &[], &["127.0.0.1".parse().unwrap()], 30).unwrap();
    }
}

fn node(models: &Path, tls: &Path, name: &str, join: Option<&Neuron>, extra: &[&str]) -> Neuron {
    let mut args = vec!["--name", name, "--tls-dir", tls.to_str().unwrap(), "--mesh-listen", "127.0.0.1:0"];
    let seed;
    if let Some(j) = join {
        seed = j.mesh.clone().unwrap();
        args.extend(["--join", seed.as_str()]);
    }
    args.extend_from_slice(extra);
    Neuron::start(models, &args)
}

fn status(n: &Neuron) -> Value {
    client().get(n.url("/cortex/v1/status")).send().unwrap().json().unwrap()
}

fn peer_state(n: &Neuron, peer: &str) -> Option<String> {
    status(n)["peers"]
        .as_array()?
        .iter()
        .find(|p| p["name"] == peer)
        .and_then(|p| p["state"].as_str().map(str::to_string))
}

fn model_entry(n: &Neuron, id: &str) -> Option<Value> {
    let list: Value = client().get(n.url("/v1/models")).send().ok()?.json().ok()?;
    list["data"].as_array()?.iter().find(|m| m["id"] == id).cloned()
}

fn chat(model: &str, max_tokens: u32, stream: bool) -> Value {
    json!({"model": model, "max_tokens": max_tokens, "temperature": 0, "stream": stream,
           "messages": [{"role": "user", "content": "hello"}]})
}

fn streamed_text(body: &str) -> String {
    body.lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .filter_map(|d| serde_json::from_str::<Value>(d).ok())
        .filter_map(|c| c.pointer("/choices/0/delta/content").and_then(Value::as_str).map(str::to_string))
        .collect()
}

fn dirs(n: usize) -> Vec<TempDir> {
    (0..n).map(|i| TempDir::new(&format!("mesh-models-{i}"))).collect()
}

#[test]
fn a_request_to_a_is_answered_by_b_and_every_node_agrees_on_placement() {
    let tls = TempDir::new("mesh-tls");
    fleet_ca(tls.path(), &["a", "b", "c"]);
    let d = dirs(3);
    roomy_tiny_model(d[1].path(), "tiny-b");
    let b = node(d[1].path(), tls.path(), "b", None, &[]);
    let a = node(d[0].path(), tls.path(), "a", Some(&b), &[]);
    let c = node(d[2].path(), tls.path(), "c", Some(&a), &[]);
    for (n, peers) in [(&a, ["b", "c"]), (&b, ["a", "c"]), (&c, ["a", "b"])] {
        for p in peers {
            assert!(
                n.eventually(Duration::from_secs(30), || peer_state(n, p).as_deref() == Some("alive")),
                "{p} never alive:\n{}",
                n.log()
            );
        }
    }
    // A knows B holds tiny-b once B's document arrived.
    assert!(a.eventually(Duration::from_secs(20), || model_entry(&a, "tiny-b").is_some()), "{}", a.log());
    let via_a = client().post(a.url("/v1/chat/completions")).json(&chat("tiny-b", 24, true)).send().unwrap();
    assert_eq!(via_a.status(), 200);
    let via_a = via_a.text().unwrap();
    assert!(via_a.trim_end().ends_with("data: [DONE]"), "{via_a}");
    let direct =
        client().post(b.url("/v1/chat/completions")).json(&chat("tiny-b", 24, true)).send().unwrap().text().unwrap();
    assert_eq!(streamed_text(&via_a), streamed_text(&direct), "tokens via A differ from B's own");
    assert!(!streamed_text(&via_a).is_empty());
    assert_eq!(a.metric("cortex_forwarded_requests_total", &["target=\"b\""]), 1.0);
    // Every node lists it as loaded on b.
    for n in [&a, &b, &c] {
        let ok = n.eventually(Duration::from_secs(15), || {
            model_entry(n, "tiny-b").is_some_and(|m| m["loaded"] == true && m["locations"] == json!(["b"]))
        });
        assert!(ok, "{:?}", model_entry(n, "tiny-b"));
    }
    // An unload on b, asked through c, shows everywhere.
    let (code, body) = post(&c.url("/cortex/v1/unload"), &json!({"model": "tiny-b", "on": "b"}));
    assert_eq!(code, 200, "{body}");
    for n in [&a, &b, &c] {
        assert!(
            n.eventually(Duration::from_secs(15), || model_entry(n, "tiny-b").is_some_and(|m| m["loaded"] == false))
        );
    }
    // Non-stream through the mesh too, with the Anthropic dialect.
    let req = json!({"model": "tiny-b", "max_tokens": 4, "messages": [{"role": "user", "content": "hi"}]});
    let (code, body) = post(&c.url("/v1/messages"), &req);
    assert_eq!(code, 200, "{body}");
    assert_eq!(body["usage"]["output_tokens"], 4);
    // Tools, tool choice, choices and log-probabilities cross the hop: b constrains and parses.
    let schema = json!({"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"],
                        "additionalProperties": false});
    let req = json!({"model": "tiny-b", "max_tokens": 64, "n": 2, "logprobs": true, "top_logprobs": 2,
                     "messages": [{"role": "user", "content": "hi"}], "tool_choice": {"type": "function", "function": {"name": "count"}},
                     "tools": [{"type": "function", "function": {"name": "count", "parameters": schema}}]});
    let (code, body) = post(&a.url("/v1/chat/completions"), &req);
    assert_eq!(code, 200, "{body}");
    let choices = body["choices"].as_array().unwrap();
    assert_eq!(choices.len(), 2, "{body}");
    for ch in choices {
        assert_eq!(ch["finish_reason"], "tool_calls", "{body}");
        let call = &ch["message"]["tool_calls"][0]["function"];
        assert_eq!(call["name"], "count");
        let args: Value = serde_json::from_str(call["arguments"].as_str().unwrap()).unwrap();
        assert!(args["n"].is_i64(), "{args}");
    }
}

/// How a StatefulSet's pods join: every one names the whole fleet by one host name, which
/// may resolve to the pod itself, and tells peers the address to dial (`--advertise`).
#[test]
fn seeds_named_by_host_name_join_and_a_seed_that_is_the_node_itself_is_passed_over() {
    let tls = TempDir::new("mesh-tls-names");
    fleet_ca(tls.path(), &["a", "b"]);
    let d = dirs(2);
    let a = node(d[0].path(), tls.path(), "a", None, &[]);
    let port_a = a.mesh.as_deref().unwrap().rsplit_once(':').unwrap().1.to_owned();
    let port_b = std::net::UdpSocket::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let (listen_b, itself, seed_a) =
        (format!("0.0.0.0:{port_b}"), format!("localhost:{port_b}"), format!("localhost:{port_a}"));
    let advertised = format!("127.0.0.1:{port_b}");
    let tls_dir = tls.path().to_str().unwrap();
    let b = common::Neuron::start(
        d[1].path(),
        &["--name", "b", "--tls-dir", tls_dir, "--mesh-listen", &listen_b, "--advertise", &advertised]
            .into_iter()
            .chain(["--join", &itself, "--join", &seed_a])
            .collect::<Vec<_>>(),
    );
    for (n, peer) in [(&a, "b"), (&b, "a")] {
        let alive = n.eventually(Duration::from_secs(30), || peer_state(n, peer).as_deref() == Some("alive"));
        assert!(alive, "{peer} never alive:\n{}", n.log());
    }
    // b is in its own table once (as itself), and a knows it by the address it advertised.
    let named_b = |n: &Neuron| -> Vec<Value> {
        status(n)["peers"].as_array().unwrap().iter().filter(|p| p["name"] == "b").cloned().collect()
    };
    assert_eq!(named_b(&b).len(), 1, "{:?}\n{}", named_b(&b), b.log());
    assert_eq!(named_b(&a)[0]["address"], advertised.as_str(), "{:?}", named_b(&a));
    assert!(b.log().contains(&format!("advertised={advertised}")), "{}", b.log());
    assert!(!b.log().contains("unspecified address"), "b warned although it advertises:\n{}", b.log());
    // A bad seed is refused at start, saying what a seed looks like.
    let out = std::process::Command::new(common::cortex_bin())
        .args(["serve", "--name", "b", "--tls-dir", tls_dir, "--join", "cortex-0"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "a usage error is the user's to fix: {out:?}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("not HOST:PORT"), "{out:?}");
}

/// An embedding model on b answers through a: the request crosses the mesh, the vectors come
/// back as b computes them, and a generation request for it is refused by b in a's answer.
#[test]
fn embeddings_are_served_by_the_peer_that_holds_the_model() {
    let minilm = common::real_model("all-MiniLM-L6-v2");
    let tls = TempDir::new("mesh-tls-embed");
    fleet_ca(tls.path(), &["a", "b"]);
    let d = dirs(2);
    std::os::unix::fs::symlink(&minilm, d[1].path().join("all-MiniLM-L6-v2")).unwrap();
    let b = node(d[1].path(), tls.path(), "b", None, &[]);
    let a = node(d[0].path(), tls.path(), "a", Some(&b), &[]);
    let id = "all-MiniLM-L6-v2";
    // a's own catalogue knows the model too (it could fetch it): wait until a sees b offer it,
    // so that the request goes to b's copy rather than to a cold load on a.
    let offered_by_b = || {
        model_entry(&a, id).is_some_and(|m| m["feasible_on"].as_array().is_some_and(|on| on.iter().any(|n| n == "b")))
    };
    assert!(a.eventually(Duration::from_secs(30), offered_by_b), "{}", a.log());
    let req = json!({"model": id, "input": ["a cat on a mat", "stocks fell"], "encoding_format": "float"});
    let (code, via_a) = post(&a.url("/v1/embeddings"), &req);
    assert_eq!(code, 200, "{via_a}");
    let (_, direct) = post(&b.url("/v1/embeddings"), &req);
    assert_eq!(via_a["data"], direct["data"], "vectors via a differ from b's own");
    assert_eq!(via_a["data"].as_array().unwrap().len(), 2);
    assert_eq!(a.metric("cortex_forwarded_requests_total", &["target=\"b\""]), 1.0);
    let chat = json!({"model": id, "max_tokens": 4, "messages": [{"role": "user", "content": "hi"}]});
    let (code, body) = post(&a.url("/v1/chat/completions"), &chat);
    assert_eq!(code, 400, "{body}");
    assert!(body["error"]["message"].as_str().unwrap().contains("embedding model"), "{body}");
}

/// A Responses conversation kept on the neuron that answered it continues through another
/// gateway (which fetches it over the mesh), and once that neuron is gone the follow-up is a
/// clear 404, not a hang or a 500.
#[test]
fn a_stored_response_continues_through_any_gateway_until_its_neuron_is_gone() {
    let tls = TempDir::new("mesh-tls-responses");
    fleet_ca(tls.path(), &["a", "b"]);
    let d = dirs(2);
    tiny_model(d[0].path(), "x");
    tiny_model(d[1].path(), "x");
    let mut a = node(d[0].path(), tls.path(), "a", None, &[]);
    let b = node(d[1].path(), tls.path(), "b", Some(&a), &[]);
    assert!(b.eventually(Duration::from_secs(30), || peer_state(&b, "a").as_deref() == Some("alive")), "{}", b.log());
    let ask = |n: &Neuron, prev: Option<&str>, input: &str| {
        post(
            &n.url("/v1/responses"),
            &json!({"model": "x", "input": input, "max_output_tokens": 3,
            "temperature": 0, "previous_response_id": prev}),
        )
    };
    let (code, first) = ask(&a, None, "hello");
    assert_eq!(code, 200, "{first}");
    let id = first["id"].as_str().unwrap().to_string();
    assert!(id.starts_with("resp_") && id.ends_with("_a"), "the id names neuron a: {id}");
    let (_, alone) = ask(&a, None, "again");
    let (code, via_b) = ask(&b, Some(&id), "again");
    assert_eq!(code, 200, "{via_b}");
    let tokens = |r: &Value| r["usage"]["input_tokens"].as_u64().unwrap();
    assert!(tokens(&via_b) > tokens(&alone), "b replayed a's conversation: {via_b} vs {alone}");
    assert_eq!(a.metric("cortex_mesh_rpcs_total", &["kind=\"conversation\"", "outcome=\"ok\""]), 1.0);
    a.kill();
    let (code, gone) = ask(&b, Some(&id), "again");
    assert_eq!(code, 404, "{gone}");
    assert_eq!(gone["error"]["code"], "previous_response_not_found", "{gone}");
    assert!(gone["error"]["message"].as_str().unwrap().contains("neuron `a`"), "{gone}");
}

#[test]
fn a_cold_load_lands_on_the_only_peer_that_fits() {
    let tls = TempDir::new("mesh-tls-cold");
    fleet_ca(tls.path(), &["a", "b", "c"]);
    let d = dirs(3);
    tiny_model(d[1].path(), "x");
    tiny_model(d[2].path(), "x");
    let a = node(d[0].path(), tls.path(), "a", None, &[]);
    let b = node(d[1].path(), tls.path(), "b", Some(&a), &["--memory-budget", "16KiB"]);
    let c = node(d[2].path(), tls.path(), "c", Some(&a), &["--memory-budget", "64MiB"]);
    assert!(
        a.eventually(Duration::from_secs(30), || {
            model_entry(&a, "x").is_some_and(|m| m["feasible_on"] == json!(["c"]))
        }),
        "{:?}\n{}",
        model_entry(&a, "x"),
        a.log()
    );
    let (code, body) = post(&a.url("/v1/chat/completions"), &chat("x", 3, false));
    assert_eq!(code, 200, "{body}");
    assert_eq!(a.metric("cortex_forwarded_requests_total", &["target=\"c\""]), 1.0);
    let state =
        |n: &Neuron| status(n)["models"].as_array().unwrap().iter().find(|m| m["id"] == "x").unwrap()["state"].clone();
    assert_eq!(state(&c), "ready");
    assert_eq!(state(&b), "unloaded");
}

#[test]
fn a_killed_peer_is_marked_down_and_its_stream_ends_with_a_clean_error() {
    let tls = TempDir::new("mesh-tls-kill");
    fleet_ca(tls.path(), &["a", "b"]);
    let d = dirs(2);
    common::slow_model(d[1].path(), "slow");
    let mut b = node(d[1].path(), tls.path(), "b", None, &[]);
    let a = node(d[0].path(), tls.path(), "a", Some(&b), &[]);
    assert!(a.eventually(Duration::from_secs(30), || model_entry(&a, "slow").is_some()), "{}", a.log());
    let mut stream = client().post(a.url("/v1/chat/completions")).json(&chat("slow", 1500, true)).send().unwrap();
    let mut first = [0u8; 128];
    assert!(stream.read(&mut first).unwrap() > 0);
    // Frozen, b stops answering probes: a suspects it first.
    let _ = std::process::Command::new("kill").args(["-STOP", &b.pid().to_string()]).status();
    let seen =
        a.eventually(Duration::from_secs(20), || matches!(peer_state(&a, "b").as_deref(), Some("suspect" | "down")));
    assert!(seen, "{}", a.log());
    b.kill();
    let killed = std::time::Instant::now();
    let mut rest = String::new();
    stream.read_to_string(&mut rest).unwrap();
    assert!(rest.contains("\"error\"") && rest.contains("failed in the middle"), "no clean error at the end: {rest}");
    eprintln!("the stream ended {:?} after the kill", killed.elapsed());
    assert!(a.eventually(Duration::from_secs(30), || peer_state(&a, "b").as_deref() == Some("down")), "{}", a.log());
    // Known to the fleet, held only by a node that is down: unavailable for now, not unknown.
    let resp = client().post(a.url("/v1/chat/completions")).json(&chat("slow", 3, false)).send().unwrap();
    assert_eq!(resp.status(), 503);
    assert_eq!(resp.headers().get("retry-after").map(|v| v.to_str().unwrap().to_string()).as_deref(), Some("1"));
    let body: serde_json::Value = resp.json().unwrap();
    assert!(body["error"]["message"].as_str().unwrap().contains("b (down)"), "{body}");
    assert_eq!(model_entry(&a, "slow").map(|m| m["state"].clone()), Some(json!("unavailable")));
    assert_eq!(client().get(a.url("/health")).send().unwrap().status(), 200);
}

#[test]
fn a_peer_stopped_with_sigterm_is_seen_to_leave_not_to_fail() {
    let tls = TempDir::new("mesh-tls-leave");
    fleet_ca(tls.path(), &["a", "b"]);
    let d = dirs(2);
    tiny_model(d[0].path(), "tiny-a");
    tiny_model(d[1].path(), "tiny-b");
    let b = node(d[1].path(), tls.path(), "b", None, &[]);
    let a = node(d[0].path(), tls.path(), "a", Some(&b), &[]);
    assert!(a.eventually(Duration::from_secs(30), || model_entry(&a, "tiny-b").is_some()), "{}", a.log());
    assert!(b.terminate().success());
    assert!(a.eventually(Duration::from_secs(30), || peer_state(&a, "b").as_deref() == Some("left")), "{}", a.log());
    // foca's own notice (its leave, or failure detection at the latest: 2 s of suspicion after
    // a missed probe) comes after the goodbye, and must not turn the leave into a failure.
    std::thread::sleep(Duration::from_secs(6));
    assert_eq!(peer_state(&a, "b").as_deref(), Some("left"), "{}", a.log());
    assert_eq!(a.metric("cortex_mesh_peers", &["state=\"left\""]), 1.0);
    assert_eq!(a.metric("cortex_mesh_peers", &["state=\"down\""]), 0.0);
    assert!(a.log().contains("peer left") && !a.log().contains("peer down"), "{}", a.log());
    // A goes on serving its own model, and knows b's is gone rather than waiting on it.
    let (code, body) = post(&a.url("/v1/chat/completions"), &chat("tiny-a", 3, false));
    assert_eq!(code, 200, "{body}");
    let (code, body) = post(&a.url("/v1/chat/completions"), &chat("tiny-b", 3, false));
    assert_eq!(code, 503, "{body}");
    assert!(body["error"]["message"].as_str().unwrap().contains("b (left)"), "{body}");
}

#[test]
fn a_stream_relayed_from_a_peer_stopped_with_sigterm_completes_and_no_new_work_goes_there() {
    let tls = TempDir::new("mesh-tls-drain");
    fleet_ca(tls.path(), &["a", "b"]);
    let d = dirs(2);
    common::slow_model(d[1].path(), "slow");
    let b = node(d[1].path(), tls.path(), "b", None, &[]);
    let a = node(d[0].path(), tls.path(), "a", Some(&b), &[]);
    assert!(a.eventually(Duration::from_secs(30), || model_entry(&a, "slow").is_some()), "{}", a.log());
    // A client of a, answered by b over the mesh: b holds no HTTP connection for it.
    let mut stream = client().post(a.url("/v1/chat/completions")).json(&chat("slow", 300, true)).send().unwrap();
    let mut first = [0u8; 128];
    assert!(stream.read(&mut first).unwrap() > 0);
    let stopping = std::thread::spawn(move || b.terminate_logged());
    // b says goodbye as its drain starts: a routes nothing new to it while its stream runs on.
    assert!(a.eventually(Duration::from_secs(10), || peer_state(&a, "b").as_deref() == Some("left")), "{}", a.log());
    let (code, body) = post(&a.url("/v1/chat/completions"), &chat("slow", 3, false));
    assert_eq!(code, 503, "a new request went to a draining peer: {body}");
    let mut rest = String::new();
    stream.read_to_string(&mut rest).unwrap();
    let body = String::from_utf8_lossy(&first).to_string() + &rest;
    assert!(!body.contains("\"error\""), "the relayed stream was cut: {body}");
    assert!(body.contains("\"finish_reason\":\"length\"") && body.trim_end().ends_with("data: [DONE]"), "{body}");
    assert!(!streamed_text(&body).is_empty(), "{body}");
    let (status, log) = stopping.join().unwrap();
    assert!(status.success(), "b did not exit cleanly: {status:?}\n{log}");
}

#[test]
fn a_node_with_a_foreign_certificate_cannot_join() {
    let tls = TempDir::new("mesh-tls-fleet");
    fleet_ca(tls.path(), &["a"]);
    let rogue_tls = TempDir::new("mesh-tls-rogue");
    fleet_ca(rogue_tls.path(), &["d"]);
    let d = dirs(2);
    tiny_model(d[1].path(), "rogue-model");
    let a = node(d[0].path(), tls.path(), "a", None, &[]);
    let rogue = node(d[1].path(), rogue_tls.path(), "d", Some(&a), &[]);
    assert!(
        a.eventually(Duration::from_secs(20), || a.metric("cortex_mesh_handshake_failures_total", &[]) >= 1.0),
        "{}",
        a.log()
    );
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(peer_state(&a, "d"), None, "the rogue entered the fleet view");
    assert!(model_entry(&a, "rogue-model").is_none());
    assert!(status(&rogue)["peers"].as_array().unwrap().iter().all(|p| p["name"] == "d"));
    let (code, _) = post(&a.url("/v1/chat/completions"), &chat("rogue-model", 3, false));
    assert_eq!(code, 404);
}

#[test]
fn the_cli_sees_and_drives_a_two_neuron_fleet() {
    let tls = TempDir::new("mesh-tls-cli");
    fleet_ca(tls.path(), &["a", "b"]);
    let d = dirs(2);
    tiny_model(d[1].path(), "tiny-b");
    let b = node(d[1].path(), tls.path(), "b", None, &[]);
    let a = node(d[0].path(), tls.path(), "a", Some(&b), &[]);
    assert!(a.eventually(Duration::from_secs(30), || model_entry(&a, "tiny-b").is_some()), "{}", a.log());
    let cortex = |args: &[&str]| {
        std::process::Command::new(common::cortex_bin())
            .args(args)
            .env("CORTEX_ENDPOINT", &a.http)
            .env("NO_COLOR", "1")
            .output()
            .unwrap()
    };
    // Tab completes subcommands, then models and nodes from the fleet (tiny-b lives on b only).
    assert_eq!(common::bash_complete(&a.http, &["cortex", "unl"]), ["unload"]);
    assert_eq!(common::bash_complete(&a.http, &["cortex", "load", "tiny"]), ["tiny-b"]);
    let mut nodes = common::bash_complete(&a.http, &["cortex", "load", "tiny-b", "--on", ""]);
    nodes.sort();
    assert_eq!(nodes, ["a", "b"]);
    // Load on b through a; the fleet table and JSON then agree that b holds it.
    let load = cortex(&["load", "tiny-b", "--on", "b"]);
    assert!(load.status.success(), "{}", String::from_utf8_lossy(&load.stderr));
    assert!(String::from_utf8_lossy(&load.stderr).contains("on b"));
    let holds = || {
        let out = cortex(&["status", "--json"]);
        let s: Value = serde_json::from_slice(&out.stdout).unwrap();
        s["peers"].as_array().unwrap().iter().any(|p| p["name"] == "b" && p["loaded"] == json!(["tiny-b"]))
    };
    assert!(a.eventually(Duration::from_secs(15), holds));
    let table = String::from_utf8(cortex(&["status"]).stdout).unwrap();
    let row = table.lines().find(|l| l.starts_with("b ")).unwrap_or_else(|| panic!("no row for b:\n{table}"));
    assert!(row.contains("alive") && row.contains("tiny-b"), "{row}");
    let models: Value = serde_json::from_slice(&cortex(&["models", "--json"]).stdout).unwrap();
    let m = models["data"].as_array().unwrap().iter().find(|m| m["id"] == "tiny-b").unwrap();
    assert_eq!(m["locations"], json!(["b"]));
    // A chat through a is answered by b; an unknown node is a fixable error.
    let chat = cortex(&["chat", "tiny-b", "hi", "--max-tokens", "3"]);
    assert!(chat.status.success() && !chat.stdout.is_empty(), "{}", String::from_utf8_lossy(&chat.stderr));
    assert_eq!(cortex(&["unload", "tiny-b", "--on", "nowhere"]).status.code(), Some(1));
    assert!(cortex(&["unload", "tiny-b", "--on", "b"]).status.success());
}

#[test]
fn garbled_and_oversized_mesh_frames_close_their_stream_and_the_node_keeps_serving() {
    use cortex_neuron::mesh::{transport, NodeIdentity};
    use cortex_proto::frame::{self, Message};
    let tls = TempDir::new("mesh-tls-garbled");
    // A member of the fleet (its certificate is good) that sends garbage: what a bug or a
    // compromised node would do. Outsiders never get this far (see the foreign-CA test).
    fleet_ca(tls.path(), &["a", "prober"]);
    let d = dirs(1);
    tiny_model(d[0].path(), "tiny");
    let a = node(d[0].path(), tls.path(), "a", None, &[]);
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let id = NodeIdentity::load(tls.path(), "prober").unwrap();
        let ep = transport::endpoint(&id, "127.0.0.1:0".parse().unwrap()).unwrap();
        let addr = a.mesh.as_ref().unwrap().parse().unwrap();
        let (conn, name) = transport::connect(&ep, addr, Some("a")).await.unwrap();
        assert_eq!(name, "a");
        let junk: [(&str, Vec<u8>); 4] = [
            ("not our protocol", b"GET / HTTP/1.1\r\n\r\n".to_vec()),
            ("a 1 GiB frame", vec![frame::VERSION, 6, 0x40, 0, 0, 0, b'{']),
            ("a payload that is no message", vec![frame::VERSION, 3, 0, 0, 0, 2, b'{', b'}']),
            ("an unknown frame kind", vec![frame::VERSION, 99, 0, 0, 0, 0]),
        ];
        for (what, bytes) in junk {
            let (mut send, mut recv) = conn.open_bi().await.unwrap();
            send.write_all(&bytes).await.unwrap();
            let _ = send.finish();
            // Refused at once: the stream is reset, or ends with no answer.
            let answer = tokio::time::timeout(Duration::from_secs(10), recv.read_to_end(1 << 20))
                .await
                .unwrap_or_else(|_| panic!("{what}: the stream was left hanging"));
            if let Ok(bytes) = answer {
                assert!(bytes.is_empty(), "{what}: answered {bytes:?}");
            }
        }
        // The connection itself is still good for a well-formed request.
        let (mut send, mut recv) = conn.open_bi().await.unwrap();
        send.write_all(&frame::encode(&Message::FetchPlacement { node: "a".into() })).await.unwrap();
        let _ = send.finish();
        let bytes = recv.read_to_end(1 << 20).await.unwrap();
        let (msg, _) = frame::decode(&bytes).unwrap().unwrap();
        assert!(matches!(msg, Message::Placement { .. }), "{msg:?}");
    });
    // And the node answers its clients, having logged each refusal.
    let (status, body) = post(&a.url("/v1/chat/completions"), &chat("tiny", 3, false));
    assert_eq!(status, 200, "{body}\n{}", a.log());
    assert!(
        a.eventually(Duration::from_secs(5), || a.log().matches("garbled mesh request").count() == 4),
        "{}",
        a.log()
    );
}

#[test]
fn replayed_and_duplicated_mesh_packets_are_dropped_and_the_node_keeps_serving() {
    use cortex_neuron::mesh::{transport, NodeIdentity};
    use cortex_proto::frame::{self, Message};
    use std::net::UdpSocket;
    use std::sync::{Arc, Mutex};
    let tls = TempDir::new("mesh-tls-replay");
    fleet_ca(tls.path(), &["a", "prober"]);
    let d = dirs(1);
    tiny_model(d[0].path(), "tiny");
    let a = node(d[0].path(), tls.path(), "a", None, &[]);
    let a_mesh: std::net::SocketAddr = a.mesh.as_ref().unwrap().parse().unwrap();
    // An on-path attacker: a UDP relay that delivers every packet to a twice and records what
    // the fleet member sends, to replay it later.
    let relay = UdpSocket::bind("127.0.0.1:0").unwrap();
    let relay_addr = relay.local_addr().unwrap();
    let upstream = UdpSocket::bind("127.0.0.1:0").unwrap();
    upstream.connect(a_mesh).unwrap();
    let captured: Arc<Mutex<Vec<Vec<u8>>>> = Arc::default();
    let client_addr: Arc<Mutex<Option<std::net::SocketAddr>>> = Arc::default();
    {
        let (relay, upstream, captured, client_addr) =
            (relay.try_clone().unwrap(), upstream.try_clone().unwrap(), captured.clone(), client_addr.clone());
        std::thread::spawn(move || {
            let mut buf = [0u8; 65536];
            while let Ok((n, from)) = relay.recv_from(&mut buf) {
                *client_addr.lock().unwrap() = Some(from);
                captured.lock().unwrap().push(buf[..n].to_vec());
                let _ = upstream.send(&buf[..n]);
                let _ = upstream.send(&buf[..n]);
            }
        });
    }
    {
        let (relay, upstream, client_addr) = (relay.try_clone().unwrap(), upstream.try_clone().unwrap(), client_addr);
        std::thread::spawn(move || {
            let mut buf = [0u8; 65536];
            while let Ok(n) = upstream.recv(&mut buf) {
                if let Some(to) = *client_addr.lock().unwrap() {
                    let _ = relay.send_to(&buf[..n], to);
                }
            }
        });
    }
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let id = NodeIdentity::load(tls.path(), "prober").unwrap();
        let ep = transport::endpoint(&id, "127.0.0.1:0".parse().unwrap()).unwrap();
        let (conn, name) = transport::connect(&ep, relay_addr, Some("a")).await.unwrap();
        assert_eq!(name, "a");
        let fetch = || async {
            let (mut send, mut recv) = conn.open_bi().await.unwrap();
            send.write_all(&frame::encode(&Message::FetchPlacement { node: "a".into() })).await.unwrap();
            let _ = send.finish();
            let bytes = tokio::time::timeout(Duration::from_secs(10), recv.read_to_end(1 << 20))
                .await
                .expect("an answer through the relay")
                .unwrap();
            let (msg, _) = frame::decode(&bytes).unwrap().unwrap();
            assert!(matches!(msg, Message::Placement { .. }), "{msg:?}");
        };
        // Every packet arrives twice: the handshake and the request still work.
        fetch().await;
        let old = captured.lock().unwrap().clone();
        assert!(old.len() >= 3, "too few packets captured: {}", old.len());
        // Replay the whole conversation, on the same path and from a new address.
        let stranger = UdpSocket::bind("127.0.0.1:0").unwrap();
        for p in &old {
            upstream.send(p).unwrap();
            stranger.send_to(p, a_mesh).unwrap();
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
        // The live connection is unharmed, and so is a fresh one.
        fetch().await;
        let (conn2, _) = transport::connect(&ep, a_mesh, Some("a")).await.unwrap();
        let (mut send, mut recv) = conn2.open_bi().await.unwrap();
        send.write_all(&frame::encode(&Message::FetchPlacement { node: "a".into() })).await.unwrap();
        let _ = send.finish();
        assert!(!recv.read_to_end(1 << 20).await.unwrap().is_empty());
    });
    let (status, body) = post(&a.url("/v1/chat/completions"), &chat("tiny", 3, false));
    assert_eq!(status, 200, "{body}\n{}", a.log());
    assert!(!a.log().contains("panicked"), "{}", a.log());
}

/// A conversation through gateway `a` (which does not hold the model) stays on the neuron that
/// holds its prefix, whose cache then supplies most of each turn; when that neuron is killed the
/// next turn goes to the other holder, which recomputes the prompt and answers.
#[test]
fn a_conversation_stays_with_its_cache_and_moves_on_when_that_neuron_dies() {
    let tls = TempDir::new("mesh-tls-prefix");
    fleet_ca(tls.path(), &["a", "b", "c"]);
    let d = dirs(3);
    roomy_tiny_model(d[1].path(), "x");
    roomy_tiny_model(d[2].path(), "x");
    let a = node(d[0].path(), tls.path(), "a", None, &[]);
    let mut b = node(d[1].path(), tls.path(), "b", Some(&a), &[]);
    let mut c = node(d[2].path(), tls.path(), "c", Some(&a), &[]);
    for n in [&b, &c] {
        post(&n.url("/cortex/v1/load"), &json!({"model": "x"}));
    }
    let ready = |peer: &str| {
        status(&a)["peers"].as_array().is_some_and(|ps| {
            ps.iter().any(|p| p["name"] == peer && p["loaded"].as_array().is_some_and(|l| l.contains(&json!("x"))))
        })
    };
    assert!(a.eventually(Duration::from_secs(30), || ready("b") && ready("c")), "{}", a.log());
    let system = "You are a patient tutor. Explain each step. ".repeat(20);
    let mut messages = vec![json!({"role": "system", "content": system})];
    let turn = |messages: &mut Vec<Value>, n: usize| -> Value {
        messages.push(json!({"role": "user", "content": format!("Question {n}: what comes next?")}));
        let resp = client()
            .post(a.url("/v1/chat/completions"))
            .header("x-session-id", "tutoring-1")
            .json(&json!({"model": "x", "max_tokens": 4, "temperature": 0, "messages": messages}))
            .send()
            .unwrap();
        assert_eq!(resp.status(), 200);
        let body: Value = resp.json().unwrap();
        messages.push(json!({"role": "assistant", "content": body["choices"][0]["message"]["content"]}));
        body["usage"].clone()
    };
    let cached = |u: &Value| u["prompt_tokens_details"]["cached_tokens"].as_u64().unwrap();
    let served = |n: &Neuron| n.metric("cortex_prefix_miss_tokens_total", &["x"]) > 0.0;
    let first = turn(&mut messages, 1);
    assert_eq!(cached(&first), 0, "{first}");
    let holder = if served(&b) { "b" } else { "c" };
    // Wait for the holder's summary to reach the gateway (published at most once a second).
    let caches = |peer: &str| {
        status(&a)["peers"].as_array().is_some_and(|ps| {
            ps.iter().any(|p| p["name"] == peer && p["caches"]["x"]["bytes"].as_u64().unwrap_or(0) > 0)
        })
    };
    assert!(a.eventually(Duration::from_secs(20), || caches(holder)), "{}", a.log());
    for n in 2..=3 {
        let usage = turn(&mut messages, n);
        assert!(cached(&usage) * 2 > usage["prompt_tokens"].as_u64().unwrap(), "turn {n} recomputed: {usage}");
    }
    let (dead, other) = if holder == "b" { (&mut b, &c) } else { (&mut c, &b) };
    let other_misses = other.metric("cortex_prefix_miss_tokens_total", &["x"]);
    assert_eq!(other_misses, 0.0, "the conversation stayed on {holder}");
    dead.kill();
    let usage = turn(&mut messages, 4);
    assert_eq!(cached(&usage), 0, "the other neuron had none of it: {usage}");
    assert!(other.metric("cortex_prefix_miss_tokens_total", &["x"]) > 0.0, "the other neuron answered");
}
