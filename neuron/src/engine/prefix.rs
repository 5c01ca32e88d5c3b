//! The prefix cache of one loaded model: full KV blocks of earlier sequences, indexed by a hash
//! chain over their token ids (block `i`'s key covers every token before it too, so a key names
//! a whole prefix), shared with new sequences that begin alike and evicted least recently used
//! under a byte budget.
//!
//! - A new sequence starts from the longest chain of cached blocks its prompt begins with and
//!   prefills only the rest; at least its last prompt token is always computed, since its
//!   logits give the first new token.
//! - A sequence's full blocks go into the cache when its prompt is in and again when it ends
//!   (the answer's blocks too: an agent's next turn resends it).
//! - Host blocks are shared by reference ([`SharedBlock::holders`] counts the cache and the
//!   sequences); device blocks are copies. Only leaves are evicted (a block whose extension is
//!   cached stays), so every cached chain is whole from its first block.
//! - Sliding-window layers (Gemma 3) store every position like global layers (attention only
//!   masks what lies outside the window), so one block serves both kinds and a prefix is shared
//!   whole; keeping only a window's worth for those layers would save memory but make a block
//!   useless to a prompt that diverges before its window.

use std::collections::HashMap;
use std::hash::{Hash, Hasher};

use super::kv::{KvCache, SharedBlock, BLOCK_TOKENS};

/// What a prefix cache holds and has done, for metrics and status.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PrefixStats {
    pub blocks: usize,
    pub bytes: usize,
    /// Of the blocks, those running sequences share (their reference counts above the cache's
    /// own): 0 once every sequence has ended.
    pub in_use: usize,
    /// Prompt tokens taken from the cache.
    pub hit_tokens: u64,
    /// Prompt tokens computed.
    pub miss_tokens: u64,
    pub evictions: u64,
}

struct Entry {
    parent: u64,
    tokens: [u32; BLOCK_TOKENS],
    block: SharedBlock,
    last_used: u64,
    children: usize,
}

/// See the module's documentation.
pub struct PrefixCache {
    budget: usize,
    clock: u64,
    entries: HashMap<u64, Entry>,
    stats: PrefixStats,
}

/// The chain's key before any block.
const ROOT: u64 = 0;

fn key(parent: u64, tokens: &[u32]) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    parent.hash(&mut h);
    tokens.hash(&mut h);
    // 0 is the root's.
    h.finish().max(1)
}

/// A sequence's start from the cache.
pub struct Restored {
    pub cache: KvCache,
    /// Prompt positions the cache holds (the sequence computes from there).
    pub tokens: usize,
}

impl PrefixCache {
    /// A cache that holds at most `budget` bytes of blocks (0: it holds none).
    pub fn new(budget: usize) -> Self {
        Self { budget, clock: 0, entries: HashMap::new(), stats: PrefixStats::default() }
    }

    /// [`Self::stats`] less `in_use` (left 0), which costs a pass over every block.
    pub fn counters(&self) -> PrefixStats {
        self.stats
    }

    pub fn stats(&self) -> PrefixStats {
        let in_use = self.entries.values().filter(|e| e.block.holders() > 1).count();
        PrefixStats { in_use, ..self.stats }
    }

    /// A cache for a sequence with `prompt`: the longest cached prefix of it, less at least its
    /// last token. Counts the prompt's hit and miss tokens.
    pub fn restore(&mut self, prompt: &[u32]) -> Restored {
        self.clock += 1;
        let mut blocks = Vec::new();
        let mut parent = ROOT;
        for chunk in prompt.chunks_exact(BLOCK_TOKENS) {
            let k = key(parent, chunk);
            match self.entries.get_mut(&k) {
                Some(e) if e.parent == parent && e.tokens == chunk => {
                    e.last_used = self.clock;
                    blocks.push(e.block.clone());
                    parent = k;
                }
                _ => break,
            }
        }
        let tokens = (blocks.len() * BLOCK_TOKENS).min(prompt.len().saturating_sub(1));
        blocks.truncate(tokens.div_ceil(BLOCK_TOKENS));
        let restored = match KvCache::from_blocks(&blocks, tokens) {
            Ok(cache) => Restored { cache, tokens },
            Err(e) => {
                tracing::warn!(error = %e, "prefix cache blocks not usable; computing the whole prompt");
                Restored { cache: KvCache::default(), tokens: 0 }
            }
        };
        self.stats.hit_tokens += restored.tokens as u64;
        self.stats.miss_tokens += (prompt.len() - restored.tokens) as u64;
        restored
    }

    /// Adds the full blocks of `cache`, whose positions hold `tokens` (at least the cache's
    /// length of them), then evicts down to the budget. Returns the tokens of blocks it added.
    pub fn insert(&mut self, tokens: &[u32], cache: &KvCache) -> usize {
        if self.budget == 0 {
            return 0;
        }
        self.clock += 1;
        let full = cache.len().min(tokens.len()) / BLOCK_TOKENS;
        let mut parent = ROOT;
        let mut added = 0;
        for (b, chunk) in tokens.chunks_exact(BLOCK_TOKENS).take(full).enumerate() {
            let k = key(parent, chunk);
            match self.entries.get_mut(&k) {
                Some(e) if e.parent == parent && e.tokens == chunk => e.last_used = self.clock,
                // A hash collision with another prefix: keep the one held.
                Some(_) => break,
                None => {
                    let Ok(block) = cache.share_block(b) else { break };
                    let mut owned = [0; BLOCK_TOKENS];
                    owned.copy_from_slice(chunk);
                    self.stats.bytes += block.bytes();
                    self.stats.blocks += 1;
                    self.entries.insert(k, Entry { parent, tokens: owned, block, last_used: self.clock, children: 0 });
                    if let Some(p) = self.entries.get_mut(&parent) {
                        p.children += 1;
                    }
                    added += BLOCK_TOKENS;
                }
            }
            parent = k;
        }
        self.evict_to(self.budget);
        added
    }

    /// Evicts least recently used leaves until the blocks take at most `bytes`.
    fn evict_to(&mut self, bytes: usize) {
        while self.stats.bytes > bytes {
            let Some((&k, _)) = self.entries.iter().filter(|(_, e)| e.children == 0).min_by_key(|(_, e)| e.last_used)
            else {
                break;
            };
            let Some(e) = self.entries.remove(&k) else { break };
            if let Some(p) = self.entries.get_mut(&e.parent) {
                p.children -= 1;
            }
            self.stats.bytes -= e.block.bytes();
            self.stats.blocks -= 1;
            self.stats.evictions += 1;
        }
    }

    /// Drops every block.
    #[cfg(test)]
    pub fn clear(&mut self) {
        self.evict_to(0);
    }
}

#[cfg(test)]
mod tests;
