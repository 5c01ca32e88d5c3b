//! The `cortex` binary: parses the command line, sets up tracing, dispatches to
//! cortex-commands, and maps errors to exit codes (0 ok, 1 fixable, 2 internal).

mod cli;

use clap::Parser;
use cortex_commands::error::{classify, ExitCode};

fn main() -> std::process::ExitCode {
    // `COMPLETE=bash cortex` prints the shell registration; with it set, the shell's Tab calls land
    // here, are answered from the clap definitions (and the fleet, for model names), and exit.
    clap_complete::CompleteEnv::with_factory(<cli::Cli as clap::CommandFactory>::command)
        .completer("cortex")
        .complete();
    let cli = match cli::Cli::try_parse() {
        Ok(cli) => cli,
        // Help and version exit 0; a usage mistake is the user's to fix (1), not clap's usual 2.
        Err(e) => {
            let _ = e.print();
            return std::process::ExitCode::from(if e.use_stderr() { ExitCode::User as u8 } else { 0 });
        }
    };
    cli::init_tracing(&cli);
    let result = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt.block_on(cli::dispatch(cli)),
        Err(e) => Err(anyhow::Error::new(e).context("starting the async runtime")),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            let code = classify(&e);
            if code != ExitCode::Ok {
                eprintln!("error: {e:#}");
            }
            std::process::ExitCode::from(code as u8)
        }
    }
}
