//! Gemma 3 on the shared CPU machinery (`super`), following llama.cpp's and the reference
//! implementation's semantics where candle-transformers 0.11's `quantized_gemma3` departs from
//! them: the MLP gate is GELU (tanh approximation), not SiLU; sliding-window layers see their
//! last `sliding_window` positions in decode too; and a prompt processed in chunks attends to
//! the cached positions. The rest: the embedding scaled by √hidden, per-head RMS norms on q and
//! k, norms before and after attention and MLP, NeoX RoPE with a local base on sliding layers
//! and a global base on every `sliding_window_type`-th layer. GGUF files carry Gemma's norm
//! weights with the +1 already added.

use std::io::{Read, Seek};

use candle_core::quantized::gguf_file;
use candle_core::{Device, Result};

use super::{
    add, attention, dense, logits, meta_f32, meta_usize, precision, resize, rms_norm, rms_norm_in_place, Cache,
    Embedding, Heads, Linear, Rope,
};

struct Layer {
    attn_norm: Vec<f32>,
    wq: Linear,
    wk: Linear,
    wv: Linear,
    wo: Linear,
    q_norm: Vec<f32>,
    k_norm: Vec<f32>,
    post_attn_norm: Vec<f32>,
    ffn_norm: Vec<f32>,
    gate: Linear,
    up: Linear,
    down: Linear,
    post_ffn_norm: Vec<f32>,
    /// Sliding-window (local) layer: the local RoPE base and a window.
    local: bool,
}

pub struct CpuGemma3 {
    embedding: Embedding,
    output: Option<Linear>,
    layers: Vec<Layer>,
    norm: Vec<f32>,
    rope_local: Rope,
    rope_global: Rope,
    local_heads: Heads,
    global_heads: Heads,
    hidden: usize,
    ff: usize,
    eps: f32,
}

/// √(2/π), for the tanh approximation of GELU that Gemma uses.
const SQRT_2_OVER_PI: f32 = 0.797_884_6;

fn gelu_tanh(x: f32) -> f32 {
    0.5 * x * (1.0 + (SQRT_2_OVER_PI * (x + 0.044_715 * x * x * x)).tanh())
}

impl CpuGemma3 {
    pub fn from_gguf<R: Read + Seek>(ct: &gguf_file::Content, reader: &mut R, positions: usize) -> Result<Self> {
        let dev = Device::Cpu;
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
        if n_head == 0 || n_kv_head == 0 || !n_head.is_multiple_of(n_kv_head) || !head_dim.is_multiple_of(2) {
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
                q_norm: dense(t("attn_q_norm")?)?,
                k_norm: dense(t("attn_k_norm")?)?,
                post_attn_norm: dense(t("post_attention_norm")?)?,
                ffn_norm: dense(t("ffn_norm")?)?,
                gate: Linear::new(t("ffn_gate")?)?,
                up: Linear::new(t("ffn_up")?)?,
                down: Linear::new(t("ffn_down")?)?,
                post_ffn_norm: dense(t("post_ffw_norm")?)?,
                local: (i + 1) % pattern != 0,
            });
        }
        let ff = layers.first().map(|l| l.up.n()).unwrap_or(0);
        let scale = 1.0 / (head_dim as f32).sqrt();
        Ok(Self {
            embedding,
            output,
            layers,
            norm,
            rope_local: Rope::new(head_dim, theta_local, positions),
            rope_global: Rope::new(head_dim, theta_global, positions),
            local_heads: Heads { n_head, n_kv_head, head_dim, scale, window: Some(window) },
            global_heads: Heads { n_head, n_kv_head, head_dim, scale, window: None },
            hidden,
            ff,
            eps,
        })
    }

    /// Runs `tokens` at positions `pos..` and returns the last position's logits.
    pub fn forward(&self, cache: &mut Cache, tokens: &[u32], pos: usize) -> Result<Vec<f32>> {
        let t = tokens.len();
        let positions = self.rope_global.positions;
        if t == 0 || pos + t > positions {
            candle_core::bail!("positions {pos}..{} are outside the model's {positions}", pos + t)
        }
        let hs = &self.global_heads;
        let (hidden, hd, ff) = (self.hidden, hs.head_dim, self.ff);
        let (qw, kvw) = (hs.n_head * hd, hs.n_kv_head * hd);
        cache.rewind(self.layers.len(), pos, kvw)?;
        let p = precision(t);
        let s = &mut cache.scratch;
        let x = resize(&mut s.x, t * hidden);
        self.embedding.lookup(tokens, x)?;
        let scale = (hidden as f32).sqrt();
        x.iter_mut().for_each(|v| *v *= scale);
        for (l, layer) in self.layers.iter().enumerate() {
            let (rope, heads) = if layer.local {
                (&self.rope_local, &self.local_heads)
            } else {
                (&self.rope_global, &self.global_heads)
            };
            let h = resize(&mut s.h, t * hidden);
            rms_norm(x, &layer.attn_norm, self.eps, h);
            let (q, k, v) = (resize(&mut s.q, t * qw), resize(&mut s.k, t * kvw), resize(&mut s.v, t * kvw));
            Linear::forward_many(&[&layer.wq, &layer.wk, &layer.wv], h, t, &mut [&mut *q, &mut *k, &mut *v], p)?;
            rms_norm_in_place(q, &layer.q_norm, self.eps);
            rms_norm_in_place(k, &layer.k_norm, self.eps);
            for r in 0..t {
                rope.apply(&mut q[r * qw..(r + 1) * qw], pos + r, false);
                rope.apply(&mut k[r * kvw..(r + 1) * kvw], pos + r, false);
            }
            let (kc, vc) = (&mut cache.k[l], &mut cache.v[l]);
            kc.extend_from_slice(k);
            vc.extend_from_slice(v);
            let att = resize(&mut s.att, t * qw);
            attention(heads, q, kc, vc, pos, t, att);
            let o = resize(&mut s.o, t * hidden);
            layer.wo.forward(att, t, o, p)?;
            rms_norm_in_place(o, &layer.post_attn_norm, self.eps);
            add(x, o);
            let h = resize(&mut s.h, t * hidden);
            rms_norm(x, &layer.ffn_norm, self.eps, h);
            let (gate, up) = (resize(&mut s.gate, t * ff), resize(&mut s.up, t * ff));
            Linear::forward_many(&[&layer.gate, &layer.up], h, t, &mut [&mut *gate, &mut *up], p)?;
            for (g, u) in gate.iter_mut().zip(up.iter()) {
                *g = gelu_tanh(*g) * u;
            }
            layer.down.forward(gate, t, o, p)?;
            rms_norm_in_place(o, &layer.post_ffn_norm, self.eps);
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
    use super::*;

    #[test]
    fn gelu_is_the_tanh_approximation() {
        // Values of 0.5·x·(1 + tanh(√(2/π)·(x + 0.044715·x³))).
        for (x, want) in [(0.0f32, 0.0f32), (1.0, 0.841_192), (-1.0, -0.158_808), (3.0, 2.996_363)] {
            assert!((gelu_tanh(x) - want).abs() < 1e-5, "gelu({x}) = {}", gelu_tanh(x));
        }
    }
}
