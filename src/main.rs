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
        Command::Check => cryptoworker::check::run(&rest),
        Command::Migrate => migrate(&rest),
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

/// `cryptoworker migrate`: applies the migrations to the configured database and exits.
fn migrate(args: &[String]) -> ExitCode {
    let config = match load_config(args) {
        Ok(c) => c,
        Err(code) => return code,
    };
    cryptoworker::logging::init(config.log_level);
    let Some(db) = &config.db else {
        eprintln!("cryptoworker migrate: no database configured (set DATABASE_URL or POSTGRES_DB)");
        return ExitCode::from(2);
    };
    match cryptoworker::db::Db::migrate(&db.url) {
        Ok(applied) if applied.is_empty() => {
            println!("{}: schema is up to date", db.describe());
            ExitCode::SUCCESS
        }
        Ok(applied) => {
            println!("{}: applied {}", db.describe(), applied.join(", "));
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("cryptoworker migrate: {e}");
            ExitCode::from(1)
        }
    }
}
