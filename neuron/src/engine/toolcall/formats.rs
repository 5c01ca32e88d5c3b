//! One parser per tool-call format (see the parent module for the formats themselves). Each
//! holds back only what might still turn out to be a marker or an unfinished escape.

use super::scan::{json_string_prefix, CallScanner, Found};
use super::{held_back, push_piece, Parser, Piece};

const ARGUMENTS: &[&str] = &["arguments"];
const LLAMA_ARGUMENTS: &[&str] = &["parameters", "arguments"];

/// Feeds `buf` to a call scanner: pieces out, bytes used, and whether the call closed.
fn feed(scanner: &mut CallScanner, buf: &str, out: &mut Vec<Piece>) -> Result<(usize, bool), String> {
    let mut found = Vec::new();
    let used = scanner.push(buf, &mut found)?;
    let done = scanner.done();
    if done {
        scanner.finish(&mut found)?;
    }
    for f in found {
        push_piece(
            out,
            match f {
                Found::Name(n) => Piece::Call(n),
                Found::Args(a) => Piece::Args(a),
            },
        );
    }
    Ok((used, done))
}

/// Drops leading whitespace from `buf`.
fn skip_ws(buf: &mut String) {
    let n = buf.len() - buf.trim_start().len();
    buf.drain(..n);
}

/// cortex's JSON envelope: `{"tool_calls": [call, …]}` or `{"text": "…"}` (`"response"`, the key
/// llama.cpp's generic format uses, read as the same).
#[derive(Default)]
pub struct Generic {
    buf: String,
    at: GenericAt,
    call: Option<CallScanner>,
}

#[derive(Default, Debug, Clone, PartialEq, Eq)]
enum GenericAt {
    #[default]
    Open,
    Key,
    Colon(String),
    ResponseOpen,
    Response,
    CallsOpen,
    Calls,
    Close,
    Done,
}

impl Generic {
    /// One step on the buffered text; false when it needs more.
    fn advance(&mut self, out: &mut Vec<Piece>) -> Result<bool, String> {
        use GenericAt::*;
        if !matches!(self.at, Response) && self.call.is_none() {
            skip_ws(&mut self.buf);
        }
        let Some(first) = self.buf.chars().next() else { return Ok(false) };
        let expect = |c: char, what: &str| {
            if first == c {
                Ok(())
            } else {
                Err(format!("expected `{c}` {what} in the answer's JSON envelope, got `{first}`"))
            }
        };
        match self.at.clone() {
            Open => {
                expect('{', "at the start")?;
                self.buf.drain(..1);
                self.at = Key;
            }
            Key => {
                expect('"', "before a key")?;
                let Some(end) = self.buf[1..].find('"') else { return Ok(false) };
                let key = self.buf[1..1 + end].to_string();
                self.buf.drain(..end + 2);
                self.at = Colon(key);
            }
            Colon(key) => {
                expect(':', "after a key")?;
                self.buf.drain(..1);
                self.at = match key.as_str() {
                    "text" | "response" => ResponseOpen,
                    "tool_calls" => CallsOpen,
                    other => return Err(format!("unknown key `{other}` in the answer's JSON envelope")),
                };
            }
            ResponseOpen => {
                expect('"', "before the response text")?;
                self.buf.drain(..1);
                self.at = Response;
            }
            Response => {
                let (text, used, closed) = json_string_prefix(&self.buf);
                push_piece(out, Piece::Text(text));
                self.buf.drain(..used);
                if !closed {
                    return Ok(false);
                }
                self.at = Close;
            }
            CallsOpen => {
                expect('[', "before the calls")?;
                self.buf.drain(..1);
                self.at = Calls;
            }
            Calls => match (&mut self.call, first) {
                (Some(scanner), _) => {
                    let (used, done) = feed(scanner, &self.buf, out)?;
                    self.buf.drain(..used);
                    if !done {
                        return Ok(false);
                    }
                    self.call = None;
                }
                (None, ',') => {
                    self.buf.drain(..1);
                }
                (None, '{') => self.call = Some(CallScanner::new(ARGUMENTS)),
                (None, ']') => {
                    self.buf.drain(..1);
                    self.at = Close;
                }
                (None, c) => return Err(format!("unexpected `{c}` in the list of calls")),
            },
            Close => {
                expect('}', "at the end")?;
                self.buf.drain(..1);
                self.at = Done;
            }
            Done => return Err("text after the answer's JSON envelope".into()),
        }
        Ok(true)
    }
}

impl Parser for Generic {
    fn push(&mut self, text: &str) -> Result<Vec<Piece>, String> {
        self.buf.push_str(text);
        let mut out = Vec::new();
        while self.advance(&mut out)? {}
        Ok(out)
    }

    fn finish(&mut self) -> Result<Vec<Piece>, String> {
        match self.at {
            GenericAt::Done => Ok(Vec::new()),
            _ => Err("the answer ended inside its JSON envelope".into()),
        }
    }
}

/// `text <tool_call>{…}</tool_call> …`: calls anywhere after free text.
#[derive(Default)]
pub struct Hermes {
    buf: String,
    call: Option<CallScanner>,
    /// A call closed; its `</tool_call>` may follow.
    closing: bool,
}

const HERMES_OPEN: &str = "<tool_call>";
const HERMES_CLOSE: &str = "</tool_call>";

impl Parser for Hermes {
    fn push(&mut self, text: &str) -> Result<Vec<Piece>, String> {
        self.buf.push_str(text);
        let mut out = Vec::new();
        loop {
            if let Some(scanner) = &mut self.call {
                let (used, done) = feed(scanner, &self.buf, &mut out)?;
                self.buf.drain(..used);
                if !done {
                    break;
                }
                self.call = None;
                self.closing = true;
            }
            if self.closing {
                skip_ws(&mut self.buf);
                if self.buf.starts_with(HERMES_CLOSE) {
                    self.buf.drain(..HERMES_CLOSE.len());
                } else if HERMES_CLOSE.starts_with(self.buf.as_str()) {
                    break;
                }
                self.closing = false;
                skip_ws(&mut self.buf);
            }
            match self.buf.find(HERMES_OPEN) {
                Some(i) => {
                    push_piece(&mut out, Piece::Text(self.buf[..i].trim_end().to_string()));
                    self.buf.drain(..i + HERMES_OPEN.len());
                    self.call = Some(CallScanner::new(ARGUMENTS));
                }
                None => {
                    let keep = held_back(&self.buf, HERMES_OPEN);
                    let emit = self.buf.len() - keep;
                    push_piece(&mut out, Piece::Text(self.buf[..emit].to_string()));
                    self.buf.drain(..emit);
                    break;
                }
            }
        }
        Ok(out)
    }

    fn finish(&mut self) -> Result<Vec<Piece>, String> {
        if self.call.is_some() {
            return Err("the answer ended inside a <tool_call>".into());
        }
        let rest = std::mem::take(&mut self.buf);
        Ok(if self.closing || rest.trim().is_empty() { Vec::new() } else { vec![Piece::Text(rest)] })
    }
}

/// Llama 3.1+: an answer that starts with a JSON object (after `<|python_tag|>`, optionally)
/// is calls, separated by `;`; anything else is text.
#[derive(Default)]
pub struct Llama3 {
    buf: String,
    mode: LlamaMode,
    call: Option<CallScanner>,
}

#[derive(Default, PartialEq, Eq)]
enum LlamaMode {
    #[default]
    Undecided,
    Text,
    Calls,
}

const PYTHON_TAG: &str = "<|python_tag|>";

impl Parser for Llama3 {
    fn push(&mut self, text: &str) -> Result<Vec<Piece>, String> {
        self.buf.push_str(text);
        let mut out = Vec::new();
        if self.mode == LlamaMode::Undecided {
            let t = self.buf.trim_start();
            let t = t.strip_prefix(PYTHON_TAG).unwrap_or(t).trim_start();
            if t.is_empty() || PYTHON_TAG.starts_with(t) {
                return Ok(out);
            }
            if t.starts_with('{') {
                self.buf = t.to_string();
                self.mode = LlamaMode::Calls;
            } else {
                self.mode = LlamaMode::Text;
            }
        }
        if self.mode == LlamaMode::Text {
            push_piece(&mut out, Piece::Text(std::mem::take(&mut self.buf)));
            return Ok(out);
        }
        loop {
            match &mut self.call {
                Some(scanner) => {
                    let (used, done) = feed(scanner, &self.buf, &mut out)?;
                    self.buf.drain(..used);
                    if !done {
                        break;
                    }
                    self.call = None;
                }
                None => {
                    let n = self.buf.len() - self.buf.trim_start_matches(|c: char| c.is_whitespace() || c == ';').len();
                    self.buf.drain(..n);
                    match self.buf.chars().next() {
                        None => break,
                        Some('{') => self.call = Some(CallScanner::new(LLAMA_ARGUMENTS)),
                        Some(c) => return Err(format!("unexpected `{c}` after a call")),
                    }
                }
            }
        }
        Ok(out)
    }

    fn finish(&mut self) -> Result<Vec<Piece>, String> {
        if self.call.is_some() {
            return Err("the answer ended inside a call".into());
        }
        Ok(match self.mode {
            LlamaMode::Undecided if !self.buf.trim().is_empty() => vec![Piece::Text(std::mem::take(&mut self.buf))],
            _ => Vec::new(),
        })
    }
}

/// Mistral: text, then `[TOOL_CALLS]` and either a JSON array of calls or (tokenizer v11 and
/// later) `name[ARGS]{…}`, repeated with a `[TOOL_CALLS]` before each.
#[derive(Default)]
pub struct Mistral {
    buf: String,
    at: MistralAt,
    call: Option<CallScanner>,
    value: ValueReader,
}

#[derive(Default, PartialEq, Eq)]
enum MistralAt {
    #[default]
    Text,
    /// Just after `[TOOL_CALLS]`.
    Marker,
    /// Inside `[ … ]`.
    Array,
    /// After `name[ARGS]`, reading the arguments' value.
    Args,
}

const TOOL_CALLS: &str = "[TOOL_CALLS]";
const ARGS: &str = "[ARGS]";

impl Mistral {
    fn advance(&mut self, out: &mut Vec<Piece>) -> Result<bool, String> {
        match self.at {
            MistralAt::Text => match self.buf.find(TOOL_CALLS) {
                Some(i) => {
                    push_piece(out, Piece::Text(self.buf[..i].trim_end().to_string()));
                    self.buf.drain(..i + TOOL_CALLS.len());
                    self.at = MistralAt::Marker;
                }
                None => {
                    let emit = self.buf.len() - held_back(&self.buf, TOOL_CALLS);
                    push_piece(out, Piece::Text(self.buf[..emit].to_string()));
                    self.buf.drain(..emit);
                    return Ok(false);
                }
            },
            MistralAt::Marker => {
                skip_ws(&mut self.buf);
                if self.buf.starts_with('[') {
                    self.buf.drain(..1);
                    self.at = MistralAt::Array;
                } else if let Some(i) = self.buf.find(ARGS) {
                    push_piece(out, Piece::Call(self.buf[..i].trim().to_string()));
                    self.buf.drain(..i + ARGS.len());
                    self.value = ValueReader::default();
                    self.at = MistralAt::Args;
                } else {
                    return Ok(false);
                }
            }
            MistralAt::Array => match &mut self.call {
                Some(scanner) => {
                    let (used, done) = feed(scanner, &self.buf, out)?;
                    self.buf.drain(..used);
                    if !done {
                        return Ok(false);
                    }
                    self.call = None;
                }
                None => {
                    let n = self.buf.len() - self.buf.trim_start_matches(|c: char| c.is_whitespace() || c == ',').len();
                    self.buf.drain(..n);
                    match self.buf.chars().next() {
                        None => return Ok(false),
                        Some('{') => self.call = Some(CallScanner::new(ARGUMENTS)),
                        Some(']') => {
                            self.buf.drain(..1);
                            self.at = MistralAt::Text;
                        }
                        Some(c) => return Err(format!("unexpected `{c}` in the list of calls")),
                    }
                }
            },
            MistralAt::Args => {
                let used = self.value.push(&self.buf);
                push_piece(out, Piece::Args(self.buf[..used].to_string()));
                self.buf.drain(..used);
                if !self.value.done {
                    return Ok(false);
                }
                self.at = MistralAt::Text;
            }
        }
        Ok(true)
    }
}

impl Parser for Mistral {
    fn push(&mut self, text: &str) -> Result<Vec<Piece>, String> {
        self.buf.push_str(text);
        let mut out = Vec::new();
        while self.advance(&mut out)? {}
        Ok(out)
    }

    fn finish(&mut self) -> Result<Vec<Piece>, String> {
        match self.at {
            MistralAt::Text => Ok(vec![Piece::Text(std::mem::take(&mut self.buf))]
                .into_iter()
                .filter(|p| *p != Piece::Text(String::new()))
                .collect()),
            _ => Err("the answer ended inside a call".into()),
        }
    }
}

/// Reads one JSON value's raw text (an object, array, string or number) up to its end.
#[derive(Default)]
struct ValueReader {
    depth: u32,
    in_string: bool,
    escape: bool,
    started: bool,
    done: bool,
}

impl ValueReader {
    /// Bytes of `text` that belong to the value.
    fn push(&mut self, text: &str) -> usize {
        for (i, c) in text.char_indices() {
            if self.done {
                return i;
            }
            if !self.started {
                if c.is_whitespace() {
                    continue;
                }
                self.started = true;
            }
            if self.in_string {
                match (self.escape, c) {
                    (true, _) => self.escape = false,
                    (false, '\\') => self.escape = true,
                    (false, '"') => {
                        self.in_string = false;
                        self.done |= self.depth == 0;
                    }
                    _ => {}
                }
                continue;
            }
            match c {
                '"' => self.in_string = true,
                '{' | '[' => self.depth += 1,
                '}' | ']' => {
                    self.depth = self.depth.saturating_sub(1);
                    self.done |= self.depth == 0;
                }
                _ => {}
            }
        }
        text.len()
    }
}
