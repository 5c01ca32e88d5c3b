//! Shell completion: clap_complete's dynamic engine (`COMPLETE=bash cortex` writes the
//! registration; the shell then asks `cortex` itself on every Tab), so model ids, aliases and node
//! names come from the running fleet, not from a list frozen at install time.

use std::ffi::OsStr;
use std::time::Duration;

use clap_complete::engine::CompletionCandidate;
use serde_json::Value;

use crate::client::EndpointArgs;

/// How long a Tab may wait for the fleet: a shell that hangs is worse than no candidates.
const BUDGET: Duration = Duration::from_millis(1500);

/// Writes the registration script for `shell` (what `COMPLETE=<shell> cortex` prints).
pub fn registration(shell: clap_complete::Shell, buf: &mut dyn std::io::Write) -> std::io::Result<()> {
    use clap_complete::env::{Bash, Elvish, EnvCompleter, Fish, Powershell, Zsh};
    let completer: &dyn EnvCompleter = match shell {
        clap_complete::Shell::Bash => &Bash,
        clap_complete::Shell::Zsh => &Zsh,
        clap_complete::Shell::Fish => &Fish,
        clap_complete::Shell::Elvish => &Elvish,
        clap_complete::Shell::PowerShell => &Powershell,
        _ => return Err(std::io::Error::other(format!("no completion support for {shell}"))),
    };
    // The installed `cortex` on PATH answers the completions, not the path that printed this.
    completer.write_registration("COMPLETE", "cortex", "cortex", "cortex", buf)
}

/// Model ids and aliases the nearest neuron knows (the whole fleet's, through its gateway).
pub fn models(current: &OsStr) -> Vec<CompletionCandidate> {
    let Some(list) = fetch("/v1/models") else { return Vec::new() };
    let prefix = current.to_string_lossy();
    let data = list.get("data").and_then(Value::as_array).cloned().unwrap_or_default();
    data.iter()
        .filter_map(|m| {
            let id = m.get("id")?.as_str()?;
            id.starts_with(prefix.as_ref()).then(|| CompletionCandidate::new(id).help(Some(describe(m).into())))
        })
        .collect()
}

/// Node names of the fleet (for `--on`).
pub fn nodes(current: &OsStr) -> Vec<CompletionCandidate> {
    let Some(status) = fetch("/cortex/v1/status") else { return Vec::new() };
    let prefix = current.to_string_lossy();
    let me = status.get("node").and_then(Value::as_str).map(|n| (n.to_string(), "this node".to_string()));
    let peers = status.get("peers").and_then(Value::as_array).cloned().unwrap_or_default();
    let peers = peers.iter().filter_map(|p| {
        let name = p.get("name")?.as_str()?.to_string();
        let state = p.get("state").and_then(Value::as_str).unwrap_or("").to_string();
        Some((name, state))
    });
    // The peer table lists this node too; keep each name once.
    let mut seen = std::collections::HashSet::new();
    me.into_iter()
        .chain(peers)
        .filter(|(name, _)| name.starts_with(prefix.as_ref()) && seen.insert(name.clone()))
        .map(|(name, state)| CompletionCandidate::new(name).help(Some(state.into())))
        .collect()
}

fn describe(m: &Value) -> String {
    let state = m.get("state").and_then(Value::as_str).unwrap_or("");
    match m.get("alias_of").and_then(Value::as_str) {
        Some(target) => format!("alias of {target}, {state}"),
        None => state.to_string(),
    }
}

/// One GET against the nearest neuron, within [`BUDGET`]; any failure means no candidates.
fn fetch(path: &str) -> Option<Value> {
    // Flags are not parsed while completing: the endpoint comes from the environment or cli.toml.
    let args = EndpointArgs {
        endpoint: std::env::var("CORTEX_ENDPOINT").ok().filter(|e| !e.is_empty()),
        api_key: std::env::var("CORTEX_API_KEY").ok().filter(|k| !k.is_empty()),
    };
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().ok()?;
    rt.block_on(async {
        let work = async {
            let client = args.connect().await.ok()?;
            client.get_json(path).await.ok()
        };
        tokio::time::timeout(BUDGET, work).await.ok().flatten()
    })
}
