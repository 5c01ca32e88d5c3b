use serde_json::json;

use super::*;

#[test]
fn parses_chat_request_with_parts_and_unknown_fields() {
    // Shaped like the API reference's examples, plus fields we do not implement.
    let body = json!({
        "model": "gpt-4o",
        "messages": [
            {"role": "developer", "content": "You are a helpful assistant."},
            {"role": "user", "content": [
                {"type": "text", "text": "What's in this image?"},
                {"type": "image_url", "image_url": {"url": "https://example.com/a.jpg"}}
            ]},
            {"role": "assistant", "content": null, "tool_calls": []}
        ],
        "max_completion_tokens": 300,
        "temperature": 0.2,
        "stop": "\n\n",
        "stream": true,
        "stream_options": {"include_usage": true},
        "tools": [{"type": "function", "function": {"name": "f", "parameters": {}}}],
        "response_format": {"type": "json_object"},
        "logit_bias": {"50256": -100},
        "keep_alive": "5m"
    });
    let req: ChatCompletionRequest = serde_json::from_value(body).unwrap();
    assert_eq!(req.model, "gpt-4o");
    assert_eq!(req.messages.len(), 3);
    assert_eq!(req.messages[0].role, "developer");
    match &req.messages[1].content {
        Some(OaiContent::Parts(parts)) => {
            assert_eq!(parts[0].kind, "text");
            assert_eq!(parts[0].text.as_deref(), Some("What's in this image?"));
            assert_eq!(parts[1].kind, "image_url");
            assert_eq!(parts[1].text, None);
        }
        other => panic!("expected parts, got {other:?}"),
    }
    assert_eq!(req.messages[2].content, None);
    assert_eq!(req.max_completion_tokens, Some(300));
    assert_eq!(req.sampling.max_tokens, None);
    assert_eq!(req.sampling.stop, Some(StopSpec::One("\n\n".into())));
    assert!(req.sampling.is_stream());
    assert!(req.sampling.include_usage());
    assert_eq!(req.sampling.keep_alive, Some(json!("5m")));
}

#[test]
fn parses_stop_array_and_extensions() {
    let req: ChatCompletionRequest = serde_json::from_value(json!({
        "model": "m",
        "messages": [{"role": "user", "content": "hi"}],
        "stop": ["END", "###"],
        "top_k": 40,
        "repetition_penalty": 1.1,
        "seed": 7,
        "n": 1
    }))
    .unwrap();
    assert_eq!(req.sampling.stop.as_ref().unwrap().to_vec(), vec!["END", "###"]);
    assert_eq!(req.sampling.top_k, Some(40));
    assert_eq!(req.sampling.repetition_penalty, Some(1.1));
    assert_eq!(req.sampling.seed, Some(7));
    assert!(!req.sampling.is_stream());
    assert!(!req.sampling.include_usage());
}

#[test]
fn chat_request_requires_messages_field() {
    let err = serde_json::from_value::<ChatCompletionRequest>(json!({"model": "m"})).unwrap_err();
    assert!(err.to_string().contains("messages"), "{err}");
}

#[test]
fn request_round_trips_for_the_cli() {
    let req = ChatCompletionRequest {
        model: "helexa/small".into(),
        messages: vec![OaiMessage::text("user", "hello")],
        sampling: OaiSampling { max_tokens: Some(16), ..Default::default() },
        ..Default::default()
    };
    let v = serde_json::to_value(&req).unwrap();
    assert_eq!(
        v,
        json!({"model": "helexa/small",
               "messages": [{"role": "user", "content": "hello"}],
               "max_tokens": 16})
    );
    assert_eq!(serde_json::from_value::<ChatCompletionRequest>(v).unwrap(), req);
}

#[test]
fn parses_completion_prompt_shapes() {
    let one: CompletionRequest =
        serde_json::from_value(json!({"model": "m", "prompt": "Say this is a test", "echo": true})).unwrap();
    assert_eq!(one.prompt, PromptSpec::One("Say this is a test".into()));
    let many: CompletionRequest =
        serde_json::from_value(json!({"model": "m", "prompt": ["a", "b"], "suffix": "x"})).unwrap();
    assert_eq!(many.prompt, PromptSpec::Many(vec!["a".into(), "b".into()]));
}

#[test]
fn chat_completion_serializes_like_openai() {
    let c = ChatCompletion {
        id: "chatcmpl-1".into(),
        object: CHAT_COMPLETION_OBJECT.into(),
        created: 1_700_000_000,
        model: "m".into(),
        system_fingerprint: None,
        choices: vec![ChatChoice {
            index: 0,
            message: ResponseMessage { role: "assistant".into(), content: Some("Hi".into()), tool_calls: None },
            finish_reason: Some("stop".into()),
            logprobs: None,
        }],
        usage: Usage { prompt_tokens: 5, completion_tokens: 2, ..Default::default() }.into(),
        timings: None,
    };
    assert_eq!(
        serde_json::to_value(&c).unwrap(),
        json!({
            "id": "chatcmpl-1", "object": "chat.completion", "created": 1_700_000_000u64,
            "model": "m",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": "Hi"},
                         "finish_reason": "stop", "logprobs": null}],
            "usage": {"prompt_tokens": 5, "completion_tokens": 2, "total_tokens": 7, "prompt_tokens_details": {"cached_tokens": 0}}
        })
    );
}

#[test]
fn chunk_usage_has_three_states() {
    let mut chunk = ChatCompletionChunk {
        id: "c".into(),
        object: CHAT_COMPLETION_CHUNK_OBJECT.into(),
        created: 1,
        model: "m".into(),
        system_fingerprint: None,
        choices: vec![],
        usage: None,
        timings: None,
    };
    let absent = serde_json::to_value(&chunk).unwrap();
    assert!(absent.get("usage").is_none());
    chunk.usage = Some(None);
    let null = serde_json::to_value(&chunk).unwrap();
    assert_eq!(null["usage"], Value::Null);
    assert!(null.as_object().unwrap().contains_key("usage"));
    // Deserializing keeps a present null apart from a missing key.
    assert_eq!(serde_json::from_value::<ChatCompletionChunk>(null).unwrap().usage, Some(None));
    assert_eq!(serde_json::from_value::<ChatCompletionChunk>(absent).unwrap().usage, None);
    chunk.usage =
        Some(Some(OaiUsage { prompt_tokens: 1, completion_tokens: 2, total_tokens: 3, ..Default::default() }));
    let full = serde_json::to_value(&chunk).unwrap();
    assert_eq!(full["usage"]["total_tokens"], 3);
    assert_eq!(serde_json::from_value::<ChatCompletionChunk>(full).unwrap(), chunk);
}

#[test]
fn model_object_flattens_extra_fields() {
    let mut m = ModelObject::new("helexa/small", 1_700_000_000, "cortex");
    m.extra.insert("loaded".into(), json!(true));
    m.extra.insert("size_bytes".into(), json!(12345));
    let list = serde_json::to_value(ModelList::new(vec![m])).unwrap();
    assert_eq!(
        list,
        json!({"object": "list", "data": [{
            "id": "helexa/small", "object": "model", "created": 1_700_000_000u64,
            "owned_by": "cortex", "loaded": true, "size_bytes": 12345
        }]})
    );
}

#[test]
fn finish_reasons_map_to_openai_strings() {
    assert_eq!(finish_reason(&FinishReason::Stop), "stop");
    assert_eq!(finish_reason(&FinishReason::StopSequence("END".into())), "stop");
    assert_eq!(finish_reason(&FinishReason::Length), "length");
}

#[test]
fn error_bodies_carry_type_and_code() {
    let body = error_body(&GenerateError::new(ErrorKind::Authentication, "bad key"));
    assert_eq!(
        body,
        json!({"error": {"message": "bad key", "type": "authentication_error",
                         "param": null, "code": "invalid_api_key"}})
    );
    let cases = [
        (ErrorKind::InvalidRequest, "invalid_request_error", Value::Null),
        (ErrorKind::PermissionDenied, "permission_error", json!("permission_denied")),
        (ErrorKind::NotFound, "not_found_error", json!("not_found")),
        (ErrorKind::PayloadTooLarge, "invalid_request_error", json!("request_too_large")),
        (ErrorKind::Overloaded, "rate_limit_error", json!("rate_limit_exceeded")),
        (ErrorKind::Unavailable, "service_unavailable", json!("service_unavailable")),
        (ErrorKind::Internal, "server_error", Value::Null),
    ];
    for (kind, ty, code) in cases {
        let body = error_body(&GenerateError::new(kind, "x"));
        assert_eq!(body["error"]["type"], ty, "{kind:?}");
        assert_eq!(body["error"]["code"], code, "{kind:?}");
        let parsed: ErrorResponse = serde_json::from_value(body).unwrap();
        assert_eq!(parsed.error.message, "x");
    }
}

#[test]
fn an_error_s_own_code_wins_and_an_overflow_reads_as_openai_words_it() {
    let over = ContextOverflow { prompt: 9000, max_tokens: 200, context: 8192 };
    let body = error_body(&GenerateError::context_length(over));
    assert_eq!(
        body,
        json!({"error": {"message": "This model's maximum context length is 8192 tokens. However, you requested 9200 tokens (9000 in the messages, 200 in the completion). Please reduce the length of the messages or completion.",
                         "type": "invalid_request_error", "param": null, "code": "context_length_exceeded"}})
    );
    // The code and the figures cross the mesh; an error without them reads back without them.
    let e = GenerateError::context_length(over);
    let back: GenerateError = serde_json::from_value(serde_json::to_value(&e).unwrap()).unwrap();
    assert_eq!(back, e);
    let plain: GenerateError = serde_json::from_value(json!({"kind": "internal", "message": "x"})).unwrap();
    assert_eq!((plain.code, plain.overflow), (None, None));
}

#[test]
fn parses_tools_choices_formats_and_a_tool_history() {
    // Shaped like the API reference's function-calling and custom-tool examples.
    let req: ChatCompletionRequest = serde_json::from_value(json!({
        "model": "gpt-4o",
        "messages": [
            {"role": "user", "content": "Weather?"},
            {"role": "assistant", "content": null, "tool_calls": [
                {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\":\"Paris\"}"}},
                {"id": "call_2", "type": "function", "function": {"name": "get_weather", "arguments": {"city": "Rome"}}},
                {"id": "call_3", "type": "custom", "custom": {"name": "apply_patch", "input": "*** Begin Patch"}}
            ]},
            {"role": "tool", "tool_call_id": "call_1", "content": "18C"}
        ],
        "tools": [
            {"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}, "strict": true}},
            {"type": "custom", "custom": {"name": "apply_patch", "format": {"type": "grammar",
                "grammar": {"syntax": "lark", "definition": "start: /.+/"}}}}
        ],
        "tool_choice": {"type": "function", "function": {"name": "get_weather"}},
        "parallel_tool_calls": false,
        "response_format": {"type": "json_schema", "json_schema": {"name": "a", "schema": {"type": "object"}, "strict": true}},
        "logprobs": true, "top_logprobs": 3, "n": 2
    }))
    .unwrap();
    let calls = req.messages[1].tool_calls.as_ref().unwrap();
    assert_eq!(calls[0].function.as_ref().unwrap().arguments, r#"{"city":"Paris"}"#);
    assert_eq!(calls[1].function.as_ref().unwrap().arguments, r#"{"city":"Rome"}"#, "an object is read as its text");
    assert_eq!(calls[2].custom.as_ref().unwrap().input, "*** Begin Patch");
    assert_eq!(req.messages[2].tool_call_id.as_deref(), Some("call_1"));
    let tools = req.tools.as_ref().unwrap();
    assert_eq!(tools[0].function.as_ref().unwrap().strict, Some(true));
    let grammar = tools[1].custom.as_ref().unwrap().format.as_ref().unwrap().grammar.as_ref().unwrap();
    assert_eq!((grammar.syntax.as_str(), grammar.definition.as_str()), ("lark", "start: /.+/"));
    match &req.tool_choice {
        Some(OaiToolChoice::Named(n)) => assert_eq!(n.function.as_ref().unwrap().name, "get_weather"),
        other => panic!("expected a named choice, got {other:?}"),
    }
    let mode: ChatCompletionRequest =
        serde_json::from_value(json!({"model": "m", "messages": [], "tool_choice": "required"})).unwrap();
    assert_eq!(mode.tool_choice, Some(OaiToolChoice::Mode("required".into())));
    assert_eq!(req.parallel_tool_calls, Some(false));
    assert_eq!(req.response_format.as_ref().unwrap().json_schema.as_ref().unwrap().strict, Some(true));
    assert_eq!((req.logprobs, req.top_logprobs, req.sampling.n), (Some(true), Some(3), Some(2)));
    let comp: CompletionRequest = serde_json::from_value(json!({"model": "m", "prompt": "x", "logprobs": 2})).unwrap();
    assert_eq!(comp.logprobs, Some(2));
}

#[test]
fn tool_call_responses_serialize_like_openai() {
    let msg = ResponseMessage {
        role: "assistant".into(),
        content: None,
        tool_calls: Some(vec![OaiToolCall {
            id: "call_1".into(),
            kind: "function".into(),
            function: Some(OaiFunctionCall { name: "f".into(), arguments: "{}".into() }),
            custom: None,
        }]),
    };
    assert_eq!(
        serde_json::to_value(&msg).unwrap(),
        json!({"role": "assistant", "content": null,
               "tool_calls": [{"id": "call_1", "type": "function", "function": {"name": "f", "arguments": "{}"}}]})
    );
    let delta = Delta {
        tool_calls: Some(vec![OaiToolCallDelta {
            index: 1,
            function: Some(OaiFunctionDelta { name: None, arguments: Some("{\"a\"".into()) }),
            ..Default::default()
        }]),
        ..Default::default()
    };
    let v = serde_json::to_value(&delta).unwrap();
    assert_eq!(v, json!({"tool_calls": [{"index": 1, "function": {"arguments": "{\"a\""}}]}));
    assert_eq!(serde_json::from_value::<Delta>(v).unwrap(), delta);
}
