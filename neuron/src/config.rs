//! `cortex.toml`: every setting of a neuron, parsed once at start. Absent file → defaults: a
//! single neuron on loopback serving the models directory.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::engine::scheduler::SchedulerConfig;
use crate::engine::{Bits, DeviceChoice, EngineKind, EngineOptions};

pub const DEFAULT_LISTEN: &str = "127.0.0.1:31313";
pub const DEFAULT_METRICS_LISTEN: &str = "127.0.0.1:31314";
/// Request bodies above this get 413 (a long chat fits in far less).
pub const DEFAULT_MAX_BODY_BYTES: usize = 8 * 1024 * 1024;
/// How long in-flight requests may run after SIGTERM before the process exits anyway.
pub const DEFAULT_SHUTDOWN_GRACE: Duration = Duration::from_secs(30);

#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default)]
    pub server: ServerConfig,
    #[serde(default)]
    pub engine: EngineConfig,
    /// Where model files live; default `$CORTEX_HOME/models` or the platform data directory.
    pub models_dir: Option<PathBuf>,
    /// Extra model files (GGUF) or safetensors directories.
    #[serde(default)]
    pub models: Vec<PathBuf>,
    /// models.toml: models, sources, priorities, pins, aliases. Default: `models.toml` beside
    /// the models directory when it exists, else the built-in catalogue.
    pub models_config: Option<PathBuf>,
    #[serde(default)]
    pub memory: MemoryConfig,
    #[serde(default)]
    pub eviction: EvictionConfig,
    #[serde(default)]
    pub mesh: MeshConfig,
}

/// `[mesh]`: joining a fleet. The mesh is on when `name` is set.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct MeshConfig {
    /// This node's name; its certificate `NAME.crt` in `tls_dir` must carry it.
    pub name: Option<String>,
    /// Holds `ca.crt`, `NAME.crt`, `NAME.key` (`cortex init`, `cortex cert issue`).
    /// Default: $CORTEX_HOME/tls or the platform data directory.
    pub tls_dir: Option<PathBuf>,
    /// UDP address of the QUIC endpoint; default: the HTTP listen address (UDP beside TCP).
    pub listen: Option<SocketAddr>,
    /// The mesh address peers are told to reach this node at; default: the listen address.
    /// Needed where that is unspecified (`0.0.0.0`) or translated (a pod's IP, a NAT).
    pub advertise: Option<SocketAddr>,
    /// Peers to join through (any member of the fleet will do): `IP:PORT` or `HOST:PORT`, a
    /// name resolved again at each attempt and tried at every address it has (a Kubernetes
    /// headless Service names the whole fleet).
    pub seeds: Vec<Seed>,
    /// How many more requests (running and queued) than the least loaded peer the peer holding
    /// a prompt's prefix may have and still get the request (cache-aware routing's load guard).
    /// Default 4.
    pub load_margin: Option<u32>,
    /// Route by the prefixes peers hold (default true); false routes by load alone (to
    /// compare).
    pub cache_aware: Option<bool>,
}

/// A peer's mesh address as `HOST:PORT` or `IP:PORT`, checked when read, resolved when used.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub struct Seed(String);

impl Seed {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for Seed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::str::FromStr for Seed {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        if s.parse::<SocketAddr>().is_ok() {
            return Ok(Self(s.to_owned()));
        }
        let bad = || format!("{s:?} is not HOST:PORT or IP:PORT (an IPv6 address goes in brackets: [::1]:31313)");
        let (host, port) = s.rsplit_once(':').ok_or_else(bad)?;
        let host_ok = !host.is_empty()
            && host.split('.').all(|l| !l.is_empty() && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-'));
        if !host_ok || port.parse::<u16>().map_or(true, |p| p == 0) {
            return Err(bad());
        }
        Ok(Self(s.to_owned()))
    }
}

impl TryFrom<String> for Seed {
    type Error = String;

    fn try_from(s: String) -> Result<Self, String> {
        s.parse()
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MemoryConfig {
    /// Bytes models may use on this node ("300MiB", "8GiB"); default: `share` of RAM less
    /// `reserve` (on a GPU node, the GPU's memory less `reserve`).
    pub budget: Option<String>,
    pub share: f64,
    pub reserve: String,
}

impl Default for MemoryConfig {
    fn default() -> Self {
        Self { budget: None, share: crate::lifecycle::memory::DEFAULT_RAM_SHARE, reserve: "512MiB".into() }
    }
}

#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct EvictionConfig {
    /// `lru` or `priority` (lowest priority first, then least recently used).
    pub strategy: cortex_proto::eviction::Strategy,
    /// After this many unloads, reload resident models to defragment memory (0: never).
    pub defrag_after_cycles: u32,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    pub listen: SocketAddr,
    pub metrics_listen: SocketAddr,
    /// Accepted API keys (`Authorization: Bearer` or `x-api-key`). Empty: no auth.
    pub api_keys: Vec<String>,
    /// Keys that may also use the admin API (`/cortex/v1/...`); they work for inference too.
    pub admin_keys: Vec<String>,
    pub max_body_bytes: usize,
    /// Seconds in-flight requests get to finish after SIGTERM.
    pub shutdown_grace_secs: u64,
    /// Seconds a client gets to send a request's headers; a connection that trickles them is
    /// closed.
    pub header_timeout_secs: u64,
    /// Seconds a client gets to send a request's whole body; a trickled body is refused.
    pub body_timeout_secs: u64,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            listen: DEFAULT_LISTEN.parse().unwrap_or_else(|_| unreachable!()),
            metrics_listen: DEFAULT_METRICS_LISTEN.parse().unwrap_or_else(|_| unreachable!()),
            api_keys: Vec::new(),
            admin_keys: Vec::new(),
            max_body_bytes: DEFAULT_MAX_BODY_BYTES,
            shutdown_grace_secs: DEFAULT_SHUTDOWN_GRACE.as_secs(),
            header_timeout_secs: 30,
            body_timeout_secs: 30,
        }
    }
}

/// `[engine]`: how models are loaded and run. Each setting marked with a variable is overridden
/// by that environment variable when it is set (non-empty); [`EngineConfig::with_env`] applies
/// them, the one place they are read.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EngineConfig {
    /// Cap on a model's context window (prompt + completion tokens). Unset, a model gets the
    /// context it was trained for, lowered only where the memory budget cannot hold
    /// `max_active` sequences of it (logged when it is).
    pub max_context: Option<usize>,
    /// A `max_tokens` beyond the room the prompt leaves is refused (400) instead of lowered to
    /// that room (the answer then ends with `length`).
    pub strict_context: bool,
    /// Sequences generating at once per model.
    pub max_active: usize,
    /// Requests that may wait per model beyond those; more get 429.
    pub queue_capacity: usize,
    /// Which code runs models (`CORTEX_ENGINE`): `auto` (cortex's CPU decoder for llama and
    /// gemma3 GGUF files on the CPU, the batched decoder on a GPU, candle-transformers' models
    /// for the rest), `batched` (the batched decoder wherever it applies, the CPU too) or
    /// `candle` (candle-transformers' models for everything).
    pub engine: EngineKind,
    /// Where models compute (`CORTEX_DEVICE`): `auto` (the first GPU of a CUDA build when there
    /// is one, else the CPU), `cpu`, `cuda` or `cuda:N`.
    pub device: DeviceChoice,
    /// Bits the CPU kernels quantize activations to in decode steps (`CORTEX_DECODE_BITS`):
    /// 16, or 8 (llama.cpp's choice; further from f32 arithmetic, see BENCHMARKS.md).
    pub decode_bits: Bits,
    /// The same for steps with prompt rows (`CORTEX_PREFILL_BITS`).
    pub prefill_bits: Bits,
    /// Caps the instruction set the CPU kernels use (`CORTEX_KERNELS`, read by the kernels
    /// themselves): `scalar`, `avx2` or `avx512vnni`; unset, the best this CPU has. For
    /// comparisons, and hosts whose AVX-512 clocks down.
    #[serde(deserialize_with = "kernel_cap")]
    pub kernels: Option<cortex_kernels::Level>,
    /// candle's `CANDLE_DEQUANTIZE_ALL` (set, not "0"): every matrix widened to f32 at load, the
    /// f32 reference; cortex's CPU decoder honours it too. The environment's only, not a file
    /// setting.
    #[serde(skip)]
    pub dequantize_all: bool,
    /// Bytes of KV blocks each model's prefix cache may keep ("512MiB"; "0" turns it off);
    /// models.toml's `kv_cache_bytes` sets it per model. Unset: twice a full-context cache of
    /// one sequence, at most 512 MiB. The memory estimate of a load counts it.
    pub kv_cache_bytes: Option<String>,
    /// A streamed answer's text goes out at most once in this many milliseconds
    /// (`CORTEX_STREAM_INTERVAL_MS`), the first piece at once: tokens that come faster share an
    /// event, which spares the host a wake-up of the HTTP task and the client for each. 0 sends
    /// every token on its own.
    pub stream_interval_ms: u64,
}

impl Default for EngineConfig {
    fn default() -> Self {
        let s = crate::engine::scheduler::SchedulerConfig::default();
        Self {
            max_context: None,
            strict_context: false,
            max_active: s.max_active,
            queue_capacity: s.queue_capacity,
            engine: EngineKind::default(),
            device: DeviceChoice::default(),
            decode_bits: Bits::default(),
            prefill_bits: Bits::default(),
            kernels: None,
            dequantize_all: false,
            kv_cache_bytes: None,
            stream_interval_ms: s.stream_interval.as_millis() as u64,
        }
    }
}

/// `[engine] kernels`: a level's name, refused by name when unknown.
fn kernel_cap<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<cortex_kernels::Level>, D::Error> {
    let name = String::deserialize(d)?;
    name.parse().map(Some).map_err(|e: cortex_kernels::UnknownLevel| serde::de::Error::custom(e))
}

/// Overrides `[engine] engine`.
pub const ENGINE_ENV: &str = "CORTEX_ENGINE";
/// Overrides `[engine] device`.
pub const DEVICE_ENV: &str = "CORTEX_DEVICE";
/// Overrides `[engine] decode_bits`.
pub const DECODE_BITS_ENV: &str = "CORTEX_DECODE_BITS";
/// Overrides `[engine] prefill_bits`.
pub const PREFILL_BITS_ENV: &str = "CORTEX_PREFILL_BITS";
/// Overrides `[engine] stream_interval_ms`.
pub const STREAM_INTERVAL_ENV: &str = "CORTEX_STREAM_INTERVAL_MS";
/// candle's own switch, read here for cortex's CPU decoder (candle reads it itself too).
pub const DEQUANTIZE_ALL_ENV: &str = "CANDLE_DEQUANTIZE_ALL";

impl EngineConfig {
    /// These settings with the process environment's overrides applied.
    pub fn with_env(self) -> Result<Self, ConfigError> {
        self.with_vars(|name| std::env::var(name).ok())
    }

    /// These settings with the overrides `var` gives (a variable's value by name), every value
    /// that does not parse reported at once.
    pub fn with_vars(mut self, var: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let mut errors = Vec::new();
        let var = |name: &str| var(name).filter(|v| !v.is_empty());
        fn set<T: std::str::FromStr<Err = String>>(
            value: Option<String>,
            name: &str,
            to: &mut T,
            errors: &mut Vec<String>,
        ) {
            match value.map(|v| v.trim().parse().map_err(|e| format!("{name}={v}: {e}"))) {
                Some(Ok(v)) => *to = v,
                Some(Err(e)) => errors.push(e),
                None => {}
            }
        }
        set(var(ENGINE_ENV), ENGINE_ENV, &mut self.engine, &mut errors);
        set(var(DEVICE_ENV), DEVICE_ENV, &mut self.device, &mut errors);
        set(var(DECODE_BITS_ENV), DECODE_BITS_ENV, &mut self.decode_bits, &mut errors);
        set(var(PREFILL_BITS_ENV), PREFILL_BITS_ENV, &mut self.prefill_bits, &mut errors);
        if let Some(v) = var(STREAM_INTERVAL_ENV) {
            match v.trim().parse() {
                Ok(ms) => self.stream_interval_ms = ms,
                Err(_) => errors.push(format!("{STREAM_INTERVAL_ENV}={v}: not a whole number of milliseconds")),
            }
        }
        self.dequantize_all = var(DEQUANTIZE_ALL_ENV).is_some_and(|v| v != "0");
        match errors.is_empty() {
            true => Ok(self),
            false => Err(ConfigError::Engine(errors)),
        }
    }

    /// What the engine loads models with: these settings (apply the environment first with
    /// [`EngineConfig::with_env`]), the device opened. A device that cannot be opened (a CUDA
    /// device on a CPU build or a host without it) is an error, not a quiet fall-back.
    pub fn options(&self) -> Result<EngineOptions, ConfigError> {
        let device = self.device.open().map_err(|e| ConfigError::Engine(vec![e.to_string()]))?;
        if let Some(cap) = self.kernels {
            match cortex_kernels::set_level_cap(cap) {
                Ok(level) => tracing::info!(cap = cap.as_str(), level = level.as_str(), "CPU kernel level"),
                Err(e) => tracing::warn!(error = %e, "kernels cap not applied"),
            }
        }
        let kv_cache_bytes = match &self.kv_cache_bytes {
            None => None,
            Some(s) => Some(crate::lifecycle::catalogue::parse_size(s).ok_or_else(|| {
                ConfigError::Engine(vec![format!(
                    "engine.kv_cache_bytes: expected a size such as \"512MiB\", got {s:?}"
                )])
            })?),
        };
        Ok(EngineOptions {
            kv_cache_bytes,
            max_context: self.max_context,
            strict_context: self.strict_context,
            scheduler: SchedulerConfig {
                max_active: self.max_active.max(1),
                queue_capacity: self.queue_capacity,
                stream_interval: std::time::Duration::from_millis(self.stream_interval_ms),
                ..SchedulerConfig::default()
            },
            engine: self.engine,
            decode_bits: self.decode_bits,
            prefill_bits: self.prefill_bits,
            dequantize_all: self.dequantize_all,
            ..EngineOptions::on(device)
        })
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    /// toml's message names the line, column and key.
    #[error("{path}: {message}")]
    Parse { path: PathBuf, message: String },
    /// A value of the right type that makes no sense.
    #[error("{0}")]
    Invalid(String),
    /// Engine settings (from the environment, or a device that cannot be opened) that cannot
    /// be used; every one listed.
    #[error("{}", .0.join("; "))]
    Engine(Vec<String>),
}

impl Config {
    pub fn from_file(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read { path: path.into(), source })?;
        Self::parse(&text, path)
    }

    /// Parses and checks `text`; `path` only names it in errors.
    pub fn parse(text: &str, path: &Path) -> Result<Self, ConfigError> {
        let config: Self =
            toml::from_str(text).map_err(|e| ConfigError::Parse { path: path.into(), message: e.to_string() })?;
        config.memory_budget()?;
        Ok(config)
    }

    /// (explicit budget, reserve) in bytes, checked.
    pub fn memory_budget(&self) -> Result<(Option<u64>, u64), ConfigError> {
        use crate::lifecycle::catalogue::parse_size;
        let budget = match &self.memory.budget {
            Some(b) => Some(parse_size(b).ok_or_else(|| {
                ConfigError::Invalid(format!("memory.budget = {b:?} is not a size such as \"300MiB\""))
            })?),
            None => None,
        };
        let reserve = parse_size(&self.memory.reserve)
            .ok_or_else(|| ConfigError::Invalid(format!("memory.reserve = {:?} is not a size", self.memory.reserve)))?;
        if !(0.0..=1.0).contains(&self.memory.share) {
            return Err(ConfigError::Invalid(format!("memory.share = {} must be between 0 and 1", self.memory.share)));
        }
        Ok((budget, reserve))
    }

    /// Admin keys from the file plus `CORTEX_ADMIN_KEYS`.
    pub fn admin_keys(&self) -> Vec<String> {
        let mut keys = self.server.admin_keys.clone();
        if let Ok(env) = std::env::var("CORTEX_ADMIN_KEYS") {
            keys.extend(env.split(',').map(str::trim).filter(|k| !k.is_empty()).map(str::to_string));
        }
        keys
    }

    /// API keys from the file plus `CORTEX_API_KEYS` (comma-separated).
    pub fn api_keys(&self) -> Vec<String> {
        let mut keys = self.server.api_keys.clone();
        if let Ok(env) = std::env::var("CORTEX_API_KEYS") {
            keys.extend(env.split(',').map(str::trim).filter(|k| !k.is_empty()).map(str::to_string));
        }
        keys
    }

    pub fn models_dir(&self) -> PathBuf {
        self.models_dir.clone().unwrap_or_else(default_models_dir)
    }
}

/// `$CORTEX_HOME/models`, else `<data dir>/cortex/models` (e.g. ~/.local/share/cortex/models).
pub fn default_models_dir() -> PathBuf {
    if let Some(home) = std::env::var_os("CORTEX_HOME") {
        return PathBuf::from(home).join("models");
    }
    dirs::data_dir().unwrap_or_else(|| PathBuf::from(".")).join("cortex").join("models")
}

/// `$CORTEX_HOME/tls`, else `<data dir>/cortex/tls`: the fleet CA and node certificates.
pub fn default_tls_dir() -> PathBuf {
    if let Some(home) = std::env::var_os("CORTEX_HOME") {
        return PathBuf::from(home).join("tls");
    }
    dirs::data_dir().unwrap_or_else(|| PathBuf::from(".")).join("cortex").join("tls")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_key_is_rejected_with_its_line() {
        let dir = std::env::temp_dir().join(format!("cortex-cfg-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("cortex.toml");
        std::fs::write(&p, "[server]\nlisten = \"127.0.0.1:1\"\nlisten_typo = 3\n").unwrap();
        let err = Config::from_file(&p).unwrap_err().to_string();
        assert!(err.contains("listen_typo") && err.contains("line 3"), "{err}");
    }

    #[test]
    fn the_documented_example_parses_to_the_defaults() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/cortex.toml");
        let c = Config::from_file(&path).unwrap();
        let d = Config::default();
        assert_eq!(c.server.listen, d.server.listen);
        assert_eq!(c.server.max_body_bytes, d.server.max_body_bytes);
        assert_eq!(c.engine.max_active, d.engine.max_active);
        assert_eq!(c.engine.queue_capacity, d.engine.queue_capacity);
        assert_eq!(c.engine.stream_interval_ms, d.engine.stream_interval_ms);
        assert_eq!(c.memory_budget().unwrap(), d.memory_budget().unwrap());
    }

    #[test]
    fn engine_settings_parse_and_unknown_values_are_refused() {
        let c = Config::parse(
            "[engine]\nengine = \"batched\"\ndevice = \"cpu\"\ndecode_bits = 8\nprefill_bits = 16\n",
            Path::new("c.toml"),
        )
        .unwrap();
        let e = &c.engine;
        assert_eq!(
            (e.engine, e.device, e.decode_bits, e.prefill_bits),
            (EngineKind::Batched, DeviceChoice::Cpu, Bits::Eight, Bits::Sixteen)
        );
        let o = e.options().unwrap();
        assert!(o.device.is_cpu() && o.engine == EngineKind::Batched && o.decode_bits == Bits::Eight);
        // Parsed only: applying a kernels cap would cap this test process's kernels.
        let c = Config::parse("[engine]\nkernels = \"avx2\"\n", Path::new("c.toml")).unwrap();
        assert_eq!(c.engine.kernels, Some(cortex_kernels::Level::Avx2));
        for (line, says) in [
            ("kernels = \"avx3\"", "avx512vnni"),
            ("engine = \"fast\"", "auto"),
            ("device = \"tpu\"", "cpu, cuda or cuda:N"),
            ("decode_bits = 12", "16 or 8"),
            ("dequantize_all = true", "unknown field"),
        ] {
            let err = Config::parse(&format!("[engine]\n{line}\n"), Path::new("c.toml")).unwrap_err().to_string();
            assert!(err.contains(says) && err.contains("line 2"), "{line}: {err}");
        }
    }

    /// The environment overrides the file; every bad value is reported, none ignored.
    #[test]
    fn engine_variables_override_the_file_and_bad_ones_are_all_reported() {
        let vars = |pairs: &'static [(&str, &str)]| {
            move |name: &str| pairs.iter().find(|(k, _)| *k == name).map(|(_, v)| v.to_string())
        };
        let file = EngineConfig { engine: EngineKind::Candle, decode_bits: Bits::Eight, ..Default::default() };
        let c = file
            .clone()
            .with_vars(vars(&[
                ("CORTEX_ENGINE", "batched"),
                ("CORTEX_DEVICE", "cpu"),
                ("CORTEX_PREFILL_BITS", "8"),
                ("CANDLE_DEQUANTIZE_ALL", "1"),
                ("CORTEX_STREAM_INTERVAL_MS", "0"),
            ]))
            .unwrap();
        assert_eq!(c.options().unwrap().scheduler.stream_interval, std::time::Duration::ZERO);
        assert_eq!(
            (c.engine, c.device, c.decode_bits, c.prefill_bits),
            (EngineKind::Batched, DeviceChoice::Cpu, Bits::Eight, Bits::Eight)
        );
        assert!(c.dequantize_all && c.options().unwrap().dequantize_all);
        // Empty values and candle's "0" leave the file's settings.
        let c = file.clone().with_vars(vars(&[("CORTEX_ENGINE", ""), ("CANDLE_DEQUANTIZE_ALL", "0")])).unwrap();
        assert_eq!((c.engine, c.dequantize_all), (EngineKind::Candle, false));
        let err = file
            .with_vars(vars(&[
                ("CORTEX_ENGINE", "fast"),
                ("CORTEX_DEVICE", "tpu"),
                ("CORTEX_DECODE_BITS", "4"),
                ("CORTEX_STREAM_INTERVAL_MS", "5ms"),
            ]))
            .unwrap_err();
        let ConfigError::Engine(errors) = err else { panic!("{err}") };
        assert_eq!(errors.len(), 4, "{errors:?}");
        assert!(errors[3].contains("milliseconds"), "{errors:?}");
        assert!(errors[0].starts_with("CORTEX_ENGINE=fast: ") && errors[2].contains("16 or 8"), "{errors:?}");
        if !cfg!(feature = "cuda") {
            let e = EngineConfig { device: DeviceChoice::Cuda(0), ..Default::default() }.options().unwrap_err();
            assert!(e.to_string().contains("built without CUDA"), "{e}");
        }
    }

    #[test]
    fn seeds_are_addresses_or_host_names_with_a_port() {
        for ok in ["10.0.0.11:31313", "[::1]:31313", "cortex-0.cortex-mesh.default.svc:31313", "localhost:9"] {
            assert_eq!(ok.parse::<Seed>().map(|s| s.to_string()), Ok(ok.to_owned()));
        }
        for bad in ["cortex-0", "host:", ":31313", "host:0", "host:99999", "::1:31313", "a..b:1", "a b:1"] {
            assert!(bad.parse::<Seed>().is_err(), "{bad} accepted");
        }
        let err = Config::parse("[mesh]\nseeds = [\"gpu-1\"]\n", Path::new("c.toml")).unwrap_err();
        assert!(err.to_string().contains("not HOST:PORT"), "{err}");
    }

    #[test]
    fn empty_file_is_defaults() {
        let c: Config = toml::from_str("").unwrap();
        assert_eq!(c.server.listen.to_string(), DEFAULT_LISTEN);
        assert_eq!(c.engine.max_context, None);
    }
}
