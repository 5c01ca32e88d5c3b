//! The llama family (SmolLM2, Llama 3, Mistral 7B) into a [`Decoder`]: the computation of
//! candle-transformers' `quantized_llama` — interleaved RoPE as llama GGUF files need, RMS norms,
//! grouped-query attention, SwiGLU.

use std::io::{Read, Seek};

use candle_core::quantized::gguf_file;
use candle_core::Result;
use cortex_kernels::Format;

use super::{meta_f32, meta_usize, Decoder, Gate, Heads, Layer, Rope};

/// Whether this file is one the CPU decoder runs: a dense llama (no experts), full-width RoPE,
/// and projections the kernels take (else candle's model is as fast).
pub fn applies(ct: &gguf_file::Content) -> bool {
    let u = |k: &str| super::super::gguf_meta::u64(ct, k);
    let (Some(embd), Some(heads)) = (u("llama.embedding_length"), u("llama.attention.head_count")) else {
        return false;
    };
    let head_dim = embd / heads.max(1);
    let rope_ok = u("llama.rope.dimension_count").is_none_or(|d| d == head_dim);
    let dense = u("llama.expert_count").unwrap_or(0) == 0;
    let ours = ct.tensor_infos.get("blk.0.ffn_up.weight").is_some_and(|t| Format::from_ggml(t.ggml_dtype).is_some());
    rope_ok && dense && ours
}

pub fn load<R: Read + Seek>(ct: &gguf_file::Content, reader: &mut R, positions: usize) -> Result<Decoder> {
    let hidden = meta_usize(ct, "llama.embedding_length")?;
    let n_head = meta_usize(ct, "llama.attention.head_count")?;
    let n_kv_head = meta_usize(ct, "llama.attention.head_count_kv").unwrap_or(n_head);
    let n_layer = meta_usize(ct, "llama.block_count")?;
    let eps = meta_f32(ct, "llama.attention.layer_norm_rms_epsilon").unwrap_or(1e-5);
    let theta = meta_f32(ct, "llama.rope.freq_base").unwrap_or(10_000.);
    if n_head == 0 || !hidden.is_multiple_of(n_head) {
        candle_core::bail!("unsupported head layout: {n_head} heads for width {hidden}")
    }
    let head_dim = hidden / n_head;
    let heads = Heads::new(n_head, n_kv_head, head_dim, None)?;
    let (embedding, norm, output) = super::ends(ct, reader)?;
    let layers = (0..n_layer).map(|i| Layer::load(ct, reader, i, 0)).collect::<Result<Vec<_>>>()?;
    let d = Decoder {
        embedding,
        output,
        layers,
        norm,
        ropes: vec![Rope::new(head_dim, theta, positions)],
        heads: vec![heads],
        interleaved: true,
        gate_fn: Gate::Silu,
        embed_scale: None,
        hidden,
        eps,
    };
    tracing::debug!(ours = d.kernel_share(), kernels = ?cortex_kernels::level(), "llama projections on cortex's kernels");
    Ok(d)
}

#[cfg(test)]
mod tests {
    use super::super::tests::close;
    use super::super::Cache;
    use super::*;
    use candle_core::{Device, Tensor};

    /// With f32 weights (candle's matmul on both sides) the whole model computes what
    /// candle-transformers' quantized_llama computes, prefill and decode.
    #[test]
    fn the_model_matches_candles_llama_on_f32_weights() {
        use candle_transformers::models::quantized_llama::ModelWeights;
        let dir = std::env::temp_dir().join(format!("cortex-cpu-llama-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("f32.gguf");
        let spec = crate::testutil::TinyLlama { dtype: candle_core::quantized::GgmlDType::F32, ..Default::default() };
        crate::testutil::write_tiny_llama(&path, spec).unwrap();
        let read = || {
            let mut f = std::fs::File::open(&path).unwrap();
            (gguf_file::Content::read(&mut f).unwrap(), f)
        };
        let (ct, mut f) = read();
        let ours = load(&ct, &mut f, 64).unwrap();
        let (ct, mut f) = read();
        let mut theirs = ModelWeights::from_gguf(ct, &mut f, &Device::Cpu).unwrap();
        // Twenty tokens: a prompt long enough for the worker pool's row-parallel paths.
        let prompt: Vec<u32> = (0..20u32).map(|i| (i * 37 + 5) % 250).collect();
        let mut cache = Cache::default();
        let a = ours.forward(&mut cache, &prompt, 0).unwrap();
        let input = Tensor::new(&prompt[..], &Device::Cpu).unwrap().unsqueeze(0).unwrap();
        let b = theirs.forward(&input, 0).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap();
        assert!(close(&a, &b) < 1e-4, "prefill differs by {}", close(&a, &b));
        for (i, tok) in [40u32, 41, 42].into_iter().enumerate() {
            let a = ours.forward(&mut cache, &[tok], prompt.len() + i).unwrap();
            let input = Tensor::new(&[tok], &Device::Cpu).unwrap().unsqueeze(0).unwrap();
            let b = theirs.forward(&input, prompt.len() + i).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap();
            assert!(close(&a, &b) < 1e-4, "decode step {i} differs by {}", close(&a, &b));
        }
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// A batched step gives every sequence the logits it gets alone, whatever mix of prompt
    /// chunks and decode rows shares the batch (Q4_1 on cortex's kernels, where a batch of
    /// eight rows takes the multi-row passes and a lone row the single-row ones).
    #[test]
    fn a_batched_step_gives_each_sequence_what_it_gets_alone() {
        use super::super::Part;
        let dir = std::env::temp_dir().join(format!("cortex-cpu-batch-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("q4_1.gguf");
        crate::testutil::write_tiny_llama(&path, Default::default()).unwrap();
        let mut f = std::fs::File::open(&path).unwrap();
        let ct = gguf_file::Content::read(&mut f).unwrap();
        let model = load(&ct, &mut f, 128).unwrap();
        assert!(model.kernel_share() > 0, "the projections run on cortex's kernels");
        let run = |rows: &mut [(&mut Cache, &[u32], usize)]| {
            let mut parts: Vec<Part> =
                rows.iter_mut().map(|(cache, tokens, pos)| Part { cache, tokens, pos: *pos }).collect();
            model.forward_batch(&mut parts).unwrap()
        };
        let mut caches = crate::testutil::batch_matches_alone(run, 1e-5);
        // A part outside the model's positions fails the batch before any cache moves on.
        let mut bad = Cache::default();
        let before = caches[0].len;
        let mut parts = vec![
            Part { cache: &mut caches[0], tokens: &[1], pos: before },
            Part { cache: &mut bad, tokens: &[1], pos: 500 },
        ];
        assert!(model.forward_batch(&mut parts).is_err());
        assert_eq!(caches[0].len, before);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
