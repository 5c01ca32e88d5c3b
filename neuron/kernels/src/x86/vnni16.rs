//! AVX-512 VNNI kernels for 16-bit activations (near-f32 accuracy; see `Precision::I16`), with
//! one activation scale a block: `vpdpwssd` on the widened weights.
//!
//! These take f16 or f32 weight scales (`S`); with `SPLIT` (Q6_K) a Q8 block has two scales, one
//! per 16 values, which are exactly the lo and hi halves the 16-bit layout keeps apart.
//!
//! The activation row is stored pair-interleaved: blocks 2p and 2p+1 occupy 64 i16 as
//! [2p lo half, 2p+1 lo half, 2p hi half, 2p+1 hi half] (an odd last block: its lo then hi half),
//! so that one `vpdpwssd` on the widened nibbles [lo₂ₚ lo₂ₚ₊₁] covers both blocks' low halves,
//! lanes 0–7 for block 2p and 8–15 for 2p+1: the same lane pattern as the 8-bit path.

use std::arch::x86_64::*;

use super::avx2::{block_q4_w16_avx2, scaled_q8_w16_avx2};
use super::common::{hsum256, nibbles2, pair_scales, scales16, sums};
use super::Act16;
use crate::scales::Scale;
use crate::QK;

/// Two blocks' weights widened to i16, in the pair-interleaved order: (lo halves, hi halves).
/// With `qh` (Q5), each element's fifth bit is set from the two blocks' bit words.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2")]
#[inline]
unsafe fn pair_w16_q4(w: *const u8, qh: Option<(u32, u32)>) -> (__m512i, __m512i) {
    let (lo, hi) = nibbles2(w, qh);
    (_mm512_cvtepu8_epi16(lo), _mm512_cvtepu8_epi16(hi))
}

#[target_feature(enable = "avx512f,avx512bw,avx2")]
#[inline]
unsafe fn pair_w16_q8(w: *const u8) -> (__m512i, __m512i) {
    let lo = _mm256_set_m128i(_mm_loadu_si128(w.add(QK) as *const __m128i), _mm_loadu_si128(w as *const __m128i));
    let hi = _mm256_set_m128i(
        _mm_loadu_si128(w.add(QK + 16) as *const __m128i),
        _mm_loadu_si128(w.add(16) as *const __m128i),
    );
    (_mm512_cvtepi8_epi16(lo), _mm512_cvtepi8_epi16(hi))
}

#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2")]
#[inline]
pub(super) unsafe fn pair_w16<const Q4: bool>(qs: &[u8], qh: &[u32], blk: usize) -> (__m512i, __m512i) {
    if Q4 {
        let bits = if qh.is_empty() { None } else { Some((qh[blk], qh[blk + 1])) };
        pair_w16_q4(qs.as_ptr().add(blk * 16), bits)
    } else {
        pair_w16_q8(qs.as_ptr().add(blk * QK))
    }
}

/// Lane i of the result picks `sub[4j + 2·(i ≥ 8) + HI]` from the 32 sub-block scales in
/// (`lo`, `hi`): the scales of blocks 2j and 2j+1's lo (or hi) halves, as one `dpwssd` lays them.
#[target_feature(enable = "avx512f")]
#[inline]
unsafe fn split_scales<const HI: i32>(lo: __m512, hi: __m512, j: i32) -> __m512 {
    let base = _mm512_set_epi32(2, 2, 2, 2, 2, 2, 2, 2, 0, 0, 0, 0, 0, 0, 0, 0);
    _mm512_permutex2var_ps(lo, _mm512_add_epi32(base, _mm512_set1_epi32(4 * j + HI)), hi)
}

/// `rows` activation rows against one weight row, 16-bit activations, AVX-512 VNNI.
/// `Q4` selects the nibble format (with its min term) over Q8; `SPLIT` (Q8 only) one scale per
/// 16 values.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
pub unsafe fn dot_w16_vnni<S: Scale, const Q4: bool, const SPLIT: bool, const R: usize>(
    qs: &[u8],
    d: S,
    m: S,
    qh: &[u32],
    a: &[Act16; R],
) -> [f32; R] {
    let nb = a.first().map_or(0, |r| r.1.len());
    let bytes = if Q4 { 16 } else { QK };
    debug_assert!(qs.len() >= nb * bytes && d.len() >= nb * (1 + SPLIT as usize) && (!Q4 || m.len() >= nb));
    // SPLIT is for Q8 blocks, and K-quant rows hold whole super-blocks (an even block count).
    debug_assert!(!SPLIT || (!Q4 && nb.is_multiple_of(2)));
    debug_assert!(a.iter().all(|(q, ad, s)| q.len() >= nb * QK && ad.len() >= nb && s.len() >= nb));
    let zero = _mm512_setzero_si512();
    let mut acc = [_mm512_setzero_ps(); R];
    let mut b = 0;
    // Sixteen blocks a pass, and the whole pairs left (640 = 20 blocks is Gemma 3's width) through
    // the same code with their scales loaded under a mask.
    while b + 2 <= nb {
        let blocks = (nb - b).min(16) & !1;
        let (sc, dw, dw_hi) = scales16::<_, S, Q4, SPLIT, R>(d, m, a, b, blocks, &mut acc);
        for j in 0..blocks / 2 {
            let blk = b + 2 * j;
            let (wl, wh) = pair_w16::<Q4>(qs, qh, blk);
            let (sl, sh) = if SPLIT {
                (split_scales::<0>(dw, dw_hi, j as i32), split_scales::<1>(dw, dw_hi, j as i32))
            } else {
                (dw, dw)
            };
            for r in 0..R {
                let x = a[r].0.as_ptr().add(32 * blk);
                let pl = _mm512_dpwssd_epi32(zero, wl, _mm512_loadu_si512(x as *const __m512i));
                if SPLIT {
                    let ph = _mm512_dpwssd_epi32(zero, wh, _mm512_loadu_si512(x.add(32) as *const __m512i));
                    let s = pair_scales(sc[r], j as i32);
                    acc[r] = _mm512_fmadd_ps(_mm512_mul_ps(sl, s), _mm512_cvtepi32_ps(pl), acc[r]);
                    acc[r] = _mm512_fmadd_ps(_mm512_mul_ps(sh, s), _mm512_cvtepi32_ps(ph), acc[r]);
                } else {
                    let p = _mm512_dpwssd_epi32(pl, wh, _mm512_loadu_si512(x.add(32) as *const __m512i));
                    acc[r] = _mm512_fmadd_ps(pair_scales(sc[r], j as i32), _mm512_cvtepi32_ps(p), acc[r]);
                }
            }
        }
        b += blocks;
    }
    let mut out = sums(acc);
    if b < nb {
        // The odd last block (never SPLIT: K-quant rows hold whole super-blocks).
        for (o, row) in out.iter_mut().zip(a) {
            *o += odd_block16::<S, Q4>(qs, d, m, qh, b, *row);
        }
    }
    out
}

/// Block `b`, a row's odd last block (in natural order at the row's end), against one row of
/// 16-bit activations, scaled: the tail of the pair-at-a-time kernels.
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
pub(super) unsafe fn odd_block16<S: Scale, const Q4: bool>(
    qs: &[u8],
    d: S,
    m: S,
    qh: &[u32],
    b: usize,
    a: Act16,
) -> f32 {
    let (q, ad, s) = a;
    let x = q.as_ptr().add(32 * b);
    if Q4 {
        let v = block_q4_w16_avx2(qs.as_ptr().add(b * 16), qh.get(b).copied(), x, x.add(16));
        hsum256(v) * d.get(b) * ad[b] + m.get(b) * s[b]
    } else {
        hsum256(scaled_q8_w16_avx2::<S, false>(qs.as_ptr().add(b * QK), d, b, ad[b], x, x.add(16), _mm256_setzero_ps()))
    }
}
