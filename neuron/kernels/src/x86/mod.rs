//! The x86 kernels, one module an instruction set and activation width: `avx2` (AVX2 with FMA
//! and F16C), `vnni8` and `vnni16` (AVX-512 VNNI, a scale per activation block at 8 and 16 bits),
//! `grouped` (AVX-512 VNNI, 16-bit activations with a scale a row or K-quant super-block),
//! `grouped_avx2` (the same for AVX2),
//! `quantize` (the 16-bit activation quantizers) and `common` (what they share).
//!
//! Every function here is `unsafe` only for its `target_feature`: the caller must have detected
//! the features at run time (`crate::level`). Slices hold whole blocks.

mod avx2;
mod common;
mod grouped;
mod grouped_avx2;
mod quantize;
mod vnni16;
mod vnni8;

pub use avx2::{dot_q4_avx2, dot_q4_w16_avx2, dot_q8_avx2, dot_q8_w16_avx2};
pub use common::stream_ahead;
pub use grouped::{dot_k16_vnni, dot_r16_vnni, dot_r16q_vnni, rows_k16_vnni, rows_r16_vnni};
pub use grouped_avx2::{dot_k16_avx2, dot_r16_avx2, unpack_k16_avx2, unpack_r16_avx2};
pub use quantize::{quantize_row16, quantize_row16_avx2};
pub use vnni16::dot_w16_vnni;
pub use vnni8::dot_w8_vnni;

/// One activation row's quantized values, block scales and block sums.
pub type ActRef<'a> = (&'a [i8], &'a [f32], &'a [f32]);

/// The same at 16 bits (pair-interleaved, see `vnni16`).
pub type Act16<'a> = (&'a [i16], &'a [f32], &'a [f32]);

/// One weight row for the kernels that take several per call: values, scales, mins, fifth bits.
pub type WRow<'a, S> = (&'a [u8], S, S, &'a [u32]);
