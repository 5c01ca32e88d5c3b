//! Exit codes: 0 ok, 1 a failure the user can fix (bad input, unknown model, nothing
//! listening, refused key), 2 an internal error. A closed stdout pipe is success.

use std::fmt;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExitCode {
    Ok = 0,
    User = 1,
    Internal = 2,
}

/// A failure the user can fix; its message says how.
#[derive(Debug)]
pub struct UserError(pub String);

impl fmt::Display for UserError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for UserError {}

/// `Err(UserError)` as an anyhow error.
pub fn user<T>(msg: impl Into<String>) -> anyhow::Result<T> {
    Err(UserError(msg.into()).into())
}

/// The exit code an error maps to.
pub fn classify(err: &anyhow::Error) -> ExitCode {
    for cause in err.chain() {
        if cause.downcast_ref::<UserError>().is_some() {
            return ExitCode::User;
        }
        if let Some(io) = cause.downcast_ref::<std::io::Error>() {
            if io.kind() == std::io::ErrorKind::BrokenPipe {
                return ExitCode::Ok;
            }
        }
    }
    ExitCode::Internal
}
