//! Rotary position embeddings on the CPU: a table of cos and sin per position, applied to a
//! row's heads in place.

use crate::engine::spec;

/// cos and sin of position × θ^(−2i/d), `[position][head_dim / 2]`.
pub(super) struct Rope {
    cos: Vec<f32>,
    sin: Vec<f32>,
    half: usize,
    interleaved: bool,
    pub(super) positions: usize,
}

impl Rope {
    pub(super) fn new(rope: &spec::Rope, head_dim: usize, positions: usize) -> Self {
        let inv = rope.inv_freqs(head_dim);
        let half = inv.len();
        let (mut cos, mut sin) = (Vec::with_capacity(positions * half), Vec::with_capacity(positions * half));
        for p in 0..positions {
            for f in &inv {
                let a = p as f32 * f;
                cos.push(a.cos());
                sin.push(a.sin());
            }
        }
        Self { cos, sin, half, interleaved: rope.interleaved, positions }
    }

    /// Rotates every head of `row` for position `pos`: pairs (x₂ᵢ, x₂ᵢ₊₁) when interleaved
    /// (candle's `rope_i`, llama GGUF files), else (xᵢ, xᵢ₊d/2) (candle's `rope`, "NeoX").
    pub(super) fn apply(&self, row: &mut [f32], pos: usize) {
        let h = self.half;
        let (cos, sin) = (&self.cos[pos * h..(pos + 1) * h], &self.sin[pos * h..(pos + 1) * h]);
        for head in row.chunks_exact_mut(2 * h) {
            for i in 0..h {
                let (ia, ib) = if self.interleaved { (2 * i, 2 * i + 1) } else { (i, i + h) };
                let (a, b) = (head[ia], head[ib]);
                head[ia] = a * cos[i] - b * sin[i];
                head[ib] = a * sin[i] + b * cos[i];
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::cpu::tests::{close, data};
    use candle_core::{Device, Tensor};

    /// RoPE at positions pos..pos+t against candle's rope_i / rope on (1, heads, t, head_dim).
    #[test]
    fn rope_matches_candles() {
        let dev = Device::Cpu;
        let (n_head, head_dim, t, pos) = (4, 16, 3, 5);
        let half = head_dim / 2;
        let qw = n_head * head_dim;
        let q = data(t * qw, 3);
        let qt = Tensor::from_slice(&q, (1, t, n_head, head_dim), &dev)
            .unwrap()
            .transpose(1, 2)
            .unwrap()
            .contiguous()
            .unwrap();
        for interleaved in [true, false] {
            let rope = Rope::new(&spec::Rope { theta: 10_000., interleaved }, head_dim, pos + t);
            let c = Tensor::from_slice(&rope.cos, (pos + t, half), &dev).unwrap().narrow(0, pos, t).unwrap();
            let s = Tensor::from_slice(&rope.sin, (pos + t, half), &dev).unwrap().narrow(0, pos, t).unwrap();
            let mut ours = q.clone();
            for r in 0..t {
                rope.apply(&mut ours[r * qw..(r + 1) * qw], pos + r);
            }
            let theirs = if interleaved {
                candle_nn::rotary_emb::rope_i(&qt, &c, &s).unwrap()
            } else {
                candle_nn::rotary_emb::rope(&qt, &c, &s).unwrap()
            };
            let theirs = theirs.transpose(1, 2).unwrap();
            assert!(close(&ours, &theirs.flatten_all().unwrap().to_vec1().unwrap()) < 1e-5, "{interleaved}");
        }
    }
}
