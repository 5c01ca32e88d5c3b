//! `cortex load|unload|pin|unpin MODEL`: change what a neuron holds, from a shell or cron.

use clap_complete::engine::ArgValueCompleter;
use serde_json::json;

use crate::client::EndpointArgs;

#[derive(Debug, Clone, clap::Args)]
pub struct AdminArgs {
    /// Model id or alias
    #[arg(add = ArgValueCompleter::new(crate::complete::models))]
    pub model: String,
    /// Act on this node of the fleet instead of the one answering
    #[arg(long, value_name = "NODE", add = ArgValueCompleter::new(crate::complete::nodes))]
    pub on: Option<String>,
    /// Print the neuron's JSON answer on stdout
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub endpoint: EndpointArgs,
}

/// Runs one admin action (`load`, `unload`, `pin`, `unpin`).
pub async fn run(action: &str, args: AdminArgs) -> anyhow::Result<()> {
    let client = args.endpoint.connect().await?;
    let answer =
        client.post_json(&format!("/cortex/v1/{action}"), &json!({ "model": args.model, "on": args.on })).await?;
    if args.json {
        crate::printer::json(&answer)?;
    } else {
        let on = answer.get("on").and_then(|s| s.as_str()).map(|n| format!(" on {n}")).unwrap_or_default();
        match answer.pointer("/status/state").and_then(|s| s.as_str()) {
            Some(state) => {
                let pinned = answer.pointer("/status/pinned").and_then(|s| s.as_bool()).unwrap_or(false);
                eprintln!("{}: {action} done{on} (now {state}{})", args.model, if pinned { ", pinned" } else { "" });
            }
            None => eprintln!("{}: {action} done{on}", args.model),
        }
    }
    Ok(())
}
