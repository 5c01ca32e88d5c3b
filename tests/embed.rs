//! The embedding engine against sentence-transformers: all-MiniLM-L6-v2 (models/, fetched from
//! PyPI by .ci/run, or CORTEX_TEST_MODELS_DIR) on 50 fixed sentences, compared with the vectors
//! PyTorch gave for them (tests/data/embeddings/make_reference.py made the fixture once; see
//! its `made_with`).

mod common;

use std::path::PathBuf;

use candle_core::Device;
use common::real_model;
use cortex_neuron::engine::embed::{EmbedInputError, Embedder, Pooling, TooLong};
use serde_json::Value;

fn fixture() -> Value {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data/embeddings/all-minilm-l6-v2.json");
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
}

fn cosine(a: &[f32], b: &[f32]) -> f64 {
    let dot: f64 = a.iter().zip(b).map(|(x, y)| *x as f64 * *y as f64).sum();
    let na: f64 = a.iter().map(|x| (*x as f64).powi(2)).sum::<f64>().sqrt();
    let nb: f64 = b.iter().map(|x| (*x as f64).powi(2)).sum::<f64>().sqrt();
    dot / (na * nb)
}

#[test]
fn minilm_matches_sentence_transformers_on_fifty_sentences() {
    let fx = fixture();
    let e = Embedder::load(&real_model("all-MiniLM-L6-v2"), &Device::Cpu).unwrap();
    assert_eq!((e.dims(), e.max_tokens(), e.pooling(), e.normalized()), (384, 256, Pooling::Mean, true));
    let sentences: Vec<&str> = fx["sentences"].as_array().unwrap().iter().map(|s| s.as_str().unwrap()).collect();
    let counts: Vec<usize> =
        fx["token_counts"].as_array().unwrap().iter().map(|c| c.as_u64().unwrap() as usize).collect();
    // Truncation as sentence-transformers does it: the fixture's longest sentence is cut to 256.
    let inputs: Vec<Vec<u32>> = sentences.iter().map(|s| e.encode(s, true).unwrap()).collect();
    let ours: Vec<usize> = inputs.iter().map(Vec::len).collect();
    assert_eq!(ours, counts, "token counts differ from sentence-transformers'");

    let vectors = e.embed(&inputs).unwrap();
    let reference = fx["embeddings"].as_array().unwrap();
    let mut worst = (1.0f64, 0usize);
    for (i, (v, r)) in vectors.iter().zip(reference).enumerate() {
        let r: Vec<f32> = r.as_array().unwrap().iter().map(|x| x.as_f64().unwrap() as f32).collect();
        assert_eq!(v.len(), 384);
        let c = cosine(v, &r);
        if c < worst.0 {
            worst = (c, i);
        }
        let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
        assert!((norm - 1.0).abs() < 1e-4, "sentence {i}: norm {norm}");
    }
    eprintln!("lowest cosine to sentence-transformers: {:.7} (sentence {})", worst.0, worst.1);
    assert!(
        worst.0 >= 0.999,
        "sentence {} ({:?}): cosine {} to sentence-transformers",
        worst.1,
        sentences[worst.1],
        worst.0
    );

    // A batch pads its inputs to the longest: each vector is what that input gives alone.
    for i in [0, 17, 49] {
        let alone = e.embed(&inputs[i..=i]).unwrap();
        assert!(cosine(&alone[0], &vectors[i]) > 0.99999, "sentence {i} alone differs from batched");
    }
}

#[test]
fn over_long_inputs_and_foreign_token_ids_are_refused_with_reasons() {
    let e = Embedder::load(&real_model("all-MiniLM-L6-v2"), &Device::Cpu).unwrap();
    let long = "word ".repeat(400);
    assert_eq!(e.encode(&long, false), Err(EmbedInputError::TooLong(TooLong { tokens: 402, max: 256 })));
    let cut = e.encode(&long, true).unwrap();
    assert_eq!(cut.len(), 256);
    // Token ids are the model's own vocabulary, wrapped in [CLS] … [SEP] like text.
    let text = e.encode("hello world", false).unwrap();
    assert_eq!(e.wrap_ids(&text[1..text.len() - 1], false).unwrap(), text);
    assert_eq!(e.wrap_ids(&[101, 30522], false), Err(EmbedInputError::UnknownToken { id: 30522, vocab: 30522 }));
}
