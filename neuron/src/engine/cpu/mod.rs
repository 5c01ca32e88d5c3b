//! cortex's own decoder for the CPU, built for decode speed: every Q4_0 / Q4_1 / Q8_0 projection
//! goes through `cortex-kernels`, any other format through candle's own `QMatMul`, and the rest
//! of the step (norms, RoPE, attention, the MLP) runs on plain f32 slices with scratch buffers
//! reused across steps. Keys and values go into the sequence's block KV cache
//! (`engine::kv`) without re-concatenation, grouped heads read their shared K/V rows instead of
//! copies, and the token embedding stays quantized instead of being widened to f32 at load.
//!
//! One [`Decoder`] runs the llama family (SmolLM2, Llama 3, Mistral: the computation of
//! candle-transformers' `quantized_llama`) and Gemma 3, whose differences the [`ArchSpec`] says.
//! For Gemma 3 it follows llama.cpp and the reference implementation where candle 0.11's
//! `quantized_gemma3` departs from them: the MLP gate is GELU (tanh approximation), not SiLU;
//! sliding-window layers see their last `sliding_window` positions in decode too; and a prompt
//! processed in chunks attends to the cached positions. GGUF files carry Gemma's norm weights
//! with the +1 already added.

mod attention;
mod decoder;
mod linear;
mod ops;
mod rope;
#[cfg(test)]
mod tests;

use std::io::{Read, Seek};
use std::sync::Mutex;

use candle_core::quantized::gguf_file;
use candle_core::{Device, Result};
use cortex_kernels::{Format, Precision};

use super::block::Block;
pub use super::kv::Part;
use super::spec::ArchSpec;
use attention::Heads;
pub use decoder::Decoder;
use linear::{dense, Linear};
use rope::Rope;

/// What the CPU decoder takes from the engine's options.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Settings {
    /// Activation precision of decode steps and of steps with a prompt's rows. 16 bits, so that
    /// logits lie within 2e-3 (of the largest; 5e-4 on Gemma 3) of f32 arithmetic on the same
    /// weights. 8 bits (llama.cpp's choice) land 2–6e-2 away and flip near-ties — the default
    /// model's first word for "What is the capital of France?", Gemma 3's continuations after a
    /// few words; with the row-scaled 16-bit kernels it is the slower one on AVX-512 VNNI hosts.
    /// BENCHMARKS.md has the figures.
    pub decode: Precision,
    pub prefill: Precision,
    /// candle's `CANDLE_DEQUANTIZE_ALL`, honoured here too: every matrix widened to f32 at load
    /// and f32 arithmetic, the reference the logit distances in BENCHMARKS.md are measured
    /// against.
    pub reference: bool,
}

impl Default for Settings {
    fn default() -> Self {
        Self { decode: Precision::I16, prefill: Precision::I16, reference: false }
    }
}

/// Whether the CPU decoder runs this file: llama or Gemma 3, dense, RoPE over whole heads, and
/// (llama) projections the kernels take, else candle's model is as fast.
pub fn applies(spec: &ArchSpec, ct: &gguf_file::Content) -> bool {
    let ours = || ct.tensor_infos.get("blk.0.ffn_up.weight").is_some_and(|t| Format::from_ggml(t.ggml_dtype).is_some());
    spec.dense_full_rope()
        && match spec.arch.as_str() {
            "llama" => ours(),
            "gemma3" => true,
            _ => false,
        }
}

/// Reads a GGUF file `spec` describes into a decoder for positions `..positions`.
pub fn load<R: Read + Seek>(
    spec: &ArchSpec,
    ct: &gguf_file::Content,
    reader: &mut R,
    positions: usize,
    settings: Settings,
) -> Result<Decoder> {
    let heads = spec.kinds.iter().map(|k| Heads::new(spec, k.window)).collect::<Result<Vec<_>>>()?;
    let ropes = spec.kinds.iter().map(|k| Rope::new(&k.rope, spec.head_dim, positions)).collect();
    let (embedding, norm, output) = linear::ends(ct, reader, settings.reference)?;
    let layers = (0..spec.layers)
        .map(|i| {
            let tensor = |name: &str| ct.tensor(reader, name, &Device::Cpu);
            Block::from_gguf(spec, ct, i, tensor, |t| Linear::new(t, settings.reference), dense)
        })
        .collect::<Result<Vec<_>>>()?;
    let d = Decoder {
        embedding,
        output,
        layers,
        norm,
        ropes,
        heads,
        gate: spec.gate,
        embed_scale: spec.embed_scale,
        hidden: spec.hidden,
        eps: spec.eps,
        precision: [settings.decode, settings.prefill],
        scratch: Mutex::default(),
    };
    tracing::debug!(arch = %spec.arch, ours = d.kernel_share(), kernels = ?cortex_kernels::level(), "projections on cortex's kernels");
    Ok(d)
}
