//! How a command fails. The binary's `main` turns each kind into the process exit status (see
//! its table); commands only say what happened.

use super::args::ArgError;
use crate::config::ConfigError;
use std::fmt;

/// A command's failure.
#[derive(Debug)]
pub enum CommandError {
    /// The command line is refused (unknown option, missing or bad value).
    Usage(ArgError),
    /// The configuration (environment and flags) is invalid.
    Config(ConfigError),
    /// Something the command needs is not configured (e.g. `migrate` without a database).
    NotConfigured(String),
    /// `check` ran and a check failed; the report, already printed, says which.
    CheckFailed,
    /// The command could not do its work (a port in use, a connection lost, a failed migration).
    Failed(String),
}

impl CommandError {
    /// A [`CommandError::Failed`] with `message`.
    pub fn failed(message: impl Into<String>) -> CommandError {
        CommandError::Failed(message.into())
    }
}

impl fmt::Display for CommandError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CommandError::Usage(e) => e.fmt(f),
            CommandError::Config(e) => e.fmt(f),
            CommandError::NotConfigured(message) | CommandError::Failed(message) => {
                f.write_str(message)
            }
            CommandError::CheckFailed => f.write_str("a check failed"),
        }
    }
}

impl std::error::Error for CommandError {}

impl From<ArgError> for CommandError {
    fn from(e: ArgError) -> CommandError {
        CommandError::Usage(e)
    }
}

impl From<ConfigError> for CommandError {
    fn from(e: ConfigError) -> CommandError {
        CommandError::Config(e)
    }
}
