//! One description of a decoder's architecture, read once from a GGUF header or a safetensors
//! `config.json`: widths, head layout, norms' epsilon, RoPE and attention window per kind of
//! layer, the MLP's gate, the embedding scale, the trained context and what a token of KV cache
//! costs. The CPU decoder, the batched decoder, `ModelWeights` and the memory estimate all read
//! a model's shape here instead of each parsing the metadata its own way.

use candle_core::quantized::gguf_file;
use candle_core::DType;

use super::{gguf_meta, EngineError};

/// The MLP's gate activation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Gate {
    /// SwiGLU (llama, qwen).
    Silu,
    /// GeGLU with the tanh approximation of GELU (Gemma).
    GeluTanh,
}

/// Rotary position embedding of one kind of layer.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rope {
    /// The base θ: position p turns pair i by p·θ^(−2i/d).
    pub theta: f32,
    /// Pairs (x₂ᵢ, x₂ᵢ₊₁) (llama GGUF files, whose q and k rows are permuted for it; candle's
    /// `rope_i`) or halves (xᵢ, xᵢ₊d/2) ("NeoX": Hugging Face layouts, qwen, Gemma; `rope`).
    pub interleaved: bool,
}

impl Rope {
    /// θ^(−2i/d) for the `head_dim / 2` pairs of a head: position p's angles are p times these.
    pub fn inv_freqs(&self, head_dim: usize) -> Vec<f32> {
        (0..head_dim / 2).map(|i| 1f32 / self.theta.powf((2 * i) as f32 / head_dim as f32)).collect()
    }
}

/// What differs between kinds of layers in one model: Gemma 3's global layers and its local
/// (sliding-window) ones; every other model here has one kind.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LayerKind {
    pub rope: Rope,
    /// Positions a row sees, its own included (`None`: all before it). At least 1.
    pub window: Option<usize>,
}

/// A decoder-only transformer's architecture.
#[derive(Debug, Clone, PartialEq)]
pub struct ArchSpec {
    /// `general.architecture` or config.json's `model_type`: llama, qwen3, gemma3, …
    pub arch: String,
    pub layers: usize,
    /// The residual stream's width.
    pub hidden: usize,
    pub heads: usize,
    pub kv_heads: usize,
    pub head_dim: usize,
    /// Dimensions of each head that RoPE turns (the decoders here need all of them).
    pub rope_dim: usize,
    /// The MLP's inner width, where the file says.
    pub ffn: Option<usize>,
    /// The vocabulary's size, where the file says.
    pub vocab: Option<usize>,
    /// The context the model was trained for, where the file says.
    pub context: Option<usize>,
    /// RMS norms' epsilon.
    pub eps: f32,
    /// Kinds of layers, indexed by [`ArchSpec::kind_of`].
    pub kinds: Vec<LayerKind>,
    /// Every `pattern`-th layer (1-based) is kind 0, the others kind 1; 1: all kind 0.
    pub pattern: usize,
    /// Gemma multiplies the embedding by √hidden.
    pub embed_scale: Option<f32>,
    pub gate: Gate,
    /// Mixture-of-experts models have experts (the decoders here run dense models only).
    pub experts: usize,
    /// Whether each block must have q/k norms and norms after attention and MLP (Gemma 3).
    pub post_norms: bool,
}

/// `kinds` index of Gemma 3's global (full attention) layers and of its sliding-window ones.
const GLOBAL: usize = 0;
const LOCAL: usize = 1;

fn bad(what: impl std::fmt::Display) -> EngineError {
    EngineError::Format(what.to_string())
}

impl ArchSpec {
    /// Reads the `{arch}.*` keys of a GGUF header (llama.cpp's names).
    pub fn from_gguf(ct: &gguf_file::Content) -> Result<Self, EngineError> {
        let arch =
            gguf_meta::string(ct, "general.architecture").ok_or_else(|| bad("GGUF has no general.architecture"))?;
        let key = |k: &str| format!("{arch}.{k}");
        let u = |k: &str| gguf_meta::u64(ct, &key(k)).map(|v| v as usize);
        let need = |k: &str| u(k).ok_or_else(|| bad(format!("GGUF has no {}", key(k))));
        // A number of any type, as f32.
        let f = |k: &str| {
            let v = gguf_meta::get(ct, &key(k))?;
            v.to_f32().ok().or_else(|| gguf_meta::value_u64(v).map(|u| u as f32))
        };
        let (hidden, heads) = (need("embedding_length")?, need("attention.head_count")?);
        let head_dim = u("attention.key_length").unwrap_or(hidden / heads.max(1));
        let gemma = arch == "gemma3";
        let one = |interleaved: bool, theta: f32| LayerKind { rope: Rope { theta, interleaved }, window: None };
        let (kinds, pattern) = if gemma {
            let global = one(false, f("rope.freq_base").unwrap_or(1_000_000.));
            let local = LayerKind {
                rope: Rope { theta: f("rope.local_freq_base").unwrap_or(10_000.), interleaved: false },
                window: Some(need("attention.sliding_window")?.max(1)),
            };
            (vec![global, local], u("attention.sliding_window_type").unwrap_or(6).max(1))
        } else {
            // llama.cpp permutes llama files' q and k rows for interleaved RoPE; the rest are NeoX.
            (vec![one(arch == "llama", f("rope.freq_base").unwrap_or(10_000.))], 1)
        };
        let tensor_rows = |name: &str| ct.tensor_infos.get(name).and_then(|t| t.shape.dims2().ok()).map(|d| d.0);
        Ok(Self {
            layers: need("block_count")?,
            hidden,
            heads,
            kv_heads: u("attention.head_count_kv").unwrap_or(heads),
            head_dim,
            rope_dim: u("rope.dimension_count").unwrap_or(head_dim),
            ffn: u("feed_forward_length").or_else(|| tensor_rows("blk.0.ffn_up.weight")),
            vocab: tensor_rows("token_embd.weight").or_else(|| u("vocab_size")),
            context: u("context_length"),
            eps: f("attention.layer_norm_rms_epsilon").unwrap_or(if gemma { 1e-6 } else { 1e-5 }),
            kinds,
            pattern,
            embed_scale: gemma.then(|| (hidden as f32).sqrt()),
            gate: if gemma { Gate::GeluTanh } else { Gate::Silu },
            experts: u("expert_count").unwrap_or(0),
            post_norms: gemma,
            arch,
        })
    }

    /// Reads a Hugging Face `config.json` (llama, qwen3, gemma3 and their relatives' names).
    pub fn from_config(cfg: &serde_json::Value) -> Result<Self, EngineError> {
        let arch = cfg.get("model_type").and_then(|v| v.as_str()).unwrap_or_default().to_string();
        let u = |k: &str| cfg.get(k).and_then(|v| v.as_u64()).map(|v| v as usize);
        let need = |k: &str| u(k).ok_or_else(|| bad(format!("config.json has no {k}")));
        let f = |k: &str| cfg.get(k).and_then(|v| v.as_f64());
        let (hidden, heads) = (need("hidden_size")?, need("num_attention_heads")?);
        let layers = need("num_hidden_layers")?;
        let head_dim = u("head_dim").unwrap_or(hidden / heads.max(1));
        let theta = f("rope_theta").unwrap_or(10_000.) as f32;
        let global = LayerKind { rope: Rope { theta, interleaved: false }, window: None };
        let gemma = arch.starts_with("gemma3");
        let (kinds, pattern) = if gemma {
            let local = LayerKind {
                rope: Rope { theta: f("rope_local_base_freq").unwrap_or(10_000.) as f32, interleaved: false },
                window: Some(need("sliding_window")?.max(1)),
            };
            (vec![global, local], gemma3_pattern(cfg)?)
        } else {
            (vec![global], 1)
        };
        let act = ["hidden_activation", "hidden_act"].iter().find_map(|k| cfg.get(*k)?.as_str());
        let gate = match act {
            Some("gelu_pytorch_tanh" | "gelu_new" | "gelu_fast") => Gate::GeluTanh,
            _ => Gate::Silu,
        };
        Ok(Self {
            arch,
            layers,
            hidden,
            heads,
            kv_heads: u("num_key_value_heads").unwrap_or(heads),
            head_dim,
            rope_dim: head_dim,
            ffn: u("intermediate_size"),
            vocab: u("vocab_size"),
            context: u("max_position_embeddings"),
            eps: f("rms_norm_eps").unwrap_or(1e-6) as f32,
            kinds,
            pattern,
            embed_scale: gemma.then(|| (hidden as f32).sqrt()),
            gate,
            experts: u("num_experts").or_else(|| u("num_local_experts")).unwrap_or(0),
            post_norms: gemma,
        })
    }

    /// Layer `i`'s index into [`ArchSpec::kinds`].
    pub fn kind_of(&self, i: usize) -> usize {
        if self.kinds.len() == 1 || (i + 1).is_multiple_of(self.pattern) {
            GLOBAL
        } else {
            LOCAL
        }
    }

    /// Bytes one position of KV cache takes, keys and values of every layer, in `dtype`.
    pub fn kv_bytes_per_token(&self, dtype: DType) -> u64 {
        (2 * self.layers * self.kv_heads * self.head_dim * dtype.size_in_bytes()) as u64
    }

    /// Keys and values of one position of one layer: `kv_heads × head_dim` numbers.
    pub fn kv_width(&self) -> usize {
        self.kv_heads * self.head_dim
    }

    /// Whether the decoders here can run this shape: dense, RoPE over whole heads, grouped
    /// heads, an even head size.
    pub fn check_heads(&self) -> Result<(), String> {
        let (h, kv, d) = (self.heads, self.kv_heads, self.head_dim);
        if h == 0 || kv == 0 || !h.is_multiple_of(kv) || d == 0 || !d.is_multiple_of(2) {
            return Err(format!("unsupported head layout: {h} heads, {kv} kv heads, head size {d}"));
        }
        Ok(())
    }

    /// Dense, with RoPE over whole heads: what both of cortex's decoders run.
    pub fn dense_full_rope(&self) -> bool {
        self.experts == 0 && self.rope_dim == self.head_dim
    }
}

/// Gemma 3's period of global layers in a config.json: `sliding_window_pattern`, else the
/// first `full_attention` in `layer_types` (which must then repeat), else 6.
fn gemma3_pattern(cfg: &serde_json::Value) -> Result<usize, EngineError> {
    if let Some(p) = cfg.get("sliding_window_pattern").and_then(|v| v.as_u64()) {
        return Ok((p as usize).max(1));
    }
    let Some(types) = cfg.get("layer_types").and_then(|v| v.as_array()) else { return Ok(6) };
    let full: Vec<bool> = types.iter().map(|t| t.as_str() == Some("full_attention")).collect();
    let pattern = full.iter().position(|&f| f).map_or(full.len().max(1), |i| i + 1);
    if full.iter().enumerate().any(|(i, &f)| f != (i + 1).is_multiple_of(pattern)) {
        return Err(bad("config.json's layer_types is not a repeating pattern of sliding and full layers"));
    }
    Ok(pattern)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::{write_tiny_gguf, GgufArch, TinyLlama};

    fn gguf(arch: GgufArch) -> ArchSpec {
        let dir = std::env::temp_dir().join(format!("cortex-spec-{arch:?}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("model.gguf");
        write_tiny_gguf(&path, TinyLlama { layers: 6, ..Default::default() }, arch).unwrap();
        let ct = gguf_file::Content::read(&mut std::fs::File::open(&path).unwrap()).unwrap();
        let _ = std::fs::remove_dir_all(&dir);
        ArchSpec::from_gguf(&ct).unwrap()
    }

    #[test]
    fn a_llama_gguf_reads_as_one_kind_of_layer_with_interleaved_rope() {
        let s = gguf(GgufArch::Llama);
        assert_eq!(s.arch, "llama");
        let t = TinyLlama::default();
        assert_eq!((s.layers, s.hidden, s.heads, s.kv_heads, s.head_dim), (6, t.embedding, t.heads, t.kv_heads, 16));
        assert_eq!((s.ffn, s.context, s.rope_dim), (Some(t.feed_forward), Some(t.context), 16));
        // 256 bytes, 4 merges, 3 special tokens.
        assert_eq!(s.vocab, Some(263));
        assert_eq!(s.eps, 1e-5);
        assert_eq!(s.kinds, vec![LayerKind { rope: Rope { theta: 10_000., interleaved: true }, window: None }]);
        assert!((0..6).all(|i| s.kind_of(i) == 0));
        assert_eq!((s.gate, s.embed_scale, s.post_norms), (Gate::Silu, None, false));
        assert!(s.dense_full_rope() && s.check_heads().is_ok());
        // 2 × 6 layers × 2 kv heads × 16 dims × 4 bytes.
        assert_eq!(s.kv_bytes_per_token(DType::F32), 2 * 6 * 2 * 16 * 4);
        assert_eq!(s.kv_bytes_per_token(DType::BF16), 2 * 6 * 2 * 16 * 2);
        assert!(!gguf(GgufArch::Qwen3).kinds[0].rope.interleaved, "qwen3 files are NeoX");
    }

    /// The tiny Gemma 3 has a window of 4 and every 2nd layer global (`sliding_window_type`).
    #[test]
    fn a_gemma3_gguf_reads_its_global_and_local_layers() {
        let s = gguf(GgufArch::Gemma3);
        assert_eq!(s.kinds.len(), 2);
        assert_eq!(s.kinds[0], LayerKind { rope: Rope { theta: 10_000., interleaved: false }, window: None });
        assert_eq!(s.kinds[1], LayerKind { rope: Rope { theta: 1_000., interleaved: false }, window: Some(4) });
        let kinds: Vec<usize> = (0..6).map(|i| s.kind_of(i)).collect();
        assert_eq!(kinds, [1, 0, 1, 0, 1, 0]);
        assert_eq!((s.gate, s.embed_scale, s.post_norms), (Gate::GeluTanh, Some(8.0), true));
    }

    #[test]
    fn a_config_json_reads_as_the_same_description() {
        let cfg = serde_json::json!({
            "model_type": "qwen3", "vocab_size": 151936, "hidden_size": 1024, "intermediate_size": 3072,
            "num_hidden_layers": 28, "num_attention_heads": 16, "num_key_value_heads": 8, "head_dim": 128,
            "max_position_embeddings": 40960, "rms_norm_eps": 1e-6, "rope_theta": 1000000, "hidden_act": "silu",
        });
        let s = ArchSpec::from_config(&cfg).unwrap();
        assert_eq!(s.arch, "qwen3");
        assert_eq!((s.layers, s.hidden, s.heads, s.kv_heads, s.head_dim), (28, 1024, 16, 8, 128));
        assert_eq!((s.ffn, s.vocab, s.context), (Some(3072), Some(151936), Some(40960)));
        assert_eq!((s.eps, s.gate, s.embed_scale), (1e-6, Gate::Silu, None));
        assert_eq!(s.kinds, vec![LayerKind { rope: Rope { theta: 1e6, interleaved: false }, window: None }]);
        assert_eq!(s.kv_bytes_per_token(DType::BF16), 2 * 28 * 8 * 128 * 2);
        // Only what the memory estimate needs: no head_dim (hidden / heads), no vocab or MLP width.
        let s = ArchSpec::from_config(&serde_json::json!({
            "num_hidden_layers": 2, "num_attention_heads": 4, "hidden_size": 64,
        }))
        .unwrap();
        assert_eq!((s.head_dim, s.kv_heads, s.vocab, s.ffn, s.context), (16, 4, None, None, None));
        let err = ArchSpec::from_config(&serde_json::json!({ "hidden_size": 64 })).unwrap_err();
        assert!(err.to_string().contains("num_attention_heads"), "{err}");
    }

    #[test]
    fn a_gemma3_config_json_reads_its_layer_pattern() {
        let base = serde_json::json!({
            "model_type": "gemma3_text", "hidden_size": 640, "num_hidden_layers": 6, "num_attention_heads": 4,
            "num_key_value_heads": 1, "head_dim": 256, "sliding_window": 512, "rope_theta": 1000000.0,
            "rope_local_base_freq": 10000.0, "hidden_activation": "gelu_pytorch_tanh",
        });
        let with = |k: &str, v: serde_json::Value| {
            let mut c = base.clone();
            c[k] = v;
            ArchSpec::from_config(&c)
        };
        let s = with("sliding_window_pattern", 3.into()).unwrap();
        assert_eq!((0..6).map(|i| s.kind_of(i)).collect::<Vec<_>>(), [1, 1, 0, 1, 1, 0]);
        assert_eq!(s.kinds[1], LayerKind { rope: Rope { theta: 10_000., interleaved: false }, window: Some(512) });
        assert_eq!((s.gate, s.embed_scale, s.post_norms), (Gate::GeluTanh, Some(640f32.sqrt()), true));
        let types =
            |t: &[&str]| serde_json::Value::from(t.iter().map(|s| format!("{s}_attention")).collect::<Vec<_>>());
        let s = with("layer_types", types(&["sliding", "full", "sliding", "full", "sliding", "full"])).unwrap();
        assert_eq!((0..6).map(|i| s.kind_of(i)).collect::<Vec<_>>(), [1, 0, 1, 0, 1, 0]);
        assert!(with("layer_types", types(&["sliding", "full", "full", "sliding", "sliding", "full"])).is_err());
        assert_eq!(with("unused", 0.into()).unwrap().pattern, 6, "Gemma 3's default: every sixth layer global");
    }
}
