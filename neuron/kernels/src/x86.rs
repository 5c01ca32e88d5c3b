//! The x86 kernels. Every function here is `unsafe` only for its `target_feature`: the caller
//! must have detected the features at run time (`super::level`). Slices hold whole blocks.
//!
//! AVX2: `maddubs` multiplies unsigned weight bytes by signed activation bytes into i16 pairs
//! (|15·127·2| and |128·127·2| both fit), `madd` with ones widens to i32, and each block's sum is
//! scaled in f32. AVX-512 VNNI: `dpbusd` does multiply, pair-add and accumulate in one
//! instruction on 64 bytes, two blocks per register.

use std::arch::x86_64::*;

use half::f16;

use super::{halves16, KScales, Scale};

const QK: usize = super::QK;

#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
unsafe fn hsum256(v: __m256) -> f32 {
    let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    let s = _mm_hadd_ps(s, s);
    _mm_cvtss_f32(_mm_hadd_ps(s, s))
}

/// Each accumulator's sixteen lanes summed. Four or eight rows share the shuffles (a transposed
/// tree of `hadd`s: a tenth of a short row's kernel went to eight separate reductions); one row
/// takes the same tree alone, so every row's sum is the same float whatever pass it was in.
#[target_feature(enable = "avx512f,avx2,fma,f16c")]
#[inline]
unsafe fn sums<const R: usize>(acc: [__m512; R]) -> [f32; R] {
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

/// Lane i of the result picks scale 2j (lanes 0–7) or 2j + 1 (lanes 8–15): the two blocks one
/// `dpbusd` covers.
#[target_feature(enable = "avx512f")]
#[inline]
unsafe fn pair_scales(sc: __m512, j: i32) -> __m512 {
    let base = _mm512_set_epi32(1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0);
    _mm512_permutexvar_ps(_mm512_add_epi32(base, _mm512_set1_epi32(2 * j)), sc)
}

/// One activation row's quantized values, block scales and block sums.
pub type ActRef<'a> = (&'a [i8], &'a [f32], &'a [f32]);

/// The same at 16 bits (pair-interleaved, see below).
pub type Act16<'a> = (&'a [i16], &'a [f32], &'a [f32]);

/// Two blocks' 4-bit values (32 nibble bytes from `w`) as bytes: (elements 0–15 of both blocks,
/// elements 16–31 of both). With `qh` (Q5: the two blocks' bit words), a nibble plus 16 sets
/// each element's fifth bit.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2")]
#[inline]
unsafe fn nibbles2(w: *const u8, qh: Option<(u32, u32)>) -> (__m256i, __m256i) {
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

/// [`pair_w16_q4`] less `offset` (Q4_0: 8; Q5_0: 16, where a clear fifth bit takes 16 off the
/// nibble in one masked subtract instead of a set one adding 16 before the offset comes off).
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2")]
#[inline]
unsafe fn pair_w16_signed(w: *const u8, qh: &[u32], blk: usize, offset: i16) -> (__m512i, __m512i) {
    let m4 = _mm256_set1_epi8(0x0F);
    let v = _mm256_loadu_si256(w as *const __m256i);
    let (mut lo, mut hi) = (_mm256_and_si256(v, m4), _mm256_and_si256(_mm256_srli_epi16(v, 4), m4));
    if qh.is_empty() {
        let off = _mm256_set1_epi8(offset as i8);
        (lo, hi) = (_mm256_sub_epi8(lo, off), _mm256_sub_epi8(hi, off));
    } else {
        debug_assert_eq!(offset, 16);
        let (b0, b1, sixteen) = (qh[blk], qh[blk + 1], _mm256_set1_epi8(16));
        lo = _mm256_mask_sub_epi8(lo, !((b0 & 0xFFFF) | (b1 << 16)), lo, sixteen);
        hi = _mm256_mask_sub_epi8(hi, !((b0 >> 16) | (b1 & 0xFFFF_0000)), hi, sixteen);
    }
    (_mm512_cvtepi8_epi16(lo), _mm512_cvtepi8_epi16(hi))
}

/// Two blocks' weights as `dpbusd`'s unsigned bytes, in the activations' order, and for Q8 the
/// mask of negative weights (their sign moves onto the activations). Q4: the nibbles
/// `[lo₀ lo₁ | hi₀ hi₁]` reordered to `[lo₀ hi₀ lo₁ hi₁]`, plus 16 where a Q5 fifth bit is set.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2")]
#[inline]
unsafe fn pair_w8<const Q4: bool>(qs: &[u8], qh: &[u32], blk: usize) -> (__m512i, __mmask64) {
    if Q4 {
        let bits = if qh.is_empty() { None } else { Some((qh[blk], qh[blk + 1])) };
        let (lo, hi) = nibbles2(qs.as_ptr().add(blk * 16), bits);
        let w = _mm512_inserti64x4(_mm512_castsi256_si512(lo), hi, 1);
        (_mm512_shuffle_i64x2(w, w, 0b11_01_10_00), 0)
    } else {
        let w = _mm512_loadu_si512(qs.as_ptr().add(blk * QK) as *const __m512i);
        (_mm512_abs_epi8(w), _mm512_movepi8_mask(w))
    }
}

/// Lane i of the result picks `sub[4j + i/4]` from the 32 half-block scales in (`lo`, `hi`):
/// with 8-bit activations in natural order, `dpbusd` lane i sums values 4i..4i+3 of a pair.
#[target_feature(enable = "avx512f")]
#[inline]
unsafe fn split_scales8(lo: __m512, hi: __m512, j: i32) -> __m512 {
    let base = _mm512_set_epi32(3, 3, 3, 3, 2, 2, 2, 2, 1, 1, 1, 1, 0, 0, 0, 0);
    _mm512_permutex2var_ps(lo, _mm512_add_epi32(base, _mm512_set1_epi32(4 * j)), hi)
}

/// Up to sixteen blocks' scales (`blocks` of them, from block `b` on; lanes past them are zero)
/// for `R` activation rows: per row the weight × activation scales (with `SPLIT`, the activation
/// scales alone), and the weight's own scales (with `SPLIT`, its half-block scales in two
/// registers). `Q4` adds the blocks' min terms to `acc`, whose lanes are summed in the end.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma,f16c")]
#[inline]
unsafe fn scales16<T, S: Scale, const Q4: bool, const SPLIT: bool, const R: usize>(
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

/// `R` activation rows (8-bit) against one weight row, AVX-512 VNNI: with `R` = 4 (prefill) each
/// pair of weight blocks is unpacked once and used four times. `Q4` selects the nibble formats
/// (with their min term; Q5's fifth bits come in `qh`), `SPLIT` (Q8 only) one scale per 16 values.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
pub unsafe fn dot_w8_vnni<S: Scale, const Q4: bool, const SPLIT: bool, const R: usize>(
    qs: &[u8],
    d: S,
    m: S,
    qh: &[u32],
    a: [ActRef; R],
) -> [f32; R] {
    let nb = a.first().map_or(0, |r| r.1.len());
    debug_assert!(qs.len() >= nb * if Q4 { 16 } else { QK } && d.len() >= nb * (1 + SPLIT as usize));
    debug_assert!((!Q4 || m.len() >= nb) && (qh.is_empty() || qh.len() >= nb));
    debug_assert!(!SPLIT || (!Q4 && nb.is_multiple_of(2)));
    debug_assert!(a.iter().all(|(q, ad, s)| q.len() >= nb * QK && ad.len() >= nb && s.len() >= nb));
    let zero = _mm512_setzero_si512();
    let mut acc = [_mm512_setzero_ps(); R];
    let mut b = 0;
    // Sixteen blocks a pass, and the whole pairs left (576 = 18 blocks is a common width) through
    // the same code with their scales loaded under a mask.
    while b + 2 <= nb {
        let blocks = (nb - b).min(16) & !1;
        let (sc, dw, dw_hi) = scales16::<_, S, Q4, SPLIT, R>(d, m, &a, b, blocks, &mut acc);
        for j in 0..blocks / 2 {
            let blk = b + 2 * j;
            let (w, neg) = pair_w8::<Q4>(qs, qh, blk);
            let ws = if SPLIT { split_scales8(dw, dw_hi, j as i32) } else { dw };
            for r in 0..R {
                let mut x = _mm512_loadu_si512(a[r].0.as_ptr().add(blk * QK) as *const __m512i);
                if !Q4 {
                    x = _mm512_mask_sub_epi8(x, neg, zero, x);
                }
                let p = _mm512_dpbusd_epi32(zero, w, x);
                let s = pair_scales(sc[r], j as i32);
                let s = if SPLIT { _mm512_mul_ps(s, ws) } else { s };
                acc[r] = _mm512_fmadd_ps(s, _mm512_cvtepi32_ps(p), acc[r]);
            }
        }
        b += blocks;
    }
    let mut out = sums(acc);
    for r in 0..R {
        if b < nb {
            // The odd last block (never SPLIT: K-quant rows hold whole super-blocks).
            let (q, ad, s) = a[r];
            let x = &q[b * QK..b * QK + QK];
            let sum: i32 = if Q4 {
                let (w, hb) = (&qs[b * 16..b * 16 + 16], qh.get(b).copied().unwrap_or(0));
                let v = |j: usize, n: u8| n as i32 | (((hb >> j) & 1) << 4) as i32;
                (0..16).map(|j| v(j, w[j] & 15) * x[j] as i32 + v(j + 16, w[j] >> 4) * x[j + 16] as i32).sum()
            } else {
                (0..QK).map(|j| qs[b * QK + j] as i8 as i32 * x[j] as i32).sum()
            };
            out[r] += d.get(b) * ad[b] * sum as f32;
            if Q4 {
                out[r] += m.get(b) * s[b];
            }
        }
    }
    out
}

// ---- 16-bit activations (near-f32 accuracy; see `Precision::I16`) ----
//
// These take f16 or f32 weight scales (`S`); with `SPLIT` (Q6_K) a Q8 block has two scales, one
// per 16 values, which are exactly the lo and hi halves the 16-bit layout keeps apart.
//
// The activation row is stored pair-interleaved: blocks 2p and 2p+1 occupy 64 i16 as
// [2p lo half, 2p+1 lo half, 2p hi half, 2p+1 hi half] (an odd last block: its lo then hi half),
// so that one `vpdpwssd` on the widened nibbles [lo₂ₚ lo₂ₚ₊₁] covers both blocks' low halves,
// lanes 0–7 for block 2p and 8–15 for 2p+1: the same lane pattern as the 8-bit path.

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
unsafe fn block_q4_w16_avx2(w: *const u8, qh: Option<u32>, a_lo: *const i16, a_hi: *const i16) -> __m256 {
    let m4 = _mm_set1_epi8(0x0F);
    let v = _mm_loadu_si128(w as *const __m128i);
    let mut lo = _mm256_cvtepu8_epi16(_mm_and_si128(v, m4));
    let mut hi = _mm256_cvtepu8_epi16(_mm_and_si128(_mm_srli_epi16(v, 4), m4));
    if let Some(bits) = qh {
        lo = _mm256_or_si256(lo, fifth_bits16(bits));
        hi = _mm256_or_si256(hi, fifth_bits16(bits >> 16));
    }
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
unsafe fn scaled_q8_w16_avx2<S: Scale, const SPLIT: bool>(
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

#[target_feature(enable = "avx2,fma,f16c")]
#[allow(clippy::too_many_arguments)]
pub unsafe fn dot_q4_w16_avx2<S: Scale>(
    qs: &[u8],
    d: S,
    m: S,
    qh: &[u32],
    aq: &[i16],
    ad: &[f32],
    asum: &[f32],
) -> f32 {
    let nb = d.len();
    debug_assert!(qs.len() >= nb * 16 && aq.len() >= nb * QK && ad.len() >= nb && asum.len() >= nb);
    debug_assert!(m.len() >= nb);
    let mut acc = _mm256_setzero_ps();
    let mut mt = 0f32;
    for b in 0..nb {
        let (lo, hi) = halves16(nb, b);
        let p =
            block_q4_w16_avx2(qs.as_ptr().add(b * 16), qh.get(b).copied(), aq.as_ptr().add(lo), aq.as_ptr().add(hi));
        acc = _mm256_fmadd_ps(_mm256_set1_ps(d.get(b) * ad[b]), p, acc);
        mt += m.get(b) * asum[b];
    }
    hsum256(acc) + mt
}

#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn dot_q8_w16_avx2<S: Scale, const SPLIT: bool>(qs: &[u8], d: S, aq: &[i16], ad: &[f32]) -> f32 {
    let nb = ad.len();
    debug_assert!(qs.len() >= nb * QK && aq.len() >= nb * QK && d.len() >= nb * (1 + SPLIT as usize));
    let mut acc = _mm256_setzero_ps();
    for (b, &da) in ad.iter().enumerate() {
        let (lo, hi) = halves16(nb, b);
        let (x_lo, x_hi) = (aq.as_ptr().add(lo), aq.as_ptr().add(hi));
        acc = scaled_q8_w16_avx2::<S, SPLIT>(qs.as_ptr().add(b * QK), d, b, da, x_lo, x_hi, acc);
    }
    hsum256(acc)
}

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
unsafe fn pair_w16<const Q4: bool>(qs: &[u8], qh: &[u32], blk: usize) -> (__m512i, __m512i) {
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
unsafe fn odd_block16<S: Scale, const Q4: bool>(qs: &[u8], d: S, m: S, qh: &[u32], b: usize, a: Act16) -> f32 {
    let (q, ad, s) = a;
    let x = q.as_ptr().add(32 * b);
    if Q4 {
        let v = block_q4_w16_avx2(qs.as_ptr().add(b * 16), qh.get(b).copied(), x, x.add(16));
        hsum256(v) * d.get(b) * ad[b] + m.get(b) * s[b]
    } else {
        hsum256(scaled_q8_w16_avx2::<S, false>(qs.as_ptr().add(b * QK), d, b, ad[b], x, x.add(16), _mm256_setzero_ps()))
    }
}

/// A block pair's 64 widened weights (`wl`, `wh`) against the 64 activations at `x`: each lane
/// the sum of its four products.
#[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
#[inline]
unsafe fn pair_dot(wl: __m512i, wh: __m512i, x: *const i16) -> __m512i {
    pair_dot_into(_mm512_setzero_si512(), wl, wh, x)
}

/// [`pair_dot`] added to `acc`. Written out because LLVM may otherwise split the chained
/// `vpdpwssd` into two `vpmaddwd` and a `vpaddd` (a third more instructions; Gemma 3's Q5_0
/// matmul at 8 rows a pass 71 → 77 GMAC/s written out). A single row (decode) is faster
/// without it (SmolLM2 tg128 −6 % with it), as the compiler then schedules the loads itself.
#[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
#[inline]
unsafe fn pair_dot_into(acc: __m512i, wl: __m512i, wh: __m512i, x: *const i16) -> __m512i {
    let mut acc = acc;
    std::arch::asm!(
        "vpdpwssd {acc}, {wl}, zmmword ptr [{x}]",
        "vpdpwssd {acc}, {wh}, zmmword ptr [{x} + 64]",
        acc = inout(zmm_reg) acc,
        wl = in(zmm_reg) wl,
        wh = in(zmm_reg) wh,
        x = in(reg) x,
        options(pure, readonly, nostack, preserves_flags),
    );
    acc
}

/// [`dot_w16_vnni`] for activation rows with one scale each (`Acts::quantize_grouped` with the
/// whole row as its group) and f16 weight scales: a block pair's weight scales are laid out once
/// for all rows, and a row's activation scale is applied once at the end, so per row and pair
/// the float work is one convert and one multiply-add. With an `offset` (Q4_0, Q5_0) the min
/// term is taken off the widened weights, once for all rows, instead of summed per row.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
#[inline]
pub unsafe fn dot_r16_vnni<const Q4: bool, const R: usize>(
    qs: &[u8],
    d: &[f16],
    m: &[f16],
    qh: &[u32],
    offset: i16,
    a: &[Act16; R],
) -> [f32; R] {
    let nb = a.first().map_or(0, |r| r.1.len());
    debug_assert!(qs.len() >= nb * if Q4 { 16 } else { QK } && d.len() >= nb && (!Q4 || m.len() >= nb));
    debug_assert!(a.iter().all(|(q, ad, s)| q.len() >= nb * QK && ad.len() >= nb && s.len() >= nb));
    debug_assert!(a.iter().all(|(_, ad, _)| ad.iter().all(|&v| v == ad[0])));
    // `acc`: Σ weight scale · integer dot, in activation units; `mins`: the min terms, whose
    // block sums already carry the activation scale.
    let mut acc = [_mm512_setzero_ps(); R];
    let mut mins = [_mm512_setzero_ps(); R];
    let mut b = 0;
    while b + 2 <= nb {
        let blocks = (nb - b).min(16) & !1;
        let dw = d.load16(b, blocks);
        if Q4 && offset == 0 {
            let (mw, mask) = (m.load16(b, blocks), ((1u32 << blocks) - 1) as u16);
            for r in 0..R {
                mins[r] = _mm512_fmadd_ps(mw, _mm512_maskz_loadu_ps(mask, a[r].2.as_ptr().add(b)), mins[r]);
            }
        }
        for j in 0..blocks / 2 {
            let blk = b + 2 * j;
            let (wl, wh) = if Q4 && offset != 0 {
                pair_w16_signed(qs.as_ptr().add(blk * 16), qh, blk, offset)
            } else {
                pair_w16::<Q4>(qs, qh, blk)
            };
            let s = pair_scales(dw, j as i32);
            for r in 0..R {
                let x = a[r].0.as_ptr().add(32 * blk);
                // The same integers either way; decode (one row) is faster left to the compiler.
                let p = if R == 1 {
                    let lo = _mm512_madd_epi16(wl, _mm512_loadu_si512(x as *const __m512i));
                    _mm512_dpwssd_epi32(lo, wh, _mm512_loadu_si512(x.add(32) as *const __m512i))
                } else {
                    pair_dot(wl, wh, x)
                };
                acc[r] = _mm512_fmadd_ps(s, _mm512_cvtepi32_ps(p), acc[r]);
            }
        }
        b += blocks;
    }
    for r in 0..R {
        let ad = _mm512_set1_ps(a[r].1.first().copied().unwrap_or(0.0));
        acc[r] = if Q4 && offset == 0 { _mm512_fmadd_ps(ad, acc[r], mins[r]) } else { _mm512_mul_ps(ad, acc[r]) };
    }
    let mut out = sums(acc);
    if b < nb {
        for (o, row) in out.iter_mut().zip(a) {
            *o += odd_block16::<_, Q4>(qs, d, m, qh, b, *row);
        }
    }
    out
}

/// Sixteen i16 lanes of index `lo`, then sixteen of `hi`: for `vpermw`, which sub-scale each
/// widened weight of a block pair takes.
#[target_feature(enable = "avx512f,avx2")]
#[inline]
unsafe fn two_halves(lo: i16, hi: i16) -> __m512i {
    _mm512_inserti64x4(_mm512_castsi256_si512(_mm256_set1_epi16(lo)), _mm256_set1_epi16(hi), 1)
}

/// K-quant weights against `R` activation rows (16-bit) that carry one scale per super-block
/// (`Acts::quantize_grouped(.., 8)`). `Q4`: Q4_K, nibbles with one 6-bit scale and min a block
/// (`PER` = 8 a super-block); else Q6_K, i8 values with one i8 scale per 16 (`PER` = 16).
/// Each weight pair is widened and multiplied by its integer sub-scales once for all rows, and a
/// super-block's products sum in i32 (|q·sc| ≤ 32·128 and |a| ≤ 32767 keep a lane's 16 products
/// below 2³¹), so the float work is one convert and one multiply-add per super-block and row
/// instead of per block pair.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
#[inline]
pub unsafe fn dot_k16_vnni<const Q4: bool, const PER: usize, const R: usize>(
    qs: &[u8],
    d: KScales<PER>,
    m: KScales<PER>,
    a: &[Act16; R],
) -> [f32; R] {
    let nb = a.first().map_or(0, |r| r.1.len());
    debug_assert!(nb.is_multiple_of(8) && qs.len() >= nb * if Q4 { 16 } else { QK });
    debug_assert!(d.q.len() >= nb * if Q4 { 1 } else { 2 } && (!Q4 || m.q.len() >= nb));
    debug_assert!(a.iter().all(|(q, ad, s)| q.len() >= nb * QK && ad.len() >= nb && s.len() >= nb));
    let mut acc = [_mm512_setzero_ps(); R];
    for sb in 0..nb / 8 {
        let b0 = 8 * sb;
        // The super-block's sub-scales as i16 in the low lanes: 8 (a block each) or 16.
        let sub = _mm512_castsi256_si512(if Q4 {
            _mm256_cvtepi8_epi16(_mm_loadl_epi64(d.q.as_ptr().add(b0) as *const __m128i))
        } else {
            _mm256_cvtepi8_epi16(_mm_loadu_si128(d.q.as_ptr().add(2 * b0) as *const __m128i))
        });
        if Q4 {
            // The min term, −dmin·min a block times the block's activation sum, in float.
            let mw = m.load16(b0, 8);
            for r in 0..R {
                acc[r] = _mm512_fmadd_ps(mw, _mm512_maskz_loadu_ps(0xFF, a[r].2.as_ptr().add(b0)), acc[r]);
            }
        }
        let mut iacc = [_mm512_setzero_si512(); R];
        for p in 0..4 {
            let blk = b0 + 2 * p;
            let (wl, wh) = pair_w16::<Q4>(qs, &[], blk);
            // Lanes 0–15 hold block blk's values, 16–31 block blk + 1's; for Q6_K, `wl` their
            // first 16 values (scales 4p and 4p + 2) and `wh` their last (4p + 1 and 4p + 3).
            let p = p as i16;
            let (il, ih) = if Q4 {
                (two_halves(2 * p, 2 * p + 1), two_halves(2 * p, 2 * p + 1))
            } else {
                (two_halves(4 * p, 4 * p + 2), two_halves(4 * p + 1, 4 * p + 3))
            };
            let wl = _mm512_mullo_epi16(wl, _mm512_permutexvar_epi16(il, sub));
            let wh = _mm512_mullo_epi16(wh, _mm512_permutexvar_epi16(ih, sub));
            for r in 0..R {
                let x = a[r].0.as_ptr().add(32 * blk);
                iacc[r] = if R == 1 {
                    let lo = _mm512_dpwssd_epi32(iacc[r], wl, _mm512_loadu_si512(x as *const __m512i));
                    _mm512_dpwssd_epi32(lo, wh, _mm512_loadu_si512(x.add(32) as *const __m512i))
                } else {
                    pair_dot_into(iacc[r], wl, wh, x)
                };
            }
        }
        // Entry 8·sb (or 16·sb) of the sub-scales belongs to super-block sb either way.
        let dsup = d.d[sb].to_f32();
        for r in 0..R {
            acc[r] = _mm512_fmadd_ps(_mm512_set1_ps(dsup * a[r].1[b0]), _mm512_cvtepi32_ps(iacc[r]), acc[r]);
        }
    }
    sums(acc)
}

/// One weight row for the kernels that take several per call: values, scales, mins, fifth bits.
pub type WRow<'a, S> = (&'a [u8], S, S, &'a [u32]);

/// [`dot_r16_vnni`] for weight rows `row(0..n)` in one call, each result to `put`: the
/// activation rows' set-up is paid once for them all (Gemma 3 pp512 +5 %, decode +7 % over one
/// call a weight row).
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
pub unsafe fn rows_r16_vnni<'w, const Q4: bool, const R: usize>(
    n: usize,
    row: impl Fn(usize) -> WRow<'w, &'w [f16]>,
    offset: i16,
    a: &[Act16; R],
    mut put: impl FnMut(usize, [f32; R]),
) {
    for t in 0..n {
        let (qs, d, m, qh) = row(t);
        put(t, dot_r16_vnni::<Q4, R>(qs, d, m, qh, offset, a));
    }
}

/// [`dot_k16_vnni`] for weight rows `row(0..n)` in one call, as [`rows_r16_vnni`].
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
pub unsafe fn rows_k16_vnni<'w, const Q4: bool, const PER: usize, const R: usize>(
    n: usize,
    row: impl Fn(usize) -> WRow<'w, KScales<'w, PER>>,
    a: &[Act16; R],
    mut put: impl FnMut(usize, [f32; R]),
) {
    for t in 0..n {
        let (qs, d, m, _) = row(t);
        put(t, dot_k16_vnni::<Q4, PER, R>(qs, d, m, a));
    }
}

/// One activation row (`x`, whole blocks) quantized to 16 bits with one scale per `group`
/// blocks, laid out as `Acts<i16>` keeps it (pair-interleaved, `halves16`): the same integers,
/// scales and sums as the scalar loop, whose rounding (half to even) `cvtps2dq` shares.
#[target_feature(enable = "avx512f,avx512bw,avx512vl")]
pub unsafe fn quantize_row16(x: &[f32], group: usize, q: &mut [i16], d: &mut [f32], s: &mut [f32]) {
    let nb = x.len() / QK;
    assert!(q.len() >= nb * QK && d.len() >= nb && s.len() >= nb && group > 0);
    let abs = |v: __m512| _mm512_castsi512_ps(_mm512_and_si512(_mm512_castps_si512(v), _mm512_set1_epi32(i32::MAX)));
    for g0 in (0..nb).step_by(group) {
        let g1 = (g0 + group).min(nb);
        let mut m = _mm512_setzero_ps();
        for i in (32 * g0..32 * g1).step_by(16) {
            // NaN-blind as the scalar loop's `f32::max`: maxps returns its second operand then.
            m = _mm512_max_ps(abs(_mm512_loadu_ps(x.as_ptr().add(i))), m);
        }
        let amax = _mm512_reduce_max_ps(m);
        let scale = amax / 32767.0;
        let inv = _mm512_set1_ps(if scale > 0.0 { 1.0 / scale } else { 0.0 });
        // A NaN quantizes to 0, as the scalar loop's `as i32` makes it.
        let scaled = |i: usize| {
            let v = _mm512_mul_ps(_mm512_loadu_ps(x.as_ptr().add(i)), inv);
            _mm512_maskz_cvtps_epi32(_mm512_cmp_ps_mask::<_CMP_ORD_Q>(v, v), v)
        };
        for b in g0..g1 {
            let (lo, hi) = halves16(nb, b);
            let (a, c) = (scaled(32 * b), scaled(32 * b + 16));
            _mm256_storeu_si256(q.as_mut_ptr().add(lo) as *mut __m256i, _mm512_cvtepi32_epi16(a));
            _mm256_storeu_si256(q.as_mut_ptr().add(hi) as *mut __m256i, _mm512_cvtepi32_epi16(c));
            d[b] = scale;
            s[b] = scale * _mm512_reduce_add_epi32(_mm512_add_epi32(a, c)) as f32;
        }
    }
}
