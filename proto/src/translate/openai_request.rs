//! OpenAI request bodies → neutral requests: `/v1/chat/completions` (messages with their tool
//! calls and results, tools, tool choice, response format, `n`, logprobs) and `/v1/completions`.

use serde_json::{json, Value};

use super::{choices, invalid, sampling, Knobs};
use crate::generate::{ChatMessage, GenerateError, GenerateRequest, Prompt, Role, MAX_TOP_LOGPROBS};
use crate::openai::{
    ChatCompletionRequest, CompletionRequest, OaiContent, OaiCustomFormat, OaiMessage, OaiResponseFormat, OaiSampling,
    OaiTool, OaiToolCall, OaiToolChoice, PromptSpec, StopSpec,
};
use crate::tools::{check_tools, valid_tool_name, Grammar, ResponseFormat, Tool, ToolCall, ToolChoice, ToolInput};

/// Most alternatives the legacy completions `logprobs` may ask for (OpenAI's limit).
pub const MAX_COMPLETION_LOGPROBS: i64 = 5;

/// `POST /v1/chat/completions` → neutral request. `model` is the resolved concrete id.
pub fn chat_request(req: &ChatCompletionRequest, id: String, model: String) -> Result<GenerateRequest, GenerateError> {
    if req.messages.is_empty() {
        return Err(invalid("messages must not be empty"));
    }
    let n = choices(req.sampling.n)?;
    if req.functions.as_ref().is_some_and(|f| !f.is_null()) || req.function_call.as_ref().is_some_and(|f| !f.is_null())
    {
        return Err(invalid("functions and function_call are not supported; use tools and tool_choice"));
    }
    let messages = history(&req.messages)?;
    let mut params = sampling(oai_knobs(&req.sampling, req.max_completion_tokens.or(req.sampling.max_tokens)), 2.0)?;
    params.logprobs = chat_logprobs(req.logprobs, req.top_logprobs)?;
    let tools = match &req.tools {
        None => Vec::new(),
        Some(tools) => tools.iter().enumerate().map(|(i, t)| tool(i, t)).collect::<Result<_, _>>()?,
    };
    let tool_choice = req.tool_choice.as_ref().map(tool_choice).transpose()?.unwrap_or_default();
    check_tools(&tools, &tool_choice).map_err(invalid)?;
    let mut out = GenerateRequest::new(id, model, Prompt::Chat(messages), params);
    out.tools = tools;
    out.tool_choice = tool_choice;
    out.parallel_tool_calls = req.parallel_tool_calls.unwrap_or(true);
    out.format = req.response_format.as_ref().map(response_format).transpose()?.unwrap_or_default();
    out.n = n;
    Ok(out)
}

/// `logprobs: true` alone asks for the sampled tokens only; `top_logprobs` needs it, as OpenAI
/// has it.
fn chat_logprobs(logprobs: Option<bool>, top: Option<i64>) -> Result<Option<u32>, GenerateError> {
    if let Some(k) = top {
        if !(0..=i64::from(MAX_TOP_LOGPROBS)).contains(&k) {
            return Err(invalid(format!("top_logprobs must be between 0 and {MAX_TOP_LOGPROBS} (got {k})")));
        }
        if logprobs != Some(true) {
            return Err(invalid("top_logprobs requires logprobs to be true"));
        }
    }
    Ok((logprobs == Some(true)).then(|| top.unwrap_or(0) as u32))
}

/// The messages, with every tool result checked against the calls made before it.
fn history(messages: &[OaiMessage]) -> Result<Vec<ChatMessage>, GenerateError> {
    let mut out: Vec<ChatMessage> = Vec::with_capacity(messages.len());
    for (i, m) in messages.iter().enumerate() {
        let role = match m.role.as_str() {
            // "developer" is OpenAI's newer name for the system role.
            "system" | "developer" => Role::System,
            "user" => Role::User,
            "assistant" => Role::Assistant,
            "tool" | "function" => Role::Tool,
            other => return Err(invalid(format!("messages[{i}]: unsupported role '{other}'"))),
        };
        let mut msg = ChatMessage::text(role, content(i, m.content.as_ref())?);
        let calls = m.tool_calls.iter().flatten().enumerate();
        msg.tool_calls = calls.map(|(j, c)| tool_call(i, j, c)).collect::<Result<_, _>>()?;
        if !msg.tool_calls.is_empty() && role != Role::Assistant {
            return Err(invalid(format!("messages[{i}]: only assistant messages may carry tool_calls")));
        }
        if let (Role::Assistant, Some(f)) = (role, &m.function_call) {
            // Legacy single call; the id is ours, for the `function` message that answers it.
            let id = format!("call_{i}");
            msg.tool_calls.push(ToolCall { id, name: f.name.clone(), arguments: f.arguments.clone() });
        }
        let earlier = |pick: &dyn Fn(&ToolCall) -> bool| {
            out.iter().rev().flat_map(|p| p.tool_calls.iter().rev()).find(|c| pick(c)).cloned()
        };
        match m.role.as_str() {
            "tool" => {
                let Some(id) = m.tool_call_id.as_deref().filter(|id| !id.is_empty()) else {
                    return Err(invalid(format!("messages[{i}].tool_call_id is required for a tool message")));
                };
                let Some(call) = earlier(&|c| c.id == id) else {
                    return Err(invalid(format!(
                        "messages[{i}].tool_call_id '{id}' matches no tool call of an earlier assistant message"
                    )));
                };
                msg.tool_call_id = Some(call.id);
                msg.name = Some(m.name.clone().unwrap_or(call.name));
            }
            "function" => {
                let Some(name) = m.name.as_deref().filter(|n| !n.is_empty()) else {
                    return Err(invalid(format!("messages[{i}].name is required for a function message")));
                };
                msg.tool_call_id = earlier(&|c| c.name == name).map(|c| c.id);
                msg.name = Some(name.to_string());
            }
            _ => {}
        }
        out.push(msg);
    }
    Ok(out)
}

fn content(i: usize, content: Option<&OaiContent>) -> Result<String, GenerateError> {
    Ok(match content {
        None => String::new(),
        Some(OaiContent::Text(t)) => t.clone(),
        Some(OaiContent::Parts(parts)) => {
            let texts = parts.iter().map(|p| match (p.kind.as_str(), &p.text) {
                ("text", text) => Ok(text.clone().unwrap_or_default()),
                (kind, _) => Err(invalid(format!("messages[{i}]: only text content is supported (got '{kind}')"))),
            });
            texts.collect::<Result<Vec<_>, _>>()?.join("\n")
        }
    })
}

/// A call of the history, function or custom.
fn tool_call(i: usize, j: usize, c: &OaiToolCall) -> Result<ToolCall, GenerateError> {
    let at = format!("messages[{i}].tool_calls[{j}]");
    if c.id.is_empty() {
        return Err(invalid(format!("{at}.id is required")));
    }
    let (name, arguments) = match (c.kind.as_str(), &c.function, &c.custom) {
        ("function", Some(f), _) => (&f.name, &f.arguments),
        ("custom", _, Some(c)) => (&c.name, &c.input),
        ("function" | "custom", _, _) => {
            return Err(invalid(format!("{at}.{} is required for a call of type '{}'", c.kind, c.kind)))
        }
        (other, _, _) => {
            return Err(invalid(format!("{at}.type '{other}' is not supported (only 'function' and 'custom')")))
        }
    };
    Ok(ToolCall { id: c.id.clone(), name: name.clone(), arguments: arguments.clone() })
}

/// One entry of `tools`; errors name the field by path (`tools[2].function.name`).
fn tool(i: usize, t: &OaiTool) -> Result<Tool, GenerateError> {
    let kind = t.kind.as_deref().unwrap_or("function");
    let required = |field: &str| invalid(format!("tools[{i}].{field} is required"));
    let named = |field: &str, name: &Option<String>| match name.as_deref() {
        None | Some("") => Err(required(field)),
        Some(n) if !valid_tool_name(n) => Err(invalid(format!(
            "tools[{i}].{field} '{n}' is not a valid tool name (1 to 64 letters, digits, '_' or '-')"
        ))),
        Some(n) => Ok(n.to_string()),
    };
    match kind {
        "function" => {
            let f = t.function.as_ref().ok_or_else(|| required("function"))?;
            let name = named("function.name", &f.name)?;
            let schema = match &f.parameters {
                // No parameters: a function of none, as OpenAI reads it.
                None => json!({"type": "object", "properties": {}}),
                Some(p @ Value::Object(_)) => p.clone(),
                Some(_) => return Err(invalid(format!("tools[{i}].function.parameters must be a JSON Schema object"))),
            };
            let input = ToolInput::Json { schema, strict: f.strict.unwrap_or(false) };
            Ok(Tool { name, description: f.description.clone().unwrap_or_default(), input })
        }
        "custom" => {
            let c = t.custom.as_ref().ok_or_else(|| required("custom"))?;
            let name = named("custom.name", &c.name)?;
            let grammar = c.format.as_ref().map(|f| custom_format(i, f)).transpose()?.flatten();
            Ok(Tool {
                name,
                description: c.description.clone().unwrap_or_default(),
                input: ToolInput::Text { grammar },
            })
        }
        other => Err(invalid(format!("tools[{i}].type '{other}' is not supported (only 'function' and 'custom')"))),
    }
}

fn custom_format(i: usize, f: &OaiCustomFormat) -> Result<Option<Grammar>, GenerateError> {
    let at = format!("tools[{i}].custom.format");
    match f.kind.as_str() {
        "text" => Ok(None),
        "grammar" => {
            let g = f.grammar.as_ref().ok_or_else(|| invalid(format!("{at}.grammar is required")))?;
            match g.syntax.as_str() {
                "lark" => Ok(Some(Grammar::Lark(g.definition.clone()))),
                "regex" => Ok(Some(Grammar::Regex(g.definition.clone()))),
                other => {
                    Err(invalid(format!("{at}.grammar.syntax '{other}' is not supported (only 'lark' and 'regex')")))
                }
            }
        }
        other => Err(invalid(format!("{at}.type '{other}' is not supported (only 'text' and 'grammar')"))),
    }
}

fn tool_choice(c: &OaiToolChoice) -> Result<ToolChoice, GenerateError> {
    match c {
        OaiToolChoice::Mode(mode) => match mode.as_str() {
            "auto" => Ok(ToolChoice::Auto),
            "none" => Ok(ToolChoice::None),
            "required" => Ok(ToolChoice::Required),
            other => Err(invalid(format!(
                "tool_choice must be 'none', 'auto', 'required' or an object naming a tool (got '{other}')"
            ))),
        },
        OaiToolChoice::Named(named) => {
            let name = match (named.kind.as_str(), &named.function, &named.custom) {
                ("function", Some(f), _) => &f.name,
                ("custom", _, Some(c)) => &c.name,
                ("function" | "custom", _, _) => {
                    return Err(invalid(format!("tool_choice.{} is required for type '{}'", named.kind, named.kind)))
                }
                (other, _, _) => {
                    return Err(invalid(format!(
                        "tool_choice.type '{other}' is not supported (only 'function' and 'custom')"
                    )))
                }
            };
            Ok(ToolChoice::Named(name.clone()))
        }
    }
}

fn response_format(f: &OaiResponseFormat) -> Result<ResponseFormat, GenerateError> {
    match f.kind.as_str() {
        "text" => Ok(ResponseFormat::Text),
        "json_object" => Ok(ResponseFormat::JsonObject),
        "json_schema" => {
            let js = f.json_schema.as_ref().ok_or_else(|| invalid("response_format.json_schema is required"))?;
            let schema = match &js.schema {
                // No schema: any JSON value.
                None => json!({}),
                Some(s @ Value::Object(_)) => s.clone(),
                Some(_) => return Err(invalid("response_format.json_schema.schema must be a JSON Schema object")),
            };
            let name = js.name.clone().unwrap_or_default();
            Ok(ResponseFormat::JsonSchema { name, schema, strict: js.strict.unwrap_or(false) })
        }
        other => Err(invalid(format!(
            "response_format.type '{other}' is not supported (only 'text', 'json_object' and 'json_schema')"
        ))),
    }
}

/// `POST /v1/completions` → neutral request with a raw-text prompt.
pub fn completion_request(
    req: &CompletionRequest,
    id: String,
    model: String,
) -> Result<GenerateRequest, GenerateError> {
    let n = choices(req.sampling.n)?;
    let prompt = match &req.prompt {
        PromptSpec::One(p) => p.clone(),
        PromptSpec::Many(v) => match v.as_slice() {
            [p] => p.clone(),
            _ => return Err(invalid("prompt must be a string or an array of exactly one string")),
        },
    };
    let mut params = sampling(oai_knobs(&req.sampling, req.sampling.max_tokens), 2.0)?;
    params.logprobs = match req.logprobs {
        None => None,
        Some(k) if (0..=MAX_COMPLETION_LOGPROBS).contains(&k) => Some(k as u32),
        Some(k) => return Err(invalid(format!("logprobs must be between 0 and {MAX_COMPLETION_LOGPROBS} (got {k})"))),
    };
    let mut out = GenerateRequest::new(id, model, Prompt::Text(prompt), params);
    out.n = n;
    Ok(out)
}

/// The knobs of either OpenAI generation request.
fn oai_knobs(s: &OaiSampling, max_tokens: Option<i64>) -> Knobs {
    Knobs {
        max_tokens,
        temperature: s.temperature,
        top_p: s.top_p,
        top_k: s.top_k,
        seed: s.seed,
        stop: s.stop.as_ref().map_or_else(Vec::new, StopSpec::to_vec),
        frequency_penalty: s.frequency_penalty,
        presence_penalty: s.presence_penalty,
        repetition_penalty: s.repetition_penalty,
        ignore_eos: s.ignore_eos.unwrap_or(false),
    }
}

#[cfg(test)]
mod tests;
