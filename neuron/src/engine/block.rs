//! One transformer block's weights, generic over how a decoder holds a projection (`P`) and a
//! norm (`N`): the CPU decoder's kernel matrices and f32 slices, the batched decoder's candle
//! matmuls and tensors. Both read GGUF blocks through [`Block::from_gguf`], so the tensor names
//! and the checks live once.

use candle_core::quantized::{gguf_file, QTensor};
use candle_core::Result;

use super::spec::ArchSpec;

/// One block: attention, then the MLP, each after an RMS norm. The optional norms are Qwen 3's
/// and Gemma's (per-head q/k norms) and Gemma's alone (norms after attention and after the MLP).
pub struct Block<P, N> {
    pub attn_norm: N,
    pub q: P,
    pub k: P,
    pub v: P,
    pub o: P,
    pub q_norm: Option<N>,
    pub k_norm: Option<N>,
    pub post_attn_norm: Option<N>,
    pub ffn_norm: N,
    pub gate: P,
    pub up: P,
    pub down: P,
    pub post_ffn_norm: Option<N>,
    /// Which of the model's layer kinds this block is (`ArchSpec::kind_of`).
    pub kind: usize,
}

impl<P, N> Block<P, N> {
    /// Block `i` of a GGUF file: each tensor through `tensor`, then a projection through `proj`
    /// or a norm through `norm`; the optional norms where the file has them, which must be
    /// all of them where `spec` says the architecture has them.
    pub fn from_gguf(
        spec: &ArchSpec,
        ct: &gguf_file::Content,
        i: usize,
        mut tensor: impl FnMut(&str) -> Result<QTensor>,
        proj: impl Fn(QTensor) -> Result<P>,
        norm: impl Fn(QTensor) -> Result<N>,
    ) -> Result<Self> {
        let name = |n: &str| format!("blk.{i}.{n}.weight");
        let mut p = |n: &str| proj(tensor(&name(n))?);
        let (q, k, v, o) = (p("attn_q")?, p("attn_k")?, p("attn_v")?, p("attn_output")?);
        let (gate, up, down) = (p("ffn_gate")?, p("ffn_up")?, p("ffn_down")?);
        let mut n = |n: &str| norm(tensor(&name(n))?);
        let (attn_norm, ffn_norm) = (n("attn_norm")?, n("ffn_norm")?);
        let mut opt = |x: &str| ct.tensor_infos.contains_key(&name(x)).then(|| n(x)).transpose();
        let (q_norm, k_norm) = (opt("attn_q_norm")?, opt("attn_k_norm")?);
        let (post_attn_norm, post_ffn_norm) = (opt("post_attention_norm")?, opt("post_ffw_norm")?);
        let all = [&q_norm, &k_norm, &post_attn_norm, &post_ffn_norm].iter().all(|n| n.is_some());
        if spec.post_norms && !all {
            candle_core::bail!("a {} block lacks its q/k norms or post-norms", spec.arch)
        }
        Ok(Block {
            attn_norm,
            q,
            k,
            v,
            o,
            q_norm,
            k_norm,
            post_attn_norm,
            ffn_norm,
            gate,
            up,
            down,
            post_ffn_norm,
            kind: spec.kind_of(i),
        })
    }

    /// The same block with every norm passed through `f` (to the dtype a decoder computes in).
    pub fn map_norms<M>(self, f: impl Fn(N) -> Result<M>) -> Result<Block<P, M>> {
        Ok(Block {
            attn_norm: f(self.attn_norm)?,
            q: self.q,
            k: self.k,
            v: self.v,
            o: self.o,
            q_norm: self.q_norm.map(&f).transpose()?,
            k_norm: self.k_norm.map(&f).transpose()?,
            post_attn_norm: self.post_attn_norm.map(&f).transpose()?,
            ffn_norm: f(self.ffn_norm)?,
            gate: self.gate,
            up: self.up,
            down: self.down,
            post_ffn_norm: self.post_ffn_norm.map(&f).transpose()?,
            kind: self.kind,
        })
    }

    /// The block's seven projections.
    pub fn projections(&self) -> [&P; 7] {
        [&self.q, &self.k, &self.v, &self.o, &self.gate, &self.up, &self.down]
    }
}
