//! Activations quantized per 32-value block to i8 (as ggml does) or i16 ([`Precision`]) with an
//! f32 scale, and the block sums kept for the Q4 min term:
//! `Σ (d·q + m)·(da·a) = d·da·Σ q·a + m·(da·Σ a)`. At 16 bits a scale may cover several blocks
//! (a K-quant super-block, or the whole row) so that the kernels sum more products in integers.

use crate::aligned::Aligned;
use crate::QK;
#[cfg(target_arch = "x86_64")]
use crate::{level, x86, Level};

/// How finely activations are quantized before the integer dot products.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Precision {
    /// 8 bits per value, as llama.cpp does: the fastest, with a relative error near 1e-2 of a
    /// layer's output scale.
    I8,
    /// 16 bits per value: near-f32 results (about 1e-4 of a layer's output, logits within 2e-3
    /// of f32 on the models measured in BENCHMARKS.md), for half the multiply-adds per
    /// instruction (1–3 % of decode speed, more in compute-bound prefill).
    I16,
}

/// Activations quantized per block: `x ≈ d·q` with `q` an i8 (`Acts<i8>`, natural order) or an
/// i16 (`Acts<i16>`, each row pair-interleaved — see `x86::vnni16`: blocks 2p and 2p+1 as
/// [2p lo, 2p+1 lo, 2p hi, 2p+1 hi] halves — or, with `quads`, quad-interleaved first: see
/// [`pos16`]), and `s = d·Σq` per block for the Q4 min term.
pub struct Acts<T> {
    pub(crate) nb: usize,
    /// Whether a row's whole quads of blocks are quad-interleaved ([`pos16`]; 16-bit only).
    pub(crate) quads: bool,
    /// Blocks that share one scale: 1, 8 (a K-quant super-block) for [`x86::dot_k16_vnni`], or
    /// the whole row for [`x86::dot_r16_vnni`].
    pub(crate) group: usize,
    pub(crate) q: Aligned<T>,
    pub(crate) d: Vec<f32>,
    pub(crate) s: Vec<f32>,
}

/// One activation row.
pub(crate) struct ActRow<'a, T> {
    pub(crate) q: &'a [T],
    pub(crate) d: &'a [f32],
    pub(crate) s: &'a [f32],
    pub(crate) group: usize,
    pub(crate) quads: bool,
}

impl<T> Acts<T> {
    #[inline(always)]
    pub(crate) fn row(&self, i: usize) -> ActRow<'_, T> {
        let nb = self.nb;
        ActRow {
            q: &self.q[i * nb * QK..(i + 1) * nb * QK],
            d: &self.d[i * nb..(i + 1) * nb],
            s: &self.s[i * nb..(i + 1) * nb],
            group: self.group,
            quads: self.quads,
        }
    }

    /// The slices (values, scales, block sums) of rows `i…i + R`, for a kernel's pass of `R`
    /// rows. A loop of inlined `row`s: built by `std::array::from_fn`, each row's slices came
    /// back from a call through memory, a store-forwarding stall apiece (pp512 of Gemma 3 and
    /// SmolLM2 +6 % without them).
    #[inline(always)]
    pub(crate) fn refs<const R: usize>(&self, i: usize) -> [(&[T], &[f32], &[f32]); R] {
        let mut q = [(&[][..], &[][..], &[][..]); R];
        for (j, q) in q.iter_mut().enumerate() {
            let r = self.row(i + j);
            *q = (r.q, r.d, r.s);
        }
        q
    }
}

/// A SIMD quantizer of one row (`x`, `group`, whether quads are interleaved, then the row's
/// values, scales and sums).
pub(crate) type RowQuantizer<T> = unsafe fn(&[f32], usize, bool, &mut [T], &mut [f32], &mut [f32]);

/// How the scalar loop stores a quantized value: to `±max`, converted by `to`, element `j` of
/// block `b` (of `nb` per row) at `place(nb, b, j)` within its row.
struct Layout<F, P> {
    max: f32,
    to: F,
    place: P,
}

/// Quantizes each group of `group` 32-value blocks with one scale (kept per block), by `simd`
/// where given, else by the scalar loop, whose rounding (half to even, as `cvtps2dq`) a SIMD
/// quantizer can match exactly.
fn quantize<T: Copy + Default + Send, F, P>(
    x: &[f32],
    m: usize,
    k: usize,
    group: usize,
    quads: bool,
    layout: Layout<F, P>,
    simd: Option<RowQuantizer<T>>,
) -> Acts<T>
where
    F: Fn(i32) -> T + Sync,
    P: Fn(usize, usize, usize) -> usize + Sync,
{
    let Layout { max, to, place } = layout;
    let nb = k / QK;
    let mut q = Aligned::<T>::zeroed(m * k);
    let (mut d, mut s) = (vec![0f32; m * nb], vec![0f32; m * nb]);
    let row = |xr: &[f32], qr: &mut [T], dr: &mut [f32], sr: &mut [f32]| {
        if let Some(f) = simd {
            // SAFETY: a SIMD quantizer is passed only where run-time detection found its features.
            return unsafe { f(xr, group, quads, qr, dr, sr) };
        }
        for (g, xg) in xr.chunks(QK * group).enumerate() {
            let amax = xg.iter().fold(0f32, |a, v| a.max(v.abs()));
            let scale = amax / max;
            let inv = if scale > 0.0 { 1.0 / scale } else { 0.0 };
            for (bi, xs) in xg.chunks_exact(QK).enumerate() {
                let b = g * group + bi;
                let mut sum = 0i32;
                for (j, v) in xs.iter().enumerate() {
                    let r = (v * inv).round_ties_even() as i32;
                    sum += r;
                    qr[place(nb, b, j)] = to(r);
                }
                dr[b] = scale;
                sr[b] = scale * sum as f32;
            }
        }
    };
    // A prompt's rows on the worker pool (one thread alone was ≈ 3 % of a long prefill, with
    // the other waiting); decode's single row stays on the caller.
    if m >= 16 {
        let (qp, dp, sp) = (q.as_mut_ptr() as usize, d.as_mut_ptr() as usize, s.as_mut_ptr() as usize);
        candle_core::utils::barrier_pool().execute_chunked(m, |rows| {
            for i in rows {
                // SAFETY: row i alone writes these disjoint ranges of q, d and s, which outlive
                // the pool call.
                let (qr, dr, sr) = unsafe {
                    (
                        std::slice::from_raw_parts_mut((qp as *mut T).add(i * k), k),
                        std::slice::from_raw_parts_mut((dp as *mut f32).add(i * nb), nb),
                        std::slice::from_raw_parts_mut((sp as *mut f32).add(i * nb), nb),
                    )
                };
                row(&x[i * k..(i + 1) * k], qr, dr, sr);
            }
        });
    } else {
        let rows = x.chunks_exact(k).zip(q.chunks_exact_mut(k)).zip(d.chunks_exact_mut(nb).zip(s.chunks_exact_mut(nb)));
        for ((xr, qr), (dr, sr)) in rows {
            row(xr, qr, dr, sr);
        }
    }
    Acts { nb, quads, group, q, d, s }
}

impl Acts<i8> {
    pub fn quantize(x: &[f32], m: usize, k: usize) -> Self {
        let layout = Layout { max: 127.0, to: |r| r as i8, place: |_, b, j| b * QK + j };
        quantize(x, m, k, 1, false, layout, None)
    }
}

impl Acts<i16> {
    pub fn quantize(x: &[f32], m: usize, k: usize) -> Self {
        Self::quantize_grouped(x, m, k, 1)
    }

    /// One scale per `group` blocks (the last group of a row may be short): with 8, a K-quant
    /// super-block's integer products sum in i32 before any float work (`x86::dot_k16_vnni`);
    /// with the whole row, `x86::dot_r16_vnni` applies it once. Sixteen bits over 256 values, or
    /// a row, keep the result near f32 (the tests' 1e-3 bound holds).
    pub fn quantize_grouped(x: &[f32], m: usize, k: usize, group: usize) -> Self {
        Self::quantize_grouped_with(x, m, k, group, false, Self::simd_row())
    }

    /// [`Acts::quantize_grouped`] with whole quads of blocks quad-interleaved where `quads`
    /// ([`pos16`]; only the nibble formats' AVX-512 VNNI kernel, `x86::dot_r16q_vnni`, reads
    /// them apart from the scalar loop).
    pub(crate) fn quantize_quads(x: &[f32], m: usize, k: usize, group: usize, quads: bool) -> Self {
        Self::quantize_grouped_with(x, m, k, group, quads, Self::simd_row())
    }

    /// [`Acts::quantize_grouped`] with the scalar loop (`simd` None) or a SIMD row quantizer.
    pub(crate) fn quantize_grouped_with(
        x: &[f32],
        m: usize,
        k: usize,
        group: usize,
        quads: bool,
        simd: Option<RowQuantizer<i16>>,
    ) -> Self {
        let place = move |nb, b, j| pos16(nb, b, j, quads);
        quantize(x, m, k, group, quads, Layout { max: 32767.0, to: |r| r as i16, place }, simd)
    }

    /// The AVX-512 or AVX2 row quantizer where this CPU has it (the scalar loop was 3 % of
    /// Gemma 3's prefill; pp512 +3.5 % with AVX-512's).
    #[cfg(target_arch = "x86_64")]
    pub(crate) fn simd_row() -> Option<RowQuantizer<i16>> {
        Self::simd_row_at(level())
    }

    /// None off x86: the scalar loop.
    #[cfg(not(target_arch = "x86_64"))]
    pub(crate) fn simd_row() -> Option<RowQuantizer<i16>> {
        None
    }

    /// [`Acts::simd_row`] at `lvl`, which must not be beyond this CPU's.
    #[cfg(target_arch = "x86_64")]
    pub(crate) fn simd_row_at(lvl: Level) -> Option<RowQuantizer<i16>> {
        match lvl {
            Level::Avx512Vnni => Some(x86::quantize_row16),
            Level::Avx2 => Some(x86::quantize_row16_avx2),
            Level::Scalar => None,
        }
    }
}

/// Where element `j` of block `b` lies in a 16-bit row of `nb` blocks. With `quads`, the row's
/// whole quads of blocks come first, each 128 values as four octets of each block in turn
/// ([4q e0–7, 4q+1 e0–7, 4q+2 e0–7, 4q+3 e0–7, then e8–15 …]), so that one `vpdpwssd` covers eight
/// values of four blocks, lanes 4c–4c+3 for block 4q+c; the blocks past the last whole quad (and
/// every block without `quads`) are pair-interleaved ([`halves16`]).
#[inline]
pub(crate) fn pos16(nb: usize, b: usize, j: usize, quads: bool) -> usize {
    if quads && b < nb / 4 * 4 {
        let c = b % 4;
        32 * (b - c) + 32 * (j / 8) + 8 * c + j % 8
    } else {
        let (lo, hi) = halves16(nb, b);
        if j < 16 {
            lo + j
        } else {
            hi + j - 16
        }
    }
}

/// Where block `b`'s lo and hi halves start in a pair-interleaved row of `nb` blocks.
pub(crate) fn halves16(nb: usize, b: usize) -> (usize, usize) {
    let base = 64 * (b / 2);
    if b + 1 == nb && nb % 2 == 1 {
        (base, base + 16)
    } else {
        let odd = 16 * (b % 2);
        (base + odd, base + 32 + odd)
    }
}
