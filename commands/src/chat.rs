//! `cortex chat MODEL [PROMPT]`: one answer streamed to stdout, or an interactive session.
//! With no neuron listening it runs one inside this process, pulling the model first when it
//! is a catalogue model that is not on disk yet.

use std::io::{IsTerminal, Read, Write};
use std::path::PathBuf;

use anyhow::Context;
use clap_complete::engine::ArgValueCompleter;
use cortex_neuron::config::Config;
use cortex_neuron::server::Neuron;
use serde_json::{json, Value};
use tokio::sync::oneshot;

use crate::client::{read_sse, Client, EndpointArgs, DEFAULT_ENDPOINT};
use crate::error::user;

#[derive(Debug, Clone, clap::Args)]
pub struct ChatArgs {
    /// Model id or alias, e.g. helexa/small
    #[arg(add = ArgValueCompleter::new(crate::complete::models))]
    pub model: String,
    /// Ask this and print the answer; without it (and without piped stdin) start a session
    pub prompt: Option<String>,
    /// System message that opens the conversation
    #[arg(long, short = 's', value_name = "TEXT")]
    pub system: Option<String>,
    /// Most tokens in each answer
    #[arg(long, value_name = "N")]
    pub max_tokens: Option<u32>,
    /// Sampling temperature; 0 is greedy (the same answer every time)
    #[arg(long, short = 't', value_name = "T")]
    pub temperature: Option<f32>,
    /// Seed for sampling, for repeatable answers at temperature > 0
    #[arg(long, value_name = "N")]
    pub seed: Option<u64>,
    /// Answer with JSON that validates against the JSON schema in FILE (grammar-constrained)
    #[arg(long, value_name = "FILE")]
    pub json_schema: Option<PathBuf>,
    /// Offer the tool defined in FILE (OpenAI's {"type": "function", "function": {...}} or the
    /// function object alone; repeatable): the model must call one, and each call is printed as
    /// a JSON line {"name", "arguments"}
    #[arg(long = "tool", value_name = "FILE")]
    pub tools: Vec<PathBuf>,
    /// Models directory for the in-process neuron [default: $CORTEX_HOME/models]
    #[arg(long, value_name = "DIR")]
    pub models_dir: Option<PathBuf>,
    #[command(flatten)]
    pub endpoint: EndpointArgs,
}

fn read_json_file(path: &std::path::Path, what: &str) -> anyhow::Result<Value> {
    let text =
        std::fs::read_to_string(path).map_err(|e| crate::UserError(format!("{what} {}: {e}", path.display())))?;
    let value: Value = serde_json::from_str(&text)
        .map_err(|e| crate::UserError(format!("{what} {} is not JSON: {e}", path.display())))?;
    if !value.is_object() {
        return user(format!("{what} {} must hold a JSON object", path.display()));
    }
    Ok(value)
}

/// What `--json-schema` and `--tool` add to a request: `response_format`, and `tools` with
/// `tool_choice: "required"`.
/// Request fields added to every turn.
type Structure = serde_json::Map<String, Value>;

fn structure(args: &ChatArgs) -> anyhow::Result<Structure> {
    let mut extra = serde_json::Map::new();
    if let Some(path) = &args.json_schema {
        let schema = read_json_file(path, "--json-schema")?;
        let name = path.file_stem().and_then(|s| s.to_str()).unwrap_or("answer").to_string();
        extra.insert(
            "response_format".into(),
            json!({"type": "json_schema", "json_schema": {"name": name, "schema": schema, "strict": true}}),
        );
    }
    if !args.tools.is_empty() {
        let tools = args
            .tools
            .iter()
            .map(|path| {
                let t = read_json_file(path, "--tool")?;
                let t = if t.get("type").is_some() { t } else { json!({"type": "function", "function": t}) };
                if t.pointer("/function/name").and_then(Value::as_str).is_none() {
                    return user(format!("--tool {}: a function needs a \"name\"", path.display()));
                }
                Ok(t)
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        extra.insert("tools".into(), Value::Array(tools));
        extra.insert("tool_choice".into(), "required".into());
    }
    Ok(extra)
}

/// A neuron running inside this process; stops when dropped.
struct Embedded {
    _stop: oneshot::Sender<()>,
}

async fn connect(args: &ChatArgs) -> anyhow::Result<(Client, Option<Embedded>)> {
    if let Some(url) = &args.endpoint.endpoint {
        let client = Client::new(url, args.endpoint.api_key.clone())?;
        if !client.is_up().await {
            return user(format!("no neuron answers at {url}; start one with `cortex serve` or drop --endpoint / CORTEX_ENDPOINT to run one in this process"));
        }
        return Ok((client, None));
    }
    let client = Client::new(DEFAULT_ENDPOINT, args.endpoint.api_key.clone())?;
    if client.is_up().await {
        return Ok((client, None));
    }
    let dir = args.models_dir.clone().unwrap_or_else(cortex_neuron::config::default_models_dir);
    if let Some(known) = cortex_proto::catalogue::known_model(&args.model) {
        if !dir.join(known.file).is_file() {
            eprintln!("cortex: {} is not in {} yet; pulling it", args.model, dir.display());
            let (model, d) = (args.model.clone(), dir.clone());
            tokio::task::spawn_blocking(move || crate::pull::fetch(&model, None, &d, false)).await??;
        }
    }
    let mut config = Config::default();
    config.server.listen = ([127, 0, 0, 1], 0).into();
    config.server.metrics_listen = ([127, 0, 0, 1], 0).into();
    config.models_dir = Some(dir);
    let neuron = Neuron::bind(&config, &[]).await.context("starting an in-process neuron")?;
    let url = format!("http://{}", neuron.http_addr());
    eprintln!("cortex: no neuron at {DEFAULT_ENDPOINT}; running one in this process");
    let (tx, rx) = oneshot::channel::<()>();
    tokio::spawn(neuron.run(async move {
        let _ = rx.await;
    }));
    Ok((Client::new(&url, None)?, Some(Embedded { _stop: tx })))
}

/// Streams one answer to stdout; the text received so far is kept in `answer` even when the
/// future is dropped (Ctrl-C).
async fn stream_answer(
    client: &Client,
    args: &ChatArgs,
    extra: &Structure,
    history: &[Value],
    answer: &mut String,
) -> anyhow::Result<()> {
    let mut body = json!({ "model": args.model, "messages": history, "stream": args.tools.is_empty() });
    body.as_object_mut().expect("an object").extend(extra.clone());
    if let Some(n) = args.max_tokens {
        body["max_tokens"] = n.into();
    }
    if let Some(t) = args.temperature {
        body["temperature"] = t.into();
    }
    if let Some(s) = args.seed {
        body["seed"] = s.into();
    }
    if !args.tools.is_empty() {
        return print_calls(client, &body, answer).await;
    }
    let resp = client.post_stream("/v1/chat/completions", &body).await?;
    let mut out = std::io::stdout().lock();
    read_sse(resp, |chunk| {
        if let Some(msg) = chunk.pointer("/error/message").and_then(Value::as_str) {
            anyhow::bail!("the neuron stopped the answer: {msg}");
        }
        if let Some(text) = chunk.pointer("/choices/0/delta/content").and_then(Value::as_str) {
            out.write_all(text.as_bytes())?;
            out.flush()?;
            answer.push_str(text);
        }
        Ok(())
    })
    .await?;
    if !answer.ends_with('\n') {
        writeln!(out)?;
    }
    Ok(())
}

/// `--tool`: one request, each tool call printed as a JSON line `{"name", "arguments"}` (the
/// arguments parsed) and kept in `answer` for the session's history.
async fn print_calls(client: &Client, body: &Value, answer: &mut String) -> anyhow::Result<()> {
    let resp = client.post_json("/v1/chat/completions", body).await?;
    if resp.pointer("/choices/0/finish_reason").and_then(Value::as_str) == Some("length") {
        return user("the answer was cut at the token limit before the tool call was complete: raise --max-tokens");
    }
    let calls = resp.pointer("/choices/0/message/tool_calls").and_then(Value::as_array).cloned().unwrap_or_default();
    if calls.is_empty() {
        anyhow::bail!("the model answered without calling a tool");
    }
    let mut out = String::new();
    for call in calls {
        let name = call.pointer("/function/name").cloned().unwrap_or(Value::Null);
        let raw = call.pointer("/function/arguments").and_then(Value::as_str).unwrap_or("{}");
        let arguments: Value = serde_json::from_str(raw).unwrap_or_else(|_| Value::String(raw.to_string()));
        out.push_str(&json!({"name": name, "arguments": arguments}).to_string());
        out.push('\n');
    }
    answer.push_str(&out);
    crate::printer::emit(&out)
}

fn message(role: &str, content: &str) -> Value {
    json!({ "role": role, "content": content })
}

pub async fn run(args: ChatArgs) -> anyhow::Result<()> {
    // Read once; a bad --json-schema or --tool file is reported before any neuron is started.
    let extra = structure(&args)?;
    let piped = !std::io::stdin().is_terminal();
    let mut history: Vec<Value> = args.system.iter().map(|s| message("system", s)).collect();
    if args.prompt.is_some() || piped {
        let mut prompt = args.prompt.clone().unwrap_or_default();
        if piped {
            let mut input = String::new();
            std::io::stdin().read_to_string(&mut input).context("reading stdin")?;
            if !prompt.is_empty() && !input.is_empty() {
                prompt.push_str("\n\n");
            }
            prompt.push_str(&input);
        }
        if prompt.trim().is_empty() {
            return user("the prompt is empty: give one as an argument or on stdin");
        }
        let (client, _embedded) = connect(&args).await?;
        history.push(message("user", &prompt));
        return stream_answer(&client, &args, &extra, &history, &mut String::new()).await;
    }
    let (client, _embedded) = connect(&args).await?;
    repl(&client, &args, &extra, history).await
}

async fn repl(client: &Client, args: &ChatArgs, extra: &Structure, mut history: Vec<Value>) -> anyhow::Result<()> {
    eprintln!("Chatting with {}. /system TEXT sets the system message, /reset clears the conversation, /exit or Ctrl-D leaves; Ctrl-C stops an answer.", args.model);
    let mut editor = rustyline::DefaultEditor::new().context("starting the line editor")?;
    loop {
        let (ed, line) = tokio::task::spawn_blocking(move || {
            let line = editor.readline(">>> ");
            (editor, line)
        })
        .await?;
        editor = ed;
        let line = match line {
            Ok(l) => l,
            Err(rustyline::error::ReadlineError::Interrupted) => continue,
            Err(rustyline::error::ReadlineError::Eof) => return Ok(()),
            Err(e) => return Err(e).context("reading input"),
        };
        let text = line.trim();
        if text.is_empty() {
            continue;
        }
        let _ = editor.add_history_entry(text);
        match text.split_once(' ').map(|(c, r)| (c, r.trim())).unwrap_or((text, "")) {
            ("/exit" | "/quit" | "/bye", _) => return Ok(()),
            ("/reset", _) => {
                history.retain(|m| m["role"] == "system");
                eprintln!("(conversation cleared)");
                continue;
            }
            ("/system", sys) => {
                history.retain(|m| m["role"] != "system");
                if !sys.is_empty() {
                    history.insert(0, message("system", sys));
                }
                eprintln!("(system message {})", if sys.is_empty() { "removed" } else { "set" });
                continue;
            }
            ("/help", _) => {
                eprintln!("/system TEXT  set the system message (empty removes it)\n/reset        forget the conversation\n/exit         leave");
                continue;
            }
            _ => {}
        }
        history.push(message("user", text));
        let mut answer = String::new();
        let outcome = tokio::select! {
            r = stream_answer(client, args, extra, &history, &mut answer) => r,
            _ = tokio::signal::ctrl_c() => {
                eprintln!("\n(stopped)");
                Ok(())
            }
        };
        if let Err(e) = outcome {
            eprintln!("error: {e:#}");
        }
        // What the user saw stays in the conversation, even when stopped early.
        history.push(message("assistant", &answer));
    }
}
