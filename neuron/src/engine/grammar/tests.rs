//! Grammars over a generated model's real vocabulary: the text a forced call must be is taken
//! token by token, anything else is masked away, and random logits always end in a whole,
//! parseable answer well within a small token budget.

use cortex_proto::generate::{ChatMessage, Prompt, Role, SamplingParams};
use rand::{Rng, SeedableRng};

use super::*;
use crate::engine::tokenizer::TextTokenizer;

struct Fixture {
    grammars: Grammars,
    tokenizer: TextTokenizer,
    _dir: crate::mesh::tests::TempDir,
}

fn fixture() -> Fixture {
    let dir = crate::mesh::tests::TempDir::new("grammar");
    let path = dir.path().join("tiny.gguf");
    crate::testutil::write_tiny_llama(&path, Default::default()).unwrap();
    let ct = candle_core::quantized::gguf_file::Content::read(&mut std::fs::File::open(&path).unwrap()).unwrap();
    let tokenizer = TextTokenizer::from_gguf(&ct).unwrap();
    let vocab = vocab::from_gguf(&ct, &tokenizer.eos, tokenizer.bos).unwrap();
    let n = vocab.len();
    Fixture { grammars: Grammars::new(Arc::new(vocab), n), tokenizer, _dir: dir }
}

fn weather() -> Tool {
    Tool {
        name: "get_weather".into(),
        description: "Weather in a city".into(),
        input: ToolInput::Json {
            schema: json!({"type": "object", "properties": {"city": {"type": "string"}, "days": {"type": "integer"},
                                                          "temp": {"type": "number"}},
                           "required": ["city"], "additionalProperties": false}),
            strict: true,
        },
    }
}

fn request(tools: Vec<Tool>, choice: ToolChoice) -> GenerateRequest {
    let prompt = Prompt::Chat(vec![ChatMessage::text(Role::User, "hi")]);
    GenerateRequest { tools, tool_choice: choice, ..GenerateRequest::new("r", "m", prompt, SamplingParams::default()) }
}

fn argmax(l: Vec<f32>) -> Result<u32, crate::engine::EngineError> {
    Ok(l.iter().enumerate().max_by(|a, b| a.1.total_cmp(b.1)).map_or(0, |(i, _)| i as u32))
}

/// Offers `text`'s tokens one by one as the most likely; returns how many the grammar took as
/// offered, and whether it is complete afterwards.
fn offer(f: &Fixture, c: &mut Constraint, text: &str) -> (usize, bool) {
    let ids = f.tokenizer.encode(text).unwrap();
    let n = f.grammars.vocab().len();
    for (k, &id) in ids.iter().enumerate() {
        let mut logits = vec![0f32; n];
        logits[id as usize] = 10.0;
        match c.pick(logits, argmax) {
            Ok(Pick::Token(t, _)) if t == id => {}
            _ => return (k, c.complete()),
        }
    }
    (ids.len(), c.complete())
}

#[test]
fn a_forced_call_takes_exactly_the_envelope_of_a_valid_call() {
    let f = fixture();
    let req = request(vec![weather()], ToolChoice::Required);
    let g = for_request(&req, Format::Generic, f.grammars.vocab()).unwrap();
    let mut c = f.grammars.compile(g.clone()).unwrap();
    let good = r#"{"tool_calls": [{"name": "get_weather", "arguments": {"city": "Paris", "days": 2}}]}"#;
    let (taken, complete) = offer(&f, &mut c, good);
    assert_eq!(taken, f.tokenizer.encode(good).unwrap().len());
    assert!(complete, "the envelope is whole");
    // Up to MAX_PARALLEL_CALLS calls in one answer, not more.
    let call = r#"{"name": "get_weather", "arguments": {"city": "Oslo"}}"#;
    let list = |n: usize| format!(r#"{{"tool_calls": [{}]}}"#, vec![call; n].join(", "));
    let mut c = f.grammars.compile(g.clone()).unwrap();
    assert!(offer(&f, &mut c, &list(MAX_PARALLEL_CALLS)).1);
    let mut c = f.grammars.compile(g.clone()).unwrap();
    assert!(
        offer(&f, &mut c, &list(MAX_PARALLEL_CALLS + 1)).0
            < f.tokenizer.encode(&list(MAX_PARALLEL_CALLS + 1)).unwrap().len()
    );
    // Another tool's name, a plain answer, or an unknown argument are steered away from.
    for bad in [
        r#"{"tool_calls": [{"name": "get_time""#,
        r#"{"text": "hello"}"#,
        r#"{"tool_calls": [{"name": "get_weather", "arguments": {"town""#,
    ] {
        let mut c = f.grammars.compile(g.clone()).unwrap();
        let (taken, _) = offer(&f, &mut c, bad);
        assert!(taken < f.tokenizer.encode(bad).unwrap().len(), "{bad} was taken whole");
    }
}

#[test]
fn auto_lets_the_model_answer_in_the_envelope_and_none_constrains_nothing() {
    let f = fixture();
    let req = request(vec![weather()], ToolChoice::Auto);
    let mut c = f.grammars.compile(for_request(&req, Format::Generic, f.grammars.vocab()).unwrap()).unwrap();
    let answer = r#"{"text": "It is sunny."}"#;
    assert_eq!(offer(&f, &mut c, answer), (f.tokenizer.encode(answer).unwrap().len(), true));
    assert!(for_request(&request(vec![weather()], ToolChoice::None), Format::Generic, f.grammars.vocab()).is_none());
    assert!(for_request(&request(vec![], ToolChoice::Auto), Format::Generic, f.grammars.vocab()).is_none());
}

/// Random logits (the worst a model can do) until the grammar is complete: the text, or a
/// failure when it runs past `limit` tokens.
fn random_run(f: &Fixture, g: &TopLevelGrammar, rng: &mut rand::rngs::StdRng, limit: usize) -> String {
    let n = f.grammars.vocab().len();
    let mut c = f.grammars.compile(g.clone()).unwrap();
    let mut ids = Vec::new();
    while !c.complete() {
        assert!(ids.len() < limit, "no end in sight after {} tokens: {}", ids.len(), f.tokenizer.decode(&ids).unwrap());
        let logits: Vec<f32> = (0..n).map(|_| rng.random_range(0.0..1.0)).collect();
        match c.pick(logits, argmax).unwrap() {
            Pick::Token(t, _) => ids.push(t),
            Pick::Complete => break,
        }
    }
    f.tokenizer.decode(&ids).unwrap()
}

/// Random logits still end in a whole, parseable call, quickly: free strings, numbers, extra
/// properties and whitespace are bounded.
#[test]
fn random_logits_always_close_their_json() {
    let f = fixture();
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    for choice in [ToolChoice::Required, ToolChoice::Named("get_weather".into())] {
        let req = request(vec![weather()], choice);
        let g = for_request(&req, Format::Generic, f.grammars.vocab()).unwrap();
        for _ in 0..5 {
            let text = random_run(&f, &g, &mut rng, 4000);
            let v: Value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text}"));
            assert_eq!(v["tool_calls"][0]["name"], "get_weather", "{text}");
            assert!(v["tool_calls"][0]["arguments"]["city"].is_string(), "{text}");
        }
    }
    // Any JSON object, and a schema whose objects leave their other properties open.
    let open = json!({"type": "object", "properties": {"a": {"type": "number"}}, "required": ["a"]});
    for format in
        [ResponseFormat::JsonObject, ResponseFormat::JsonSchema { name: "o".into(), schema: open, strict: false }]
    {
        let req = GenerateRequest { format, ..request(vec![], ToolChoice::Auto) };
        let g = for_request(&req, Format::Generic, f.grammars.vocab()).unwrap();
        for _ in 0..5 {
            let text = random_run(&f, &g, &mut rng, 20_000);
            assert!(serde_json::from_str::<Value>(&text).is_ok_and(|v| v.is_object()), "{text}");
        }
    }
}

#[test]
fn answer_formats_and_compile_errors() {
    let f = fixture();
    let schema = json!({"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"]});
    let req = GenerateRequest {
        format: ResponseFormat::JsonSchema { name: "x".into(), schema, strict: true },
        ..request(vec![], ToolChoice::Auto)
    };
    let mut c = f.grammars.compile(for_request(&req, Format::Generic, f.grammars.vocab()).unwrap()).unwrap();
    assert!(offer(&f, &mut c, r#"{"n": 42}"#).1);
    let bad = GenerateRequest {
        format: ResponseFormat::JsonSchema { name: "x".into(), schema: json!({"type": "strin"}), strict: true },
        ..request(vec![], ToolChoice::Auto)
    };
    let e = f.grammars.compile(for_request(&bad, Format::Generic, f.grammars.vocab()).unwrap()).err().unwrap();
    assert_eq!(e.kind, ErrorKind::InvalidRequest);
    assert!(e.message.contains("cannot be compiled") && e.message.contains("strin"), "{}", e.message);
    let regex = GenerateRequest {
        format: ResponseFormat::Grammar { grammar: Grammar::Regex("[0-9]{3}".into()) },
        ..request(vec![], ToolChoice::Auto)
    };
    let mut c = f.grammars.compile(for_request(&regex, Format::Generic, f.grammars.vocab()).unwrap()).unwrap();
    assert_eq!(offer(&f, &mut c, "123"), (3, true));
}

/// A free-form tool's input travels JSON-escaped inside the envelope, and its Lark grammar
/// holds the decoded text: a newline the grammar asks for is `\n` in the JSON, and text the
/// grammar does not allow is masked away.
#[test]
fn a_free_form_tool_input_is_held_to_its_lark_grammar_through_json_escaping() {
    let f = fixture();
    let patch = Tool {
        name: "apply_patch".into(),
        description: String::new(),
        input: ToolInput::Text {
            grammar: Some(Grammar::Lark(
                "start: \"*** Begin\" LF (\"+\" /[a-z]+/ LF)+ \"*** End\"\n%import common.LF".into(),
            )),
        },
    };
    let req = GenerateRequest { parallel_tool_calls: false, ..request(vec![patch], ToolChoice::Required) };
    let compile = || f.grammars.compile(for_request(&req, Format::Generic, f.grammars.vocab()).unwrap()).unwrap();
    let good = r#"{"tool_calls": [{"name": "apply_patch", "arguments": "*** Begin\n+abc\n*** End"}]}"#;
    let n = f.tokenizer.encode(good).unwrap().len();
    assert_eq!(offer(&f, &mut compile(), good), (n, true));
    // A raw newline (invalid JSON) and text outside the grammar are both refused.
    for bad in [
        "{\"tool_calls\": [{\"name\": \"apply_patch\", \"arguments\": \"*** Begin\n",
        r#"{"tool_calls": [{"name": "apply_patch", "arguments": "rm -rf"#,
        r#"{"tool_calls": [{"name": "apply_patch", "arguments": "*** Begin\n+ABC"#,
    ] {
        let n = f.tokenizer.encode(bad).unwrap().len();
        assert!(offer(&f, &mut compile(), bad).0 < n, "accepted: {bad}");
    }
}

#[test]
fn schemas_get_bounds_only_where_they_have_none() {
    let s = bounded(&json!({
        "type": "object",
        "properties": {
            "a": {"type": "string"},
            "b": {"type": "string", "maxLength": 5},
            "c": {"type": "integer", "minimum": 0},
            "d": {"type": "array", "items": {"type": ["string", "null"]}},
            "e": {"enum": ["x", "y"], "type": "string"},
            "f": {"type": "number"}
        }
    }));
    let p = &s["properties"];
    assert_eq!(p["a"]["maxLength"], MAX_FREE_STRING);
    assert_eq!(p["b"]["maxLength"], 5);
    assert_eq!((p["c"]["minimum"].clone(), p["c"]["maximum"].clone()), (json!(0), json!(MAX_FREE_INTEGER)));
    assert_eq!(p["d"]["maxItems"], MAX_FREE_ITEMS);
    assert_eq!(p["d"]["items"]["maxLength"], MAX_FREE_STRING);
    assert!(p["e"].get("maxLength").is_none());
    assert_eq!(
        (p["f"]["multipleOf"].clone(), p["f"]["maximum"].clone()),
        (json!(FREE_NUMBER_STEP), json!(MAX_FREE_INTEGER))
    );
    assert_eq!(s["x-guidance"]["whitespace_pattern"], "[ ]?");
}

/// Native formats: each format's forced grammar compiles and takes a call written its way.
#[test]
fn native_formats_take_their_own_calls() {
    let f = fixture();
    let req = request(vec![weather()], ToolChoice::Required);
    for (format, text) in [
        (Format::Hermes, "<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Oslo\"}}\n</tool_call>"),
        (Format::Llama3, "{\"name\": \"get_weather\", \"parameters\": {\"city\": \"Oslo\"}}"),
        (Format::Mistral, "[TOOL_CALLS][{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Oslo\"}}]"),
    ] {
        let mut c = f.grammars.compile(for_request(&req, format, f.grammars.vocab()).unwrap()).unwrap();
        let (taken, complete) = offer(&f, &mut c, text);
        assert_eq!(taken, f.tokenizer.encode(text).unwrap().len(), "{format:?}");
        if !complete {
            // Parallel calls may go on; the end of the answer is allowed here.
            let eos = f.tokenizer.eos[0];
            let mut logits = vec![0f32; f.grammars.vocab().len()];
            logits[eos as usize] = 10.0;
            assert!(matches!(c.pick(logits, argmax), Ok(Pick::Token(t, _)) if t == eos), "{format:?}");
            assert!(c.complete(), "{format:?}");
        }
    }
    // Auto with a lazy trigger: free text stays free.
    let auto = request(vec![weather()], ToolChoice::Auto);
    let mut c = f.grammars.compile(for_request(&auto, Format::Hermes, f.grammars.vocab()).unwrap()).unwrap();
    assert_eq!(offer(&f, &mut c, "The weather is fine.").0, f.tokenizer.encode("The weather is fine.").unwrap().len());
}
