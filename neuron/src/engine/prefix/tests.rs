use super::*;

const LAYERS: usize = 2;
const WIDTH: usize = 4;

/// A cache of `tokens`, each row's values its token id, as a decoder would have written it.
fn written(tokens: &[u32]) -> KvCache {
    let mut c = KvCache::default();
    c.reserve_host(LAYERS, WIDTH, tokens.len()).unwrap();
    let rows: Vec<f32> = tokens.iter().flat_map(|&t| [t as f32; WIDTH]).collect();
    for l in 0..LAYERS {
        c.write_host(l, &rows, &rows).unwrap();
    }
    c.advance(tokens.len());
    c
}

/// Every restored row holds its token's value.
fn rows_match(c: &KvCache, tokens: &[u32]) {
    for l in 0..LAYERS {
        let (k, _) = c.host_rows(l, c.len()).unwrap();
        for (j, &t) in tokens[..c.len()].iter().enumerate() {
            assert_eq!(k.row(j, 0, WIDTH), [t as f32; WIDTH], "row {j}");
        }
    }
}

fn block_bytes() -> usize {
    LAYERS * 2 * BLOCK_TOKENS * WIDTH * 4
}

#[test]
fn a_prompt_restores_the_longest_cached_prefix_and_computes_at_least_its_last_token() {
    let mut p = PrefixCache::new(1 << 20);
    let a: Vec<u32> = (0..50).collect();
    assert_eq!(p.restore(&a).tokens, 0, "an empty cache");
    assert_eq!(p.insert(&a, &written(&a)), 3 * BLOCK_TOKENS, "three full blocks of 50 tokens");
    // The same prompt: its three blocks back, the last two tokens computed.
    let r = p.restore(&a);
    assert_eq!(r.tokens, 48);
    rows_match(&r.cache, &a);
    // A prompt that parts from it in block 2 gets blocks 0 and 1.
    let mut b = a.clone();
    b[40] = 999;
    assert_eq!(p.restore(&b).tokens, 32);
    // One that is exactly the cached blocks still computes its last token.
    let exact = p.restore(&a[..48]);
    assert_eq!((exact.tokens, exact.cache.len()), (47, 47));
    // Another first token shares nothing.
    let mut c = a.clone();
    c[0] = 7;
    assert_eq!(p.restore(&c).tokens, 0);
    assert_eq!(p.stats().in_use, 3, "the restored caches share the blocks");
    drop((r, exact));
    let s = p.stats();
    assert_eq!((s.blocks, s.bytes, s.in_use), (3, 3 * block_bytes(), 0));
    assert_eq!(s.hit_tokens, 48 + 32 + 47);
    assert_eq!(s.miss_tokens, 50 + 2 + 18 + 1 + 50);
}

#[test]
fn sequences_share_blocks_until_they_end_and_write_their_own_copies() {
    let mut p = PrefixCache::new(1 << 20);
    let a: Vec<u32> = (0..40).collect();
    p.insert(&a, &written(&a));
    assert_eq!(p.stats().in_use, 0, "the writer's cache is gone");
    let mut r = p.restore(&a);
    assert_eq!(p.stats().in_use, 2, "a sequence holds the two blocks");
    // The sequence rewinds into block 1 and writes other values: its copy, not the cache's.
    r.cache.truncate(20).unwrap();
    r.cache.reserve_host(LAYERS, WIDTH, 1).unwrap();
    for l in 0..LAYERS {
        r.cache.write_host(l, &[-1.0; WIDTH], &[-1.0; WIDTH]).unwrap();
    }
    r.cache.advance(1);
    rows_match(&p.restore(&a).cache, &a);
    drop(r);
    assert_eq!(p.stats().in_use, 0, "refcounts back to the cache's own");
    p.clear();
    assert_eq!(p.stats().blocks, 0);
}

#[test]
fn the_budget_holds_and_evicts_the_least_recently_used_leaves() {
    let mut p = PrefixCache::new(4 * block_bytes());
    let a: Vec<u32> = (0..64).collect();
    let b: Vec<u32> = (100..164).collect();
    p.insert(&a, &written(&a));
    assert_eq!(p.stats().blocks, 4);
    // b's four blocks push out a's, leaves first (a chain is never cut in its middle).
    p.insert(&b[..32], &written(&b[..32]));
    assert_eq!(p.stats().blocks, 4);
    assert_eq!(p.stats().evictions, 2);
    assert_eq!(p.restore(&a).tokens, 32, "a keeps its first two blocks");
    assert_eq!(p.restore(&b).tokens, 32);
    // a was used last: b's blocks go first now.
    p.insert(&a, &written(&a));
    assert!(p.stats().bytes <= 4 * block_bytes());
    assert_eq!(p.restore(&a).tokens, 63);
    assert_eq!(p.restore(&b).tokens, 0);
    // A zero budget holds nothing.
    let mut none = PrefixCache::new(0);
    assert_eq!(none.insert(&a, &written(&a)), 0);
    assert_eq!(none.restore(&a).tokens, 0);
}
