//! Engine benchmark in llama-bench's terms: load time, prefill (pp64, pp512) and decode (tg128)
//! tokens per second on one GGUF file, plus the batching question: what a quantized matmul
//! costs for 1, 4 and 8 rows, and decode of 2, 4 and 8 concurrent sequences, batched (one step
//! for all, as the scheduler runs them) and one after another (`CORTEX_BENCH_ONLY=batch` alone).
//!
//! `CORTEX_BENCH_MODEL=path.gguf cargo bench -p cortex-neuron --bench engine`
//! (default: models/SmolLM2-135M-Instruct.Q4_1.gguf). bench/vs-llama-cpp runs it beside
//! llama-bench on the same file. The engine's variables apply as in `cortex serve`
//! (`CORTEX_ENGINE=candle`, `CORTEX_DECODE_BITS=8`, …); `CORTEX_BENCH_DEPTH=N` measures decode
//! after an N-token prompt; `CORTEX_BENCH_ONLY=pp64,pp2048,tg128` runs those parts alone.

use std::path::PathBuf;
use std::time::Instant;

use candle_core::quantized::{gguf_file, QMatMul};
use candle_core::{Device, Module, Tensor};
use cortex_neuron::config::EngineConfig;
use cortex_neuron::engine::model::{ModelWeights, Sequence, StepInput};
use cortex_neuron::engine::DeviceChoice;

const REPS: usize = 3;

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Aggregate decode tok/s of `b` sequences over 64 steps each: all in one batched step
/// (`Sequence::forward_many`), or each stepped alone in turn (what the scheduler did before).
fn concurrent_decode(weights: &ModelWeights, vocab: u32) -> Result<(), Box<dyn std::error::Error>> {
    const STEPS: usize = 64;
    for b in [2usize, 4, 8] {
        let mut rates = [Vec::new(), Vec::new()];
        for _ in 0..REPS {
            for (batched, rates) in [true, false].into_iter().zip(rates.iter_mut()) {
                let mut seqs = (0..b).map(|_| weights.new_sequence()).collect::<Result<Vec<_>, _>>()?;
                for (i, s) in seqs.iter_mut().enumerate() {
                    s.forward(&[100 + i as u32], 0)?;
                }
                let t = Instant::now();
                for pos in 1..=STEPS {
                    let tokens: Vec<[u32; 1]> = (0..b).map(|i| [((pos * 31 + i * 7) as u32) % vocab + 100]).collect();
                    if batched {
                        let mut inputs: Vec<StepInput> =
                            seqs.iter_mut().zip(&tokens).map(|(seq, t)| StepInput { seq, tokens: t, pos }).collect();
                        for r in Sequence::forward_many(&mut inputs) {
                            r?;
                        }
                    } else {
                        for (seq, t) in seqs.iter_mut().zip(&tokens) {
                            seq.forward(t, pos)?;
                        }
                    }
                }
                rates.push((b * STEPS) as f64 / t.elapsed().as_secs_f64());
            }
        }
        let [batched, alone] = rates.map(median);
        println!("decode x{b}: batched {batched:.1} tok/s, one at a time {alone:.1} tok/s ({:.2}x)", batched / alone);
    }
    Ok(())
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let path = std::env::var_os("CORTEX_BENCH_MODEL")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../models/SmolLM2-135M-Instruct.Q4_1.gguf"));
    let threads = candle_core::utils::get_num_threads();
    println!("model: {}  threads: {threads}", path.display());

    let vocab = 1000u32;
    // CORTEX_BENCH_ONLY runs the listed parts alone (comma-separated: ppN for any prompt length
    // N, tg128, batch, or matmul for the kernels alone), for a profiler or bench/vs-llama-cpp;
    // CORTEX_BENCH_REPS sets the repetitions each figure is the median of.
    let only: Option<Vec<String>> =
        std::env::var("CORTEX_BENCH_ONLY").ok().map(|s| s.split(',').map(|p| p.trim().to_string()).collect());
    let wants = |part: &str| only.as_ref().is_none_or(|o| o.iter().any(|p| p == part));
    let reps: usize = std::env::var("CORTEX_BENCH_REPS").ok().and_then(|r| r.parse().ok()).unwrap_or(REPS).max(1);
    let kernels_only = only.as_ref().is_some_and(|o| o.iter().any(|p| p == "matmul"));
    let prefill: Vec<usize> = match &only {
        None => vec![64, 512],
        Some(o) => o.iter().filter_map(|p| p.strip_prefix("pp")?.parse().ok()).collect(),
    };
    let t0 = Instant::now();
    let content = gguf_file::Content::read(&mut std::fs::File::open(&path)?)?;
    // CORTEX_BENCH_DEPTH=N: decode after an N-token prompt (attention over a long cache).
    let depth: usize = std::env::var("CORTEX_BENCH_DEPTH").ok().and_then(|d| d.parse().ok()).unwrap_or(0);
    // Room for the longest prompt asked for (a Claude Code prompt is 7–13k tokens), and for
    // decode after `depth`.
    let context = prefill.iter().map(|n| n + 256).chain([depth + 256]).max().unwrap_or(0).max(4096);
    // The engine's settings from the environment as `cortex serve` reads them (CORTEX_ENGINE,
    // CORTEX_DECODE_BITS, …), on the CPU unless CORTEX_DEVICE says otherwise.
    let config = EngineConfig { device: DeviceChoice::Cpu, max_context: Some(context), ..Default::default() };
    let weights = ModelWeights::load_gguf(&path, content, &config.with_env()?.options()?)?;
    println!("load: {:.3} s", t0.elapsed().as_secs_f64());

    for &n in &prefill {
        let prompt: Vec<u32> = (0..n as u32).map(|i| (i * 7919) % vocab + 100).collect();
        let rates = (0..reps)
            .map(|_| {
                let mut seq = weights.new_sequence().expect("sequence");
                let t = Instant::now();
                seq.forward(&prompt, 0).expect("prefill");
                n as f64 / t.elapsed().as_secs_f64()
            })
            .collect();
        println!("pp{n}: {:.1} tok/s", median(rates));
    }
    if wants("batch") && !kernels_only {
        concurrent_decode(&weights, vocab)?;
    }
    if wants("tg128") && !kernels_only {
        let rates = (0..reps)
            .map(|_| {
                let mut seq = weights.new_sequence().expect("sequence");
                let prompt: Vec<u32> = (0..=depth as u32).map(|i| (i * 7919) % vocab + 100).collect();
                seq.forward(&prompt, 0).expect("first");
                let t = Instant::now();
                for pos in depth + 1..=depth + 128 {
                    seq.forward(&[(pos as u32 * 31) % vocab + 100], pos).expect("decode");
                }
                128.0 / t.elapsed().as_secs_f64()
            })
            .collect();
        let at = if depth > 0 { format!(" @ {depth}") } else { String::new() };
        println!("tg128{at}: {:.1} tok/s", median(rates));
    }
    if only.is_some() && !kernels_only {
        return Ok(());
    }

    // Batching: the FFN up-projection of layer 0 with 1, 4 and 8 activation rows.
    let mut file = std::fs::File::open(&path)?;
    let content = gguf_file::Content::read(&mut file)?;
    let w = content.tensor(&mut file, "blk.0.ffn_up.weight", &Device::Cpu)?;
    let (_, k) = w.shape().dims2()?;
    let format = cortex_kernels::Format::from_ggml(w.dtype());
    let ours = match format {
        Some(f) => Some(cortex_kernels::QWeight::from_gguf_bytes(f, w.shape().dims2()?.0, k, &w.data()?)?),
        None => None,
    };
    let mm = QMatMul::from_qtensor(w)?;
    let mut per_row = Vec::new();
    for rows in [1usize, 4, 8].into_iter().filter(|_| !kernels_only) {
        let x = Tensor::randn(0f32, 1.0, (rows, k), &Device::Cpu)?;
        let iters = 200;
        let t = Instant::now();
        for _ in 0..iters {
            mm.forward(&x)?;
        }
        let us = t.elapsed().as_secs_f64() * 1e6 / iters as f64;
        per_row.push((rows, us));
    }
    let base = per_row.first().map_or(1.0, |r| r.1);
    for (rows, us) in per_row {
        println!(
            "matmul ffn_up x{rows}: {us:.1} µs ({:.2}x one row, {:.2}x per row)",
            us / base,
            us / base / rows as f64
        );
    }
    if let Some(q) = ours {
        println!("cortex kernels: {:?}", cortex_kernels::level());
        kernel_rates("ffn_up", &q, !kernels_only, true);
    }
    if kernels_only {
        // The other shapes and formats a layer holds (Gemma 3: Q6_K or Q4_K down, Q4_K output).
        for name in ["blk.0.ffn_down", "blk.0.attn_output", "output", "token_embd"] {
            let Ok(w) = content.tensor(&mut file, &format!("{name}.weight"), &Device::Cpu) else { continue };
            let (n, k) = w.shape().dims2()?;
            if let Some(f) = cortex_kernels::Format::from_ggml(w.dtype()) {
                println!("{name}: {f:?} {n}x{k}");
                let q = cortex_kernels::QWeight::from_gguf_bytes(f, n, k, &w.data()?)?;
                // The output layer (the tied embedding where there is none): decode-sized only.
                let head = !name.starts_with("blk.");
                kernel_rates(name, &q, head, !head);
                if head {
                    break;
                }
            }
        }
    }
    Ok(())
}

/// Our kernels on one weight: decode-sized calls (`decode`), then (`prompt`) a 512-token prompt
/// at both activation precisions, as multiply-adds per second.
fn kernel_rates(name: &str, q: &cortex_kernels::QWeight, decode: bool, prompt: bool) {
    let k = q.k;
    for rows in [1usize, 4, 8].into_iter().filter(|_| decode) {
        let x: Vec<f32> = (0..rows * k).map(|i| (i % 97) as f32 / 97.0 - 0.5).collect();
        let mut out = vec![0f32; rows * q.n];
        let iters = (200_000_000 / q.bytes()).clamp(5, 500);
        let t = Instant::now();
        for _ in 0..iters {
            // At the engine's decode precision.
            q.matmul_with(&x, rows, &mut out, cortex_kernels::Precision::I16);
        }
        let us = t.elapsed().as_secs_f64() * 1e6 / iters as f64;
        println!("cortex matmul {name} x{rows} I16: {us:.1} µs ({:.1} GB/s of weights)", q.bytes() as f64 / us / 1e3);
    }
    if !prompt {
        return;
    }
    let rows = 512;
    let x: Vec<f32> = (0..rows * k).map(|i| (i % 97) as f32 / 97.0 - 0.5).collect();
    let mut out = vec![0f32; rows * q.n];
    for p in [cortex_kernels::Precision::I16, cortex_kernels::Precision::I8] {
        let iters = 20;
        let t = Instant::now();
        for _ in 0..iters {
            q.matmul_with(&x, rows, &mut out, p);
        }
        let s = t.elapsed().as_secs_f64() / iters as f64;
        let gmac = (rows * k * q.n) as f64 / s / 1e9;
        println!("cortex matmul {name} x{rows} {p:?}: {:.2} ms ({gmac:.1} GMAC/s)", s * 1e3);
    }
}
