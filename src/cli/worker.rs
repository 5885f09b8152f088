//! The commands driven by the worker's settings: `run`, `check` and `migrate`. Their options are
//! the configuration table (one flag per variable, see [`config::settings_grammar`]), and their
//! `--help` lists every variable with its flags and default.

use super::CommandError;
use super::args;
use crate::check::{self, TargetReport};
use crate::config::{self, Config};
use crate::worker::WorkerHandle;

const RUN_HELP: &str = "Usage: cryptoworker [run] [OPTIONS]

Runs the worker from the environment and flags until SIGINT or SIGTERM.

";

const MIGRATE_HELP: &str = "Usage: cryptoworker migrate [OPTIONS]

Applies the database migrations to the configured database (DATABASE_URL or POSTGRES_DB) and
exits.

";

/// The text of `cryptoworker run|check|migrate --help`: what the command does, then every
/// setting.
pub(super) fn help(command: &str) -> String {
    let about = match command {
        "check" => check::HELP,
        "migrate" => MIGRATE_HELP,
        _ => RUN_HELP,
    };
    format!(
        "{about}{}\n{:<26} print this help\n",
        config::help_text(),
        "  -h, --help"
    )
}

/// The configuration from the environment and `args` of `command`; `None` when `--help` was
/// asked for (and the help was printed).
fn settings(command: &str, args: &[String]) -> Result<Option<Config>, CommandError> {
    let parsed = args::parse(&config::settings_grammar(command), args)?;
    if parsed.help {
        print!("{}", help(command));
        return Ok(None);
    }
    Ok(Some(Config::from_process_flags(&parsed)?))
}

/// `cryptoworker run`: runs the worker until SIGINT or SIGTERM, then stops it gracefully.
pub fn run(args: &[String]) -> Result<(), CommandError> {
    let Some(config) = settings("run", args)? else {
        return Ok(());
    };
    crate::logging::init(config.log_level);
    let handle = WorkerHandle::start(config)
        .map_err(|e| CommandError::failed(format!("cannot start the worker: {e}")))?;
    crate::worker::run_until_signalled(&handle)
        .map_err(|e| CommandError::failed(format!("the reactor failed: {e}")))
}

/// `cryptoworker check`: checks every configured daemon and the database, prints the report;
/// [`CommandError::CheckFailed`] when a check failed.
pub fn check(args: &[String]) -> Result<(), CommandError> {
    let Some(config) = settings("check", args)? else {
        return Ok(());
    };
    let reports = check::check_all(&config);
    print!("{}", check::render(&reports));
    match reports.iter().any(TargetReport::failed) {
        true => Err(CommandError::CheckFailed),
        false => Ok(()),
    }
}

/// `cryptoworker migrate`: applies the migrations to the configured database and exits.
pub fn migrate(args: &[String]) -> Result<(), CommandError> {
    let Some(config) = settings("migrate", args)? else {
        return Ok(());
    };
    crate::logging::init(config.log_level);
    let Some(db) = &config.db else {
        let why = "no database configured (set DATABASE_URL or POSTGRES_DB)";
        return Err(CommandError::NotConfigured(why.into()));
    };
    let applied =
        crate::db::Db::migrate(&db.url).map_err(|e| CommandError::failed(e.to_string()))?;
    match applied.is_empty() {
        true => println!("{}: schema is up to date", db.describe()),
        false => println!("{}: applied {}", db.describe(), applied.join(", ")),
    }
    Ok(())
}
