//! Membership: who is in the fleet and how each member looks from here. SWIM with suspicion
//! (foca) over QUIC datagrams, and on top of it the placement stamps a custom broadcast carries
//! (`(node, version)`: a node published a new document).
//!
//! Sans-IO like foca itself: [`Membership::handle`] takes an input and the time, and returns
//! what to send, which timers to set and what changed; it never touches a socket or a clock.
//! `mesh::Mesh` is the thin async shell that carries the outputs out, and the tests below drive
//! several members against each other with a fake clock.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cortex_proto::model::PeerState;
use foca::{AccumulatingRuntime, BroadcastHandler, Foca, Invalidates, OwnedNotification, PostcardCodec, Timer};
use rand010::SeedableRng;
use serde::{Deserialize, Serialize};

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

/// A placement stamp: `node` published document `version`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stamp {
    pub node: String,
    pub version: u64,
}

pub struct StampKey(Stamp);

impl Invalidates for StampKey {
    fn invalidates(&self, other: &Self) -> bool {
        self.0.node == other.0.node && self.0.version >= other.0.version
    }
}

#[derive(Debug, thiserror::Error)]
#[error("bad placement stamp")]
pub struct StampError;

/// Passes on a stamp only when it is newer than any seen for its node; a peer's stamps are
/// queued for the caller (who pulls the documents they announce), this node's own are not.
pub struct Stamps {
    newest: HashMap<String, u64>,
    heard: Arc<Mutex<Vec<Stamp>>>,
}

impl BroadcastHandler<NodeId> for Stamps {
    type Key = StampKey;
    type Error = StampError;
    fn receive_item(&mut self, data: &[u8], sender: Option<&NodeId>) -> Result<Option<StampKey>, StampError> {
        let stamp: Stamp = postcard::from_bytes(data).map_err(|_| StampError)?;
        if self.newest.get(&stamp.node).is_some_and(|&v| v >= stamp.version) {
            return Ok(None);
        }
        self.newest.insert(stamp.node.clone(), stamp.version);
        if sender.is_some() {
            lock(&self.heard).push(stamp.clone());
        }
        Ok(Some(StampKey(stamp)))
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// What membership is asked to do.
#[derive(Debug)]
pub enum Input {
    /// A datagram from a verified peer.
    Data(Vec<u8>),
    /// A timer set by an earlier output went off.
    Timer(Timer<NodeId>),
    /// Introduce this node to a seed.
    Announce(NodeId),
    /// This node published document `version`.
    Publish(u64),
    /// A peer said goodbye (its drain started): record a leave, not a failure.
    PeerLeft(String),
    /// Leave the cluster.
    Leave,
}

/// What membership asks the shell to do, and what changed.
#[derive(Debug, Default)]
pub struct Outputs {
    /// Datagrams to send.
    pub send: Vec<(NodeId, bytes::Bytes)>,
    /// Timers to set: deliver each as `Input::Timer` after its delay.
    pub schedule: Vec<(Duration, Timer<NodeId>)>,
    /// Peers' placement stamps newer than any seen: pull those documents.
    pub stamps: Vec<Stamp>,
    /// Members that came up: pull their documents.
    pub up: Vec<String>,
    /// Members declared down: close their connections, so their streams end now.
    pub down: Vec<String>,
}

/// A member as this node sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Peer {
    pub id: NodeId,
    pub state: PeerState,
    /// When it entered that state.
    pub since: Instant,
}

/// Members by name, with their states, as notifications and probes leave them.
#[derive(Debug, Clone, Default)]
pub struct PeerTable {
    peers: BTreeMap<String, Peer>,
}

impl PeerTable {
    pub fn get(&self, name: &str) -> Option<&Peer> {
        self.peers.get(name)
    }

    pub fn iter(&self) -> impl Iterator<Item = (&String, &Peer)> {
        self.peers.iter()
    }

    /// The state of `name`; `None` for a node never seen.
    pub fn state(&self, name: &str) -> Option<PeerState> {
        self.peers.get(name).map(|p| p.state)
    }

    /// The address of a member that is not gone.
    pub fn live_addr(&self, name: &str) -> Option<SocketAddr> {
        self.peers.get(name).filter(|p| !p.state.is_gone()).map(|p| p.id.addr)
    }

    /// Members not gone (alive or suspect): who to tell when leaving.
    pub fn live(&self) -> Vec<String> {
        self.peers.iter().filter(|(_, p)| !p.state.is_gone()).map(|(n, _)| n.clone()).collect()
    }

    pub fn alive(&self) -> Vec<String> {
        self.peers.iter().filter(|(_, p)| p.state == PeerState::Alive).map(|(n, _)| n.clone()).collect()
    }

    /// True when no member is alive or suspect (a node still looking for its fleet).
    pub fn alone(&self) -> bool {
        self.peers.values().all(|p| p.state.is_gone())
    }

    /// How many members are in each state, in `PeerState::ALL`'s order.
    pub fn counts(&self) -> [usize; 4] {
        PeerState::ALL.map(|s| self.peers.values().filter(|p| p.state == s).count())
    }

    fn set(&mut self, id: NodeId, state: PeerState, now: Instant) {
        match self.peers.get_mut(&id.name) {
            Some(p) if p.state == state && p.id == id => {}
            Some(p) => *p = Peer { id, state, since: now },
            None => {
                self.peers.insert(id.name.clone(), Peer { id, state, since: now });
            }
        }
    }

    fn mark(&mut self, name: &str, state: PeerState, now: Instant) {
        if let Some(p) = self.peers.get_mut(name).filter(|p| p.state != state) {
            p.state = state;
            p.since = now;
        }
    }
}

/// foca plus the peer table it drives.
pub struct Membership {
    foca: Foca<NodeId, PostcardCodec, rand010::rngs::StdRng, Stamps>,
    rt: AccumulatingRuntime<NodeId>,
    heard: Arc<Mutex<Vec<Stamp>>>,
    peers: PeerTable,
    name: String,
}

impl Membership {
    /// This node as `me`, tuned for a fleet of about `size` nodes; `seed` seeds its choice of
    /// whom to probe.
    pub fn new(me: NodeId, size: u32, seed: u64) -> Self {
        let heard = Arc::new(Mutex::new(Vec::new()));
        let rng = rand010::rngs::StdRng::seed_from_u64(seed);
        let stamps = Stamps { newest: HashMap::new(), heard: heard.clone() };
        let name = me.name.clone();
        let foca = Foca::with_custom_broadcast(me, foca_config(size), rng, PostcardCodec, stamps);
        Self { foca, rt: AccumulatingRuntime::new(), heard, peers: PeerTable::default(), name }
    }

    pub fn peers(&self) -> &PeerTable {
        &self.peers
    }

    /// Applies `input` at time `now` and returns what to do about it.
    pub fn handle(&mut self, input: Input, now: Instant) -> Outputs {
        let result = match input {
            Input::Data(data) => self.foca.handle_data(&data, &mut self.rt),
            Input::Timer(t) => self.foca.handle_timer(t, &mut self.rt),
            Input::Announce(id) => self.foca.announce(id, &mut self.rt),
            Input::Publish(version) => {
                let stamp = Stamp { node: self.name.clone(), version };
                postcard::to_allocvec(&stamp)
                    .map_err(|e| foca::Error::Encode(e.into()))
                    .and_then(|b| self.foca.add_broadcast(&b).map(|_| ()))
            }
            Input::PeerLeft(name) => {
                if self.peers.state(&name).is_some_and(|s| s != PeerState::Left) {
                    tracing::info!(peer = %name, "peer left");
                    self.peers.mark(&name, PeerState::Left, now);
                }
                Ok(())
            }
            Input::Leave => self.foca.leave_cluster(&mut self.rt),
        };
        if let Err(e) = result {
            tracing::debug!(error = %e, "membership input rejected");
        }
        let mut out = Outputs::default();
        while let Some((to, data)) = self.rt.to_send() {
            out.send.push((to, data));
        }
        while let Some(timer) = self.rt.to_schedule() {
            out.schedule.push(timer);
        }
        while let Some(n) = self.rt.to_notify() {
            self.on_notification(n, now, &mut out);
        }
        self.sync_suspicion(now);
        out.stamps = std::mem::take(&mut *lock(&self.heard));
        out
    }

    fn on_notification(&mut self, n: OwnedNotification<NodeId>, now: Instant, out: &mut Outputs) {
        match n {
            OwnedNotification::MemberUp(id) => {
                tracing::info!(peer = %id.name, addr = %id.addr, "peer up");
                out.up.push(id.name.clone());
                self.peers.set(id, PeerState::Alive, now);
            }
            OwnedNotification::MemberDown(id) => {
                // foca reports a leave and a failure alike; a peer that said goodbye first
                // stays `Left`.
                let state = match self.peers.state(&id.name) {
                    Some(PeerState::Left) => PeerState::Left,
                    _ => {
                        tracing::warn!(peer = %id.name, "peer down");
                        PeerState::Down
                    }
                };
                out.down.push(id.name.clone());
                self.peers.set(id, state, now);
            }
            OwnedNotification::Rename(old, new) => {
                if old.name != new.name {
                    self.peers.peers.remove(&old.name);
                }
                self.peers.set(new, PeerState::Alive, now);
            }
            _ => {}
        }
    }

    /// foca notifies only up and down; suspicion (probes failing, not yet declared down) is
    /// read from its membership table so operators can see it.
    fn sync_suspicion(&mut self, now: Instant) {
        let seen: Vec<(String, foca::State)> =
            self.foca.iter_membership_state().map(|m| (m.id().name.clone(), m.state())).collect();
        for (name, state) in seen {
            match (state, self.peers.state(&name)) {
                (foca::State::Suspect, Some(PeerState::Alive)) => self.peers.mark(&name, PeerState::Suspect, now),
                (foca::State::Alive, Some(PeerState::Suspect)) => self.peers.mark(&name, PeerState::Alive, now),
                _ => {}
            }
        }
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

#[cfg(test)]
mod tests;
