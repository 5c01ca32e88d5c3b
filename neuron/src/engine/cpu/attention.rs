//! Causal grouped-query attention on the CPU: each new row of a step against its own
//! sequence's cached keys and values, read through the KV cache's block table.

use candle_core::Result;

use super::ops::{resize, softmax};
use crate::engine::kv::LayerRows;
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

/// Causal grouped-query attention of new rows, each over the cached positions `seen` gives it
/// (rows of one sequence's prompt chunk, or decode rows of several sequences). Work items are
/// (row, up to four heads of one kv group) and independent: a long prefill spreads them over
/// candle's worker pool. Heads that share a kv head share each key and value row's reading,
/// which bounds attention over a long prompt (a single decode row keeps one head an item, so
/// that it still spreads over the threads).
pub(super) fn attention(hs: &Heads, q: &[f32], seen: &[Seen], out: &mut [f32]) {
    let t = seen.len();
    let group = hs.n_head / hs.n_kv_head;
    let per_item = if t > 1 { group.min(4) } else { 1 };
    let chunks = group.div_ceil(per_item);
    let dst = out.as_mut_ptr() as usize;
    let one = |item: usize| {
        let (r, rest) = (item / (hs.n_kv_head * chunks), item % (hs.n_kv_head * chunks));
        let (g, c) = (rest / chunks, rest % chunks);
        let h0 = g * group + c * per_item;
        let Seen { kc, vc, end } = seen[r];
        let at = Attend { hs, q, kc, vc, r, g, end, dst };
        match (g * group + group - h0).min(per_item) {
            4 => at.heads::<4>(h0),
            3 => at.heads::<3>(h0),
            2 => at.heads::<2>(h0),
            _ => at.heads::<1>(h0),
        }
    };
    let items = t * hs.n_kv_head * chunks;
    // Below this many multiply-adds a hand-off to the pool costs more than it saves.
    const PARALLEL_FROM: usize = 1 << 16;
    if seen.iter().map(|s| s.end).sum::<usize>() * hs.n_head * hs.head_dim >= PARALLEL_FROM {
        candle_core::utils::barrier_pool().execute_chunked(items, |range| range.for_each(one));
    } else {
        (0..items).for_each(one);
    }
}

/// One row's attention against kv head `g`, for the positions `..end` it sees.
struct Attend<'a> {
    hs: &'a Heads,
    q: &'a [f32],
    kc: &'a LayerRows<'a>,
    vc: &'a LayerRows<'a>,
    r: usize,
    g: usize,
    end: usize,
    /// The `t × n_head·head_dim` output.
    dst: usize,
}

impl Attend<'_> {
    /// Heads `h0..h0 + H`: scores against each key, softmax, then Σ p·v with sixteen outputs of
    /// every head held in registers across all positions (accumulating into the output row
    /// instead loaded and stored it once per position).
    fn heads<const H: usize>(&self, h0: usize) {
        thread_local! {
            static SCORES: std::cell::RefCell<Vec<f32>> = const { std::cell::RefCell::new(Vec::new()) };
        }
        let hs = self.hs;
        let (hd, qw) = (hs.head_dim, hs.n_head * hs.head_dim);
        // A window of 0 (a malformed file) still sees the row itself.
        let start = hs.window.map_or(0, |w| self.end.saturating_sub(w.max(1)));
        let n = self.end - start;
        let qh: [&[f32]; H] = std::array::from_fn(|i| &self.q[self.r * qw + (h0 + i) * hd..][..hd]);
        // SAFETY: this item alone writes heads h0..h0+H of row r; `dst` outlives the call.
        let out = unsafe { std::slice::from_raw_parts_mut((self.dst as *mut f32).add(self.r * qw + h0 * hd), H * hd) };
        SCORES.with(|cell| {
            let mut scores = cell.borrow_mut();
            let sc = resize(&mut scores, H * n);
            // Kv head g's slice of each row, walked a block's run at a time.
            let (g0, width) = (self.g * hd, self.kc.width());
            let mut jj = 0;
            for run in self.kc.runs(start..self.end) {
                for k in run.chunks_exact(width) {
                    let d = dots::<H>(qh, &k[g0..g0 + hd]);
                    (0..H).for_each(|i| sc[i * n + jj] = d[i] * hs.scale);
                    jj += 1;
                }
            }
            sc.chunks_exact_mut(n).for_each(softmax);
            let mut c = 0;
            while c < hd {
                let w = (hd - c).min(16);
                let mut acc = [[0f32; 16]; H];
                let probs: [&[f32]; H] = std::array::from_fn(|i| &sc[i * n..(i + 1) * n]);
                let runs = self.vc.runs(start..self.end);
                if w == 16 {
                    weighted_sum16::<H>(probs, runs, width, g0 + c, &mut acc);
                } else {
                    let mut jj = 0;
                    for run in runs {
                        for v in run.chunks_exact(width).map(|v| &v[g0 + c..g0 + c + w]) {
                            (0..H).for_each(|i| (0..w).for_each(|l| acc[i][l] += probs[i][jj] * v[l]));
                            jj += 1;
                        }
                    }
                }
                (0..H).for_each(|i| out[i * hd + c..i * hd + c + w].copy_from_slice(&acc[i][..w]));
                c += w;
            }
        });
    }
}

/// `acc[i] = Σ_j p[i][j] · v_j` over the sixteen floats from `off` of each value row, the rows
/// `width` apart in each block's run and the accumulators kept in registers across the runs.
/// The compiler kept neither this nor [`dots`] in registers when written as loops over arrays,
/// so on x86 they are written with AVX2 and FMA (which the build's x86-64-v3 target guarantees).
fn weighted_sum16<'v, const H: usize>(
    p: [&[f32]; H],
    runs: impl Iterator<Item = &'v [f32]>,
    width: usize,
    off: usize,
    acc: &mut [[f32; 16]; H],
) {
    // Nested loops, a run's rows the inner one: a flattening iterator over the runs made
    // SmolLM2's decode at 1024 positions a third slower.
    #[cfg(all(target_arch = "x86_64", target_feature = "avx2", target_feature = "fma"))]
    {
        use std::arch::x86_64::*;
        // SAFETY: the features are compiled in (cfg above); every load reads 16 floats of a
        // 16-float slice or an in-bounds probability.
        unsafe {
            let mut a = [[_mm256_setzero_ps(); 2]; H];
            let mut j = 0;
            for run in runs {
                for row in run.chunks_exact(width) {
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
        let mut j = 0;
        for run in runs {
            for row in run.chunks_exact(width) {
                (0..H).for_each(|i| (0..16).for_each(|l| acc[i][l] += p[i][j] * row[off + l]));
                j += 1;
            }
        }
    }
}

/// `H` dot products against one key row, each over sixteen partial sums (two vector registers,
/// so that the multiply-adds' latency overlaps).
fn dots<const H: usize>(qs: [&[f32]; H], k: &[f32]) -> [f32; H] {
    let whole = k.len() / 16 * 16;
    let tail = |i: usize| qs[i][whole..].iter().zip(&k[whole..]).map(|(x, y)| x * y).sum::<f32>();
    assert!(qs.iter().all(|q| q.len() == k.len()));
    #[cfg(all(target_arch = "x86_64", target_feature = "avx2", target_feature = "fma"))]
    {
        use std::arch::x86_64::*;
        // SAFETY: the features are compiled in; offsets stay below `whole` ≤ every length.
        unsafe {
            let mut a = [[_mm256_setzero_ps(); 2]; H];
            for c in (0..whole).step_by(16) {
                let (k0, k1) = (_mm256_loadu_ps(k.as_ptr().add(c)), _mm256_loadu_ps(k.as_ptr().add(c + 8)));
                for i in 0..H {
                    a[i][0] = _mm256_fmadd_ps(_mm256_loadu_ps(qs[i].as_ptr().add(c)), k0, a[i][0]);
                    a[i][1] = _mm256_fmadd_ps(_mm256_loadu_ps(qs[i].as_ptr().add(c + 8)), k1, a[i][1]);
                }
            }
            std::array::from_fn(|i| {
                let mut lanes = [0f32; 8];
                _mm256_storeu_ps(lanes.as_mut_ptr(), _mm256_add_ps(a[i][0], a[i][1]));
                lanes.iter().sum::<f32>() + tail(i)
            })
        }
    }
    #[cfg(not(all(target_arch = "x86_64", target_feature = "avx2", target_feature = "fma")))]
    std::array::from_fn(|i| qs[i][..whole].iter().zip(&k[..whole]).map(|(x, y)| x * y).sum::<f32>() + tail(i))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::cpu::tests::{close, data};
    use candle_core::{Device, Tensor};

    /// Causal grouped-query attention of t new rows over pos cached + t new positions, read
    /// through blocks, against candle's ops. The second shape is big enough to run on the worker
    /// pool; the third has a sliding window; the fourth is one decode row. Head layouts: groups
    /// of 2, 5 (an item of four heads and one of one), 3 and 1, and head sizes that are not a
    /// multiple of 16.
    #[test]
    fn attention_matches_candles_ops() {
        let dev = Device::Cpu;
        let layouts = [(4, 2, 16), (10, 2, 24), (9, 3, 64), (3, 3, 8)];
        let shapes = [(3, 5, None), (40, 30, None), (6, 20, Some(9)), (1, 70, None)];
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
