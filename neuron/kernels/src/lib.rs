//! Quantized matmul kernels for the CPU: the 32-value GGUF block formats small models ship
//! (Q4_0, Q4_1, Q5_0, Q5_1, Q8_0), with AVX-512 VNNI and AVX2 paths picked at run time and a
//! scalar fallback, so one x86-64-v3 binary runs at its best on every host.
//!
//! Weights are repacked at load without changing a value: a row's nibbles (or bytes) lie
//! contiguous and its scales, mins and fifth bits in their own arrays, so SIMD loads are plain.
//! Q4_0 and Q5_0 are stored as `d·q + m` with `m = −8·d` or `−16·d` (exact in f16). Activations are
//! quantized per 32-value block to i8 (as ggml does) or i16 ([`Precision`]) with an f32 scale, and
//! the block sums are kept for the min term: `Σ (d·q + m)·(da·a) = d·da·Σ q·a + m·(da·Σ a)`.

use half::f16;

#[cfg(target_arch = "x86_64")]
mod x86;

/// Values per quantization block in every format here.
pub const QK: usize = 32;

/// The block formats these kernels take.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Q4_0,
    Q4_1,
    Q5_0,
    Q5_1,
    Q8_0,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// value = d·q + m, q in 0..=15 (nibbles: low = element j, high = element j + 16).
    Q4,
    /// value = d·q, q an i8.
    Q8,
}

/// One linear layer's weights: `n` rows (outputs) of `k` inputs, repacked for the kernels.
pub struct QWeight {
    kind: Kind,
    pub n: usize,
    pub k: usize,
    /// Blocks per row.
    nb: usize,
    qs: Vec<u8>,
    d: Vec<f16>,
    /// Q4 only.
    m: Vec<f16>,
    /// Q5 formats only: each block's fifth bits (bit j for element j), on top of the nibbles.
    qh: Vec<u32>,
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
            _ => None,
        }
    }

    /// Bytes of one block in the GGUF file.
    fn block_bytes(self) -> usize {
        match self {
            Format::Q4_0 => 18,
            Format::Q4_1 => 20,
            Format::Q5_0 => 22,
            Format::Q5_1 => 24,
            Format::Q8_0 => 34,
        }
    }
}

impl QWeight {
    /// Repacks `n × k` weights from their GGUF bytes (row-major blocks, as in the file).
    pub fn from_gguf_bytes(format: Format, n: usize, k: usize, raw: &[u8]) -> Result<Self, String> {
        if k == 0 || !k.is_multiple_of(QK) {
            return Err(format!("row length {k} is not a multiple of {QK}"));
        }
        let nb = k / QK;
        let bb = format.block_bytes();
        if raw.len() != n * nb * bb {
            return Err(format!("{format:?} {n}x{k} needs {} bytes, got {}", n * nb * bb, raw.len()));
        }
        let h = |b: &[u8], at: usize| f16::from_le_bytes([b[at], b[at + 1]]);
        let blocks = raw.chunks_exact(bb);
        let w = match format {
            Format::Q4_0 | Format::Q4_1 => {
                let (mut qs, mut d, mut m) = (Vec::with_capacity(n * nb * 16), Vec::with_capacity(n * nb), Vec::new());
                m.reserve(n * nb);
                for b in blocks {
                    let scale = h(b, 0);
                    d.push(scale);
                    if format == Format::Q4_0 {
                        // d·(q − 8) = d·q + (−8·d); a power-of-two multiple is exact in f16.
                        m.push(f16::from_f32(-8.0 * scale.to_f32()));
                        qs.extend_from_slice(&b[2..18]);
                    } else {
                        m.push(h(b, 2));
                        qs.extend_from_slice(&b[4..20]);
                    }
                }
                QWeight { kind: Kind::Q4, n, k, nb, qs, d, m, qh: Vec::new() }
            }
            Format::Q5_0 | Format::Q5_1 => {
                let (mut qs, mut d, mut m) = (Vec::with_capacity(n * nb * 16), Vec::with_capacity(n * nb), Vec::new());
                let mut qh = Vec::with_capacity(n * nb);
                m.reserve(n * nb);
                for b in blocks {
                    let scale = h(b, 0);
                    d.push(scale);
                    let at = if format == Format::Q5_0 {
                        // d·(q − 16) = d·q + (−16·d), exact in f16 as above.
                        m.push(f16::from_f32(-16.0 * scale.to_f32()));
                        2
                    } else {
                        m.push(h(b, 2));
                        4
                    };
                    qh.push(u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]]));
                    qs.extend_from_slice(&b[at + 4..at + 20]);
                }
                QWeight { kind: Kind::Q4, n, k, nb, qs, d, m, qh }
            }
            Format::Q8_0 => {
                let (mut qs, mut d) = (Vec::with_capacity(n * k), Vec::with_capacity(n * nb));
                for b in blocks {
                    d.push(h(b, 0));
                    qs.extend_from_slice(&b[2..34]);
                }
                QWeight { kind: Kind::Q8, n, k, nb, qs, d, m: Vec::new(), qh: Vec::new() }
            }
        };
        Ok(w)
    }

    /// Bytes held (what one decode step streams from memory).
    pub fn bytes(&self) -> usize {
        self.qs.len() + 2 * (self.d.len() + self.m.len()) + 4 * self.qh.len()
    }

    /// Row `r` widened to f32 (an embedding lookup).
    pub fn dequantize_row(&self, r: usize, out: &mut [f32]) {
        let row = self.row(r);
        for (b, o) in out.chunks_exact_mut(QK).enumerate().take(self.nb) {
            let d = row.d[b].to_f32();
            match self.kind {
                Kind::Q4 => {
                    let m = row.m[b].to_f32();
                    let hb = row.qh.get(b).copied().unwrap_or(0);
                    for j in 0..16 {
                        let q = row.qs[b * 16 + j];
                        o[j] = d * ((q & 15) as u32 | ((hb >> j) & 1) << 4) as f32 + m;
                        o[j + 16] = d * ((q >> 4) as u32 | ((hb >> (j + 16)) & 1) << 4) as f32 + m;
                    }
                }
                Kind::Q8 => {
                    for (j, v) in o.iter_mut().enumerate() {
                        *v = d * row.qs[b * QK + j] as i8 as f32;
                    }
                }
            }
        }
    }

    fn row(&self, r: usize) -> Row<'_> {
        let nb = self.nb;
        let qb = if self.kind == Kind::Q4 { 16 } else { 32 };
        Row {
            qs: &self.qs[r * nb * qb..(r + 1) * nb * qb],
            d: &self.d[r * nb..(r + 1) * nb],
            m: if self.kind == Kind::Q4 { &self.m[r * nb..(r + 1) * nb] } else { &[] },
            qh: if self.qh.is_empty() { &[] } else { &self.qh[r * nb..(r + 1) * nb] },
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
    fn run_rows(&self, rows: std::ops::Range<usize>, acts: &QActs, m: usize, lvl: Level, out: usize) {
        let n = self.n;
        // SAFETY: the caller gives each (weight, row range) to exactly one work item, and `out`
        // points at an `m × n` buffer that outlives the pool call.
        let put = |i: usize, r: usize, v: f32| unsafe { *(out as *mut f32).add(i * n + r) = v };
        let quads = m / 4;
        match acts {
            QActs::I8(a) => {
                for quad in 0..quads {
                    let q = [a.row(4 * quad), a.row(4 * quad + 1), a.row(4 * quad + 2), a.row(4 * quad + 3)];
                    for r in rows.clone() {
                        let v = dot4(self.kind, lvl, &self.row(r), &q);
                        (0..4).for_each(|j| put(4 * quad + j, r, v[j]));
                    }
                }
                for i in 4 * quads..m {
                    let q = a.row(i);
                    for r in rows.clone() {
                        put(i, r, dot(self.kind, lvl, &self.row(r), &q));
                    }
                }
            }
            QActs::I16(a) => {
                for quad in 0..quads {
                    let q = [a.row(4 * quad), a.row(4 * quad + 1), a.row(4 * quad + 2), a.row(4 * quad + 3)];
                    for r in rows.clone() {
                        let v = dot16(self.kind, lvl, &self.row(r), [&q[0], &q[1], &q[2], &q[3]]);
                        (0..4).for_each(|j| put(4 * quad + j, r, v[j]));
                    }
                }
                for i in 4 * quads..m {
                    let q = a.row(i);
                    for r in rows.clone() {
                        put(i, r, dot16(self.kind, lvl, &self.row(r), [&q])[0]);
                    }
                }
            }
        }
    }
}

enum QActs {
    I8(Acts<i8>),
    I16(Acts<i16>),
}

/// Several weights that read the same input (q, k and v; gate and up): the input is quantized
/// once and all their rows go to the worker pool in one hand-off. `dsts[w]` is `m × ws[w].n`.
pub fn matmul_many(ws: &[&QWeight], x: &[f32], m: usize, dsts: &mut [&mut [f32]], precision: Precision) {
    matmul_many_at(level(), ws, x, m, dsts, precision)
}

/// [`matmul_many`] on a chosen instruction set, capped at what this CPU has (for tests and the
/// fuzzer, which compare the levels).
pub fn matmul_many_at(lvl: Level, ws: &[&QWeight], x: &[f32], m: usize, dsts: &mut [&mut [f32]], precision: Precision) {
    let lvl = if lvl as u8 <= level() as u8 { lvl } else { level() };
    assert_eq!(ws.len(), dsts.len(), "one output per weight");
    let Some(k) = ws.first().map(|w| w.k) else { return };
    assert!(ws.iter().all(|w| w.k == k), "weights of one batch share their input width");
    assert_eq!(x.len(), m * k, "activation shape");
    for (w, d) in ws.iter().zip(dsts.iter()) {
        assert_eq!(d.len(), m * w.n, "output shape");
    }
    // The Q5 formats have 16-bit kernels only.
    let precision = if ws.iter().any(|w| !w.qh.is_empty()) { Precision::I16 } else { precision };
    let acts = match precision {
        Precision::I8 => QActs::I8(Acts::<i8>::quantize(x, m, k)),
        Precision::I16 => QActs::I16(Acts::<i16>::quantize(x, m, k)),
    };
    let outs: Vec<usize> = dsts.iter_mut().map(|d| d.as_mut_ptr() as usize).collect();
    // Weight rows in groups of 8, so that a work item is worth the cursor's atomic and its rows
    // stay in L1 while activation rows stream past them four at a time.
    const GROUP: usize = 8;
    let mut starts = Vec::with_capacity(ws.len() + 1);
    starts.push(0);
    for w in ws {
        starts.push(starts[starts.len() - 1] + w.n.div_ceil(GROUP));
    }
    let total = starts[ws.len()];
    candle_core::utils::barrier_pool().execute_chunked(total, |items| {
        for g in items {
            let wi = starts.partition_point(|&s| s <= g) - 1;
            let (w, local) = (ws[wi], g - starts[wi]);
            w.run_rows(local * GROUP..((local + 1) * GROUP).min(w.n), &acts, m, lvl, outs[wi]);
        }
    });
}

/// One weight row.
struct Row<'a> {
    qs: &'a [u8],
    d: &'a [f16],
    m: &'a [f16],
    /// Empty unless a Q5 format.
    qh: &'a [u32],
}

/// How finely activations are quantized before the integer dot products.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Precision {
    /// 8 bits per value, as llama.cpp does: the fastest, with a relative error near 1e-2 of a
    /// layer's output scale.
    I8,
    /// 16 bits per value: near-f32 results (about 1e-4), for half the multiply-adds per
    /// instruction (1–3 % of decode speed, more in compute-bound prefill).
    I16,
}

/// Activations quantized per block: `x ≈ d·q` with `q` an i8 (`Acts<i8>`, natural order) or an
/// i16 (`Acts<i16>`, each row pair-interleaved — see `x86`: blocks 2p and 2p+1 as
/// [2p lo, 2p+1 lo, 2p hi, 2p+1 hi] halves), and `s = d·Σq` per block for the Q4 min term.
pub struct Acts<T> {
    nb: usize,
    q: Vec<T>,
    d: Vec<f32>,
    s: Vec<f32>,
}

/// One activation row.
struct ActRow<'a, T> {
    q: &'a [T],
    d: &'a [f32],
    s: &'a [f32],
}

impl<T> Acts<T> {
    fn row(&self, i: usize) -> ActRow<'_, T> {
        let nb = self.nb;
        ActRow {
            q: &self.q[i * nb * QK..(i + 1) * nb * QK],
            d: &self.d[i * nb..(i + 1) * nb],
            s: &self.s[i * nb..(i + 1) * nb],
        }
    }
}

/// Quantizes each 32-value block to `±max` with a per-block scale, writing element `j` of block
/// `b` (of `nb` per row) where `place(nb, b, j)` says within its row.
fn quantize<T: Copy + Default>(
    x: &[f32],
    m: usize,
    k: usize,
    max: f32,
    to: impl Fn(i32) -> T,
    place: impl Fn(usize, usize, usize) -> usize,
) -> Acts<T> {
    let nb = k / QK;
    let mut q = vec![T::default(); m * k];
    let (mut d, mut s) = (vec![0f32; m * nb], vec![0f32; m * nb]);
    for (i, (xr, qr)) in x.chunks_exact(k).zip(q.chunks_exact_mut(k)).enumerate() {
        for (b, xs) in xr.chunks_exact(QK).enumerate() {
            let amax = xs.iter().fold(0f32, |a, v| a.max(v.abs()));
            let scale = amax / max;
            let inv = if scale > 0.0 { 1.0 / scale } else { 0.0 };
            let mut sum = 0i32;
            for (j, v) in xs.iter().enumerate() {
                let r = (v * inv).round() as i32;
                sum += r;
                qr[place(nb, b, j)] = to(r);
            }
            d[i * nb + b] = scale;
            s[i * nb + b] = scale * sum as f32;
        }
    }
    Acts { nb, q, d, s }
}

impl Acts<i8> {
    pub fn quantize(x: &[f32], m: usize, k: usize) -> Self {
        quantize(x, m, k, 127.0, |r| r as i8, |_, b, j| b * QK + j)
    }
}

impl Acts<i16> {
    pub fn quantize(x: &[f32], m: usize, k: usize) -> Self {
        quantize(
            x,
            m,
            k,
            32767.0,
            |r| r as i16,
            |nb, b, j| {
                let (lo, hi) = halves16(nb, b);
                if j < 16 {
                    lo + j
                } else {
                    hi + j - 16
                }
            },
        )
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
    #[cfg(target_arch = "x86_64")]
    // SAFETY: `lvl` comes from run-time feature detection of exactly what each path uses.
    unsafe {
        let refs = a.map(|r| (r.q, r.d, r.s));
        match (kind, lvl) {
            (Kind::Q4, Level::Avx512Vnni) => return x86::dot_w16_vnni::<true, R>(w.qs, w.d, w.m, w.qh, refs),
            (Kind::Q8, Level::Avx512Vnni) => return x86::dot_w16_vnni::<false, R>(w.qs, w.d, w.m, w.qh, refs),
            (Kind::Q4, Level::Avx2) => {
                return refs.map(|(q, d, s)| x86::dot_q4_w16_avx2(w.qs, w.d, w.m, w.qh, q, d, s))
            }
            (Kind::Q8, Level::Avx2) => return refs.map(|(q, d, _)| x86::dot_q8_w16_avx2(w.qs, w.d, q, d)),
            _ => {}
        }
    }
    let _ = lvl;
    a.map(|a| dot16_scalar(kind, w, a))
}

fn dot16_scalar(kind: Kind, w: &Row, a: &ActRow<i16>) -> f32 {
    let nb = w.d.len();
    let mut acc = 0f32;
    for b in 0..nb {
        let (lo, hi) = halves16(nb, b);
        let x = |j: usize| if j < 16 { a.q[lo + j] } else { a.q[hi + j - 16] } as i32;
        let sum: i32 = match kind {
            Kind::Q4 => {
                let hb = w.qh.get(b).copied().unwrap_or(0);
                let q = |j: usize, v: u8| v as i32 | (((hb >> j) & 1) << 4) as i32;
                (0..16).map(|j| q(j, w.qs[b * 16 + j] & 15) * x(j) + q(j + 16, w.qs[b * 16 + j] >> 4) * x(j + 16)).sum()
            }
            Kind::Q8 => (0..QK).map(|j| w.qs[b * QK + j] as i8 as i32 * x(j)).sum(),
        };
        acc += w.d[b].to_f32() * a.d[b] * sum as f32;
        if kind == Kind::Q4 {
            acc += w.m[b].to_f32() * a.s[b];
        }
    }
    acc
}

fn dot(kind: Kind, lvl: Level, w: &Row, a: &ActRow<i8>) -> f32 {
    // Q5 rows reach the 8-bit path only in tests (`matmul_many` moves them to 16 bits).
    let lvl = if w.qh.is_empty() { lvl } else { Level::Scalar };
    #[cfg(target_arch = "x86_64")]
    // SAFETY: `lvl` comes from run-time feature detection of exactly what each path uses.
    unsafe {
        match (kind, lvl) {
            (Kind::Q4, Level::Avx512Vnni) => return x86::dot_q4_vnni(w.qs, w.d, w.m, a.q, a.d, a.s),
            (Kind::Q4, Level::Avx2) => return x86::dot_q4_avx2(w.qs, w.d, w.m, a.q, a.d, a.s),
            (Kind::Q8, Level::Avx512Vnni) => return x86::dot_q8_vnni(w.qs, w.d, a.q, a.d),
            (Kind::Q8, Level::Avx2) => return x86::dot_q8_avx2(w.qs, w.d, a.q, a.d),
            _ => {}
        }
    }
    let _ = lvl;
    match kind {
        Kind::Q4 => dot_q4_scalar(w.qs, w.d, w.m, w.qh, a.q, a.d, a.s),
        Kind::Q8 => dot_q8_scalar(w.qs, w.d, a.q, a.d),
    }
}

/// Four activation rows against one weight row.
fn dot4(kind: Kind, lvl: Level, w: &Row, a: &[ActRow<i8>; 4]) -> [f32; 4] {
    let lvl = if w.qh.is_empty() { lvl } else { Level::Scalar };
    #[cfg(target_arch = "x86_64")]
    if lvl == Level::Avx512Vnni {
        let refs = [0, 1, 2, 3].map(|i| (a[i].q, a[i].d, a[i].s));
        // SAFETY: as in `dot`.
        unsafe {
            return match kind {
                Kind::Q4 => x86::dot_q4_vnni_x4(w.qs, w.d, w.m, refs),
                Kind::Q8 => x86::dot_q8_vnni_x4(w.qs, w.d, refs),
            };
        }
    }
    [0, 1, 2, 3].map(|i| dot(kind, lvl, w, &a[i]))
}

fn dot_q4_scalar(qs: &[u8], d: &[f16], m: &[f16], qh: &[u32], aq: &[i8], ad: &[f32], asum: &[f32]) -> f32 {
    let mut acc = 0f32;
    for b in 0..d.len() {
        let (w, a) = (&qs[b * 16..b * 16 + 16], &aq[b * QK..b * QK + QK]);
        let hb = qh.get(b).copied().unwrap_or(0);
        let q = |j: usize, v: u8| v as i32 | (((hb >> j) & 1) << 4) as i32;
        let mut sum = 0i32;
        for j in 0..16 {
            sum += q(j, w[j] & 15) * a[j] as i32 + q(j + 16, w[j] >> 4) * a[j + 16] as i32;
        }
        acc += d[b].to_f32() * ad[b] * sum as f32 + m[b].to_f32() * asum[b];
    }
    acc
}

fn dot_q8_scalar(qs: &[u8], d: &[f16], aq: &[i8], ad: &[f32]) -> f32 {
    let mut acc = 0f32;
    for b in 0..d.len() {
        let sum: i32 = (0..QK).map(|j| qs[b * QK + j] as i8 as i32 * aq[b * QK + j] as i32).sum();
        acc += d[b].to_f32() * ad[b] * sum as f32;
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
        // n: not a multiple of the 8-row work group; m: decode (1) and a small prefill.
        for (format, dtype) in
            [(Format::Q4_0, GgmlDType::Q4_0), (Format::Q4_1, GgmlDType::Q4_1), (Format::Q8_0, GgmlDType::Q8_0)]
        {
            for (n, k) in [(3, 32), (5, 96), (13, 576), (21, 1536), (9, 32 * 37)] {
                let (raw, deq) = quantized(dtype, n, k, (n * k) as u64);
                let w = QWeight::from_gguf_bytes(format, n, k, &raw).unwrap();
                for m in [1usize, 5] {
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
                    let mut out16 = vec![0f32; m * n];
                    w.matmul_with(&x, m, &mut out16, Precision::I16);
                    assert!(rel_err(&out16, &want) < 1e-3, "16-bit matmul {format:?} n={n} k={k} m={m}");
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
    fn zero_activations_and_bad_shapes() {
        let (raw, _) = quantized(GgmlDType::Q4_1, 4, 64, 1);
        let w = QWeight::from_gguf_bytes(Format::Q4_1, 4, 64, &raw).unwrap();
        let mut out = vec![1f32; 4];
        w.matmul(&[0f32; 64], 1, &mut out);
        assert_eq!(out, [0f32; 4]);
        assert!(QWeight::from_gguf_bytes(Format::Q4_1, 4, 64, &raw[1..]).is_err());
        assert!(QWeight::from_gguf_bytes(Format::Q4_1, 4, 48, &raw).is_err());
    }
}
