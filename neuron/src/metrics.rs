//! The one Prometheus registry, built at start-up; handles are passed down. Labels come from
//! bounded sets (model ids from the catalogue, API names, status codes), never raw input.

use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry, TextEncoder,
};

const TTFT_BUCKETS: &[f64] = &[0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0];
const LATENCY_BUCKETS: &[f64] = &[0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0];
const RATE_BUCKETS: &[f64] = &[1.0, 2.5, 5.0, 10.0, 20.0, 40.0, 80.0, 160.0, 320.0, 640.0];
const STEP_BUCKETS: &[f64] = &[1.0, 2.0, 4.0, 8.0, 16.0, 32.0];
const LOAD_BUCKETS: &[f64] = &[0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0];

#[derive(Clone)]
pub struct Metrics {
    registry: Registry,
    pub requests: IntCounterVec,
    pub prompt_tokens: IntCounterVec,
    pub completion_tokens: IntCounterVec,
    pub ttft: HistogramVec,
    pub latency: HistogramVec,
    pub decode_rate: HistogramVec,
    in_flight: IntGaugeVec,
    queue_depth: IntGaugeVec,
    cancelled: IntCounterVec,
    step_sequences: HistogramVec,
    constrained_tokens: IntCounterVec,
    grammar_masks: IntCounterVec,
    grammar_seconds: prometheus::CounterVec,
    prefix_hit_tokens: IntCounterVec,
    prefix_miss_tokens: IntCounterVec,
    prefix_bytes: IntGaugeVec,
    prefix_evictions: IntCounterVec,
    pub loads: IntCounterVec,
    pub load_seconds: HistogramVec,
    pub unloads: IntCounterVec,
    pub evictions: IntCounterVec,
    pub resident_bytes: IntGaugeVec,
    pub budget_bytes: IntGaugeVec,
    pub model_state: IntGaugeVec,
    /// 1 for each model's engine and kernel family, set at load.
    pub model_kernels: IntGaugeVec,
    pub peers: IntGaugeVec,
    pub mesh_rpcs: IntCounterVec,
    pub forwarded: IntCounterVec,
    pub refused: IntCounterVec,
    pub placement_versions: IntCounter,
    pub handshake_failures: IntCounterVec,
}

/// Per-model handles the generation thread updates.
#[derive(Clone)]
pub struct ModelMetrics {
    pub in_flight: IntGauge,
    pub queue_depth: IntGauge,
    pub cancelled: IntCounter,
    /// Sequences that shared each engine step (a batch where the model batches).
    pub step_sequences: prometheus::Histogram,
    /// Tokens chosen under a grammar.
    pub constrained_tokens: IntCounter,
    /// Of those, tokens whose first sample the grammar refused (a full mask was computed).
    pub grammar_masks: IntCounter,
    /// Time spent checking, masking and advancing grammars.
    pub grammar_seconds: prometheus::Counter,
    /// Prompt tokens the prefix cache supplied, and those computed.
    pub prefix_hit_tokens: IntCounter,
    pub prefix_miss_tokens: IntCounter,
    /// Bytes of KV blocks the prefix cache holds.
    pub prefix_bytes: IntGauge,
    /// Blocks the prefix cache evicted to stay within its budget.
    pub prefix_evictions: IntCounter,
}

fn reg<T: prometheus::core::Collector + Clone + 'static>(r: &Registry, c: T) -> T {
    // Names are static and distinct, so registration cannot collide.
    let _ = r.register(Box::new(c.clone()));
    c
}

fn hist(name: &str, help: &str, buckets: &[f64], labels: &[&str]) -> HistogramVec {
    HistogramVec::new(HistogramOpts::new(name, help).buckets(buckets.to_vec()), labels)
        .unwrap_or_else(|e| unreachable!("static histogram {name}: {e}"))
}

fn counter(name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    IntCounterVec::new(Opts::new(name, help), labels).unwrap_or_else(|e| unreachable!("static counter {name}: {e}"))
}

fn gauge(name: &str, help: &str, labels: &[&str]) -> IntGaugeVec {
    IntGaugeVec::new(Opts::new(name, help), labels).unwrap_or_else(|e| unreachable!("static gauge {name}: {e}"))
}

impl Metrics {
    pub fn new() -> Self {
        let r = Registry::new();
        Self {
            requests: reg(
                &r,
                counter(
                    "cortex_requests_total",
                    "HTTP inference requests by model, API and status",
                    &["model", "api", "status"],
                ),
            ),
            prompt_tokens: reg(&r, counter("cortex_prompt_tokens_total", "Prompt tokens processed", &["model"])),
            completion_tokens: reg(
                &r,
                counter("cortex_completion_tokens_total", "Completion tokens generated", &["model"]),
            ),
            ttft: reg(
                &r,
                hist(
                    "cortex_time_to_first_token_seconds",
                    "Time from request to first token",
                    TTFT_BUCKETS,
                    &["model"],
                ),
            ),
            latency: reg(
                &r,
                hist("cortex_request_duration_seconds", "Whole request duration", LATENCY_BUCKETS, &["model", "api"]),
            ),
            decode_rate: reg(
                &r,
                hist("cortex_decode_tokens_per_second", "Per-request decode speed", RATE_BUCKETS, &["model"]),
            ),
            in_flight: reg(&r, gauge("cortex_in_flight_requests", "Requests generating now", &["model"])),
            queue_depth: reg(&r, gauge("cortex_queue_depth", "Requests waiting for a generation slot", &["model"])),
            cancelled: reg(
                &r,
                counter(
                    "cortex_generations_cancelled_total",
                    "Generations stopped because the client went away",
                    &["model"],
                ),
            ),
            step_sequences: reg(
                &r,
                hist(
                    "cortex_step_sequences",
                    "Sequences run together in one engine step (prefill chunk or decoded token each)",
                    STEP_BUCKETS,
                    &["model"],
                ),
            ),
            constrained_tokens: reg(
                &r,
                counter("cortex_constrained_tokens_total", "Tokens chosen under an output grammar", &["model"]),
            ),
            grammar_masks: reg(
                &r,
                counter(
                    "cortex_grammar_masks_total",
                    "Constrained tokens whose first sample the grammar refused, so that a full mask was computed",
                    &["model"],
                ),
            ),
            grammar_seconds: reg(
                &r,
                prometheus::CounterVec::new(
                    Opts::new(
                        "cortex_grammar_seconds_total",
                        "Time spent checking, masking and advancing output grammars",
                    ),
                    &["model"],
                )
                .unwrap_or_else(|e| unreachable!("static counter: {e}")),
            ),
            prefix_hit_tokens: reg(
                &r,
                counter("cortex_prefix_hit_tokens_total", "Prompt tokens taken from the prefix cache", &["model"]),
            ),
            prefix_miss_tokens: reg(
                &r,
                counter(
                    "cortex_prefix_miss_tokens_total",
                    "Prompt tokens computed (not in the prefix cache)",
                    &["model"],
                ),
            ),
            prefix_bytes: reg(
                &r,
                gauge("cortex_prefix_cache_bytes", "Bytes of KV blocks in the prefix cache", &["model"]),
            ),
            prefix_evictions: reg(
                &r,
                counter(
                    "cortex_prefix_evictions_total",
                    "KV blocks the prefix cache evicted under its budget",
                    &["model"],
                ),
            ),
            loads: reg(&r, counter("cortex_model_loads_total", "Model loads by outcome", &["model", "outcome"])),
            load_seconds: reg(&r, hist("cortex_model_load_seconds", "Model load duration", LOAD_BUCKETS, &["model"])),
            unloads: reg(
                &r,
                counter(
                    "cortex_model_unloads_total",
                    "Model unloads by reason (request, memory, idle)",
                    &["model", "reason"],
                ),
            ),
            evictions: reg(
                &r,
                counter(
                    "cortex_model_evictions_total",
                    "Unloads the node decided on, by reason (memory, idle)",
                    &["model", "reason"],
                ),
            ),
            resident_bytes: reg(
                &r,
                gauge("cortex_resident_bytes", "Estimated bytes held by loaded and loading models", &["device"]),
            ),
            budget_bytes: reg(&r, gauge("cortex_memory_budget_bytes", "Bytes models may use", &["device"])),
            model_state: reg(&r, gauge("cortex_model_state", "1 for the state each model is in", &["model", "state"])),
            model_kernels: reg(
                &r,
                gauge(
                    "cortex_model_kernels_info",
                    "1 for the engine and kernel family each loaded model runs on",
                    &["model", "engine", "kernels"],
                ),
            ),
            peers: reg(&r, gauge("cortex_mesh_peers", "Mesh peers by state (alive, suspect, down, left)", &["state"])),
            mesh_rpcs: reg(
                &r,
                counter("cortex_mesh_rpcs_total", "Mesh RPCs by kind and outcome", &["kind", "outcome"]),
            ),
            forwarded: reg(
                &r,
                counter("cortex_forwarded_requests_total", "Requests forwarded to a peer, by target", &["target"]),
            ),
            refused: reg(
                &r,
                counter(
                    "cortex_refused_requests_total",
                    "HTTP requests answered with an error status, by route (unmatched for unknown routes) and status",
                    &["route", "status"],
                ),
            ),
            placement_versions: reg(
                &r,
                IntCounter::new("cortex_placement_versions_seen_total", "Peer placement documents received")
                    .unwrap_or_else(|e| unreachable!("static counter: {e}")),
            ),
            handshake_failures: reg(
                &r,
                counter(
                    "cortex_mesh_handshake_failures_total",
                    "Refused or failed mesh handshakes by reason",
                    &["reason"],
                ),
            ),
            registry: r,
        }
    }

    pub fn for_model(&self, model: &str) -> ModelMetrics {
        ModelMetrics {
            in_flight: self.in_flight.with_label_values(&[model]),
            queue_depth: self.queue_depth.with_label_values(&[model]),
            cancelled: self.cancelled.with_label_values(&[model]),
            step_sequences: self.step_sequences.with_label_values(&[model]),
            constrained_tokens: self.constrained_tokens.with_label_values(&[model]),
            grammar_masks: self.grammar_masks.with_label_values(&[model]),
            grammar_seconds: self.grammar_seconds.with_label_values(&[model]),
            prefix_hit_tokens: self.prefix_hit_tokens.with_label_values(&[model]),
            prefix_miss_tokens: self.prefix_miss_tokens.with_label_values(&[model]),
            prefix_bytes: self.prefix_bytes.with_label_values(&[model]),
            prefix_evictions: self.prefix_evictions.with_label_values(&[model]),
        }
    }

    /// The text exposition format.
    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut buf);
        String::from_utf8(buf).unwrap_or_default()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}
