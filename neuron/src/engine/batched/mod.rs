//! A decoder of candle tensor ops that runs several sequences' steps as one batch, for the GPU.
//! candle-transformers' models hold one sequence per instance (the KV cache lives inside it), so
//! eight concurrent streams there are eight launch sequences a step, and on an H200 eight streams
//! shared one stream's throughput (BENCHMARKS.md). Here the rows of every sequence in a step go
//! through each projection, norm and MLP together; only attention runs per sequence, against
//! that sequence's own cache (device storage of `engine::kv`).
//!
//! It covers the llama family's computation (RMS norms, grouped-query attention, SwiGLU) with
//! Qwen 3's per-head q/k norms, from GGUF files (quantized matmuls, like candle-transformers'
//! `quantized_llama` / `quantized_qwen3`) and from safetensors repositories (dense weights in
//! the engine's dtype, like `llama` / `qwen3`), and uses the ops those models use on CUDA.
//! Gemma 3 GGUF files too, with the semantics of cortex's CPU decoder (GELU, sliding-window
//! layers, norms after attention and MLP), which candle-transformers 0.11's `quantized_gemma3`
//! departs from (it gates with SiLU).

mod load;
mod step;
#[cfg(test)]
mod tests;

use candle_core::quantized::QMatMul;
use candle_core::{DType, Device, Module, Result, Tensor};

use super::block::Block;
pub use super::kv::Part;
use super::spec::ArchSpec;

/// A projection: quantized (GGUF) or dense (safetensors).
enum Proj {
    Quantized(QMatMul),
    Dense(candle_nn::Linear),
}

impl Proj {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        match self {
            Proj::Quantized(m) => m.forward(x),
            Proj::Dense(l) => l.forward(x),
        }
    }
}

/// The model: weights on the engine's device, computing in `dtype` (f32 for GGUF files, whose
/// quantized matmuls take f32; the engine's dtype for safetensors).
pub struct BatchDecoder {
    embed: Tensor,
    blocks: Vec<Block<Proj, Tensor>>,
    norm: Tensor,
    output: Proj,
    /// cos and sin of position × θ^(−2i/d), `[positions, head_dim / 2]`, by `Block::kind`.
    ropes: Vec<(Tensor, Tensor)>,
    spec: ArchSpec,
    dtype: DType,
    device: Device,
}

impl BatchDecoder {
    /// Positions a sequence may reach.
    pub fn positions(&self) -> usize {
        self.ropes[0].0.dims()[0]
    }
}
