//! Activation rows quantized to 16 bits with AVX-512 or AVX2: the same integers, scales and sums
//! as the scalar loop in `acts`, which they replace where the CPU has the features (it was 3 % of
//! Gemma 3's prefill on AVX-512, and 1.1 % of SmolLM2's decode on AVX2, 0.25 % with its own).

use std::arch::x86_64::*;

use crate::acts::{halves16, pos16};
use crate::QK;

/// One activation row (`x`, whole blocks) quantized to 16 bits with one scale per `group`
/// blocks, laid out as `Acts<i16>` keeps it (`pos16`: pair-interleaved, or with `quads` its
/// whole quads first): the same integers, scales and sums as the scalar loop, whose rounding
/// (half to even) `cvtps2dq` shares.
#[target_feature(enable = "avx512f,avx512bw,avx512vl")]
pub unsafe fn quantize_row16(x: &[f32], group: usize, quads: bool, q: &mut [i16], d: &mut [f32], s: &mut [f32]) {
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
            let (a, c) = (scaled(32 * b), scaled(32 * b + 16));
            store16(q, nb, b, quads, [_mm512_cvtepi32_epi16(a), _mm512_cvtepi32_epi16(c)]);
            d[b] = scale;
            s[b] = scale * _mm512_reduce_add_epi32(_mm512_add_epi32(a, c)) as f32;
        }
    }
}

/// [`quantize_row16`] with AVX2: the same integers, scales and sums.
#[target_feature(enable = "avx2")]
pub unsafe fn quantize_row16_avx2(x: &[f32], group: usize, quads: bool, q: &mut [i16], d: &mut [f32], s: &mut [f32]) {
    let nb = x.len() / QK;
    assert!(q.len() >= nb * QK && d.len() >= nb && s.len() >= nb && group > 0);
    let abs = |v: __m256| _mm256_castsi256_ps(_mm256_and_si256(_mm256_castps_si256(v), _mm256_set1_epi32(i32::MAX)));
    for g0 in (0..nb).step_by(group) {
        let g1 = (g0 + group).min(nb);
        let mut m = _mm256_setzero_ps();
        for i in (32 * g0..32 * g1).step_by(8) {
            // NaN-blind as the scalar loop's `f32::max`: maxps returns its second operand then.
            m = _mm256_max_ps(abs(_mm256_loadu_ps(x.as_ptr().add(i))), m);
        }
        let m = _mm_max_ps(_mm256_castps256_ps128(m), _mm256_extractf128_ps::<1>(m));
        let m = _mm_max_ps(m, _mm_movehl_ps(m, m));
        let amax = _mm_cvtss_f32(_mm_max_ss(m, _mm_shuffle_ps::<1>(m, m)));
        let scale = amax / 32767.0;
        let inv = _mm256_set1_ps(if scale > 0.0 { 1.0 / scale } else { 0.0 });
        // A NaN quantizes to 0, as the scalar loop's `as i32` makes it.
        let scaled = |i: usize| {
            let v = _mm256_mul_ps(_mm256_loadu_ps(x.as_ptr().add(i)), inv);
            _mm256_and_si256(_mm256_cvtps_epi32(v), _mm256_castps_si256(_mm256_cmp_ps::<_CMP_ORD_Q>(v, v)))
        };
        // Sixteen values to i16 in order: packs interleaves its operands' 128-bit lanes.
        let pack = |a: __m256i, b: __m256i| _mm256_permute4x64_epi64::<0b11_01_10_00>(_mm256_packs_epi32(a, b));
        for b in g0..g1 {
            let v = [scaled(32 * b), scaled(32 * b + 8), scaled(32 * b + 16), scaled(32 * b + 24)];
            store16(q, nb, b, quads, [pack(v[0], v[1]), pack(v[2], v[3])]);
            let t = _mm256_add_epi32(_mm256_add_epi32(v[0], v[1]), _mm256_add_epi32(v[2], v[3]));
            let t = _mm_add_epi32(_mm256_castsi256_si128(t), _mm256_extracti128_si256::<1>(t));
            let t = _mm_add_epi32(t, _mm_shuffle_epi32::<0b01_00_11_10>(t));
            let t = _mm_add_epi32(t, _mm_shuffle_epi32::<0b10_11_00_01>(t));
            d[b] = scale;
            s[b] = scale * _mm_cvtsi128_si32(t) as f32;
        }
    }
}

/// Block `b`'s 32 values (`v`: elements 0–15, then 16–31) stored where `pos16` puts them: two
/// halves (pair-interleaved) or, in a quad, four octets.
#[target_feature(enable = "avx2")]
#[inline]
unsafe fn store16(q: &mut [i16], nb: usize, b: usize, quads: bool, v: [__m256i; 2]) {
    let q = q.as_mut_ptr();
    let at = |j: usize| q.add(pos16(nb, b, j, quads));
    if quads && b < nb / 4 * 4 {
        for (h, v) in v.into_iter().enumerate() {
            _mm_storeu_si128(at(16 * h) as *mut __m128i, _mm256_castsi256_si128(v));
            _mm_storeu_si128(at(16 * h + 8) as *mut __m128i, _mm256_extracti128_si256::<1>(v));
        }
    } else {
        let (lo, hi) = halves16(nb, b);
        _mm256_storeu_si256(q.add(lo) as *mut __m256i, v[0]);
        _mm256_storeu_si256(q.add(hi) as *mut __m256i, v[1]);
    }
}
