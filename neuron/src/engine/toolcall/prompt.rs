//! What a model sees of tools. A template that renders tools gets them (and the history's calls
//! and results) in the shapes Hugging Face templates expect; a model without one gets the
//! generic format: the tools and the answer's JSON envelope described in the system prompt, its
//! own earlier calls written as envelopes, and tool results as user turns.

use cortex_proto::generate::{ChatMessage, Role};
use cortex_proto::tools::{Tool, ToolCall, ToolChoice, ToolInput};
use serde_json::{json, Value};

/// A tool as chat templates take it: OpenAI's `{"type": "function", "function": {…}}`.
pub fn template_tool(t: &Tool) -> Value {
    let parameters = match &t.input {
        ToolInput::Json { schema, .. } => schema.clone(),
        // A free-form tool takes one string.
        ToolInput::Text { .. } => {
            json!({"type": "object", "properties": {"input": {"type": "string"}}, "required": ["input"]})
        }
    };
    json!({"type": "function", "function": {"name": t.name, "description": t.description, "parameters": parameters}})
}

/// A call as templates take it: arguments as an object, so that `| tojson` writes them once.
pub fn template_call(c: &ToolCall) -> Value {
    let arguments: Value = serde_json::from_str(&c.arguments).unwrap_or_else(|_| Value::String(c.arguments.clone()));
    json!({"id": c.id, "type": "function", "function": {"name": c.name, "arguments": arguments}})
}

/// The generic format's envelope for calls already made, written as the grammar makes the model
/// write it (name before arguments).
pub fn envelope(calls: &[ToolCall]) -> String {
    let calls: Vec<String> = calls
        .iter()
        .map(|c| {
            let args: Value = serde_json::from_str(&c.arguments).unwrap_or_else(|_| json!({}));
            format!(r#"{{"name": {}, "arguments": {args}}}"#, Value::String(c.name.clone()))
        })
        .collect();
    format!(r#"{{"tool_calls": [{}]}}"#, calls.join(", "))
}

/// The system prompt's description of the tools and of how to answer.
fn instructions(tools: &[Tool], choice: &ToolChoice, parallel: bool) -> String {
    let listed: Vec<Value> = tools
        .iter()
        .map(|t| {
            let f = &template_tool(t)["function"];
            json!({"name": f["name"], "description": f["description"], "parameters": f["parameters"]})
        })
        .collect();
    let calls = if parallel {
        r#"{"tool_calls": [{"name": "<tool name>", "arguments": {<its arguments>}}, ...]}"#
    } else {
        r#"{"tool_calls": [{"name": "<tool name>", "arguments": {<its arguments>}}]}"#
    };
    let how = match choice {
        ToolChoice::Required => format!("Call one of the tools: answer with the JSON object {calls}"),
        ToolChoice::Named(name) => format!("Call the tool `{name}`: answer with the JSON object {calls}"),
        // The direct answer first, keyed `text`: under Claude Code's prompt (12 tools), Gemma 3
        // 270M's log-probabilities after `{"` were tool −4.7, response −10.6 with the calls
        // described first; tool −5.6, text −4.4 this way (it then answers instead of calling
        // Write for "What is the capital of France?"). The cost: with two tools, SmolLM2 now
        // answers "What is the weather in Paris right now?" instead of calling get_weather
        // (tool −4.6, text −1.9; it was tool −2.2, response −2.3). Calls first with either key
        // left Gemma calling Write.
        _ => format!(
            r#"To answer directly, answer with the JSON object {{"text": "<your answer>"}}. To call tools, answer with the JSON object {calls}."#
        ),
    };
    format!(
        "You can use these tools:\n{}\n\n{how} Tool results come back in the next user turn as {{\"tool_response\": …}}.",
        serde_json::to_string_pretty(&listed).unwrap_or_default()
    )
}

/// The conversation rewritten for the generic format.
pub fn generic_conversation(
    messages: &[ChatMessage],
    tools: &[Tool],
    choice: &ToolChoice,
    parallel: bool,
) -> Vec<ChatMessage> {
    let mut out: Vec<ChatMessage> = Vec::with_capacity(messages.len() + 1);
    let system = messages.iter().take_while(|m| m.role == Role::System).count();
    let mut prompt: Vec<&str> = messages[..system].iter().map(|m| m.content.as_str()).collect();
    let told = instructions(tools, choice, parallel);
    if !tools.is_empty() && *choice != ToolChoice::None {
        prompt.push(&told);
    }
    if !prompt.is_empty() {
        out.push(ChatMessage::text(Role::System, prompt.join("\n\n")));
    }
    for m in &messages[system..] {
        let message = match m.role {
            Role::Assistant if !m.tool_calls.is_empty() => ChatMessage::text(Role::Assistant, envelope(&m.tool_calls)),
            Role::Tool => {
                let name = m.name.clone().unwrap_or_default();
                let result = json!({"tool_response": {"name": name, "content": m.content}}).to_string();
                // Consecutive results share one user turn, as parallel calls' results do.
                match out.last_mut() {
                    Some(last) if last.role == Role::User && last.content.starts_with("{\"tool_response\"") => {
                        last.content.push('\n');
                        last.content.push_str(&result);
                        continue;
                    }
                    _ => ChatMessage::text(Role::User, result),
                }
            }
            _ => ChatMessage::text(m.role, m.content.clone()),
        };
        out.push(message);
    }
    out
}

/// The name of the tool each result answers, from the calls before it (templates and the
/// generic format name the tool; clients send only the call's id).
pub fn name_results(messages: &mut [ChatMessage]) {
    let mut names: Vec<(String, String)> = Vec::new();
    for m in messages.iter_mut() {
        names.extend(m.tool_calls.iter().map(|c| (c.id.clone(), c.name.clone())));
        if m.role == Role::Tool && m.name.is_none() {
            let id = m.tool_call_id.as_deref().unwrap_or_default();
            m.name = names.iter().find(|(i, _)| i == id).map(|(_, n)| n.clone());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn weather() -> Tool {
        Tool {
            name: "get_weather".into(),
            description: "Weather in a city".into(),
            input: ToolInput::Json {
                schema: json!({"type": "object", "properties": {"city": {"type": "string"}}}),
                strict: false,
            },
        }
    }

    #[test]
    fn the_generic_format_describes_tools_and_replays_calls_as_envelopes() {
        let call =
            ToolCall { id: "call_1".into(), name: "get_weather".into(), arguments: r#"{"city":"Paris"}"#.into() };
        let mut history = vec![
            ChatMessage::text(Role::System, "Be brief."),
            ChatMessage::text(Role::User, "Weather in Paris?"),
            ChatMessage { tool_calls: vec![call], ..ChatMessage::text(Role::Assistant, "") },
            ChatMessage { tool_call_id: Some("call_1".into()), ..ChatMessage::text(Role::Tool, "18 C") },
        ];
        name_results(&mut history);
        assert_eq!(history[3].name.as_deref(), Some("get_weather"));
        let out = generic_conversation(&history, &[weather()], &ToolChoice::Auto, true);
        assert_eq!(out.len(), 4);
        assert!(out[0].content.starts_with("Be brief.\n\nYou can use these tools:"), "{}", out[0].content);
        assert!(out[0].content.contains("\"get_weather\"") && out[0].content.contains("{\"text\""));
        assert_eq!(out[2].content, r#"{"tool_calls": [{"name": "get_weather", "arguments": {"city":"Paris"}}]}"#);
        assert_eq!(
            (out[3].role, out[3].content.as_str()),
            (Role::User, r#"{"tool_response":{"name":"get_weather","content":"18 C"}}"#)
        );
        // With the choice `none`, the tools are not offered.
        let none = generic_conversation(&history, &[weather()], &ToolChoice::None, true);
        assert_eq!(none[0].content, "Be brief.");
    }

    #[test]
    fn templates_get_openai_shaped_tools_and_calls_with_object_arguments() {
        let t = template_tool(&weather());
        assert_eq!(t["type"], "function");
        assert_eq!(t["function"]["parameters"]["properties"]["city"]["type"], "string");
        let c = template_call(&ToolCall { id: "c".into(), name: "f".into(), arguments: r#"{"a": 1}"#.into() });
        assert_eq!(c["function"]["arguments"], json!({"a": 1}));
    }
}
