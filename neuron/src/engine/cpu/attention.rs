//! Causal grouped-query attention on the CPU: each new row of a step against its own
//! sequence's cached keys and values, read through the KV cache's block table.

use candle_core::Result;

use super::ops::{resize, softmax};
use crate::engine::kv::{prefetch, LayerRows, L1};
use crate::engine::spec::ArchSpec;

/// What one row of a batched step attends to: its sequence's cached keys and values, up to (not
/// including) position `end`.
#[derive(Clone, Copy)]
pub(super) struct Seen<'a> {
    pub(super) kc: &'a LayerRows<'a>,
    pub(super) vc: &'a LayerRows<'a>,
    pub(super) end: usize,
}

/// The attention shape of a layer.
pub(super) struct Heads {
    pub(super) n_head: usize,
    pub(super) n_kv_head: usize,
    pub(super) head_dim: usize,
    scale: f32,
    /// Sliding-window layers see only this many most recent positions (their own included).
    window: Option<usize>,
}

impl Heads {
    /// The shape of `spec`'s layers with `window`, scaled by 1/√head_dim (Gemma 3's
    /// `query_pre_attn_scalar` is its head size too).
    pub(super) fn new(spec: &ArchSpec, window: Option<usize>) -> Result<Self> {
        spec.check_heads().map_err(candle_core::Error::msg)?;
        let (n_head, n_kv_head, head_dim) = (spec.heads, spec.kv_heads, spec.head_dim);
        Ok(Heads { n_head, n_kv_head, head_dim, scale: 1.0 / (head_dim as f32).sqrt(), window })
    }
}

/// How many (row, head) queries one work item takes at most. A prompt's rows are tiled so that
/// each key and value row read from the cache serves this many queries. With one query a read,
/// and a sum reduced for every score, attention was three fifths of a 4k-token prefill (a kv
/// head's keys at those lengths outgrow L2).
const TILE_QUERIES: usize = 12;

/// Causal grouped-query attention of new rows, each over the cached positions `seen` gives it
/// (rows of one sequence's prompt chunk, or decode rows of several sequences). Work items are
/// (tile of rows, up to four heads of one kv group) and independent: a long prefill spreads them
/// over candle's worker pool. A tile is consecutive rows of one sequence; its heads share every
/// key and value row's reading. A query's arithmetic does not depend on its tile or the heads
/// beside it: a row computes the same in a prompt as alone.
pub(super) fn attention(hs: &Heads, q: &[f32], seen: &[Seen], out: &mut [f32]) {
    if let [one] = seen {
        let start = hs.window.map_or(0, |w| one.end.saturating_sub(w.max(1)));
        if one.end - start >= LONG_FROM {
            return long_row(hs, q, *one, start, out);
        }
    }
    let t = seen.len();
    let group = hs.n_head / hs.n_kv_head;
    let max_rows = (TILE_QUERIES / group.min(4)).max(1);
    let mut tiles = Vec::with_capacity(t.div_ceil(max_rows));
    let mut r = 0;
    while r < t {
        let same = |n: usize| std::ptr::eq(seen[r].kc, seen[r + n].kc) && seen[r + n].end == seen[r].end + n;
        let mut n = 1;
        while n < max_rows && r + n < t && same(n) {
            n += 1;
        }
        tiles.push((r, n));
        r += n;
    }
    // Up to four heads an item share its key and value reads, as long as there are items enough
    // for every thread of the pool: a decode row of SmolLM2 (3 kv heads of 3) is 3 items, one of
    // Gemma 3 (1 of 4) is 2 of 2 heads. One head an item read each kv head's cache once per head.
    let threads = candle_core::utils::barrier_pool().n_workers() + 1;
    let chunks = group.div_ceil(4).max(threads.div_ceil(tiles.len() * hs.n_kv_head)).min(group);
    let per_item = group.div_ceil(chunks);
    let chunks = group.div_ceil(per_item);
    let dst = out.as_mut_ptr() as usize;
    let items = tiles.len() * hs.n_kv_head * chunks;
    let one = |item: usize| {
        // Last tiles first: a prompt's later rows see more positions, and the pool hands out
        // items in order, so the longest come first and the short ones fill the tail.
        let item = items - 1 - item;
        let (i, rest) = (item / (hs.n_kv_head * chunks), item % (hs.n_kv_head * chunks));
        let (g, c) = (rest / chunks, rest % chunks);
        let h0 = g * group + c * per_item;
        let (r0, rows) = tiles[i];
        let heads = (g * group + group - h0).min(per_item);
        Tile { hs, q, seen: seen[r0], r0, rows, g, h0, heads, dst }.run();
    };
    // Below this many multiply-adds a hand-off to the pool costs more than it saves.
    const PARALLEL_FROM: usize = 1 << 16;
    if seen.iter().map(|s| s.end).sum::<usize>() * hs.n_head * hs.head_dim >= PARALLEL_FROM {
        candle_core::utils::barrier_pool().execute_chunked(items, |range| range.for_each(one));
    } else {
        (0..items).for_each(one);
    }
}

/// Positions from which a lone row (one sequence's decode step) takes [`long_row`].
const LONG_FROM: usize = 512;

/// [`attention`] of a lone row over positions `lo..seen.end`, in three passes over the pool
/// instead of one item a few heads: the scores, a kv head's keys split by position; each head's
/// softmax; then Σ p·v, a kv head's values split by sixteen-float slices. Over a long cache the
/// row's few items read their kv head's keys and values from memory one thread each (a 1-kv-head
/// model's two items both read all of them, SmolLM2's three left one thread idle a third of
/// the time); split this way, both threads read each byte once (engine tg128 after 3.8k tokens:
/// SmolLM2 34.8 → 44.4 tok/s, Gemma 3 58.4 → 62.6; after 1k, SmolLM2 93 → 102). Every score,
/// probability and output float is computed as [`Tile::run`] computes it, in the same order, so
/// a row still computes the same alone as in a prompt.
fn long_row(hs: &Heads, q: &[f32], seen: Seen, lo: usize, out: &mut [f32]) {
    thread_local! {
        static SCORES: std::cell::RefCell<Vec<f32>> = const { std::cell::RefCell::new(Vec::new()) };
    }
    let (hd, hi, group) = (hs.head_dim, seen.end, hs.n_head / hs.n_kv_head);
    let n = hi - lo;
    let stride = n.next_multiple_of(8);
    let pool = candle_core::utils::barrier_pool();
    let threads = pool.n_workers() + 1;
    SCORES.with(|cell| {
        let mut scores = cell.borrow_mut();
        let sc = resize(&mut scores, hs.n_head * stride).as_mut_ptr() as usize;
        // SAFETY (all three passes): `sc` outlives the pool's calls; an item writes only its
        // head's positions `at..at + len` (its chunk of them, or a head's all in the softmax),
        // and the last pass, which writes none, reads them.
        let scores_mut = |h: usize, at: usize, len: usize| unsafe {
            std::slice::from_raw_parts_mut((sc as *mut f32).add(h * stride + at), len)
        };
        let scores = |h: usize| unsafe { std::slice::from_raw_parts((sc as *const f32).add(h * stride), n) };
        // Keys in chunks of a multiple of eight from `lo`: the eight-key blocks fall where a
        // tile's do.
        let chunk = n.div_ceil(threads * 4).next_multiple_of(8);
        let chunks = n.div_ceil(chunk);
        pool.execute_chunked(hs.n_kv_head * chunks, |items| {
            for item in items {
                let (g, c) = (item / chunks, item % chunks);
                let (from, to) = (lo + c * chunk, (lo + (c + 1) * chunk).min(hi));
                let heads = g * group..(g + 1) * group;
                let block = |j0: usize, keys: &[*const f32; 8], valid: usize| {
                    for h in heads.clone() {
                        let d = scores8(&q[h * hd..(h + 1) * hd], keys);
                        scores_mut(h, j0 - lo, valid).iter_mut().zip(d).for_each(|(s, d)| *s = d * hs.scale);
                    }
                };
                key_blocks(seen.kc, from..to, g * hd, hd, true, block);
            }
        });
        pool.execute_chunked(hs.n_head, |heads| heads.for_each(|h| softmax(scores_mut(h, 0, n))));
        let slices = hd.div_ceil(16);
        let dst = out.as_mut_ptr() as usize;
        pool.execute_chunked(hs.n_kv_head * slices, |items| {
            for item in items {
                let (g, c) = (item / slices, 16 * (item % slices));
                let w = (hd - c).min(16);
                let mut h0 = g * group;
                while h0 < (g + 1) * group {
                    let m = ((g + 1) * group - h0).min(6);
                    let probs: [&[f32]; 6] = std::array::from_fn(|k| scores(h0 + k.min(m - 1)));
                    // SAFETY: `out` outlives the call; this item alone writes floats c..c + w
                    // of these heads.
                    let mut outs: [&mut [f32]; 6] = std::array::from_fn(|k| match k < m {
                        true => unsafe { std::slice::from_raw_parts_mut((dst as *mut f32).add((h0 + k) * hd + c), w) },
                        false => &mut [][..],
                    });
                    let (probs, outs) = (&probs[..m], &mut outs[..m]);
                    let off = g * hd + c;
                    match m {
                        6 => slice_sum::<6>(probs, outs, seen.vc, lo..hi, off),
                        5 => slice_sum::<5>(probs, outs, seen.vc, lo..hi, off),
                        4 => slice_sum::<4>(probs, outs, seen.vc, lo..hi, off),
                        3 => slice_sum::<3>(probs, outs, seen.vc, lo..hi, off),
                        2 => slice_sum::<2>(probs, outs, seen.vc, lo..hi, off),
                        _ => slice_sum::<1>(probs, outs, seen.vc, lo..hi, off),
                    }
                    h0 += m;
                }
            }
        });
    });
}

/// Rows ahead of the one [`long_row`] reads that it asks the CPU to bring in: a kv head's slice
/// of a row is a short strided read the hardware's prefetchers keep few of in flight
/// (SmolLM2's and a 1-kv-head layout's attention over 3.8k positions 13–25 % faster with them).
const AHEAD: usize = 24;

/// Calls `block(j0, keys, valid)` for the keys of positions `range` eight at a time (`j0` the
/// first one's position), each key the slice `off..off + hd` of its row. The last block's missing
/// keys repeat its last one; their scores are dropped. With `fetch`, each row asks for the same
/// slice [`AHEAD`] rows on.
fn key_blocks(
    kc: &LayerRows,
    range: std::ops::Range<usize>,
    off: usize,
    hd: usize,
    fetch: bool,
    mut block: impl FnMut(usize, &[*const f32; 8], usize),
) {
    let (mut keys, mut k, mut j0) = ([std::ptr::null(); 8], 0, range.start);
    for run in kc.runs(range.clone()) {
        for row in run.chunks_exact(kc.width()) {
            if fetch && j0 + k + AHEAD < range.end {
                prefetch::<L1>(kc.row(j0 + k + AHEAD, off, hd));
            }
            keys[k] = row[off..off + hd].as_ptr();
            k += 1;
            if k == 8 {
                block(j0, &keys, 8);
                (j0, k) = (j0 + 8, 0);
            }
        }
    }
    if k > 0 {
        (k..8).for_each(|l| keys[l] = keys[k - 1]);
        block(j0, &keys, k);
    }
}

/// `out[i] = Σ_j p[i][j] · v_j[off..off + w]` (`w` = out's length, at most 16) over positions
/// `range`, each float summed as [`accumulate`] sums it: from zero, the positions in order,
/// fused multiply-adds for a whole sixteen and separate ones for a head's last few floats.
fn slice_sum<const H: usize>(
    p: &[&[f32]],
    out: &mut [&mut [f32]],
    vc: &LayerRows,
    range: std::ops::Range<usize>,
    off: usize,
) {
    let (p, width, w): ([&[f32]; H], usize, usize) = (std::array::from_fn(|i| p[i]), vc.width(), out[0].len());
    let mut acc: [[f32; 16]; H] = std::array::from_fn(|_| [0.0; 16]);
    let runs = vc.runs(range.clone());
    if w == 16 {
        weighted_sum16::<H>(p, runs, width, off, &mut acc, Some((vc, range.start)));
    } else {
        let mut jj = 0;
        for run in runs {
            for v in run.chunks_exact(width).map(|v| &v[off..off + w]) {
                (0..H).for_each(|i| (0..w).for_each(|l| acc[i][l] += p[i][jj] * v[l]));
                jj += 1;
            }
        }
    }
    (0..H).for_each(|i| out[i].copy_from_slice(&acc[i][..w]));
}

/// One (row, head) of a tile and the positions `start..end` it sees.
#[derive(Clone, Copy, Default)]
struct Query {
    row: usize,
    head: usize,
    start: usize,
    end: usize,
}

/// Rows `r0..r0 + rows` of one sequence (row `r0` sees `..seen.end`, each next one a position
/// more) against kv head `g`, heads `h0..h0 + heads`.
struct Tile<'a> {
    hs: &'a Heads,
    q: &'a [f32],
    seen: Seen<'a>,
    r0: usize,
    rows: usize,
    g: usize,
    h0: usize,
    heads: usize,
    /// The `t × n_head·head_dim` output.
    dst: usize,
}

impl Tile<'_> {
    /// Query `i` (row-major over rows, then heads): its row, head and the positions it sees.
    fn query(&self, i: usize) -> Query {
        let (row, head) = (i / self.heads, self.h0 + i % self.heads);
        let end = self.seen.end + row;
        // A window of 0 (a malformed file) still sees the row itself.
        let start = self.hs.window.map_or(0, |w| end.saturating_sub(w.max(1)));
        Query { row: self.r0 + row, head, start, end }
    }

    /// Scores against every key the tile sees, eight keys at a time; softmax of each query's own
    /// positions (zero outside them); then Σ p·v, a block of positions at a time so that the
    /// block's values stay in cache across the queries and sixteen-float slices.
    fn run(&self) {
        thread_local! {
            static SCORES: std::cell::RefCell<Vec<f32>> = const { std::cell::RefCell::new(Vec::new()) };
        }
        let hs = self.hs;
        let (hd, qw) = (hs.head_dim, hs.n_head * hs.head_dim);
        let nq = self.rows * self.heads;
        // Fixed arrays: a decode step runs an item per head and layer, too many to allocate in.
        let mut queries = [Query::default(); TILE_QUERIES];
        (0..nq).for_each(|i| queries[i] = self.query(i));
        let queries = &queries[..nq];
        // Starts and ends grow with the row: the first query starts first, the last ends last.
        let (lo, hi) = (queries[0].start, queries[nq - 1].end);
        let stride = (hi - lo).next_multiple_of(8);
        let mut qv: [&[f32]; TILE_QUERIES] = [&[]; TILE_QUERIES];
        (0..nq).for_each(|i| qv[i] = &self.q[queries[i].row * qw + queries[i].head * hd..][..hd]);
        let g0 = self.g * hd;
        SCORES.with(|cell| {
            let mut scores = cell.borrow_mut();
            let sc = resize(&mut scores, nq * stride);
            let block = |j0: usize, keys: &[*const f32; 8], valid: usize| {
                for (i, seen) in queries.iter().enumerate() {
                    if j0 + valid > seen.start && j0 < seen.end {
                        let d = scores8(qv[i], keys);
                        let at = i * stride + j0 - lo;
                        (0..valid).for_each(|l| sc[at + l] = d[l] * hs.scale);
                    }
                }
            };
            key_blocks(self.seen.kc, lo..hi, g0, hd, false, block);
            for (i, seen) in queries.iter().enumerate() {
                let s = &mut sc[i * stride..i * stride + hi - lo];
                let (a, b) = (seen.start - lo, seen.end - lo);
                s[..a].fill(0.0);
                softmax(&mut s[a..b]);
                s[b..].fill(0.0);
            }
            let sc = &*sc;
            // SAFETY: this item alone writes heads h0..h0+heads of its rows; `dst` outlives the
            // call, and rows of other items' heads are not touched.
            let out = |i: usize| unsafe {
                let Query { row, head, .. } = queries[i];
                std::slice::from_raw_parts_mut((self.dst as *mut f32).add(row * qw + head * hd), hd)
            };
            (0..nq).for_each(|i| out(i).fill(0.0));
            // Positions a value block holds: 128 rows of a kv head fit L2 for head sizes to 256.
            const BLOCK: usize = 128;
            let mut b0 = lo;
            while b0 < hi {
                let b1 = (b0 + BLOCK).min(hi);
                let mut i0 = 0;
                while i0 < nq {
                    let n = (nq - i0).min(6);
                    // The positions any of these queries sees in the block (zeros elsewhere).
                    let (s0, s1) = (queries[i0].start.max(b0), queries[i0 + n - 1].end.min(b1));
                    if s0 < s1 {
                        let probs: [&[f32]; 6] = std::array::from_fn(|k| {
                            let i = (i0 + k).min(i0 + n - 1);
                            &sc[i * stride + s0 - lo..i * stride + s1 - lo]
                        });
                        let mut outs: [&mut [f32]; 6] = std::array::from_fn(|k| match k < n {
                            true => out(i0 + k),
                            false => &mut [][..],
                        });
                        let (probs, outs) = (&probs[..n], &mut outs[..n]);
                        match n {
                            6 => accumulate::<6>(probs, outs, self.seen.vc, s0..s1, g0, hd),
                            5 => accumulate::<5>(probs, outs, self.seen.vc, s0..s1, g0, hd),
                            4 => accumulate::<4>(probs, outs, self.seen.vc, s0..s1, g0, hd),
                            3 => accumulate::<3>(probs, outs, self.seen.vc, s0..s1, g0, hd),
                            2 => accumulate::<2>(probs, outs, self.seen.vc, s0..s1, g0, hd),
                            _ => accumulate::<1>(probs, outs, self.seen.vc, s0..s1, g0, hd),
                        }
                    }
                    i0 += n;
                }
                b0 = b1;
            }
        });
    }
}

/// `out[i] += Σ_j p[i][j] · v_j` over positions `range` (p indexed from its start), kv head
/// slice `g0..g0 + hd` of each value row, sixteen floats of every query at a time.
fn accumulate<const H: usize>(
    p: &[&[f32]],
    out: &mut [&mut [f32]],
    vc: &LayerRows,
    range: std::ops::Range<usize>,
    g0: usize,
    hd: usize,
) {
    let (p, width): ([&[f32]; H], usize) = (std::array::from_fn(|i| p[i]), vc.width());
    let mut c = 0;
    while c < hd {
        let w = (hd - c).min(16);
        let mut acc: [[f32; 16]; H] = std::array::from_fn(|_| [0.0; 16]);
        (0..H).for_each(|i| acc[i][..w].copy_from_slice(&out[i][c..c + w]));
        let runs = vc.runs(range.clone());
        if w == 16 {
            weighted_sum16::<H>(p, runs, width, g0 + c, &mut acc, None);
        } else {
            let mut jj = 0;
            for run in runs {
                for v in run.chunks_exact(width).map(|v| &v[g0 + c..g0 + c + w]) {
                    (0..H).for_each(|i| (0..w).for_each(|l| acc[i][l] += p[i][jj] * v[l]));
                    jj += 1;
                }
            }
        }
        (0..H).for_each(|i| out[i][c..c + w].copy_from_slice(&acc[i][..w]));
        c += w;
    }
}

/// `acc[i] += Σ_j p[i][j] · v_j` over the sixteen floats from `off` of each value row, the rows
/// `width` apart in each block's run and the accumulators kept in registers across the runs.
/// With `fetch` (the rows and the first position), each row asks for the same floats [`AHEAD`]
/// rows on.
/// The compiler kept neither this nor [`scores8`] in registers when written as loops over arrays,
/// so on x86 they are written with AVX2 and FMA (which the build's x86-64-v3 target guarantees).
fn weighted_sum16<'v, const H: usize>(
    p: [&[f32]; H],
    runs: impl Iterator<Item = &'v [f32]>,
    width: usize,
    off: usize,
    acc: &mut [[f32; 16]; H],
    fetch: Option<(&LayerRows, usize)>,
) {
    // Nested loops, a run's rows the inner one: a flattening iterator over the runs made
    // SmolLM2's decode at 1024 positions a third slower.
    #[cfg(all(target_arch = "x86_64", target_feature = "avx2", target_feature = "fma"))]
    {
        use std::arch::x86_64::*;
        // SAFETY: the features are compiled in (cfg above); every load reads 16 floats of a
        // 16-float slice or an in-bounds probability.
        unsafe {
            let mut a: [[__m256; 2]; H] =
                std::array::from_fn(|i| [_mm256_loadu_ps(acc[i].as_ptr()), _mm256_loadu_ps(acc[i].as_ptr().add(8))]);
            let mut j = 0;
            for run in runs {
                for row in run.chunks_exact(width) {
                    if let Some((vc, from)) = fetch {
                        let at = from + j + AHEAD;
                        if at < from + p[0].len() {
                            prefetch::<L1>(vc.row(at, off, 16));
                        }
                    }
                    let v = &row[off..off + 16];
                    let (v0, v1) = (_mm256_loadu_ps(v.as_ptr()), _mm256_loadu_ps(v.as_ptr().add(8)));
                    for i in 0..H {
                        let pi = _mm256_set1_ps(p[i][j]);
                        a[i][0] = _mm256_fmadd_ps(pi, v0, a[i][0]);
                        a[i][1] = _mm256_fmadd_ps(pi, v1, a[i][1]);
                    }
                    j += 1;
                }
            }
            for i in 0..H {
                _mm256_storeu_ps(acc[i].as_mut_ptr(), a[i][0]);
                _mm256_storeu_ps(acc[i].as_mut_ptr().add(8), a[i][1]);
            }
        }
    }
    #[cfg(not(all(target_arch = "x86_64", target_feature = "avx2", target_feature = "fma")))]
    {
        let _ = fetch;
        let mut j = 0;
        for run in runs {
            for row in run.chunks_exact(width) {
                (0..H).for_each(|i| (0..16).for_each(|l| acc[i][l] += p[i][j] * row[off + l]));
                j += 1;
            }
        }
    }
}

/// `q`'s dot product with each of eight key rows of `q.len()` floats, each over eight lanes
/// summed in the same tree whichever slot its key takes (so that a score does not depend on the
/// keys it is computed beside).
fn scores8(q: &[f32], keys: &[*const f32; 8]) -> [f32; 8] {
    let hd = q.len();
    let whole = hd / 8 * 8;
    // SAFETY (both paths): every key pointer addresses `hd` floats of a cached row.
    let tail = |k: usize| unsafe { (whole..hd).map(|c| q[c] * *keys[k].add(c)).sum::<f32>() };
    #[cfg(all(target_arch = "x86_64", target_feature = "avx2", target_feature = "fma"))]
    {
        use std::arch::x86_64::*;
        // SAFETY: the features are compiled in; offsets stay below `whole` ≤ hd.
        unsafe {
            let mut a = [_mm256_setzero_ps(); 8];
            for c in (0..whole).step_by(8) {
                let qv = _mm256_loadu_ps(q.as_ptr().add(c));
                for (k, a) in a.iter_mut().enumerate() {
                    *a = _mm256_fmadd_ps(qv, _mm256_loadu_ps(keys[k].add(c)), *a);
                }
            }
            // Pairwise sums, then each key's two 128-bit halves: lane k holds key k's total.
            let (s01, s23) = (_mm256_hadd_ps(a[0], a[1]), _mm256_hadd_ps(a[2], a[3]));
            let (s45, s67) = (_mm256_hadd_ps(a[4], a[5]), _mm256_hadd_ps(a[6], a[7]));
            let (t0, t1) = (_mm256_hadd_ps(s01, s23), _mm256_hadd_ps(s45, s67));
            let sum = _mm256_add_ps(_mm256_permute2f128_ps(t0, t1, 0x20), _mm256_permute2f128_ps(t0, t1, 0x31));
            let mut d = [0f32; 8];
            _mm256_storeu_ps(d.as_mut_ptr(), sum);
            if whole < hd {
                (0..8).for_each(|k| d[k] += tail(k));
            }
            d
        }
    }
    #[cfg(not(all(target_arch = "x86_64", target_feature = "avx2", target_feature = "fma")))]
    std::array::from_fn(|k| {
        // SAFETY: as above.
        (0..whole).map(|c| q[c] * unsafe { *keys[k].add(c) }).sum::<f32>() + tail(k)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::cpu::tests::{close, data};
    use candle_core::{Device, Tensor};

    /// Causal grouped-query attention of t new rows over pos cached + t new positions, read
    /// through blocks, against candle's ops, and each row against itself alone. The second shape
    /// is big enough to run on the worker pool; the third has a sliding window; the fourth is one
    /// decode row; the fifth crosses value blocks with a window; in the last two a row alone sees
    /// enough positions for [`long_row`] (the second through a window). Head layouts: groups
    /// of 2, 5 (items of three heads and two), 3 and 1, and head sizes that are not a
    /// multiple of 16.
    #[test]
    fn attention_matches_candles_ops() {
        let dev = Device::Cpu;
        let layouts = [(4, 2, 16), (10, 2, 24), (9, 3, 64), (3, 3, 8)];
        let shapes = [
            (3, 5, None),
            (40, 30, None),
            (6, 20, Some(9)),
            (1, 70, None),
            (13, 290, Some(150)),
            (3, 600, None),
            (2, 700, Some(520)),
        ];
        for ((n_head, n_kv_head, head_dim), (t, pos, window)) in
            layouts.into_iter().flat_map(|l| shapes.into_iter().map(move |s| (l, s)))
        {
            let qw = n_head * head_dim;
            let hs = Heads { n_head, n_kv_head, head_dim, scale: 1.0 / (head_dim as f32).sqrt(), window };
            let positions = pos + t;
            let q = data(t * qw, 3);
            let kvw = n_kv_head * head_dim;
            let (kc, vc) = (data(positions * kvw, 4), data(positions * kvw, 5));
            let (kr, vr) = (LayerRows::contiguous(&kc, kvw), LayerRows::contiguous(&vc, kvw));
            let mut ours = vec![0f32; t * qw];
            let seen: Vec<Seen> = (0..t).map(|r| Seen { kc: &kr, vc: &vr, end: pos + r + 1 }).collect();
            attention(&hs, &q, &seen, &mut ours);
            // Each row alone (a decode step) computes what it computed in the prompt's tiles.
            for (r, s) in seen.iter().enumerate() {
                let mut alone = vec![0f32; qw];
                attention(&hs, &q[r * qw..(r + 1) * qw], std::slice::from_ref(s), &mut alone);
                assert_eq!(alone, ours[r * qw..(r + 1) * qw], "row {r} of t={t} alone, {n_head}/{n_kv_head} heads");
            }
            let heads = |v: &[f32], rows: usize, n: usize| {
                Tensor::from_slice(v, (1, rows, n, head_dim), &dev)
                    .unwrap()
                    .transpose(1, 2)
                    .unwrap()
                    .contiguous()
                    .unwrap()
            };
            let (qt, kt, vt) =
                (heads(&q, t, n_head), heads(&kc, positions, n_kv_head), heads(&vc, positions, n_kv_head));
            let kt = candle_transformers::utils::repeat_kv(kt, n_head / n_kv_head).unwrap();
            let vt = candle_transformers::utils::repeat_kv(vt, n_head / n_kv_head).unwrap();
            let att = (qt.matmul(&kt.t().unwrap()).unwrap() / (head_dim as f64).sqrt()).unwrap();
            // Masked: future positions, and with a window those `window` or more behind.
            let mask: Vec<u8> = (0..t)
                .flat_map(|i| {
                    (0..positions).map(move |j| u8::from(j > pos + i || window.is_some_and(|w| j + w <= pos + i)))
                })
                .collect();
            let mask = Tensor::from_slice(&mask, (t, positions), &dev).unwrap();
            let neg = Tensor::new(f32::NEG_INFINITY, &dev).unwrap().broadcast_as(att.shape()).unwrap();
            let att = mask.broadcast_as(att.shape()).unwrap().where_cond(&neg, &att).unwrap();
            let att = candle_nn::ops::softmax_last_dim(&att).unwrap();
            let theirs = att.matmul(&vt.contiguous().unwrap()).unwrap().transpose(1, 2).unwrap();
            let e = close(&ours, &theirs.flatten_all().unwrap().to_vec1().unwrap());
            assert!(e < 1e-5, "{n_head}/{n_kv_head} heads of {head_dim}, t={t} pos={pos}: {e}");
        }
    }
}
