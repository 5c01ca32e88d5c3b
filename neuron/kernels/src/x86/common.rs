//! Helpers every x86 kernel shares: horizontal sums, picking a block pair's scales out of a
//! register of sixteen, unpacking a block pair's nibbles, and loading up to sixteen blocks'
//! scales (with the Q4 min terms) for the pair-at-a-time AVX-512 kernels at either activation
//! width, and asking for a decode step's weight rows ahead of the kernels.

use std::arch::x86_64::*;

use crate::scales::Scale;

#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
pub(super) unsafe fn hsum256(v: __m256) -> f32 {
    let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    let s = _mm_hadd_ps(s, s);
    _mm_cvtss_f32(_mm_hadd_ps(s, s))
}

/// Each accumulator's sixteen lanes summed. Four or eight rows share the shuffles (a transposed
/// tree of `hadd`s: a tenth of a short row's kernel went to eight separate reductions); one row
/// takes the same tree alone, so every row's sum is the same float whatever pass it was in.
#[target_feature(enable = "avx512f,avx2,fma,f16c")]
#[inline]
pub(super) unsafe fn sums<const R: usize>(acc: [__m512; R]) -> [f32; R] {
    let half = |v: __m512| {
        let hi = _mm256_castpd_ps(_mm512_extractf64x4_pd::<1>(_mm512_castps_pd(v)));
        _mm256_add_ps(_mm512_castps512_ps256(v), hi)
    };
    // Lanes (0..4 | 4..8) of `u` hold the first and second half-sums of up to four rows.
    let finish = |u: __m256, out: &mut [f32]| {
        let s = _mm_add_ps(_mm256_castps256_ps128(u), _mm256_extractf128_ps::<1>(u));
        let mut four = [0f32; 4];
        _mm_storeu_ps(four.as_mut_ptr(), s);
        let n = out.len();
        out.copy_from_slice(&four[..n]);
    };
    let mut out = [0f32; R];
    let mut r = 0;
    while r < R {
        let n = (R - r).min(4);
        let h: [__m256; 4] = std::array::from_fn(|i| half(acc[r + i.min(n - 1)]));
        let u = _mm256_hadd_ps(_mm256_hadd_ps(h[0], h[1]), _mm256_hadd_ps(h[2], h[3]));
        finish(u, &mut out[r..r + n]);
        r += n;
    }
    out
}

/// Lane i of the result picks scale 2j (lanes 0–7) or 2j + 1 (lanes 8–15): the two blocks one
/// `dpbusd` covers.
#[target_feature(enable = "avx512f")]
#[inline]
pub(super) unsafe fn pair_scales(sc: __m512, j: i32) -> __m512 {
    let base = _mm512_set_epi32(1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0);
    _mm512_permutexvar_ps(_mm512_add_epi32(base, _mm512_set1_epi32(2 * j)), sc)
}

/// Two blocks' 4-bit values (32 nibble bytes from `w`) as bytes: (elements 0–15 of both blocks,
/// elements 16–31 of both). With `qh` (Q5: the two blocks' bit words), a nibble plus 16 sets
/// each element's fifth bit.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2")]
#[inline]
pub(super) unsafe fn nibbles2(w: *const u8, qh: Option<(u32, u32)>) -> (__m256i, __m256i) {
    let m4 = _mm256_set1_epi8(0x0F);
    let v = _mm256_loadu_si256(w as *const __m256i);
    let mut lo = _mm256_and_si256(v, m4);
    let mut hi = _mm256_and_si256(_mm256_srli_epi16(v, 4), m4);
    if let Some((b0, b1)) = qh {
        let sixteen = _mm256_set1_epi8(16);
        lo = _mm256_mask_add_epi8(lo, (b0 & 0xFFFF) | (b1 << 16), lo, sixteen);
        hi = _mm256_mask_add_epi8(hi, (b0 >> 16) | (b1 & 0xFFFF_0000), hi, sixteen);
    }
    (lo, hi)
}

/// Up to sixteen blocks' scales (`blocks` of them, from block `b` on; lanes past them are zero)
/// for `R` activation rows: per row the weight × activation scales (with `SPLIT`, the activation
/// scales alone), and the weight's own scales (with `SPLIT`, its half-block scales in two
/// registers). `Q4` adds the blocks' min terms to `acc`, whose lanes are summed in the end.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma,f16c")]
#[inline]
pub(super) unsafe fn scales16<T, S: Scale, const Q4: bool, const SPLIT: bool, const R: usize>(
    d: S,
    m: S,
    a: &[(&[T], &[f32], &[f32]); R],
    b: usize,
    blocks: usize,
    acc: &mut [__m512; R],
) -> ([__m512; R], __m512, __m512) {
    let mask = ((1u32 << blocks) - 1) as u16;
    let (dw, dw_hi) = if SPLIT {
        let hi = 2 * blocks - (2 * blocks).min(16);
        let dw_hi = if hi > 0 { d.load16(2 * b + 16, hi) } else { _mm512_setzero_ps() };
        (d.load16(2 * b, (2 * blocks).min(16)), dw_hi)
    } else {
        let dw = d.load16(b, blocks);
        (dw, dw)
    };
    let mut sc = [_mm512_setzero_ps(); R];
    for r in 0..R {
        let ad = _mm512_maskz_loadu_ps(mask, a[r].1.as_ptr().add(b));
        sc[r] = if SPLIT { ad } else { _mm512_mul_ps(dw, ad) };
    }
    if Q4 {
        let mw = m.load16(b, blocks);
        for r in 0..R {
            acc[r] = _mm512_fmadd_ps(mw, _mm512_maskz_loadu_ps(mask, a[r].2.as_ptr().add(b)), acc[r]);
        }
    }
    (sc, dw, dw_hi)
}

/// How far past a decode step's weight row [`stream_ahead`] asks for rows (bytes; 1 and 4 KiB
/// gained less, BENCHMARKS.md).
const STREAM_AHEAD: usize = 2048;

/// Asks the cache for the weight bytes [`STREAM_AHEAD`] past `row`, as many as it has, before a
/// single activation row (`R` = 1, a decode step) runs it; nothing for passes of several. A step
/// reads every weight once, each thread taking runs of rows a pool grab at a time, which on
/// SmolLM2's small matrices are a few kilobytes; left to the hardware's prefetchers such a step
/// ran slower (SmolLM2 tg128 +8 % with the requests on Zen 4, +4 % on its AVX2 path; Gemma 3,
/// three quarters of whose step is its Q8_0 output matrix in long runs, unchanged;
/// BENCHMARKS.md). Rows lie back to back, so the requests run ahead of the row in hand; past the
/// weight's end they touch nothing the program relies on.
#[inline(always)]
pub fn stream_ahead<const R: usize>(row: &[u8]) {
    if R != 1 {
        return;
    }
    let p = row.as_ptr().wrapping_add(STREAM_AHEAD) as *const i8;
    for l in (0..row.len()).step_by(64) {
        // SAFETY: a prefetch never faults, whatever the address.
        unsafe { _mm_prefetch::<_MM_HINT_T0>(p.wrapping_add(l)) };
    }
}
