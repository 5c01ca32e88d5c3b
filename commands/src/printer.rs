//! Output for people and scripts: data on stdout (a table, or one JSON document with
//! `--json`), everything else on stderr. A reader that closes the pipe early (`| head`) is not
//! an error.

use std::io::Write;

/// Writes `text` to stdout; a closed pipe counts as success.
pub fn emit(text: &str) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|_| out.flush()) {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        r => Ok(r?),
    }
}

/// One pretty JSON document and a newline.
pub fn json(value: &impl serde::Serialize) -> anyhow::Result<()> {
    emit(&(serde_json::to_string_pretty(value)? + "\n"))
}

/// Whether to colour people's output: a terminal, and `NO_COLOR` unset.
pub fn colour(stream_is_terminal: bool) -> bool {
    stream_is_terminal && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
}
