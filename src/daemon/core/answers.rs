//! The core's RPC answers: enrichment lookups fill their events, catch-up calls feed the
//! planner, `getinfo` and `get_request` may synthesise events, `get_updates` recovers the
//! events not delivered before.

use super::{Action, CoinCore};
use crate::daemon::catchup::{self, Purpose};
use crate::daemon::decode::decode_updates;
use crate::daemon::enrich::{self, Found, LookupKey};
use crate::daemon::recovery::Outcome;
use crate::daemon::rpc::{CallError, RpcDone};
use crate::event::Event;
use serde_json::{Value, json};
use std::time::Instant;

impl CoinCore {
    /// Calls ended (answered, failed, timed out, refused for a full queue or abandoned when the
    /// link went down). `seen` tells whether an event was already published (recovered events
    /// that were are dropped before they cost a lookup).
    pub fn on_rpc_done(
        &mut self,
        done: impl IntoIterator<Item = RpcDone<Purpose>>,
        now: Instant,
        seen: &dyn Fn(&Event) -> bool,
        out: &mut Vec<Action>,
    ) {
        let mut done = done.into_iter().peekable();
        if done.peek().is_none() {
            return;
        }
        let mut synthesized = Vec::new();
        let mut recovered = Vec::new();
        for r in done {
            match r.purpose {
                Purpose::Enrich(ticket, key) => self.lookup_done(ticket, &key, &r.result, now),
                Purpose::LoadWallet(w) => self.wallet_loaded(&w, r.result),
                Purpose::Drain(w) => match r.result {
                    Ok(list) => recovered.push((w, list)),
                    Err(e) => self.plan.drained(&w, Err(e)),
                },
                Purpose::GetInfo => synthesized.extend(self.got_info(r.result)),
                Purpose::Reconcile(id) => {
                    let (ev, outcome) =
                        catchup::on_get_request(&self.coin, &mut self.requests, &id, r.result);
                    if outcome == Outcome::Gone {
                        out.push(Action::MarkGone(id.clone()));
                    }
                    self.plan.reconciled(&id, outcome);
                    synthesized.extend(ev);
                }
            }
        }
        for ev in synthesized {
            self.emit(ev, out);
        }
        for (w, list) in recovered {
            self.recover_updates(&w, list, now, seen, out);
        }
        self.release_ready(out);
        self.pump_catchup(now, out);
    }

    /// A lookup's call ended: fills the event that made it and every event that joined it (a
    /// failure fills nothing: the unknown fields stay null), and counts failures.
    fn lookup_done(
        &mut self,
        ticket: u64,
        key: &LookupKey,
        result: &Result<Value, CallError>,
        now: Instant,
    ) {
        let found = match result {
            Ok(v) => Some(Found::from_answer(v, self.family)),
            Err(e) => {
                let m = &self.metrics;
                m.inc(match e {
                    CallError::Overloaded => &m.lookups_overloaded,
                    _ => &m.lookups_failed,
                });
                log::debug!(
                    "[WORKER] {} {} failed: {e}; event goes out with unknown fields null",
                    self.coin,
                    key.method
                );
                None
            }
        };
        let (found, tickets) = self.lookups.finish(key, ticket, found, now);
        for t in tickets {
            self.queue.complete(t, |ev| {
                if let Some(f) = &found {
                    enrich::fill(ev, f);
                }
            });
        }
    }

    fn wallet_loaded(&mut self, wallet: &str, result: Result<Value, CallError>) {
        let result = result.map(|_| ());
        if let Err(e) = &result {
            log::debug!(
                "[WORKER] Loading {} on {} failed: {e}",
                catchup::short(wallet),
                self.coin
            );
        }
        self.plan.loaded(wallet, result);
    }

    /// `getinfo` answered: a recovered `new_block` if the height moved; the height is known
    /// from now on (for the next reconnect's catch-up and for status).
    fn got_info(&mut self, result: Result<Value, CallError>) -> Option<Event> {
        let v = match result {
            Ok(v) => v,
            Err(e) => {
                log::warn!("[WORKER] getinfo on {} failed: {e}", self.coin);
                return None;
            }
        };
        let ev = catchup::on_getinfo(&self.coin, self.height, &v);
        if let Some(h) = v.get("blockchain_height").and_then(Value::as_u64) {
            self.height = Some(self.height.map_or(h, |old| old.max(h)));
        }
        ev
    }

    /// A wallet's `get_updates` answer: the events not delivered before go out in daemon order,
    /// with `"recovered": true` (enriched like live ones).
    fn recover_updates(
        &mut self,
        wallet: &str,
        list: Value,
        now: Instant,
        seen: &dyn Fn(&Event) -> bool,
        out: &mut Vec<Action>,
    ) {
        let updates = match list {
            Value::Array(updates) => updates,
            _ => {
                self.metrics.inc(&self.metrics.daemon_bad_frames);
                log::warn!(
                    "[WORKER] get_updates of {} on {} answered something other than a list",
                    catchup::short(wallet),
                    self.coin
                );
                Vec::new()
            }
        };
        let events = decode_updates(updates, Some(wallet), &self.coin, self.family).events;
        let fresh: Vec<Event> = events
            .into_iter()
            .map(|ev| ev.with("recovered", json!(true)))
            .filter(|ev| !seen(ev))
            .collect();
        self.plan.drained(wallet, Ok(fresh.len() as u64));
        self.accept(fresh, now, out);
    }
}
