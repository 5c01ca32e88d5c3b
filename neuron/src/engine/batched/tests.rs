//! The batched decoder against candle-transformers' models and cortex's CPU decoder, and
//! batched steps against each sequence alone.

use candle_core::quantized::gguf_file;
use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;

use super::{BatchDecoder, Part};
use crate::engine::kv::KvCache;
use crate::engine::spec::ArchSpec;
use crate::testutil::{self, GgufArch, SafetensorsArch, TinyLlama};
use candle_core::quantized::GgmlDType;
use candle_transformers::models::{quantized_llama, quantized_qwen3, qwen3};

fn close(a: &[f32], b: &[f32]) -> f32 {
    let scale = b.iter().fold(0f32, |m, v| m.max(v.abs()));
    a.iter().zip(b).fold(0f32, |m, (x, y)| m.max((x - y).abs())) / scale
}

fn temp(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("cortex-batched-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A 20-token prompt, then three decode steps, through ours and through `theirs`.
fn agree(ours: &BatchDecoder, mut theirs: impl FnMut(&[u32], usize) -> Vec<f32>, bound: f32) {
    let prompt: Vec<u32> = (0..20u32).map(|i| (i * 37 + 5) % 250).collect();
    let mut cache = KvCache::default();
    let mut run = |tokens: &[u32], pos: usize| {
        ours.forward_batch(&mut [Part { cache: &mut cache, tokens, pos }]).unwrap().pop().unwrap()
    };
    let e = close(&run(&prompt, 0), &theirs(&prompt, 0));
    assert!(e < bound, "prefill differs by {e}");
    for (i, tok) in [40u32, 41, 42].into_iter().enumerate() {
        let pos = prompt.len() + i;
        let e = close(&run(&[tok], pos), &theirs(&[tok], pos));
        assert!(e < bound, "decode step {i} differs by {e}");
    }
}

fn gguf(arch: GgufArch, dtype: GgmlDType) -> (std::path::PathBuf, gguf_file::Content) {
    let dir = temp(&format!("{arch:?}-{dtype:?}"));
    let path = dir.join("model.gguf");
    testutil::write_tiny_gguf(&path, TinyLlama { dtype, ..Default::default() }, arch).unwrap();
    let ct = gguf_file::Content::read(&mut std::fs::File::open(&path).unwrap()).unwrap();
    (path, ct)
}

fn input(tokens: &[u32]) -> Tensor {
    Tensor::new(tokens, &Device::Cpu).unwrap().unsqueeze(0).unwrap()
}

fn flat(t: Tensor) -> Vec<f32> {
    t.flatten_all().unwrap().to_dtype(DType::F32).unwrap().to_vec1().unwrap()
}

/// On GGUF files it computes what candle-transformers' quantized llama and qwen3 compute:
/// llama to the bit (f32, Q4_1 and Q8_0 weights: the same ops, the same quantized matmuls).
/// candle's qwen3 runs its own fused attention on the CPU: 6e-5 apart on f32 weights, and
/// 4–8e-3 on quantized ones (measured; the projections are the same `QMatMul` calls).
#[test]
fn gguf_models_compute_what_candles_models_compute() {
    for (arch, dtype, bound) in [
        (GgufArch::Llama, GgmlDType::F32, 1e-6),
        (GgufArch::Llama, GgmlDType::Q4_1, 1e-6),
        (GgufArch::Llama, GgmlDType::Q8_0, 1e-6),
        (GgufArch::Qwen3, GgmlDType::F32, 2e-4),
        (GgufArch::Qwen3, GgmlDType::Q4_1, 2e-2),
    ] {
        let (path, ct) = gguf(arch, dtype);
        let spec = ArchSpec::from_gguf(&ct).unwrap();
        assert!(BatchDecoder::applies_to_gguf(&spec, &ct));
        let mut f = std::fs::File::open(&path).unwrap();
        let ours = BatchDecoder::from_gguf(&spec, &ct, &mut f, &Device::Cpu, 64).unwrap();
        let mut f = std::fs::File::open(&path).unwrap();
        if arch == GgufArch::Llama {
            let mut m = quantized_llama::ModelWeights::from_gguf(ct, &mut f, &Device::Cpu).unwrap();
            agree(&ours, |t, pos| flat(m.forward(&input(t), pos).unwrap()), bound);
        } else {
            let mut m = quantized_qwen3::ModelWeights::from_gguf(ct, &mut f, &Device::Cpu).unwrap();
            agree(&ours, |t, pos| flat(m.forward(&input(t), pos).unwrap()), bound);
        }
        let _ = std::fs::remove_dir_all(path.parent().unwrap());
    }
}

/// On Gemma 3 files it computes what cortex's CPU decoder computes (f32 weights, where both
/// multiply in f32): the embedding scale, per-head and post norms, GELU, and the sliding
/// window, which a 20-token prompt and its decode steps cross (a window of 4 on every other
/// layer, whose RoPE base differs too).
#[test]
fn gemma3_computes_what_the_cpu_decoder_computes() {
    let (path, ct) = gguf(GgufArch::Gemma3, GgmlDType::F32);
    let spec = ArchSpec::from_gguf(&ct).unwrap();
    assert!(BatchDecoder::applies_to_gguf(&spec, &ct));
    let open = || std::fs::File::open(&path).unwrap();
    let ours = BatchDecoder::from_gguf(&spec, &ct, &mut open(), &Device::Cpu, 64).unwrap();
    let cpu = crate::engine::cpu::load(&spec, &ct, &mut open(), 64, Default::default()).unwrap();
    let mut cache = KvCache::default();
    agree(&ours, |t, pos| cpu.forward(&mut cache, t, pos).unwrap(), 1e-5);
    // A prompt in chunks (the scheduler's way), each chunk's rows masked by the window.
    let prompt: Vec<u32> = (0..20u32).map(|i| (i * 37 + 5) % 250).collect();
    let mut cache = KvCache::default();
    let mut last = Vec::new();
    for (i, chunk) in prompt.chunks(7).enumerate() {
        let part = Part { cache: &mut cache, tokens: chunk, pos: i * 7 };
        last = ours.forward_batch(&mut [part]).unwrap().remove(0);
    }
    let whole = cpu.forward(&mut Default::default(), &prompt, 0).unwrap();
    assert!(close(&last, &whole) < 1e-5, "chunked prefill differs by {}", close(&last, &whole));
    let _ = std::fs::remove_dir_all(path.parent().unwrap());
}

/// On safetensors repositories it computes what candle-transformers' qwen3 and llama compute.
#[test]
fn safetensors_models_compute_what_candles_models_compute() {
    use candle_transformers::models::llama;
    for arch in [SafetensorsArch::Qwen3, SafetensorsArch::Llama] {
        let dir = temp(&format!("st-{arch:?}"));
        testutil::write_tiny_safetensors(&dir, arch, TinyLlama::default()).unwrap();
        let config: serde_json::Value =
            serde_json::from_slice(&std::fs::read(dir.join("config.json")).unwrap()).unwrap();
        assert!(BatchDecoder::applies_to_config(&config));
        let spec = ArchSpec::from_config(&config).unwrap();
        let vb = || unsafe {
            VarBuilder::from_mmaped_safetensors(&[dir.join("model.safetensors")], DType::F32, &Device::Cpu).unwrap()
        };
        let ours = BatchDecoder::from_safetensors(&spec, &config, vb(), DType::F32, &Device::Cpu, 64).unwrap();
        if arch == SafetensorsArch::Qwen3 {
            let cfg: qwen3::Config = serde_json::from_value(config).unwrap();
            let mut m = qwen3::ModelForCausalLM::new(&cfg, vb()).unwrap();
            agree(&ours, |t, pos| flat(m.forward(&input(t), pos).unwrap()), 1e-5);
        } else {
            let cfg: llama::LlamaConfig = serde_json::from_value(config).unwrap();
            let cfg = cfg.into_config(false);
            let m = llama::Llama::load(vb(), &cfg).unwrap();
            let mut cache = llama::Cache::new(true, DType::F32, &cfg, &Device::Cpu).unwrap();
            agree(&ours, |t, pos| flat(m.forward(&input(t), pos, &mut cache).unwrap()), 1e-5);
        }
        let _ = std::fs::remove_dir_all(&dir);
    }
}

/// A batched step gives every sequence the logits it gets alone, with prompt chunks and
/// decode rows of several sequences in one step; a bad part fails the step with no cache
/// moved on.
#[test]
fn a_batched_step_gives_each_sequence_what_it_gets_alone() {
    let (path, ct) = gguf(GgufArch::Llama, GgmlDType::Q4_1);
    let spec = ArchSpec::from_gguf(&ct).unwrap();
    let model =
        BatchDecoder::from_gguf(&spec, &ct, &mut std::fs::File::open(&path).unwrap(), &Device::Cpu, 300).unwrap();
    let run = |rows: &mut [(&mut KvCache, &[u32], usize)]| {
        let mut parts: Vec<Part> =
            rows.iter_mut().map(|(cache, tokens, pos)| Part { cache, tokens, pos: *pos }).collect();
        model.forward_batch(&mut parts).unwrap()
    };
    let mut caches = testutil::batch_matches_alone(run, 1e-4);
    let before = caches[0].len();
    let mut bad = KvCache::default();
    let mut parts =
        [Part { cache: &mut caches[0], tokens: &[1], pos: before }, Part { cache: &mut bad, tokens: &[9999], pos: 0 }];
    let err = model.forward_batch(&mut parts).unwrap_err().to_string();
    assert!(err.contains("outside the vocabulary"), "{err}");
    assert_eq!(caches[0].len(), before);
    let _ = std::fs::remove_dir_all(path.parent().unwrap());
}

/// A sequence that goes back into its cache (mid-block) and recomputes from there gets what a
/// fresh sequence gets; a forked cache keeps the original's rows.
#[test]
fn a_rewound_or_forked_sequence_computes_what_a_fresh_one_does() {
    let (path, ct) = gguf(GgufArch::Gemma3, GgmlDType::F32);
    let spec = ArchSpec::from_gguf(&ct).unwrap();
    let model =
        BatchDecoder::from_gguf(&spec, &ct, &mut std::fs::File::open(&path).unwrap(), &Device::Cpu, 64).unwrap();
    let run = |cache: &mut KvCache, tokens: &[u32], pos: usize| {
        model.forward_batch(&mut [Part { cache, tokens, pos }]).unwrap().remove(0)
    };
    let prompt: Vec<u32> = (0..30u32).map(|i| (i * 37 + 5) % 250).collect();
    let other: Vec<u32> = (0..9u32).map(|i| (i * 11 + 3) % 250).collect();
    let mut cache = KvCache::default();
    run(&mut cache, &prompt, 0);
    let mut fork = cache.fork().unwrap();
    let got = run(&mut cache, &other, 21);
    let want = run(&mut KvCache::default(), &[&prompt[..21], &other[..]].concat(), 0);
    assert!(close(&got, &want) < 1e-5, "rewound: {}", close(&got, &want));
    let got = run(&mut fork, &[7], prompt.len());
    let want = run(&mut KvCache::default(), &[&prompt[..], &[7]].concat(), 0);
    assert!(close(&got, &want) < 1e-5, "forked: {}", close(&got, &want));
    assert!(
        model.forward_batch(&mut [Part { cache: &mut fork, tokens: &[1], pos: 40 }]).is_err(),
        "a skip past the cache"
    );
    let _ = std::fs::remove_dir_all(path.parent().unwrap());
}
