//! Typed errors of the persistence layer, and the classification of PostgreSQL failures that
//! decides what a writer does next (retry the batch, reconnect and spool, or isolate a bad row).
//!
//! Invariant: only [`DbError`] crosses the module's public boundary; `postgres::Error` is turned
//! into text here so callers never depend on the driver.

use std::fmt;

/// An error of the persistence layer.
#[derive(Debug)]
pub enum DbError {
    /// The configuration (URL, pool size, spool directory) is unusable.
    Config(String),
    /// Another cryptoworker holds the database's advisory lock (one writer per database).
    Locked(String),
    /// The database refused the connection for a reason retrying will not fix (bad password,
    /// unknown database), or could not be reached when that was required (`migrate`).
    Connect(String),
    /// A migration failed or the recorded migrations disagree with this binary.
    Migration(String),
    /// A query failed.
    Query(String),
    /// The local spool file could not be opened, locked, read or written.
    Spool(String),
    /// A thread could not be started.
    Thread(String),
}

impl fmt::Display for DbError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DbError::Config(m) => write!(f, "database configuration: {m}"),
            DbError::Locked(m) => write!(f, "database locked: {m}"),
            DbError::Connect(m) => write!(f, "database connection: {m}"),
            DbError::Migration(m) => write!(f, "database migration: {m}"),
            DbError::Query(m) => write!(f, "database query: {m}"),
            DbError::Spool(m) => write!(f, "database spool: {m}"),
            DbError::Thread(m) => write!(f, "database thread: {m}"),
        }
    }
}

impl std::error::Error for DbError {}

/// Why the reader could not answer an event-log query (the client's resume falls back; the
/// reader goes on with the next job).
#[derive(Debug)]
pub(crate) enum QueryError {
    /// The database is not connected (or not ready: lock or schema pending).
    NotConnected,
    /// The driver failed.
    Driver(postgres::Error),
    /// A stored payload is not a JSON object.
    BadPayload { seq: i64 },
    /// The rows after `after` are not all committed yet; `unwritten` are queued or spooled.
    NotPersisted { after: u64, unwritten: u64 },
}

impl fmt::Display for QueryError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            QueryError::NotConnected => f.write_str("the database is not connected"),
            QueryError::Driver(e) => f.write_str(&describe(e)),
            QueryError::BadPayload { seq } => {
                write!(f, "event {seq} has a payload that is not an object")
            }
            QueryError::NotPersisted { after, unwritten } => write!(
                f,
                "events after seq {after} are not all persisted yet ({unwritten} queued or \
                 spooled); retry later"
            ),
        }
    }
}

impl std::error::Error for QueryError {}

/// What a failed PostgreSQL call means for the work in hand.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Failure {
    /// The connection is gone or the server is going away: reconnect, keep the work elsewhere.
    Connection,
    /// A transient conflict (deadlock, serialization): retry the same work.
    Retry,
    /// The data or statement is at fault: retrying the same rows will fail again.
    Data,
}

/// Classifies a driver error by `is_closed()` and the SQLSTATE class.
pub(crate) fn classify(e: &postgres::Error) -> Failure {
    if e.is_closed() {
        return Failure::Connection;
    }
    let Some(state) = e.code() else {
        // No SQLSTATE: an I/O or protocol failure on the socket.
        return Failure::Connection;
    };
    classify_sqlstate(state.code())
}

/// Classifies a SQLSTATE code (see the PostgreSQL "Error Codes" appendix).
pub(crate) fn classify_sqlstate(code: &str) -> Failure {
    match code {
        "40001" | "40P01" => Failure::Retry,
        _ => match code.get(..2) {
            // 22 data exception, 23 integrity violation, 42 syntax or access rule,
            // 0A feature not supported, P0 raised by PL/pgSQL.
            Some("22") | Some("23") | Some("42") | Some("0A") | Some("P0") => Failure::Data,
            _ => Failure::Connection,
        },
    }
}

/// True when a connection attempt failed for a reason that retrying will not fix.
pub(crate) fn is_fatal_connect(e: &postgres::Error) -> bool {
    matches!(
        e.code().map(|c| c.code()),
        // invalid_authorization_specification, invalid_password, invalid_catalog_name
        Some("28000") | Some("28P01") | Some("3D000")
    )
}

/// Renders a driver error with its SQLSTATE and detail, for logs and [`DbError`] text.
pub(crate) fn describe(e: &postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => {
            let mut s = format!("{} ({})", db.message(), db.code().code());
            if let Some(d) = db.detail() {
                s.push_str(": ");
                s.push_str(d);
            }
            s
        }
        None => {
            let mut s = e.to_string();
            let mut src = std::error::Error::source(e);
            while let Some(inner) = src {
                s.push_str(": ");
                s.push_str(&inner.to_string());
                src = inner.source();
            }
            s
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sqlstates_map_to_the_right_reaction() {
        assert_eq!(classify_sqlstate("40P01"), Failure::Retry);
        assert_eq!(classify_sqlstate("40001"), Failure::Retry);
        assert_eq!(classify_sqlstate("22P02"), Failure::Data);
        assert_eq!(classify_sqlstate("23505"), Failure::Data);
        assert_eq!(classify_sqlstate("42P01"), Failure::Data);
        assert_eq!(classify_sqlstate("57P01"), Failure::Connection);
        assert_eq!(classify_sqlstate("08006"), Failure::Connection);
        assert_eq!(classify_sqlstate("53300"), Failure::Connection);
    }

    #[test]
    fn display_names_the_kind() {
        let e = DbError::Locked("held by pid 7".into());
        assert_eq!(e.to_string(), "database locked: held by pid 7");
    }
}
