//! The mesh between neurons: who a node is and how nodes reach each other.
//!
//! `identity` owns the fleet CA and node certificates (made by `cortex init` and
//! `cortex cert issue`, loaded by the daemon); `transport` owns the one QUIC endpoint per neuron
//! and its mutually authenticated TLS 1.3, which turns a verified certificate into a peer's node
//! name. Membership, placement and RPC build on these and live beside them.

pub mod identity;
pub mod node;
pub mod transport;

pub use identity::{IdentityError, NodeIdentity};
pub use node::{Mesh, MeshSettings, PeerState, PeerStatus};
pub use transport::{HandshakeFailure, TransportError};

#[cfg(test)]
pub(crate) mod tests {
    use std::path::{Path, PathBuf};

    /// A fresh directory under the system temp dir, removed on drop.
    pub struct TempDir(PathBuf);

    impl TempDir {
        pub fn new(tag: &str) -> Self {
            let nanos = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.subsec_nanos())
                .unwrap_or(0);
            let path = std::env::temp_dir().join(format!("cortex-mesh-{tag}-{}-{nanos}", std::process::id()));
            std::fs::create_dir_all(&path).expect("create temp dir");
            Self(path)
        }

        pub fn path(&self) -> &Path {
            &self.0
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}
