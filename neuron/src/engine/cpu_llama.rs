//! The llama-family decoder on the CPU with cortex's quantized kernels (`cortex-kernels`): the same
//! computation as candle-transformers' `quantized_llama` (its RoPE, norms, attention and causal
//! mask helpers are used as they are), with every Q4_0 / Q4_1 / Q8_0 projection going through
//! [`Linear::Ours`] — a candle custom op — and any other format through candle's own `QMatMul`.
//! The token embedding stays quantized (rows are expanded on lookup) instead of being widened
//! to f32 at load.

use std::io::{Read, Seek};
use std::sync::Arc;

use candle_core::quantized::{gguf_file, QMatMul, QTensor};
use candle_core::{CpuStorage, CustomOp1, DType, Device, IndexOp, Layout, Module, Result, Shape, Tensor};

use cortex_kernels::{Format, QWeight};

/// A projection: cortex's kernel where the format has one, candle's otherwise.
pub enum Linear {
    Ours(Arc<QWeight>),
    Candle(QMatMul),
}

impl Linear {
    fn new(t: QTensor) -> Result<Self> {
        if let Some(format) = Format::from_ggml(t.dtype()) {
            let (n, k) = t.shape().dims2()?;
            let w = QWeight::from_gguf_bytes(format, n, k, &t.data()?).map_err(candle_core::Error::msg)?;
            return Ok(Linear::Ours(Arc::new(w)));
        }
        QMatMul::from_qtensor(t).map(Linear::Candle)
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        match self {
            Linear::Ours(w) => x.apply_op1_no_bwd(&OurMatmul(w.clone())),
            Linear::Candle(m) => m.forward(x),
        }
    }

    fn is_ours(&self) -> bool {
        matches!(self, Linear::Ours(_))
    }
}

struct OurMatmul(Arc<QWeight>);

impl CustomOp1 for OurMatmul {
    fn name(&self) -> &'static str {
        "cortex-qmatmul"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        let w = &self.0;
        let CpuStorage::F32(data) = storage else { candle_core::bail!("cortex-qmatmul takes f32 input") };
        let Some((start, end)) = layout.contiguous_offsets() else {
            candle_core::bail!("cortex-qmatmul takes a contiguous input")
        };
        let dims = layout.dims();
        if dims.last() != Some(&w.k) {
            candle_core::bail!("cortex-qmatmul: input {dims:?} does not end in {}", w.k)
        }
        let rows = (end - start) / w.k;
        let mut out = vec![0f32; rows * w.n];
        w.matmul(&data[start..end], rows, &mut out);
        let mut shape = dims.to_vec();
        *shape.last_mut().unwrap_or_else(|| unreachable!("dims end in k")) = w.n;
        Ok((CpuStorage::F32(out), Shape::from(shape)))
    }
}

/// The token embedding, kept in its file format when the kernels know it.
enum Embedding {
    Quantized(Arc<QWeight>),
    Dense(Tensor),
}

struct Layer {
    attn_norm: Tensor,
    wq: Linear,
    wk: Linear,
    wv: Linear,
    wo: Linear,
    ffn_norm: Tensor,
    gate: Linear,
    up: Linear,
    down: Linear,
}

pub struct CpuLlama {
    embedding: Embedding,
    layers: Vec<Layer>,
    norm: Tensor,
    output: Linear,
    cos: Tensor,
    sin: Tensor,
    hidden: usize,
    n_head: usize,
    n_kv_head: usize,
    head_dim: usize,
    eps: f64,
}

/// One sequence's KV cache, per layer.
#[derive(Default)]
pub struct Cache {
    kv: Vec<Option<(Tensor, Tensor)>>,
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

    pub fn from_gguf<R: Read + Seek>(ct: &gguf_file::Content, reader: &mut R, max_positions: usize) -> Result<Self> {
        let dev = Device::Cpu;
        let u =
            |k: &str| super::gguf_meta::u64(ct, k).ok_or_else(|| candle_core::Error::msg(format!("GGUF has no {k}")));
        let hidden = u("llama.embedding_length")? as usize;
        let n_head = u("llama.attention.head_count")? as usize;
        let n_kv_head = super::gguf_meta::u64(ct, "llama.attention.head_count_kv").unwrap_or(n_head as u64) as usize;
        let n_layer = u("llama.block_count")? as usize;
        let eps =
            ct.metadata.get("llama.attention.layer_norm_rms_epsilon").and_then(|v| v.to_f32().ok()).unwrap_or(1e-5)
                as f64;
        let theta = ct.metadata.get("llama.rope.freq_base").and_then(|v| v.to_f32().ok()).unwrap_or(10_000.);
        let head_dim = hidden / n_head;

        let mut tensor = |name: &str| ct.tensor(reader, name, &dev);
        let embd = tensor("token_embd.weight")?;
        let (embedding, tied) = match Format::from_ggml(embd.dtype()) {
            Some(_) => {
                let lin = Linear::new(embd)?;
                match lin {
                    Linear::Ours(w) => (Embedding::Quantized(w.clone()), Some(Linear::Ours(w))),
                    Linear::Candle(_) => unreachable!("a kernel format gives our Linear"),
                }
            }
            None => (Embedding::Dense(embd.dequantize(&dev)?), None),
        };
        let norm = tensor("output_norm.weight")?.dequantize(&dev)?;
        let output = match tensor("output.weight") {
            Ok(t) => Linear::new(t)?,
            // Tied embeddings (SmolLM2): the output projection is the embedding matrix.
            Err(_) => match tied {
                Some(l) => l,
                None => Linear::new(ct.tensor(reader, "token_embd.weight", &dev)?)?,
            },
        };
        let mut layers = Vec::with_capacity(n_layer);
        for i in 0..n_layer {
            let mut t = |n: &str| ct.tensor(reader, &format!("blk.{i}.{n}.weight"), &dev);
            layers.push(Layer {
                attn_norm: t("attn_norm")?.dequantize(&dev)?,
                wq: Linear::new(t("attn_q")?)?,
                wk: Linear::new(t("attn_k")?)?,
                wv: Linear::new(t("attn_v")?)?,
                wo: Linear::new(t("attn_output")?)?,
                ffn_norm: t("ffn_norm")?.dequantize(&dev)?,
                gate: Linear::new(t("ffn_gate")?)?,
                up: Linear::new(t("ffn_up")?)?,
                down: Linear::new(t("ffn_down")?)?,
            });
        }
        let (cos, sin) = rope_tables(head_dim, theta, max_positions)?;
        tracing::debug!(
            ours = layers
                .iter()
                .flat_map(|l| [&l.wq, &l.wk, &l.wv, &l.wo, &l.gate, &l.up, &l.down])
                .filter(|l| l.is_ours())
                .count(),
            output_ours = output.is_ours(),
            "cortex kernels on llama projections"
        );
        Ok(Self { embedding, layers, norm, output, cos, sin, hidden, n_head, n_kv_head, head_dim, eps })
    }

    pub fn max_positions(&self) -> usize {
        self.cos.dim(0).unwrap_or(0)
    }

    fn embed(&self, tokens: &[u32]) -> Result<Tensor> {
        match &self.embedding {
            Embedding::Quantized(w) => {
                let mut out = vec![0f32; tokens.len() * self.hidden];
                for (row, &t) in out.chunks_exact_mut(self.hidden).zip(tokens) {
                    if t as usize >= w.n {
                        candle_core::bail!("token id {t} is outside the vocabulary ({})", w.n)
                    }
                    w.dequantize_row(t as usize, row);
                }
                Tensor::from_vec(out, (1, tokens.len(), self.hidden), &Device::Cpu)
            }
            Embedding::Dense(e) => {
                let ids = Tensor::new(tokens, &Device::Cpu)?;
                e.index_select(&ids, 0)?.unsqueeze(0)
            }
        }
    }

    /// Runs `tokens` at positions `pos..` and returns the last position's logits.
    pub fn forward(&self, cache: &mut Cache, tokens: &[u32], pos: usize) -> Result<Tensor> {
        let t = tokens.len();
        if pos + t > self.max_positions() {
            candle_core::bail!("position {} is past the model's {} positions", pos + t, self.max_positions())
        }
        cache.kv.resize(self.layers.len(), None);
        if pos == 0 {
            cache.kv.iter_mut().for_each(|c| *c = None);
        }
        let mask =
            if t > 1 { Some(candle_transformers::utils::build_causal_mask(t, pos, &Device::Cpu)?) } else { None };
        let mut x = self.embed(tokens)?;
        for (layer, kv) in self.layers.iter().zip(cache.kv.iter_mut()) {
            let h = candle_nn::ops::rms_norm(&x, &layer.attn_norm, self.eps as f32)?;
            let h = self.attention(layer, &h, kv, mask.as_ref(), pos)?;
            x = (h + x)?;
            let h = candle_nn::ops::rms_norm(&x, &layer.ffn_norm, self.eps as f32)?;
            let gate = candle_nn::ops::silu(&layer.gate.forward(&h)?)?;
            let h = layer.down.forward(&(gate * layer.up.forward(&h)?)?)?;
            x = (h + x)?;
        }
        let x = candle_nn::ops::rms_norm(&x.i((.., t - 1..t, ..))?, &self.norm, self.eps as f32)?;
        self.output.forward(&x)?.squeeze(1)
    }

    fn attention(
        &self,
        l: &Layer,
        x: &Tensor,
        kv: &mut Option<(Tensor, Tensor)>,
        mask: Option<&Tensor>,
        pos: usize,
    ) -> Result<Tensor> {
        let (b, t, _) = x.dims3()?;
        let heads = |y: Tensor, n: usize| y.reshape((b, t, n, self.head_dim))?.transpose(1, 2)?.contiguous();
        let q = heads(l.wq.forward(x)?, self.n_head)?;
        let k = heads(l.wk.forward(x)?, self.n_kv_head)?;
        let v = heads(l.wv.forward(x)?, self.n_kv_head)?;
        let cos = self.cos.narrow(0, pos, t)?;
        let sin = self.sin.narrow(0, pos, t)?;
        // llama GGUF files store q/k permuted for interleaved rotation.
        let q = candle_nn::rotary_emb::rope_i(&q, &cos, &sin)?;
        let k = candle_nn::rotary_emb::rope_i(&k, &cos, &sin)?;
        let (k, v) = match kv.take() {
            Some((kc, vc)) if pos > 0 => (Tensor::cat(&[&kc, &k], 2)?, Tensor::cat(&[&vc, &v], 2)?),
            _ => (k, v),
        };
        *kv = Some((k.clone(), v.clone()));
        let rep = self.n_head / self.n_kv_head;
        let k = candle_transformers::utils::repeat_kv(k, rep)?;
        let v = candle_transformers::utils::repeat_kv(v, rep)?;
        let att = (q.matmul(&k.t()?)? / (self.head_dim as f64).sqrt())?;
        let att = match mask {
            Some(m) => {
                let neg = Tensor::new(f32::NEG_INFINITY, &Device::Cpu)?.broadcast_as(att.shape())?;
                m.broadcast_as(att.shape())?.where_cond(&neg, &att)?
            }
            None => att,
        };
        let att = candle_nn::ops::softmax_last_dim(&att)?;
        let y = att.matmul(&v.contiguous()?)?;
        let y = y.transpose(1, 2)?.reshape((b, t, self.n_head * self.head_dim))?;
        l.wo.forward(&y)
    }
}

/// cos and sin of position × frequency, as candle's llama computes them.
fn rope_tables(head_dim: usize, theta: f32, positions: usize) -> Result<(Tensor, Tensor)> {
    let freqs: Vec<f32> = (0..head_dim).step_by(2).map(|i| 1f32 / theta.powf(i as f32 / head_dim as f32)).collect();
    let freqs = Tensor::new(freqs.as_slice(), &Device::Cpu)?;
    let idx = Tensor::arange(0, positions as u32, &Device::Cpu)?.to_dtype(DType::F32)?.reshape((positions, 1))?;
    let angles = idx.matmul(&freqs.reshape((1, freqs.elem_count()))?)?;
    Ok((angles.cos()?, angles.sin()?))
}
