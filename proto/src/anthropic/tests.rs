use serde_json::json;

use super::*;

#[test]
fn parses_messages_request_with_system_blocks_and_cache_control() {
    // Shaped like the Messages API reference, with prompt caching and tools we ignore.
    let body = json!({
        "model": "claude-sonnet-4-20250514",
        "max_tokens": 1024,
        "system": [
            {"type": "text", "text": "You are terse."},
            {"type": "text", "text": "Answer in English.", "cache_control": {"type": "ephemeral"}}
        ],
        "messages": [
            {"role": "user", "content": "Hello, Claude"},
            {"role": "assistant", "content": [{"type": "text", "text": "Hi!"}]},
            {"role": "user", "content": [
                {"type": "tool_result", "tool_use_id": "t1", "content": "42"},
                {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "AA"}}
            ]}
        ],
        "stop_sequences": ["\n\nHuman:"],
        "temperature": 0.5,
        "top_k": 5,
        "stream": true,
        "metadata": {"user_id": "u1"},
        "tools": [{"name": "calc", "input_schema": {"type": "object"}}],
        "thinking": {"type": "disabled"}
    });
    let req: MessagesRequest = serde_json::from_value(body).unwrap();
    assert_eq!(req.max_tokens, 1024);
    assert!(req.is_stream());
    match &req.system {
        Some(AnthContent::Blocks(b)) => {
            assert_eq!(b.len(), 2);
            assert_eq!(b[1].text.as_deref(), Some("Answer in English."));
        }
        other => panic!("expected system blocks, got {other:?}"),
    }
    assert_eq!(req.messages[0].content, AnthContent::Text("Hello, Claude".into()));
    match &req.messages[2].content {
        AnthContent::Blocks(b) => {
            assert_eq!(b[0].kind, "tool_result");
            assert_eq!(b[0].content, Some(AnthContent::Text("42".into())));
            assert_eq!(b[1].kind, "image");
        }
        other => panic!("expected blocks, got {other:?}"),
    }
    assert_eq!(req.stop_sequences, Some(vec!["\n\nHuman:".to_string()]));
    assert_eq!(req.top_k, Some(5));
    assert_eq!(req.metadata, Some(json!({"user_id": "u1"})));
}

#[test]
fn max_tokens_is_required() {
    let err = serde_json::from_value::<MessagesRequest>(json!({
        "model": "m", "messages": [{"role": "user", "content": "hi"}]
    }))
    .unwrap_err();
    assert!(err.to_string().contains("max_tokens"), "{err}");
}

#[test]
fn parses_count_tokens_request_with_string_system() {
    let req: CountTokensRequest = serde_json::from_value(json!({
        "model": "m", "system": "Be brief.",
        "messages": [{"role": "user", "content": "hi"}]
    }))
    .unwrap();
    assert_eq!(req.system, Some(AnthContent::Text("Be brief.".into())));
    let resp = serde_json::to_value(CountTokensResponse { input_tokens: 12 }).unwrap();
    assert_eq!(resp, json!({"input_tokens": 12}));
}

#[test]
fn message_serializes_like_anthropic() {
    let m = Message {
        id: "msg_1".into(),
        kind: "message".into(),
        role: "assistant".into(),
        content: vec![ContentBlock::text("Hi")],
        model: "m".into(),
        stop_reason: Some("end_turn".into()),
        stop_sequence: None,
        usage: AnthUsage { input_tokens: 3, output_tokens: 1, ..Default::default() },
    };
    assert_eq!(
        serde_json::to_value(&m).unwrap(),
        json!({
            "id": "msg_1", "type": "message", "role": "assistant",
            "content": [{"type": "text", "text": "Hi"}], "model": "m",
            "stop_reason": "end_turn", "stop_sequence": null,
            "usage": {"input_tokens": 3, "output_tokens": 1, "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0}
        })
    );
}

#[test]
fn stream_events_tag_their_type_and_parse_back() {
    let ev = StreamEvent::ContentBlockDelta { index: 0, delta: BlockDelta::TextDelta { text: "Hel".into() } };
    let v = serde_json::to_value(&ev).unwrap();
    assert_eq!(
        v,
        json!({"type": "content_block_delta", "index": 0,
               "delta": {"type": "text_delta", "text": "Hel"}})
    );
    assert_eq!(v["type"], ev.name());
    assert_eq!(serde_json::from_value::<StreamEvent>(v).unwrap(), ev);
    assert_eq!(serde_json::to_value(StreamEvent::Ping).unwrap(), json!({"type": "ping"}));
}

#[test]
fn stop_reasons_map_to_anthropic_strings() {
    assert_eq!(stop_reason(&FinishReason::Stop), "end_turn");
    assert_eq!(stop_reason(&FinishReason::Length), "max_tokens");
    let seq = FinishReason::StopSequence("END".into());
    assert_eq!(stop_reason(&seq), "stop_sequence");
    assert_eq!(stop_sequence(&seq), Some("END".into()));
    assert_eq!(stop_sequence(&FinishReason::Stop), None);
}

#[test]
fn error_bodies_use_anthropic_types() {
    assert_eq!(
        error_body(&GenerateError::new(ErrorKind::Unavailable, "busy")),
        json!({"type": "error", "error": {"type": "overloaded_error", "message": "busy"}})
    );
    let cases = [
        (ErrorKind::InvalidRequest, "invalid_request_error"),
        (ErrorKind::Authentication, "authentication_error"),
        (ErrorKind::PermissionDenied, "permission_error"),
        (ErrorKind::NotFound, "not_found_error"),
        (ErrorKind::PayloadTooLarge, "request_too_large"),
        (ErrorKind::Overloaded, "rate_limit_error"),
        (ErrorKind::Internal, "api_error"),
    ];
    for (kind, ty) in cases {
        let parsed: ErrorResponse = serde_json::from_value(error_body(&GenerateError::new(kind, "x"))).unwrap();
        assert_eq!(parsed.kind, "error");
        assert_eq!(parsed.error.kind, ty, "{kind:?}");
        assert_eq!(parsed.error.message, "x");
    }
}

#[test]
fn a_context_overflow_reads_as_anthropic_words_it() {
    // Claude Code matches this wording to lower max_tokens and retry, and shows the second as
    // "Prompt is too long".
    let both = GenerateError::context_length(ContextOverflow { prompt: 7700, max_tokens: 32000, context: 8192 });
    assert_eq!(
        error_body(&both)["error"]["message"],
        "input length and `max_tokens` exceed context limit: 7700 + 32000 > 8192, decrease input length or `max_tokens` and try again"
    );
    let prompt = GenerateError::context_length(ContextOverflow { prompt: 9000, max_tokens: 0, context: 8192 });
    assert_eq!(ErrorObject::from_error(&prompt).message, "prompt is too long: 9000 tokens > 8192 maximum");
    assert_eq!(error_body(&prompt)["error"]["type"], "invalid_request_error");
}

#[test]
fn parses_tools_tool_choice_and_tool_blocks() {
    // Shaped like the tool-use guide's examples.
    let req: MessagesRequest = serde_json::from_value(json!({
        "model": "claude-sonnet-4-20250514", "max_tokens": 1024,
        "tools": [
            {"name": "get_weather", "description": "Weather.", "cache_control": {"type": "ephemeral"},
             "input_schema": {"type": "object", "properties": {"location": {"type": "string"}}}},
            {"type": "web_search_20250305", "name": "web_search", "max_uses": 5}
        ],
        "tool_choice": {"type": "tool", "name": "get_weather", "disable_parallel_tool_use": true},
        "messages": [
            {"role": "user", "content": "Weather in Paris?"},
            {"role": "assistant", "content": [
                {"type": "tool_use", "id": "toolu_01A", "name": "get_weather", "input": {"location": "Paris"}}]},
            {"role": "user", "content": [
                {"type": "tool_result", "tool_use_id": "toolu_01A", "content": "15C", "is_error": false}]}
        ]
    }))
    .unwrap();
    let tools = req.tools.as_ref().unwrap();
    assert_eq!((tools[0].kind.as_deref(), tools[0].name.as_deref()), (None, Some("get_weather")));
    assert_eq!(tools[1].kind.as_deref(), Some("web_search_20250305"));
    let choice = req.tool_choice.as_ref().unwrap();
    assert_eq!(
        (choice.kind.as_str(), choice.name.as_deref(), choice.disable_parallel_tool_use),
        ("tool", Some("get_weather"), Some(true))
    );
    let AnthContent::Blocks(b) = &req.messages[1].content else { panic!("blocks") };
    assert_eq!((b[0].id.as_deref(), b[0].input.as_ref()), (Some("toolu_01A"), Some(&json!({"location": "Paris"}))));
    let AnthContent::Blocks(b) = &req.messages[2].content else { panic!("blocks") };
    assert_eq!((b[0].tool_use_id.as_deref(), b[0].is_error), (Some("toolu_01A"), Some(false)));
    let count: CountTokensRequest = serde_json::from_value(json!({
        "model": "m", "messages": [], "tools": [{"name": "f", "input_schema": {}}]
    }))
    .unwrap();
    assert_eq!(count.tools.unwrap()[0].name.as_deref(), Some("f"));
}

#[test]
fn tool_use_blocks_and_deltas_serialize_like_anthropic() {
    let block = ContentBlock::ToolUse { id: "toolu_1".into(), name: "f".into(), input: json!({"a": 1}) };
    let v = serde_json::to_value(&block).unwrap();
    assert_eq!(v, json!({"type": "tool_use", "id": "toolu_1", "name": "f", "input": {"a": 1}}));
    assert_eq!(serde_json::from_value::<ContentBlock>(v).unwrap(), block);
    let ev = StreamEvent::ContentBlockDelta {
        index: 1,
        delta: BlockDelta::InputJsonDelta { partial_json: "{\"a\"".into() },
    };
    assert_eq!(
        serde_json::to_value(&ev).unwrap(),
        json!({"type": "content_block_delta", "index": 1, "delta": {"type": "input_json_delta", "partial_json": "{\"a\""}})
    );
    assert_eq!(stop_reason(&FinishReason::ToolCalls), "tool_use");
}

#[test]
fn call_ids_take_anthropic_s_prefix() {
    assert_eq!(tool_use_id("call_0123456789abcdef01234567"), "toolu_0123456789abcdef01234567");
    assert_eq!(tool_use_id("toolu_01A"), "toolu_01A");
    assert_eq!(tool_use_id("abc"), "toolu_abc");
}

#[test]
fn usage_splits_cache_reads_and_writes_from_the_rest_of_the_prompt() {
    let u =
        crate::generate::Usage { prompt_tokens: 100, completion_tokens: 7, cached_tokens: 64, cache_write_tokens: 32 };
    let a = AnthUsage::of(&u);
    assert_eq!(
        (a.input_tokens, a.cache_read_input_tokens, a.cache_creation_input_tokens, a.output_tokens),
        (4, 64, 32, 7)
    );
    // Counts from a peer that do not add up cannot underflow.
    let odd =
        crate::generate::Usage { prompt_tokens: 10, completion_tokens: 0, cached_tokens: 64, cache_write_tokens: 32 };
    assert_eq!(AnthUsage::of(&odd).input_tokens, 0);
    let o = crate::openai::OaiUsage::from(u);
    assert_eq!((o.prompt_tokens, o.prompt_tokens_details.cached_tokens), (100, 64));
}
