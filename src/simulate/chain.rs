//! The simulated chain: block height, loaded wallets, payment requests, transactions and the
//! payment flows that produce daemon events (BITCART-DAEMON.md §1.6). Sans-io: every method
//! mutates state and returns the updates to push; the caller wraps and broadcasts them.
//!
//! Invariants:
//! - wallet-scoped updates are returned only for wallets currently loaded (state still moves
//!   for unloaded ones, exactly like a payment that happens while the daemon forgot the wallet);
//! - every `new_block` returned by [`Chain::mine`] has a strictly greater height;
//! - btc family: `new_payment` 7 then `new_transaction` when a tx enters the mempool,
//!   `new_payment` 3 then `verified_tx` in the next block; eth family: `new_block` first, then
//!   that block's `new_transaction` / `new_payment` (status 3 directly); xmr: 7 then 3, no
//!   `verified_tx`, `contract: null`;
//! - stored requests, transactions and generation wallets are bounded (oldest evicted first).

use super::util::{self, BASE58, BECH32, Rng, URLSAFE};
use crate::config::Family;
use serde_json::{Value, json};
use std::collections::{BTreeSet, HashMap, HashSet, VecDeque};

/// Transactions kept for `get_transaction` before the oldest are forgotten.
const MAX_TXS: usize = 100_000;
/// Payment requests kept before the oldest are forgotten.
const MAX_REQUESTS: usize = 100_000;
/// Wallets the generator pays into (configured plus RPC-loaded).
const MAX_WALLETS: usize = 10_000;

/// One update to push: `wallet` is `None` for global events.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Emit {
    pub wallet: Option<String>,
    pub update: Value,
}

/// A payment request (invoice) held by one wallet.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Request {
    /// The id `new_payment.address` carries (10 hex, urlsafe token, 16 hex, or BCH address).
    pub id: String,
    /// Where the payer sends to.
    pub address: String,
    /// Requested amount, smallest units.
    pub amount: u128,
    /// Received so far, smallest units.
    pub sent: u128,
    /// Electrum status code (0 unpaid, 3 paid, 7 unconfirmed, ...).
    pub status: u8,
    pub tx_hashes: Vec<String>,
    /// Creation time, Unix seconds.
    pub created: u64,
    /// Lifetime in seconds (informational: expiry is silent, as in the real daemons).
    pub expiry: u64,
    pub memo: String,
    /// eth family: the payer address registered with `setrequestaddress`; only txs from it match.
    pub payer: Option<String>,
}

/// A transaction the simulator generated.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Tx {
    pub hash: String,
    /// The wallet key it pays into.
    pub wallet: String,
    /// Sender address (`None` on XMR, which hides it).
    pub from: Option<String>,
    pub to: String,
    /// Smallest units.
    pub value: u128,
    /// btc family output script (hex).
    pub script: String,
    /// Block it was mined in; `None` while in the mempool.
    pub height: Option<u64>,
    /// The request it pays, if any.
    pub request: Option<String>,
}

/// A change to a request made by `sim_set_request` (fields left `None` stay as they are).
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct RequestPatch {
    pub status: Option<u8>,
    pub sent: Option<u128>,
    pub amount: Option<u128>,
    pub tx_hashes: Option<Vec<String>>,
}

/// Electrum's status names.
pub(crate) fn status_str(status: u8) -> &'static str {
    match status {
        0 => "Unpaid",
        1 => "Expired",
        3 => "Paid",
        4 => "In progress",
        5 => "Failed",
        6 => "Routing",
        7 => "Unconfirmed",
        8 => "Broadcasting",
        9 => "Broadcast",
        _ => "Unknown",
    }
}

/// Splits a wallet key into its address/xpub and its token contract (`xpub_contract`).
pub(crate) fn split_key(key: &str) -> (&str, Option<&str>) {
    match key.split_once('_') {
        Some((xpub, contract)) if !contract.is_empty() => (xpub, Some(contract)),
        _ => (key, None),
    }
}

/// The whole simulated chain and wallet state of one daemon.
#[derive(Debug)]
pub(crate) struct Chain {
    /// Upper-case symbol.
    pub coin: String,
    pub family: Family,
    pub height: u64,
    /// Wallets some RPC named since start (or preloaded): the only ones that get events.
    loaded: BTreeSet<String>,
    /// Wallets the generator pays into, in round-robin order.
    candidates: Vec<String>,
    candidate_set: HashSet<String>,
    next_candidate: usize,
    /// wallet key -> request id -> request.
    requests: HashMap<String, HashMap<String, Request>>,
    request_order: VecDeque<(String, String)>,
    /// Requests created by `add_request`, paid before the generator invents its own.
    to_pay: VecDeque<(String, String)>,
    txs: HashMap<String, Tx>,
    tx_order: VecDeque<String>,
    /// Hashes waiting for the next block.
    mempool: Vec<String>,
    rng: Rng,
}

impl Chain {
    /// A chain at the family's start height, generating for `wallets` (loaded if `preload`).
    pub(crate) fn new(
        coin: &str,
        family: Family,
        wallets: &[String],
        preload: bool,
        seed: u64,
    ) -> Chain {
        let height = match family {
            Family::Btc => 800_000,
            Family::Eth => 20_000_000,
            Family::Xmr => 3_000_000,
        };
        let mut chain = Chain {
            coin: coin.to_ascii_uppercase(),
            family,
            height,
            loaded: BTreeSet::new(),
            candidates: Vec::new(),
            candidate_set: HashSet::new(),
            next_candidate: 0,
            requests: HashMap::new(),
            request_order: VecDeque::new(),
            to_pay: VecDeque::new(),
            txs: HashMap::new(),
            tx_order: VecDeque::new(),
            mempool: Vec::new(),
            rng: Rng::new(seed),
        };
        for w in wallets.iter().filter(|w| !w.is_empty()) {
            chain.add_candidate(w);
            if preload {
                chain.loaded.insert(w.clone());
            }
        }
        chain
    }

    fn add_candidate(&mut self, key: &str) {
        if self.candidates.len() < MAX_WALLETS && self.candidate_set.insert(key.to_string()) {
            self.candidates.push(key.to_string());
        }
    }

    /// Marks a wallet loaded (any RPC naming it does this) and adds it to the generator.
    pub(crate) fn load(&mut self, key: &str) {
        if !self.loaded.contains(key) {
            self.loaded.insert(key.to_string());
        }
        self.add_candidate(key);
    }

    /// Unloads one wallet (`close_wallet`); returns whether it was loaded.
    pub(crate) fn unload(&mut self, key: &str) -> bool {
        self.loaded.remove(key)
    }

    /// Forgets every loaded wallet, as a daemon restart would.
    pub(crate) fn reset(&mut self) {
        self.loaded.clear();
    }

    pub(crate) fn is_loaded(&self, key: &str) -> bool {
        self.loaded.contains(key)
    }

    pub(crate) fn loaded(&self) -> Vec<String> {
        self.loaded.iter().cloned().collect()
    }

    pub(crate) fn candidates(&self) -> &[String] {
        &self.candidates
    }

    pub(crate) fn tx(&self, hash: &str) -> Option<&Tx> {
        self.txs.get(hash)
    }

    pub(crate) fn request(&self, wallet: &str, id: &str) -> Option<&Request> {
        self.requests.get(wallet)?.get(id)
    }

    pub(crate) fn counts(&self) -> (usize, usize) {
        (
            self.requests.values().map(HashMap::len).sum(),
            self.txs.len(),
        )
    }

    /// Decimals of amounts for `wallet` (tokens differ from the native coin).
    pub(crate) fn decimals(&self, wallet: &str) -> u32 {
        let token = self.family == Family::Eth && split_key(wallet).1.is_some();
        util::decimals_of(&self.coin, self.family, token)
    }

    /// Confirmations of a tx: 0 in the mempool, 1 in the tip block.
    pub(crate) fn confirmations(&self, tx: &Tx) -> u64 {
        tx.height.map_or(0, |h| self.height.saturating_sub(h) + 1)
    }

    fn random_address(&mut self) -> String {
        match (self.family, self.coin.as_str()) {
            (Family::Eth, "TRX") => format!("T{}", self.rng.string(BASE58, 33)),
            (Family::Eth, _) => format!("0x{}", self.rng.hex(40)),
            (Family::Xmr, _) => format!("4{}", self.rng.string(BASE58, 105)),
            (Family::Btc, "BCH") => format!("bitcoincash:qq{}", self.rng.string(BECH32, 40)),
            (Family::Btc, "XRG") => format!("ergon:qq{}", self.rng.string(BECH32, 40)),
            (Family::Btc, coin) => {
                let hrp = match coin {
                    "LTC" => "ltc",
                    "GRS" => "grs",
                    _ => "bc",
                };
                format!("{hrp}1q{}", self.rng.string(BECH32, 38))
            }
        }
    }

    fn random_amount(&mut self, wallet: &str) -> u128 {
        let d = self.decimals(wallet);
        let steps = u128::from(self.rng.below(99) + 1);
        match self.family {
            Family::Btc => steps * 10u128.pow(d.saturating_sub(3)) / 5, // 0.0002 .. 0.0198
            _ => steps * 10u128.pow(d.saturating_sub(2)),               // 0.01 .. 0.99
        }
    }

    /// Creates an open request for `wallet`; `internal` requests (the generator's own checkout)
    /// get a registered payer on the eth family. Returns the request id.
    pub(crate) fn add_request(
        &mut self,
        wallet: &str,
        amount: u128,
        memo: &str,
        expiry: u64,
        now: u64,
    ) -> String {
        let address = match self.family {
            Family::Eth => split_key(wallet).0.to_string(),
            _ => self.random_address(),
        };
        let id = match (self.family, self.coin.as_str()) {
            (Family::Btc, "BCH" | "XRG") => address.clone(),
            (Family::Btc, _) => self.rng.hex(10),
            (Family::Eth, _) => self.rng.string(URLSAFE, 43),
            (Family::Xmr, _) => self.rng.hex(16),
        };
        let request = Request {
            id: id.clone(),
            address,
            amount,
            sent: 0,
            status: 0,
            tx_hashes: Vec::new(),
            created: now,
            expiry,
            memo: memo.to_string(),
            payer: None,
        };
        self.insert_request(wallet, request);
        id
    }

    fn insert_request(&mut self, wallet: &str, request: Request) {
        let id = request.id.clone();
        self.requests
            .entry(wallet.to_string())
            .or_default()
            .insert(id.clone(), request);
        self.request_order.push_back((wallet.to_string(), id));
        while self.request_order.len() > MAX_REQUESTS {
            if let Some((w, i)) = self.request_order.pop_front()
                && let Some(map) = self.requests.get_mut(&w)
            {
                map.remove(&i);
            }
        }
    }

    /// Queues an RPC-created request for the generator to pay next.
    pub(crate) fn queue_payment(&mut self, wallet: &str, id: &str) {
        if self.to_pay.len() < MAX_REQUESTS {
            self.to_pay.push_back((wallet.to_string(), id.to_string()));
        }
    }

    /// `setrequestaddress`: registers the payer of an eth-family request. False if unknown.
    pub(crate) fn set_payer(&mut self, wallet: &str, id: &str, payer: &str) -> bool {
        match self.requests.get_mut(wallet).and_then(|m| m.get_mut(id)) {
            Some(r) => {
                r.payer = Some(payer.to_string());
                true
            }
            None => false,
        }
    }

    /// `sim_set_request`: changes (creating if needed) or, with `None`, deletes a request,
    /// without emitting anything. Returns whether the request existed before.
    pub(crate) fn set_request(
        &mut self,
        wallet: &str,
        id: &str,
        patch: Option<RequestPatch>,
        now: u64,
    ) -> bool {
        let existed = self.request(wallet, id).is_some();
        let Some(patch) = patch else {
            if let Some(m) = self.requests.get_mut(wallet) {
                m.remove(id);
            }
            return existed;
        };
        if !existed {
            let address = match self.family {
                Family::Eth => split_key(wallet).0.to_string(),
                _ => self.random_address(),
            };
            let amount = patch.amount.or(patch.sent).unwrap_or(0);
            let r = Request {
                id: id.to_string(),
                address,
                amount,
                sent: 0,
                status: 0,
                tx_hashes: Vec::new(),
                created: now,
                expiry: 900,
                memo: String::new(),
                payer: None,
            };
            self.insert_request(wallet, r);
        }
        if let Some(r) = self.requests.get_mut(wallet).and_then(|m| m.get_mut(id)) {
            r.status = patch.status.unwrap_or(r.status);
            r.sent = patch.sent.unwrap_or(r.sent);
            r.amount = patch.amount.unwrap_or(r.amount);
            if let Some(h) = patch.tx_hashes {
                r.tx_hashes = h;
            }
        }
        existed
    }

    /// Confirmed and unconfirmed totals received by a wallet's requests.
    pub(crate) fn balance(&self, wallet: &str) -> (u128, u128) {
        let mut total = (0, 0);
        for r in self
            .requests
            .get(wallet)
            .into_iter()
            .flat_map(HashMap::values)
        {
            match r.status {
                3 => total.0 += r.sent,
                7 => total.1 += r.sent,
                _ => {}
            }
        }
        total
    }

    fn insert_tx(&mut self, tx: Tx) {
        self.tx_order.push_back(tx.hash.clone());
        self.txs.insert(tx.hash.clone(), tx);
        while self.tx_order.len() > MAX_TXS {
            if let Some(h) = self.tx_order.pop_front() {
                self.txs.remove(&h);
            }
        }
    }

    fn push(&self, out: &mut Vec<Emit>, wallet: &str, update: Value) {
        if self.loaded.contains(wallet) {
            out.push(Emit {
                wallet: Some(wallet.to_string()),
                update,
            });
        }
    }

    /// The `new_payment` update for a request, shaped per family.
    fn payment_update(&self, wallet: &str, r: &Request) -> Value {
        let mut u = json!({
            "event": "new_payment",
            "address": r.id,
            "status": r.status,
            "status_str": status_str(r.status),
            "tx_hashes": r.tx_hashes,
            "sent_amount": util::format_amount(r.sent, self.decimals(wallet)),
        });
        if self.family != Family::Btc {
            u["contract"] = json!(split_key(wallet).1.filter(|_| self.family == Family::Eth));
        }
        u
    }

    /// Picks what to pay next: a queued RPC request, else a fresh request of the next
    /// generation wallet (eth family: one in five is a plain transfer with no request).
    fn pick_payment(&mut self, now: u64) -> Option<(String, Option<String>)> {
        while let Some((w, id)) = self.to_pay.pop_front() {
            if self
                .request(&w, &id)
                .is_some_and(|r| r.status == 0 && r.tx_hashes.is_empty())
            {
                return Some((w, Some(id)));
            }
        }
        if self.candidates.is_empty() {
            return None;
        }
        let w = self.candidates[self.next_candidate % self.candidates.len()].clone();
        self.next_candidate = self.next_candidate.wrapping_add(1);
        if self.family == Family::Eth && self.rng.below(5) == 0 {
            return Some((w, None));
        }
        let amount = self.random_amount(&w);
        let id = self.add_request(&w, amount, "", 900, now);
        if self.family == Family::Eth {
            let payer = self.random_address();
            self.set_payer(&w, &id, &payer);
        }
        Some((w, Some(id)))
    }

    /// Starts one payment flow. btc/xmr: the tx enters the mempool now (events now);
    /// eth: the tx waits for the next block (events then).
    pub(crate) fn pay_step(&mut self, now: u64) -> Vec<Emit> {
        let Some((wallet, id)) = self.pick_payment(now) else {
            return Vec::new();
        };
        match self.family {
            Family::Eth => {
                self.pay_eth(&wallet, id);
                Vec::new()
            }
            _ => id.map_or_else(Vec::new, |id| self.pay_mempool(&wallet, &id)),
        }
    }

    fn pay_mempool(&mut self, wallet: &str, id: &str) -> Vec<Emit> {
        let hash = self.rng.hex(64);
        let from = (self.family == Family::Btc).then(|| self.random_address());
        let script = format!("0014{}", self.rng.hex(40));
        let Some(r) = self.requests.get_mut(wallet).and_then(|m| m.get_mut(id)) else {
            return Vec::new();
        };
        r.status = 7;
        r.sent = r.amount;
        r.tx_hashes = vec![hash.clone()];
        let (to, value) = (r.address.clone(), r.amount);
        let tx = Tx {
            hash: hash.clone(),
            wallet: wallet.to_string(),
            from,
            to,
            value,
            script,
            height: None,
            request: Some(id.to_string()),
        };
        self.insert_tx(tx);
        self.mempool.push(hash.clone());
        let mut out = Vec::new();
        if let Some(r) = self.request(wallet, id) {
            self.push(&mut out, wallet, self.payment_update(wallet, r));
        }
        self.push(
            &mut out,
            wallet,
            json!({"event": "new_transaction", "tx": hash}),
        );
        out
    }

    fn pay_eth(&mut self, wallet: &str, id: Option<String>) {
        let paying = id
            .as_deref()
            .and_then(|i| self.request(wallet, i))
            .and_then(|r| {
                r.payer
                    .clone()
                    .map(|p| (p, r.amount.saturating_sub(r.sent)))
            });
        let (from, value, request) = match paying {
            Some((payer, due)) => (payer, due, id),
            None => (self.random_address(), self.random_amount(wallet), None),
        };
        let hash = format!("0x{}", self.rng.hex(64));
        let to = split_key(wallet).0.to_string();
        let tx = Tx {
            hash: hash.clone(),
            wallet: wallet.to_string(),
            from: Some(from),
            to,
            value,
            script: String::new(),
            height: None,
            request,
        };
        self.insert_tx(tx);
        self.mempool.push(hash);
    }

    /// Mines one block: `new_block`, then the block's effects on mempool transactions.
    pub(crate) fn mine(&mut self) -> Vec<Emit> {
        self.height += 1;
        let height = self.height;
        let mut out = vec![Emit {
            wallet: None,
            update: json!({"event": "new_block", "height": height}),
        }];
        for hash in std::mem::take(&mut self.mempool) {
            self.confirm(&hash, height, &mut out);
        }
        out
    }

    fn confirm(&mut self, hash: &str, height: u64, out: &mut Vec<Emit>) {
        let Some(tx) = self.txs.get_mut(hash) else {
            return;
        };
        tx.height = Some(height);
        let tx = tx.clone();
        if self.family == Family::Eth {
            let (_, contract) = split_key(&tx.wallet);
            let update = json!({
                "event": "new_transaction", "tx": tx.hash, "from_address": tx.from, "to": tx.to,
                "amount": util::format_amount(tx.value, self.decimals(&tx.wallet)), "contract": contract,
            });
            self.push(out, &tx.wallet, update);
        }
        let settled = tx.request.as_deref().and_then(|id| self.settle(&tx, id));
        if let Some(r) = settled {
            self.push(out, &tx.wallet, self.payment_update(&tx.wallet, &r));
        }
        if self.family == Family::Btc {
            self.push(
                out,
                &tx.wallet,
                json!({"event": "verified_tx", "tx": tx.hash, "height": height}),
            );
        }
    }

    /// Applies a mined tx to its request; returns the request if its state changed.
    fn settle(&mut self, tx: &Tx, id: &str) -> Option<Request> {
        let family = self.family;
        let r = self.requests.get_mut(&tx.wallet)?.get_mut(id)?;
        if family == Family::Eth {
            if r.status == 3 || r.payer != tx.from || r.tx_hashes.contains(&tx.hash) {
                return None;
            }
            r.sent += tx.value;
            r.tx_hashes.push(tx.hash.clone());
        }
        r.status = if r.sent >= r.amount { 3 } else { 0 };
        Some(r.clone())
    }
}

#[cfg(test)]
#[path = "chain_tests.rs"]
mod tests;
