//! How a weight's block scales (and Q4 mins) are stored and read: f16 as the file stores them, or
//! a K-quant's small integers with a super-block factor ([`KScales`]).
//! [`Scale`] is what a kernel reads them through, so one kernel serves both kinds.

use half::f16;

use crate::kquant::KScales;

/// A weight's block scales (and Q4 mins): f16 as the file stores them, or for the K-quants the
/// file's small integer scales with their super-block's f16 factor (`PER` entries a factor), so
/// that the repacked weight is no larger than the file's.
pub(crate) enum Scales {
    F16(Vec<f16>),
    K8(Vec<i8>, Vec<f16>),
    K16(Vec<i8>, Vec<f16>),
}

impl Scales {
    pub(crate) fn bytes(&self) -> usize {
        match self {
            Scales::F16(v) => 2 * v.len(),
            Scales::K8(q, d) | Scales::K16(q, d) => q.len() + 2 * d.len(),
        }
    }

    /// Entries `r` (whole super-blocks for the K variants).
    #[inline]
    pub(crate) fn slice(&self, r: std::ops::Range<usize>) -> ScaleRow<'_> {
        match self {
            Scales::F16(v) => ScaleRow::F16(&v[r]),
            Scales::K8(q, d) => ScaleRow::K8(KScales { q: &q[r.clone()], d: &d[r.start / 8..r.end.div_ceil(8)] }),
            Scales::K16(q, d) => ScaleRow::K16(KScales { q: &q[r.clone()], d: &d[r.start / 16..r.end.div_ceil(16)] }),
        }
    }
}

#[derive(Clone, Copy)]
pub(crate) enum ScaleRow<'a> {
    F16(&'a [f16]),
    K8(KScales<'a, 8>),
    K16(KScales<'a, 16>),
}

impl ScaleRow<'_> {
    pub(crate) fn get(&self, i: usize) -> f32 {
        match *self {
            ScaleRow::F16(v) => Scale::get(v, i),
            ScaleRow::K8(k) => k.get(i),
            ScaleRow::K16(k) => k.get(i),
        }
    }
}

/// Where a kernel reads block scales (or mins) from.
pub(crate) trait Scale: Copy {
    /// Entries held.
    fn len(self) -> usize;
    fn get(self, i: usize) -> f32;
    /// Entries `i..i + n` as f32 in the first `n` of 16 lanes, zero in the rest (`i` a multiple
    /// of 8, `n` ≤ 16).
    #[cfg(target_arch = "x86_64")]
    unsafe fn load16(self, i: usize, n: usize) -> std::arch::x86_64::__m512;
}

impl Scale for &[f16] {
    fn len(self) -> usize {
        <[f16]>::len(self)
    }

    fn get(self, i: usize) -> f32 {
        self[i].to_f32()
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,f16c")]
    #[inline]
    unsafe fn load16(self, i: usize, n: usize) -> std::arch::x86_64::__m512 {
        use std::arch::x86_64::*;
        debug_assert!(n <= 16 && i + n <= self.len());
        let mask = ((1u32 << n) - 1) as u16;
        _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(mask, self.as_ptr().add(i) as *const i16))
    }
}
