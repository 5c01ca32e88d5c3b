//! AVX2 kernels for 16-bit activations with one scale a row or a K-quant super-block
//! (`Acts::quantize_grouped`), as `grouped` is for AVX-512 VNNI: a block pair is widened once,
//! its products sum in i32, and the float work is one convert and multiply-add per block (f16
//! scales: the scales of eight blocks converted at once, the min terms multiplied eight at a
//! time) or per super-block (K-quants), instead of the per-block scalar scale products, min sums
//! and broadcasts of the one-scale-a-block kernels (`avx2`), which held decode on an AVX2 host
//! to two thirds of llama.cpp's. Each row's arithmetic is the same in a pass of one or of four,
//! so batching never changes a sequence's numbers.

use std::arch::x86_64::*;

use half::f16;

use super::common::hsum256;
use super::vnni16::odd_block16;
use super::Act16;
use crate::kquant::KScales;
use crate::QK;

/// Byte i of the result is 16 where bit i of `bits` is set, else 0 (a Q5 element's fifth bit).
#[target_feature(enable = "avx2")]
#[inline]
unsafe fn fifth_bits8(bits: u32) -> __m256i {
    // Byte i takes byte i / 8 of `bits` (the shuffle stays in its 128-bit lane, and both lanes
    // hold all four bytes), then tests its bit i % 8.
    let which = _mm256_setr_epi64x(0, 0x0101_0101_0101_0101, 0x0202_0202_0202_0202, 0x0303_0303_0303_0303);
    let spread = _mm256_shuffle_epi8(_mm256_set1_epi32(bits as i32), which);
    let bit = _mm256_set1_epi64x(0x8040_2010_0804_0201_u64 as i64);
    let set = _mm256_cmpeq_epi8(_mm256_and_si256(spread, bit), bit);
    _mm256_and_si256(set, _mm256_set1_epi8(16))
}

/// Blocks `blk` and `blk + 1` widened to i16 in the activations' pair-interleaved order:
/// [block blk's first 16 values, blk + 1's first 16, blk's last 16, blk + 1's last 16]. `Q4`:
/// nibbles (plus 16 where `qh` sets a fifth bit); else i8 values.
#[target_feature(enable = "avx2")]
#[inline]
unsafe fn pair16<const Q4: bool>(qs: &[u8], qh: &[u32], blk: usize) -> [__m256i; 4] {
    let widen = |v: __m128i| if Q4 { _mm256_cvtepu8_epi16(v) } else { _mm256_cvtepi8_epi16(v) };
    if Q4 {
        let m4 = _mm256_set1_epi8(0x0F);
        let v = _mm256_loadu_si256(qs.as_ptr().add(blk * 16) as *const __m256i);
        let (mut lo, mut hi) = (_mm256_and_si256(v, m4), _mm256_and_si256(_mm256_srli_epi16(v, 4), m4));
        if !qh.is_empty() {
            let (b0, b1) = (*qh.get_unchecked(blk), *qh.get_unchecked(blk + 1));
            lo = _mm256_or_si256(lo, fifth_bits8((b0 & 0xFFFF) | (b1 << 16)));
            hi = _mm256_or_si256(hi, fifth_bits8((b0 >> 16) | (b1 & 0xFFFF_0000)));
        }
        [
            widen(_mm256_castsi256_si128(lo)),
            widen(_mm256_extracti128_si256::<1>(lo)),
            widen(_mm256_castsi256_si128(hi)),
            widen(_mm256_extracti128_si256::<1>(hi)),
        ]
    } else {
        let w = qs.as_ptr().add(blk * QK);
        let at = |o: usize| widen(_mm_loadu_si128(w.add(o) as *const __m128i));
        [at(0), at(QK), at(16), at(QK + 16)]
    }
}

/// Entries `i..i + n` (n ≤ 8 and even) of `v` as f32, zero past them: a masked load of n / 2
/// f16 pairs, which reads nothing past them (a copy through a buffer held SmolLM2's decode at
/// 95 tok/s, 104–111 with this).
#[target_feature(enable = "avx2,f16c")]
#[inline]
unsafe fn load8_f16(v: &[f16], i: usize, n: usize) -> __m256 {
    debug_assert!(n <= 8 && n.is_multiple_of(2) && i + n <= v.len());
    let p = v.as_ptr().add(i);
    let h = if n == 8 {
        _mm_loadu_si128(p as *const __m128i)
    } else {
        _mm_maskload_epi32(p as *const i32, _mm_cmpgt_epi32(_mm_set1_epi32(n as i32 / 2), _mm_setr_epi32(0, 1, 2, 3)))
    };
    _mm256_cvtph_ps(h)
}

/// Entries `i..i + n` (n ≤ 8) of `v`, zero past them (a masked load).
#[target_feature(enable = "avx2")]
#[inline]
unsafe fn load8_f32(v: &[f32], i: usize, n: usize) -> __m256 {
    debug_assert!(n <= 8 && i + n <= v.len());
    let p = v.as_ptr().add(i);
    if n == 8 {
        return _mm256_loadu_ps(p);
    }
    _mm256_maskload_ps(p, _mm256_cmpgt_epi32(_mm256_set1_epi32(n as i32), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7)))
}

/// The four products of a widened block pair `w` with the 64 activations at `x`: (block blk's
/// eight lanes, blk + 1's).
#[target_feature(enable = "avx2")]
#[inline]
unsafe fn pair_products(w: &[__m256i; 4], x: *const i16) -> (__m256i, __m256i) {
    let at = |o: usize| _mm256_loadu_si256(x.add(o) as *const __m256i);
    (
        _mm256_add_epi32(_mm256_madd_epi16(w[0], at(0)), _mm256_madd_epi16(w[2], at(32))),
        _mm256_add_epi32(_mm256_madd_epi16(w[1], at(16)), _mm256_madd_epi16(w[3], at(48))),
    )
}

/// `R` activation rows as passes of four where `R` is a larger multiple of four (eight rows'
/// accumulators spill AVX2's sixteen registers), else `all` at once.
#[inline(always)]
pub(super) fn in_fours<const R: usize>(
    a: &[Act16; R],
    four: impl Fn(&[Act16; 4]) -> [f32; 4],
    all: impl FnOnce(&[Act16; R]) -> [f32; R],
) -> [f32; R] {
    if R > 4 && R.is_multiple_of(4) {
        let mut out = [0f32; R];
        for r0 in (0..R).step_by(4) {
            // A view, not a copy: copying the rows' slices stored them in pieces and read them
            // back whole, a store-forwarding stall each call (a sixth of Gemma 3's pp64 kernel).
            let quad: &[Act16; 4] = a[r0..r0 + 4].try_into().expect("four rows");
            out[r0..r0 + 4].copy_from_slice(&four(quad));
        }
        return out;
    }
    all(a)
}

/// A weight row's whole block pairs widened as [`pair16`] widens them (four vectors a pair), for
/// a prefill tile whose passes of activation rows all read the same weight rows: they unpack
/// each row once instead of once a pass.
#[target_feature(enable = "avx2")]
pub unsafe fn unpack_r16_avx2<const Q4: bool>(qs: &[u8], qh: &[u32], nb: usize, out: &mut [__m256i]) {
    assert!(out.len() >= nb / 2 * 4 && qs.len() >= nb / 2 * 2 * if Q4 { 16 } else { QK });
    assert!(qh.is_empty() || qh.len() >= nb / 2 * 2);
    for (j, o) in out.chunks_exact_mut(4).take(nb / 2).enumerate() {
        o.copy_from_slice(&pair16::<Q4>(qs, qh, 2 * j));
    }
}

/// One f16-scaled weight row (Q4_0 … Q8_0; `Q4` the nibble formats, whose offset or min is the
/// min term `m`) against `R` activation rows with one scale each. `U`: the row's block pairs are
/// read from `unpacked` ([`unpack_r16_avx2`]), the same products; a constant, so that decode's
/// kernel has no test for them in its loop (a runtime test cost it a third of its speed).
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn dot_r16_avx2<const Q4: bool, const U: bool, const R: usize>(
    qs: &[u8],
    d: &[f16],
    m: &[f16],
    qh: &[u32],
    unpacked: &[__m256i],
    a: &[Act16; R],
) -> [f32; R] {
    // SAFETY: this function's caller detected the features.
    in_fours(
        a,
        |q| unsafe { r16_rows::<Q4, U, 4>(qs, d, m, qh, unpacked, q) },
        |a| unsafe { r16_rows::<Q4, U, R>(qs, d, m, qh, unpacked, a) },
    )
}

#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
unsafe fn r16_rows<const Q4: bool, const U: bool, const R: usize>(
    qs: &[u8],
    d: &[f16],
    m: &[f16],
    qh: &[u32],
    unpacked: &[__m256i],
    a: &[Act16; R],
) -> [f32; R] {
    let nb = a.first().map_or(0, |r| r.1.len());
    assert!(qs.len() >= nb * if Q4 { 16 } else { QK } && d.len() >= nb && (!Q4 || m.len() >= nb));
    assert!(qh.is_empty() || qh.len() >= nb);
    assert!(a.iter().all(|(q, ad, s)| q.len() >= nb * QK && ad.len() >= nb && s.len() >= nb));
    assert!(!U || unpacked.len() >= nb / 2 * 4);
    // Even and odd blocks' sums apart (two dependency chains), in activation units; the min
    // terms, whose block sums carry the activation scale already.
    let mut acc = [[_mm256_setzero_ps(); 2]; R];
    let mut mins = [_mm256_setzero_ps(); R];
    let mut b = 0;
    while b + 2 <= nb {
        let blocks = (nb - b).min(8) & !1;
        // The eight scales as f32 on the stack, each block's broadcast from there by a load
        // (a permute from a register took two more instructions a block on the shuffle port).
        let mut ds = [0f32; 8];
        _mm256_storeu_ps(ds.as_mut_ptr(), load8_f16(d, b, blocks));
        if Q4 {
            let mw = load8_f16(m, b, blocks);
            for r in 0..R {
                mins[r] = _mm256_fmadd_ps(mw, load8_f32(a[r].2, b, blocks), mins[r]);
            }
        }
        for j in 0..blocks / 2 {
            let blk = b + 2 * j;
            let w = match U {
                false => pair16::<Q4>(qs, qh, blk),
                true => {
                    let u = unpacked.as_ptr().add(2 * blk);
                    [*u, *u.add(1), *u.add(2), *u.add(3)]
                }
            };
            let (se, so) = (_mm256_broadcast_ss(&ds[2 * j]), _mm256_broadcast_ss(&ds[2 * j + 1]));
            for r in 0..R {
                let (pe, po) = pair_products(&w, a[r].0.as_ptr().add(32 * blk));
                acc[r][0] = _mm256_fmadd_ps(se, _mm256_cvtepi32_ps(pe), acc[r][0]);
                acc[r][1] = _mm256_fmadd_ps(so, _mm256_cvtepi32_ps(po), acc[r][1]);
            }
        }
        b += blocks;
    }
    // A plain loop: a closure over `acc` kept it in memory, stored after every multiply-add.
    let mut out = [0f32; R];
    for r in 0..R {
        let v = _mm256_add_ps(acc[r][0], acc[r][1]);
        let ad = _mm256_set1_ps(a[r].1.first().copied().unwrap_or(0.0));
        let v = if Q4 { _mm256_fmadd_ps(ad, v, mins[r]) } else { _mm256_mul_ps(ad, v) };
        out[r] = hsum256(v);
        if b < nb {
            out[r] += odd_block16::<_, Q4>(qs, d, m, qh, b, a[r]);
        }
    }
    out
}

/// Super-block `sb`'s eight K-quant scales (or mins) as f32.
#[target_feature(enable = "avx2")]
#[inline]
unsafe fn kload8(k: KScales<8>, sb: usize) -> __m256 {
    let q = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64(k.q.as_ptr().add(8 * sb) as *const __m128i)));
    _mm256_mul_ps(q, _mm256_set1_ps(k.d[sb].to_f32()))
}

/// K-quant weights against `R` activation rows (16-bit) with one scale per super-block:
/// `Q4` Q4_K (`PER` = 8: a scale and a min a block), else Q6_K (`PER` = 16: a scale per 16
/// values). A pair's widened weights are multiplied by their integer sub-scales once for all
/// rows; first and last halves sum in two i32 accumulators (sixteen products a lane each, so
/// Q6_K's |q·sc| ≤ 32·128 times |a| ≤ 32767 stays below 2³¹), converted once a super-block.
/// `U`: the pairs, so multiplied, are read from `unpacked` ([`unpack_k16_avx2`]), as in
/// [`dot_r16_avx2`].
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn dot_k16_avx2<const Q4: bool, const PER: usize, const U: bool, const R: usize>(
    qs: &[u8],
    d: KScales<PER>,
    m: KScales<PER>,
    unpacked: &[__m256i],
    a: &[Act16; R],
) -> [f32; R] {
    // SAFETY: this function's caller detected the features.
    in_fours(
        a,
        |q| unsafe { k16_rows::<Q4, PER, U, 4>(qs, d, m, unpacked, q) },
        |a| unsafe { k16_rows::<Q4, PER, U, R>(qs, d, m, unpacked, a) },
    )
}

/// Block pair `blk` of a K-quant row widened and multiplied by its integer sub-scales.
#[target_feature(enable = "avx2")]
#[inline]
unsafe fn kpair16<const Q4: bool, const PER: usize>(qs: &[u8], d: KScales<PER>, blk: usize) -> [__m256i; 4] {
    let sub = |i: usize| _mm256_set1_epi16(*d.q.get_unchecked(i) as i16);
    let w = pair16::<Q4>(qs, &[], blk);
    // Q4_K: a scale a block; Q6_K: one per 16 values, block blk's at 2·blk and 2·blk + 1.
    let (s0, s1, s2, s3) = if Q4 {
        let (e, o) = (sub(blk), sub(blk + 1));
        (e, o, e, o)
    } else {
        (sub(2 * blk), sub(2 * blk + 2), sub(2 * blk + 1), sub(2 * blk + 3))
    };
    [
        _mm256_mullo_epi16(w[0], s0),
        _mm256_mullo_epi16(w[1], s1),
        _mm256_mullo_epi16(w[2], s2),
        _mm256_mullo_epi16(w[3], s3),
    ]
}

/// A K-quant row's block pairs as [`k16_rows`] multiplies them (four vectors a pair), for the
/// passes of a prefill tile, as [`unpack_r16_avx2`] is for the f16-scaled formats.
#[target_feature(enable = "avx2")]
pub unsafe fn unpack_k16_avx2<const Q4: bool, const PER: usize>(
    qs: &[u8],
    d: KScales<PER>,
    nb: usize,
    out: &mut [__m256i],
) {
    assert!(nb.is_multiple_of(8) && out.len() >= nb / 2 * 4 && qs.len() >= nb * if Q4 { 16 } else { QK });
    assert!(d.q.len() >= nb * if Q4 { 1 } else { 2 });
    for (j, o) in out.chunks_exact_mut(4).take(nb / 2).enumerate() {
        o.copy_from_slice(&kpair16::<Q4, PER>(qs, d, 2 * j));
    }
}

#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
unsafe fn k16_rows<const Q4: bool, const PER: usize, const U: bool, const R: usize>(
    qs: &[u8],
    d: KScales<PER>,
    m: KScales<PER>,
    unpacked: &[__m256i],
    a: &[Act16; R],
) -> [f32; R] {
    let nb = a.first().map_or(0, |r| r.1.len());
    assert!(nb.is_multiple_of(8) && qs.len() >= nb * if Q4 { 16 } else { QK });
    assert!(d.q.len() >= nb * if Q4 { 1 } else { 2 } && d.d.len() >= nb / 8 && (!Q4 || m.q.len() >= nb));
    assert!(a.iter().all(|(q, ad, s)| q.len() >= nb * QK && ad.len() >= nb && s.len() >= nb));
    assert!(!U || unpacked.len() >= nb / 2 * 4);
    let mut acc = [_mm256_setzero_ps(); R];
    for sb in 0..nb / 8 {
        let b0 = 8 * sb;
        let mut iacc = [[_mm256_setzero_si256(); 2]; R];
        for p in 0..4 {
            let blk = b0 + 2 * p;
            let w = match U {
                false => kpair16::<Q4, PER>(qs, d, blk),
                true => {
                    let u = unpacked.as_ptr().add(2 * blk);
                    [*u, *u.add(1), *u.add(2), *u.add(3)]
                }
            };
            for r in 0..R {
                let x = a[r].0.as_ptr().add(32 * blk);
                let at = |o: usize| _mm256_loadu_si256(x.add(o) as *const __m256i);
                let first = _mm256_add_epi32(_mm256_madd_epi16(w[0], at(0)), _mm256_madd_epi16(w[1], at(16)));
                let last = _mm256_add_epi32(_mm256_madd_epi16(w[2], at(32)), _mm256_madd_epi16(w[3], at(48)));
                iacc[r] = [_mm256_add_epi32(iacc[r][0], first), _mm256_add_epi32(iacc[r][1], last)];
            }
        }
        if Q4 {
            // The min term, −dmin·min a block times the block's activation sum, in float.
            let mw = kload8(KScales { q: m.q, d: m.d }, sb);
            for r in 0..R {
                acc[r] = _mm256_fmadd_ps(mw, _mm256_loadu_ps(a[r].2.as_ptr().add(b0)), acc[r]);
            }
        }
        // Entry 8·sb (or 16·sb) of the sub-scales belongs to super-block sb either way.
        let dsup = d.d[sb].to_f32();
        for r in 0..R {
            let s = _mm256_set1_ps(dsup * a[r].1[b0]);
            acc[r] = _mm256_fmadd_ps(s, _mm256_cvtepi32_ps(iacc[r][0]), acc[r]);
            acc[r] = _mm256_fmadd_ps(s, _mm256_cvtepi32_ps(iacc[r][1]), acc[r]);
        }
    }
    let mut out = [0f32; R];
    for r in 0..R {
        out[r] = hsum256(acc[r]);
    }
    out
}
