//! Deterministic simulation of fleet membership: 50 to 200 in-memory foca instances with the
//! mesh's own configuration, a fake clock and lossy links. Reports the time for every member
//! to learn of a join and of a crash, false suspicions (alive members reported down) and bytes
//! sent per node per second. Same seed, same figures.
//!
//! `cargo bench -p cortex-neuron --bench membership` (optionally `-- 200 0.05` for nodes and
//! loss).

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, HashSet};
use std::net::SocketAddr;
use std::time::Duration;

use cortex_neuron::mesh::membership::{foca_config, NodeId};
use foca::{AccumulatingRuntime, Foca, NoCustomBroadcast, OwnedNotification, PostcardCodec, Timer};
use rand010::{RngExt, SeedableRng};

type Node = Foca<NodeId, PostcardCodec, rand010::rngs::StdRng, NoCustomBroadcast>;

enum Ev {
    Packet { to: usize, data: Vec<u8> },
    Timer { at: usize, timer: Timer<NodeId> },
}

struct Sim {
    nodes: Vec<Option<Node>>,
    ids: Vec<NodeId>,
    queue: BinaryHeap<Reverse<(u64, u64)>>,
    events: BTreeMap<u64, Ev>,
    seq: u64,
    now_ms: u64,
    loss: f64,
    rng: rand010::rngs::StdRng,
    bytes: u64,
    /// What each node believes: the set of members it considers up.
    up: Vec<HashSet<usize>>,
    false_downs: u64,
    crashed: HashSet<usize>,
}

impl Sim {
    fn new(n: usize, loss: f64, seed: u64) -> Self {
        let ids: Vec<NodeId> = (0..n)
            .map(|i| NodeId {
                name: format!("n{i}"),
                addr: SocketAddr::from(([10, 0, (i / 250) as u8, (i % 250) as u8], 31313)),
                bump: 0,
            })
            .collect();
        let nodes = ids
            .iter()
            .enumerate()
            .map(|(i, id)| {
                Some(Foca::new(
                    id.clone(),
                    foca_config(n as u32),
                    rand010::rngs::StdRng::seed_from_u64(seed + i as u64),
                    PostcardCodec,
                ))
            })
            .collect();
        Self {
            nodes,
            ids,
            queue: BinaryHeap::new(),
            events: BTreeMap::new(),
            seq: 0,
            now_ms: 0,
            loss,
            rng: rand010::rngs::StdRng::seed_from_u64(seed),
            bytes: 0,
            up: vec![HashSet::new(); n],
            false_downs: 0,
            crashed: HashSet::new(),
        }
    }

    fn push(&mut self, delay_ms: u64, ev: Ev) {
        self.seq += 1;
        self.queue.push(Reverse((self.now_ms + delay_ms, self.seq)));
        self.events.insert(self.seq, ev);
    }

    fn drain(&mut self, at: usize, rt: &mut AccumulatingRuntime<NodeId>) {
        while let Some((to, data)) = rt.to_send() {
            self.bytes += data.len() as u64;
            if self.rng.random::<f64>() < self.loss {
                continue;
            }
            let to = self.ids.iter().position(|i| i.addr == to.addr).unwrap_or(0);
            let latency = 1 + self.rng.random_range(0..4);
            self.push(latency, Ev::Packet { to, data: data.to_vec() });
        }
        while let Some((after, timer)) = rt.to_schedule() {
            self.push(after.as_millis() as u64, Ev::Timer { at, timer });
        }
        while let Some(n) = rt.to_notify() {
            match n {
                OwnedNotification::MemberUp(id) => {
                    let i = self.index(&id);
                    self.up[at].insert(i);
                }
                OwnedNotification::MemberDown(id) => {
                    let i = self.index(&id);
                    self.up[at].remove(&i);
                    if !self.crashed.contains(&i) {
                        self.false_downs += 1;
                    }
                }
                _ => {}
            }
        }
    }

    fn index(&self, id: &NodeId) -> usize {
        self.ids.iter().position(|i| i.addr == id.addr).unwrap_or(0)
    }

    fn with(&mut self, at: usize, f: impl FnOnce(&mut Node, &mut AccumulatingRuntime<NodeId>)) {
        let mut rt = AccumulatingRuntime::new();
        if let Some(node) = self.nodes[at].as_mut() {
            f(node, &mut rt);
        }
        self.drain(at, &mut rt);
    }

    /// Runs until `until_ms` or until `done` holds; returns the time it held, if it did.
    fn run(&mut self, until_ms: u64, done: impl Fn(&Sim) -> bool) -> Option<u64> {
        while let Some(Reverse((t, seq))) = self.queue.pop() {
            if t > until_ms {
                self.queue.push(Reverse((t, seq)));
                break;
            }
            self.now_ms = t;
            match self.events.remove(&seq) {
                Some(Ev::Packet { to, data }) => self.with(to, |n, rt| {
                    let _ = n.handle_data(&data, rt);
                }),
                Some(Ev::Timer { at, timer }) => self.with(at, |n, rt| {
                    let _ = n.handle_timer(timer, rt);
                }),
                None => {}
            }
            if done(self) {
                return Some(self.now_ms);
            }
        }
        self.now_ms = until_ms;
        None
    }

    fn alive(&self) -> Vec<usize> {
        (0..self.nodes.len()).filter(|i| self.nodes[*i].is_some()).collect()
    }
}

fn main() {
    let args: Vec<String> = std::env::args().filter(|a| !a.starts_with("--")).collect();
    let sizes: Vec<usize> = match args.get(1).and_then(|a| a.parse().ok()) {
        Some(n) => vec![n],
        None => vec![50, 100, 200],
    };
    let losses: Vec<f64> = match args.get(2).and_then(|a| a.parse().ok()) {
        Some(l) => vec![l],
        None => vec![0.0, 0.05],
    };
    println!("| nodes | loss | join: all know (s) | crash: all know down (s) | false suspicions (down) in 60 s | bytes/node/s |");
    println!("|---|---|---|---|---|---|");
    for &n in &sizes {
        for &loss in &losses {
            let mut sim = Sim::new(n, loss, 42);
            // Everyone announces to node 0, one every 50 ms (a rolling start).
            for i in 1..n {
                sim.now_ms = (i as u64) * 50;
                let seed = sim.ids[0].clone();
                sim.with(i, |node, rt| {
                    let _ = node.announce(seed, rt);
                });
            }
            let start = sim.now_ms;
            let everyone = |s: &Sim| s.alive().iter().all(|&i| s.up[i].len() == s.alive().len() - 1);
            // Like the mesh's join loop: a node that knows nobody yet announces again each second.
            let mut joined = None;
            while joined.is_none() && sim.now_ms < start + 120_000 {
                let until = sim.now_ms + 1_000;
                joined = sim.run(until, everyone).map(|t| (t - start) as f64 / 1e3);
                for i in 1..n {
                    if sim.up[i].is_empty() {
                        let seed = sim.ids[0].clone();
                        sim.with(i, |node, rt| {
                            let _ = node.announce(seed, rt);
                        });
                    }
                }
            }
            // Steady state for 60 s: bytes and false suspicions.
            let (b0, f0, t0) = (sim.bytes, sim.false_downs, sim.now_ms);
            sim.run(t0 + 60_000, |_| false);
            let bytes_rate = (sim.bytes - b0) as f64 / n as f64 / 60.0;
            let false_downs = sim.false_downs - f0;
            // Crash node n/2; time until every survivor has it down.
            let victim = n / 2;
            sim.nodes[victim] = None;
            sim.crashed.insert(victim);
            let t1 = sim.now_ms;
            let all_down = |s: &Sim| s.alive().iter().all(|&i| !s.up[i].contains(&victim));
            let down = sim.run(t1 + 120_000, all_down).map(|t| (t - t1) as f64 / 1e3);
            let fmt = |v: Option<f64>| v.map(|s| format!("{s:.1}")).unwrap_or_else(|| "> 120".into());
            println!(
                "| {n} | {:.0} % | {} | {} | {false_downs} | {bytes_rate:.0} |",
                loss * 100.0,
                fmt(joined),
                fmt(down)
            );
        }
    }
    let _ = Duration::ZERO;
}
