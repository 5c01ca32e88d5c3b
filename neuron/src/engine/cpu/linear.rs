//! The CPU decoder's matrices: projections on cortex's kernels (or candle's `QMatMul` for
//! formats they lack), the token embedding kept quantized, and the model's two ends (embedding,
//! final norm, output projection) read from a GGUF file.

use candle_core::quantized::{gguf_file, QMatMul, QTensor};
use candle_core::{Device, Module, Result, Tensor};
use cortex_kernels::{Format, Precision, QWeight};

/// A projection: cortex's kernel where the format has one, candle's otherwise.
pub(super) enum Linear {
    Ours(QWeight),
    Candle { mm: QMatMul, n: usize, k: usize },
}

impl Linear {
    /// `t` on the kernels, or with `reference` (`CANDLE_DEQUANTIZE_ALL`: every matrix widened to
    /// f32 at load, f32 arithmetic, the reference the logit distances in BENCHMARKS.md are
    /// measured against) on candle's matmul, which then widens it too.
    pub(super) fn new(t: QTensor, reference: bool) -> Result<Self> {
        let (n, k) = t.shape().dims2()?;
        if let Some(format) = Format::from_ggml(t.dtype()).filter(|_| !reference) {
            let w = QWeight::from_gguf_bytes(format, n, k, &t.data()?).map_err(candle_core::Error::msg)?;
            return Ok(Linear::Ours(w));
        }
        Ok(Linear::Candle { mm: QMatMul::from_qtensor(t)?, n, k })
    }

    /// `out[rows × n] = x[rows × k] · Wᵀ`.
    pub(super) fn forward(&self, x: &[f32], rows: usize, out: &mut [f32], p: Precision) -> Result<()> {
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
    pub(super) fn forward_many(
        ls: &[&Linear],
        x: &[f32],
        rows: usize,
        outs: &mut [&mut [f32]],
        p: Precision,
    ) -> Result<()> {
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

    pub(super) fn n(&self) -> usize {
        match self {
            Linear::Ours(w) => w.n,
            Linear::Candle { n, .. } => *n,
        }
    }

    pub(super) fn is_ours(&self) -> bool {
        matches!(self, Linear::Ours(_))
    }
}

/// The token embedding, kept in its file format when the kernels know it.
pub(super) enum Embedding {
    Quantized(QWeight),
    Dense { rows: Vec<f32>, vocab: usize, hidden: usize },
}

impl Embedding {
    fn new(t: QTensor, reference: bool) -> Result<Self> {
        let (vocab, hidden) = t.shape().dims2()?;
        Ok(match Format::from_ggml(t.dtype()).filter(|_| !reference) {
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
    pub(super) fn lookup(&self, tokens: &[u32], x: &mut [f32]) -> Result<()> {
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
pub(super) fn ends(
    ct: &gguf_file::Content,
    reader: &mut (impl std::io::Read + std::io::Seek),
    reference: bool,
) -> Result<(Embedding, Vec<f32>, Option<Linear>)> {
    let embedding = Embedding::new(ct.tensor(reader, "token_embd.weight", &Device::Cpu)?, reference)?;
    let norm = dense(ct.tensor(reader, "output_norm.weight", &Device::Cpu)?)?;
    let output = output_layer(ct, reader, &embedding, reference)?;
    Ok((embedding, norm, output))
}

/// The output projection: its own matrix, or (tied embeddings) the quantized embedding in place.
fn output_layer(
    ct: &gguf_file::Content,
    reader: &mut (impl std::io::Read + std::io::Seek),
    embedding: &Embedding,
    reference: bool,
) -> Result<Option<Linear>> {
    match ct.tensor(reader, "output.weight", &Device::Cpu) {
        Ok(t) => Ok(Some(Linear::new(t, reference)?)),
        Err(_) if matches!(embedding, Embedding::Quantized(_)) => Ok(None),
        Err(_) => Ok(Some(Linear::new(ct.tensor(reader, "token_embd.weight", &Device::Cpu)?, reference)?)),
    }
}

/// Logits of `rows` normalised hidden states, `rows × vocab`.
pub(super) fn logits(
    output: Option<&Linear>,
    embedding: &Embedding,
    h: &[f32],
    rows: usize,
    p: Precision,
) -> Result<Vec<f32>> {
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

/// A tensor widened to f32 (norm weights).
pub(super) fn dense(t: QTensor) -> Result<Vec<f32>> {
    t.dequantize(&Device::Cpu)?.flatten_all()?.to_vec1::<f32>()
}
