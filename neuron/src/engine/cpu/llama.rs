//! The llama family (SmolLM2, Llama 3, Mistral 7B): the computation of candle-transformers'
//! `quantized_llama` — interleaved RoPE as llama GGUF files need, RMS norms, grouped-query
//! attention, SwiGLU — on the shared CPU machinery (`super`).

use std::io::{Read, Seek};

use candle_core::quantized::gguf_file;
use candle_core::{Device, Result};
use cortex_kernels::Format;

use super::{
    add, attention, dense, logits, meta_f32, meta_usize, precision, resize, rms_norm, Cache, Embedding, Heads, Linear,
    Rope,
};

struct Layer {
    attn_norm: Vec<f32>,
    wq: Linear,
    wk: Linear,
    wv: Linear,
    wo: Linear,
    ffn_norm: Vec<f32>,
    gate: Linear,
    up: Linear,
    down: Linear,
}

pub struct CpuLlama {
    embedding: Embedding,
    /// None with tied embeddings (SmolLM2): the embedding matrix is used in place.
    output: Option<Linear>,
    layers: Vec<Layer>,
    norm: Vec<f32>,
    rope: Rope,
    heads: Heads,
    hidden: usize,
    ff: usize,
    eps: f32,
}

impl CpuLlama {
    /// Whether this file is one this path runs: a dense llama (no experts), full-width RoPE, and
    /// projections the kernels take (else candle's model is as fast).
    pub fn applies(ct: &gguf_file::Content) -> bool {
        let u = |k: &str| super::super::gguf_meta::u64(ct, k);
        let (Some(embd), Some(heads)) = (u("llama.embedding_length"), u("llama.attention.head_count")) else {
            return false;
        };
        let head_dim = embd / heads.max(1);
        let rope_ok = u("llama.rope.dimension_count").is_none_or(|d| d == head_dim);
        let dense = u("llama.expert_count").unwrap_or(0) == 0;
        let ours =
            ct.tensor_infos.get("blk.0.ffn_up.weight").is_some_and(|t| Format::from_ggml(t.ggml_dtype).is_some());
        rope_ok && dense && ours
    }

    pub fn from_gguf<R: Read + Seek>(ct: &gguf_file::Content, reader: &mut R, positions: usize) -> Result<Self> {
        let dev = Device::Cpu;
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
        if n_kv_head == 0 || !n_head.is_multiple_of(n_kv_head) || !head_dim.is_multiple_of(2) {
            candle_core::bail!("unsupported head layout: {n_head} heads, {n_kv_head} kv heads, head size {head_dim}")
        }
        let embedding = Embedding::new(ct.tensor(reader, "token_embd.weight", &dev)?)?;
        let norm = dense(ct.tensor(reader, "output_norm.weight", &dev)?)?;
        let output = super::output_layer(ct, reader, &embedding)?;
        let mut layers = Vec::with_capacity(n_layer);
        for i in 0..n_layer {
            let mut t = |n: &str| ct.tensor(reader, &format!("blk.{i}.{n}.weight"), &dev);
            layers.push(Layer {
                attn_norm: dense(t("attn_norm")?)?,
                wq: Linear::new(t("attn_q")?)?,
                wk: Linear::new(t("attn_k")?)?,
                wv: Linear::new(t("attn_v")?)?,
                wo: Linear::new(t("attn_output")?)?,
                ffn_norm: dense(t("ffn_norm")?)?,
                gate: Linear::new(t("ffn_gate")?)?,
                up: Linear::new(t("ffn_up")?)?,
                down: Linear::new(t("ffn_down")?)?,
            });
        }
        let ff = layers.first().map(|l| l.up.n()).unwrap_or(0);
        let ours = layers
            .iter()
            .flat_map(|l| [&l.wq, &l.wk, &l.wv, &l.wo, &l.gate, &l.up, &l.down])
            .filter(|l| l.is_ours())
            .count();
        tracing::debug!(ours, kernels = ?cortex_kernels::level(), "llama projections on cortex's kernels");
        let heads = Heads { n_head, n_kv_head, head_dim, scale: 1.0 / (head_dim as f32).sqrt(), window: None };
        let rope = Rope::new(head_dim, theta, positions);
        Ok(Self { embedding, output, layers, norm, rope, heads, hidden, ff, eps })
    }

    /// Runs `tokens` at positions `pos..` and returns the last position's logits.
    pub fn forward(&self, cache: &mut Cache, tokens: &[u32], pos: usize) -> Result<Vec<f32>> {
        let t = tokens.len();
        if t == 0 || pos + t > self.rope.positions {
            candle_core::bail!("positions {pos}..{} are outside the model's {}", pos + t, self.rope.positions)
        }
        let hs = &self.heads;
        let (hidden, qw, kvw, ff) = (self.hidden, hs.n_head * hs.head_dim, hs.n_kv_head * hs.head_dim, self.ff);
        cache.rewind(self.layers.len(), pos, kvw)?;
        let p = precision(t);
        let s = &mut cache.scratch;
        let x = resize(&mut s.x, t * hidden);
        self.embedding.lookup(tokens, x)?;
        for (l, layer) in self.layers.iter().enumerate() {
            let h = resize(&mut s.h, t * hidden);
            rms_norm(x, &layer.attn_norm, self.eps, h);
            let (q, k, v) = (resize(&mut s.q, t * qw), resize(&mut s.k, t * kvw), resize(&mut s.v, t * kvw));
            Linear::forward_many(&[&layer.wq, &layer.wk, &layer.wv], h, t, &mut [&mut *q, &mut *k, &mut *v], p)?;
            for r in 0..t {
                // llama GGUF files store q and k permuted for interleaved rotation.
                self.rope.apply(&mut q[r * qw..(r + 1) * qw], pos + r, true);
                self.rope.apply(&mut k[r * kvw..(r + 1) * kvw], pos + r, true);
            }
            let (kc, vc) = (&mut cache.k[l], &mut cache.v[l]);
            kc.extend_from_slice(k);
            vc.extend_from_slice(v);
            let att = resize(&mut s.att, t * qw);
            attention(hs, q, kc, vc, pos, t, att);
            let o = resize(&mut s.o, t * hidden);
            layer.wo.forward(att, t, o, p)?;
            add(x, o);
            let h = resize(&mut s.h, t * hidden);
            rms_norm(x, &layer.ffn_norm, self.eps, h);
            let (gate, up) = (resize(&mut s.gate, t * ff), resize(&mut s.up, t * ff));
            Linear::forward_many(&[&layer.gate, &layer.up], h, t, &mut [&mut *gate, &mut *up], p)?;
            for (g, u) in gate.iter_mut().zip(up.iter()) {
                *g = *g / (1.0 + (-*g).exp()) * u;
            }
            layer.down.forward(gate, t, o, p)?;
            add(x, o);
        }
        cache.len = pos + t;
        let h = resize(&mut s.h, hidden);
        rms_norm(&x[(t - 1) * hidden..], &self.norm, self.eps, h);
        logits(self.output.as_ref(), &self.embedding, h, p)
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::close;
    use super::*;
    use candle_core::Tensor;

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
        let ours = CpuLlama::from_gguf(&ct, &mut f, 64).unwrap();
        let (ct, mut f) = read();
        let mut theirs = ModelWeights::from_gguf(ct, &mut f, &Device::Cpu).unwrap();
        let prompt = [5u32, 77, 200, 12, 9];
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
}
