//! GPU discovery through NVML: which NVIDIA GPUs this host has, their memory and compute
//! capability. NVML (`libnvidia-ml.so.1`) comes with the driver and is loaded at run time, so
//! the same binary runs on hosts without one: no driver, no GPUs, no error. Discovery works on a
//! CPU build too; whether the engine computes on a GPU is `engine::default_device()`'s call.

use std::sync::OnceLock;

use nvml_wrapper::Nvml;

/// Whether this binary was built with the `cuda` feature (candle's CUDA backend).
pub const CUDA_BUILD: bool = cfg!(feature = "cuda");

/// One GPU as NVML reports it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct GpuInfo {
    /// NVML's index, the same as CUDA's ordinal unless `CUDA_VISIBLE_DEVICES` reorders them.
    pub index: u32,
    pub name: String,
    pub total_bytes: u64,
    /// Memory no process holds right now.
    pub free_bytes: u64,
    /// (major, minor): (9, 0) for an H100 or H200.
    pub compute_capability: (u32, u32),
}

/// NVML, initialised once per process (`nvmlInit` is not free); `None` where the library or the
/// driver is missing.
fn nvml() -> Option<&'static Nvml> {
    static NVML: OnceLock<Option<Nvml>> = OnceLock::new();
    NVML.get_or_init(|| match Nvml::init() {
        Ok(n) => Some(n),
        Err(e) => {
            tracing::debug!(error = %e, "no NVML: no NVIDIA GPUs listed");
            None
        }
    })
    .as_ref()
}

/// The GPUs NVML sees, in index order; empty without NVML or without GPUs. A GPU whose details
/// cannot be read is left out (logged at debug level).
pub fn discover() -> Vec<GpuInfo> {
    let Some(nvml) = nvml() else { return Vec::new() };
    let count = nvml.device_count().unwrap_or(0);
    (0..count)
        .filter_map(|index| {
            let read = || -> Result<GpuInfo, nvml_wrapper::error::NvmlError> {
                let dev = nvml.device_by_index(index)?;
                let mem = dev.memory_info()?;
                let cc = dev.cuda_compute_capability()?;
                Ok(GpuInfo {
                    index,
                    name: dev.name()?,
                    total_bytes: mem.total,
                    free_bytes: mem.free,
                    compute_capability: (cc.major.max(0) as u32, cc.minor.max(0) as u32),
                })
            };
            read().map_err(|e| tracing::debug!(index, error = %e, "GPU not readable through NVML")).ok()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lifecycle::memory::node_devices;

    fn h200(index: u32) -> GpuInfo {
        GpuInfo {
            index,
            name: "NVIDIA H200".into(),
            total_bytes: 140 << 30,
            free_bytes: 139 << 30,
            compute_capability: (9, 0),
        }
    }

    #[test]
    fn discovery_is_quiet_and_consistent_without_a_driver() {
        // CI has no NVIDIA driver: discovery must return (empty) rather than fail. Where a
        // driver is present, what it lists must be self-consistent.
        for gpu in discover() {
            assert!(gpu.free_bytes <= gpu.total_bytes, "{gpu:?}");
            assert!(!gpu.name.is_empty());
        }
    }

    #[test]
    fn the_engines_gpu_carries_the_budget_and_the_others_are_listed() {
        let gpus = [h200(0), h200(1)];
        let (dev, listed) = node_devices(Some(1), &gpus, None, 0.75, 1 << 30);
        assert_eq!(dev.name, "cuda:1");
        assert_eq!(dev.budget_bytes, 138 << 30, "free memory less the reserve");
        assert_eq!(dev.description.as_deref(), Some("NVIDIA H200, compute capability 9.0"));
        let names: Vec<_> = listed.iter().map(|d| (d.name.as_str(), d.budget_bytes)).collect();
        assert_eq!(names, [("cuda:0", 0)]);

        let (dev, _) = node_devices(Some(0), &gpus, Some(8 << 30), 0.75, 1 << 30);
        assert_eq!(dev.budget_bytes, 8 << 30, "an explicit budget wins");
    }

    #[test]
    fn a_cpu_engine_keeps_the_ram_budget_and_lists_every_gpu() {
        let (dev, listed) = node_devices(None, &[h200(0)], Some(1 << 30), 0.75, 0);
        assert_eq!((dev.name.as_str(), dev.budget_bytes), ("cpu", 1 << 30));
        assert_eq!(listed.len(), 1);
        assert_eq!((listed[0].name.as_str(), listed[0].total_bytes), ("cuda:0", 140 << 30));
    }
}
