//! Placement: this node's document (devices, memory, models and their states, queue), published
//! as a new version whenever the lifecycle changes a model's state or pin, when the drain starts,
//! and when only load figures moved at most once a [`LOAD_REFRESH`]; peers' documents, pulled when
//! a stamp or a new member announces a version newer than the one held, and repaired by comparing
//! digests with a random peer every [`REPAIR_EVERY`].

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use cortex_proto::model::{ModelState, PeerState};
use cortex_proto::placement::{DeviceDoc, FleetView, ModelDoc, PlacementDoc};
use serde::Serialize;
use tokio::sync::Notify;
use tracing::Instrument;

use super::membership::Input;
use super::Mesh;

/// Longest a change in load figures alone (requests running and queued, memory in use) waits
/// before peers hear of it: the bound on this node's publishing rate when only load moves.
pub const LOAD_REFRESH: Duration = Duration::from_secs(1);
/// How often a random peer's digest is compared with this node's view.
pub const REPAIR_EVERY: Duration = Duration::from_secs(1);

/// The documents this node holds, its own included, and what its next one will say.
#[derive(Default)]
pub struct Placement {
    view: RwLock<FleetView>,
    version: AtomicU64,
    draining: AtomicBool,
    /// Wakes the publisher for a change the lifecycle does not see (the drain).
    poke: Notify,
}

impl Placement {
    pub fn get(&self, node: &str) -> Option<PlacementDoc> {
        self.view.read().unwrap_or_else(|p| p.into_inner()).get(node).cloned()
    }

    pub fn digest(&self) -> Vec<(String, u64)> {
        self.view.read().unwrap_or_else(|p| p.into_inner()).digest()
    }

    fn view(&self) -> std::sync::RwLockReadGuard<'_, FleetView> {
        self.view.read().unwrap_or_else(|p| p.into_inner())
    }

    fn offer(&self, doc: PlacementDoc) -> bool {
        self.view.write().unwrap_or_else(|p| p.into_inner()).offer(doc)
    }
}

/// How a peer looks in `/cortex/v1/status`.
#[derive(Debug, Clone, Serialize)]
pub struct PeerStatus {
    pub name: String,
    pub address: std::net::SocketAddr,
    pub state: PeerState,
    pub draining: bool,
    pub http: Option<String>,
    pub devices: Vec<DeviceDoc>,
    pub budget_bytes: u64,
    pub used_bytes: u64,
    pub loaded: Vec<String>,
    pub in_flight: u32,
    pub queued: u32,
    pub version: u64,
    /// The prefix caches of its loaded models, by model id.
    pub caches: std::collections::BTreeMap<String, cortex_proto::placement::CacheDoc>,
}

impl Mesh {
    /// This node's document as its lifecycle stands now, under the last published version.
    pub fn local_doc(&self) -> PlacementDoc {
        let models = self.node.models();
        let status = models.status();
        let docs = status
            .models
            .iter()
            .map(|m| ModelDoc {
                id: m.id.clone(),
                state: m.state,
                kind: m.kind,
                pinned: m.pinned,
                on_disk: m.on_disk,
                bytes: if matches!(m.state, ModelState::Unloaded | ModelState::Failed) {
                    models.estimate(&m.id).unwrap_or(m.bytes)
                } else {
                    m.bytes
                },
                in_flight: m.in_flight as u32,
                queued: m.queued as u32,
                priority: m.priority,
                idle_ms: m.last_used_secs_ago.map(|s| (s * 1e3) as u64).unwrap_or(u64::MAX / 2),
                prefixes: if m.state == ModelState::Ready { self.node.prefix_summary(&m.id) } else { Vec::new() },
                cache: m.prefix_cache,
            })
            .collect();
        PlacementDoc {
            node: self.name.clone(),
            version: self.placement.version.load(Ordering::Relaxed),
            http: self.http.clone(),
            devices: status
                .devices
                .iter()
                .map(|d| DeviceDoc { name: d.name.clone(), total_bytes: d.total_bytes, budget_bytes: d.budget_bytes })
                .collect(),
            budget_bytes: status.budget_bytes,
            used_bytes: status.used_bytes,
            eviction: status.eviction,
            draining: self.placement.draining.load(Ordering::Relaxed),
            models: docs,
            aliases: models.aliases().iter().map(|(a, t)| (a.to_string(), t.to_string())).collect(),
        }
    }

    /// Marks this node as draining (it takes nothing new) and publishes that at once.
    pub(super) fn set_draining(&self) {
        self.placement.draining.store(true, Ordering::Relaxed);
        self.placement.poke.notify_one();
    }

    /// Publishes a new version on every change, and on load figures alone at most once a
    /// [`LOAD_REFRESH`]. Runs until the process ends.
    pub(super) async fn publish_loop(self: Arc<Self>) {
        let mut changes = self.node.models().changes();
        let mut tick = tokio::time::interval(LOAD_REFRESH);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut last: Option<PlacementDoc> = None;
        loop {
            let refresh = tokio::select! {
                changed = changes.changed() => {
                    if changed.is_err() {
                        return;
                    }
                    false
                }
                () = self.placement.poke.notified() => false,
                _ = tick.tick() => true,
            };
            let doc = self.local_doc();
            let publish = match &last {
                None => true,
                // Load figures and prefix summaries move with every request: at most once a
                // refresh.
                Some(prev) => !same_content(prev, &doc) || (refresh && !same_load_and_prefixes(prev, &doc)),
            };
            if publish {
                let mut doc = doc;
                doc.version = self.placement.version.fetch_add(1, Ordering::Relaxed) + 1;
                self.placement.offer(doc.clone());
                self.feed(Input::Publish(doc.version));
                last = Some(doc);
            }
        }
    }

    /// Pulls `node`'s document from `from` (the node itself, or a peer that holds a newer copy)
    /// in the background, unless the view already holds `version` or newer.
    pub(super) fn pull(self: &Arc<Self>, from: String, node: String, version: Option<u64>) {
        if node == self.name || version.is_some_and(|v| !self.placement.view().is_stale(&node, v)) {
            return;
        }
        let m = self.clone();
        let span = tracing::debug_span!("placement_pull", peer = %from, node = %node);
        tokio::spawn(
            async move {
                match m.fetch_placement(&from, &node).await {
                    Ok(Some(doc)) => {
                        m.metrics.placement_versions.inc();
                        m.placement.offer(doc);
                        m.metrics.mesh_rpcs.with_label_values(&["fetch_placement", "ok"]).inc();
                    }
                    Ok(None) => {}
                    Err(e) => {
                        m.metrics.mesh_rpcs.with_label_values(&["fetch_placement", "error"]).inc();
                        tracing::debug!(error = %e, "placement fetch failed");
                    }
                }
            }
            .instrument(span),
        );
    }

    /// Every [`REPAIR_EVERY`], compares a random alive peer's digest with this view and pulls
    /// what is newer there: stamps and joins that were missed heal here.
    pub(super) async fn repair_loop(self: Arc<Self>) {
        let mut tick = tokio::time::interval(REPAIR_EVERY);
        loop {
            tick.tick().await;
            let alive = self.peer_table().alive();
            if alive.is_empty() {
                continue;
            }
            let peer = alive[rand::random::<u32>() as usize % alive.len()].clone();
            match self.fetch_digest(&peer).await {
                Ok(digest) => {
                    self.metrics.mesh_rpcs.with_label_values(&["fetch_digest", "ok"]).inc();
                    for node in self.placement.view().stale_in(&digest) {
                        self.pull(peer.clone(), node, None);
                    }
                }
                Err(e) => {
                    self.metrics.mesh_rpcs.with_label_values(&["fetch_digest", "error"]).inc();
                    tracing::debug!(peer = %peer, error = %e, "digest exchange failed");
                }
            }
        }
    }

    /// Every member's document this node holds, its own fresh, each with the member's state
    /// (this node is alive to itself).
    pub fn fleet(&self) -> Vec<(PlacementDoc, PeerState)> {
        let peers = self.peer_table();
        let mut out: Vec<(PlacementDoc, PeerState)> = self
            .placement
            .view()
            .docs()
            .filter(|d| d.node != self.name)
            .map(|d| (d.clone(), peers.state(&d.node).unwrap_or(PeerState::Down)))
            .collect();
        out.push((self.local_doc(), PeerState::Alive));
        out
    }

    /// This node and every member it knows, for status pages.
    pub fn peers(&self) -> Vec<PeerStatus> {
        let table = self.peer_table();
        let view = self.placement.view();
        let me = self.local_doc();
        let members = table.iter().map(|(n, p)| (n.clone(), p.id.addr, p.state, view.get(n).cloned()));
        let mut out: Vec<PeerStatus> = std::iter::once((self.name.clone(), self.addr, PeerState::Alive, Some(me)))
            .chain(members)
            .map(|(name, address, state, doc)| {
                let doc = doc.as_ref();
                PeerStatus {
                    loaded: doc
                        .map(|d| d.models.iter().filter(|m| m.is_ready()).map(|m| m.id.clone()).collect())
                        .unwrap_or_default(),
                    in_flight: doc.map(|d| d.models.iter().map(|m| m.in_flight).sum()).unwrap_or(0),
                    queued: doc.map(|d| d.models.iter().map(|m| m.queued).sum()).unwrap_or(0),
                    draining: doc.is_some_and(|d| d.draining),
                    http: doc.map(|d| d.http.clone()),
                    devices: doc.map(|d| d.devices.clone()).unwrap_or_default(),
                    budget_bytes: doc.map(|d| d.budget_bytes).unwrap_or(0),
                    used_bytes: doc.map(|d| d.used_bytes).unwrap_or(0),
                    version: doc.map(|d| d.version).unwrap_or(0),
                    caches: doc
                        .map(|d| d.models.iter().filter_map(|m| Some((m.id.clone(), m.cache?))).collect())
                        .unwrap_or_default(),
                    name,
                    address,
                    state,
                }
            })
            .collect();
        out.sort_by(|a, b| a.name.cmp(&b.name));
        out
    }
}

/// Whether two documents say the same, ignoring version and the figures that move with load
/// and time.
fn same_content(a: &PlacementDoc, b: &PlacementDoc) -> bool {
    let strip = |d: &PlacementDoc| {
        let mut d = d.clone();
        d.version = 0;
        d.used_bytes = 0;
        for m in &mut d.models {
            m.idle_ms = 0;
            m.in_flight = 0;
            m.queued = 0;
            m.prefixes = Vec::new();
            m.cache = None;
        }
        d
    };
    strip(a) == strip(b)
}

/// Whether two documents of the same content also agree on load, prefix summaries and caches.
fn same_load_and_prefixes(a: &PlacementDoc, b: &PlacementDoc) -> bool {
    a.load() == b.load() && a.models.iter().zip(&b.models).all(|(x, y)| x.prefixes == y.prefixes && x.cache == y.cache)
}
