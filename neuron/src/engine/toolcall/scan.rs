//! An incremental reader of one JSON call object, `{"name": "…", "arguments": …}`, as a model
//! writes it: it reports the name as soon as it is complete and the arguments' JSON text as it
//! arrives, so that a stream can show the call being written. Arguments written before the name
//! wait for it. Arguments given as a JSON string (OpenAI's own wire form) are unwrapped to the
//! JSON text they hold.

/// What the scanner found in the text pushed so far.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Found {
    Name(String),
    Args(String),
}

/// Where the scanner is in the object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum At {
    /// Before the opening brace.
    Start,
    /// Inside the object, between members.
    Members,
    /// Reading a member's key (a string).
    Key,
    /// After a key, before its colon.
    Colon,
    /// After the colon, before the value.
    Value,
    /// Inside a value.
    InValue,
    /// The object closed.
    Done,
}

/// What the value being read is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Name,
    /// The arguments as JSON text.
    Args,
    /// The arguments as a JSON string holding JSON text.
    ArgsString,
    Other,
}

pub struct CallScanner {
    at: At,
    key: String,
    kind: Kind,
    /// Nesting inside the current value (0 for a primitive or string value).
    depth: u32,
    in_string: bool,
    escape: bool,
    /// A `\u` escape's hex digits, inside a string argument value.
    unicode: Option<String>,
    name: String,
    name_sent: bool,
    /// Arguments seen before the name.
    pending: String,
    args_seen: bool,
    args_keys: &'static [&'static str],
}

impl CallScanner {
    /// A scanner that takes any of `args_keys` as the arguments' key (`arguments`, or
    /// `parameters` for Llama 3).
    pub fn new(args_keys: &'static [&'static str]) -> Self {
        Self {
            at: At::Start,
            key: String::new(),
            kind: Kind::Other,
            depth: 0,
            in_string: false,
            escape: false,
            unicode: None,
            name: String::new(),
            name_sent: false,
            pending: String::new(),
            args_seen: false,
            args_keys,
        }
    }

    /// Whether the object has closed.
    pub fn done(&self) -> bool {
        self.at == At::Done
    }

    /// Reads `text` up to the end of the object; returns what it found and how many bytes of
    /// `text` it used (all of them until the object closes). `Err` names what is malformed.
    pub fn push(&mut self, text: &str, out: &mut Vec<Found>) -> Result<usize, String> {
        for (i, c) in text.char_indices() {
            if self.at == At::Done {
                return Ok(i);
            }
            self.step(c, out)?;
        }
        Ok(text.len())
    }

    /// Checks the object is complete and carried a name; returns any arguments still held.
    pub fn finish(&mut self, out: &mut Vec<Found>) -> Result<(), String> {
        if self.at != At::Done {
            return Err("the call object is incomplete".into());
        }
        if !self.name_sent {
            return Err("the call names no tool".into());
        }
        if !self.args_seen {
            // No arguments at all: an empty object, as clients expect valid JSON.
            out.push(Found::Args("{}".into()));
        }
        Ok(())
    }

    fn emit_args(&mut self, s: &str, out: &mut Vec<Found>) {
        if s.is_empty() {
            return;
        }
        if self.name_sent {
            // One fragment per push, not one per character.
            match out.last_mut() {
                Some(Found::Args(a)) => a.push_str(s),
                _ => out.push(Found::Args(s.to_string())),
            }
        } else {
            self.pending.push_str(s);
        }
    }

    fn step(&mut self, c: char, out: &mut Vec<Found>) -> Result<(), String> {
        match self.at {
            At::Start if c.is_whitespace() => {}
            At::Start if c == '{' => self.at = At::Members,
            At::Start => return Err(format!("a call must be a JSON object, not `{c}`…")),
            At::Members => match c {
                _ if c.is_whitespace() || c == ',' => {}
                '"' => {
                    self.at = At::Key;
                    self.key.clear();
                }
                '}' => self.at = At::Done,
                _ => return Err(format!("unexpected `{c}` between a call's members")),
            },
            At::Key => match (self.escape, c) {
                (true, _) => {
                    self.key.push(c);
                    self.escape = false;
                }
                (false, '\\') => self.escape = true,
                (false, '"') => self.at = At::Colon,
                (false, _) => self.key.push(c),
            },
            At::Colon if c.is_whitespace() => {}
            At::Colon if c == ':' => self.at = At::Value,
            At::Colon => return Err(format!("expected `:` after \"{}\"", self.key)),
            At::Value if c.is_whitespace() => {}
            At::Value => {
                self.kind = if self.key == "name" {
                    if c != '"' {
                        return Err("a tool's name must be a string".into());
                    }
                    Kind::Name
                } else if self.args_keys.contains(&self.key.as_str()) {
                    self.args_seen = true;
                    if c == '"' {
                        Kind::ArgsString
                    } else {
                        Kind::Args
                    }
                } else {
                    Kind::Other
                };
                self.at = At::InValue;
                self.depth = 0;
                self.in_string = false;
                self.escape = false;
                self.value_char(c, out)?;
            }
            At::InValue => self.value_char(c, out)?,
            At::Done => {}
        }
        Ok(())
    }

    /// One character of a value; the value ends at its closing character, or for a primitive
    /// at the `,` or `}` after it.
    fn value_char(&mut self, c: char, out: &mut Vec<Found>) -> Result<(), String> {
        match self.kind {
            Kind::Name => return self.name_char(c, out),
            Kind::ArgsString => return self.args_string_char(c, out),
            Kind::Args | Kind::Other => {}
        }
        let args = self.kind == Kind::Args;
        if self.in_string {
            match (self.escape, c) {
                (true, _) => self.escape = false,
                (false, '\\') => self.escape = true,
                (false, '"') => self.in_string = false,
                _ => {}
            }
        } else {
            match c {
                '"' => self.in_string = true,
                '{' | '[' => self.depth += 1,
                '}' | ']' if self.depth > 0 => self.depth -= 1,
                ',' | '}' if self.depth == 0 => {
                    // A primitive value ended; this character belongs to the object.
                    self.at = At::Members;
                    if c == '}' {
                        self.at = At::Done;
                    }
                    return Ok(());
                }
                _ => {}
            }
        }
        if args {
            let mut buf = [0u8; 4];
            self.emit_args(c.encode_utf8(&mut buf), out);
        }
        if !self.in_string && self.depth == 0 && matches!(c, '}' | ']' | '"') {
            // A container or string value closed.
            self.at = At::Members;
        }
        Ok(())
    }

    fn name_char(&mut self, c: char, out: &mut Vec<Found>) -> Result<(), String> {
        match (self.in_string, self.escape, c) {
            (false, _, '"') => self.in_string = true,
            (true, true, _) => {
                self.name.push(c);
                self.escape = false;
            }
            (true, false, '\\') => self.escape = true,
            (true, false, '"') => {
                self.in_string = false;
                self.at = At::Members;
                if !self.name_sent {
                    self.name_sent = true;
                    out.push(Found::Name(self.name.clone()));
                    let pending = std::mem::take(&mut self.pending);
                    self.emit_args(&pending, out);
                }
            }
            (true, false, _) => self.name.push(c),
            (false, _, _) => return Err("a tool's name must be a string".into()),
        }
        Ok(())
    }

    /// Arguments given as a JSON string: its decoded content is the arguments' JSON text.
    fn args_string_char(&mut self, c: char, out: &mut Vec<Found>) -> Result<(), String> {
        if let Some(hex) = self.unicode.as_mut() {
            hex.push(c);
            if hex.len() == 4 {
                let code = u32::from_str_radix(hex, 16).map_err(|_| format!("bad \\u escape `{hex}`"))?;
                self.unicode = None;
                // A lone surrogate becomes U+FFFD rather than failing the call.
                let ch = char::from_u32(code).unwrap_or('\u{fffd}');
                self.emit_args(&ch.to_string(), out);
            }
            return Ok(());
        }
        match (self.in_string, self.escape, c) {
            (false, _, '"') => self.in_string = true,
            (true, true, 'u') => {
                self.escape = false;
                self.unicode = Some(String::new());
            }
            (true, true, _) => {
                self.escape = false;
                self.emit_args(&unescape(c).to_string(), out);
            }
            (true, false, '\\') => self.escape = true,
            (true, false, '"') => {
                self.in_string = false;
                self.at = At::Members;
            }
            (true, false, _) => self.emit_args(&c.to_string(), out),
            (false, _, _) => {}
        }
        Ok(())
    }
}

/// The character a one-letter JSON escape (`\n`, `\"`, …) stands for.
fn unescape(c: char) -> char {
    match c {
        'n' => '\n',
        't' => '\t',
        'r' => '\r',
        'b' => '\u{8}',
        'f' => '\u{c}',
        other => other,
    }
}

/// Decodes the JSON string body that starts `text` (after its opening quote) as far as it goes:
/// the decoded text, bytes used, and whether the closing quote was reached. An escape cut off at
/// the end is left unused, to be read again with more text.
pub fn json_string_prefix(text: &str) -> (String, usize, bool) {
    let mut out = String::new();
    let mut chars = text.char_indices().peekable();
    while let Some((i, c)) = chars.next() {
        match c {
            '"' => return (out, i + 1, true),
            '\\' => {
                let Some(&(_, e)) = chars.peek() else { return (out, i, false) };
                chars.next();
                let decoded = match e {
                    'u' => {
                        let hex = text.get(i + 2..i + 6);
                        let Some(hex) = hex.filter(|h| h.len() == 4) else { return (out, i, false) };
                        for _ in 0..4 {
                            chars.next();
                        }
                        char::from_u32(u32::from_str_radix(hex, 16).unwrap_or(0xfffd)).unwrap_or('\u{fffd}')
                    }
                    other => unescape(other),
                };
                out.push(decoded);
            }
            c => out.push(c),
        }
    }
    (out, text.len(), false)
}
