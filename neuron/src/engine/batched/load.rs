//! Loading the batched decoder: GGUF files (quantized matmuls, norms widened to f32) and
//! safetensors repositories (dense weights in the engine's dtype), both shaped by the model's
//! [`ArchSpec`].

use std::io::{Read, Seek};

use candle_core::quantized::{gguf_file, QMatMul};
use candle_core::{DType, Device, Result, Tensor};
use candle_nn::VarBuilder;

use super::{BatchDecoder, Proj};
use crate::engine::block::Block;
use crate::engine::spec::ArchSpec;

impl BatchDecoder {
    /// Whether a GGUF file is one this decoder runs: llama, qwen3 or gemma3, dense, with full
    /// RoPE and no biases.
    pub fn applies_to_gguf(spec: &ArchSpec, ct: &gguf_file::Content) -> bool {
        matches!(spec.arch.as_str(), "llama" | "qwen3" | "gemma3")
            && spec.dense_full_rope()
            && !ct.tensor_infos.contains_key("blk.0.attn_q.bias")
    }

    /// Loads a llama, qwen3 or gemma3 GGUF file `spec` describes onto `device`.
    pub fn from_gguf<R: Read + Seek>(
        spec: &ArchSpec,
        ct: &gguf_file::Content,
        reader: &mut R,
        device: &Device,
        positions: usize,
    ) -> Result<Self> {
        let mut get = |name: &str| ct.tensor(reader, name, device);
        let embed_q = get("token_embd.weight")?;
        let embed = embed_q.dequantize(device)?;
        let output = match get("output.weight") {
            Ok(t) => QMatMul::from_qtensor(t)?,
            // Tied embeddings: the quantized embedding is the output projection.
            Err(_) => QMatMul::from_qtensor(embed_q)?,
        };
        let norm = get("output_norm.weight")?.dequantize(device)?;
        let quantized = |t| Ok(Proj::Quantized(QMatMul::from_qtensor(t)?));
        let blocks = (0..spec.layers)
            .map(|i| Block::from_gguf(spec, ct, i, &mut get, quantized, |t| t.dequantize(device)))
            .collect::<Result<Vec<_>>>()?;
        let output = Proj::Quantized(output);
        Self::assemble(spec, embed, blocks, norm, output, DType::F32, device, positions)
    }

    /// Whether a safetensors config.json is one this decoder runs: llama or qwen3 without RoPE
    /// scaling or attention biases.
    pub fn applies_to_config(config: &serde_json::Value) -> bool {
        let model_type = config.get("model_type").and_then(|v| v.as_str()).unwrap_or_default();
        let off = |k: &str| config.get(k).is_none_or(|v| v.is_null() || v == &serde_json::Value::Bool(false));
        matches!(model_type, "llama" | "qwen3") && off("rope_scaling") && off("attention_bias") && off("mlp_bias")
    }

    /// Loads a llama or qwen3 safetensors repository (`config` is its config.json, `spec` what
    /// it describes) from `vb`.
    pub fn from_safetensors(
        spec: &ArchSpec,
        config: &serde_json::Value,
        vb: VarBuilder,
        dtype: DType,
        device: &Device,
        positions: usize,
    ) -> Result<Self> {
        let need =
            |v: Option<usize>, k: &str| v.ok_or_else(|| candle_core::Error::msg(format!("config.json has no {k}")));
        let (ff, vocab) = (need(spec.ffn, "intermediate_size")?, need(spec.vocab, "vocab_size")?);
        let (h, hd) = (spec.hidden, spec.head_dim);
        let (qw, kvw) = (spec.heads * hd, spec.kv_width());
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
        let mut blocks = Vec::with_capacity(spec.layers);
        for i in 0..spec.layers {
            let l = m.pp(format!("layers.{i}"));
            let (a, mlp) = (l.pp("self_attn"), l.pp("mlp"));
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
                kind: spec.kind_of(i),
            });
        }
        Self::assemble(spec, embed, blocks, norm, output, dtype, device, positions)
    }

    #[allow(clippy::too_many_arguments)]
    fn assemble(
        spec: &ArchSpec,
        embed: Tensor,
        blocks: Vec<Block<Proj, Tensor>>,
        norm: Tensor,
        output: Proj,
        dtype: DType,
        device: &Device,
        positions: usize,
    ) -> Result<Self> {
        spec.check_heads().map_err(candle_core::Error::msg)?;
        let ropes = spec
            .kinds
            .iter()
            .map(|kind| {
                let inv = kind.rope.inv_freqs(spec.head_dim);
                let angles: Vec<f32> = (0..positions).flat_map(|p| inv.iter().map(move |f| p as f32 * f)).collect();
                let angles = Tensor::from_vec(angles, (positions, inv.len()), device)?;
                Ok((angles.cos()?.to_dtype(dtype)?, angles.sin()?.to_dtype(dtype)?))
            })
            .collect::<Result<Vec<_>>>()?;
        let blocks = blocks.into_iter().map(|b| b.map_norms(|t| t.to_dtype(dtype))).collect::<Result<Vec<_>>>()?;
        Ok(Self {
            embed: embed.to_dtype(dtype)?,
            blocks,
            norm: norm.to_dtype(dtype)?,
            output,
            ropes,
            spec: spec.clone(),
            dtype,
            device: device.clone(),
        })
    }
}
