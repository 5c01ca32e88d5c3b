//! The clap definitions: the one source of `--help`, `completions/` and `man/`.

use std::path::PathBuf;

use clap::{CommandFactory, Parser, Subcommand};
use cortex_commands::{admin, bench, cert, chat, debug, devices, embed, models, pull, serve, status};

/// cortex turns GPU and CPU hosts into one LLM service with OpenAI- and Anthropic-compatible
/// APIs.
#[derive(Debug, Parser)]
#[command(name = "cortex", version, propagate_version = true, max_term_width = 100)]
#[command(
    after_help = "Start a neuron with `cortex serve`, then talk to it with `cortex chat helexa/small`.\nExit codes: 0 ok, 1 a failure you can fix, 2 an internal error."
)]
pub struct Cli {
    /// More log output (-v info, -vv debug); RUST_LOG overrides
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    pub verbose: u8,
    #[command(subcommand)]
    pub command: Command,
}

/// The engine's environment variables, listed under `cortex serve --help`.
const SERVE_ENV: &str = "\
Environment (each overrides its setting in cortex.toml's [engine]):
  CORTEX_ENGINE=auto|batched|candle  Which code runs models: auto picks cortex's CPU decoder on the
                                     CPU and the batched decoder on a GPU where they apply
  CORTEX_DEVICE=cpu|cuda|cuda:N      Where models compute [default: the first GPU of a CUDA build,
                                     else the CPU]
  CORTEX_DECODE_BITS=16|8            Activation bits of the CPU kernels in decode steps
  CORTEX_PREFILL_BITS=16|8           The same for prompts
  CORTEX_STREAM_INTERVAL_MS=16       A stream's text goes out at most this often; faster tokens
                                     share an event (0: every token alone)
  CANDLE_DEQUANTIZE_ALL=1            Widen every matrix to f32 at load (the reference for logits)";

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run a neuron: the HTTP API on :31313 and metrics on :31314
    #[command(after_help = SERVE_ENV)]
    Serve(serve::ServeArgs),
    /// Ask a model something, or chat interactively
    Chat(chat::ChatArgs),
    /// Show the neuron's devices, memory budget and models
    Status(status::StatusArgs),
    /// List the models a neuron serves (aliases, state, size)
    Models(models::ModelsArgs),
    /// Embed texts with an embedding model: one JSON line per text
    Embed(embed::EmbedArgs),
    /// Load a model now (instead of on its first request)
    Load(admin::AdminArgs),
    /// Unload a model (refused while it serves requests)
    Unload(admin::AdminArgs),
    /// Keep a model loaded: never evicted, never unloaded when idle
    Pin(admin::AdminArgs),
    /// Let a pinned model be evicted and idle-unloaded again
    Unpin(admin::AdminArgs),
    /// Download a model into the models directory
    Pull(pull::PullArgs),
    /// Make the fleet CA that signs every node's certificate
    Init(cert::InitArgs),
    /// Sign node certificates with the fleet CA
    Cert {
        #[command(subcommand)]
        command: cert::CertCommand,
    },
    /// Load-test a neuron: TTFT, inter-token latency, tok/s at several concurrency levels
    Bench(bench::BenchArgs),
    /// Show this host's RAM and GPUs and the device models would run on (no neuron needed)
    Devices(devices::DevicesArgs),
    /// Engine checks for developers (logits on a chosen device)
    #[command(hide = true)]
    Debug {
        #[command(subcommand)]
        command: debug::DebugCommand,
    },
    /// Print a shell completion script
    Completions {
        /// Shell to complete for
        shell: clap_complete::Shell,
    },
    /// Write man pages, one per subcommand
    Man {
        /// Directory to write the pages into
        #[arg(long, value_name = "DIR", default_value = "man")]
        dir: PathBuf,
    },
}

pub fn init_tracing(cli: &Cli) {
    // A neuron logs its work; a client command only says what went wrong.
    let base = match (&cli.command, cli.verbose) {
        (_, 2..) => "debug",
        (Command::Serve(_), _) | (_, 1) => "info",
        _ => "warn",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(base));
    use std::io::IsTerminal;
    let colour = cortex_commands::printer::colour(std::io::stderr().is_terminal());
    tracing_subscriber::fmt().with_env_filter(filter).with_ansi(colour).with_writer(std::io::stderr).init();
}

pub async fn dispatch(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Serve(args) => serve::run(args).await,
        Command::Chat(args) => chat::run(args).await,
        Command::Models(args) => models::run(args).await,
        Command::Embed(args) => embed::run(args).await,
        Command::Status(args) => status::run(args).await,
        Command::Load(args) => admin::run("load", args).await,
        Command::Unload(args) => admin::run("unload", args).await,
        Command::Pin(args) => admin::run("pin", args).await,
        Command::Unpin(args) => admin::run("unpin", args).await,
        Command::Pull(args) => tokio::task::spawn_blocking(move || pull::run(args)).await?,
        Command::Init(args) => cert::init(args),
        Command::Cert { command } => cert::run(command),
        Command::Bench(args) => bench::run(args).await,
        Command::Devices(args) => tokio::task::spawn_blocking(move || devices::run(args)).await?,
        Command::Debug { command } => tokio::task::spawn_blocking(move || debug::run(command)).await?,
        Command::Completions { shell } => {
            let mut buf = Vec::new();
            cortex_commands::complete::registration(shell, &mut buf)?;
            cortex_commands::printer::emit(&String::from_utf8_lossy(&buf))
        }
        Command::Man { dir } => write_man(&dir),
    }
}

fn write_man(dir: &std::path::Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir)?;
    clap_mangen::generate_to(Cli::command(), dir)?;
    Ok(())
}
