//! Which resident models to evict so that a new one fits, and which idle ones have outstayed
//! their keep-alive. Pure functions over a snapshot; the caller passes the time.

/// How to choose among evictable models.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Strategy {
    /// Least recently used first.
    #[default]
    Lru,
    /// Lowest priority first, least recently used among equals.
    Priority,
}

impl std::str::FromStr for Strategy {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "lru" => Ok(Strategy::Lru),
            "priority" => Ok(Strategy::Priority),
            other => Err(format!("unknown eviction strategy `{other}` (expected lru or priority)")),
        }
    }
}

/// A model holding memory on a device.
#[derive(Debug, Clone, PartialEq)]
pub struct Resident {
    pub id: String,
    pub bytes: u64,
    pub pinned: bool,
    /// Requests generating or queued on it.
    pub in_flight: usize,
    /// A load in progress cannot be evicted.
    pub loading: bool,
    pub priority: i32,
    /// When it last served a request (any monotonic unit; larger is later).
    pub last_used: u64,
}

/// Why a resident model cannot make room.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Held {
    Pinned,
    Busy,
    Loading,
}

impl Held {
    pub fn as_str(self) -> &'static str {
        match self {
            Held::Pinned => "pinned",
            Held::Busy => "serving requests",
            Held::Loading => "loading",
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum Plan {
    /// Enough free memory already.
    Fits,
    /// Evict these, in this order, then load.
    Evict(Vec<String>),
    /// Cannot fit: the model is larger than the whole budget, or what holds the memory may not
    /// be evicted (listed with the reason).
    Impossible { need: u64, budget: u64, free_at_best: u64, held_by: Vec<(String, u64, Held)> },
}

/// Plans room for `need` bytes within `budget` given what is resident.
pub fn plan(need: u64, budget: u64, residents: &[Resident], strategy: Strategy) -> Plan {
    let used: u64 = residents.iter().map(|r| r.bytes).sum();
    if used.saturating_add(need) <= budget {
        return Plan::Fits;
    }
    let held = |r: &Resident| {
        if r.pinned {
            Some(Held::Pinned)
        } else if r.loading {
            Some(Held::Loading)
        } else if r.in_flight > 0 {
            Some(Held::Busy)
        } else {
            None
        }
    };
    let mut candidates: Vec<&Resident> = residents.iter().filter(|r| held(r).is_none()).collect();
    candidates.sort_by(|a, b| {
        let by_priority = match strategy {
            Strategy::Priority => a.priority.cmp(&b.priority),
            Strategy::Lru => std::cmp::Ordering::Equal,
        };
        by_priority.then(a.last_used.cmp(&b.last_used)).then(a.id.cmp(&b.id))
    });
    let mut free = budget.saturating_sub(used);
    let mut evict = Vec::new();
    for c in candidates {
        if free >= need {
            break;
        }
        free += c.bytes;
        evict.push(c.id.clone());
    }
    if free >= need {
        return Plan::Evict(evict);
    }
    Plan::Impossible {
        need,
        budget,
        free_at_best: free,
        held_by: residents.iter().filter_map(|r| held(r).map(|h| (r.id.clone(), r.bytes, h))).collect(),
    }
}

/// How long an idle model stays loaded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum KeepAlive {
    /// Unload this long after the last request ends (zero: right after each request).
    For(std::time::Duration),
    Forever,
}

impl KeepAlive {
    pub const DEFAULT: KeepAlive = KeepAlive::For(std::time::Duration::from_secs(300));

    /// Parses `"30s"`, `"5m"`, `"1h30m"`, a number of seconds, `0`, or a negative value (forever).
    pub fn parse(v: &serde_json::Value) -> Result<Self, String> {
        let bad = || format!("keep_alive {v} is not a duration (\"30s\", \"5m\") or seconds");
        match v {
            serde_json::Value::Number(n) => match n.as_f64() {
                Some(s) if s < 0.0 => Ok(KeepAlive::Forever),
                Some(s) => Ok(KeepAlive::For(std::time::Duration::from_secs_f64(s))),
                None => Err(bad()),
            },
            serde_json::Value::String(s) => parse_duration(s).ok_or_else(bad),
            _ => Err(bad()),
        }
    }
}

fn parse_duration(s: &str) -> Option<KeepAlive> {
    let s = s.trim();
    if s.starts_with('-') {
        return Some(KeepAlive::Forever);
    }
    if let Ok(secs) = s.parse::<f64>() {
        return Some(KeepAlive::For(std::time::Duration::from_secs_f64(secs)));
    }
    let (mut total, mut num) = (0f64, String::new());
    for c in s.chars() {
        match c {
            '0'..='9' | '.' => num.push(c),
            'h' | 'm' | 's' => {
                let n: f64 = num.parse().ok()?;
                total += n * match c {
                    'h' => 3600.0,
                    'm' => 60.0,
                    _ => 1.0,
                };
                num.clear();
            }
            _ => return None,
        }
    }
    num.is_empty().then(|| KeepAlive::For(std::time::Duration::from_secs_f64(total)))
}

/// An idle model's unload deadline.
#[derive(Debug, Clone, PartialEq)]
pub struct Idle {
    pub id: String,
    pub pinned: bool,
    pub in_flight: usize,
    /// When its last request ended (milliseconds, caller's clock).
    pub idle_since_ms: u64,
    pub keep_alive: KeepAlive,
}

/// Models whose keep-alive has run out at `now_ms`. Pinned and busy models never expire.
pub fn expired(models: &[Idle], now_ms: u64) -> Vec<String> {
    models
        .iter()
        .filter(|m| !m.pinned && m.in_flight == 0)
        .filter(|m| match m.keep_alive {
            KeepAlive::Forever => false,
            KeepAlive::For(d) => now_ms >= m.idle_since_ms.saturating_add(d.as_millis() as u64),
        })
        .map(|m| m.id.clone())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn r(id: &str, bytes: u64, last_used: u64) -> Resident {
        Resident { id: id.into(), bytes, pinned: false, in_flight: 0, loading: false, priority: 0, last_used }
    }

    #[test]
    fn fits_without_eviction() {
        assert_eq!(plan(10, 100, &[r("a", 50, 1)], Strategy::Lru), Plan::Fits);
    }

    #[test]
    fn lru_evicts_least_recently_used_first() {
        let rs = [r("a", 40, 5), r("b", 40, 1)];
        assert_eq!(plan(40, 100, &rs, Strategy::Lru), Plan::Evict(vec!["b".into()]));
        // Needing more frees both, oldest first.
        assert_eq!(plan(90, 100, &rs, Strategy::Lru), Plan::Evict(vec!["b".into(), "a".into()]));
    }

    #[test]
    fn priority_evicts_lowest_priority_then_lru() {
        let mut a = r("a", 40, 1);
        a.priority = 5;
        let b = r("b", 40, 9);
        let mut c = r("c", 10, 2);
        c.priority = 5;
        let rs = [a, b, c];
        assert_eq!(plan(40, 100, &rs, Strategy::Priority), Plan::Evict(vec!["b".into()]));
        assert_eq!(plan(40, 100, &rs, Strategy::Lru), Plan::Evict(vec!["a".into()]));
    }

    #[test]
    fn pinned_busy_and_loading_models_are_never_evicted() {
        let mut a = r("a", 30, 1);
        a.pinned = true;
        let mut b = r("b", 30, 2);
        b.in_flight = 1;
        let mut c = r("c", 30, 3);
        c.loading = true;
        let rs = [a, b, c];
        match plan(20, 100, &rs, Strategy::Lru) {
            Plan::Impossible { held_by, free_at_best, .. } => {
                assert_eq!(free_at_best, 10);
                let reasons: Vec<_> = held_by.iter().map(|h| (h.0.as_str(), h.2)).collect();
                assert_eq!(reasons, vec![("a", Held::Pinned), ("b", Held::Busy), ("c", Held::Loading)]);
            }
            p => panic!("{p:?}"),
        }
    }

    #[test]
    fn larger_than_the_budget_is_impossible() {
        assert!(matches!(plan(200, 100, &[], Strategy::Lru), Plan::Impossible { .. }));
    }

    #[test]
    fn keep_alive_parses_durations_seconds_and_forever() {
        let p = |v: serde_json::Value| KeepAlive::parse(&v);
        assert_eq!(p("30s".into()), Ok(KeepAlive::For(Duration::from_secs(30))));
        assert_eq!(p("5m".into()), Ok(KeepAlive::For(Duration::from_secs(300))));
        assert_eq!(p("1h30m".into()), Ok(KeepAlive::For(Duration::from_secs(5400))));
        assert_eq!(p(12.into()), Ok(KeepAlive::For(Duration::from_secs(12))));
        assert_eq!(p(0.into()), Ok(KeepAlive::For(Duration::ZERO)));
        assert_eq!(p((-1).into()), Ok(KeepAlive::Forever));
        assert_eq!(p("-1".into()), Ok(KeepAlive::Forever));
        assert!(p("soon".into()).is_err());
        assert!(p(true.into()).is_err());
    }

    #[test]
    fn idle_models_expire_on_a_fake_clock() {
        let m = |id: &str, since: u64, ka: KeepAlive| Idle {
            id: id.into(),
            pinned: false,
            in_flight: 0,
            idle_since_ms: since,
            keep_alive: ka,
        };
        let mut pinned = m("p", 0, KeepAlive::For(Duration::ZERO));
        pinned.pinned = true;
        let mut busy = m("b", 0, KeepAlive::For(Duration::ZERO));
        busy.in_flight = 2;
        let models = [
            m("short", 1_000, KeepAlive::For(Duration::from_secs(30))),
            m("zero", 1_000, KeepAlive::For(Duration::ZERO)),
            m("forever", 0, KeepAlive::Forever),
            pinned,
            busy,
        ];
        assert_eq!(expired(&models, 1_000), vec!["zero".to_string()]);
        assert_eq!(expired(&models, 30_999), vec!["zero".to_string()]);
        assert_eq!(expired(&models, 31_000), vec!["short".to_string(), "zero".to_string()]);
        assert_eq!(expired(&models, u64::MAX / 2).len(), 2);
    }
}
