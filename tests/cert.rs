//! `cortex init` and `cortex cert issue` through the real binary: the files they write, what
//! they print (paths, never keys) and their exit codes for mistakes.

mod common;

use std::path::Path;
use std::process::{Command, Output};

use common::TempDir;

fn cortex(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_cortex"))
        .args(args)
        .env("NO_COLOR", "1")
        .env_remove("CORTEX_HOME")
        .output()
        .expect("run cortex")
}

fn ok(o: Output) -> String {
    assert!(o.status.success(), "failed: {}", String::from_utf8_lossy(&o.stderr));
    String::from_utf8(o.stdout).expect("utf-8 stdout")
}

fn lines(dir: &Path, names: &[&str]) -> Vec<String> {
    names.iter().map(|n| dir.join(n).display().to_string()).collect()
}

#[test]
fn init_and_issue_write_the_files_and_print_only_their_paths() {
    let tmp = TempDir::new("cert");
    let dir = tmp.path().join("tls");
    let d = dir.to_str().unwrap();

    let out = ok(cortex(&["init", "--dir", d]));
    assert_eq!(out.lines().collect::<Vec<_>>(), lines(&dir, &["ca.crt", "ca.key"]));

    let out = ok(cortex(&["cert", "issue", "node-a", "--dir", d, "--dns", "a.example", "--ip", "127.0.0.1"]));
    assert_eq!(out.lines().collect::<Vec<_>>(), lines(&dir, &["node-a.crt", "node-a.key"]));
    assert!(!out.contains("PRIVATE KEY"), "{out}");

    for (file, marker) in [
        ("ca.crt", "CERTIFICATE"),
        ("ca.key", "PRIVATE KEY"),
        ("node-a.crt", "CERTIFICATE"),
        ("node-a.key", "PRIVATE KEY"),
    ] {
        let text = std::fs::read_to_string(dir.join(file)).unwrap();
        assert!(text.contains(&format!("-----BEGIN {marker}-----")), "{file}");
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        for key in ["ca.key", "node-a.key"] {
            let mode = std::fs::metadata(dir.join(key)).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600, "{key}");
        }
    }
}

#[test]
fn mistakes_exit_1_and_change_nothing() {
    let tmp = TempDir::new("cert-mistakes");
    let d = tmp.path().to_str().unwrap();

    // No CA yet.
    let o = cortex(&["cert", "issue", "node-a", "--dir", d]);
    assert_eq!(o.status.code(), Some(1), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(String::from_utf8_lossy(&o.stderr).contains("cortex init"));

    ok(cortex(&["init", "--dir", d]));
    let ca = std::fs::read(tmp.path().join("ca.crt")).unwrap();

    let o = cortex(&["cert", "issue", "Bad_Name", "--dir", d]);
    assert_eq!(o.status.code(), Some(1), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(o.stdout.is_empty());
    assert!(!tmp.path().join("Bad_Name.key").exists());

    let o = cortex(&["init", "--dir", d]);
    assert_eq!(o.status.code(), Some(1), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(String::from_utf8_lossy(&o.stderr).contains("already exists"));
    assert_eq!(std::fs::read(tmp.path().join("ca.crt")).unwrap(), ca, "the CA is untouched");

    ok(cortex(&["init", "--dir", d, "--force"]));
    assert_ne!(std::fs::read(tmp.path().join("ca.crt")).unwrap(), ca, "--force replaces the CA");
}
