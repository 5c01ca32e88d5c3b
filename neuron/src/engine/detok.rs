//! Streaming detokenisation and stop strings. Text is released only when it is complete UTF-8
//! and cannot be the start of a stop string, so a client never sees half a character or a
//! partial stop sequence.

use super::tokenizer::TextTokenizer;
use super::EngineError;

/// Turns generated token ids into text pieces as they arrive.
pub struct TokenStream {
    tokens: Vec<u32>,
    /// Window start: the decoded text of `tokens[prev..current]` has been released already.
    prev: usize,
    current: usize,
}

impl TokenStream {
    pub fn new() -> Self {
        Self { tokens: Vec::new(), prev: 0, current: 0 }
    }

    /// Adds a token; returns the text it completes, if any.
    pub fn push(&mut self, tok: &TextTokenizer, id: u32) -> Result<Option<String>, EngineError> {
        let before = tok.decode(&self.tokens[self.prev..self.current])?;
        self.tokens.push(id);
        let text = tok.decode(&self.tokens[self.prev..])?;
        // U+FFFD at the end means the last token holds only part of a multi-byte character.
        if text.len() > before.len() && !text.ends_with('\u{FFFD}') && text.is_char_boundary(before.len()) {
            let piece = text[before.len()..].to_string();
            self.prev = self.current;
            self.current = self.tokens.len();
            Ok(Some(piece))
        } else {
            Ok(None)
        }
    }

    /// Whatever is left when generation ends (a dangling partial character decodes lossily).
    pub fn finish(&mut self, tok: &TextTokenizer) -> Result<String, EngineError> {
        let before = tok.decode(&self.tokens[self.prev..self.current])?;
        let text = tok.decode(&self.tokens[self.prev..])?;
        self.prev = self.tokens.len();
        self.current = self.tokens.len();
        Ok(text.get(before.len()..).unwrap_or_default().to_string())
    }
}

impl Default for TokenStream {
    fn default() -> Self {
        Self::new()
    }
}

/// Holds back text that might be the beginning of a stop string.
pub struct StopMatcher {
    stops: Vec<String>,
    pending: String,
}

/// What to do with a piece of text.
#[derive(Debug, PartialEq, Eq)]
pub struct StopCheck {
    /// Text safe to send now.
    pub emit: String,
    /// The stop string that matched, if any: generation ends and nothing after it is sent.
    pub stopped: Option<String>,
}

impl StopMatcher {
    pub fn new(stops: Vec<String>) -> Self {
        Self { stops: stops.into_iter().filter(|s| !s.is_empty()).collect(), pending: String::new() }
    }

    pub fn push(&mut self, text: &str) -> StopCheck {
        self.pending.push_str(text);
        // The earliest match wins, as the text reads.
        let hit =
            self.stops.iter().filter_map(|s| self.pending.find(s.as_str()).map(|at| (at, s))).min_by_key(|(at, _)| *at);
        if let Some((at, stop)) = hit {
            let emit = self.pending[..at].to_string();
            let stopped = Some(stop.clone());
            self.pending.clear();
            return StopCheck { emit, stopped };
        }
        // Keep the longest tail that is a proper prefix of some stop string.
        let mut keep = 0;
        for stop in &self.stops {
            for (end, _) in stop.char_indices().skip(1) {
                if end > keep && self.pending.ends_with(&stop[..end]) {
                    keep = end;
                }
            }
        }
        let cut = self.pending.len() - keep;
        let emit = self.pending[..cut].to_string();
        self.pending.drain(..cut);
        StopCheck { emit, stopped: None }
    }

    /// Releases held-back text when generation ends for another reason.
    pub fn flush(&mut self) -> String {
        std::mem::take(&mut self.pending)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stop_split_across_pieces_is_never_emitted() {
        let mut m = StopMatcher::new(vec!["END".into()]);
        assert_eq!(m.push("hello E").emit, "hello ");
        assert_eq!(m.push("N").emit, "");
        let c = m.push("D and more");
        assert_eq!(c.emit, "");
        assert_eq!(c.stopped.as_deref(), Some("END"));
    }

    #[test]
    fn false_start_is_released() {
        let mut m = StopMatcher::new(vec!["END".into()]);
        assert_eq!(m.push("E").emit, "");
        assert_eq!(m.push("x").emit, "Ex");
        assert_eq!(m.push("EN").emit, "");
        assert_eq!(m.flush(), "EN");
    }

    #[test]
    fn earliest_of_several_stops_wins() {
        let mut m = StopMatcher::new(vec!["b".into(), "a".into()]);
        let c = m.push("xxab");
        assert_eq!(c.emit, "xx");
        assert_eq!(c.stopped.as_deref(), Some("a"));
    }

    #[test]
    fn multibyte_stop_prefixes_keep_char_boundaries() {
        let mut m = StopMatcher::new(vec!["été!".into()]);
        assert_eq!(m.push("un é").emit, "un ");
        assert_eq!(m.push("t").emit, "");
        assert_eq!(m.push("x").emit, "étx");
    }
}
