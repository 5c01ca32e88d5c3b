//! Starting and stopping a neuron: bind the HTTP and metrics listeners, serve until the
//! shutdown signal, then let in-flight requests finish within the grace period.

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::Request;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto::Builder;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tower::ServiceExt;
use tracing::Instrument;

use crate::config::Config;
use crate::gateway::{self, AppState};
use crate::lifecycle::catalogue::ModelsFile;
use crate::lifecycle::{memory, LifecycleConfig, Models};
use crate::metrics::Metrics;

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// A listener could not bind (in use, no permission).
    #[error("cannot listen on {addr}: {source}")]
    Bind { addr: SocketAddr, source: std::io::Error },
    #[error("server failed: {0}")]
    Serve(std::io::Error),
    /// cortex.toml or models.toml is invalid; every problem is listed.
    #[error("invalid configuration:\n  {}", .0.join("\n  "))]
    Config(Vec<String>),
}

/// A neuron with its sockets bound, ready to run.
pub struct Neuron {
    state: AppState,
    http: TcpListener,
    metrics: TcpListener,
    max_body_bytes: usize,
    grace: Duration,
    header_timeout: Duration,
    body_timeout: Duration,
}

async fn bind(addr: SocketAddr) -> Result<TcpListener, ServeError> {
    TcpListener::bind(addr).await.map_err(|source| ServeError::Bind { addr, source })
}

impl Neuron {
    /// Discovers models and binds both listeners (port 0 picks a free port).
    pub async fn bind(config: &Config, extra_models: &[PathBuf]) -> Result<Self, ServeError> {
        let metrics = Metrics::new();
        // The [engine] settings with CORTEX_ENGINE, CORTEX_DEVICE, … applied, the device opened.
        let opts = config.engine.clone().with_env().and_then(|e| e.options()).map_err(|e| match e {
            crate::config::ConfigError::Engine(errors) => ServeError::Config(errors),
            e => ServeError::Config(vec![e.to_string()]),
        })?;
        let mut extra: Vec<PathBuf> = config.models.clone();
        extra.extend_from_slice(extra_models);
        let models_dir = config.models_dir();
        let models_file = config.models_config.clone().or_else(|| {
            let beside = models_dir.parent().map(|p| p.join("models.toml"))?;
            beside.is_file().then_some(beside)
        });
        let file = match &models_file {
            Some(path) => ModelsFile::load(path).map_err(ServeError::Config)?,
            None => ModelsFile::builtin(),
        };
        let (budget, reserve) = config.memory_budget().map_err(|e| ServeError::Config(vec![e.to_string()]))?;
        let gpus = crate::gpu::discover();
        let (device, listed) = memory::node_devices(
            crate::engine::cuda_ordinal(&opts.device),
            &gpus,
            budget,
            config.memory.share,
            reserve,
        );
        tracing::info!(device = %device.name, budget_mib = device.budget_bytes >> 20, total_mib = device.total_bytes >> 20, "memory budget");
        let lifecycle = LifecycleConfig {
            models_dir,
            extra,
            file,
            strategy: config.eviction.strategy,
            device,
            listed_devices: listed,
            defrag_after_cycles: config.eviction.defrag_after_cycles,
            engine: opts,
        };
        let models = Models::new(lifecycle, metrics.clone());
        let mut keys = config.api_keys();
        let admin_keys = config.admin_keys();
        keys.extend(admin_keys.iter().cloned());
        let http = bind(config.server.listen).await?;
        let metrics_listener = bind(config.server.metrics_listen).await?;
        if keys.is_empty() && !config.server.listen.ip().is_loopback() {
            tracing::warn!(listen = %config.server.listen, "listening beyond loopback without API keys: anyone who can reach this port can use it (set server.api_keys or CORTEX_API_KEYS)");
        }
        let models = Arc::new(models);
        Ok(Self {
            state: AppState {
                node: Arc::new(crate::node::Node::new(models.clone())),
                models,
                metrics,
                api_keys: Arc::new(keys),
                admin_keys: Arc::new(admin_keys),
                mesh: None,
            },
            http,
            metrics: metrics_listener,
            max_body_bytes: config.server.max_body_bytes,
            grace: Duration::from_secs(config.server.shutdown_grace_secs),
            header_timeout: Duration::from_secs(config.server.header_timeout_secs.max(1)),
            body_timeout: Duration::from_secs(config.server.body_timeout_secs.max(1)),
        })
    }

    /// Joins the fleet when `[mesh] name` is set: loads the node's certificate and starts the
    /// QUIC endpoint, membership and placement.
    pub async fn start_mesh(&mut self, config: &Config) -> Result<(), ServeError> {
        let Some(name) = config.mesh.name.clone() else { return Ok(()) };
        let dir = config.mesh.tls_dir.clone().unwrap_or_else(crate::config::default_tls_dir);
        let identity = crate::mesh::NodeIdentity::load(&dir, &name).map_err(|e| {
            ServeError::Config(vec![format!(
                "mesh identity {name} in {}: {e} (make one with `cortex init` and `cortex cert issue {name}`)",
                dir.display()
            )])
        })?;
        let http = self.http_addr();
        let listen = config.mesh.listen.unwrap_or(config.server.listen);
        let listen = if listen.port() == 0 && config.mesh.listen.is_none() { http } else { listen };
        // The HTTP address published for the CLI: on the advertised host where the socket's
        // own address is unspecified.
        let published = match config.mesh.advertise {
            Some(a) if http.ip().is_unspecified() => SocketAddr::new(a.ip(), http.port()),
            _ => http,
        };
        let settings = crate::mesh::MeshSettings {
            identity,
            listen,
            advertise: config.mesh.advertise,
            seeds: config.mesh.seeds.clone(),
            http: published.to_string(),
            load_margin: config.mesh.load_margin.unwrap_or(cortex_proto::routing::LOAD_MARGIN),
            cache_aware: config.mesh.cache_aware.unwrap_or(true),
        };
        let mesh = crate::mesh::Mesh::start(settings, self.state.node.clone(), self.state.metrics.clone())
            .await
            .map_err(|e| ServeError::Config(vec![format!("mesh: {e}")]))?;
        self.state.mesh = Some(mesh);
        Ok(())
    }

    pub fn http_addr(&self) -> SocketAddr {
        self.http.local_addr().unwrap_or_else(|_| ([127, 0, 0, 1], 0).into())
    }

    pub fn metrics_addr(&self) -> SocketAddr {
        self.metrics.local_addr().unwrap_or_else(|_| ([127, 0, 0, 1], 0).into())
    }

    /// Serves until `shutdown` completes, then waits up to the grace period for in-flight
    /// requests (streams included) to finish.
    pub async fn run(self, shutdown: impl Future<Output = ()> + Send + 'static) -> Result<(), ServeError> {
        let (tx, rx) = tokio::sync::watch::channel(false);
        let app = gateway::router(self.state.clone(), self.max_body_bytes, self.body_timeout);
        let metrics_app = gateway::metrics_router(self.state.metrics.clone());
        tracing::info!(http = %self.http_addr(), metrics = %self.metrics_addr(), "neuron listening");
        let reaper = tokio::spawn(self.state.models.clone().run_reaper().instrument(tracing::info_span!("reaper")));
        // The same accept loop and header timeout as the API: the metrics port is no less
        // exposed to slow clients. It serves until the end, so the drain can be watched.
        let metrics_task = tokio::spawn(
            serve_http(self.metrics, metrics_app, self.header_timeout, std::future::pending())
                .instrument(tracing::info_span!("metrics_listener")),
        );
        let mut stop = rx.clone();
        let server = serve_http(self.http, app, self.header_timeout, async move {
            let _ = stop.wait_for(|s| *s).await;
        });
        let grace = self.grace;
        let mesh = self.state.mesh.clone();
        let goodbye = mesh.clone();
        let signal = tokio::spawn(
            async move {
                shutdown.await;
                tracing::info!(
                    grace_secs = grace.as_secs(),
                    "shutting down: no new connections; waiting for in-flight requests"
                );
                // Peers stop sending work here at the start of the drain, not at its end.
                if let Some(mesh) = goodbye {
                    mesh.say_goodbye().await;
                }
                let _ = tx.send(true);
            }
            .instrument(tracing::info_span!("shutdown")),
        );
        let models = self.state.models.clone();
        let drained = async move {
            server.await;
            // Generations run for peers over the mesh hold no HTTP connection here: wait for
            // the schedulers to empty too, so that a relayed stream is not cut at exit.
            while models.busy() != (0, 0) {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        };
        let mut stopped = rx;
        let result = tokio::select! {
            () = drained => Ok(()),
            _ = async {
                let _ = stopped.wait_for(|s| *s).await;
                tokio::time::sleep(grace).await;
            } => {
                tracing::warn!("grace period over; closing the remaining connections");
                Ok(())
            }
        };
        signal.abort();
        metrics_task.abort();
        reaper.abort();
        if let Some(mesh) = mesh {
            mesh.leave().await;
        }
        result
    }
}

/// Serves `app` (the API or the metrics) on `listener` until `stop`, then waits for open connections to finish their
/// requests (the caller bounds that wait). axum's own `serve` has no way to set hyper's header
/// timeout, so this is its accept loop with one: a client that trickles its headers is cut off
/// after `header_timeout` instead of holding a socket and a task for as long as it likes.
async fn serve_http(
    listener: TcpListener,
    app: axum::Router,
    header_timeout: Duration,
    stop: impl Future<Output = ()> + Send,
) {
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let mut builder = Builder::new(TokioExecutor::new());
    builder.http1().timer(TokioTimer::new()).header_read_timeout(header_timeout);
    builder.http2().timer(TokioTimer::new());
    let mut stop = std::pin::pin!(stop);
    loop {
        let (tcp, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(conn) => conn,
                Err(e) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    tracing::warn!(error = %e, "accepting a connection failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            () = &mut stop => break,
        };
        // Streamed tokens are small writes: without TCP_NODELAY, Nagle and delayed ACKs hold
        // each one back for up to 40 ms.
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::debug!(error = %e, "TCP_NODELAY not set");
        }
        let service =
            TowerToHyperService::new(app.clone().map_request(|r: Request<Incoming>| r.map(axum::body::Body::new)));
        let conn = builder.serve_connection_with_upgrades(TokioIo::new(tcp), service).into_owned();
        let conn = graceful.watch(conn);
        let span = tracing::debug_span!("http_connection", peer = %peer);
        tokio::spawn(
            async move {
                if let Err(e) = conn.await {
                    tracing::debug!(error = %e, "connection ended with an error");
                }
            }
            .instrument(span),
        );
    }
    drop(listener);
    graceful.shutdown().await;
}

/// Resolves on SIGINT or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! { _ = ctrl_c => {}, _ = term => {} }
}
