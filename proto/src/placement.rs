//! The placement document each neuron publishes: what it has (devices, memory, models on disk)
//! and what it is doing (models loaded, their state, pins, requests in flight and queued).
//! Versioned: peers gossip only `(node, version)` and pull a document when they see a newer
//! version than the one they hold.

use serde::{Deserialize, Serialize};

use crate::eviction::Strategy;
use crate::model::{ModelKind, ModelState};

/// One device's memory as a node reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceDoc {
    pub name: String,
    pub total_bytes: u64,
    pub budget_bytes: u64,
}

/// A model a node can serve.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModelDoc {
    pub id: String,
    pub state: ModelState,
    #[serde(default)]
    pub kind: ModelKind,
    pub pinned: bool,
    /// Whether the files are on this node's disk.
    pub on_disk: bool,
    /// Memory charged while loaded or loading; the estimate to load it otherwise.
    pub bytes: u64,
    pub in_flight: u32,
    pub queued: u32,
    pub priority: i32,
    /// Milliseconds since it was last used (smaller = more recent), for eviction by peers' rules.
    pub idle_ms: u64,
    /// What this node served of the model lately, for cache-aware routing: sorted chunk hashes
    /// of prompts and session keys (a [`crate::prefix::PrefixSummary`], bounded).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub prefixes: Vec<u64>,
    /// The model's prefix cache while it is loaded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache: Option<CacheDoc>,
}

/// A loaded model's prefix cache, as status shows it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CacheDoc {
    pub bytes: u64,
    /// Prompt tokens taken from the cache, and computed, since the model loaded.
    pub hit_tokens: u64,
    pub miss_tokens: u64,
}

impl CacheDoc {
    /// Share of prompt tokens the cache supplied.
    pub fn hit_ratio(&self) -> f64 {
        let all = self.hit_tokens + self.miss_tokens;
        if all == 0 {
            0.0
        } else {
            self.hit_tokens as f64 / all as f64
        }
    }
}

impl ModelDoc {
    pub fn is_ready(&self) -> bool {
        self.state == ModelState::Ready
    }
    pub fn is_loading(&self) -> bool {
        self.state == ModelState::Loading
    }
}

/// A node's whole document.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PlacementDoc {
    pub node: String,
    /// Increases with every change the node publishes.
    pub version: u64,
    /// The node's HTTP API address, for operators and the CLI's nearest-peer probe.
    pub http: String,
    pub devices: Vec<DeviceDoc>,
    pub budget_bytes: u64,
    pub used_bytes: u64,
    pub eviction: Strategy,
    /// Shutting down: finishing what it serves, taking nothing new.
    #[serde(default)]
    pub draining: bool,
    pub models: Vec<ModelDoc>,
    /// Aliases the node resolves, `(alias, target)`.
    pub aliases: Vec<(String, String)>,
}

impl PlacementDoc {
    pub fn model(&self, id: &str) -> Option<&ModelDoc> {
        self.models.iter().find(|m| m.id == id)
    }

    /// Requests running and waiting on this node.
    pub fn load(&self) -> u32 {
        self.models.iter().map(|m| m.in_flight + m.queued).sum()
    }

    pub fn free_bytes(&self) -> u64 {
        self.budget_bytes.saturating_sub(self.used_bytes)
    }
}

/// Keeps the newest document seen per node.
#[derive(Debug, Clone, Default)]
pub struct FleetView {
    docs: std::collections::BTreeMap<String, PlacementDoc>,
}

impl FleetView {
    /// Stores `doc` if it is newer than what is held; returns whether it was.
    pub fn offer(&mut self, doc: PlacementDoc) -> bool {
        match self.docs.get(&doc.node) {
            Some(held) if held.version >= doc.version => false,
            _ => {
                self.docs.insert(doc.node.clone(), doc);
                true
            }
        }
    }

    /// Stores `doc` whatever its version (a node refreshing its own load figures).
    pub fn replace(&mut self, doc: PlacementDoc) {
        self.docs.insert(doc.node.clone(), doc);
    }

    /// Whether a gossiped `(node, version)` is newer than the document held.
    pub fn is_stale(&self, node: &str, version: u64) -> bool {
        self.docs.get(node).is_none_or(|d| d.version < version)
    }

    pub fn get(&self, node: &str) -> Option<&PlacementDoc> {
        self.docs.get(node)
    }

    pub fn docs(&self) -> impl Iterator<Item = &PlacementDoc> {
        self.docs.values()
    }

    /// `(node, version)` for every document held: the digest peers compare to repair misses.
    pub fn digest(&self) -> Vec<(String, u64)> {
        self.docs.values().map(|d| (d.node.clone(), d.version)).collect()
    }

    /// The nodes whose document a peer's digest holds newer than this view does: what to pull.
    pub fn stale_in(&self, digest: &[(String, u64)]) -> Vec<String> {
        digest.iter().filter(|(node, version)| self.is_stale(node, *version)).map(|(node, _)| node.clone()).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub fn doc(node: &str, version: u64) -> PlacementDoc {
        PlacementDoc {
            node: node.into(),
            version,
            http: "127.0.0.1:1".into(),
            devices: vec![],
            budget_bytes: 100,
            used_bytes: 40,
            eviction: Strategy::Lru,
            draining: false,
            models: vec![],
            aliases: vec![],
        }
    }

    #[test]
    fn only_newer_versions_replace_a_document() {
        let mut v = FleetView::default();
        assert!(v.offer(doc("a", 2)));
        assert!(!v.offer(doc("a", 2)));
        assert!(!v.offer(doc("a", 1)));
        assert!(v.is_stale("a", 3));
        assert!(!v.is_stale("a", 2));
        assert!(v.is_stale("b", 0));
        assert!(v.offer(doc("a", 3)));
        assert_eq!(v.digest(), vec![("a".to_string(), 3)]);
        let theirs = [("a".to_string(), 3), ("b".to_string(), 1), ("c".to_string(), 0)];
        assert_eq!(v.stale_in(&theirs), vec!["b".to_string(), "c".to_string()]);
        assert_eq!(v.get("a").map(|d| d.free_bytes()), Some(60));
    }

    #[test]
    fn documents_round_trip_through_json() {
        let mut d = doc("n", 7);
        d.models.push(ModelDoc {
            id: "m".into(),
            state: ModelState::Ready,
            kind: ModelKind::Generator,
            pinned: true,
            on_disk: true,
            bytes: 5,
            in_flight: 1,
            queued: 2,
            priority: 0,
            idle_ms: 0,
            prefixes: vec![3, 9],
            cache: Some(CacheDoc { bytes: 4096, hit_tokens: 3, miss_tokens: 1 }),
        });
        let back: PlacementDoc = serde_json::from_str(&serde_json::to_string(&d).unwrap()).unwrap();
        assert_eq!(back, d);
        assert_eq!(back.load(), 3);
    }
}
