//! The x86 kernels. Every function here is `unsafe` only for its `target_feature`: the caller
//! must have detected the features at run time (`super::level`). Slices hold whole blocks.
//!
//! AVX2: `maddubs` multiplies unsigned weight bytes by signed activation bytes into i16 pairs
//! (|15·127·2| and |128·127·2| both fit), `madd` with ones widens to i32, and each block's sum is
//! scaled in f32. AVX-512 VNNI: `dpbusd` does multiply, pair-add and accumulate in one
//! instruction on 64 bytes, two blocks per register.

use std::arch::x86_64::*;

use half::f16;

use super::halves16;

const QK: usize = super::QK;

#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
unsafe fn hsum256(v: __m256) -> f32 {
    let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    let s = _mm_hadd_ps(s, s);
    _mm_cvtss_f32(_mm_hadd_ps(s, s))
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

#[target_feature(enable = "avx512f,avx512bw,avx512vnni,avx2,fma,f16c")]
pub unsafe fn dot_q4_vnni(qs: &[u8], d: &[f16], m: &[f16], aq: &[i8], ad: &[f32], asum: &[f32]) -> f32 {
    let nb = d.len();
    debug_assert!(qs.len() >= nb * 16 && m.len() >= nb && aq.len() >= nb * QK && ad.len() >= nb && asum.len() >= nb);
    let m4 = _mm256_set1_epi8(0x0F);
    let (mut acc, mut macc) = (_mm512_setzero_ps(), _mm512_setzero_ps());
    let mut b = 0;
    while b + 16 <= nb {
        let dw = _mm512_cvtph_ps(_mm256_loadu_si256(d.as_ptr().add(b) as *const __m256i));
        let sc = _mm512_mul_ps(dw, _mm512_loadu_ps(ad.as_ptr().add(b)));
        let mw = _mm512_cvtph_ps(_mm256_loadu_si256(m.as_ptr().add(b) as *const __m256i));
        macc = _mm512_fmadd_ps(mw, _mm512_loadu_ps(asum.as_ptr().add(b)), macc);
        for j in 0..8 {
            let blk = b + 2 * j;
            // Two blocks' nibbles: [lo₀ lo₁ | hi₀ hi₁] → 128-bit lanes reordered to
            // [lo₀ hi₀ lo₁ hi₁], the order of the two blocks' 64 activation bytes.
            let v = _mm256_loadu_si256(qs.as_ptr().add(blk * 16) as *const __m256i);
            let lo = _mm256_and_si256(v, m4);
            let hi = _mm256_and_si256(_mm256_srli_epi16(v, 4), m4);
            let w = _mm512_inserti64x4(_mm512_castsi256_si512(lo), hi, 1);
            let w = _mm512_shuffle_i64x2(w, w, 0b11_01_10_00);
            let a = _mm512_loadu_si512(aq.as_ptr().add(blk * QK) as *const __m512i);
            let p = _mm512_dpbusd_epi32(_mm512_setzero_si512(), w, a);
            acc = _mm512_fmadd_ps(pair_scales(sc, j as i32), _mm512_cvtepi32_ps(p), acc);
        }
        b += 16;
    }
    // Whole pairs left over (576 = 18 blocks is a common width): one dpbusd each.
    let mut mtail = 0f32;
    while b + 2 <= nb {
        let s0 = _mm512_set1_ps(d[b].to_f32() * ad[b]);
        let s1 = _mm512_set1_ps(d[b + 1].to_f32() * ad[b + 1]);
        let v = _mm256_loadu_si256(qs.as_ptr().add(b * 16) as *const __m256i);
        let lo = _mm256_and_si256(v, m4);
        let hi = _mm256_and_si256(_mm256_srli_epi16(v, 4), m4);
        let w = _mm512_inserti64x4(_mm512_castsi256_si512(lo), hi, 1);
        let w = _mm512_shuffle_i64x2(w, w, 0b11_01_10_00);
        let a = _mm512_loadu_si512(aq.as_ptr().add(b * QK) as *const __m512i);
        let p = _mm512_dpbusd_epi32(_mm512_setzero_si512(), w, a);
        acc = _mm512_fmadd_ps(_mm512_mask_blend_ps(0xFF00, s0, s1), _mm512_cvtepi32_ps(p), acc);
        mtail += m[b].to_f32() * asum[b] + m[b + 1].to_f32() * asum[b + 1];
        b += 2;
    }
    let mut total = _mm512_reduce_add_ps(acc) + _mm512_reduce_add_ps(macc) + mtail;
    if b < nb {
        total += dot_q4_avx2(&qs[b * 16..], &d[b..], &m[b..], &aq[b * QK..], &ad[b..], &asum[b..]);
    }
    total
}

#[target_feature(enable = "avx512f,avx512bw,avx512vnni,avx2,fma,f16c")]
pub unsafe fn dot_q8_vnni(qs: &[u8], d: &[f16], aq: &[i8], ad: &[f32]) -> f32 {
    let nb = d.len();
    debug_assert!(qs.len() >= nb * QK && aq.len() >= nb * QK && ad.len() >= nb);
    let mut acc = _mm512_setzero_ps();
    let zero = _mm512_setzero_si512();
    let mut b = 0;
    while b + 16 <= nb {
        let dw = _mm512_cvtph_ps(_mm256_loadu_si256(d.as_ptr().add(b) as *const __m256i));
        let sc = _mm512_mul_ps(dw, _mm512_loadu_ps(ad.as_ptr().add(b)));
        for j in 0..8 {
            let blk = b + 2 * j;
            let w = _mm512_loadu_si512(qs.as_ptr().add(blk * QK) as *const __m512i);
            let a = _mm512_loadu_si512(aq.as_ptr().add(blk * QK) as *const __m512i);
            // dpbusd wants unsigned × signed: |w| times a carrying w's sign.
            let a = _mm512_mask_sub_epi8(a, _mm512_movepi8_mask(w), zero, a);
            let p = _mm512_dpbusd_epi32(zero, _mm512_abs_epi8(w), a);
            acc = _mm512_fmadd_ps(pair_scales(sc, j as i32), _mm512_cvtepi32_ps(p), acc);
        }
        b += 16;
    }
    let mut total = _mm512_reduce_add_ps(acc);
    if b < nb {
        total += dot_q8_avx2(&qs[b * QK..], &d[b..], &aq[b * QK..], &ad[b..]);
    }
    total
}

/// One activation row's quantized values, block scales and block sums.
pub type ActRef<'a> = (&'a [i8], &'a [f32], &'a [f32]);

/// Four activation rows against one Q4 weight row: the nibbles are unpacked once per two
/// blocks and used four times (prefill).
#[target_feature(enable = "avx512f,avx512bw,avx512vnni,avx2,fma,f16c")]
pub unsafe fn dot_q4_vnni_x4(qs: &[u8], d: &[f16], m: &[f16], a: [ActRef; 4]) -> [f32; 4] {
    let nb = d.len();
    debug_assert!(qs.len() >= nb * 16 && m.len() >= nb);
    debug_assert!(a.iter().all(|(q, ad, s)| q.len() >= nb * QK && ad.len() >= nb && s.len() >= nb));
    let m4 = _mm256_set1_epi8(0x0F);
    let zero = _mm512_setzero_si512();
    let mut acc = [_mm512_setzero_ps(); 4];
    let mut macc = [_mm512_setzero_ps(); 4];
    let mut b = 0;
    while b + 16 <= nb {
        let dw = _mm512_cvtph_ps(_mm256_loadu_si256(d.as_ptr().add(b) as *const __m256i));
        let mw = _mm512_cvtph_ps(_mm256_loadu_si256(m.as_ptr().add(b) as *const __m256i));
        let mut sc = [_mm512_setzero_ps(); 4];
        for r in 0..4 {
            sc[r] = _mm512_mul_ps(dw, _mm512_loadu_ps(a[r].1.as_ptr().add(b)));
            macc[r] = _mm512_fmadd_ps(mw, _mm512_loadu_ps(a[r].2.as_ptr().add(b)), macc[r]);
        }
        for j in 0..8 {
            let blk = b + 2 * j;
            let v = _mm256_loadu_si256(qs.as_ptr().add(blk * 16) as *const __m256i);
            let lo = _mm256_and_si256(v, m4);
            let hi = _mm256_and_si256(_mm256_srli_epi16(v, 4), m4);
            let w = _mm512_inserti64x4(_mm512_castsi256_si512(lo), hi, 1);
            let w = _mm512_shuffle_i64x2(w, w, 0b11_01_10_00);
            for r in 0..4 {
                let x = _mm512_loadu_si512(a[r].0.as_ptr().add(blk * QK) as *const __m512i);
                let p = _mm512_dpbusd_epi32(zero, w, x);
                acc[r] = _mm512_fmadd_ps(pair_scales(sc[r], j as i32), _mm512_cvtepi32_ps(p), acc[r]);
            }
        }
        b += 16;
    }
    let mut out = [0f32; 4];
    for r in 0..4 {
        out[r] = _mm512_reduce_add_ps(acc[r]) + _mm512_reduce_add_ps(macc[r]);
        if b < nb {
            let (q, ad, s) = a[r];
            out[r] += dot_q4_avx2(&qs[b * 16..], &d[b..], &m[b..], &q[b * QK..], &ad[b..], &s[b..]);
        }
    }
    out
}

#[target_feature(enable = "avx512f,avx512bw,avx512vnni,avx2,fma,f16c")]
pub unsafe fn dot_q8_vnni_x4(qs: &[u8], d: &[f16], a: [ActRef; 4]) -> [f32; 4] {
    let nb = d.len();
    debug_assert!(qs.len() >= nb * QK);
    debug_assert!(a.iter().all(|(q, ad, _)| q.len() >= nb * QK && ad.len() >= nb));
    let zero = _mm512_setzero_si512();
    let mut acc = [_mm512_setzero_ps(); 4];
    let mut b = 0;
    while b + 16 <= nb {
        let dw = _mm512_cvtph_ps(_mm256_loadu_si256(d.as_ptr().add(b) as *const __m256i));
        let mut sc = [_mm512_setzero_ps(); 4];
        for r in 0..4 {
            sc[r] = _mm512_mul_ps(dw, _mm512_loadu_ps(a[r].1.as_ptr().add(b)));
        }
        for j in 0..8 {
            let blk = b + 2 * j;
            let w = _mm512_loadu_si512(qs.as_ptr().add(blk * QK) as *const __m512i);
            let neg = _mm512_movepi8_mask(w);
            let wa = _mm512_abs_epi8(w);
            for r in 0..4 {
                let x = _mm512_loadu_si512(a[r].0.as_ptr().add(blk * QK) as *const __m512i);
                let x = _mm512_mask_sub_epi8(x, neg, zero, x);
                let p = _mm512_dpbusd_epi32(zero, wa, x);
                acc[r] = _mm512_fmadd_ps(pair_scales(sc[r], j as i32), _mm512_cvtepi32_ps(p), acc[r]);
            }
        }
        b += 16;
    }
    let mut out = [0f32; 4];
    for r in 0..4 {
        out[r] = _mm512_reduce_add_ps(acc[r]);
        if b < nb {
            let (q, ad, _) = a[r];
            out[r] += dot_q8_avx2(&qs[b * QK..], &d[b..], &q[b * QK..], &ad[b..]);
        }
    }
    out
}

// ---- 16-bit activations (near-f32 accuracy; see `Precision::I16`) ----
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

#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
unsafe fn block_q8_w16_avx2(w: *const u8, a_lo: *const i16, a_hi: *const i16) -> __m256 {
    let lo = _mm256_cvtepi8_epi16(_mm_loadu_si128(w as *const __m128i));
    let hi = _mm256_cvtepi8_epi16(_mm_loadu_si128(w.add(16) as *const __m128i));
    let p = _mm256_add_epi32(
        _mm256_madd_epi16(lo, _mm256_loadu_si256(a_lo as *const __m256i)),
        _mm256_madd_epi16(hi, _mm256_loadu_si256(a_hi as *const __m256i)),
    );
    _mm256_cvtepi32_ps(p)
}

#[target_feature(enable = "avx2,fma,f16c")]
#[allow(clippy::too_many_arguments)]
pub unsafe fn dot_q4_w16_avx2(
    qs: &[u8],
    d: &[f16],
    m: &[f16],
    qh: &[u32],
    aq: &[i16],
    ad: &[f32],
    asum: &[f32],
) -> f32 {
    let nb = d.len();
    debug_assert!(qs.len() >= nb * 16 && aq.len() >= nb * QK && ad.len() >= nb && asum.len() >= nb);
    let mut acc = _mm256_setzero_ps();
    let mut mt = 0f32;
    for b in 0..nb {
        let (lo, hi) = halves16(nb, b);
        let p =
            block_q4_w16_avx2(qs.as_ptr().add(b * 16), qh.get(b).copied(), aq.as_ptr().add(lo), aq.as_ptr().add(hi));
        acc = _mm256_fmadd_ps(_mm256_set1_ps(d[b].to_f32() * ad[b]), p, acc);
        mt += m[b].to_f32() * asum[b];
    }
    hsum256(acc) + mt
}

#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn dot_q8_w16_avx2(qs: &[u8], d: &[f16], aq: &[i16], ad: &[f32]) -> f32 {
    let nb = d.len();
    debug_assert!(qs.len() >= nb * QK && aq.len() >= nb * QK && ad.len() >= nb);
    let mut acc = _mm256_setzero_ps();
    for b in 0..nb {
        let (lo, hi) = halves16(nb, b);
        let p = block_q8_w16_avx2(qs.as_ptr().add(b * QK), aq.as_ptr().add(lo), aq.as_ptr().add(hi));
        acc = _mm256_fmadd_ps(_mm256_set1_ps(d[b].to_f32() * ad[b]), p, acc);
    }
    hsum256(acc)
}

/// Two blocks' weights widened to i16, in the pair-interleaved order: (lo halves, hi halves).
/// With `qh` (Q5), each element's fifth bit is set from the two blocks' bit words.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2")]
#[inline]
unsafe fn pair_w16_q4(w: *const u8, qh: Option<(u32, u32)>) -> (__m512i, __m512i) {
    let m4 = _mm256_set1_epi8(0x0F);
    let v = _mm256_loadu_si256(w as *const __m256i);
    let mut lo = _mm256_and_si256(v, m4);
    let mut hi = _mm256_and_si256(_mm256_srli_epi16(v, 4), m4);
    if let Some((b0, b1)) = qh {
        // lo bytes are elements 0–15 of each block, hi bytes 16–31; a nibble plus 16 sets bit 4.
        let sixteen = _mm256_set1_epi8(16);
        lo = _mm256_mask_add_epi8(lo, (b0 & 0xFFFF) | (b1 << 16), lo, sixteen);
        hi = _mm256_mask_add_epi8(hi, (b0 >> 16) | (b1 & 0xFFFF_0000), hi, sixteen);
    }
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

/// `rows` activation rows against one weight row, 16-bit activations, AVX-512 VNNI.
/// `Q4` selects the nibble format (with its min term) over Q8.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
pub unsafe fn dot_w16_vnni<const Q4: bool, const R: usize>(
    qs: &[u8],
    d: &[f16],
    m: &[f16],
    qh: &[u32],
    a: [(&[i16], &[f32], &[f32]); R],
) -> [f32; R] {
    let nb = d.len();
    let bytes = if Q4 { 16 } else { QK };
    debug_assert!(qs.len() >= nb * bytes && (!Q4 || m.len() >= nb));
    debug_assert!(a.iter().all(|(q, ad, s)| q.len() >= nb * QK && ad.len() >= nb && s.len() >= nb));
    let zero = _mm512_setzero_si512();
    let mut acc = [_mm512_setzero_ps(); R];
    let mut macc = [_mm512_setzero_ps(); R];
    let mut b = 0;
    while b + 16 <= nb {
        let dw = _mm512_cvtph_ps(_mm256_loadu_si256(d.as_ptr().add(b) as *const __m256i));
        let mut sc = [_mm512_setzero_ps(); R];
        for r in 0..R {
            sc[r] = _mm512_mul_ps(dw, _mm512_loadu_ps(a[r].1.as_ptr().add(b)));
        }
        if Q4 {
            let mw = _mm512_cvtph_ps(_mm256_loadu_si256(m.as_ptr().add(b) as *const __m256i));
            for r in 0..R {
                macc[r] = _mm512_fmadd_ps(mw, _mm512_loadu_ps(a[r].2.as_ptr().add(b)), macc[r]);
            }
        }
        for j in 0..8 {
            let blk = b + 2 * j;
            let (wl, wh) = pair_w16::<Q4>(qs, qh, blk);
            for r in 0..R {
                let x = a[r].0.as_ptr().add(32 * blk);
                let p = _mm512_dpwssd_epi32(zero, wl, _mm512_loadu_si512(x as *const __m512i));
                let p = _mm512_dpwssd_epi32(p, wh, _mm512_loadu_si512(x.add(32) as *const __m512i));
                acc[r] = _mm512_fmadd_ps(pair_scales(sc[r], j as i32), _mm512_cvtepi32_ps(p), acc[r]);
            }
        }
        b += 16;
    }
    let mut out = [0f32; R];
    let mut mt = [0f32; R];
    while b + 2 <= nb {
        let (wl, wh) = pair_w16::<Q4>(qs, qh, b);
        for r in 0..R {
            let (q, ad, s) = a[r];
            let s0 = _mm512_set1_ps(d[b].to_f32() * ad[b]);
            let s1 = _mm512_set1_ps(d[b + 1].to_f32() * ad[b + 1]);
            let x = q.as_ptr().add(32 * b);
            let p = _mm512_dpwssd_epi32(zero, wl, _mm512_loadu_si512(x as *const __m512i));
            let p = _mm512_dpwssd_epi32(p, wh, _mm512_loadu_si512(x.add(32) as *const __m512i));
            acc[r] = _mm512_fmadd_ps(_mm512_mask_blend_ps(0xFF00, s0, s1), _mm512_cvtepi32_ps(p), acc[r]);
            if Q4 {
                mt[r] += m[b].to_f32() * s[b] + m[b + 1].to_f32() * s[b + 1];
            }
        }
        b += 2;
    }
    for r in 0..R {
        out[r] = _mm512_reduce_add_ps(acc[r]) + _mm512_reduce_add_ps(macc[r]) + mt[r];
        if b < nb {
            // The odd last block, in natural order at the end of the row.
            let (q, ad, s) = a[r];
            let x = q.as_ptr().add(32 * b);
            let v = if Q4 {
                block_q4_w16_avx2(qs.as_ptr().add(b * 16), qh.get(b).copied(), x, x.add(16))
            } else {
                block_q8_w16_avx2(qs.as_ptr().add(b * QK), x, x.add(16))
            };
            out[r] += hsum256(v) * d[b].to_f32() * ad[b];
            if Q4 {
                out[r] += m[b].to_f32() * s[b];
            }
        }
    }
    out
}
