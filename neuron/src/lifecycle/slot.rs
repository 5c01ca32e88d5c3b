//! One model this node can serve: its source, its state behind a lock, the leases requests
//! hold on it, and what status pages show of it. `Models` (the parent module) decides; a slot
//! only records.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Instant, SystemTime};

use cortex_proto::catalogue as known;
use cortex_proto::eviction::KeepAlive;
use cortex_proto::model::{ModelKind, ModelState};
use serde::Serialize;
use tokio::sync::Notify;

use super::memory;
use crate::engine::{Loaded, WeightsSource};

pub(super) struct Inner {
    pub(super) state: ModelState,
    pub(super) model: Option<Arc<Loaded>>,
    /// Bytes counted against the budget while loading or ready.
    pub(super) bytes: u64,
    pub(super) error: Option<String>,
    pub(super) pinned: bool,
    /// Requests holding the model (waiting for its load, queued or generating).
    pub(super) leases: usize,
    pub(super) last_used: Instant,
    pub(super) idle_since: Instant,
    pub(super) keep_alive: KeepAlive,
}

/// One model this node can serve.
pub struct Slot {
    pub id: String,
    pub(super) source: WeightsSource,
    pub(super) hub: Option<(String, Option<String>)>,
    pub(super) priority: i32,
    pub(super) memory_override: Option<u64>,
    /// models.toml's `context` and `chat_template` for this model.
    pub(super) context: Option<usize>,
    pub(super) chat_template: Option<String>,
    pub(super) sampling: cortex_proto::generate::SamplingParams,
    /// models.toml's `kv_cache_bytes`.
    pub(super) kv_cache_bytes: Option<u64>,
    /// The estimate from the files' metadata, read once (the files do not change under a name).
    pub(super) footprint: std::sync::OnceLock<memory::Footprint>,
    pub(super) inner: Mutex<Inner>,
    pub(super) load_lock: tokio::sync::Mutex<()>,
}

pub(super) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// A model held for one request; the model is never evicted while a lease exists. Dropping it
/// starts the model's idle time.
pub struct Lease {
    pub(super) slot: Arc<Slot>,
    pub model: Arc<Loaded>,
    pub(super) wake: Arc<Notify>,
}

impl Lease {
    /// The model's id.
    pub fn id(&self) -> &str {
        &self.slot.id
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        release(&self.slot);
        self.wake.notify_one();
    }
}

pub(super) fn release(slot: &Slot) {
    let mut i = lock(&slot.inner);
    i.leases = i.leases.saturating_sub(1);
    i.idle_since = Instant::now();
}

/// Releases a lease taken before the model was ready, when acquiring fails.
pub(super) struct Pending<'a>(pub(super) Option<&'a Slot>);

impl Drop for Pending<'_> {
    fn drop(&mut self) {
        if let Some(s) = self.0 {
            release(s);
        }
    }
}

/// What `/cortex/v1/status` shows of a model.
#[derive(Debug, Clone, Serialize)]
pub struct ModelStatus {
    pub id: String,
    pub state: ModelState,
    pub kind: ModelKind,
    pub pinned: bool,
    pub bytes: u64,
    pub format: &'static str,
    pub path: PathBuf,
    pub on_disk: bool,
    pub size_bytes: u64,
    pub priority: i32,
    pub in_flight: usize,
    pub queued: usize,
    pub last_used_secs_ago: Option<f64>,
    /// Seconds an idle model stays loaded; null = forever.
    pub keep_alive_secs: Option<f64>,
    pub error: Option<String>,
    pub created: u64,
    /// The kernel family a loaded model runs on (`ModelWeights::kernels`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kernels: Option<String>,
    /// The prefix cache of a loaded generator.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub prefix_cache: Option<cortex_proto::placement::CacheDoc>,
}

impl Slot {
    /// What the model does: a sentence-transformers repository embeds, the rest generate.
    pub fn kind(&self) -> ModelKind {
        match &self.source {
            WeightsSource::Safetensors(dir) if crate::engine::embed::is_embedder(dir) => ModelKind::Embedder,
            _ => ModelKind::Generator,
        }
    }

    pub fn status(&self) -> ModelStatus {
        let path = self.source.path().to_path_buf();
        let meta = std::fs::metadata(&path).ok();
        let created = meta
            .as_ref()
            .and_then(|m| m.modified().ok())
            .and_then(|t| t.duration_since(SystemTime::UNIX_EPOCH).ok())
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let i = lock(&self.inner);
        let (running, queued) = i.model.as_ref().map(|m| m.load_now()).unwrap_or((0, 0));
        ModelStatus {
            id: self.id.clone(),
            state: i.state,
            kind: self.kind(),
            pinned: i.pinned,
            bytes: i.bytes,
            format: match self.source {
                WeightsSource::Gguf(_) => "gguf",
                WeightsSource::Safetensors(_) => "safetensors",
            },
            on_disk: meta.is_some(),
            size_bytes: i.model.as_ref().map(|m| m.info().file_bytes).unwrap_or_else(|| file_size(&path)),
            priority: self.priority,
            in_flight: running,
            queued,
            last_used_secs_ago: (i.leases > 0 || i.state != ModelState::Unloaded)
                .then(|| i.last_used.elapsed().as_secs_f64()),
            keep_alive_secs: match i.keep_alive {
                KeepAlive::For(d) if !i.pinned => Some(d.as_secs_f64()),
                _ => None,
            },
            error: i.error.clone(),
            created,
            path,
            kernels: i.model.as_deref().map(|m| m.info().kernels.clone()),
            prefix_cache: match i.model.as_deref() {
                Some(crate::engine::Loaded::Generator(g)) => {
                    let s = g.prefix_stats();
                    Some(cortex_proto::placement::CacheDoc {
                        bytes: s.bytes as u64,
                        hit_tokens: s.hit_tokens,
                        miss_tokens: s.miss_tokens,
                    })
                }
                _ => None,
            },
        }
    }
}

fn file_size(path: &Path) -> u64 {
    if path.is_dir() {
        std::fs::read_dir(path).map(|rd| rd.filter_map(|e| e.ok()?.metadata().ok()).map(|m| m.len()).sum()).unwrap_or(0)
    } else {
        std::fs::metadata(path).map(|m| m.len()).unwrap_or(0)
    }
}

/// The source a configured path names: a directory is a safetensors repository.
pub(super) fn source_at(p: &Path) -> WeightsSource {
    if p.is_dir() {
        WeightsSource::Safetensors(p.to_path_buf())
    } else {
        WeightsSource::Gguf(p.to_path_buf())
    }
}

/// A model found at `path`: a GGUF file or a safetensors repository directory.
pub fn source_for(path: &Path) -> Option<(String, WeightsSource)> {
    let name = path.file_name()?.to_str()?;
    if path.is_file() && name.ends_with(".gguf") {
        return Some((known::id_for_file(name), WeightsSource::Gguf(path.to_path_buf())));
    }
    if path.is_dir() && path.join("config.json").is_file() {
        let has_weights = std::fs::read_dir(path)
            .ok()?
            .filter_map(|e| e.ok())
            .any(|e| e.path().extension().is_some_and(|x| x == "safetensors"));
        if has_weights {
            return Some((name.to_string(), WeightsSource::Safetensors(path.to_path_buf())));
        }
    }
    None
}
