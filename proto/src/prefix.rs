//! The routing key of a prompt's prefix: a chain of hashes over fixed-size chunks of the neutral
//! request's canonical text (system, tools, messages in order). Any gateway computes it without
//! the model's tokenizer, and two requests that share their first `k` chunks share their first
//! `k` hashes, so a router can match a request against the prefixes a neuron holds (agents resend
//! the whole conversation every turn) by comparing integers.

use crate::generate::{GenerateRequest, Prompt};

/// Bytes of canonical text per chunk.
pub const CHUNK_BYTES: usize = 256;
/// Chunks hashed at most (64 KiB of prompt): enough to tell conversations apart well past a
/// long system prompt and tool list, and a bounded cost per request.
pub const MAX_CHUNKS: usize = 256;

/// Separates a message's role from its text, and messages from each other, so that moving text
/// across a message boundary changes the key.
const FIELD: u8 = 0x1f;
const RECORD: u8 = 0x1e;

/// Hashes of the prompt's whole chunks, each covering all the text before it: `hashes[i]`
/// stands for the first `(i + 1) · CHUNK_BYTES` bytes of the canonical text.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PrefixKey {
    pub hashes: Vec<u64>,
}

impl PrefixKey {
    /// The key of `request`'s prompt.
    pub fn of(request: &GenerateRequest) -> Self {
        Self::of_text(&canonical(request))
    }

    /// The key of canonical text already built.
    pub fn of_text(text: &[u8]) -> Self {
        let mut hashes = Vec::with_capacity((text.len() / CHUNK_BYTES).min(MAX_CHUNKS));
        let mut prev = 0u64;
        for chunk in text.chunks_exact(CHUNK_BYTES).take(MAX_CHUNKS) {
            prev = xxhash_rust::xxh3::xxh3_64_with_seed(chunk, prev);
            hashes.push(prev);
        }
        Self { hashes }
    }

    /// How many leading chunks `self` and `other` share.
    pub fn shared(&self, other: &[u64]) -> usize {
        self.hashes.iter().zip(other).take_while(|(a, b)| a == b).count()
    }

    /// Leading chunks of this prompt that a node whose summary is `held` (sorted, see
    /// [`PrefixSummary::hashes`]) has served: the longest recorded prefix of it.
    pub fn matched(&self, held: &[u64]) -> usize {
        (0..self.hashes.len()).rev().find(|&i| held.binary_search(&self.hashes[i]).is_ok()).map_or(0, |i| i + 1)
    }
}

/// The routing key of a session id: a hash no prefix chunk has (its seed differs).
pub fn session_key(session: &str) -> u64 {
    xxhash_rust::xxh3::xxh3_64_with_seed(session.as_bytes(), SESSION_SEED)
}

const SESSION_SEED: u64 = 0x5e55_1011;

/// Which of a prompt's `n` chunk hashes a summary records: the first [`DENSE`], then every
/// [`STRIDE`]th, and the last. A match is then known to within `STRIDE` chunks past the dense
/// ones, and a long prompt costs a summary `DENSE + n / STRIDE` entries instead of `n`.
fn recorded(i: usize, n: usize) -> bool {
    i < DENSE || (i + 1).is_multiple_of(STRIDE) || i + 1 == n
}

const DENSE: usize = 8;
const STRIDE: usize = 4;

/// The bounded summary a neuron publishes of the prefixes it served per model: chunk hashes of
/// recent prompts (see [`PrefixKey::matched`]) and session keys, the least recently used
/// dropped past [`PrefixSummary::CAPACITY`]. Time is an argument (`now`, any monotonic count).
#[derive(Debug, Clone, Default)]
pub struct PrefixSummary {
    seen: std::collections::HashMap<u64, u64>,
}

impl PrefixSummary {
    /// Entries kept: 8 KiB of hashes a model in a placement document.
    pub const CAPACITY: usize = 1024;

    /// Records a prompt served (and the session it belongs to) at `now`.
    pub fn record(&mut self, key: &PrefixKey, session: Option<u64>, now: u64) {
        let n = key.hashes.len();
        for (i, h) in key.hashes.iter().enumerate() {
            if recorded(i, n) {
                self.seen.insert(*h, now);
            }
        }
        if let Some(s) = session {
            self.seen.insert(s, now);
        }
        // Trimmed in bulk, a quarter over capacity, so that a trim's sort is rare.
        if self.seen.len() > Self::CAPACITY + Self::CAPACITY / 4 {
            let mut by_age: Vec<(u64, u64)> = self.seen.iter().map(|(h, t)| (*t, *h)).collect();
            by_age.sort_unstable();
            for (_, h) in &by_age[..by_age.len() - Self::CAPACITY] {
                self.seen.remove(h);
            }
        }
    }

    /// The summary as published: sorted hashes, at most [`PrefixSummary::CAPACITY`] (the most
    /// recent).
    pub fn hashes(&self) -> Vec<u64> {
        let mut by_age: Vec<(u64, u64)> = self.seen.iter().map(|(h, t)| (*t, *h)).collect();
        by_age.sort_unstable_by(|a, b| b.cmp(a));
        let mut out: Vec<u64> = by_age.into_iter().take(Self::CAPACITY).map(|(_, h)| h).collect();
        out.sort_unstable();
        out
    }
}

/// The text a prompt's key is computed over: the leading system messages, the tools (as
/// JSON), then the other messages; each message as role, a field separator, its text, its tool
/// calls or the call it answers, and a record separator. A raw completion prompt is itself.
pub fn canonical(request: &GenerateRequest) -> Vec<u8> {
    let messages = match &request.prompt {
        Prompt::Text(t) => return t.as_bytes().to_vec(),
        Prompt::Chat(messages) => messages,
    };
    let mut out = Vec::with_capacity(messages.iter().map(|m| m.content.len() + 12).sum());
    let push = |out: &mut Vec<u8>, m: &crate::generate::ChatMessage| {
        out.extend_from_slice(m.role.as_str().as_bytes());
        out.push(FIELD);
        out.extend_from_slice(m.content.as_bytes());
        for call in &m.tool_calls {
            out.push(FIELD);
            out.extend_from_slice(call.name.as_bytes());
            out.push(FIELD);
            out.extend_from_slice(call.arguments.as_bytes());
        }
        if let Some(id) = &m.tool_call_id {
            out.push(FIELD);
            out.extend_from_slice(id.as_bytes());
        }
        out.push(RECORD);
    };
    let system = messages.iter().take_while(|m| m.role == crate::generate::Role::System).count();
    messages[..system].iter().for_each(|m| push(&mut out, m));
    if !request.tools.is_empty() {
        out.extend_from_slice(&serde_json::to_vec(&request.tools).unwrap_or_default());
        out.push(RECORD);
    }
    messages[system..].iter().for_each(|m| push(&mut out, m));
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::generate::{ChatMessage, Role, SamplingParams};

    fn chat(messages: &[(Role, &str)]) -> GenerateRequest {
        let messages = messages.iter().map(|(role, c)| ChatMessage::text(*role, c.to_string())).collect();
        GenerateRequest::new("r", "m", Prompt::Chat(messages), SamplingParams::default())
    }

    #[test]
    fn a_conversation_and_its_next_turn_share_their_leading_chunks() {
        let system = "You are a careful assistant. ".repeat(40);
        let turn1 = chat(&[(Role::System, &system), (Role::User, "What is the capital of France?")]);
        let turn2 = chat(&[
            (Role::System, &system),
            (Role::User, "What is the capital of France?"),
            (Role::Assistant, "Paris."),
            (Role::User, "And of Germany?"),
        ]);
        let (k1, k2) = (PrefixKey::of(&turn1), PrefixKey::of(&turn2));
        assert_eq!(k1.hashes.len(), canonical(&turn1).len() / CHUNK_BYTES);
        assert!(k2.hashes.len() >= k1.hashes.len());
        assert_eq!(k2.shared(&k1.hashes), k1.hashes.len());
        // Another system prompt shares nothing; the same text in another role differs too.
        let other = chat(&[(Role::System, &"You are terse. ".repeat(80)), (Role::User, "hi")]);
        assert_eq!(PrefixKey::of(&other).shared(&k1.hashes), 0);
        let as_user = chat(&[(Role::User, &system), (Role::User, "What is the capital of France?")]);
        assert_eq!(PrefixKey::of(&as_user).shared(&k1.hashes), 0);
    }

    #[test]
    fn a_summary_matches_the_prefixes_it_recorded_and_stays_bounded() {
        let text = |seed: u8, chunks: usize| -> Vec<u8> {
            (0..chunks * CHUNK_BYTES).map(|i| seed.wrapping_add((i / CHUNK_BYTES) as u8)).collect()
        };
        let turn1 = PrefixKey::of_text(&text(1, 30));
        let mut s = PrefixSummary::default();
        assert_eq!(turn1.matched(&s.hashes()), 0);
        s.record(&turn1, None, 1);
        assert_eq!(turn1.matched(&s.hashes()), 30, "its own prompt, whole");
        // The next turn: the first 30 chunks, then more.
        let mut t2 = text(1, 30);
        t2.extend(text(99, 10));
        assert_eq!(PrefixKey::of_text(&t2).matched(&s.hashes()), 30);
        // A prompt that parts after 13 chunks matches to the recorded chunk at or before it.
        let mut t3 = text(1, 13);
        t3.extend(text(50, 10));
        assert_eq!(PrefixKey::of_text(&t3).matched(&s.hashes()), 12);
        assert_eq!(PrefixKey::of_text(&text(2, 30)).matched(&s.hashes()), 0, "another prompt");
        // Sessions are entries too; the oldest go past capacity.
        s.record(&PrefixKey::default(), Some(session_key("abc")), 2);
        assert!(s.hashes().binary_search(&session_key("abc")).is_ok());
        for i in 0..2000u64 {
            s.record(&PrefixKey { hashes: vec![i << 20] }, None, 10 + i);
            assert!(s.seen.len() <= PrefixSummary::CAPACITY + PrefixSummary::CAPACITY / 4);
        }
        assert_eq!(s.hashes().len(), PrefixSummary::CAPACITY);
        assert_eq!(turn1.matched(&s.hashes()), 0, "the oldest are gone");
    }

    #[test]
    fn keys_are_bounded_and_stable() {
        let text = Prompt::Text("x".repeat(CHUNK_BYTES * (MAX_CHUNKS + 10)));
        let long = GenerateRequest::new("a", "m", text, SamplingParams::default());
        let key = PrefixKey::of(&long);
        assert_eq!(key.hashes.len(), MAX_CHUNKS);
        // The same text gives the same key on every gateway and every version (no per-process
        // seed, no hash change): a fleet of mixed versions must agree on it.
        assert_eq!(PrefixKey::of_text(&[7u8; CHUNK_BYTES]).hashes, vec![0xead3_3d6a_07ad_9544]);
        assert_eq!(PrefixKey::of_text(b"").hashes, Vec::<u64>::new());
        let a = PrefixKey::of_text(&[7u8; CHUNK_BYTES * 2]);
        assert_eq!(a, PrefixKey::of_text(&[7u8; CHUNK_BYTES * 2]));
        assert_ne!(a.hashes[0], a.hashes[1], "each hash covers all the text before it");
    }
}
