//! Gemma 3 into a [`Decoder`], following llama.cpp's and the reference implementation's
//! semantics where candle-transformers 0.11's `quantized_gemma3` departs from them: the MLP gate
//! is GELU (tanh approximation), not SiLU; sliding-window layers see their last `sliding_window`
//! positions in decode too; and a prompt processed in chunks attends to the cached positions.
//! The rest: the embedding scaled by √hidden, per-head RMS norms on q and k, norms before and
//! after attention and MLP, NeoX RoPE with a local base on sliding layers and a global base on
//! every `sliding_window_type`-th layer. GGUF files carry Gemma's norm weights with the +1 already
//! added.

use std::io::{Read, Seek};

use candle_core::quantized::gguf_file;
use candle_core::Result;

use super::{meta_f32, meta_usize, Decoder, Gate, Heads, Layer, Rope};

/// `Layer::kind` of the global (full attention) layers and of the sliding-window ones.
const GLOBAL: usize = 0;
const LOCAL: usize = 1;

pub fn load<R: Read + Seek>(ct: &gguf_file::Content, reader: &mut R, positions: usize) -> Result<Decoder> {
    let hidden = meta_usize(ct, "gemma3.embedding_length")?;
    let n_head = meta_usize(ct, "gemma3.attention.head_count")?;
    let n_kv_head = meta_usize(ct, "gemma3.attention.head_count_kv").unwrap_or(n_head);
    let head_dim = meta_usize(ct, "gemma3.attention.key_length")?;
    let n_layer = meta_usize(ct, "gemma3.block_count")?;
    let eps = meta_f32(ct, "gemma3.attention.layer_norm_rms_epsilon").unwrap_or(1e-6);
    let window = meta_usize(ct, "gemma3.attention.sliding_window")?;
    let pattern = meta_usize(ct, "gemma3.attention.sliding_window_type").unwrap_or(6).max(1);
    let theta_global = meta_f32(ct, "gemma3.rope.freq_base").unwrap_or(1_000_000.);
    let theta_local = meta_f32(ct, "gemma3.rope.local_freq_base").unwrap_or(10_000.);
    let heads =
        vec![Heads::new(n_head, n_kv_head, head_dim, None)?, Heads::new(n_head, n_kv_head, head_dim, Some(window))?];
    let (embedding, norm, output) = super::ends(ct, reader)?;
    let layers = (0..n_layer)
        .map(|i| Layer::load(ct, reader, i, if (i + 1) % pattern == 0 { GLOBAL } else { LOCAL }))
        .collect::<Result<Vec<_>>>()?;
    if layers.iter().any(|l| l.q_norm.is_none() || l.post_attn_norm.is_none() || l.post_ffn_norm.is_none()) {
        candle_core::bail!("a gemma3 block lacks its q/k norms or post-norms")
    }
    let d = Decoder {
        embedding,
        output,
        layers,
        norm,
        ropes: vec![Rope::new(head_dim, theta_global, positions), Rope::new(head_dim, theta_local, positions)],
        heads,
        interleaved: false,
        gate_fn: Gate::GeluTanh,
        embed_scale: Some((hidden as f32).sqrt()),
        hidden,
        eps,
    };
    tracing::debug!(ours = d.kernel_share(), kernels = ?cortex_kernels::level(), "gemma3 projections on cortex's kernels");
    Ok(d)
}
