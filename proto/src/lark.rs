//! A free-form tool's Lark grammar as one regular expression. A tool call's input travels inside
//! a JSON string, so the grammar has to hold the string's *decoded* text; llguidance does that
//! for a regex (a JSON schema `pattern`, which it quotes itself) but not for a Lark grammar. So
//! a Lark grammar whose language is regular — no rule reaches itself, as in Codex's
//! `apply_patch` — is inlined into one regex here. Recursive grammars and `%ignore` (which
//! would let whitespace in anywhere) are refused with a message that says so.
//!
//! Supported: rules and terminals (`name: …`, `NAME: …`, with `?`/`!` prefixes, priorities
//! and `-> alias`), alternatives on continuation lines, `"literals"` (with `i`), `/regexes/`
//! (with flags `i`, `s`, `m`, `x`), `"a".."z"` ranges, groups, `[optional]`, `? * +`, `~ n` and
//! `~ n..m`, and `%import common.X` for Lark's common terminals.

use std::collections::HashMap;

/// Longest regex an inlined grammar may become (a grammar whose rules fan out can grow
/// exponentially when inlined).
pub const MAX_REGEX: usize = 64 * 1024;

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Name(String),
    Str(String, bool),
    Re(String, String),
    Colon,
    Bar,
    LParen,
    RParen,
    LBracket,
    RBracket,
    Op(char),
    Tilde,
    DotDot,
    Num(usize),
    Arrow,
    Newline,
    Directive(String),
}

fn lex(src: &str) -> Result<Vec<Tok>, String> {
    let cs: Vec<char> = src.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < cs.len() {
        let c = cs[i];
        match c {
            '\n' => {
                out.push(Tok::Newline);
                i += 1;
            }
            c if c.is_whitespace() => i += 1,
            '/' if cs.get(i + 1) == Some(&'/') => {
                while i < cs.len() && cs[i] != '\n' {
                    i += 1;
                }
            }
            '#' => {
                while i < cs.len() && cs[i] != '\n' {
                    i += 1;
                }
            }
            '"' => {
                let mut s = String::new();
                i += 1;
                loop {
                    match cs.get(i) {
                        None => return Err("a string literal is not closed".into()),
                        Some('"') => break,
                        Some('\\') => {
                            let e = cs.get(i + 1).ok_or("a string literal ends in `\\`")?;
                            match e {
                                'n' => s.push('\n'),
                                't' => s.push('\t'),
                                'r' => s.push('\r'),
                                'u' => {
                                    let hex: String = cs.get(i + 2..i + 6).ok_or("a bad \\u escape")?.iter().collect();
                                    let v = u32::from_str_radix(&hex, 16).map_err(|_| "a bad \\u escape")?;
                                    s.push(char::from_u32(v).ok_or("a bad \\u escape")?);
                                    i += 4;
                                }
                                other => s.push(*other),
                            }
                            i += 2;
                        }
                        Some(&ch) => {
                            s.push(ch);
                            i += 1;
                        }
                    }
                }
                i += 1;
                let insensitive = cs.get(i) == Some(&'i');
                if insensitive {
                    i += 1;
                }
                out.push(Tok::Str(s, insensitive));
            }
            '/' => {
                let mut s = String::new();
                i += 1;
                loop {
                    match cs.get(i) {
                        None => return Err("a /regex/ is not closed".into()),
                        Some('/') => break,
                        Some('\\') if cs.get(i + 1) == Some(&'/') => {
                            s.push('/');
                            i += 2;
                        }
                        Some('\\') => {
                            s.push('\\');
                            s.extend(cs.get(i + 1));
                            i += 2;
                        }
                        Some(&ch) => {
                            s.push(ch);
                            i += 1;
                        }
                    }
                }
                i += 1;
                let mut flags = String::new();
                while let Some(&f @ ('i' | 's' | 'm' | 'x' | 'u' | 'l')) = cs.get(i) {
                    flags.push(f);
                    i += 1;
                }
                out.push(Tok::Re(s, flags));
            }
            '%' => {
                let start = i + 1;
                i += 1;
                while i < cs.len() && cs[i].is_alphanumeric() {
                    i += 1;
                }
                out.push(Tok::Directive(cs[start..i].iter().collect()));
            }
            ':' => {
                out.push(Tok::Colon);
                i += 1;
            }
            '|' => {
                out.push(Tok::Bar);
                i += 1;
            }
            '(' => {
                out.push(Tok::LParen);
                i += 1;
            }
            ')' => {
                out.push(Tok::RParen);
                i += 1;
            }
            '[' => {
                out.push(Tok::LBracket);
                i += 1;
            }
            ']' => {
                out.push(Tok::RBracket);
                i += 1;
            }
            '?' | '*' | '+' | '!' => {
                out.push(Tok::Op(c));
                i += 1;
            }
            '~' => {
                out.push(Tok::Tilde);
                i += 1;
            }
            '-' if cs.get(i + 1) == Some(&'>') => {
                out.push(Tok::Arrow);
                i += 2;
            }
            '.' if cs.get(i + 1) == Some(&'.') => {
                out.push(Tok::DotDot);
                i += 2;
            }
            '.' => i += 1,
            ',' => i += 1,
            c if c.is_ascii_digit() => {
                let start = i;
                while i < cs.len() && cs[i].is_ascii_digit() {
                    i += 1;
                }
                let n: String = cs[start..i].iter().collect();
                out.push(Tok::Num(n.parse().map_err(|_| "a number is too large")?));
            }
            c if c.is_alphabetic() || c == '_' => {
                let start = i;
                while i < cs.len() && (cs[i].is_alphanumeric() || cs[i] == '_' || cs[i] == '.') {
                    // A priority (`name.2`) ends the name at the dot.
                    if cs[i] == '.' && !cs.get(i + 1).is_some_and(|c| c.is_alphabetic()) {
                        break;
                    }
                    i += 1;
                }
                out.push(Tok::Name(cs[start..i].iter().collect()));
            }
            other => return Err(format!("unexpected `{other}`")),
        }
    }
    Ok(out)
}

/// An expression of the grammar.
#[derive(Debug, Clone)]
enum Expr {
    Alt(Vec<Expr>),
    Seq(Vec<Expr>),
    Lit(String, bool),
    Re(String, String),
    Ref(String),
    Repeat(Box<Expr>, usize, Option<usize>),
    Range(char, char),
}

struct Parser {
    toks: Vec<Tok>,
    at: usize,
}

impl Parser {
    fn peek(&self) -> Option<&Tok> {
        self.toks.get(self.at)
    }

    fn next(&mut self) -> Option<Tok> {
        let t = self.toks.get(self.at).cloned();
        self.at += 1;
        t
    }

    /// Alternatives; a newline followed by `|` continues them.
    fn alternatives(&mut self) -> Result<Expr, String> {
        let mut alts = vec![self.sequence()?];
        loop {
            let save = self.at;
            while self.peek() == Some(&Tok::Newline) {
                self.at += 1;
            }
            if self.peek() == Some(&Tok::Bar) {
                self.at += 1;
                alts.push(self.sequence()?);
            } else {
                self.at = save;
                break;
            }
        }
        Ok(if alts.len() == 1 { alts.pop().unwrap_or(Expr::Seq(Vec::new())) } else { Expr::Alt(alts) })
    }

    fn sequence(&mut self) -> Result<Expr, String> {
        let mut items = Vec::new();
        loop {
            match self.peek() {
                None | Some(Tok::Newline | Tok::Bar | Tok::RParen | Tok::RBracket) => break,
                Some(Tok::Arrow) => {
                    // `-> alias` names the tree node: nothing for the language.
                    self.at += 1;
                    if let Some(Tok::Name(_)) = self.peek() {
                        self.at += 1;
                    }
                }
                _ => items.push(self.postfix()?),
            }
        }
        Ok(if items.len() == 1 { items.pop().unwrap_or(Expr::Seq(Vec::new())) } else { Expr::Seq(items) })
    }

    fn postfix(&mut self) -> Result<Expr, String> {
        let mut e = self.atom()?;
        loop {
            match self.peek() {
                Some(Tok::Op('?')) => e = Expr::Repeat(Box::new(e), 0, Some(1)),
                Some(Tok::Op('*')) => e = Expr::Repeat(Box::new(e), 0, None),
                Some(Tok::Op('+')) => e = Expr::Repeat(Box::new(e), 1, None),
                Some(Tok::Tilde) => {
                    self.at += 1;
                    let Some(Tok::Num(lo)) = self.next() else { return Err("`~` needs a count".into()) };
                    let hi = if self.peek() == Some(&Tok::DotDot) {
                        self.at += 1;
                        let Some(Tok::Num(hi)) = self.next() else { return Err("`~ n..` needs an upper count".into()) };
                        hi
                    } else {
                        lo
                    };
                    e = Expr::Repeat(Box::new(e), lo, Some(hi));
                    continue;
                }
                _ => break,
            }
            self.at += 1;
        }
        Ok(e)
    }

    fn atom(&mut self) -> Result<Expr, String> {
        match self.next() {
            Some(Tok::Str(s, i)) => {
                if self.peek() == Some(&Tok::DotDot) {
                    self.at += 1;
                    let Some(Tok::Str(hi, _)) = self.next() else { return Err("`..` needs a second literal".into()) };
                    let (mut a, mut b) = (s.chars(), hi.chars());
                    return match (a.next(), a.next(), b.next(), b.next()) {
                        (Some(lo), None, Some(hi), None) => Ok(Expr::Range(lo, hi)),
                        _ => Err("a `\"a\"..\"z\"` range needs single characters".into()),
                    };
                }
                Ok(Expr::Lit(s, i))
            }
            Some(Tok::Re(r, f)) => Ok(Expr::Re(r, f)),
            Some(Tok::Name(n)) => Ok(Expr::Ref(n)),
            Some(Tok::LParen) => {
                let e = self.alternatives()?;
                match self.next() {
                    Some(Tok::RParen) => Ok(e),
                    _ => Err("a `(` is not closed".into()),
                }
            }
            Some(Tok::LBracket) => {
                let e = self.alternatives()?;
                match self.next() {
                    Some(Tok::RBracket) => Ok(Expr::Repeat(Box::new(e), 0, Some(1))),
                    _ => Err("a `[` is not closed".into()),
                }
            }
            Some(t) => Err(format!("unexpected {t:?}")),
            None => Err("the grammar ends in the middle of a rule".into()),
        }
    }
}

/// Lark's `common` terminals that a grammar may `%import`.
fn common(name: &str) -> Option<&'static str> {
    Some(match name {
        "LF" => "\\n",
        "CR" => "\\r",
        "NEWLINE" => "(?:\\r?\\n)+",
        "WS" => "[ \\t\\f\\r\\n]+",
        "WS_INLINE" => "[ \\t]+",
        "DIGIT" => "[0-9]",
        "HEXDIGIT" => "[0-9a-fA-F]",
        "INT" => "[0-9]+",
        "SIGNED_INT" => "[+-]?[0-9]+",
        "DECIMAL" => "(?:[0-9]+\\.[0-9]*|\\.[0-9]+)",
        "NUMBER" => "(?:[0-9]+(?:\\.[0-9]*)?|\\.[0-9]+)(?:[eE][+-]?[0-9]+)?",
        "SIGNED_NUMBER" => "[+-]?(?:[0-9]+(?:\\.[0-9]*)?|\\.[0-9]+)(?:[eE][+-]?[0-9]+)?",
        "LETTER" => "[a-zA-Z]",
        "LCASE_LETTER" => "[a-z]",
        "UCASE_LETTER" => "[A-Z]",
        "WORD" => "[a-zA-Z]+",
        "CNAME" => "[_a-zA-Z][_a-zA-Z0-9]*",
        "ESCAPED_STRING" => "\"(?:[^\"\\\\]|\\\\.)*\"",
        _ => return None,
    })
}

fn escape(s: &str) -> String {
    let mut out = String::new();
    for c in s.chars() {
        match c {
            '\\' | '.' | '+' | '*' | '?' | '(' | ')' | '|' | '[' | ']' | '{' | '}' | '^' | '$' | '#' | '&' | '-'
            | '~' => {
                out.push('\\');
                out.push(c);
            }
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c => out.push(c),
        }
    }
    out
}

struct Inliner<'a> {
    rules: &'a HashMap<String, Expr>,
    imports: &'a HashMap<String, &'static str>,
    stack: Vec<String>,
}

impl Inliner<'_> {
    fn regex(&mut self, e: &Expr) -> Result<String, String> {
        let out = match e {
            Expr::Lit(s, false) => escape(s),
            Expr::Lit(s, true) => format!("(?i:{})", escape(s)),
            Expr::Range(a, b) => format!("[{}-{}]", escape(&a.to_string()), escape(&b.to_string())),
            Expr::Re(r, flags) => {
                let f: String = flags.chars().filter(|c| "ismx".contains(*c)).collect();
                if f.is_empty() {
                    format!("(?:{r})")
                } else {
                    format!("(?{f}:{r})")
                }
            }
            Expr::Seq(items) => items.iter().map(|i| self.regex(i)).collect::<Result<String, _>>()?,
            Expr::Alt(alts) => {
                let parts = alts.iter().map(|a| self.regex(a)).collect::<Result<Vec<_>, _>>()?;
                format!("(?:{})", parts.join("|"))
            }
            Expr::Repeat(inner, lo, hi) => {
                let r = self.regex(inner)?;
                match (lo, hi) {
                    (0, Some(1)) => format!("(?:{r})?"),
                    (0, None) => format!("(?:{r})*"),
                    (1, None) => format!("(?:{r})+"),
                    (lo, None) => format!("(?:{r}){{{lo},}}"),
                    (lo, Some(hi)) => format!("(?:{r}){{{lo},{hi}}}"),
                }
            }
            Expr::Ref(name) => {
                if let Some(rx) = self.imports.get(name) {
                    return Ok(format!("(?:{rx})"));
                }
                let Some(def) = self.rules.get(name) else { return Err(format!("`{name}` is used but not defined")) };
                if self.stack.contains(name) {
                    return Err(format!(
                        "`{name}` refers to itself, so the grammar is not regular; cortex enforces Lark grammars \
                         without recursion (write repetition with `*`, `+` or `~`)"
                    ));
                }
                self.stack.push(name.clone());
                let r = self.regex(def);
                self.stack.pop();
                format!("(?:{})", r?)
            }
        };
        if out.len() > MAX_REGEX {
            return Err(format!("the grammar grows past {MAX_REGEX} bytes when inlined"));
        }
        Ok(out)
    }
}

/// The regular expression (unanchored) for the language of `src`'s `start` rule.
pub fn to_regex(src: &str) -> Result<String, String> {
    let toks = lex(src)?;
    let mut p = Parser { toks, at: 0 };
    let mut rules = HashMap::new();
    let mut imports = HashMap::new();
    while let Some(t) = p.next() {
        match t {
            Tok::Newline => {}
            Tok::Directive(d) if d == "import" => {
                let Some(Tok::Name(path)) = p.next() else { return Err("`%import` needs a name".into()) };
                let mut names = Vec::new();
                match path.strip_prefix("common.") {
                    Some(one) => names.push((one.to_string(), one.to_string())),
                    None if path == "common" && p.peek() == Some(&Tok::LParen) => {
                        p.at += 1;
                        while let Some(Tok::Name(n)) = p.peek().cloned() {
                            names.push((n.clone(), n));
                            p.at += 1;
                        }
                        if p.next() != Some(Tok::RParen) {
                            return Err("`%import common (…)` is not closed".into());
                        }
                    }
                    None => return Err(format!("`%import {path}`: only Lark's `common` terminals can be imported")),
                }
                if p.peek() == Some(&Tok::Arrow) {
                    p.at += 1;
                    let Some(Tok::Name(alias)) = p.next() else { return Err("`->` needs a name".into()) };
                    if let Some(n) = names.last_mut() {
                        n.1 = alias;
                    }
                }
                for (name, alias) in names {
                    let rx = common(&name).ok_or(format!("`common.{name}` is not a terminal cortex knows"))?;
                    imports.insert(alias, rx);
                }
            }
            Tok::Directive(d) => {
                return Err(format!(
                "`%{d}` is not supported in free-form tool grammars (cortex enforces them as one regular expression)"
            ))
            }
            Tok::Op('?' | '!') | Tok::Name(_) => {
                let name = match t {
                    Tok::Name(n) => n,
                    _ => match p.next() {
                        Some(Tok::Name(n)) => n,
                        _ => return Err("a rule prefix must be followed by its name".into()),
                    },
                };
                // A priority (`name.2:`) changes nothing about the language.
                if let Some(Tok::Num(_)) = p.peek() {
                    p.at += 1;
                }
                if p.next() != Some(Tok::Colon) {
                    return Err(format!("`{name}` must be followed by `:`"));
                }
                let e = p.alternatives()?;
                rules.insert(name.split('.').next().unwrap_or_default().to_string(), e);
            }
            other => return Err(format!("unexpected {other:?} where a rule should start")),
        }
    }
    if !rules.contains_key("start") {
        return Err("the grammar has no `start` rule".into());
    }
    Inliner { rules: &rules, imports: &imports, stack: Vec::new() }.regex(&Expr::Ref("start".into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn matches(src: &str, text: &str) -> bool {
        let rx = regex_lite_anchored(&to_regex(src).unwrap());
        rx.is_match(text)
    }

    fn regex_lite_anchored(rx: &str) -> regex::Regex {
        regex::Regex::new(&format!("^(?:{rx})$")).unwrap()
    }

    /// Codex CLI's `apply_patch` grammar, the case that matters most.
    const APPLY_PATCH: &str = r#"start: begin_patch hunk+ end_patch
begin_patch: "*** Begin Patch" LF
end_patch: "*** End Patch" LF?

hunk: add_hunk | delete_hunk | update_hunk
add_hunk: "*** Add File: " filename LF add_line+
delete_hunk: "*** Delete File: " filename LF
update_hunk: "*** Update File: " filename LF change_move? change?

filename: /(.+)/
add_line: "+" /(.*)/ LF -> line

change_move: "*** Move to: " filename LF
change: (change_context | change_line)+ eof_line?
change_context: ("@@" | "@@ " /(.+)/) LF
change_line: ("+" | "-" | " ") /(.*)/ LF
eof_line: "*** End of File" LF

%import common.LF
"#;

    #[test]
    fn codex_apply_patch_becomes_a_regex_that_accepts_patches_and_nothing_else() {
        let ok = "*** Begin Patch\n*** Add File: a.txt\n+hello\n*** Update File: b.rs\n@@ fn main\n-old\n+new\n*** End Patch\n";
        assert!(matches(APPLY_PATCH, ok));
        assert!(matches(APPLY_PATCH, "*** Begin Patch\n*** Delete File: x\n*** End Patch"));
        assert!(!matches(APPLY_PATCH, "*** Begin Patch\n*** End Patch\n"), "a patch needs a hunk");
        assert!(!matches(APPLY_PATCH, "rm -rf /"));
    }

    #[test]
    fn literals_regexes_ranges_repeats_and_case_flags() {
        let g = "start: greeting \" \" NAME (\",\" NAME)~1..2 [\"!\"]\ngreeting: \"hi\"i | \"hello\"\nNAME: \"a\"..\"c\"+ /[0-9]/*\n";
        assert!(matches(g, "HI a1,b"));
        assert!(matches(g, "hello abc,c,a22!"));
        assert!(!matches(g, "hello a,b,c,a"), "at most two more names");
        assert!(!matches(g, "hey a,b"));
        // A literal's regex characters are literal.
        assert!(matches("start: \"a.b*\"", "a.b*") && !matches("start: \"a.b*\"", "axb"));
    }

    #[test]
    fn what_cannot_be_one_regex_is_refused_with_the_reason() {
        for (src, words) in [
            ("start: \"(\" start \")\" | \"x\"", "refers to itself"),
            ("start: a\na: b\nb: a", "refers to itself"),
            ("start: x", "`x` is used but not defined"),
            ("a: \"x\"", "no `start` rule"),
            ("start: WORD\n%ignore \" \"", "`%ignore`"),
            ("start: \"x", "not closed"),
            ("start: X\n%import common.BANANA -> X", "BANANA"),
        ] {
            let e = to_regex(src).unwrap_err();
            assert!(e.contains(words), "{src}: {e}");
        }
    }
}
