//! The inference engine: loads a model (GGUF or safetensors) with its tokenizer and chat
//! template, and runs generation on a dedicated thread per model (never on tokio workers).

pub mod batched;
mod block;
pub mod cpu;
pub mod detok;
pub mod embed;
pub mod gguf_meta;
pub mod grammar;
pub mod kv;
pub mod model;
pub mod options;
mod output;
pub mod prefix;
pub mod sampler;
pub mod scheduler;
pub mod spec;
pub mod template;
pub mod tokenizer;
pub mod toolcall;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use candle_core::quantized::gguf_file;
pub use candle_core::{DType, Device};
use cortex_proto::generate::{
    ContextOverflow, ErrorKind, Event, GenerateError, GenerateRequest, Prompt, SamplingParams,
};
use cortex_proto::tools::ToolChoice;
use grammar::{Constraint, Grammars, Vocab};
use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver};
use toolcall::Format;

use model::ModelWeights;
pub use model::WeightsSource;
pub use options::{
    cuda_ordinal, default_device, device_by_name, device_name, Bits, DeviceChoice, EngineKind, EngineOptions,
};
use scheduler::{Job, Scheduler};
use template::{ChatTemplate, Family};
use tokenizer::TextTokenizer;

use crate::metrics::ModelMetrics;

/// Why a model could not be loaded or a prompt could not be prepared.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// A model file could not be read.
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    /// The file is not a valid model (corrupt, truncated, missing keys).
    #[error("invalid model: {0}")]
    Format(String),
    /// Valid, but an architecture or tokenizer cortex does not run.
    #[error("unsupported: {0}")]
    Unsupported(String),
    /// The device asked for is unknown, not in this build, or not on this host.
    #[error("device: {0}")]
    Device(String),
    #[error("tokenizer: {0}")]
    Tokenizer(String),
    #[error("chat template: {0}")]
    Template(String),
    /// The request's messages cannot be turned into a prompt.
    #[error("{0}")]
    BadPrompt(String),
    /// Constrained decoding reached a state its grammar allows no token from.
    #[error("the output grammar reached a dead end: {0}")]
    Grammar(String),
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
}

impl EngineError {
    pub fn io(path: &Path, source: std::io::Error) -> Self {
        Self::Io { path: path.to_path_buf(), source }
    }
}

/// Facts about a loaded model, for status and listings.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ModelInfo {
    pub arch: String,
    /// What runs it: `cortex-cpu` (cortex's CPU decoder), `batched` (the batched tensor decoder,
    /// a GPU's default) or `candle` (candle-transformers' model).
    pub engine: &'static str,
    /// The kernel family that runs it (`ModelWeights::kernels`).
    pub kernels: String,
    pub context_len: usize,
    pub vocab_size: usize,
    pub file_bytes: u64,
    pub load_seconds: f64,
    pub fallback_template: bool,
}

/// A tokenized request that fits the context, with what its output must follow.
pub struct Prepared {
    pub prompt: Vec<u32>,
    pub max_tokens: usize,
    /// One compiled grammar per choice, when the output is constrained.
    pub constraints: Vec<Constraint>,
    /// The format to read tool calls in, when the request offers tools.
    pub calls: Option<Format>,
}

/// A loaded model of either kind.
pub enum Loaded {
    Generator(Box<LoadedModel>),
    Embedder(embed::EmbedModel),
}

impl Loaded {
    /// Loads what `source` holds: a sentence-transformers repository is an embedder, anything
    /// else a generator. Blocking.
    pub fn load(
        id: &str,
        source: &WeightsSource,
        opts: &EngineOptions,
        metrics: ModelMetrics,
    ) -> Result<Self, EngineError> {
        match source {
            WeightsSource::Safetensors(dir) if embed::is_embedder(dir) => {
                Ok(Self::Embedder(embed::EmbedModel::load(dir, &opts.device)?))
            }
            _ => Ok(Self::Generator(Box::new(LoadedModel::load(id, source, opts, metrics)?))),
        }
    }

    pub fn info(&self) -> &ModelInfo {
        match self {
            Self::Generator(m) => &m.info,
            Self::Embedder(m) => &m.info,
        }
    }

    /// (running or queued in all) requests.
    pub fn load_now(&self) -> (usize, usize) {
        match self {
            Self::Generator(m) => m.load_now(),
            Self::Embedder(m) => (m.busy(), 0),
        }
    }

    /// The generator, or a 400 saying this model embeds.
    pub fn generator(&self, id: &str) -> Result<&LoadedModel, GenerateError> {
        match self {
            Self::Generator(m) => Ok(m),
            Self::Embedder(_) => Err(GenerateError::new(
                ErrorKind::InvalidRequest,
                format!("`{id}` is an embedding model: it answers /v1/embeddings, not generation requests"),
            )),
        }
    }

    /// The embedder, or a 400 saying this model generates.
    pub fn embedder(&self, id: &str) -> Result<&embed::EmbedModel, GenerateError> {
        match self {
            Self::Embedder(m) => Ok(m),
            Self::Generator(_) => Err(GenerateError::new(
                ErrorKind::InvalidRequest,
                format!(
                    "`{id}` generates text: embeddings need an embedding model (see /v1/models, kind \"embedder\")"
                ),
            )),
        }
    }
}

/// A model ready to generate.
pub struct LoadedModel {
    pub id: String,
    pub info: ModelInfo,
    tokenizer: TextTokenizer,
    template: ChatTemplate,
    grammars: Arc<Grammars>,
    scheduler: Scheduler,
    strict_context: bool,
    /// The model's own sampling defaults, for what a request leaves unset.
    sampling: SamplingParams,
}

pub(crate) fn file_size(path: &Path) -> u64 {
    if path.is_dir() {
        std::fs::read_dir(path).map(|rd| rd.filter_map(|e| e.ok()?.metadata().ok()).map(|m| m.len()).sum()).unwrap_or(0)
    } else {
        std::fs::metadata(path).map(|m| m.len()).unwrap_or(0)
    }
}

fn invalid(e: impl std::fmt::Display) -> GenerateError {
    GenerateError::new(ErrorKind::InvalidRequest, e.to_string())
}

impl LoadedModel {
    /// Loads weights, tokenizer and template, and starts the generation thread. Blocking.
    pub fn load(
        id: &str,
        source: &WeightsSource,
        opts: &EngineOptions,
        metrics: ModelMetrics,
    ) -> Result<Self, EngineError> {
        let t0 = Instant::now();
        let (weights, tokenizer, template, vocab) = load_parts(source, opts)?;
        let info = ModelInfo {
            arch: weights.arch.clone(),
            engine: weights.engine(),
            kernels: weights.kernels(),
            context_len: weights.context_len,
            vocab_size: tokenizer.vocab_size(),
            file_bytes: file_size(source.path()),
            load_seconds: t0.elapsed().as_secs_f64(),
            fallback_template: template.fallback,
        };
        let n_logits = vocab.len().max(tokenizer.vocab_size());
        let grammars = Arc::new(Grammars::new(Arc::new(vocab), n_logits));
        let scheduler =
            Scheduler::spawn(id, weights, tokenizer.clone(), grammars.vocab().clone(), opts.scheduler, metrics)
                .map_err(|e| EngineError::Format(format!("cannot start generation thread: {e}")))?;
        Ok(Self {
            id: id.to_string(),
            info,
            tokenizer,
            template,
            grammars,
            scheduler,
            strict_context: opts.strict_context,
            sampling: opts.sampling.clone(),
        })
    }

    /// How this model writes tool calls.
    pub fn tool_format(&self) -> Format {
        self.template.tool_format
    }

    /// The prompt text a request renders to: its messages through the chat template, with its
    /// tools where the template renders them, else described in the system prompt (the generic
    /// format); a raw prompt as itself.
    pub fn render(&self, req: &GenerateRequest) -> Result<String, GenerateError> {
        let messages = match &req.prompt {
            Prompt::Text(t) => return Ok(t.clone()),
            Prompt::Chat(messages) => messages,
        };
        let mut messages = messages.clone();
        toolcall::prompt::name_results(&mut messages);
        let offered = !req.tools.is_empty() && req.tool_choice != ToolChoice::None;
        let (messages, tools) = match self.tool_format() {
            Format::Generic => {
                let m = toolcall::prompt::generic_conversation(
                    &messages,
                    &req.tools,
                    &req.tool_choice,
                    req.parallel_tool_calls,
                );
                (m, Vec::new())
            }
            _ if offered => (messages, req.tools.iter().map(toolcall::prompt::template_tool).collect()),
            _ => (messages, Vec::new()),
        };
        self.template.render(&messages, &tools, req.continue_final).map_err(invalid)
    }

    /// The prompt's token ids, as generation would see them (template and tools applied).
    pub fn tokenize(&self, req: &GenerateRequest) -> Result<Vec<u32>, GenerateError> {
        let text = self.render(req)?;
        self.tokenizer.encode(&text).map_err(invalid)
    }

    /// Tokenizes, checks the request against the context window and compiles its output
    /// grammar. CPU work: call it off the async runtime's workers for long prompts.
    pub fn prepare(&self, req: &GenerateRequest) -> Result<Prepared, GenerateError> {
        let prompt = self.tokenize(req)?;
        let ctx = self.info.context_len;
        if prompt.is_empty() {
            return Err(GenerateError::new(ErrorKind::InvalidRequest, "the prompt is empty"));
        }
        let overflow = |max_tokens: u32| {
            let prompt = prompt.len() as u32;
            GenerateError::context_length(ContextOverflow { prompt, max_tokens, context: ctx as u32 })
        };
        let asked = req.params.max_tokens.map(|n| n as usize);
        if prompt.len() > ctx {
            return Err(overflow(asked.unwrap_or(0) as u32));
        }
        // The prompt fits; a max_tokens beyond the room it leaves is lowered to that room (the
        // answer ends with `length` there), unless the operator asked for strict refusals.
        let room = ctx - prompt.len();
        let max_tokens = match asked {
            Some(n) if n > room && (room == 0 || self.strict_context) => return Err(overflow(n as u32)),
            None if room == 0 => return Err(overflow(1)),
            Some(n) => n.min(room),
            None => room,
        };
        let format = self.tool_format();
        let constraints = match grammar::for_request(req, format, self.grammars.vocab()) {
            Some(g) => (0..req.n.max(1)).map(|_| self.grammars.compile(g.clone())).collect::<Result<_, _>>()?,
            None => Vec::new(),
        };
        let calls = (!req.tools.is_empty() && req.tool_choice != ToolChoice::None).then_some(format);
        Ok(Prepared { prompt, max_tokens, constraints, calls })
    }

    /// Queues a prepared request, one job per choice; events of all choices arrive on the
    /// returned receiver. Dropping the receiver cancels the generation at its next step.
    pub fn submit(&self, req: &GenerateRequest, prepared: Prepared) -> Result<UnboundedReceiver<Event>, GenerateError> {
        let (tx, rx) = unbounded_channel();
        let n = req.n.max(1);
        let mut constraints = prepared.constraints.into_iter();
        let enqueued = Instant::now();
        let jobs = (0..n)
            .map(|choice| {
                let mut params = req.params.clone().or(&self.sampling);
                // Choices of one seeded request differ from each other, and each repeats.
                params.seed = params.seed.map(|s| s.wrapping_add(u64::from(choice)));
                Job {
                    id: req.id.clone(),
                    choice,
                    prompt: prepared.prompt.clone(),
                    max_tokens: prepared.max_tokens,
                    params,
                    constraint: constraints.next(),
                    calls: prepared.calls,
                    events: tx.clone(),
                    enqueued,
                    cache_control: req.cache_control,
                }
            })
            .collect();
        self.scheduler.submit(jobs)?;
        Ok(rx)
    }

    /// (running, queued) requests.
    pub fn load_now(&self) -> (usize, usize) {
        self.scheduler.load()
    }

    /// What the model's prefix cache holds and has done.
    pub fn prefix_stats(&self) -> prefix::PrefixStats {
        self.scheduler.prefix_stats()
    }
}

/// Weights, tokenizer, chat template and token bytes of a model, as `LoadedModel::load` reads
/// them.
fn load_parts(
    source: &WeightsSource,
    opts: &EngineOptions,
) -> Result<(ModelWeights, TextTokenizer, ChatTemplate, Vocab), EngineError> {
    Ok(match source {
        WeightsSource::Gguf(path) => {
            let mut file = std::fs::File::open(path).map_err(|e| EngineError::io(path, e))?;
            let content = gguf_file::Content::read(&mut file)
                .map_err(|e| EngineError::Format(format!("{}: {e}", path.display())))?;
            let tokenizer = TextTokenizer::from_gguf(&content)?;
            let template_src =
                opts.chat_template.clone().or_else(|| gguf_meta::string(&content, "tokenizer.chat_template"));
            let arch = gguf_meta::string(&content, "general.architecture").unwrap_or_default();
            let template = chat_template(template_src, &arch, &tokenizer)?;
            let vocab = grammar::vocab::from_gguf(&content, &tokenizer.eos, tokenizer.bos)?;
            let weights = ModelWeights::load_gguf(path, content, opts)?;
            (weights, tokenizer, template, vocab)
        }
        WeightsSource::Safetensors(dir) => {
            let cfg_path = dir.join("config.json");
            let cfg: serde_json::Value =
                std::fs::read(&cfg_path).map_err(|e| EngineError::io(&cfg_path, e)).and_then(|b| {
                    serde_json::from_slice(&b).map_err(|e| EngineError::Format(format!("{}: {e}", cfg_path.display())))
                })?;
            let tokenizer = TextTokenizer::from_dir(dir, &cfg)?;
            let tc: serde_json::Value = std::fs::read(dir.join("tokenizer_config.json"))
                .ok()
                .and_then(|b| serde_json::from_slice(&b).ok())
                .unwrap_or_default();
            let template_src = match tc.get("chat_template") {
                Some(serde_json::Value::String(s)) => Some(s.clone()),
                // A list of named templates: take "default".
                Some(serde_json::Value::Array(a)) => a
                    .iter()
                    .find(|t| t.get("name").and_then(|n| n.as_str()) == Some("default"))
                    .and_then(|t| t.get("template")?.as_str().map(str::to_string)),
                _ => None,
            };
            let template_src = opts.chat_template.clone().or(template_src);
            let arch = cfg.get("model_type").and_then(|t| t.as_str()).unwrap_or_default();
            let template = chat_template(template_src, arch, &tokenizer)?;
            let tok_path = dir.join("tokenizer.json");
            let tok_json: serde_json::Value =
                std::fs::read(&tok_path).map_err(|e| EngineError::io(&tok_path, e)).and_then(|b| {
                    serde_json::from_slice(&b).map_err(|e| EngineError::Format(format!("{}: {e}", tok_path.display())))
                })?;
            let vocab = grammar::vocab::from_tokenizer_json(&tok_json, &tokenizer.eos, tokenizer.bos)?;
            let weights = ModelWeights::load_safetensors(dir, &cfg, opts)?;
            (weights, tokenizer, template, vocab)
        }
    })
}

/// The file's chat template, else its architecture family's (logged: answers depend on it).
fn chat_template(src: Option<String>, arch: &str, tokenizer: &TextTokenizer) -> Result<ChatTemplate, EngineError> {
    let family = Family::of(arch, |t| tokenizer.inner().token_to_id(t).is_some());
    if src.is_none() {
        tracing::info!(arch, ?family, "the model file has no chat template; using its family's turn format");
    }
    ChatTemplate::new(src, family, tokenizer.bos_text.clone(), tokenizer.eos_text.clone())
}

/// What [`prompt_logits`] found.
pub struct PromptRun {
    /// The prompt's token ids.
    pub tokens: Vec<u32>,
    /// The last prompt position's logits.
    pub logits: Vec<f32>,
    /// The tokens that follow when each next token is the argmax.
    pub greedy: Vec<u32>,
}

/// Runs `text` (no chat template) through a freshly loaded model on `opts.device`, then
/// `greedy` tokens more: the raw numbers `cortex debug logits` prints to compare devices.
/// Blocking.
pub fn prompt_logits(
    source: &WeightsSource,
    opts: &EngineOptions,
    text: &str,
    greedy: usize,
) -> Result<PromptRun, EngineError> {
    let (weights, tokenizer, _, _) = load_parts(source, opts)?;
    let tokens = tokenizer.encode(text)?;
    if tokens.is_empty() {
        return Err(EngineError::BadPrompt("the prompt is empty".into()));
    }
    let mut seq = weights.new_sequence()?;
    let logits = seq.forward(&tokens, 0)?;
    let argmax = |l: &[f32]| l.iter().enumerate().max_by(|a, b| a.1.total_cmp(b.1)).map_or(0, |(i, _)| i as u32);
    // The prompt's logits give the first token; each forward after that gives one more (the
    // last token's own logits are not needed).
    let end = (tokens.len() + greedy).min(weights.context_len);
    let mut continuation: Vec<u32> = Vec::with_capacity(greedy);
    if end > tokens.len() {
        continuation.push(argmax(&logits));
    }
    for pos in tokens.len()..end.saturating_sub(1) {
        let last = continuation[continuation.len() - 1];
        continuation.push(argmax(&seq.forward(&[last], pos)?));
    }
    Ok(PromptRun { tokens, logits, greedy: continuation })
}

/// Checks that `path` is a readable GGUF file with a known architecture (header only).
pub fn validate_gguf(path: &Path) -> Result<(), EngineError> {
    let mut file = std::fs::File::open(path).map_err(|e| EngineError::io(path, e))?;
    let content =
        gguf_file::Content::read(&mut file).map_err(|e| EngineError::Format(format!("{}: {e}", path.display())))?;
    let size = file.metadata().map_err(|e| EngineError::io(path, e))?.len();
    // The header lists every tensor's offset; the file must reach past the last one.
    let end = content
        .tensor_infos
        .values()
        .map(|t| t.offset + (t.shape.elem_count() / t.ggml_dtype.block_size() * t.ggml_dtype.type_size()) as u64)
        .max()
        .unwrap_or(0);
    if content.tensor_data_offset + end > size {
        return Err(EngineError::Format(format!(
            "{} is truncated ({size} bytes, needs {})",
            path.display(),
            content.tensor_data_offset + end
        )));
    }
    gguf_meta::string(&content, "general.architecture")
        .map(|_| ())
        .ok_or_else(|| EngineError::Format(format!("{} has no general.architecture", path.display())))
}
