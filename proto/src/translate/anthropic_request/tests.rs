use serde_json::{json, Value};

use super::*;
use crate::generate::ErrorKind;

fn anth(body: Value) -> Result<GenerateRequest, GenerateError> {
    let req: MessagesRequest = serde_json::from_value(body).unwrap();
    messages_request(&req, "msg_1".into(), "smollm2-135m".into())
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

/// A request with these `messages` (and whatever else `extra` sets).
fn with(messages: Value, extra: Value) -> Result<GenerateRequest, GenerateError> {
    let mut body = json!({"model": "claude-sonnet-4-20250514", "max_tokens": 1024, "messages": messages});
    for (k, v) in extra.as_object().unwrap() {
        body[k] = v.clone();
    }
    anth(body)
}

fn user() -> Value {
    json!([{"role": "user", "content": "What is the weather in Paris?"}])
}

fn weather() -> Value {
    json!({"name": "get_weather", "description": "Current weather for a city.",
           "input_schema": {"type": "object", "properties": {"location": {"type": "string"}}, "required": ["location"]}})
}

#[test]
fn messages_request_puts_system_first_and_flattens_text() {
    let r = anth(json!({
        "model": "claude-3-5-haiku-latest", "max_tokens": 64,
        "system": [{"type": "text", "text": "One."}, {"type": "text", "text": "Two.", "cache_control": {"type": "ephemeral"}}],
        "messages": [
            {"role": "user", "content": "Hello"},
            {"role": "assistant", "content": [{"type": "text", "text": "Hi"}, {"type": "text", "text": "there"}]},
            {"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]},
            {"role": "user", "content": []}
        ],
        "stop_sequences": ["STOP"], "temperature": 1.0, "top_k": 10
    }))
    .unwrap();
    assert_eq!(
        r.prompt,
        Prompt::Chat(vec![
            msg(Role::System, "One.\nTwo."),
            msg(Role::User, "Hello"),
            msg(Role::Assistant, "Hi\nthere"),
            msg(Role::User, "a\nb"),
            msg(Role::User, ""),
        ])
    );
    assert_eq!(r.params.max_tokens, Some(64));
    assert_eq!(r.params.stop, vec!["STOP"]);
    assert_eq!(r.params.temperature, Some(1.0));
    assert_eq!(r.params.top_k, Some(10));
    assert_eq!((r.n, r.params.logprobs, r.tools.len()), (1, None, 0));
}

#[test]
fn messages_request_refuses_bad_input() {
    let user = user();
    assert_eq!(
        invalid_message(anth(json!({"model": "m", "max_tokens": 5, "messages": []}))),
        "messages must not be empty"
    );
    let m = invalid_message(with(json!([{"role": "tool", "content": "x"}]), json!({})));
    assert_eq!(m, "messages[0]: unexpected role \"tool\"; roles must be \"user\", \"assistant\" or \"system\"");
    assert_eq!(
        invalid_message(anth(json!({"model": "m", "max_tokens": 0, "messages": user}))),
        "max_tokens must be at least 1"
    );
    let m = invalid_message(with(user.clone(), json!({"temperature": 1.5})));
    assert!(m.starts_with("temperature must be between 0 and 1"), "{m}");
    let m = invalid_message(with(json!([{"role": "user", "content": [{"type": "image", "source": {}}]}]), json!({})));
    assert_eq!(
        m,
        "messages[0].content[0]: content blocks of type 'image' are not supported (only text, tool_use and tool_result)"
    );
    let m = invalid_message(with(user.clone(), json!({"output_config": {"format": {"type": "json_object"}}})));
    assert_eq!(m, "output_config.format.type 'json_object' is not supported (only 'json_schema')");
    let m = invalid_message(with(user.clone(), json!({"output_format": {"type": "json_schema"}})));
    assert_eq!(m, "output_format.schema is required");
    let m = invalid_message(with(user, json!({"system": [{"type": "image"}]})));
    assert_eq!(m, "system: only text content is supported (got 'image')");
}

#[test]
fn what_claude_code_sends_beyond_the_documented_api_is_taken_as_meant() {
    let r = with(
        json!([{"role": "user", "content": "hi"},
               {"role": "system", "content": [{"type": "text", "text": "Be brief."}]},
               {"role": "assistant", "content": [{"type": "thinking", "thinking": "hmm", "signature": "s"},
                                                  {"type": "redacted_thinking", "data": "x"},
                                                  {"type": "text", "text": "Hi"}]},
               {"role": "user", "content": "Name a colour."},
               {"role": "system", "content": "Answer in English."}]),
        json!({"system": "You are Claude Code.",
               "output_config": {"format": {"type": "json_schema", "schema": {"type": "object"}}, "effort": "low"}}),
    )
    .unwrap();
    assert_eq!(
        r.prompt,
        Prompt::Chat(vec![
            msg(Role::System, "You are Claude Code.\n\nBe brief.\n\nAnswer in English."),
            msg(Role::User, "hi"),
            msg(Role::Assistant, "Hi"),
            msg(Role::User, "Name a colour."),
        ])
    );
    assert!(!r.continue_final);
    let schema = |r: &GenerateRequest| match &r.format {
        ResponseFormat::JsonSchema { schema, strict: true, .. } => schema.clone(),
        other => panic!("{other:?}"),
    };
    assert_eq!(schema(&r), json!({"type": "object"}));
    // A system message with no system prompt before it becomes the system prompt.
    let r = with(json!([{"role": "system", "content": "S"}, {"role": "user", "content": "u"}]), json!({})).unwrap();
    assert_eq!(r.prompt, Prompt::Chat(vec![msg(Role::System, "S"), msg(Role::User, "u")]));
    // The older name of the same thing.
    let r = with(user(), json!({"output_format": {"type": "json_schema", "schema": {"type": "array"}}})).unwrap();
    assert_eq!(schema(&r), json!({"type": "array"}));
}

#[test]
fn a_last_assistant_message_is_a_prefill_to_continue() {
    let prefill = json!([{"role": "user", "content": "List three colours as JSON."},
                         {"role": "assistant", "content": "[\"red\","}]);
    let r = with(prefill.clone(), json!({})).unwrap();
    assert!(r.continue_final);
    let count: CountTokensRequest = serde_json::from_value(json!({"model": "m", "messages": prefill})).unwrap();
    assert!(count_tokens_request(&count, "c".into(), "m".into()).unwrap().continue_final);
    // An empty one, or a history ending with the user, opens a new turn.
    let r = with(json!([{"role": "user", "content": "hi"}, {"role": "assistant", "content": ""}]), json!({})).unwrap();
    assert!(!r.continue_final);
    assert!(!with(user(), json!({})).unwrap().continue_final);
}

#[test]
fn messages_request_reads_tools_and_tool_choice() {
    let r = with(
        user(),
        json!({"tools": [weather(),
                         {"type": "custom", "name": "now", "input_schema": {"type": "object"},
                          "cache_control": {"type": "ephemeral"}, "strict": true}],
               "tool_choice": {"type": "tool", "name": "get_weather", "disable_parallel_tool_use": true}}),
    )
    .unwrap();
    assert_eq!(
        r.tools,
        vec![
            Tool {
                name: "get_weather".into(),
                description: "Current weather for a city.".into(),
                input: ToolInput::Json {
                    schema: json!({"type": "object", "properties": {"location": {"type": "string"}}, "required": ["location"]}),
                    strict: false
                },
            },
            Tool {
                name: "now".into(),
                description: String::new(),
                input: ToolInput::Json { schema: json!({"type": "object"}), strict: true },
            },
        ]
    );
    assert_eq!(r.tool_choice, ToolChoice::Named("get_weather".into()));
    assert!(!r.parallel_tool_calls);
    for (given, want) in [("auto", ToolChoice::Auto), ("any", ToolChoice::Required), ("none", ToolChoice::None)] {
        let r = with(user(), json!({"tools": [weather()], "tool_choice": {"type": given}})).unwrap();
        assert_eq!(r.tool_choice, want);
        assert!(r.parallel_tool_calls);
    }
    let r = with(user(), json!({"tools": [weather()]})).unwrap();
    assert_eq!((r.tool_choice, r.parallel_tool_calls), (ToolChoice::Auto, true));
}

#[test]
fn messages_request_refuses_server_tools_by_type() {
    let server = [
        json!({"type": "web_search_20250305", "name": "web_search", "max_uses": 5}),
        json!({"type": "bash_20250124", "name": "bash"}),
        json!({"type": "text_editor_20250728", "name": "str_replace_based_edit_tool"}),
        json!({"type": "computer_20250124", "name": "computer", "display_width_px": 1024, "display_height_px": 768}),
        json!({"type": "code_execution_20250522", "name": "code_execution"}),
    ];
    for tool in server {
        let ty = tool["type"].as_str().unwrap().to_string();
        let m = invalid_message(with(user(), json!({"tools": [weather(), tool]})));
        assert_eq!(
            m,
            format!("tools[1]: server tool type '{ty}' is not supported; cortex runs client tools only (no type, or 'custom', with an input_schema)")
        );
    }
}

#[test]
fn messages_request_refuses_malformed_tools_and_choices() {
    let cases = [
        (json!({"tools": [{"input_schema": {"type": "object"}}]}), "tools[0].name is required"),
        (json!({"tools": [weather(), {"name": "f"}]}), "tools[1].input_schema is required"),
        (
            json!({"tools": [{"name": "f", "input_schema": "object"}]}),
            "tools[0].input_schema must be a JSON Schema object",
        ),
        (
            json!({"tools": [{"name": "get.weather", "input_schema": {}}]}),
            "tools[0].name 'get.weather' is not a valid tool name (1 to 64 letters, digits, '_' or '-')",
        ),
        (json!({"tools": [weather(), weather()]}), "tools[1].name `get_weather` is given twice"),
        (
            json!({"tools": [weather()], "tool_choice": {"type": "tool"}}),
            "tool_choice.name is required when tool_choice.type is 'tool'",
        ),
        (
            json!({"tools": [weather()], "tool_choice": {"type": "tool", "name": "search"}}),
            "tool_choice names `search`, which is not among the request's tools",
        ),
        (
            json!({"tools": [weather()], "tool_choice": {"type": "required"}}),
            "tool_choice.type 'required' is not supported (only 'auto', 'any', 'tool' and 'none')",
        ),
        (json!({"tool_choice": {"type": "any"}}), "tool_choice requires a tool call but no tools are given"),
    ];
    for (extra, want) in cases {
        assert_eq!(invalid_message(with(user(), extra)), want);
    }
}

#[test]
fn messages_request_reads_a_tool_exchange_in_order() {
    let r = with(
        json!([
            {"role": "user", "content": "Weather in Paris and Rome?"},
            {"role": "assistant", "content": [
                {"type": "text", "text": "Checking both."},
                {"type": "tool_use", "id": "toolu_01A", "name": "get_weather", "input": {"location": "Paris"}},
                {"type": "tool_use", "id": "toolu_01B", "name": "get_weather", "input": {"location": "Rome", "unit": "c"}}
            ]},
            {"role": "user", "content": [
                {"type": "tool_result", "tool_use_id": "toolu_01A", "content": "18C"},
                {"type": "tool_result", "tool_use_id": "toolu_01B", "is_error": true,
                 "content": [{"type": "text", "text": "timeout"}, {"type": "text", "text": "retry later"}]},
                {"type": "text", "text": "And Oslo?", "cache_control": {"type": "ephemeral"}}
            ]},
            {"role": "assistant", "content": [
                {"type": "tool_use", "id": "toolu_01C", "name": "get_weather", "input": {}}]},
            {"role": "user", "content": [
                {"type": "text", "text": "before"},
                {"type": "tool_result", "tool_use_id": "toolu_01C"},
                {"type": "text", "text": "after"}
            ]}
        ]),
        json!({"tools": [weather()]}),
    )
    .unwrap();
    assert_eq!(
        r.prompt,
        Prompt::Chat(vec![
            msg(Role::User, "Weather in Paris and Rome?"),
            ChatMessage {
                tool_calls: vec![
                    call("toolu_01A", "get_weather", r#"{"location":"Paris"}"#),
                    call("toolu_01B", "get_weather", r#"{"location":"Rome","unit":"c"}"#),
                ],
                ..msg(Role::Assistant, "Checking both.")
            },
            tool_result("toolu_01A", "get_weather", "18C"),
            tool_result("toolu_01B", "get_weather", "Error: timeout\nretry later"),
            msg(Role::User, "And Oslo?"),
            ChatMessage { tool_calls: vec![call("toolu_01C", "get_weather", "{}")], ..msg(Role::Assistant, "") },
            msg(Role::User, "before"),
            tool_result("toolu_01C", "get_weather", ""),
            msg(Role::User, "after"),
        ])
    );
}

#[test]
fn messages_request_refuses_results_of_calls_never_made() {
    let asked = json!({"role": "assistant", "content": [
        {"type": "tool_use", "id": "toolu_01A", "name": "get_weather", "input": {"location": "Paris"}}]});
    let result =
        |id: &str| json!({"role": "user", "content": [{"type": "tool_result", "tool_use_id": id, "content": "x"}]});
    let m = invalid_message(with(json!([user()[0], asked, result("toolu_zzz")]), json!({})));
    assert_eq!(m, "messages[2].content[0].tool_use_id 'toolu_zzz' matches no tool_use of an earlier assistant message");
    let m = invalid_message(with(json!([result("toolu_01A"), asked]), json!({})));
    assert!(m.starts_with("messages[0].content[0].tool_use_id 'toolu_01A' matches no tool_use"), "{m}");
    let cases = [
        (
            json!([{"role": "user", "content": [{"type": "tool_result", "content": "x"}]}]),
            "messages[0].content[0].tool_use_id is required",
        ),
        (
            json!([{"role": "user", "content": [{"type": "tool_use", "id": "t", "name": "f", "input": {}}]}]),
            "messages[0].content[0]: tool_use blocks belong in assistant messages",
        ),
        (
            json!([{"role": "assistant", "content": [{"type": "tool_result", "tool_use_id": "t"}]}]),
            "messages[0].content[0]: tool_result blocks belong in user messages",
        ),
        (
            json!([{"role": "assistant", "content": [{"type": "tool_use", "id": "t", "name": "f", "input": [1]}]}]),
            "messages[0].content[0].input must be an object",
        ),
        (
            json!([{"role": "assistant", "content": [{"type": "tool_use", "name": "f", "input": {}}]}]),
            "messages[0].content[0].id is required",
        ),
        (
            json!([{"role": "assistant", "content": [{"type": "tool_use", "id": "t", "input": {}}]}]),
            "messages[0].content[0].name is required",
        ),
    ];
    for (messages, want) in cases {
        assert_eq!(invalid_message(with(messages, json!({}))), want);
    }
    let m = invalid_message(with(
        json!([user()[0], asked, {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_01A",
            "content": [{"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "AA"}}]}]}]),
        json!({}),
    ));
    assert_eq!(m, "messages[2].content[0]: only text content is supported in a tool_result (got 'image')");
}

#[test]
fn count_tokens_request_carries_system_and_tools() {
    let req: CountTokensRequest = serde_json::from_value(json!({
        "model": "m", "system": "S", "messages": [{"role": "user", "content": "U"}],
        "tools": [weather()], "tool_choice": {"type": "any"}
    }))
    .unwrap();
    let r = count_tokens_request(&req, "count".into(), "smollm2".into()).unwrap();
    assert_eq!(r.prompt, Prompt::Chat(vec![msg(Role::System, "S"), msg(Role::User, "U")]));
    assert_eq!(r.tools.len(), 1);
    assert_eq!(r.tools[0].name, "get_weather");
    assert_eq!(r.tool_choice, ToolChoice::Required);
    assert_eq!(r.params, SamplingParams::default());
    let empty = CountTokensRequest { model: "m".into(), ..Default::default() };
    assert!(count_tokens_request(&empty, "c".into(), "m".into()).is_err());
    let server: CountTokensRequest = serde_json::from_value(json!({
        "model": "m", "messages": [{"role": "user", "content": "U"}],
        "tools": [{"type": "web_search_20250305", "name": "web_search"}]
    }))
    .unwrap();
    assert!(count_tokens_request(&server, "c".into(), "m".into()).unwrap_err().message.contains("web_search_20250305"));
}

#[test]
fn claude_codes_billing_line_stays_out_of_the_prompt_and_its_session_and_cache_marks_are_kept() {
    let r = anth(json!({
        "model": "m", "max_tokens": 8,
        "system": [{"type": "text", "text": "x-anthropic-billing-header: cc_version=2.1.332.a1b; cc_entrypoint=sdk-cli; cch=0f3e;"},
                   {"type": "text", "text": "You are Claude Code.", "cache_control": {"type": "ephemeral"}}],
        "messages": [{"role": "user", "content": "hi"}],
        "metadata": {"user_id": "user_ab12_account__session_5f0c"}
    }))
    .unwrap();
    assert_eq!(r.prompt, Prompt::Chat(vec![msg(Role::System, "You are Claude Code."), msg(Role::User, "hi")]));
    assert!(r.cache_control);
    assert_eq!(r.session.as_deref(), Some("user_ab12_account__session_5f0c"));
    // A system text that merely mentions the header is the operator's, and stays.
    let kept = anth(json!({
        "model": "m", "max_tokens": 8, "system": [{"type": "text", "text": "x-anthropic-billing-header: a\nAnd more."}],
        "messages": [{"role": "user", "content": "hi"}]
    }))
    .unwrap();
    assert_eq!(
        kept.prompt,
        Prompt::Chat(vec![msg(Role::System, "x-anthropic-billing-header: a\nAnd more."), msg(Role::User, "hi")])
    );
    assert!(!kept.cache_control && kept.session.is_none());
}
