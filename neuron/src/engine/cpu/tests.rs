//! The CPU decoder as a whole against candle-transformers' model, and batched steps against
//! each sequence alone; helpers the stage tests share.

use candle_core::quantized::gguf_file;
use candle_core::{Device, Tensor};

use super::{load, Decoder, Part, Settings};
use crate::engine::kv::KvCache;
use crate::engine::spec::ArchSpec;

/// `n` numbers in [−1, 1), different for each `seed`.
pub(super) fn data(n: usize, seed: u32) -> Vec<f32> {
    (0..n)
        .map(|i| (((i as u32).wrapping_mul(2654435761).wrapping_add(seed) >> 8) % 2000) as f32 / 1000.0 - 1.0)
        .collect()
}

/// The largest difference between `a` and `b`.
pub(super) fn close(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).fold(0f32, |m, (x, y)| m.max((x - y).abs()))
}

/// A decoder of a tiny generated llama in `dtype`, for `positions`.
fn tiny(name: &str, dtype: candle_core::quantized::GgmlDType, positions: usize) -> (Decoder, std::path::PathBuf) {
    let dir = std::env::temp_dir().join(format!("cortex-cpu-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("model.gguf");
    crate::testutil::write_tiny_llama(&path, crate::testutil::TinyLlama { dtype, ..Default::default() }).unwrap();
    let mut f = std::fs::File::open(&path).unwrap();
    let ct = gguf_file::Content::read(&mut f).unwrap();
    let spec = ArchSpec::from_gguf(&ct).unwrap();
    assert!(dtype != candle_core::quantized::GgmlDType::Q4_1 || super::applies(&spec, &ct));
    (load(&spec, &ct, &mut f, positions, Settings::default()).unwrap(), dir)
}

/// With f32 weights (candle's matmul on both sides) the whole model computes what
/// candle-transformers' quantized_llama computes, prefill and decode.
#[test]
fn the_model_matches_candles_llama_on_f32_weights() {
    use candle_transformers::models::quantized_llama::ModelWeights;
    let (ours, dir) = tiny("llama", candle_core::quantized::GgmlDType::F32, 64);
    let mut f = std::fs::File::open(dir.join("model.gguf")).unwrap();
    let ct = gguf_file::Content::read(&mut f).unwrap();
    let mut theirs = ModelWeights::from_gguf(ct, &mut f, &Device::Cpu).unwrap();
    // Twenty tokens: a prompt long enough for the worker pool's row-parallel paths, and longer
    // than a block of the KV cache.
    let prompt: Vec<u32> = (0..20u32).map(|i| (i * 37 + 5) % 250).collect();
    let mut cache = KvCache::default();
    let a = ours.forward(&mut cache, &prompt, 0).unwrap();
    let input = Tensor::new(&prompt[..], &Device::Cpu).unwrap().unsqueeze(0).unwrap();
    let b = theirs.forward(&input, 0).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap();
    assert!(close(&a, &b) < 1e-4, "prefill differs by {}", close(&a, &b));
    for (i, tok) in [40u32, 41, 42].into_iter().enumerate() {
        let a = ours.forward(&mut cache, &[tok], prompt.len() + i).unwrap();
        let input = Tensor::new(&[tok], &Device::Cpu).unwrap().unsqueeze(0).unwrap();
        let b = theirs.forward(&input, prompt.len() + i).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap();
        assert!(close(&a, &b) < 1e-4, "decode step {i} differs by {}", close(&a, &b));
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// A batched step gives every sequence the logits it gets alone, whatever mix of prompt
/// chunks and decode rows shares the batch (Q4_1 on cortex's kernels, where a batch of
/// eight rows takes the multi-row passes and a lone row the single-row ones).
#[test]
fn a_batched_step_gives_each_sequence_what_it_gets_alone() {
    let (model, dir) = tiny("batch", candle_core::quantized::GgmlDType::Q4_1, 128);
    assert!(model.kernel_share() > 0, "the projections run on cortex's kernels");
    let run = |rows: &mut [(&mut KvCache, &[u32], usize)]| {
        let mut parts: Vec<Part> =
            rows.iter_mut().map(|(cache, tokens, pos)| Part { cache, tokens, pos: *pos }).collect();
        model.forward_batch(&mut parts).unwrap()
    };
    let mut caches = crate::testutil::batch_matches_alone(run, 1e-5);
    // A part outside the model's positions fails the batch before any cache moves on.
    let mut bad = KvCache::default();
    let before = caches[0].len();
    let mut parts = vec![
        Part { cache: &mut caches[0], tokens: &[1], pos: before },
        Part { cache: &mut bad, tokens: &[1], pos: 500 },
    ];
    assert!(model.forward_batch(&mut parts).is_err());
    assert_eq!(caches[0].len(), before);
    let _ = std::fs::remove_dir_all(&dir);
}

/// A sequence that goes back into the middle of a cache block and recomputes from there gets
/// what a fresh sequence gets, and a forked cache (its blocks shared, then written) leaves the
/// original's logits unchanged.
#[test]
fn a_rewound_or_forked_sequence_computes_what_a_fresh_one_does() {
    let (model, dir) = tiny("rewind", candle_core::quantized::GgmlDType::Q4_1, 128);
    let prompt: Vec<u32> = (0..40u32).map(|i| (i * 37 + 5) % 250).collect();
    let other: Vec<u32> = (0..20u32).map(|i| (i * 11 + 3) % 250).collect();
    let fresh = |tokens: &[u32]| model.forward(&mut KvCache::default(), tokens, 0).unwrap();
    let rel = |a: &[f32], b: &[f32]| close(a, b) / b.iter().fold(0f32, |m, v| m.max(v.abs()));
    let mut cache = KvCache::default();
    model.forward(&mut cache, &prompt, 0).unwrap();
    let mut fork = cache.fork().unwrap();
    // Back to position 21 (mid-block), with different tokens from there.
    let at = 21;
    let got = model.forward(&mut cache, &other, at).unwrap();
    let want = fresh(&[&prompt[..at], &other[..]].concat());
    assert!(rel(&got, &want) < 1e-5, "rewound: {}", rel(&got, &want));
    // The fork still holds the whole prompt.
    let got = model.forward(&mut fork, &[7], prompt.len()).unwrap();
    let want = fresh(&[&prompt[..], &[7]].concat());
    assert!(rel(&got, &want) < 1e-5, "forked: {}", rel(&got, &want));
    let _ = std::fs::remove_dir_all(&dir);
}
