//! The GGUF block formats these kernels take ([`Format`]): their block sizes, and the repacking of
//! the simple quants (Q4_0, Q4_1, Q5_0, Q5_1, Q8_0) into a [`QWeight`] without changing a value.
//! The K-quants' repacking is in `kquant`.

use std::slice::ChunksExact;

use half::f16;

use crate::aligned::Fill;
use crate::kquant::{self, QK_K};
use crate::scales::Scales;
use crate::weight::{Kind, QWeight};
use crate::QK;

/// The block formats these kernels take.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Q4_0,
    Q4_1,
    Q5_0,
    Q5_1,
    Q8_0,
    Q4K,
    Q6K,
}

impl Format {
    pub fn from_ggml(dtype: candle_core::quantized::GgmlDType) -> Option<Self> {
        use candle_core::quantized::GgmlDType as D;
        match dtype {
            D::Q4_0 => Some(Format::Q4_0),
            D::Q4_1 => Some(Format::Q4_1),
            D::Q5_0 => Some(Format::Q5_0),
            D::Q5_1 => Some(Format::Q5_1),
            D::Q8_0 => Some(Format::Q8_0),
            D::Q4K => Some(Format::Q4K),
            D::Q6K => Some(Format::Q6K),
            _ => None,
        }
    }

    /// Values and bytes of one block (a super-block for the K-quants) in the GGUF file.
    fn block(self) -> (usize, usize) {
        match self {
            Format::Q4_0 => (QK, 18),
            Format::Q4_1 => (QK, 20),
            Format::Q5_0 => (QK, 22),
            Format::Q5_1 => (QK, 24),
            Format::Q8_0 => (QK, 34),
            Format::Q4K => (QK_K, 144),
            Format::Q6K => (QK_K, 210),
        }
    }
}

/// The little-endian f16 at byte `at` of a GGUF block.
pub(crate) fn f16_at(b: &[u8], at: usize) -> f16 {
    f16::from_le_bytes([b[at], b[at + 1]])
}

impl QWeight {
    /// Repacks `n × k` weights from their GGUF bytes (row-major blocks, as in the file).
    pub fn from_gguf_bytes(format: Format, n: usize, k: usize, raw: &[u8]) -> Result<Self, String> {
        let (bk, bb) = format.block();
        if k == 0 || !k.is_multiple_of(bk) {
            return Err(format!("{format:?}: row length {k} is not a multiple of {bk}"));
        }
        if raw.len() != n * (k / bk) * bb {
            return Err(format!("{format:?} {n}x{k} needs {} bytes, got {}", n * (k / bk) * bb, raw.len()));
        }
        let blocks = raw.chunks_exact(bb);
        let w = match format {
            Format::Q4_0 | Format::Q4_1 | Format::Q5_0 | Format::Q5_1 => q4_q5(format, n, k, blocks),
            Format::Q8_0 => q8_0(n, k, blocks),
            Format::Q4K => kquant::q4k(n, k, blocks),
            Format::Q6K => kquant::q6k(n, k, blocks),
        };
        Ok(w)
    }
}

/// Repacks Q4_0, Q4_1, Q5_0 or Q5_1 `blocks` of an `n × k` weight.
fn q4_q5(format: Format, n: usize, k: usize, blocks: ChunksExact<u8>) -> QWeight {
    let nb = k / QK;
    let five = matches!(format, Format::Q5_0 | Format::Q5_1);
    let (mut qs, mut d, mut m) = (Fill::new(n * nb * 16), Vec::with_capacity(n * nb), Vec::new());
    let mut qh = Vec::new();
    m.reserve(n * nb);
    qh.reserve(if five { n * nb } else { 0 });
    for b in blocks {
        let scale = f16_at(b, 0);
        d.push(scale);
        let mut at = if matches!(format, Format::Q4_1 | Format::Q5_1) {
            m.push(f16_at(b, 2));
            4
        } else {
            // d·(q − 8) = d·q + (−8·d), or −16·d for Q5_0: a power-of-two multiple
            // is exact in f16.
            m.push(f16::from_f32(if five { -16.0 } else { -8.0 } * scale.to_f32()));
            2
        };
        if five {
            qh.push(u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]]));
            at += 4;
        }
        qs.extend_from_slice(&b[at..at + 16]);
    }
    QWeight {
        kind: Kind::Q4,
        n,
        k,
        nb,
        qs: qs.done(),
        d: Scales::F16(d),
        m: Scales::F16(m),
        qh,
        split: false,
        offset: match format {
            Format::Q4_0 => 8,
            Format::Q5_0 => 16,
            _ => 0,
        },
    }
}

/// Repacks Q8_0 `blocks` of an `n × k` weight.
fn q8_0(n: usize, k: usize, blocks: ChunksExact<u8>) -> QWeight {
    let nb = k / QK;
    let (mut qs, mut d) = (Fill::new(n * k), Vec::with_capacity(n * nb));
    for b in blocks {
        d.push(f16_at(b, 0));
        qs.extend_from_slice(&b[2..34]);
    }
    QWeight {
        kind: Kind::Q8,
        n,
        k,
        nb,
        qs: qs.done(),
        d: Scales::F16(d),
        m: Scales::F16(Vec::new()),
        qh: Vec::new(),
        split: false,
        offset: 0,
    }
}
