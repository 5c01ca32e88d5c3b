//! Writes a tiny random llama GGUF (byte-level BPE vocabulary, ChatML template) to the given
//! path: a model that loads and generates in milliseconds, for trying cortex and for
//! benchmarks of everything but the forward pass.
//!
//! `cargo run -p cortex-neuron --example tiny-model -- models/tiny.gguf`

use cortex_neuron::testutil::{write_tiny_llama, TinyLlama};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let path = std::env::args().nth(1).ok_or("usage: tiny-model PATH.gguf")?;
    write_tiny_llama(std::path::Path::new(&path), TinyLlama::default())?;
    println!("{path}");
    Ok(())
}
