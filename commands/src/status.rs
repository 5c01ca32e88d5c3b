//! `cortex status`: the node's devices, memory and models, as a table or JSON.

use std::fmt::Write;

use serde_json::Value;

use crate::client::EndpointArgs;

#[derive(Debug, Clone, clap::Args)]
pub struct StatusArgs {
    /// Print the neuron's JSON (one document) instead of tables
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub endpoint: EndpointArgs,
}

/// Share of prompt tokens a prefix cache supplied, as a percentage.
fn hit_ratio(cache: &Value) -> String {
    let (hit, miss) = (cache["hit_tokens"].as_u64().unwrap_or(0), cache["miss_tokens"].as_u64().unwrap_or(0));
    match hit + miss {
        0 => "-".into(),
        all => format!("{:.1}%", 100.0 * hit as f64 / all as f64),
    }
}

pub fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / (1024.0 * 1024.0))
}

pub async fn run(args: StatusArgs) -> anyhow::Result<()> {
    let client = args.endpoint.connect().await?;
    let status = client.get_json("/cortex/v1/status").await?;
    if args.json {
        return crate::printer::json(&status);
    }
    let u = |v: &Value, k: &str| v.get(k).and_then(Value::as_u64).unwrap_or(0);
    let mut out = String::new();
    writeln!(out, "neuron {}", client.base)?;
    writeln!(out, "{:8}  {:>12}  {:>12}  {:>12}  DESCRIPTION", "DEVICE", "TOTAL", "BUDGET", "USED")?;
    for (i, d) in status["devices"].as_array().into_iter().flatten().enumerate() {
        // The first device carries the budget and holds the models; the others are only listed.
        let used = if i == 0 { mib(u(&status, "used_bytes")) } else { "-".into() };
        let row = format!(
            "{:8}  {:>12}  {:>12}  {:>12}  {}",
            d["name"].as_str().unwrap_or("?"),
            mib(u(d, "total_bytes")),
            mib(u(d, "budget_bytes")),
            used,
            d["description"].as_str().unwrap_or("")
        );
        writeln!(out, "{}", row.trim_end())?;
    }
    if let Some(peers) = status["peers"].as_array() {
        writeln!(out)?;
        writeln!(
            out,
            "{:16}  {:8}  {:21}  {:>12}  {:>12}  {:>5}  LOADED (PREFIX CACHE, HIT RATIO)",
            "PEER", "STATE", "MESH ADDRESS", "USED", "BUDGET", "QUEUE"
        )?;
        for p in peers {
            let loaded: Vec<String> = p["loaded"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
                .map(|id| match p["caches"].get(id) {
                    Some(c) => format!("{id} ({}, {})", mib(u(c, "bytes")), hit_ratio(c)),
                    None => id.to_string(),
                })
                .collect();
            writeln!(
                out,
                "{:16}  {:8}  {:21}  {:>12}  {:>12}  {:>5}  {}",
                p["name"].as_str().unwrap_or("?"),
                p["state"].as_str().unwrap_or("?"),
                p["address"].as_str().unwrap_or("?"),
                mib(u(p, "used_bytes")),
                mib(u(p, "budget_bytes")),
                u(p, "in_flight") + u(p, "queued"),
                loaded.join(", ")
            )?;
        }
    }
    let models: Vec<&Value> = status["models"].as_array().into_iter().flatten().collect();
    let w = models.iter().filter_map(|m| m["id"].as_str()).map(str::len).max().unwrap_or(5).max(5);
    writeln!(out)?;
    writeln!(
        out,
        "{:w$}  {:9}  {:6}  {:>10}  {:>7}  {:>6}  {:>12}  {:>9}",
        "MODEL", "STATE", "PINNED", "MEMORY", "RUNNING", "QUEUED", "PREFIX CACHE", "HIT RATIO"
    )?;
    for m in models {
        let cache = &m["prefix_cache"];
        let row = format!(
            "{:w$}  {:9}  {:6}  {:>10}  {:>7}  {:>6}  {:>12}  {:>9}",
            m["id"].as_str().unwrap_or("?"),
            m["state"].as_str().unwrap_or("?"),
            if m["pinned"].as_bool().unwrap_or(false) { "yes" } else { "no" },
            mib(u(m, "bytes")),
            u(m, "in_flight"),
            u(m, "queued"),
            if cache.is_object() { mib(u(cache, "bytes")) } else { "-".into() },
            if cache.is_object() { hit_ratio(cache) } else { "-".into() },
        );
        writeln!(out, "{}", row.trim_end())?;
    }
    crate::printer::emit(&out)
}
