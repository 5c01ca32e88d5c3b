use serde_json::{json, Value};

use super::*;
use crate::generate::{ErrorKind, SamplingParams};

fn chat(body: Value) -> Result<GenerateRequest, GenerateError> {
    let req: ChatCompletionRequest = serde_json::from_value(body).unwrap();
    chat_request(&req, "chatcmpl-1".into(), "smollm2-135m".into())
}

fn comp(body: Value) -> Result<GenerateRequest, GenerateError> {
    let req: CompletionRequest = serde_json::from_value(body).unwrap();
    completion_request(&req, "cmpl-1".into(), "smollm2-135m".into())
}

fn invalid_message(r: Result<GenerateRequest, GenerateError>) -> String {
    let err = r.unwrap_err();
    assert_eq!(err.kind, ErrorKind::InvalidRequest, "{err:?}");
    err.message
}

fn msg(role: Role, content: &str) -> ChatMessage {
    ChatMessage::text(role, content)
}

fn call(id: &str, name: &str, arguments: &str) -> ToolCall {
    ToolCall { id: id.into(), name: name.into(), arguments: arguments.into() }
}

fn tool_result(id: &str, name: &str, content: &str) -> ChatMessage {
    ChatMessage { tool_call_id: Some(id.into()), name: Some(name.into()), ..msg(Role::Tool, content) }
}

fn user() -> Value {
    json!([{"role": "user", "content": "What is the weather in Paris?"}])
}

/// A request with these `tools` (and whatever else `extra` sets).
fn with_tools(tools: Value, extra: Value) -> Result<GenerateRequest, GenerateError> {
    let mut body = json!({"model": "gpt-4o", "messages": user(), "tools": tools});
    for (k, v) in extra.as_object().unwrap() {
        body[k] = v.clone();
    }
    chat(body)
}

fn weather() -> Value {
    json!({"type": "function", "function": {
        "name": "get_weather", "description": "Current weather for a city.",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
        "strict": true}})
}

#[test]
fn chat_request_translates_tools_choice_and_format() {
    let r = with_tools(
        json!([
            weather(),
            {"type": "function", "function": {"name": "now"}},
            {"type": "custom", "custom": {"name": "apply_patch", "description": "Edit files.",
             "format": {"type": "grammar", "grammar": {"syntax": "lark", "definition": "start: /.+/"}}}},
            {"type": "custom", "custom": {"name": "shell"}},
            {"type": "custom", "custom": {"name": "digits", "format": {"type": "grammar",
             "grammar": {"syntax": "regex", "definition": "[0-9]+"}}}},
            {"type": "custom", "custom": {"name": "note", "format": {"type": "text"}}}
        ]),
        json!({"tool_choice": {"type": "function", "function": {"name": "get_weather"}},
               "parallel_tool_calls": false, "n": 3, "logprobs": true, "top_logprobs": 5,
               "response_format": {"type": "json_schema", "json_schema": {
                   "name": "answer", "strict": true,
                   "schema": {"type": "object", "properties": {"temp": {"type": "number"}}}}}}),
    )
    .unwrap();
    assert_eq!(
        r.tools,
        vec![
            Tool {
                name: "get_weather".into(),
                description: "Current weather for a city.".into(),
                input: ToolInput::Json {
                    schema: json!({"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}),
                    strict: true
                },
            },
            Tool {
                name: "now".into(),
                description: String::new(),
                input: ToolInput::Json { schema: json!({"type": "object", "properties": {}}), strict: false },
            },
            Tool {
                name: "apply_patch".into(),
                description: "Edit files.".into(),
                input: ToolInput::Text { grammar: Some(Grammar::Lark("start: /.+/".into())) },
            },
            Tool { name: "shell".into(), description: String::new(), input: ToolInput::Text { grammar: None } },
            Tool {
                name: "digits".into(),
                description: String::new(),
                input: ToolInput::Text { grammar: Some(Grammar::Regex("[0-9]+".into())) },
            },
            Tool { name: "note".into(), description: String::new(), input: ToolInput::Text { grammar: None } },
        ]
    );
    assert_eq!(r.tool_choice, ToolChoice::Named("get_weather".into()));
    assert!(!r.parallel_tool_calls);
    assert_eq!(r.n, 3);
    assert_eq!(r.params.logprobs, Some(5));
    assert_eq!(
        r.format,
        ResponseFormat::JsonSchema {
            name: "answer".into(),
            schema: json!({"type": "object", "properties": {"temp": {"type": "number"}}}),
            strict: true
        }
    );
    assert!(r.is_structured());
}

#[test]
fn chat_request_reads_every_tool_choice_and_format() {
    let choices = [
        (json!("none"), ToolChoice::None),
        (json!("auto"), ToolChoice::Auto),
        (json!("required"), ToolChoice::Required),
        (json!({"type": "custom", "custom": {"name": "shell"}}), ToolChoice::Named("shell".into())),
    ];
    let tools = json!([weather(), {"type": "custom", "custom": {"name": "shell"}}]);
    for (given, want) in choices {
        let r = with_tools(tools.clone(), json!({"tool_choice": given})).unwrap();
        assert_eq!(r.tool_choice, want);
        assert!(r.parallel_tool_calls, "on by default");
    }
    let formats = [
        (json!({"type": "text"}), ResponseFormat::Text),
        (json!({"type": "json_object"}), ResponseFormat::JsonObject),
        (
            json!({"type": "json_schema", "json_schema": {"name": "any"}}),
            ResponseFormat::JsonSchema { name: "any".into(), schema: json!({}), strict: false },
        ),
    ];
    for (given, want) in formats {
        assert_eq!(chat(json!({"model": "m", "messages": user(), "response_format": given})).unwrap().format, want);
    }
    // Type omitted: a function, as most clients mean it.
    let r = with_tools(json!([{"function": {"name": "f", "parameters": {"type": "object"}}}]), json!({})).unwrap();
    assert_eq!(r.tools[0].name, "f");
}

#[test]
fn chat_request_reads_logprobs() {
    let lp = |extra: Value| {
        let mut body = json!({"model": "m", "messages": user()});
        for (k, v) in extra.as_object().unwrap() {
            body[k] = v.clone();
        }
        chat(body)
    };
    assert_eq!(lp(json!({"logprobs": true})).unwrap().params.logprobs, Some(0));
    assert_eq!(lp(json!({"logprobs": false})).unwrap().params.logprobs, None);
    assert_eq!(lp(json!({"logprobs": true, "top_logprobs": 20})).unwrap().params.logprobs, Some(20));
    assert_eq!(lp(json!({"logprobs": true, "top_logprobs": null})).unwrap().params.logprobs, Some(0));
    for extra in [json!({"top_logprobs": 2}), json!({"logprobs": false, "top_logprobs": 2})] {
        assert_eq!(invalid_message(lp(extra)), "top_logprobs requires logprobs to be true");
    }
    for k in [21, -1] {
        let m = invalid_message(lp(json!({"logprobs": true, "top_logprobs": k})));
        assert_eq!(m, format!("top_logprobs must be between 0 and 20 (got {k})"));
    }
}

#[test]
fn chat_request_reads_a_tool_exchange() {
    let r = chat(json!({"model": "gpt-4o", "tools": [weather()], "messages": [
        {"role": "system", "content": "Use tools."},
        {"role": "user", "content": "Weather in Paris and Rome?"},
        {"role": "assistant", "content": null, "tool_calls": [
            {"id": "call_a", "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\":\"Paris\"}"}},
            {"id": "call_b", "type": "function", "function": {"name": "get_weather", "arguments": {"city": "Rome"}}}
        ]},
        {"role": "tool", "tool_call_id": "call_a", "content": "18C"},
        {"role": "tool", "tool_call_id": "call_b", "content": [{"type": "text", "text": "21C"}]},
        {"role": "assistant", "content": "Let me patch that.", "tool_calls": [
            {"id": "call_c", "type": "custom", "custom": {"name": "apply_patch", "input": "*** Begin Patch"}}]},
        {"role": "tool", "tool_call_id": "call_c", "name": "patcher", "content": "done"},
        {"role": "assistant", "content": null, "function_call": {"name": "get_weather", "arguments": "{}"}},
        {"role": "function", "name": "get_weather", "content": "15C"}
    ]}))
    .unwrap();
    assert_eq!(
        r.prompt,
        Prompt::Chat(vec![
            msg(Role::System, "Use tools."),
            msg(Role::User, "Weather in Paris and Rome?"),
            ChatMessage {
                tool_calls: vec![
                    call("call_a", "get_weather", r#"{"city":"Paris"}"#),
                    call("call_b", "get_weather", r#"{"city":"Rome"}"#),
                ],
                ..msg(Role::Assistant, "")
            },
            tool_result("call_a", "get_weather", "18C"),
            tool_result("call_b", "get_weather", "21C"),
            ChatMessage {
                tool_calls: vec![call("call_c", "apply_patch", "*** Begin Patch")],
                ..msg(Role::Assistant, "Let me patch that.")
            },
            tool_result("call_c", "patcher", "done"),
            ChatMessage { tool_calls: vec![call("call_7", "get_weather", "{}")], ..msg(Role::Assistant, "") },
            tool_result("call_7", "get_weather", "15C"),
        ])
    );
}

#[test]
fn chat_request_refuses_malformed_tools_by_path() {
    let cases = [
        (json!([weather(), weather()]), "tools[1].name `get_weather` is given twice"),
        (
            json!([weather(), {"type": "function", "function": {"name": "a"}}, {"type": "function", "function": {"description": "x"}}]),
            "tools[2].function.name is required",
        ),
        (json!([{"type": "function"}]), "tools[0].function is required"),
        (
            json!([{"type": "function", "function": {"name": "f", "parameters": "object"}}]),
            "tools[0].function.parameters must be a JSON Schema object",
        ),
        (
            json!([{"type": "function", "function": {"name": "f", "parameters": [1]}}]),
            "tools[0].function.parameters must be a JSON Schema object",
        ),
        (
            json!([{"type": "function", "function": {"name": "get weather"}}]),
            "tools[0].function.name 'get weather' is not a valid tool name (1 to 64 letters, digits, '_' or '-')",
        ),
        (
            json!([{"type": "web_search_preview"}]),
            "tools[0].type 'web_search_preview' is not supported (only 'function' and 'custom')",
        ),
        (json!([{"type": "custom", "custom": {}}]), "tools[0].custom.name is required"),
        (json!([{"type": "custom"}]), "tools[0].custom is required"),
        (
            json!([{"type": "custom", "custom": {"name": "c", "format": {"type": "grammar",
                "grammar": {"syntax": "ebnf", "definition": "x"}}}}]),
            "tools[0].custom.format.grammar.syntax 'ebnf' is not supported (only 'lark' and 'regex')",
        ),
        (
            json!([{"type": "custom", "custom": {"name": "c", "format": {"type": "grammar"}}}]),
            "tools[0].custom.format.grammar is required",
        ),
        (
            json!([{"type": "custom", "custom": {"name": "c", "format": {"type": "json"}}}]),
            "tools[0].custom.format.type 'json' is not supported (only 'text' and 'grammar')",
        ),
    ];
    for (tools, want) in cases {
        assert_eq!(invalid_message(with_tools(tools, json!({}))), want);
    }
}

#[test]
fn chat_request_refuses_impossible_choices_and_formats() {
    let cases = [
        (
            json!({"tool_choice": {"type": "function", "function": {"name": "search"}}}),
            "tool_choice names `search`, which is not among the request's tools",
        ),
        (
            json!({"tool_choice": "any"}),
            "tool_choice must be 'none', 'auto', 'required' or an object naming a tool (got 'any')",
        ),
        (json!({"tool_choice": {"type": "function"}}), "tool_choice.function is required for type 'function'"),
        (
            json!({"tool_choice": {"type": "allowed_tools", "allowed_tools": {"mode": "auto", "tools": []}}}),
            "tool_choice.type 'allowed_tools' is not supported (only 'function' and 'custom')",
        ),
        (
            json!({"response_format": {"type": "grammar"}}),
            "response_format.type 'grammar' is not supported (only 'text', 'json_object' and 'json_schema')",
        ),
        (json!({"response_format": {"type": "json_schema"}}), "response_format.json_schema is required"),
        (
            json!({"response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": true}}}),
            "response_format.json_schema.schema must be a JSON Schema object",
        ),
    ];
    for (extra, want) in cases {
        assert_eq!(invalid_message(with_tools(json!([weather()]), extra)), want);
    }
    for legacy in [json!({"functions": [{"name": "f"}]}), json!({"function_call": "auto"})] {
        let m = invalid_message(with_tools(json!([]), legacy));
        assert_eq!(m, "functions and function_call are not supported; use tools and tool_choice");
    }
    let m = invalid_message(chat(json!({"model": "m", "messages": user(), "tool_choice": "required"})));
    assert_eq!(m, "tool_choice requires a tool call but no tools are given");
}

#[test]
fn chat_request_refuses_results_of_calls_never_made() {
    let answered = |messages: Value| chat(json!({"model": "m", "messages": messages}));
    let asked = json!({"role": "assistant", "content": null, "tool_calls": [
        {"id": "call_a", "type": "function", "function": {"name": "f", "arguments": "{}"}}]});
    let m = invalid_message(answered(json!([
        {"role": "user", "content": "hi"}, asked,
        {"role": "tool", "tool_call_id": "call_zzz", "content": "x"}])));
    assert_eq!(m, "messages[2].tool_call_id 'call_zzz' matches no tool call of an earlier assistant message");
    // A result before its call does not count either.
    let m = invalid_message(answered(json!([
        {"role": "tool", "tool_call_id": "call_a", "content": "x"}, asked])));
    assert!(m.starts_with("messages[0].tool_call_id 'call_a' matches no tool call"), "{m}");
    let m = invalid_message(answered(json!([asked, {"role": "tool", "content": "x"}])));
    assert_eq!(m, "messages[1].tool_call_id is required for a tool message");
    let m = invalid_message(answered(json!([{"role": "function", "content": "x"}])));
    assert_eq!(m, "messages[0].name is required for a function message");
    let m = invalid_message(answered(json!([{"role": "user", "content": "x", "tool_calls": [
        {"id": "call_a", "type": "function", "function": {"name": "f", "arguments": "{}"}}]}])));
    assert_eq!(m, "messages[0]: only assistant messages may carry tool_calls");
    let m = invalid_message(answered(json!([{"role": "assistant", "tool_calls": [
        {"type": "function", "function": {"name": "f", "arguments": "{}"}}]}])));
    assert_eq!(m, "messages[0].tool_calls[0].id is required");
    let m = invalid_message(answered(json!([{"role": "assistant", "tool_calls": [
        {"id": "c", "type": "mcp_call"}]}])));
    assert_eq!(m, "messages[0].tool_calls[0].type 'mcp_call' is not supported (only 'function' and 'custom')");
}

#[test]
fn chat_request_maps_roles_parts_and_params() {
    let r = chat(json!({
        "model": "helexa/small",
        "messages": [
            {"role": "developer", "content": "Be brief."},
            {"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]},
            {"role": "assistant", "content": null},
            {"role": "assistant", "content": null, "tool_calls": [
                {"id": "call_1", "type": "function", "function": {"name": "calc", "arguments": "{}"}}]},
            {"role": "tool", "tool_call_id": "call_1", "content": "42"}
        ],
        "max_tokens": 10, "max_completion_tokens": 20, "temperature": 0.7, "top_p": 0.9,
        "top_k": 40, "seed": 3, "stop": ["", "END"], "frequency_penalty": 0.5,
        "repetition_penalty": 1.1, "ignore_eos": true, "tools": []
    }))
    .unwrap();
    assert_eq!(r.id, "chatcmpl-1");
    assert_eq!(r.model, "smollm2-135m");
    assert_eq!(
        r.prompt,
        Prompt::Chat(vec![
            msg(Role::System, "Be brief."),
            msg(Role::User, "a\nb"),
            msg(Role::Assistant, ""),
            ChatMessage { tool_calls: vec![call("call_1", "calc", "{}")], ..msg(Role::Assistant, "") },
            tool_result("call_1", "calc", "42"),
        ])
    );
    let p = r.params;
    assert_eq!(p.max_tokens, Some(20), "max_completion_tokens wins");
    assert_eq!((p.temperature, p.top_p, p.top_k, p.seed), (Some(0.7), Some(0.9), Some(40), Some(3)));
    assert_eq!(p.stop, vec!["END"], "empty stop strings are dropped");
    assert_eq!(p.frequency_penalty, Some(0.5));
    assert_eq!(p.presence_penalty, None);
    assert_eq!(p.repetition_penalty, Some(1.1));
    assert!(p.ignore_eos);
}

#[test]
fn chat_request_defaults_leave_engine_defaults() {
    let r = chat(json!({"model": "m", "messages": [{"role": "user", "content": "hi"}],
                        "stop": "\n", "top_k": -1}))
    .unwrap();
    assert_eq!(r.params, SamplingParams { stop: vec!["\n".into()], ..Default::default() });
    assert!(r.tools.is_empty());
    assert_eq!(
        (r.tool_choice, r.parallel_tool_calls, r.format, r.n),
        (ToolChoice::Auto, true, ResponseFormat::Text, 1)
    );
}

#[test]
fn chat_request_refuses_bad_input() {
    let user = json!([{"role": "user", "content": "hi"}]);
    assert_eq!(invalid_message(chat(json!({"model": "m", "messages": []}))), "messages must not be empty");
    let m = invalid_message(chat(json!({"model": "m", "messages": [
        {"role": "user", "content": "hi"}, {"role": "critic", "content": "x"}]})));
    assert!(m.contains("messages[1]") && m.contains("'critic'"), "{m}");
    let m = invalid_message(chat(json!({"model": "m", "messages": [{"role": "user", "content": [
        {"type": "text", "text": "what is this?"},
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,AA"}}]}]})));
    assert!(m.contains("only text content is supported") && m.contains("image_url"), "{m}");
    for bad in [0, -5] {
        assert_eq!(
            invalid_message(chat(json!({"model": "m", "messages": user, "max_tokens": bad}))),
            "max_tokens must be at least 1"
        );
    }
    let m = invalid_message(chat(json!({"model": "m", "messages": user,
                                        "max_completion_tokens": 0, "max_tokens": 5})));
    assert_eq!(m, "max_tokens must be at least 1");
    for n in [0, 17, -1] {
        let m = invalid_message(chat(json!({"model": "m", "messages": user, "n": n})));
        assert_eq!(m, format!("n must be between 1 and 16 (got {n})"));
    }
    let m = invalid_message(chat(json!({"model": "m", "messages": user, "temperature": 2.5})));
    assert!(m.starts_with("temperature must be between 0 and 2"), "{m}");
    for top_p in [0.0, 1.5] {
        let m = invalid_message(chat(json!({"model": "m", "messages": user, "top_p": top_p})));
        assert!(m.starts_with("top_p"), "{m}");
    }
    let m = invalid_message(chat(json!({"model": "m", "messages": user, "presence_penalty": -3})));
    assert!(m.starts_with("presence_penalty"), "{m}");
    let m = invalid_message(chat(json!({"model": "m", "messages": user, "repetition_penalty": 0})));
    assert!(m.starts_with("repetition_penalty"), "{m}");
    let stops: Vec<String> = (0..17).map(|i| format!("s{i}")).collect();
    let m = invalid_message(chat(json!({"model": "m", "messages": user, "stop": stops})));
    assert!(m.contains("at most 16"), "{m}");
}

#[test]
fn chat_request_accepts_the_range_edges() {
    let r = chat(json!({"model": "m", "messages": [{"role": "user", "content": "hi"}],
                        "temperature": 2.0, "top_p": 1.0, "max_tokens": 1, "n": 1}))
    .unwrap();
    assert_eq!(r.params.temperature, Some(2.0));
    assert_eq!(r.params.max_tokens, Some(1));
}

#[test]
fn completion_request_takes_one_prompt() {
    let req: CompletionRequest = serde_json::from_value(json!({
        "model": "m", "prompt": ["Once upon"], "max_tokens": 7, "echo": true, "best_of": 1
    }))
    .unwrap();
    let r = completion_request(&req, "cmpl-1".into(), "smollm2".into()).unwrap();
    assert_eq!(r.prompt, Prompt::Text("Once upon".into()));
    assert_eq!(r.params.max_tokens, Some(7));
    let req: CompletionRequest = serde_json::from_value(json!({"model": "m", "prompt": ["a", "b"]})).unwrap();
    let err = completion_request(&req, "c".into(), "m".into()).unwrap_err();
    assert_eq!(err.kind, ErrorKind::InvalidRequest);
    assert!(err.message.contains("exactly one"), "{}", err.message);
}

#[test]
fn completion_request_takes_n_and_legacy_logprobs() {
    let r = comp(json!({"model": "m", "prompt": "x", "n": 3, "logprobs": 5})).unwrap();
    assert_eq!((r.n, r.params.logprobs), (3, Some(5)));
    let r = comp(json!({"model": "m", "prompt": "x", "logprobs": 0})).unwrap();
    assert_eq!((r.n, r.params.logprobs), (1, Some(0)), "0: the sampled token only");
    assert_eq!(comp(json!({"model": "m", "prompt": "x", "logprobs": null})).unwrap().params.logprobs, None);
    for bad in [6, -1] {
        let m = invalid_message(comp(json!({"model": "m", "prompt": "x", "logprobs": bad})));
        assert_eq!(m, format!("logprobs must be between 0 and 5 (got {bad})"));
    }
    let m = invalid_message(comp(json!({"model": "m", "prompt": "x", "n": 17})));
    assert_eq!(m, "n must be between 1 and 16 (got 17)");
}
