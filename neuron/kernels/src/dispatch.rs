//! Scheduling a matmul: the activations quantized once, then tiles of weight rows by activation
//! rows handed to candle's worker pool, each tile run in passes of eight, four, two or one
//! activation rows through the kernel the level and the weight's layout pick.

use crate::acts::{Acts, Precision};
use crate::dot::{dot, dot16, dot16_refs, dot4};
use crate::level::Level;
use crate::scales::Scales;
use crate::weight::QWeight;
#[cfg(target_arch = "x86_64")]
use crate::{kquant::KScales, weight::Kind, x86, QK};
#[cfg(target_arch = "x86_64")]
use std::arch::x86_64::__m256i;

#[cfg(target_arch = "x86_64")]
thread_local! {
    /// The weight rows of the tile a thread works on, widened to 16 bits (`with_widened`).
    static WIDENED: std::cell::RefCell<Vec<__m256i>> = const { std::cell::RefCell::new(Vec::new()) };
}

enum QActs {
    I8(Acts<i8>),
    I16(Acts<i16>),
}

/// Weight rows a work item takes: a work item is then worth the cursor's atomic, and its rows
/// stay in L1.
const GROUP: usize = 8;

/// Quantizes `x` (`m × k`) at `precision` and runs every row of `ws` against it on the worker
/// pool at `lvl`, into `dsts` (shapes checked by the caller).
#[inline]
pub(crate) fn run(
    lvl: Level,
    ws: &[&QWeight],
    x: &[f32],
    m: usize,
    k: usize,
    dsts: &mut [&mut [f32]],
    precision: Precision,
) {
    let acts = match precision {
        Precision::I8 => QActs::I8(Acts::<i8>::quantize(x, m, k)),
        Precision::I16 => {
            let group = act16_group(ws);
            QActs::I16(Acts::<i16>::quantize_quads(x, m, k, group, quads16(lvl, ws, group)))
        }
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
    // A decode step's single row takes four groups an item, for less set-up per weight row
    // (SmolLM2 tg128 on an AVX2 host 89 → 90–95 tok/s). Passes of several rows keep one group,
    // which their kernels lay out as one array.
    let span = if m == 1 { 4 * GROUP } else { GROUP };
    let mut starts = Vec::with_capacity(ws.len() + 1);
    starts.push(0);
    for w in ws {
        starts.push(starts[starts.len() - 1] + w.n.div_ceil(span));
    }
    let groups = starts[ws.len()];
    // Chunk-major: both threads work through one activation chunk at a time.
    candle_core::utils::barrier_pool().execute_chunked(chunks * groups, |items| {
        for item in items {
            let (c, g) = (item / groups, item % groups);
            let wi = starts.partition_point(|&s| s <= g) - 1;
            let (w, local) = (ws[wi], g - starts[wi]);
            let act_rows = c * chunk..((c + 1) * chunk).min(m);
            w.run_rows(local * span..((local + 1) * span).min(w.n), &acts, act_rows, lvl, outs[wi]);
        }
    });
}

/// How many blocks share one 16-bit activation scale for `ws` (the other levels read the same
/// integers, so that every level computes the same function):
/// - K-quants alone: a super-block (8), whose integer products `x86::dot_k16_vnni` sums in i32;
/// - f16-scaled formats alone (Q4_0 … Q8_0): the whole row, so that `x86::dot_r16_vnni` lays out
///   a block pair's weight scales once for all rows and applies a row's scale once (Gemma 3's
///   640-wide Q5_0 matmuls 62 → 74 GMAC/s). Sixteen bits over a row keep logits within 2e-3 of
///   f32 on SmolLM2 and about 5e-4 on Gemma 3 (BENCHMARKS.md), against 2e-4 with a scale per block;
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

/// Whether 16-bit activations for `ws` (one scale every `group` blocks) are quad-interleaved
/// (`acts::pos16`): on AVX-512 VNNI where every weight is Q4_0 or Q5_0, so that
/// `x86::dot_r16q_vnni` reads them all, summing four `vpdpwssd` a float multiply-add instead
/// of two (Gemma 3's 640-wide Q5_0 matmuls; see BENCHMARKS.md). Not the formats with a min
/// (Q4_1, Q5_1: SmolLM2's decode read its 1536-wide matrices 7–10 % slower by quads, its
/// prefill 7 % faster) nor Q8_0 (a cross-lane permute a quad; Gemma 3's prefill no faster).
fn quads16(lvl: Level, ws: &[&QWeight], group: usize) -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        let signed = |w: &&QWeight| w.kind == Kind::Q4 && w.offset != 0 && matches!(w.d, Scales::F16(_)) && !w.split;
        lvl == Level::Avx512Vnni && ws.first().is_some_and(|w| group >= w.nb) && ws.iter().all(signed)
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = (lvl, ws, group);
        false
    }
}

impl QWeight {
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
                // shared by twice the rows (SmolLM2 pp512 +6 %; the 8-bit path gained nothing),
                // and on AVX2 by every pass of the tile (`with_widened`). The rows' slices are
                // built once for all the weight rows.
                let octs_end = first + (end - first) / 8 * 8;
                let mut next = first;
                #[cfg(target_arch = "x86_64")]
                if self.grouped_passes::<8>(lvl, rows.clone(), a, (first..octs_end).step_by(8), &put) {
                    next = octs_end;
                }
                for i in (next..octs_end).step_by(8) {
                    let q = a.refs::<8>(i);
                    for r in rows.clone() {
                        let v = dot16_refs(self.kind, lvl, &self.row(r), &q, a.group, a.quads);
                        (0..8).for_each(|j| put(i + j, r, v[j]));
                    }
                }
                for i in (octs_end..quads_end).step_by(4) {
                    let q = a.refs::<4>(i);
                    for r in rows.clone() {
                        let v = dot16_refs(self.kind, lvl, &self.row(r), &q, a.group, a.quads);
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
                    if self.grouped_passes::<2>(lvl, rows.clone(), a, (quads_end..pairs_end).step_by(2), &put) {
                        next = pairs_end;
                    }
                }
                // Single rows (decode's one) the same way.
                #[cfg(target_arch = "x86_64")]
                if self.grouped_passes::<1>(lvl, rows.clone(), a, next..end, &put) {
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
    /// Passes of `R` activation rows (from each of `starts`) through a grouped kernel of `lvl`
    /// (AVX-512 VNNI or AVX2) that takes all of `rows` in one call, where this weight and `a`
    /// have one (false where not, with nothing done). `lvl` comes from run-time detection.
    #[cfg(target_arch = "x86_64")]
    fn grouped_passes<const R: usize>(
        &self,
        lvl: Level,
        rows: std::ops::Range<usize>,
        a: &Acts<i16>,
        starts: impl Iterator<Item = usize>,
        put: &impl Fn(usize, usize, f32),
    ) -> bool {
        match lvl {
            Level::Avx512Vnni => {}
            Level::Avx2 => return self.avx2_passes::<R>(rows, a, starts, put),
            Level::Scalar => return false,
        }
        let (n, nb, r0) = (rows.len(), self.nb, rows.start);
        let mut starts = starts.peekable();
        if n == 0 || starts.peek().is_none() {
            // Nothing to run (decode passes here with no whole passes of 8 rows).
            return true;
        }
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
                        let ($w, $q) = (row, a.refs::<R>($i));
                        // SAFETY: `lvl` comes from run-time detection.
                        unsafe { $call }
                    }
                } else {
                    let ws: [_; GROUP] = std::array::from_fn(|t| row(t.min(n - 1)));
                    let from_array = |t: usize| ws[t];
                    for $i in starts {
                        let ($w, $q) = (from_array, a.refs::<R>($i));
                        // SAFETY: `lvl` comes from run-time detection.
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
                    Kind::Q4 => {
                        passes!(row, |w, q, i| x86::rows_r16_vnni::<true, R>(n, w, self.offset, a.quads, &q, |t, v| {
                            put_r(i, t, v)
                        }))
                    }
                    Kind::Q8 => {
                        passes!(row, |w, q, i| x86::rows_r16_vnni::<false, R>(n, w, 0, false, &q, |t, v| put_r(
                            i, t, v
                        )))
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

    /// [`Self::grouped_passes`] on AVX2: each weight row sliced here and passed to the kernel.
    /// Through a closure returning the row's slices, as the VNNI path does, they came back
    /// through memory, a store-forwarding stall after every call (SmolLM2 tg128 104–111 → 141
    /// tok/s without it).
    #[cfg(target_arch = "x86_64")]
    fn avx2_passes<const R: usize>(
        &self,
        rows: std::ops::Range<usize>,
        a: &Acts<i16>,
        starts: impl Iterator<Item = usize>,
        put: &impl Fn(usize, usize, f32),
    ) -> bool {
        debug_assert!(!a.quads, "quad-interleaved activations are AVX-512 VNNI's alone");
        let nb = self.nb;
        let mut starts = starts.peekable();
        if starts.peek().is_none() {
            // No passes of R rows (decode's single row asked for passes of eight): nothing to
            // widen either.
            return true;
        }
        let span = |r: usize, per: usize| r * nb * per..(r + 1) * nb * per;
        match (self.kind, &self.d, &self.m) {
            (kind, Scales::F16(d), Scales::F16(m)) if a.group >= a.nb && !self.split => {
                let bytes = if kind == Kind::Q4 { 16 } else { QK };
                let qh = |r: usize| if self.qh.is_empty() { &[][..] } else { &self.qh[span(r, 1)] };
                // SAFETY (here and below): the level was detected at run time.
                let widen = |r: usize, out: &mut [__m256i]| unsafe {
                    match kind {
                        Kind::Q4 => x86::unpack_r16_avx2::<true>(&self.qs[span(r, bytes)], qh(r), nb, out),
                        Kind::Q8 => x86::unpack_r16_avx2::<false>(&self.qs[span(r, bytes)], &[], nb, out),
                    }
                };
                with_widened::<R>(rows.clone(), nb / 2 * 4, widen, |u| {
                    for i in starts {
                        let q = a.refs::<R>(i);
                        for (t, r) in rows.clone().enumerate() {
                            let (qs, d) = (&self.qs[span(r, bytes)], &d[span(r, 1)]);
                            let (m, qh) = if kind == Kind::Q4 { (&m[span(r, 1)], qh(r)) } else { (&[][..], &[][..]) };
                            x86::stream_ahead::<R>(qs);
                            // R is a constant: each monomorph calls one kernel, widened rows only in passes of 8.
                            let v = unsafe {
                                match (kind, R > 4) {
                                    (Kind::Q4, true) => x86::dot_r16_avx2::<true, true, R>(qs, d, m, qh, u.row(t), &q),
                                    (Kind::Q4, false) => x86::dot_r16_avx2::<true, false, R>(qs, d, m, qh, &[], &q),
                                    (Kind::Q8, true) => x86::dot_r16_avx2::<false, true, R>(qs, d, m, qh, u.row(t), &q),
                                    (Kind::Q8, false) => x86::dot_r16_avx2::<false, false, R>(qs, d, m, qh, &[], &q),
                                }
                            };
                            (0..R).for_each(|j| put(i + j, r, v[j]));
                        }
                    }
                });
            }
            (Kind::Q4, Scales::K8(dq, dd), Scales::K8(mq, md)) if a.group == 8 => {
                let scales = |r: usize| {
                    let sup = r * nb / 8..(r + 1) * nb / 8;
                    (KScales { q: &dq[span(r, 1)], d: &dd[sup.clone()] }, KScales { q: &mq[span(r, 1)], d: &md[sup] })
                };
                let widen = |r: usize, out: &mut [__m256i]| unsafe {
                    x86::unpack_k16_avx2::<true, 8>(&self.qs[span(r, 16)], scales(r).0, nb, out)
                };
                with_widened::<R>(rows.clone(), nb / 2 * 4, widen, |u| {
                    for i in starts {
                        let q = a.refs::<R>(i);
                        for (t, r) in rows.clone().enumerate() {
                            let (d, m) = scales(r);
                            let qs = &self.qs[span(r, 16)];
                            x86::stream_ahead::<R>(qs);
                            let v = unsafe {
                                match R > 4 {
                                    true => x86::dot_k16_avx2::<true, 8, true, R>(qs, d, m, u.row(t), &q),
                                    false => x86::dot_k16_avx2::<true, 8, false, R>(qs, d, m, &[], &q),
                                }
                            };
                            (0..R).for_each(|j| put(i + j, r, v[j]));
                        }
                    }
                });
            }
            (Kind::Q8, Scales::K16(dq, dd), _) if a.group == 8 => {
                let scales = |r: usize| KScales { q: &dq[span(r, 2)], d: &dd[r * nb / 8..(r + 1) * nb / 8] };
                let widen = |r: usize, out: &mut [__m256i]| unsafe {
                    x86::unpack_k16_avx2::<false, 16>(&self.qs[span(r, QK)], scales(r), nb, out)
                };
                with_widened::<R>(rows.clone(), nb / 2 * 4, widen, |u| {
                    for i in starts {
                        let q = a.refs::<R>(i);
                        for (t, r) in rows.clone().enumerate() {
                            let none = KScales { q: &[], d: &[] };
                            let (qs, d) = (&self.qs[span(r, QK)], scales(r));
                            x86::stream_ahead::<R>(qs);
                            let v = unsafe {
                                match R > 4 {
                                    true => x86::dot_k16_avx2::<false, 16, true, R>(qs, d, none, u.row(t), &q),
                                    false => x86::dot_k16_avx2::<false, 16, false, R>(qs, d, none, &[], &q),
                                }
                            };
                            (0..R).for_each(|j| put(i + j, r, v[j]));
                        }
                    }
                });
            }
            _ => return false,
        }
        true
    }
}

/// A tile's weight rows widened to 16 bits, or none (the kernels then widen as they go).
#[cfg(target_arch = "x86_64")]
#[derive(Clone, Copy)]
struct Widened<'a> {
    all: &'a [__m256i],
    per_row: usize,
}

#[cfg(target_arch = "x86_64")]
impl<'a> Widened<'a> {
    /// Tile row `t`'s vectors, or an empty slice.
    fn row(self, t: usize) -> &'a [__m256i] {
        if self.all.is_empty() {
            return &[];
        }
        &self.all[t * self.per_row..(t + 1) * self.per_row]
    }
}

/// Runs `f` with the tile's weight rows `rows` widened by `widen` (`per_row` vectors each) where
/// its passes are of eight activation rows (a prefill's), else with none. A pass of eight is
/// two of four, and each of them widened every weight row again: Gemma 3's 640-wide Q5_0
/// matmuls spent most of their time widening.
#[cfg(target_arch = "x86_64")]
fn with_widened<const R: usize>(
    rows: std::ops::Range<usize>,
    per_row: usize,
    widen: impl Fn(usize, &mut [__m256i]),
    f: impl FnOnce(Widened),
) {
    if R <= 4 {
        return f(Widened { all: &[], per_row });
    }
    WIDENED.with(|cell| {
        let mut all = cell.borrow_mut();
        // SAFETY: all-zero bits are a valid vector.
        all.resize(rows.len() * per_row, unsafe { std::mem::zeroed() });
        for (t, r) in rows.enumerate() {
            widen(r, &mut all[t * per_row..(t + 1) * per_row]);
        }
        f(Widened { all: &all, per_row });
    });
}
