//! The `cryptoworker` binary: splits off the command, runs it, and decides the exit status.
//! Everything else lives in the library.
//!
//! Exit status, for every command:
//!
//! | status | meaning |
//! |---|---|
//! | 0 | success, `--help`, `--version`; a worker stopped by SIGINT/SIGTERM |
//! | 1 | the command could not do its work (port in use, reactor failed, migration failed, connection lost), or `check` found a failure |
//! | 2 | usage error (unknown command or option, missing or bad value), invalid configuration, or `migrate` without a database |

use cryptoworker::cli::{self, CommandError};
use std::process::ExitCode;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (command, rest) = match cli::split(&args) {
        Ok(split) => split,
        Err(e) => {
            eprintln!("cryptoworker: {e}");
            return ExitCode::from(2);
        }
    };
    match cli::run(command, &rest) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            report(command.name(), &e);
            ExitCode::from(exit_status(&e))
        }
    }
}

/// The exit status of a failed command (see the table above).
fn exit_status(e: &CommandError) -> u8 {
    match e {
        CommandError::CheckFailed | CommandError::Failed(_) => 1,
        CommandError::Usage(_) | CommandError::Config(_) | CommandError::NotConfigured(_) => 2,
    }
}

/// Prints why the command failed, unless its own output already said it (`check`'s report).
fn report(command: &str, e: &CommandError) {
    match e {
        CommandError::CheckFailed => {}
        CommandError::Usage(_) => eprintln!("cryptoworker: {e}"),
        _ => eprintln!("cryptoworker {command}: {e}"),
    }
}
