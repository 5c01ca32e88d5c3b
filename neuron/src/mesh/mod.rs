//! The mesh between neurons, by concern:
//!
//! - `identity`: the fleet CA and node certificates (`cortex init`, `cortex cert issue`);
//! - `transport`: the one QUIC endpoint per neuron and its mutually authenticated TLS 1.3, which
//!   turns a verified certificate into a peer's node name;
//! - `membership`: SWIM (foca) and the peer table, sans-IO;
//! - `placement`: this node's versioned document and the fleet view of everyone's;
//! - `rpc`: typed calls between nodes and the server that answers them.
//!
//! This file is the async shell that joins them: the connection pool (one verified connection
//! per peer, reused), the datagrams membership rides on, its timers, and joining and leaving.

pub mod identity;
pub mod membership;
pub mod placement;
pub mod rpc;
pub mod transport;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cortex_proto::model::PeerState;
use foca::{Codec, PostcardCodec};
use quinn::{Connection, Endpoint};
use tracing::Instrument;

pub use identity::{IdentityError, NodeIdentity};
use membership::{Input, Membership, NodeId, Outputs, PeerTable};
pub use placement::PeerStatus;
use placement::Placement;
pub use rpc::{Remote, RpcError};
pub use transport::{HandshakeFailure, TransportError};

use crate::config::Seed;
use crate::metrics::Metrics;
use crate::node::Node;

/// Where the mesh listens and whom it joins.
#[derive(Debug)]
pub struct MeshSettings {
    pub identity: NodeIdentity,
    pub listen: SocketAddr,
    /// The address peers are told to dial; default: the endpoint's own.
    pub advertise: Option<SocketAddr>,
    pub seeds: Vec<Seed>,
    /// This node's HTTP address, published for operators and the CLI.
    pub http: String,
    /// Cache-aware routing's load guard (`routing::Request::load_margin`).
    pub load_margin: u32,
    /// Whether routing looks at prefixes and sessions at all.
    pub cache_aware: bool,
}

/// This node's part in the fleet.
pub struct Mesh {
    pub name: String,
    addr: SocketAddr,
    endpoint: Endpoint,
    conns: Mutex<HashMap<String, Connection>>,
    membership: Mutex<Membership>,
    placement: Placement,
    node: Arc<Node>,
    metrics: Metrics,
    http: String,
    pub load_margin: u32,
    pub cache_aware: bool,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Spawns `fut` inside a span named for what it does, so its log lines say whose they are.
fn spawn_in(span: tracing::Span, fut: impl std::future::Future<Output = ()> + Send + 'static) {
    tokio::spawn(fut.instrument(span));
}

impl Mesh {
    /// Binds the QUIC endpoint, starts membership and placement, and joins the seeds.
    pub async fn start(settings: MeshSettings, node: Arc<Node>, metrics: Metrics) -> Result<Arc<Self>, TransportError> {
        let endpoint = transport::endpoint(&settings.identity, settings.listen)?;
        let local = endpoint.local_addr().map_err(|e| TransportError::Bind { addr: settings.listen, source: e })?;
        let addr = settings.advertise.unwrap_or(local);
        let name = settings.identity.name.clone();
        if addr.ip().is_unspecified() {
            tracing::warn!(
                mesh = %addr,
                "the mesh listens on an unspecified address, which peers on other hosts cannot dial: \
                 set [mesh] advertise (--advertise) to this host's address"
            );
        }
        let me = NodeId { name: name.clone(), addr, bump: 0 };
        let mesh = Arc::new(Self {
            name: name.clone(),
            addr,
            endpoint,
            conns: Mutex::new(HashMap::new()),
            membership: Mutex::new(Membership::new(me, 8, rand::random())),
            placement: Placement::default(),
            node,
            metrics,
            http: settings.http,
            load_margin: settings.load_margin,
            cache_aware: settings.cache_aware,
        });
        spawn_in(tracing::info_span!("mesh_accept", node = %name), mesh.clone().accept_loop());
        spawn_in(tracing::info_span!("placement_publish", node = %name), mesh.clone().publish_loop());
        spawn_in(tracing::info_span!("placement_repair", node = %name), mesh.clone().repair_loop());
        for seed in settings.seeds {
            spawn_in(tracing::info_span!("mesh_join", seed = %seed), mesh.clone().join(seed));
        }
        tracing::info!(node = %name, mesh = %local, advertised = %addr, "mesh listening");
        Ok(mesh)
    }

    /// A snapshot of the members and their states.
    pub fn peer_table(&self) -> PeerTable {
        lock(&self.membership).peers().clone()
    }

    /// Gives membership an input now and carries out what it asks for.
    fn feed(self: &Arc<Self>, input: Input) {
        let out = lock(&self.membership).handle(input, Instant::now());
        self.carry_out(out);
    }

    fn carry_out(self: &Arc<Self>, out: Outputs) {
        for (to, data) in out.send {
            let span = tracing::trace_span!("membership_send", peer = %to.name);
            spawn_in(span, self.clone().send_datagram(to, data));
        }
        for (after, timer) in out.schedule {
            let m = self.clone();
            spawn_in(tracing::trace_span!("membership_timer"), async move {
                tokio::time::sleep(after).await;
                m.feed(Input::Timer(timer));
            });
        }
        for stamp in out.stamps {
            self.pull(stamp.node.clone(), stamp.node, Some(stamp.version));
        }
        for peer in out.up {
            self.pull(peer.clone(), peer, None);
        }
        for peer in out.down {
            // Streams from a dead peer end now, not at the QUIC idle timeout.
            if let Some(conn) = lock(&self.conns).remove(&peer) {
                conn.close(quinn::VarInt::from_u32(3), b"peer down");
            }
        }
        let counts = self.peer_table().counts();
        for (state, n) in PeerState::ALL.iter().zip(counts) {
            self.metrics.peers.with_label_values(&[state.as_str()]).set(n as i64);
        }
    }

    /// Keeps announcing to a seed until this node has company. The seed's name is resolved
    /// at every attempt (a peer that restarts may come back at another address) and each of
    /// its addresses tried in turn: one name may stand for the whole fleet, this node included.
    async fn join(self: Arc<Self>, seed: Seed) {
        let mut wait = Duration::from_millis(200);
        loop {
            let addrs = match tokio::net::lookup_host(seed.as_str()).await {
                Ok(addrs) => addrs.collect::<Vec<_>>(),
                Err(e) => {
                    tracing::warn!(error = %e, "cannot resolve seed");
                    Vec::new()
                }
            };
            for addr in addrs {
                match transport::connect(&self.endpoint, addr, None).await {
                    Ok((conn, peer)) if peer == self.name => {
                        // This node itself, through a name that covers the fleet.
                        conn.close(quinn::VarInt::from_u32(0), b"self");
                    }
                    Ok((conn, peer)) => {
                        let id = NodeId { name: peer.clone(), addr, bump: 0 };
                        self.adopt(peer, conn);
                        self.feed(Input::Announce(id));
                        break;
                    }
                    Err(e) => {
                        self.metrics.handshake_failures.with_label_values(&[e.reason()]).inc();
                        tracing::warn!(%addr, error = %e, "cannot reach seed");
                    }
                }
            }
            tokio::time::sleep(wait).await;
            wait = (wait * 2).min(Duration::from_secs(5));
            if !self.peer_table().alone() {
                return;
            }
        }
    }

    async fn send_datagram(self: Arc<Self>, to: NodeId, data: bytes::Bytes) {
        match self.conn(&to.name, to.addr).await {
            Ok(conn) => {
                if let Err(e) = conn.send_datagram(data) {
                    tracing::debug!(error = %e, "datagram not sent");
                }
            }
            Err(e) => tracing::debug!(error = %e, "no connection for membership traffic"),
        }
    }

    /// A live connection to `name` at `addr`, reused or made.
    async fn conn(self: &Arc<Self>, name: &str, addr: SocketAddr) -> Result<Connection, TransportError> {
        if let Some(c) = lock(&self.conns).get(name).filter(|c| c.close_reason().is_none()).cloned() {
            return Ok(c);
        }
        let (conn, peer) = transport::connect(&self.endpoint, addr, Some(name)).await.inspect_err(|e| {
            self.metrics.handshake_failures.with_label_values(&[e.reason()]).inc();
        })?;
        Ok(self.adopt(peer, conn))
    }

    /// Registers a verified connection and serves what the peer sends on it.
    fn adopt(self: &Arc<Self>, peer: String, conn: Connection) -> Connection {
        lock(&self.conns).insert(peer.clone(), conn.clone());
        spawn_in(
            tracing::debug_span!("membership_datagrams", peer = %peer),
            self.clone().read_datagrams(peer.clone(), conn.clone()),
        );
        spawn_in(tracing::info_span!("mesh_streams", peer = %peer), self.clone().serve_streams(peer, conn.clone()));
        conn
    }

    async fn accept_loop(self: Arc<Self>) {
        while let Some(incoming) = self.endpoint.accept().await {
            let m = self.clone();
            spawn_in(tracing::debug_span!("mesh_handshake", remote = %incoming.remote_address()), async move {
                match transport::accept(incoming).await {
                    Ok((conn, peer)) => {
                        m.adopt(peer, conn);
                    }
                    Err(e) => {
                        m.metrics.handshake_failures.with_label_values(&[e.reason()]).inc();
                        tracing::warn!(error = %e, reason = e.reason(), "refused a mesh connection");
                    }
                }
            });
        }
    }

    /// Membership datagrams from a verified peer; one that claims another identity is dropped.
    async fn read_datagrams(self: Arc<Self>, peer: String, conn: Connection) {
        while let Ok(data) = conn.read_datagram().await {
            let mut buf: &[u8] = &data;
            match Codec::<NodeId>::decode_header(&mut PostcardCodec, &mut buf) {
                Ok(h) if h.src.name == peer => self.feed(Input::Data(data.to_vec())),
                Ok(h) => tracing::warn!(claims = %h.src.name, "membership packet with a foreign identity dropped"),
                Err(_) => tracing::warn!("undecodable membership packet dropped"),
            }
        }
    }

    /// Marks this node draining (its next document says so) and tells each live peer that it
    /// is shutting down, over a stream it acknowledges by ending: peers mark it left and route
    /// nothing more to it, while the streams it is already serving run on. foca's own leave
    /// looks like a failure to them; a peer that does not answer within a second learns it from
    /// foca alone. Called when the drain starts, and again by [`Mesh::leave`] (a peer told twice
    /// is unchanged).
    pub async fn say_goodbye(self: &Arc<Self>) {
        self.set_draining();
        let told = self.peer_table().live().into_iter().map(|peer| async move {
            match tokio::time::timeout(Duration::from_secs(1), self.goodbye(&peer)).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => tracing::debug!(peer = %peer, error = %e, "could not say goodbye"),
                Err(_) => tracing::debug!(peer = %peer, "no answer to goodbye"),
            }
        });
        futures::future::join_all(told).await;
    }

    /// Leaves the cluster gracefully: peers see a leave, not a failure.
    pub async fn leave(self: &Arc<Self>) {
        self.say_goodbye().await;
        self.feed(Input::Leave);
        // Give the leave messages a moment on the wire.
        tokio::time::sleep(Duration::from_millis(200)).await;
        self.endpoint.close(quinn::VarInt::from_u32(0), b"leaving");
    }
}

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
