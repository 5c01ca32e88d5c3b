//! This node's models: what is on disk, what is loaded, and loading on demand with one load
//! per model however many requests wait for it.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Instant, SystemTime};

use cortex_proto::catalogue::{self, Aliases};
use cortex_proto::generate::{ErrorKind, GenerateError};

use crate::engine::{EngineOptions, LoadedModel, WeightsSource};
use crate::metrics::Metrics;

/// One model this node can serve.
pub struct Slot {
    pub id: String,
    pub source: WeightsSource,
    loaded: Mutex<Option<Arc<LoadedModel>>>,
    /// Held while loading, so concurrent requests for a cold model share one load.
    load_lock: tokio::sync::Mutex<()>,
    last_error: Mutex<Option<String>>,
    last_used: Mutex<Option<SystemTime>>,
}

/// What `/v1/models` and status show of a slot.
#[derive(Debug, Clone, serde::Serialize)]
pub struct SlotView {
    pub id: String,
    pub path: PathBuf,
    pub format: &'static str,
    pub size_bytes: u64,
    pub loaded: bool,
    pub last_error: Option<String>,
    pub created: u64,
}

pub struct Models {
    slots: BTreeMap<String, Arc<Slot>>,
    aliases: Aliases,
    opts: EngineOptions,
    metrics: Metrics,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// A model found at `path`: a GGUF file or a safetensors repository directory.
pub fn source_for(path: &Path) -> Option<(String, WeightsSource)> {
    let name = path.file_name()?.to_str()?;
    if path.is_file() && name.ends_with(".gguf") {
        return Some((catalogue::id_for_file(name), WeightsSource::Gguf(path.to_path_buf())));
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

impl Models {
    /// Scans `dir` (one level) and adds `extra` paths. Unreadable entries are skipped with a log.
    pub fn discover(dir: &Path, extra: &[PathBuf], aliases: Aliases, opts: EngineOptions, metrics: Metrics) -> Self {
        let mut found: Vec<PathBuf> = match std::fs::read_dir(dir) {
            Ok(rd) => rd.filter_map(|e| e.ok().map(|e| e.path())).collect(),
            Err(e) => {
                tracing::info!(dir = %dir.display(), error = %e, "models directory not readable; serving only --model paths");
                Vec::new()
            }
        };
        found.sort();
        found.extend(extra.iter().cloned());
        let mut slots = BTreeMap::new();
        for path in found {
            match source_for(&path) {
                Some((id, source)) => {
                    tracing::info!(model = %id, path = %path.display(), "model available");
                    slots.insert(
                        id.clone(),
                        Arc::new(Slot {
                            id,
                            source,
                            loaded: Mutex::new(None),
                            load_lock: tokio::sync::Mutex::new(()),
                            last_error: Mutex::new(None),
                            last_used: Mutex::new(None),
                        }),
                    );
                }
                None if extra.contains(&path) => {
                    tracing::warn!(path = %path.display(), "--model is neither a .gguf file nor a safetensors directory; ignored")
                }
                None => {}
            }
        }
        Self { slots, aliases, opts, metrics }
    }

    pub fn aliases(&self) -> &Aliases {
        &self.aliases
    }

    /// The slot a client's model name refers to (id or alias).
    pub fn resolve(&self, name: &str) -> Option<&Arc<Slot>> {
        self.slots.get(self.aliases.resolve(name))
    }

    fn not_found(&self, name: &str) -> GenerateError {
        let hint = match catalogue::known_model(name) {
            Some(m) => format!("; fetch it with `cortex pull {name}` (file {})", m.file),
            None => String::new(),
        };
        GenerateError::new(
            ErrorKind::NotFound,
            format!("model `{name}` is not available on this neuron{hint}; GET /v1/models lists what is"),
        )
    }

    /// The loaded model for `name`, loading it first if needed.
    pub async fn get(&self, name: &str) -> Result<Arc<LoadedModel>, GenerateError> {
        let slot = self.resolve(name).ok_or_else(|| self.not_found(name))?.clone();
        *lock(&slot.last_used) = Some(SystemTime::now());
        if let Some(m) = lock(&slot.loaded).clone() {
            return Ok(m);
        }
        let _guard = slot.load_lock.lock().await;
        if let Some(m) = lock(&slot.loaded).clone() {
            return Ok(m);
        }
        let (opts, metrics, s) = (self.opts.clone(), self.metrics.clone(), slot.clone());
        tracing::info!(model = %slot.id, "loading");
        let t0 = Instant::now();
        let result =
            tokio::task::spawn_blocking(move || LoadedModel::load(&s.id, &s.source, &opts, metrics.for_model(&s.id)))
                .await;
        let secs = t0.elapsed().as_secs_f64();
        let outcome = match result {
            Ok(Ok(m)) => Ok(Arc::new(m)),
            Ok(Err(e)) => Err(e.to_string()),
            Err(join) => Err(format!("the load crashed: {join}")),
        };
        match outcome {
            Ok(model) => {
                self.metrics.loads.with_label_values(&[&slot.id, "ok"]).inc();
                self.metrics.load_seconds.with_label_values(&[&slot.id]).observe(secs);
                tracing::info!(model = %slot.id, seconds = secs, arch = %model.info.arch, context = model.info.context_len, "loaded");
                *lock(&slot.loaded) = Some(model.clone());
                *lock(&slot.last_error) = None;
                Ok(model)
            }
            Err(msg) => {
                self.metrics.loads.with_label_values(&[&slot.id, "error"]).inc();
                tracing::error!(model = %slot.id, error = %msg, "load failed");
                *lock(&slot.last_error) = Some(msg.clone());
                Err(GenerateError::new(ErrorKind::Unavailable, format!("model `{}` failed to load: {msg}", slot.id)))
            }
        }
    }

    pub fn views(&self) -> Vec<SlotView> {
        self.slots.values().map(|s| s.view()).collect()
    }

    /// Requests running and queued across loaded models.
    pub fn busy(&self) -> (usize, usize) {
        self.slots
            .values()
            .filter_map(|s| lock(&s.loaded).clone())
            .map(|m| m.load_now())
            .fold((0, 0), |(a, b), (r, q)| (a + r, b + q))
    }
}

impl Slot {
    pub fn view(&self) -> SlotView {
        let path = self.source.path().to_path_buf();
        let meta = std::fs::metadata(&path).ok();
        let created = meta
            .as_ref()
            .and_then(|m| m.modified().ok())
            .and_then(|t| t.duration_since(SystemTime::UNIX_EPOCH).ok())
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let loaded = lock(&self.loaded).clone();
        SlotView {
            id: self.id.clone(),
            format: match self.source {
                WeightsSource::Gguf(_) => "gguf",
                WeightsSource::Safetensors(_) => "safetensors",
            },
            size_bytes: loaded
                .as_ref()
                .map(|m| m.info.file_bytes)
                .unwrap_or_else(|| meta.map(|m| m.len()).unwrap_or(0)),
            loaded: loaded.is_some(),
            last_error: lock(&self.last_error).clone(),
            created,
            path,
        }
    }
}
