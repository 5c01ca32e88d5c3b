//! Sentence embeddings: a BERT-family encoder from a safetensors repository laid out as
//! sentence-transformers saves one (`config.json`, `tokenizer.json`, `model.safetensors`,
//! `1_Pooling/config.json`, and `modules.json` naming a `Normalize` module where vectors are
//! unit length), run by candle-transformers' BERT.

use std::path::Path;

use candle_core::{DType, Device, Tensor, D};
use candle_nn::VarBuilder;
use candle_transformers::models::bert::{BertModel, Config as BertConfig};
use serde::Deserialize;
use tokenizers::Tokenizer;

use super::EngineError;

/// Sequences per forward pass: enough to fill the matrix units, few enough that padding to the
/// batch's longest input stays cheap (inputs are sorted by length first).
const BATCH: usize = 32;

/// How token vectors become one vector (sentence-transformers' `1_Pooling/config.json`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pooling {
    Mean,
    Cls,
}

/// An input longer than the model reads.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("input is {tokens} tokens, more than the {max} this model reads")]
pub struct TooLong {
    pub tokens: usize,
    pub max: usize,
}

pub struct Embedder {
    model: BertModel,
    tokenizer: Tokenizer,
    pooling: Pooling,
    normalize: bool,
    max_tokens: usize,
    dims: usize,
    vocab: usize,
    /// `[CLS]` and `[SEP]`, which wrap inputs given as token ids.
    cls: u32,
    sep: u32,
    pad: u32,
    device: Device,
}

#[derive(Deserialize)]
struct PoolingConfig {
    #[serde(default)]
    pooling_mode_cls_token: bool,
    #[serde(default)]
    pooling_mode_mean_tokens: bool,
    #[serde(default)]
    pooling_mode_max_tokens: bool,
}

#[derive(Deserialize)]
struct Module {
    #[serde(rename = "type")]
    kind: String,
}

#[derive(Deserialize)]
struct SentenceBertConfig {
    max_seq_length: Option<usize>,
}

fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T, EngineError> {
    let text = std::fs::read_to_string(path).map_err(|source| EngineError::Io { path: path.into(), source })?;
    serde_json::from_str(&text).map_err(|e| EngineError::Format(format!("{}: {e}", path.display())))
}

/// Whether `dir` holds an embedding model: a BERT-family safetensors repository with a
/// sentence-transformers pooling configuration.
pub fn is_embedder(dir: &Path) -> bool {
    dir.join("1_Pooling").join("config.json").is_file() && dir.join("config.json").is_file()
}

impl Embedder {
    pub fn load(dir: &Path, device: &Device) -> Result<Self, EngineError> {
        let config: BertConfig = read_json(&dir.join("config.json"))?;
        let pooling: PoolingConfig = read_json(&dir.join("1_Pooling").join("config.json"))?;
        let pooling = match (pooling.pooling_mode_mean_tokens, pooling.pooling_mode_cls_token) {
            (true, false) => Pooling::Mean,
            (false, true) => Pooling::Cls,
            _ if pooling.pooling_mode_max_tokens => {
                return Err(EngineError::Unsupported("max-token pooling".into()));
            }
            _ => return Err(EngineError::Format("1_Pooling/config.json: one of mean or CLS pooling".into())),
        };
        let modules = dir.join("modules.json");
        let normalize = modules.is_file()
            && read_json::<Vec<Module>>(&modules)?.iter().any(|m| m.kind.ends_with("models.Normalize"));
        let st_config = dir.join("sentence_bert_config.json");
        let max_seq =
            if st_config.is_file() { read_json::<SentenceBertConfig>(&st_config)?.max_seq_length } else { None };
        let max_tokens = max_seq.unwrap_or(config.max_position_embeddings).min(config.max_position_embeddings);

        let tok_path = dir.join("tokenizer.json");
        let mut tokenizer =
            Tokenizer::from_file(&tok_path).map_err(|e| EngineError::Format(format!("{}: {e}", tok_path.display())))?;
        // Length limits and padding are ours to apply: an over-long input is an error unless
        // the request asks for truncation, and batches pad to their own longest input.
        tokenizer.with_padding(None);
        tokenizer.with_truncation(None).map_err(|e| EngineError::Format(format!("{}: {e}", tok_path.display())))?;
        let id = |t: &str| {
            tokenizer.token_to_id(t).ok_or_else(|| EngineError::Format(format!("tokenizer has no {t} token")))
        };
        let (cls, sep) = (id("[CLS]")?, id("[SEP]")?);
        let pad = config.pad_token_id as u32;

        let weights = dir.join("model.safetensors");
        if !weights.is_file() {
            return Err(EngineError::Format(format!("{}: missing", weights.display())));
        }
        // SAFETY: the file is mapped read-only and not modified while the model lives.
        let vb = unsafe { VarBuilder::from_mmaped_safetensors(&[&weights], DType::F32, device) }
            .map_err(|e| EngineError::Format(format!("{}: {e}", weights.display())))?;
        let model =
            BertModel::load(vb, &config).map_err(|e| EngineError::Format(format!("{}: {e}", weights.display())))?;
        Ok(Self {
            model,
            tokenizer,
            pooling,
            normalize,
            max_tokens,
            dims: config.hidden_size,
            vocab: config.vocab_size,
            cls,
            sep,
            pad,
            device: device.clone(),
        })
    }

    /// Length of every vector.
    pub fn dims(&self) -> usize {
        self.dims
    }

    /// Most tokens one input may have, `[CLS]` and `[SEP]` included.
    pub fn max_tokens(&self) -> usize {
        self.max_tokens
    }

    pub fn vocab_size(&self) -> usize {
        self.vocab
    }

    /// Whether vectors come out unit length (the model's own `Normalize` module).
    pub fn normalized(&self) -> bool {
        self.normalize
    }

    pub fn pooling(&self) -> Pooling {
        self.pooling
    }

    /// `text` as the model reads it, `[CLS]` … `[SEP]`; cut to fit when `truncate`.
    pub fn encode(&self, text: &str, truncate: bool) -> Result<Vec<u32>, EmbedInputError> {
        let enc = self.tokenizer.encode(text, true).map_err(|e| EmbedInputError::Tokenizer(e.to_string()))?;
        self.fit(enc.get_ids().to_vec(), truncate)
    }

    /// Token ids given by the caller (the model's own vocabulary, no special tokens), wrapped
    /// in `[CLS]` … `[SEP]` as the tokenizer would.
    pub fn wrap_ids(&self, ids: &[u32], truncate: bool) -> Result<Vec<u32>, EmbedInputError> {
        if let Some(&bad) = ids.iter().find(|&&id| id as usize >= self.vocab) {
            return Err(EmbedInputError::UnknownToken { id: bad, vocab: self.vocab });
        }
        let mut out = Vec::with_capacity(ids.len() + 2);
        out.push(self.cls);
        out.extend_from_slice(ids);
        out.push(self.sep);
        self.fit(out, truncate)
    }

    fn fit(&self, mut ids: Vec<u32>, truncate: bool) -> Result<Vec<u32>, EmbedInputError> {
        if ids.len() <= self.max_tokens {
            return Ok(ids);
        }
        if !truncate {
            return Err(EmbedInputError::TooLong(TooLong { tokens: ids.len(), max: self.max_tokens }));
        }
        // Keep the head and the closing [SEP], as sentence-transformers' truncation does.
        let sep = ids[ids.len() - 1];
        ids.truncate(self.max_tokens - 1);
        ids.push(sep);
        Ok(ids)
    }

    /// One vector per input (each from [`Embedder::encode`] or [`Embedder::wrap_ids`]), in
    /// order. Inputs run in batches of similar length.
    pub fn embed(&self, inputs: &[Vec<u32>]) -> Result<Vec<Vec<f32>>, EngineError> {
        let mut order: Vec<usize> = (0..inputs.len()).collect();
        order.sort_by_key(|&i| inputs[i].len());
        let mut out = vec![Vec::new(); inputs.len()];
        for chunk in order.chunks(BATCH) {
            let batch: Vec<&[u32]> = chunk.iter().map(|&i| inputs[i].as_slice()).collect();
            let vectors = self.forward(&batch).map_err(|e| EngineError::Format(format!("embedding: {e}")))?;
            for (&i, v) in chunk.iter().zip(vectors) {
                out[i] = v;
            }
        }
        Ok(out)
    }

    fn forward(&self, batch: &[&[u32]]) -> candle_core::Result<Vec<Vec<f32>>> {
        let len = batch.iter().map(|s| s.len()).max().unwrap_or(0).max(1);
        let mut ids = Vec::with_capacity(batch.len() * len);
        let mut mask = Vec::with_capacity(batch.len() * len);
        for seq in batch {
            ids.extend_from_slice(seq);
            ids.extend(std::iter::repeat_n(self.pad, len - seq.len()));
            mask.extend(std::iter::repeat_n(1u32, seq.len()));
            mask.extend(std::iter::repeat_n(0u32, len - seq.len()));
        }
        let shape = (batch.len(), len);
        let ids = Tensor::from_vec(ids, shape, &self.device)?;
        let mask = Tensor::from_vec(mask, shape, &self.device)?;
        let types = ids.zeros_like()?;
        let hidden = self.model.forward(&ids, &types, Some(&mask))?; // (batch, len, dims)
        let pooled = match self.pooling {
            Pooling::Cls => hidden.narrow(1, 0, 1)?.squeeze(1)?,
            Pooling::Mean => {
                let m = mask.to_dtype(DType::F32)?.unsqueeze(2)?; // (batch, len, 1)
                let sum = hidden.broadcast_mul(&m)?.sum(1)?;
                sum.broadcast_div(&m.sum(1)?.clamp(1e-9, f32::MAX)?)?
            }
        };
        let pooled = if self.normalize {
            let norm = pooled.sqr()?.sum_keepdim(D::Minus1)?.sqrt()?.clamp(1e-12, f32::MAX)?;
            pooled.broadcast_div(&norm)?
        } else {
            pooled
        };
        pooled.to_vec2::<f32>()
    }
}

/// Why one input cannot be embedded (the caller's to fix: a 400).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EmbedInputError {
    #[error(transparent)]
    TooLong(TooLong),
    #[error("token id {id} is not in the model's vocabulary of {vocab}")]
    UnknownToken { id: u32, vocab: usize },
    #[error("tokenizer: {0}")]
    Tokenizer(String),
}

/// `v` cut to its first `dims` components and scaled back to unit length (OpenAI's
/// `dimensions`, for models trained so that a prefix of the vector carries meaning).
pub fn shorten(v: &mut Vec<f32>, dims: usize) {
    v.truncate(dims);
    let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    if norm > 0.0 {
        v.iter_mut().for_each(|x| *x /= norm);
    }
}

/// Most inputs one forward round takes from the queue: concurrent requests share rounds.
const ROUND_INPUTS: usize = 256;

struct Job {
    inputs: Vec<Vec<u32>>,
    reply: tokio::sync::oneshot::Sender<Result<Vec<Vec<f32>>, String>>,
}

/// An embedding model ready to serve: its encoder on a thread of its own, which takes every
/// request waiting when it starts a round and runs their inputs together.
pub struct EmbedModel {
    pub info: super::ModelInfo,
    embedder: std::sync::Arc<Embedder>,
    jobs: std::sync::mpsc::Sender<Job>,
    /// Requests queued or embedding now.
    busy: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

impl EmbedModel {
    /// Loads the model and starts its thread. Blocking.
    pub fn load(dir: &Path, device: &Device) -> Result<Self, EngineError> {
        let t0 = std::time::Instant::now();
        let embedder = std::sync::Arc::new(Embedder::load(dir, device)?);
        let info = super::ModelInfo {
            arch: "bert".into(),
            engine: "candle",
            kernels: "candle".into(),
            context_len: embedder.max_tokens(),
            vocab_size: embedder.vocab_size(),
            file_bytes: super::file_size(dir),
            load_seconds: t0.elapsed().as_secs_f64(),
            fallback_template: false,
        };
        let (jobs, rx) = std::sync::mpsc::channel::<Job>();
        let busy = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let (e, b) = (embedder.clone(), busy.clone());
        std::thread::Builder::new()
            .name("embed".into())
            .spawn(move || serve(&e, &rx, &b))
            .map_err(|e| EngineError::Format(format!("cannot start embedding thread: {e}")))?;
        Ok(Self { info, embedder, jobs, busy })
    }

    pub fn dims(&self) -> usize {
        self.embedder.dims()
    }

    /// Token ids of each input, checked against the model's length and vocabulary; the error
    /// names the input. CPU work: call it off the async workers for large requests.
    pub fn prepare(
        &self,
        inputs: &[cortex_proto::embed::EmbedInput],
        truncate: bool,
    ) -> Result<Vec<Vec<u32>>, (usize, EmbedInputError)> {
        use cortex_proto::embed::EmbedInput;
        inputs
            .iter()
            .enumerate()
            .map(|(i, x)| {
                match x {
                    EmbedInput::Text(t) => self.embedder.encode(t, truncate),
                    EmbedInput::Tokens(ids) => self.embedder.wrap_ids(ids, truncate),
                }
                .map_err(|e| (i, e))
            })
            .collect()
    }

    /// Queues tokenized inputs; the vectors arrive in order.
    pub async fn embed(&self, inputs: Vec<Vec<u32>>) -> Result<Vec<Vec<f32>>, String> {
        let (reply, rx) = tokio::sync::oneshot::channel();
        self.busy.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        if self.jobs.send(Job { inputs, reply }).is_err() {
            self.busy.fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
            return Err("the embedding thread has stopped".into());
        }
        rx.await.unwrap_or_else(|_| Err("the embedding thread has stopped".into()))
    }

    /// Requests queued or embedding now.
    pub fn busy(&self) -> usize {
        self.busy.load(std::sync::atomic::Ordering::Relaxed)
    }
}

/// The embedding thread: a round takes the first waiting request and every other one already
/// queued (up to [`ROUND_INPUTS`] inputs), embeds all their inputs in length-sorted batches,
/// and answers each. Ends when the model is dropped.
fn serve(e: &Embedder, rx: &std::sync::mpsc::Receiver<Job>, busy: &std::sync::atomic::AtomicUsize) {
    while let Ok(first) = rx.recv() {
        let mut round = vec![first];
        let mut n = round[0].inputs.len();
        while n < ROUND_INPUTS {
            match rx.try_recv() {
                Ok(job) => {
                    n += job.inputs.len();
                    round.push(job);
                }
                Err(_) => break,
            }
        }
        let all: Vec<Vec<u32>> = round.iter().flat_map(|j| j.inputs.iter().cloned()).collect();
        let answers: Vec<Result<Vec<Vec<f32>>, String>> = match e.embed(&all) {
            Ok(vectors) => {
                let mut it = vectors.into_iter();
                round.iter().map(|j| Ok(it.by_ref().take(j.inputs.len()).collect())).collect()
            }
            Err(err) => round.iter().map(|_| Err(err.to_string())).collect(),
        };
        for (job, answer) in round.into_iter().zip(answers) {
            busy.fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
            let _ = job.reply.send(answer);
        }
    }
}
