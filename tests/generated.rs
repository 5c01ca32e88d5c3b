//! completions/ and man/ are generated from the clap definitions and committed; this fails
//! when they are stale (run scripts/regen).

mod common;

use std::path::Path;
use std::process::Command;

fn cortex(args: &[&str]) -> Vec<u8> {
    let out = Command::new(common::cortex_bin()).args(args).output().unwrap();
    assert!(out.status.success(), "cortex {args:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    out.stdout
}

#[test]
fn completions_are_fresh() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    for (shell, file) in [
        ("bash", "cortex.bash"),
        ("zsh", "_cortex"),
        ("fish", "cortex.fish"),
        ("elvish", "cortex.elv"),
        ("powershell", "_cortex.ps1"),
    ] {
        let committed = std::fs::read(root.join("completions").join(file)).unwrap_or_default();
        assert!(committed == cortex(&["completions", shell]), "completions/{file} is stale: run scripts/regen");
    }
}

#[test]
fn man_pages_are_fresh() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let dir = common::TempDir::new("man");
    cortex(&["man", "--dir", dir.path().to_str().unwrap()]);
    let mut fresh: Vec<String> =
        std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
    fresh.sort();
    let mut committed: Vec<String> =
        std::fs::read_dir(root.join("man")).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
    committed.sort();
    assert_eq!(fresh, committed, "man/ has other pages than the CLI: run scripts/regen");
    assert!(fresh.contains(&"cortex-serve.1".to_string()) && fresh.contains(&"cortex-chat.1".to_string()));
    for page in fresh {
        let a = std::fs::read(dir.path().join(&page)).unwrap();
        let b = std::fs::read(root.join("man").join(&page)).unwrap();
        assert!(a == b, "man/{page} is stale: run scripts/regen");
    }
}

#[test]
fn help_reads_like_a_map() {
    let help = String::from_utf8(cortex(&["--help"])).unwrap();
    for cmd in
        ["serve", "chat", "status", "models", "load", "unload", "pin", "unpin", "pull", "bench", "completions", "man"]
    {
        assert!(help.contains(&format!("  {cmd} ")), "`cortex --help` does not list {cmd}:\n{help}");
    }
}
