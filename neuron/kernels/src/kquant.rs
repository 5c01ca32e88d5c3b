//! The K-quants (Q4_K, Q6_K): their 256-value super-blocks repacked into the 32-value blocks the
//! kernels take, and [`KScales`], the small integer scales they keep with one f16 factor a
//! super-block. Q4_K's sub-block `d·sc` and `−dmin·min` are exact products in f32 (not in f16);
//! Q6_K becomes i8 `q − 32` with one f32 scale `d·sc` per 16 values.

use std::slice::ChunksExact;

use half::f16;

use crate::aligned::Fill;
use crate::format::f16_at;
use crate::scales::{Scale, Scales};
use crate::weight::{Kind, QWeight};
use crate::QK;

/// Values per K-quant super-block.
pub(crate) const QK_K: usize = 256;

/// K-quant scales: entry i is `q[i] · d[i / PER]`, a product f32 holds exactly (a 6- or 8-bit
/// integer times an f16).
#[derive(Clone, Copy)]
pub(crate) struct KScales<'a, const PER: usize> {
    pub(crate) q: &'a [i8],
    pub(crate) d: &'a [f16],
}

impl<const PER: usize> Scale for KScales<'_, PER> {
    fn len(self) -> usize {
        self.q.len()
    }

    fn get(self, i: usize) -> f32 {
        self.q[i] as f32 * self.d[i / PER].to_f32()
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,f16c")]
    #[inline]
    unsafe fn load16(self, i: usize, n: usize) -> std::arch::x86_64::__m512 {
        use std::arch::x86_64::*;
        // Whole super-blocks only: 16 entries span one of 16, or two (or, at a row's end, one) of 8.
        debug_assert!(i + n <= self.q.len() && i.is_multiple_of(PER) && (n == 16 || n == 8 && PER == 8));
        let mask = ((1u32 << n) - 1) as u16;
        let q = _mm_maskz_loadu_epi8(mask, self.q.as_ptr().add(i));
        let q = _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(q));
        let lo = _mm512_set1_ps(self.d[i / PER].to_f32());
        let d = if PER == 16 || n <= 8 {
            lo
        } else {
            _mm512_mask_blend_ps(0xFF00, lo, _mm512_set1_ps(self.d[i / PER + 1].to_f32()))
        };
        _mm512_mul_ps(q, d)
    }
}

/// Repacks Q4_K super-blocks (`blocks`, 144 bytes each) of an `n × k` weight.
pub(crate) fn q4k(n: usize, k: usize, blocks: ChunksExact<u8>) -> QWeight {
    let nb = k / QK;
    let supers = n * k / QK_K;
    let (mut qs, mut dq, mut mq) = (Fill::new(n * k / 2), Vec::with_capacity(n * nb), Vec::new());
    let (mut dd, mut md) = (Vec::with_capacity(supers), Vec::with_capacity(supers));
    mq.reserve(n * nb);
    for b in blocks {
        // value = d·sc·q − dmin·min: the min term's factor is −dmin (exact in f16).
        dd.push(f16_at(b, 0));
        md.push(-f16_at(b, 2));
        let sc = &b[4..16];
        let q = &b[16..144];
        for s in 0..QK_K / QK {
            // ggml's 6-bit scale and min of sub-block s, packed in 12 bytes.
            let (scale, min) = if s < 4 {
                (sc[s] & 63, sc[s + 4] & 63)
            } else {
                ((sc[s + 4] & 0xF) | ((sc[s - 4] >> 6) << 4), (sc[s + 4] >> 4) | ((sc[s] >> 6) << 4))
            };
            dq.push(scale as i8);
            mq.push(min as i8);
            // Sub-block s is the low (even s) or high (odd s) nibbles of 32 bytes.
            let v = |j: usize| (q[32 * (s / 2) + j] >> (4 * (s % 2))) & 15;
            qs.extend((0..16).map(|j| v(j) | (v(j + 16) << 4)));
        }
    }
    QWeight {
        kind: Kind::Q4,
        n,
        k,
        nb,
        qs: qs.done(),
        d: Scales::K8(dq, dd),
        m: Scales::K8(mq, md),
        qh: Vec::new(),
        split: false,
        offset: 0,
    }
}

/// Repacks Q6_K super-blocks (`blocks`, 210 bytes each) of an `n × k` weight.
pub(crate) fn q6k(n: usize, k: usize, blocks: ChunksExact<u8>) -> QWeight {
    let nb = k / QK;
    let (mut qs, mut dq, mut dd) = (Fill::new(n * k), Vec::with_capacity(2 * n * nb), Vec::new());
    for b in blocks {
        let (ql, qh, sc) = (&b[0..128], &b[128..192], &b[192..208]);
        dd.push(f16_at(b, 208));
        // ggml's layout: per 128 values, 64 low-nibble bytes and 32 bytes of 2-bit
        // pairs; value 128·c + 32·g + l takes ql's nibble and qh's bits 2g, 2g+1.
        for c in 0..2 {
            let (ql, qh) = (&ql[64 * c..], &qh[32 * c..]);
            for g in 0..4 {
                qs.extend((0..32).map(|l| {
                    let lo = (ql[32 * (g % 2) + l] >> (4 * (g / 2))) & 15;
                    let hi = (qh[l] >> (2 * g)) & 3;
                    ((lo | (hi << 4)) as i8 - 32) as u8
                }));
            }
        }
        dq.extend(sc.iter().map(|&s| s as i8));
    }
    QWeight {
        kind: Kind::Q8,
        n,
        k,
        nb,
        qs: qs.done(),
        d: Scales::K16(dq, dd),
        m: Scales::K16(Vec::new(), Vec::new()),
        qh: Vec::new(),
        split: true,
        offset: 0,
    }
}
