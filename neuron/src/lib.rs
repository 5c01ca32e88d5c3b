//! cortex-neuron: the daemon behind `cortex serve`. The engine runs models on dedicated
//! threads, the gateway speaks OpenAI and Anthropic over HTTP, lifecycle decides what is
//! loaded, and metrics exposes it all to Prometheus.

pub mod config;
pub mod engine;
pub mod gateway;
pub mod gpu;
pub mod lifecycle;
pub mod mesh;
pub mod metrics;
pub mod server;
pub mod testutil;
