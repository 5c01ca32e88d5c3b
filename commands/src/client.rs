//! The HTTP client the CLI uses to talk to a neuron, and the SSE reader for streamed answers.

use std::time::Duration;

use anyhow::Context;
use futures::StreamExt;
use serde_json::Value;

pub const DEFAULT_ENDPOINT: &str = "http://127.0.0.1:31313";

/// How to reach a neuron.
#[derive(Debug, Clone, clap::Args)]
pub struct EndpointArgs {
    /// Neuron URL [default: http://127.0.0.1:31313]
    #[arg(long, env = "CORTEX_ENDPOINT", value_name = "URL", global = true)]
    pub endpoint: Option<String>,
    /// API key, when the neuron requires one
    #[arg(long, env = "CORTEX_API_KEY", value_name = "KEY", hide_env_values = true, global = true)]
    pub api_key: Option<String>,
}

impl EndpointArgs {
    /// Candidate neurons: `--endpoint` / `CORTEX_ENDPOINT` (comma-separated), else `endpoints`
    /// in `$XDG_CONFIG_HOME/cortex/cli.toml`, else this host's neuron and its fleet's seeds as
    /// its `cortex.toml` names them, else the local default.
    pub fn candidates(&self) -> Vec<String> {
        if let Some(e) = &self.endpoint {
            return e.split(',').map(|s| s.trim().to_string()).filter(|s| !s.is_empty()).collect();
        }
        let file = dirs::config_dir()
            .map(|d| d.join("cortex").join("cli.toml"))
            .and_then(|p| std::fs::read_to_string(p).ok())
            .and_then(|t| toml::from_str::<CliFile>(&t).ok())
            .unwrap_or_default();
        if !file.endpoints.is_empty() {
            return file.endpoints;
        }
        let fleet = file
            .fleet_config
            .or_else(|| std::env::var_os("CORTEX_CONFIG").map(Into::into))
            .unwrap_or_else(|| FLEET_CONFIG.into());
        let from_fleet = fleet_endpoints(&fleet);
        if from_fleet.is_empty() {
            vec![DEFAULT_ENDPOINT.to_string()]
        } else {
            from_fleet
        }
    }

    /// The fastest candidate that answers `/health`, probed concurrently.
    pub async fn connect(&self) -> anyhow::Result<Client> {
        let candidates = self.candidates();
        let probes = candidates.iter().map(|url| async move {
            let client = Client::new(url, self.api_key.clone()).ok()?;
            let t0 = std::time::Instant::now();
            client.is_up().await.then(|| (client, t0.elapsed()))
        });
        let mut answered: Vec<(Client, Duration)> =
            futures::future::join_all(probes).await.into_iter().flatten().collect();
        answered.sort_by_key(|(_, rtt)| *rtt);
        match answered.into_iter().next() {
            Some((client, rtt)) => {
                tracing::info!(endpoint = %client.base, rtt_ms = rtt.as_secs_f64() * 1e3, candidates = candidates.len(), "using the fastest neuron that answered");
                Ok(client)
            }
            None => Err(crate::UserError(format!(
                "no neuron answers at {}; start one with `cortex serve`, or point --endpoint / CORTEX_ENDPOINT at one",
                candidates.join(", ")
            ))
            .into()),
        }
    }
}

/// Where the packaged systemd unit keeps the neuron's configuration.
const FLEET_CONFIG: &str = "/etc/cortex/cortex.toml";

#[derive(serde::Deserialize, Default)]
struct CliFile {
    #[serde(default)]
    endpoints: Vec<String>,
    /// A neuron's `cortex.toml` whose listen address and seeds to try [default: CORTEX_CONFIG,
    /// then /etc/cortex/cortex.toml].
    #[serde(default)]
    fleet_config: Option<std::path::PathBuf>,
}

/// The neuron this config describes, then its seeds. A seed is a mesh (UDP) address, and the mesh
/// listens on the HTTP port unless told otherwise, so the seed's address is tried over HTTP.
fn fleet_endpoints(path: &std::path::Path) -> Vec<String> {
    let Ok(config) = cortex_neuron::config::Config::from_file(path) else { return Vec::new() };
    let mut local = config.server.listen;
    if local.ip().is_unspecified() {
        local.set_ip(if local.is_ipv4() { [127, 0, 0, 1].into() } else { std::net::Ipv6Addr::LOCALHOST.into() });
    }
    std::iter::once(format!("http://{local}")).chain(config.mesh.seeds.iter().map(|a| format!("http://{a}"))).collect()
}

#[derive(Clone)]
pub struct Client {
    pub base: String,
    http: reqwest::Client,
    key: Option<String>,
}

impl Client {
    pub fn new(base: &str, key: Option<String>) -> anyhow::Result<Self> {
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(3))
            .build()
            .context("building the HTTP client")?;
        Ok(Self { base: base.trim_end_matches('/').to_string(), http, key })
    }

    /// True when a neuron answers `/health` quickly.
    pub async fn is_up(&self) -> bool {
        let req = self.http.get(format!("{}/health", self.base)).timeout(Duration::from_millis(800));
        matches!(req.send().await, Ok(r) if r.status().is_success())
    }

    fn auth(&self, req: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        match &self.key {
            Some(k) => req.bearer_auth(k),
            None => req,
        }
    }

    pub async fn get_json(&self, path: &str) -> anyhow::Result<Value> {
        let resp = self.auth(self.http.get(format!("{}{path}", self.base))).send().await.map_err(|e| {
            crate::UserError(format!("no neuron answers at {}: {e}. Start one with `cortex serve`", self.base))
        })?;
        check(resp).await?.json().await.context("the neuron sent invalid JSON")
    }

    pub async fn post_json(&self, path: &str, body: &Value) -> anyhow::Result<Value> {
        self.post_stream(path, body).await?.json().await.context("the neuron sent invalid JSON")
    }

    /// POSTs JSON and returns the response whatever its status, for callers that sort failures
    /// themselves (`cortex bench` counts them by kind).
    pub async fn post_raw(&self, path: &str, body: &Value) -> reqwest::Result<reqwest::Response> {
        self.post_in_session(path, body, None).await
    }

    /// [`Client::post_raw`] with the conversation named in an `x-session-id` header.
    pub async fn post_in_session(
        &self,
        path: &str,
        body: &Value,
        session: Option<&str>,
    ) -> reqwest::Result<reqwest::Response> {
        let mut req = self.auth(self.http.post(format!("{}{path}", self.base))).json(body);
        if let Some(s) = session {
            req = req.header("x-session-id", s);
        }
        req.send().await
    }

    pub async fn post_stream(&self, path: &str, body: &Value) -> anyhow::Result<reqwest::Response> {
        let resp = self.auth(self.http.post(format!("{}{path}", self.base))).json(body).send().await.map_err(|e| {
            crate::UserError(format!("no neuron answers at {}: {e}. Start one with `cortex serve`", self.base))
        })?;
        check(resp).await
    }
}

/// Turns an error status into an error carrying the server's message (4xx: the user's to fix).
async fn check(resp: reqwest::Response) -> anyhow::Result<reqwest::Response> {
    let status = resp.status();
    if status.is_success() {
        return Ok(resp);
    }
    let body: Value = resp.json().await.unwrap_or_default();
    let msg = body.pointer("/error/message").and_then(Value::as_str).unwrap_or("no message").to_string();
    let text = format!("the neuron answered {}: {msg}", status.as_u16());
    if status.is_client_error() || status == reqwest::StatusCode::SERVICE_UNAVAILABLE {
        Err(crate::UserError(text).into())
    } else {
        Err(anyhow::anyhow!(text))
    }
}

/// Reads an SSE body and calls `on_data` with each event's data (JSON parsed; `[DONE]` ends).
pub async fn read_sse(
    resp: reqwest::Response,
    mut on_data: impl FnMut(Value) -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    let mut buf: Vec<u8> = Vec::new();
    let mut body = resp.bytes_stream();
    while let Some(chunk) = body.next().await {
        buf.extend_from_slice(&chunk.context("the stream broke off")?);
        while let Some(end) = buf.windows(2).position(|w| w == b"\n\n") {
            let event: Vec<u8> = buf.drain(..end + 2).collect();
            for line in String::from_utf8_lossy(&event).lines() {
                let Some(data) = line.strip_prefix("data:") else { continue };
                let data = data.trim();
                if data == "[DONE]" {
                    return Ok(());
                }
                on_data(serde_json::from_str(data).context("the neuron sent invalid JSON in its stream")?)?;
            }
        }
    }
    Ok(())
}
