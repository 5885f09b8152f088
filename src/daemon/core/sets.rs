//! The database's sets as the core takes them: the watched wallets and the open payment
//! requests (the database is authoritative for both). New wallets are loaded and new requests
//! reconciled at once while the link is up, else at the next connect.

use super::{Action, CoinCore};
use crate::daemon::catchup::{MAX_OPEN_REQUESTS, OpenRequest};
use crate::db::{PaymentRequest, WatchedWallet};
use std::collections::{BTreeSet, HashMap};
use std::time::Instant;

impl CoinCore {
    /// The full set of watched wallets (of every coin; this core takes its own). The configured
    /// wallets and those that open payment requests name stay watched too.
    pub fn on_db_wallets(&mut self, list: &[WatchedWallet], now: Instant, out: &mut Vec<Action>) {
        let mut keys: BTreeSet<String> = self.configured.iter().cloned().collect();
        keys.extend(
            list.iter()
                .filter(|w| w.coin.eq_ignore_ascii_case(&self.coin))
                .map(WatchedWallet::key),
        );
        keys.extend(self.requests.values().map(|r| r.wallet.clone()));
        let added: Vec<String> = keys
            .iter()
            .filter(|k| !self.wallets.contains(k))
            .cloned()
            .collect();
        if added.is_empty() && keys.len() == self.wallets.len() {
            return;
        }
        log::info!(
            "[WORKER] Watching {} wallets for {} ({} new)",
            keys.len(),
            self.coin,
            added.len()
        );
        self.wallets = keys.into_iter().collect();
        if self.connected && !added.is_empty() {
            self.plan.add_wallets(&added);
            self.pump_catchup(now, out);
        }
    }

    /// The full set of open payment requests (of every coin; this core takes its own): remember
    /// them, reconcile those not yet asked in this connection, and watch their wallets.
    pub fn on_db_requests(&mut self, list: &[PaymentRequest], now: Instant, out: &mut Vec<Action>) {
        let mut open = HashMap::new();
        let mut loads = Vec::new();
        for r in list
            .iter()
            .filter(|r| r.coin.eq_ignore_ascii_case(&self.coin))
        {
            if open.len() >= MAX_OPEN_REQUESTS {
                log::warn!(
                    "[WORKER] More than {MAX_OPEN_REQUESTS} open payment requests for {}; the \
                     rest are not reconciled",
                    self.coin
                );
                break;
            }
            let wallet = WatchedWallet {
                coin: r.coin.clone(),
                xpub: r.xpub.clone(),
                contract: r.contract.clone(),
                label: None,
            }
            .key();
            if !self.wallets.contains(&wallet) {
                self.wallets.push(wallet.clone());
                if self.connected {
                    loads.push(wallet.clone());
                }
            }
            open.insert(
                r.request_id.clone(),
                OpenRequest {
                    wallet,
                    status: i64::from(r.status),
                    sent_amount: r.sent_amount.clone(),
                },
            );
        }
        self.requests = open;
        // Reconciled now if connected (once per connection), else at the next connect.
        self.plan.add_requests(self.requests.keys());
        self.plan.add_wallets(&loads);
        self.pump_catchup(now, out);
    }
}
