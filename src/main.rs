//! The `cryptoworker` binary: command dispatch, logging, signals and exit codes. Everything
//! else lives in the library.

use cryptoworker::cli::{self, Command};
use cryptoworker::config::{self, Config};
use cryptoworker::worker::WorkerHandle;
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
    match command {
        Command::Help => {
            print!("{}", cli::usage());
            ExitCode::SUCCESS
        }
        Command::Version => {
            println!("cryptoworker {}", env!("CARGO_PKG_VERSION"));
            ExitCode::SUCCESS
        }
        Command::Run => run(&rest),
        Command::Client => cryptoworker::client_cli::run(&rest),
        Command::Demo => cryptoworker::demo::run(&rest),
        Command::Simulate => {
            cryptoworker::logging::init(cryptoworker::logging::level_from_env());
            cryptoworker::simulate::run_cli(&rest)
        }
        Command::Check | Command::Migrate => {
            eprintln!("cryptoworker: `{}` is being wired in", command.name());
            ExitCode::from(2)
        }
    }
}

/// Loads the configuration or explains what is wrong with it (exit 2).
pub fn load_config(args: &[String]) -> Result<Config, ExitCode> {
    if cli::wants_help(args) {
        print!("{}", config::help_text());
        return Err(ExitCode::SUCCESS);
    }
    Config::from_process(args).map_err(|e| {
        eprintln!("cryptoworker: {e}");
        ExitCode::from(2)
    })
}

fn run(args: &[String]) -> ExitCode {
    let config = match load_config(args) {
        Ok(c) => c,
        Err(code) => return code,
    };
    cryptoworker::logging::init(config.log_level);
    match WorkerHandle::start(config) {
        Ok(handle) => cryptoworker::worker::run_until_signalled(&handle),
        Err(e) => {
            log::error!("[WORKER] Cannot start: {e}");
            ExitCode::from(1)
        }
    }
}
