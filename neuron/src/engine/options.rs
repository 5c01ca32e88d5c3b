//! What the engine is told at load: the device, which code runs a model, the CPU kernels'
//! activation precision, context and scheduling bounds. The values come from cortex.toml's
//! `[engine]` with the environment's overrides (`config::EngineConfig`), parsed there once; this
//! module only defines them and opens devices.

use std::fmt;
use std::str::FromStr;

use candle_core::{DType, Device};
use cortex_kernels::Precision;
use serde::Deserialize;

use super::scheduler::SchedulerConfig;
use super::EngineError;

/// Which code runs a model, where more than one could.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EngineKind {
    /// cortex's CPU decoder for llama and gemma3 GGUF files on the CPU, the batched decoder for
    /// llama, qwen3 and gemma3 on a GPU, candle-transformers' models for the rest.
    #[default]
    Auto,
    /// The batched decoder wherever it applies, the CPU too (to test and compare it without a
    /// GPU).
    Batched,
    /// candle-transformers' models for everything (to compare).
    Candle,
}

impl FromStr for EngineKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "auto" => Ok(Self::Auto),
            "batched" => Ok(Self::Batched),
            "candle" => Ok(Self::Candle),
            _ => Err(format!("`{s}` is not an engine (use auto, batched or candle)")),
        }
    }
}

/// Bits the CPU kernels quantize activations to (see `cpu::Settings` for the trade).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(try_from = "i64")]
pub enum Bits {
    #[default]
    Sixteen,
    Eight,
}

impl Bits {
    pub fn precision(self) -> Precision {
        match self {
            Bits::Sixteen => Precision::I16,
            Bits::Eight => Precision::I8,
        }
    }
}

impl TryFrom<i64> for Bits {
    type Error = String;
    fn try_from(n: i64) -> Result<Self, String> {
        match n {
            16 => Ok(Bits::Sixteen),
            8 => Ok(Bits::Eight),
            _ => Err(format!("{n} bits: use 16 or 8")),
        }
    }
}

impl FromStr for Bits {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        s.parse::<i64>().map_err(|_| format!("`{s}` bits: use 16 or 8")).and_then(Bits::try_from)
    }
}

/// Where the engine computes, as configured.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(try_from = "String")]
pub enum DeviceChoice {
    /// The first CUDA device when built with `cuda` and one is present, else the CPU.
    #[default]
    Auto,
    Cpu,
    /// A CUDA device by ordinal (`cuda` or `gpu`: 0).
    Cuda(usize),
}

impl FromStr for DeviceChoice {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.trim() {
            "auto" => Ok(Self::Auto),
            "cpu" => Ok(Self::Cpu),
            "cuda" | "gpu" => Ok(Self::Cuda(0)),
            other => other
                .strip_prefix("cuda:")
                .and_then(|n| n.parse().ok())
                .map(Self::Cuda)
                .ok_or_else(|| format!("`{other}` is not a device (use cpu, cuda or cuda:N)")),
        }
    }
}

impl TryFrom<String> for DeviceChoice {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        s.parse()
    }
}

impl fmt::Display for DeviceChoice {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        match self {
            Self::Auto => f.write_str("auto"),
            Self::Cpu => f.write_str("cpu"),
            Self::Cuda(n) => write!(f, "cuda:{n}"),
        }
    }
}

impl DeviceChoice {
    /// The device. CUDA fails on a build without the `cuda` feature and on a host without that
    /// GPU; `Auto` never fails.
    pub fn open(self) -> Result<Device, EngineError> {
        let ordinal = match self {
            Self::Auto => return Ok(default_device()),
            Self::Cpu => return Ok(Device::Cpu),
            Self::Cuda(n) => n,
        };
        if !cfg!(feature = "cuda") {
            return Err(EngineError::Device(format!(
                "`{self}`: this cortex was built without CUDA (build it with scripts/build-cuda)"
            )));
        }
        // candle's CUDA errors carry a backtrace after the first line.
        Device::new_cuda(ordinal).map_err(|e| {
            let e = e.to_string();
            EngineError::Device(format!("cuda:{ordinal}: {}", e.lines().next().unwrap_or_default()))
        })
    }
}

/// A device by name: `cpu`, `cuda` (the first GPU) or `cuda:N`. CUDA fails on a build without
/// the `cuda` feature and on a host without that GPU.
pub fn device_by_name(name: &str) -> Result<Device, EngineError> {
    match name.parse::<DeviceChoice>().map_err(EngineError::Device)? {
        DeviceChoice::Auto => Err(EngineError::Device("`auto` is not one device (use cpu, cuda or cuda:N)".into())),
        choice => choice.open(),
    }
}

/// The engine's device unless configured otherwise, decided once per process: the first CUDA
/// device when built with `cuda` and one is present, else the CPU.
pub fn default_device() -> Device {
    static DEVICE: std::sync::OnceLock<Device> = std::sync::OnceLock::new();
    DEVICE
        .get_or_init(|| match cfg!(feature = "cuda") {
            true => Device::new_cuda(0).unwrap_or(Device::Cpu),
            false => Device::Cpu,
        })
        .clone()
}

/// The CUDA ordinal of `device`; `None` for the CPU.
pub fn cuda_ordinal(device: &Device) -> Option<u32> {
    match device.location() {
        candle_core::DeviceLocation::Cuda { gpu_id } => Some(gpu_id as u32),
        _ => None,
    }
}

/// A device's name as [`device_by_name`] takes it.
pub fn device_name(device: &Device) -> String {
    match device.location() {
        candle_core::DeviceLocation::Cpu => "cpu".into(),
        candle_core::DeviceLocation::Cuda { gpu_id } => format!("cuda:{gpu_id}"),
        candle_core::DeviceLocation::Metal { gpu_id } => format!("metal:{gpu_id}"),
    }
}

/// Knobs for loading and serving a model.
#[derive(Debug, Clone)]
pub struct EngineOptions {
    pub device: Device,
    /// What safetensors models compute in; `None`: bf16 on a GPU, f32 on the CPU. (GGUF models
    /// keep their quantized weights.)
    pub dtype: Option<DType>,
    /// Upper bound on a model's context window (prompt + completion); `None`: the context it
    /// was trained for.
    pub max_context: Option<usize>,
    /// Refuse a `max_tokens` beyond the room left instead of lowering it.
    pub strict_context: bool,
    /// A chat template replacing the model file's own.
    pub chat_template: Option<String>,
    /// Sampling parameters for requests that leave them unset.
    pub sampling: cortex_proto::generate::SamplingParams,
    pub scheduler: SchedulerConfig,
    /// Which code runs models.
    pub engine: EngineKind,
    /// Activation bits of the CPU decoder's decode steps and of its steps with prompt rows.
    pub decode_bits: Bits,
    pub prefill_bits: Bits,
    /// `CANDLE_DEQUANTIZE_ALL`: the CPU decoder widens every matrix to f32 at load.
    pub dequantize_all: bool,
    /// Bytes of KV blocks each model's prefix cache may hold; `None`: the lifecycle's default
    /// (see `memory::Footprint::prefix_cache`).
    pub kv_cache_bytes: Option<u64>,
}

impl Default for EngineOptions {
    fn default() -> Self {
        Self::on(default_device())
    }
}

impl EngineOptions {
    /// The defaults, computing on `device`.
    pub fn on(device: Device) -> Self {
        Self {
            device,
            dtype: None,
            max_context: None,
            strict_context: false,
            chat_template: None,
            sampling: Default::default(),
            scheduler: SchedulerConfig::default(),
            engine: EngineKind::Auto,
            decode_bits: Bits::Sixteen,
            prefill_bits: Bits::Sixteen,
            dequantize_all: false,
            kv_cache_bytes: None,
        }
    }

    /// Whether the batched decoder runs a model it applies to.
    pub(super) fn batched(&self) -> bool {
        match self.engine {
            EngineKind::Auto => !self.device.is_cpu(),
            EngineKind::Candle => false,
            EngineKind::Batched => true,
        }
    }

    /// Whether cortex's CPU decoder runs a model it applies to (on the CPU).
    pub(super) fn cortex_cpu(&self) -> bool {
        self.engine == EngineKind::Auto && self.device.is_cpu()
    }

    /// What the CPU decoder takes from these options.
    pub(super) fn cpu_settings(&self) -> super::cpu::Settings {
        super::cpu::Settings {
            decode: self.decode_bits.precision(),
            prefill: self.prefill_bits.precision(),
            reference: self.dequantize_all,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn devices_engines_and_bits_parse_from_their_names() {
        assert_eq!("cuda:3".parse(), Ok(DeviceChoice::Cuda(3)));
        assert_eq!(" gpu ".parse(), Ok(DeviceChoice::Cuda(0)));
        assert_eq!("cpu".parse(), Ok(DeviceChoice::Cpu));
        let err = "tpu".parse::<DeviceChoice>().unwrap_err();
        assert!(err.contains("cpu, cuda or cuda:N"), "{err}");
        assert!("cuda:x".parse::<DeviceChoice>().is_err());
        assert_eq!(DeviceChoice::Cuda(1).to_string(), "cuda:1");
        assert_eq!("batched".parse(), Ok(EngineKind::Batched));
        assert!("Batched".parse::<EngineKind>().is_err());
        assert_eq!(("8".parse(), "16".parse()), (Ok(Bits::Eight), Ok(Bits::Sixteen)));
        assert!("4".parse::<Bits>().unwrap_err().contains("16 or 8"));
        assert_eq!(device_by_name("cpu").map(|d| d.is_cpu()).ok(), Some(true));
        assert!(device_by_name("auto").is_err());
        if !cfg!(feature = "cuda") {
            assert!(device_by_name("cuda:1").unwrap_err().to_string().contains("built without CUDA"));
        }
    }
}
