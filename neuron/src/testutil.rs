//! Generated tiny models, so tests (and anyone trying cortex without a download) exercise the
//! real load → tokenize → template → generate path in seconds. The weights are random; the
//! structure (llama architecture, byte-level BPE vocabulary, ChatML template) is real.

use std::path::Path;

use candle_core::quantized::{gguf_file, GgmlDType, QTensor};
use candle_core::{Device, Tensor};
use rand::{Rng, SeedableRng};

use crate::engine::EngineError;

/// Shape of a generated llama model.
#[derive(Debug, Clone, Copy)]
pub struct TinyLlama {
    pub embedding: usize,
    pub layers: usize,
    pub heads: usize,
    pub kv_heads: usize,
    pub feed_forward: usize,
    pub context: usize,
    pub seed: u64,
    /// Quantization of the matrices (Q4_1 like the default model, Q8_0, F32...).
    pub dtype: GgmlDType,
}

impl Default for TinyLlama {
    fn default() -> Self {
        Self {
            embedding: 64,
            layers: 2,
            heads: 4,
            kv_heads: 2,
            feed_forward: 128,
            context: 512,
            seed: 42,
            dtype: GgmlDType::Q4_1,
        }
    }
}

/// GPT-2's byte → printable character table (the alphabet of byte-level BPE).
pub fn byte_level_alphabet() -> Vec<char> {
    let printable = |b: u32| (33..=126).contains(&b) || (161..=172).contains(&b) || (174..=255).contains(&b);
    let mut extra = 0;
    (0u32..256)
        .map(|b| {
            if printable(b) {
                char::from_u32(b).unwrap_or('?')
            } else {
                extra += 1;
                char::from_u32(255 + extra).unwrap_or('?')
            }
        })
        .collect()
}

pub const SPECIAL_TOKENS: &[&str] = &["<|endoftext|>", "<|im_start|>", "<|im_end|>"];
const CHATML: &str = "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}";

/// The vocabulary: 256 byte tokens, a few merges' results, then the special tokens.
fn vocab() -> (Vec<String>, Vec<String>) {
    let alphabet = byte_level_alphabet();
    let mut tokens: Vec<String> = alphabet.iter().map(|c| c.to_string()).collect();
    let sp = alphabet[b' ' as usize];
    let merges: Vec<(String, String)> = vec![
        (sp.to_string(), "t".into()),
        ("h".into(), "e".into()),
        (format!("{sp}t"), "he".into()),
        ("i".into(), "n".into()),
    ];
    for (a, b) in &merges {
        tokens.push(format!("{a}{b}"));
    }
    tokens.extend(SPECIAL_TOKENS.iter().map(|s| s.to_string()));
    (tokens, merges.into_iter().map(|(a, b)| format!("{a} {b}")).collect())
}

fn random(rng: &mut rand::rngs::StdRng, shape: (usize, usize), scale: f32) -> Result<Tensor, EngineError> {
    let data: Vec<f32> = (0..shape.0 * shape.1).map(|_| rng.random_range(-scale..scale)).collect();
    Ok(Tensor::from_vec(data, shape, &Device::Cpu)?)
}

/// GGUF architectures a generated model can take: the llama layout, plus qwen2's q/k/v biases,
/// qwen3's per-head q/k norms, or Gemma 3's norms and sliding window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GgufArch {
    Llama,
    Qwen2,
    Qwen3,
    /// Gemma 3's layout with a sliding window of 4 positions on every other layer, so that a
    /// short prompt crosses it.
    Gemma3,
}

/// Writes a random llama GGUF with tokenizer metadata and a ChatML template to `path`.
pub fn write_tiny_llama(path: &Path, spec: TinyLlama) -> Result<(), EngineError> {
    write_tiny_gguf(path, spec, GgufArch::Llama)
}

/// A Hermes / Qwen 2.5-style template that renders tools, `<tool_call>` blocks and tool results,
/// as such models ship it (reduced to what the format needs).
pub const HERMES_TEMPLATE: &str = r#"{%- if tools %}<|im_start|>system
{% if messages[0].role == 'system' %}{{ messages[0].content }}

{% endif %}# Tools

You may call one or more functions to assist with the user query.

You are provided with function signatures within <tools></tools> XML tags:
<tools>{% for tool in tools %}
{{ tool | tojson }}{% endfor %}
</tools>

For each function call, return a json object with function name and arguments within <tool_call></tool_call> XML tags:
<tool_call>
{"name": <function-name>, "arguments": <args-json-object>}
</tool_call><|im_end|>
{% elif messages[0].role == 'system' %}<|im_start|>system
{{ messages[0].content }}<|im_end|>
{% endif %}{% for message in messages %}{% if message.role == 'tool' %}<|im_start|>user
<tool_response>
{{ message.content }}
</tool_response><|im_end|>
{% elif message.role == 'assistant' and message.tool_calls %}<|im_start|>assistant
{% for tc in message.tool_calls %}<tool_call>
{"name": "{{ tc.function.name }}", "arguments": {{ tc.function.arguments | tojson }}}
</tool_call>{% endfor %}<|im_end|>
{% elif message.role != 'system' %}<|im_start|>{{ message.role }}
{{ message.content }}<|im_end|>
{% endif %}{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant
{% endif %}"#;

/// Writes a random GGUF of `arch` with tokenizer metadata and a ChatML template to `path`.
pub fn write_tiny_gguf(path: &Path, spec: TinyLlama, arch: GgufArch) -> Result<(), EngineError> {
    write_tiny_gguf_with_template(path, spec, arch, CHATML)
}

/// [`write_tiny_gguf`] with another chat template (e.g. [`HERMES_TEMPLATE`]).
pub fn write_tiny_gguf_with_template(
    path: &Path,
    spec: TinyLlama,
    arch: GgufArch,
    template: &str,
) -> Result<(), EngineError> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(spec.seed);
    let (tokens, merges) = vocab();
    let n_vocab = tokens.len();
    let (d, ff) = (spec.embedding, spec.feed_forward);
    let head_dim = d / spec.heads;
    let kv = head_dim * spec.kv_heads;
    let q = |t: Tensor, dt: GgmlDType| QTensor::quantize(&t, dt).map_err(EngineError::from);
    let ones = |n: usize| Tensor::ones((n,), candle_core::DType::F32, &Device::Cpu);
    let mut tensors: Vec<(String, QTensor)> = Vec::new();
    tensors.push(("token_embd.weight".into(), q(random(&mut rng, (n_vocab, d), 1.0)?, spec.dtype)?));
    // Special tokens get zero output rows: with random weights everything else scores higher,
    // so generations run to max_tokens instead of stopping at a random end-of-text.
    let mut out = random(&mut rng, (n_vocab, d), 1.0)?.to_vec2::<f32>()?;
    for row in out.iter_mut().skip(n_vocab - SPECIAL_TOKENS.len()) {
        row.iter_mut().for_each(|x| *x = 0.0);
    }
    let out = Tensor::new(out, &Device::Cpu)?;
    tensors.push(("output.weight".into(), q(out, spec.dtype)?));
    tensors.push(("output_norm.weight".into(), q(ones(d)?, GgmlDType::F32)?));
    let s = 1.0 / (d as f32).sqrt();
    for l in 0..spec.layers {
        let p = format!("blk.{l}");
        tensors.push((format!("{p}.attn_norm.weight"), q(ones(d)?, GgmlDType::F32)?));
        tensors.push((format!("{p}.ffn_norm.weight"), q(ones(d)?, GgmlDType::F32)?));
        tensors.push((format!("{p}.attn_q.weight"), q(random(&mut rng, (d, d), s)?, spec.dtype)?));
        tensors.push((format!("{p}.attn_k.weight"), q(random(&mut rng, (kv, d), s)?, spec.dtype)?));
        tensors.push((format!("{p}.attn_v.weight"), q(random(&mut rng, (kv, d), s)?, spec.dtype)?));
        tensors.push((format!("{p}.attn_output.weight"), q(random(&mut rng, (d, d), s)?, spec.dtype)?));
        tensors.push((format!("{p}.ffn_gate.weight"), q(random(&mut rng, (ff, d), s)?, spec.dtype)?));
        tensors.push((format!("{p}.ffn_up.weight"), q(random(&mut rng, (ff, d), s)?, spec.dtype)?));
        tensors.push((format!("{p}.ffn_down.weight"), q(random(&mut rng, (d, ff), s)?, spec.dtype)?));
        match arch {
            GgufArch::Llama => {}
            GgufArch::Qwen2 => {
                for (n, w) in [("attn_q", d), ("attn_k", kv), ("attn_v", kv)] {
                    let bias =
                        Tensor::new(random(&mut rng, (1, w), 0.1)?.flatten_all()?.to_vec1::<f32>()?, &Device::Cpu)?;
                    tensors.push((format!("{p}.{n}.bias"), q(bias, GgmlDType::F32)?));
                }
            }
            GgufArch::Qwen3 => {
                tensors.push((format!("{p}.attn_q_norm.weight"), q(ones(head_dim)?, GgmlDType::F32)?));
                tensors.push((format!("{p}.attn_k_norm.weight"), q(ones(head_dim)?, GgmlDType::F32)?));
            }
            GgufArch::Gemma3 => {
                // Norm weights other than one, so that a norm left out or misplaced shows.
                let mut norm = |n: usize| -> Result<QTensor, EngineError> {
                    let t = (random(&mut rng, (1, n), 0.3)?.flatten_all()? + 1.0)?;
                    q(t, GgmlDType::F32)
                };
                for (name, n) in [
                    ("attn_q_norm", head_dim),
                    ("attn_k_norm", head_dim),
                    ("post_attention_norm", d),
                    ("post_ffw_norm", d),
                ] {
                    tensors.push((format!("{p}.{name}.weight"), norm(n)?));
                }
            }
        }
    }
    use gguf_file::Value as V;
    let n_special = SPECIAL_TOKENS.len();
    let token_types: Vec<V> = (0..n_vocab).map(|i| V::I32(if i >= n_vocab - n_special { 3 } else { 1 })).collect();
    let id_of = |t: &str| tokens.iter().position(|x| x == t).unwrap_or(0) as u32;
    let a = match arch {
        GgufArch::Llama => "llama",
        GgufArch::Qwen2 => "qwen2",
        GgufArch::Qwen3 => "qwen3",
        GgufArch::Gemma3 => "gemma3",
    };
    let key = |k: &str| format!("{a}.{k}");
    let arch_keys: Vec<(String, V)> = vec![
        (key("context_length"), V::U32(spec.context as u32)),
        (key("embedding_length"), V::U32(d as u32)),
        (key("block_count"), V::U32(spec.layers as u32)),
        (key("feed_forward_length"), V::U32(ff as u32)),
        (key("attention.head_count"), V::U32(spec.heads as u32)),
        (key("attention.head_count_kv"), V::U32(spec.kv_heads as u32)),
        (key("attention.key_length"), V::U32(head_dim as u32)),
        (key("attention.value_length"), V::U32(head_dim as u32)),
        (key("rope.dimension_count"), V::U32(head_dim as u32)),
        (key("attention.layer_norm_rms_epsilon"), V::F32(1e-5)),
        (key("rope.freq_base"), V::F32(10000.0)),
        (key("rope.local_freq_base"), V::F32(1000.0)),
        (key("attention.sliding_window"), V::U32(4)),
        (key("attention.sliding_window_type"), V::U32(2)),
    ];
    let mut metadata: Vec<(&str, V)> = vec![
        ("general.architecture", V::String(a.into())),
        ("general.name", V::String(format!("cortex tiny test {a}"))),
        ("tokenizer.ggml.model", V::String("gpt2".into())),
        ("tokenizer.ggml.pre", V::String("smollm".into())),
        ("tokenizer.ggml.tokens", V::Array(tokens.iter().map(|t| V::String(t.clone())).collect())),
        ("tokenizer.ggml.token_type", V::Array(token_types)),
        ("tokenizer.ggml.merges", V::Array(merges.into_iter().map(V::String).collect())),
        ("tokenizer.ggml.bos_token_id", V::U32(id_of("<|im_start|>"))),
        ("tokenizer.ggml.eos_token_id", V::U32(id_of("<|im_end|>"))),
        ("tokenizer.ggml.add_bos_token", V::Bool(false)),
        ("tokenizer.chat_template", V::String(template.into())),
    ];
    metadata.extend(arch_keys.iter().map(|(k, v)| (k.as_str(), v.clone())));
    let md: Vec<(&str, &V)> = metadata.iter().map(|(k, v)| (*k, v)).collect();
    let ts: Vec<(&str, &QTensor)> = tensors.iter().map(|(k, v)| (k.as_str(), v)).collect();
    // Write to a temporary name and rename, so a reader never sees half a file.
    let tmp = path.with_extension("gguf.partial");
    let mut file = std::fs::File::create(&tmp).map_err(|e| EngineError::io(&tmp, e))?;
    gguf_file::write(&mut file, &md, &ts)?;
    drop(file);
    std::fs::rename(&tmp, path).map_err(|e| EngineError::io(path, e))?;
    Ok(())
}

/// Architectures a generated safetensors repository can take.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SafetensorsArch {
    Llama,
    Qwen3,
}

/// Writes a random safetensors repository (config.json, tokenizer.json, tokenizer_config.json,
/// model.safetensors) into `dir`, with the same vocabulary and template as the tiny GGUF.
pub fn write_tiny_safetensors(dir: &Path, arch: SafetensorsArch, spec: TinyLlama) -> Result<(), EngineError> {
    std::fs::create_dir_all(dir).map_err(|e| EngineError::io(dir, e))?;
    // The tokenizer: built from a tiny GGUF's metadata exactly as a GGUF model's would be.
    let gguf = dir.join("tokenizer-source.gguf");
    write_tiny_llama(&gguf, TinyLlama { layers: 1, ..spec })?;
    let content = gguf_file::Content::read(&mut std::fs::File::open(&gguf).map_err(|e| EngineError::io(&gguf, e))?)?;
    let tok = crate::engine::tokenizer::TextTokenizer::from_gguf(&content)?;
    std::fs::remove_file(&gguf).map_err(|e| EngineError::io(&gguf, e))?;
    let tok_path = dir.join("tokenizer.json");
    tok.inner().save(&tok_path, false).map_err(|e| EngineError::Tokenizer(e.to_string()))?;
    let n_vocab = tok.vocab_size();

    let mut rng = rand::rngs::StdRng::seed_from_u64(spec.seed);
    let (d, ff) = (spec.embedding, spec.feed_forward);
    let head_dim = d / spec.heads;
    let kv = head_dim * spec.kv_heads;
    let s = 1.0 / (d as f32).sqrt();
    let ones = |n: usize| Tensor::ones((n,), candle_core::DType::F32, &Device::Cpu);
    let mut t = std::collections::HashMap::new();
    t.insert("model.embed_tokens.weight".to_string(), random(&mut rng, (n_vocab, d), 1.0)?);
    t.insert("lm_head.weight".to_string(), random(&mut rng, (n_vocab, d), 1.0)?);
    t.insert("model.norm.weight".to_string(), ones(d)?);
    for l in 0..spec.layers {
        let p = format!("model.layers.{l}");
        t.insert(format!("{p}.input_layernorm.weight"), ones(d)?);
        t.insert(format!("{p}.post_attention_layernorm.weight"), ones(d)?);
        t.insert(format!("{p}.self_attn.q_proj.weight"), random(&mut rng, (d, d), s)?);
        t.insert(format!("{p}.self_attn.k_proj.weight"), random(&mut rng, (kv, d), s)?);
        t.insert(format!("{p}.self_attn.v_proj.weight"), random(&mut rng, (kv, d), s)?);
        t.insert(format!("{p}.self_attn.o_proj.weight"), random(&mut rng, (d, d), s)?);
        t.insert(format!("{p}.mlp.gate_proj.weight"), random(&mut rng, (ff, d), s)?);
        t.insert(format!("{p}.mlp.up_proj.weight"), random(&mut rng, (ff, d), s)?);
        t.insert(format!("{p}.mlp.down_proj.weight"), random(&mut rng, (d, ff), s)?);
        if arch == SafetensorsArch::Qwen3 {
            t.insert(format!("{p}.self_attn.q_norm.weight"), ones(head_dim)?);
            t.insert(format!("{p}.self_attn.k_norm.weight"), ones(head_dim)?);
        }
    }
    candle_core::safetensors::save(&t, dir.join("model.safetensors"))?;
    let eos = tok.eos.first().copied().unwrap_or(0);
    let config = serde_json::json!({
        "model_type": match arch { SafetensorsArch::Llama => "llama", SafetensorsArch::Qwen3 => "qwen3" },
        "vocab_size": n_vocab,
        "hidden_size": d,
        "intermediate_size": ff,
        "num_hidden_layers": spec.layers,
        "num_attention_heads": spec.heads,
        "num_key_value_heads": spec.kv_heads,
        "head_dim": head_dim,
        "max_position_embeddings": spec.context,
        "rms_norm_eps": 1e-5,
        "rope_theta": 10000.0,
        "tie_word_embeddings": false,
        "attention_bias": false,
        "sliding_window": null,
        "max_window_layers": spec.layers,
        "use_sliding_window": false,
        "hidden_act": "silu",
        "eos_token_id": eos,
    });
    let tc = serde_json::json!({
        "bos_token": "<|im_start|>",
        "eos_token": "<|im_end|>",
        "add_bos_token": false,
        "chat_template": CHATML,
    });
    for (name, v) in [("config.json", config), ("tokenizer_config.json", tc)] {
        let p = dir.join(name);
        std::fs::write(&p, serde_json::to_vec_pretty(&v).unwrap_or_default()).map_err(|e| EngineError::io(&p, e))?;
    }
    Ok(())
}

/// Checks that a decoder's batched steps give each sequence the logits it gets alone. `run`
/// runs one batched step: (cache, tokens, position) for each sequence in it. Eight prompts of
/// different lengths: each alone (prompt, then three decode steps), then batched: the first two
/// prompts alone, one step with the other prompts beside those two's decode rows, then steps of
/// decode rows with sequences at different positions. `bound`: max |Δ| / max |logit|. Returns
/// the batched sequences' caches.
pub fn batch_matches_alone<C: Default>(
    mut run: impl FnMut(&mut [(&mut C, &[u32], usize)]) -> Vec<Vec<f32>>,
    bound: f32,
) -> Vec<C> {
    let prompts: Vec<Vec<u32>> =
        [20u32, 7, 3, 1, 12, 5, 9, 2].iter().map(|&n| (0..n).map(|i| (i * 37 + n * 11) % 250).collect()).collect();
    let next = |step: usize, s: usize| ((step * 53 + s * 17) % 250) as u32;
    const DECODE: usize = 3;
    let alone: Vec<Vec<Vec<f32>>> = prompts
        .iter()
        .enumerate()
        .map(|(s, p)| {
            let mut cache = C::default();
            let mut out = run(&mut [(&mut cache, p, 0)]);
            for i in 0..DECODE {
                out.extend(run(&mut [(&mut cache, &[next(i, s)], p.len() + i)]));
            }
            out
        })
        .collect();
    let mut caches: Vec<C> = prompts.iter().map(|_| C::default()).collect();
    let mut got: Vec<Vec<Vec<f32>>> = vec![Vec::new(); prompts.len()];
    for s in 0..2 {
        got[s] = run(&mut [(&mut caches[s], &prompts[s], 0)]);
    }
    while got.iter().any(|g| g.len() <= DECODE) {
        let inputs: Vec<(usize, Vec<u32>, usize)> = (0..prompts.len())
            .filter_map(|s| match got[s].len() {
                0 => Some((s, prompts[s].clone(), 0)),
                done if done <= DECODE => Some((s, vec![next(done - 1, s)], prompts[s].len() + done - 1)),
                _ => None,
            })
            .collect();
        let mut rows: Vec<(&mut C, &[u32], usize)> = caches
            .iter_mut()
            .enumerate()
            .filter_map(|(s, cache)| {
                let (_, tokens, pos) = inputs.iter().find(|i| i.0 == s)?;
                Some((cache, &tokens[..], *pos))
            })
            .collect();
        let logits = run(&mut rows);
        assert_eq!(logits.len(), inputs.len(), "one result a sequence");
        for ((s, _, _), l) in inputs.iter().zip(logits) {
            got[*s].push(l);
        }
    }
    for (s, (a, b)) in alone.iter().zip(&got).enumerate() {
        assert_eq!(a.len(), b.len(), "sequence {s}");
        for (i, (a, b)) in a.iter().zip(b).enumerate() {
            let scale = a.iter().fold(0f32, |m, v| m.max(v.abs()));
            let e = a.iter().zip(b).fold(0f32, |m, (x, y)| m.max((x - y).abs())) / scale;
            assert!(e <= bound, "sequence {s} step {i}: {e}");
            let argmax = |v: &[f32]| v.iter().enumerate().max_by(|x, y| x.1.total_cmp(y.1)).map(|m| m.0);
            assert_eq!(argmax(a), argmax(b), "sequence {s} step {i}");
        }
    }
    caches
}
