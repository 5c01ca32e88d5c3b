//! Test harness: real `cortex serve` processes on 127.0.0.1 with generated tiny models. A
//! neuron's log is printed when the test that owns it fails.

#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cortex_neuron::testutil::{write_tiny_llama, TinyLlama};

pub fn cortex_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_cortex"))
}

/// A real model that .ci/run fetched from PyPI into models/ (or CORTEX_TEST_MODELS_DIR): a GGUF
/// file, or a directory of safetensors.
pub fn real_model(name: &str) -> PathBuf {
    let path = std::env::var_os("CORTEX_TEST_MODELS_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("models"))
        .join(name);
    let present = if path.is_dir() { path.join("model.safetensors").is_file() } else { path.is_file() };
    assert!(present, "{} is missing: run .ci/run, which fetches it from PyPI", path.display());
    path
}

/// A fresh directory under the target dir, removed at drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> Self {
        let p = std::env::temp_dir().join(format!("cortex-test-{tag}-{}-{}", std::process::id(), rand_suffix()));
        std::fs::create_dir_all(&p).expect("create temp dir");
        Self(p)
    }
    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn rand_suffix() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.subsec_nanos() as u64).unwrap_or(0)
}

/// Writes the default tiny llama as `DIR/NAME.gguf`.
pub fn tiny_model(dir: &Path, name: &str) -> PathBuf {
    let path = dir.join(format!("{name}.gguf"));
    write_tiny_llama(&path, TinyLlama::default()).expect("write tiny model");
    path
}

/// The default tiny llama with room for the tools a request describes in its prompt (its
/// vocabulary spends a token on every byte or two).
pub fn roomy_tiny_model(dir: &Path, name: &str) -> PathBuf {
    let path = dir.join(format!("{name}.gguf"));
    write_tiny_llama(&path, TinyLlama { context: 4096, ..TinyLlama::default() }).expect("write tiny model");
    path
}

/// A generated model big enough that a long generation takes seconds on a CPU, for tests that
/// must act while a stream is still running.
pub fn slow_model(dir: &Path, name: &str) -> PathBuf {
    let path = dir.join(format!("{name}.gguf"));
    let spec = TinyLlama {
        embedding: 512,
        feed_forward: 2048,
        layers: 8,
        heads: 8,
        kv_heads: 4,
        context: 2048,
        ..TinyLlama::default()
    };
    write_tiny_llama(&path, spec).expect("write slow model");
    path
}

pub struct Neuron {
    child: Child,
    pub http: String,
    pub metrics: String,
    /// The mesh's QUIC address, when started with `--name`.
    pub mesh: Option<String>,
    log: Arc<Mutex<String>>,
}

impl Neuron {
    /// Starts `cortex serve` on free ports with `models_dir` and extra arguments, and waits until
    /// it listens.
    pub fn start(models_dir: &Path, extra: &[&str]) -> Self {
        Self::start_with_env(models_dir, extra, &[])
    }

    /// [`Neuron::start`] with extra environment variables.
    pub fn start_with_env(models_dir: &Path, extra: &[&str], env: &[(&str, &str)]) -> Self {
        let mut child = Command::new(cortex_bin())
            .args(["serve", "--listen", "127.0.0.1:0", "--metrics-listen", "127.0.0.1:0", "--models-dir"])
            .arg(models_dir)
            .args(extra)
            .env("RUST_LOG", "info")
            .env("NO_COLOR", "1")
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn cortex serve");
        let stderr = child.stderr.take().expect("stderr");
        let log = Arc::new(Mutex::new(String::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        let (mesh_tx, mesh_rx) = std::sync::mpsc::channel();
        let sink = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some(rest) = line.split("neuron listening ").nth(1) {
                    let field = |k: &str| rest.split_whitespace().find_map(|f| f.strip_prefix(k)).map(str::to_string);
                    let _ = tx.send((field("http="), field("metrics=")));
                }
                if let Some(rest) = line.split("mesh listening ").nth(1) {
                    let _ =
                        mesh_tx.send(rest.split_whitespace().find_map(|f| f.strip_prefix("mesh=")).map(str::to_string));
                }
                let mut l = sink.lock().unwrap();
                l.push_str(&line);
                l.push('\n');
            }
        });
        let (http, metrics) = match rx.recv_timeout(Duration::from_secs(60)) {
            Ok((Some(h), Some(m))) => (h, m),
            _ => {
                let _ = child.kill();
                panic!("neuron did not start:\n{}", log.lock().unwrap());
            }
        };
        let mesh = if extra.contains(&"--name") {
            match mesh_rx.recv_timeout(Duration::from_secs(30)) {
                Ok(Some(addr)) => Some(addr),
                _ => {
                    let _ = child.kill();
                    panic!("the mesh did not start:\n{}", log.lock().unwrap());
                }
            }
        } else {
            None
        };
        Self { child, http: format!("http://{http}"), metrics: format!("http://{metrics}"), mesh, log }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.http)
    }

    pub fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    /// The value of a metric line (`name{labels}` exactly as exposed), summed over matches of
    /// the given label fragments.
    pub fn metric(&self, name: &str, labels: &[&str]) -> f64 {
        let text = reqwest::blocking::get(format!("{}/metrics", self.metrics)).unwrap().text().unwrap();
        text.lines()
            .filter(|l| !l.starts_with('#'))
            .filter(|l| l.starts_with(name) && l[name.len()..].starts_with(['{', ' ']))
            .filter(|l| labels.iter().all(|f| l.contains(f)))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    }

    /// Polls `cond` until it holds or `limit` passes (a liveness check, not a speed assertion).
    pub fn eventually(&self, limit: Duration, mut cond: impl FnMut() -> bool) -> bool {
        let end = Instant::now() + limit;
        while Instant::now() < end {
            if cond() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        false
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGKILL: the node vanishes without leaving the mesh.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Sends SIGTERM and returns the exit status.
    pub fn terminate(mut self) -> std::process::ExitStatus {
        let _ = Command::new("kill").args(["-TERM", &self.child.id().to_string()]).status();
        let end = Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return status;
            }
            if Instant::now() > end {
                let _ = self.child.kill();
                panic!("neuron ignored SIGTERM:\n{}", self.log());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Neuron {
    /// [`Neuron::terminate`], keeping the log (for a test that stops a neuron in another thread).
    pub fn terminate_logged(self) -> (std::process::ExitStatus, String) {
        let log = self.log.clone();
        let status = self.terminate();
        let text = log.lock().unwrap().clone();
        (status, text)
    }
}

impl Drop for Neuron {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!("---- neuron log ----\n{}", self.log());
        }
    }
}

pub fn client() -> reqwest::blocking::Client {
    reqwest::blocking::Client::builder().timeout(Duration::from_secs(120)).build().unwrap()
}

/// POSTs JSON and returns (status, body as JSON or Null).
pub fn post(url: &str, body: &serde_json::Value) -> (u16, serde_json::Value) {
    let resp = client().post(url).json(body).send().expect("request");
    let status = resp.status().as_u16();
    (status, resp.json().unwrap_or(serde_json::Value::Null))
}

/// Reads an SSE response into (event name, data) pairs.
pub fn sse_events(resp: reqwest::blocking::Response) -> Vec<(Option<String>, String)> {
    let text = resp.text().expect("stream body");
    text.split("\n\n")
        .filter(|b| !b.trim().is_empty())
        .map(|block| {
            let mut event = None;
            let mut data = String::new();
            for line in block.lines() {
                if let Some(e) = line.strip_prefix("event: ") {
                    event = Some(e.to_string());
                } else if let Some(d) = line.strip_prefix("data: ") {
                    data.push_str(d);
                }
            }
            (event, data)
        })
        .collect()
}

/// What bash offers on Tab after `words` (the last one is the word being completed), through the
/// registration script `cortex completions bash` prints, against the neuron at `endpoint`.
pub fn bash_complete(endpoint: &str, words: &[&str]) -> Vec<String> {
    let bin_dir = cortex_bin().parent().unwrap().to_path_buf();
    let path = format!("{}:{}", bin_dir.display(), std::env::var("PATH").unwrap_or_default());
    let script = r#"source <(cortex completions bash)
COMP_WORDS=("$@"); COMP_CWORD=$(( $# - 1 )); COMP_TYPE=9
_clap_complete_cortex cortex "${COMP_WORDS[COMP_CWORD]}" "${COMP_WORDS[COMP_CWORD-1]}"
printf '%s\n' "${COMPREPLY[@]}""#;
    let out = Command::new("bash")
        .args(["-c", script, "bash"])
        .args(words)
        .env("PATH", path)
        .env("CORTEX_ENDPOINT", endpoint)
        .env("XDG_CONFIG_HOME", "/nonexistent")
        .output()
        .expect("run bash");
    assert!(out.status.success(), "bash completion failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).lines().filter(|l| !l.is_empty()).map(str::to_string).collect()
}

/// A real terminal: a detached tmux session running one command.
pub struct Tmux(pub String);

impl Tmux {
    pub fn start(name: &str, cmd: &str) -> Self {
        let ok = Command::new("tmux")
            .args(["new-session", "-d", "-s", name, "-x", "200", "-y", "50", cmd])
            .status()
            .unwrap();
        assert!(ok.success(), "tmux is needed for this test (.ci/run installs it)");
        Self(name.to_string())
    }
    pub fn keys(&self, keys: &[&str]) {
        assert!(Command::new("tmux").args(["send-keys", "-t", &self.0]).args(keys).status().unwrap().success());
    }
    pub fn screen(&self) -> String {
        let out = Command::new("tmux").args(["capture-pane", "-p", "-S", "-200", "-t", &self.0]).output().unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
    pub fn wait_for(&self, what: impl Fn(&str) -> bool, limit: Duration) -> String {
        let end = Instant::now() + limit;
        loop {
            let s = self.screen();
            if what(&s) || Instant::now() > end {
                return s;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = Command::new("tmux").args(["kill-session", "-t", &self.0]).status();
    }
}
