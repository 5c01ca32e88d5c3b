//! One choice's output on its way to the client: generated text through the stop strings, or,
//! when the request offers tools, through the model's tool-call format into text, call starts
//! and argument fragments; log-probabilities of tokens ride on the text they complete.
//!
//! Text goes out at most once an `interval` (the first piece at once): tokens that come faster
//! share an event. Each event wakes the HTTP task and the client, and where they share the
//! cores with the decode (a 2-core host) those wake-ups cost a fast model ~0.5 ms a token
//! (BENCHMARKS.md, "The stream's hand-off"); hosted APIs send several tokens a chunk too.

use std::time::{Duration, Instant};

use cortex_proto::generate::{Event, FinishReason, TokenLogprob, TopLogprob};
use tokio::sync::mpsc::UnboundedSender;

use super::detok::StopMatcher;
use super::grammar::Vocab;
use super::toolcall::{Format, Parser, Piece};

pub struct Output {
    choice: u32,
    stops: StopMatcher,
    calls: Option<Box<dyn Parser>>,
    made: u32,
    logprobs: Vec<TokenLogprob>,
    /// Text not sent yet, the log-probabilities it covers (the first so many), and when text
    /// last went out.
    pending: String,
    covered: usize,
    sent: Option<Instant>,
    interval: Duration,
}

/// A fresh tool-call id, as OpenAI spells them (the Anthropic dialect rewrites the prefix).
fn call_id() -> String {
    format!("call_{:024x}", rand::random::<u128>() >> 32)
}

impl Output {
    pub fn new(choice: u32, stops: StopMatcher, calls: Option<Format>, interval: Duration) -> Self {
        Self {
            choice,
            stops,
            calls: calls.map(Format::parser),
            made: 0,
            logprobs: Vec::new(),
            pending: String::new(),
            covered: 0,
            sent: None,
            interval,
        }
    }

    /// Whether the answer has made tool calls.
    pub fn made_calls(&self) -> bool {
        self.made > 0
    }

    /// Holds a token's log-probability until the text it belongs to goes out.
    pub fn logprob(&mut self, lp: TokenLogprob) {
        self.logprobs.push(lp);
    }

    /// Sends what `text` completes; `Some(stop)` when a stop string ended the answer.
    pub fn push(&mut self, text: &str, events: &UnboundedSender<Event>) -> Option<String> {
        if self.calls.is_some() {
            self.parse(text, false, events);
            return None;
        }
        let check = self.stops.push(text);
        self.text(check.emit, events);
        check.stopped
    }

    /// Sends what is held back at the end of the answer, and the reason it ended: tool calls
    /// when it made any and was not cut short.
    pub fn finish(&mut self, tail: &str, finish: FinishReason, events: &UnboundedSender<Event>) -> FinishReason {
        if matches!(finish, FinishReason::StopSequence(_)) {
            self.flush(events);
            return finish;
        }
        if self.calls.is_some() {
            self.parse(tail, true, events);
        } else {
            let mut text = self.stops.push(tail).emit;
            text.push_str(&self.stops.flush());
            self.text(text, events);
        }
        self.flush(events);
        match finish {
            FinishReason::Stop if self.made_calls() => FinishReason::ToolCalls,
            other => other,
        }
    }

    fn text(&mut self, text: String, events: &UnboundedSender<Event>) {
        if text.is_empty() {
            return;
        }
        self.pending.push_str(&text);
        self.covered = self.logprobs.len();
        if self.sent.is_none_or(|t| t.elapsed() >= self.interval) {
            self.flush(events);
        }
    }

    /// Sends the text held back, with the log-probabilities of its tokens.
    pub fn flush(&mut self, events: &UnboundedSender<Event>) {
        if self.pending.is_empty() {
            return;
        }
        let text = std::mem::take(&mut self.pending);
        let logprobs = self.logprobs.drain(..std::mem::take(&mut self.covered)).collect();
        self.sent = Some(Instant::now());
        let _ = events.send(Event::Text { choice: self.choice, text, logprobs });
    }

    fn parse(&mut self, text: &str, last: bool, events: &UnboundedSender<Event>) {
        let Some(parser) = self.calls.as_mut() else { return };
        let mut pieces = parser.push(text);
        if last {
            pieces = pieces.and_then(|mut p| {
                p.extend(parser.finish()?);
                Ok(p)
            });
        }
        match pieces {
            Ok(pieces) => {
                for p in pieces {
                    match p {
                        Piece::Text(t) => self.text(t, events),
                        Piece::Call(name) => {
                            self.flush(events);
                            // Log-probabilities cover answer text only, as OpenAI's do.
                            self.logprobs.clear();
                            let _ = events.send(Event::ToolCall {
                                choice: self.choice,
                                index: self.made,
                                id: call_id(),
                                name,
                            });
                            self.made += 1;
                        }
                        Piece::Args(fragment) => {
                            self.flush(events);
                            self.logprobs.clear();
                            let index = self.made.saturating_sub(1);
                            let _ = events.send(Event::ToolArgs { choice: self.choice, index, fragment });
                        }
                    }
                }
            }
            Err(e) => {
                // Only unconstrained text can fail to parse (the grammar holds calls to their
                // format); what is left goes out as text.
                tracing::debug!(error = %e, "the answer is not in the model's tool-call format; passing it on as text");
                self.calls = None;
                self.text(text.to_string(), events);
            }
        }
    }
}

/// The log-probability of `token` under `logits` (log-softmax of the raw logits), with the `top`
/// most likely tokens.
pub fn token_logprob(logits: &[f32], token: u32, top: u32, vocab: &Vocab) -> TokenLogprob {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let sum: f64 = logits.iter().map(|&l| f64::from(l - max).exp()).sum();
    let lse = max + sum.ln() as f32;
    let entry = |id: u32| {
        let bytes = vocab.token_bytes(id).to_vec();
        (
            String::from_utf8_lossy(&bytes).into_owned(),
            bytes,
            logits.get(id as usize).map_or(f32::NEG_INFINITY, |l| l - lse),
        )
    };
    let mut best: Vec<(u32, f32)> = Vec::with_capacity(top as usize + 1);
    if top > 0 {
        for (i, &l) in logits.iter().enumerate() {
            if best.len() == top as usize && best.last().is_some_and(|&(_, m)| l <= m) {
                continue;
            }
            let at = best.partition_point(|&(_, b)| b >= l);
            best.insert(at, (i as u32, l));
            best.truncate(top as usize);
        }
    }
    let (token_text, bytes, logprob) = entry(token);
    let top = best
        .into_iter()
        .map(|(id, _)| {
            let (token, bytes, logprob) = entry(id);
            TopLogprob { token, bytes, logprob }
        })
        .collect();
    TokenLogprob { token: token_text, bytes, logprob, top }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn logprobs_are_the_log_softmax_and_the_top_is_sorted() {
        let vocab = Vocab::new((0..4u8).map(|b| (vec![b'a' + b], false)).collect(), vec![], None);
        let logits = [1.0f32, 3.0, 2.0, 0.5];
        let lp = token_logprob(&logits, 2, 2, &vocab);
        let z: f32 = logits.iter().map(|l| l.exp()).sum();
        assert!((lp.logprob - (2f32.exp() / z).ln()).abs() < 1e-5);
        assert_eq!((lp.token.as_str(), lp.bytes.as_slice()), ("c", &b"c"[..]));
        let top: Vec<&str> = lp.top.iter().map(|t| t.token.as_str()).collect();
        assert_eq!(top, ["b", "c"]);
        assert!((lp.top[0].logprob - (3f32.exp() / z).ln()).abs() < 1e-5);
        assert!(token_logprob(&logits, 0, 0, &vocab).top.is_empty());
    }

    fn drain(rx: &mut tokio::sync::mpsc::UnboundedReceiver<Event>) -> Vec<Event> {
        std::iter::from_fn(|| rx.try_recv().ok()).collect()
    }

    fn lp(token: &str) -> TokenLogprob {
        TokenLogprob { token: token.into(), bytes: token.as_bytes().to_vec(), logprob: -1.0, top: vec![] }
    }

    /// Within the interval text waits for the next event, the first piece excepted; nothing is
    /// lost at the end, a stop string's end included, and each token's log-probability rides
    /// with its text.
    #[test]
    fn text_within_the_interval_shares_an_event_and_the_end_flushes_it() {
        let texts = |events: &[Event]| -> Vec<(String, usize)> {
            events
                .iter()
                .map(|e| match e {
                    Event::Text { text, logprobs, .. } => (text.clone(), logprobs.len()),
                    other => panic!("{other:?}"),
                })
                .collect()
        };
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let mut out = Output::new(0, StopMatcher::new(vec![]), None, Duration::from_secs(3600));
        for t in ["The", " capital", " is"] {
            out.logprob(lp(t));
            out.push(t, &tx);
        }
        assert_eq!(texts(&drain(&mut rx)), [("The".to_string(), 1)], "only the first piece goes out at once");
        out.flush(&tx);
        out.logprob(lp(" Paris"));
        out.push(" Paris", &tx);
        assert_eq!(out.finish("", FinishReason::Length, &tx), FinishReason::Length);
        assert_eq!(texts(&drain(&mut rx)), [(" capital is".to_string(), 2), (" Paris".to_string(), 1)]);

        let mut out = Output::new(0, StopMatcher::new(vec!["END".into()]), None, Duration::from_secs(3600));
        for t in ["a", "b", "cEND"] {
            if let Some(stop) = out.push(t, &tx) {
                out.finish("", FinishReason::StopSequence(stop), &tx);
            }
        }
        let all: String = texts(&drain(&mut rx)).into_iter().map(|(t, _)| t).collect();
        assert_eq!(all, "abc");

        // No interval: every piece alone.
        let mut out = Output::new(0, StopMatcher::new(vec![]), None, Duration::ZERO);
        ["x", "y", "z"].iter().for_each(|t| _ = out.push(t, &tx));
        assert_eq!(drain(&mut rx).len(), 3);
    }

    /// Held text goes out before a tool call starts, so the client sees the events in order.
    #[test]
    fn held_text_goes_out_before_a_call() {
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let mut out = Output::new(0, StopMatcher::new(vec![]), Some(Format::Hermes), Duration::from_secs(3600));
        out.push("Let me look.", &tx);
        out.push(" Now:", &tx);
        out.push("<tool_call>\n{\"name\": \"f\", \"arguments\": {}}\n</tool_call>", &tx);
        out.finish("", FinishReason::Stop, &tx);
        let kinds: Vec<String> = drain(&mut rx)
            .iter()
            .map(|e| match e {
                Event::Text { text, .. } => format!("text:{text}"),
                Event::ToolCall { name, .. } => format!("call:{name}"),
                Event::ToolArgs { .. } => "args".into(),
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(kinds.first().map(String::as_str), Some("text:Let me look."), "{kinds:?}");
        let call = kinds.iter().position(|k| k == "call:f").expect("a call");
        assert!(kinds[1..call].concat().contains(" Now:"), "{kinds:?}");
    }

    #[test]
    fn calls_become_events_with_ids_and_the_finish_says_so() {
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let mut out = Output::new(1, StopMatcher::new(vec![]), Some(Format::Generic), Duration::ZERO);
        out.push(r#"{"tool_calls": [{"name": "f", "argu"#, &tx);
        out.push(r#"ments": {"a": 1}}]}"#, &tx);
        assert_eq!(out.finish("", FinishReason::Stop, &tx), FinishReason::ToolCalls);
        drop(tx);
        let mut events = Vec::new();
        while let Ok(e) = rx.try_recv() {
            events.push(e);
        }
        match &events[0] {
            Event::ToolCall { choice: 1, index: 0, id, name } => assert!(id.starts_with("call_") && name == "f"),
            other => panic!("{other:?}"),
        }
        let args: String = events[1..]
            .iter()
            .map(|e| match e {
                Event::ToolArgs { fragment, .. } => fragment.as_str(),
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(args, r#"{"a": 1}"#);
    }
}
