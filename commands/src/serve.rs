//! `cortex serve`: run a neuron in the foreground until SIGINT/SIGTERM.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;
use cortex_neuron::config::{Config, Seed};
use cortex_neuron::server::{shutdown_signal, Neuron};

#[derive(Debug, Clone, clap::Args)]
pub struct ServeArgs {
    /// cortex.toml to read (default: none, built-in defaults)
    #[arg(long, short = 'c', env = "CORTEX_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// HTTP API address (OpenAI + Anthropic) [default: 127.0.0.1:31313]
    #[arg(long, value_name = "ADDR")]
    pub listen: Option<SocketAddr>,
    /// Prometheus /metrics address [default: 127.0.0.1:31314]
    #[arg(long, value_name = "ADDR")]
    pub metrics_listen: Option<SocketAddr>,
    /// Directory of model files to serve [default: $CORTEX_HOME/models or the data directory]
    #[arg(long, value_name = "DIR")]
    pub models_dir: Option<PathBuf>,
    /// Also serve this GGUF file or safetensors directory (repeatable)
    #[arg(long = "model", short = 'm', value_name = "PATH")]
    pub models: Vec<PathBuf>,
    /// models.toml with sources, priorities, pins, keep-alives and aliases
    #[arg(long, value_name = "FILE")]
    pub models_config: Option<PathBuf>,
    /// Memory models may use on this node, e.g. 300MiB or 8GiB [default: 75% of RAM less 512MiB]
    #[arg(long, value_name = "SIZE")]
    pub memory_budget: Option<String>,
    /// This node's name in the fleet (turns the mesh on; needs NAME.crt from `cortex cert issue`)
    #[arg(long, value_name = "NAME")]
    pub name: Option<String>,
    /// Directory with ca.crt, NAME.crt and NAME.key [default: $CORTEX_HOME/tls]
    #[arg(long, value_name = "DIR")]
    pub tls_dir: Option<PathBuf>,
    /// UDP address of the mesh's QUIC endpoint [default: the --listen address]
    #[arg(long, value_name = "ADDR")]
    pub mesh_listen: Option<SocketAddr>,
    /// Join the fleet through this peer's mesh address, IP:PORT or HOST:PORT (repeatable)
    #[arg(long = "join", value_name = "ADDR")]
    pub join: Vec<Seed>,
    /// The mesh address peers should reach this node at [default: the mesh listen address]
    #[arg(long, value_name = "ADDR")]
    pub advertise: Option<SocketAddr>,
    /// Which models to evict first when a load does not fit
    #[arg(long, value_name = "POLICY", value_parser = ["lru", "priority"])]
    pub eviction: Option<String>,
}

impl ServeArgs {
    /// The config file (if any) with the command line's overrides applied.
    pub fn config(&self) -> anyhow::Result<Config> {
        let mut config = match &self.config {
            Some(path) => Config::from_file(path).map_err(|e| crate::UserError(e.to_string()))?,
            None => Config::default(),
        };
        if let Some(a) = self.listen {
            config.server.listen = a;
        }
        if let Some(a) = self.metrics_listen {
            config.server.metrics_listen = a;
        }
        if let Some(d) = &self.models_dir {
            config.models_dir = Some(d.clone());
        }
        if let Some(f) = &self.models_config {
            config.models_config = Some(f.clone());
        }
        if let Some(b) = &self.memory_budget {
            config.memory.budget = Some(b.clone());
        }
        if let Some(n) = &self.name {
            config.mesh.name = Some(n.clone());
        }
        if let Some(d) = &self.tls_dir {
            config.mesh.tls_dir = Some(d.clone());
        }
        if let Some(a) = self.mesh_listen {
            config.mesh.listen = Some(a);
        }
        config.mesh.seeds.extend(self.join.iter().cloned());
        if let Some(a) = self.advertise {
            config.mesh.advertise = Some(a);
        }
        if let Some(e) = &self.eviction {
            config.eviction.strategy = e.parse().map_err(crate::UserError)?;
        }
        config.memory_budget().map_err(|e| crate::UserError(format!("--memory-budget: {e}")))?;
        for m in &self.models {
            if !m.exists() {
                return crate::error::user(format!("--model {}: no such file or directory", m.display()));
            }
        }
        Ok(config)
    }
}

pub async fn run(args: ServeArgs) -> anyhow::Result<()> {
    let config = args.config()?;
    let mut neuron = Neuron::bind(&config, &args.models).await.map_err(|e| {
        crate::UserError(format!(
            "{e} (is another neuron running? pick another address with --listen / --metrics-listen)"
        ))
    })?;
    neuron.start_mesh(&config).await.map_err(|e| crate::UserError(e.to_string()))?;
    neuron.run(shutdown_signal()).await.context("neuron stopped with an error")?;
    tracing::info!("neuron stopped");
    Ok(())
}
