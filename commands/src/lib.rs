//! cortex-commands: one module per `cortex` subcommand, plus what they share (the HTTP client
//! that finds a neuron, the error type that maps to exit codes).

pub mod admin;
pub mod bench;
pub mod cert;
pub mod chat;
pub mod client;
pub mod complete;
pub mod debug;
pub mod devices;
pub mod embed;
pub mod error;
pub mod models;
pub mod printer;
pub mod pull;
pub mod serve;
pub mod status;

pub use error::{ExitCode, UserError};
