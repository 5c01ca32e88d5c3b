//! The AVX2 kernels (with FMA and F16C): what a host without AVX-512 VNNI runs. At 8 bits,
//! `maddubs` multiplies unsigned weight bytes by signed activation bytes into i16 pairs
//! (|15·127·2| and |128·127·2| both fit), `madd` with ones widens to i32, and each block's sum is
//! scaled in f32; these take the formats with one f16 scale a block and no fifth bits. At 16 bits
//! every format: weights widened to i16 and `madd` against the pair-interleaved activations.

use std::arch::x86_64::*;

use half::f16;

use super::common::hsum256;
use super::grouped_avx2::in_fours;
use crate::acts::halves16;
use crate::scales::Scale;
use crate::QK;

/// One Q4 block (16 nibble bytes) against 32 activation bytes: 8 i32 partial sums as f32.
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
unsafe fn block_q4_avx2(w: *const u8, a: *const i8) -> __m256 {
    let m4 = _mm_set1_epi8(0x0F);
    let v = _mm_loadu_si128(w as *const __m128i);
    let lo = _mm_and_si128(v, m4);
    let hi = _mm_and_si128(_mm_srli_epi16(v, 4), m4);
    let wv = _mm256_set_m128i(hi, lo);
    let av = _mm256_loadu_si256(a as *const __m256i);
    _mm256_cvtepi32_ps(_mm256_madd_epi16(_mm256_maddubs_epi16(wv, av), _mm256_set1_epi16(1)))
}

#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
unsafe fn block_q8_avx2(w: *const u8, a: *const i8) -> __m256 {
    let wv = _mm256_loadu_si256(w as *const __m256i);
    let av = _mm256_loadu_si256(a as *const __m256i);
    // |w| (unsigned) times a with w's sign moved onto it.
    let p = _mm256_maddubs_epi16(_mm256_sign_epi8(wv, wv), _mm256_sign_epi8(av, wv));
    _mm256_cvtepi32_ps(_mm256_madd_epi16(p, _mm256_set1_epi16(1)))
}

/// Σ over blocks of d·da·Σq·a + m·s.
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn dot_q4_avx2(qs: &[u8], d: &[f16], m: &[f16], aq: &[i8], ad: &[f32], asum: &[f32]) -> f32 {
    let nb = d.len();
    debug_assert!(qs.len() >= nb * 16 && m.len() >= nb && aq.len() >= nb * QK && ad.len() >= nb && asum.len() >= nb);
    let (mut acc, mut macc) = (_mm256_setzero_ps(), _mm256_setzero_ps());
    let mut b = 0;
    while b + 8 <= nb {
        // Eight blocks' scales at once: f16 → f32 in one instruction.
        let dw = _mm256_cvtph_ps(_mm_loadu_si128(d.as_ptr().add(b) as *const __m128i));
        let sc = _mm256_mul_ps(dw, _mm256_loadu_ps(ad.as_ptr().add(b)));
        let mw = _mm256_cvtph_ps(_mm_loadu_si128(m.as_ptr().add(b) as *const __m128i));
        macc = _mm256_fmadd_ps(mw, _mm256_loadu_ps(asum.as_ptr().add(b)), macc);
        for j in 0..8 {
            let p = block_q4_avx2(qs.as_ptr().add((b + j) * 16), aq.as_ptr().add((b + j) * QK));
            let s = _mm256_permutevar8x32_ps(sc, _mm256_set1_epi32(j as i32));
            acc = _mm256_fmadd_ps(s, p, acc);
        }
        b += 8;
    }
    let mut tail = 0f32;
    while b < nb {
        let p = hsum256(block_q4_avx2(qs.as_ptr().add(b * 16), aq.as_ptr().add(b * QK)));
        tail += d[b].to_f32() * ad[b] * p + m[b].to_f32() * asum[b];
        b += 1;
    }
    hsum256(acc) + hsum256(macc) + tail
}

#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn dot_q8_avx2(qs: &[u8], d: &[f16], aq: &[i8], ad: &[f32]) -> f32 {
    let nb = d.len();
    debug_assert!(qs.len() >= nb * QK && aq.len() >= nb * QK && ad.len() >= nb);
    let mut acc = _mm256_setzero_ps();
    let mut b = 0;
    while b + 8 <= nb {
        let dw = _mm256_cvtph_ps(_mm_loadu_si128(d.as_ptr().add(b) as *const __m128i));
        let sc = _mm256_mul_ps(dw, _mm256_loadu_ps(ad.as_ptr().add(b)));
        for j in 0..8 {
            let p = block_q8_avx2(qs.as_ptr().add((b + j) * QK), aq.as_ptr().add((b + j) * QK));
            acc = _mm256_fmadd_ps(_mm256_permutevar8x32_ps(sc, _mm256_set1_epi32(j as i32)), p, acc);
        }
        b += 8;
    }
    let mut tail = 0f32;
    while b < nb {
        let p = hsum256(block_q8_avx2(qs.as_ptr().add(b * QK), aq.as_ptr().add(b * QK)));
        tail += d[b].to_f32() * ad[b] * p;
        b += 1;
    }
    hsum256(acc) + tail
}

/// Sixteen fifth bits as i16 lanes of 16 or 0.
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
unsafe fn fifth_bits16(bits: u32) -> __m256i {
    let lanes = _mm256_setr_epi16(1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096, 8192, 16384, i16::MIN);
    let set = _mm256_cmpeq_epi16(_mm256_and_si256(_mm256_set1_epi16(bits as u16 as i16), lanes), lanes);
    _mm256_and_si256(set, _mm256_set1_epi16(16))
}

/// One Q4 (or, with `qh`'s bits, Q5) block against its 32 i16 activations (lo half at `a_lo`, hi
/// half at `a_hi`).
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
pub(super) unsafe fn block_q4_w16_avx2(w: *const u8, qh: Option<u32>, a_lo: *const i16, a_hi: *const i16) -> __m256 {
    let (lo, hi) = unpack_q4_w16_avx2(w, qh);
    let p = _mm256_add_epi32(
        _mm256_madd_epi16(lo, _mm256_loadu_si256(a_lo as *const __m256i)),
        _mm256_madd_epi16(hi, _mm256_loadu_si256(a_hi as *const __m256i)),
    );
    _mm256_cvtepi32_ps(p)
}

/// One Q8 block against its 32 i16 activations: the lo and hi halves' products, apart.
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
unsafe fn block_q8_w16_avx2(w: *const u8, a_lo: *const i16, a_hi: *const i16) -> (__m256i, __m256i) {
    let lo = _mm256_cvtepi8_epi16(_mm_loadu_si128(w as *const __m128i));
    let hi = _mm256_cvtepi8_epi16(_mm_loadu_si128(w.add(16) as *const __m128i));
    (
        _mm256_madd_epi16(lo, _mm256_loadu_si256(a_lo as *const __m256i)),
        _mm256_madd_epi16(hi, _mm256_loadu_si256(a_hi as *const __m256i)),
    )
}

/// Block `b`'s Q8 dot product against activations with scale `ad`, scaled: by one weight scale,
/// or with `SPLIT` one per half.
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
pub(super) unsafe fn scaled_q8_w16_avx2<S: Scale, const SPLIT: bool>(
    w: *const u8,
    d: S,
    b: usize,
    ad: f32,
    a_lo: *const i16,
    a_hi: *const i16,
    acc: __m256,
) -> __m256 {
    let (lo, hi) = block_q8_w16_avx2(w, a_lo, a_hi);
    if SPLIT {
        let acc = _mm256_fmadd_ps(_mm256_set1_ps(d.get(2 * b) * ad), _mm256_cvtepi32_ps(lo), acc);
        _mm256_fmadd_ps(_mm256_set1_ps(d.get(2 * b + 1) * ad), _mm256_cvtepi32_ps(hi), acc)
    } else {
        _mm256_fmadd_ps(_mm256_set1_ps(d.get(b) * ad), _mm256_cvtepi32_ps(_mm256_add_epi32(lo, hi)), acc)
    }
}

/// A Q4 (or Q5) block's 32 values widened to i16, lo and hi halves: unpacked once for all the
/// activation rows of a pass.
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
unsafe fn unpack_q4_w16_avx2(w: *const u8, qh: Option<u32>) -> (__m256i, __m256i) {
    let m4 = _mm_set1_epi8(0x0F);
    let v = _mm_loadu_si128(w as *const __m128i);
    let mut lo = _mm256_cvtepu8_epi16(_mm_and_si128(v, m4));
    let mut hi = _mm256_cvtepu8_epi16(_mm_and_si128(_mm_srli_epi16(v, 4), m4));
    if let Some(bits) = qh {
        lo = _mm256_or_si256(lo, fifth_bits16(bits));
        hi = _mm256_or_si256(hi, fifth_bits16(bits >> 16));
    }
    (lo, hi)
}

/// One Q4 (or Q5) weight row against `R` 16-bit activation rows. Each block is unpacked once
/// for four activation rows (one row a call unpacked it for every row, 4/5 of an AVX2 host's
/// prefill; eight at once spilled the accumulators of AVX2's sixteen registers); every row's
/// sum is the same float a pass of one gives.
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn dot_q4_w16_avx2<S: Scale, const R: usize>(
    qs: &[u8],
    d: S,
    m: S,
    qh: &[u32],
    a: &[(&[i16], &[f32], &[f32]); R],
) -> [f32; R] {
    // SAFETY: this function's caller detected the features.
    in_fours(a, |q| unsafe { q4_w16_rows(qs, d, m, qh, q) }, |a| unsafe { q4_w16_rows(qs, d, m, qh, a) })
}

#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
unsafe fn q4_w16_rows<S: Scale, const R: usize>(
    qs: &[u8],
    d: S,
    m: S,
    qh: &[u32],
    a: &[(&[i16], &[f32], &[f32]); R],
) -> [f32; R] {
    let nb = d.len();
    assert!(qs.len() >= nb * 16 && m.len() >= nb && (qh.is_empty() || qh.len() >= nb));
    assert!(a.iter().all(|(q, ad, s)| q.len() >= nb * QK && ad.len() >= nb && s.len() >= nb));
    let mut acc = [_mm256_setzero_ps(); R];
    let mut mt = [0f32; R];
    for b in 0..nb {
        let (lo, hi) = halves16(nb, b);
        let bits = if qh.is_empty() { None } else { Some(*qh.get_unchecked(b)) };
        let (wlo, whi) = unpack_q4_w16_avx2(qs.as_ptr().add(b * 16), bits);
        let (db, mb) = (d.get(b), m.get(b));
        for r in 0..R {
            let (q, ad, s) = a[r];
            let p = _mm256_add_epi32(
                _mm256_madd_epi16(wlo, _mm256_loadu_si256(q.as_ptr().add(lo) as *const __m256i)),
                _mm256_madd_epi16(whi, _mm256_loadu_si256(q.as_ptr().add(hi) as *const __m256i)),
            );
            acc[r] = _mm256_fmadd_ps(_mm256_set1_ps(db * *ad.get_unchecked(b)), _mm256_cvtepi32_ps(p), acc[r]);
            mt[r] += mb * *s.get_unchecked(b);
        }
    }
    std::array::from_fn(|r| hsum256(acc[r]) + mt[r])
}

/// One Q8 weight row against `R` 16-bit activation rows, each block widened once for four of
/// them (as [`dot_q4_w16_avx2`]); with `SPLIT` a scale per half block.
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn dot_q8_w16_avx2<S: Scale, const SPLIT: bool, const R: usize>(
    qs: &[u8],
    d: S,
    a: &[(&[i16], &[f32], &[f32]); R],
) -> [f32; R] {
    // SAFETY: this function's caller detected the features.
    in_fours(
        a,
        |q| unsafe { q8_w16_rows::<S, SPLIT, 4>(qs, d, q) },
        |a| unsafe { q8_w16_rows::<S, SPLIT, R>(qs, d, a) },
    )
}

#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
unsafe fn q8_w16_rows<S: Scale, const SPLIT: bool, const R: usize>(
    qs: &[u8],
    d: S,
    a: &[(&[i16], &[f32], &[f32]); R],
) -> [f32; R] {
    let nb = a.first().map_or(0, |r| r.1.len());
    assert!(qs.len() >= nb * QK && d.len() >= nb * (1 + SPLIT as usize));
    assert!(a.iter().all(|(q, ad, _)| q.len() >= nb * QK && ad.len() == nb));
    let mut acc = [_mm256_setzero_ps(); R];
    for b in 0..nb {
        let (lo, hi) = halves16(nb, b);
        let w = qs.as_ptr().add(b * QK);
        let wlo = _mm256_cvtepi8_epi16(_mm_loadu_si128(w as *const __m128i));
        let whi = _mm256_cvtepi8_epi16(_mm_loadu_si128(w.add(16) as *const __m128i));
        for r in 0..R {
            let (q, ad, _) = a[r];
            let ad = *ad.get_unchecked(b);
            let plo = _mm256_madd_epi16(wlo, _mm256_loadu_si256(q.as_ptr().add(lo) as *const __m256i));
            let phi = _mm256_madd_epi16(whi, _mm256_loadu_si256(q.as_ptr().add(hi) as *const __m256i));
            acc[r] = if SPLIT {
                let t = _mm256_fmadd_ps(_mm256_set1_ps(d.get(2 * b) * ad), _mm256_cvtepi32_ps(plo), acc[r]);
                _mm256_fmadd_ps(_mm256_set1_ps(d.get(2 * b + 1) * ad), _mm256_cvtepi32_ps(phi), t)
            } else {
                _mm256_fmadd_ps(_mm256_set1_ps(d.get(b) * ad), _mm256_cvtepi32_ps(_mm256_add_epi32(plo, phi)), acc[r])
            };
        }
    }
    std::array::from_fn(|r| hsum256(acc[r]))
}
