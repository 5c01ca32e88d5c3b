//! Quantized matmul kernels for the CPU: the GGUF formats small models ship (Q4_0, Q4_1, Q5_0,
//! Q5_1, Q8_0 and the K-quants Q4_K, Q6_K), with AVX-512 VNNI and AVX2 paths picked at run time
//! and a scalar fallback, so one x86-64-v3 binary runs at its best on every host.
//!
//! Weights are repacked at load without changing a value: a row's nibbles (or bytes) lie
//! contiguous and its scales, mins and fifth bits in their own arrays, so SIMD loads are plain.
//! Q4_0 and Q5_0 are stored as `d·q + m` with `m = −8·d` or `−16·d` (exact in f16). The K-quants
//! become the same 32-value blocks: Q4_K's sub-block `d·sc` and `−dmin·min` are exact products in
//! f32 (not in f16), and Q6_K becomes i8 `q − 32` with one f32 scale `d·sc` per 16 values.
//! Activations are quantized per 32-value block to i8 (as ggml does) or i16 ([`Precision`]) with an
//! f32 scale, and the block sums are kept for the min term:
//! `Σ (d·q + m)·(da·a) = d·da·Σ q·a + m·(da·Σ a)`. For K-quant weights at 16 bits the scale
//! covers a 256-value super-block, so that a super-block's products sum in integers.

use half::f16;

#[cfg(target_arch = "x86_64")]
mod x86;

/// Values per quantization block in every format here (K-quant super-blocks are split into
/// blocks of this size at load).
pub const QK: usize = 32;

/// Values per K-quant super-block.
const QK_K: usize = 256;

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

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// value = d·q + m, q in 0..=15 (nibbles: low = element j, high = element j + 16).
    Q4,
    /// value = d·q, q an i8 (with `split`, one d per 16 values).
    Q8,
}

/// A weight's block scales (and Q4 mins): f16 as the file stores them, or for the K-quants the
/// file's small integer scales with their super-block's f16 factor (`PER` entries a factor), so
/// that the repacked weight is no larger than the file's.
enum Scales {
    F16(Vec<f16>),
    K8(Vec<i8>, Vec<f16>),
    K16(Vec<i8>, Vec<f16>),
}

impl Scales {
    fn bytes(&self) -> usize {
        match self {
            Scales::F16(v) => 2 * v.len(),
            Scales::K8(q, d) | Scales::K16(q, d) => q.len() + 2 * d.len(),
        }
    }

    /// Entries `r` (whole super-blocks for the K variants).
    fn slice(&self, r: std::ops::Range<usize>) -> ScaleRow<'_> {
        match self {
            Scales::F16(v) => ScaleRow::F16(&v[r]),
            Scales::K8(q, d) => ScaleRow::K8(KScales { q: &q[r.clone()], d: &d[r.start / 8..r.end.div_ceil(8)] }),
            Scales::K16(q, d) => ScaleRow::K16(KScales { q: &q[r.clone()], d: &d[r.start / 16..r.end.div_ceil(16)] }),
        }
    }
}

#[derive(Clone, Copy)]
enum ScaleRow<'a> {
    F16(&'a [f16]),
    K8(KScales<'a, 8>),
    K16(KScales<'a, 16>),
}

impl ScaleRow<'_> {
    fn get(&self, i: usize) -> f32 {
        match *self {
            ScaleRow::F16(v) => Scale::get(v, i),
            ScaleRow::K8(k) => k.get(i),
            ScaleRow::K16(k) => k.get(i),
        }
    }
}

/// K-quant scales: entry i is `q[i] · d[i / PER]`, a product f32 holds exactly (a 6- or 8-bit
/// integer times an f16).
#[derive(Clone, Copy)]
pub(crate) struct KScales<'a, const PER: usize> {
    q: &'a [i8],
    d: &'a [f16],
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

/// A buffer whose first element lies on a 64-byte boundary (a cache line). Rows of weights and
/// activations are whole multiples of 64 bytes in the common widths, so no 512-bit load of a block
/// pair then straddles two lines (Q4_K and Q6_K prefill kernels +10–15 %).
struct Aligned<T> {
    buf: Vec<T>,
    at: usize,
    len: usize,
}

impl<T: Copy + Default> Aligned<T> {
    fn zeroed(len: usize) -> Self {
        let pad = 64 / std::mem::size_of::<T>();
        let buf = vec![T::default(); len + pad];
        // `align_offset` may decline (usize::MAX); the buffer is then merely unaligned.
        let at = buf.as_ptr().align_offset(64).min(pad);
        Aligned { buf, at, len }
    }
}

/// An [`Aligned`] buffer of a size known in advance, written front to back (a weight's values
/// as the repacking produces them, without a second copy at load).
struct Fill<T> {
    buf: Aligned<T>,
    at: usize,
}

impl<T: Copy + Default> Fill<T> {
    fn new(len: usize) -> Self {
        Fill { buf: Aligned::zeroed(len), at: 0 }
    }

    fn extend_from_slice(&mut self, v: &[T]) {
        self.buf[self.at..self.at + v.len()].copy_from_slice(v);
        self.at += v.len();
    }

    fn extend(&mut self, it: impl IntoIterator<Item = T>) {
        for v in it {
            self.buf[self.at] = v;
            self.at += 1;
        }
    }

    fn done(self) -> Aligned<T> {
        debug_assert_eq!(self.at, self.buf.len(), "every value written");
        self.buf
    }
}

impl<T> std::ops::Deref for Aligned<T> {
    type Target = [T];
    fn deref(&self) -> &[T] {
        &self.buf[self.at..self.at + self.len]
    }
}

impl<T> std::ops::DerefMut for Aligned<T> {
    fn deref_mut(&mut self) -> &mut [T] {
        &mut self.buf[self.at..self.at + self.len]
    }
}

/// One linear layer's weights: `n` rows (outputs) of `k` inputs, repacked for the kernels.
pub struct QWeight {
    kind: Kind,
    pub n: usize,
    pub k: usize,
    /// Blocks per row.
    nb: usize,
    qs: Aligned<u8>,
    d: Scales,
    /// Q4 only.
    m: Scales,
    /// Q5 formats only: each block's fifth bits (bit j for element j), on top of the nibbles.
    qh: Vec<u32>,
    /// Two scales per block, one per 16 values (Q6_K).
    split: bool,
    /// Q4_0 and Q5_0: what every stored value lies above (8 or 16), whose min term `m` = −offset·d
    /// `x86::dot_r16_vnni` takes off the widened weights instead, once for all rows.
    offset: i16,
}

/// Which instruction set the kernels use on this host, ordered from least to most capable
/// (levels are compared with `as u8`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    Scalar,
    Avx2,
    Avx512Vnni,
}

/// The best level this CPU offers (`CORTEX_KERNELS=scalar|avx2` caps it, for comparisons).
pub fn level() -> Level {
    static LEVEL: std::sync::OnceLock<Level> = std::sync::OnceLock::new();
    *LEVEL.get_or_init(|| {
        let cap = std::env::var("CORTEX_KERNELS").unwrap_or_default();
        detect(&cap)
    })
}

fn detect(cap: &str) -> Level {
    #[cfg(target_arch = "x86_64")]
    {
        if cap == "scalar" {
            return Level::Scalar;
        }
        let avx2 = is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma");
        let f16c = is_x86_feature_detected!("f16c");
        let vnni = is_x86_feature_detected!("avx512f")
            && is_x86_feature_detected!("avx512bw")
            && is_x86_feature_detected!("avx512vl")
            && is_x86_feature_detected!("avx512vnni");
        if cap != "avx2" && avx2 && f16c && vnni {
            return Level::Avx512Vnni;
        }
        if avx2 && f16c {
            return Level::Avx2;
        }
    }
    let _ = cap;
    Level::Scalar
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

impl QWeight {
    /// Repacks `n × k` weights from their GGUF bytes (row-major blocks, as in the file).
    pub fn from_gguf_bytes(format: Format, n: usize, k: usize, raw: &[u8]) -> Result<Self, String> {
        let (bk, bb) = format.block();
        if k == 0 || !k.is_multiple_of(bk) {
            return Err(format!("{format:?}: row length {k} is not a multiple of {bk}"));
        }
        let nb = k / QK;
        if raw.len() != n * (k / bk) * bb {
            return Err(format!("{format:?} {n}x{k} needs {} bytes, got {}", n * (k / bk) * bb, raw.len()));
        }
        let h = |b: &[u8], at: usize| f16::from_le_bytes([b[at], b[at + 1]]);
        let blocks = raw.chunks_exact(bb);
        let w = match format {
            Format::Q4_0 | Format::Q4_1 | Format::Q5_0 | Format::Q5_1 => {
                let five = matches!(format, Format::Q5_0 | Format::Q5_1);
                let (mut qs, mut d, mut m) = (Fill::new(n * nb * 16), Vec::with_capacity(n * nb), Vec::new());
                let mut qh = Vec::new();
                m.reserve(n * nb);
                qh.reserve(if five { n * nb } else { 0 });
                for b in blocks {
                    let scale = h(b, 0);
                    d.push(scale);
                    let mut at = if matches!(format, Format::Q4_1 | Format::Q5_1) {
                        m.push(h(b, 2));
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
            Format::Q8_0 => {
                let (mut qs, mut d) = (Fill::new(n * k), Vec::with_capacity(n * nb));
                for b in blocks {
                    d.push(h(b, 0));
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
            Format::Q4K => {
                let supers = n * k / QK_K;
                let (mut qs, mut dq, mut mq) = (Fill::new(n * k / 2), Vec::with_capacity(n * nb), Vec::new());
                let (mut dd, mut md) = (Vec::with_capacity(supers), Vec::with_capacity(supers));
                mq.reserve(n * nb);
                for b in raw.chunks_exact(bb) {
                    // value = d·sc·q − dmin·min: the min term's factor is −dmin (exact in f16).
                    dd.push(h(b, 0));
                    md.push(-h(b, 2));
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
            Format::Q6K => {
                let (mut qs, mut dq, mut dd) = (Fill::new(n * k), Vec::with_capacity(2 * n * nb), Vec::new());
                for b in raw.chunks_exact(bb) {
                    let (ql, qh, sc) = (&b[0..128], &b[128..192], &b[192..208]);
                    dd.push(h(b, 208));
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
        };
        Ok(w)
    }

    /// Whether the AVX2 kernels take this weight with 8-bit activations (f16 scales, no fifth bits).
    fn has_avx2_8bit(&self) -> bool {
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

    fn row(&self, r: usize) -> Row<'_> {
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

    /// Rows `rows` of this weight against all `m` activation rows, into `out` (`m × n`).
    fn run_rows(
        &self,
        rows: std::ops::Range<usize>,
        acts: &QActs,
        act_rows: std::ops::Range<usize>,
        lvl: Level,
        out: usize,
    ) {
        let n = self.n;
        // SAFETY: the caller gives each (weight rows, activation rows) tile to exactly one work
        // item, and `out` points at an `m × n` buffer that outlives the pool call.
        let put = |i: usize, r: usize, v: f32| unsafe { *(out as *mut f32).add(i * n + r) = v };
        let (first, end) = (act_rows.start, act_rows.end);
        let quads_end = first + (end - first) / 4 * 4;
        match acts {
            QActs::I8(a) => {
                for i in (first..quads_end).step_by(4) {
                    let q = [a.row(i), a.row(i + 1), a.row(i + 2), a.row(i + 3)];
                    for r in rows.clone() {
                        let v = dot4(self.kind, lvl, &self.row(r), &q);
                        (0..4).for_each(|j| put(i + j, r, v[j]));
                    }
                }
                for i in quads_end..end {
                    let q = a.row(i);
                    for r in rows.clone() {
                        put(i, r, dot(self.kind, lvl, &self.row(r), &q));
                    }
                }
            }
            QActs::I16(a) => {
                // Eight rows a pass where there are eight: the weights' unpacking to 16 bits is
                // shared by twice the rows (SmolLM2 pp512 +6 %; the 8-bit path gained nothing).
                // The rows' slices are built once for all the weight rows.
                let refs = |i: usize| {
                    let r = a.row(i);
                    (r.q, r.d, r.s)
                };
                let octs_end = first + (end - first) / 8 * 8;
                let mut next = first;
                #[cfg(target_arch = "x86_64")]
                if lvl == Level::Avx512Vnni
                    && self.vnni_passes::<8>(rows.clone(), a, (first..octs_end).step_by(8), &put)
                {
                    next = octs_end;
                }
                for i in (next..octs_end).step_by(8) {
                    let q: [_; 8] = std::array::from_fn(|j| refs(i + j));
                    for r in rows.clone() {
                        let v = dot16_refs(self.kind, lvl, &self.row(r), &q, a.group);
                        (0..8).for_each(|j| put(i + j, r, v[j]));
                    }
                }
                for i in (octs_end..quads_end).step_by(4) {
                    let q: [_; 4] = std::array::from_fn(|j| refs(i + j));
                    for r in rows.clone() {
                        let v = dot16_refs(self.kind, lvl, &self.row(r), &q, a.group);
                        (0..4).for_each(|j| put(i + j, r, v[j]));
                    }
                }
                // Two rows a pass where two or three are left (a decode step of two or three
                // sequences): one call takes the work item's weight rows, as for one and eight
                // (SmolLM2, two sequences batched: 1.1–1.25 → 1.5 times two steps one at a
                // time). Four rows a pass this way were 10 % slower than `dot16_refs`.
                let mut next = quads_end;
                #[cfg(target_arch = "x86_64")]
                {
                    let pairs_end = quads_end + (end - quads_end) / 2 * 2;
                    if lvl == Level::Avx512Vnni
                        && self.vnni_passes::<2>(rows.clone(), a, (quads_end..pairs_end).step_by(2), &put)
                    {
                        next = pairs_end;
                    }
                }
                // Single rows (decode's one) the same way.
                #[cfg(target_arch = "x86_64")]
                if lvl == Level::Avx512Vnni && self.vnni_passes::<1>(rows.clone(), a, next..end, &put) {
                    next = end;
                }
                for i in next..end {
                    let q = a.row(i);
                    for r in rows.clone() {
                        put(i, r, dot16(self.kind, lvl, &self.row(r), [&q])[0]);
                    }
                }
            }
        }
    }
}

impl QWeight {
    /// Passes of `R` activation rows (from each of `starts`) through a VNNI kernel that takes
    /// all of `rows` in one call, where this weight and `a` have one (false where not, with
    /// nothing done). The caller has detected VNNI.
    #[cfg(target_arch = "x86_64")]
    fn vnni_passes<const R: usize>(
        &self,
        rows: std::ops::Range<usize>,
        a: &Acts<i16>,
        starts: impl Iterator<Item = usize>,
        put: &impl Fn(usize, usize, f32),
    ) -> bool {
        let (n, nb, r0) = (rows.len(), self.nb, rows.start);
        let mut starts = starts.peekable();
        if n == 0 || starts.peek().is_none() {
            // Nothing to run (decode passes here with no whole passes of 8 rows).
            return true;
        }
        let refs = |i: usize| -> [x86::Act16; R] {
            std::array::from_fn(|j| {
                let r = a.row(i + j);
                (r.q, r.d, r.s)
            })
        };
        let put_r = |i: usize, t: usize, v: [f32; R]| (0..R).for_each(|j| put(i + j, r0 + t, v[j]));
        // Weight row t of the group, sliced by plain arithmetic (built through `QWeight::row`
        // they cost a tenth of decode). A single activation row takes it straight; passes of
        // several read it from an array built once (rows past `n` repeat the last), as slicing
        // it again each pass cost 2 % of prefill.
        macro_rules! passes {
            ($row:expr, |$w:ident, $q:ident, $i:ident| $call:expr) => {{
                let row = $row;
                if R == 1 {
                    for $i in starts {
                        let ($w, $q) = (row, refs($i));
                        // SAFETY: the caller detected VNNI.
                        unsafe { $call }
                    }
                } else {
                    let ws: [_; GROUP] = std::array::from_fn(|t| row(t.min(n - 1)));
                    let from_array = |t: usize| ws[t];
                    for $i in starts {
                        let ($w, $q) = (from_array, refs($i));
                        // SAFETY: the caller detected VNNI.
                        unsafe { $call }
                    }
                }
            }};
        }
        match (self.kind, &self.d, &self.m) {
            (kind, Scales::F16(d), Scales::F16(m)) if a.group >= a.nb && !self.split => {
                let bytes = if kind == Kind::Q4 { 16 } else { QK };
                let row = |t: usize| {
                    let r = r0 + t;
                    let m = if m.is_empty() { &[][..] } else { &m[r * nb..(r + 1) * nb] };
                    let qh = if self.qh.is_empty() { &[][..] } else { &self.qh[r * nb..(r + 1) * nb] };
                    (&self.qs[r * nb * bytes..(r + 1) * nb * bytes], &d[r * nb..(r + 1) * nb], m, qh)
                };
                match kind {
                    Kind::Q4 => passes!(row, |w, q, i| x86::rows_r16_vnni::<true, R>(n, w, self.offset, &q, |t, v| {
                        put_r(i, t, v)
                    })),
                    Kind::Q8 => {
                        passes!(row, |w, q, i| x86::rows_r16_vnni::<false, R>(n, w, 0, &q, |t, v| put_r(i, t, v)))
                    }
                }
            }
            (Kind::Q4, Scales::K8(dq, dd), Scales::K8(mq, md)) if a.group == 8 => {
                // One scale and min a block, one f16 factor each per super-block of 8.
                let row = |t: usize| {
                    let r = r0 + t;
                    let (span, sup) = (r * nb..(r + 1) * nb, r * nb / 8..(r + 1) * nb / 8);
                    let d = KScales { q: &dq[span.clone()], d: &dd[sup.clone()] };
                    let m = KScales { q: &mq[span], d: &md[sup] };
                    (&self.qs[r * nb * 16..(r + 1) * nb * 16], d, m, &[][..])
                };
                passes!(row, |w, q, i| x86::rows_k16_vnni::<true, 8, R>(n, w, &q, |t, v| put_r(i, t, v)))
            }
            (Kind::Q8, Scales::K16(dq, dd), _) if a.group == 8 => {
                // Two scales a block (one per 16 values), one f16 factor per super-block of 8.
                let row = |t: usize| {
                    let r = r0 + t;
                    let d = KScales { q: &dq[2 * r * nb..2 * (r + 1) * nb], d: &dd[r * nb / 8..(r + 1) * nb / 8] };
                    (&self.qs[r * nb * QK..(r + 1) * nb * QK], d, KScales { q: &[], d: &[] }, &[][..])
                };
                passes!(row, |w, q, i| x86::rows_k16_vnni::<false, 16, R>(n, w, &q, |t, v| put_r(i, t, v)))
            }
            _ => return false,
        }
        true
    }
}

enum QActs {
    I8(Acts<i8>),
    I16(Acts<i16>),
}

/// Weight rows a work item takes: a work item is then worth the cursor's atomic, and its rows
/// stay in L1.
const GROUP: usize = 8;

/// Several weights that read the same input (q, k and v; gate and up): the input is quantized
/// once and all their rows go to the worker pool in one hand-off. `dsts[w]` is `m × ws[w].n`.
pub fn matmul_many(ws: &[&QWeight], x: &[f32], m: usize, dsts: &mut [&mut [f32]], precision: Precision) {
    matmul_many_at(level(), ws, x, m, dsts, precision)
}

/// [`matmul_many`] on a chosen instruction set, capped at what this CPU has (for tests and the
/// fuzzer, which compare the levels).
pub fn matmul_many_at(lvl: Level, ws: &[&QWeight], x: &[f32], m: usize, dsts: &mut [&mut [f32]], precision: Precision) {
    let lvl = capped(lvl);
    assert_eq!(ws.len(), dsts.len(), "one output per weight");
    let Some(k) = ws.first().map(|w| w.k) else { return };
    assert!(ws.iter().all(|w| w.k == k), "weights of one batch share their input width");
    assert_eq!(x.len(), m * k, "activation shape");
    for (w, d) in ws.iter().zip(dsts.iter()) {
        assert_eq!(d.len(), m * w.n, "output shape");
    }
    let precision = effective_precision(lvl, ws, precision);
    let acts = match precision {
        Precision::I8 => QActs::I8(Acts::<i8>::quantize(x, m, k)),
        Precision::I16 => QActs::I16(Acts::<i16>::quantize_grouped(x, m, k, act16_group(ws))),
    };
    let outs: Vec<usize> = dsts.iter_mut().map(|d| d.as_mut_ptr() as usize).collect();
    // Work items are tiles: GROUP weight rows by a chunk of activation rows small enough to stay
    // in L2 while every weight group passes it. Without chunks a 512-token prompt streamed all
    // its activations from L3 once per 8 weight rows, which bound prefill more than the
    // multiply-adds did.
    const CHUNK_BYTES: usize = 128 * 1024;
    let act_bytes = k * if matches!(acts, QActs::I8(_)) { 1 } else { 2 };
    // Whole passes of 8 rows (a chunk of 100 rows left a pass of 4 at a quarter less speed).
    let chunk = (CHUNK_BYTES / act_bytes).max(8) / 8 * 8;
    let chunks = m.div_ceil(chunk);
    let mut starts = Vec::with_capacity(ws.len() + 1);
    starts.push(0);
    for w in ws {
        starts.push(starts[starts.len() - 1] + w.n.div_ceil(GROUP));
    }
    let groups = starts[ws.len()];
    // Chunk-major: both threads work through one activation chunk at a time.
    candle_core::utils::barrier_pool().execute_chunked(chunks * groups, |items| {
        for item in items {
            let (c, g) = (item / groups, item % groups);
            let wi = starts.partition_point(|&s| s <= g) - 1;
            let (w, local) = (ws[wi], g - starts[wi]);
            let act_rows = c * chunk..((c + 1) * chunk).min(m);
            w.run_rows(local * GROUP..((local + 1) * GROUP).min(w.n), &acts, act_rows, lvl, outs[wi]);
        }
    });
}

/// How many blocks share one 16-bit activation scale for `ws` (the other levels read the same
/// integers, so that every level computes the same function):
/// - K-quants alone: a super-block (8), whose integer products `x86::dot_k16_vnni` sums in i32;
/// - f16-scaled formats alone (Q4_0 … Q8_0): the whole row, so that `x86::dot_r16_vnni` lays out
///   a block pair's weight scales once for all rows and applies a row's scale once (Gemma 3's
///   640-wide Q5_0 matmuls 62 → 74 GMAC/s). Sixteen bits over a row keep logits within 2e-3 of
///   f32 on SmolLM2 and 5e-4 on Gemma 3 (BENCHMARKS.md), against 2e-4 with a scale per block;
/// - a mix: one a block.
fn act16_group(ws: &[&QWeight]) -> usize {
    let nb = ws.first().map_or(1, |w| w.nb);
    if ws.iter().all(|w| matches!(w.d, Scales::K8(..) | Scales::K16(..))) {
        8
    } else if ws.iter().all(|w| matches!(w.d, Scales::F16(_))) {
        nb.max(1)
    } else {
        1
    }
}

/// `lvl`, or this CPU's best level where `lvl` is beyond it.
fn capped(lvl: Level) -> Level {
    if lvl as u8 <= level() as u8 {
        lvl
    } else {
        level()
    }
}

/// The activation precision [`matmul_many_at`] computes `ws` at when asked for `p` on `lvl`: AVX2
/// has 8-bit kernels only for the formats with one f16 scale per block and no fifth bits, and
/// takes the Q5 formats and the K-quants at 16 bits.
pub fn effective_precision(lvl: Level, ws: &[&QWeight], p: Precision) -> Precision {
    if capped(lvl) == Level::Avx2 && ws.iter().any(|w| !w.has_avx2_8bit()) {
        Precision::I16
    } else {
        p
    }
}

/// One weight row.
struct Row<'a> {
    qs: &'a [u8],
    d: ScaleRow<'a>,
    m: ScaleRow<'a>,
    /// Empty unless a Q5 format.
    qh: &'a [u32],
    split: bool,
    offset: i16,
}

/// How finely activations are quantized before the integer dot products.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Precision {
    /// 8 bits per value, as llama.cpp does: the fastest, with a relative error near 1e-2 of a
    /// layer's output scale.
    I8,
    /// 16 bits per value: near-f32 results (about 1e-4 of a layer's output, logits within 2e-3
    /// of f32 on the models measured in BENCHMARKS.md), for half the multiply-adds per
    /// instruction (1–3 % of decode speed, more in compute-bound prefill).
    I16,
}

/// Activations quantized per block: `x ≈ d·q` with `q` an i8 (`Acts<i8>`, natural order) or an
/// i16 (`Acts<i16>`, each row pair-interleaved — see `x86`: blocks 2p and 2p+1 as
/// [2p lo, 2p+1 lo, 2p hi, 2p+1 hi] halves), and `s = d·Σq` per block for the Q4 min term.
pub struct Acts<T> {
    nb: usize,
    /// Blocks that share one scale: 1, 8 (a K-quant super-block) for [`x86::dot_k16_vnni`], or
    /// the whole row for [`x86::dot_r16_vnni`].
    group: usize,
    q: Aligned<T>,
    d: Vec<f32>,
    s: Vec<f32>,
}

/// One activation row.
struct ActRow<'a, T> {
    q: &'a [T],
    d: &'a [f32],
    s: &'a [f32],
    group: usize,
}

impl<T> Acts<T> {
    fn row(&self, i: usize) -> ActRow<'_, T> {
        let nb = self.nb;
        ActRow {
            q: &self.q[i * nb * QK..(i + 1) * nb * QK],
            d: &self.d[i * nb..(i + 1) * nb],
            s: &self.s[i * nb..(i + 1) * nb],
            group: self.group,
        }
    }
}

/// A SIMD quantizer of one row (`x`, `group`, then the row's values, scales and sums).
type RowQuantizer<T> = unsafe fn(&[f32], usize, &mut [T], &mut [f32], &mut [f32]);

/// How the scalar loop stores a quantized value: to `±max`, converted by `to`, element `j` of
/// block `b` (of `nb` per row) at `place(nb, b, j)` within its row.
struct Layout<F, P> {
    max: f32,
    to: F,
    place: P,
}

/// Quantizes each group of `group` 32-value blocks with one scale (kept per block), by `simd`
/// where given, else by the scalar loop, whose rounding (half to even, as `cvtps2dq`) a SIMD
/// quantizer can match exactly.
fn quantize<T: Copy + Default + Send, F, P>(
    x: &[f32],
    m: usize,
    k: usize,
    group: usize,
    layout: Layout<F, P>,
    simd: Option<RowQuantizer<T>>,
) -> Acts<T>
where
    F: Fn(i32) -> T + Sync,
    P: Fn(usize, usize, usize) -> usize + Sync,
{
    let Layout { max, to, place } = layout;
    let nb = k / QK;
    let mut q = Aligned::<T>::zeroed(m * k);
    let (mut d, mut s) = (vec![0f32; m * nb], vec![0f32; m * nb]);
    let row = |xr: &[f32], qr: &mut [T], dr: &mut [f32], sr: &mut [f32]| {
        if let Some(f) = simd {
            // SAFETY: a SIMD quantizer is passed only where run-time detection found its features.
            return unsafe { f(xr, group, qr, dr, sr) };
        }
        for (g, xg) in xr.chunks(QK * group).enumerate() {
            let amax = xg.iter().fold(0f32, |a, v| a.max(v.abs()));
            let scale = amax / max;
            let inv = if scale > 0.0 { 1.0 / scale } else { 0.0 };
            for (bi, xs) in xg.chunks_exact(QK).enumerate() {
                let b = g * group + bi;
                let mut sum = 0i32;
                for (j, v) in xs.iter().enumerate() {
                    let r = (v * inv).round_ties_even() as i32;
                    sum += r;
                    qr[place(nb, b, j)] = to(r);
                }
                dr[b] = scale;
                sr[b] = scale * sum as f32;
            }
        }
    };
    // A prompt's rows on the worker pool (one thread alone was ≈ 3 % of a long prefill, with
    // the other waiting); decode's single row stays on the caller.
    if m >= 16 {
        let (qp, dp, sp) = (q.as_mut_ptr() as usize, d.as_mut_ptr() as usize, s.as_mut_ptr() as usize);
        candle_core::utils::barrier_pool().execute_chunked(m, |rows| {
            for i in rows {
                // SAFETY: row i alone writes these disjoint ranges of q, d and s, which outlive
                // the pool call.
                let (qr, dr, sr) = unsafe {
                    (
                        std::slice::from_raw_parts_mut((qp as *mut T).add(i * k), k),
                        std::slice::from_raw_parts_mut((dp as *mut f32).add(i * nb), nb),
                        std::slice::from_raw_parts_mut((sp as *mut f32).add(i * nb), nb),
                    )
                };
                row(&x[i * k..(i + 1) * k], qr, dr, sr);
            }
        });
    } else {
        let rows = x.chunks_exact(k).zip(q.chunks_exact_mut(k)).zip(d.chunks_exact_mut(nb).zip(s.chunks_exact_mut(nb)));
        for ((xr, qr), (dr, sr)) in rows {
            row(xr, qr, dr, sr);
        }
    }
    Acts { nb, group, q, d, s }
}

impl Acts<i8> {
    pub fn quantize(x: &[f32], m: usize, k: usize) -> Self {
        let layout = Layout { max: 127.0, to: |r| r as i8, place: |_, b, j| b * QK + j };
        quantize(x, m, k, 1, layout, None)
    }
}

impl Acts<i16> {
    pub fn quantize(x: &[f32], m: usize, k: usize) -> Self {
        Self::quantize_grouped(x, m, k, 1)
    }

    /// One scale per `group` blocks (the last group of a row may be short): with 8, a K-quant
    /// super-block's integer products sum in i32 before any float work (`x86::dot_k16_vnni`);
    /// with the whole row, `x86::dot_r16_vnni` applies it once. Sixteen bits over 256 values, or
    /// a row, keep the result near f32 (the tests' 1e-3 bound holds).
    pub fn quantize_grouped(x: &[f32], m: usize, k: usize, group: usize) -> Self {
        Self::quantize_grouped_with(x, m, k, group, Self::simd_row())
    }

    /// [`Acts::quantize_grouped`] with the scalar loop (`simd` None) or a SIMD row quantizer.
    fn quantize_grouped_with(x: &[f32], m: usize, k: usize, group: usize, simd: Option<RowQuantizer<i16>>) -> Self {
        let place = |nb, b, j| {
            let (lo, hi) = halves16(nb, b);
            if j < 16 {
                lo + j
            } else {
                hi + j - 16
            }
        };
        quantize(x, m, k, group, Layout { max: 32767.0, to: |r| r as i16, place }, simd)
    }

    /// The AVX-512 row quantizer where this CPU has it (the scalar loop was 3 % of Gemma 3's
    /// prefill; pp512 +3.5 % with this).
    fn simd_row() -> Option<RowQuantizer<i16>> {
        #[cfg(target_arch = "x86_64")]
        if level() == Level::Avx512Vnni {
            return Some(x86::quantize_row16);
        }
        None
    }
}

/// Where block `b`'s lo and hi halves start in a pair-interleaved row of `nb` blocks.
fn halves16(nb: usize, b: usize) -> (usize, usize) {
    let base = 64 * (b / 2);
    if b + 1 == nb && nb % 2 == 1 {
        (base, base + 16)
    } else {
        let odd = 16 * (b % 2);
        (base + odd, base + 32 + odd)
    }
}

/// `R` activation rows (16-bit) against one weight row.
fn dot16<const R: usize>(kind: Kind, lvl: Level, w: &Row, a: [&ActRow<i16>; R]) -> [f32; R] {
    // Rows of one `Acts` share their grouping.
    let group = a.first().map_or(1, |r| r.group);
    dot16_refs(kind, lvl, w, &a.map(|r| (r.q, r.d, r.s)), group)
}

/// [`dot16`] on rows given as (values, scales, sums), whose scales cover `group` blocks each:
/// prefill builds them once for all the weight rows it passes.
fn dot16_refs<const R: usize>(
    kind: Kind,
    lvl: Level,
    w: &Row,
    refs: &[(&[i16], &[f32], &[f32]); R],
    group: usize,
) -> [f32; R] {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: `lvl` comes from run-time feature detection of exactly what each path uses.
    unsafe {
        let nb = refs.first().map_or(0, |r| r.1.len());
        if lvl == Level::Avx512Vnni && group >= nb {
            match (kind, w.d, w.m) {
                (Kind::Q4, ScaleRow::F16(d), ScaleRow::F16(m)) => {
                    return x86::dot_r16_vnni::<true, R>(w.qs, d, m, w.qh, w.offset, refs)
                }
                (Kind::Q8, ScaleRow::F16(d), _) if !w.split => {
                    return x86::dot_r16_vnni::<false, R>(w.qs, d, &[], &[], 0, refs)
                }
                _ => {}
            }
        }
        if lvl == Level::Avx512Vnni && group == 8 {
            match (kind, w.d, w.m) {
                (Kind::Q4, ScaleRow::K8(d), ScaleRow::K8(m)) => {
                    return x86::dot_k16_vnni::<true, 8, R>(w.qs, d, m, refs)
                }
                (Kind::Q8, ScaleRow::K16(d), ScaleRow::K16(m)) => {
                    return x86::dot_k16_vnni::<false, 16, R>(w.qs, d, m, refs)
                }
                _ => {}
            }
        }
        let simd = match (w.d, w.m) {
            (ScaleRow::F16(d), ScaleRow::F16(m)) => dot16_x86(kind, lvl, w, d, m, refs),
            (ScaleRow::K8(d), ScaleRow::K8(m)) => dot16_x86(kind, lvl, w, d, m, refs),
            (ScaleRow::K16(d), ScaleRow::K16(m)) => dot16_x86(kind, lvl, w, d, m, refs),
            _ => None,
        };
        if let Some(v) = simd {
            return v;
        }
    }
    let _ = lvl;
    std::array::from_fn(|r| dot16_scalar(kind, w, &ActRow { q: refs[r].0, d: refs[r].1, s: refs[r].2, group }))
}

/// The SIMD paths for 16-bit activations, or None where `lvl` has none.
#[cfg(target_arch = "x86_64")]
unsafe fn dot16_x86<S: Scale, const R: usize>(
    kind: Kind,
    lvl: Level,
    w: &Row,
    d: S,
    m: S,
    a: &[(&[i16], &[f32], &[f32]); R],
) -> Option<[f32; R]> {
    Some(match (kind, lvl, w.split) {
        (Kind::Q4, Level::Avx512Vnni, _) => x86::dot_w16_vnni::<S, true, false, R>(w.qs, d, m, w.qh, a),
        (Kind::Q8, Level::Avx512Vnni, false) => x86::dot_w16_vnni::<S, false, false, R>(w.qs, d, m, w.qh, a),
        (Kind::Q8, Level::Avx512Vnni, true) => x86::dot_w16_vnni::<S, false, true, R>(w.qs, d, m, w.qh, a),
        (Kind::Q4, Level::Avx2, _) => a.map(|(q, ad, s)| x86::dot_q4_w16_avx2(w.qs, d, m, w.qh, q, ad, s)),
        (Kind::Q8, Level::Avx2, false) => a.map(|(q, ad, _)| x86::dot_q8_w16_avx2::<S, false>(w.qs, d, q, ad)),
        (Kind::Q8, Level::Avx2, true) => a.map(|(q, ad, _)| x86::dot_q8_w16_avx2::<S, true>(w.qs, d, q, ad)),
        _ => return None,
    })
}

fn dot16_scalar(kind: Kind, w: &Row, a: &ActRow<i16>) -> f32 {
    let nb = a.d.len();
    let mut acc = 0f32;
    for b in 0..nb {
        let (lo, hi) = halves16(nb, b);
        let x = |j: usize| if j < 16 { a.q[lo + j] } else { a.q[hi + j - 16] } as i32;
        match kind {
            Kind::Q4 => {
                let hb = w.qh.get(b).copied().unwrap_or(0);
                let q = |j: usize, v: u8| v as i32 | (((hb >> j) & 1) << 4) as i32;
                let sum: i32 = (0..16)
                    .map(|j| q(j, w.qs[b * 16 + j] & 15) * x(j) + q(j + 16, w.qs[b * 16 + j] >> 4) * x(j + 16))
                    .sum();
                acc += w.d.get(b) * a.d[b] * sum as f32 + w.m.get(b) * a.s[b];
            }
            Kind::Q8 => {
                let half = |h: usize| (16 * h..16 * h + 16).map(|j| w.qs[b * QK + j] as i8 as i32 * x(j)).sum::<i32>();
                acc += a.d[b]
                    * if w.split {
                        w.d.get(2 * b) * half(0) as f32 + w.d.get(2 * b + 1) * half(1) as f32
                    } else {
                        w.d.get(b) * (half(0) + half(1)) as f32
                    };
            }
        }
    }
    acc
}

/// Whether the AVX2 8-bit kernels take this row (f16 scales, no fifth bits, one scale a block);
/// VNNI takes every row.
fn avx2_8bit(w: &Row) -> bool {
    w.qh.is_empty() && !w.split && matches!(w.d, ScaleRow::F16(_))
}

fn dot(kind: Kind, lvl: Level, w: &Row, a: &ActRow<i8>) -> f32 {
    dot8(kind, lvl, w, [a])[0]
}

/// Four activation rows against one weight row.
fn dot4(kind: Kind, lvl: Level, w: &Row, a: &[ActRow<i8>; 4]) -> [f32; 4] {
    dot8(kind, lvl, w, [&a[0], &a[1], &a[2], &a[3]])
}

/// `R` activation rows (8-bit) against one weight row.
fn dot8<const R: usize>(kind: Kind, lvl: Level, w: &Row, a: [&ActRow<i8>; R]) -> [f32; R] {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: `lvl` comes from run-time feature detection of exactly what each path uses.
    unsafe {
        let refs = a.map(|r| (r.q, r.d, r.s));
        if lvl == Level::Avx512Vnni {
            match (w.d, w.m) {
                (ScaleRow::F16(d), ScaleRow::F16(m)) => return dot8_vnni(kind, w, d, m, refs),
                (ScaleRow::K8(d), ScaleRow::K8(m)) => return dot8_vnni(kind, w, d, m, refs),
                (ScaleRow::K16(d), ScaleRow::K16(m)) => return dot8_vnni(kind, w, d, m, refs),
                _ => {}
            }
        }
        if let (Level::Avx2, true, ScaleRow::F16(d), ScaleRow::F16(m)) = (lvl, avx2_8bit(w), w.d, w.m) {
            return match kind {
                Kind::Q4 => refs.map(|(q, ad, s)| x86::dot_q4_avx2(w.qs, d, m, q, ad, s)),
                Kind::Q8 => refs.map(|(q, ad, _)| x86::dot_q8_avx2(w.qs, d, q, ad)),
            };
        }
    }
    let _ = lvl;
    a.map(|a| dot_scalar(kind, w, a))
}

#[cfg(target_arch = "x86_64")]
unsafe fn dot8_vnni<S: Scale, const R: usize>(kind: Kind, w: &Row, d: S, m: S, a: [x86::ActRef; R]) -> [f32; R] {
    match (kind, w.split) {
        (Kind::Q4, _) => x86::dot_w8_vnni::<S, true, false, R>(w.qs, d, m, w.qh, a),
        (Kind::Q8, false) => x86::dot_w8_vnni::<S, false, false, R>(w.qs, d, m, w.qh, a),
        (Kind::Q8, true) => x86::dot_w8_vnni::<S, false, true, R>(w.qs, d, m, w.qh, a),
    }
}

fn dot_scalar(kind: Kind, w: &Row, a: &ActRow<i8>) -> f32 {
    let mut acc = 0f32;
    for b in 0..a.d.len() {
        let x = &a.q[b * QK..b * QK + QK];
        match kind {
            Kind::Q4 => {
                let q = &w.qs[b * 16..b * 16 + 16];
                let hb = w.qh.get(b).copied().unwrap_or(0);
                let v = |j: usize, n: u8| n as i32 | (((hb >> j) & 1) << 4) as i32;
                let sum: i32 =
                    (0..16).map(|j| v(j, q[j] & 15) * x[j] as i32 + v(j + 16, q[j] >> 4) * x[j + 16] as i32).sum();
                acc += w.d.get(b) * a.d[b] * sum as f32 + w.m.get(b) * a.s[b];
            }
            Kind::Q8 => {
                let half =
                    |h: usize| (16 * h..16 * h + 16).map(|j| w.qs[b * QK + j] as i8 as i32 * x[j] as i32).sum::<i32>();
                acc += a.d[b]
                    * if w.split {
                        w.d.get(2 * b) * half(0) as f32 + w.d.get(2 * b + 1) * half(1) as f32
                    } else {
                        w.d.get(b) * (half(0) + half(1)) as f32
                    };
            }
        }
    }
    acc
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::quantized::{GgmlDType, QTensor};
    use candle_core::{Device, Tensor};

    /// Real GGUF bytes of an `n × k` matrix quantized by candle (the reference implementation of
    /// the formats), plus the weights it dequantizes to.
    fn quantized(dtype: GgmlDType, n: usize, k: usize, seed: u64) -> (Vec<u8>, Vec<f32>) {
        let dev = Device::Cpu;
        // A small LCG: reproducible, and spread over several orders of magnitude like real weights.
        let mut state = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        let vals: Vec<f32> = (0..n * k)
            .map(|_| {
                state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                let u = (state >> 40) as f32 / (1u64 << 24) as f32;
                (u - 0.5) * if state & 7 == 0 { 4.0 } else { 0.5 }
            })
            .collect();
        let w = Tensor::from_vec(vals, (n, k), &dev).unwrap();
        let q = QTensor::quantize(&w, dtype).unwrap();
        let raw = q.data().unwrap().to_vec();
        let deq = q.dequantize(&dev).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap();
        (raw, deq)
    }

    fn reference(w: &[f32], x: &[f32], m: usize, n: usize, k: usize) -> Vec<f32> {
        let mut out = vec![0f32; m * n];
        for i in 0..m {
            for r in 0..n {
                out[i * n + r] = (0..k).map(|j| w[r * k + j] as f64 * x[i * k + j] as f64).sum::<f64>() as f32;
            }
        }
        out
    }

    /// Error relative to the largest output, and to the reference's own rounding: activation
    /// quantization to 8 bits bounds it near 1e-2 of the output scale; we state 2e-2.
    fn rel_err(got: &[f32], want: &[f32]) -> f32 {
        let scale = want.iter().fold(0f32, |a, v| a.max(v.abs())).max(1e-6);
        got.iter().zip(want).fold(0f32, |a, (g, w)| a.max((g - w).abs())) / scale
    }

    #[test]
    fn every_format_and_level_matches_the_reference_on_awkward_shapes() {
        let levels = [Level::Scalar, Level::Avx2, Level::Avx512Vnni];
        let host = detect("");
        // k: one block, a block count that is not a multiple of 16 (or 8), and a long row;
        // n: not a multiple of the 8-row work group; m: decode (1) and a small prefill. The
        // K-quants' rows hold whole 256-value super-blocks: 8 blocks (no full 16-block step),
        // 16, 24 and 40 (full steps plus pairs).
        let small = [(3, 32), (5, 96), (13, 576), (21, 1536), (9, 32 * 37)];
        let k_quant = [(3, 256), (5, 512), (13, 768), (9, 1280)];
        for (format, dtype, shapes) in [
            (Format::Q4_0, GgmlDType::Q4_0, &small[..]),
            (Format::Q4_1, GgmlDType::Q4_1, &small[..]),
            (Format::Q5_0, GgmlDType::Q5_0, &small[..]),
            (Format::Q5_1, GgmlDType::Q5_1, &small[..]),
            (Format::Q8_0, GgmlDType::Q8_0, &small[..]),
            (Format::Q4K, GgmlDType::Q4K, &k_quant[..]),
            (Format::Q6K, GgmlDType::Q6K, &k_quant[..]),
        ] {
            for &(n, k) in shapes {
                let (raw, deq) = quantized(dtype, n, k, (n * k) as u64);
                let w = QWeight::from_gguf_bytes(format, n, k, &raw).unwrap();
                for m in [1usize, 5, 7] {
                    let x: Vec<f32> = (0..m * k).map(|i| ((i * 7919 % 1000) as f32 / 500.0 - 1.0) * 1.7).collect();
                    let want = reference(&deq, &x, m, n, k);
                    let acts = Acts::<i8>::quantize(&x, m, k);
                    for &lvl in levels.iter().filter(|l| **l as u8 <= host as u8) {
                        let got: Vec<f32> = (0..m)
                            .flat_map(|i| (0..n).map(move |r| (i, r)))
                            .map(|(i, r)| dot(w.kind, lvl, &w.row(r), &acts.row(i)))
                            .collect();
                        let e = rel_err(&got, &want);
                        assert!(e < 2e-2, "{format:?} {lvl:?} n={n} k={k} m={m}: relative error {e}");
                    }
                    if m >= 4 {
                        let a = [acts.row(0), acts.row(1), acts.row(2), acts.row(3)];
                        for &lvl in levels.iter().filter(|l| **l as u8 <= host as u8) {
                            for r in 0..n {
                                let four = dot4(w.kind, lvl, &w.row(r), &a);
                                let one: Vec<f32> = (0..4).map(|i| dot(w.kind, lvl, &w.row(r), &a[i])).collect();
                                assert!(rel_err(&four, &one) < 1e-5, "dot4 {format:?} {lvl:?} n={n} k={k}");
                            }
                        }
                    }
                    // 16-bit activations: near the f32 result on every level, and levels agree.
                    let acts16 = Acts::<i16>::quantize(&x, m, k);
                    let mut scalar16 = Vec::new();
                    for &lvl in levels.iter().filter(|l| **l as u8 <= host as u8) {
                        let got: Vec<f32> = (0..m)
                            .flat_map(|i| (0..n).map(move |r| (i, r)))
                            .map(|(i, r)| dot16(w.kind, lvl, &w.row(r), [&acts16.row(i)])[0])
                            .collect();
                        let e = rel_err(&got, &want);
                        assert!(e < 1e-3, "16-bit {format:?} {lvl:?} n={n} k={k} m={m}: relative error {e}");
                        if lvl == Level::Scalar {
                            scalar16 = got;
                        } else {
                            assert!(rel_err(&got, &scalar16) < 1e-5, "16-bit {format:?} {lvl:?} vs scalar");
                        }
                    }
                    // One activation scale per super-block (what K-quant matmuls quantize to, for
                    // `x86::dot_k16_vnni`) or per row (f16-scaled formats, `x86::dot_r16_vnni`):
                    // levels agree.
                    let nb = k / QK;
                    for group in [8, nb].into_iter().filter(|&g| g == nb || k % QK_K == 0) {
                        let grouped = Acts::<i16>::quantize_grouped(&x, m, k, group);
                        let on = |lvl: Level| -> Vec<f32> {
                            (0..m)
                                .flat_map(|i| (0..n).map(move |r| (i, r)))
                                .map(|(i, r)| dot16(w.kind, lvl, &w.row(r), [&grouped.row(i)])[0])
                                .collect()
                        };
                        let scalar = on(Level::Scalar);
                        assert!(rel_err(&scalar, &want) < 1e-3, "{group}-block 16-bit {format:?} n={n} k={k}");
                        for &lvl in levels.iter().filter(|l| **l as u8 <= host as u8) {
                            let e = rel_err(&on(lvl), &scalar);
                            assert!(e < 1e-5, "{group}-block 16-bit {format:?} {lvl:?} n={n} k={k}: {e}");
                        }
                    }
                    // The whole matmul on each level.
                    for &lvl in levels.iter().filter(|l| **l as u8 <= host as u8) {
                        let mut out16 = vec![0f32; m * n];
                        matmul_many_at(lvl, &[&w], &x, m, &mut [&mut out16], Precision::I16);
                        let e = rel_err(&out16, &want);
                        assert!(e < 1e-3, "16-bit matmul {format:?} {lvl:?} n={n} k={k} m={m}: {e}");
                    }
                    // Levels agree with each other far more closely than with f32 (same integers).
                    let scalar: Vec<f32> =
                        (0..n).map(|r| dot(w.kind, Level::Scalar, &w.row(r), &acts.row(0))).collect();
                    let best: Vec<f32> = (0..n).map(|r| dot(w.kind, host, &w.row(r), &acts.row(0))).collect();
                    assert!(rel_err(&best, &scalar) < 1e-5, "{format:?} {host:?} vs scalar n={n} k={k}");
                    let mut out = vec![0f32; m * n];
                    w.matmul(&x, m, &mut out);
                    assert!(rel_err(&out, &want) < 2e-2, "matmul {format:?} n={n} k={k} m={m}");
                    // Row expansion (the embedding lookup) gives exactly the reference weights.
                    let mut row = vec![0f32; k];
                    w.dequantize_row(n - 1, &mut row);
                    assert_eq!(row, deq[(n - 1) * k..n * k], "{format:?} row");
                }
            }
        }
    }

    #[test]
    fn a_batch_of_weights_gives_what_each_gives_alone() {
        let (k, m) = (96, 5);
        let ws: Vec<QWeight> = [
            (7, GgmlDType::Q4_1, Format::Q4_1),
            (20, GgmlDType::Q8_0, Format::Q8_0),
            (3, GgmlDType::Q4_0, Format::Q4_0),
        ]
        .iter()
        .map(|&(n, dt, f)| QWeight::from_gguf_bytes(f, n, k, &quantized(dt, n, k, n as u64).0).unwrap())
        .collect();
        let x: Vec<f32> = (0..m * k).map(|i| (i % 13) as f32 / 6.0 - 1.0).collect();
        for p in [Precision::I8, Precision::I16] {
            let mut outs: Vec<Vec<f32>> = ws.iter().map(|w| vec![0f32; m * w.n]).collect();
            let mut views: Vec<&mut [f32]> = outs.iter_mut().map(|o| o.as_mut_slice()).collect();
            matmul_many(&ws.iter().collect::<Vec<_>>(), &x, m, &mut views, p);
            for (w, o) in ws.iter().zip(&outs) {
                let mut alone = vec![0f32; m * w.n];
                w.matmul_with(&x, m, &mut alone, p);
                assert_eq!(o, &alone, "{p:?}");
            }
        }
    }

    #[test]
    fn a_long_prompt_split_into_activation_chunks_gives_what_each_row_gives_alone() {
        // k = 4096 at 16 bits is 8 KiB a row: 16-row chunks, so 37 rows are 16 + 16 + 5 (with
        // a tail of one after the last whole quad).
        let (n, k, m) = (13, 4096, 37);
        for (format, dtype) in
            [(Format::Q4_1, GgmlDType::Q4_1), (Format::Q6K, GgmlDType::Q6K), (Format::Q4K, GgmlDType::Q4K)]
        {
            let w = QWeight::from_gguf_bytes(format, n, k, &quantized(dtype, n, k, 5).0).unwrap();
            let x: Vec<f32> = (0..m * k).map(|i| ((i * 31) % 17) as f32 / 8.0 - 1.0).collect();
            for p in [Precision::I8, Precision::I16] {
                let mut all = vec![0f32; m * n];
                w.matmul_with(&x, m, &mut all, p);
                for i in 0..m {
                    let mut one = vec![0f32; n];
                    w.matmul_with(&x[i * k..(i + 1) * k], 1, &mut one, p);
                    assert_eq!(all[i * n..(i + 1) * n], one, "{format:?} {p:?} row {i}");
                }
            }
        }
    }

    /// A decode step of a few sequences (1 to 9 rows: passes of eight, four, two and one) gives
    /// each row exactly what it gets alone, so batching sequences never changes their text.
    #[test]
    fn a_small_batch_gives_each_row_exactly_what_it_gets_alone() {
        let (n, k) = (21, 512);
        for (format, dtype) in [
            (Format::Q4_1, GgmlDType::Q4_1),
            (Format::Q5_0, GgmlDType::Q5_0),
            (Format::Q8_0, GgmlDType::Q8_0),
            (Format::Q4K, GgmlDType::Q4K),
            (Format::Q6K, GgmlDType::Q6K),
        ] {
            let w = QWeight::from_gguf_bytes(format, n, k, &quantized(dtype, n, k, 9).0).unwrap();
            for m in 1..=9 {
                let x: Vec<f32> = (0..m * k).map(|i| ((i * 29) % 23) as f32 / 11.0 - 1.0).collect();
                let mut all = vec![0f32; m * n];
                w.matmul_with(&x, m, &mut all, Precision::I16);
                for i in 0..m {
                    let mut one = vec![0f32; n];
                    w.matmul_with(&x[i * k..(i + 1) * k], 1, &mut one, Precision::I16);
                    assert_eq!(all[i * n..(i + 1) * n], one, "{format:?} m={m} row {i}");
                }
            }
        }
    }

    #[test]
    fn the_simd_quantizer_gives_the_scalar_loops_integers_and_scales() {
        let Some(simd) = Acts::<i16>::simd_row() else { return };
        // Odd block counts (a last block in natural order), short last groups, ties (±0.5 steps
        // after scaling), zeros, a NaN and a row of zeros.
        for (k, group) in [(32, 1), (96, 8), (640, 20), (640, 8), (1184, 8), (2048, 64)] {
            let m = 3;
            let mut x: Vec<f32> = (0..m * k).map(|i| ((i * 7919 % 2001) as f32 - 1000.0) / 37.0).collect();
            x[5] = f32::NAN;
            x[k + 3] = 1000.0 / 37.0 * 0.5;
            x[2 * k..].iter_mut().for_each(|v| *v = 0.0);
            let (a, b) = (
                Acts::<i16>::quantize_grouped_with(&x, m, k, group, None),
                Acts::<i16>::quantize_grouped_with(&x, m, k, group, Some(simd)),
            );
            assert_eq!(&a.q[..], &b.q[..], "k={k} group={group}");
            assert_eq!(a.d, b.d, "k={k} group={group}");
            assert_eq!(a.s, b.s, "k={k} group={group}");
        }
    }

    #[test]
    fn zero_activations_and_bad_shapes() {
        let (raw, _) = quantized(GgmlDType::Q4_1, 4, 64, 1);
        let w = QWeight::from_gguf_bytes(Format::Q4_1, 4, 64, &raw).unwrap();
        let mut out = vec![1f32; 4];
        w.matmul(&[0f32; 64], 1, &mut out);
        assert_eq!(out, [0f32; 4]);
        assert!(QWeight::from_gguf_bytes(Format::Q4_1, 4, 64, &raw[1..]).is_err());
        assert!(QWeight::from_gguf_bytes(Format::Q4_1, 4, 48, &raw).is_err());
        // A K-quant row must hold whole super-blocks.
        let (raw, _) = quantized(GgmlDType::Q6K, 2, 256, 1);
        assert!(QWeight::from_gguf_bytes(Format::Q6K, 1, 512, &raw).is_ok());
        assert!(QWeight::from_gguf_bytes(Format::Q6K, 4, 128, &raw).is_err());
    }
}
