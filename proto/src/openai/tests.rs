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
        choices: vec![ChatChoice {
            index: 0,
            message: ResponseMessage { role: "assistant".into(), content: "Hi".into() },
            finish_reason: Some("stop".into()),
            logprobs: None,
        }],
        usage: Usage { prompt_tokens: 5, completion_tokens: 2 }.into(),
        timings: None,
    };
    assert_eq!(
        serde_json::to_value(&c).unwrap(),
        json!({
            "id": "chatcmpl-1", "object": "chat.completion", "created": 1_700_000_000u64,
            "model": "m",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": "Hi"},
                         "finish_reason": "stop", "logprobs": null}],
            "usage": {"prompt_tokens": 5, "completion_tokens": 2, "total_tokens": 7}
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
    chunk.usage = Some(Some(OaiUsage { prompt_tokens: 1, completion_tokens: 2, total_tokens: 3 }));
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
