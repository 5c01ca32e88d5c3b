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
//!
//! The modules follow the data: `format` and `kquant` repack GGUF blocks into a `weight`
//! (`scales` and `aligned` are how it stores them), `acts` quantizes the activations, `dispatch`
//! hands tiles of a matmul to the worker pool, `dot` picks a kernel for a row by the `level`, and
//! the kernels are in `x86` (one module an instruction set) and `scalar`.

mod acts;
mod aligned;
mod dispatch;
mod dot;
mod format;
mod kquant;
mod level;
mod scalar;
mod scales;
#[cfg(test)]
mod tests;
mod weight;
#[cfg(target_arch = "x86_64")]
mod x86;

pub use acts::{Acts, Precision};
pub use format::Format;
pub use level::{amx, level, set_level_cap, Amx, Level, LevelDecided, UnknownLevel};
pub use weight::QWeight;

use level::capped;

/// Values per quantization block in every format here (K-quant super-blocks are split into
/// blocks of this size at load).
pub const QK: usize = 32;

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
    dispatch::run(lvl, ws, x, m, k, dsts, precision)
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
