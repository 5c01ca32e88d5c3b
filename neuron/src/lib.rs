//! cortex-neuron: the daemon behind `cortex serve`. The engine runs models on dedicated
//! threads, lifecycle decides what is loaded, `node` is the one local path to generate and act
//! on models, the gateway speaks OpenAI and Anthropic over HTTP, the mesh joins neurons into a
//! fleet, and metrics exposes it all to Prometheus.

pub mod config;
pub mod engine;
pub mod gateway;
pub mod gpu;
pub mod lifecycle;
pub mod mesh;
pub mod metrics;
pub mod node;
pub mod server;
pub mod testutil;
