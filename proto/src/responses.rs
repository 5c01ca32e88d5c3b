//! The OpenAI Responses dialect (`POST /v1/responses`): the request and its input items, their
//! translation to the neutral generation request, and the response object and stream events
//! built from the neutral event stream. Codex CLI speaks only this dialect to custom providers.
//!
//! Input items become chat messages in order: `message` (roles user, system, developer,
//! assistant; `input_text` / `output_text` parts), `function_call` and `custom_tool_call` (one
//! assistant turn for consecutive calls), their `…_output` items (tool results); `reasoning`
//! items are skipped; anything else is a 400 naming the item. A stored earlier response
//! (`previous_response_id`) is replayed by the caller as items before these.

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::generate::{
    ChatMessage, ErrorKind, Event, FinishReason, GenerateError, GenerateRequest, Prompt, Role, SamplingParams, Usage,
};
use crate::tools::{check_tools, Grammar, ResponseFormat, Tool, ToolCall, ToolChoice, ToolInput};
use crate::translate::{Collected, CollectedChoice};

/// `object` of a response.
pub const RESPONSE_OBJECT: &str = "response";

/// Body of `POST /v1/responses`. Unknown fields are ignored (`metadata`, `user`, `truncation`,
/// `include`, `service_tier`…); the fields cortex acts on are checked by [`ResponsesRequest::to_neutral`].
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ResponsesRequest {
    pub model: String,
    #[serde(default)]
    pub input: Value,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instructions: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tools: Vec<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_choice: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parallel_tool_calls: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_output_tokens: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub temperature: Option<f32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub top_p: Option<f32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub store: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous_response_id: Option<String>,
    #[serde(default)]
    pub stream: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keep_alive: Option<Value>,
}

fn invalid(msg: impl Into<String>) -> GenerateError {
    GenerateError::new(ErrorKind::InvalidRequest, msg)
}

fn str_field<'a>(item: &'a Value, key: &str, at: &str) -> Result<&'a str, GenerateError> {
    item.get(key).and_then(Value::as_str).ok_or_else(|| invalid(format!("{at}.{key} must be a string")))
}

/// The text of a message item's `content`: a string, or `input_text` / `output_text` parts.
fn content_text(content: &Value, at: &str) -> Result<String, GenerateError> {
    match content {
        Value::String(s) => Ok(s.clone()),
        Value::Array(parts) => {
            let mut text = String::new();
            for (j, part) in parts.iter().enumerate() {
                match part.get("type").and_then(Value::as_str) {
                    Some("input_text" | "output_text" | "text") => {
                        text.push_str(str_field(part, "text", &format!("{at}.content[{j}]"))?)
                    }
                    // A refusal an earlier answer carried is part of the conversation's text.
                    Some("refusal") => text.push_str(str_field(part, "refusal", &format!("{at}.content[{j}]"))?),
                    Some(other) => {
                        return Err(invalid(format!(
                            "{at}.content[{j}]: `{other}` parts are not supported (text only)"
                        )))
                    }
                    None => return Err(invalid(format!("{at}.content[{j}] has no type"))),
                }
            }
            Ok(text)
        }
        _ => Err(invalid(format!("{at}.content must be a string or an array of parts"))),
    }
}

/// Input items as chat messages, in order. Consecutive calls form one assistant turn.
pub fn items_to_messages(items: &[Value], messages: &mut Vec<ChatMessage>) -> Result<(), GenerateError> {
    for (i, item) in items.iter().enumerate() {
        let at = format!("input[{i}]");
        // An item with a role and no type is a message (the "easy" input form).
        let kind =
            item.get("type").and_then(Value::as_str).unwrap_or(if item.get("role").is_some() { "message" } else { "" });
        match kind {
            "message" => {
                let role = match str_field(item, "role", &at)? {
                    "user" => Role::User,
                    "system" | "developer" => Role::System,
                    "assistant" => Role::Assistant,
                    other => {
                        return Err(invalid(format!("{at}.role `{other}` is not user, system, developer or assistant")))
                    }
                };
                let content = content_text(item.get("content").unwrap_or(&Value::Null), &at)?;
                messages.push(ChatMessage::text(role, content));
            }
            "function_call" | "custom_tool_call" => {
                let arguments = if kind == "function_call" {
                    str_field(item, "arguments", &at)?.to_string()
                } else {
                    str_field(item, "input", &at)?.to_string()
                };
                let call = ToolCall {
                    id: str_field(item, "call_id", &at)?.to_string(),
                    name: str_field(item, "name", &at)?.to_string(),
                    arguments,
                };
                match messages.last_mut() {
                    Some(last) if last.role == Role::Assistant && !last.tool_calls.is_empty() => {
                        last.tool_calls.push(call)
                    }
                    _ => {
                        messages.push(ChatMessage { tool_calls: vec![call], ..ChatMessage::text(Role::Assistant, "") })
                    }
                }
            }
            "function_call_output" | "custom_tool_call_output" => {
                let output = match item.get("output") {
                    Some(Value::String(s)) => s.clone(),
                    Some(v @ Value::Array(_)) => content_text(v, &format!("{at}.output"))?,
                    _ => return Err(invalid(format!("{at}.output must be a string or text parts"))),
                };
                let call_id = str_field(item, "call_id", &at)?.to_string();
                messages.push(ChatMessage { tool_call_id: Some(call_id), ..ChatMessage::text(Role::Tool, output) });
            }
            // The model's hidden reasoning from an earlier turn: nothing cortex's models read.
            "reasoning" => {}
            "" => return Err(invalid(format!("{at} has neither a type nor a role"))),
            other => return Err(invalid(format!("{at}: items of type `{other}` are not supported"))),
        }
    }
    Ok(())
}

/// Tool types that run on OpenAI's servers (search, code interpreter, MCP connectors…). Agents
/// send them by default (Codex always offers `web_search`); cortex cannot run them and leaves
/// them out of the prompt, as a server without that capability would.
const HOSTED_TOOLS: &[&str] = &[
    "web_search",
    "web_search_preview",
    "file_search",
    "code_interpreter",
    "image_generation",
    "computer_use_preview",
    "mcp",
    "local_shell",
    "tool_search",
];

/// The tools of a request as the model sees them: `function` and `custom` tools, and the
/// functions inside each `namespace` (with the namespace they answer to), hosted tools left out.
fn tools_of(tools: &[Value]) -> Result<Vec<(Tool, Option<String>)>, GenerateError> {
    let mut out = Vec::new();
    for (i, t) in tools.iter().enumerate() {
        match t.get("type").and_then(Value::as_str) {
            Some("namespace") => {
                let ns = str_field(t, "name", &format!("tools[{i}]"))?;
                let inner = t.get("tools").and_then(Value::as_array).map(Vec::as_slice).unwrap_or_default();
                for (j, f) in inner.iter().enumerate() {
                    out.push((tool_of(f, &format!("tools[{i}].tools[{j}]"))?, Some(ns.to_string())));
                }
            }
            Some(kind) if HOSTED_TOOLS.contains(&kind) => {}
            _ => out.push((tool_of(t, &format!("tools[{i}]"))?, None)),
        }
    }
    Ok(out)
}

/// A tool of the request: `function` (JSON arguments) or `custom` (free text, optionally a Lark
/// or regex grammar).
fn tool_of(t: &Value, at: &str) -> Result<Tool, GenerateError> {
    let name = str_field(t, "name", at)?.to_string();
    let description = t.get("description").and_then(Value::as_str).unwrap_or_default().to_string();
    let input = match t.get("type").and_then(Value::as_str) {
        Some("function") => ToolInput::Json {
            schema: t.get("parameters").cloned().unwrap_or_else(|| json!({"type": "object"})),
            strict: t.get("strict").and_then(Value::as_bool).unwrap_or(false),
        },
        Some("custom") => {
            let grammar = match t.get("format") {
                None | Some(Value::Null) => None,
                Some(f) => match f.get("type").and_then(Value::as_str) {
                    Some("text") => None,
                    Some("grammar") => {
                        let definition = str_field(f, "definition", &format!("{at}.format"))?.to_string();
                        match f.get("syntax").and_then(Value::as_str) {
                            Some("lark") => Some(Grammar::Lark(definition)),
                            Some("regex") => Some(Grammar::Regex(definition)),
                            other => {
                                return Err(invalid(format!("{at}.format.syntax must be lark or regex, not {other:?}")))
                            }
                        }
                    }
                    other => return Err(invalid(format!("{at}.format.type must be text or grammar, not {other:?}"))),
                },
            };
            ToolInput::Text { grammar }
        }
        Some(other) => {
            return Err(invalid(format!(
                "{at}: `{other}` tools are not supported; cortex runs `function`, `custom` and `namespace` tools \
                 (hosted tools such as `web_search` are left out)"
            )))
        }
        None => return Err(invalid(format!("{at} has no type"))),
    };
    Ok(Tool { name, description, input })
}

fn tool_choice_of(v: Option<&Value>) -> Result<ToolChoice, GenerateError> {
    Ok(match v {
        None | Some(Value::Null) => ToolChoice::Auto,
        Some(Value::String(s)) => match s.as_str() {
            "auto" => ToolChoice::Auto,
            "none" => ToolChoice::None,
            "required" => ToolChoice::Required,
            other => return Err(invalid(format!("tool_choice `{other}` is not auto, none or required"))),
        },
        Some(o) => match o.get("type").and_then(Value::as_str) {
            Some("function" | "custom") => ToolChoice::Named(str_field(o, "name", "tool_choice")?.to_string()),
            _ => {
                return Err(invalid(
                    "tool_choice must be auto, none, required or {\"type\": \"function\", \"name\": …}",
                ))
            }
        },
    })
}

fn format_of(text: Option<&Value>) -> Result<ResponseFormat, GenerateError> {
    let Some(format) = text.and_then(|t| t.get("format")) else { return Ok(ResponseFormat::Text) };
    Ok(match format.get("type").and_then(Value::as_str) {
        Some("text") | None => ResponseFormat::Text,
        Some("json_object") => ResponseFormat::JsonObject,
        Some("json_schema") => ResponseFormat::JsonSchema {
            name: format.get("name").and_then(Value::as_str).unwrap_or_default().to_string(),
            schema: format
                .get("schema")
                .cloned()
                .ok_or_else(|| invalid("text.format.schema is required for json_schema"))?,
            strict: format.get("strict").and_then(Value::as_bool).unwrap_or(false),
        },
        Some(other) => {
            return Err(invalid(format!("text.format.type `{other}` is not text, json_object or json_schema")))
        }
    })
}

impl ResponsesRequest {
    /// How this request's tool calls are written back.
    pub fn call_style(&self) -> Result<CallStyle, GenerateError> {
        let mut style = CallStyle::default();
        for (t, ns) in tools_of(&self.tools)? {
            if matches!(t.input, ToolInput::Text { .. }) {
                style.custom.push(t.name.clone());
            }
            if let Some(ns) = ns {
                style.namespace.push((t.name, ns));
            }
        }
        Ok(style)
    }

    /// The request's settings a response object repeats, with the documented defaults for what
    /// the request left out; `model` is the name the client asked for.
    pub fn echo(&self) -> Value {
        json!({
            "model": self.model,
            "instructions": self.instructions,
            "tools": self.tools,
            "tool_choice": self.tool_choice.clone().unwrap_or_else(|| "auto".into()),
            "parallel_tool_calls": self.parallel_tool_calls.unwrap_or(true),
            "temperature": self.temperature,
            "top_p": self.top_p,
            "max_output_tokens": self.max_output_tokens,
            "previous_response_id": self.previous_response_id,
            "store": self.store.unwrap_or(true),
            "text": self.text.clone().unwrap_or_else(|| json!({"format": {"type": "text"}})),
            "metadata": {},
        })
    }

    /// The neutral request, with `history` (a stored earlier exchange, as messages) before this
    /// request's own input.
    pub fn to_neutral(
        &self,
        id: String,
        model: String,
        history: Vec<ChatMessage>,
    ) -> Result<GenerateRequest, GenerateError> {
        let mut messages = Vec::new();
        if let Some(instructions) = &self.instructions {
            messages.push(ChatMessage::text(Role::System, instructions.clone()));
        }
        messages.extend(history);
        match &self.input {
            Value::String(s) => messages.push(ChatMessage::text(Role::User, s.clone())),
            Value::Array(items) => items_to_messages(items, &mut messages)?,
            Value::Null => {}
            _ => return Err(invalid("`input` must be a string or an array of items")),
        }
        if !messages.iter().any(|m| m.role != Role::System) {
            return Err(invalid("`input` is empty: give a string or at least one item"));
        }
        let tools: Vec<Tool> = tools_of(&self.tools)?.into_iter().map(|(t, _)| t).collect();
        let tool_choice = tool_choice_of(self.tool_choice.as_ref())?;
        check_tools(&tools, &tool_choice).map_err(invalid)?;
        let params = SamplingParams {
            max_tokens: self.max_output_tokens,
            temperature: self.temperature,
            top_p: self.top_p,
            ..SamplingParams::default()
        };
        let mut req = GenerateRequest::new(id, model, Prompt::Chat(messages), params);
        req.tools = tools;
        req.tool_choice = tool_choice;
        req.parallel_tool_calls = self.parallel_tool_calls.unwrap_or(true);
        req.format = format_of(self.text.as_ref())?;
        Ok(req)
    }
}

/// How the calls of each tool are written back: free-form (`custom_tool_call`) or JSON
/// (`function_call`), and the namespace a tool came from.
#[derive(Debug, Clone, Default)]
pub struct CallStyle {
    custom: Vec<String>,
    namespace: Vec<(String, String)>,
}

impl CallStyle {
    pub fn is_custom(&self, name: &str) -> bool {
        self.custom.iter().any(|c| c == name)
    }

    fn namespace(&self, name: &str) -> Option<&str> {
        self.namespace.iter().find(|(n, _)| n == name).map(|(_, ns)| ns.as_str())
    }

    /// An output item for a tool call (`status` completed).
    pub fn call_item(&self, call: &ToolCall, item_id: &str) -> Value {
        let mut item = if self.is_custom(&call.name) {
            json!({"type": "custom_tool_call", "id": item_id, "call_id": call.id, "name": call.name, "input": call.arguments, "status": "completed"})
        } else {
            json!({"type": "function_call", "id": item_id, "call_id": call.id, "name": call.name, "arguments": call.arguments, "status": "completed"})
        };
        if let Some(ns) = self.namespace(&call.name) {
            item["namespace"] = ns.into();
        }
        item
    }

    fn item_prefix(&self, name: &str) -> &'static str {
        if self.is_custom(name) {
            "ctc_"
        } else {
            "fc_"
        }
    }
}

/// An assistant message output item.
pub fn message_item(text: &str, item_id: &str) -> Value {
    json!({"type": "message", "id": item_id, "status": "completed", "role": "assistant",
           "content": [{"type": "output_text", "text": text, "annotations": []}]})
}

/// `usage` of a response.
pub fn usage_of(usage: Usage) -> Value {
    json!({
        "input_tokens": usage.prompt_tokens,
        "input_tokens_details": {"cached_tokens": usage.cached_tokens},
        "output_tokens": usage.completion_tokens,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": usage.total(),
    })
}

/// The output items of a finished (non-streaming) answer, in order: the message (when there is
/// text, or nothing else), then each call.
pub fn output_items(choice: &CollectedChoice, style: &CallStyle, ids: &mut impl FnMut(&str) -> String) -> Vec<Value> {
    let mut out = Vec::new();
    if !choice.text.is_empty() || choice.tool_calls.is_empty() {
        out.push(message_item(&choice.text, &ids("msg_")));
    }
    for c in &choice.tool_calls {
        out.push(style.call_item(c, &ids(style.item_prefix(&c.name))));
    }
    out
}

/// `status` of a finished response: `incomplete` when it stopped at `max_output_tokens`.
pub fn status_of(finish: Option<&FinishReason>) -> &'static str {
    match finish {
        Some(FinishReason::Length) => "incomplete",
        _ => "completed",
    }
}

/// The non-streaming response body for a collected answer (its first choice).
pub fn response_body(id: &str, echo: &Value, created: u64, c: &Collected, style: &CallStyle) -> Value {
    let choice = c.choices.first().cloned().unwrap_or_default();
    let mut n = 0;
    let mut output = output_items(&choice, style, &mut |p| {
        n += 1;
        format!("{p}{}_{n}", id.trim_start_matches("resp_"))
    });
    let status = status_of(choice.finish.as_ref());
    if status == "incomplete" {
        if let Some(last) = output.last_mut() {
            last["status"] = "incomplete".into();
        }
    }
    let mut r = response_object(id, echo, created, status, output, Some(usage_of(c.usage)));
    if status == "incomplete" {
        r["incomplete_details"] = json!({"reason": "max_output_tokens"});
    }
    r
}

/// The response object around `output`, as `response.*` events and non-streaming answers carry
/// it. `echo` holds the request's settings the object repeats ([`ResponsesRequest::echo`]).
pub fn response_object(
    id: &str,
    echo: &Value,
    created: u64,
    status: &str,
    output: Vec<Value>,
    usage: Option<Value>,
) -> Value {
    let mut r = json!({
        "id": id, "object": RESPONSE_OBJECT, "created_at": created, "status": status,
        "output": output, "usage": usage, "error": null, "incomplete_details": null,
    });
    if let (Some(r), Some(e)) = (r.as_object_mut(), echo.as_object()) {
        for (k, v) in e {
            r.insert(k.clone(), v.clone());
        }
    }
    r
}

/// What is open in a stream: the assistant message (its text so far) or a tool call.
enum Open {
    None,
    Message { item_id: String, output_index: usize, text: String },
    Call { item_id: String, output_index: usize, call: ToolCall, custom: bool },
}

/// The streaming renderer: neutral events in, `response.*` SSE frames out, every one with its
/// `sequence_number`. Holds no IO and no clock.
pub struct ResponsesStream {
    id: String,
    echo: Value,
    created: u64,
    style: CallStyle,
    seq: u64,
    started: bool,
    finished: bool,
    failed: bool,
    cut: bool,
    open: Open,
    output: Vec<Value>,
    items: u32,
}

impl ResponsesStream {
    pub fn new(id: String, echo: Value, created: u64, style: CallStyle) -> Self {
        Self {
            id,
            echo,
            created,
            style,
            seq: 0,
            started: false,
            finished: false,
            failed: false,
            cut: false,
            open: Open::None,
            output: Vec::new(),
            items: 0,
        }
    }

    pub fn is_finished(&self) -> bool {
        self.finished
    }

    /// The output items of a response that ended without failing (completed or incomplete).
    pub fn output(&self) -> Option<&[Value]> {
        (self.finished && !self.failed).then_some(&self.output[..])
    }

    fn frame(&mut self, kind: &str, mut body: Value) -> crate::translate::SseFrame {
        body["type"] = kind.into();
        body["sequence_number"] = self.seq.into();
        self.seq += 1;
        crate::translate::SseFrame { event: Some(kind.to_string()), data: body.to_string() }
    }

    fn item_id(&mut self, prefix: &str) -> String {
        self.items += 1;
        format!("{prefix}{}_{}", self.id.trim_start_matches("resp_"), self.items)
    }

    fn start(&mut self, out: &mut Vec<crate::translate::SseFrame>) {
        if self.started {
            return;
        }
        self.started = true;
        let r = response_object(&self.id, &self.echo, self.created, "in_progress", Vec::new(), None);
        out.push(self.frame("response.created", json!({"response": r.clone()})));
        out.push(self.frame("response.in_progress", json!({"response": r})));
    }

    /// Ends whatever item is open, with its `…done` events.
    fn close(&mut self, out: &mut Vec<crate::translate::SseFrame>) {
        match std::mem::replace(&mut self.open, Open::None) {
            Open::None => {}
            Open::Message { item_id, output_index, text } => {
                let part = json!({"type": "output_text", "text": text, "annotations": []});
                let ids = json!({"item_id": item_id, "output_index": output_index, "content_index": 0});
                let mut done = ids.clone();
                done["text"] = text.clone().into();
                out.push(self.frame("response.output_text.done", done));
                let mut part_done = ids;
                part_done["part"] = part;
                out.push(self.frame("response.content_part.done", part_done));
                let item = message_item(&text, &item_id);
                self.finish_item(out, output_index, item);
            }
            Open::Call { item_id, output_index, call, custom } => {
                let (kind, key) = if custom {
                    ("response.custom_tool_call_input.done", "input")
                } else {
                    ("response.function_call_arguments.done", "arguments")
                };
                let mut done = json!({"item_id": item_id, "output_index": output_index});
                done[key] = call.arguments.clone().into();
                out.push(self.frame(kind, done));
                let item = self.style.call_item(&call, &item_id);
                self.finish_item(out, output_index, item);
            }
        }
    }

    /// `response.output_item.done` for a closed item (incomplete when the answer was cut), and
    /// the item kept for the final response.
    fn finish_item(&mut self, out: &mut Vec<crate::translate::SseFrame>, output_index: usize, mut item: Value) {
        if self.cut {
            item["status"] = "incomplete".into();
        }
        out.push(self.frame("response.output_item.done", json!({"output_index": output_index, "item": item.clone()})));
        self.output.push(item);
    }

    pub fn on_event(&mut self, ev: &Event) -> Vec<crate::translate::SseFrame> {
        let mut out = Vec::new();
        if self.finished {
            return out;
        }
        self.start(&mut out);
        match ev {
            Event::Started { .. } => {}
            Event::Text { choice: 0, text, .. } => {
                if !matches!(self.open, Open::Message { .. }) {
                    self.close(&mut out);
                    let item_id = self.item_id("msg_");
                    let output_index = self.output.len();
                    let item = json!({"type": "message", "id": item_id, "status": "in_progress", "role": "assistant", "content": []});
                    out.push(
                        self.frame("response.output_item.added", json!({"output_index": output_index, "item": item})),
                    );
                    let part = json!({"type": "output_text", "text": "", "annotations": []});
                    out.push(self.frame(
                        "response.content_part.added",
                        json!({"item_id": item_id, "output_index": output_index, "content_index": 0, "part": part}),
                    ));
                    self.open = Open::Message { item_id, output_index, text: String::new() };
                }
                if let Open::Message { item_id, output_index, text: so_far } = &mut self.open {
                    so_far.push_str(text);
                    let delta =
                        json!({"item_id": item_id, "output_index": output_index, "content_index": 0, "delta": text});
                    out.push(self.frame("response.output_text.delta", delta));
                }
            }
            Event::ToolCall { choice: 0, id, name, .. } => {
                self.close(&mut out);
                let custom = self.style.is_custom(name);
                let item_id = self.item_id(self.style.item_prefix(name));
                let output_index = self.output.len();
                let call = ToolCall { id: id.clone(), name: name.clone(), arguments: String::new() };
                let mut item = self.style.call_item(&call, &item_id);
                item["status"] = "in_progress".into();
                out.push(self.frame("response.output_item.added", json!({"output_index": output_index, "item": item})));
                self.open = Open::Call { item_id, output_index, call, custom };
            }
            Event::ToolArgs { choice: 0, fragment, .. } => {
                if let Open::Call { item_id, output_index, call, custom } = &mut self.open {
                    call.arguments.push_str(fragment);
                    let kind = if *custom {
                        "response.custom_tool_call_input.delta"
                    } else {
                        "response.function_call_arguments.delta"
                    };
                    let delta = json!({"item_id": item_id, "output_index": output_index, "delta": fragment});
                    out.push(self.frame(kind, delta));
                }
            }
            Event::Done { choice: 0, finish, usage, .. } => {
                // Cut at max_output_tokens: the item open now is incomplete (a call's input too).
                self.cut = *finish == FinishReason::Length;
                if self.output.is_empty() && matches!(self.open, Open::None) {
                    // An empty answer is still one (empty) message.
                    self.open_empty_message(&mut out);
                }
                self.close(&mut out);
                let (status, kind) = match finish {
                    FinishReason::Length => ("incomplete", "response.incomplete"),
                    _ => ("completed", "response.completed"),
                };
                let mut r = response_object(
                    &self.id,
                    &self.echo,
                    self.created,
                    status,
                    self.output.clone(),
                    Some(usage_of(*usage)),
                );
                if status == "incomplete" {
                    r["incomplete_details"] = json!({"reason": "max_output_tokens"});
                }
                out.push(self.frame(kind, json!({"response": r})));
                self.finished = true;
            }
            Event::Error { error } => {
                let mut r = response_object(&self.id, &self.echo, self.created, "failed", self.output.clone(), None);
                r["error"] = json!({"code": error_code(error.kind), "message": error.message});
                out.push(self.frame("response.failed", json!({"response": r})));
                self.finished = true;
                self.failed = true;
            }
            _ => {}
        }
        out
    }

    fn open_empty_message(&mut self, out: &mut Vec<crate::translate::SseFrame>) {
        let item_id = self.item_id("msg_");
        let output_index = self.output.len();
        let item =
            json!({"type": "message", "id": item_id, "status": "in_progress", "role": "assistant", "content": []});
        out.push(self.frame("response.output_item.added", json!({"output_index": output_index, "item": item})));
        self.open = Open::Message { item_id, output_index, text: String::new() };
    }
}

/// The `code` of a failed response's error.
pub fn error_code(kind: ErrorKind) -> &'static str {
    match kind {
        ErrorKind::InvalidRequest => "invalid_prompt",
        ErrorKind::Overloaded => "rate_limit_exceeded",
        _ => "server_error",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(body: Value) -> ResponsesRequest {
        serde_json::from_value(body).unwrap()
    }

    #[test]
    fn items_become_messages_with_calls_grouped_and_results_linked() {
        let r = req(json!({"model": "m", "instructions": "Be brief.", "input": [
            {"role": "user", "content": "weather in Paris and Rome?"},
            {"type": "reasoning", "id": "rs_1", "summary": []},
            {"type": "function_call", "call_id": "c1", "name": "get_weather", "arguments": "{\"city\":\"Paris\"}"},
            {"type": "function_call", "call_id": "c2", "name": "get_weather", "arguments": "{\"city\":\"Rome\"}"},
            {"type": "function_call_output", "call_id": "c1", "output": "sunny"},
            {"type": "function_call_output", "call_id": "c2", "output": [{"type": "input_text", "text": "rain"}]},
            {"type": "message", "role": "developer", "content": [{"type": "input_text", "text": "Answer now."}]}
        ]}));
        let n = r.to_neutral("resp_1".into(), "m".into(), Vec::new()).unwrap();
        let Prompt::Chat(m) = n.prompt else { panic!() };
        let roles: Vec<Role> = m.iter().map(|m| m.role).collect();
        assert_eq!(roles, [Role::System, Role::User, Role::Assistant, Role::Tool, Role::Tool, Role::System]);
        assert_eq!(m[2].tool_calls.iter().map(|c| c.id.as_str()).collect::<Vec<_>>(), ["c1", "c2"]);
        assert_eq!((m[3].tool_call_id.as_deref(), m[4].content.as_str()), (Some("c1"), "rain"));
    }

    #[test]
    fn function_and_custom_tools_with_their_grammars() {
        let r = req(
            json!({"model": "m", "input": "patch it", "tool_choice": {"type": "custom", "name": "apply_patch"},
            "tools": [
                {"type": "function", "name": "shell", "parameters": {"type": "object", "properties": {"cmd": {"type": "string"}}}, "strict": true},
                {"type": "custom", "name": "apply_patch", "format": {"type": "grammar", "syntax": "lark", "definition": "start: \"*** Begin Patch\""}}
            ]}),
        );
        let n = r.to_neutral("r".into(), "m".into(), Vec::new()).unwrap();
        assert!(matches!(n.tools[0].input, ToolInput::Json { strict: true, .. }));
        assert_eq!(
            n.tools[1].input,
            ToolInput::Text { grammar: Some(Grammar::Lark("start: \"*** Begin Patch\"".into())) }
        );
        assert_eq!(n.tool_choice, ToolChoice::Named("apply_patch".into()));
        let style = r.call_style().unwrap();
        assert!(style.is_custom("apply_patch") && !style.is_custom("shell"));
    }

    #[test]
    fn hosted_tools_are_left_out_and_namespaced_calls_say_their_namespace() {
        let r = req(json!({"model": "m", "input": "hi", "tools": [
            {"type": "web_search", "external_web_access": false},
            {"type": "namespace", "name": "agents", "description": "sub-agents", "tools": [
                {"type": "function", "name": "spawn", "parameters": {"type": "object"}}
            ]},
            {"type": "function", "name": "shell", "parameters": {"type": "object"}}
        ]}));
        let n = r.to_neutral("r".into(), "m".into(), Vec::new()).unwrap();
        assert_eq!(n.tools.iter().map(|t| t.name.as_str()).collect::<Vec<_>>(), ["spawn", "shell"]);
        let style = r.call_style().unwrap();
        let call = |name: &str| ToolCall { id: "c".into(), name: name.into(), arguments: "{}".into() };
        assert_eq!(style.call_item(&call("spawn"), "fc_1")["namespace"], "agents");
        assert!(style.call_item(&call("shell"), "fc_2").get("namespace").is_none());
    }

    #[test]
    fn bad_input_is_a_400_that_names_the_item() {
        for (body, words) in [
            (json!({"model": "m", "input": []}), "empty"),
            (
                json!({"model": "m", "input": [{"type": "web_search_call", "id": "x"}]}),
                "input[0]: items of type `web_search_call`",
            ),
            (
                json!({"model": "m", "input": [{"role": "user", "content": [{"type": "input_image", "image_url": "x"}]}]}),
                "input[0].content[0]",
            ),
            (json!({"model": "m", "input": [{"role": "robot", "content": "x"}]}), "input[0].role"),
            (json!({"model": "m", "input": "x", "tools": [{"type": "teleport", "name": "t"}]}), "tools[0]: `teleport`"),
            (
                json!({"model": "m", "input": "x", "tools": [{"type": "namespace", "name": "ns", "tools": [{"type": "function"}]}]}),
                "tools[0].tools[0].name",
            ),
            (json!({"model": "m", "input": "x", "text": {"format": {"type": "json_schema"}}}), "text.format.schema"),
            (json!({"model": "m", "input": "x", "tool_choice": "required"}), "no tools"),
        ] {
            let err = req(body.clone()).to_neutral("r".into(), "m".into(), Vec::new()).unwrap_err();
            assert_eq!(err.kind, ErrorKind::InvalidRequest);
            assert!(err.message.contains(words), "{body}: {}", err.message);
        }
    }

    #[test]
    fn collected_events_become_output_items_usage_and_the_echoed_request() {
        let mut c = Collected::default();
        for ev in [
            Event::Started { prompt_tokens: 9, cached_tokens: 0 },
            Event::ToolCall { choice: 0, index: 0, id: "call_1".into(), name: "shell".into() },
            Event::ToolArgs { choice: 0, index: 0, fragment: "{\"cmd\":".into() },
            Event::ToolArgs { choice: 0, index: 0, fragment: "\"ls\"}".into() },
            Event::Done {
                choice: 0,
                finish: FinishReason::ToolCalls,
                usage: Usage { prompt_tokens: 9, completion_tokens: 7, ..Default::default() },
                timings: Default::default(),
            },
        ] {
            c.push(ev);
        }
        let echo = req(json!({"model": "helexa/small", "input": "ls", "store": false})).echo();
        let r = response_body("resp_ab", &echo, 5, &c, &CallStyle::default());
        assert_eq!(
            r["output"],
            json!([{"type": "function_call", "id": "fc_ab_1", "call_id": "call_1", "name": "shell", "arguments": "{\"cmd\":\"ls\"}", "status": "completed"}])
        );
        assert_eq!((r["status"].as_str(), r["usage"]["total_tokens"].as_u64()), (Some("completed"), Some(16)));
        assert_eq!((r["model"].as_str(), r["store"].as_bool()), (Some("helexa/small"), Some(false)));
        assert_eq!(r["tool_choice"], "auto");
    }

    fn kinds(frames: &[crate::translate::SseFrame]) -> Vec<String> {
        frames.iter().map(|f| f.event.clone().unwrap()).collect()
    }

    #[test]
    fn a_streamed_answer_with_text_then_a_call_follows_the_documented_sequence() {
        let mut s = ResponsesStream::new("resp_1".into(), json!({"model": "m"}), 7, CallStyle::default());
        let mut frames = Vec::new();
        for ev in [
            Event::Started { prompt_tokens: 3, cached_tokens: 0 },
            Event::text("Run"),
            Event::text("ning."),
            Event::ToolCall { choice: 0, index: 0, id: "call_1".into(), name: "shell".into() },
            Event::ToolArgs { choice: 0, index: 0, fragment: "{}".into() },
            Event::Done {
                choice: 0,
                finish: FinishReason::ToolCalls,
                usage: Usage { prompt_tokens: 3, completion_tokens: 5, ..Default::default() },
                timings: Default::default(),
            },
            Event::text("after the end"),
        ] {
            frames.extend(s.on_event(&ev));
        }
        assert_eq!(
            kinds(&frames),
            [
                "response.created",
                "response.in_progress",
                "response.output_item.added",
                "response.content_part.added",
                "response.output_text.delta",
                "response.output_text.delta",
                "response.output_text.done",
                "response.content_part.done",
                "response.output_item.done",
                "response.output_item.added",
                "response.function_call_arguments.delta",
                "response.function_call_arguments.done",
                "response.output_item.done",
                "response.completed",
            ]
        );
        let seqs: Vec<u64> = frames
            .iter()
            .map(|f| serde_json::from_str::<Value>(&f.data).unwrap()["sequence_number"].as_u64().unwrap())
            .collect();
        assert_eq!(seqs, (0..frames.len() as u64).collect::<Vec<_>>());
        let last: Value = serde_json::from_str(&frames.last().unwrap().data).unwrap();
        let output = &last["response"]["output"];
        assert_eq!(output[0]["content"][0]["text"], "Running.");
        assert_eq!((output[1]["type"].as_str(), output[1]["arguments"].as_str()), (Some("function_call"), Some("{}")));
        assert_eq!(last["response"]["usage"]["output_tokens"], 5);
        assert!(s.is_finished());
        assert_eq!(s.output().map(<[Value]>::len), Some(2));
        assert_eq!(last["response"]["model"], "m");
    }

    #[test]
    fn an_error_mid_stream_is_a_failed_response_not_a_dropped_connection() {
        let mut s = ResponsesStream::new("resp_2".into(), json!({"model": "m"}), 7, CallStyle::default());
        let mut frames = s.on_event(&Event::text("par"));
        frames.extend(s.on_event(&Event::Error { error: GenerateError::new(ErrorKind::Unavailable, "peer died") }));
        let last: Value = serde_json::from_str(&frames.last().unwrap().data).unwrap();
        assert_eq!(last["type"], "response.failed");
        assert_eq!(last["response"]["error"]["message"], "peer died");
        // A failed response leaves nothing to continue from.
        assert!(s.is_finished() && s.output().is_none());
    }
}
