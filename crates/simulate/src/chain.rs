//! The simulated chain: block height, loaded wallets, payment requests, transactions and the
//! payment flows that produce daemon events (docs/daemon.md, "The event link"). Sans-io: every
//! method mutates state and returns the updates to push; the caller wraps and broadcasts them.
//!
//! Invariants:
//! - wallet-scoped updates are returned only for wallets currently loaded (state still moves
//!   for unloaded ones, exactly like a payment that happens while the daemon forgot the wallet);
//! - every `new_block` returned by [`Chain::mine`] has a strictly greater height;
//! - btc family: `new_payment` 7 then `new_transaction` when a tx enters the mempool,
//!   `new_payment` 3 then `verified_tx` in the next block; eth family: `new_block` first, then
//!   that block's `new_transaction` / `new_payment` (status 3 directly); xmr: 7 then 3, no
//!   `verified_tx`, `contract: null`;
//! - stored requests, transactions and generation wallets are bounded (oldest evicted first);
//!   loaded wallets and the mempool are capped (loading fails, flows pause);
//! - exactly the loaded wallets have a `get_updates` queue ([`Chain::polling`]): loading opens
//!   one (empty for a newly loaded wallet), unloading or a reset drops it.

use super::polling::{DEFAULT_POLLING_CAP, Polling};
use super::util::{self, BASE58, BECH32, Rng, URLSAFE};
use cryptoworker_base::coins::Family;
use serde_json::Value;
use std::collections::{BTreeSet, HashMap, HashSet, VecDeque};

/// Transactions kept for `get_transaction` before the oldest are forgotten.
const MAX_TXS: usize = 100_000;
/// Payment requests kept before the oldest are forgotten.
const MAX_REQUESTS: usize = 100_000;
/// Wallets the generator pays into (configured plus RPC-loaded).
const MAX_WALLETS: usize = 10_000;
/// Wallets loaded at once; loading more fails like a daemon out of resources.
pub(crate) const MAX_LOADED: usize = 100_000;
/// Transactions waiting for a block; flows pause while the mempool is full.
pub(crate) const MAX_MEMPOOL: usize = 100_000;

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
    /// The `get_updates` queue of each loaded wallet; the caller records every push in it.
    pub polling: Polling,
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
            polling: Polling::new(DEFAULT_POLLING_CAP),
            candidates: Vec::new(),
            candidate_set: HashSet::new(),
            next_candidate: 0,
            requests: HashMap::new(),
            request_order: VecDeque::new(),
            to_pay: VecDeque::new(),
            txs: HashMap::new(),
            tx_order: VecDeque::new(),
            mempool: Vec::new(),
            rng: Rng::seeded(seed),
        };
        for w in wallets.iter().filter(|w| !w.is_empty()) {
            chain.add_candidate(w);
            if preload {
                chain.loaded.insert(w.clone());
                chain.polling.open(w);
            }
        }
        chain
    }

    fn add_candidate(&mut self, key: &str) {
        if self.candidates.len() < MAX_WALLETS && self.candidate_set.insert(key.to_string()) {
            self.candidates.push(key.to_string());
        }
    }

    /// Marks a wallet loaded (any RPC naming it does this), gives it a `get_updates` queue if
    /// it has none, and adds it to the generator. False when [`MAX_LOADED`] wallets are loaded
    /// already.
    pub(crate) fn load(&mut self, key: &str) -> bool {
        if !self.loaded.contains(key) {
            if self.loaded.len() >= MAX_LOADED {
                return false;
            }
            self.loaded.insert(key.to_string());
        }
        self.polling.open(key);
        self.add_candidate(key);
        true
    }

    /// Unloads one wallet (`close_wallet`) and drops its queue; returns whether it was loaded.
    pub(crate) fn unload(&mut self, key: &str) -> bool {
        self.polling.close(key);
        self.loaded.remove(key)
    }

    /// Forgets every loaded wallet and its queue, as a daemon restart would.
    pub(crate) fn reset(&mut self) {
        self.loaded.clear();
        self.polling.clear();
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
}

mod flows;

#[cfg(test)]
mod tests;
