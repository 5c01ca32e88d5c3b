//! Where a request for a model should run, from one node's view of the fleet: here when the
//! model is ready here and this node is not the busiest; else the least-loaded peer with it
//! ready (power of two choices on load); else a peer where it is loading; else a cold load on
//! the peer that fits it best. The answer is an ordered list of candidates, so the caller can
//! fall through to the next one when a peer fails before its first token. A model that only
//! unreachable or draining peers hold is unavailable for now (503), not unknown (404).
//!
//! Among nodes with the model ready, prefix affinity comes first: the node that served the
//! longest prefix of this prompt (by the summaries in the placement documents; a request's
//! session breaks ties and stands in where no prefix matches) keeps the conversation, where its
//! KV cache holds it, unless its load exceeds the least loaded node's by more than the request's
//! `load_margin`: then the load decides, as it does without a match (SGLang's router and Dynamo
//! learned that affinity without a guard piles work on one worker).

use crate::eviction::{self, Plan, Resident};
use crate::model::PeerState;
use crate::placement::PlacementDoc;
use crate::prefix::PrefixKey;

/// Why a node is a candidate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Readiness {
    Ready,
    Loading,
    /// It must load the model first (evicting by its own policy if needed).
    Cold,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    pub node: String,
    pub readiness: Readiness,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Try these in order (the local node may be among them).
    Try(Vec<Candidate>),
    /// No node knows the model.
    NotFound,
    /// Known, but no node can serve it now; the reason names what blocks it.
    Unavailable(String),
}

/// A member of the fleet as routing sees it, this node included (always alive to itself).
#[derive(Debug, Clone, Copy)]
pub struct Member<'a> {
    pub state: PeerState,
    pub doc: &'a PlacementDoc,
}

impl Member<'_> {
    /// Takes new work: alive and not draining.
    fn open(&self) -> bool {
        self.state == PeerState::Alive && !self.doc.draining
    }
}

/// What routing knows of a request.
#[derive(Debug, Clone, Copy)]
pub struct Request<'a> {
    /// The concrete model id (aliases resolved).
    pub model: &'a str,
    pub prefix: &'a PrefixKey,
    /// The conversation's key ([`crate::prefix::session_key`]), where the client names one.
    pub session: Option<u64>,
    /// How many more requests (running and queued) than the least loaded node the node holding
    /// the prompt's prefix may have and still be chosen for it.
    pub load_margin: u32,
}

/// The default of [`Request::load_margin`].
pub const LOAD_MARGIN: u32 = 4;

/// Routes `req` from node `me`. `coin` is any random number (it picks the two peers compared
/// by power of two choices).
pub fn route(req: &Request<'_>, me: &str, members: &[Member<'_>], coin: u64) -> Decision {
    let model = req.model;
    let alive: Vec<&PlacementDoc> = members.iter().filter(|m| m.open()).map(|m| m.doc).collect();
    let with = |pred: &dyn Fn(&crate::placement::ModelDoc) -> bool| -> Vec<&PlacementDoc> {
        alive.iter().copied().filter(|d| d.model(model).is_some_and(pred)).collect()
    };
    let cand = |d: &PlacementDoc, readiness| Candidate { node: d.node.clone(), readiness };

    let mut ready = with(&|m| m.is_ready());
    if !ready.is_empty() {
        ready.sort_by_key(|d| (d.load(), d.node != me, d.node.clone()));
        let mine = ready.iter().position(|d| d.node == me);
        let busiest = ready.iter().map(|d| d.load()).max().unwrap_or(0);
        let least = ready.iter().map(|d| d.load()).min().unwrap_or(0);
        let affinity = |d: &PlacementDoc| {
            let held = &d.model(model)?.prefixes;
            let matched = req.prefix.matched(held);
            let session = req.session.is_some_and(|s| held.binary_search(&s).is_ok());
            (matched > 0 || session).then_some((matched, session))
        };
        // `ready` is sorted by load, so the first of the best matches is the least loaded one.
        let best = ready
            .iter()
            .enumerate()
            .filter_map(|(i, d)| Some((affinity(d)?, i)))
            .max_by_key(|&(a, i)| (a, std::cmp::Reverse(i)))
            .map(|(_, i)| i)
            .filter(|&i| ready[i].load() <= least.saturating_add(req.load_margin));
        let first = match (best, mine) {
            (Some(i), _) => i,
            // Here, unless this node is strictly the busiest of those that have it.
            (None, Some(i))
                if ready.len() == 1 || ready[i].load() < busiest || ready.iter().all(|d| d.load() == busiest) =>
            {
                i
            }
            _ => two_choices(&ready, me, coin),
        };
        let mut order = vec![ready[first]];
        order.extend(ready.iter().enumerate().filter(|(i, _)| *i != first).map(|(_, d)| *d));
        return Decision::Try(order.into_iter().map(|d| cand(d, Readiness::Ready)).collect());
    }

    let mut loading = with(&|m| m.is_loading());
    if !loading.is_empty() {
        loading.sort_by_key(|d| (d.node != me, d.load(), d.node.clone()));
        return Decision::Try(loading.into_iter().map(|d| cand(d, Readiness::Loading)).collect());
    }

    let known = with(&|_| true);
    if known.is_empty() {
        return unreachable_holders(model, members);
    }
    // Cold load: where it fits after that node's own eviction rules, preferring weights already
    // on disk, then the most free memory.
    let mut fits: Vec<(&PlacementDoc, bool, u64)> = Vec::new();
    let mut reasons = Vec::new();
    for d in known {
        let Some(m) = d.model(model) else { continue };
        let strategy = d.eviction;
        let residents: Vec<Resident> = d
            .models
            .iter()
            .filter(|r| r.id != model && (r.is_ready() || r.is_loading()))
            .map(|r| Resident {
                id: r.id.clone(),
                bytes: r.bytes,
                pinned: r.pinned,
                in_flight: (r.in_flight + r.queued) as usize,
                loading: r.is_loading(),
                priority: r.priority,
                last_used: u64::MAX - r.idle_ms,
            })
            .collect();
        match eviction::plan(m.bytes, d.budget_bytes, &residents, strategy) {
            Plan::Impossible { .. } => reasons.push(format!("{}: not enough memory", d.node)),
            _ => fits.push((d, m.on_disk, d.free_bytes())),
        }
    }
    if fits.is_empty() {
        return Decision::Unavailable(format!("no node can hold `{model}` now ({})", reasons.join("; ")));
    }
    fits.sort_by(|a, b| b.1.cmp(&a.1).then(b.2.cmp(&a.2)).then((a.0.node != me).cmp(&(b.0.node != me))));
    Decision::Try(fits.into_iter().map(|(d, _, _)| cand(d, Readiness::Cold)).collect())
}

/// No open member knows `model`: unavailable when members that cannot take work now (down,
/// suspect, left, draining) hold it, else unknown.
fn unreachable_holders(model: &str, members: &[Member<'_>]) -> Decision {
    let holders: Vec<String> = members
        .iter()
        .filter(|m| !m.open() && m.doc.model(model).is_some())
        .map(|m| {
            let why = if m.state == PeerState::Alive { "draining" } else { m.state.as_str() };
            format!("{} ({why})", m.doc.node)
        })
        .collect();
    if holders.is_empty() {
        return Decision::NotFound;
    }
    Decision::Unavailable(format!(
        "`{model}` is served only by nodes that cannot take requests now: {}; try again shortly",
        holders.join(", ")
    ))
}

/// Power of two choices: compare two nodes picked by `coin`, take the less loaded.
fn two_choices(nodes: &[&PlacementDoc], me: &str, coin: u64) -> usize {
    let n = nodes.len();
    let a = (coin % n as u64) as usize;
    let b = ((coin / n as u64) % (n as u64 - 1).max(1)) as usize;
    let b = if b >= a { (b + 1) % n } else { b };
    let key = |i: usize| (nodes[i].load(), nodes[i].node != me);
    if key(b) < key(a) {
        b
    } else {
        a
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::ModelState;
    use crate::placement::ModelDoc;

    fn node(name: &str, budget: u64, models: Vec<ModelDoc>) -> PlacementDoc {
        let used = models.iter().filter(|m| m.is_ready() || m.is_loading()).map(|m| m.bytes).sum();
        PlacementDoc {
            node: name.into(),
            version: 1,
            http: String::new(),
            devices: vec![],
            budget_bytes: budget,
            used_bytes: used,
            eviction: crate::eviction::Strategy::Lru,
            draining: false,
            models,
            aliases: vec![],
        }
    }

    fn m(id: &str, state: &str, bytes: u64, in_flight: u32) -> ModelDoc {
        ModelDoc {
            id: id.into(),
            state: match state {
                "ready" => ModelState::Ready,
                "loading" => ModelState::Loading,
                _ => ModelState::Unloaded,
            },
            kind: Default::default(),
            pinned: false,
            on_disk: true,
            bytes,
            in_flight,
            queued: 0,
            priority: 0,
            idle_ms: 0,
            prefixes: Vec::new(),
            cache: None,
        }
    }

    /// Routes a request for `model` with no prompt prefix in common with anything.
    fn go(model: &str, me: &str, members: &[Member<'_>], coin: u64) -> Decision {
        route(
            &Request { model, prefix: &PrefixKey::default(), session: None, load_margin: LOAD_MARGIN },
            me,
            members,
            coin,
        )
    }

    fn nodes(d: &Decision) -> Vec<(&str, Readiness)> {
        match d {
            Decision::Try(c) => c.iter().map(|c| (c.node.as_str(), c.readiness)).collect(),
            _ => vec![],
        }
    }

    fn members(docs: &[PlacementDoc]) -> Vec<Member<'_>> {
        docs.iter().map(|doc| Member { state: PeerState::Alive, doc }).collect()
    }

    #[test]
    fn ready_here_and_not_busiest_serves_locally() {
        let docs = [node("a", 100, vec![m("x", "ready", 10, 1)]), node("b", 100, vec![m("x", "ready", 10, 3)])];
        assert_eq!(nodes(&go("x", "a", &members(&docs), 0))[0], ("a", Readiness::Ready));
    }

    #[test]
    fn the_busiest_node_passes_the_request_on() {
        let docs = [node("a", 100, vec![m("x", "ready", 10, 5)]), node("b", 100, vec![m("x", "ready", 10, 0)])];
        for coin in 0..10 {
            assert_eq!(nodes(&go("x", "a", &members(&docs), coin))[0].0, "b");
        }
    }

    /// Node `name` with model x ready, `load` requests in flight, having served `prompts`.
    fn holder(name: &str, load: u32, prompts: &[&PrefixKey], session: Option<&str>) -> PlacementDoc {
        let mut summary = crate::prefix::PrefixSummary::default();
        for (t, p) in prompts.iter().enumerate() {
            summary.record(p, session.map(crate::prefix::session_key), t as u64);
        }
        let mut model = m("x", "ready", 10, load);
        model.prefixes = summary.hashes();
        node(name, 100, vec![model])
    }

    fn prompt(text: &str, chunks: usize) -> PrefixKey {
        PrefixKey::of_text(text.repeat(crate::prefix::CHUNK_BYTES * chunks / text.len() + 1).as_bytes())
    }

    fn routed(req: &Request<'_>, me: &str, docs: &[PlacementDoc], coin: u64) -> String {
        nodes(&route(req, me, &members(docs), coin))[0].0.to_string()
    }

    #[test]
    fn the_node_holding_the_longest_prefix_wins_under_light_load() {
        let system = "You are a coding agent. ";
        let (short, long) = (prompt(system, 4), prompt(system, 12));
        let docs = [holder("a", 0, &[], None), holder("b", 2, &[&short], None), holder("c", 1, &[&long], None)];
        let req = Request { model: "x", prefix: &prompt(system, 20), session: None, load_margin: LOAD_MARGIN };
        for coin in 0..8 {
            assert_eq!(routed(&req, "a", &docs, coin), "c", "the longest match, though a is idle and local");
        }
        // Without a match the load decides as before: the idle local node.
        let other = Request { prefix: &prompt("Something else entirely. ", 20), ..req };
        assert_eq!(routed(&other, "a", &docs, 0), "a");
        // A session the client names stands in where no prefix matches.
        let docs = [holder("a", 0, &[], None), holder("b", 1, &[&short], Some("s-1"))];
        let session = Request { session: Some(crate::prefix::session_key("s-1")), ..other };
        assert_eq!(routed(&session, "a", &docs, 0), "b");
    }

    #[test]
    fn the_load_guard_diverts_from_a_busy_holder() {
        let long = prompt("Shared system prompt. ", 12);
        let req = Request { model: "x", prefix: &long, session: None, load_margin: 4 };
        // At the margin the holder keeps it; past it the least loaded node takes it.
        let docs = [holder("a", 0, &[], None), holder("b", 4, &[&long], None)];
        assert_eq!(routed(&req, "a", &docs, 0), "b");
        let docs = [holder("a", 0, &[], None), holder("b", 5, &[&long], None)];
        for coin in 0..8 {
            assert_eq!(routed(&req, "a", &docs, coin), "a");
        }
        // A margin of 0: the holder only while no node has less to do.
        let strict = Request { load_margin: 0, ..req };
        let docs = [holder("a", 1, &[], None), holder("b", 1, &[&long], None)];
        assert_eq!(routed(&strict, "a", &docs, 0), "b");
    }

    #[test]
    fn a_node_that_left_takes_its_summary_with_it() {
        let long = prompt("Shared system prompt. ", 12);
        let req = Request { model: "x", prefix: &long, session: None, load_margin: LOAD_MARGIN };
        let docs = [holder("a", 2, &[], None), holder("b", 0, &[&long], None), holder("c", 0, &[], None)];
        let mut view = members(&docs);
        view[1].state = PeerState::Left;
        let decision = route(&req, "a", &view, 0);
        let order = nodes(&decision);
        assert!(order.iter().all(|(n, _)| *n != "b"), "{order:?}");
        assert_eq!(order[0].0, "c", "the least loaded of the rest");
    }

    #[test]
    fn a_model_only_a_peer_holds_goes_there() {
        let docs = [node("a", 100, vec![m("x", "unloaded", 10, 0)]), node("b", 100, vec![m("x", "ready", 10, 0)])];
        assert_eq!(nodes(&go("x", "a", &members(&docs), 3)), vec![("b", Readiness::Ready)]);
    }

    #[test]
    fn loading_beats_a_cold_load() {
        let docs = [node("a", 100, vec![m("x", "unloaded", 10, 0)]), node("b", 100, vec![m("x", "loading", 10, 0)])];
        assert_eq!(nodes(&go("x", "a", &members(&docs), 0)), vec![("b", Readiness::Loading)]);
    }

    #[test]
    fn a_cold_load_lands_where_it_fits() {
        let big = |n: &str| node(n, 100, vec![m("x", "unloaded", 80, 0), m("pinned", "ready", 50, 0)]);
        let mut a = big("a");
        a.models[1].pinned = true;
        let b = node("b", 100, vec![m("x", "unloaded", 80, 0)]);
        let docs = [a, b];
        assert_eq!(nodes(&go("x", "a", &members(&docs), 0)), vec![("b", Readiness::Cold)]);
    }

    #[test]
    fn cold_loads_prefer_weights_on_disk_then_free_memory() {
        let mut a = node("a", 1000, vec![m("x", "unloaded", 10, 0)]);
        a.models[0].on_disk = false;
        let b = node("b", 100, vec![m("x", "unloaded", 10, 0)]);
        let c = node("c", 500, vec![m("x", "unloaded", 10, 0)]);
        let docs = [a, b, c];
        let decision = go("x", "a", &members(&docs), 0);
        let order: Vec<_> = nodes(&decision).into_iter().map(|n| n.0).collect();
        assert_eq!(order, vec!["c", "b", "a"]);
    }

    #[test]
    fn a_model_held_only_by_peers_that_cannot_take_work_is_unavailable_not_unknown() {
        let docs = [node("a", 100, vec![]), node("b", 100, vec![m("x", "ready", 10, 0)])];
        for state in [PeerState::Down, PeerState::Suspect, PeerState::Left] {
            let ms = vec![Member { state: PeerState::Alive, doc: &docs[0] }, Member { state, doc: &docs[1] }];
            match go("x", "a", &ms, 0) {
                Decision::Unavailable(why) => assert!(why.contains(&format!("b ({})", state.as_str())), "{why}"),
                other => panic!("{state:?}: {other:?}"),
            }
        }
        // Alive but draining: the same.
        let mut draining = docs.clone();
        draining[1].draining = true;
        match go("x", "a", &members(&draining), 0) {
            Decision::Unavailable(why) => assert!(why.contains("b (draining)"), "{why}"),
            other => panic!("{other:?}"),
        }
        // A draining node's model that an open peer also has goes to that peer.
        let mut both = draining.clone();
        both[0].models.push(m("x", "unloaded", 10, 0));
        assert_eq!(nodes(&go("x", "a", &members(&both), 0)), vec![("a", Readiness::Cold)]);
        // Nobody has ever held it: unknown.
        assert_eq!(go("y", "a", &members(&docs), 0), Decision::NotFound);
    }

    #[test]
    fn nowhere_to_fit_is_unavailable() {
        let docs = [node("a", 10, vec![m("x", "unloaded", 80, 0)])];
        assert!(matches!(go("x", "a", &members(&docs), 0), Decision::Unavailable(_)));
    }
}
