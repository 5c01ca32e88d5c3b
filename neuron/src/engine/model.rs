//! Model weights behind one interface: a table keyed by architecture picks candle-transformers'
//! own model code, so nothing here copies a model file. Each sequence owns a `Sequence` (a clone
//! of the weights — tensors are shared, only the KV cache is private).

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use candle_core::quantized::gguf_file;
use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use candle_transformers::models::{llama, quantized_gemma3, quantized_llama, quantized_qwen2, quantized_qwen3, qwen3};

use super::batched::BatchDecoder;
use super::cpu::{self, Decoder};
use super::kv::{KvCache, Part};
use super::spec::ArchSpec;
use super::{EngineError, EngineOptions};

/// Where a model's weights live.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WeightsSource {
    /// One self-contained GGUF file (weights, tokenizer, chat template).
    Gguf(PathBuf),
    /// A directory with config.json, tokenizer.json, tokenizer_config.json and *.safetensors.
    Safetensors(PathBuf),
}

impl WeightsSource {
    pub fn path(&self) -> &Path {
        match self {
            WeightsSource::Gguf(p) | WeightsSource::Safetensors(p) => p,
        }
    }
}

/// Architecture-specific weights. Variants hold candle-transformers' types unchanged.
#[derive(Clone)]
enum Weights {
    /// llama and Gemma 3 GGUF files on the CPU: cortex's decoder and kernels (see `cpu`).
    Cpu(Arc<Decoder>),
    /// llama and qwen3 on a GPU: steps of concurrent sequences batched (see `batched`).
    Batched(Arc<BatchDecoder>),
    QLlama(quantized_llama::ModelWeights),
    /// Not `Clone` in candle-transformers: one shared instance, one sequence at a time.
    QQwen2(Arc<Mutex<quantized_qwen2::ModelWeights>>),
    QQwen3(quantized_qwen3::ModelWeights),
    QGemma3(quantized_gemma3::ModelWeights),
    Llama(CandleLlama),
    Qwen3(qwen3::ModelForCausalLM),
}

impl Weights {
    /// A step of cortex's decoders, which run several sequences' rows as one batch; `None` for
    /// candle-transformers' models, which run one sequence per instance.
    fn step(&self, parts: &mut [Part]) -> Option<candle_core::Result<Vec<Vec<f32>>>> {
        match self {
            Weights::Cpu(d) => Some(d.forward_batch(parts)),
            Weights::Batched(d) => Some(d.forward_batch(parts)),
            _ => None,
        }
    }
}

/// candle-transformers' safetensors llama, whose KV cache is an argument rather than inside
/// the model: the weights' own per sequence, like the other candle models' caches.
#[derive(Clone)]
struct CandleLlama {
    model: llama::Llama,
    config: llama::Config,
    dtype: DType,
    /// `None` in the loaded weights (which never run), a fresh cache in each sequence's copy.
    cache: Option<llama::Cache>,
}

/// Loaded weights plus what the generation loop needs to know about them.
#[derive(Clone)]
pub struct ModelWeights {
    weights: Weights,
    pub arch: String,
    /// Longest sequence (prompt + completion) this model instance can hold.
    pub context_len: usize,
    pub device: Device,
}

/// One sequence's private view of the model: shared weights, its own KV cache (cortex's
/// decoders: `kv`; candle-transformers' models keep theirs inside their `weights` copy).
pub struct Sequence {
    weights: Weights,
    kv: KvCache,
    device: Device,
}

impl ModelWeights {
    /// Loads a GGUF file's weights with the default options on `device`. `content` is the
    /// parsed header (read once by the caller, who also builds the tokenizer from it).
    pub fn from_gguf(
        path: &Path,
        content: gguf_file::Content,
        device: &Device,
        max_context: Option<usize>,
    ) -> Result<Self, EngineError> {
        Self::load_gguf(path, content, &EngineOptions { max_context, ..EngineOptions::on(device.clone()) })
    }

    /// Loads a GGUF file's weights as `opts` say. `content` is the parsed header.
    pub fn load_gguf(path: &Path, content: gguf_file::Content, opts: &EngineOptions) -> Result<Self, EngineError> {
        let arch = super::gguf_meta::string(&content, "general.architecture")
            .ok_or_else(|| EngineError::Format("GGUF has no general.architecture".into()))?;
        if !matches!(arch.as_str(), "llama" | "mistral" | "qwen2" | "qwen3" | "gemma3") {
            return Err(EngineError::Unsupported(format!("GGUF architecture `{arch}`")));
        }
        let spec = ArchSpec::from_gguf(&content)?;
        let file_ctx = spec.context.unwrap_or(2048);
        let ctx = file_ctx.min(opts.max_context.unwrap_or(usize::MAX));
        let device = &opts.device;
        let mut file = std::fs::File::open(path).map_err(|e| EngineError::io(path, e))?;
        let load_err = |e: candle_core::Error| EngineError::Format(format!("{}: {e}", path.display()));
        let (weights, model_ctx) = match arch.as_str() {
            _ if opts.batched() && BatchDecoder::applies_to_gguf(&spec, &content) => {
                let d = BatchDecoder::from_gguf(&spec, &content, &mut file, device, ctx).map_err(load_err)?;
                (Weights::Batched(Arc::new(d)), ctx)
            }
            "llama" | "gemma3" if opts.cortex_cpu() && cpu::applies(&spec, &content) => {
                let d = cpu::load(&spec, &content, &mut file, ctx, opts.cpu_settings()).map_err(load_err)?;
                (Weights::Cpu(Arc::new(d)), ctx)
            }
            // quantized_llama precomputes RoPE for MAX_SEQ_LEN positions only.
            "llama" | "mistral" => (
                Weights::QLlama(
                    quantized_llama::ModelWeights::from_gguf(content, &mut file, device).map_err(load_err)?,
                ),
                file_ctx.min(quantized_llama::MAX_SEQ_LEN),
            ),
            "qwen2" => (
                Weights::QQwen2(Arc::new(Mutex::new(
                    quantized_qwen2::ModelWeights::from_gguf(content, &mut file, device).map_err(load_err)?,
                ))),
                file_ctx,
            ),
            "qwen3" => (
                Weights::QQwen3(
                    quantized_qwen3::ModelWeights::from_gguf(content, &mut file, device).map_err(load_err)?,
                ),
                file_ctx,
            ),
            _ => (
                Weights::QGemma3(
                    quantized_gemma3::ModelWeights::from_gguf(content, &mut file, device).map_err(load_err)?,
                ),
                file_ctx,
            ),
        };
        Ok(Self {
            weights,
            arch,
            context_len: model_ctx.min(opts.max_context.unwrap_or(usize::MAX)),
            device: device.clone(),
        })
    }

    /// Loads a safetensors repository directory (llama or qwen3 per `config`, its config.json),
    /// computing in `opts.dtype` (default: bf16 on a GPU, f32 on the CPU).
    pub fn load_safetensors(dir: &Path, config: &serde_json::Value, opts: &EngineOptions) -> Result<Self, EngineError> {
        let spec = ArchSpec::from_config(config)?;
        let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
            .map_err(|e| EngineError::io(dir, e))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "safetensors"))
            .collect();
        files.sort();
        if files.is_empty() {
            return Err(EngineError::Format(format!("no *.safetensors in {}", dir.display())));
        }
        let device = &opts.device;
        // bf16 where the device computes it natively, f32 on CPU (candle's CPU bf16 matmul is slow).
        let dtype = opts.dtype.unwrap_or(if device.is_cpu() { DType::F32 } else { DType::BF16 });
        let config_path = dir.join("config.json");
        let cfg_err = |e: serde_json::Error| EngineError::Format(format!("{}: {e}", config_path.display()));
        let load_err = |e: candle_core::Error| EngineError::Format(format!("{}: {e}", dir.display()));
        // SAFETY: the files are memory-mapped read-only; cortex never writes model files while
        // they are loaded (pull writes to a temporary name and renames).
        let vb = unsafe { VarBuilder::from_mmaped_safetensors(&files, dtype, device) }.map_err(load_err)?;
        let ctx = spec.context.unwrap_or(4096);
        let weights = match spec.arch.as_str() {
            _ if opts.batched() && BatchDecoder::applies_to_config(config) => {
                let positions = ctx.min(opts.max_context.unwrap_or(usize::MAX));
                let d =
                    BatchDecoder::from_safetensors(&spec, config, vb, dtype, device, positions).map_err(load_err)?;
                Weights::Batched(Arc::new(d))
            }
            "llama" | "mistral" => {
                let cfg: llama::LlamaConfig = serde_json::from_value(config.clone()).map_err(cfg_err)?;
                let config = cfg.into_config(false);
                let model = llama::Llama::load(vb, &config).map_err(load_err)?;
                Weights::Llama(CandleLlama { model, config, dtype, cache: None })
            }
            "qwen3" => {
                let cfg: qwen3::Config = serde_json::from_value(config.clone()).map_err(cfg_err)?;
                Weights::Qwen3(qwen3::ModelForCausalLM::new(&cfg, vb).map_err(load_err)?)
            }
            other => {
                return Err(EngineError::Unsupported(format!(
                    "safetensors model_type `{other}` (supported: llama, qwen3)"
                )))
            }
        };
        Ok(Self {
            weights,
            arch: spec.arch,
            context_len: ctx.min(opts.max_context.unwrap_or(usize::MAX)),
            device: device.clone(),
        })
    }

    /// What runs this model, as `ModelInfo::engine` names it.
    /// The kernel family that runs this model (`cpu::Decoder::kernels` for cortex's decoder).
    pub fn kernels(&self) -> String {
        match &self.weights {
            Weights::Cpu(d) => d.kernels(),
            Weights::Batched(_) => "candle tensors (batched decoder)".into(),
            _ => "candle".into(),
        }
    }

    pub fn engine(&self) -> &'static str {
        match self.weights {
            Weights::Cpu(_) => "cortex-cpu",
            Weights::Batched(_) => "batched",
            _ => "candle",
        }
    }

    /// How many sequences may run at once: 1 where the architecture's weights cannot be cloned
    /// (they share one KV cache).
    pub fn max_sequences(&self) -> Option<usize> {
        matches!(self.weights, Weights::QQwen2(_)).then_some(1)
    }

    /// A fresh sequence with an empty KV cache.
    pub fn new_sequence(&self) -> Result<Sequence, EngineError> {
        let mut weights = self.weights.clone();
        match &mut weights {
            Weights::Llama(l) => l.cache = Some(llama::Cache::new(true, l.dtype, &l.config, &self.device)?),
            Weights::QLlama(w) => w.clear_kv_cache(),
            Weights::Cpu(_) | Weights::Batched(_) => {}
            Weights::QQwen2(w) => w.lock().unwrap_or_else(|p| p.into_inner()).clear_kv_cache(),
            Weights::QQwen3(w) => w.clear_kv_cache(),
            Weights::Qwen3(w) => w.clear_kv_cache(),
            // quantized_gemma3 keeps no public way to clear; a clone of fresh weights is empty
            // only if the base was never run, which holds: the base instance never runs.
            Weights::QGemma3(_) => {}
        }
        Ok(Sequence { weights, kv: KvCache::default(), device: self.device.clone() })
    }
}

/// One sequence's input for a step: `tokens` at positions `pos..`.
pub struct StepInput<'a> {
    pub seq: &'a mut Sequence,
    pub tokens: &'a [u32],
    pub pos: usize,
}

impl Sequence {
    /// The KV cache a prefix cache reads and fills: cortex's decoders' (candle-transformers'
    /// models keep theirs inside their weights, out of its reach).
    pub fn prefix_cache(&mut self) -> Option<&mut KvCache> {
        matches!(self.weights, Weights::Cpu(_) | Weights::Batched(_)).then_some(&mut self.kv)
    }

    /// Runs `tokens` at positions `pos..pos+len` and returns the last position's logits.
    pub fn forward(&mut self, tokens: &[u32], pos: usize) -> Result<Vec<f32>, EngineError> {
        if let Some(logits) = self.weights.step(&mut [Part { cache: &mut self.kv, tokens, pos }]) {
            return Ok(logits?.pop().unwrap_or_default());
        }
        let input = Tensor::new(tokens, &self.device)?.unsqueeze(0)?;
        let logits = match &mut self.weights {
            // cortex's decoders stepped above.
            Weights::Cpu(_) | Weights::Batched(_) => return Err(EngineError::Format("unreachable step".into())),
            Weights::QLlama(w) => w.forward(&input, pos)?,
            Weights::QQwen2(w) => w.lock().unwrap_or_else(|p| p.into_inner()).forward(&input, pos)?,
            Weights::QQwen3(w) => w.forward(&input, pos)?,
            Weights::QGemma3(w) => w.forward(&input, pos)?,
            Weights::Qwen3(w) => w.forward(&input, pos)?,
            Weights::Llama(l) => {
                let cache =
                    l.cache.as_mut().ok_or_else(|| EngineError::Format("llama sequence without a cache".into()))?;
                l.model.forward(&input, pos, cache)?
            }
        };
        Ok(logits.flatten_all()?.to_dtype(DType::F32)?.to_vec1::<f32>()?)
    }

    /// One step for several sequences of the same model, each result in its input's place.
    /// cortex's CPU decoder and the batched decoder run them as one batch (each weight read once
    /// for all their rows); other models, or a batch that fails, run one sequence at a time, so
    /// that one sequence's bad input fails only that sequence.
    pub fn forward_many(inputs: &mut [StepInput]) -> Vec<Result<Vec<f32>, EngineError>> {
        if let Some(weights) = Self::shared_weights(inputs).filter(|_| inputs.len() > 1) {
            let mut parts: Vec<Part> =
                inputs.iter_mut().map(|i| Part { cache: &mut i.seq.kv, tokens: i.tokens, pos: i.pos }).collect();
            match weights.step(&mut parts) {
                Some(Ok(logits)) => return logits.into_iter().map(Ok).collect(),
                Some(Err(e)) => tracing::debug!(error = %e, "a batched step failed; running its sequences one by one"),
                None => {}
            }
        }
        inputs.iter_mut().map(|i| i.seq.forward(i.tokens, i.pos)).collect()
    }

    /// The batching weights all of `inputs` run on, when they share them.
    fn shared_weights(inputs: &[StepInput]) -> Option<Weights> {
        let same = |w: &Weights| match (w, &inputs.first()?.seq.weights) {
            (Weights::Cpu(a), Weights::Cpu(b)) => Some(Arc::ptr_eq(a, b)),
            (Weights::Batched(a), Weights::Batched(b)) => Some(Arc::ptr_eq(a, b)),
            _ => None,
        };
        let first = &inputs.first()?.seq.weights;
        inputs.iter().all(|i| same(&i.seq.weights) == Some(true)).then(|| first.clone())
    }
}
