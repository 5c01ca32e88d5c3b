//! `cortex pull`: fetch a model into the models directory (see cortex_neuron's
//! lifecycle::download for where from).

use std::path::PathBuf;

use cortex_neuron::lifecycle::download::{pull, DownloadError};

#[derive(Debug, Clone, clap::Args)]
pub struct PullArgs {
    /// Model id or alias (e.g. helexa/small), a hub repository (ORG/NAME) of safetensors, or a
    /// repository with --file
    #[arg(add = clap_complete::engine::ArgValueCompleter::new(crate::complete::models))]
    pub model: String,
    /// File to fetch from the repository (GGUF); catalogue models need none
    #[arg(long, value_name = "NAME")]
    pub file: Option<String>,
    /// Where to put it [default: $CORTEX_HOME/models or the data directory]
    #[arg(long, value_name = "DIR")]
    pub models_dir: Option<PathBuf>,
    /// No progress or status lines on stderr
    #[arg(long, short = 'q')]
    pub quiet: bool,
}

/// Runs a pull, mapping failures to exit codes: a bad name, no route or a broken download (run it
/// again) is the user's to fix.
pub fn fetch(model: &str, file: Option<&str>, dir: &std::path::Path, quiet: bool) -> anyhow::Result<PathBuf> {
    pull(model, file, dir, quiet).map_err(|e| match e {
        DownloadError::Unknown(m) | DownloadError::Unavailable(m) | DownloadError::Invalid(m) => {
            crate::UserError(m).into()
        }
        other => anyhow::Error::new(other),
    })
}

pub fn run(args: PullArgs) -> anyhow::Result<()> {
    let dir = args.models_dir.clone().unwrap_or_else(cortex_neuron::config::default_models_dir);
    let path = fetch(&args.model, args.file.as_deref(), &dir, args.quiet)?;
    crate::printer::emit(&format!("{}\n", path.display()))
}
