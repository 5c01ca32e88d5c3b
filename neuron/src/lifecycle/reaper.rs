//! Idle unloading after `keep_alive`, and the reload of resident models every
//! `defrag_after_cycles` unloads that hands fragmented memory back to the allocator.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use cortex_proto::eviction::{self, Idle};
use cortex_proto::model::ModelState;

use super::slot::lock;
use super::{Models, REAP_EVERY};
use crate::engine::Loaded;

impl Models {
    /// Unloads idle models whose keep-alive ran out, and reloads residents every
    /// `defrag_after_cycles` unloads. Runs until the process ends.
    pub async fn run_reaper(self: Arc<Self>) {
        loop {
            if self.reap() {
                // Reloading models is blocking work: keep it off the async workers.
                let m = self.clone();
                let _ = tokio::task::spawn_blocking(move || m.defrag()).await;
            }
            tokio::select! {
                _ = self.wake.notified() => {}
                _ = tokio::time::sleep(REAP_EVERY) => {}
            }
        }
    }

    /// One reaper pass: unloads expired models; true when a defragmenting reload is due.
    fn reap(&self) -> bool {
        let now = Instant::now();
        let ms = |t: Instant| t.duration_since(self.started).as_millis() as u64;
        let idle: Vec<Idle> = self
            .slots
            .values()
            .filter_map(|s| {
                let i = lock(&s.inner);
                (i.state == ModelState::Ready).then(|| Idle {
                    id: s.id.clone(),
                    pinned: i.pinned,
                    in_flight: i.leases,
                    idle_since_ms: ms(i.idle_since),
                    keep_alive: i.keep_alive,
                })
            })
            .collect();
        for id in eviction::expired(&idle, ms(now)) {
            if let Some(s) = self.slots.get(&id) {
                tracing::info!(model = %id, "idle past keep_alive; unloading");
                self.unload_slot(s, "idle");
            }
        }
        let n = self.cfg.defrag_after_cycles;
        let due = n > 0 && self.unloads.load(Ordering::Relaxed) >= n;
        if due {
            self.unloads.store(0, Ordering::Relaxed);
        }
        due
    }

    /// Reloads idle resident models in place, so memory fragmented by load/unload cycles is
    /// returned to the allocator (and the OS for large blocks).
    fn defrag(&self) {
        for s in self.slots.values() {
            let (reload, source) = {
                let i = lock(&s.inner);
                (i.state == ModelState::Ready && i.leases == 0, s.source.clone())
            };
            if !reload {
                continue;
            }
            match Loaded::load(&s.id, &source, &self.load_options(s), self.metrics.for_model(&s.id)) {
                Ok(m) => {
                    let mut i = lock(&s.inner);
                    if i.state == ModelState::Ready && i.leases == 0 {
                        i.model = Some(Arc::new(m));
                        tracing::info!(model = %s.id, "reloaded to defragment memory");
                    }
                }
                Err(e) => {
                    tracing::warn!(model = %s.id, error = %e, "defragmenting reload failed; keeping the old copy")
                }
            }
        }
    }
}
