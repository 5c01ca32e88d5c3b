//! The words neurons use about models and each other, typed: a model's lifecycle state, what
//! kind of model it is, the admin actions one node asks of another, and how a peer looks from
//! here. Each has one serde name per value; an unknown value fails to parse at the edge (an HTTP
//! body, a mesh frame, a config file) instead of travelling on as a string.

use serde::{Deserialize, Serialize};

/// Names a value set in messages such as "unknown action `x` (expected load, unload, …)".
fn expected<T: Copy>(all: &[T], name: impl Fn(T) -> &'static str) -> String {
    all.iter().map(|v| name(*v)).collect::<Vec<_>>().join(", ")
}

/// A model's lifecycle state on one node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ModelState {
    Unloaded,
    Loading,
    Ready,
    /// The last load failed; the next request tries again.
    Failed,
}

impl ModelState {
    pub const ALL: [ModelState; 4] = [ModelState::Unloaded, ModelState::Loading, ModelState::Ready, ModelState::Failed];

    pub fn as_str(self) -> &'static str {
        match self {
            ModelState::Unloaded => "unloaded",
            ModelState::Loading => "loading",
            ModelState::Ready => "ready",
            ModelState::Failed => "failed",
        }
    }

    /// Holding memory: loaded or on its way.
    pub fn is_resident(self) -> bool {
        matches!(self, ModelState::Ready | ModelState::Loading)
    }
}

/// What a model does: generate text, or turn text into vectors.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ModelKind {
    #[default]
    Generator,
    Embedder,
}

impl ModelKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ModelKind::Generator => "generator",
            ModelKind::Embedder => "embedder",
        }
    }
}

/// An operator's request about one model, on this node or another.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AdminAction {
    Load,
    Unload,
    Pin,
    Unpin,
}

impl AdminAction {
    pub const ALL: [AdminAction; 4] = [AdminAction::Load, AdminAction::Unload, AdminAction::Pin, AdminAction::Unpin];

    pub fn as_str(self) -> &'static str {
        match self {
            AdminAction::Load => "load",
            AdminAction::Unload => "unload",
            AdminAction::Pin => "pin",
            AdminAction::Unpin => "unpin",
        }
    }
}

impl std::str::FromStr for AdminAction {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Self::ALL.into_iter().find(|a| a.as_str() == s).ok_or_else(|| {
            format!("unknown admin action `{s}` (expected {})", expected(&Self::ALL, AdminAction::as_str))
        })
    }
}

/// How a member of the fleet looks from here.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PeerState {
    Alive,
    /// Probes fail; not yet declared down.
    Suspect,
    /// Failed: declared down without saying goodbye (killed, crashed, cut off).
    Down,
    /// Shut down on purpose: it said it was leaving (its drain) before it went.
    Left,
}

impl PeerState {
    /// Every state, in the order of their metric labels.
    pub const ALL: [PeerState; 4] = [PeerState::Alive, PeerState::Suspect, PeerState::Down, PeerState::Left];

    pub fn as_str(self) -> &'static str {
        match self {
            PeerState::Alive => "alive",
            PeerState::Suspect => "suspect",
            PeerState::Down => "down",
            PeerState::Left => "left",
        }
    }

    /// Gone, by failure or by leave: nothing is sent to it.
    pub fn is_gone(self) -> bool {
        matches!(self, PeerState::Down | PeerState::Left)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_value_has_one_wire_name_and_unknown_names_are_refused() {
        for s in ModelState::ALL {
            assert_eq!(serde_json::to_value(s).unwrap(), s.as_str());
        }
        for p in PeerState::ALL {
            assert_eq!(serde_json::from_value::<PeerState>(p.as_str().into()).unwrap(), p);
        }
        for a in AdminAction::ALL {
            assert_eq!(a.as_str().parse::<AdminAction>(), Ok(a));
            assert_eq!(serde_json::to_value(a).unwrap(), a.as_str());
        }
        let e = "reboot".parse::<AdminAction>().unwrap_err();
        assert!(e.contains("`reboot`") && e.contains("load, unload, pin, unpin"), "{e}");
        assert!(serde_json::from_str::<AdminAction>("\"reboot\"").is_err());
        assert!(serde_json::from_str::<ModelState>("\"READY\"").is_err());
        assert_eq!(serde_json::from_str::<ModelKind>("\"embedder\"").unwrap(), ModelKind::Embedder);
        assert!(serde_json::from_str::<ModelKind>("\"reranker\"").is_err());
    }
}
