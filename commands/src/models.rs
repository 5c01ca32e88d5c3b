//! `cortex models`: what the neuron serves.

use std::fmt::Write;

use crate::client::EndpointArgs;

#[derive(Debug, Clone, clap::Args)]
pub struct ModelsArgs {
    /// Print the neuron's JSON (one document) instead of a table
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub endpoint: EndpointArgs,
}

pub async fn run(args: ModelsArgs) -> anyhow::Result<()> {
    let client = args.endpoint.connect().await?;
    let list = client.get_json("/v1/models").await?;
    if args.json {
        return crate::printer::json(&list);
    }
    let data = list.get("data").and_then(|d| d.as_array()).cloned().unwrap_or_default();
    let width = data.iter().filter_map(|m| m["id"].as_str()).map(str::len).max().unwrap_or(5).max(5);
    let mut out = String::new();
    writeln!(out, "{:width$}  {:9}  {:6}  {:7}  {:>10}  ALIAS OF", "MODEL", "STATE", "PINNED", "ON DISK", "SIZE")?;
    let yes = |v: &serde_json::Value| if v.as_bool().unwrap_or(false) { "yes" } else { "no" };
    for m in &data {
        writeln!(
            out,
            "{:width$}  {:9}  {:6}  {:7}  {:>10}  {}",
            m["id"].as_str().unwrap_or("?"),
            m["state"].as_str().unwrap_or("?"),
            yes(&m["pinned"]),
            yes(&m["on_disk"]),
            crate::status::mib(m["size_bytes"].as_u64().unwrap_or(0)),
            m["alias_of"].as_str().unwrap_or("")
        )?;
    }
    crate::printer::emit(&out)
}
