//! Model weights behind one interface: a table keyed by architecture picks candle-transformers'
//! own model code, so nothing here copies a model file. Each sequence owns a `Sequence` (a clone
//! of the weights — tensors are shared, only the KV cache is private).

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use candle_core::quantized::gguf_file;
use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use candle_transformers::models::{llama, quantized_gemma3, quantized_llama, quantized_qwen2, quantized_qwen3, qwen3};

use super::batched::{self, BatchDecoder};
use super::cpu::{self, Decoder};
use super::EngineError;

/// Which code runs a model, where more than one could.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Engine {
    /// The default: cortex's CPU decoder for llama and gemma3 GGUF files on the CPU, the batched
    /// decoder for llama and qwen3 on a GPU, candle-transformers' models for the rest.
    Auto,
    /// `CORTEX_ENGINE=candle`: candle-transformers' models for everything (to compare).
    Candle,
    /// `CORTEX_ENGINE=batched`: the batched decoder wherever it applies, the CPU too (to test
    /// and compare it without a GPU).
    Batched,
}

fn engine() -> Engine {
    match std::env::var("CORTEX_ENGINE").as_deref() {
        Ok("candle") => Engine::Candle,
        Ok("batched") => Engine::Batched,
        _ => Engine::Auto,
    }
}

/// Whether the batched decoder runs a model on `device` (where it applies).
fn batched_wanted(device: &Device) -> bool {
    match engine() {
        Engine::Auto => !device.is_cpu(),
        Engine::Candle => false,
        Engine::Batched => true,
    }
}

fn cortex_kernels_wanted() -> bool {
    engine() == Engine::Auto
}

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
    Llama(llama::Llama, llama::Config, DType),
    Qwen3(qwen3::ModelForCausalLM),
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

/// One sequence's private view of the model: shared weights, its own KV cache.
pub struct Sequence {
    weights: Weights,
    llama_cache: Option<llama::Cache>,
    cpu_cache: cpu::Cache,
    batch_cache: batched::Cache,
    device: Device,
}

impl ModelWeights {
    /// Loads a GGUF file's weights. `content` is the parsed header (read once by the caller,
    /// who also builds the tokenizer from it).
    pub fn from_gguf(
        path: &Path,
        content: gguf_file::Content,
        device: &Device,
        max_context: usize,
    ) -> Result<Self, EngineError> {
        let arch = super::gguf_meta::string(&content, "general.architecture")
            .ok_or_else(|| EngineError::Format("GGUF has no general.architecture".into()))?;
        let ctx_key = format!("{arch}.context_length");
        let file_ctx = super::gguf_meta::u64(&content, &ctx_key).unwrap_or(2048) as usize;
        let mut file = std::fs::File::open(path).map_err(|e| EngineError::io(path, e))?;
        let load_err = |e: candle_core::Error| EngineError::Format(format!("{}: {e}", path.display()));
        // quantized_llama precomputes RoPE for MAX_SEQ_LEN positions only.
        let (weights, model_ctx) = match arch.as_str() {
            a if batched_wanted(device) && BatchDecoder::applies_to_gguf(a, &content) => {
                let ctx = file_ctx.min(max_context);
                let d = BatchDecoder::from_gguf(a, &content, &mut file, device, ctx).map_err(load_err)?;
                (Weights::Batched(Arc::new(d)), ctx)
            }
            "llama" if device.is_cpu() && cortex_kernels_wanted() && cpu::llama::applies(&content) => {
                let ctx = file_ctx.min(max_context);
                (Weights::Cpu(Arc::new(cpu::llama::load(&content, &mut file, ctx).map_err(load_err)?)), ctx)
            }
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
            "gemma3" if device.is_cpu() && cortex_kernels_wanted() => {
                let ctx = file_ctx.min(max_context);
                (Weights::Cpu(Arc::new(cpu::gemma3::load(&content, &mut file, ctx).map_err(load_err)?)), ctx)
            }
            "gemma3" => (
                Weights::QGemma3(
                    quantized_gemma3::ModelWeights::from_gguf(content, &mut file, device).map_err(load_err)?,
                ),
                file_ctx,
            ),
            other => return Err(EngineError::Unsupported(format!("GGUF architecture `{other}`"))),
        };
        Ok(Self { weights, arch, context_len: model_ctx.min(max_context), device: device.clone() })
    }

    /// Loads a safetensors repository directory (llama or qwen3 per config.json), computing in
    /// `dtype` (default: bf16 on a GPU, f32 on the CPU).
    pub fn from_safetensors(
        dir: &Path,
        device: &Device,
        dtype: Option<DType>,
        max_context: usize,
    ) -> Result<Self, EngineError> {
        let config_path = dir.join("config.json");
        let raw = std::fs::read(&config_path).map_err(|e| EngineError::io(&config_path, e))?;
        let value: serde_json::Value =
            serde_json::from_slice(&raw).map_err(|e| EngineError::Format(format!("{}: {e}", config_path.display())))?;
        let model_type = value.get("model_type").and_then(|v| v.as_str()).unwrap_or_default().to_string();
        let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
            .map_err(|e| EngineError::io(dir, e))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "safetensors"))
            .collect();
        files.sort();
        if files.is_empty() {
            return Err(EngineError::Format(format!("no *.safetensors in {}", dir.display())));
        }
        // bf16 where the device computes it natively, f32 on CPU (candle's CPU bf16 matmul is slow).
        let dtype = dtype.unwrap_or(if device.is_cpu() { DType::F32 } else { DType::BF16 });
        let cfg_err = |e: serde_json::Error| EngineError::Format(format!("{}: {e}", config_path.display()));
        let load_err = |e: candle_core::Error| EngineError::Format(format!("{}: {e}", dir.display()));
        // SAFETY: the files are memory-mapped read-only; cortex never writes model files while
        // they are loaded (pull writes to a temporary name and renames).
        let vb = unsafe { VarBuilder::from_mmaped_safetensors(&files, dtype, device) }.map_err(load_err)?;
        let (weights, ctx) = match model_type.as_str() {
            _ if batched_wanted(device) && BatchDecoder::applies_to_config(&value) => {
                let ctx = value.get("max_position_embeddings").and_then(|v| v.as_u64()).unwrap_or(4096) as usize;
                let d = BatchDecoder::from_safetensors(&value, vb, dtype, device, ctx.min(max_context))
                    .map_err(load_err)?;
                (Weights::Batched(Arc::new(d)), ctx)
            }
            "llama" | "mistral" => {
                let cfg: llama::LlamaConfig = serde_json::from_value(value).map_err(cfg_err)?;
                let cfg = cfg.into_config(false);
                let ctx = cfg.max_position_embeddings;
                let model = llama::Llama::load(vb, &cfg).map_err(load_err)?;
                (Weights::Llama(model, cfg, dtype), ctx)
            }
            "qwen3" => {
                let cfg: qwen3::Config = serde_json::from_value(value).map_err(cfg_err)?;
                let ctx = cfg.max_position_embeddings;
                (Weights::Qwen3(qwen3::ModelForCausalLM::new(&cfg, vb).map_err(load_err)?), ctx)
            }
            other => {
                return Err(EngineError::Unsupported(format!(
                    "safetensors model_type `{other}` (supported: llama, qwen3)"
                )))
            }
        };
        Ok(Self { weights, arch: model_type, context_len: ctx.min(max_context), device: device.clone() })
    }

    /// What runs this model, as `ModelInfo::engine` names it.
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
        let llama_cache = match &mut weights {
            Weights::Llama(_, cfg, dtype) => {
                Some(llama::Cache::new(true, *dtype, cfg, &self.device).map_err(EngineError::Candle)?)
            }
            Weights::QLlama(w) => {
                w.clear_kv_cache();
                None
            }
            Weights::Cpu(_) | Weights::Batched(_) => None,
            Weights::QQwen2(w) => {
                w.lock().unwrap_or_else(|p| p.into_inner()).clear_kv_cache();
                None
            }
            Weights::QQwen3(w) => {
                w.clear_kv_cache();
                None
            }
            Weights::Qwen3(w) => {
                w.clear_kv_cache();
                None
            }
            // quantized_gemma3 keeps no public way to clear; a clone of fresh weights is empty
            // only if the base was never run, which holds: the base instance never runs.
            Weights::QGemma3(_) => None,
        };
        Ok(Sequence {
            weights,
            llama_cache,
            cpu_cache: Default::default(),
            batch_cache: Default::default(),
            device: self.device.clone(),
        })
    }
}

/// One sequence's input for a step: `tokens` at positions `pos..`.
pub struct StepInput<'a> {
    pub seq: &'a mut Sequence,
    pub tokens: &'a [u32],
    pub pos: usize,
}

impl Sequence {
    /// Runs `tokens` at positions `pos..pos+len` and returns the last position's logits.
    pub fn forward(&mut self, tokens: &[u32], pos: usize) -> Result<Vec<f32>, EngineError> {
        match &self.weights {
            Weights::Cpu(w) => return Ok(w.forward(&mut self.cpu_cache, tokens, pos)?),
            Weights::Batched(w) => {
                let part = batched::Part { cache: &mut self.batch_cache, tokens, pos };
                return Ok(w.forward_batch(&mut [part])?.pop().unwrap_or_default());
            }
            _ => {}
        }
        let input = Tensor::new(tokens, &self.device)?.unsqueeze(0)?;
        let logits = match &mut self.weights {
            Weights::Cpu(_) | Weights::Batched(_) => unreachable!("answered above"),
            Weights::QLlama(w) => w.forward(&input, pos)?,
            Weights::QQwen2(w) => w.lock().unwrap_or_else(|p| p.into_inner()).forward(&input, pos)?,
            Weights::QQwen3(w) => w.forward(&input, pos)?,
            Weights::QGemma3(w) => w.forward(&input, pos)?,
            Weights::Qwen3(w) => w.forward(&input, pos)?,
            Weights::Llama(w, _, _) => {
                let cache = self
                    .llama_cache
                    .as_mut()
                    .ok_or_else(|| EngineError::Format("llama sequence without a cache".into()))?;
                w.forward(&input, pos, cache)?
            }
        };
        Ok(logits.flatten_all()?.to_dtype(DType::F32)?.to_vec1::<f32>()?)
    }

    /// One step for several sequences of the same model, each result in its input's place.
    /// cortex's CPU decoder and the batched decoder run them as one batch (each weight read once
    /// for all their rows); other models, or a batch that fails, run one sequence at a time, so
    /// that one sequence's bad input fails only that sequence.
    pub fn forward_many(inputs: &mut [StepInput]) -> Vec<Result<Vec<f32>, EngineError>> {
        if inputs.len() > 1 {
            let batched = match Self::shared_weights(inputs) {
                Some(Weights::Cpu(d)) => {
                    let mut parts: Vec<cpu::Part> = inputs
                        .iter_mut()
                        .map(|i| cpu::Part { cache: &mut i.seq.cpu_cache, tokens: i.tokens, pos: i.pos })
                        .collect();
                    Some(d.forward_batch(&mut parts))
                }
                Some(Weights::Batched(d)) => {
                    let mut parts: Vec<batched::Part> = inputs
                        .iter_mut()
                        .map(|i| batched::Part { cache: &mut i.seq.batch_cache, tokens: i.tokens, pos: i.pos })
                        .collect();
                    Some(d.forward_batch(&mut parts))
                }
                _ => None,
            };
            match batched {
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
        inputs.iter().all(|i| same(&i.seq.weights) == Some(true)).then(|| inputs[0].seq.weights.clone())
    }
}
