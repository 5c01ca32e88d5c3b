//! `cortex devices`: what this host offers a neuron, without one running: RAM, the GPUs NVML
//! sees, which device the engine would compute on, and the memory budget `cortex serve` would
//! give it with the same configuration.

use std::fmt::Write;
use std::path::PathBuf;

use cortex_neuron::config::{Config, DEVICE_ENV};
use cortex_neuron::engine::{cuda_ordinal, device_by_name, device_name, Device as EngineDevice, DeviceChoice};
use cortex_neuron::gpu::{self, GpuInfo};
use cortex_neuron::lifecycle::memory::{self, Device};
use serde::Serialize;

use crate::status::mib;

#[derive(Debug, Clone, clap::Args)]
pub struct DevicesArgs {
    /// Print one JSON document instead of a table
    #[arg(long)]
    pub json: bool,
    /// cortex.toml whose [memory] and [engine] settings apply (default: built-in defaults)
    #[arg(long, short = 'c', env = "CORTEX_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
}

/// What `--json` prints.
#[derive(Debug, Serialize)]
struct Report {
    /// The device models would run on: `cpu` or `cuda:N`.
    engine_device: String,
    /// Whether this binary was built with the `cuda` feature.
    cuda_build: bool,
    /// Why CUDA is not used although this build has it (no driver, no GPU, CORTEX_DEVICE), or
    /// why the configured device cannot be opened.
    #[serde(skip_serializing_if = "Option::is_none")]
    cuda_error: Option<String>,
    /// The engine's device with its budget, then the other GPUs.
    devices: Vec<Device>,
    /// RAM, which holds models on a CPU node and the loading buffers on a GPU node.
    ram_bytes: u64,
    /// Every GPU NVML reports (none without an NVIDIA driver).
    gpus: Vec<GpuInfo>,
    /// The kernel level cortex's CPU kernels run at on this host (`scalar`, `avx2`,
    /// `avx512vnni`), after `CORTEX_KERNELS` and `[engine] kernels`.
    cpu_kernels: &'static str,
    /// AMX: `absent`, `granted` (the CPU has it and Linux lets cortex use it) or `refused`.
    /// No kernel uses it yet.
    amx: &'static str,
}

pub fn run(args: DevicesArgs) -> anyhow::Result<()> {
    let config = match &args.config {
        Some(path) => Config::from_file(path).map_err(|e| crate::UserError(e.to_string()))?,
        None => Config::default(),
    };
    let (budget, reserve) = config.memory_budget().map_err(|e| crate::UserError(e.to_string()))?;
    let gpus = gpu::discover();
    // The level `cortex serve` would run at: [engine] kernels caps it (CORTEX_KERNELS over it).
    if let Some(cap) = config.engine.kernels {
        let _ = cortex_kernels::set_level_cap(cap);
    }
    // The device `cortex serve` would open: [engine] device, CORTEX_DEVICE over it.
    let choice = config.engine.clone().with_env().map_err(|e| crate::UserError(e.to_string()))?.device;
    let (engine, open_error) = match choice.open() {
        Ok(device) => (device, None),
        Err(e) => (EngineDevice::Cpu, Some(format!("device {choice} ([engine] device or {DEVICE_ENV}): {e}"))),
    };
    let cuda_build = gpu::CUDA_BUILD;
    // Say why CUDA is not used: the configured device cannot be opened, the configuration asks
    // for the CPU, or (auto) the build's own reason.
    let cuda_error = open_error.or_else(|| {
        (cuda_build && !engine.is_cuda()).then(|| match choice {
            DeviceChoice::Cpu => format!("device cpu ([engine] device or {DEVICE_ENV})"),
            _ => device_by_name("cuda").err().map(|e| e.to_string()).unwrap_or_default(),
        })
    });
    let (device, listed) = memory::node_devices(cuda_ordinal(&engine), &gpus, budget, config.memory.share, reserve);
    let report = Report {
        engine_device: device_name(&engine),
        cuda_build,
        cuda_error,
        devices: std::iter::once(device).chain(listed).collect(),
        ram_bytes: memory::total_ram(),
        gpus,
        cpu_kernels: cortex_kernels::level().as_str(),
        amx: cortex_kernels::amx().as_str(),
    };
    if args.json {
        return crate::printer::json(&report);
    }
    crate::printer::emit(&render(&report))
}

fn render(r: &Report) -> String {
    let mut out = String::new();
    let build = if r.cuda_build { "a CUDA build" } else { "a CPU build" };
    let _ = writeln!(out, "engine: {} ({build})", r.engine_device);
    if let Some(e) = &r.cuda_error {
        let _ = writeln!(out, "CUDA not used: {e}");
    }
    let _ = writeln!(out, "RAM: {}", mib(r.ram_bytes));
    let amx = match r.amx {
        "granted" => "AMX granted by the OS (no AMX kernels yet)",
        "refused" => "AMX present, refused by the OS",
        _ => "no AMX",
    };
    let _ = writeln!(out, "CPU kernels: {} ({amx})", r.cpu_kernels);
    let _ = writeln!(out, "{:8}  {:>12}  {:>12}  {:>12}  DESCRIPTION", "DEVICE", "TOTAL", "FREE", "BUDGET");
    for d in &r.devices {
        let free = r.gpus.iter().find(|g| format!("cuda:{}", g.index) == d.name).map(|g| mib(g.free_bytes));
        let row = format!(
            "{:8}  {:>12}  {:>12}  {:>12}  {}",
            d.name,
            mib(d.total_bytes),
            free.unwrap_or_else(|| "-".into()),
            mib(d.budget_bytes),
            d.description.as_deref().unwrap_or("")
        );
        let _ = writeln!(out, "{}", row.trim_end());
    }
    if r.gpus.is_empty() {
        let _ = writeln!(out, "no NVIDIA GPU found (NVML absent or no devices)");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cpu_host_shows_the_cpu_budget_and_its_gpus() {
        let gpu = GpuInfo {
            index: 0,
            name: "NVIDIA H200".into(),
            total_bytes: 140 << 30,
            free_bytes: 139 << 30,
            compute_capability: (9, 0),
        };
        let (device, listed) = memory::node_devices(None, std::slice::from_ref(&gpu), Some(1 << 30), 0.75, 0);
        let r = Report {
            engine_device: "cpu".into(),
            cuda_build: false,
            cuda_error: None,
            devices: std::iter::once(device).chain(listed).collect(),
            ram_bytes: 8 << 30,
            gpus: vec![gpu],
            cpu_kernels: "avx2",
            amx: "absent",
        };
        let text = render(&r);
        assert!(text.contains("engine: cpu (a CPU build)"), "{text}");
        assert!(text.contains("CPU kernels: avx2 (no AMX)"), "{text}");
        let cpu = text.lines().find(|l| l.starts_with("cpu ")).unwrap_or_default();
        assert!(cpu.contains("1024.0 MiB"), "the CPU carries the budget: {text}");
        let gpu = text.lines().find(|l| l.starts_with("cuda:0")).unwrap_or_default();
        assert!(gpu.contains("143360.0 MiB") && gpu.contains("NVIDIA H200, compute capability 9.0"), "{text}");
        assert!(gpu.contains(" 0.0 MiB"), "a GPU the engine does not use has no budget: {text}");
    }
}
