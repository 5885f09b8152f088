//! The database half of `check`: when persistence is configured, connect to PostgreSQL (with
//! a connect timeout), run `SELECT 1`, read the server version and whether the worker's
//! migrations are recorded (`cryptoworker_migrations`, the table of `src/db/migrate.rs`).
//!
//! Invariants: the password never reaches the report (the target is shown by
//! [`DbConfig::describe`]; driver errors carry no connection string); the whole check runs on a
//! helper thread and is abandoned after twice the timeout, because the driver's connect timeout
//! covers only the socket connect, not a server that accepts and then stays silent.

use super::{CheckLine, Step, TargetReport, seconds};
use crate::config::DbConfig;
use crate::db::WRITER_LOCK_KEY;
use crate::db::migrate::{MIGRATIONS, Migration};
use postgres::NoTls;
use std::str::FromStr;
use std::sync::mpsc;
use std::time::Duration;

/// The table in which `src/db/migrate.rs` records applied migrations.
pub(super) const MIGRATIONS_TABLE: &str = "cryptoworker_migrations";

/// Checks the database, or reports that persistence is off (a skipped, not a failed, check).
pub fn check_database(db: Option<&DbConfig>, timeout: Duration) -> TargetReport {
    let Some(db) = db else {
        return TargetReport {
            name: "database".into(),
            location: String::new(),
            lines: vec![CheckLine {
                step: Step::Database,
                outcome: super::Outcome::Skipped(
                    "off: persistence is not configured (set DATABASE_URL or POSTGRES_DB to \
                     enable it)"
                        .into(),
                ),
            }],
        };
    };
    let hints = DbHints::for_config(db);
    let (tx, rx) = mpsc::channel();
    let url = db.url.clone();
    let spawned = std::thread::Builder::new()
        .name("check-db".into())
        .spawn(move || {
            let _ = tx.send(probe(&url, timeout, hints));
        });
    let lines = match spawned {
        Err(e) => vec![CheckLine::failed(
            Step::Database,
            format!("cannot start the check thread: {e}"),
            "the machine is out of resources",
        )],
        Ok(_) => rx.recv_timeout(timeout * 2).unwrap_or_else(|_| {
            vec![CheckLine::failed(
                Step::Database,
                format!("no answer within {}", seconds(timeout * 2)),
                hints.silent(),
            )]
        }),
    };
    TargetReport {
        name: "database".into(),
        location: db.describe(),
        lines,
    }
}

/// Which variables configured the database, for the hints.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct DbHints {
    /// `DATABASE_URL` (a `postgres://` URL) rather than `DB_*` / `POSTGRES_DB`.
    pub(super) url: bool,
}

impl DbHints {
    /// `DATABASE_URL` values are URLs; the `DB_*` variables build a key/value string.
    pub(super) fn for_config(db: &DbConfig) -> DbHints {
        DbHints {
            url: db.url.starts_with("postgres://") || db.url.starts_with("postgresql://"),
        }
    }

    fn pick(self, url: &'static str, discrete: &'static str) -> &'static str {
        if self.url { url } else { discrete }
    }

    /// The server could not be reached.
    pub(super) fn unreachable(self) -> String {
        format!(
            "is PostgreSQL running? check {}",
            self.pick("the host and port in DATABASE_URL", "DB_HOST and DB_PORT")
        )
    }

    /// The server refused the user or password.
    pub(super) fn credentials(self) -> String {
        format!(
            "check {}",
            self.pick(
                "the user and password in DATABASE_URL",
                "DB_USER and DB_PASS"
            )
        )
    }

    /// The database does not exist.
    pub(super) fn no_database(self) -> String {
        format!(
            "create the database, or check {}",
            self.pick("the database name in DATABASE_URL", "POSTGRES_DB")
        )
    }

    /// Connected (or connecting) but no answer in time.
    pub(super) fn silent(self) -> String {
        format!(
            "the server accepts connections but does not answer like PostgreSQL: check {}",
            self.pick("the host and port in DATABASE_URL", "DB_HOST and DB_PORT")
        )
    }
}

/// Connects, checks and returns the lines (runs on the helper thread).
fn probe(url: &str, timeout: Duration, hints: DbHints) -> Vec<CheckLine> {
    let mut config = match postgres::Config::from_str(url) {
        Ok(c) => c,
        Err(_) => {
            let hint = hints.pick("DATABASE_URL", "DB_HOST, DB_PORT, DB_USER and POSTGRES_DB");
            let hint = format!("check {hint}");
            return vec![CheckLine::failed(
                Step::Database,
                "invalid connection string",
                hint,
            )];
        }
    };
    config.connect_timeout(timeout);
    let mut client = match config.connect(NoTls) {
        Ok(c) => c,
        Err(e) => return vec![connect_failure(&e, hints, timeout)],
    };
    if let Err(e) = client.simple_query("SELECT 1") {
        let hint = "the server answered the connection but not a query; see its log";
        return vec![CheckLine::failed(Step::Database, describe(&e), hint)];
    }
    let mut lines = vec![CheckLine::ok(Step::Database, "ok")];
    lines.push(match version(&mut client) {
        Ok(v) => CheckLine::ok(Step::Version, format!("PostgreSQL {v}")),
        Err(e) => CheckLine::failed(Step::Version, describe(&e), "see the server's log"),
    });
    lines.push(migrations(&mut client));
    if worker_running(&mut client) == Some(true) {
        lines.push(CheckLine::ok(Step::WriterLock, "a worker is writing to it"));
    }
    lines
}

/// The failure line for a connection attempt, by SQLSTATE or socket error.
pub(super) fn connect_failure(e: &postgres::Error, hints: DbHints, timeout: Duration) -> CheckLine {
    let code = e.code().map(|c| c.code().to_string());
    let hint = match code.as_deref() {
        Some("28P01") | Some("28000") => hints.credentials(),
        Some("3D000") => hints.no_database(),
        Some(_) => "see the server's log".to_string(),
        None => hints.unreachable(),
    };
    let message = match io_kind(e) {
        Some(std::io::ErrorKind::ConnectionRefused) => "connection refused".to_string(),
        Some(std::io::ErrorKind::TimedOut) => {
            format!("no TCP answer within {}", seconds(timeout))
        }
        _ => describe(e),
    };
    CheckLine::failed(Step::Database, message, hint)
}

/// The kind of the I/O error under a driver error, if there is one.
fn io_kind(e: &postgres::Error) -> Option<std::io::ErrorKind> {
    let mut source = std::error::Error::source(e);
    while let Some(inner) = source {
        if let Some(io) = inner.downcast_ref::<std::io::Error>() {
            return Some(io.kind());
        }
        source = inner.source();
    }
    None
}

/// A driver error as one line: the server's message and SQLSTATE, or the error chain.
fn describe(e: &postgres::Error) -> String {
    if let Some(db) = e.as_db_error() {
        return format!("{} ({})", db.message(), db.code().code());
    }
    let mut text = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(inner) = source {
        text.push_str(": ");
        text.push_str(&inner.to_string());
        source = inner.source();
    }
    text
}

/// The server version, e.g. `15.19` (the first word of `server_version`).
fn version(client: &mut postgres::Client) -> Result<String, postgres::Error> {
    let row = client.query_one("SHOW server_version", &[])?;
    let full: String = row.try_get(0)?;
    Ok(full
        .split_whitespace()
        .next()
        .unwrap_or("unknown")
        .to_string())
}

/// Compares the recorded migrations with the ones this binary embeds: all applied, a warning
/// when some (or all) are pending (the worker applies them at start), a failure when the
/// database was migrated by a newer cryptoworker (the worker would refuse to start).
fn migrations(client: &mut postgres::Client) -> CheckLine {
    let recorded = match recorded_versions(client) {
        Ok(v) => v,
        Err(e) => {
            return CheckLine::failed(
                Step::Migrations,
                format!("cannot read {MIGRATIONS_TABLE}: {}", describe(&e)),
                "the database user needs read access to the worker's tables",
            );
        }
    };
    migrations_line(&recorded, MIGRATIONS)
}

/// The versions recorded in [`MIGRATIONS_TABLE`] (empty when the table does not exist).
fn recorded_versions(client: &mut postgres::Client) -> Result<Vec<i32>, postgres::Error> {
    let exists = client.query_one("SELECT to_regclass($1) IS NOT NULL", &[&MIGRATIONS_TABLE])?;
    if !exists.try_get::<_, bool>(0)? {
        return Ok(Vec::new());
    }
    let query = format!("SELECT version FROM {MIGRATIONS_TABLE} ORDER BY version");
    let rows = client.query(query.as_str(), &[])?;
    rows.iter().map(|r| r.try_get::<_, i32>(0)).collect()
}

/// The migrations line for the `recorded` versions against the `known` ones.
pub(super) fn migrations_line(recorded: &[i32], known: &[Migration]) -> CheckLine {
    let latest = known.iter().map(|m| m.version).max().unwrap_or(0);
    if let Some(newer) = recorded
        .iter()
        .find(|v| !known.iter().any(|m| m.version == **v))
    {
        return CheckLine::failed(
            Step::Migrations,
            format!(
                "the database has migration {newer}, unknown to this cryptoworker (it knows up \
                 to {latest})"
            ),
            "it was migrated by a newer cryptoworker: upgrade this one, or use another database",
        );
    }
    let pending = known
        .iter()
        .filter(|m| !recorded.contains(&m.version))
        .count();
    match (pending, recorded.is_empty()) {
        (0, _) => CheckLine::ok(
            Step::Migrations,
            format!("migrations applied (version {latest})"),
        ),
        (_, true) => CheckLine::warning(Step::Migrations, "migrations not applied yet", MIGRATE),
        (n, false) => CheckLine::warning(
            Step::Migrations,
            format!("{n} migration(s) pending (latest is {latest})"),
            MIGRATE,
        ),
    }
}

/// Whether a running worker holds the writer lock ([`WRITER_LOCK_KEY`]); `None` if unknown.
fn worker_running(client: &mut postgres::Client) -> Option<bool> {
    // A bigint advisory key is stored as classid (high 32 bits) and objid (low 32 bits).
    let row = client
        .query_one(
            "SELECT EXISTS (SELECT 1 FROM pg_locks WHERE locktype = 'advisory' \
             AND objsubid = 1 AND granted \
             AND ((classid::bigint << 32) | objid::bigint) = $1)",
            &[&WRITER_LOCK_KEY],
        )
        .ok()?;
    row.try_get(0).ok()
}

/// What to do about pending migrations.
const MIGRATE: &str =
    "the worker applies them when it starts; `cryptoworker migrate` applies them now";
