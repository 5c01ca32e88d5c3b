//! A decoder of candle tensor ops that runs several sequences' steps as one batch, for the GPU.
//! candle-transformers' models hold one sequence per instance (the KV cache lives inside it), so
//! eight concurrent streams there are eight launch sequences a step, and on an H200 eight streams
//! shared one stream's throughput (BENCHMARKS.md). Here the rows of every sequence in a step go
//! through each projection, norm and MLP together; only attention runs per sequence, against
//! that sequence's own cache.
//!
//! It covers the llama family's computation (RMS norms, grouped-query attention, SwiGLU) with
//! Qwen 3's per-head q/k norms, from GGUF files (quantized matmuls, like candle-transformers'
//! `quantized_llama` / `quantized_qwen3`) and from safetensors repositories (dense weights in
//! the engine's dtype, like `llama` / `qwen3`), and uses the ops those models use on CUDA.
//! Gemma 3 GGUF files too, with the semantics of cortex's CPU decoder (`cpu::gemma3`: GELU,
//! sliding-window layers, norms after attention and MLP), which candle-transformers 0.11's
//! `quantized_gemma3` departs from (it gates with SiLU).

use std::io::{Read, Seek};

use candle_core::quantized::{gguf_file, QMatMul};
use candle_core::{DType, Device, Module, Result, Tensor};
use candle_nn::VarBuilder;

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

struct Block {
    attn_norm: Tensor,
    q: Proj,
    k: Proj,
    v: Proj,
    o: Proj,
    /// Qwen 3's RMS norms over each head of q and k, before RoPE.
    q_norm: Option<Tensor>,
    k_norm: Option<Tensor>,
    ffn_norm: Tensor,
    gate: Proj,
    up: Proj,
    down: Proj,
    /// Gemma's norms of the attention and MLP outputs, before the residual adds.
    post_attn_norm: Option<Tensor>,
    post_ffn_norm: Option<Tensor>,
    /// Which RoPE table and window this layer uses (`Family::thetas`, `Family::windows`).
    kind: usize,
}

/// The model: weights on the engine's device, computing in `dtype` (f32 for GGUF files, whose
/// quantized matmuls take f32; the engine's dtype for safetensors).
pub struct BatchDecoder {
    embed: Tensor,
    blocks: Vec<Block>,
    norm: Tensor,
    output: Proj,
    /// cos and sin of position × θ^(−2i/d), `[positions, head_dim / 2]`, by `Block::kind`.
    ropes: Vec<(Tensor, Tensor)>,
    family: Family,
    n_head: usize,
    n_kv_head: usize,
    head_dim: usize,
    eps: f64,
    dtype: DType,
    device: Device,
}

/// The shape of a model, read from a GGUF header or a config.json.
struct Shape {
    n_head: usize,
    n_kv_head: usize,
    head_dim: usize,
    n_layer: usize,
    eps: f64,
}

/// What differs between the families this decoder runs.
struct Family {
    /// Interleaved pairs (llama GGUF files, candle's `rope_i`) or NeoX halves (`rope`).
    interleaved: bool,
    /// RoPE bases and the positions a layer sees (its own and this many before; `None`: all),
    /// by `Block::kind`: one kind for llama and qwen3, Gemma 3's global and local layers.
    thetas: Vec<f32>,
    windows: Vec<Option<usize>>,
    /// GELU with the tanh approximation (Gemma) instead of SiLU as the MLP's gate.
    gelu: bool,
    /// Gemma multiplies the embedding by √hidden.
    embed_scale: Option<f64>,
}

impl Family {
    fn llama_like(interleaved: bool, theta: f32) -> Self {
        Self { interleaved, thetas: vec![theta], windows: vec![None], gelu: false, embed_scale: None }
    }
}

/// One sequence's keys and values per layer, `[1, kv heads, capacity, head_dim]`, grown as it
/// goes. `len` moves only when a whole step succeeded, so a failed step leaves nothing to undo.
#[derive(Default)]
pub struct Cache {
    layers: Vec<(Tensor, Tensor)>,
    len: usize,
}

impl Cache {
    /// Writes a step's `k` and `v` (`[1, kv heads, t, head_dim]`) at `pos` in `layer` and
    /// returns the keys and values of positions `..pos + t`.
    fn put(&mut self, layer: usize, k: &Tensor, v: &Tensor, pos: usize, limit: usize) -> Result<(Tensor, Tensor)> {
        let t = k.dim(2)?;
        let need = pos + t;
        if layer == self.layers.len() {
            let mut shape = k.dims().to_vec();
            shape[2] = need.next_power_of_two().max(256).min(limit.max(need));
            let zeros = || Tensor::zeros(shape.as_slice(), k.dtype(), k.device());
            self.layers.push((zeros()?, zeros()?));
        }
        let (kc, vc) = &mut self.layers[layer];
        let cap = kc.dim(2)?;
        if need > cap {
            // Doubled, up to the model's positions: a long generation copies its cache log(n) times.
            let grown = need.next_power_of_two().min(limit.max(need));
            let grow = |c: &Tensor| -> Result<Tensor> {
                let mut shape = c.dims().to_vec();
                shape[2] = grown - cap;
                Tensor::cat(&[c, &Tensor::zeros(shape.as_slice(), c.dtype(), c.device())?], 2)
            };
            *kc = grow(kc)?;
            *vc = grow(vc)?;
        }
        kc.slice_set(k, 2, pos)?;
        vc.slice_set(v, 2, pos)?;
        Ok((kc.narrow(2, 0, need)?, vc.narrow(2, 0, need)?))
    }
}

/// One sequence's share of a batched step: `tokens` at positions `pos..` against its `cache`.
pub struct Part<'a> {
    pub cache: &'a mut Cache,
    pub tokens: &'a [u32],
    pub pos: usize,
}

impl BatchDecoder {
    /// Whether a GGUF file of `arch` is one this decoder runs: llama, qwen3 or gemma3, dense,
    /// with full RoPE and no biases.
    pub fn applies_to_gguf(arch: &str, ct: &gguf_file::Content) -> bool {
        let u = |k: &str| super::gguf_meta::u64(ct, &format!("{arch}.{k}"));
        let (Some(hidden), Some(heads)) = (u("embedding_length"), u("attention.head_count")) else { return false };
        let head_dim = u("attention.key_length").unwrap_or(hidden / heads.max(1));
        matches!(arch, "llama" | "qwen3" | "gemma3")
            && (arch != "gemma3" || u("attention.sliding_window").is_some())
            && u("expert_count").unwrap_or(0) == 0
            && u("rope.dimension_count").is_none_or(|d| d == head_dim)
            && !ct.tensor_infos.contains_key("blk.0.attn_q.bias")
    }

    /// Loads a llama, qwen3 or gemma3 GGUF file onto `device`.
    pub fn from_gguf<R: Read + Seek>(
        arch: &str,
        ct: &gguf_file::Content,
        reader: &mut R,
        device: &Device,
        positions: usize,
    ) -> Result<Self> {
        let u = |k: &str| {
            super::gguf_meta::u64(ct, &format!("{arch}.{k}"))
                .map(|v| v as usize)
                .ok_or_else(|| candle_core::Error::msg(format!("GGUF has no {arch}.{k}")))
        };
        let f = |k: &str| ct.metadata.get(&format!("{arch}.{k}")).and_then(|v| v.to_f32().ok());
        let (hidden, n_head) = (u("embedding_length")?, u("attention.head_count")?);
        if n_head == 0 {
            candle_core::bail!("a model without attention heads")
        }
        let gemma = arch == "gemma3";
        let shape = Shape {
            n_head,
            n_kv_head: u("attention.head_count_kv").unwrap_or(n_head),
            head_dim: u("attention.key_length").unwrap_or(hidden / n_head),
            n_layer: u("block_count")?,
            eps: f("attention.layer_norm_rms_epsilon").unwrap_or(if gemma { 1e-6 } else { 1e-5 }) as f64,
        };
        // Gemma 3: every `sliding_window_type`-th layer global (kind 0, the file's RoPE base),
        // the others local (kind 1, their own base, the last `sliding_window` positions).
        let (family, kind_of): (Family, Box<dyn Fn(usize) -> usize>) = if gemma {
            let pattern = u("attention.sliding_window_type").unwrap_or(6).max(1);
            let family = Family {
                interleaved: false,
                thetas: vec![f("rope.freq_base").unwrap_or(1_000_000.), f("rope.local_freq_base").unwrap_or(10_000.)],
                windows: vec![None, Some(u("attention.sliding_window")?.max(1))],
                gelu: true,
                embed_scale: Some((hidden as f64).sqrt()),
            };
            (family, Box::new(move |i| usize::from((i + 1) % pattern != 0)))
        } else {
            // llama GGUF files hold q and k permuted for interleaved RoPE; qwen3's are NeoX.
            (Family::llama_like(arch == "llama", f("rope.freq_base").unwrap_or(10_000.)), Box::new(|_| 0))
        };
        let mut get = |name: &str| ct.tensor(reader, name, device);
        let dense = |t: candle_core::quantized::QTensor| t.dequantize(device);
        let embed_q = get("token_embd.weight")?;
        let embed = embed_q.dequantize(device)?;
        let output = match get("output.weight") {
            Ok(t) => QMatMul::from_qtensor(t)?,
            // Tied embeddings: the quantized embedding is the output projection.
            Err(_) => QMatMul::from_qtensor(embed_q)?,
        };
        let norm = dense(get("output_norm.weight")?)?;
        let mut blocks = Vec::with_capacity(shape.n_layer);
        for i in 0..shape.n_layer {
            let mut t = |n: &str| get(&format!("blk.{i}.{n}.weight"));
            let mut q = |n: &str| -> Result<Proj> { Ok(Proj::Quantized(QMatMul::from_qtensor(t(n)?)?)) };
            let (wq, wk, wv, wo) = (q("attn_q")?, q("attn_k")?, q("attn_v")?, q("attn_output")?);
            let (gate, up, down) = (q("ffn_gate")?, q("ffn_up")?, q("ffn_down")?);
            let mut t = |n: &str| get(&format!("blk.{i}.{n}.weight"));
            let (attn_norm, ffn_norm) = (dense(t("attn_norm")?)?, dense(t("ffn_norm")?)?);
            let has = |n: &str| ct.tensor_infos.contains_key(&format!("blk.{i}.{n}.weight"));
            let mut opt = |n: &str| has(n).then(|| dense(t(n)?)).transpose();
            let (q_norm, k_norm) = (opt("attn_q_norm")?, opt("attn_k_norm")?);
            let (post_attn_norm, post_ffn_norm) = (opt("post_attention_norm")?, opt("post_ffw_norm")?);
            if gemma && (q_norm.is_none() || post_attn_norm.is_none() || post_ffn_norm.is_none()) {
                candle_core::bail!("a gemma3 block lacks its q/k norms or post-norms")
            }
            blocks.push(Block {
                attn_norm,
                q: wq,
                k: wk,
                v: wv,
                o: wo,
                q_norm,
                k_norm,
                ffn_norm,
                gate,
                up,
                down,
                post_attn_norm,
                post_ffn_norm,
                kind: kind_of(i),
            });
        }
        Self::assemble(shape, family, embed, blocks, norm, Proj::Quantized(output), DType::F32, device, positions)
    }

    /// Whether a safetensors config.json is one this decoder runs: llama or qwen3 without RoPE
    /// scaling or attention biases.
    pub fn applies_to_config(config: &serde_json::Value) -> bool {
        let model_type = config.get("model_type").and_then(|v| v.as_str()).unwrap_or_default();
        let off = |k: &str| config.get(k).is_none_or(|v| v.is_null() || v == &serde_json::Value::Bool(false));
        matches!(model_type, "llama" | "qwen3") && off("rope_scaling") && off("attention_bias") && off("mlp_bias")
    }

    /// Loads a llama or qwen3 safetensors repository (`config` is its config.json) from `vb`.
    pub fn from_safetensors(
        config: &serde_json::Value,
        vb: VarBuilder,
        dtype: DType,
        device: &Device,
        positions: usize,
    ) -> Result<Self> {
        let u = |k: &str| config.get(k).and_then(|v| v.as_u64()).map(|v| v as usize);
        let need = |k: &str| u(k).ok_or_else(|| candle_core::Error::msg(format!("config.json has no {k}")));
        let (hidden, n_head) = (need("hidden_size")?, need("num_attention_heads")?);
        if n_head == 0 {
            candle_core::bail!("a model without attention heads")
        }
        let f = |k: &str| config.get(k).and_then(|v| v.as_f64());
        let shape = Shape {
            n_head,
            n_kv_head: u("num_key_value_heads").unwrap_or(n_head),
            head_dim: u("head_dim").unwrap_or(hidden / n_head),
            n_layer: need("num_hidden_layers")?,
            eps: f("rms_norm_eps").unwrap_or(1e-6),
        };
        let family = Family::llama_like(false, f("rope_theta").unwrap_or(10_000.) as f32);
        let ff = need("intermediate_size")?;
        let vocab = need("vocab_size")?;
        let (h, qw, kvw) = (hidden, n_head * shape.head_dim, shape.n_kv_head * shape.head_dim);
        let lin = |i: usize, o: usize, vb: VarBuilder| -> Result<Proj> {
            Ok(Proj::Dense(candle_nn::linear_no_bias(i, o, vb)?))
        };
        let m = vb.pp("model");
        let embed = m.get((vocab, h), "embed_tokens.weight")?;
        let tied = config.get("tie_word_embeddings").and_then(|v| v.as_bool()).unwrap_or(false);
        let output = if tied && !vb.contains_tensor("lm_head.weight") {
            Proj::Dense(candle_nn::Linear::new(embed.clone(), None))
        } else {
            lin(h, vocab, vb.pp("lm_head"))?
        };
        let norm = m.get(h, "norm.weight")?;
        let mut blocks = Vec::with_capacity(shape.n_layer);
        for i in 0..shape.n_layer {
            let l = m.pp(format!("layers.{i}"));
            let (a, mlp) = (l.pp("self_attn"), l.pp("mlp"));
            let hd = shape.head_dim;
            let (q_norm, k_norm) = if a.contains_tensor("q_norm.weight") {
                (Some(a.get(hd, "q_norm.weight")?), Some(a.get(hd, "k_norm.weight")?))
            } else {
                (None, None)
            };
            blocks.push(Block {
                attn_norm: l.get(h, "input_layernorm.weight")?,
                q: lin(h, qw, a.pp("q_proj"))?,
                k: lin(h, kvw, a.pp("k_proj"))?,
                v: lin(h, kvw, a.pp("v_proj"))?,
                o: lin(qw, h, a.pp("o_proj"))?,
                q_norm,
                k_norm,
                ffn_norm: l.get(h, "post_attention_layernorm.weight")?,
                gate: lin(h, ff, mlp.pp("gate_proj"))?,
                up: lin(h, ff, mlp.pp("up_proj"))?,
                down: lin(ff, h, mlp.pp("down_proj"))?,
                post_attn_norm: None,
                post_ffn_norm: None,
                kind: 0,
            });
        }
        Self::assemble(shape, family, embed, blocks, norm, output, dtype, device, positions)
    }

    #[allow(clippy::too_many_arguments)]
    fn assemble(
        s: Shape,
        family: Family,
        embed: Tensor,
        blocks: Vec<Block>,
        norm: Tensor,
        output: Proj,
        dtype: DType,
        device: &Device,
        positions: usize,
    ) -> Result<Self> {
        if s.n_kv_head == 0 || !s.n_head.is_multiple_of(s.n_kv_head) || !s.head_dim.is_multiple_of(2) {
            candle_core::bail!(
                "unsupported head layout: {} heads, {} kv heads, head size {}",
                s.n_head,
                s.n_kv_head,
                s.head_dim
            )
        }
        let half = s.head_dim / 2;
        let ropes = family
            .thetas
            .iter()
            .map(|&theta| {
                let inv: Vec<f32> = (0..half).map(|i| 1.0 / theta.powf((2 * i) as f32 / s.head_dim as f32)).collect();
                let angles: Vec<f32> = (0..positions).flat_map(|p| inv.iter().map(move |f| p as f32 * f)).collect();
                let angles = Tensor::from_vec(angles, (positions, half), device)?;
                Ok((angles.cos()?.to_dtype(dtype)?, angles.sin()?.to_dtype(dtype)?))
            })
            .collect::<Result<Vec<_>>>()?;
        let norms = |t: Tensor| t.to_dtype(dtype);
        let blocks = blocks
            .into_iter()
            .map(|b| {
                Ok(Block {
                    attn_norm: norms(b.attn_norm)?,
                    ffn_norm: norms(b.ffn_norm)?,
                    q_norm: b.q_norm.map(norms).transpose()?,
                    k_norm: b.k_norm.map(norms).transpose()?,
                    post_attn_norm: b.post_attn_norm.map(norms).transpose()?,
                    post_ffn_norm: b.post_ffn_norm.map(norms).transpose()?,
                    ..b
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Self {
            embed: embed.to_dtype(dtype)?,
            blocks,
            norm: norm.to_dtype(dtype)?,
            output,
            ropes,
            family,
            n_head: s.n_head,
            n_kv_head: s.n_kv_head,
            head_dim: s.head_dim,
            eps: s.eps,
            dtype,
            device: device.clone(),
        })
    }

    /// Positions a sequence may reach.
    pub fn positions(&self) -> usize {
        self.ropes[0].0.dims()[0]
    }

    /// Runs several sequences' steps as one and returns each part's last-position logits, in
    /// order. A part must continue its cache (`pos` is the cache's length, or 0 to start over).
    /// On an error no cache has moved on.
    pub fn forward_batch(&self, parts: &mut [Part]) -> Result<Vec<Vec<f32>>> {
        let positions = self.positions();
        let vocab = self.embed.dims()[0];
        for part in parts.iter() {
            let (pos, t) = (part.pos, part.tokens.len());
            if t == 0 || pos + t > positions {
                candle_core::bail!("positions {pos}..{} are outside the model's {positions}", pos + t)
            }
            if pos != 0 && pos != part.cache.len {
                candle_core::bail!("position {pos} does not continue the {} cached positions", part.cache.len)
            }
            if let Some(&bad) = part.tokens.iter().find(|&&t| t as usize >= vocab) {
                candle_core::bail!("token id {bad} is outside the vocabulary ({vocab})")
            }
        }
        if parts.is_empty() {
            return Ok(Vec::new());
        }
        let (nh, nkv, hd) = (self.n_head, self.n_kv_head, self.head_dim);
        let tokens: Vec<u32> = parts.iter().flat_map(|p| p.tokens.iter().copied()).collect();
        let rows = tokens.len();
        let row_pos: Vec<u32> = parts.iter().flat_map(|p| (p.pos..p.pos + p.tokens.len()).map(|x| x as u32)).collect();
        let row_pos = Tensor::new(row_pos, &self.device)?;
        // Each row's cos and sin, per kind of layer.
        let row_ropes: Vec<(Tensor, Tensor)> = self
            .ropes
            .iter()
            .map(|(c, s)| Ok((c.index_select(&row_pos, 0)?, s.index_select(&row_pos, 0)?)))
            .collect::<Result<_>>()?;
        let mut x = self.embed.index_select(&Tensor::new(tokens, &self.device)?, 0)?.unsqueeze(0)?;
        if let Some(scale) = self.family.embed_scale {
            x = (x * scale)?;
        }
        let rope = |t: &Tensor, kind: usize| {
            let (cos, sin) = &row_ropes[kind];
            if self.family.interleaved {
                candle_nn::rotary_emb::rope_i(t, cos, sin)
            } else {
                candle_nn::rotary_emb::rope(t, cos, sin)
            }
        };
        // Per kind of layer, each part's first visible position and mask.
        let seen: Vec<Vec<(usize, Option<Tensor>)>> = self
            .family
            .windows
            .iter()
            .map(|&window| parts.iter().map(|p| self.visible(p.tokens.len(), p.pos, window)).collect::<Result<_>>())
            .collect::<Result<_>>()?;
        let scale = 1.0 / (hd as f64).sqrt();
        for (l, b) in self.blocks.iter().enumerate() {
            let h = candle_nn::ops::rms_norm(&x, &b.attn_norm, self.eps as f32)?;
            // [1, rows, heads·hd] → [1, heads, rows, hd], per-head norms first where the model has them.
            let heads = |y: Tensor, n: usize, norm: &Option<Tensor>| -> Result<Tensor> {
                let y = y.reshape((1, rows, n, hd))?;
                let y = match norm {
                    Some(w) => candle_nn::ops::rms_norm(&y, w, self.eps as f32)?,
                    None => y,
                };
                y.transpose(1, 2)?.contiguous()
            };
            let q = rope(&heads(b.q.forward(&h)?, nh, &b.q_norm)?, b.kind)?;
            let k = rope(&heads(b.k.forward(&h)?, nkv, &b.k_norm)?, b.kind)?;
            let v = heads(b.v.forward(&h)?, nkv, &None)?;
            let mut ys = Vec::with_capacity(parts.len());
            let mut r0 = 0;
            for (part, (start, mask)) in parts.iter_mut().zip(&seen[b.kind]) {
                let t = part.tokens.len();
                let rows_of = |y: &Tensor| y.narrow(2, r0, t)?.contiguous();
                let (kc, vc) = part.cache.put(l, &rows_of(&k)?, &rows_of(&v)?, part.pos, positions)?;
                let visible = |c: Tensor| c.narrow(2, *start, part.pos + t - start);
                let (kc, vc) = (visible(kc)?, visible(vc)?);
                let kc = candle_transformers::utils::repeat_kv(kc, nh / nkv)?.contiguous()?;
                let vc = candle_transformers::utils::repeat_kv(vc, nh / nkv)?.contiguous()?;
                let att = (rows_of(&q)?.matmul(&kc.t()?)? * scale)?;
                let att = match mask {
                    Some(m) => att.broadcast_add(m)?,
                    None => att,
                };
                let att = candle_nn::ops::softmax_last_dim(&att.to_dtype(DType::F32)?)?.to_dtype(self.dtype)?;
                ys.push(att.matmul(&vc)?);
                r0 += t;
            }
            let y = Tensor::cat(&ys, 2)?.transpose(1, 2)?.reshape((1, rows, nh * hd))?;
            let post = |y: Tensor, norm: &Option<Tensor>| match norm {
                Some(w) => candle_nn::ops::rms_norm(&y, w, self.eps as f32),
                None => Ok(y),
            };
            x = (x + post(b.o.forward(&y)?, &b.post_attn_norm)?)?;
            let h = candle_nn::ops::rms_norm(&x, &b.ffn_norm, self.eps as f32)?;
            let g = b.gate.forward(&h)?;
            let g = if self.family.gelu { g.gelu()? } else { candle_nn::ops::silu(&g)? };
            let y = b.down.forward(&(g * b.up.forward(&h)?)?)?;
            x = (x + post(y, &b.post_ffn_norm)?)?;
        }
        // Each part's last row, through the final norm and the output projection together.
        let last: Vec<u32> = parts
            .iter()
            .scan(0usize, |end, p| {
                *end += p.tokens.len();
                Some(*end as u32 - 1)
            })
            .collect();
        let x = x.squeeze(0)?.index_select(&Tensor::new(last, &self.device)?, 0)?;
        let x = candle_nn::ops::rms_norm(&x, &self.norm, self.eps as f32)?;
        let logits = self.output.forward(&x)?.to_dtype(DType::F32)?.to_vec2::<f32>()?;
        for part in parts.iter_mut() {
            part.cache.len = part.pos + part.tokens.len();
        }
        Ok(logits)
    }

    /// The first position rows `pos..pos + t` may see with `window` (row i sees positions j with
    /// j ≤ pos + i and, with a window, pos + i − j < window), and the `[t, pos + t − first]`
    /// additive mask over the positions from there: 0 where seen, −∞ where not. No mask for one
    /// row, which sees exactly those positions.
    fn visible(&self, t: usize, pos: usize, window: Option<usize>) -> Result<(usize, Option<Tensor>)> {
        let first = window.map_or(0, |w| (pos + 1).saturating_sub(w));
        if t == 1 {
            return Ok((first, None));
        }
        let sees = |i: usize, j: usize| j <= pos + i && window.is_none_or(|w| pos + i - j < w);
        let m: Vec<f32> = (0..t)
            .flat_map(|i| (first..pos + t).map(move |j| if sees(i, j) { 0.0 } else { f32::NEG_INFINITY }))
            .collect();
        Ok((first, Some(Tensor::from_vec(m, (t, pos + t - first), &self.device)?.to_dtype(self.dtype)?)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::{self, GgufArch, SafetensorsArch, TinyLlama};
    use candle_core::quantized::GgmlDType;
    use candle_transformers::models::{quantized_llama, quantized_qwen3, qwen3};

    fn close(a: &[f32], b: &[f32]) -> f32 {
        let scale = b.iter().fold(0f32, |m, v| m.max(v.abs()));
        a.iter().zip(b).fold(0f32, |m, (x, y)| m.max((x - y).abs())) / scale
    }

    fn temp(name: &str) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("cortex-batched-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    /// A 20-token prompt, then three decode steps, through ours and through `theirs`.
    fn agree(ours: &BatchDecoder, mut theirs: impl FnMut(&[u32], usize) -> Vec<f32>, bound: f32) {
        let prompt: Vec<u32> = (0..20u32).map(|i| (i * 37 + 5) % 250).collect();
        let mut cache = Cache::default();
        let mut run = |tokens: &[u32], pos: usize| {
            ours.forward_batch(&mut [Part { cache: &mut cache, tokens, pos }]).unwrap().pop().unwrap()
        };
        let e = close(&run(&prompt, 0), &theirs(&prompt, 0));
        assert!(e < bound, "prefill differs by {e}");
        for (i, tok) in [40u32, 41, 42].into_iter().enumerate() {
            let pos = prompt.len() + i;
            let e = close(&run(&[tok], pos), &theirs(&[tok], pos));
            assert!(e < bound, "decode step {i} differs by {e}");
        }
    }

    fn gguf(arch: GgufArch, dtype: GgmlDType) -> (std::path::PathBuf, gguf_file::Content) {
        let dir = temp(&format!("{arch:?}-{dtype:?}"));
        let path = dir.join("model.gguf");
        testutil::write_tiny_gguf(&path, TinyLlama { dtype, ..Default::default() }, arch).unwrap();
        let ct = gguf_file::Content::read(&mut std::fs::File::open(&path).unwrap()).unwrap();
        (path, ct)
    }

    fn input(tokens: &[u32]) -> Tensor {
        Tensor::new(tokens, &Device::Cpu).unwrap().unsqueeze(0).unwrap()
    }

    fn flat(t: Tensor) -> Vec<f32> {
        t.flatten_all().unwrap().to_dtype(DType::F32).unwrap().to_vec1().unwrap()
    }

    /// On GGUF files it computes what candle-transformers' quantized llama and qwen3 compute:
    /// llama to the bit (f32, Q4_1 and Q8_0 weights: the same ops, the same quantized matmuls).
    /// candle's qwen3 runs its own fused attention on the CPU: 6e-5 apart on f32 weights, and
    /// 4–8e-3 on quantized ones (measured; the projections are the same `QMatMul` calls).
    #[test]
    fn gguf_models_compute_what_candles_models_compute() {
        for (arch, dtype, bound) in [
            (GgufArch::Llama, GgmlDType::F32, 1e-6),
            (GgufArch::Llama, GgmlDType::Q4_1, 1e-6),
            (GgufArch::Llama, GgmlDType::Q8_0, 1e-6),
            (GgufArch::Qwen3, GgmlDType::F32, 2e-4),
            (GgufArch::Qwen3, GgmlDType::Q4_1, 2e-2),
        ] {
            let (path, ct) = gguf(arch, dtype);
            let a = if arch == GgufArch::Llama { "llama" } else { "qwen3" };
            assert!(BatchDecoder::applies_to_gguf(a, &ct));
            let mut f = std::fs::File::open(&path).unwrap();
            let ours = BatchDecoder::from_gguf(a, &ct, &mut f, &Device::Cpu, 64).unwrap();
            let mut f = std::fs::File::open(&path).unwrap();
            if arch == GgufArch::Llama {
                let mut m = quantized_llama::ModelWeights::from_gguf(ct, &mut f, &Device::Cpu).unwrap();
                agree(&ours, |t, pos| flat(m.forward(&input(t), pos).unwrap()), bound);
            } else {
                let mut m = quantized_qwen3::ModelWeights::from_gguf(ct, &mut f, &Device::Cpu).unwrap();
                agree(&ours, |t, pos| flat(m.forward(&input(t), pos).unwrap()), bound);
            }
            let _ = std::fs::remove_dir_all(path.parent().unwrap());
        }
    }

    /// On Gemma 3 files it computes what cortex's CPU decoder computes (f32 weights, where both
    /// multiply in f32): the embedding scale, per-head and post norms, GELU, and the sliding
    /// window, which a 20-token prompt and its decode steps cross (a window of 4 on every other
    /// layer, whose RoPE base differs too).
    #[test]
    fn gemma3_computes_what_the_cpu_decoder_computes() {
        let (path, ct) = gguf(GgufArch::Gemma3, GgmlDType::F32);
        assert!(BatchDecoder::applies_to_gguf("gemma3", &ct));
        let ours =
            BatchDecoder::from_gguf("gemma3", &ct, &mut std::fs::File::open(&path).unwrap(), &Device::Cpu, 64).unwrap();
        let cpu = super::super::cpu::gemma3::load(&ct, &mut std::fs::File::open(&path).unwrap(), 64).unwrap();
        let mut cache = super::super::cpu::Cache::default();
        agree(&ours, |t, pos| cpu.forward(&mut cache, t, pos).unwrap(), 1e-5);
        // A prompt in chunks (the scheduler's way), each chunk's rows masked by the window.
        let prompt: Vec<u32> = (0..20u32).map(|i| (i * 37 + 5) % 250).collect();
        let mut cache = Cache::default();
        let mut last = Vec::new();
        for (i, chunk) in prompt.chunks(7).enumerate() {
            let part = Part { cache: &mut cache, tokens: chunk, pos: i * 7 };
            last = ours.forward_batch(&mut [part]).unwrap().remove(0);
        }
        let whole = cpu.forward(&mut Default::default(), &prompt, 0).unwrap();
        assert!(close(&last, &whole) < 1e-5, "chunked prefill differs by {}", close(&last, &whole));
        let _ = std::fs::remove_dir_all(path.parent().unwrap());
    }

    /// On safetensors repositories it computes what candle-transformers' qwen3 and llama compute.
    #[test]
    fn safetensors_models_compute_what_candles_models_compute() {
        use candle_transformers::models::llama;
        for arch in [SafetensorsArch::Qwen3, SafetensorsArch::Llama] {
            let dir = temp(&format!("st-{arch:?}"));
            testutil::write_tiny_safetensors(&dir, arch, TinyLlama::default()).unwrap();
            let config: serde_json::Value =
                serde_json::from_slice(&std::fs::read(dir.join("config.json")).unwrap()).unwrap();
            assert!(BatchDecoder::applies_to_config(&config));
            let vb = || unsafe {
                VarBuilder::from_mmaped_safetensors(&[dir.join("model.safetensors")], DType::F32, &Device::Cpu).unwrap()
            };
            let ours = BatchDecoder::from_safetensors(&config, vb(), DType::F32, &Device::Cpu, 64).unwrap();
            if arch == SafetensorsArch::Qwen3 {
                let cfg: qwen3::Config = serde_json::from_value(config).unwrap();
                let mut m = qwen3::ModelForCausalLM::new(&cfg, vb()).unwrap();
                agree(&ours, |t, pos| flat(m.forward(&input(t), pos).unwrap()), 1e-5);
            } else {
                let cfg: llama::LlamaConfig = serde_json::from_value(config).unwrap();
                let cfg = cfg.into_config(false);
                let m = llama::Llama::load(vb(), &cfg).unwrap();
                let mut cache = llama::Cache::new(true, DType::F32, &cfg, &Device::Cpu).unwrap();
                agree(&ours, |t, pos| flat(m.forward(&input(t), pos, &mut cache).unwrap()), 1e-5);
            }
            let _ = std::fs::remove_dir_all(&dir);
        }
    }

    /// A batched step gives every sequence the logits it gets alone, with prompt chunks and
    /// decode rows of several sequences in one step; a bad part fails the step with no cache
    /// moved on.
    #[test]
    fn a_batched_step_gives_each_sequence_what_it_gets_alone() {
        let (path, ct) = gguf(GgufArch::Llama, GgmlDType::Q4_1);
        let model =
            BatchDecoder::from_gguf("llama", &ct, &mut std::fs::File::open(&path).unwrap(), &Device::Cpu, 300).unwrap();
        let run = |rows: &mut [(&mut Cache, &[u32], usize)]| {
            let mut parts: Vec<Part> =
                rows.iter_mut().map(|(cache, tokens, pos)| Part { cache, tokens, pos: *pos }).collect();
            model.forward_batch(&mut parts).unwrap()
        };
        let mut caches = testutil::batch_matches_alone(run, 1e-4);
        let before = caches[0].len;
        let mut bad = Cache::default();
        let mut parts = [
            Part { cache: &mut caches[0], tokens: &[1], pos: before },
            Part { cache: &mut bad, tokens: &[9999], pos: 0 },
        ];
        let err = model.forward_batch(&mut parts).unwrap_err().to_string();
        assert!(err.contains("outside the vocabulary"), "{err}");
        assert_eq!(caches[0].len, before);
        let _ = std::fs::remove_dir_all(path.parent().unwrap());
    }
}
