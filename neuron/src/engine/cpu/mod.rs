//! cortex's own decoders for the CPU, built for decode speed: every Q4_0 / Q4_1 / Q8_0 projection
//! goes through `cortex-kernels`, any other format through candle's own `QMatMul`, and the rest
//! of the step (norms, RoPE, attention, the MLP) runs on plain f32 slices with scratch buffers
//! reused across steps. The KV cache grows in place instead of being re-concatenated each step,
//! grouped heads read their shared K/V rows instead of copies, and the token embedding stays
//! quantized instead of being widened to f32 at load. One [`Decoder`] runs both families; `llama`
//! and `gemma3` read their files into it and say what differs.

pub mod gemma3;
pub mod llama;

use candle_core::quantized::{gguf_file, QMatMul, QTensor};
use candle_core::{Device, Module, Result, Tensor};
use cortex_kernels::{Format, Precision, QWeight};

/// A projection: cortex's kernel where the format has one, candle's otherwise.
enum Linear {
    Ours(QWeight),
    Candle { mm: QMatMul, n: usize, k: usize },
}

/// candle's `CANDLE_DEQUANTIZE_ALL` (every matrix widened to f32 at load, f32 arithmetic) is
/// honoured here too: the same decoder on the same weights without quantized activations, the
/// reference the logit distances in BENCHMARKS.md are measured against.
fn f32_reference() -> bool {
    std::env::var_os("CANDLE_DEQUANTIZE_ALL").is_some()
}

impl Linear {
    fn new(t: QTensor) -> Result<Self> {
        let (n, k) = t.shape().dims2()?;
        if let Some(format) = Format::from_ggml(t.dtype()).filter(|_| !f32_reference()) {
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
    Dense { rows: Vec<f32>, vocab: usize, hidden: usize },
}

impl Embedding {
    fn new(t: QTensor) -> Result<Self> {
        let (vocab, hidden) = t.shape().dims2()?;
        Ok(match Format::from_ggml(t.dtype()).filter(|_| !f32_reference()) {
            Some(format) => Embedding::Quantized(
                QWeight::from_gguf_bytes(format, vocab, hidden, &t.data()?).map_err(candle_core::Error::msg)?,
            ),
            None => Embedding::Dense { rows: dense(t)?, vocab, hidden },
        })
    }

    fn vocab(&self) -> usize {
        match self {
            Embedding::Quantized(w) => w.n,
            Embedding::Dense { vocab, .. } => *vocab,
        }
    }

    /// Rows for `tokens` into `x` (`tokens.len() × hidden`).
    fn lookup(&self, tokens: &[u32], x: &mut [f32]) -> Result<()> {
        let vocab = self.vocab();
        let hidden = x.len() / tokens.len().max(1);
        for (row, &t) in x.chunks_exact_mut(hidden).zip(tokens) {
            let t = t as usize;
            if t >= vocab {
                candle_core::bail!("token id {t} is outside the vocabulary ({vocab})")
            }
            match self {
                Embedding::Quantized(w) => w.dequantize_row(t, row),
                Embedding::Dense { rows, hidden, .. } => row.copy_from_slice(&rows[t * hidden..(t + 1) * hidden]),
            }
        }
        Ok(())
    }
}

/// The parts every decoder file has outside its blocks: the token embedding, the final norm and
/// the output projection.
fn ends(
    ct: &gguf_file::Content,
    reader: &mut (impl std::io::Read + std::io::Seek),
) -> Result<(Embedding, Vec<f32>, Option<Linear>)> {
    let embedding = Embedding::new(ct.tensor(reader, "token_embd.weight", &Device::Cpu)?)?;
    let norm = dense(ct.tensor(reader, "output_norm.weight", &Device::Cpu)?)?;
    let output = output_layer(ct, reader, &embedding)?;
    Ok((embedding, norm, output))
}

/// The output projection: its own matrix, or (tied embeddings) the quantized embedding in place.
fn output_layer(
    ct: &gguf_file::Content,
    reader: &mut (impl std::io::Read + std::io::Seek),
    embedding: &Embedding,
) -> Result<Option<Linear>> {
    match ct.tensor(reader, "output.weight", &Device::Cpu) {
        Ok(t) => Ok(Some(Linear::new(t)?)),
        Err(_) if matches!(embedding, Embedding::Quantized(_)) => Ok(None),
        Err(_) => Ok(Some(Linear::new(ct.tensor(reader, "token_embd.weight", &Device::Cpu)?)?)),
    }
}

/// Logits of `rows` normalised hidden states, `rows × vocab`.
fn logits(output: Option<&Linear>, embedding: &Embedding, h: &[f32], rows: usize, p: Precision) -> Result<Vec<f32>> {
    match (output, embedding) {
        (Some(o), _) => {
            let mut out = vec![0f32; rows * o.n()];
            o.forward(h, rows, &mut out, p)?;
            Ok(out)
        }
        (None, Embedding::Quantized(w)) => {
            let mut out = vec![0f32; rows * w.n];
            w.matmul_with(h, rows, &mut out, p);
            Ok(out)
        }
        (None, Embedding::Dense { .. }) => candle_core::bail!("a dense embedding needs its own output layer"),
    }
}

fn dense(t: QTensor) -> Result<Vec<f32>> {
    t.dequantize(&Device::Cpu)?.flatten_all()?.to_vec1::<f32>()
}

/// A metadata number (any integer or float type), as `f32`.
fn meta_f32(ct: &gguf_file::Content, key: &str) -> Option<f32> {
    let v = ct.metadata.get(key)?;
    v.to_f32().ok().or_else(|| super::gguf_meta::u64(ct, key).map(|u| u as f32))
}

fn meta_usize(ct: &gguf_file::Content, key: &str) -> Result<usize> {
    super::gguf_meta::u64(ct, key)
        .map(|v| v as usize)
        .ok_or_else(|| candle_core::Error::msg(format!("GGUF has no {key}")))
}

/// The MLP's gate activation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Gate {
    /// SwiGLU (llama).
    Silu,
    /// GeGLU with the tanh approximation (Gemma).
    GeluTanh,
}

/// √(2/π), for the tanh approximation of GELU.
const SQRT_2_OVER_PI: f32 = 0.797_884_6;

impl Gate {
    /// `g[i] = gate(g[i]) · u[i]`. GELU as 0.5·g·(1 + tanh(v)) = g·σ(2v): one `exp` like SiLU
    /// (libm's `tanhf`, through `expm1f`, cost a quarter of Gemma's prefill), and that [`exp`]
    /// rather than libm's so that the loop vectorizes (libm's `expf`, a call a value, was 2.5 %).
    fn apply_times(self, g: &mut [f32], u: &[f32]) {
        match self {
            Gate::Silu => g.iter_mut().zip(u).for_each(|(g, u)| *g = *g / (1.0 + exp(-*g)) * u),
            Gate::GeluTanh => g
                .iter_mut()
                .zip(u)
                .for_each(|(g, u)| *g = *g / (1.0 + exp(-2.0 * SQRT_2_OVER_PI * (*g + 0.044_715 * *g * *g * *g))) * u),
        }
    }
}

/// eˣ within 2 ulp over f32's normal range (0 below about −87.5, ∞ above 88.7), in arithmetic
/// the compiler vectorizes: eʳ·2ⁿ with n = round(x·log₂e), r = x − n·ln 2 in two parts (Cody and
/// Waite, so that r keeps its low bits), eʳ by its Taylor series to r⁷ on |r| ≤ ½ ln 2, and 2ⁿ
/// built in the exponent bits.
#[inline]
fn exp(x: f32) -> f32 {
    const LN2_HI: f32 = 0.693_359_4; // ln 2 with its low 12 bits clear: n·LN2_HI is exact
    const LN2_LO: f32 = -2.121_944_4e-4;
    let x = x.clamp(-88.0, 89.0);
    let n = (x * std::f32::consts::LOG2_E).round_ties_even();
    let r = (x - n * LN2_HI) - n * LN2_LO;
    let p = 1.0
        + r * (1.0
            + r * (0.5
                + r * (1.0 / 6.0 + r * (1.0 / 24.0 + r * (1.0 / 120.0 + r * (1.0 / 720.0 + r * (1.0 / 5040.0)))))));
    // 2ⁿ; n = −127 gives 0 (the result would be subnormal), n = 128 gives ∞.
    p * f32::from_bits(((n as i32 + 127).max(0) as u32) << 23)
}

/// One transformer block. The optional norms are Gemma's (per-head q/k norms, norms after
/// attention and after the MLP).
struct Layer {
    attn_norm: Vec<f32>,
    wq: Linear,
    wk: Linear,
    wv: Linear,
    wo: Linear,
    q_norm: Option<Vec<f32>>,
    k_norm: Option<Vec<f32>>,
    post_attn_norm: Option<Vec<f32>>,
    ffn_norm: Vec<f32>,
    gate: Linear,
    up: Linear,
    down: Linear,
    post_ffn_norm: Option<Vec<f32>>,
    /// Which of the decoder's RoPE tables and attention shapes this layer uses.
    kind: usize,
}

impl Layer {
    /// Block `i`'s tensors; the optional norms are read where the file has them.
    fn load(
        ct: &gguf_file::Content,
        reader: &mut (impl std::io::Read + std::io::Seek),
        i: usize,
        kind: usize,
    ) -> Result<Self> {
        let name = |n: &str| format!("blk.{i}.{n}.weight");
        let mut t = |n: &str| ct.tensor(reader, &name(n), &Device::Cpu);
        let mut opt = |n: &str| -> Result<Option<Vec<f32>>> {
            match ct.tensor_infos.contains_key(&name(n)) {
                true => Ok(Some(dense(t(n)?)?)),
                false => Ok(None),
            }
        };
        let (q_norm, k_norm) = (opt("attn_q_norm")?, opt("attn_k_norm")?);
        let (post_attn_norm, post_ffn_norm) = (opt("post_attention_norm")?, opt("post_ffw_norm")?);
        Ok(Layer {
            attn_norm: dense(t("attn_norm")?)?,
            wq: Linear::new(t("attn_q")?)?,
            wk: Linear::new(t("attn_k")?)?,
            wv: Linear::new(t("attn_v")?)?,
            wo: Linear::new(t("attn_output")?)?,
            q_norm,
            k_norm,
            post_attn_norm,
            ffn_norm: dense(t("ffn_norm")?)?,
            gate: Linear::new(t("ffn_gate")?)?,
            up: Linear::new(t("ffn_up")?)?,
            down: Linear::new(t("ffn_down")?)?,
            post_ffn_norm,
            kind,
        })
    }
}

/// A decoder-only transformer on the CPU: what `llama::load` and `gemma3::load` build.
pub struct Decoder {
    embedding: Embedding,
    /// None with tied embeddings: the embedding matrix is used in place.
    output: Option<Linear>,
    layers: Vec<Layer>,
    norm: Vec<f32>,
    /// RoPE tables and attention shapes, indexed by `Layer::kind`.
    ropes: Vec<Rope>,
    heads: Vec<Heads>,
    /// Interleaved pairs (llama GGUF files) or NeoX halves.
    interleaved: bool,
    gate_fn: Gate,
    /// Gemma multiplies the embedding by √hidden.
    embed_scale: Option<f32>,
    hidden: usize,
    eps: f32,
}

/// One sequence's share of a batched step: `tokens` at positions `pos..` against its `cache`.
pub struct Part<'a> {
    pub cache: &'a mut Cache,
    pub tokens: &'a [u32],
    pub pos: usize,
}

/// What one row of a batched step attends to: its sequence's cached keys and values, up to (not
/// including) position `end`.
#[derive(Clone, Copy)]
struct Seen<'a> {
    kc: &'a [f32],
    vc: &'a [f32],
    end: usize,
}

impl Decoder {
    /// Runs `tokens` at positions `pos..` and returns the last position's logits.
    pub fn forward(&self, cache: &mut Cache, tokens: &[u32], pos: usize) -> Result<Vec<f32>> {
        let mut logits = self.forward_batch(&mut [Part { cache, tokens, pos }])?;
        Ok(logits.pop().unwrap_or_default())
    }

    /// Runs several sequences' steps as one: their rows go through every projection together,
    /// so each weight is read once for all of them (a decode step of 8 sequences is then one
    /// 8-row pass of the kernels instead of eight 1-row ones), and each row attends to its own
    /// sequence's cache. Returns each part's last-position logits, in order. On an error no
    /// cache has moved on: every part can be run again from the same position.
    pub fn forward_batch(&self, parts: &mut [Part]) -> Result<Vec<Vec<f32>>> {
        let positions = self.ropes.iter().map(|r| r.positions).min().unwrap_or(0);
        for part in parts.iter() {
            let (pos, t) = (part.pos, part.tokens.len());
            if t == 0 || pos + t > positions {
                candle_core::bail!("positions {pos}..{} are outside the model's {positions}", pos + t)
            }
        }
        let Some(first) = parts.first_mut() else { return Ok(Vec::new()) };
        // Every kind of layer has the same widths; only windows and RoPE bases differ.
        let hs = &self.heads[0];
        let hidden = self.hidden;
        let (qw, kvw) = (hs.n_head * hs.head_dim, hs.n_kv_head * hs.head_dim);
        // The first sequence's scratch serves the batch.
        let mut scratch = std::mem::take(&mut first.cache.scratch);
        let s = &mut scratch;
        for part in parts.iter_mut() {
            part.cache.rewind(self.layers.len(), part.pos, kvw)?;
        }
        // Each row's position, and where each part's rows start.
        let row_pos: Vec<usize> = parts.iter().flat_map(|p| p.pos..p.pos + p.tokens.len()).collect();
        let t = row_pos.len();
        let starts: Vec<usize> = parts
            .iter()
            .scan(0, |at, p| {
                *at += p.tokens.len();
                Some(*at - p.tokens.len())
            })
            .collect();
        let p = precision(parts.iter().map(|p| p.tokens.len()).max().unwrap_or(1));
        let x = resize(&mut s.x, t * hidden);
        for (part, &r0) in parts.iter().zip(&starts) {
            self.embedding.lookup(part.tokens, &mut x[r0 * hidden..(r0 + part.tokens.len()) * hidden])?;
        }
        if let Some(scale) = self.embed_scale {
            x.iter_mut().for_each(|v| *v *= scale);
        }
        for (l, layer) in self.layers.iter().enumerate() {
            let (rope, heads) = (&self.ropes[layer.kind], &self.heads[layer.kind]);
            let h = resize(&mut s.h, t * hidden);
            rms_norm(x, &layer.attn_norm, self.eps, h);
            let (q, k, v) = (resize(&mut s.q, t * qw), resize(&mut s.k, t * kvw), resize(&mut s.v, t * kvw));
            Linear::forward_many(&[&layer.wq, &layer.wk, &layer.wv], h, t, &mut [&mut *q, &mut *k, &mut *v], p)?;
            if let (Some(qn), Some(kn)) = (&layer.q_norm, &layer.k_norm) {
                rms_norm_in_place(q, qn, self.eps);
                rms_norm_in_place(k, kn, self.eps);
            }
            let (qp, kp) = (q.as_mut_ptr() as usize, k.as_mut_ptr() as usize);
            each_row(t, |r| {
                // SAFETY: row r alone touches these rows of q and k, which outlive the call.
                let (qr, kr) = unsafe { (rows_mut(qp, r, qw), rows_mut(kp, r, kvw)) };
                rope.apply(qr, row_pos[r], self.interleaved);
                rope.apply(kr, row_pos[r], self.interleaved);
            });
            for (part, &r0) in parts.iter_mut().zip(&starts) {
                let rows = r0 * kvw..(r0 + part.tokens.len()) * kvw;
                part.cache.k[l].extend_from_slice(&k[rows.clone()]);
                part.cache.v[l].extend_from_slice(&v[rows]);
            }
            let seen: Vec<Seen> = parts
                .iter()
                .flat_map(|part| {
                    let (kc, vc) = (&part.cache.k[l][..], &part.cache.v[l][..]);
                    (part.pos..part.pos + part.tokens.len()).map(move |p| Seen { kc, vc, end: p + 1 })
                })
                .collect();
            let att = resize(&mut s.att, t * qw);
            attention(heads, q, &seen, att);
            let o = resize(&mut s.o, t * hidden);
            layer.wo.forward(att, t, o, p)?;
            if let Some(n) = &layer.post_attn_norm {
                rms_norm_in_place(o, n, self.eps);
            }
            add(x, o, hidden);
            let h = resize(&mut s.h, t * hidden);
            rms_norm(x, &layer.ffn_norm, self.eps, h);
            let ff = layer.up.n();
            let (gate, up) = (resize(&mut s.gate, t * ff), resize(&mut s.up, t * ff));
            Linear::forward_many(&[&layer.gate, &layer.up], h, t, &mut [&mut *gate, &mut *up], p)?;
            let (gp, up) = (gate.as_mut_ptr() as usize, &*up);
            each_row(t, |r| {
                // SAFETY: row r alone touches this row of the gate, which outlives the call.
                let g = unsafe { rows_mut(gp, r, ff) };
                self.gate_fn.apply_times(g, &up[r * ff..(r + 1) * ff]);
            });
            layer.down.forward(gate, t, o, p)?;
            if let Some(n) = &layer.post_ffn_norm {
                rms_norm_in_place(o, n, self.eps);
            }
            add(x, o, hidden);
        }
        // The last row of every part, normalised, through the output projection together.
        let b = parts.len();
        let last = resize(&mut s.o, b * hidden);
        for (i, (part, &r0)) in parts.iter().zip(&starts).enumerate() {
            let r = r0 + part.tokens.len() - 1;
            last[i * hidden..(i + 1) * hidden].copy_from_slice(&x[r * hidden..(r + 1) * hidden]);
        }
        let h = resize(&mut s.h, b * hidden);
        rms_norm(last, &self.norm, self.eps, h);
        let logits = logits(self.output.as_ref(), &self.embedding, h, b, p)?;
        for part in parts.iter_mut() {
            part.cache.len = part.pos + part.tokens.len();
        }
        parts[0].cache.scratch = scratch;
        let vocab = logits.len() / b;
        Ok(logits.chunks_exact(vocab).map(<[f32]>::to_vec).collect())
    }

    fn kernel_share(&self) -> usize {
        self.layers
            .iter()
            .flat_map(|l| [&l.wq, &l.wk, &l.wv, &l.wo, &l.gate, &l.up, &l.down])
            .filter(|l| l.is_ours())
            .count()
    }
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

impl Cache {
    /// Makes room for `layers` and forgets positions from `pos` on (a sequence may go back and
    /// recompute). Fails when `pos` skips past what is cached.
    fn rewind(&mut self, layers: usize, pos: usize, kv_width: usize) -> Result<()> {
        if pos > self.len {
            candle_core::bail!("position {pos} skips past the {} cached positions", self.len)
        }
        self.k.resize_with(layers, Vec::new);
        self.v.resize_with(layers, Vec::new);
        for c in self.k.iter_mut().chain(self.v.iter_mut()) {
            c.truncate(pos * kv_width);
        }
        self.len = pos;
        Ok(())
    }
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

/// Activation precision: 16 bits, so that logits lie within 2e-3 (of the largest; 5e-4 on
/// Gemma 3) of f32 arithmetic on the same weights. 8 bits (llama.cpp's choice) land 2–6e-2 away
/// and flip near-ties — the default model's first word for "What is the capital of France?",
/// Gemma 3's continuations after a few words. `CORTEX_DECODE_BITS=8` (decode steps) and
/// `CORTEX_PREFILL_BITS=8` (prompts) take the 8-bit scheme for comparison; with the row-scaled
/// 16-bit kernels it is the slower one on AVX-512 VNNI hosts. BENCHMARKS.md has the figures.
fn precision(t: usize) -> Precision {
    static BITS: std::sync::OnceLock<[Precision; 2]> = std::sync::OnceLock::new();
    let bits = BITS.get_or_init(|| {
        let read = |var: &str| match std::env::var(var).as_deref() {
            Ok("8") => Precision::I8,
            _ => Precision::I16,
        };
        [read("CORTEX_DECODE_BITS"), read("CORTEX_PREFILL_BITS")]
    });
    bits[(t > 1) as usize]
}

/// cos and sin of position × θ^(−2i/d), `[position][head_dim / 2]`.
struct Rope {
    cos: Vec<f32>,
    sin: Vec<f32>,
    half: usize,
    positions: usize,
}

impl Rope {
    fn new(head_dim: usize, theta: f32, positions: usize) -> Self {
        let half = head_dim / 2;
        let (mut cos, mut sin) = (Vec::with_capacity(positions * half), Vec::with_capacity(positions * half));
        for p in 0..positions {
            for i in 0..half {
                let a = p as f32 * (1f32 / theta.powf((2 * i) as f32 / head_dim as f32));
                cos.push(a.cos());
                sin.push(a.sin());
            }
        }
        Self { cos, sin, half, positions }
    }

    /// Rotates every head of `row` for position `pos`: pairs (x₂ᵢ, x₂ᵢ₊₁) when `interleaved`
    /// (candle's `rope_i`, llama GGUF files), else (xᵢ, xᵢ₊d/2) (candle's `rope`, "NeoX").
    fn apply(&self, row: &mut [f32], pos: usize, interleaved: bool) {
        let h = self.half;
        let (cos, sin) = (&self.cos[pos * h..(pos + 1) * h], &self.sin[pos * h..(pos + 1) * h]);
        for head in row.chunks_exact_mut(2 * h) {
            for i in 0..h {
                let (ia, ib) = if interleaved { (2 * i, 2 * i + 1) } else { (i, i + h) };
                let (a, b) = (head[ia], head[ib]);
                head[ia] = a * cos[i] - b * sin[i];
                head[ib] = a * sin[i] + b * cos[i];
            }
        }
    }
}

/// The attention shape of a layer.
struct Heads {
    n_head: usize,
    n_kv_head: usize,
    head_dim: usize,
    scale: f32,
    /// Sliding-window layers see only this many most recent positions (their own included).
    window: Option<usize>,
}

impl Heads {
    /// Scaled by 1/√head_dim (Gemma 3's `query_pre_attn_scalar` is its head size too).
    fn new(n_head: usize, n_kv_head: usize, head_dim: usize, window: Option<usize>) -> Result<Self> {
        if n_head == 0 || n_kv_head == 0 || !n_head.is_multiple_of(n_kv_head) || !head_dim.is_multiple_of(2) {
            candle_core::bail!("unsupported head layout: {n_head} heads, {n_kv_head} kv heads, head size {head_dim}")
        }
        Ok(Heads { n_head, n_kv_head, head_dim, scale: 1.0 / (head_dim as f32).sqrt(), window })
    }
}

/// Causal grouped-query attention of new rows, each over the cached positions `seen` gives it
/// (rows of one sequence's prompt chunk, or decode rows of several sequences). Work items are
/// (row, up to four heads of one kv group) and independent: a long prefill spreads them over
/// candle's worker pool. Heads that share a kv head share each key and value row's reading,
/// which bounds attention over a long prompt (a single decode row keeps one head an item, so
/// that it still spreads over the threads).
fn attention(hs: &Heads, q: &[f32], seen: &[Seen], out: &mut [f32]) {
    let t = seen.len();
    let group = hs.n_head / hs.n_kv_head;
    let per_item = if t > 1 { group.min(4) } else { 1 };
    let chunks = group.div_ceil(per_item);
    let dst = out.as_mut_ptr() as usize;
    let one = |item: usize| {
        let (r, rest) = (item / (hs.n_kv_head * chunks), item % (hs.n_kv_head * chunks));
        let (g, c) = (rest / chunks, rest % chunks);
        let h0 = g * group + c * per_item;
        let Seen { kc, vc, end } = seen[r];
        let at = Attend { hs, q, kc, vc, r, g, end, dst };
        match (g * group + group - h0).min(per_item) {
            4 => at.heads::<4>(h0),
            3 => at.heads::<3>(h0),
            2 => at.heads::<2>(h0),
            _ => at.heads::<1>(h0),
        }
    };
    let items = t * hs.n_kv_head * chunks;
    // Below this many multiply-adds a hand-off to the pool costs more than it saves.
    const PARALLEL_FROM: usize = 1 << 16;
    if seen.iter().map(|s| s.end).sum::<usize>() * hs.n_head * hs.head_dim >= PARALLEL_FROM {
        candle_core::utils::barrier_pool().execute_chunked(items, |range| range.for_each(one));
    } else {
        (0..items).for_each(one);
    }
}

/// One row's attention against kv head `g`, for the positions `..end` it sees.
struct Attend<'a> {
    hs: &'a Heads,
    q: &'a [f32],
    kc: &'a [f32],
    vc: &'a [f32],
    r: usize,
    g: usize,
    end: usize,
    /// The `t × n_head·head_dim` output.
    dst: usize,
}

impl Attend<'_> {
    /// Position `j`'s row of kv head `g` in a cache.
    fn kv_row<'c>(&self, cache: &'c [f32], j: usize) -> &'c [f32] {
        let (hd, width) = (self.hs.head_dim, self.hs.n_kv_head * self.hs.head_dim);
        &cache[j * width + self.g * hd..j * width + (self.g + 1) * hd]
    }

    /// Heads `h0..h0 + H`: scores against each key, softmax, then Σ p·v with sixteen outputs of
    /// every head held in registers across all positions (accumulating into the output row
    /// instead loaded and stored it once per position).
    fn heads<const H: usize>(&self, h0: usize) {
        thread_local! {
            static SCORES: std::cell::RefCell<Vec<f32>> = const { std::cell::RefCell::new(Vec::new()) };
        }
        let hs = self.hs;
        let (hd, qw) = (hs.head_dim, hs.n_head * hs.head_dim);
        // A window of 0 (a malformed file) still sees the row itself.
        let start = hs.window.map_or(0, |w| self.end.saturating_sub(w.max(1)));
        let n = self.end - start;
        let qh: [&[f32]; H] = std::array::from_fn(|i| &self.q[self.r * qw + (h0 + i) * hd..][..hd]);
        // SAFETY: this item alone writes heads h0..h0+H of row r; `dst` outlives the call.
        let out = unsafe { std::slice::from_raw_parts_mut((self.dst as *mut f32).add(self.r * qw + h0 * hd), H * hd) };
        SCORES.with(|cell| {
            let mut scores = cell.borrow_mut();
            let sc = resize(&mut scores, H * n);
            for (jj, j) in (start..self.end).enumerate() {
                let d = dots::<H>(qh, self.kv_row(self.kc, j));
                (0..H).for_each(|i| sc[i * n + jj] = d[i] * hs.scale);
            }
            sc.chunks_exact_mut(n).for_each(softmax);
            let mut c = 0;
            while c < hd {
                let w = (hd - c).min(16);
                let mut acc = [[0f32; 16]; H];
                let probs: [&[f32]; H] = std::array::from_fn(|i| &sc[i * n..(i + 1) * n]);
                let vs = (start..self.end).map(|j| &self.kv_row(self.vc, j)[c..c + w]);
                if w == 16 {
                    weighted_sum16::<H>(probs, vs, &mut acc);
                } else {
                    for (jj, v) in vs.enumerate() {
                        (0..H).for_each(|i| (0..w).for_each(|l| acc[i][l] += probs[i][jj] * v[l]));
                    }
                }
                (0..H).for_each(|i| out[i * hd + c..i * hd + c + w].copy_from_slice(&acc[i][..w]));
                c += w;
            }
        });
    }
}

/// `acc[i] = Σ_j p[i][j] · v_j` over sixteen-wide value slices. The compiler kept neither
/// this nor [`dots`] in registers when written as loops over arrays, so on x86 they are written
/// with AVX2 and FMA (which the build's x86-64-v3 target guarantees).
fn weighted_sum16<'v, const H: usize>(p: [&[f32]; H], vs: impl Iterator<Item = &'v [f32]>, acc: &mut [[f32; 16]; H]) {
    #[cfg(all(target_arch = "x86_64", target_feature = "avx2", target_feature = "fma"))]
    {
        use std::arch::x86_64::*;
        // SAFETY: the features are compiled in (cfg above); every load reads 16 floats of a
        // 16-float slice (asserted) or an in-bounds probability.
        unsafe {
            let mut a = [[_mm256_setzero_ps(); 2]; H];
            for (j, v) in vs.enumerate() {
                assert_eq!(v.len(), 16);
                let (v0, v1) = (_mm256_loadu_ps(v.as_ptr()), _mm256_loadu_ps(v.as_ptr().add(8)));
                for i in 0..H {
                    let pi = _mm256_set1_ps(p[i][j]);
                    a[i][0] = _mm256_fmadd_ps(pi, v0, a[i][0]);
                    a[i][1] = _mm256_fmadd_ps(pi, v1, a[i][1]);
                }
            }
            for i in 0..H {
                _mm256_storeu_ps(acc[i].as_mut_ptr(), a[i][0]);
                _mm256_storeu_ps(acc[i].as_mut_ptr().add(8), a[i][1]);
            }
        }
    }
    #[cfg(not(all(target_arch = "x86_64", target_feature = "avx2", target_feature = "fma")))]
    for (j, v) in vs.enumerate() {
        (0..H).for_each(|i| (0..16).for_each(|l| acc[i][l] += p[i][j] * v[l]));
    }
}

/// `H` dot products against one key row, each over sixteen partial sums (two vector registers,
/// so that the multiply-adds' latency overlaps).
fn dots<const H: usize>(qs: [&[f32]; H], k: &[f32]) -> [f32; H] {
    let whole = k.len() / 16 * 16;
    let tail = |i: usize| qs[i][whole..].iter().zip(&k[whole..]).map(|(x, y)| x * y).sum::<f32>();
    assert!(qs.iter().all(|q| q.len() == k.len()));
    #[cfg(all(target_arch = "x86_64", target_feature = "avx2", target_feature = "fma"))]
    {
        use std::arch::x86_64::*;
        // SAFETY: the features are compiled in; offsets stay below `whole` ≤ every length.
        unsafe {
            let mut a = [[_mm256_setzero_ps(); 2]; H];
            for c in (0..whole).step_by(16) {
                let (k0, k1) = (_mm256_loadu_ps(k.as_ptr().add(c)), _mm256_loadu_ps(k.as_ptr().add(c + 8)));
                for i in 0..H {
                    a[i][0] = _mm256_fmadd_ps(_mm256_loadu_ps(qs[i].as_ptr().add(c)), k0, a[i][0]);
                    a[i][1] = _mm256_fmadd_ps(_mm256_loadu_ps(qs[i].as_ptr().add(c + 8)), k1, a[i][1]);
                }
            }
            std::array::from_fn(|i| {
                let mut lanes = [0f32; 8];
                _mm256_storeu_ps(lanes.as_mut_ptr(), _mm256_add_ps(a[i][0], a[i][1]));
                lanes.iter().sum::<f32>() + tail(i)
            })
        }
    }
    #[cfg(not(all(target_arch = "x86_64", target_feature = "avx2", target_feature = "fma")))]
    std::array::from_fn(|i| qs[i][..whole].iter().zip(&k[..whole]).map(|(x, y)| x * y).sum::<f32>() + tail(i))
}

fn softmax(xs: &mut [f32]) {
    let max = xs.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let mut sum = 0f32;
    for x in xs.iter_mut() {
        *x = exp(*x - max);
        sum += *x;
    }
    let inv = 1.0 / sum;
    xs.iter_mut().for_each(|x| *x *= inv);
}

/// Row-wise `x / sqrt(mean(x²) + eps) · w` over rows of `w.len()`, as candle's `rms_norm`; a
/// prompt's rows on the worker pool.
fn rms_norm(x: &[f32], w: &[f32], eps: f32, out: &mut [f32]) {
    let d = w.len();
    let op = out.as_mut_ptr() as usize;
    each_row(x.len() / d, |r| {
        let xr = &x[r * d..(r + 1) * d];
        let inv = 1.0 / (sum_squares(xr) / d as f32 + eps).sqrt();
        // SAFETY: row r alone writes this row of `out`, which outlives the call.
        let or = unsafe { rows_mut(op, r, d) };
        for ((o, v), g) in or.iter_mut().zip(xr).zip(w) {
            *o = v * inv * g;
        }
    });
}

/// [`rms_norm`] in place.
fn rms_norm_in_place(x: &mut [f32], w: &[f32], eps: f32) {
    let d = w.len();
    let xp = x.as_mut_ptr() as usize;
    each_row(x.len() / d, |r| {
        // SAFETY: row r alone touches this row of `x`, which outlives the call.
        let xr = unsafe { rows_mut(xp, r, d) };
        let inv = 1.0 / (sum_squares(xr) / d as f32 + eps).sqrt();
        xr.iter_mut().zip(w).for_each(|(v, g)| *v *= inv * g);
    });
}

/// Σx² in eight running sums, which the compiler keeps in a vector register: one running sum is
/// a chain of dependent adds as long as the row (these norms were 3 % of Gemma 3's prefill, with
/// the other thread waiting).
fn sum_squares(x: &[f32]) -> f32 {
    let mut acc = [0f32; 8];
    let chunks = x.chunks_exact(8);
    let tail: f32 = chunks.remainder().iter().map(|v| v * v).sum();
    for c in chunks {
        (0..8).for_each(|i| acc[i] += c[i] * c[i]);
    }
    acc.iter().sum::<f32>() + tail
}

/// Runs `f` for rows `0..t`: on the worker pool for a prompt, where the other thread would
/// otherwise wait through this layer's serial work (GELU's exponentials, RoPE); in place for a
/// decode step, where a hand-off costs more than the row.
fn each_row(t: usize, f: impl Fn(usize) + Sync) {
    if t >= 16 {
        candle_core::utils::barrier_pool().execute_chunked(t, |rows| rows.for_each(&f));
    } else {
        (0..t).for_each(f);
    }
}

/// Row `r` of `width` floats in the buffer at `base`.
///
/// # Safety
/// The buffer must hold row `r`, outlive the slice, and no other reference may touch the row.
unsafe fn rows_mut<'a>(base: usize, r: usize, width: usize) -> &'a mut [f32] {
    std::slice::from_raw_parts_mut((base as *mut f32).add(r * width), width)
}

/// `x += y` over rows of `width`, a prompt's rows on the worker pool.
fn add(x: &mut [f32], y: &[f32], width: usize) {
    let xp = x.as_mut_ptr() as usize;
    each_row(x.len() / width, |r| {
        // SAFETY: row r alone touches this row of `x`, which outlives the call.
        let xr = unsafe { rows_mut(xp, r, width) };
        xr.iter_mut().zip(&y[r * width..(r + 1) * width]).for_each(|(a, b)| *a += b);
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(super) fn data(n: usize, seed: u32) -> Vec<f32> {
        (0..n)
            .map(|i| (((i as u32).wrapping_mul(2654435761).wrapping_add(seed) >> 8) % 2000) as f32 / 1000.0 - 1.0)
            .collect()
    }

    pub(super) fn close(a: &[f32], b: &[f32]) -> f32 {
        a.iter().zip(b).fold(0f32, |m, (x, y)| m.max((x - y).abs()))
    }

    impl Gate {
        fn apply(self, x: f32) -> f32 {
            let mut v = [x];
            self.apply_times(&mut v, &[1.0]);
            v[0]
        }
    }

    #[test]
    fn exp_is_within_two_ulp_of_libm_over_the_range() {
        let ulp = |x: f32| f32::from_bits(x.to_bits() + 1) - x;
        for i in -87_000..=88_000 {
            let x = i as f32 / 1000.0 + 0.000_37;
            let (got, want) = (exp(x), (x as f64).exp());
            assert!((got as f64 - want).abs() <= 2.0 * ulp(want as f32) as f64, "exp({x}) = {got}, want {want}");
        }
        assert_eq!((exp(-100.0), exp(100.0)), (0.0, f32::INFINITY));
        assert!(exp(f32::NAN).is_nan());
        assert_eq!(Gate::Silu.apply(-100.0), 0.0);
        assert!((Gate::Silu.apply(2.0) - 2.0 / (1.0 + (-2.0f32).exp())).abs() < 1e-6);
    }

    #[test]
    fn gelu_is_the_tanh_approximation() {
        // Values of 0.5·x·(1 + tanh(√(2/π)·(x + 0.044715·x³))).
        for (x, want) in [(0.0f32, 0.0f32), (1.0, 0.841_192), (-1.0, -0.158_808), (3.0, 2.996_363)] {
            let got = Gate::GeluTanh.apply(x);
            assert!((got - want).abs() < 1e-5, "gelu({x}) = {got}");
        }
        // The σ form against the tanh form itself, over the range activations take (and far out,
        // where exp overflows to ∞ and the result must still be 0·x, not NaN).
        for i in -2000..=2000 {
            let x = i as f32 / 100.0;
            let tanh_form = 0.5 * x * (1.0 + (SQRT_2_OVER_PI * (x + 0.044_715 * x * x * x)).tanh());
            let got = Gate::GeluTanh.apply(x);
            assert!((got - tanh_form).abs() <= 1e-6 * (1.0 + x.abs()), "gelu({x}) = {got}, tanh form {tanh_form}");
        }
        assert_eq!(Gate::GeluTanh.apply(-200.0), 0.0);
    }

    /// The slice code computes what candle's ops compute (the models it replaces use those).
    #[test]
    fn norms_rope_and_attention_match_candle_ops() {
        let dev = Device::Cpu;
        let (hidden, n_head, n_kv_head, head_dim, t, pos) = (64, 4, 2, 16, 3, 5);
        // RMS norm.
        let x = data(t * hidden, 1);
        let w = data(hidden, 2);
        let mut ours = vec![0f32; t * hidden];
        rms_norm(&x, &w, 1e-5, &mut ours);
        let xt = Tensor::from_slice(&x, (t, hidden), &dev).unwrap();
        let theirs = candle_nn::ops::rms_norm(&xt, &Tensor::from_slice(&w, hidden, &dev).unwrap(), 1e-5).unwrap();
        assert!(close(&ours, &theirs.flatten_all().unwrap().to_vec1().unwrap()) < 1e-5);
        let mut inplace = x.clone();
        rms_norm_in_place(&mut inplace, &w, 1e-5);
        assert!(close(&inplace, &ours) < 1e-6);
        // A prompt's worth of rows (on the worker pool), a width that is not a multiple of 8.
        let (rows, width) = (37, 75);
        let (x, w) = (data(rows * width, 7), data(width, 8));
        let mut ours = vec![0f32; rows * width];
        rms_norm(&x, &w, 1e-6, &mut ours);
        let xt = Tensor::from_slice(&x, (rows, width), &dev).unwrap();
        let theirs = candle_nn::ops::rms_norm(&xt, &Tensor::from_slice(&w, width, &dev).unwrap(), 1e-6).unwrap();
        assert!(close(&ours, &theirs.flatten_all().unwrap().to_vec1().unwrap()) < 1e-5);
        let mut sum = x.clone();
        add(&mut sum, &ours, width);
        assert!(sum.iter().zip(x.iter().zip(&ours)).all(|(s, (a, b))| *s == a + b));

        // RoPE at positions pos..pos+t against rope_i / rope on (1, heads, t, head_dim).
        let rope = Rope::new(head_dim, 10_000., pos + t);
        let half = head_dim / 2;
        let c = Tensor::from_slice(&rope.cos, (pos + t, half), &dev).unwrap().narrow(0, pos, t).unwrap();
        let s = Tensor::from_slice(&rope.sin, (pos + t, half), &dev).unwrap().narrow(0, pos, t).unwrap();
        let qw = n_head * head_dim;
        let q = data(t * qw, 3);
        let qt = Tensor::from_slice(&q, (1, t, n_head, head_dim), &dev)
            .unwrap()
            .transpose(1, 2)
            .unwrap()
            .contiguous()
            .unwrap();
        for interleaved in [true, false] {
            let mut ours = q.clone();
            for r in 0..t {
                rope.apply(&mut ours[r * qw..(r + 1) * qw], pos + r, interleaved);
            }
            let theirs = if interleaved {
                candle_nn::rotary_emb::rope_i(&qt, &c, &s).unwrap()
            } else {
                candle_nn::rotary_emb::rope(&qt, &c, &s).unwrap()
            };
            let theirs = theirs.transpose(1, 2).unwrap();
            assert!(close(&ours, &theirs.flatten_all().unwrap().to_vec1().unwrap()) < 1e-5, "{interleaved}");
        }

        // Causal grouped-query attention of t new rows over pos cached + t new positions; the
        // second shape is big enough to run on the worker pool; the third has a sliding window;
        // the fourth is one decode row. Head layouts: groups of 2, 5 (an item of four heads and
        // one of one), 3 and 1, and head sizes that are not a multiple of 16.
        let layouts = [(n_head, n_kv_head, head_dim), (10, 2, 24), (9, 3, 64), (3, 3, 8)];
        let shapes = [(t, pos, None), (40, 30, None), (6, 20, Some(9)), (1, 70, None)];
        for ((n_head, n_kv_head, head_dim), (t, pos, window)) in
            layouts.into_iter().flat_map(|l| shapes.into_iter().map(move |s| (l, s)))
        {
            let qw = n_head * head_dim;
            let hs = Heads { n_head, n_kv_head, head_dim, scale: 1.0 / (head_dim as f32).sqrt(), window };
            let positions = pos + t;
            let q = data(t * qw, 3);
            let kvw = n_kv_head * head_dim;
            let (kc, vc) = (data(positions * kvw, 4), data(positions * kvw, 5));
            let mut ours = vec![0f32; t * qw];
            let seen: Vec<Seen> = (0..t).map(|r| Seen { kc: &kc, vc: &vc, end: pos + r + 1 }).collect();
            attention(&hs, &q, &seen, &mut ours);
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
            // Masked: future positions, and with a window those `window` or more behind.
            let mask: Vec<u8> = (0..t)
                .flat_map(|i| {
                    (0..positions).map(move |j| u8::from(j > pos + i || window.is_some_and(|w| j + w <= pos + i)))
                })
                .collect();
            let mask = Tensor::from_slice(&mask, (t, positions), &dev).unwrap();
            let neg = Tensor::new(f32::NEG_INFINITY, &dev).unwrap().broadcast_as(att.shape()).unwrap();
            let att = mask.broadcast_as(att.shape()).unwrap().where_cond(&neg, &att).unwrap();
            let att = candle_nn::ops::softmax_last_dim(&att).unwrap();
            let theirs = att.matmul(&vt.contiguous().unwrap()).unwrap().transpose(1, 2).unwrap();
            let e = close(&ours, &theirs.flatten_all().unwrap().to_vec1().unwrap());
            assert!(e < 1e-5, "{n_head}/{n_kv_head} heads of {head_dim}, t={t} pos={pos}: {e}");
        }
    }
}
