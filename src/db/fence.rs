//! Cluster fencing (docs/cluster.md, "Fencing"): the term in `cluster_term` that an elected
//! node bumps in its elector session, and the check every cluster-mode writer transaction makes
//! before it writes.
//!
//! Invariants: the check is the transaction's first statement and takes the row `FOR SHARE`, so
//! a bump (which needs the row lock) waits for every batch already checked to commit or roll
//! back, and every batch checked after the bump sees the new term. A batch is written only when
//! the stored term equals the term the node leads with, which is never 0 (0 means "not leading").
//! Outside cluster mode nothing here runs.

use super::error::{DbError, describe};
use postgres::error::SqlState;
use postgres::{Client, Transaction};

/// Bumps the term (creating the row if needed) and returns the new one. The elector runs it in
/// its own session right after winning the lock, before it reads where the log ends.
pub const BUMP_TERM_SQL: &str = "INSERT INTO cluster_term (id, term) VALUES (1, 1)
     ON CONFLICT (id) DO UPDATE SET term = cluster_term.term + 1 RETURNING term";

/// The writer's check: the stored term, with a share lock held to the end of the transaction.
const READ_TERM_SQL: &str = "SELECT term FROM cluster_term WHERE id = 1 FOR SHARE";

/// Bumps the term on `client`'s session (autocommit) and returns the new term. A database
/// without the table (an elector may win before any node migrated it) is migrated first.
pub(crate) fn bump_term(client: &mut Client) -> Result<u64, DbError> {
    let bump = |c: &mut Client| c.query_one(BUMP_TERM_SQL, &[]).map(|r| r.get::<_, i64>(0));
    let term = match bump(client) {
        Err(e) if e.code() == Some(&SqlState::UNDEFINED_TABLE) => {
            log::info!("[DB] No cluster_term table yet: applying the migrations first");
            super::migrate::run(client)?;
            bump(client)
        }
        other => other,
    };
    term.map(|t| t.max(0) as u64)
        .map_err(|e| DbError::Query(describe(&e)))
}

/// Whether a batch may be written: the node leads with `leading` (0: it does not lead) and the
/// database holds `stored` (`None`: no row).
pub(crate) fn may_write(stored: Option<i64>, leading: u64) -> bool {
    leading != 0 && stored.is_some_and(|s| u64::try_from(s) == Ok(leading))
}

/// Reads the stored term `FOR SHARE` inside `tx`.
pub(crate) fn stored_term(tx: &mut Transaction<'_>) -> Result<Option<i64>, postgres::Error> {
    Ok(tx.query_opt(READ_TERM_SQL, &[])?.map(|r| r.get(0)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_batch_is_written_only_under_the_current_term() {
        let cases: &[(Option<i64>, u64, bool)] = &[
            (Some(1), 1, true),
            (Some(7), 7, true),
            (Some(2), 1, false), // a newer leader bumped it: this node is fenced
            (Some(1), 2, false), // cannot happen (terms only grow), refused anyway
            (Some(0), 0, false), // not leading, even against the seeded row
            (Some(3), 0, false), // not leading any more
            (None, 1, false),    // no row: no election happened here
            (Some(-1), u64::MAX, false),
        ];
        for &(stored, leading, want) in cases {
            assert_eq!(may_write(stored, leading), want, "{stored:?} vs {leading}");
        }
    }
}
