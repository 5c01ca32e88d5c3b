//! Members driven against each other in memory with a fake clock: packets take a millisecond,
//! timers fire at their virtual time, a frozen member neither sends nor receives.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, HashSet};

use super::*;

enum Ev {
    Packet { to: usize, data: Vec<u8> },
    Timer { at: usize, timer: Timer<NodeId> },
}

struct Sim {
    members: Vec<Option<Membership>>,
    ids: Vec<NodeId>,
    queue: BinaryHeap<Reverse<(u64, u64)>>,
    events: BTreeMap<u64, Ev>,
    seq: u64,
    now_ms: u64,
    base: Instant,
    frozen: HashSet<usize>,
    /// Everything each member was told, by kind.
    stamps: Vec<Vec<Stamp>>,
    downs: Vec<Vec<String>>,
}

fn id(i: usize, bump: u16) -> NodeId {
    NodeId { name: format!("n{i}"), addr: SocketAddr::from(([10, 0, 0, i as u8 + 1], 31313)), bump }
}

impl Sim {
    fn new(n: usize) -> Self {
        let ids: Vec<NodeId> = (0..n).map(|i| id(i, 0)).collect();
        Self {
            members: ids.iter().enumerate().map(|(i, id)| Some(Membership::new(id.clone(), 8, i as u64 + 1))).collect(),
            ids,
            queue: BinaryHeap::new(),
            events: BTreeMap::new(),
            seq: 0,
            now_ms: 0,
            base: Instant::now(),
            frozen: HashSet::new(),
            stamps: vec![Vec::new(); n],
            downs: vec![Vec::new(); n],
        }
    }

    fn now(&self) -> Instant {
        self.base + Duration::from_millis(self.now_ms)
    }

    fn push(&mut self, at_ms: u64, ev: Ev) {
        self.seq += 1;
        self.queue.push(Reverse((at_ms, self.seq)));
        self.events.insert(self.seq, ev);
    }

    /// Gives `input` to member `i` now and schedules what it asks for.
    fn input(&mut self, i: usize, input: Input) {
        let now = self.now();
        let Some(m) = self.members[i].as_mut() else { return };
        let out = m.handle(input, now);
        self.stamps[i].extend(out.stamps);
        self.downs[i].extend(out.down);
        for (to, data) in out.send {
            if let Some(j) = self.ids.iter().position(|x| x.addr == to.addr) {
                self.push(self.now_ms + 1, Ev::Packet { to: j, data: data.to_vec() });
            }
        }
        for (after, timer) in out.schedule {
            self.push(self.now_ms + after.as_millis() as u64, Ev::Timer { at: i, timer });
        }
    }

    fn run_for(&mut self, ms: u64) {
        let end = self.now_ms + ms;
        while let Some(Reverse((at, seq))) = self.queue.peek().copied() {
            if at > end {
                break;
            }
            self.queue.pop();
            self.now_ms = at;
            match self.events.remove(&seq) {
                Some(Ev::Packet { to, data }) => {
                    // A frozen member's packets are lost both ways.
                    let from = self.ids.iter().position(|x| data_from(&data).is_some_and(|n| n == x.name));
                    if self.frozen.contains(&to) || from.is_some_and(|f| self.frozen.contains(&f)) {
                        continue;
                    }
                    self.input(to, Input::Data(data));
                }
                Some(Ev::Timer { at, timer }) if !self.frozen.contains(&at) => self.input(at, Input::Timer(timer)),
                _ => {}
            }
        }
        self.now_ms = end;
    }

    fn state(&self, at: usize, of: usize) -> Option<PeerState> {
        self.members[at].as_ref()?.peers().state(&self.ids[of].name)
    }

    /// Everyone announces to member 0, then the fleet settles.
    fn joined(n: usize) -> Self {
        let mut sim = Self::new(n);
        for i in 1..n {
            let seed = sim.ids[0].clone();
            sim.input(i, Input::Announce(seed));
        }
        sim.run_for(5_000);
        sim
    }
}

/// The sender's name in a membership packet's header.
fn data_from(data: &[u8]) -> Option<String> {
    let mut buf = data;
    foca::Codec::<NodeId>::decode_header(&mut PostcardCodec, &mut buf).ok().map(|h| h.src.name)
}

#[test]
fn members_that_announce_to_one_seed_all_see_each_other() {
    let sim = Sim::joined(3);
    for a in 0..3 {
        for b in (0..3).filter(|&b| b != a) {
            assert_eq!(sim.state(a, b), Some(PeerState::Alive), "n{a} about n{b}");
        }
        assert!(!sim.members[a].as_ref().unwrap().peers().alone());
    }
}

#[test]
fn a_frozen_member_is_suspected_then_declared_down() {
    let mut sim = Sim::joined(3);
    sim.frozen.insert(2);
    let mut suspected = false;
    for _ in 0..40 {
        sim.run_for(100);
        suspected |= sim.state(0, 2) == Some(PeerState::Suspect);
        if sim.state(0, 2) == Some(PeerState::Down) {
            break;
        }
    }
    assert!(suspected, "n0 never suspected n2 before declaring it down");
    assert_eq!(sim.state(0, 2), Some(PeerState::Down));
    assert!(sim.downs[0].contains(&"n2".to_string()), "the shell is told to close n2's connections");
    assert_eq!(sim.state(0, 1), Some(PeerState::Alive));
    let counts = sim.members[0].as_ref().unwrap().peers().counts();
    assert_eq!(counts, [1, 0, 1, 0], "alive, suspect, down, left");
    assert_eq!(sim.members[0].as_ref().unwrap().peers().live_addr("n2"), None);
}

#[test]
fn a_member_that_says_goodbye_is_left_and_stays_left_when_it_goes() {
    let mut sim = Sim::joined(3);
    sim.input(0, Input::PeerLeft("n1".into()));
    assert_eq!(sim.state(0, 1), Some(PeerState::Left));
    sim.input(1, Input::Leave);
    sim.run_for(1_000);
    sim.members[1] = None;
    sim.run_for(10_000);
    assert_eq!(sim.state(0, 1), Some(PeerState::Left), "foca's notice turned a leave into a failure");
    assert_eq!(sim.state(0, 2), Some(PeerState::Alive));
    // n2 was not told the goodbye: it learns of the leave from foca, as a member gone.
    assert!(sim.state(2, 1).is_some_and(|s| s.is_gone()));
}

#[test]
fn a_member_declared_down_rejoins_with_a_renewed_identity() {
    let mut sim = Sim::joined(3);
    sim.frozen.insert(2);
    sim.run_for(8_000);
    assert_eq!(sim.state(0, 2), Some(PeerState::Down));
    // It comes back (a restart, or the end of a partition) under its renewed identity.
    sim.frozen.clear();
    let renewed = id(2, 1);
    sim.ids[2] = renewed.clone();
    sim.members[2] = Some(Membership::new(renewed, 8, 99));
    let seed = sim.ids[0].clone();
    sim.input(2, Input::Announce(seed));
    sim.run_for(5_000);
    assert_eq!(sim.state(0, 2), Some(PeerState::Alive));
    assert_eq!(sim.state(1, 2), Some(PeerState::Alive));
    assert_eq!(sim.members[0].as_ref().unwrap().peers().get("n2").map(|p| p.id.bump), Some(1));
}

#[test]
fn placement_stamps_reach_every_member_once_and_old_ones_are_dropped() {
    let mut sim = Sim::joined(3);
    sim.input(0, Input::Publish(3));
    sim.run_for(3_000);
    for i in [1, 2] {
        assert_eq!(sim.stamps[i], vec![Stamp { node: "n0".into(), version: 3 }], "n{i}");
    }
    // The publisher is not told of its own stamp; an older version goes nowhere.
    assert!(sim.stamps[0].is_empty());
    sim.input(0, Input::Publish(2));
    sim.run_for(3_000);
    assert_eq!(sim.stamps[1].len(), 1);
}
