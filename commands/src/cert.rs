//! `cortex init` and `cortex cert issue`: make the fleet CA, and sign node certificates with
//! it. Prints the files written, one per line; key material never reaches the terminal.

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use cortex_neuron::config::default_tls_dir;
use cortex_neuron::mesh::identity::{self, IdentityError, DEFAULT_CERT_DAYS};

#[derive(Debug, Clone, clap::Args)]
pub struct InitArgs {
    /// Directory for ca.crt and ca.key [default: $CORTEX_HOME/tls or the data directory]
    #[arg(long, value_name = "DIR")]
    pub dir: Option<PathBuf>,
    /// Replace an existing CA; certificates it signed are no longer trusted
    #[arg(long)]
    pub force: bool,
}

#[derive(Debug, Clone, clap::Subcommand)]
pub enum CertCommand {
    /// Sign a certificate for a node with the fleet CA (writes NAME.crt and NAME.key)
    Issue(IssueArgs),
}

#[derive(Debug, Clone, clap::Args)]
pub struct IssueArgs {
    /// The node's name: lowercase letters, digits, '-' and '.'; peers know the node by it
    #[arg(value_name = "NAME")]
    pub name: String,
    /// Directory with the fleet CA; the node's files go there too [default: $CORTEX_HOME/tls or the data directory]
    #[arg(long, value_name = "DIR")]
    pub dir: Option<PathBuf>,
    /// Another DNS name the node is reached by (repeatable)
    #[arg(long = "dns", value_name = "NAME")]
    pub dns: Vec<String>,
    /// An IP address the node is reached at (repeatable)
    #[arg(long = "ip", value_name = "ADDR")]
    pub ips: Vec<IpAddr>,
    /// Days the certificate stays valid
    #[arg(long, value_name = "N", default_value_t = DEFAULT_CERT_DAYS,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub days: u32,
}

/// `cortex init`.
pub fn init(args: InitArgs) -> anyhow::Result<()> {
    let dir = args.dir.unwrap_or_else(default_tls_dir);
    identity::init_ca(&dir, args.force).map_err(classify)?;
    let (cert, key) = identity::ca_files(&dir);
    print_paths(&[&cert, &key])
}

/// `cortex cert ...`.
pub fn run(command: CertCommand) -> anyhow::Result<()> {
    match command {
        CertCommand::Issue(args) => {
            let dir = args.dir.unwrap_or_else(default_tls_dir);
            identity::issue(&dir, &args.name, &args.dns, &args.ips, args.days).map_err(classify)?;
            let (cert, key) = identity::node_files(&dir, &args.name);
            print_paths(&[&cert, &key])
        }
    }
}

fn print_paths(paths: &[&Path]) -> anyhow::Result<()> {
    let text: String = paths.iter().map(|p| format!("{}\n", p.display())).collect();
    crate::printer::emit(&text)
}

/// Mistakes the user can fix exit 1; a failure to generate keys is internal (exit 2).
fn classify(err: IdentityError) -> anyhow::Error {
    match err {
        IdentityError::InvalidName { .. }
        | IdentityError::CaExists { .. }
        | IdentityError::MissingCa { .. }
        | IdentityError::InvalidDays
        | IdentityError::Io { .. }
        | IdentityError::Pem { .. }
        | IdentityError::NameMismatch { .. } => crate::UserError(err.to_string()).into(),
        IdentityError::Generate(_) => anyhow::Error::new(err),
    }
}
