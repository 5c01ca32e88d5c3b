//! Anthropic request bodies → neutral requests: `/v1/messages` (history with `tool_use` and
//! `tool_result` blocks, client tools, tool choice) and `/v1/messages/count_tokens`.
//!
//! A user turn's blocks keep their order: consecutive text blocks become one user message and
//! each `tool_result` its own `Role::Tool` message. A result flagged `is_error` reads
//! `"Error: <content>"`, so the model sees the failure in any chat template. Ids are kept as
//! the client gave them (`toolu_…`).
//!
//! What Anthropic clients send beyond the documented API is taken as they mean it: a `system`
//! message inside `messages` (Claude Code's mid-conversation instructions) joins the system
//! prompt in order; `thinking` and `redacted_thinking` blocks of earlier turns are dropped (the
//! models cortex runs do not read them back); a last message from the assistant is a prefill,
//! which generation continues.

use serde_json::Value;

use super::{invalid, sampling, Knobs};
use crate::anthropic::{
    AnthBlock, AnthContent, AnthMessage, AnthTool, AnthToolChoice, CountTokensRequest, MessagesRequest,
};
use crate::generate::{ChatMessage, GenerateError, GenerateRequest, Prompt, Role, SamplingParams};
use crate::tools::{check_tools, valid_tool_name, ResponseFormat, Tool, ToolCall, ToolChoice, ToolInput};

/// Prefix of a `tool_result` flagged `is_error`.
pub const TOOL_ERROR_PREFIX: &str = "Error: ";

/// `POST /v1/messages` → neutral request; `system` becomes a leading system message.
pub fn messages_request(req: &MessagesRequest, id: String, model: String) -> Result<GenerateRequest, GenerateError> {
    let messages = history(req.system.as_ref(), &req.messages)?;
    let params = sampling(
        Knobs {
            max_tokens: Some(req.max_tokens),
            temperature: req.temperature,
            top_p: req.top_p,
            top_k: req.top_k,
            seed: req.seed,
            stop: req.stop_sequences.clone().unwrap_or_default(),
            frequency_penalty: None,
            presence_penalty: None,
            repetition_penalty: None,
            ignore_eos: false,
        },
        // Anthropic's temperature range is 0..=1.
        1.0,
    )?;
    let mut out = chat(id, model, messages, params);
    with_tools(&mut out, req.tools.as_deref(), req.tool_choice.as_ref())?;
    out.format = output_format(req)?;
    out.cache_control = req.marks_cache();
    out.session = req.session().map(str::to_string);
    Ok(out)
}

/// The neutral request for a history; a last assistant message with text is continued.
fn chat(id: String, model: String, messages: Vec<ChatMessage>, params: SamplingParams) -> GenerateRequest {
    let prefill = matches!(messages.last(),
        Some(m) if m.role == Role::Assistant && m.tool_calls.is_empty() && !m.content.is_empty());
    let mut out = GenerateRequest::new(id, model, Prompt::Chat(messages), params);
    out.continue_final = prefill;
    out
}

/// `output_config.format` (or the older `output_format`): a JSON schema the answer follows.
fn output_format(req: &MessagesRequest) -> Result<ResponseFormat, GenerateError> {
    let (at, f) = match (req.output_config.as_ref().and_then(|c| c.format.as_ref()), &req.output_format) {
        (Some(f), _) => ("output_config.format", f),
        (None, Some(f)) => ("output_format", f),
        (None, None) => return Ok(ResponseFormat::Text),
    };
    match (f.kind.as_str(), &f.schema) {
        ("json_schema", Some(schema @ Value::Object(_))) => {
            Ok(ResponseFormat::JsonSchema { name: String::new(), schema: schema.clone(), strict: true })
        }
        ("json_schema", None) => Err(invalid(format!("{at}.schema is required"))),
        ("json_schema", Some(_)) => Err(invalid(format!("{at}.schema must be a JSON Schema object"))),
        (other, _) => Err(invalid(format!("{at}.type '{other}' is not supported (only 'json_schema')"))),
    }
}

/// `POST /v1/messages/count_tokens` → the request whose prompt (tools included) is counted,
/// validated as a generation would be; its sampling parameters are the defaults.
pub fn count_tokens_request(
    req: &CountTokensRequest,
    id: String,
    model: String,
) -> Result<GenerateRequest, GenerateError> {
    let messages = history(req.system.as_ref(), &req.messages)?;
    let mut out = chat(id, model, messages, SamplingParams::default());
    with_tools(&mut out, req.tools.as_deref(), req.tool_choice.as_ref())?;
    Ok(out)
}

fn with_tools(
    out: &mut GenerateRequest,
    tools: Option<&[AnthTool]>,
    choice: Option<&AnthToolChoice>,
) -> Result<(), GenerateError> {
    let tools = tools.unwrap_or_default().iter().enumerate().map(|(i, t)| tool(i, t));
    out.tools = tools.collect::<Result<_, _>>()?;
    if let Some(c) = choice {
        out.tool_choice = match c.kind.as_str() {
            "auto" => ToolChoice::Auto,
            "any" => ToolChoice::Required,
            "none" => ToolChoice::None,
            "tool" => match c.name.as_deref() {
                Some(name) if !name.is_empty() => ToolChoice::Named(name.to_string()),
                _ => return Err(invalid("tool_choice.name is required when tool_choice.type is 'tool'")),
            },
            other => {
                return Err(invalid(format!(
                    "tool_choice.type '{other}' is not supported (only 'auto', 'any', 'tool' and 'none')"
                )))
            }
        };
        out.parallel_tool_calls = !c.disable_parallel_tool_use.unwrap_or(false);
    }
    check_tools(&out.tools, &out.tool_choice).map_err(invalid)
}

/// A client tool; a server tool (any other `type`) is refused by its type.
fn tool(i: usize, t: &AnthTool) -> Result<Tool, GenerateError> {
    match t.kind.as_deref() {
        None | Some("custom") => {}
        Some(other) => {
            return Err(invalid(format!(
                "tools[{i}]: server tool type '{other}' is not supported; cortex runs client tools only (no type, or 'custom', with an input_schema)"
            )))
        }
    }
    let name = match t.name.as_deref() {
        None | Some("") => return Err(invalid(format!("tools[{i}].name is required"))),
        Some(n) if !valid_tool_name(n) => {
            return Err(invalid(format!(
                "tools[{i}].name '{n}' is not a valid tool name (1 to 64 letters, digits, '_' or '-')"
            )))
        }
        Some(n) => n.to_string(),
    };
    let schema = match &t.input_schema {
        None => return Err(invalid(format!("tools[{i}].input_schema is required"))),
        Some(s @ Value::Object(_)) => s.clone(),
        Some(_) => return Err(invalid(format!("tools[{i}].input_schema must be a JSON Schema object"))),
    };
    let input = ToolInput::Json { schema, strict: t.strict.unwrap_or(false) };
    Ok(Tool { name, description: t.description.clone().unwrap_or_default(), input })
}

fn history(system: Option<&AnthContent>, messages: &[AnthMessage]) -> Result<Vec<ChatMessage>, GenerateError> {
    if messages.is_empty() {
        return Err(invalid("messages must not be empty"));
    }
    let mut out = Vec::with_capacity(messages.len() + 1);
    if let Some(system) = system {
        let content = text_of(system)
            .map_err(|kind| invalid(format!("system: only text content is supported (got '{kind}')")))?;
        out.push(ChatMessage::text(Role::System, content));
    }
    for (i, m) in messages.iter().enumerate() {
        match m.role.as_str() {
            "user" => user_turn(i, &m.content, &mut out)?,
            "assistant" => {
                let turn = assistant_turn(i, &m.content)?;
                out.push(turn);
            }
            "system" => {
                let content = text_of(&m.content).map_err(|kind| {
                    invalid(format!("messages[{i}]: only text content is supported in a system message (got '{kind}')"))
                })?;
                match out.first_mut() {
                    Some(first) if first.role == Role::System => {
                        first.content.push_str("\n\n");
                        first.content.push_str(&content);
                    }
                    _ => out.insert(0, ChatMessage::text(Role::System, content)),
                }
            }
            other => {
                return Err(invalid(format!(
                    "messages[{i}]: unexpected role \"{other}\"; roles must be \"user\", \"assistant\" or \"system\""
                )))
            }
        }
    }
    Ok(out)
}

fn unsupported(i: usize, j: usize, kind: &str) -> GenerateError {
    invalid(format!(
        "messages[{i}].content[{j}]: content blocks of type '{kind}' are not supported (only text, tool_use and tool_result)"
    ))
}

/// A user turn: runs of text blocks as user messages, each `tool_result` as a tool message.
fn user_turn(i: usize, content: &AnthContent, out: &mut Vec<ChatMessage>) -> Result<(), GenerateError> {
    let blocks = match content {
        AnthContent::Text(t) => {
            out.push(ChatMessage::text(Role::User, t.clone()));
            return Ok(());
        }
        AnthContent::Blocks(blocks) => blocks,
    };
    let mut pending: Option<String> = None;
    let mut pushed = false;
    for (j, b) in blocks.iter().enumerate() {
        match b.kind.as_str() {
            "text" => {
                let text = b.text.as_deref().unwrap_or_default();
                match &mut pending {
                    Some(p) => {
                        p.push('\n');
                        p.push_str(text);
                    }
                    None => pending = Some(text.to_string()),
                }
            }
            "tool_result" => {
                if let Some(text) = pending.take() {
                    out.push(ChatMessage::text(Role::User, text));
                }
                let result = tool_result(i, j, b, out)?;
                out.push(result);
                pushed = true;
            }
            "tool_use" => {
                return Err(invalid(format!(
                    "messages[{i}].content[{j}]: tool_use blocks belong in assistant messages"
                )))
            }
            other => return Err(unsupported(i, j, other)),
        }
    }
    if pending.is_some() || !pushed {
        out.push(ChatMessage::text(Role::User, pending.unwrap_or_default()));
    }
    Ok(())
}

fn tool_result(i: usize, j: usize, b: &AnthBlock, earlier: &[ChatMessage]) -> Result<ChatMessage, GenerateError> {
    let at = format!("messages[{i}].content[{j}]");
    let Some(id) = b.tool_use_id.as_deref().filter(|id| !id.is_empty()) else {
        return Err(invalid(format!("{at}.tool_use_id is required")));
    };
    let call = earlier.iter().rev().flat_map(|m| m.tool_calls.iter()).find(|c| c.id == id);
    let Some(call) = call else {
        return Err(invalid(format!("{at}.tool_use_id '{id}' matches no tool_use of an earlier assistant message")));
    };
    let text = match &b.content {
        None => String::new(),
        Some(c) => text_of(c)
            .map_err(|kind| invalid(format!("{at}: only text content is supported in a tool_result (got '{kind}')")))?,
    };
    let mut msg = ChatMessage::text(
        Role::Tool,
        if b.is_error == Some(true) { format!("{TOOL_ERROR_PREFIX}{text}") } else { text },
    );
    msg.tool_call_id = Some(call.id.clone());
    msg.name = Some(call.name.clone());
    Ok(msg)
}

/// An assistant turn: its text blocks joined, its `tool_use` blocks as calls.
fn assistant_turn(i: usize, content: &AnthContent) -> Result<ChatMessage, GenerateError> {
    let blocks = match content {
        AnthContent::Text(t) => return Ok(ChatMessage::text(Role::Assistant, t.clone())),
        AnthContent::Blocks(blocks) => blocks,
    };
    let mut texts = Vec::new();
    let mut calls = Vec::new();
    for (j, b) in blocks.iter().enumerate() {
        let at = || format!("messages[{i}].content[{j}]");
        match b.kind.as_str() {
            "text" => texts.push(b.text.clone().unwrap_or_default()),
            "tool_use" => {
                let id =
                    b.id.clone()
                        .filter(|s| !s.is_empty())
                        .ok_or_else(|| invalid(format!("{}.id is required", at())))?;
                let name = b
                    .name
                    .clone()
                    .filter(|s| !s.is_empty())
                    .ok_or_else(|| invalid(format!("{}.name is required", at())))?;
                let arguments = match &b.input {
                    None => "{}".to_string(),
                    Some(v @ Value::Object(_)) => v.to_string(),
                    Some(_) => return Err(invalid(format!("{}.input must be an object", at()))),
                };
                calls.push(ToolCall { id, name, arguments });
            }
            "tool_result" => return Err(invalid(format!("{}: tool_result blocks belong in user messages", at()))),
            "thinking" | "redacted_thinking" => {}
            other => return Err(unsupported(i, j, other)),
        }
    }
    let mut msg = ChatMessage::text(Role::Assistant, texts.join("\n"));
    msg.tool_calls = calls;
    Ok(msg)
}

/// Flattens text-only content; `Err` names the first block type that is not text.
fn text_of(content: &AnthContent) -> Result<String, String> {
    match content {
        AnthContent::Text(t) => Ok(t.clone()),
        AnthContent::Blocks(blocks) => {
            let texts = blocks.iter().filter(|b| !is_billing_header(b)).map(|b| match b.kind.as_str() {
                "text" => Ok(b.text.clone().unwrap_or_default()),
                other => Err(other.to_string()),
            });
            Ok(texts.collect::<Result<Vec<_>, _>>()?.join("\n"))
        }
    }
}

/// A text block that is only Claude Code's `x-anthropic-billing-header: …` line: request
/// metadata that changes with every request, which in the prompt would defeat the prefix cache
/// and cache-aware routing (and means nothing to a model).
fn is_billing_header(b: &AnthBlock) -> bool {
    b.kind == "text"
        && b.text.as_deref().is_some_and(|t| {
            let t = t.trim();
            t.starts_with("x-anthropic-billing-header:") && !t.contains('\n')
        })
}

#[cfg(test)]
mod tests;
