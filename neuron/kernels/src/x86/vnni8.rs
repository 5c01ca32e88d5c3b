//! AVX-512 VNNI kernels for 8-bit activations: `dpbusd` multiplies, pair-adds and accumulates
//! 64 bytes in one instruction, two blocks a register, with the weights as its unsigned operand
//! (a Q8 weight's sign moves onto the activations).

use std::arch::x86_64::*;

use super::common::{nibbles2, pair_scales, scales16, sums};
use super::ActRef;
use crate::scales::Scale;
use crate::QK;

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
