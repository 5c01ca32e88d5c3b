//! The llama-family decoder on the CPU, built for decode speed: every Q4_0 / Q4_1 / Q8_0
//! projection goes through `cortex-kernels`, any other format through candle's own `QMatMul`,
//! and the rest of the step (norms, RoPE, attention, SwiGLU) runs on plain f32 slices with
//! scratch buffers reused across steps. The computation is candle-transformers' `quantized_llama`
//! (interleaved RoPE as llama GGUF files need, RMS norms, grouped-query attention); what differs
//! is the bookkeeping: the KV cache grows in place instead of being re-concatenated each step,
//! grouped heads read their shared K/V rows instead of copies, and the token embedding stays
//! quantized instead of being widened to f32 at load.

use std::io::{Read, Seek};

use candle_core::quantized::{gguf_file, QMatMul, QTensor};
use candle_core::{Device, Module, Result, Tensor};
use cortex_kernels::{Format, Precision, QWeight};

/// A projection: cortex's kernel where the format has one, candle's otherwise.
enum Linear {
    Ours(QWeight),
    Candle { mm: QMatMul, n: usize, k: usize },
}

impl Linear {
    fn new(t: QTensor) -> Result<Self> {
        let (n, k) = t.shape().dims2()?;
        if let Some(format) = Format::from_ggml(t.dtype()) {
            let w = QWeight::from_gguf_bytes(format, n, k, &t.data()?).map_err(candle_core::Error::msg)?;
            return Ok(Linear::Ours(w));
        }
        Ok(Linear::Candle { mm: QMatMul::from_qtensor(t)?, n, k })
    }

    /// `out[rows × n] = x[rows × k] · Wᵀ`.
    fn forward(&self, x: &[f32], rows: usize, out: &mut [f32], p: Precision) -> Result<()> {
        match self {
            Linear::Ours(w) => w.matmul_with(x, rows, out, p),
            Linear::Candle { mm, n, k } => {
                let y = mm.forward(&Tensor::from_slice(x, (rows, *k), &Device::Cpu)?)?;
                out[..rows * n].copy_from_slice(&y.flatten_all()?.to_vec1::<f32>()?);
            }
        }
        Ok(())
    }

    /// Several projections of the same input in one pool hand-off when the kernels run them all.
    fn forward_many(ls: &[&Linear], x: &[f32], rows: usize, outs: &mut [&mut [f32]], p: Precision) -> Result<()> {
        let ours: Option<Vec<&QWeight>> =
            ls.iter().map(|l| if let Linear::Ours(w) = l { Some(w) } else { None }).collect();
        match ours {
            Some(ws) => cortex_kernels::matmul_many(&ws, x, rows, outs, p),
            None => {
                for (l, o) in ls.iter().zip(outs.iter_mut()) {
                    l.forward(x, rows, o, p)?;
                }
            }
        }
        Ok(())
    }

    fn n(&self) -> usize {
        match self {
            Linear::Ours(w) => w.n,
            Linear::Candle { n, .. } => *n,
        }
    }

    fn is_ours(&self) -> bool {
        matches!(self, Linear::Ours(_))
    }
}

/// The token embedding, kept in its file format when the kernels know it.
enum Embedding {
    Quantized(QWeight),
    Dense { rows: Vec<f32>, vocab: usize },
}

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
    /// Tied embeddings (SmolLM2): the output projection is the embedding matrix, used in place.
    output: Option<Linear>,
    layers: Vec<Layer>,
    norm: Vec<f32>,
    /// cos and sin of position × frequency, `[position][head_dim / 2]`.
    cos: Vec<f32>,
    sin: Vec<f32>,
    positions: usize,
    hidden: usize,
    ff: usize,
    n_head: usize,
    n_kv_head: usize,
    head_dim: usize,
    eps: f32,
}

/// One sequence's state: its KV cache (`[position][kv head][head_dim]` per layer, grown in place)
/// and the step's scratch buffers.
#[derive(Default)]
pub struct Cache {
    k: Vec<Vec<f32>>,
    v: Vec<Vec<f32>>,
    len: usize,
    scratch: Scratch,
}

#[derive(Default)]
struct Scratch {
    x: Vec<f32>,
    h: Vec<f32>,
    q: Vec<f32>,
    k: Vec<f32>,
    v: Vec<f32>,
    att: Vec<f32>,
    o: Vec<f32>,
    gate: Vec<f32>,
    up: Vec<f32>,
}

fn resize(buf: &mut Vec<f32>, len: usize) -> &mut [f32] {
    buf.resize(len, 0.0);
    &mut buf[..len]
}

impl CpuLlama {
    /// Whether this file is one this path runs: a dense llama (no experts), full-width RoPE, and
    /// projections the kernels take (else candle's model is as fast).
    pub fn applies(ct: &gguf_file::Content) -> bool {
        let u = |k: &str| super::gguf_meta::u64(ct, k);
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
        let u =
            |k: &str| super::gguf_meta::u64(ct, k).ok_or_else(|| candle_core::Error::msg(format!("GGUF has no {k}")));
        let hidden = u("llama.embedding_length")? as usize;
        let n_head = u("llama.attention.head_count")? as usize;
        let n_kv_head = super::gguf_meta::u64(ct, "llama.attention.head_count_kv").unwrap_or(n_head as u64) as usize;
        let n_layer = u("llama.block_count")? as usize;
        let f = |k: &str, default: f32| ct.metadata.get(k).and_then(|v| v.to_f32().ok()).unwrap_or(default);
        let eps = f("llama.attention.layer_norm_rms_epsilon", 1e-5);
        let theta = f("llama.rope.freq_base", 10_000.);
        if n_head == 0 || !hidden.is_multiple_of(n_head) {
            candle_core::bail!("unsupported head layout: {n_head} heads for width {hidden}")
        }
        let head_dim = hidden / n_head;
        if n_kv_head == 0 || !n_head.is_multiple_of(n_kv_head) || !head_dim.is_multiple_of(2) {
            candle_core::bail!("unsupported head layout: {n_head} heads, {n_kv_head} kv heads, head size {head_dim}")
        }

        let mut tensor = |name: &str| ct.tensor(reader, name, &dev);
        let dense = |t: QTensor| -> Result<Vec<f32>> { t.dequantize(&dev)?.flatten_all()?.to_vec1::<f32>() };
        let embd = tensor("token_embd.weight")?;
        let embedding = match Format::from_ggml(embd.dtype()) {
            Some(format) => {
                let (n, k) = embd.shape().dims2()?;
                Embedding::Quantized(
                    QWeight::from_gguf_bytes(format, n, k, &embd.data()?).map_err(candle_core::Error::msg)?,
                )
            }
            None => {
                let vocab = embd.shape().dims2()?.0;
                Embedding::Dense { rows: dense(embd)?, vocab }
            }
        };
        let norm = dense(tensor("output_norm.weight")?)?;
        let output = match tensor("output.weight") {
            Ok(t) => Some(Linear::new(t)?),
            Err(_) if matches!(embedding, Embedding::Quantized(_)) => None,
            Err(_) => Some(Linear::new(tensor("token_embd.weight")?)?),
        };
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
        tracing::debug!(
            ours,
            output_ours = output.as_ref().is_none_or(Linear::is_ours),
            kernels = ?cortex_kernels::level(),
            "llama projections on cortex's kernels"
        );
        // The same frequencies candle's llama uses: θ^(−2i/d).
        let half = head_dim / 2;
        let (mut cos, mut sin) = (Vec::with_capacity(positions * half), Vec::with_capacity(positions * half));
        for p in 0..positions {
            for i in 0..half {
                let a = p as f32 * (1f32 / theta.powf((2 * i) as f32 / head_dim as f32));
                cos.push(a.cos());
                sin.push(a.sin());
            }
        }
        Ok(Self { embedding, output, layers, norm, cos, sin, positions, hidden, ff, n_head, n_kv_head, head_dim, eps })
    }

    pub fn vocab(&self) -> usize {
        match (&self.output, &self.embedding) {
            (Some(o), _) => o.n(),
            (None, Embedding::Quantized(w)) => w.n,
            (None, Embedding::Dense { vocab, .. }) => *vocab,
        }
    }

    fn embed(&self, tokens: &[u32], x: &mut [f32]) -> Result<()> {
        let vocab = match &self.embedding {
            Embedding::Quantized(w) => w.n,
            Embedding::Dense { vocab, .. } => *vocab,
        };
        for (row, &t) in x.chunks_exact_mut(self.hidden).zip(tokens) {
            let t = t as usize;
            if t >= vocab {
                candle_core::bail!("token id {t} is outside the vocabulary ({vocab})")
            }
            match &self.embedding {
                Embedding::Quantized(w) => w.dequantize_row(t, row),
                Embedding::Dense { rows, .. } => row.copy_from_slice(&rows[t * self.hidden..(t + 1) * self.hidden]),
            }
        }
        Ok(())
    }

    /// Runs `tokens` at positions `pos..` and returns the last position's logits.
    pub fn forward(&self, cache: &mut Cache, tokens: &[u32], pos: usize) -> Result<Vec<f32>> {
        let t = tokens.len();
        if t == 0 || pos + t > self.positions {
            candle_core::bail!("positions {pos}..{} are outside the model's {}", pos + t, self.positions)
        }
        if pos > cache.len {
            candle_core::bail!("position {pos} skips past the {} cached positions", cache.len)
        }
        let kv_width = self.n_kv_head * self.head_dim;
        cache.k.resize_with(self.layers.len(), Vec::new);
        cache.v.resize_with(self.layers.len(), Vec::new);
        let (hidden, qw, ff) = (self.hidden, self.n_head * self.head_dim, self.ff);
        let p = precision(t);
        let s = &mut cache.scratch;
        let x = resize(&mut s.x, t * hidden);
        self.embed(tokens, x)?;
        for (l, layer) in self.layers.iter().enumerate() {
            let h = resize(&mut s.h, t * hidden);
            rms_norm(x, &layer.attn_norm, self.eps, h);
            let q = resize(&mut s.q, t * qw);
            let k = resize(&mut s.k, t * kv_width);
            let v = resize(&mut s.v, t * kv_width);
            Linear::forward_many(&[&layer.wq, &layer.wk, &layer.wv], h, t, &mut [&mut *q, &mut *k, &mut *v], p)?;
            for r in 0..t {
                self.rope(&mut q[r * qw..(r + 1) * qw], pos + r);
                self.rope(&mut k[r * kv_width..(r + 1) * kv_width], pos + r);
            }
            // Positions from `pos` on are rewritten (a sequence may go back and recompute).
            let (kc, vc) = (&mut cache.k[l], &mut cache.v[l]);
            kc.truncate(pos * kv_width);
            vc.truncate(pos * kv_width);
            kc.extend_from_slice(k);
            vc.extend_from_slice(v);
            let att = resize(&mut s.att, t * qw);
            self.attention(q, kc, vc, pos, t, att);
            let o = resize(&mut s.o, t * hidden);
            layer.wo.forward(att, t, o, p)?;
            add(x, o);
            let h = resize(&mut s.h, t * hidden);
            rms_norm(x, &layer.ffn_norm, self.eps, h);
            let gate = resize(&mut s.gate, t * ff);
            let up = resize(&mut s.up, t * ff);
            Linear::forward_many(&[&layer.gate, &layer.up], h, t, &mut [&mut *gate, &mut *up], p)?;
            for (g, u) in gate.iter_mut().zip(up.iter()) {
                *g = *g / (1.0 + (-*g).exp()) * u;
            }
            layer.down.forward(gate, t, o, p)?;
            add(x, o);
        }
        cache.len = pos + t;
        let last = &x[(t - 1) * hidden..];
        let h = resize(&mut s.h, hidden);
        rms_norm(last, &self.norm, self.eps, h);
        let mut logits = vec![0f32; self.vocab()];
        match (&self.output, &self.embedding) {
            (Some(o), _) => o.forward(h, 1, &mut logits, p)?,
            (None, Embedding::Quantized(w)) => w.matmul_with(h, 1, &mut logits, p),
            (None, Embedding::Dense { .. }) => unreachable!("a dense embedding gets its own output Linear"),
        }
        Ok(logits)
    }

    /// Interleaved rotation of each head's pairs (x₂ᵢ, x₂ᵢ₊₁), as candle's `rope_i`.
    fn rope(&self, row: &mut [f32], pos: usize) {
        let half = self.head_dim / 2;
        let (cos, sin) = (&self.cos[pos * half..(pos + 1) * half], &self.sin[pos * half..(pos + 1) * half]);
        for head in row.chunks_exact_mut(self.head_dim) {
            for (i, pair) in head.chunks_exact_mut(2).enumerate() {
                let (a, b) = (pair[0], pair[1]);
                pair[0] = a * cos[i] - b * sin[i];
                pair[1] = a * sin[i] + b * cos[i];
            }
        }
    }

    /// Causal grouped-query attention of `t` new rows (positions `pos..pos+t`) over the cache.
    /// (row, head) pairs are independent: a long prefill spreads them over candle's worker pool.
    fn attention(&self, q: &[f32], kc: &[f32], vc: &[f32], pos: usize, t: usize, out: &mut [f32]) {
        thread_local! {
            static SCORES: std::cell::RefCell<Vec<f32>> = const { std::cell::RefCell::new(Vec::new()) };
        }
        let (hd, qw) = (self.head_dim, self.n_head * self.head_dim);
        let kv_width = self.n_kv_head * hd;
        let group = self.n_head / self.n_kv_head;
        let scale = 1.0 / (hd as f32).sqrt();
        let dst = out.as_mut_ptr() as usize;
        let one = |item: usize| {
            let (r, h) = (item / self.n_head, item % self.n_head);
            let g = h / group;
            let seen = pos + r + 1;
            let qh = &q[r * qw + h * hd..r * qw + (h + 1) * hd];
            // SAFETY: item (r, h) alone writes this head's slice of row r; `out` outlives the call.
            let oh = unsafe { std::slice::from_raw_parts_mut((dst as *mut f32).add(r * qw + h * hd), hd) };
            SCORES.with(|cell| {
                let mut scores = cell.borrow_mut();
                let sc = resize(&mut scores, seen);
                for (j, s) in sc.iter_mut().enumerate() {
                    *s = dot(qh, &kc[j * kv_width + g * hd..j * kv_width + (g + 1) * hd]) * scale;
                }
                softmax(sc);
                oh.fill(0.0);
                for (j, &p) in sc.iter().enumerate() {
                    let vj = &vc[j * kv_width + g * hd..j * kv_width + (g + 1) * hd];
                    for (o, v) in oh.iter_mut().zip(vj) {
                        *o += p * v;
                    }
                }
            });
        };
        let items = t * self.n_head;
        // Below this many multiply-adds a hand-off to the pool costs more than it saves.
        const PARALLEL_FROM: usize = 1 << 16;
        if t * (pos + t) * self.n_head * hd >= PARALLEL_FROM {
            candle_core::utils::barrier_pool().execute_chunked(items, |range| range.for_each(one));
        } else {
            (0..items).for_each(one);
        }
    }
}

/// Activation precision for a step of `t` tokens. A prompt (any step of more than one token) is
/// quantized at 16 bits: its logits
/// then lie within ~3e-4 (of the largest) of f32 arithmetic on the same weights, where 8 bits
/// (llama.cpp's choice) land 2–6e-2 away and flip near-ties such as the default model's first
/// word for "What is the capital of France?" — for ~2 % of prefill speed. Decode stays at 8 bits
/// (16 costs ~7 % of decode speed) unless `CORTEX_DECODE_BITS=16`. BENCHMARKS.md has the figures.
fn precision(t: usize) -> Precision {
    static DECODE: std::sync::OnceLock<Precision> = std::sync::OnceLock::new();
    if t > 1 {
        return Precision::I16;
    }
    *DECODE.get_or_init(|| match std::env::var("CORTEX_DECODE_BITS").as_deref() {
        Ok("16") => Precision::I16,
        _ => Precision::I8,
    })
}

/// Eight partial sums so that the compiler keeps them in one vector register.
fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0f32; 8];
    let (ca, cb) = (a.chunks_exact(8), b.chunks_exact(8));
    let tail: f32 = ca.remainder().iter().zip(cb.remainder()).map(|(x, y)| x * y).sum();
    for (x, y) in ca.zip(cb) {
        for i in 0..8 {
            acc[i] += x[i] * y[i];
        }
    }
    acc.iter().sum::<f32>() + tail
}

fn softmax(xs: &mut [f32]) {
    let max = xs.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let mut sum = 0f32;
    for x in xs.iter_mut() {
        *x = (*x - max).exp();
        sum += *x;
    }
    let inv = 1.0 / sum;
    xs.iter_mut().for_each(|x| *x *= inv);
}

/// Row-wise `x / sqrt(mean(x²) + eps) · w`, as candle's `rms_norm`.
fn rms_norm(x: &[f32], w: &[f32], eps: f32, out: &mut [f32]) {
    let d = w.len();
    for (xr, or) in x.chunks_exact(d).zip(out.chunks_exact_mut(d)) {
        let mean = xr.iter().map(|v| v * v).sum::<f32>() / d as f32;
        let inv = 1.0 / (mean + eps).sqrt();
        for ((o, v), g) in or.iter_mut().zip(xr).zip(w) {
            *o = v * inv * g;
        }
    }
}

fn add(x: &mut [f32], y: &[f32]) {
    x.iter_mut().zip(y).for_each(|(a, b)| *a += b);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data(n: usize, seed: u32) -> Vec<f32> {
        (0..n)
            .map(|i| (((i as u32).wrapping_mul(2654435761).wrapping_add(seed) >> 8) % 2000) as f32 / 1000.0 - 1.0)
            .collect()
    }

    fn close(a: &[f32], b: &[f32]) -> f32 {
        a.iter().zip(b).fold(0f32, |m, (x, y)| m.max((x - y).abs()))
    }

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

    /// The slice code computes what candle's ops compute (the model this replaces uses those).
    #[test]
    fn norms_rope_and_attention_match_candle_ops() {
        let dev = Device::Cpu;
        let (hidden, n_head, n_kv_head, head_dim, t, pos) = (64, 4, 2, 16, 3, 5);
        let m = CpuLlama {
            embedding: Embedding::Dense { rows: vec![], vocab: 0 },
            output: None,
            layers: vec![],
            norm: vec![],
            cos: vec![],
            sin: vec![],
            positions: 0,
            hidden,
            ff: 0,
            n_head,
            n_kv_head,
            head_dim,
            eps: 1e-5,
        };
        // RMS norm.
        let x = data(t * hidden, 1);
        let w = data(hidden, 2);
        let mut ours = vec![0f32; t * hidden];
        rms_norm(&x, &w, 1e-5, &mut ours);
        let xt = Tensor::from_slice(&x, (t, hidden), &dev).unwrap();
        let theirs = candle_nn::ops::rms_norm(&xt, &Tensor::from_slice(&w, hidden, &dev).unwrap(), 1e-5).unwrap();
        assert!(close(&ours, &theirs.flatten_all().unwrap().to_vec1().unwrap()) < 1e-5);

        // RoPE at positions pos..pos+t against rope_i on (1, heads, t, head_dim).
        let positions = pos + t;
        let half = head_dim / 2;
        let (mut cos, mut sin) = (vec![], vec![]);
        for p in 0..positions {
            for i in 0..half {
                let a = p as f32 / 10_000f32.powf((2 * i) as f32 / head_dim as f32);
                cos.push(a.cos());
                sin.push(a.sin());
            }
        }
        let m = CpuLlama { cos: cos.clone(), sin: sin.clone(), positions, ..m };
        let qw = n_head * head_dim;
        let q = data(t * qw, 3);
        let mut ours = q.clone();
        for r in 0..t {
            m.rope(&mut ours[r * qw..(r + 1) * qw], pos + r);
        }
        let qt = Tensor::from_slice(&q, (1, t, n_head, head_dim), &dev)
            .unwrap()
            .transpose(1, 2)
            .unwrap()
            .contiguous()
            .unwrap();
        let c = Tensor::from_slice(&cos, (positions, half), &dev).unwrap().narrow(0, pos, t).unwrap();
        let s = Tensor::from_slice(&sin, (positions, half), &dev).unwrap().narrow(0, pos, t).unwrap();
        let theirs = candle_nn::rotary_emb::rope_i(&qt, &c, &s).unwrap().transpose(1, 2).unwrap();
        assert!(close(&ours, &theirs.flatten_all().unwrap().to_vec1().unwrap()) < 1e-5);

        // Causal grouped-query attention of t new rows over pos cached + t new positions; the
        // second shape is big enough to run on the worker pool.
        for (t, pos) in [(t, pos), (40, 30)] {
            let positions = pos + t;
            let q = data(t * qw, 3);
            let kvw = n_kv_head * head_dim;
            let (kc, vc) = (data(positions * kvw, 4), data(positions * kvw, 5));
            let mut ours = vec![0f32; t * qw];
            m.attention(&q, &kc, &vc, pos, t, &mut ours);
            let heads = |v: &[f32], rows: usize, n: usize| {
                Tensor::from_slice(v, (1, rows, n, head_dim), &dev)
                    .unwrap()
                    .transpose(1, 2)
                    .unwrap()
                    .contiguous()
                    .unwrap()
            };
            let (qt, kt, vt) =
                (heads(&q, t, n_head), heads(&kc, positions, n_kv_head), heads(&vc, positions, n_kv_head));
            let kt = candle_transformers::utils::repeat_kv(kt, n_head / n_kv_head).unwrap();
            let vt = candle_transformers::utils::repeat_kv(vt, n_head / n_kv_head).unwrap();
            let att = (qt.matmul(&kt.t().unwrap()).unwrap() / (head_dim as f64).sqrt()).unwrap();
            let mask = candle_transformers::utils::build_causal_mask(t, pos, &dev).unwrap();
            let neg = Tensor::new(f32::NEG_INFINITY, &dev).unwrap().broadcast_as(att.shape()).unwrap();
            let att = mask.broadcast_as(att.shape()).unwrap().where_cond(&neg, &att).unwrap();
            let att = candle_nn::ops::softmax_last_dim(&att).unwrap();
            let theirs = att.matmul(&vt.contiguous().unwrap()).unwrap().transpose(1, 2).unwrap();
            assert!(close(&ours, &theirs.flatten_all().unwrap().to_vec1().unwrap()) < 1e-5, "t={t} pos={pos}");
        }
    }
}
