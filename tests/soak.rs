//! A 60-second soak of the prefix cache through a real neuron: four clients send prompts that
//! share random lengths of a few conversations (the way agents' turns and unrelated requests
//! interleave), under a prefix cache a few dozen blocks big. Every request is answered, the
//! cache's bytes never pass its budget, it evicts, and it serves hits all along. (The 30-minute
//! hand-run soak is the same with CORTEX_SOAK_SECS=1800.)

mod common;

use std::time::{Duration, Instant};

use common::{client, roomy_tiny_model, Neuron, TempDir};
use serde_json::json;

#[test]
fn the_prefix_cache_stays_within_its_budget_under_random_prefixes() {
    let secs: u64 = std::env::var("CORTEX_SOAK_SECS").ok().and_then(|s| s.parse().ok()).unwrap_or(60);
    let dir = TempDir::new("soak");
    roomy_tiny_model(dir.path(), "x");
    let budget: u64 = 256 << 10;
    let config = dir.path().join("cortex.toml");
    std::fs::write(&config, format!("[engine]\nkv_cache_bytes = \"{budget}\"\n")).unwrap();
    let n = Neuron::start(dir.path(), &["--config", config.to_str().unwrap()]);
    let bases: Vec<String> = (0..5).map(|i| format!("Conversation {i}. ").repeat(60)).collect();
    let deadline = Instant::now() + Duration::from_secs(secs);
    let failures = std::thread::scope(|s| {
        let workers: Vec<_> = (0..4u64)
            .map(|w| {
                let (n, bases) = (&n, &bases);
                s.spawn(move || {
                    let mut seed = 0x9e37_79b9_7f4a_7c15u64.wrapping_mul(w + 1);
                    let mut next = move || {
                        seed ^= seed << 13;
                        seed ^= seed >> 7;
                        seed ^= seed << 17;
                        seed
                    };
                    let mut failed = Vec::new();
                    while Instant::now() < deadline {
                        let base = &bases[(next() % bases.len() as u64) as usize];
                        let cut = (next() % base.len() as u64) as usize;
                        let prompt = format!("{}{}", &base[..cut], next());
                        let resp = client()
                            .post(n.url("/v1/completions"))
                            .json(&json!({"model": "x", "prompt": prompt, "max_tokens": 3, "temperature": 0}))
                            .send();
                        match resp {
                            Ok(r) if r.status() == 200 => {}
                            Ok(r) => failed.push(format!("{}: {}", r.status(), r.text().unwrap_or_default())),
                            Err(e) => failed.push(e.to_string()),
                        }
                    }
                    failed
                })
            })
            .collect();
        // Meanwhile the cache's size, as the neuron reports it, never passes the budget; the
        // process's resident memory is printed (run with --nocapture) for the hand-run soak.
        let start = Instant::now();
        let (mut rss_warm, mut rss_max) = (None, 0);
        while Instant::now() < deadline {
            let bytes = n.metric("cortex_prefix_cache_bytes", &["x"]);
            assert!(bytes <= budget as f64, "{bytes} bytes cached over a {budget}-byte budget");
            let rss = rss_kib(n.pid());
            rss_max = rss_max.max(rss);
            if rss_warm.is_none() && start.elapsed() >= Duration::from_secs(secs / 10) {
                rss_warm = Some(rss);
            }
            std::thread::sleep(Duration::from_millis(250));
        }
        eprintln!(
            "soak: {secs} s, resident memory {} KiB after the first tenth, {} KiB at the end, {rss_max} KiB at most",
            rss_warm.unwrap_or(0),
            rss_kib(n.pid())
        );
        workers.into_iter().flat_map(|w| w.join().unwrap()).collect::<Vec<_>>()
    });
    assert!(failures.is_empty(), "{} requests failed, the first: {}", failures.len(), failures[0]);
    assert!(n.metric("cortex_prefix_evictions_total", &["x"]) > 0.0, "the budget was never reached");
    assert!(n.metric("cortex_prefix_hit_tokens_total", &["x"]) > 0.0, "no prompt was served from the cache");
    assert!(n.metric("cortex_prefix_cache_bytes", &["x"]) <= budget as f64);
}

/// The resident memory of process `pid` in KiB (0 where /proc does not say).
fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines().find_map(|l| l.strip_prefix("VmRSS:").map(|v| v.trim().trim_end_matches("kB").trim().to_string()))
        })
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}
