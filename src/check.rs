//! `cryptoworker check`: a one-shot diagnosis of everything the worker depends on (README.md,
//! "The daemon side"). For every configured daemon it tries, in order, TCP reachability, `GET
//! /spec`, the credentials, the WebSocket upgrade to `/ws` (with a ping), and `getinfo` (height
//! and sync); for the database, when persistence is on, a connection, `SELECT 1`, the server
//! version and whether the migrations were applied. It prints one readable line per target, a
//! hint naming the variables to check under each failure, and exits 1 when anything failed.
//!
//! This is a short-lived CLI command, not the reactor: it uses plain blocking sockets with
//! connect, read and write timeouts (`DAEMON_RPC_TIMEOUT_S`), resolves host names itself, and
//! checks the targets in parallel, one thread each. HTTP is built and parsed by the project's
//! sans-io pieces in [`crate::http`]; nothing here parses HTTP itself.
//!
//! Invariants:
//! * no step waits longer than the timeout (a target has a few steps, so a few timeouts at most),
//!   and every read is bounded, so a hostile or silent peer yields a failure line, never a hang,
//!   a panic or unbounded memory;
//! * the report never contains a password: daemons are shown by URL, the database by
//!   [`DbConfig::describe`](crate::config::DbConfig::describe);
//! * a step that makes the following ones pointless (unreachable, credentials refused, no answer
//!   in time) ends that target's checks; other failures let the remaining steps run, so one run
//!   shows every problem it can.

mod daemon;
mod database;
#[cfg(test)]
mod loopback_tests;
mod net;
#[cfg(test)]
mod tests;

pub use daemon::check_daemon;
pub use database::check_database;

use crate::config::Config;
use std::time::Duration;

/// Which part of a target a [`CheckLine`] is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Host name resolution and the TCP connection.
    Tcp,
    /// `GET /spec` answered with a valid Bitcart error table.
    Spec,
    /// The daemon accepted `{COIN}_LOGIN` / `{COIN}_PASSWORD`.
    Auth,
    /// The WebSocket upgrade to `/ws`, and a ping answered on it.
    WebSocket,
    /// `getinfo`: the block height, network connection and sync state.
    Height,
    /// Connecting to PostgreSQL and running `SELECT 1`.
    Database,
    /// The PostgreSQL server version.
    Version,
    /// Whether the worker's migrations are recorded in the database.
    Migrations,
    /// Whether a running worker holds the database's writer lock (shown only when one does).
    WriterLock,
}

/// The result of one step.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Passed; the text is what the report shows, e.g. `spec 4.5.0`.
    Ok(String),
    /// Passed with a caveat worth reading (not counted as a failure).
    Warning {
        /// What the report shows inline, e.g. `height 800100 (not synchronized)`.
        detail: String,
        /// The caveat, printed on its own line.
        note: String,
    },
    /// Not checked, and not a failure (persistence off).
    Skipped(String),
    /// Failed: what happened, and what to check (naming the variables).
    Failed {
        /// What went wrong, e.g. `connection refused`.
        message: String,
        /// What to check, e.g. `is the ETH daemon running? check ETH_HOST and ETH_PORT`.
        hint: String,
    },
}

/// One step's outcome.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckLine {
    /// The step this line is about.
    pub step: Step,
    /// How it went.
    pub outcome: Outcome,
}

impl CheckLine {
    /// A passed step.
    pub fn ok(step: Step, detail: impl Into<String>) -> CheckLine {
        CheckLine {
            step,
            outcome: Outcome::Ok(detail.into()),
        }
    }

    /// A failed step with its hint.
    pub fn failed(step: Step, message: impl Into<String>, hint: impl Into<String>) -> CheckLine {
        CheckLine {
            step,
            outcome: Outcome::Failed {
                message: message.into(),
                hint: hint.into(),
            },
        }
    }

    /// A passed step with a caveat.
    pub fn warning(step: Step, detail: impl Into<String>, note: impl Into<String>) -> CheckLine {
        CheckLine {
            step,
            outcome: Outcome::Warning {
                detail: detail.into(),
                note: note.into(),
            },
        }
    }

    /// Whether this step failed.
    pub fn is_failed(&self) -> bool {
        matches!(self.outcome, Outcome::Failed { .. })
    }
}

/// Every line about one target (a daemon or the database).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TargetReport {
    /// The target's name: the coin symbol, or `database`.
    pub name: String,
    /// Where it is, without secrets: `ws://host:port`, or the database description.
    pub location: String,
    /// The steps in the order they ran.
    pub lines: Vec<CheckLine>,
}

impl TargetReport {
    /// Whether any step failed.
    pub fn failed(&self) -> bool {
        self.lines.iter().any(CheckLine::is_failed)
    }

    /// Whether nothing was checked (every line is [`Outcome::Skipped`]).
    pub fn skipped(&self) -> bool {
        self.lines
            .iter()
            .all(|l| matches!(l.outcome, Outcome::Skipped(_)))
    }
}

/// Renders the whole report: a title, one line per target (with hint and note lines under it)
/// and a summary line. Skipped targets are shown but not counted.
pub fn render(reports: &[TargetReport]) -> String {
    let mut out = String::from("cryptoworker check\n");
    for report in reports {
        render_target(report, &mut out);
    }
    let checked = reports.iter().filter(|r| !r.skipped()).count();
    let failed = reports.iter().filter(|r| r.failed()).count();
    let summary = match (failed, checked) {
        (_, 0) => "nothing to check".to_string(),
        (0, 1) => "the check passed".to_string(),
        (_, 1) => "the check failed".to_string(),
        (0, n) => format!("all {n} checks passed"),
        (f, n) => format!("{f} of {n} checks failed"),
    };
    out.push_str(&summary);
    out.push('\n');
    out
}

/// One target: `  NAME  LOCATION  item · item · FAILED: ...`, then its hints and notes.
fn render_target(report: &TargetReport, out: &mut String) {
    let mut items = Vec::new();
    let mut notes = Vec::new();
    for line in &report.lines {
        match &line.outcome {
            Outcome::Ok(detail) | Outcome::Skipped(detail) => items.push(detail.clone()),
            Outcome::Warning { detail, note } => {
                items.push(detail.clone());
                notes.push(format!("note: {note}"));
            }
            Outcome::Failed { message, hint } => {
                items.push(format!("FAILED: {message}"));
                notes.push(format!("hint: {hint}"));
            }
        }
    }
    out.push_str(&format!("  {}  ", report.name));
    if !report.location.is_empty() {
        out.push_str(&format!("{}  ", report.location));
    }
    out.push_str(&items.join(" · "));
    out.push('\n');
    let indent = " ".repeat(report.name.chars().count() + 4);
    for note in notes {
        out.push_str(&format!("{indent}{note}\n"));
    }
}

/// The `--help` text about this command, printed before the configuration help.
pub(crate) const HELP: &str = "Usage: cryptoworker check [FLAGS]

Checks the database and every configured daemon (TCP, GET /spec, credentials, WebSocket upgrade
to /ws, getinfo height and sync), prints a report with a hint per failure, and exits 0 when all
is well, 1 when a check failed, 2 when the configuration is invalid. Each step waits at most
DAEMON_RPC_TIMEOUT_S seconds.

";

/// Runs every check for `config`, daemons and database in parallel; reports keep the order of
/// `config.coins`, the database last.
pub fn check_all(config: &Config) -> Vec<TargetReport> {
    let timeout = config.daemon_rpc_timeout;
    std::thread::scope(|scope| {
        let daemons: Vec<_> = config
            .coins
            .iter()
            .map(|coin| scope.spawn(move || check_daemon(coin, timeout)))
            .collect();
        let db = check_database(config.db.as_ref(), timeout);
        let mut reports: Vec<TargetReport> = daemons
            .into_iter()
            .zip(&config.coins)
            .map(|(handle, coin)| {
                handle.join().unwrap_or_else(|_| TargetReport {
                    name: coin.coin.clone(),
                    location: daemon::ws_url(coin),
                    lines: vec![CheckLine::failed(
                        Step::Tcp,
                        "the check itself crashed",
                        "please report this as a bug",
                    )],
                })
            })
            .collect();
        reports.push(db);
        reports
    })
}

/// `n` seconds (or milliseconds below one second) for messages.
fn seconds(d: Duration) -> String {
    match d.as_secs() {
        0 => format!("{} ms", d.as_millis()),
        1 => "1 second".to_string(),
        n => format!("{n} seconds"),
    }
}
