//! `cortex models`: what the neuron serves.

use crate::client::{Client, EndpointArgs, DEFAULT_ENDPOINT};

#[derive(Debug, Clone, clap::Args)]
pub struct ModelsArgs {
    /// Print the neuron's JSON (one document) instead of a table
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub endpoint: EndpointArgs,
}

pub async fn run(args: ModelsArgs) -> anyhow::Result<()> {
    let base = args.endpoint.endpoint.as_deref().unwrap_or(DEFAULT_ENDPOINT);
    let client = Client::new(base, args.endpoint.api_key.clone())?;
    let list = client.get_json("/v1/models").await?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&list)?);
        return Ok(());
    }
    let data = list.get("data").and_then(|d| d.as_array()).cloned().unwrap_or_default();
    let width = data.iter().filter_map(|m| m["id"].as_str()).map(str::len).max().unwrap_or(5).max(5);
    println!("{:width$}  {:6}  {:>10}  ALIAS OF", "MODEL", "LOADED", "SIZE");
    for m in &data {
        let size = m["size_bytes"].as_u64().unwrap_or(0);
        println!(
            "{:width$}  {:6}  {:>10}  {}",
            m["id"].as_str().unwrap_or("?"),
            if m["loaded"].as_bool().unwrap_or(false) { "yes" } else { "no" },
            format!("{:.1} MiB", size as f64 / (1024.0 * 1024.0)),
            m["alias_of"].as_str().unwrap_or("")
        );
    }
    Ok(())
}
