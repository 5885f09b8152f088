//! The writer's SQL: one prepared statement per table, each taking whole columns as arrays
//! (`unnest`), so a batch of any size is six round trips in one transaction.
//!
//! Invariants (idempotence): replaying any batch changes nothing. The event log and payments
//! insert with `ON CONFLICT DO NOTHING`; transactions, verifications and request statuses are
//! applied only when the event's `(epoch, seq)` is newer than the one recorded on the row, so an
//! older event replayed after a newer one never regresses a row (a request's `confirmations`
//! likewise follow the newest event that carried a count); chain tips only grow.

use super::fence::{may_write, stored_term};
use super::rows::Batch;
use postgres::types::ToSql;
use postgres::{Client, Statement, Transaction};

const EVENTS: &str = "
INSERT INTO events (epoch, seq, coin, event, wallet, payload, created_at)
SELECT u.epoch, u.seq, u.coin, u.event, u.wallet, u.payload::jsonb, to_timestamp(u.ts)
FROM unnest($1::text[], $2::int8[], $3::text[], $4::text[], $5::text[], $6::text[], $7::float8[])
     AS u(epoch, seq, coin, event, wallet, payload, ts)
ON CONFLICT (epoch, seq) DO NOTHING";

/// `new_transaction` is newer than what the row holds.
const TX_NEWER: &str =
    "(t.tx_seq IS NULL OR (EXCLUDED.tx_epoch, EXCLUDED.tx_seq) > (t.tx_epoch, t.tx_seq))";

const TX_HEAD: &str = "
INSERT INTO transactions AS t (coin, tx_hash, wallet, amount, from_address, to_address, addresses,
                               confirmations, contract, first_seen, last_seen, tx_epoch, tx_seq)
SELECT u.coin, u.tx_hash, u.wallet, u.amount::numeric, u.from_address, u.to_address,
       ARRAY(SELECT jsonb_array_elements_text(u.addresses::jsonb)), u.confirmations, u.contract,
       to_timestamp(u.first_seen), to_timestamp(u.last_seen), u.epoch, u.seq
FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[],
            $8::int4[], $9::text[], $10::float8[], $11::float8[], $12::text[], $13::int8[])
     AS u(coin, tx_hash, wallet, amount, from_address, to_address, addresses, confirmations,
          contract, first_seen, last_seen, epoch, seq)
ON CONFLICT (coin, tx_hash, wallet) DO UPDATE SET
    first_seen = least(t.first_seen, EXCLUDED.first_seen),
    last_seen = greatest(t.last_seen, EXCLUDED.last_seen),";

const TX_TAIL: &str = "
WHERE t.tx_seq IS NULL OR EXCLUDED.tx_epoch <> t.tx_epoch OR EXCLUDED.tx_seq <> t.tx_seq";

const VERIFIED: &str = "
INSERT INTO transactions AS t (coin, tx_hash, wallet, height, confirmed, first_seen, last_seen,
                               verified_epoch, verified_seq)
SELECT u.coin, u.tx_hash, u.wallet, u.height, true, to_timestamp(u.first_seen),
       to_timestamp(u.last_seen), u.epoch, u.seq
FROM unnest($1::text[], $2::text[], $3::text[], $4::int8[], $5::float8[], $6::float8[],
            $7::text[], $8::int8[])
     AS u(coin, tx_hash, wallet, height, first_seen, last_seen, epoch, seq)
ON CONFLICT (coin, tx_hash, wallet) DO UPDATE SET
    confirmed = true,
    first_seen = least(t.first_seen, EXCLUDED.first_seen),
    last_seen = greatest(t.last_seen, EXCLUDED.last_seen),
    height = CASE WHEN V_NEWER THEN EXCLUDED.height ELSE t.height END,
    verified_epoch = CASE WHEN V_NEWER THEN EXCLUDED.verified_epoch ELSE t.verified_epoch END,
    verified_seq = CASE WHEN V_NEWER THEN EXCLUDED.verified_seq ELSE t.verified_seq END
WHERE t.verified_seq IS NULL OR EXCLUDED.verified_epoch <> t.verified_epoch
   OR EXCLUDED.verified_seq <> t.verified_seq";

/// `verified_tx` is newer than what the row holds.
const V_NEWER: &str = "(t.verified_seq IS NULL OR \
    (EXCLUDED.verified_epoch, EXCLUDED.verified_seq) > (t.verified_epoch, t.verified_seq))";

const TIPS: &str = "
INSERT INTO chain_tips AS t (coin, height, updated_at)
SELECT u.coin, u.height, to_timestamp(u.ts)
FROM unnest($1::text[], $2::int8[], $3::float8[]) AS u(coin, height, ts)
ON CONFLICT (coin) DO UPDATE SET height = EXCLUDED.height, updated_at = EXCLUDED.updated_at
WHERE EXCLUDED.height > t.height";

const PAYMENTS: &str = "
INSERT INTO payments (coin, wallet, request_id, status, status_str, sent_amount, tx_hashes,
                      contract, confirmations, epoch, seq, created_at)
SELECT u.coin, u.wallet, u.request_id, u.status, u.status_str, u.sent_amount::numeric,
       ARRAY(SELECT jsonb_array_elements_text(u.tx_hashes::jsonb)), u.contract, u.confirmations,
       u.epoch, u.seq, to_timestamp(u.ts)
FROM unnest($1::text[], $2::text[], $3::text[], $4::int4[], $5::text[], $6::text[], $7::text[],
            $8::text[], $9::int4[], $10::text[], $11::int8[], $12::float8[])
     AS u(coin, wallet, request_id, status, status_str, sent_amount, tx_hashes, contract,
          confirmations, epoch, seq, ts)
ON CONFLICT DO NOTHING";

/// A request's status columns follow the newest `new_payment` applied (`payment_request_applied`
/// `epoch`, `seq`); its `confirmations` follow the newest one that carried a count
/// (`confirmations_epoch`, `confirmations_seq`), so an event without one leaves the column as it
/// is, and an older event replayed later changes neither.
const REQUESTS: &str = "
WITH u AS (
    SELECT * FROM unnest($1::text[], $2::text[], $3::int4[], $4::text[], $5::text[], $6::int4[],
                         $7::text[], $8::int8[], $9::text[], $10::int8[])
         AS u(coin, request_id, status, sent_amount, tx_hashes, confirmations, epoch, seq,
              conf_epoch, conf_seq)
), adv AS (
    INSERT INTO payment_request_applied AS a
        (coin, request_id, epoch, seq, confirmations_epoch, confirmations_seq)
    SELECT coin, request_id, epoch, seq, conf_epoch, conf_seq FROM u
    ON CONFLICT (coin, request_id) DO UPDATE SET
        epoch = CASE WHEN R_NEWER THEN EXCLUDED.epoch ELSE a.epoch END,
        seq = CASE WHEN R_NEWER THEN EXCLUDED.seq ELSE a.seq END,
        confirmations_epoch = CASE WHEN C_NEWER THEN EXCLUDED.confirmations_epoch
                                   ELSE a.confirmations_epoch END,
        confirmations_seq = CASE WHEN C_NEWER THEN EXCLUDED.confirmations_seq
                                 ELSE a.confirmations_seq END
    WHERE R_NEWER OR C_NEWER
    RETURNING a.coin, a.request_id, a.epoch, a.seq, a.confirmations_epoch, a.confirmations_seq
)
UPDATE payment_requests pr SET
    status = CASE WHEN R_APPLIED THEN u.status ELSE pr.status END,
    sent_amount = CASE WHEN R_APPLIED THEN u.sent_amount::numeric ELSE pr.sent_amount END,
    tx_hashes = CASE WHEN R_APPLIED THEN ARRAY(SELECT jsonb_array_elements_text(u.tx_hashes::jsonb))
                     ELSE pr.tx_hashes END,
    confirmations = CASE WHEN C_APPLIED THEN u.confirmations ELSE pr.confirmations END,
    updated_at = now()
FROM adv JOIN u ON u.coin = adv.coin AND u.request_id = adv.request_id
WHERE upper(pr.coin) = adv.coin AND pr.request_id = adv.request_id";

/// The request's newest `new_payment` is newer than the one recorded.
const R_NEWER: &str = "(EXCLUDED.epoch, EXCLUDED.seq) > (a.epoch, a.seq)";
/// The batch carries a count from a newer event than the one recorded.
const C_NEWER: &str = "(EXCLUDED.confirmations_seq IS NOT NULL AND (a.confirmations_seq IS NULL \
    OR (EXCLUDED.confirmations_epoch, EXCLUDED.confirmations_seq) \
       > (a.confirmations_epoch, a.confirmations_seq)))";
/// The recorded position is now this batch's (so its values are the ones to write).
const R_APPLIED: &str = "(adv.epoch = u.epoch COLLATE \"C\" AND adv.seq = u.seq)";
/// The recorded count position is now this batch's.
const C_APPLIED: &str = "(u.conf_seq IS NOT NULL AND adv.confirmations_epoch = u.conf_epoch \
    COLLATE \"C\" AND adv.confirmations_seq = u.conf_seq)";

/// The request status update with its conditions filled in.
fn requests_sql() -> String {
    REQUESTS
        .replace("R_NEWER", R_NEWER)
        .replace("C_NEWER", C_NEWER)
        .replace("R_APPLIED", R_APPLIED)
        .replace("C_APPLIED", C_APPLIED)
}

/// The transaction upsert: columns that follow the newest event (nulls never erase a value).
fn tx_sql() -> String {
    let mut s = String::from(TX_HEAD);
    for col in [
        "amount",
        "from_address",
        "to_address",
        "confirmations",
        "contract",
    ] {
        s.push_str(&format!(
            "\n    {col} = CASE WHEN {TX_NEWER} THEN coalesce(EXCLUDED.{col}, t.{col}) \
             ELSE coalesce(t.{col}, EXCLUDED.{col}) END,"
        ));
    }
    s.push_str(&format!(
        "\n    addresses = CASE WHEN cardinality(t.addresses) = 0 OR ({TX_NEWER} AND \
         cardinality(EXCLUDED.addresses) > 0) THEN EXCLUDED.addresses ELSE t.addresses END,"
    ));
    for col in ["tx_epoch", "tx_seq"] {
        s.push_str(&format!(
            "\n    {col} = CASE WHEN {TX_NEWER} THEN EXCLUDED.{col} ELSE t.{col} END,"
        ));
    }
    s.pop(); // the last comma
    s.push_str(TX_TAIL);
    s
}

/// The writer's statements, prepared once per connection.
pub(crate) struct Statements {
    events: Statement,
    txs: Statement,
    verified: Statement,
    tips: Statement,
    payments: Statement,
    requests: Statement,
}

impl Statements {
    /// Prepares every statement on `client`.
    pub fn prepare(client: &mut Client) -> Result<Statements, postgres::Error> {
        Ok(Statements {
            events: client.prepare(EVENTS)?,
            txs: client.prepare(&tx_sql())?,
            verified: client.prepare(&VERIFIED.replace("V_NEWER", V_NEWER))?,
            tips: client.prepare(TIPS)?,
            payments: client.prepare(PAYMENTS)?,
            requests: client.prepare(&requests_sql())?,
        })
    }
}

/// What became of a batch handed to [`write_batch`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Written {
    /// Committed.
    Committed,
    /// Not written: the database's term (`None`: no row) is not the one the node leads with.
    Fenced(Option<i64>),
}

/// Writes a whole batch in one transaction. With `fence` (cluster mode: the term the node leads
/// with, 0 when it does not lead) the transaction first checks the stored term and writes
/// nothing unless it matches (see [`super::fence`]).
pub(crate) fn write_batch(
    client: &mut Client,
    st: &Statements,
    b: &Batch,
    fence: Option<u64>,
) -> Result<Written, postgres::Error> {
    let mut tx = client.transaction()?;
    if let Some(leading) = fence {
        let stored = stored_term(&mut tx)?;
        if !may_write(stored, leading) {
            tx.rollback()?;
            return Ok(Written::Fenced(stored));
        }
    }
    write_events(&mut tx, st, b)?;
    write_txs(&mut tx, st, b)?;
    write_verified(&mut tx, st, b)?;
    write_tips(&mut tx, st, b)?;
    write_payments(&mut tx, st, b)?;
    tx.commit().map(|()| Written::Committed)
}

/// A column of the batch.
fn col<'a, T, U>(rows: &'a [T], f: impl Fn(&'a T) -> U) -> Vec<U> {
    rows.iter().map(f).collect()
}

/// A list as JSON text (nested arrays cannot go through `unnest`).
fn json_list(items: &[String]) -> String {
    serde_json::Value::from(items.to_vec()).to_string()
}

fn run(
    tx: &mut Transaction<'_>,
    s: &Statement,
    p: &[&(dyn ToSql + Sync)],
) -> Result<(), postgres::Error> {
    tx.execute(s, p).map(|_| ())
}

fn write_events(
    tx: &mut Transaction<'_>,
    st: &Statements,
    b: &Batch,
) -> Result<(), postgres::Error> {
    let r = &b.events;
    if r.is_empty() {
        return Ok(());
    }
    run(
        tx,
        &st.events,
        &[
            &col(r, |e| e.epoch.as_str()),
            &col(r, |e| e.seq),
            &col(r, |e| e.coin.as_str()),
            &col(r, |e| e.event.as_str()),
            &col(r, |e| e.wallet.as_deref()),
            &col(r, |e| e.payload.as_str()),
            &col(r, |e| e.ts),
        ],
    )
}

fn write_txs(tx: &mut Transaction<'_>, st: &Statements, b: &Batch) -> Result<(), postgres::Error> {
    let r = &b.txs;
    if r.is_empty() {
        return Ok(());
    }
    run(
        tx,
        &st.txs,
        &[
            &col(r, |t| t.coin.as_str()),
            &col(r, |t| t.tx_hash.as_str()),
            &col(r, |t| t.wallet.as_str()),
            &col(r, |t| t.amount.as_deref()),
            &col(r, |t| t.from_address.as_deref()),
            &col(r, |t| t.to_address.as_deref()),
            &col(r, |t| json_list(&t.addresses)),
            &col(r, |t| t.confirmations),
            &col(r, |t| t.contract.as_deref()),
            &col(r, |t| t.first_seen),
            &col(r, |t| t.last_seen),
            &col(r, |t| t.epoch.as_str()),
            &col(r, |t| t.seq),
        ],
    )
}

fn write_verified(
    tx: &mut Transaction<'_>,
    st: &Statements,
    b: &Batch,
) -> Result<(), postgres::Error> {
    let r = &b.verified;
    if r.is_empty() {
        return Ok(());
    }
    run(
        tx,
        &st.verified,
        &[
            &col(r, |v| v.coin.as_str()),
            &col(r, |v| v.tx_hash.as_str()),
            &col(r, |v| v.wallet.as_str()),
            &col(r, |v| v.height),
            &col(r, |v| v.first_seen),
            &col(r, |v| v.last_seen),
            &col(r, |v| v.epoch.as_str()),
            &col(r, |v| v.seq),
        ],
    )
}

fn write_tips(tx: &mut Transaction<'_>, st: &Statements, b: &Batch) -> Result<(), postgres::Error> {
    let r = &b.tips;
    if r.is_empty() {
        return Ok(());
    }
    run(
        tx,
        &st.tips,
        &[
            &col(r, |t| t.coin.as_str()),
            &col(r, |t| t.height),
            &col(r, |t| t.ts),
        ],
    )
}

fn write_payments(
    tx: &mut Transaction<'_>,
    st: &Statements,
    b: &Batch,
) -> Result<(), postgres::Error> {
    let r = &b.payments;
    if r.is_empty() {
        return Ok(());
    }
    run(
        tx,
        &st.payments,
        &[
            &col(r, |p| p.coin.as_str()),
            &col(r, |p| p.wallet.as_str()),
            &col(r, |p| p.request_id.as_str()),
            &col(r, |p| p.status),
            &col(r, |p| p.status_str.as_deref()),
            &col(r, |p| p.sent_amount.as_str()),
            &col(r, |p| json_list(&p.tx_hashes)),
            &col(r, |p| p.contract.as_deref()),
            &col(r, |p| p.confirmations),
            &col(r, |p| p.epoch.as_str()),
            &col(r, |p| p.seq),
            &col(r, |p| p.ts),
        ],
    )?;
    let r = &b.requests;
    run(
        tx,
        &st.requests,
        &[
            &col(r, |p| p.coin.as_str()),
            &col(r, |p| p.request_id.as_str()),
            &col(r, |p| p.status),
            &col(r, |p| p.sent_amount.as_str()),
            &col(r, |p| json_list(&p.tx_hashes)),
            &col(r, |p| p.confirmations),
            &col(r, |p| p.epoch.as_str()),
            &col(r, |p| p.seq),
            &col(r, |p| p.confirmations_at.as_ref().map(|(e, _)| e.as_str())),
            &col(r, |p| p.confirmations_at.as_ref().map(|(_, s)| *s)),
        ],
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_upsert_is_well_formed() {
        let s = tx_sql();
        assert!(!s.contains(",\nWHERE"), "trailing comma before WHERE");
        for col in ["amount", "contract", "addresses", "tx_epoch", "tx_seq"] {
            assert!(s.contains(&format!("\n    {col} = CASE")), "{col} missing");
        }
        let v = VERIFIED.replace("V_NEWER", V_NEWER);
        assert!(!v.contains("V_NEWER"));
        let r = requests_sql();
        for name in ["R_NEWER", "C_NEWER", "R_APPLIED", "C_APPLIED"] {
            assert!(!r.contains(name), "{name} left in the request update");
        }
        assert_eq!(json_list(&["a".into(), "b\"".into()]), r#"["a","b\""]"#);
    }
}
