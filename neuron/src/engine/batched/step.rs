//! The batched decoder's step: every sequence's rows through each projection, norm and MLP
//! together, attention per sequence against its own cache, with Gemma 3's sliding windows as
//! masks.

use candle_core::{DType, Result, Tensor};

use super::{BatchDecoder, Part};
use crate::engine::spec::Gate;

impl BatchDecoder {
    /// Runs several sequences' steps as one and returns each part's last-position logits, in
    /// order. A part continues its cache or goes back into it (`pos` at most the cache's
    /// length). On an error no cache has moved on past `pos`.
    pub fn forward_batch(&self, parts: &mut [Part]) -> Result<Vec<Vec<f32>>> {
        let positions = self.positions();
        let vocab = self.embed.dims()[0];
        for part in parts.iter() {
            part.check(positions)?;
            if let Some(&bad) = part.tokens.iter().find(|&&t| t as usize >= vocab) {
                candle_core::bail!("token id {bad} is outside the vocabulary ({vocab})")
            }
        }
        if parts.is_empty() {
            return Ok(Vec::new());
        }
        for part in parts.iter_mut() {
            part.cache.truncate(part.pos)?;
        }
        let s = &self.spec;
        let (nh, nkv, hd, eps) = (s.heads, s.kv_heads, s.head_dim, s.eps);
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
        if let Some(scale) = s.embed_scale {
            x = (x * scale as f64)?;
        }
        let rope = |t: &Tensor, kind: usize| {
            let (cos, sin) = &row_ropes[kind];
            if s.kinds[kind].rope.interleaved {
                candle_nn::rotary_emb::rope_i(t, cos, sin)
            } else {
                candle_nn::rotary_emb::rope(t, cos, sin)
            }
        };
        // Per kind of layer, each part's first visible position and mask.
        let seen: Vec<Vec<(usize, Option<Tensor>)>> = s
            .kinds
            .iter()
            .map(|k| parts.iter().map(|p| self.visible(p.tokens.len(), p.pos, k.window)).collect::<Result<_>>())
            .collect::<Result<_>>()?;
        let scale = 1.0 / (hd as f64).sqrt();
        for (l, b) in self.blocks.iter().enumerate() {
            let h = candle_nn::ops::rms_norm(&x, &b.attn_norm, eps)?;
            // [1, rows, heads·hd] → [1, heads, rows, hd], per-head norms first where the model has them.
            let heads = |y: Tensor, n: usize, norm: &Option<Tensor>| -> Result<Tensor> {
                let y = y.reshape((1, rows, n, hd))?;
                let y = match norm {
                    Some(w) => candle_nn::ops::rms_norm(&y, w, eps)?,
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
                let (kc, vc) = part.cache.write_device(l, &rows_of(&k)?, &rows_of(&v)?, positions)?;
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
                Some(w) => candle_nn::ops::rms_norm(&y, w, eps),
                None => Ok(y),
            };
            x = (x + post(b.o.forward(&y)?, &b.post_attn_norm)?)?;
            let h = candle_nn::ops::rms_norm(&x, &b.ffn_norm, eps)?;
            let g = b.gate.forward(&h)?;
            let g = match s.gate {
                Gate::GeluTanh => g.gelu()?,
                Gate::Silu => candle_nn::ops::silu(&g)?,
            };
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
        let x = candle_nn::ops::rms_norm(&x, &self.norm, eps)?;
        let logits = self.output.forward(&x)?.to_dtype(DType::F32)?.to_vec2::<f32>()?;
        for part in parts.iter_mut() {
            part.cache.advance(part.tokens.len());
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
