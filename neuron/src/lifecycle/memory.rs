//! Memory: this node's budget for model weights and KV caches, what a model will cost before it
//! is loaded (from its file's metadata), and what the process really holds after a load.

use std::path::Path;

use candle_core::quantized::gguf_file;
use candle_core::DType;

use crate::engine::spec::ArchSpec;
use crate::engine::WeightsSource;
use crate::gpu::GpuInfo;

/// Share of RAM models may use on a CPU node when no budget is configured.
pub const DEFAULT_RAM_SHARE: f64 = 0.75;
/// Kept back for the OS and the process itself.
pub const DEFAULT_RESERVE: u64 = 512 << 20;
/// The budget of a CUDA device whose memory NVML cannot report and no budget is configured for:
/// none enforced (a model that does not fit fails to load).
pub const UNKNOWN_GPU_BUDGET: u64 = 1 << 50;

/// A device's memory as the lifecycle sees it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Device {
    /// `cpu` or `cuda:N`.
    pub name: String,
    /// What the hardware has.
    pub total_bytes: u64,
    /// What models may use.
    pub budget_bytes: u64,
    /// What it is, where known (a GPU's model and compute capability).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
}

fn meminfo(key: &str) -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = text.lines().find(|l| l.starts_with(key))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// Physical RAM (8 GiB assumed where /proc is not available).
pub fn total_ram() -> u64 {
    meminfo("MemTotal:").unwrap_or(8 << 30)
}

/// Resident memory of this process.
pub fn rss_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|t| {
            let l = t.lines().find(|l| l.starts_with("VmRSS:"))?.to_string();
            l.split_whitespace().nth(1)?.parse::<u64>().ok()
        })
        .map(|kib| kib * 1024)
        .unwrap_or(0)
}

/// The CPU budget: an explicit size, else a share of RAM less a reserve.
pub fn cpu_device(budget: Option<u64>, share: f64, reserve: u64) -> Device {
    let total = total_ram();
    let budget = budget.unwrap_or_else(|| ((total as f64 * share) as u64).saturating_sub(reserve));
    Device { name: "cpu".into(), total_bytes: total, budget_bytes: budget, description: None }
}

/// A GPU the engine computes on: an explicit budget, else the memory free at start-up less a
/// reserve (for the CUDA context, cuBLAS workspaces and activations).
pub fn cuda_device(gpu: &GpuInfo, budget: Option<u64>, reserve: u64) -> Device {
    let budget = budget.unwrap_or_else(|| gpu.free_bytes.saturating_sub(reserve));
    Device { budget_bytes: budget, ..listed_gpu(gpu) }
}

/// A GPU this host has but the engine does not compute on (a CPU build, or not the engine's
/// GPU): listed in status with no budget.
pub fn listed_gpu(gpu: &GpuInfo) -> Device {
    let (major, minor) = gpu.compute_capability;
    Device {
        name: format!("cuda:{}", gpu.index),
        total_bytes: gpu.total_bytes,
        budget_bytes: 0,
        description: Some(format!("{}, compute capability {major}.{minor}", gpu.name)),
    }
}

/// This node's devices: the one the engine computes on, which carries the budget (GPU `cuda`
/// when the engine runs on CUDA, else the CPU), and the other GPUs, listed without one. NVML's
/// index is taken for CUDA's ordinal (they differ only under `CUDA_VISIBLE_DEVICES`).
pub fn node_devices(
    ordinal: Option<u32>,
    gpus: &[GpuInfo],
    budget: Option<u64>,
    share: f64,
    reserve: u64,
) -> (Device, Vec<Device>) {
    let device = match ordinal {
        Some(o) => match gpus.iter().find(|g| g.index == o) {
            Some(gpu) => cuda_device(gpu, budget, reserve),
            // CUDA works but NVML cannot say how much memory there is: trust the configured
            // budget, or enforce none and let a load that does not fit fail.
            None => Device {
                name: format!("cuda:{o}"),
                total_bytes: budget.unwrap_or(0),
                budget_bytes: budget.unwrap_or(UNKNOWN_GPU_BUDGET),
                description: Some("memory unknown without NVML: set memory.budget".into()),
            },
        },
        None => cpu_device(budget, share, reserve),
    };
    let listed = gpus.iter().filter(|g| Some(g.index) != ordinal).map(listed_gpu).collect();
    (device, listed)
}

/// What a model's files say it will hold: its weights as computed, its keys and values per
/// token, and the context it was trained for (where its metadata says). Read once per model:
/// the estimate and the context fitting are arithmetic on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Footprint {
    weights: u64,
    kv_per_token: u64,
    trained: Option<usize>,
}

/// GGUF: the file's weights as stored, keys and values in f32. Safetensors: weights and KV cache
/// in the dtype the model computes in, `dtype` where given, else f32 on the CPU and bf16 on a
/// GPU (what `ModelWeights::from_safetensors` picks), so that a bf16 model is not counted twice
/// its size on the GPU that keeps it in bf16.
pub fn footprint(source: &WeightsSource, gpu: bool, dtype: Option<DType>) -> Option<Footprint> {
    match source {
        WeightsSource::Gguf(path) => {
            let size = std::fs::metadata(path).ok()?.len();
            let ct = gguf_file::Content::read(&mut std::fs::File::open(path).ok()?).ok()?;
            let spec = ArchSpec::from_gguf(&ct).ok()?;
            Some(Footprint { weights: size, kv_per_token: spec.kv_bytes_per_token(DType::F32), trained: spec.context })
        }
        WeightsSource::Safetensors(dir) => {
            let size = dir_size(dir);
            let cfg: serde_json::Value = serde_json::from_slice(&std::fs::read(dir.join("config.json")).ok()?).ok()?;
            if crate::engine::embed::is_embedder(dir) {
                // An encoder keeps no cache: its f32 weights are what it holds.
                let trained = cfg.get("max_position_embeddings").and_then(|v| v.as_u64()).map(|n| n as usize);
                return Some(Footprint { weights: size, kv_per_token: 0, trained });
            }
            let stored = match cfg.get("torch_dtype").and_then(|v| v.as_str()) {
                Some("bfloat16" | "float16") => 2,
                _ => 4,
            };
            let held = dtype.unwrap_or(if gpu { DType::BF16 } else { DType::F32 });
            let spec = ArchSpec::from_config(&cfg).ok()?;
            Some(Footprint {
                weights: size / stored * held.size_in_bytes() as u64,
                kv_per_token: spec.kv_bytes_per_token(held),
                trained: spec.context,
            })
        }
    }
}

/// The most a model's prefix cache keeps by default.
pub const DEFAULT_PREFIX_CACHE: u64 = 512 << 20;

/// Where a file's metadata names no context.
pub const UNKNOWN_CONTEXT: usize = 4096;
/// The least context a model is lowered to for want of memory.
pub const MIN_CONTEXT: usize = 512;

impl Footprint {
    /// Estimated bytes the model holds once loaded with `context` tokens of KV cache for one
    /// sequence (fewer where it was trained for fewer).
    pub fn estimate(&self, context: usize) -> u64 {
        self.weights + self.kv_per_token * self.trained.unwrap_or(context).min(context) as u64
    }

    /// Bytes the model's prefix cache may keep: `configured`, else twice a full cache of one
    /// sequence at `context` tokens, at most [`DEFAULT_PREFIX_CACHE`].
    pub fn prefix_cache(&self, configured: Option<u64>, context: usize) -> u64 {
        configured.unwrap_or_else(|| (2 * self.kv_per_token * context as u64).min(DEFAULT_PREFIX_CACHE))
    }

    /// The context the model is loaded with: what it was trained for, at most `cap`, lowered so
    /// that `sequences` caches of that length fit beside its weights in `budget` (never under
    /// [`MIN_CONTEXT`]). Returns (what the model and cap allow, what it gets).
    pub fn context_for(&self, cap: Option<usize>, budget: u64, sequences: usize) -> (usize, usize) {
        let allowed = self.trained.unwrap_or(UNKNOWN_CONTEXT).min(cap.unwrap_or(usize::MAX));
        let per_position = self.kv_per_token.max(1) * sequences.max(1) as u64;
        let fits = (budget.saturating_sub(self.weights) / per_position).min(usize::MAX as u64) as usize;
        (allowed, allowed.min(fits.max(MIN_CONTEXT)))
    }
}

fn dir_size(dir: &Path) -> u64 {
    std::fs::read_dir(dir).map(|rd| rd.filter_map(|e| e.ok()?.metadata().ok()).map(|m| m.len()).sum()).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A safetensors model's estimate follows the dtype it will be held in: a bf16 file costs its
    /// size on a GPU (bf16 by default) and twice that on the CPU (f32), and the KV cache too.
    #[test]
    fn safetensors_estimates_follow_the_dtype_the_model_is_held_in() {
        let dir = std::env::temp_dir().join(format!("cortex-estimate-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let config = serde_json::json!({
            "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
            "hidden_size": 64, "max_position_embeddings": 1000, "torch_dtype": "bfloat16",
        });
        std::fs::write(dir.join("config.json"), config.to_string()).unwrap();
        std::fs::write(dir.join("model.safetensors"), vec![0u8; 1 << 20]).unwrap();
        let files = dir_size(&dir);
        let src = WeightsSource::Safetensors(dir.clone());
        // Keys and values: 2 × 2 layers × 2 kv heads × 16 dims × 100 positions.
        let kv = 2 * 2 * 2 * 16 * 100;
        let (bf16, f32) = (files / 2 * 2 + kv * 2, files / 2 * 4 + kv * 4);
        let estimate = |gpu, dtype| footprint(&src, gpu, dtype).map(|f| f.estimate(100));
        assert_eq!(estimate(true, None), Some(bf16));
        assert_eq!(estimate(false, None), Some(f32));
        assert_eq!(estimate(true, Some(DType::F32)), Some(f32));
        assert_eq!(estimate(false, Some(DType::BF16)), Some(bf16));
        // Trained for 1000 positions: that context where the budget holds 4 caches of it, a cap
        // below it wins, and a budget short of memory lowers it (never under MIN_CONTEXT).
        let per_token = 2 * 2 * 2 * 16 * 4;
        let weights = files / 2 * 4;
        let roomy = weights + 4 * 1000 * per_token;
        let f = footprint(&src, false, None).unwrap();
        assert_eq!(f.context_for(None, roomy, 4), (1000, 1000));
        assert_eq!(f.context_for(Some(600), roomy, 4), (600, 600));
        assert_eq!(f.context_for(None, weights + 4 * 700 * per_token, 4), (1000, 700));
        assert_eq!(f.context_for(None, weights, 4), (1000, MIN_CONTEXT));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
