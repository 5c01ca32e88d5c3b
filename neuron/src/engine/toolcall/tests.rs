//! Each format read from samples written the way that format's documentation shows them,
//! whole and one byte at a time: the same text and the same calls either way.

use super::*;

/// The answer's text and calls `(name, arguments as JSON)` after pushing `text` in pieces of
/// `size` bytes (on character boundaries).
fn read(format: Format, text: &str, size: usize) -> Result<(String, Vec<(String, serde_json::Value)>), String> {
    let mut parser = format.parser();
    let mut pieces = Vec::new();
    let mut rest = text;
    while !rest.is_empty() {
        let mut cut = size.min(rest.len());
        while !rest.is_char_boundary(cut) {
            cut += 1;
        }
        pieces.extend(parser.push(&rest[..cut])?);
        rest = &rest[cut..];
    }
    pieces.extend(parser.finish()?);
    let mut answer = String::new();
    let mut calls: Vec<(String, String)> = Vec::new();
    for p in pieces {
        match p {
            Piece::Text(t) => answer.push_str(&t),
            Piece::Call(name) => calls.push((name, String::new())),
            Piece::Args(a) => calls.last_mut().ok_or("arguments before any call")?.1.push_str(&a),
        }
    }
    let calls = calls
        .into_iter()
        .map(|(n, a)| serde_json::from_str(&a).map(|v| (n, v)).map_err(|e| format!("arguments `{a}`: {e}")))
        .collect::<Result<_, _>>()?;
    Ok((answer, calls))
}

/// Reads `text` whole and byte by byte, checks both agree, and returns the result.
fn both(format: Format, text: &str) -> (String, Vec<(String, serde_json::Value)>) {
    let whole = read(format, text, usize::MAX).unwrap_or_else(|e| panic!("{format:?} whole: {e}\n{text}"));
    for size in [1, 2, 3, 7] {
        let split = read(format, text, size).unwrap_or_else(|e| panic!("{format:?} in {size}-byte pieces: {e}"));
        assert_eq!(split, whole, "{format:?} in {size}-byte pieces");
    }
    whole
}

fn call(name: &str, args: serde_json::Value) -> (String, serde_json::Value) {
    (name.to_string(), args)
}

#[test]
fn generic_envelope_calls_and_text() {
    let text = r#"{"tool_calls": [{"name": "get_weather", "arguments": {"city": "Paris", "days": [1, 2]}}, {"name": "get_time", "arguments": {}}]}"#;
    let (answer, calls) = both(Format::Generic, text);
    assert_eq!(answer, "");
    assert_eq!(
        calls,
        vec![
            call("get_weather", serde_json::json!({"city": "Paris", "days": [1, 2]})),
            call("get_time", serde_json::json!({}))
        ]
    );
    let (answer, calls) = both(Format::Generic, "{\"text\": \"Hi \\\"you\\\"\\n\\u00e9t\\u00e9 ✓\"}");
    assert_eq!(answer, "Hi \"you\"\nété ✓");
    assert!(calls.is_empty());
    assert_eq!(both(Format::Generic, r#"{"response": "Hi"}"#).0, "Hi");
    // Whitespace the JSON grammar allows, and a cut-off envelope.
    let (_, calls) = both(Format::Generic, "{ \"tool_calls\" : [ {\"name\":\"a\",\"arguments\":{\"x\":\"}\"}} ] }");
    assert_eq!(calls, vec![call("a", serde_json::json!({"x": "}"}))]);
    assert!(read(Format::Generic, r#"{"tool_calls": [{"name": "a", "argu"#, 1).is_err());
    assert!(read(Format::Generic, r#"{"answer": "x"}"#, 1).is_err());
}

/// Qwen's documentation: two parallel calls, each in its own block.
#[test]
fn hermes_blocks_after_text() {
    let text = "Let me check.\n<tool_call>\n{\"name\": \"get_current_temperature\", \"arguments\": {\"location\": \"San Francisco, CA, USA\"}}\n</tool_call>\n<tool_call>\n{\"name\": \"get_temperature_date\", \"arguments\": {\"location\": \"San Francisco, CA, USA\", \"date\": \"2024-10-01\"}}\n</tool_call>";
    let (answer, calls) = both(Format::Hermes, text);
    assert_eq!(answer, "Let me check.");
    assert_eq!(
        calls,
        vec![
            call("get_current_temperature", serde_json::json!({"location": "San Francisco, CA, USA"})),
            call(
                "get_temperature_date",
                serde_json::json!({"location": "San Francisco, CA, USA", "date": "2024-10-01"})
            ),
        ]
    );
    // Text that only looks like the start of a marker is text.
    let (answer, calls) = both(Format::Hermes, "a < b and <tool is not a call");
    assert_eq!((answer.as_str(), calls.len()), ("a < b and <tool is not a call", 0));
    assert!(read(Format::Hermes, "<tool_call>\n{\"name\": \"x\", ", 1).is_err());
}

/// Llama 3.1's documentation: JSON with `parameters`, with and without `<|python_tag|>`.
#[test]
fn llama3_json_calls() {
    let text = "<|python_tag|>{\"name\": \"get_current_conditions\", \"parameters\": {\"location\": \"San Francisco, CA\", \"unit\": \"Fahrenheit\"}}";
    let (answer, calls) = both(Format::Llama3, text);
    assert_eq!(answer, "");
    assert_eq!(
        calls,
        vec![call(
            "get_current_conditions",
            serde_json::json!({"location": "San Francisco, CA", "unit": "Fahrenheit"})
        )]
    );
    let (_, calls) =
        both(Format::Llama3, "{\"name\": \"a\", \"parameters\": {\"n\": 1}}; {\"name\": \"b\", \"parameters\": {}}");
    assert_eq!(calls, vec![call("a", serde_json::json!({"n": 1})), call("b", serde_json::json!({}))]);
    let (answer, calls) = both(Format::Llama3, "The weather is {sunny}.");
    assert_eq!((answer.as_str(), calls.len()), ("The weather is {sunny}.", 0));
}

/// Mistral's documentation: the v3 JSON list and the v11 `name[ARGS]{…}` form.
#[test]
fn mistral_both_forms() {
    let v3 = "[TOOL_CALLS] [{\"name\": \"get_current_weather\", \"arguments\": {\"location\": \"Paris, France\", \"format\": \"celsius\"}}]";
    let (answer, calls) = both(Format::Mistral, v3);
    assert_eq!(answer, "");
    assert_eq!(
        calls,
        vec![call("get_current_weather", serde_json::json!({"location": "Paris, France", "format": "celsius"}))]
    );
    let v11 = "Sure.[TOOL_CALLS]get_current_weather[ARGS]{\"location\": \"Paris, France\"}[TOOL_CALLS]get_time[ARGS]{\"tz\": \"CET\"}";
    let (answer, calls) = both(Format::Mistral, v11);
    assert_eq!(answer, "Sure.");
    assert_eq!(
        calls,
        vec![
            call("get_current_weather", serde_json::json!({"location": "Paris, France"})),
            call("get_time", serde_json::json!({"tz": "CET"})),
        ]
    );
}

/// Arguments written before the name, and arguments as a JSON string (OpenAI's wire form).
#[test]
fn calls_with_arguments_first_or_as_a_string() {
    let (_, calls) =
        both(Format::Hermes, "<tool_call>{\"arguments\": {\"q\": \"x\"}, \"name\": \"search\"}</tool_call>");
    assert_eq!(calls, vec![call("search", serde_json::json!({"q": "x"}))]);
    let (_, calls) = both(
        Format::Hermes,
        "<tool_call>{\"name\": \"search\", \"arguments\": \"{\\\"q\\\": \\\"caf\\u00e9\\\"}\"}</tool_call>",
    );
    assert_eq!(calls, vec![call("search", serde_json::json!({"q": "café"}))]);
    // A call without arguments has an empty object; one without a name is an error.
    let (_, calls) = both(Format::Hermes, "<tool_call>{\"name\": \"now\"}</tool_call>");
    assert_eq!(calls, vec![call("now", serde_json::json!({}))]);
    assert!(read(Format::Hermes, "<tool_call>{\"arguments\": {}}</tool_call>", 1).is_err());
}

#[test]
fn formats_are_detected_from_the_template() {
    assert_eq!(Format::detect(None), Format::Generic);
    assert_eq!(Format::detect(Some("{{ messages }}")), Format::Generic);
    assert_eq!(Format::detect(Some("{% if tools %}<tool_call>{% endif %}")), Format::Hermes);
    assert_eq!(Format::detect(Some("{% if tools %}[TOOL_CALLS]{% endif %}")), Format::Mistral);
    assert_eq!(Format::detect(Some("{% if tools %}<|python_tag|>{% endif %}")), Format::Llama3);
    assert_eq!(Format::detect(Some("{% for tool in tools %}{{ tool }}{% endfor %}")), Format::Generic);
}
