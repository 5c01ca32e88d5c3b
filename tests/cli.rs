//! The CLI against a real neuron: tables and `--json` hold the same facts, exit codes are as
//! documented (0 ok, 1 fixable, 2 internal), a closed pipe is not an error.

mod common;

use std::io::Write;
use std::process::{Command, Output, Stdio};

use common::{cortex_bin, tiny_model, Neuron, TempDir};
use serde_json::Value;

fn cortex(n: Option<&Neuron>, args: &[&str]) -> Output {
    let mut cmd = Command::new(cortex_bin());
    cmd.args(args).env_remove("CORTEX_API_KEY").env("NO_COLOR", "1").env("XDG_CONFIG_HOME", "/nonexistent");
    match n {
        Some(n) => cmd.env("CORTEX_ENDPOINT", &n.http),
        // Nothing listens on port 9 of loopback.
        None => cmd.env("CORTEX_ENDPOINT", "http://127.0.0.1:9"),
    };
    cmd.output().unwrap()
}

/// `cortex ARGS` against `n` with `input` on its standard input.
fn with_stdin(n: &Neuron, args: &[&str], input: &[u8]) -> Output {
    let mut child = Command::new(cortex_bin())
        .args(args)
        .env("CORTEX_ENDPOINT", &n.http)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(input).unwrap();
    child.wait_with_output().unwrap()
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn json(o: &Output) -> Value {
    assert!(o.status.success(), "failed: {}", String::from_utf8_lossy(&o.stderr));
    serde_json::from_slice(&o.stdout).expect("stdout is one JSON document")
}

#[test]
fn status_models_and_admin_commands_agree_with_their_json() {
    let dir = TempDir::new("cli");
    tiny_model(dir.path(), "tiny");
    let n = Neuron::start(dir.path(), &[]);

    assert!(cortex(Some(&n), &["load", "tiny"]).status.success());
    let status = json(&cortex(Some(&n), &["status", "--json"]));
    let tiny = status["models"].as_array().unwrap().iter().find(|m| m["id"] == "tiny").unwrap();
    assert_eq!(tiny["state"], "ready");
    let table = stdout(&cortex(Some(&n), &["status"]));
    let row = table.lines().find(|l| l.starts_with("tiny ")).expect("a row for tiny");
    assert!(row.contains("ready") && row.contains(" no "), "{row}");

    assert!(cortex(Some(&n), &["pin", "tiny"]).status.success());
    let models = json(&cortex(Some(&n), &["models", "--json"]));
    let tiny = models["data"].as_array().unwrap().iter().find(|m| m["id"] == "tiny").unwrap();
    assert_eq!((tiny["loaded"].as_bool(), tiny["pinned"].as_bool()), (Some(true), Some(true)));
    let table = stdout(&cortex(Some(&n), &["models"]));
    let row = table.lines().find(|l| l.starts_with("tiny ")).expect("a row for tiny");
    assert!(row.contains("ready") && row.contains("yes"), "{row}");
    // The alias is listed with its target.
    assert!(
        table.lines().any(|l| l.starts_with("helexa/small") && l.contains("HuggingFaceTB/SmolLM2-135M-Instruct")),
        "{table}"
    );

    let unpinned = json(&cortex(Some(&n), &["unpin", "tiny", "--json"]));
    assert_eq!(unpinned["status"]["pinned"], false);
    assert!(cortex(Some(&n), &["unload", "tiny"]).status.success());
    let status = json(&cortex(Some(&n), &["status", "--json"]));
    let tiny = status["models"].as_array().unwrap().iter().find(|m| m["id"] == "tiny").unwrap();
    assert_eq!(tiny["state"], "unloaded");
}

#[test]
fn exit_codes_say_whose_problem_it_is() {
    let dir = TempDir::new("cli-codes");
    tiny_model(dir.path(), "tiny");
    let n = Neuron::start(dir.path(), &[]);
    // Success.
    let ok = cortex(Some(&n), &["chat", "tiny", "hello", "--max-tokens", "3"]);
    assert_eq!(ok.status.code(), Some(0), "{}", String::from_utf8_lossy(&ok.stderr));
    assert!(!ok.stdout.is_empty());
    // Unknown model: the user's to fix.
    let unknown = cortex(Some(&n), &["chat", "no-such-model", "hello"]);
    assert_eq!(unknown.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&unknown.stderr).contains("not available"), "{unknown:?}");
    assert_eq!(cortex(Some(&n), &["load", "no-such-model"]).status.code(), Some(1));
    // No neuron at all.
    let none = cortex(None, &["status"]);
    assert_eq!(none.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&none.stderr).contains("no neuron answers"), "{none:?}");
    // A usage mistake is fixable too.
    assert_eq!(cortex(None, &["status", "--no-such-flag"]).status.code(), Some(1));
    assert_eq!(cortex(None, &["--help"]).status.code(), Some(0));
}

#[test]
fn a_refused_key_exits_1_and_the_right_key_works() {
    let dir = TempDir::new("cli-keys");
    tiny_model(dir.path(), "tiny");
    let cfg = dir.path().join("cortex.toml");
    std::fs::write(&cfg, "[server]\napi_keys = [\"k-inference\"]\nadmin_keys = [\"k-admin\"]\n").unwrap();
    let n = Neuron::start(dir.path(), &["--config", cfg.to_str().unwrap()]);
    let refused = cortex(Some(&n), &["status"]);
    assert_eq!(refused.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&refused.stderr).contains("401"), "{refused:?}");
    let inference_only = cortex(Some(&n), &["status", "--api-key", "k-inference"]);
    assert_eq!(inference_only.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&inference_only.stderr).contains("403"), "{inference_only:?}");
    assert!(cortex(Some(&n), &["status", "--api-key", "k-admin"]).status.success());
    assert!(cortex(Some(&n), &["chat", "tiny", "hi", "--max-tokens", "2", "--api-key", "k-inference"])
        .status
        .success());
}

#[test]
fn a_closed_pipe_is_not_an_error() {
    let dir = TempDir::new("cli-pipe");
    tiny_model(dir.path(), "tiny");
    let n = Neuron::start(dir.path(), &[]);
    let mut child = Command::new(cortex_bin())
        .args(["chat", "tiny", "hello", "--max-tokens", "300"])
        .env("CORTEX_ENDPOINT", &n.http)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Read one byte, then close our end, like `| head -c1`.
    let mut out = child.stdout.take().unwrap();
    let mut one = [0u8; 1];
    std::io::Read::read_exact(&mut out, &mut one).unwrap();
    drop(out);
    let status = child.wait().unwrap();
    assert_eq!(
        status.code(),
        Some(0),
        "{:?}",
        child.stderr.take().map(|mut e| {
            let mut s = String::new();
            std::io::Read::read_to_string(&mut e, &mut s).unwrap();
            s
        })
    );
}

#[test]
fn chat_reads_the_prompt_from_stdin() {
    let dir = TempDir::new("cli-stdin");
    tiny_model(dir.path(), "tiny");
    let n = Neuron::start(dir.path(), &[]);
    let piped = with_stdin(&n, &["chat", "tiny", "--max-tokens", "5", "--temperature", "0"], b"hello there");
    assert!(piped.status.success());
    // The same prompt as an argument gives the same greedy answer.
    let arg = cortex(Some(&n), &["chat", "tiny", "hello there", "--max-tokens", "5", "--temperature", "0"]);
    assert_eq!(stdout(&arg), String::from_utf8_lossy(&piped.stdout));
    assert!(!arg.stdout.is_empty());
}

#[test]
fn without_an_endpoint_the_cli_finds_the_fleet_through_the_neurons_config_seeds() {
    let dir = TempDir::new("cli-seeds");
    tiny_model(dir.path(), "tiny");
    let n = Neuron::start(dir.path(), &[]);
    // This host's neuron is not running (port 9); the seed is the live one.
    let seed = n.http.trim_start_matches("http://");
    let config = dir.path().join("cortex.toml");
    std::fs::write(&config, format!("[server]\nlisten = \"127.0.0.1:9\"\n[mesh]\nseeds = [\"{seed}\"]\n")).unwrap();
    let run = |config: &std::path::Path| {
        Command::new(cortex_bin())
            .args(["models", "--json"])
            .env_remove("CORTEX_ENDPOINT")
            .env("CORTEX_CONFIG", config)
            .env("XDG_CONFIG_HOME", "/nonexistent")
            .output()
            .unwrap()
    };
    let list = json(&run(&config));
    assert!(list["data"].as_array().unwrap().iter().any(|m| m["id"] == "tiny"), "{list}");
    // Without the config there is nothing to find (unless a neuron runs on the default port).
    let none = run(&dir.path().join("absent.toml"));
    if !none.status.success() {
        assert_eq!(none.status.code(), Some(1));
        assert!(String::from_utf8_lossy(&none.stderr).contains("127.0.0.1:31313"));
    }
}

#[test]
fn embed_prints_one_json_line_per_text_from_arguments_or_stdin() {
    let minilm = common::real_model("all-MiniLM-L6-v2");
    let dir = TempDir::new("cli-embed");
    std::os::unix::fs::symlink(&minilm, dir.path().join("all-MiniLM-L6-v2")).unwrap();
    tiny_model(dir.path(), "tiny");
    let n = Neuron::start(dir.path(), &[]);
    let lines = |o: &Output| -> Vec<Value> {
        assert!(o.status.success(), "failed: {}", String::from_utf8_lossy(&o.stderr));
        stdout(o).lines().map(|l| serde_json::from_str(l).expect("each line is JSON")).collect()
    };
    let args = lines(&cortex(Some(&n), &["embed", "all-MiniLM-L6-v2", "hello world", "stocks fell"]));
    assert_eq!(args.len(), 2);
    assert_eq!((args[1]["index"].as_u64(), args[1]["text"].as_str()), (Some(1), Some("stocks fell")));
    assert_eq!(args[0]["embedding"].as_array().unwrap().len(), 384);
    // The same texts through stdin, one per request: the same vectors.
    let piped = lines(&with_stdin(&n, &["embed", "all-MiniLM-L6-v2", "--batch", "1"], b"hello world\nstocks fell\n"));
    assert_eq!(piped, args);
    // A generator is refused with the neuron's reason and exit code 1.
    let o = cortex(Some(&n), &["embed", "tiny", "x"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stderr).contains("embedding model"), "{o:?}");
}

#[test]
fn chat_gives_scripts_json_by_schema_and_tool_calls_as_json_lines() {
    let dir = TempDir::new("cli-structured");
    // Room for the tool's description in the prompt.
    common::roomy_tiny_model(dir.path(), "tiny");
    let n = Neuron::start(dir.path(), &[]);
    let schema = dir.path().join("verdict.json");
    std::fs::write(
        &schema,
        r#"{"type": "object", "properties": {"answer": {"enum": ["yes", "no"]}}, "required": ["answer"], "additionalProperties": false}"#,
    )
    .unwrap();
    let o = cortex(
        Some(&n),
        &["chat", "tiny", "Is it raining?", "--json-schema", schema.to_str().unwrap(), "--max-tokens", "64"],
    );
    let verdict = json(&o);
    assert!(verdict["answer"] == "yes" || verdict["answer"] == "no", "{verdict}");
    // A bare function object is a tool; the model must call it.
    let tool = dir.path().join("weather.json");
    std::fs::write(
        &tool,
        r#"{"name": "get_weather", "parameters": {"type": "object", "properties": {"city": {"enum": ["Paris", "Rome"]}}, "required": ["city"], "additionalProperties": false}}"#,
    )
    .unwrap();
    let o = cortex(
        Some(&n),
        &["chat", "tiny", "Weather in Paris?", "--tool", tool.to_str().unwrap(), "--max-tokens", "400"],
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(!stdout(&o).trim().is_empty(), "no tool call printed");
    for line in stdout(&o).lines() {
        let call: Value = serde_json::from_str(line).expect("each line is JSON");
        assert_eq!(call["name"], "get_weather", "{call}");
        assert!(["Paris", "Rome"].contains(&call["arguments"]["city"].as_str().unwrap_or("")), "{call}");
    }
    // A call cut by the token limit is not printed as if it were whole.
    let o = cortex(Some(&n), &["chat", "tiny", "Weather?", "--tool", tool.to_str().unwrap(), "--max-tokens", "3"]);
    assert_eq!(o.status.code(), Some(1), "{o:?}");
    assert!(String::from_utf8_lossy(&o.stderr).contains("raise --max-tokens"), "{o:?}");
    // A file that is not there is the user's to fix, said before anything runs.
    let o = cortex(None, &["chat", "tiny", "x", "--tool", "/nonexistent/tool.json"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stderr).contains("--tool /nonexistent/tool.json"), "{o:?}");
}
