//! Sans-io: turns a batch of published events into the rows the writer stores, one vector per
//! statement (the event log, transactions, verifications, chain tips, payments, request status).
//!
//! Invariants: every event yields exactly one [`EventRow`]; a kind-specific row is produced only
//! when the fields it needs are present and well-formed (amounts are validated decimals, never
//! floats); rows of statements that use `ON CONFLICT DO UPDATE` are merged so each key appears
//! once per batch (PostgreSQL refuses to update a row twice in one statement), keeping the
//! values of the newest event by `(epoch, seq)`; every vector is sorted by its key so that
//! concurrent writers lock rows in one global order and cannot deadlock.

use crate::event::Published;
use serde_json::{Map, Value};
use std::collections::BTreeMap;

/// A row of `events`.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct EventRow {
    pub epoch: String,
    pub seq: i64,
    pub coin: String,
    pub event: String,
    pub wallet: Option<String>,
    /// JSON text, valid for `jsonb` (no `\u0000`).
    pub payload: String,
    pub ts: f64,
}

/// A `new_transaction`, as an upsert of `transactions`.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct TxRow {
    pub coin: String,
    pub tx_hash: String,
    /// `''` when the event had no wallet (the column is part of the key).
    pub wallet: String,
    pub amount: Option<String>,
    pub from_address: Option<String>,
    pub to_address: Option<String>,
    pub addresses: Vec<String>,
    pub confirmations: Option<i32>,
    pub contract: Option<String>,
    pub first_seen: f64,
    pub last_seen: f64,
    pub epoch: String,
    pub seq: i64,
}

/// A `verified_tx`: height and confirmation of a `transactions` row.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct VerifiedRow {
    pub coin: String,
    pub tx_hash: String,
    pub wallet: String,
    pub height: i64,
    pub first_seen: f64,
    pub last_seen: f64,
    pub epoch: String,
    pub seq: i64,
}

/// A `new_block`: the chain tip of a coin.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct TipRow {
    pub coin: String,
    pub height: i64,
    pub ts: f64,
}

/// A `new_payment`: a `payments` row and the status of a `payment_requests` row.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct PaymentRow {
    pub coin: String,
    pub wallet: String,
    /// The event's `address` (the payment request id).
    pub request_id: String,
    pub status: i32,
    pub status_str: Option<String>,
    /// A validated decimal; `"0"` when the event had none.
    pub sent_amount: String,
    pub tx_hashes: Vec<String>,
    pub contract: Option<String>,
    pub confirmations: Option<i32>,
    /// The `(epoch, seq)` of the event `confirmations` comes from: this event's, or, in a
    /// merged request row whose newest event had none, an older event's of the batch.
    pub confirmations_at: Option<(String, i64)>,
    pub epoch: String,
    pub seq: i64,
    pub ts: f64,
}

/// Everything one writer transaction stores.
#[derive(Debug, Default, PartialEq)]
pub(crate) struct Batch {
    pub events: Vec<EventRow>,
    pub txs: Vec<TxRow>,
    pub verified: Vec<VerifiedRow>,
    pub tips: Vec<TipRow>,
    pub payments: Vec<PaymentRow>,
    /// One per (coin, request_id), the newest.
    pub requests: Vec<PaymentRow>,
    /// Events that cannot be stored at all (sequence number beyond `i64`).
    pub rejected: usize,
}

impl Batch {
    /// Builds the rows of a batch of events.
    pub fn build<'a>(events: impl IntoIterator<Item = &'a Published>) -> Batch {
        let mut b = Batch::default();
        for p in events {
            b.push(p);
        }
        b.finish()
    }

    fn push(&mut self, p: &Published) {
        let Ok(seq) = i64::try_from(p.seq) else {
            log::error!("[DB] event seq {} does not fit a bigint; not stored", p.seq);
            self.rejected += 1;
            return;
        };
        let payload = sanitize_payload(p.payload());
        let data = match serde_json::from_str::<Value>(&payload) {
            Ok(Value::Object(m)) => m,
            _ => Map::new(),
        };
        let pos = Pos {
            epoch: p.epoch.to_string(),
            seq,
            ts: p.timestamp,
        };
        let coin = p.meta.coin.to_string();
        let wallet = p.meta.wallet.as_deref().map(str::to_string);
        match &*p.meta.name {
            "new_transaction" => self.txs.extend(tx_row(&coin, &wallet, &data, p, &pos)),
            "verified_tx" => self
                .verified
                .extend(verified_row(&coin, &wallet, &data, &pos)),
            "new_block" => self.tips.extend(height(data.get("height")).map(|h| TipRow {
                coin: coin.clone(),
                height: h,
                ts: pos.ts,
            })),
            "new_payment" => self
                .payments
                .extend(payment_row(&coin, &wallet, &data, &pos)),
            _ => {}
        }
        self.events.push(EventRow {
            epoch: pos.epoch,
            seq,
            coin,
            event: p.meta.name.to_string(),
            wallet,
            payload,
            ts: pos.ts,
        });
    }

    /// Merges duplicate keys and sorts every vector by key.
    fn finish(mut self) -> Batch {
        self.events
            .sort_by(|a, b| (&a.epoch, a.seq).cmp(&(&b.epoch, b.seq)));
        self.txs = merge(self.txs, tx_key, |a, b| tx_pos(a) < tx_pos(b), merge_tx);
        self.verified = merge(
            self.verified,
            ver_key,
            |a, b| ver_pos(a) < ver_pos(b),
            merge_ver,
        );
        self.tips = merge(
            self.tips,
            |t| t.coin.clone(),
            |a, b| a.height < b.height,
            |_, n| n,
        );
        self.requests = merge(
            self.payments.clone(),
            |p| (p.coin.clone(), p.request_id.clone()),
            |a, b| (&a.epoch, a.seq) < (&b.epoch, b.seq),
            merge_request,
        );
        self.payments.sort_by(|a, b| {
            (&a.coin, &a.wallet, &a.request_id, a.status).cmp(&(
                &b.coin,
                &b.wallet,
                &b.request_id,
                b.status,
            ))
        });
        self
    }
}

/// Where an event sits: its epoch, sequence number and time.
struct Pos {
    epoch: String,
    seq: i64,
    ts: f64,
}

fn tx_key(t: &TxRow) -> (String, String, String) {
    (t.coin.clone(), t.tx_hash.clone(), t.wallet.clone())
}
fn tx_pos(t: &TxRow) -> (&str, i64) {
    (&t.epoch, t.seq)
}
fn ver_key(t: &VerifiedRow) -> (String, String, String) {
    (t.coin.clone(), t.tx_hash.clone(), t.wallet.clone())
}
fn ver_pos(t: &VerifiedRow) -> (&str, i64) {
    (&t.epoch, t.seq)
}

/// Groups rows by key (sorted), folding each group with `combine(older, newer)`.
fn merge<T, K: Ord>(
    rows: Vec<T>,
    key: impl Fn(&T) -> K,
    older: impl Fn(&T, &T) -> bool,
    combine: impl Fn(T, T) -> T,
) -> Vec<T> {
    let mut groups: BTreeMap<K, T> = BTreeMap::new();
    for row in rows {
        let k = key(&row);
        let merged = match groups.remove(&k) {
            None => row,
            Some(prev) if older(&prev, &row) => combine(prev, row),
            Some(prev) => combine(row, prev),
        };
        groups.insert(k, merged);
    }
    groups.into_values().collect()
}

/// Same semantics as the SQL upsert: newer non-null values win, nulls never erase.
fn merge_tx(old: TxRow, new: TxRow) -> TxRow {
    TxRow {
        amount: new.amount.or(old.amount),
        from_address: new.from_address.or(old.from_address),
        to_address: new.to_address.or(old.to_address),
        addresses: if new.addresses.is_empty() {
            old.addresses
        } else {
            new.addresses
        },
        confirmations: new.confirmations.or(old.confirmations),
        contract: new.contract.or(old.contract),
        first_seen: old.first_seen.min(new.first_seen),
        last_seen: old.last_seen.max(new.last_seen),
        ..new
    }
}

/// The newest payment's status; `confirmations` of the newest event that had them.
fn merge_request(old: PaymentRow, new: PaymentRow) -> PaymentRow {
    if new.confirmations.is_some() {
        return new;
    }
    PaymentRow {
        confirmations: old.confirmations,
        confirmations_at: old.confirmations_at,
        ..new
    }
}

fn merge_ver(old: VerifiedRow, new: VerifiedRow) -> VerifiedRow {
    VerifiedRow {
        first_seen: old.first_seen.min(new.first_seen),
        last_seen: old.last_seen.max(new.last_seen),
        ..new
    }
}

fn tx_row(
    coin: &str,
    wallet: &Option<String>,
    data: &Map<String, Value>,
    p: &Published,
    pos: &Pos,
) -> Option<TxRow> {
    let tx_hash = text(data, "tx_hash").or_else(|| text(data, "tx"))?;
    Some(TxRow {
        coin: coin.to_string(),
        tx_hash,
        wallet: wallet.clone().unwrap_or_default(),
        amount: inner(data, "amount").and_then(decimal),
        from_address: inner(data, "from_address").and_then(as_text),
        to_address: inner(data, "to_address").and_then(as_text),
        addresses: p.meta.addresses.iter().map(|a| a.to_string()).collect(),
        confirmations: inner(data, "confirmations").and_then(int32),
        contract: inner(data, "contract").and_then(as_text),
        first_seen: pos.ts,
        last_seen: pos.ts,
        epoch: pos.epoch.clone(),
        seq: pos.seq,
    })
}

fn verified_row(
    coin: &str,
    wallet: &Option<String>,
    data: &Map<String, Value>,
    pos: &Pos,
) -> Option<VerifiedRow> {
    Some(VerifiedRow {
        coin: coin.to_string(),
        tx_hash: text(data, "tx_hash").or_else(|| text(data, "tx"))?,
        wallet: wallet.clone().unwrap_or_default(),
        height: height(data.get("height"))?,
        first_seen: pos.ts,
        last_seen: pos.ts,
        epoch: pos.epoch.clone(),
        seq: pos.seq,
    })
}

fn payment_row(
    coin: &str,
    wallet: &Option<String>,
    data: &Map<String, Value>,
    pos: &Pos,
) -> Option<PaymentRow> {
    let tx_hashes = match data.get("tx_hashes") {
        Some(Value::Array(a)) => a.iter().filter_map(as_text).collect(),
        _ => Vec::new(),
    };
    let confirmations = data.get("confirmations").and_then(int32);
    Some(PaymentRow {
        coin: coin.to_string(),
        wallet: wallet.clone().unwrap_or_default(),
        request_id: text(data, "address")?,
        status: data.get("status").and_then(int32)?,
        status_str: text(data, "status_str"),
        sent_amount: data
            .get("sent_amount")
            .and_then(decimal)
            .unwrap_or_else(|| "0".into()),
        tx_hashes,
        contract: data.get("contract").and_then(as_text),
        confirmations,
        confirmations_at: confirmations.map(|_| (pos.epoch.clone(), pos.seq)),
        epoch: pos.epoch.clone(),
        seq: pos.seq,
        ts: pos.ts,
    })
}

/// A top-level string field.
fn text(data: &Map<String, Value>, key: &str) -> Option<String> {
    data.get(key).and_then(as_text)
}

/// A field of the nested `data` object, else of the top level.
fn inner<'a>(data: &'a Map<String, Value>, key: &str) -> Option<&'a Value> {
    match data.get("data") {
        Some(Value::Object(m)) if m.contains_key(key) => m.get(key),
        _ => data.get(key),
    }
}

fn as_text(v: &Value) -> Option<String> {
    v.as_str().filter(|s| !s.is_empty()).map(str::to_string)
}

fn int32(v: &Value) -> Option<i32> {
    v.as_i64()
        .or_else(|| v.as_str()?.trim().parse().ok())
        .and_then(|n| i32::try_from(n).ok())
}

/// A block height: a non-negative integer (or a string of digits).
pub(crate) fn height(v: Option<&Value>) -> Option<i64> {
    let v = v?;
    let n = v.as_i64().or_else(|| v.as_str()?.trim().parse().ok())?;
    (n >= 0).then_some(n)
}

/// A decimal amount as text for `numeric`: a JSON string or number matching
/// `-?digits[.digits][e[+-]digits]`, at most 100 characters. Anything else is `None`.
pub(crate) fn decimal(v: &Value) -> Option<String> {
    let s = match v {
        Value::String(s) => s.trim().to_string(),
        Value::Number(n) => n.to_string(),
        _ => return None,
    };
    is_decimal(&s).then_some(s)
}

fn is_decimal(s: &str) -> bool {
    if s.is_empty() || s.len() > 100 {
        return false;
    }
    let s = s.strip_prefix('-').unwrap_or(s);
    let (mantissa, exp) = match s.find(['e', 'E']) {
        Some(i) => (&s[..i], Some(&s[i + 1..])),
        None => (s, None),
    };
    let (int, frac) = match mantissa.split_once('.') {
        Some((i, f)) => (i, Some(f)),
        None => (mantissa, None),
    };
    let digits = |x: &str| !x.is_empty() && x.bytes().all(|b| b.is_ascii_digit());
    let exp_ok = exp.is_none_or(|e| {
        let e = e.strip_prefix(['+', '-']).unwrap_or(e);
        digits(e) && e.len() <= 4
    });
    digits(int) && frac.is_none_or(digits) && exp_ok
}

/// `jsonb` refuses `\u0000`: rewrite such strings with U+FFFD (rare; costs a parse only then).
pub(crate) fn sanitize_payload(payload: &str) -> String {
    if !payload.contains("\\u0000") {
        return payload.to_string();
    }
    match serde_json::from_str::<Value>(payload) {
        Ok(mut v) => {
            replace_nul(&mut v);
            v.to_string()
        }
        Err(_) => payload.replace("\\u0000", "\\ufffd"),
    }
}

fn replace_nul(v: &mut Value) {
    match v {
        Value::String(s) if s.contains('\0') => *s = s.replace('\0', "\u{fffd}"),
        Value::Array(a) => a.iter_mut().for_each(replace_nul),
        Value::Object(m) => m.values_mut().for_each(replace_nul),
        _ => {}
    }
}

#[cfg(test)]
mod tests;
