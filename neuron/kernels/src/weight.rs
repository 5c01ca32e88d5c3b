//! [`QWeight`], one linear layer's repacked weights, and [`Row`], the view of one weight row the
//! kernels take: a row's nibbles (or bytes) lie contiguous and its scales, mins and fifth bits in
//! their own arrays, so SIMD loads are plain.

use crate::acts::Precision;
use crate::aligned::Aligned;
use crate::scales::{ScaleRow, Scales};
use crate::{matmul_many, QK};

/// How a weight's values are stored, whatever the file's format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    /// value = d·q + m, q in 0..=15 (nibbles: low = element j, high = element j + 16).
    Q4,
    /// value = d·q, q an i8 (with `split`, one d per 16 values).
    Q8,
}

/// One linear layer's weights: `n` rows (outputs) of `k` inputs, repacked for the kernels.
pub struct QWeight {
    pub(crate) kind: Kind,
    pub n: usize,
    pub k: usize,
    /// Blocks per row.
    pub(crate) nb: usize,
    pub(crate) qs: Aligned<u8>,
    pub(crate) d: Scales,
    /// Q4 only.
    pub(crate) m: Scales,
    /// Q5 formats only: each block's fifth bits (bit j for element j), on top of the nibbles.
    pub(crate) qh: Vec<u32>,
    /// Two scales per block, one per 16 values (Q6_K).
    pub(crate) split: bool,
    /// Q4_0 and Q5_0: what every stored value lies above (8 or 16), whose min term `m` = −offset·d
    /// `x86::dot_r16_vnni` takes off the widened weights instead, once for all rows.
    pub(crate) offset: i16,
}

/// One weight row.
pub(crate) struct Row<'a> {
    pub(crate) qs: &'a [u8],
    pub(crate) d: ScaleRow<'a>,
    pub(crate) m: ScaleRow<'a>,
    /// Empty unless a Q5 format.
    pub(crate) qh: &'a [u32],
    pub(crate) split: bool,
    pub(crate) offset: i16,
}

impl QWeight {
    /// Whether the AVX2 kernels take this weight with 8-bit activations (f16 scales, no fifth bits).
    pub(crate) fn has_avx2_8bit(&self) -> bool {
        self.qh.is_empty() && matches!(self.d, Scales::F16(_))
    }

    /// Bytes held (what one decode step streams from memory).
    pub fn bytes(&self) -> usize {
        self.qs.len() + self.d.bytes() + self.m.bytes() + 4 * self.qh.len()
    }

    /// Row `r` widened to f32 (an embedding lookup).
    pub fn dequantize_row(&self, r: usize, out: &mut [f32]) {
        self.expand_row(r, out, |dq, m| dq + m)
    }

    /// Row `r` as `|d·q| + |m|` per value: the size of the terms a kernel sums, which is what
    /// its rounding scales with (a row whose scale and min terms cancel to 0 still has some;
    /// the fuzzer's error bound).
    pub fn magnitude_row(&self, r: usize, out: &mut [f32]) {
        self.expand_row(r, out, |dq, m| dq.abs() + m.abs())
    }

    /// Row `r` value by value as `f(d·q, m)` (m = 0 for the Q8 formats).
    fn expand_row(&self, r: usize, out: &mut [f32], f: impl Fn(f32, f32) -> f32) {
        let row = self.row(r);
        for (b, o) in out.chunks_exact_mut(QK).enumerate().take(self.nb) {
            match self.kind {
                Kind::Q4 => {
                    let (d, m) = (row.d.get(b), row.m.get(b));
                    let hb = row.qh.get(b).copied().unwrap_or(0);
                    for j in 0..16 {
                        let q = row.qs[b * 16 + j];
                        o[j] = f(d * ((q & 15) as u32 | ((hb >> j) & 1) << 4) as f32, m);
                        o[j + 16] = f(d * ((q >> 4) as u32 | ((hb >> (j + 16)) & 1) << 4) as f32, m);
                    }
                }
                Kind::Q8 => {
                    for (j, v) in o.iter_mut().enumerate() {
                        let d = if self.split { row.d.get(2 * b + j / 16) } else { row.d.get(b) };
                        *v = f(d * row.qs[b * QK + j] as i8 as f32, 0.0);
                    }
                }
            }
        }
    }

    #[inline]
    pub(crate) fn row(&self, r: usize) -> Row<'_> {
        let nb = self.nb;
        let qb = if self.kind == Kind::Q4 { 16 } else { 32 };
        let ds = if self.split { 2 * nb } else { nb };
        Row {
            qs: &self.qs[r * nb * qb..(r + 1) * nb * qb],
            d: self.d.slice(r * ds..(r + 1) * ds),
            m: if self.kind == Kind::Q4 { self.m.slice(r * nb..(r + 1) * nb) } else { self.m.slice(0..0) },
            qh: if self.qh.is_empty() { &[] } else { &self.qh[r * nb..(r + 1) * nb] },
            split: self.split,
            offset: self.offset,
        }
    }

    /// `dst[i·n + r] = Σ_j x[i·k + j] · W[r, j]` for `m` activation rows, on candle's worker pool,
    /// with 8-bit activations.
    pub fn matmul(&self, x: &[f32], m: usize, dst: &mut [f32]) {
        self.matmul_with(x, m, dst, Precision::I8)
    }

    /// [`QWeight::matmul`] at the chosen activation precision.
    pub fn matmul_with(&self, x: &[f32], m: usize, dst: &mut [f32], precision: Precision) {
        matmul_many(&[self], x, m, &mut [dst], precision)
    }
}
