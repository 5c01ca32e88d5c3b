//! A neuron's place in the mesh: membership (foca's SWIM over QUIC datagrams), placement
//! documents (a foca broadcast carries only `(node, version)`; a peer that sees a newer version
//! pulls the document over a bi-stream; a periodic pull from a random peer repairs misses), and
//! the RPC server for forwarded generations and admin operations.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use cortex_proto::frame::{self, Message};
use cortex_proto::generate::{ErrorKind, Event, GenerateError, GenerateRequest};
use cortex_proto::placement::{DeviceDoc, FleetView, ModelDoc, PlacementDoc};
use foca::{AccumulatingRuntime, BroadcastHandler, Codec, Foca, Invalidates, OwnedNotification, PostcardCodec, Timer};
use quinn::{Connection, Endpoint, RecvStream, SendStream};
use rand010::SeedableRng;
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver, UnboundedSender};

use super::{transport, NodeIdentity};
use crate::lifecycle::{Models, State};
use crate::metrics::Metrics;

/// How a member looks from here.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum PeerState {
    Alive,
    /// Probes fail; not yet declared down.
    Suspect,
    /// Failed: declared down without saying goodbye (killed, crashed, cut off).
    Down,
    /// Shut down on purpose: it said it was leaving before it went.
    Left,
}

impl PeerState {
    /// Every state, in the order of their metric labels.
    const ALL: [PeerState; 4] = [PeerState::Alive, PeerState::Suspect, PeerState::Down, PeerState::Left];

    fn as_str(self) -> &'static str {
        match self {
            PeerState::Alive => "alive",
            PeerState::Suspect => "suspect",
            PeerState::Down => "down",
            PeerState::Left => "left",
        }
    }

    /// Gone, by failure or by leave: nothing is sent to it.
    fn is_gone(self) -> bool {
        matches!(self, PeerState::Down | PeerState::Left)
    }
}

/// A member's identity in foca: its node name, mesh address and a bump that renews it after
/// it was declared down.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct NodeId {
    pub name: String,
    pub addr: SocketAddr,
    pub bump: u16,
}

impl foca::Identity for NodeId {
    type Addr = SocketAddr;
    fn renew(&self) -> Option<Self> {
        Some(Self { bump: self.bump.wrapping_add(1), ..self.clone() })
    }
    fn addr(&self) -> SocketAddr {
        self.addr
    }
    fn win_addr_conflict(&self, adversary: &Self) -> bool {
        self.bump > adversary.bump
    }
}

/// The gossiped item: a node published a new document version.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Stamp {
    node: String,
    version: u64,
}

struct StampKey(Stamp);

impl Invalidates for StampKey {
    fn invalidates(&self, other: &Self) -> bool {
        self.0.node == other.0.node && self.0.version >= other.0.version
    }
}

#[derive(Debug, thiserror::Error)]
#[error("bad placement stamp")]
struct StampError;

/// Accepts a stamp when it is newer than the document held, and asks for that document.
struct Stamps {
    seen: Arc<Mutex<HashMap<String, u64>>>,
    fetch: UnboundedSender<String>,
}

impl BroadcastHandler<NodeId> for Stamps {
    type Key = StampKey;
    type Error = StampError;
    fn receive_item(&mut self, data: &[u8], _sender: Option<&NodeId>) -> Result<Option<StampKey>, StampError> {
        let stamp: Stamp = postcard::from_bytes(data).map_err(|_| StampError)?;
        let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        if seen.get(&stamp.node).is_some_and(|&v| v >= stamp.version) {
            return Ok(None);
        }
        seen.insert(stamp.node.clone(), stamp.version);
        let _ = self.fetch.send(stamp.node.clone());
        Ok(Some(StampKey(stamp)))
    }
}

enum Input {
    Data(Vec<u8>),
    Timer(Timer<NodeId>),
    Announce(NodeId),
    Broadcast(Vec<u8>),
    Leave(tokio::sync::oneshot::Sender<()>),
}

/// Where the mesh listens and whom it joins.
#[derive(Debug)]
pub struct MeshSettings {
    pub identity: NodeIdentity,
    pub listen: SocketAddr,
    pub seeds: Vec<SocketAddr>,
    /// This node's HTTP address, published for operators and the CLI.
    pub http: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct PeerStatus {
    pub name: String,
    pub address: SocketAddr,
    pub state: PeerState,
    pub http: Option<String>,
    pub devices: Vec<DeviceDoc>,
    pub budget_bytes: u64,
    pub used_bytes: u64,
    pub loaded: Vec<String>,
    pub in_flight: u32,
    pub queued: u32,
    pub version: u64,
}

pub struct Mesh {
    pub name: String,
    endpoint: Endpoint,
    my_id: NodeId,
    conns: Mutex<HashMap<String, Connection>>,
    members: RwLock<BTreeMap<String, (NodeId, PeerState)>>,
    view: RwLock<FleetView>,
    seen: Arc<Mutex<HashMap<String, u64>>>,
    input: UnboundedSender<Input>,
    version: AtomicU64,
    models: Arc<Models>,
    metrics: Metrics,
    http: String,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Upper bound on one RPC's reply frames in flight before the reader catches up.
const READ_CHUNK: usize = 64 * 1024;

impl Mesh {
    /// Binds the QUIC endpoint, starts membership and placement, and joins the seeds.
    pub async fn start(
        settings: MeshSettings,
        models: Arc<Models>,
        metrics: Metrics,
    ) -> Result<Arc<Self>, transport::TransportError> {
        let endpoint = transport::endpoint(&settings.identity, settings.listen)?;
        let addr =
            endpoint.local_addr().map_err(|e| transport::TransportError::Bind { addr: settings.listen, source: e })?;
        let name = settings.identity.name.clone();
        let my_id = NodeId { name: name.clone(), addr, bump: 0 };
        let (input, input_rx) = unbounded_channel();
        let (fetch_tx, fetch_rx) = unbounded_channel();
        let seen = Arc::new(Mutex::new(HashMap::new()));
        let mesh = Arc::new(Self {
            name: name.clone(),
            endpoint,
            my_id: my_id.clone(),
            conns: Mutex::new(HashMap::new()),
            members: RwLock::new(BTreeMap::new()),
            view: RwLock::new(FleetView::default()),
            seen: seen.clone(),
            input,
            version: AtomicU64::new(0),
            models,
            metrics,
            http: settings.http,
        });
        let config = foca_config(8);
        let rng = rand010::rngs::StdRng::seed_from_u64(rand::random());
        let foca = Foca::with_custom_broadcast(my_id, config, rng, PostcardCodec, Stamps { seen, fetch: fetch_tx });
        tokio::spawn(mesh.clone().drive(foca, input_rx));
        tokio::spawn(mesh.clone().accept_loop());
        tokio::spawn(mesh.clone().fetch_loop(fetch_rx));
        tokio::spawn(mesh.clone().publish_loop());
        for seed in settings.seeds {
            let m = mesh.clone();
            tokio::spawn(async move { m.join(seed).await });
        }
        tracing::info!(node = %name, mesh = %addr, "mesh listening");
        Ok(mesh)
    }

    /// Keeps announcing to a seed until this node has company.
    async fn join(self: Arc<Self>, seed: SocketAddr) {
        let mut wait = Duration::from_millis(200);
        loop {
            match transport::connect(&self.endpoint, seed, None).await {
                Ok((conn, peer)) => {
                    let id = NodeId { name: peer.clone(), addr: seed, bump: 0 };
                    self.adopt(peer, conn);
                    let _ = self.input.send(Input::Announce(id));
                }
                Err(e) => {
                    self.metrics.handshake_failures.with_label_values(&[e.reason()]).inc();
                    tracing::warn!(seed = %seed, error = %e, "cannot reach seed");
                }
            }
            tokio::time::sleep(wait).await;
            wait = (wait * 2).min(Duration::from_secs(5));
            let alone = self.members.read().unwrap_or_else(|p| p.into_inner()).values().all(|(_, s)| s.is_gone());
            if !alone {
                return;
            }
        }
    }

    /// Runs foca: all its inputs arrive on one channel, its outputs are carried out here.
    async fn drive(
        self: Arc<Self>,
        mut foca: Foca<NodeId, PostcardCodec, rand010::rngs::StdRng, Stamps>,
        mut rx: UnboundedReceiver<Input>,
    ) {
        let mut rt = AccumulatingRuntime::new();
        while let Some(input) = rx.recv().await {
            let mut leaving = None;
            let result = match input {
                Input::Data(data) => foca.handle_data(&data, &mut rt),
                Input::Timer(t) => foca.handle_timer(t, &mut rt),
                Input::Announce(id) => foca.announce(id, &mut rt),
                Input::Broadcast(b) => foca.add_broadcast(&b).map(|_| ()),
                Input::Leave(done) => {
                    leaving = Some(done);
                    foca.leave_cluster(&mut rt)
                }
            };
            if let Err(e) = result {
                tracing::debug!(error = %e, "membership input rejected");
            }
            while let Some((to, data)) = rt.to_send() {
                let m = self.clone();
                tokio::spawn(async move { m.send_datagram(to, data).await });
            }
            while let Some((after, timer)) = rt.to_schedule() {
                let tx = self.input.clone();
                tokio::spawn(async move {
                    tokio::time::sleep(after).await;
                    let _ = tx.send(Input::Timer(timer));
                });
            }
            while let Some(n) = rt.to_notify() {
                self.on_notification(n);
            }
            self.sync_suspicion(&foca);
            if let Some(done) = leaving {
                // Give the leave messages a moment on the wire.
                tokio::time::sleep(Duration::from_millis(200)).await;
                let _ = done.send(());
                return;
            }
        }
    }

    /// foca notifies only up and down; suspicion (probes failing, not yet declared down) is
    /// read from its membership table so operators can see it.
    fn sync_suspicion(&self, foca: &Foca<NodeId, PostcardCodec, rand010::rngs::StdRng, Stamps>) {
        let mut members = self.members.write().unwrap_or_else(|p| p.into_inner());
        for m in foca.iter_membership_state() {
            if let Some((_, state)) = members.get_mut(&m.id().name) {
                match (m.state(), *state) {
                    (foca::State::Suspect, PeerState::Alive) => *state = PeerState::Suspect,
                    (foca::State::Alive, PeerState::Suspect) => *state = PeerState::Alive,
                    _ => {}
                }
            }
        }
        self.count_peers(&members);
    }

    fn on_notification(&self, n: OwnedNotification<NodeId>) {
        let mut members = self.members.write().unwrap_or_else(|p| p.into_inner());
        match n {
            OwnedNotification::MemberUp(id) => {
                tracing::info!(peer = %id.name, addr = %id.addr, "peer up");
                members.insert(id.name.clone(), (id.clone(), PeerState::Alive));
                // Pull its document on the next fetch pass.
                lock(&self.seen).remove(&id.name);
            }
            OwnedNotification::MemberDown(id) => {
                // foca reports a leave and a failure alike; a peer that said goodbye first
                // (`Message::Leaving`) stays `Left`.
                let state = match members.get(&id.name) {
                    Some((_, PeerState::Left)) => PeerState::Left,
                    _ => {
                        tracing::warn!(peer = %id.name, "peer down");
                        PeerState::Down
                    }
                };
                // Streams from a dead peer end now, not at the QUIC idle timeout.
                if let Some(conn) = lock(&self.conns).remove(&id.name) {
                    conn.close(quinn::VarInt::from_u32(3), b"peer down");
                }
                members.insert(id.name.clone(), (id, state));
            }
            OwnedNotification::Rename(old, new) => {
                members.remove(&old.name);
                members.insert(new.name.clone(), (new, PeerState::Alive));
            }
            _ => {}
        }
        self.count_peers(&members);
    }

    fn count_peers(&self, members: &BTreeMap<String, (NodeId, PeerState)>) {
        for state in PeerState::ALL {
            let n = members.values().filter(|(_, s)| *s == state).count();
            self.metrics.peers.with_label_values(&[state.as_str()]).set(n as i64);
        }
    }

    /// `peer` (named by its verified certificate) says it is shutting down: route nothing more
    /// to it. Its streams still running are left alone; foca's down notice closes the
    /// connection once it has gone.
    fn peer_left(&self, peer: &str) {
        let mut members = self.members.write().unwrap_or_else(|p| p.into_inner());
        if let Some((_, state)) = members.get_mut(peer) {
            if *state != PeerState::Left {
                tracing::info!(peer = %peer, "peer left");
                *state = PeerState::Left;
            }
        }
        self.count_peers(&members);
    }

    async fn send_datagram(self: &Arc<Self>, to: NodeId, data: bytes::Bytes) {
        match self.conn(&to.name, to.addr).await {
            Ok(conn) => {
                if let Err(e) = conn.send_datagram(data) {
                    tracing::debug!(peer = %to.name, error = %e, "datagram not sent");
                }
            }
            Err(e) => tracing::debug!(peer = %to.name, error = %e, "no connection for membership traffic"),
        }
    }

    /// A live connection to `name` at `addr`, reused or made.
    async fn conn(self: &Arc<Self>, name: &str, addr: SocketAddr) -> Result<Connection, transport::TransportError> {
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
        let (c1, c2, p1, p2) = (conn.clone(), conn.clone(), peer.clone(), peer);
        let (m1, m2) = (self.clone(), self.clone());
        tokio::spawn(async move { m1.read_datagrams(p1, c1).await });
        tokio::spawn(async move { m2.serve_streams(p2, c2).await });
        conn
    }

    async fn accept_loop(self: Arc<Self>) {
        while let Some(incoming) = self.endpoint.accept().await {
            let m = self.clone();
            tokio::spawn(async move {
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
                Ok(h) if h.src.name == peer => {
                    let _ = self.input.send(Input::Data(data.to_vec()));
                }
                Ok(h) => {
                    tracing::warn!(peer = %peer, claims = %h.src.name, "membership packet with a foreign identity dropped")
                }
                Err(_) => tracing::warn!(peer = %peer, "undecodable membership packet dropped"),
            }
        }
    }

    /// Publishes this node's document whenever it changes.
    async fn publish_loop(self: Arc<Self>) {
        let mut last: Option<PlacementDoc> = None;
        loop {
            let mut doc = self.local_doc();
            let changed = match &last {
                Some(prev) => !same_content(prev, &doc),
                None => true,
            };
            if changed {
                doc.version = self.version.fetch_add(1, Ordering::Relaxed) + 1;
                self.view.write().unwrap_or_else(|p| p.into_inner()).offer(doc.clone());
                lock(&self.seen).insert(self.name.clone(), doc.version);
                let stamp = Stamp { node: self.name.clone(), version: doc.version };
                if let Ok(bytes) = postcard::to_allocvec(&stamp) {
                    let _ = self.input.send(Input::Broadcast(bytes));
                }
                last = Some(doc);
            } else if let Some(prev) = &last {
                // Keep the held copy's load figures fresh without a new version.
                let mut fresh = doc;
                fresh.version = prev.version;
                self.view.write().unwrap_or_else(|p| p.into_inner()).replace(fresh);
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Pulls documents: on stamps, for new members, and one random peer a second (repair).
    async fn fetch_loop(self: Arc<Self>, mut rx: UnboundedReceiver<String>) {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        loop {
            let node = tokio::select! {
                n = rx.recv() => match n { Some(n) => Some(n), None => return },
                _ = tick.tick() => self.random_alive(),
            };
            let Some(node) = node else { continue };
            if node == self.name {
                continue;
            }
            let m = self.clone();
            tokio::spawn(async move {
                match m.rpc(&node, &Message::FetchPlacement { node: node.clone() }).await {
                    Ok(mut replies) => {
                        if let Some(Ok(Message::Placement { doc: Some(doc) })) = replies.recv().await {
                            m.metrics.placement_versions.inc();
                            m.view.write().unwrap_or_else(|p| p.into_inner()).offer(doc);
                            m.metrics.mesh_rpcs.with_label_values(&["fetch_placement", "ok"]).inc();
                        }
                    }
                    Err(e) => {
                        m.metrics.mesh_rpcs.with_label_values(&["fetch_placement", "error"]).inc();
                        tracing::debug!(peer = %node, error = %e, "placement fetch failed");
                    }
                }
            });
        }
    }

    fn random_alive(&self) -> Option<String> {
        let members = self.members.read().unwrap_or_else(|p| p.into_inner());
        let alive: Vec<&String> = members.iter().filter(|(_, (_, s))| *s == PeerState::Alive).map(|(n, _)| n).collect();
        (!alive.is_empty()).then(|| alive[rand::random::<u32>() as usize % alive.len()].clone())
    }

    /// This node's document from its lifecycle state.
    pub fn local_doc(&self) -> PlacementDoc {
        let status = self.models.status();
        let models = status
            .models
            .iter()
            .map(|m| ModelDoc {
                id: m.id.clone(),
                state: m.state.as_str().to_string(),
                pinned: m.pinned,
                on_disk: m.on_disk,
                bytes: if m.state == State::Unloaded || m.state == State::Failed {
                    self.models.estimate(&m.id).unwrap_or(m.bytes)
                } else {
                    m.bytes
                },
                in_flight: m.in_flight as u32,
                queued: m.queued as u32,
                priority: m.priority,
                idle_ms: m.last_used_secs_ago.map(|s| (s * 1e3) as u64).unwrap_or(u64::MAX / 2),
            })
            .collect();
        PlacementDoc {
            node: self.name.clone(),
            version: 0,
            http: self.http.clone(),
            devices: status
                .devices
                .iter()
                .map(|d| DeviceDoc { name: d.name.clone(), total_bytes: d.total_bytes, budget_bytes: d.budget_bytes })
                .collect(),
            budget_bytes: status.budget_bytes,
            used_bytes: status.used_bytes,
            eviction: format!("{:?}", status.eviction).to_lowercase(),
            models,
            aliases: self.models.aliases().iter().map(|(a, t)| (a.to_string(), t.to_string())).collect(),
        }
    }

    /// Alive members' documents (this node's included) with their liveness.
    pub fn fleet(&self) -> Vec<(PlacementDoc, bool)> {
        let members = self.members.read().unwrap_or_else(|p| p.into_inner());
        let view = self.view.read().unwrap_or_else(|p| p.into_inner());
        view.docs()
            .map(|d| {
                let alive = d.node == self.name || members.get(&d.node).is_some_and(|(_, s)| *s == PeerState::Alive);
                (d.clone(), alive)
            })
            .collect()
    }

    pub fn peers(&self) -> Vec<PeerStatus> {
        let members = self.members.read().unwrap_or_else(|p| p.into_inner());
        let view = self.view.read().unwrap_or_else(|p| p.into_inner());
        let mut out: Vec<PeerStatus> = vec![(self.name.clone(), self.my_id.addr, PeerState::Alive)]
            .into_iter()
            .chain(members.iter().map(|(n, (id, s))| (n.clone(), id.addr, *s)))
            .map(|(name, address, state)| {
                let doc = view.get(&name);
                PeerStatus {
                    loaded: doc
                        .map(|d| d.models.iter().filter(|m| m.is_ready()).map(|m| m.id.clone()).collect())
                        .unwrap_or_default(),
                    in_flight: doc.map(|d| d.models.iter().map(|m| m.in_flight).sum()).unwrap_or(0),
                    queued: doc.map(|d| d.models.iter().map(|m| m.queued).sum()).unwrap_or(0),
                    http: doc.map(|d| d.http.clone()),
                    devices: doc.map(|d| d.devices.clone()).unwrap_or_default(),
                    budget_bytes: doc.map(|d| d.budget_bytes).unwrap_or(0),
                    used_bytes: doc.map(|d| d.used_bytes).unwrap_or(0),
                    version: doc.map(|d| d.version).unwrap_or(0),
                    name,
                    address,
                    state,
                }
            })
            .collect();
        out.sort_by(|a, b| a.name.cmp(&b.name));
        out
    }

    /// Opens a bi-stream to `node`, sends `msg`, and returns the reply frames as they arrive.
    pub async fn rpc(
        self: &Arc<Self>,
        node: &str,
        msg: &Message,
    ) -> Result<UnboundedReceiver<Result<Message, String>>, String> {
        let addr = self
            .members
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(node)
            .filter(|(_, s)| !s.is_gone())
            .map(|(id, _)| id.addr)
            .ok_or_else(|| format!("peer {node} is not a live member"))?;
        let conn = self.conn(node, addr).await.map_err(|e| e.to_string())?;
        let (mut send, recv) = conn.open_bi().await.map_err(|e| e.to_string())?;
        send.write_all(&frame::encode(msg)).await.map_err(|e| e.to_string())?;
        let _ = send.finish();
        let (tx, rx) = unbounded_channel();
        tokio::spawn(read_frames(recv, tx, send));
        Ok(rx)
    }

    /// Serves RPCs a peer opens on a connection.
    async fn serve_streams(self: Arc<Self>, peer: String, conn: Connection) {
        while let Ok((send, recv)) = conn.accept_bi().await {
            let m = self.clone();
            let p = peer.clone();
            tokio::spawn(async move { m.serve_one(p, send, recv).await });
        }
    }

    async fn serve_one(self: Arc<Self>, peer: String, mut send: SendStream, recv: RecvStream) {
        let (tx, mut rx) = unbounded_channel();
        tokio::spawn(read_frames_only(recv, tx));
        let Some(Ok(msg)) = rx.recv().await else {
            tracing::warn!(peer = %peer, "garbled mesh request; stream closed");
            let _ = send.reset(quinn::VarInt::from_u32(1));
            return;
        };
        match msg {
            Message::FetchPlacement { node } => {
                let doc = self.view.read().unwrap_or_else(|p| p.into_inner()).get(&node).cloned();
                let _ = send.write_all(&frame::encode(&Message::Placement { doc })).await;
                let _ = send.finish();
            }
            Message::Admin { action, model } => {
                let result = match action.as_str() {
                    "load" => self.models.load(&model).await,
                    "unload" => self.models.unload(&model),
                    "pin" => self.models.pin(&model).await,
                    "unpin" => self.models.unpin(&model),
                    other => {
                        Err(GenerateError::new(ErrorKind::InvalidRequest, format!("unknown admin action {other}")))
                    }
                };
                let reply = Message::AdminResult { ok: result.is_ok(), error: result.err() };
                self.metrics.mesh_rpcs.with_label_values(&["admin", "ok"]).inc();
                let _ = send.write_all(&frame::encode(&reply)).await;
                let _ = send.finish();
            }
            Message::Generate { request, keep_alive } => {
                self.metrics.mesh_rpcs.with_label_values(&["generate", "ok"]).inc();
                let mut events = self.generate_local(request, keep_alive).await;
                while let Some(ev) = events.recv().await {
                    let last = matches!(ev, Event::Done { .. } | Event::Error { .. });
                    // A write error means the requester went away: dropping `events` stops it.
                    if send.write_all(&frame::encode(&Message::Event { event: ev })).await.is_err() {
                        tracing::info!(peer = %peer, "forwarded request abandoned by its gateway");
                        return;
                    }
                    if last {
                        break;
                    }
                }
                let _ = send.finish();
            }
            Message::Leaving => {
                self.peer_left(&peer);
                // Ending the stream is the acknowledgement the leaver waits for.
                let _ = send.finish();
            }
            other => tracing::warn!(peer = %peer, message = ?other, "unexpected mesh request"),
        }
    }

    /// Runs a generation on this node for a peer; events (or one error) arrive on the receiver.
    async fn generate_local(
        &self,
        request: GenerateRequest,
        keep_alive: Option<serde_json::Value>,
    ) -> UnboundedReceiver<Event> {
        let (tx, rx) = unbounded_channel();
        let fail = |e: GenerateError| {
            let _ = tx.send(Event::Error { error: e });
        };
        let keep_alive = match keep_alive.as_ref().map(cortex_proto::eviction::KeepAlive::parse).transpose() {
            Ok(k) => k,
            Err(e) => {
                fail(GenerateError::new(ErrorKind::InvalidRequest, e));
                return rx;
            }
        };
        let lease = match self.models.acquire(&request.model, keep_alive).await {
            Ok(l) => l,
            Err(e) => {
                fail(e);
                return rx;
            }
        };
        let model = lease.model.clone();
        let r = request.clone();
        let prepared = match tokio::task::spawn_blocking(move || model.prepare(&r)).await {
            Ok(Ok(p)) => p,
            Ok(Err(e)) => {
                fail(e);
                return rx;
            }
            Err(e) => {
                fail(GenerateError::new(ErrorKind::Internal, e.to_string()));
                return rx;
            }
        };
        match lease.model.submit(&request, prepared) {
            Ok(mut inner) => {
                // Forward while holding the lease, so the model stays loaded until the end.
                tokio::spawn(async move {
                    let _lease = lease;
                    while let Some(ev) = inner.recv().await {
                        if tx.send(ev).is_err() {
                            return;
                        }
                    }
                });
            }
            Err(e) => fail(e),
        }
        rx
    }

    /// Tells each live peer that this node is shutting down, over a stream it acknowledges by
    /// ending: peers mark it left and route nothing more to it, while the streams it is already
    /// serving run on. foca's own leave looks like a failure to them; a peer that does not
    /// answer within a second learns it from foca alone. Called when the drain starts, and again
    /// by [`Mesh::leave`] (a peer told twice is unchanged).
    pub async fn say_goodbye(self: &Arc<Self>) {
        let peers: Vec<String> = {
            let members = self.members.read().unwrap_or_else(|p| p.into_inner());
            members.iter().filter(|(_, (_, s))| !s.is_gone()).map(|(n, _)| n.clone()).collect()
        };
        let told = peers.into_iter().map(|peer| async move {
            let ack = async {
                let mut replies = self.rpc(&peer, &Message::Leaving).await?;
                while replies.recv().await.is_some() {}
                Ok::<_, String>(())
            };
            match tokio::time::timeout(Duration::from_secs(1), ack).await {
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
        let (tx, rx) = tokio::sync::oneshot::channel();
        if self.input.send(Input::Leave(tx)).is_ok() {
            let _ = tokio::time::timeout(Duration::from_secs(2), rx).await;
        }
        self.endpoint.close(quinn::VarInt::from_u32(0), b"leaving");
    }
}

/// Membership tuning for a fleet of about `size` nodes on one network: a dead peer is found
/// within a few seconds. Packets stay under a QUIC datagram's size.
pub fn foca_config(size: u32) -> foca::Config {
    let mut config = foca::Config::new_lan(NonZeroU32::new(size.max(1)).unwrap_or(NonZeroU32::MIN));
    config.probe_period = Duration::from_millis(500);
    config.probe_rtt = Duration::from_millis(250);
    config.suspect_to_down_after = Duration::from_secs(2).max(config.suspect_to_down_after / 4);
    config.max_packet_size = std::num::NonZeroUsize::new(1200).unwrap_or(std::num::NonZeroUsize::MIN);
    // A packet holds only a couple of dozen updates, so after many joins at once the periodic
    // announce (which returns a feed of members) is what fills the gaps: do it every 5 s, not 30.
    if let Some(p) = config.periodic_announce.as_mut() {
        p.frequency = Duration::from_secs(5);
    }
    config
}

/// Whether two documents say the same, ignoring version and idle times.
fn same_content(a: &PlacementDoc, b: &PlacementDoc) -> bool {
    let strip = |d: &PlacementDoc| {
        let mut d = d.clone();
        d.version = 0;
        d.used_bytes = 0;
        for m in &mut d.models {
            m.idle_ms = 0;
            m.in_flight = 0;
            m.queued = 0;
        }
        d
    };
    strip(a) == strip(b)
}

/// Reads frames from a stream into a channel until it ends or a frame is garbled.
async fn read_frames(recv: RecvStream, tx: UnboundedSender<Result<Message, String>>, send: SendStream) {
    // Keep the send half alive while reading so the peer does not see us go away.
    let _send = send;
    read_frames_only(recv, tx).await;
}

async fn read_frames_only(mut recv: RecvStream, tx: UnboundedSender<Result<Message, String>>) {
    let mut buf: Vec<u8> = Vec::new();
    let mut chunk = vec![0u8; READ_CHUNK];
    loop {
        loop {
            match frame::decode(&buf) {
                Ok(Some((msg, used))) => {
                    buf.drain(..used);
                    if tx.send(Ok(msg)).is_err() {
                        return;
                    }
                }
                Ok(None) => break,
                Err(e) => {
                    let _ = tx.send(Err(e.to_string()));
                    let _ = recv.stop(quinn::VarInt::from_u32(2));
                    return;
                }
            }
        }
        match recv.read(&mut chunk).await {
            Ok(Some(n)) => buf.extend_from_slice(&chunk[..n]),
            Ok(None) => {
                if !buf.is_empty() {
                    let _ = tx.send(Err("the stream ended inside a frame".into()));
                }
                return;
            }
            Err(e) => {
                let _ = tx.send(Err(format!("the stream broke: {e}")));
                return;
            }
        }
    }
}
