//! The CPU decoder's step: several sequences' rows through every layer together (each weight
//! read once for all of them), each row attending to its own sequence's KV cache.

use std::sync::Mutex;

use candle_core::Result;
use cortex_kernels::Precision;

use super::attention::{attention, Heads, Seen};
use super::linear::{logits, Embedding, Linear};
use super::ops::{add, each_row, gate_times, resize, rms_norm, rms_norm_in_place, rows_mut};
use super::rope::Rope;
use crate::engine::block::Block;
use crate::engine::kv::{KvCache, Part};
use crate::engine::spec::Gate;

/// Keys and values a layer asks the CPU to prefetch, all sequences of a step together: half an
/// L2 of 1 MiB (Zen 4; 2 MiB on recent Xeons), so that they are still there when attention
/// reads them. Past that, attention's own reads go to memory in order.
const PREFETCH_BYTES: usize = 512 << 10;

/// One transformer block: kernel matrices and f32 norm weights.
pub(super) type Layer = Block<Linear, Vec<f32>>;

/// A decoder-only transformer on the CPU: what [`super::load`] builds from a GGUF file.
pub struct Decoder {
    pub(super) embedding: Embedding,
    /// None with tied embeddings: the embedding matrix is used in place.
    pub(super) output: Option<Linear>,
    pub(super) layers: Vec<Layer>,
    pub(super) norm: Vec<f32>,
    /// RoPE tables and attention shapes, indexed by `Layer::kind`.
    pub(super) ropes: Vec<Rope>,
    pub(super) heads: Vec<Heads>,
    pub(super) gate: Gate,
    /// Gemma multiplies the embedding by √hidden.
    pub(super) embed_scale: Option<f32>,
    pub(super) hidden: usize,
    pub(super) eps: f32,
    /// Activation precision of decode steps and of steps with a prompt's rows.
    pub(super) precision: [Precision; 2],
    /// The step's buffers, reused from step to step.
    pub(super) scratch: Mutex<Scratch>,
}

impl Decoder {
    /// Runs `tokens` at positions `pos..` and returns the last position's logits.
    pub fn forward(&self, cache: &mut KvCache, tokens: &[u32], pos: usize) -> Result<Vec<f32>> {
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
            part.check(positions)?;
        }
        if parts.is_empty() {
            return Ok(Vec::new());
        }
        // Every kind of layer has the same widths; only windows and RoPE bases differ.
        let hs = &self.heads[0];
        let hidden = self.hidden;
        let (qw, kvw) = (hs.n_head * hs.head_dim, hs.n_kv_head * hs.head_dim);
        // One step at a time per decoder (the scheduler's thread runs them); another thread's
        // step waits for the scratch.
        let mut scratch = self.scratch.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let s = &mut *scratch;
        for part in parts.iter_mut() {
            part.cache.truncate(part.pos)?;
            part.cache.reserve_host(self.layers.len(), kvw, part.tokens.len())?;
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
        let p = self.precision[usize::from(parts.iter().any(|p| p.tokens.len() > 1))];
        let x = resize(&mut s.x, t * hidden);
        for (part, &r0) in parts.iter().zip(&starts) {
            self.embedding.lookup(part.tokens, &mut x[r0 * hidden..(r0 + part.tokens.len()) * hidden])?;
        }
        if let Some(scale) = self.embed_scale {
            x.iter_mut().for_each(|v| *v *= scale);
        }
        for (l, layer) in self.layers.iter().enumerate() {
            // This layer's cached keys and values, on their way in while its projections run
            // (the weights streamed since the last step pushed them out to memory): a few
            // hundred positions cost attention more in memory latency than in arithmetic.
            for part in parts.iter() {
                part.cache.prefetch_host(l, part.pos, PREFETCH_BYTES / parts.len());
            }
            let (rope, heads) = (&self.ropes[layer.kind], &self.heads[layer.kind]);
            let h = resize(&mut s.h, t * hidden);
            rms_norm(x, &layer.attn_norm, self.eps, h);
            let (q, k, v) = (resize(&mut s.q, t * qw), resize(&mut s.k, t * kvw), resize(&mut s.v, t * kvw));
            Linear::forward_many(&[&layer.q, &layer.k, &layer.v], h, t, &mut [&mut *q, &mut *k, &mut *v], p)?;
            if let (Some(qn), Some(kn)) = (&layer.q_norm, &layer.k_norm) {
                rms_norm_in_place(q, qn, self.eps);
                rms_norm_in_place(k, kn, self.eps);
            }
            let (qp, kp) = (q.as_mut_ptr() as usize, k.as_mut_ptr() as usize);
            each_row(t, |r| {
                // SAFETY: row r alone touches these rows of q and k, which outlive the call.
                let (qr, kr) = unsafe { (rows_mut(qp, r, qw), rows_mut(kp, r, kvw)) };
                rope.apply(qr, row_pos[r]);
                rope.apply(kr, row_pos[r]);
            });
            for (part, &r0) in parts.iter_mut().zip(&starts) {
                let rows = r0 * kvw..(r0 + part.tokens.len()) * kvw;
                part.cache.write_host(l, &k[rows.clone()], &v[rows])?;
            }
            let rows: Vec<_> = parts
                .iter()
                .map(|part| part.cache.host_rows(l, part.pos + part.tokens.len()))
                .collect::<Result<_>>()?;
            let seen: Vec<Seen> = parts
                .iter()
                .zip(&rows)
                .flat_map(|(part, (kc, vc))| {
                    (part.pos..part.pos + part.tokens.len()).map(move |p| Seen { kc, vc, end: p + 1 })
                })
                .collect();
            let att = resize(&mut s.att, t * qw);
            attention(heads, q, &seen, att);
            let o = resize(&mut s.o, t * hidden);
            layer.o.forward(att, t, o, p)?;
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
                gate_times(self.gate, g, &up[r * ff..(r + 1) * ff]);
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
            part.cache.advance(part.tokens.len());
        }
        let vocab = logits.len() / b;
        Ok(logits.chunks_exact(vocab).map(<[f32]>::to_vec).collect())
    }

    /// How many of the projections run on cortex's kernels.
    pub(super) fn kernel_share(&self) -> usize {
        self.layers.iter().flat_map(|l| l.projections()).filter(|l| l.is_ours()).count()
    }

    /// The kernel family that runs this model, as `cortex devices`, status and `/metrics` name
    /// it: cortex's kernels at this host's level and activation widths, or candle's where a
    /// projection's format is not one of ours.
    pub fn kernels(&self) -> String {
        let bits = |p: Precision| if p == Precision::I8 { 8 } else { 16 };
        let [decode, prefill] = self.precision;
        let all = self.layers.iter().flat_map(|l| l.projections()).count();
        let ours = self.kernel_share();
        let share =
            if ours == all { String::new() } else { format!(", {ours} of {all} projections (candle's the rest)") };
        format!(
            "cortex-{} ({}-bit decode, {}-bit prefill activations{share})",
            cortex_kernels::level().as_str(),
            bits(decode),
            bits(prefill)
        )
    }
}

#[derive(Default)]
pub(super) struct Scratch {
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
