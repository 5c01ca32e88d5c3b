//! One weight row against one to eight activation rows: the level and the row's layout pick an
//! AVX-512 VNNI, AVX2 or scalar kernel. Every level computes the same integers, so they agree far
//! more closely than any of them with f32.

use crate::acts::ActRow;
use crate::level::Level;
use crate::scalar::{dot16_scalar, dot_scalar};
use crate::scales::ScaleRow;
use crate::weight::{Kind, Row};
#[cfg(target_arch = "x86_64")]
use crate::{scales::Scale, x86};

/// `R` activation rows (16-bit) against one weight row.
#[inline]
pub(crate) fn dot16<const R: usize>(kind: Kind, lvl: Level, w: &Row, a: [&ActRow<i16>; R]) -> [f32; R] {
    // Rows of one `Acts` share their grouping and layout.
    let (group, quads) = a.first().map_or((1, false), |r| (r.group, r.quads));
    dot16_refs(kind, lvl, w, &a.map(|r| (r.q, r.d, r.s)), group, quads)
}

/// [`dot16`] on rows given as (values, scales, sums), whose scales cover `group` blocks each
/// (laid out with `quads` or not, `acts::pos16`): prefill builds them once for all the weight
/// rows it passes.
#[inline]
pub(crate) fn dot16_refs<const R: usize>(
    kind: Kind,
    lvl: Level,
    w: &Row,
    refs: &[(&[i16], &[f32], &[f32]); R],
    group: usize,
    quads: bool,
) -> [f32; R] {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: `lvl` comes from run-time feature detection of exactly what each path uses.
    unsafe {
        let nb = refs.first().map_or(0, |r| r.1.len());
        // Activations with one scale a row (f16-scaled formats) or a super-block (K-quants):
        // the grouped kernels of each level.
        // Quad-interleaved rows: only VNNI's nibble kernel and the scalar loop read them.
        let (row, sup) = (group >= nb && !quads, group == 8 && !quads);
        let vnni = lvl == Level::Avx512Vnni;
        match (lvl, kind, w.d, w.m) {
            (Level::Avx512Vnni, Kind::Q4, ScaleRow::F16(d), ScaleRow::F16(m)) if group >= nb && quads => {
                return x86::dot_r16q_vnni::<R>(w.qs, d, m, w.qh, w.offset, refs);
            }
            (Level::Avx512Vnni | Level::Avx2, Kind::Q4, ScaleRow::F16(d), ScaleRow::F16(m)) if row => {
                return if vnni {
                    x86::dot_r16_vnni::<true, R>(w.qs, d, m, w.qh, w.offset, refs)
                } else {
                    x86::dot_r16_avx2::<true, false, R>(w.qs, d, m, w.qh, &[], refs)
                };
            }
            (Level::Avx512Vnni | Level::Avx2, Kind::Q8, ScaleRow::F16(d), _) if row && !w.split => {
                return if vnni {
                    x86::dot_r16_vnni::<false, R>(w.qs, d, &[], &[], 0, refs)
                } else {
                    x86::dot_r16_avx2::<false, false, R>(w.qs, d, &[], &[], &[], refs)
                };
            }
            (Level::Avx512Vnni | Level::Avx2, Kind::Q4, ScaleRow::K8(d), ScaleRow::K8(m)) if sup => {
                return if vnni {
                    x86::dot_k16_vnni::<true, 8, R>(w.qs, d, m, refs)
                } else {
                    x86::dot_k16_avx2::<true, 8, false, R>(w.qs, d, m, &[], refs)
                };
            }
            (Level::Avx512Vnni | Level::Avx2, Kind::Q8, ScaleRow::K16(d), ScaleRow::K16(m)) if sup => {
                return if vnni {
                    x86::dot_k16_vnni::<false, 16, R>(w.qs, d, m, refs)
                } else {
                    x86::dot_k16_avx2::<false, 16, false, R>(w.qs, d, m, &[], refs)
                };
            }
            _ => {}
        }
        let simd = match (w.d, w.m) {
            _ if quads => None,
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
    std::array::from_fn(|r| dot16_scalar(kind, w, &ActRow { q: refs[r].0, d: refs[r].1, s: refs[r].2, group, quads }))
}

/// The SIMD paths for 16-bit activations, or None where `lvl` has none.
#[cfg(target_arch = "x86_64")]
#[inline]
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
        (Kind::Q4, Level::Avx2, _) => x86::dot_q4_w16_avx2::<S, R>(w.qs, d, m, w.qh, a),
        (Kind::Q8, Level::Avx2, false) => x86::dot_q8_w16_avx2::<S, false, R>(w.qs, d, a),
        (Kind::Q8, Level::Avx2, true) => x86::dot_q8_w16_avx2::<S, true, R>(w.qs, d, a),
        _ => return None,
    })
}

/// Whether the AVX2 8-bit kernels take this row (f16 scales, no fifth bits, one scale a block);
/// VNNI takes every row.
fn avx2_8bit(w: &Row) -> bool {
    w.qh.is_empty() && !w.split && matches!(w.d, ScaleRow::F16(_))
}

#[inline]
pub(crate) fn dot(kind: Kind, lvl: Level, w: &Row, a: &ActRow<i8>) -> f32 {
    dot8(kind, lvl, w, [a])[0]
}

/// Four activation rows against one weight row.
#[inline]
pub(crate) fn dot4(kind: Kind, lvl: Level, w: &Row, a: &[ActRow<i8>; 4]) -> [f32; 4] {
    dot8(kind, lvl, w, [&a[0], &a[1], &a[2], &a[3]])
}

/// `R` activation rows (8-bit) against one weight row.
#[inline]
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
#[inline]
unsafe fn dot8_vnni<S: Scale, const R: usize>(kind: Kind, w: &Row, d: S, m: S, a: [x86::ActRef; R]) -> [f32; R] {
    match (kind, w.split) {
        (Kind::Q4, _) => x86::dot_w8_vnni::<S, true, false, R>(w.qs, d, m, w.qh, a),
        (Kind::Q8, false) => x86::dot_w8_vnni::<S, false, false, R>(w.qs, d, m, w.qh, a),
        (Kind::Q8, true) => x86::dot_w8_vnni::<S, false, true, R>(w.qs, d, m, w.qh, a),
    }
}
