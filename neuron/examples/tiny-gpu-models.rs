//! Writes the small random models scripts/gpu-check compares the CUDA engine with the CPU on:
//! DIR/tiny-qwen3/ (a qwen3 safetensors repository in f32, about 10 MB),
//! DIR/tiny-llama.Q4_1.gguf (a llama GGUF with Q4_1 matrices, like the default model's) and
//! DIR/tiny-gemma3.Q4_1.gguf (Gemma 3's layout, a sliding window of 4 on every other layer).
//! All have 4 layers of width 256 and the tiny byte-level vocabulary; the weights are random,
//! from a fixed seed, so every run writes the same files.
//!
//! `cargo run -p cortex-neuron --example tiny-gpu-models -- .gpu`

use std::path::Path;

use cortex_neuron::testutil::{
    write_tiny_gguf, write_tiny_llama, write_tiny_safetensors, GgufArch, SafetensorsArch, TinyLlama,
};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = std::env::args().nth(1).ok_or("usage: tiny-gpu-models DIR")?;
    let dir = Path::new(&dir);
    let spec = TinyLlama {
        embedding: 256,
        layers: 4,
        heads: 4,
        kv_heads: 2,
        feed_forward: 512,
        context: 1024,
        ..Default::default()
    };
    write_tiny_safetensors(&dir.join("tiny-qwen3"), SafetensorsArch::Qwen3, spec)?;
    std::fs::create_dir_all(dir)?;
    write_tiny_llama(&dir.join("tiny-llama.Q4_1.gguf"), spec)?;
    write_tiny_gguf(&dir.join("tiny-gemma3.Q4_1.gguf"), spec, GgufArch::Gemma3)?;
    println!("{}", dir.display());
    Ok(())
}
