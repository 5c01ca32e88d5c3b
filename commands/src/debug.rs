//! `cortex debug`: tools for checking the engine itself, hidden from `--help`.
//! `cortex debug logits` runs one prompt through a model on a chosen device and prints the last
//! position's logits (and, with `--greedy N`, the N greedy tokens that follow), so that a GPU
//! build can be compared with the CPU number for number (scripts/gpu-check does).

use std::fmt::Write;
use std::path::PathBuf;
use std::time::Instant;

use anyhow::Context;
use cortex_neuron::config::EngineConfig;
use cortex_neuron::engine::{device_name, prompt_logits, DType, WeightsSource};
use serde::Serialize;

use crate::error::user;

#[derive(Debug, clap::Subcommand)]
pub enum DebugCommand {
    /// Print the last position's logits for a prompt (greedy, no chat template)
    Logits(LogitsArgs),
}

#[derive(Debug, Clone, clap::Args)]
pub struct LogitsArgs {
    /// GGUF file or safetensors directory
    #[arg(long, short = 'm', value_name = "PATH")]
    pub model: PathBuf,
    /// Text fed to the model as it is
    #[arg(long, short = 'p', value_name = "TEXT", default_value = "The capital of France is")]
    pub prompt: String,
    /// Device to compute on: cpu, cuda or cuda:N [default: what `cortex serve` would use]
    #[arg(long, value_name = "DEVICE")]
    pub device: Option<String>,
    /// What a safetensors model computes in: f32, bf16 or f16 [default: bf16 on a GPU, f32 on
    /// the CPU]
    #[arg(long, value_name = "DTYPE", value_parser = ["f32", "bf16", "f16"])]
    pub dtype: Option<String>,
    /// Also continue the prompt this many tokens, each the argmax of the last
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub greedy: usize,
    /// Print one JSON document with every logit instead of the top ten
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Serialize)]
struct Logits {
    model: PathBuf,
    device: String,
    tokens: Vec<u32>,
    argmax: usize,
    /// The greedy continuation's token ids (`--greedy`).
    greedy: Vec<u32>,
    seconds: f64,
    logits: Vec<f32>,
}

pub fn run(command: DebugCommand) -> anyhow::Result<()> {
    match command {
        DebugCommand::Logits(args) => logits(args),
    }
}

fn logits(args: LogitsArgs) -> anyhow::Result<()> {
    let source = if args.model.is_dir() {
        WeightsSource::Safetensors(args.model.clone())
    } else if args.model.is_file() {
        WeightsSource::Gguf(args.model.clone())
    } else {
        return user(format!("{} is neither a GGUF file nor a safetensors directory", args.model.display()));
    };
    // The engine's settings as `cortex serve` reads them from the environment (CORTEX_ENGINE,
    // CORTEX_DEVICE, …), --device over CORTEX_DEVICE.
    let fixable = |e: String| crate::UserError(e);
    let mut engine = EngineConfig::default().with_env().map_err(|e| fixable(e.to_string()))?;
    if let Some(name) = &args.device {
        engine.device = name.parse().map_err(fixable)?;
    }
    let mut opts = engine.options().map_err(|e| fixable(e.to_string()))?;
    opts.dtype = match args.dtype.as_deref() {
        Some("f32") => Some(DType::F32),
        Some("bf16") => Some(DType::BF16),
        Some("f16") => Some(DType::F16),
        _ => None,
    };
    let t0 = Instant::now();
    let run = prompt_logits(&source, &opts, &args.prompt, args.greedy)
        .with_context(|| format!("running {}", args.model.display()))?;
    let argmax = run.logits.iter().enumerate().max_by(|a, b| a.1.total_cmp(b.1)).map(|(i, _)| i).unwrap_or(0);
    let out = Logits {
        model: args.model,
        device: device_name(&opts.device),
        tokens: run.tokens,
        argmax,
        greedy: run.greedy,
        seconds: t0.elapsed().as_secs_f64(),
        logits: run.logits,
    };
    if args.json {
        return crate::printer::json(&out);
    }
    let mut ranked: Vec<(usize, f32)> = out.logits.iter().copied().enumerate().collect();
    ranked.sort_by(|a, b| b.1.total_cmp(&a.1));
    let mut text = format!(
        "{} on {}: {} prompt tokens, {} logits, {:.2} s\n{:>8}  LOGIT\n",
        out.model.display(),
        out.device,
        out.tokens.len(),
        out.logits.len(),
        out.seconds,
        "TOKEN"
    );
    for (id, v) in ranked.iter().take(10) {
        writeln!(text, "{id:>8}  {v:.6}")?;
    }
    if !out.greedy.is_empty() {
        let ids: Vec<String> = out.greedy.iter().map(u32::to_string).collect();
        writeln!(text, "greedy continuation: {}", ids.join(" "))?;
    }
    crate::printer::emit(&text)
}
