//! AVX-512 VNNI kernels for 16-bit activations with one scale a row or a K-quant super-block
//! (`Acts::quantize_grouped`): the float work leaves the inner loop, the integer products of a
//! row (f16-scaled formats) or a super-block (Q4_K, Q6_K) summing in i32 first. The `rows_*`
//! forms take a work item's weight rows in one call.

use std::arch::x86_64::*;

use half::f16;

use super::common::{pair_scales, stream_ahead, sums};
use super::vnni16::{odd_block16, pair_w16};
use super::{Act16, WRow};
use crate::kquant::KScales;
use crate::scales::Scale;
use crate::QK;

/// `pair_w16::<true>`'s widened nibbles less `offset` (Q4_0: 8; Q5_0: 16, where a clear fifth
/// bit takes 16 off the nibble in one masked subtract instead of a set one adding 16 before the
/// offset comes off).
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

/// Four blocks' nibbles (64 bytes at `w`, blocks `blk`…`blk + 3`) widened to i16 in the
/// quad-interleaved order (`acts::pos16`): octet k of each block in turn, for k = 0…3. Less
/// `offset` as [`pair_w16_signed`]; with `qh` and no offset (Q5_1) the fifth bit adds 16.
/// `vpunpck*bw` keeps each block in its own 128-bit lane, which is what puts its eight values
/// of an octet side by side; with an offset, `srai` by 8 sign-extends them.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2")]
#[inline]
unsafe fn quad_w16(w: *const u8, qh: &[u32], blk: usize, offset: i16) -> [__m512i; 4] {
    let m4 = _mm512_set1_epi8(0x0F);
    let v = _mm512_loadu_si512(w as *const __m512i);
    let (mut lo, mut hi) = (_mm512_and_si512(v, m4), _mm512_and_si512(_mm512_srli_epi16(v, 4), m4));
    if qh.is_empty() {
        if offset != 0 {
            let off = _mm512_set1_epi8(offset as i8);
            (lo, hi) = (_mm512_sub_epi8(lo, off), _mm512_sub_epi8(hi, off));
        }
    } else {
        // Each block's bit word: its low 16 bits for the lo nibbles, its high 16 for the hi.
        let words = _mm_loadu_si128(qh.as_ptr().add(blk) as *const __m128i);
        let t = _mm_shuffle_epi8(words, _mm_setr_epi8(0, 1, 4, 5, 8, 9, 12, 13, 2, 3, 6, 7, 10, 11, 14, 15));
        let (ml, mh) = (_mm_cvtsi128_si64(t) as u64, _mm_extract_epi64::<1>(t) as u64);
        let sixteen = _mm512_set1_epi8(16);
        if offset == 16 {
            lo = _mm512_mask_sub_epi8(lo, !ml, lo, sixteen);
            hi = _mm512_mask_sub_epi8(hi, !mh, hi, sixteen);
        } else {
            debug_assert_eq!(offset, 0);
            lo = _mm512_mask_add_epi8(lo, ml, lo, sixteen);
            hi = _mm512_mask_add_epi8(hi, mh, hi, sixteen);
        }
    }
    if offset == 0 {
        // Values 0–31: a zero high byte widens them.
        let z = _mm512_setzero_si512();
        return [
            _mm512_unpacklo_epi8(lo, z),
            _mm512_unpackhi_epi8(lo, z),
            _mm512_unpacklo_epi8(hi, z),
            _mm512_unpackhi_epi8(hi, z),
        ];
    }
    let widen = |b: __m512i, hi: bool| {
        let pairs = if hi { _mm512_unpackhi_epi8(b, b) } else { _mm512_unpacklo_epi8(b, b) };
        _mm512_srai_epi16(pairs, 8)
    };
    [widen(lo, false), widen(lo, true), widen(hi, false), widen(hi, true)]
}

/// A quad's 128 widened weights against the 128 activations at `x`: lane 4c + i the sum of
/// eight products of block c. Written out for the reason [`pair_dot_into`] is.
#[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
#[inline]
unsafe fn quad_dot(w: &[__m512i; 4], x: *const i16) -> __m512i {
    let mut acc = _mm512_setzero_si512();
    std::arch::asm!(
        "vpdpwssd {acc}, {w0}, zmmword ptr [{x}]",
        "vpdpwssd {acc}, {w1}, zmmword ptr [{x} + 64]",
        "vpdpwssd {acc}, {w2}, zmmword ptr [{x} + 128]",
        "vpdpwssd {acc}, {w3}, zmmword ptr [{x} + 192]",
        acc = inout(zmm_reg) acc,
        w0 = in(zmm_reg) w[0],
        w1 = in(zmm_reg) w[1],
        w2 = in(zmm_reg) w[2],
        w3 = in(zmm_reg) w[3],
        x = in(reg) x,
        options(pure, readonly, nostack, preserves_flags),
    );
    acc
}

/// The blocks of `a`'s rows, after checking (in debug builds) what both row-scaled kernels
/// assume: `bytes` of weights, a scale and (with `mins`) a min for each block, and one
/// activation scale a row.
#[inline(always)]
fn r16_blocks<const R: usize>(qs: &[u8], bytes: usize, d: &[f16], m: &[f16], mins: bool, a: &[Act16; R]) -> usize {
    let nb = a.first().map_or(0, |r| r.1.len());
    debug_assert!(qs.len() >= nb * bytes && d.len() >= nb && (!mins || m.len() >= nb));
    debug_assert!(a.iter().all(|(q, ad, s)| q.len() >= nb * QK && ad.len() >= nb && s.len() >= nb));
    debug_assert!(a.iter().all(|(_, ad, _)| ad.iter().all(|&v| v == ad[0])));
    nb
}

/// [`dot_w16_vnni`](super::dot_w16_vnni) for activation rows with one scale each (`Acts::quantize_grouped` with the
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
    let nb = r16_blocks(qs, if Q4 { 16 } else { QK }, d, m, Q4, a);
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

/// [`dot_r16_vnni`] for the nibble formats (Q4_0, Q4_1, Q5_0, Q5_1) on quad-interleaved
/// activation rows (`acts::pos16`): a row's whole quads of blocks sum four `vpdpwssd` (lanes
/// 4c–4c+3 for block c) before each convert and multiply-add, a quarter less float work a
/// weight than by pairs (Gemma 3's 640-wide Q5_0 matmuls, see BENCHMARKS.md); the blocks past
/// the last whole quad go by pairs as there. Each quad loads its four f16 scales itself, so
/// the row is one loop of quads. A kernel of its own: quads folded into `dot_r16_vnni`'s
/// chunks of 16 blocks cost SmolLM2's decode 10–15 % (tg128), even with no quads in play.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
#[inline]
pub unsafe fn dot_r16q_vnni<const R: usize>(
    qs: &[u8],
    d: &[f16],
    m: &[f16],
    qh: &[u32],
    offset: i16,
    a: &[Act16; R],
) -> [f32; R] {
    let nb = r16_blocks(qs, 16, d, m, true, a);
    let nq = nb / 4 * 4;
    let mut acc = [_mm512_setzero_ps(); R];
    let mut mins = [_mm512_setzero_ps(); R];
    if offset == 0 {
        // The min terms (Q4_1, Q5_1), sixteen blocks a multiply-add; an odd last block's is
        // `odd_block16`'s.
        let even = nb / 2 * 2;
        for b in (0..even).step_by(16) {
            let blocks = (even - b).min(16);
            let (mw, mask) = (m.load16(b, blocks), ((1u32 << blocks) - 1) as u16);
            for r in 0..R {
                mins[r] = _mm512_fmadd_ps(mw, _mm512_maskz_loadu_ps(mask, a[r].2.as_ptr().add(b)), mins[r]);
            }
        }
    }
    // Lane 4c + i takes scale c of the quad's four.
    let spread = _mm512_set_epi32(3, 3, 3, 3, 2, 2, 2, 2, 1, 1, 1, 1, 0, 0, 0, 0);
    for blk in (0..nq).step_by(4) {
        let w = quad_w16(qs.as_ptr().add(blk * 16), qh, blk, offset);
        let s = _mm512_permutexvar_ps(
            spread,
            _mm512_castps128_ps512(_mm_cvtph_ps(_mm_loadl_epi64(d.as_ptr().add(blk) as *const __m128i))),
        );
        for r in 0..R {
            let x = a[r].0.as_ptr().add(32 * blk);
            // The same integers either way; decode (one row) is faster left to the compiler.
            let p = if R == 1 {
                let x = |k: usize| _mm512_loadu_si512(x.add(32 * k) as *const __m512i);
                let p = _mm512_dpwssd_epi32(_mm512_madd_epi16(w[0], x(0)), w[1], x(1));
                _mm512_dpwssd_epi32(_mm512_dpwssd_epi32(p, w[2], x(2)), w[3], x(3))
            } else {
                quad_dot(&w, x)
            };
            acc[r] = _mm512_fmadd_ps(s, _mm512_cvtepi32_ps(p), acc[r]);
        }
    }
    let mut b = nq;
    if b + 2 <= nb {
        let dw = d.load16(b, 2);
        let (wl, wh) = if offset != 0 {
            pair_w16_signed(qs.as_ptr().add(b * 16), qh, b, offset)
        } else {
            pair_w16::<true>(qs, qh, b)
        };
        let s = pair_scales(dw, 0);
        for r in 0..R {
            let x = a[r].0.as_ptr().add(32 * b);
            let lo = _mm512_madd_epi16(wl, _mm512_loadu_si512(x as *const __m512i));
            let p = _mm512_dpwssd_epi32(lo, wh, _mm512_loadu_si512(x.add(32) as *const __m512i));
            acc[r] = _mm512_fmadd_ps(s, _mm512_cvtepi32_ps(p), acc[r]);
        }
        b += 2;
    }
    for r in 0..R {
        let ad = _mm512_set1_ps(a[r].1.first().copied().unwrap_or(0.0));
        acc[r] = if offset == 0 { _mm512_fmadd_ps(ad, acc[r], mins[r]) } else { _mm512_mul_ps(ad, acc[r]) };
    }
    let mut out = sums(acc);
    if b < nb {
        for (o, row) in out.iter_mut().zip(a) {
            *o += odd_block16::<_, true>(qs, d, m, qh, b, *row);
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

/// [`dot_r16_vnni`] for weight rows `row(0..n)` in one call, each result to `put`: the
/// activation rows' set-up is paid once for them all (Gemma 3 pp512 +5 %, decode +7 % over one
/// call a weight row).
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
pub unsafe fn rows_r16_vnni<'w, const Q4: bool, const R: usize>(
    n: usize,
    row: impl Fn(usize) -> WRow<'w, &'w [f16]>,
    offset: i16,
    quads: bool,
    a: &[Act16; R],
    mut put: impl FnMut(usize, [f32; R]),
) {
    if Q4 && quads {
        for t in 0..n {
            let (qs, d, m, qh) = row(t);
            stream_ahead::<R>(qs);
            put(t, dot_r16q_vnni::<R>(qs, d, m, qh, offset, a));
        }
        return;
    }
    for t in 0..n {
        let (qs, d, m, qh) = row(t);
        stream_ahead::<R>(qs);
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
        stream_ahead::<R>(qs);
        put(t, dot_k16_vnni::<Q4, PER, R>(qs, d, m, a));
    }
}
