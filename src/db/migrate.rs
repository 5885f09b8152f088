//! The migrations runner: numbered SQL files from `migrations/`, embedded in the binary with
//! `include_str!`, applied in order and recorded in `cryptoworker_migrations`.
//!
//! Invariants: the runner holds a transaction-independent advisory lock
//! ([`MIGRATION_LOCK_KEY`]) for its whole run, so two instances starting at once apply each
//! migration exactly once (the second waits, then finds it recorded); each migration runs in its
//! own transaction together with its record, so a failure leaves no half-applied version; a
//! recorded migration whose text changed since, or a recorded version this binary does not know,
//! is refused with a clear error.

use super::error::{DbError, describe};
use postgres::Client;

/// One embedded migration.
#[derive(Debug, Clone, Copy)]
pub struct Migration {
    /// Version number, from the file name prefix.
    pub version: i32,
    /// File name, e.g. `0001_init.sql`.
    pub name: &'static str,
    /// The SQL text.
    pub sql: &'static str,
}

/// Every migration, in version order.
pub const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        name: "0001_init.sql",
        sql: include_str!("../../migrations/0001_init.sql"),
    },
    Migration {
        version: 2,
        name: "0002_request_confirmations.sql",
        sql: include_str!("../../migrations/0002_request_confirmations.sql"),
    },
    Migration {
        version: 3,
        name: "0003_cluster_term.sql",
        sql: include_str!("../../migrations/0003_cluster_term.sql"),
    },
];

/// Advisory lock key held while migrating (distinct from the worker's writer lock).
pub const MIGRATION_LOCK_KEY: i64 = 0x6377_6d69_6772_0001;

/// Applies every pending migration; returns the names applied now (empty when up to date).
pub fn run(client: &mut Client) -> Result<Vec<String>, DbError> {
    let err =
        |what: &str, e: postgres::Error| DbError::Migration(format!("{what}: {}", describe(&e)));
    client
        .execute("SELECT pg_advisory_lock($1)", &[&MIGRATION_LOCK_KEY])
        .map_err(|e| err("taking the migration lock", e))?;
    let result = apply_pending(client);
    let unlock = client.execute("SELECT pg_advisory_unlock($1)", &[&MIGRATION_LOCK_KEY]);
    let applied = result?;
    unlock.map_err(|e| err("releasing the migration lock", e))?;
    Ok(applied)
}

/// The body of [`run`], called with the migration lock held.
fn apply_pending(client: &mut Client) -> Result<Vec<String>, DbError> {
    let err =
        |what: String, e: postgres::Error| DbError::Migration(format!("{what}: {}", describe(&e)));
    let exists: bool = client
        .query_one(
            "SELECT to_regclass('cryptoworker_migrations') IS NOT NULL",
            &[],
        )
        .and_then(|r| r.try_get(0))
        .map_err(|e| err("looking for cryptoworker_migrations".into(), e))?;
    if !exists {
        client
            .batch_execute(
                "CREATE TABLE cryptoworker_migrations (
                     version integer PRIMARY KEY,
                     name text NOT NULL,
                     checksum text NOT NULL,
                     applied_at timestamptz NOT NULL DEFAULT now())",
            )
            .map_err(|e| err("creating cryptoworker_migrations".into(), e))?;
    }
    let rows = client
        .query(
            "SELECT version, name, checksum FROM cryptoworker_migrations ORDER BY version",
            &[],
        )
        .map_err(|e| err("reading cryptoworker_migrations".into(), e))?;
    let recorded: Vec<(i32, String, String)> = rows
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect();
    check_recorded(&recorded, MIGRATIONS)?;
    let mut applied = Vec::new();
    for m in MIGRATIONS {
        if recorded.iter().any(|(v, _, _)| *v == m.version) {
            continue;
        }
        let mut tx = client
            .transaction()
            .map_err(|e| err(format!("starting {}", m.name), e))?;
        tx.batch_execute(m.sql)
            .map_err(|e| err(format!("applying {}", m.name), e))?;
        tx.execute(
            "INSERT INTO cryptoworker_migrations (version, name, checksum) VALUES ($1, $2, $3)",
            &[&m.version, &m.name, &checksum(m.sql)],
        )
        .map_err(|e| err(format!("recording {}", m.name), e))?;
        tx.commit()
            .map_err(|e| err(format!("committing {}", m.name), e))?;
        log::info!("[DB] Applied migration {}", m.name);
        applied.push(m.name.to_string());
    }
    Ok(applied)
}

/// Refuses a database whose recorded migrations do not match the embedded ones.
fn check_recorded(recorded: &[(i32, String, String)], known: &[Migration]) -> Result<(), DbError> {
    for (version, name, sum) in recorded {
        match known.iter().find(|m| m.version == *version) {
            None => {
                return Err(DbError::Migration(format!(
                    "the database has migration {version} ({name}) that this binary does not \
                     know: it was migrated by a newer cryptoworker"
                )));
            }
            Some(m) if checksum(m.sql) != *sum => {
                return Err(DbError::Migration(format!(
                    "migration {} was changed after it was applied (checksum {} in the \
                     database, {} in this binary)",
                    m.name,
                    sum,
                    checksum(m.sql)
                )));
            }
            Some(_) => {}
        }
    }
    Ok(())
}

/// FNV-1a 64-bit of the SQL text, as 16 hex digits.
pub fn checksum(sql: &str) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in sql.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    format!("{h:016x}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn migrations_are_numbered_in_order_and_named_after_their_version() {
        for (i, m) in MIGRATIONS.iter().enumerate() {
            assert_eq!(m.version as usize, i + 1);
            assert!(
                m.name.starts_with(&format!("{:04}_", m.version)),
                "{}",
                m.name
            );
            assert!(m.name.ends_with(".sql"));
            assert!(!m.sql.trim().is_empty());
        }
    }

    #[test]
    fn checksum_detects_edits() {
        assert_eq!(checksum("a"), checksum("a"));
        assert_ne!(checksum("CREATE TABLE a ()"), checksum("CREATE TABLE b ()"));
        assert_eq!(checksum("").len(), 16);
    }

    #[test]
    fn recorded_state_is_checked() {
        let m = MIGRATIONS[0];
        let ok = vec![(m.version, m.name.to_string(), checksum(m.sql))];
        assert!(check_recorded(&ok, MIGRATIONS).is_ok());
        let edited = vec![(m.version, m.name.to_string(), "0".repeat(16))];
        let e = check_recorded(&edited, MIGRATIONS).unwrap_err().to_string();
        assert!(e.contains("changed after it was applied"), "{e}");
        let newer = vec![(999, "0999_x.sql".to_string(), "x".into())];
        let e = check_recorded(&newer, MIGRATIONS).unwrap_err().to_string();
        assert!(e.contains("newer cryptoworker"), "{e}");
    }
}
